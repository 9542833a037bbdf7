//! Real parts for the end-to-end tests: test users, a real sshd on a
//! loopback port with its own config and host key, a /dev/log listener so
//! sshd sends its log lines, real ssh clients, and the daemon loaded for real.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The explicit opt-out. CI never sets it.
pub const SKIP_VAR: &str = "SSHLOGIN_SKIP_PRIVILEGED";

/// The daemon binary under test; `cargo xtask test` builds it and sets this.
pub const BIN_VAR: &str = "SSHLOGIN_BIN";

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Tests the daemon at `path` rather than `$SSHLOGIN_BIN` (the system bench,
/// which builds the binary itself). Call it before anything starts one.
pub fn use_binary(path: impl Into<PathBuf>) {
    let path = path.into();
    assert!(BINARY.get_or_init(|| path.clone()) == &path, "use_binary called twice with different binaries");
}

/// The sshlogin binary the tests run: [`use_binary`]'s, else `$SSHLOGIN_BIN`;
/// panics saying how to get one.
pub fn sshlogin_bin() -> &'static Path {
    BINARY.get_or_init(|| {
        let Some(path) = std::env::var_os(BIN_VAR).map(PathBuf::from) else {
            panic!(
                "{BIN_VAR} is not set: the end-to-end tests run the sshlogin binary it names. \
                 Run them with `cargo xtask test`, which builds the binary and sets it; by hand: \
                 cargo build -p sshlogin-userspace && {BIN_VAR}=$PWD/target/debug/sshlogin cargo test -p sshlogin-e2e"
            )
        };
        assert!(
            path.is_file(),
            "{BIN_VAR}={} is not a file: build it first (cargo build -p sshlogin-userspace)",
            path.display()
        );
        path
    })
}

/// Tests that count what a daemon saw host-wide (every sshd login on the
/// machine reaches every daemon) run alone; the others share.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Panics with the reason when the tests cannot run here, or when the
/// opt-out is set: `cargo xtask test` then lists the tests as ignored
/// without running them, and a test run by hand that did not run must not
/// pass. Hold the guard for the whole test.
pub fn privileged() -> std::sync::RwLockReadGuard<'static, ()> {
    check_privileged();
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

/// As [`privileged`], for a test that must be the only one running.
pub fn privileged_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    check_privileged();
    ALONE.write().unwrap_or_else(|e| e.into_inner())
}

fn check_privileged() {
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        panic!(
            "{SKIP_VAR}=1: the end-to-end tests do not run. `cargo xtask test` counts each as ignored \
             without running it; run by hand, each fails, so that a skipped test never counts as passed."
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the end-to-end tests load eBPF programs and run sshd: they need root. \
             Run them as root (cargo xtask test), or skip them with {SKIP_VAR}=1 cargo xtask test."
        );
    }
    for bin in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/sshpass"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install openssh-server openssh-client sshpass (cargo xtask bootstrap)"
        );
    }
}

/// A test user: its name, password and key pair.
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
    pub key: PathBuf,
}

/// Users every test may use; each test logs in as its own so tests that run
/// in parallel can tell their events apart.
pub const USERS: &[&str] = &[
    "sl-alice", "sl-bob", "sl-carol", "sl-dave", "sl-erin", "sl-frank", "sl-grace", "sl-heidi", "sl-ivan", "sl-judy",
    "sl-kate", "sl-leo", "sl-mia", "sl-ned", "sl-olga", "sl-pat", "sl-quinn", "sl-rita", "sl-sam", "sl-tess", "sl-uma",
    "sl-vic", "sl-wes", "sl-xena", "sl-yuri", "sl-zoe", "sl-abe", "sl-bea", "sl-cal", "sl-dot", "sl-eve", "sl-fay",
    "sl-gus", "sl-hal", "sl-ida", "sl-jon", "sl-kim", "sl-lou", "sl-max", "sl-nia", "sl-oli", "sl-pia", "sl-rex",
    "sl-roy", "sl-sue", "sl-ted", "sl-ula", "sl-val", "sl-wyn",
];

