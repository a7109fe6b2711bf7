//! FIFOs and devices where a key, a trust store's key or an image is expected: refused at once
//! with a line naming them, never a launcher blocked for ever in an open (a FIFO nobody writes)
//! or copying a device that never ends (/dev/zero) until memory runs out.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const USAGE: i32 = 64;
const CORRUPT: i32 = 65;

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo reads it only.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

/// Runs `c`, killed and failed if it has not ended within ten seconds.
fn within_seconds(mut c: Command, what: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = c
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

fn refused(o: &Output, what: &str, code: i32, named: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{what}: {}", text(o));
    assert!(
        err.starts_with(&format!("thaw: {}: not a regular file", named.display()))
            && err.lines().count() == 1,
        "{what}: {err}"
    );
    assert!(!err.contains("chmod"), "{what}: {err}");
}

#[test]
fn fifos_and_devices_for_keys_and_images_are_refused_at_once() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let fifo = env.path("fifo");
    mkfifo(&fifo);
    let thaw = |args: &[&Path]| {
        let mut c = command(&bin("thaw"));
        c.args(args);
        c
    };
    let p = Path::new;
    // --trust FIFO, for verify and run.
    for cmd in ["verify", "run"] {
        let o = within_seconds(thaw(&[p(cmd), p("--trust"), &fifo, &img]), cmd);
        refused(&o, cmd, USAGE, &fifo);
    }
    // sign --key FIFO, sign --key DEVICE (not advised to chmod it).
    for key in [&fifo, p("/dev/zero")] {
        let o = within_seconds(thaw(&[p("sign"), p("--key"), key, &img]), "sign --key");
        refused(&o, "sign --key", USAGE, key);
    }
    // sign IMAGE where IMAGE is a FIFO or /dev/zero: nothing copied.
    for image in [&fifo, p("/dev/zero")] {
        let o = within_seconds(
            thaw(&[p("sign"), p("--key"), &env.key, image]),
            "sign IMAGE",
        );
        refused(&o, "sign IMAGE", CORRUPT, image);
    }
    // A *.pub FIFO in a trust directory: refused and named, as a malformed key file is (a
    // trust store silently smaller than its directory says is not what its owner meant).
    let dir = env.path("trusted");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&env.pubkey, dir.join("a.pub")).unwrap();
    mkfifo(&dir.join("evil.pub"));
    let mut c = thaw(&[p("verify"), &img]);
    c.env("THAW_TRUST_DIR", &dir);
    let o = within_seconds(c, "THAW_TRUST_DIR");
    refused(&o, "THAW_TRUST_DIR", USAGE, &dir.join("evil.pub"));
    // ~/.config/thaw/trusted likewise.
    let home = env.path("home");
    std::fs::create_dir_all(home.join(".config/thaw/trusted")).unwrap();
    mkfifo(&home.join(".config/thaw/trusted/evil.pub"));
    let mut c = thaw(&[p("verify"), p("--trust"), &env.pubkey, &img]);
    c.env("HOME", &home).env_remove("XDG_CONFIG_HOME");
    let o = within_seconds(c, "~/.config/thaw/trusted");
    refused(
        &o,
        "~/.config",
        USAGE,
        &home.join(".config/thaw/trusted/evil.pub"),
    );
    // The image is untouched and still verifies.
    let mut c = thaw(&[p("verify"), p("--trust"), &env.pubkey, &img]);
    c.env("HOME", "/nonexistent");
    let o = within_seconds(c, "verify");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
