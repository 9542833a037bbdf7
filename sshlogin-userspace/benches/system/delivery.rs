//! Login to delivery: from the client's connect to the event arriving at a
//! loopback OTLP receiver (this one, decoding with opentelemetry-proto).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, common::v1::any_value::Value};
use prost::Message;

pub struct Arrival {
    pub at: Instant,
    pub wall: SystemTime,
    pub event: String,
    pub user: String,
    pub time_unix_nano: u64,
}

/// An HTTP/1.1 server on loopback that answers every request 200 at once
/// and hands `handle` each body (un-gzipped). Returns its port.
fn serve(handle: impl Fn(Vec<u8>) + Clone + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let handle = handle.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut len, mut gzip) = (0usize, false);
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        gzip |= h.starts_with("content-encoding:") && h.contains("gzip");
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let raw = if gzip {
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut out).unwrap();
                        out
                    } else {
                        body
                    };
                    handle(raw);
                    r.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    port
}

/// A loopback OTLP/HTTP receiver; returns its port and what arrives.
pub fn receiver() -> (u16, mpsc::Receiver<Arrival>) {
    let (tx, rx) = mpsc::channel();
    let port = serve(move |raw: Vec<u8>| {
        let (at, wall) = (Instant::now(), SystemTime::now());
        let req = ExportLogsServiceRequest::decode(raw.as_slice()).expect("protobuf request");
        for rec in req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records) {
            let user = rec
                .attributes
                .iter()
                .find(|kv| kv.key == "user.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let _ =
                tx.send(Arrival { at, wall, event: rec.event_name.clone(), user, time_unix_nano: rec.time_unix_nano });
        }
    });
    (port, rx)
}

/// `n` key logins one after another; for each, milliseconds from starting
/// the client to the open event's arrival, and from the kernel's timestamp
/// of the event to its arrival.
/// `n` logins, each waited for at the receiver: ms from the client's start
/// to the open's arrival, from the open's kernel timestamp to its arrival,
/// and the client's own run time (the whole login, `true` as its command).
pub fn logins(n: usize, login: impl Fn(), user: &str, rx: &mpsc::Receiver<Arrival>) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut from_connect, mut from_kernel, mut client) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        login();
        client.push(t0.elapsed().as_secs_f64() * 1e3);
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let a = rx.recv_timeout(left).expect("the open event arrived within 10 s");
            if a.event == "ssh.session.open" && a.user == user {
                from_connect.push(a.at.duration_since(t0).as_secs_f64() * 1e3);
                let wall = a.wall.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as f64;
                from_kernel.push((wall - a.time_unix_nano as f64) / 1e6);
                break;
            }
        }
    }
    (from_connect, from_kernel, client)
}

/// The client's run time of `n` logins, ms.
pub fn login_times(n: usize, login: impl Fn()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            login();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// A webhook backlog: `n` events already spooled (as after an outage),
/// drained by the exporter one event per request (the default) to a
/// loopback receiver that answers 200 at once. Events per second.
pub fn webhook_backlog(n: usize) -> f64 {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use sshlogin::{
        config::{Compression, DEFAULT_RETRY, FailurePolicy, Format, Sink, SinkKind},
        export::http::Exporter,
        metrics::Metrics,
        otel::{EventName, LogRecord, attr},
        resource::Resource,
        spool::Spool,
    };

    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let port = serve(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    let sink = Sink {
        kind: SinkKind::Webhook,
        url: format!("http://127.0.0.1:{port}/hook"),
        format: Format::Webhook { batch: false },
        compression: Compression::None,
        timeout: Duration::from_secs(10),
        headers: Vec::new(),
        bearer_token_file: None,
        certificate: None,
        client_certificate: None,
        client_key: None,
        batch_max_events: 512,
        batch_max_delay: Duration::from_millis(10),
        retry: DEFAULT_RETRY,
        failure_policy: FailurePolicy::Keep,
        drain_timeout: Duration::from_secs(5),
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 30).unwrap());
    let records: Vec<LogRecord> = (0..n as u64)
        .map(|i| {
            let mut r = LogRecord::new(EventName::AuthFailure, i);
            r.set(attr::USER_NAME, format!("user{i}"));
            r
        })
        .collect();
    spool.append(&records).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let elapsed = runtime.block_on(async {
        let exporter = Exporter::new(&sink, Resource::new(), Metrics::new()).unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let arrived = Arc::new(tokio::sync::Notify::new());
        arrived.notify_one();
        let task = tokio::spawn(exporter.run(spool.clone(), arrived, stop_rx, Duration::from_secs(5)));
        while spool.depth().events > 0 {
            assert!(started.elapsed() < Duration::from_secs(300), "the backlog did not drain");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        stop.send(true).unwrap();
        task.await.unwrap();
        elapsed
    });
    assert!(served.load(Ordering::Relaxed) >= n, "every event reached the receiver");
    n as f64 / elapsed.as_secs_f64()
}
