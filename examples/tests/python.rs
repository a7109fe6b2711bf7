//! The `thaw` Python package (sdk/python: ctypes over the libthaw.so the wheel carries), built by
//! maturin (scripts/python-package) and installed into fresh virtual environments: Debian's
//! python3 with pandas (numpy's OpenBLAS worker threads, 500+ mappings) warms up, checkpoints, and
//! answers after restore in every mode exactly as a cold start does; hooks run in CRaC's order; the
//! package reseeds random/numpy/uuid/tempfile per restore; errors carry the C API's codes; and a
//! separately installed CPython (when the machine has one) runs the same wheel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The wheel, built once per test binary by scripts/python-package (maturin).
fn wheel() -> &'static Path {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let o = command(&root.join("scripts/python-package"))
            .output()
            .unwrap();
        assert!(o.status.success(), "scripts/python-package: {}", text(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        let whl = PathBuf::from(out.lines().last().unwrap_or_default());
        assert!(
            whl.extension().is_some_and(|e| e == "whl") && whl.exists(),
            "no wheel: {out}"
        );
        let name = whl.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.contains("-py3-none-"),
            "one wheel for every CPython 3: {name}"
        );
        whl
    })
}

/// A fresh virtual environment of `base` in the scratch directory, with the wheel installed
/// (offline: the wheel has no dependencies); returns its python.
fn venv(env: &Env, base: &Path, name: &str, system_site: bool) -> PathBuf {
    let dir = env.path(name);
    let mut c = command(base);
    c.args(["-m", "venv"]);
    if system_site {
        c.arg("--system-site-packages");
    }
    let o = c.arg(&dir).output().unwrap();
    assert!(
        o.status.success(),
        "venv for {}: {}",
        base.display(),
        text(&o)
    );
    let python = dir.join("bin/python");
    let o = pip_install(&python, &["--no-index".as_ref(), wheel().as_os_str()]);
    assert!(o.status.success(), "pip install: {}", text(&o));
    // The library comes from the package, not from an environment variable or a system path.
    let o = command(&python)
        .env_remove("THAW_LIB")
        .args([
            "-c",
            "import thaw, os; print(thaw.library_path(), os.path.exists(thaw.library_path()))",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "import thaw: {}", text(&o));
    assert!(
        out.starts_with(dir.to_str().unwrap()) && out.trim_end().ends_with("True"),
        "libthaw.so inside the installed package: {out}"
    );
    python
}

/// `PYTHON -m pip install -q ARGS`.
fn pip_install(python: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    command(python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(args)
        .output()
        .unwrap()
}

fn python_cmd(python: &Path) -> Command {
    let mut c = command(python);
    c.env_remove("THAW_LIB").env_remove("THAW_FD_POLICY");
    c
}

/// `PYTHON examples/python/SCRIPT IMAGE KEY`, a first life that checkpoints to IMAGE (in the
/// scratch directory) and exits 0; returns the image.
fn checkpointed(env: &Env, python: &Path, script: &str, image: &str) -> PathBuf {
    let img = env.path(image);
    let o = python_cmd(python)
        .arg(example(script))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "first life of {script}: {}", text(&o));
    img
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn pandas_service_restores_in_every_mode_through_the_installed_package() {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import pandas"])
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "Debian's python3-pandas is missing: scripts/setup installs it"
    );
    let env = Env::new();
    let python = venv(&env, Path::new("/usr/bin/python3"), "venv", true);
    let strip = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (answer, token) = out.trim().rsplit_once(", token ").unwrap_or((&out, ""));
        (answer.to_owned(), token.to_owned())
    };
    let cold = python_cmd(&python)
        .arg(example("pandas_warm.py"))
        .args(["-", "Quito"])
        .output()
        .unwrap();
    assert!(cold.status.success(), "{}", text(&cold));
    assert!(
        strip(&cold).0.starts_with("python: Quito: total "),
        "{}",
        text(&cold)
    );
    let img = env.path("py.thaw");
    // Started the way a shell that leaks a pipe starts it: the package's descriptor policy
    // (fds={"any": "drop"}) leaves the pipe out.
    let (_r, w) = std::io::pipe().unwrap();
    let o = command_leaking(&python, &[(std::os::fd::AsRawFd::as_raw_fd(&w), 9)])
        .env_remove("THAW_LIB")
        .env_remove("THAW_FD_POLICY")
        .arg(example("pandas_warm.py"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m = env.manifest(&img);
    // Left out: a dead end at its number (a writing end whose reader is gone), not the pipe.
    assert!(
        m.files.iter().any(|f| f.fd == 9
            && matches!(f.kind, thaw::state::files::FdKind::Pipe { id, write_end: true, .. } if id > u64::MAX - (1 << 31))),
        "fd 9 was not left out"
    );
    assert!(
        m.threads.len() >= 2,
        "OpenBLAS threads expected, got {}",
        m.threads.len()
    );
    assert!(m.memory.len() > 300, "{} mappings", m.memory.len());
    let mut tokens = Vec::new();
    for mode in every_mode() {
        for _ in 0..2 {
            let o = env.restore(&img, mode, &["Quito"]);
            assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", text(&o));
            assert_eq!(strip(&o).0, strip(&cold).0, "{mode:?}: {}", text(&o));
            tokens.push(strip(&o).1);
        }
    }
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "random must be reseeded per restore: {tokens:?}"
    );
}

/// The hooks uniqueness.py records, in CRaC's order: before hooks last registered first, after
/// hooks in order.
fn hooks_in_order() -> serde_json::Value {
    serde_json::json!([
        "before 3",
        "before 2",
        "before 1",
        "after 1",
        "after 2",
        "after 3 restored=True"
    ])
}

/// Checkpoints examples/python/uniqueness.py with `python`, restores it twice in each of
/// `modes`, and checks hooks, arguments and that every restore drew its own values.
fn check_uniqueness(env: &Env, python: &Path, image: &str, numpy: bool, modes: &[&[&str]]) {
    let img = env.path(image);
    let mut c = python_cmd(python);
    c.arg(example("uniqueness.py")).arg(&img).arg(&env.key);
    if numpy {
        c.arg("--numpy");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "first life: {}", text(&o));
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for mode in modes {
        for _ in 0..2 {
            let r = json(&env.restore(&img, mode, &["one", "two words"]));
            assert_eq!(r["restored"], true, "{r}");
            assert_eq!(r["args"], serde_json::json!(["one", "two words"]), "{r}");
            assert_eq!(r["env_has_path"], true, "{r}");
            assert_eq!(r["hooks"], hooks_in_order(), "{r}");
            assert_eq!(
                r["signals"],
                serde_json::json!(["SIGUSR1", "KeyboardInterrupt"]),
                "{r}"
            );
            let lib = r["library"].as_str().unwrap();
            assert!(
                lib.starts_with(env.dir.path().to_str().unwrap()) && lib.contains("/thaw/_native/"),
                "{lib}"
            );
            for key in [
                "random",
                "numpy",
                "tempfile",
                "uuid4",
                "uuid1_clock_seq",
                "mp_tempdir",
                "sqlite_random",
                "semaphore_name",
            ] {
                if key == "numpy" && !numpy {
                    assert!(r["now"][key].is_null());
                    continue;
                }
                assert_ne!(
                    r["now"][key], r["first"][key],
                    "{key} must differ from the first life's: {r}"
                );
                for other in &seen {
                    assert_ne!(
                        r["now"][key], other["now"][key],
                        "{key} must differ between restores of one image: {r} / {other}"
                    );
                }
            }
            let own = r["now"]["mp_tempdir"].as_str().unwrap();
            assert!(!Path::new(own).exists(), "{own} left behind by its restore");
            seen.push(r);
        }
    }
    // The first life exited after saving, without finalizers: the first restore removed it.
    let first = seen[0]["first"]["mp_tempdir"].as_str().unwrap();
    assert!(!Path::new(first).exists(), "{first} left behind");
}

/// Instances a `thaw serve` forks from one template of uniqueness.py (with spares forked ahead)
/// each run the after-restore hooks in order, get their caller's arguments and draw their own
/// random values, uuids and temporary names.
#[test]
fn served_instances_run_their_hooks_and_reseed() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let python = venv(&env, Path::new("/usr/bin/python3"), "venv", false);
    let img = checkpointed(&env, &python, "uniqueness.py", "u.thaw");
    let server = common::server::Server::start(&env, &img, &[]);
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for _ in 0..4 {
        let r = json(&server.call(&["one", "two words"]).output().unwrap());
        assert_eq!(r["restored"], true, "{r}");
        assert_eq!(r["args"], serde_json::json!(["one", "two words"]), "{r}");
        assert_eq!(r["hooks"], hooks_in_order(), "{r}");
        for key in [
            "random",
            "tempfile",
            "uuid4",
            "uuid1_clock_seq",
            "mp_tempdir",
            "sqlite_random",
            "semaphore_name",
        ] {
            assert_ne!(r["now"][key], r["first"][key], "{key}: {r}");
            for other in &seen {
                assert_ne!(r["now"][key], other["now"][key], "{key}: {r} / {other}");
            }
        }
        seen.push(r);
    }
}

