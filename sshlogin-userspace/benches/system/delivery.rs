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

/// A loopback OTLP/HTTP receiver; returns its port and what arrives.
pub fn receiver() -> (u16, mpsc::Receiver<Arrival>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
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
                    let (at, wall) = (Instant::now(), SystemTime::now());
                    let raw = if gzip {
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut out).unwrap();
                        out
                    } else {
                        body
                    };
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
                        let _ = tx.send(Arrival {
                            at,
                            wall,
                            event: rec.event_name.clone(),
                            user,
                            time_unix_nano: rec.time_unix_nano,
                        });
                    }
                    let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, rx)
}

/// `n` key logins one after another; for each, milliseconds from starting
/// the client to the open event's arrival, and from the kernel's timestamp
/// of the event to its arrival.
pub fn logins(n: usize, login: impl Fn(), user: &str, rx: &mpsc::Receiver<Arrival>) -> (Vec<f64>, Vec<f64>) {
    let (mut from_connect, mut from_kernel) = (Vec::new(), Vec::new());
    for _ in 0..n {
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        login();
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
    (from_connect, from_kernel)
}
