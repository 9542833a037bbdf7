//! Wiring: which stages run for each command.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::{
    admit::{HostCheck, TreeCheck, TrustCapture, binaries::Binaries, scan},
    capture, cli, config,
    correlate::{
        self,
        process::{NoProc, ProcView},
    },
    decode,
    event::Agent,
    export::{Exporters, stdout::StdoutSink},
    host::{self, Nss, SystemClock, procfs::ProcFs},
    lifecycle::{self, Lifecycle},
    memory,
    metrics::{KernelDropped, Metrics, Refused, SessionDropped},
    otel,
    pipeline::Pipeline,
    probes, resource,
    seen::Seen,
    source,
};

/// When nothing is pending, the daemon wakes this often (to read the kernel
/// counters and forget exited processes); otherwise when a timer is due.
const IDLE_TICK: Duration = Duration::from_secs(10);
/// Batches between the ring-buffer reader and the pipeline.
const READER_QUEUE: usize = 4096;
/// How long records must have stopped before the memory they used is
/// handed back to the kernel (crate::memory).
const QUIET: Duration = Duration::from_secs(1);

pub async fn main(command: cli::Command) -> Result<()> {
    match command {
        cli::Command::Run(args) => run(*args).await,
        cli::Command::Capture(args) => capture(args).await,
        cli::Command::Replay(args) => replay(args),
        cli::Command::Check(args) => check(*args).await,
    }
}

/// Configuration for the commands that take no config file.
fn defaults(probes: &config::ProbeFlags, pipeline: &config::PipelineFlags) -> Result<config::Config> {
    let flags = config::Flags { probes: probes.clone(), pipeline: pipeline.clone(), ..config::Flags::default() };
    Ok(config::resolve_without_env(&flags)?)
}

fn pipeline(
    config: &config::Config,
    view: Box<dyn ProcView + Send>,
    check: Box<dyn TreeCheck>,
    metrics: Arc<Metrics>,
) -> Pipeline<Nss> {
    let settings = correlate::Settings {
        boot_id: host::boot_id(),
        family: config.capture.family.clone(),
        activity: correlate::activity::Settings::from(&config.session),
    };
    Pipeline::new(settings, config.failures, view, check, Nss, Box::new(SystemClock), metrics)
}

/// The sshd processes running now become members; their binaries (and
/// those of the host's own listeners) are what new trees are checked against.
fn scan_running(capture: &config::Capture, probes: &probes::Probes) -> (scan::Scan, HostCheck) {
    let mut binaries = Binaries::new(capture.sshd_paths.clone());
    let members = probes.members();
    let found = scan::scan(&capture.family, &mut binaries, members.as_ref());
    for path in &found.discovered {
        tracing::info!(path, "admitting the binary of a running sshd listener of this host");
    }
    let mut named = std::collections::HashSet::new();
    for (pid, exe) in &found.refused {
        if named.insert(exe) {
            tracing::warn!(
                pid,
                exe,
                "refused a running process tree whose executable is not one of this host's sshd binaries (root \
                 runs a binary named like sshd); if it is an sshd, admit it with --sshd-path {exe} \
                 (capture.sshd_paths)"
            );
        }
    }
    tracing::info!(
        trees = found.trees.len(),
        processes = found.seeds.len(),
        binaries = ?binaries.paths(),
        "sshd processes already running are followed"
    );
    (found, HostCheck::new(binaries, members))
}

/// Stops the ring-buffer reader on SIGINT or SIGTERM; the rest of the
/// pipeline stops when the reader has handed on its last batch. The
/// signal's name is kept for `sshlogin.stop`.
fn stop_reader_on_signal(reader: &source::Stopper) -> Result<Arc<std::sync::OnceLock<&'static str>>> {
    let why = Arc::new(std::sync::OnceLock::new());
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let reader = reader.clone();
    let signal = why.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("{name}: stopping");
        let _ = signal.set(name);
        reader.stop();
    });
    Ok(why)
}

