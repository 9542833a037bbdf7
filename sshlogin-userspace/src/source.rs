//! The ring-buffer reader: a thread of its own that wakes when the kernel
//! has records in either ring buffer (logins, session activity) or it is
//! stopped, and hands them on in batches, as raw bytes. Nothing else
//! runs on it (no decoding, no host look-ups, no exporting), so a slow
//! endpoint or a busy pipeline never keeps it from emptying the kernel's
//! buffer; a full queue to the pipeline blocks it, and then the kernel
//! counts what it cannot deliver.
//!
//! The kernel wakes the reader for each record while it keeps up, and each
//! wake-up then wakes the pipeline and the exporters: under load that chain
//! of wake-ups cost more than the records. So after handing on a batch the
//! reader lets records gather for [`GATHER`] before it looks again; the
//! first record after a quiet spell is handed on at once.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::{probes::Rings, ring::Ring};

/// How long records gather after a batch before the next one is taken.
pub const GATHER: Duration = Duration::from_millis(10);

/// Raw records drained in one wake-up.
pub type Batch = Vec<Vec<u8>>;

/// Tells the reader to drain what is left and end. It sleeps until the
/// kernel has records or this is called: no timer wakes it when idle.
#[derive(Clone)]
pub struct Stopper(Arc<OwnedFd>);

impl Stopper {
    pub fn stop(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to the eventfd this handle owns.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// Starts the reader. It reads until stopped, then drains what is left and
/// ends; it ends early if the receiving side has gone away.
pub fn spawn(rings: Rings, tx: mpsc::Sender<Batch>) -> Result<(JoinHandle<()>, Stopper)> {
    let events = Ring::new(&rings.events)?;
    let activity = Ring::new(&rings.activity).context("the activity ring buffer")?;
    // SAFETY: eventfd with valid flags; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("creating the reader's stop eventfd");
    }
    // SAFETY: a new descriptor this process owns.
    let stopper = Stopper(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }));
    let stop = stopper.clone();
    let handle = thread::Builder::new()
        .name("sshlogin-ring".into())
        .spawn(move || read([events, activity], tx, stop))
        .context("starting the ring-buffer reader thread")?;
    Ok((handle, stopper))
}

fn read(mut rings: [Ring; 2], tx: mpsc::Sender<Batch>, stop: Stopper) {
    let mut fds = [
        libc::pollfd { fd: stop.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: rings[0].as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: rings[1].as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        let stopping = fds[0].revents != 0;
        let batch = drain(&mut rings);
        let sent = !batch.is_empty();
        if sent && tx.blocking_send(batch).is_err() {
            return;
        }
        if stopping {
            return;
        }
        if sent {
            // Only the stop descriptor: a stop is not kept waiting.
            // SAFETY: one valid pollfd, as below.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, GATHER.as_millis() as libc::c_int) };
            if fds[0].revents != 0 {
                continue;
            }
        }
        // SAFETY: three valid pollfds; the ring buffers and the eventfd
        // stay open for as long as this function owns them. EINTR loops.
        unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
    }
}

/// Both rings, in the order things happened: a session's records are
/// tied to a login the pipeline must have seen, and must not come after
/// the end of their connection (sudo's last record, then the logout).
fn drain(rings: &mut [Ring; 2]) -> Batch {
    let mut batch = Vec::new();
    rings[0].drain(&mut batch, used_len);
    let logins = batch.len();
    rings[1].drain(&mut batch, used_len);
    if logins > 0 && batch.len() > logins {
        // Stable: each ring's own order is kept among equal times.
        batch.sort_by_key(|r| ktime_ns(r));
    }
    batch
}

/// A record's `Header::ktime_ns`; 0 for one too short to have it (the
/// decoder rejects it).
fn ktime_ns(record: &[u8]) -> u64 {
    const AT: usize = std::mem::offset_of!(sshlogin_common::Header, ktime_ns);
    record.get(AT..AT + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}

/// How much of a record holds data: a message record is reserved at its
/// full capacity (about 1 KiB) but usually carries a few hundred bytes.
/// Anything that does not look like a message record is kept whole for the
/// decoder to judge.
pub fn used_len(record: &[u8]) -> usize {
    use sshlogin_common::{kind, layout, message_data, record_kind, session_exec_args, session_message_data};
    match record_kind(record) {
        Some(kind::AUDIT | kind::SYSLOG) => {
            message_data(record).map_or(record.len(), |d| layout::MESSAGE_DATA + d.len())
        }
        Some(kind::SESSION_AUDIT) => {
            session_message_data(record).map_or(record.len(), |d| layout::SMESSAGE_DATA + d.len())
        }
        Some(kind::SESSION_EXEC) => session_exec_args(record).map_or(record.len(), |d| layout::SEXEC_ARGS + d.len()),
        _ => record.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_records_are_trimmed_others_kept() {
        use sshlogin_common::{kind, layout};
        let mut m = vec![0u8; layout::MESSAGE_SIZE];
        m[..4].copy_from_slice(&kind::AUDIT.to_ne_bytes());
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&100u32.to_ne_bytes());
        assert_eq!(used_len(&m), layout::MESSAGE_DATA + 100);
        m[layout::MESSAGE_COPIED..layout::MESSAGE_COPIED + 4].copy_from_slice(&99_999u32.to_ne_bytes());
        assert_eq!(used_len(&m), m.len(), "a bad length is left for the decoder to reject");
        assert_eq!(used_len(&[1, 2]), 2);
        let fork = [kind::FORK.to_ne_bytes().as_slice(), &[0u8; 60]].concat();
        assert_eq!(used_len(&fork), fork.len());
    }
}