/// The test user [`sudoers`] gives sudo rules.
pub const SUDO_USER: &str = "sl-oli";

struct Fixture {
    dir: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();
static DEVLOG: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
static DEVLOG_OURS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Creates (once per test process) the users, their keys, a host key and a
/// wrong key.
fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        // One directory, emptied at the start of each run, so runs leave no litter.
        let dir = std::env::temp_dir().join("sshlogin-e2e");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        for key in ["hostkey", "wrongkey"] {
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join(key)));
        }
        for name in USERS {
            if Command::new("id").arg(name).output().map(|o| !o.status.success()).unwrap_or(true) {
                run(Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", name]));
            }
            // A password also keeps the account from counting as locked,
            // which sshd refuses for every method when UsePAM is off.
            let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
            use std::io::Write;
            writeln!(chpasswd.stdin.take().unwrap(), "{name}:{}", password(name)).unwrap();
            assert!(chpasswd.wait().unwrap().success(), "chpasswd {name}");
            let key = dir.join(format!("id_{name}"));
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
            let home = PathBuf::from(format!("/home/{name}"));
            let ssh = home.join(".ssh");
            fs::create_dir_all(&ssh).unwrap();
            fs::copy(key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
            fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
            run(Command::new("chown").args(["-R", &format!("{name}:{name}")]).arg(&ssh));
        }
        devlog();
        Fixture { dir }
    })
}

fn password(name: &str) -> String {
    format!("pw-{name}-7d1c")
}

pub fn user(name: &'static str) -> User {
    assert!(USERS.contains(&name), "{name} is not a test user");
    let f = fixture();
    User { name, password: Box::leak(password(name).into_boxed_str()), key: f.dir.join(format!("id_{name}")) }
}

/// A test user's uid.
pub fn uid_of(name: &str) -> u32 {
    let out = run(Command::new("id").args(["-u", name]));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("id -u {name}: {e}"))
}

/// Installs (once per test process) /etc/sudoers.d/sshlogin-e2e: [`SUDO_USER`]
/// may run /usr/bin/true as root without a password, and /usr/bin/id as
/// root with its own. Checked with `visudo -c` before it goes live: a
/// broken sudoers file would lock sudo for everyone on the host.
pub fn sudoers() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        fixture();
        assert!(Path::new("/usr/bin/sudo").exists(), "/usr/bin/sudo is missing: install sudo (cargo xtask bootstrap)");
        let text = format!(
            "# sshlogin's end-to-end tests (sshlogin-e2e/src/harness.rs); safe to remove.\n\
             {SUDO_USER} ALL=(root) NOPASSWD: /usr/bin/true\n\
             {SUDO_USER} ALL=(root) /usr/bin/id\n"
        );
        // sudo ignores files in sudoers.d whose name has a dot: the draft
        // is never read before it is renamed into place.
        let draft = PathBuf::from("/etc/sudoers.d/sshlogin-e2e.draft");
        fs::write(&draft, text).unwrap();
        fs::set_permissions(&draft, fs::Permissions::from_mode(0o440)).unwrap();
        run(Command::new("visudo").arg("-cqf").arg(&draft));
        fs::rename(&draft, "/etc/sudoers.d/sshlogin-e2e").unwrap();
    });
}

/// Makes sure `su root` refuses a wrong password: root's password field
/// must not be empty (an empty one lets su in without asking). An empty
/// field is replaced by `*`, no password at all, which refuses every
/// password and leaves root's other ways in (keys, sudo) as they were.
pub fn root_refuses_su() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let shadow = fs::read_to_string("/etc/shadow").expect("read /etc/shadow");
        let field = shadow.lines().find_map(|l| l.strip_prefix("root:")).and_then(|rest| rest.split(':').next());
        if field == Some("") {
            eprintln!("e2e: root had an empty password, which su takes without asking; setting it to '*'");
            run(Command::new("usermod").args(["-p", "*", "root"]));
        }
    });
}

