//! The launcher's raw system interface. Every `unsafe` block of the launcher outside the restorer
//! lives here.

use std::arch::asm;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Whether the kernel set AT_SECURE for this exec (privileges gained from file capabilities,
/// set-uid or set-gid bits, or an LSM's decision).
pub fn at_secure() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

fn check(r: i64) -> io::Result<i64> {
    if (-4095..0).contains(&r) {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r)
    }
}

fn syscall(nr: i64, a: [u64; 6]) -> io::Result<i64> {
    check(thaw::sys::syscall6(nr, a))
}

/// An anonymous read-write mapping at exactly `addr`, failing if anything is there.
pub fn map_fixed(addr: u64, len: u64) -> io::Result<()> {
    let got = syscall(
        libc::SYS_mmap,
        [
            addr,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )?;
    if got as u64 != addr {
        let _ = syscall(libc::SYS_munmap, [got as u64, len, 0, 0, 0, 0]);
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(())
}

/// Copies `data` to `addr`, which must lie in a mapping made by [`map_fixed`].
pub fn write_region(addr: u64, data: &[u8]) {
    // SAFETY: callers only pass ranges inside the read-write region they mapped with map_fixed,
    // which no Rust object aliases.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
}

pub fn mprotect(addr: u64, len: u64, prot: i32) -> io::Result<()> {
    syscall(libc::SYS_mprotect, [addr, len, prot as u64, 0, 0, 0]).map(drop)
}

/// The kernel's `struct clone_args` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Debug, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `clone3` a new process with PID `pid` whose first and only act is to jump to the restorer at
/// `entry` with `control` in rdi and the stack pointer at `stack_top`. No Rust code runs in the
/// child. Returns the child's PID (as seen from this PID namespace).
pub fn clone3_into_restorer(pid: i32, entry: u64, control: u64, stack_top: u64) -> io::Result<i32> {
    // Since Linux 6.15 a thread's ID is freed shortly after its parent may already have reaped
    // the process: right after a restored process ends, its IDs can stay taken for a moment.
    for _ in 0..PID_RETRIES {
        match clone3_once(pid, entry, control, stack_top) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                std::thread::sleep(std::time::Duration::from_micros(PID_RETRY_US))
            }
            other => return other,
        }
    }
    clone3_once(pid, entry, control, stack_top)
}

/// How often, and how far apart, creating a process or thread with a chosen ID is retried while
/// the ID is still being freed (the restorer uses the same figures for threads).
pub const PID_RETRIES: u32 = 2000;
pub const PID_RETRY_US: u64 = 100;

fn clone3_once(pid: i32, entry: u64, control: u64, stack_top: u64) -> io::Result<i32> {
    let tids = [pid];
    // PID 0: any PID (a template for `thaw serve`, which is never seen by the process).
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid == 0 { 0 } else { tids.as_ptr() as u64 },
        set_tid_size: u64::from(pid != 0),
        ..Default::default()
    };
    let ret: i64;
    // SAFETY: clone3 without CLONE_VM creates a new process with a copy of this address space;
    // in the parent the call returns normally. In the child (rax == 0) we never return into Rust:
    // the stack pointer moves into the restorer region (mapped before this call, hence present in
    // the copy) and control jumps to the position-independent restorer, which ends the process or
    // turns it into the restored one. `args` and `tids` outlive the system call.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rsp, r14",
            "mov rdi, r13",
            "jmp r12",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") control,
            in("r14") stack_top,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    check(ret).map(|p| p as i32)
}

/// Whether `clone3` accepts `set_tid` here: a kernel that knows the field rejects an array of
/// length 0 with EINVAL while it checks the arguments, before it copies anything of this process
/// (an invalid ID in the array would be found only after the whole address space was copied); a
/// kernel that does not answers E2BIG or ENOSYS.
pub fn probe_set_tid() -> bool {
    let tids = [0i32];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 0,
        ..Default::default()
    };
    let r = thaw::sys::syscall6(
        libc::SYS_clone3,
        [
            &args as *const CloneArgs as u64,
            std::mem::size_of::<CloneArgs>() as u64,
            0,
            0,
            0,
            0,
        ],
    );
    r == -(libc::EINVAL as i64)
}

/// fork(2) through libc, whose fork handlers leave the allocator usable in the child. The
/// launcher's other thread at this point (the verifier ahead) takes no lock that the child's code
/// (namespace set-up, waiting, writing to stderr) needs.
pub fn fork() -> io::Result<i32> {
    // SAFETY: glibc's fork takes and resets its malloc locks around the call; the child uses no
    // Rust lock another thread could hold (see above) and only this thread exists in it.
    let r = unsafe { libc::fork() };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `unshare(flags)`. A new user namespace needs a single-threaded caller, and a joined thread
/// (the verifier's) leaves the thread group a moment after `join` returns: EINVAL is retried
/// while another thread is still listed.
pub fn unshare(flags: i32) -> io::Result<()> {
    let once = || syscall(libc::SYS_unshare, [flags as u64, 0, 0, 0, 0, 0]).map(drop);
    for _ in 0..PID_RETRIES {
        match once() {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && other_threads() => {
                std::thread::sleep(std::time::Duration::from_micros(PID_RETRY_US))
            }
            other => return other,
        }
    }
    once()
}

fn other_threads() -> bool {
    std::fs::read_dir("/proc/thread-self/..")
        .map(|d| d.count() > 1)
        .unwrap_or(false)
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// waitpid(pid, 0) until it reports an exit (any child with `pid` = -1): (pid, how it ended).
pub fn wait(pid: i32) -> io::Result<(i32, Exit)> {
    wait_stopping_with(pid, |_, _| {})
}

/// [`wait`], calling `stopped(pid, signal)` each time a child it waits for stops (the restored process: it
/// stopped itself with SIGTSTP, as Node's readline does on Ctrl-Z in raw mode, or was stopped):
/// whoever waits for it must stop too, or the shell that started `thaw run` never gets the
/// terminal back.
pub fn wait_stopping_with(pid: i32, mut stopped: impl FnMut(i32, i32)) -> io::Result<(i32, Exit)> {
    loop {
        let mut status = 0i32;
        let r = syscall(
            libc::SYS_wait4,
            [
                pid as u64,
                &mut status as *mut i32 as u64,
                libc::WUNTRACED as u64,
                0,
                0,
                0,
            ],
        );
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(p) => {
                let how = if libc::WIFEXITED(status) {
                    Exit::Code(libc::WEXITSTATUS(status))
                } else if libc::WIFSIGNALED(status) {
                    Exit::Signal(libc::WTERMSIG(status))
                } else {
                    if libc::WIFSTOPPED(status) {
                        stopped(p as i32, libc::WSTOPSIG(status));
                    }
                    continue;
                };
                return Ok((p as i32, how));
            }
        }
    }
}

/// Whether a process stopped by `signal` was stopped as a job, by its terminal (Ctrl-Z) or by
/// itself on its behalf (Node's readline raises SIGTSTP on Ctrl-Z in raw mode): its shell then
/// continues the whole group with `fg`. A SIGSTOP (a debugger, `kill -STOP`) is undone by
/// whoever sent it, with a SIGCONT to that process alone.
pub fn job_control_stop(signal: i32) -> bool {
    [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&signal)
}

/// What the launcher does when the restored process (its child) stops: it stops too, as a
/// shell's job, and once continued (the shell's `fg` continues the whole group) continues the
/// process if it is in a group of its own.
pub fn stop_with(child: i32) {
    // Unless it was continued already: a stop of the whole job (Ctrl-Z) stops the launcher too,
    // after the report it took, and the `fg` that continued both must not find it stopped again.
    if process_state(child).is_none_or(|(state, _)| state != 'T') {
        return;
    }
    kill(std::process::id() as i32, libc::SIGSTOP);
    // SAFETY: getpgid and getpgrp have no memory-safety preconditions.
    if unsafe { libc::getpgid(child) != libc::getpgrp() } {
        kill(child, libc::SIGCONT);
    }
}

/// `PF_EXITING` in /proc/PID/stat's flags: the task is in the kernel's exit.
pub const PF_EXITING: u64 = 0x4;

/// Process `pid`'s state letter and flags (/proc/PID/stat); `None` once it is gone.
pub fn process_state(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(6)?.parse().ok()?))
}

