use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

fn file(text: &str) -> file::File {
    file::parse(text).unwrap()
}

fn otlp(flags: &Flags, vars: &[(&str, &str)], text: &str) -> Result<Option<Sink>, ConfigError> {
    resolve(flags, &env(vars), file(text)).map(|c| c.otlp)
}

#[test]
fn endpoint_composition() {
    let cases = [
        // (variable, value, expected URL)
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", "http://collector:4318/v1/logs"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/", "http://collector:4318/v1/logs"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw.example/otlp", "https://gw.example/otlp/v1/logs"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw.example/otlp/", "https://gw.example/otlp/v1/logs"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://collector:4318/v1/logs", "http://collector:4318/v1/logs"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://hooks.example/ssh", "https://hooks.example/ssh"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://collector:4318", "http://collector:4318"),
    ];
    for (var, value, want) in cases {
        let o = otlp(&Flags::default(), &[(var, value)], "").unwrap().unwrap();
        assert_eq!(o.url, want, "{var}={value}");
    }
}

#[test]
fn logs_endpoint_beats_base_and_layers_beat_each_other() {
    let vars =
        [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"), ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:1/x")];
    assert_eq!(otlp(&Flags::default(), &vars, "").unwrap().unwrap().url, "http://logs:1/x");
    let flags = Flags { otlp_endpoint: Some("http://flag:4318".into()), ..Flags::default() };
    assert_eq!(otlp(&flags, &vars, "").unwrap().unwrap().url, "http://flag:4318/v1/logs");
    let from_file = "[otlp]\nendpoint = \"http://file:4318\"\nprotocol = \"http/json\"\n";
    let o = otlp(&Flags::default(), &[], from_file).unwrap().unwrap();
    assert_eq!((o.url.as_str(), o.format), ("http://file:4318/v1/logs", Format::Otlp(Protocol::HttpJson)));
    let o = otlp(&Flags::default(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")], from_file).unwrap().unwrap();
    assert_eq!(o.format, Format::Otlp(Protocol::HttpProtobuf), "env over file");
    let flags = Flags { otlp_protocol: Some(Protocol::HttpJson), ..Flags::default() };
    let o = otlp(&flags, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")], from_file).unwrap().unwrap();
    assert_eq!(o.format, Format::Otlp(Protocol::HttpJson), "flag over env");
}

#[test]
fn defaults() {
    let c = resolve(&Flags::default(), &env(&[]), file("")).unwrap();
    assert!(c.otlp.is_none());
    assert!(c.stdout, "no endpoint: events go to stdout");
    assert_eq!(c.capture.family, ["sshd", "sshd-session", "sshd-auth"]);
    assert_eq!(c.capture.ring_buffer_bytes, 4 << 20);
    assert_eq!(c.capture.syscall_probes, SyscallProbes::Auto, "fentry where the kernel allows it");
    let o = otlp(&Flags::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], "").unwrap().unwrap();
    assert_eq!(
        (o.format, o.compression, o.timeout),
        (Format::Otlp(Protocol::HttpProtobuf), Compression::Gzip, DEFAULT_TIMEOUT)
    );
    assert_eq!((o.batch_max_events, o.batch_max_delay), (512, Duration::ZERO));
    let c = resolve(&Flags::default(), &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]), file("")).unwrap();
    assert!(!c.stdout, "an endpoint replaces stdout unless asked for");
    let c = resolve(
        &Flags::default(),
        &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
        file("[stdout]\nenabled = true"),
    )
    .unwrap();
    assert!(c.stdout && c.otlp.is_some(), "both exporters at once");
}

#[test]
fn timeouts_and_headers_from_every_layer() {
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=env,x-b=env"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-b=logs%20env"),
    ];
    let text = "[otlp]\ntimeout = \"30s\"\nheaders = { \"X-A\" = \"file\", \"x-c\" = \"file\" }\n";
    let flags = Flags { otlp_headers: vec![("x-c".into(), "flag".into())], ..Flags::default() };
    let o = otlp(&flags, &vars, text).unwrap().unwrap();
    assert_eq!(o.timeout, Duration::from_millis(2500));
    // LOGS_HEADERS replaces HEADERS; env overrides the file; flags override env.
    assert_eq!(
        o.headers,
        [("x-a".into(), "file".into()), ("x-b".into(), "logs env".into()), ("x-c".into(), "flag".into())]
    );
}

