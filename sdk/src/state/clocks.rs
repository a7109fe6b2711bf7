//! Clocks: CLOCK_MONOTONIC and CLOCK_BOOTTIME as the process last could have seen them, and the
//! boot they belong to. Both count from boot, so a process restored after a reboot, or on
//! another machine, would see them jump backwards (JVM safepoints, GC pacing, timers and
//! deadlines assume they never do). The launcher restores such an image into a time namespace
//! whose offsets make both clocks continue from the checkpoint's values, or refuses.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// /proc/sys/kernel/random/boot_id of the machine that took the image.
    pub boot_id: String,
    /// Nanoseconds, read in the checkpoint handler while every thread was parked.
    pub monotonic_ns: u64,
    pub boottime_ns: u64,
}

/// The two clocks now, in nanoseconds (raw system calls: async-signal-safe).
pub fn now() -> (u64, u64) {
    (
        crate::sys::clock_ns(libc::CLOCK_MONOTONIC),
        crate::sys::clock_ns(libc::CLOCK_BOOTTIME),
    )
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// How far the clocks of an image would jump backwards if restored now, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    pub monotonic_ns: u64,
    pub boottime_ns: u64,
}

impl Clocks {
    /// `None` when both clocks here are at or past the image's (time merely went on).
    pub fn behind(&self, (mono, boot): (u64, u64)) -> Option<Behind> {
        let b = Behind {
            monotonic_ns: self.monotonic_ns.saturating_sub(mono),
            boottime_ns: self.boottime_ns.saturating_sub(boot),
        };
        (b.monotonic_ns > 0 || b.boottime_ns > 0).then_some(b)
    }

    /// The `/proc/PID/timens_offsets` text that makes both clocks continue from the image's
    /// values, for clocks reading `now` here (offsets are never negative).
    pub fn timens_offsets(&self, (mono, boot): (u64, u64)) -> String {
        let off = |image: u64, here: u64| {
            let d = image.saturating_sub(here);
            format!("{} {}", d / 1_000_000_000, d % 1_000_000_000)
        };
        format!(
            "monotonic {}\nboottime {}\n",
            off(self.monotonic_ns, mono),
            off(self.boottime_ns, boot)
        )
    }
}

/// How far the restored process's clocks have moved on since its checkpoint: the time between
/// the checkpoint and now on this boot's clocks (nothing, where a time namespace makes a clock
/// continue from its checkpoint value). Timers ran on meanwhile, as they do while a process is
/// stopped: the clocks and the timers the process set on them agree (a runtime that keeps its
/// own deadlines on CLOCK_MONOTONIC, as libuv and asyncio do, finds them passed together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Away {
    pub monotonic_ns: u64,
    pub boottime_ns: u64,
}

/// A timer after the time away: how many times it fired meanwhile, and what it has left now
/// (0: a one-shot timer that fired, now disarmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RanOn {
    pub fired: u64,
    pub left_ns: u64,
}

impl Clocks {
    /// What moved on for clocks reading `now` here (in the process's time namespace).
    pub fn away(&self, (mono, boot): (u64, u64)) -> Away {
        Away {
            monotonic_ns: mono.saturating_sub(self.monotonic_ns),
            boottime_ns: boot.saturating_sub(self.boottime_ns),
        }
    }
}

impl Away {
    /// The time away as a timer on `clock` saw it: BOOTTIME's for the clocks that count a
    /// suspended machine's sleep, MONOTONIC's for the others that measure time (a relative
    /// timer on CLOCK_REALTIME runs for a length of time, not to a date), none for CPU-time
    /// clocks (a process away uses no CPU).
    pub fn on(&self, clock: i32) -> u64 {
        match clock {
            libc::CLOCK_BOOTTIME | libc::CLOCK_BOOTTIME_ALARM => self.boottime_ns,
            libc::CLOCK_MONOTONIC
            | libc::CLOCK_REALTIME
            | libc::CLOCK_REALTIME_ALARM
            | libc::CLOCK_TAI => self.monotonic_ns,
            _ => 0,
        }
    }

    /// A timer on `clock` with `left_ns` to go (0: disarmed) and `interval_ns` (0: one-shot)
    /// at the checkpoint, run on over the time away.
    pub fn run(&self, clock: i32, left_ns: u64, interval_ns: u64) -> RanOn {
        let away = self.on(clock);
        if left_ns == 0 || away < left_ns {
            return RanOn {
                fired: 0,
                left_ns: left_ns - away.min(left_ns),
            };
        }
        if interval_ns == 0 {
            return RanOn {
                fired: 1,
                left_ns: 0,
            };
        }
        let past = away - left_ns;
        RanOn {
            fired: 1 + past / interval_ns,
            left_ns: interval_ns - past % interval_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_run_on_over_the_time_away() {
        let c = Clocks {
            boot_id: "x".into(),
            monotonic_ns: 10_000,
            boottime_ns: 50_000,
        };
        let away = c.away((10_700, 60_000));
        assert_eq!(away.on(libc::CLOCK_MONOTONIC), 700);
        assert_eq!(away.on(libc::CLOCK_REALTIME), 700);
        assert_eq!(away.on(libc::CLOCK_BOOTTIME), 10_000);
        assert_eq!(away.on(libc::CLOCK_PROCESS_CPUTIME_ID), 0);
        let m = libc::CLOCK_MONOTONIC;
        let ran = |left, interval| away.run(m, left, interval);
        // Not due yet: what is left shrinks.
        assert_eq!(
            ran(1_000, 0),
            RanOn {
                fired: 0,
                left_ns: 300
            }
        );
        // A one-shot timer that came due fired once and is disarmed.
        assert_eq!(
            ran(700, 0),
            RanOn {
                fired: 1,
                left_ns: 0
            }
        );
        assert_eq!(
            ran(500, 0),
            RanOn {
                fired: 1,
                left_ns: 0
            }
        );
        // A periodic one fired at 500 and 600 and is next due at 800 (100 from now).
        assert_eq!(
            ran(500, 100),
            RanOn {
                fired: 3,
                left_ns: 100
            }
        );
        assert_eq!(
            ran(550, 100),
            RanOn {
                fired: 2,
                left_ns: 50
            }
        );
        // Disarmed stays disarmed; CPU-time clocks did not move.
        assert_eq!(
            ran(0, 100),
            RanOn {
                fired: 0,
                left_ns: 0
            }
        );
        assert_eq!(
            away.run(libc::CLOCK_THREAD_CPUTIME_ID, 5, 0),
            RanOn {
                fired: 0,
                left_ns: 5
            }
        );
        // A clock behind the image's (a jump accepted) moved on by nothing.
        assert_eq!(c.away((9_000, 40_000)), Away::default());
    }

    #[test]
    fn behind_and_offsets() {
        let c = Clocks {
            boot_id: "x".into(),
            monotonic_ns: 10_500_000_000,
            boottime_ns: 20_000_000_000,
        };
        assert_eq!(c.behind((11_000_000_000, 21_000_000_000)), None);
        let b = c.behind((1_000_000_000, 25_000_000_000)).unwrap();
        assert_eq!(b.monotonic_ns, 9_500_000_000);
        assert_eq!(b.boottime_ns, 0);
        assert_eq!(
            c.timens_offsets((1_000_000_000, 25_000_000_000)),
            "monotonic 9 500000000\nboottime 0 0\n"
        );
    }
}
