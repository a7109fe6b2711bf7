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
    /// ITIMER_REAL after the time away: due at once (1 µs) if it came due meanwhile. One read
    /// with no time left and an interval had come due with its SIGALRM not yet taken (the kernel
    /// arms it again when the signal is taken, and the checkpoint read the queues before it came
    /// due): due at once too, so that the signal comes and the timer goes on (restored disarmed,
    /// it never fired again). Its SIGALRM, if the image holds it pending, merges with this one.
    fn ran_on(self, away: super::clocks::Away) -> Itimer {
        if self.value_us == 0 && self.interval_us > 0 {
            return Itimer {
                interval_us: self.interval_us,
                value_us: 1,
            };
        }
        let r = away.run(
            libc::CLOCK_MONOTONIC,
            self.value_us.saturating_mul(1000),
            self.interval_us.saturating_mul(1000),
        );
        Itimer {
            interval_us: self.interval_us,
            value_us: if r.fired > 0 {
                1
            } else {
                r.left_ns.div_ceil(1000)
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimers {
    pub real: Itimer,
    pub virtual_: Itimer,
    pub prof: Itimer,
}

const WHICH: [i32; 3] = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];

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

    /// setitimer for every armed timer, run on over `away`.
    pub fn plan_restore(&self, plan: &mut crate::restore::Plan, away: super::clocks::Away) {
        for (which, t, name) in [
            (libc::ITIMER_REAL, self.real.ran_on(away), "ITIMER_REAL"),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::clocks::Away;

    #[test]
    fn a_real_timer_waiting_for_its_signal_to_be_taken_is_due_at_once() {
        let away = Away {
            monotonic_ns: 5_000_000_000,
            boottime_ns: 5_000_000_000,
        };
        let due = Itimer {
            interval_us: 20_000,
            value_us: 0,
        };
        assert_eq!(due.ran_on(away).value_us, 1);
        assert_eq!(due.ran_on(Away::default()).value_us, 1);
        assert_eq!(due.ran_on(away).interval_us, 20_000);
        // Disarmed stays disarmed; armed runs on over the time away.
        assert_eq!(Itimer::default().ran_on(away), Itimer::default());
        let armed = Itimer {
            interval_us: 0,
            value_us: 9_000_000,
        };
        assert_eq!(armed.ran_on(away).value_us, 4_000_000);
    }
}
