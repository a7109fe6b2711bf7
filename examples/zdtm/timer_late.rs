//! One-shot timers that come due after the checkpoint read the signal queues and before it read
//! the timers (the handler reads them last, a millisecond or more later; tens with a large
//! shared mapping to copy): each reads disarmed, and its signal waits in a queue the image does
//! not hold. Restored disarmed, they never fired (a probe: `alarm`, a POSIX timer and
//! ITIMER_PROF due 10 ms into a checkpoint copying 64 MiB of shared memory, every time); a
//! periodic POSIX timer (10 s) came a whole interval late.
//! Made deterministic with the SDK's debug-build hooks: the timers are armed, 50 ms ahead, as
//! the checkpoint is about to stop the threads (THAW_TEST_AFTER_SCAN, point `s`), and the
//! handler reads them 400 ms after the queues (THAW_TEST_LATE_TIMERS). After restore each
//! signal comes.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static ALARMS: AtomicU64 = AtomicU64::new(0);
static TIMER: AtomicU64 = AtomicU64::new(0);
static PROFS: AtomicU64 = AtomicU64::new(0);
static PERIODIC: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: i32) {
    match sig {
        libc::SIGALRM => &ALARMS,
        libc::SIGPROF => &PROFS,
        libc::SIGUSR1 => &PERIODIC,
        _ => &TIMER,
    }
    .fetch_add(1, Ordering::SeqCst);
}

const AHEAD_US: i64 = 50_000;

fn main() {
    // SAFETY: handlers that only count.
    unsafe {
        for sig in [libc::SIGALRM, libc::SIGPROF, libc::SIGUSR1, libc::SIGUSR2] {
            libc::signal(sig, on_signal as *const () as usize);
        }
    }
    // One-shot: SIGUSR2; periodic (10 s): SIGUSR1.
    let [one_shot, periodic] = [libc::SIGUSR2, libc::SIGUSR1].map(|sig| {
        // SAFETY: a zeroed sigevent, filled: `sig` to the process.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = sig;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid sigevent and output.
        let r = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) };
        assert_eq!(r, 0);
        id as usize
    });
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("THAW_TEST_LATE_TIMERS", "400000") };
    common::during_first_scan("s", move |_| {
        let tv = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: AHEAD_US,
            },
        };
        let its = |interval_s: i64| libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: interval_s,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: AHEAD_US * 1000,
            },
        };
        // SAFETY: arms the process's timers from valid specs.
        unsafe {
            libc::setitimer(libc::ITIMER_REAL, &tv, std::ptr::null_mut());
            libc::setitimer(libc::ITIMER_PROF, &tv, std::ptr::null_mut());
            let n = std::ptr::null_mut();
            libc::timer_settime(one_shot as libc::timer_t, 0, &its(0), n);
            libc::timer_settime(periodic as libc::timer_t, 0, &its(10), n);
        }
    });
    common::checkpoint();
    // Busy: ITIMER_PROF counts CPU time.
    let end = Instant::now() + Duration::from_secs(5);
    while [&ALARMS, &TIMER, &PROFS, &PERIODIC]
        .iter()
        .any(|n| n.load(Ordering::SeqCst) == 0)
        && Instant::now() < end
    {
        std::hint::spin_loop();
    }
    let mut c = common::Checks::default();
    for (what, n) in [
        ("alarm: its SIGALRM comes", &ALARMS),
        ("POSIX timer: its signal comes", &TIMER),
        ("ITIMER_PROF: its SIGPROF comes", &PROFS),
        (
            "periodic POSIX timer: its signal comes, not an interval later",
            &PERIODIC,
        ),
    ] {
        let n = n.load(Ordering::SeqCst);
        c.check(what, n == 1, format!("{n} signals in 5 s"));
    }
    c.finish();
}