pub fn wrong_key() -> PathBuf {
    fixture().dir.join("wrongkey")
}

/// The fixture directory (keys, configs), for tests that add files.
pub fn fixture_dir() -> PathBuf {
    fixture().dir.clone()
}

/// Output of a command that must succeed.
pub fn must(cmd: &mut Command) -> Output {
    run(cmd)
}

/// sshd sends its log lines to /dev/log only when something listens there.
/// Use the host's listener if it has one; otherwise listen, and keep every
/// line so tests can compare with what sshd logged.
fn devlog() -> Arc<Mutex<Vec<String>>> {
    DEVLOG
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let path = Path::new("/dev/log");
            if UnixDatagram::unbound().and_then(|s| s.connect(path)).is_ok() {
                eprintln!("e2e: /dev/log has a listener already; using it");
                return lines;
            }
            let _ = fs::remove_file(path); // a stale socket from an earlier run
            let socket = UnixDatagram::bind(path).expect("bind /dev/log");
            fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
            DEVLOG_OURS.store(true, std::sync::atomic::Ordering::Relaxed);
            let sink = lines.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = socket.recv(&mut buf) {
                    sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            });
            lines
        })
        .clone()
}

/// Whether the tests read what sshd logs (not when the host's own syslog
/// daemon owns /dev/log).
pub fn reads_sshd_log() -> bool {
    devlog();
    DEVLOG_OURS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Lines sshd logged that contain `needle` (empty when the host's own
/// syslog daemon owns /dev/log).
pub fn logged(needle: &str) -> Vec<String> {
    devlog().lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
}

/// Like `logged`, once the count has stopped growing for a second: sshd's
/// datagrams can still sit in /dev/log's queue, or in sshd processes
/// blocked on a full queue, after the clients have exited.
pub fn logged_settled(needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = logged(needle);
    loop {
        thread::sleep(Duration::from_secs(1));
        let now = logged(needle);
        if now.len() == last.len() || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory only root can write, all the way up, for the commands sshd
/// runs (AuthorizedKeysCommand refuses anything under /tmp).
pub fn root_only_dir() -> PathBuf {
    let dir = PathBuf::from("/usr/local/lib/sshlogin-e2e");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes an executable script (root's, 0755) into [`root_only_dir`].
pub fn root_script(name: &str, text: &str) -> PathBuf {
    let path = root_only_dir().join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// sshd started the way an init script does, without `-D`: it forks, its
/// first process exits, the child listens. Killed (by its pid file) on drop.
pub struct DaemonizedSshd {
    pub port: u16,
    pid_file: PathBuf,
}

impl DaemonizedSshd {
    pub fn start(use_pam: bool, extra: &str) -> DaemonizedSshd {
        let f = fixture();
        let port = free_port();
        let config = f.dir.join(format!("sshd_config_{port}"));
        let pid_file = f.dir.join(format!("sshd_{port}.pid"));
        let host_key = f.dir.join("hostkey").display().to_string();
        let text = sshd_config("127.0.0.1", port, &host_key, use_pam, extra)
            .replace("PidFile none", &format!("PidFile {}", pid_file.display()));
        fs::write(&config, text).unwrap();
        run(Command::new("/usr/sbin/sshd").arg("-f").arg(&config));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the daemonized sshd did not listen on port {port}");
            thread::sleep(Duration::from_millis(20));
        }
        DaemonizedSshd { port, pid_file }
    }
}

impl Drop for DaemonizedSshd {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill with a pid sshd wrote and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// A real sshd on a loopback port; killed on drop.
pub struct Sshd {
    pub port: u16,
    child: Child,
    _config: PathBuf,
}

/// `sshd_extra` for an sshd that runs sftp as a program of its own, the
/// way a packaged sshd_config does (the tests' default is internal-sftp,
/// which runs no program).
pub const SFTP_SERVER: &str = "Subsystem sftp /usr/lib/openssh/sftp-server\n";

/// sshd_config text for a test sshd: sftp is internal-sftp unless `extra`
/// names its own (sshd refuses a subsystem defined twice).
pub fn sshd_config(listen: &str, port: u16, host_key: &str, use_pam: bool, extra: &str) -> String {
    let own_sftp = extra.lines().any(|l| l.split_whitespace().take(2).eq(["Subsystem", "sftp"]));
    format!(
        "Port {port}\nListenAddress {listen}\nHostKey {host_key}\nUsePAM {}\nPasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\nPidFile none\nLogLevel INFO\n{}{extra}\n",
        if use_pam { "yes" } else { "no" },
        if own_sftp { "" } else { "Subsystem sftp internal-sftp\n" }
    )
}

impl Sshd {
    /// /usr/sbin/sshd on 127.0.0.1.
    pub fn start(use_pam: bool, extra: &str) -> Sshd {
        Self::start_on("127.0.0.1", "/usr/sbin/sshd", use_pam, extra)
    }

    /// `binary` (an sshd) listening on `listen`, a loopback address.
    pub fn start_on(listen: &str, binary: &str, use_pam: bool, extra: &str) -> Sshd {
        let f = fixture();
        let port = free_port();
        let config = f.dir.join(format!("sshd_config_{port}"));
        let host_key = f.dir.join("hostkey").display().to_string();
        fs::write(&config, sshd_config(listen, port, &host_key, use_pam, extra)).unwrap();
        let mut cmd = Command::new(binary);
        cmd.args(["-D", "-f"]).arg(&config);
        let ip: std::net::IpAddr = listen.parse().unwrap();
        Self::launch(cmd, port, config, move || TcpStream::connect((ip, port)).is_ok())
    }

    /// Runs `cmd` (an sshd in the foreground, possibly wrapped in chroot or
    /// ip netns exec) and waits until `ready`.
    pub fn launch(mut cmd: Command, port: u16, config: PathBuf, ready: impl Fn() -> bool) -> Sshd {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start sshd");
        let mut sshd = Sshd { port, child, _config: config };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited with {status} before listening on port {port}");
            }
            assert!(Instant::now() < deadline, "sshd did not listen on port {port}");
            thread::sleep(Duration::from_millis(20));
        }
        sshd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const CLIENT_OPTS: &[&str] = &[
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
];

/// For clients of a deliberate overload (a burst, a flood of held
/// connections): on two cores sshd may take longer than 10 s to send its
/// banner to some of them, and such a client is no failure of sshlogin's.
pub const PATIENT: &[&str] = &["-o", "ConnectTimeout=60"];

/// `ssh -i KEY user@127.0.0.1 -p PORT COMMAND` with public keys only.
pub fn ssh_key(port: u16, user: &str, key: &Path, command: &str) -> Output {
    ssh_key_to("127.0.0.1", port, user, key, command)
}

/// A key login of `user` with its own key that must succeed.
pub fn login(port: u16, user: &User, command: &str) {
    let out = ssh_key(port, user.name, &user.key, command);
    assert!(out.status.success(), "{} could not log in: {}", user.name, String::from_utf8_lossy(&out.stderr));
}

/// As [`ssh_key`], to `host`.
pub fn ssh_key_to(host: &str, port: u16, user: &str, key: &Path, command: &str) -> Output {
    key_client(key).args(["-p", &port.to_string(), "-l", user, host, command]).output().expect("run ssh")
}

/// An ssh command with the test options and only `key`.
pub fn key_client(key: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(CLIENT_OPTS)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "-i"])
        .arg(key);
    cmd
}

/// `sftp -b -` as `user` with its own key, the batch commands on stdin.
pub fn sftp_batch(port: u16, user: &User, batch: &str) -> Output {
    let mut sftp = Command::new("sftp")
        .args(CLIENT_OPTS)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&user.key)
        .args(["-b", "-", "-P", &port.to_string(), &format!("{}@127.0.0.1", user.name)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftp");
    use std::io::Write;
    sftp.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    sftp.wait_with_output().expect("wait for sftp")
}

/// A password login through sshpass.
pub fn ssh_password(port: u16, user: &str, password: &str, command: &str) -> Output {
    ssh_password_with(&[], port, user, password, command)
}

/// As [`ssh_password`], with client options that come first (and so win).
pub fn ssh_password_with(opts: &[&str], port: u16, user: &str, password: &str, command: &str) -> Output {
    Command::new("sshpass")
        .args(["-p", password, "ssh"])
        .args(opts)
        .args(CLIENT_OPTS)
        .args(["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"])
        .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1"), command])
        .output()
        .expect("run sshpass")
}

/// Starts `cmd` (an `sshlogin run`) with its stderr piped and waits until
/// the daemon says its probes are attached. Returns it and its log, which
/// keeps growing; panics with the log if it does not attach within 30 s.
pub fn spawn_attached(cmd: &mut Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start sshlogin");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("reporting SSH logins") {
                let _ = ready_tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    if ready.recv_timeout(Duration::from_secs(30)).is_err() {
        let status = child.try_wait().ok().flatten();
        let _ = child.kill();
        panic!(
            "sshlogin did not attach its probes (exit status {status:?}); its log:\n{}",
            log.lock().unwrap().join("\n")
        );
    }
    (child, log)
}

/// The daemon, loaded for real, printing JSON lines.
pub struct Daemon {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    metrics: Option<u16>,
}

/// What most tests start with: `name`'s test user, an sshd with PAM and
/// `sshd_extra` config lines, and the daemon started with `args`.
pub fn scene(name: &'static str, sshd_extra: &str, args: &[&str]) -> (User, Sshd, Daemon) {
    (user(name), Sshd::start(true, sshd_extra), Daemon::start(args))
}

impl Daemon {
    /// A metric of the daemon, which serves them on a port of its own
    /// unless `args` said `--metrics-listen`.
    pub fn metric(&self, series: &str) -> u64 {
        metric(self.metrics.expect("the daemon serves its metrics where its --metrics-listen says"), series)
    }

    pub fn metrics_text(&self) -> String {
        metrics_text(self.metrics.expect("the daemon serves its metrics where its --metrics-listen says"))
    }

    /// Fails the test if the kernel dropped records for any of `reasons`.
    pub fn assert_no_kernel_drops(&self, reasons: &[&str]) {
        for reason in reasons {
            assert_eq!(self.metric(&format!("sshlogin_kernel_dropped_total{{reason=\"{reason}\"}}")), 0, "{reason}");
        }
    }

    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// [`Daemon::start`] with `env` set for the daemon.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        fixture();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.iter().any(|a| a == "--state-dir") {
            // Each daemon its own spool: they run side by side.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            args.extend(["--state-dir".into(), state_dir(&format!("daemon-{n}")).display().to_string()]);
        }
        let metrics = (!args.iter().any(|a| a == "--metrics-listen")).then(free_port);
        if let Some(port) = metrics {
            args.extend(["--metrics-listen".into(), format!("127.0.0.1:{port}")]);
        }
        let mut cmd = Command::new(sshlogin_bin());
        // The tests say what to export; the environment they run in must not.
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let (mut child, stderr) =
            spawn_attached(cmd.arg("run").args(args).env("SSHLOGIN_LOG", "info").stdout(Stdio::piped()));
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Daemon { child, events, seen: Vec::new(), stderr, metrics }
    }

    /// Waits for the event `name` of `user`; returns it.
    pub fn wait_event(&mut self, name: &str, user: &str) -> Value {
        self.wait_for(&format!("{name} for {user}"), |e| is(e, name, user))
    }

    /// Polls `cond` on what the daemon has printed, for up to `secs`.
    pub fn eventually(&mut self, what: &str, secs: u64, cond: impl Fn(&Daemon) -> bool) {
        eventually(what, secs, || {
            self.settle(Duration::from_millis(100));
            cond(self)
        });
    }

    /// Waits until an event matching `pred` arrives; returns it.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(_) => panic!(
                    "no event {what} within 20 s; events seen:\n{}\nsshlogin log:\n{}",
                    self.seen.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
                    self.stderr.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Collects what arrives during `quiet`, then returns every event seen.
    pub fn settle(&mut self, quiet: Duration) -> &[Value] {
        let deadline = Instant::now() + quiet;
        while let Ok(e) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Every event seen so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    /// Events so far for `user`.
    pub fn events_for(&self, name: &str, user: &str) -> Vec<Value> {
        self.seen.iter().filter(|e| e["event_name"] == name && e["attributes"]["user.name"] == user).cloned().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the daemon has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        // After the comm: state(0) ... utime(11) stime(12), in clock ticks.
        let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// As [`Daemon::stop`]; the log must have a line containing `needle`.
    pub fn stop_saying(self, needle: &str) -> Vec<String> {
        let log = self.stop();
        assert!(log.iter().any(|l| l.contains(needle)), "the daemon never logged {needle:?}: {log:?}");
        log
    }

    /// SIGTERM; the daemon must detach and exit 0.
    pub fn stop(mut self) -> Vec<String> {
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for sshlogin");
        let log = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "sshlogin exited with {status} after SIGTERM; log:\n{}", log.join("\n"));
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of `name` for `user`.
pub fn is(e: &Value, name: &str, user: &str) -> bool {
    e["event_name"] == name && e["attributes"]["user.name"] == user
}

/// The OTLP receiver of otlp_receiver.py: decodes with the OpenTelemetry
/// project's Python package and reports each request as a JSON line.
pub struct Receiver {
    pub port: u16,
    child: Child,
    lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Receiver {
    /// `script`: statuses (with optional `:RETRY_AFTER`) for the first requests.
    pub fn start(script: &[&str]) -> Self {
        Self::start_on(0, script)
    }

    /// Listens on `port` (0: any).
    pub fn start_on(port: u16, script: &[&str]) -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(path)
            .args(["--port", &port.to_string()])
            .args(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 otlp_receiver.py");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = match out.next() {
            Some(Ok(line)) => line.trim().parse().expect("receiver port"),
            _ => panic!(
                "the OTLP receiver did not start; is opentelemetry-proto installed for python3? \
                 (python3 -m pip install opentelemetry-proto; cargo xtask bootstrap does it)"
            ),
        };
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("receiver line is JSON");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Receiver { port, child, lines, seen: Vec::new() }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails the test if a request could not be decoded.
    pub fn requests(&mut self) -> usize {
        self.settle(Duration::ZERO).len()
    }

    /// Waits for a request holding a record that matches; returns
    /// (request, record).
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, Value) {
        let find = |seen: &[Value]| {
            seen.iter()
                .find_map(|req| req["records"].as_array()?.iter().find(|r| pred(r)).map(|r| (req.clone(), r.clone())))
        };
        if let Some(hit) = find(&self.seen) {
            return hit;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(v) => {
                    assert!(v.get("error").is_none(), "the official package could not decode a request: {v}");
                    self.seen.push(v);
                    if let Some(hit) = find(&self.seen) {
                        return hit;
                    }
                }
                Err(_) => panic!("the receiver got no record {what} within 20 s; requests: {:?}", self.seen),
            }
        }
    }

    /// Waits for a request carrying the event `name` of `user`; returns
    /// (request, record).
    pub fn wait_event(&mut self, name: &str, user: &str) -> (Value, Value) {
        self.wait_for(&format!("{name} for {user}"), |r| is(r, name, user))
    }

    /// Collects requests arriving during `quiet`.
    pub fn settle(&mut self, quiet: Duration) -> &[Value] {
        let deadline = Instant::now() + quiet;
        while let Ok(v) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            assert!(v.get("error").is_none(), "the official package could not decode a request: {v}");
            self.seen.push(v);
        }
        &self.seen
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory `name` under the fixture directory, created, searchable by
/// everyone (a process that dropped root may run what it holds).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = fixture().dir.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `path`, with whatever an earlier run left there removed.
pub fn cleared(path: PathBuf) -> PathBuf {
    let _ = fs::remove_file(&path);
    path
}

/// A file in the test directory with `content`.
pub fn scratch_file(name: &str, content: &str) -> PathBuf {
    let path = fixture().dir.join(name);
    fs::write(&path, content).unwrap();
    path
}

/// A test PKI made with the openssl command: a CA, a server certificate for
/// 127.0.0.1 and a client certificate, all signed by the CA.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn pki() -> Pki {
    let dir = fixture().dir.join("pki");
    fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&dir));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sshlogin test CA"],
        ]
        .concat(),
    );
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "sshlogin-client", "extendedKeyUsage=clientAuth\n"),
    ] {
        fs::write(p(&format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, extfile) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ]);
    }
    Pki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
    }
}

