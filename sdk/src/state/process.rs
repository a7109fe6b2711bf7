//! Per-process identity and environment: PID, names, cwd, umask, personality.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Thread-group leader's name (`/proc/<pid>/comm`).
    pub comm: String,
    pub cwd: String,
    pub umask: u32,
    pub personality: u32,
    pub dumpable: u32,
    /// Address of the SDK's restore cell, which the restorer fills so that the checkpointing
    /// thread learns it was restored and where its new arguments are.
    pub restore_cell: u64,
}