/// A pidfd of process `pid` (a child not reaped yet): signals sent through it can never reach
/// another process that reused the number.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    syscall(libc::SYS_pidfd_open, [pid as u64, 0, 0, 0, 0, 0]).map(|fd| {
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
    })
}

/// Sends `sig` to the process of `pidfd` (gone already: nothing).
pub fn pidfd_send_signal(pidfd: &std::os::fd::OwnedFd, sig: i32) {
    use std::os::fd::AsRawFd;
    let _ = syscall(
        libc::SYS_pidfd_send_signal,
        [pidfd.as_raw_fd() as u64, sig as u64, 0, 0, 0, 0],
    );
}

/// Asks for SIGKILL when the parent dies; false when it has already died (then the caller is
/// an orphan and must give up).
pub fn die_with_parent(parent: i32) -> bool {
    let _ = syscall(
        libc::SYS_prctl,
        [
            libc::PR_SET_PDEATHSIG as u64,
            libc::SIGKILL as u64,
            0,
            0,
            0,
            0,
        ],
    );
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() == parent }
}

/// This thread's capability sets (capget: /proc/self/status costs far more): struct __user_cap_data_struct { effective, permitted,
/// inheritable } for the low and the high 32 capabilities (_LINUX_CAPABILITY_VERSION_3).
fn capget() -> io::Result<[u32; 6]> {
    let header = [0x2008_0522u32, 0];
    let mut data = [0u32; 6];
    syscall(
        libc::SYS_capget,
        [header.as_ptr() as u64, data.as_mut_ptr() as u64, 0, 0, 0, 0],
    )?;
    Ok(data)
}

/// The capabilities this thread may use: those it is permitted (an elevated launcher keeps its
/// effective set empty but around the calls that need them, see `privilege`).
pub fn permitted_caps() -> u64 {
    capget().map_or(0, |d| u64::from(d[1]) | (u64::from(d[4]) << 32))
}

/// Whether capability `cap` is in this thread's ambient set (what an exec carried over).
pub fn ambient_cap(cap: u32) -> bool {
    syscall(
        libc::SYS_prctl,
        [
            libc::PR_CAP_AMBIENT as u64,
            libc::PR_CAP_AMBIENT_IS_SET as u64,
            u64::from(cap),
            0,
            0,
            0,
        ],
    )
    .is_ok_and(|r| r == 1)
}

/// Sets this thread's effective capabilities to all it is permitted (`raise`) or to none.
pub fn set_effective_caps(raise: bool) -> io::Result<()> {
    let mut data = capget()?;
    data[0] = if raise { data[1] } else { 0 };
    data[3] = if raise { data[4] } else { 0 };
    let header = [0x2008_0522u32, 0];
    syscall(
        libc::SYS_capset,
        [header.as_ptr() as u64, data.as_ptr() as u64, 0, 0, 0, 0],
    )
    .map(drop)
}

/// Sets this thread's file-system user and group ids (setfsuid, setfsgid): the ids the kernel
/// checks files against.
pub fn set_fs_ids(uid: u32, gid: u32) {
    let _ = syscall(libc::SYS_setfsgid, [u64::from(gid), 0, 0, 0, 0, 0]);
    let _ = syscall(libc::SYS_setfsuid, [u64::from(uid), 0, 0, 0, 0, 0]);
}

pub fn kill(pid: i32, sig: i32) {
    let _ = syscall(libc::SYS_kill, [pid as u64, sig as u64, 0, 0, 0, 0]);
}

/// Sets the signal mask; returns the previous one.
pub fn set_sigmask(mask: u64) -> u64 {
    thaw::sys::sigprocmask(libc::SIG_SETMASK, Some(mask)).unwrap_or(0)
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// The last signal that ends a program by default (SIGINT, SIGTERM, SIGHUP, SIGQUIT) the
/// launcher was sent since it forwards them (0: none).
static ENDING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// [`ENDING`]: forwarded to the process (or left to it, which had it too).
pub fn ending_signal() -> Option<i32> {
    Some(ENDING.load(std::sync::atomic::Ordering::Relaxed)).filter(|&s| s != 0)
}

extern "C" fn forward(sig: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    const SI_KERNEL: i32 = 0x80;
    const SI_QUEUE: i32 = -1;
    const SI_TKILL: i32 = -6;
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, sender) = unsafe { info.as_ref() }.map_or((0, 0), |i| {
        let code = i.si_code;
        let sender = if matches!(code, libc::SI_USER | SI_QUEUE | SI_TKILL) {
            // SAFETY: si_pid is the union member set for the codes of kill, sigqueue and tgkill.
            unsafe { i.si_pid() }
        } else {
            0
        };
        (code, sender)
    });
    // Sent by the process itself: to its parent, which the launcher (or the namespace's init)
    // is now (`kill(getppid(), ...)`: a daemon telling its supervisor it is ready), or to its
    // process group, the launcher's (`kill(0, ...)`, which reached the process too). Never
    // passed back to it: it would get its own signal (and die of it without a handler), or
    // get it twice. (Which of the two it was, nothing tells: not passed up either.)
    if pid > 0 && sender == pid {
        return;
    }
    if matches!(
        sig,
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT
    ) {
        ENDING.store(sig, std::sync::atomic::Ordering::Relaxed);
    }
    if pid <= 0 {
        return;
    }
    // Ctrl-C and Ctrl-\ on a terminal: the kernel sends them to the whole foreground process
    // group, so a process in ours has its own already (passed on, it got two).
    let keyboard = (sig == libc::SIGINT || sig == libc::SIGQUIT) && code == SI_KERNEL;
    // SAFETY: getpgid and getpgrp have no memory-safety preconditions (async-signal-safe).
    if keyboard && unsafe { libc::getpgid(pid) == libc::getpgrp() } {
        return;
    }
    kill(pid, sig);
}

