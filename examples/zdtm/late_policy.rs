//! Threads that take a seccomp filter of their own after the checkpoint listed the threads and
//! before it stopped them (deterministically, through the SDK's test hook THAW_TEST_AFTER_SCAN):
//! one listed already, and one started then, which the checkpoint finds while it stops the
//! others. A filter of one thread's own cannot be installed again: the checkpoint must refuse,
//! naming both, rather than restore them unfiltered. The first life exits 3 if it was saved.

#[path = "common.rs"]
mod common;

/// Installs a filter that allows every call, on the calling thread only (no TSYNC).
fn filter_this_thread() {
    assert_eq!(common::allow_everything_filter(), 0);
}

fn main() {
    // The hook's thread, named so, takes a filter and starts another thread that takes one.
    common::after_first_scan(|| {
        // SAFETY: names the calling thread; the name is a NUL-terminated literal.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"filtered".as_ptr()) };
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
    });
    common::checkpoint();
    println!("FAIL restored: the checkpoint should have been refused");
    std::process::exit(3);
}
