//! Per-process identity and environment: PID, names, cwd, umask, personality.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Thread-group leader's name (`/proc/<pid>/comm`).
    pub comm: String,
    pub cwd: String,
    pub umask: u32,
    pub personality: u32,
    pub dumpable: u32,
    /// Address of the SDK's restore cell, which the restorer fills so that the checkpointing
    /// thread learns it was restored and where its new arguments are.
    pub restore_cell: u64,
    /// The thread that called checkpoint (any thread may). It resumes last, once every other
    /// thread has left the restorer region, because it is the one that unmaps that region.
    pub checkpoint_tid: i32,
}

use crate::procfs;
use crate::restore::Plan;

impl Process {
    /// Reads the frozen child's view; `pid` is the checkpointed process's own.
    pub(crate) fn dump(
        child: i32,
        pid: i32,
        checkpoint_tid: i32,
        restore_cell: u64,
    ) -> std::io::Result<Process> {
        let stat = procfs::stat_fields(child)?;
        let status = procfs::read(child, "status")?;
        let num = |i: usize| stat.get(i).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
        let cwd = std::fs::read_link(format!("/proc/{child}/cwd"))?;
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
            comm: procfs::read(child, "comm")?
                .trim_end_matches('\n')
                .to_owned(),
            cwd: cwd.to_string_lossy().into_owned(),
            umask: procfs::field(&status, "Umask")
                .and_then(|u| u32::from_str_radix(u, 8).ok())
                .unwrap_or(0o022),
            personality,
            dumpable: crate::sys::prctl_get(libc::PR_GET_DUMPABLE).unwrap_or(1) as u32,
            restore_cell,
            checkpoint_tid,
        })
    }

    /// umask, working directory, personality.
    pub fn plan_restore(&self, plan: &mut Plan) {
        plan.syscall(
            format!("umask {:03o}", self.umask),
            libc::SYS_umask,
            [u64::from(self.umask), 0, 0, 0, 0, 0],
        );
        let cwd = plan.cstr(&self.cwd);
        plan.syscall(
            format!("chdir {}", self.cwd),
            libc::SYS_chdir,
            [cwd, 0, 0, 0, 0, 0],
        );
        plan.syscall(
            format!("personality {:#x}", self.personality),
            libc::SYS_personality,
            [u64::from(self.personality), 0, 0, 0, 0, 0],
        );
    }
}