#[test]
fn hooks_reseeding_and_errors_through_the_installed_package() {
    let env = Env::new();
    let python = venv(&env, Path::new("/usr/bin/python3"), "venv", true);
    let numpy = Command::new("/usr/bin/python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        numpy,
        "Debian's python3-numpy (with python3-pandas) is missing"
    );
    check_uniqueness(&env, &python, "u.thaw", true, every_mode());

    let o = python_cmd(&python)
        .arg(example("uniqueness.py"))
        .arg("--errors")
        .arg(env.dir.path())
        .arg(&env.key)
        .output()
        .unwrap();
    let e = json(&o);
    let class_code = |k: &str| (e[k][0].as_str().unwrap_or("").to_owned(), e[k][1].as_i64());
    let cases = [
        ("bad_fd_policy", "InvalidArgumentError", -1),
        ("empty_path", "InvalidArgumentError", -1),
        ("missing_dir", "ImageIOError", -3),
        ("missing_key", "ImageIOError", -3),
        ("child_process", "UnsupportedStateError", -2),
        ("hook_refuses", "HookError", -4),
    ];
    for (case, class, code) in cases {
        assert_eq!(
            class_code(case),
            (class.to_owned(), Some(code)),
            "{case}: {e}"
        );
    }
    assert!(
        e["child_process"][2].as_str().unwrap().contains("cat"),
        "{e}"
    );
    let tracker = e["resource_tracker"][2].as_str().unwrap_or_default();
    assert!(
        tracker.contains("Python's multiprocessing resource tracker")
            && tracker.contains("unregister them from it first"),
        "{e}"
    );
    assert_eq!(
        e["hook_refuses_order"],
        serde_json::json!(["after 1", "after 3 restored=False"]),
        "{e}"
    );
    assert_eq!(e["image_written"], false, "{e}");
}

