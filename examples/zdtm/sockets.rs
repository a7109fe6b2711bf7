//! Sockets whose every end is in the process, and listening sockets.
//!
//! Before the checkpoint: a stream pair with bytes queued both ways (100 KiB one way), one end
//! non-blocking, the other peeking from an offset (SO_PEEK_OFF); a pair whose other end was closed after sending its last words; a pair whose
//! other end was closed at once (the JDK's "pre-close" descriptor); a pair shut down one way; an
//! empty datagram pair; a TCP listener on 127.0.0.1 (ephemeral port, backlog 7, SO_REUSEADDR) and
//! one on [::1]; an
//! AF_UNIX listener at IMAGE.sock and one at an abstract address; a listener and a datagram
//! receiver bound by relative names ("rel.sock", "rel.dgram") from IMAGE's directory, which is
//! the working directory from then on.
//!
//! Messages queued in a datagram pair and a seqpacket pair come back one by one, with their
//! boundaries, empty ones too; a seqpacket end whose peer closed after sending gets its
//! messages, then end of file.
//!
//! `PROG IMAGE KEY [fd-in-flight]`: prints `tcp port N` and checkpoints (with `fd-in-flight`, a
//! message carrying a descriptor waits in the datagram pair, and the checkpoint must be refused,
//! leaving the process's descriptors as they were). After restore it checks every socket,
//! prints `tcp ino N` (the listener's inode, for the --listen-fd test) and the checks.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

const BIG: usize = 100 * 1024;

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

fn stream(fd: RawFd) -> std::mem::ManuallyDrop<UnixStream> {
    // SAFETY: `fd` is an open socket of this process; ManuallyDrop keeps it open.
    std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(fd) })
}

fn status_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL has no memory effects.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn sndbuf(fd: RawFd) -> i32 {
    let mut v = 0i32;
    let mut len = 4u32;
    // SAFETY: an int option of our own socket into a 4-byte buffer.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    v
}

fn pair() -> (RawFd, RawFd) {
    let (a, b) = UnixStream::pair().unwrap();
    (a.into_raw_fd(), b.into_raw_fd())
}

fn read_all_now(fd: RawFd, want: usize) -> Vec<u8> {
    let mut s = stream(fd);
    let mut out = vec![0u8; want];
    s.read_exact(&mut out).map(|_| out).unwrap_or_default()
}

