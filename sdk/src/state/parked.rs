//! The state of event objects (eventfd counters, timerfds, signalfd masks, epoll registrations,
//! inotify watches) as it was once every thread had stopped. The descriptor scan reads it from
//! fdinfo while the other threads still run, and they change it all the time: an event loop re-arms its one-shot
//! epoll registrations on every wait (GHC's I/O manager), writes its wake-up eventfd, re-arms
//! its timerfd. A change between the scan and the stop would be lost: a registration restored
//! disarmed, a wake-up never seen, and the process would wait for ever. So each of those
//! descriptors' fdinfo is read again in the checkpoint's handler, while every other thread is
//! parked, into a buffer prepared beforehand; after the snapshot the scan's entries take those
//! values, and an epoll instance whose registrations themselves came or went meanwhile makes
//! the checkpoint start again.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};

use super::files::{FdEntry, FdKind};

/// One descriptor's fdinfo, read while the threads are parked.
#[derive(Debug)]
pub struct ParkedInfo {
    pub fd: i32,
    /// /proc/self/fdinfo/FD, opened beforehand (the handler only reads it).
    info: OwnedFd,
    /// A timerfd's clock (its deadline, if on a wall clock, is computed from its reading then).
    timerfd: Option<i32>,
    clock_ns: std::sync::atomic::AtomicU64,
    /// An epoll instance's registrations as the scan read them (by watched number, in the
    /// kernel's order), the policy's removals included.
    before: Vec<i32>,
    buf: Vec<u8>,
    /// Bytes read, or a negative errno (0 until the handler ran).
    len: AtomicI64,
    /// An io_uring instance's memory as the process maps it, copied by the handler.
    ring: Option<RingCopy>,
}

/// An io_uring instance's rings and submission entries (where the process maps them, with
/// what the handler copied), and whether an eventfd is registered with it (see
/// [`super::io_uring::probe_eventfd`]).
#[derive(Debug)]
struct RingCopy {
    parts: [(u64, u64); 2],
    buf: crate::sys::DontForkBuf,
    /// Bytes copied, or a negative errno.
    copied: AtomicI64,
    probe: OwnedFd,
    /// The probe's result (1 until the handler ran).
    registered: AtomicI64,
    /// The provided buffers' (see [`super::io_uring::provided_buffers`]).
    provided: AtomicI64,
    /// The personalities' probe (see [`super::io_uring::personality_probe`]; 1 until the
    /// handler ran).
    personalities: AtomicI64,
}

/// How long a timerfd that reads neither time left nor an expiration is read again for (see
/// [`ParkedInfo::read`]): past the timer callbacks' usual delay, at a cost only to
/// checkpoints of processes holding disarmed timerfds.
const TIMERFD_SETTLE_NS: u64 = 200_000;

/// Whether a timerfd's fdinfo `text` shows no time left and no expiration counted (disarmed, or
/// come due a moment ago). No allocation.
fn timerfd_unseen(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|text| {
        matches!(
            super::files::timerfd_state_at(text, 0),
            Ok(FdKind::TimerFd {
                value_ns: 0,
                ticks: 0,
                ..
            })
        )
    })
}

