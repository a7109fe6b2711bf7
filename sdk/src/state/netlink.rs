//! Netlink sockets (AF_NETLINK): a udev monitor (NETLINK_KOBJECT_UEVENT bound to its group), a
//! route or address watcher (NETLINK_ROUTE with groups), a generic netlink client, idle between
//! requests.
//!
//! Such a socket is its protocol, its port ID (the address the kernel and other sockets send to;
//! a library such as libmnl checks every reply against the one it read after binding), the
//! multicast groups it listens to, its default destination and its options. Made again with
//! all of them, it is the same socket: nothing else of it lives in the kernel. What waits in
//! its receive queue (a reply, a multicast event, a dump in progress) came from the kernel or
//! from another socket, and could only be sent again from another port ID, which a reader that
//! checks its sender (udev takes events from the kernel alone) would reject: a socket with
//! something to read, or an error waiting (ENOBUFS: events were lost), is refused by name.
//!
//! The port ID is bound explicitly at restore; one another socket holds by then (the first life
//! still running, a second restore of the same image in another PID namespace) fails the
//! restore, naming it.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::sockopts::SockOpt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetlinkSocket {
    pub ino: u64,
    /// SOCK_RAW or SOCK_DGRAM (the same to netlink).
    pub ty: i32,
    /// NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT, NETLINK_GENERIC...
    pub protocol: i32,
    /// Its port ID; 0: never bound (nor connected, nor used to send).
    pub portid: u32,
    /// The multicast groups it listens to, as NETLINK_LIST_MEMBERSHIPS gives them: bit `n` of
    /// word `n / 32` is group `n + 1`.
    pub groups: Vec<u32>,
    /// Its default destination (`connect`): a port ID and a group (its number, 0: none).
    pub dst_portid: u32,
    pub dst_group: u32,
    pub connected: bool,
    pub opts: Vec<SockOpt>,
}

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
/// The most group words an image may name (32,768 groups; generic netlink allocates group
/// numbers from one space, a few hundred on a busy machine).
pub const MAX_GROUP_WORDS: usize = 1024;

/// `struct sockaddr_nl`: family, padding, port ID, groups (the first 32, as a mask).
fn sockaddr(portid: u32, groups: u32) -> Vec<u8> {
    let mut a = vec![0u8; 12];
    a[..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&portid.to_ne_bytes());
    a[8..12].copy_from_slice(&groups.to_ne_bytes());
    a
}

/// (port ID, groups mask) of a `struct sockaddr_nl`.
fn parse(a: &[u8]) -> (u32, u32) {
    let word = |at: usize| {
        a.get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4")))
    };
    (word(4), word(8))
}

fn protocol_name(protocol: i32) -> String {
    match protocol {
        libc::NETLINK_ROUTE => "NETLINK_ROUTE".into(),
        libc::NETLINK_KOBJECT_UEVENT => "NETLINK_KOBJECT_UEVENT".into(),
        libc::NETLINK_GENERIC => "NETLINK_GENERIC".into(),
        libc::NETLINK_AUDIT => "NETLINK_AUDIT".into(),
        libc::NETLINK_NETFILTER => "NETLINK_NETFILTER".into(),
        libc::NETLINK_SOCK_DIAG => "NETLINK_SOCK_DIAG".into(),
        libc::NETLINK_CONNECTOR => "NETLINK_CONNECTOR".into(),
        libc::NETLINK_XFRM => "NETLINK_XFRM".into(),
        p => format!("netlink protocol {p}"),
    }
}