fn main() {
    let (image, _, extra) = common::argv();
    let (a, b) = pair();
    stream(a).write_all(b"hello from a").unwrap();
    let big: Vec<u8> = (0..BIG).map(pattern).collect();
    {
        let mut s = stream(b);
        s.set_nonblocking(true).unwrap();
        let mut at = 0;
        while at < big.len() {
            match s.write(&big[at..]) {
                Ok(n) => at += n,
                Err(e) => panic!("queueing {BIG} bytes: {e} after {at}"),
            }
        }
        s.set_nonblocking(false).unwrap();
    }
    stream(a).set_nonblocking(true).unwrap();
    let set_sndbuf = |fd: RawFd, v: i32| {
        // SAFETY: an int option of our own socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&v as *const i32).cast(),
                4,
            )
        }
    };
    set_sndbuf(b, 50_000);
    let sndbuf_b = sndbuf(b);
    // b peeks from its 7th byte on (SO_PEEK_OFF): the checkpoint's own peek must not start there
    // (it saved "from a" for "hello from a") nor move it.
    let peek_off = |fd: RawFd, set: Option<i32>| match set {
        Some(v) => {
            common::set_sockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, v);
            v
        }
        None => common::sockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    };
    peek_off(b, Some(6));

    let (c, d) = pair();
    stream(d).write_all(b"last words").unwrap();
    // SAFETY: closes our own descriptor d, used nowhere else.
    unsafe { libc::close(d) };
    let (e, f) = pair();
    // SAFETY: as above.
    unsafe { libc::close(f) };
    let (g, h) = pair();
    stream(g).shutdown(std::net::Shutdown::Write).unwrap();
    let (i, j) = UnixDatagram::pair().unwrap();
    if extra.first().is_some_and(|a| a == "fd-in-flight") {
        in_flight_is_refused(&i);
    }
    if let Some(mode) = extra
        .first()
        .filter(|a| *a == "stream-fd" || *a == "stream-creds")
    {
        stream_extras_are_refused(mode);
    }
    if let (Some("over-mounted"), Some(dir)) = (extra.first().map(String::as_str), extra.get(1)) {
        over_mounted_is_refused(dir);
    }
    let (i, j) = (i.into_raw_fd(), j.into_raw_fd());
    // A datagram pair with one end shut down for reading: the other end's sends fail.
    let (du_a, du_b) = UnixDatagram::pair().unwrap();
    du_a.shutdown(std::net::Shutdown::Read).unwrap();
    // A datagram pair whose other end was closed after sending: its messages still wait.
    let (widow, gone) = UnixDatagram::pair().unwrap();
    gone.send(b"left behind").unwrap();
    gone.send(b"and this").unwrap();
    drop(gone);
    // Messages waiting: four datagrams, three seqpackets, one of each empty (SIOCINQ says 0
    // for it, yet it is a message).
    let (dq_a, dq_b) = UnixDatagram::pair().unwrap();
    for m in [&b"one"[..], b"", b"three", b"xy"] {
        dq_a.send(m).unwrap();
    }
    let sp = <[RawFd; 2]>::from(pair_of(libc::SOCK_SEQPACKET));
    for m in [&b"aa"[..], b"", b"bbb"] {
        // SAFETY: sends from our own buffer on our own socket.
        unsafe { libc::send(sp[0], m.as_ptr().cast(), m.len(), 0) };
    }
    // A seqpacket pair whose other end sent two messages (one empty) and closed: they wait,
    // then end of file.
    let spw = <[RawFd; 2]>::from(pair_of(libc::SOCK_SEQPACKET));
    for m in [&b"bye"[..], b""] {
        // SAFETY: sends from our own buffer on our own socket.
        unsafe { libc::send(spw[1], m.as_ptr().cast(), m.len(), 0) };
    }
    // SAFETY: closes our own descriptor, used nowhere else.
    unsafe { libc::close(spw[1]) };

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    // SAFETY: re-listen with a backlog of 7 on our own listening socket.
    unsafe { libc::listen(tcp.as_raw_fd(), 7) };
    let tcp = tcp.into_raw_fd();
    let tcp6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let port6 = tcp6.local_addr().unwrap().port();
    let tcp6 = tcp6.into_raw_fd();
    let path = format!("{image}.sock");
    let _ = std::fs::remove_file(&path);
    let unix_path = UnixListener::bind(&path).unwrap().into_raw_fd();
    // Opened to a group, as a server shares its socket: the file keeps its mode and owner.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let group = if root { 65534 } else { unsafe_getegid() };
    std::os::unix::fs::chown(&path, None, Some(group)).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    let abstract_name = format!("thaw-zdtm-sockets-{}", std::process::id());
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        UnixListener::bind_addr(&addr).unwrap().into_raw_fd()
    };
    // A listener and a datagram receiver whose socket files were removed after they were bound
    // (a server hiding its socket, a clean-up that ran early): they keep their names, and
    // nobody can reach them by those paths.
    let hidden = format!("{image}.hidden");
    let hidden_dgram = format!("{image}.hidden-dgram");
    let _ = std::fs::remove_file(&hidden);
    let _ = std::fs::remove_file(&hidden_dgram);
    let hidden_l = UnixListener::bind(&hidden).unwrap().into_raw_fd();
    let hidden_d = UnixDatagram::bind(&hidden_dgram).unwrap().into_raw_fd();
    // A message waits in it, sent while its file was there.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"hidden", &hidden_dgram)
        .unwrap();
    std::fs::remove_file(&hidden).unwrap();
    std::fs::remove_file(&hidden_dgram).unwrap();
    // A listener whose socket file was renamed after it was bound, as HotSpot's attach listener
    // is (`.java_pid<pid>.tmp` to `.java_pid<pid>`); the first life leaves that file behind.
    let renamed = format!("{image}.attach");
    let renamed_tmp = format!("{renamed}.tmp");
    let _ = std::fs::remove_file(&renamed);
    let _ = std::fs::remove_file(&renamed_tmp);
    let renamed_l = UnixListener::bind(&renamed_tmp).unwrap();
    std::fs::rename(&renamed_tmp, &renamed).unwrap();
    // Datagram receivers bound to a path (its file is left behind when the first life exits:
    // the restore replaces that stale file) and to an abstract name, nothing queued yet.
    let dgram_path = format!("{image}.dgram");
    let _ = std::fs::remove_file(&dgram_path);
    let receiver = UnixDatagram::bind(&dgram_path).unwrap();
    let abstract_dgram = format!("thaw-zdtm-dgram-{}", std::process::id());
    let receiver_abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_dgram).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    // A client connected to the receiver by its name, as glibc's syslog is to /dev/log.
    let syslog_like = UnixDatagram::unbound().unwrap();
    syslog_like.connect(&dgram_path).unwrap();
    // Messages wait in the receivers (from senders without names), to be read after restore.
    syslog_like.send(b"queued by name").unwrap();
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_dgram).unwrap();
        let s = UnixDatagram::unbound().unwrap();
        s.send_to_addr(b"first", &addr).unwrap();
        s.send_to_addr(b"second, longer", &addr).unwrap();
        if extra.first().is_some_and(|a| a == "named-sender") {
            // From a socket with a name: a message queued again could not have it.
            let named = UnixDatagram::bind(format!("{image}.sender")).unwrap();
            named.send_to_addr(b"signed", &addr).unwrap();
        }
    }
    // Bound by relative names, from the directory the process works in.
    let here = std::path::Path::new(&image).parent().unwrap().to_owned();
    std::env::set_current_dir(&here).unwrap();
    let _ = std::fs::remove_file("rel.sock");
    let _ = std::fs::remove_file("rel.dgram");
    let rel_l = UnixListener::bind("rel.sock").unwrap();
    let rel_d = UnixDatagram::bind("rel.dgram").unwrap();
    // An AF_UNIX socket made and not used yet (neither bound nor connected).
    // SAFETY: a new socket, ours.
    let fresh = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fresh >= 0);
    // Files in flight: a datagram carrying a pipe's read end (closed here since; the write end
    // stays) and an eventfd (closed here), and a seqpacket message carrying the write end itself
    // (one open file description with the descriptor kept here).
    let flight = in_flight_setup();
    // Every descriptor number the process has: the same after restore (the files in flight are
    // in the queues, not in the table).
    let numbers = fd_numbers();
    println!("tcp port {port}");

    common::checkpoint();
    let now = fd_numbers();

    let mut ch = common::Checks::default();
    let off = peek_off(b, None);
    let queued = read_all_now(b, 12);
    ch.check(
        "stream pair: bytes queued to b",
        queued == b"hello from a" && off == 6,
        format!("{:?}, peek offset {off}", String::from_utf8_lossy(&queued)),
    );
    let got = read_all_now(a, BIG);
    ch.check(
        "stream pair: 100 KiB queued to a",
        got.len() == BIG && got.iter().enumerate().all(|(i, &x)| x == pattern(i)),
        got.len(),
    );
    ch.check(
        "stream pair: a non-blocking, b blocking",
        status_flags(a) & libc::O_NONBLOCK != 0 && status_flags(b) & libc::O_NONBLOCK == 0,
        "",
    );
    ch.check(
        "stream pair: send buffer size",
        sndbuf(b) == sndbuf_b,
        format!("{} != {sndbuf_b}", sndbuf(b)),
    );
    let mut empty = [0u8; 1];
    ch.check(
        "stream pair: nothing more queued",
        matches!(stream(a).read(&mut empty), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "",
    );
    stream(a).write_all(b"ping").unwrap();
    ch.check(
        "stream pair: still connected",
        read_all_now(b, 4) == b"ping",
        "",
    );

    let mut s = stream(c);
    let mut words = String::new();
    s.read_to_string(&mut words).unwrap();
    ch.check(
        "half-closed pair: last words, then end of file",
        words == "last words",
        &words,
    );
    ch.check(
        "half-closed pair: writing fails with EPIPE",
        matches!(s.write(b"x"), Err(e) if e.raw_os_error() == Some(libc::EPIPE)),
        "",
    );
    let mut none = Vec::new();
    ch.check(
        "pre-close descriptor: end of file at once",
        stream(e)
            .read_to_end(&mut none)
            .map(|n| n == 0)
            .unwrap_or(false),
        "",
    );
    let mut hs = stream(h);
    let mut rest = Vec::new();
    ch.check(
        "shut-down pair: the reader sees end of file",
        hs.read_to_end(&mut rest).is_ok() && rest.is_empty(),
        "",
    );
    hs.write_all(b"back").unwrap();
    ch.check(
        "shut-down pair: the other way still works",
        read_all_now(g, 4) == b"back",
        "",
    );
    ch.check(
        "shut-down pair: the shut side cannot write",
        matches!(stream(g).write(b"x"), Err(e) if e.raw_os_error() == Some(libc::EPIPE)),
        "",
    );
    // SAFETY: our datagram sockets; ManuallyDrop keeps them open.
    let (di, dj) = unsafe {
        (
            std::mem::ManuallyDrop::new(UnixDatagram::from_raw_fd(i)),
            std::mem::ManuallyDrop::new(UnixDatagram::from_raw_fd(j)),
        )
    };
    di.send(b"one").unwrap();
    di.send(b"two").unwrap();
    let mut buf = [0u8; 16];
    let n1 = dj.recv(&mut buf).unwrap();
    let first = buf[..n1].to_vec();
    let n2 = dj.recv(&mut buf).unwrap();
    ch.check(
        "datagram pair: messages keep their boundaries",
        first == b"one" && &buf[..n2] == b"two",
        "",
    );

    // SAFETY: our listening socket; ManuallyDrop keeps it open.
    let l = std::mem::ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(tcp) });
    ch.check(
        "tcp listener: same address",
        l.local_addr().map(|a| a.port()).ok() == Some(port),
        format!("{:?}", l.local_addr()),
    );
    let ino = std::fs::metadata(format!("/proc/self/fd/{tcp}"))
        .unwrap()
        .ino();
    println!("tcp ino {ino}");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut conn, _) = l.accept().unwrap();
    client.write_all(b"tcp").unwrap();
    let mut t = [0u8; 3];
    conn.read_exact(&mut t).unwrap();
    ch.check("tcp listener: accepts", &t == b"tcp", "");
    // SAFETY: our listening socket; ManuallyDrop keeps it open.
    let l6 = std::mem::ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(tcp6) });
    let c6 = std::net::TcpStream::connect(("::1", port6));
    ch.check(
        "tcp listener on [::1]: same address, accepts",
        c6.is_ok() && l6.accept().is_ok(),
        format!("{c6:?}"),
    );

    // SAFETY: our listening sockets; ManuallyDrop keeps them open.
    let up = std::mem::ManuallyDrop::new(unsafe { UnixListener::from_raw_fd(unix_path) });
    let _c = UnixStream::connect(&path).unwrap();
    ch.check("unix path listener: accepts", up.accept().is_ok(), "");
    let file = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.mode() & 0o7777, m.gid())
    });
    ch.check(
        "unix path listener: its socket file's mode and group",
        file.as_ref()
            .is_ok_and(|&(mode, gid)| mode == 0o660 && gid == group),
        format!("{file:?}, want 0o660 and group {group}"),
    );
    // SAFETY: as above.
    let ua = std::mem::ManuallyDrop::new(unsafe { UnixListener::from_raw_fd(abs) });
    let _c2 = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        UnixStream::connect_addr(&addr).unwrap()
    };
    ch.check("unix abstract listener: accepts", ua.accept().is_ok(), "");
    // SAFETY: our sockets; ManuallyDrop keeps them open.
    let (hl, hd) = unsafe {
        (
            std::mem::ManuallyDrop::new(UnixListener::from_raw_fd(hidden_l)),
            std::mem::ManuallyDrop::new(UnixDatagram::from_raw_fd(hidden_d)),
        )
    };
    let named = |a: std::io::Result<std::os::unix::net::SocketAddr>, p: &str| {
        a.ok()
            .and_then(|a| a.as_pathname().map(|x| x.to_path_buf()))
            == Some(p.into())
    };
    // SAFETY: getsockopt of an int into a local.
    let listening = unsafe {
        let mut v = 0i32;
        let mut len = 4u32;
        libc::getsockopt(
            hidden_l,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut i32).cast(),
            &mut len,
        ) == 0
            && v == 1
    };
    let unreachable =
        UnixStream::connect(&hidden).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    ch.check(
        "unix sockets whose files were removed: same names, listening, no files",
        named(hl.local_addr(), &hidden)
            && named(hd.local_addr(), &hidden_dgram)
            && listening
            && unreachable
            && !std::path::Path::new(&hidden_dgram).exists(),
        format!(
            "{:?} {:?} listening {listening} unreachable {unreachable}",
            hl.local_addr(),
            hd.local_addr()
        ),
    );
    let answered = UnixStream::connect(&renamed).is_ok() && renamed_l.accept().is_ok();
    ch.check(
        "unix listener whose file was renamed: bound by its first name, reached by its new one",
        named(renamed_l.local_addr(), &renamed_tmp)
            && answered
            && !std::path::Path::new(&renamed_tmp).exists(),
        format!("{:?} answered {answered}", renamed_l.local_addr()),
    );
    // The fresh socket is still a fresh stream socket: it connects to the listener.
    let sa = {
        let mut a: libc::sockaddr_un = unsafe_zeroed_un();
        a.sun_family = libc::AF_UNIX as u16;
        for (d, s) in a.sun_path.iter_mut().zip(path.bytes()) {
            *d = s as libc::c_char;
        }
        a
    };
    // SAFETY: connect with a valid address of the right size.
    let r = unsafe {
        libc::connect(
            fresh,
            std::ptr::addr_of!(sa).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        )
    };
    let mut got = Vec::new();
    let mut mbuf = [0u8; 64];
    dq_b.set_nonblocking(true).unwrap();
    for _ in 0..5 {
        match dq_b.recv(&mut mbuf) {
            Ok(n) => got.push(String::from_utf8_lossy(&mbuf[..n]).into_owned()),
            Err(e) => got.push(format!("{:?}", e.raw_os_error())),
        }
    }
    ch.check(
        "datagram pair: queued messages, one by one, the empty one too",
        got == ["one", "", "three", "xy", "Some(11)"],
        format!("{got:?}"),
    );
    // Each receive: the message, or the errno (EAGAIN: nothing more).
    let recv_all = |fd: RawFd, n: usize| {
        let mut buf = [0u8; 64];
        (0..n)
            .map(|_| {
                // SAFETY: receives into our own buffer from our own socket.
                let r = unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                if r < 0 {
                    format!(
                        "errno {}",
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                    )
                } else {
                    String::from_utf8_lossy(&buf[..r as usize]).into_owned()
                }
            })
            .collect::<Vec<_>>()
    };
    let got = recv_all(sp[1], 4);
    ch.check(
        "seqpacket pair: queued messages, one by one, the empty one too",
        got == ["aa", "", "bbb", "errno 11"],
        format!("{got:?}"),
    );
    // After the messages, end of file: receives of 0 bytes, and they go on so.
    let got = recv_all(spw[0], 4);
    ch.check(
        "seqpacket pair whose other end closed: its messages, then end of file",
        got == ["bye", "", "", ""],
        format!("{got:?}"),
    );
    let to_shut = du_b.send(b"x").map_err(|e| e.raw_os_error());
    let from_shut = du_a.send(b"y").is_ok();
    ch.check(
        "datagram pair: an end shut down for reading stays so",
        to_shut == Err(Some(libc::EPIPE)) && from_shut,
        format!("{to_shut:?}"),
    );
    let mut buf = [0u8; 32];
    let mut left = Vec::new();
    widow.set_nonblocking(true).unwrap();
    while let Ok(n) = widow.recv(&mut buf) {
        left.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let refused = widow.send(b"x").map_err(|e| e.raw_os_error());
    ch.check(
        "datagram pair whose other end closed: its messages wait, sending is refused",
        left == ["left behind", "and this"] && refused == Err(Some(libc::ECONNREFUSED)),
        format!("{left:?} {refused:?}"),
    );
    // What waited in the receivers at the checkpoint, in order, from senders without names.
    let mut queued = Vec::new();
    {
        for r in [&receiver, &receiver_abs, &receiver_abs, &*hd] {
            r.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            queued.push(match r.recv_from(&mut buf) {
                Ok((n, from)) if from.is_unnamed() => {
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                }
                Ok((_, from)) => format!("from {from:?}"),
                Err(e) => e.to_string(),
            });
        }
        for r in [&receiver, &receiver_abs, &*hd] {
            let mut buf = [0u8; 64];
            if r.recv(&mut buf).is_ok() {
                queued.push("one more".into());
            }
            r.set_nonblocking(false).unwrap();
        }
    }
    ch.check(
        "bound datagram receivers: the messages queued at the checkpoint, in order, from no name",
        queued == ["queued by name", "first", "second, longer", "hidden"],
        format!("{queued:?}"),
    );
    let sender = UnixDatagram::unbound().unwrap();
    let sent = sender.send_to(b"to the path", &dgram_path).is_ok();
    let mut buf = [0u8; 32];
    let got = receiver.recv(&mut buf).unwrap_or(0);
    ch.check(
        "bound datagram socket (path): receives again",
        sent && &buf[..got] == b"to the path",
        got,
    );
    let sent_abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_dgram).unwrap();
        sender.send_to_addr(b"abstract", &addr).is_ok()
    };
    let got = receiver_abs.recv(&mut buf).unwrap_or(0);
    ch.check(
        "bound datagram socket (abstract): receives again",
        sent_abs && &buf[..got] == b"abstract",
        got,
    );
    let sent = syslog_like.send(b"by name").is_ok();
    let got = receiver.recv(&mut buf).unwrap_or(0);
    ch.check(
        "datagram client connected by name: sends again",
        sent && &buf[..got] == b"by name",
        got,
    );
    let _ = std::fs::remove_file(&dgram_path);
    ch.check(
        "unused unix socket: still unconnected, connects",
        r == 0 && up.accept().is_ok(),
        r,
    );
    let named = |a: std::io::Result<std::os::unix::net::SocketAddr>| {
        a.ok()
            .and_then(|a| a.as_pathname().map(|p| p.to_owned()))
            .unwrap_or_default()
    };
    let rel_c = UnixStream::connect("rel.sock");
    let sent = UnixDatagram::unbound()
        .and_then(|u| u.send_to(b"relative", "rel.dgram"))
        .is_ok();
    let got = rel_d.recv(&mut buf).unwrap_or(0);
    ch.check(
        "unix sockets bound by relative names: same names, listening, receiving",
        rel_c.is_ok()
            && rel_l.accept().is_ok()
            && named(rel_l.local_addr()) == std::path::Path::new("rel.sock")
            && named(rel_d.local_addr()) == std::path::Path::new("rel.dgram")
            && sent
            && &buf[..got] == b"relative",
        format!("{rel_c:?} {:?} {sent} {got}", rel_l.local_addr()),
    );
    ch.check(
        "files in flight: not in the descriptor table",
        now == numbers,
        format!("{numbers:?} before, {now:?} after"),
    );
    in_flight_check(&mut ch, &flight);
    let _ = std::fs::remove_file("rel.sock");
    let _ = std::fs::remove_file("rel.dgram");
    let _ = std::fs::remove_file(&path);
    ch.finish();
}

