//! Event objects changed by another thread after the checkpoint scanned the descriptors and
//! before it stopped the threads (deterministically, through the SDK's test hook
//! THAW_TEST_AFTER_SCAN): an eventfd written (count 1 → 42), a fired one-shot epoll registration
//! armed again (as GHC's I/O manager does on every wait), a timerfd armed for an hour. After
//! restore each is as the other thread left it: the count is 42, the registration reports the
//! pipe it watches, the timerfd has most of its hour left. The other thread also signals the
//! checkpointing thread then (SIGUSR1, whose handler notes whether the process was restored
//! yet): the handler runs once, after the restore, not in the middle of the checkpoint.
//!
//! `registered`: once the scan has read an epoll instance's registrations, and before the
//! checkpoint prepares to read them again with the threads parked, the other thread removes one
//! and adds another: after restore the instance reports the pipe added, not the one removed (the
//! registrations were compared with those read again, not with the scan's: the image had the
//! scan's).

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};

const ONESHOT_IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLONESHOT as u32;

fn epoll_ctl(ep: i32, op: i32, fd: i32, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: a valid event for epoll_ctl.
    let r = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    assert_eq!(r, 0, "epoll_ctl");
}

/// The data of the events ready on `ep`, waiting up to `ms`.
fn wait(ep: i32, ms: i32) -> Vec<u64> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
    // SAFETY: room for four events.
    let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, ms) };
    evs[..n.max(0) as usize].iter().map(|e| e.u64).collect()
}

fn own(fd: i32) -> OwnedFd {
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor of ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
    (own(p[0]), own(p[1]))
}

fn rw(fd: i32, write: bool, v: u64) -> u64 {
    let mut b = v;
    // SAFETY: an 8-byte read or write of a u64 of ours.
    let n = unsafe {
        if write {
            libc::write(fd, &b as *const u64 as *const _, 8)
        } else {
            libc::read(fd, &mut b as *mut u64 as *mut _, 8)
        }
    };
    if n == 8 {
        b
    } else {
        0
    }
}

/// What `thaw::restores()` said when the SIGUSR1 handler last ran (-1: it has not run), and
/// how many times it ran after the restore.
static SEEN: AtomicI64 = AtomicI64::new(-1);
static RUNS: AtomicI64 = AtomicI64::new(0);

extern "C" fn on_usr1(_: i32) {
    let restores = thaw::restores() as i64;
    SEEN.store(restores, Ordering::SeqCst);
    // (A checkpoint started again handles the first attempt's signal in the first life.)
    if restores > 0 {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }
}

fn registered() {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = own(unsafe { libc::epoll_create1(0) });
    let ((a_r, a_w), (b_r, b_w)) = (pipe(), pipe());
    let (p, a, b) = (ep.as_raw_fd(), a_r.as_raw_fd(), b_r.as_raw_fd());
    epoll_ctl(p, libc::EPOLL_CTL_ADD, a, libc::EPOLLIN as u32, 7);
    common::during_first_scan("d", move |_| {
        epoll_ctl(p, libc::EPOLL_CTL_DEL, a, 0, 0);
        epoll_ctl(p, libc::EPOLL_CTL_ADD, b, libc::EPOLLIN as u32, 9);
    });
    common::checkpoint();
    let mut c = common::Checks::default();
    assert_eq!(rw(a_w.as_raw_fd(), true, 1), 1);
    assert_eq!(rw(b_w.as_raw_fd(), true, 1), 1);
    let got = wait(p, 10_000);
    c.check(
        "epoll: a registration added and one removed while the checkpoint scanned are as left",
        got == [9],
        format!("events {got:?}"),
    );
    c.finish()
}

