//! io_uring instances at rest. libuv 1.45 and later make one for every event loop, to batch its
//! epoll changes (`uv__epoll_ctl_prep`): Node.js 22 and later have four, uvloop one per loop.
//!
//! A ring is kept when the kernel holds nothing for it but its counters: every request taken
//! from the submission queue has completed (one completion each, or none for a dropped entry),
//! every completion has been consumed, no request is waiting on a poll, nothing overflowed, and
//! nothing is registered with it (files, buffers, credentials, provided buffers, an eventfd),
//! nor is it polled by a kernel thread (SQPOLL). Anything else is refused by name: a request in
//! flight (a read, a timeout) lives only in the kernel and cannot be read back.
//!
//! The restore makes a ring of the same sizes, brings its kernel-side counters (the submission
//! head, the completion tail) to the checkpoint's by submitting no-op requests, puts back the
//! memory the process shared with it (the counters it writes, the stale entries, the index
//! array), and the restorer maps it where the process had it. A library that keeps copies of
//! the counters in its own memory (liburing) finds the kernel where it left it.
//!
//! Counters cannot show every request in flight (one request may post several completions, or
//! none), so the memory the process shares with the ring is read too: the last completions and
//! the last requests taken must pair up, and none may say that more will come. What that cannot
//! see: a multishot request (a repeating timeout) whose last completion is older than a queue's
//! worth, while a request as old is in flight and makes the counters pair up.
//!
//! What the kernel keeps and shows nowhere is asked about without changing it where it can be:
//! provided buffers, an eventfd, credentials (personalities), restrictions, a wait region.
//! What cannot be asked is not restored and not refused: io-wq worker limits and CPU affinity
//! (IORING_REGISTER_IOWQ_MAX_WORKERS, IOWQ_AFF), the clock of waits (IORING_REGISTER_CLOCK).
//!
//! The kernel does not show every setup flag. What changes the memory layout is told apart by
//! the sizes of the ring's memory regions (SQE128, CQE32) and refused where it cannot be; the
//! rest is restored without the flag: SINGLE_ISSUER (checked by no one then), COOP_TASKRUN,
//! IOPOLL (completions come by interrupt); DEFER_TASKRUN, which a thread would see (without it
//! a completion interrupts its sleeps), is told by a registration only such a ring accepts and
//! refused. With two differences a process may see: without SUBMIT_ALL
//! a submission stops at an entry that fails to be prepared (the rest stay queued), and a
//! CQE_MIXED ring that never posted a 32-byte completion (one that did is refused) fails a
//! request that would post one (EINVAL). A ring without its index array (NO_SQARRAY, as libuv
//! makes them on 6.6+) is restored with one holding slot i at index i, which is what the kernel
//! does without one.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

use super::PayloadRef;
use crate::procfs::MapEntry;
use crate::sys::{self, SharedView};

/// mmap offsets of a ring's memory (linux/io_uring.h): the rings (either name), the entries.
pub const OFF_SQ_RING: u64 = 0;
pub const OFF_CQ_RING: u64 = 0x800_0000;
pub const OFF_SQES: u64 = 0x1000_0000;
const OFF_MASK: u64 = 0xf800_0000;

/// No-op requests a restore may submit to bring a ring's counters back (25-100 ns each here,
/// a queue's worth per call: 16 Mi take 0.4-1.7 s). A ring that has taken more is refused at
/// the checkpoint, an image whose rings add up to more at the restore.
pub const MAX_REPLAY: u64 = 1 << 24;
/// Dropped entries a ring may have: a restore brings each back with a call of its own.
pub const MAX_DROPPED: u64 = 4096;

/// The calls an instance of `thaw serve` may make to bring a ring's counters back (each a few
/// steps of its plan).
const MAX_SERVED_CALLS: u64 = 64;

/// Where the memory an instance of `thaw serve` makes a ring on holds what the process had in
/// its rings and entries (see [`Ring::instance_memory`]).
pub const STAGE_RINGS: u64 = 0x1100_0000;
pub const STAGE_SQES: u64 = 0x1200_0000;

const SETUP_CQSIZE: u32 = 1 << 3;
const SETUP_SQE128: u32 = 1 << 10;
const SETUP_CQE32: u32 = 1 << 11;
const SETUP_NO_MMAP: u32 = 1 << 14;
const ENTER_GETEVENTS: u32 = 1;
const SQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;
const REGISTER_EVENTFD: u32 = 4;
const UNREGISTER_EVENTFD: u32 = 5;
const REGISTER_PBUF_STATUS: u32 = 26;
/// Where the completion entries start in the rings region (`struct io_rings`, cache-aligned).
const CQES_AT: u64 = 64;
const PAGE: u64 = 4096;

/// An io_uring instance at rest (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Bytes per submission entry (64, or 128 with IORING_SETUP_SQE128) and per completion
    /// (16, or 32 with IORING_SETUP_CQE32).
    pub sqe_size: u32,
    pub cqe_size: u32,
    /// The kernel's counters: submission entries taken, completions posted.
    pub sq_head: u32,
    pub cq_tail: u32,
    /// The rings region as the process's mapping of it showed it (counters, completions, the
    /// index array), and the submission entries, as the handler copied them.
    pub rings: Option<PayloadRef>,
    pub sqes: Option<PayloadRef>,
    /// The process's mappings of it (start, length) with the most of each region: copied in the
    /// checkpoint's handler. Not in the image.
    #[serde(skip)]
    pub(crate) seen: [(u64, u64); 2],
    #[serde(skip)]
    pub(crate) ino: u64,
    /// The memfd a restore made it on (its mappings are the ring's); 0: its own memory.
    #[serde(skip)]
    pub(crate) memory_ino: u64,
}

/// What a ring's fdinfo says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Info {
    sq_mask: u32,
    sq_head: u32,
    sq_tail: u32,
    cached_sq_head: u32,
    cq_mask: u32,
    cq_head: u32,
    cq_tail: u32,
    cached_cq_tail: u32,
}

impl Info {
    /// Parses the fdinfo text; `Err` says what is refused.
    fn parse(text: &str) -> Result<Info, String> {
        let num = |key: &str| -> Result<u32, String> {
            let v = crate::procfs::field(text, key)
                .ok_or_else(|| format!("its {key} cannot be read from fdinfo"))?;
            match v.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16),
                None => v.parse(),
            }
            .map_err(|_| format!("its {key} cannot be read from fdinfo"))
        };
        let sq_thread = crate::procfs::field(text, "SqThread").unwrap_or("-1");
        if sq_thread != "-1" {
            return Err("a kernel thread polls its submission queue (IORING_SETUP_SQPOLL; libuv's file-system ring with UV_USE_IO_URING=1): restored it would lose that thread; run without it".into());
        }
        for (key, what) in [
            ("UserFiles", "registered files"),
            ("UserBufs", "registered buffers"),
        ] {
            if num(key)? != 0 {
                return Err(format!(
                    "it holds {what} ({key} {}), which are not restored; unregister them before the checkpoint",
                    num(key)?
                ));
            }
        }
        if text.lines().any(|l| l.starts_with("Personalities:")) {
            return Err("it holds registered credentials (IORING_REGISTER_PERSONALITY), which are not restored".into());
        }
        if text
            .lines()
            .any(|l| l.starts_with("NAPI:") && !l.contains("disabled"))
        {
            return Err("it busy-polls network queues (NAPI), which is not restored".into());
        }
        let listed = |head: &str| {
            text.lines()
                .skip_while(|l| !l.starts_with(head))
                .skip(1)
                .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
                .count()
        };
        if listed("PollList:") > 0 {
            return Err(format!(
                "{} of its requests wait for a descriptor to be ready (poll, or a receive armed on one): requests in flight live in the kernel and are not restored; let them complete or cancel them before the checkpoint",
                listed("PollList:")
            ));
        }
        if listed("CqOverflowList:") > 0 {
            return Err("completions overflowed its completion queue and wait in the kernel: reap them before the checkpoint".into());
        }
        Ok(Info {
            sq_mask: num("SqMask")?,
            sq_head: num("SqHead")?,
            sq_tail: num("SqTail")?,
            cached_sq_head: num("CachedSqHead")?,
            cq_mask: num("CqMask")?,
            cq_head: num("CqHead")?,
            cq_tail: num("CqTail")?,
            cached_cq_tail: num("CachedCqTail")?,
        })
    }

    /// Whether nothing is in it: every entry submitted taken and completed once (less those
    /// dropped), every completion consumed. `Err` says what is not.
    fn at_rest(&self, dropped: u32) -> Result<(), String> {
        if self.sq_tail != self.sq_head || self.cached_sq_head != self.sq_head {
            return Err(format!(
                "{} submission entries wait to be submitted: submit them (io_uring_enter) before the checkpoint",
                self.sq_tail.wrapping_sub(self.sq_head)
            ));
        }
        if self.cq_head != self.cq_tail || self.cached_cq_tail != self.cq_tail {
            return Err(format!(
                "{} completions wait to be reaped: reap them before the checkpoint",
                self.cached_cq_tail.wrapping_sub(self.cq_head)
            ));
        }
        let taken = self.sq_head.wrapping_sub(dropped);
        if taken != self.cq_tail {
            return Err(format!(
                "{} of its requests have not completed ({} taken, {} completions): requests in flight (a read, a timeout) live in the kernel and are not restored; let them complete or cancel them before the checkpoint (completions skipped with IOSQE_CQE_SKIP_SUCCESS, or posted more than once by one request, cannot be told from these)",
                taken.wrapping_sub(self.cq_tail) as i32,
                taken,
                self.cq_tail
            ));
        }
        Ok(())
    }
}

