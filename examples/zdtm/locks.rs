//! File locks: an exclusive `flock` on IMAGE.a, an OFD read lock on bytes 10..30 of IMAGE.b, a
//! POSIX write lock on bytes 100..105 of IMAGE.c. After restore a forked child (another process)
//! finds each of them held: its conflicting attempts fail, and F_GETLK names the restored
//! process as the POSIX lock's owner.
//!
//! `PROG IMAGE KEY in-flight`: a POSIX write lock on IMAGE.e, and another descriptor of the file
//! waits in flight (SCM_RIGHTS) in a datagram pair. The checkpoint receives it to describe it,
//! and must not close it (any close of the file by the process ends its POSIX locks): the first
//! life goes on after the snapshot and checks the lock is still its own, as does every restore,
//! which then receives the descriptor. With `in-flight-locker` the descriptor that took the lock
//! is the one in flight: refused (its lock would not be held again), and the lock stays.
//! `pipe-lock`: a flock on a pipe, refused by name.
//! `late`: a POSIX write lock on IMAGE.l taken by another thread once the checkpoint has scanned
//! the descriptors and before it stops the threads (the SDK's test hook): the first life still
//! holds it after the checkpoint (the checkpoint's duplicate of the descriptor must not be closed
//! as if the file were unlocked), and the image has it (the checkpoint starts again rather than
//! save the lock state it scanned). `relocked`: the lock held from the start, given up while the
//! checkpoint scans and taken again before it stops the threads: the same, and the image has it.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

fn flock_struct(ty: i32, start: i64, len: i64) -> libc::flock {
    libc::flock {
        l_type: ty as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: len,
        l_pid: 0,
    }
}