fn fd_numbers() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    // The listing's own descriptor (the highest, just opened) is not the process's.
    v.pop();
    v
}

/// What [`in_flight_setup`] left: the datagram pair's receiving end, the seqpacket pair's, and
/// the pipe's write end the process kept.
struct Flight {
    dgram: RawFd,
    seq: RawFd,
    pipe_w: RawFd,
}

/// Sends `fds` with one byte of `tag` on `via`.
fn send_fds(via: RawFd, tag: u8, fds: &[RawFd]) {
    let payload = [tag];
    let iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = std::ptr::addr_of!(iov).cast_mut();
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4 * fds.len() as u32) } as usize;
    // SAFETY: msg points at our control buffer, large enough for one header and the ints.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4 * fds.len() as u32) as usize;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>().add(i), *fd);
        }
    }
    // SAFETY: sends our own message on our own socket.
    assert_eq!(unsafe { libc::sendmsg(via, &msg, 0) }, 1, "sendmsg");
}

/// Receives one message on `via`: its byte and the descriptors it carries.
fn recv_fds(via: RawFd) -> Option<(u8, Vec<RawFd>)> {
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: receives into our own buffers from our own socket.
    let n = unsafe { libc::recvmsg(via, &mut msg, libc::MSG_DONTWAIT) };
    if n != 1 {
        return None;
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control data the kernel wrote into our buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_type == libc::SCM_RIGHTS {
                let k = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..k {
                    fds.push(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<i32>().add(i),
                    ));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((payload[0], fds))
}

fn in_flight_setup() -> Flight {
    let (da, db) = pair_of(libc::SOCK_DGRAM);
    let (sa, sb) = pair_of(libc::SOCK_SEQPACKET);
    let mut p = [0i32; 2];
    // SAFETY: a pipe into a local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: a new eventfd, ours.
    let efd = unsafe { libc::eventfd(5, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    send_fds(da, b'p', &[p[0]]);
    send_fds(da, b'e', &[efd]);
    send_fds(sa, b'w', &[p[1]]);
    // SAFETY: closes our own descriptors, which now travel in the messages.
    unsafe {
        libc::close(p[0]);
        libc::close(efd);
    }
    Flight {
        dgram: db,
        seq: sb,
        pipe_w: p[1],
    }
}

fn pair_of(ty: i32) -> (RawFd, RawFd) {
    let mut sp = [0i32; 2];
    // SAFETY: a socket pair into a local array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, sp.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    (sp[0], sp[1])
}

fn in_flight_check(ch: &mut common::Checks, f: &Flight) {
    let first = recv_fds(f.dgram);
    let second = recv_fds(f.dgram);
    let third = recv_fds(f.seq);
    let (Some((b'p', r)), Some((b'e', e)), Some((b'w', w))) = (&first, &second, &third) else {
        ch.check(
            "files in flight: three messages with their descriptors",
            false,
            format!("{first:?} {second:?} {third:?}"),
        );
        return;
    };
    ch.check(
        "files in flight: three messages with their descriptors",
        r.len() == 1 && e.len() == 1 && w.len() == 1,
        format!("{r:?} {e:?} {w:?}"),
    );
    // The pipe: written through the end kept here, read through the one that was in flight.
    let sent = stream_fd_write(f.pipe_w, b"through the pipe");
    let mut buf = [0u8; 32];
    // SAFETY: reads into our own buffer from the descriptor just received.
    let got = unsafe { libc::read(r[0], buf.as_mut_ptr().cast(), buf.len()) };
    ch.check(
        "files in flight: the pipe's read end reads what its kept write end writes",
        sent && got == 16 && &buf[..16] == b"through the pipe",
        got,
    );
    let mut count = [0u8; 8];
    // SAFETY: reads the eventfd's counter into our own buffer.
    let n = unsafe { libc::read(e[0], count.as_mut_ptr().cast(), 8) };
    ch.check(
        "files in flight: the eventfd keeps its count",
        n == 8 && u64::from_ne_bytes(count) == 5,
        u64::from_ne_bytes(count),
    );
    // One open file description: status flags set through one show through the other.
    // SAFETY: fcntl on our own descriptors.
    let shared = unsafe {
        libc::fcntl(f.pipe_w, libc::F_SETFL, libc::O_NONBLOCK);
        libc::fcntl(w[0], libc::F_GETFL) & libc::O_NONBLOCK != 0
    };
    ch.check(
        "files in flight: the write end sent is the one kept (one description)",
        shared,
        "",
    );
}

fn stream_fd_write(fd: RawFd, bytes: &[u8]) -> bool {
    // SAFETY: writes our own buffer to our own descriptor.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize }
}

fn unsafe_getegid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

fn unsafe_zeroed_un() -> libc::sockaddr_un {
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    unsafe { std::mem::zeroed() }
}

/// Queues a message carrying a descriptor in `via`'s pair and checkpoints: refused, naming it,
/// with the process's descriptors as they were (a peek of the message installs the descriptor:
/// the checkpoint must close it again). Exits 3 if so, 1 if not.
fn in_flight_is_refused(via: &UnixDatagram) {
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    send_fds(via.as_raw_fd(), 0, &[1]);
    let before = fds();
    let (image, key, _) = common::argv();
    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Err(e) if fds() == before => {
            println!("refused: {e}");
            std::process::exit(3)
        }
        Err(e) => {
            println!(
                "FAIL refused ({e}), but {} descriptors are open, not {before}",
                fds()
            );
            std::process::exit(1)
        }
        Ok(_) => {
            println!("FAIL the checkpoint was not refused");
            std::process::exit(1)
        }
    }
}

/// A stream pair with a descriptor riding with its queued bytes (`stream-fd`), or whose reader
/// asked for credentials (`stream-creds`): refused, naming why. Exits 3 if so, 1 if not.
fn stream_extras_are_refused(mode: &str) {
    let (a, b) = pair_of(libc::SOCK_STREAM);
    if mode == "stream-fd" {
        let mut p = [0i32; 2];
        // SAFETY: a pipe into a local array.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        send_fds(a, b'x', &[p[0]]);
    } else {
        let on: i32 = 1;
        // SAFETY: sets an option on our own socket from a local int.
        let r = unsafe {
            libc::setsockopt(
                b,
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                std::ptr::addr_of!(on).cast(),
                4,
            )
        };
        assert_eq!(r, 0);
        assert!(stream_fd_write(a, b"hello"));
    }
    common::refusal(|| {});
}

/// A listener whose socket file is hidden by a file system mounted over its directory, with a
/// socket file of the same inode number at its path there (each the first file of a new tmpfs):
/// the file at its path is another, and it is refused. As root; the caller unmounts `dir` twice.
fn over_mounted_is_refused(dir: &str) {
    use std::os::unix::fs::MetadataExt;
    let mount = || {
        let (src, at, fs) = (c"none", std::ffi::CString::new(dir).unwrap(), c"tmpfs");
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data.
        let r = unsafe { libc::mount(src.as_ptr(), at.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        assert_eq!(r, 0, "mount: {}", std::io::Error::last_os_error());
    };
    let path = format!("{dir}/s");
    mount();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let first = std::fs::metadata(&path).unwrap();
    mount();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let second = std::fs::metadata(&path).unwrap();
    assert_eq!(
        first.ino(),
        second.ino(),
        "the two socket files' inode numbers"
    );
    assert_ne!(first.dev(), second.dev());
    common::refusal(move || std::mem::forget(listener));
}
