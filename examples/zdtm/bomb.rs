//! Threads that start threads while the checkpoint stops them, as CRIU's transition/thread-bomb
//! does: in each of `CHAINS` chains a thread starts the next one (named `chainK`) and exits, so
//! any list of the threads is out of date at once. The checkpoint stops those it listed, then
//! lists again and stops the ones started meanwhile, until a list has none new (a stopped
//! thread starts none); it used to start over and gave up after 24 attempts. Checkpointed from
//! a thread of its own while the main thread waits for it. After restore every chain goes on.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CHAINS: usize = 24;
static STEPS: [AtomicU64; CHAINS] = [const { AtomicU64::new(0) }; CHAINS];

/// One link of chain `k`: counts itself and starts the next.
fn link(k: usize) {
    STEPS[k].fetch_add(1, Ordering::Relaxed);
    let next = std::thread::Builder::new()
        .name(format!("chain{k}"))
        .stack_size(64 << 10)
        .spawn(move || link(k));
    if let Err(e) = next {
        eprintln!("FAIL chain {k}: {e}");
        std::process::exit(1);
    }
}

fn steps() -> Vec<u64> {
    STEPS.iter().map(|s| s.load(Ordering::Relaxed)).collect()
}

fn main() {
    for k in 0..CHAINS {
        link(k);
    }
    // Every chain running before the checkpoint.
    let end = Instant::now() + Duration::from_secs(60);
    while steps().iter().any(|&n| n < 10) && Instant::now() < end {
        std::thread::yield_now();
    }
    let checkpointer = std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(|| {
            common::checkpoint();
            let mut c = common::Checks::default();
            // Each chain starts 20 more threads (bounded: a chain that stopped fails).
            let from = steps();
            let end = Instant::now() + Duration::from_secs(60);
            let moved = |now: &[u64]| now.iter().zip(&from).all(|(n, f)| *n >= f + 20);
            while !moved(&steps()) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            let now = steps();
            let stuck: Vec<usize> = (0..CHAINS).filter(|&k| now[k] < from[k] + 20).collect();
            c.check(
                "threads started during the checkpoint: every chain goes on after restore",
                stuck.is_empty(),
                format!("chains {stuck:?} stopped (steps {now:?}, from {from:?})"),
            );
            c.finish()
        })
        .unwrap();
    let _ = checkpointer.join();
}
