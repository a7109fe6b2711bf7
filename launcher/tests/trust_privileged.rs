//! A launcher with a file capability is run by an unprivileged user: it must trust only
//! /etc/thaw/trusted/ and ignore the caller's environment, user directories and --trust.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Runs `bin ARGS` as `nobody` with `THAW_TRUST_DIR` and `HOME` pointing at `dir`.
fn as_nobody(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin)
        .args(args)
        .current_dir(dir)
        .env("THAW_TRUST_DIR", dir.join("trusted"))
        .env("HOME", dir)
        .output()
        .unwrap()
}

struct SystemKey(PathBuf);

impl Drop for SystemKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn elevated_launcher_trusts_only_the_system_directory() {
    if !is_root() {
        eprintln!("skipped: needs root to run setcap and drop to nobody (CI runs as root)");
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let (_, pubkey) = keygen(d, "k");
    write_sample_image(&d.join("a.thaw"), 16);
    assert!(thaw(d, &["sign", "--key", "k.key", "a.thaw"])
        .status
        .success());
    let perm = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    perm(&d.join("a.thaw"), 0o644);
    std::fs::create_dir(d.join("trusted")).unwrap();
    perm(&d.join("trusted"), 0o755);
    std::fs::copy(&pubkey, d.join("trusted/k.pub")).unwrap();

    // The plain launcher, unprivileged, honours THAW_TRUST_DIR.
    let plain = d.join("thaw-plain");
    std::fs::copy(THAW, &plain).unwrap();
    let o = as_nobody(&plain, d, &["verify", "a.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The same binary with a file capability does not, nor --trust, nor ~/.config/thaw/trusted.
    let capped = d.join("thaw-cap");
    std::fs::copy(THAW, &capped).unwrap();
    let st = Command::new("setcap")
        .args(["cap_checkpoint_restore+ep"])
        .arg(&capped)
        .status()
        .unwrap();
    assert!(st.success(), "setcap failed");
    std::fs::create_dir_all(d.join(".config/thaw/trusted")).unwrap();
    std::fs::copy(&pubkey, d.join(".config/thaw/trusted/k.pub")).unwrap();
    let o = as_nobody(&capped, d, &["verify", "--trust", "k.pub", "a.thaw"]);
    expect_failure(&o, 66, "not trusted (searched: /etc/thaw/trusted/*.pub)");
    assert!(stderr(&o).contains("ignoring --trust"), "{}", stderr(&o));

    // A key an administrator put in /etc/thaw/trusted/ is honoured.
    std::fs::create_dir_all("/etc/thaw/trusted").unwrap();
    let name = format!("/etc/thaw/trusted/test-{}.pub", std::process::id());
    let _guard = SystemKey(name.clone().into());
    std::fs::copy(&pubkey, &name).unwrap();
    let o = as_nobody(&capped, d, &["verify", "a.thaw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&name), "{}", stdout(&o));
}
