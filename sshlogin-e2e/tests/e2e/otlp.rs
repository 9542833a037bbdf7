//! OTLP/HTTP export end to end: a real login, the daemon, and a receiver
//! that decodes with the OpenTelemetry project's Python package.

use std::time::Duration;

use crate::harness::{self, Daemon, Receiver, Sshd, is, login, privileged, scratch_file, user};

const OPEN: &str = "ssh.session.open";

#[test]
fn a_login_reaches_the_receiver_in_every_protocol_and_compression() {
    let _guard = privileged();
    let frank = user("sl-frank");
    let sshd = Sshd::start(true, "");
    let token = scratch_file("otlp-token", "tok-3f9a\n");
    for (protocol, compression, content_type) in [
        ("http/protobuf", "gzip", "application/x-protobuf"),
        ("http/protobuf", "none", "application/x-protobuf"),
        ("http/json", "gzip", "application/json"),
        ("http/json", "none", "application/json"),
    ] {
        let mut receiver = Receiver::start(&[]);
        let endpoint = receiver.endpoint();
        let daemon = Daemon::start(&[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-compression",
            compression,
            "--bearer-token-file",
            token.to_str().unwrap(),
            "--otlp-header",
            "x-scope-orgid=ops",
        ]);
        login(sshd.port, &frank, "true");
        let (req, rec) = receiver.wait_event(OPEN, frank.name);
        assert_eq!(req["path"], "/v1/logs");
        assert_eq!(req["content_type"], content_type);
        let encoding = if compression == "gzip" { serde_json::json!("gzip") } else { serde_json::Value::Null };
        assert_eq!(req["content_encoding"], encoding, "{protocol}/{compression}");
        assert_eq!(req["authorization"], "Bearer tok-3f9a");
        assert!(req["user_agent"].as_str().unwrap().starts_with("sshlogin/"));
        assert_eq!(rec["severity_number"], 9);
        assert_eq!(rec["severity_text"], "INFO");
        assert!(rec["body"].as_str().unwrap().starts_with("sl-frank opened a session from 127.0.0.1 port "));
        let a = &rec["attributes"];
        assert_eq!(a["client.address"], "127.0.0.1");
        assert!(a["client.port"].as_i64().unwrap() > 0, "client.port is an int attribute: {a}");
        assert_eq!(a["ssh.auth.method"], "publickey");
        assert!(a["user.id"].is_string());
        assert!(a["log.record.uid"].is_string());
        assert!(rec["time_unix_nano"].as_u64().unwrap() > 1_700_000_000_000_000_000);
        assert!(rec["observed_time_unix_nano"].as_u64() >= rec["time_unix_nano"].as_u64());
        let r = &rec["resource"];
        assert_eq!(r["service.name"], "sshlogin");
        assert_eq!(r["host.arch"], "amd64");
        assert_eq!(r["os.type"], "linux");
        assert!(r["host.id"].is_string() && r["host.name"].is_string() && r["service.instance.id"].is_string());
        assert_eq!(rec["scope"]["name"], "sshlogin");
        receiver.wait_event("ssh.session.close", frank.name);
        let log = daemon.stop();
        assert!(!log.join("\n").contains("tok-3f9a"), "the token leaked into the log");
    }
}

#[test]
fn a_503_with_retry_after_is_retried_and_delivered_once() {
    let _guard = privileged();
    let grace = user("sl-grace");
    let sshd = Sshd::start(true, "");
    let mut receiver = Receiver::start(&["--script-for", grace.name, "503:1", "503:1"]);
    let endpoint = receiver.endpoint();
    let daemon = Daemon::start(&["--otlp-endpoint", &endpoint]);
    login(sshd.port, &grace, "true");
    let (_, rec) = receiver.wait_event(OPEN, grace.name);
    // The first request that carried it was answered 503; wait for the 200.
    let uid = rec["attributes"]["log.record.uid"].clone();
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let seen = receiver.settle(Duration::from_millis(200));
        statuses = seen
            .iter()
            .filter(|r| r["records"].as_array().unwrap().iter().any(|x| x["attributes"]["log.record.uid"] == uid))
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        if statuses.contains(&200) {
            break;
        }
    }
    receiver.settle(Duration::from_secs(2));
    assert_eq!(statuses, [503, 503, 200], "answered 503, 503, then 200: sent three times, delivered once");
    daemon.stop_saying("retrying");
}

