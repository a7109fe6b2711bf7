//! Per-thread state. The registers and FPU/AVX state are in the kernel-built signal frame on the
//! thread's stack (saved with the memory); this records where the frame is and what the frame
//! does not hold.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    pub name: String,
    /// Stack pointer at which `rt_sigreturn` finds the thread's signal frame.
    pub sigframe: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    /// Blocked signals (also in the frame; kept here for inspection and checks).
    pub sigmask: u64,
    pub sigaltstack: SigAltStack,
    pub robust_list: RobustList,
    pub clear_child_tid: u64,
    pub rseq: Option<Rseq>,
    /// Scheduling: nice value and policy (SCHED_OTHER, SCHED_BATCH or SCHED_IDLE, with
    /// SCHED_RESET_ON_FORK; real-time policies are refused at checkpoint).
    pub nice: i32,
    pub policy: u32,
    /// The CPUs the thread is bound to (sched_setaffinity), a mask in 64-bit words; empty when
    /// it was not bound (it could run on every CPU its first life could have).
    pub affinity: Vec<u64>,
    /// Its I/O priority (ioprio_get); 0 when never set.
    pub ioprio: u32,
    /// Speculation mitigations it turned on (PR_SET_SPECULATION_CTRL): (which, value).
    pub speculation: Vec<(u32, u32)>,
    /// Its machine-check kill policy (PR_MCE_KILL: 0 late, 1 early) when it chose one.
    pub mce_kill: Option<u32>,
    /// `cpuid` faults for it (ARCH_SET_CPUID 0).
    pub cpuid_faulting: bool,
    /// Its NUMA policy (set_mempolicy): mode with flags, nodes 0-63; `None`: the default.
    pub numa: Option<(u32, u64)>,
    /// Its timer slack (PR_SET_TIMERSLACK, per thread), in ns; 0: unknown.
    pub timer_slack: u64,
    /// It set no_new_privs itself (a flag of each thread; the process's is in `creds`).
    pub no_new_privs: bool,
    /// The register state components its signal frame holds (the frame's `xfeatures`): where
    /// that includes AMX tile data, the thread must have room for it before it resumes (see
    /// [`Plan::xstate_first_use`]).
    pub frame_xfeatures: u64,
    /// Signals waiting in its own queue at the checkpoint, in order.
    pub pending: Vec<super::signals::PendingSignal>,
    /// A relative sleep it was in, set to be issued again (see `interrupted`).
    pub sleep: Option<SleepLeft>,
}

/// A relative sleep (`nanosleep`, relative `clock_nanosleep`) interrupted by the checkpoint and
/// set to be issued again with the time the kernel wrote back as left. After a stop and a
/// continue the kernel counts the time stopped against it (it restarts the sleep to its
/// deadline), as the clocks and the timers do: a restore takes the time away off it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepLeft {
    /// Where the timespec with the time left is (the call's `rem`, its time to sleep again).
    pub addr: u64,
    pub clock: i32,
    /// The time left then, in ns.
    pub left_ns: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobustList {
    pub head: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub signature: u32,
}

use crate::capture::ThreadCapture;

/// A thread's nice value (/proc/self/task/TID/stat field 19) and scheduling policy, with
/// SCHED_RESET_ON_FORK (sched_getscheduler: /proc shows the policy without it).
pub(crate) fn sched(tid: i32) -> Option<(i32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let nice = f.get(16)?.parse().ok()?;
    let policy = crate::sys::sched_getscheduler(tid).or_else(|| f.get(38)?.parse().ok())?;
    Some((nice, policy))
}

const PR_SPEC_PRCTL: u32 = 1;
/// PR_SPEC_DISABLE, PR_SPEC_FORCE_DISABLE, PR_SPEC_DISABLE_NOEXEC: the mitigation is on.
const MITIGATED: u32 = 4 | 8 | 16;
/// PR_SPEC_STORE_BYPASS, PR_SPEC_INDIRECT_BRANCH, PR_SPEC_L1D_FLUSH.
pub(crate) const SPECULATION_CONTROLS: [u32; 3] = [0, 1, 2];

