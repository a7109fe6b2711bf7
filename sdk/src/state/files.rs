//! File descriptors.

use serde::{Deserialize, Serialize};

use super::PayloadRef;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdEntry {
    pub fd: i32,
    /// open(2) status flags (O_ACCMODE, O_APPEND, O_NONBLOCK, …).
    pub flags: u32,
    pub cloexec: bool,
    pub kind: FdKind,
    /// Locks held through this descriptor (regular files).
    pub locks: Vec<super::locks::Lock>,
    /// Signal-driven I/O (O_ASYNC, its owner and signal).
    pub signal_io: Option<super::sigio::SignalIo>,
    /// A `dup` of this earlier descriptor: one open file description (offset, status flags,
    /// the object itself for an eventfd, epoll or timerfd), made once and shared again. Pipes,
    /// memfds and sockets say this in their own way.
    pub dup_of: Option<i32>,
    /// A FIFO's bytes waiting at the checkpoint, on one descriptor per FIFO: written back into
    /// it at restore, which it must find empty (its buffer lives only while someone holds it
    /// open, so after the first life it is empty unless someone else wrote).
    pub fifo_bytes: Option<PayloadRef>,
    /// The first life ended once the image was written (`exit_after_save`), leaving those bytes
    /// unread: a FIFO a writer elsewhere kept open that still begins with them holds them yet.
    pub fifo_left: bool,
    /// Not a descriptor of the process: a file in flight in a message queued in one of its
    /// sockets (see [`super::scm`]), numbered as the checkpoint received it. Made again, sent
    /// with its message, and closed.
    pub in_flight: bool,
    /// A regular file the process held a lock on (read or write), as it was at the snapshot: restored
    /// only as long as it is unchanged, for the process goes on from what it knew of it (a
    /// database in the middle of a transaction; an earlier restore may have written it since).
    pub locked_stamp: Option<super::FileStamp>,
    /// A zip archive the process reads through this descriptor (a jar on a JVM's class path,
    /// a module, a zipimported file), as it was at the snapshot: restored only as long as it is
    /// unchanged. Its reader keeps the archive's index and what it loaded from it in memory: a
    /// new archive written over it in place (a deploy's `cp`) would mix old classes with new
    /// ones read at old offsets.
    pub archive_stamp: Option<super::FileStamp>,
    /// A regular file the process wrote at its end through this descriptor's offset (open for
    /// writing without O_APPEND, its offset at the end: a log, a journal): its size then.
    /// Restored only where its size is the same, for the process would write next over what was
    /// written since (by an earlier restore of the image, or by the first life going on), and
    /// where no other process has it open for writing (a restore of the image running).
    pub written_end: Option<u64>,
    /// For a descriptor that shared a standard descriptor's open file description (see
    /// [`FdEntry::standard`]): every standard descriptor that shared it (bit N: fd N). Where
    /// several did (a terminal from a login: 0, 1 and 2 one description), the caller's must
    /// still be one at restore, or which one it stood for cannot be told.
    pub standard_set: u8,
    /// A standard descriptor that was a terminal: its mode (see [`super::terminal`]).
    pub terminal: Option<super::terminal::Mode>,
}

/// Whether descriptor `fd` (of this process) is a zip archive: a local file header or an empty
/// archive's end record at offset 0 (jar, jmod, zip, wheel, egg). Read without moving its offset.
pub(crate) fn zip_archive(fd: i32) -> bool {
    let mut magic = [0u8; 4];
    let n = crate::sys::pread_raw(fd, magic.as_mut_ptr() as u64, 4, 0);
    n == 4 && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// stdin/stdout/stderr: replaced by the launcher's own at restore.
    #[default]
    Stdio,
    /// A regular file, reopened at the same offset if it is still the same file.
    Regular {
        path: String,
        pos: u64,
        id: super::FileId,
    },
    /// A directory, reopened at the same position (where `getdents` goes on: a reader in the
    /// middle of a listing neither sees entries twice nor misses any).
    Directory {
        path: String,
        id: super::FileId,
        pos: u64,
    },
    /// One end of a pipe whose both ends are in the process; `id` pairs the ends and the read end
    /// carries the bytes that were buffered.
    Pipe {
        id: u64,
        write_end: bool,
        buffered: Option<PayloadRef>,
        /// F_GETPIPE_SZ.
        capacity: u32,
        /// Which open file description of this pipe the descriptor is (0, 1, …): descriptors
        /// that were `dup`s share one; separate opens (`/proc/self/fd/N`) have their own.
        desc: u32,
    },
    /// An eventfd with its counter.
    EventFd { count: u64, semaphore: bool },
    /// An epoll instance and what it watches (descriptors of this process). Level-triggered events
    /// fire again; which edge-triggered registrations had an event waiting is kept (see
    /// [`super::epoll`]).
    Epoll { watches: Vec<EpollWatch> },
    /// A timerfd: its clock, the time left and the interval (read just before the snapshot), and
    /// the expirations not read yet.
    TimerFd {
        clockid: i32,
        value_ns: u64,
        interval_ns: u64,
        ticks: u64,
        /// Armed with TFD_TIMER_ABSTIME on a wall clock (REALTIME, REALTIME_ALARM, TAI):
        /// `value_ns` is then its deadline on that clock, kept as a deadline (a restore an hour
        /// later fires at the same wall-clock time, or at once if that has passed).
        absolute: bool,
    },
    /// A signalfd and the signals it reads (they are read from the reading process, so one the
    /// launcher creates serves the restored process).
    SignalFd { mask: u64 },
    /// A memfd or a file deleted while open, saved once in [`super::Manifest::shared`] with its
    /// mappings.
    Memfd {
        object: u64,
        pos: u64,
        /// Which open file description of the object the descriptor is (0, 1, …): `dup`s
        /// share one, separate opens have their own (like [`FdKind::Pipe`]'s).
        desc: u32,
    },
    /// A socket pair end or a listening socket (see [`super::sockets`]).
    Socket(super::sockets::Socket),
    /// An inotify instance with its watches.
    Inotify(super::inotify::Inotify),
    /// An io_uring instance at rest (see [`super::io_uring`]).
    IoUring(super::io_uring::Ring),
    /// A pidfd of the process itself or one of its threads, opened again by the restorer.
    Pidfd(super::pidfd::Pidfd),
    /// A descriptor the application's policy replaced with `/dev/null` (see
    /// [`crate::fd_policy`]); the access mode and status flags are the original's.
    DevNull,
    /// A directory removed while open (necessarily empty): made again at its path with its
    /// mode, opened, and removed, so that /proc shows the same `PATH (deleted)`.
    DeletedDir { path: String, mode: u32 },
    /// A FIFO (named pipe) removed while open: its buffer lives on while it is open. Made again
    /// at its path with its mode and owner, opened by each of its descriptors (`id` tells which
    /// share one), given back its waiting bytes, and removed.
    DeletedFifo {
        path: String,
        mode: u32,
        /// Its owner where not the process's own (see [`crate::sys::foreign_owner`]).
        owner: Option<(u32, u32)>,
        id: super::FileId,
    },
    /// A symlink opened itself (`O_PATH | O_NOFOLLOW`) and removed since: made again at its path
    /// with its target and owner, opened so, and removed.
    DeletedSymlink {
        path: String,
        target: String,
        /// Its owner where not the process's own (see [`crate::sys::foreign_owner`]).
        owner: Option<(u32, u32)>,
    },
    /// A /proc file of the process itself (`/proc/PID/NAME`, its own PID: wasmtime keeps
    /// `pagemap` open for its dirty-page scans): opened again by the restorer as
    /// `/proc/self/NAME`, which is the same file of the same process, at `pos`.
    ProcSelf { name: String, pos: u64 },
}

/// The process's own /proc files a descriptor may hold across a restore: read with `pread`
/// (`pagemap`, `mem`: any position), or read from the start each time (the others: only at
/// position 0, as a read in the middle of one would go on from another snapshot of it).
pub(crate) const PROC_SELF: [&str; 12] = [
    "pagemap",
    "mem",
    "maps",
    "smaps",
    "smaps_rollup",
    "status",
    "stat",
    "statm",
    "cgroup",
    "mountinfo",
    "limits",
    "io",
];

/// One epoll registration: the watched descriptor, the event mask (including EPOLLET,
/// EPOLLONESHOT, …) and the user data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWatch {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
    /// An event was waiting (on the kernel's ready list) at the checkpoint; only an
    /// edge-triggered registration's matters, and unprobed ones count as waiting.
    pub ready: bool,
    /// Where the watched file is when number `fd` no longer holds it (closed, or another file
    /// there since): the process's descriptor of it, put at `fd` just to register it.
    pub at: Option<i32>,
}

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use crate::fd_policy::{FdAction, FdClass, FdPolicy};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

/// Character devices that are reopened by path (they carry no state worth saving).
const REOPENABLE_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// A descriptor thaw cannot restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub fd: i32,
    pub flags: u32,
    pub cloexec: bool,
    pub class: FdClass,
    /// `fd N (target): why`
    pub message: String,
    /// Whether a descriptor policy may leave it out (and the message offers one): not where
    /// that would not do (an io_uring instance's rings stay mapped) or would break the process
    /// without a sign (a listening socket left out: a server that never accepts again).
    pub policy_helps: bool,
}

impl Refused {
    /// `entry`, refused: "fd N (target): why".
    fn of(entry: &FdEntry, target: &str, class: FdClass, why: &str) -> Refused {
        Refused {
            fd: entry.fd,
            flags: entry.flags,
            cloexec: entry.cloexec,
            class,
            message: format!("fd {} ({target}): {why}", entry.fd),
            policy_helps: true,
        }
    }
}

/// Why a descriptor of an anonymous inode of kind `kind` (`anon_inode:KIND`, as /proc names it)
/// that thaw does not restore is refused, naming what it is.
fn anon_inode_refusal(kind: &str) -> String {
    let what = match kind.trim_matches(|c| c == '[' || c == ']') {
        "perf_event" => "a perf event (perf_event_open)".to_owned(),
        "fanotify" => "a fanotify instance".to_owned(),
        "userfaultfd" => "a userfaultfd".to_owned(),
        "bpf-map" => "a BPF map".to_owned(),
        "bpf-prog" => "a BPF program".to_owned(),
        "bpf_link" | "bpf-link" => "a BPF link".to_owned(),
        k if k.starts_with("kvm") => "a KVM virtual machine or CPU".to_owned(),
        "dmabuf" => "a DMA buffer".to_owned(),
        other => format!("a kernel object of kind {other:?}"),
    };
    format!(
        "{what} is not supported (eventfd, timerfd, signalfd, epoll, inotify, pidfd and io_uring instances are): close it before the checkpoint and open it again after restore"
    )
}

/// A timerfd's state from its fdinfo; `Err` says why it is refused.
fn timerfd_state(info: &str) -> Result<FdKind, &'static str> {
    let clock = crate::procfs::field(info, "clockid")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(libc::CLOCK_REALTIME);
    timerfd_state_at(info, crate::sys::clock_ns(clock))
}

/// A timerfd's state from its fdinfo, its clock reading `now` (ns) when the fdinfo was read: a
/// wall-clock deadline is `now` plus the time left.
pub(crate) fn timerfd_state_at(info: &str, now: u64) -> Result<FdKind, &'static str> {
    let num = |k: &str| crate::procfs::field(info, k).and_then(|v| v.parse::<u64>().ok());
    let ns = |k: &str| {
        let v = crate::procfs::field(info, k)?;
        let (a, b) = v.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
        Some(a.trim().parse::<u64>().ok()? * 1_000_000_000 + b.trim().parse::<u64>().ok()?)
    };
    let flags = crate::procfs::field(info, "settime flags")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0);
    if flags & 2 != 0 {
        return Err("a timerfd armed with TFD_TIMER_CANCEL_ON_SET is not restored");
    }
    let (Some(clockid), Some(ticks), Some(value), Some(interval)) = (
        num("clockid"),
        num("ticks"),
        ns("it_value"),
        ns("it_interval"),
    ) else {
        return Err("cannot read the timerfd's state");
    };
    // An interval timer that fired (an expiration unread) re-arms when read: next in one
    // interval. One with no time left and none unread is disarmed, its interval kept
    // (`timerfd_settime` with a zero value and an interval: armed again, it fired for ever).
    let left = if value == 0 && interval > 0 && ticks > 0 {
        interval
    } else {
        value
    };
    let wall = matches!(
        clockid as i32,
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM | libc::CLOCK_TAI
    );
    let absolute = flags & 1 != 0 && wall && left > 0;
    Ok(FdKind::TimerFd {
        clockid: clockid as i32,
        value_ns: if absolute {
            now.saturating_add(left)
        } else {
            left
        },
        interval_ns: interval,
        ticks,
        absolute,
    })
}

/// Descriptor `fd` of shared object `object` (a memfd, shared anonymous memory, a deleted
/// file), kept with it (its offset read later).
fn shared_object(earlier: &[FdEntry], fd: i32, object: u64) -> FdKind {
    FdKind::Memfd {
        object,
        pos: 0,
        desc: object_description(earlier, fd, object),
    }
}

