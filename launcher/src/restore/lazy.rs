//! Lazy memory: the restored process's large anonymous VMAs are registered with a userfaultfd
//! and filled by the launcher, each 64 KiB chunk read from the image and checked against its
//! signed digest just before its pages are copied in. Touched pages come first (the faulting
//! thread waits for them); the rest is filled in the background until nothing is left, and then
//! the userfaultfd is closed and the process owes the launcher nothing.
//!
//! Only verified bytes ever reach the process: the copy is made from the launcher's buffer, after
//! the digest check, so a change to the image file after the signature check can only make the
//! restore fail (the process is killed), never feed it other bytes.
//!
//! The process keeps running normally meanwhile, so the server follows what it does to its memory
//! (userfaultfd's non-cooperative events): a fork gets its own userfaultfd and its own copy of
//! "what is still to fill"; mremap moves where an image range now lives; munmap and
//! MADV_DONTNEED make the range's unfilled pages read as zero, as they would have.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use thaw::image::Image;
use thaw::restore::Plan;
use thaw::state::memory::Vma;

use super::working_set::{Gate, Learnt, Record, Touch};
use crate::exit::{Code, Failure, Result};
use crate::sys::{self, uffd};

const PAGE: u64 = 4096;
const MIN_LAZY: u64 = thaw::state::memory::LAZY_MIN_BYTES;
/// A fault on a page the image did not save maps zero pages over the rest of that hole too, up to
/// this far on either side: a runtime allocating after a restore walks through its never-saved
/// heap page after page, and each page would otherwise be a round trip to the launcher. (Zero
/// pages cost no memory; a write to one is an ordinary copy-on-write fault, the kernel's alone.)
const HOLE_WINDOW: u64 = 1 << 20;
/// The memory server yields to the restored process when both want a core: a process waiting
/// for a page leaves its core to it anyway, and the work it does ahead of the process must not
/// slow it down when it runs. (Not further: faults are served by this thread, and a busy machine
/// must not starve it. The verifier, whose work the server can always do itself, runs at idle
/// priority.)
pub const HELPER_NICE: i32 = 5;
/// After a fault, background filling waits this long for the next one: faults come in bursts, and
/// a thread waiting for memory must not wait for a background chunk too.
const QUIET: Duration = Duration::from_micros(300);
/// While the late part of a working set waits for the process's first output, a process that
/// has not faulted for as long as its first output took when recorded, within these bounds, is
/// taken to be waiting or computing with what it has: the rest comes in then.
const HOLD_QUIET: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(100));
/// The late part waits no longer once the process has faulted on this many of its chunks
/// before its first output: it is not doing what it did when recorded (it writes elsewhere this
/// time, or not yet), and would otherwise get the rest of its memory only as it faults.
const HOLD_LATE_FAULTS: u64 = 64;

/// Where chunks come from when the image file is still being fetched (an image restored
/// straight from a registry, see `registry::Sparse`): `fetch(chunk, whole)` puts the chunk's
/// bytes in the file before they are read and verified as usual; `whole` asks for the whole
/// unit the chunk comes in (what filling ahead of the process wants), not only the chunk (what a
/// waiting fault wants).
pub trait Fetch: Sync {
    fn fetch(&self, chunk: u64, whole: bool) -> Result<()>;
    /// The late part of the working set may be fetched ahead now ([`Gate`]).
    fn nudge(&self) {}
    /// The process has just written to its standard output for the first time.
    fn first_output(&self) {}
}

/// Whether the launcher fills `vma` lazily (when lazy filling is available at all).
pub fn is_lazy(vma: &Vma, m: &thaw::Manifest) -> bool {
    // What the restorer itself writes or reads (the restore cell, the signal frames) must be in
    // place before the process runs.
    let touches = |a: u64, len: u64| a < vma.end && a.saturating_add(len) > vma.start;
    vma.can_fill_lazily()
        && vma.saved_len() >= MIN_LAZY
        && !touches(m.process.restore_cell, 56)
        && !m.threads.iter().any(|t| touches(t.sigframe, 304))
}

/// The payload chunks that must be verified before the process runs: every chunk holding a byte
/// that is not a lazily filled page.
pub fn eager_chunks(image: &Image, lazy: bool) -> Vec<bool> {
    let h = image.header();
    let cs = u64::from(h.chunk_size);
    let count = h.chunk_count() as usize;
    if !lazy {
        return vec![true; count];
    }
    let mut lazy_bytes = vec![0u64; count];
    let m = image.manifest();
    for vma in m.memory.iter().filter(|v| is_lazy(v, m)) {
        for run in &vma.pages {
            let (mut at, end) = (run.payload.offset, run.payload.offset + run.payload.len);
            while at < end {
                let c = at / cs;
                let next = ((c + 1) * cs).min(end);
                lazy_bytes[c as usize] += next - at;
                at = next;
            }
        }
    }
    (0..count as u64)
        .map(|c| lazy_bytes[c as usize] < cs.min(h.payload_len - c * cs))
        .collect()
}

/// How the restored process gets its userfaultfd: from /dev/userfaultfd when the launcher can open
/// it, else from the system call. The launcher enables its events, and the fork events need
/// CAP_SYS_PTRACE there (in practice: root); without it the launcher reads all memory up front.
#[derive(Debug)]
pub struct Uffd {
    device: Option<OwnedFd>,
}

impl Uffd {
    /// `in_user_namespace`: the process will run in a new user namespace.
    pub fn probe(in_user_namespace: bool) -> Option<Uffd> {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .ok()
            .map(OwnedFd::from);
        if in_user_namespace {
            // There the system call serves kernel faults (a read(2) into a missing page) only
            // where vm.unprivileged_userfaultfd allows it; the device needs nothing. And the
            // process is named by a pidfd (its PID differs there), which the kernel must pass.
            let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd");
            if device.is_none() && sysctl.map_or(true, |v| v.trim() != "1") {
                return None;
            }
            sys::pass_pidfd(&sys::socketpair().ok()?.0).ok()?;
        }
        crate::privilege::privileged(|| uffd::probe(device.as_ref())).ok()?;
        Some(Uffd { device })
    }
}

