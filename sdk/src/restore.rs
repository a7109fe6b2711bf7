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
/// Set the stack pointer to `args[0]` and call `rt_sigreturn`: the last step of a thread. If
/// `args[1]` is not 0, first decrement the 32-bit counter there and wake its waiters.
pub const OP_SIGRETURN: u64 = 5;
/// Create a thread with `clone3(args[0], args[1])`; it runs steps `args[2]..args[3]`.
pub const OP_CLONE_THREAD: u64 = 6;
/// Decrement the 32-bit counter at `args[0]` and wake its waiters.
pub const OP_DEC_WAKE: u64 = 7;
/// Wait (futex) until the 32-bit word at `args[0]` is zero.
pub const OP_WAIT_ZERO: u64 = 8;
/// Wait (futex) until the 32-bit word at `args[0]` is not zero.
pub const OP_WAIT_NONZERO: u64 = 9;
/// Run a system call of at most five arguments that returns a new descriptor (failing the restore
/// on an error), and move that descriptor to number `args[5]` (close-on-exec).
pub const OP_SYSCALL_FD: u64 = 10;

/// Write `args[2]` bytes at `args[1]` to the file at path `args[0]` (opened write-only, closed
/// after): procfs knobs of the new process such as `/proc/self/oom_score_adj`.
pub const OP_WRITE_FILE: u64 = 11;

/// A template's loop (`thaw serve`): receive one request on socket `args[0]` with the `struct
/// msghdr` at `args[1]` (its control length reset to `args[5]` first), store the byte count at
/// `args[4]`, enter the PID namespace of the first descriptor received (number `args[3]`), and
/// fork with `clone3(args[2], 88)`. The new process goes on with the next step; the template
/// writes its PID (or -errno) back on the socket, closes every descriptor from `args[3]` up and
/// waits for the next request. End of file on the socket ends the template.
pub const OP_SERVE: u64 = 12;

/// Receive one message with `recvmsg(args[0], args[1], 0)` and store its byte count at
/// `args[2]`; end of file fails the step. An instance forked ahead of its caller waits here for
/// its arguments and descriptors.
pub const OP_RECV: u64 = 13;
/// The 32-bit word at `args[0]` must hold `args[1]`; otherwise the restore fails at this step
/// (EPROTO): what a step left in memory (a stand-in's exit status) is checked.
pub const OP_EXPECT: u64 = 14;

/// Load the register state components `args[1]` with `xrstor` from the XSAVE area at `args[0]`
/// (64-byte aligned, zeros but for its header, which says it holds them): the thread's first
/// use of them, on which the kernel gives it room for them (AMX tile data: it does so on first use
/// only), so that its `rt_sigreturn` restores its whole saved register state rather than the
/// legacy SSE part alone. The process must have the permission (arch_prctl
/// ARCH_REQ_XCOMP_PERM) by then, or the thread dies of SIGILL.
pub const OP_XSTATE_FIRST_USE: u64 = 15;

/// Run a system call (failing the restore on an error) whose first argument is the 64-bit word
/// at address `args[0]`, which an earlier step wrote (a context `io_setup` made), the others
/// `args[1..6]`.
pub const OP_SYSCALL_LOADED: u64 = 16;

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
    #[serde(with = "byte_strings")]
    pub args: Vec<Vec<u8>>,
    /// The launcher's environment, as `KEY=VALUE` byte strings.
    #[serde(with = "byte_strings")]
    pub env: Vec<Vec<u8>>,
}

