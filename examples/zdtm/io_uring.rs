//! io_uring instances at rest, as libuv keeps one per event loop (Node.js 22+, uvloop): ring A
//! (256 entries, an index array filled once, as libuv did before 6.6) has added a pipe to an
//! epoll instance with IORING_OP_EPOLL_CTL, as libuv batches its epoll changes (with `dropped`,
//! it has dropped two entries too: indexes naming none); ring B (64
//! entries, 256 completions, no index array, as libuv makes them on 6.6+) has run 300 no-ops, so
//! its counters wrapped its queues several times; ring A has a duplicate descriptor. After
//! restore: the kernel's counters are as they were, ring A adds another registration and still
//! drains (IOSQE_IO_DRAIN), ring B completes a request, both go on through many more, and the
//! duplicate is the same ring.
//!
//! `PROG IMAGE KEY MODE` with MODE one of `pending` (a timeout in flight), `sqpoll`, `eventfd`
//! (an eventfd registered), `buffers` (provided buffers), `buffers-late` (a buffer ring
//! registered between the checkpoint's scan and its stop), `unreaped` (a completion not
//! consumed), `single-issuer` (a ring bound to another thread, which alone may probe it),
//! `registered` (a ring registered in a thread's own slots, IORING_REGISTER_RING_FDS),
//! `restricted` (IORING_REGISTER_RESTRICTIONS), `restricted-loosely` (restrictions that allow
//! every registration a checkpoint asks with), `deferred` (IORING_SETUP_DEFER_TASKRUN),
//! `personality` (credentials registered), `wait-region` (IORING_REGISTER_MEM_REGION): each
//! refused, naming it (exit 3).
//!
//! `PROG IMAGE KEY worker`: ring A's first request is run by one of the kernel's io-wq workers
//! (IOSQE_ASYNC), a thread of the process the kernel keeps a while: not one of the program's.
//!
//! `PROG IMAGE KEY busy`: ring B has run 5,300 no-ops, more than an instance of `thaw serve`
//! brings back (it refuses the image by name).
//!
//! Where the kernel has no io_uring, prints `skipped: no io_uring` and checkpoints all the same.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};

const SETUP_IOPOLL: u32 = 1 << 0;
const SETUP_SQPOLL: u32 = 1 << 1;
const SETUP_CQSIZE: u32 = 1 << 3;
const SETUP_SINGLE_ISSUER: u32 = 1 << 12;
const SETUP_DEFER_TASKRUN: u32 = 1 << 13;
const SETUP_NO_SQARRAY: u32 = 1 << 16;
const ENTER_GETEVENTS: u64 = 1;
const OP_NOP: u8 = 0;
const SQE_IO_DRAIN: u8 = 1 << 1;
const OP_TIMEOUT: u8 = 11;
const OP_EPOLL_CTL: u8 = 29;
const OP_PROVIDE_BUFFERS: u8 = 31;
const REGISTER_EVENTFD: u64 = 4;
const REGISTER_RING_FDS: u64 = 20;
const REGISTER_PBUF_RING: u64 = 22;
const REGISTER_PERSONALITY: u64 = 9;
const REGISTER_MEM_REGION: u64 = 34;
const MEM_REGION_TYPE_USER: u64 = 1;
const MEM_REGION_REG_WAIT_ARG: u64 = 1;
const RESTRICTION_REGISTER_OP: u16 = 0;
const REGISTER_RESTRICTIONS: u64 = 11;
const REGISTER_ENABLE_RINGS: u64 = 12;
const RESTRICTION_SQE_OP: u16 = 1;
const SETUP_R_DISABLED: u32 = 1 << 6;

/// A ring set up and mapped by hand, as libuv does (no liburing).
struct Ring {
    fd: i32,
    rings: *mut u8,
    sqes: *mut u8,
    /// io_uring_params as the kernel filled it (30 words).
    p: [u32; 30],
    array: bool,
}

