//! Events to one `ExportLogsServiceRequest` per HTTP request, with the
//! OpenTelemetry project's generated types, as protobuf or OTLP/JSON, then
//! compressed.

use std::io::Write;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord as ProtoRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;

use crate::{
    config::{Compression, Protocol},
    otel::{LogRecord, Value},
    resource,
};

fn string(s: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s.to_string())) }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(value), ..KeyValue::default() }
}

fn any_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::Str(s) => return string(s),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::List(items) => {
            any_value::Value::ArrayValue(ArrayValue { values: items.iter().map(|s| string(s)).collect() })
        }
        Value::Map(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| key_value(k, any_value(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

pub fn log_record(e: &LogRecord) -> ProtoRecord {
    let severity = e.name.severity();
    ProtoRecord {
        time_unix_nano: e.time_unix_nano,
        observed_time_unix_nano: e.observed_time_unix_nano,
        severity_number: severity.number(),
        severity_text: severity.text().to_string(),
        body: Some(string(&e.body)),
        attributes: e.attributes.iter().map(|(k, v)| key_value(k, any_value(v))).collect(),
        event_name: e.name.as_str().to_string(),
        ..ProtoRecord::default()
    }
}

pub fn request(resource: &resource::Resource, events: &[LogRecord]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| key_value(k, string(v))).collect(),
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "sshlogin".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records: events.iter().map(log_record).collect(),
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// An encoded, compressed request body and the headers that describe it.
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

pub fn body(
    request: &ExportLogsServiceRequest,
    protocol: Protocol,
    compression: Compression,
) -> Result<Body, std::io::Error> {
    let (raw, content_type) = match protocol {
        Protocol::HttpProtobuf => (request.encode_to_vec(), "application/x-protobuf"),
        Protocol::HttpJson => (serde_json::to_vec(request).map_err(std::io::Error::other)?, "application/json"),
    };
    compress(raw, content_type, compression)
}

/// `raw` as a body, gzipped if asked.
pub fn compress(raw: Vec<u8>, content_type: &'static str, compression: Compression) -> Result<Body, std::io::Error> {
    match compression {
        Compression::None => Ok(Body { bytes: raw, content_type, content_encoding: None }),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
            gz.write_all(&raw)?;
            Ok(Body { bytes: gz.finish()?, content_type, content_encoding: Some("gzip") })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::otel::{EventName, attr};

    fn event() -> LogRecord {
        let mut e = LogRecord::new(EventName::SessionOpen, 1);
        e.time_unix_nano = 1_795_714_195_145_419_167;
        e.observed_time_unix_nano = 1_795_714_195_146_829_692;
        e.body = "alice opened a session from 192.0.2.7 port 51234 (publickey)".into();
        e.set(attr::USER_NAME, "alice");
        e.set(attr::CLIENT_PORT, 51234u16);
        e
    }

    fn resource() -> resource::Resource {
        let mut r = resource::Resource::new();
        r.insert("service.name".into(), "sshlogin".into());
        r
    }

    #[test]
    fn protobuf_round_trips() {
        let req = request(&resource(), &[event()]);
        let b = body(&req, Protocol::HttpProtobuf, Compression::None).unwrap();
        assert_eq!(b.content_type, "application/x-protobuf");
        let back = ExportLogsServiceRequest::decode(b.bytes.as_slice()).unwrap();
        assert_eq!(back, req);
        let rec = &back.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.event_name, "ssh.session.open");
        assert_eq!(rec.severity_number, 9);
    }

    /// The shape of the OTLP/JSON examples of opentelemetry-proto
    /// (examples/logs.json, events.json): lowerCamelCase keys, 64-bit
    /// integers as strings, enums as numbers, typed attribute values.
    #[test]
    fn json_has_the_otlp_json_shape() {
        let mut e = event();
        let counts = [("root".to_string(), Value::Int(7))].into_iter().collect();
        e.attributes.insert("ssh.failure.by_user".into(), Value::Map(counts));
        e.attributes.insert("ssh.first_seen.client".into(), Value::Bool(true));
        let req = request(&resource(), &[e]);
        let b = body(&req, Protocol::HttpJson, Compression::None).unwrap();
        assert_eq!(b.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        let rl = &v["resourceLogs"][0];
        assert_eq!(rl["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(rl["resource"]["attributes"][0]["value"]["stringValue"], "sshlogin");
        let sl = &rl["scopeLogs"][0];
        assert_eq!(sl["scope"]["name"], "sshlogin");
        assert_eq!(sl["scope"]["version"], env!("CARGO_PKG_VERSION"));
        let rec = &sl["logRecords"][0];
        assert_eq!(rec["timeUnixNano"], "1795714195145419167");
        assert_eq!(rec["observedTimeUnixNano"], "1795714195146829692");
        assert_eq!(rec["severityNumber"], 9);
        assert_eq!(rec["severityText"], "INFO");
        assert_eq!(rec["eventName"], "ssh.session.open");
        assert_eq!(rec["body"]["stringValue"], "alice opened a session from 192.0.2.7 port 51234 (publickey)");
        let attrs = rec["attributes"].as_array().unwrap();
        let port = attrs.iter().find(|a| a["key"] == "client.port").unwrap();
        assert_eq!(port["value"], serde_json::json!({ "intValue": "51234" }));
        let user = attrs.iter().find(|a| a["key"] == "user.name").unwrap();
        assert_eq!(user["value"], serde_json::json!({ "stringValue": "alice" }));
        let counts = attrs.iter().find(|a| a["key"] == "ssh.failure.by_user").unwrap();
        assert_eq!(
            counts["value"],
            serde_json::json!({ "kvlistValue": { "values": [{ "key": "root", "value": { "intValue": "7" } }] } })
        );
        let new = attrs.iter().find(|a| a["key"] == "ssh.first_seen.client").unwrap();
        assert_eq!(new["value"], serde_json::json!({ "boolValue": true }));
        // Round trip through the same types.
        let back: ExportLogsServiceRequest = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn gzip_decompresses_to_the_same_bytes() {
        let req = request(&resource(), &[event(), event()]);
        let plain = body(&req, Protocol::HttpJson, Compression::None).unwrap();
        let gz = body(&req, Protocol::HttpJson, Compression::Gzip).unwrap();
        assert_eq!(gz.content_encoding, Some("gzip"));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.bytes.as_slice()).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain.bytes);
    }
}
