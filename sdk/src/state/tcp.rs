//! Established TCP connections, through the kernel's repair mode (TCP_REPAIR, which takes
//! CAP_NET_ADMIN over the socket's network namespace).
//!
//! In repair mode a socket sends nothing and lets its sequence numbers, its queues and its
//! negotiated options be read and written. The checkpoint's handler, while every thread is
//! stopped, puts each connection in repair mode, reads where both directions stand
//! (`TCP_QUEUE_SEQ`), copies what waits in its receive queue and in its send queue (sent but
//! not acknowledged, and not sent yet), its window and timestamp, and lets it go again without a
//! window probe. At restore the launcher makes the socket in repair mode, sets the sequence
//! numbers, binds and connects it (no handshake: the peer already has the connection), sets the
//! options the two ends agreed on, queues the bytes again, and only once every connection of the
//! image is made leaves repair mode (a window probe then tells the peer the connection is back):
//! the unsent bytes go out as the first life would have sent them.
//!
//! A connection has two ends. One whose other end is in the process too (a loopback pair) comes
//! back whole. One whose peer is elsewhere can only be moved: the image is taken as the process
//! ends (`exit_after_save`), the first life's socket is closed in repair mode, so silently, and
//! the peer meets the connection again at restore. A connection the first life goes on using
//! would exist twice, and is refused.
//!
//! Only ESTABLISHED connections, not shut down: a connection half closed (FIN sent or received)
//! or being made is refused by name.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::sockopts::SockOpt;
use super::PayloadRef;
use crate::sys;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpConnection {
    pub ino: u64,
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// Raw `struct sockaddr`s of its two ends.
    pub local: Vec<u8>,
    pub peer: Vec<u8>,
    /// The sequence number after the last byte written (`write_seq`), and after the last byte
    /// received (`rcv_nxt`).
    pub send_seq: u32,
    pub recv_seq: u32,
    /// The send queue (sent and not acknowledged, then not sent), and how many of its last
    /// bytes were not sent.
    pub sendq: Option<PayloadRef>,
    pub unsent: u32,
    /// What waits to be read.
    pub recvq: Option<PayloadRef>,
    /// The maximum segment size, the options negotiated (TCPI_OPT_*), the window scales.
    pub mss: u32,
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// Its timestamp clock (TCP_TIMESTAMP), when timestamps were agreed on.
    pub timestamp: u32,
    /// `struct tcp_repair_window`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
    pub reuseaddr: bool,
    pub v6only: bool,
    pub opts: Vec<SockOpt>,
    /// A connection moved (its peer elsewhere): the nftables table (`inet`) that holds its
    /// peer's packets from the first life's end until the restore has it again (see [`lock`]);
    /// empty: none.
    pub lock: String,
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const REPAIR_ON: i32 = 1;
const REPAIR_OFF: i32 = 0;
/// Leaves repair mode without a window probe (the peer saw nothing happen).
const REPAIR_OFF_NO_WP: i32 = -1;
const NO_QUEUE: i32 = 0;
const RECV_QUEUE: i32 = 1;
const SEND_QUEUE: i32 = 2;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const SIOCOUTQ: u64 = 0x5411;
const SIOCOUTQNSD: u64 = 0x894B;
const SIOCINQ: u64 = 0x541B;
const CAP_NET_ADMIN: u32 = 12;
/// The most bytes a moved connection's queues may hold together (see [`TcpCopy::fill`]).
pub const MOVED_QUEUE_MAX: u64 = 1 << 20;
/// The most bytes one queue may hold in an image.
pub const MAX_QUEUE: u64 = 64 << 20;

/// Set by a checkpoint asked to restore established connections (`tcp_established`).
static ESTABLISHED: AtomicBool = AtomicBool::new(false);
/// Set by a checkpoint that ends its process once the image is written: connections whose
/// peer is elsewhere are then moved rather than refused (see the module's comment).
static FIRST_LIFE_ENDS: AtomicBool = AtomicBool::new(false);

/// The environment variable that asks for established connections (`1`).
pub const ENV: &str = "THAW_TCP_ESTABLISHED";

pub(crate) fn established_from_env() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
}

