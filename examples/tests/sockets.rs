//! Sockets whose every end is in the process (queued bytes, half-closed pairs, shutdowns,
//! datagram pairs) and listening sockets (TCP, AF_UNIX path and abstract), restored in every mode;
//! a taken address refused by name; a listening socket handed in with --listen-fd.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use common::*;

const CHECKS: [&str; 37] = [
    "datagram pair: an end shut down for reading stays so",
    "unix path listener: its socket file's mode and group",
    "datagram pair whose other end closed: its messages wait, sending is refused",
    "bound datagram receivers: the messages queued at the checkpoint, in order, from no name",
    "datagram pair: queued messages, one by one, the empty one too",
    "seqpacket pair: queued messages, one by one, the empty one too",
    "seqpacket pair whose other end closed: its messages, then end of file",
    "files in flight: not in the descriptor table",
    "files in flight: three messages with their descriptors",
    "files in flight: the pipe's read end reads what its kept write end writes",
    "files in flight: the eventfd keeps its count",
    "files in flight: the write end sent is the one kept (one description)",
    "datagram client connected by name: sends again",
    "bound datagram socket (path): receives again",
    "bound datagram socket (abstract): receives again",
    "unused unix socket: still unconnected, connects",
    "stream pair: bytes queued to b",
    "stream pair: 100 KiB queued to a",
    "stream pair: a non-blocking, b blocking",
    "stream pair: send buffer size",
    "stream pair: nothing more queued",
    "stream pair: still connected",
    "half-closed pair: last words, then end of file",
    "half-closed pair: writing fails with EPIPE",
    "pre-close descriptor: end of file at once",
    "shut-down pair: the reader sees end of file",
    "shut-down pair: the other way still works",
    "shut-down pair: the shut side cannot write",
    "datagram pair: messages keep their boundaries",
    "tcp listener: same address",
    "tcp listener: accepts",
    "tcp listener on [::1]: same address, accepts",
    "unix path listener: accepts",
    "unix abstract listener: accepts",
    "unix sockets whose files were removed: same names, listening, no files",
    "unix listener whose file was renamed: bound by its first name, reached by its new one",
    "unix sockets bound by relative names: same names, listening, receiving",
];

fn image(env: &Env) -> (std::path::PathBuf, u16) {
    let img = env.path("s.thaw");
    let o = command(&bin("zdtm-sockets"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("tcp port "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port: {out}"));
    // The first life exited without removing its socket file, as a killed server would.
    std::fs::remove_file(env.path("s.thaw.sock")).unwrap();
    (img, port)
}

#[test]
fn in_process_sockets_and_listeners_in_every_mode() {
    let env = Env::new();
    let (img, _) = image(&env);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &CHECKS);
    }
}

#[test]
fn a_taken_listening_address_is_refused_by_name() {
    let env = Env::new();
    let (img, port) = image(&env);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "listening socket 127.0.0.1:{port}: the address is in use"
        )),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "nothing ran: {}", text(&o));
    drop(squatter);
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(&o, &CHECKS);
}

/// Someone else's listener at the image's socket path, its backlog full: the launcher's probe of
/// whether the file there is stale must not wait for that listener (it never accepts); the path
/// is in use, and the restore is refused.
#[test]
fn a_unix_listener_path_held_by_a_full_listener_is_refused_without_waiting() {
    let env = Env::new();
    let (img, _) = image(&env);
    let path = env.path("s.thaw.sock");
    let addr = |fd: i32| {
        // SAFETY: a zeroed sockaddr_un with a path shorter than sun_path, for bind/connect on fd.
        unsafe {
            let mut a: libc::sockaddr_un = std::mem::zeroed();
            a.sun_family = libc::AF_UNIX as u16;
            let p = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
            assert!(p.len() < a.sun_path.len());
            for (d, b) in a.sun_path.iter_mut().zip(p) {
                *d = *b as libc::c_char;
            }
            (fd, a)
        }
    };
    // SAFETY: socket, bind and listen on a fresh descriptor with a valid address.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let (fd, a) = addr(fd);
        let len = std::mem::size_of::<libc::sockaddr_un>() as u32;
        assert_eq!(
            libc::bind(fd, &a as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    // Connections until the backlog is full (EAGAIN), never accepted.
    let mut queued = Vec::new();
    loop {
        // SAFETY: as above, non-blocking.
        let r = unsafe {
            let fd = libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            let (fd, a) = addr(fd);
            let len = std::mem::size_of::<libc::sockaddr_un>() as u32;
            let r = libc::connect(fd, &a as *const _ as *const libc::sockaddr, len);
            queued.push(<std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd));
            r
        };
        if r != 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN)
            );
            break;
        }
        assert!(queued.len() < 64, "the backlog never filled");
    }
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(o.stdout.is_empty(), "nothing ran: {}", text(&o));
    // The listener and its file are left as they were.
    assert!(path.exists());
    drop((listener, queued));
}

