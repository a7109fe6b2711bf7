//! POSIX timers (timer_create), as a program keeps them: a one-shot CLOCK_MONOTONIC timer that
//! signals the process (SIGUSR1, with a value), a periodic one that signals one thread
//! (SIGEV_THREAD_ID, SIGUSR2), and a CLOCK_REALTIME one that notifies nobody (SIGEV_NONE), armed
//! for 100 s. After restore the IDs the program holds are the kernel's, each timer has at most
//! what it had left, the signals arrive where they should with their values, and the periodic
//! timer keeps its interval.

#[path = "common.rs"]
mod common;

use std::time::Duration;

fn block(sig: i32) -> libc::sigset_t {
    // SAFETY: a local set, then this thread's own mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits (at most `bound`) for a signal of `set`: (signo, sival, timer overrun) or None.
fn wait(set: &libc::sigset_t, bound: Duration) -> Option<(i32, u64)> {
    let ts = libc::timespec {
        tv_sec: bound.as_secs() as i64,
        tv_nsec: 0,
    };
    // SAFETY: a zeroed siginfo to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set, info and timeout.
    let r = unsafe { libc::sigtimedwait(set, &mut info, &ts) };
    // SAFETY: a timer's siginfo carries sigval.
    (r > 0).then(|| (r, unsafe { info.si_value().sival_ptr } as u64))
}

fn create(clock: i32, notify: i32, signo: i32, value: u64, tid: i32) -> libc::timer_t {
    // SAFETY: a zeroed sigevent, filled field by field (the thread id is in the union).
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = notify;
    ev.sigev_signo = signo;
    ev.sigev_value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    ev.sigev_notify_thread_id = tid;
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid sigevent and output.
    assert_eq!(unsafe { libc::timer_create(clock, &mut ev, &mut id) }, 0);
    id
}

fn arm(id: libc::timer_t, value_ms: i64, interval_ms: i64) {
    let ts = |ms: i64| libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    let its = libc::itimerspec {
        it_interval: ts(interval_ms),
        it_value: ts(value_ms),
    };
    // SAFETY: a valid timer and spec.
    let r = unsafe { libc::timer_settime(id, 0, &its, std::ptr::null_mut()) };
    assert_eq!(r, 0, "timer_settime");
}

fn left_ns(id: libc::timer_t) -> (u64, u64) {
    // SAFETY: a zeroed spec to fill.
    let mut its: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid timer.
    unsafe { libc::timer_gettime(id, &mut its) };
    let ns = |t: libc::timespec| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    (ns(its.it_value), ns(its.it_interval))
}

fn kernel_ids() -> Vec<i64> {
    let mut ids: Vec<i64> = std::fs::read_to_string("/proc/self/timers")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("ID: ")?.trim().parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

fn main() {
    let usr1 = block(libc::SIGUSR1);
    // The worker blocks SIGUSR2 and waits for its timer's signals after the restore.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let usr2 = block(libc::SIGUSR2);
        tid_tx.send(thaw::sys::gettid()).unwrap();
        go_rx.recv().unwrap();
        let first = wait(&usr2, Duration::from_secs(10));
        let second = wait(&usr2, Duration::from_secs(10));
        (first, second)
    });
    let tid = tid_rx.recv().unwrap();
    // A first timer, deleted: the kernel's IDs are not simply 0, 1, 2 then.
    let gone = create(libc::CLOCK_MONOTONIC, libc::SIGEV_NONE, 0, 0, 0);
    // SAFETY: deletes our own timer.
    unsafe { libc::timer_delete(gone) };
    let once = create(
        libc::CLOCK_MONOTONIC,
        libc::SIGEV_SIGNAL,
        libc::SIGUSR1,
        0x1234,
        0,
    );
    let periodic = create(
        libc::CLOCK_MONOTONIC,
        libc::SIGEV_THREAD_ID,
        libc::SIGUSR2,
        0x5678,
        tid,
    );
    let quiet = create(libc::CLOCK_REALTIME, libc::SIGEV_NONE, 0, 0, 0);
    // Far enough ahead that no signal is pending at the checkpoint (that would be refused).
    arm(once, 3000, 0);
    arm(periodic, 3000, 50);
    arm(quiet, 100_000, 0);
    let held: Vec<i64> = {
        let mut v = vec![once as i64, periodic as i64, quiet as i64];
        v.sort_unstable();
        v
    };
    common::checkpoint();
    let mut c = common::Checks::default();
    let ids = kernel_ids();
    c.check(
        "the IDs the program holds are the kernel's",
        ids == held,
        format!("{ids:?} (held {held:?})"),
    );
    let (q, _) = left_ns(quiet);
    c.check(
        "SIGEV_NONE timer: armed, with at most what it had left",
        q > 0 && q <= 100_000_000_000,
        q,
    );
    let (_, interval) = left_ns(periodic);
    c.check(
        "periodic timer keeps its interval",
        interval == 50_000_000,
        interval,
    );
    go_tx.send(()).unwrap();
    let got = wait(&usr1, Duration::from_secs(10));
    c.check(
        "the process's timer signals it, with its value",
        got == Some((libc::SIGUSR1, 0x1234)),
        format!("{got:?}"),
    );
    let (first, second) = worker.join().unwrap();
    c.check(
        "the thread's timer signals that thread, again and again",
        first == Some((libc::SIGUSR2, 0x5678)) && second == Some((libc::SIGUSR2, 0x5678)),
        format!("{first:?} {second:?}"),
    );
    let _ = usr1;
    c.finish();
}
