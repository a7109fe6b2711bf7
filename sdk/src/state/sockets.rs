//! Sockets: AF_UNIX socket pairs whose ends are all in the process (including a pair whose other
//! end was closed, like the JDK's "pre-close" descriptor), and listening sockets (TCP, AF_UNIX).
//!
//! A pair is recreated with `socketpair`, its queued bytes written back from the other end, its
//! shutdown state reapplied and, for a half-closed pair, the other end closed again (a byte left
//! in it first where the kernel had marked the kept end reset: ECONNRESET). A listening
//! socket is recreated, given its options, bound to its address and listened on with its backlog;
//! or the caller hands one in (`thaw run --listen-fd`, or systemd's `LISTEN_FDS`), so that many
//! instances can share one port. Sockets connected to other processes are refused by name.
//!
//! The kernel is asked through NETLINK_SOCK_DIAG (peer, shutdown state, backlog): the only way to
//! learn which socket is the other end of an AF_UNIX connection.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::PayloadRef;
use crate::fd_policy::FdClass;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Socket {
    /// One end of an AF_UNIX pair. Descriptors of one socket share `ino`; the two ends of a pair
    /// share `pair` (the smaller inode of the two).
    Pair(PairEnd),
    Listener(Listener),
    /// An AF_UNIX socket neither bound nor connected (made, not used yet): made again.
    Unconnected(Unconnected),
    /// An AF_UNIX socket bound to an address (a datagram receiver), and/or a datagram socket
    /// connected to a named one (a syslog client), nothing queued: made, bound and connected
    /// again.
    Bound(Bound),
    /// An AF_INET/AF_INET6 socket without a connection: a TCP socket never connected, or a UDP
    /// socket (see [`super::inet`]).
    Inet(super::inet::InetSocket),
    /// An AF_UNIX socket that connected to a listener of this process, its connection not
    /// accepted yet: connected again, in its place in the listener's queue.
    Connecting(Connecting),
    /// An AF_NETLINK socket with nothing to read (see [`super::netlink`]).
    Netlink(super::netlink::NetlinkSocket),
    /// An ESTABLISHED TCP connection, through repair mode (see [`super::tcp`]).
    Tcp(super::tcp::TcpConnection),
}

impl Socket {
    pub fn ino(&self) -> u64 {
        match self {
            Socket::Pair(p) => p.ino,
            Socket::Listener(l) => l.ino,
            Socket::Unconnected(u) => u.ino,
            Socket::Bound(b) => b.sock.ino,
            Socket::Inet(i) => i.ino,
            Socket::Connecting(c) => c.sock.ino,
            Socket::Netlink(n) => n.ino,
            Socket::Tcp(t) => t.ino,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    pub sock: Unconnected,
    /// The raw `struct sockaddr_un` it is bound to.
    pub addr: Vec<u8>,
    /// Its socket file's identity (path addresses; device and inode, as `file_id` gives them): a
    /// file left at that path by the first life is recognised as stale and replaced. 0: none.
    pub path_id: u64,
    /// A datagram socket's default destination (`connect`), by address: a named socket of this
    /// process or another (glibc's `syslog` keeps one connected to /dev/log). Empty: none.
    pub peer: Vec<u8>,
    /// Its socket file was removed after it was bound: bound again, then the file removed.
    pub unlinked: bool,
    /// Its socket file was renamed after it was bound (HotSpot's attach listener binds
    /// `.java_pid<pid>.tmp` and renames it): bound again, then renamed to this path. Empty: not.
    pub moved_to: String,
    /// For a relative path: the directory it names a file in (the working directory at the
    /// checkpoint, where the file was found); bound again from there, by the same relative name.
    pub dir: String,
    /// Its socket file's permissions and owner (a path it still has its file at).
    pub file: Option<SocketFile>,
    /// A datagram receiver's queued messages (from senders without a name), one after the
    /// other; sent to it again from a socket without a name once it is bound.
    pub queued: Option<PayloadRef>,
    /// Their lengths.
    pub messages: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connecting {
    pub sock: Unconnected,
    /// The listener (its inode) whose queue its connection waits in.
    pub listener: u64,
    /// It shut down its sending side (the accepted socket will read end of file).
    pub send_shutdown: bool,
}

/// The permissions and owner of a socket's file (a path address): who may connect to it. A
/// server that opens its socket to a group (chmod, chown) has it so again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketFile {
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Its owner where the process had given it another than its own (see
    /// [`crate::sys::foreign_owner`]); else it is the restoring process's, as it was the first's.
    pub owner: Option<(u32, u32)>,
}

impl SocketFile {
    /// Of the socket file at `addr`'s path (relative to `dir`, where not empty).
    fn of(addr: &[u8], dir: &str) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(std::path::Path::new(dir).join(sun_path(addr))).ok()?;
        Some(SocketFile {
            mode: m.mode() & 0o7777,
            owner: crate::sys::foreign_owner(m.uid(), m.gid()),
        })
    }

    /// Gives the socket file at `addr` (just bound, in the current directory for a relative
    /// one) these permissions and owner.
    fn apply(&self, addr: &[u8]) -> std::io::Result<()> {
        let path = sun_path(addr);
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot give its socket file its owner back ({uid}:{gid}): {e}"),
                )
            })?;
        }
        crate::sys::chmod_nofollow(path, self.mode)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconnected {
    pub ino: u64,
    pub ty: i32,
    pub sndbuf: i32,
    pub rcvbuf: i32,
    pub passcred: bool,
    pub opts: Vec<super::sockopts::SockOpt>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairEnd {
    pub ino: u64,
    pub pair: u64,
    /// SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM.
    pub ty: i32,
    /// The other end is still open in the process (else it was closed: a half-closed pair).
    pub peer_open: bool,
    /// This end can no longer send (shutdown(SHUT_WR) here or SHUT_RD at the other end).
    pub send_shutdown: bool,
    /// Shut down for reading: for a datagram end this lives in that end alone (its peer's sends
    /// fail with EPIPE); for a stream it mirrors the peer's send shutdown.
    pub recv_shutdown: bool,
    /// Bytes waiting in this end's receive queue (stream pairs only).
    pub queued: Option<PayloadRef>,
    /// A message-based socket (datagram, seqpacket): the lengths of the messages in `queued`.
    pub messages: Vec<u32>,
    /// The descriptors each of `messages` carries (SCM_RIGHTS), by the numbers of their
    /// in-flight entries ([`super::files::FdEntry::in_flight`]); empty when none carries any.
    pub message_fds: Vec<Vec<i32>>,
    /// This end was accepted from the process's listener with this inode (it has the
    /// listener's name, its other end connected to it): made again by connecting to that
    /// listener and accepting. 0: a pair made by `socketpair`.
    pub accepted_from: u64,
    /// A stream end whose other end was closed while bytes this end had sent were unread there:
    /// the kernel marked it reset, and the next read after its queued bytes fails with
    /// `ECONNRESET` (once; then end of file). Made again so: a byte is sent into the other end
    /// before that end is closed again.
    pub reset: bool,
    pub sndbuf: i32,
    pub rcvbuf: i32,
    pub passcred: bool,
    pub opts: Vec<super::sockopts::SockOpt>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub ino: u64,
    pub family: i32,
    pub ty: i32,
    pub protocol: i32,
    /// The raw `struct sockaddr` it is bound to.
    pub addr: Vec<u8>,
    pub backlog: i32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// IPV6_V6ONLY (AF_INET6 only).
    pub v6only: bool,
    /// Its socket file's identity (AF_UNIX path addresses; see [`Bound::path_id`]).
    pub path_id: u64,
    /// Its socket file was removed after it was bound (see [`Bound::unlinked`]).
    pub unlinked: bool,
    /// See [`Bound::moved_to`].
    pub moved_to: String,
    /// See [`Bound::dir`].
    pub dir: String,
    /// See [`Bound::file`].
    pub file: Option<SocketFile>,
    /// Connections waiting to be accepted (AF_UNIX), in the order `accept` takes them: the
    /// inode of the process's socket that connected.
    pub pending: Vec<u64>,
    pub opts: Vec<super::sockopts::SockOpt>,
}

const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;

/// What NETLINK_SOCK_DIAG says about one AF_UNIX socket.
#[derive(Debug, Default, Clone)]
struct UnixDiag {
    /// TCP_CLOSE (7) for a socket never connected, TCP_ESTABLISHED (1) for a connected one (its
    /// peer may be gone, or be a connection not accepted yet, which has no inode), TCP_LISTEN.
    state: u8,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    ty: u8,
    peer: u64,
    shutdown: u8,
    rqueue: u32,
    wqueue: u32,
    name: Option<Vec<u8>>,
    /// The file a path-bound socket is bound to, as [`file_id`] gives it (UNIX_DIAG_VFS).
    vfs_id: Option<u64>,
    /// A listener's connections waiting to be accepted, in queue order, each as the inode of the
    /// socket that connected (0: closed since) (UNIX_DIAG_ICONS).
    icons: Vec<u64>,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UNIX_DIAG_ICONS: u16 = 3;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
const TCP_LISTEN: u8 = 10;
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;

pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().expect("4")))
}

