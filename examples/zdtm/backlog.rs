//! Connections waiting to be accepted (AF_UNIX): the process connected to its own listeners and
//! has not accepted yet. After restore they wait in the same order: one still open, one whose
//! connecting socket shut down its sending side; and a seqpacket listener's. A connection it
//! accepted before comes back through the listener: the accepted end has the listener's name,
//! bytes queued both ways wait again. Refused, naming
//! why: with `sent`, the first connection has bytes sent into it (they cannot be read before it
//! is accepted); with `closed`, a connecting socket was closed (whether it sent bytes first
//! cannot be seen).
//!
//! Usage: `zdtm-backlog IMAGE KEY DIR [sent|closed]`.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

fn seqpacket() -> OwnedFd {
    // SAFETY: a new socket, owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    }
}

fn sockaddr(name: &[u8]) -> (libc::sockaddr_un, u32) {
    // SAFETY: a plain C struct, all zeros is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    (a, (2 + name.len()) as u32)
}

fn main() {
    let (_, _, extra) = common::argv();
    let dir = std::path::PathBuf::from(extra.first().expect("a scratch directory"));
    let sent = extra.iter().any(|a| a == "sent");
    let closed = extra.iter().any(|a| a == "closed");
    let path = dir.join("backlog.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    // Accepted before the checkpoint, bytes waiting both ways.
    let mut early = UnixStream::connect(&path).unwrap();
    let (mut early_server, _) = listener.accept().unwrap();
    early.write_all(b"hello").unwrap();
    early_server.write_all(b"world").unwrap();
    let mut open = UnixStream::connect(&path).unwrap();
    if sent {
        open.write_all(b"too soon").unwrap();
    }
    let half = UnixStream::connect(&path).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    if closed {
        drop(UnixStream::connect(&path).unwrap());
    }

    // A seqpacket listener at an abstract name, one connection waiting.
    let name = format!("\0thaw-zdtm-backlog-{}", std::process::id());
    let (addr, len) = sockaddr(name.as_bytes());
    let sl = seqpacket();
    let sc = seqpacket();
    // SAFETY: binding, listening and connecting our own sockets to a valid address.
    unsafe {
        assert_eq!(
            libc::bind(
                sl.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len
            ),
            0
        );
        assert_eq!(libc::listen(sl.as_raw_fd(), 4), 0);
        assert_eq!(
            libc::connect(
                sc.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len
            ),
            0
        );
    }

    common::checkpoint();
    let mut c = common::Checks::default();

    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    while let Ok((s, _)) = listener.accept() {
        accepted.push(s);
    }
    c.check(
        "two connections wait, no more",
        accepted.len() == 2,
        format!("{} accepted", accepted.len()),
    );
    if accepted.len() == 2 {
        // In order: the open one answers, the half-closed one reads but sends nothing.
        for a in &accepted {
            a.set_nonblocking(false).unwrap();
        }
        open.write_all(b"A").unwrap();
        let mut b = [0u8; 1];
        let first = (&accepted[0]).read(&mut b).map(|n| (n, b[0]));
        let second_eof = (&accepted[1]).read(&mut b).map(|n| n == 0);
        let second_reaches = (&accepted[1]).write_all(b"B").is_ok()
            && (&half).read(&mut b).is_ok_and(|n| n == 1 && b[0] == b'B');
        c.check(
            "waiting connections in their order: open, shut down for sending",
            first.as_ref().is_ok_and(|&(n, v)| n == 1 && v == b'A')
                && second_eof.as_ref().is_ok_and(|&e| e)
                && second_reaches,
            format!("{first:?} {second_eof:?} {second_reaches}"),
        );
    }

    // SAFETY: accept, send and recv on our own sockets with valid buffers.
    let (acc, got) = unsafe {
        let a = libc::accept4(
            sl.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK,
        );
        let mut got = -1;
        if a >= 0 {
            libc::send(sc.as_raw_fd(), b"one".as_ptr().cast(), 3, 0);
            libc::send(sc.as_raw_fd(), b"two!".as_ptr().cast(), 4, 0);
            let mut buf = [0u8; 16];
            got = libc::recv(a, buf.as_mut_ptr().cast(), buf.len(), 0) as i32;
            libc::close(a);
        }
        (a, got)
    };
    c.check(
        "seqpacket listener: its waiting connection, message boundaries kept",
        acc >= 0 && got == 3,
        format!("accept {acc}, first message {got} bytes"),
    );
    let mut a = [0u8; 5];
    let mut b = [0u8; 5];
    let named = early_server
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_owned()));
    let peer = early
        .peer_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_owned()));
    let mut bang = [0u8; 1];
    let flows = early_server.read_exact(&mut a).is_ok()
        && early.read_exact(&mut b).is_ok()
        && early.write_all(b"!").is_ok()
        && early_server
            .read_exact(&mut bang)
            .is_ok_and(|_| &bang == b"!");
    c.check(
        "an accepted connection: accepted from the listener again, its bytes both ways",
        named.as_deref() == Some(path.as_path())
            && peer.as_deref() == Some(path.as_path())
            && &a == b"hello"
            && &b == b"world"
            && flows,
        format!("{named:?} {peer:?} {a:?} {b:?} {flows}"),
    );
    let _ = std::fs::remove_file(&path);
    c.finish();
}
