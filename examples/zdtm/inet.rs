//! Internet sockets without a connection (a resolver's UDP socket, a multicast listener, a TCP
//! socket made before it connects).
//!
//! Before the checkpoint: a TCP socket with options and a fixed send buffer, never bound; a TCP
//! socket bound to 127.0.0.1 and not listening; two UDP sockets on 127.0.0.1, the first connected
//! to the second, which asks for IP_PKTINFO; a UDP socket shut down for reading; a UDP socket
//! that joined 239.7.7.7 on lo and, source-specific, 232.1.1.1 from 127.0.0.1, with its
//! multicast TTL and loop; a dual-stack UDP socket that joined 239.7.7.7 too; an IPv6-only UDP
//! socket on [::1]; where `net.ipv4.ping_group_range`
//! lets this user make one, an ICMP echo ("ping") socket that pinged 127.0.0.1 and read the
//! reply (else it prints `note: no ICMP echo socket here`); with CAP_NET_RAW, a raw UDP socket
//! with a TTL and IP_FREEBIND, and a raw ICMP socket with an ICMP_FILTER.
//!
//! `PROG IMAGE KEY [udp-queued|tcp-connected|tcp-md5|icmp-queued]`: with an extra argument the checkpoint
//! must be refused (a datagram or an echo reply waits to be read; a TCP connection is
//! established), and the program
//! prints `refused: ...` and exits 3.

#[path = "common.rs"]
mod common;

use std::os::fd::RawFd;

