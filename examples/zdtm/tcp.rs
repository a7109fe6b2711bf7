//! Established TCP connections (CRIU's socket-tcp*): two loopback connections of the process's
//! own, one over IPv4 and one from an IPv4 client to a dual-stack IPv6 listener, each with bytes
//! waiting both ways at the checkpoint — the client wrote until the kernel took no more, so its
//! send queue holds bytes never sent and the server's receive queue is full, and the server's
//! greeting waits unread. After restore every byte arrives once and in order, the ends and
//! options are as they were, and both ends go on talking.
//!
//! Beside them, two listeners share a port (SO_REUSEPORT), one of which turned it off since.
//!
//! `PROG IMAGE KEY peer PORT`: a connection to a server of another process, moved by a
//! checkpoint that ends the process (exit after save): what the server sent while the process
//! was away (its packets held meanwhile) arrives after restore, then its answer.
//! `PROG IMAGE KEY peer-going-on PORT`: the same connection, the process going on after the
//! checkpoint, is refused by name (it would exist twice).
//! `PROG IMAGE KEY going-on`: a loopback pair, the first life going on after the checkpoint:
//! its ends as they were (SO_REUSEADDR), every byte once and in order.
//! `PROG IMAGE KEY fork-fails CGROUP`: a loopback pair, a checkpoint that exits after saving
//! failing (the pids cgroup CGROUP at its limit as the snapshot is forked): the process goes on
//! with its connection out of repair mode.
//! `PROG IMAGE KEY peek-offset`: a loopback pair whose reading end peeks with an offset
//! (SO_PEEK_OFF), the first life going on: the offset as it was.
//! `PROG IMAGE KEY urgent`: a connection with an urgent byte waiting is refused by name.
//! `PROG IMAGE KEY unprivileged`: run without CAP_NET_ADMIN, the loopback connections are
//! refused by name. `PROG IMAGE KEY not-asked`: without THAW_TCP_ESTABLISHED=1 (which the other
//! modes set), a connection is refused, saying how to ask.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// The bytes the client sends: a pattern whose every position is checkable.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

const TOTAL: usize = 8 << 20;
const GREETING: &[u8] = b"hello from the server";

fn keepalive(s: &TcpStream) -> i32 {
    common::sockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE)
}

/// The same end, an IPv4-mapped IPv6 address (as a dual-stack listener's side names an IPv4
/// client) as its IPv4 address.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

struct Conn {
    name: &'static str,
    client: TcpStream,
    server: TcpStream,
    sent: usize,
    ends: (SocketAddr, SocketAddr),
}

fn connect(name: &'static str, listener: &TcpListener, to: SocketAddr) -> Conn {
    let mut client = TcpStream::connect(to).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    // SAFETY: an int option of our own socket.
    let r = unsafe {
        libc::setsockopt(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&1i32 as *const i32).cast(),
            4,
        )
    };
    assert_eq!(r, 0);
    server.write_all(GREETING).unwrap();
    // Until the kernel takes no more: the server's receive queue full, bytes never sent in the
    // client's send queue.
    client.set_nonblocking(true).unwrap();
    let data = pattern(TOTAL);
    let mut sent = 0;
    while sent < TOTAL {
        match client.write(&data[sent..(sent + 65536).min(TOTAL)]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < TOTAL, "the kernel took all {TOTAL} bytes");
    client.set_nonblocking(false).unwrap();
    let ends = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    Conn {
        name,
        client,
        server,
        sent,
        ends,
    }
}

