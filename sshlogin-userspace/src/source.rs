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
        batch.push(item.to_vec());
    }
    batch
}
