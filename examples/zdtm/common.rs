//! Shared by the zdtm-style programs: checkpoint from argv, report checks.
//!
//! Usage of every program: `PROG IMAGE [KEY] [EXTRA]`. The first life sets up its state,
//! checkpoints to IMAGE and exits 0 once the image is written (it prints `saved`). Restored by
//! `thaw run IMAGE -- ARGS...`, it checks the state and prints `ok <what>` lines, or `FAIL <what>`
//! lines and exits 1.

#![allow(dead_code)]

use std::ffi::OsString;

/// `IMAGE`, `KEY` (may be `-` for none) and the rest.
pub fn argv() -> (String, Option<String>, Vec<String>) {
    let mut a = std::env::args().skip(1);
    let image = a.next().unwrap_or_else(|| {
        eprintln!("usage: PROG IMAGE [KEY|-] [EXTRA...]");
        std::process::exit(64)
    });
    let key = a.next().filter(|k| k != "-");
    (image, key, a.collect())
}

/// Checkpoints; returns in the second life with the restore arguments. The first life exits 0.
pub fn checkpoint() -> Vec<OsString> {
    restored().args().to_vec()
}

/// Checkpoints; returns in the second life with what the launcher passed. The first life exits 0.
pub fn restored() -> thaw::Restored {
    let (image, key, _) = argv();
    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Restored(r)) => r,
        Ok(thaw::Outcome::Saved(_)) => unreachable!("exit_after_save exits"),
        Err(e) => {
            eprintln!("checkpoint failed: {e}");
            std::process::exit(2);
        }
    }
}

/// Checkpoints without exiting after saving (the process goes on, as a runtime's does); returns
/// in the second life with what the launcher passed. The first life exits 0 once it has saved.
pub fn restored_going_on() -> thaw::Restored {
    let (image, key, _) = argv();
    let mut cp = thaw::Checkpoint::to(&image);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Restored(r)) => r,
        Ok(thaw::Outcome::Saved(_)) => std::process::exit(0),
        Err(e) => {
            eprintln!("checkpoint failed: {e}");
            std::process::exit(2);
        }
    }
}

/// Checkpoints again, to `next` (signed with this run's key), exiting once saved: a restored
/// program's second image; returns in the restore of that one.
pub fn save_again(
    next: impl AsRef<std::path::Path>,
) -> Result<thaw::Outcome, thaw::CheckpointError> {
    let (_, key, _) = argv();
    let mut cp = thaw::Checkpoint::to(next).exit_after_save(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    cp.save()
}

/// Sets up state thaw must refuse, checkpoints, and exits 3 printing `refused: ...` (or 1 if the
/// checkpoint was not refused).
pub fn refusal(setup: impl FnOnce()) -> ! {
    setup();
    refused(true)
}

/// Checkpoints (the process going on after it unless `exit_after_save`), and exits 3 printing
/// `refused: ...` (or 1 if the checkpoint was not refused).
pub fn refused(exit_after_save: bool) -> ! {
    let (image, key, _) = argv();
    let mut cp = thaw::Checkpoint::to(&image).exit_after_save(exit_after_save);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3)
        }
        Ok(_) => {
            println!("FAIL the checkpoint was not refused");
            std::process::exit(1)
        }
    }
}

/// Collects checks and exits 1 if any failed.
#[derive(Debug, Default)]
pub struct Checks {
    failed: bool,
}

impl Checks {
    pub fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("ok {what}");
        } else {
            println!("FAIL {what}: {detail}");
            self.failed = true;
        }
    }

    pub fn finish(self) -> ! {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(if self.failed { 1 } else { 0 })
    }
}

