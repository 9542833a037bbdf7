//! tracefs: where tracepoints are found, mounted when missing, and the
//! record layouts the kernel publishes in `events/<category>/<name>/format`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs mount point, mounting tracefs at /sys/kernel/tracing first if
/// no mount is present (it is not mounted at boot on many servers).
pub fn ensure_mounted() -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    tracing::info!("tracefs is not mounted; mounting it at {TRACEFS}");
    nix::mount::mount(Some("nodev"), TRACEFS, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| {
            format!(
                "tracefs is not mounted and mounting it at {TRACEFS} failed; \
             mount it by hand with `mount -t tracefs nodev {TRACEFS}` (as root)"
            )
        })?;
    if !Path::new(TRACEFS).join("events").is_dir() {
        bail!("mounted tracefs at {TRACEFS} but it has no events/ directory; is CONFIG_TRACING enabled?");
    }
    Ok(PathBuf::from(TRACEFS))
}

/// The text of a tracepoint's format file.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    fs::read_to_string(&path)
        .with_context(|| format!("tracepoint {category}:{name} is not available ({})", path.display()))
}

/// Offset of `field` in a tracepoint format file: the `offset:N;` of the
/// line whose declaration ends with the field name. `None` when absent.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from /sys/kernel/tracing/events/sched/sched_process_fork/format
    // on Linux 6.18 (comm fields are __data_loc strings).
    const FORK_6_18: &str = include_str!("../../tests/fixtures/tracefs/sched_process_fork-6.18.format");
    // The layout of Linux 5.x..6.1 (comm fields inline), as printed there.
    const FORK_5_10: &str = include_str!("../../tests/fixtures/tracefs/sched_process_fork-5.10.format");

    #[test]
    fn finds_child_pid_in_both_layouts() {
        assert_eq!(field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(field_offset(FORK_6_18, "parent_pid"), Some(12));
        assert_eq!(field_offset(FORK_5_10, "child_pid"), Some(44));
        assert_eq!(field_offset(FORK_5_10, "parent_pid"), Some(24));
    }

    #[test]
    fn array_and_pointer_fields() {
        assert_eq!(field_offset(FORK_5_10, "child_comm"), Some(28));
        let sendto = "\tfield:void * buff;\toffset:24;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_offset(sendto, "buff"), Some(24));
    }

    #[test]
    fn absent_or_garbage() {
        assert_eq!(field_offset(FORK_6_18, "nope"), None);
        assert_eq!(field_offset("field:int x;\toffset:zz;", "x"), None);
        assert_eq!(field_offset("", "x"), None);
    }
}
