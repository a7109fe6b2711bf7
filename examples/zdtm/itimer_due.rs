//! A periodic ITIMER_REAL caught between its expiry and the delivery of its SIGALRM: the kernel
//! arms such a timer again only when the signal is taken, so until then `getitimer` reads no
//! time left, with its interval (a probe saw Python's `signal.setitimer` so about one
//! checkpoint in ten; restored as if disarmed, it never fired again, in any later image
//! either). Here SIGALRM is blocked until the timer has come due, and the checkpoint is taken
//! then. After restore the signal is let in: it arrives, and the timer goes on with its
//! interval.
//!
//! With `ignored`: SIGALRM is ignored, so the kernel drops each expiry's signal and the timer,
//! never armed again, is dead for good (`getitimer` reads the same: no time left, its
//! interval). It comes back disarmed: no SIGALRM the first life would never get.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static ALARMS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: i32) {
    ALARMS.fetch_add(1, Ordering::SeqCst);
}

const INTERVAL_US: u64 = 20_000;

/// Arms ITIMER_REAL: due in a millisecond, then every `INTERVAL_US`.
fn arm() {
    let t = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: INTERVAL_US as i64,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 1_000,
        },
    };
    // SAFETY: arms ITIMER_REAL from a valid itimerval.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
}

/// (interval, value) of ITIMER_REAL in microseconds.
fn real_timer() -> (u64, u64) {
    // SAFETY: a zeroed itimerval is a valid one to fill.
    let mut v: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: getitimer into a local.
    unsafe { libc::getitimer(libc::ITIMER_REAL, &mut v) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(v.it_interval), us(v.it_value))
}

fn alarm_set() -> libc::sigset_t {
    // SAFETY: a set built from an empty one.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        set
    }
}

fn alarm_pending() -> bool {
    // SAFETY: sigpending into a local set, then a query of it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGALRM) == 1
    }
}

fn main() {
    if common::argv().2.iter().any(|a| a == "ignored") {
        return ignored();
    }
    let set = alarm_set();
    // SAFETY: blocks SIGALRM in this (the only) thread; installs a handler that only counts.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGALRM, on_alarm as *const () as usize);
    }
    arm();
    let end = Instant::now() + Duration::from_secs(10);
    while !alarm_pending() && Instant::now() < end {
        std::thread::yield_now();
    }
    let before = real_timer();
    common::checkpoint();
    let mut c = common::Checks::default();
    c.check(
        "the timer had come due, its signal not taken: no time left, its interval",
        before == (INTERVAL_US, 0),
        format!("{before:?}"),
    );
    let after = real_timer();
    c.check(
        "after restore it is armed, or its signal is there to be taken",
        after.0 == INTERVAL_US && (after.1 > 0 || alarm_pending()),
        format!("{after:?}, pending {}", alarm_pending()),
    );
    // SAFETY: lets SIGALRM in on this thread.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    let end = Instant::now() + Duration::from_secs(10);
    while ALARMS.load(Ordering::SeqCst) < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    c.check(
        "SIGALRM arrives, and again with the timer's interval",
        ALARMS.load(Ordering::SeqCst) >= 5,
        format!(
            "{} alarms in 10 s, timer {:?}",
            ALARMS.load(Ordering::SeqCst),
            real_timer()
        ),
    );
    c.finish();
}

fn ignored() {
    // SAFETY: ignores SIGALRM.
    unsafe { libc::signal(libc::SIGALRM, libc::SIG_IGN) };
    arm();
    // getitimer rounds down: no time left is also the last µs before the timer comes due, and
    // then it reads 1 µs until it has fired. Dead is no time left read 2 µs after the first.
    let end = Instant::now() + Duration::from_secs(10);
    let mut first_zero: Option<Instant> = None;
    while Instant::now() < end {
        let at = Instant::now();
        if real_timer().1 != 0 {
            first_zero = None;
        } else if let Some(z) = first_zero {
            if at >= z + Duration::from_micros(2) {
                break;
            }
        } else {
            first_zero = Some(Instant::now());
        }
        std::thread::yield_now();
    }
    let before = real_timer();
    common::checkpoint();
    let mut c = common::Checks::default();
    c.check(
        "an ignored SIGALRM left the timer dead: no time left, its interval",
        before == (INTERVAL_US, 0),
        format!("{before:?}"),
    );
    c.check(
        "after restore it is not armed",
        real_timer() == (0, 0),
        format!("{:?}", real_timer()),
    );
    c.finish();
}
