//! Writes the results of a vm-test run into the matrix in
//! docs/portability.md, between its markers, keeping the rows of cells
//! that were not run.

use std::{fs, path::Path};

use anyhow::{Context, Result};

use super::judge::Outcome;

const BEGIN: &str = "<!-- matrix:begin (cargo xtask vm-test --record) -->";
const END: &str = "<!-- matrix:end -->";
const HEADER: &str = "| cell | arch | kernel | backend | userland | OpenSSH | PAM | result | events | last run | QEMU |\n\
                      | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

pub fn write(doc: &Path, outcomes: &[Outcome]) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let (head, rest) = text.split_once(BEGIN).with_context(|| format!("{} has no {BEGIN}", doc.display()))?;
    let (table, tail) = rest.split_once(END).with_context(|| format!("{} has no {END}", doc.display()))?;
    let date = today();
    let mut rows: Vec<(String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| cell ") && !l.starts_with("| ---"))
        .map(|l| (key(l), l.to_string()))
        .collect();
    for o in outcomes {
        let cell_rows: Vec<(bool, String, usize)> = if o.rows.is_empty() {
            // Broken before the scenario ran: both halves failed for that.
            [true, false].iter().map(|&pam| (pam, first(&o.problems), 0)).collect()
        } else {
            o.rows
                .iter()
                .map(|r| {
                    let all: Vec<String> = o.problems.iter().chain(r.problems.iter()).cloned().collect();
                    (r.pam, if all.is_empty() { "pass".to_string() } else { first(&all) }, r.events)
                })
                .collect()
        };
        for (pam, result, events) in cell_rows {
            let fact = |k: &str| o.facts.get(k).cloned().unwrap_or_else(|| "?".into());
            let line = format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.cell.name,
                o.cell.arch.debian(),
                fact("kernel"),
                fact("backend"),
                o.cell.userland,
                fact("openssh"),
                if pam { "yes" } else { "no" },
                result,
                events,
                date,
                fact("accel"),
            );
            let k = key(&line);
            match rows.iter_mut().find(|(rk, _)| *rk == k) {
                Some(row) => row.1 = line,
                None => rows.push((k, line)),
            }
        }
    }
    let mut out = String::new();
    out.push_str(head);
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(HEADER);
    out.push('\n');
    for (_, line) in &rows {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(END);
    out.push_str(tail);
    fs::write(doc, out)?;
    println!("vm-test: recorded {} cell(s) in {}", outcomes.len(), doc.display());
    Ok(())
}

/// A row's identity: its cell and PAM columns (the PAM column counted
/// from the end, so that rows written before a column was added still
/// match theirs).
fn key(line: &str) -> String {
    let cols: Vec<&str> = line.split('|').map(str::trim).collect();
    format!("{}/{}", cols.get(1).unwrap_or(&""), cols.len().checked_sub(6).and_then(|i| cols.get(i)).unwrap_or(&""))
}

/// The first problem, on one line, short enough for a table cell.
fn first(problems: &[String]) -> String {
    let p = problems.first().map_or("failed", String::as_str);
    let line = p.lines().next().unwrap_or(p).replace('|', "/");
    let short: String = line.chars().take(120).collect();
    format!("**FAIL**: {short}")
}

/// Today's date (UTC) from `date`, without a date crate for one string.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
