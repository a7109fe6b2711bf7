//! AIO contexts (io_setup), as libaio makes them (databases, QEMU, fio): context A (io_setup(8))
//! has read a file through it and reaped the event; context B (io_setup(64)) has completed 70
//! writes of which it reaped 30, so 40 events wait in its ring. After restore: each context is
//! at its address, which the kernel still takes as its id; the rings' counters are as they were;
//! A reads and writes through the same id and gets the events; B's 40 events are reaped, in
//! order and with their contents, and B goes on around its ring.
//!
//! `PROG IMAGE KEY first-life`: the first life goes on after saving and checks its rings too.
//!
//! `PROG IMAGE KEY MODE` with MODE one of `in-flight` (a poll request waiting on a pipe),
//! `inherited` (a child's copy of its parent's ring: no context of its own), `scribbled` (the
//! ring's header overwritten): each refused, naming it (exit 3).

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_POLL: u16 = 5;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Event {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

fn setup(n: u64) -> u64 {
    let mut ctx = 0u64;
    // SAFETY: io_setup writes the context id to `ctx`.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, n, &mut ctx) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    ctx
}

fn submit(ctx: u64, iocb: &Iocb) -> i64 {
    let p = [iocb as *const Iocb];
    // SAFETY: one iocb pointer, the iocb alive for the call (the kernel copies it).
    unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, p.as_ptr()) }
}

/// Reaps between `min` and `max` events, waiting up to a second.
fn reap(ctx: u64, min: usize, max: usize) -> Vec<Event> {
    let mut ev = vec![Event::default(); max];
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: room for `max` events; a timeout of ours.
    let n = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            min as i64,
            max as i64,
            ev.as_mut_ptr(),
            &ts,
        )
    };
    ev.truncate(n.max(0) as usize);
    ev
}

/// The ring's header words: id, nr, head, tail, magic.
fn header(ctx: u64) -> [u32; 5] {
    let mut h = [0u32; 5];
    for (i, w) in h.iter_mut().enumerate() {
        // SAFETY: the ring is mapped at the context's address for the program's life.
        *w = unsafe { std::ptr::read_volatile((ctx as *const u32).add(i)) };
    }
    h
}

/// The ring's line of /proc/self/maps but for the inode (of the kernel's file a new context has).
fn maps_line(addr: u64) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let l = maps
        .lines()
        .find(|l| l.starts_with(&format!("{addr:x}-")))?;
    let w: Vec<&str> = l.split_whitespace().collect();
    Some(format!("{} {} {} {}", w[0], w[1], w[2], w[5..].join(" ")))
}

fn write_to(fd: i32, data: u64) -> Iocb {
    static BYTE: u8 = b'x';
    Iocb {
        data,
        opcode: IOCB_CMD_PWRITE,
        fildes: fd as u32,
        buf: &BYTE as *const u8 as u64,
        nbytes: 1,
        ..Default::default()
    }
}

