//! The guardian: while memory is filled lazily, a small process of the launcher's holds a second
//! reference to the restored process's userfaultfd.
//!
//! A launcher that dies (SIGKILL, the OOM killer, a crash) closes its descriptors before its
//! children get their parent-death signal. Were its reference the only one, the kernel would
//! unregister the lazy mappings in that gap, and a thread faulting there would get a zero page
//! and run on it until the SIGKILL landed (`tests/faults.rs` saw it). The guardian sees the
//! launcher end (end of file on their socket), kills the process, waits until it has exited, and
//! only then lets the userfaultfd go: a fault meanwhile waits, it never reads a missing page as
//! zero. When the filling is done, the launcher ends the guardian before closing its own
//! reference, so that no mapping stays registered with nobody serving it.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::exit::{Code, Failure, Result};
use crate::sys;

/// The guardian process, as the launcher holds it; dropping it ends it (SIGKILL, reaped).
#[derive(Debug)]
pub struct Guardian {
    pid: i32,
    sock: OwnedFd,
}

impl Guardian {
    /// Forks the guardian, before the process exists; it waits for [`Self::arm`].
    pub fn spawn() -> Result<Guardian> {
        let failed = |e: std::io::Error| {
            Failure::new(
                Code::RestoreFailed,
                format!("cannot start the guardian of lazy memory: {e}"),
            )
        };
        let (ours, theirs) = sys::socketpair().map_err(failed)?;
        match sys::fork().map_err(failed)? {
            0 => {
                drop(ours);
                guard(theirs)
            }
            pid => Ok(Guardian { pid, sock: ours }),
        }
    }

    /// Hands the guardian the userfaultfd and a pidfd of the restored process. The descriptors
    /// are the guardian's as soon as this returns: a message in flight holds them too.
    pub fn arm(&self, uffd: &OwnedFd, process: &OwnedFd) -> std::io::Result<()> {
        sys::send_with_fds(
            self.sock.as_raw_fd(),
            &[1],
            &[uffd.as_raw_fd(), process.as_raw_fd()],
        )
        .map(drop)
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        sys::kill(self.pid, libc::SIGKILL);
        let _ = sys::wait(self.pid);
    }
}

/// The guardian's life, in the forked child: nothing of the launcher's but the socket, every
/// signal but SIGKILL blocked (a terminal's ^C or hang-up must not end it before the process).
fn guard(sock: OwnedFd) -> ! {
    sys::set_sigmask(u64::MAX);
    let fd = sock.as_raw_fd();
    // A pipe end kept here would keep its reader from seeing end of file.
    if fd > 0 {
        sys::close_range(0, fd as u32 - 1);
    }
    sys::close_range(fd as u32 + 1, u32::MAX);
    let mut byte = [0u8; 1];
    let (_uffd, process) = match sys::recv_with_fds(fd, &mut byte) {
        Ok(Some(p)) if p.fds.len() == 2 => {
            let mut fds = p.fds.into_iter();
            (fds.next(), fds.next().expect("two descriptors"))
        }
        // Ended before the process could fault: nothing to guard.
        _ => sys::exit_now(0),
    };
    loop {
        match sys::wait_readable([fd, process.as_raw_fd()], -1) {
            // The process has exited: the userfaultfd can go.
            Ok([_, true]) => sys::exit_now(0),
            Ok([true, false]) => {
                if sys::read_byte(fd) != Some(0) {
                    continue;
                }
                // End of file: the launcher is gone. The process goes first.
                sys::pidfd_send_signal(&process, libc::SIGKILL);
                while !matches!(sys::wait_readable([process.as_raw_fd()], -1), Ok([true])) {}
                sys::exit_now(0);
            }
            // Nothing yet, or poll failed (it does not, on these descriptors): again.
            _ => {}
        }
    }
}
