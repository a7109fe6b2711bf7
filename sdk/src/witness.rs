//! The descriptor table is listed (and each descriptor classified) before the threads stop, so
//! another thread may close, replace or open a descriptor between that scan and the snapshot;
//! the image would then hold a descriptor as the scan saw it, not as the process had it. The
//! witness holds a duplicate of each scanned descriptor, and once the snapshot exists compares
//! the snapshot's table with them (kcmp: one open file description, not merely the same file).
//! What the scan reads of a description that may change in place (its flags; a socket's name,
//! peer and listening state; a file's name and locks) is looked at once more while every thread
//! is stopped (see `sys::fd_look`, `sys::fd_file_look`). A difference makes the checkpoint start
//! again; O_NONBLOCK and FD_CLOEXEC, which runtimes flip around their calls, are read then and
//! taken as they are.
//!
//! A duplicate of a file the process holds a POSIX lock on is never closed: closing it would
//! end the lock ([`crate::state::locks::OwnLocks`]). It stays open, and the next checkpoint
//! holds it again instead of making another.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::locks::OwnLocks;
use crate::sys;

#[derive(Debug, Default)]
pub(crate) struct FdWitness {
    /// (descriptor number, our duplicate of it).
    held: Vec<(i32, OwnedFd)>,
    /// (descriptor number, a descriptor an earlier checkpoint kept for it: see
    /// [`crate::state::locks::OwnLocks`]), which stays kept: not ours to close.
    borrowed: Vec<(i32, i32)>,
    /// (descriptor number, `sys::fd_look` before the scan looked at it).
    looks: Vec<(i32, u64)>,
    /// (descriptor number, `sys::file_look_of` the name and fdinfo the scan read), for the
    /// descriptors the scan describes but those whose fdinfo is costly (see `state::files`).
    file_looks: Vec<(i32, u64)>,
    /// The process's soft limit of open files, where the checkpoint raised it to the hard one
    /// for its own descriptors: lowered again when the witness goes, and what the image keeps.
    raised_from: Option<u64>,
}

impl Drop for FdWitness {
    fn drop(&mut self) {
        OwnLocks::release_now(std::mem::take(&mut self.held).into_iter().map(|(_, d)| d));
        // Only ever lowered (a restored process may have had it lowered further, to its
        // caller's).
        if let Some(soft) = self.raised_from {
            if let Ok((cur, max)) = sys::prlimit(0, libc::RLIMIT_NOFILE) {
                if cur > soft {
                    let _ = sys::set_nofile_soft(soft, max);
                }
            }
        }
    }
}

/// Descriptors the checkpoint opens besides the duplicates (/proc files, the image, pipes for
/// copies, the snapshot's): room kept for them under the limit.
const OWN_ROOM: u64 = 256;

impl FdWitness {
    /// Duplicates each of `fds`, just listed and not yet looked at: what the scan then reads
    /// of a descriptor is of the description held here, or the snapshot differs from it.
    pub(crate) fn hold(fds: &[i32]) -> std::io::Result<FdWitness> {
        // Above every listed number: a duplicate must never take the number of a descriptor
        // closed meanwhile, where it would pass for it.
        let above = fds.iter().max().map_or(0, |m| m + 1) as u64;
        // A process with a descriptor near its soft limit: the duplicates, and then the
        // checkpoint's own descriptors, go above it, the limit raised to the hard one for the
        // checkpoint (the image keeps the process's own: see `raised_from`).
        let (soft, hard) = sys::prlimit(0, libc::RLIMIT_NOFILE)?;
        let needed = above + fds.len() as u64;
        if needed > hard {
            return Err(std::io::Error::other(format!(
                "the process holds {} descriptors numbered up to {}, and the checkpoint needs as many numbers again above them, past its hard limit of {hard} open files: raise that limit (ulimit -Hn, systemd's LimitNOFILE=) to at least {}",
                fds.len(),
                above.saturating_sub(1),
                needed + OWN_ROOM,
            )));
        }
        let raised_from = (needed + OWN_ROOM > soft).then_some(soft);
        if raised_from.is_some() {
            sys::set_nofile_soft(hard, hard)?;
        }
        // Which descriptors kept by earlier checkpoints the process's locks still need, where
        // there are any (see `locks::kept`); the duplicates made now are released as the locks
        // are when the witness goes.
        let locks = if crate::state::locks::kept().is_empty() {
            OwnLocks::default()
        } else {
            let locks = OwnLocks::read();
            locks.prune_kept();
            locks
        };
        let held = Self::dup_each(fds, above, &locks);
        let (held, borrowed) = match held {
            Ok(h) => h,
            Err(e) => {
                if raised_from.is_some() {
                    let _ = sys::set_nofile_soft(soft, hard);
                }
                return Err(e);
            }
        };
        let looks = held
            .iter()
            .map(|&(fd, _, look)| (fd, look))
            .chain(borrowed.iter().map(|&(fd, _, look)| (fd, look)))
            .collect();
        let held = held.into_iter().map(|(fd, dup, _)| (fd, dup)).collect();
        let borrowed = borrowed.into_iter().map(|(fd, k, _)| (fd, k)).collect();
        Ok(FdWitness {
            held,
            borrowed,
            looks,
            file_looks: Vec::new(),
            raised_from,
        })
    }

