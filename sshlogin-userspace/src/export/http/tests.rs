//! The exporter against a real HTTP server on loopback that answers from a
//! script and records what it received.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use super::*;
use crate::{
    config::{Compression, DEFAULT_RETRY, FailurePolicy, Format, Protocol, Retry, SinkKind},
    otel::{EventName, attr},
};

fn exporter(cfg: &Sink) -> (Exporter, Arc<Metrics>) {
    let metrics = Metrics::new();
    (Exporter::new(cfg, Resource::new(), metrics.clone()).unwrap(), metrics)
}

/// One batch through `export`, with a 5 s budget and no shutdown.
async fn send(ex: &Exporter, events: &[LogRecord]) -> Outcome {
    let (_keep, mut stop) = watch::channel(false);
    ex.export(events, Instant::now() + ex.config.retry.max_elapsed, &mut stop).await
}

#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// (status, extra headers, body) of one answer.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// Answers each request with the next scripted answer; 200 when the
/// script is used up.
async fn server(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let script = Mutex::new(VecDeque::from(script));
    serve(move |_| script.lock().unwrap().pop_front().unwrap_or((200, vec![], vec![]))).await
}

/// Answers each request with what `answer` makes of it.
async fn serve(answer: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/logs", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        stream.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push((k.to_string(), v.trim().to_string()));
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let got = Received { headers, body };
                    let (status, extra, reply) = answer(&got);
                    log.lock().unwrap().push(got);
                    let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", reply.len());
                    for (k, v) in extra {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let s = stream.get_mut();
                    s.write_all(head.as_bytes()).await.unwrap();
                    s.write_all(&reply).await.unwrap();
                }
            });
        }
    });
    (url, received)
}

fn config(url: &str) -> Sink {
    Sink {
        kind: SinkKind::Otlp,
        url: url.to_string(),
        format: Format::Otlp(Protocol::HttpProtobuf),
        compression: Compression::None,
        timeout: Duration::from_secs(5),
        headers: vec![("x-tenant".into(), "ops".into())],
        bearer_token_file: None,
        certificate: None,
        client_certificate: None,
        client_key: None,
        batch_max_events: 3,
        batch_max_delay: Duration::from_millis(50),
        retry: Retry {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(5),
        },
        failure_policy: FailurePolicy::Keep,
        drain_timeout: Duration::from_secs(2),
    }
}

fn event(user: &str) -> LogRecord {
    let mut e = LogRecord::new(EventName::AuthFailure, 1);
    e.set(attr::USER_NAME, user);
    e
}

fn decode(r: &Received) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest::decode(r.body.as_slice()).unwrap()
}

