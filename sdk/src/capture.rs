//! Taking a consistent snapshot while the application keeps running.
//!
//! The checkpointing thread sends itself a dedicated real-time signal. Its handler runs on the
//! thread's stack above a kernel-built signal frame (all registers and the FPU/AVX state), records
//! what the frame does not hold (fs/gs base, robust list, clear_child_tid, brk, signal
//! dispositions, file offsets, pipe contents), and forks with the raw system call. The child is a
//! frozen copy-on-write copy of the whole address space, parked in `pause()`; the parent returns
//! from the handler and the application goes on. The pause is one fork.
//!
//! On restore, the restorer fills [`RESTORE_CELL`] and resumes the thread through `rt_sigreturn`
//! on the saved frame: it returns from the `tgkill` below and finds the cell filled.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{
    compiler_fence, AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
    Ordering,
};
use std::time::{Duration, Instant};

use crate::sys::{self, KernelSigaction};

/// Filled by the restorer: the only way the resumed thread learns it is in its second life.
#[repr(C)]
#[derive(Debug)]
pub struct RestoreCell {
    /// [`RESTORED_MAGIC`] once restored.
    pub magic: AtomicU64,
    /// The launcher's restorer region (to unmap).
    pub region_addr: AtomicU64,
    pub region_len: AtomicU64,
    /// The postcard-encoded [`crate::restore::RestoreArgs`] inside the region.
    pub args_addr: AtomicU64,
    pub args_len: AtomicU64,
    /// The restorer's code page, left mapped when other threads were restored (they leave the
    /// region through it); unmapped at the next checkpoint.
    pub leftover_addr: AtomicU64,
    pub leftover_len: AtomicU64,
    /// How many times this process was restored: the snapshot is forked holding one more than
    /// the first life, so that every thread of a restored process reads it from its first
    /// instruction on (see [`crate::restores`]).
    pub restores: AtomicU64,
}

/// Value of [`RestoreCell::magic`] in a restored process ("THAWREST").
pub const RESTORED_MAGIC: u64 = 0x5453_4552_5741_4854;

pub static RESTORE_CELL: RestoreCell = RestoreCell {
    magic: AtomicU64::new(0),
    region_addr: AtomicU64::new(0),
    region_len: AtomicU64::new(0),
    args_addr: AtomicU64::new(0),
    args_len: AtomicU64::new(0),
    leftover_addr: AtomicU64::new(0),
    leftover_len: AtomicU64::new(0),
    restores: AtomicU64::new(0),
};

/// What the handler records for one thread.
#[derive(Debug, Default)]
pub struct ThreadCapture {
    pub tid: AtomicI32,
    pub frame: AtomicU64,
    pub fs_base: AtomicU64,
    pub gs_base: AtomicU64,
    pub robust_head: AtomicU64,
    pub robust_len: AtomicU64,
    pub clear_child_tid: AtomicU64,
    /// Signals pending for the thread (or, on the main thread, the process) that the handler did
    /// not take off their queues (see `record_pending`): refused.
    pub pending: AtomicU64,
    /// Whose rseq area the thread has registered: a [`sys::RseqOwner`] as u32 (0: not asked).
    pub rseq: AtomicU32,
    /// PR_GET_SPECULATION_CTRL of each control, a byte each (see `state::threads`).
    pub speculation: AtomicU64,
    /// Machine-check policy + 1 (byte 0), `cpuid` enabled + 1 (byte 1), NUMA policy mode + 1
    /// (bits 16-47; 0: unreadable), no_new_privs (bit 48); see `state::threads`.
    pub controls: AtomicU64,
    /// The thread's NUMA policy nodes.
    pub numa_nodes: AtomicU64,
    /// PR_GET_TIMERSLACK (per thread).
    pub timer_slack: AtomicU64,
    /// Nice value (bits 0-31, an i32), scheduling policy with SCHED_RESET_ON_FORK (32-62), read
    /// (63): as the thread had them when it stopped (see `state::threads`).
    pub sched: AtomicU64,
    /// ioprio_get of the thread.
    pub ioprio: AtomicU32,
    /// The thread's CPU mask (sched_getaffinity, up to 1,024 CPUs), `affinity_words` words of
    /// it (0: not read).
    pub affinity: [AtomicU64; 16],
    pub affinity_words: AtomicU32,
    /// Which io_uring descriptor slots the thread has registered (IORING_REGISTER_RING_FDS),
    /// one bit per slot (see `state::io_uring::registered_rings`).
    pub io_rings: AtomicU32,
    /// Whether it has a keyring of its own: 0 unknown, 1 none, 2 one (see `state::keyrings`).
    pub keyring: AtomicU32,
    /// What an image holds once for every thread, as this thread has it (see
    /// `state::threads::identity_refusals`): personality (bits 0-31), securebits (32-43),
    /// PR_GET_TSC (44-45), recorded (63).
    pub identity: AtomicU64,
    /// The system call the thread was blocked in just before the signal was sent (number, six
    /// arguments, stack and instruction pointers; number `u64::MAX`: none). See
    /// `state::interrupted`.
    pub blocked: [AtomicU64; 9],
    /// Set only where a relative sleep was set to be issued again for the time the kernel wrote
    /// back as left: (where that time is, its clock); address 0: none (see `threads::SleepLeft`).
    pub sleep_rem: [AtomicU64; 2],
    /// The thread's name (PR_GET_NAME) as its handler read it; all zero if it did not run.
    pub name: [AtomicU64; 2],
    /// 0 until the thread is recorded (1); [`GONE`] for one that exited before it could be;
    /// [`SPARE`] for a slot no thread has had.
    pub done: AtomicI32,
}

impl ThreadCapture {
    /// Records the thread's CPU mask (at most 16 words). Async-signal-safe.
    pub fn set_affinity(&self, words: &[u64]) {
        for (slot, &w) in self.affinity.iter().zip(words) {
            slot.store(w, Ordering::Relaxed);
        }
        let n = words.len().min(self.affinity.len());
        self.affinity_words.store(n as u32, Ordering::Relaxed);
    }

    /// Whether this slot holds a recorded thread (not one gone, nor a spare slot).
    pub fn recorded(&self) -> bool {
        self.done.load(Ordering::Acquire) == 1
    }

    /// The name its handler read, if it ran.
    pub fn recorded_name(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.name[0].load(Ordering::Relaxed).to_ne_bytes());
        bytes[8..].copy_from_slice(&self.name[1].load(Ordering::Relaxed).to_ne_bytes());
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(16);
        (len > 0).then(|| String::from_utf8_lossy(&bytes[..len]).into_owned())
    }
}

/// `Capture::changed`: a thread started after the listing.
const THREAD_STARTED: u32 = 1;
/// `Capture::changed`: a descriptor changed in place after the scan.
const DESCRIPTOR_CHANGED: u32 = 2;
/// `Capture::changed`: a child process was forked after the check for children.
const CHILD_STARTED: u32 = 3;
/// `Capture::changed`: a zombie child was reaped after the check for children.
const ZOMBIE_REAPED: u32 = 4;
/// `Capture::changed`: a signal came to a thread after its handler had read its queue.
const SIGNAL_CAME: u32 = 5;
/// What each `Capture::changed` value says.
const CHANGES: [&str; 6] = [
    "",
    "a thread started after the threads were listed",
    "a descriptor's flags or a socket's address or state changed after the scan",
    "a child process was started after the check for children",
    "a zombie child was waited for after the check for children",
    "a signal came to a stopped thread after it had read its queue",
];

/// `ThreadCapture::done` of a thread that exited during the checkpoint: not in the image, as if
/// the checkpoint had come a moment later.
pub const GONE: i32 = 2;

/// `ThreadCapture::done` of a slot kept for a thread started after the listing (see `chase`).
const SPARE: i32 = 3;

/// A descriptor whose offset the handler records.
#[derive(Debug)]
pub struct FdPos {
    pub fd: i32,
    pub pos: AtomicI64,
    /// The file's size and modification time (seconds, nanoseconds), or u64::MAX.
    pub stamp: [AtomicU64; 3],
}

/// A pipe whose buffered bytes the handler duplicates (`tee`) into `copy`.
#[derive(Debug)]
pub struct PipeCopy {
    pub read_fd: i32,
    pub copy_w: OwnedFd,
    pub copy_r: OwnedFd,
    pub bytes: AtomicI64,
}

impl PipeCopy {
    /// In the handler: duplicates what is buffered now. Async-signal-safe.
    fn take(&self) {
        let n = sys::tee(self.read_fd, self.copy_w.as_raw_fd(), usize::MAX >> 1);
        self.bytes.store(n, Ordering::Relaxed);
    }

    /// After the snapshot: the bytes the handler duplicated, if any.
    pub fn copied(&self) -> std::io::Result<Option<Vec<u8>>> {
        let n = self.bytes.load(Ordering::Relaxed);
        if n <= 0 {
            return Ok(None);
        }
        let mut bytes = vec![0u8; n as usize];
        std::io::Read::read_exact(
            &mut std::fs::File::from(self.copy_r.try_clone()?),
            &mut bytes,
        )?;
        Ok(Some(bytes))
    }
}

/// A socket whose queued bytes the handler copies (without consuming them) into `buf`.
#[derive(Debug)]
pub struct SockPeek {
    pub fd: i32,
    pub ino: u64,
    /// Where the handler writes: `buf`'s storage, taken while `buf` was still exclusively ours.
    addr: u64,
    buf: Vec<u8>,
    /// Bytes copied, or a negative errno.
    pub got: AtomicI64,
    /// Bytes that were queued (SIOCINQ), or a negative errno.
    pub inq: AtomicI64,
    /// A message-based socket (datagram, seqpacket): the lengths of its queued messages, read
    /// one by one with SO_PEEK_OFF; `msgs` of them, or one of the `MSGS_*` codes.
    pub msg: bool,
    lens: Vec<AtomicU64>,
    /// How many descriptors each message carries (SCM_RIGHTS; see [`crate::state::scm`]).
    fds: Vec<AtomicU32>,
    pub msgs: AtomicI64,
    /// The descriptors the checkpoint received from this queue before (numbers, in order),
    /// and whether the handler's walk found others.
    expected: Vec<i32>,
    pub mismatch: AtomicBool,
    /// Those of `expected` never to be closed (see [`crate::state::scm`]): a peek that gives
    /// one of them again is left open and noted in `kept`.
    keep: Vec<i32>,
    kept: Vec<AtomicI32>,
    kept_n: AtomicUsize,
}