/// The descriptors that carry the userfaultfd from the new process to the launcher: the restorer
/// creates it at number `slot`, sends it over `child_end`, waits for the launcher to enable it,
/// registers the lazy VMAs, and says so.
#[derive(Debug)]
pub struct Transport {
    device: Option<OwnedFd>,
    slot: OwnedFd,
    pub child_end: OwnedFd,
    pub parent_end: OwnedFd,
}

impl Transport {
    /// Descriptors numbered at or above `high`, out of the way of the process's own.
    pub fn new(uffd: Uffd, high: RawFd) -> Result<Transport> {
        let dup = |fd: RawFd| super::dup_high(fd, high);
        let (parent, child) = sys::socketpair().map_err(|e| {
            Failure::new(
                Code::RestoreFailed,
                format!("cannot create a socket pair: {e}"),
            )
        })?;
        // Where the kernel can, the process is named by a pidfd that comes with its message (a
        // bad chunk kills it through that, whatever namespace it runs in).
        let _ = sys::pass_pidfd(&parent);
        let device = match &uffd.device {
            Some(d) => Some(dup(d.as_raw_fd())?),
            None => None,
        };
        // Any descriptor that holds nothing the launcher waits on reserves the number.
        let null = std::fs::File::open("/dev/null").map_err(|e| {
            Failure::new(Code::RestoreFailed, format!("cannot open /dev/null: {e}"))
        })?;
        Ok(Transport {
            device,
            slot: dup(null.as_raw_fd())?,
            child_end: dup(child.as_raw_fd())?,
            parent_end: parent,
        })
    }

    /// The userfaultfd's number in the new process.
    pub fn fd(&self) -> i32 {
        self.slot.as_raw_fd()
    }

    /// Steps that create the userfaultfd and enable its events (before the memory is mapped).
    /// `inherited`: the restorer holds a copy of the launcher's end (it was cloned from the
    /// launcher itself), which it closes first.
    pub fn plan_create(&self, plan: &mut Plan, inherited: bool) {
        // Were the launcher killed before the parent-death signal below is set, a copy of its
        // end kept here would take the handover as the launcher's and wait for ever for an
        // answer from itself (holding whatever it inherited, a caller's pipe too).
        if inherited {
            plan.syscall_any(
                "close the restorer's copy of the launcher's end of the socket",
                libc::SYS_close,
                [self.parent_end.as_raw_fd() as u64, 0, 0, 0, 0, 0],
            );
        }
        // If the launcher dies (killed, OOM, crash) its userfaultfd goes with it and the kernel
        // would fill the missing pages with zeros: the process must die with it instead. If the
        // launcher is already gone by now, handing over the userfaultfd below fails (no one
        // holds the other end) and the restore ends there.
        plan.syscall(
            "die with the launcher while memory is filled lazily (PR_SET_PDEATHSIG)",
            libc::SYS_prctl,
            [
                libc::PR_SET_PDEATHSIG as u64,
                libc::SIGKILL as u64,
                0,
                0,
                0,
                0,
            ],
        );
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        match &self.device {
            Some(dev) => plan.syscall_fd(
                "create a userfaultfd (/dev/userfaultfd)",
                libc::SYS_ioctl,
                [dev.as_raw_fd() as u64, uffd::IOC_NEW, flags, 0, 0],
                self.fd(),
            ),
            None => plan.syscall_fd(
                "create a userfaultfd",
                libc::SYS_userfaultfd,
                [flags, 0, 0, 0, 0],
                self.fd(),
            ),
        }
        let byte = plan.words(&[0]);
        let iov = plan.words(&[byte, 1]);
        // struct cmsghdr { len = CMSG_LEN(4), SOL_SOCKET, SCM_RIGHTS } + the descriptor, padded.
        let cmsg = plan.words(&[20, 1 | (1 << 32), self.fd() as u64]);
        // struct msghdr { name, namelen, iov, iovlen, control, controllen, flags }
        let msg = plan.words(&[0, 0, iov, 1, cmsg, 24, 0]);
        plan.syscall(
            "hand the userfaultfd to the launcher",
            libc::SYS_sendmsg,
            [self.child_end.as_raw_fd() as u64, msg, 0, 0, 0, 0],
        );
        // If the launcher cannot enable it, it closes its end: the read returns 0 and the first
        // registration fails on the userfaultfd that was never enabled.
        plan.syscall(
            "wait for the launcher to enable the userfaultfd's events",
            libc::SYS_read,
            [self.child_end.as_raw_fd() as u64, byte, 1, 0, 0, 0],
        );
    }

    /// The step that tells the launcher the lazy VMAs are registered (before anything touches
    /// them): it may fill them from now on.
    pub fn plan_send(&self, plan: &mut Plan) {
        let byte = plan.words(&[0]);
        plan.syscall(
            "tell the launcher the lazy memory is registered",
            libc::SYS_write,
            [self.child_end.as_raw_fd() as u64, byte, 1, 0, 0, 0],
        );
    }
}

/// The userfaultfd as the launcher got it from the restorer, with its events enabled.
#[derive(Debug)]
pub struct Handover {
    uffd: OwnedFd,
    /// The process (SCM_PIDFD), where the kernel passes it.
    sender: Option<OwnedFd>,
    /// The caller's standard output, the process's, watched from before the process can write
    /// to it (for the working set's first output).
    watch: Option<sys::WriteWatch>,
}

