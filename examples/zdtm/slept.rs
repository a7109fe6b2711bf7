//! Relative sleeps under way at the checkpoint lose the time away, as after a stop and a
//! continue (the kernel restarts a stopped `nanosleep` to its deadline): restored two hours of
//! CLOCK_MONOTONIC and CLOCK_BOOTTIME later (the test restores inside a time namespace that
//! far ahead), a `nanosleep` and a relative `clock_nanosleep(CLOCK_BOOTTIME)` of one hour each
//! are over at once and return 0, where they used to sleep their hour again. A thread-CPU-time
//! sleep is not shortened (a process away uses no CPU): it still has its time left.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HOUR: libc::timespec = libc::timespec {
    tv_sec: 3600,
    tv_nsec: 0,
};

/// Requests of sleeps without `rem` (issued again for their whole time): one in writable
/// memory, as a loop's interval, one in read-only memory. Neither may be written to.
static mut INTERVAL: libc::timespec = HOUR;
static READ_ONLY: libc::timespec = HOUR;

/// A thread that runs `sleep`, blocked in `nr` before this returns; its result comes on the
/// channel.
fn sleeper(
    nr: i64,
    sleep: impl FnOnce() -> i64 + Send + 'static,
) -> std::sync::mpsc::Receiver<i64> {
    let tid = Arc::new(AtomicI64::new(0));
    let t = tid.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        t.store(i64::from(thaw::sys::gettid()), Ordering::SeqCst);
        let _ = tx.send(sleep());
    });
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    common::until_blocked_in(tid.load(Ordering::SeqCst) as i32, nr);
    rx
}

fn main() {
    let mono = sleeper(libc::SYS_nanosleep, || {
        let mut rem = HOUR;
        // The system call itself: glibc's nanosleep() is clock_nanosleep(CLOCK_REALTIME).
        // SAFETY: valid timespecs of ours.
        unsafe { libc::syscall(libc::SYS_nanosleep, &HOUR, &mut rem) }
    });
    let boot = sleeper(libc::SYS_clock_nanosleep, || {
        let mut rem = HOUR;
        // SAFETY: as above.
        i64::from(unsafe { libc::clock_nanosleep(libc::CLOCK_BOOTTIME, 0, &HOUR, &mut rem) })
    });
    // A thread that blocks every signal is stopped with ptrace instead (its sleep returns
    // ERESTART_RESTARTBLOCK, its time left written to rem).
    let blocking = sleeper(libc::SYS_nanosleep, || {
        let mut rem = HOUR;
        // SAFETY: a full set for this thread's own mask; then the system call itself with
        // valid timespecs of ours.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            libc::syscall(libc::SYS_nanosleep, &HOUR, &mut rem)
        }
    });
    let _interval = sleeper(libc::SYS_nanosleep, || {
        // SAFETY: a request of ours, no rem.
        unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                std::ptr::addr_of!(INTERVAL),
                std::ptr::null_mut::<libc::timespec>(),
            )
        }
    });
    let _read_only = sleeper(libc::SYS_nanosleep, || {
        // SAFETY: as above.
        unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &READ_ONLY,
                std::ptr::null_mut::<libc::timespec>(),
            )
        }
    });
    let cpu = sleeper(libc::SYS_clock_nanosleep, || {
        let mut rem = HOUR;
        // SAFETY: as above.
        i64::from(unsafe {
            libc::clock_nanosleep(libc::CLOCK_PROCESS_CPUTIME_ID, 0, &HOUR, &mut rem)
        })
    });
    common::checkpoint();
    let mut c = common::Checks::default();
    // Bounds far above "at once", far below an hour.
    let wait = |rx: &std::sync::mpsc::Receiver<i64>| rx.recv_timeout(Duration::from_secs(120));
    for (what, rx) in [
        ("nanosleep of an hour, two hours away: over", &mono),
        (
            "relative clock_nanosleep(CLOCK_BOOTTIME) of an hour, two hours away: over",
            &boot,
        ),
        (
            "nanosleep of an hour in a thread that blocks every signal, two hours away: over",
            &blocking,
        ),
    ] {
        let r = wait(rx);
        c.check(what, r == Ok(0), format!("{r:?}"));
    }
    // SAFETY: read once the restore is done; the sleeping thread only reads it.
    let interval = unsafe { std::ptr::addr_of!(INTERVAL).read() };
    c.check(
        "a sleep without rem: its request left as it was",
        (interval.tv_sec, interval.tv_nsec) == (3600, 0),
        format!("{} s {} ns", interval.tv_sec, interval.tv_nsec),
    );
    let r = cpu.try_recv();
    c.check(
        "a CPU-time sleep keeps its time left",
        r == Err(std::sync::mpsc::TryRecvError::Empty),
        format!("{r:?}"),
    );
    c.finish();
}
