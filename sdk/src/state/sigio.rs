//! Signal-driven I/O: a descriptor's O_ASYNC flag, the process or thread its SIGIO/SIGURG go to
//! (F_SETOWN_EX) and the signal it sends (F_SETSIG). These belong to the open file description,
//! which the launcher makes anew, so the restorer sets them again once every thread exists (an
//! owner must exist to be named). An owner outside the process (another process, a process
//! group) is refused by name: it is not restored with this one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalIo {
    /// F_OWNER_TID (0) or F_OWNER_PID (1); `owner` 0: no owner.
    pub owner_type: i32,
    pub owner: i32,
    /// F_GETSIG: 0 for SIGIO.
    pub signal: i32,
    /// O_ASYNC was set.
    pub on: bool,
}

pub(crate) const F_SETSIG: i32 = 10;
pub(crate) const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
pub(crate) const F_GETOWN_EX: i32 = 16;
const F_OWNER_TID: i32 = 0;
const F_OWNER_PID: i32 = 1;
const F_OWNER_PGRP: i32 = 2;

/// What descriptor `fd` (status flags `flags`) has of signal-driven I/O; `Err` says why it is
/// refused.
pub(crate) fn dump(fd: i32, flags: u32) -> Result<Option<SignalIo>, String> {
    let (owner_type, owner) = crate::sys::getown_ex(fd).unwrap_or((F_OWNER_PID, 0));
    let signal = crate::sys::fcntl(fd, F_GETSIG, 0).unwrap_or(0) as i32;
    let on = flags & libc::O_ASYNC as u32 != 0;
    if owner == 0 && signal == 0 && !on {
        return Ok(None);
    }
    if owner != 0 {
        let own = match owner_type {
            F_OWNER_PID => owner == crate::sys::getpid(),
            F_OWNER_TID => std::path::Path::new(&format!("/proc/self/task/{owner}")).exists(),
            _ => false,
        };
        if !own {
            let whom = if owner_type == F_OWNER_PGRP {
                format!("process group {owner}")
            } else {
                format!("process {owner}")
            };
            return Err(format!(
                "its SIGIO/SIGURG go to {whom} (F_SETOWN), which is not restored with this one; only this process or one of its threads can own it"
            ));
        }
    }
    Ok(Some(SignalIo {
        owner_type,
        owner,
        signal,
        on,
    }))
}

/// Status flags F_SETFL changes (O_ASYNC among them).
const SETFL_FLAGS: u32 =
    (libc::O_APPEND | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME | libc::O_NONBLOCK) as u32;

impl SignalIo {
    /// Owner, signal, then O_ASYNC (which starts delivery) on descriptor `fd` with status flags
    /// `flags`.
    pub fn plan_restore(&self, plan: &mut crate::restore::Plan, fd: i32, flags: u32) {
        if self.owner != 0 {
            let owner =
                plan.words(&[(self.owner_type as u32 as u64) | ((self.owner as u32 as u64) << 32)]);
            plan.syscall(
                format!("fd {fd}: SIGIO owner {}", self.owner),
                libc::SYS_fcntl,
                [fd as u64, F_SETOWN_EX as u64, owner, 0, 0, 0],
            );
        }
        if self.signal != 0 {
            plan.syscall(
                format!("fd {fd}: SIGIO signal {}", self.signal),
                libc::SYS_fcntl,
                [fd as u64, F_SETSIG as u64, self.signal as u64, 0, 0, 0],
            );
        }
        if self.on {
            plan.syscall(
                format!("fd {fd}: O_ASYNC"),
                libc::SYS_fcntl,
                [
                    fd as u64,
                    libc::F_SETFL as u64,
                    u64::from(flags & SETFL_FLAGS),
                    0,
                    0,
                    0,
                ],
            );
        }
    }
}
