//! Memory: heap, stack, globals, a large anonymous mapping, a read-only mapping, a privately
//! modified file mapping; after restore also brk growth and fresh allocations. Prints its
//! /proc/self/maps after `maps:` so that the test compares it with the image's manifest.

#[path = "common.rs"]
mod common;

use std::hint::black_box;

static mut GLOBAL: [u64; 4096] = [0; 4096];

fn pattern(i: usize, salt: u64) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> *mut u64 {
    // SAFETY: a fresh mapping chosen by the kernel; nothing else refers to it.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p.cast()
}

fn main() {
    // The heap is never given back (trimmed): what the checkpoint call frees as it returns in the
    // second life would otherwise shrink it before the maps are read, by as much as its own
    // allocations happened to leave free at the top.
    // SAFETY: mallopt with a valid parameter, before any other thread exists.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
    let (_, _, extra) = common::argv();
    let big_len = 96 << 20;
    let heap: Vec<u64> = (0..1 << 20).map(|i| pattern(i, 1)).collect();
    let mut stack = [0u64; 8192];
    for (i, v) in stack.iter_mut().enumerate() {
        *v = pattern(i, 2);
    }
    // SAFETY: single-threaded; the global is only touched here and in the checks below.
    unsafe {
        for (i, g) in (*std::ptr::addr_of_mut!(GLOBAL)).iter_mut().enumerate() {
            *g = pattern(i, 3);
        }
    }
    let big = map(
        big_len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    let ro = map(
        1 << 20,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    // SAFETY: `big` and `ro` are our own fresh mappings of the given lengths.
    unsafe {
        for i in (0..big_len / 8).step_by(512) {
            *big.add(i) = pattern(i, 4);
        }
        for i in 0..(1 << 20) / 8 {
            *ro.add(i) = pattern(i, 5);
        }
        libc::mprotect(ro.cast(), 1 << 20, libc::PROT_READ);
    }
    // A private mapping of a file, one page of it modified (copy-on-write).
    let file_path = extra
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp/zdtm-memory.dat".into());
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file_path, &data).unwrap();
    let f = std::fs::File::open(&file_path).unwrap();
    let fmap = map(
        3 * 4096,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
        std::os::fd::AsRawFd::as_raw_fd(&f),
    );
    drop(f);
    // SAFETY: `fmap` maps three pages of the file privately.
    unsafe { *fmap.add(512) = 0xdead_beef_0000_0001 };

    // Read the maps into memory allocated before the checkpoint, first thing after restore, so
    // that they show the restored layout before anything else allocates.
    let mut maps = vec![0u8; 1 << 20];
    let _args = common::checkpoint();
    let mut maps_len = 0;
    if let Ok(mut f) = std::fs::File::open("/proc/self/maps") {
        use std::io::Read;
        while let Ok(n) = f.read(&mut maps[maps_len..]) {
            if n == 0 {
                break;
            }
            maps_len += n;
        }
    }
    let mut c = common::Checks::default();
    c.check(
        "heap",
        heap.iter().enumerate().all(|(i, v)| *v == pattern(i, 1)),
        "heap differs",
    );
    c.check(
        "stack",
        black_box(&stack)
            .iter()
            .enumerate()
            .all(|(i, v)| *v == pattern(i, 2)),
        "stack differs",
    );
    // SAFETY: see above.
    let (g, b, r, fm, fm2) = unsafe {
        (
            (0..4096).all(|i| GLOBAL[i] == pattern(i, 3)),
            (0..big_len / 8)
                .step_by(512)
                .all(|i| *big.add(i) == pattern(i, 4))
                && *big.add(1) == 0,
            (0..(1 << 20) / 8).all(|i| *ro.add(i) == pattern(i, 5)),
            *fmap.add(512),
            *(fmap.cast::<u8>().add(2 * 4096 + 7)),
        )
    };
    c.check("globals", g, "global array differs");
    c.check("large mmap", b, "anonymous mapping differs");
    c.check("read-only mapping", r, "read-only mapping differs");
    c.check(
        "modified file page",
        fm == 0xdead_beef_0000_0001,
        format!("{fm:#x}"),
    );
    c.check("unmodified file page", fm2 == data[2 * 4096 + 7], fm2);
    // The allocator and the program break keep working.
    // SAFETY: sbrk(0) only reads the break; growing it by 1 MiB gives us fresh memory to use.
    let grown = unsafe {
        let old = libc::sbrk(0);
        let p = libc::sbrk(1 << 20);
        if p == old && p as isize != -1 {
            let q = p.cast::<u8>();
            *q.add((1 << 20) - 1) = 7;
            libc::sbrk(0) as usize - old as usize == 1 << 20 && *q.add((1 << 20) - 1) == 7
        } else {
            false
        }
    };
    c.check("brk growth", grown, "sbrk failed");
    let fresh: Vec<u64> = vec![5; 4 << 20];
    c.check(
        "malloc",
        fresh.iter().all(|v| *v == 5),
        "fresh allocation broken",
    );
    drop(fresh);
    print!("maps:\n{}", String::from_utf8_lossy(&maps[..maps_len]));
    c.finish();
}
