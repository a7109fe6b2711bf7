//! Threads: a pool of 8 workers on a Mutex/Condvar queue (all but one idle on the condvar, one
//! busy computing), plus threads blocked in a pipe read, in a sleep, in a futex wait with a
//! timeout, and in epoll_wait on an eventfd. After restore every thread has its TID, its name
//! and its thread-locals (Rust `thread_local!` and C `__thread`); the pool runs the work given in
//! the restore arguments and everything joins cleanly.

#[path = "common.rs"]
mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

extern "C" {
    fn zdtm_set_c_tls(v: i64);
    fn zdtm_get_c_tls() -> i64;
}

thread_local! {
    static RUST_TLS: Cell<u64> = const { Cell::new(0) };
}

enum Job {
    Add(u64),
    Quit,
}

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    done: Mutex<u64>,
    done_cv: Condvar,
    sum: AtomicU64,
}

/// What each thread reports about itself, before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Me {
    tid: i32,
    name: String,
    rust_tls: u64,
    c_tls: i64,
}

fn me() -> Me {
    Me {
        // SAFETY: gettid has no preconditions.
        tid: unsafe { libc::gettid() },
        name: std::fs::read_to_string("/proc/thread-self/comm")
            .unwrap()
            .trim()
            .to_owned(),
        rust_tls: RUST_TLS.with(Cell::get),
        // SAFETY: reads this thread's own C thread-local.
        c_tls: unsafe { zdtm_get_c_tls() },
    }
}

fn set_tls(v: u64) {
    RUST_TLS.with(|c| c.set(v));
    // SAFETY: writes this thread's own C thread-local.
    unsafe { zdtm_set_c_tls(-(v as i64)) };
}

type Reports = Arc<Mutex<Vec<(String, Me)>>>;

fn spawn(
    name: &str,
    reports: &Reports,
    tls: u64,
    body: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<Me> {
    let reports = reports.clone();
    let label = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            set_tls(tls);
            reports.lock().unwrap().push((label, me()));
            body();
            me()
        })
        .unwrap()
}

