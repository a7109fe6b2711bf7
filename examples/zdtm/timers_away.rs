//! Timers run on while the process is away, as its clocks do (an image from this boot restored
//! later sees CLOCK_MONOTONIC moved on by the time in between, as a stopped and continued
//! process does). Run in a time namespace whose clocks are behind the host's (the test starts
//! it so), the image is restored at least `AWAY_S` seconds later on the clocks the restore
//! sees: ITIMER_REAL and a POSIX timer on CLOCK_MONOTONIC with 50 s left have come due and fire
//! at once; a periodic timerfd (every second) has every expiration of the time away unread; a
//! one-shot timerfd on CLOCK_BOOTTIME has fired; a POSIX timer with 1,000 s left has that less
//! the time away; a CPU-time timer has what it had (a process away uses no CPU).

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The least time away the test arranges, in seconds.
const AWAY_S: u64 = 100;

fn now_ns(clock: i32) -> u64 {
    // SAFETY: a zeroed timespec to fill.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid output.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn ts(ms: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    }
}

fn posix_timer(clock: i32, signo: i32, value_ms: u64) -> libc::timer_t {
    // SAFETY: a zeroed sigevent, filled field by field.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = signo;
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid sigevent and output.
    assert_eq!(unsafe { libc::timer_create(clock, &mut ev, &mut id) }, 0);
    let its = libc::itimerspec {
        it_interval: ts(0),
        it_value: ts(value_ms),
    };
    // SAFETY: a valid timer and spec.
    let r = unsafe { libc::timer_settime(id, 0, &its, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    id
}

fn left_ns(id: libc::timer_t) -> u64 {
    // SAFETY: a zeroed spec to fill.
    let mut its: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid timer and output.
    unsafe { libc::timer_gettime(id, &mut its) };
    its.it_value.tv_sec as u64 * 1_000_000_000 + its.it_value.tv_nsec as u64
}

fn timerfd(clock: i32, value_ms: u64, interval_ms: u64) -> OwnedFd {
    // SAFETY: timerfd_create takes no pointers; the descriptor is ours.
    let fd = unsafe { libc::timerfd_create(clock, libc::TFD_NONBLOCK) };
    assert!(fd >= 0);
    let its = libc::itimerspec {
        it_interval: ts(interval_ms),
        it_value: ts(value_ms),
    };
    // SAFETY: a valid descriptor and spec.
    let r = unsafe { libc::timerfd_settime(fd, 0, &its, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    // SAFETY: fresh.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The expirations a timerfd holds, waiting up to 10 s for one.
fn expirations(fd: &OwnedFd) -> u64 {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 10_000) };
    let mut n = 0u64;
    // SAFETY: an 8-byte read into a u64.
    let r = unsafe { libc::read(fd.as_raw_fd(), &mut n as *mut u64 as *mut _, 8) };
    if r == 8 {
        n
    } else {
        0
    }
}

/// Whether `signo` (blocked) arrives within 10 s.
fn arrives(signo: i32) -> bool {
    // SAFETY: a set of one signal; a bounded wait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts(10_000)) == signo
    }
}

fn main() {
    // SAFETY: blocking two signals of this thread (the only one) to wait for them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let real = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 50,
            tv_usec: 0,
        },
    };
    // SAFETY: a valid itimerval.
    let r = unsafe { libc::setitimer(libc::ITIMER_REAL, &real, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    let due = posix_timer(libc::CLOCK_MONOTONIC, libc::SIGUSR2, 50_000);
    let later = posix_timer(libc::CLOCK_MONOTONIC, libc::SIGRTMIN(), 1_000_000);
    let cpu = posix_timer(libc::CLOCK_PROCESS_CPUTIME_ID, libc::SIGRTMIN() + 1, 50_000);
    let periodic = timerfd(libc::CLOCK_MONOTONIC, 1_000, 1_000);
    let boot = timerfd(libc::CLOCK_BOOTTIME, 50_000, 0);
    let before = now_ns(libc::CLOCK_MONOTONIC);
    common::checkpoint();
    let away = now_ns(libc::CLOCK_MONOTONIC).saturating_sub(before);
    let mut c = common::Checks::default();
    c.check(
        "the clocks moved on by the time away",
        away >= AWAY_S * 1_000_000_000,
        format!("{away} ns"),
    );
    c.check(
        "ITIMER_REAL that came due while away fires at once",
        arrives(libc::SIGALRM),
        "no SIGALRM",
    );
    c.check(
        "POSIX timer that came due while away fires at once",
        arrives(libc::SIGUSR2),
        "no SIGUSR2",
    );
    let n = expirations(&periodic);
    c.check(
        "periodic timerfd: every expiration while away is unread",
        n >= (away / 1_000_000_000).saturating_sub(1) && n > 0,
        format!("{n} expirations in {away} ns"),
    );
    c.check(
        "CLOCK_BOOTTIME timerfd that came due while away has fired",
        expirations(&boot) == 1,
        "not fired",
    );
    let left = left_ns(later);
    c.check(
        "POSIX timer not due yet: what it has left shrank by the time away",
        // (Within 10 s: the time away is measured by the launcher a moment before it arms it.)
        left > 0 && left <= (1_000_000_000_000 - away).saturating_add(10_000_000_000),
        format!("{left} ns left after {away} ns away"),
    );
    let cpu_left = left_ns(cpu);
    c.check(
        "CPU-time timer: what it had left",
        cpu_left > 40_000_000_000,
        format!("{cpu_left} ns left"),
    );
    let _ = due;
    c.finish()
}