/// Lists of byte strings (arguments, environments) as lists of byte strings, not of numbers:
/// postcard writes the same bytes either way (a length, then the bytes), but serde's default
/// for `Vec<u8>` encodes and decodes them one byte at a time, and a caller's environment of a
/// few KiB crosses three such codings on `thaw serve`'s way to an instance.
pub(crate) mod byte_strings {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, Serializer};

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Buf(Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Buf, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Buf, A::Error> {
                    let mut v = Vec::new();
                    while let Some(b) = a.next_element()? {
                        v.push(b);
                    }
                    Ok(Buf(v))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(&Bytes(b))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        struct L;
        impl<'de> Visitor<'de> for L {
            type Value = Vec<Vec<u8>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of byte strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                // The length is the sender's word: room is made as the strings come.
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
                while let Some(Buf(b)) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(L)
    }
}

/// A list of steps under construction, with the arena their pointers refer to.
///
/// Steps go to the current list: list 0 is the first thread's (the one the launcher creates);
/// [`Plan::new_list`] starts the list of another thread, created by [`Plan::clone_thread`].
#[derive(Debug)]
pub struct Plan {
    arena_base: u64,
    arena: Vec<u8>,
    lists: Vec<(Vec<Step>, Vec<String>)>,
    current: usize,
}

impl Plan {
    /// A plan whose arena will be placed at `arena_base`.
    pub fn new(arena_base: u64) -> Self {
        Plan {
            arena_base,
            arena: Vec::new(),
            lists: vec![(Vec::new(), Vec::new())],
            current: 0,
        }
    }

    fn push(&mut self, label: String, op: u64, nr: i64, args: [u64; 6]) {
        let (steps, labels) = &mut self.lists[self.current];
        steps.push(Step {
            op,
            nr: nr as u64,
            args,
        });
        labels.push(label);
    }

    /// Starts a new step list (another thread's) and makes it current; returns its number.
    pub fn new_list(&mut self) -> usize {
        self.lists.push((Vec::new(), Vec::new()));
        self.current = self.lists.len() - 1;
        self.current
    }

    /// The current list's number.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Makes list `n` current.
    pub fn select(&mut self, n: usize) {
        self.current = n;
    }

    /// Creates a thread (`clone3` with the `clone_args` at `args_addr`) that runs list `list`.
    pub fn clone_thread(&mut self, label: impl Into<String>, args_addr: u64, list: usize) {
        self.push(
            label.into(),
            OP_CLONE_THREAD,
            libc::SYS_clone3,
            [args_addr, 88, list as u64, 0, 0, 0],
        );
    }

    /// Decrements a 32-bit counter and wakes its waiters.
    pub fn dec_wake(&mut self, label: impl Into<String>, addr: u64) {
        self.push(
            label.into(),
            OP_DEC_WAKE,
            libc::SYS_futex,
            [addr, 0, 0, 0, 0, 0],
        );
    }

    /// Waits until a 32-bit word is zero.
    pub fn wait_zero(&mut self, label: impl Into<String>, addr: u64) {
        self.push(
            label.into(),
            OP_WAIT_ZERO,
            libc::SYS_futex,
            [addr, 0, 0, 0, 0, 0],
        );
    }

    /// Waits until a 32-bit word is not zero.
    pub fn wait_nonzero(&mut self, label: impl Into<String>, addr: u64) {
        self.push(
            label.into(),
            OP_WAIT_NONZERO,
            libc::SYS_futex,
            [addr, 0, 0, 0, 0, 0],
        );
    }

    /// A system call that must succeed.
    pub fn syscall(&mut self, label: impl Into<String>, nr: i64, args: [u64; 6]) {
        self.push(label.into(), OP_SYSCALL, nr, args);
    }

    /// A system call that must succeed whose first argument is the word an earlier step
    /// stored at `first_at` (see [`OP_SYSCALL_LOADED`]).
    pub fn syscall_loaded(
        &mut self,
        label: impl Into<String>,
        nr: i64,
        first_at: u64,
        rest: [u64; 5],
    ) {
        let [b, c, d, e, f] = rest;
        self.push(
            label.into(),
            OP_SYSCALL_LOADED,
            nr,
            [first_at, b, c, d, e, f],
        );
    }

    /// A system call whose failure does not matter.
    pub fn syscall_any(&mut self, label: impl Into<String>, nr: i64, args: [u64; 6]) {
        self.push(label.into(), OP_SYSCALL_ANY, nr, args);
    }

    /// A system call that creates a descriptor, which then gets number `fd`.
    pub fn syscall_fd(&mut self, label: impl Into<String>, nr: i64, args: [u64; 5], fd: i32) {
        let [a, b, c, d, e] = args;
        self.push(label.into(), OP_SYSCALL_FD, nr, [a, b, c, d, e, fd as u64]);
    }

    /// After [`Self::syscall_fd`] (which leaves `fd` close-on-exec): clears the flag where the
    /// process's descriptor did not have it.
    pub fn cloexec_as(&mut self, fd: i32, cloexec: bool) {
        if !cloexec {
            self.syscall(
                format!("fd {fd}: clear close-on-exec"),
                libc::SYS_fcntl,
                [fd as u64, libc::F_SETFD as u64, 0, 0, 0, 0],
            );
        }
    }

    /// Writes `bytes` to the file at `path` (a procfs knob of the new process).
    pub fn write_file(&mut self, label: impl Into<String>, path: &str, bytes: &[u8]) {
        let path = self.cstr(path);
        let data = self.data(bytes);
        self.push(
            label.into(),
            OP_WRITE_FILE,
            0,
            [path, data, bytes.len() as u64, 0, 0, 0],
        );
    }

    /// The template's request loop (see [`OP_SERVE`]); what follows runs in each instance.
    pub fn serve(&mut self, label: impl Into<String>, args: [u64; 6]) {
        self.push(label.into(), OP_SERVE, 0, args);
    }

    /// Wait for one message on a socket (see [`OP_RECV`]).
    pub fn recv(&mut self, label: impl Into<String>, sock: i32, msghdr: u64, len_out: u64) {
        self.push(
            label.into(),
            OP_RECV,
            0,
            [sock as u64, msghdr, len_out, 0, 0, 0],
        );
    }

    /// Fails the restore unless the 32-bit word at `addr` holds `value` (see [`OP_EXPECT`]).
    pub fn expect(&mut self, label: impl Into<String>, addr: u64, value: u32) {
        self.push(
            label.into(),
            OP_EXPECT,
            0,
            [addr, u64::from(value), 0, 0, 0, 0],
        );
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

    /// Resume a thread from the signal frame whose ucontext is at `frame`; with `counter`, first
    /// count the thread out of the restorer region.
    pub fn sigreturn(&mut self, label: impl Into<String>, frame: u64, counter: Option<u64>) {
        self.push(
            label.into(),
            OP_SIGRETURN,
            libc::SYS_rt_sigreturn,
            [frame, counter.unwrap_or(0), 0, 0, 0, 0],
        );
    }

    /// Gives the running thread room for AMX tile state (see [`OP_XSTATE_FIRST_USE`]).
    pub fn xstate_first_use(&mut self, label: impl Into<String>, components: u64) {
        // An XSAVE area in standard form that holds the components, zeros: only an xrstor that
        // loads a component from memory counts as its use (one that initialises it does not).
        let end = (0..64)
            .filter(|b| components >> b & 1 == 1)
            .map(|b| {
                let (size, offset, ..) = crate::sys::cpuid(0xd, b);
                offset as usize + size as usize
            })
            .max()
            .unwrap_or(0)
            .max(512 + 64);
        let mut xsave = vec![0u8; end + 64];
        xsave[512..520].copy_from_slice(&components.to_ne_bytes());
        let area = self.data_aligned(&xsave, 64);
        self.push(
            label.into(),
            OP_XSTATE_FIRST_USE,
            0,
            [area, components, 0, 0, 0, 0],
        );
    }

    /// Copies `data` into the arena (16-byte aligned) and returns its address in the new process.
    pub fn data(&mut self, data: &[u8]) -> u64 {
        self.data_aligned(data, 16)
    }

    /// Copies `data` into the arena at an address that is a multiple of `align` (a power of
    /// two) and returns that address.
    pub fn data_aligned(&mut self, data: &[u8], align: u64) -> u64 {
        let at = (self.arena_base + self.arena.len() as u64).next_multiple_of(align);
        let off = (at - self.arena_base) as usize;
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

    /// All lists, one after the other, with every thread-creating step pointing at its list's
    /// index range.
    pub fn steps(&self) -> Vec<Step> {
        let mut starts = Vec::new();
        let mut at = 0u64;
        for (steps, _) in &self.lists {
            starts.push(at);
            at += steps.len() as u64;
        }
        let mut out = Vec::with_capacity(at as usize);
        for (steps, _) in &self.lists {
            for s in steps {
                let mut s = *s;
                if s.op == OP_CLONE_THREAD {
                    let list = s.args[2] as usize;
                    s.args[2] = starts[list];
                    s.args[3] = starts[list] + self.lists[list].0.len() as u64;
                }
                out.push(s);
            }
        }
        out
    }

    /// Number of steps in list 0 (the first thread's).
    pub fn first_len(&self) -> usize {
        self.lists[0].0.len()
    }

    pub fn arena(&self) -> &[u8] {
        &self.arena
    }

    /// What step `i` (an index into [`Plan::steps`]) does, for error messages.
    pub fn label(&self, mut i: usize) -> &str {
        for (_, labels) in &self.lists {
            if i < labels.len() {
                return &labels[i];
            }
            i -= labels.len();
        }
        "(unknown step)"
    }
}

#[cfg(test)]
mod tests {
    use super::RestoreArgs;

    /// The same lists with serde's default coding of `Vec<u8>`.
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Plain {
        args: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
    }

    #[test]
    fn byte_strings_keep_postcards_bytes_and_round_trip() {
        let big: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let ra = RestoreArgs {
            args: vec![b"a".to_vec(), Vec::new(), big.clone()],
            env: vec![b"K=V".to_vec(), big],
        };
        let ours = postcard::to_allocvec(&ra).unwrap();
        let plain = postcard::to_allocvec(&Plain {
            args: ra.args.clone(),
            env: ra.env.clone(),
        })
        .unwrap();
        assert_eq!(ours, plain);
        assert_eq!(postcard::from_bytes::<RestoreArgs>(&plain).unwrap(), ra);
        // A truncated coding is an error, not a shorter list.
        assert!(postcard::from_bytes::<RestoreArgs>(&ours[..ours.len() - 1]).is_err());
    }
}
