//! Threads that come and go while the checkpoint stops the process: a spawner thread starts and
//! joins a short-lived thread every millisecond, as a pool that grows and shrinks does. A thread
//! may exit between the listing and its signal, or be created after the listing. The first life
//! checkpoints several times over (each must succeed), then once more to IMAGE. After restore
//! the spawner goes on: every thread the restored program waits for exists.
//!
//! `EXTRA`: how many checkpoints to take before the last one (default 10).

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static JOINED: AtomicU64 = AtomicU64::new(0);

/// Waits until `counter` has gone `more` past where it is, at most `bound`: whether it did.
fn progress(counter: &AtomicU64, more: u64, bound: Duration) -> bool {
    let from = counter.load(Ordering::Relaxed);
    let end = Instant::now() + bound;
    while counter.load(Ordering::Relaxed) < from + more {
        if Instant::now() > end {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

fn main() {
    let (image, key, extra) = common::argv();
    let rounds: u32 = extra.first().map_or(10, |n| n.parse().unwrap());
    std::thread::Builder::new()
        .name("spawner".into())
        .spawn(|| loop {
            std::thread::spawn(|| std::hint::black_box(1 + 1))
                .join()
                .unwrap();
            JOINED.fetch_add(1, Ordering::Relaxed);
            std::hint::spin_loop();
        })
        .unwrap();
    let bound = Duration::from_secs(20);
    assert!(progress(&JOINED, 20, bound));
    let scratch = format!("{image}.scratch");
    for i in 0..rounds {
        let mut cp = thaw::Checkpoint::to(&scratch);
        if let Some(k) = &key {
            cp = cp.sign_with(k);
        }
        if let Err(e) = cp.save() {
            println!("FAIL checkpoint {i} of {rounds} while threads come and go: {e}");
            std::process::exit(1);
        }
        // Churn again before the next one.
        assert!(progress(&JOINED, 5, bound));
    }
    let _ = std::fs::remove_file(&scratch);
    drop(common::restored());
    let mut c = common::Checks::default();
    let joined = progress(&JOINED, 50, bound);
    c.check(
        "the spawner goes on starting and joining threads",
        joined,
        format!("stuck at {}", JOINED.load(Ordering::Relaxed)),
    );
    c.finish()
}