pub(crate) fn set_mode(established: bool, first_life_ends: bool) {
    ESTABLISHED.store(established, Ordering::Relaxed);
    FIRST_LIFE_ENDS.store(first_life_ends, Ordering::Relaxed);
}

/// Whether the process may use repair mode (CAP_NET_ADMIN in its effective set; the socket's
/// network namespace is assumed to be its own).
fn may_repair() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    crate::procfs::field_hex(&status, "CapEff") & (1 << CAP_NET_ADMIN) != 0
}

/// Whether TCP socket `fd` holds an ESTABLISHED connection.
pub(crate) fn established(fd: i32) -> bool {
    let mut info = [0u8; 8];
    sys::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info).is_ok()
        && info[0] == TCP_ESTABLISHED
}

/// Describes the ESTABLISHED connection `fd` for the scan (the handler fills in its queues and
/// sequence numbers, see [`TcpCopy`]), or says why it is not restored, as words to add to the
/// refusal of a TCP connection. `peer_here`: its other end is a socket of this process too.
pub(crate) fn dump(
    fd: i32,
    ino: u64,
    family: i32,
    peer_here: bool,
) -> Result<TcpConnection, String> {
    if !ESTABLISHED.load(Ordering::Relaxed) {
        return Err(format!(" (or have established connections restored, {ENV}=1 — Checkpoint::tcp_established in Rust —, which takes CAP_NET_ADMIN at checkpoint and restore: one of the process's own comes back whole; one to another process is moved by a checkpoint that exits after saving, as a live migration, the image then being for one restore)"));
    }
    if !may_repair() {
        return Err(" (thaw restores a TCP connection through the kernel's repair mode, which takes CAP_NET_ADMIN at checkpoint and at restore)".into());
    }
    if !peer_here && !FIRST_LIFE_ENDS.load(Ordering::Relaxed) {
        return Err(" (one whose peer is elsewhere is moved only by a checkpoint that ends the process once the image is written, THAW_EXIT_AFTER_SAVE: used by both lives, it would exist twice)".into());
    }
    if sys::poll_now(fd, libc::POLLRDHUP)
        .is_ok_and(|ev| ev & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
    {
        return Err(" (it was shut down, or an error waits on it)".into());
    }
    let (Ok(local), Ok(peer)) = (sys::getsockname(fd), sys::getpeername(fd)) else {
        return Err(" (its addresses cannot be read)".into());
    };
    let opt = |level, o| sys::getsockopt_int(fd, level, o).unwrap_or(0) != 0;
    let mut opts = super::sockopts::dump(fd, family, libc::SOCK_STREAM, libc::IPPROTO_TCP)?;
    // The segment size is the connection's, set again through repair mode. Multicast options
    // mean nothing to a stream, which may not be given them: an accepted connection's TTL for
    // multicast is its SYN's, and one accepted by a dual-stack listener from an IPv4 client
    // reads IPv6 ones it cannot be given.
    opts.retain(|o| {
        (o.level, o.name) != (libc::IPPROTO_TCP, libc::TCP_MAXSEG)
            && !super::sockopts::name(o).contains("_MULTICAST_")
    });
    let lock = if peer_here {
        String::new()
    } else {
        lock_table(crate::sys::getpid())
    };
    Ok(TcpConnection {
        ino,
        family,
        local,
        peer,
        lock,
        reuseaddr: opt(libc::SOL_SOCKET, libc::SO_REUSEADDR),
        v6only: family == libc::AF_INET6 && opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        opts,
        ..Default::default()
    })
}

fn set(fd: i32, opt: i32, v: i32) -> i64 {
    match sys::setsockopt_int(fd, libc::IPPROTO_TCP, opt, v) {
        Ok(()) => 0,
        Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn get(fd: i32, opt: i32) -> Result<u32, i64> {
    sys::getsockopt_int(fd, libc::IPPROTO_TCP, opt)
        .map(|v| v as u32)
        .map_err(|e| -i64::from(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// What the handler found wrong (in [`TcpCopy::status`]); other negative values are errnos.
const CHANGED: i64 = -1_000_001;
const TOO_BIG: i64 = -1_000_002;
const URGENT: i64 = -1_000_003;

/// Whether an urgent byte (`MSG_OOB`) is in the receive queue of `fd`, taken already or not:
/// SIOCINQ counts the bytes before its mark only, and a peek stops there, so that the bytes
/// after it would be left out (and the sequence numbers put back would lie); repair mode cannot
/// queue it again as urgent. SIOCINQ counts the whole queue where urgent bytes are read inline
/// (`SO_OOBINLINE`): counted both ways, the two differ. Async-signal-safe.
fn urgent_in_queue(fd: i32) -> bool {
    let inline = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_OOBINLINE).unwrap_or(0);
    let mut n = [0i64; 2];
    for (v, slot) in n.iter_mut().enumerate() {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_OOBINLINE, v as i32);
        *slot = sys::ioctl_int(fd, SIOCINQ);
    }
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_OOBINLINE, inline);
    n[0] != n[1]
}

/// A connection the checkpoint's handler reads in repair mode (allocation-free, into buffers
/// made beforehand, which the snapshot does not have).
#[derive(Debug)]
pub struct TcpCopy {
    pub fd: i32,
    pub ino: u64,
    /// Leave it in repair mode: the process ends after the snapshot, and its socket is then
    /// closed without a word to the peer (or [`TcpCopy::resume`] lets it go).
    keep: bool,
    sendq: sys::DontForkBuf,
    recvq: sys::DontForkBuf,
    /// 1 once read, or a negative errno or code.
    status: AtomicI64,
    /// send_seq, recv_seq, send queue length, unsent, receive queue length, mss, options word
    /// (options | snd_wscale << 8 | rcv_wscale << 16), timestamp, then the window's 5 words.
    words: [AtomicU64; 13],
    repairing: AtomicBool,
    /// SO_REUSEADDR before repair mode, which forces it and clears it as it is left.
    reuse: AtomicBool,
}

impl TcpCopy {
    /// Room for twice what is queued now each way, at least 256 KiB.
    pub fn new(fd: i32, ino: u64, keep: bool) -> std::io::Result<TcpCopy> {
        let room = |q: i64| ((q.max(0) as usize) * 2 + 1).max(256 << 10);
        Ok(TcpCopy {
            fd,
            ino,
            keep,
            sendq: sys::DontForkBuf::new(room(sys::ioctl_int(fd, SIOCOUTQ)))?,
            recvq: sys::DontForkBuf::new(room(sys::ioctl_int(fd, SIOCINQ)))?,
            status: AtomicI64::new(0),
            words: Default::default(),
            repairing: AtomicBool::new(false),
            reuse: AtomicBool::new(false),
        })
    }

    /// Its buffers, which the snapshot leaves out on purpose.
    pub fn own_buffers(&self) -> [(u64, u64); 2] {
        [&self.sendq, &self.recvq].map(|b| (b.addr(), b.addr() + b.len() as u64))
    }

    /// In the restored process: the buffers were never in the image (their place may be
    /// another's by now), and the connection at its number is the restore's, out of repair mode.
    pub fn abandon(self) {
        std::mem::forget(self);
    }

    /// In the handler, every other thread stopped: reads the connection in repair mode.
    /// Async-signal-safe.
    pub fn take(&self) {
        // Its queues peeked from their heads, whatever peek offset the process set
        // (SO_PEEK_OFF, which TCP honours since Linux 6.9: a peek would start there, and move
        // it on), which it keeps.
        let off = sys::getsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
        let set_aside = off >= 0 && sys::set_peek_off(self.fd, -1).is_ok();
        let r = self.read();
        if set_aside {
            let _ = sys::set_peek_off(self.fd, off);
        }
        self.status.store(r, Ordering::Relaxed);
        if !self.keep || r != 1 {
            self.resume();
        }
    }

    /// Lets a connection kept in repair mode go on (the checkpoint failed, or the process goes
    /// on after all). Async-signal-safe.
    pub fn resume(&self) {
        if self.repairing.swap(false, Ordering::Relaxed) {
            set(self.fd, TCP_REPAIR_QUEUE, NO_QUEUE);
            set(self.fd, TCP_REPAIR, REPAIR_OFF_NO_WP);
            // (Leaving repair mode cleared it: a listener bound again on the port of an
            // accepted connection's would then find the port taken.)
            if self.reuse.load(Ordering::Relaxed) {
                let _ = sys::setsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
            }
        }
    }

    fn read(&self) -> i64 {
        let fd = self.fd;
        let reuse = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap_or(0);
        self.reuse.store(reuse != 0, Ordering::Relaxed);
        let r = set(fd, TCP_REPAIR, REPAIR_ON);
        if r < 0 {
            return r;
        }
        self.repairing.store(true, Ordering::Relaxed);
        let mut info = [0u8; 8];
        if let Err(e) = sys::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info) {
            return -i64::from(e.raw_os_error().unwrap_or(libc::EIO));
        }
        if info[0] != TCP_ESTABLISHED {
            return CHANGED;
        }
        let (outq, unsent, inq) = (
            sys::ioctl_int(fd, SIOCOUTQ),
            sys::ioctl_int(fd, SIOCOUTQNSD),
            sys::ioctl_int(fd, SIOCINQ),
        );
        for n in [outq, unsent, inq] {
            if n < 0 {
                return n;
            }
        }
        if urgent_in_queue(fd) {
            return URGENT;
        }
        if outq as usize >= self.sendq.len() || inq as usize >= self.recvq.len() {
            return TOO_BIG;
        }
        let mss = match get(fd, libc::TCP_MAXSEG) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let options = info[5];
        let timestamp = if options & TCPI_OPT_TIMESTAMPS != 0 {
            match get(fd, TCP_TIMESTAMP) {
                Ok(v) => v,
                Err(e) => return e,
            }
        } else {
            0
        };
        let mut window = [0u8; 20];
        if let Err(e) = sys::getsockopt_into(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut window)
        {
            return -i64::from(e.raw_os_error().unwrap_or(libc::EIO));
        }
        // Each queue: its sequence number, then its bytes (peeked: one more than counted
        // asked for, to see that no more came), then the number again.
        let mut seqs = [0u32; 2];
        for (i, (queue, len, buf)) in [
            (SEND_QUEUE, outq, &self.sendq),
            (RECV_QUEUE, inq, &self.recvq),
        ]
        .into_iter()
        .enumerate()
        {
            let r = set(fd, TCP_REPAIR_QUEUE, queue);
            if r < 0 {
                return r;
            }
            let seq = match get(fd, TCP_QUEUE_SEQ) {
                Ok(v) => v,
                Err(e) => return e,
            };
            if len > 0 {
                let got = sys::recv_peek_raw(fd, buf.addr(), len as usize + 1);
                if got < 0 {
                    return got;
                }
                if got != len {
                    return CHANGED;
                }
            }
            if get(fd, TCP_QUEUE_SEQ) != Ok(seq) {
                return CHANGED;
            }
            seqs[i] = seq;
        }
        set(fd, TCP_REPAIR_QUEUE, NO_QUEUE);
        if sys::ioctl_int(fd, SIOCOUTQ) != outq || sys::ioctl_int(fd, SIOCINQ) != inq {
            return CHANGED;
        }
        let w = |i: usize| {
            u64::from(u32::from_ne_bytes(
                window[i * 4..i * 4 + 4].try_into().expect("4"),
            ))
        };
        let values = [
            u64::from(seqs[0]),
            u64::from(seqs[1]),
            outq as u64,
            unsent as u64,
            inq as u64,
            u64::from(mss),
            u64::from(options) | u64::from(info[6] & 15) << 8 | u64::from(info[6] >> 4) << 16,
            u64::from(timestamp),
            w(0),
            w(1),
            w(2),
            w(3),
            w(4),
        ];
        for (slot, v) in self.words.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
        1
    }

    /// After the snapshot: fills `c` in, its queues written with `append`. `Err((again, why))`:
    /// the checkpoint starts again (`again`: the connection changed or its queue grew while it
    /// was read) or is refused.
    pub fn fill(
        &self,
        c: &mut TcpConnection,
        append: &mut dyn FnMut(&[u8]) -> std::io::Result<PayloadRef>,
    ) -> Result<(), (bool, String)> {
        match self.status.load(Ordering::Relaxed) {
            1 => {}
            CHANGED | 0 => {
                return Err((true, "a TCP connection changed while the checkpoint read it".into()))
            }
            TOO_BIG => {
                return Err((true, "a TCP connection's queue grew while the checkpoint read it".into()))
            }
            URGENT => {
                return Err((false, "urgent data (MSG_OOB) waits in its receive queue (or was read out of its middle): repair mode cannot queue it again as urgent, and the bytes after it would be lost; read past it before the checkpoint".into()))
            }
            e if e == -i64::from(libc::EPERM) => {
                return Err((false, "the kernel refused its repair mode (TCP_REPAIR: EPERM; it takes CAP_NET_ADMIN over the socket's network namespace)".into()))
            }
            e => {
                return Err((
                    false,
                    format!(
                        "cannot read it in repair mode: {}",
                        std::io::Error::from_raw_os_error((-e) as i32)
                    ),
                ))
            }
        }
        let v: Vec<u64> = self
            .words
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        let (outq, inq) = (v[2] as usize, v[4] as usize);
        if outq as u64 > MAX_QUEUE || inq as u64 > MAX_QUEUE {
            return Err((
                false,
                format!(
                    "more than {} MiB wait in one of its queues",
                    MAX_QUEUE >> 20
                ),
            ));
        }
        // A moved connection with much in its queues, its peer still sending: restores were seen
        // to fail (the sent bytes not taken again) or to crawl (megabytes resent in slow start)
        // — CRIU's socket-tcpbuf.
        if !c.lock.is_empty() && (outq + inq) as u64 > MOVED_QUEUE_MAX {
            return Err((false, format!("a connection to another process with more than {} KiB in its queues ({outq} bytes to send, {inq} received) is not moved: let them drain first (read what waits; the peer reading takes what this end sends)", MOVED_QUEUE_MAX >> 10)));
        }
        let io = |e: std::io::Error| (false, format!("writing its queued bytes: {e}"));
        c.send_seq = v[0] as u32;
        c.recv_seq = v[1] as u32;
        if outq > 0 {
            c.sendq = Some(append(&self.sendq.as_slice()[..outq]).map_err(io)?);
        }
        c.unsent = v[3] as u32;
        if inq > 0 {
            c.recvq = Some(append(&self.recvq.as_slice()[..inq]).map_err(io)?);
        }
        c.mss = v[5] as u32;
        c.options = v[6] as u8;
        c.snd_wscale = (v[6] >> 8) as u8;
        c.rcv_wscale = (v[6] >> 16) as u8;
        c.timestamp = v[7] as u32;
        for (i, w) in c.window.iter_mut().enumerate() {
            *w = v[8 + i] as u32;
        }
        Ok(())
    }
}

/// A checkpoint that failed after its handler read a connection kept in repair mode (the
/// snapshot could not be forked) lets it go: left so, the process could neither send nor
/// receive on it.
impl Drop for TcpCopy {
    fn drop(&mut self) {
        self.resume();
    }
}

/// The nftables table of the connections process `pid` moved.
fn lock_table(pid: i32) -> String {
    format!("{LOCK_PREFIX}{pid}")
}

const LOCK_PREFIX: &str = "thaw_lock_";

/// An nftables match for packets from `from` to `to` (raw sockaddrs; an IPv4-mapped address is
/// IPv4 on the wire).
fn nft_match(from: &[u8], to: &[u8]) -> Option<String> {
    let end = |a: &[u8]| {
        let (ip, port) = super::sockets::endpoint(a)?;
        Some((std::net::Ipv6Addr::from(ip).to_canonical(), port))
    };
    let ((fip, fport), (tip, tport)) = (end(from)?, end(to)?);
    let proto = if fip.is_ipv4() { "ip" } else { "ip6" };
    Some(format!(
        "{proto} saddr {fip} tcp sport {fport} {proto} daddr {tip} tcp dport {tport}"
    ))
}

fn nft(script: &str) -> Result<(), String> {
    // (By its path: a PATH without the sbin directories is common.)
    let nft = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    let out = std::process::Command::new(nft)
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Holds the packets of the peers of `moved` connections (nftables drops them as they come in)
/// from before the checkpoint reads them until a restore has the connections again and
/// [`unlock`]s them: arriving after the read, the first life would take and acknowledge them,
/// and arriving while no socket had the connection, they would be answered with a reset. They
/// are sent again by the peers (as to a host that went quiet) and reach the restored connection.
/// The hold is lifted when the [`Lock`] is dropped (the checkpoint failed or starts again); an
/// exit after saving keeps it, and a restored process forgets it.
pub(crate) fn lock(moved: &[&TcpConnection]) -> Result<Option<Lock>, String> {
    let Some(table) = moved.first().map(|c| c.lock.clone()) else {
        return Ok(None);
    };
    let mut script = format!(
        "add table inet {table}; add chain inet {table} input {{ type filter hook input priority -300 ; }}; "
    );
    for c in moved {
        let m = nft_match(&c.peer, &c.local).ok_or("a malformed address")?;
        script += &format!("add rule inet {table} input {m} drop; ");
    }
    nft(&script).map_err(|e| {
        format!("a TCP connection to another process is moved by holding its peer's packets (nftables) while the process is away, which failed ({e}): install nft (Debian's nftables), or close the connection before the checkpoint")
    })?;
    Ok(Some(Lock(table)))
}

/// The hold [`lock`] put on moved connections' peers, lifted when dropped.
#[derive(Debug)]
pub(crate) struct Lock(String);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = unlock(&self.0);
    }
}

/// Lets the packets of the connections moved in table `table` through again (a restore has
/// them); a table already gone is no error.
pub fn unlock(table: &str) -> Result<(), String> {
    match nft(&format!("delete table inet {table}")) {
        Err(e) if !e.contains("No such file") => Err(format!(
            "cannot let the moved TCP connections' packets through again (nft delete table inet {table}): {e}"
        )),
        _ => Ok(()),
    }
}

/// Checks a connection from an image before anything is made of it.
/// `pid`: the image's process, whose first life named the hold (another's is not the image's to
/// lift).
pub fn validate(c: &TcpConnection, pid: i32) -> Result<(), String> {
    if c.family != libc::AF_INET && c.family != libc::AF_INET6 {
        return Err(format!("a TCP connection of family {}", c.family));
    }
    let len = super::inet::addr_len(c.family);
    for a in [&c.local, &c.peer] {
        if a.len() != len || super::inet::family_of(a) != c.family {
            return Err("a TCP connection with a malformed address".into());
        }
    }
    let qlen = |q: &Option<PayloadRef>| q.map_or(0, |p| p.len);
    if qlen(&c.sendq) > MAX_QUEUE
        || qlen(&c.recvq) > MAX_QUEUE
        || u64::from(c.unsent) > qlen(&c.sendq)
    {
        return Err("a TCP connection with malformed queues".into());
    }
    // (Handed to nft: only the name thaw gives.)
    if !c.lock.is_empty() && (c.lock != lock_table(pid) || nft_match(&c.peer, &c.local).is_none()) {
        return Err("a TCP connection with a malformed lock".into());
    }
    if c.snd_wscale > 14 || c.rcv_wscale > 14 {
        return Err("a TCP connection with a malformed window scale".into());
    }
    Ok(())
}

/// A connection made again, still in repair mode; [`Made::finish`] lets it go.
#[derive(Debug)]
pub struct Made {
    pub sock: OwnedFd,
    unsent: Vec<u8>,
    reuseaddr: bool,
    what: String,
}

impl TcpConnection {
    pub fn describe(&self) -> String {
        format!(
            "TCP connection {} to {}",
            super::sockets::describe(&self.local),
            super::sockets::describe(&self.peer)
        )
    }

    /// Makes the connection again in repair mode: sequence numbers, ends, options, queues
    /// (`bytes` reads a payload).
    pub fn make(
        &self,
        bytes: &mut dyn FnMut(PayloadRef) -> Result<Vec<u8>, String>,
    ) -> Result<Made, String> {
        let what = self.describe();
        let fail = |doing: &str, e: std::io::Error| format!("{what}: cannot {doing}: {e}");
        let sock = sys::socket(self.family, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            .map_err(|e| fail("create it", e))?;
        let fd = sock.as_raw_fd();
        let tcp = |opt, v: i32, doing: &str| {
            sys::setsockopt_int(fd, libc::IPPROTO_TCP, opt, v).map_err(|e| fail(doing, e))
        };
        if let Err(e) = sys::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, REPAIR_ON) {
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                format!("{what}: restoring a TCP connection takes CAP_NET_ADMIN over the network namespace (the kernel's repair mode): restore as root (or with CAP_NET_ADMIN), or close the connection before the checkpoint")
            } else {
                fail("enter repair mode", e)
            });
        }
        if self.family == libc::AF_INET6 {
            sys::setsockopt_int(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                i32::from(self.v6only),
            )
            .map_err(|e| fail("set IPV6_V6ONLY", e))?;
        }
        super::sockopts::apply(fd, &self.opts, &what)?;
        let mut queue = |q: &Option<PayloadRef>| {
            q.map(&mut *bytes)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let sendq = queue(&self.sendq)?;
        let recvq = queue(&self.recvq)?;
        // Where each queue starts: writing its bytes again moves it to where it stood.
        tcp(TCP_REPAIR_QUEUE, RECV_QUEUE, "choose its receive queue")?;
        tcp(
            TCP_QUEUE_SEQ,
            self.recv_seq.wrapping_sub(recvq.len() as u32) as i32,
            "set its receive sequence number",
        )?;
        tcp(TCP_REPAIR_QUEUE, SEND_QUEUE, "choose its send queue")?;
        tcp(
            TCP_QUEUE_SEQ,
            self.send_seq.wrapping_sub(sendq.len() as u32) as i32,
            "set its send sequence number",
        )?;
        // The segment size before the connection is made, which sizes the buffers of the queues
        // (and counts them in segments): made with the default of 536 bytes, a send queue of
        // megabytes would be thousands of segments, sent again at a few per round trip.
        // (TCP_MAXSEG takes at most 32767; the options below give it its own after.)
        if self.mss >= 88 {
            tcp(
                libc::TCP_MAXSEG,
                self.mss.min(32767) as i32,
                "set its segment size",
            )?;
        }
        sys::bind(fd, &self.local).map_err(|e| fail("bind it", e))?;
        sys::connect(fd, &self.peer).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                format!("{what}: the connection is open here already (the first life's, or another restore's): end that first")
            } else {
                fail("connect it", e)
            }
        })?;
        // The options the two ends agreed on, before any byte is queued.
        let mut opts = Vec::new();
        let mut opt = |code: u32, val: u32| {
            opts.extend_from_slice(&code.to_ne_bytes());
            opts.extend_from_slice(&val.to_ne_bytes());
        };
        if self.options & TCPI_OPT_SACK != 0 {
            opt(TCPOPT_SACK_PERM, 0);
        }
        if self.options & TCPI_OPT_WSCALE != 0 {
            opt(
                TCPOPT_WINDOW,
                u32::from(self.snd_wscale) | u32::from(self.rcv_wscale) << 16,
            );
        }
        if self.options & TCPI_OPT_TIMESTAMPS != 0 {
            opt(TCPOPT_TIMESTAMP, 0);
        }
        opt(TCPOPT_MAXSEG, self.mss);
        sys::setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &opts)
            .map_err(|e| fail("set its options", e))?;
        if self.options & TCPI_OPT_TIMESTAMPS != 0 {
            tcp(TCP_TIMESTAMP, self.timestamp as i32, "set its timestamp")?;
        }
        // No segment size of the user's any more (it served the connection's making).
        tcp(libc::TCP_MAXSEG, 0, "clear its segment size")?;
        let sent = sendq.len() - (self.unsent as usize).min(sendq.len());
        tcp(TCP_REPAIR_QUEUE, RECV_QUEUE, "choose its receive queue")?;
        queue_bytes(fd, &recvq).map_err(|e| fail("queue its received bytes again", e))?;
        tcp(TCP_REPAIR_QUEUE, SEND_QUEUE, "choose its send queue")?;
        queue_bytes(fd, &sendq[..sent]).map_err(|e| fail("queue its sent bytes again", e))?;
        let window: Vec<u8> = self.window.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // (Where the kernel refuses the window as read — EINVAL: its edges do not fit the
        // sequence numbers — the connection learns it from the peer's answer to its probe.)
        match sys::setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &window) {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                return Err(fail("set its window", e))
            }
            _ => {}
        }
        tcp(TCP_REPAIR_QUEUE, NO_QUEUE, "leave its queues")?;
        Ok(Made {
            sock,
            unsent: sendq[sent..].to_vec(),
            reuseaddr: self.reuseaddr,
            what,
        })
    }
}

