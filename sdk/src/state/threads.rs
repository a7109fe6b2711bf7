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
