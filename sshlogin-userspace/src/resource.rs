//! The OpenTelemetry resource: what is reporting, from where.

use std::collections::BTreeMap;

use uuid::Uuid;

pub type Resource = BTreeMap<String, String>;

/// The detected facts with the user's attributes over them.
pub fn with_overrides(overrides: &BTreeMap<String, String>) -> Resource {
    let mut r = detect();
    r.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    r
}

/// Reads the host facts once at start.
pub fn detect() -> Resource {
    use crate::host;
    build(host::machine_id(), host::host_name(), host::kernel_release(), std::env::consts::ARCH)
}

/// Pure part of [`detect`].
pub fn build(
    machine_id: Option<String>,
    host_name: Option<String>,
    os_version: Option<String>,
    arch: &str,
) -> Resource {
    let mut r = Resource::new();
    r.insert("service.name".into(), "sshlogin".into());
    r.insert("service.version".into(), env!("CARGO_PKG_VERSION").into());
    r.insert("service.instance.id".into(), instance_id(machine_id.as_deref(), host_name.as_deref()).to_string());
    if let Some(h) = host_name {
        r.insert("host.name".into(), h);
    }
    if let Some(id) = machine_id {
        r.insert("host.id".into(), id);
    }
    r.insert("host.arch".into(), semconv_arch(arch).into());
    r.insert("os.type".into(), "linux".into());
    if let Some(v) = os_version {
        r.insert("os.version".into(), v);
    }
    r
}

/// The namespace the semantic conventions give for a `service.instance.id`
/// made from an inherent unique id.
const INSTANCE_NAMESPACE: Uuid = Uuid::from_u128(0x4d63009a_8d0f_11ee_aad7_4c796ed8e320);

/// `service.instance.id`: a UUIDv5 of the machine id (else the host name)
/// in the conventions' namespace, so it is stable across restarts and
/// distinct between hosts; a random one when the host has neither, rather
/// than one id shared by every such host.
fn instance_id(machine_id: Option<&str>, host_name: Option<&str>) -> Uuid {
    match machine_id.or(host_name) {
        Some(seed) => Uuid::new_v5(&INSTANCE_NAMESPACE, seed.as_bytes()),
        None => uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
    }
}

/// Rust's architecture names to the `host.arch` values of the conventions.
fn semconv_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semconv_values() {
        let r = build(Some("abc".into()), Some("bastion-1".into()), Some("6.18.0".into()), "x86_64");
        assert_eq!(r["host.arch"], "amd64");
        assert_eq!(r["host.id"], "abc");
        assert_eq!(r["os.type"], "linux");
        assert_eq!(r["service.name"], "sshlogin");
        let again = build(Some("abc".into()), None, None, "aarch64");
        assert_eq!(again["service.instance.id"], r["service.instance.id"]);
        assert_eq!(again["host.arch"], "arm64");
        assert!(!again.contains_key("host.name"));
        assert_eq!(
            r["service.instance.id"],
            Uuid::new_v5(&"4d63009a-8d0f-11ee-aad7-4c796ed8e320".parse().unwrap(), b"abc").to_string()
        );
        let other = build(Some("abd".into()), None, None, "x86_64");
        assert_ne!(other["service.instance.id"], r["service.instance.id"]);
        let (a, b) = (build(None, None, None, "x86_64"), build(None, None, None, "x86_64"));
        assert_ne!(a["service.instance.id"], b["service.instance.id"], "no shared id for anonymous hosts");
    }
}
