//! Children: a forked worker blocked reading a pipe from us, and zombies not yet reaped (ended
//! with exit codes 7 and 0, by SIGTERM, by SIGKILL and by SIGSEGV, one of them renamed), with a
//! SIGCHLD handler counting.
//!
//! `PROG IMAGE KEY refuse`: the checkpoint must fail naming the worker alone (printed, exit 3).
//! `PROG IMAGE KEY leave`: checkpointed with live children left out; after restore the process
//! has its zombies back (same PIDs, names, ends, user and process groups — one leads its own;
//! no SIGCHLD for them again), the worker left out as a child killed by SIGKILL (its SIGCHLD
//! delivered), and no other child (`waitpid` fails with ECHILD once they are reaped).
//! `PROG IMAGE KEY leave-exit`: as `leave`, the first life exiting as it saves (it does not reap
//! its zombies itself: the checkpoint does).
//! `PROG IMAGE KEY alone`: as `leave`, without zombies. `alone-ignored`: so, with SIGCHLD
//! ignored: the child left out leaves no zombie (the kernel would have reaped it). `orphan`: as
//! `alone`, but the first life ends without ending the worker, which goes on, orphaned, until
//! the test kills it (as a JVM's `cat` child goes on a moment after the JVM has gone).
//! `PROG IMAGE KEY leave-io`, `leave-io-shared`: see [`leave_io`].
//! `PROG IMAGE KEY other-user` (as root): a zombie that had switched to another user is refused.
//! `PROG IMAGE KEY other-group`: a zombie in a process group nobody leads any more is refused.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};

static SIGCHLDS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigchld(_: libc::c_int) {
    SIGCHLDS.fetch_add(1, Ordering::SeqCst);
}

/// How each zombie ends: exit code, or signal.
#[derive(Clone, Copy)]
enum End {
    Exit(i32),
    Signal(i32),
}

const ENDS: [End; 5] = [
    End::Exit(7),
    End::Exit(0),
    End::Signal(libc::SIGTERM),
    End::Signal(libc::SIGKILL),
    End::Signal(libc::SIGSEGV),
];

/// The zombie that leads a process group of its own.
const LEADER: usize = 2;

/// Forks a child that ends as `end` says (named "zombie-N"; as user nobody with `other_user`),
/// and waits until it has, without reaping it.
fn zombie(n: usize, end: End, other_user: bool) -> i32 {
    // SAFETY: the child makes system calls only and ends.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: system calls on the child itself.
        unsafe {
            if n == 1 {
                libc::prctl(libc::PR_SET_NAME, c"zombie-1".as_ptr());
            }
            if n == LEADER {
                libc::setpgid(0, 0);
            }
            if other_user {
                libc::setresuid(65534, 65534, 65534);
            }
            match end {
                End::Exit(code) => libc::_exit(code),
                End::Signal(sig) => {
                    // No core file for SIGSEGV.
                    libc::prctl(libc::PR_SET_DUMPABLE, 0);
                    libc::signal(sig, libc::SIG_DFL);
                    libc::kill(libc::getpid(), sig);
                    libc::_exit(99)
                }
            }
        }
    }
    until_ended(pid);
    pid
}

/// Waits until child `pid` has ended, leaving it a zombie (WNOWAIT).
fn until_ended(pid: i32) {
    // SAFETY: a siginfo to fill; waitid on our own child.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as u32,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
}

/// As CRIU's zombie01: a child leads a group of its own, forks a sibling of its own into it
/// (CLONE_PARENT) and exits; the sibling, a zombie of ours, is then in a group nobody leads.
fn grandchild_in_a_group_gone() -> i32 {
    let mut p = [0i32; 2];
    // SAFETY: the child makes system calls only: its clone has no stack of its own and the
    // new process _exits at once.
    unsafe {
        libc::pipe(p.as_mut_ptr());
        let child = libc::fork();
        if child == 0 {
            libc::setpgid(0, 0);
            let g = libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            );
            if g == 0 {
                libc::_exit(0);
            }
            let pid = g as i32;
            libc::write(p[1], (&pid as *const i32).cast(), 4);
            libc::_exit(0);
        }
        let mut pid = 0i32;
        libc::read(p[0], (&mut pid as *mut i32).cast(), 4);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        until_ended(pid);
        libc::close(p[0]);
        libc::close(p[1]);
        pid
    }
}

/// The first life ends the child it left out and waits until it is gone, so that its PID is
/// free for a restore right after (it would end by itself with the first life, but orphaned, at
/// whatever moment its new parent reaps it).
fn end_left_out(child: i32) -> ! {
    // SAFETY: signals and reaps our own child (with SIGCHLD ignored the kernel reaps it, and
    // waitpid returns once it has).
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    std::process::exit(0)
}

