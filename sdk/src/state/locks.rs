//! File locks held at the checkpoint: `flock` and OFD locks belong to an open file description
//! and are taken again by the launcher on the reopened description before the process exists;
//! POSIX record locks belong to the process and are taken by the restorer (`F_SETLK`) once every
//! descriptor has its number. A conflicting lock held by someone else by then fails the restore,
//! naming the lock. Leases (F_SETLEASE) belong to the description too and are taken again on it
//! by the launcher; a lease being broken, and other kinds, are refused at checkpoint.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Flock,
    Posix,
    Ofd,
    Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub kind: LockKind,
    pub write: bool,
    /// Byte range (record locks); `len` 0 means to the end of the file.
    pub start: u64,
    pub len: u64,
}

impl std::fmt::Display for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            LockKind::Flock => "flock",
            LockKind::Posix => "POSIX",
            LockKind::Ofd => "OFD",
            LockKind::Lease => "lease",
        };
        let mode = if self.write { "write" } else { "read" };
        match self.kind {
            LockKind::Flock => write!(f, "{kind} {mode} lock"),
            LockKind::Lease => write!(f, "{mode} {kind}"),
            _ if self.len == 0 => write!(f, "{kind} {mode} lock on bytes {}..EOF", self.start),
            _ => write!(
                f,
                "{kind} {mode} lock on bytes {}..{}",
                self.start,
                self.start.saturating_add(self.len)
            ),
        }
    }
}

/// Where SQLite's unix VFS takes a database's shared (reader's) lock: `SHARED_FIRST`, two bytes
/// past `PENDING_BYTE` (2^30).
const SQLITE_SHARED_FIRST: u64 = 0x4000_0002;

/// Which regular files the image stamps with their size and modification time (see
/// `FdEntry::locked_stamp`), to be found unchanged at restore: every file the process held a lock
/// on, a reader's too (SQLite trusts the pages it cached while it holds a shared lock). Not for
/// read locks alone on a file mapped shared (its contents change under anyone's lock: SQLite's
/// `-shm` WAL index, LMDB's lock file) unless they are SQLite's shared lock (a read transaction
/// on a database it maps, `PRAGMA mmap_size`), nor on a database in WAL mode (its `-shm` mapped
/// shared): every connection holds one as long as it is open, and checks what it cached against
/// that index at each read — except inside a transaction, whose snapshot (the database and its
/// `-wal`) it trusts.
pub(crate) struct Stamped {
    /// Files mapped shared, by path.
    shared: Vec<String>,
    /// Databases in WAL mode inside a transaction: the process holds a POSIX lock on one of
    /// the `-shm` index's read marks or its write lock (bytes 120-127; byte 128, held for as
    /// long as a connection is open, is not one).
    in_wal_transaction: Vec<String>,
}