impl Made {
    /// Leaves repair mode: the peer is told by a window probe (every connection of the image is
    /// made by then, so a peer of the process's own is there to hear it).
    pub fn leave_repair(&self) -> Result<(), String> {
        sys::setsockopt_int(
            self.sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR,
            REPAIR_OFF,
        )
        .map_err(|e| format!("{}: cannot leave repair mode: {e}", self.what))
    }

    /// Sends what the first life had not sent yet, and sets SO_REUSEADDR as it was (repair
    /// mode forced it, leaving it cleared it).
    pub fn finish(self) -> Result<OwnedFd, String> {
        let fd = self.sock.as_raw_fd();
        let what = &self.what;
        let mut rest = &self.unsent[..];
        while !rest.is_empty() {
            let n = sys::send_nowait(fd, rest)
                .map_err(|e| format!("{what}: cannot send its unsent bytes: {e}"))?;
            rest = &rest[n..];
        }
        if self.reuseaddr {
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                .map_err(|e| format!("{what}: cannot set SO_REUSEADDR: {e}"))?;
        }
        Ok(self.sock)
    }
}

/// Writes `bytes` into the queue chosen (repair mode), in pieces the kernel takes: it makes one
/// buffer of what it is given for a receive queue, and a large one may fail to be allocated.
fn queue_bytes(fd: i32, bytes: &[u8]) -> std::io::Result<()> {
    let mut rest = bytes;
    let mut piece = rest.len().max(1);
    while !rest.is_empty() {
        match sys::send_nowait(fd, &rest[..piece.min(rest.len())]) {
            Ok(n) if n > 0 => rest = &rest[n..],
            Ok(_) => return Err(std::io::Error::other("the kernel took nothing")),
            Err(e) if piece > 4096 && e.raw_os_error() != Some(libc::EPERM) => piece /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