impl Ring {
    fn new(entries: u32, flags: u32, cq: u32) -> Result<Ring, i32> {
        let mut p = [0u32; 30];
        p[1] = cq;
        p[2] = flags;
        // SAFETY: io_uring_setup fills the params struct we pass.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, p.as_mut_ptr()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let fd = fd as i32;
        let array = flags & SETUP_NO_SQARRAY == 0;
        let sq_len = if array { p[16] + 4 * p[0] } else { 0 };
        let cq_len = p[25] + 16 * p[1];
        let map = |len: u32, off: i64| {
            // SAFETY: maps the ring's own memory where the kernel chooses.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd,
                    off,
                )
            };
            assert_ne!(m, libc::MAP_FAILED);
            m.cast::<u8>()
        };
        let rings = map(sq_len.max(cq_len), 0);
        let sqes = map(64 * p[0], 0x1000_0000);
        let r = Ring {
            fd,
            rings,
            sqes,
            p,
            array,
        };
        if array {
            for i in 0..p[0] {
                r.word(p[16] + 4 * i).store(i, Ordering::Relaxed);
            }
        }
        Ok(r)
    }

    fn word(&self, off: u32) -> &AtomicU32 {
        // SAFETY: an aligned word of the rings region, which stays mapped for the program's life.
        unsafe { &*self.rings.add(off as usize).cast::<AtomicU32>() }
    }

    /// Queues one entry (not submitted).
    fn push(&self, sqe: [u8; 64]) {
        let mask = self.word(self.p[12]).load(Ordering::Relaxed);
        let tail = self.word(self.p[11]).load(Ordering::Relaxed);
        let slot = tail & mask;
        // SAFETY: slot is inside the entries' mapping; the kernel reads it only once submitted.
        unsafe {
            std::ptr::copy_nonoverlapping(sqe.as_ptr(), self.sqes.add(64 * slot as usize), 64)
        };
        if self.array {
            self.word(self.p[16] + 4 * slot)
                .store(slot, Ordering::Relaxed);
        }
        self.word(self.p[11])
            .store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Queues an entry whose index names none and submits it: the kernel drops it (counts it in
    /// the rings' dropped word, makes no request).
    fn drop_one(&self) {
        let mask = self.word(self.p[12]).load(Ordering::Relaxed);
        let tail = self.word(self.p[11]).load(Ordering::Relaxed);
        self.word(self.p[16] + 4 * (tail & mask))
            .store(self.p[0], Ordering::Relaxed);
        self.word(self.p[11])
            .store(tail.wrapping_add(1), Ordering::Release);
        assert_eq!(self.enter(1, 0), 0);
    }

    fn dropped(&self) -> u32 {
        self.word(self.p[15]).load(Ordering::Relaxed)
    }

    fn enter(&self, submit: u32, wait: u32) -> i64 {
        let flags = if wait > 0 { ENTER_GETEVENTS } else { 0 };
        // SAFETY: io_uring_enter on our ring, no signal mask.
        unsafe { libc::syscall(libc::SYS_io_uring_enter, self.fd, submit, wait, flags, 0, 0) }
    }

    /// Submits one entry, waits for its completion and reaps it: (user_data, res).
    fn run(&self, sqe: [u8; 64]) -> (u64, i32) {
        self.push(sqe);
        assert_eq!(self.enter(1, 1), 1, "{}", std::io::Error::last_os_error());
        let head = self.word(self.p[20]).load(Ordering::Relaxed);
        let mask = self.word(self.p[22]).load(Ordering::Relaxed);
        let at = self.p[25] as usize + 16 * (head & mask) as usize;
        // SAFETY: a completion entry inside the rings region, posted before the tail we waited for.
        let cqe = unsafe { std::slice::from_raw_parts(self.rings.add(at), 16) };
        let data = u64::from_ne_bytes(cqe[..8].try_into().unwrap());
        let res = i32::from_ne_bytes(cqe[8..12].try_into().unwrap());
        self.word(self.p[20])
            .store(head.wrapping_add(1), Ordering::Release);
        (data, res)
    }
}

fn sqe(op: u8, fd: i32, off: u64, addr: u64, len: u32, data: u64) -> [u8; 64] {
    let mut s = [0u8; 64];
    s[0] = op;
    s[4..8].copy_from_slice(&fd.to_ne_bytes());
    s[8..16].copy_from_slice(&off.to_ne_bytes());
    s[16..24].copy_from_slice(&addr.to_ne_bytes());
    s[24..28].copy_from_slice(&len.to_ne_bytes());
    s[32..40].copy_from_slice(&data.to_ne_bytes());
    s
}

/// The kernel's (SqHead, CachedSqHead, CqTail, CachedCqTail) of ring `fd`.
fn counters(fd: i32) -> Vec<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    ["SqHead", "CachedSqHead", "CqTail", "CachedCqTail"]
        .iter()
        .map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .unwrap_or("?")
                .trim()
                .to_owned()
        })
        .collect()
}

fn pipe() -> [i32; 2] {
    let mut p = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
    p
}