/// [`SockPeek::msgs`] codes: a message longer than the room, one with ancillary data
/// (descriptors, credentials), too many, one whose sender has a name.
pub const MSGS_TRUNCATED: i64 = -1_000_001;
pub const MSGS_ANCILLARY: i64 = -1_000_002;
pub const MSGS_TOO_MANY: i64 = -1_000_004;
/// A message from a sender with a name (a message queued again comes from a socket without one).
pub const MSGS_NAMED_SENDER: i64 = -1_000_005;
/// A socket where an earlier walk found an empty message, which a walk now passes over.
pub const MSGS_EMPTY_SEEN: i64 = -1_000_006;
/// A stream whose queued bytes carry descriptors, or that asked for credentials.
const MSGS_STREAM_FDS: i64 = -1_000_007;
const MSGS_STREAM_CREDS: i64 = -1_000_008;

/// Inodes of sockets in whose queue a walk of this process found (and so marked) an empty
/// message: a later walk cannot see it (see [`SockPeek::peek_messages`]). Allocation-free: used
/// in the checkpoint handler.
static EMPTY_SEEN: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// More sockets than [`EMPTY_SEEN`] holds had one: every socket is then suspect.
static EMPTY_OVERFLOW: AtomicBool = AtomicBool::new(false);

/// Remembers that a walk found an empty message queued in socket `ino`.
pub(crate) fn note_empty(ino: u64) {
    if EMPTY_SEEN.iter().any(|s| s.load(Ordering::Relaxed) == ino) {
        return;
    }
    let free = EMPTY_SEEN.iter().find(|s| {
        s.compare_exchange(0, ino, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    if free.is_none() {
        EMPTY_OVERFLOW.store(true, Ordering::Release);
    }
}

fn seen_empty(ino: u64) -> bool {
    EMPTY_OVERFLOW.load(Ordering::Acquire)
        || EMPTY_SEEN.iter().any(|s| s.load(Ordering::Acquire) == ino)
}

/// Socket `ino`'s queue was found empty: nothing marked waits there any more.
fn forget_empty(ino: u64) {
    for s in &EMPTY_SEEN {
        let _ = s.compare_exchange(ino, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl SockPeek {
    /// Room for twice what is queued now, at least 256 KiB.
    pub fn new(fd: i32, ino: u64, msg: bool) -> SockPeek {
        let now = sys::inq(fd).max(0) as usize;
        let mut buf = vec![0u8; (now * 2).max(256 << 10)];
        let addr = buf.as_mut_ptr() as u64;
        SockPeek {
            fd,
            ino,
            addr,
            buf,
            got: AtomicI64::new(0),
            inq: AtomicI64::new(0),
            msg,
            lens: if msg {
                (0..1024).map(|_| AtomicU64::new(0)).collect()
            } else {
                Vec::new()
            },
            fds: if msg {
                (0..1024).map(|_| AtomicU32::new(0)).collect()
            } else {
                Vec::new()
            },
            msgs: AtomicI64::new(0),
            expected: Vec::new(),
            mismatch: AtomicBool::new(false),
            keep: Vec::new(),
            kept: Vec::new(),
            kept_n: AtomicUsize::new(0),
        }
    }

    /// The descriptors the checkpoint received from this queue before the scan, and those of
    /// them that must not be closed.
    pub fn expecting(mut self, fds: Vec<i32>, keep: Vec<i32>) -> SockPeek {
        self.expected = fds;
        // Each may come twice (in the head's peek and in the walk's), and a thread may have
        // sent one again since: room to spare, as one kept without a slot would go unnoted.
        let room = if keep.is_empty() {
            0
        } else {
            keep.len() * 2 + 16
        };
        self.kept = (0..room).map(|_| AtomicI32::new(-1)).collect();
        self.keep = keep;
        self
    }

    /// Closes descriptor `f`, which a peek installed, unless it is one of `keep` (the same
    /// open file description as `like`, or as any of them): then it stays open and is noted.
    fn release(&self, f: i32, like: Option<i32>) {
        let keep = match like {
            Some(e) => self.keep.contains(&e),
            None => self
                .keep
                .iter()
                .any(|&k| sys::same_description(f, k) == Some(true)),
        };
        if !keep {
            sys::close_raw(f);
        } else if let Some(slot) = self.kept.get(self.kept_n.fetch_add(1, Ordering::Relaxed)) {
            slot.store(f, Ordering::Relaxed);
        }
        // (No slot left: open and unnoted, rather than unlock the process.)
    }

    /// The descriptors the handler left open (see [`Self::release`]).
    pub fn kept(&self) -> impl Iterator<Item = i32> + '_ {
        self.kept
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .filter(|&k| k >= 0)
    }

    /// Walks the queued messages of a message-based socket without consuming them: SO_PEEK_OFF
    /// makes each peek start after the previous one. Runs in the checkpoint handler.
    ///
    /// SO_PASSCRED is on for the walk: every message then comes with credentials, which is how
    /// an empty message (a peek of 0 bytes, with them) is told from the end of a seqpacket queue
    /// whose peer has gone (0 bytes, without). A socket that has it on itself gets credentials
    /// with each message, which a message queued again would not keep: those are refused.
    ///
    /// A peek marks an empty message as seen for good, and a peek at an offset passes over a
    /// marked one. So the head is peeked first without an offset (which finds it marked or not,
    /// and marks it: the walk then passes over it, and it is counted here); and a socket where
    /// an earlier walk of this process found an empty message further on is refused unless its
    /// queue is empty now ([`note_empty`]).
    fn peek_messages(&self) {
        let fd = self.fd;
        let orig = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
        let passcred = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED).unwrap_or(0);
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1);
        // Credentials and up to about 250 descriptors (a peek installs them: each is compared
        // with the one the checkpoint received before, see `state::scm`, and closed).
        let mut control = [0u8; 1280];
        let mut expected = self.expected.iter();
        let mut on_fd = |f: i32| {
            let e = expected.next().copied();
            let same = e.is_some_and(|e| sys::same_description(f, e) == Some(true));
            if !same {
                self.mismatch.store(true, Ordering::Relaxed);
            }
            self.release(f, e.filter(|_| same));
        };
        // The head, without an offset.
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1);
        let head = sys::recv_peek_msg(fd, self.addr, self.buf.len(), &mut control);
        // An empty head is passed over by the walk below: its descriptors are checked here.
        let head_ancillary = if head.len == 0 {
            sys::peeked_ancillary(&control[..head.control_len], &mut on_fd)
        } else {
            sys::peeked_ancillary(&control[..head.control_len], &mut |f| self.release(f, None))
        };
        let head_empty = head.len == 0 && head_ancillary.0;
        let result = if head.len == -(libc::EAGAIN as i64) {
            forget_empty(self.ino);
            0
        } else if seen_empty(self.ino) {
            MSGS_EMPTY_SEEN
        } else if head_empty && (head_ancillary.2 || passcred != 0) {
            note_empty(self.ino);
            MSGS_ANCILLARY
        } else if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).is_err() {
            -(libc::EOPNOTSUPP as i64)
        } else {
            let (mut used, mut n) = (0usize, 0usize);
            if head_empty {
                // Passed over by the walk below: counted here.
                note_empty(self.ino);
                self.lens[0].store(0, Ordering::Relaxed);
                self.fds[0].store(head_ancillary.1 as u32, Ordering::Relaxed);
                n = 1;
            }
            loop {
                let room = self.buf.len() - used;
                let m = sys::recv_peek_msg(fd, self.addr + used as u64, room, &mut control);
                if m.len == -(libc::EAGAIN as i64) {
                    break n as i64;
                }
                if m.len < 0 {
                    break m.len;
                }
                let (creds, fds, other) =
                    sys::peeked_ancillary(&control[..m.control_len], &mut on_fd);
                if m.len == 0 && !creds && fds == 0 && !other {
                    break n as i64; // the end of a seqpacket queue whose peer has gone
                }
                if m.flags & libc::MSG_CTRUNC != 0 || other || passcred != 0 {
                    break MSGS_ANCILLARY;
                }
                if m.flags & libc::MSG_TRUNC != 0 || m.len as usize >= room {
                    break MSGS_TRUNCATED;
                }
                if m.name_len > 0 {
                    break MSGS_NAMED_SENDER;
                }
                let Some(slot) = self.lens.get(n) else {
                    break MSGS_TOO_MANY;
                };
                if m.len == 0 {
                    note_empty(self.ino);
                }
                slot.store(m.len as u64, Ordering::Relaxed);
                self.fds[n].store(fds as u32, Ordering::Relaxed);
                n += 1;
                used += m.len as usize;
            }
        };
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, passcred);
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, orig);
        self.msgs.store(result, Ordering::Release);
    }

    /// The queued messages of a message-based socket, once the handler has run, or why they
    /// cannot be kept.
    pub fn messages(&self) -> Result<Queued<'_>, String> {
        let n = self.msgs.load(Ordering::Acquire);
        match n {
            MSGS_TRUNCATED => Err("a queued message is larger than thaw reads".into()),
            MSGS_ANCILLARY => Err(
                "a queued message carries credentials (the socket has SO_PASSCRED), a pidfd (SO_PASSPIDFD), or more descriptors than the process could receive (over 250, or at its limit of open files), which are not restored"
                    .into(),
            ),
            MSGS_EMPTY_SEEN => Err(
                "an empty message waits in its queue that an earlier checkpoint (or attempt) of this process marked as seen, which a second look passes over: read the queue before the checkpoint"
                    .into(),
            ),
            MSGS_TOO_MANY => Err(format!("more than {} messages are queued", self.lens.len())),
            MSGS_NAMED_SENDER => Err(
                "a queued message was sent by a socket with a name (bound, or named by autobind), which a message queued again would not have"
                    .into(),
            ),
            n if n < 0 => Err(format!(
                "cannot read its queue: {}",
                std::io::Error::from_raw_os_error(-n as i32)
            )),
            n => {
                let lens: Vec<u32> = self.lens[..n as usize]
                    .iter()
                    .map(|l| l.load(Ordering::Relaxed) as u32)
                    .collect();
                let total: usize = lens.iter().map(|&l| l as usize).sum();
                let fds = self.fds[..n as usize]
                    .iter()
                    .map(|f| f.load(Ordering::Relaxed))
                    .collect();
                Ok(Queued {
                    bytes: &self.buf[..total],
                    lens,
                    fds,
                })
            }
        }
    }

    /// The copied bytes of a stream socket, once the handler has run: `Err` names why they are
    /// incomplete.
    pub fn bytes(&self) -> Result<&[u8], String> {
        let (got, inq) = (
            self.got.load(Ordering::Acquire),
            self.inq.load(Ordering::Acquire),
        );
        if inq == 0 {
            return Ok(&[]); // nothing queued (a peek at end of file gives 0, when empty EAGAIN)
        }
        match self.msgs.load(Ordering::Acquire) {
            MSGS_STREAM_FDS => return Err("descriptors in flight (SCM_RIGHTS) wait in its queue with the bytes, which a stream is not restored with: receive them before the checkpoint".into()),
            MSGS_STREAM_CREDS => return Err("bytes wait in its queue for a reader that asked for its senders' credentials (SO_PASSCRED), which bytes queued again would not keep: read them before the checkpoint".into()),
            _ => {}
        }
        if inq < 0 || got < 0 {
            let errno = -(inq.min(got)) as i32;
            // A peek stops short of an out-of-band byte; one at the head reads nothing.
            let oob = if errno == libc::EAGAIN && inq > 0 {
                format!(": {inq} bytes wait, and the first is out-of-band (MSG_OOB), which a stream is not restored with; read it before the checkpoint")
            } else {
                String::new()
            };
            return Err(format!(
                "cannot read its queue: {}{oob}",
                std::io::Error::from_raw_os_error(errno)
            ));
        }
        if inq as usize > self.buf.len() {
            return Err(format!(
                "{inq} bytes are queued, more than thaw reads ({})",
                self.buf.len()
            ));
        }
        if got != inq {
            return Err(format!(
                "only {got} of its {inq} queued bytes could be read at once: descriptors in flight (SCM_RIGHTS), credentials or an out-of-band byte (MSG_OOB) wait between them, which a stream is not restored with; receive them before the checkpoint"
            ));
        }
        Ok(&self.buf[..got as usize])
    }
}

