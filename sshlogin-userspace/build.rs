//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object needs the nightly toolchain and bpf-linker, which plain
//! `cargo check`/`cargo clippy`/`cargo test` on stable must not require. So
//! this script does not build it: it copies it when it exists and otherwise
//! embeds nothing, in which case `sshlogin run` says how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=SSHLOGIN_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| manifest.join("..").join("target"));
    let object = env::var_os("SSHLOGIN_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("bpfel-unknown-none/release/sshlogin"));
    println!("cargo::rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("sshlogin.bpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).expect("write the embedded eBPF object"),
        Err(_) => {
            println!(
                "cargo::warning=no eBPF object at {}: this sshlogin cannot load its probes (build with `cargo xtask build`)",
                object.display()
            );
            fs::write(&out, b"").expect("write the empty eBPF object placeholder");
        }
    }
}
