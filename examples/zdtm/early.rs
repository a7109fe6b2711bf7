//! A working set split at the first response: after restore the program reads region A, forks a
//! child that reads region C, counts how many pages of region B are in memory already and answers
//! (its first output), then reads B. A restore that replays a recorded working set brings A and C
//! in at once, and B only once the answer is out (`tests/lazy.rs` turns off the launcher's other
//! reason to go on, a quiet process, to see that); the child is filled meanwhile as it faults.
//! Restored with `-- --answer-when-in`, it waits for the whole mapping to be in before any of that.

#[path = "common.rs"]
mod common;

const MIB: usize = 1 << 20;
const A: usize = 8 * MIB;
/// Region C, read by the child: from A to B.
const B: usize = 16 * MIB;
const LEN: usize = 48 * MIB;
const PAGE: usize = 4096;
/// Where the mapping is (tests/lazy.rs knows it too).
const BASE: usize = 0x6000_0000_0000;

fn word(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn main() {
    // SAFETY: a fresh private anonymous mapping at a fixed address with nothing around it (so
    // that the test finds its regions in the image: no other mapping merges with it).
    let base = unsafe {
        libc::mmap(
            BASE as *mut libc::c_void,
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(base as usize, BASE);
    let base = base.cast::<u64>();
    for p in 0..LEN / PAGE {
        // SAFETY: inside the mapping.
        unsafe { *base.add(p * PAGE / 8) = word(p) };
    }
    let args = common::checkpoint();

    let holds = |from: usize, to: usize| {
        (from / PAGE..to / PAGE).all(|p| {
            // SAFETY: inside the mapping.
            unsafe { *base.add(p * PAGE / 8) == word(p) }
        })
    };
    // `-- --answer-when-in`: the answer waits until the whole mapping is in memory, which a
    // first restore's background filling brings about.
    if args.iter().any(|a| a == "--answer-when-in") {
        let mut resident = vec![0u8; LEN / PAGE];
        loop {
            // SAFETY: the whole mapping; one byte per page of it.
            unsafe { libc::mincore(base.cast(), LEN, resident.as_mut_ptr()) };
            if resident.iter().all(|&v| v & 1 != 0) {
                break;
            }
            std::thread::yield_now();
        }
    }
    let a = holds(0, A);
    // SAFETY: fork in a single-threaded program; the child only reads memory and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: leaving the child without running the parent's exit handlers.
        unsafe { libc::_exit(if holds(A, B) { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) } == child;
    let mut resident = vec![0u8; (LEN - B) / PAGE];
    // SAFETY: B is inside the mapping; one byte per page of it.
    let r = unsafe { libc::mincore(base.add(B / 8).cast(), LEN - B, resident.as_mut_ptr()) };
    let resident = resident.iter().filter(|&&v| v & 1 != 0).count();
    println!("answer: {resident} pages of B in before it (mincore: {r})");
    let b = holds(B, LEN);
    let mut c = common::Checks::default();
    c.check("read before the answer", a, "pattern differs");
    c.check(
        "read by a child before the answer",
        waited && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        format!("child status {status:#x}"),
    );
    c.check("read after the answer", b, "pattern differs");
    c.finish();
}
