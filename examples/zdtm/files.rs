//! File descriptors: a regular file at an offset, an append-mode writer, a directory, and a pipe
//! inside the process with bytes buffered in it. EXTRA is a scratch directory. After restore,
//! closing the write end of a second pipe, or one end of a socket pair, gives the other end end
//! of file at once: nothing else (the launcher) holds them.

#[path = "common.rs"]
mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;

fn main() {
    let (_, _, extra) = common::argv();
    let dir = std::path::PathBuf::from(extra.first().expect("a scratch directory"));
    std::fs::write(dir.join("data.txt"), b"0123456789abcdefghij").unwrap();
    let mut reader = std::fs::File::open(dir.join("data.txt")).unwrap();
    reader.seek(SeekFrom::Start(5)).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("log.txt"))
        .unwrap();
    log.write_all(b"before\n").unwrap();
    let dirfd = std::fs::File::open(&dir).unwrap();
    let dir_ino = dirfd.metadata().unwrap().ino();
    let mut fds = [0i32; 2];
    // SAFETY: pipe() fills two descriptors we then own.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: the descriptors are fresh and owned here.
    let (mut pr, mut pw) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    pw.write_all(&[42u8; 100]).unwrap();
    // A pipe whose writer is gone (a finished child's output, not read yet): its bytes, then end
    // of file.
    let mut widowed = [0i32; 2];
    // SAFETY: pipe() fills two descriptors we then own; the write end is closed at once.
    let mut widowed_r = unsafe {
        libc::pipe(widowed.as_mut_ptr());
        libc::write(widowed[1], b"last output".as_ptr().cast(), 11);
        libc::close(widowed[1]);
        std::fs::File::from_raw_fd(widowed[0])
    };
    // A pipe whose reader is gone (a pool's pipe to workers that ended): writes fail with EPIPE.
    let mut orphaned = [0i32; 2];
    // SAFETY: pipe() fills two descriptors we then own; the read end is closed at once.
    let orphaned_w = unsafe {
        libc::pipe(orphaned.as_mut_ptr());
        libc::close(orphaned[0]);
        orphaned[1]
    };
    // A file whose name ends with " (deleted)", as /proc shows a deleted one's: it is not one.
    std::fs::write(dir.join("named (deleted)"), b"still here").unwrap();
    let mut named = std::fs::File::open(dir.join("named (deleted)")).unwrap();
    // A zip archive read through a descriptor, as a JVM holds the jars of its class path.
    std::fs::write(dir.join("app.jar"), b"PK\x03\x04 a jar's first entry").unwrap();
    let jar = std::fs::File::open(dir.join("app.jar")).unwrap();
    let mut more = [0i32; 2];
    // SAFETY: pipe() fills two descriptors we then own (closed by number after restore).
    unsafe { libc::pipe(more.as_mut_ptr()) };
    let (sa, sb) = std::os::unix::net::UnixStream::pair().unwrap();
    // A 1 MiB pipe in packet mode whose read end is also opened a second time, non-blocking.
    let mut big = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors; fcntl and open on our own descriptors.
    let (second, opath) = unsafe {
        libc::pipe2(big.as_mut_ptr(), libc::O_DIRECT);
        libc::fcntl(big[1], libc::F_SETPIPE_SZ, 1 << 20);
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", big[0])).unwrap();
        let second = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        let data = std::ffi::CString::new(dir.join("data.txt").to_str().unwrap()).unwrap();
        (second, libc::open(data.as_ptr(), libc::O_PATH))
    };
    // A symlink opened itself (O_PATH | O_NOFOLLOW), as file managers and `openat2` users do.
    let link = dir.join("link");
    std::os::unix::fs::symlink(dir.join("data.txt"), &link).unwrap();
    let link_c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
    // SAFETY: open with a NUL-terminated path; the descriptor is kept open.
    let symlink_fd = unsafe { libc::open(link_c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW) };
    assert!(symlink_fd >= 0);
    // Another, removed since: made again, opened so, removed again.
    let gone_link = dir.join("gone-link");
    std::os::unix::fs::symlink("somewhere/else", &gone_link).unwrap();
    let gone_c = std::ffi::CString::new(gone_link.to_str().unwrap()).unwrap();
    // SAFETY: open with a NUL-terminated path; the descriptor is kept open.
    let gone_fd = unsafe { libc::open(gone_c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW) };
    assert!(gone_fd >= 0);
    std::fs::remove_file(&gone_link).unwrap();
    let fl = |fd: i32| {
        // SAFETY: F_GETFL has no memory effects.
        unsafe { libc::fcntl(fd, libc::F_GETFL) }
    };
    // Duplicates: a file (one offset), an eventfd and an epoll instance (one object each).
    // SAFETY: dup, eventfd and epoll_create1 on descriptors we own; fresh descriptors kept open.
    let (file_dup, ev, ev_dup, ep, ep_dup) = unsafe {
        let ev = libc::eventfd(0, libc::EFD_NONBLOCK);
        let ep = libc::epoll_create1(0);
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut event);
        (
            libc::dup(reader.as_raw_fd()),
            ev,
            libc::dup(ev),
            ep,
            libc::dup(ep),
        )
    };

    // A FIFO (named pipe) open for reading and writing, 7 bytes waiting in it: opened again by
    // its name as the same FIFO, the bytes put back.
    // A FIFO made in the scratch directory, open for reading and writing without blocking:
    // (its name, its descriptor).
    let make_fifo = |name: &str| {
        let c = std::ffi::CString::new(dir.join(name).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo and open on a NUL-terminated path of our scratch directory.
        let fd = unsafe {
            libc::mkfifo(c.as_ptr(), 0o600);
            libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK)
        };
        assert!(fd >= 0, "open FIFO: {}", std::io::Error::last_os_error());
        (c, fd)
    };
    let (fifo_c, fifo) = make_fifo("named.fifo");
    // SAFETY: a write from a literal to our own FIFO.
    let wrote = unsafe { libc::write(fifo, b"waiting".as_ptr().cast(), 7) };
    assert_eq!(wrote, 7);
    // A second FIFO, empty: opened again by its name, still empty.
    let (_, empty) = make_fifo("empty.fifo");
    // A FIFO whose two ends are separate descriptors, the writing one at the lower number (Go
    // opens them from two goroutines, in either order), with bytes waiting: the writer opens
    // only where the FIFO has a reader, here the process's own.
    let (split_c, split_rw) = make_fifo("split.fifo");
    // SAFETY: opens of our own FIFO by its NUL-terminated path, moved to numbers of our choice.
    let (split_w, split_r) = unsafe {
        let r = libc::open(split_c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        let w = libc::open(split_c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
        assert!(r >= 0 && w >= 0);
        libc::close(split_rw);
        assert_eq!(libc::dup2(w, 70), 70);
        assert_eq!(libc::dup2(r, 71), 71);
        libc::close(w);
        libc::close(r);
        assert_eq!(libc::write(70, b"split".as_ptr().cast(), 5), 5);
        (70, 71)
    };
    // A FIFO removed while open (a reader and a writer of it, bytes waiting): made again,
    // opened, given its bytes and removed, so that its descriptors still share one buffer.
    let (ghost_c, ghost) = make_fifo("ghost.fifo");
    // SAFETY: open, chmod and write on our own FIFO, by its NUL-terminated path.
    let ghost_rd = unsafe {
        let r = libc::open(ghost_c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        // A mode the umask would change: the restore sets it, not only creates the FIFO.
        libc::chmod(ghost_c.as_ptr(), 0o662);
        assert_eq!(libc::write(ghost, b"boo".as_ptr().cast(), 3), 3);
        r
    };
    std::fs::remove_file(dir.join("ghost.fifo")).unwrap();
    // A FIFO removed while open whose writer then closed (no writer anywhere): only its reading
    // end is left, with the bytes the writer wrote: they wait there again, then end of file.
    let (lone_c, lone_w) = make_fifo("lone.fifo");
    // SAFETY: open and write on our own FIFO by its NUL-terminated path; the writer is closed.
    let lone = unsafe {
        let r = libc::open(lone_c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        assert_eq!(libc::write(lone_w, b"bye".as_ptr().cast(), 3), 3);
        libc::close(lone_w);
        std::fs::File::from_raw_fd(r)
    };
    std::fs::remove_file(dir.join("lone.fifo")).unwrap();
    // Another one, nothing left in it: end of file at once, and poll says its writers are gone.
    let (lone_empty_c, lone_empty_w) = make_fifo("lone-empty.fifo");
    // SAFETY: open on our own FIFO by its NUL-terminated path; the writer is closed.
    let lone_empty = unsafe {
        let r = libc::open(lone_empty_c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
        libc::close(lone_empty_w);
        std::fs::File::from_raw_fd(r)
    };
    std::fs::remove_file(dir.join("lone-empty.fifo")).unwrap();

    // Edge-triggered registrations: pipe A's edge taken with its byte unread, pipe B's edge
    // pending, pipe C one-shot, fired and so disarmed. (data: 1, 2, 3)
    let mut et = [[0i32; 2]; 3];
    let et_ep = {
        let wait = |ep: i32| {
            let mut out = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: one live epoll_event.
            let n = unsafe { libc::epoll_wait(ep, &mut out, 1, 0) };
            (n, out.u64)
        };
        // SAFETY: pipes and an epoll instance of our own, and writes of one byte from a literal.
        unsafe {
            let ep = libc::epoll_create1(0);
            for (i, p) in et.iter_mut().enumerate() {
                libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK);
                let mut event = libc::epoll_event {
                    events: libc::EPOLLIN as u32
                        | libc::EPOLLET as u32
                        | if i == 2 { libc::EPOLLONESHOT as u32 } else { 0 },
                    u64: i as u64 + 1,
                };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut event);
            }
            libc::write(et[0][1], b"a".as_ptr().cast(), 1);
            assert_eq!(wait(ep), (1, 1));
            libc::write(et[2][1], b"c".as_ptr().cast(), 1);
            assert_eq!(wait(ep), (1, 3));
            libc::write(et[1][1], b"b".as_ptr().cast(), 1);
            ep
        }
    };

    // An epoll registration whose number now holds another file: eventfd A registered as
    // number `n`, kept at another number, and `n` given to eventfd B (the same anonymous
    // inode as A). The registration watches A still.
    // SAFETY: descriptors of our own, created and moved here.
    let (moved_ep, moved_a, n) = unsafe {
        let ep = libc::epoll_create1(0);
        let a = libc::eventfd(0, libc::EFD_NONBLOCK);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 11,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, a, &mut ev), 0);
        let kept = libc::dup(a);
        let b = libc::eventfd(0, libc::EFD_NONBLOCK);
        assert_eq!(libc::dup2(b, a), a);
        libc::close(b);
        (ep, kept, a)
    };

    // stdout saved the way programs do before redirecting it: the caller's stdout after restore.
    // SAFETY: dup of our own descriptor.
    let saved_stdout = unsafe { libc::dup(1) };
    assert!(saved_stdout > 2);

    let _ = common::checkpoint();
    let mut c = common::Checks::default();
    c.check(
        "a dup of stdout is the caller's stdout",
        thaw::sys::same_description(saved_stdout, 1) == Some(true),
        "another open file description",
    );
    {
        let one = 1u64.to_ne_bytes();
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: writes to our own eventfds, waits into a local array.
        let (after_b, after_a) = unsafe {
            libc::write(n, one.as_ptr().cast(), 8);
            let after_b = libc::epoll_wait(moved_ep, out.as_mut_ptr(), 2, 0);
            libc::write(moved_a, one.as_ptr().cast(), 8);
            let after_a = libc::epoll_wait(moved_ep, out.as_mut_ptr(), 2, 0);
            (after_b, after_a)
        };
        let data = out[0].u64;
        c.check(
            "epoll: a registration whose number holds another file now watches its own file",
            after_b == 0 && after_a == 1 && data == 11,
            format!("{after_b} events for the number's new file, {after_a} (data {data}) for the watched one"),
        );
    }
    {
        let ready = || {
            let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: four live epoll_events.
            let n = unsafe { libc::epoll_wait(et_ep, out.as_mut_ptr(), 4, 0) };
            out[..n.max(0) as usize]
                .iter()
                .map(|e| e.u64)
                .collect::<Vec<_>>()
        };
        let mut seen = vec![ready()];
        // SAFETY: a one-byte write from a literal to our own pipe.
        unsafe { libc::write(et[0][1], b"a".as_ptr().cast(), 1) };
        seen.push(ready());
        let mut waiting = [0u8; 8];
        // SAFETY: a read of our own FIFO into a local.
        let n = unsafe { libc::read(fifo, waiting.as_mut_ptr().cast(), 8) };
        c.check(
            "FIFO: the bytes waiting at the checkpoint wait there again",
            n == 7 && &waiting[..7] == b"waiting",
            format!("{n} bytes: {:?}", &waiting[..n.max(0) as usize]),
        );
        // SAFETY: a read of our own FIFO into a local.
        let (empty_flags, queued) = unsafe {
            let mut b = [0u8; 1];
            let n = libc::read(empty, b.as_mut_ptr().cast(), 1);
            (libc::fcntl(empty, libc::F_GETFL), n)
        };
        let mut b = [0u8; 16];
        // SAFETY: reads and a write of our own descriptors into and from locals.
        let split = unsafe {
            let n = libc::read(split_r, b.as_mut_ptr().cast(), 16);
            let first = String::from_utf8_lossy(&b[..n.max(0) as usize]).into_owned();
            libc::write(split_w, b"more".as_ptr().cast(), 4);
            let n = libc::read(split_r, b.as_mut_ptr().cast(), 16);
            (
                first,
                String::from_utf8_lossy(&b[..n.max(0) as usize]).into_owned(),
            )
        };
        c.check(
            "FIFO: its writing end at a lower number than its reading end, its bytes waiting",
            split.0 == "split" && split.1 == "more",
            format!("{split:?}"),
        );
        c.check(
            "FIFO: an empty one, still empty",
            empty_flags & libc::O_ACCMODE == libc::O_RDWR && queued < 0,
            format!("flags {empty_flags:#x}, read {queued}"),
        );
        // What the FIFO's descriptor writes, a new open of its name reads: one FIFO.
        let mut got = [0u8; 4];
        // SAFETY: writes and reads of our own descriptors into and from locals.
        let (same_fifo, flags) = unsafe {
            let w = libc::write(fifo, b"fifo".as_ptr().cast(), 4);
            let r = libc::open(fifo_c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
            let n = libc::read(r, got.as_mut_ptr().cast(), 4);
            libc::close(r);
            (
                w == 4 && n == 4 && &got == b"fifo",
                libc::fcntl(fifo, libc::F_GETFL),
            )
        };
        // SAFETY: reads, writes and fstat of our own descriptors into locals.
        let (before, after, mode) = unsafe {
            let mut b = [0u8; 8];
            let n = libc::read(ghost_rd, b.as_mut_ptr().cast(), 8);
            let before = String::from_utf8_lossy(&b[..n.max(0) as usize]).into_owned();
            libc::write(ghost, b"again".as_ptr().cast(), 5);
            let n = libc::read(ghost_rd, b.as_mut_ptr().cast(), 8);
            let after = String::from_utf8_lossy(&b[..n.max(0) as usize]).into_owned();
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(ghost_rd, &mut st);
            (before, after, st.st_mode)
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{ghost_rd}")).unwrap_or_default();
        c.check(
            "FIFO removed while open: its bytes, one buffer for its descriptors, its mode, still removed",
            before == "boo"
                && after == "again"
                && mode & libc::S_IFMT == libc::S_IFIFO
                && mode & 0o7777 == 0o662
                && link.to_string_lossy().ends_with("ghost.fifo (deleted)")
                && !dir.join("ghost.fifo").exists(),
            format!("{before:?} {after:?} mode {mode:o} {link:?}"),
        );
        c.check(
            "FIFO opened again by its name, the same FIFO, with its flags",
            same_fifo && flags & libc::O_ACCMODE == libc::O_RDWR && flags & libc::O_NONBLOCK != 0,
            format!("flags {flags:#x}, read {got:?}"),
        );
        c.check(
            "edge-triggered epoll: a taken edge stays taken, a pending one pending, a fired one-shot disarmed",
            seen == [vec![2], vec![1]],
            format!("{seen:?}"),
        );
    }
    // SAFETY: reads, writes and waits on our own descriptors into locals.
    let (file_shared, ev_shared, ep_shared) = unsafe {
        let mut b = [0u8; 2];
        libc::read(file_dup, b.as_mut_ptr().cast(), 2);
        let file_shared = b == *b"56";
        // The dup read 2 bytes: the reader goes on from 7 (checked below).
        let one = 1u64;
        libc::write(ev, (&one as *const u64).cast(), 8);
        let mut got = 0u64;
        let n = libc::read(ev_dup, (&mut got as *mut u64).cast(), 8);
        let ev_shared = n == 8 && got == 1;
        libc::write(ev, (&one as *const u64).cast(), 8);
        let mut out = libc::epoll_event { events: 0, u64: 0 };
        let ready = libc::epoll_wait(ep_dup, &mut out, 1, 0);
        let data = out.u64;
        let ep_shared = ready == 1 && data == 7 && ep != ep_dup;
        (
            file_shared && libc::lseek(reader.as_raw_fd(), 0, libc::SEEK_CUR) == 7,
            ev_shared,
            ep_shared,
        )
    };
    c.check(
        "dup of a file: one offset",
        file_shared,
        "the duplicate's read did not move the original",
    );
    c.check("dup of an eventfd: one counter", ev_shared, "");
    c.check("dup of an epoll instance: one interest list", ep_shared, "");
    // Back where the checks below expect the reader.
    reader.seek(SeekFrom::Start(5)).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    c.check("file offset", rest == "56789abcdefghij", &rest);
    log.write_all(b"after\n").unwrap();
    let text = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    c.check(
        "append mode",
        text == "before\nafter\n",
        format!("{text:?}"),
    );
    c.check(
        "directory",
        dirfd.metadata().unwrap().ino() == dir_ino,
        "different directory",
    );
    let mut buf = [0u8; 100];
    let got = pr.read(&mut buf).unwrap();
    c.check(
        "pipe contents",
        got == 100 && buf.iter().all(|&b| b == 42),
        got,
    );
    pw.write_all(b"x").unwrap();
    let got = pr.read(&mut buf[..1]).unwrap();
    c.check("pipe works", got == 1 && buf[0] == b'x', got);
    let mut lone = lone;
    let mut left = Vec::new();
    let lone_read = lone.read_to_end(&mut left);
    c.check(
        "FIFO removed while open, its writer gone: its bytes, then end of file",
        lone_read.is_ok() && left == b"bye",
        format!("{lone_read:?} {left:?}"),
    );
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&lone_empty),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: a poll of our own descriptor that does not wait.
    unsafe { libc::poll(&mut p, 1, 0) };
    let mut lone_empty = lone_empty;
    let empty_read = lone_empty.read(&mut buf);
    c.check(
        "FIFO removed while open, empty, its writer gone: end of file, and poll says so",
        p.revents & libc::POLLHUP != 0 && matches!(empty_read, Ok(0)),
        format!("revents {:#x}, read {empty_read:?}", p.revents),
    );
    let mut text = String::new();
    let mut head = [0u8; 4];
    let jar_read = std::os::unix::fs::FileExt::read_at(&jar, &mut head, 0);
    c.check(
        "zip archive",
        jar_read.is_ok() && head == *b"PK\x03\x04",
        format!("{jar_read:?}"),
    );
    let read_named = named.read_to_string(&mut text);
    c.check(
        "a file named '... (deleted)' is an ordinary file",
        read_named.is_ok() && text == "still here",
        format!("{read_named:?} {text:?}"),
    );
    let mut rest = Vec::new();
    let read = widowed_r.read_to_end(&mut rest);
    c.check(
        "pipe whose writer is gone: its bytes, then end of file",
        read.is_ok() && rest == b"last output",
        format!("{read:?} {rest:?}"),
    );
    // SAFETY: SIGPIPE ignored for the probe (the process has no handler of its own for it), a
    // write of one byte from a local, a poll of our own descriptor.
    let (wrote, errno, revents) = unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let w = libc::write(orphaned_w, b"x".as_ptr().cast(), 1);
        let errno = std::io::Error::last_os_error().raw_os_error();
        let mut p = libc::pollfd {
            fd: orphaned_w,
            events: libc::POLLOUT,
            revents: 0,
        };
        libc::poll(&mut p, 1, 0);
        (w, errno, p.revents)
    };
    c.check(
        "pipe whose reader is gone: EPIPE, and poll says POLLERR",
        wrote == -1 && errno == Some(libc::EPIPE) && revents & libc::POLLERR != 0,
        format!("{wrote} {errno:?} {revents:#x}"),
    );
    c.check(
        "fd numbers",
        pr.as_raw_fd() == fds[0] && pw.as_raw_fd() == fds[1],
        "moved",
    );
    // SAFETY: F_GETPIPE_SZ has no memory effects.
    let size = unsafe { libc::fcntl(big[1], libc::F_GETPIPE_SZ) };
    c.check("pipe capacity", size == 1 << 20, size);
    c.check(
        "pipe in packet mode",
        fl(big[1]) & libc::O_DIRECT != 0,
        fl(big[1]),
    );
    c.check(
        "pipe opened twice: two descriptions, their own flags",
        fl(big[0]) & libc::O_NONBLOCK == 0 && fl(second) & libc::O_NONBLOCK != 0,
        format!("{:#x} {:#x}", fl(big[0]), fl(second)),
    );
    // SAFETY: a one-byte write and read on our own pipe.
    let shared = unsafe {
        libc::write(big[1], b"p".as_ptr().cast(), 1);
        let mut b = 0u8;
        libc::read(second, (&mut b as *mut u8).cast(), 1) == 1 && b == b'p'
    };
    c.check("pipe opened twice: one pipe", shared, "");
    c.check(
        "O_PATH descriptor",
        fl(opath) & libc::O_PATH != 0,
        fl(opath),
    );
    let mut target = [0u8; 512];
    // SAFETY: fstat and readlinkat on our own descriptor into our own buffers.
    let (is_link, n) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(symlink_fd, &mut st);
        let n = libc::readlinkat(symlink_fd, c"".as_ptr(), target.as_mut_ptr().cast(), 512);
        (st.st_mode & libc::S_IFMT == libc::S_IFLNK, n)
    };
    let points_to = String::from_utf8_lossy(&target[..n.max(0) as usize]).into_owned();
    // SAFETY: fstat and readlinkat on our own descriptor into our own buffers.
    let (gone_is_link, gone_to) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(gone_fd, &mut st);
        let mut t = [0u8; 64];
        let n = libc::readlinkat(gone_fd, c"".as_ptr(), t.as_mut_ptr().cast(), 64);
        (
            st.st_mode & libc::S_IFMT == libc::S_IFLNK,
            String::from_utf8_lossy(&t[..n.max(0) as usize]).into_owned(),
        )
    };
    let gone_name = std::fs::read_link(format!("/proc/self/fd/{gone_fd}")).unwrap_or_default();
    c.check(
        "a symlink opened itself and removed since is that symlink, removed",
        gone_is_link
            && gone_to == "somewhere/else"
            && gone_name.to_string_lossy().ends_with("gone-link (deleted)")
            && std::fs::symlink_metadata(&gone_link).is_err(),
        format!("{gone_is_link} {gone_to:?} {gone_name:?}"),
    );
    c.check(
        "a symlink opened itself (O_PATH | O_NOFOLLOW) is that symlink",
        is_link && points_to == dir.join("data.txt").to_str().unwrap(),
        format!("{is_link} {points_to}"),
    );
    let hup = |fd: i32| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        unsafe { libc::poll(&mut p, 1, 0) };
        p.revents & libc::POLLHUP != 0
    };
    // SAFETY: closes our own write end, used nowhere else.
    unsafe { libc::close(more[1]) };
    c.check("pipe: end of file once the writer closes", hup(more[0]), "");
    drop(sb);
    c.check(
        "socket pair: end of file once the other end closes",
        hup(sa.as_raw_fd()),
        "",
    );
    c.finish();
}