fn ino(fd: i32) -> u64 {
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::fstat(fd, &mut st) };
    st.st_ino
}

/// A page-aligned page (a buffer ring).
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn main() {
    let (_, _, extra) = common::argv();
    let Ok(a) = Ring::new(256, 0, 0) else {
        println!("skipped: no io_uring");
        common::checkpoint();
        common::Checks::default().finish();
    };
    match extra.first().map(String::as_str) {
        Some("pending") => common::refusal(|| {
            let ts = Box::leak(Box::new([3600i64, 0]));
            a.push(sqe(OP_TIMEOUT, -1, 0, ts.as_ptr() as u64, 1, 7));
            assert_eq!(a.enter(1, 0), 1);
        }),
        Some("sqpoll") => common::refusal(|| {
            let polled = Ring::new(64, SETUP_SQPOLL, 0).unwrap();
            assert!(polled.fd > 0);
        }),
        Some("eventfd") => common::refusal(|| {
            // SAFETY: a new eventfd, registered with ring A.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            // SAFETY: registers that eventfd with ring A (a pointer to one descriptor).
            let r = unsafe {
                libc::syscall(libc::SYS_io_uring_register, a.fd, REGISTER_EVENTFD, &efd, 1)
            };
            assert_eq!(r, 0);
        }),
        Some("buffers") => common::refusal(|| {
            let buf = Box::leak(vec![0u8; 4096].into_boxed_slice());
            let mut s = sqe(OP_PROVIDE_BUFFERS, 1, 0, buf.as_ptr() as u64, 4096, 9);
            s[40..42].copy_from_slice(&7u16.to_ne_bytes());
            assert_eq!(a.run(s).1, 0);
        }),
        Some("buffers-late") => common::refusal(|| {
            // A buffer ring registered once the checkpoint has scanned the descriptors, before
            // it stops the threads: no counter of the ring's changes.
            let fd = a.fd;
            common::after_first_scan(move || {
                let ring = Box::leak(Box::new(Page([0; 4096])));
                // struct io_uring_buf_reg { ring_addr, ring_entries, bgid, flags, resv[3] }
                let mut reg = [0u64; 5];
                reg[0] = ring.0.as_ptr() as u64;
                reg[1] = 8 | (11 << 32);
                // SAFETY: registers a page of ours as buffer group 11's ring on ring A.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_io_uring_register,
                        fd,
                        REGISTER_PBUF_RING,
                        reg.as_mut_ptr(),
                        1,
                    )
                };
                assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            });
        }),
        Some("deferred") => common::refusal(|| {
            // Its completion work waits for this (the checkpointing) thread to ask.
            let r = Ring::new(64, SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN, 0).unwrap();
            assert_eq!(r.run(sqe(OP_NOP, -1, 0, 0, 0, 4)), (4, 0));
        }),
        Some("personality") => common::refusal(|| {
            // SAFETY: registers this thread's credentials with ring A (no argument).
            let id = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    a.fd,
                    REGISTER_PERSONALITY,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            assert!(id > 0, "{}", std::io::Error::last_os_error());
        }),
        Some("wait-region") => common::refusal(|| {
            // A region of the process's memory holding wait arguments, registered before the
            // ring is enabled (the only time the kernel takes one).
            let r = Ring::new(64, SETUP_R_DISABLED, 0).unwrap();
            let page = Box::leak(Box::new(Page([0; 4096])));
            // struct io_uring_region_desc { user_addr, size, flags (u32), id, mmap_offset, resv[4] }
            let mut desc = [0u64; 8];
            desc[0] = page.0.as_ptr() as u64;
            desc[1] = 4096;
            desc[2] = MEM_REGION_TYPE_USER;
            // struct io_uring_mem_region_reg { region_uptr, flags, resv[2] }
            let mut reg = [desc.as_ptr() as u64, MEM_REGION_REG_WAIT_ARG, 0, 0];
            for (op, arg, n) in [
                (REGISTER_MEM_REGION, reg.as_mut_ptr().cast::<u8>(), 1),
                (REGISTER_ENABLE_RINGS, std::ptr::null_mut(), 0),
            ] {
                // SAFETY: registers on our ring with the structures above (or nothing).
                let got = unsafe { libc::syscall(libc::SYS_io_uring_register, r.fd, op, arg, n) };
                assert_eq!(got, 0, "{op}: {}", std::io::Error::last_os_error());
            }
        }),
        Some("restricted-loosely") => common::refusal(|| {
            // Restricted to no-op requests, with every registration a checkpoint asks with
            // allowed but restricting and enabling again.
            let r = Ring::new(64, SETUP_R_DISABLED, 0).unwrap();
            let mut rules = vec![0u8; 16];
            rules[..2].copy_from_slice(&RESTRICTION_SQE_OP.to_ne_bytes());
            rules[2] = OP_NOP;
            for op in [4u8, 5, 8, 9, 10, 26, 33] {
                let mut rule = [0u8; 16];
                rule[..2].copy_from_slice(&RESTRICTION_REGISTER_OP.to_ne_bytes());
                rule[2] = op;
                rules.extend_from_slice(&rule);
            }
            let n = (rules.len() / 16) as u64;
            for (op, arg, n) in [
                (REGISTER_RESTRICTIONS, rules.as_mut_ptr(), n),
                (REGISTER_ENABLE_RINGS, std::ptr::null_mut(), 0),
            ] {
                // SAFETY: registers on our ring with the rules above (or nothing).
                let got = unsafe { libc::syscall(libc::SYS_io_uring_register, r.fd, op, arg, n) };
                assert_eq!(got, 0, "{}", std::io::Error::last_os_error());
            }
            assert_eq!(r.run(sqe(OP_NOP, -1, 0, 0, 0, 2)), (2, 0));
        }),
        Some("single-issuer") => common::refusal(|| {
            // Bound to a thread of its own, which submits to it and goes on.
            let ring = std::thread::spawn(|| {
                let r = Ring::new(64, SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN, 0).unwrap();
                assert_eq!(r.run(sqe(OP_NOP, -1, 0, 0, 0, 1)), (1, 0));
                r.fd
            });
            assert!(ring.join().unwrap() > 0);
        }),
        Some("registered") => common::refusal(|| {
            // struct io_uring_rsrc_update { offset (-1: any slot), resv, data (the fd) }
            let mut up = [u32::MAX, 0, a.fd as u32, 0];
            // SAFETY: registers ring A's descriptor in a slot of this thread's (one update).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    a.fd,
                    REGISTER_RING_FDS,
                    up.as_mut_ptr(),
                    1,
                )
            };
            assert_eq!(r, 1, "{}", std::io::Error::last_os_error());
        }),
        Some("restricted") => common::refusal(|| {
            // Made disabled, restricted to no-op requests, then enabled.
            let r = Ring::new(64, SETUP_R_DISABLED, 0).unwrap();
            // struct io_uring_restriction { opcode u16, sqe_op u8, resv u8, resv2[3] u32 }
            let mut only_nop = [0u8; 16];
            only_nop[..2].copy_from_slice(&RESTRICTION_SQE_OP.to_ne_bytes());
            only_nop[2] = OP_NOP;
            for (op, arg, n) in [
                (REGISTER_RESTRICTIONS, only_nop.as_mut_ptr(), 1),
                (REGISTER_ENABLE_RINGS, std::ptr::null_mut(), 0),
            ] {
                // SAFETY: registers on our ring with a buffer of `n` restrictions (or none).
                let got = unsafe { libc::syscall(libc::SYS_io_uring_register, r.fd, op, arg, n) };
                assert_eq!(got, 0, "{}", std::io::Error::last_os_error());
            }
            assert_eq!(r.run(sqe(OP_NOP, -1, 0, 0, 0, 2)), (2, 0));
        }),
        Some("unreaped") => common::refusal(|| {
            a.push(sqe(OP_NOP, -1, 0, 0, 0, 5));
            assert_eq!(a.enter(1, 1), 1);
        }),
        _ => {}
    }
    if extra.first().map(String::as_str) == Some("worker") {
        // Run by one of the kernel's io-wq workers (IOSQE_ASYNC), which stays a while as a
        // thread of the process (iou-wrk-PID).
        let mut s = sqe(OP_NOP, -1, 0, 0, 0, 3);
        s[1] = 1 << 4;
        assert_eq!(a.run(s), (3, 0));
    }
    let b = Ring::new(64, SETUP_NO_SQARRAY | SETUP_CQSIZE, 256)
        .or_else(|_| Ring::new(64, SETUP_CQSIZE, 256))
        .unwrap();
    // SAFETY: a new epoll instance.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let (p1, p2) = (pipe(), pipe());
    let add = |ring: &Ring, fd: i32, data: u64| {
        let ev = Box::leak(Box::new(libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        }));
        ring.run(sqe(
            OP_EPOLL_CTL,
            ep,
            fd as u64,
            ev as *mut _ as u64,
            libc::EPOLL_CTL_ADD as u32,
            data,
        ))
    };
    assert_eq!(add(&a, p1[0], 1).1, 0);
    // `dropped`: two entries ring A drops (an index naming no entry): counted, no request.
    let dropped = extra.first().map(String::as_str) == Some("dropped");
    if dropped {
        a.drop_one();
        a.drop_one();
        assert_eq!(a.dropped(), 2);
    }
    // And a ring set up for polled I/O (restored without the flag), which a probe of the
    // checkpoint's once took for one with a wait region.
    let polled = dropped.then(|| {
        let r = Ring::new(64, SETUP_IOPOLL, 0).unwrap();
        assert_eq!(r.run(sqe(OP_NOP, -1, 0, 0, 0, 5)), (5, 0));
        r
    });
    // (`busy`: 5,000 more, more than an instance of `thaw serve` brings back.)
    let busy = extra.first().map(String::as_str) == Some("busy");
    for i in 0..if busy { 5300 } else { 300 } {
        assert_eq!(b.run(sqe(OP_NOP, -1, 0, 0, 0, i)), (i, 0));
    }
    // SAFETY: a duplicate of ring A's descriptor.
    let dup = unsafe { libc::dup(a.fd) };
    let before = (counters(a.fd), counters(b.fd));

    let again = common::checkpoint();
    let mut c = common::Checks::default();
    let now = (counters(a.fd), counters(b.fd));
    c.check(
        "the kernel's counters are as they were",
        now == before && (before.1[0] == "300" || before.1[0] == "5300"),
        format!("{now:?} vs {before:?}"),
    );
    let added = add(&a, p2[0], 2);
    for p in [p1, p2] {
        // SAFETY: one byte into each pipe.
        unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) };
    }
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
    // SAFETY: epoll_wait into our array.
    let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 0) };
    let mut got: Vec<u64> = evs[..n.max(0) as usize].iter().map(|e| e.u64).collect();
    got.sort_unstable();
    c.check(
        "a ring adds an epoll registration after restore, beside the one it added before",
        added.1 == 0 && got == [1, 2],
        format!("{added:?}, events {got:?}"),
    );
    c.check(
        "the other ring completes a request",
        b.run(sqe(OP_NOP, -1, 0, 0, 0, 0xfeed)) == (0xfeed, 0),
        "",
    );
    let mut drained = sqe(OP_NOP, -1, 0, 0, 0, 0xd1);
    drained[1] = SQE_IO_DRAIN;
    let drained = a.run(drained);
    let want = if dropped { 2 } else { 0 };
    let polled = polled.map_or((6, 0), |r| r.run(sqe(OP_NOP, -1, 0, 0, 0, 6)));
    c.check(
        "its dropped entries are counted as before, and a drained request completes",
        a.dropped() == want && drained == (0xd1, 0) && polled == (6, 0),
        format!(
            "dropped {} (want {want}), drained request {drained:?}, polled ring {polled:?}",
            a.dropped()
        ),
    );
    let many = (0..600u64).all(|i| {
        a.run(sqe(OP_NOP, -1, 0, 0, 0, i)) == (i, 0) && b.run(sqe(OP_NOP, -1, 0, 0, 0, i)) == (i, 0)
    });
    c.check(
        "both go on through many more, around their queues",
        many,
        "",
    );
    c.check(
        "its duplicate is the same ring",
        ino(dup) == ino(a.fd) && a.enter(0, 0) == 0,
        format!("{} vs {}", ino(dup), ino(a.fd)),
    );
    // `thaw run IMAGE -- NEXT`: checkpointed again to NEXT, its rings now on a restore's memory.
    if let Some(next) = again.first() {
        let before = (counters(a.fd), counters(b.fd));
        if let Err(e) = common::save_again(next) {
            c.check("checkpointed again", false, e);
            c.finish();
        }
        let now = (counters(a.fd), counters(b.fd));
        c.check(
            "restored twice, the kernel's counters are as they were",
            now == before,
            format!("{now:?} vs {before:?}"),
        );
        let more = (0..300u64).all(|i| {
            a.run(sqe(OP_NOP, -1, 0, 0, 0, i)) == (i, 0)
                && b.run(sqe(OP_NOP, -1, 0, 0, 0, i)) == (i, 0)
        });
        c.check("restored twice, both go on", more, "");
    }
    c.finish();
}
