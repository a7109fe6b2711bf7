//! Time to first response, cold start vs. restore, for the three example applications, each pair
//! measured in the same run: examples/counter (Rust), examples/lua (Lua 5.4 embedded through mlua)
//! and examples/python/pandas_warm.py (Debian's CPython with pandas, through libthaw.so).
//! "First response" is the answer line on stdout; process exit is not waited for in the timing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn release_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_bench-app"))
        .parent()
        .unwrap()
        .to_owned();
    for b in ["thaw", "counter", "lua-warm", "libthaw.so"] {
        assert!(
            dir.join(b).exists(),
            "{b} is missing: run `cargo build --release --workspace` first (scripts/bench does)"
        );
    }
    dir
}

/// Spawns `c`, returns the time until its first stdout line, then reaps it.
fn first_line(mut c: Command) -> Duration {
    let t = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let elapsed = t.elapsed();
    assert!(!line.is_empty(), "no answer");
    assert!(child.wait().unwrap().success());
    elapsed
}

/// An application run as `PROGRAM [SCRIPT] - REQUEST` (cold) or `PROGRAM [SCRIPT] IMAGE KEY`
/// (warm up and checkpoint).
struct App {
    name: &'static str,
    program: PathBuf,
    script: Option<PathBuf>,
    request: &'static str,
}

impl App {
    fn command(&self, lib: &Path) -> Command {
        let mut c = thaw_benches::command(&self.program);
        c.env("THAW_LIB", lib).args(&self.script);
        c
    }
}

fn bench(c: &mut Criterion) {
    let dir = release_dir();
    let lib = dir.join("libthaw.so");
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("k.key");
    let trust = work.path().join("k.pub");
    let k = thaw_signing::SecretKey::generate().unwrap();
    k.save_new(&key).unwrap();
    k.public().save_new(&trust).unwrap();
    let apps = [
        App {
            name: "counter",
            program: dir.join("counter"),
            script: None,
            request: "4242",
        },
        App {
            name: "lua",
            program: dir.join("lua-warm"),
            script: None,
            request: "fib(80) + lookup(4242) + total",
        },
        App {
            name: "cpython_pandas",
            program: "/usr/bin/python3".into(),
            script: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/pandas_warm.py"),
            ),
            request: "Oslo",
        },
    ];
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    for app in &apps {
        let image = work.path().join(format!("{}.thaw", app.name));
        let st = app
            .command(&lib)
            .arg(&image)
            .arg(&key)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{} failed to checkpoint", app.name);
        let size = std::fs::metadata(&image).unwrap().len();
        eprintln!("startup/{}: image {} MiB", app.name, size >> 20);
        g.bench_function(BenchmarkId::new("cold", app.name), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let mut c = app.command(&lib);
                        c.args(["-", app.request]);
                        first_line(c)
                    })
                    .sum()
            })
        });
        g.bench_function(BenchmarkId::new("restore", app.name), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let mut c = thaw_benches::command(dir.join("thaw"));
                        c.arg("run")
                            .arg("--trust")
                            .arg(&trust)
                            .arg(&image)
                            .args(["--", app.request]);
                        first_line(c)
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
