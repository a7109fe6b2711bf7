//! Threads that block the checkpoint signal (Node.js's inspector watchdog blocks every signal for
//! its whole life) are captured without it: a helper process, which the process allows to trace
//! it (`PR_SET_PTRACER` where Yama asks for it), seizes each such thread and interrupts it
//! (PTRACE_INTERRUPT stops a thread whatever it blocks), reads its registers, extended state,
//! signal mask and rseq registration, and makes it run two system calls at a `syscall`
//! instruction of ours (`sigaltstack` and `PR_GET_TID_ADDRESS`, which no other interface reads).
//! The thread stays stopped until the snapshot is forked, then goes on.
//!
//! For the image, a signal frame is written on the thread's stack in the snapshot, below its red
//! zone, exactly as the kernel would have built one: from then on the thread is restored like
//! every other (the restorer's `rt_sigreturn` on its frame). A thread stopped inside an
//! interrupted system call is set to issue that call again, as the kernel does for a signal
//! handled with SA_RESTART.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::sys;

const XSAVE_MAX: usize = 16384;
const NREGS: usize = 27;
// struct user_regs_struct indices.
const R10: usize = 7;
const R9: usize = 8;
const R8: usize = 9;
const RAX: usize = 10;
const RCX: usize = 11;
const RDX: usize = 12;
const RSI: usize = 13;
const RDI: usize = 14;
const ORIG_RAX: usize = 15;
const RIP: usize = 16;
const EFLAGS: usize = 18;
const RSP: usize = 19;
pub(crate) const FS_BASE: usize = 21;
pub(crate) const GS_BASE: usize = 22;

const PTRACE_GETREGS: u32 = 12;
const PTRACE_SETREGS: u32 = 13;
const PTRACE_SYSCALL: u32 = 24;
const PTRACE_DETACH: u32 = 17;
const PTRACE_CONT: u32 = 7;
const PTRACE_GETREGSET: u32 = 0x4204;
const PTRACE_SEIZE: u32 = 0x4206;
const PTRACE_INTERRUPT: u32 = 0x4207;
const PTRACE_GETSIGMASK: u32 = 0x420a;
const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;
const PTRACE_O_TRACESYSGOOD: u64 = 1;
const PTRACE_EVENT_STOP: i32 = 128;
const NT_X86_XSTATE: u64 = 0x202;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_SET_PTRACER: u64 = 0x5961_6d61;

/// The layout of what the helper learned about one thread, in our memory (the helper writes it
/// with process_vm_writev; the injected system calls write `altstack` and `tid_address`
/// themselves). Read back as a [`Captured`].
#[repr(C)]
#[allow(dead_code)] // a layout: written by the helper, read by offset
struct Slot {
    /// 0 once captured; else the failed step (1-based) and errno.
    step: u32,
    errno: u32,
    pub regs: [u64; NREGS],
    /// The registers the thread goes on with (and is restored with): an interrupted system
    /// call issued again.
    pub resume: [u64; NREGS],
    pub sigmask: u64,
    /// struct ptrace_rseq_configuration: address, size | signature << 32, flags.
    pub rseq: [u64; 3],
    /// stack_t: ss_sp, ss_flags, ss_size.
    pub altstack: [u64; 3],
    pub tid_address: u64,
    /// The thread's own settings, each read by a call it made (see [`Controls`]); `u64::MAX`
    /// where the call failed. PR_GET_TSC writes its answer here itself.
    pub controls: [u64; CONTROLS],
    /// Its CPU mask, as its sched_getaffinity wrote it (how many bytes: `controls[AFFINITY]`).
    pub affinity: [u64; 16],
    pub xsave_len: u64,
    pub xsave: [u8; XSAVE_MAX],
    /// Its own signal queue as PTRACE_PEEKSIGINFO read it: how many (`u64::MAX`: more than
    /// there is room for), then the siginfos. `shared`: the process's queue, read on the main
    /// thread only (the handlers do not read it then).
    pub nsigs: u64,
    pub sigs: [[u64; 16]; SIG_ROOM],
    pub nshared: u64,
    pub shared: [[u64; 16]; SIG_ROOM],
}

/// The calls a traced thread is made to run to report its settings (what the signal handler
/// reads in the others): (number, arguments). The one for PR_GET_TSC gets the address of its
/// slot, which it writes to, and sched_getaffinity the address of the slot's mask.
const CONTROLS: usize = 14;
/// Where [`control_calls`] has the scheduling ones: getpriority (20 - nice),
/// sched_getscheduler, ioprio_get, sched_getaffinity (bytes written).
const NICE: usize = 9;
const POLICY: usize = 10;
const IOPRIO: usize = 11;
const AFFINITY: usize = 12;
/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING): ENOKEY where it has none.
const KEYRING: usize = 13;
fn control_calls(tsc_at: u64, affinity_at: u64) -> [(i64, [u64; 3]); CONTROLS] {
    let prctl = |op: i32, arg: u64| (libc::SYS_prctl, [op as u64, arg, 0]);
    [
        prctl(libc::PR_MCE_KILL_GET, 0),
        (libc::SYS_arch_prctl, [0x1011, 0, 0]), // ARCH_GET_CPUID
        prctl(libc::PR_GET_TIMERSLACK, 0),
        (libc::SYS_personality, [0xffff_ffff, 0, 0]),
        prctl(libc::PR_GET_SECUREBITS, 0),
        prctl(libc::PR_GET_TSC, tsc_at),
        prctl(libc::PR_GET_SPECULATION_CTRL, 0),
        prctl(libc::PR_GET_SPECULATION_CTRL, 1),
        prctl(libc::PR_GET_SPECULATION_CTRL, 2),
        (libc::SYS_getpriority, [libc::PRIO_PROCESS as u64, 0, 0]),
        (libc::SYS_sched_getscheduler, [0, 0, 0]),
        (libc::SYS_ioprio_get, [1, 0, 0]),
        (libc::SYS_sched_getaffinity, [0, 128, affinity_at]),
        (libc::SYS_keyctl, [0, -1i64 as u64, 0]),
    ]
}

