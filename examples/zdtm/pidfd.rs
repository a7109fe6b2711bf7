//! pidfds of the process itself and of one of its threads (PIDFD_THREAD, Linux 6.9+): after
//! restore each still refers to the same process or thread (pidfd_send_signal with signal 0
//! succeeds, and fdinfo names the same PID), keeps O_NONBLOCK and close-on-exec as they were.
//! Two pidfds of a child that exited with status 7 and was reaped: after restore both still
//! refer to a process that has exited (fdinfo Pid -1, signals fail with ESRCH, readable), share
//! one inode, and tell exit status 7 where the kernel keeps it (PIDFD_GET_INFO).
//! A pidfd of a child that exited with status 9 and is not waited for (a zombie): after restore
//! it is readable and `waitid(P_PIDFD)` through it gives the child's PID and status 9.
//! With `no-dead`, without those. With `parent`, a pidfd of another process is refused by name.

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

fn pidfd_open(pid: i32, flags: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers; a new descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    // SAFETY: a fresh descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn info(fd: &OwnedFd) -> (String, u32) {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    (
        field("Pid:"),
        u32::from_str_radix(&field("flags:"), 8).unwrap_or(0),
    )
}

/// PIDFD_GET_INFO's exit status (Linux 6.15+; `None` where the kernel does not tell).
fn exit_status(fd: &OwnedFd) -> Option<i32> {
    let mut info = [0u64; 8];
    info[0] = 1 << 3; // PIDFD_INFO_EXIT
                      // SAFETY: PIDFD_GET_INFO (_IOWR(0xFF, 11, 64 bytes)) into a 64-byte buffer of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), 0xC040_FF0B, info.as_mut_ptr()) };
    (r == 0 && info[0] & (1 << 3) != 0).then(|| (info[7] >> 32) as i32)
}

fn alive(fd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks that the target exists.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), 0, 0, 0) == 0 }
}

fn main() {
    if common::argv().2.iter().any(|a| a == "parent") {
        // A pidfd of another process (the parent): refused, naming it.
        let _parent = pidfd_open(std::os::unix::process::parent_id() as i32, 0).unwrap();
        match thaw::Checkpoint::to(common::argv().0).save() {
            Ok(_) => println!("unexpectedly saved"),
            Err(e) => println!("error: {e}"),
        }
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        tx.send(thaw::sys::gettid()).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let me = std::process::id() as i32;
    let process = pidfd_open(me, libc::O_NONBLOCK as u32).unwrap();
    // Without close-on-exec.
    // SAFETY: clears FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(process.as_raw_fd(), libc::F_SETFD, 0) };
    let thread = pidfd_open(tid, PIDFD_THREAD);
    let with_dead = !common::argv().2.iter().any(|a| a == "no-dead");
    let dead = with_dead.then(|| {
        // SAFETY: fork; the child only exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(7) };
        }
        let dead = [pidfd_open(child, 0).unwrap(), pidfd_open(child, 0).unwrap()];
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        let before = exit_status(&dead[0]);
        (dead, before)
    });
    let zombie = with_dead.then(|| {
        // SAFETY: fork; the child only exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(9) };
        }
        let fd = pidfd_open(child, 0).unwrap();
        // Until it has exited, left unreaped (WNOWAIT).
        // SAFETY: a zeroed siginfo for waitid to fill.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child without reaping it.
        unsafe {
            libc::waitid(
                libc::P_PID,
                child as u32,
                &mut si,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        (child, fd)
    });
    let before = (info(&process), thread.as_ref().map(info));
    common::checkpoint();
    let mut c = common::Checks::default();
    let after = (info(&process), thread.as_ref().map(info));
    c.check(
        "pidfd of the process: same target and flags",
        after.0 == before.0 && after.0 .0 == me.to_string() && alive(&process),
        format!("{:?} (was {:?})", after.0, before.0),
    );
    // SAFETY: reads our own descriptor's flags.
    let fd_flags = unsafe { libc::fcntl(process.as_raw_fd(), libc::F_GETFD) };
    c.check("close-on-exec as it was", fd_flags == 0, fd_flags);
    if let Some(t) = &thread {
        c.check(
            "pidfd of a thread: same target and flags",
            after.1 == before.1 && alive(t),
            format!("{:?} (was {:?})", after.1, before.1),
        );
    }
    if let Some((dead, before_status)) = dead {
        let ino = |fd: &OwnedFd| {
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0)
        };
        // SAFETY: signal 0 through a pidfd; errno read right after.
        let esrch = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, dead[0].as_raw_fd(), 0, 0, 0) == -1
                && *libc::__errno_location() == libc::ESRCH
        };
        let mut p = libc::pollfd {
            fd: dead[1].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        unsafe { libc::poll(&mut p, 1, 0) };
        let status = exit_status(&dead[1]);
        c.check(
            "pidfds of a child that exited: exited, one inode, the same exit status",
            info(&dead[0]).0 == "-1"
                && info(&dead[1]).0 == "-1"
                && esrch
                && p.revents & libc::POLLIN != 0
                && ino(&dead[0]) == ino(&dead[1])
                && status == before_status,
            format!(
                "{:?} {:?} esrch {esrch} revents {:#x} inodes {} {} status {status:?} (was {before_status:?})",
                info(&dead[0]),
                info(&dead[1]),
                p.revents,
                ino(&dead[0]),
                ino(&dead[1])
            ),
        );
    }
    if let Some((child, fd)) = zombie {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        unsafe { libc::poll(&mut p, 1, 0) };
        // SAFETY: a zeroed siginfo for waitid to fill.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: reaps our own child through its pidfd (P_PIDFD is 3).
        let r = unsafe { libc::waitid(3, fd.as_raw_fd() as u32, &mut si, libc::WEXITED) };
        // SAFETY: the kernel filled the siginfo of a child's end.
        let (pid, status) = unsafe { (si.si_pid(), si.si_status()) };
        c.check(
            "pidfd of a child that exited, not waited for: waited for through it",
            p.revents & libc::POLLIN != 0 && r == 0 && pid == child && status == 9,
            format!(
                "revents {:#x} waitid {r} pid {pid} (child {child}) status {status}",
                p.revents
            ),
        );
    }
    stop_tx.send(()).unwrap();
    worker.join().unwrap();
    c.finish();
}
