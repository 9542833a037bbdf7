//! `cargo xtask fuzz`: the cargo-fuzz targets, each for a fixed time, with
//! the corpus seeded from the captures of real sshd runs.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};
use sshlogin_common::{capture, kind, message_data, record_kind};

use crate::{bootstrap, sh, workspace_root};

pub const TARGETS: &[&str] = &["decode_record", "audit_text", "syslog_line"];

/// Runs every target; returns how many ran clean and which did not.
pub fn run(seconds: u64) -> Result<(u64, Vec<String>)> {
    bootstrap::cargo_fuzz()?;
    let root = workspace_root();
    seed(&root.join("sshlogin-userspace/tests/fixtures/captures"), &root.join("fuzz/corpus"))?;
    let logs = root.join("target/fuzz-logs");
    fs::create_dir_all(&logs)?;
    let (mut clean, mut failed) = (0, Vec::new());
    for target in TARGETS {
        // libFuzzer prints a line per new input, thousands a minute: they
        // go to a log, and only its verdict is shown.
        let log_path = logs.join(format!("{target}.log"));
        println!("xtask: fuzzing {target} for {seconds} s (its output in {})", log_path.display());
        let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let ran = sh(Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "run", target, &format!("fuzz/corpus/{target}")])
            .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
            .stdout(log.try_clone()?)
            .stderr(log));
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        match ran {
            Ok(()) => {
                clean += 1;
                let done = lines.iter().rev().find(|l| l.starts_with("Done ")).unwrap_or(&"(no summary)");
                println!("xtask: fuzz target {target}: no crash; {done}");
            }
            Err(e) => {
                for l in &lines[lines.len().saturating_sub(40)..] {
                    println!("{l}");
                }
                println!("xtask: fuzz target {target} failed (crash input under fuzz/artifacts/{target}): {e:#}");
                failed.push(target.to_string());
            }
        }
    }
    Ok((clean, failed))
}

/// One corpus file per fixture record for decode_record, and the message
/// bytes of audit and syslog records for the text targets.
fn seed(captures: &Path, corpus: &Path) -> Result<()> {
    for target in TARGETS {
        fs::create_dir_all(corpus.join(target))?;
    }
    for entry in fs::read_dir(captures).with_context(|| format!("reading {}", captures.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "hex") {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut i = 0;
        for (n, line) in text.lines().enumerate() {
            let bytes = match capture::parse_line(line) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(e) => bail!("{}: line {}: {e}", path.display(), n + 1),
            };
            let name = format!("{stem}-{i}");
            i += 1;
            fs::write(corpus.join("decode_record").join(&name), &bytes)?;
            let target = match record_kind(&bytes) {
                Some(kind::AUDIT) => "audit_text",
                Some(kind::SYSLOG) => "syslog_line",
                _ => continue,
            };
            if let Ok(data) = message_data(&bytes) {
                fs::write(corpus.join(target).join(name), data)?;
            }
        }
    }
    Ok(())
}