/// Every AF_UNIX socket's peer (0: none), by inode, as the kernel lists them now.
pub(crate) fn unix_peers() -> std::io::Result<BTreeMap<u64, u64>> {
    Ok(unix_diag()?
        .into_iter()
        .map(|(ino, d)| (ino, d.peer))
        .collect())
}

/// Every AF_UNIX socket of this network namespace, by inode.
fn unix_diag() -> std::io::Result<BTreeMap<u64, UnixDiag>> {
    // struct unix_diag_req { u8 family, protocol; u16 pad; u32 states, ino, show; u32 cookie[2] }
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(
        &(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN)
            .to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]);
    let mut out = BTreeMap::new();
    for msg in crate::sys::sock_diag(SOCK_DIAG_BY_FAMILY, &req)? {
        // struct unix_diag_msg { u8 family, type, state, pad; u32 ino; u32 cookie[2] }
        if msg.len() < 16 {
            continue;
        }
        let ino = u64::from(u32_at(&msg, 4));
        let mut d = UnixDiag {
            state: msg[2],
            ty: msg[1],
            ..UnixDiag::default()
        };
        let mut at = 16;
        while at + 4 <= msg.len() {
            let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
            let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
            if len < 4 || at + len > msg.len() {
                break;
            }
            let data = &msg[at + 4..at + len];
            match kind {
                UNIX_DIAG_NAME => d.name = Some(data.to_vec()),
                UNIX_DIAG_PEER => d.peer = u64::from(u32_at(data, 0)),
                // struct unix_diag_vfs { u32 ino, dev }
                UNIX_DIAG_VFS => {
                    d.vfs_id = Some(u64::from(u32_at(data, 4)) << 32 | u64::from(u32_at(data, 0)))
                }
                UNIX_DIAG_ICONS => {
                    d.icons = data
                        .chunks_exact(4)
                        .map(|c| u64::from(u32_at(c, 0)))
                        .collect()
                }
                UNIX_DIAG_RQLEN => {
                    d.rqueue = u32_at(data, 0);
                    d.wqueue = u32_at(data, 4);
                }
                UNIX_DIAG_SHUTDOWN => d.shutdown = data.first().copied().unwrap_or(0),
                _ => {}
            }
            at += len.next_multiple_of(4);
        }
        out.insert(ino, d);
    }
    Ok(out)
}

/// The connections waiting in listener `ino`'s queue, in order, each as the inode of the
/// process's socket that connected; empty if one came from another process (refused as
/// before), an error naming why for one that cannot be made again.
fn pending_connections(
    unix: Option<&BTreeMap<u64, UnixDiag>>,
    ino: u64,
    ours: &[u64],
) -> Result<Vec<u64>, String> {
    let Some(l) = unix.and_then(|u| u.get(&ino)) else {
        return Ok(Vec::new());
    };
    if l.icons.contains(&0) {
        return Err("a connection waiting to be accepted whose connecting socket was closed: whether it sent bytes first cannot be seen".into());
    }
    if l.icons.iter().any(|c| {
        unix.and_then(|u| u.get(c))
            .is_some_and(|d| d.name.as_ref().is_some_and(|n| !n.is_empty()))
    }) {
        return Err("a connection waiting to be accepted from a socket with a name (bound, or autobound with SO_PASSCRED) is not restored".into());
    }
    if l.icons.iter().any(|c| !ours.contains(c)) {
        return Ok(Vec::new());
    }
    Ok(l.icons.clone())
}

/// The listener (its inode) in whose queue the connection of socket `client` waits.
fn waiting_in(unix: &BTreeMap<u64, UnixDiag>, client: u64) -> Option<u64> {
    unix.iter()
        .find(|(_, d)| d.icons.contains(&client))
        .map(|(l, _)| *l)
}

/// The listener of this process (its inode) that accepted `d`: one of its type with its name,
/// bound by an absolute path whose socket file is still its own, or by an abstract name.
fn accepted_from(unix: &BTreeMap<u64, UnixDiag>, d: &UnixDiag, ours: &[u64]) -> Option<u64> {
    let name = d.name.as_ref()?;
    unix.iter()
        .find(|(l, x)| {
            ours.contains(l)
                && x.state == TCP_LISTEN
                && x.ty == d.ty
                && x.name.as_ref() == Some(name)
                && match name.first() {
                    Some(0) => true,
                    Some(b'/') => x.vfs_id.is_some_and(|v| {
                        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                        a.extend_from_slice(name);
                        path_is_socket(&a, v)
                    }),
                    _ => false,
                }
        })
        .map(|(l, _)| *l)
}

/// Listening sockets: inode → (pending connections, backlog, an MD5 signature key is set).
type Backlogs = BTreeMap<u64, (u32, u32, bool)>;

/// Every internet socket of `family` and `protocol` in one of `states` (a bit per TCP state):
/// each `struct inet_diag_msg` with its attributes, and its inode.
/// `ext`: the extensions asked for too (a bit per INET_DIAG_* attribute less one; INET_DIAG_INFO's
/// brings the protocol's own, a TCP socket's MD5 keys among them).
pub(crate) fn inet_diag(
    family: i32,
    protocol: i32,
    states: u32,
    ext: u8,
) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    // struct inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states; struct inet_diag_sockid (48) }
    let mut req = vec![family as u8, protocol as u8, ext, 0];
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&[0u8; 40]);
    req.extend_from_slice(&[0xff; 8]);
    Ok(crate::sys::sock_diag(SOCK_DIAG_BY_FAMILY, &req)?
        .into_iter()
        // struct inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid, inode
        .filter(|msg| msg.len() >= INET_DIAG_MSG)
        .map(|msg| (u64::from(u32_at(&msg, 68)), msg))
        .collect())
}

/// The size of `struct inet_diag_msg`, before its attributes; its receive and send queue lengths
/// are at 56 and 60.
pub(crate) const INET_DIAG_MSG: usize = 72;

