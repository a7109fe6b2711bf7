//! Signals from outside, held for the first life while a checkpoint runs.
//!
//! A runtime takes a signal the moment it comes: libuv writes it into its signal pipe, CPython
//! sets a flag and writes its wakeup descriptor, HotSpot posts to its dispatcher thread. The
//! program acts on it later, at its loop's next turn. A supervisor's SIGTERM (or a Ctrl-C) that
//! came while `checkpoint()` ran its hooks and took the snapshot was then part of the image, and
//! every restore acted on it: each instance ended at once. It was sent to the first life.
//!
//! From the start of a checkpoint (before its hooks) to its end, each standard signal the
//! program handles goes to a handler of ours instead, with the program's own flags and mask.
//! One another process sent (`kill`, `sigqueue`, `tgkill`) or a terminal raised (the rule of
//! [`state::signals::from_outside`](crate::state::signals)) is kept here and not given to the
//! program; any other (its own `raise`, a timer's, a child's SIGCHLD) goes to the program's
//! handler at once, as if ours were not there. At the end the program's handlers are put back
//! and, in the first life, what was kept is queued again with its siginfo, for the same thread
//! where it was sent to one; a restored process forgets it. The image records the program's
//! handlers, never ours. Real-time signals are left alone (the checkpoint's own is one).

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sys::{self, KernelSigaction};

/// The signals the kernel raises for the faulting instruction (a runtime's null checks and
/// safepoints go through them): never wrapped, never blocked.
pub(crate) const FAULTS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// How many signals are kept at most: each standard signal once (the kernel merges a second
/// one of a kind that is still pending, too).
const SLOTS: usize = 32;

/// The program's disposition of each standard signal we wrapped (`handler == 0` if never).
struct Original {
    handler: AtomicU64,
    flags: AtomicU64,
    restorer: AtomicU64,
    mask: AtomicU64,
}

/// One kept signal: its number (0 when the slot is free), the thread it was sent to (0 for the
/// process) and its siginfo.
struct Kept {
    signo: AtomicI32,
    tid: AtomicI32,
    info: [AtomicU64; 16],
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_ORIGINAL: Original = Original {
    handler: AtomicU64::new(0),
    flags: AtomicU64::new(0),
    restorer: AtomicU64::new(0),
    mask: AtomicU64::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const FREE: Kept = Kept {
    signo: AtomicI32::new(0),
    tid: AtomicI32::new(0),
    info: [ZERO; 16],
};

static ORIGINALS: [Original; 32] = [NO_ORIGINAL; 32];
static KEPT: [Kept; SLOTS] = [FREE; SLOTS];
/// This process's PID, read when the hold began (the handler compares senders with it).
static PID: AtomicI32 = AtomicI32::new(0);
/// Holds begun and not yet ended (a language SDK's around the whole call, ours in `save`).
static DEPTH: Mutex<usize> = Mutex::new(0);

/// A hold that ends when dropped.
pub(crate) struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        end();
    }
}

/// Begins holding (nested holds end with the outermost).
pub(crate) fn hold() -> Held {
    begin();
    Held(())
}

/// Begins holding: the program's handlers of standard signals are wrapped.
pub fn begin() {
    let mut depth = DEPTH.lock().unwrap_or_else(|p| p.into_inner());
    *depth += 1;
    if *depth > 1 {
        return;
    }
    PID.store(sys::getpid(), Ordering::Relaxed);
    for signo in 1..32 {
        // (Nor those no handler can take.)
        if FAULTS.contains(&signo) || signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction::default();
        if sys::rt_sigaction(signo, None, Some(&mut old)).is_err()
            || old.handler == libc::SIG_DFL as u64
            || old.handler == libc::SIG_IGN as u64
            || old.handler == ours()
        {
            continue;
        }
        let o = &ORIGINALS[signo as usize];
        o.flags.store(old.flags, Ordering::Relaxed);
        o.restorer.store(old.restorer, Ordering::Relaxed);
        o.mask.store(old.mask, Ordering::Relaxed);
        o.handler.store(old.handler, Ordering::Release);
        let ours = KernelSigaction {
            handler: ours(),
            flags: old.flags | libc::SA_SIGINFO as u64,
            ..old
        };
        if sys::rt_sigaction(signo, Some(&ours), None).is_err() {
            o.handler.store(0, Ordering::Release);
        }
    }
}

/// Ends a hold; the outermost puts the program's handlers back and queues what was kept (none
/// in a restored process: see [`forget`]).
pub fn end() {
    let mut depth = DEPTH.lock().unwrap_or_else(|p| p.into_inner());
    if *depth == 0 {
        return;
    }
    *depth -= 1;
    if *depth > 0 {
        return;
    }
    for (signo, o) in ORIGINALS.iter().enumerate().skip(1) {
        let mut now = KernelSigaction::default();
        if o.handler.load(Ordering::Acquire) == 0
            || sys::rt_sigaction(signo as i32, None, Some(&mut now)).is_err()
        {
            continue;
        }
        // A handler the program set meanwhile stays. (The original stays recorded: a signal
        // our handler is taking this moment still reaches it.)
        if let Some(t) = program_action(signo as u32, now) {
            let _ = sys::rt_sigaction(signo as i32, Some(&t), None);
        }
    }
    let pid = sys::getpid();
    for k in &KEPT {
        let signo = k.signo.load(Ordering::Acquire);
        // (-1: a handler still filling the slot as the hold ended; it is lost.)
        if signo <= 0 {
            continue;
        }
        let info: [u64; 16] = std::array::from_fn(|i| k.info[i].load(Ordering::Relaxed));
        let tid = k.tid.swap(0, Ordering::Relaxed);
        k.signo.store(0, Ordering::Release);
        queue_again(pid, tid, signo, info);
    }
}

