//! Descriptors the application did not open (a pipe and a socket left by whatever started it):
//! refused by name with a hint by default; left out or replaced by /dev/null by a policy given
//! through the API or `THAW_FD_POLICY`. The README's main job works from a shell that leaks a
//! pipe.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use common::*;

/// A pipe's write end and one end of a socket pair, whose other ends stay here.
struct Leaks {
    _r: std::io::PipeReader,
    w: std::io::PipeWriter,
    _peer: UnixStream,
    sock: UnixStream,
}

fn leaks() -> Leaks {
    let (r, w) = std::io::pipe().unwrap();
    let (sock, peer) = UnixStream::pair().unwrap();
    Leaks {
        _r: r,
        w,
        _peer: peer,
        sock,
    }
}

fn checkpoint(
    env: &Env,
    mode: &str,
    policy_env: Option<&str>,
) -> (std::process::Output, std::path::PathBuf) {
    let l = leaks();
    let img = env.path(&format!("{mode}.thaw"));
    let mut c = command_leaking(
        &bin("zdtm-fd-policy"),
        &[(l.w.as_raw_fd(), 5), (l.sock.as_raw_fd(), 6)],
    );
    c.env_remove("THAW_FD_POLICY");
    if let Some(p) = policy_env {
        c.env("THAW_FD_POLICY", p);
    }
    let o = c.arg(&img).arg(&env.key).arg(mode).output().unwrap();
    (o, img)
}

#[test]
fn foreign_descriptors_are_refused_by_name_with_a_hint() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "refuse", None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(out.contains("2 unsupported item(s)"), "{out}");
    assert!(
        out.contains("fd 5 (pipe:[")
            && out.contains("the other end of the pipe is not in this process"),
        "{out}"
    );
    assert!(
        out.contains("fd 6 (socket:[") && out.contains("in another process"),
        "{out}"
    );
    assert!(out.contains("THAW_FD_POLICY=5=drop"), "{out}");
    assert!(out.contains("socket=drop"), "{out}");
    assert!(!img.exists());
}

#[test]
fn a_policy_through_the_api_drops_and_replaces() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "api", None);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(
        &o,
        &[
            "fd 5 left out is a dead end: writes fail with EPIPE",
            "fd 6 is /dev/null",
            "fd 6 read-write",
            "fd 7 is /dev/null",
            "fd 7 write-only, append",
        ],
    );
}

#[test]
fn a_policy_in_the_environment_does_the_same() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "env", Some("5=drop, socket=null, 7=null"));
    assert!(o.status.success(), "{}", text(&o));
    let o = env.restore(&img, &["--pid-mode", "ns"], &[]);
    assert_all_ok(
        &o,
        &[
            "fd 5 left out is a dead end: writes fail with EPIPE",
            "fd 6 is /dev/null",
            "fd 7 is /dev/null",
        ],
    );
}

#[test]
fn a_malformed_policy_is_refused_clearly() {
    let env = Env::new();
    let (o, _) = checkpoint(&env, "env", Some("pipe=close"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        out.contains("THAW_FD_POLICY") && out.contains("unknown action"),
        "{out}"
    );
}

#[test]
fn the_main_job_works_from_a_shell_that_leaks_a_pipe() {
    let env = Env::new();
    let l = leaks();
    let img = env.path("lua.thaw");
    let o = command_leaking(&bin("lua-warm"), &[(l.w.as_raw_fd(), 251)])
        .env_remove("THAW_FD_POLICY")
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fd 251 (pipe:[") && err.contains("left out"),
        "{err}"
    );
    let o = env.restore(&img, &[], &["1 + 2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 + 2 = 3"),
        "{}",
        text(&o)
    );
}

/// A process holding more than half the descriptors its hard limit allows: the checkpoint
/// (which holds a duplicate of each while it looks) fails, naming the limit and the remedy.
#[test]
fn too_many_descriptors_for_the_limit_are_named() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "many", None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        out.contains("past its hard limit of 200 open files: raise that limit"),
        "{out}"
    );
    assert!(!img.exists());
}

/// A descriptor thaw cannot restore that the policy leaves out is a dead end at its number, and
/// an epoll registration of it stays: the event loop that watched it sees it hang up (a runtime
/// keeping its objects by number would otherwise take the next file at that number for it).
#[test]
fn a_descriptor_left_out_is_a_dead_end_whose_hang_up_its_epoll_reports() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "epoll", None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(
        &o,
        &["epoll: fd 6 left out is a dead end, still watched, that hung up"],
    );
}

/// The same edge-triggered, as Go's netpoller registers every descriptor: the hang-up and the
/// error the dead ends have at restore are edges the epoll instance reports (a Go probe saw them
/// taken with the events registration queues, and its readers blocked for ever).
#[test]
fn edge_triggered_watches_of_dead_ends_report_them() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "epoll-et", None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["epoll: edge-triggered watches of dead ends report their hang-up and error"],
        );
    }
}

/// A datagram socket left out (a UDP server with datagrams waiting, which thaw refuses) is a
/// dead end of its own kind: never readable. A stream's end of file there read as an empty
/// datagram every time, and the event loop that watched it spun: Node's `dgram` emitted some
/// 800,000 empty 'message' events a second from address '' at 100 % CPU, asyncio the same.
#[test]
fn a_datagram_socket_left_out_is_a_dead_end_that_never_reads() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "udp", None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["udp: fd 9 left out is a datagram dead end: no event, no empty datagram"],
        );
    }
}

/// A registration of a descriptor left out while another descriptor of its file stays (the
/// kernel would keep it) is refused, named.
#[test]
fn a_registration_the_kernel_would_keep_is_refused() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "epoll-dup", None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        out.contains("fd 8 (epoll): watches fd 10, which the descriptor policy leaves out while another descriptor of its file stays"),
        "{out}"
    );
    assert!(!img.exists());
}

/// A listening socket with a connection waiting is refused whatever the policy says: left out,
/// it would be a server that never accepts again, without an error.
#[test]
fn no_policy_leaves_a_listener_out() {
    let env = Env::new();
    let (o, img) = checkpoint(&env, "listener", None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(out.contains("1 unsupported item(s)"), "{out}");
    assert!(
        out.contains("connection(s) waiting to be accepted"),
        "{out}"
    );
    assert!(
        !out.contains("THAW_FD_POLICY"),
        "no policy is offered: {out}"
    );
    assert!(!img.exists());
}

/// Both ends of a pipe and of a socket pair passed in, while the starter keeps them too (make's
/// jobserver, passed to a recipe marked +; a launcher keeping a duplicate): made again they
/// would be the process's alone, its tokens and messages going round in its own pipe. Refused,
/// naming who holds them; a probe had seen them accepted and restored private.
#[test]
fn both_ends_passed_in_and_kept_by_the_starter_are_refused() {
    let env = Env::new();
    let (r, w) = std::io::pipe().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let img = env.path("both.thaw");
    let mut c = command_leaking(
        &bin("zdtm-fd-policy"),
        &[
            (r.as_raw_fd(), 5),
            (w.as_raw_fd(), 6),
            (a.as_raw_fd(), 8),
            (b.as_raw_fd(), 9),
        ],
    );
    c.env_remove("THAW_FD_POLICY");
    let o = c.arg(&img).arg(&env.key).arg("refuse").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        out.contains("fd 5 (pipe:[")
            && out.contains("both ends of the pipe are in this process, and process "),
        "{out}"
    );
    assert!(
        out.contains("fd 8 (socket:[")
            && out.contains("both ends of the socket pair are in this process, and process "),
        "{out}"
    );
    assert!(!img.exists());
    drop((r, w, a, b));
}
