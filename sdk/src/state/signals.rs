//! Signal dispositions, recorded with the raw kernel `rt_sigaction` layout, and the signals
//! waiting in the process's queues.
//!
//! A signal pending at the checkpoint (blocked, or arrived while the threads were stopped) is
//! taken off its queue by the handler with its siginfo and put back at once (see
//! `capture::record_pending`); at restore it is queued again with the same siginfo, on the same
//! thread's queue or the process's, once the dispositions are set (setting one to SIG_IGN
//! would discard it). A POSIX timer's signal is refused instead: the queued signal is the
//! timer's own, counting its overruns, and a copy would be a second one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    /// Every signal whose disposition is not SIG_DFL with no flags.
    pub actions: Vec<SigAction>,
    /// Signals waiting in the process's queue (for any of its threads), in order.
    pub pending: Vec<PendingSignal>,
}

/// A signal waiting in a queue, with the siginfo it is delivered with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub signo: u32,
    pub info: [u64; 16],
}

impl PendingSignal {
    /// Signal `signo` as the kernel sends it itself (`SI_KERNEL`: a timer's SIGALRM, a
    /// terminal's SIGWINCH).
    pub fn from_kernel(signo: i32) -> PendingSignal {
        const SI_KERNEL: u64 = 0x80;
        let mut info = [0u64; 16];
        info[0] = signo as u64;
        info[1] = SI_KERNEL;
        PendingSignal {
            signo: signo as u32,
            info,
        }
    }

    /// Queues it again for thread `tid` of process `pid`, or for the process (`None`): run by
    /// that thread itself, or for the process by its main thread (the only callers the kernel
    /// lets queue a siginfo of its own or of kill()).
    pub fn plan_queue(&self, plan: &mut Plan, pid: i32, tid: Option<i32>) {
        let info = plan.words(&self.info);
        match tid {
            Some(tid) => plan.syscall(
                format!("queue signal {} for thread {tid}", self.signo),
                libc::SYS_rt_tgsigqueueinfo,
                [pid as u64, tid as u64, u64::from(self.signo), info, 0, 0],
            ),
            None => plan.syscall(
                format!("queue signal {} for the process", self.signo),
                libc::SYS_rt_sigqueueinfo,
                [pid as u64, u64::from(self.signo), info, 0, 0, 0],
            ),
        }
    }
}

/// The thread a signal for the process goes to as the restored threads resume, as the kernel
/// chooses (the main thread first): the main thread if its mask lets it in, else the first that
/// does; `None` where every thread blocks it (it waits for the process, for whichever unblocks
/// it or waits for it first). Queued for the process instead, it would go to whichever thread
/// unblocks first as they resume: the main thread resumes last.
pub fn target(threads: &[super::threads::ThreadState], pid: i32, signo: u32) -> Option<i32> {
    let lets_in = |t: &&super::threads::ThreadState| t.sigmask & (1u64 << (signo - 1)) == 0;
    let leader = threads.iter().filter(|t| t.tid == pid).find(lets_in);
    leader
        .or_else(|| threads.iter().find(lets_in))
        .map(|t| t.tid)
}

/// Whether a pending signal came from outside while the checkpoint held the threads, and so
/// belongs to the first life alone: sent by another process (`kill`, `sigqueue`, `tgkill`) or
/// by a terminal (Ctrl-C, a hang-up, a resize), and not blocked by the program's own mask of
/// the thread it waits for (`to`), or of every thread for the process's queue. One the program
/// did not block would have been handled at once had the checkpoint not blocked it: it came
/// after the threads stopped. In the image it would come to every restore (a supervisor's
/// SIGTERM ending each instance at once, or one Ctrl-C interrupting each); it stays queued in
/// the first life, which handles it. A signal the kernel raises for the process's own state (a
/// timer's, a child's SIGCHLD) is kept: the state saved with it says it came.
pub fn from_outside(
    sig: &PendingSignal,
    to: Option<i32>,
    threads: &[super::threads::ThreadState],
    pid: i32,
) -> bool {
    let code = sig.info[1] as u32 as i32;
    // struct siginfo: signo, errno, code (ints), a pad, then si_pid for these codes.
    let sender = sig.info[2] as u32 as i32;
    let outside = sent_from_outside(sig.signo as i32, code, sender, pid);
    let bit = 1u64 << (sig.signo - 1);
    let let_in = |t: &super::threads::ThreadState| t.sigmask & bit == 0;
    outside
        && match to {
            Some(tid) => threads.iter().filter(|t| t.tid == tid).any(let_in),
            None => threads.iter().any(let_in),
        }
}

