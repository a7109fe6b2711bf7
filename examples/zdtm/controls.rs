//! Per-thread and per-descriptor controls a program sets and reads back: CPU affinity (one
//! thread bound to one CPU, the main thread not bound), I/O priorities, signal-driven I/O (a
//! pipe with O_ASYNC whose signal, set by F_SETSIG, goes to one thread by F_SETOWN_EX), socket
//! options of a TCP listener (keep-alive and its idle time, Nagle, deferred accept; inherited by
//! the connections it accepts) and of a socket pair (a receive timeout), and session leadership
//! (the program called setsid), the worker's machine-check kill policy and NUMA policy, and a
//! mapping's NUMA policy (mbind), and mlockall(MCL_FUTURE | MCL_ONFAULT). After restore each
//! is as it was.
//!
//! `PROG IMAGE KEY foreign-owner`: a pipe's SIGIO goes to the parent process; `mqueue`: a POSIX
//! message queue is open; `unshare-fs`: a thread has its own working directory. Each is refused at checkpoint, naming what (exit 3).

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::sync::mpsc;

const IOPRIO_WHO_PROCESS: i64 = 1;
const IDLE: i64 = 3 << 13;
const BEST_EFFORT_7: i64 = (2 << 13) | 7;
const F_SETSIG: i32 = 10;
const F_SETOWN_EX: i32 = 15;
const F_OWNER_TID: i32 = 0;
/// si_code of a signal-driven I/O signal for input.
const POLL_IN: i32 = 1;

fn ioprio_get() -> i64 {
    // SAFETY: plain integer arguments.
    unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) }
}

fn ioprio_set(v: i64) {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, v) };
    assert_eq!(r, 0, "ioprio_set");
}

fn affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is ours and sized.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    // SAFETY: CPU_ISSET reads the set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

fn bind_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is ours and sized.
    let r = unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set)
    };
    assert_eq!(r, 0, "sched_setaffinity");
}

const MPOL_PREFERRED: i64 = 1;
const MPOL_INTERLEAVE: i32 = 3;

/// The thread's NUMA policy, or the policy of the mapping at `addr`: (mode, nodes 0-63).
fn mempolicy(addr: Option<*mut libc::c_void>) -> (i32, u64) {
    let mut mode = -1i32;
    let mut nodes = [0u64; 16];
    let (at, flags) = addr.map_or((std::ptr::null_mut(), 0), |a| (a, 2 /* MPOL_F_ADDR */));
    // SAFETY: outputs of our own, 1024 bits of nodes.
    unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode,
            nodes.as_mut_ptr(),
            1024,
            at,
            flags,
        )
    };
    (mode, nodes[0])
}

fn int_opt(fd: i32, level: i32, opt: i32) -> i32 {
    thaw::sys::getsockopt_int(fd, level, opt).unwrap_or(-1)
}

/// What the second thread reports after restore.
struct Worker {
    slack: i32,
    no_new_privs: i32,
    affinity: Vec<usize>,
    ioprio: i64,
    mce: i32,
    numa: (i32, u64),
    /// The fd and code of the signal-driven I/O signal it took.
    signal: Option<(i32, i32)>,
}

