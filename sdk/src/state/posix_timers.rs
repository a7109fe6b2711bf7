//! POSIX timers (`timer_create`): each with its ID (programs hold it), clock, notification
//! (signal to the process, signal to one thread, or none), signal number and value, time left
//! and interval. The IDs and targets come from /proc/self/timers before the snapshot, the times
//! from `timer_gettime` in the checkpoint handler while every thread is parked. The restorer
//! creates each again with its own ID (`PR_TIMER_CREATE_RESTORE_IDS`, Linux 6.15+) once every
//! thread exists, and arms it with the time it had left. A timer's overrun count starts again
//! from zero; a signal it had queued and not delivered is refused with the pending signals.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    /// SIGEV_SIGNAL, SIGEV_NONE, or SIGEV_SIGNAL | SIGEV_THREAD_ID with `tid`.
    pub notify: i32,
    pub signo: i32,
    /// sigev_value, as the program gave it (glibc's SIGEV_THREAD keeps a pointer there).
    pub value: u64,
    pub tid: i32,
    pub value_ns: u64,
    pub interval_ns: u64,
}

impl PosixTimer {
    /// The queue its signal goes to: `Some(0)` the process's, `Some(tid)` that thread's; `None`
    /// for a timer that sends none.
    pub fn queue(&self) -> Option<i32> {
        if self.notify & SIGEV_NONE != 0 || !(1..=64).contains(&self.signo) {
            None
        } else if self.notify & SIGEV_THREAD_ID != 0 {
            Some(self.tid)
        } else {
            Some(0)
        }
    }
}

const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;

/// The process's timers from /proc/self/timers (times not read yet); `Err` names a timer that
/// cannot be restored.
pub(crate) fn list() -> Result<Vec<PosixTimer>, String> {
    let text = match std::fs::read_to_string("/proc/self/timers") {
        Ok(t) => t,
        // Without CONFIG_CHECKPOINT_RESTORE the kernel has no such file: nothing can be known.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read /proc/self/timers: {e}")),
    };
    let me = crate::sys::getpid();
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("ID: ") {
            out.push(PosixTimer {
                id: id
                    .trim()
                    .parse()
                    .map_err(|_| format!("POSIX timer {id:?}"))?,
                ..Default::default()
            });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("signal: ") {
            // "SIGNO/VALUE" (the value in hex).
            let parsed = v.trim().split_once('/').and_then(|(signo, value)| {
                Some((signo.parse().ok()?, u64::from_str_radix(value, 16).ok()?))
            });
            (t.signo, t.value) =
                parsed.ok_or_else(|| format!("POSIX timer {}: cannot read {v:?}", t.id))?;
        } else if let Some(v) = line.strip_prefix("notify: ") {
            // "signal/pid.N", "signal/tid.N" (SIGEV_THREAD_ID), "none/pid.N".
            let (kind, target) = v.trim().split_once('/').unwrap_or((v, ""));
            let (scope, who) = target.split_once('.').unwrap_or((target, "0"));
            let who: i32 = who.parse().unwrap_or(0);
            t.notify = match kind {
                "none" => SIGEV_NONE,
                "signal" => SIGEV_SIGNAL,
                other => {
                    return Err(format!(
                        "POSIX timer {}: notification {other:?} is not restored",
                        t.id
                    ))
                }
            };
            if scope == "tid" {
                t.notify |= SIGEV_THREAD_ID;
                t.tid = who;
                if !std::path::Path::new(&format!("/proc/self/task/{who}")).exists() {
                    return Err(format!(
                        "POSIX timer {}: it signals thread {who}, not one of this process",
                        t.id
                    ));
                }
            } else if who != me && t.notify != SIGEV_NONE {
                return Err(format!("POSIX timer {}: it signals process {who}", t.id));
            }
        } else if let Some(v) = line.strip_prefix("ClockID: ") {
            t.clock = v
                .trim()
                .parse()
                .map_err(|_| format!("POSIX timer {}: cannot read its clock {v:?}", t.id))?;
        }
    }
    Ok(out)
}

/// Marks a timer `read` could not read (deleted meanwhile).
pub const GONE: u64 = u64::MAX;

