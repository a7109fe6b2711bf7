//! Per-process identity and environment: PID, names, cwd, umask, personality.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Its controlling terminal (`tty_nr` of /proc/PID/stat; 0: none).
    pub tty_nr: i32,
    /// Thread-group leader's name (`/proc/<pid>/comm`).
    pub comm: String,
    pub cwd: String,
    /// The working directory was deleted (`cwd` is where it was): made again there, entered
    /// and removed at restore.
    pub cwd_deleted: bool,
    /// The working directory itself (default: unknown): at restore the directory at `cwd`
    /// must be this one, not another made or moved there since ([`Process::check_cwd`]).
    pub cwd_id: super::FileId,
    pub umask: u32,
    pub personality: u32,
    pub dumpable: u32,
    /// Address of the SDK's restore cell, which the restorer fills so that the checkpointing
    /// thread learns it was restored and where its new arguments are.
    pub restore_cell: u64,
    /// The thread that called checkpoint (any thread may). It resumes last, once every other
    /// thread has left the restorer region, because it is the one that unmaps that region.
    pub checkpoint_tid: i32,
    /// prctl state a program can read back.
    pub child_subreaper: bool,
    /// PR_GET_THP_DISABLE as read: 0, 1 (disabled), or 3 (disabled except where advised:
    /// PR_THP_DISABLE_EXCEPT_ADVISED, Linux 6.18).
    pub thp_disable: u32,
    pub timerslack_ns: u64,
    /// /proc/self/oom_score_adj (never restored below the caller's: see the launcher).
    pub oom_score_adj: i32,
    /// The `MEMBARRIER_CMD_REGISTER_*` commands the process issued (registered again at restore).
    pub membarrier: u32,
    /// /proc/self/loginuid (`u32::MAX`: unset); see [`plan_loginuid`].
    pub loginuid: u32,
    /// PR_GET_PDEATHSIG (see [`Process::plan_final`]).
    pub pdeathsig: i32,
    /// PR_GET_MDWE: memory-deny-write-execute (systemd's MemoryDenyWriteExecute=), set last.
    pub mdwe: u32,
    /// /proc/self/coredump_filter (which mappings a core dump holds; `u32::MAX`: unknown).
    pub coredump_filter: u32,
    /// The security module's label of the process (/proc/self/attr/current: an AppArmor
    /// profile, an SELinux context); `None` where no module gives one.
    pub lsm_label: Option<String>,
    /// mlockall's MCL_FUTURE (and MCL_ONFAULT) in force: mappings made later are locked.
    pub mlock_future: u32,
    /// The extended register state the process may use (arch_prctl ARCH_GET_XCOMP_PERM): with
    /// AMX asked for, every thread's saved state is larger, and a process without the
    /// permission would get back only their legacy SSE state, and SIGILL at its next tile
    /// instruction. 0: unknown.
    pub xcomp_perm: u64,
    /// The root directory's device and inode: every path in the image is relative to it (a
    /// process in a chroot has another root than whoever restores it). (0, 0): unknown.
    pub root: (u64, u64),
}

use crate::procfs;
use crate::restore::Plan;

