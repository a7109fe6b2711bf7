//! Descriptors the application did not open: the test starts this program with fd 5 the write
//! end of a pipe whose read end stays in the test (a CI runner's log pipe) and fd 6 one end of a
//! socket pair whose other end stays in the test. The program itself opens fd 7, IMAGE.log in
//! append mode, and asks for /dev/null there.
//!
//! `PROG IMAGE KEY MODE`, MODE one of:
//! - `refuse`: no policy; the checkpoint must fail, naming fds 5 and 6 with a hint (printed);
//! - `api`: the policy through the Rust API: fd 5 dropped, sockets to /dev/null, fd 7 to /dev/null;
//! - `env`: no API policy (the test sets `THAW_FD_POLICY` to the same).
//!
//! After restore: fd 5 is closed, fd 6 and fd 7 are /dev/null with their access modes and flags.

#[path = "common.rs"]
mod common;

use thaw::{FdAction, FdClass};

fn target(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn status_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL on any number is harmless; -1 for a closed one.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn main() {
    let (image, key, extra) = common::argv();
    let mode = extra.first().map_or("api", String::as_str).to_owned();
    let log = format!("{image}.log");
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .unwrap();
    // SAFETY: dup2 onto a number this program does not otherwise use.
    let seven = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&f), 7) };
    assert_eq!(seven, 7);
    drop(f);
    for fd in [5, 6] {
        assert!(target(fd).is_some(), "the test must pass fd {fd}");
    }

    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    if mode == "api" {
        cp = cp
            .fd(5, FdAction::Drop)
            .fds(FdClass::Socket, FdAction::DevNull)
            .fd(7, FdAction::DevNull);
    }
    match cp.save() {
        Ok(thaw::Outcome::Saved(_)) => unreachable!("exit_after_save exits"),
        Ok(thaw::Outcome::Restored(_)) => {}
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    }
    let mut c = common::Checks::default();
    c.check(
        "fd 5 closed",
        target(5).is_none(),
        format!("{:?}", target(5)),
    );
    c.check(
        "fd 6 is /dev/null",
        target(6).as_deref() == Some("/dev/null"),
        format!("{:?}", target(6)),
    );
    c.check(
        "fd 6 read-write",
        status_flags(6) & libc::O_ACCMODE == libc::O_RDWR,
        status_flags(6),
    );
    c.check(
        "fd 7 is /dev/null",
        target(7).as_deref() == Some("/dev/null"),
        format!("{:?}", target(7)),
    );
    let fl = status_flags(7);
    c.check(
        "fd 7 write-only, append",
        fl & libc::O_ACCMODE == libc::O_WRONLY && fl & libc::O_APPEND != 0,
        fl,
    );
    c.finish();
}
