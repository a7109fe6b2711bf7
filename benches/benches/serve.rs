//! `thaw serve` (as root): an instance forked from the template to its first instruction, beside
//! a fork of a process holding the same memory (the baseline the issue names), `thaw run
//! --pid-mode ns` and a cold start of the same program, for 1 and 64 MiB of heap; CPython +
//! pandas to its answer, served vs cold; and the density of 1, 8 and 64 concurrent instances
//! (PSS, printed; not a timing).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn release_dir() -> PathBuf {
    thaw_benches::release_dir(env!("CARGO_BIN_EXE_bench-app"), &["thaw", "libthaw.so"])
}

/// A running `thaw serve`, killed when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
    template: i32,
}

impl Server {
    fn start(thaw: &Path, trust: &Path, image: &Path, socket: PathBuf, opts: &[&str]) -> Server {
        let mut child = thaw_benches::command(thaw)
            .args(["serve", "--max-instances", "128"])
            .args(opts)
            .arg("--trust")
            .arg(trust)
            .arg("--socket")
            .arg(&socket)
            .arg(image)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("thaw: serving") {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "thaw serve ended");
        }
        let template = line
            .split("(template ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .and_then(|t| t.parse().ok())
            .unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Server {
            child,
            socket,
            template,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an instance with these arguments and a pipe for stdout; returns it and the pipe.
fn instance(s: &Server, args: &[&str]) -> (thaw::serve::Instance, std::io::PipeReader) {
    let (r, w) = std::io::pipe().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let i = thaw::serve::Call::new()
        .args(args)
        .stdio(null.as_fd(), w.as_fd(), std::io::stderr().as_fd())
        .start(&s.socket)
        .unwrap();
    (i, r)
}

/// One instance, from asking for it to its first byte of output.
fn instance_first_byte(s: &Server) -> Duration {
    let t = Instant::now();
    let (i, mut out) = instance(s, &[]);
    let mut byte = [0u8; 1];
    out.read_exact(&mut byte).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(i.wait().unwrap(), 0);
    elapsed
}

fn make_image(dir: &Path, key: &Path, mib: usize) -> PathBuf {
    let image = dir.join(format!("{mib}m.thaw"));
    let st = thaw_benches::command(env!("CARGO_BIN_EXE_bench-app"))
        .arg("image")
        .arg(&image)
        .arg(mib.to_string())
        .arg(key)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    image
}

/// The image restored eagerly (all memory present, as in the template) with the argument `fork`:
/// each byte written to it is a fork whose child writes a byte back.
struct Forker {
    child: Child,
}

impl Forker {
    fn start(thaw: &Path, trust: &Path, image: &Path) -> Forker {
        let mut child = thaw_benches::command(thaw)
            .args(["run", "--eager", "--pid-mode", "host", "--trust"])
            .arg(trust)
            .arg(image)
            .args(["--", "fork"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut byte = [0u8; 1];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut byte)
            .unwrap();
        Forker { child }
    }

    fn fork(&mut self) -> Duration {
        let t = Instant::now();
        self.child.stdin.as_mut().unwrap().write_all(b"f").unwrap();
        let mut byte = [0u8; 1];
        self.child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut byte)
            .unwrap();
        t.elapsed()
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn bench(c: &mut Criterion) {
    if !is_root() {
        eprintln!("serve: skipped (thaw serve needs root)");
        return;
    }
    let dir = release_dir();
    let thaw = dir.join("thaw");
    let tmp = tempfile::tempdir().unwrap();
    let (key, trust) = thaw_benches::keypair(tmp.path());

    let mut g = c.benchmark_group("serve");
    g.sample_size(20);
    for mib in [1usize, 64] {
        let image = make_image(tmp.path(), &key, mib);
        let mut forker = Forker::start(&thaw, &trust, &image);
        g.bench_with_input(
            BenchmarkId::new("fork_of_template_baseline", mib),
            &mib,
            |b, _| b.iter_custom(|n| thaw_benches::each(n, || forker.fork())),
        );
        drop(forker);
        let server = Server::start(&thaw, &trust, &image, tmp.path().join("s.sock"), &[]);
        g.bench_with_input(
            BenchmarkId::new("instance_to_first_instruction", mib),
            &mib,
            |b, _| b.iter_custom(|n| thaw_benches::each(n, || instance_first_byte(&server))),
        );
        g.bench_with_input(
            BenchmarkId::new("thaw_run_via_to_first_instruction", mib),
            &mib,
            |b, _| {
                b.iter_custom(|n| {
                    thaw_benches::each(n, || {
                        let mut c = thaw_benches::command(&thaw);
                        c.args(["run", "--via"]).arg(&server.socket);
                        thaw_benches::until_first_byte(c)
                    })
                })
            },
        );
        drop(server);
        g.bench_with_input(
            BenchmarkId::new("thaw_run_ns_to_first_instruction", mib),
            &mib,
            |b, _| {
                b.iter_custom(|n| {
                    thaw_benches::each(n, || {
                        let mut c = thaw_benches::command(&thaw);
                        c.args(["run", "--pid-mode", "ns", "--trust"])
                            .arg(&trust)
                            .arg(&image);
                        thaw_benches::until_first_byte(c)
                    })
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("cold_start", mib), &mib, |b, &mib| {
            b.iter_custom(|n| {
                thaw_benches::each(n, || {
                    let mut c = thaw_benches::command(env!("CARGO_BIN_EXE_bench-app"));
                    c.args(["cold", &mib.to_string()]);
                    thaw_benches::until_first_byte(c)
                })
            })
        });
        paired(&thaw, &trust, &image, tmp.path(), mib);
    }
    g.finish();
    pandas(c, &dir, &thaw, tmp.path(), &key, &trust);
    density(&thaw, tmp.path(), &key, &trust);
}

/// Alternating pairs of measurements for [`paired`].
const PAIRS: usize = 1000;

/// An instance to its first instruction and a fork of the template, alternately, `PAIRS` times
/// each in one run: their medians and the ratio, printed. Medians, beside criterion's means
/// above: on a shared machine the means move with the tail of its noise (a moment without a
/// CPU), which alternating pairs also spread evenly over both.
fn paired(thaw: &Path, trust: &Path, image: &Path, tmp: &Path, mib: usize) {
    let mut forker = Forker::start(thaw, trust, image);
    let server = Server::start(thaw, trust, image, tmp.join("paired.sock"), &[]);
    for _ in 0..PAIRS / 10 {
        instance_first_byte(&server);
        forker.fork();
    }
    let (mut fork, mut inst) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        fork.push(forker.fork());
        inst.push(instance_first_byte(&server));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    let (fm, im) = (mean(&fork), mean(&inst));
    let (f, i) = (median(&mut fork), median(&mut inst));
    let met = |r: f64| if r <= 2.0 { "met" } else { "not met" };
    println!(
        "serve/paired/{mib}: over {PAIRS} alternating pairs, instance to its first instruction median {i:.0} us (mean {im:.0}), fork of a process holding the same memory median {f:.0} us (mean {fm:.0}): {:.2}x by the medians, {:.2}x by the means (goal <= 2x: {} by the medians, {} by the means)",
        i / f,
        im / fm,
        met(i / f),
        met(im / fm)
    );
}

/// CPython + pandas (examples/python/pandas_warm.py) to its answer: cold, served (the Rust
/// API and `thaw run --via`) and restored by `thaw run`.
fn pandas(c: &mut Criterion, dir: &Path, thaw: &Path, tmp: &Path, key: &Path, trust: &Path) {
    let python = "/usr/bin/python3";
    let has_pandas = Command::new(python)
        .args(["-c", "import pandas"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pandas {
        eprintln!(
            "serve/pandas: skipped (python3-pandas is not installed; scripts/setup installs it)"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/pandas_warm.py");
    let image = tmp.join("pandas.thaw");
    let st = thaw_benches::command(python)
        .arg(&script)
        .arg(&image)
        .arg(key)
        .env("THAW_LIB", dir.join("libthaw.so"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pandas_warm.py did not checkpoint");
    let first_line = |mut c: Command| {
        c.stdin(Stdio::null());
        let (t, line, mut rest, child) = thaw_benches::until_first_line(c);
        std::io::copy(&mut rest, &mut std::io::sink()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success() && line.contains("Oslo"), "{line:?}");
        t
    };
    let mut g = c.benchmark_group("serve_pandas");
    g.sample_size(10);
    g.bench_function("cold_start_to_answer", |b| {
        b.iter_custom(|n| {
            thaw_benches::each(n, || {
                let mut c = thaw_benches::command(python);
                c.arg(&script).args(["-", "Oslo"]);
                first_line(c)
            })
        })
    });
    g.bench_function("thaw_run_to_answer", |b| {
        b.iter_custom(|n| {
            thaw_benches::each(n, || {
                let mut c = thaw_benches::command(thaw);
                c.args(["run", "--trust"])
                    .arg(trust)
                    .arg(&image)
                    .args(["--", "Oslo"]);
                first_line(c)
            })
        })
    });
    let server = Server::start(thaw, trust, &image, tmp.join("p.sock"), &[]);
    g.bench_function("thaw_run_via_to_answer", |b| {
        b.iter_custom(|n| {
            thaw_benches::each(n, || {
                let mut c = thaw_benches::command(thaw);
                c.args(["run", "--via"])
                    .arg(&server.socket)
                    .args(["--", "Oslo"]);
                first_line(c)
            })
        })
    });
    g.bench_function("instance_to_answer", |b| {
        b.iter_custom(|n| {
            thaw_benches::each(n, || {
                let t = Instant::now();
                let (i, out) = instance(&server, &["Oslo"]);
                let mut line = String::new();
                let mut out = BufReader::new(out);
                out.read_line(&mut line).unwrap();
                let elapsed = t.elapsed();
                std::io::copy(&mut out, &mut std::io::sink()).unwrap();
                assert!(line.contains("Oslo"), "{line:?}");
                assert_eq!(i.wait().unwrap(), 0);
                elapsed
            })
        })
    });
    g.finish();
}

/// (Pss, Private_Clean + Private_Dirty) of a process, in KiB.
fn pss(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// Total PSS of the template and 1, 8 and 64 instances of a 16 MiB image that hold still
/// after their first instruction, against the image's memory; printed for docs/benchmarks.md.
fn density(thaw: &Path, tmp: &Path, key: &Path, trust: &Path) {
    let image = make_image(tmp, key, 16);
    let image_kib = std::fs::metadata(&image).unwrap().len() / 1024;
    println!("serve/density: image {image_kib} KiB (16 MiB heap)");
    for n in [1usize, 8, 64] {
        let server = Server::start(
            thaw,
            trust,
            &image,
            tmp.join(format!("d{n}.sock")),
            &["--spares", "0"],
        );
        let mut held = Vec::new();
        for _ in 0..n {
            let (r, w) = std::io::pipe().unwrap();
            let (hold_r, hold_w) = std::io::pipe().unwrap();
            let i = thaw::serve::Call::new()
                .arg("hold")
                .stdio(hold_r.as_fd(), w.as_fd(), std::io::stderr().as_fd())
                .start(&server.socket)
                .unwrap();
            let mut byte = [0u8; 1];
            (&r).read_exact(&mut byte).unwrap();
            held.push((i, hold_w));
        }
        let (mut total, mut private) = (pss(server.template).0, 0);
        let mut support = pss(server.child.id() as i32).0;
        for p in children(server.child.id() as i32) {
            if p == server.template {
                continue;
            }
            let (p_pss, p_private) = pss(p);
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let is_init = status
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"));
            if is_init {
                support += p_pss;
            } else {
                total += p_pss;
                private += p_private;
            }
        }
        println!(
            "serve/density: {n} instances: template + instances PSS {total} KiB ({:.2}x the image; {} KiB per instance), instances' private {private} KiB; the server and its namespace inits {support} KiB; goal <= 2x image + private: {}",
            total as f64 / image_kib as f64,
            total / n as u64,
            if total <= 2 * image_kib + private { "met" } else { "NOT met" }
        );
        for (i, hold) in held {
            drop(hold);
            assert_eq!(i.wait().unwrap(), 0);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