/// Room for a traced thread's pending signals, and for the process's (as for the others, see
/// `capture::QUEUED_MAX`).
const SIG_ROOM: usize = crate::capture::QUEUED_MAX;
const PTRACE_PEEKSIGINFO: u32 = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

const STEPS: [&str; 10] = [
    "attach (PTRACE_SEIZE)",
    "interrupt",
    "wait for it to stop",
    "read its registers",
    "read its extended state",
    "read its signal mask",
    "read its rseq registration",
    "read its alternate signal stack",
    "read its clear_child_tid address",
    "read its signal queues",
];

/// The most threads the helper stops (its list of failures is fixed: it allocates nothing).
pub(crate) const MAX_THREADS: usize = 64;

/// The helper and what it captured; [`Traced::release`] lets the threads go.
pub(crate) struct Traced {
    helper: i32,
    released: bool,
    slots: sys::DontForkBuf,
    pub tids: Vec<i32>,
    release_w: OwnedFd,
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced").field("tids", &self.tids).finish()
    }
}

/// Why [`capture`] failed.
#[derive(Debug)]
pub(crate) enum NotCaptured {
    /// Each thread that could not be captured, and why.
    Refused(Vec<String>),
    /// Only threads that exited since they were listed (a timer's or a pool's short-lived
    /// thread): nothing is wrong with the process; another attempt lists them no more.
    Gone,
}

/// Stops `tids` (threads of this process) through a helper. `names` are the threads' names for
/// messages.
pub(crate) fn capture(
    tids: &[i32],
    names: &dyn Fn(i32) -> String,
    bound: Duration,
) -> Result<Traced, NotCaptured> {
    let fail = |why: String| {
        NotCaptured::Refused(
            tids.iter()
                .map(|&t| {
                    format!(
                        "thread {t} ({}) blocks the checkpoint signal and could not be captured without it: {why}",
                        names(t)
                    )
                })
                .collect(),
        )
    };
    if tids.len() > MAX_THREADS {
        return Err(fail(format!(
            "{} such threads, more than the {MAX_THREADS} thaw captures",
            tids.len()
        )));
    }
    let size = std::mem::size_of::<Slot>();
    let slots = sys::DontForkBuf::new(tids.len() * size).map_err(|e| fail(e.to_string()))?;
    // The release channel is a socket: sending on it never raises SIGPIPE, even if the helper
    // is gone.
    let pipes = (|| {
        Ok::<_, std::io::Error>((
            sys::pipe_cloexec()?,
            sys::pipe_cloexec()?,
            sys::socketpair(libc::SOCK_STREAM)?,
        ))
    })()
    .map_err(|e| fail(e.to_string()))?;
    let ((go_r, go_w), (done_r, done_w), (release_r, release_w)) = pipes;
    let parent = sys::getpid();
    // A process that changed its credentials is not dumpable: nobody may trace it then.
    // The helper attaches while the process is dumpable (one that changed its credentials is
    // not, and nobody may trace it then).
    let ours = [go_r.as_raw_fd(), done_w.as_raw_fd(), release_r.as_raw_fd()];
    let theirs = [go_w.as_raw_fd(), done_r.as_raw_fd(), release_w.as_raw_fd()];
    let mut helper_ends = Some((go_r, done_w, release_r));
    let (helper, done) = sys::while_dumpable(|| {
        let helper = sys::raw_fork_quiet();
        if helper == 0 {
            helper_main(parent, slots.addr(), tids, ours, theirs);
        }
        // The helper's ends are its own: a helper that dies is an end of file here.
        drop(helper_ends.take());
        if helper < 0 {
            return (helper, None);
        }
        // Under Yama's restricted mode a process may be traced only by a helper it names.
        sys::syscall6(libc::SYS_prctl, [PR_SET_PTRACER, helper as u64, 0, 0, 0, 0]);
        sys::write_raw(go_w.as_raw_fd(), b"g");
        let done = sys::read_byte_within(done_r.as_raw_fd(), bound);
        sys::syscall6(libc::SYS_prctl, [PR_SET_PTRACER, 0, 0, 0, 0, 0]);
        (helper, done)
    });
    if helper < 0 {
        return Err(fail(format!(
            "cannot start the helper: {}",
            std::io::Error::from_raw_os_error(-helper as i32)
        )));
    }
    let helper = helper as i32;
    let traced = Traced {
        helper,
        released: false,
        slots,
        tids: tids.to_vec(),
        release_w,
    };
    if done.is_none() {
        // The helper is stuck (a thread in uninterruptible sleep): killing it detaches every
        // thread, each already set to go on with its own registers.
        sys::kill_and_reap(helper);
        std::mem::forget(traced);
        return Err(fail(format!("it did not stop within {bound:?}")));
    }
    // What failed, without allocating while threads are stopped (one of them may hold a lock
    // the allocator needs): the messages are made once every thread goes on.
    let mut failed = [(0i32, 0u32, 0u32); MAX_THREADS];
    let mut n = 0;
    let size = std::mem::size_of::<Slot>();
    for (i, &tid) in tids.iter().enumerate() {
        let b = &traced.slots.as_slice()[i * size..i * size + 8];
        let step = u32::from_ne_bytes(b[0..4].try_into().expect("4"));
        let errno = u32::from_ne_bytes(b[4..8].try_into().expect("4"));
        if step != 0 {
            // PTRACE_SEIZE answers EPERM for a thread that has begun to exit (exit_state set):
            // gone, like one no longer there at all.
            let gone = errno == libc::EPERM as u32 && sys::task_exiting(tid);
            failed[n] = (tid, step, if gone { libc::ESRCH as u32 } else { errno });
            n += 1;
        }
    }
    if n > 0 {
        traced.release();
        if failed[..n].iter().all(|f| f.2 == libc::ESRCH as u32) {
            return Err(NotCaptured::Gone);
        }
        return Err(NotCaptured::Refused(failed[..n]
            .iter()
            .map(|&(tid, step, errno)| {
                let step_name = STEPS.get(step as usize - 1).copied().unwrap_or("?");
                if errno == libc::ESRCH as u32 {
                    // Gone between listing the threads and seizing it (a timer's or a pool's
                    // short-lived thread): nothing is wrong with the process; another attempt
                    // finds it gone or still there.
                    return format!(
                        "thread {tid} exited while the checkpoint was capturing it ({step_name}): try again"
                    );
                }
                let errno = std::io::Error::from_raw_os_error(errno as i32);
                let hint = if step == 1 {
                    " (a helper process must be allowed to trace this one: kernel.yama.ptrace_scope at most 1, no seccomp filter or security module forbidding ptrace)"
                } else {
                    ""
                };
                format!(
                    "thread {tid} ({}) blocks the checkpoint signal and could not be captured without it: {step_name}: {errno}{hint}",
                    names(tid)
                )
            })
            .collect()));
    }
    Ok(traced)
}