/// timer_gettime(id): (value, interval) in ns, or ([`GONE`], 0). Async-signal-safe.
pub fn read(id: i32) -> (u64, u64) {
    let mut its = [0i64; 4];
    let r = crate::sys::syscall6(
        libc::SYS_timer_gettime,
        [id as u64, its.as_mut_ptr() as u64, 0, 0, 0, 0],
    );
    if r < 0 {
        return (GONE, 0);
    }
    let ns = |s: i64, n: i64| (s.max(0) as u64) * 1_000_000_000 + n.max(0) as u64;
    (ns(its[2], its[3]), ns(its[0], its[1]))
}

/// A timer's (value, interval) in ns as the image keeps it, `before` its value read before any
/// signal queue was: a one-shot timer armed then that reads disarmed now came due in between,
/// as did a periodic one that has more time left now than then; its signal, when waiting
/// (`signal_waits`, asked only then: it came after the queues were read, so it is neither in the
/// image nor refused), makes it due at once (1 ns), its interval kept. Restored as read, the
/// one-shot timer never fired, the periodic one a whole interval late (a probe: timers due 10 ms
/// into a checkpoint copying 64 MiB of shared memory, every time).
pub fn as_restored(
    read: (u64, u64),
    before: u64,
    signal_waits: impl FnOnce() -> bool,
) -> (u64, u64) {
    let (value, interval) = read;
    // One-shot: disarmed now; periodic: started on its next interval since.
    let came_due = if interval == 0 {
        value == 0
    } else {
        value > before
    };
    if before != 0 && before != GONE && came_due && signal_waits() {
        (1, interval)
    } else {
        read
    }
}

/// Creates every timer again with its ID and arms it (once every thread exists) with what it has
/// left after the time away on its clock (see [`super::clocks::Away`]); one that came due
/// meanwhile fires at once (1 ns), its interval from then on (the overruns it missed are not
/// counted).
pub fn plan_restore(
    timers: &[PosixTimer],
    plan: &mut crate::restore::Plan,
    away: super::clocks::Away,
) {
    if timers.is_empty() {
        return;
    }
    plan.syscall(
        "POSIX timers: create them with their IDs (PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    );
    for t in timers {
        // struct sigevent: value, signo, notify, tid; 64 bytes.
        let mut ev = [0u8; 64];
        ev[0..8].copy_from_slice(&t.value.to_ne_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&t.tid.to_ne_bytes());
        let ev = plan.data(&ev);
        let id = plan.words(&[t.id as u32 as u64]);
        plan.syscall(
            format!(
                "POSIX timer {} (clock {}, signal {})",
                t.id, t.clock, t.signo
            ),
            libc::SYS_timer_create,
            [t.clock as u64, ev, id, 0, 0, 0],
        );
        if t.value_ns != 0 {
            let r = away.run(t.clock, t.value_ns, t.interval_ns);
            let value = if r.fired > 0 { 1 } else { r.left_ns };
            let ts = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
            let [is, ins] = ts(t.interval_ns);
            let [vs, vns] = ts(value);
            let its = plan.words(&[is, ins, vs, vns]);
            plan.syscall(
                format!(
                    "arm POSIX timer {} ({} ns left, interval {} ns)",
                    t.id, value, t.interval_ns
                ),
                libc::SYS_timer_settime,
                [t.id as u64, 0, its, 0, 0, 0],
            );
        }
    }
    plan.syscall(
        "POSIX timers: back to ordinary IDs",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_timer_that_came_due_after_the_queues_were_read_is_due() {
        let never = || -> bool { panic!("asked only of a one-shot timer armed before") };
        assert_eq!(
            as_restored((0, 0), 5_000_000, || true),
            (1, 0),
            "its signal waits"
        );
        assert_eq!(
            as_restored((0, 0), 5_000_000, || false),
            (0, 0),
            "taken before"
        );
        assert_eq!(as_restored((0, 0), 0, never), (0, 0), "disarmed throughout");
        assert_eq!(as_restored((0, 0), GONE, never), (0, 0));
        assert_eq!(as_restored((7, 0), 5_000_000, never), (7, 0));
        assert_eq!(
            as_restored((9, 50), 5_000_000, never),
            (9, 50),
            "periodic, not come due since: as read"
        );
        assert_eq!(
            as_restored((40, 50), 5, || true),
            (1, 50),
            "periodic, come due since, its signal waiting"
        );
        assert_eq!(as_restored((40, 50), 5, || false), (40, 50));
    }
}
