//! A process at the root of a cgroup namespace of its own (zdtm's cgroupns: it called
//! `unshare(CLONE_NEWCGROUP)`), which reads `/` for each of its cgroups. Restored from another
//! cgroup, it read the caller's paths. After restore it reads `/` again.
//!
//! With `thread`: a thread alone unshares one, and the checkpoint is refused by name.

#[path = "common.rs"]
mod common;

fn cgroups() -> String {
    std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
}

fn at_root(text: &str) -> bool {
    !text.is_empty() && text.lines().all(|l| l.splitn(3, ':').nth(2) == Some("/"))
}

fn unshare() {
    // SAFETY: unshare of this thread's cgroup namespace; nothing else changes.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        println!(
            "FAIL unshare(CLONE_NEWCGROUP): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
}

fn main() {
    if common::argv().2.iter().any(|a| a == "thread") {
        common::refusal(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                unshare();
                tx.send(()).unwrap();
                std::thread::park();
            });
            rx.recv().unwrap();
        });
    }
    unshare();
    let before = cgroups();
    common::checkpoint();
    let mut c = common::Checks::default();
    c.check(
        "before the checkpoint it read / for each cgroup",
        at_root(&before),
        &before,
    );
    let after = cgroups();
    c.check(
        "after restore it reads / for each cgroup again",
        at_root(&after),
        &after,
    );
    c.finish();
}
