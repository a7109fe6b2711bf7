//! Which edge-triggered epoll registrations have an event waiting (the kernel's ready list).
//!
//! Registering a descriptor again (`EPOLL_CTL_ADD`) reports it at once if it is readable. For a
//! level-triggered registration that is what the first life would see too; for an
//! edge-triggered one whose edge the program already took (it read part of the data, or none,
//! and waits for more) it is an event the first life never gets. An event loop that paused a
//! stream would see it wake early.
//!
//! So the checkpoint, while every other thread is parked, takes the instance's ready list with
//! `epoll_wait` (no wait) and puts it back at once with `EPOLL_CTL_MOD` of each registration it
//! reported (a level-triggered one stays on the list by itself). The restore registers the
//! edge-triggered registrations that had no event first, takes the events that registering them
//! queued, and then registers the others, and those whose file comes back hung up (its other
//! end gone with the first life: an edge the program must see).
//!
//! An instance with an `EPOLLEXCLUSIVE` registration is not probed (such a registration cannot be
//! modified, so its event could not be put back): its edge-triggered registrations come back as
//! ready, as before.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::files::EpollWatch;

const EPOLLET: u32 = 1 << 31;
const EPOLLONESHOT: u32 = 1 << 30;
const EPOLLEXCLUSIVE: u32 = 1 << 28;
/// `struct epoll_event` is packed on x86_64: u32 events, u64 data.
const EVENT: usize = 12;

/// One epoll instance to probe in the checkpoint signal's handler.
#[derive(Debug)]
pub struct Probe {
    pub fd: i32,
    watches: Vec<EpollWatch>,
    /// Per watch: reported by the probe.
    ready: Vec<AtomicBool>,
    /// Room for one event per watch (allocated before the handler runs).
    buf: Vec<u8>,
    /// Events taken, or a negative errno (0 until the handler ran).
    taken: AtomicI64,
}

/// An instance given busy-poll parameters (`EPIOCSPARAMS`: a latency-tuned server's) is
/// refused: a restored instance would have none and poll no device queue.
pub fn busy_poll(fd: i32) -> Result<(), String> {
    match crate::sys::epoll_params(fd) {
        Some((usecs, budget, prefer)) if usecs != 0 || budget != 0 || prefer != 0 => Err(format!(
            "epoll fd {fd} has busy-poll parameters (EPIOCSPARAMS: {usecs} us, budget {budget}, \
             prefer {prefer}), which a restored instance would not have: set them again after \
             restore instead"
        )),
        _ => Ok(()),
    }
}

fn edge(w: &EpollWatch) -> bool {
    w.events & EPOLLET != 0 && w.events & EPOLLONESHOT == 0
}

/// The probes for the epoll instances whose readiness matters: those with an edge-triggered
/// registration, and none that is exclusive.
pub fn probes(epolls: Vec<(i32, Vec<EpollWatch>)>) -> Vec<Probe> {
    epolls
        .into_iter()
        .filter(|(_, w)| w.iter().any(edge) && w.iter().all(|w| w.events & EPOLLEXCLUSIVE == 0))
        .map(|(fd, watches)| Probe {
            fd,
            // (Room for the registrations added before the threads stop: the checkpoint starts
            // again then, but the probe puts back all it takes.)
            ready: (0..watches.len() + 64)
                .map(|_| AtomicBool::new(false))
                .collect(),
            buf: vec![0; EVENT * watches.len().max(1)],
            watches,
            taken: AtomicI64::new(0),
        })
        .collect()
}

