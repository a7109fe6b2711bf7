//! Internet sockets that carry no connection: TCP sockets made (and perhaps bound) but never
//! connected, and UDP, UDP-Lite, ICMP echo ("ping") and raw sockets, bound or not (a ping
//! socket's port is its echo identifier), connected to a default destination or not, shut down or not,
//! with the multicast groups they joined, and nothing queued.
//!
//! Such a socket holds no state the kernel keeps on behalf of a peer, so making it again with
//! the same family, type, protocol, options, local address, destination and group memberships
//! gives back the same socket. An established TCP connection comes back through repair mode
//! (see [`super::tcp`]); one being made, half closed or ended is refused by name, as is a datagram socket
//! with datagrams waiting to be read or sent (read them before the checkpoint) or with an error
//! waiting to be read (an ICMP error: which one, only reading it, and so taking it, tells).
//!
//! Group memberships cannot be listed per socket; the groups joined in the network namespace
//! can (/proc/net/igmp, /proc/net/igmp6), and `getsockopt(MCAST_MSFILTER)` answers for one
//! group whether this socket is a member, with its filter mode and sources.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::sockopts::SockOpt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetSocket {
    pub ino: u64,
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// SOCK_STREAM (TCP) or SOCK_DGRAM (UDP, UDP-Lite, ICMP echo).
    pub ty: i32,
    pub protocol: i32,
    /// The raw `struct sockaddr` it is bound to (explicitly, or by a datagram sent); empty: not
    /// bound.
    pub addr: Vec<u8>,
    /// A datagram socket's default destination (`connect`); empty: none.
    pub peer: Vec<u8>,
    /// `shutdown` of a datagram socket: bit 0 reading, bit 1 writing.
    pub shutdown: u8,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// IPV6_V6ONLY (AF_INET6 only).
    pub v6only: bool,
    pub groups: Vec<Membership>,
    /// Bound to an address this machine did not have (with IP_FREEBIND, turned off since):
    /// bound so again.
    pub nonlocal: bool,
    pub opts: Vec<SockOpt>,
}

/// One multicast group a datagram socket joined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The interface, by name: its index may differ on another machine.
    pub device: String,
    /// The group's raw `struct sockaddr_in` or `sockaddr_in6`.
    pub group: Vec<u8>,
    /// MCAST_INCLUDE (1) or MCAST_EXCLUDE (0): with no sources, exclude is a plain join.
    pub fmode: u32,
    /// Source addresses (raw sockaddrs) of a source-specific filter.
    pub sources: Vec<Vec<u8>>,
}

/// The most source addresses of one group's filter kept in an image.
pub const MAX_SOURCES: usize = 64;
/// The most groups one socket may join in an image.
pub const MAX_GROUPS: usize = 256;

const TCP_CLOSE: u8 = 7;
const MCAST_JOIN_GROUP: i32 = 42;
const MCAST_MSFILTER: i32 = 48;
/// `struct group_filter` up to its source list: interface (4), padding (4), group (128), mode
/// (4), number of sources (4).
const GROUP_FILTER_HEAD: usize = 144;
const SOCKADDR_STORAGE: usize = 128;

/// The length of a sockaddr of `family`.
pub fn addr_len(family: i32) -> usize {
    if family == libc::AF_INET6 {
        28
    } else {
        16
    }
}

/// Whether `addr` (of its family) names a port or an address, i.e. the socket is bound.
fn is_bound(addr: &[u8]) -> bool {
    let port = addr.get(2..4).is_some_and(|p| p != [0, 0]);
    let ip = match addr.len() {
        16 => &addr[4..8],
        28 => &addr[8..24],
        _ => &[][..],
    };
    port || ip.iter().any(|&b| b != 0)
}

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "unknown",
    }
}

/// An ICMP echo ("ping") socket: a datagram socket that sends echo requests and reads the
/// replies, its bound "port" the echo identifier.
fn is_ping(family: i32, ty: i32, protocol: i32) -> bool {
    ty == libc::SOCK_DGRAM
        && (family == libc::AF_INET && protocol == libc::IPPROTO_ICMP
            || family == libc::AF_INET6 && protocol == libc::IPPROTO_ICMPV6)
}