/// CPython interpreters other than Debian's that this machine has (pyenv's, /usr/local, /opt),
/// >= 3.9: the oldest and the newest.
fn other_cpythons() -> Vec<PathBuf> {
    let mut found: Vec<((u32, u32), PathBuf)> = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("THAW_TEST_PYTHON") {
        candidates.push(p.into());
    }
    for dir in ["/root/.pyenv/versions", "/opt/python", "/opt"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            candidates.extend(rd.flatten().map(|e| e.path().join("bin/python3")));
        }
    }
    for minor in 9..=20 {
        candidates.push(format!("/usr/local/bin/python3.{minor}").into());
    }
    let debian = std::fs::canonicalize("/usr/bin/python3").ok();
    for p in candidates {
        let Ok(real) = std::fs::canonicalize(&p) else {
            continue;
        };
        if Some(&real) == debian.as_ref() || found.iter().any(|(_, f)| f == &real) {
            continue;
        }
        let Ok(o) = command(&real)
            .args([
                "-c",
                "import sys, venv, ensurepip; print(sys.implementation.name, *sys.version_info[:2])",
            ])
            .output()
        else {
            continue;
        };
        let out = String::from_utf8_lossy(&o.stdout);
        let v: Vec<&str> = out.split_whitespace().collect();
        if let [impl_name, major, minor] = v[..] {
            let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
                continue;
            };
            if impl_name == "cpython" && (major, minor) >= (3, 9) {
                found.push(((major, minor), real));
            }
        }
    }
    found.sort();
    let mut pick: Vec<PathBuf> = found.first().map(|f| f.1.clone()).into_iter().collect();
    if let Some(last) = found.last().filter(|_| found.len() > 1) {
        pick.push(last.1.clone());
    }
    pick
}