fn check_pair(c: &mut common::Checks, conn: Conn) {
    let Conn {
        name,
        mut client,
        mut server,
        sent,
        ends,
    } = conn;
    c.check(
        &format!("{name}: both ends as before"),
        (client.local_addr().unwrap(), client.peer_addr().unwrap()) == ends
            && same(server.peer_addr().unwrap(), client.local_addr().unwrap()),
        format!("{ends:?}"),
    );
    c.check(
        &format!("{name}: options as before"),
        client.nodelay().unwrap() && keepalive(&server) == 1,
        format!("nodelay {:?}", client.nodelay()),
    );
    let writer = std::thread::spawn(move || {
        client.write_all(&pattern(TOTAL)[sent..]).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        client
    });
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    let mut client = writer.join().unwrap();
    c.check(
        &format!("{name}: every byte the client wrote arrives once, in order"),
        got == pattern(TOTAL),
        format!("{} bytes of {TOTAL}", got.len()),
    );
    let mut greeting = vec![0u8; GREETING.len()];
    client.read_exact(&mut greeting).unwrap();
    server.write_all(b"and more").unwrap();
    server.shutdown(std::net::Shutdown::Write).unwrap();
    let mut more = Vec::new();
    client.read_to_end(&mut more).unwrap();
    c.check(
        &format!("{name}: the server's unread greeting, then what it sends after"),
        greeting == GREETING && more == b"and more",
        format!("{:?} {:?}", String::from_utf8_lossy(&greeting), more),
    );
}

/// A listener on 127.0.0.1:`port` (0: any) made with SO_REUSEPORT.
fn reuseport_listener(port: u16) -> TcpListener {
    // SAFETY: socket(2), options and bind on a descriptor we own, with a sockaddr_in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let one = 1i32;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const i32).cast(),
            4,
        );
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = port.to_be();
        a.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 8), 0);
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

fn reuseaddr(s: &TcpStream) -> i32 {
    common::sockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR)
}

fn reuseport(l: &TcpListener) -> i32 {
    common::sockopt(l.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT)
}