fn main() {
    let (_, _, extra) = common::argv();
    let mode = extra.first().map(String::as_str).unwrap_or("");
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    match mode {
        "in-flight" => common::refusal(|| {
            // A poll request on an empty pipe: in flight until something writes to it.
            let mut p = [0i32; 2];
            // SAFETY: room for two descriptors.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            let ctx = setup(4);
            let poll = Iocb {
                data: 1,
                opcode: IOCB_CMD_POLL,
                fildes: p[0] as u32,
                buf: libc::POLLIN as u64,
                ..Default::default()
            };
            assert_eq!(submit(ctx, &poll), 1);
        }),
        "inherited" => {
            let ctx = setup(4);
            // SAFETY: the child runs only the checkpoint (which refuses) and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let _ = ctx;
                common::refusal(|| {});
            }
            let mut status = 0;
            // SAFETY: waits for our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            std::process::exit(libc::WEXITSTATUS(status));
        }
        "scribbled" => common::refusal(|| {
            let ctx = setup(4);
            // SAFETY: the ring's magic word, in memory the kernel shares with the process.
            unsafe { std::ptr::write_volatile((ctx as *mut u32).add(4), 0x1234) };
        }),
        _ => {}
    }

    // A: a read of the program's own file, reaped.
    let a = setup(8);
    let mut buf = [0u8; 4];
    let read = Iocb {
        data: 7,
        opcode: IOCB_CMD_PREAD,
        fildes: file.as_raw_fd() as u32,
        buf: buf.as_mut_ptr() as u64,
        nbytes: 4,
        ..Default::default()
    };
    assert_eq!(submit(a, &read), 1);
    let ev = reap(a, 1, 1);
    assert!(ev.len() == 1 && ev[0].res == 4 && &buf == b"\x7fELF");
    // B: 70 writes, 30 reaped.
    let b = setup(64);
    let writes: Vec<Iocb> = (0..70)
        .map(|i| write_to(null.as_raw_fd(), 100 + i))
        .collect();
    for w in &writes {
        assert_eq!(submit(b, w), 1);
    }
    assert_eq!(reap(b, 30, 30).len(), 30);
    let before = (header(a), header(b));
    let maps_before = (maps_line(a), maps_line(b));
    assert!(maps_before
        .0
        .as_deref()
        .is_some_and(|l| l.contains("[aio]")));

    // `first-life`: the first life goes on after saving, and finds its events as it left
    // them (the checkpoint's probe took its own out of the rings).
    let args = if mode == "first-life" {
        let (image, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(&image);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        match cp.save() {
            Ok(thaw::Outcome::Restored(r)) => r.args().to_vec(),
            Ok(thaw::Outcome::Saved(_)) => {
                let mut c = common::Checks::default();
                let ev = reap(b, 40, 64);
                c.check(
                    "first life: the 40 events not reaped are there, in order",
                    ev.len() == 40
                        && ev
                            .iter()
                            .zip(&writes[30..])
                            .all(|(e, w)| e.data == w.data && e.obj == w as *const Iocb as u64),
                    format!("{} events: {:?}", ev.len(), ev.first()),
                );
                c.check(
                    "first life: nothing more in either ring",
                    reap(a, 0, 4).is_empty() && reap(b, 0, 4).is_empty(),
                    "",
                );
                let r = submit(a, &read);
                c.check(
                    "first life: a read completes",
                    r == 1
                        && reap(a, 1, 1)
                            .first()
                            .is_some_and(|e| e.res == 4 && e.data == 7),
                    "",
                );
                c.finish();
            }
            Err(e) => {
                eprintln!("checkpoint failed: {e}");
                std::process::exit(2);
            }
        }
    } else {
        common::checkpoint()
    };
    let mut c = common::Checks::default();
    let now = (header(a), header(b));
    // (The id word is the kernel's own index of the context: not compared.)
    c.check(
        "each ring at its address, its counters as they were",
        now.0[1..] == before.0[1..] && now.1[1..] == before.1[1..],
        format!("{now:?} vs {before:?}"),
    );
    c.check(
        "each ring's mapping as before",
        (maps_line(a), maps_line(b)) == maps_before,
        format!("{:?} vs {maps_before:?}", (maps_line(a), maps_line(b))),
    );
    // A: a new read through the same id, then a write.
    buf = [0; 4];
    let read = Iocb {
        data: 8,
        offset: 1,
        ..read
    };
    let r = submit(a, &read);
    let ev = reap(a, 1, 1);
    c.check(
        "a read through the same context id completes",
        r == 1 && ev.len() == 1 && ev[0].data == 8 && ev[0].res == 4 && &buf == b"ELF\x02",
        format!("{r} {ev:?} {buf:?}"),
    );
    let w = write_to(null.as_raw_fd(), 9);
    let r = submit(a, &w);
    let ev = reap(a, 1, 1);
    c.check(
        "a write through it completes",
        r == 1 && ev.len() == 1 && ev[0].data == 9 && ev[0].res == 1,
        format!("{r} {ev:?}"),
    );
    // B: the 40 events not reaped, in order, with their contents.
    let ev = reap(b, 40, 64);
    let expected: Vec<Event> = writes[30..]
        .iter()
        .map(|w| Event {
            data: w.data,
            obj: w as *const Iocb as u64,
            res: 1,
            res2: 0,
        })
        .collect();
    c.check(
        "the 40 events not reaped are reaped now, in order, as they were",
        ev == expected,
        format!("{} events: {:?}", ev.len(), ev.first()),
    );
    // B goes on around its ring (255 events), each request reaped.
    let around = (0..600u64).all(|i| {
        let w = write_to(null.as_raw_fd(), 1000 + i);
        submit(b, &w) == 1 && reap(b, 1, 1).first().is_some_and(|e| e.data == 1000 + i)
    });
    c.check("it goes on around its ring", around, "");
    // `thaw run IMAGE -- NEXT`: checkpointed again, restored again.
    if let Some(next) = args.first() {
        let _ = submit(b, &writes[0]);
        let before = (header(a), header(b));
        if let Err(e) = common::save_again(next) {
            c.check("checkpointed again", false, e);
            c.finish();
        }
        let now = (header(a), header(b));
        c.check(
            "restored twice, the counters as they were",
            now.0[1..] == before.0[1..] && now.1[1..] == before.1[1..],
            format!("{now:?} vs {before:?}"),
        );
        let ev = reap(b, 1, 4);
        c.check(
            "restored twice, the event left unreaped is there",
            ev.len() == 1 && ev[0].data == 100,
            format!("{ev:?}"),
        );
        let r = submit(a, &read);
        c.check(
            "restored twice, a read completes",
            r == 1 && reap(a, 1, 1).first().is_some_and(|e| e.res == 4),
            "",
        );
    }
    c.finish();
}
