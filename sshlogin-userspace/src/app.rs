//! Wiring: which stages run for each command.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use crate::{
    capture, cli, config,
    correlate::{
        self,
        process::{NoProc, ProcFs, ProcView},
    },
    decode,
    enrich::{self, Nss, UserDb},
    export::{Exporters, stdout::StdoutSink},
    pipeline::{self, Pipeline},
    probes, resource, source,
};

/// How often timers run; also the most the daemon wakes when idle.
const TICK: Duration = Duration::from_secs(1);
/// Kernel drop counters are read every this many ticks.
const COUNTER_TICKS: u32 = 10;

pub async fn main(command: cli::Command) -> Result<()> {
    match command {
        cli::Command::Run(args) => run(args).await,
        cli::Command::Capture(args) => capture(args).await,
        cli::Command::Replay(args) => replay(args),
    }
}

fn probe_settings(capture: &config::Capture) -> probes::Settings {
    probes::Settings { family: capture.family.clone(), ring_buffer_bytes: capture.ring_buffer_bytes }
}

/// Configuration for the commands that take no config file.
fn defaults(probes: &cli::ProbeArgs, pipeline: &cli::PipelineArgs) -> Result<config::Config> {
    let flags = config::Flags {
        family: probes.family.clone(),
        ring_buffer_size: probes.ring_buffer_size,
        privsep_user: pipeline.privsep_user.clone(),
        ..config::Flags::default()
    };
    Ok(config::resolve_without_env(&flags)?)
}

fn pipeline(capture: &config::Capture, view: Box<dyn ProcView + Send>) -> Pipeline<Nss> {
    let privsep_uid = Nss.uid_of(&capture.privsep_user);
    if privsep_uid.is_none() {
        tracing::warn!(
            user = %capture.privsep_user,
            "sshd's privilege-separation user does not exist here; set --privsep-user if sshd uses another"
        );
    }
    let settings = correlate::Settings { privsep_uid, boot_id: pipeline::boot_id(), family: capture.family.clone() };
    Pipeline::new(settings, view, Nss)
}

/// A watch that flips on SIGINT or SIGTERM.
fn stop_on_signal() -> Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn run(args: cli::RunArgs) -> Result<()> {
    let config = config::load(&args.flags())?;
    let mut exporters = Exporters::start(&config, resource::with_overrides(&config.resource))?;
    let mut pipeline = pipeline(&config.capture, Box::new(ProcFs));
    let (probes, ring) = probes::Probes::load(&probe_settings(&config.capture))?;
    let stop = stop_on_signal()?;
    let (tx, mut rx) = mpsc::channel(1024);
    let reader = tokio::spawn(source::run(ring, tx, stop.clone()));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let mut kernel = probes::KernelCounters::default();
    let mut events = Vec::new();
    tracing::info!("reporting SSH logins");
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => pipeline.records(batch, &mut events),
                None => break,
            },
            _ = tick.tick() => {
                pipeline.tick(enrich::boot_now_ns(), &mut events);
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(COUNTER_TICKS) {
                    kernel = report_kernel_drops(&probes, kernel);
                }
            }
        }
        exporters.send(&events)?;
        events.clear();
    }
    reader.await.context("the ring buffer reader panicked")??;
    pipeline.finish(&mut events);
    exporters.send(&events)?;
    let kernel = report_kernel_drops(&probes, kernel);
    drop(probes);
    for line in exporters.finish().await {
        tracing::info!("{line}");
    }
    tracing::info!(
        records = pipeline.stats.records,
        decode_errors = pipeline.stats.decode_errors,
        kernel_ringbuf_full = kernel.ringbuf_full,
        kernel_read_failed = kernel.read_failed,
        "stopped; probes detached; {}",
        pipeline::count_line(&pipeline.stats)
    );
    Ok(())
}

/// Logs kernel-side losses that happened since `before`.
fn report_kernel_drops(probes: &probes::Probes, before: probes::KernelCounters) -> probes::KernelCounters {
    match probes.counters() {
        Ok(now) => {
            if now != before {
                tracing::warn!(
                    ringbuf_full = now.ringbuf_full - before.ringbuf_full,
                    read_failed = now.read_failed - before.read_failed,
                    pending_full = now.pending_full - before.pending_full,
                    "the kernel dropped records (raise --ring-buffer-size if ringbuf_full grows)"
                );
            }
            now
        }
        Err(e) => {
            tracing::warn!("cannot read the kernel counters: {e:#}");
            before
        }
    }
}

fn replay(args: cli::ReplayArgs) -> Result<()> {
    let file = File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let records = capture::read_records(BufReader::new(file))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.records {
        for raw in records {
            match decode::decode(&raw) {
                Ok(r) => writeln!(out, "{r:?}")?,
                Err(e) => writeln!(out, "undecodable: {e}")?,
            }
        }
        return Ok(out.flush()?);
    }
    let config = defaults(&cli::ProbeArgs::default(), &args.pipeline)?;
    let mut pipeline = pipeline(&config.capture, Box::new(NoProc));
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    let mut sink = StdoutSink::new(out, resource::detect());
    sink.write(&events)?;
    Ok(())
}

async fn capture(args: cli::CaptureArgs) -> Result<()> {
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?)
    };
    let config = defaults(&args.probes, &cli::PipelineArgs::default())?;
    let (probes, ring) = probes::Probes::load(&probe_settings(&config.capture))?;
    let stop = stop_on_signal()?;
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(source::run(ring, tx, stop.clone()));
    let deadline = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut count = 0u64;
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => {
                    for record in batch {
                        capture::write_record(&mut out, &record)?;
                        count += 1;
                    }
                    out.flush()?;
                }
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    drop(rx);
    reader.abort();
    tracing::info!(records = count, kernel = ?probes.counters()?, "capture done");
    Ok(())
}