/// The first half of the handover, on the launcher's main thread as soon as the process exists
/// (the restorer waits for it, and a thread started only then would keep it waiting): receives
/// the userfaultfd, enables its events (see `Transport::plan_create`), hands it to the guardian
/// (with a pidfd of the process, or of `victim` where the kernel sends none) and answers. `None`
/// when the restorer failed before handing it over; it reports that itself.
pub fn handshake(
    sock: &OwnedFd,
    guardian: Option<&super::guardian::Guardian>,
    victim: i32,
    watch_output: bool,
) -> Option<Result<Handover>> {
    let (uffd, sender) = match sys::recv_message(sock) {
        Ok(Some(sys::Received {
            fd: Some(fd),
            sender,
        })) => (fd, sender),
        _ => return None,
    };
    if let Err(e) = crate::privilege::privileged(|| uffd::enable(&uffd)) {
        return Some(Err(failed(format!(
            "cannot enable the userfaultfd's events for the restored process: {e}"
        ))));
    }
    // Before the answer: the lazy mappings are registered only after it.
    if let Some(g) = guardian {
        let armed = match &sender {
            Some(p) => g.arm(&uffd, p),
            None => sys::pidfd_open(victim).and_then(|p| g.arm(&uffd, &p)),
        };
        if let Err(e) = armed {
            return Some(Err(failed(format!(
                "cannot hand the userfaultfd to the guardian of lazy memory: {e}"
            ))));
        }
    }
    // Before the answer too: the process runs its own code only after it.
    let watch = watch_output.then(|| sys::watch_writes(1)).flatten();
    // A restorer that is gone by now reports that itself.
    let _ = sys::write_byte(sock, 1);
    Some(Ok(Handover {
        uffd,
        sender,
        watch,
    }))
}

/// What the server did, for `THAW_TIMING`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Faults on pages of the image, and on pages that read as zero.
    pub faults: u64,
    pub zero_faults: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub forks: u64,
    /// Touches of a recorded working set brought in ahead of the process.
    pub replayed: u64,
    /// From receiving the userfaultfd until every page was filled (or the process was gone).
    pub filled_in: Duration,
    /// When the process first wrote to its standard output, from the same moment.
    pub first_output: Option<Duration>,
}

/// Saved pages of a lazy VMA: `len` bytes at image address `addr`, at payload offset `off`.
#[derive(Debug, Clone, Copy)]
struct Run {
    addr: u64,
    len: u64,
    off: u64,
}

/// Where an image range lives now in one address space: `len` bytes at `cur`, which were at
/// image address `img`.
#[derive(Debug, Clone, Copy)]
struct Seg {
    cur: u64,
    len: u64,
    img: u64,
}

/// One address space to fill: the restored process, or a child it forked meanwhile.
#[derive(Debug)]
struct Space {
    uffd: OwnedFd,
    segs: Vec<Seg>,
    /// One bit per payload page still to copy in.
    pending: Vec<u64>,
    left: u64,
    cursor: usize,
    /// Faulting pages to serve again once the events ahead of them are read.
    retry: Vec<u64>,
    dead: bool,
    /// The restored process itself (not a child it forked): the one a working set is replayed
    /// into.
    main: bool,
}

impl Space {
    /// Whether any payload page in `[first, end)` is still to copy in.
    /// (`end` may lie beyond the payload: the last chunk.)
    fn any_pending(&self, first: u64, end: u64) -> bool {
        (first..end.min(self.pending.len() as u64 * 64)).any(|p| self.is_pending(p))
    }

