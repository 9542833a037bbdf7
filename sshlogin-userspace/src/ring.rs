//! The consumer side of the kernel's BPF ring buffer, mapped once.
//!
//! The kernel maps a ring buffer's data pages twice in a row so that a
//! reader can see a record that wraps past the end as one slice; libbpf and
//! aya map both copies. Every page of such a mapping is present from the
//! start (the kernel inserts them at mmap), so the default 4 MiB buffer
//! showed as 8 MiB of the daemon's resident memory. This reader maps the
//! data once and copies a wrapping record in two pieces: the records are
//! copied out anyway.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use anyhow::{Context, Result, bail};
use aya::maps::MapData;

/// `BPF_RINGBUF_HDR_SZ`, `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`
/// (uapi/linux/bpf.h).
const HDR: usize = 8;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;

/// One mapping of a page or more, unmapped on drop.
struct Mapping {
    at: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, offset: usize, writable: bool) -> std::io::Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of a descriptor this process holds;
        // the result is checked before use.
        let at = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), offset as libc::off_t)
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { at: NonNull::new(at.cast()).expect("mmap returned a mapping"), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made; nothing refers to it after.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

/// A ring buffer map, read by one consumer.
pub struct Ring {
    /// The consumer position page (the only page user space may write).
    consumer: Mapping,
    /// The producer position page, then the data pages, once.
    producer: Mapping,
    page: usize,
    mask: u64,
    fd: OwnedFd,
}

// SAFETY: the mappings belong to this value alone and are only read and
// written through it (the kernel writes its side with its own ordering).
unsafe impl Send for Ring {}

impl Ring {
    pub fn new(map: &MapData) -> Result<Ring> {
        let info = map.info().context("asking the kernel about the ring buffer")?;
        let size = info.max_entries() as usize;
        let fd = map.fd().as_fd().try_clone_to_owned().context("duplicating the ring buffer's descriptor")?;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !size.is_power_of_two() || size < page {
            bail!("the ring buffer's size {size} is not a power of two of at least a page");
        }
        let consumer = Mapping::new(fd.as_fd(), page, 0, true).context("mapping the ring buffer's consumer page")?;
        let producer =
            Mapping::new(fd.as_fd(), page + size, page, false).context("mapping the ring buffer's data pages")?;
        Ok(Ring { consumer, producer, page, mask: size as u64 - 1, fd })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the consumer page, 8-aligned.
        unsafe { &*self.consumer.at.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the producer page, 8-aligned.
        unsafe { &*self.producer.at.as_ptr().cast::<AtomicU64>() }
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data pages follow the producer page in the mapping.
        unsafe { self.producer.at.as_ptr().add(self.page) }
    }

    /// Appends every committed record to `out`, the first `used(record)`
    /// bytes of each, and hands their space back to the kernel. Stops at a
    /// record still being written.
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>, used: impl Fn(&[u8]) -> usize) {
        let size = (self.mask + 1) as usize;
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        loop {
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod {
                return;
            }
            let at = (cons & self.mask) as usize;
            // SAFETY: headers are 8-aligned and never cross the end (the size
            // is a power of two of at least a page); the kernel writes the
            // length word last, with release ordering.
            let len = unsafe { &*self.data().add(at).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if len & BUSY != 0 {
                return;
            }
            let n = (len & !(BUSY | DISCARD)) as usize;
            if len & DISCARD == 0 && n <= size {
                // SAFETY: the data pages, mapped once, `size` bytes.
                let data = unsafe { std::slice::from_raw_parts(self.data(), size) };
                out.push(copy_record(data, (at + HDR) % size, n, &used));
            }
            cons += (HDR + n).next_multiple_of(8) as u64;
            self.consumer_pos().store(cons, Ordering::Release);
        }
    }
}

/// The `n` bytes at `start` of the circular `data`, cut to `used` of them.
fn copy_record(data: &[u8], start: usize, n: usize, used: impl Fn(&[u8]) -> usize) -> Vec<u8> {
    let first = n.min(data.len() - start);
    let (a, b) = (&data[start..start + first], &data[..n - first]);
    if b.is_empty() {
        return a[..used(a).min(n)].to_vec();
    }
    let mut whole = [a, b].concat();
    whole.truncate(used(&whole));
    whole
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::copy_record;

    #[test]
    fn a_record_past_the_end_continues_at_the_start() {
        let data: Vec<u8> = (0..16).collect();
        assert_eq!(copy_record(&data, 4, 3, |r| r.len()), [4, 5, 6]);
        assert_eq!(copy_record(&data, 14, 5, |r| r.len()), [14, 15, 0, 1, 2]);
        assert_eq!(copy_record(&data, 8, 8, |r| r.len()), [8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn only_the_used_part_is_kept() {
        let data: Vec<u8> = (0..16).collect();
        // The length the record itself says, read from its first byte.
        let used = |r: &[u8]| usize::from(r[0] - 10);
        assert_eq!(copy_record(&data, 12, 8, used), [12, 13]);
        assert_eq!(copy_record(&data, 14, 8, used), [14, 15, 0, 1]);
        assert_eq!(copy_record(&data, 12, 4, |_| 99), [12, 13, 14, 15], "never more than the record");
    }
}