/// Every pending signal the checkpoint recorded, by queue (a thread, or `None` for the
/// process's), in order: those the handlers took off the queues, and those the ptrace helper
/// read for the threads it stopped. Of the latter, as the handlers do, the checkpoint's own
/// `signal` (one left from an earlier attempt) is not the program's, and a POSIX timer's is
/// marked in its thread's `pending`, to be refused (a copy would be a second one).
pub(crate) fn recorded(
    c: &Capture,
    traced: &[(i32, crate::traced::Captured)],
    signal: i32,
) -> Vec<(Option<i32>, PendingSignal)> {
    const SI_TIMER: i32 = -2;
    let mut out = Vec::new();
    for (tid, cap) in traced {
        for (to, list) in [(Some(*tid), &cap.pending), (None, &cap.shared)] {
            for info in list.iter().flatten() {
                let signo = info[0] as u32;
                let code = info[1] as u32 as i32;
                if signo == signal as u32 {
                    continue;
                }
                if code == SI_TIMER || c.timer_signals & (1u64 << (signo - 1)) != 0 {
                    if let Some(t) = c
                        .threads
                        .iter()
                        .find(|t| t.tid.load(Ordering::Relaxed) == *tid)
                    {
                        t.pending.fetch_or(1u64 << (signo - 1), Ordering::Relaxed);
                    }
                    continue;
                }
                out.push((to, PendingSignal { signo, info: *info }));
            }
        }
    }
    let n = (c.queued_len.load(Ordering::Relaxed) as usize).min(crate::capture::QUEUED_MAX);
    out.extend(c.queued[..n].iter().filter_map(|e| {
        let head = e[0].load(Ordering::Relaxed);
        let signo = head as u32;
        let mut info = [0u64; 16];
        for (v, w) in info.iter_mut().zip(&e[1..]) {
            *v = w.load(Ordering::Relaxed);
        }
        let tid = (head >> 32) as i32;
        (signo != 0).then_some(((tid != 0).then_some(tid), PendingSignal { signo, info }))
    }));
    out
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

use std::sync::atomic::Ordering;

use crate::capture::Capture;
use crate::restore::Plan;

/// Whether a signal with this siginfo `code` and sender (`si_pid`) was sent to process `pid` by
/// another process, or raised by a terminal (Ctrl-C, a hang-up, a resize). Async-signal-safe.
pub fn sent_from_outside(signo: i32, code: i32, sender: i32, pid: i32) -> bool {
    const SI_USER: i32 = 0;
    const SI_KERNEL: i32 = 0x80;
    const SI_QUEUE: i32 = -1;
    const SI_TKILL: i32 = -6;
    let terminal = [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGHUP,
        libc::SIGWINCH,
    ]
    .contains(&signo);
    match code {
        SI_USER | SI_QUEUE | SI_TKILL => sender != pid,
        SI_KERNEL => terminal,
        _ => false,
    }
}

impl SignalState {
    /// Whether the process's children are reaped by the kernel as they end (SIGCHLD ignored, or
    /// SA_NOCLDWAIT): no zombie is left for it to wait for.
    pub fn children_reaped(&self) -> bool {
        self.actions.iter().any(|a| {
            a.signo == libc::SIGCHLD as u32
                && (a.handler == libc::SIG_IGN as u64 || a.flags & libc::SA_NOCLDWAIT as u64 != 0)
        })
    }

    /// Whether SIGCHLD is ignored (a signal raised for it is discarded).
    pub fn sigchld_ignored(&self) -> bool {
        self.actions
            .iter()
            .any(|a| a.signo == libc::SIGCHLD as u32 && a.handler == libc::SIG_IGN as u64)
    }

    /// The dispositions the handler recorded (the checkpoint signal's own is the application's,
    /// passed as `original`), the program's own where the checkpoint holds signals for the first
    /// life (`crate::hold`).
    pub(crate) fn dump(c: &Capture, signal: i32, original: SigAction) -> SignalState {
        let mut actions = Vec::new();
        for signo in 1..=64usize {
            let a = if signo as i32 == signal {
                crate::sys::KernelSigaction {
                    handler: original.handler,
                    flags: original.flags,
                    restorer: original.restorer,
                    mask: original.mask,
                }
            } else {
                c.action(signo)
            };
            let a = crate::hold::theirs(signo as u32, a);
            let a = SigAction {
                signo: signo as u32,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            };
            if a.handler != 0 || a.flags != 0 || a.mask != 0 {
                actions.push(a);
            }
        }
        SignalState {
            actions,
            pending: Vec::new(),
        }
    }

    /// Sets every catchable signal to its recorded disposition, or the default: the new process
    /// must not keep a disposition inherited from the launcher.
    pub fn plan_restore(&self, plan: &mut Plan) {
        for signo in 1..=64u32 {
            if signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
                continue;
            }
            let a = self
                .actions
                .iter()
                .find(|a| a.signo == signo)
                .copied()
                .unwrap_or(SigAction {
                    signo,
                    ..Default::default()
                });
            let act = plan.words(&[a.handler, a.flags, a.restorer, a.mask]);
            plan.syscall(
                format!("sigaction for signal {signo}"),
                libc::SYS_rt_sigaction,
                [u64::from(signo), act, 0, 8, 0, 0],
            );
        }
    }
}
