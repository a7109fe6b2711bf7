//! A process started as root that drops to another user before it warms up (a server that binds
//! its port, then gives up root): the kernel marks it not dumpable, so its own /proc files
//! belong to root (its /proc/self/mem and pagemap too). The checkpoint still works, and after restore (by that user) the process has
//! the same ids and is still not dumpable.

#[path = "common.rs"]
mod common;

const NOBODY: u32 = 65534;

/// With `one-thread`: only a second thread changes its uid (a raw system call, which glibc does
/// not broadcast): the checkpoint is refused, naming that thread.
fn one_thread() -> ! {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: setresuid for this thread only.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) };
        tx.send((r, thaw::sys::gettid())).unwrap();
        let _ = done_rx.recv();
    });
    let (r, tid) = rx.recv().unwrap();
    assert_eq!(r, 0, "setresuid on one thread needs root");
    let (image, _, _) = common::argv();
    match thaw::Checkpoint::to(&image).save() {
        Ok(_) => println!("unexpectedly saved"),
        Err(e) => println!("error: {e}"),
    }
    println!("thread {tid}");
    done_tx.send(()).unwrap();
    t.join().unwrap();
    std::process::exit(0);
}

fn main() {
    if common::argv().2.iter().any(|a| a == "one-thread") {
        one_thread();
    }
    // SAFETY: plain credential calls; glibc applies them to every thread.
    let r = unsafe {
        libc::setgroups(0, std::ptr::null())
            | libc::setresgid(NOBODY, NOBODY, NOBODY)
            | libc::setresuid(NOBODY, NOBODY, NOBODY)
    };
    assert_eq!(r, 0, "dropping to nobody needs root");
    // SAFETY: a getter.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    let heap = vec![7u8; 1 << 20];
    // Shared memory without a descriptor, read through /proc/self/mem (root's too).
    // SAFETY: a fresh mapping at an address the kernel chooses, never unmapped.
    let shared = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            65536,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::slice::from_raw_parts_mut(p.cast::<u8>(), 65536)
    };
    shared[4096..4100].copy_from_slice(b"shrd");
    common::checkpoint();
    let mut c = common::Checks::default();
    // SAFETY: getters.
    let (uid, gid, now) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::prctl(libc::PR_GET_DUMPABLE),
        )
    };
    c.check(
        "ids",
        uid == NOBODY && gid == NOBODY,
        format!("{uid}/{gid}"),
    );
    c.check(
        "dumpable as before",
        now == dumpable,
        format!("{now} (was {dumpable})"),
    );
    c.check("memory", heap.iter().all(|&b| b == 7), "");
    c.check(
        "shared memory without a descriptor",
        &shared[4096..4100] == b"shrd",
        "",
    );
    c.finish();
}