#[test]
fn resource_attributes_and_service_name() {
    let vars = [
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,service.name=from-attrs"),
        ("OTEL_SERVICE_NAME", "bastion-audit"),
    ];
    let c = resolve(&Flags::default(), &env(&vars), file("[resource]\nattributes = { team = \"ops\" }")).unwrap();
    assert_eq!(c.resource["service.name"], "bastion-audit");
    assert_eq!(c.resource["deployment.environment.name"], "prod");
    assert_eq!(c.resource["team"], "ops");
}

#[test]
fn bad_values_name_their_key() {
    let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str); // (env, file, key named)
    let cases: Vec<Case> = vec![
        (vec![base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (vec![base, ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "zstd")], "", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION"),
        (vec![base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], "", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        (vec![base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")], "", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c")], "", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (vec![("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "not a url")], "", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        (vec![base], "[otlp]\ntimeout = \"soon\"", "otlp.timeout"),
        (vec![base], "[otlp]\nbatch_max_events = 0", "otlp.batch_max_events"),
        (vec![base], "[otlp]\nretry_max_elapsed = \"0s\"", "otlp.retry_max_elapsed"),
        (vec![base], "[otlp]\nclient_key = \"/k.pem\"", "otlp.client_certificate"),
        (vec![base], "[otlp]\nheaders = { \"bad header\" = \"v\" }", "header \"bad header\""),
        (vec![], "[capture]\nring_buffer_size = \"3M\"", "capture.ring_buffer_size"),
        (vec![], "[capture]\nsshd_comm = []", "capture.sshd_comm"),
        (vec![("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "", "OTEL_RESOURCE_ATTRIBUTES"),
        (vec![], "[failures]\nwindow = \"100ms\"", "failures.window"),
        (vec![], "[heartbeat]\ninterval = \"200ms\"", "heartbeat.interval"),
        (vec![], "[heartbeat]\ninterval = \"often\"", "heartbeat.interval"),
        (vec![], "[first_seen]\nretention = \"1h\"", "first_seen.retention"),
        (vec![], "[failures]\nalone = 0", "failures.alone"),
    ];
    for (vars, text, key) in cases {
        let err = resolve(&Flags::default(), &env(&vars), file(text)).unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
    let (key, _) = file::parse("[otlp]\nfailure_policy = \"forget\"").unwrap_err();
    assert_eq!(key.as_deref(), Some("otlp.failure_policy"));
}

#[test]
fn header_values_are_never_echoed() {
    let err = resolve(
        &Flags::default(),
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=secret%0A"),
        ]),
        file(""),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn webhook_from_flags_and_file() {
    let c = resolve(
        &Flags::default(),
        &env(&[]),
        file("[webhook]\nurl = \"https://hooks.example/ssh\"\nheaders = { x-a = \"1\" }\n"),
    )
    .unwrap();
    let w = c.webhook.unwrap();
    assert_eq!(w.kind, SinkKind::Webhook);
    assert_eq!(w.format, Format::Webhook { batch: false });
    assert_eq!(w.batch_max_events, 512, "read from the spool like OTLP; posted one event per request");
    assert_eq!(w.compression, Compression::None);
    assert_eq!(w.headers, [("x-a".to_string(), "1".to_string())]);
    assert!(c.otlp.is_none());
    assert!(!c.stdout, "a webhook is an exporter: stdout only when asked");
    let flags = Flags { webhook_url: Some("http://127.0.0.1:9/hook".into()), webhook_batch: true, ..Flags::default() };
    let w = resolve(&flags, &env(&[]), file("")).unwrap().webhook.unwrap();
    assert_eq!((w.format, w.batch_max_events), (Format::Webhook { batch: true }, DEFAULT_BATCH_MAX_EVENTS));
    // OTEL_* variables are for OTLP only.
    let w = resolve(&flags, &env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]), file("")).unwrap().webhook.unwrap();
    assert_eq!(w.compression, Compression::None);
    let err = resolve(&Flags::default(), &env(&[]), file("[webhook]\nurl = \"ftp://x\"")).unwrap_err();
    assert_eq!(err.key, "webhook.url");
    let err =
        resolve(&Flags::default(), &env(&[]), file("[webhook]\nurl = \"http://x\"\ntimeout = \"0s\"")).unwrap_err();
    assert_eq!(err.key, "webhook.timeout");
}

#[test]
fn logged_urls_keep_no_secret() {
    use super::redact_url;
    assert_eq!(redact_url("https://collector:4318/v1/logs"), "https://collector:4318/v1/logs");
    assert_eq!(redact_url("https://user:pw@otlp.example/v1/logs?api_key=abc"), "https://otlp.example/v1/logs?…");
    assert_eq!(
        redact_url("https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX"),
        "https://hooks.slack.com/services/…/…/…"
    );
    assert_eq!(redact_url("https://h/hook/9f86d081884c7d659a2feaa0c55ad015"), "https://h/hook/…");
    assert_eq!(redact_url("not a url"), "(not a URL)");
}

#[test]
fn file_errors_name_the_key_never_the_value() {
    let (key, message) = file::parse("[stdout]\nenabled = \"tok-S3CRET\"\n").unwrap_err();
    assert_eq!(key.as_deref(), Some("stdout.enabled"));
    assert!(!message.contains("S3CRET"), "{message}");
    let (_, message) = file::parse("[stdout]\nenabled = \"a\\\"tok-S3CRET\"\n").unwrap_err();
    assert!(!message.contains("S3CRET"), "an escaped quote does not end the value: {message}");
    let (_, message) = file::parse("[otlp]\nbearer_token = \"tok-S3CRET\"\n").unwrap_err();
    assert!(message.contains("bearer_token") && !message.contains("S3CRET"), "{message}");
}

#[test]
fn fleet_signals_from_flags_and_file() {
    let c = resolve(&Flags::default(), &env(&[]), file("")).unwrap();
    assert_eq!(c.failures, crate::failures::Settings::default());
    assert_eq!(c.heartbeat, Some(Duration::from_secs(300)));
    let seen = c.first_seen.unwrap();
    assert_eq!((seen.retention.as_secs(), seen.learning.as_secs()), (90 * 86_400, 86_400));
    let text = "[failures]\nmode = \"summary\"\nalone = 2\nwindow = \"1m\"\n[heartbeat]\ninterval = \"off\"\n\
                [first_seen]\nenabled = false\n";
    let c = resolve(&Flags::default(), &env(&[]), file(text)).unwrap();
    assert_eq!(
        c.failures,
        crate::failures::Settings { mode: FailureMode::Summary, alone: 2, window: Duration::from_secs(60) }
    );
    assert_eq!((c.heartbeat, c.first_seen), (None, None));
    let mut flags = Flags { heartbeat_interval: Some(Duration::from_secs(2)), ..Flags::default() };
    flags.pipeline.failures = Some(FailureMode::Each);
    flags.first_seen_learning = Some(Duration::ZERO);
    let c =
        resolve(&flags, &env(&[]), file("[heartbeat]\ninterval = \"off\"\n[failures]\nmode = \"summary\"")).unwrap();
    assert_eq!((c.heartbeat, c.failures.mode), (Some(Duration::from_secs(2)), FailureMode::Each), "flags win");
    assert_eq!(c.first_seen.unwrap().learning, Duration::ZERO);
    let (key, err) = file::parse("[failures]\nmode = \"fold\"").unwrap_err();
    assert_eq!(key.as_deref(), Some("failures.mode"), "{err}");
    assert!(err.contains("each or summary"), "{err}");
}

#[test]
fn syscall_probes_from_the_file_and_the_flag() {
    let c = resolve(&Flags::default(), &env(&[]), file("[capture]\nsyscall_probes = \"fentry\"")).unwrap();
    assert_eq!(c.capture.syscall_probes, SyscallProbes::Fentry);
    let mut flags = Flags::default();
    flags.probes.syscall_probes = Some(SyscallProbes::Tracepoints);
    let c = resolve(&flags, &env(&[]), file("[capture]\nsyscall_probes = \"fentry\"")).unwrap();
    assert_eq!(c.capture.syscall_probes, SyscallProbes::Tracepoints, "the flag beats the file");
    assert!(file::parse("[capture]\nsyscall_probes = \"kprobe\"").is_err());
}

#[test]
fn session_activity_defaults() {
    let s = resolve(&Flags::default(), &env(&[]), file("")).unwrap().session;
    assert_eq!(s, SessionActivity { exec: SessionExec::All, rate: 50, burst: 500, exclude: vec![] });
    assert_eq!(s, SessionActivity::default());
    assert_eq!(resolve_without_env(&Flags::default()).unwrap().session, s, "capture and replay get the defaults");
}

#[test]
fn session_activity_from_the_file_and_the_flags() {
    let text = "[session]\nexec = \"off\"\nrate = 5\nburst = 20\nexclude = [\"/usr/lib/git-core/\", \"/usr/bin/id\"]\n";
    let s = resolve(&Flags::default(), &env(&[]), file(text)).unwrap().session;
    assert_eq!(
        s,
        SessionActivity {
            exec: SessionExec::Off,
            rate: 5,
            burst: 20,
            exclude: vec!["/usr/lib/git-core/".into(), "/usr/bin/id".into()],
        }
    );
    let flags = Flags {
        session_exec: Some(SessionExec::All),
        session_exec_rate: Some(7),
        session_exec_burst: Some(70),
        session_exclude: Some(vec!["/opt/ci/".into()]),
        ..Flags::default()
    };
    let s = resolve(&flags, &env(&[]), file(text)).unwrap().session;
    assert_eq!(
        s,
        SessionActivity { exec: SessionExec::All, rate: 7, burst: 70, exclude: vec!["/opt/ci/".into()] },
        "each flag beats its key; --session-exclude replaces the file's list"
    );
    let flags = Flags { session_exec_burst: Some(1), ..Flags::default() };
    let s = resolve(&flags, &env(&[]), file("[session]\nrate = 3\nburst = 9")).unwrap().session;
    assert_eq!((s.exec, s.rate, s.burst), (SessionExec::All, 3, 1), "a flag overrides only its own key");
}

#[test]
fn bad_session_values_name_their_key() {
    let cases: [(Flags, &str, &str); 8] = [
        (Flags::default(), "[session]\nrate = 0", "session.rate"),
        (Flags::default(), "[session]\nburst = 0", "session.burst"),
        (Flags::default(), "[session]\nexclude = [\"/usr/bin/\", \"git\"]", "session.exclude"),
        (Flags::default(), "[session]\nexclude = [\"\"]", "session.exclude"),
        (Flags { session_exec_rate: Some(0), ..Flags::default() }, "[session]\nrate = 5", "--session-exec-rate"),
        (Flags { session_exec_burst: Some(0), ..Flags::default() }, "", "--session-exec-burst"),
        (Flags { session_exclude: Some(vec!["bin/".into()]), ..Flags::default() }, "", "--session-exclude"),
        (Flags { session_exec_rate: Some(0), ..Flags::default() }, "[session]\nexec = \"off\"", "--session-exec-rate"),
    ];
    for (flags, text, key) in cases {
        let err = resolve(&flags, &env(&[]), file(text)).unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
    let err = resolve(&Flags::default(), &env(&[]), file("[session]\nrate = 0")).unwrap_err();
    assert!(err.message.contains("exec = \"off\""), "the hint: {err}");
    let err = resolve(&Flags { session_exec_rate: Some(0), ..Flags::default() }, &env(&[]), file("")).unwrap_err();
    assert!(err.message.contains("--session-exec off"), "the hint: {err}");
    let err = resolve(&Flags::default(), &env(&[]), file("[session]\nexclude = [\"/a\", \"b\"]")).unwrap_err();
    assert!(err.message.contains("entry 2"), "{err}");
    for (text, key) in [
        ("[session]\nexec = \"some\"", "session.exec"),
        ("[session]\nrate = -1", "session.rate"),
        ("[session]\nburst = \"many\"", "session.burst"),
        ("[session]\nexclude = \"/usr/bin/\"", "session.exclude"),
        ("[session]\nexcludes = []", "session.excludes"),
    ] {
        let (named, err) = file::parse(text).unwrap_err();
        assert_eq!(named.as_deref(), Some(key), "{err}");
    }
    let (_, err) = file::parse("[session]\nexec = \"some\"").unwrap_err();
    assert!(err.contains("all or off"), "{err}");
}

#[test]
fn session_flags_parse() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }
    let args = [
        "sshlogin",
        "--session-exec",
        "off",
        "--session-exec-rate",
        "10",
        "--session-exec-burst",
        "100",
        "--session-exclude",
        "/usr/lib/git-core/",
        "--session-exclude",
        "/usr/bin/id",
    ];
    let flags = Cli::try_parse_from(args).unwrap().flags;
    let s = resolve(&flags, &env(&[]), file("")).unwrap().session;
    assert_eq!(
        s,
        SessionActivity {
            exec: SessionExec::Off,
            rate: 10,
            burst: 100,
            exclude: vec!["/usr/lib/git-core/".into(), "/usr/bin/id".into()],
        }
    );
    assert!(Cli::try_parse_from(["sshlogin", "--session-exec", "some"]).is_err());
    assert!(Cli::try_parse_from(["sshlogin", "--session-exec-rate", "-1"]).is_err());
}
