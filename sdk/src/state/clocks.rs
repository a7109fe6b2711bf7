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

#[cfg(test)]
mod tests {
    use super::*;

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
