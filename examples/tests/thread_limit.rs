//! The launcher where no more threads or processes can be had (a pids cgroup's limit, as a
//! container sets it): a restore fails with its own code and one line and leaves nothing; a
//! verification uses the threads it gets, one at least.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PANIC: i32 = 101;
const RESTORE_FAILED: i32 = 68;

/// A pids cgroup of this test's own (v1 or v2), removed when dropped.
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    fn new(name: &str) -> Option<PidsCgroup> {
        let name = format!("thaw-test-{name}-{}", std::process::id());
        for base in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
            let dir = Path::new(base).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                if dir.join("pids.max").exists() {
                    return Some(PidsCgroup(dir));
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        None
    }

    fn limit(&self, n: u32) {
        std::fs::write(self.0.join("pids.max"), n.to_string()).unwrap();
    }

    /// `c`, started inside the cgroup.
    fn enter(&self, c: &mut Command) {
        enter_cgroup(c, &self.0);
    }

    /// Whether every process of the cgroup has ended (within a few seconds: a namespace's
    /// processes die after its init).
    fn empty(&self) -> bool {
        let start = std::time::Instant::now();
        loop {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap();
            if procs.trim().is_empty() {
                return true;
            }
            if start.elapsed() > std::time::Duration::from_secs(10) {
                eprintln!("left in the cgroup: {procs}");
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_restore_without_threads_to_be_had_fails_cleanly_at_each_one() {
    if !is_root() {
        eprintln!("skipped: needs root to make a cgroup");
        return;
    }
    let Some(cg) = PidsCgroup::new("restore") else {
        eprintln!("skipped: no pids cgroup controller");
        return;
    };
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let mut server_thread = false;
    for mode in every_mode() {
        let mut restored = false;
        // From too few for anything up to enough for all.
        for n in 1..16 {
            cg.limit(n);
            let mut c = env.restore_cmd(&img, mode, &["--verify", "0"]);
            cg.enter(&mut c);
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_ne!(o.status.code(), Some(PANIC), "{mode:?}, {n}: {}", text(&o));
            assert!(cg.empty(), "{mode:?}, {n}: left behind; {}", text(&o));
            if o.status.code() == Some(0) {
                assert!(String::from_utf8_lossy(&o.stdout).starts_with("counter: pid="));
                restored = true;
                break;
            }
            assert_eq!(
                o.status.code(),
                Some(RESTORE_FAILED),
                "{mode:?}, {n}: {}",
                text(&o)
            );
            assert!(
                err.starts_with("thaw: ") && err.lines().count() == 1,
                "{err}"
            );
            server_thread |= err.contains("cannot start the thread that serves the memory");
        }
        assert!(restored, "{mode:?}: never restored");
    }
    // Lazy memory's server, started once the process exists: that process killed.
    assert!(server_thread, "no limit hit the memory server's thread");
}

#[test]
fn verification_uses_the_threads_it_gets() {
    if !is_root() {
        eprintln!("skipped: needs root to make a cgroup");
        return;
    }
    let Some(cg) = PidsCgroup::new("verify") else {
        eprintln!("skipped: no pids cgroup controller");
        return;
    };
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    // Only the launcher's own thread.
    cg.limit(1);
    let mut c = command(&bin("thaw"));
    c.arg("verify").arg("--trust").arg(&env.pubkey).arg(&img);
    cg.enter(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": OK, signed by "));
}