    fn is_pending(&self, page: u64) -> bool {
        self.pending[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    fn clear(&mut self, page: u64) {
        let w = &mut self.pending[(page / 64) as usize];
        if *w & (1 << (page % 64)) != 0 {
            *w &= !(1 << (page % 64));
            self.left -= 1;
        }
    }

    /// The first pending payload page at or after the cursor, wrapping around.
    fn next_pending(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        let n = self.pending.len();
        for i in 0..=n {
            let at = (self.cursor + i) % n;
            let w = self.pending[at];
            if w != 0 {
                self.cursor = at;
                return Some(at as u64 * 64 + u64::from(w.trailing_zeros()));
            }
        }
        None
    }

    /// The pieces of image range `[img, img + len)` as they lie now: (current address, offset in
    /// the range, length).
    fn pieces(&self, img: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = self
            .segs
            .iter()
            .filter_map(|s| {
                let lo = img.max(s.img);
                let hi = (img + len).min(s.img + s.len);
                (lo < hi).then(|| (s.cur + (lo - s.img), lo - img, hi - lo))
            })
            .collect();
        out.sort_unstable_by_key(|p| p.1);
        out
    }

    /// The image address now at current address `cur`.
    fn image_addr(&self, cur: u64) -> Option<u64> {
        self.segs
            .iter()
            .find(|s| (s.cur..s.cur + s.len).contains(&cur))
            .map(|s| s.img + (cur - s.cur))
    }

    /// The segments' parts within `[start, end)` (current addresses), left in place.
    fn pieces_at(&self, start: u64, end: u64) -> Vec<Seg> {
        self.segs
            .iter()
            .filter_map(|s| {
                let lo = start.max(s.cur);
                let hi = end.min(s.cur + s.len);
                (lo < hi).then(|| Seg {
                    cur: lo,
                    len: hi - lo,
                    img: s.img + (lo - s.cur),
                })
            })
            .collect()
    }

    /// Removes `[start, end)` (current addresses) from the segments.
    fn cut(&mut self, start: u64, end: u64) -> Vec<Seg> {
        let removed = self.pieces_at(start, end);
        let mut kept = Vec::with_capacity(self.segs.len() + 1);
        for s in self.segs.drain(..) {
            let s_end = s.cur + s.len;
            if s_end <= start || s.cur >= end {
                kept.push(s);
                continue;
            }
            if s.cur < start {
                kept.push(Seg {
                    len: start - s.cur,
                    ..s
                });
            }
            if end < s_end {
                kept.push(Seg {
                    cur: end,
                    len: s_end - end,
                    img: s.img + (end - s.cur),
                });
            }
        }
        self.segs = kept;
        removed
    }
}

/// How a copy into one space went.
enum Copied {
    /// Done (including pages that turned out present or unmapped).
    All,
    /// Stopped by a memory-map change the server has not read yet; the first `n` bytes are in.
    Again(u64),
    /// The address space is gone (the process exited or exec'd).
    Dead,
}

/// The saved pages of the lazy VMAs, by image address and by payload offset.
struct Index {
    by_addr: Vec<Run>,
    by_off: Vec<Run>,
    chunk_size: u64,
}

impl Index {
    /// The payload page holding image address `img`, if the image saved that page.
    fn payload_page(&self, img: u64) -> Option<u64> {
        let i = self.by_addr.partition_point(|r| r.addr + r.len <= img);
        let r = self.by_addr.get(i).filter(|r| r.addr <= img)?;
        Some((r.off + img - r.addr) / PAGE)
    }
}

/// The spaces being filled, and what was done.
#[derive(Default)]
struct State {
    spaces: Vec<Space>,
    stats: Stats,
    /// The next touch of the working set to replay.
    replay_at: usize,
    /// The second holder of the process's userfaultfd, ended before it is closed here.
    guardian: Option<super::guardian::Guardian>,
    /// This restore's first touches not in the replayed working set, in order, when recording:
    /// each with the number of replayed touches that came before it, and whether it came before
    /// the first output.
    recorded: Vec<(usize, Touch, bool)>,
    recorded_chunks: std::collections::HashSet<u64>,
    recorded_zero: std::collections::HashSet<u64>,
    /// Late touches of the working set the process faulted on before its first output.
    promoted: std::collections::HashSet<Touch>,
    /// The process's standard output, watched for its first write ([`sys::watch_writes`]);
    /// disarmed then, and closed only once the server is done (see `WriteWatch::disarm`).
    watch: Option<sys::WriteWatch>,
    /// The replay's position and the time at the first output.
    output: Option<(usize, Duration)>,
    /// Whether the late part of the replay and background filling may go on ([`Gate`]).
    open: bool,
    /// Faults on the late part's chunks while it was held.
    late_faults: u64,
    started: Option<Instant>,
}

/// What the server did: its figures, and the working set it recorded (`None` unless recording
/// and something changed).
#[derive(Debug, Default)]
pub struct Served {
    pub stats: Stats,
    /// The replayed working set with what this restore learnt ([`Record::next`]).
    pub record: Option<Record>,
    /// How many touches were new.
    pub new_touches: usize,
}

/// Serves one restored process's lazily filled memory, on a thread of the launcher.
pub struct Server<'a> {
    image: &'a Image,
    index: Index,
    initial: Vec<Seg>,
    /// A recorded working set to bring in ahead of the process, in order: its early part at
    /// once, the rest once `gate` opens.
    replay: &'a Record,
    gate: &'a Gate,
    /// How long the process must go without a fault, the early part in, for the gate to open
    /// without its first output: as long as that took when recorded, within [`HOLD_QUIET`].
    hold_quiet: Duration,
    /// Record this restore's first touches that `replay` does not hold (all of them without a
    /// replay): chunks a background fill brought in before the process touched them in the
    /// recording restore are learnt by the next one, which faults on them.
    record: bool,
    /// The touches in `replay` (when recording), and those of its late part (faults on them are
    /// counted while it is held).
    replayed: std::collections::HashSet<Touch>,
    late: std::collections::HashSet<Touch>,
    /// Chunks verified ahead by another thread.
    ahead: Option<&'a super::ahead::Ahead<'a>>,
    /// Where chunks not yet in the image file come from (the verifier's source too).
    fetch: Option<&'a dyn Fetch>,
}

impl<'a> Server<'a> {
    /// A server for `image`'s lazy VMAs, replaying `replay` (see [`super::working_set`]) or,
    /// with `record`, recording what the process touches.
    pub fn new(
        image: &'a Image,
        replay: &'a Record,
        gate: &'a Gate,
        hold_quiet_set: Option<Duration>,
        record: bool,
        ahead: Option<&'a super::ahead::Ahead<'a>>,
    ) -> Server<'a> {
        let m = image.manifest();
        let mut by_addr = Vec::new();
        let mut initial = Vec::new();
        for vma in m.memory.iter().filter(|v| is_lazy(v, m)) {
            initial.push(Seg {
                cur: vma.start,
                len: vma.len(),
                img: vma.start,
            });
            by_addr.extend(vma.pages.iter().map(|r| Run {
                addr: r.addr,
                len: r.payload.len,
                off: r.payload.offset,
            }));
        }
        by_addr.sort_unstable_by_key(|r| r.addr);
        let mut by_off = by_addr.clone();
        by_off.sort_unstable_by_key(|r| r.off);
        Server {
            image,
            index: Index {
                by_addr,
                by_off,
                chunk_size: u64::from(image.header().chunk_size),
            },
            initial,
            replay,
            gate,
            hold_quiet: hold_quiet(replay, hold_quiet_set),
            record,
            replayed: if record {
                replay.touches.iter().copied().collect()
            } else {
                Default::default()
            },
            late: replay.touches[replay.early..].iter().copied().collect(),
            ahead,
            fetch: ahead.and_then(|a| a.fetch()),
        }
    }

