//! Interval timers: ITIMER_REAL with 200 ms left (as `alarm` would arm it) and ITIMER_PROF with
//! 10 s left and a 1 s interval. After restore both are armed with what they had left (never
//! more), the profiling interval is intact, and SIGALRM arrives.
//!
//! Also a signalfd reading SIGUSR1 (blocked): after restore a raised SIGUSR1 is read from it; a
//! timerfd with 100 ms left, whose expiration is read after restore; a non-blocking timerfd that
//! expired before the checkpoint and was not read, whose expiration is still there; a periodic
//! timerfd (every 20 ms) that fired ten times or more before the checkpoint, never read: every
//! expiration is there; and one that fired once and then fires every 10 s: its next expiry is
//! where it was, not a whole interval after the checkpoint.
//!
//! (POSIX timers: zdtm/posix_timers.rs.)

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};

static ALARM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: i32) {
    ALARM.store(true, Ordering::SeqCst);
}

fn itimer(which: i32) -> (u64, u64) {
    let mut v: libc::itimerval = unsafe_zeroed();
    // SAFETY: a valid itimerval to fill.
    unsafe { libc::getitimer(which, &mut v) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(v.it_interval), us(v.it_value))
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs of integers.
    unsafe { std::mem::zeroed() }
}

fn set(which: i32, interval_us: i64, value_us: i64) {
    let tv = |us: i64| libc::timeval {
        tv_sec: us / 1_000_000,
        tv_usec: us % 1_000_000,
    };
    let v = libc::itimerval {
        it_interval: tv(interval_us),
        it_value: tv(value_us),
    };
    // SAFETY: a valid itimerval.
    let r = unsafe { libc::setitimer(which, &v, std::ptr::null_mut()) };
    assert_eq!(r, 0);
}

/// Blocks `sig` in this thread; returns the set holding it.
fn block(sig: i32) -> libc::sigset_t {
    let mut set: libc::sigset_t = unsafe_zeroed();
    // SAFETY: a valid signal set for this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// With `wall-clock`: a timerfd armed for a wall-clock time one second ahead
/// (TFD_TIMER_ABSTIME on CLOCK_REALTIME). Restored after that time, it has fired, however long
/// after the checkpoint the restore came; it prints its deadline in the first life.
fn wall_clock() -> ! {
    let mut now: libc::timespec = unsafe_zeroed();
    // SAFETY: a timespec of our own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let deadline = libc::timespec {
        tv_sec: now.tv_sec + 1,
        tv_nsec: now.tv_nsec,
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: deadline,
    };
    // SAFETY: a new non-blocking timerfd armed with a valid itimerspec.
    let fd = unsafe {
        let fd = libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK);
        libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut());
        fd
    };
    common::checkpoint();
    let mut c = common::Checks::default();
    // SAFETY: a timespec of our own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let passed = (now.tv_sec, now.tv_nsec) >= (deadline.tv_sec, deadline.tv_nsec);
    let mut ticks = 0u64;
    // SAFETY: an 8-byte read into our own counter.
    let n = unsafe { libc::read(fd, (&mut ticks as *mut u64).cast(), 8) };
    c.check(
        "a timerfd armed for a wall-clock time has fired once that time passed",
        passed && n == 8 && ticks == 1,
        format!("deadline passed {passed}, read {n}, expirations {ticks}"),
    );
    c.finish();
}

/// Two periodic timerfds, given time to fire (before the other timers are armed): one every
/// 20 ms, ten times or more by now, and one that fired once and fires every 10 s; and how far
/// off, at most, the latter's next expiry is.
fn periodic_timerfds() -> (i32, i32, u64) {
    let periodic = |first_ns: u64, every_ns: u64| {
        let ts = |ns: u64| libc::timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as i64,
        };
        let spec = libc::itimerspec {
            it_interval: ts(every_ns),
            it_value: ts(first_ns),
        };
        // SAFETY: a new non-blocking timerfd armed with a valid itimerspec.
        unsafe {
            let fd = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            );
            libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut());
            fd
        }
    };
    let every_20ms = periodic(20_000_000, 20_000_000);
    let every_10s = periodic(1_000_000, 10_000_000_000);
    // (After both: each was armed before this, and fires no later than it would from here.)
    let armed = std::time::Instant::now();
    // Time passes (for the timers to fire: nothing waits on anything here).
    while armed.elapsed() < std::time::Duration::from_millis(210) {
        std::thread::sleep(std::time::Duration::from_millis(210) - armed.elapsed());
    }
    // The 10 s one's next expiry is at most this far off.
    let next_at_most = 10_000_000_000 - (armed.elapsed().as_nanos() as u64 - 1_000_000);
    (every_20ms, every_10s, next_at_most)
}

