//! The cgroup namespace, as the process sees it.
//!
//! A restored process is in the cgroups of whoever runs `thaw run`, as any new process is, and
//! reads its cgroup paths (`/proc/self/cgroup`, the cgroup file system's mount root) relative to
//! the caller's cgroup namespace. A process that ran at the root of a cgroup namespace of its own
//! (it called `unshare(CLONE_NEWCGROUP)`, or a container runtime did: it reads `/` for every
//! hierarchy) would read the caller's paths instead (zdtm's cgroupns: `/` became
//! `/process_api/…`). The image records that it read `/`; where the caller does not, the restored
//! process unshares a cgroup namespace of its own before anything else, rooted at the cgroups it
//! is in, and reads `/` again. Threads in different cgroup namespaces are refused by name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupNs {
    /// Every hierarchy in `/proc/self/cgroup` read `/`: the process was at the root of its
    /// cgroup namespace.
    pub at_root: bool,
}

/// Whether every hierarchy of a `/proc/PID/cgroup` text reads `/` (at least one).
fn at_root(text: &str) -> bool {
    !text.is_empty() && text.lines().all(|l| l.splitn(3, ':').nth(2) == Some("/"))
}

fn own_view_at_root() -> bool {
    std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| at_root(&t))
}

impl CgroupNs {
    pub fn current() -> CgroupNs {
        CgroupNs {
            at_root: own_view_at_root(),
        }
    }

    /// Whether the restored process must unshare a cgroup namespace to read `/` again: it did,
    /// and the caller (whose namespace and cgroups it starts in) does not.
    pub fn needs_own(&self) -> bool {
        self.at_root && !own_view_at_root()
    }

    /// The restorer's step where [`CgroupNs::needs_own`], before any child of the process is
    /// made.
    pub fn plan_unshare(plan: &mut crate::restore::Plan) {
        plan.syscall(
            "unshare a cgroup namespace (the process was at the root of its own)",
            libc::SYS_unshare,
            [libc::CLONE_NEWCGROUP as u64, 0, 0, 0, 0, 0],
        );
    }
}

/// Threads in cgroup namespaces other than the process's: each reads its cgroups from its own
/// root, and a restore makes one namespace for all.
pub(crate) fn refusals() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ns = |t: &str| std::fs::metadata(format!("/proc/self/task/{t}/ns/cgroup")).map(|m| m.ino());
    let me = crate::sys::getpid().to_string();
    let Ok(mine) = ns(&me) else {
        return Vec::new();
    };
    let mut why = Vec::new();
    for tid in crate::procfs::own_tasks() {
        if ns(&tid).is_ok_and(|theirs| theirs != mine) {
            why.push(format!(
                "thread {tid} is in another cgroup namespace than the process (it called unshare(CLONE_NEWCGROUP) alone): threads of one process are restored in one; unshare it in the main thread, before other threads start"
            ));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_of_a_namespace_reads_slash_for_every_hierarchy() {
        assert!(at_root("0::/\n"));
        assert!(at_root("4:memory:/\n3:cpu,cpuacct:/\n0::/\n"));
        assert!(!at_root("4:memory:/\n0::/user.slice/session-1.scope\n"));
        assert!(!at_root("0::/system.slice\n"));
        assert!(
            !at_root(""),
            "unreadable or empty: not known to be at its root"
        );
    }
}