/// A fresh directory for a daemon's spool.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = fixture().dir.join("state").join(name);
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// What the metrics endpoint on `port` answers, headers and all.
pub fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of a metric line (`name{labels} value`), 0 when absent.
pub fn metric(port: u16, series: &str) -> u64 {
    metrics_text(port).lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// Polls `cond` every 100 ms for up to `secs`.
pub fn eventually(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    eventually_or(what, secs, cond, String::new);
}

/// As [`eventually`], adding `context()` to the failure message.
pub fn eventually_or(what: &str, secs: u64, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s\n{}", context());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one audit user message the way libaudit does.
pub fn send_audit(msg_type: u16, text: &str) {
    // SAFETY: plain socket calls with buffers that outlive them.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT);
        assert!(fd >= 0, "socket(NETLINK_AUDIT): {}", std::io::Error::last_os_error());
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + text.len() + 1) as u32).to_ne_bytes());
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&5u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
        msg.extend_from_slice(&[0; 8]);
        msg.extend_from_slice(text.as_bytes());
        msg.push(0);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        // The kernel may refuse the message (audit off); the probe has seen
        // the call either way.
        let _ = sent;
        libc::close(fd);
    }
}

/// The Debian 13 ("trixie") root with OpenSSH 10, built once with
/// debootstrap from the Debian registry and cached under target/; rebuilt
/// when the recipe changes.
pub fn trixie_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // Canonical: /proc shows the chroot's binaries under this path.
        let target = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"));
        fs::create_dir_all(&target).unwrap();
        let target = fs::canonicalize(target).unwrap();
        let root = target.join("trixie-root");
        let stamp = target.join("trixie-root.recipe");
        let recipe =
            "debootstrap --variant=minbase --include=openssh-server,openssh-client trixie http://deb.debian.org/debian";
        if fs::read_to_string(&stamp).is_ok_and(|s| s == recipe) && root.join("usr/sbin/sshd").exists() {
            return root;
        }
        assert!(
            Path::new("/usr/sbin/debootstrap").exists(),
            "debootstrap is missing: apt-get install debootstrap (cargo xtask bootstrap does it)"
        );
        unmount_under(&root);
        let _ = fs::remove_dir_all(&root);
        eprintln!("e2e: building the trixie root in {} (about a minute, once)", root.display());
        let mut args: Vec<&str> = recipe.split_whitespace().skip(1).collect();
        let root_str = root.to_str().unwrap().to_string();
        args.insert(args.len() - 1, &root_str);
        // The Debian registry now and then drops a connection: three tries.
        for tried in 1..=3 {
            let out = Command::new("debootstrap").args(&args).output().expect("run debootstrap");
            if out.status.success() {
                break;
            }
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let lines: Vec<&str> = all.lines().collect();
            let log = lines[lines.len().saturating_sub(30)..].join("\n");
            assert!(tried < 3, "debootstrap of trixie failed three times; the last time:\n{log}");
            eprintln!("e2e: debootstrap of trixie failed (try {tried} of 3), again in 10 s:\n{log}");
            unmount_under(&root);
            let _ = fs::remove_dir_all(&root);
            thread::sleep(Duration::from_secs(10));
        }
        fs::write(&stamp, recipe).unwrap();
        root
    })
    .clone()
}

