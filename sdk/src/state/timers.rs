//! Interval timers: `setitimer` (ITIMER_REAL, which `alarm` uses too, ITIMER_VIRTUAL and
//! ITIMER_PROF), each with its remaining time and interval as the checkpoint handler read them
//! while every thread was parked. Restored just before the threads resume: ITIMER_REAL with what
//! it has left after the time away (CLOCK_MONOTONIC's, see [`super::clocks::Away`]; one that
//! came due meanwhile fires at once, once, as signals of one kind merge), the CPU-time ones
//! with what they had left. (POSIX timers: see [`super::posix_timers`].)

use serde::{Deserialize, Serialize};

/// One `struct itimerval`, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimer {
    pub interval_us: u64,
    pub value_us: u64,
}

impl Itimer {
    /// ITIMER_REAL after the time away, and whether it came due meanwhile (or was due at the
    /// checkpoint: 1 µs left, see [`as_restored`]). One that came due is armed for its next
    /// expiry (none for a one-shot), and its SIGALRM is queued by the restore (see
    /// [`alarm_signal`]).
    fn ran_on(self, away: super::clocks::Away) -> (Itimer, bool) {
        if self.value_us == 0 {
            return (Itimer::default(), false);
        }
        let interval_ns = self.interval_us.saturating_mul(1000);
        let r = away.run(
            libc::CLOCK_MONOTONIC,
            self.value_us.saturating_mul(1000),
            interval_ns,
        );
        let due = r.fired > 0 || self.value_us == 1;
        let next_ns = match (due, interval_ns) {
            (false, _) => r.left_ns,
            (true, 0) => 0,
            (true, _) if r.fired > 0 => r.left_ns,
            (true, i) => i,
        };
        let t = Itimer {
            interval_us: if next_ns == 0 { 0 } else { self.interval_us },
            value_us: next_ns.div_ceil(1000),
        };
        (t, due)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimers {
    pub real: Itimer,
    pub virtual_: Itimer,
    pub prof: Itimer,
}

const WHICH: [i32; 3] = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];

/// What the image keeps of ITIMER_REAL read as `[interval, value]`, `alarm_pending` saying
/// whether SIGALRM waits in the process's queue (asked only for a timer read so;
/// async-signal-safe). The kernel arms a periodic ITIMER_REAL that came
/// due again only when its SIGALRM is taken, and until then reads no time left. With the signal
/// waiting (it came after the checkpoint read the queues, so the image does not hold it), it is
/// due at once (1 µs), so that the signal comes and the timer goes on: restored disarmed, it
/// never fired again (a probe: Python's `setitimer`, about one checkpoint in ten). Without
/// (SIGALRM ignored: the kernel dropped it), it never fires again: disarmed. (ITIMER_VIRTUAL and
/// ITIMER_PROF are armed again as they come due: never read so, and kept as read.)
///
/// `getitimer` rounds down to whole microseconds, so a timer with less than 1 µs to go reads
/// no time left too (about one read in 20 000 of a 20 ms timer): `settle` reads the value
/// again once that can no longer be so ([`settled_real_value`]); a timer still armed then is
/// kept as read, not taken for dead.
///
/// A one-shot timer (`alarm`) `armed_before` the signal queues were read that reads disarmed
/// now came due in between: with its SIGALRM waiting (after the queues were read, the image
/// does not hold it), it is due at once too. Restored disarmed, it never
/// came (a probe: an alarm due 10 ms into a checkpoint copying 64 MiB of shared memory, every
/// time; the handler reads the timers last, a millisecond or more after the queues).
pub fn as_restored(
    t: [u64; 2],
    armed_before: bool,
    settle: impl FnOnce() -> u64,
    alarm_pending: impl FnOnce() -> bool,
) -> [u64; 2] {
    match t {
        [interval, 0] if interval > 0 || armed_before => match settle() {
            0 if alarm_pending() => [interval, 1],
            0 => [0, 0],
            value => [interval, value],
        },
        t => t,
    }
}

/// ITIMER_VIRTUAL or ITIMER_PROF as the image keeps it, read as `[interval, value]`: a
/// one-shot timer `armed_before` the signal queues were read that reads disarmed now came due
/// in between, and its signal, when waiting (`signal_waits`, asked only then: not in the
/// image), makes it due at once (1 µs), as [`as_restored`] does for ITIMER_REAL.
pub fn cpu_as_restored(
    t: [u64; 2],
    armed_before: bool,
    signal_waits: impl FnOnce() -> bool,
) -> [u64; 2] {
    match t {
        [0, 0] if armed_before && signal_waits() => [0, 1],
        t => t,
    }
}

/// ITIMER_REAL's value read after one read no time left, at a moment when less than 1 µs to
/// go can no longer be what it means: 2 µs of CLOCK_MONOTONIC (the timer's clock) later. A timer
/// that came due meanwhile reads 1 µs until it has fired, then 0 (or its next period, armed
/// again as its signal was taken). A bounded spin of raw system calls: async-signal-safe.
pub fn settled_real_value() -> u64 {
    // Taken after the read that gave 0: that timer was due at the latest 1 µs after `since`.
    let since = crate::sys::clock_ns(libc::CLOCK_MONOTONIC);
    loop {
        let at = crate::sys::clock_ns(libc::CLOCK_MONOTONIC);
        let (_, value) = crate::sys::getitimer(libc::ITIMER_REAL);
        if value != 0 || at >= since + 2_000 {
            return value;
        }
    }
}

/// Reads the three timers (raw system calls: async-signal-safe): [interval, value] in µs each.
pub fn read() -> [[u64; 2]; 3] {
    WHICH.map(|w| {
        let (interval, value) = crate::sys::getitimer(w);
        [interval, value]
    })
}

impl Itimers {
    pub fn from_raw(raw: [[u64; 2]; 3]) -> Itimers {
        let t = |r: [u64; 2]| Itimer {
            interval_us: r[0],
            value_us: r[1],
        };
        Itimers {
            real: t(raw[0]),
            virtual_: t(raw[1]),
            prof: t(raw[2]),
        }
    }