/// What NETLINK_SOCK_DIAG says about one datagram socket: (bytes to read, bytes to send,
/// shutdown bits).
fn datagram_diag(family: i32, protocol: i32, ino: u64) -> Result<(u32, u32, u8), String> {
    use super::sockets::{diag_attr, u32_at};
    let msgs = super::sockets::inet_diag(family, protocol, u32::MAX, 0)
        .map_err(|e| format!("cannot ask the kernel about this socket (sock_diag): {e}"))?;
    let (_, msg) = msgs
        .into_iter()
        .find(|(i, _)| *i == ino)
        .ok_or("the kernel does not describe this socket (sock_diag)")?;
    // INET_DIAG_SHUTDOWN (8) is one byte.
    let shutdown = diag_attr(&msg, 8)
        .and_then(|a| a.first().copied())
        .unwrap_or(0);
    Ok((u32_at(&msg, 56), u32_at(&msg, 60), shutdown))
}

/// Multicast groups joined in this network namespace: (interface index, name, group sockaddr).
fn joined_groups(family: i32) -> Vec<(u32, String, Vec<u8>)> {
    let mut out = Vec::new();
    if family == libc::AF_INET {
        let text = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
        let mut dev: Option<(u32, String)> = None;
        for line in text.lines().skip(1) {
            if !line.starts_with('\t') {
                // "1\tlo        :     1      V3"
                let mut it = line.split_whitespace();
                let idx = it.next().and_then(|i| i.parse().ok());
                let name = it.next().map(str::to_owned);
                dev = idx.zip(name);
            } else if let Some((idx, name)) = &dev {
                // "\t\t\t\t010000E0     1 0:00000000\t\t0": the group as a host-order number
                let Some(g) = line.split_whitespace().next() else {
                    continue;
                };
                let Ok(v) = u32::from_str_radix(g, 16) else {
                    continue;
                };
                let mut a = vec![0u8; 16];
                a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                a[4..8].copy_from_slice(&v.to_le_bytes());
                out.push((*idx, name.clone(), a));
            }
        }
    } else {
        let text = std::fs::read_to_string("/proc/net/igmp6").unwrap_or_default();
        for line in text.lines() {
            // "1    lo    ff020000000000000000000000000001     1 0000000C 0"
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(idx), Some(name), Some(hex)) = (f.first(), f.get(1), f.get(2)) else {
                continue;
            };
            let (Ok(idx), true) = (idx.parse::<u32>(), hex.len() == 32) else {
                continue;
            };
            let Ok(bytes) = (0..16)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
            else {
                continue;
            };
            let mut a = vec![0u8; 28];
            a[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            a[8..24].copy_from_slice(&bytes);
            out.push((idx, (*name).to_owned(), a));
        }
    }
    out
}

fn level(family: i32) -> i32 {
    if family == libc::AF_INET6 {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IP
    }
}

/// The family of a raw sockaddr.
pub(crate) fn family_of(addr: &[u8]) -> i32 {
    addr.get(..2)
        .map_or(0, |f| i32::from(u16::from_ne_bytes([f[0], f[1]])))
}

/// The groups socket `fd` joined, with their filters. An AF_INET6 socket may have joined IPv4
/// groups too (at the IP level: Java's default datagram channels and multicast sockets are
/// AF_INET6, and Node's udp6 sockets), each kept at its own family's level.
fn memberships(fd: i32, family: i32) -> Result<Vec<Membership>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; GROUP_FILTER_HEAD + SOCKADDR_STORAGE * (MAX_SOURCES + 1)];
    let mut joined = joined_groups(family);
    if family == libc::AF_INET6 {
        joined.extend(joined_groups(libc::AF_INET));
    }
    for (idx, device, group) in joined {
        let family = family_of(&group);
        buf.fill(0);
        buf[..4].copy_from_slice(&idx.to_ne_bytes());
        buf[8..8 + group.len()].copy_from_slice(&group);
        buf[140..144].copy_from_slice(&((MAX_SOURCES + 1) as u32).to_ne_bytes());
        // EADDRNOTAVAIL: this socket is not a member of that group on that interface.
        if crate::sys::getsockopt_into(fd, level(family), MCAST_MSFILTER, &mut buf).is_err() {
            continue;
        }
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4"));
        let (fmode, n) = (u32_at(136), u32_at(140) as usize);
        if n > MAX_SOURCES {
            return Err(format!(
                "multicast group {} on {device} filters {n} sources; thaw keeps at most {MAX_SOURCES}",
                super::sockets::describe(&group)
            ));
        }
        let sources = (0..n)
            .map(|i| {
                let at = GROUP_FILTER_HEAD + i * SOCKADDR_STORAGE;
                buf[at..at + addr_len(family)].to_vec()
            })
            .collect();
        out.push(Membership {
            device,
            group,
            fmode,
            sources,
        });
        if out.len() > MAX_GROUPS {
            return Err(format!("it joined more than {MAX_GROUPS} multicast groups"));
        }
    }
    Ok(out)
}