/// The payload of attribute `kind` (INET_DIAG_*) of an `inet_diag_msg`, if it has one.
pub(crate) fn diag_attr(msg: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = INET_DIAG_MSG;
    while let Some(head) = msg.get(at..at + 4) {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        if len < 4 || at + len > msg.len() {
            return None;
        }
        if u16::from_ne_bytes([head[2], head[3]]) == kind {
            return Some(&msg[at + 4..at + len]);
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// Listening TCP sockets of `family`.
fn tcp_listeners(family: i32) -> std::io::Result<Backlogs> {
    // INET_DIAG_INFO (2): with it the kernel adds INET_DIAG_MD5SIG where it may.
    // INET_DIAG_MD5SIG (18): the socket has TCP MD5 signature keys (`TCP_MD5SIG`, BGP's),
    // listed only to a holder of CAP_NET_ADMIN; its owner cannot read them back.
    Ok(
        inet_diag(family, libc::IPPROTO_TCP, 1u32 << TCP_LISTEN, 1 << (2 - 1))?
            .into_iter()
            .map(|(ino, msg)| {
                let md5 = diag_attr(&msg, 18).is_some();
                (ino, (u32_at(&msg, 56), u32_at(&msg, 60), md5))
            })
            .collect(),
    )
}

/// Whether a TCP socket has TCP-AO keys (`TCP_AO_ADD_KEY`, Linux 6.7): TCP_AO_INFO answers
/// rather than ENOENT.
fn ao_keys(fd: i32) -> bool {
    let mut info = [0u8; 48];
    crate::sys::getsockopt_into(fd, libc::IPPROTO_TCP, 40, &mut info).is_ok()
}

type Refusal = (FdClass, String);

/// Why a socket of `family` (neither AF_UNIX nor inet, and not listening) is refused. Families
/// whose sockets never listen (netlink, packet...) are not told that listening would do.
fn unsupported_family(family: i32) -> String {
    let (name, listens) = match family {
        libc::AF_NETLINK => ("AF_NETLINK", false),
        libc::AF_PACKET => ("AF_PACKET (raw packet)", false),
        libc::AF_ALG => ("AF_ALG (kernel crypto)", false),
        libc::AF_CAN => ("AF_CAN", false),
        libc::AF_KEY => ("AF_KEY", false),
        libc::AF_XDP => ("AF_XDP", false),
        libc::AF_VSOCK => ("AF_VSOCK", true),
        libc::AF_TIPC => ("AF_TIPC", true),
        libc::AF_BLUETOOTH => ("AF_BLUETOOTH", true),
        _ => {
            return format!("sockets of address family {family} are supported only while listening")
        }
    };
    if listens {
        format!("{name} sockets are supported only while listening")
    } else {
        format!("{name} sockets are not supported")
    }
}

/// Classifies the process's sockets: `(fd, inode)` of each → a [`Socket`] or why not.
/// Describes each socket; `left_out`: children left out of the image (see
/// [`super::files::FdScan::scan`]).
/// The (local, peer) addresses of the TCP connections among `fds`: a connection whose two ends
/// are both here is restored whole.
fn tcp_ends_of(fds: &[(i32, u64)]) -> Vec<(Endpoint, Endpoint)> {
    fds.iter()
        .filter(|&&(fd, _)| {
            crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()
                == Some(libc::IPPROTO_TCP)
        })
        .filter_map(|&(fd, _)| tcp_ends(fd))
        .collect()
}

/// An internet address and port, IPv4 addresses as IPv4-mapped IPv6 ones: the two ends of a
/// connection between an IPv4 client and a dual-stack listener name each other so.
pub(crate) type Endpoint = ([u8; 16], u16);

pub(crate) fn endpoint(a: &[u8]) -> Option<Endpoint> {
    let port = u16::from_be_bytes(a.get(2..4)?.try_into().ok()?);
    let mut ip = [0u8; 16];
    match i32::from(u16::from_ne_bytes(a.get(..2)?.try_into().ok()?)) {
        libc::AF_INET => {
            ip[10..12].fill(0xff);
            ip[12..].copy_from_slice(a.get(4..8)?);
        }
        libc::AF_INET6 => ip.copy_from_slice(a.get(8..24)?),
        _ => return None,
    }
    Some((ip, port))
}

/// A TCP socket's (local, peer) ends.
fn tcp_ends(fd: i32) -> Option<(Endpoint, Endpoint)> {
    Some((
        endpoint(&crate::sys::getsockname(fd).ok()?)?,
        endpoint(&crate::sys::getpeername(fd).ok()?)?,
    ))
}

pub(crate) fn classify(
    fds: &[(i32, u64)],
    left_out: &[i32],
    holders: &mut crate::procfs::Holders,
) -> Vec<(i32, Result<Socket, Refusal>)> {
    let unix = unix_diag();
    let mut tcp: BTreeMap<i32, std::io::Result<Backlogs>> = BTreeMap::new();
    let mut all_tcp_ends = None;
    let ours: Vec<u64> = fds.iter().map(|f| f.1).collect();
    fds.iter()
        .map(|&(fd, ino)| {
            let r = (|| {
                let opt = |o| crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, o).unwrap_or(0);
                let family = opt(libc::SO_DOMAIN);
                let ty = opt(libc::SO_TYPE);
                let protocol = opt(libc::SO_PROTOCOL);
                let listening = opt(libc::SO_ACCEPTCONN) != 0;
                let refuse = |why: String| Err((FdClass::Socket, why));
                if listening {
                    let (pending, backlog) = match family {
                        libc::AF_UNIX => {
                            let d = unix.as_ref().ok().and_then(|m| m.get(&ino)).ok_or((
                                FdClass::Socket,
                                "the kernel does not describe this listening socket (sock_diag)"
                                    .to_owned(),
                            ))?;
                            (d.rqueue, d.wqueue)
                        }
                        libc::AF_INET | libc::AF_INET6 if protocol == libc::IPPROTO_TCP => {
                            let m = tcp.entry(family).or_insert_with(|| tcp_listeners(family));
                            let (pending, backlog, md5) =
                                *m.as_ref().ok().and_then(|m| m.get(&ino)).ok_or((
                                    FdClass::Socket,
                                    "the kernel does not describe this listening socket (sock_diag)"
                                        .to_owned(),
                                ))?;
                            if md5 || ao_keys(fd) {
                                return refuse(format!(
                                    "the listening socket has TCP {} keys, which cannot be read back: set them again after restore",
                                    if md5 { "MD5 signature (TCP_MD5SIG)" } else { "authentication option (TCP-AO)" }
                                ));
                            }
                            (pending, backlog)
                        }
                        libc::AF_INET | libc::AF_INET6 if protocol == 262 => {
                            return refuse(
                                "a multipath TCP listening socket (IPPROTO_MPTCP) is not supported: listen with plain TCP, or open it again after restore".into(),
                            )
                        }
                        _ => {
                            return refuse(format!(
                                "listening sockets of family {family} (protocol {protocol}) are not supported"
                            ))
                        }
                    };
                    let waiting = if family == libc::AF_UNIX {
                        pending_connections(unix.as_ref().ok(), ino, &ours)
                            .map_err(|w| (FdClass::Socket, w))?
                    } else {
                        Vec::new()
                    };
                    if pending > 0 && waiting.is_empty() {
                        let why = if family == libc::AF_UNIX {
                            "their other ends are another process's"
                        } else {
                            "a TCP connection not accepted yet is not restored, whether its other end is in this process or another, even with THAW_TCP_ESTABLISHED"
                        };
                        return refuse(format!(
                            "listening socket has {pending} connection(s) waiting to be accepted, which cannot be made again ({why}): accept them before the checkpoint, or stop taking new ones first (Node: server.close(); Java: close the ServerSocketChannel) and open the listener again after restore"
                        ));
                    }
                    let addr = crate::sys::getsockname(fd)
                        .map_err(|e| (FdClass::Socket, format!("getsockname: {e}")))?;
                    if family == libc::AF_UNIX && addr.len() <= 2 {
                        return refuse("unnamed listening AF_UNIX socket".into());
                    }
                    let vfs = unix.as_ref().ok().and_then(|m| m.get(&ino)).and_then(|d| d.vfs_id);
                    let mut dir = String::new();
                    if family == libc::AF_UNIX && addr[2] != 0 && addr[2] != b'/' {
                        dir = relative_dir(&addr, vfs).ok_or_else(|| (FdClass::Socket, format!(
                            "listening on the relative path {:?}, which names its socket file from no directory thaw can find (it was bound from another working directory than the process has now): bind to an absolute path",
                            describe(&addr)
                        )))?;
                    }
                    let mut unlinked = false;
                    let mut moved_to = String::new();
                    if family == libc::AF_UNIX && addr[2] == b'/' {
                        // Bound again by path at restore: the path must still be this socket's,
                        // or gone (bound again, and its file removed again, or renamed again).
                        let bound = unix.as_ref().ok().and_then(|m| m.get(&ino)).and_then(|d| d.vfs_id);
                        let same = bound.is_some_and(|v| path_is_socket(&addr, v));
                        unlinked = !same && path_gone(&addr);
                        if let Some(q) = bound.filter(|_| unlinked).and_then(|v| renamed(&addr, v)) {
                            (moved_to, unlinked) = (q, false);
                        }
                        if !same && !unlinked && moved_to.is_empty() {
                            return refuse(format!(
                                "listening on {:?}, whose socket file was replaced since it was bound: it cannot be bound again as the same socket",
                                describe(&addr)
                            ));
                        }
                    }
                    let path_id = unix
                        .as_ref()
                        .ok()
                        .and_then(|m| m.get(&ino))
                        .and_then(|d| d.vfs_id)
                        .filter(|_| family == libc::AF_UNIX && addr.get(2) != Some(&0) && !unlinked)
                        .unwrap_or(0);
                    let file = (path_id != 0).then(|| SocketFile::of(&named(&addr, &moved_to), &dir)).flatten();
                    if !waiting.is_empty() && unlinked {
                        return refuse(format!(
                            "listening on {:?}, whose socket file was removed, with connections waiting to be accepted: they could not be made again by that name",
                            describe(&addr)
                        ));
                    }
                    return Ok(Socket::Listener(Listener {
                        file,
                        pending: waiting,
                        ino,
                        family,
                        ty,
                        protocol,
                        addr,
                        backlog: backlog as i32,
                        reuseaddr: opt(libc::SO_REUSEADDR) != 0,
                        reuseport: opt(libc::SO_REUSEPORT) != 0,
                        v6only: family == libc::AF_INET6
                            && crate::sys::getsockopt_int(
                                fd,
                                libc::IPPROTO_IPV6,
                                libc::IPV6_V6ONLY,
                            )
                            .unwrap_or(0)
                                != 0,
                        path_id,
                        unlinked,
                        moved_to,
                        dir,
                        opts: super::sockopts::dump(fd, family, ty, protocol)
                        .map_err(|w| (FdClass::Socket, w))?,
                    }));
                }
                let inet = family == libc::AF_INET || family == libc::AF_INET6;
                if inet && protocol == libc::IPPROTO_TCP && super::tcp::established(fd) {
                    let ends = all_tcp_ends.get_or_insert_with(|| tcp_ends_of(fds));
                    let peer_here =
                        tcp_ends(fd).is_some_and(|(me, peer)| ends.contains(&(peer, me)));
                    return match super::tcp::dump(fd, ino, family, peer_here) {
                        Ok(c) => Ok(Socket::Tcp(c)),
                        Err(more) => {
                            let why = super::inet::dump(fd, ino, family, ty, protocol)
                                .err()
                                .unwrap_or_else(|| "a TCP connection is not restored".into());
                            refuse(why + &more)
                        }
                    };
                }
                if inet {
                    return super::inet::dump(fd, ino, family, ty, protocol)
                        .map(Socket::Inet)
                        .map_err(|w| (FdClass::Socket, w));
                }
                if family == libc::AF_NETLINK {
                    return super::netlink::dump(fd, ino, ty, protocol)
                        .map(Socket::Netlink)
                        .map_err(|w| (FdClass::Socket, w));
                }
                if family != libc::AF_UNIX {
                    return refuse(unsupported_family(family));
                }
                let d = match &unix {
                    Ok(m) => m.get(&ino).cloned().ok_or((
                        FdClass::Socket,
                        "the kernel does not describe this socket (sock_diag)".to_owned(),
                    ))?,
                    Err(e) => {
                        return refuse(format!("cannot ask the kernel about AF_UNIX sockets: {e}"))
                    }
                };
                // An error waiting to be read (POLLERR: poll tells without taking it, as a read
                // or SO_ERROR would). An AF_UNIX socket gets only ECONNRESET: a stream or
                // seqpacket end whose other end closed with bytes unread there, a datagram
                // socket whose peer connected elsewhere with its messages unread. Only a
                // stream pair end is made so again (below): a seqpacket end's pending error
                // comes before its messages, so that they cannot be read without taking it.
                let pending_error =
                    crate::sys::poll_now(fd, 0).is_ok_and(|ev| ev & libc::POLLERR != 0);
                if pending_error && ty != libc::SOCK_STREAM {
                    return refuse(reset_refused(ty));
                }
                // The socket itself: its type, buffers and options.
                let unconnected = || -> Result<Unconnected, Refusal> {
                    Ok(Unconnected {
                        ino,
                        ty,
                        sndbuf: opt(libc::SO_SNDBUF),
                        rcvbuf: opt(libc::SO_RCVBUF),
                        passcred: opt(libc::SO_PASSCRED) != 0,
                        opts: super::sockopts::dump(fd, family, ty, protocol)
                            .map_err(|w| (FdClass::Socket, w))?,
                    })
                };
                // A datagram socket's peer is only its default destination: one with a name
                // (bound by path or abstract name) is connected to again by that name.
                let named_peer = (ty == libc::SOCK_DGRAM && d.peer != 0)
                    .then(|| unix.as_ref().ok()?.get(&d.peer)?.name.clone())
                    .flatten()
                    .filter(|n| n.first().is_some_and(|&b| b == 0 || b == b'/'))
                    .map(|n| {
                        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                        a.extend_from_slice(&n);
                        a
                    });
                let bound = d.name.as_ref().is_some_and(|n| !n.is_empty());
                // A connection the process accepted from one of its listeners, its other end
                // its own too: the accepted end has the listener's name.
                if bound && ty != libc::SOCK_DGRAM && d.peer != 0 && ours.contains(&d.peer) {
                    let listener = unix
                        .as_ref()
                        .ok()
                        .and_then(|u| accepted_from(u, &d, &ours))
                        .ok_or((
                            FdClass::Socket,
                            "a connection accepted from a listening socket the process no longer has (or whose socket file was removed or replaced): it cannot be accepted again".to_owned(),
                        ))?;
                    if d.shutdown != 0 {
                        return refuse("an accepted connection that is shut down is not restored".into());
                    }
                    return Ok(Socket::Pair(PairEnd {
                        ino,
                        pair: ino.min(d.peer),
                        ty,
                        peer_open: true,
                        send_shutdown: false,
                        recv_shutdown: false,
                        queued: None,
                        messages: Vec::new(),
                        message_fds: Vec::new(),
                        accepted_from: listener,
                        reset: false,
                        sndbuf: opt(libc::SO_SNDBUF),
                        rcvbuf: opt(libc::SO_RCVBUF),
                        passcred: opt(libc::SO_PASSCRED) != 0,
                        opts: super::sockopts::dump(fd, family, ty, protocol)
                            .map_err(|w| (FdClass::Socket, w))?,
                    }));
                }
                if bound || named_peer.is_some() {
                    // Messages queued to a bound datagram receiver are read by the checkpoint
                    // handler and sent to it again; other queues belong to connections.
                    let queue_kept = bound && ty == libc::SOCK_DGRAM;
                    // (A stream socket with a name that is connected, its connection perhaps not
                    // accepted yet and so showing no peer, is no receiver either.)
                    if (d.peer != 0 && named_peer.is_none())
                        || d.shutdown != 0
                        || (d.rqueue != 0 && !queue_kept)
                        || (ty != libc::SOCK_DGRAM && d.state != TCP_CLOSE)
                    {
                        return refuse(
                            "a bound AF_UNIX socket that is connected, shut down or has messages queued is not restored".into(),
                        );
                    }
                    let addr = if bound {
                        crate::sys::getsockname(fd)
                            .map_err(|e| (FdClass::Socket, format!("getsockname: {e}")))?
                    } else {
                        Vec::new()
                    };
                    let mut unlinked = false;
                    let mut moved_to = String::new();
                    let mut dir = String::new();
                    let path_id = if !bound {
                        0
                    } else if addr.get(2).is_some_and(|&b| b != b'/' && b != 0) {
                        dir = relative_dir(&addr, d.vfs_id).ok_or_else(|| (FdClass::Socket, format!(
                            "bound to the relative path {:?}, which names its socket file from no directory thaw can find (it was bound from another working directory than the process has now): bind to an absolute path",
                            describe(&addr)
                        )))?;
                        d.vfs_id.unwrap_or(0)
                    } else if addr.get(2).is_some_and(|&b| b == b'/') {
                        // Bound again by path at restore: the path must still be this socket's,
                        // or gone (bound again, and its file removed again).
                        let same = d.vfs_id.is_some_and(|v| path_is_socket(&addr, v));
                        unlinked = !same && path_gone(&addr);
                        if let Some(q) = d.vfs_id.filter(|_| unlinked).and_then(|v| renamed(&addr, v)) {
                            (moved_to, unlinked) = (q, false);
                        }
                        if !same && !unlinked && moved_to.is_empty() {
                            return refuse(format!(
                                "bound to {:?}, whose socket file was replaced since: it cannot be bound again as the same socket",
                                describe(&addr)
                            ));
                        }
                        if unlinked { 0 } else { d.vfs_id.unwrap_or(0) }
                    } else {
                        0
                    };
                    return Ok(Socket::Bound(Bound {
                        sock: unconnected()?,
                        file: (path_id != 0).then(|| SocketFile::of(&named(&addr, &moved_to), &dir)).flatten(),
                        addr,
                        path_id,
                        unlinked,
                        moved_to,
                        dir,
                        peer: named_peer.unwrap_or_default(),
                        queued: None,
                        messages: Vec::new(),
                    }));
                }
                // Never connected (a stream socket whose connection waits, or whose peer is
                // gone, shows no peer either).
                if d.peer == 0
                    && d.shutdown == 0
                    && d.rqueue == 0
                    && (ty == libc::SOCK_DGRAM || d.state == TCP_CLOSE)
                {
                    return Ok(Socket::Unconnected(unconnected()?));
                }
                // Connected, its connection not accepted yet (its peer has no inode until then).
                let pending = ty != libc::SOCK_DGRAM && d.state == TCP_ESTABLISHED && d.peer == 0;
                let queue = pending
                    .then(|| waiting_in(unix.as_ref().ok()?, ino))
                    .flatten();
                if queue.is_some_and(|l| !ours.contains(&l)) {
                    return refuse("connected to a listening socket of another process, not accepted yet".into());
                }
                if let Some(listener) = queue {
                    if d.rqueue != 0 || d.wqueue != 0 || d.shutdown & RCV_SHUTDOWN != 0 {
                        return refuse("a connection waiting to be accepted has bytes sent into it already (or is shut down for reading), which cannot be read before it is accepted".into());
                    }
                    return Ok(Socket::Connecting(Connecting {
                        sock: unconnected()?,
                        listener,
                        send_shutdown: d.shutdown & SEND_SHUTDOWN != 0,
                    }));
                }
                let peer_open = ours.contains(&d.peer) && d.peer != 0;
                // Both ends here, and either held by another process seen too (a launcher that
                // kept a duplicate): made again, the pair would be this process's alone.
                if peer_open {
                    for end in [ino, d.peer] {
                        let seen = holders.seen(&format!("socket:[{end}]"));
                        if !seen.is_empty() && !super::files::only_left_out(&seen, left_out) {
                            return refuse(format!(
                                "both ends of the socket pair are in this process, and {}{} holds socket:[{end}] too: made again, the pair would be this process's alone, and what it sends would not reach that process",
                                crate::procfs::describe_holders(&seen),
                                super::files::beyond_left_out(&seen, left_out)
                            ));
                        }
                    }
                }
                // An unnamed datagram socket with messages (or a shutdown) and no peer left:
                // only the other end of its pair could have queued to it, and that end was
                // closed (the kernel shows no shutdown for a datagram pair). Made again as a pair
                // whose other end is closed again.
                let mut widowed = ty == libc::SOCK_DGRAM && d.peer == 0;
                let mut shutdown = d.shutdown;
                if !peer_open && d.peer != 0 && shutdown != RCV_SHUTDOWN | SEND_SHUTDOWN {
                    // The other end held by children left out alone (a child's standard
                    // descriptors, an IPC channel): killed as far as the restored process
                    // knows, so made again closed, as the kernel shows an end whose peer closed
                    // (a stream's shut down both ways; a datagram end's sends then fail).
                    // (Bytes this end had sent that they had not read are gone with them.)
                    let holders = holders.of(&format!("socket:[{}]", d.peer));
                    match holders.as_deref() {
                        Some(h) if super::files::only_left_out(h, left_out) => {
                            if ty == libc::SOCK_DGRAM {
                                widowed = true;
                            } else {
                                shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN;
                            }
                        }
                        Some(h) if !h.is_empty() => {
                            return refuse(format!(
                                "connected to socket:[{}] in another process: {}{}",
                                d.peer,
                                crate::procfs::describe_holders(h),
                                super::files::beyond_left_out(h, left_out)
                            ))
                        }
                        _ => {
                            return refuse(format!(
                                "connected to socket:[{}] in another process",
                                d.peer
                            ))
                        }
                    }
                }
                if !peer_open && !widowed && shutdown != RCV_SHUTDOWN | SEND_SHUTDOWN {
                    return refuse("AF_UNIX socket that is not connected".to_owned());
                }
                if let Some(why) = foreign_peer_credentials(fd, peer_open || widowed) {
                    return refuse(why);
                }
                // A stream end whose other end closed with bytes unread (ECONNRESET: the one
                // error an AF_UNIX stream gets) is made so again; see `pending_error` above.
                let reset = pending_error;
                if reset && (ty != libc::SOCK_STREAM || peer_open || widowed) {
                    return refuse(reset_refused(ty));
                }
                Ok(Socket::Pair(PairEnd {
                    ino,
                    pair: if peer_open { ino.min(d.peer) } else { ino },
                    ty,
                    peer_open,
                    send_shutdown: shutdown & SEND_SHUTDOWN != 0,
                    recv_shutdown: shutdown & RCV_SHUTDOWN != 0,
                    queued: None,
                    messages: Vec::new(),
                    message_fds: Vec::new(),
                    accepted_from: 0,
                    reset,
                    sndbuf: opt(libc::SO_SNDBUF),
                    rcvbuf: opt(libc::SO_RCVBUF),
                    passcred: opt(libc::SO_PASSCRED) != 0,
                    opts: super::sockopts::dump(fd, family, ty, protocol)
                        .map_err(|w| (FdClass::Socket, w))?,
                }))
            })();
            (fd, r)
        })
        .collect()
}

/// Why an AF_UNIX socket with an error waiting to be read (ECONNRESET) is refused.
fn reset_refused(ty: i32) -> String {
    let kind = match ty {
        libc::SOCK_SEQPACKET => "seqpacket",
        libc::SOCK_DGRAM => "datagram",
        _ => "stream",
    };
    format!(
        "an error (ECONNRESET: its peer closed, or connected elsewhere, with what this socket had sent unread) waits to be read on this {kind} socket, which thaw restores only on a stream whose other end is closed: let the process read it before the checkpoint (its next receive, or getsockopt(SO_ERROR), returns it; an event loop does on its next turn), or close the socket"
    )
}

/// Recreates every socket (descriptors of one socket share it): inode → descriptor. `queued(r)`
/// reads a payload range of the image; `given` are listening sockets handed in by the caller,
/// used for a listener of the same family, type and address instead of binding a new one.
pub fn recreate<'a>(
    sockets: &[&'a Socket],
    mut queued: impl FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    given: &[OwnedFd],
) -> Result<(BTreeMap<u64, OwnedFd>, Later<'a>), String> {
    // A listening socket handed in that stands for none of the image's would be held by the
    // launcher alone: whoever connects to it would wait in its queue for ever.
    for g in given {
        let images = || {
            sockets.iter().filter_map(|s| match s {
                Socket::Listener(l) => Some(l),
                _ => None,
            })
        };
        if !images().any(|l| stands_for(g, l)) {
            let addr = crate::sys::getsockname(g.as_raw_fd())
                .map(|a| describe(&a))
                .unwrap_or_else(|e| format!("(getsockname: {e})"));
            let ours: Vec<String> = images().map(|l| describe(&l.addr)).collect();
            return Err(format!(
                "the listening socket handed in (--listen-fd, LISTEN_FDS) on {addr} stands for none of the image's ({}): hand in one of the same family, type and address, or none",
                if ours.is_empty() {
                    "it listens on nothing".to_owned()
                } else {
                    format!("it listens on {}", ours.join(", "))
                }
            ));
        }
    }
    let mut out = BTreeMap::new();
    let mut later = Later::default();
    let mut pairs: BTreeMap<u64, Vec<&'a PairEnd>> = BTreeMap::new();
    let ends = sockets.iter().filter_map(|s| match s {
        Socket::Pair(p) => Some(p),
        Socket::Listener(_)
        | Socket::Unconnected(_)
        | Socket::Bound(_)
        | Socket::Inet(_)
        | Socket::Netlink(_)
        | Socket::Tcp(_)
        | Socket::Connecting(_) => None,
    });
    for e in ends {
        let v = pairs.entry(e.pair).or_default();
        if !v.iter().any(|x| x.ino == e.ino) {
            v.push(e);
        }
    }
    // Listeners first: connections accepted from them are made through them, before the
    // connections that waited in their queues.
    let mut waiting = Vec::new();
    let mut reuseport_off = Vec::new();
    for s in sockets {
        if let Socket::Listener(l) = s {
            if let std::collections::btree_map::Entry::Vacant(v) = out.entry(l.ino) {
                let clients = l
                    .pending
                    .iter()
                    .map(|&c| {
                        sockets
                            .iter()
                            .find_map(|s| match s {
                                Socket::Connecting(k) if k.sock.ino == c => Some(k),
                                _ => None,
                            })
                            .ok_or_else(|| {
                                format!("socket:[{}]: its waiting connection socket:[{c}] is not in the image", l.ino)
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let accepts = sockets
                    .iter()
                    .any(|s| matches!(s, Socket::Pair(p) if p.accepted_from == l.ino));
                // Listeners sharing a port (SO_REUSEPORT), one of which turned it off since.
                let shared = l.family != libc::AF_UNIX
                    && sockets.iter().any(|s| {
                        matches!(s, Socket::Listener(o) if o.ino != l.ino && o.family == l.family && o.addr == l.addr)
                    });
                let made = v.insert(listener(l, given, !clients.is_empty() || accepts, shared)?);
                if shared && !l.reuseport {
                    reuseport_off.push((made.as_raw_fd(), l));
                }
                waiting.push((l, clients));
            }
        }
    }
    for (fd, l) in reuseport_off {
        crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0).map_err(|e| {
            format!(
                "listening socket {}: cannot turn SO_REUSEPORT off again: {e}",
                describe(&l.addr)
            )
        })?;
    }
    for (id, mut v) in pairs {
        v.sort_by_key(|e| e.ino);
        let ty = v[0].ty;
        let (a, b) = match v.iter().position(|e| e.accepted_from != 0) {
            Some(i) => {
                let l = sockets
                    .iter()
                    .find_map(|s| match s {
                        Socket::Listener(l) if l.ino == v[i].accepted_from => Some(l),
                        _ => None,
                    })
                    .ok_or_else(|| format!("socket pair {id}: its listener is not in the image"))?;
                let (client, accepted) = accept_again(l, &out[&l.ino]).map_err(|e| {
                    format!(
                        "socket pair {id}: cannot connect to {} and accept again: {e}",
                        describe(&l.addr)
                    )
                })?;
                if i == 0 {
                    (accepted, client)
                } else {
                    (client, accepted)
                }
            }
            None => crate::sys::socketpair(ty)
                .map_err(|e| format!("socket pair {id}: cannot create it: {e}"))?,
        };
        for (i, end) in v.iter().enumerate() {
            let me = [&a, &b][i].as_raw_fd();
            set_options(me, end.ino, end.sndbuf, end.rcvbuf, end.passcred, &end.opts)?;
        }
        if v.iter().any(|e| !e.message_fds.is_empty()) {
            // Messages carrying descriptors are queued once every descriptor is made (see
            // `Later::finish`); the ends are held until then (a closed one too).
            let held =
                [&a, &b].map(|s| s.try_clone().map_err(|e| format!("socket pair {id}: {e}")));
            let [x, y] = held;
            later.pairs.push((v.clone(), [x?, y?]));
        } else {
            fill_pair(&v, [a.as_raw_fd(), b.as_raw_fd()], &mut queued, &|_| None)?;
        }
        let mut ends_fds = [Some(a), Some(b)];
        for (i, end) in v.iter().enumerate() {
            out.insert(end.ino, ends_fds[i].take().expect("one per end"));
        }
        // A half-closed pair: dropping `b` here closes the other end again.
    }
    // The connections that waited in the listeners' queues, in their order.
    for (l, clients) in waiting {
        let connected = connect_waiting(l, &clients)?;
        out.extend(connected);
    }
    for s in sockets {
        if let Socket::Bound(b) = s {
            if let std::collections::btree_map::Entry::Vacant(v) = out.entry(b.sock.ino) {
                let u = &b.sock;
                let what = if b.addr.is_empty() {
                    format!("socket:[{}]", u.ino)
                } else {
                    describe(&b.addr)
                };
                let sock = u.make(&format!("socket {what}"))?;
                let bytes = b.queued.map(&mut queued).transpose()?;
                if !b.addr.is_empty() {
                    in_dir(&b.dir, || {
                        bind_again(sock.as_raw_fd(), &b.addr, b.path_id, b.unlinked, b.file)?;
                        // Queued again by address while the name still reaches it (before
                        // a removed socket file is removed again).
                        if let Some(bytes) = &bytes {
                            send_messages(&b.addr, bytes, &b.messages)?;
                        }
                        name_again(&b.addr, b.unlinked, &b.moved_to, b.path_id)
                    })
                    .map_err(|e| {
                        if e.raw_os_error() == Some(libc::EADDRINUSE) {
                            format!("socket {what}: the address is in use (stop what holds it)")
                        } else {
                            format!("socket {what}: cannot bind it and queue its messages: {e}")
                        }
                    })?;
                }
                v.insert(sock);
            }
        }
        if let Socket::Unconnected(u) = s {
            if let std::collections::btree_map::Entry::Vacant(v) = out.entry(u.ino) {
                v.insert(u.make(&format!("socket:[{}]", u.ino))?);
            }
        }
        if let Socket::Inet(i) = s {
            if let std::collections::btree_map::Entry::Vacant(v) = out.entry(i.ino) {
                v.insert(i.make()?);
            }
        }
        if let Socket::Netlink(n) = s {
            if let std::collections::btree_map::Entry::Vacant(v) = out.entry(n.ino) {
                v.insert(n.make()?);
            }
        }
    }
    // TCP connections last (their listeners are bound by now), each left in repair mode until
    // all are made: the window probe one sends as it leaves reaches a peer of this process's
    // own only once that peer exists.
    let mut made = Vec::new();
    for s in sockets {
        if let Socket::Tcp(t) = s {
            if !out.contains_key(&t.ino) && !made.iter().any(|(ino, _)| *ino == t.ino) {
                made.push((t.ino, t.make(&mut queued)?));
            }
        }
    }
    // Moved connections: their peers' packets, held since the first life ended, come through.
    let mut locks: Vec<&str> = sockets
        .iter()
        .filter_map(|s| match s {
            Socket::Tcp(t) if !t.lock.is_empty() => Some(t.lock.as_str()),
            _ => None,
        })
        .collect();
    locks.sort_unstable();
    locks.dedup();
    for table in locks {
        super::tcp::unlock(table)?;
    }
    for (_, m) in &made {
        m.leave_repair()?;
    }
    for (ino, m) in made {
        out.insert(ino, m.finish()?);
    }
    // Default destinations, once every socket of this process is bound again.
    for s in sockets {
        if let Socket::Bound(b) = s {
            if !b.peer.is_empty() {
                crate::sys::connect(out[&b.sock.ino].as_raw_fd(), &b.peer).map_err(|e| {
                    format!(
                        "socket:[{}]: cannot connect it to {} again: {e}",
                        b.sock.ino,
                        describe(&b.peer)
                    )
                })?;
            }
        }
    }
    Ok((out, later))
}

/// Socket pairs whose queued messages carry descriptors: queued once every descriptor of the
/// image is made ([`super::files::reopen`]), with both ends held until then.
#[derive(Debug, Default)]
pub struct Later<'a> {
    pairs: Vec<(Vec<&'a PairEnd>, [OwnedFd; 2])>,
}

impl Later<'_> {
    /// Queues the held pairs' messages, each with its descriptors (`fd_of`: an in-flight
    /// entry's number to the descriptor made for it), then shuts them down as they were; the
    /// held ends are closed (an end that is not in the image with them).
    pub fn finish(
        self,
        queued: &mut dyn FnMut(PayloadRef) -> Result<Vec<u8>, String>,
        fd_of: &dyn Fn(i32) -> Option<i32>,
    ) -> Result<(), String> {
        for (v, [a, b]) in self.pairs {
            fill_pair(&v, [a.as_raw_fd(), b.as_raw_fd()], queued, fd_of)?;
        }
        Ok(())
    }
}

/// Queues again what waits in each end of a pair (`v`, made as `sock`: what waits in one end
/// was sent by the other), messages one at a time with their descriptors (`fd_of`), then shuts
/// the ends down as they were.
fn fill_pair(
    v: &[&PairEnd],
    sock: [i32; 2],
    queued: &mut dyn FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    fd_of: &dyn Fn(i32) -> Option<i32>,
) -> Result<(), String> {
    for (i, end) in v.iter().enumerate() {
        let other = sock[1 - i];
        let Some(r) = end.queued else { continue };
        let bytes = queued(r)?;
        let _ = crate::sys::setsockopt_int(
            other,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (bytes.len() as i32).saturating_mul(2).max(end.sndbuf / 2),
        );
        if end.messages.is_empty() {
            let mut at = 0;
            while at < bytes.len() {
                let n = crate::sys::send_nowait(other, &bytes[at..]).map_err(|e| {
                    format!(
                        "socket:[{}]: cannot queue its {} bytes again: {e}",
                        end.ino,
                        bytes.len()
                    )
                })?;
                at += n;
            }
            continue;
        }
        // One message at a time: their boundaries are part of the queue.
        let mut at = 0usize;
        for (k, &len) in end.messages.iter().enumerate() {
            let msg = bytes.get(at..at + len as usize).ok_or_else(|| {
                format!(
                    "socket:[{}]: its queued messages do not match their bytes",
                    end.ino
                )
            })?;
            let fds = end
                .message_fds
                .get(k)
                .map(|nums| {
                    nums.iter()
                        .map(|&n| {
                            fd_of(n).ok_or_else(|| {
                                format!(
                                    "socket:[{}]: message {} carries a descriptor that was not made again",
                                    end.ino,
                                    k + 1
                                )
                            })
                        })
                        .collect::<Result<Vec<i32>, String>>()
                })
                .transpose()?
                .unwrap_or_default();
            let n = crate::sys::sendmsg_fds(
                other,
                msg,
                &[],
                &fds,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
            .map_err(|e| {
                format!(
                    "socket:[{}]: cannot queue message {} of {} again: {e}",
                    end.ino,
                    k + 1,
                    end.messages.len()
                )
            })?;
            if n != msg.len() {
                return Err(format!("socket:[{}]: message {} was cut", end.ino, k + 1));
            }
            at += len as usize;
        }
    }
    // Queuing may have raised a sender's buffer size: every end gets its own back.
    for (i, end) in v.iter().enumerate() {
        let _ =
            crate::sys::setsockopt_int(sock[i], libc::SOL_SOCKET, libc::SO_SNDBUF, end.sndbuf / 2);
    }
    // A reset end: a byte in the other end's queue when that end is closed again (by the
    // caller, once the ends are made) makes the kernel mark this one so, as it did.
    for (i, end) in v.iter().enumerate() {
        if end.reset {
            crate::sys::send_nowait(sock[i], &[0])
                .map_err(|e| format!("socket:[{}]: cannot mark it reset again: {e}", end.ino))?;
        }
    }
    for (i, end) in v.iter().enumerate() {
        if end.recv_shutdown {
            crate::sys::shutdown(sock[i], libc::SHUT_RD)
                .map_err(|e| format!("socket:[{}]: cannot shut it down: {e}", end.ino))?;
        }
        if end.send_shutdown {
            crate::sys::shutdown(sock[i], libc::SHUT_WR)
                .map_err(|e| format!("socket:[{}]: cannot shut it down: {e}", end.ino))?;
        }
    }
    Ok(())
}

/// The path of a `sockaddr_un` bound to a path.
pub(crate) fn sun_path(addr: &[u8]) -> &std::path::Path {
    let raw = addr.get(2..).unwrap_or(&[]);
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw))
}

/// The directory a socket bound to a relative path names its file in: the process's working
/// directory, where a socket file with the socket's inode (`vfs`) must be found by that name.
fn relative_dir(addr: &[u8], vfs: Option<u64>) -> Option<String> {
    let cwd = std::fs::read_link("/proc/self/cwd").ok()?;
    let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    abs.extend_from_slice(cwd.join(sun_path(addr)).as_os_str().as_encoded_bytes());
    (vfs.is_some_and(|v| path_is_socket(&abs, v))).then(|| cwd.to_string_lossy().into_owned())
}

/// Runs `f` in directory `dir` (where a relative socket address names its file), then back in
/// the directory it was called in; with `dir` empty, just runs it.
fn in_dir<T>(dir: &str, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    if dir.is_empty() {
        return f();
    }
    if !dir.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the image names the directory {dir:?}, which is no absolute path"),
        ));
    }
    let here = crate::sys::open_path_dir(".")?;
    std::env::set_current_dir(dir)?;
    let r = f();
    crate::sys::fchdir(here.as_raw_fd())?;
    r
}