#[tokio::test]
async fn success_sends_headers_and_one_request() {
    let (url, got) = server(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut cfg = config(&url);
    cfg.bearer_token_file = Some(token);
    let (ex, _) = exporter(&cfg);
    assert_eq!(send(&ex, &[event("a"), event("b")]).await, Outcome::Delivered { rejected: 0 });
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(r.header("x-tenant"), Some("ops"));
    assert!(r.header("user-agent").unwrap().starts_with("sshlogin/"));
    assert_eq!(decode(r).resource_logs[0].scope_logs[0].log_records.len(), 2);
}

#[tokio::test]
async fn retries_503_honouring_retry_after_then_succeeds() {
    let retry_after = vec![("retry-after", "0".to_string())];
    let (url, got) = server(vec![(503, retry_after.clone(), vec![]), (503, retry_after, vec![])]).await;
    let (ex, m) = exporter(&config(&url));
    assert_eq!(send(&ex, &[event("a")]).await, Outcome::Delivered { rejected: 0 });
    assert_eq!(got.lock().unwrap().len(), 3);
    assert_eq!(m.retries(), 2);
    assert_eq!(m.exported(Delivery::Sent), 1);
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let body = br#"{"code":3,"message":"unknown field"}"#.to_vec();
    let (url, got) = server(vec![(400, vec![("content-type", "application/json".into())], body)]).await;
    let (ex, m) = exporter(&config(&url));
    let Outcome::Dropped { reason } = send(&ex, &[event("a")]).await else { panic!() };
    assert_eq!(reason, "HTTP 400: unknown field");
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!(m.exported(Delivery::Dropped), 1);
}

#[tokio::test]
async fn partial_success_is_counted_not_retried() {
    let body = br#"{"partialSuccess":{"rejectedLogRecords":"1","errorMessage":"too old"}}"#.to_vec();
    let (url, got) = server(vec![(200, vec![("content-type", "application/json".into())], body)]).await;
    let (ex, m) = exporter(&config(&url));
    assert_eq!(send(&ex, &[event("a"), event("b")]).await, Outcome::Delivered { rejected: 1 });
    assert_eq!(got.lock().unwrap().len(), 1);
    assert_eq!((m.exported(Delivery::Rejected), m.exported(Delivery::Sent)), (1, 1));
}

#[tokio::test]
async fn a_spent_retry_budget_leaves_the_batch_retryable() {
    let script = (0..50).map(|_| (503, vec![], vec![])).collect();
    let (url, _) = server(script).await;
    let mut cfg = config(&url);
    cfg.retry.max_elapsed = Duration::from_millis(300);
    let (ex, m) = exporter(&cfg);
    let Outcome::Retryable { reason } = send(&ex, &[event("a")]).await else { panic!() };
    assert!(reason.starts_with("HTTP 503; retried for"), "{reason}");
    assert_eq!(m.exported(Delivery::Dropped), 0, "nothing is dropped: the spool keeps it");
}

#[tokio::test]
async fn connection_errors_are_retried() {
    // A port nothing listens on, then gives up within the budget.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = config(&format!("http://127.0.0.1:{port}/v1/logs"));
    cfg.retry.max_elapsed = Duration::from_millis(200);
    let (ex, m) = exporter(&cfg);
    let Outcome::Retryable { reason } = send(&ex, &[event("a")]).await else { panic!() };
    assert!(reason.contains("retried for"), "{reason}");
    assert!(m.retries() >= 1);
}

#[tokio::test]
async fn sends_the_spool_in_batches_and_empties_it() {
    let (url, got) = server(vec![]).await;
    let mut cfg = config(&url);
    cfg.format = Format::Otlp(Protocol::HttpJson);
    cfg.compression = Compression::Gzip;
    let (ex, _) = exporter(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
    spool.append(&["a", "b", "c", "d"].map(event)).unwrap();
    let arrived = Arc::new(Notify::new());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ex.run(spool.clone(), arrived.clone(), stop_rx, Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    spool.append(&[event("e")]).unwrap();
    arrived.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(spool.depth().events, 0);
    let got = got.lock().unwrap();
    let sizes: Vec<usize> = got
        .iter()
        .map(|r| {
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(r.body.as_slice()), &mut json).unwrap();
            let req: ExportLogsServiceRequest = serde_json::from_slice(&json).unwrap();
            req.resource_logs[0].scope_logs[0].log_records.len()
        })
        .collect();
    assert_eq!(sizes, [3, 1, 1], "what was spooled first goes first, in batches of at most 3");
}

/// A spool whose OTLP table holds `raw` entries as they are, as another
/// version of sshlogin might have written them.
fn spool_with_raw(dir: &std::path::Path, raw: &[&[u8]]) -> Arc<Spool> {
    {
        let db = redb::Database::create(dir.join("spool.redb")).unwrap();
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("otlp_events");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            for (i, entry) in raw.iter().enumerate() {
                t.insert(i as u64, *entry).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    Arc::new(Spool::open(dir, 1 << 20).unwrap())
}

/// Runs the exporter over `spool` for 300 ms, then stops it.
async fn drain(ex: Exporter, spool: &Arc<Spool>) {
    drain_for(ex, spool, Duration::from_millis(300)).await;
}

async fn drain_for(ex: Exporter, spool: &Arc<Spool>, run_for: Duration) {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ex.run(spool.clone(), Arc::new(Notify::new()), stop_rx, Duration::from_secs(2)));
    tokio::time::sleep(run_for).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Entries an older or newer version wrote in a format this one cannot
/// read are removed and counted, never sent or retried forever.
#[tokio::test]
async fn unreadable_spool_entries_are_dropped_and_counted() {
    let (url, got) = server(vec![]).await;
    let (ex, m) = exporter(&config(&url));
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with_raw(dir.path(), &[b"{not json", br#"{"some":"other shape"}"#]);
    spool.append(&[event("a")]).unwrap();
    drain(ex, &spool).await;
    assert_eq!(spool.depth().events, 0);
    assert_eq!(m.exported(Delivery::Dropped), 2);
    assert_eq!(m.exported(Delivery::Sent), 1);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1, "one request, holding the one readable event");
    assert_eq!(decode(&got[0]).resource_logs[0].scope_logs[0].log_records.len(), 1);
}

#[tokio::test]
async fn a_spool_of_nothing_readable_is_emptied_without_a_request() {
    let (url, got) = server(vec![]).await;
    let (ex, m) = exporter(&config(&url));
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with_raw(dir.path(), &[b"\xff"]);
    drain(ex, &spool).await;
    assert_eq!(spool.depth().events, 0);
    assert_eq!(m.exported(Delivery::Dropped), 1);
    assert!(got.lock().unwrap().is_empty(), "no request for nothing");
}

#[tokio::test]
async fn shutdown_leaves_undeliverable_events_in_the_spool() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ex, _) = exporter(&config(&format!("http://127.0.0.1:{port}/v1/logs")));
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
    spool.append(&[event("a"), event("b")]).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ex.run(spool.clone(), Arc::new(Notify::new()), stop_rx, Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(2), "shutdown took {:?}", asked.elapsed());
    assert_eq!(spool.depth().events, 2);
}

#[test]
fn missing_token_file_names_the_key() {
    let mut cfg = config("http://127.0.0.1:1/v1/logs");
    cfg.bearer_token_file = Some("/nonexistent/token".into());
    let err = Exporter::new(&cfg, Resource::new(), Metrics::new()).err().unwrap();
    assert_eq!(err.key, "otlp.bearer_token_file");
}

#[test]
fn default_retry_policy_is_sane() {
    assert!(DEFAULT_RETRY.initial_backoff < DEFAULT_RETRY.max_backoff);
    assert!(DEFAULT_RETRY.max_backoff < DEFAULT_RETRY.max_elapsed);
}

#[tokio::test]
async fn a_webhook_gets_the_stdout_object_one_per_request_or_an_array() {
    let (url, got) = server(vec![]).await;
    let mut cfg = config(&url);
    cfg.kind = SinkKind::Webhook;
    cfg.format = Format::Webhook { batch: false };
    let (ex, m) = exporter(&cfg);
    assert_eq!(send(&ex, &[event("a")]).await, Outcome::Delivered { rejected: 0 });
    cfg.format = Format::Webhook { batch: true };
    let (batched, _) = exporter(&cfg);
    assert_eq!(send(&batched, &[event("b"), event("c")]).await, Outcome::Delivered { rejected: 0 });
    let got = got.lock().unwrap();
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("x-tenant"), Some("ops"));
    let one: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(one["event_name"], "ssh.auth.failure");
    assert_eq!(one["attributes"]["user.name"], "a");
    let many: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    let users: Vec<&str> =
        many.as_array().unwrap().iter().map(|e| e["attributes"]["user.name"].as_str().unwrap()).collect();
    assert_eq!(users, ["b", "c"]);
    assert_eq!(m.exported(Delivery::Sent), 1);
}

/// Runs the exporter over one spooled event for `secs`, with the default
/// backoffs, against an endpoint that always answers 503 with
/// `Retry-After: retry_after`; returns how many requests it got.
async fn requests_in(secs: u64, retry_after: &str) -> usize {
    let retry_after = retry_after.to_string();
    let (url, got) = serve(move |_| (503, vec![("retry-after", retry_after.clone())], vec![])).await;
    let mut cfg = config(&url);
    cfg.retry = DEFAULT_RETRY;
    let (ex, _) = exporter(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
    spool.append(&[event("a")]).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ex.run(spool.clone(), Arc::new(Notify::new()), stop_rx, Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(spool.depth().events, 1, "the batch waits in the spool");
    got.lock().unwrap().len()
}

// A quota-limited endpoint once got 9 790 requests in 20 s from one login.
#[tokio::test]
async fn retry_after_an_hour_means_one_request_in_20_s() {
    assert_eq!(requests_in(20, "3600").await, 1);
}

#[tokio::test]
async fn retry_after_zero_still_backs_off() {
    let n = requests_in(20, "0").await;
    // At least a second apart, and the backoff grows: at most 20.
    assert!((2..=20).contains(&n), "{n} requests");
}

#[tokio::test]
async fn retry_after_a_past_date_still_backs_off() {
    let n = requests_in(20, "Wed, 21 Oct 2015 07:28:00 GMT").await;
    assert!((2..=20).contains(&n), "{n} requests");
}

/// An expired token loses nothing: 401s keep the batch, and the token file
/// is read again when it is rewritten.
#[tokio::test]
async fn unauthorized_keeps_the_batch_until_the_token_is_rotated() {
    let (url, got) = serve(|r: &Received| match r.header("authorization") {
        Some("Bearer fresh") => (200, vec![], vec![]),
        _ => (401, vec![], b"token expired".to_vec()),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "stale\n").unwrap();
    let mut cfg = config(&url);
    cfg.bearer_token_file = Some(token.clone());
    let (ex, m) = exporter(&cfg);
    let spool = Arc::new(Spool::open(&dir.path().join("spool"), 1 << 20).unwrap());
    spool.append(&[event("a"), event("b")]).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ex.run(spool.clone(), Arc::new(Notify::new()), stop_rx, Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spool.depth().events, 2, "refused, kept");
    let refused = got.lock().unwrap().len();
    assert!(refused >= 2, "retried at the maximum backoff: {refused}");
    assert!(refused <= 6, "no faster than the maximum backoff (100 ms here): {refused}");
    std::fs::write(&token, "fresh\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(spool.depth().events, 0, "delivered with the new token");
    assert_eq!((m.exported(Delivery::Sent), m.exported(Delivery::Dropped)), (2, 0));
}

#[tokio::test]
async fn the_drop_policy_drops_what_the_endpoint_refuses() {
    let (url, got) = server(vec![(404, vec![], vec![])]).await;
    let mut cfg = config(&url);
    cfg.failure_policy = FailurePolicy::Drop;
    let (ex, m) = exporter(&cfg);
    let Outcome::Dropped { reason } = send(&ex, &[event("a")]).await else { panic!() };
    assert!(reason.starts_with("HTTP 404"), "{reason}");
    assert_eq!((got.lock().unwrap().len(), m.exported(Delivery::Dropped)), (1, 1));
}

/// A redirect is not followed: the custom headers (credentials) would go
/// along to whatever host it names.
#[tokio::test]
async fn redirects_are_not_followed_with_the_headers() {
    let (elsewhere, got_elsewhere) = server(vec![]).await;
    let (url, got) = serve(move |_| (307, vec![("location", elsewhere.clone())], vec![])).await;
    let mut cfg = config(&url);
    cfg.retry.max_elapsed = Duration::from_millis(150);
    let (ex, m) = exporter(&cfg);
    let Outcome::Retryable { reason } = send(&ex, &[event("a")]).await else { panic!() };
    assert!(reason.starts_with("HTTP 307"), "{reason}");
    assert!(!got.lock().unwrap().is_empty());
    assert!(got_elsewhere.lock().unwrap().is_empty(), "nothing reached the other host");
    assert_eq!(m.exported(Delivery::Dropped), 0, "kept in the spool");
}

/// Without `batch`, a webhook gets one event per request, several in
/// flight: a backlog is not one round trip per event. What fails stays
/// spooled alone; what was delivered is not sent again.
#[tokio::test]
async fn a_webhook_backlog_goes_one_event_per_request_and_keeps_only_what_failed() {
    let (url, got) = serve(|r: &Received| {
        let body = String::from_utf8_lossy(&r.body);
        if body.contains("\"user.name\":\"b\"") { (503, vec![], vec![]) } else { (200, vec![], vec![]) }
    })
    .await;
    let mut cfg = config(&url);
    cfg.kind = SinkKind::Webhook;
    cfg.format = Format::Webhook { batch: false };
    cfg.batch_max_events = 512;
    let (ex, m) = exporter(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
    let users: Vec<String> = (0..40).map(|i| if i == 7 { "b".into() } else { format!("u{i}") }).collect();
    spool.append(&users.iter().map(|u| event(u)).collect::<Vec<_>>()).unwrap();
    // The one failing event backs the whole endpoint off (100 ms at most
    // here) each time it fails; the others go between.
    drain_for(ex, &spool, Duration::from_secs(3)).await;
    assert_eq!(spool.depth().events, 1, "only the refused event waits");
    assert_eq!(m.exported(Delivery::Sent), 39);
    let got = got.lock().unwrap();
    let to_others = got.iter().filter(|r| !String::from_utf8_lossy(&r.body).contains("\"user.name\":\"b\"")).count();
    assert_eq!(to_others, 39, "each delivered event was sent once");
    assert!(got.iter().all(|r| r.body.first() == Some(&b'{')), "one JSON object per request");
}
