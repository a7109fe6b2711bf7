//! Semantic validation of a decoded manifest, before anything acts on it. A manifest signed by a
//! trusted key is still input (a build pipeline's key can be stolen, its pipeline buggy): every
//! count is bounded, every address range is well-formed, in the user half, sorted and disjoint,
//! every page run lies inside its mapping or object, and every reference (threads, descriptors,
//! objects) points at something that exists. What passes cannot make the launcher panic, loop,
//! or allocate beyond a small multiple of the image's size.

use std::collections::BTreeSet;

use crate::state::files::FdKind;
use crate::state::memory::{Backing, PageRun};
use crate::state::Manifest;

/// Limits well above what a real process has (Linux's default vm.max_map_count is 65530).
pub const MAX_VMAS: usize = 1 << 18;
pub const MAX_THREADS: usize = 1 << 15;
pub const MAX_FILES: usize = 1 << 20;
pub const MAX_OBJECTS: usize = 1 << 16;
pub const MAX_RUNS: usize = 1 << 22;
/// The end of the x86_64 user address space (4-level paging) and the vsyscall page.
const USER_END: u64 = 0x0000_7fff_ffff_f000;
const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;

fn bound(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what}, more than the {max} a restore accepts"));
    }
    Ok(())
}

/// Checks the manifest; `Err` says what is wrong (the image is then refused as corrupt).
/// A socket's queued messages (some may be empty): exactly its queued bytes, bounded in number.
fn messages_add_up(
    ino: u64,
    queued: Option<crate::state::PayloadRef>,
    messages: &[u32],
) -> Result<(), String> {
    let total: u64 = messages.iter().map(|&l| u64::from(l)).sum();
    let queued = queued.map_or(0, |q| q.len);
    if !messages.is_empty() && total != queued {
        return Err(format!("socket:[{ino}]: its queued messages do not add up"));
    }
    bound("queued messages", messages.len(), 1 << 16)
}