fn main() {
    if common::argv().2.first().map(String::as_str) == Some("registered") {
        return registered();
    }
    // SAFETY: a handler that only stores into atomics.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    // SAFETY: gettid takes nothing.
    let main_tid = unsafe { libc::gettid() };
    // SAFETY: eventfd, epoll and timerfd creation take no pointers.
    let (efd, ep, tfd) = unsafe {
        (
            own(libc::eventfd(1, libc::EFD_NONBLOCK)),
            own(libc::epoll_create1(0)),
            own(libc::timerfd_create(libc::CLOCK_MONOTONIC, 0)),
        )
    };
    let (watched_r, watched_w) = pipe();
    epoll_ctl(
        ep.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        watched_r.as_raw_fd(),
        ONESHOT_IN,
        7,
    );
    // Fired once and taken: the registration is disarmed until armed again.
    assert_eq!(rw(watched_w.as_raw_fd(), true, 1), 1);
    assert_eq!(wait(ep.as_raw_fd(), 0), [7]);
    assert_eq!(rw(watched_r.as_raw_fd(), false, 0), 1);
    // The hook's pipes: the checkpoint says "scanned" on one, waits for the answer on the other.
    let (to_helper_r, to_helper_w) = pipe();
    let (from_helper_r, from_helper_w) = pipe();
    let (e, p, t, w) = (
        efd.as_raw_fd(),
        ep.as_raw_fd(),
        tfd.as_raw_fd(),
        watched_r.as_raw_fd(),
    );
    std::thread::spawn(move || loop {
        let mut poll = libc::pollfd {
            fd: to_helper_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd; then one byte into a buffer of ours.
        unsafe {
            libc::poll(&mut poll, 1, -1);
            let mut b = 0u8;
            libc::read(to_helper_r.as_raw_fd(), &mut b as *mut u8 as *mut _, 1);
        }
        // Each attempt of the checkpoint: the same changes.
        rw(e, false, 0);
        rw(e, true, 42);
        epoll_ctl(p, libc::EPOLL_CTL_MOD, w, ONESHOT_IN, 7);
        let hour = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 3600,
                tv_nsec: 0,
            },
        };
        // SAFETY: a valid timerfd and spec; a signal to a thread of ours; then one byte from a
        // buffer of ours.
        unsafe {
            libc::timerfd_settime(t, 0, &hour, std::ptr::null_mut());
            libc::syscall(libc::SYS_tgkill, libc::getpid(), main_tid, libc::SIGUSR1);
            libc::write(from_helper_w.as_raw_fd(), b"a".as_ptr() as *const _, 1);
        }
    });
    // The reading end blocks: the checkpoint waits for the answer.
    // SAFETY: clearing O_NONBLOCK on a descriptor of ours.
    unsafe { libc::fcntl(from_helper_r.as_raw_fd(), libc::F_SETFL, 0) };
    std::env::set_var(
        "THAW_TEST_AFTER_SCAN",
        format!("{},{}", from_helper_r.as_raw_fd(), to_helper_w.as_raw_fd()),
    );
    common::checkpoint();
    let mut c = common::Checks::default();
    let count = rw(e, false, 0);
    c.check(
        "eventfd: the count written after the scan",
        count == 42,
        format!("count {count}"),
    );
    assert_eq!(rw(watched_w.as_raw_fd(), true, 1), 1);
    let got = wait(p, 10_000);
    c.check(
        "epoll: the one-shot registration armed after the scan reports its pipe",
        got == [7],
        format!("events {got:?}"),
    );
    // SAFETY: a zeroed spec to fill from a valid timerfd.
    let mut its: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::timerfd_gettime(t, &mut its) };
    c.check(
        "timerfd: armed after the scan, most of its hour left",
        its.it_value.tv_sec > 3000,
        format!("{} s left", its.it_value.tv_sec),
    );
    let (seen, runs) = (SEEN.load(Ordering::SeqCst), RUNS.load(Ordering::SeqCst));
    c.check(
        "a signal to the checkpointing thread is handled after the restore, once",
        seen >= 1 && runs == 1,
        format!("handler saw restores() = {seen}, ran {runs} time(s)"),
    );
    c.finish()
}