/// The bytes of a ring's rings region: header and completions, then (unless `array` is false)
/// the submission index array, cache-aligned.
fn rings_bytes(sq: u32, cq: u32, cqe_size: u32, array: bool) -> u64 {
    // (With 32-byte completions the kernel doubles the header's share too.)
    let off = (CQES_AT + u64::from(cq) * 16) * u64::from(cqe_size / 16);
    if array {
        off.next_multiple_of(64) + 4 * u64::from(sq)
    } else {
        off
    }
}

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE)
}

/// How a mapping of an io_uring instance is restored: `fd` is filled in once the mapping is
/// matched with its descriptor. `Err`: a mapping of a kind or part that is not restored.
pub(crate) fn backing(m: &MapEntry) -> Result<super::memory::Backing, String> {
    let kind = m.offset & OFF_MASK;
    if ![OFF_SQ_RING, OFF_CQ_RING, OFF_SQES].contains(&kind)
        || (kind == OFF_CQ_RING && m.name != "anon_inode:[io_uring]")
    {
        return Err(format!(
            "{}: an io_uring instance's provided-buffer ring or memory region (mmap offset {:#x}), which is not restored",
            m.describe(),
            m.offset
        ));
    }
    if m.offset != kind {
        return Err(format!(
            "{}: part of an io_uring instance's ring mapping (its first pages unmapped), which is not restored",
            m.describe()
        ));
    }
    if !m.shared() {
        return Err(format!(
            "{}: an io_uring instance's memory mapped privately (copy-on-write), which is not restored",
            m.describe()
        ));
    }
    Ok(super::memory::Backing::IoRing {
        fd: -1,
        offset: m.offset,
    })
}

/// The name of the memfd a restored ring's memory is (see [`Ring::recreate`]): it says which
/// descriptor and entry sizes, for a checkpoint of the restored process.
pub fn memory_name(fd: i32, sqe_size: u32, cqe_size: u32) -> String {
    format!("thaw io_uring fd {fd} sqe {sqe_size} cqe {cqe_size}")
}

/// (descriptor, submission entry size, completion size) of a mapping named by [`memory_name`]
/// (`/memfd:NAME (deleted)` in /proc/PID/maps).
pub(crate) fn restored_memory(name: &str) -> Option<(i32, u32, u32)> {
    let rest = name.strip_prefix("/memfd:thaw io_uring fd ")?;
    let rest = rest.strip_suffix(" (deleted)").unwrap_or(rest);
    let mut w = rest.split(' ');
    let fd = w.next()?.parse().ok()?;
    let sqe = w.nth(1)?.parse().ok().filter(|s| [64, 128].contains(s))?;
    let cqe = w.nth(1)?.parse().ok().filter(|s| [16, 32].contains(s))?;
    Some((fd, sqe, cqe))
}

/// The mapping offset in a restored ring's memfd for a ring mapping at mmap `offset`.
pub fn memory_offset(offset: u64) -> u64 {
    if offset == OFF_SQES {
        OFF_SQES
    } else {
        0
    }
}

/// Whether this kernel can make a ring the way a restore does (see [`Ring::recreate`]): on
/// memory of a memfd, over several pages (Linux 6.13). Asked once; a checkpoint that could not
/// be restored here is refused at once.
fn restorable() -> Result<(), String> {
    static ANSWER: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let probe = Ring {
                sq_entries: 256,
                cq_entries: 512,
                sqe_size: 64,
                cqe_size: 16,
                rings: Some(PayloadRef::default()),
                sqes: Some(PayloadRef::default()),
                ..Default::default()
            };
            probe
                .recreate(-1, |_| Ok(Vec::new()))
                .map(drop)
                .map_err(|why| {
                    format!("this kernel cannot make one again the way a restore does ({why})")
                })
        })
        .clone()
}

/// Ring `fd`'s fdinfo with its fields: the kernel prints them only when it gets the ring's lock
/// at once (Linux 6.18), so `first` is read again, a few hundred times at most, while another
/// thread holds it.
pub(crate) fn whole_fdinfo(fd: i32, first: String) -> String {
    let mut info = first;
    for _ in 0..500 {
        if info.contains("SqMask:") {
            break;
        }
        std::thread::yield_now();
        info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    }
    info
}

/// Whether fdinfo text (bytes, as the handler reads it) is a ring's whole fdinfo (see
/// [`whole_fdinfo`]). No allocation.
pub(crate) fn is_whole(text: &[u8]) -> bool {
    text.windows(7).any(|w| w == b"SqMask:")
}

/// A ring at the scan, while the process runs: refused by name, or its sizes and where the
/// process maps it. Counters and memory are taken again in the checkpoint's handler.
pub(crate) fn inspect(fd: i32, text: &str, maps: &[MapEntry]) -> Result<Ring, String> {
    let info = Info::parse(text)?;
    let ino: u64 = crate::procfs::field(text, "ino")
        .and_then(|v| v.parse().ok())
        .ok_or("its inode cannot be read from fdinfo")?;
    let (sq, cq) = (info.sq_mask.wrapping_add(1), info.cq_mask.wrapping_add(1));
    if !sq.is_power_of_two() || !cq.is_power_of_two() {
        return Err(format!(
            "its queue sizes ({sq}, {cq}) are not powers of two"
        ));
    }
    // Its mappings: of the ring itself, or of the memfd a restore made it on.
    // (A duplicate's is named by the descriptor the restore made.)
    let made = |m: &MapEntry| {
        restored_memory(&m.name).filter(|r| {
            use std::os::unix::fs::MetadataExt;
            r.0 == fd
                || std::fs::metadata(format!("/proc/self/fd/{}", r.0)).is_ok_and(|s| s.ino() == ino)
        })
    };
    // Its own mappings if it has any (a ring the kernel made); else those of the one memfd a
    // restore made it on (a stale one of a ring closed since, named by a number now another's,
    // is not its).
    let own: Vec<&MapEntry> = maps
        .iter()
        .filter(|m| m.inode == ino && m.name == "anon_inode:[io_uring]")
        .collect();
    let restored: Vec<&MapEntry> = maps.iter().filter(|m| made(m).is_some()).collect();
    let (mine, memory_ino) = if !own.is_empty() || restored.is_empty() {
        (own, 0)
    } else {
        let first = restored[0].inode;
        if restored.iter().any(|m| m.inode != first) {
            return Err("the memory of more than one restored io_uring instance is mapped under its number, so which is its own cannot be told".into());
        }
        (restored, first)
    };
    let longest = |rings: bool| {
        mine.iter()
            .filter(|m| (m.offset == OFF_SQES) != rings)
            .max_by_key(|m| m.end - m.start)
            .map(|m| (m.start, m.end - m.start))
    };
    let (Some(rings_seen), Some(sqes_seen)) = (longest(true), longest(false)) else {
        return Err("its rings are not mapped from it (IORING_SETUP_NO_MMAP: in the process's own memory, where the kernel's hold on them is not restored), or not both are mapped".into());
    };
    let (sqe_size, cqe_size) = match mine.iter().find_map(|m| made(m)) {
        Some((_, sqe, cqe)) => (sqe, cqe),
        None => entry_sizes(fd, sq, cq)?,
    };
    restorable()?;
    // At rest now (the handler looks again): dropped entries are counted in the rings.
    let mut dropped = [0u8; 4];
    if sys::read_own_memory(dropped.as_mut_ptr() as u64, rings_seen.0 + 32, 4) != 4 {
        return Err("its rings cannot be read".into());
    }
    info.at_rest(u32::from_ne_bytes(dropped))?;

    let ring = Ring {
        sq_entries: sq,
        cq_entries: cq,
        sqe_size,
        cqe_size,
        sq_head: info.sq_head,
        cq_tail: info.cq_tail,
        rings: None,
        sqes: None,
        seen: [rings_seen, sqes_seen],
        ino,
        memory_ino,
    };
    let (dropped, complete) = ring.replays();
    if dropped > MAX_DROPPED {
        return Err(format!(
            "{dropped} of its entries were dropped (an index naming no entry): a restore brings each back with a system call of its own, and more than {MAX_DROPPED} is refused; make the ring again"
        ));
    }
    if dropped + complete > MAX_REPLAY {
        return Err(format!(
            "it has taken {} requests: a restore brings its counters back one no-op request at a time, and more than {MAX_REPLAY} is refused; make the ring again now and then (libuv: a new event loop)",
            info.sq_head
        ));
    }
    // Enabled (not IORING_SETUP_R_DISABLED); another thread's single-issuer ring says EEXIST.
    match sys::io_uring_enter(fd, 0, 0, 0) {
        0 => {}
        e if e == -(libc::EEXIST as i64) => {}
        e if e == -(libc::EBADFD as i64) => {
            return Err(
                "it is not enabled yet (IORING_SETUP_R_DISABLED), which is not restored".into(),
            )
        }
        e => {
            return Err(format!(
                "it cannot be entered: {}",
                std::io::Error::from_raw_os_error(-e as i32)
            ))
        }
    }
    restrictions(fd)?;
    deferred_task_run(fd)?;
    wait_region(fd)?;
    // Provided buffers and personalities are asked for in the checkpoint's handler (see
    // provided_buffers, personality_probe).
    Ok(ring)
}