/// Describes the AF_INET/AF_INET6 socket `fd` (inode `ino`) for the image, or says why it is
/// not restored.
pub(crate) fn dump(
    fd: i32,
    ino: u64,
    family: i32,
    ty: i32,
    protocol: i32,
) -> Result<InetSocket, String> {
    let fam = if family == libc::AF_INET6 {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let stream = ty == libc::SOCK_STREAM && protocol == libc::IPPROTO_TCP;
    // Neither ICMP echo nor raw sockets are in a table the kernel describes.
    let undescribed = is_ping(family, ty, protocol) || ty == libc::SOCK_RAW;
    let datagram = undescribed
        || ty == libc::SOCK_DGRAM
            && (protocol == libc::IPPROTO_UDP || protocol == libc::IPPROTO_UDPLITE);
    if !stream && !datagram {
        return Err(format!(
            "{fam} sockets other than TCP, UDP, UDP-Lite, ICMP echo and raw ones (type {ty}, protocol {protocol}) are not supported"
        ));
    }
    let mut s = InetSocket {
        ino,
        family,
        ty,
        protocol,
        ..Default::default()
    };
    let addr = crate::sys::getsockname(fd).map_err(|e| format!("getsockname: {e}"))?;
    if stream {
        // struct tcp_info: the state is its first byte, tcpi_segs_out a u32 at 136.
        let mut info = [0u8; 232];
        let n = crate::sys::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
            .map_err(|e| format!("cannot read its TCP state: {e}"))?;
        if info[0] != TCP_CLOSE {
            // Which connection: its two ends (a server's accepted client, or one of the process's
            // own clients: an HTTP pool, a database).
            let ends = match crate::sys::getpeername(fd) {
                Ok(peer) => format!(
                    " {} to {}",
                    super::sockets::describe(&addr),
                    super::sockets::describe(&peer)
                ),
                // (No peer yet: a connection being made, SYN_SENT.)
                Err(_) if is_bound(&addr) => {
                    format!(" {}, connecting", super::sockets::describe(&addr))
                }
                Err(_) => String::new(),
            };
            return Err(format!(
                "a TCP connection ({}{ends}) is not restored: close it before the checkpoint and connect again after (an idle keep-alive connection of an HTTP client's pool is one too: close the client or send the last request with `Connection: close`; Node's fetch keeps its pool in undici's global dispatcher: install your own with npm undici's setGlobalDispatcher and destroy() it in a beforeCheckpoint hook (close() finishes later, after the checkpoint); Java's HttpURLConnection keeps them for reuse: -Dhttp.keepAlive=false, and its HttpClient (no close() before JDK 21) keeps them while it lives: leave the pooled connections out with -Dthaw.fdPolicy=socket=drop (THAW_FD_POLICY=socket=drop), which either client connects again after; a server's client connections: close them, e.g. Node's server.closeAllConnections(), which leaves out upgraded ones such as WebSockets)",
                tcp_state_name(info[0])
            ));
        }
        if n >= 140 && u32::from_ne_bytes(info[136..140].try_into().expect("4")) != 0 {
            return Err(
                "a TCP socket whose connection ended (or failed) is not restored: it would come back as a fresh socket; close it before the checkpoint".into(),
            );
        }
    } else {
        // A socket never bound is in no table the kernel describes either, and can have nothing
        // queued. For those, poll tells the shutdown (but a shutdown for writing alone) and,
        // for ICMP echo and raw sockets, whether something waits to be read (SIOCINQ does not
        // answer for ICMP echo sockets; a shut-down one reads as readable, refused alike).
        let (rqueue, wqueue, shutdown) = if undescribed || !is_bound(&addr) {
            let ev = crate::sys::poll_now(fd, libc::POLLIN | libc::POLLRDHUP).unwrap_or(0);
            let shut = if ev & libc::POLLHUP != 0 {
                3
            } else {
                u8::from(ev & libc::POLLRDHUP != 0)
            };
            let waiting = undescribed && ev & libc::POLLIN != 0;
            (u32::from(waiting), 0, shut)
        } else {
            datagram_diag(family, protocol, ino)?
        };
        if rqueue > 0 && undescribed {
            return Err("a reply or packet (or end of file) waits to be read, which thaw does not restore: read it before the checkpoint".into());
        }
        if rqueue > 0 {
            return Err(format!(
                "datagrams wait to be read ({rqueue} bytes of the socket's receive memory), which thaw does not restore: read them before the checkpoint"
            ));
        }
        if wqueue > 0 {
            return Err(
                "datagrams wait to be sent (UDP_CORK), which thaw does not restore: send them before the checkpoint".into(),
            );
        }
        s.shutdown = shutdown & 3;
        s.peer = crate::sys::getpeername(fd).unwrap_or_default();
        s.groups = memberships(fd, family)?;
    }
    // An error waiting to be read (SO_ERROR): what an ICMP error for a datagram sent leaves on a
    // connected socket (ECONNREFUSED: nothing listens at the destination's port; EHOSTUNREACH,
    // …). Poll shows that one waits; only reading it says which, and reading it takes it from
    // the process, as a socket made again could not get it back.
    if crate::sys::poll_now(fd, 0).is_ok_and(|ev| ev & libc::POLLERR != 0) {
        let to = if s.peer.is_empty() {
            String::new()
        } else {
            format!(" (connected to {})", super::sockets::describe(&s.peer))
        };
        return Err(format!(
            "an error waits to be read on this socket{to}, most likely from an ICMP message for a datagram it sent (ECONNREFUSED when nothing listens at the destination's port), which thaw cannot read without taking it from the process, nor give a socket made again: let the process read it before the checkpoint (a receive or getsockopt(SO_ERROR) returns it; an event loop does on its next turn: Node emits the socket's 'error' event), or close the socket"
        ));
    }
    if is_bound(&addr) {
        s.nonlocal = !is_local(family, &addr);
        s.addr = addr;
    }
    let opt = |level, o| crate::sys::getsockopt_int(fd, level, o).unwrap_or(0) != 0;
    s.reuseaddr = opt(libc::SOL_SOCKET, libc::SO_REUSEADDR);
    s.reuseport = opt(libc::SOL_SOCKET, libc::SO_REUSEPORT);
    s.v6only = family == libc::AF_INET6 && opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
    s.opts = super::sockopts::dump(fd, family, ty, protocol)?;
    Ok(s)
}

impl InetSocket {
    /// A description for messages: "UDP socket 0.0.0.0:5353".
    pub fn describe(&self) -> String {
        let proto = match (self.ty, self.protocol) {
            (libc::SOCK_STREAM, _) => "TCP",
            (_, libc::IPPROTO_UDPLITE) => "UDP-Lite",
            (libc::SOCK_RAW, _) => "raw IP",
            (_, libc::IPPROTO_ICMP) => "ICMP echo",
            (_, libc::IPPROTO_ICMPV6) => "ICMPv6 echo",
            _ => "UDP",
        };
        if self.addr.is_empty() {
            format!("{proto} socket:[{}]", self.ino)
        } else {
            format!("{proto} socket {}", super::sockets::describe(&self.addr))
        }
    }

    /// Makes the socket again: options, address, destination, groups, shutdown.
    pub fn make(&self) -> Result<OwnedFd, String> {
        let what = self.describe();
        let sock = crate::sys::socket(self.family, self.ty, self.protocol).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) && self.ty == libc::SOCK_RAW {
                format!("{what}: cannot create it: {e} (a raw socket needs CAP_NET_RAW)")
            } else if e.raw_os_error() == Some(libc::EACCES) {
                format!("{what}: cannot create it: {e} (an ICMP echo socket needs a group of yours in sysctl net.ipv4.ping_group_range)")
            } else {
                format!("{what}: cannot create it: {e}")
            }
        })?;
        let fd = sock.as_raw_fd();
        let set = |level, opt, v: bool, name: &str| {
            crate::sys::setsockopt_int(fd, level, opt, i32::from(v))
                .map_err(|e| format!("{what}: cannot set {name}: {e}"))
        };
        if self.reuseaddr {
            set(libc::SOL_SOCKET, libc::SO_REUSEADDR, true, "SO_REUSEADDR")?;
        }
        if self.reuseport {
            set(libc::SOL_SOCKET, libc::SO_REUSEPORT, true, "SO_REUSEPORT")?;
        }
        // (A raw IPv6 socket has no such option.)
        if self.family == libc::AF_INET6 && self.ty != libc::SOCK_RAW {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                self.v6only,
                "IPV6_V6ONLY",
            )?;
        }
        // Before bind: IP_FREEBIND, IP_TRANSPARENT and SO_BINDTODEVICE decide what it may bind to.
        super::sockopts::apply(fd, &self.opts, &what)?;
        if !self.addr.is_empty() {
            bind_freely(fd, self.family, &self.addr, self.nonlocal).map_err(|e| {
                if e.raw_os_error() == Some(libc::EADDRINUSE) {
                    format!("{what}: the address is in use (stop what holds it)")
                } else {
                    format!("{what}: cannot bind: {e}")
                }
            })?;
        }
        if !self.peer.is_empty() {
            crate::sys::connect(fd, &self.peer).map_err(|e| {
                format!(
                    "{what}: cannot connect it to {} again: {e}",
                    super::sockets::describe(&self.peer)
                )
            })?;
        }
        for g in &self.groups {
            join(fd, g).map_err(|e| {
                format!(
                    "{what}: cannot join multicast group {} on {} again: {e}",
                    super::sockets::describe(&g.group),
                    g.device
                )
            })?;
        }
        for (bit, how) in [(1, libc::SHUT_RD), (2, libc::SHUT_WR)] {
            if self.shutdown & bit != 0 {
                // An unconnected datagram socket answers ENOTCONN, and is shut down all the same.
                match crate::sys::shutdown(fd, how) {
                    Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => {
                        return Err(format!("{what}: cannot shut it down: {e}"))
                    }
                    _ => {}
                }
            }
        }
        Ok(sock)
    }
}