impl Probe {
    /// In the handler, every other thread parked: takes the ready list and puts it back. No
    /// allocation. `parked`: the instance's fdinfo read just before (see super::parked), whose
    /// registrations, as they are now, are the ones put back; `ready` follows their order.
    pub fn run(&self, parked: Option<&[u8]>) {
        let Some(parked) = parked else {
            self.taken.store(-(libc::EIO as i64), Ordering::Relaxed);
            return;
        };
        // More registrations than marks: what it took could not all be put back. Not probed
        // (the registrations came since the scan: the checkpoint starts again).
        if super::parked::Registrations::new(parked).count() > self.ready.len() {
            self.taken.store(-(libc::E2BIG as i64), Ordering::Relaxed);
            return;
        }
        let max = self.watches.len().max(1);
        let n = crate::sys::syscall6(
            libc::SYS_epoll_wait,
            [
                self.fd as u64,
                self.buf.as_ptr() as u64,
                max as u64,
                0,
                0,
                0,
            ],
        );
        self.taken.store(n, Ordering::Relaxed);
        for i in 0..n.max(0) as usize {
            let at = i * EVENT + 4;
            let data = u64::from_ne_bytes(self.buf[at..at + 8].try_into().unwrap_or([0; 8]));
            for ((fd, events, d), r) in super::parked::Registrations::new(parked).zip(&self.ready) {
                if d != data || r.swap(true, Ordering::Relaxed) {
                    continue;
                }
                if events & (EPOLLET | EPOLLONESHOT) != 0 {
                    // Back on the ready list (and a one-shot armed again), as before the probe.
                    let mut ev = [0u8; EVENT];
                    ev[..4].copy_from_slice(&events.to_ne_bytes());
                    ev[4..].copy_from_slice(&d.to_ne_bytes());
                    crate::sys::syscall6(
                        libc::SYS_epoll_ctl,
                        [
                            self.fd as u64,
                            libc::EPOLL_CTL_MOD as u64,
                            fd as u64,
                            ev.as_ptr() as u64,
                            0,
                            0,
                        ],
                    );
                }
            }
        }
    }

    /// After the snapshot: marks each watch of `watches` (this instance's, as they were while
    /// the threads were parked: the same registrations in the same order) ready or not.
    /// Watches sharing their data with a reported one count as reported.
    pub fn apply(&self, watches: &mut [EpollWatch], parked: Option<&[u8]>) -> Result<(), String> {
        let n = self.taken.load(Ordering::Relaxed);
        if n < 0 {
            return Err(format!(
                "fd {} (epoll): cannot read its pending events: {}",
                self.fd,
                std::io::Error::from_raw_os_error(-n as i32)
            ));
        }
        // (The probe marked the registrations in the kernel's order, the policy's removals
        // included.)
        let reported: Vec<(i32, u64)> =
            super::parked::Registrations::new(parked.unwrap_or_default())
                .zip(&self.ready)
                .filter(|(_, r)| r.load(Ordering::Relaxed))
                .map(|((fd, _, data), _)| (fd, data))
                .collect();
        for w in watches.iter_mut() {
            w.ready = reported.contains(&(w.fd, w.data));
        }
        Ok(())
    }
}

/// Whether the file `w` watches is not at restore as it was at the checkpoint: hung up (a dead
/// end the descriptor policy left, see `files::dead_end`; a pair end or pipe end whose other
/// end went with children left out, or was closed before: an edge the program had then, seen
/// again, where a reader finds end of file again, while one lost would wait for ever),
/// `/dev/null` in its place, or the caller's standard descriptor (input may be waiting there
/// already). What its registration reports is an edge of the file as the process finds it: it
/// is not taken with the events registering quiet watches queues.
fn otherwise_at_restore(w: &EpollWatch, table: &[super::files::FdEntry]) -> bool {
    use super::files::FdKind;
    let n = w.at.unwrap_or(w.fd);
    let Some(e) = table.iter().find(|e| e.fd == n && !e.in_flight) else {
        return false;
    };
    match &e.kind {
        FdKind::DevNull | FdKind::Stdio => true,
        FdKind::Socket(super::sockets::Socket::Pair(p)) => !p.peer_open,
        FdKind::Pipe { id, write_end, .. } => !table.iter().any(|o| {
            matches!(&o.kind, FdKind::Pipe { id: i, write_end: we, .. } if i == id && we != write_end)
        }),
        _ => false,
    }
}

