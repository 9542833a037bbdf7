//! sshlogin: every SSH login on a Linux host, seen through eBPF.
//!
//! The pipeline, one module a stage:
//!
//! ```text
//! probes (kernel) -> source -> decode -> admit -> correlate -> enrich -> spool -> export
//! ```
//!
//! `pipeline` runs decode → admit → correlate → enrich on batches of raw records;
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
pub mod host;
pub mod metrics;
pub mod otel;
pub mod pipeline;
pub mod probes;
pub mod resource;
pub mod source;
pub mod spool;
