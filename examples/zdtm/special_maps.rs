//! Mappings of special files.
//!
//! `zdtm-special-maps IMAGE KEY`: `/dev/zero` mapped privately (anonymous memory, though /proc
//! names the file), written: after restore it holds what was written, is private (a write is
//! not seen through a second such mapping) and `MADV_DONTNEED` gives zeros back.
//!
//! Refused, by name: `hugetlb-mapped` (a memfd made with `MFD_HUGETLB`, mapped shared, as a JVM
//! with `-XX:+UseLargePages -XX:+UseZGC` maps its heap), `hugetlb-held` (such a memfd held open,
//! not mapped), `hugetlb-anon` (`MAP_HUGETLB` anonymous memory), `device PATH` (a block device
//! mapped shared), `hugetlbfs-deleted DIR` (a file of the hugetlbfs mounted at DIR, removed
//! while open). The huge page mappings use `MAP_NORESERVE` and are never touched, so that
//! the pool needs no pages.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;

const LEN: usize = 64 << 10;

fn map(fd: i32, len: usize, prot: i32, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping where the kernel chooses; failure checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn hugetlb_memfd() -> std::os::fd::OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"huge".as_ptr(), libc::MFD_HUGETLB) };
    assert!(
        fd >= 0,
        "memfd_create(MFD_HUGETLB): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor of ours.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sizing our own memfd to one huge page.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 2 << 20) }, 0);
    fd
}

fn main() {
    let (_, _, extra) = common::argv();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    match extra.first().map(String::as_str) {
        Some("hugetlb-mapped") => common::refusal(|| {
            let fd = hugetlb_memfd();
            map(
                fd.as_raw_fd(),
                2 << 20,
                rw,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
            );
        }),
        Some("hugetlb-held") => common::refusal(|| std::mem::forget(hugetlb_memfd())),
        Some("hugetlb-anon") => common::refusal(|| {
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
            map(-1, 2 << 20, rw, flags | libc::MAP_NORESERVE);
        }),
        Some("hugetlbfs-deleted") => common::refusal(|| {
            // A file of a hugetlbfs mount at DIR, removed while open.
            let path = std::path::Path::new(&extra[1]).join("huge");
            let f = std::fs::File::create(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            std::mem::forget(f);
        }),
        Some("device") => common::refusal(|| {
            let dev = std::fs::File::open(&extra[1]).unwrap();
            map(dev.as_raw_fd(), 4096, libc::PROT_READ, libc::MAP_SHARED);
        }),
        Some(other) => panic!("unknown mode {other}"),
        None => {}
    }
    let zero = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/zero")
        .unwrap();
    let p = map(zero.as_raw_fd(), LEN, rw, libc::MAP_PRIVATE);
    drop(zero);
    // SAFETY: LEN bytes mapped read-write above, used only through this slice.
    let mem = unsafe { std::slice::from_raw_parts_mut(p, LEN) };
    for (i, b) in mem.iter_mut().enumerate().step_by(97) {
        *b = (i % 251) as u8 + 1;
    }
    let _restored = common::restored();
    let mut c = common::Checks::default();
    let kept = mem
        .iter()
        .enumerate()
        .all(|(i, &b)| b == if i % 97 == 0 { (i % 251) as u8 + 1 } else { 0 });
    c.check("/dev/zero mapped privately: its contents", kept, "changed");
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let other = map(zero.as_raw_fd(), 4096, libc::PROT_READ, libc::MAP_PRIVATE);
    mem[1] = 0x55;
    // SAFETY: 4096 readable bytes mapped above.
    let seen = unsafe { *other.add(1) };
    c.check("/dev/zero mapped privately: private", seen == 0, seen);
    // SAFETY: our own mapping; its pages are dropped (and read as zeros after).
    unsafe { libc::madvise(p.cast(), LEN, libc::MADV_DONTNEED) };
    c.check(
        "/dev/zero mapped privately: MADV_DONTNEED gives zeros",
        mem.iter().all(|&b| b == 0),
        "old contents came back",
    );
    c.finish();
}