    /// Waits on `sock` until the restorer has registered the lazy memory with the userfaultfd of
    /// `handover`, then serves faults and fills memory until every page is in or the process is
    /// gone. On a failure (a chunk that does not match its digest, an unreadable image), kills
    /// the process before any wrong byte is used: through the pidfd that came with its message,
    /// else as `victim` (a PID in the launcher's namespace).
    pub fn run(
        self,
        sock: OwnedFd,
        handover: Result<Handover>,
        victim: i32,
        guardian: Option<super::guardian::Guardian>,
    ) -> Result<Served> {
        let Handover {
            uffd: fd,
            sender,
            watch,
        } = match handover {
            Ok(h) => h,
            Err(f) => {
                // The restorer waits for an answer: end of file makes it fail.
                drop(sock);
                return Err(f);
            }
        };
        let kill = || match &sender {
            Some(p) => sys::pidfd_send_signal(p, libc::SIGKILL),
            None => sys::kill(victim, libc::SIGKILL),
        };
        match sys::recv_message(&sock) {
            Ok(Some(_)) => {}
            // The restorer failed while registering; it reports that itself.
            _ => return Ok(Served::default()),
        }
        drop(sock);
        // Only now: the restorer waited for the answers above.
        sys::nice_self(HELPER_NICE);
        let started = Instant::now();
        let payload_pages = self.image.header().payload_len / PAGE;
        let mut pending = vec![0u64; payload_pages.div_ceil(64) as usize];
        let mut left = 0;
        for r in &self.index.by_addr {
            for p in r.off / PAGE..(r.off + r.len) / PAGE {
                pending[(p / 64) as usize] |= 1 << (p % 64);
                left += 1;
            }
        }
        let mut st = State {
            guardian,
            // The caller's standard output is the process's: its first write there is the
            // first response, as the caller sees it.
            watch,
            open: self.gate.is_open(),
            started: Some(started),
            spaces: vec![Space {
                uffd: fd,
                segs: self.initial.clone(),
                pending,
                left,
                cursor: 0,
                retry: Vec::new(),
                dead: false,
                main: true,
            }],
            ..State::default()
        };
        // A panic would close the userfaultfds as it unwinds, and the kernel would then hand the
        // process zero pages for everything still missing: it is killed first, as on an error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.serve(&mut st, sender.as_ref())
        }))
        .unwrap_or_else(|_| {
            Err(Failure::new(
                Code::Internal,
                "the memory server failed; the restored process was killed",
            ))
        });
        st.stats.filled_in = started.elapsed();
        // Nothing more to verify ahead, nor to hold for the process's life; nothing held back.
        if let Some(a) = self.ahead {
            a.release();
        }
        self.open_gate(&mut st);
        if result.is_ok() {
            self.await_output(&mut st, sender.as_ref());
        }
        st.stats.first_output = st.output.map(|(_, t)| t);
        // A watch still armed: removed now, its instance left to the launcher's exit, by which
        // time the kernel has let go of the watch (see `WriteWatch::disarm`).
        if let Some(mut w) = st.watch.take() {
            if st.output.is_none() {
                w.disarm();
                std::mem::forget(w);
            }
        }
        match result {
            Err(f) => {
                kill();
                Err(f)
            }
            Ok(()) => Ok(Served {
                stats: st.stats,
                new_touches: st.recorded.len(),
                record: self
                    .record
                    .then(|| {
                        self.replay.next(&Learnt {
                            new: std::mem::take(&mut st.recorded),
                            promoted: std::mem::take(&mut st.promoted),
                            output: st.output,
                        })
                    })
                    .flatten(),
            }),
        }
    }

    /// One thread does both jobs: it answers faults and events as soon as they come (spinning
    /// while they come close together: a thread waiting for memory is the priority), and fills
    /// one chunk at a time in the background when they pause.
    fn serve(&self, st: &mut State, sender: Option<&OwnedFd>) -> Result<()> {
        let mut msgs = [uffd::Msg::default(); 64];
        let mut buf = vec![0u8; self.index.chunk_size as usize];
        let mut last_fault = Instant::now();
        while !st.spaces.is_empty() {
            let before = st.stats.faults + st.stats.zero_faults;
            self.quiet_enough(st, last_fault);
            let mut s = 0;
            while s < st.spaces.len() {
                while !st.spaces[s].dead {
                    let n = uffd::read(&st.spaces[s].uffd, &mut msgs)
                        .map_err(|e| failed(format!("cannot read the userfaultfd: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    // After reading the faults, before taking them as early: a write the watch
                    // has not seen yet came after them (the watch hears of it within the write),
                    // so no fault after the first output is ever taken as before it.
                    self.saw_output(st);
                    for m in &msgs[..n] {
                        self.event(st, s, m, &mut buf)?;
                    }
                }
                for page in std::mem::take(&mut st.spaces[s].retry) {
                    self.fault(st, s, page, &mut buf, true)?;
                }
                s += 1;
            }
            // A fault that must wait (EAGAIN: the process is in the middle of changing its
            // mappings, and only its thread, once it runs again, ends that) is retried after
            // giving the core away: spinning on it kept that thread off the core for up to 5 ms.
            if st.spaces.iter().any(|sp| !sp.retry.is_empty()) {
                std::thread::yield_now();
            }
            // A finished space's userfaultfd is closed: its VMAs become ordinary memory. The
            // process's is held by the guardian too, which lets go of it first.
            // Nothing of the process's own is held back any more either (what is left is a
            // child's, which the process's first output does not wait for).
            if st
                .spaces
                .iter()
                .any(|sp| sp.main && (sp.dead || sp.left == 0))
            {
                st.guardian = None;
                self.open_gate(st);
            }
            st.spaces.retain(|sp| !sp.dead && sp.left > 0);
            if st.stats.faults + st.stats.zero_faults != before {
                last_fault = Instant::now();
            }
            // The recorded working set goes in at once, in order (faults still come first).
            if st.spaces.iter().all(|sp| sp.retry.is_empty()) && self.replay_one(st, &mut buf)? {
                continue;
            }
            if last_fault.elapsed() < QUIET || st.spaces.iter().any(|sp| !sp.retry.is_empty()) {
                continue;
            }
            // The early part is in, and the rest waits for the first output: wait for a fault,
            // the output, or the process to go quiet, leaving the cores to it.
            if !st.open {
                if self.wait_held(st, last_fault, sender)? {
                    // The process is gone: what is left is found out by filling.
                    self.open_gate(st);
                }
                continue;
            }
            let next = st.spaces.iter_mut().find_map(|sp| {
                let page = sp.next_pending()?;
                Some((sp, page * PAGE / self.index.chunk_size))
            });
            match next {
                Some((space, chunk)) => {
                    self.copy_verified(space, &mut st.stats, chunk, &mut buf, true)?;
                }
                // Nothing left to fill anywhere, whatever the counts say: done (never spin).
                None => st.spaces.iter_mut().for_each(|sp| sp.left = 0),
            }
        }
        Ok(())
    }

    /// Copies chunk `chunk` into `space` ([`copy_chunk`]) from its verified bytes: verified
    /// ahead (whose buffer is then reused), or read and verified now into `buf` (fetched, where
    /// it must be, alone for a fault and with its whole unit `ahead_of_faults`).
    fn copy_verified(
        &self,
        space: &mut Space,
        stats: &mut Stats,
        chunk: u64,
        buf: &mut [u8],
        ahead_of_faults: bool,
    ) -> Result<bool> {
        let ahead = self.ahead.and_then(|a| {
            a.with(chunk, |data| {
                copy_chunk(&self.index, space, stats, chunk, data)
            })
        });
        match ahead {
            Some(copied) => copied,
            None => {
                let data = self.verified_chunk(chunk, buf, ahead_of_faults)?;
                copy_chunk(&self.index, space, stats, chunk, data)
            }
        }
    }

    /// Chunk `chunk`'s bytes, read and verified now into `buf`.
    fn verified_chunk<'b>(&self, chunk: u64, buf: &'b mut [u8], whole: bool) -> Result<&'b [u8]> {
        if let Some(f) = self.fetch {
            f.fetch(chunk, whole).map_err(|f| {
                Failure::new(
                    f.code,
                    format!("{}; the restored process was killed", f.message),
                )
            })?;
        }
        self.image.read_chunk(chunk, buf).map_err(|e| {
            let f = Failure::from(e);
            Failure::new(
                f.code,
                format!("{}; the restored process was killed", f.message),
            )
        })
    }

    fn event(&self, st: &mut State, s: usize, m: &uffd::Msg, buf: &mut [u8]) -> Result<()> {
        match m.event {
            uffd::EVENT_PAGEFAULT => self.fault(st, s, m.arg[1] & !(PAGE - 1), buf, false),
            uffd::EVENT_FORK => {
                let parent = &st.spaces[s];
                let child = Space {
                    uffd: m.fork_fd(),
                    segs: parent.segs.clone(),
                    pending: parent.pending.clone(),
                    left: parent.left,
                    cursor: 0,
                    retry: Vec::new(),
                    dead: false,
                    main: false,
                };
                st.spaces.push(child);
                st.stats.forks += 1;
                Ok(())
            }
            uffd::EVENT_REMAP => {
                let (from, to, len) = (m.arg[0], m.arg[1], m.arg[2]);
                let space = &mut st.spaces[s];
                let moved = space.cut(from, from + len);
                space.segs.extend(moved.into_iter().map(|g| Seg {
                    cur: g.cur - from + to,
                    ..g
                }));
                Ok(())
            }
            uffd::EVENT_REMOVE | uffd::EVENT_UNMAP => {
                let (start, end) = (m.arg[0], m.arg[1]);
                let space = &mut st.spaces[s];
                let gone = if m.event == uffd::EVENT_UNMAP {
                    space.cut(start, end)
                } else {
                    space.pieces_at(start, end)
                };
                for g in gone {
                    self.forget(space, g.img, g.len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Marks the image range's pages as not to be filled (they read as zero from now on).
    fn forget(&self, space: &mut Space, img: u64, len: u64) {
        let by_addr = &self.index.by_addr;
        let first = by_addr.partition_point(|r| r.addr + r.len <= img);
        for r in &by_addr[first..] {
            if r.addr >= img + len {
                break;
            }
            let lo = img.max(r.addr);
            let hi = (img + len).min(r.addr + r.len);
            for a in (lo..hi).step_by(PAGE as usize) {
                space.clear((r.off + a - r.addr) / PAGE);
            }
        }
    }

    /// Serves a thread waiting for `page` (a current address) in space `s` (`again`: a fault
    /// that had to wait, counted already).
    fn fault(
        &self,
        st: &mut State,
        s: usize,
        page: u64,
        buf: &mut [u8],
        again: bool,
    ) -> Result<()> {
        let space = &mut st.spaces[s];
        let payload_page = space
            .image_addr(page)
            .and_then(|img| self.index.payload_page(img));
        let cs = self.index.chunk_size;
        let late = |p: u64| space.is_pending(p) && self.late.contains(&Touch::Chunk(p * PAGE / cs));
        if !st.open && payload_page.is_some_and(late) {
            st.late_faults += 1;
        }
        // Every space's touches: a child the process forks touches what the next restore's
        // child will, and it inherits what was brought into the process before its fork.
        if self.record {
            let touch = match payload_page {
                Some(p) if space.is_pending(p) => {
                    let c = p * PAGE / cs;
                    st.recorded_chunks.insert(c).then_some(Touch::Chunk(c))
                }
                // Dropped by the process since: not a touch of the image.
                Some(_) => None,
                None => space
                    .image_addr(page)
                    .map(|a| a & !(cs - 1))
                    .filter(|&block| st.recorded_zero.insert(block))
                    .map(Touch::Zero),
            };
            let early = st.output.is_none();
            match touch {
                Some(t) if !self.replayed.contains(&t) => {
                    st.recorded.push((st.replay_at, t, early))
                }
                Some(t) if early && self.late.contains(&t) => {
                    st.promoted.insert(t);
                }
                _ => {}
            }
        }
        let Some(p) = payload_page.filter(|&p| space.is_pending(p)) else {
            st.stats.zero_faults += u64::from(!again);
            return match uffd::zeropage(&space.uffd, page, PAGE) {
                Ok(()) => {
                    self.zero_around(space, page);
                    Ok(())
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EEXIST) => {
                        let _ = uffd::wake(&space.uffd, page, PAGE);
                        Ok(())
                    }
                    Some(libc::EAGAIN) => {
                        space.retry.push(page);
                        Ok(())
                    }
                    Some(libc::ESRCH) | Some(libc::ENOENT) => Ok(()),
                    _ => Err(failed(format!("cannot map a zero page at {page:#x}: {e}"))),
                },
            };
        };
        st.stats.faults += u64::from(!again);
        let chunk = p * PAGE / self.index.chunk_size;
        // Read ahead: background filling continues after this chunk, where a thread scanning
        // memory goes next.
        let next_word = ((chunk + 1) * self.index.chunk_size / PAGE / 64) as usize;
        space.cursor = next_word.min(space.pending.len().saturating_sub(1));
        let complete = self.copy_verified(space, &mut st.stats, chunk, buf, false)?;
        if !complete && space.is_pending(p) {
            space.retry.push(page);
        } else if !space.dead {
            let _ = uffd::wake(&space.uffd, page, PAGE);
        }
        Ok(())
    }
}

/// See [`Server::hold_quiet`] (`set`: the working set's test hook).
fn hold_quiet(replay: &Record, set: Option<Duration>) -> Duration {
    let recorded = replay.first_output.unwrap_or_default();
    set.unwrap_or_else(|| recorded.clamp(HOLD_QUIET.0, HOLD_QUIET.1))
}

impl Server<'_> {
    /// Notes the process's first output (its time and where the replay was), and opens the
    /// gate.
    fn saw_output(&self, st: &mut State) {
        if st.output.is_none() && st.watch.as_ref().is_some_and(|w| w.written()) {
            let at = st.started.map_or(Duration::ZERO, |s| s.elapsed());
            st.output = Some((st.replay_at, at));
            if let Some(w) = &mut st.watch {
                w.disarm();
            }
            if let Some(f) = self.fetch {
                f.first_output();
            }
            self.open_gate(st);
        }
    }

    /// Memory all in before the process wrote anything: its first output is still waited for,
    /// until the process ends (the record keeps its time, which says how long a replay holds the
    /// late part back; all the touches came before it).
    fn await_output(&self, st: &mut State, process: Option<&OwnedFd>) {
        let (Some(w), Some(p)) = (st.watch.as_ref(), process) else {
            return;
        };
        if st.output.is_none() {
            // A failure to wait costs only that time.
            let _ = sys::poll_readable(&[w.as_raw_fd(), p.as_raw_fd()], None);
            self.saw_output(st);
        }
    }

    /// Opens the gate at the first output, once the process has been quiet long enough after
    /// the early part came in, or once it has faulted on [`HOLD_LATE_FAULTS`] late chunks.
    fn quiet_enough(&self, st: &mut State, last_fault: Instant) {
        self.saw_output(st);
        let quiet = st.replay_at >= self.replay.early && last_fault.elapsed() >= self.hold_quiet;
        if !st.open && (quiet || st.late_faults >= HOLD_LATE_FAULTS) {
            self.open_gate(st);
        }
    }

    fn open_gate(&self, st: &mut State) {
        if !st.open {
            st.open = true;
            self.gate.open();
            if let Some(f) = self.fetch {
                f.nudge();
            }
        }
    }

    /// Waits (without spinning) for a fault or an event, the first output, the process's end,
    /// or the end of the quiet time that opens the gate; true if the process ended.
    fn wait_held(
        &self,
        st: &State,
        last_fault: Instant,
        process: Option<&OwnedFd>,
    ) -> Result<bool> {
        let mut fds: Vec<RawFd> = st
            .spaces
            .iter()
            .filter(|sp| !sp.dead)
            .map(|sp| sp.uffd.as_raw_fd())
            .collect();
        fds.extend(
            st.watch
                .as_ref()
                .filter(|_| st.output.is_none())
                .map(|w| w.as_raw_fd()),
        );
        fds.extend(process.map(|p| p.as_raw_fd()));
        let left = self.hold_quiet.saturating_sub(last_fault.elapsed());
        sys::poll_readable(&fds, Some(left))
            .map(|ready| process.is_some() && ready.last() == Some(&true))
            .map_err(|e| {
                failed(format!(
                    "cannot wait for the restored process's memory: {e}"
                ))
            })
    }

    /// Brings in the next touch of the working set that still has something to bring in; false
    /// when the record is done (or the process it was for is gone).
    fn replay_one(&self, st: &mut State, buf: &mut [u8]) -> Result<bool> {
        let Some(s) = st.spaces.iter().position(|sp| sp.main && !sp.dead) else {
            return Ok(false);
        };
        let cs = self.index.chunk_size;
        while let Some(&touch) = self.replay.touches.get(st.replay_at) {
            if !st.open && !self.replay.is_early(st.replay_at) {
                return Ok(false);
            }
            st.replay_at += 1;
            let space = &mut st.spaces[s];
            let done = match touch {
                Touch::Chunk(c) => {
                    if !space.any_pending(c * cs / PAGE, (c + 1) * cs / PAGE) {
                        if let Some(a) = self.ahead {
                            a.skip(c);
                        }
                        continue;
                    }
                    self.copy_verified(space, &mut st.stats, c, buf, true)?;
                    true
                }
                Touch::Zero(block) => self.zero_block(space, block),
            };
            if done {
                st.stats.replayed += 1;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Maps zero pages around `page` (a current address whose own zero page is in) over the
    /// pages that read as zero too: never saved, or dropped by the process since (`MADV_DONTNEED`:
    /// a garbage collector giving pages back and taking them again), up to [`HOLE_WINDOW`] on
    /// either side, never over a page still to fill. Best effort: a page present already, or a
    /// memory-map change meanwhile, ends it early.
    fn zero_around(&self, space: &Space, page: u64) {
        let Some(seg) = space
            .segs
            .iter()
            .find(|s| (s.cur..s.cur + s.len).contains(&page))
        else {
            return;
        };
        let zero = |cur: u64| {
            self.index
                .payload_page(seg.img + (cur - seg.cur))
                .is_none_or(|p| !space.is_pending(p))
        };
        let mut hi = page + PAGE;
        while hi < (page + HOLE_WINDOW).min(seg.cur + seg.len) && zero(hi) {
            hi += PAGE;
        }
        let mut lo = page;
        while lo > page.saturating_sub(HOLE_WINDOW).max(seg.cur) && zero(lo - PAGE) {
            lo -= PAGE;
        }
        if page + PAGE < hi {
            let _ = uffd::zeropage(&space.uffd, page + PAGE, hi - page - PAGE);
        }
        if lo < page {
            let _ = uffd::zeropage(&space.uffd, lo, page - lo);
        }
    }

    /// Fills the never-saved pages of the image block at `img` (where they lie now) with zeros,
    /// as the kernel would on first touch; true if any page went in. Saved pages are left to
    /// their chunk; pages already present, unmapped or moved away are skipped.
    fn zero_block(&self, space: &mut Space, img: u64) -> bool {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let hole = |a: u64| self.index.payload_page(a).is_none();
        let mut did = false;
        for (cur, at, n) in space.pieces(img, self.index.chunk_size) {
            let mut p = 0;
            while p < n {
                if !hole(img + at + p) {
                    p += PAGE;
                    continue;
                }
                // At most the zero buffer at a time (a chunk may be larger).
                let mut q = p + PAGE;
                while q < n && q - p < ZEROS.len() as u64 && hole(img + at + q) {
                    q += PAGE;
                }
                match copy_in(space, cur + p, &ZEROS[..(q - p) as usize]) {
                    Ok(Copied::Dead) => {
                        space.dead = true;
                        return did;
                    }
                    Ok(_) => did = true,
                    // Only an optimisation: a fault would bring the page in anyway.
                    Err(_) => {}
                }
                p = q;
            }
        }
        did
    }
}

/// Copies the still-pending pages of verified chunk `c` (its bytes: `data`) into `space`.
/// Returns false when a memory-map change interrupted it (the events must be read first).
fn copy_chunk(
    index: &Index,
    space: &mut Space,
    stats: &mut Stats,
    c: u64,
    data: &[u8],
) -> Result<bool> {
    stats.chunks += 1;
    let c_start = c * index.chunk_size;
    let c_end = c_start + data.len() as u64;
    let first = index.by_off.partition_point(|r| r.off + r.len <= c_start);
    for r in &index.by_off[first..] {
        if r.off >= c_end {
            break;
        }
        let lo = r.off.max(c_start);
        let hi = (r.off + r.len).min(c_end);
        let mut p = lo / PAGE;
        while p < hi / PAGE {
            if !space.is_pending(p) {
                p += 1;
                continue;
            }
            let mut q = p;
            while q < hi / PAGE && space.is_pending(q) {
                q += 1;
            }
            // Payload pages p..q: an image range, in pieces where it lies now.
            let img = r.addr + (p * PAGE - r.off);
            let len = (q - p) * PAGE;
            let mut reached = 0;
            for (cur, at, n) in space.pieces(img, len) {
                // Pages of the range that lie nowhere now cannot fault any more.
                for gap in (reached..at).step_by(PAGE as usize) {
                    space.clear(p + gap / PAGE);
                }
                reached = at + n;
                let src = &data[(p * PAGE - c_start + at) as usize..][..n as usize];
                let done = match copy_in(space, cur, src)? {
                    Copied::All => n,
                    Copied::Again(k) => k,
                    Copied::Dead => {
                        space.dead = true;
                        return Ok(true);
                    }
                };
                for off in (0..done).step_by(PAGE as usize) {
                    space.clear(p + (at + off) / PAGE);
                }
                stats.bytes += done;
                if done < n {
                    return Ok(false);
                }
            }
            for gap in (reached..len).step_by(PAGE as usize) {
                space.clear(p + gap / PAGE);
            }
            p = q;
        }
    }
    Ok(true)
}

/// Copies `src` to current address `cur` of `space`, page by page where a larger copy fails
/// (the range may now span two VMAs).
fn copy_in(space: &Space, cur: u64, src: &[u8]) -> Result<Copied> {
    let len = src.len() as u64;
    let mut done = 0;
    while done < len {
        match uffd::copy(&space.uffd, cur + done, &src[done as usize..]) {
            Ok(()) => return Ok(Copied::All),
            Err((e, n)) => {
                done += n;
                match e.raw_os_error() {
                    // Already present (the page was mapped meanwhile): leave it.
                    Some(libc::EEXIST) => done += PAGE,
                    Some(libc::ENOENT) if len - done > PAGE => {
                        // Possibly only the range crossing VMAs: retry one page at a time.
                        match copy_in(space, cur + done, &src[done as usize..][..PAGE as usize])? {
                            Copied::All => done += PAGE,
                            other => return Ok(other),
                        }
                    }
                    // Not registered any more (unmapped): nothing can read it.
                    Some(libc::ENOENT) => done += PAGE,
                    Some(libc::EAGAIN) => return Ok(Copied::Again(done)),
                    Some(libc::ESRCH) => return Ok(Copied::Dead),
                    _ => {
                        return Err(failed(format!(
                            "cannot fill the restored process's memory at {:#x}: {e}",
                            cur + done
                        )))
                    }
                }
            }
        }
    }
    Ok(Copied::All)
}

fn failed(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::RestoreFailed, msg)
}
