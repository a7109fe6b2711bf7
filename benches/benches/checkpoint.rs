//! Checkpoint pause (how long the application is stopped) and total dump time for 1, 64 and
//! 512 MiB of heap, beside fork() + exit + wait of the same process, in the same run; and the
//! pause with 64 MiB of shared memory (a memfd, as ZGC's heap), which is copied during the pause.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

struct App {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl App {
    fn start(mib: usize, threads: usize) -> App {
        Self::start_with(mib, threads, "private")
    }

    fn start_with(mib: usize, threads: usize, memory: &str) -> App {
        let mut child = thaw_benches::command(env!("CARGO_BIN_EXE_bench-app"))
            .args(["serve", &mib.to_string(), &threads.to_string(), memory])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        App { child, out }
    }

    fn ask(&mut self, cmd: &str) -> Duration {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        Duration::from_nanos(line.trim().parse().expect("nanoseconds"))
    }
}

fn image_dir() -> tempfile::TempDir {
    // tmpfs where there is one, so that the disk does not dominate the dump.
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = image_dir();
    let d = dir.path().display().to_string();
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10);
    for mib in [1usize, 64, 512] {
        let mut app = App::start(mib, 1);
        g.bench_function(BenchmarkId::new("fork_baseline", mib), |b| {
            b.iter_custom(|n| app.ask(&format!("fork {n}")))
        });
        g.bench_function(BenchmarkId::new("pause", mib), |b| {
            b.iter_custom(|n| app.ask(&format!("pause {n} {d}")))
        });
        g.measurement_time(Duration::from_secs(if mib >= 512 { 20 } else { 5 }));
        g.bench_function(BenchmarkId::new("dump_total", mib), |b| {
            b.iter_custom(|n| app.ask(&format!("dump {n} {d}")))
        });
        drop(app.child.stdin.take());
        let _ = app.child.wait();
    }
    g.finish();

    // Shared memory is copied while the threads are parked: 64 MiB in a memfd vs on the heap.
    let mut g = c.benchmark_group("checkpoint_shared");
    g.sample_size(10);
    for memory in ["private", "shared"] {
        let mut app = App::start_with(64, 1, memory);
        g.bench_function(BenchmarkId::new("pause", memory), |b| {
            b.iter_custom(|n| app.ask(&format!("pause {n} {d}")))
        });
        drop(app.child.stdin.take());
        let _ = app.child.wait();
    }
    g.finish();

    // Threads: every thread is signalled and parks before the fork (1 MiB of heap).
    let mut g = c.benchmark_group("checkpoint_threads");
    g.sample_size(10);
    for threads in [1usize, 8, 64] {
        let mut app = App::start(1, threads);
        g.bench_function(BenchmarkId::new("fork_baseline", threads), |b| {
            b.iter_custom(|n| app.ask(&format!("fork {n}")))
        });
        g.bench_function(BenchmarkId::new("pause", threads), |b| {
            b.iter_custom(|n| app.ask(&format!("pause {n} {d}")))
        });
        drop(app.child.stdin.take());
        let _ = app.child.kill();
        let _ = app.child.wait();
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
