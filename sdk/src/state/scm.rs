//! Descriptors in flight: files sent with SCM_RIGHTS in `AF_UNIX` datagram and seqpacket
//! messages that still wait in one of the process's sockets.
//!
//! A peek of such a message passes its descriptors too (the file itself, not a copy). So before
//! the scan of the descriptor table, [`InFlight::receive`] peeks every queued message once and
//! keeps what it receives: the scan then describes those files like any other descriptor, marked
//! in flight ([`super::files::FdEntry::in_flight`]), and each message names its descriptors by
//! those numbers ([`super::sockets::PairEnd::message_fds`]). A file the process also holds (it
//! sent its own pipe end) is one open file description again, as the scan finds with kcmp. At
//! restore they are made with the other descriptors, sent again with their messages
//! ([`super::sockets::Later`]) and closed: the restored process holds them only in its queues.
//!
//! The checkpoint handler walks the queues again while every thread is stopped and compares
//! each descriptor with the one received before (kcmp); a queue that changed in between (a
//! thread received or sent meanwhile) makes the checkpoint start again.
//!
//! A received descriptor of a file the process holds a POSIX lock on is never closed (see
//! [`super::locks::OwnLocks`]).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// At most this many descriptors in flight in all the process's queues together.
pub const MAX_IN_FLIGHT: usize = 1024;

/// What the peek before the scan received: per socket inode, each queued message's length and
/// the numbers its descriptors got. Closes them when dropped.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    held: Vec<OwnedFd>,
    by_socket: BTreeMap<u64, Vec<(u32, Vec<i32>)>>,
    /// The process's POSIX locks (read once something is received).
    locked: Option<super::locks::OwnLocks>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        super::locks::OwnLocks::release_now(std::mem::take(&mut self.held));
    }
}

impl InFlight {
    /// Peeks every message queued in the process's `AF_UNIX` datagram and seqpacket sockets,
    /// keeping the descriptors they carry. A queue that cannot be walked is left to the
    /// checkpoint handler, which names why.
    pub(crate) fn receive() -> Result<InFlight, String> {
        let mut out = InFlight::default();
        let mut seen = Vec::new();
        let mut todo: Vec<i32> = crate::sys::list_dir("/proc/self/fd")
            .map_err(|e| format!("cannot list /proc/self/fd: {e}"))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        // Sockets received in flight may carry descriptors in their own queues: walked too.
        while let Some(fd) = todo.pop() {
            let Some(ino) = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .ok()
                .and_then(|t| {
                    t.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
            else {
                continue;
            };
            let domain = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
            let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
            if domain.ok() != Some(libc::AF_UNIX)
                || !matches!(ty, Ok(libc::SOCK_DGRAM | libc::SOCK_SEQPACKET))
                || seen.contains(&ino)
            {
                continue;
            }
            seen.push(ino);
            // The kernel counts the descriptors in flight in a socket's queue: only those
            // queues are walked (a peek marks an empty message, which a second walk with
            // SO_PEEK_OFF then passes over).
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
            let carried = crate::procfs::field(&info, "scm_fds")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if carried == 0 {
                continue;
            }
            let messages = out.walk(fd, ino)?;
            todo.extend(messages.iter().flat_map(|(_, f)| f.iter().copied()));
            if messages.iter().any(|(_, fds)| !fds.is_empty()) {
                out.by_socket.insert(ino, messages);
            }
        }
        Ok(out)
    }

    /// One queue, walked with SO_PEEK_OFF from the start (the application's threads run: no
    /// other option is touched, SO_PASSCRED would name a socket that sends meanwhile). A peek of
    /// 0 bytes without descriptors, an empty message or the end of a seqpacket queue whose peer
    /// has gone, ends it: the checkpoint handler's walk decides (see `capture::note_empty`).
    fn walk(&mut self, fd: i32, ino: u64) -> Result<Vec<(u32, Vec<i32>)>, String> {
        let orig = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
        if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).is_err() {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (sys::inq(fd).max(0) as usize * 2).max(256 << 10)];
        let mut messages = Vec::new();
        let mut failed = None;
        loop {
            let locked = self.locked.get_or_insert_with(super::locks::OwnLocks::read);
            let release = |f: i32| locked.release_raw(f, false);
            let (m, _, other, got) = sys::recv_peek_owned(fd, &mut buf, &release);
            if m.len < 0 {
                break; // EAGAIN: the end (anything else: the handler says why)
            }
            let numbers: Vec<i32> = got.iter().map(|f| f.as_raw_fd()).collect();
            let n = got.len();
            self.held.extend(got);
            if m.len == 0 && n == 0 && !other {
                crate::capture::note_empty(ino);
                break;
            }
            if m.len == 0 {
                failed = Some(format!(
                    "socket:[{ino}]: its queue holds both descriptors in flight and an empty message, which is not restored"
                ));
                break;
            }
            if m.flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0
                || other
                || m.len as usize >= buf.len()
                || messages.len() >= 1024
            {
                break; // refused by the handler, naming why
            }
            if self.held.len() > MAX_IN_FLIGHT {
                failed = Some(format!(
                    "more than {MAX_IN_FLIGHT} descriptors are in flight in queued messages"
                ));
                break;
            }
            messages.push((m.len as u32, numbers));
        }
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, orig);
        match failed {
            Some(why) => Err(why),
            None => Ok(messages),
        }
    }