async fn run(args: cli::RunArgs) -> Result<()> {
    let config = config::load(&args)?;
    let metrics = Metrics::new();
    let exporters = Exporters::start(&config, resource::with_overrides(&config.resource), metrics.clone()).await?;
    let metrics_server = match config.metrics_listen {
        Some(addr) => Some(crate::metrics::serve(addr, metrics.clone()).await?),
        None => None,
    };
    let seen = config.first_seen.map(|s| Seen::open(&config.spool.dir, s, unix_now_s(), metrics.clone()));
    let mut outlet = Outlet { seen, exporters };
    let (probes, rings) = probes::Probes::load(&probes::Settings::from(&config))?;
    let (found, check) = scan_running(&config.capture, &probes);
    let binaries = check.binaries.paths();
    let mut pipeline = pipeline(&config, Box::new(ProcFs), Box::new(check), metrics.clone());
    pipeline.seed(&found);
    let (tx, mut rx) = mpsc::channel(READER_QUEUE);
    let reader = source::spawn(rings, tx)?;
    let signal = stop_reader_on_signal(&reader.1)?;
    let mut lifecycle = Lifecycle::new(config.heartbeat, metrics.clone());
    let mut kernel = probes::KernelCounters::default();
    let mut counters_read = std::time::Instant::now();
    let mut events = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    // What loading the probes parsed is garbage now.
    memory::release();
    let mut last_batch: Option<std::time::Instant> = None;
    tracing::info!("reporting SSH logins");
    // systemd (Type=notify) starts sshd only now: no login before the probes.
    host::notify("READY=1");
    let backend = probes.backend().name();
    pipeline.agent(Agent::Start(lifecycle::start(&config, backend, binaries)), host::boot_now_ns(), &mut events);
    if let Err(e) = outlet.send(&mut events) {
        tracing::error!("{e:#}; stopping");
        reader.1.stop();
        failed = Some(e);
    }
    loop {
        let wait = pipeline
            .next_due()
            .map(|due| Duration::from_nanos(due.saturating_sub(host::boot_now_ns())))
            .into_iter()
            .chain(lifecycle.due_in())
            .fold(IDLE_TICK, Duration::min)
            .min(if last_batch.is_some() { QUIET } else { IDLE_TICK });
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => {
                    pipeline.records(batch, &mut events);
                    last_batch = Some(std::time::Instant::now());
                }
                None => break,
            },
            _ = tokio::time::sleep(wait) => {}
        }
        // Timers and counters also run while records keep arriving.
        let now = host::boot_now_ns();
        if pipeline.next_due().is_some_and(|due| due <= now) || counters_read.elapsed() >= IDLE_TICK {
            pipeline.tick(now, rx.is_empty(), &mut events);
        }
        if counters_read.elapsed() >= IDLE_TICK {
            let (now_counters, lost) = kernel_counters(&probes, kernel, &metrics);
            kernel = now_counters;
            if lost {
                pipeline.records_lost(host::boot_now_ns(), &mut events);
            }
            counters_read = std::time::Instant::now();
        }
        if lifecycle.due_in().is_some_and(|d| d.is_zero()) {
            pipeline.flush_summaries(&mut events);
        }
        if let Some(beat) = lifecycle.heartbeat() {
            pipeline.agent(beat, host::boot_now_ns(), &mut events);
        }
        // An exporter that cannot go on (stdout closed, the spool failing
        // for too long) stops the daemon the orderly way, then fails it.
        if failed.is_none()
            && let Err(e) = outlet.send(&mut events)
        {
            tracing::error!("{e:#}; stopping");
            reader.1.stop();
            failed = Some(e);
        }
        events.clear();
        if last_batch.is_some_and(|at| at.elapsed() >= QUIET) {
            memory::release();
            last_batch = None;
        }
    }
    host::notify("STOPPING=1");
    if reader.0.join().is_err() {
        anyhow::bail!("the ring-buffer reader thread panicked");
    }
    pipeline.finish(&mut events);
    kernel_counters(&probes, kernel, &metrics);
    let reason = match (&failed, signal.get()) {
        (Some(e), _) => format!("error: {e:#}"),
        (None, Some(name)) => (*name).to_string(),
        (None, None) => "the ring-buffer reader ended".to_string(),
    };
    pipeline.agent(lifecycle.stop(&reason), host::boot_now_ns(), &mut events);
    // Also after a failure: the exporters that still work take the stop
    // and its reason.
    let sent = outlet.send(&mut events);
    if failed.is_none() {
        failed = sent.err();
    }
    drop(probes);
    tracing::info!("probes detached; flushing");
    if let Some(seen) = &mut outlet.seen {
        seen.sync();
    }
    outlet.exporters.finish().await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    tracing::info!("stopped; {}", metrics.summary());
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The stages after the pipeline: first-seen marks, then every exporter.
struct Outlet {
    seen: Option<Seen>,
    exporters: Exporters,
}