/// Which open file description of shared object `object` descriptor `fd` is: that of an earlier
/// descriptor of it (kcmp), or a new one.
fn object_description(earlier: &[FdEntry], fd: i32, object: u64) -> u32 {
    let mut next = 0;
    for e in earlier {
        if let FdKind::Memfd {
            object: o, desc, ..
        } = e.kind
        {
            if o == object {
                if crate::sys::same_description(fd, e.fd).unwrap_or(false) {
                    return desc;
                }
                next = next.max(desc + 1);
            }
        }
    }
    next
}

/// Marks each descriptor that shares its open file description with an earlier one (`dup`,
/// `F_DUPFD`, inherited that way): compared (kcmp) only within descriptors of one file.
fn mark_dups(entries: &mut [FdEntry]) {
    use std::os::unix::fs::MetadataExt;
    let own = |k: &FdKind| {
        !matches!(
            k,
            FdKind::Stdio
                | FdKind::Pipe { .. }
                | FdKind::Memfd { .. }
                | FdKind::Socket(_)
                | FdKind::Pidfd(_)
                | FdKind::DevNull
                // (Opened again each: two of one description get an offset each.)
                | FdKind::ProcSelf { .. }
        )
    };
    let file = |fd: i32| {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let mut firsts: Vec<(i32, Option<(u64, u64)>)> = Vec::new();
    for e in entries.iter_mut().filter(|e| own(&e.kind)) {
        let id = file(e.fd);
        e.dup_of = firsts
            .iter()
            .filter(|(_, f)| id.is_some() && *f == id)
            .find(|(first, _)| crate::sys::same_description(e.fd, *first) == Some(true))
            .map(|(first, _)| *first);
        if e.dup_of.is_none() {
            firsts.push((e.fd, id));
        }
    }
}

/// The descriptors of the calling process, classified before the snapshot.
#[derive(Debug, Default)]
pub(crate) struct FdScan {
    pub entries: Vec<FdEntry>,
    /// What cannot be checkpointed, one item per descriptor.
    pub refused: Vec<Refused>,
    /// Descriptors of FIFOs (named pipes), reopened by path: what waits in one at the snapshot
    /// would be lost with the first life, so the checkpoint refuses it then.
    pub fifos: Vec<i32>,
    /// The scanned descriptors, held to be compared with the snapshot's.
    pub witness: crate::witness::FdWitness,
    /// Files in flight in queued messages, received to be scanned with the rest (see
    /// [`super::scm`]): held until the checkpoint ends.
    pub in_flight: super::scm::InFlight,
    /// Each epoll instance's registrations (watched numbers, in the kernel's order) as the scan
    /// read them, before the policy's removals: what [`super::parked::ParkedInfo`] finds while
    /// the threads are parked must be the same registrations.
    pub epoll_seen: Vec<(i32, Vec<i32>)>,
}

/// Links of descriptors whose fdinfo lists every watch or request: long, and costly to read.
const WHOLE_FDINFO: [&str; 4] = [
    "anon_inode:[eventpoll]",
    "anon_inode:inotify",
    "anon_inode:[io_uring]",
    "anon_inode:[fanotify]",
];

fn fdinfo(fd: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default()
}

fn fdinfo_flags(info: &str) -> u32 {
    crate::procfs::field(info, "flags")
        .and_then(|f| u32::from_str_radix(f, 8).ok())
        .unwrap_or(0)
}

/// Writes a FIFO's waiting bytes back into it through `f` (one of the restored process's
/// descriptors of it), after checking that nobody else's bytes wait there. `left`: the first
/// life ended leaving them there (see [`FdEntry::fifo_left`]).
fn refill_fifo(f: &OwnedFd, path: &str, bytes: &[u8], left: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let end = |read: bool| {
        std::fs::OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(|e| {
                format!(
                    "cannot open FIFO {path} to put back its {} bytes: {e}",
                    bytes.len()
                )
            })
    };
    // A read end first: a write end opens without blocking only while one exists.
    let reader = end(true)?;
    let waiting = crate::sys::inq(reader.as_raw_fd());
    // A writer elsewhere that kept the FIFO open after the first life ended keeps its buffer:
    // the bytes the first life left unread wait there still (maybe followed by more it wrote
    // since). Put back, they would be read twice. (A first life that went on read them: the
    // same bytes there now were written again, and are not these.)
    if left && waiting >= bytes.len() as i64 && fifo_begins_with(reader.as_raw_fd(), bytes) {
        return Ok(());
    }
    if waiting != 0 {
        return Err(format!(
            "FIFO {path} holds {waiting} bytes from elsewhere: its {} bytes from the checkpoint cannot be put back in order",
            bytes.len()
        ));
    }
    let mut writer = end(false)?;
    if bytes.len() > 65536 {
        let _ = crate::sys::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, bytes.len() as u64);
    }
    writer.write_all(bytes).map_err(|e| {
        format!(
            "cannot put back the {} bytes of FIFO {path}: {e}",
            bytes.len()
        )
    })
}

/// Whether the bytes waiting in the FIFO read through `fd` begin with `bytes`, looked at with
/// `tee` (nothing is taken from it).
fn fifo_begins_with(fd: i32, bytes: &[u8]) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let Ok((r, w)) = crate::sys::pipe_nonblock() else {
        return false;
    };
    // As many buffers as the FIFO may hold: tee copies whole buffers but the last.
    if let Ok(size) = crate::sys::fcntl(fd, libc::F_GETPIPE_SZ, 0) {
        let _ = crate::sys::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as u64);
    }
    let n = crate::sys::tee(fd, w.as_raw_fd(), bytes.len());
    if n != bytes.len() as i64 {
        return false;
    }
    let mut head = vec![0u8; bytes.len()];
    std::fs::File::from(r).read_exact(&mut head).is_ok() && head == bytes
}

/// The `tfd:` lines of an epoll descriptor's fdinfo: (watch, inode of the watched file).
fn epoll_watches(info: &str) -> Vec<(EpollWatch, u64)> {
    info.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |key: &str| w.iter().position(|x| *x == key).and_then(|i| w.get(i + 1));
            let hex = |key: &str| at(key).and_then(|v| u64::from_str_radix(v, 16).ok());
            let fd = at("tfd:")?.parse().ok()?;
            let ino = w
                .iter()
                .find_map(|x| x.strip_prefix("ino:"))
                .and_then(|v| u64::from_str_radix(v, 16).ok())?;
            Some((
                EpollWatch {
                    fd,
                    events: hex("events:")? as u32,
                    data: hex("data:")?,
                    ready: true,
                    at: None,
                },
                ino,
            ))
        })
        .collect()
}

/// Whether descriptor `s` (0, 1 or 2) is a standard stream the process was started with, which
/// is the caller's at restore: not one the process opened itself at that number because it was
/// started without it (a JVM started with `<&-` opens its class image, `lib/modules`, as fd 0,
/// and died at its next class load when that became the caller's stdin). Such a one is
/// a regular file the process also maps (HotSpot opens and maps `lib/modules`), or one opened
/// for the wrong direction (fd 1 or 2 read-only, fd 0 write-only); it is kept as what it is.
/// (Close-on-exec says nothing: Node marks its inherited standard descriptors so at start.)
fn standard_stream(s: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fl) = crate::sys::fcntl(s, libc::F_GETFL, 0) else {
        return true;
    };
    let meta = std::fs::metadata(format!("/proc/self/fd/{s}")).ok();
    let mapped = meta.as_ref().filter(|m| m.is_file()).is_some_and(|m| {
        crate::procfs::maps(crate::sys::getpid()).is_ok_and(|maps| {
            maps.iter()
                .any(|e| e.inode == m.ino() && libc::makedev(e.dev_major, e.dev_minor) == m.dev())
        })
    });
    if mapped {
        return false;
    }
    let acc = fl as i32 & libc::O_ACCMODE;
    let wrong_way = if s == 0 {
        acc == libc::O_WRONLY
    } else {
        acc == libc::O_RDONLY
    };
    !wrong_way
}

/// Who else holds the process's pipes and AF_UNIX sockets, and those sockets' peers: walked
/// before a checkpoint lists its descriptors (the walk of every other process's descriptor table
/// takes milliseconds, 2 here; between the listing and the stop any descriptor opened or closed
/// makes the checkpoint start again). Not where the process has none besides its standard
/// descriptors (the caller's, never asked about): its inet sockets need no walk.
pub(crate) fn holders_ahead() -> crate::procfs::Holders {
    let links: Vec<String> = crate::sys::list_dir("/proc/self/fd")
        .unwrap_or_default()
        .iter()
        .filter(|n| n.parse::<i32>().is_ok_and(|n| n > 2))
        .filter_map(|n| std::fs::read_link(format!("/proc/self/fd/{n}")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("pipe:[") || l.starts_with("socket:["))
        .collect();
    if links.is_empty() {
        return crate::procfs::Holders::default();
    }
    // (Without sock_diag every socket may be AF_UNIX, and a question about a peer walks again.)
    let peers = super::sockets::unix_peers().ok();
    let mut known = Vec::new();
    for l in links {
        let ino = l
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok());
        match (ino, &peers) {
            (None, _) | (Some(_), None) => known.push(l),
            (Some(ino), Some(p)) => {
                if let Some(&peer) = p.get(&ino) {
                    known.push(l);
                    if peer != 0 {
                        known.push(format!("socket:[{peer}]"));
                    }
                }
            }
        }
    }
    if known.is_empty() {
        return crate::procfs::Holders::default();
    }
    crate::procfs::Holders::walked_for(known)
}

/// The kind of namespace a descriptor's link names (`net:[4026531840]`, what an open
/// /proc/PID/ns/net reads as), if it names one.
fn namespace_link(target: &str) -> Option<&str> {
    let (kind, rest) = target.split_once(":[")?;
    let known = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];
    (known.contains(&kind) && rest.strip_suffix(']')?.parse::<u64>().is_ok()).then_some(kind)
}