impl Stamped {
    pub(crate) fn new(entries: &[super::files::FdEntry], memory: &[super::memory::Vma]) -> Self {
        use super::files::FdKind;
        let shared = memory
            .iter()
            .filter(|v| v.map_flags & libc::MAP_SHARED as u32 != 0)
            .filter_map(|v| match &v.backing {
                super::memory::Backing::File { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let in_wal_transaction = entries
            .iter()
            .filter_map(|e| match &e.kind {
                FdKind::Regular { path, .. }
                    if e.locks.iter().any(|l| {
                        l.kind == LockKind::Posix
                            && l.start < 128
                            && (l.len == 0 || l.start + l.len > 120)
                    }) =>
                {
                    path.strip_suffix("-shm").map(str::to_owned)
                }
                _ => None,
            })
            .collect();
        Stamped {
            shared,
            in_wal_transaction,
        }
    }

    /// Whether `e`'s file is stamped.
    pub(crate) fn wants(&self, e: &super::files::FdEntry) -> bool {
        let super::files::FdKind::Regular { path, .. } = &e.kind else {
            return false;
        };
        let mapped_shared = |p: &str| self.shared.iter().any(|s| s == p);
        let wal = mapped_shared(&format!("{path}-shm"));
        let sqlite_shared = e.locks.iter().any(|l| l.start == SQLITE_SHARED_FIRST);
        let locked = !e.locks.is_empty()
            && (e.locks.iter().any(|l| l.write)
                || (!wal && (!mapped_shared(path) || sqlite_shared)));
        let snapshot = self
            .in_wal_transaction
            .iter()
            .any(|db| path == db || path.strip_suffix("-wal") == Some(db.as_str()));
        locked || snapshot
    }
}

/// The locks of one descriptor from its fdinfo `lock:` lines; `Err` names one thaw does not
/// restore.
pub(crate) fn parse(fdinfo: &str) -> Result<Vec<Lock>, String> {
    let mut out = Vec::new();
    for l in fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")) {
        // "1: POSIX  ADVISORY  WRITE 1234 fe:00:567 0 EOF"
        let w: Vec<&str> = l.split_whitespace().collect();
        let kind = match w.get(1).copied() {
            Some("FLOCK") => LockKind::Flock,
            Some("POSIX") => LockKind::Posix,
            Some("OFDLCK") => LockKind::Ofd,
            Some("LEASE") if w.get(2) == Some(&"ACTIVE") => LockKind::Lease,
            other => {
                return Err(format!(
                    "holds a {} lock (not restored)",
                    other.unwrap_or("?")
                ))
            }
        };
        if kind != LockKind::Lease && w.get(2) != Some(&"ADVISORY") {
            return Err(format!("holds a {} lock (not restored)", w[1..].join(" ")));
        }
        let write = match w.get(3).copied() {
            Some("WRITE") => true,
            Some("READ") => false,
            _ => return Err(format!("holds a lock of unknown mode ({})", w.join(" "))),
        };
        let start: u64 = w.get(6).and_then(|v| v.parse().ok()).unwrap_or(0);
        let len = match w.get(7).copied() {
            Some("EOF") | None => 0,
            Some(end) => end.parse::<u64>().map_or(0, |e| e + 1 - start),
        };
        out.push(Lock {
            kind,
            write,
            start,
            len,
        });
    }
    Ok(out)
}

/// The files (inode numbers) this process holds POSIX record locks on, when a checkpoint looks.
///
/// A POSIX lock ends when its process closes any descriptor of the file, whichever took the
/// lock. The checkpoint opens descriptors of the process's files of its own (the witness's
/// duplicates, descriptors received from queued messages) and must never close one of such a
/// file: that would silently unlock the running process (a database's lock gone). Those stay
/// open for the process's life instead ([`keep`]), and later checkpoints leave them out of the
/// descriptor table and use them again.
#[derive(Debug, Default)]
pub(crate) struct OwnLocks(Vec<(u64, u64)>);

/// Descriptors kept open (see [`OwnLocks`]), with the inode each named then and whether it is
/// a description of the checkpoint's own (opened by path) rather than a duplicate.
static KEPT: Mutex<Vec<(i32, u64, bool)>> = Mutex::new(Vec::new());

impl OwnLocks {
    /// (device, inode) of each, from the fdinfo of the process's descriptors: a POSIX lock lasts
    /// only while a descriptor of the description it was taken through is open here (closing
    /// any descriptor of the file ends it), and that descriptor's fdinfo shows it. (Not from
    /// /proc/locks, whose first read in a while waits for an RCU grace period, 6 ms here, with
    /// every lock of the system behind it.) The device is the superblock's, which fstat does not
    /// give for every regular file (btrfs subvolumes, overlayfs): see [`Self::covers`].
    pub(crate) fn read() -> OwnLocks {
        let mut own: Vec<(u64, u64)> = crate::sys::list_dir("/proc/self/fd")
            .unwrap_or_default()
            .iter()
            .filter_map(|n| std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).ok())
            .flat_map(|info| {
                info.lines()
                    .filter_map(|l| l.strip_prefix("lock:"))
                    .filter_map(parse_held)
                    .filter(|h| h.posix)
                    .map(|h| (h.dev, h.ino))
                    .collect::<Vec<_>>()
            })
            .collect();
        own.sort_unstable();
        own.dedup();
        OwnLocks(own)
    }

    /// Closes the descriptors earlier checkpoints kept for locks the process holds no more (it
    /// unlocked or closed the file since): a file deleted since frees its space.
    pub(crate) fn prune_kept(&self) {
        let mut k = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        k.retain(|&(fd, ino, _)| {
            let named = crate::sys::fstat_ino(fd) == Some(ino);
            if named && !self.covers(fd) {
                crate::sys::close_raw(fd);
                return false;
            }
            named
        });
    }

    /// Whether closing `fd` would end a POSIX lock of the process: same device and inode; or,
    /// for a regular file (whose device fstat may give otherwise), same inode. (A namesake on
    /// another filesystem is kept for nothing then, harmless for a file; pipes and sockets, whose
    /// ends a kept descriptor would hold open, need both to match.)
    pub(crate) fn covers(&self, fd: i32) -> bool {
        if self.0.is_empty() {
            return false;
        }
        crate::sys::fstat_id(fd).is_some_and(|(dev, ino, mode)| {
            let regular = mode & libc::S_IFMT == libc::S_IFREG;
            self.0
                .iter()
                .any(|&(d, i)| i == ino && (d == dev || regular))
        })
    }

    /// Closes `fd`, or keeps it if that would end a lock.
    pub(crate) fn release(&self, fd: OwnedFd) {
        self.release_raw(fd.into_raw_fd(), false);
    }

    /// [`Self::release`] of each of `fds` against the process's locks as they are now (one
    /// taken while the checkpoint ran, through a descriptor of the same file, would end with the
    /// close); reads them only where there is something to release.
    pub(crate) fn release_now(fds: impl IntoIterator<Item = OwnedFd>) {
        let mut fds = fds.into_iter().peekable();
        if fds.peek().is_some() {
            let now = OwnLocks::read();
            fds.for_each(|f| now.release(f));
        }
    }

    /// [`Self::release`] of a raw descriptor (`private`: see [`Opened`]).
    pub(crate) fn release_raw(&self, fd: i32, private: bool) {
        if self.covers(fd) {
            keep(fd, private);
        } else {
            // (Kept before, and used again by this checkpoint: not any more.)
            KEPT.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|k| k.0 != fd);
            crate::sys::close_raw(fd);
        }
    }
}