pub fn validate(m: &Manifest, page: u64) -> Result<(), String> {
    bound("mappings", m.memory.len(), MAX_VMAS)?;
    bound("threads", m.threads.len(), MAX_THREADS)?;
    bound("descriptors", m.files.len(), MAX_FILES)?;
    bound("shared objects", m.shared.len(), MAX_OBJECTS)?;
    let runs: usize = m.memory.iter().map(|v| v.pages.len()).sum::<usize>()
        + m.shared.iter().map(|o| o.pages.len()).sum::<usize>();
    bound("page runs", runs, MAX_RUNS)?;
    bound("advice ranges", m.dontfork.len() + m.guards.len(), MAX_VMAS)?;

    let ids: BTreeSet<u64> = m.shared.iter().map(|o| o.id).collect();
    // Mappings: page-aligned, non-empty, in the user half, sorted and disjoint.
    let aligned = |a: u64| a.is_multiple_of(page);
    let mut prev_end = 0u64;
    for v in &m.memory {
        let special = matches!(v.backing, Backing::Special { .. });
        let user = v.end <= USER_END || (special && v.start == VSYSCALL);
        if !(v.start < v.end && aligned(v.start) && aligned(v.end) && user) {
            return Err(format!(
                "mapping {:#x}-{:#x} is not a user address range",
                v.start, v.end
            ));
        }
        if v.start < prev_end {
            return Err(format!(
                "mapping {:#x}-{:#x} overlaps or precedes the one before",
                v.start, v.end
            ));
        }
        prev_end = v.end;
        if v.prot & !7 != 0 {
            return Err(format!("mapping {:#x}: protection {:#x}", v.start, v.prot));
        }
        runs_inside(&v.pages, v.start, v.end, page, v.end)
            .map_err(|e| format!("mapping {:#x}-{:#x}: {e}", v.start, v.end))?;
        if let Backing::IoRing { fd, offset } = v.backing {
            use crate::state::io_uring::{OFF_CQ_RING, OFF_SQES, OFF_SQ_RING};
            let ring = m
                .files
                .iter()
                .any(|f| f.fd == fd && f.dup_of.is_none() && matches!(f.kind, FdKind::IoUring(_)));
            if !ring
                || ![OFF_SQ_RING, OFF_CQ_RING, OFF_SQES].contains(&offset)
                || v.map_flags & libc::MAP_SHARED as u32 == 0
                || !v.pages.is_empty()
            {
                return Err(format!(
                    "mapping {:#x}: io_uring fd {fd} at {offset:#x}",
                    v.start
                ));
            }
        }
        if let Backing::Aio(r) = &v.backing {
            if v.map_flags & libc::MAP_SHARED as u32 == 0 || !v.pages.is_empty() {
                return Err(format!("mapping {:#x}: an AIO ring not shared", v.start));
            }
            r.check(v.len())
                .map_err(|e| format!("mapping {:#x}: {e}", v.start))?;
        }
        if let Backing::Shared { object, offset } = v.backing {
            if !ids.contains(&object) || !aligned(offset) {
                return Err(format!(
                    "mapping {:#x}: shared object {object} at {offset:#x}",
                    v.start
                ));
            }
        }
    }
    for o in &m.shared {
        if o.size > 1 << 46 {
            return Err(format!("shared object {}: size {}", o.id, o.size));
        }
        // The last run may end with the object, inside a page.
        runs_inside(&o.pages, 0, o.size.next_multiple_of(page), page, o.size)
            .map_err(|e| format!("shared object {}: {e}", o.id))?;
        // A file created again under its name (and a stale one there replaced) can only be the
        // process's own performance data file: nothing else may be named by an image.
        if let Some(f) = o.file.as_ref().filter(|f| f.keep_name) {
            if !crate::state::deleted::is_perf_data(&f.path, m.process.pid) {
                return Err(format!("shared object {}: kept name {:?}", o.id, f.path));
            }
        }
    }
    crate::state::aio::check_all(&m.memory)?;
    crate::state::pkeys::validate(&m.pkeys, &m.memory)?;
    crate::state::io_uring::Ring::check_all(crate::state::io_uring::rings(&m.files))?;
    if ids.len() != m.shared.len() {
        return Err("two shared objects with one id".into());
    }
    for r in m
        .dontfork
        .iter()
        .map(|d| (d.start, d.end))
        .chain(m.guards.iter().map(|g| (g.start, g.end)))
    {
        if !(r.0 < r.1 && aligned(r.0) && aligned(r.1) && r.1 <= USER_END) {
            return Err(format!("advice range {:#x}-{:#x}", r.0, r.1));
        }
    }

    // Threads: distinct positive TIDs, among them the process's and the checkpointing one's.
    let tids: BTreeSet<i32> = m.threads.iter().map(|t| t.tid).collect();
    if tids.len() != m.threads.len() || tids.iter().any(|&t| t <= 0) {
        return Err("thread ids are not distinct positive numbers".into());
    }
    if !tids.contains(&m.process.pid) {
        return Err(format!("no thread has the process's id {}", m.process.pid));
    }
    if !tids.contains(&m.process.checkpoint_tid) {
        return Err(format!(
            "the checkpointing thread {} is not among the threads",
            m.process.checkpoint_tid
        ));
    }
    // Zombies: distinct PIDs of their own, each ended by an exit code or a signal that ends a
    // process (never a stop).
    let zombies: BTreeSet<i32> = m.zombies.iter().map(|z| z.pid).collect();
    bound("zombie children", m.zombies.len(), MAX_THREADS)?;
    for z in &m.zombies {
        if z.pid <= 0 || tids.contains(&z.pid) || !ends_a_process(z.status) || z.comm.len() > 64 {
            return Err(format!(
                "zombie child {}: status {:#x}, name of {} bytes",
                z.pid,
                z.status,
                z.comm.len()
            ));
        }
    }
    if zombies.len() != m.zombies.len() {
        return Err("zombie children's PIDs are not distinct".into());
    }
    // Pending signals: signals a program can have waiting (never SIGKILL or SIGSTOP), with
    // their own number in their siginfo, at most as many as a checkpoint takes.
    let pending = m
        .signals
        .pending
        .iter()
        .chain(m.threads.iter().flat_map(|t| &t.pending));
    let mut queued = 0;
    for p in pending {
        queued += 1;
        let n = p.signo;
        if !(1..=64).contains(&n)
            || n == libc::SIGKILL as u32
            || n == libc::SIGSTOP as u32
            || p.info[0] as u32 != n
        {
            return Err(format!(
                "pending signal {n}: not one a process can have waiting"
            ));
        }
    }
    bound(
        "pending signals",
        queued,
        crate::capture::QUEUED_MAX * (1 + m.threads.len()),
    )?;
    // The signal frames and the restore cell lie in writable private memory of the image.
    // The range may span adjacent mappings (the cell can straddle .data and .bss).
    let writable = |addr: u64, len: u64| {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut at = addr;
        while at < end {
            // Sorted and disjoint (checked above): the first mapping ending past `at`.
            let i = m.memory.partition_point(|v| v.end <= at);
            let Some(v) = m.memory.get(i).filter(|v| v.start <= at) else {
                return false;
            };
            if v.prot & libc::PROT_WRITE as u32 == 0 || v.map_flags & libc::MAP_SHARED as u32 != 0 {
                return false;
            }
            at = v.end;
        }
        true
    };
    for t in &m.threads {
        if t.affinity.len() > 1024
            || t.speculation.len() > 3
            || t.speculation.iter().any(|&(which, _)| which > 2)
        {
            return Err(format!(
                "thread {}: its CPU mask or speculation controls are malformed",
                t.tid
            ));
        }
        // Room for tile state is made only for a thread of a process that may use it, and
        // only state the image's CPU had.
        let cpu = m.platform.cpu.xsave_mask;
        if t.frame_xfeatures & !m.process.xcomp_perm & crate::state::threads::XTILEDATA != 0
            || (cpu != 0 && (t.frame_xfeatures | m.process.xcomp_perm) & !cpu != 0)
        {
            return Err(format!(
                "thread {}: its saved registers hold state the process may not use (AMX tiles without the permission) or its CPU did not have",
                t.tid
            ));
        }
        if !t.sigframe.is_multiple_of(8) || !writable(t.sigframe, 304) {
            return Err(format!(
                "thread {}: its signal frame at {:#x} is not in writable memory",
                t.tid, t.sigframe
            ));
        }
        if let Some(sleep) = t.sleep {
            if !writable(sleep.addr, 16) {
                return Err(format!(
                    "thread {}: the time left of its sleep at {:#x} is not in writable memory",
                    t.tid, sleep.addr
                ));
            }
        }
    }
    if !m.process.restore_cell.is_multiple_of(8) || !writable(m.process.restore_cell, 56) {
        return Err(format!(
            "the restore cell at {:#x} is not in writable memory",
            m.process.restore_cell
        ));
    }

    // Descriptors: distinct numbers in range; what they refer to exists.
    let fds: BTreeSet<i32> = m.files.iter().map(|f| f.fd).collect();
    if fds.len() != m.files.len() || fds.iter().any(|&f| !(0..MAX_FILES as i32).contains(&f)) {
        return Err("descriptor numbers are not distinct or out of range".into());
    }
    // (Looked up by number: an image may hold a million descriptors.)
    let by_fd: std::collections::BTreeMap<i32, &crate::state::files::FdEntry> =
        m.files.iter().map(|f| (f.fd, f)).collect();
    let zombies: BTreeSet<i32> = m.zombies.iter().map(|z| z.pid).collect();
    for f in &m.files {
        if let Some(s) = &f.signal_io {
            // SIGIO may go to the process or one of its threads, nobody else.
            if s.owner != 0 && s.owner != m.process.pid && !tids.contains(&s.owner) {
                return Err(format!(
                    "fd {}: its SIGIO owner {} is not this process",
                    f.fd, s.owner
                ));
            }
        }
        if let Some(first) = f.dup_of {
            let ok = first < f.fd
                && by_fd.get(&first).is_some_and(|g| {
                    g.dup_of.is_none()
                        && std::mem::discriminant(&g.kind) == std::mem::discriminant(&f.kind)
                });
            if !ok {
                return Err(format!(
                    "fd {}: a duplicate of fd {first}, which is no such descriptor",
                    f.fd
                ));
            }
        }
        match &f.kind {
            FdKind::DeletedDir { path, mode } => {
                let plain = path.starts_with('/')
                    && !path.split('/').any(|c| c == ".." || c == ".")
                    && !path.contains('\0');
                if !plain || *mode > 0o7777 {
                    return Err(format!("fd {}: malformed deleted directory", f.fd));
                }
            }
            FdKind::DeletedSymlink { path, target, .. } => {
                let plain = path.starts_with('/')
                    && !path.split('/').any(|c| c == ".." || c == ".")
                    && !path.contains('\0');
                if !plain || target.is_empty() || target.contains('\0') {
                    return Err(format!("fd {}: malformed deleted symlink", f.fd));
                }
            }
            FdKind::DeletedFifo { path, mode, .. } => {
                let plain = path.starts_with('/')
                    && !path.split('/').any(|c| c == ".." || c == ".")
                    && !path.contains('\0');
                if !plain || *mode > 0o7777 {
                    return Err(format!("fd {}: malformed deleted FIFO", f.fd));
                }
            }
            // Opened by the restorer as /proc/self/NAME before it gives up the launcher's
            // privileges: only the names a checkpoint writes (no path through another process's
            // links).
            FdKind::ProcSelf { name, .. }
                if !crate::state::files::PROC_SELF.contains(&name.as_str()) =>
            {
                return Err(format!("fd {}: /proc file {name:?}", f.fd));
            }
            FdKind::Memfd { object, .. } if !ids.contains(object) => {
                return Err(format!("fd {}: unknown shared object {object}", f.fd));
            }
            FdKind::Epoll { watches } => {
                bound("epoll watches", watches.len(), MAX_FILES)?;
                // A registration by a number whose file is now at another (`at`) names a
                // descriptor of the image there, and a plausible number.
                let wrong = |w: &&crate::state::files::EpollWatch| match w.at {
                    None => !fds.contains(&w.fd),
                    Some(at) => !fds.contains(&at) || at == w.fd || !(0..1 << 20).contains(&w.fd),
                };
                if let Some(w) = watches.iter().find(wrong) {
                    return Err(format!(
                        "fd {}: epoll watches fd {}, which is not in the image",
                        f.fd, w.fd
                    ));
                }
            }
            FdKind::IoUring(r) if f.dup_of.is_none() => {
                r.check().map_err(|e| format!("fd {}: {e}", f.fd))?
            }
            FdKind::Inotify(i) => {
                bound("inotify watches", i.watches.len(), MAX_FILES)?;
                // Placeholders are added up to each number: bounded, increasing.
                let mut prev = 0;
                for w in &i.watches {
                    if w.wd <= prev || w.wd > crate::state::inotify::MAX_WD {
                        return Err(format!("fd {}: inotify watch number {}", f.fd, w.wd));
                    }
                    prev = w.wd;
                }
            }
            // A stand-in ends as the status says: a stop signal would stop it for ever.
            FdKind::Pidfd(p)
                if p.dead.is_some_and(|d| {
                    d.status
                        .is_some_and(|s| !ends_a_process(s & !0x80) || s & !0xffff != 0)
                }) || (p.dead.is_some() && p.pid != -1) =>
            {
                return Err(format!(
                    "fd {}: malformed pidfd of a process that has exited",
                    f.fd
                ));
            }
            FdKind::Pidfd(p)
                if p.dead.is_none()
                    && !tids.contains(&p.pid)
                    && (p.thread || !zombies.contains(&p.pid)) =>
            {
                return Err(format!(
                    "fd {}: a pidfd of {}, not of this process",
                    f.fd, p.pid
                ));
            }
            _ => {}
        }
    }
    // Namespaces: names for messages only, bounded.
    let ns = &m.namespaces;
    if ns.interfaces.len() > crate::state::namespaces::MAX_INTERFACES
        || ns.interfaces.iter().any(|i| i.len() > 15)
        || ns.hostname.len() > 64
        || ns.uid_map.len() > crate::state::namespaces::MAX_MAP_LINES
        || ns.gid_map.len() > crate::state::namespaces::MAX_MAP_LINES
        || ns.sysv.len() > crate::state::namespaces::MAX_SYSV
    {
        return Err("malformed namespaces".into());
    }
    // Mounts: compared and named only, bounded.
    let sandbox = &m.mounts.sandbox;
    if sandbox.len() > crate::state::mounts::MAX_MOUNTS
        || sandbox
            .iter()
            .any(|x| x.point.len() > 4096 || x.fstype.len() > 64)
    {
        return Err("malformed mounts".into());
    }
    // Internet sockets: only the kinds thaw makes, with well-formed addresses.
    for f in &m.files {
        if let FdKind::Socket(crate::state::sockets::Socket::Inet(i)) = &f.kind {
            crate::state::inet::validate(i).map_err(|e| format!("fd {}: {e}", f.fd))?;
        }
        if let FdKind::Socket(crate::state::sockets::Socket::Netlink(n)) = &f.kind {
            crate::state::netlink::validate(n).map_err(|e| format!("fd {}: {e}", f.fd))?;
        }
        if let FdKind::Socket(crate::state::sockets::Socket::Tcp(t)) = &f.kind {
            crate::state::tcp::validate(t, m.process.pid)
                .map_err(|e| format!("fd {}: {e}", f.fd))?;
        }
    }
    // Connections waiting in a listener's queue: each listed once, by the listener it names.
    let sockets: Vec<&crate::state::sockets::Socket> = m
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Socket(s) => Some(s),
            _ => None,
        })
        .collect();
    use crate::state::sockets::Socket;
    // Listeners by inode, and (connecting socket, the listener it names): looked up, not
    // searched (an image may hold a million sockets).
    let listeners: std::collections::BTreeMap<u64, &crate::state::sockets::Listener> = sockets
        .iter()
        .filter_map(|s| match s {
            Socket::Listener(l) => Some((l.ino, l)),
            _ => None,
        })
        .collect();
    let connecting: BTreeSet<(u64, u64)> = sockets
        .iter()
        .filter_map(|s| match s {
            Socket::Connecting(k) => Some((k.sock.ino, k.listener)),
            _ => None,
        })
        .collect();
    let waiting: BTreeSet<(u64, u64)> = listeners
        .values()
        .flat_map(|l| l.pending.iter().map(|&c| (l.ino, c)))
        .collect();
    for s in &sockets {
        let moved = match s {
            Socket::Listener(l) => Some((l.ino, &l.addr, &l.moved_to, l.unlinked)),
            Socket::Bound(b) => Some((b.sock.ino, &b.addr, &b.moved_to, b.unlinked)),
            _ => None,
        };
        if let Some((ino, addr, to, unlinked)) = moved.filter(|m| !m.2.is_empty()) {
            // A socket file renamed in its own directory, to a plain name.
            let from = crate::state::sockets::sun_path(addr);
            let to = std::path::Path::new(to.as_str());
            let plain = |p: &std::path::Path| {
                p.is_absolute()
                    && p.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::RootDir | std::path::Component::Normal(_)
                        )
                    })
            };
            if unlinked
                || !plain(from)
                || !plain(to)
                || to.parent() != from.parent()
                || to.as_os_str().as_encoded_bytes().contains(&0)
            {
                return Err(format!(
                    "socket:[{ino}]: its socket file renamed to another directory, or not by a plain name"
                ));
            }
        }
        if let Socket::Listener(l) = s {
            bound("connections waiting to be accepted", l.pending.len(), 4096)?;
            if !l.pending.is_empty() && l.family != libc::AF_UNIX {
                return Err(format!(
                    "socket:[{}]: connections waiting in a listener other than AF_UNIX",
                    l.ino
                ));
            }
            let mut seen = BTreeSet::new();
            for &c in &l.pending {
                if !connecting.contains(&(c, l.ino)) || !seen.insert(c) {
                    return Err(format!(
                        "socket:[{}]: its waiting connection socket:[{c}] is not one of its own",
                        l.ino
                    ));
                }
            }
        }
        // An accepted pair end names a listener of the image, of its type.
        if let Socket::Pair(p) = s {
            if p.accepted_from != 0
                && !listeners
                    .get(&p.accepted_from)
                    .is_some_and(|l| l.family == libc::AF_UNIX && l.ty == p.ty)
            {
                return Err(format!(
                    "socket:[{}]: accepted from socket:[{}], which is no listener of the image",
                    p.ino, p.accepted_from
                ));
            }
        }
        if let Socket::Connecting(k) = s {
            let listed = waiting.contains(&(k.listener, k.sock.ino));
            if !listed {
                return Err(format!(
                    "socket:[{}]: connecting to socket:[{}], which does not list it",
                    k.sock.ino, k.listener
                ));
            }
        }
    }
    // Files in flight: never the caller's stdio, at most so many, and nothing the restorer
    // finishes by descriptor number (which they do not have in the restored process).
    let flying: BTreeSet<i32> = m
        .files
        .iter()
        .filter(|f| f.in_flight)
        .map(|f| f.fd)
        .collect();
    bound(
        "descriptors in flight",
        flying.len(),
        crate::state::scm::MAX_IN_FLIGHT,
    )?;
    // Lock ranges are file offsets (off_t): start and end within i64.
    for f in &m.files {
        let max = i64::MAX as u64;
        if f.locks.iter().any(|l| {
            l.start
                .checked_add(l.len)
                .is_none_or(|end| end > max || l.len > max)
        }) {
            return Err(format!("fd {}: a lock's byte range is out of bounds", f.fd));
        }
    }
    for f in m.files.iter().filter(|f| f.in_flight) {
        let finished_by_number = !f.locks.is_empty()
            || f.signal_io.is_some()
            || matches!(f.kind, FdKind::Pidfd(_) | FdKind::Stdio | FdKind::DevNull)
            || matches!(&f.kind, FdKind::Epoll { watches } if !watches.is_empty());
        if f.fd <= 2 || finished_by_number {
            return Err(format!("fd {}: cannot be restored in flight", f.fd));
        }
    }
    let carried: usize = m
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Socket(crate::state::sockets::Socket::Pair(p)) => {
                Some(p.message_fds.iter().map(Vec::len).sum::<usize>())
            }
            _ => None,
        })
        .sum();
    bound(
        "descriptors carried by queued messages",
        carried,
        crate::state::scm::MAX_IN_FLIGHT,
    )?;
    // Socket pairs: at most two ends, of one type.
    let mut pairs: std::collections::BTreeMap<u64, (BTreeSet<u64>, i32)> = Default::default();
    for f in &m.files {
        if let FdKind::Socket(crate::state::sockets::Socket::Pair(p)) = &f.kind {
            let e = pairs
                .entry(p.pair)
                .or_insert_with(|| (BTreeSet::new(), p.ty));
            e.0.insert(p.ino);
            if e.0.len() > 2 || e.1 != p.ty {
                return Err(format!(
                    "socket pair {}: more than two ends, or of two types",
                    p.pair
                ));
            }
            messages_add_up(p.ino, p.queued, &p.messages)?;
            if p.reset && (p.peer_open || p.ty != libc::SOCK_STREAM) {
                return Err(format!(
                    "socket:[{}]: reset, yet no stream end whose other end is closed",
                    p.ino
                ));
            }
            // Descriptors in flight: per message, each an in-flight entry (see state::scm).
            if !p.message_fds.is_empty() && p.message_fds.len() != p.messages.len() {
                return Err(format!(
                    "socket:[{}]: descriptors for {} messages, {} queued",
                    p.ino,
                    p.message_fds.len(),
                    p.messages.len()
                ));
            }
            for n in p.message_fds.iter().flatten() {
                if !flying.contains(n) {
                    return Err(format!(
                        "socket:[{}]: a queued message carries fd {n}, which is no descriptor in flight",
                        p.ino
                    ));
                }
            }
            for fds in &p.message_fds {
                bound(
                    "descriptors of one message",
                    fds.len(),
                    crate::sys::MAX_PASSED_FDS,
                )?;
            }
        }
        if let FdKind::Socket(crate::state::sockets::Socket::Bound(b)) = &f.kind {
            // Queued again by address: a receiver with one, of datagrams.
            if !b.messages.is_empty() && (b.addr.is_empty() || b.sock.ty != libc::SOCK_DGRAM) {
                return Err(format!(
                    "socket:[{}]: messages queued to a socket that cannot receive them again",
                    b.sock.ino
                ));
            }
            if b.messages.is_empty() && b.queued.is_some() {
                return Err(format!(
                    "socket:[{}]: queued bytes without messages",
                    b.sock.ino
                ));
            }
            messages_add_up(b.sock.ino, b.queued, &b.messages)?;
        }
    }
    // Memory page runs: whole pages of the payload, each byte in one run only (lazy filling
    // finds a page's bytes by arithmetic on these).
    let mut ranges: Vec<(u64, u64)> = m
        .memory
        .iter()
        .flat_map(|v| v.pages.iter())
        .map(|r| (r.payload.offset, r.payload.len))
        .collect();
    ranges.sort_unstable();
    let mut end = 0;
    for (off, len) in ranges {
        if !off.is_multiple_of(page) || off < end {
            return Err(format!(
                "payload range {off:#x}+{len:#x} is misaligned or shared"
            ));
        }
        end = off + len;
    }
    // Times that cannot be shown or compared (file identities hold nanoseconds).
    let plausible = |ns: i128| i64::try_from(ns).is_ok();
    if !plausible(m.mm.exe.mtime_ns) || !plausible(m.mm.exe.id.btime_ns) {
        return Err("the executable's times are out of range".into());
    }
    for v in &m.memory {
        // What the kernel accepts as a mapping's name (PR_SET_VMA_ANON_NAME).
        let name_ok = v.anon_name.len() < 80
            && v.anon_name
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && !b"\\`$[]".contains(&b));
        if !name_ok || (!v.anon_name.is_empty() && v.backing != Backing::Anonymous) {
            return Err(format!("mapping {:#x}: malformed name", v.start));
        }
        if let Backing::File { id, stamp, .. } = &v.backing {
            if !plausible(id.btime_ns) || !plausible(stamp.mtime_ns) {
                return Err(format!(
                    "mapping {:#x}: the file's birth time is out of range",
                    v.start
                ));
            }
        }
    }
    for f in &m.files {
        if let FdKind::Regular { id, .. } | FdKind::Directory { id, .. } = &f.kind {
            if !plausible(id.btime_ns) {
                return Err(format!(
                    "fd {}: the file's birth time is out of range",
                    f.fd
                ));
            }
        }
    }
    Ok(())
}