impl Traced {
    /// The helper's PID: a child of this process while the checkpoint runs.
    pub(crate) fn helper_pid(&self) -> i32 {
        self.helper
    }

    /// The descriptor of the checkpoint's own that lets the helper go.
    pub(crate) fn own_fd(&self) -> i32 {
        self.release_w.as_raw_fd()
    }

    /// What the helper wrote about thread number `i`.
    pub(crate) fn slot(&self, i: usize) -> Captured {
        let size = std::mem::size_of::<Slot>();
        Captured::read(&self.slots.as_slice()[i * size..(i + 1) * size])
    }

    /// The slots' (start, end): a buffer of the checkpoint's own, not in the snapshot.
    pub(crate) fn buffer(&self) -> (u64, u64) {
        (
            self.slots.addr(),
            self.slots.addr() + self.slots.len() as u64,
        )
    }

    /// Lets every thread go on and waits for the helper to end (also when dropped).
    pub(crate) fn release(self) {
        drop(self);
    }

    /// What was captured, the threads still stopped (a checkpoint that exits after saving keeps
    /// them so: see `capture::Parked`; allocations then come from `crate::alloc`'s region).
    pub(crate) fn read(&self) -> Vec<(i32, Captured)> {
        (0..self.tids.len())
            .map(|i| (self.tids[i], self.slot(i)))
            .collect()
    }

    /// Lets every thread go on, then reads what was captured (nothing is allocated while the
    /// threads are stopped: one of them may hold a lock the allocator needs).
    pub(crate) fn finish(mut self) -> Vec<(i32, Captured)> {
        self.let_go();
        (0..self.tids.len())
            .map(|i| (self.tids[i], self.slot(i)))
            .collect()
    }

    fn let_go(&mut self) {
        if !self.released {
            self.released = true;
            let _ = sys::send_nowait(self.release_w.as_raw_fd(), b"r");
            while sys::wait4(self.helper, libc::__WALL).0 == -(libc::EINTR as i64) {}
        }
    }

    /// In a restored process: the helper, its pipe and the slots were never part of it.
    pub(crate) fn abandon(self) {
        std::mem::forget(self);
    }
}

