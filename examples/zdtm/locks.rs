//! File locks: an exclusive `flock` on IMAGE.a, an OFD read lock on bytes 10..30 of IMAGE.b, a
//! POSIX write lock on bytes 100..105 of IMAGE.c. After restore a forked child (another process)
//! finds each of them held: its conflicting attempts fail, and F_GETLK names the restored
//! process as the POSIX lock's owner.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;

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

fn main() {
    let (image, _, _) = common::argv();
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