/// A description of one of the process's files that the checkpoint opened itself (by path):
/// closed when dropped, or kept if that would end one of the process's POSIX locks (see
/// [`OwnLocks`]), and then used again by the next checkpoint ([`Opened::kept_for`]).
#[derive(Debug)]
pub(crate) struct Opened(Option<OwnedFd>);

impl Opened {
    pub(crate) fn new(fd: OwnedFd) -> Opened {
        Opened(Some(fd))
    }

    /// A readable description kept by an earlier checkpoint of the file `fd` (a descriptor of
    /// the process's) names, if there is one.
    pub(crate) fn kept_for(fd: i32) -> Option<Opened> {
        let ino = crate::sys::fstat_ino(fd)?;
        let readable = |f: i32| {
            crate::sys::fcntl(f, libc::F_GETFL, 0)
                .is_ok_and(|fl| fl as i32 & libc::O_ACCMODE != libc::O_WRONLY)
        };
        let k = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        let &(fd, _, _) = k.iter().find(|&&(f, i, private)| {
            private && i == ino && crate::sys::fstat_ino(f) == Some(i) && readable(f)
        })?;
        // SAFETY: a kept descriptor is the checkpoint's alone; this owner hands it back to
        // `release_raw` when dropped, which keeps it again or closes and forgets it.
        Some(Opened(Some(unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        })))
    }
}