/// The helper's whole life: system calls only (it is a fork of a multi-threaded process).
fn helper_main(parent: i32, slots: u64, tids: &[i32], ours: [i32; 3], theirs: [i32; 3]) -> ! {
    // The application's signal handlers are in this copy too: none may run here.
    let all = u64::MAX;
    sys::syscall6(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &all as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
    // The parent's ends: closed, so that its death is an end of file here.
    for fd in theirs {
        sys::syscall6(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
    }
    let [go, done, release] = ours;
    sys::syscall6(
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
    let mut b = [0u8; 1];
    if sys::read_raw(go, &mut b) != 1 {
        sys::exit_now(1);
    }
    let size = std::mem::size_of::<Slot>() as u64;
    // Threads attached, and whether system calls were injected (their registers must be set).
    let mut attached = [false; 64];
    // A signal that stopped a thread while system calls were injected, delivered on detach.
    let mut signal = [0u64; 64];
    for (i, &tid) in tids.iter().enumerate().take(64) {
        let slot = slots + i as u64 * size;
        let r = capture_one(parent, tid, slot, &mut attached[i], &mut signal[i]);
        if let Err((step, errno)) = r {
            let mut word = [0u8; 8];
            word[..4].copy_from_slice(&step.to_ne_bytes());
            word[4..].copy_from_slice(&errno.to_ne_bytes());
            sys::write_process_memory(parent, slot, &word);
        }
    }
    sys::write_raw(done, b"d");
    // Until released, or until the process is gone (end of file).
    sys::read_raw(release, &mut b);
    for (i, &tid) in tids.iter().enumerate().take(64) {
        if attached[i] {
            sys::ptrace(PTRACE_DETACH, tid, 0, signal[i]);
        }
    }
    sys::exit_now(0)
}

fn capture_one(
    parent: i32,
    tid: i32,
    slot: u64,
    attached: &mut bool,
    signal: &mut u64,
) -> Result<(), (u32, u32)> {
    let ok = |step: u32, r: i64| {
        if r < 0 {
            Err((step, (-r) as u32))
        } else {
            Ok(r)
        }
    };
    ok(1, sys::ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD))?;
    *attached = true;
    ok(2, sys::ptrace(PTRACE_INTERRUPT, tid, 0, 0))?;
    wait_stop(
        tid,
        PTRACE_CONT,
        |status| status >> 16 == PTRACE_EVENT_STOP,
        &mut 0,
    )
    .map_err(|e| (3, e))?;
    let mut regs = [0u64; NREGS];
    ok(
        4,
        sys::ptrace(PTRACE_GETREGS, tid, 0, regs.as_mut_ptr() as u64),
    )?;
    let mut xsave = [0u8; XSAVE_MAX];
    let mut iov = [xsave.as_mut_ptr() as u64, XSAVE_MAX as u64];
    ok(
        5,
        sys::ptrace(
            PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE,
            iov.as_mut_ptr() as u64,
        ),
    )?;
    let mut mask = 0u64;
    ok(
        6,
        sys::ptrace(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as u64),
    )?;
    let mut rseq = [0u64; 3];
    ok(
        7,
        sys::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            24,
            rseq.as_mut_ptr() as u64,
        ),
    )?;
    // Its signal queue, and the process's on the main thread: read, not taken.
    let peek = |flags: u32| {
        let mut sigs = [[0u64; 16]; SIG_ROOM + 1];
        let args = [0u64, u64::from(flags) | ((SIG_ROOM as u64 + 1) << 32)];
        let n = sys::ptrace(
            PTRACE_PEEKSIGINFO,
            tid,
            args.as_ptr() as u64,
            sigs.as_mut_ptr() as u64,
        );
        (n, sigs)
    };
    let (n, private) = peek(0);
    let n = ok(10, n)? as usize;
    let (m, shared) = if tid == parent {
        let (m, shared) = peek(PTRACE_PEEKSIGINFO_SHARED);
        (ok(10, m)? as usize, shared)
    } else {
        (0, [[0u64; 16]; SIG_ROOM + 1])
    };
    // (Stopped at a system call's return, not in a signal handler the kernel just set up: the
    // instruction before the one it resumes at is `syscall`.)
    let mut word = 0u64;
    let at_syscall = sys::ptrace(
        PTRACE_PEEKDATA,
        tid,
        regs[RIP].wrapping_sub(2),
        &mut word as *mut u64 as u64,
    ) >= 0
        && word & 0xffff == 0x050f;
    let mut resume = restarted(&regs, at_syscall);
    rseq_abort(tid, rseq[0], &mut resume);
    let alt = slot + std::mem::offset_of!(Slot, altstack) as u64;
    let tid_address = slot + std::mem::offset_of!(Slot, tid_address) as u64;
    let injected = inject(
        tid,
        &regs,
        libc::SYS_sigaltstack as u64,
        [0, alt, 0],
        signal,
    )
    .map_err(|e| (8, e))
    .and_then(|r| ok(8, r))
    .and_then(|_| {
        let args = [PR_GET_TID_ADDRESS, tid_address, 0];
        inject(tid, &regs, libc::SYS_prctl as u64, args, signal)
            .map_err(|e| (9, e))
            .and_then(|r| ok(9, r))
    });
    // Its settings, each asked by the thread itself; a call the kernel refuses leaves it
    // unknown (u64::MAX), a ptrace failure ends the capture.
    let controls_at = slot + std::mem::offset_of!(Slot, controls) as u64;
    let tsc_at = controls_at + 5 * 8;
    let mut controls = [u64::MAX; CONTROLS];
    sys::write_process_memory(parent, tsc_at, &0u64.to_ne_bytes());
    let injected = injected.and_then(|_| {
        let affinity_at = slot + std::mem::offset_of!(Slot, affinity) as u64;
        for (i, (nr, args)) in control_calls(tsc_at, affinity_at).into_iter().enumerate() {
            let r = inject(tid, &regs, nr as u64, args, signal).map_err(|e| (9, e))?;
            controls[i] = if r < 0 { u64::MAX } else { r as u64 };
        }
        Ok(())
    });
    // The thread goes on with its own registers whatever happens next (the helper killed
    // included): never from the gadget.
    let set = sys::ptrace(PTRACE_SETREGS, tid, 0, resume.as_ptr() as u64);
    injected?;
    ok(8, set)?;
    // Into our memory, word by word (no allocation in the helper).
    let put = |off: usize, w: &[u64]| {
        for (i, v) in w.iter().enumerate() {
            sys::write_process_memory(parent, slot + (off + i * 8) as u64, &v.to_ne_bytes());
        }
    };
    put(std::mem::offset_of!(Slot, regs), &regs);
    put(std::mem::offset_of!(Slot, resume), &resume[..]);
    put(std::mem::offset_of!(Slot, sigmask), &[mask]);
    put(std::mem::offset_of!(Slot, rseq), &rseq);
    // (PR_GET_TSC wrote its int into its slot itself: the slot keeps it, or MAX on failure.)
    for (i, v) in controls.iter().enumerate().filter(|&(i, _)| i != 5) {
        put(std::mem::offset_of!(Slot, controls) + i * 8, &[*v]);
    }
    if controls[5] == u64::MAX {
        put(std::mem::offset_of!(Slot, controls) + 5 * 8, &[u64::MAX]);
    }
    for (count, list, at, room) in [
        (
            n,
            &private,
            std::mem::offset_of!(Slot, nsigs),
            std::mem::offset_of!(Slot, sigs),
        ),
        (
            m,
            &shared,
            std::mem::offset_of!(Slot, nshared),
            std::mem::offset_of!(Slot, shared),
        ),
    ] {
        if count > SIG_ROOM {
            put(at, &[u64::MAX]);
        } else {
            put(at, &[count as u64]);
            for (i, info) in list[..count].iter().enumerate() {
                let mut bytes = [0u8; 128];
                for (b, w) in bytes.chunks_exact_mut(8).zip(info) {
                    b.copy_from_slice(&w.to_ne_bytes());
                }
                sys::write_process_memory(parent, slot + (room + i * 128) as u64, &bytes);
            }
        }
    }
    let len = (iov[1] as usize).min(XSAVE_MAX);
    put(std::mem::offset_of!(Slot, xsave_len), &[len as u64]);
    sys::write_process_memory(
        parent,
        slot + std::mem::offset_of!(Slot, xsave) as u64,
        &xsave[..len],
    );
    Ok(())
}

/// Waits until `tid` is in a ptrace stop that `want(status)` accepts. Other stops go on with
/// `request` (PTRACE_CONT, or PTRACE_SYSCALL while a system call is injected): a signal about to
/// be delivered is delivered at once with PTRACE_CONT, and otherwise kept in `signal` for the
/// detach (no handler may run at the gadget).
fn wait_stop(
    tid: i32,
    request: u32,
    want: impl Fn(i32) -> bool,
    signal: &mut u64,
) -> Result<(), u32> {
    for _ in 0..64 {
        let (r, status) = sys::wait4(tid, libc::__WALL);
        if r == -(libc::EINTR as i64) {
            continue;
        }
        if r < 0 {
            return Err((-r) as u32);
        }
        if status & 0xff != 0x7f {
            return Err(libc::ESRCH as u32); // it exited
        }
        if want(status) {
            return Ok(());
        }
        let sig = if status >> 16 == 0 {
            ((status >> 8) & 0xff) as u64
        } else {
            0
        };
        let pass = if request == PTRACE_CONT {
            sig
        } else {
            if sig != 0 {
                *signal = sig;
            }
            0
        };
        sys::ptrace(request, tid, 0, pass);
    }
    Err(libc::EAGAIN as u32)
}

/// Runs one system call in the stopped thread at our `syscall` instruction: its result.
fn inject(
    tid: i32,
    regs: &[u64; NREGS],
    nr: u64,
    args: [u64; 3],
    signal: &mut u64,
) -> Result<i64, u32> {
    let mut r = *regs;
    r[RIP] = sys::syscall_gadget();
    r[RAX] = nr;
    r[RDI] = args[0];
    r[RSI] = args[1];
    r[RDX] = args[2];
    // prctl refuses most queries with arguments it does not take.
    r[R10] = 0;
    r[R8] = 0;
    r[R9] = 0;
    // Not in a system call any more: no restart of the interrupted one on the way out.
    r[ORIG_RAX] = u64::MAX;
    let check = |x: i64| if x < 0 { Err((-x) as u32) } else { Ok(()) };
    check(sys::ptrace(PTRACE_SETREGS, tid, 0, r.as_ptr() as u64))?;
    let syscall_stop = |status: i32| (status >> 8) & 0xff == libc::SIGTRAP | 0x80;
    for _ in 0..2 {
        // Entry, then exit.
        check(sys::ptrace(PTRACE_SYSCALL, tid, 0, 0))?;
        wait_stop(tid, PTRACE_SYSCALL, syscall_stop, signal)?;
    }
    let mut out = [0u64; NREGS];
    check(sys::ptrace(PTRACE_GETREGS, tid, 0, out.as_mut_ptr() as u64))?;
    Ok(out[RAX] as i64)
}

const PTRACE_PEEKDATA: u32 = 2;
const PTRACE_POKEDATA: u32 = 5;

/// A thread stopped inside its rseq critical section goes on at the section's abort handler, as
/// the kernel makes it do whenever it is preempted or signalled there (the injected system calls
/// would otherwise let it resume mid-section, after the kernel forgot the section).
fn rseq_abort(tid: i32, rseq: u64, regs: &mut [u64; NREGS]) {
    let peek = |addr: u64| {
        let mut word = 0u64;
        (sys::ptrace(PTRACE_PEEKDATA, tid, addr, &mut word as *mut u64 as u64) >= 0).then_some(word)
    };
    // struct rseq: cpu_id_start, cpu_id (u32 each), rseq_cs (u64) at offset 8.
    let Some(cs) = (rseq != 0)
        .then(|| peek(rseq + 8))
        .flatten()
        .filter(|&cs| cs != 0)
    else {
        return;
    };
    // struct rseq_cs: version, flags (u32 each), start_ip, post_commit_offset, abort_ip.
    let (Some(start), Some(len), Some(abort)) = (peek(cs + 8), peek(cs + 16), peek(cs + 24)) else {
        return;
    };
    let ip = regs[RIP];
    if ip >= start && ip - start < len {
        regs[RIP] = abort;
        sys::ptrace(PTRACE_POKEDATA, tid, rseq + 8, 0);
    }
}

/// Where a system call's arguments are among the registers: rdi, rsi, rdx, r10, r8, r9.
const SYSCALL_ARGS: [usize; 6] = [RDI, RSI, RDX, R10, R8, R9];

/// The system call the registers show the thread in.
fn as_blocked(r: &[u64; NREGS]) -> crate::state::interrupted::Blocked {
    crate::state::interrupted::Blocked {
        nr: r[ORIG_RAX],
        args: SYSCALL_ARGS.map(|i| r[i]),
        sp: r[RSP],
        pc: r[RIP],
    }
}

/// The registers to go on with: a system call that was interrupted (ERESTARTSYS and friends)
/// is issued again, as for a signal handled with SA_RESTART; one that returned EINTR is too
/// where the checkpoint handler would issue it again (see `state::interrupted`: a wait without
/// a timeout, a sleep for what was left).
/// `at_syscall`: the thread stopped at a system call's return (after a signal frame was set up
/// instead, `rax` is EINTR too, but the registers are the handler's).
fn restarted(regs: &[u64; NREGS], at_syscall: bool) -> [u64; NREGS] {
    let mut r = *regs;
    let in_syscall = (r[ORIG_RAX] as i64) >= 0;
    let eintr = r[RAX] as i64 == -(libc::EINTR as i64);
    let blocked = as_blocked(regs);
    let again = (in_syscall
        && at_syscall
        && eintr
        && crate::state::interrupted::returns_eintr_itself(r[ORIG_RAX]))
    .then(|| crate::state::interrupted::again(&blocked))
    .flatten();
    // A relative sleep stopped by ptrace returns ERESTART_RESTARTBLOCK having written its time
    // left to `rem` (when it has one): issued again for that, as the handler would, not for its
    // whole time again.
    let again = again.or_else(|| {
        (in_syscall && at_syscall && r[RAX] as i64 == -516)
            .then(|| crate::state::interrupted::again(&blocked))
            .flatten()
            .filter(|a| a.set_arg.is_some())
    });
    if in_syscall && matches!(r[RAX] as i64, -512 | -513 | -514 | -516) || again.is_some() {
        r[RAX] = r[ORIG_RAX];
        r[RIP] -= 2;
        if let Some((i, v)) = again.and_then(|a| a.set_arg) {
            r[SYSCALL_ARGS[i]] = v;
        }
    }
    r[ORIG_RAX] = u64::MAX;
    r
}

/// Offsets in the kernel's x86_64 signal frame structures.
const UC_SIZE: u64 = 304;
const UC_FLAGS: usize = 0;
const UC_STACK: usize = 16;
pub(crate) const UC_MCONTEXT: usize = 40;
const UC_SIGMASK: usize = 296;
pub(crate) const SC_FPSTATE: usize = 184;
/// Where struct _fpx_sw_bytes is in the extended state, and its first magic.
pub(crate) const FP_SW_BYTES: usize = 464;
pub(crate) const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;

/// One thread as the helper captured it.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub regs: [u64; NREGS],
    pub resume: [u64; NREGS],
    pub sigmask: u64,
    pub rseq: [u64; 3],
    pub altstack: [u64; 3],
    pub tid_address: u64,
    pub controls: [u64; CONTROLS],
    pub affinity: [u64; 16],
    pub xsave: Vec<u8>,
    /// Its own queue's signals (siginfos), or `None` when there were more than were read; the
    /// process's, on the main thread.
    pub pending: Option<Vec<[u64; 16]>>,
    pub shared: Option<Vec<[u64; 16]>>,
}

