//! The restore plan: the list of steps the launcher's restorer executes inside the new process,
//! and the arguments the restored process receives.
//!
//! Each state module adds its own steps (its restore side next to its dump side); the launcher
//! adds the steps that concern itself (unmapping its own memory, moving the vDSO) and runs the
//! list with a position-independent routine that needs no libc, allocator or relocations.
//! A step is 64 bytes: `op`, a system call number and six arguments. Data the steps point to
//! (paths, structs) lives in an arena at a fixed address inside the restorer region.

use serde::{Deserialize, Serialize};

/// Run a system call; a result in -4095..=-1 fails the restore at this step.
pub const OP_SYSCALL: u64 = 1;
/// Run a system call and ignore its result.
pub const OP_SYSCALL_ANY: u64 = 2;
/// Store the 64-bit word `args[1]` at address `args[0]`.
pub const OP_STORE: u64 = 3;
/// `pread64(args[0], args[1], args[2], args[3])` until all `args[2]` bytes are read.
pub const OP_PREAD: u64 = 4;
/// Set the stack pointer to `args[0]` and call `rt_sigreturn`: the last step of a thread.
pub const OP_SIGRETURN: u64 = 5;

/// One step, laid out as the restorer reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub op: u64,
    pub nr: u64,
    pub args: [u64; 6],
}

/// What the launcher passes to the restored process (postcard, in the restorer region).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreArgs {
    /// The arguments given after `--` to `thaw run`.
    pub args: Vec<Vec<u8>>,
    /// The launcher's environment, as `KEY=VALUE` byte strings.
    pub env: Vec<Vec<u8>>,
}

/// A list of steps under construction, with the arena their pointers refer to.
#[derive(Debug)]
pub struct Plan {
    arena_base: u64,
    arena: Vec<u8>,
    steps: Vec<Step>,
    labels: Vec<String>,
}

impl Plan {
    /// A plan whose arena will be placed at `arena_base`.
    pub fn new(arena_base: u64) -> Self {
        Plan {
            arena_base,
            arena: Vec::new(),
            steps: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn push(&mut self, label: String, op: u64, nr: i64, args: [u64; 6]) {
        self.steps.push(Step {
            op,
            nr: nr as u64,
            args,
        });
        self.labels.push(label);
    }

    /// A system call that must succeed.
    pub fn syscall(&mut self, label: impl Into<String>, nr: i64, args: [u64; 6]) {
        self.push(label.into(), OP_SYSCALL, nr, args);
    }

    /// A system call whose failure does not matter.
    pub fn syscall_any(&mut self, label: impl Into<String>, nr: i64, args: [u64; 6]) {
        self.push(label.into(), OP_SYSCALL_ANY, nr, args);
    }

    /// Store a word in the new process's memory.
    pub fn store(&mut self, label: impl Into<String>, addr: u64, value: u64) {
        self.push(label.into(), OP_STORE, 0, [addr, value, 0, 0, 0, 0]);
    }

    /// Read `len` bytes at file offset `off` of `fd` to `addr`.
    pub fn pread(&mut self, label: impl Into<String>, fd: i32, addr: u64, len: u64, off: u64) {
        self.push(
            label.into(),
            OP_PREAD,
            libc::SYS_pread64,
            [fd as u64, addr, len, off, 0, 0],
        );
    }

    /// Resume a thread from the signal frame whose ucontext is at `frame`.
    pub fn sigreturn(&mut self, label: impl Into<String>, frame: u64) {
        self.push(
            label.into(),
            OP_SIGRETURN,
            libc::SYS_rt_sigreturn,
            [frame, 0, 0, 0, 0, 0],
        );
    }

    /// Copies `data` into the arena (16-byte aligned) and returns its address in the new process.
    pub fn data(&mut self, data: &[u8]) -> u64 {
        let off = self.arena.len().next_multiple_of(16);
        self.arena.resize(off, 0);
        self.arena.extend_from_slice(data);
        self.arena_base + off as u64
    }

    /// A NUL-terminated copy of `s` in the arena.
    pub fn cstr(&mut self, s: &str) -> u64 {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.data(&v)
    }

    /// A `#[repr(C)]` value of plain words copied into the arena.
    pub fn words(&mut self, words: &[u64]) -> u64 {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.data(&bytes)
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn arena(&self) -> &[u8] {
        &self.arena
    }

    /// What step `i` does, for error messages.
    pub fn label(&self, i: usize) -> &str {
        self.labels.get(i).map_or("(unknown step)", String::as_str)
    }
}