/// The entry sizes of ring `fd` of `sq` entries and `cq` completions, from the sizes of the
/// kernel's regions: the entries' is the least length it maps; the rings' shows in how many
/// pages a mapping of it gets.
fn entry_sizes(fd: i32, sq: u32, cq: u32) -> Result<(u32, u32), String> {
    let sqe_size = {
        let (small, big) = (pages(u64::from(sq) * 64), pages(u64::from(sq) * 128));
        if small == big {
            return Err(format!(
                "its {sq} submission entries fit one page at 64 or 128 bytes each, so whether it was set up with IORING_SETUP_SQE128 cannot be told: rings of 64 entries or more are restored"
            ));
        }
        if SharedView::new(fd, OFF_SQES, (small * PAGE) as usize).is_ok() {
            64
        } else if SharedView::new(fd, OFF_SQES, (big * PAGE) as usize).is_ok() {
            128
        } else {
            return Err("its submission entries cannot be mapped".into());
        }
    };
    let cqe_size = {
        let view = SharedView::new(
            fd,
            OFF_SQ_RING,
            (pages(rings_bytes(sq, cq, 32, true)) * PAGE) as usize,
        )
        .map_err(|e| format!("its rings cannot be mapped: {e}"))?;
        let have = view
            .pages_in()
            .map_err(|e| format!("its rings cannot be measured: {e}"))? as u64;
        let fits = |size| {
            [true, false]
                .iter()
                .any(|&a| pages(rings_bytes(sq, cq, size, a)) == have)
        };
        match (fits(16), fits(32)) {
            (true, false) => 16,
            (false, true) => 32,
            (true, true) => return Err(format!(
                "its {cq} completions fit the same pages at 16 or 32 bytes each, so whether it was set up with IORING_SETUP_CQE32 cannot be told"
            )),
            (false, false) => return Err(format!("its rings region ({have} pages) has a layout this thaw does not know")),
        }
    };
    Ok((sqe_size, cqe_size))
}

/// A ring restricted to some requests and registrations (IORING_REGISTER_RESTRICTIONS, which
/// the kernel shows nowhere) would come back unrestricted: asked whether it answers a probe of
/// its operations (IORING_REGISTER_PROBE), which a restricted ring refuses unless its
/// restrictions allow it (EACCES; so does the eventfd probe in the handler).
fn restrictions(fd: i32) -> Result<(), String> {
    const REGISTER_PROBE: u32 = 8;
    const REGISTER_RESTRICTIONS: u32 = 11;
    const REGISTER_ENABLE_RINGS: u32 = 12;
    // struct io_uring_probe { last_op, ops_len, resv, resv2[3] } and 256 struct io_uring_probe_op.
    let mut probe = vec![0u8; 16 + 8 * 256];
    let probed = sys::io_uring_register(fd, REGISTER_PROBE, Some(&mut probe), 256);
    // Restricting and enabling again are refused (EBADFD) on an enabled ring; a restricted
    // one refuses them first (EACCES) unless its restrictions allow them too, as they may the
    // probe (a ring that allows every registration it is asked for here is not told apart).
    let restricting = sys::io_uring_register(fd, REGISTER_RESTRICTIONS, None, 0);
    let enabling = sys::io_uring_register(fd, REGISTER_ENABLE_RINGS, None, 0);
    // (And the handler's personality probe removes what it registers: id 0 is never one.)
    let unregistering = sys::io_uring_register(fd, UNREGISTER_PERSONALITY, None, 0);
    if [probed, restricting, enabling, unregistering].contains(&-(libc::EACCES as i64)) {
        return Err(
            "it is restricted (IORING_REGISTER_RESTRICTIONS), which is not restored".into(),
        );
    }
    Ok(())
}

/// A ring set up with IORING_SETUP_DEFER_TASKRUN runs its completion work only when its
/// thread asks for completions; a restore makes it without (the kernel shows the flag nowhere),
/// and then a completion interrupts that thread's sleeps (an epoll_wait returns EINTR). Told
/// by IORING_REGISTER_RESIZE_RINGS, which only such a ring accepts: given no parameters to
/// read, it fails with EFAULT there, EINVAL on any other ring, and changes nothing.
fn deferred_task_run(fd: i32) -> Result<(), String> {
    const REGISTER_RESIZE_RINGS: u64 = 33;
    match register_unreadable(fd, REGISTER_RESIZE_RINGS) {
        e if e == -(libc::EFAULT as i64) => Err(
            "it was set up with IORING_SETUP_DEFER_TASKRUN (its completion work waits for its thread to ask), which is not restored: without it a completion interrupts the thread's sleeps (EINTR)".into(),
        ),
        e if e == -(libc::EEXIST as i64) || e == -(libc::EACCES as i64) => {
            Err(probe_why(e, "it was set up with IORING_SETUP_DEFER_TASKRUN"))
        }
        _ => Ok(()),
    }
}

/// `io_uring_register(fd, op, arg, 1)` with an `arg` the kernel cannot read: it checks the ring
/// first, then fails to read the argument (EFAULT), and changes nothing.
fn register_unreadable(fd: i32, op: u64) -> i64 {
    sys::syscall6(libc::SYS_io_uring_register, [fd as u64, op, 8, 1, 0, 0])
}

/// A wait region (IORING_REGISTER_MEM_REGION with IORING_MEM_REGION_REG_WAIT_ARG, Linux 6.13:
/// wait arguments the process keeps in memory of its own) lives in the kernel, shown nowhere.
/// Told by registering another with an address the kernel cannot read: it refuses a second
/// region (EBUSY) before it reads anything, else fails to read it (EFAULT), and changes
/// nothing. (A wait with its arguments taken from the region could tell too, but an IOPOLL
/// ring refuses that wait whatever it holds.)
fn wait_region(fd: i32) -> Result<(), String> {
    const REGISTER_MEM_REGION: u64 = 34;
    match register_unreadable(fd, REGISTER_MEM_REGION) {
        // (A kernel without regions, before 6.13, says EINVAL: it cannot restore a ring
        // either, and `restorable` refuses it first.)
        e if e == -(libc::EFAULT as i64) || e == -(libc::EINVAL as i64) => Ok(()),
        e if e == -(libc::EBUSY as i64) => Err("it has a registered wait region (IORING_REGISTER_MEM_REGION), which lives in the kernel and is not restored".into()),
        e => Err(probe_why(e, "it has a registered wait region")),
    }
}

