//! Threads asleep or waiting in system calls at the checkpoint, and a directory half listed.
//! A checkpoint must look like a stop and a continue: after restore `sleep(1)` still returns 0
//! (it slept its whole second, across the checkpoint), an absolute `clock_nanosleep` returns 0,
//! `sem_timedwait` (a futex wait with a deadline) ends with ETIMEDOUT,
//! `pause()` returns only for the program's own signal, and `poll` without a timeout returns
//! with the byte written after restore, not with EINTR. A directory read partly with `getdents64`
//! goes on where it was: every entry is seen exactly once across both lives.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

static USR1: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: i32) {
    USR1.store(true, Ordering::SeqCst);
}

/// The names in a getdents64 buffer.
fn names(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 19 <= buf.len() {
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(String::from_utf8_lossy(&name[..end]).into_owned());
        at += reclen;
    }
    out
}

fn getdents(fd: i32, cap: usize) -> Vec<String> {
    let mut buf = vec![0u8; cap];
    // SAFETY: the buffer is ours and `cap` long.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), cap) };
    assert!(n >= 0, "getdents64");
    names(&buf[..n as usize])
}

fn spawn(
    f: impl FnOnce() -> i64 + Send + 'static,
) -> (Arc<AtomicI64>, std::thread::JoinHandle<i64>) {
    let tid = Arc::new(AtomicI64::new(0));
    let t = tid.clone();
    let h = std::thread::spawn(move || {
        t.store(i64::from(thaw::sys::gettid()), Ordering::SeqCst);
        f()
    });
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    (tid, h)
}

fn main() {
    // SAFETY: a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as usize) };
    // A directory of 40 files, listed 4 entries at a time up to about half.
    // Beside the image (the tests' scratch directory).
    let image = std::path::PathBuf::from(common::argv().0);
    let dir = image
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("waits-dir");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..40 {
        std::fs::write(dir.join(format!("f{i:02}")), b"").unwrap();
    }
    let d = std::fs::File::open(&dir).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.extend(getdents(d.as_raw_fd(), 128));
    }

    let (sleeper_tid, sleeper) = spawn(|| {
        // SAFETY: plain sleep.
        i64::from(unsafe { libc::sleep(1) })
    });
    let (abs_tid, abs) = spawn(|| {
        // SAFETY: a timespec of our own.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
            ts.tv_sec += 1;
            i64::from(libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            ))
        }
    });
    // A semaphore nobody posts: its timed wait must end with ETIMEDOUT, never EINTR.
    static mut SEM: std::mem::MaybeUninit<libc::sem_t> = std::mem::MaybeUninit::uninit();
    // SAFETY: initialises the static semaphore once, before any thread uses it.
    unsafe { libc::sem_init(std::ptr::addr_of_mut!(SEM).cast(), 0, 0) };
    let (sem_tid, sem) = spawn(|| {
        // SAFETY: a timespec of our own; the semaphore lives as long as the process.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
            ts.tv_sec += 1;
            let r = libc::sem_timedwait(std::ptr::addr_of_mut!(SEM).cast(), &ts);
            if r == 0 {
                0
            } else {
                i64::from(*libc::__errno_location())
            }
        }
    });
    let (pauser_tid, pauser) = spawn(|| {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
        i64::from(USR1.load(Ordering::SeqCst))
    });
    let (r, w) = thaw::sys::pipe_cloexec().unwrap();
    let rfd = r.as_raw_fd();
    let (poller_tid, poller) = spawn(move || {
        let mut p = libc::pollfd {
            fd: rfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of our own.
        i64::from(unsafe { libc::poll(&mut p, 1, -1) })
    });
    let tid = |t: &AtomicI64| t.load(Ordering::SeqCst) as i32;
    common::until_blocked_in(tid(&sleeper_tid), libc::SYS_clock_nanosleep);
    common::until_blocked_in(tid(&abs_tid), libc::SYS_clock_nanosleep);
    common::until_blocked_in(tid(&pauser_tid), libc::SYS_pause);
    common::until_blocked_in(tid(&sem_tid), libc::SYS_futex);
    common::until_blocked_in(tid(&poller_tid), libc::SYS_poll);

    let _args = common::checkpoint();
    let mut c = common::Checks::default();
    let slept = sleeper.join().unwrap();
    c.check(
        "sleep(1) slept its whole second",
        slept == 0,
        format!("returned {slept}"),
    );
    let e = sem.join().unwrap();
    c.check(
        "sem_timedwait times out, not EINTR",
        e == i64::from(libc::ETIMEDOUT),
        format!("errno {e}"),
    );
    let a = abs.join().unwrap();
    c.check(
        "absolute clock_nanosleep returns 0",
        a == 0,
        format!("returned {a}"),
    );
    // SAFETY: a one-byte write to our own pipe.
    unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    let p = poller.join().unwrap();
    c.check(
        "poll without a timeout returns with the byte",
        p == 1,
        format!("returned {p}"),
    );
    // The pause goes on until our own SIGUSR1.
    let usr1_before = USR1.load(Ordering::SeqCst);
    // SAFETY: a signal to our own thread.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid(&pauser_tid),
            libc::SIGUSR1,
        )
    };
    let flag = pauser.join().unwrap();
    c.check(
        "pause() returns only for the program's own signal",
        !usr1_before && flag == 1,
        format!("flag before {usr1_before}, at return {flag}"),
    );
    loop {
        let more = getdents(d.as_raw_fd(), 128);
        if more.is_empty() {
            break;
        }
        seen.extend(more);
    }
    let files: Vec<&String> = seen.iter().filter(|n| n.starts_with('f')).collect();
    let mut unique = files.clone();
    unique.sort();
    unique.dedup();
    c.check(
        "a directory listing goes on where it was",
        files.len() == 40 && unique.len() == 40,
        format!("{} entries, {} distinct", files.len(), unique.len()),
    );
    c.finish();
}
