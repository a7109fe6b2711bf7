//! Lazily filled memory under a process that keeps changing its memory map: right after restore,
//! while the launcher is still filling a 128 MiB anonymous mapping, the program forks (the child
//! checks its own copy), moves part of the mapping with mremap, drops part with MADV_DONTNEED,
//! replaces part with a fresh mapping, reads the rest from two threads and through a pipe (the
//! kernel reading the memory). Every byte must be what it was, or zero where the program made it
//! so.

#[path = "common.rs"]
mod common;

const MIB: usize = 1 << 20;
const LEN: usize = 128 * MIB;
const PAGE: usize = 4096;

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a
}

/// Whether the pages of `[from, to)` (byte offsets of the original mapping, now at `base`) hold
/// the pattern, one word per page plus the words around it.
fn holds_pattern(base: *const u64, from: usize, to: usize) -> bool {
    (from / PAGE..to / PAGE).all(|p| {
        let i = p * PAGE / 8;
        // SAFETY: `base` maps at least `to` bytes; `i` and `i + 1` are inside page `p`.
        unsafe { *base.add(i - from / 8) == pattern(i) && *base.add(i + 1 - from / 8) == 0 }
    })
}

fn all_zero(base: *const u64, len: usize) -> bool {
    // SAFETY: `base` maps at least `len` bytes.
    (0..len / 8).all(|i| unsafe { *base.add(i) } == 0)
}

fn main() {
    // SAFETY: a fresh private anonymous mapping chosen by the kernel.
    let big = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(big, libc::MAP_FAILED);
    let big = big.cast::<u64>();
    for p in 0..LEN / PAGE {
        // SAFETY: inside the mapping.
        unsafe { *big.add(p * PAGE / 8) = pattern(p * PAGE / 8) };
    }
    let caps = common::thread_caps();
    common::checkpoint();

    // Regions of the mapping, as byte offsets.
    let (moved, dropped, replaced, rest) = (
        0..8 * MIB,
        8 * MIB..16 * MIB,
        16 * MIB..24 * MIB,
        24 * MIB..LEN,
    );
    let at = |off: usize| big.cast::<u8>().wrapping_add(off).cast::<libc::c_void>();

    // SAFETY: fork in a single-threaded program; the child only reads memory and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let ok = holds_pattern(big, moved.start, moved.end)
            && holds_pattern(at(rest.start).cast(), rest.start, rest.end);
        // SAFETY: leaving the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: the range is inside our mapping; nothing refers to it across the move.
    let new = unsafe {
        libc::mremap(
            at(moved.start),
            moved.len(),
            2 * moved.len(),
            libc::MREMAP_MAYMOVE,
        )
    };
    // SAFETY: the range is inside our mapping; dropping its pages only makes them read as zero.
    // SAFETY: the range is inside our mapping; dropping its pages only makes them read as zero.
    let dontneed = unsafe { libc::madvise(at(dropped.start), dropped.len(), libc::MADV_DONTNEED) };
    // SAFETY: the range is inside our mapping and replaced in place; nothing else refers to it.
    let fresh = unsafe {
        libc::munmap(at(replaced.start), replaced.len());
        libc::mmap(
            at(replaced.start),
            replaced.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    // Zero where the program made it so, checked first, while the launcher is still filling.
    let zero_moved = new != libc::MAP_FAILED
        && all_zero(
            new.cast::<u8>().wrapping_add(moved.len()).cast(),
            moved.len(),
        );
    let zero_dropped = dontneed == 0 && all_zero(at(dropped.start).cast(), dropped.len());
    let zero_fresh =
        fresh == at(replaced.start) && all_zero(at(replaced.start).cast(), replaced.len());
    let half = (rest.start + rest.len() / 2) & !(PAGE - 1);
    let base = at(rest.start) as usize;
    let other = std::thread::spawn(move || holds_pattern(base as *const u64, rest.start, half));

    // The kernel reads lazily filled memory too: 64 KiB from the second half through a pipe.
    let mut fds = [0i32; 2];
    // SAFETY: a pipe of our own; `src` is 64 KiB inside the mapping, `back` is 64 KiB.
    let via_pipe = unsafe {
        libc::pipe(fds.as_mut_ptr());
        let src = at(LEN - 64 * 1024);
        let w = libc::write(fds[1], src, 64 * 1024);
        let mut back = vec![0u8; 64 * 1024];
        let r = libc::read(fds[0], back.as_mut_ptr().cast(), back.len());
        w == 64 * 1024 && r == w && back == std::slice::from_raw_parts(src.cast::<u8>(), 64 * 1024)
    };

    let mut c = common::Checks::default();
    let mine = holds_pattern(at(half).cast(), half, rest.end);
    c.check(
        "read by two threads",
        other.join().unwrap() && mine,
        "pattern differs",
    );
    c.check("read by the kernel", via_pipe, "pipe round trip differs");
    // A launcher with file capabilities holds them while it restores; none may remain.
    let caps_now = common::thread_caps();
    c.check(
        "capabilities as at the checkpoint",
        caps_now == caps,
        format!("{caps_now:?} != {caps:?}"),
    );
    c.check(
        "moved by mremap",
        zero_moved && holds_pattern(new.cast(), moved.start, moved.end),
        "moved pages differ or the new part is not zero",
    );
    c.check("dropped by MADV_DONTNEED", zero_dropped, "not zero");
    c.check("replaced by a new mapping", zero_fresh, "not zero");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    c.check(
        "forked child's copy",
        waited == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        format!("child status {status:#x}"),
    );
    c.finish();
}