/// Reads netlink socket `fd` (inode `ino`) from inside the process; `Err` says why it is refused.
pub(crate) fn dump(fd: i32, ino: u64, ty: i32, protocol: i32) -> Result<NetlinkSocket, String> {
    let name = protocol_name(protocol);
    // What waits to be read (POLLIN) or an error (POLLERR: ENOBUFS, events dropped); poll
    // tells without taking either.
    let ev = crate::sys::poll_now(fd, libc::POLLIN).map_err(|e| format!("poll: {e}"))?;
    if ev & libc::POLLERR != 0 {
        return Err(format!(
            "{name} socket: an error waits to be read (ENOBUFS: messages for it were dropped, its receive buffer full), which thaw cannot read without taking it from the process, nor give a socket made again: let the process read it (and resynchronise, as a netlink listener does after ENOBUFS) before the checkpoint"
        ));
    }
    if ev & libc::POLLIN != 0 {
        return Err(format!(
            "{name} socket: messages wait to be read (a reply, an event, or a dump in progress), which thaw does not restore: made again, they would come from another sender; read them before the checkpoint"
        ));
    }
    let (portid, first) =
        parse(&crate::sys::getsockname(fd).map_err(|e| format!("getsockname: {e}"))?);
    let cannot = |e: std::io::Error| format!("{name} socket: cannot list its groups: {e}");
    // (Asked with no room, the kernel answers the room its groups take.)
    let len = crate::sys::getsockopt_len(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS)
        .map_err(cannot)? as usize;
    if len > MAX_GROUP_WORDS * 4 {
        return Err(format!(
            "{name} socket: its protocol has groups numbered beyond {}, more than thaw keeps",
            MAX_GROUP_WORDS * 32
        ));
    }
    let mut buf = vec![0u8; len];
    let n = crate::sys::getsockopt_into(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, &mut buf)
        .map_err(cannot)?;
    let mut groups: Vec<u32> = buf[..n]
        .chunks_exact(4)
        .map(|w| u32::from_ne_bytes(w.try_into().expect("4")))
        .collect();
    while groups.last() == Some(&0) {
        groups.pop();
    }
    debug_assert!(groups.first().copied().unwrap_or(0) == first);
    let (dst_portid, dst_group) = crate::sys::getpeername(fd)
        .map(|peer| parse(&peer))
        .unwrap_or((0, 0));
    // (The kernel gives the destination group as a mask of the first 32, a group beyond reading
    // as none: connect takes it so too.) One connected to the kernel (port 0, no group) names
    // the same peer as one never connected, but takes unicasts from the kernel alone: the
    // kernel's socket table tells them apart (only bound sockets are in it, and connecting binds).
    let connected = dst_portid != 0
        || dst_group != 0
        || (portid != 0 && connected_state(protocol, ino).unwrap_or(false));
    Ok(NetlinkSocket {
        ino,
        ty,
        protocol,
        portid,
        groups,
        dst_portid,
        dst_group,
        connected,
        opts: super::sockopts::dump(fd, libc::AF_NETLINK, ty, protocol)?,
    })
}

/// Whether the kernel's table of netlink sockets (NETLINK_SOCK_DIAG) has socket `ino` of
/// `protocol` connected; `None` where it cannot be asked or does not list it.
fn connected_state(protocol: i32, ino: u64) -> Option<bool> {
    // struct netlink_diag_req { family, protocol, pad: u16, ino, show, cookie[2] }
    let mut req = [0u8; 20];
    req[0] = libc::AF_NETLINK as u8;
    req[1] = protocol as u8;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    // struct netlink_diag_msg { family, type, protocol, state: u8, portid, dst_portid,
    // dst_group, ino, cookie[2] }; NETLINK_CONNECTED is state 1.
    crate::sys::sock_diag(SOCK_DIAG_BY_FAMILY, &req)
        .ok()?
        .iter()
        .filter(|m| m.len() >= 20)
        .find(|m| u64::from(u32::from_ne_bytes(m[16..20].try_into().expect("4"))) == ino)
        .map(|m| m[3] == 1)
}

impl NetlinkSocket {
    /// "NETLINK_KOBJECT_UEVENT socket (port 1234)".
    pub fn describe(&self) -> String {
        format!(
            "{} socket (port {})",
            protocol_name(self.protocol),
            self.portid
        )
    }