impl FdScan {
    /// Lists /proc/self/fd, skipping `exclude` (descriptors the SDK itself holds). Deleted files
    /// up to `max_deleted` bytes are kept (see [`super::deleted`]). `left_out`: children left
    /// out of the image, which the restored process sees killed: a pipe or socket whose other
    /// end only they hold comes back with that end closed. `holders`: who else holds the
    /// process's pipes and sockets (walked ahead: [`holders_ahead`]).
    pub(crate) fn scan(
        exclude: &[i32],
        max_deleted: u64,
        in_flight: super::scm::InFlight,
        left_out: &[i32],
        holders: crate::procfs::Holders,
    ) -> std::io::Result<FdScan> {
        let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        fds.retain(|fd| !exclude.contains(fd));
        crate::checkpoint::pause_for_tests(b'l');
        let mut scan = FdScan {
            witness: crate::witness::FdWitness::hold(&fds)?,
            in_flight,
            ..FdScan::default()
        };
        // Only what the witness holds: a number closed before it could be held is not the
        // process's as far as the image goes; opened again since, the witness finds it opened
        // in the snapshot and the checkpoint starts again.
        let fds = scan.witness.numbers();
        crate::checkpoint::pause_for_tests(b'h');
        let listed = fds.clone();
        // What the standard descriptors are, to find others sharing their descriptions.
        let standard: Vec<(i32, std::path::PathBuf)> = (0..=2)
            .filter(|&s| standard_stream(s))
            .filter_map(|s| Some((s, std::fs::read_link(format!("/proc/self/fd/{s}")).ok()?)))
            .collect();
        // (One in flight in a queued message stays what it is: refused, see `not_in_flight`.)
        let flying = scan.in_flight.numbers();
        // Removed directories open here: (fd, device, inode).
        let mut deleted_dirs: Vec<(i32, u64, u64)> = Vec::new();
        let mut pipes: BTreeMap<u64, (Vec<usize>, bool, bool)> = BTreeMap::new();
        let mut sockets: Vec<(FdEntry, u64, String)> = Vec::new();
        let mut ring_maps: Option<Vec<crate::procfs::MapEntry>> = None;
        for fd in fds {
            // Closed since it was held: the witness finds it closed in the snapshot.
            let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
                continue;
            };
            let link = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
            let target = target.to_string_lossy().into_owned();
            // A file unlinked under one name that has another beside it is that file (see
            // super::deleted::live_name).
            let target = match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                Ok(m) if target.ends_with(" (deleted)") && m.is_file() && m.nlink() > 0 => {
                    super::deleted::live_name(&target, m.dev(), m.ino()).unwrap_or(target)
                }
                _ => target,
            };
            let info = fdinfo(fd);
            // Looked at again at the stop: renamed, unlinked, linked, or a lock taken or given up
            // meanwhile (on a pipe or socket too, where a lock is refused). Not an instance whose
            // fdinfo the kernel builds whole every time, watch by watch (read again while the
            // threads are parked anyway, see super::parked), nor the caller's descriptors.
            if fd > 2 && !WHOLE_FDINFO.contains(&target.as_str()) {
                scan.witness.saw_file(fd, &link, &info);
            }
            let raw = fdinfo_flags(&info);
            let cloexec = raw & libc::O_CLOEXEC as u32 != 0;
            let flags = raw & !(libc::O_CLOEXEC as u32);
            let mut entry = FdEntry {
                fd,
                flags,
                cloexec,
                kind: FdKind::Stdio,
                locks: Vec::new(),
                signal_io: None,
                dup_of: None,
                fifo_bytes: None,
                fifo_left: false,
                in_flight: false,
                locked_stamp: None,
                archive_stamp: None,
                written_end: None,
                standard_set: 0,
                terminal: None,
            };
            if fd <= 2 && standard.iter().any(|(n, _)| *n == fd) {
                entry.terminal = super::terminal::Mode::of(fd);
                scan.entries.push(entry);
                continue;
            }
            // A descriptor sharing a standard descriptor's open file description (libuv reopens
            // a terminal for its stdio streams and dup2s it over 1 and 2, keeping the new
            // descriptor; a program saves stdout with dup(1)) is that one at restore too: the
            // caller's. Standard output first, then error, then input, where several share it.
            // (Not one that holds locks, nor a listening socket handed in as stdin as well:
            // those are restored as what they are.)
            let plain = !flying.contains_key(&fd)
                && !info.lines().any(|l| l.starts_with("lock:"))
                && (!target.starts_with("socket:")
                    || crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)
                        .ok()
                        .is_none_or(|v| v == 0));
            let shared: Vec<i32> = [1, 2, 0]
                .into_iter()
                .filter(|_| plain)
                .filter(|&s| {
                    standard
                        .iter()
                        .any(|(n, t)| *n == s && t.to_string_lossy() == target)
                        && crate::sys::same_description(fd, s) == Some(true)
                })
                .collect();
            if let Some(&s) = shared.first() {
                entry.dup_of = Some(s);
                entry.standard_set = shared.iter().fold(0, |m, &s| m | 1 << s);
                scan.entries.push(entry);
                continue;
            }
            let head = FdEntry {
                fd,
                flags,
                cloexec,
                ..FdEntry::default()
            };
            let bad = |class: FdClass, why: &str| Refused::of(&head, &target, class, why);
            // Locks are taken again on files (named, deleted, memfds); on anything else (flock
            // works on a pipe or a socket too) they would be lost: refused.
            if !target.starts_with('/') && info.lines().any(|l| l.starts_with("lock:")) {
                scan.refused.push(bad(
                    FdClass::Other,
                    "it holds a lock (flock, fcntl), which thaw takes again on files only: unlock it before the checkpoint",
                ));
                continue;
            }
            if let Some(ino) = target
                .strip_prefix("pipe:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                let id: u64 = ino.parse().unwrap_or(0);
                let write_end = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
                // The description: the same as an earlier descriptor of this pipe's (kcmp), or new.
                let earlier: Vec<(i32, u32)> = scan
                    .entries
                    .iter()
                    .filter_map(|x| match x.kind {
                        FdKind::Pipe {
                            id: i,
                            desc,
                            write_end: w,
                            ..
                        } if i == id && w == write_end => Some((x.fd, desc)),
                        _ => None,
                    })
                    .collect();
                let desc = earlier
                    .iter()
                    .find(|(other, _)| crate::sys::same_description(fd, *other).unwrap_or(true))
                    .map(|(_, d)| *d)
                    .unwrap_or_else(|| {
                        // A new description: numbered after every one of this pipe's.
                        scan.entries
                            .iter()
                            .filter_map(|x| match x.kind {
                                FdKind::Pipe { id: i, desc, .. } if i == id => Some(desc + 1),
                                _ => None,
                            })
                            .max()
                            .unwrap_or(0)
                    });
                entry.kind = FdKind::Pipe {
                    id,
                    write_end,
                    buffered: None,
                    capacity: crate::sys::fcntl(fd, libc::F_GETPIPE_SZ, 0).unwrap_or(65536) as u32,
                    desc,
                };
                let p = pipes.entry(id).or_default();
                p.0.push(scan.entries.len());
                if write_end {
                    p.2 = true;
                } else {
                    p.1 = true;
                }
                scan.entries.push(entry);
                continue;
            }
            if target == "anon_inode:[eventfd]" {
                entry.kind = FdKind::EventFd {
                    count: crate::procfs::field(&info, "eventfd-count")
                        .and_then(|v| u64::from_str_radix(v, 16).ok())
                        .unwrap_or(0),
                    semaphore: crate::procfs::field(&info, "eventfd-semaphore") == Some("1"),
                };
                scan.entries.push(entry);
                continue;
            }
            if target == "anon_inode:[timerfd]" {
                // (Its fdinfo read again once it has caught up: see sys::timerfd_catch_up.)
                let info = match crate::sys::timerfd_catch_up(fd) {
                    Ok(()) => fdinfo(fd),
                    Err(_) => info,
                };
                match timerfd_state(&info) {
                    Ok(kind) => {
                        entry.kind = kind;
                        scan.entries.push(entry);
                    }
                    Err(why) => {
                        scan.refused
                            .push(Refused::of(&entry, &target, FdClass::Other, why))
                    }
                }
                continue;
            }
            if target == "anon_inode:[signalfd]" {
                entry.kind = FdKind::SignalFd {
                    mask: crate::procfs::field_hex(&info, "sigmask"),
                };
                scan.entries.push(entry);
                continue;
            }
            if target == "anon_inode:inotify" {
                match super::inotify::dump(&info) {
                    Ok(i) => {
                        entry.kind = FdKind::Inotify(i);
                        scan.entries.push(entry);
                    }
                    Err(why) => scan.refused.push(bad(FdClass::Other, &why)),
                }
                continue;
            }
            if target == "anon_inode:[pidfd]" || target.starts_with("pidfd:") {
                match super::pidfd::classify(fd, &info, flags) {
                    Ok(p) => {
                        entry.kind = FdKind::Pidfd(p);
                        scan.entries.push(entry);
                    }
                    Err(why) => scan.refused.push(bad(FdClass::Other, &why)),
                }
                continue;
            }
            if target == "anon_inode:[eventpoll]" {
                if let Err(why) = super::epoll::busy_poll(fd) {
                    scan.refused.push(bad(FdClass::Other, &why));
                    continue;
                }
                let mut watches = Vec::new();
                let mut stale = Vec::new();
                // The n-th registration of one number is the kernel's `toff` for it.
                let mut seen: BTreeMap<i32, u32> = BTreeMap::new();
                for (mut w, ino) in epoll_watches(&info) {
                    let toff = seen.entry(w.fd).or_insert(0);
                    let watched = |at: i32| {
                        crate::sys::epoll_watches_file(fd, w.fd, *toff, at).unwrap_or_else(|| {
                            // Without kcmp: the same inode (anonymous inodes are shared).
                            std::fs::metadata(format!("/proc/self/fd/{at}"))
                                .is_ok_and(|m| m.ino() == ino)
                        })
                    };
                    if !watched(w.fd) {
                        // Closed or replaced since it was registered: the file may be open at
                        // another number of the process's (a dup kept, the number reused).
                        w.at = listed.iter().copied().find(|&at| at != fd && watched(at));
                        if w.at.is_none() {
                            stale.push(w.fd.to_string());
                        }
                    }
                    *toff += 1;
                    watches.push(w);
                }
                scan.epoll_seen
                    .push((fd, watches.iter().map(|w| w.fd).collect()));
                // An epoll with a watch that cannot be restored is refused as a whole.
                if stale.is_empty() {
                    entry.kind = FdKind::Epoll { watches };
                    scan.entries.push(entry);
                } else {
                    scan.refused.push(bad(
                        FdClass::Other,
                        &format!(
                            "epoll watches fd {} whose file is open nowhere else in the process",
                            stale.join(", ")
                        ),
                    ));
                }
                continue;
            }
            if let Some(ino) = target
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<u64>().ok())
            {
                sockets.push((entry, ino, target.clone()));
                continue;
            }
            if target == "anon_inode:[io_uring]" {
                // Its rings stay mapped in the process: leaving it out would not do.
                if ring_maps.is_none() {
                    ring_maps = Some(crate::procfs::maps(crate::sys::getpid())?);
                }
                // Its fdinfo is all or nothing: nothing but its header while another thread
                // holds the ring's lock (submitting), so it is read again until it is whole.
                let info = super::io_uring::whole_fdinfo(entry.fd, info);
                match super::io_uring::inspect(
                    entry.fd,
                    &info,
                    ring_maps.as_deref().unwrap_or_default(),
                ) {
                    Ok(ring) => {
                        entry.kind = FdKind::IoUring(ring);
                        scan.entries.push(entry);
                    }
                    Err(why) => scan.refused.push(Refused {
                        policy_helps: false,
                        ..bad(FdClass::Other, &why)
                    }),
                }
                continue;
            }
            if !target.starts_with('/') {
                let (class, why) = if target.starts_with("socket:") {
                    (FdClass::Socket, "sockets are not supported".to_owned())
                } else if let Some(kind) = target.strip_prefix("anon_inode:") {
                    (FdClass::Other, anon_inode_refusal(kind))
                } else if let Some(kind) = namespace_link(&target) {
                    (
                        FdClass::Other,
                        format!("a namespace descriptor (/proc/PID/ns/{kind}) is not supported: close it before the checkpoint and open it again after restore"),
                    )
                } else {
                    (FdClass::Other, "unsupported kind of descriptor".to_owned())
                };
                scan.refused.push(bad(class, &why));
                continue;
            }
            match super::locks::parse(&info) {
                Ok(locks) => entry.locks = locks,
                Err(why) => {
                    scan.refused.push(bad(FdClass::Other, &why));
                    continue;
                }
            }
            if target.starts_with("/memfd:") {
                if super::memory::on_hugetlbfs(fd) {
                    scan.refused
                        .push(bad(FdClass::Other, super::memory::HUGETLB_REFUSAL));
                    continue;
                }
                match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                    Ok(meta) => {
                        entry.kind = shared_object(&scan.entries, fd, meta.ino());
                        scan.entries.push(entry);
                    }
                    // Closed since it was listed: as if before (the witness sees one opened
                    // again at its number).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => scan
                        .refused
                        .push(bad(FdClass::Other, &format!("cannot stat: {e}"))),
                }
                continue;
            }
            if let Some(why) = special_filesystem(fd, &target, flags) {
                scan.refused.push(bad(FdClass::Other, why));
                continue;
            }
            if target.starts_with("/proc/") {
                let own = target
                    .strip_prefix(&format!("/proc/{}/", crate::sys::getpid()))
                    .filter(|n| PROC_SELF.contains(n));
                let pos = crate::sys::tell(fd);
                match own {
                    Some(name) if pos == 0 || name == "pagemap" || name == "mem" => {
                        entry.kind = FdKind::ProcSelf {
                            name: name.to_owned(),
                            pos: pos.max(0) as u64,
                        };
                        scan.entries.push(entry);
                    }
                    Some(_) => scan.refused.push(bad(
                        FdClass::Other,
                        "a /proc file of the process read up to the middle (a read would go on from another snapshot of it); read it to its end, or close it, before the checkpoint",
                    )),
                    None => scan.refused.push(bad(
                        FdClass::Other,
                        "a /proc file describes one process at one moment and cannot be reopened as the same file; open it again after restore",
                    )),
                }
                continue;
            }
            if let Some(why) = super::deleted::kernel_internal(&target) {
                scan.refused.push(bad(FdClass::Other, why));
                continue;
            }
            // (A file whose name itself ends so, still at that name, is no deleted one.)
            let literal = || {
                let here = std::fs::metadata(format!("/proc/self/fd/{fd}"));
                let there = std::fs::symlink_metadata(&target);
                matches!((here, there), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
            };
            if target == "/dev/zero (deleted)" && !literal() {
                // Shared anonymous memory (MAP_SHARED | MAP_ANONYMOUS) opened as a file through
                // /proc/PID/map_files: a file of the kernel's own shmem mount, kept with its
                // contents as the shared object its mappings are too (a memfd at restore).
                match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                    Ok(meta) if meta.file_type().is_file() => {
                        entry.kind = shared_object(&scan.entries, fd, meta.ino());
                        scan.entries.push(entry);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    _ => scan.refused.push(bad(
                        FdClass::Deleted,
                        "the device /dev/zero, open while its node was deleted, is not supported: open it again after restore",
                    )),
                }
                continue;
            }
            if target.ends_with(" (deleted)") && !literal() {
                let meta = std::fs::metadata(format!("/proc/self/fd/{fd}"));
                let why = match (&meta, super::deleted::deleted_path(&target)) {
                    (Ok(m), Some(path)) if m.file_type().is_file() => {
                        let why = super::memory::on_hugetlbfs(fd)
                            .then(|| super::memory::HUGETLB_REFUSAL.to_owned())
                            .or_else(|| super::deleted::still_linked(path, m.nlink()))
                            .or_else(|| super::deleted::refusal(path, fd, max_deleted));
                        match why {
                            None => {
                                // Kept with its contents, as a shared object.
                                let object = super::deleted::object_id(m.dev(), m.ino());
                                entry.kind = shared_object(&scan.entries, fd, object);
                                scan.entries.push(entry);
                                continue;
                            }
                            Some(why) => why,
                        }
                    }
                    (Ok(m), Some(path))
                        if m.file_type().is_dir()
                            && path.starts_with('/')
                            && std::path::Path::new(path)
                                .parent()
                                .is_some_and(|p| p.is_dir()) =>
                    {
                        deleted_dirs.push((fd, m.dev(), m.ino()));
                        entry.kind = FdKind::DeletedDir {
                            path: path.to_owned(),
                            mode: m.mode() & 0o7777,
                        };
                        scan.entries.push(entry);
                        continue;
                    }
                    (Ok(m), Some(_)) if m.file_type().is_dir() => {
                        "a directory removed while open, in a directory that is gone too: it cannot be made again where it was".to_owned()
                    }
                    (Ok(m), Some(path))
                        if m.file_type().is_symlink()
                            && entry.flags & libc::O_PATH as u32 != 0
                            && path.starts_with('/')
                            && std::path::Path::new(path)
                                .parent()
                                .is_some_and(|p| p.is_dir()) =>
                    {
                        match crate::sys::symlink_target(fd) {
                            Ok(t) => {
                                entry.kind = FdKind::DeletedSymlink {
                                    path: path.to_owned(),
                                    target: t.to_string_lossy().into_owned(),
                                    owner: crate::sys::foreign_owner(m.uid(), m.gid()),
                                };
                                scan.entries.push(entry);
                                continue;
                            }
                            Err(e) => format!("a symlink removed while open whose target cannot be read: {e}"),
                        }
                    }
                    (Ok(m), Some(path))
                        if m.file_type().is_fifo()
                            && path.starts_with('/')
                            && std::path::Path::new(path)
                                .parent()
                                .is_some_and(|p| p.is_dir()) =>
                    {
                        // Its waiting bytes are copied as a named FIFO's are.
                        scan.fifos.push(fd);
                        entry.kind = FdKind::DeletedFifo {
                            path: path.to_owned(),
                            mode: m.mode() & 0o7777,
                            owner: crate::sys::foreign_owner(m.uid(), m.gid()),
                            id: super::FileId::of(m),
                        };
                        scan.entries.push(entry);
                        continue;
                    }
                    _ => "the open file was deleted (only regular files and directories are kept)"
                        .to_owned(),
                };
                scan.refused.push(bad(FdClass::Deleted, &why));
                continue;
            }
            let meta = match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                Ok(m) => m,
                // Closed since it was listed (see above).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    scan.refused
                        .push(bad(FdClass::Other, &format!("cannot stat: {e}")));
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_fifo() && target.starts_with('/') {
                // A named pipe (a supervisor's log FIFO): opened again by its name, without
                // blocking, as the same FIFO, so that whoever holds its other end still does.
                scan.fifos.push(fd);
            }
            // A symlink itself is open only as a path (O_PATH | O_NOFOLLOW): reopened so.
            let link = ft.is_symlink() && entry.flags & libc::O_PATH as u32 != 0;
            entry.kind = if ft.is_file()
                || link
                || (ft.is_fifo() && target.starts_with('/'))
                || (ft.is_char_device() && REOPENABLE_DEVICES.contains(&target.as_str()))
            {
                FdKind::Regular {
                    path: target.clone(),
                    pos: 0,
                    id: super::FileId::of(&meta),
                }
            } else if ft.is_dir() {
                FdKind::Directory {
                    path: target.clone(),
                    id: super::FileId::of(&meta),
                    pos: 0,
                }
            } else {
                let class = if ft.is_char_device() || ft.is_block_device() {
                    FdClass::Device
                } else {
                    FdClass::Other
                };
                scan.refused.push(bad(class, "only regular files, directories, symlinks opened with O_PATH, in-process pipes and /dev/null-like devices are supported"));
                continue;
            };
            scan.entries.push(entry);
        }
        let mut foreign = Vec::new();
        let mut holders = holders;
        for (id, (idx, has_read, has_write)) in pipes {
            // A pipe whose every writer is gone (a finished child's output, not read yet)
            // reads its bytes, then end of file: made again so, its write end closed.
            let widowed = has_read
                && !has_write
                && idx.iter().all(|&i| {
                    crate::sys::poll_now(scan.entries[i].fd, libc::POLLIN)
                        .is_ok_and(|ev| ev & libc::POLLHUP != 0)
                });
            // One whose every reader is gone (a pool's pipe to workers that ended): writes fail
            // with EPIPE and poll says POLLERR, as for a pipe made again with its read end
            // closed.
            let orphaned = has_write
                && !has_read
                && idx.iter().all(|&i| {
                    crate::sys::poll_now(scan.entries[i].fd, libc::POLLOUT)
                        .is_ok_and(|ev| ev & libc::POLLERR != 0)
                });
            // Both ends here, and held by no other process seen (one that is: make's
            // jobserver, passed to a recipe: made again private, the restored process's tokens
            // and messages would go round in its own pipe).
            let elsewhere = |h: &mut crate::procfs::Holders| {
                let seen = h.seen(&format!("pipe:[{id}]"));
                (!seen.is_empty() && !only_left_out(&seen, left_out)).then_some(seen)
            };
            if widowed || orphaned {
                continue;
            }
            if has_read && has_write {
                if let Some(seen) = elsewhere(&mut holders) {
                    foreign.extend(idx.into_iter().map(|i| (i, id, Some(seen.clone()), true)));
                }
                continue;
            }
            // Held elsewhere by children left out alone (a child's output or input): they are
            // killed as far as the restored process knows, so it gets the pipe with their end
            // closed, as it would see it once they had died.
            let holders = holders.of(&format!("pipe:[{id}]"));
            if holders
                .as_deref()
                .is_some_and(|h| only_left_out(h, left_out))
            {
                continue;
            }
            foreign.extend(idx.into_iter().map(|i| (i, id, holders.clone(), false)));
        }
        foreign.sort_unstable_by_key(|f| f.0);
        for (i, id, holders, both_here) in foreign.into_iter().rev() {
            let e = scan.entries.remove(i);
            let who = holders.filter(|h| !h.is_empty()).map(|h| {
                format!(
                    "{}{}",
                    crate::procfs::describe_holders(&h),
                    beyond_left_out(&h, left_out)
                )
            });
            let why = match (both_here, who) {
                (true, Some(who)) => format!(
                    "both ends of the pipe are in this process, and {who} holds it too: made again, it would be this process's alone (make's jobserver, passed to a recipe marked + or calling $(MAKE): its tokens and what the process writes would go round in its own pipe)"
                ),
                (_, Some(who)) => {
                    format!("the other end of the pipe is not in this process (it is in {who})")
                }
                (_, None) => "the other end of the pipe is not in this process".to_owned(),
            };
            scan.refused.push(Refused::of(
                &e,
                &format!("pipe:[{id}]"),
                FdClass::Pipe,
                &why,
            ));
        }
        // A FIFO removed while open is reachable by nobody else: its other end, if not the
        // process's, is another process's, which a FIFO made again would not be.
        let mut ends: std::collections::HashMap<super::FileId, (bool, bool)> = Default::default();
        for e in &scan.entries {
            if let FdKind::DeletedFifo { id, .. } = &e.kind {
                let acc = e.flags & libc::O_ACCMODE as u32;
                let v = ends.entry(*id).or_default();
                v.0 |= acc != libc::O_WRONLY as u32;
                v.1 |= acc != libc::O_RDONLY as u32;
            }
        }
        // Only its reading end here, and no writer anywhere (fifo-ghost: the bytes a writer
        // left, then end of file): made again so, when every process's descriptors can be seen.
        let readable_alone: Vec<super::FileId> = ends
            .iter()
            .filter(|(_, &(r, w))| r && !w)
            .filter(|(id, _)| {
                scan.entries.iter().any(|e| {
                    matches!(&e.kind, FdKind::DeletedFifo { id: i, .. } if i == *id)
                        && no_writer_elsewhere(e.fd)
                        // Its writer came and went (a reading end that never saw one would
                        // come back seeing one come and go).
                        && crate::sys::poll_now(e.fd, libc::POLLIN)
                            .is_ok_and(|ev| ev & libc::POLLHUP != 0)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        let mut i = 0;
        while i < scan.entries.len() {
            let lonely = matches!(&scan.entries[i].kind,
                FdKind::DeletedFifo { id, .. } if ends.get(id).is_some_and(|&(r, w)| !(r && w))
                    && !readable_alone.contains(id));
            if lonely {
                let e = scan.entries.remove(i);
                scan.fifos.retain(|&f| f != e.fd);
                let path = match &e.kind {
                    FdKind::DeletedFifo { path, .. } => path.clone(),
                    _ => String::new(),
                };
                scan.refused.push(Refused::of(
                    &e,
                    &format!("{path} (deleted)"),
                    FdClass::Deleted,
                    "a FIFO removed while open whose other end is not in this process (or, read alone, one no writer has opened yet): made again, it would no longer reach it",
                ));
            } else {
                i += 1;
            }
        }
        let socks: Vec<(i32, u64)> = sockets.iter().map(|(e, ino, _)| (e.fd, *ino)).collect();
        for ((mut entry, _, target), (_, r)) in
            sockets
                .into_iter()
                .zip(super::sockets::classify(&socks, left_out, &mut holders))
        {
            match r {
                Ok(sock) => {
                    entry.kind = FdKind::Socket(sock);
                    scan.entries.push(entry);
                }
                Err((class, why)) => {
                    let mut r = Refused::of(&entry, &target, class, &why);
                    r.policy_helps =
                        crate::sys::getsockopt_int(entry.fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)
                            .unwrap_or(0)
                            == 0;
                    scan.refused.push(r)
                }
            }
        }
        // Signal-driven I/O, once every descriptor is classified: one refused here leaves the
        // others (the other end of its pipe) as they are.
        let mut kept = Vec::with_capacity(scan.entries.len());
        for mut e in std::mem::take(&mut scan.entries) {
            if e.fd <= 2 {
                kept.push(e);
                continue;
            }
            match super::sigio::dump(e.fd, e.flags) {
                Ok(s) => {
                    e.signal_io = s;
                    kept.push(e);
                }
                Err(why) => {
                    let target = std::fs::read_link(format!("/proc/self/fd/{}", e.fd))
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    scan.refused
                        .push(Refused::of(&e, &target, FdClass::Other, &why));
                }
            }
        }
        scan.entries = kept;
        scan.entries.sort_by_key(|e| e.fd);
        mark_dups(&mut scan.entries);
        // A removed directory is made again once per open: two opens of one (or one that is
        // also the deleted working directory) would come back as two directories.
        let cwd = std::fs::metadata("/proc/self/cwd")
            .ok()
            .filter(|_| {
                std::fs::read_link("/proc/self/cwd")
                    .is_ok_and(|p| p.to_string_lossy().ends_with(" (deleted)"))
            })
            .map(|m| (m.dev(), m.ino()));
        let firsts: Vec<(i32, u64, u64)> = deleted_dirs
            .iter()
            .copied()
            .filter(|(fd, ..)| {
                scan.entries
                    .iter()
                    .any(|e| e.fd == *fd && e.dup_of.is_none())
            })
            .collect();
        let shared: Vec<i32> = firsts
            .iter()
            .filter(|&&(fd, dev, ino)| {
                cwd == Some((dev, ino))
                    || firsts
                        .iter()
                        .any(|&(other, d, i)| other != fd && (d, i) == (dev, ino))
            })
            .map(|f| f.0)
            .collect();
        // Those descriptors and their duplicates are refused.
        let (out, kept): (Vec<FdEntry>, Vec<FdEntry>) = std::mem::take(&mut scan.entries)
            .into_iter()
            .partition(|e| shared.contains(&e.fd) || e.dup_of.is_some_and(|f| shared.contains(&f)));
        scan.entries = kept;
        for e in out {
            let target = std::fs::read_link(format!("/proc/self/fd/{}", e.fd))
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            scan.refused.push(Refused::of(
                &e,
                &target,
                FdClass::Deleted,
                "a directory removed while open that is also open elsewhere or the working directory: it would come back as two directories",
            ));
        }
        scan.refused.sort_by_key(|r| r.fd);
        Ok(scan)
    }

    /// Applies the application's descriptor policy: leaves out or replaces with /dev/null what
    /// it says, and returns the refusals that remain (each with a hint on how to choose) and a
    /// description of every descriptor left out or replaced.
    pub(crate) fn apply(&mut self, policy: &FdPolicy) -> (Vec<String>, Vec<String>) {
        let mut refusals = Vec::new();
        let mut changed = Vec::new();
        let mut placeholders = Vec::new();
        let flying = self.in_flight.numbers();
        // Which descriptors share their file with another, as scanned (before any is left out):
        // asked only of descriptors an epoll instance watches.
        let watching = self
            .entries
            .iter()
            .any(|e| matches!(&e.kind, FdKind::Epoll { watches } if !watches.is_empty()));
        let scanned: Vec<FdEntry> = if watching {
            self.entries.clone()
        } else {
            Vec::new()
        };
        // Descriptors refused (their own items say why), and left out by the policy.
        let mut refused_fds = std::collections::BTreeSet::new();
        let mut dropped = std::collections::BTreeSet::new();
        // Descriptors given something else at their number (/dev/null, a dead end).
        let mut replaced = std::collections::BTreeSet::new();
        for r in std::mem::take(&mut self.refused) {
            if let Some(ino) = flying.get(&r.fd) {
                // Not the process's descriptor: the policy has no say; its message would lose it.
                refusals.push(in_flight_message(&r.message, r.fd, *ino));
                continue;
            }
            let action = if r.policy_helps {
                policy.action(r.fd, Some(r.class))
            } else {
                FdAction::Refuse
            };
            match action {
                FdAction::Refuse => {
                    refused_fds.insert(r.fd);
                    refusals.push(if r.policy_helps {
                        format!("{} ({})", r.message, crate::fd_policy::hint(r.fd, r.class))
                    } else {
                        r.message
                    })
                }
                FdAction::Drop => match dead_end(r.fd, r.flags, r.cloexec) {
                    Some(e) => {
                        changed.push(format!(
                            "{}: left out (a dead end at its number)",
                            r.message
                        ));
                        replaced.insert(r.fd);
                        placeholders.push(e);
                    }
                    None => {
                        dropped.insert(r.fd);
                        changed.push(format!("{}: left out", r.message))
                    }
                },
                FdAction::DevNull => {
                    changed.push(format!("{}: /dev/null at its number", r.message));
                    replaced.insert(r.fd);
                    placeholders.push(FdEntry {
                        fd: r.fd,
                        flags: r.flags,
                        cloexec: r.cloexec,
                        kind: FdKind::DevNull,
                        ..FdEntry::default()
                    });
                }
            }
        }
        self.entries.retain_mut(|e| {
            if e.fd <= 2 || flying.contains_key(&e.fd) {
                return true; // stdio is always the launcher's caller's; see above for in flight
            }
            match policy.overrides(e.fd) {
                None | Some(FdAction::Refuse) => true,
                // (A descriptor thaw would restore, left out: closed, as the process could
                // have closed it. Those it cannot restore get a dead end, above.)
                Some(FdAction::Drop) => {
                    dropped.insert(e.fd);
                    changed.push(format!("fd {}: left out by the descriptor policy", e.fd));
                    false
                }
                Some(FdAction::DevNull) => {
                    changed.push(format!("fd {}: /dev/null at its number", e.fd));
                    replaced.insert(e.fd);
                    e.kind = FdKind::DevNull;
                    true
                }
            }
        });
        self.entries.extend(placeholders);
        self.entries.sort_by_key(|e| e.fd);
        // A duplicate whose first descriptor was left out or replaced: the next one of its
        // description is made instead, and the others share that one.
        let firsts: BTreeMap<i32, bool> = self
            .entries
            .iter()
            .map(|e| (e.fd, replaced.contains(&e.fd)))
            .collect();
        let mut moved: BTreeMap<i32, i32> = BTreeMap::new();
        for e in &mut self.entries {
            if replaced.contains(&e.fd) {
                e.dup_of = None;
            }
            let Some(first) = e.dup_of else { continue };
            if firsts.get(&first) == Some(&false) {
                continue;
            }
            e.dup_of = moved.get(&first).copied();
            if e.dup_of.is_none() {
                moved.insert(first, e.fd);
            }
        }
        for e in &mut self.entries {
            if let Some(&ino) = flying.get(&e.fd) {
                e.in_flight = true;
                if let Some((what, why)) = not_in_flight(e) {
                    refusals.push(in_flight_message(
                        &format!("fd {} ({what}): {why}", e.fd),
                        e.fd,
                        ino,
                    ));
                }
            }
        }
        // A registration of a descriptor left out goes with it, as a close would take it (where
        // no other descriptor of its file stays: the kernel keeps the registration then).
        let kept_sibling = |fd: i32| {
            scanned.iter().find(|t| t.fd == fd).is_some_and(|me| {
                scanned
                    .iter()
                    .any(|t| t.fd != fd && !dropped.contains(&t.fd) && same_file(me, t))
            })
        };
        for e in &mut self.entries {
            if let FdKind::Epoll { watches } = &mut e.kind {
                watches.retain(|w| {
                    let holder = w.at.unwrap_or(w.fd);
                    let gone = dropped.contains(&holder) && !kept_sibling(holder);
                    if gone {
                        changed.push(format!(
                            "fd {} (epoll): its registration of fd {holder} left out with it",
                            e.fd
                        ));
                    }
                    !gone
                });
            }
        }
        // An epoll registration needs the watched descriptor as it was.
        for e in &self.entries {
            if let FdKind::Epoll { watches } = &e.kind {
                for w in watches {
                    // The file watched: at the registration's number, or where it is now.
                    let holder = w.at.unwrap_or(w.fd);
                    let target = self.entries.iter().find(|t| t.fd == holder);
                    if target.is_some_and(|t| t.in_flight) {
                        refusals.push(format!(
                            "fd {} (epoll): watches a file that is open only in a queued message",
                            e.fd
                        ));
                        continue;
                    }
                    match target.map(|t| &t.kind) {
                        // Named as refused already: leaving it out takes the registration too.
                        None if refused_fds.contains(&holder) => {}
                        None => refusals.push(format!(
                            "fd {} (epoll): watches fd {holder}, which the descriptor policy leaves out while another descriptor of its file stays: close it before the checkpoint instead",
                            e.fd
                        )),
                        Some(FdKind::DevNull) => refusals.push(format!(
                            "fd {} (epoll): watches fd {holder}, which the descriptor policy replaces with /dev/null (epoll cannot watch it): leave fd {holder} out instead (drop)",
                            e.fd
                        )),
                        // Opened again only once every thread exists, after the registrations.
                        Some(FdKind::Pidfd(_)) => refusals.push(format!(
                            "fd {} (epoll): watches fd {}, a pidfd of this process: not restored",
                            e.fd, w.fd
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        (refusals, changed)
    }

    /// Memfds the process holds: (object id, a descriptor of it).
    pub(crate) fn memfds(&self) -> Vec<(u64, i32)> {
        let mut out: Vec<(u64, i32)> = Vec::new();
        for e in &self.entries {
            if let FdKind::Memfd { object, .. } = e.kind {
                if !out.iter().any(|(o, _)| *o == object) {
                    out.push((object, e.fd));
                }
            }
        }
        out
    }

    /// Descriptors whose offset the signal handler must record.
    pub(crate) fn seekable(&self) -> Vec<i32> {
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    FdKind::Regular { .. } | FdKind::Memfd { .. } | FdKind::Directory { .. }
                )
            })
            .map(|e| e.fd)
            .collect()
    }

    /// inotify descriptors: the handler looks for queued events.
    /// Epoll instances (one descriptor each) and their registrations.
    pub(crate) fn epolls(&self) -> Vec<(i32, Vec<EpollWatch>)> {
        self.entries
            .iter()
            .filter(|e| e.dup_of.is_none())
            .filter_map(|e| match &e.kind {
                FdKind::Epoll { watches } => Some((e.fd, watches.clone())),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn inotify(&self) -> Vec<i32> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, FdKind::Inotify(_)))
            .map(|e| e.fd)
            .collect()
    }

    /// One descriptor per socket pair end: the handler copies its queued bytes.
    /// (fd, inode, whether message-based) of each.
    /// One descriptor per TCP connection (see [`super::tcp`]).
    pub(crate) fn tcp_connections(&self) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = Vec::new();
        for e in &self.entries {
            if let FdKind::Socket(super::sockets::Socket::Tcp(t)) = &e.kind {
                if !out.iter().any(|(_, i)| *i == t.ino) {
                    out.push((e.fd, t.ino));
                }
            }
        }
        out
    }

    pub(crate) fn socket_queues(&self) -> Vec<(i32, u64, bool)> {
        let mut out: Vec<(i32, u64, bool)> = Vec::new();
        for e in &self.entries {
            let (ino, msg) = match &e.kind {
                // (A dead end has nothing queued: the descriptor at its number is not it.)
                FdKind::Socket(super::sockets::Socket::Pair(p)) if is_dead_end(p.ino) => continue,
                FdKind::Socket(super::sockets::Socket::Pair(p)) => {
                    (p.ino, p.ty != libc::SOCK_STREAM)
                }
                // A bound datagram receiver's queue (its messages are queued again).
                FdKind::Socket(super::sockets::Socket::Bound(b))
                    if !b.addr.is_empty() && b.sock.ty == libc::SOCK_DGRAM =>
                {
                    (b.sock.ino, true)
                }
                _ => continue,
            };
            if !out.iter().any(|(_, i, _)| *i == ino) {
                out.push((e.fd, ino, msg));
            }
        }
        out
    }

    /// One descriptor per FIFO (named pipe), and one that reads it: the descriptor itself when
    /// it was opened for reading, else our own read end of the same FIFO (opened without
    /// blocking through /proc/self/fd), for the handler to copy what waits in it.
    pub(crate) fn fifo_readers(&self) -> std::io::Result<Vec<(i32, Option<super::locks::Opened>)>> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        // (A FIFO the process holds a POSIX lock on is not probed for a reader: the probe's
        // writing end could not be closed, see `has_reader`.)
        let mut locks = None;
        for e in self.entries.iter().filter(|e| self.fifos.contains(&e.fd)) {
            let (FdKind::Regular { id, .. } | FdKind::DeletedFifo { id, .. }) = &e.kind else {
                continue;
            };
            if seen.contains(id) {
                continue;
            }
            seen.push(*id);
            let own = if e.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
                if let Some(kept) = super::locks::Opened::kept_for(e.fd) {
                    out.push((e.fd, Some(kept)));
                    continue;
                }
                // Nothing waits in it and nobody reads it: nothing to copy, and a reading end
                // opened here would let a writer elsewhere, blocked opening the FIFO until a
                // reader comes, go on, and then die of SIGPIPE once this one closed.
                if crate::sys::inq(e.fd) == 0
                    && !locks
                        .get_or_insert_with(super::locks::OwnLocks::read)
                        .covers(e.fd)
                    && !has_reader(e.fd)
                {
                    continue;
                }
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(format!("/proc/self/fd/{}", e.fd))?;
                // (Closed or kept as the process's POSIX locks on the FIFO need.)
                Some(super::locks::Opened::new(OwnedFd::from(f)))
            } else {
                None
            };
            out.push((e.fd, own));
        }
        Ok(out)
    }

    /// One read end per in-process pipe: the handler duplicates its buffered bytes.
    pub(crate) fn pipe_readers(&self) -> Vec<i32> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for e in &self.entries {
            if let FdKind::Pipe {
                id,
                write_end: false,
                ..
            } = e.kind
            {
                if !seen.contains(&id) && !is_dead_end(id) {
                    seen.push(id);
                    out.push(e.fd);
                }
            }
        }
        out
    }
}

/// Files that are not reopened as the same thing by their path: why, or `None`.
fn special_filesystem(fd: i32, target: &str, flags: u32) -> Option<&'static str> {
    const MQUEUE_MAGIC: i64 = 0x1980_0202;
    const CGROUP2_MAGIC: i64 = 0x6367_7270;
    let fs = crate::sys::fstatfs_type(fd).ok()?;
    if fs == MQUEUE_MAGIC {
        return Some("a POSIX message queue (mq_open): not supported; close it before the checkpoint and open it again after");
    }
    // A pressure file written to is a PSI trigger, which lives in the open file and cannot be
    // read back.
    if fs == CGROUP2_MAGIC
        && target.ends_with(".pressure")
        && flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
    {
        return Some("a cgroup pressure file open for writing may hold a PSI trigger, which cannot be read back: open it and write the trigger again after restore");
    }
    None
}

