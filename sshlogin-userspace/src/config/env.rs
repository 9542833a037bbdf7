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
pub fn key_values(source: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) =
            item.split_once('=').ok_or_else(|| ConfigError::new(source, format!("{item:?} is not key=value")))?;
        let key = percent_decode(k.trim()).map_err(|e| ConfigError::new(source, e))?;
        if key.is_empty() {
            return Err(ConfigError::new(source, format!("{item:?} has an empty key")));
        }
        let value = percent_decode(v.trim()).map_err(|e| ConfigError::new(source, e))?;
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
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
        let e = key_values("OTEL_EXPORTER_OTLP_HEADERS", "novalue").unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS"), "{e}");
        assert!(key_values("X", "k=%zz").is_err());
        assert!(key_values("X", "=v").is_err());
        assert!(key_values("X", "k=%ff").is_err());
    }
}