#[test]
fn a_listening_socket_handed_in_is_used_instead() {
    let env = Env::new();
    let (img, port) = image(&env);
    let mine = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", mine.as_raw_fd()))
        .unwrap()
        .ino();
    // Twice, one after the other, from the same socket: each instance accepts on it.
    for mode in ["host", "ns"] {
        if mode == "host" && !is_root() {
            continue;
        }
        let o = command_leaking(&bin("thaw"), &[(mine.as_raw_fd(), 3)])
            .args(["run", "--trust"])
            .arg(&env.pubkey)
            .args(["--pid-mode", mode, "--listen-fd", "3"])
            .arg(&img)
            .output()
            .unwrap();
        assert_all_ok(&o, &CHECKS);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("tcp ino {ino}\n")),
            "not our socket: {out}"
        );
    }
}

#[test]
fn a_listening_socket_handed_in_for_no_listener_of_the_image_is_refused() {
    // On another port: it would be held by the launcher alone, its callers waiting for ever.
    let env = Env::new();
    let (img, _) = image(&env);
    let other = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let o = command_leaking(&bin("thaw"), &[(other.as_raw_fd(), 3)])
        .args(["run", "--trust"])
        .arg(&env.pubkey)
        .args(["--pid-mode", "ns", "--listen-fd", "3"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let port = other.local_addr().unwrap().port();
    assert!(
        err.contains(&format!("127.0.0.1:{port} stands for none of the image's")),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

#[test]
fn listen_fd_must_be_a_listening_socket() {
    let env = Env::new();
    let (img, _) = image(&env);
    let o = env.restore(&img, &["--listen-fd", "1"], &[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen-fd 1: not a listening socket"));
}

/// A message queued to a bound receiver comes back from a socket without a name: one whose
/// sender had a name is refused, naming why.
#[test]
fn a_message_from_a_named_sender_is_refused() {
    let env = Env::new();
    let o = env.first_life("zdtm-sockets", "n.thaw", &["named-sender"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a queued message was sent by a socket with a name"),
        "{err}"
    );
    assert!(!env.path("n.thaw").exists());
}

/// A message carrying a descriptor that cannot be restored (here the test's own stdout, a pipe
/// to another process) is refused, naming it as in flight, and the descriptors a peek of it
/// installs are closed again (the process's descriptors are as they were).
#[test]
fn a_descriptor_in_flight_that_cannot_be_restored_is_refused() {
    let env = Env::new();
    let out = env.refused("zdtm-sockets", "q.thaw", &["fd-in-flight"]);
    assert!(
        out.contains("a descriptor in flight in a message queued in socket:[")
            && out.contains("the other end of the pipe is not in this process"),
        "{out}"
    );
    assert!(!env.path("q.thaw").exists());
}

/// Connections the process made to its own AF_UNIX listeners and had not accepted wait there
/// again, in order (open, half-closed; seqpacket too). One with bytes already sent into it, or
/// whose connecting socket was closed, is refused, naming why.
#[test]
fn connections_waiting_to_be_accepted_wait_again() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let img = env.checkpoint("zdtm-backlog", "b.thaw", &[d]);
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(
        &o,
        &[
            "two connections wait, no more",
            "waiting connections in their order: open, shut down for sending",
            "an accepted connection: accepted from the listener again, its bytes both ways",
            "seqpacket listener: its waiting connection, message boundaries kept",
        ],
    );
    for (mode, why) in [
        ("sent", "has bytes sent into it already"),
        ("closed", "whose connecting socket was closed"),
    ] {
        let o = env.first_life("zdtm-backlog", "s.thaw", &[d, mode]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "{}",
            text(&o)
        );
    }
}

/// A second checkpoint of a queue holding an empty message an earlier one saw is refused (a
/// peek marks it, and a second walk would pass over it), and the first image has it.
#[test]
fn an_empty_message_seen_by_an_earlier_checkpoint_is_not_lost() {
    let env = Env::new();
    let out = env.refused("zdtm-empty-twice", "e.thaw", &[]);
    assert!(
        out.contains("an empty message waits in its queue that an earlier checkpoint"),
        "{out}"
    );
    let o = env.restore(&env.path("e.thaw.first"), &[], &[]);
    assert_all_ok(&o, &["the first image holds the three messages"]);
}

/// A stream pair whose queued bytes carry a descriptor, or whose reader asked for credentials:
/// refused, naming why (a stream is restored with its bytes alone).
#[test]
fn a_stream_with_descriptors_or_credentials_queued_is_refused() {
    let env = Env::new();
    let out = env.refused("zdtm-sockets", "sf.thaw", &["stream-fd"]);
    assert!(
        out.contains("descriptors in flight (SCM_RIGHTS) wait in its queue with the bytes"),
        "{out}"
    );
    let out = env.refused("zdtm-sockets", "sc.thaw", &["stream-creds"]);
    assert!(
        out.contains("asked for its senders' credentials (SO_PASSCRED)"),
        "{out}"
    );
}

/// A listener's socket file hidden by a file system mounted over its directory, a socket file of
/// the same inode number in its place: another file (inode numbers repeat across file systems),
/// refused rather than bound again as if it were the listener's own.
#[test]
fn a_socket_file_of_the_same_inode_on_another_file_system_is_not_the_listeners() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let dir = env.path("over");
    std::fs::create_dir(&dir).unwrap();
    let o = env.first_life(
        "zdtm-sockets",
        "om.thaw",
        &["over-mounted", dir.to_str().unwrap()],
    );
    for _ in 0..2 {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&dir)
            .status();
    }
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("/over/s\", whose socket file was replaced since it was bound"),
        "{out}"
    );
}

/// A live listener at the image's socket path (another restore of the image serving there): the
/// restore is refused without connecting to it, which a running server would see as a client
/// that came and went (Node's server crashed on the EPIPE).
#[test]
fn a_live_listener_at_the_path_is_not_connected_to() {
    let env = Env::new();
    let (img, _) = image(&env);
    let path = env.path("s.thaw.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    listener.set_nonblocking(true).unwrap();
    let got = listener.accept();
    assert!(
        got.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the launcher connected to the live listener: {got:?}"
    );
}

/// Errors waiting to be read (SO_ERROR: POLLERR), which a read takes. An AF_UNIX stream end
/// whose other end closed with bytes unread there (the kernel marks it reset) comes back reset:
/// its queued bytes, ECONNRESET once, then end of file; it came back as a clean end of file. A
/// seqpacket end reset so and a connected UDP socket holding an ICMP error (ECONNREFUSED) are
/// refused by name; they were restored without their errors. The first life keeps its errors
/// (a peek at an empty reset queue took it).
#[test]
fn errors_waiting_on_sockets_come_back_or_are_refused_by_name() {
    let env = Env::new();
    let first = env.first_life("zdtm-reset", "r.thaw", &[]);
    let checks = |life: &str| {
        [
            "reset end: its bytes, ECONNRESET once, then end of file",
            "reset end with nothing queued: ECONNRESET once, then end of file",
            "an end closed cleanly: its bytes, then end of file",
            "reset end: writing fails with EPIPE",
        ]
        .map(|c| format!("{life}: {c}"))
    };
    let first_checks = checks("first life");
    assert_all_ok(&first, &first_checks.each_ref().map(String::as_str));
    let restored = checks("restored");
    for opts in every_mode() {
        let o = env.restore(&env.path("r.thaw"), opts, &[]);
        assert_all_ok(&o, &restored.each_ref().map(String::as_str));
    }
    let out = env.refused("zdtm-reset", "q.thaw", &["seqpacket"]);
    assert!(
        out.contains("an error (ECONNRESET")
            && out.contains("waits to be read on this seqpacket socket")
            && out.contains("ok seqpacket: the first life still has its error"),
        "{out}"
    );
    let out = env.refused("zdtm-reset", "u.thaw", &["udp"]);
    assert!(
        out.contains("an error waits to be read on this socket (connected to 127.0.0.1:")
            && out.contains("ECONNREFUSED")
            && out.contains("ok udp: the first life still has its error"),
        "{out}"
    );
    assert!(!env.path("q.thaw").exists() && !env.path("u.thaw").exists());
}

/// A connection to a server process that has ended since (a multiprocessing Manager shut down
/// while a proxy was kept): refused for its peer credentials, the server's, but said to be a
/// dead connection, not a pair "made by another process and passed over" (which it was called).
#[test]
fn a_connection_whose_server_ended_is_refused_as_such() {
    let env = Env::new();
    let script = r#"
import os, socket, sys, time, thaw
path = sys.argv[3]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    # The server listens itself: its connections' peer credentials are its own.
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    os.write(w, b"up")
    c, _ = srv.accept()
    c.recv(1)
    os._exit(0)
os.read(r, 2)
c = socket.socket(socket.AF_UNIX)
c.connect(path)
c.send(b"x")
os.waitpid(pid, 0)
try:
    thaw.checkpoint(sys.argv[1], key=sys.argv[2])
    print("accepted")
except thaw.UnsupportedStateError as e:
    print("refused", f"other end was closed, by process {pid} " in str(e), "passed over" in str(e))
"#;
    let img = env.path("dead.thaw");
    let o = env
        .python_script(script, &img)
        .arg(env.path("dead.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "refused True False\n",
        "{}",
        text(&o)
    );
    assert!(!img.exists());
}

/// A socket pair a child made (with other ids) and passed over: its peer credentials
/// (SO_PEERCRED) are the child's, and a pair made again at restore would give the process's own
/// (CRIU's sock_peercred came back with them wrong). Refused by name; the first life goes on.
/// Through Debian's python3 and the thaw package.
#[test]
fn a_socket_pair_made_by_another_process_is_refused_for_its_peer_credentials() {
    let env = Env::new();
    let script = r#"
import os, socket, sys, thaw
chan, theirs = socket.socketpair()
pid = os.fork()
if pid == 0:
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    a, b = socket.socketpair()
    socket.send_fds(theirs, [b"x"], [a.fileno(), b.fileno()])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(chan, 1, 2)
os.waitpid(pid, 0)
theirs.close()
try:
    thaw.checkpoint(sys.argv[1], key=sys.argv[2])
    print("accepted")
except thaw.UnsupportedStateError as e:
    print("refused", f"SO_PEERCRED: PID {pid}," in str(e), str(e).count("peer credentials"))
"#;
    let img = env.path("peer.thaw");
    let o = env.python_script(script, &img).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "refused True 2\n",
        "{}",
        text(&o)
    );
    assert!(!img.exists());
}

/// A daemon that bound a port below 1024 as root, then gave root up, as servers do: restored
/// with its credentials, the restorer may not bind the port again. The refusal said
/// "Permission denied" alone; it names the capability and the way out (--listen-fd).
#[test]
fn a_privileged_port_bound_before_giving_up_root_names_the_way_out() {
    const SCRIPT: &str = r#"
import os, socket, sys, thaw
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for port in range(700, 1024):
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError:
        pass
s.listen()
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
print("port", port, flush=True)
thaw.checkpoint(sys.argv[1], key=sys.argv[2], exit_after_save=True)
"#;
    if !is_root() {
        eprintln!("skipped: binding a privileged port takes root");
        return;
    }
    let env = Env::for_nobody();
    let img = env.path("priv.thaw");
    let o = env.python_script(SCRIPT, &img).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let port = out
        .trim()
        .strip_prefix("port ")
        .unwrap_or_else(|| panic!("{out}"));
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "listening socket 127.0.0.1:{port}: cannot bind and listen"
        )) && err.contains("CAP_NET_BIND_SERVICE")
            && err.contains("--listen-fd"),
        "{err}"
    );
}