/// The flags `open(2)` accepts back from a file's status flags.
const REOPEN_FLAGS: u32 = (libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_NOATIME
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE) as u32;

/// Reopens every non-stdio descriptor of the image for the restored process: `(fd number, open
/// descriptor)`. `payload(r)` reads a payload range of the image (pipe and socket contents);
/// `given` are listening sockets the caller hands in; `shared` the recreated shared memory
/// objects by id; timerfds run on over `away`. Fails with a message naming the descriptor if a
/// file is gone or is no longer the same file, or a socket cannot be recreated. Also returns,
/// per io_uring instance (by number), the memfd its memory is, for the restorer to map (see
/// [`super::io_uring::Ring::recreate`]).
pub fn reopen(
    entries: &[FdEntry],
    mut payload: impl FnMut(super::PayloadRef) -> Result<Vec<u8>, String>,
    given: &[OwnedFd],
    shared: &BTreeMap<u64, OwnedFd>,
    away: super::clocks::Away,
) -> Result<Reopened, String> {
    let mut rings: Vec<(i32, OwnedFd)> = Vec::new();
    use super::sockets::Socket;
    let socks: Vec<&Socket> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            FdKind::Socket(s) => Some(s),
            _ => None,
        })
        .collect();
    let (sockets, later) = super::sockets::recreate(&socks, &mut payload, given)?;
    // Stand-ins for processes that had exited, reaped when this returns.
    let mut dead = super::pidfd::DeadPidfds::default();
    let mut out: Vec<(i32, OwnedFd)> = Vec::new();
    // Per pipe: its two ends, its open file descriptions, which ends are taken by one.
    type PipeState = (OwnedFd, OwnedFd, BTreeMap<u32, OwnedFd>, [bool; 2]);
    let mut pipes: BTreeMap<u64, PipeState> = BTreeMap::new();
    // Per shared object and description: the description.
    let mut objects: BTreeMap<(u64, u32), OwnedFd> = BTreeMap::new();
    // FIFOs removed while open, made again: removed once every descriptor of them is open.
    let mut fifos = MadeFifos::default();
    for e in fifo_readers_first(entries) {
        let fd = e.fd;
        if e.standard().is_some() {
            continue; // the caller's (see FdEntry::standard)
        }
        if let Some(first) = e.dup_of {
            // The same open file description as an earlier descriptor: shared again.
            let d = out
                .iter()
                .find(|(n, _)| *n == first)
                .ok_or_else(|| {
                    format!("fd {fd}: a duplicate of fd {first}, which is not restored")
                })?
                .1
                .try_clone()
                .map_err(|err| format!("fd {fd}: {err}"))?;
            out.push((fd, d));
            continue;
        }
        let opened = match &e.kind {
            // Opened by the restorer (see FdEntry::plan_restore).
            FdKind::Pidfd(p) => match &p.dead {
                Some(d) => dead
                    .open(d, e.flags | if p.thread { libc::O_EXCL as u32 } else { 0 })
                    .map_err(|err| {
                        format!("fd {fd}: cannot make a pidfd of a process that has exited: {err}")
                    })?,
                None => continue,
            },
            FdKind::Stdio | FdKind::ProcSelf { .. } => continue,
            FdKind::Regular { path, pos, id } => {
                let f = reopen_path(e, path, Some(*pos), *id)?;
                // Its size and modification time now.
                let stamp_now = || {
                    f.try_clone()
                        .map(std::fs::File::from)
                        .and_then(|c| c.metadata())
                        .map(|m| super::FileStamp::of(&m))
                        .map_err(|err| format!("fd {fd}: cannot stat {path}: {err}"))
                };
                if let Some(then) = e.locked_stamp {
                    let now = stamp_now()?;
                    // (Empty then and now: a lock file opened with O_TRUNC by whoever tried the
                    // lock since, its time touched, nothing written.)
                    if now != then && !(now.size == 0 && then.size == 0) {
                        return Err(format!(
                            "fd {fd}: {path} was written since the checkpoint (its size or modification time changed), and the process held a lock on it: it would go on from the file as it was (a database in the middle of a transaction, or a reader trusting what it cached under a shared lock), so it is not restored (an earlier restore of this image may have written it: put back a copy of the file as it was, its modification time kept, e.g. with cp -p)"
                        ));
                    }
                }
                if let Some(then) = e.archive_stamp {
                    if stamp_now()? != then {
                        return Err(format!(
                            "fd {fd}: {path}, a zip archive the process reads (a jar on its class path, say), was written since the checkpoint (its size or modification time changed): the process keeps the archive's index and what it loaded from it in memory, and would mix the old contents with the new; make a new image with the new archive (or put the old one back as it was, e.g. with cp -p)"
                        ));
                    }
                }
                if let Some(then) = e.written_end {
                    written_over(&f, fd, path, then, !e.locks.is_empty())?;
                }
                super::locks::take_on_description(&f, fd, &e.locks)?;
                if let Some(bytes) = e.fifo_bytes {
                    refill_fifo(&f, path, &payload(bytes)?, e.fifo_left)
                        .map_err(|err| format!("fd {fd}: {err}"))?;
                }
                f
            }
            FdKind::Directory { path, id, pos } => {
                let dir = reopen_path(e, path, None, *id)?;
                if *pos != 0 && e.flags & libc::O_PATH as u32 == 0 {
                    let at = crate::sys::lseek_raw(
                        std::os::fd::AsRawFd::as_raw_fd(&dir),
                        *pos,
                        libc::SEEK_SET,
                    );
                    if at < 0 || at as u64 != *pos {
                        return Err(format!(
                            "fd {fd}: cannot go back to position {pos} in directory {path}"
                        ));
                    }
                }
                dir
            }
            FdKind::EventFd { count, semaphore } => {
                let mut flags = e.flags & libc::O_NONBLOCK as u32;
                if *semaphore {
                    flags |= libc::EFD_SEMAPHORE as u32;
                }
                crate::sys::eventfd(*count, flags)
                    .map_err(|err| format!("fd {fd}: cannot create an eventfd: {err}"))?
            }
            // Created empty; the restorer registers the watches once every descriptor has its
            // number (epoll keys registrations on the number).
            FdKind::Epoll { .. } => crate::sys::epoll_create()
                .map_err(|err| format!("fd {fd}: cannot create an epoll instance: {err}"))?,
            FdKind::Memfd { object, pos, desc } => {
                let d = match objects.get(&(*object, *desc)) {
                    Some(d) => d,
                    None => {
                        let d = object_description_again(e, *object, *pos, shared)?;
                        objects.entry((*object, *desc)).or_insert(d)
                    }
                };
                let f = d.try_clone().map_err(|err| format!("fd {fd}: {err}"))?;
                super::locks::take_on_description(&f, fd, &e.locks)?;
                f
            }
            FdKind::Socket(s) => {
                let ino = s.ino();
                let sock = sockets[&ino]
                    .try_clone()
                    .map_err(|err| format!("fd {fd}: {err}"))?;
                crate::sys::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::F_SETFL,
                    u64::from(e.flags & libc::O_NONBLOCK as u32),
                )
                .map_err(|err| format!("fd {fd}: cannot set socket flags: {err}"))?;
                sock
            }
            FdKind::TimerFd {
                clockid,
                value_ns,
                interval_ns,
                ticks,
                absolute,
            } => {
                // A wall-clock deadline stays a deadline; time left ran on over the time away,
                // each expiration meanwhile counted as unread (as for a stopped process).
                let r = if *absolute {
                    super::clocks::RanOn {
                        fired: 0,
                        left_ns: *value_ns,
                    }
                } else {
                    away.run(*clockid, *value_ns, *interval_ns)
                };
                crate::sys::timerfd(
                    *clockid,
                    e.flags & libc::O_NONBLOCK as u32 != 0,
                    r.left_ns,
                    *interval_ns,
                    ticks.saturating_add(r.fired),
                    *absolute,
                )
                .map_err(|err| {
                    format!("fd {fd}: cannot create its timerfd (clock {clockid}): {err}")
                })?
            }
            FdKind::Inotify(i) => i.recreate(fd, e.flags)?,
            FdKind::IoUring(r) => {
                let (ring, memory) = r.recreate(fd, &mut payload)?;
                rings.push((fd, memory));
                ring
            }
            FdKind::SignalFd { mask } => {
                crate::sys::signalfd(*mask, e.flags & libc::O_NONBLOCK as u32 != 0)
                    .map_err(|err| format!("fd {fd}: cannot create a signalfd: {err}"))?
            }
            FdKind::DeletedDir { path, mode } => reopen_deleted_dir(e, path, *mode)?,
            FdKind::DeletedSymlink {
                path,
                target,
                owner,
            } => reopen_deleted_symlink(fd, path, target, *owner)?,
            FdKind::DeletedFifo {
                path,
                mode,
                owner,
                id,
            } => {
                let now = match fifos.made.iter().find(|m| m.0 == *id) {
                    Some(m) => m.3,
                    None => {
                        let (holder, now) = make_fifo_again(fd, path, *mode, *owner)?;
                        fifos.made.push((*id, path.clone(), holder, now));
                        now
                    }
                };
                // Opened as any FIFO by name is, checked to be the one just made.
                let f = reopen_path(e, path, Some(0), now)?;
                match e.fifo_bytes {
                    Some(bytes) => refill_fifo(&f, path, &payload(bytes)?, e.fifo_left)
                        .map_err(|err| format!("fd {fd}: {err}"))?,
                    // A reading end (only those are restored alone, and only once their writer
                    // came and went: see the scan) with nothing to put back: a writer comes and
                    // goes all the same, for poll to report its writers gone (POLLHUP), as it
                    // did (a reading end that never saw one does not).
                    None if e.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 => {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NONBLOCK)
                            .open(format!(
                                "/proc/self/fd/{}",
                                std::os::fd::AsRawFd::as_raw_fd(&f)
                            ))
                            .map_err(|err| {
                                format!("fd {fd}: cannot open FIFO {path} to write: {err}")
                            })?;
                    }
                    None => {}
                }
                f
            }
            FdKind::DevNull => {
                let acc = e.flags & libc::O_ACCMODE as u32;
                std::fs::OpenOptions::new()
                    .read(acc != libc::O_WRONLY as u32)
                    .write(acc != libc::O_RDONLY as u32)
                    .custom_flags((e.flags & (libc::O_APPEND | libc::O_NONBLOCK) as u32) as i32)
                    .open("/dev/null")
                    .map(OwnedFd::from)
                    .map_err(|err| format!("fd {fd}: cannot open /dev/null: {err}"))?
            }
            FdKind::Pipe {
                id,
                write_end,
                buffered,
                capacity,
                desc,
            } => {
                if !pipes.contains_key(id) {
                    let bytes = buffered.map(&mut payload).transpose()?.unwrap_or_default();
                    let (r, w) = refilled_pipe(fd, &bytes, *capacity)?;
                    pipes.insert(*id, (r, w, BTreeMap::new(), [false; 2]));
                }
                let (r, w, descs, used) = pipes.get_mut(id).expect("inserted above");
                let end = match descs.get(desc) {
                    Some(d) => d,
                    None => {
                        // The pipe's own end for the first description of each kind; a separate
                        // open of it (through /proc/self/fd) for every further one.
                        let which = usize::from(*write_end);
                        let own = if which == 1 { &*w } else { &*r };
                        let d = if used[which] {
                            let acc = e.flags & libc::O_ACCMODE as u32;
                            std::fs::OpenOptions::new()
                                .read(acc != libc::O_WRONLY as u32)
                                .write(acc != libc::O_RDONLY as u32)
                                .open(format!(
                                    "/proc/self/fd/{}",
                                    std::os::fd::AsRawFd::as_raw_fd(own)
                                ))
                                .map(OwnedFd::from)
                                .map_err(|err| {
                                    format!("fd {fd}: cannot open the pipe again: {err}")
                                })?
                        } else {
                            used[which] = true;
                            own.try_clone().map_err(|err| format!("fd {fd}: {err}"))?
                        };
                        // Status flags belong to the description.
                        crate::sys::fcntl(
                            std::os::fd::AsRawFd::as_raw_fd(&d),
                            libc::F_SETFL,
                            u64::from(e.flags & PIPE_STATUS),
                        )
                        .map_err(|err| format!("fd {fd}: cannot set pipe flags: {err}"))?;
                        descs.entry(*desc).or_insert(d)
                    }
                };
                end.try_clone().map_err(|err| format!("fd {fd}: {err}"))?
            }
        };
        out.push((fd, opened));
    }
    // Messages that carry descriptors, now that every descriptor is made; then the files in
    // flight are closed (the queues hold them).
    later.finish(&mut payload, &|n| {
        out.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, f)| std::os::fd::AsRawFd::as_raw_fd(f))
    })?;
    out.retain(|(n, _)| !entries.iter().any(|e| e.fd == *n && e.in_flight));
    Ok((out, rings))
}