/// A file's identity as the kernel's socket diagnostics show a socket file's (UNIX_DIAG_VFS):
/// its file system's device number in the kernel's own encoding (major << 20 | minor) in the
/// high half, the low 32 bits of its inode number in the low half. Inode numbers alone repeat
/// across file systems (a System V segment's id was once taken for a file's inode that way).
fn file_id(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = (libc::major(m.dev()) << 20) | (libc::minor(m.dev()) & 0xf_ffff);
    u64::from(dev) << 32 | (m.ino() & 0xffff_ffff)
}

/// Whether the path `addr` is bound to is a socket file with identity `id` ([`file_id`]).
fn path_is_socket(addr: &[u8], id: u64) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(sun_path(addr))
        .is_ok_and(|m| m.file_type().is_socket() && file_id(&m) == id)
}

/// Whether a socket is bound to the socket file at `addr`'s path (one bound but not listening
/// yet refuses connections too: a concurrent restore between its bind and its listen).
fn bound_socket_file(addr: &[u8]) -> bool {
    let Ok(m) = std::fs::symlink_metadata(sun_path(addr)) else {
        return false;
    };
    // Unknown counts as bound: the file is kept.
    unix_diag().map_or(true, |u| u.values().any(|d| d.vfs_id == Some(file_id(&m))))
}

