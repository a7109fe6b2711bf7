//! A memfd mapped again, shared, by another thread after the checkpoint prepared its copy of
//! the shared memory and before it stopped the threads (deterministically, through the SDK's
//! test hook THAW_TEST_AFTER_SCAN), as ZGC maps and unmaps views of its heap's memfd while it
//! allocates: the checkpoint starts again instead of refusing, and after restore both views are
//! one memory.

#[path = "common.rs"]
mod common;

const LEN: usize = 1 << 16;

/// A shared view of the whole of `fd`.
fn view(fd: i32) -> usize {
    // SAFETY: a new shared mapping of a memfd of ours, LEN long.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as usize
}

fn main() {
    // SAFETY: a name of ours; then sizing the new memfd.
    let fd = unsafe {
        let fd = libc::memfd_create(c"heap".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, LEN as i64), 0);
        fd
    };
    let first = view(fd);
    // SAFETY: inside the first view.
    unsafe { *(first as *mut u64) = 7 };
    let (tx, second) = std::sync::mpsc::channel();
    common::after_first_scan(move || tx.send(view(fd)).unwrap());
    common::checkpoint();
    let mut c = common::Checks::default();
    let second = second.try_recv();
    c.check(
        "the view mapped during the first attempt is there",
        second.is_ok(),
        format!("{second:?}"),
    );
    if let Ok(second) = second {
        // SAFETY: both views are LEN long and mapped.
        let (before, after) = unsafe {
            let before = *(second as *const u64);
            *(first as *mut u64).add(1) = 42;
            (before, *(second as *const u64).add(1))
        };
        c.check(
            "both views are one memory after restore",
            before == 7 && after == 42,
            format!("{before} {after}"),
        );
    }
    c.finish();
}