/// What [`reopen`] makes: the descriptors by number, and the memory of each io_uring instance.
pub type Reopened = (Vec<(i32, OwnedFd)>, Vec<(i32, OwnedFd)>);

/// An open file description of shared object `object` like descriptor `e`'s, at offset `pos`.
/// A memfd's read-write description is the memfd itself, as `memfd_create` made it: that one
/// does not count as a writer when the memfd is executed (`execveat`), while a reopened one does.
fn object_description_again(
    e: &FdEntry,
    object: u64,
    pos: u64,
    shared: &BTreeMap<u64, OwnedFd>,
) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let fd = e.fd;
    let obj = shared
        .get(&object)
        .ok_or_else(|| format!("fd {fd}: descriptor of unknown shared object {object}"))?;
    let acc = e.flags & libc::O_ACCMODE as u32;
    let at = format!("/proc/self/fd/{}", obj.as_raw_fd());
    let is_memfd =
        std::fs::read_link(&at).is_ok_and(|p| p.to_string_lossy().starts_with("/memfd:"));
    let d = if is_memfd && acc == libc::O_RDWR as u32 {
        let d = obj.try_clone().map_err(|err| format!("fd {fd}: {err}"))?;
        crate::sys::fcntl(
            d.as_raw_fd(),
            libc::F_SETFL,
            u64::from(e.flags & (libc::O_APPEND | libc::O_NONBLOCK) as u32),
        )
        .map_err(|err| format!("fd {fd}: cannot set its flags: {err}"))?;
        d
    } else {
        // Its own open file description (offset, access mode, flags), as it had.
        OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(acc != libc::O_WRONLY as u32)
                .write(acc != libc::O_RDONLY as u32)
                .custom_flags((e.flags & (libc::O_APPEND | libc::O_NONBLOCK) as u32) as i32)
                .open(&at)
                .map_err(|err| format!("fd {fd}: cannot reopen its shared object: {err}"))?,
        )
    };
    crate::sys::lseek_raw(d.as_raw_fd(), pos, libc::SEEK_SET);
    Ok(d)
}