/// Provided buffers (a buffer ring, or IORING_OP_PROVIDE_BUFFERS) live in the kernel, and the
/// kernel lists them nowhere: every group is asked for (IORING_REGISTER_PBUF_STATUS, 6.8+;
/// about 8 ms a ring). Asked in the checkpoint's handler, every other thread parked: a buffer
/// ring registered after the descriptor scan changes no counter the handler compares, and would
/// be lost. Async-signal-safe. The first group that holds buffers, [`PBUF_NONE`], or a negative
/// errno: EINVAL from every group (a kernel before 6.8), else what the kernel refused with.
pub(crate) fn provided_buffers(fd: i32) -> i64 {
    let mut first = PBUF_NONE;
    let mut unknown = 0u32;
    for group in 0..=u16::MAX {
        // struct io_uring_buf_status { buf_group, head, resv[8] }
        let mut arg = [0u8; 40];
        arg[..4].copy_from_slice(&u32::from(group).to_ne_bytes());
        let r = sys::io_uring_register(fd, REGISTER_PBUF_STATUS, Some(&mut arg), 1);
        if r == -(libc::ENOENT as i64) {
            continue;
        }
        if r == -(libc::EINVAL as i64) {
            unknown += 1;
        } else if r < 0 {
            // Another thread's ring (EEXIST), restricted (EACCES): said as it is.
            return r;
        }
        if first == PBUF_NONE {
            first = i64::from(group);
        }
    }
    if unknown == 1 << 16 {
        -(libc::EINVAL as i64)
    } else {
        first
    }
}

/// No group holds provided buffers (see [`provided_buffers`]); before the handler asked.
pub(crate) const PBUF_NONE: i64 = -1;
pub(crate) const PBUF_NOT_ASKED: i64 = i64::MIN;

/// What [`provided_buffers`] says, as a refusal.
pub(crate) fn provided_buffers_refusal(fd: i32, r: i64) -> Option<String> {
    match r {
        PBUF_NONE => None,
        PBUF_NOT_ASKED => Some(format!(
            "fd {fd} (io_uring): whether it holds provided buffers was not asked"
        )),
        g if g >= 0 => Some(format!(
            "fd {fd} (io_uring): it holds provided buffers (group {g}), which live in the kernel and are not restored; remove them before the checkpoint"
        )),
        e if e == -(libc::EINVAL as i64) => Some(format!(
            "fd {fd} (io_uring): this kernel cannot tell whether it holds provided buffers (IORING_REGISTER_PBUF_STATUS, Linux 6.8)"
        )),
        e => probe_refusal(fd, e, "it holds provided buffers"),
    }
}

impl Ring {
    /// Takes the state the checkpoint's handler read while every thread was parked: its fdinfo
    /// `text`, and the copy of the process's mapping of its rings. `Err`: it was in use then, and
    /// the checkpoint starts again.
    pub(crate) fn settle(
        &mut self,
        fd: i32,
        text: &str,
        copy: Option<(&[u8], &[u8])>,
    ) -> Result<(), String> {
        let busy = |why: &str| format!("fd {fd} (io_uring): {why}");
        let info = Info::parse(text).map_err(|why| busy(&why))?;
        let (rings, sqes) = copy
            .ok_or_else(|| busy("its memory could not be read while the threads were stopped"))?;
        let word = |at: usize| {
            rings
                .get(at..at + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        };
        // Still the ring the scan saw (a number or an address taken again meanwhile is not).
        let ino: Option<u64> = crate::procfs::field(text, "ino").and_then(|v| v.parse().ok());
        if ino != Some(self.ino)
            || (info.sq_mask, info.cq_mask) != (self.sq_entries - 1, self.cq_entries - 1)
            || (word(16), word(20)) != (Some(info.sq_mask), Some(info.cq_mask))
        {
            return Err(busy(
                "it was closed or made again while the threads were being stopped",
            ));
        }
        // struct io_rings: sq head, tail, cq head, tail, masks, entries, sq_dropped at 32.
        let dropped = word(32).ok_or_else(|| busy("its rings could not be read"))?;
        let shown = [word(0), word(4), word(8), word(12)];
        if shown
            != [
                Some(info.sq_head),
                Some(info.sq_tail),
                Some(info.cq_head),
                Some(info.cq_tail),
            ]
            || (info.sq_head, info.cq_tail) != (self.sq_head, self.cq_tail)
        {
            return Err(busy("it was in use while the threads were being stopped"));
        }
        info.at_rest(dropped).map_err(|why| {
            busy(&format!(
                "in use while the threads were being stopped: {why}"
            ))
        })?;
        self.pending(rings, sqes)
            .map_err(|why| format!("fd {fd} (io_uring): {why}"))?;
        Ok(())
    }

    /// What the counters cannot show, read in the memory the process shares with the ring:
    /// completions it posts are in its completion queue (the last `cq_entries`), the requests
    /// it took are in its submission queue (the last `sq_entries`). Refused: a request whose
    /// last completion says more will come (IORING_CQE_F_MORE: a multishot timeout or receive, a
    /// zero-copy send's notification), completions of a ring set up with IORING_SETUP_CQE_MIXED
    /// (32-byte ones, or the padding for them: the flag is not restored), and a request seen
    /// taken with no completion seen (its completion's count made up by a request that posted
    /// two, or by another ring's IORING_OP_MSG_RING).
    fn pending(&self, rings: &[u8], sqes: &[u8]) -> Result<(), String> {
        const F_MORE: u32 = 1 << 1;
        const F_SKIP: u32 = 1 << 5;
        const F_32: u32 = 1 << 15;
        const SQE_SKIP: u8 = SQE_CQE_SKIP_SUCCESS;
        let u32_at = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .map(|v| u32::from_ne_bytes(v.try_into().expect("4 bytes")))
        };
        let u64_at = |b: &[u8], at: usize| {
            b.get(at..at + 8)
                .map(|v| u64::from_ne_bytes(v.try_into().expect("8 bytes")))
        };
        // The completions still in the queue, oldest first: (user_data, flags).
        let seen = self.cq_tail.min(self.cq_entries);
        let mut last: std::collections::HashMap<u64, u32> = Default::default();
        for k in 0..seen {
            let i = self.cq_tail.wrapping_sub(seen).wrapping_add(k) & (self.cq_entries - 1);
            let at = CQES_AT as usize + i as usize * self.cqe_size as usize;
            let (Some(data), Some(flags)) = (u64_at(rings, at), u32_at(rings, at + 12)) else {
                return Err("its completion queue could not be read".into());
            };
            if flags & (F_32 | F_SKIP) != 0 {
                return Err("it posts completions of two sizes (IORING_SETUP_CQE_MIXED), which is not restored".into());
            }
            last.insert(data, flags);
        }
        if let Some((data, _)) = last.iter().find(|l| l.1 & F_MORE != 0) {
            return Err(format!(
                "its request {data:#x} will complete again (IORING_CQE_F_MORE: a multishot request, or a zero-copy send waiting for its notification): requests in flight live in the kernel and are not restored; cancel it before the checkpoint"
            ));
        }
        // The requests taken, newest first (the oldest slot may already hold the next one the
        // process is preparing), each with a completion seen.
        let array_at = self.array_at();
        let array: Vec<u32> = (0..self.sq_entries)
            .map(|i| u32_at(rings, array_at + 4 * i as usize).unwrap_or(0))
            .collect();
        let indexed = array.iter().any(|&v| v != 0);
        let taken = self.sq_head.min(self.sq_entries - 1).min(seen);
        for k in 1..=taken {
            let index = self.sq_head.wrapping_sub(k) & (self.sq_entries - 1);
            let slot = if indexed {
                array[index as usize]
            } else {
                index
            };
            if slot >= self.sq_entries {
                continue; // dropped
            }
            let at = slot as usize * self.sqe_size as usize;
            let (Some(&flags), Some(data)) = (sqes.get(at + 1), u64_at(sqes, at + 32)) else {
                return Err("its submission queue could not be read".into());
            };
            if flags & SQE_SKIP == 0 && !last.contains_key(&data) {
                return Err(format!(
                    "its request {data:#x} was taken and no completion of it is in the queue: requests in flight live in the kernel and are not restored; let it complete or cancel it before the checkpoint"
                ));
            }
        }
        Ok(())
    }

