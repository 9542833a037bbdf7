//! Userspace throughput: decode → correlate → enrich → OTLP protobuf encode
//! of recorded logins on one core. The records are the captures of real
//! sshd runs, repeated with their pids moved so each copy is a connection
//! of its own.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sshlogin::{
    admit::TrustCapture,
    capture,
    config::{Compression, Protocol},
    correlate::{Settings, process::NoProc},
    enrich::UserDb,
    export::otlp::encode,
    host::SystemClock,
    metrics::Metrics,
    otel,
    pipeline::Pipeline,
    resource,
};

/// The allocator the daemon uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURES: &[&str] = &["pam-key-login", "pam-password-fail-then-ok", "pam-wrong-key", "pam-invalid-user"];
const COPIES: u32 = 250;

struct Users;

impl UserDb for Users {
    fn uid_of(&self, name: &str) -> Option<u32> {
        name.starts_with("sl-").then_some(1001)
    }
    fn name_of(&self, _uid: u32) -> Option<String> {
        Some("sl-alice".into())
    }
}

fn records() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for copy in 0..COPIES {
        for f in FIXTURES {
            for mut r in capture::fixture(f) {
                let shift = |bytes: &mut [u8], at: usize| {
                    let v = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
                    bytes[at..at + 4].copy_from_slice(&(v + copy * 100_000).to_ne_bytes());
                };
                shift(&mut r, 4);
                shift(&mut r, 8);
                if u32::from_ne_bytes(r[..4].try_into().unwrap()) == sshlogin_common::kind::FORK {
                    shift(&mut r, sshlogin_common::layout::HEADER_SIZE);
                }
                // What the ring-buffer reader hands on.
                r.truncate(sshlogin::source::used_len(&r));
                all.push(r);
            }
        }
    }
    all
}

fn run(records: &[Vec<u8>], resource: &resource::Resource) -> usize {
    let settings = Settings { boot_id: uuid::Uuid::nil(), family: vec!["sshd".into()], activity: Default::default() };
    // The trees were checked when the fixtures were recorded.
    let mut pipeline = Pipeline::new(
        settings,
        Default::default(),
        Box::new(NoProc),
        Box::new(TrustCapture),
        Users,
        Box::new(SystemClock),
        Metrics::new(),
    );
    let mut events = Vec::new();
    pipeline.records(records, &mut events);
    pipeline.finish(&mut events);
    let records: Vec<otel::LogRecord> = events.iter().map(otel::log_record).collect();
    for batch in records.chunks(512) {
        let body = encode::body(&encode::request(resource, batch), Protocol::HttpProtobuf, Compression::None).unwrap();
        black_box(body.bytes.len());
    }
    events.len()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let resource = resource::detect();
    let events = run(&records, &resource);
    assert!(events > 0);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(20);
    group.bench_function("replay", |b| b.iter(|| run(black_box(&records), &resource)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