/// Status flags of a pipe's description that F_SETFL restores.
const PIPE_STATUS: u32 = (libc::O_NONBLOCK | libc::O_DIRECT | libc::O_APPEND) as u32;

/// A pipe of `capacity` bytes holding `bytes` (so that writing them cannot block).
fn refilled_pipe(fd: i32, bytes: &[u8], capacity: u32) -> Result<(OwnedFd, OwnedFd), String> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (r, w) = crate::sys::pipe_nonblock()
        .map_err(|err| format!("fd {fd}: cannot create a pipe: {err}"))?;
    let want = (bytes.len() as u64).max(u64::from(capacity));
    if want != 65536 {
        crate::sys::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want).map_err(|err| {
            format!("fd {fd}: cannot give the pipe its capacity of {want} bytes: {err}")
        })?;
    }
    if !bytes.is_empty() {
        std::fs::File::from(w.try_clone().map_err(|err| format!("fd {fd}: {err}"))?)
            .write_all(bytes)
            .map_err(|err| {
                format!(
                    "fd {fd}: cannot refill the pipe with {} bytes: {err}",
                    bytes.len()
                )
            })?;
    }
    Ok((r, w))
}

/// Makes a directory removed while open again: created at its path (nothing may have that name
/// now), opened with the descriptor's flags, and removed.
/// Why a file removed while open (a directory, FIFO or symlink) cannot be made again at `path`.
fn made_again_error(fd: i32, what: &str, path: &str, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::AlreadyExists {
        format!("fd {fd}: cannot make the deleted {what} {path} again: something has that name now")
    } else {
        format!("fd {fd}: cannot make the deleted {what} {path} again: {err}")
    }
}