impl Outlet {
    /// Sends `events` on (and empties it).
    fn send(&mut self, events: &mut Vec<crate::event::Event>) -> Result<()> {
        if let Some(seen) = &mut self.seen {
            seen.mark(events, unix_now_s());
        }
        let sent = self.exporters.send(events);
        events.clear();
        sent
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads the kernel's counters into the metrics; warns about what was lost
/// or refused since `before`. Also says whether records were lost.
fn kernel_counters(
    probes: &probes::Probes,
    before: probes::KernelCounters,
    metrics: &Metrics,
) -> (probes::KernelCounters, bool) {
    let now = match probes.counters() {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!("cannot read the kernel counters: {e:#}");
            return (before, false);
        }
    };
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    let lost = [
        (KernelDropped::RingbufFull, delta(now.ringbuf_full, before.ringbuf_full)),
        (KernelDropped::ReadFailed, delta(now.read_failed, before.read_failed)),
        (KernelDropped::PendingFull, delta(now.pending_full, before.pending_full)),
        (KernelDropped::MembersFull, delta(now.members_full, before.members_full)),
    ];
    let mut any = false;
    for (reason, n) in lost {
        if n > 0 {
            any = true;
            metrics.kernel_dropped(reason, n);
            tracing::warn!(
                reason = reason.as_str(),
                n,
                "the kernel dropped records (raise --ring-buffer-size if ringbuf_full grows; members_full: more \
                 sshd processes than the membership map holds)"
            );
        }
    }
    let shed = delta(now.shed, before.shed);
    if shed > 0 {
        metrics.kernel_dropped(KernelDropped::ForwardShed, shed);
        tracing::warn!(n = shed, "forwards not recorded: the ring buffer was more than half full");
    }
    let forged = delta(now.audit_not_root, before.audit_not_root);
    if forged > 0 {
        metrics.refused(Refused::AuditNotRoot, forged);
        tracing::warn!(n = forged, "refused audit records sent by an sshd process that is not root");
    }
    metrics.refused(Refused::SyslogNotRoot, delta(now.syslog_not_root, before.syslog_not_root));
    let unprivileged = delta(now.session_audit_unprivileged, before.session_audit_unprivileged);
    if unprivileged > 0 {
        metrics.refused(Refused::SessionAuditUnprivileged, unprivileged);
        tracing::warn!(n = unprivileged, "refused audit records sent by an unprivileged session process");
    }
    for (reason, n) in [
        (SessionDropped::SessionsFull, delta(now.sessions_full, before.sessions_full)),
        (SessionDropped::SessionQuota, delta(now.session_quota, before.session_quota)),
        (SessionDropped::ActivityFull, delta(now.activity_full, before.activity_full)),
        (SessionDropped::ActivityShed, delta(now.activity_shed, before.activity_shed)),
    ] {
        metrics.session_dropped(reason, n);
    }
    metrics.refused(Refused::Tree, delta(now.refused_tree, before.refused_tree));
    (now, any)
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
    let config = defaults(&config::ProbeFlags::default(), &args.pipeline)?;
    // The records were admitted by the kernel and the daemon that captured
    // them; nothing on this host can check their trees again.
    let mut pipeline = pipeline(&config, Box::new(NoProc), Box::new(TrustCapture), Metrics::new());
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    let records: Vec<_> = events.iter().map(otel::log_record).collect();
    StdoutSink::new(out, resource::detect()).write(&records)?;
    Ok(())
}

async fn capture(args: cli::CaptureArgs) -> Result<()> {
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?)
    };
    let config = defaults(&args.probes, &config::PipelineFlags::default())?;
    let (probes, rings) = probes::Probes::load(&probes::Settings::from(&config))?;
    // Running sshd processes must be members for their records to be made.
    scan_running(&config.capture, &probes);
    let (tx, mut rx) = mpsc::channel(READER_QUEUE);
    let reader = source::spawn(rings, tx)?;
    stop_reader_on_signal(&reader.1)?;
    let deadline = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut count = 0u64;
    let mut timed_out = false;
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
            // Then the reader hands on what is left and the channel closes.
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                reader.1.stop();
            }
        }
    }
    host::notify("STOPPING=1");
    if reader.0.join().is_err() {
        anyhow::bail!("the ring-buffer reader thread panicked");
    }
    tracing::info!(records = count, kernel = ?probes.counters()?, "capture done");
    Ok(())
}

async fn check(args: cli::CheckArgs) -> Result<()> {
    let config = config::load(&args.run)?;
    let items = crate::check::run(&config, !args.no_network).await;
    let mut out = std::io::stdout().lock();
    for item in &items {
        writeln!(out, "{item}")?;
    }
    let failed = items.iter().filter(|i| i.status == crate::check::Status::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed: this host cannot run sshlogin as configured");
    }
    writeln!(out, "this host can run sshlogin")?;
    Ok(())
}