impl Captured {
    fn read(b: &[u8]) -> Captured {
        let word = |off: usize| u64::from_ne_bytes(b[off..off + 8].try_into().expect("8"));
        let words = |off: usize, out: &mut [u64]| {
            for (i, w) in out.iter_mut().enumerate() {
                *w = word(off + i * 8);
            }
        };
        let mut c = Captured {
            regs: [0; NREGS],
            resume: [0; NREGS],
            sigmask: word(std::mem::offset_of!(Slot, sigmask)),
            rseq: [0; 3],
            altstack: [0; 3],
            tid_address: word(std::mem::offset_of!(Slot, tid_address)),
            controls: [0; CONTROLS],
            affinity: [0; 16],
            xsave: Vec::new(),
            pending: None,
            shared: None,
        };
        let list = |count: usize, at: usize| {
            let n = word(count) as usize;
            (n <= SIG_ROOM).then(|| {
                (0..n)
                    .map(|i| {
                        let mut info = [0u64; 16];
                        words(at + i * 128, &mut info);
                        info
                    })
                    .collect()
            })
        };
        c.pending = list(
            std::mem::offset_of!(Slot, nsigs),
            std::mem::offset_of!(Slot, sigs),
        );
        c.shared = list(
            std::mem::offset_of!(Slot, nshared),
            std::mem::offset_of!(Slot, shared),
        );
        words(std::mem::offset_of!(Slot, regs), &mut c.regs);
        words(std::mem::offset_of!(Slot, resume), &mut c.resume);
        words(std::mem::offset_of!(Slot, rseq), &mut c.rseq);
        words(std::mem::offset_of!(Slot, altstack), &mut c.altstack);
        words(std::mem::offset_of!(Slot, controls), &mut c.controls);
        words(std::mem::offset_of!(Slot, affinity), &mut c.affinity);
        let len = (word(std::mem::offset_of!(Slot, xsave_len)) as usize).min(XSAVE_MAX);
        let x = std::mem::offset_of!(Slot, xsave);
        c.xsave = b[x..x + len].to_vec();
        c
    }

