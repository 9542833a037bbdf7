//! sshlogin: every SSH login on this host, seen through eBPF.
//!
//! probes (kernel) → source → decode → correlate → enrich → export

use std::process::ExitCode;

/// Records become a few small strings each; mimalloc serves those faster
/// than glibc's allocator (docs/performance.md, pipeline throughput).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use sshlogin::{app, cli};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    if let Err(e) = init_logging(&filter, cli.log_format == sshlogin::config::LogFormat::Json) {
        eprintln!("sshlogin: --log: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sshlogin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::main(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<sshlogin::config::ConfigError>() {
            // A setting that cannot be used: a usage error, like a bad flag.
            Some(bad) => {
                eprintln!("sshlogin: configuration error: {bad}");
                ExitCode::from(2)
            }
            None => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(filter: &str, json: bool) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    Ok(())
}
