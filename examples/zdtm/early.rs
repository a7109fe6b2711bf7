//! A working set split at the first response: after restore the program reads region A, counts
//! how many pages of region B are in memory already and answers (its first output), then reads
//! B. A restore that replays a recorded working set brings A in at once, and B only once the
//! answer is out (`tests/lazy.rs` turns off the launcher's other reason to go on, a quiet
//! process, to see that).

#[path = "common.rs"]
mod common;

const MIB: usize = 1 << 20;
const A: usize = 8 * MIB;
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
    common::checkpoint();

    let holds = |from: usize, to: usize| {
        (from / PAGE..to / PAGE).all(|p| {
            // SAFETY: inside the mapping.
            unsafe { *base.add(p * PAGE / 8) == word(p) }
        })
    };
    let a = holds(0, A);
    let mut resident = vec![0u8; (LEN - A) / PAGE];
    // SAFETY: B is inside the mapping; one byte per page of it.
    let r = unsafe { libc::mincore(base.add(A / 8).cast(), LEN - A, resident.as_mut_ptr()) };
    let resident = resident.iter().filter(|&&v| v & 1 != 0).count();
    println!("answer: {resident} pages of B in before it (mincore: {r})");
    let b = holds(A, LEN);
    let mut c = common::Checks::default();
    c.check("read before the answer", a, "pattern differs");
    c.check("read after the answer", b, "pattern differs");
    c.finish();
}