    /// What a restore submits: the entries dropped (each one of its own, see
    /// `drop_entries`), then one no-op request per completion.
    pub fn replays(&self) -> (u64, u64) {
        (
            u64::from(self.sq_head.wrapping_sub(self.cq_tail)),
            u64::from(self.cq_tail),
        )
    }

    fn setup_flags(&self) -> u32 {
        let mut flags = 0;
        if self.cq_entries != 2 * self.sq_entries {
            flags |= SETUP_CQSIZE;
        }
        if self.sqe_size == 128 {
            flags |= SETUP_SQE128;
        }
        if self.cqe_size == 32 {
            flags |= SETUP_CQE32;
        }
        flags
    }

    /// The image's description of it is one a restore can make: `Err` says why not.
    pub fn check(&self) -> Result<(), String> {
        let (skip, complete) = self.replays();
        let ok = self.sq_entries.is_power_of_two()
            && self.sq_entries <= 32768
            && self.cq_entries.is_power_of_two()
            && self.cq_entries >= self.sq_entries
            && self.cq_entries <= 65536
            && [64, 128].contains(&self.sqe_size)
            && [16, 32].contains(&self.cqe_size)
            && skip + complete <= MAX_REPLAY
            && skip <= MAX_DROPPED
            && self.rings.is_some_and(|r| r.len <= self.regions().0)
            && self
                .sqes
                .is_some_and(|r| r.len <= u64::from(self.sq_entries) * u64::from(self.sqe_size));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "an io_uring instance described out of bounds ({self:?})"
            ))
        }
    }

    /// The memory a restore pins for it (bytes).
    fn memory_bytes(&self) -> u64 {
        let (rings, sqes) = self.regions();
        rings + sqes
    }

    /// The system calls a restore makes to bring its counters back.
    fn replay_calls(&self) -> u64 {
        let batch = u64::from(self.sq_entries.min(self.cq_entries)).max(1);
        let (dropped, complete) = self.replays();
        dropped + complete.div_ceil(batch)
    }

    /// What a restore of all of an image's rings costs, bounded: no more rings, no-op requests,
    /// system calls or pinned memory than a real process needs, whatever each one says.
    pub fn check_all<'a>(rings: impl Iterator<Item = &'a Ring>) -> Result<(), String> {
        let (mut n, mut nops, mut calls, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        for r in rings {
            let (skip, complete) = r.replays();
            n += 1;
            nops += skip + complete;
            calls += r.replay_calls();
            bytes += r.memory_bytes();
        }
        if n > 1024 || nops > MAX_REPLAY || calls > 1 << 17 || bytes > 256 << 20 {
            return Err(format!(
                "{n} io_uring instances, {nops} no-op requests in {calls} calls, {bytes} bytes of their memory: more than a restore accepts (make busy rings again now and then; libuv: a new event loop)"
            ));
        }
        Ok(())
    }

    /// Makes the ring again, its counters where they were and its memory as the process left
    /// it; `payload` reads the saved bytes. Returns the ring and the memory it uses: the kernel
    /// maps a ring's own memory only where it chooses (it refuses an address), so the ring is
    /// made on memory of a memfd (IORING_SETUP_NO_MMAP, Linux 6.13), which the restorer maps
    /// where the process had the ring, at the same offsets (rings at 0, entries at
    /// [`OFF_SQES`]): the same pages, shared with the kernel as before.
    pub fn recreate(
        &self,
        fd: i32,
        mut payload: impl FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    ) -> Result<(OwnedFd, OwnedFd), String> {
        let fail = |what: &str, e: std::io::Error| format!("fd {fd} (io_uring): {what}: {e}");
        self.check().map_err(|why| format!("fd {fd}: {why}"))?;
        let (memory, [rings, sqes]) = self.memory(fd, OFF_SQES, [0, OFF_SQES])?;
        let (ring, p) = sys::io_uring_setup(
            self.sq_entries,
            self.setup_flags() | SETUP_NO_MMAP,
            self.cq_entries,
            Some((&rings, &sqes)),
        )
        .map_err(|e| {
            fail(
                &format!(
                    "cannot make a ring of {} entries on memory of its own (IORING_SETUP_NO_MMAP on any pages takes Linux 6.13)",
                    self.sq_entries
                ),
                e,
            )
        })?;
        if (p.sq_entries, p.cq_entries) != (self.sq_entries, self.cq_entries) {
            return Err(format!(
                "fd {fd} (io_uring): the kernel made a ring of {}/{} entries, not {}/{}",
                p.sq_entries, p.cq_entries, self.sq_entries, self.cq_entries
            ));
        }
        if p.sq_array as usize != self.array_at() {
            return Err(format!(
                "fd {fd} (io_uring): the kernel lays its rings out in a way this thaw does not know (index array at {}, not {})",
                p.sq_array,
                self.array_at()
            ));
        }
        let (dropped, complete) = self.replays();
        drop_entries(ring.as_raw_fd(), &p, &rings, dropped)
            .and_then(|()| self.replay(ring.as_raw_fd(), &p, &rings, &sqes, complete))
            .map_err(|e| fail("cannot bring its counters back", e))?;
        let now = (
            rings.load_u32(p.sq_head as usize),
            rings.load_u32(p.cq_tail as usize),
        );
        if now != (self.sq_head, self.cq_tail) {
            return Err(format!(
                "fd {fd} (io_uring): its counters came back as {now:?}, not {:?}",
                (self.sq_head, self.cq_tail)
            ));
        }
        self.put_back(&rings, &sqes, &mut payload)?;
        // (The kernel's own counters, as it has them: the same, in an image that is whole.)
        rings.store_u32(p.sq_head as usize, self.sq_head);
        rings.store_u32(p.cq_tail as usize, self.cq_tail);
        Ok((ring, memory))
    }

    /// A memfd named for ring `fd` (see [`memory_name`]) of `size` bytes, mapped here at each
    /// offset of `views`: its rings region at the first, its entries at the second.
    fn memory(
        &self,
        fd: i32,
        size: u64,
        views: [u64; 2],
    ) -> Result<(OwnedFd, [SharedView; 2]), String> {
        let fail =
            |e: std::io::Error| format!("fd {fd} (io_uring): cannot make memory for it: {e}");
        let (rings_len, sqes_len) = self.regions();
        let memory = sys::memfd_create(&memory_name(fd, self.sqe_size, self.cqe_size), false)
            .and_then(|m| sys::ftruncate(m.as_raw_fd(), size + sqes_len).map(|()| m))
            .map_err(fail)?;
        let view = |off: u64, len: u64| SharedView::new(memory.as_raw_fd(), off, len as usize);
        let rings = view(views[0], rings_len).map_err(fail)?;
        let sqes = view(views[1], sqes_len).map_err(fail)?;
        Ok((memory, [rings, sqes]))
    }

    /// Writes what the process had in its rings and entries into `rings` and `sqes`; the index
    /// array, where none was saved (a ring without one, or never written), holds slot i at
    /// index i, as the kernel reads a ring without one.
    fn put_back(
        &self,
        rings: &SharedView,
        sqes: &SharedView,
        mut payload: impl FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        let saved = match self.rings {
            Some(r) => payload(r)?,
            None => Vec::new(),
        };
        rings.write(0, &saved);
        let array = self.array_at()..self.array_at() + 4 * self.sq_entries as usize;
        if saved.get(array).is_none_or(|a| a.iter().all(|&b| b == 0)) {
            self.identity_array(rings);
        }
        if let Some(r) = self.sqes {
            sqes.write(0, &payload(r)?);
        }
        Ok(())
    }

    /// Slot i at index i in the index array of the rings region mapped at `rings`.
    fn identity_array(&self, rings: &SharedView) {
        for i in 0..self.sq_entries {
            rings.store_u32(self.array_at() + 4 * i as usize, i);
        }
    }

    /// For an instance of `thaw serve`, which must make its ring itself (the kernel passes no
    /// io_uring descriptor over a socket): `Err` says why this one cannot be. Its counters must
    /// come back in a few calls (no entry dropped), and each region must be whole in one
    /// mapping of the process's (`vmas`: (start, length, mmap offset) of each).
    pub fn servable(&self, vmas: &[(u64, u64, u64)]) -> Result<(), String> {
        let (skip, _) = self.replays();
        if skip != 0 {
            return Err(format!(
                "{skip} of its entries were dropped, which an instance of thaw serve does not bring back"
            ));
        }
        if self.replay_calls() > MAX_SERVED_CALLS {
            return Err(format!(
                "it has taken {} requests, more than an instance of thaw serve brings back",
                self.sq_head
            ));
        }
        let (rings, sqes) = self.regions();
        let whole = |len: u64, sq: bool| {
            vmas.iter()
                .any(|&(_, l, off)| (off == OFF_SQES) == sq && l >= len)
        };
        if !whole(rings, false) || !whole(sqes, true) {
            return Err("the process maps only part of its memory".into());
        }
        Ok(())
    }

    /// Where its index array is in its rings region (as the kernel lays it out).
    fn array_at(&self) -> usize {
        rings_bytes(self.sq_entries, self.cq_entries, self.cqe_size, false).next_multiple_of(64)
            as usize
    }

    /// The bytes of its rings region and of its entries, as a restore makes them.
    fn regions(&self) -> (u64, u64) {
        (
            pages(rings_bytes(
                self.sq_entries,
                self.cq_entries,
                self.cqe_size,
                true,
            )) * PAGE,
            pages(u64::from(self.sq_entries) * u64::from(self.sqe_size)) * PAGE,
        )
    }

    /// The memory an instance of `thaw serve` makes its ring on (see [`Self::plan_instance`]):
    /// a memfd holding the rings region as the kernel is to find it (the index array holding
    /// slot i at index i) at 0, no-op entries at [`OFF_SQES`], and what the process had in
    /// them at [`STAGE_RINGS`] and [`STAGE_SQES`], to be copied in once its counters are back.
    pub fn instance_memory(
        &self,
        fd: i32,
        mut payload: impl FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    ) -> Result<OwnedFd, String> {
        self.check().map_err(|why| format!("fd {fd}: {why}"))?;
        let (memory, [rings, sqes]) = self.memory(fd, STAGE_SQES, [STAGE_RINGS, STAGE_SQES])?;
        self.put_back(&rings, &sqes, &mut payload)?;
        // The rings region as the kernel is to find it; a no-op entry is all zero (opcode 0, no
        // flags): the entries' pages as they are.
        let live = SharedView::new(memory.as_raw_fd(), 0, self.regions().0 as usize)
            .map_err(|e| format!("fd {fd} (io_uring): cannot make memory for it: {e}"))?;
        self.identity_array(&live);
        Ok(memory)
    }

    /// An instance's steps making ring `fd` again on `memory` (its descriptor in the instance,
    /// from [`Self::instance_memory`]): the process's mappings of it mapped from there (`vmas`:
    /// start, length, protection, flags, mmap offset), the ring set up on them, its counters
    /// brought back, checked, and the process's bytes copied in.
    pub fn plan_instance(
        &self,
        plan: &mut crate::restore::Plan,
        fd: i32,
        cloexec: bool,
        memory: i32,
        vmas: &[(u64, u64, u32, u32, u64)],
    ) {
        for &(start, len, prot, flags, offset) in vmas {
            plan.syscall(
                format!("io_uring fd {fd}: map its memory at {start:x}"),
                libc::SYS_mmap,
                [
                    start,
                    len,
                    u64::from(prot),
                    u64::from(flags) | libc::MAP_FIXED as u64,
                    memory as u64,
                    memory_offset(offset),
                ],
            );
        }
        // (Its longest mapping of each: whole, see `servable`.)
        let at = |sq: bool| {
            vmas.iter()
                .filter(|v| (v.4 == OFF_SQES) == sq)
                .max_by_key(|v| v.1)
                .map_or(0, |v| v.0)
        };
        let (rings, sqes) = (at(false), at(true));
        let mut p = [0u32; 30];
        p[1] = self.cq_entries;
        p[2] = self.setup_flags() | SETUP_NO_MMAP;
        p[18] = sqes as u32;
        p[19] = (sqes >> 32) as u32;
        p[28] = rings as u32;
        p[29] = (rings >> 32) as u32;
        let words: Vec<u64> = p
            .chunks(2)
            .map(|w| u64::from(w[0]) | u64::from(w[1]) << 32)
            .collect();
        let params = plan.words(&words);
        plan.syscall_fd(
            format!("io_uring fd {fd}: set it up again"),
            libc::SYS_io_uring_setup,
            [u64::from(self.sq_entries), params, 0, 0, 0],
            fd,
        );
        plan.cloexec_as(fd, cloexec);
        // Its counters: a queue's worth of no-op requests at a time, each completion reaped
        // (struct io_rings: sq head, tail at 0; cq head, tail at 8).
        let batch = self.sq_entries.min(self.cq_entries);
        let mut done = 0u32;
        while done != self.cq_tail {
            let n = batch.min(self.cq_tail - done);
            let next = done + n;
            plan.store(
                format!("io_uring fd {fd}: queue {n} no-op requests"),
                rings,
                u64::from(done) | u64::from(next) << 32,
            );
            plan.syscall(
                format!("io_uring fd {fd}: submit them"),
                libc::SYS_io_uring_enter,
                [
                    fd as u64,
                    u64::from(n),
                    u64::from(n),
                    u64::from(ENTER_GETEVENTS),
                    0,
                    0,
                ],
            );
            // What the kernel wrote: every request taken, every completion posted.
            plan.expect(
                format!("io_uring fd {fd}: its submission head"),
                rings,
                next,
            );
            plan.expect(
                format!("io_uring fd {fd}: its completion tail"),
                rings + 12,
                next,
            );
            plan.store(
                format!("io_uring fd {fd}: reap their completions"),
                rings + 8,
                u64::from(next) | u64::from(next) << 32,
            );
            done = next;
        }
        let (rings_len, sqes_len) = self.regions();
        plan.pread(
            format!("io_uring fd {fd}: the process's rings"),
            memory,
            rings,
            rings_len,
            STAGE_RINGS,
        );
        plan.pread(
            format!("io_uring fd {fd}: the process's entries"),
            memory,
            sqes,
            sqes_len,
            STAGE_SQES,
        );
        plan.syscall(
            format!("io_uring fd {fd}: drop the staged copies"),
            libc::SYS_ftruncate,
            [memory as u64, OFF_SQES + sqes_len, 0, 0, 0, 0],
        );
    }

    /// Submits `n` no-op requests, a queue's worth at a time, and reaps their completions.
    fn replay(
        &self,
        fd: i32,
        p: &sys::RingParams,
        rings: &SharedView,
        sqes: &SharedView,
        n: u64,
    ) -> std::io::Result<()> {
        let mask = p.sq_entries - 1;
        let size = self.sqe_size as usize;
        let nop = vec![0u8; size];
        let mut left = n;
        while left > 0 {
            let batch = left
                .min(u64::from(p.sq_entries))
                .min(u64::from(p.cq_entries)) as u32;
            let tail = rings.load_u32(p.sq_tail as usize);
            for i in 0..batch {
                let slot = tail.wrapping_add(i) & mask;
                sqes.write(slot as usize * size, &nop);
                rings.store_u32(p.sq_array as usize + 4 * slot as usize, slot);
            }
            rings.store_u32(p.sq_tail as usize, tail.wrapping_add(batch));
            let r = sys::io_uring_enter(fd, batch, batch, ENTER_GETEVENTS);
            if r != i64::from(batch) {
                return Err(if r < 0 {
                    std::io::Error::from_raw_os_error(-r as i32)
                } else {
                    std::io::Error::other(format!("{r} of {batch} requests submitted"))
                });
            }
            let t = rings.load_u32(p.cq_tail as usize);
            rings.store_u32(p.cq_head as usize, t);
            left -= u64::from(batch);
        }
        Ok(())
    }
}