fn open(path: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// Who holds a POSIX lock over byte 102 of `path`, as another process (a forked child) sees
/// it: its PID, or 0 when nobody does.
fn posix_owner(path: &str) -> i32 {
    // SAFETY: the child only opens a file and probes a lock on it, then _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let f = open(path);
        let mut probe = flock_struct(libc::F_WRLCK, 102, 1);
        // SAFETY: F_GETLK on the child's own descriptor with a valid struct; then _exit.
        unsafe {
            libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut probe);
            let found = probe.l_type != libc::F_UNLCK as i16;
            // The parent's PID fits an exit status only as a yes or no.
            libc::_exit(if found && probe.l_pid == libc::getppid() {
                1
            } else {
                0
            });
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    if libc::WEXITSTATUS(st) == 1 {
        std::process::id() as i32
    } else {
        0
    }
}

/// A POSIX write lock on bytes 100..105 of `f`.
fn lock(f: &std::fs::File) {
    let posix = flock_struct(libc::F_WRLCK, 100, 5);
    // SAFETY: F_SETLK on our own descriptor with a valid struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &posix) };
    assert_eq!(r, 0);
}

/// A checkpoint to `image`, signed with the key of the command line, that the first life
/// goes on from.
fn save(image: &str) -> Result<thaw::Outcome, thaw::CheckpointError> {
    let (_, key, _) = common::argv();
    let mut cp = thaw::Checkpoint::to(image);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    cp.save()
}

/// `relocked`: locked from the start, given up once the checkpoint holds the descriptors and
/// taken again once the scan is done (the scan read the file unlocked, and the lock looks the
/// same at the stop as when the descriptor was first looked at).
fn late(image: &str, relocked: bool) {
    let path = format!("{image}.l");
    let f = open(&path);
    let fd = f.as_raw_fd();
    if relocked {
        lock(&f);
    }
    common::during_first_scan(if relocked { "hd" } else { "s" }, move |point| {
        // SAFETY: borrows the program's open descriptor for the call only.
        let f = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        if point == b'h' {
            let posix = flock_struct(libc::F_UNLCK, 100, 5);
            // SAFETY: F_SETLK on our own descriptor with a valid struct.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETLK, &posix) }, 0);
        } else {
            lock(&f);
        }
    });
    let me = std::process::id() as i32;
    let mut ch = common::Checks::default();
    match save(image) {
        Ok(thaw::Outcome::Saved(_)) => {
            ch.check(
                "first life: a POSIX lock taken while the checkpoint ran is still its own",
                posix_owner(&path) == me,
                posix_owner(&path),
            );
            ch.finish();
        }
        Ok(thaw::Outcome::Restored(_)) => {}
        Err(err) => {
            eprintln!("checkpoint failed: {err}");
            std::process::exit(2);
        }
    }
    ch.check(
        "a POSIX lock taken while the checkpoint ran is held after restore",
        posix_owner(&path) == me,
        posix_owner(&path),
    );
    drop(f);
    ch.finish();
}

fn in_flight(image: &str, locker: bool) {
    let path = format!("{image}.e");
    let e = open(&path);
    lock(&e);
    let (tx, rx) = std::os::unix::net::UnixDatagram::pair().unwrap();
    // Kept open here too: closing it would end the lock.
    let other = open(&path);
    send_fd(&tx, if locker { &e } else { &other }.as_raw_fd());
    let me = std::process::id() as i32;
    let mut ch = common::Checks::default();
    match save(image) {
        Ok(thaw::Outcome::Saved(_)) => {
            ch.check(
                "first life: its POSIX lock is still its own after the checkpoint",
                posix_owner(&path) == me,
                posix_owner(&path),
            );
            ch.finish();
        }
        Ok(thaw::Outcome::Restored(_)) => {}
        Err(err) if locker => {
            println!("refused: {err}");
            ch.check(
                "first life: its POSIX lock is still its own after a refusal",
                posix_owner(&path) == me,
                posix_owner(&path),
            );
            ch.finish();
        }
        Err(err) => {
            eprintln!("checkpoint failed: {err}");
            std::process::exit(2);
        }
    }
    ch.check(
        "POSIX lock with its descriptor in flight: held by this process",
        posix_owner(&path) == me,
        posix_owner(&path),
    );
    let got = recv_fd(&rx);
    let same = |a: i32, b: i32| {
        let (mut x, mut y) = (
            std::mem::MaybeUninit::<libc::stat>::zeroed(),
            std::mem::MaybeUninit::<libc::stat>::zeroed(),
        );
        // SAFETY: fstat into zeroed structs we own.
        unsafe {
            libc::fstat(a, x.as_mut_ptr()) == 0
                && libc::fstat(b, y.as_mut_ptr()) == 0
                && x.assume_init().st_ino == y.assume_init().st_ino
        }
    };
    ch.check(
        "the descriptor in flight arrives, naming the locked file",
        got >= 0 && same(got, e.as_raw_fd()),
        got,
    );
    let _ = other;
    ch.finish();
}

/// `goes-on`: POSIX locks on files of four kinds (IMAGE.f, IMAGE.g also mapped shared as
/// SQLite maps its -shm file, IMAGE.h deleted, a memfd; with `goes-on-fifo` the FIFO IMAGE.i
/// too, written only), and two checkpoints the first life goes
/// on from. The checkpoint's own descriptors of those files are kept open, not closed (which
/// would end the locks), and used again by the next one; the restored process has none of
/// them, and every lock.
fn goes_on(image: &str, with_fifo: bool) {
    let path = format!("{image}.f");
    let f = open(&path);
    lock(&f);
    // More locked files of other kinds: mapped shared (as SQLite's -shm), deleted, a memfd.
    let g = open(&format!("{image}.g"));
    g.set_len(4096).unwrap();
    lock(&g);
    // SAFETY: a fresh shared mapping of our own file, never unmapped (the process's state).
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            g.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let h = open(&format!("{image}.h"));
    lock(&h);
    std::fs::remove_file(format!("{image}.h")).unwrap();
    // SAFETY: memfd_create with a valid name.
    let m = unsafe { libc::memfd_create(c"locked".as_ptr(), 0) };
    assert!(m >= 0);
    // SAFETY: we own m now.
    let m = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(m) };
    m.set_len(4096).unwrap();
    lock(&m);
    // With `with_fifo`: a FIFO the process holds only the writing end of (the checkpoint opens
    // a reading end of its own to copy what waits in it; a restore needs a reader elsewhere).
    let _writer = with_fifo.then(|| {
        let fifo = format!("{image}.i");
        let c = std::ffi::CString::new(fifo.as_str()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        drop(reader);
        lock(&writer);
        writer
    });
    let ours = || {
        let me = std::process::id().to_string();
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some(&me) && l.contains("POSIX"))
            .count()
    };
    let locks = ours();
    let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = count();
    let me = std::process::id() as i32;
    let mut ch = common::Checks::default();
    for round in 1..=2 {
        match save(image) {
            Ok(thaw::Outcome::Saved(_)) => {}
            Ok(thaw::Outcome::Restored(_)) => {
                ch.check(
                    "restored: the POSIX lock is held by this process",
                    posix_owner(&path) == me,
                    posix_owner(&path),
                );
                ch.check(
                    "restored: all its POSIX locks",
                    ours() == locks,
                    format!("{} of {locks}", ours()),
                );
                ch.check(
                    "restored: the descriptors the process had, no more",
                    count() == before,
                    format!("{} against {before}", count()),
                );
                let _ = f;
                ch.finish();
            }
            Err(err) => {
                eprintln!("checkpoint failed: {err}");
                std::process::exit(2);
            }
        }
        ch.check(
            &format!("first life: its POSIX lock is still its own after checkpoint {round}"),
            posix_owner(&path) == me,
            posix_owner(&path),
        );
        ch.check(
            &format!("first life: all its POSIX locks after checkpoint {round}"),
            ours() == locks,
            format!("{} of {locks}", ours()),
        );
    }
    // One per locked description (the witness's duplicates, the copies' own descriptions of
    // the deleted file, the memfd and the FIFO: a locked FIFO gets a reading end of the
    // checkpoint's own, as a probe for a reader could not be closed), made by the first
    // checkpoint and used by the second.
    ch.check(
        "first life: the checkpoint's descriptors kept for the locked files, used again",
        count() == before + 6 + 2 * usize::from(with_fifo),
        format!("{} against {before}", count()),
    );
    // The process closes IMAGE.f (its lock goes with it): the next checkpoint (to another image)
    // closes the descriptor it kept for that file.
    drop(f);
    if !matches!(save(&format!("{image}.3")), Ok(thaw::Outcome::Saved(_))) {
        std::process::exit(2);
    }
    ch.check(
        "first life: a kept descriptor goes once its file's lock is gone",
        count() == before + 4 + 2 * usize::from(with_fifo),
        format!("{} against {before}", count()),
    );
    ch.finish();
}