fn main() {
    let (_, _, extra) = common::argv();
    if extra.first().is_some_and(|m| m == "not-asked") {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let _pair = connect("IPv4", &v4, v4.local_addr().unwrap());
        common::refusal(|| ());
    }
    // Asked for, as CRIU's --tcp-established. (Set while this is the only thread.)
    // SAFETY: no other thread exists yet to read the environment meanwhile.
    unsafe { std::env::set_var("THAW_TCP_ESTABLISHED", "1") };
    if extra.first().is_some_and(|m| m == "urgent") {
        // An urgent byte (MSG_OOB) between bytes waiting to be read: refused by name (SIOCINQ
        // and a peek stop at its mark, and repair mode cannot queue it again).
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_server, _) = l.accept().unwrap();
        client.write_all(b"before").unwrap();
        // SAFETY: one byte from a buffer of ours, on our own socket.
        let n = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(n, 1);
        client.write_all(b"after").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        common::refusal(|| ());
    }
    if let [mode, cgroup] = &extra[..] {
        if mode == "fork-fails" {
            // A loopback pair of the process's own; a checkpoint that exits after saving, whose
            // snapshot cannot be forked (the pids cgroup `cgroup` at its limit): the process
            // goes on, and so do its connections, out of repair mode.
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let a = connect("after a failed checkpoint", &l, l.local_addr().unwrap());
            let cg = std::path::Path::new(cgroup);
            std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).unwrap();
            let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
            std::fs::write(cg.join("pids.max"), threads.to_string()).unwrap();
            let (image, key, _) = common::argv();
            let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
            if let Some(k) = key {
                cp = cp.sign_with(k);
            }
            let r = cp.save();
            std::fs::write(cg.join("pids.max"), "max").unwrap();
            let mut c = common::Checks::default();
            c.check(
                "the checkpoint whose snapshot cannot be forked fails, saying why",
                r.as_ref().is_err_and(|e| {
                    e.to_string().contains("could not be forked")
                        && e.to_string().contains("pids cgroup")
                }),
                format!("{r:?}"),
            );
            check_pair(&mut c, a);
            c.finish();
        }
    }
    if extra.first().is_some_and(|m| m == "peek-offset") {
        // A loopback pair whose reading end peeks with an offset (SO_PEEK_OFF, which TCP
        // honours since Linux 6.9), the first life going on after the checkpoint: the offset
        // as it was, the next peek where it would have been.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        client.write_all(b"0123456789").unwrap();
        let peek_off = |v: Option<i32>| {
            let fd = server.as_raw_fd();
            match v {
                Some(v) => {
                    common::set_sockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, v);
                    v
                }
                None => common::sockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF),
            }
        };
        peek_off(Some(0));
        let mut head = [0u8; 3];
        server.peek(&mut head).unwrap();
        if peek_off(None) != 3 {
            // (A kernel without SO_PEEK_OFF for TCP: nothing to see.)
            println!("ok the peek offset as it was, the next peek after it");
            std::process::exit(0);
        }
        let (image, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(&image);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        let saved = cp.save();
        let mut c = common::Checks::default();
        c.check("checkpointed", saved.is_ok(), format!("{saved:?}"));
        let off = peek_off(None);
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut next = [0u8; 3];
        let r = server.peek(&mut next);
        c.check(
            "the peek offset as it was, the next peek after it",
            off == 3 && r.is_ok() && &next == b"345",
            format!("offset {off}, {r:?} {:?}", String::from_utf8_lossy(&next)),
        );
        c.finish();
    }
    if extra.first().is_some_and(|m| m == "going-on") {
        // A loopback pair of the process's own, the first life going on after the checkpoint,
        // which read both ends in repair mode and let them go: they go on as they were.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let a = connect("first life", &l, l.local_addr().unwrap());
        let before = (reuseaddr(&a.client), reuseaddr(&a.server));
        let (image, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(&image);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        if let Err(e) = cp.save() {
            println!("FAIL checkpoint: {e}");
            std::process::exit(1)
        }
        let mut c = common::Checks::default();
        let after = (reuseaddr(&a.client), reuseaddr(&a.server));
        c.check(
            "first life: SO_REUSEADDR of each end as it was",
            before == after && before == (0, 1),
            format!("{before:?} then {after:?}"),
        );
        check_pair(&mut c, a);
        c.finish();
    }
    if let [mode, port] = &extra[..] {
        let port: u16 = port.parse().unwrap();
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(b"one\n").unwrap();
        let mut line = [0u8; 9];
        s.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"echo:one\n");
        if mode == "peer-going-on" {
            common::refused(false);
        }
        common::restored();
        let mut c = common::Checks::default();
        s.write_all(b"two\n").unwrap();
        // What the server sent while the process was away (held, sent again: numbered lines,
        // then "gap"), then its answer. (Bounded: a connection behind its peer waits forever.)
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(&s));
        let mut ticks = 0;
        let mut last = None;
        for line in lines.by_ref() {
            match line {
                Ok(l) if l == format!("tick {ticks}") => ticks += 1,
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        let answer = lines.next();
        c.check(
            "a connection to another process's server is moved: every line it sent meanwhile, once and in order, then its answer",
            ticks > 0
                && matches!(&last, Some(Ok(l)) if l == "gap")
                && matches!(&answer, Some(Ok(l)) if l == "echo:two"),
            format!("{ticks} ticks in order, then {last:?}, {answer:?}"),
        );
        c.finish();
    }
    // Two listeners sharing a port, the first of which turned SO_REUSEPORT off since (CRIU's
    // socket-tcp-reuseport).
    let shared = reuseport_listener(0);
    let port = shared.local_addr().unwrap().port();
    let sharing = reuseport_listener(port);
    // SAFETY: an int option of our own socket.
    unsafe {
        libc::setsockopt(
            shared.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&0i32 as *const i32).cast(),
            4,
        )
    };
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    let a = connect("IPv4", &v4, v4.local_addr().unwrap());
    let b = connect(
        "IPv4 to a dual-stack listener",
        &v6,
        SocketAddr::from((Ipv4Addr::LOCALHOST, v6.local_addr().unwrap().port())),
    );
    if extra.first().is_some_and(|m| m == "unprivileged") {
        common::refusal(|| ());
    }
    let args = common::checkpoint();
    let mut c = common::Checks::default();
    if let Some(next) = args.first() {
        // Restored, checkpointed again with every byte still where it was.
        if let Err(e) = common::save_again(next) {
            c.check("checkpointed again", false, e);
            c.finish();
        }
    }
    c.check(
        "listeners sharing a port: both on it, SO_REUSEPORT as each had it",
        shared.local_addr().unwrap().port() == port
            && sharing.local_addr().unwrap().port() == port
            && (reuseport(&shared), reuseport(&sharing)) == (0, 1),
        format!("{} {}", reuseport(&shared), reuseport(&sharing)),
    );
    check_pair(&mut c, a);
    check_pair(&mut c, b);
    c.finish();
}