/// Brings `n` dropped entries back as the kernel counts them: each an entry whose index names
/// none (counted, no request made; the kernel ends a submission there, so one per call). No-op
/// requests that post nothing (IOSQE_CQE_SKIP_SUCCESS) count the same, but the kernel then
/// turns IOSQE_IO_DRAIN off for good on the ring: a drained request failed after restore.
fn drop_entries(fd: i32, p: &sys::RingParams, rings: &SharedView, n: u64) -> std::io::Result<()> {
    for _ in 0..n {
        let tail = rings.load_u32(p.sq_tail as usize);
        let slot = tail & (p.sq_entries - 1);
        rings.store_u32(p.sq_array as usize + 4 * slot as usize, p.sq_entries);
        rings.store_u32(p.sq_tail as usize, tail.wrapping_add(1));
        let r = sys::io_uring_enter(fd, 1, 0, 0);
        if r != 0 {
            return Err(if r < 0 {
                std::io::Error::from_raw_os_error(-r as i32)
            } else {
                std::io::Error::other("an entry meant to be dropped was submitted")
            });
        }
    }
    Ok(())
}

/// Whether an eventfd is registered with ring `fd`, asked in the checkpoint's handler with
/// `probe` (an eventfd of the checkpoint's): registering it succeeds (and it is unregistered at
/// once) only where none is. The kernel's result.
pub(crate) fn probe_eventfd(fd: i32, probe: i32) -> i64 {
    let mut arg = probe.to_ne_bytes();
    let r = sys::io_uring_register(fd, REGISTER_EVENTFD, Some(&mut arg), 1);
    if r == 0 {
        sys::io_uring_register(fd, UNREGISTER_EVENTFD, None, 0);
    }
    r
}