impl ParkedInfo {
    /// For every entry of `entries` whose state the other threads may change; `epoll_seen`:
    /// each epoll instance's registrations as the scan read them (see `FdScan::epoll_seen`): one
    /// added or removed since is found changed in the handler, however early it came.
    pub(crate) fn prepare(
        entries: &[FdEntry],
        epoll_seen: &[(i32, Vec<i32>)],
    ) -> std::io::Result<Vec<ParkedInfo>> {
        entries
            .iter()
            .filter(|e| e.dup_of.is_none() && !e.in_flight)
            .filter_map(|e| {
                let room = match &e.kind {
                    FdKind::EventFd { .. } | FdKind::SignalFd { .. } | FdKind::TimerFd { .. } => {
                        4096
                    }
                    // A tfd line is under 160 bytes; room for registrations added meanwhile.
                    FdKind::Epoll { watches } => 4096 + 160 * (watches.len() + 64),
                    // A watch's line is under 400 bytes (a file handle of up to 128 bytes, in
                    // hex).
                    FdKind::Inotify(i) => 4096 + 400 * (i.watches.len() + 64),
                    FdKind::IoUring(_) => 8192,
                    _ => return None,
                };
                Some((e, room))
            })
            .map(|(e, room)| {
                let path = format!("/proc/self/fdinfo/{}", e.fd);
                let before = match e.kind {
                    FdKind::Epoll { .. } => epoll_seen
                        .iter()
                        .find(|(fd, _)| *fd == e.fd)
                        .map(|(_, r)| r.clone())
                        .ok_or_else(|| {
                            std::io::Error::other(format!(
                                "epoll fd {} was not read by the scan",
                                e.fd
                            ))
                        })?,
                    _ => Vec::new(),
                };
                Ok(ParkedInfo {
                    fd: e.fd,
                    info: std::fs::File::open(&path)?.into(),
                    timerfd: match e.kind {
                        FdKind::TimerFd { clockid, .. } => Some(clockid),
                        _ => None,
                    },
                    clock_ns: Default::default(),
                    before,
                    buf: vec![0; room],
                    len: AtomicI64::new(0),
                    ring: match &e.kind {
                        FdKind::IoUring(r) => Some(RingCopy {
                            parts: r.seen,
                            buf: crate::sys::DontForkBuf::new(
                                (r.seen[0].1 + r.seen[1].1) as usize,
                            )?,
                            copied: AtomicI64::new(0),
                            probe: crate::sys::eventfd(0, 0)?,
                            registered: AtomicI64::new(1),
                            provided: AtomicI64::new(super::io_uring::PBUF_NOT_ASKED),
                            personalities: AtomicI64::new(super::io_uring::PERSONALITY_HELD),
                        }),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    /// In the handler, every other thread parked. No allocation.
    pub fn read(&self) {
        let mut n = self.read_info();
        // A timerfd reads no time left and no expiration both disarmed and, for a moment after
        // it came due, until the kernel's timer callback has counted the expiration (1-2 µs
        // here, longer on a busy machine; a probe read 1 expiry in 200 so): restored so, a
        // one-shot was disarmed, its reader waiting for good. Read again until it shows, a
        // while at most.
        if self.timerfd.is_some() && n > 0 && timerfd_unseen(&self.buf[..n as usize]) {
            let since = crate::sys::clock_ns(libc::CLOCK_MONOTONIC);
            while crate::sys::clock_ns(libc::CLOCK_MONOTONIC) < since + TIMERFD_SETTLE_NS {
                crate::sys::sched_yield();
                n = self.read_info();
                if n <= 0 || !timerfd_unseen(&self.buf[..n as usize]) {
                    break;
                }
            }
        }
        // A ring's fdinfo lacks its fields while its lock is held (an io-wq worker's): read
        // again, a while at most.
        for _ in 0..1000 {
            if self.ring.is_none() || n <= 0 || super::io_uring::is_whole(&self.buf[..n as usize]) {
                break;
            }
            crate::sys::sched_yield();
            n = crate::sys::read_whole(
                self.info.as_raw_fd(),
                self.buf.as_ptr() as u64,
                self.buf.len(),
            );
        }
        self.len
            .store(if n == 0 { -1 } else { n }, Ordering::Release);
        if let Some(r) = &self.ring {
            let mut at = 0;
            let mut copied = 0;
            for (addr, len) in r.parts {
                let n = crate::sys::read_own_memory(r.buf.addr() + at, addr, len as usize);
                if n < 0 {
                    copied = n;
                    break;
                }
                at += len;
                copied += n;
            }
            r.copied.store(copied, Ordering::Release);
            r.registered.store(
                super::io_uring::probe_eventfd(self.fd, r.probe.as_raw_fd()),
                Ordering::Release,
            );
            r.provided.store(
                super::io_uring::provided_buffers(self.fd),
                Ordering::Release,
            );
            r.personalities.store(
                super::io_uring::personality_probe(self.fd),
                Ordering::Release,
            );
        }
    }

    /// Reads the fdinfo into the buffer (a timerfd brought up to date first, its clock read).
    fn read_info(&self) -> i64 {
        if let Some(clock) = self.timerfd {
            // Brought up to date first, as the scan did (see sys::timerfd_catch_up).
            let _ = crate::sys::timerfd_catch_up(self.fd);
            self.clock_ns
                .store(crate::sys::clock_ns(clock), Ordering::Relaxed);
        }
        crate::sys::read_whole(
            self.info.as_raw_fd(),
            self.buf.as_ptr() as u64,
            self.buf.len(),
        )
    }

    /// An io_uring instance's rings and submission entries as the handler copied them.
    pub fn ring_copy(&self) -> Option<(&[u8], &[u8])> {
        let r = self.ring.as_ref()?;
        let rings = r.parts[0].1 as usize;
        let all = rings + r.parts[1].1 as usize;
        (r.copied.load(Ordering::Acquire) == all as i64).then(|| {
            let b = &r.buf.as_slice()[..all];
            (&b[..rings], &b[rings..])
        })
    }

    /// The copy's buffer (start, end), if any: the checkpoint's own, never in the snapshot.
    pub fn own_buffer(&self) -> Option<(u64, u64)> {
        let r = self.ring.as_ref()?;
        Some((r.buf.addr(), r.buf.addr() + r.buf.len() as u64))
    }

    /// What the handler found that is refused (an eventfd registered with an io_uring
    /// instance, provided buffers, credentials).
    pub fn refusal(&self) -> Option<String> {
        let r = self.ring.as_ref()?;
        let fd = self.fd;
        super::io_uring::eventfd_refusal(fd, r.registered.load(Ordering::Acquire))
            .or_else(|| {
                super::io_uring::provided_buffers_refusal(fd, r.provided.load(Ordering::Acquire))
            })
            .or_else(|| {
                super::io_uring::personality_refusal(fd, r.personalities.load(Ordering::Acquire))
            })
    }

    /// What the handler read, if it could.
    pub fn bytes(&self) -> Option<&[u8]> {
        let n = self.len.load(Ordering::Acquire);
        (n > 0).then(|| &self.buf[..n as usize])
    }

    /// The descriptors this checkpoint opened for it (see `Capture::own_fds`).
    pub fn own_fds(&self) -> impl Iterator<Item = i32> + '_ {
        std::iter::once(self.info.as_raw_fd())
            .chain(self.ring.as_ref().map(|r| r.probe.as_raw_fd()))
    }

    /// Leaves the descriptors open and the copy mapped: in a restored process their numbers and
    /// addresses are not ours to close.
    pub fn abandon(self) {
        std::mem::forget(self.info);
        std::mem::forget(self.ring);
    }

    /// Gives `entry` (this descriptor's) the state read while the threads were parked. `Err`:
    /// the process changed it in a way the image cannot follow (an epoll registration added or
    /// removed; a timerfd re-armed in a way that is refused), and the checkpoint starts again.
    pub fn update(&self, entry: &mut FdEntry) -> Result<(), String> {
        let text = self
            .bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| {
                format!(
                    "fd {}: its state could not be read while the threads were stopped",
                    self.fd
                )
            })?;
        let fd = self.fd;
        match &mut entry.kind {
            FdKind::EventFd { count, .. } => {
                *count = crate::procfs::field(text, "eventfd-count")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .ok_or_else(|| format!("fd {fd}: eventfd count unreadable"))?;
            }
            FdKind::SignalFd { mask } => *mask = crate::procfs::field_hex(text, "sigmask"),
            FdKind::IoUring(r) => r.settle(fd, text, self.ring_copy())?,
            kind @ FdKind::TimerFd { .. } => {
                *kind = super::files::timerfd_state_at(text, self.clock_ns.load(Ordering::Relaxed))
                    .map_err(|why| format!("fd {fd} (timerfd): {why}"))?;
            }
            FdKind::Inotify(i) if !super::inotify::same_watches(i, text) => {
                return Err(format!(
                    "fd {fd} (inotify): watches came, went or changed while the threads were being stopped"
                ));
            }
            FdKind::Epoll { watches } => {
                let now: Vec<(i32, u32, u64)> = Registrations::new(text.as_bytes()).collect();
                if now.iter().map(|r| r.0).ne(self.before.iter().copied()) {
                    return Err(format!(
                        "fd {fd} (epoll): registrations came or went while the threads were being stopped"
                    ));
                }
                // The scan's watches are the kernel's, in its order, less every registration of
                // a descriptor a policy left out: the k-th watch of a number is the k-th
                // registration of it.
                let mut seen: Vec<i32> = Vec::new();
                for w in watches.iter_mut() {
                    let k = seen.iter().filter(|&&n| n == w.fd).count();
                    seen.push(w.fd);
                    if let Some(r) = now.iter().filter(|r| r.0 == w.fd).nth(k) {
                        w.events = r.1;
                        w.data = r.2;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The registrations of an epoll instance's fdinfo text, in order: (watched number, events,
/// data). No allocation (the handler walks them).
#[derive(Debug)]
pub struct Registrations<'a> {
    text: &'a [u8],
}

impl<'a> Registrations<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Registrations { text }
    }
}

impl Iterator for Registrations<'_> {
    type Item = (i32, u32, u64);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.text.is_empty() {
                return None;
            }
            let end = self
                .text
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(self.text.len());
            let line = &self.text[..end];
            self.text = &self.text[(end + 1).min(self.text.len())..];
            if !line.starts_with(b"tfd:") {
                continue;
            }
            let tfd = value_after(line, b"tfd:", 10);
            let events = value_after(line, b"events:", 16);
            let data = value_after(line, b"data:", 16);
            if let (Some(t), Some(e), Some(d)) = (tfd, events, data) {
                return Some((t as i32, e as u32, d));
            }
        }
    }
}

/// The number after `key` (and spaces) in `line`, in `radix`.
fn value_after(line: &[u8], key: &[u8], radix: u32) -> Option<u64> {
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &line[at..];
    let start = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &rest[start..] {
        let Some(d) = (b as char).to_digit(radix) else {
            break;
        };
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timerfd_with_neither_time_left_nor_an_expiration_is_read_again() {
        let info = |ticks: u64, value: &str| {
            format!("pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\nclockid: 1\nticks: {ticks}\nsettime flags: 00\nit_value: {value}\nit_interval: (0, 20000000)\n")
        };
        assert!(timerfd_unseen(info(0, "(0, 0)").as_bytes()));
        assert!(!timerfd_unseen(info(1, "(0, 0)").as_bytes()), "fired");
        assert!(!timerfd_unseen(info(0, "(0, 5000)").as_bytes()), "armed");
        assert!(!timerfd_unseen(b"pos:\t0\n"), "not a timerfd's");
    }

    #[test]
    fn registrations_of_an_epoll_fdinfo() {
        let text = b"pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n\
tfd:        5 events:       19 data:       300000005  pos:0 ino:3f1 sdev:e\n\
tfd:       12 events: 40000018 data: 7f00000000ff  pos:0 ino:3f2 sdev:e\n";
        let r: Vec<_> = Registrations::new(text).collect();
        assert_eq!(
            r,
            vec![
                (5, 0x19, 0x3_0000_0005),
                (12, 0x4000_0018, 0x7f00_0000_00ff)
            ]
        );
        assert_eq!(Registrations::new(b"pos:\t0\n").count(), 0);
    }

    #[test]
    fn registrations_a_policy_left_out_do_not_start_the_checkpoint_again() {
        use super::super::files::EpollWatch;
        let ep = crate::sys::epoll_create().unwrap();
        let pipes: Vec<_> = (0..3)
            .map(|_| crate::sys::pipe_nonblock().unwrap())
            .collect();
        let add = |op: i32, fd: i32, events: u32, data: u64| {
            let mut ev = libc::epoll_event { events, u64: data };
            // SAFETY: a valid event for epoll_ctl.
            let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) };
            assert_eq!(r, 0);
        };
        for (i, (r, _)) in pipes.iter().enumerate() {
            add(
                libc::EPOLL_CTL_ADD,
                r.as_raw_fd(),
                libc::EPOLLIN as u32,
                i as u64,
            );
        }
        // The scan's watches, in the kernel's order, less the second pipe's (left out).
        let info = std::fs::read(format!("/proc/self/fdinfo/{}", ep.as_raw_fd())).unwrap();
        let seen = [(
            ep.as_raw_fd(),
            Registrations::new(&info).map(|r| r.0).collect::<Vec<_>>(),
        )];
        let left_out = pipes[1].0.as_raw_fd();
        let watches: Vec<EpollWatch> = Registrations::new(&info)
            .filter(|r| r.0 != left_out)
            .map(|(fd, events, data)| EpollWatch {
                fd,
                events,
                data,
                ready: false,
                at: None,
            })
            .collect();
        let mut entry = FdEntry {
            fd: ep.as_raw_fd(),
            kind: FdKind::Epoll { watches },
            ..Default::default()
        };
        let parked = ParkedInfo::prepare(std::slice::from_ref(&entry), &seen).unwrap();
        // Changed by another thread before the stop: the third pipe's registration.
        let third = pipes[2].0.as_raw_fd();
        add(
            libc::EPOLL_CTL_MOD,
            third,
            libc::EPOLLIN as u32 | libc::EPOLLONESHOT as u32,
            9,
        );
        parked[0].read();
        parked[0].update(&mut entry).unwrap();
        let FdKind::Epoll { watches } = &entry.kind else {
            unreachable!()
        };
        assert_eq!(watches.len(), 2);
        let w = watches.iter().find(|w| w.fd == third).unwrap();
        // (The kernel adds EPOLLERR and EPOLLHUP to every registration.)
        assert_eq!(w.data, 9);
        assert_ne!(w.events & libc::EPOLLONESHOT as u32, 0);
        // One added meanwhile starts it again.
        let (extra, _) = crate::sys::pipe_nonblock().unwrap();
        add(
            libc::EPOLL_CTL_ADD,
            extra.as_raw_fd(),
            libc::EPOLLIN as u32,
            5,
        );
        parked[0].read();
        assert!(parked[0].update(&mut entry).is_err());
    }

    #[test]
    fn an_eventfd_written_after_the_scan_is_read_again() {
        let fd = crate::sys::eventfd(1, 0).unwrap();
        let mut entry = FdEntry {
            fd: fd.as_raw_fd(),
            kind: FdKind::EventFd {
                count: 1,
                semaphore: false,
            },
            ..Default::default()
        };
        let parked = ParkedInfo::prepare(std::slice::from_ref(&entry), &[]).unwrap();
        let n = 41u64;
        // SAFETY: an 8-byte write to an eventfd of ours.
        unsafe { libc::write(fd.as_raw_fd(), &n as *const u64 as *const _, 8) };
        parked[0].read();
        parked[0].update(&mut entry).unwrap();
        assert!(matches!(entry.kind, FdKind::EventFd { count: 42, .. }));
    }
}
