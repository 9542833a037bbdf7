//! Any bytes as a ring-buffer record: decoding must not panic, and neither
//! may correlating whatever decodes (the input is cut into records at 0xFF
//! 0xFE so one run can drive a connection through several states).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshlogin::{
    correlate::{Correlator, Settings, process::NoProc},
    decode,
};

fuzz_target!(|data: &[u8]| {
    let settings =
        Settings { boot_id: uuid::Uuid::nil(), family: vec!["sshd".into()], activity: Default::default() };
    let mut correlator = Correlator::new(settings, Box::new(NoProc));
    let mut out = Vec::new();
    for record in data.split(|&b| b == 0xff).filter(|r| !r.is_empty()) {
        if let Ok(r) = decode::decode(record) {
            correlator.handle(r, &mut out);
        }
    }
    correlator.finish(&mut out);
});
