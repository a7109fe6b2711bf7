//! The launcher with a standard output or error it cannot write (`2>/dev/full`, `| head -1`,
//! `| true`): the command's own exit status, never a panic (Rust's 101), and a restored process
//! supervised to its end.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

use common::*;

const PANIC: i32 = 101;
const IO: i32 = 74;

fn full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

/// The write end of a pipe whose read end is already closed: every write fails with EPIPE, as
/// once `head -1` has read its line.
fn readerless_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two new descriptors, each owned once below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new descriptors of this process, owned nowhere else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    Stdio::from(w)
}

fn run(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert_ne!(o.status.code(), Some(PANIC), "panicked: {}", text(&o));
    o
}

#[test]
fn an_unwritable_stderr_keeps_the_exit_code() {
    let env = Env::new();
    // An error that cannot be told: its code all the same.
    let mut c = command(&bin("thaw"));
    c.args(["run", "--trust"])
        .arg(&env.pubkey)
        .arg(env.path("nonexistent.thaw"))
        .stderr(full());
    let o = run(c);
    assert_eq!(o.status.code(), Some(IO), "{}", text(&o));
    // A restored process whose launcher cannot write its timing lines: supervised to its end,
    // the launcher ends with its status.
    let img = env.checkpoint("counter", "c.thaw", &[]);
    for mode in every_mode() {
        let mut c = env.restore_cmd(&img, &[&["--timing"], *mode].concat(), &["--verify", "0"]);
        c.stderr(full());
        let o = run(c);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("counter: pid="),
            "{mode:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn a_stdout_whose_reader_has_gone_ends_quietly_and_a_full_one_is_an_io_error() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let (img, pubkey) = (img.to_str().unwrap(), env.pubkey.to_str().unwrap());
    let prefix = env.path("gone");
    let commands: [&[&str]; 4] = [
        &["inspect", "--json", "--trust", pubkey, img],
        &["inspect", "--trust", pubkey, img],
        &["verify", "--trust", pubkey, img],
        &["keygen", prefix.to_str().unwrap()],
    ];
    for args in commands {
        // `| head -1`, `| true`: the status the command would have had, nothing on stderr.
        let mut c = command(&bin("thaw"));
        c.args(args).stdout(readerless_pipe());
        let o = run(c);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
    assert!(env.path("gone.key").exists() && env.path("gone.pub").exists());
    // Output lost otherwise is an I/O error that says so.
    let mut c = command(&bin("thaw"));
    c.args(["verify", "--trust", pubkey, img]).stdout(full());
    let o = run(c);
    assert_eq!(o.status.code(), Some(IO), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("thaw: cannot write to standard output: ") && err.lines().count() == 1,
        "{err}"
    );
}
