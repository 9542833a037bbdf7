//! What a receiver said back: a partial success in a 2xx body, or the
//! message of a `google.rpc.Status` in an error body, in whichever encoding
//! the response declares.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

/// Bytes of a response body sshlogin reads at most.
pub const BODY_CAP: usize = 64 * 1024;

/// `google.rpc.Status`, the error body OTLP/HTTP specifies (only the fields
/// sshlogin reports; `details` is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.starts_with("application/json"))
}

/// `(rejected_log_records, error_message)` when the response reports a
/// partial success. A Collector writes the count as a JSON string.
pub fn partial_success(body: &[u8], content_type: Option<&str>) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = if is_json(content_type) {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let p = v.get("partialSuccess")?;
        let rejected = match p.get("rejectedLogRecords") {
            Some(serde_json::Value::String(s)) => s.parse().ok()?,
            Some(serde_json::Value::Number(n)) => n.as_i64()?,
            _ => 0,
        };
        (rejected, p.get("errorMessage").and_then(|m| m.as_str()).unwrap_or_default().to_string())
    } else {
        let r = ExportLogsServiceResponse::decode(body).ok()?;
        let p = r.partial_success?;
        (p.rejected_log_records, p.error_message)
    };
    (rejected != 0 || !message.is_empty()).then_some((rejected, message))
}

/// A one-line description of an error body for the log.
pub fn error_message(body: &[u8], content_type: Option<&str>) -> String {
    let message = if is_json(content_type) {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
    } else if content_type.is_some_and(|c| c.starts_with("application/x-protobuf")) {
        Status::decode(body).ok().map(|s| s.message)
    } else {
        None
    };
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.trim();
    match clean.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn partial_success_in_both_encodings() {
        let json = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too old"}}"#;
        assert_eq!(partial_success(json, Some("application/json")), Some((2, "too old".into())));
        let json = br#"{"partialSuccess":{"rejectedLogRecords":3}}"#;
        assert_eq!(partial_success(json, Some("application/json; charset=utf-8")), Some((3, String::new())));
        assert_eq!(partial_success(b"{}", Some("application/json")), None);
        assert_eq!(partial_success(br#"{"partialSuccess":{}}"#, Some("application/json")), None);
        let pb = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess { rejected_log_records: 1, error_message: "bad".into() }),
        }
        .encode_to_vec();
        assert_eq!(partial_success(&pb, Some("application/x-protobuf")), Some((1, "bad".into())));
        assert_eq!(partial_success(&ExportLogsServiceResponse::default().encode_to_vec(), None), None);
        assert_eq!(partial_success(b"", None), None);
        assert_eq!(partial_success(b"\xff\xff garbage", None), None);
    }

    #[test]
    fn error_bodies() {
        let pb = Status { code: 3, message: "invalid log record".into() }.encode_to_vec();
        assert_eq!(error_message(&pb, Some("application/x-protobuf")), "invalid log record");
        assert_eq!(error_message(br#"{"code":3,"message":"bad json"}"#, Some("application/json")), "bad json");
        assert_eq!(error_message(b"plain\ntext", Some("text/plain")), "plain text");
        let long = "x".repeat(1000);
        assert_eq!(error_message(long.as_bytes(), None).chars().count(), 301);
    }
}
