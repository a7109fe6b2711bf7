//! Descriptors the application did not open: the test starts this program with fd 5 the write
//! end of a pipe whose read end stays in the test (a CI runner's log pipe) and fd 6 one end of a
//! socket pair whose other end stays in the test. The program itself opens fd 7, IMAGE.log in
//! append mode, and asks for /dev/null there.
//!
//! `PROG IMAGE KEY MODE`, MODE one of:
//! - `refuse`: no policy; the checkpoint must fail, naming fds 5 and 6 with a hint (printed);
//! - `api`: the policy through the Rust API: fd 5 dropped, sockets to /dev/null, fd 7 to /dev/null;
//! - `env`: no API policy (the test sets `THAW_FD_POLICY` to the same);
//! - `epoll`: an epoll instance (fd 8) watches fd 6; fds 5 and 6 are left out through the API:
//!   fd 6 is a dead end, still watched, whose hang-up the epoll instance reports (an event loop
//!   then closes it; no other file took its number meanwhile);
//! - `epoll-et`: as `epoll`, the registration edge-triggered (Go's netpoller registers every
//!   descriptor so), and fd 5 watched for writing the same way; the events registering them
//!   queued are taken before the checkpoint: after restore each dead end's hang-up (fd 6) or
//!   error (fd 5, its reader gone) is an edge the epoll instance reports;
//! - `epoll-dup`: as `epoll`, and the epoll instance also watches fd 10, the read end of a pipe
//!   of the program's own duplicated at fd 11; the policy leaves fd 10 out: refused, since the
//!   kernel would keep that registration while fd 11 stays;
//! - `listener`: as `epoll`'s policy (sockets left out), with a TCP listener of the program's
//!   own holding a connection not yet accepted: refused all the same, for no policy leaves a
//!   listener out (a server that never accepts again, without a sign of it);
//! - `udp`: fd 9 a UDP socket of the program's own with a datagram waiting (a busy UDP server:
//!   refused), watched by an epoll instance at fd 8 as an event loop watches it; sockets are left
//!   out through the API: fd 9 is a dead end of its own kind, never readable, where a stream's
//!   end of file would read as an empty datagram again and again (an event loop spins on it);
//! - `many`: as `api`, with 150 more descriptors open and a hard limit of 200 open files (Node
//!   raises its soft limit to the hard one): the checkpoint must fail, naming the limit.
//!
//! After restore: fd 5, left out, is a dead end (a pipe's writing end whose reader is gone: EPIPE),
//! fd 6 and fd 7 are /dev/null with their access modes and flags.

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

    let et = mode == "epoll-et";
    let epoll = (mode == "epoll" || mode == "epoll-dup" || et).then(|| {
        // SAFETY: a new epoll instance, ours, moved to fd 8; a registration of fd 6.
        unsafe {
            let ep = libc::epoll_create1(0);
            assert_eq!(libc::dup2(ep, 8), 8);
            libc::close(ep);
            let edge = if et {
                (libc::EPOLLET | libc::EPOLLRDHUP) as u32
            } else {
                0
            };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32 | edge,
                u64: 6,
            };
            assert_eq!(libc::epoll_ctl(8, libc::EPOLL_CTL_ADD, 6, &mut ev), 0);
            if et {
                let mut out = libc::epoll_event {
                    events: libc::EPOLLOUT as u32 | edge,
                    u64: 5,
                };
                assert_eq!(libc::epoll_ctl(8, libc::EPOLL_CTL_ADD, 5, &mut out), 0);
                // The edges the registrations queued (fd 5 is writable) are taken: both quiet.
                let mut got = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let n = libc::epoll_wait(8, got.as_mut_ptr(), 4, 0);
                assert!(n >= 1, "fd 5's registration queued its edge");
                assert_eq!(libc::epoll_wait(8, got.as_mut_ptr(), 4, 0), 0);
            }
            if mode == "epoll-dup" {
                let mut p = [0; 2];
                assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
                assert_eq!(libc::dup2(p[0], 10), 10);
                assert_eq!(libc::dup2(p[0], 11), 11);
                assert_eq!(libc::dup2(p[1], 12), 12);
                for f in p {
                    libc::close(f);
                }
                assert_eq!(libc::epoll_ctl(8, libc::EPOLL_CTL_ADD, 10, &mut ev), 0);
            }
        }
        8
    });
    if mode == "many" {
        let null = std::fs::File::open("/dev/null").unwrap();
        for n in 0..150 {
            // SAFETY: dup of our own descriptor onto numbers above what we use.
            let got = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 20 + n) };
            assert_eq!(got, 20 + n);
        }
        let lim = libc::rlimit {
            rlim_cur: 200,
            rlim_max: 200,
        };
        // SAFETY: lowers our own limits.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    // A listener with a connection waiting in its queue (the client's end stays open too).
    let _listener = (mode == "listener").then(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l, c)
    });
    // A UDP socket at fd 9 with a datagram waiting, and an epoll instance at fd 8 watching it.
    let _sender = (mode == "udp").then(|| {
        use std::os::fd::AsRawFd;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"waiting", s.local_addr().unwrap()).unwrap();
        // SAFETY: dup2 of our own socket to 9; a new epoll instance, ours, moved to 8, watching
        // it; a poll of fd 9 until the datagram is there.
        unsafe {
            assert_eq!(libc::dup2(s.as_raw_fd(), 9), 9);
            let ep = libc::epoll_create1(0);
            if ep != 8 {
                assert_eq!(libc::dup2(ep, 8), 8);
                libc::close(ep);
            }
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 9,
            };
            assert_eq!(libc::epoll_ctl(8, libc::EPOLL_CTL_ADD, 9, &mut ev), 0);
            let mut p = libc::pollfd {
                fd: 9,
                events: libc::POLLIN,
                revents: 0,
            };
            assert_eq!(libc::poll(&mut p, 1, 5000), 1, "the datagram waits");
        }
        tx
    });
    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    if mode == "epoll" || mode == "epoll-dup" || mode == "listener" || mode == "udp" || et {
        cp = cp
            .fd(5, FdAction::Drop)
            .fds(FdClass::Socket, FdAction::Drop)
            .fd(7, FdAction::Drop)
            .fd(10, FdAction::Drop);
    }
    if mode == "api" || mode == "many" {
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
    if mode == "udp" {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let mut b = [0u8; 16];
        // SAFETY: epoll_wait into our buffer and a receive into ours, neither waiting; a
        // getsockopt of an int.
        let (n, got, err, ty) = unsafe {
            let n = libc::epoll_wait(8, ev.as_mut_ptr(), 4, 0);
            let got = libc::recv(9, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT);
            let err = std::io::Error::last_os_error().raw_os_error();
            let mut ty = 0i32;
            let mut len = 4u32;
            libc::getsockopt(
                9,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut i32).cast(),
                &mut len,
            );
            (n, got, err, ty)
        };
        c.check(
            "udp: fd 9 left out is a datagram dead end: no event, no empty datagram",
            target(9).is_some_and(|t| t.starts_with("socket:["))
                && n == 0
                && got == -1
                && err == Some(libc::EAGAIN)
                && ty == libc::SOCK_DGRAM,
            format!(
                "{:?}, {n} event(s) ({:#x}), recv {got} {err:?}, type {ty}",
                target(9),
                { ev[0].events }
            ),
        );
        c.finish();
    }
    if let Some(ep) = epoll.filter(|_| et) {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: epoll_wait into our buffer, without waiting.
        let n = unsafe { libc::epoll_wait(ep, ev.as_mut_ptr(), 4, 0) };
        let got = |fd: u64| {
            ev[..n.max(0) as usize]
                .iter()
                .find(|e| e.u64 == fd)
                .map_or(0, |e| e.events)
        };
        let hup = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
        c.check(
            "epoll: edge-triggered watches of dead ends report their hang-up and error",
            n == 2 && got(6) & hup == hup && got(5) & libc::EPOLLERR as u32 != 0,
            format!("{n} event(s): fd 6 {:#x}, fd 5 {:#x}", got(6), got(5)),
        );
        c.finish();
    }
    if let Some(ep) = epoll {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: epoll_wait into our buffer, without waiting; a read of one byte.
        let (n, read) = unsafe {
            let n = libc::epoll_wait(ep, ev.as_mut_ptr(), 4, 0);
            let mut b = 0u8;
            (n, libc::read(6, (&mut b as *mut u8).cast(), 1))
        };
        let hup = (libc::EPOLLIN | libc::EPOLLHUP) as u32;
        c.check(
            "epoll: fd 6 left out is a dead end, still watched, that hung up",
            target(6).is_some_and(|t| t.starts_with("socket:["))
                && n == 1
                && { ev[0].u64 } == 6
                && { ev[0].events } & hup == hup
                && read == 0,
            format!("{:?}, {n} event(s): {:#x}, read {read}", target(6), {
                ev[0].events
            }),
        );
        c.finish();
    }
    // SAFETY: ignore SIGPIPE, then a write of one byte to fd 5.
    let wrote = unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::write(5, b"x".as_ptr().cast(), 1)
    };
    let err = std::io::Error::last_os_error().raw_os_error();
    c.check(
        "fd 5 left out is a dead end: writes fail with EPIPE",
        target(5).is_some_and(|t| t.starts_with("pipe:["))
            && wrote == -1
            && err == Some(libc::EPIPE),
        format!("{:?} {wrote} {err:?}", target(5)),
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