    /// A signal frame for this thread, as the kernel builds one, to be written at `at` (its
    /// ucontext; the extended state follows, 64-byte aligned). `template` is a kernel-built
    /// frame of this process (its ucontext, and its extended state's software bytes and size).
    pub(crate) fn frame(&self, at: u64, template: &Template) -> Vec<u8> {
        let (sw_bytes, xstate_size) = self.xstate_layout(template);
        let fp = (at + UC_SIZE).next_multiple_of(64);
        let mut f = vec![0u8; (fp - at) as usize + xstate_size as usize + 4];
        let put = |f: &mut Vec<u8>, off: usize, v: u64| {
            f[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        };
        let r = &self.resume;
        put(&mut f, UC_FLAGS, template.uc_flags);
        put(&mut f, UC_STACK, self.altstack[0]);
        put(&mut f, UC_STACK + 8, self.altstack[1]);
        put(&mut f, UC_STACK + 16, self.altstack[2]);
        // struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
        let order = [
            9, 8, 7, 6, 3, 2, 1, 0, RDI, RSI, 4, 5, RDX, RAX, RCX, RSP, RIP, EFLAGS,
        ];
        for (i, &reg) in order.iter().enumerate() {
            put(&mut f, UC_MCONTEXT + i * 8, r[reg]);
        }
        // cs, gs, fs, ss (16 bits each): the user code and stack segments.
        let segs: u64 = 0x33 | (0x2b << 48);
        put(&mut f, UC_MCONTEXT + 144, segs);
        put(&mut f, UC_MCONTEXT + 168, self.sigmask); // oldmask
        put(&mut f, UC_MCONTEXT + SC_FPSTATE, fp);
        put(&mut f, UC_SIGMASK, self.sigmask);
        let x = (fp - at) as usize;
        let n = self.xsave.len().min(xstate_size as usize);
        f[x..x + n].copy_from_slice(&self.xsave[..n]);
        f[x + FP_SW_BYTES..x + FP_SW_BYTES + 48].copy_from_slice(&sw_bytes);
        let m2 = x + xstate_size as usize;
        f[m2..m2 + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_ne_bytes());
        f
    }

    /// Where its frame goes: below the thread's stack pointer and red zone.
    pub(crate) fn frame_addr(&self, template: &Template) -> u64 {
        let need = UC_SIZE + 64 + u64::from(self.xstate_layout(template).1) + 4;
        (self.resume[RSP] - 128 - need) & !63
    }

    /// The software bytes and size of its frame's extended state: the template's, unless the
    /// thread holds state the template's thread never had room for (AMX tiles, used by this
    /// thread alone): then its own, as the kernel would have written them for it.
    fn xstate_layout(&self, template: &Template) -> ([u8; 48], u32) {
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8"));
        // XSTATE_BV, in the XSAVE header after the 512-byte legacy area.
        let held = self.xsave.get(512..520).map_or(0, word);
        let room = word(&template.sw_bytes[8..16]);
        let size = self.xsave.len() as u32;
        if held & !room == 0 || size <= template.xstate_size {
            return (template.sw_bytes, template.xstate_size);
        }
        // struct _fpx_sw_bytes: magic1, extended_size, xfeatures, xstate_size.
        let mut sw = template.sw_bytes;
        sw[4..8].copy_from_slice(&(size + 4).to_ne_bytes());
        sw[8..16].copy_from_slice(&(room | held).to_ne_bytes());
        sw[16..20].copy_from_slice(&size.to_ne_bytes());
        (sw, size)
    }
}

/// What a kernel-built frame of this process says about frames: read from the checkpointing
/// thread's.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    uc_flags: u64,
    sw_bytes: [u8; 48],
    xstate_size: u32,
}

