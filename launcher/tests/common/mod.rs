//! Helpers shared by the launcher's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thaw::image::ImageWriter;
use thaw::state::memory::{Backing, PageRun, Vma};
use thaw::state::Manifest;

pub const THAW: &str = env!("CARGO_BIN_EXE_thaw");

/// A scratch directory that an unprivileged user can traverse.
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// `thaw ARGS...` with an isolated trust environment: no user or THAW_TRUST_DIR keys.
pub fn thaw(dir: &Path, args: &[&str]) -> Output {
    Command::new(THAW)
        .args(args)
        .current_dir(dir)
        .env_remove("THAW_TRUST_DIR")
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and that stderr is one `thaw:` line containing `needle`.
pub fn expect_failure(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("thaw: ") && !l.to_lowercase().starts_with("thaw: warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The manifest the sample images carry.
pub fn sample_manifest() -> Manifest {
    let mut m = Manifest::default();
    m.producer.thaw_version = "0.1.0-test".into();
    m.producer.hostname = "testhost".into();
    m.process.pid = 31337;
    m.process.comm = "sample-app".into();
    m.process.cwd = "/srv/app".into();
    m.process.umask = 0o022;
    m.platform.arch = "x86_64".into();
    m.platform.kernel_release = "6.18.0-test".into();
    m.mm.exe.path = "/usr/bin/sample".into();
    m.creds.groups = vec![100, 101];
    // A valid manifest names its threads; their frames and the restore cell lie in the sample's
    // writable mapping.
    m.process.checkpoint_tid = 31337;
    m.process.restore_cell = 0x7f00_0000_0100;
    m.threads.push(thaw::state::threads::ThreadState {
        tid: 31337,
        sigframe: 0x7f00_0000_0200,
        ..Default::default()
    });
    m
}

/// Writes an unsigned sample image of about `payload_kib` KiB at `path`.
pub fn write_sample_image(path: &Path, payload_kib: usize) -> Manifest {
    let mut w = ImageWriter::create(path).unwrap();
    let mut m = sample_manifest();
    let data: Vec<u8> = (0..payload_kib * 1024)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let r = w.append_payload(&data).unwrap();
    m.memory.push(Vma {
        start: 0x7f00_0000_0000,
        end: 0x7f00_0000_0000 + r.len.next_multiple_of(4096),
        prot: 3,
        map_flags: 2,
        backing: Backing::Anonymous,
        pages: vec![PageRun {
            addr: 0x7f00_0000_0000,
            payload: r,
        }],
        ..Default::default()
    });
    w.finish(m.clone(), None).unwrap();
    m
}

/// A key pair `PREFIX.key`/`PREFIX.pub` made by `thaw keygen`.
pub fn keygen(dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let o = thaw(dir, &["keygen", prefix]);
    assert!(o.status.success(), "{}", stderr(&o));
    (
        dir.join(format!("{prefix}.key")),
        dir.join(format!("{prefix}.pub")),
    )
}