/// Whether the path `addr` is bound to is a socket file owned by the caller.
fn callers_socket_file(addr: &[u8]) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(sun_path(addr))
        .is_ok_and(|m| m.file_type().is_socket() && m.uid() == crate::sys::geteuid())
}

/// Whether nothing is at the path `addr` is bound to, in a directory that exists: a socket
/// whose file was removed after it was bound, which can be bound there again.
fn path_gone(addr: &[u8]) -> bool {
    let path = sun_path(addr);
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        && path.parent().is_some_and(|d| d.is_dir())
}

/// Binds `fd` to `addr`. A socket whose file had been removed (`unlinked`) is bound where the
/// path must be free; its caller removes the file again (the socket keeps its name, and nobody
/// can connect to it by that path). A listener does so at once.
/// A socket file had `file`'s permissions and owner: it gets them again.
fn bind_again(
    fd: i32,
    addr: &[u8],
    path_id: u64,
    unlinked: bool,
    file: Option<SocketFile>,
) -> std::io::Result<()> {
    if unlinked {
        return crate::sys::bind(fd, addr);
    }
    bind_replacing_stale(fd, addr, path_id)?;
    file.map_or(Ok(()), |f| f.apply(addr))
}

/// Once a socket is bound again (and listens): removes its socket file where the first life's
/// had been removed (`unlinked`), or renames it where it had been renamed (`moved_to`), over a
/// stale file there (the first life's, or a restore's of it, that nothing is bound to).
fn name_again(addr: &[u8], unlinked: bool, moved_to: &str, id: u64) -> std::io::Result<()> {
    if unlinked {
        std::fs::remove_file(sun_path(addr))?;
    }
    if !moved_to.is_empty() {
        let to = named(addr, moved_to);
        // A stale file there goes first; then the rename, never over a file (one that came
        // meanwhile). Where the name is someone's (another restore of the image running, the
        // first life going on), the socket keeps its first name with no file, as one whose
        // file was removed: reachable by nobody, rather than the restore failing.
        if !path_gone(&to) && stale_socket_file(&to, id) {
            let _ = std::fs::remove_file(sun_path(&to));
        }
        match crate::sys::rename_noreplace(sun_path(addr), sun_path(&to)) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                std::fs::remove_file(sun_path(addr))?;
            }
            other => other?,
        }
    }
    Ok(())
}

