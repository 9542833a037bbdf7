//! sshlogin's probes. The syscalls come in through fentry/fexit programs
//! where the kernel accepts them and through tracepoints where it does not
//! (hardened kernels refuse fentry; the daemon picks at load). No probe
//! reads a kernel struct: tracepoint argument layouts are read from tracefs
//! and fentry arguments are integers and user pointers (Rust eBPF has no
//! CO-RE relocations).
//!
//! Each program first looks the caller up in the membership map (the sshd
//! process trees, kept by the `sched:*` programs), so that every other
//! process on the host pays one hash lookup and nothing more, whatever it
//! calls itself.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The membership hint's counts need an atomic add (filter.rs).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod fentry;
#[cfg(target_arch = "bpf")]
mod filter;
#[cfg(target_arch = "bpf")]
mod raw;
#[cfg(target_arch = "bpf")]
mod session;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod tracepoints;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; there is no way to
    // report a panic from inside the kernel.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("sshlogin-ebpf only builds for bpfel-unknown-none: run `cargo xtask build-ebpf`");
    std::process::exit(2);
}