/// A socket's queued messages as the handler found them: their bytes one after the other,
/// their lengths, and how many descriptors each carries.
#[derive(Debug)]
pub struct Queued<'a> {
    pub bytes: &'a [u8],
    pub lens: Vec<u32>,
    pub fds: Vec<u32>,
}

/// Everything the handlers fill, allocated before any signal is sent.
#[derive(Debug)]
pub struct Capture {
    /// The thread that calls `save()`; it forks once every other thread is parked.
    pub caller: i32,
    /// The handler's stacks, one per thread slot (see [`sys::HandlerStacks`]).
    pub stacks: Option<sys::HandlerStacks>,
    /// One slot per thread, the caller's included.
    pub threads: Vec<ThreadCapture>,
    /// Threads parked in their handler (futex word).
    pub parked: AtomicU32,
    /// How many threads are to park (less those seen gone): the main thread takes the
    /// process's signal queue once all the others have (see `record_pending`).
    pub expected: AtomicU32,
    /// Set once no thread is left to find (see `chase`): until then a thread not yet stopped
    /// may still start others, which the main thread's count does not know.
    pub chased: AtomicU32,
    /// Set to 1 to let parked threads return (futex word).
    pub release: AtomicU32,
    /// Threads that have finished with this structure after being released (futex word).
    pub left: AtomicU32,
    pub brk: AtomicU64,
    /// PR_GET_CHILD_SUBREAPER, PR_GET_THP_DISABLE and PR_GET_DUMPABLE, each + 1 (0: unread),
    /// as the caller's handler read them with every thread stopped.
    pub wide: [AtomicU64; 3],
    /// Kernel sigaction of signals 1..=64, four words each.
    pub actions: Vec<[AtomicU64; 4]>,
    /// Every rlimit (soft, hard). Read here rather than from the frozen child: a set-uid process
    /// may not read its own child's limits without CAP_SYS_RESOURCE.
    pub limits: Vec<[AtomicU64; 2]>,
    pub fds: Vec<FdPos>,
    pub pipes: Vec<PipeCopy>,
    pub socks: Vec<SockPeek>,
    /// /proc/self/pagemap, and the guard regions (MADV_GUARD_INSTALL) the handler finds with it:
    /// a fork does not copy them for file and shared mappings, so the snapshot cannot show them.
    pub pagemap: Option<OwnedFd>,
    /// (start, end) word pairs, in memory that is never part of the snapshot (nor of the heap
    /// the restored process frees into).
    pub guards: Option<sys::DontForkBuf>,
    /// How many of `guards` are valid, or a negative errno (-E2BIG: more than there is room for).
    pub guard_count: AtomicI64,
    /// Locked ranges (mlock; `true`: on fault), from the process's own maps: a fork does not
    /// inherit memory locks, so the snapshot's maps do not show them.
    pub locked: Vec<(u64, u64, bool)>,
    /// Other buffers of the checkpoint's own, never in the snapshot (MADV_DONTFORK).
    pub own_buffers: Vec<(u64, u64)>,
    /// One per FIFO: (its descriptor, our own read end when that one cannot read, the copy of
    /// the bytes waiting in it at the snapshot).
    pub(crate) fifos: Vec<(i32, Option<crate::state::locks::Opened>, PipeCopy)>,
    /// Epoll instances whose edge-triggered registrations' pending events are probed.
    pub epolls: Vec<crate::state::epoll::Probe>,
    /// Event objects' fdinfo, read again while the threads are parked (see state::parked).
    pub fdinfos: Vec<crate::state::parked::ParkedInfo>,
    /// inotify descriptors and the bytes of events queued on each at the snapshot.
    pub inotify: Vec<(i32, AtomicI64)>,
    /// Shared memory objects to copy, and /proc/self/mem to copy fd-less ones from.
    pub shm: Vec<crate::state::shmem::ShmCopy>,
    pub mem: Option<OwnedFd>,
    /// AIO rings to copy (see [`crate::state::aio`]).
    pub aio: Vec<crate::state::aio::AioCopy>,
    /// TCP connections to read in repair mode (see [`crate::state::tcp`]).
    pub tcp: Vec<crate::state::tcp::TcpCopy>,
    /// CLOCK_MONOTONIC and CLOCK_BOOTTIME (ns) just before the snapshot: no thread saw later.
    pub clocks: [AtomicU64; 2],
    /// MADV_DONTFORK ranges: the advice is lifted for the fork so that the snapshot has them,
    /// and set again right after.
    pub dontfork: Vec<(u64, u64)>,
    /// /proc/self/maps as it was at the fork (read into `maps_buf`; `maps_len` bytes, or a
    /// negative errno): what the snapshot must hold.
    pub maps_fd: Option<OwnedFd>,
    pub maps_buf: Option<sys::DontForkBuf>,
    pub maps_len: AtomicI64,
    /// Interval timers ([interval, value] µs of REAL, VIRTUAL, PROF) at the snapshot.
    pub itimers: [[AtomicU64; 2]; 3],
    /// POSIX timers, and [value, interval] in ns as the handler read them, then the value read
    /// before any thread was stopped (see `state::posix_timers::as_restored`).
    pub posix_timers: Vec<(crate::state::posix_timers::PosixTimer, [AtomicU64; 3])>,
    /// Whether each interval timer (REAL, VIRTUAL, PROF) was armed before any thread was
    /// stopped, and so before any signal queue was read (see `state::timers::as_restored`).
    pub itimers_armed_before: [bool; 3],
    /// Raw fork result: the frozen child's pid, or a negative errno.
    pub child: AtomicI64,
    /// Set by the calling thread when the process changed since it was listed ([`THREAD_STARTED`],
    /// [`DESCRIPTOR_CHANGED`]): no snapshot is taken, and the checkpoint starts again.
    pub changed: AtomicU32,
    /// How the scanned descriptors looked before the scan (see `crate::witness`).
    pub looks: Vec<(i32, u64)>,
    /// The scanned files' names and locks as the scan saw them (see `crate::witness`).
    pub file_looks: Vec<(i32, u64)>,
    /// The calling thread's signal mask before the freeze: the one its frame in the snapshot
    /// resumes with.
    pub caller_mask: u64,
    /// The memory protection keys held before the freeze (see [`crate::state::pkeys`]).
    pub pkeys: Vec<u32>,
    /// [`Capture::own_fds`] with the inode each names, taken before the freeze (see
    /// [`abandoned_fds`]).
    pub own_ids: Vec<(i32, u64)>,
    /// Each looked-at descriptor's flags while every thread was stopped (`sys::fd_flags`).
    pub flags_seen: Vec<AtomicU64>,
    /// Whether the process may have children (they are left out of the image); otherwise one
    /// forked since the check makes the checkpoint start again.
    pub children_allowed: bool,
    /// The zombie children recorded before the threads stopped: each must still be one then.
    pub zombies: Vec<crate::state::children::Zombie>,
    /// The checkpoint's own helper process (see `crate::traced`), a child of ours; 0 if none.
    pub helper: AtomicI32,
    /// Signals pending at the snapshot, as the handlers took them off their queues (and put
    /// them back at once): word 0 is tid << 32 | signal (tid 0: the process's queue; 0: an
    /// entry not used), then the siginfo. `queued_len` claims entries; past [`QUEUED_MAX`] the
    /// rest were not taken.
    pub queued: Box<[[AtomicU64; 17]]>,
    pub queued_len: AtomicU32,
    /// Signals that POSIX timers send: never taken off a queue (a timer's pending signal is its
    /// own; a copy put back would be another, and the timer would queue a second one).
    pub timer_signals: u64,
    /// An errno from putting a signal back in its queue (the first life lost it).
    pub requeue_error: AtomicI32,
}

/// Room for pending signals in [`Capture::queued`].
pub const QUEUED_MAX: usize = 128;