impl Process {
    /// Reads the frozen child's view; `pid` is the checkpointed process's own. `wide`: the
    /// child-subreaper flag, PR_GET_THP_DISABLE and the dumpable flag as the checkpointing
    /// thread's handler read them while every thread was stopped (a fork copies neither the
    /// first nor a way to ask, and the snapshot is forked dumpable).
    pub(crate) fn dump(
        child: i32,
        pid: i32,
        checkpoint_tid: i32,
        restore_cell: u64,
        wide: [Option<u64>; 3],
    ) -> std::io::Result<Process> {
        let stat = procfs::stat_fields(child)?;
        let status = procfs::read(child, "status")?;
        let num = |i: usize| stat.get(i).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
        let cwd = std::fs::read_link(format!("/proc/{child}/cwd"))?;
        // (The link leads to the directory itself, removed or not.)
        let cwd_id = std::fs::metadata(format!("/proc/{child}/cwd"))
            .map(|m| super::FileId::of(&m))
            .unwrap_or_default();
        let cwd = cwd.to_string_lossy();
        // " (deleted)" may be the end of a live directory's own name.
        let cwd_deleted = cwd.ends_with(" (deleted)")
            && !std::fs::metadata(&*cwd).is_ok_and(|m| super::FileId::of(&m) == cwd_id);
        let personality = procfs::read(child, "personality")
            .ok()
            .and_then(|p| u32::from_str_radix(p.trim(), 16).ok())
            .unwrap_or(0);
        Ok(Process {
            pid,
            // The child's parent is us; our parent is the application's.
            ppid: std::os::unix::process::parent_id() as i32,
            pgid: num(5),
            sid: num(6),
            tty_nr: num(7),
            comm: procfs::read(child, "comm")?
                .trim_end_matches('\n')
                .to_owned(),
            cwd: if cwd_deleted {
                cwd.strip_suffix(" (deleted)").unwrap_or(&cwd).to_owned()
            } else {
                cwd.into_owned()
            },
            cwd_deleted,
            cwd_id,
            umask: procfs::field(&status, "Umask")
                .and_then(|u| u32::from_str_radix(u, 8).ok())
                .unwrap_or(0o022),
            personality,
            dumpable: wide[2]
                .or_else(|| crate::sys::prctl_get(libc::PR_GET_DUMPABLE).ok())
                .unwrap_or(1) as u32,
            restore_cell,
            checkpoint_tid,
            child_subreaper: wide[0].unwrap_or(0) != 0,
            thp_disable: wide[1].unwrap_or(0) as u32,
            timerslack_ns: crate::sys::prctl_get(libc::PR_GET_TIMERSLACK).unwrap_or(50_000),
            // (A fork copies both: the snapshot's, not ours, which may have changed since.)
            oom_score_adj: oom_score_adj_of(&child.to_string()),
            membarrier: crate::sys::membarrier_registrations(),
            loginuid: loginuid(),
            pdeathsig: {
                let mut sig = 0i32;
                crate::sys::syscall6(
                    libc::SYS_prctl,
                    [
                        libc::PR_GET_PDEATHSIG as u64,
                        &mut sig as *mut i32 as u64,
                        0,
                        0,
                        0,
                        0,
                    ],
                );
                sig
            },
            mdwe: crate::sys::prctl_get(PR_GET_MDWE).unwrap_or(0) as u32,
            coredump_filter: coredump_filter_of(&child.to_string()).unwrap_or(u32::MAX),
            xcomp_perm: crate::sys::xcomp_perm(),
            root: root_id().unwrap_or((0, 0)),
            mlock_future: mlock_future(),
            lsm_label: lsm_label(),
        })
    }

