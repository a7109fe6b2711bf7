//! Socket options: every option a program can set on the sockets thaw restores (keep-alive and
//! its timings, Nagle, timeouts, lingering, priorities, marks, congestion control, …), saved
//! where it differs from a fresh socket of the same kind and set again on the new socket before
//! it is bound. A listener's accepted connections inherit most of them, so losing one would
//! change every connection after restore. An option the kernel refuses at restore fails the
//! restore, naming it. (Buffer sizes, SO_PASSCRED, SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY
//! are kept by [`super::sockets`] itself.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockOpt {
    pub level: i32,
    pub name: i32,
    /// The value as getsockopt returns it (an int, a struct, a string).
    pub value: Vec<u8>,
}

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const TCP: i32 = libc::IPPROTO_TCP;
const IP: i32 = libc::IPPROTO_IP;
const IPV6: i32 = libc::IPPROTO_IPV6;
const UDP: i32 = libc::IPPROTO_UDP;
const UDPLITE: i32 = libc::IPPROTO_UDPLITE;
/// SO_BUF_LOCK: whether the buffer sizes were set (and so are not tuned by the kernel).
const SO_BUF_LOCK: i32 = 72;

/// The options compared, with their names for messages.
const OPTIONS: &[(i32, i32, &str)] = &[
    // Sizes first: setting one also locks it, and SO_BUF_LOCK then says what stays locked.
    (SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF"),
    (SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF"),
    (SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK"),
    (SOL_SOCKET, libc::SO_NO_CHECK, "SO_NO_CHECK"),
    (SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    (SOL_SOCKET, libc::SO_LINGER, "SO_LINGER"),
    (SOL_SOCKET, libc::SO_RCVTIMEO, "SO_RCVTIMEO"),
    (SOL_SOCKET, libc::SO_SNDTIMEO, "SO_SNDTIMEO"),
    (SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT"),
    (SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY"),
    (SOL_SOCKET, libc::SO_MARK, "SO_MARK"),
    (SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST"),
    (SOL_SOCKET, libc::SO_OOBINLINE, "SO_OOBINLINE"),
    (SOL_SOCKET, libc::SO_DONTROUTE, "SO_DONTROUTE"),
    (SOL_SOCKET, libc::SO_PASSSEC, "SO_PASSSEC"),
    (SOL_SOCKET, libc::SO_TIMESTAMP, "SO_TIMESTAMP"),
    (SOL_SOCKET, libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS"),
    (SOL_SOCKET, libc::SO_BUSY_POLL, "SO_BUSY_POLL"),
    (SOL_SOCKET, libc::SO_PEEK_OFF, "SO_PEEK_OFF"),
    (SOL_SOCKET, libc::SO_RXQ_OVFL, "SO_RXQ_OVFL"),
    (SOL_SOCKET, libc::SO_INCOMING_CPU, "SO_INCOMING_CPU"),
    (SOL_SOCKET, libc::SO_ZEROCOPY, "SO_ZEROCOPY"),
    (SOL_SOCKET, libc::SO_BINDTODEVICE, "SO_BINDTODEVICE"),
    (SOL_SOCKET, 76, "SO_PASSPIDFD"),
    (TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
    (TCP, libc::TCP_MAXSEG, "TCP_MAXSEG"),
    (TCP, libc::TCP_CORK, "TCP_CORK"),
    (TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
    (TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    (TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
    (TCP, libc::TCP_SYNCNT, "TCP_SYNCNT"),
    (TCP, libc::TCP_LINGER2, "TCP_LINGER2"),
    (TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"),
    (TCP, libc::TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP"),
    (TCP, libc::TCP_CONGESTION, "TCP_CONGESTION"),
    (
        TCP,
        libc::TCP_THIN_LINEAR_TIMEOUTS,
        "TCP_THIN_LINEAR_TIMEOUTS",
    ),
    (TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
    (TCP, libc::TCP_FASTOPEN, "TCP_FASTOPEN"),
    (TCP, libc::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT"),
    (TCP, 27, "TCP_SAVE_SYN"),
    (TCP, 37, "TCP_TX_DELAY"),
    (IP, libc::IP_TOS, "IP_TOS"),
    (IP, libc::IP_TTL, "IP_TTL"),
    (IP, libc::IP_RECVERR, "IP_RECVERR"),
    (IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER"),
    (IP, libc::IP_FREEBIND, "IP_FREEBIND"),
    (IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT"),
    (IP, 24, "IP_BIND_ADDRESS_NO_PORT"),
    (IP, 51, "IP_LOCAL_PORT_RANGE"),
    (IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"),
    (IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS"),
    (IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    (IPV6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"),
    (IPV6, 78, "IPV6_FREEBIND"),
    (IPV6, 75, "IPV6_TRANSPARENT"),
    // What a datagram socket is told with each message, and how it sends multicast.
    (IP, libc::IP_OPTIONS, "IP_OPTIONS"),
    (IP, libc::IP_PKTINFO, "IP_PKTINFO"),
    (IP, libc::IP_RECVTTL, "IP_RECVTTL"),
    (IP, libc::IP_RECVTOS, "IP_RECVTOS"),
    (IP, libc::IP_RECVOPTS, "IP_RECVOPTS"),
    (IP, libc::IP_RETOPTS, "IP_RETOPTS"),
    (IP, libc::IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"),
    (IP, libc::IP_PASSSEC, "IP_PASSSEC"),
    (IP, 22, "IP_NODEFRAG"),
    (IP, 23, "IP_CHECKSUM"),
    (IP, libc::IP_MULTICAST_IF, "IP_MULTICAST_IF"),
    (IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL"),
    (IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP"),
    (IP, libc::IP_MULTICAST_ALL, "IP_MULTICAST_ALL"),
    (IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"),
    (IPV6, libc::IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"),
    (IPV6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS"),
    (IPV6, 74, "IPV6_RECVORIGDSTADDR"),
    (IPV6, libc::IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF"),
    (IPV6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"),
    (IPV6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP"),
    (IPV6, 29, "IPV6_MULTICAST_ALL"),
    (IPV6, 62, "IPV6_DONTFRAG"),
    (IPV6, 70, "IPV6_AUTOFLOWLABEL"),
    (IPV6, 72, "IPV6_ADDR_PREFERENCES"),
    (UDP, 1, "UDP_CORK"),
    (UDP, 101, "UDP_NO_CHECK6_TX"),
    (UDP, 102, "UDP_NO_CHECK6_RX"),
    (UDP, 103, "UDP_SEGMENT"),
    (UDP, 104, "UDP_GRO"),
    (UDPLITE, 10, "UDPLITE_SEND_CSCOV"),
    (UDPLITE, 11, "UDPLITE_RECV_CSCOV"),
];

/// The options of socket `fd` that differ from those of a fresh socket of its family, type and
/// protocol; `Err` says why the socket is refused (a packet filter is attached to it).
pub(crate) fn dump(fd: i32, family: i32, ty: i32, protocol: i32) -> Result<Vec<SockOpt>, String> {
    // SO_GET_FILTER with no room answers the length of a classic filter (0: none); an eBPF
    // program attached with SO_ATTACH_BPF cannot be read back (EACCES).
    match crate::sys::getsockopt_len(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER) {
        Ok(0) => {}
        Ok(_) | Err(_) => {
            return Err(
                "a packet filter is attached to it (SO_ATTACH_FILTER or SO_ATTACH_BPF), which thaw does not restore: attach it again after restore".into(),
            )
        }
    }
    let Ok(fresh) = crate::sys::socket(family, ty, protocol) else {
        return Ok(Vec::new());
    };
    use std::os::fd::AsRawFd;
    Ok(OPTIONS
        .iter()
        .filter_map(|&(level, name, _)| {
            let value = crate::sys::getsockopt_bytes(fd, level, name).ok()?;
            let default = crate::sys::getsockopt_bytes(fresh.as_raw_fd(), level, name).ok();
            (default.as_ref() != Some(&value)).then_some(SockOpt { level, name, value })
        })
        .collect())
}

/// The option's name, for messages.
pub fn name(o: &SockOpt) -> String {
    OPTIONS
        .iter()
        .find(|(l, n, _)| *l == o.level && *n == o.name)
        .map_or_else(
            || format!("option {}/{}", o.level, o.name),
            |x| x.2.to_owned(),
        )
}

/// Sets `opts` on socket `fd` (`what` names it in an error).
pub(crate) fn apply(fd: i32, opts: &[SockOpt], what: &str) -> Result<(), String> {
    for o in opts {
        // Only the options above, as getsockopt returns them: an image names nothing else.
        if o.value.len() > 64
            || !OPTIONS
                .iter()
                .any(|(l, n, _)| *l == o.level && *n == o.name)
        {
            return Err(format!(
                "socket {what}: the image names socket option {}/{}, which thaw does not restore",
                o.level, o.name
            ));
        }
        let size =
            o.level == SOL_SOCKET && (o.name == libc::SO_SNDBUF || o.name == libc::SO_RCVBUF);
        if size {
            set_size(fd, o, what)?;
            continue;
        }
        crate::sys::setsockopt_bytes(fd, o.level, o.name, &o.value)
            .map_err(|e| format!("socket {what}: cannot set {} again: {e}", name(o)))?;
    }
    Ok(())
}

/// A buffer size: the kernel keeps twice what it is given, and holds it under
/// net.core.wmem_max/rmem_max unless forced (SO_SNDBUFFORCE, with CAP_NET_ADMIN).
fn set_size(fd: i32, o: &SockOpt, what: &str) -> Result<(), String> {
    let want = o
        .value
        .get(..4)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4")))
        .ok_or_else(|| format!("socket {what}: malformed {}", name(o)))?;
    let force = if o.name == libc::SO_SNDBUF {
        libc::SO_SNDBUFFORCE
    } else {
        libc::SO_RCVBUFFORCE
    };
    let got = || crate::sys::getsockopt_int(fd, SOL_SOCKET, o.name).unwrap_or(-1);
    let _ = crate::sys::setsockopt_int(fd, SOL_SOCKET, o.name, want / 2);
    if got() != want {
        let _ = crate::sys::setsockopt_int(fd, SOL_SOCKET, force, want / 2);
    }
    if got() != want {
        return Err(format!(
            "socket {what}: cannot set {} to {want} bytes again (the system's limit is lower: net.core.{}mem_max)",
            name(o),
            if o.name == libc::SO_SNDBUF { "w" } else { "r" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_socket_with_a_packet_filter_is_refused() {
        let (a, _b) = crate::sys::socketpair(libc::SOCK_DGRAM).unwrap();
        // One classic BPF instruction: accept everything (ret #-1).
        let insn: [u64; 1] = [(0xffff_ffff_u64 << 32) | 0x06];
        let prog: [u64; 2] = [1, insn.as_ptr() as u64];
        let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_ne_bytes()).collect();
        crate::sys::setsockopt_bytes(a.as_raw_fd(), SOL_SOCKET, libc::SO_ATTACH_FILTER, &bytes)
            .unwrap();
        let err = dump(a.as_raw_fd(), libc::AF_UNIX, libc::SOCK_DGRAM, 0).unwrap_err();
        assert!(err.contains("packet filter"), "{err}");
    }

    #[test]
    fn only_options_that_differ_are_kept_and_they_come_back() {
        let s = crate::sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let fd = s.as_raw_fd();
        assert!(dump(fd, libc::AF_INET, libc::SOCK_STREAM, 0)
            .unwrap()
            .is_empty());
        crate::sys::setsockopt_int(fd, SOL_SOCKET, libc::SO_KEEPALIVE, 1).unwrap();
        crate::sys::setsockopt_int(fd, TCP, libc::TCP_NODELAY, 1).unwrap();
        crate::sys::setsockopt_int(fd, TCP, libc::TCP_KEEPIDLE, 77).unwrap();
        crate::sys::setsockopt_bytes(fd, TCP, libc::TCP_CONGESTION, b"reno").unwrap();
        let opts = dump(fd, libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let names: Vec<String> = opts.iter().map(name).collect();
        assert_eq!(
            names,
            [
                "SO_KEEPALIVE",
                "TCP_NODELAY",
                "TCP_KEEPIDLE",
                "TCP_CONGESTION"
            ]
        );
        let t = crate::sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        apply(t.as_raw_fd(), &opts, "test").unwrap();
        assert_eq!(
            dump(t.as_raw_fd(), libc::AF_INET, libc::SOCK_STREAM, 0).unwrap(),
            opts
        );
    }
}