impl Capture {
    /// The checkpoint's own descriptors, opened after the descriptor scan.
    pub fn own_fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self
            .pipes
            .iter()
            .flat_map(|p| [p.copy_w.as_raw_fd(), p.copy_r.as_raw_fd()])
            .collect();
        fds.extend(
            [&self.pagemap, &self.mem, &self.maps_fd]
                .into_iter()
                .flatten()
                .map(AsRawFd::as_raw_fd),
        );
        fds.extend(self.shm.iter().filter_map(|o| o.own_fd()));
        fds.extend(self.aio.iter().map(crate::state::aio::AioCopy::own_fd));
        fds.extend(
            self.fdinfos
                .iter()
                .flat_map(crate::state::parked::ParkedInfo::own_fds),
        );
        for (_, own, p) in &self.fifos {
            fds.extend(own.as_ref().map(AsRawFd::as_raw_fd));
            fds.extend([p.copy_w.as_raw_fd(), p.copy_r.as_raw_fd()]);
        }
        // Peeked from queues and left open rather than unlock the process (SockPeek::release).
        fds.extend(self.socks.iter().flat_map(SockPeek::kept));
        fds
    }

    pub fn new(
        caller: i32,
        tids: &[i32],
        fds: Vec<FdPos>,
        pipes: Vec<PipeCopy>,
        socks: Vec<SockPeek>,
    ) -> Box<Self> {
        Box::new(Capture {
            caller,
            // And spare slots for threads that those not yet stopped start meanwhile.
            threads: tids
                .iter()
                .map(|&tid| ThreadCapture {
                    tid: AtomicI32::new(tid),
                    ..Default::default()
                })
                .chain((0..spare_slots(tids.len())).map(|_| ThreadCapture {
                    done: AtomicI32::new(SPARE),
                    ..Default::default()
                }))
                .collect(),
            parked: AtomicU32::new(0),
            expected: AtomicU32::new(0),
            chased: AtomicU32::new(0),
            release: AtomicU32::new(0),
            left: AtomicU32::new(0),
            brk: AtomicU64::new(0),
            wide: Default::default(),
            actions: (0..64).map(|_| Default::default()).collect(),
            limits: (0..crate::state::limits::RLIMIT_COUNT)
                .map(|_| Default::default())
                .collect(),
            fds,
            pipes,
            socks,
            pagemap: None,
            guards: None,
            guard_count: AtomicI64::new(0),
            locked: Vec::new(),
            own_buffers: Vec::new(),
            stacks: None,
            inotify: Vec::new(),
            epolls: Vec::new(),
            fdinfos: Vec::new(),
            fifos: Vec::new(),
            shm: Vec::new(),
            aio: Vec::new(),
            tcp: Vec::new(),
            mem: None,
            clocks: Default::default(),
            itimers: Default::default(),
            posix_timers: Vec::new(),
            itimers_armed_before: [false; 3],
            dontfork: Vec::new(),
            maps_fd: None,
            maps_buf: None,
            maps_len: AtomicI64::new(0),
            child: AtomicI64::new(0),
            changed: AtomicU32::new(0),
            looks: Vec::new(),
            file_looks: Vec::new(),
            own_ids: Vec::new(),
            caller_mask: 0,
            pkeys: Vec::new(),
            flags_seen: Vec::new(),
            children_allowed: false,
            zombies: Vec::new(),
            queued: (0..QUEUED_MAX).map(|_| Default::default()).collect(),
            queued_len: AtomicU32::new(0),
            timer_signals: 0,
            requeue_error: AtomicI32::new(0),
            helper: AtomicI32::new(0),
        })
    }

    pub fn action(&self, signo: usize) -> KernelSigaction {
        let a = &self.actions[signo - 1];
        KernelSigaction {
            handler: a[0].load(Ordering::Relaxed),
            flags: a[1].load(Ordering::Relaxed),
            restorer: a[2].load(Ordering::Relaxed),
            mask: a[3].load(Ordering::Relaxed),
        }
    }
}

static ACTIVE: AtomicPtr<Capture> = AtomicPtr::new(std::ptr::null_mut());

/// Offset of `uc_sigmask` in x86_64's `ucontext_t` (flags, link, stack, mcontext before it).
const UC_SIGMASK: usize = 296;

/// Captures of freezes given up on (see [`abandon`]), with their descriptors still open: a
/// thread may yet be inside a handler that uses them. Later scans leave those descriptors out
/// (they are not the application's), and a later freeze that every thread went through frees
/// them (see [`reclaim_abandoned`]). Without a free slot, one is leaked for good.
static ABANDONED: [AtomicPtr<Capture>; 8] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 8];

/// The descriptors of abandoned captures, where they still are what the capture opened (the
/// application may have closed one and got its number again). Not async-signal-safe.
pub fn abandoned_fds() -> Vec<i32> {
    ABANDONED
        .iter()
        .filter_map(|slot| {
            // SAFETY: an abandoned capture is never freed while its slot holds it (only
            // `reclaim_abandoned` and `forget_abandoned` empty it, on this same thread, under
            // the checkpoint's one-at-a-time lock).
            unsafe { slot.load(Ordering::Acquire).as_ref() }
        })
        .flat_map(|c| {
            c.own_ids
                .iter()
                .filter(|(fd, ino)| sys::fstat_ino(*fd) == Some(*ino))
        })
        .map(|&(fd, _)| fd)
        .collect()
}

/// Threads inside the checkpoint signal's handler (a parked one, or one stopped there by
/// ptrace, too).
static HANDLERS_INSIDE: AtomicU32 = AtomicU32::new(0);

/// Counts a handler out when it returns.
struct InsideHandler;

