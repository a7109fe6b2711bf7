//! A checkpoint that exits after saving: nothing the process does after the snapshot happens in
//! the first life, as every restore does it then. Its other threads stay stopped until the first
//! life exits, and that exit flushes no buffers.
//!
//! `PROG IMAGE KEY`: a thread appends numbered lines ("0\n", "1\n", …) to IMAGE.log as fast as
//! it can, and the C library's stdout buffer holds a line not flushed yet; the main thread
//! checkpoints. After restore the writer appends 1,000 more lines and stops; then the log must
//! count from 0 up with no number twice or missing, and the buffered line is printed once, by
//! the restored process, at its exit.

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn main() {
    let (image, _, _) = common::argv();
    let log_path = format!("{image}.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_APPEND)
        .open(&log_path)
        .unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop) = (written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut log = log;
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                log.write_all(format!("{n}\n").as_bytes()).unwrap();
                n += 1;
                written.store(n, Ordering::Release);
            }
        })
    };
    // Under way before the checkpoint.
    while written.load(Ordering::Acquire) < 100 {
        std::thread::yield_now();
    }
    // SAFETY: printf with a constant format and no arguments; stdout is a pipe here, so the C
    // library buffers the line until its exit.
    unsafe { libc::printf(c"buffered before the checkpoint\n".as_ptr()) };

    common::checkpoint();

    let at = written.load(Ordering::Acquire);
    while written.load(Ordering::Acquire) < at + 1000 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let numbers: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
    let first_bad = numbers.iter().enumerate().find(|(i, &n)| n != *i as u64);
    let mut c = common::Checks::default();
    c.check(
        "the log counts up once: nothing after the snapshot was written by the first life",
        first_bad.is_none() && numbers.len() as u64 >= at + 1000,
        format!(
            "{} lines, the first out of place: {first_bad:?}",
            numbers.len()
        ),
    );
    let _ = std::fs::remove_file(&log_path);
    c.finish();
}