    /// Makes the socket again: options, port ID, groups, destination.
    pub fn make(&self) -> Result<OwnedFd, String> {
        let what = self.describe();
        let sock = crate::sys::socket(libc::AF_NETLINK, self.ty, self.protocol)
            .map_err(|e| format!("{what}: cannot create it: {e}"))?;
        let fd = sock.as_raw_fd();
        super::sockopts::apply(fd, &self.opts, &what)?;
        if self.portid != 0 {
            crate::sys::bind(fd, &sockaddr(self.portid, 0)).map_err(|e| {
                if e.raw_os_error() == Some(libc::EADDRINUSE) {
                    format!("{what}: another netlink socket holds port ID {} (the image's first life still running, or another restore of it): end it, then restore", self.portid)
                } else {
                    format!("{what}: cannot bind it to port ID {}: {e}", self.portid)
                }
            })?;
        }
        for (w, word) in self.groups.iter().enumerate() {
            for bit in (0..32).filter(|b| word & (1 << b) != 0) {
                let group = (w * 32 + bit + 1) as i32;
                crate::sys::setsockopt_int(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
                    .map_err(|e| format!("{what}: cannot listen to group {group} again: {e}"))?;
            }
        }
        if self.connected {
            crate::sys::connect(fd, &sockaddr(self.dst_portid, self.dst_group)).map_err(|e| {
                format!(
                    "{what}: cannot connect it to port ID {} (groups {:#x}) again: {e}",
                    self.dst_portid, self.dst_group
                )
            })?;
        }
        Ok(sock)
    }
}

/// Checks a socket from an image before anything is made of it.
pub fn validate(s: &NetlinkSocket) -> Result<(), String> {
    if !(s.ty == libc::SOCK_RAW || s.ty == libc::SOCK_DGRAM)
        || !(0..32).contains(&s.protocol)
        || s.groups.len() > MAX_GROUP_WORDS
        || (!s.connected && (s.dst_portid != 0 || s.dst_group != 0))
    {
        return Err(format!("socket:[{}]: malformed netlink socket", s.ino));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::ino_of as ino;

    /// A route watcher bound to a port of its own with groups on both sides of 32, connected
    /// to the kernel, with an option: made again, it reads back the same, and the kernel
    /// answers a request on it.
    #[test]
    fn a_route_socket_with_groups_comes_back_the_same_and_answers() {
        let s = crate::sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        let fd = s.as_raw_fd();
        crate::sys::bind(fd, &sockaddr(0, 1 << (libc::RTNLGRP_LINK - 1))).unwrap();
        // RTNLGRP_BRVLAN, the 33rd.
        crate::sys::setsockopt_int(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, 33).unwrap();
        crate::sys::setsockopt_int(fd, SOL_NETLINK, 5, 1).unwrap(); // NETLINK_NO_ENOBUFS
        crate::sys::connect(fd, &sockaddr(0, 0)).unwrap();
        let d = dump(fd, ino(&s), libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        assert_ne!(d.portid, 0);
        // Connected to the kernel: it names no other peer than an unconnected socket does.
        assert!(d.connected);
        assert_eq!(d.groups, vec![1 << (libc::RTNLGRP_LINK - 1), 1]);
        assert!(d.opts.iter().any(|o| o.level == SOL_NETLINK && o.name == 5));
        validate(&d).unwrap();
        // The port ID is taken while the first socket lives: named.
        let busy = d.make().unwrap_err();
        assert!(busy.contains("holds port ID"), "{busy}");
        drop(s);
        let again = d.make().unwrap();
        let back = dump(
            again.as_raw_fd(),
            ino(&again),
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        )
        .unwrap();
        assert_eq!(
            back,
            NetlinkSocket {
                ino: back.ino,
                ..d.clone()
            }
        );
        // RTM_GETLINK for interface 1 (lo): an answer comes, to this port ID.
        let mut req = [0u8; 32];
        req[..4].copy_from_slice(&32u32.to_ne_bytes());
        req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req[16] = libc::AF_UNSPEC as u8;
        req[20..24].copy_from_slice(&1i32.to_ne_bytes());
        // SAFETY: a buffer of ours, on our own socket.
        let sent = unsafe { libc::send(again.as_raw_fd(), req.as_ptr().cast(), 32, 0) };
        assert_eq!(sent, 32);
        let mut reply = [0u8; 4096];
        // SAFETY: as above.
        let n = unsafe { libc::recv(again.as_raw_fd(), reply.as_mut_ptr().cast(), 4096, 0) };
        assert!(n >= 16, "{n}");
        let to = u32::from_ne_bytes(reply[12..16].try_into().unwrap());
        assert_eq!(to, d.portid);
        // Something waiting now: refused by name.
        // SAFETY: as above.
        unsafe { libc::send(again.as_raw_fd(), req.as_ptr().cast(), 32, 0) };
        // (The kernel answers within the send.)
        let why = dump(
            again.as_raw_fd(),
            d.ino,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        )
        .unwrap_err();
        assert!(why.contains("messages wait to be read"), "{why}");
    }

    #[test]
    fn hostile_images_are_refused() {
        let ok = NetlinkSocket {
            ty: libc::SOCK_RAW,
            protocol: libc::NETLINK_KOBJECT_UEVENT,
            portid: 7,
            groups: vec![1],
            ..Default::default()
        };
        validate(&ok).unwrap();
        for bad in [
            NetlinkSocket {
                ty: libc::SOCK_STREAM,
                ..ok.clone()
            },
            NetlinkSocket {
                protocol: 99,
                ..ok.clone()
            },
            NetlinkSocket {
                groups: vec![0; MAX_GROUP_WORDS + 1],
                ..ok.clone()
            },
            NetlinkSocket {
                dst_portid: 3,
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
