//! The binary's command line and configuration errors; no root needed
//! (configuration is checked before any probe loads).

use std::process::{Command, Output};

fn sshlogin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sshlogin"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied()).output().expect("run sshlogin")
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

fn usage_error(out: &Output, names: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr: {stderr}");
    assert!(stderr.contains(names), "stderr does not name {names:?}: {stderr}");
}

#[test]
fn unknown_config_key_exits_2_naming_it() {
    let f = config("[otlp]\nendpont = \"http://127.0.0.1:4318\"\n");
    usage_error(&sshlogin(&["run", "--config", f.path().to_str().unwrap()], &[]), "endpont");
}

#[test]
fn bad_config_value_exits_2_naming_the_key() {
    let f = config("[otlp]\nendpoint = \"http://127.0.0.1:4318\"\ncompression = \"zstd\"\n");
    usage_error(&sshlogin(&["run", "--config", f.path().to_str().unwrap()], &[]), "otlp.compression");
}

#[test]
fn bad_environment_exits_2_naming_the_variable() {
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")];
    usage_error(&sshlogin(&["run"], &env), "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL");
}

#[test]
fn missing_token_file_exits_2_naming_the_key() {
    let out = sshlogin(
        &["run", "--otlp-endpoint", "http://127.0.0.1:4318", "--bearer-token-file", "/nonexistent/sshlogin-token"],
        &[],
    );
    usage_error(&out, "otlp.bearer_token_file");
}

#[test]
fn missing_config_file_exits_2() {
    usage_error(&sshlogin(&["run", "--config", "/nonexistent/sshlogin.toml"], &[]), "--config");
}

#[test]
fn header_values_stay_secret_in_errors() {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20hunter2%0A"),
    ];
    let out = sshlogin(&["run"], &env);
    usage_error(&out, "authorization");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn help_explains_every_run_flag() {
    let out = sshlogin(&["run", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--sshd-comm",
        "--ring-buffer-size",
        "--sshd-path",
        "--stdout",
        "--otlp-endpoint",
        "--otlp-logs-endpoint",
        "--otlp-protocol",
        "--otlp-compression",
        "--otlp-timeout",
        "--otlp-header",
        "--bearer-token-file",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn bad_endpoint_url_exits_2_naming_the_flag() {
    usage_error(&sshlogin(&["run", "--otlp-endpoint", "collector:4318"], &[]), "--otlp-endpoint");
    let f = config("[otlp]\nlogs_endpoint = \"ftp://x/v1/logs\"\n");
    usage_error(&sshlogin(&["run", "--config", f.path().to_str().unwrap()], &[]), "otlp.logs_endpoint");
}

#[test]
fn unreadable_token_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let out = sshlogin(
        &["run", "--otlp-endpoint", "http://127.0.0.1:4318", "--bearer-token-file", dir.path().to_str().unwrap()],
        &[],
    );
    usage_error(&out, "otlp.bearer_token_file");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = sshlogin(
        &[
            "--log-format",
            "json",
            "run",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--bearer-token-file",
            "/nonexistent",
        ],
        &[],
    );
    // A configuration error is reported before logging starts work: check a
    // log line from replay instead, which logs through the same subscriber.
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.hex");
    std::fs::write(&empty, "").unwrap();
    let out = sshlogin(
        &[
            "--log-format",
            "json",
            "--log",
            "debug",
            "replay",
            empty.to_str().unwrap(),
            "--privsep-user",
            "no-such-user-x",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "replay warned that --privsep-user is no longer used");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
}

/// A kernel older than 5.8 (here: this kernel reporting itself as 2.6.x
/// through the UNAME26 personality, which `uname -r` and sshlogin both
/// read) gets a sentence and exit 1, before any probe loads.
#[test]
fn an_old_kernel_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("setarch")
        .args([std::env::consts::ARCH, "--uname-2.6", env!("CARGO_BIN_EXE_sshlogin"), "run", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run setarch (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Linux 2.6.") && stderr.contains("older than 5.8"), "{stderr}");
    assert!(stderr.contains("nothing was loaded"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_malformed_header_flag_exits_2_without_its_value() {
    // A colon where `=` belongs: clap's own error would repeat the token.
    let header = "Authorization: Bearer tok-S3CRET";
    let out =
        sshlogin(&["check", "--no-network", "--otlp-endpoint", "http://[::1]:4318", "--otlp-header", header], &[]);
    usage_error(&out, "header");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("S3CRET"), "{stderr}");
}
