//! An event loop watching its standard input (Node's `process.stdin`, an asyncio reader): the
//! epoll registration of fd 0 watches the standard input of whoever restores the process. After
//! restore it waits for a line there and prints it. With `et` the registration is edge-triggered
//! (Go's netpoller's way): input the caller had written before the restore is an edge it
//! reports. With `dups` two duplicates of the standard input are registered instead (Bun
//! registers its duplicates of its standard output and error): both watch the caller's.

#[path = "common.rs"]
mod common;

/// Where the edge-triggered variant keeps its first standard input's writing end.
const KEPT_WRITER: i32 = 40;

/// With `dups`: the registrations are of two duplicates of the standard input, as Bun
/// registers its duplicates of its standard output and error.
const DUPS: [i32; 2] = [41, 42];

/// `own-mapped`: started without a standard input (`<&-`), the program opens a file of its own,
/// which gets fd 0, and maps it, as HotSpot opens and maps its class image, `lib/modules`: after
/// restore fd 0 is still that file, at its offset, not the caller's standard input.
/// `own-readonly`: started without a standard error, it opens its file read-only as fd 2 (no
/// standard error is open for reading only): after restore fd 2 is that file.
fn own(mapped: bool) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let path = format!("{}.data", common::argv().0);
    std::fs::write(&path, b"the program's own file").unwrap();
    let c = std::ffi::CString::new(path).unwrap();
    let at = if mapped { 0 } else { 2 };
    // SAFETY: closes a standard descriptor, then opens a file with a valid path: it gets that
    // number.
    let fd = unsafe {
        libc::close(at);
        libc::open(c.as_ptr(), libc::O_RDONLY)
    };
    assert_eq!(fd, at);
    if mapped {
        // SAFETY: a new private read-only mapping of our file; never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                0,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
    }
    // SAFETY: the descriptor is ours now, read through a File that is not dropped (it stays).
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(at) });
    let mut head = [0u8; 4];
    f.read_exact(&mut head).unwrap();
    common::checkpoint();
    let mut rest = String::new();
    let _ = f.read_to_string(&mut rest);
    let mut c = common::Checks::default();
    c.check(
        "a standard descriptor opened by the program is its file",
        rest == "program's own file",
        format!("{rest:?}"),
    );
    c.finish();
}

/// `cloexec`: the standard descriptors marked close-on-exec, as Node marks those it was started
/// with, its output redirected to a file: after restore it writes to the caller's output.
fn cloexec() {
    for s in 0..=2 {
        // SAFETY: sets a flag on a descriptor we were started with.
        unsafe { libc::fcntl(s, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    common::checkpoint();
    println!("ok standard output is the caller's");
}

fn main() {
    if common::argv().2.iter().any(|a| a == "cloexec") {
        return cloexec();
    }
    if common::argv().2.iter().any(|a| a == "own-readonly") {
        return own(false);
    }
    if common::argv().2.iter().any(|a| a == "own-mapped") {
        return own(true);
    }
    let et = common::argv().2.iter().any(|a| a == "et");
    let dups = common::argv().2.iter().any(|a| a == "dups");
    // SAFETY: plain descriptor calls on descriptors this program owns.
    let ep = unsafe {
        // Whatever started the first life gave it /dev/null, which epoll cannot watch: a pipe's
        // reading end stands in as its standard input.
        let mut p = [0; 2];
        assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
        libc::dup2(p[0], 0);
        libc::close(p[0]);
        // (Edge-triggered: its writing end kept, so that it has not hung up, and the
        // registration has no event waiting at the checkpoint.)
        if et {
            libc::dup2(p[1], KEPT_WRITER);
        }
        libc::close(p[1]);
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32 | if et { libc::EPOLLET as u32 } else { 0 },
            u64: 7,
        };
        if dups {
            for d in DUPS {
                libc::dup2(0, d);
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: d as u64,
                };
                assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, d, &mut ev), 0);
            }
        } else {
            assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, 0, &mut ev), 0);
        }
        ep
    };
    if et {
        // The kept writing end is left out (its reader is the caller's at restore).
        let (image, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(&image)
            .exit_after_save(true)
            .fd(KEPT_WRITER, thaw::FdAction::Drop);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        if let Err(e) = cp.save() {
            eprintln!("checkpoint failed: {e}");
            std::process::exit(2);
        }
    } else {
        common::checkpoint();
    }
    let mut c = common::Checks::default();
    if dups {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: waiting on this program's epoll instance (bounded, as below).
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 60_000) };
        let mut got: Vec<u64> = evs[..n.max(0) as usize].iter().map(|e| e.u64).collect();
        got.sort_unstable();
        c.check(
            "epoll watches two duplicates of the caller's standard input",
            got == DUPS.map(|d| d as u64),
            format!("events {got:?}"),
        );
        c.finish();
    }
    // SAFETY: waiting on this program's epoll instance, reading its standard input.
    let (n, data, line) = unsafe {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // (A bound on the wait, so that a lost registration fails instead of hanging.)
        let n = libc::epoll_wait(ep, &mut ev, 1, 60_000);
        let mut buf = [0u8; 64];
        let got = libc::read(0, buf.as_mut_ptr().cast(), buf.len());
        let line = String::from_utf8_lossy(&buf[..got.max(0) as usize]).into_owned();
        (n, ev.u64, line)
    };
    c.check(
        "epoll watches the caller's standard input",
        n == 1 && data == 7 && line == "ping\n",
        format!("{n} event(s), data {data}, read {line:?}"),
    );
    c.finish();
}