impl Drop for InsideHandler {
    fn drop(&mut self) {
        HANDLERS_INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Frees the abandoned captures (closing their descriptors) once no handler can use one: no
/// freeze is active and no thread is inside the handler. One that enters later reads ACTIVE
/// after counting itself in, and so finds it null (the null was stored before the count was
/// read here). A capture whose descriptors are not all its own any more is left as it is
/// (closing them would close the application's). Called between freezes, under the
/// checkpoint's one-at-a-time lock.
pub fn reclaim_abandoned() {
    if !ACTIVE.load(Ordering::SeqCst).is_null() || HANDLERS_INSIDE.load(Ordering::SeqCst) != 0 {
        return;
    }
    for slot in &ABANDONED {
        let raw = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: as in `abandoned_fds`; once taken out of its slot nobody else refers to it.
        let Some(c) = (unsafe { raw.as_ref() }) else {
            continue;
        };
        if c.own_ids
            .iter()
            .all(|&(fd, ino)| sys::fstat_ino(fd) == Some(ino))
        {
            // SAFETY: `raw` came from Box::into_raw in `freeze`, leaked by `abandon`; no
            // handler can use it any more (see above).
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

/// In a restored process: the first life's abandoned captures' descriptors were never part of
/// it (left out of the image), so their numbers are not ours to close.
fn forget_abandoned() {
    for slot in &ABANDONED {
        slot.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// Reads which system call thread `t` is blocked in, without allocating.
fn note_blocked(t: &ThreadCapture) {
    t.blocked[0].store(u64::MAX, Ordering::Relaxed);
    t.sleep_rem[0].store(0, Ordering::Relaxed);
    let mut text = [0u8; 256];
    let Some(b) = sys::read_task_syscall(t.tid.load(Ordering::Relaxed), &mut text)
        .and_then(|n| crate::state::interrupted::parse(&text[..n]))
    else {
        return;
    };
    let words = [
        b.nr, b.args[0], b.args[1], b.args[2], b.args[3], b.args[4], b.args[5], b.sp, b.pc,
    ];
    for (slot, w) in t.blocked.iter().zip(words) {
        slot.store(w, Ordering::Relaxed);
    }
}

/// If the signal interrupted the system call `note_blocked` saw (the frame matches it exactly)
/// and that call should go on (see `state::interrupted`), sets the frame to issue it again.
fn restart_interrupted(t: &ThreadCapture, uc: *mut libc::c_void) {
    let nr = t.blocked[0].load(Ordering::Relaxed);
    if nr == u64::MAX {
        return;
    }
    let word = |i: usize| t.blocked[i].load(Ordering::Relaxed);
    let b = crate::state::interrupted::Blocked {
        nr,
        args: [word(1), word(2), word(3), word(4), word(5), word(6)],
        sp: word(7),
        pc: word(8),
    };
    let Some(again) = crate::state::interrupted::again(&b) else {
        return;
    };
    // SAFETY: `uc` is the ucontext the kernel built for this handler on this thread's stack.
    if unsafe { sys::restart_in_frame(uc, &b, again) } {
        note_sleep_rem(t, &b, again);
    }
}

/// Notes where a relative sleep issued again for its time left reads that time (the call's
/// `rem`, now its request), and its clock: nothing for any other call, or one issued again as
/// it was (a sleep without `rem` sleeps its whole time again).
pub(crate) fn note_sleep_rem(
    t: &ThreadCapture,
    b: &crate::state::interrupted::Blocked,
    again: crate::state::interrupted::Again,
) {
    let clock = match b.nr as i64 {
        libc::SYS_nanosleep => libc::CLOCK_MONOTONIC,
        libc::SYS_clock_nanosleep => b.args[0] as i32,
        _ => return,
    };
    if let Some((_, rem)) = again.set_arg.filter(|&(_, rem)| rem != 0) {
        t.sleep_rem[1].store(clock as u32 as u64, Ordering::Relaxed);
        t.sleep_rem[0].store(rem, Ordering::Relaxed);
    }
}

fn record_thread(c: &Capture, t: &ThreadCapture, uc: *mut libc::c_void, sig: i32) {
    restart_interrupted(t, uc);
    // The kernel's rt_sigreturn expects the stack pointer at the frame's ucontext, which is exactly
    // the third handler argument.
    t.frame.store(uc as u64, Ordering::Relaxed);
    let (fs, gs) = sys::fs_gs_base();
    t.fs_base.store(fs, Ordering::Relaxed);
    t.gs_base.store(gs, Ordering::Relaxed);
    let (head, len) = sys::robust_list();
    t.robust_head.store(head, Ordering::Relaxed);
    t.robust_len.store(len, Ordering::Relaxed);
    t.clear_child_tid
        .store(sys::clear_child_tid(), Ordering::Relaxed);
    record_pending(c, t, 1u64 << (sig - 1));
    let glibc = sys::glibc_rseq(fs).map(|(addr, size)| (addr, size.max(32)));
    t.rseq.store(
        sys::rseq_owner(glibc, crate::state::threads::RSEQ_SIG) as u32,
        Ordering::Relaxed,
    );
    // Per thread, and only the thread itself can ask.
    let mut spec = 0u64;
    for which in crate::state::threads::SPECULATION_CONTROLS {
        let v = sys::speculation_ctrl(which).unwrap_or(0);
        spec |= u64::from(v & 0xff) << (8 * which);
    }
    t.speculation.store(spec, Ordering::Relaxed);
    let mce = sys::mce_kill_get();
    let cpuid = sys::cpuid_enabled();
    let numa = sys::get_mempolicy(None);
    let mode = numa.map_or(0, |(m, _)| u64::from(m) + 1);
    let nnp = sys::prctl_get(libc::PR_GET_NO_NEW_PRIVS).unwrap_or(0) == 1;
    t.controls.store(
        crate::state::threads::controls_word(mce, cpuid, mode, nnp),
        Ordering::Relaxed,
    );
    t.numa_nodes
        .store(numa.map_or(0, |(_, n)| n), Ordering::Relaxed);
    t.timer_slack.store(
        sys::prctl_get(libc::PR_GET_TIMERSLACK).unwrap_or(0),
        Ordering::Relaxed,
    );
    t.keyring.store(
        crate::state::keyrings::thread_has_keyring().map_or(0, |k| 1 + u32::from(k)),
        Ordering::Relaxed,
    );
    // Read here, not from outside once the threads go on: a process that goes on from its
    // checkpoint may change them at once.
    if let (Some(nice), Some(policy)) = (sys::own_nice(), sys::sched_getscheduler(0)) {
        let word = crate::state::threads::sched_word(nice, u64::from(policy));
        t.sched.store(word, Ordering::Relaxed);
    }
    t.ioprio.store(sys::ioprio_get(0), Ordering::Relaxed);
    let mut mask = [0u64; 16];
    if let Some(n) = sys::own_affinity(&mut mask) {
        t.set_affinity(&mask[..n.min(16)]);
    }
    t.io_rings.store(
        crate::state::io_uring::registered_rings(),
        Ordering::Relaxed,
    );
    t.identity.store(
        crate::state::threads::identity_word(
            sys::personality_get(),
            sys::prctl_get(libc::PR_GET_SECUREBITS).unwrap_or(0),
            sys::prctl_get_int(libc::PR_GET_TSC).unwrap_or(0),
        ),
        Ordering::Relaxed,
    );
    let name = sys::thread_name();
    for (slot, word) in t.name.iter().zip(name.chunks_exact(8)) {
        let word: [u8; 8] = word.try_into().unwrap_or_default();
        slot.store(u64::from_ne_bytes(word), Ordering::Relaxed);
    }
    t.done.store(1, Ordering::Release);
}

/// Takes the signals pending for this thread (and, on the main thread, for the process) off
/// their queues with their siginfo into `c.queued`, and puts them back at once, in the order
/// taken: the first life goes on with the same queues. (Only the main thread may queue a
/// kernel's or kill()'s siginfo for the process.) What is not taken — a POSIX timer's signal,
/// or no room left — stays in `t.pending`, and is refused. Async-signal-safe.
/// Whether a parked thread has a signal pending in its own queue that its handler did not read
/// (nor knowingly left there). Async-signal-safe.
fn signal_came(c: &Capture, sig: i32) -> bool {
    let own = 1u64 << (sig - 1);
    let queued = c.queued_len.load(Ordering::Acquire).min(QUEUED_MAX as u32) as usize;
    c.threads
        .iter()
        .filter(|t| t.done.load(Ordering::Acquire) == 1)
        .map(|t| (t, t.tid.load(Ordering::Relaxed)))
        .filter(|&(_, tid)| tid != c.caller)
        .any(|(t, tid)| {
            let Some(now) = sys::thread_pending(tid) else {
                return false;
            };
            let read = c.queued[..queued]
                .iter()
                .map(|e| e[0].load(Ordering::Relaxed))
                .filter(|w| (w >> 32) as i32 == tid && w & 0xff != 0)
                .fold(0u64, |m, w| m | 1u64 << ((w & 0xff) - 1));
            now & !own & !read & !t.pending.load(Ordering::Relaxed) != 0
        })
}

/// Debug builds only: thread id << 8 | signal to send to that (parked) thread once, just before
/// the caller's handler looks for signals that came to parked threads (see
/// `arm_signal_parked_for_tests`).
static SIGNAL_PARKED_FOR_TESTS: AtomicU64 = AtomicU64::new(0);

/// Debug builds only: `THAW_TEST_SIGNAL_PARKED=TID,SIG` makes the first attempt of this
/// checkpoint send SIG to thread TID once every thread is parked, as a runtime's collector may
/// (a test of `signal_came`). Read before the threads stop (it allocates).
pub(crate) fn arm_signal_parked_for_tests() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(v) = std::env::var_os("THAW_TEST_SIGNAL_PARKED") else {
        return;
    };
    let v = v.to_string_lossy();
    if let Some((tid, sig)) = v.split_once(',') {
        if let (Ok(tid), Ok(sig)) = (tid.parse::<u64>(), sig.parse::<u64>()) {
            SIGNAL_PARKED_FOR_TESTS.store(tid << 8 | (sig & 0xff), Ordering::Release);
        }
    }
}

/// The caller's handler: sends the armed test signal, once. Async-signal-safe.
fn signal_parked_for_tests() {
    let v = SIGNAL_PARKED_FOR_TESTS.swap(0, Ordering::AcqRel);
    if v != 0 {
        let _ = sys::tgkill_self((v >> 8) as i32, (v & 0xff) as i32);
    }
}

/// Debug builds only: microseconds the caller's handler waits before it reads the timers (see
/// `arm_late_timers_for_tests`), as a large copy of shared memory may take.
static LATE_TIMERS_FOR_TESTS: AtomicU64 = AtomicU64::new(0);

/// Debug builds only: `THAW_TEST_LATE_TIMERS=US` makes the checkpoint's handler read the
/// timers US microseconds after the signal queues (a test of a timer that comes due in
/// between). Read before the threads stop (it allocates).
pub(crate) fn arm_late_timers_for_tests() {
    if !cfg!(debug_assertions) {
        return;
    }
    let us = std::env::var("THAW_TEST_LATE_TIMERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    LATE_TIMERS_FOR_TESTS.store(us, Ordering::Release);
}

/// The caller's handler: waits as armed. Async-signal-safe.
fn late_timers_for_tests() {
    let us = LATE_TIMERS_FOR_TESTS.load(Ordering::Acquire);
    if us != 0 {
        let until = sys::clock_ns(libc::CLOCK_MONOTONIC) + us * 1000;
        while sys::clock_ns(libc::CLOCK_MONOTONIC) < until {}
    }
}

fn record_pending(c: &Capture, t: &ThreadCapture, own: u64) {
    let tid = t.tid.load(Ordering::Relaxed);
    let leader = tid == sys::getpid();
    let all = sys::sigpending() & !own;
    if all == 0 {
        t.pending.store(0, Ordering::Relaxed);
        return;
    }
    let takeable = !own & !c.timer_signals;
    let mut taken = [0u16; QUEUED_MAX];
    let mut n = 0;
    // Standard signals taken, per queue (private, the process's): one pending is pending once
    // however often it is sent meanwhile (a flood of SIGUSR1 from another process), so each is
    // taken once, and one that is pending again has merged with it.
    let mut standard = [0u64; 2];
    const STANDARD: u64 = (1u64 << 31) - 1;
    'queues: for shared in [false, true] {
        if shared && (!leader || !others_parked(c, tid)) {
            break;
        }
        let mut lost_races = 0;
        loop {
            let Some((private, process)) = sys::pending_sets() else {
                break 'queues;
            };
            let candidates = takeable
                & !standard[usize::from(shared)]
                & if shared { process & !private } else { private };
            if candidates == 0 {
                break;
            }
            let sig = candidates.trailing_zeros() as i32 + 1;
            let slot = c.queued_len.fetch_add(1, Ordering::Relaxed) as usize;
            if slot >= QUEUED_MAX {
                break 'queues;
            }
            let mut info = [0u64; 16];
            if !sys::take_signal(sig, &mut info) {
                // Taken meanwhile by a thread of the process's that runs on (a handler that
                // ran, a sigwaitinfo): the slot stays unused, and the queues are read again.
                lost_races += 1;
                if lost_races > 64 {
                    break 'queues;
                }
                continue;
            }
            let e = &c.queued[slot];
            let owner = if shared { 0 } else { tid as u64 };
            e[0].store(owner << 32 | sig as u64, Ordering::Relaxed);
            for (w, v) in e[1..].iter().zip(info) {
                w.store(v, Ordering::Relaxed);
            }
            taken[n] = slot as u16;
            n += 1;
            standard[usize::from(shared)] |= (1u64 << (sig - 1)) & STANDARD;
        }
    }
    // What is still pending was not taken (or is a standard signal taken, sent again).
    let (private, process) = sys::pending_sets().unwrap_or((all, all));
    let left = ((private & !standard[0]) | if leader { process & !standard[1] } else { 0 }) & !own;
    t.pending.store(left, Ordering::Relaxed);
    for &slot in &taken[..n] {
        let e = &c.queued[slot as usize];
        let head = e[0].load(Ordering::Relaxed);
        let mut info = [0u64; 16];
        for (v, w) in info.iter_mut().zip(&e[1..]) {
            *v = w.load(Ordering::Relaxed);
        }
        let to = (head >> 32 != 0).then_some(tid);
        if let Err(errno) = sys::queue_signal(to, head as u32 as i32, &info) {
            c.requeue_error.store(errno, Ordering::Relaxed);
        }
    }
}

/// Whether every other thread has parked (waited for, as long as threads still come to park):
/// until then one of them could still take a signal off the process's queue (a sigwaitinfo, a
/// handler), which would then be both handled in the snapshot's memory and queued in the image.
/// The caller's own handler runs once they all have. Async-signal-safe.
fn others_parked(c: &Capture, tid: i32) -> bool {
    if tid == c.caller {
        return true;
    }
    let start = sys::clock_ns(libc::CLOCK_MONOTONIC);
    loop {
        let parked = c.parked.load(Ordering::Acquire);
        if c.chased.load(Ordering::Acquire) != 0 && parked + 1 >= c.expected.load(Ordering::Acquire)
        {
            return true;
        }
        if sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(start) > 2_000_000_000 {
            return false;
        }
        sys::futex_wait(&c.parked, parked, Some(Duration::from_millis(1)));
    }
}

extern "C" fn on_checkpoint_signal(sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // Counted in before ACTIVE is read and out once done with what it points to (both
    // sequentially consistent, as in `reclaim_abandoned`).
    HANDLERS_INSIDE.fetch_add(1, Ordering::SeqCst);
    let _out = InsideHandler;
    let ptr = ACTIVE.load(Ordering::SeqCst);
    // SAFETY: ACTIVE is non-null only while `freeze` keeps the Box alive: until every released
    // thread has counted itself out in `left` (or, after a timeout, until `reclaim_abandoned`
    // finds no handler running).
    let Some(c) = (unsafe { ptr.as_ref() }) else {
        return;
    };
    let me = sys::gettid();
    let Some((i, t)) = c
        .threads
        .iter()
        .enumerate()
        .find(|(_, t)| t.tid.load(Ordering::Relaxed) == me)
    else {
        return;
    };
    if t.done.load(Ordering::Acquire) != 0 {
        return;
    }
    let mut call = HandlerCall {
        c,
        t,
        uc,
        sig,
        count_out: false,
    };
    match c.stacks.as_ref().and_then(|s| s.top(i)) {
        // SAFETY: stack `i` is this thread's alone (one slot per thread), mapped until the
        // capture goes, which waits for every released thread to count itself out below, back
        // on this stack; `handle_on_own_stack` does not unwind (panics abort in a handler).
        Some(top) => unsafe {
            sys::call_on_stack(
                top,
                handle_on_own_stack,
                (&mut call as *mut HandlerCall).cast(),
            )
        },
        None => handle(&mut call),
    }
    if call.count_out {
        c.left.fetch_add(1, Ordering::AcqRel);
        sys::futex_wake_all(&c.left);
    }
}

/// One delivery of the checkpoint signal, handled on the thread's own handler stack.
struct HandlerCall<'a> {
    c: &'a Capture,
    t: &'a ThreadCapture,
    uc: *mut libc::c_void,
    sig: i32,
    /// A parked thread let go: it counts itself out once off the handler stack.
    count_out: bool,
}

extern "C" fn handle_on_own_stack(call: *mut libc::c_void) {
    // SAFETY: `on_checkpoint_signal` passes its own HandlerCall, alive across this call.
    handle(unsafe { &mut *call.cast::<HandlerCall>() });
}

fn handle(call: &mut HandlerCall) {
    let (c, t, uc, sig) = (call.c, call.t, call.uc, call.sig);
    let me = t.tid.load(Ordering::Relaxed);
    record_thread(c, t, uc, sig);
    if me != c.caller {
        // Park until the snapshot exists. (A restored process resumes each thread from its
        // frame, `uc`, not from here.)
        c.parked.fetch_add(1, Ordering::AcqRel);
        sys::futex_wake_all(&c.parked);
        while c.release.load(Ordering::Acquire) == 0 {
            sys::futex_wait(&c.release, 0, None);
        }
        call.count_out = true;
        return;
    }
    // The caller: every other thread is parked. A thread created after the listing took no
    // signal and runs on: a snapshot now would leave it out (and see its memory mid-change).
    let recorded = c
        .threads
        .iter()
        .filter(|t| t.done.load(Ordering::Acquire) == 1)
        .count() as u64;
    // (Counted again without the kernel's io_uring workers where they make the difference:
    // they come and go as the kernel needs, and are no threads of the program.)
    if sys::thread_count().is_none_or(|n| n != recorded)
        && sys::program_thread_count().is_none_or(|n| n != recorded)
    {
        c.changed.store(THREAD_STARTED, Ordering::Release);
        return;
    }
    // A descriptor whose flags, a socket whose name, peer or listening state, or a file whose
    // name or locks changed since the scan read them.
    if !crate::witness::unchanged_now(&c.looks, &c.flags_seen, &c.file_looks) {
        c.changed.store(DESCRIPTOR_CHANGED, Ordering::Release);
        return;
    }
    // A child forked since the check for children, or a zombie reaped since.
    let helper = c.helper.load(Ordering::Relaxed);
    let (mut other, mut zombies) = (false, 0);
    for t in c
        .threads
        .iter()
        .filter(|t| t.done.load(Ordering::Acquire) == 1)
    {
        sys::task_children(t.tid.load(Ordering::Relaxed), |pid| {
            if c.zombies.iter().any(|z| z.pid == pid) {
                zombies += 1;
            } else if pid != helper {
                other = true;
            }
        });
    }
    if other && !c.children_allowed {
        c.changed.store(CHILD_STARTED, Ordering::Release);
        return;
    }
    if zombies != c.zombies.len() {
        c.changed.store(ZOMBIE_REAPED, Ordering::Release);
        return;
    }
    // A signal sent to a parked thread after its handler read its queue stays in the kernel's
    // queue, which a fork does not copy: the image would lack it while the thread that sent it
    // is in the image past sending it (SBCL's collector, waiting for a thread that never got
    // its stop signal: every restore hung). Not snapshotted; the checkpoint starts again.
    signal_parked_for_tests();
    if signal_came(c, sig) {
        c.changed.store(SIGNAL_CAME, Ordering::Release);
        return;
    }
    // Record the process-wide state and fork.
    c.brk.store(sys::current_brk(), Ordering::Relaxed);
    let subreaper = sys::prctl_get_int(libc::PR_GET_CHILD_SUBREAPER).map(|v| v as u64);
    let thp = sys::prctl_get(libc::PR_GET_THP_DISABLE);
    let dumpable = sys::prctl_get(libc::PR_GET_DUMPABLE);
    for (slot, v) in c.wide.iter().zip([subreaper, thp, dumpable]) {
        slot.store(v.map_or(0, |v| v + 1), Ordering::Relaxed);
    }
    for (i, slot) in c.actions.iter().enumerate() {
        let mut old = KernelSigaction::default();
        if sys::rt_sigaction(i as i32 + 1, None, Some(&mut old)).is_ok() {
            slot[0].store(old.handler, Ordering::Relaxed);
            slot[1].store(old.flags, Ordering::Relaxed);
            slot[2].store(old.restorer, Ordering::Relaxed);
            slot[3].store(old.mask, Ordering::Relaxed);
        }
    }
    for (r, slot) in c.limits.iter().enumerate() {
        if let Ok((cur, max)) = sys::prlimit(0, r as u32) {
            slot[0].store(cur, Ordering::Relaxed);
            slot[1].store(max, Ordering::Relaxed);
        }
    }
    for f in &c.fds {
        f.pos.store(sys::tell(f.fd), Ordering::Relaxed);
        let st = sys::fstat_stamp(f.fd).unwrap_or([u64::MAX; 3]);
        for (slot, v) in f.stamp.iter().zip(st) {
            slot.store(v, Ordering::Relaxed);
        }
    }
    for p in c.pipes.iter().chain(c.fifos.iter().map(|f| &f.2)) {
        p.take();
    }
    for s in &c.socks {
        if s.msg {
            s.peek_messages();
            continue;
        }
        let n = sys::inq(s.fd);
        s.inq.store(n, Ordering::Relaxed);
        // Peek even when SIOCINQ says 0: for datagrams it gives the first message's length,
        // which may be 0; only EAGAIN means nothing is queued.
        // Without room for ancillary data: the kernel then says some was there (MSG_CTRUNC)
        // without installing descriptors (closing one would drop the process's POSIX locks on
        // its file). Refused: a stream is restored with its bytes alone.
        // Not when nothing is queued and an error waits (a reset end: see
        // `state::sockets::PairEnd::reset`): a peek at an empty queue would take the error.
        let reset = n == 0 && sys::poll_now(s.fd, 0).is_ok_and(|ev| ev & libc::POLLERR != 0);
        let got = if reset {
            0
        } else if (n as usize) <= s.buf.len() {
            // (The size of a bare header: room for nothing, so anything there truncates.)
            let mut control = [0u8; 16];
            // From the head of the queue, whatever peek offset the process set (SO_PEEK_OFF:
            // a peek would start there, and move it on), which it keeps. (A queue that could not
            // be peeked from its head is refused, naming the error.)
            let off = sys::getsockopt_int(s.fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
            let m = match (off >= 0).then(|| sys::set_peek_off(s.fd, -1)) {
                Some(Err(e)) => sys::PeekedMsg {
                    len: -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
                    flags: 0,
                    name_len: 0,
                    control_len: 0,
                },
                set_aside => {
                    let m = sys::recv_peek_msg(s.fd, s.addr, s.buf.len(), &mut control);
                    if set_aside.is_some() {
                        let _ = sys::set_peek_off(s.fd, off);
                    }
                    m
                }
            };
            let passcred =
                sys::getsockopt_int(s.fd, libc::SOL_SOCKET, libc::SO_PASSCRED).unwrap_or(0);
            if passcred != 0 && m.len > 0 {
                s.msgs.store(MSGS_STREAM_CREDS, Ordering::Relaxed);
            } else if m.flags & libc::MSG_CTRUNC != 0 {
                s.msgs.store(MSGS_STREAM_FDS, Ordering::Relaxed);
            }
            m.len
        } else {
            0
        };
        s.got.store(got, Ordering::Release);
    }
    for t in &c.tcp {
        t.take();
    }
    if let (Some(pm), Some(g)) = (&c.pagemap, &c.guards) {
        let mut n = 0usize;
        let r = sys::each_guard_region(pm.as_raw_fd(), |start, end| {
            g.put_u64(2 * n, start);
            g.put_u64(2 * n + 1, end);
            n += 1;
        });
        let count = if r < 0 {
            r
        } else if 2 * n * 8 > g.len() {
            -(libc::E2BIG as i64)
        } else {
            n as i64
        };
        c.guard_count.store(count, Ordering::Relaxed);
    }
    for (fd, queued) in &c.inotify {
        queued.store(sys::inq(*fd), Ordering::Relaxed);
    }
    // Before the probes, which re-arm what they take with the registrations as they are now.
    for p in &c.fdinfos {
        p.read();
    }
    for e in &c.epolls {
        e.run(
            c.fdinfos
                .iter()
                .find(|p| p.fd == e.fd)
                .and_then(|p| p.bytes()),
        );
    }
    let mem = c.mem.as_ref().map_or(-1, |m| m.as_raw_fd());
    for o in &c.shm {
        o.copy(mem);
    }
    for a in &c.aio {
        a.copy();
    }
    late_timers_for_tests();
    // Whether `sig` waits in the process's queue. (Taken for the image too, it is queued once
    // more at restore: to the same thread, where it merges.)
    let waits = |sig: i32| {
        let bit = 1u64 << (sig - 1);
        sys::pending_sets().is_some_and(|(_, process)| process & bit != 0)
    };
    // The timers are read last, after the signal queues (each thread's, in its handler): a
    // timer that came due in between reads disarmed while its signal waits in a queue the
    // image does not hold; it is kept due at once.
    for (t, slot) in &c.posix_timers {
        let read = crate::state::posix_timers::read(t.id);
        let before = slot[2].load(Ordering::Relaxed);
        let (value, interval) = crate::state::posix_timers::as_restored(read, before, || {
            let bit = 1u64 << (t.signo - 1);
            let waiting = match t.queue() {
                None => false,
                Some(0) => waits(t.signo),
                Some(tid) => sys::thread_pending(tid).is_some_and(|p| p & bit != 0),
            };
            // One the queues held is refused (or the checkpoint starts again) already.
            waiting
                && !c
                    .threads
                    .iter()
                    .any(|t| t.pending.load(Ordering::Relaxed) & bit != 0)
        });
        slot[0].store(value, Ordering::Relaxed);
        slot[1].store(interval, Ordering::Relaxed);
    }
    let mut timers = crate::state::timers::read();
    // ITIMER_REAL, as the image keeps it (its SIGALRM looked for only where that matters).
    timers[0] = crate::state::timers::as_restored(
        timers[0],
        c.itimers_armed_before[0],
        crate::state::timers::settled_real_value,
        || waits(libc::SIGALRM),
    );
    for (i, sig) in [(1, libc::SIGVTALRM), (2, libc::SIGPROF)] {
        timers[i] =
            crate::state::timers::cpu_as_restored(timers[i], c.itimers_armed_before[i], || {
                waits(sig)
            });
    }
    for (slot, [interval, value]) in c.itimers.iter().zip(timers) {
        slot[0].store(interval, Ordering::Relaxed);
        slot[1].store(value, Ordering::Relaxed);
    }
    let (mono, boot) = crate::state::clocks::now();
    c.clocks[0].store(mono, Ordering::Relaxed);
    c.clocks[1].store(boot, Ordering::Relaxed);
    for &(start, len) in &c.dontfork {
        sys::madvise(start, len, libc::MADV_DOFORK);
    }
    if let (Some(fd), Some(buf)) = (&c.maps_fd, &c.maps_buf) {
        c.maps_len.store(
            sys::read_whole(fd.as_raw_fd(), buf.addr(), buf.len()),
            Ordering::Relaxed,
        );
    }
    // The snapshot is forked dumpable, so that the snapshot's reader may read it even when the
    // process is not (the manifest keeps the original flag); the process is itself again before
    // any of its threads runs: only its own user could look at it meanwhile, and that user can
    // read the image.
    // Every other thread is stopped until after the count is put back.
    let restores = RESTORE_CELL.restores.load(Ordering::Relaxed);
    RESTORE_CELL.restores.store(restores + 1, Ordering::Relaxed);
    // This thread blocks every asynchronous signal for the freeze (see `freeze`); a restored
    // process has no thread parked, and it resumes with the mask it had before, at once: else
    // a signal that comes as the threads resume (a timer due at restore) goes to another thread,
    // whose runtime may have no handler for it (a Perl ithread exits). The snapshot's frame has
    // that mask, this life's keeps blocking until the threads are let go.
    // SAFETY: `uc` is this handler's own ucontext, on this thread's stack; UC_SIGMASK is within it.
    let frame_mask = unsafe { uc.cast::<u8>().add(UC_SIGMASK).cast::<u64>() };
    // SAFETY: as above; read and written by this thread alone (the others are parked).
    let quiet = unsafe { frame_mask.read_volatile() };
    // SAFETY: as above.
    unsafe { frame_mask.write_volatile(c.caller_mask) };
    let child = sys::while_dumpable(|| {
        compiler_fence(Ordering::SeqCst);
        let child = sys::raw_fork_quiet();
        if child == 0 {
            sys::frozen_child_loop();
        }
        child
    });
    // SAFETY: as above.
    unsafe { frame_mask.write_volatile(quiet) };
    RESTORE_CELL.restores.store(restores, Ordering::Relaxed);
    for &(start, len) in &c.dontfork {
        sys::madvise(start, len, libc::MADV_DONTFORK);
    }
    c.child.store(child, Ordering::Release);
}

/// Result of [`freeze`].
#[derive(Debug)]
pub enum Frozen {
    /// First life: a frozen child holds the snapshot; the capture describes it.
    Snapshot(Box<Capture>),
    /// First life, as `Snapshot`, with every other thread still stopped in its handler and
    /// allocations served by [`crate::alloc`]'s private region: see [`Parked`].
    Parked(Parked),
    /// Second life: we were restored (the cell is filled).
    Restored,
}

/// A snapshot taken for a checkpoint that exits after saving: the other threads stay stopped
/// until the process exits, so that nothing they do after the snapshot happens in the first
/// life (every restore does it). [`Parked::release`] lets them go when the checkpoint fails.
/// Dropped (a panic while the image is written), it lets the threads go too.
#[derive(Debug)]
pub struct Parked {
    raw: *mut Capture,
    count: usize,
    signal: i32,
    old_mask: u64,
    old: KernelSigaction,
    released: bool,
}

impl Parked {
    /// The capture; the stopped threads only wait on it.
    pub fn capture(&self) -> &Capture {
        // SAFETY: `raw` stays a live, leaked Box until `release` reclaims it; the stopped
        // threads only read it and wait on `release`.
        unsafe { &*self.raw }
    }

    /// Lets the other threads go (the checkpoint failed or starts again) and gives the
    /// capture back; allocations go to the system allocator again.
    pub fn release(mut self) -> Box<Capture> {
        self.let_go();
        // SAFETY: `raw` came from Box::into_raw in `freeze`, and no handler uses it any more.
        unsafe { Box::from_raw(self.raw) }
    }

    fn let_go(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        // SAFETY: as in `capture`.
        let c = unsafe { &*self.raw };
        let_go(c, self.count);
        crate::alloc::system();
        let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(self.old_mask));
        let _ = sys::rt_sigaction(self.signal, Some(&self.old), None);
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        // (The capture itself is left: a panic may have come from inside it.)
        self.let_go();
    }
}

/// Lets the parked threads go, and waits until none of them touches the capture any more.
fn let_go(c: &Capture, count: usize) {
    c.release.store(1, Ordering::Release);
    sys::futex_wake_all(&c.release);
    loop {
        let left = c.left.load(Ordering::Acquire);
        if left as usize == count {
            break;
        }
        sys::futex_wait(&c.left, left, None);
    }
    ACTIVE.store(std::ptr::null_mut(), Ordering::Release);
}

/// Every signal blocked but the checkpoint `signal` and those a fault raises (blocking them
/// would not hold them off anyway).
fn quiet_mask(signal: i32) -> u64 {
    let bit = |s: i32| 1u64 << (s - 1);
    crate::hold::FAULTS
        .iter()
        .fold(!bit(signal), |m, &s| m & !bit(s))
}

/// Why freezing failed.
#[derive(Debug)]
pub enum FreezeError {
    Io(std::io::Error),
    /// The snapshot could not be forked (its errno).
    Fork(std::io::Error),
    /// Threads that did not reach their handler within the bound: (tid, …) as given.
    Unresponsive(Vec<i32>),
    /// The process changed since it was listed (what changed): start again.
    Changed(&'static str),
}

impl From<std::io::Error> for FreezeError {
    fn from(e: std::io::Error) -> Self {
        FreezeError::Io(e)
    }
}

/// Stops every thread in its signal handler, then sends the checkpoint signal to the calling
/// thread, whose handler forks the snapshot; returns once the snapshot exists (or, in a restored
/// process, once resumed). Threads that do not park within `bound` fail the checkpoint and are
/// released. With `keep_parked` (and the SDK's allocator in use) the others stay stopped
/// ([`Frozen::Parked`]).
pub fn freeze(
    signal: i32,
    capture: Box<Capture>,
    bound: Duration,
    keep_parked: bool,
) -> Result<Frozen, FreezeError> {
    let mut capture = capture;
    capture.own_ids = capture
        .own_fds()
        .into_iter()
        .filter_map(|fd| Some((fd, sys::fstat_ino(fd)?)))
        .collect();
    let stacks = sys::HandlerStacks::new(capture.threads.len())?;
    // The checkpoint's own, like its buffers: the snapshot runs on one of them, the image has
    // none (see `checkpoint`), and neither life keeps them.
    capture.own_buffers.push(stacks.range());
    capture.stacks = Some(stacks);
    let old = sys::install_handler(signal, on_checkpoint_signal)?;
    // This thread takes the checkpoint signal, and no other asynchronous one until the threads
    // are let go: a runtime's handler run here while the others are parked would wait for them
    // (SBCL's and Boehm's stop-the-world signals: its handler waits for a collection whose
    // thread is parked; a Lisp handler allocating under a lock a parked thread holds). What
    // arrives meanwhile stays pending, is saved with the others, and is handled once the mask
    // is back (in both lives).
    // (Not the signals of POSIX timers it takes: one pending at the snapshot is not restored, so
    // it is handled as before, and a checkpoint it interrupts starts again.)
    let current = sys::sigprocmask(libc::SIG_BLOCK, Some(0))?;
    let quiet = quiet_mask(signal) & !(capture.timer_signals & !current);
    let old_mask = sys::sigprocmask(libc::SIG_SETMASK, Some(quiet))?;
    capture.caller_mask = old_mask;
    crate::checkpoint::pause_for_tests(b's');
    // The timers before any thread is signalled, and so before any signal queue is read: one
    // armed now that reads disarmed once the queues are read came due in between (`handle`).
    // (A thread stopped through ptrace earlier has its queue refused, not read.)
    capture.itimers_armed_before = crate::state::timers::read().map(|[_, value]| value != 0);
    for (t, slot) in &capture.posix_timers {
        slot[2].store(crate::state::posix_timers::read(t.id).0, Ordering::Relaxed);
    }
    let restore_disposition = || {
        let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(old_mask));
        let _ = sys::rt_sigaction(signal, Some(&old), None);
    };
    let raw = Box::into_raw(capture);
    // SAFETY: `raw` is a live, leaked Box until it is reclaimed below.
    let c = unsafe { &*raw };
    ACTIVE.store(raw, Ordering::Release);
    // Threads recorded already (stopped by ptrace, see crate::traced) take no signal. Nothing
    // is allocated from here on: a stopped thread may hold a lock the allocator needs.
    let mut count = unparked(c).count();
    c.expected.store(count as u32, Ordering::Release);
    for t in unparked(c) {
        note_blocked(t);
    }
    for t in unparked(c) {
        if let Err(e) = signal_thread(c, t, signal, &mut count) {
            return Err(abandon(c, old_mask, e.into()));
        }
    }
    let deadline = Instant::now() + bound;
    // Threads started since the listing by threads not yet stopped are found and stopped in
    // turn, until a listing finds no new one: a stopped thread starts none. Meanwhile the main
    // thread waits in its handler (it takes the process's signal queue once no other runs).
    let main = sys::getpid();
    let main_waits = || {
        main != c.caller
            && c.threads.iter().any(|t| {
                t.tid.load(Ordering::Relaxed) == main && t.done.load(Ordering::Acquire) == 0
            })
    };
    loop {
        if let Err(e) = wait_parked(c, &mut count, deadline, || usize::from(main_waits())) {
            return Err(abandon(c, old_mask, e));
        }
        match chase(c, signal, &mut count) {
            Ok(true) if Instant::now() < deadline => continue,
            // None new; or one could not be given a slot, or the bound passed: the caller's
            // handler finds the process changed, and the checkpoint starts again.
            Ok(_) => break,
            Err(e) => return Err(abandon(c, old_mask, e.into())),
        }
    }
    c.chased.store(1, Ordering::Release);
    sys::futex_wake_all(&c.parked);
    if let Err(e) = wait_parked(c, &mut count, deadline, || 0) {
        return Err(abandon(c, old_mask, e));
    }
    compiler_fence(Ordering::SeqCst);
    let sent = sys::tgkill_self(c.caller, signal);
    // ---- a restored process resumes here, after the tgkill system call ----
    compiler_fence(Ordering::SeqCst);
    if RESTORE_CELL.magic.load(Ordering::Acquire) == RESTORED_MAGIC {
        // The other threads resumed where they were interrupted, not in their handlers.
        ACTIVE.store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: `raw` came from Box::into_raw above; in this life nobody else refers to it.
        let mut capture = unsafe { Box::from_raw(raw) };
        restore_disposition();
        // The threads parked in this freeze's handler at the snapshot, and this one, resumed
        // where they were interrupted: counted out. (One the ptrace helper stopped inside an
        // earlier attempt's handler resumes there, and counts itself out as it leaves.)
        let here = capture.parked.load(Ordering::Acquire) + 1;
        let _ = HANDLERS_INSIDE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(here))
        });
        forget_abandoned();
        // The pipe copies were made after the descriptor scan, so the restored process never had
        // them: their numbers are not ours to close.
        for p in capture.pipes.drain(..) {
            std::mem::forget(p.copy_w);
            std::mem::forget(p.copy_r);
        }
        for (_, own, p) in capture.fifos.drain(..) {
            std::mem::forget(own);
            std::mem::forget(p.copy_w);
            std::mem::forget(p.copy_r);
        }
        // Likewise /proc/self/mem, and the shared-memory copies: MADV_DONTFORK, so never in the
        // image; their addresses may hold the launcher's restorer region by now.
        std::mem::forget(capture.mem.take());
        std::mem::forget(capture.maps_fd.take());
        for p in capture.fdinfos.drain(..) {
            p.abandon();
        }
        std::mem::forget(capture.pagemap.take());
        std::mem::forget(capture.guards.take());
        std::mem::forget(capture.maps_buf.take());
        // Not in the image either (its mappings' place may be another's by now).
        std::mem::forget(capture.stacks.take());
        for o in capture.shm.drain(..) {
            o.abandon();
        }
        for a in capture.aio.drain(..) {
            a.abandon();
        }
        for t in capture.tcp.drain(..) {
            t.abandon();
        }
        return Ok(Frozen::Restored);
    }
    // Kept stopped: only once the snapshot is sound, and with the allocator's private region
    // (from here on the C library's allocator may be locked by a stopped thread).
    // (Threads gone before they could be stopped are not in the image either way.)
    let sound = sent.is_ok()
        && c.changed.load(Ordering::Acquire) == 0
        && c.child.load(Ordering::Acquire) >= 0
        && c.threads.iter().any(|t| {
            t.tid.load(Ordering::Relaxed) == c.caller && t.done.load(Ordering::Acquire) != 0
        });
    // (A thread stopped inside the SDK's own allocator would hold its lock for good.)
    if keep_parked && sound && crate::alloc::idle() && crate::alloc::private() {
        return Ok(Frozen::Parked(Parked {
            raw,
            count,
            signal,
            old_mask,
            old,
            released: false,
        }));
    }
    let_go(c, count);
    restore_disposition();
    // SAFETY: `raw` came from Box::into_raw above and no handler uses it any more.
    let capture = unsafe { Box::from_raw(raw) };
    match snapshot_taken(&capture, sent, signal) {
        Ok(()) => Ok(Frozen::Snapshot(capture)),
        Err(e) => {
            // The capture goes: what its peeks kept open (locked files) stays known, or the
            // next checkpoint would scan it as the application's.
            for s in &capture.socks {
                s.kept().for_each(|f| crate::state::locks::keep(f, false));
            }
            Err(e)
        }
    }
}

/// Whether the threads' handlers made a snapshot (after they were let go).
fn snapshot_taken(
    capture: &Capture,
    sent: std::io::Result<()>,
    signal: i32,
) -> Result<(), FreezeError> {
    sent?;
    let me = capture
        .threads
        .iter()
        .find(|t| t.tid.load(Ordering::Relaxed) == capture.caller);
    let changed = capture.changed.load(Ordering::Acquire) as usize;
    if changed != 0 {
        return Err(FreezeError::Changed(CHANGES[changed]));
    }
    if me.is_none_or(|t| t.done.load(Ordering::Acquire) == 0) {
        return Err(std::io::Error::other(format!(
            "the checkpoint signal {signal} was not delivered to the calling thread"
        ))
        .into());
    }
    let child = capture.child.load(Ordering::Acquire);
    if child < 0 {
        return Err(FreezeError::Fork(std::io::Error::from_raw_os_error(
            -child as i32,
        )));
    }
    Ok(())
}

/// Sends the checkpoint signal to thread `t`, counted in `count`; one gone already is marked so
/// and counted out.
fn signal_thread(
    c: &Capture,
    t: &ThreadCapture,
    signal: i32,
    count: &mut usize,
) -> std::io::Result<()> {
    if let Err(e) = sys::tgkill_self(t.tid.load(Ordering::Relaxed), signal) {
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
        *count -= usize::from(mark_gone(t));
        c.expected.store(*count as u32, Ordering::Release);
    }
    Ok(())
}

/// Waits until every signalled thread has parked (or is gone), but `absent` of them, within
/// `deadline`. Async-signal-safe until the bound passes.
fn wait_parked(
    c: &Capture,
    count: &mut usize,
    deadline: Instant,
    absent: impl Fn() -> usize,
) -> Result<(), FreezeError> {
    loop {
        let parked = c.parked.load(Ordering::Acquire);
        if parked as usize + absent() >= *count {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            let late = c
                .threads
                .iter()
                .filter(|t| t.done.load(Ordering::Acquire) == 0)
                .map(|t| t.tid.load(Ordering::Relaxed))
                .filter(|&tid| tid != c.caller)
                .collect();
            return Err(FreezeError::Unresponsive(late));
        }
        // Woken by each thread that parks; every few milliseconds, looks for threads that
        // exited after their signal was sent (they never park).
        let slice = (deadline - now).min(Duration::from_millis(5));
        sys::futex_wait(&c.parked, parked, Some(slice));
        if c.parked.load(Ordering::Acquire) == parked {
            *count -= unparked(c).filter(|t| mark_gone(t)).count();
            c.expected.store(*count as u32, Ordering::Release);
            // A main thread waiting for the others to park looks again.
            sys::futex_wake_all(&c.parked);
        }
    }
}

/// Slots of threads signalled and not yet parked (the caller's aside).
fn unparked(c: &Capture) -> impl Iterator<Item = &ThreadCapture> {
    c.threads.iter().filter(|t| {
        t.done.load(Ordering::Acquire) == 0 && t.tid.load(Ordering::Relaxed) != c.caller
    })
}

/// Lists the threads again and signals each one not known yet (started since, by a thread not
/// yet stopped), in a slot of its own: a spare one, or one whose thread is gone. Whether it
/// found any; `Ok(false)` also when one found no slot (the caller's handler then sees more
/// threads than were recorded). Async-signal-safe.
fn chase(c: &Capture, signal: i32, count: &mut usize) -> std::io::Result<bool> {
    *count -= unparked(c).filter(|t| mark_gone(t)).count();
    c.expected.store(*count as u32, Ordering::Release);
    let (mut found, mut room, mut failed) = (false, true, None);
    sys::for_each_thread(|tid| {
        // (The kernel's io_uring workers are no threads of the program: see list_threads.)
        if tid == c.caller || !room || failed.is_some() || sys::task_is_io_worker(tid) {
            return;
        }
        let slot_of = |t: &&ThreadCapture| t.tid.load(Ordering::Relaxed) == tid;
        let state = |t: &ThreadCapture| t.done.load(Ordering::Acquire);
        if c.threads
            .iter()
            .filter(slot_of)
            .any(|t| matches!(state(t), 0 | 1))
        {
            return;
        }
        // A gone thread's slot with this id first: the handler finds its slot by id.
        let Some(t) = c
            .threads
            .iter()
            .find(slot_of)
            .or_else(|| c.threads.iter().find(|t| state(t) == SPARE))
            .or_else(|| c.threads.iter().find(|t| state(t) == GONE))
        else {
            room = false;
            return;
        };
        t.tid.store(tid, Ordering::Relaxed);
        t.done.store(0, Ordering::Release);
        note_blocked(t);
        *count += 1;
        c.expected.store(*count as u32, Ordering::Release);
        found = true;
        if let Err(e) = signal_thread(c, t, signal, count) {
            failed = Some(e);
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(found && room),
    }
}

/// How many spare slots a capture of `threads` threads keeps for threads started meanwhile.
fn spare_slots(threads: usize) -> usize {
    16 + threads / 2
}

/// Marks a thread that no longer exists (it exited since the listing) [`GONE`]: it is not
/// waited for. Whether it was marked now.
fn mark_gone(t: &ThreadCapture) -> bool {
    let exists = sys::tgkill_self(t.tid.load(Ordering::Relaxed), 0);
    exists.is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH))
        && t.done
            .compare_exchange(0, GONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// Gives up on a freeze: releases whoever parked and leaves the capture allocated for good. The
/// handler stays installed (it returns at once from now on): a thread whose signal is still pending
/// may enter it at any later time, and the default action of a real-time signal would kill it.
fn abandon(c: &Capture, old_mask: u64, e: FreezeError) -> FreezeError {
    ACTIVE.store(std::ptr::null_mut(), Ordering::SeqCst);
    c.chased.store(1, Ordering::Release);
    c.release.store(1, Ordering::Release);
    sys::futex_wake_all(&c.release);
    let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(old_mask));
    // Known, so that the next attempt does not take its descriptors for the application's (a
    // probe under a signal flood saw them refused as "/proc files", and left open).
    let raw = c as *const Capture as *mut Capture;
    let _ = ABANDONED.iter().any(|slot| {
        slot.compare_exchange(
            std::ptr::null_mut(),
            raw,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    });
    e
}

/// Creates the pipe a [`PipeCopy`] tees into, sized like the pipe it copies.
pub fn pipe_copy(read_fd: i32) -> std::io::Result<PipeCopy> {
    let (r, w) = sys::pipe_nonblock()?;
    if let Ok(size) = sys::fcntl(read_fd, libc::F_GETPIPE_SZ, 0) {
        let _ = sys::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as u64);
    }
    Ok(PipeCopy {
        read_fd,
        copy_w: w,
        copy_r: r,
        bytes: AtomicI64::new(0),
    })
}