/// The mitigations a thread turned on, from what its handler packed (a byte per control).
fn speculation(packed: u64) -> Vec<(u32, u32)> {
    SPECULATION_CONTROLS
        .iter()
        .filter_map(|&which| {
            let v = (packed >> (8 * which)) as u32 & 0xff;
            (v & PR_SPEC_PRCTL != 0 && v & MITIGATED != 0).then_some((which, v))
        })
        .collect()
}

/// A thread's CPU mask, or nothing when it covers every CPU the process could have run on (its
/// cgroup's cpuset, else every CPU online): such a thread is not bound, and restored elsewhere it
/// should not be bound to this machine's CPUs.
fn affinity(mask: Option<Vec<u64>>) -> Vec<u64> {
    let Some(mask) = mask else {
        return Vec::new();
    };
    let all = crate::procfs::cgroup_cpus()
        .or_else(|| std::fs::read_to_string("/sys/devices/system/cpu/online").ok())
        .and_then(|l| parse_cpu_list(l.trim()));
    match all {
        Some(all)
            if all
                .iter()
                .enumerate()
                .all(|(i, w)| mask.get(i).copied().unwrap_or(0) & w == *w) =>
        {
            Vec::new()
        }
        _ => {
            let mut m = mask;
            while m.last() == Some(&0) {
                m.pop();
            }
            m
        }
    }
}

/// "0-3,8" as a mask in 64-bit words.
pub(crate) fn parse_cpu_list(list: &str) -> Option<Vec<u64>> {
    let mut words = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let a = part.parse::<usize>().ok()?;
                (a, a)
            }
        };
        if b < a || b >= 1 << 16 {
            return None;
        }
        for cpu in a..=b {
            if words.len() <= cpu / 64 {
                words.resize(cpu / 64 + 1, 0);
            }
            words[cpu / 64] |= 1u64 << (cpu % 64);
        }
    }
    Some(words)
}

