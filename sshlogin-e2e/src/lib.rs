//! sshlogin's privileged end-to-end tests (`tests/e2e`) and the harness
//! they share with the system bench: test users, a real sshd, real clients,
//! and the daemon loaded for real.
//!
//! Outside the workspace's default members: a plain `cargo test` never
//! builds or runs them. `cargo xtask test` builds the daemon and runs them
//! as root with `SSHLOGIN_BIN` naming the binary.

pub mod harness;
