//! A signal sent to a thread while the checkpoint has it stopped, after its handler read its
//! queue (as SBCL's collector sends its stop signal): a fork does not copy the queue, so the
//! snapshot would lack the signal while the sender was past sending it. The checkpoint starts
//! again instead. Made deterministic with the SDK's debug-build hook THAW_TEST_SIGNAL_PARKED
//! (the checkpointing thread sends SIGUSR1 to the worker once every thread is parked, in the
//! first attempt). The worker's handler counts: in the image the count is 1 (handled in the
//! first life before the second attempt), never 0 (the signal lost) nor 2 after restore.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static HANDLED: AtomicU64 = AtomicU64::new(0);
static WORKER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_usr1(_: i32) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn main() {
    // SAFETY: a handler that only counts, installed before any thread starts.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let worker = std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        WORKER.store(unsafe { libc::gettid() }, Ordering::Release);
        loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        }
    });
    while WORKER.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    // The main thread takes no SIGUSR1: only the worker can.
    // SAFETY: a valid set for pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let hook = format!("{},{}", WORKER.load(Ordering::Acquire), libc::SIGUSR1);
    // SAFETY: set before the checkpoint, while this is the only thread touching the environment.
    unsafe { std::env::set_var("THAW_TEST_SIGNAL_PARKED", hook) };
    common::checkpoint();
    let mut c = common::Checks::default();
    let n = HANDLED.load(Ordering::Relaxed);
    c.check(
        "a signal sent to a stopped thread is handled once, in the image",
        n == 1,
        format!("handled {n} times"),
    );
    drop(worker);
    c.finish()
}