/// The socket file a path-bound socket's file (identity `id`) was renamed to in its directory,
/// if it was (HotSpot's attach listener: `.java_pid<pid>.tmp` renamed to `.java_pid<pid>`).
fn renamed(addr: &[u8], id: u64) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let dir = sun_path(addr).parent()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let m = std::fs::symlink_metadata(e.path()).ok()?;
        (m.file_type().is_socket() && file_id(&m) == id)
            .then(|| e.path().to_string_lossy().into_owned())
    })
}

/// `addr`, or where `moved_to` is not empty, the address of that path.
fn named(addr: &[u8], moved_to: &str) -> Vec<u8> {
    if moved_to.is_empty() {
        return addr.to_vec();
    }
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(moved_to.as_bytes());
    a
}

/// Sends `messages` (their lengths; their bytes one after the other in `bytes`) to the datagram
/// socket bound to `addr`, in order, from a new socket without a name: as each was queued by a
/// sender without one.
fn send_messages(addr: &[u8], bytes: &[u8], messages: &[u32]) -> std::io::Result<()> {
    let from = crate::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
    // Room for all of them at once: a datagram counts against its sender until it is read.
    let _ = crate::sys::setsockopt_int(
        from.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        (bytes.len() + messages.len() * 1024).min(i32::MAX as usize / 2) as i32,
    );
    let mut at = 0usize;
    for &len in messages {
        let msg = bytes.get(at..at + len as usize).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "its queued messages do not match their bytes",
            )
        })?;
        let n = crate::sys::sendto_nowait(from.as_raw_fd(), msg, addr)?;
        if n != msg.len() {
            return Err(std::io::Error::other("a message was cut"));
        }
        at += len as usize;
    }
    Ok(())
}