/// FIFOs removed while open, made again for the restore: each with a reading end that keeps it
/// (its buffer) alive while its descriptors are opened. Removed again when dropped, whatever
/// happened.
#[derive(Default)]
struct MadeFifos {
    /// (its id in the image, its path, the holding end, its id now).
    made: Vec<(super::FileId, String, OwnedFd, super::FileId)>,
}

impl Drop for MadeFifos {
    fn drop(&mut self) {
        for (_, path, _, _) in &self.made {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Makes the FIFO at `path` again with its mode and owner; a reading end of it, and its id.
fn make_fifo_again(
    fd: i32,
    path: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, super::FileId), String> {
    crate::sys::mkfifo(path, mode).map_err(|err| made_again_error(fd, "FIFO", path, &err))?;
    let made = (|| -> std::io::Result<(OwnedFd, super::FileId)> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)?;
        let id = super::FileId::of(&f.metadata()?);
        Ok((f.into(), id))
    })();
    match made {
        Ok(made) => Ok(made),
        Err(err) => {
            let _ = std::fs::remove_file(path);
            Err(format!(
                "fd {fd}: cannot make the deleted FIFO {path} again as it was: {err}"
            ))
        }
    }
}

/// Makes the symlink at `path` again (to `target`, with its owner), opens it itself
/// (`O_PATH | O_NOFOLLOW`) and removes it.
fn reopen_deleted_symlink(
    fd: i32,
    path: &str,
    target: &str,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, String> {
    std::os::unix::fs::symlink(target, path)
        .map_err(|err| made_again_error(fd, "symlink", path, &err))?;
    let opened = (|| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
    })();
    let removed = std::fs::remove_file(path);
    let f = opened
        .map_err(|err| format!("fd {fd}: cannot open the deleted symlink {path} again: {err}"))?;
    removed.map_err(|err| format!("fd {fd}: cannot remove {path} again: {err}"))?;
    Ok(f.into())
}

fn reopen_deleted_dir(e: &FdEntry, path: &str, mode: u32) -> Result<OwnedFd, String> {
    use std::os::unix::fs::DirBuilderExt;
    let fd = e.fd;
    std::fs::DirBuilder::new()
        .mode(mode & 0o7777)
        .create(path)
        .map_err(|err| made_again_error(fd, "directory", path, &err))?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            libc::O_DIRECTORY
                | libc::O_NOFOLLOW
                | (e.flags & (libc::O_PATH | libc::O_NONBLOCK) as u32) as i32,
        )
        .open(path);
    let removed = std::fs::remove_dir(path);
    let f = opened.map_err(|err| format!("fd {fd}: cannot open {path} again: {err}"))?;
    removed.map_err(|err| format!("fd {fd}: cannot remove {path} again: {err}"))?;
    Ok(OwnedFd::from(f))
}

/// `entries` in their order, but the files opened for writing alone (and their duplicates) last:
/// such an end of a FIFO opens only where the FIFO has a reader, which may be one of the
/// process's own with a higher number (Go opens a FIFO's two ends from two goroutines, in either
/// order). (Which of them are FIFOs is not looked up: a regular file's place in the order does
/// not matter.)
fn fifo_readers_first(entries: &[FdEntry]) -> impl Iterator<Item = &FdEntry> {
    let mut later = std::collections::BTreeSet::new();
    for e in entries.iter().filter(|e| !e.in_flight) {
        let writer = matches!(e.kind, FdKind::Regular { .. })
            && e.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
        if writer || e.dup_of.is_some_and(|d| later.contains(&d)) {
            later.insert(e.fd);
        }
    }
    let (first, last): (Vec<&FdEntry>, Vec<&FdEntry>) = entries
        .iter()
        .partition(|e| e.in_flight || !later.contains(&e.fd));
    first.into_iter().chain(last)
}

fn reopen_path(
    e: &FdEntry,
    path: &str,
    pos: Option<u64>,
    id: super::FileId,
) -> Result<OwnedFd, String> {
    use std::io::{Seek, SeekFrom};
    let fd = e.fd;
    let acc = e.flags & libc::O_ACCMODE as u32;
    let dir = pos.is_none();
    // An O_PATH descriptor names the file without opening it for I/O: reopened the same way.
    let path_only = e.flags & libc::O_PATH as u32 != 0;
    // Opened without blocking (a FIFO put at the path would block forever), checked to be the
    // same file below, then given its own status flags.
    let status = (e.flags & REOPEN_FLAGS & !(libc::O_ACCMODE as u32)) as i32;
    // A lock file: empty, held under a write lock, there for the lock alone (java.util.logging's
    // FileHandler's `.lck`, which a JVM removes as it exits, so that an earlier restore of the
    // image removed it). Made again where it is gone, and any empty file at its path will do.
    let lock_file = e.locked_stamp.is_some_and(|s| s.size == 0) && !path_only && !dir;
    let mut options = std::fs::OpenOptions::new();
    options
        .read(path_only || dir || acc != libc::O_WRONLY as u32)
        .write(!path_only && !dir && acc != libc::O_RDONLY as u32)
        .custom_flags(if path_only {
            // O_NOFOLLOW: the symlink itself, as it was opened.
            libc::O_PATH
                | (e.flags & libc::O_NOFOLLOW as u32) as i32
                | if dir { libc::O_DIRECTORY } else { 0 }
        } else {
            status | libc::O_NONBLOCK | libc::O_NOCTTY | if dir { libc::O_DIRECTORY } else { 0 }
        });
    let opened = match options.open(path) {
        Err(err) if lock_file && err.kind() == std::io::ErrorKind::NotFound => {
            options.write(true).create_new(true).open(path)
        }
        other => other,
    };
    let mut f = opened.map_err(|err| {
        if err.raw_os_error() == Some(libc::ENXIO) {
            format!("fd {fd}: cannot reopen the FIFO {path} for writing: nothing has it open for reading now (start its reader first)")
        } else if err.kind() == std::io::ErrorKind::NotFound {
            format!("fd {fd}: cannot reopen {path}: it is gone (removed since the checkpoint: by the first life as it ended, by an earlier restore of this image, or by another process): an image keeping a file open restores only while that file is there: close it before the checkpoint and open it again after restore (a hook), or put back a copy of the file (files runtimes remove themselves: SQLite's -wal and -shm when its last connection closes, a JVM's JFR repository, Python's shared_memory segments, unlinked by its resource tracker)")
        } else {
            format!("fd {fd}: cannot reopen {path}: {err}")
        }
    })?;
    let meta = f
        .metadata()
        .map_err(|err| format!("fd {fd}: cannot stat {path}: {err}"))?;
    // (Another empty file at its path will do only if it is the restoring user's: one someone
    // else put there, in a shared directory, would get what the process writes.)
    let empty_lock_file = lock_file
        && meta.file_type().is_file()
        && meta.len() == 0
        && meta.uid() == crate::sys::geteuid();
    if super::FileId::of(&meta) != id && e.archive_stamp.is_some() {
        return Err(format!(
            "fd {fd}: {path}, a zip archive the process reads (a jar on its class path, say), is no longer the file that was open at checkpoint (replaced since: a deploy, an upgrade): the process keeps what it loaded from the old one in memory and would mix it with the new; make a new image with the new archive"
        ));
    }
    if super::FileId::of(&meta) != id && !empty_lock_file {
        return Err(format!(
            "fd {fd}: {path} is no longer the file that was open at checkpoint (device/inode changed: replaced or rotated since, perhaps by an earlier restore of this image; an image keeping a file open restores only while that file is at its path): a log that is rotated is best closed before the checkpoint and opened again after restore (a hook: Python's logging handlers, WatchedFileHandler too, keep theirs open), or not rotated (HotSpot's -Xlog file output: filecount=0, or reconfigured after restore with jcmd PID VM.log)"
        ));
    }
    if !path_only {
        crate::sys::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::F_SETFL,
            status as u64,
        )
        .map_err(|err| format!("fd {fd}: cannot set its flags on {path}: {err}"))?;
    }
    if let Some(pos) = pos.filter(|_| meta.file_type().is_file() && !path_only) {
        f.seek(SeekFrom::Start(pos))
            .map_err(|err| format!("fd {fd}: cannot seek {path} to {pos}: {err}"))?;
    }
    Ok(OwnedFd::from(f))
}

/// The other processes that hold the file `f` (at `path`) open for writing ("process 12
/// (python3)"), by that name, among those whose descriptors can be looked at; `None` where none
/// does.
fn writers_elsewhere(f: &OwnedFd, path: &str, empty: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::getpid();
    let m = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(f)
    ))
    .ok()?;
    let (dev, ino) = (m.dev(), m.ino());
    let mut who = Vec::new();
    for pid in crate::sys::list_dir("/proc").ok()? {
        let Ok(p) = pid.parse::<i32>() else { continue };
        if p == me {
            continue;
        }
        for n in crate::sys::list_dir(&format!("/proc/{p}/fd")).unwrap_or_default() {
            let at = format!("/proc/{p}/fd/{n}");
            // (The link's text first: a stat of every descriptor of the machine costs more.)
            if !std::fs::read_link(&at).is_ok_and(|l| l.as_os_str() == path)
                || !std::fs::metadata(&at).is_ok_and(|o| (o.dev(), o.ino()) == (dev, ino))
            {
                continue;
            }
            let info = std::fs::read_to_string(format!("/proc/{p}/fdinfo/{n}")).unwrap_or_default();
            // An empty file that the other process holds a lock on through this descriptor is
            // a lock file, written by neither: a standby waiting for the lock, or trying it in
            // a loop (Java's FileChannel.lock()/tryLock() want it open for writing), while the
            // holder runs. (Where the process goes on to lock it too, its lock decides.)
            if empty && info.lines().any(|l| l.starts_with("lock:")) {
                continue;
            }
            if fdinfo_flags(&info) & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                who.push(format!("process {p} ({})", comm.trim()));
                break;
            }
        }
    }
    (!who.is_empty()).then(|| who.join(", "))
}

/// Refuses a file written at its end (`FdEntry::written_end`, `then` bytes) whose size changed
/// since: the process would write over what was written meanwhile at its old offset.
fn written_over(f: &OwnedFd, fd: i32, path: &str, then: u64, locked: bool) -> Result<(), String> {
    let now = crate::sys::fstat(std::os::fd::AsRawFd::as_raw_fd(f))
        .map(|st| st.st_size as u64)
        .map_err(|err| format!("fd {fd}: cannot stat {path}: {err}"))?;
    if now == then {
        // Nor may another process write it meanwhile (another restore of the image, the first
        // life going on): both would write at one offset, over each other. (Where the process
        // locks it, its locks decide: taken again, or the restore refused.)
        if locked {
            return Ok(());
        }
        return match writers_elsewhere(f, path, now == 0) {
            Some(who) => Err(format!(
                "fd {fd}: {path} is open for writing in {who}, and the process writes it at its end through its offset (open for writing without O_APPEND): both would write at one offset, over each other, so it is not restored while that runs; open it with O_APPEND (Python's open(path, \"a\"), Java's FileOutputStream(path, true)), or have each restore write a file of its own"
            )),
            None => Ok(()),
        };
    }
    let how = if now < then {
        "was truncated since the checkpoint (a log rotated by copying and truncating it, say)"
    } else {
        "was written since the checkpoint"
    };
    Err(format!(
        "fd {fd}: {path} {how} ({then} bytes then, {now} now), and the process writes it at its end through its offset (open for writing without O_APPEND): it would write over what was written since (its first life going on, or an earlier restore of this image), so it is not restored; put back a copy of the file as it was (cp -p), or open it with O_APPEND (Python's open(path, \"a\"), Java's FileOutputStream(path, true)), or have each restore write a file of its own"
    ))
}