/// Runs sorted, disjoint, page-aligned, non-empty and inside `[start, end)`; a run may end
/// inside a page only at `ragged_end`.
fn runs_inside(
    runs: &[PageRun],
    start: u64,
    end: u64,
    page: u64,
    ragged_end: u64,
) -> Result<(), String> {
    let mut at = start;
    for r in runs {
        let len = r.payload.len;
        let ok = r.addr.is_multiple_of(page)
            && len > 0
            && (len.is_multiple_of(page) || r.addr.checked_add(len) == Some(ragged_end))
            && r.addr >= at
            && r.addr.checked_add(len).is_some_and(|e| e <= end);
        if !ok {
            return Err(format!(
                "page run {:#x}+{len:#x} is misaligned, overlaps another or lies outside",
                r.addr
            ));
        }
        at = r.addr + len;
    }
    Ok(())
}

/// Whether wait status `status` is one a process can end with: an exit code, or a signal
/// (1-64) whose default action ends a process (not one that stops, continues or is ignored).
fn ends_a_process(status: i32) -> bool {
    let sig = status & 0x7f;
    let harmless = [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGWINCH,
    ];
    if sig == 0 {
        status & !0xff00 == 0
    } else {
        status == sig && sig <= 64 && !harmless.contains(&sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::Vma;
    use crate::state::threads::ThreadState;

    fn manifest(cell: u64) -> Manifest {
        let mut m = Manifest::default();
        m.process.pid = 7;
        m.process.checkpoint_tid = 7;
        m.process.restore_cell = cell;
        m.threads.push(ThreadState {
            tid: 7,
            sigframe: 0x10_0100,
            ..Default::default()
        });
        // .data (file-backed in a real process) and .bss right after it, both writable.
        for (start, end) in [(0x10_0000, 0x10_1000), (0x10_1000, 0x10_3000)] {
            m.memory.push(Vma {
                start,
                end,
                prot: 3,
                map_flags: libc::MAP_PRIVATE as u32,
                ..Default::default()
            });
        }
        m
    }

    #[test]
    fn dead_pidfds_end_as_a_process_can_and_lock_ranges_fit_a_file() {
        use crate::state::files::{FdEntry, FdKind};
        use crate::state::locks::{Lock, LockKind};
        use crate::state::pidfd::{Dead, Pidfd};
        let pidfd = |status: i32| {
            let mut m = manifest(0x10_0fe0);
            m.files.push(FdEntry {
                fd: 5,
                kind: FdKind::Pidfd(Pidfd {
                    pid: -1,
                    thread: false,
                    dead: Some(Dead {
                        ino: 1,
                        status: Some(status),
                    }),
                }),
                ..Default::default()
            });
            validate(&m, 4096)
        };
        assert_eq!(pidfd(3 << 8), Ok(()));
        assert_eq!(pidfd(libc::SIGKILL), Ok(()));
        // A core dump is how such a process may have ended.
        assert_eq!(pidfd(0x80 | libc::SIGSEGV), Ok(()));
        // A stop would stop the stand-in for ever (the launcher waited on it); 70 is no signal.
        for status in [libc::SIGSTOP, libc::SIGTTIN, 70, 0x137f] {
            assert!(pidfd(status).is_err(), "{status:#x}");
        }
        let lock = |start: u64, len: u64| {
            let mut m = manifest(0x10_0fe0);
            m.files.push(FdEntry {
                fd: 5,
                kind: FdKind::DevNull,
                locks: vec![Lock {
                    kind: LockKind::Posix,
                    write: true,
                    start,
                    len,
                }],
                ..Default::default()
            });
            validate(&m, 4096)
        };
        assert_eq!(lock(0, 0), Ok(()));
        assert_eq!(lock(1 << 30, 2), Ok(()));
        assert!(lock(u64::MAX - 1, 2).is_err());
        assert!(lock(1 << 63, 0).is_err());
    }

    /// A signed image at the limits, its lookups laid out to cost the most if searched (every
    /// descriptor a duplicate of the last one listed): validated by lookups, in about as many
    /// steps as it has entries (searched, 2^40: hours).
    #[test]
    fn an_image_at_the_limits_is_validated_by_lookups() {
        use crate::state::files::{FdEntry, FdKind};
        let mut m = manifest(0x10_0fe0);
        let n = MAX_FILES as i32 - 1;
        m.files = (1..n)
            .map(|fd| FdEntry {
                fd,
                kind: FdKind::DevNull,
                dup_of: Some(0),
                ..Default::default()
            })
            .collect();
        m.files.push(FdEntry {
            fd: 0,
            kind: FdKind::DevNull,
            ..Default::default()
        });
        assert_eq!(validate(&m, 4096), Ok(()));
    }

    #[test]
    fn tile_state_only_in_a_process_that_may_use_it() {
        let with = |perm: u64, frame: u64| {
            let mut m = manifest(0x10_0fe0);
            m.process.xcomp_perm = perm;
            m.threads[0].frame_xfeatures = frame;
            validate(&m, 4096)
        };
        assert_eq!(with(0x600e7, 0x600e7), Ok(()));
        assert_eq!(with(0x200e7, 0x200e7), Ok(()));
        assert!(with(0x200e7, 0x600e7).is_err());
        // Nor state the CPU the image was taken on did not have.
        let on = |cpu: u64| {
            let mut m = manifest(0x10_0fe0);
            m.platform.cpu.xsave_mask = cpu;
            (m.process.xcomp_perm, m.threads[0].frame_xfeatures) = (0x600e7, 0x600e7);
            validate(&m, 4096)
        };
        assert_eq!(on(0x602e7), Ok(()));
        assert!(on(0x2e7).is_err());
    }

    #[test]
    fn zombies_and_pending_signals_must_be_ones_a_process_can_have() {
        use crate::state::children::Zombie;
        use crate::state::signals::PendingSignal;
        let zombie = |pid: i32, status: i32| {
            let mut m = manifest(0x10_0fe0);
            m.zombies.push(Zombie {
                pid,
                status,
                ..Default::default()
            });
            validate(&m, 4096)
        };
        assert_eq!(zombie(9, 3 << 8), Ok(()));
        assert_eq!(zombie(9, libc::SIGTERM), Ok(()));
        // A stop, a core-dump flag, the process's own PID, no PID.
        for (pid, status) in [
            (9, 0x137f),
            (9, 0x80 | libc::SIGSEGV),
            (9, libc::SIGTSTP),
            (9, libc::SIGCHLD),
            (7, 0),
            (0, 0),
        ] {
            assert!(zombie(pid, status).is_err(), "{pid} {status:#x}");
        }
        let signal = |signo: u32, info0: u64| {
            let mut m = manifest(0x10_0fe0);
            let mut info = [0u64; 16];
            info[0] = info0;
            m.threads[0].pending.push(PendingSignal { signo, info });
            validate(&m, 4096)
        };
        assert_eq!(signal(34, 34), Ok(()));
        assert!(signal(9, 9).is_err(), "SIGKILL");
        assert!(signal(65, 65).is_err());
        assert!(signal(34, 35).is_err(), "another number in its siginfo");
    }

    #[test]
    fn a_restore_cell_may_straddle_adjacent_writable_mappings() {
        assert_eq!(validate(&manifest(0x10_0fe0), 4096), Ok(()));
        // Past the last mapping, or misaligned: refused.
        assert!(validate(&manifest(0x10_2ff0), 4096).is_err());
        assert!(validate(&manifest(0x10_0fe4), 4096).is_err());
    }

    #[test]
    fn descriptors_name_only_this_process_and_earlier_descriptors() {
        use crate::state::files::{FdEntry, FdKind};
        use crate::state::sigio::SignalIo;
        let with = |files: Vec<FdEntry>| {
            let mut m = manifest(0x10_0fe0);
            m.files = files;
            validate(&m, 4096)
        };
        let null = |fd: i32| FdEntry {
            fd,
            kind: FdKind::DevNull,
            ..Default::default()
        };
        let owned_by = |owner: i32| FdEntry {
            signal_io: Some(SignalIo {
                owner_type: 1,
                owner,
                signal: 0,
                on: true,
            }),
            ..null(3)
        };
        assert_eq!(with(vec![owned_by(7)]), Ok(()));
        assert!(with(vec![owned_by(999)]).is_err(), "another process");
        let dup = |fd: i32, of: i32| FdEntry {
            dup_of: Some(of),
            ..null(fd)
        };
        assert_eq!(with(vec![null(3), dup(4, 3)]), Ok(()));
        assert!(
            with(vec![null(3), dup(4, 5), null(5)]).is_err(),
            "a later one"
        );
        assert!(
            with(vec![null(3), dup(4, 9)]).is_err(),
            "no such descriptor"
        );
    }
}