    /// The descriptors received from socket `ino`'s queue, in order.
    pub(crate) fn of(&self, ino: u64) -> Vec<i32> {
        self.by_socket
            .get(&ino)
            .map(|m| m.iter().flat_map(|(_, f)| f.iter().copied()).collect())
            .unwrap_or_default()
    }

    /// Each descriptor received, by number, with the inode of the socket it waits in.
    pub(crate) fn numbers(&self) -> BTreeMap<i32, u64> {
        self.by_socket
            .iter()
            .flat_map(|(&ino, msgs)| {
                msgs.iter()
                    .flat_map(move |(_, f)| f.iter().map(move |&n| (n, ino)))
            })
            .collect()
    }

    /// The descriptors of the messages queued in socket `ino`, checked against what the
    /// checkpoint handler found there (`lens`, and `counts` descriptors per message): empty when
    /// no message carries any.
    pub(crate) fn message_fds(
        &self,
        ino: u64,
        lens: &[u32],
        counts: &[u32],
    ) -> Result<Vec<Vec<i32>>, String> {
        let before = self.by_socket.get(&ino);
        if before.is_none() && counts.iter().all(|&c| c == 0) {
            return Ok(Vec::new());
        }
        if before.is_none() {
            return Err(
                "a queued message carries descriptors the checkpoint did not find before it stopped the threads (this kernel may not count them in fdinfo's scm_fds); try again"
                    .into(),
            );
        }
        let same = before.is_some_and(|b| {
            b.len() == lens.len()
                && b.iter()
                    .zip(lens.iter().zip(counts))
                    .all(|((l, f), (&l2, &c))| *l == l2 && f.len() == c as usize)
        });
        if !same {
            return Err(
                "its queued messages changed while the checkpoint looked at the descriptors they carry; try again"
                    .into(),
            );
        }
        Ok(before
            .map(|b| b.iter().map(|(_, f)| f.clone()).collect())
            .unwrap_or_default())
    }

    /// The descriptors received from socket `ino`'s queue that must not be closed.
    pub(crate) fn locked_of(&self, ino: u64) -> Vec<i32> {
        let mut fds = self.of(ino);
        fds.retain(|&f| self.locked.as_ref().is_some_and(|l| l.covers(f)));
        fds
    }

    /// In the restored process: the numbers name nothing of the first life's any more.
    pub(crate) fn abandon(mut self) {
        for f in std::mem::take(&mut self.held) {
            std::mem::forget(f);
        }
    }
}
