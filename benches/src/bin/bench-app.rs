//! The process the checkpoint and restore benchmarks measure.
//!
//! `bench-app serve MIB [THREADS [shared]]`: fills MIB of heap (with `shared`: of a memfd mapped
//! MAP_SHARED, as ZGC keeps its heap), starts THREADS-1 idle threads (blocked on a condition
//! variable), then answers commands on stdin, one per line, with
//! the total nanoseconds on stdout:
//!   `pause N DIR`  N checkpoints to DIR, summing the time the application was stopped;
//!   `dump N DIR`   the same, summing the whole save() (snapshot, dump, write);
//!   `fork N`       N × (fork, child exits, wait): the baseline.
//!
//! `bench-app image PATH MIB KEY [THREADS]`: the same state, checkpointed to PATH, then exits. When
//! restored, its first act after save() returns is to write one byte to stdout, and it exits;
//! restored with the argument `hold` it then waits for end of file on stdin first; with `fork`
//! it is the fork baseline of `thaw serve`: for each byte read on stdin it forks a child that
//! writes one byte to stdout and exits.
//!
//! `bench-app cold MIB`: the cold start of the same: fills MIB of heap, writes one byte, exits.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn fill(mib: usize) -> Vec<u64> {
    (0..mib * (1 << 17))
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect()
}

/// MIB of a memfd mapped shared, filled like [`fill`]; it stays for the life of the process.
fn fill_shared(mib: usize) {
    let len = mib << 20;
    // SAFETY: a new memfd, sized and mapped shared at an address the kernel chooses; the mapping
    // is filled through a slice of exactly its length and never unmapped.
    unsafe {
        let fd = libc::memfd_create(c"bench-heap".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0 && libc::ftruncate(fd, len as i64) == 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let words = std::slice::from_raw_parts_mut(p.cast::<u64>(), len / 8);
        for (i, w) in words.iter_mut().enumerate() {
            *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

fn fork_wait() -> Duration {
    let t = Instant::now();
    // SAFETY: the child calls only _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    t.elapsed()
}

/// THREADS-1 threads parked on a condition variable for the life of the process.
fn idle_threads(threads: usize) {
    let gate = Box::leak(Box::new((
        std::sync::Mutex::new(()),
        std::sync::Condvar::new(),
    )));
    for i in 1..threads {
        std::thread::Builder::new()
            .name(format!("idle-{i}"))
            .spawn(|| {
                let mut g = gate.0.lock().unwrap();
                loop {
                    g = gate.1.wait(g).unwrap();
                }
            })
            .unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = |i: usize| args.get(i).map_or(1, |t| t.parse().expect("THREADS"));
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            idle_threads(threads(3));
            let mib = args[2].parse().expect("MIB");
            if args.get(4).is_some_and(|a| a == "shared") {
                fill_shared(mib);
                serve(0)
            } else {
                serve(mib)
            }
        }
        Some("cold") => {
            let heap = fill(args[2].parse().expect("MIB"));
            // SAFETY: a one-byte write to stdout.
            unsafe { libc::write(1, b"r".as_ptr().cast(), 1) };
            std::hint::black_box(heap);
        }
        Some("image") => {
            idle_threads(threads(5));
            image(&args[2], args[3].parse().expect("MIB"), &args[4])
        }
        _ => {
            eprintln!("usage: bench-app serve MIB | image PATH MIB KEY");
            std::process::exit(64);
        }
    }
}

fn serve(mib: usize) {
    let heap = fill(mib);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let n: u32 = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
        let mut total = Duration::ZERO;
        for i in 0..n {
            match words[0] {
                "fork" => total += fork_wait(),
                cmd @ ("pause" | "dump") => {
                    let path = format!("{}/bench-{i}.thaw", words[2]);
                    let t = Instant::now();
                    match thaw::Checkpoint::to(&path)
                        .unsupported_fds(thaw::FdAction::Drop)
                        .save()
                    {
                        Ok(thaw::Outcome::Saved(info)) => {
                            total += if cmd == "pause" {
                                info.pause
                            } else {
                                t.elapsed()
                            };
                        }
                        other => panic!("checkpoint: {other:?}"),
                    }
                    let _ = std::fs::remove_file(&path);
                }
                other => panic!("unknown command {other}"),
            }
        }
        writeln!(out, "{}", total.as_nanos()).unwrap();
        out.flush().unwrap();
    }
    std::hint::black_box(heap);
}

fn image(path: &str, mib: usize, key: &str) {
    let heap = fill(mib);
    match thaw::Checkpoint::to(path)
        .unsupported_fds(thaw::FdAction::Drop)
        .sign_with(key)
        .exit_after_save(true)
        .save()
    {
        Ok(thaw::Outcome::Restored(r)) => {
            // SAFETY: a one-byte write to stdout, before anything else.
            unsafe { libc::write(1, b"r".as_ptr().cast(), 1) };
            match r.args().first().and_then(|a| a.to_str()) {
                Some("hold") => {
                    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
                }
                Some("fork") => forker(),
                _ => {}
            }
            std::hint::black_box(heap);
            std::process::exit(0);
        }
        other => panic!("checkpoint: {other:?}"),
    }
}

/// For each byte on stdin: fork; the child writes one byte to stdout and exits; reap it.
fn forker() {
    let mut byte = [0u8; 1];
    // SAFETY: reads into a one-byte buffer.
    while unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) } == 1 {
        // SAFETY: the child only writes and exits (async-signal-safe calls).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::write(1, b"f".as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}