/// Binds `fd` to `addr`. A socket file at that path that is the first life's own (`path_id`)
/// and that nothing is bound to any more (connecting is refused) is stale: it is replaced.
fn bind_replacing_stale(fd: i32, addr: &[u8], path_id: u64) -> std::io::Result<()> {
    match crate::sys::bind(fd, addr) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && path_id != 0 => {
            if stale_socket_file(addr, path_id) {
                std::fs::remove_file(sun_path(addr))?;
                crate::sys::bind(fd, addr)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// Whether the socket file at `addr` is stale: nothing listens there (connecting is refused)
/// or is bound to it, and it is the first life's own (identity `id`) or one a restore of it left
/// (a previous restore of this image, a serve instance: a socket file of the caller's).
fn stale_socket_file(addr: &[u8], id: u64) -> bool {
    // Looked at first without touching it: a socket bound there (sock_diag lists this network
    // namespace's) is alive, and a connection to it would reach a running server (another
    // restore of the image), which would see a client come and go.
    if !(path_is_socket(addr, id) || callers_socket_file(addr)) || bound_socket_file(addr) {
        return false;
    }
    // Then a connection, for a listener in another network namespace. Without waiting: a
    // listener there whose backlog is full (anyone's: the socket file may be another user's)
    // would hold a blocking connect for ever. It is alive (EAGAIN): not stale.
    let Ok(probe) = crate::sys::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
    else {
        return false;
    };
    crate::sys::connect(probe.as_raw_fd(), addr)
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED))
}

impl Unconnected {
    /// As [`Self::make`], for a caller that reports errors itself.
    fn make_io(&self) -> std::io::Result<OwnedFd> {
        self.make(&format!("socket:[{}]", self.ino))
            .map_err(std::io::Error::other)
    }

    /// A new AF_UNIX socket of its type with its options (`what` begins an error).
    fn make(&self, what: &str) -> Result<OwnedFd, String> {
        let sock = crate::sys::socket(libc::AF_UNIX, self.ty, 0)
            .map_err(|e| format!("{what}: cannot create it: {e}"))?;
        set_options(
            sock.as_raw_fd(),
            self.ino,
            self.sndbuf,
            self.rcvbuf,
            self.passcred,
            &self.opts,
        )?;
        Ok(sock)
    }
}

/// Buffer sizes (the kernel doubles what it is given; best effort, as the caller's limits may
/// be lower) and SO_PASSCRED of an AF_UNIX socket being made again.
fn set_options(
    fd: i32,
    ino: u64,
    sndbuf: i32,
    rcvbuf: i32,
    passcred: bool,
    opts: &[super::sockopts::SockOpt],
) -> Result<(), String> {
    let _ = crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf / 2);
    let _ = crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf / 2);
    if passcred {
        crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
            .map_err(|e| format!("socket:[{ino}]: cannot set SO_PASSCRED: {e}"))?;
    }
    super::sockopts::apply(fd, opts, &format!("socket:[{ino}]"))
}

/// A human-readable address: "127.0.0.1:8080", "[::]:80", "/run/app.sock", "@abstract".
pub fn describe(addr: &[u8]) -> String {
    let fam = addr
        .get(..2)
        .map_or(0, |b| i32::from(u16::from_ne_bytes([b[0], b[1]])));
    match fam {
        libc::AF_INET if addr.len() >= 8 => format!(
            "{}.{}.{}.{}:{}",
            addr[4],
            addr[5],
            addr[6],
            addr[7],
            u16::from_be_bytes([addr[2], addr[3]])
        ),
        libc::AF_INET6 if addr.len() >= 24 => {
            let ip: [u8; 16] = addr[8..24].try_into().expect("16");
            format!(
                "[{}]:{}",
                std::net::Ipv6Addr::from(ip),
                u16::from_be_bytes([addr[2], addr[3]])
            )
        }
        libc::AF_UNIX => {
            let path = &addr[2..];
            match path.first() {
                // (Node pads an abstract name with NULs to the whole sun_path.)
                Some(0) => format!(
                    "@{}",
                    String::from_utf8_lossy(&path[1..]).trim_end_matches('\0')
                ),
                _ => String::from_utf8_lossy(path.split(|&b| b == 0).next().unwrap_or(&[]))
                    .into_owned(),
            }
        }
        _ => format!("address of family {fam}"),
    }
}

/// Whether the listening socket handed in `g` may stand for the image's `l`: same family, type
/// and address, listening.
fn stands_for(g: &OwnedFd, l: &Listener) -> bool {
    let fd = g.as_raw_fd();
    let opt = |o| crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, o).unwrap_or(-1);
    opt(libc::SO_DOMAIN) == l.family
        && opt(libc::SO_TYPE) == l.ty
        && opt(libc::SO_ACCEPTCONN) == 1
        && crate::sys::getsockname(fd).is_ok_and(|a| a == l.addr)
}