#[test]
fn a_separately_installed_cpython_runs_the_same_wheel() {
    let others = other_cpythons();
    if others.is_empty() {
        eprintln!(
            "note: no CPython >= 3.9 besides Debian's on this machine (pyenv, /usr/local, /opt, \
             $THAW_TEST_PYTHON): the second-interpreter check is skipped"
        );
        return;
    }
    let env = Env::new();
    for (i, base) in others.iter().enumerate() {
        eprintln!("second CPython: {}", base.display());
        let python = venv(&env, base, &format!("venv{i}"), false);
        check_uniqueness(&env, &python, &format!("u{i}.thaw"), false, &[&[]]);
    }
}

/// An asyncio server on uvloop (pinned from PyPI), whose bundled libuv makes an io_uring
/// instance for its loop whatever UV_USE_IO_URING says: refused before thaw restored idle rings,
/// now restored in every mode, the listener answering, the ticker going on, a new server
/// listening.
#[test]
fn a_uvloop_server_is_restored_in_every_mode() {
    let env = Env::new();
    let python = venv(&env, Path::new("/usr/bin/python3"), "venv", false);
    let o = pip_install(&python, &["uvloop==0.23.0".as_ref()]);
    assert!(
        o.status.success(),
        "pip install uvloop (from PyPI): {}",
        text(&o)
    );
    let img = checkpointed(&env, &python, "uvloop_server.py", "uv.thaw");
    assert!(
        io_rings(&env.manifest(&img)) >= 1,
        "uvloop's libuv makes an io_uring instance"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        for line in [
            "listener pong hello",
            "ticker goes on",
            "new server pong again",
            "loop uvloop",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{opts:?}: no {line:?} in {}",
                text(&o)
            );
        }
    }
}

/// CPython makes stdout line-buffered at start exactly when it is a terminal. A program
/// checkpointed with stdout on a pipe and restored onto a terminal kept it block-buffered (a
/// line printed before a wait appeared only at exit); the package applies the rule again to the
/// stdout a restore is given, and leaves a program's own choice alone.
#[test]
fn stdout_is_line_buffered_after_restore_exactly_when_it_is_a_terminal() {
    const SCRIPT: &str = r#"
import sys, thaw
if sys.argv[3] == "chosen":
    sys.stdout.reconfigure(line_buffering=True)
out = thaw.checkpoint(sys.argv[1], key=sys.argv[2])
print("tty", sys.stdout.isatty(), "line_buffering", sys.stdout.line_buffering, file=sys.stderr)
"#;
    let env = Env::new();
    // (The program's choice; where its first life's stdout was; what it reads restored onto a
    // terminal, and onto a pipe.)
    for (how, first_on_tty, on_tty, on_pipe) in [
        ("default", false, "True", "False"),
        ("default", true, "True", "False"),
        ("chosen", false, "True", "True"),
    ] {
        let img = env.path(&format!("{how}-{first_on_tty}.thaw"));
        // (PYTHONUNBUFFERED writes through: no buffering to choose.)
        let mut first = env.python_script(SCRIPT, &img);
        first.env_remove("PYTHONUNBUFFERED").arg(how);
        let (_first_master, first_slave) = pty();
        if first_on_tty {
            first.stdout(first_slave);
        }
        let o = first.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let (_master, slave) = pty();
        let o = env
            .restore_cmd(&img, &[], &[])
            .stdout(slave)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim(),
            format!("tty True line_buffering {on_tty}"),
            "{how}, first on a terminal: {first_on_tty}; restored on a terminal"
        );
        let o = env.restore(&img, &[], &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim(),
            format!("tty False line_buffering {on_pipe}"),
            "{how}, first on a terminal: {first_on_tty}; restored on a pipe"
        );
    }
}