/// `leave-io`: a child left out with its output pipe and a socket pair (a spawned child's
/// standard descriptors, as Node and Python make them), bytes waiting from it in both: after
/// restore they read those bytes, then end of file, and writing to the child fails, as once a
/// child has died. `leave-io-shared`: the child's pipe is also held by a grandchild, which is
/// not left out: refused, naming it.
fn leave_io(shared: bool) -> ! {
    let mut out = [0i32; 2];
    let mut sock = [0i32; 2];
    // SAFETY: pipe and socketpair fill two descriptors each; the child only writes, reads its
    // socket until end of file and _exits.
    let child = unsafe {
        assert_eq!(libc::pipe2(out.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sock.as_mut_ptr()
            ),
            0
        );
        let child = libc::fork();
        if child == 0 {
            libc::close(out[0]);
            libc::close(sock[0]);
            if shared && libc::fork() == 0 {
                // Holds the pipe (and the socket) too, and ends with the first life, without
                // holding the test's output open.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                let mut b = 0u8;
                while libc::read(sock[1], (&mut b as *mut u8).cast(), 1) > 0 {}
                libc::_exit(0);
            }
            libc::write(out[1], b"out".as_ptr().cast(), 3);
            libc::write(sock[1], b"sock".as_ptr().cast(), 4);
            let mut b = 0u8;
            // Until the first life (every holder of the other end) is gone.
            while libc::read(sock[1], (&mut b as *mut u8).cast(), 1) > 0 {}
            libc::_exit(0);
        }
        libc::close(out[1]);
        libc::close(sock[1]);
        child
    };
    // Until the child has written both.
    let mut pfd = [
        libc::pollfd {
            fd: out[0],
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sock[0],
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    for p in &mut pfd {
        // SAFETY: polls one of our descriptors.
        unsafe { libc::poll(p, 1, -1) };
    }
    println!("child {child}");
    let (image, key, _) = common::argv();
    let mut cp = thaw::Checkpoint::to(&image).leave_children_out(true);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Restored(_)) => {}
        Ok(thaw::Outcome::Saved(_)) => end_left_out(child),
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    }
    let mut c = common::Checks::default();
    let read_all = |fd: i32| {
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            // SAFETY: reads into our buffer from our descriptor.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return (got, n);
            }
            got.extend_from_slice(&buf[..n as usize]);
        }
    };
    let (o, end) = read_all(out[0]);
    c.check(
        "the child's pipe: its bytes, then end of file",
        o == b"out" && end == 0,
        format!("{o:?} {end}"),
    );
    let (o, end) = read_all(sock[0]);
    // SAFETY: a send on our socket that raises no SIGPIPE.
    let sent = unsafe { libc::send(sock[0], b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    let err = std::io::Error::last_os_error().raw_os_error();
    c.check(
        "the child's socket: its bytes, then end of file; sending fails with EPIPE",
        o == b"sock" && end == 0 && sent == -1 && err == Some(libc::EPIPE),
        format!("{o:?} {end} {sent} {err:?}"),
    );
    c.finish();
}

fn main() {
    let (image, key, extra) = common::argv();
    let mode = extra.first().map_or("refuse", String::as_str).to_owned();
    if mode == "leave-io" || mode == "leave-io-shared" {
        leave_io(mode == "leave-io-shared");
    }
    // SAFETY: installs a handler that only counts.
    unsafe {
        libc::signal(libc::SIGCHLD, on_sigchld as *const () as libc::sighandler_t);
    }
    let mut p = [0i32; 2];
    // SAFETY: pipe() fills two descriptors; the child only reads and _exits.
    let worker = unsafe {
        libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC);
        let worker = libc::fork();
        if worker == 0 {
            // Exits once every copy of the write end is closed: when the first life ends.
            libc::close(p[1]);
            let mut b = 0u8;
            if mode == "orphan" {
                // Holds none of the test's pipes, which wait for the first life alone.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::read(p[0], (&mut b as *mut u8).cast(), 1);
            if mode == "orphan" {
                loop {
                    libc::pause();
                }
            }
            libc::_exit(0);
        }
        worker
    };
    let zombies: Vec<(i32, End)> = if mode == "other-user" {
        vec![(zombie(0, End::Exit(3), true), End::Exit(3))]
    } else if mode == "alone" || mode == "alone-ignored" || mode == "orphan" {
        Vec::new()
    } else if mode == "other-group" {
        vec![(grandchild_in_a_group_gone(), End::Exit(0))]
    } else {
        ENDS.iter()
            .enumerate()
            .map(|(n, &e)| (zombie(n, e, false), e))
            .collect()
    };
    // Keep the pipe's read end closed here so that it is not part of what is checked.
    // SAFETY: our own descriptor.
    unsafe { libc::close(p[0]) };
    let pids: Vec<String> = zombies.iter().map(|(p, _)| p.to_string()).collect();
    println!("children {worker} {}", pids.join(" "));
    if mode == "alone-ignored" {
        // SAFETY: SIGCHLD ignored: the kernel reaps the children as they end.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    }
    let sigchlds = SIGCHLDS.load(Ordering::SeqCst);
    // The worker's pipe goes to a child: left out, like the child.
    let mut cp = thaw::Checkpoint::to(&image)
        .fd(p[1], thaw::FdAction::Drop)
        .leave_children_out(mode != "refuse")
        .exit_after_save(mode == "leave-exit");
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Restored(_)) => {}
        Ok(thaw::Outcome::Saved(_)) => {
            // The first life reaps its zombies before it ends, so that their PIDs are free
            // for a restore right after (orphaned, they would wait for init).
            for (pid, _) in &zombies {
                // SAFETY: reaps our own child.
                unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
            }
            if mode == "orphan" {
                std::process::exit(0);
            }
            end_left_out(worker);
        }
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    }
    let mut c = common::Checks::default();
    if mode == "alone-ignored" {
        // SAFETY: waits for our own child, without blocking.
        let r = unsafe { libc::waitpid(worker, std::ptr::null_mut(), libc::WNOHANG) };
        let err = std::io::Error::last_os_error().raw_os_error();
        c.check(
            "SIGCHLD ignored: the child left out left no zombie, and no SIGCHLD",
            r == -1 && err == Some(libc::ECHILD) && SIGCHLDS.load(Ordering::SeqCst) == sigchlds,
            format!("{r} {err:?}"),
        );
        c.finish();
    }
    // SAFETY: getuid has no failure.
    let me = unsafe { libc::getuid() };
    // SAFETY: getpgid of ourselves.
    let own_group = unsafe { libc::getpgid(0) };
    let groups: Vec<(i32, i32, i32)> = zombies
        .iter()
        .enumerate()
        .map(|(n, &(pid, _))| {
            let want = if n == LEADER { pid } else { own_group };
            // SAFETY: getpgid of our own child.
            (pid, unsafe { libc::getpgid(pid) }, want)
        })
        .collect();
    c.check(
        "zombies: same process groups",
        groups.iter().all(|(_, got, want)| got == want),
        format!("{groups:?}"),
    );
    let mut names = Vec::new();
    let mut ends = Vec::new();
    for (n, &(pid, end)) in zombies.iter().enumerate() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().map(|r| r[..1].to_owned()))
            .unwrap_or_default();
        let want = if n == 1 { "zombie-1" } else { "zdtm-children" };
        names.push((
            comm.trim() == want && state == "Z",
            format!("{pid}: {comm:?} {state}"),
        ));
        // SAFETY: reaps our own child into our siginfo.
        let info = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_PID, pid as u32, &mut info, libc::WEXITED);
            (r == 0).then_some(info)
        };
        let got = info.map(|i| {
            // SAFETY: waitid filled a SIGCHLD siginfo.
            unsafe { (i.si_code, i.si_status(), i.si_uid(), i.si_pid()) }
        });
        let want = match end {
            End::Exit(code) => (libc::CLD_EXITED, code),
            End::Signal(sig) => (libc::CLD_KILLED, sig),
        };
        ends.push((
            got == Some((want.0, want.1, me, pid)),
            format!("{pid}: {got:?}, wanted {want:?}"),
        ));
    }
    c.check(
        "zombies: same PIDs and names, still zombies",
        names.iter().all(|(ok, _)| *ok),
        format!("{names:?}"),
    );
    c.check(
        "zombies: each ended as before, as our user",
        ends.iter().all(|(ok, _)| *ok),
        format!("{ends:?}"),
    );
    // The worker, left out: a child that was killed while the process was away, its SIGCHLD
    // delivered once the process runs (the zombies' are not, the first life had them).
    c.check(
        "no SIGCHLD for the zombies again, one for the child left out",
        SIGCHLDS.load(Ordering::SeqCst) == sigchlds + 1,
        format!("{} then {sigchlds}", SIGCHLDS.load(Ordering::SeqCst)),
    );
    let mut status = 0;
    // SAFETY: reaps our own child.
    let r = unsafe { libc::waitpid(worker, &mut status, libc::WNOHANG) };
    c.check(
        "the child left out: ended by SIGKILL",
        r == worker && libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        format!("{r} {status:#x}"),
    );
    // SAFETY: waiting for any child, without blocking.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    let err = std::io::Error::last_os_error().raw_os_error();
    c.check(
        "no other children after restore",
        r == -1 && err == Some(libc::ECHILD),
        format!("{r} {err:?}"),
    );
    c.finish();
}
