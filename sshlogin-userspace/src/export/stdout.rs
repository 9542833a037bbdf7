//! One JSON object per line on stdout: the event with its attributes and
//! the resource, flat and easy to `jq`.

use std::io::Write;

use serde::Serialize;

use crate::{
    otel::{Attributes, EventName, LogRecord},
    resource::Resource,
};

#[derive(Serialize)]
struct Line<'a> {
    event_name: EventName,
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_text: &'static str,
    severity_number: i32,
    body: &'a str,
    attributes: &'a Attributes,
    resource: &'a Resource,
}

/// The JSON object of one event, as one line without the newline.
pub fn to_line(e: &LogRecord, resource: &Resource) -> String {
    let line = Line {
        event_name: e.name,
        time_unix_nano: e.time_unix_nano,
        observed_time_unix_nano: e.observed_time_unix_nano,
        severity_text: e.name.severity().text(),
        severity_number: e.name.severity().number(),
        body: &e.body,
        attributes: &e.attributes,
        resource,
    };
    serde_json::to_string(&line).unwrap_or_else(|err| format!("{{\"error\":\"cannot encode event: {err}\"}}"))
}

pub struct StdoutSink<W: Write> {
    out: W,
    resource: Resource,
}

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W, resource: Resource) -> Self {
        StdoutSink { out, resource }
    }

    /// Writes the events and flushes, so a reader sees each batch at once.
    pub fn write(&mut self, events: &[LogRecord]) -> std::io::Result<()> {
        for e in events {
            let mut line = to_line(e, &self.resource);
            line.push('\n');
            self.out.write_all(line.as_bytes())?;
        }
        self.out.flush()
    }
}

/// Batches stdout may queue before it is behind.
const STDOUT_QUEUE: usize = 1024;

/// stdout on a thread of its own: a slow or stuck reader of stdout never
/// holds up the pipeline or the spools.
pub struct StdoutThread {
    tx: Option<std::sync::mpsc::SyncSender<Vec<LogRecord>>>,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StdoutThread {
    pub fn start<W: Write + Send + 'static>(out: W, resource: Resource) -> std::io::Result<StdoutThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<LogRecord>>(STDOUT_QUEUE);
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let report = failed.clone();
        let thread = std::thread::Builder::new().name("stdout".into()).spawn(move || {
            let mut sink = StdoutSink::new(out, resource);
            for batch in rx {
                if let Err(e) = sink.write(&batch) {
                    *report.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    return;
                }
            }
        })?;
        Ok(StdoutThread { tx: Some(tx), failed, thread: Some(thread) })
    }

    /// Hands `records` to the thread. With `wait` (stdout is the only
    /// place events go) it waits for room: better a slower pipeline than
    /// lost lines; without, a thread that is behind gets nothing and this
    /// returns `Ok(false)`. `Err`: writing failed (a closed pipe).
    pub fn send(&self, records: Vec<LogRecord>, wait: bool) -> Result<bool, String> {
        if let Some(e) = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            return Err(e);
        }
        let Some(tx) = &self.tx else { return Ok(false) };
        let sent = if wait { tx.send(records).is_ok() } else { tx.try_send(records).is_ok() };
        match (sent, self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()) {
            (_, Some(e)) => Err(e),
            (sent, None) => Ok(sent),
        }
    }

    /// Writes what is queued, then returns.
    pub fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otel::attr;

    #[test]
    fn line_has_the_documented_keys() {
        let mut e = LogRecord::new(EventName::AuthFailure, 1);
        e.time_unix_nano = 1_764_000_000_000_000_000;
        e.body = "failed login".into();
        e.set(attr::USER_NAME, "bob");
        e.set(attr::CLIENT_PORT, 2222u16);
        let mut r = Resource::new();
        r.insert("service.name".into(), "sshlogin".into());
        let v: serde_json::Value = serde_json::from_str(&to_line(&e, &r)).unwrap();
        assert_eq!(v["event_name"], "ssh.auth.failure");
        assert_eq!(v["time_unix_nano"], 1_764_000_000_000_000_000u64);
        assert_eq!(v["severity_text"], "WARN");
        assert_eq!(v["body"], "failed login");
        assert_eq!(v["attributes"]["user.name"], "bob");
        assert_eq!(v["attributes"]["client.port"], 2222);
        assert_eq!(v["resource"]["service.name"], "sshlogin");
    }
}

#[cfg(test)]
mod thread_tests {
    use std::sync::mpsc;

    use super::*;

    /// A stdout nobody reads: each write waits for a permit.
    struct Stuck(mpsc::Receiver<()>);
    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record() -> LogRecord {
        LogRecord::new(EventName::SessionOpen, 1)
    }

    #[test]
    fn a_stuck_stdout_does_not_hold_up_the_caller() {
        let (permit, permits) = mpsc::channel();
        let out = StdoutThread::start(Stuck(permits), Resource::new()).unwrap();
        let started = std::time::Instant::now();
        let mut refused = 0;
        for _ in 0..STDOUT_QUEUE + 10 {
            if !out.send(vec![record()], false).unwrap() {
                refused += 1;
            }
        }
        assert!(refused >= 9, "a full queue refuses, it does not wait: {refused}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(permit);
        out.finish();
    }

    #[test]
    fn a_closed_stdout_is_reported() {
        let out = StdoutThread::start(Closed, Resource::new()).unwrap();
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = out.send(vec![record()], true) {
                failed = Some(e);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(failed.is_some_and(|e| e.contains("pipe")));
    }
}
