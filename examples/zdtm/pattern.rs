//! `zdtm-pattern IMAGE KEY MIB`: fills MIB MiB of anonymous memory with a known pattern and
//! checkpoints. After restore it checks every word and prints `ok pattern`, or `FAIL pattern`
//! with the number of wrong pages. The fault-injection tests kill the checkpoint or the launcher
//! at random moments around it: whatever happens, no restored process may print FAIL. Restored
//! with `-- again PATH`, it checkpoints again at once into PATH before it checks.

#[path = "common.rs"]
mod common;

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn main() {
    let (_, _, extra) = common::argv();
    let mib: usize = extra.first().and_then(|m| m.parse().ok()).unwrap_or(64);
    let words = mib << 17;
    let heap: Vec<u64> = (0..words).map(pattern).collect();
    // Anonymous memory reserved and never written (a runtime's heap reserve): 64 MiB read once
    // (the kernel maps its zero page there) and 64 MiB never touched. Neither is saved, and
    // both read as zeros after restore, also in an image taken again by a restored process.
    let reserve = |len: usize| {
        // SAFETY: a fresh private anonymous mapping, never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as *const u8
    };
    const RESERVE: usize = 64 << 20;
    let (read, untouched) = (reserve(RESERVE), reserve(RESERVE));
    // One page of each written (with a zero): a mapping the process uses, not one it left alone.
    // SAFETY: the first byte of each mapping made above, writable.
    unsafe {
        std::ptr::write_volatile(read as *mut u8, 0);
        std::ptr::write_volatile(untouched as *mut u8, 0);
    }
    let sum_pages = |base: *const u8| {
        (0..RESERVE)
            .step_by(4096)
            // SAFETY: within the mapping made above, readable.
            .map(|off| u64::from(unsafe { std::ptr::read_volatile(base.add(off)) }))
            .sum::<u64>()
    };
    assert_eq!(sum_pages(read), 0);
    // `thaw run IMAGE -- again PATH`: checkpoint again at once into PATH (while the launcher
    // may still be filling the memory lazily), and check the memory in the process restored
    // from that image.
    let args = common::checkpoint();
    if let Some(i) = args.iter().position(|a| a == "again") {
        let (_, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(&args[i + 1]).exit_after_save(true);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        if let Err(e) = cp.save() {
            println!("FAIL checkpoint again: {e}");
            std::process::exit(1);
        }
    }
    let wrong = heap
        .chunks(512)
        .enumerate()
        .filter(|(p, page)| {
            page.iter()
                .enumerate()
                .any(|(i, &w)| w != pattern(p * 512 + i))
        })
        .count();
    let mut c = common::Checks::default();
    c.check("pattern", wrong == 0, format!("{wrong} pages wrong"));
    let zeros = sum_pages(read) + sum_pages(untouched);
    c.check("reserve reads as zeros", zeros == 0, zeros);
    c.finish();
}
