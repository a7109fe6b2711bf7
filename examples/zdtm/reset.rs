//! Errors waiting to be read on a socket (SO_ERROR, which poll shows as POLLERR and which a read
//! takes): restored where exact, else refused by name, and in either case left to the first
//! life, which still reads them after the checkpoint.
//!
//! `PROG IMAGE KEY`: three AF_UNIX stream pairs whose other ends were closed: one with bytes
//! this end had sent unread there and "last words" queued here, one with unread bytes there and
//! nothing here (the kernel marks both ends reset: ECONNRESET), one closed after reading
//! everything (a clean end). Checkpoints and goes on: the first life and every restore read
//! each end the same way (its queued bytes, then ECONNRESET once, then end of file).
//!
//! `PROG IMAGE KEY seqpacket`: a seqpacket end reset so; `PROG IMAGE KEY udp`: a UDP socket
//! connected to a closed local port that sent a datagram (the ICMP port unreachable leaves
//! ECONNREFUSED). Both refused by name: prints `refused: ...`, checks the error still waits,
//! and exits 3.

#[path = "common.rs"]
mod common;

use std::os::fd::RawFd;

fn pair(ty: i32) -> (RawFd, RawFd) {
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two descriptors into our array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0);
    (sv[0], sv[1])
}

fn send(fd: RawFd, b: &[u8]) {
    // SAFETY: sends from our own buffer on our own socket.
    let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
    assert_eq!(n, b.len() as isize);
}

fn close(fd: RawFd) {
    // SAFETY: closes our own descriptor, used nowhere else.
    unsafe { libc::close(fd) };
}

/// What reads on `fd` give until end of file: the bytes, or `Exxx` for an error.
fn reads(fd: RawFd) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..4 {
        let mut buf = [0u8; 64];
        // SAFETY: reads into our own buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            out.push(match e {
                libc::ECONNRESET => "ECONNRESET".into(),
                libc::EAGAIN => "EAGAIN".into(),
                e => format!("errno {e}"),
            });
        } else if n == 0 {
            out.push("EOF".into());
            break;
        } else {
            out.push(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
        }
    }
    out
}

fn pollerr(fd: RawFd, wait_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: polls one pollfd of ours.
    unsafe { libc::poll(&mut p, 1, wait_ms) };
    p.revents & libc::POLLERR != 0
}

fn so_error(fd: RawFd) -> i32 {
    let mut v = 0i32;
    let mut len = 4u32;
    // SAFETY: an int option of our own socket, into a local.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    v
}

fn refused(mode: &str, fd: RawFd, errno: i32) -> ! {
    let (image, key, _) = common::argv();
    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Err(e) => {
            println!("refused: {e}");
            let mut c = common::Checks::default();
            let still = pollerr(fd, 0);
            let err = so_error(fd);
            c.check(
                &format!("{mode}: the first life still has its error"),
                still && err == errno,
                format!("POLLERR {still}, SO_ERROR {err}"),
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(if still && err == errno { 3 } else { 1 })
        }
        Ok(_) => {
            println!("FAIL the checkpoint was not refused");
            std::process::exit(1)
        }
    }
}

fn main() {
    let (image, key, extra) = common::argv();
    match extra.first().map(String::as_str) {
        Some("seqpacket") => {
            let (a, b) = pair(libc::SOCK_SEQPACKET);
            send(a, b"unread");
            close(b);
            refused("seqpacket", a, libc::ECONNRESET);
        }
        Some("udp") => {
            // SAFETY: plain socket calls on our own sockets and local addresses.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = closed.local_addr().unwrap().port();
            drop(closed);
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: connects our own socket to a sockaddr_in of ours.
            let r = unsafe {
                libc::connect(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(r, 0);
            send(fd, b"x");
            assert!(pollerr(fd, 5000), "no ICMP error came");
            refused("udp", fd, libc::ECONNREFUSED);
        }
        _ => {}
    }
    // Reset, with "last words" queued here.
    let (a1, b1) = pair(libc::SOCK_STREAM);
    send(b1, b"last words");
    send(a1, b"unread");
    close(b1);
    // Reset, nothing queued here (a peek at it would take the error).
    let (a2, b2) = pair(libc::SOCK_STREAM);
    send(a2, b"unread");
    close(b2);
    // A clean end: the other end read everything and closed.
    let (a3, b3) = pair(libc::SOCK_STREAM);
    send(b3, b"bye");
    close(b3);
    let mut cp = thaw::Checkpoint::to(&image);
    if let Some(k) = &key {
        cp = cp.sign_with(k);
    }
    let life = match cp.save() {
        Ok(thaw::Outcome::Saved(_)) => "first life",
        Ok(thaw::Outcome::Restored(_)) => "restored",
        Err(e) => {
            eprintln!("checkpoint failed: {e}");
            std::process::exit(2);
        }
    };
    let mut c = common::Checks::default();
    let got = reads(a1);
    c.check(
        &format!("{life}: reset end: its bytes, ECONNRESET once, then end of file"),
        got == ["last words", "ECONNRESET", "EOF"],
        format!("{got:?}"),
    );
    let got = reads(a2);
    c.check(
        &format!("{life}: reset end with nothing queued: ECONNRESET once, then end of file"),
        got == ["ECONNRESET", "EOF"],
        format!("{got:?}"),
    );
    let got = reads(a3);
    c.check(
        &format!("{life}: an end closed cleanly: its bytes, then end of file"),
        got == ["bye", "EOF"],
        format!("{got:?}"),
    );
    // SAFETY: sends from our own buffer on our own socket.
    let w = unsafe { libc::send(a1, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    let e = std::io::Error::last_os_error().raw_os_error();
    c.check(
        &format!("{life}: reset end: writing fails with EPIPE"),
        w < 0 && e == Some(libc::EPIPE),
        format!("{w} {e:?}"),
    );
    c.finish();
}