impl Template {
    /// From the frame whose ucontext is at `uc` in the snapshot `mem`.
    pub(crate) fn read(mem: &std::fs::File, uc: u64) -> std::io::Result<Template> {
        use std::os::unix::fs::FileExt;
        let mut head = [0u8; UC_SIZE as usize];
        mem.read_exact_at(&mut head, uc)?;
        let word =
            |b: &[u8], off: usize| u64::from_ne_bytes(b[off..off + 8].try_into().expect("8"));
        let fp = word(&head, UC_MCONTEXT + SC_FPSTATE);
        let mut sw_bytes = [0u8; 48];
        mem.read_exact_at(&mut sw_bytes, fp + FP_SW_BYTES as u64)?;
        // struct _fpx_sw_bytes: magic1, extended_size, xfeatures (u64), xstate_size.
        let xstate_size = u32::from_ne_bytes(sw_bytes[16..20].try_into().expect("4"));
        if u32::from_ne_bytes(sw_bytes[0..4].try_into().expect("4")) != FP_XSTATE_MAGIC1
            || xstate_size as usize > XSAVE_MAX
        {
            return Err(std::io::Error::other(
                "the kernel's signal frames carry no extended state this thaw understands",
            ));
        }
        Ok(Template {
            uc_flags: word(&head, UC_FLAGS),
            sw_bytes,
            xstate_size,
        })
    }
}

impl Captured {
    /// Records the thread in `t` as its signal handler would have (but for its frame, which
    /// [`write_frames`] makes once the snapshot exists).
    pub(crate) fn fill(&self, t: &crate::capture::ThreadCapture, tid: i32) {
        use std::sync::atomic::Ordering::Relaxed;
        // A relative sleep issued again for its time left (`restarted` put `rem` in place of
        // the request), noted as its handler would (see `threads::sleep_left`).
        t.sleep_rem[0].store(0, Relaxed);
        let b = as_blocked(&self.regs);
        if self.resume[RAX] == b.nr && self.resume[RIP] == b.pc.wrapping_sub(2) {
            if let Some(again) = crate::state::interrupted::again(&b) {
                // (The kernel wrote `rem` whenever such a call is issued again for it.)
                if again
                    .set_arg
                    .is_some_and(|(i, v)| self.resume[SYSCALL_ARGS[i]] == v)
                {
                    crate::capture::note_sleep_rem(t, &b, again);
                }
            }
        }
        let fs = self.regs[FS_BASE];
        t.fs_base.store(fs, Relaxed);
        t.gs_base.store(self.regs[GS_BASE], Relaxed);
        let (head, len) = sys::robust_list_of(tid);
        t.robust_head.store(head, Relaxed);
        t.robust_len.store(len, Relaxed);
        t.clear_child_tid.store(self.tid_address, Relaxed);
        let status =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
        // What the helper could not read (more than there is room for): refused.
        let private = match self.pending {
            Some(_) => 0,
            None => crate::procfs::field_hex(&status, "SigPnd"),
        };
        let shared = match self.shared {
            None if tid == sys::getpid() => crate::procfs::field_hex(&status, "ShdPnd"),
            _ => 0,
        };
        t.pending.store(private | shared, Relaxed);
        let (addr, len, sig) = (
            self.rseq[0],
            self.rseq[1] as u32,
            (self.rseq[1] >> 32) as u32,
        );
        let glibc = sys::glibc_rseq(fs).map(|(a, size)| (a, size.max(32)));
        let owner = if addr == 0 {
            sys::RseqOwner::None
        } else if glibc == Some((addr, len)) && sig == crate::state::threads::RSEQ_SIG {
            sys::RseqOwner::Glibc
        } else {
            sys::RseqOwner::Other
        };
        t.rseq.store(owner as u32, Relaxed);
        // Its settings as its own calls reported them (as its handler would have).
        let c = &self.controls;
        let known = |v: u64| (v != u64::MAX).then_some(v);
        let nnp = crate::procfs::field(&status, "NoNewPrivs") == Some("1");
        // (u64::MAX, a failed call, is -1: unknown; the NUMA policy is not asked.)
        t.controls.store(
            crate::state::threads::controls_word(c[0] as i64, c[1] as i64, 0, nnp),
            Relaxed,
        );
        t.timer_slack.store(known(c[2]).unwrap_or(0), Relaxed);
        t.speculation.store(
            (6..9)
                .map(|i| (known(c[i]).unwrap_or(0) & 0xff) << (8 * (i - 6)))
                .fold(0, |a, b| a | b),
            Relaxed,
        );
        // Scheduling, as the thread reported it while stopped (else read later, by tid).
        if let (Some(prio), Some(policy)) = (known(c[NICE]), known(c[POLICY])) {
            let word = crate::state::threads::sched_word(20 - prio as i32, policy);
            t.sched.store(word, Relaxed);
        }
        t.ioprio.store(
            known(c[IOPRIO]).map_or_else(|| sys::ioprio_get(tid), |v| v as u32),
            Relaxed,
        );
        // (A failed call, ENOKEY most often: none, or unknown.)
        t.keyring
            .store(if known(c[KEYRING]).is_some() { 2 } else { 0 }, Relaxed);
        if let Some(bytes) = known(c[AFFINITY]) {
            let n = (bytes as usize).div_ceil(8).min(self.affinity.len());
            t.set_affinity(&self.affinity[..n]);
        }
        if let (Some(p), Some(b), Some(tsc)) = (known(c[3]), known(c[4]), known(c[5])) {
            t.identity.store(
                crate::state::threads::identity_word(p, b, tsc as u32 as i32),
                Relaxed,
            );
        }
        t.done.store(1, std::sync::atomic::Ordering::Release);
    }
}