    /// umask, working directory, personality, the prctl state above.
    pub fn plan_restore(&self, plan: &mut Plan) {
        // (THP: disabled, and its flags as the third argument: PR_THP_DISABLE_EXCEPT_ADVISED.)
        let thp = u64::from(self.thp_disable);
        for (label, option, value, arg) in [
            (
                "child subreaper",
                libc::PR_SET_CHILD_SUBREAPER,
                u64::from(self.child_subreaper),
                0,
            ),
            (
                "transparent huge pages disabled",
                libc::PR_SET_THP_DISABLE,
                thp & 1,
                thp & 2,
            ),
            (
                "timer slack",
                libc::PR_SET_TIMERSLACK,
                self.timerslack_ns,
                0,
            ),
        ] {
            let flags = if arg != 0 {
                format!(" ({arg:#x})")
            } else {
                String::new()
            };
            plan.syscall(
                format!("prctl: {label} = {value}{flags}"),
                libc::SYS_prctl,
                [option as u64, value, arg, 0, 0, 0],
            );
        }
        // The permission is the process's and a fork's is the launcher's: asked for again,
        // component by component, before any thread resumes through its saved state.
        let missing = self.xcomp_perm & !crate::sys::xcomp_perm();
        for bit in (0..64).filter(|b| missing >> b & 1 == 1) {
            plan.syscall(
                format!("extended register state component {bit} (arch_prctl ARCH_REQ_XCOMP_PERM; AMX tile data is 18)"),
                libc::SYS_arch_prctl,
                [crate::sys::ARCH_REQ_XCOMP_PERM, bit, 0, 0, 0, 0],
            );
        }
        // Registrations belong to the address space, which is new: register each again.
        for cmd in [1u32 << 2, 1 << 4, 1 << 6, 1 << 8] {
            if self.membarrier & cmd != 0 {
                plan.syscall(
                    format!("membarrier registration {cmd:#x}"),
                    libc::SYS_membarrier,
                    [u64::from(cmd), 0, 0, 0, 0, 0],
                );
            }
        }
        // The address space is new: it has the launcher's filter unless told otherwise.
        if self.coredump_filter != u32::MAX && coredump_filter() != Some(self.coredump_filter) {
            plan.write_file(
                format!("core dump filter {:#x}", self.coredump_filter),
                "/proc/self/coredump_filter",
                format!("{:#x}", self.coredump_filter).as_bytes(),
            );
        }
        plan.syscall(
            format!("umask {:03o}", self.umask),
            libc::SYS_umask,
            [u64::from(self.umask), 0, 0, 0, 0, 0],
        );
        plan.syscall(
            format!("personality {:#x}", self.personality),
            libc::SYS_personality,
            [u64::from(self.personality), 0, 0, 0, 0, 0],
        );
    }

    /// Whether the working directory can be entered again as the process's own (launcher side,
    /// before the process exists): the directory at its path is the one it had, or, for one
    /// deleted, nothing is at its path in a directory that exists (it is made there again).
    pub fn check_cwd(&self) -> Result<(), String> {
        let path = std::path::Path::new(&self.cwd);
        if self.cwd_deleted {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(format!(
                    "the process's working directory had been deleted, and something is at its path {} now: it cannot be made there again (remove that, or restore elsewhere)",
                    self.cwd
                ));
            }
            return match path.parent().map(std::fs::metadata) {
                Some(Ok(m)) if m.is_dir() => Ok(()),
                _ => Err(format!(
                    "the process's working directory had been deleted, and the directory it was in is gone too: {} cannot be made again",
                    self.cwd
                )),
            };
        }
        match std::fs::metadata(path) {
            Err(e) => Err(format!(
                "cannot enter the process's working directory {}: {e}",
                self.cwd
            )),
            Ok(m) if self.cwd_id != super::FileId::default() && super::FileId::of(&m) != self.cwd_id => {
                Err(format!(
                    "the process's working directory {} was replaced since the checkpoint (another directory is at its path now): its relative paths would lead elsewhere; restore with the directory it had",
                    self.cwd
                ))
            }
            Ok(_) => Ok(()),
        }
    }

    /// The working directory: entered once the restorer holds no more than the image's
    /// capabilities (the path is the image's: with the launcher's, a path by way of another
    /// process's /proc links could reach a directory the caller cannot).
    pub fn plan_cwd(&self, plan: &mut Plan) {
        let cwd = plan.cstr(&self.cwd);
        if self.cwd_deleted {
            // Must not exist: entering and removing someone's directory of that name would be
            // wrong; a clear failure instead.
            plan.syscall(
                format!("make the deleted working directory {} again", self.cwd),
                libc::SYS_mkdir,
                [cwd, 0o700, 0, 0, 0, 0],
            );
        }
        plan.syscall(
            format!("chdir {}", self.cwd),
            libc::SYS_chdir,
            [cwd, 0, 0, 0, 0, 0],
        );
        if self.cwd_deleted {
            plan.syscall(
                format!("delete the working directory {} again", self.cwd),
                libc::SYS_rmdir,
                [cwd, 0, 0, 0, 0, 0],
            );
        }
    }
}