/// A listening socket made again (or the one handed in; not for one the process connects to,
/// `own_connections`).
/// `shared`: another listener of the image has its address. Bound with SO_REUSEPORT, even one
/// that turned it off since it was bound (as that one did; the caller turns it off again once
/// every listener is bound).
fn listener(
    l: &Listener,
    given: &[OwnedFd],
    own_connections: bool,
    shared: bool,
) -> Result<OwnedFd, String> {
    let what = describe(&l.addr);
    let matches = |g: &OwnedFd| crate::sys::getsockname(g.as_raw_fd()).is_ok_and(|a| a == l.addr);
    if own_connections && given.iter().any(matches) {
        return Err(format!(
            "listening socket {what}: the process connected to it itself (connections it accepted, or that wait in its queue), which a listening socket handed in cannot be given"
        ));
    }
    if let Some(g) = given.iter().find(|g| stands_for(g, l)) {
        return g
            .try_clone()
            .map_err(|e| format!("listening socket {what}: {e}"));
    }
    let s = crate::sys::socket(l.family, l.ty, l.protocol)
        .map_err(|e| format!("listening socket {what}: cannot create it: {e}"))?;
    let fd = s.as_raw_fd();
    let set = |level, opt, v: bool| {
        crate::sys::setsockopt_int(fd, level, opt, i32::from(v))
            .map_err(|e| format!("listening socket {what}: cannot set option {opt}: {e}"))
    };
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR, l.reuseaddr)?;
    if l.reuseport || shared {
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT, true)?;
    }
    if l.family == libc::AF_INET6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, l.v6only)?;
    }
    // Before bind: IP_FREEBIND, IP_TRANSPARENT and SO_BINDTODEVICE decide what it may bind to.
    super::sockopts::apply(fd, &l.opts, &format!("listening on {what}"))?;
    in_dir(&l.dir, || {
        bind_again(fd, &l.addr, l.path_id, l.unlinked, l.file)?;
        crate::sys::listen(fd, l.backlog.max(1))?;
        // (One the process connects to itself still has its file: see the checkpoint.)
        name_again(&l.addr, l.unlinked, &l.moved_to, l.path_id)
    })
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRINUSE) && !l.reuseaddr && l.family != libc::AF_UNIX {
            format!(
                "listening socket {what}: the address is in use: by a socket of another process (stop it, or hand a listening socket in with --listen-fd), or by the first life's connections that its server closed first, waiting in TIME_WAIT for about a minute, which a listener without SO_REUSEADDR cannot bind through (set SO_REUSEADDR before binding, as servers do)"
            )
        } else if e.raw_os_error() == Some(libc::EADDRINUSE) {
            let at = sun_path_of(&l.addr, &l.dir);
            let held = match at.as_deref().map(std::fs::symlink_metadata) {
                // (An abstract name has no file.)
                None => "stop what holds it",
                Some(Ok(m)) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                    "something that is not a socket is at its path: move it away"
                }
                Some(_) => "stop what holds it, or remove a stale socket file",
            };
            format!(
                "listening socket {what}: the address is in use ({held}, or hand a listening socket in with --listen-fd)"
            )
        } else if e.raw_os_error() == Some(libc::EACCES) && l.family != libc::AF_UNIX {
            // A daemon that bound a port below 1024 as root, then gave root up: restored with
            // its credentials, the restorer may not bind it again.
            format!(
                "listening socket {what}: cannot bind and listen: {e}: a port below net.ipv4.ip_unprivileged_port_start takes CAP_NET_BIND_SERVICE, which the process's credentials do not have; have a privileged parent bind it and hand it in with --listen-fd (or systemd socket activation)"
            )
        } else {
            format!("listening socket {what}: cannot bind and listen: {e}")
        }
    })?;
    Ok(s)
}

/// The path of the file an AF_UNIX path address names (relative ones in `dir`); `None` for
/// an abstract name or another family.
fn sun_path_of(addr: &[u8], dir: &str) -> Option<std::path::PathBuf> {
    let fam = addr
        .get(..2)
        .map(|b| i32::from(u16::from_ne_bytes([b[0], b[1]])));
    (fam == Some(libc::AF_UNIX) && addr.get(2).is_some_and(|&b| b != 0))
        .then(|| std::path::Path::new(dir).join(sun_path(addr)))
}

/// The sockets of `clients` connected to listener `l` again, in its queue's order, by inode.
fn connect_waiting(l: &Listener, clients: &[&Connecting]) -> Result<Vec<(u64, OwnedFd)>, String> {
    let mut connected = Vec::new();
    in_dir(&l.dir, || {
        for c in clients {
            let sock = c.sock.make_io()?;
            crate::sys::connect_nowait(sock.as_raw_fd(), &l.addr)?;
            if c.send_shutdown {
                crate::sys::shutdown(sock.as_raw_fd(), libc::SHUT_WR)?;
            }
            connected.push((c.sock.ino, sock));
        }
        Ok(())
    })
    .map_err(|e| {
        format!(
            "listening socket {}: cannot queue its waiting connections again: {e}",
            describe(&l.addr)
        )
    })?;
    Ok(connected)
}

/// A connection to listener `l` (whose socket is `fd`) made again: (the connecting socket, the
/// accepted one), which has the listener's name as the first life's had.
fn accept_again(l: &Listener, fd: &OwnedFd) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let client = crate::sys::socket(libc::AF_UNIX, l.ty, 0)?;
    in_dir(&l.dir, || {
        crate::sys::connect_nowait(client.as_raw_fd(), &l.addr)
    })?;
    let accepted = crate::sys::accept_nowait(fd.as_raw_fd())?;
    Ok((client, accepted))
}

/// Where an in-process pair end's peer credentials (SO_PEERCRED: the PID and effective ids of
/// whoever made the pair, as `socketpair` or `connect` recorded them) are not this process's
/// own now: made by a child and passed over (CRIU's sock_peercred), or before the process
/// changed its ids. Made again at restore, the pair would give the restored process's own.
/// `paired`: the other end is open here (or a datagram pair's end whose other end closed); else
/// the other end was closed, most likely by a server that has ended since it accepted.
fn foreign_peer_credentials(fd: i32, paired: bool) -> Option<String> {
    let mut cred = [0u8; 12];
    let n = crate::sys::getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred).ok()?;
    if n < 12 {
        return None;
    }
    let word = |i: usize| u32::from_ne_bytes(cred[i..i + 4].try_into().expect("4 bytes"));
    let (pid, uid, gid) = (word(0) as i32, word(4), word(8));
    let mine = (
        crate::sys::getpid(),
        crate::sys::geteuid(),
        crate::sys::getegid(),
    );
    // (PID 0: no credentials recorded.)
    (pid != 0 && (pid, uid, gid) != mine).then(|| {
        if paired {
            format!(
                "its peer credentials (SO_PEERCRED: PID {pid}, uid {uid}, gid {gid}) are not this process's (PID {}, uid {}, gid {}): the pair was made by another process (a child) and passed over, or before the process changed its ids; made again at restore it would give the process's own, so make it again after restore",
                mine.0, mine.1, mine.2
            )
        } else {
            format!(
                "a connection whose other end was closed, by process {pid} (uid {uid}, gid {gid}; SO_PEERCRED): most likely a server that has ended since (a Python multiprocessing Manager shut down while one of its proxies was kept); it only reads end of file and its writes fail; made again at restore its peer credentials would be the process's own: close it before the checkpoint, or leave it out (after restore it is the same dead end)"
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_half_closed_pairs_are_told_apart_from_foreign_sockets() {
        let (a, b) = crate::sys::socketpair(libc::SOCK_STREAM).unwrap();
        let (c, d) = crate::sys::socketpair(libc::SOCK_STREAM).unwrap();
        drop(d);
        let (e, _f) = crate::sys::socketpair(libc::SOCK_STREAM).unwrap();
        let ino = |fd: &OwnedFd| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .ino()
        };
        // `e`'s other end is left out of the list: as if it were in another process.
        let fds: Vec<(i32, u64)> = [&a, &b, &c, &e]
            .iter()
            .map(|f| (f.as_raw_fd(), ino(f)))
            .collect();
        let r = classify(&fds, &[], &mut Default::default());
        let pair = |i: usize| match &r[i].1 {
            Ok(Socket::Pair(p)) => p.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(pair(0).pair, pair(1).pair);
        assert!(pair(0).peer_open && pair(1).peer_open);
        assert!(!pair(2).peer_open);
        let why = r[3].1.as_ref().unwrap_err();
        assert!(why.1.contains("in another process"), "{why:?}");
    }

    #[test]
    fn kernel_crypto_and_packet_sockets_are_named_and_not_told_to_listen() {
        let open = |family, ty, protocol| crate::sys::socket(family, ty, protocol).ok();
        // (AF_PACKET needs CAP_NET_RAW; AF_ALG its module.)
        let socks: Vec<_> = [
            ("AF_ALG", open(libc::AF_ALG, libc::SOCK_SEQPACKET, 0)),
            ("AF_PACKET", open(libc::AF_PACKET, libc::SOCK_RAW, 0)),
        ]
        .into_iter()
        .filter_map(|(n, s)| Some((n, s?)))
        .collect();
        assert!(!socks.is_empty() || crate::sys::geteuid() != 0);
        let fds: Vec<(i32, u64)> = socks
            .iter()
            .map(|(_, f)| {
                use std::os::unix::fs::MetadataExt;
                let ino = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
                    .unwrap()
                    .ino();
                (f.as_raw_fd(), ino)
            })
            .collect();
        let r = classify(&fds, &[], &mut Default::default());
        for ((name, _), (_, why)) in socks.iter().zip(&r) {
            let why = &why.as_ref().unwrap_err().1;
            assert!(why.contains(name), "{why}");
            assert!(why.contains("not supported"), "{why}");
            assert!(!why.contains("listening"), "{why}");
        }
    }

    #[test]
    fn addresses_read_well() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(describe(&v4), "127.0.0.1:8080");
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/a.sock\0");
        assert_eq!(describe(&un), "/run/a.sock");
    }
}
