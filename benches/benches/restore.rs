//! Restore latency: from starting `thaw run` (lazy memory where permitted, and `--eager`) to the
//! restored process's first instruction after save() returns (it writes one byte to a pipe), for
//! 1, 64 and 512 MiB of heap, beside fork+exec of a trivial binary (/bin/true) in the same run.
//! As root, also in the PID namespace mode (`_ns`), to compare with the host mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn thaw_bin() -> PathBuf {
    let app = Path::new(env!("CARGO_BIN_EXE_bench-app"));
    let thaw = app.with_file_name("thaw");
    assert!(
        thaw.exists(),
        "{} is missing: run `cargo build --release -p thaw-launcher` first (scripts/bench does)",
        thaw.display()
    );
    thaw
}

/// Host PID mode as root (the common deployment), the user namespace otherwise.
fn mode() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        "host"
    } else {
        "ns"
    }
}

/// One restore, until the restored process's first byte of output; `eager` reads all memory
/// before the process runs (the default fills large anonymous mappings lazily where permitted).
fn restore_once(thaw: &Path, image: &Path, trust: &Path, mode: &str, eager: bool) -> Duration {
    let mut c = thaw_benches::command(thaw);
    c.args(["run", "--pid-mode", mode])
        .args(eager.then_some("--eager"))
        .arg("--trust")
        .arg(trust)
        .arg(image);
    thaw_benches::until_first_byte(c)
}

/// A signed image of `bench-app` holding `mib` MiB of heap and `threads` threads.
fn make_image(dir: &Path, key: &Path, mib: usize, threads: usize) -> PathBuf {
    let image = dir.join(format!("{mib}m-{threads}t.thaw"));
    let st = thaw_benches::command(env!("CARGO_BIN_EXE_bench-app"))
        .arg("image")
        .arg(&image)
        .arg(mib.to_string())
        .arg(key)
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    image
}

fn bench(c: &mut Criterion) {
    let thaw = thaw_bin();
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = thaw_benches::keypair(dir.path());

    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    g.bench_function("fork_exec_true_baseline", |b| {
        b.iter(|| assert!(Command::new("/bin/true").status().unwrap().success()))
    });
    for mib in [1usize, 64, 512] {
        let image = make_image(dir.path(), &key, mib, 1);
        let ns = (mode() == "host").then_some(("thaw_run_ns_to_first_instruction", "ns", false));
        for (name, mode, eager) in [
            ("thaw_run_to_first_instruction", mode(), false),
            ("thaw_run_eager_to_first_instruction", mode(), true),
        ]
        .into_iter()
        .chain(ns)
        {
            g.bench_function(BenchmarkId::new(name, mib), |b| {
                b.iter_custom(|n| {
                    (0..n)
                        .map(|_| restore_once(&thaw, &image, &trust, mode, eager))
                        .sum()
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("restore_threads");
    g.sample_size(10);
    for threads in [1usize, 8, 64] {
        let image = make_image(dir.path(), &key, 1, threads);
        g.bench_function(
            BenchmarkId::new("thaw_run_to_first_instruction", threads),
            |b| {
                b.iter_custom(|n| {
                    (0..n)
                        .map(|_| restore_once(&thaw, &image, &trust, mode(), false))
                        .sum()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
