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