/// Whether this machine has the address `addr` names (a datagram socket may bind to it, port 0).
fn is_local(family: i32, addr: &[u8]) -> bool {
    let Ok(probe) = crate::sys::socket(family, libc::SOCK_DGRAM, 0) else {
        return true;
    };
    let mut any_port = addr.to_vec();
    any_port[2..4].fill(0);
    !crate::sys::bind(probe.as_raw_fd(), &any_port)
        .is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
}

/// Binds `fd` to `addr`. A socket the first life had bound to an address its machine did not
/// have (`nonlocal`: with IP_FREEBIND, turned off since) is bound with it for the moment, then
/// the option as it was; any other address must be on this machine.
fn bind_freely(fd: i32, family: i32, addr: &[u8], nonlocal: bool) -> std::io::Result<()> {
    match crate::sys::bind(fd, addr) {
        Err(e) if nonlocal && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            let (lvl, opt) = if family == libc::AF_INET6 {
                (libc::IPPROTO_IPV6, 78) // IPV6_FREEBIND
            } else {
                (libc::IPPROTO_IP, libc::IP_FREEBIND)
            };
            let was = crate::sys::getsockopt_int(fd, lvl, opt)?;
            if was != 0 {
                return Err(e);
            }
            crate::sys::setsockopt_int(fd, lvl, opt, 1)?;
            let r = crate::sys::bind(fd, addr);
            crate::sys::setsockopt_int(fd, lvl, opt, 0)?;
            r
        }
        r => r,
    }
}

