//! thaw against CRIU v4.2 on the same warm CPython + pandas process (examples/python/pandas_warm.py,
//! about 110 MB resident, 4 threads): time from starting the restore command to the answer line on
//! stdout, all measured in the same run.
//!
//! - `thaw`: the example checkpoints itself through libthaw.so (its first life), and
//!   `thaw run --trust KEY IMAGE -- Oslo` restores it (as root: host PID mode, lazy memory); the
//!   request is the argument. `thaw-eager`: the same with `--eager`.
//! - `criu`: the same script, warmed up the same way, but `thaw.checkpoint` is replaced (the
//!   `WRAPPER` below) by a call that writes `ready` and blocks reading one request line from
//!   stdin; `criu dump -t PID` dumps it from outside while it waits (and kills it). Each restore
//!   is `criu restore -D DIR --inherit-fd fd[0]:pipe:[…] --inherit-fd fd[1]:pipe:[…]` with a
//!   fresh stdin pipe that already holds the request `Oslo` (as thaw's argument is there from the
//!   start) and a fresh stdout pipe; the restored process finishes its `read`, does what thaw's
//!   package does after a restore (reseeds, runs the after-restore hooks) and answers.
//!   This is the `criu-kdat-devshm` build, which keeps its kernel-feature cache ("kerndat") on
//!   /dev/shm, a tmpfs, as CRIU does on a normal system where /run is a tmpfs.
//!   `criu-lazy-pages`: the same build with `criu lazy-pages` (started within the time, ready
//!   on its --status-fd) and `criu restore --lazy-pages`: memory served as it is touched.
//!   `criu-stock`: the stock build (../shared/tools/build-criu.sh builds both from one source),
//!   whose cache would be in /run, not a tmpfs on these machines: it probes the kernel every time.
//!
//! With `--bench`, rounds that run every series in turn come first (medians and ratios to `thaw`
//! are printed; `THAW_CRIU_ROUNDS` rounds, default 10), then criterion's own series.
//! Without CRIU v4.2 at /opt/criu/bin/criu-kdat-devshm, or not as root, it says so and succeeds.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};

const CRIU_DEVSHM: &str = "/opt/criu/bin/criu-kdat-devshm";
const CRIU_STOCK: &str = "/opt/criu/bin/criu";
const REQUEST: &str = "Oslo";
const ANSWER: &str = "python: Oslo: total ";

/// `python3 -c WRAPPER SCRIPT SDK_PYTHON`: runs SCRIPT as `SCRIPT criu`, with thaw's Python
/// package imported from SDK_PYTHON and its `checkpoint` replaced by a wait for one request line
/// on stdin (blocking in read(2), no polling). What follows the read is what the real
/// `thaw.checkpoint` does after a restore, with the package's own functions.
const WRAPPER: &str = r#"
import os, runpy, sys
script, sdk = sys.argv[1], sys.argv[2]
sys.path.insert(0, sdk)
import thaw

def checkpoint(image, key=None, exit_after_save=False, fds=None, **kw):
    os.write(1, b"ready\n")
    req = b""
    while not req.endswith(b"\n"):
        chunk = os.read(0, 4096)  # criu dump takes the process here; restored, it reads on
        if not chunk:
            sys.exit("criu bench: stdin closed before a request")
        req += chunk
    # (thaw.is_restored() asks libthaw.so, which counts restores of its own only.)
    thaw.is_restored = lambda: True
    thaw.reseed()
    with thaw._hooks_lock:
        entries = list(thaw._entries)
    errors = thaw._run_after(entries)
    if errors:
        raise errors[0]
    return thaw.Restored([req.decode().rstrip("\n")], dict(os.environ))

thaw.checkpoint = checkpoint
sys.argv = [script, "criu"]
runpy.run_path(script, run_name="__main__")
"#;

