//! Shared helpers for the benchmarks.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A command whose child inherits only stdin, stdout and stderr: a stray descriptor from the
/// benchmark harness would be state the checkpoint must refuse.
pub fn command(program: impl AsRef<Path>) -> Command {
    let mut c = Command::new(program.as_ref());
    // SAFETY: close_range is async-signal-safe and touches only the descriptor table.
    unsafe {
        c.pre_exec(|| {
            // CLOSE_RANGE_CLOEXEC: closed by the exec, so std can still report a failed one.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 1u32 << 2);
            Ok(())
        });
    }
    c
}

/// Runs `c` (stdout piped) until its first byte of output; returns that time, after checking
/// that it then exits successfully.
pub fn until_first_byte(mut c: Command) -> Duration {
    use std::io::Read;
    let t = Instant::now();
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut byte = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut byte)
        .unwrap();
    let elapsed = t.elapsed();
    assert!(child.wait().unwrap().success(), "{c:?} failed");
    elapsed
}

/// Spawns `c` with its stdout and stderr piped; returns the time until its first stdout line, that
/// line, the rest of its stdout and the child, for the caller to drain and reap.
pub fn until_first_line(mut c: Command) -> (Duration, String, BufReader<ChildStdout>, Child) {
    let t = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    (t.elapsed(), line, stdout, child)
}

/// A new signing key pair in `dir`: (secret key, public key) paths.
pub fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, public) = (dir.join("k.key"), dir.join("k.pub"));
    let k = thaw_signing::SecretKey::generate().unwrap();
    k.save_new(&key).unwrap();
    k.public().save_new(&public).unwrap();
    (key, public)
}

/// The directory of the release build (where `bench_app`, one of its binaries, is), after
/// checking that each of `needed` was built there.
pub fn release_dir(bench_app: &str, needed: &[&str]) -> PathBuf {
    let dir = Path::new(bench_app).parent().unwrap().to_owned();
    for b in needed {
        assert!(
            dir.join(b).exists(),
            "{b} is missing: run `cargo build --release --workspace` first (scripts/bench does)"
        );
    }
    dir
}

/// The sum of `n` measurements by `f` (for criterion's `iter_custom`).
pub fn each(n: u64, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).sum()
}