/// Joins group `g` on socket `fd` and sets its source filter (at the level of the group's
/// family: an AF_INET6 socket may have joined IPv4 groups).
fn join(fd: i32, g: &Membership) -> std::io::Result<()> {
    let family = family_of(&g.group);
    let index = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", g.device))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| std::io::Error::other(format!("no interface {} here", g.device)))?;
    // struct group_req { u32 interface; (4 padding) struct sockaddr_storage group; }
    let mut req = vec![0u8; 8 + SOCKADDR_STORAGE];
    req[..4].copy_from_slice(&index.to_ne_bytes());
    req[8..8 + g.group.len()].copy_from_slice(&g.group);
    crate::sys::setsockopt_bytes(fd, level(family), MCAST_JOIN_GROUP, &req)?;
    if g.fmode == 0 && g.sources.is_empty() {
        return Ok(());
    }
    let mut f = vec![0u8; GROUP_FILTER_HEAD + SOCKADDR_STORAGE * g.sources.len().max(1)];
    f[..4].copy_from_slice(&index.to_ne_bytes());
    f[8..8 + g.group.len()].copy_from_slice(&g.group);
    f[136..140].copy_from_slice(&g.fmode.to_ne_bytes());
    f[140..144].copy_from_slice(&(g.sources.len() as u32).to_ne_bytes());
    for (i, s) in g.sources.iter().enumerate() {
        let at = GROUP_FILTER_HEAD + i * SOCKADDR_STORAGE;
        f[at..at + s.len()].copy_from_slice(s);
    }
    crate::sys::setsockopt_bytes(fd, level(family), MCAST_MSFILTER, &f)
}

