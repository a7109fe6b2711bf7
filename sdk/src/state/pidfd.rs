//! pidfds (`pidfd_open`) of the process itself or of one of its threads (`PIDFD_THREAD`): the
//! restored process has the same PID and TIDs, so the restorer opens them again once every
//! thread exists. A pidfd of another process is refused by name: that process is not restored.

use serde::{Deserialize, Serialize};

/// What a pidfd refers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pidfd {
    /// The process's PID, or the thread's TID with `thread`.
    pub pid: i32,
    /// PIDFD_THREAD: the pidfd refers to one thread.
    pub thread: bool,
}

/// PIDFD_THREAD is O_EXCL.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// A pidfd's target from its fdinfo; `Err` says why it is refused.
pub(crate) fn classify(info: &str, flags: u32) -> Result<Pidfd, String> {
    let pid: i32 = crate::procfs::field(info, "Pid")
        .and_then(|v| v.parse().ok())
        .ok_or("cannot read the pidfd's target")?;
    let own = pid == crate::sys::getpid()
        || (pid > 0 && std::path::Path::new(&format!("/proc/self/task/{pid}")).exists());
    if !own {
        return Err(if pid < 0 {
            "a pidfd of a process that has exited".to_owned()
        } else if pid == 0 {
            "a pidfd of a process outside this PID namespace".to_owned()
        } else {
            format!("a pidfd of process {pid}, which is not restored with this one (pidfds of the process itself and its threads are)")
        });
    }
    Ok(Pidfd {
        pid,
        thread: flags & PIDFD_THREAD != 0,
    })
}

impl Pidfd {
    /// Opens it again at number `fd`, once every thread of the process exists.
    pub fn plan_restore(
        &self,
        plan: &mut crate::restore::Plan,
        fd: i32,
        flags: u32,
        cloexec: bool,
    ) {
        let open_flags = flags & (PIDFD_THREAD | libc::O_NONBLOCK as u32);
        plan.syscall_fd(
            format!(
                "fd {fd}: pidfd of {} {}",
                if self.thread { "thread" } else { "process" },
                self.pid
            ),
            libc::SYS_pidfd_open,
            [self.pid as u64, u64::from(open_flags), 0, 0, 0],
            fd,
        );
        if !cloexec {
            plan.syscall(
                format!("fd {fd}: clear close-on-exec"),
                libc::SYS_fcntl,
                [fd as u64, libc::F_SETFD as u64, 0, 0, 0, 0],
            );
        }
    }
}