/// Steps that register `watches` on epoll descriptor `fd` in the new process: edge-triggered
/// registrations without an event first, then the events their registration queued are taken,
/// then the others. `table` is the process's descriptors (all at their numbers by then);
/// `scratch` a number free for a moment (see [`EpollWatch::at`]).
pub fn plan(
    fd: i32,
    watches: &[EpollWatch],
    table: &[super::files::FdEntry],
    scratch: i32,
    plan: &mut crate::restore::Plan,
) {
    let (quiet, others): (Vec<&EpollWatch>, Vec<&EpollWatch>) = watches
        .iter()
        .partition(|w| edge(w) && !w.ready && !otherwise_at_restore(w, table));
    let dup3 = |plan: &mut crate::restore::Plan, what: String, from: i32, to: i32, flags: i32| {
        plan.syscall(
            what,
            libc::SYS_dup3,
            [from as u64, to as u64, flags as u64, 0, 0, 0],
        );
    };
    let add = |w: &EpollWatch, plan: &mut crate::restore::Plan| {
        let mut ev = w.events.to_ne_bytes().to_vec();
        ev.extend_from_slice(&w.data.to_ne_bytes());
        let ev = plan.data(&ev);
        let n = w.fd;
        // A registration by a number that holds another file now (or none): the file is put
        // there for the registration, and what the number holds is put back.
        let there = w.at.map(|at| (at, table.iter().find(|e| e.fd == n)));
        if let Some((at, occupant)) = there {
            if occupant.is_some() {
                dup3(
                    plan,
                    format!("epoll fd {fd}: set fd {n} aside"),
                    n,
                    scratch,
                    libc::O_CLOEXEC,
                );
            }
            dup3(
                plan,
                format!("epoll fd {fd}: fd {at} as fd {n}, to watch it"),
                at,
                n,
                0,
            );
        }
        plan.syscall(
            format!("epoll fd {fd} watches fd {n} (events {:#x})", w.events),
            libc::SYS_epoll_ctl,
            [fd as u64, libc::EPOLL_CTL_ADD as u64, n as u64, ev, 0, 0],
        );
        match there {
            Some((_, Some(e))) => {
                let flags = if e.cloexec { libc::O_CLOEXEC } else { 0 };
                dup3(
                    plan,
                    format!("epoll fd {fd}: fd {n} back"),
                    scratch,
                    n,
                    flags,
                );
            }
            Some((_, None)) => plan.syscall(
                format!("epoll fd {fd}: close fd {n} again"),
                libc::SYS_close,
                [n as u64, 0, 0, 0, 0, 0],
            ),
            None => {}
        }
    };
    for w in &quiet {
        add(w, plan);
    }
    if !quiet.is_empty() {
        let buf = plan.data(&vec![0u8; EVENT * quiet.len()]);
        plan.syscall(
            format!(
                "epoll fd {fd}: take the events registering its idle edge-triggered watches queued"
            ),
            libc::SYS_epoll_wait,
            [fd as u64, buf, quiet.len() as u64, 0, 0, 0],
        );
    }
    for w in others {
        add(w, plan);
    }
}

/// The registrations of standard descriptors (0–2, and descriptors that shared their open file
/// descriptions) by their numbers: those are the restoring caller's, not the image's. As
/// `(epoll fd, watch, the standard descriptor it is at restore)`.
pub fn standard_watches(entries: &[super::files::FdEntry]) -> Vec<(i32, EpollWatch, i32)> {
    // The standard descriptor each watched one is at restore (itself, or the one whose open
    // file description it shared).
    let standard = |fd: i32| {
        entries
            .iter()
            .find(|e| e.fd == fd)
            .and_then(super::files::FdEntry::standard)
            .or((0..=2).contains(&fd).then_some(fd))
    };
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            super::files::FdKind::Epoll { watches } => Some((e.fd, watches)),
            _ => None,
        })
        .flat_map(|(fd, w)| w.iter().map(move |w| (fd, *w)))
        .filter(|(_, w)| w.at.is_none())
        .filter_map(|(fd, w)| Some((fd, w, standard(w.fd)?)))
        .fold(
            Vec::new(),
            |mut v: Vec<(i32, EpollWatch, i32)>, (fd, w, s)| {
                // Each descriptor once (dup'd instances list theirs again).
                if !v.iter().any(|(_, x, _)| x.fd == w.fd) {
                    v.push((fd, w, s));
                }
                v
            },
        )
}

fn standard_name(fd: i32) -> &'static str {
    ["standard input", "standard output", "standard error"][fd.clamp(0, 2) as usize]
}

