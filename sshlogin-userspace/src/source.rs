//! The ring-buffer reader: wakes when the kernel has records and hands them
//! on in batches, as raw bytes. Decoding happens downstream so this loop
//! does as little as possible between wake-ups.

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, watch},
};

/// Raw records drained in one wake-up.
pub type Batch = Vec<Vec<u8>>;

/// Reads until `stop` changes, then drains what is left and returns.
/// Returns early (Ok) if the receiving side has gone away.
pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>, mut stop: watch::Receiver<bool>) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged
    // until it is dropped, which happens only when the AsyncFd is.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with tokio")?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                let batch = drain(guard.get_inner_mut());
                guard.clear_ready();
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return Ok(());
                }
            }
            _ = stop.changed() => {
                let batch = drain(fd.get_mut());
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
                return Ok(());
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>) -> Batch {
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        batch.push(item[..used_len(&item)].to_vec());
    }
    batch
}

/// How much of a record holds data: a message record is reserved at its
/// full capacity (about 1 KiB) but usually carries a few hundred bytes.
/// Anything that does not look like a message record is kept whole for the
/// decoder to judge.
pub fn used_len(record: &[u8]) -> usize {
    use sshlogin_common::{TEXT_CAP, kind, layout};
    let word = |at: usize| record.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match word(0) {
        Some(kind::AUDIT | kind::SYSLOG) => match word(layout::MESSAGE_COPIED) {
            Some(copied) if copied as usize <= TEXT_CAP => (layout::MESSAGE_DATA + copied as usize).min(record.len()),
            _ => record.len(),
        },
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
        let fork = [kind::FORK.to_ne_bytes().as_slice(), &[0u8; 52]].concat();
        assert_eq!(used_len(&fork), fork.len());
    }
}
