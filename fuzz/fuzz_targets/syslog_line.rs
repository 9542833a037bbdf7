//! Any bytes as a syslog datagram from sshd.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshlogin::decode::syslog;

fuzz_target!(|data: &[u8]| {
    let line = syslog::parse(data, false);
    let _ = syslog::parse_message(&line.message);
});