    /// setitimer for every armed timer, run on over `away`. Whether ITIMER_REAL came due: its
    /// SIGALRM is then the caller's to queue once every thread exists ([`alarm_signal`]).
    pub fn plan_restore(&self, plan: &mut crate::restore::Plan, away: super::clocks::Away) -> bool {
        let (real, due) = self.real.ran_on(away);
        for (which, t, name) in [
            (libc::ITIMER_REAL, real, "ITIMER_REAL"),
            (libc::ITIMER_VIRTUAL, self.virtual_, "ITIMER_VIRTUAL"),
            (libc::ITIMER_PROF, self.prof, "ITIMER_PROF"),
        ] {
            if t.value_us == 0 {
                continue;
            }
            let tv = |us: u64| [us / 1_000_000, us % 1_000_000];
            let [is, iu] = tv(t.interval_us);
            let [vs, vu] = tv(t.value_us);
            let val = plan.words(&[is, iu, vs, vu]);
            plan.syscall(
                format!(
                    "setitimer {name} ({} µs left, interval {} µs)",
                    t.value_us, t.interval_us
                ),
                libc::SYS_setitimer,
                [which as u64, val, 0, 0, 0, 0],
            );
        }
        due
    }
}

/// The SIGALRM of an ITIMER_REAL that came due, as the kernel sends it (`SI_KERNEL`). Queued by
/// the restore to the thread the kernel would give it to (see `signals::target`) rather than
/// raised by a timer due at once: that fires while the threads are resuming, and would go to
/// whichever unblocks first, not the main thread (a Perl ithread took it and exited).
pub fn alarm_signal() -> super::signals::PendingSignal {
    super::signals::PendingSignal::from_kernel(libc::SIGALRM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_timer_that_came_due_is_armed_for_its_next_expiry() {
        use crate::state::clocks::Away;
        let away = |ms: u64| Away {
            monotonic_ns: ms * 1_000_000,
            boottime_ns: ms * 1_000_000,
        };
        let t = |interval_us, value_us| Itimer {
            interval_us,
            value_us,
        };
        assert_eq!(t(0, 0).ran_on(away(5)), (t(0, 0), false));
        assert_eq!(t(0, 9_000).ran_on(away(5)), (t(0, 4_000), false));
        assert_eq!(
            t(0, 2_000).ran_on(away(5)),
            (t(0, 0), true),
            "one-shot: due, disarmed"
        );
        assert_eq!(t(10_000, 2_000).ran_on(away(5)), (t(10_000, 7_000), true));
        assert_eq!(
            t(10_000, 1).ran_on(away(0)),
            (t(10_000, 10_000), true),
            "due at the checkpoint"
        );
    }

    #[test]
    fn a_periodic_timer_read_with_no_time_left_is_due_only_with_its_signal_waiting() {
        let dead = || 0;
        let unread = || -> u64 { panic!("read again only for no time left") };
        assert_eq!(as_restored([20_000, 0], false, dead, || true), [20_000, 1]);
        assert_eq!(
            as_restored([20_000, 0], false, dead, || false),
            [0, 0],
            "ignored: dead for good"
        );
        assert_eq!(
            as_restored([20_000, 0], false, || 1, || false),
            [20_000, 1],
            "less than 1 µs to go at the first read: come due since, still armed"
        );
        assert_eq!(
            as_restored([20_000, 0], false, || 19_990, || false),
            [20_000, 19_990],
            "fired and armed again since"
        );
        assert_eq!(
            as_restored([20_000, 5], true, unread, || false),
            [20_000, 5]
        );
        assert_eq!(
            as_restored([0, 0], false, unread, || true),
            [0, 0],
            "disarmed"
        );
        assert_eq!(as_restored([0, 7], true, unread, || true), [0, 7]);
    }

    #[test]
    fn a_one_shot_cpu_timer_that_came_due_after_the_queues_were_read_is_due() {
        let never = || -> bool { panic!("asked only of a one-shot timer armed before") };
        assert_eq!(cpu_as_restored([0, 0], true, || true), [0, 1]);
        assert_eq!(cpu_as_restored([0, 0], true, || false), [0, 0]);
        assert_eq!(cpu_as_restored([0, 0], false, never), [0, 0]);
        assert_eq!(cpu_as_restored([0, 40], true, never), [0, 40]);
    }

    #[test]
    fn a_one_shot_timer_that_came_due_after_the_queues_were_read_is_due() {
        let dead = || 0;
        assert_eq!(
            as_restored([0, 0], true, dead, || true),
            [0, 1],
            "its SIGALRM waits, the image does not hold it: due at once"
        );
        assert_eq!(
            as_restored([0, 0], true, dead, || false),
            [0, 0],
            "its SIGALRM taken (or ignored) before the queues were read: disarmed"
        );
        assert_eq!(
            as_restored([0, 0], true, || 1, || false),
            [0, 1],
            "less than 1 µs to go: come due since, not fired yet"
        );
        let unread = || -> u64 { panic!("never armed: read once") };
        assert_eq!(as_restored([0, 0], false, unread, || true), [0, 0]);
    }

    #[test]
    fn a_timer_read_with_no_time_left_once_settled_has_fired() {
        // SAFETY: SIGALRM ignored in this test process (no other unit test uses it), so that
        // the timer's expiries are dropped: it fires once and is dead.
        unsafe { libc::signal(libc::SIGALRM, libc::SIG_IGN) };
        let mut early = 0;
        for _ in 0..1_000 {
            let t = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200,
                },
            };
            // SAFETY: arms ITIMER_REAL from a valid itimerval.
            unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
            while crate::sys::getitimer(libc::ITIMER_REAL).1 != 0 {}
            // The first 0 may be the last µs before it comes due; once settled, a 0 is a
            // timer that fired (and never reads 1 µs, due, again).
            if settled_real_value() == 0 {
                early += (crate::sys::getitimer(libc::ITIMER_REAL).1 != 0) as u32;
            } else {
                while crate::sys::getitimer(libc::ITIMER_REAL).1 != 0 {}
            }
        }
        // SAFETY: SIGALRM's default action again.
        unsafe { libc::signal(libc::SIGALRM, libc::SIG_DFL) };
        assert_eq!(early, 0, "reads of 0 taken for a fired timer that had not");
    }
}
