//! Threads that take a seccomp filter of their own after the checkpoint listed the threads and
//! before it stopped them (deterministically, through the SDK's test hook THAW_TEST_AFTER_SCAN):
//! one listed already, and one started then, which the checkpoint finds while it stops the
//! others. A filter of one thread's own cannot be installed again: the checkpoint must refuse,
//! naming both, rather than restore them unfiltered. The first life exits 3 if it was saved.

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
    // SAFETY: two fresh descriptors of ours.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// Installs a filter that allows every call, on the calling thread only (no TSYNC).
fn filter_this_thread() {
    assert_eq!(common::allow_everything_filter(), 0);
}

fn main() {
    let (to_helper_r, to_helper_w) = pipe();
    let (from_helper_r, from_helper_w) = pipe();
    std::thread::Builder::new()
        .name("filtered".into())
        .spawn(move || {
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
                    filter_this_thread();
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::Builder::new()
                        .name("late".into())
                        .spawn(move || {
                            filter_this_thread();
                            tx.send(()).unwrap();
                            loop {
                                std::thread::park();
                            }
                        })
                        .unwrap();
                    rx.recv().unwrap();
                }
                // SAFETY: one byte from a buffer of ours.
                unsafe { libc::write(from_helper_w.as_raw_fd(), b"a".as_ptr() as *const _, 1) };
            }
        })
        .unwrap();
    // SAFETY: clearing O_NONBLOCK on a descriptor of ours: the checkpoint waits for the answer.
    unsafe { libc::fcntl(from_helper_r.as_raw_fd(), libc::F_SETFL, 0) };
    std::env::set_var(
        "THAW_TEST_AFTER_SCAN",
        format!("{},{}", from_helper_r.as_raw_fd(), to_helper_w.as_raw_fd()),
    );
    common::checkpoint();
    println!("FAIL restored: the checkpoint should have been refused");
    std::process::exit(3);
}