/// Checks a socket from an image before anything is made of it: an image names only these
/// kinds, well-formed addresses and sane interface names.
pub fn validate(s: &InetSocket) -> Result<(), String> {
    let kinds = [
        (libc::SOCK_STREAM, libc::IPPROTO_TCP),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE),
    ];
    if !(s.family == libc::AF_INET || s.family == libc::AF_INET6)
        || !(kinds.contains(&(s.ty, s.protocol))
            || is_ping(s.family, s.ty, s.protocol)
            || s.ty == libc::SOCK_RAW && (0..=255).contains(&s.protocol))
    {
        return Err(format!(
            "socket:[{}]: family {}, type {}, protocol {} is not one thaw restores",
            s.ino, s.family, s.ty, s.protocol
        ));
    }
    let addr_ok = |a: &[u8]| {
        a.len() == addr_len(s.family) && i32::from(u16::from_ne_bytes([a[0], a[1]])) == s.family
    };
    let stream = s.ty == libc::SOCK_STREAM;
    if (!s.addr.is_empty() && !addr_ok(&s.addr))
        || (!s.peer.is_empty() && (stream || !addr_ok(&s.peer)))
        || s.shutdown > 3
        || (stream && (s.shutdown != 0 || !s.groups.is_empty()))
        || s.groups.len() > MAX_GROUPS
    {
        return Err(format!("socket:[{}]: malformed internet socket", s.ino));
    }
    for g in &s.groups {
        let dev_ok = !g.device.is_empty()
            && g.device.len() < 16
            && g.device != "."
            && g.device != ".."
            && !g.device.contains(['/', '\0']);
        // A group of the socket's family, or an IPv4 group an AF_INET6 socket joined; its
        // sources of the group's family.
        let family = family_of(&g.group);
        let of_group = |a: &[u8]| a.len() == addr_len(family) && family_of(a) == family;
        let group_ok = addr_ok(&g.group)
            || s.family == libc::AF_INET6 && family == libc::AF_INET && of_group(&g.group);
        if !dev_ok
            || !group_ok
            || g.fmode > 1
            || g.sources.len() > MAX_SOURCES
            || !g.sources.iter().all(|a| of_group(a))
        {
            return Err(format!(
                "socket:[{}]: malformed multicast membership",
                s.ino
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::ino_of as ino;

    fn v4(port: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn a_bound_connected_udp_socket_comes_back_the_same() {
        let s = crate::sys::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP).unwrap();
        let fd = s.as_raw_fd();
        crate::sys::bind(fd, &v4(0, [127, 0, 0, 1])).unwrap();
        crate::sys::connect(fd, &v4(9, [127, 0, 0, 1])).unwrap();
        crate::sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, 7).unwrap();
        crate::sys::shutdown(fd, libc::SHUT_RD).unwrap();
        let d = dump(
            fd,
            ino(&s),
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
        )
        .unwrap();
        validate(&d).unwrap();
        assert_eq!(d.peer, v4(9, [127, 0, 0, 1]));
        assert_eq!(d.shutdown, 1);
        let bound = d.addr.clone();
        drop(s);
        let t = d.make().unwrap();
        let again = dump(
            t.as_raw_fd(),
            ino(&t),
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
        )
        .unwrap();
        assert_eq!(again.addr, bound);
        assert_eq!(
            (again.peer, again.shutdown, again.opts),
            (d.peer, 1, d.opts)
        );
    }

    #[test]
    fn queued_datagrams_and_tcp_connections_are_refused_by_name() {
        let s = crate::sys::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP).unwrap();
        crate::sys::bind(s.as_raw_fd(), &v4(0, [127, 0, 0, 1])).unwrap();
        let me = crate::sys::getsockname(s.as_raw_fd()).unwrap();
        crate::sys::connect(s.as_raw_fd(), &me).unwrap();
        crate::sys::send_nowait(s.as_raw_fd(), b"hello").unwrap();
        let e = dump(
            s.as_raw_fd(),
            ino(&s),
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
        )
        .unwrap_err();
        assert!(e.contains("wait to be read"), "{e}");

        let l = crate::sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        crate::sys::bind(l.as_raw_fd(), &v4(0, [127, 0, 0, 1])).unwrap();
        crate::sys::listen(l.as_raw_fd(), 1).unwrap();
        let c = crate::sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        crate::sys::connect(
            c.as_raw_fd(),
            &crate::sys::getsockname(l.as_raw_fd()).unwrap(),
        )
        .unwrap();
        let e = dump(
            c.as_raw_fd(),
            ino(&c),
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
        )
        .unwrap_err();
        assert!(e.contains("ESTABLISHED"), "{e}");
        let fresh = crate::sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let d = dump(
            fresh.as_raw_fd(),
            ino(&fresh),
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_TCP,
        )
        .unwrap();
        assert!(d.addr.is_empty());
    }

    #[test]
    fn an_error_waiting_is_refused_by_name_and_left_to_the_process() {
        // A port nothing listens at: the ICMP port unreachable leaves ECONNREFUSED.
        let gone = crate::sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        crate::sys::bind(gone.as_raw_fd(), &v4(0, [127, 0, 0, 1])).unwrap();
        let closed = crate::sys::getsockname(gone.as_raw_fd()).unwrap();
        drop(gone);
        let s = crate::sys::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP).unwrap();
        crate::sys::connect(s.as_raw_fd(), &closed).unwrap();
        crate::sys::send_nowait(s.as_raw_fd(), b"x").unwrap();
        let waiting =
            || crate::sys::poll_now(s.as_raw_fd(), 0).is_ok_and(|ev| ev & libc::POLLERR != 0);
        for _ in 0..500 {
            if waiting() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = dump(
            s.as_raw_fd(),
            ino(&s),
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDP,
        )
        .unwrap_err();
        assert!(e.contains("an error waits to be read"), "{e}");
        assert_eq!(
            crate::sys::getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR).unwrap(),
            libc::ECONNREFUSED,
            "the process still has it"
        );
    }

    #[test]
    fn hostile_images_are_refused() {
        let good = InetSocket {
            family: libc::AF_INET,
            ty: libc::SOCK_DGRAM,
            protocol: libc::IPPROTO_UDP,
            addr: v4(53, [0; 4]),
            ..Default::default()
        };
        validate(&good).unwrap();
        let mut raw = good.clone();
        raw.ty = libc::SOCK_RAW;
        validate(&raw).unwrap();
        raw.protocol = 300;
        assert!(validate(&raw).is_err(), "no such IP protocol");
        let mut seq = good.clone();
        seq.ty = libc::SOCK_SEQPACKET;
        assert!(validate(&seq).is_err());
        let mut short = good.clone();
        short.addr.truncate(8);
        assert!(validate(&short).is_err());
        let mut dev = good.clone();
        dev.groups.push(Membership {
            device: "../../x".into(),
            group: v4(0, [224, 0, 0, 251]),
            ..Default::default()
        });
        assert!(validate(&dev).is_err());
    }
}