impl FdEntry {
    /// POSIX locks: taken once every descriptor the process did not have is closed (closing any
    /// descriptor of a file drops the process's POSIX locks on it, the launcher's copies too).
    pub fn plan_locks(&self, plan: &mut crate::restore::Plan) {
        super::locks::plan_restore(plan, self.fd, &self.locks);
    }

    /// Steps that run once every thread exists: pidfds.
    pub fn plan_after_threads(&self, plan: &mut crate::restore::Plan) {
        if let FdKind::Pidfd(p) = &self.kind {
            if p.dead.is_none() {
                p.plan_restore(plan, self.fd, self.flags, self.cloexec);
            }
        }
        if let FdKind::ProcSelf { name, pos } = &self.kind {
            let fd = self.fd;
            let path = plan.cstr(&format!("/proc/self/{name}"));
            let flags = self.flags & (libc::O_ACCMODE | libc::O_NONBLOCK) as u32;
            plan.syscall_fd(
                format!("fd {fd}: open /proc/self/{name}"),
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, path, u64::from(flags), 0, 0],
                fd,
            );
            plan.cloexec_as(fd, self.cloexec);
            if *pos != 0 {
                plan.syscall(
                    format!("fd {fd}: seek to {pos}"),
                    libc::SYS_lseek,
                    [fd as u64, *pos, libc::SEEK_SET as u64, 0, 0, 0],
                );
            }
        }
        if let Some(s) = &self.signal_io {
            if !matches!(self.kind, FdKind::DevNull | FdKind::Stdio) {
                s.plan_restore(plan, self.fd, self.flags);
            }
        }
    }

    /// The standard descriptor (0, 1 or 2) this one shares its open file description with, itself
    /// one of them or another: at restore it is the caller's, which the launcher passes on.
    pub fn standard(&self) -> Option<i32> {
        match (&self.kind, self.dup_of) {
            (FdKind::Stdio, _) if self.fd <= 2 => Some(self.fd),
            (FdKind::Stdio, Some(s)) if (0..=2).contains(&s) => Some(s),
            _ => None,
        }
    }

    /// Whether the restorer creates this descriptor itself (it is not reopened by the launcher).
    pub fn made_by_restorer(&self) -> bool {
        matches!(&self.kind, FdKind::Pidfd(p) if p.dead.is_none())
            || matches!(self.kind, FdKind::ProcSelf { .. })
    }

    /// Steps that run once every descriptor has its number: epoll registrations.
    /// `table`: every descriptor of the process; `scratch`: a number free for a moment.
    pub fn plan_restore(&self, table: &[FdEntry], scratch: i32, plan: &mut crate::restore::Plan) {
        if self.dup_of.is_some() {
            return; // registered through the first descriptor of its description
        }
        if let FdKind::Epoll { watches } = &self.kind {
            super::epoll::plan(self.fd, watches, table, scratch, plan);
        }
    }
}

/// Whether FIFO `fd` (a writing end of the process's) has a reader anywhere: a writing end
/// opened without blocking fails with ENXIO where none has. (Closing that end of ours would end
/// the process's POSIX locks on the FIFO: not called for one it holds a lock on.)
fn has_reader(fd: i32) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
    {
        Ok(f) => {
            drop(f);
            true
        }
        Err(e) => e.raw_os_error() != Some(libc::ENXIO),
    }
}

/// Ids of dead ends (see [`dead_end`]) count down from here: numbers of their own, far from any
/// inode, so no other socket or pipe of the image's.
const DEAD_END: u64 = u64::MAX;

fn is_dead_end(id: u64) -> bool {
    id > DEAD_END - (1 << 31)
}

/// What the policy's `drop` leaves at the number of a socket or a pipe: an end whose other end
/// is gone (end of file, then EPIPE; poll says it hung up; a datagram socket's is never readable
/// and its sends fail), not nothing. A runtime's event loop
/// that still watches the number then sees it hang up and closes it, and no other file takes the
/// number meanwhile: a runtime keeps its objects by descriptor number, and one the restored
/// process opened at a freed number (its next connection) would be taken for the one it knew,
/// another connection's bytes read as this one's. `None`: anything else (closed, as before).
fn dead_end(fd: i32, flags: u32, cloexec: bool) -> Option<FdEntry> {
    let ft = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()?
        .file_type();
    let id = DEAD_END - fd as u64;
    let kind = if ft.is_socket() {
        let opt = |o| crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, o).unwrap_or(0);
        // Of the socket's own kind: a stream's end of file reads as an empty datagram, again and
        // again, and an event loop that watched a UDP socket spins on it (Node's dgram and
        // asyncio did, at 100 % CPU, handing the program empty datagrams from nowhere). A
        // datagram pair end whose peer is gone is never readable.
        let ty = match opt(libc::SO_TYPE) {
            t @ (libc::SOCK_STREAM | libc::SOCK_SEQPACKET) => t,
            _ => libc::SOCK_DGRAM,
        };
        FdKind::Socket(super::sockets::Socket::Pair(super::sockets::PairEnd {
            ino: id,
            pair: id,
            ty,
            peer_open: false,
            sndbuf: opt(libc::SO_SNDBUF),
            rcvbuf: opt(libc::SO_RCVBUF),
            ..Default::default()
        }))
    } else if ft.is_fifo() {
        FdKind::Pipe {
            id,
            write_end: flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32,
            buffered: None,
            capacity: crate::sys::fcntl(fd, libc::F_GETPIPE_SZ, 0).map_or(65536, |c| c as u32),
            desc: 0,
        }
    } else {
        return None;
    };
    Some(FdEntry {
        fd,
        // (A named FIFO opened for both is one end here.)
        flags: flags & !(libc::O_ACCMODE as u32)
            | match &kind {
                FdKind::Pipe {
                    write_end: true, ..
                } => libc::O_WRONLY as u32,
                FdKind::Pipe { .. } => libc::O_RDONLY as u32,
                _ => libc::O_RDWR as u32,
            },
        cloexec,
        kind,
        ..FdEntry::default()
    })
}

/// `message` ("fd N (target): why") said of a descriptor in flight in socket `ino`.
fn in_flight_message(message: &str, fd: i32, ino: u64) -> String {
    let rest = message
        .strip_prefix(&format!("fd {fd} "))
        .unwrap_or(message);
    format!("a descriptor in flight in a message queued in socket:[{ino}] {rest}")
}

/// Why a file in flight cannot be restored as one, if it cannot: (what it is, why). The
/// restorer finishes these by descriptor number, and a file in flight has none in the restored
/// process.
fn not_in_flight(e: &FdEntry) -> Option<(&'static str, &'static str)> {
    if !e.locks.is_empty() {
        return Some(("a file", "it holds locks"));
    }
    if e.signal_io.is_some() {
        return Some(("a file", "it has signal-driven I/O (O_ASYNC)"));
    }
    match &e.kind {
        FdKind::Pidfd(_) => Some(("pidfd", "a pidfd is not restored in flight")),
        FdKind::ProcSelf { .. } => Some(("a /proc file", "it is not restored in flight")),
        FdKind::Epoll { watches } if !watches.is_empty() => Some((
            "epoll",
            "an epoll instance with registrations is not restored in flight",
        )),
        _ => None,
    }
}

/// Whether two scanned descriptors share one open file description (a `dup`: the description's
/// own way for pipes, memfds and sockets).
fn same_file(a: &FdEntry, b: &FdEntry) -> bool {
    if a.dup_of == Some(b.fd)
        || b.dup_of == Some(a.fd)
        || (a.dup_of.is_some() && a.dup_of == b.dup_of)
    {
        return true;
    }
    match (&a.kind, &b.kind) {
        (
            FdKind::Pipe {
                id: i,
                write_end: w,
                desc: d,
                ..
            },
            FdKind::Pipe {
                id: j,
                write_end: x,
                desc: e,
                ..
            },
        ) => i == j && w == x && d == e,
        (FdKind::Socket(s), FdKind::Socket(t)) => s.ino() == t.ino(),
        (
            FdKind::Memfd {
                object: o, desc: d, ..
            },
            FdKind::Memfd {
                object: p, desc: e, ..
            },
        ) => o == p && d == e,
        _ => false,
    }
}

/// Whether `holders` (of a pipe's or socket's other end, see [`crate::procfs::Holders`]) are
/// children left out alone: the restored process has that end closed, as after their death.
pub(crate) fn only_left_out(holders: &[(i32, String)], left_out: &[i32]) -> bool {
    !holders.is_empty() && holders.iter().all(|(p, _)| left_out.contains(p))
}

/// Where children are left out and `holders` are not all of them: says that the others (a
/// child's own children, another process) are not covered.
pub(crate) fn beyond_left_out(holders: &[(i32, String)], left_out: &[i32]) -> &'static str {
    if left_out.is_empty() || only_left_out(holders, left_out) {
        ""
    } else {
        "; not all of them children of this process left out: a grandchild (a shell's command: start it with exec) or another process"
    }
}

/// Whether no other process holds the FIFO `fd` reads open for writing, as far as every
/// process's descriptors can be seen: false where some cannot (another user's as an
/// unprivileged caller, a /proc mounted with hidepid, a PID namespace inside another), or where
/// the FIFO still has a name elsewhere (a hard link).
fn no_writer_elsewhere(fd: i32) -> bool {
    let Ok(me) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
        return false;
    };
    if me.nlink() != 0 {
        return false;
    }
    if !crate::procfs::all_processes_visible() {
        return false;
    }
    let Ok(name) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
        return false;
    };
    let own = crate::sys::getpid().to_string();
    let Ok(procs) = crate::sys::list_dir("/proc") else {
        return false;
    };
    for pid in procs
        .iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && **p != own)
    {
        let fds = match crate::sys::list_dir(&format!("/proc/{pid}/fd")) {
            Ok(f) => f,
            // Gone meanwhile: nothing held.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) => return false,
        };
        for n in fds {
            // The link's text first (no stat of every descriptor on the machine).
            if std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .ok()
                .as_ref()
                != Some(&name)
            {
                continue;
            }
            let same = std::fs::metadata(format!("/proc/{pid}/fd/{n}"))
                .is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino());
            if same {
                let info =
                    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap_or_default();
                if fdinfo_flags(&info) & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_anonymous_inode_is_named() {
        assert!(anon_inode_refusal("[perf_event]").starts_with("a perf event"));
        assert!(anon_inode_refusal("bpf-map").starts_with("a BPF map"));
        let other = anon_inode_refusal("[frobnicator]");
        assert!(
            other.starts_with("a kernel object of kind \"frobnicator\""),
            "{other}"
        );
        assert!(other.contains("inotify, pidfd and io_uring"), "{other}");
    }

    #[test]
    fn a_timerfd_disarmed_with_an_interval_stays_disarmed_and_a_fired_one_rearms() {
        let info = |ticks: u64, value: &str| {
            format!("clockid: 1\nticks: {ticks}\nsettime flags: 00\nit_value: {value}\nit_interval: (0, 20000000)\n")
        };
        let left = |text: String| match timerfd_state_at(&text, 0) {
            Ok(FdKind::TimerFd {
                value_ns, ticks, ..
            }) => (value_ns, ticks),
            other => panic!("{other:?}"),
        };
        assert_eq!(left(info(0, "(0, 0)")), (0, 0), "disarmed, interval kept");
        assert_eq!(
            left(info(2, "(0, 0)")),
            (20_000_000, 2),
            "fired twice, unread"
        );
        assert_eq!(left(info(0, "(0, 5000)")), (5000, 0), "armed");
    }

    #[test]
    fn shared_anonymous_memory_open_as_a_file_is_kept_as_its_shared_object() {
        const LEN: usize = 4096;
        // SAFETY: a new anonymous mapping, touched by no one but the kernel.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let at = at as usize;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/map_files/{at:x}-{:x}", at + LEN))
            .unwrap();
        // SAFETY: the mapping made above, which nothing else uses.
        assert_eq!(unsafe { libc::munmap(at as *mut libc::c_void, LEN) }, 0);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let scan = FdScan::scan(&[], 0, Default::default(), &[], Default::default()).unwrap();
        assert!(!scan.refused.iter().any(|r| r.fd == fd));
        let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
        let e = scan.entries.iter().find(|e| e.fd == fd).unwrap();
        assert!(
            matches!(e.kind, FdKind::Memfd { object, .. } if object == ino),
            "{:?}",
            e.kind
        );
        assert!(scan.memfds().contains(&(ino, fd)));
    }

    #[test]
    fn a_namespace_descriptor_is_refused_as_one() {
        let ns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
        let scan = FdScan::scan(&[], 0, Default::default(), &[], Default::default()).unwrap();
        let why = &scan.refused.iter().find(|r| r.fd == fd).unwrap().message;
        assert!(
            why.contains("a namespace descriptor (/proc/PID/ns/net) is not supported"),
            "{why}"
        );
    }
}