/// Why the benchmark cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !Path::new(CRIU_DEVSHM).exists() {
        return Some(format!(
            "CRIU v4.2 not found at {CRIU_DEVSHM}: skipped (run ../shared/tools/build-criu.sh)"
        ));
    }
    let version = criu_version(Path::new(CRIU_DEVSHM));
    if version.as_deref() != Some("4.2") {
        return Some(format!(
            "{CRIU_DEVSHM} is CRIU {}, not v4.2: skipped (run ../shared/tools/build-criu.sh)",
            version.as_deref().unwrap_or("of an unknown version")
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("CRIU needs root to dump and restore: skipped (run as root)".into());
    }
    None
}

/// "4.2" from `criu --version` ("Version: 4.2").
fn criu_version(criu: &Path) -> Option<String> {
    let out = Command::new(criu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_owned())
}

fn release_dir() -> PathBuf {
    thaw_benches::release_dir(env!("CARGO_BIN_EXE_bench-app"), &["thaw", "libthaw.so"])
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn script() -> PathBuf {
    examples().join("python/pandas_warm.py")
}

/// Reads the rest of `child`'s stdout and waits for it; panics unless `line` is the answer and
/// it exited successfully.
fn finish(what: &str, line: &str, mut stdout: impl Read, child: Child, log: Option<&Path>) {
    // The rest is read too: a process whose stdout is closed early may fail writing it.
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    if line.starts_with(ANSWER) && out.status.success() {
        return;
    }
    let log = log.and_then(|l| std::fs::read_to_string(l).ok());
    let tail: Vec<&str> = log.iter().flat_map(|l| l.lines()).collect();
    panic!(
        "{what}: {}, answered {line:?} then {:?}; stderr: {}\nlog tail:\n{}",
        out.status,
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(&out.stderr),
        tail[tail.len().saturating_sub(20)..].join("\n")
    );
}

/// Spawns `c`, returns the time until its first stdout line, then reaps it.
fn first_line(c: Command, what: &str) -> Duration {
    let (elapsed, line, stdout, child) = thaw_benches::until_first_line(c);
    finish(what, &line, stdout, child, None);
    elapsed
}

fn cold(lib: &Path) -> Duration {
    let mut c = thaw_benches::command("/usr/bin/python3");
    c.env("THAW_LIB", lib).arg(script()).args(["-", REQUEST]);
    first_line(c, "cold start")
}

/// `thaw run` as it is (as root: host PID mode, lazy memory), or with `--eager` (all memory read
/// and verified before the process runs).
fn thaw_restore(thaw: &Path, trust: &Path, image: &Path, eager: bool) -> Duration {
    let mut c = thaw_benches::command(thaw);
    c.arg("run")
        .args(eager.then_some("--eager"))
        .arg("--trust")
        .arg(trust)
        .arg(image)
        .args(["--", REQUEST]);
    first_line(c, "thaw run")
}

/// The dumped process's stdin and stdout as CRIU names them (`pipe:[INODE]`), for
/// `--inherit-fd` on restore.
#[derive(Debug)]
struct Pipes {
    stdin: String,
    stdout: String,
}

/// Warms the example up in a process of its own session (CRIU restores a session leader without
/// --shell-job), waits until it blocks for its request, and dumps it into `dir` with
/// `criu dump -t PID` (which kills it).
fn criu_dump(criu: &Path, dir: &Path) -> Pipes {
    let (out_r, out_w) = std::io::pipe().unwrap();
    let mut c = thaw_benches::command("/usr/bin/python3");
    c.arg("-c")
        .arg(WRAPPER)
        .arg(script())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python"))
        .stdin(Stdio::piped())
        .stdout(out_w.try_clone().unwrap())
        .stderr(out_w);
    // SAFETY: setsid is async-signal-safe and affects only the child.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    drop(c); // our copies of the stdout pipe's write end: EOF comes when the child exits
    let mut out = BufReader::new(out_r);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line != "ready\n" {
        out.read_to_string(&mut line).unwrap();
        panic!("the CRIU variant did not warm up: {line}");
    }
    let pid = child.id();
    let link = |fd: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let pipes = Pipes {
        stdin: link(0),
        stdout: link(1),
    };
    assert_eq!(link(2), pipes.stdout);
    let out = Command::new(criu)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .args(["-o", "dump.log"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "criu dump failed ({}): {} (see {}/dump.log)",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        dir.display()
    );
    // criu dump kills the tree; reaping it frees its PID for the restores. Its stdin stays
    // open until then, so it cannot have read an end of file.
    let status = child.wait().unwrap();
    drop(child.stdin.take());
    assert!(!status.success(), "the dumped process went on: {status}");
    pipes
}

/// The lazy-pages daemon of one `criu restore --lazy-pages`, started and ready (it has written
/// to its --status-fd) before the restore starts.
fn lazy_pages_daemon(criu: &Path, dir: &Path) -> Child {
    let (ready_r, ready_w) = std::io::pipe().unwrap();
    let fd = ready_w.as_raw_fd();
    let mut c = Command::new(criu);
    c.args(["lazy-pages", "-D"])
        .arg(dir)
        .args(["-o", "lazy-pages.log", "--status-fd", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only the child's descriptor table.
    unsafe {
        c.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it explicitly.
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().unwrap();
    drop(c);
    drop(ready_w);
    let mut ready = Vec::new();
    (&ready_r).read_to_end(&mut ready).unwrap();
    if ready != [0] {
        let out = child.wait_with_output().unwrap();
        panic!(
            "criu lazy-pages did not get ready ({}): {} (see {}/lazy-pages.log)",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            dir.display()
        );
    }
    child
}

/// One `criu restore` of `dir`, until the restored process's answer line; `lazy`: with a
/// lazy-pages daemon (started within the time) that serves the memory as it is touched.
fn criu_restore(criu: &Path, dir: &Path, pipes: &Pipes, lazy: bool) -> Duration {
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    stdin_w
        .write_all(format!("{REQUEST}\n").as_bytes())
        .unwrap();
    drop(stdin_w);
    let (stdout_r, stdout_w) = std::io::pipe().unwrap();
    let mut c = thaw_benches::command(criu);
    c.arg("restore")
        .arg("-D")
        .arg(dir)
        .args(["-o", "restore.log"])
        .args(lazy.then_some("--lazy-pages"))
        .arg(format!("--inherit-fd=fd[0]:{}", pipes.stdin))
        .arg(format!("--inherit-fd=fd[1]:{}", pipes.stdout))
        .stdin(stdin_r)
        .stdout(stdout_w)
        .stderr(Stdio::piped());
    let t = Instant::now();
    let daemon = lazy.then(|| lazy_pages_daemon(criu, dir));
    let child = c.spawn().unwrap();
    drop(c); // the parent's ends of the restored process's pipes
    let mut stdout = BufReader::new(stdout_r);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let elapsed = t.elapsed();
    // Without -d, criu stays the restored process's parent and reaps it before it exits.
    finish(
        "criu restore",
        &line,
        stdout,
        child,
        Some(&dir.join("restore.log")),
    );
    if let Some(daemon) = daemon {
        // It exits once the restored process has exited (or has all its memory).
        let out = daemon.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "criu lazy-pages: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    elapsed
}

fn size_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A named way to get the answer, timed.
type Series<'a> = (&'a str, Box<dyn Fn() -> Duration + 'a>);

/// `rounds` rounds, each running every series once in turn (after one round not counted); prints
/// each series' median and range, and its ratio to thaw's: of the medians, and the median of the
/// ratios within each round.
fn alternate(series: &[Series], rounds: usize) {
    eprintln!(
        "criu: {rounds} rounds of {} in turn (after 1 round not counted)",
        series.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
    );
    for (_, f) in series {
        f();
    }
    let mut times = vec![Vec::new(); series.len()];
    for r in 0..rounds {
        // Each round starts one series further, so none always follows the same one.
        for k in 0..series.len() {
            let i = (r + k) % series.len();
            times[i].push(series[i].1().as_secs_f64() * 1e3);
        }
    }
    let thaw = series.iter().position(|s| s.0 == "thaw").unwrap();
    let thaw_median = median(&mut times[thaw].clone());
    for (i, (name, _)) in series.iter().enumerate() {
        let t = &times[i];
        let mut ratios: Vec<f64> = t.iter().zip(&times[thaw]).map(|(a, b)| a / b).collect();
        let (lo, hi) = (
            t.iter().copied().fold(f64::MAX, f64::min),
            t.iter().copied().fold(0.0, f64::max),
        );
        let m = median(&mut t.clone());
        eprintln!(
            "criu: {name:<18} median {m:8.1} ms  [{lo:.1}–{hi:.1}]  {:6.2}× thaw's median \
             (per round: median {:.2}×)",
            m / thaw_median,
            median(&mut ratios)
        );
    }
}

fn bench(c: &mut Criterion) {
    let dir = release_dir();
    let thaw = dir.join("thaw");
    let lib = dir.join("libthaw.so");
    let work = tempfile::tempdir().unwrap();
    let (key, trust) = thaw_benches::keypair(work.path());

    // thaw's image: the example's own first life.
    let image = work.path().join("pandas.thaw");
    let st = thaw_benches::command("/usr/bin/python3")
        .env("THAW_LIB", &lib)
        .arg(script())
        .arg(&image)
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pandas_warm.py failed to checkpoint");

    // CRIU's images: the same warm-up, dumped from outside.
    let criu_devshm = Path::new(CRIU_DEVSHM);
    let criu_stock = Path::new(CRIU_STOCK);
    let images = work.path().join("criu");
    std::fs::create_dir(&images).unwrap();
    let pipes = criu_dump(criu_devshm, &images);
    let (mut total, mut pages) = (0, 0);
    for e in std::fs::read_dir(&images).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".img") {
            let len = e.metadata().unwrap().len();
            total += len;
            if name.starts_with("pages-") {
                pages += len;
            }
        }
    }
    eprintln!(
        "criu: thaw image {}; CRIU images {} ({} of it pages-*.img)",
        size_mib(std::fs::metadata(&image).unwrap().len()),
        size_mib(total),
        size_mib(pages)
    );

    let stock = criu_stock.exists();
    if !stock {
        eprintln!("criu: {CRIU_STOCK} not found: only the kdat-on-tmpfs build is measured");
    }
    let mut series: Vec<Series> = vec![
        ("cold", Box::new(|| cold(&lib))),
        (
            "thaw",
            Box::new(|| thaw_restore(&thaw, &trust, &image, false)),
        ),
        (
            "thaw-eager",
            Box::new(|| thaw_restore(&thaw, &trust, &image, true)),
        ),
        (
            "criu",
            Box::new(|| criu_restore(criu_devshm, &images, &pipes, false)),
        ),
        (
            "criu-lazy-pages",
            Box::new(|| criu_restore(criu_devshm, &images, &pipes, true)),
        ),
    ];
    if stock {
        series.push((
            "criu-stock",
            Box::new(|| criu_restore(criu_stock, &images, &pipes, false)),
        ));
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs each function once instead.
    if std::env::args().any(|a| a == "--bench") {
        let rounds = std::env::var("THAW_CRIU_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        alternate(&series, rounds);
    }

    let mut g = c.benchmark_group("criu");
    g.sample_size(10);
    for (name, f) in &series {
        g.bench_function(BenchmarkId::new(*name, "cpython_pandas"), |b| {
            b.iter_custom(|n| (0..n).map(|_| f()).sum())
        });
    }
    g.finish();
}

fn main() {
    if let Some(why) = skip_reason() {
        println!("{why}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
