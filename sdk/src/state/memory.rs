//! Virtual memory areas and where their contents are in the payload.

use serde::{Deserialize, Serialize};

use super::PayloadRef;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC.
    pub prot: u32,
    /// MAP_PRIVATE or MAP_SHARED, plus MAP_GROWSDOWN where the VMA grows down.
    pub map_flags: u32,
    /// Advice to re-apply (MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, …), one bit per
    /// `VmFlag` this crate knows, see [`VmaAdvice`].
    pub advice: u32,
    pub backing: Backing,
    /// The saved pages, as runs of consecutive pages in address order. Pages of the region not
    /// listed are zero (anonymous memory) or the file's contents (file mappings); kernel special
    /// mappings have none.
    pub pages: Vec<PageRun>,
}

/// Consecutive saved pages of a VMA: `payload.len` bytes at `addr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub addr: u64,
    pub payload: PayloadRef,
}

/// Bits of [`Vma::advice`].
#[derive(Debug)]
pub struct VmaAdvice;

impl VmaAdvice {
    pub const DONTFORK: u32 = 1;
    pub const WIPEONFORK: u32 = 2;
    pub const DONTDUMP: u32 = 4;
    pub const HUGEPAGE: u32 = 8;
    pub const NOHUGEPAGE: u32 = 16;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backing {
    #[default]
    Anonymous,
    /// The program break area ([heap]).
    Heap,
    /// The main thread's stack ([stack]).
    Stack,
    /// A file mapping; the identity lets the restorer refuse a file that changed.
    File {
        path: String,
        offset: u64,
        dev: u64,
        ino: u64,
    },
    /// A kernel special mapping ([vdso], [vvar], [vvar_vclock], [vsyscall]) moved, not copied.
    Special { name: String },
}