impl AsRawFd for Opened {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            OwnLocks::read().release_raw(fd.into_raw_fd(), true);
        }
    }
}

/// Leaves `fd` open for good (see [`OwnLocks`]); `private`: see [`Opened`].
pub(crate) fn keep(fd: i32, private: bool) {
    if let Some(ino) = crate::sys::fstat_ino(fd) {
        let mut k = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if !k.iter().any(|&(f, _, _)| f == fd) {
            k.push((fd, ino, private));
        }
    }
}

/// The descriptors kept by earlier checkpoints that still name the file they named (the
/// process may have closed one and got its number again for another file).
pub(crate) fn kept() -> Vec<i32> {
    let mut k = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    k.retain(|&(fd, ino, _)| crate::sys::fstat_ino(fd) == Some(ino));
    k.iter().map(|&(fd, _, _)| fd).collect()
}

/// A kept descriptor of `fd`'s open file description, if there is one.
pub(crate) fn kept_like(fd: i32) -> Option<i32> {
    kept()
        .into_iter()
        .find(|&k| crate::sys::same_description(k, fd) == Some(true))
}

/// In a restored process: what the first life kept is not there.
pub(crate) fn forget_kept() {
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// A lock /proc/locks shows held (waiters left out).
struct Held {
    posix: bool,
    /// As /proc/locks shows it (in the reader's PID namespace).
    pid: String,
    dev: u64,
    ino: u64,
}

/// /proc/locks: "1: POSIX  ADVISORY  WRITE 1234 fe:00:567 0 EOF" (a waiter: "1: -> POSIX …").
fn held_locks() -> Vec<Held> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines().filter_map(parse_held).collect()
}

/// One held lock's line as /proc/locks and fdinfo (after "lock:") show it; `None` for a waiter.
fn parse_held(l: &str) -> Option<Held> {
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.get(1) == Some(&"->") {
        return None;
    }
    let mut id = w.get(5)?.split(':');
    let major = u32::from_str_radix(id.next()?, 16).ok()?;
    let minor = u32::from_str_radix(id.next()?, 16).ok()?;
    Some(Held {
        posix: w[1] == "POSIX",
        pid: w.get(4)?.to_string(),
        dev: libc::makedev(major, minor),
        ino: id.next()?.parse().ok()?,
    })
}

/// " (PID 123, bash)": the processes /proc/locks names as holding locks on `fd`'s file (by
/// inode number), or nothing.
fn holders(fd: i32) -> String {
    let Some(ino) = crate::sys::fstat_ino(fd) else {
        return String::new();
    };
    let me = std::process::id().to_string();
    let mut pids: Vec<String> = held_locks()
        .into_iter()
        .filter(|h| h.ino == ino && h.pid != me)
        .map(|h| h.pid)
        .collect();
    pids.dedup();
    let named: Vec<String> = pids
        .iter()
        .take(3)
        .map(|pid| {
            if pid == "-1" {
                // /proc/locks names no process for an OFD lock.
                return "an open file description's lock (OFD), whose holder /proc/locks does not name: see lslocks or fuser".to_owned();
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("PID {pid}, {}", comm.trim())
        })
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" ({})", named.join("; "))
    }
}

