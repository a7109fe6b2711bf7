//! Netlink sockets: a route watcher autobound with groups on both sides of 32 and an option
//! (NETLINK_EXT_ACK), one bound to the process's PID as its port ID, a client connected to the
//! kernel, and one never bound. After restore each has its port ID, groups, destination and
//! option again, and the kernel answers a request on each, addressed to its port ID.
//!
//! `PROG IMAGE KEY queued`: a socket with the kernel's answer unread is refused by name.

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
const NETLINK_EXT_ACK: i32 = 11;

fn socket() -> OwnedFd {
    // SAFETY: socket(2); the descriptor is ours.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn addr(portid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; zero is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as u16;
    a.nl_pid = portid;
    a.nl_groups = groups;
    a
}

fn bind(fd: RawFd, portid: u32, groups: u32) {
    let a = addr(portid, groups);
    let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: a valid sockaddr_nl of that length.
    let r = unsafe { libc::bind(fd, (&a as *const libc::sockaddr_nl).cast(), len) };
    assert_eq!(r, 0);
}

fn setopt(fd: RawFd, name: i32, v: i32) {
    // SAFETY: an int option on our own socket.
    let r = unsafe { libc::setsockopt(fd, SOL_NETLINK, name, (&v as *const i32).cast(), 4) };
    assert_eq!(r, 0, "option {name}");
}

/// (port ID, groups mask) of getsockname or getpeername.
fn name(fd: RawFd, peer: bool) -> (u32, u32) {
    let mut a = addr(0, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    let p = (&mut a as *mut libc::sockaddr_nl).cast();
    // SAFETY: room for a sockaddr_nl.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    assert_eq!(r, 0);
    (a.nl_pid, a.nl_groups)
}

/// The state each socket is compared by: port ID, groups (every word), destination, EXT_ACK.
fn state(fd: RawFd) -> String {
    let mut words = [0u32; 4];
    let mut len = 16u32;
    let mut ext = 0i32;
    let mut elen = 4u32;
    // SAFETY: buffers of the lengths given, on our own socket.
    unsafe {
        libc::getsockopt(
            fd,
            SOL_NETLINK,
            NETLINK_LIST_MEMBERSHIPS,
            words.as_mut_ptr().cast(),
            &mut len,
        );
        libc::getsockopt(
            fd,
            SOL_NETLINK,
            NETLINK_EXT_ACK,
            (&mut ext as *mut i32).cast(),
            &mut elen,
        );
    }
    format!(
        "port {:?} groups {:x?} peer {:?} ext_ack {ext}",
        name(fd, false),
        &words[..(len as usize / 4).min(4)],
        name(fd, true)
    )
}

/// RTM_GETLINK for link 1 (lo): a netlink header and an ifinfomsg.
fn request() -> [u8; 32] {
    let mut req = [0u8; 32];
    req[..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[20..24].copy_from_slice(&1i32.to_ne_bytes());
    req
}

/// Asks the kernel for link 1 (lo); the port ID its answer is addressed to.
fn ask(fd: RawFd) -> u32 {
    let req = request();
    let kernel = addr(0, 0);
    let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: our buffers and socket.
    let sent = unsafe {
        libc::sendto(
            fd,
            req.as_ptr().cast(),
            32,
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            len,
        )
    };
    assert_eq!(sent, 32);
    let mut reply = [0u8; 8192];
    // SAFETY: as above.
    let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
    assert!(n >= 16, "{n}");
    u32::from_ne_bytes(reply[12..16].try_into().unwrap())
}

fn main() {
    let (_, _, extra) = common::argv();
    if extra.first().is_some_and(|a| a == "queued") {
        let s = socket();
        common::refusal(|| {
            ask(s.as_raw_fd());
            let req = request();
            // SAFETY: our buffer and socket; the answer is left unread.
            let sent = unsafe { libc::send(s.as_raw_fd(), req.as_ptr().cast(), 32, 0) };
            assert_eq!(sent, 32);
        });
    }
    // First: an autobound socket takes the PID as its port ID where it is free.
    let own = socket();
    // SAFETY: getpid has no preconditions.
    bind(own.as_raw_fd(), unsafe { libc::getpid() } as u32, 0);
    let watcher = socket();
    bind(watcher.as_raw_fd(), 0, 1 << (libc::RTNLGRP_LINK - 1));
    // RTNLGRP_BRVLAN, the 33rd: beyond the bind's mask.
    setopt(watcher.as_raw_fd(), NETLINK_ADD_MEMBERSHIP, 33);
    setopt(watcher.as_raw_fd(), NETLINK_EXT_ACK, 1);
    let client = socket();
    let kernel = addr(0, 0);
    // SAFETY: a valid sockaddr_nl; connecting autobinds it.
    let r = unsafe {
        libc::connect(
            client.as_raw_fd(),
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    assert_eq!(r, 0);
    let fresh = socket();
    let socks = [
        ("route watcher", &watcher),
        ("bound to its PID", &own),
        ("client", &client),
        ("never bound", &fresh),
    ];
    let before: Vec<String> = socks.iter().map(|(_, s)| state(s.as_raw_fd())).collect();

    common::restored();
    let mut c = common::Checks::default();
    for ((what, s), was) in socks.iter().zip(&before) {
        let now = state(s.as_raw_fd());
        c.check(
            &format!("netlink {what}: port ID, groups, destination and option as before"),
            &now == was,
            format!("{now} (was {was})"),
        );
        let portid = name(s.as_raw_fd(), false).0;
        let to = ask(s.as_raw_fd());
        c.check(
            &format!("netlink {what}: the kernel answers it at its port ID"),
            to == name(s.as_raw_fd(), false).0 && (portid != 0 || *what == "never bound"),
            format!("answer to {to}, port {portid}"),
        );
    }
    c.finish();
}
