//! A memfd mapped again, shared, by another thread after the checkpoint prepared its copy of
//! the shared memory and before it stopped the threads (deterministically, through the SDK's
//! test hook THAW_TEST_AFTER_SCAN), as ZGC maps and unmaps views of its heap's memfd while it
//! allocates: the checkpoint starts again instead of refusing, and after restore both views are
//! one memory.

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const LEN: usize = 1 << 16;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
    // SAFETY: two fresh descriptors of ours.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

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
    let (to_helper_r, to_helper_w) = pipe();
    let (from_helper_r, from_helper_w) = pipe();
    let (tx, second) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut once = true;
        loop {
            let mut poll = libc::pollfd {
                fd: to_helper_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let mut b = 0u8;
            // SAFETY: one pollfd; then one byte into a buffer of ours.
            unsafe {
                libc::poll(&mut poll, 1, -1);
                libc::read(to_helper_r.as_raw_fd(), &mut b as *mut u8 as *mut _, 1);
            }
            if std::mem::take(&mut once) {
                tx.send(view(fd)).unwrap();
            }
            // SAFETY: one byte from a buffer of ours.
            unsafe { libc::write(from_helper_w.as_raw_fd(), b"a".as_ptr() as *const _, 1) };
        }
    });
    // SAFETY: clearing O_NONBLOCK on a descriptor of ours: the checkpoint waits for the answer.
    unsafe { libc::fcntl(from_helper_r.as_raw_fd(), libc::F_SETFL, 0) };
    std::env::set_var(
        "THAW_TEST_AFTER_SCAN",
        format!("{},{}", from_helper_r.as_raw_fd(), to_helper_w.as_raw_fd()),
    );
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