/// Sets `/proc/self/oom_score_adj` to `value` (the launcher's decision, never below the caller's
/// own) unless the process has it already (`inherited` from the launcher). Planned once the
/// process is dumpable again, so that it may open its own /proc files.
pub fn plan_oom_score_adj(plan: &mut Plan, value: i32, inherited: i32) {
    if value != inherited {
        plan.write_file(
            format!("oom_score_adj {value}"),
            "/proc/self/oom_score_adj",
            value.to_string().as_bytes(),
        );
    }
}

const PR_SET_MDWE: u64 = 65;
const PR_GET_MDWE: i32 = 66;

impl Process {
    /// A session leader without a controlling terminal (a daemon that called setsid) leads a new
    /// session again, without one, as it had in its first life. One that had a terminal (started
    /// by script(1), `docker run -t`, `ssh -t host cmd`, tmux: each makes the program it runs
    /// lead a session on the terminal) stays in the caller's session instead, whose terminal it
    /// has again: a session of its own would have none, and the terminal's resizes, /dev/tty and
    /// its foreground group would be gone (the caller's terminal cannot be taken for a new
    /// session). A process group alone is the caller's: job control belongs to whoever runs
    /// `thaw run`. Made before its zombie children (which may be in that session).
    pub fn plan_session(&self, plan: &mut Plan) {
        if self.sid == self.pid && self.pid > 0 && self.tty_nr == 0 {
            plan.syscall("lead a new session (setsid)", libc::SYS_setsid, [0; 6]);
        }
    }

    /// The attributes set last, once every mapping has its final protection: the parent-death
    /// signal (unless `lazy`: while memory is filled lazily the process must die with its
    /// launcher, so it keeps SIGKILL), and memory-deny-write-execute, which would forbid the
    /// restorer's own writable-then-executable mappings.
    pub fn plan_final(&self, plan: &mut Plan, lazy: bool) {
        if self.mlock_future != 0 {
            plan.syscall(
                format!(
                    "mlockall {:#x} (mappings made from now on are locked)",
                    self.mlock_future
                ),
                libc::SYS_mlockall,
                [u64::from(self.mlock_future), 0, 0, 0, 0, 0],
            );
        }
        if !lazy {
            plan.syscall(
                format!("parent-death signal {}", self.pdeathsig),
                libc::SYS_prctl,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    self.pdeathsig as u64,
                    0,
                    0,
                    0,
                    0,
                ],
            );
        }
        if self.mdwe != 0 {
            plan.syscall(
                format!("memory-deny-write-execute {:#x}", self.mdwe),
                libc::SYS_prctl,
                [PR_SET_MDWE, u64::from(self.mdwe), 0, 0, 0, 0],
            );
        }
    }
}

/// Sets the login uid (audit's `/proc/self/loginuid`) to the image's unless the process has it
/// already (`inherited` from the launcher). The kernel lets a process whose login uid is unset
/// set it, and otherwise only with CAP_AUDIT_CONTROL: where it refuses, the restore fails at
/// this step, naming it. Planned before other threads exist: each thread inherits it.
pub fn plan_loginuid(plan: &mut Plan, image: u32, inherited: u32) {
    if image != inherited {
        plan.write_file(
            format!("login uid {image} (/proc/self/loginuid; yours is {inherited})"),
            "/proc/self/loginuid",
            image.to_string().as_bytes(),
        );
    }
}

/// Whether mlockall(MCL_FUTURE) is in force, which no /proc file says: a one-page mapping made
/// to find out is locked (VmLck grows by its size) if so, and resident at once unless
/// MCL_ONFAULT. Returns the MCL_* flags to set again (0: none).
pub fn mlock_future() -> u32 {
    let locked_kb = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| crate::procfs::field_nums(&s, "VmLck").first().copied())
    };
    let Some(before) = locked_kb() else { return 0 };
    let Some((page, resident)) = crate::sys::probe_page() else {
        return 0;
    };
    let after = locked_kb();
    crate::sys::unmap_probe_page(page);
    match after {
        Some(a) if a == before + 4 => {
            (libc::MCL_FUTURE | if resident { 0 } else { libc::MCL_ONFAULT }) as u32
        }
        _ => 0,
    }
}