/// Queues a kept signal again with its siginfo: for thread `tid`, or for the process (`0`).
/// The kernel lets a thread queue a siginfo of kill()'s kind (`si_code` >= 0) only to itself, or
/// for the process only from its main thread; from another thread, one for the process goes to
/// this thread if it lets it in, else it is queued for the process as `SI_QUEUE`, the sender's
/// PID and UID kept.
fn queue_again(pid: i32, tid: i32, signo: i32, mut info: [u64; 16]) {
    const SI_QUEUE: i32 = -1;
    const SI_TKILL: i32 = -6;
    let me = sys::gettid();
    let code = info[1] as u32 as i32;
    let kills_kind = code >= 0 || code == SI_TKILL;
    let lets_in = || {
        let blocked = sys::sigprocmask(libc::SIG_BLOCK, None).unwrap_or(u64::MAX);
        blocked & (1u64 << (signo - 1)) == 0
    };
    // (The thread it goes to, `None` for the process; whether only as SI_QUEUE.)
    let (to, as_queue) = match tid {
        0 if me == pid || !kills_kind => (None, false),
        0 if lets_in() => (Some(me), false),
        0 => (None, true),
        tid => (Some(tid), kills_kind && tid != me),
    };
    if as_queue {
        info[1] = (info[1] & !0xffff_ffff) | u64::from(SI_QUEUE as u32);
    }
    let info = info.as_ptr() as u64;
    let _ = match to {
        Some(tid) => sys::syscall6(
            libc::SYS_rt_tgsigqueueinfo,
            [pid as u64, tid as u64, signo as u64, info, 0, 0],
        ),
        None => sys::syscall6(
            libc::SYS_rt_sigqueueinfo,
            [pid as u64, signo as u64, info, 0, 0, 0],
        ),
    };
}

/// In a restored process: what the first life kept was sent to it alone.
pub(crate) fn forget() {
    for k in &KEPT {
        k.signo.store(0, Ordering::Release);
    }
}

/// The program's own disposition where `now` is ours (what the image records).
pub(crate) fn theirs(signo: u32, now: KernelSigaction) -> KernelSigaction {
    program_action(signo, now).unwrap_or(now)
}

/// The program's disposition of `signo` where `now` is ours, or SIG_DFL left by a one-shot
/// (SA_RESETHAND) handler of the program's for a signal we kept: then it is the program's
/// handler that takes it when it is queued again.
fn program_action(signo: u32, now: KernelSigaction) -> Option<KernelSigaction> {
    let o = ORIGINALS.get(signo as usize)?;
    let handler = o.handler.load(Ordering::Acquire);
    let flags = o.flags.load(Ordering::Relaxed);
    let reset = now.handler == libc::SIG_DFL as u64
        && flags & libc::SA_RESETHAND as u64 != 0
        && KEPT
            .iter()
            .any(|k| k.signo.load(Ordering::Relaxed) == signo as i32);
    (handler != 0 && (now.handler == ours() || reset)).then(|| KernelSigaction {
        handler,
        flags,
        restorer: o.restorer.load(Ordering::Relaxed),
        mask: o.mask.load(Ordering::Relaxed),
    })
}

/// The address of our handler.
fn ours() -> u64 {
    wrapper as *const () as u64
}

/// Our handler: keeps a signal from outside, gives any other to the program's. Async-signal-safe.
extern "C" fn wrapper(signo: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(o) = ORIGINALS.get(signo as usize) else {
        return;
    };
    let words = sys::siginfo_words(info);
    let code = words[1] as u32 as i32;
    let sender = words[2] as u32 as i32;
    if crate::state::signals::sent_from_outside(signo, code, sender, PID.load(Ordering::Relaxed)) {
        const SI_TKILL: i32 = -6;
        let tid = if code == SI_TKILL { sys::gettid() } else { 0 };
        for k in &KEPT {
            let taken = k.signo.load(Ordering::Acquire);
            if taken == signo {
                return;
            }
            if taken == 0
                && k.signo
                    .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                for (slot, w) in k.info.iter().zip(words) {
                    slot.store(w, Ordering::Relaxed);
                }
                k.tid.store(tid, Ordering::Relaxed);
                k.signo.store(signo, Ordering::Release);
                return;
            }
        }
        return;
    }
    let handler = o.handler.load(Ordering::Acquire);
    if handler == 0 || handler == ours() {
        return;
    }
    let three_args = o.flags.load(Ordering::Relaxed) & libc::SA_SIGINFO as u64 != 0;
    // SAFETY: the program installed `handler` for this signal, as a three-argument handler if
    // its flags say SA_SIGINFO; it gets the kernel's own arguments, as it would without us.
    unsafe { sys::call_handler(handler, three_args, signo, info, ctx) };
}