    /// The process's own soft limit of open files, where the checkpoint raised it.
    pub(crate) fn nofile_soft(&self) -> Option<u64> {
        self.raised_from
    }

    /// (descriptor, duplicate at `above` or higher, look) of each of `fds` still open; of a
    /// locked file, (descriptor, the duplicate an earlier checkpoint kept, look) instead, where
    /// there is one (a second list: those stay kept). On an error, what was duplicated goes as
    /// the process's locks need.
    #[allow(clippy::type_complexity)]
    fn dup_each(
        fds: &[i32],
        above: u64,
        locks: &OwnLocks,
    ) -> std::io::Result<(Vec<(i32, OwnedFd, u64)>, Vec<(i32, i32, u64)>)> {
        let mut held = Vec::with_capacity(fds.len());
        let mut borrowed = Vec::new();
        for &fd in fds {
            let look = sys::fd_look(fd);
            let kept = locks
                .covers(fd)
                .then(|| crate::state::locks::kept_like(fd))
                .flatten();
            if let Some(k) = kept {
                borrowed.push((fd, k, look));
                continue;
            }
            match sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) {
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                Ok(dup) => held.push((fd, unsafe { OwnedFd::from_raw_fd(dup as i32) }, look)),
                // Closed already (the listing's own directory handle among them): not held, so
                // the scan leaves it out (see `numbers`), and one opened at its number since is
                // found opened in the snapshot.
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
                Err(e) => {
                    OwnLocks::release_now(held.into_iter().map(|(_, d, _)| d));
                    return Err(e);
                }
            }
        }
        Ok((held, borrowed))
    }

    /// (descriptor, our descriptor of its description) for every descriptor held.
    fn pairs(&self) -> impl Iterator<Item = (i32, i32)> + '_ {
        self.held
            .iter()
            .map(|(fd, d)| (*fd, d.as_raw_fd()))
            .chain(self.borrowed.iter().copied())
    }

    /// The listed descriptors held, in the listing's order: the only ones the scan may describe.
    /// One closed before its duplicate was made is not held, and may be open again by the time
    /// the scan reads it (another open at its number) and closed again before the snapshot: the
    /// image would then hold a descriptor the program had closed.
    pub(crate) fn numbers(&self) -> Vec<i32> {
        let mut n: Vec<i32> = self.pairs().map(|(fd, _)| fd).collect();
        n.sort_unstable();
        n
    }

    /// (descriptor, how it looked before the scan), for [`unchanged_now`] at the freeze.
    pub(crate) fn take_looks(&mut self) -> Vec<(i32, u64)> {
        std::mem::take(&mut self.looks)
    }

    /// Notes the name (`link`, as /proc/self/fd showed it) and locks (fdinfo `info`) of file
    /// `fd` as the scan read them: the same texts, so that a lock given up and taken again, or a
    /// file renamed and back, between another look and those reads is not missed.
    pub(crate) fn saw_file(&mut self, fd: i32, link: &[u8], info: &str) {
        self.file_looks
            .push((fd, sys::file_look_of(link, info.as_bytes())));
    }

    /// (descriptor, its name and locks as the scan saw them), for [`unchanged_now`].
    pub(crate) fn take_file_looks(&mut self) -> Vec<(i32, u64)> {
        std::mem::take(&mut self.file_looks)
    }

    /// Our duplicates' numbers: descriptors of the checkpoint's own.
    pub(crate) fn own(&self) -> impl Iterator<Item = i32> + '_ {
        self.pairs().map(|(_, d)| d)
    }

    /// What differs between the scan and `child`'s descriptor table (the snapshot, a fork of
    /// this process), `own` being the checkpoint's own descriptors; `None` when nothing does.
    pub(crate) fn changed(&self, child: i32, own: &[i32]) -> std::io::Result<Option<String>> {
        // Listed with getdents: the C library's opendir allocates, and a checkpoint that exits
        // after saving runs this with the other threads stopped (see crate::alloc).
        let mut table: Vec<i32> = sys::list_dir(&format!("/proc/{child}/fd"))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        table.sort_unstable();
        for (fd, dup) in self.pairs() {
            if table.binary_search(&fd).is_err() {
                return Ok(Some(format!("descriptor {fd} was closed")));
            }
            match sys::same_description_in(dup, child, fd) {
                Some(true) => {}
                Some(false) => return Ok(Some(format!("descriptor {fd} was replaced"))),
                None => {
                    return Err(std::io::Error::other(format!(
                        "cannot compare descriptor {fd} with the snapshot's (kcmp)"
                    )))
                }
            }
        }
        let scanned = |fd: i32| self.pairs().any(|(n, _)| n == fd);
        let mine = |fd: i32| own.contains(&fd) || self.own().any(|d| d == fd);
        Ok(table
            .iter()
            .find(|&&fd| !scanned(fd) && !mine(fd))
            .map(|fd| format!("descriptor {fd} was opened")))
    }

    /// Which listed descriptor of this (live) process has been closed or now holds another
    /// file, if one has: what the scan read of it may be of neither (a socket's options read as
    /// EBADF, a pipe's other end gone between two reads), and the attempt is started again
    /// rather than anything refused on that ground.
    pub(crate) fn closed_or_replaced(&self) -> Option<String> {
        self.pairs()
            .find_map(|(fd, dup)| match sys::same_description(dup, fd) {
                Some(true) => None,
                Some(false) => Some(format!("descriptor {fd} was replaced")),
                None => Some(format!("descriptor {fd} was closed")),
            })
    }

    /// A descriptor of this (live) process opened since the listing at another number than the
    /// listed ones, of a pipe one of them is an end of, if there is one: the other end of a pipe
    /// made meanwhile (a Worker's event loop starting) makes its listed end look like another
    /// process's.
    pub(crate) fn pipe_end_opened_since(&self) -> Option<String> {
        let listed = self.numbers();
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        let pipes: Vec<std::path::PathBuf> = listed
            .iter()
            .filter_map(|&fd| link(fd))
            .filter(|l| l.to_string_lossy().starts_with("pipe:["))
            .collect();
        if pipes.is_empty() {
            return None;
        }
        sys::list_dir("/proc/self/fd")
            .ok()?
            .iter()
            .filter_map(|n| n.parse::<i32>().ok())
            .filter(|fd| listed.binary_search(fd).is_err() && !self.own().any(|d| d == *fd))
            .find(|&fd| link(fd).is_some_and(|l| pipes.contains(&l)))
            .map(|fd| format!("descriptor {fd} was opened (an end of a pipe the process holds)"))
    }

    /// In a restored process the duplicates were never there: their numbers are not ours.
    pub(crate) fn abandon(mut self) {
        std::mem::take(&mut self.held)
            .into_iter()
            .for_each(|(_, d)| std::mem::forget(d));
    }
}

/// Whether each descriptor of `looks` looks as it did before the scan, noting its flags now in
/// `flags` (the same length; see `sys::fd_flags`), and each file of `file_looks` has the name
/// and locks the scan saw. Allocation-free: called by the checkpointing thread while every other
/// thread is stopped.
pub(crate) fn unchanged_now(
    looks: &[(i32, u64)],
    flags: &[AtomicU64],
    file_looks: &[(i32, u64)],
) -> bool {
    looks.iter().zip(flags).all(|(&(fd, look), now)| {
        now.store(sys::fd_flags(fd), Ordering::Relaxed);
        sys::fd_look(fd) == look
    }) && file_looks
        .iter()
        .all(|&(fd, look)| sys::fd_file_look(fd) == look)
}