/// Writes a signal frame for each captured thread on its stack in the snapshot (the frozen
/// `child`), shaped like the checkpointing thread's kernel-built one, and records where.
pub(crate) fn write_frames(
    child: i32,
    c: &crate::capture::Capture,
    captured: &[(i32, Captured)],
    mem: &std::fs::File,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::Ordering::Relaxed;
    let caller = c
        .threads
        .iter()
        .find(|t| t.tid.load(Relaxed) == c.caller)
        .ok_or_else(|| std::io::Error::other("no frame of the checkpointing thread"))?;
    let template = Template::read(mem, caller.frame.load(Relaxed))?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{child}/mem"))?;
    for (tid, cap) in captured {
        let at = cap.frame_addr(&template);
        out.write_all_at(&cap.frame(at, &template), at)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("thread {tid}: its stack below {:#x}: {e}", cap.resume[RSP]),
                )
            })?;
        if let Some(t) = c.threads.iter().find(|t| t.tid.load(Relaxed) == *tid) {
            t.frame.store(at, Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_system_call_is_issued_again() {
        let mut regs = [0u64; NREGS];
        regs[ORIG_RAX] = 202;
        regs[RAX] = (-512i64) as u64;
        regs[RIP] = 0x1000;
        let r = restarted(&regs, true);
        assert_eq!((r[RAX], r[RIP], r[ORIG_RAX]), (202, 0xffe, u64::MAX));
        // A finished one, or none, is left alone.
        regs[RAX] = 0;
        assert_eq!(restarted(&regs, true)[RIP], 0x1000);
        regs[ORIG_RAX] = u64::MAX;
        regs[RAX] = (-512i64) as u64;
        assert_eq!(restarted(&regs, true)[RAX], (-512i64) as u64);
    }

    #[test]
    fn a_relative_sleep_stopped_by_ptrace_goes_on_for_its_time_left() {
        // nanosleep(req 0x100, rem 0x200): ERESTART_RESTARTBLOCK, the time left written to rem.
        let mut regs = [0u64; NREGS];
        (regs[RDI], regs[RSI]) = (0x100, 0x200);
        regs[ORIG_RAX] = 35;
        regs[RAX] = (-516i64) as u64;
        regs[RIP] = 0x1000;
        let r = restarted(&regs, true);
        assert_eq!((r[RAX], r[RIP], r[RDI]), (35, 0xffe, 0x200));
        // Without rem: again, for its whole time (never shorter).
        regs[RSI] = 0;
        let r = restarted(&regs, true);
        assert_eq!((r[RAX], r[RIP], r[RDI]), (35, 0xffe, 0x100));
        // A relative clock_nanosleep(CLOCK_BOOTTIME, 0, req, rem): rem becomes the request.
        (regs[RDI], regs[RSI], regs[RDX], regs[R10]) = (7, 0, 0x100, 0x200);
        regs[ORIG_RAX] = 230;
        let r = restarted(&regs, true);
        assert_eq!((r[RAX], r[RDX]), (230, 0x200));
    }

    #[test]
    fn a_wait_that_returned_eintr_goes_on_where_the_handler_would_issue_it_again() {
        // sigwaitinfo (rt_sigtimedwait without a timeout) in a thread blocking every signal.
        let mut regs = [0u64; NREGS];
        (regs[RDI], regs[RSI]) = (0x100, 0x200);
        regs[ORIG_RAX] = 128;
        regs[RAX] = (-(libc::EINTR as i64)) as u64;
        regs[RIP] = 0x1000;
        let r = restarted(&regs, true);
        assert_eq!((r[RAX], r[RIP]), (128, 0xffe));
        // Not where a signal frame was set up (the registers are the handler's then).
        assert_eq!(restarted(&regs, false)[RAX], (-(libc::EINTR as i64)) as u64);
        // semop without a timeout.
        regs[ORIG_RAX] = 65;
        assert_eq!(restarted(&regs, true)[RAX], 65);
        // Calls that return a restart code when stopped, never EINTR itself: EINTR means a
        // handler's frame.
        regs[ORIG_RAX] = 34; // pause
        assert_eq!(restarted(&regs, true)[RAX], (-(libc::EINTR as i64)) as u64);
        // With a timeout it does not write back: EINTR stays.
        regs[ORIG_RAX] = 128;
        regs[RDX] = 0x300;
        assert_eq!(restarted(&regs, true)[RAX], (-(libc::EINTR as i64)) as u64);
    }
}
