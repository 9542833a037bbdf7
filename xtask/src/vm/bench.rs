//! `cargo xtask bench --guest`: the system bench's syscall table inside the
//! CI cell's guest (Debian 12's kernel, which accepts fentry), with nothing
//! attached, the tracepoints, fentry and auditd side by side in one run, written
//! into docs/performance.md between its guest markers. Emulation inflates
//! every absolute figure: the section judges ratios.

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use super::{CI_CELL, cell, image, qemu};
use crate::{bootstrap, build, workspace_root};

const BEGIN: &str = "<!-- guest:begin (cargo xtask bench --guest) -->";
const END: &str = "<!-- guest:end -->";
const CONDITIONS: [&str; 4] = ["nothing", "tracepoints", "fentry", "auditd"];
const CALLS: [(&str, &str); 4] = [
    ("sendto", "sendto (bad fd)"),
    ("setresuid", "setresuid(-1,-1,-1)"),
    ("fork", "fork + exit + wait"),
    ("getpid", "getpid (unhooked)"),
];

pub fn run() -> Result<()> {
    if !crate::is_root() {
        bail!("bench --guest needs root: debootstrap, chroot and mkfs build the guest image");
    }
    bootstrap::build_tools()?;
    bootstrap::vm_tools(false)?;
    build::ebpf()?;
    let cell = cell(CI_CELL)?;
    let daemon = build::userspace_for(cell.arch.rust_target())?;
    let bench = bench_binary()?;
    let dir = workspace_root().join("target/vm");
    let guest = image::prepare(&dir, &cell)?;
    let work = dir.join("runs").join(format!("bench-{}", cell.name));
    let _ = fs::remove_dir_all(&work);
    let payload = work.join("payload");
    fs::create_dir_all(&payload)?;
    fs::copy(&daemon, payload.join("sshlogin")).with_context(|| format!("copying {}", daemon.display()))?;
    fs::copy(&bench, payload.join("sshlogin-bench")).with_context(|| format!("copying {}", bench.display()))?;
    fs::write(payload.join("guest.sh"), include_str!("guest-bench.sh"))?;
    fs::write(payload.join("guest-init.sh"), include_str!("guest-init.sh"))?;
    crate::sh(Command::new("chmod").arg("0755").arg(payload.join("guest.sh")))?;
    let tar = work.join("payload.tar");
    crate::sh(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&payload).arg("."))?;
    let results = qemu::boot(&cell, &guest, &tar, &work)?;
    let read = |name: &str| fs::read_to_string(results.dir.join(name)).unwrap_or_default().trim().to_string();
    if read("bench.rc") != "0" {
        bail!("the guest's bench failed ({}):\n{}", read("bench.rc"), read("bench.log"));
    }
    let costs = parse(&read("syscalls.txt"))?;
    let facts = format!(
        "{} ({}, kernel {}, {} CPUs, QEMU {})",
        cell.name,
        read("os"),
        read("uname"),
        read("cpus"),
        results.accel
    );
    let section = section(&facts, &costs);
    println!("{section}");
    let doc = workspace_root().join("docs/performance.md");
    write(&doc, &section)?;
    println!("xtask: guest section written into {}", doc.display());
    Ok(())
}

