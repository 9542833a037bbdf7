//! Any bytes as an audit netlink message, and any text as audit fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshlogin::decode::audit;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = audit::parse_netlink(data, false) {
        let _ = (m.acct(), m.success(), m.addr(), m.terminal(), m.op());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = audit::parse_fields(text);
    }
});
