//! The OpenTelemetry SDK environment variables, parsed as the specification
//! says: `OTEL_EXPORTER_OTLP_*`, with the `..._LOGS_...` variant winning over
//! the generic one, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.

use super::ConfigError;

/// The value of the logs-specific variable or, failing that, the generic
/// one, with the name of the variable it came from.
pub fn otlp(get: &dyn Fn(&str) -> Option<String>, setting: &str) -> Option<(String, String)> {
    for name in [format!("OTEL_EXPORTER_OTLP_LOGS_{setting}"), format!("OTEL_EXPORTER_OTLP_{setting}")] {
        if let Some(v) = get(&name).filter(|v| !v.trim().is_empty()) {
            return Some((name, v.trim().to_string()));
        }
    }
    None
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C Baggage form
/// the specification uses for headers and resource attributes).
///
/// Errors say which item (counting from 1) and whether its key or value is
/// wrong, never the text: these variables carry credentials.
pub fn key_values(source: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (n, item) in text.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let n = n + 1;
        let bad = |what: &str| ConfigError::new(source, format!("item {n}: {what}"));
        let (k, v) = item.split_once('=').ok_or_else(|| bad("not key=value"))?;
        let key = percent_decode(k.trim()).map_err(|e| bad(&format!("the key {e}")))?;
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let value = percent_decode(v.trim()).map_err(|e| bad(&format!("the value {e}")))?;
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("has a bad percent-encoding")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "does not decode to UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn logs_variant_wins() {
        let env: HashMap<&str, &str> =
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")]
                .into();
        let get = |k: &str| env.get(k).map(|v| v.to_string());
        assert_eq!(otlp(&get, "PROTOCOL"), Some(("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL".into(), "http/protobuf".into())));
        assert_eq!(otlp(&get, "HEADERS"), None);
    }

    #[test]
    fn headers_are_percent_decoded() {
        let kv = key_values("X", "api-key=a%20b%3D, x-tenant = ops ,,empty=").unwrap();
        assert_eq!(
            kv,
            [("api-key".into(), "a b=".into()), ("x-tenant".into(), "ops".into()), ("empty".into(), String::new())]
        );
    }

    #[test]
    fn bad_headers_name_the_variable() {
        let e = key_values("OTEL_EXPORTER_OTLP_HEADERS", "a=b,Bearer s3cret").unwrap_err();
        assert_eq!(e.to_string(), "OTEL_EXPORTER_OTLP_HEADERS: item 2: not key=value");
        let e = key_values("X", "authorization=s3cret%zz").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "never the value: {e}");
        assert!(key_values("X", "k=%zz").is_err());
        assert!(key_values("X", "=v").is_err());
        assert!(key_values("X", "k=%ff").is_err());
    }
}
