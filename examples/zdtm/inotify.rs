//! inotify: an instance watching a directory and a file, with watch descriptors 2 and 3 (watch 1
//! was removed), and an instance without watches. After restore the watches have their numbers
//! and masks, report what happens (a file created in the directory, the file written), and no
//! event is there that did not happen. `EXTRA` is a scratch directory. With `queued`, an event
//! is left unread at the checkpoint: refused, naming the descriptor. With `late`, another thread
//! adds a watch once the checkpoint has scanned the descriptors and before it stops the threads
//! (the SDK's test hook, as the JDK's WatchService poller or a watchdog observer does when told
//! to watch another directory): after restore the watch reports its file (the checkpoint starts
//! again rather than save the watches it scanned).

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn init(flags: i32) -> OwnedFd {
    // SAFETY: a new descriptor, ours.
    let fd = unsafe { libc::inotify_init1(flags) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn watch(fd: &OwnedFd, path: &std::path::Path, mask: u32) -> i32 {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid path string.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), p.as_ptr(), mask) };
    assert!(wd > 0, "inotify_add_watch");
    wd
}

/// (wd, mask, name) of each queued event.
fn events(fd: &OwnedFd) -> Vec<(i32, u32, String)> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        // SAFETY: reads into our own buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        let mut at = 0usize;
        while at + 16 <= n as usize {
            let word = |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap());
            let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
            let name = String::from_utf8_lossy(&buf[at + 16..at + 16 + len])
                .trim_end_matches('\0')
                .to_owned();
            out.push((wd, mask, name));
            at += 16 + len;
        }
    }
}

fn late(dir: &std::path::Path) {
    let a = init(libc::IN_NONBLOCK);
    let file = dir.join("late");
    std::fs::write(&file, b"x").unwrap();
    let (raw, path) = (
        a.as_raw_fd(),
        std::ffi::CString::new(file.to_str().unwrap()).unwrap(),
    );
    common::during_first_scan("d", move |_| {
        // SAFETY: a valid path string; our own instance.
        let wd = unsafe { libc::inotify_add_watch(raw, path.as_ptr(), libc::IN_MODIFY) };
        assert!(wd > 0, "inotify_add_watch");
    });
    common::checkpoint();
    let mut c = common::Checks::default();
    std::fs::write(&file, b"y").unwrap();
    let got = events(&a);
    c.check(
        "a watch added while the checkpoint ran reports its file",
        got == [(1, libc::IN_MODIFY, String::new())],
        format!("{got:?}"),
    );
    c.finish();
}

fn main() {
    let (_, _, extra) = common::argv();
    if extra.iter().any(|x| x == "late") {
        return late(std::path::Path::new(&extra[0]));
    }
    let dir = std::path::PathBuf::from(&extra[0]);
    let file = dir.join("watched");
    std::fs::write(&file, b"x").unwrap();
    let a = init(libc::IN_NONBLOCK);
    let first = watch(&a, &dir, libc::IN_CREATE | libc::IN_DELETE);
    let on_file = watch(&a, &file, libc::IN_MODIFY);
    // SAFETY: removes our own watch.
    unsafe { libc::inotify_rm_watch(a.as_raw_fd(), first) };
    let on_dir = watch(&a, &dir, libc::IN_CREATE);
    let _ = events(&a); // the removal's IN_IGNORED
    let empty = init(0);
    if extra.iter().any(|x| x == "queued") {
        std::fs::write(dir.join("new"), b"").unwrap();
        match thaw::Checkpoint::to(common::argv().0).save() {
            Ok(_) => println!("unexpectedly saved"),
            Err(e) => println!("error: {e}"),
        }
        return;
    }
    let info = |fd: &OwnedFd| {
        let text =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
        let mut w: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("inotify "))
            .map(|l| {
                l.split_whitespace()
                    .filter(|x| x.starts_with("wd:") || x.starts_with("mask:"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        w.sort();
        w
    };
    let before = (info(&a), info(&empty));
    common::checkpoint();
    let mut c = common::Checks::default();
    let after = (info(&a), info(&empty));
    c.check(
        "watch numbers and masks",
        after == before && (on_file, on_dir) == (2, 3),
        format!("{after:?} (was {before:?})"),
    );
    c.check("no event that did not happen", events(&a).is_empty(), "");
    std::fs::write(dir.join("created"), b"").unwrap();
    std::fs::write(&file, b"y").unwrap();
    let got = events(&a);
    c.check(
        "events after restore",
        got.contains(&(on_dir, libc::IN_CREATE, "created".into()))
            && got.contains(&(on_file, libc::IN_MODIFY, String::new())),
        format!("{got:?}"),
    );
    // SAFETY: reads our own descriptor's flags.
    let flags = unsafe { libc::fcntl(empty.as_raw_fd(), libc::F_GETFL) };
    c.check(
        "an instance without watches, blocking",
        flags & libc::O_NONBLOCK == 0,
        flags,
    );
    c.finish();
}
