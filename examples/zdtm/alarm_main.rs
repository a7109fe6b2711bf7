//! A timer's signal for the process goes to the main thread, as the kernel gives it there while
//! the main thread lets it in, also when it comes due while the process is away: the main
//! thread has a SIGALRM handler, two other threads run (a Perl ithread is an interpreter of its
//! own: one that takes SIGALRM without a handler of its own exits). ITIMER_REAL is armed with
//! an hour left; the test restores the image two hours later (a time namespace ahead), so it
//! came due while away. Checkpointed from the main thread, or (`PROG IMAGE KEY worker`) from
//! one of the others. After restore the main thread, and it alone, takes the signal.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static MAIN_TOOK: AtomicU64 = AtomicU64::new(0);
static OTHERS_TOOK: AtomicU64 = AtomicU64::new(0);
static MAIN_TID: AtomicI32 = AtomicI32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: i32) {
    if thaw::sys::gettid() == MAIN_TID.load(Ordering::SeqCst) {
        MAIN_TOOK.fetch_add(1, Ordering::SeqCst);
    } else {
        OTHERS_TOOK.fetch_add(1, Ordering::SeqCst);
    }
}

fn main() {
    let from_worker = common::argv().2.iter().any(|a| a == "worker");
    MAIN_TID.store(thaw::sys::gettid(), Ordering::SeqCst);
    // SAFETY: installs a handler that only counts; arms ITIMER_REAL from a valid itimerval.
    unsafe {
        libc::signal(libc::SIGALRM, on_alarm as *const () as usize);
        let t = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 3600,
                tv_usec: 0,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
    }
    let busy: Vec<_> = (0..2)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("busy{i}"))
                .spawn(|| {
                    let mut x = 0u64;
                    while !STOP.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
                .unwrap()
        })
        .collect();
    if from_worker {
        std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(common::checkpoint)
            .unwrap()
            .join()
            .unwrap();
    } else {
        common::checkpoint();
    }
    let mut c = common::Checks::default();
    let end = Instant::now() + Duration::from_secs(10);
    while MAIN_TOOK.load(Ordering::SeqCst) + OTHERS_TOOK.load(Ordering::SeqCst) == 0
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    STOP.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|t| t.join().unwrap());
    let (main, others) = (
        MAIN_TOOK.load(Ordering::SeqCst),
        OTHERS_TOOK.load(Ordering::SeqCst),
    );
    c.check(
        "the timer that came due while away signals the main thread, and it alone",
        main == 1 && others == 0,
        format!("main thread took it {main} time(s), the others {others}"),
    );
    c.finish();
}