#[test]
fn a_400_is_not_retried() {
    let _guard = privileged();
    let heidi = user("sl-heidi");
    let sshd = Sshd::start(true, "");
    let mut receiver = Receiver::start(&["--script-for", heidi.name, "400"]);
    let endpoint = receiver.endpoint();
    let daemon = Daemon::start(&["--otlp-endpoint", &endpoint, "--otlp-protocol", "http/json"]);
    login(sshd.port, &heidi, "true");
    let mine = |x: &serde_json::Value| is(x, OPEN, heidi.name);
    receiver.wait_event(OPEN, heidi.name);
    let seen = receiver.settle(Duration::from_secs(3)).to_vec();
    let carrying: Vec<_> = seen.iter().filter(|r| r["records"].as_array().unwrap().iter().any(mine)).collect();
    assert_eq!(carrying[0]["status"], 400);
    let opens = carrying.len();
    assert_eq!(opens, 1, "the batch answered 400 was not sent again: {seen:?}");
    daemon.stop_saying("export dropped: HTTP 400");
}

#[test]
fn tls_with_a_given_ca_and_a_client_certificate() {
    let _guard = privileged();
    let ivan = user("sl-ivan");
    let pki = harness::pki();
    let sshd = Sshd::start(true, "");
    let tls = [pki.server_cert.to_str().unwrap(), pki.server_key.to_str().unwrap()];
    let mut receiver = Receiver::start(&["--tls", tls[0], tls[1], "--client-ca", pki.ca.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}/v1/logs", receiver.port);
    let config = scratch_file(
        "mtls.toml",
        &format!(
            "[otlp]\nlogs_endpoint = \"{url}\"\ncertificate = \"{}\"\nclient_certificate = \"{}\"\nclient_key = \"{}\"\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    login(sshd.port, &ivan, "true");
    let (req, _) = receiver.wait_event(OPEN, ivan.name);
    assert_eq!(req["client_cert_cn"], "sshlogin-client");
    daemon.stop();

    // Without the CA the server's certificate is not trusted: nothing arrives.
    let before = receiver.requests();
    let untrusting = scratch_file(
        "no-ca.toml",
        &format!("[otlp]\nlogs_endpoint = \"{url}\"\nretry_max_elapsed = \"1s\"\nretry_initial_backoff = \"200ms\"\n"),
    );
    let daemon = Daemon::start(&["--config", untrusting.to_str().unwrap()]);
    login(sshd.port, &ivan, "true");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.requests(), before, "a server the daemon must not trust received events");
    let log = daemon.stop().join("\n");
    assert!(log.contains("certificate"), "the certificate error was logged: {log}");
}

#[test]
fn a_webhook_gets_each_login_as_json_with_the_token_and_503_then_200_once() {
    let _guard = privileged();
    let yuri = user("sl-yuri");
    let sshd = Sshd::start(true, "");
    let token = scratch_file("webhook-token", "hook-tok-77\n");
    let mut receiver = Receiver::start(&["--webhook", "--script-for", yuri.name, "503", "200"]);
    let url = format!("{}/hooks/ssh", receiver.endpoint());
    let config =
        scratch_file("webhook.toml", "[webhook]\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"1s\"\n");
    let daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--webhook-url",
        &url,
        "--bearer-token-file",
        token.to_str().unwrap(),
    ]);
    login(sshd.port, &yuri, "true");
    let mine = |r: &serde_json::Value| is(r, OPEN, yuri.name);
    let (req, rec) = receiver.wait_event(OPEN, yuri.name);
    assert_eq!(req["path"], "/hooks/ssh");
    assert_eq!(req["content_type"], "application/json");
    assert_eq!(req["batch"], false, "one object per request by default");
    assert_eq!(rec["resource"]["service.name"], "sshlogin");
    assert!(rec["body"].as_str().unwrap().starts_with("sl-yuri opened a session"));
    receiver.settle(Duration::from_secs(3));
    let carrying: Vec<_> =
        receiver.seen.iter().filter(|r| r["records"].as_array().is_some_and(|a| a.iter().any(mine))).collect();
    let statuses: Vec<i64> = carrying.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [503, 200], "answered 503, then 200: sent twice, delivered once");
    assert!(carrying.iter().all(|r| r["authorization"] == "Bearer hook-tok-77"));
    daemon.stop();
}

