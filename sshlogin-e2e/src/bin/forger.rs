//! Not a test: the fake sshd of `forgery::a_fake_sshd_cannot_report_logins`,
//! which runs a copy of this binary named sshd (as root and as nobody). It
//! calls itself sshd and sends what sshd and PAM send for a login, for the
//! user named by its argument, who never logged in.

use std::time::Duration;

use sshlogin_e2e::harness::send_audit;

fn main() {
    let user = std::env::args().nth(1).expect("usage: sshlogin-e2e-forger USER");
    // SAFETY: prctl with a NUL-terminated name; renames this thread, whose
    // comm the probes see.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"sshd".as_ptr()) };
    let pid = std::process::id();
    for (ty, op) in [(1101u16, "PAM:accounting"), (1105, "PAM:session_open")] {
        send_audit(
            ty,
            &format!(
                "op={op} grantors=pam_unix acct=\"{user}\" exe=\"/usr/sbin/sshd\" hostname=10.9.8.7 addr=10.9.8.7 terminal=ssh res=success"
            ),
        );
    }
    let line = format!(
        "<38>Nov 26 17:00:00 sshd[{pid}]: Accepted publickey for {user} from 10.9.8.7 port 4242 ssh2: ED25519 SHA256:forged"
    );
    let log = std::os::unix::net::UnixDatagram::unbound().unwrap();
    if log.connect("/dev/log").is_ok() {
        // send(2), as glibc's syslog(3) does (std's send is a write(2)).
        // SAFETY: a connected socket and a buffer that outlives the call.
        unsafe { libc::send(std::os::fd::AsRawFd::as_raw_fd(&log), line.as_ptr().cast(), line.len(), 0) };
    }
    // Stay alive so /proc still shows what this process really is.
    std::thread::sleep(Duration::from_secs(2));
}
