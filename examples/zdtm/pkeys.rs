//! Memory protection keys (x86 PKU), as V8 uses them for its WebAssembly code: keys 1 and 3
//! held (2 taken and given back), a page tagged with key 3 that this thread may not write
//! (PKEY_DISABLE_WRITE in its PKRU), a page tagged with key 1. After restore: each page has its
//! key again, with its contents; the thread's rights are as they were; the next key the kernel
//! gives is 2 (the same keys are held); a new page can be tagged with key 1 (V8's next
//! `pkey_mprotect`, fatal to it when it fails).
//!
//! `PROG IMAGE KEY exec-only`: a page made executable only, which the kernel tags with an
//! execute-only key of its own: refused, naming it (exit 3).
//!
//! Where the CPU or kernel has none, prints `skipped: no protection keys`, checkpoints all the
//! same, and its restored life checks only that.

#[path = "common.rs"]
mod common;

const PKEY_DISABLE_WRITE: u32 = 2;

fn rdpkru() -> u32 {
    let v: u32;
    // SAFETY: rdpkru reads this thread's PKRU; it needs ecx = 0 and writes eax and edx.
    unsafe { std::arch::asm!("rdpkru", in("ecx") 0, out("eax") v, out("edx") _) };
    v
}

fn wrpkru(v: u32) {
    // SAFETY: wrpkru sets this thread's PKRU (eax, with ecx = edx = 0); the rights it gives
    // concern pages of this program's own only.
    unsafe { std::arch::asm!("wrpkru", in("eax") v, in("ecx") 0, in("edx") 0) };
}

fn page(fill: u8) -> *mut u8 {
    // SAFETY: a new anonymous page where the kernel chooses, filled once.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::write_bytes(p.cast::<u8>(), fill, 4096);
        p.cast()
    }
}

fn pkey_alloc() -> i64 {
    // SAFETY: pkey_alloc takes no pointers.
    unsafe { libc::syscall(libc::SYS_pkey_alloc, 0, 0) }
}

fn tag(p: *mut u8, key: i64) -> i64 {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: changes the key of a page of our own.
    unsafe { libc::syscall(libc::SYS_pkey_mprotect, p, 4096, rw, key) }
}

/// The key /proc/self/smaps shows for the mapping at `p`.
fn key_of(p: *mut u8) -> Option<u32> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{:x}-", p as usize);
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
    lines
        .find_map(|l| l.strip_prefix("ProtectionKey:"))
        .and_then(|k| k.trim().parse().ok())
}

fn main() {
    let keys = [pkey_alloc(), pkey_alloc(), pkey_alloc()];
    if keys[0] < 0 {
        println!("skipped: no protection keys");
        common::checkpoint();
        let mut c = common::Checks::default();
        c.check("no protection keys here", pkey_alloc() < 0, "");
        c.finish();
    }
    assert_eq!(keys, [1, 2, 3]);
    let (_, _, extra) = common::argv();
    if extra.first().is_some_and(|a| a == "exec-only") {
        common::refusal(|| {
            let p = page(0xc3);
            // SAFETY: makes a page of our own executable only (it holds `ret` bytes).
            let r = unsafe { libc::mprotect(p.cast(), 4096, libc::PROT_EXEC) };
            assert_eq!(r, 0);
        });
    }
    // SAFETY: gives back a key of our own, tagging nothing.
    unsafe { libc::syscall(libc::SYS_pkey_free, 2) };
    let (locked, open) = (page(0x5a), page(0xa5));
    assert_eq!(tag(locked, 3), 0);
    assert_eq!(tag(open, 1), 0);
    // Key 3 read-only for this thread.
    wrpkru(rdpkru() | PKEY_DISABLE_WRITE << (2 * 3));
    let pkru = rdpkru();

    common::checkpoint();
    let mut c = common::Checks::default();
    let keys = (key_of(locked), key_of(open));
    c.check(
        "each page tagged with its key again",
        keys == (Some(3), Some(1)),
        format!("{keys:?}"),
    );
    // SAFETY: reads of our own pages (key 3 is readable).
    let contents = unsafe { (*locked.add(100), *open.add(100)) };
    c.check(
        "their contents",
        contents == (0x5a, 0xa5),
        format!("{contents:?}"),
    );
    c.check(
        "the thread's rights to each key (PKRU)",
        rdpkru() == pkru,
        format!("{:#x}, was {pkru:#x}", rdpkru()),
    );
    let fresh = page(0);
    let tagged = tag(fresh, 1);
    c.check(
        "a new page can be tagged with a key held",
        tagged == 0 && key_of(fresh) == Some(1),
        tagged,
    );
    let next = pkey_alloc();
    c.check("the same keys held: the next one is 2", next == 2, next);
    c.finish();
}