/// Lazily unmounts whatever is mounted below `root` (deepest first), so
/// removing it can never reach the host's /dev or /proc.
fn unmount_under(root: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(root) && Path::new(p) != root)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// An sshd running in a chroot of `root`, with proc, the host's ptys and the
/// host's /dev/log mounted in; unmounted on drop.
pub struct ChrootSshd {
    pub sshd: Option<Sshd>,
    root: PathBuf,
}

impl ChrootSshd {
    /// Test users are created in the root with the host's uids.
    pub fn start(root: &Path, users: &[&'static str]) -> ChrootSshd {
        fixture();
        unmount_under(root);
        let chroot = |args: &[&str]| run(Command::new("chroot").arg(root).args(args));
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(root.join("proc")));
        run(Command::new("mount").args(["--bind", "/dev/pts"]).arg(root.join("dev/pts")));
        fs::write(root.join("dev/log"), "").unwrap();
        run(Command::new("mount").args(["--bind", "/dev/log"]).arg(root.join("dev/log")));
        // From here on, a failure unmounts on the way out.
        let mut guard = ChrootSshd { sshd: None, root: root.to_path_buf() };
        fs::create_dir_all(root.join("run/sshd")).unwrap();
        if !root.join("etc/ssh/ssh_host_ed25519_key").exists() {
            chroot(&["ssh-keygen", "-A"]);
        }
        for name in users {
            let u = user(name);
            let id = String::from_utf8_lossy(&run(Command::new("id").args(["-u", name])).stdout).trim().to_string();
            if !Command::new("chroot").arg(root).args(["id", name]).output().is_ok_and(|o| o.status.success()) {
                chroot(&["useradd", "--create-home", "--shell", "/bin/bash", "--uid", &id, name]);
            }
            let mut chpasswd = Command::new("chroot").arg(root).arg("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
            use std::io::Write;
            writeln!(chpasswd.stdin.take().unwrap(), "{name}:{}", u.password).unwrap();
            assert!(chpasswd.wait().unwrap().success());
            let ssh = root.join(format!("home/{name}/.ssh"));
            fs::create_dir_all(&ssh).unwrap();
            fs::copy(u.key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
            chroot(&["chown", "-R", &format!("{name}:{name}"), &format!("/home/{name}/.ssh")]);
        }
        let port = free_port();
        let inside = format!("/etc/ssh/sshd_config_sltest_{port}");
        fs::write(
            root.join(inside.trim_start_matches('/')),
            sshd_config("127.0.0.1", port, "/etc/ssh/ssh_host_ed25519_key", true, ""),
        )
        .unwrap();
        let mut cmd = Command::new("chroot");
        cmd.arg(root).args(["/usr/sbin/sshd", "-D", "-f", &inside]);
        let sshd = Sshd::launch(cmd, port, root.join(inside.trim_start_matches('/')), move || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        guard.sshd = Some(sshd);
        guard
    }

    /// The binaries as /proc shows them from the host, for --sshd-path.
    pub fn sshd_paths(&self) -> Vec<String> {
        ["usr/sbin/sshd", "usr/lib/openssh/sshd-session", "usr/lib/openssh/sshd-auth"]
            .iter()
            .map(|p| self.root.join(p).display().to_string())
            .collect()
    }

    pub fn port(&self) -> u16 {
        self.sshd.as_ref().unwrap().port
    }
}

impl Drop for ChrootSshd {
    fn drop(&mut self) {
        self.sshd.take();
        thread::sleep(Duration::from_millis(100));
        unmount_under(&self.root);
    }
}
