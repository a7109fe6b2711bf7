//! Socket options: every option a program can set on the sockets thaw restores (keep-alive and
//! its timings, Nagle, timeouts, lingering, priorities, marks, congestion control, …), saved
//! where it differs from a fresh socket of the same kind and set again on the new socket before
//! it is bound. A listener's accepted connections inherit most of them, so losing one would
//! change every connection after restore. An option the kernel refuses at restore fails the
//! restore, naming it. (Buffer sizes, SO_PASSCRED, SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY
//! are kept by [`super::sockets`] itself.)
//!
//! A classic packet filter (SO_ATTACH_FILTER, as tcpdump's and DHCP clients' sockets have) is
//! read back with SO_GET_FILTER and attached again first, then locked again if it was
//! (SO_LOCK_FILTER); an eBPF program (SO_ATTACH_BPF) cannot be read back and is refused.

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
const NETLINK: i32 = 270;
/// SO_BUF_LOCK: whether the buffer sizes were set (and so are not tuned by the kernel).
const SO_BUF_LOCK: i32 = 72;

/// The options compared, with their names for messages.
const OPTIONS: &[(i32, i32, &str)] = &[
    // Sizes first: setting one also locks it, and SO_BUF_LOCK then says what stays locked.
    (SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF"),
    (SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF"),
    (SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK"),
    // Before SO_PRIORITY: setting the type of service sets the priority it maps to.
    (IP, libc::IP_TOS, "IP_TOS"),
    (IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS"),
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
    (SOL_SOCKET, 83, "SO_PASSRIGHTS"),
    (SOL_SOCKET, 37, "SO_TIMESTAMPING"),
    (SOL_SOCKET, 63, "SO_TIMESTAMP_NEW"),
    (SOL_SOCKET, 64, "SO_TIMESTAMPNS_NEW"),
    (SOL_SOCKET, 65, "SO_TIMESTAMPING_NEW"),
    (SOL_SOCKET, 41, "SO_WIFI_STATUS"),
    (SOL_SOCKET, 45, "SO_SELECT_ERR_QUEUE"),
    (SOL_SOCKET, 47, "SO_MAX_PACING_RATE"),
    (SOL_SOCKET, 61, "SO_TXTIME"),
    (SOL_SOCKET, 69, "SO_PREFER_BUSY_POLL"),
    (SOL_SOCKET, 70, "SO_BUSY_POLL_BUDGET"),
    (SOL_SOCKET, 74, "SO_TXREHASH"),
    (SOL_SOCKET, 75, "SO_RCVMARK"),
    (SOL_SOCKET, 82, "SO_RCVPRIORITY"),
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
    (TCP, 36, "TCP_INQ"),
    (TCP, 30, "TCP_FASTOPEN_CONNECT"),
    (TCP, 34, "TCP_FASTOPEN_NO_COOKIE"),
    (TCP, 45, "TCP_RTO_MIN_US"),
    (TCP, 46, "TCP_DELACK_MAX_US"),
    (IP, libc::IP_HDRINCL, "IP_HDRINCL"),
    (libc::SOL_RAW, 1, "ICMP_FILTER"),
    (libc::IPPROTO_ICMPV6, 1, "ICMPV6_FILTER"),
    (IPV6, libc::IPV6_CHECKSUM, "IPV6_CHECKSUM"),
    (IP, libc::IP_TTL, "IP_TTL"),
    (IP, libc::IP_RECVERR, "IP_RECVERR"),
    (IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER"),
    (IP, libc::IP_FREEBIND, "IP_FREEBIND"),
    (IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT"),
    (IP, 24, "IP_BIND_ADDRESS_NO_PORT"),
    (IP, 51, "IP_LOCAL_PORT_RANGE"),
    (IP, 21, "IP_MINTTL"),
    (IP, 50, "IP_UNICAST_IF"),
    (IP, libc::IP_ROUTER_ALERT, "IP_ROUTER_ALERT"),
    (IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"),
    (IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    (IPV6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"),
    (IPV6, 78, "IPV6_FREEBIND"),
    (IPV6, 75, "IPV6_TRANSPARENT"),
    (IPV6, 73, "IPV6_MINHOPCOUNT"),
    (IPV6, 76, "IPV6_UNICAST_IF"),
    (IPV6, 11, "IPV6_FLOWINFO"),
    (IPV6, 33, "IPV6_FLOWINFO_SEND"),
    (IPV6, 22, "IPV6_ROUTER_ALERT"),
    (IPV6, 30, "IPV6_ROUTER_ALERT_ISOLATE"),
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
    (IP, 25, "IP_RECVFRAGSIZE"),
    (IP, 26, "IP_RECVERR_RFC4884"),
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
    (IPV6, 31, "IPV6_RECVERR_RFC4884"),
    (IPV6, 77, "IPV6_RECVFRAGSIZE"),
    (IPV6, 53, "IPV6_RECVHOPOPTS"),
    (IPV6, 56, "IPV6_RECVRTHDR"),
    (IPV6, 58, "IPV6_RECVDSTOPTS"),
    (IPV6, 60, "IPV6_RECVPATHMTU"),
    (IPV6, 2, "IPV6_2292PKTINFO"),
    (IPV6, 3, "IPV6_2292HOPOPTS"),
    (IPV6, 4, "IPV6_2292DSTOPTS"),
    (IPV6, 5, "IPV6_2292RTHDR"),
    (IPV6, 8, "IPV6_2292HOPLIMIT"),
    // Sticky extension headers sent with every packet (setting most takes CAP_NET_RAW).
    (IPV6, 54, "IPV6_HOPOPTS"),
    (IPV6, 55, "IPV6_RTHDRDSTOPTS"),
    (IPV6, 57, "IPV6_RTHDR"),
    (IPV6, 59, "IPV6_DSTOPTS"),
    (IPV6, 62, "IPV6_DONTFRAG"),
    (IPV6, 70, "IPV6_AUTOFLOWLABEL"),
    (IPV6, 72, "IPV6_ADDR_PREFERENCES"),
    (UDP, 1, "UDP_CORK"),
    (UDP, 101, "UDP_NO_CHECK6_TX"),
    (UDP, 102, "UDP_NO_CHECK6_RX"),
    (UDP, 103, "UDP_SEGMENT"),
    (UDP, 104, "UDP_GRO"),
    (UDP, 100, "UDP_ENCAP"),
    (UDPLITE, 10, "UDPLITE_SEND_CSCOV"),
    (UDPLITE, 11, "UDPLITE_RECV_CSCOV"),
    (NETLINK, 3, "NETLINK_PKTINFO"),
    (NETLINK, 4, "NETLINK_BROADCAST_ERROR"),
    (NETLINK, 5, "NETLINK_NO_ENOBUFS"),
    (NETLINK, 8, "NETLINK_LISTEN_ALL_NSID"),
    (NETLINK, 10, "NETLINK_CAP_ACK"),
    (NETLINK, 11, "NETLINK_EXT_ACK"),
    (NETLINK, 12, "NETLINK_GET_STRICT_CHK"),
    // Last: once locked, the filter (attached first) cannot change.
    (SOL_SOCKET, SO_LOCK_FILTER, "SO_LOCK_FILTER"),
];

const SO_LOCK_FILTER: i32 = 44;
/// The instructions of a classic filter, 8 bytes each (`struct sock_filter`), as the value of
/// an option named SO_ATTACH_FILTER.
const FILTER: (i32, i32) = (SOL_SOCKET, libc::SO_ATTACH_FILTER);
/// BPF_MAXINSNS: the longest classic filter the kernel takes.
const FILTER_MAX: usize = 4096;

/// The options of socket `fd` that differ from those of a fresh socket of its family, type and
/// protocol; `Err` says why the socket is refused (a packet filter is attached to it).
pub(crate) fn dump(fd: i32, family: i32, ty: i32, protocol: i32) -> Result<Vec<SockOpt>, String> {
    let filter = filter(fd)?;
    let Ok(fresh) = crate::sys::socket(family, ty, protocol) else {
        return Ok(filter.into_iter().collect());
    };
    use std::os::fd::AsRawFd;
    Ok(filter
        .into_iter()
        .chain(OPTIONS.iter().filter_map(|&(level, name, _)| {
            let value = crate::sys::getsockopt_bytes(fd, level, name).ok()?;
            let default = crate::sys::getsockopt_bytes(fresh.as_raw_fd(), level, name).ok();
            (default.as_ref() != Some(&value)).then_some(SockOpt { level, name, value })
        }))
        .collect())
}

/// The classic packet filter attached to socket `fd`, if any.
fn filter(fd: i32) -> Result<Option<SockOpt>, String> {
    // SO_GET_FILTER counts in instructions: with no room it answers how many (0: no filter);
    // an eBPF program attached with SO_ATTACH_BPF cannot be read back (EACCES).
    let refused = |why: String| {
        format!("a packet filter is attached to it that cannot be read back ({why}): an eBPF program (SO_ATTACH_BPF) is not restored; attach it again after restore")
    };
    let n = crate::sys::getsockopt_len(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER)
        .map_err(|e| refused(e.to_string()))? as usize;
    if n == 0 {
        return Ok(None);
    }
    if n > FILTER_MAX {
        return Err(refused(format!("{n} instructions")));
    }
    let mut value = vec![0u8; n * 8];
    crate::sys::getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, &mut value)
        .map_err(|e| refused(e.to_string()))?;
    Ok(Some(SockOpt {
        level: FILTER.0,
        name: FILTER.1,
        value,
    }))
}

/// Attaches the classic filter whose instructions are `code` to socket `fd`.
fn attach_filter(fd: i32, code: &[u8]) -> std::io::Result<()> {
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    let mut prog = [0u8; 16];
    prog[..2].copy_from_slice(&((code.len() / 8) as u16).to_ne_bytes());
    prog[8..].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
    crate::sys::setsockopt_bytes(fd, FILTER.0, FILTER.1, &prog)
}

/// The option's name, for messages.
pub fn name(o: &SockOpt) -> String {
    if (o.level, o.name) == FILTER {
        return "its packet filter (SO_ATTACH_FILTER)".into();
    }
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
    // In the table's order, whatever the image's (one written before IP_TOS came before
    // SO_PRIORITY there would get the priority the type of service maps to).
    // The filter first (SO_LOCK_FILTER, last in the table, locks it), unknown ones last.
    let rank = |o: &SockOpt| {
        if (o.level, o.name) == FILTER {
            return 0;
        }
        OPTIONS
            .iter()
            .position(|(l, n, _)| *l == o.level && *n == o.name)
            .map_or(usize::MAX, |i| i + 1)
    };
    let mut opts: Vec<&SockOpt> = opts.iter().collect();
    opts.sort_by_key(|o| rank(o));
    for o in opts {
        if (o.level, o.name) == FILTER {
            if o.value.is_empty() || o.value.len() % 8 != 0 || o.value.len() > FILTER_MAX * 8 {
                return Err(format!(
                    "socket {what}: the image's packet filter is malformed"
                ));
            }
            attach_filter(fd, &o.value).map_err(|e| {
                format!("socket {what}: cannot attach its packet filter again: {e}")
            })?;
            continue;
        }
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
    fn a_classic_packet_filter_comes_back_locked_as_it_was() {
        let (a, _b) = crate::sys::socketpair(libc::SOCK_DGRAM).unwrap();
        // Two classic BPF instructions: load the length (ld #len), accept 0x77 bytes (ret #0x77).
        let insns: [u64; 2] = [0x80, 0x06 | (0x77 << 32)];
        let prog: [u64; 2] = [2, insns.as_ptr() as u64];
        let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let fd = a.as_raw_fd();
        crate::sys::setsockopt_bytes(fd, SOL_SOCKET, libc::SO_ATTACH_FILTER, &bytes).unwrap();
        crate::sys::setsockopt_int(fd, SOL_SOCKET, SO_LOCK_FILTER, 1).unwrap();
        let opts = dump(fd, libc::AF_UNIX, libc::SOCK_DGRAM, 0).unwrap();
        let names: Vec<String> = opts.iter().map(name).collect();
        assert_eq!(
            names,
            ["its packet filter (SO_ATTACH_FILTER)", "SO_LOCK_FILTER"]
        );
        let code: Vec<u8> = insns.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(opts[0].value, code);
        let (t, _u) = crate::sys::socketpair(libc::SOCK_DGRAM).unwrap();
        apply(t.as_raw_fd(), &opts, "test").unwrap();
        assert_eq!(
            dump(t.as_raw_fd(), libc::AF_UNIX, libc::SOCK_DGRAM, 0).unwrap(),
            opts
        );
        // Locked: it cannot be taken off.
        assert!(
            crate::sys::setsockopt_int(t.as_raw_fd(), SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
                .is_err()
        );
        // A hostile image's filter of a length that is no number of instructions.
        let bad = [SockOpt {
            level: SOL_SOCKET,
            name: libc::SO_ATTACH_FILTER,
            value: vec![0; 12],
        }];
        let (v, _w) = crate::sys::socketpair(libc::SOCK_DGRAM).unwrap();
        let err = apply(v.as_raw_fd(), &bad, "test").unwrap_err();
        assert!(err.contains("malformed"), "{err}");
    }

    /// Options a stock runtime's trial found dropped (a listener's minimum TTL, a UDP socket's
    /// per-message flags, …): each set alone on a fresh socket of its kind is saved and comes
    /// back. Those this kernel does not know, or lets only a privileged caller set, are skipped.
    #[test]
    fn every_option_a_program_can_set_comes_back() {
        let int = |v: i32| v.to_ne_bytes().to_vec();
        let (v4, v6, tcp, udp) = (
            libc::AF_INET,
            libc::AF_INET6,
            libc::SOCK_STREAM,
            libc::SOCK_DGRAM,
        );
        let cases: Vec<(i32, i32, i32, i32, Vec<u8>)> = vec![
            (v4, tcp, IP, 21, int(255)),
            (v4, tcp, SOL_SOCKET, 47, int(125_000)),
            (v4, udp, SOL_SOCKET, 37, int(0x58)),
            (v4, udp, SOL_SOCKET, 45, int(1)),
            (v4, udp, SOL_SOCKET, 69, int(1)),
            (v4, udp, SOL_SOCKET, 75, int(1)),
            (v4, udp, SOL_SOCKET, 82, int(1)),
            (v4, udp, SOL_SOCKET, 41, int(1)),
            (v4, udp, IP, 25, int(1)),
            (v4, udp, IP, 26, int(1)),
            (v4, udp, IP, 50, 1i32.to_be().to_ne_bytes().to_vec()),
            (v4, tcp, TCP, 36, int(1)),
            (v4, tcp, TCP, 30, int(1)),
            (v4, tcp, TCP, 34, int(1)),
            (v6, udp, IPV6, 73, int(255)),
            (v6, udp, IPV6, 31, int(1)),
            (v6, udp, IPV6, 77, int(1)),
            (v6, udp, IPV6, 53, int(1)),
            (v6, udp, IPV6, 56, int(1)),
            (v6, udp, IPV6, 58, int(1)),
            (v6, udp, IPV6, 60, int(1)),
            (v6, udp, IPV6, 11, int(1)),
            (v6, udp, IPV6, 33, int(1)),
            (v6, udp, IPV6, 2, int(1)),
            (libc::AF_UNIX, libc::SOCK_STREAM, SOL_SOCKET, 83, int(0)),
        ];
        let mut checked = 0;
        for (family, ty, level, name, value) in cases {
            let s = crate::sys::socket(family, ty, 0).unwrap();
            if crate::sys::setsockopt_bytes(s.as_raw_fd(), level, name, &value).is_err() {
                eprintln!("skipped {level}/{name}: not settable here");
                continue;
            }
            let opts = dump(s.as_raw_fd(), family, ty, 0).unwrap();
            assert!(
                opts.iter().any(|o| (o.level, o.name) == (level, name)),
                "{level}/{name} not saved: {opts:?}"
            );
            let t = crate::sys::socket(family, ty, 0).unwrap();
            apply(t.as_raw_fd(), &opts, "test").unwrap();
            assert_eq!(dump(t.as_raw_fd(), family, ty, 0).unwrap(), opts);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} options could be set here");
        // SO_PRIORITY set after IP_TOS (which sets the priority it maps to) stays as set, even
        // from a list in the other order.
        let s = crate::sys::socket(v4, tcp, 0).unwrap();
        crate::sys::setsockopt_int(s.as_raw_fd(), IP, libc::IP_TOS, 0x10).unwrap();
        crate::sys::setsockopt_int(s.as_raw_fd(), SOL_SOCKET, libc::SO_PRIORITY, 3).unwrap();
        let mut opts = dump(s.as_raw_fd(), v4, tcp, 0).unwrap();
        opts.reverse();
        let t = crate::sys::socket(v4, tcp, 0).unwrap();
        apply(t.as_raw_fd(), &opts, "test").unwrap();
        assert_eq!(
            crate::sys::getsockopt_int(t.as_raw_fd(), SOL_SOCKET, libc::SO_PRIORITY).unwrap(),
            3
        );
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
