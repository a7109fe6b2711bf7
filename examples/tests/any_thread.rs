//! Checkpoint from a thread that is not the initial one (as the stock `java` launcher runs
//! `main()`), restored 100 times in a row in every mode: no thread may run in, or read, the
//! restorer region after the checkpointing thread has unmapped it.

mod common;

use common::*;

const CHECKS: [&str; 5] = [
    "pid",
    "every tid",
    "checkpoint returned on app-main",
    "no_new_privs: app-main's own, not the main thread's",
    "a round of work on every worker",
];

fn hundred(opts: &[&str], env: &Env) {
    let img = env.checkpoint("zdtm-worker-checkpoint", "w.thaw", &[]);
    assert_eq!(
        env.manifest(&img).threads.len(),
        24,
        "initial + app-main + 22 workers"
    );
    for i in 0..100 {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "restore {i} with {opts:?}: {}",
            text(&o)
        );
        assert_all_ok(&o, &CHECKS);
    }
}

#[test]
fn from_a_worker_thread_lazy() {
    if !is_root() {
        eprintln!("skipped: host mode needs root (CI runs as root)");
        return;
    }
    hundred(&["--pid-mode", "host"], &Env::new());
}

#[test]
fn from_a_worker_thread_eager() {
    if !is_root() {
        eprintln!("skipped: host mode needs root (CI runs as root)");
        return;
    }
    hundred(&["--pid-mode", "host", "--eager"], &Env::new());
}

#[test]
fn from_a_worker_thread_private_copy() {
    if !is_root() {
        eprintln!("skipped: host mode needs root (CI runs as root)");
        return;
    }
    hundred(&["--pid-mode", "host", "--private-copy"], &Env::new());
}

#[test]
fn from_a_worker_thread_in_a_namespace() {
    hundred(&["--pid-mode", "ns"], &Env::new());
}

#[test]
fn the_checkpointing_thread_exits_right_after_restore() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-worker-checkpoint", "r.thaw", &["return"]);
    for opts in [&["--eager"][..], &["--pid-mode", "ns"], &[]] {
        for _ in 0..30 {
            let o = env.restore(&img, opts, &[]);
            assert_all_ok(
                &o,
                &[
                    "app-main returned and was joined",
                    "pid",
                    "every tid",
                    "a round of work on every worker",
                ],
            );
        }
    }
}