/// Every place a secret could leak, after every error path that names an
/// endpoint or a setting: the log, the metrics, the state directory, and
/// the configuration errors. No token, header value or URL secret appears.
#[test]
fn secrets_never_reach_the_log_the_metrics_or_the_state_directory() {
    let _guard = privileged();
    let ida = user("sl-ida");
    let sshd = Sshd::start(true, "");
    let secrets = ["tok-S3CRET-91", "hdr-S3CRET-92", "wh-S3CRET-93", "pw-S3CRET-94"];
    let token = scratch_file("leak-token", "tok-S3CRET-91\n");
    // Refused (kept and retried), refused again, then a 400 (dropped).
    let mut receiver = Receiver::start(&["--script-for", ida.name, "401", "500", "400"]);
    // A webhook nothing listens on: transport errors, which name the URL.
    let closed = harness::free_port();
    let config = scratch_file(
        "leak.toml",
        &format!(
            "[otlp]\nlogs_endpoint = \"{}\"\nbearer_token_file = \"{}\"\nretry_max_backoff = \"1s\"\n\
             headers = {{ x-api-key = \"hdr-S3CRET-92\" }}\n\
             [webhook]\nurl = \"http://svc:pw-S3CRET-94@127.0.0.1:{closed}/hooks/wh-S3CRET-93\"\n\
             retry_initial_backoff = \"200ms\"\nretry_max_backoff = \"1s\"\n",
            receiver.endpoint() + "/v1/logs",
            token.display()
        ),
    );
    let state = harness::state_dir("leak");
    let daemon = Daemon::start(&["--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    login(sshd.port, &ida, "true");
    receiver.wait_event(OPEN, ida.name);
    harness::eventually("the 400 dropped the batch", 30, || daemon.log().contains("export dropped: HTTP 400"));
    let metrics = daemon.metrics_text();
    assert!(metrics.contains("outcome=\"refused\""), "the refusals were counted: {metrics}");
    let log = daemon.stop().join("\n");
    assert!(log.contains("refused the batch"), "{log}");
    let mut places = vec![("log", log.into_bytes()), ("metrics", metrics.into_bytes())];
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        places.push(("state", std::fs::read(&path).unwrap_or_default()));
    }
    // Configuration errors: a malformed header variable, a bad webhook URL.
    for (env, args) in [
        (vec![("OTEL_EXPORTER_OTLP_HEADERS", "Bearer hdr-S3CRET-92")], vec!["--otlp-endpoint", "http://127.0.0.1:9"]),
        (vec![], vec!["--webhook-url", "ftp://svc:pw-S3CRET-94@host/hooks/wh-S3CRET-93"]),
    ] {
        let out = std::process::Command::new(harness::sshlogin_bin())
            .args(["check", "--no-network"])
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a configuration error");
        places.push(("config error", [out.stdout, out.stderr].concat()));
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} leaked into the {place}:\n{text}");
        }
    }
}