fn main() {
    let extra = common::argv().2;
    let (r, w) = thaw::sys::pipe_cloexec().unwrap();
    if extra.iter().any(|a| a == "foreign-owner") {
        common::refusal(|| {
            // SAFETY: fcntl on our own pipe.
            unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETOWN, libc::getppid()) };
        });
    }
    if extra.iter().any(|a| a == "thread-seccomp") {
        common::refusal(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                // This thread's alone (no TSYNC).
                tx.send(common::allow_everything_filter()).unwrap();
                std::thread::park();
            });
            assert_eq!(rx.recv().unwrap(), 0, "seccomp");
        });
    }
    // A setting an image holds once for every thread, changed by one thread alone.
    for (mode, set) in [
        ("thread-personality", 0),
        ("thread-keepcaps", 1),
        ("thread-tsc", 2),
        ("thread-exec-restrict", 3),
    ] {
        if extra.iter().any(|a| a == mode) {
            common::refusal(|| {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    // SAFETY: each changes this thread's own setting only.
                    let r = unsafe {
                        match set {
                            0 => libc::personality(0x0040_0000), // READ_IMPLIES_EXEC
                            1 => libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
                            // SECBIT_EXEC_RESTRICT_FILE (Linux 6.14), any thread may set it.
                            3 => libc::prctl(libc::PR_SET_SECUREBITS, 1 << 8, 0, 0, 0),
                            _ => libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0),
                        }
                    };
                    tx.send(r).unwrap();
                    std::thread::park();
                });
                assert!(rx.recv().unwrap() >= 0, "{mode}");
            });
        }
    }
    // Keyrings of its own: the process's, a thread's (one that blocks every signal too).
    for mode in [
        "process-keyring",
        "thread-keyring",
        "blocked-thread-keyring",
    ] {
        if extra.iter().any(|a| a == mode) {
            common::refusal(|| {
                let make = |which: i64| {
                    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, which, create); no pointers.
                    let r = unsafe { libc::syscall(libc::SYS_keyctl, 0, which, 1) };
                    assert!(r > 0, "keyctl: {}", std::io::Error::last_os_error());
                };
                if mode == "process-keyring" {
                    make(-2);
                    return;
                }
                let blocked = mode.starts_with("blocked");
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    if blocked {
                        // SAFETY: a full signal set of ours, applied to this thread.
                        unsafe {
                            let mut all: libc::sigset_t = std::mem::zeroed();
                            libc::sigfillset(&mut all);
                            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                        }
                    }
                    make(-1);
                    tx.send(()).unwrap();
                    std::thread::park();
                });
                rx.recv().unwrap();
            });
        }
    }
    // A local descriptor table (Wine's 16- and 32-bit code): a restored process would have none.
    if extra.iter().any(|a| a == "ldt") {
        common::refusal(|| {
            // struct user_desc: entry 0, base 0, limit 0xfffff, 32-bit, data, page-granular.
            let desc: [u32; 4] = [0, 0, 0xfffff, 1 | 1 << 4 | 1 << 6];
            // SAFETY: modify_ldt(1: write) with a valid 16-byte struct user_desc.
            let r = unsafe { libc::syscall(libc::SYS_modify_ldt, 1, desc.as_ptr(), 16) };
            assert_eq!(r, 0, "modify_ldt: {}", std::io::Error::last_os_error());
        });
    }
    if extra.iter().any(|a| a == "epoll-busy-poll") {
        common::refusal(|| {
            // SAFETY: a fresh epoll instance of our own, kept open; EPIOCSPARAMS reads an 8-byte
            // struct epoll_params: 20 us, budget 8 (at most NAPI's 64 needs no privilege).
            unsafe {
                let ep = libc::epoll_create1(0);
                assert!(ep >= 0, "epoll_create1");
                let params: [u8; 8] = [20, 0, 0, 0, 8, 0, 0, 0];
                let r = libc::ioctl(ep, 0x4008_8A01, params.as_ptr());
                assert_eq!(r, 0, "EPIOCSPARAMS: {}", std::io::Error::last_os_error());
            }
        });
    }
    // The checkpointing thread itself would fault in the checkpoint: refused before anything.
    if extra.iter().any(|a| a == "caller-tsc") {
        common::refusal(|| {
            // SAFETY: this thread's own setting.
            let r = unsafe { libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0) };
            assert_eq!(r, 0, "PR_SET_TSC");
        });
    }
    if extra.iter().any(|a| a == "unshare-fs") {
        common::refusal(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                // SAFETY: unshare affects this thread only.
                let r = unsafe { libc::unshare(libc::CLONE_FS) };
                tx.send(r).unwrap();
                std::thread::park();
            });
            assert_eq!(rx.recv().unwrap(), 0, "unshare");
        });
    }
    // `fifo-writer PATH`: holds the FIFO at PATH open for writing alone, says "ready", and once
    // a line comes on stdin (a writer elsewhere waits in open until a reader comes by then)
    // checkpoints, going on after: the checkpoint must not open a reading end of its own there
    // (nothing waits in it to copy).
    if let Some(i) = extra.iter().position(|a| a == "fifo-writer") {
        let path = std::ffi::CString::new(extra[i + 1].as_str()).unwrap();
        // SAFETY: opens of our FIFO by its NUL-terminated path; the reader goes at once.
        let w = unsafe {
            let r = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
            let w = libc::open(path.as_ptr(), libc::O_WRONLY);
            libc::close(r);
            w
        };
        assert!(w >= 0);
        // The test now has its writer wait in open(), then says go.
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let (_, key, _) = common::argv();
        let mut cp = thaw::Checkpoint::to(common::argv().0).leave_children_out(true);
        if let Some(k) = key {
            cp = cp.sign_with(k);
        }
        match cp.save() {
            Ok(thaw::Outcome::Saved(_)) => println!("saved"),
            other => println!("FAIL checkpoint: {other:?}"),
        }
        std::process::exit(0);
    }
    if extra.iter().any(|a| a == "dumpable-root") {
        common::refusal(|| {
            // A credential change makes the process dumpable as fs.suid_dumpable says (the test
            // sets it to 2: root only).
            // SAFETY: setresgid to another group and back, as root.
            unsafe {
                assert_eq!(libc::setresgid(0, 1, 0), 0);
                assert_eq!(libc::setresgid(0, 0, 0), 0);
            }
            // SAFETY: a prctl query.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, 2);
        });
    }
    if extra.iter().any(|a| a == "mqueue") {
        common::refusal(|| {
            let name =
                std::ffi::CString::new(format!("/thaw-zdtm-{}", std::process::id())).unwrap();
            // SAFETY: a named queue with default attributes, unlinked at once (the descriptor stays).
            unsafe {
                let q = libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600, 0usize);
                assert!(q >= 0, "mq_open");
                libc::mq_unlink(name.as_ptr());
            }
        });
    }
    // SAFETY: setsid has no preconditions (we are not a process group leader: we were spawned
    // into our parent's group).
    let sid = unsafe { libc::setsid() };
    assert!(sid > 0, "setsid");
    let online = affinity();
    // A mapping interleaved over node 0 (mbind).
    // SAFETY: a fresh private anonymous mapping, and a policy for it.
    let numa_map = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            1 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let node0 = 1u64;
        assert_eq!(
            libc::syscall(libc::SYS_mbind, p, 1 << 20, MPOL_INTERLEAVE, &node0, 65, 0),
            0
        );
        *(p as *mut u8) = 1;
        p
    };
    let last = *online.last().unwrap();
    ioprio_set(IDLE);

    // The worker: bound to the last CPU, best-effort priority 7, owner of the pipe's signal,
    // which it blocks and waits for after restore.
    let sig = libc::SIGRTMIN() + 2;
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        bind_to(last);
        ioprio_set(BEST_EFFORT_7);
        // SAFETY: prctl with plain arguments (timer slack and no_new_privs are per thread).
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 777_777, 0, 0, 0);
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        // SAFETY: prctl and set_mempolicy with plain arguments and a mask of our own.
        unsafe {
            assert_eq!(
                libc::prctl(
                    libc::PR_MCE_KILL,
                    libc::PR_MCE_KILL_SET,
                    libc::PR_MCE_KILL_EARLY,
                    0,
                    0
                ),
                0
            );
            let node0 = 1u64;
            assert_eq!(
                libc::syscall(libc::SYS_set_mempolicy, MPOL_PREFERRED, &node0, 65),
                0
            );
        }
        // SAFETY: a zeroed sigset_t is a valid (empty) set.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a signal set of our own, blocking one signal in this thread.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        tid_tx.send(thaw::sys::gettid()).unwrap();
        go_rx.recv().unwrap();
        let report = |signal| Worker {
            // SAFETY: getters without pointers.
            slack: unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) },
            // SAFETY: as above.
            no_new_privs: unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) },
            affinity: affinity(),
            ioprio: ioprio_get(),
            // SAFETY: a getter without pointers.
            mce: unsafe { libc::prctl(libc::PR_MCE_KILL_GET, 0, 0, 0, 0) },
            numa: mempolicy(None),
            signal,
        };
        go_rx.recv().unwrap();
        // SAFETY: a zeroed siginfo_t is plain data.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ts = libc::timespec {
            tv_sec: 20,
            tv_nsec: 0,
        };
        // SAFETY: waits for the blocked signal with a generous timeout; `info` is ours.
        let got = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
        let signal = (got == sig).then(|| {
            // SAFETY: a SIGIO-style siginfo: a 16-byte header, then long si_band and int si_fd.
            let fields = unsafe { *(std::ptr::addr_of!(info) as *const [i32; 7]) };
            (fields[6], info.si_code)
        });
        done_tx.send(report(signal)).unwrap();
    });
    // Before the worker learns to go on, mark the pipe: O_ASYNC, the signal, the worker as owner.
    let tid = tid_rx.recv().unwrap();
    let owner = [F_OWNER_TID, tid];
    let rfd = r.as_raw_fd();
    // SAFETY: fcntl on our own pipe with a valid f_owner_ex.
    unsafe {
        assert_eq!(libc::fcntl(rfd, F_SETOWN_EX, owner.as_ptr()), 0);
        assert_eq!(libc::fcntl(rfd, F_SETSIG, sig), 0);
        let fl = libc::fcntl(rfd, libc::F_GETFL);
        assert_eq!(libc::fcntl(rfd, libc::F_SETFL, fl | libc::O_ASYNC), 0);
    }

    // A TCP listener with options, and a socket pair with a receive timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lfd = listener.as_raw_fd();
    for (level, opt, v) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 77),
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 5),
    ] {
        thaw::sys::setsockopt_int(lfd, level, opt, v).unwrap();
    }
    let defer = int_opt(lfd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_read_timeout(Some(std::time::Duration::from_millis(250)))
        .unwrap();
    // As the kernel keeps it (in ticks).
    let timeout = a.read_timeout().unwrap();

    // Every mapping made from now on is locked when first touched (MCL_ONFAULT: nothing else).
    // SAFETY: mlockall with flags only.
    let locked = unsafe { libc::mlockall(libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    assert_eq!(locked, 0, "mlockall");

    let _args = common::checkpoint();
    let mut c = common::Checks::default();
    // SAFETY: getters without pointers.
    let (pid, sid) = unsafe { (libc::getpid(), libc::getsid(0)) };
    c.check(
        "session leader again",
        sid == pid,
        format!("sid {sid}, pid {pid}"),
    );
    c.check(
        "main thread not bound",
        affinity() == online,
        format!("{:?}, online {online:?}", affinity()),
    );
    c.check(
        "main thread's I/O priority",
        ioprio_get() == IDLE,
        format!("{:#x}", ioprio_get()),
    );
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    // The worker waits in sigtimedwait by now or soon; a byte in the pipe signals it.
    // SAFETY: a one-byte write to our own pipe.
    unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    let rep = done_rx.recv().unwrap();
    worker.join().unwrap();
    c.check(
        "worker bound to its CPU",
        rep.affinity == [last],
        format!("{:?}", rep.affinity),
    );
    c.check(
        "worker's I/O priority",
        rep.ioprio == BEST_EFFORT_7,
        format!("{:#x}", rep.ioprio),
    );
    // SAFETY: a getter without pointers.
    let main_nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    c.check(
        "worker's no_new_privs, and only the worker's",
        rep.no_new_privs == 1 && main_nnp == 0,
        format!("worker {}, main {main_nnp}", rep.no_new_privs),
    );
    c.check("worker's timer slack", rep.slack == 777_777, rep.slack);
    c.check(
        "worker's machine-check kill policy",
        rep.mce == libc::PR_MCE_KILL_EARLY,
        rep.mce,
    );
    c.check(
        "worker's NUMA policy",
        rep.numa == (MPOL_PREFERRED as i32, 1),
        format!("{:?}", rep.numa),
    );
    let m = mempolicy(Some(numa_map));
    c.check(
        "mapping's NUMA policy",
        m == (MPOL_INTERLEAVE, 1),
        format!("{m:?}"),
    );
    c.check(
        "O_ASYNC signal reaches its owner thread, naming the pipe",
        rep.signal == Some((rfd, POLL_IN)),
        format!("{:?}", rep.signal),
    );
    let opts = [
        int_opt(lfd, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        int_opt(lfd, libc::IPPROTO_TCP, libc::TCP_NODELAY),
        int_opt(lfd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        int_opt(lfd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT),
    ];
    c.check(
        "listener's options",
        opts == [1, 1, 77, defer],
        format!("{opts:?}"),
    );
    let port = listener.local_addr().unwrap().port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Deferred accept: the connection is accepted once data arrives.
    std::io::Write::write_all(&mut client, b"hi").unwrap();
    let (conn, _) = listener.accept().unwrap();
    let cfd = conn.as_raw_fd();
    c.check(
        "an accepted connection inherits keep-alive",
        int_opt(cfd, libc::SOL_SOCKET, libc::SO_KEEPALIVE) == 1
            && int_opt(cfd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) == 77,
        "",
    );
    // SAFETY: a fresh private anonymous mapping, only looked at.
    let fresh = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as u64;
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let flags = smaps
        .split('\n')
        .skip_while(|l| !l.starts_with(&format!("{fresh:x}-")))
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap_or("")
        .to_owned();
    c.check(
        "mlockall(MCL_FUTURE | MCL_ONFAULT) still in force",
        flags.split_whitespace().any(|f| f == "lf"),
        format!("a new mapping's flags: {flags}"),
    );
    c.check(
        "socket pair's receive timeout",
        a.read_timeout().unwrap() == timeout && timeout.is_some(),
        format!("{:?}, was {timeout:?}", a.read_timeout()),
    );
    c.finish();
}