/// `struct flock` on x86_64: type, whence, start, len, pid.
fn flock_struct(l: &Lock) -> [u64; 4] {
    let ty = if l.write {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as u64;
    [ty | ((libc::SEEK_SET as u64) << 16), l.start, l.len, 0]
}

/// Takes the description's own locks (flock, OFD) on `fd`, the launcher's copy of it.
pub fn take_on_description(fd: &impl AsRawFd, number: i32, locks: &[Lock]) -> Result<(), String> {
    for l in locks {
        let r = match l.kind {
            LockKind::Flock => crate::sys::flock_nb(fd.as_raw_fd(), l.write),
            LockKind::Ofd => {
                crate::sys::fcntl_lock(fd.as_raw_fd(), libc::F_OFD_SETLK, &flock_struct(l))
            }
            LockKind::Lease => crate::sys::fcntl(
                fd.as_raw_fd(),
                libc::F_SETLEASE,
                (if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                }) as u64,
            )
            .map(drop),
            // Taken by the process itself, late (see files.rs); checked here so that a conflict
            // is refused by name instead of ending the process after its error pipe is closed.
            LockKind::Posix => {
                let mut probe = flock_struct(l);
                crate::sys::fcntl_getlk(fd.as_raw_fd(), &mut probe).and_then(|()| {
                    if probe[0] & 0xffff == libc::F_UNLCK as u64 {
                        Ok(())
                    } else {
                        Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
                    }
                })
            }
        };
        r.map_err(|e| {
            // The file by name: what the caller can look up (lslocks, fuser).
            let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                let who = holders(fd.as_raw_fd());
                format!("fd {number}{path}: cannot take its {l} again: another process holds a conflicting lock{who}: end it or have it unlock first (a lock on a descriptor inherited from whatever started the process, a shell's `exec 9>file; flock 9`, is held by that too)")
            } else {
                format!("fd {number}{path}: cannot take its {l} again: {e}")
            }
        })?;
    }
    Ok(())
}

/// The restorer's steps for the process's own (POSIX) locks on descriptor `fd`, and for its
/// flocks, which the launcher took on the description: /proc shows a flock's owner as the
/// process that took it, so the process takes it again as its own (released and taken at once,
/// without waiting: a conflict in between ends the restore, naming the lock).
pub fn plan_restore(plan: &mut crate::restore::Plan, fd: i32, locks: &[Lock]) {
    for l in locks.iter().filter(|l| l.kind == LockKind::Flock) {
        plan.syscall(
            format!("release the {l} on fd {fd} to take it as the process's own"),
            libc::SYS_flock,
            [fd as u64, libc::LOCK_UN as u64, 0, 0, 0, 0],
        );
        let mode = if l.write {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        } | libc::LOCK_NB;
        plan.syscall(
            format!("take the {l} on fd {fd} as the process's own"),
            libc::SYS_flock,
            [fd as u64, mode as u64, 0, 0, 0, 0],
        );
    }
    for l in locks.iter().filter(|l| l.kind == LockKind::Posix) {
        let s = plan.words(&flock_struct(l));
        plan.syscall(
            format!("take the {l} on fd {fd}"),
            libc::SYS_fcntl,
            [fd as u64, libc::F_SETLK as u64, s, 0, 0, 0],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lock_lines() {
        let info = "pos:\t0\nlock:\t1: POSIX  ADVISORY  READ 2141 fe:00:10 100 104\nlock:\t2: FLOCK  ADVISORY  WRITE 7842 fe:00:1 0 EOF\nlock:\t3: OFDLCK ADVISORY  READ -1 fe:00:10 10 29\n";
        let l = parse(info).unwrap();
        assert_eq!(
            l[0],
            Lock {
                kind: LockKind::Posix,
                write: false,
                start: 100,
                len: 5
            }
        );
        assert_eq!(
            l[1],
            Lock {
                kind: LockKind::Flock,
                write: true,
                start: 0,
                len: 0
            }
        );
        assert_eq!(
            l[2],
            Lock {
                kind: LockKind::Ofd,
                write: false,
                start: 10,
                len: 20
            }
        );
        assert_eq!(
            parse("lock:\t1: LEASE  ACTIVE    READ 1 fe:00:1 0 EOF\n").unwrap()[0].kind,
            LockKind::Lease
        );
        assert!(parse("lock:\t1: LEASE  BREAKING  READ 1 fe:00:1 0 EOF\n").is_err());
    }
}
