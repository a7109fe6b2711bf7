//! Checkpoint from a thread that is not the initial one, the way the stock `java` launcher runs
//! `main()`: the initial thread waits in `pthread_join` while a second thread ("app-main")
//! starts 22 workers (16 idle on a condvar, 4 computing, 2 in short sleeps) and calls checkpoint.
//!
//! `PROG IMAGE KEY [return]`: with `return`, app-main returns right after the restore (its thread
//! exits while the others may still be leaving the restorer) and the initial thread checks;
//! otherwise app-main checks, runs a round of work on every worker, and then returns.
//!
//! Checks after restore: the same PID and TIDs, and one round of work done by all 22 workers.
//! Before the fix this test came with, a worker still leaving the restorer faulted on the region
//! the checkpointing thread had already unmapped.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

const IDLE: usize = 16;
const BUSY: usize = 4;
const SLEEPERS: usize = 2;

struct Shared {
    round: Mutex<u64>,
    cv: Condvar,
    done: AtomicU64,
    stop: AtomicBool,
}

fn tids() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Every worker does one unit of work per round it sees.
fn worker(s: Arc<Shared>, kind: usize) {
    let mut seen = 0u64;
    let mut x = 1u64;
    while !s.stop.load(Ordering::Acquire) {
        match kind {
            0 => {
                let mut r = s.round.lock().unwrap();
                while *r == seen && !s.stop.load(Ordering::Acquire) {
                    r = s.cv.wait(r).unwrap();
                }
                if *r != seen {
                    seen = *r;
                    s.done.fetch_add(1, Ordering::AcqRel);
                }
            }
            1 => {
                for _ in 0..10_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
        if kind != 0 {
            let r = *s.round.lock().unwrap();
            if r != seen {
                seen = r;
                s.done.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

struct Before {
    pid: u32,
    tids: Vec<i32>,
    app_main: i32,
}

fn check(c: &mut common::Checks, before: &Before) {
    c.check("pid", std::process::id() == before.pid, std::process::id());
    let now = tids();
    c.check(
        "every tid",
        now == before.tids,
        format!("{now:?} != {:?}", before.tids),
    );
}

fn round(c: &mut common::Checks, s: &Shared) {
    let want = s.done.load(Ordering::Acquire) + (IDLE + BUSY + SLEEPERS) as u64;
    {
        let mut r = s.round.lock().unwrap();
        *r += 1;
    }
    s.cv.notify_all();
    while s.done.load(Ordering::Acquire) < want {
        std::thread::yield_now();
    }
    c.check("a round of work on every worker", true, "");
}

fn main() {
    let (_, _, extra) = common::argv();
    let early_return = extra.first().is_some_and(|a| a == "return");
    let s = Arc::new(Shared {
        round: Mutex::new(0),
        cv: Condvar::new(),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let s2 = s.clone();
    let app = std::thread::Builder::new()
        .name("app-main".into())
        .spawn(move || {
            let s = s2;
            let mut workers = Vec::new();
            for i in 0..IDLE + BUSY + SLEEPERS {
                let kind = if i < IDLE {
                    0
                } else if i < IDLE + BUSY {
                    1
                } else {
                    2
                };
                let sw = s.clone();
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("w{i}"))
                        .spawn(move || worker(sw, kind))
                        .unwrap(),
                );
            }
            // Every worker has done the first round: all are in their loops.
            let mut warm = common::Checks::default();
            round(&mut warm, &s);
            let before = Before {
                pid: std::process::id(),
                tids: tids(),
                app_main: gettid(),
            };
            // The checkpointing thread alone runs with no_new_privs (a sandboxed worker).
            // SAFETY: sets this thread's own flag.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let _ = common::checkpoint();
            if early_return {
                return (before, workers);
            }
            let mut c = common::Checks::default();
            check(&mut c, &before);
            c.check(
                "checkpoint returned on app-main",
                gettid() == before.app_main,
                gettid(),
            );
            // SAFETY: a query of this thread's own flag.
            let mine = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            let main = std::fs::read_to_string(format!("/proc/self/task/{}/status", before.pid))
                .unwrap_or_default()
                .lines()
                .any(|l| l == "NoNewPrivs:\t1");
            c.check(
                "no_new_privs: app-main's own, not the main thread's",
                mine == 1 && !main,
                format!("app-main {mine}, main {main}"),
            );
            round(&mut c, &s);
            c.finish();
        })
        .unwrap();
    let (before, _workers) = app.join().unwrap();
    let mut c = common::Checks::default();
    c.check("app-main returned and was joined", true, "");
    // app-main has exited: its TID is gone, every other one is still there. A joined thread can
    // still be listed for a moment (it clears its TID before the kernel lets go of it): wait for
    // it to go, a bounded number of times (a thread that never goes fails the check below).
    let task = format!("/proc/self/task/{}", before.app_main);
    for _ in 0..1_000_000 {
        if !std::path::Path::new(&task).exists() {
            break;
        }
        std::thread::yield_now();
    }
    let mut rest = before.tids.clone();
    rest.retain(|&t| t != before.app_main);
    let before = Before {
        tids: rest,
        ..before
    };
    check(&mut c, &before);
    round(&mut c, &s);
    c.finish();
}