/// Forwards `signals` to `pid` from now on.
pub fn forward_signals(pid: i32, signals: &[i32]) -> io::Result<()> {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; `forward` is an async-signal-safe SA_SIGINFO
        // handler (atomic loads and system calls).
        let r = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = forward as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Undoes [`forward_signals`]: nothing is forwarded any more (a signal that comes meanwhile is
/// still noted, see [`ending_signal`]), and `signals` have their default actions again.
pub fn stop_forwarding(signals: &[i32]) {
    let mask = set_sigmask(u64::MAX);
    FORWARD_TO.store(0, std::sync::atomic::Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: a zeroed sigaction with SIG_DFL is valid.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
    set_sigmask(mask);
}

/// A duplicate of `fd` at the lowest free number ≥ `min`.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    let r = syscall(
        libc::SYS_fcntl,
        [fd as u64, libc::F_DUPFD_CLOEXEC as u64, min as u64, 0, 0, 0],
    )?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// dup3(fd, to, O_CLOEXEC): `to` now holds what `fd` holds (what it held before is closed).
pub fn dup2_cloexec(fd: RawFd, to: RawFd) -> io::Result<()> {
    syscall(
        libc::SYS_dup3,
        [fd as u64, to as u64, libc::O_CLOEXEC as u64, 0, 0, 0],
    )
    .map(drop)
}

/// A duplicate of `fd` if it is a listening socket; `None` if it is something else.
pub fn dup_listening_socket(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    let dup = dup_above(fd, 3)?;
    let listening = thaw::sys::getsockopt_int(
        std::os::fd::AsRawFd::as_raw_fd(&dup),
        libc::SOL_SOCKET,
        libc::SO_ACCEPTCONN,
    );
    match listening {
        Ok(1) => Ok(Some(dup)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

/// This thread's nice value.
pub fn nice() -> i32 {
    // getpriority returns 20 - nice (1..=40) as a raw system call.
    let r = syscall(
        libc::SYS_getpriority,
        [libc::PRIO_PROCESS as u64, 0, 0, 0, 0, 0],
    )
    .unwrap_or(20);
    20 - r as i32
}

/// Closes descriptors `first..=last` (best effort).
pub fn close_range(first: u32, last: u32) {
    let _ = syscall(
        libc::SYS_close_range,
        [u64::from(first), u64::from(last), 0, 0, 0, 0],
    );
}

/// Reads at most one byte from `fd`: how many it read (0 at end of file), `None` on an error.
pub fn read_byte(fd: RawFd) -> Option<usize> {
    let mut byte = 0u8;
    loop {
        match syscall(
            libc::SYS_read,
            [fd as u64, &mut byte as *mut u8 as u64, 1, 0, 0, 0],
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.ok().map(|n| n as usize),
        }
    }
}

pub fn close(fd: RawFd) {
    let _ = syscall(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the launcher may hold many mapped files).
pub fn raise_nofile() {
    if let Ok((_, max)) = thaw::sys::prlimit(0, libc::RLIMIT_NOFILE) {
        let new = libc::rlimit64 {
            rlim_cur: max,
            rlim_max: max,
        };
        let _ = syscall(
            libc::SYS_prlimit64,
            [
                0,
                libc::RLIMIT_NOFILE as u64,
                &new as *const _ as u64,
                0,
                0,
                0,
            ],
        );
    }
}

/// Grows this process's descriptor table to hold number `n` (best effort). Growing it once more
/// than one thread shares it waits for an RCU grace period (10-20 ms here): a launcher that will
/// start threads grows it first, while it is alone.
pub fn reserve_fds(open: &impl std::os::fd::AsRawFd, n: RawFd) {
    let from = open.as_raw_fd() as u64;
    if let Ok(fd) = syscall(
        libc::SYS_fcntl,
        [from, libc::F_DUPFD_CLOEXEC as u64, n as u64, 0, 0, 0],
    ) {
        close(fd as RawFd);
    }
}

/// Lowers the calling thread's priority to nice `n` (best effort: raising nice needs nothing).
pub fn nice_self(n: i32) {
    // PRIO_PROCESS with who = 0 is the calling thread on Linux.
    thaw::sys::syscall6(
        libc::SYS_setpriority,
        [libc::PRIO_PROCESS as u64, 0, n as u64, 0, 0, 0],
    );
}

/// Puts the calling thread in the SCHED_IDLE class: it runs only on a core nothing else wants
/// (best effort: lowering a thread's class needs nothing).
pub fn idle_self() {
    let param = libc::sched_param { sched_priority: 0 };
    thaw::sys::syscall6(
        libc::SYS_sched_setscheduler,
        [
            0,
            libc::SCHED_IDLE as u64,
            &param as *const libc::sched_param as u64,
            0,
            0,
            0,
        ],
    );
}

pub fn geteuid() -> u32 {
    thaw::sys::syscall6(libc::SYS_geteuid, [0; 6]) as u32
}

/// The real user and group ids (the caller's, where exec made the effective ones others).
pub fn real_ids() -> (u32, u32) {
    (
        thaw::sys::syscall6(libc::SYS_getuid, [0; 6]) as u32,
        thaw::sys::syscall6(libc::SYS_getgid, [0; 6]) as u32,
    )
}

pub fn getegid() -> u32 {
    thaw::sys::syscall6(libc::SYS_getegid, [0; 6]) as u32
}

/// A sealable memfd of `len` bytes for the launcher's private copy of an image.
pub fn sealable_memfd(name: &std::ffi::CStr, len: u64) -> io::Result<std::fs::File> {
    let fd = syscall(
        libc::SYS_memfd_create,
        [
            name.as_ptr() as u64,
            (libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd as RawFd) };
    file.set_len(len)?;
    Ok(file)
}

/// An inotify watch for writes to one file ([`watch_writes`]).
#[derive(Debug)]
pub struct WriteWatch {
    fd: OwnedFd,
    armed: bool,
}

impl WriteWatch {
    /// Whether a write came since the last call; never waits.
    pub fn written(&self) -> bool {
        let mut buf = [0u8; 256];
        let mut seen = false;
        // SAFETY: reads into a buffer of the length given; the descriptor does not block.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
            seen = true;
        }
        seen
    }

    /// Ends the watch, keeping the instance: closing an inotify instance waits for the kernel's
    /// deferred release of its watches (an SRCU grace period: 5-15 ms were seen here), which a
    /// watch removed this way has had long before the instance is closed.
    pub fn disarm(&mut self) {
        if std::mem::take(&mut self.armed) {
            let _ = syscall(
                libc::SYS_inotify_rm_watch,
                [self.fd.as_raw_fd() as u64, 1, 0, 0, 0, 0],
            );
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An inotify instance told of every write to the file descriptor `fd` is open on (a pipe, a
/// socket, a regular file or a terminal; `None` for anything else: a write to another device,
/// /dev/null, by anyone on the system would count). Writes through any descriptor of that file
/// count, by any process.
pub fn watch_writes(fd: RawFd) -> Option<WriteWatch> {
    // SAFETY: fstat writes only the stat buffer it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid descriptor makes it fail.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let kind = st.st_mode & libc::S_IFMT;
    // SAFETY: isatty only inspects the descriptor.
    let tty = kind == libc::S_IFCHR && unsafe { libc::isatty(fd) } == 1;
    if !(tty || [libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFREG].contains(&kind)) {
        return None;
    }
    let ino = syscall(
        libc::SYS_inotify_init1,
        [(libc::IN_NONBLOCK | libc::IN_CLOEXEC) as u64, 0, 0, 0, 0, 0],
    )
    .ok()?;
    // SAFETY: inotify_init1 returned a new descriptor that nothing else owns.
    let ino = unsafe { OwnedFd::from_raw_fd(ino as RawFd) };
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    // The first watch of an instance is number 1 (what `disarm` removes).
    let wd = syscall(
        libc::SYS_inotify_add_watch,
        [
            ino.as_raw_fd() as u64,
            path.as_ptr() as u64,
            u64::from(libc::IN_MODIFY),
            0,
            0,
            0,
        ],
    )
    .ok()?;
    (wd == 1).then_some(WriteWatch {
        fd: ino,
        armed: true,
    })
}

/// Seals a memfd against any further change of size or contents. F_SEAL_FUTURE_WRITE, not
/// F_SEAL_WRITE: with no writable mapping of the copy they forbid the same things, but
/// F_SEAL_WRITE also waits for every page to have no extra reference and fails with EBUSY when
/// one keeps it (DAMON's reclaim or compaction holding a page for a moment was seen to).
pub fn seal(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let seals =
        libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE;
    thaw::sys::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals as u64).map(drop)
}

/// Whether this process's user namespace owns its PID namespace (so that its capabilities there
/// cover creating processes with chosen PIDs in it).
pub fn owns_pid_namespace() -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    const NS_GET_USERNS: u64 = 0xb701;
    let pidns = std::fs::File::open("/proc/self/ns/pid")?;
    let owner = syscall(
        libc::SYS_ioctl,
        [pidns.as_raw_fd() as u64, NS_GET_USERNS, 0, 0, 0, 0],
    )?;
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let owner = unsafe { std::fs::File::from_raw_fd(owner as RawFd) };
    let mine = std::fs::metadata("/proc/self/ns/user")?;
    let theirs = owner.metadata()?;
    Ok((mine.dev(), mine.ino()) == (theirs.dev(), theirs.ino()))
}

/// In a new mount namespace: stop mount propagation and mount a procfs for the current PID
/// namespace over /proc.
pub fn mount_private_proc() -> io::Result<()> {
    let mount = |src: &std::ffi::CStr,
                 target: &std::ffi::CStr,
                 fstype: Option<&std::ffi::CStr>,
                 flags: u64| {
        syscall(
            libc::SYS_mount,
            [
                src.as_ptr() as u64,
                target.as_ptr() as u64,
                fstype.map_or(0, |f| f.as_ptr() as u64),
                flags,
                0,
                0,
            ],
        )
    };
    mount(c"none", c"/", None, libc::MS_REC | libc::MS_PRIVATE)?;
    mount(
        c"proc",
        c"/proc",
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    Ok(())
}

/// userfaultfd (linux/userfaultfd.h): the ioctls and events the lazy memory server uses.
pub mod uffd {
    use super::{check, syscall};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    pub const API: u64 = 0xAA;
    /// `_IO(0xAA, 0x00)` on /dev/userfaultfd: a userfaultfd for the caller's memory.
    pub const IOC_NEW: u64 = 0xAA00;
    /// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
    pub const IOC_API: u64 = 0xc018_aa3f;
    const IOC_COPY: u64 = 0xc028_aa03;
    const IOC_ZEROPAGE: u64 = 0xc020_aa04;
    const IOC_WAKE: u64 = 0x8010_aa02;
    /// Fork, mremap, madvise(DONTNEED/REMOVE) and munmap are reported, so that the server knows
    /// where each page of the image is and which pages must read as zero.
    pub const FEATURES: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);
    pub const EVENT_PAGEFAULT: u8 = 0x12;
    pub const EVENT_FORK: u8 = 0x13;
    pub const EVENT_REMAP: u8 = 0x14;
    pub const EVENT_REMOVE: u8 = 0x15;
    pub const EVENT_UNMAP: u8 = 0x16;

    /// One `struct uffd_msg`: the event, then up to three words of arguments.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Msg {
        pub event: u8,
        _reserved: [u8; 7],
        pub arg: [u64; 3],
    }

    impl Msg {
        /// The userfaultfd of the forked child's memory, in an `EVENT_FORK` message.
        pub fn fork_fd(&self) -> OwnedFd {
            // SAFETY: reading a fork event installed this descriptor in our table for us alone.
            unsafe { OwnedFd::from_raw_fd((self.arg[0] & 0xffff_ffff) as RawFd) }
        }
    }

    /// Enables the events on `fd` (UFFDIO_API). The kernel asks the caller, not the owner of the
    /// memory, for CAP_SYS_PTRACE before it reports forks: the launcher does this for the
    /// restored process, which may run in a user namespace where it holds no such capability.
    pub fn enable(fd: &OwnedFd) -> io::Result<()> {
        let api = [API, FEATURES, 0u64];
        syscall(
            libc::SYS_ioctl,
            [fd.as_raw_fd() as u64, IOC_API, api.as_ptr() as u64, 0, 0, 0],
        )
        .map(drop)
    }

    /// A userfaultfd for this process's own memory, with the events enabled: a probe that the
    /// restored process will be able to create one the same way and this process to enable it.
    pub fn probe(device: Option<&OwnedFd>) -> io::Result<()> {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = match device {
            Some(dev) => syscall(
                libc::SYS_ioctl,
                [dev.as_raw_fd() as u64, IOC_NEW, flags, 0, 0, 0],
            )?,
            None => syscall(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?,
        };
        // SAFETY: the call returned a new descriptor that nothing else owns.
        enable(&unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Reads the pending events (non-blocking); returns how many were read.
    pub fn read(fd: &OwnedFd, msgs: &mut [Msg]) -> io::Result<usize> {
        let r = syscall(
            libc::SYS_read,
            [
                fd.as_raw_fd() as u64,
                msgs.as_mut_ptr() as u64,
                std::mem::size_of_val(msgs) as u64,
                0,
                0,
                0,
            ],
        );
        match r {
            Ok(n) => Ok(n as usize / std::mem::size_of::<Msg>()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Copies `src` to `dst` in the other process and wakes threads waiting there. On failure,
    /// also says how many bytes were copied before it.
    pub fn copy(fd: &OwnedFd, dst: u64, src: &[u8]) -> Result<(), (io::Error, u64)> {
        let mut arg = [dst, src.as_ptr() as u64, src.len() as u64, 0, 0u64];
        let r = thaw::sys::syscall6(
            libc::SYS_ioctl,
            [
                fd.as_raw_fd() as u64,
                IOC_COPY,
                arg.as_mut_ptr() as u64,
                0,
                0,
                0,
            ],
        );
        check(r)
            .map(drop)
            .map_err(|e| (e, (arg[4] as i64).max(0) as u64))
    }

    /// Maps zero pages at `[addr, addr + len)` and wakes threads waiting there.
    pub fn zeropage(fd: &OwnedFd, addr: u64, len: u64) -> io::Result<()> {
        let mut arg = [addr, len, 0, 0u64];
        syscall(
            libc::SYS_ioctl,
            [
                fd.as_raw_fd() as u64,
                IOC_ZEROPAGE,
                arg.as_mut_ptr() as u64,
                0,
                0,
                0,
            ],
        )
        .map(drop)
    }

    /// Wakes threads waiting for `[addr, addr + len)`.
    pub fn wake(fd: &OwnedFd, addr: u64, len: u64) -> io::Result<()> {
        let arg = [addr, len];
        syscall(
            libc::SYS_ioctl,
            [
                fd.as_raw_fd() as u64,
                IOC_WAKE,
                arg.as_ptr() as u64,
                0,
                0,
                0,
            ],
        )
        .map(drop)
    }
}

/// A connected pair of `AF_UNIX` sequenced-packet sockets (close-on-exec).
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    syscall(
        libc::SYS_socketpair,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC) as u64,
            0,
            fds.as_mut_ptr() as u64,
            0,
            0,
        ],
    )?;
    // SAFETY: socketpair returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe (read end, write end), close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    syscall(
        libc::SYS_pipe2,
        [fds.as_mut_ptr() as u64, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
    )?;
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Ends a forked child at once: no exit handlers, no destructors, nothing of the parent's
/// flushed twice.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Writes one byte to `fd` (a pipe, a socket).
pub fn write_byte(fd: &OwnedFd, byte: u8) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let b = [byte];
    syscall(
        libc::SYS_write,
        [fd.as_raw_fd() as u64, b.as_ptr() as u64, 1, 0, 0, 0],
    )
    .map(drop)
}

/// Asks that every message received on `sock` carry a pidfd of its sender (SO_PASSPIDFD, Linux
/// 6.5): the sender is then named without a PID, which another namespace would number otherwise.
pub fn pass_pidfd(sock: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const SO_PASSPIDFD: u64 = 76;
    let on: i32 = 1;
    syscall(
        libc::SYS_setsockopt,
        [
            sock.as_raw_fd() as u64,
            libc::SOL_SOCKET as u64,
            SO_PASSPIDFD,
            &on as *const i32 as u64,
            4,
            0,
        ],
    )
    .map(drop)
}

/// One message received with [`recv_message`].
#[derive(Debug)]
pub struct Received {
    /// A descriptor sent with SCM_RIGHTS.
    pub fd: Option<OwnedFd>,
    /// The sender, with [`pass_pidfd`] (SCM_PIDFD).
    pub sender: Option<OwnedFd>,
}

/// Receives one message and the descriptors it carries; `None` when the other side closed first.
pub fn recv_message(sock: &OwnedFd) -> io::Result<Option<Received>> {
    use std::os::fd::AsRawFd;
    const SCM_PIDFD: u64 = 4;
    let mut byte = [0u8; 1];
    let mut iov = [byte.as_mut_ptr() as u64, 1u64];
    // Room for two `struct cmsghdr { u64 len; i32 level; i32 type; }`, each followed by one int
    // and padded to 24 bytes.
    let mut control = [0u64; 6];
    // struct msghdr { name, namelen, iov, iovlen, control, controllen, flags }
    let mut msg = [
        0u64,
        0,
        iov.as_mut_ptr() as u64,
        1,
        control.as_mut_ptr() as u64,
        48,
        0,
    ];
    loop {
        let r = syscall(
            libc::SYS_recvmsg,
            [
                sock.as_raw_fd() as u64,
                msg.as_mut_ptr() as u64,
                libc::MSG_CMSG_CLOEXEC as u64,
                0,
                0,
                0,
            ],
        );
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(0) => return Ok(None),
            Ok(_) => break,
        }
    }
    let mut got = Received {
        fd: None,
        sender: None,
    };
    // Each header is 24 bytes here: a length of 20 (one int) and SOL_SOCKET in the low half of
    // the second word; the kernel fills `msg[5]` with the bytes it wrote.
    for h in control.chunks_exact(3).take(msg[5].div_ceil(24) as usize) {
        if h[0] != 20 || h[1] & 0xffff_ffff != libc::SOL_SOCKET as u64 {
            continue;
        }
        let fd = (h[2] & 0xffff_ffff) as i32;
        // SAFETY: the kernel installed this descriptor for us with the message; nothing else
        // owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match h[1] >> 32 {
            1 => got.fd = Some(owned),
            SCM_PIDFD => got.sender = Some(owned),
            _ => {}
        }
    }
    Ok(Some(got))
}

pub use thaw::sys::{
    recv_with_fds, recv_with_fds_flags, send_with_fds, seqpacket_connect, seqpacket_socket,
    unix_address, MAX_PASSED_FDS,
};

/// The peer of a connected `AF_UNIX` socket: (pid, uid, gid) when it connected.
pub fn peer_cred(sock: RawFd) -> io::Result<(i32, u32, u32)> {
    let mut cred = [0u32; 3];
    let mut len = 12u32;
    syscall(
        libc::SYS_getsockopt,
        [
            sock as u64,
            libc::SOL_SOCKET as u64,
            libc::SO_PEERCRED as u64,
            cred.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    )?;
    Ok((cred[0] as i32, cred[1], cred[2]))
}

/// A pidfd of the peer of a connected `AF_UNIX` socket (SO_PEERPIDFD, Linux 6.5): it names the
/// process that connected even after its PID is reused.
pub fn peer_pidfd(sock: RawFd) -> io::Result<OwnedFd> {
    const SO_PEERPIDFD: u64 = 77;
    let mut fd = -1i32;
    let mut len = 4u32;
    syscall(
        libc::SYS_getsockopt,
        [
            sock as u64,
            libc::SOL_SOCKET as u64,
            SO_PEERPIDFD,
            &mut fd as *mut i32 as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    )?;
    // SAFETY: getsockopt(SO_PEERPIDFD) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process of `pidfd` still runs (signal 0).
pub fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    syscall(
        libc::SYS_pidfd_send_signal,
        [pidfd.as_raw_fd() as u64, 0, 0, 0, 0, 0],
    )
    .is_ok()
}

/// The argument that makes `thaw` the nursery of `thaw serve` (see [`spawn_nursery`]).
pub const NURSERY_ARG: &str = "--serve-nursery";
/// The nursery's socket.
const NURSERY_FD: RawFd = 3;

/// Starts the nursery of `thaw serve`: a process that makes the inits of instances' namespaces
/// on request, so the server itself never forks once it serves (a fork of a process with many
/// threads write-protects all of its memory, and each thread's next write then faults and
/// interrupts the other CPUs; and the fork would hold copies of callers' descriptors in flight).
/// It is this program run anew, so that what each init copies is a fresh process, not the
/// server. For each byte read on `sock` it answers one message: an `i32`, the init's PID (0: it
/// could not mount its /proc; negative: an errno), and with a PID its pidfd and its PID and
/// mount namespaces. It ends when `sock` reaches end of file or the thread that started it
/// ends. Returns once the child has closed its copies of this process's descriptors.
pub fn spawn_nursery(sock: RawFd) -> io::Result<i32> {
    use std::io::Read;
    let (closed_r, closed_w) = pipe()?;
    let parent = std::ffi::CString::new(std::process::id().to_string()).expect("digits");
    let nursery = std::ffi::CString::new(NURSERY_ARG).expect("no NUL");
    let argv = [
        c"thaw".as_ptr(),
        nursery.as_ptr(),
        parent.as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: clone without CLONE_VM or a new stack is fork: the child has a copy of this
    // address space and of this thread only; it makes raw system calls only (no allocation,
    // no lock another thread could hold) on what was built above, then execs or exits.
    let r = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as u64, 0, 0, 0, 0) };
    match r {
        0 => {
            if sock != NURSERY_FD {
                let _ = syscall(libc::SYS_dup3, [sock as u64, NURSERY_FD as u64, 0, 0, 0, 0]);
            } else {
                let _ = syscall(
                    libc::SYS_fcntl,
                    [sock as u64, libc::F_SETFD as u64, 0, 0, 0, 0],
                );
            }
            keep_only(NURSERY_FD);
            let _ = syscall(
                libc::SYS_prctl,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    libc::SIGKILL as u64,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            let _ = syscall(
                libc::SYS_execve,
                [
                    c"/proc/self/exe".as_ptr() as u64,
                    argv.as_ptr() as u64,
                    envp.as_ptr() as u64,
                    0,
                    0,
                    0,
                ],
            );
            let _ = syscall(libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]);
            unreachable!("exit_group returned")
        }
        r if r < 0 => Err(io::Error::last_os_error()),
        r => {
            // End of file once the child has closed everything but its socket.
            drop(closed_w);
            let _ = std::fs::File::from(closed_r).read(&mut [0u8; 1]);
            Ok(r as i32)
        }
    }
}

/// The nursery (`thaw --serve-nursery PARENT`, started by [`spawn_nursery`]): serves requests
/// for inits on its socket until the server is gone.
pub fn nursery_main(parent: &str) -> ! {
    nursery_loop(NURSERY_FD, parent.parse().unwrap_or(0))
}

fn nursery_loop(sock: RawFd, parent: u32) -> ! {
    let exit = || -> ! {
        let _ = syscall(libc::SYS_exit_group, [0; 6]);
        unreachable!("exit_group returned")
    };
    // The runtime may have opened its standard descriptors again on /dev/null.
    keep_only(sock);
    // The server may have ended before the nursery could ask to end with it.
    if syscall(libc::SYS_getppid, [0; 6]).ok() != Some(i64::from(parent)) {
        exit();
    }
    // Inits are reaped by the kernel (the server watches them through their pidfds); no signal
    // the server's thread had blocked stays blocked (exec keeps the mask).
    set_disposition(libc::SIGCHLD, libc::SIG_IGN);
    let none = 0u64;
    let _ = syscall(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &none as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
    // The inits running, each with its stack (they share this process's memory); a stack is
    // reused once its init has ended, not unmapped: with memory shared, each unmapping would
    // interrupt every CPU an init may run on.
    let mut running: Vec<(OwnedFd, u64)> = Vec::new();
    let mut free: Vec<u64> = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        match syscall(
            libc::SYS_read,
            [sock as u64, byte.as_mut_ptr() as u64, 1, 0, 0, 0],
        ) {
            Ok(1) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => exit(),
        }
        // Which inits have ended, all in one poll (an error counts none as ended).
        let fds: Vec<RawFd> = running.iter().map(|(p, _)| p.as_raw_fd()).collect();
        let ended = poll_readable(&fds, Some(std::time::Duration::ZERO))
            .unwrap_or_else(|_| vec![false; fds.len()]);
        let mut ended = ended.into_iter();
        running.retain(|(_, stack)| {
            let ended = ended.next().unwrap_or(false);
            if ended {
                free.push(*stack);
            }
            !ended
        });
        let made = match free.pop() {
            Some(stack) => Ok(stack),
            None => init_stack(),
        }
        .and_then(|stack| match nursery_init(stack) {
            Ok(Some(init)) => Ok(Some((init, stack))),
            other => {
                free.push(stack);
                other.map(|_| None)
            }
        });
        let sent = match made {
            Ok(Some((init, stack))) => {
                let [pidfd, pidns, mntns] = init.fds;
                let sent = send_with_fds(
                    sock,
                    &init.pid.to_ne_bytes(),
                    &[pidfd.as_raw_fd(), pidns.as_raw_fd(), mntns.as_raw_fd()],
                );
                running.push((pidfd, stack));
                sent
            }
            Ok(None) => send_with_fds(sock, &0i32.to_ne_bytes(), &[]),
            Err(e) => send_with_fds(
                sock,
                &(-e.raw_os_error().unwrap_or(libc::EIO)).to_ne_bytes(),
                &[],
            ),
        };
        if sent.is_err() {
            exit();
        }
    }
}

/// Closes every descriptor but `fd`.
fn keep_only(fd: RawFd) {
    if fd > 0 {
        let _ = syscall(libc::SYS_close_range, [0, fd as u64 - 1, 0, 0, 0, 0]);
    }
    let _ = syscall(
        libc::SYS_close_range,
        [fd as u64 + 1, u64::from(u32::MAX), 0, 0, 0, 0],
    );
}

fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    // struct kernel_sigaction { handler, flags, restorer, mask }
    let act: [u64; 4] = [handler as u64, 0, 0, 0];
    let _ = syscall(
        libc::SYS_rt_sigaction,
        [sig as u64, act.as_ptr() as u64, 0, 8, 0, 0],
    );
}

/// The stack of an init (it makes raw system calls only).
const INIT_STACK: u64 = 64 * 1024;

fn init_stack() -> io::Result<u64> {
    syscall(
        libc::SYS_mmap,
        [
            0,
            INIT_STACK,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK) as u64,
            u64::MAX,
            0,
        ],
    )
    .map(|a| a as u64)
}

extern "C" fn init_main(ready: *mut libc::c_void) -> libc::c_int {
    namespace_init_loop(ready as usize as RawFd)
}

/// An init the nursery made: its PID, and its pidfd, PID namespace and mount namespace.
struct NurseryInit {
    pid: i32,
    fds: [OwnedFd; 3],
}

/// `ioctl`s on a pidfd that open one of its process's namespaces (`_IO(0xFF, n)`).
const PIDFD_GET_MNT_NAMESPACE: u64 = 0xFF03;
const PIDFD_GET_PID_NAMESPACE: u64 = 0xFF05;

/// In the nursery: one init on `stack`, ready; `None` if it could not mount its /proc (it has
/// ended then, as on an error, so the stack is free again).
fn nursery_init(stack: u64) -> io::Result<Option<NurseryInit>> {
    let (ready_r, ready_w) = pipe()?;
    let mut pidfd: RawFd = -1;
    // CLONE_VM: the init shares this small process's memory instead of copying it (and this
    // process's next writes then fault no copies); it has its own descriptors and signal
    // dispositions.
    let flags =
        libc::CLONE_VM | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: the nursery has one thread. The child runs `init_main` on its own stack (the top
    // of `stack`, which nothing else uses) and makes raw system calls only, so sharing this
    // memory and its thread pointer is safe; it never returns. The kernel writes the pidfd to
    // `pidfd`.
    let r = unsafe {
        libc::clone(
            init_main,
            (stack + INIT_STACK) as *mut libc::c_void,
            flags,
            ready_w.as_raw_fd() as usize as *mut libc::c_void,
            &mut pidfd as *mut RawFd,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(ready_w);
    // SAFETY: clone returned this pidfd to us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut byte = [0u8; 1];
    let ok = matches!(
        std::io::Read::read(&mut std::fs::File::from(ready_r), &mut byte),
        Ok(1)
    ) && byte[0] == 1;
    // The init's namespaces from its pidfd (kernel 6.11+), else from /proc: two path walks.
    // The nursery runs alone (not as a fork of a process with other threads): it may allocate.
    let ns = |kind: &str| {
        let request = if kind == "pid" {
            PIDFD_GET_PID_NAMESPACE
        } else {
            PIDFD_GET_MNT_NAMESPACE
        };
        match syscall(
            libc::SYS_ioctl,
            [pidfd.as_raw_fd() as u64, request, 0, 0, 0, 0],
        ) {
            // SAFETY: the ioctl returned a new descriptor that nothing else owns.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(_) => std::fs::File::open(format!("/proc/{r}/ns/{kind}")).map(OwnedFd::from),
        }
    };
    let opened = if ok {
        ns("pid").and_then(|p| Ok(Some((p, ns("mnt")?))))
    } else {
        Ok(None)
    };
    match opened {
        Ok(Some((pidns, mntns))) => Ok(Some(NurseryInit {
            pid: r,
            fds: [pidfd, pidns, mntns],
        })),
        other => {
            // Ended before answering: its stack is free.
            let _ = syscall(
                libc::SYS_pidfd_send_signal,
                [pidfd.as_raw_fd() as u64, libc::SIGKILL as u64, 0, 0, 0, 0],
            );
            let _ = wait_readable([pidfd.as_raw_fd()], -1);
            other.map(|_| None)
        }
    }
}

/// The init (PID 1) of a new PID and mount namespace, with its own /proc: it reaps what is left
/// to it, dies with the nursery, and writes one byte to `ready` once /proc is mounted.
fn namespace_init_loop(ready: RawFd) -> ! {
    keep_only(ready);
    let _ = syscall(
        libc::SYS_prctl,
        [
            libc::PR_SET_PDEATHSIG as u64,
            libc::SIGKILL as u64,
            0,
            0,
            0,
            0,
        ],
    );
    let ok = mount_private_proc().is_ok();
    let byte = [u8::from(ok)];
    // Nobody reads (the nursery is gone): nothing to wait for.
    if syscall(
        libc::SYS_write,
        [ready as u64, byte.as_ptr() as u64, 1, 0, 0, 0],
    )
    .is_err()
        || !ok
    {
        let _ = syscall(libc::SYS_exit_group, [1, 0, 0, 0, 0, 0]);
    }
    let _ = syscall(libc::SYS_close, [ready as u64, 0, 0, 0, 0, 0]);
    // SIGCHLD blocked is queued even though its default action is to ignore it (the nursery
    // ignores it explicitly, which would not be).
    set_disposition(libc::SIGCHLD, libc::SIG_DFL);
    let chld = 1u64 << (libc::SIGCHLD - 1);
    let _ = syscall(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as u64,
            &chld as *const u64 as u64,
            0,
            8,
            0,
            0,
        ],
    );
    loop {
        while let Ok(p) = syscall(
            libc::SYS_wait4,
            [u64::MAX, 0, (libc::WNOHANG | libc::__WALL) as u64, 0, 0, 0],
        ) {
            if p == 0 {
                break;
            }
        }
        let _ = syscall(
            libc::SYS_rt_sigtimedwait,
            [&chld as *const u64 as u64, 0, 0, 8, 0, 0],
        );
    }
}

/// A listening `AF_UNIX` sequenced-packet socket at `path`, readable and writable by its owner
/// only (the file is created under umask 0177); non-blocking (see [`wait_readable`]).
pub fn seqpacket_listen(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let sock = seqpacket_socket(libc::SOCK_NONBLOCK)?;
    let (addr, len) = unix_address(path)?;
    // SAFETY: umask has no preconditions; the previous mask is put back right after bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = syscall(
        libc::SYS_bind,
        [
            sock.as_raw_fd() as u64,
            &addr as *const libc::sockaddr_un as u64,
            u64::from(len),
            0,
            0,
            0,
        ],
    );
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound?;
    syscall(libc::SYS_listen, [sock.as_raw_fd() as u64, 128, 0, 0, 0, 0])?;
    Ok(sock)
}

/// Waits until one of `fds` is readable (or at end of file), at most `limit` (`None`: no limit);
/// which ones are.
pub fn poll_readable(fds: &[RawFd], limit: Option<std::time::Duration>) -> io::Result<Vec<bool>> {
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        match poll_once(fds, left, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// [`poll_readable`], failing with EINTR when a signal handler ran (ppoll is never restarted);
/// with `mask`, the signal mask while it waits.
pub fn poll_once(
    fds: &[RawFd],
    limit: Option<std::time::Duration>,
    mask: Option<u64>,
) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = limit.map(|l| libc::timespec {
        tv_sec: l.as_secs() as libc::time_t,
        tv_nsec: l.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(0, |t| t as *const libc::timespec as u64);
    let mask_ptr = mask.as_ref().map_or(0, |m| m as *const u64 as u64);
    syscall(
        libc::SYS_ppoll,
        [
            p.as_mut_ptr() as u64,
            p.len() as u64,
            ts_ptr,
            mask_ptr,
            8,
            0,
        ],
    )?;
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

/// [`poll_readable`] for a fixed set, at most `ms` milliseconds (-1: no limit).
pub fn wait_readable<const N: usize>(fds: [RawFd; N], ms: i32) -> io::Result<[bool; N]> {
    let limit = u64::try_from(ms).ok().map(std::time::Duration::from_millis);
    let ready = poll_readable(&fds, limit)?;
    Ok(std::array::from_fn(|i| ready[i]))
}

/// Whether `fd` is readable (or at end of file) within `limit` (an error counts as readable:
/// there is nothing to wait for).
pub fn readable_within(fd: RawFd, limit: std::time::Duration) -> bool {
    poll_readable(&[fd], Some(limit)).map_or(true, |r| r[0])
}

/// Accepts one connection (close-on-exec).
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    loop {
        match syscall(
            libc::SYS_accept4,
            [listener as u64, 0, 0, libc::SOCK_CLOEXEC as u64, 0, 0],
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        }
    }
}

/// Waits for one of `signals` (blocked by the caller in every thread); returns it.
pub fn wait_signal(signals: &[i32]) -> i32 {
    let set: u64 = signals.iter().fold(0, |s, &n| s | 1u64 << (n - 1));
    loop {
        if let Ok(n) = syscall(
            libc::SYS_rt_sigtimedwait,
            [&set as *const u64 as u64, 0, 0, 8, 0, 0],
        ) {
            return n as i32;
        }
    }
}

/// Most addresses one [`touch_remote`] call takes (the kernel's limit on an iovec array).
pub const TOUCH_MAX: usize = 1024;

/// Reads one byte at each of `addrs` (at most [`TOUCH_MAX`]) in process `pid`, which maps the
/// page there (and, for a file, the cached pages around it) into its page tables. Returns how
/// many addresses, in order, were read (short where a page is missing or not readable).
pub fn touch_remote(pid: i32, addrs: &[u64]) -> io::Result<usize> {
    let addrs = &addrs[..addrs.len().min(TOUCH_MAX)];
    let mut bytes = [0u8; TOUCH_MAX];
    let remote: Vec<[u64; 2]> = addrs.iter().map(|&a| [a, 1]).collect();
    process_vm(
        libc::SYS_process_vm_readv,
        pid,
        &remote,
        &mut bytes[..addrs.len()],
    )
}

/// Reads `buf.len()` bytes at `addr` of process `pid` and writes them back where they were:
/// the contents stay, and each page the process shared copy-on-write becomes its own. Returns
/// the bytes written back (short where a page is missing or not writable).
pub fn rewrite_in_place(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len() as u64;
    let read = process_vm(libc::SYS_process_vm_readv, pid, &[[addr, len]], buf)?;
    process_vm(
        libc::SYS_process_vm_writev,
        pid,
        &[[addr, read as u64]],
        &mut buf[..read],
    )
}

/// `process_vm_readv` or `process_vm_writev` between `local` here and the `remote` pieces
/// (address, length) of process `pid`, in order.
fn process_vm(nr: i64, pid: i32, remote: &[[u64; 2]], local: &mut [u8]) -> io::Result<usize> {
    let local = [local.as_mut_ptr() as u64, local.len() as u64];
    syscall(
        nr,
        [
            pid as u64,
            local.as_ptr() as u64,
            1,
            remote.as_ptr() as u64,
            remote.len() as u64,
            0,
        ],
    )
    .map(|n| n as usize)
}

/// Runs the calling thread only when a CPU would otherwise be idle (SCHED_IDLE), or again as
/// any other (SCHED_OTHER).
pub fn sched_idle(idle: bool) {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let _ = syscall(
        libc::SYS_sched_setscheduler,
        [
            0,
            policy as u64,
            &param as *const libc::sched_param as u64,
            0,
            0,
            0,
        ],
    );
}