fn sock(family: i32, ty: i32) -> RawFd {
    // SAFETY: socket has no memory effects.
    let fd = unsafe { libc::socket(family, ty, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    fd
}

fn setopt(fd: RawFd, level: i32, name: i32, v: &[u8]) {
    // SAFETY: `v` is a live buffer of its length.
    let r = unsafe { libc::setsockopt(fd, level, name, v.as_ptr().cast(), v.len() as u32) };
    assert_eq!(
        r,
        0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
}

fn setint(fd: RawFd, level: i32, name: i32, v: i32) {
    setopt(fd, level, name, &v.to_ne_bytes());
}

fn getopt(fd: RawFd, level: i32, name: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = buf.len() as u32;
    // SAFETY: `buf` is a live buffer of `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut len) };
    if r == 0 {
        Ok(len as usize)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn getint(fd: RawFd, level: i32, name: i32) -> i32 {
    let mut b = [0u8; 4];
    getopt(fd, level, name, &mut b).map_or(-1, |_| i32::from_ne_bytes(b))
}

fn v4(port: u16, ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&port.to_be_bytes());
    a[4..8].copy_from_slice(&ip);
    a
}

fn v6_loopback() -> Vec<u8> {
    let mut a = vec![0u8; 28];
    a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    a[23] = 1;
    a
}

fn bind(fd: RawFd, a: &[u8]) {
    // SAFETY: `a` is a sockaddr of its length.
    let r = unsafe { libc::bind(fd, a.as_ptr().cast(), a.len() as u32) };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
}

fn connect(fd: RawFd, a: &[u8]) -> std::io::Result<()> {
    // SAFETY: `a` is a sockaddr of its length.
    let r = unsafe { libc::connect(fd, a.as_ptr().cast(), a.len() as u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn name(fd: RawFd, peer: bool) -> Vec<u8> {
    let mut b = [0u8; 128];
    let mut len = b.len() as u32;
    // SAFETY: `b` is a live buffer of `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, b.as_mut_ptr().cast(), &mut len)
        } else {
            libc::getsockname(fd, b.as_mut_ptr().cast(), &mut len)
        }
    };
    if r == 0 {
        b[..len as usize].to_vec()
    } else {
        Vec::new()
    }
}

fn lo_index() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `struct group_req` / the head of `struct group_filter`: interface, padding, group.
fn group_req(group: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 8 + 128];
    r[..4].copy_from_slice(&lo_index().to_ne_bytes());
    r[8..8 + group.len()].copy_from_slice(group);
    r
}

/// The filter mode and sources of `fd`'s membership of `group` on lo (Err: not a member).
fn filter(fd: RawFd, group: &[u8]) -> std::io::Result<(u32, Vec<Vec<u8>>)> {
    let mut f = group_req(group);
    f.resize(144 + 4 * 128, 0);
    f[140..144].copy_from_slice(&4u32.to_ne_bytes());
    getopt(fd, libc::IPPROTO_IP, 48 /* MCAST_MSFILTER */, &mut f)?;
    let n = u32::from_ne_bytes(f[140..144].try_into().unwrap()) as usize;
    let mode = u32::from_ne_bytes(f[136..140].try_into().unwrap());
    Ok((
        mode,
        (0..n.min(4))
            .map(|i| f[144 + i * 128..144 + i * 128 + 16].to_vec())
            .collect(),
    ))
}

/// Sends an echo request to 127.0.0.1 on ICMP echo socket `fd` and reads the reply: the reply's
/// echo identifier, if one came (within the socket's receive timeout).
fn ping(fd: RawFd, seq: u16) -> Option<u16> {
    // type 8 (echo request), code 0, checksum (the kernel's), identifier (the kernel's: the
    // socket's port), sequence, payload.
    let mut req = [8u8, 0, 0, 0, 0, 0, 0, 0, b'p', b'i', b'n', b'g'];
    req[6..8].copy_from_slice(&seq.to_be_bytes());
    let to = v4(0, [127, 0, 0, 1]);
    // SAFETY: live buffers of their lengths.
    let sent = unsafe {
        libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            to.as_ptr().cast(),
            to.len() as u32,
        )
    };
    assert_eq!(
        sent,
        req.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
    let mut reply = [0u8; 64];
    // SAFETY: a live buffer of its length.
    let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
    (n >= 8 && reply[0] == 0 && reply[6..8] == seq.to_be_bytes())
        .then(|| u16::from_be_bytes([reply[4], reply[5]]))
}

fn main() {
    let (_, _, extra) = common::argv();
    let lo = [127, 0, 0, 1];
    match extra.first().map(String::as_str) {
        Some("udp-queued") => common::refusal(|| {
            let a = sock(libc::AF_INET, libc::SOCK_DGRAM);
            bind(a, &v4(0, lo));
            connect(a, &name(a, false)).unwrap();
            // SAFETY: a live 5-byte buffer.
            assert_eq!(unsafe { libc::send(a, b"hello".as_ptr().cast(), 5, 0) }, 5);
        }),
        Some("icmp-queued") => common::refusal(|| {
            // SAFETY: socket has no memory effects.
            let p = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
            assert!(p >= 0, "{}", std::io::Error::last_os_error());
            let req = [8u8, 0, 0, 0, 0, 0, 0, 1];
            let to = v4(0, lo);
            // SAFETY: live buffers of their lengths; then a wait until the reply is there.
            unsafe {
                libc::sendto(p, req.as_ptr().cast(), 8, 0, to.as_ptr().cast(), 16);
                let mut pfd = libc::pollfd {
                    fd: p,
                    events: libc::POLLIN,
                    revents: 0,
                };
                assert_eq!(libc::poll(&mut pfd, 1, 5000), 1);
            }
        }),
        Some("tcp-md5") => common::refusal(|| {
            let l = sock(libc::AF_INET, libc::SOCK_STREAM);
            bind(l, &v4(0, lo));
            // SAFETY: listen has no memory effects.
            assert_eq!(unsafe { libc::listen(l, 1) }, 0);
            // struct tcp_md5sig: the peer's sockaddr_storage (128), flags, prefix length, key
            // length (u16), interface index (i32), key (80).
            let mut md5 = [0u8; 216];
            md5[..16].copy_from_slice(&v4(0, lo));
            let key = b"bgp-peer-key";
            md5[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
            md5[136..136 + key.len()].copy_from_slice(key);
            // SAFETY: a live buffer of the struct's size.
            let r = unsafe {
                libc::setsockopt(
                    l,
                    libc::IPPROTO_TCP,
                    14,
                    md5.as_ptr().cast(),
                    md5.len() as u32,
                )
            };
            assert_eq!(r, 0, "TCP_MD5SIG: {}", std::io::Error::last_os_error());
        }),
        Some("tcp-connected") => common::refusal(|| {
            let l = sock(libc::AF_INET, libc::SOCK_STREAM);
            bind(l, &v4(0, lo));
            // SAFETY: listen has no memory effects.
            assert_eq!(unsafe { libc::listen(l, 1) }, 0);
            let c = sock(libc::AF_INET, libc::SOCK_STREAM);
            connect(c, &name(l, false)).unwrap();
        }),
        _ => {}
    }

    let fresh_tcp = sock(libc::AF_INET, libc::SOCK_STREAM);
    setint(fresh_tcp, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    setint(fresh_tcp, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    setint(fresh_tcp, libc::SOL_SOCKET, libc::SO_SNDBUF, 32 * 1024);
    let sndbuf = getint(fresh_tcp, libc::SOL_SOCKET, libc::SO_SNDBUF);

    let bound_tcp = sock(libc::AF_INET, libc::SOCK_STREAM);
    setint(bound_tcp, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    bind(bound_tcp, &v4(0, lo));
    let bound_tcp_addr = name(bound_tcp, false);

    let receiver = sock(libc::AF_INET, libc::SOCK_DGRAM);
    bind(receiver, &v4(0, lo));
    setint(receiver, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    let receiver_addr = name(receiver, false);
    let sender = sock(libc::AF_INET, libc::SOCK_DGRAM);
    connect(sender, &receiver_addr).unwrap();
    let sender_addr = name(sender, false);

    let shut = sock(libc::AF_INET, libc::SOCK_DGRAM);
    bind(shut, &v4(0, lo));
    // SAFETY: shutdown has no memory effects.
    unsafe { libc::shutdown(shut, libc::SHUT_RD) };

    let group = v4(0, [239, 7, 7, 7]);
    let ssm = v4(0, [232, 1, 1, 1]);
    let mc = sock(libc::AF_INET, libc::SOCK_DGRAM);
    bind(mc, &v4(0, [0; 4]));
    setopt(
        mc,
        libc::IPPROTO_IP,
        42, /* MCAST_JOIN_GROUP */
        &group_req(&group),
    );
    // struct group_source_req: interface, padding, group, source.
    let mut gsr = group_req(&ssm);
    gsr.resize(8 + 2 * 128, 0);
    gsr[136..152].copy_from_slice(&v4(0, lo));
    setopt(
        mc,
        libc::IPPROTO_IP,
        46, /* MCAST_JOIN_SOURCE_GROUP */
        &gsr,
    );
    setint(mc, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 5);
    setint(mc, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 0);

    // A dual-stack socket joined to an IPv4 group (Java's default multicast socket, Node's udp6).
    let dual = sock(libc::AF_INET6, libc::SOCK_DGRAM);
    setint(dual, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
    setopt(
        dual,
        libc::IPPROTO_IP,
        42, /* MCAST_JOIN_GROUP */
        &group_req(&group),
    );

    let v6 = sock(libc::AF_INET6, libc::SOCK_DGRAM);
    setint(v6, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1);
    bind(v6, &v6_loopback());
    let v6_addr = name(v6, false);

    // SAFETY: socket has no memory effects.
    let icmp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    let icmp = (icmp >= 0).then_some(icmp);
    let icmp_id = icmp.map(|p| {
        // The replies' wait: SO_RCVTIMEO of 5 s.
        let tv = [5i64, 0];
        // SAFETY: a struct timeval's worth of bytes.
        let tv = unsafe { std::slice::from_raw_parts(tv.as_ptr().cast::<u8>(), 16) };
        setopt(p, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv);
        let id = ping(p, 1);
        assert!(id.is_some(), "no echo reply before the checkpoint");
        id
    });

    // SAFETY: socket has no memory effects.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    let raw = (raw >= 0).then_some(raw);
    // SAFETY: as above.
    let raw_icmp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    let raw_icmp = (raw_icmp >= 0).then_some(raw_icmp);
    if let (Some(r), Some(i)) = (raw, raw_icmp) {
        setint(r, libc::IPPROTO_IP, libc::IP_TTL, 32);
        setint(r, libc::IPPROTO_IP, libc::IP_FREEBIND, 1);
        // ICMP_FILTER: a mask of the ICMP types not to receive (here: echo requests).
        setint(i, libc::SOL_RAW, 1, 1 << 8);
    }

    common::checkpoint();
    let mut c = common::Checks::default();

    c.check(
        "a TCP socket never bound keeps its options and send buffer",
        getint(fresh_tcp, libc::IPPROTO_TCP, libc::TCP_NODELAY) == 1
            && getint(fresh_tcp, libc::SOL_SOCKET, libc::SO_KEEPALIVE) == 1
            && getint(fresh_tcp, libc::SOL_SOCKET, libc::SO_SNDBUF) == sndbuf
            && name(fresh_tcp, false) == v4(0, [0; 4]),
        format!(
            "sndbuf {} (was {sndbuf})",
            getint(fresh_tcp, libc::SOL_SOCKET, libc::SO_SNDBUF)
        ),
    );
    // SAFETY: listen has no memory effects.
    let listened = unsafe { libc::listen(bound_tcp, 1) } == 0;
    let probe = sock(libc::AF_INET, libc::SOCK_STREAM);
    c.check(
        "a bound TCP socket has its address and can listen and be connected to there",
        name(bound_tcp, false) == bound_tcp_addr
            && listened
            && connect(probe, &bound_tcp_addr).is_ok(),
        format!("{:?} vs {:?}", name(bound_tcp, false), bound_tcp_addr),
    );

    // SAFETY: a live 4-byte buffer.
    let sent = unsafe { libc::send(sender, b"ping".as_ptr().cast(), 4, 0) };
    let mut buf = [0u8; 16];
    let mut cmsg = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len();
    // SAFETY: `msg` points at live buffers of the sizes it names.
    let got = unsafe { libc::recvmsg(receiver, &mut msg, libc::MSG_DONTWAIT) };
    // SAFETY: the control buffer was filled by recvmsg; CMSG_FIRSTHDR reads within it.
    let first = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null header points into `cmsg`.
    let pktinfo = !first.is_null() && unsafe { (*first).cmsg_type } == libc::IP_PKTINFO;
    c.check(
        "a connected UDP socket sends to its peer, which gets IP_PKTINFO with it",
        sent == 4
            && got == 4
            && &buf[..4] == b"ping"
            && pktinfo
            && name(sender, true) == receiver_addr
            && name(sender, false) == sender_addr,
        format!("sent {sent}, got {got}, pktinfo {pktinfo}"),
    );

    // A datagram socket shut down for reading reports it to poll (its recv waits all the same).
    let mut p = libc::pollfd {
        fd: shut,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, 0) };
    c.check(
        "a UDP socket shut down for reading stays shut down",
        p.revents & libc::POLLRDHUP != 0,
        format!("poll answered {:#x}", p.revents),
    );

    let plain = filter(mc, &group);
    let specific = filter(mc, &ssm);
    c.check(
        "a UDP socket keeps its multicast groups, their source filters, TTL and loop",
        plain.as_ref().is_ok_and(|(m, s)| *m == 0 && s.is_empty())
            && specific
                .as_ref()
                .is_ok_and(|(m, s)| *m == 1 && s.len() == 1 && s[0] == v4(0, lo))
            && getint(mc, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL) == 5
            && getint(mc, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP) == 0
            && filter(mc, &v4(0, [239, 9, 9, 9])).is_err(),
        format!("{plain:?} {specific:?}"),
    );

    let dual_group = filter(dual, &group);
    c.check(
        "a dual-stack UDP socket keeps the IPv4 group it joined",
        dual_group
            .as_ref()
            .is_ok_and(|(m, s)| *m == 0 && s.is_empty()),
        format!("{dual_group:?}"),
    );

    match (raw, raw_icmp) {
        (Some(r), Some(i)) => c.check(
            "raw sockets keep their protocol, TTL, IP_FREEBIND and ICMP filter",
            getint(r, libc::SOL_SOCKET, libc::SO_TYPE) == libc::SOCK_RAW
                && getint(r, libc::SOL_SOCKET, libc::SO_PROTOCOL) == libc::IPPROTO_UDP
                && getint(r, libc::IPPROTO_IP, libc::IP_TTL) == 32
                && getint(r, libc::IPPROTO_IP, libc::IP_FREEBIND) == 1
                && getint(i, libc::SOL_SOCKET, libc::SO_PROTOCOL) == libc::IPPROTO_ICMP
                && getint(i, libc::SOL_RAW, 1) == 1 << 8,
            format!(
                "{} {} {}",
                getint(r, libc::IPPROTO_IP, libc::IP_TTL),
                getint(r, libc::IPPROTO_IP, libc::IP_FREEBIND),
                getint(i, libc::SOL_RAW, 1)
            ),
        ),
        _ => println!("note: no raw socket here (CAP_NET_RAW)"),
    }
    match icmp {
        Some(p) => {
            let again = ping(p, 2);
            c.check(
                "an ICMP echo socket keeps its identifier and gets its replies",
                again.is_some() && again == icmp_id.flatten(),
                format!("{again:?}, before {icmp_id:?}"),
            );
        }
        None => println!("note: no ICMP echo socket here (net.ipv4.ping_group_range)"),
    }
    c.check(
        "an IPv6-only UDP socket keeps its address",
        name(v6, false) == v6_addr && getint(v6, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) == 1,
        format!("{:?}", name(v6, false)),
    );
    c.finish();
}
