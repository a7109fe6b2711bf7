//! Threads and descriptors that come and go while the checkpoint stops the process: a spawner
//! thread starts and joins short-lived threads back to back, as a pool that grows and shrinks
//! does, and an opener thread opens a file, holds it 5 ms and closes it, again and again. A
//! thread may exit between the listing and its signal, or be created after the listing; a
//! descriptor may be closed or opened between the scan and the snapshot. The first life
//! checkpoints several times over (each must succeed), then once more to IMAGE. After restore
//! the spawner goes on (every thread the restored program waits for exists), and the opener's
//! file gets the number it always got (no descriptor it had closed came back). A toggler thread
//! flips O_NONBLOCK on a socket every 3 ms (under a lock, with a record of what it set): after
//! restore the socket's flags are what the record says. A file held at the last number the soft
//! descriptor limit allows (48 here) comes back there, under that limit.
//!
//! `EXTRA`: how many checkpoints to take before the last one (default 10).

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static JOINED: AtomicU64 = AtomicU64::new(0);
static OPENED: AtomicU64 = AtomicU64::new(0);
/// The number every open of the opener's got, or -1 once one got another.
static NUMBER: AtomicI64 = AtomicI64::new(0);

/// Whether the toggler's socket is non-blocking, as the toggler last set it (under the lock).
static NONBLOCKING: Mutex<bool> = Mutex::new(false);
static TOGGLED: AtomicU64 = AtomicU64::new(0);

fn nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL on a descriptor of ours.
    unsafe { libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK != 0 }
}

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

const SOFT_NOFILE: u64 = 48;

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

fn main() {
    let (image, key, extra) = common::argv();
    let edge = format!("{image}.edge");
    std::fs::write(&edge, b"at the edge").unwrap();
    let last = SOFT_NOFILE as i32 - 1;
    {
        let f = std::fs::File::open(&edge).unwrap();
        let hard = nofile().1;
        // SAFETY: our own descriptor moved to a free number; our own limit lowered.
        unsafe {
            assert_eq!(libc::dup2(f.as_raw_fd(), last), last);
            let r = libc::rlimit {
                rlim_cur: SOFT_NOFILE,
                rlim_max: hard,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
    }
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
    // (Before the opener starts: made while its file was closed, the pair would take the number
    // its file had, and the next open another.)
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = sock.as_raw_fd();
    let path = format!("{image}.opened");
    std::fs::write(&path, b"x").unwrap();
    std::thread::Builder::new()
        .name("opener".into())
        .spawn(move || loop {
            let f = std::fs::File::open(&path).unwrap();
            let n = i64::from(f.as_raw_fd());
            let _ = NUMBER.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
            if NUMBER.load(Ordering::Relaxed) != n {
                NUMBER.store(-1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
            drop(f);
            OPENED.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        })
        .unwrap();
    std::thread::Builder::new()
        .name("toggler".into())
        .spawn(move || loop {
            {
                let mut set = NONBLOCKING.lock().unwrap();
                *set = !*set;
                sock.set_nonblocking(*set).unwrap();
            }
            TOGGLED.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(3));
        })
        .unwrap();
    let bound = Duration::from_secs(20);
    assert!(progress(&JOINED, 20, bound) && progress(&OPENED, 1, bound));
    // (While a checkpoint runs, its own descriptors take numbers too: only its absence counts.)
    let first = NUMBER.load(Ordering::Relaxed);
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
    NUMBER.store(0, Ordering::Relaxed);
    let mut c = common::Checks::default();
    let joined = progress(&JOINED, 50, bound);
    c.check(
        "the spawner goes on starting and joining threads",
        joined,
        format!("stuck at {}", JOINED.load(Ordering::Relaxed)),
    );
    let opened = progress(&OPENED, 5, bound);
    let number = NUMBER.load(Ordering::Relaxed);
    c.check(
        "the opener's file gets the same number every time",
        opened && first > 0 && number == first,
        format!(
            "opened {opened}, number {number} (first life: {first}; {first} is {:?})",
            std::fs::read_link(format!("/proc/self/fd/{first}"))
        ),
    );
    let (recorded, now) = {
        let set = NONBLOCKING.lock().unwrap();
        (*set, nonblocking(fd))
    };
    c.check(
        "the toggled socket's flags are what its thread last set",
        recorded == now && progress(&TOGGLED, 3, bound),
        format!("set {recorded}, found {now}"),
    );
    let at_edge = std::fs::read_to_string(format!("/proc/self/fd/{last}")).ok();
    c.check(
        "a file at the soft descriptor limit's last number, under that limit",
        at_edge.as_deref() == Some("at the edge") && nofile().0 == SOFT_NOFILE,
        format!("{at_edge:?}, soft limit {}", nofile().0),
    );
    c.finish()
}