/// A mask as "0-3,8".
pub fn cpu_list(mask: &[u64]) -> String {
    let cpus: Vec<usize> = (0..mask.len() * 64)
        .filter(|&c| mask[c / 64] & (1 << (c % 64)) != 0)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Policies a thread may have: SCHED_OTHER, SCHED_BATCH, SCHED_IDLE (with or without
/// SCHED_RESET_ON_FORK).
pub(crate) fn restorable_policy(policy: u32) -> bool {
    matches!(
        (policy & !RESET_ON_FORK) as i32,
        libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE
    )
}

/// SCHED_RESET_ON_FORK: the thread's children start with the default policy and nice value.
const RESET_ON_FORK: u32 = 0x4000_0000;

/// Whether the main thread runs under seccomp: a filter installed by one thread without TSYNC
/// is that thread's alone (the main thread's is named by the checkpoint's preflight).
pub(crate) fn leader_filtered() -> bool {
    crate::procfs::read(crate::sys::getpid(), "status")
        .ok()
        .is_some_and(|st| crate::procfs::field(&st, "Seccomp").is_some_and(|v| v != "0"))
}

/// Why thread `tid` (`name`, /proc status `status`) cannot be restored as it is: a seccomp
/// filter of its own, a real-time or deadline policy (`policy`: as recorded at the stop; `None`:
/// read now).
pub(crate) fn policy_refusal(
    tid: i32,
    name: &str,
    status: &str,
    leader_filtered: bool,
    policy: Option<u32>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(mode) = crate::procfs::field(status, "Seccomp").filter(|v| *v != "0") {
        if !leader_filtered {
            let count = crate::procfs::field(status, "Seccomp_filters").unwrap_or("?");
            out.push(format!(
                "thread {tid} ({name}) runs under a seccomp filter of its own (mode {mode}, {count} filter(s)), which cannot be read back to be installed again: install it before the other threads start, or in each of them after the checkpoint"
            ));
        }
    }
    if let Some(policy) = policy.or_else(|| sched(tid).map(|(_, p)| p)) {
        if !restorable_policy(policy) {
            out.push(format!(
                "thread {tid} ({name}) runs under the real-time or deadline scheduling policy {}, which is not restored: set SCHED_OTHER in a before-checkpoint hook and the policy again after restore",
                policy & !RESET_ON_FORK
            ));
        }
    }
    out
}

/// [`policy_refusal`] for every thread, once all are stopped: a thread started while the
/// checkpoint stopped the others (found by the chase), or one that changed its policy or
/// installed a filter after the listing, is seen here.
pub(crate) fn policy_refusals(c: &crate::capture::Capture) -> Vec<String> {
    let leader_filtered = leader_filtered();
    let mut out = Vec::new();
    for t in c.threads.iter().filter(|t| t.recorded()) {
        let tid = t.tid.load(Ordering::Relaxed);
        let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
            continue;
        };
        let name = t.recorded_name().unwrap_or_default();
        // The policy the image would hold: the one recorded at the stop.
        let policy = recorded_sched(t.sched.load(Ordering::Relaxed)).map(|(_, p)| p);
        out.extend(policy_refusal(tid, &name, &status, leader_filtered, policy));
    }
    out
}
use crate::restore::Plan;
use std::sync::atomic::Ordering;

/// Offsets in the kernel's x86_64 `struct ucontext`.
const UC_STACK: u64 = 16;
const UC_SIGMASK: u64 = 296;
/// [`crate::capture::ThreadCapture::sched`] from a thread's nice value and policy (with
/// SCHED_RESET_ON_FORK), marked as recorded.
pub(crate) fn sched_word(nice: i32, policy: u64) -> u64 {
    1 << 63 | (policy & 0x7fff_ffff) << 32 | u64::from(nice as u32)
}

/// The nice value and policy a [`sched_word`] holds, if it was recorded.
fn recorded_sched(word: u64) -> Option<(i32, u32)> {
    (word >> 63 == 1).then_some((word as u32 as i32, (word >> 32) as u32 & 0x7fff_ffff))
}

/// XFEATURE_XTILEDATA: the one component the kernel gives a thread room for on first use.
pub(crate) const XTILEDATA: u64 = 1 << 18;

/// The components a signal frame's fpstate says it holds (0 where it holds the legacy state
/// only).
fn frame_xfeatures(mem: &std::fs::File, fpstate: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut sw = [0u8; 16];
    use crate::traced::{FP_SW_BYTES, FP_XSTATE_MAGIC1};
    if fpstate == 0
        || mem
            .read_exact_at(&mut sw, fpstate + FP_SW_BYTES as u64)
            .is_err()
    {
        return 0;
    }
    if u32::from_ne_bytes(sw[0..4].try_into().expect("4")) != FP_XSTATE_MAGIC1 {
        return 0;
    }
    u64::from_ne_bytes(sw[8..16].try_into().expect("8"))
}
/// The relative sleep thread `c` was set to issue again for its time left (noted where its
/// frame was so set: `capture::note_sleep_rem`), that time read from `mem`.
fn sleep_left(c: &ThreadCapture, mem: &std::fs::File) -> Option<SleepLeft> {
    use std::os::unix::fs::FileExt;
    let addr = c.sleep_rem[0].load(Ordering::Relaxed);
    let clock = c.sleep_rem[1].load(Ordering::Relaxed);
    if addr == 0 {
        return None;
    }
    let mut ts = [0u8; 16];
    mem.read_exact_at(&mut ts, addr).ok()?;
    let sec = i64::from_ne_bytes(ts[..8].try_into().expect("8"));
    let nsec = i64::from_ne_bytes(ts[8..].try_into().expect("8"));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    Some(SleepLeft {
        addr,
        clock: clock as u32 as i32,
        left_ns: (sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(nsec as u64),
    })
}

/// glibc's rseq signature on x86.
pub(crate) const RSEQ_SIG: u32 = 0x5305_3053;

impl ThreadState {
    /// The thread's state from what its handler recorded and its frame in the frozen memory.
    pub(crate) fn dump(
        c: &ThreadCapture,
        name: String,
        mem: &std::fs::File,
    ) -> std::io::Result<ThreadState> {
        use std::os::unix::fs::FileExt;
        let frame = c.frame.load(Ordering::Relaxed);
        let mut uc = [0u8; 304];
        mem.read_exact_at(&mut uc, frame)?;
        let word = |off: u64| {
            u64::from_ne_bytes(uc[off as usize..off as usize + 8].try_into().expect("8"))
        };
        let fs_base = c.fs_base.load(Ordering::Relaxed);
        let glibc = c.rseq.load(Ordering::Relaxed) == crate::sys::RseqOwner::Glibc as u32;
        let rseq = crate::sys::glibc_rseq(fs_base)
            .filter(|_| glibc)
            .map(|(addr, size)| Rseq {
                addr,
                // glibc registers at least the original 32-byte area.
                len: size.max(32),
                signature: RSEQ_SIG,
            });
        let tid = c.tid.load(Ordering::Relaxed);
        // As the handler read them when the thread stopped (read now only where it could not).
        let (nice, policy) = recorded_sched(c.sched.load(Ordering::Relaxed))
            .or_else(|| sched(tid))
            .unwrap_or((0, 0));
        let words = c.affinity_words.load(Ordering::Relaxed) as usize;
        let mask = if words > 0 {
            let m = c.affinity[..words.min(c.affinity.len())].iter();
            Some(m.map(|w| w.load(Ordering::Relaxed)).collect())
        } else {
            crate::sys::sched_getaffinity(tid).ok()
        };
        Ok(ThreadState {
            nice,
            policy,
            affinity: affinity(mask),
            ioprio: c.ioprio.load(Ordering::Relaxed),
            speculation: speculation(c.speculation.load(Ordering::Relaxed)),
            mce_kill: match c.controls.load(Ordering::Relaxed) & 0xff {
                v @ (1 | 2) => Some(v as u32 - 1),
                _ => None,
            },
            cpuid_faulting: (c.controls.load(Ordering::Relaxed) >> 8) & 0xff == 1,
            timer_slack: c.timer_slack.load(Ordering::Relaxed),
            no_new_privs: (c.controls.load(Ordering::Relaxed) >> 48) & 1 == 1,
            numa: match (c.controls.load(Ordering::Relaxed) >> 16) & 0xffff_ffff {
                0 | 1 => None,
                mode => Some((mode as u32 - 1, c.numa_nodes.load(Ordering::Relaxed))),
            },
            tid,
            name,
            sigframe: frame,
            fs_base,
            gs_base: c.gs_base.load(Ordering::Relaxed),
            sigmask: word(UC_SIGMASK),
            frame_xfeatures: frame_xfeatures(
                mem,
                word((crate::traced::UC_MCONTEXT + crate::traced::SC_FPSTATE) as u64),
            ),
            sigaltstack: SigAltStack {
                sp: word(UC_STACK),
                flags: word(UC_STACK + 8) as i32,
                size: word(UC_STACK + 16),
            },
            robust_list: RobustList {
                head: c.robust_head.load(Ordering::Relaxed),
                len: c.robust_len.load(Ordering::Relaxed),
            },
            clear_child_tid: c.clear_child_tid.load(Ordering::Relaxed),
            rseq,
            pending: Vec::new(),
            sleep: sleep_left(c, mem),
        })
    }

    /// The time left of the relative sleep it was in, less the time away on its clock (see
    /// [`SleepLeft`]), written where the call reads it when issued again.
    pub fn plan_sleep(&self, plan: &mut Plan, away: super::clocks::Away) {
        let Some(s) = self.sleep else { return };
        let left = s.left_ns.saturating_sub(away.on(s.clock));
        let tid = self.tid;
        plan.store(
            format!("sleep of thread {tid}: seconds left after the time away"),
            s.addr,
            left / 1_000_000_000,
        );
        plan.store(
            format!("sleep of thread {tid}: nanoseconds left"),
            s.addr + 8,
            left % 1_000_000_000,
        );
    }

    /// The thread's scheduling policy and nice value; `nice` and `ioprio` are the values to set
    /// (the launcher's decisions: a nice value never below the caller's without CAP_SYS_NICE, the
    /// real-time I/O class only where the caller may give it).
    pub fn plan_sched(&self, plan: &mut Plan, nice: i32, ioprio: u32) {
        let tid = self.tid;
        if self.policy != 0 {
            let param = plan.words(&[0]);
            plan.syscall(
                format!("scheduling policy {} of thread {tid}", self.policy),
                libc::SYS_sched_setscheduler,
                [0, u64::from(self.policy), param, 0, 0, 0],
            );
        }
        plan.syscall(
            format!("nice {nice} of thread {tid}"),
            libc::SYS_setpriority,
            [libc::PRIO_PROCESS as u64, 0, nice as i64 as u64, 0, 0, 0],
        );
        if !self.affinity.is_empty() {
            let mask = plan.words(&self.affinity);
            plan.syscall(
                format!(
                    "bind thread {tid} to CPUs {} (sched_setaffinity; none of them is usable here if this fails)",
                    cpu_list(&self.affinity)
                ),
                libc::SYS_sched_setaffinity,
                [0, self.affinity.len() as u64 * 8, mask, 0, 0, 0],
            );
        }
        if ioprio != 0 {
            const IOPRIO_WHO_PROCESS: u64 = 1;
            plan.syscall(
                format!("I/O priority {ioprio:#x} of thread {tid}"),
                libc::SYS_ioprio_set,
                [IOPRIO_WHO_PROCESS, 0, u64::from(ioprio), 0, 0, 0],
            );
        }
        if self.no_new_privs {
            // A restriction, never lifted: a thread that set it (a sandboxed worker) has it again.
            plan.syscall(
                format!("no_new_privs of thread {tid}"),
                libc::SYS_prctl,
                [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
            );
        }
        if self.timer_slack != 0 {
            plan.syscall(
                format!("timer slack {} ns of thread {tid}", self.timer_slack),
                libc::SYS_prctl,
                [libc::PR_SET_TIMERSLACK as u64, self.timer_slack, 0, 0, 0, 0],
            );
        }
        if let Some(policy) = self.mce_kill {
            plan.syscall(
                format!("machine-check kill policy {policy} of thread {tid}"),
                libc::SYS_prctl,
                [
                    libc::PR_MCE_KILL as u64,
                    libc::PR_MCE_KILL_SET as u64,
                    u64::from(policy),
                    0,
                    0,
                    0,
                ],
            );
        }
        if let Some((mode, nodes)) = self.numa {
            let mask = plan.words(&[nodes]);
            plan.syscall(
                format!("NUMA policy {mode:#x} (nodes {nodes:#x}) of thread {tid}"),
                libc::SYS_set_mempolicy,
                [u64::from(mode), mask, 65, 0, 0, 0],
            );
        }
        if self.cpuid_faulting {
            const ARCH_SET_CPUID: u64 = 0x1012;
            plan.syscall(
                format!("cpuid faulting of thread {tid}"),
                libc::SYS_arch_prctl,
                [ARCH_SET_CPUID, 0, 0, 0, 0, 0],
            );
        }
        for &(which, value) in &self.speculation {
            // The value without PR_SPEC_PRCTL is what PR_SET_SPECULATION_CTRL takes. A kernel
            // that does not let processes choose either mitigates for everyone or not at all.
            match crate::sys::speculation_ctrl(which) {
                Ok(here) if here & PR_SPEC_PRCTL != 0 => plan.syscall(
                    format!("speculation control {which} = {value:#x} of thread {tid}"),
                    libc::SYS_prctl,
                    [
                        libc::PR_SET_SPECULATION_CTRL as u64,
                        u64::from(which),
                        u64::from(value & !PR_SPEC_PRCTL),
                        0,
                        0,
                        0,
                    ],
                ),
                Ok(here) if here == 0 || here & MITIGATED != 0 => {}
                _ => eprintln!(
                    "thaw: warning: thread {tid} turned a speculation mitigation on ({which}: {value:#x}); this machine's kernel does not let a process do that"
                ),
            }
        }
    }

    /// The thread's own steps before it returns through its signal frame with [`Plan::sigreturn`]
    /// (which restores registers, FPU/AVX state, signal mask and sigaltstack): robust list,
    /// clear_child_tid, rseq, TLS and name.
    pub fn plan_restore(&self, plan: &mut Plan) {
        let tid = self.tid;
        if self.robust_list.head != 0 {
            plan.syscall(
                format!("set_robust_list for thread {tid}"),
                libc::SYS_set_robust_list,
                [self.robust_list.head, self.robust_list.len, 0, 0, 0, 0],
            );
        }
        plan.syscall(
            format!("set_tid_address for thread {tid}"),
            libc::SYS_set_tid_address,
            [self.clear_child_tid, 0, 0, 0, 0, 0],
        );
        if let Some(r) = self.rseq {
            plan.syscall(
                format!("rseq registration of thread {tid}"),
                libc::SYS_rseq,
                [r.addr, u64::from(r.len), 0, u64::from(r.signature), 0, 0],
            );
        }
        if self.frame_xfeatures & XTILEDATA != 0 {
            plan.xstate_first_use(format!("room for thread {tid}'s AMX tile state"), XTILEDATA);
        }
        // Set here, not only by the frame: a thread that never had an alternate stack has
        // {0, 0, 0} in its frame, which sigreturn quietly declines (too small), and the main
        // thread, a fork of the launcher's, would keep the launcher's (unmapped by then): its
        // first SA_ONSTACK handler (every CPython handler) would crash it.
        let ss = self.sigaltstack;
        let words = if ss.size == 0 || ss.flags & libc::SS_DISABLE != 0 {
            [0, libc::SS_DISABLE as u64, 0]
        } else {
            // SS_ONSTACK (reported while the thread ran on it) is no mode to set.
            [ss.sp, (ss.flags & !libc::SS_ONSTACK) as u32 as u64, ss.size]
        };
        let stack = plan.words(&words);
        plan.syscall(
            format!(
                "alternate signal stack of thread {tid} ({:#x}, {} bytes)",
                words[0], words[2]
            ),
            libc::SYS_sigaltstack,
            [stack, 0, 0, 0, 0, 0],
        );
        let name = plan.cstr(&self.name);
        plan.syscall(
            format!("name thread {tid} {:?}", self.name),
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, name, 0, 0, 0, 0],
        );
        const ARCH_SET_GS: u64 = 0x1001;
        const ARCH_SET_FS: u64 = 0x1002;
        if self.gs_base != 0 {
            plan.syscall(
                format!("set gs base of thread {tid}"),
                libc::SYS_arch_prctl,
                [ARCH_SET_GS, self.gs_base, 0, 0, 0, 0],
            );
        }
        plan.syscall(
            format!("set fs base (TLS) of thread {tid}"),
            libc::SYS_arch_prctl,
            [ARCH_SET_FS, self.fs_base, 0, 0, 0, 0],
        );
    }
}

/// Threads that unshared what threads share (their own working directory, root and umask with
/// `unshare(CLONE_FS)`, their own descriptor table with `unshare(CLONE_FILES)`): the restorer
/// makes every thread share the process's, so they are refused by name.
pub(crate) fn unshared_refusals(c: &crate::capture::Capture) -> Vec<String> {
    const KCMP_FILES: u64 = 2;
    const KCMP_FS: u64 = 3;
    let pid = crate::sys::getpid();
    let mut out = Vec::new();
    for t in c.threads.iter().filter(|t| t.recorded()) {
        let tid = t.tid.load(Ordering::Relaxed);
        if tid == pid {
            continue;
        }
        for (kind, what) in [
            (
                KCMP_FS,
                "its own working directory, root and umask (unshare(CLONE_FS))",
            ),
            (
                KCMP_FILES,
                "its own descriptor table (unshare(CLONE_FILES))",
            ),
        ] {
            if crate::sys::kcmp(pid, tid, kind) == Some(false) {
                out.push(format!(
                    "thread {tid} has {what}, which thaw does not restore: every restored thread shares the process's"
                ));
            }
        }
    }
    out
}

/// [`crate::capture::ThreadCapture::controls`] from a thread's machine-check policy and `cpuid`
/// setting (negative: unknown), NUMA policy mode + 1 (0: unknown) and no_new_privs.
pub(crate) fn controls_word(mce: i64, cpuid: i64, numa_mode: u64, nnp: bool) -> u64 {
    let byte = |v: i64| {
        if (0..255).contains(&v) {
            v as u64 + 1
        } else {
            0
        }
    };
    byte(mce) | byte(cpuid) << 8 | (numa_mode & 0xffff_ffff) << 16 | u64::from(nnp) << 48
}

/// [`crate::capture::ThreadCapture::identity`] from a thread's personality, securebits and
/// PR_GET_TSC.
pub(crate) fn identity_word(personality: u64, securebits: u64, tsc: i32) -> u64 {
    // (Securebits: 12 of them since Linux 6.14, SECBIT_EXEC_RESTRICT_FILE and
    // SECBIT_EXEC_DENY_INTERACTIVE with their locks.)
    (personality & 0xffff_ffff) | (securebits & 0xfff) << 32 | (tsc as u64 & 3) << 44 | 1 << 63
}

/// Threads whose personality, securebits (keepcaps among them) or `rdtsc` setting (PR_SET_TSC)
/// differ from the checkpointing thread's: an image holds one of each, for every thread.
pub(crate) fn identity_refusals(c: &crate::capture::Capture) -> Vec<String> {
    let word = |t: &crate::capture::ThreadCapture| {
        Some(t.identity.load(Ordering::Relaxed)).filter(|w| w >> 63 == 1)
    };
    let Some(mine) = c
        .threads
        .iter()
        .find(|t| t.tid.load(Ordering::Relaxed) == c.caller)
        .and_then(word)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in &c.threads {
        let Some(theirs) = word(t) else { continue };
        let tid = t.tid.load(Ordering::Relaxed);
        for (what, shift, mask, hint) in [
            (
                "personality",
                0,
                0xffff_ffff,
                "set it before the other threads start (it is inherited), or in each after restore",
            ),
            (
                "securebits (keepcaps among them)",
                32,
                0xfff,
                "set them in every thread, or in none",
            ),
            (
                "rdtsc setting (PR_SET_TSC)",
                44,
                3,
                "set it in every thread, or in none",
            ),
        ] {
            let (a, b) = ((mine >> shift) & mask, (theirs >> shift) & mask);
            if a != b {
                out.push(format!(
                    "thread {tid} has another {what} ({b:#x}) than the checkpointing thread ({a:#x}): an image holds one for every thread; {hint}"
                ));
            }
        }
    }
    out
}

/// Threads whose rseq registration thaw cannot restore: an area the program registered itself
/// (thaw registers glibc's again, and cannot learn another one's address without ptrace).
pub(crate) fn rseq_refusals(c: &crate::capture::Capture) -> Vec<String> {
    c.threads
        .iter()
        .filter(|t| t.rseq.load(Ordering::Relaxed) == crate::sys::RseqOwner::Other as u32)
        .map(|t| {
            format!(
                "thread {} has an rseq area registered by the program itself, not glibc's: only glibc's is registered again at restore; unregister it before the checkpoint and register it again after",
                t.tid.load(Ordering::Relaxed)
            )
        })
        .collect()
}
