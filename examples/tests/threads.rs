//! Multi-threaded processes end to end: every thread restored with its TID, name, thread-locals
//! and where it was (condvar, pipe read, sleep, futex with timeout, busy computing).

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

const THREAD_CHECKS: [&str; 17] = [
    "epoll and eventfd",
    "epoller tid, name and thread-locals",
    "main thread",
    "pool ran the new work",
    "every thread joined",
    "worker-0 tid, name and thread-locals",
    "worker-1 tid, name and thread-locals",
    "worker-2 tid, name and thread-locals",
    "worker-3 tid, name and thread-locals",
    "worker-4 tid, name and thread-locals",
    "worker-5 tid, name and thread-locals",
    "worker-6 tid, name and thread-locals",
    "worker-7 tid, name and thread-locals",
    "pipe-reader tid, name and thread-locals",
    "sleeper tid, name and thread-locals",
    "timed-wait tid, name and thread-locals",
    "pool ran the new work",
];

fn tids_of(env: &Env, img: &Path) -> Vec<i32> {
    env.manifest(img).threads.iter().map(|t| t.tid).collect()
}

fn assert_gone(tids: &[i32]) {
    for tid in tids {
        assert!(
            !Path::new(&format!("/proc/{tid}")).exists(),
            "TID {tid} left behind"
        );
    }
}

#[test]
fn thread_pool_in_host_mode_fifty_times() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-threads", "t.thaw", &[]);
    let tids = tids_of(&env, &img);
    assert_eq!(tids.len(), 13, "main + 8 workers + 4 blocked threads");
    for i in 0..50 {
        let jobs = (10 + i).to_string();
        let o = env.restore(&img, &["--pid-mode", "host"], &[&jobs]);
        assert_all_ok(&o, &THREAD_CHECKS);
        assert_gone(&tids);
    }
}

#[test]
fn thread_pool_in_namespace_mode_as_nobody() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody (CI runs as root)");
        return;
    }
    let env = Env::for_nobody();
    let img = env.checkpoint("zdtm-threads", "t.thaw", &[]);
    let o = env.restore(&img, &["--pid-mode", "ns"], &["25"]);
    assert_all_ok(&o, &THREAD_CHECKS);
}

#[test]
fn eight_concurrent_restores_in_namespaces() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-threads", "t.thaw", &[]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.restore_cmd(&img, &["--pid-mode", "ns"], &[&(100 + i).to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outputs {
        assert_all_ok(o, &THREAD_CHECKS);
    }
}

/// Runs zdtm-blocked, which names its thread `name`; checks the refusal names that thread by tid
/// and name with `why`, the thread finished, and no image was written.
fn refused_thread(mode: &str, name: &str, why: &str) -> String {
    let env = Env::new();
    let img = env.path("b.thaw");
    let o = command(&bin("zdtm-blocked"))
        .arg(&img)
        .arg("-")
        .arg(mode)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    let tid: i32 = out
        .split(&format!("{name} tid "))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tid reported: {out}"));
    assert!(
        out.contains(&format!("thread {tid} ({name}) {why}")),
        "{out}"
    );
    assert!(out.contains("finished: done"), "{out}");
    assert!(out.contains("exists: false"), "{out}");
    out.into_owned()
}

#[test]
fn threads_blocking_every_signal_are_captured_without_it_and_restored() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-blocked", "b.thaw", &[]);
    let m = env.manifest(&img);
    assert_eq!(m.threads.len(), 3, "main, watchdog, reader");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "watchdog thread, same TID and name",
                "it wakes when given what it waits for",
                "its signal mask and alternate stack",
                "its own timer slack, machine-check policy and no_new_privs, not the main thread's",
                "the reader reads what is written",
            ],
        );
    }
}

/// Refused after its attempts were given up on; what they opened is closed again (a Go probe
/// under a signal flood saw an earlier attempt's descriptors taken for the application's, and
/// left open).
#[test]
fn a_thread_that_cannot_take_the_signal_in_time_is_named() {
    let out = refused_thread(
        "vfork",
        "vforker",
        "did not respond to the checkpoint signal within 200ms",
    );
    assert!(out.contains("descriptors as before: true"), "{out}");
}

/// More threads blocking every signal than the ptrace helper stops at once: refused once the
/// attempts that let a passing crowd (threads ending) go by are spent; every thread goes on.
#[test]
fn more_threads_blocking_the_signal_than_the_helper_takes_are_refused() {
    let env = Env::new();
    let img = env.path("b.thaw");
    let o = command(&bin("zdtm-blocked"))
        .arg(&img)
        .arg("-")
        .arg("crowd")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("blocks the checkpoint signal and could not be captured without it")
            && out.contains("70 such threads, more than the 64 thaw captures"),
        "{out}"
    );
    assert!(out.contains("(crowd"), "{out}");
    assert!(out.contains("woke 70 of 70"), "{out}");
    assert!(out.contains("exists: false"), "{out}");
}
