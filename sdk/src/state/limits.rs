//! Resource limits.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// RLIMIT_* number.
    pub resource: u32,
    /// Soft limit; `u64::MAX` is RLIM_INFINITY.
    pub cur: u64,
    /// Hard limit; `u64::MAX` is RLIM_INFINITY.
    pub max: u64,
}

use crate::restore::Plan;

/// Number of resource limits (RLIMIT_NLIMITS).
pub const RLIMIT_COUNT: u32 = 16;

impl Rlimit {
    /// The limits the checkpoint handler recorded.
    pub(crate) fn dump(c: &crate::capture::Capture) -> Vec<Rlimit> {
        use std::sync::atomic::Ordering;
        c.limits
            .iter()
            .enumerate()
            .map(|(r, slot)| Rlimit {
                resource: r as u32,
                cur: slot[0].load(Ordering::Relaxed),
                max: slot[1].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The limits of the calling process.
    pub fn current() -> std::io::Result<Vec<Rlimit>> {
        (0..RLIMIT_COUNT)
            .map(|resource| {
                let (cur, max) = crate::sys::prlimit(0, resource)?;
                Ok(Rlimit { resource, cur, max })
            })
            .collect()
    }

    /// The limit's name, as `ulimit` and prlimit(1) know it.
    pub fn name(&self) -> String {
        const NAMES: [&str; RLIMIT_COUNT as usize] = [
            "RLIMIT_CPU",
            "RLIMIT_FSIZE",
            "RLIMIT_DATA",
            "RLIMIT_STACK",
            "RLIMIT_CORE",
            "RLIMIT_RSS",
            "RLIMIT_NPROC",
            "RLIMIT_NOFILE",
            "RLIMIT_MEMLOCK",
            "RLIMIT_AS",
            "RLIMIT_LOCKS",
            "RLIMIT_SIGPENDING",
            "RLIMIT_MSGQUEUE",
            "RLIMIT_NICE",
            "RLIMIT_RTPRIO",
            "RLIMIT_RTTIME",
        ];
        NAMES
            .get(self.resource as usize)
            .map_or_else(|| format!("rlimit {}", self.resource), |n| n.to_string())
    }

    pub fn plan_restore(&self, plan: &mut Plan) {
        let new = plan.words(&[self.cur, self.max]);
        plan.syscall(
            format!(
                "setrlimit {} to {}/{}",
                self.name(),
                show(self.cur),
                show(self.max)
            ),
            libc::SYS_prlimit64,
            [0, u64::from(self.resource), new, 0, 0, 0],
        );
    }
}

fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}
