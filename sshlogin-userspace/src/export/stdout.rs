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