fn main() {
    let (_, _, extra) = common::argv();
    if extra.first().is_some_and(|a| a == "wall-clock") {
        wall_clock();
    }
    let (every_20ms, every_10s, next_at_most) = periodic_timerfds();
    // SAFETY: installs a handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGALRM, on_alarm as *const () as usize) };
    set(libc::ITIMER_REAL, 0, 200_000);
    set(libc::ITIMER_PROF, 1_000_000, 10_000_000);
    let set = block(libc::SIGUSR1);
    // SAFETY: a signalfd for a valid signal set.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    assert!(sfd >= 0);
    let tfd = |value_ns: i64, nonblock: bool| {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: value_ns,
            },
        };
        let flags = if nonblock { libc::TFD_NONBLOCK } else { 0 };
        // SAFETY: a new timerfd armed with a valid itimerspec.
        unsafe {
            let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | flags);
            libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut());
            fd
        }
    };
    let pending = tfd(100_000_000, false);
    // Disarmed by a zero value with an interval given (the interval is kept, nothing fires).
    let disarmed = {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        // SAFETY: a new non-blocking timerfd set with a valid itimerspec.
        unsafe {
            let fd = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            );
            libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut());
            fd
        }
    };
    let fired = tfd(1, true);
    let mut p = libc::pollfd {
        fd: fired,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: wait until the 1 ns timer has expired (without reading it).
    unsafe { libc::poll(&mut p, 1, -1) };
    // CPU-time timers count in ticks: what they report is rounded up to one (at most 10 ms).
    let (_, prof_before) = itimer(libc::ITIMER_PROF);
    common::checkpoint();
    // First thing: the periodic timers go on firing.
    let mut n = 0u64;
    // SAFETY: an 8-byte read into a u64.
    unsafe { libc::read(every_20ms, (&mut n as *mut u64).cast(), 8) };
    let mut left = std::mem::MaybeUninit::<libc::itimerspec>::zeroed();
    // SAFETY: timerfd_gettime into a zeroed struct we own.
    let left = unsafe {
        libc::timerfd_gettime(every_10s, left.as_mut_ptr());
        left.assume_init().it_value
    };
    let mut c = common::Checks::default();
    let (ri, rv) = itimer(libc::ITIMER_REAL);
    let (pi, pv) = itimer(libc::ITIMER_PROF);
    c.check(
        "real timer armed with at most what it had left",
        ri == 0 && (ALARM.load(Ordering::SeqCst) || (rv > 0 && rv <= 200_000)),
        format!("interval {ri} value {rv}"),
    );
    c.check(
        "profiling timer armed, interval kept",
        pi == 1_000_000 && pv > 0 && pv <= prof_before + 10_000,
        format!("interval {pi} value {pv}"),
    );
    // SIGALRM comes: wait for it (no timeout: the test harness bounds the run).
    while !ALARM.load(Ordering::SeqCst) {
        // SAFETY: pause() returns when a signal handler has run.
        unsafe { libc::pause() };
    }
    c.check("SIGALRM arrives", true, "");
    // SAFETY: raise a blocked signal and read it from the signalfd into a sized buffer.
    let signo = unsafe {
        libc::raise(libc::SIGUSR1);
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            sfd,
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        if n > 0 {
            info.ssi_signo
        } else {
            0
        }
    };
    let read_ticks = |fd: i32| {
        let mut n = 0u64;
        // SAFETY: an 8-byte read into a u64.
        let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
        if r == 8 {
            n
        } else {
            0
        }
    };
    c.check(
        "timerfd: an unread expiration is kept",
        read_ticks(fired) == 1,
        "",
    );
    c.check(
        "periodic timerfd: every expiration before the checkpoint is there",
        n >= 10,
        format!("{n} expirations"),
    );
    let left_ns = left.tv_sec as u64 * 1_000_000_000 + left.tv_nsec as u64;
    // (Restored 10 s or more after it was armed, on a busy machine, it has fired again since:
    // then its next expiry is up to 10 s off.)
    let ticks = read_ticks(every_10s);
    let at_most = if ticks >= 2 {
        10_000_000_000
    } else {
        next_at_most
    };
    c.check(
        "periodic timerfd: its next expiry is where it was",
        left_ns > 0 && left_ns <= at_most && ticks >= 1,
        format!("{left_ns} ns left, at most {at_most}, {ticks} expirations"),
    );
    let mut spec = std::mem::MaybeUninit::<libc::itimerspec>::zeroed();
    // SAFETY: timerfd_gettime into a zeroed struct we own.
    let spec = unsafe {
        libc::timerfd_gettime(disarmed, spec.as_mut_ptr());
        spec.assume_init()
    };
    c.check(
        "timerfd disarmed with an interval: still disarmed, its interval kept",
        spec.it_value.tv_sec == 0
            && spec.it_value.tv_nsec == 0
            && spec.it_interval.tv_nsec == 20_000_000
            && read_ticks(disarmed) == 0,
        format!(
            "value {}.{:09}, interval {}.{:09}",
            spec.it_value.tv_sec,
            spec.it_value.tv_nsec,
            spec.it_interval.tv_sec,
            spec.it_interval.tv_nsec
        ),
    );
    c.check(
        "timerfd: a pending one expires",
        read_ticks(pending) >= 1,
        "",
    );
    c.check(
        "signalfd reads SIGUSR1",
        signo == libc::SIGUSR1 as u32,
        signo,
    );
    c.finish();
}
