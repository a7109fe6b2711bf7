//! Helpers for the end-to-end tests: real programs, the real `thaw` binary, real kernels.
#![allow(dead_code)]

pub mod server;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A binary built by this workspace (`cargo build --workspace` builds them all).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Marks descriptors `from..=to` close-on-exec (`CLOSE_RANGE_CLOEXEC`): closed by the exec, not
/// before it, so the pipe on which std reports a failed exec still works until then.
const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// A command whose child inherits no descriptors but stdin, stdout and stderr (a test harness's
/// stray descriptors would be unsupported state for the checkpoint).
pub fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    // SAFETY: close_range is async-signal-safe and touches nothing but the descriptor table.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            Ok(())
        });
    }
    c.env_remove("THAW_TRUST_DIR").stdin(Stdio::null());
    c
}

/// Like [`command`], but the child also inherits `leaks`: (descriptor here, number in the child),
/// the way a shell or CI runner leaks descriptors into what it starts.
pub fn command_leaking(program: &Path, leaks: &[(std::os::fd::RawFd, i32)]) -> Command {
    let mut c = Command::new(program);
    let leaks = leaks.to_vec();
    // SAFETY: dup2 and close_range are async-signal-safe and touch only the descriptor table.
    unsafe {
        c.pre_exec(move || {
            for (i, (src, _)) in leaks.iter().enumerate() {
                if libc::dup2(*src, 1000 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::syscall(libc::SYS_close_range, 3u32, 999u32, CLOSE_RANGE_CLOEXEC);
            for (i, (_, dst)) in leaks.iter().enumerate() {
                if libc::dup2(1000 + i as i32, *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::syscall(
                libc::SYS_close_range,
                1000u32,
                u32::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    c.env_remove("THAW_TRUST_DIR").stdin(Stdio::null());
    c
}

pub fn as_nobody(c: Command) -> Command {
    as_user(c, 65534, 65534)
}

/// Runs the command as `uid`/`gid` with no supplementary groups.
pub fn as_user(mut c: Command, uid: u32, gid: u32) -> Command {
    // SAFETY: setgroups/setgid/setuid in the child before exec; async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.env("HOME", "/nonexistent");
    c
}

/// `thaw run` options for every restore mode this user can test: lazy host, `--eager`,
/// `--private-copy` and ns as root; ns only otherwise.
pub fn every_mode() -> &'static [&'static [&'static str]] {
    if is_root() {
        &[
            &["--pid-mode", "host"],
            &["--eager"],
            &["--private-copy"],
            &["--pid-mode", "ns"],
        ]
    } else {
        &[&["--pid-mode", "ns"]]
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory with a key pair; `nobody` can use it when `for_nobody`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub nobody: bool,
}

impl Env {
    pub fn new() -> Env {
        Self::make(false)
    }

    pub fn for_nobody() -> Env {
        Self::make(true)
    }

    fn make(nobody: bool) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = dir.path().join("k.key");
        let pubkey = dir.path().join("k.pub");
        let k = thaw_signing::SecretKey::generate().unwrap();
        k.save_new(&key).unwrap();
        k.public().save_new(&pubkey).unwrap();
        // The launcher's cache (working sets) of this test's own, not the user's.
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        if nobody {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
            std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
            std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        }
        Env {
            dir,
            key,
            pubkey,
            nobody,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The program to run: for `nobody`, a copy inside the scratch directory.
    pub fn program(&self, name: &str) -> PathBuf {
        let src = bin(name);
        if !self.nobody {
            return src;
        }
        let dst = self.path(name);
        // A hard link where it can be, else a copy.
        if !dst.exists() && std::fs::hard_link(&src, &dst).is_err() {
            copy_program(&src, &dst, 0o755);
        }
        dst
    }

    fn cmd(&self, program: &Path) -> Command {
        let c = command(program);
        if self.nobody {
            as_nobody(c)
        } else {
            c
        }
    }

    /// The command of a first life, `PROG` alone (its arguments are the caller's).
    pub fn first_life_cmd(&self, prog: &str) -> Command {
        self.cmd(&self.program(prog))
    }

    /// Runs `PROG IMAGE KEY EXTRA...` (the first life) and returns what it did, whatever that was.
    pub fn first_life(&self, prog: &str, image: &str, extra: &[&str]) -> Output {
        self.cmd(&self.program(prog))
            .arg(self.path(image))
            .arg(&self.key)
            .args(extra)
            .output()
            .unwrap()
    }

    /// Runs `PROG IMAGE KEY EXTRA...`, whose checkpoint must be refused (the program prints
    /// the refusal and exits 3); returns what it printed.
    pub fn refused(&self, prog: &str, image: &str, extra: &[&str]) -> String {
        let o = self.first_life(prog, image, extra);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `PROG IMAGE KEY EXTRA...`, which checkpoints and exits 0; returns the image path.
    /// `python3 -c SCRIPT IMAGE KEY` with the thaw package (see [`python_with_thaw`]): the
    /// script checkpoints to `sys.argv[1]`, signed with `sys.argv[2]`.
    pub fn python_script(&self, script: &str, image: &Path) -> Command {
        let mut c = python_with_thaw();
        c.args(["-c", script]).arg(image).arg(&self.key);
        c
    }

    pub fn checkpoint(&self, prog: &str, image: &str, extra: &[&str]) -> PathBuf {
        let img = self.path(image);
        let out = self
            .cmd(&self.program(prog))
            .arg(&img)
            .arg(&self.key)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{prog} failed to checkpoint: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(img.exists());
        img
    }

    /// `thaw run --trust k.pub OPTS IMAGE -- ARGS`.
    pub fn restore_cmd(&self, image: &Path, opts: &[&str], args: &[&str]) -> Command {
        let mut c = self.cmd(&self.program("thaw"));
        c.env("ZDTM_ENV", "from the launcher")
            .env("THAW_CACHE_DIR", self.path("cache"));
        c.arg("run")
            .arg("--trust")
            .arg(&self.pubkey)
            .args(opts)
            .arg(image);
        if !args.is_empty() {
            c.arg("--").args(args);
        }
        c
    }

    /// A directory `name` in the scratch directory that nobody owns (for programs run as nobody).
    pub fn nobody_dir(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir
    }

    pub fn restore(&self, image: &Path, opts: &[&str], args: &[&str]) -> Output {
        self.restore_cmd(image, opts, args).output().unwrap()
    }

    /// The image's manifest, through `thaw inspect --json` (which verifies it first).
    pub fn manifest(&self, image: &Path) -> thaw::Manifest {
        let o = self.thaw(&[
            "inspect",
            "--json",
            "--trust",
            self.pubkey.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        serde_json::from_value(v["manifest"].clone()).unwrap()
    }

    /// `thaw ARGS` (not as nobody).
    pub fn thaw(&self, args: &[&str]) -> Output {
        command(&bin("thaw")).args(args).output().unwrap()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How many io_uring instances an image restores (duplicates counted once).
pub fn io_rings(m: &thaw::Manifest) -> usize {
    m.files
        .iter()
        .filter(|f| f.dup_of.is_none() && matches!(f.kind, thaw::state::files::FdKind::IoUring(_)))
        .count()
}

/// Asserts a zdtm program's restored life passed every check it names.
pub fn assert_all_ok(o: &Output, expected: &[&str]) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    assert!(!out.contains("FAIL"), "{}", text(o));
    for what in expected {
        assert!(
            out.lines().any(|l| l == format!("ok {what}")),
            "missing `ok {what}`:\n{}",
            text(o)
        );
    }
}

/// A restored process that waits: spawned with piped stdin/stdout; `ready` returns its PID.
pub struct Waiting {
    pub child: Child,
    pub out: BufReader<std::process::ChildStdout>,
}

impl Waiting {
    pub fn spawn(mut c: Command) -> Waiting {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Waiting { child, out }
    }

    /// Blocks until the restored process prints `ready <pid>`.
    pub fn ready(&mut self) -> i32 {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok());
        pid.unwrap_or_else(|| {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err);
            panic!("expected `ready PID`, got {line:?}; stderr: {err}")
        })
    }

    /// Sends the exit status line and waits for the launcher.
    pub fn finish(mut self, status: i32) -> std::process::ExitStatus {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin, "{status}").unwrap();
        drop(stdin);
        self.child.wait().unwrap()
    }
}

/// Compiles C `sources` against libthaw.so (`sdk/include`, linked with its rpath) with `flags`
/// into `out`; panics with the compiler's output on failure.
pub fn cc_with_libthaw(sources: &[&Path], flags: &[&str], out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let lib = bin("libthaw.so");
    let libdir = lib.parent().unwrap();
    let o = Command::new("cc")
        .args(flags)
        .args(sources)
        .arg("-I")
        .arg(root.join("sdk/include"))
        .arg("-L")
        .arg(libdir)
        .arg("-lthaw")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// Restores `image` twice: each time the output, trimmed, must start with `prefix` and what
/// follows must differ from the other restore's (a random value drawn after the restore).
pub fn differs_per_restore(env: &Env, image: &Path, prefix: &str) {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let o = env.restore(image, &[], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let rest = out
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{}", text(&o)));
        assert!(seen.insert(rest.to_owned()), "{out}");
    }
}

/// Copies program `src` to `dst` with permissions `mode` by running `install`: a copy this process
/// held open for writing would be inherited, for an instant, by whatever another test thread
/// forks meanwhile, and running the copy then fails with ETXTBSY (seen in CI).
pub fn copy_program(src: &Path, dst: &Path, mode: u32) {
    let st = Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "install {} {}", src.display(), dst.display());
}

/// A pseudo-terminal: (master, slave), the slave in its default (canonical) mode.
pub fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt and friends on a new descriptor we own; ptsname's buffer is read at
    // once.
    unsafe {
        // Close-on-exec: a program another test thread starts meanwhile must not hold it.
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m) | libc::unlockpt(m), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned();
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0);
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    }
}

/// A pidfd for `pid` (taken while it runs, so the answer is about that process).
pub fn pidfd(pid: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

/// Blocks until the process behind `fd` has ended (a pidfd becomes readable then).
pub fn wait_gone(fd: &std::os::fd::OwnedFd) {
    assert!(gone_within(fd, None));
}

/// Whether the process behind `fd` ends within `bound` (a bound against hanging, not a
/// measure: the process's end is the event awaited).
pub fn gone_within(fd: &std::os::fd::OwnedFd, bound: Option<std::time::Duration>) -> bool {
    use std::os::fd::{AsFd, AsRawFd};
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = bound.map_or(-1, |b| b.as_millis() as i32);
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 {
            return n == 1;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{e}");
    }
}

/// Whether a process `comm` at `pid` is still there and running after its descriptors are
/// closed: it must be gone or a zombie soon (the bound is against waiting for ever, not a
/// measure of how soon).
pub fn left_behind(pid: i32, comm: &str) -> bool {
    let start = std::time::Instant::now();
    loop {
        let ours =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(comm));
        let ended = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_or(true, |s| s.contains("State:\tZ") || s.contains("State:\tX"));
        if !ours || ended {
            return false;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            return true;
        }
        std::thread::yield_now();
    }
}

/// The chunk words of a working-set record (see launcher/src/restore/working_set.rs): its early
/// part, and the rest.
pub fn record_chunks(record: &[u8]) -> (Vec<u64>, Vec<u64>) {
    assert_eq!(&record[..8], b"THAWWS02");
    let word = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap());
    let early = word(48) as usize;
    let chunks = |words: &[u8]| -> Vec<u64> {
        words
            .chunks(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .filter(|w| w >> 63 == 0)
            .collect()
    };
    (
        chunks(&record[64..64 + early * 8]),
        chunks(&record[64 + early * 8..]),
    )
}

/// Starts `c` inside the cgroup at `dir` (v1 or v2: its `cgroup.procs`).
pub fn enter_cgroup(c: &mut Command, dir: &Path) {
    let procs = std::ffi::CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: open, write and close are async-signal-safe; `procs` is built before the fork.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
}

/// Debian's python3 with the thaw package from the source tree and this build's libthaw.so.
pub fn python_with_thaw() -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut c = command(Path::new("/usr/bin/python3"));
    c.env("PYTHONPATH", root.join("sdk/python"))
        .env("THAW_LIB", bin("libthaw.so"))
        .env_remove("THAW_FD_POLICY");
    c
}
