//! File descriptors.

use serde::{Deserialize, Serialize};

use super::PayloadRef;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    pub fd: i32,
    /// open(2) status flags (O_ACCMODE, O_APPEND, O_NONBLOCK, …).
    pub flags: u32,
    pub cloexec: bool,
    pub kind: FdKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// stdin/stdout/stderr: replaced by the launcher's own at restore.
    #[default]
    Stdio,
    /// A regular file, reopened at the same offset if it is still the same file.
    Regular {
        path: String,
        pos: u64,
        dev: u64,
        ino: u64,
    },
    Directory {
        path: String,
        dev: u64,
        ino: u64,
    },
    /// One end of a pipe whose both ends are in the process; `id` pairs the ends and the read end
    /// carries the bytes that were buffered.
    Pipe {
        id: u64,
        write_end: bool,
        buffered: Option<PayloadRef>,
    },
}