/// Checks, before anything is created, that epoll can watch the caller's standard descriptors
/// that the process's epoll instances registered (an event loop reading its stdin): a regular
/// file or /dev/null there cannot be watched, and a closed one is not there to watch. Refused,
/// named, instead of failing half-way through the restore.
pub fn check_standard(entries: &[super::files::FdEntry]) -> Result<(), String> {
    let watched = standard_watches(entries);
    if watched.is_empty() {
        return Ok(());
    }
    let scratch =
        crate::sys::epoll_create().map_err(|e| format!("cannot create an epoll instance: {e}"))?;
    // Each of the caller's once: several registrations may stand for one (two duplicates of
    // one standard descriptor, as Bun registers its standard output's and error's), and a
    // second registration of one descriptor is refused (EEXIST) where the first said enough.
    let mut tried: Vec<i32> = Vec::new();
    for (epfd, w, s) in watched {
        if tried.contains(&s) {
            continue;
        }
        tried.push(s);
        let mut ev = [0u8; EVENT];
        ev[..4].copy_from_slice(&(libc::EPOLLIN as u32).to_ne_bytes());
        let r = crate::sys::epoll_ctl_raw(
            std::os::fd::AsRawFd::as_raw_fd(&scratch),
            libc::EPOLL_CTL_ADD,
            s,
            &ev,
        );
        if let Err(e) = r {
            let yours = std::fs::read_link(format!("/proc/self/fd/{s}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "closed".into());
            let which = if w.fd == s {
                format!("fd {s} ({})", standard_name(s))
            } else {
                format!("fd {} (the process's {} as it was)", w.fd, standard_name(s))
            };
            return Err(format!(
                "fd {epfd} (epoll) watches {which}, which is yours at restore: yours ({yours}) cannot be watched by epoll ({e}); restore with a pipe, a socket or a terminal as {}",
                standard_name(s)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn ctl(ep: i32, op: i32, fd: i32, events: u32, data: u64) {
        let mut ev = [0u8; EVENT];
        ev[..4].copy_from_slice(&events.to_ne_bytes());
        ev[4..].copy_from_slice(&data.to_ne_bytes());
        let r = crate::sys::syscall6(
            libc::SYS_epoll_ctl,
            [ep as u64, op as u64, fd as u64, ev.as_ptr() as u64, 0, 0],
        );
        assert_eq!(r, 0);
    }

    fn wait(ep: i32) -> Vec<u64> {
        let buf = [0u8; EVENT * 8];
        let n = crate::sys::syscall6(
            libc::SYS_epoll_wait,
            [ep as u64, buf.as_ptr() as u64, 8, 0, 0, 0],
        );
        (0..n.max(0) as usize)
            .map(|i| u64::from_ne_bytes(buf[i * EVENT + 4..i * EVENT + 12].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn the_probe_finds_pending_edges_and_leaves_them_pending() {
        let ep = crate::sys::epoll_create().unwrap();
        let (r1, w1) = crate::sys::pipe_nonblock().unwrap();
        let (r2, w2) = crate::sys::pipe_nonblock().unwrap();
        let e = libc::EPOLLIN as u32 | EPOLLET;
        ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, r1.as_raw_fd(), e, 1);
        ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, r2.as_raw_fd(), e, 2);
        assert_eq!(crate::sys::write_raw(w1.as_raw_fd(), b"a"), 1);
        assert_eq!(wait(ep.as_raw_fd()), [1]); // the edge of pipe 1 is taken
        assert_eq!(crate::sys::write_raw(w2.as_raw_fd(), b"b"), 1); // pipe 2's is pending
        let watches = vec![
            EpollWatch {
                fd: r1.as_raw_fd(),
                events: e,
                data: 1,
                ready: true,
                at: None,
            },
            EpollWatch {
                fd: r2.as_raw_fd(),
                events: e,
                data: 2,
                ready: true,
                at: None,
            },
        ];
        let p = probes(vec![(ep.as_raw_fd(), watches.clone())]);
        assert_eq!(p.len(), 1);
        let info = std::fs::read(format!("/proc/self/fdinfo/{}", ep.as_raw_fd())).unwrap();
        p[0].run(Some(&info));
        // In the kernel's order, as a checkpoint has them.
        let mut got: Vec<EpollWatch> = super::super::parked::Registrations::new(&info)
            .map(|(fd, _, _)| *watches.iter().find(|w| w.fd == fd).unwrap())
            .collect();
        p[0].apply(&mut got, Some(&info)).unwrap();
        let ready = |data| got.iter().find(|w| w.data == data).unwrap().ready;
        assert_eq!((ready(1), ready(2)), (false, true));
        // The first life still has pipe 2's event, and not pipe 1's.
        assert_eq!(wait(ep.as_raw_fd()), [2]);
    }
}