/// A message header for one byte with room for one descriptor (`iov` and `control` hold them).
fn one_byte(byte: &mut [u8; 1], iov: &mut libc::iovec, control: &mut [u64; 4]) -> libc::msghdr {
    *iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

fn send_fd(via: &std::os::unix::net::UnixDatagram, fd: i32) {
    let (mut byte, mut control) = (*b"e", [0u64; 4]);
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = one_byte(&mut byte, &mut iov, &mut control);
    // SAFETY: the header points at our buffers; the control buffer holds one descriptor.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(via.as_raw_fd(), &msg, 0), 1);
    }
}

/// The descriptor the next message on `via` carries, or -1.
fn recv_fd(via: &std::os::unix::net::UnixDatagram) -> i32 {
    let (mut byte, mut control) = ([0u8], [0u64; 4]);
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = one_byte(&mut byte, &mut iov, &mut control);
    // SAFETY: recvmsg into our buffers, sized as the header says.
    unsafe {
        if libc::recvmsg(via.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) != 1 {
            return -1;
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return -1;
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
    }
}

fn main() {
    let (image, _, extra) = common::argv();
    match extra.first().map(String::as_str) {
        Some("in-flight") => return in_flight(&image, false),
        Some("in-flight-locker") => return in_flight(&image, true),
        Some("goes-on") => return goes_on(&image, false),
        Some("goes-on-fifo") => return goes_on(&image, true),
        Some("late") => return late(&image, false),
        Some("relocked") => return late(&image, true),
        // A lock on a pipe (flock works on any descriptor): not taken again, so refused.
        Some("pipe-lock") => common::refusal(|| {
            let (r, w) = std::io::pipe().unwrap();
            // SAFETY: flock on our own descriptor.
            assert_eq!(unsafe { libc::flock(r.as_raw_fd(), libc::LOCK_EX) }, 0);
            std::mem::forget((r, w));
        }),
        _ => {}
    }
    let (pa, pb, pc) = (
        format!("{image}.a"),
        format!("{image}.b"),
        format!("{image}.c"),
    );
    let (a, b, c) = (open(&pa), open(&pb), open(&pc));
    // SAFETY: lock calls on our own descriptors with valid structs.
    unsafe {
        assert_eq!(libc::flock(a.as_raw_fd(), libc::LOCK_EX), 0);
        let ofd = flock_struct(libc::F_RDLCK, 10, 20);
        assert_eq!(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &ofd), 0);
        let posix = flock_struct(libc::F_WRLCK, 100, 5);
        assert_eq!(libc::fcntl(c.as_raw_fd(), libc::F_SETLK, &posix), 0);
    }
    // A read lease on a file opened read-only.
    let pd = format!("{image}.d");
    drop(open(&pd));
    let d = std::fs::File::open(&pd).unwrap();
    // SAFETY: F_SETLEASE on our own descriptor.
    let r = unsafe { libc::fcntl(d.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    assert_eq!(r, 0, "F_SETLEASE");
    common::checkpoint();
    let me = std::process::id() as i32;
    let mut ch = common::Checks::default();
    // SAFETY: the child only makes lock calls on files it opens itself, then _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let (a2, b2, c2) = (open(&pa), open(&pb), open(&pc));
        let mut bits = 0;
        // SAFETY: lock calls on the child's own descriptors with valid structs.
        unsafe {
            if libc::flock(a2.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 {
                bits |= 1;
            }
            let ofd = flock_struct(libc::F_WRLCK, 15, 1);
            if libc::fcntl(b2.as_raw_fd(), libc::F_OFD_SETLK, &ofd) != 0 {
                bits |= 2;
            }
            let mut probe = flock_struct(libc::F_WRLCK, 102, 1);
            if libc::fcntl(c2.as_raw_fd(), libc::F_SETLK, &probe) != 0 {
                bits |= 4;
            }
            libc::fcntl(c2.as_raw_fd(), libc::F_GETLK, &mut probe);
            if probe.l_pid == me {
                bits |= 8;
            }
            libc::_exit(bits);
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    let bits = libc::WEXITSTATUS(st);
    ch.check("flock held", bits & 1 != 0, bits);
    ch.check("OFD lock held", bits & 2 != 0, bits);
    ch.check("POSIX lock held, by this process", bits & 12 == 12, bits);
    // /proc names the process that holds the flock: this one, not the launcher.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", a.as_raw_fd())).unwrap();
    let owner = info
        .lines()
        .find(|l| l.contains("FLOCK"))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or("");
    ch.check(
        "flock owned by this process in /proc",
        owner == me.to_string(),
        owner,
    );
    // SAFETY: F_GETLEASE on our own descriptor.
    let lease = unsafe { libc::fcntl(d.as_raw_fd(), libc::F_GETLEASE) };
    ch.check("read lease held", lease == libc::F_RDLCK, lease);
    let _ = (a, b, c, d);
    ch.finish();
}
