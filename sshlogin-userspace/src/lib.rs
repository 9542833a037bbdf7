//! sshlogin: every SSH login on a Linux host, seen through eBPF.
//!
//! The pipeline, one module a stage:
//!
//! ```text
//! probes (kernel) -> source -> decode -> admit -> correlate -> failures -> enrich -> seen -> spool -> export
//! ```
//!
//! `pipeline` runs decode → admit → correlate → failures → enrich on batches of raw records;
//! `app` wires the stages for each command of the `sshlogin` binary.

pub mod admit;
pub mod app;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod export;
pub mod failures;
pub mod host;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod otel;
pub mod pipeline;
pub mod probes;
pub mod resource;
pub mod ring;
pub mod seen;
pub mod source;
pub mod spool;

/// An error and its causes, `outer: cause: root cause`: the one way
/// sshlogin writes an error's chain (as anyhow's `{:#}` does), since what
/// really failed is often only in a source (reqwest, hyper, io).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