/// Which io_uring descriptor slots the calling thread has registered (IORING_REGISTER_RING_FDS,
/// which liburing's io_uring_register_ring_fd uses; a ring set up with
/// IORING_SETUP_REGISTERED_FD_ONLY has no descriptor but that slot), one bit per slot: they
/// belong to the thread, no /proc file lists them, and only the thread can ask (entering a slot
/// that holds nothing fails with EBADF; a thread that never used io_uring fails with EINVAL at
/// once). Async-signal-safe.
pub(crate) fn registered_rings() -> u32 {
    const ENTER_REGISTERED_RING: u32 = 1 << 4;
    const SLOTS: i32 = 16;
    let mut held = 0;
    for slot in 0..SLOTS {
        let r = sys::io_uring_enter(slot, 0, 0, ENTER_REGISTERED_RING);
        if r == -(libc::EINVAL as i64) {
            break;
        }
        // (EBADF: an empty slot; a ring not enabled, or whose polling thread died, still
        // holds its slot.)
        if r != -(libc::EBADF as i64) {
            held |= 1 << slot;
        }
    }
    held
}

/// Threads holding registered io_uring descriptor slots, refused by name.
pub(crate) fn registered_refusals(c: &crate::capture::Capture) -> Vec<String> {
    use std::sync::atomic::Ordering;
    c.threads
        .iter()
        .filter(|t| t.recorded())
        .filter_map(|t| {
            let held = t.io_rings.load(Ordering::Relaxed);
            (held != 0).then(|| {
                let slots: Vec<String> = (0..16).filter(|i| held & 1 << i != 0).map(|i| i.to_string()).collect();
                format!(
                    "thread {} ({}): io_uring instances registered for it alone (IORING_REGISTER_RING_FDS, slots {}), which are not restored: unregister them before the checkpoint (liburing: io_uring_unregister_ring_fd)",
                    t.tid.load(Ordering::Relaxed),
                    t.recorded_name().unwrap_or_default(),
                    slots.join(", ")
                )
            })
        })
        .collect()
}

/// Why a ring bound to another thread is refused.
const SINGLE_ISSUER: &str = "it is bound to one thread (IORING_SETUP_SINGLE_ISSUER), which alone may ask it what it holds: checkpoint from that thread (the one that submits to it)";

/// The io_uring instances among `files`, each once (not its duplicates).
pub fn rings(files: &[super::files::FdEntry]) -> impl Iterator<Item = &Ring> {
    files.iter().filter_map(|f| match &f.kind {
        super::files::FdKind::IoUring(r) if f.dup_of.is_none() => Some(r),
        _ => None,
    })
}

/// Rings whose personalities this process has asked about: (inode, the id the kernel should
/// hand out next), see [`personality_probe`]. Beyond its room, a ring is taken as never asked
/// about (a refusal, never a miss).
static PERSONALITY_NEXT: [(AtomicU64, AtomicU64); 256] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; 256];

/// [`personality_probe`]: credentials are or were registered with the ring.
pub(crate) const PERSONALITY_HELD: i64 = 1;
const REGISTER_PERSONALITY: u32 = 9;
const UNREGISTER_PERSONALITY: u32 = 10;

/// Keeps [`PERSONALITY_NEXT`] to the rings of `inodes` (the process's now): a ring closed since
/// frees its room, and an inode number the kernel hands out again is a new ring's. With none
/// (a restored process, whose rings are all new), forgets every ring.
pub(crate) fn keep_personality_probes(inodes: &[u64]) {
    use std::sync::atomic::Ordering::Relaxed;
    for (ino, next) in &PERSONALITY_NEXT {
        let i = ino.load(Relaxed);
        if i != 0 && !inodes.contains(&i) {
            next.store(0, Relaxed);
            ino.store(0, Relaxed);
        }
    }
}