fn main() {
    let reports: Reports = Arc::new(Mutex::new(Vec::new()));
    let pool = Arc::new(Pool {
        queue: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        done: Mutex::new(0),
        done_cv: Condvar::new(),
        sum: AtomicU64::new(0),
    });
    let busy_stop = Arc::new(AtomicBool::new(false));
    let busy_running = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..8u64 {
        let pool = pool.clone();
        let (stop, running) = (busy_stop.clone(), busy_running.clone());
        handles.push(spawn(
            &format!("worker-{i}"),
            &reports,
            100 + i,
            move || {
                if i == 7 {
                    // The busy one: computes until told to stop, then joins the pool.
                    running.store(true, Ordering::SeqCst);
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                        }
                        std::hint::black_box(x);
                    }
                }
                loop {
                    let job = {
                        let mut q = pool.queue.lock().unwrap();
                        loop {
                            if let Some(j) = q.pop_front() {
                                break j;
                            }
                            q = pool.ready.wait(q).unwrap();
                        }
                    };
                    match job {
                        Job::Add(v) => {
                            pool.sum.fetch_add(
                                v * RUST_TLS.with(Cell::get) / (100 + i),
                                Ordering::SeqCst,
                            );
                            *pool.done.lock().unwrap() += 1;
                            pool.done_cv.notify_all();
                        }
                        Job::Quit => return,
                    }
                }
            },
        ));
    }
    // A thread blocked reading an internal pipe.
    let mut fds = [0i32; 2];
    // SAFETY: pipe() fills two fresh descriptors.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: the descriptors are fresh and owned here.
    let (mut pr, mut pw) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    handles.push(spawn("pipe-reader", &reports, 200, move || {
        let mut b = [0u8; 1];
        pr.read_exact(&mut b).unwrap();
        assert_eq!(b[0], b'!');
    }));
    // A thread sleeping, and one in a futex wait with a timeout.
    let wake = Arc::new(AtomicBool::new(false));
    let w = wake.clone();
    handles.push(spawn("sleeper", &reports, 300, move || {
        while !w.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }));
    let timed = Arc::new((Mutex::new(false), Condvar::new()));
    let t2 = timed.clone();
    handles.push(spawn("timed-wait", &reports, 400, move || {
        let (m, cv) = &*t2;
        let mut go = m.lock().unwrap();
        while !*go {
            go = cv.wait_timeout(go, Duration::from_secs(3600)).unwrap().0;
        }
    }));
    // A thread in epoll_wait on an eventfd, as an event loop (mio, tokio) waits for its waker.
    // SAFETY: plain descriptor creation; both are owned by this function from here on.
    let (ep, efd) = unsafe {
        (
            libc::epoll_create1(libc::EPOLL_CLOEXEC),
            libc::eventfd(0, libc::EFD_NONBLOCK),
        )
    };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0xfeed,
    };
    // SAFETY: registering a valid descriptor with a valid event.
    let added = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) };
    assert_eq!(added, 0);
    let woke = Arc::new(AtomicU64::new(0));
    let woke2 = woke.clone();
    handles.push(spawn("epoller", &reports, 500, move || loop {
        let mut out = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: waiting on our epoll descriptor into a valid buffer; the checkpoint signal makes
        // it return EINTR, and we wait again, as event loops do.
        let n = unsafe { libc::epoll_wait(ep, &mut out, 1, -1) };
        if n == 1 {
            let mut count = 0u64;
            // SAFETY: reading the eventfd counter into a valid u64.
            unsafe { libc::read(efd, (&mut count as *mut u64).cast(), 8) };
            woke2.store(count ^ out.u64, Ordering::SeqCst);
            return;
        }
    }));
    // Warm: every thread has reported itself and the pool has done some work.
    while reports.lock().unwrap().len() < handles.len() || !busy_running.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    for v in 1..=100 {
        pool.queue.lock().unwrap().push_back(Job::Add(v));
        pool.ready.notify_one();
    }
    {
        let mut d = pool.done.lock().unwrap();
        while *d < 100 {
            d = pool.done_cv.wait(d).unwrap();
        }
    }
    set_tls(1);
    let main_before = me();
    let before: Vec<(String, Me)> = reports.lock().unwrap().clone();
    let caps = common::thread_caps();

    let args = common::checkpoint();

    let mut c = common::Checks::default();
    let caps_now = common::thread_caps();
    c.check(
        "capabilities of every thread",
        caps_now == caps,
        format!("{caps_now:?} != {caps:?}"),
    );
    c.check(
        "main thread",
        me() == main_before,
        format!("{:?} != {main_before:?}", me()),
    );
    let jobs: u64 = args
        .first()
        .and_then(|a| a.to_str()?.parse().ok())
        .unwrap_or(0);
    let sum_before = pool.sum.load(Ordering::SeqCst);
    for v in 1..=jobs {
        pool.queue.lock().unwrap().push_back(Job::Add(v));
        pool.ready.notify_one();
    }
    busy_stop.store(true, Ordering::SeqCst);
    {
        let mut d = pool.done.lock().unwrap();
        while *d < 100 + jobs {
            d = pool.done_cv.wait(d).unwrap();
        }
    }
    let added = pool.sum.load(Ordering::SeqCst) - sum_before;
    c.check(
        "pool ran the new work",
        added == jobs * (jobs + 1) / 2,
        format!("sum {added}"),
    );
    for _ in 0..8 {
        pool.queue.lock().unwrap().push_back(Job::Quit);
    }
    pool.ready.notify_all();
    pw.write_all(b"!").unwrap();
    let seven = 7u64;
    // SAFETY: writing a u64 to the eventfd wakes the epoll thread.
    unsafe { libc::write(efd, (&seven as *const u64).cast(), 8) };
    wake.store(true, Ordering::SeqCst);
    *timed.0.lock().unwrap() = true;
    timed.1.notify_all();
    let after: Vec<Me> = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect();
    c.check(
        "every thread joined",
        after.len() == before.len(),
        after.len(),
    );
    let w = woke.load(Ordering::SeqCst);
    c.check("epoll and eventfd", w == 7 ^ 0xfeed, format!("{w:#x}"));
    for (name, b) in &before {
        let a = after.iter().find(|a| a.tid == b.tid);
        c.check(
            &format!("{name} tid, name and thread-locals"),
            a == Some(b),
            format!("{a:?} != {b:?}"),
        );
    }
    c.finish();
}
