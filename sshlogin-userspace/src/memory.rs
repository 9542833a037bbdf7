//! Handing freed memory back to the kernel.
//!
//! Loading the probes parses the kernel's BTF (about 19 MB of heap at the
//! peak, 5 MB of it the file itself), all freed before the first record;
//! a burst of logins leaves its buffers behind the same way. mimalloc
//! returns freed pages to the kernel only after a delay, checked when the
//! thread allocates again, and an idle daemon does not: it kept 28 MiB it
//! no longer used (docs/performance.md, "Where the memory goes"). So the
//! daemon asks at the moments it knows it is idle.

/// Returns the memory this thread's heap has free, and what the allocator
/// holds for all threads, to the kernel. Costs a walk of the heap: call
/// after start-up and when idle, not per event.
pub fn release() {
    // SAFETY: mi_collect has no preconditions; it only touches the
    // allocator's own state.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