/// The distinct capability sets of the threads ("CapInh: … CapPrm: … CapEff: … CapAmb: …"), sorted.
pub fn thread_caps() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let tid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
            let caps: Vec<&str> = status
                .lines()
                .filter(|l| {
                    ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:", "CapBnd:"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            Some(
                caps.join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect();
    // Distinct sets: a thread just joined may still be listed while the kernel removes it
    // (with the same sets), and a thread with other sets still adds a line.
    out.sort();
    out.dedup();
    out
}

/// Arms the SDK's debug hook THAW_TEST_AFTER_SCAN with a thread of its own that runs `first`
/// once, when the first attempt of the next checkpoint has scanned the descriptors and listed
/// the threads and before it stops them (later attempts go on at once).
pub fn after_first_scan(first: impl FnOnce() + Send + 'static) {
    let mut first = Some(first);
    during_first_scan("s", move |_| {
        if let Some(f) = first.take() {
            f()
        }
    });
}

/// Arms the SDK's debug hook THAW_TEST_AFTER_SCAN at `points` (its letters, in the order the
/// checkpoint reaches them: `l` descriptors listed, `h` held, `d` described, `s` about to stop
/// the threads, `g` the threads going on from a snapshot, before it is written): a thread of
/// its own
/// runs `at` with each point's letter during the first attempt of the next checkpoint, which
/// waits meanwhile (later attempts go on at once).
pub fn during_first_scan(points: &'static str, mut at: impl FnMut(u8) + Send + 'static) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let pipe = || {
        let mut p = [0i32; 2];
        // SAFETY: room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        // SAFETY: two fresh descriptors of ours.
        unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
    };
    let (to_helper_r, to_helper_w) = pipe();
    let (from_helper_r, from_helper_w) = pipe();
    let last = *points.as_bytes().last().expect("at least one point");
    std::thread::spawn(move || {
        let mut first = true;
        loop {
            let mut poll = libc::pollfd {
                fd: to_helper_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let mut b = 0u8;
            // SAFETY: one pollfd; then one byte into a buffer of ours.
            unsafe {
                libc::poll(&mut poll, 1, -1);
                libc::read(to_helper_r.as_raw_fd(), &mut b as *mut u8 as *mut _, 1);
            }
            if first {
                at(b);
                first = b != last;
            }
            // SAFETY: one byte from a buffer of ours.
            unsafe { libc::write(from_helper_w.as_raw_fd(), b"a".as_ptr() as *const _, 1) };
        }
    });
    // SAFETY: clearing O_NONBLOCK on a descriptor of ours: the checkpoint waits for the answer.
    unsafe { libc::fcntl(from_helper_r.as_raw_fd(), libc::F_SETFL, 0) };
    std::env::set_var(
        "THAW_TEST_AFTER_SCAN",
        format!(
            "{},{},{points}",
            from_helper_r.as_raw_fd(),
            to_helper_w.as_raw_fd()
        ),
    );
    // Both ends stay open for the process's life.
    std::mem::forget((from_helper_r, to_helper_w));
}

/// Waits until thread `tid` is blocked in system call `nr` (/proc/self/task/TID/syscall).
pub fn until_blocked_in(tid: i32, nr: i64) {
    loop {
        // A thread that has ended already (a short sleep, on a machine too busy to see it
        // start) fails the program rather than keeping it waiting for ever.
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
            .unwrap_or_else(|e| panic!("thread {tid} ended before it was seen in {nr}: {e}"));
        if s.split_whitespace().next() == Some(&nr.to_string()) {
            return;
        }
        std::thread::yield_now();
    }
}

/// Installs an allow-everything seccomp filter on the calling thread (no_new_privs first, which
/// any user may set): harmless, but not restorable. The result of PR_SET_SECCOMP.
pub fn allow_everything_filter() -> i32 {
    let filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: a valid one-instruction program that outlives the call.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    }
}

/// An int socket option of descriptor `fd` (0 where it cannot be read).
pub fn sockopt(fd: std::os::fd::RawFd, level: i32, name: i32) -> i32 {
    let mut v = 0i32;
    let mut len = 4u32;
    // SAFETY: an int option, into a local of its size.
    unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut i32).cast(), &mut len) };
    v
}

/// Sets an int socket option of descriptor `fd`; false where it cannot be set.
pub fn set_sockopt(fd: std::os::fd::RawFd, level: i32, name: i32, v: i32) -> bool {
    // SAFETY: an int option, from a local of its size.
    unsafe { libc::setsockopt(fd, level, name, (&v as *const i32).cast(), 4) == 0 }
}
