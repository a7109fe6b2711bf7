//! The mounts a process ran under, where they were its own: a sandbox.
//!
//! A restored process sees the mounts of whoever runs `thaw run`. A process that ran with mounts
//! of its own (systemd's `PrivateTmp=`, `ProtectSystem=`, `ReadOnlyPaths=`; `unshare -m` with a
//! tmpfs) and is restored outside them would write its temporary files into the shared /tmp,
//! find read-only paths writable, and open other files than it would have: accepted, it would
//! come back subtly outside its sandbox. The checkpoint records the mounts the process saw that
//! the system's first process (PID 1) does not, as mount point, file system type and read-only
//! flag, PID 1's read just before and just after the process's, so that mounts coming and going
//! elsewhere (containers) are not taken for the process's; nothing where both are in one mount
//! namespace. A restore is refused unless the launcher sees every one of
//! them, on any boot: a new sandbox of the same shape (the next start of the same unit, with a
//! new private /tmp) is the same environment. Where PID 1's mounts cannot be read (`hidepid`),
//! nothing is recorded. Mounts the process did not see (`InaccessiblePaths=` hides by mounting,
//! so it is covered) are not compared.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One mount as compared: where, what, and whether read-only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mount {
    /// The mount point as /proc/PID/mountinfo shows it (octal escapes kept).
    pub point: String,
    pub fstype: String,
    pub read_only: bool,
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ro = if self.read_only { ", read-only" } else { "" };
        write!(f, "{} ({}{ro})", self.point, self.fstype)
    }
}

/// The most mounts an image may list (a validation bound; more are not recorded).
pub const MAX_MOUNTS: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounts {
    /// The mounts the process saw that PID 1 did not, sorted.
    pub sandbox: Vec<Mount>,
}

/// The mounts in a mountinfo text.
fn parse(text: &str) -> BTreeSet<Mount> {
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let (point, options) = (head.get(4)?, head.get(5)?);
            let fstype = tail.split(' ').next()?;
            Some(Mount {
                point: (*point).to_owned(),
                fstype: fstype.to_owned(),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

fn mounts_of(pid: &str) -> Option<BTreeSet<Mount>> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .ok()
        .map(|t| parse(&t))
}

impl Mounts {
    /// This process's, against PID 1's.
    pub fn current() -> Mounts {
        // The same namespace: nothing of its own (PID 1's link is readable to root only).
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        if ns("self").is_some_and(|mine| ns("1") == Some(mine)) {
            return Mounts::default();
        }
        // PID 1's read before and after this process's: a mount made or removed meanwhile
        // (another program's) is in one of them, and not taken for the process's own.
        let (Some(before), Some(mine), Some(after)) =
            (mounts_of("1"), mounts_of("self"), mounts_of("1"))
        else {
            return Mounts::default();
        };
        Mounts {
            sandbox: mine
                .iter()
                .filter(|m| !before.contains(m) && !after.contains(m))
                .take(MAX_MOUNTS)
                .cloned()
                .collect(),
        }
    }

    /// Whether a process that had `self` may be restored by this one: every mount of its
    /// sandbox must be here too.
    pub fn check_here(&self) -> Result<(), String> {
        if self.sandbox.is_empty() {
            return Ok(());
        }
        let here = mounts_of("self").unwrap_or_default();
        let missing: Vec<String> = self
            .sandbox
            .iter()
            .filter(|m| !here.contains(m))
            .map(|m| m.to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let shown = missing
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = match missing.len() {
            n if n > 4 => format!(" and {} more", n - 4),
            _ => String::new(),
        };
        Err(format!(
            "the process ran with mounts of its own that you do not have: {shown}{more} (a sandbox: a systemd unit's PrivateTmp=, ProtectSystem=, ReadOnlyPaths=, or a mount namespace of its own); restore it under the same sandbox"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_as_point_type_and_read_only() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    30 27 0:40 /unit/tmp /tmp rw,nosuid shared:5 master:1 - tmpfs tmpfs rw\n\
                    27 1 8:1 / / ro,relatime - ext4 /dev/sda1 rw\n\
                    31 27 0:41 / /my\\040dir rw - tmpfs none rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 4);
        let root = Mount {
            point: "/".into(),
            fstype: "ext4".into(),
            read_only: true,
        };
        assert!(m.contains(&root));
        assert!(m
            .iter()
            .any(|x| x.point == "/tmp" && x.fstype == "tmpfs" && !x.read_only));
        assert!(m.iter().any(|x| x.point == "/my\\040dir"));
        assert_eq!(root.to_string(), "/ (ext4, read-only)");
    }

    #[test]
    fn a_sandbox_needs_every_mount_of_it_here() {
        let none = Mounts::default();
        assert_eq!(none.check_here(), Ok(()));
        let gone = Mounts {
            sandbox: vec![Mount {
                point: "/nowhere/thaw-test".into(),
                fstype: "tmpfs".into(),
                read_only: false,
            }],
        };
        let why = gone.check_here().unwrap_err();
        assert!(why.contains("/nowhere/thaw-test (tmpfs)"), "{why}");
        // What this process sees itself is here.
        let own = mounts_of("self").unwrap();
        let here = Mounts {
            sandbox: own.into_iter().take(3).collect(),
        };
        assert_eq!(here.check_here(), Ok(()));
    }
}
