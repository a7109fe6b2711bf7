//! pidfds (`pidfd_open`) of the process itself or of one of its threads (`PIDFD_THREAD`): the
//! restored process has the same PID and TIDs, so the restorer opens them again once every
//! thread exists. A pidfd of a process that has exited and been reaped (a child the program
//! waited for, its pidfd kept) is made again by the launcher as a pidfd of a process that has
//! exited and been reaped, the same way, and its pidfds share one inode again (pidfs). A pidfd of
//! another live process is refused by name: that process is not restored.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// What a pidfd refers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pidfd {
    /// The process's PID, or the thread's TID with `thread`.
    pub pid: i32,
    /// PIDFD_THREAD: the pidfd refers to one thread.
    pub thread: bool,
    /// The target had exited and been reaped (`pid` is -1).
    pub dead: Option<Dead>,
}

/// A pidfd of a process that had exited and been reaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dead {
    /// Its pidfs inode: pidfds of one process share it.
    pub ino: u64,
    /// How it ended as PIDFD_GET_INFO tells (a wait status), where the kernel keeps that.
    pub status: Option<i32>,
}

/// PIDFD_THREAD is O_EXCL.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// A pidfd's target from its fdinfo; `Err` says why it is refused.
pub(crate) fn classify(fd: i32, info: &str, flags: u32) -> Result<Pidfd, String> {
    let pid: i32 = crate::procfs::field(info, "Pid")
        .and_then(|v| v.parse().ok())
        .ok_or("cannot read the pidfd's target")?;
    if pid < 0 {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map_err(|e| format!("cannot stat the pidfd: {e}"))?
            .ino();
        return Ok(Pidfd {
            pid: -1,
            thread: flags & PIDFD_THREAD != 0,
            dead: Some(Dead {
                ino,
                status: exit_status(fd),
            }),
        });
    }
    let own = pid == crate::sys::getpid()
        || (pid > 0 && std::path::Path::new(&format!("/proc/self/task/{pid}")).exists());
    // A child that ended and is not waited for yet: made again as a zombie by the restore (see
    // super::children), and its pidfd opened again after it.
    let zombie_child = pid > 0 && !own && flags & PIDFD_THREAD == 0 && {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').is_some_and(|(_, rest)| {
            let mut f = rest.split_whitespace();
            f.next() == Some("Z")
                && f.next().and_then(|p| p.parse::<i32>().ok()) == Some(crate::sys::getpid())
        })
    };
    if !own && !zombie_child {
        return Err(if pid < 0 {
            "a pidfd of a process that has exited".to_owned()
        } else if pid == 0 {
            "a pidfd of a process outside this PID namespace".to_owned()
        } else {
            format!("a pidfd of process {pid}, which is not restored with this one (pidfds of the process itself, its threads and its children that ended and are not waited for yet are)")
        });
    }
    Ok(Pidfd {
        pid,
        thread: flags & PIDFD_THREAD != 0,
        dead: None,
    })
}

/// PIDFD_GET_INFO's exit status of a pidfd's process, where the kernel kept it (Linux 6.15+).
fn exit_status(fd: i32) -> Option<i32> {
    // struct pidfd_info, its first version: mask, cgroupid, eleven ids, exit_code.
    const PIDFD_GET_INFO: u64 = 0xC040_FF0B; // _IOWR(0xFF, 11, 64 bytes)
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    let mut info = [0u64; 8];
    info[0] = PIDFD_INFO_EXIT;
    let r = crate::sys::syscall6(
        libc::SYS_ioctl,
        [fd as u64, PIDFD_GET_INFO, info.as_mut_ptr() as u64, 0, 0, 0],
    );
    (r == 0 && info[0] & PIDFD_INFO_EXIT != 0).then(|| (info[7] >> 32) as u32 as i32)
}

/// Makes pidfds of processes that have exited and been reaped, for a restore: one child of the
/// launcher's per process of the first life, ended as that one ended, kept a zombie until every
/// pidfd of it is open (so that they share its inode), then reaped ([`DeadPidfds::reap`]).
#[derive(Debug, Default)]
pub struct DeadPidfds {
    /// First life's inode -> the child standing in for it.
    made: BTreeMap<u64, i32>,
}

impl DeadPidfds {
    /// A pidfd (with `flags`: PIDFD_THREAD, O_NONBLOCK) of the stand-in for `d`.
    pub fn open(&mut self, d: &Dead, flags: u32) -> std::io::Result<OwnedFd> {
        let pid = match self.made.get(&d.ino) {
            Some(&pid) => pid,
            None => {
                let pid = ended_child(d.status)?;
                self.made.insert(d.ino, pid);
                pid
            }
        };
        let fd = crate::sys::syscall6(
            libc::SYS_pidfd_open,
            [
                pid as u64,
                u64::from(flags & (PIDFD_THREAD | libc::O_NONBLOCK as u32)),
                0,
                0,
                0,
                0,
            ],
        );
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd as i32));
        }
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Reaps the stand-ins: their pidfds now refer to processes that have exited and been reaped.
    pub fn reap(&mut self) {
        for (_, pid) in std::mem::take(&mut self.made) {
            crate::sys::reap(pid);
        }
    }
}

impl Drop for DeadPidfds {
    fn drop(&mut self) {
        self.reap();
    }
}

/// A child that has ended as `status` says (exit code or signal; exit 0 when unknown), not
/// reaped yet.
fn ended_child(status: Option<i32>) -> std::io::Result<i32> {
    let status = status.unwrap_or(0);
    let pid = crate::sys::raw_fork();
    if pid == 0 {
        // The child: system calls only (the parent may have other threads).
        let sig = status & 0x7f;
        if sig != 0 {
            // No core file of ours for a signal that dumps core by default.
            crate::sys::syscall6(
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            );
            let dfl = crate::sys::KernelSigaction::default();
            let _ = crate::sys::rt_sigaction(sig, Some(&dfl), None);
            let _ = crate::sys::sigprocmask(libc::SIG_UNBLOCK, Some(1u64 << (sig - 1)));
            let _ = crate::sys::tgkill_self(crate::sys::gettid(), sig);
        }
        crate::sys::exit_group((status >> 8) & 0xff);
    }
    if pid < 0 {
        return Err(std::io::Error::from_raw_os_error(-pid as i32));
    }
    let pid = pid as i32;
    // Ended, and left unreaped (WNOWAIT) until its pidfds are open.
    crate::sys::wait_ended_unreaped(pid)?;
    Ok(pid)
}

impl Pidfd {
    /// Opens it again at number `fd`, once every thread of the process exists (not a dead one's:
    /// the launcher makes those, see [`DeadPidfds`]).
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
        plan.cloexec_as(fd, cloexec);
    }
}
