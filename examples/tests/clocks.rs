//! Clocks across reboots and machines: an image whose CLOCK_MONOTONIC/CLOCK_BOOTTIME are ahead
//! of this machine's (taken in a time namespace whose offsets simulate a machine up for ten more
//! days) is restored into a time namespace that keeps both clocks continuous, in host mode as
//! root and in namespace mode; a launcher that cannot create one refuses, unless
//! --allow-clock-jump accepts the jump.

mod common;

use common::*;

const CHECKS: [&str; 4] = [
    "clocks: monotonic continues",
    "clocks: boottime continues",
    "clocks: vDSO and system call agree",
    "clocks: a relative sleep ends",
];

/// Ten days, in seconds.
const AHEAD: u64 = 864_000;

fn offset(o: &std::process::Output) -> u64 {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("timens monotonic"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no timens line: {}", text(o)))
}

fn image_from_another_boot(env: &Env) -> std::path::PathBuf {
    let img = env.path("c.thaw");
    let o = command(std::path::Path::new("/usr/bin/unshare"))
        .args(["--time", "--monotonic", &AHEAD.to_string(), "--boottime"])
        .arg(AHEAD.to_string())
        .arg("--")
        .arg(bin("zdtm-clocks"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    img
}

/// Timers ran on while the image was away, as the clocks did: the first life runs in a time
/// namespace 200 s behind this one's clocks, so its image, restored here, has been away that
/// long on the clocks the restored process reads (no time namespace is needed for clocks that
/// only moved on).
#[test]
fn timers_run_on_while_the_image_was_away() {
    if !is_root() {
        eprintln!("skipped: creating a time namespace needs root (CI runs as root)");
        return;
    }
    // Clocks 200 s behind need a machine up for longer (a clock may not go below zero).
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    if up < 230.0 {
        eprintln!(
            "skipped: the machine has been up {up} s, less than the 200 s the test goes back"
        );
        return;
    }
    let env = Env::new();
    let img = env.path("a.thaw");
    let o = command(std::path::Path::new("/usr/bin/unshare"))
        .args(["--time", "--monotonic=-200", "--boottime=-200", "--"])
        .arg(bin("zdtm-timers-away"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "the clocks moved on by the time away",
                "ITIMER_REAL that came due while away fires at once",
                "POSIX timer that came due while away fires at once",
                "periodic timerfd: every expiration while away is unread",
                "CLOCK_BOOTTIME timerfd that came due while away has fired",
                "POSIX timer not due yet: what it has left shrank by the time away",
                "CPU-time timer: what it had left",
            ],
        );
    }
}

#[test]
fn same_boot_needs_no_time_namespace() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-clocks", "s.thaw", &[]);
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(&o, &CHECKS);
    assert_eq!(offset(&o), 0);
}

#[test]
fn clocks_ahead_are_kept_continuous_in_a_time_namespace() {
    if !is_root() {
        eprintln!("skipped: creating the image's time namespace needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let img = image_from_another_boot(&env);
    for mode in ["host", "ns"] {
        let o = env.restore(&img, &["--pid-mode", mode], &[]);
        assert_all_ok(&o, &CHECKS);
        let off = offset(&o);
        assert!(
            (AHEAD - 60..=AHEAD).contains(&off),
            "offset {off} in {mode} mode"
        );
    }
}

#[test]
fn without_a_time_namespace_the_jump_is_refused_or_accepted_by_name() {
    if !is_root() {
        eprintln!("skipped: needs root to drop CAP_SYS_ADMIN (CI runs as root)");
        return;
    }
    let env = Env::new();
    let img = image_from_another_boot(&env);
    let run = |extra: &[&str]| {
        command(std::path::Path::new("/usr/bin/setpriv"))
            .args(["--bounding-set", "-sys_admin"])
            .arg(bin("thaw"))
            .args(["run", "--trust"])
            .arg(&env.pubkey)
            .args(["--pid-mode", "host", "--as-caller"])
            .args(extra)
            .arg(&img)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the image's clocks are ahead of this machine's")
            && err.contains("--allow-clock-jump"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let o = run(&["--allow-clock-jump"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL clocks: monotonic continues"),
        "{}",
        text(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("would jump backwards"));
}
