//! Where the running kernel keeps the few fields the session probes read
//! (a task's credentials, parent, argument area, live threads and
//! executable's inode), from its BTF
//! (`/sys/kernel/btf/vmlinux`). Rust eBPF has no CO-RE relocations, so the
//! daemon finds the offsets itself and writes them into the object.
//!
//! A scan of the raw type section rather than a parsed type graph: it
//! keeps one `u32` per type while it looks (about 0.5 MiB for a distro
//! kernel) instead of the tens of MiB a full parse holds at load.

use anyhow::{Context, Result, bail};
use sshlogin_common::TaskOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const TYPE_TAG: u32 = 18;

/// The offsets from the BTF at [`VMLINUX`].
pub fn task_offsets() -> Result<TaskOffsets> {
    let raw = std::fs::read(VMLINUX).with_context(|| format!("reading the kernel's BTF ({VMLINUX})"))?;
    offsets(&raw).with_context(|| format!("finding task, cred and mm fields in {VMLINUX}"))
}

/// The offsets from raw BTF. `known` is left for the caller to set.
pub fn offsets(raw: &[u8]) -> Result<TaskOffsets> {
    let btf = Btf::new(raw)?;
    let field = |ty: &str, name: &str| -> Result<u32> {
        let id = btf.struct_named(ty).with_context(|| format!("no struct {ty}"))?;
        btf.member_offset(id, name, 0).with_context(|| format!("no field {ty}.{name}"))
    };
    Ok(TaskOffsets {
        task_cred: field("task_struct", "cred")?,
        task_real_parent: field("task_struct", "real_parent")?,
        task_tgid: field("task_struct", "tgid")?,
        task_mm: field("task_struct", "mm")?,
        cred_euid: field("cred", "euid")?,
        mm_arg_start: field("mm_struct", "arg_start")?,
        mm_arg_end: field("mm_struct", "arg_end")?,
        task_signal: field("task_struct", "signal")?,
        signal_live: field("signal_struct", "live")?,
        mm_exe_file: field("mm_struct", "exe_file")?,
        file_inode: field("file", "f_inode")?,
        inode_ino: field("inode", "i_ino")?,
        inode_sb: field("inode", "i_sb")?,
        sb_dev: field("super_block", "s_dev")?,
        known: 0,
    })
}

struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type in `types`; type id `n` is at `at[n - 1]`.
    at: Vec<u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn new(raw: &'a [u8]) -> Result<Btf<'a>> {
        if raw.len() < 24 || u16::from_le_bytes([raw[0], raw[1]]) != MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let word = |at| u32_at(raw, at).map(|v| v as usize).context("BTF header cut short");
        let (hdr, type_off, type_len, str_off, str_len) = (word(4)?, word(8)?, word(12)?, word(16)?, word(20)?);
        let section = |off: usize, len: usize, what: &str| {
            raw.get(hdr + off..hdr + off + len).with_context(|| format!("BTF {what} section out of bounds"))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut at = Vec::new();
        let mut pos = 0usize;
        while pos + 12 <= types.len() {
            at.push(pos as u32);
            let info = u32_at(types, pos + 4).expect("in bounds");
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                2 | 7..=12 | 16 | 18 => 0,
                other => bail!("BTF type {} has unknown kind {other}", at.len()),
            };
            pos += 12 + extra;
        }
        Ok(Btf { types, strings, at })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (kind, vlen, kind_flag, name offset, size-or-type) of type `id`.
    fn info(&self, id: u32) -> Option<(u32, usize, bool, u32, u32)> {
        let pos = *self.at.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(self.types, pos + 4)?;
        Some((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            u32_at(self.types, pos)?,
            u32_at(self.types, pos + 8)?,
        ))
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        (1..=self.at.len() as u32).find(|&id| {
            self.info(id)
                .is_some_and(|(kind, vlen, _, n, _)| kind == STRUCT && vlen > 0 && self.name(n) == name.as_bytes())
        })
    }

    /// Byte offset of `name` in struct or union `id`, looking inside
    /// anonymous members (mm_struct keeps its fields in one).
    fn member_offset(&self, id: u32, name: &str, depth: u32) -> Option<u32> {
        let (kind, vlen, bitfields, _, _) = self.info(id)?;
        if (kind != STRUCT && kind != UNION) || depth > 8 {
            return None;
        }
        let pos = *self.at.get(id as usize - 1)? as usize + 12;
        (0..vlen).find_map(|i| {
            let m = pos + 12 * i;
            let (n, ty, off) = (u32_at(self.types, m)?, u32_at(self.types, m + 4)?, u32_at(self.types, m + 8)?);
            let bits = if bitfields { off & 0x00ff_ffff } else { off };
            if n != 0 {
                return (self.name(n) == name.as_bytes() && bits % 8 == 0).then_some(bits / 8);
            }
            Some(bits / 8 + self.member_offset(self.resolve(ty)?, name, depth + 1)?)
        })
    }

    /// `ty` with typedefs and qualifiers taken off.
    fn resolve(&self, mut ty: u32) -> Option<u32> {
        for _ in 0..16 {
            let (kind, _, _, _, next) = self.info(ty)?;
            if !matches!(kind, TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG) {
                return Some(ty);
            }
            ty = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made BTF: `struct inner { int a; long b; }`,
    /// `struct outer { int x; struct { long y; struct inner z; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0inner\0a\0b\0outer\0x\0y\0z\0";
        let s = |name: &str| {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            strings.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for w in [name, (kind << 24) | vlen, size].iter().chain(extra) {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        ty(s("int"), 1, 0, 4, &[32]); // 1
        ty(s("long"), 1, 0, 8, &[64]); // 2
        ty(s("inner"), STRUCT, 2, 16, &[s("a"), 1, 0, s("b"), 2, 64]); // 3
        ty(0, STRUCT, 2, 24, &[s("y"), 2, 0, s("z"), 3, 64]); // 4: anonymous
        ty(s("outer"), STRUCT, 2, 32, &[s("x"), 1, 0, 0, 4, 64]); // 5
        let mut raw = Vec::new();
        for w in [0xeb9f_u16 as u32 | (1 << 16), 24, 0, t.len() as u32, t.len() as u32, strings.len() as u32] {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        raw.extend_from_slice(&t);
        raw.extend_from_slice(strings);
        raw
    }

    #[test]
    fn fields_are_found_inside_anonymous_members() {
        let raw = sample();
        let btf = Btf::new(&raw).unwrap();
        let outer = btf.struct_named("outer").unwrap();
        assert_eq!(btf.member_offset(outer, "x", 0), Some(0));
        assert_eq!(btf.member_offset(outer, "y", 0), Some(8));
        assert_eq!(btf.member_offset(outer, "z", 0), Some(16));
        assert_eq!(btf.member_offset(outer, "b", 0), None, "not inside a named member");
        assert_eq!(btf.struct_named("nope"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::new(b"").is_err());
        assert!(Btf::new(&[0u8; 64]).is_err());
        let mut raw = sample();
        raw.truncate(40);
        assert!(Btf::new(&raw).is_err());
        assert!(offsets(&sample()).is_err(), "no task_struct in the sample");
    }

    /// The running kernel's (the build and CI machines have BTF).
    #[test]
    fn this_kernel_has_them() {
        let o = task_offsets().expect("offsets in this kernel's BTF");
        assert!(o.task_cred > 0 && o.task_mm > 0 && o.mm_arg_end > o.mm_arg_start, "{o:?}");
    }
}