/// Whether credentials (IORING_REGISTER_PERSONALITY) are registered with ring `fd`, asked in
/// the checkpoint's handler: 0 (none), [`PERSONALITY_HELD`], or the kernel's
/// negative errno. They live in the kernel, and its fdinfo no longer lists them (6.18). The
/// kernel hands their ids out in turn, from 1, never the same one twice before it wraps: one
/// registered and at once unregistered here gets 1 on a ring that never had any, or the one
/// after this process's previous probe of it; any other shows some were registered since (and
/// may still be). Async-signal-safe.
pub(crate) fn personality_probe(fd: i32) -> i64 {
    // The ring the descriptor holds now (one made again at its number since the scan is another
    // ring, which the checkpoint notices and starts again for).
    let Some(ino) = sys::fstat_ino(fd) else {
        return -(libc::EBADF as i64);
    };
    let id = sys::io_uring_register(fd, REGISTER_PERSONALITY, None, 0);
    if id <= 0 {
        return if id == 0 { PERSONALITY_HELD } else { id };
    }
    let gone = sys::io_uring_register(fd, UNREGISTER_PERSONALITY, None, id as u32);
    if gone < 0 {
        return gone;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let slot = PERSONALITY_NEXT
        .iter()
        .find(|s| s.0.load(Relaxed) == ino)
        .or_else(|| {
            PERSONALITY_NEXT
                .iter()
                .find(|s| s.0.compare_exchange(0, ino, Relaxed, Relaxed).is_ok())
        });
    let expected = slot.map_or(1, |s| s.1.load(Relaxed).max(1));
    // (Ids go up to 65535, then start again from 1.)
    let next = if id >= 0xffff { 1 } else { id as u64 + 1 };
    if let Some(s) = slot {
        s.1.store(next, Relaxed);
    }
    if id as u64 == expected {
        0
    } else {
        PERSONALITY_HELD
    }
}

/// What [`personality_probe`] says, as a refusal.
pub(crate) fn personality_refusal(fd: i32, r: i64) -> Option<String> {
    match r {
        0 => None,
        PERSONALITY_HELD => Some(format!(
            "fd {fd} (io_uring): credentials have been registered with it (IORING_REGISTER_PERSONALITY; the kernel lists them nowhere, the ids it hands out show some were), which live in the kernel and are not restored; make the ring again without them"
        )),
        e => probe_refusal(fd, e, "credentials are registered with it"),
    }
}

/// What the handler's eventfd probe says, as a refusal.
pub(crate) fn eventfd_refusal(fd: i32, r: i64) -> Option<String> {
    match r {
        0 => None,
        e if e == -(libc::EBUSY as i64) => Some(format!(
            "fd {fd} (io_uring): an eventfd is registered with it (IORING_REGISTER_EVENTFD), which is not restored: unregister it before the checkpoint and register it again after"
        )),
        e => probe_refusal(fd, e, "an eventfd is registered with it"),
    }
}

/// A probe of ring `fd` the kernel refused (`e`, a negative errno), as a refusal (see
/// [`probe_why`]).
fn probe_refusal(fd: i32, e: i64, what: &str) -> Option<String> {
    Some(format!("fd {fd} (io_uring): {}", probe_why(e, what)))
}

/// Why a probe the kernel refused (`e`, a negative errno) refuses the ring: it is another
/// thread's, or restricted, or whether `what` cannot be told.
fn probe_why(e: i64, what: &str) -> String {
    match e {
        e if e == -(libc::EEXIST as i64) => SINGLE_ISSUER.into(),
        e if e == -(libc::EACCES as i64) => {
            "it is restricted (IORING_REGISTER_RESTRICTIONS), which is not restored".into()
        }
        e => format!(
            "whether {what} cannot be told: {}",
            std::io::Error::from_raw_os_error(-e as i32)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1234\nSqMask:\t0xff\nSqHead:\t7\nSqTail:\t7\nCachedSqHead:\t7\nCqMask:\t0x1ff\nCqHead:\t7\nCqTail:\t7\nCachedCqTail:\t7\nSQEs:\t0\nCQEs:\t0\nSqThread:\t-1\nSqThreadCpu:\t-1\nSqTotalTime:\t0\nSqWorkTime:\t0\nUserFiles:\t0\nUserBufs:\t0\nPollList:\nCqOverflowList:\nNAPI:\tdisabled\n";

    #[test]
    fn an_idle_ring_is_read_from_its_fdinfo() {
        let i = Info::parse(IDLE).unwrap();
        assert_eq!(
            (i.sq_mask, i.cq_mask, i.sq_head, i.cq_tail),
            (0xff, 0x1ff, 7, 7)
        );
        i.at_rest(0).unwrap();
        // One entry dropped: 7 taken, 6 completions.
        assert!(i.at_rest(1).is_err());
    }

    #[test]
    fn what_the_kernel_holds_is_refused_by_name() {
        let with = |from: &str, to: &str| Info::parse(&IDLE.replace(from, to)).unwrap_err();
        assert!(with("SqThread:\t-1", "SqThread:\t812").contains("SQPOLL"));
        assert!(with("UserFiles:\t0", "UserFiles:\t2").contains("registered files"));
        assert!(with("UserBufs:\t0", "UserBufs:\t1").contains("registered buffers"));
        assert!(with("PollList:\n", "PollList:\n  op=6, task_works=0\n").contains("poll"));
        assert!(with(
            "CqOverflowList:\n",
            "CqOverflowList:\n  user_data=1, res=0, flags=0\n"
        )
        .contains("overflowed"));
        assert!(with("NAPI:\tdisabled", "NAPI:\tenabled").contains("NAPI"));
        assert!(
            with("UserBufs:\t0\n", "UserBufs:\t0\nPersonalities:\n    1\n").contains("credentials")
        );
        let busy = Info::parse(
            &IDLE
                .replace("CachedCqTail:\t7", "CachedCqTail:\t5")
                .replace("CqTail:\t7", "CqTail:\t5")
                .replace("CqHead:\t7", "CqHead:\t5"),
        )
        .unwrap();
        assert!(busy
            .at_rest(0)
            .unwrap_err()
            .contains("2 of its requests have not completed"));
    }

    #[test]
    fn region_sizes_tell_entry_sizes_apart() {
        // libuv's ring: 256 entries, 512 completions: three pages with or without the index
        // array at 16 bytes a completion, five at 32.
        assert_eq!(pages(rings_bytes(256, 512, 16, true)), 3);
        assert_eq!(pages(rings_bytes(256, 512, 16, false)), 3);
        assert_eq!(pages(rings_bytes(256, 512, 32, true)), 5);
        // The kernel's offset of the index array there (16512, not 16448).
        let cqe32 = Ring {
            sq_entries: 256,
            cq_entries: 512,
            sqe_size: 64,
            cqe_size: 32,
            ..Default::default()
        };
        assert_eq!(cqe32.array_at(), 16512);
    }

    /// Requests in flight the counters cannot show are found in the shared memory.
    #[test]
    fn requests_in_flight_are_found_in_the_ring_s_memory() {
        let ring = Ring {
            sq_entries: 64,
            cq_entries: 128,
            sqe_size: 64,
            cqe_size: 16,
            sq_head: 3,
            cq_tail: 3,
            ..Default::default()
        };
        let cqe = |rings: &mut Vec<u8>, i: usize, data: u64, flags: u32| {
            let at = CQES_AT as usize + 16 * i;
            rings[at..at + 8].copy_from_slice(&data.to_ne_bytes());
            rings[at + 12..at + 16].copy_from_slice(&flags.to_ne_bytes());
        };
        let sqe = |sqes: &mut Vec<u8>, i: usize, data: u64| {
            sqes[64 * i + 32..64 * i + 40].copy_from_slice(&data.to_ne_bytes());
        };
        let (mut rings, mut sqes) = (vec![0u8; 4096], vec![0u8; 4096]);
        for i in 0..3 {
            cqe(&mut rings, i, 10 + i as u64, 0);
            sqe(&mut sqes, i, 10 + i as u64);
        }
        ring.pending(&rings, &sqes).unwrap();
        // The last completion of request 11 says more will come (a multishot timeout).
        cqe(&mut rings, 1, 11, 1 << 1);
        assert!(ring
            .pending(&rings, &sqes)
            .unwrap_err()
            .contains("0xb will complete again"));
        // Request 12 taken; its completion's count made up by one of another's (MSG_RING).
        cqe(&mut rings, 1, 11, 0);
        cqe(&mut rings, 2, 99, 0);
        assert!(ring
            .pending(&rings, &sqes)
            .unwrap_err()
            .contains("0xc was taken and no completion"));
        // A 32-byte completion of a CQE_MIXED ring.
        cqe(&mut rings, 2, 12, 1 << 15);
        assert!(ring
            .pending(&rings, &sqes)
            .unwrap_err()
            .contains("CQE_MIXED"));
    }

    /// A ring made, used, and made again: same counters, same memory, and it works.
    #[test]
    fn a_ring_comes_back_with_its_counters() {
        let Ok((fd, p)) = sys::io_uring_setup(64, 0, 0, None) else {
            eprintln!("skipped: no io_uring here");
            return;
        };
        if let Err(why) = restorable() {
            eprintln!("skipped: {why}");
            return;
        }
        let ring = Ring {
            sq_entries: 64,
            cq_entries: 128,
            sqe_size: 64,
            cqe_size: 16,
            ..Default::default()
        };
        let rings = SharedView::new(fd.as_raw_fd(), OFF_SQ_RING, 4096).unwrap();
        let sqes = SharedView::new(fd.as_raw_fd(), OFF_SQES, 4096).unwrap();
        ring.replay(fd.as_raw_fd(), &p, &rings, &sqes, 21).unwrap();
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
        let maps = crate::procfs::maps(sys::getpid()).unwrap();
        let mut again = inspect(fd.as_raw_fd(), &info, &maps).unwrap();
        assert_eq!(
            (again.sq_head, again.cq_tail, again.sqe_size, again.cqe_size),
            (21, 21, 64, 16)
        );
        again
            .settle(
                fd.as_raw_fd(),
                &info,
                Some((&rings.read(0, 4096), &sqes.read(0, 4096))),
            )
            .unwrap();
        // As if five entries more had been dropped (taken, no completion), and with an index
        // array of the process's own (slots taken in reverse).
        again.sq_head = 26;
        let mut saved = rings.read(0, 4096);
        for (at, v) in [(0, 26u32), (4, 26), (32, 5)] {
            saved[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        for i in 0..64u32 {
            let at = p.sq_array as usize + 4 * i as usize;
            saved[at..at + 4].copy_from_slice(&(63 - i).to_ne_bytes());
        }
        again.rings = Some(PayloadRef {
            offset: 0,
            len: 4096,
        });
        again.sqes = Some(PayloadRef {
            offset: 4096,
            len: 4096,
        });
        let (made, memory) = again
            .recreate(9, |r| {
                Ok(if r.offset == 0 {
                    saved.clone()
                } else {
                    sqes.read(0, 4096)
                })
            })
            .unwrap();
        let text =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", made.as_raw_fd())).unwrap();
        let i = Info::parse(&text).unwrap();
        assert_eq!(
            (i.sq_head, i.cached_sq_head, i.cq_tail, i.cached_cq_tail),
            (26, 26, 21, 21)
        );
        // Its memory is what was saved: the dropped count, the process's index array.
        let view = SharedView::new(memory.as_raw_fd(), 0, 4096).unwrap();
        assert_eq!(view.load_u32(32), 5);
        assert_eq!(view.load_u32(p.sq_array as usize), 63);
        assert_eq!(view.read(0, 4096), saved);
        // And it runs on the memfd's pages: one more no-op completes.
        let entries = SharedView::new(memory.as_raw_fd(), OFF_SQES, 4096).unwrap();
        again
            .replay(made.as_raw_fd(), &p, &view, &entries, 1)
            .unwrap();
        assert_eq!(view.load_u32(p.cq_tail as usize), 22);
    }
}