/// The system bench, built (not run) by cargo; its path from cargo's JSON.
fn bench_binary() -> Result<std::path::PathBuf> {
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["bench", "--package", "sshlogin-userspace", "--bench", "system", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .env("SSHLOGIN_EBPF_OBJECT", build::ebpf_object())
        .output()
        .context("running cargo bench --no-run")?;
    if !out.status.success() {
        bail!("building the system bench failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "system")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .context("cargo built no executable for the system bench")
}

type Costs = BTreeMap<(String, String), Vec<f64>>;

/// `condition call ns` lines.
fn parse(text: &str) -> Result<Costs> {
    let mut costs = Costs::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(cond), Some(call), Some(ns)) = (words.next(), words.next(), words.next()) else {
            bail!("not a measurement: {line:?}");
        };
        let ns: f64 = ns.parse().with_context(|| format!("not a number: {line:?}"))?;
        costs.entry((cond.to_string(), call.to_string())).or_default().push(ns);
    }
    for cond in CONDITIONS {
        for (call, _) in CALLS {
            if !costs.contains_key(&(cond.to_string(), call.to_string())) {
                bail!("the guest measured no {call} with {cond}:\n{text}");
            }
        }
    }
    Ok(costs)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[(s.len() - 1) / 2]
}

/// The smallest and the largest of `v`.
fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn show(v: &[f64]) -> String {
    let (min, max) = min_max(v);
    format!("{:.1} ({min:.1}–{max:.1})", median(v))
}

fn section(facts: &str, costs: &Costs) -> String {
    let get = |cond: &str, call: &str| &costs[&(cond.to_string(), call.to_string())];
    let mut t = format!(
        "{BEGIN}\n## Syscalls in a guest whose kernel accepts fentry\n\n\
         `cargo xtask bench --guest`: the table of section 1–2, {} repetitions, inside {facts}. \
         The set-ups alternate in one run, each repetition starting with the next: nothing attached, sshlogin with the syscall tracepoints \
         (`--syscall-probes tracepoints`), sshlogin with fentry (`--syscall-probes fentry`), auditd with the \
         rules of section 1–2. Emulation makes every call slower than on hardware: judge the ratios.\n\n\
         | call | nothing | tracepoints | fentry | auditd |\n| --- | --- | --- | --- | --- |\n",
        get("nothing", "getpid").len()
    );
    for (call, label) in CALLS {
        t.push_str(&format!(
            "| {label} | {} | {} | {} | {} |\n",
            show(get("nothing", call)),
            show(get("tracepoints", call)),
            show(get("fentry", call)),
            show(get("auditd", call))
        ));
    }
    t.push_str(
        "\nAdded time, ns per call (median minus the median with nothing attached):\n\n\
         | call | tracepoints add | fentry adds | auditd adds | fentry / tracepoints | fentry / auditd |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let added = |cond: &str, call: &str| median(get(cond, call)) - median(get("nothing", call));
    let ratio = |part: f64, whole: f64| if whole > 0.0 { format!("{:.2}", part / whole) } else { "–".into() };
    for (call, label) in CALLS {
        let (tp, fe, au) = (added("tracepoints", call), added("fentry", call), added("auditd", call));
        t.push_str(&format!("| {label} | {tp:+.1} | {fe:+.1} | {au:+.1} | {} | {} |\n", ratio(fe, tp), ratio(fe, au)));
    }
    let getpid = added("fentry", "getpid") / median(get("nothing", "getpid")) * 100.0;
    let spread = |v: &[f64]| {
        let (min, max) = min_max(v);
        max - min
    };
    if added("fentry", "getpid").abs() < spread(get("nothing", "getpid")) / 2.0 {
        t.push_str(
            "\ngetpid's difference is inside the spread of its measurements with nothing attached (min–max \
             above): no cost of fentry on unhooked calls shows through the emulation's noise, which is what \
             attaching no syscall tracepoint predicts; it does not make them faster.\n",
        );
    }
    // How far one set-up's repetitions lie apart, at worst: the resolution
    // of this run, which emulation makes coarse.
    let widest = costs
        .values()
        .map(|v| {
            let (min, max) = min_max(v);
            max / min
        })
        .fold(1.0, f64::max);
    t.push_str(&format!(
        "\nThe repetitions of one set-up lie up to {widest:.1}× apart (max / min of a row above): under emulation \
         a call's time varies that much between repetitions, and the added times and ratios above move between \
         runs by more than the targets' margins.\n"
    ));
    let verdict = |ok: bool| if ok { "yes" } else { "**no**" };
    t.push_str("\n| target (fentry) | met | measured |\n| --- | --- | --- |\n");
    t.push_str(&format!(
        "| getpid (unhooked) within 2 % of nothing attached | {} | {getpid:+.1} % |\n",
        verdict(getpid <= 2.0)
    ));
    for (call, label) in CALLS.iter().take(2) {
        let (tp, fe) = (added("tracepoints", call), added("fentry", call));
        t.push_str(&format!(
            "| {label} by a non-sshd process: fentry adds ≤ 1/5 of what the tracepoints add | {} | {fe:+.1} vs {tp:+.1} ns |\n",
            verdict(fe <= tp / 5.0)
        ));
    }
    t.push_str(END);
    t
}

/// Replaces the guest section of `doc` (or appends one).
fn write(doc: &Path, section: &str) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let out = match (text.find(BEGIN), text.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{section}{}", &text[..start], &text[end + END.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    fs::write(doc, out).with_context(|| format!("writing {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_judges_ratios_and_replaces_its_predecessor() {
        let mut text = String::new();
        for (cond, sendto, getpid) in
            [("nothing", 100.0, 50.0), ("tracepoints", 400.0, 80.0), ("fentry", 150.0, 50.5), ("auditd", 600.0, 90.0)]
        {
            for call in ["sendto", "setresuid", "fork", "getpid"] {
                let ns = if call == "getpid" { getpid } else { sendto };
                text.push_str(&format!("{cond} {call} {ns}\n"));
            }
        }
        let costs = parse(&text).unwrap();
        let s = section("cell", &costs);
        assert!(s.contains("| sendto (bad fd) | +300.0 | +50.0 | +500.0 | 0.17 | 0.10 |"), "{s}");
        assert!(s.contains("| getpid (unhooked) within 2 % of nothing attached | yes | +1.0 % |"), "{s}");
        assert!(parse("nothing sendto 1\n").is_err());
        let dir = std::env::temp_dir().join(format!("xtask-guest-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("performance.md");
        fs::write(&doc, format!("# P\n\n{BEGIN}\nold\n{END}\n\n## after\n")).unwrap();
        write(&doc, &s).unwrap();
        let out = fs::read_to_string(&doc).unwrap();
        assert!(!out.contains("old") && out.contains("## after") && out.matches(BEGIN).count() == 1, "{out}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