/// This process's security module label (AppArmor profile, SELinux context), if any.
pub fn lsm_label() -> Option<String> {
    let raw = std::fs::read("/proc/self/attr/current").ok()?;
    let text = String::from_utf8_lossy(&raw);
    let label = text.trim_end_matches(['\0', '\n']).to_owned();
    (!label.is_empty()).then_some(label)
}

/// The device and inode of this process's root directory.
pub fn root_id() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/").ok().map(|m| (m.dev(), m.ino()))
}

/// This process's core dump filter (/proc/self/coredump_filter, hexadecimal).
pub fn coredump_filter() -> Option<u32> {
    coredump_filter_of("self")
}

fn coredump_filter_of(pid: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/coredump_filter")).ok()?;
    u32::from_str_radix(text.trim(), 16).ok()
}

/// This process's login uid (`u32::MAX` when unset or unknown).
pub fn loginuid() -> u32 {
    std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// This process's /proc/self/oom_score_adj.
pub fn oom_score_adj() -> i32 {
    oom_score_adj_of("self")
}

fn oom_score_adj_of(pid: &str) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What rules out a checkpoint of the process as such: a working directory in /proc (it could
/// not be entered again), threads in other cgroups. (Children: see [`super::children`].)
pub(crate) fn refusals() -> Vec<String> {
    let mut why = Vec::new();
    // Dumpable only by root (fs.suid_dumpable=2, after the process changed its credentials): the
    // checkpoint makes a process dumpable for a moment to read its own /proc files, and prctl
    // cannot set this mode back (only 0 or 1): it would stay traceable by its user.
    if crate::sys::prctl_get(libc::PR_GET_DUMPABLE).ok() == Some(2) {
        why.push(
            "the process is dumpable by root only (mode 2: fs.suid_dumpable=2 and it changed its credentials), which the checkpoint could not set back after reading its own /proc files: set fs.suid_dumpable to 0 or 1, or make it dumpable itself (prctl(PR_SET_DUMPABLE, 1)) before the checkpoint".to_owned(),
        );
    }
    // A local descriptor table (modify_ldt): a restored process would have none, and its next
    // load of such a segment would fault. Read back: how many bytes of entries there are.
    let mut ldt = [0u8; 16];
    if crate::sys::modify_ldt_read(&mut ldt) > 0 {
        why.push(
            "the process has a local descriptor table (modify_ldt: Wine's or DOSEMU's 16- and 32-bit code segments), which thaw does not restore".to_owned(),
        );
    }
    if let Ok(cwd) = std::fs::read_link("/proc/self/cwd") {
        let cwd = cwd.to_string_lossy();
        // A deleted one is made again at restore; one under a process's /proc directory cannot
        // be.
        if cwd.starts_with("/proc/") {
            why.push(format!(
                "the working directory {cwd} is in /proc: it could not be entered again at restore"
            ));
        }
    }
    // Threads in other cgroups than the process's (cgroup v2 threaded mode) would come back in
    // the launcher's cgroup, all together.
    let cgroup = |t: &str| std::fs::read_to_string(format!("/proc/self/task/{t}/cgroup"));
    let me = crate::sys::getpid().to_string();
    if let Ok(mine) = cgroup(&me) {
        for tid in crate::procfs::own_tasks() {
            if let Ok(theirs) = cgroup(&tid) {
                // An exiting thread leaves its cgroups before it is gone (PF_EXITING, set
                // first, is read after): it is not in the image either way.
                let exiting = || tid.parse().is_ok_and(crate::sys::task_exiting);
                if theirs != mine && !exiting() {
                    why.push(format!(
                        "thread {tid} is in cgroup {} while the process is in {}: threads of one process are restored in one cgroup",
                        theirs.trim(),
                        mine.trim()
                    ));
                }
            }
        }
    }
    why
}
