//! The SDK's raw system interface. Every `unsafe` block of the SDK lives here.
//!
//! The functions marked "async-signal-safe" issue the `syscall` instruction directly: they touch no
//! libc state (not even errno), so they may run in a signal handler and in the raw-forked child.

use std::arch::asm;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// One raw system call with up to six arguments; returns the kernel's result (negative errno on
/// failure). Async-signal-safe.
#[inline(always)]
pub fn syscall6(nr: i64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the `syscall` instruction itself has no memory-safety requirements on this side;
    // callers pass arguments that are valid for the call (pointers to live, correctly sized
    // buffers, or none). rcx and r11 are clobbered by the instruction and declared so.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

fn check(r: i64) -> io::Result<i64> {
    if (-4095..0).contains(&r) {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r)
    }
}

/// The calling thread's id. Async-signal-safe.
pub fn gettid() -> i32 {
    syscall6(libc::SYS_gettid, [0; 6]) as i32
}

/// The process id. Async-signal-safe.
pub fn getpid() -> i32 {
    syscall6(libc::SYS_getpid, [0; 6]) as i32
}

/// Sends `sig` to thread `tid` of this process. Async-signal-safe.
pub fn tgkill_self(tid: i32, sig: i32) -> io::Result<()> {
    check(syscall6(
        libc::SYS_tgkill,
        [getpid() as u64, tid as u64, sig as u64, 0, 0, 0],
    ))
    .map(drop)
}

/// Reads /proc/self/task/TID/syscall into `buf`; the length read. Allocation-free.
pub fn read_task_syscall(tid: i32, buf: &mut [u8]) -> Option<usize> {
    read_task_file(tid, b"/syscall\0", buf)
}

/// Whether thread `tid` of this process is gone or has begun to exit (PF_EXITING in the flags of
/// its /proc/self/task/TID/stat). Allocation-free.
pub fn task_exiting(tid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    task_flags(tid).is_none_or(|flags| flags & PF_EXITING != 0)
}

/// The kernel's flags of thread `tid` of this process (field 9 of /proc/self/task/TID/stat);
/// `None` if it is gone. Allocation-free.
fn task_flags(tid: i32) -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_task_file(tid, b"/stat\0", &mut buf)?;
    stat_number(&buf[..n], 9)
}

/// Whether thread `tid` of this process is one of the kernel's io_uring workers (PF_IO_WORKER:
/// `iou-wrk-PID`, `iou-sqp-PID`), which the kernel runs in the process for its rings, makes and
/// ends as it needs, and never lets run user code: not a thread of the program. Allocation-free.
pub fn task_is_io_worker(tid: i32) -> bool {
    const PF_IO_WORKER: u64 = 0x10;
    task_flags(tid).is_some_and(|flags| flags & PF_IO_WORKER != 0)
}

/// The process's threads less the kernel's io_uring workers (see [`task_is_io_worker`]), counted
/// in /proc/self/task; `None` if it cannot be read. Allocation-free.
pub fn program_thread_count() -> Option<u64> {
    let fd = syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            c"/proc/self/task".as_ptr() as u64,
            (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        return None;
    }
    let mut count = 0u64;
    let mut buf = [0u8; 4096];
    let ok = loop {
        let n = syscall6(
            libc::SYS_getdents64,
            [
                fd as u64,
                buf.as_mut_ptr() as u64,
                buf.len() as u64,
                0,
                0,
                0,
            ],
        );
        if n < 0 {
            break false;
        }
        if n == 0 {
            break true;
        }
        // struct linux_dirent64 { d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[] }
        let mut at = 0usize;
        while at + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let mut tid = 0i32;
            let mut digits = 0;
            for &b in name.iter().take_while(|&&b| b != 0) {
                if !b.is_ascii_digit() {
                    digits = 0;
                    break;
                }
                tid = tid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                digits += 1;
            }
            if digits > 0 && !task_is_io_worker(tid) {
                count += 1;
            }
            at += reclen.max(1);
        }
    };
    syscall6(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
    ok.then_some(count)
}

/// Calls `each` with every child process of thread `tid` of this process
/// (/proc/self/task/TID/children). Allocation-free.
pub fn task_children(tid: i32, mut each: impl FnMut(i32)) {
    let mut buf = [0u8; 4096];
    let Some(n) = read_task_file(tid, b"/children\0", &mut buf) else {
        return;
    };
    buf[..n]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|p| !p.is_empty())
        .for_each(|p| {
            let pid = p
                .iter()
                .fold(0i64, |n, &d| n * 10 + i64::from(d.wrapping_sub(b'0')));
            each(pid as i32)
        });
}

/// Reads /proc/self/task/TID + `tail` (NUL-terminated) into `buf`. Allocation-free.
fn read_task_file(tid: i32, tail: &[u8], buf: &mut [u8]) -> Option<usize> {
    read_numbered(b"/proc/self/task/", tid, tail, buf)
}

/// Reads the file named `head`, the decimal `n`, `tail` (NUL-terminated) into `buf`; the length
/// read, if any. Allocation-free.
fn read_numbered(head: &[u8], n: i32, tail: &[u8], buf: &mut [u8]) -> Option<usize> {
    read_path_raw(&numbered_path(head, n, tail)?, buf)
}

/// `head`, the decimal `n`, `tail` (NUL-terminated): a path of at most 64 bytes. Allocation-free.
fn numbered_path(head: &[u8], n: i32, tail: &[u8]) -> Option<[u8; 64]> {
    if n < 0 {
        return None;
    }
    let mut path = [0u8; 64];
    path[..head.len()].copy_from_slice(head);
    let mut at = head.len();
    let mut digits = [0u8; 12];
    let mut n = n as u32;
    let mut k = 0;
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in (0..k).rev() {
        path[at] = digits[i];
        at += 1;
    }
    path[at..at + tail.len()].copy_from_slice(tail);
    Some(path)
}

/// Reads the file at `path` (NUL-terminated) into `buf`; the length read, if any. Allocation-free.
fn read_path_raw(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    let fd = syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    if fd < 0 {
        return None;
    }
    let got = syscall6(
        libc::SYS_read,
        [
            fd as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
            0,
        ],
    );
    syscall6(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
    (got > 0).then_some(got as usize)
}

/// An O_PATH descriptor of the directory at `path` (to come back to with [`fchdir`]).
pub fn open_path_dir(path: &str) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(Into::into)
}

/// chmod of the file at `path` itself, never through a symlink put there meanwhile: opened
/// `O_PATH | O_NOFOLLOW`, refused if it is a symlink, changed through its descriptor.
pub fn chmod_nofollow(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if f.metadata()?.file_type().is_symlink() {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    use std::os::fd::AsRawFd;
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", f.as_raw_fd()),
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
}

/// renameat2(from, to, RENAME_NOREPLACE): fails with EEXIST rather than replace a file at `to`.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    two_paths(
        libc::SYS_renameat2,
        from.as_os_str(),
        to,
        libc::RENAME_NOREPLACE as u64,
    )
}

/// A `*at` call on two paths, both from the working directory (linkat, renameat2).
fn two_paths(nr: i64, from: &std::ffi::OsStr, to: &std::path::Path, flags: u64) -> io::Result<()> {
    let c = |p: &std::ffi::OsStr| {
        std::ffi::CString::new(p.as_encoded_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (from, to) = (c(from)?, c(to.as_os_str())?);
    check(syscall6(
        nr,
        [
            libc::AT_FDCWD as u64,
            from.as_ptr() as u64,
            libc::AT_FDCWD as u64,
            to.as_ptr() as u64,
            flags,
            0,
        ],
    ))
    .map(drop)
}

/// mkfifo(path, mode), the mode as given (the umask cleared from it by a chmod after).
pub fn mkfifo(path: &str, mode: u32) -> io::Result<()> {
    let c = std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    check(syscall6(
        libc::SYS_mknodat,
        [
            libc::AT_FDCWD as u64,
            c.as_ptr() as u64,
            u64::from(libc::S_IFIFO | (mode & 0o7777)),
            0,
            0,
            0,
        ],
    ))?;
    chmod_nofollow(std::path::Path::new(path), mode)
}

/// The target of the symlink that descriptor `fd` (opened `O_PATH | O_NOFOLLOW`) is.
pub fn symlink_target(fd: i32) -> io::Result<std::path::PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let n = check(syscall6(
        libc::SYS_readlinkat,
        [
            fd as u64,
            c"".as_ptr() as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
        ],
    ))?;
    buf.truncate(n as usize);
    Ok(std::path::PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(buf),
    ))
}

/// The effective user id.
pub fn geteuid() -> u32 {
    syscall6(libc::SYS_geteuid, [0; 6]) as u32
}

/// The effective group id.
pub fn getegid() -> u32 {
    syscall6(libc::SYS_getegid, [0; 6]) as u32
}

/// A file's owner as a checkpoint keeps it: `None` where it is the process's own (the
/// restore's own then, as with `--as-caller` or another uid map), else `(uid, gid)`.
pub fn foreign_owner(uid: u32, gid: u32) -> Option<(u32, u32)> {
    ((uid, gid) != (geteuid(), getegid())).then_some((uid, gid))
}

/// fchdir(fd).
pub fn fchdir(fd: i32) -> io::Result<()> {
    check(syscall6(libc::SYS_fchdir, [fd as u64, 0, 0, 0, 0, 0])).map(drop)
}

/// The hexadecimal value after `key` ("\nSigPnd:") in a /proc status text. Allocation-free.
fn status_hex(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let mut v = 0u64;
    for &b in text[at..].iter().skip_while(|b| b.is_ascii_whitespace()) {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => break,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

/// Thread `tid`'s own pending signals (SigPnd of /proc/self/task/TID/status); `None` for one
/// stopped by a tracer (the checkpoint's ptrace helper: its queue is not read) or unreadable.
/// Async-signal-safe.
pub fn thread_pending(tid: i32) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let len = read_task_file(tid, b"/status\0", &mut buf)?;
    let text = &buf[..len];
    let state = b"\nState:";
    let st = text.windows(state.len()).position(|w| w == state)? + state.len();
    if text[st..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b't') {
        return None;
    }
    status_hex(text, b"\nSigPnd:")
}

/// The signals pending for the calling thread alone and for its whole process (`SigPnd` and
/// `ShdPnd` of /proc/thread-self/status), blocked or not. Allocation-free.
pub fn pending_sets() -> Option<(u64, u64)> {
    let mut buf = [0u8; 4096];
    let n = read_path_raw(b"/proc/thread-self/status\0", &mut buf)?;
    let text = &buf[..n];
    Some((
        status_hex(text, b"\nSigPnd:")?,
        status_hex(text, b"\nShdPnd:")?,
    ))
}

/// Takes one pending instance of signal `sig` off the calling thread's queue (its own first,
/// then its process's), without waiting, with its siginfo. Async-signal-safe.
pub fn take_signal(sig: i32, info: &mut [u64; 16]) -> bool {
    let set = 1u64 << (sig - 1);
    let zero = [0u64; 2];
    syscall6(
        libc::SYS_rt_sigtimedwait,
        [
            &set as *const u64 as u64,
            info.as_mut_ptr() as u64,
            zero.as_ptr() as u64,
            8,
            0,
            0,
        ],
    ) == i64::from(sig)
}

/// Queues signal `sig` with siginfo `info` for thread `tid` of this process, or for the whole
/// process when `tid` is `None` (which the kernel lets only its main thread do for a siginfo of
/// the kernel's own or of kill(), and a thread do for itself). Async-signal-safe.
pub fn queue_signal(tid: Option<i32>, sig: i32, info: &[u64; 16]) -> Result<(), i32> {
    let pid = getpid() as u64;
    let r = match tid {
        Some(t) => syscall6(
            libc::SYS_rt_tgsigqueueinfo,
            [pid, t as u64, sig as u64, info.as_ptr() as u64, 0, 0],
        ),
        None => syscall6(
            libc::SYS_rt_sigqueueinfo,
            [pid, sig as u64, info.as_ptr() as u64, 0, 0, 0],
        ),
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// How many threads the process has now (`num_threads` of /proc/self/stat), or `None` when it
/// cannot be read. Allocation-free, for a signal handler.
pub fn thread_count() -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_path_raw(b"/proc/self/stat\0", &mut buf)?;
    stat_threads(&buf[..n])
}

/// `num_threads` (field 20) of a /proc/PID/stat line: the 18th field after the command name,
/// whose closing parenthesis is the line's last.
fn stat_threads(line: &[u8]) -> Option<u64> {
    stat_number(line, 20)
}

/// Field `n` (numbered as in proc(5), 3 or more) of a /proc/PID/stat line, as a number: past
/// the command name, whose closing parenthesis is the line's last.
fn stat_number(line: &[u8], n: usize) -> Option<u64> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let field = line[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty())
        .nth(n - 3)?;
    let mut v = 0u64;
    for &d in field {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

/// Sets a signal frame to issue its interrupted system call `b` again on return, as the kernel
/// does for SA_RESTART, if the frame shows exactly that call interrupted (same instruction and
/// stack pointers, same argument registers, a `syscall` instruction just before, EINTR).
/// Whether it did.
///
/// # Safety
/// `uc` must point to a live `ucontext_t` the kernel built for a signal handler.
pub unsafe fn restart_in_frame(
    uc: *mut libc::c_void,
    b: &crate::state::interrupted::Blocked,
    again: crate::state::interrupted::Again,
) -> bool {
    // struct ucontext: flags, link, stack_t (24 bytes), then mcontext's gregs.
    const GREGS: usize = 40;
    const ARG_REGS: [usize; 6] = [8, 9, 12, 2, 0, 1]; // rdi, rsi, rdx, r10, r8, r9
    const RAX: usize = 13;
    const RSP: usize = 15;
    const RIP: usize = 16;
    // SAFETY: per the contract, gregs are 23 u64 at offset 40 of the frame.
    let g = unsafe { (uc as *mut u8).add(GREGS) as *mut u64 };
    // SAFETY: indices below 23, inside gregs.
    let reg = |i: usize| unsafe { g.add(i).read() };
    let eintr = (-(libc::EINTR as i64)) as u64;
    if reg(RAX) != eintr || reg(RIP) != b.pc || reg(RSP) != b.sp || b.pc < 2 {
        return false;
    }
    if ARG_REGS.iter().zip(b.args).any(|(&r, a)| reg(r) != a) {
        return false;
    }
    // SAFETY: the instruction pointer of a thread that just left a system call points just
    // past its `syscall` instruction, in mapped, executable memory.
    let insn = unsafe { ((b.pc - 2) as *const [u8; 2]).read_unaligned() };
    if insn != [0x0f, 0x05] {
        return false;
    }
    // SAFETY: writes to gregs, as above.
    unsafe {
        if let Some((arg, value)) = again.set_arg {
            g.add(ARG_REGS[arg]).write(value);
        }
        g.add(RAX).write(b.nr);
        g.add(RIP).write(b.pc - 2);
    }
    true
}

/// fork(2) without libc: no atfork handlers, no bookkeeping. Returns 0 in the child.
/// Async-signal-safe.
pub fn raw_fork() -> i64 {
    syscall6(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0])
}

/// [`raw_fork`] for the checkpoint's own children (the snapshot, the ptrace helper): their end
/// raises no SIGCHLD in the application, and its `wait`/`waitpid(-1)` does not see them (a
/// "clone" child, reaped with `__WALL` only, as [`reap`] does).
pub fn raw_fork_quiet() -> i64 {
    syscall6(libc::SYS_clone, [0, 0, 0, 0, 0, 0])
}

/// The frozen child's whole life: die with the parent, otherwise sleep until killed.
pub fn frozen_child_loop() -> ! {
    syscall6(
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
    loop {
        syscall6(libc::SYS_pause, [0; 6]);
    }
}

/// arch_prctl(ARCH_GET_FS / ARCH_GET_GS). Async-signal-safe.
pub fn fs_gs_base() -> (u64, u64) {
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    let mut fs = 0u64;
    let mut gs = 0u64;
    syscall6(
        libc::SYS_arch_prctl,
        [ARCH_GET_FS, &mut fs as *mut u64 as u64, 0, 0, 0, 0],
    );
    syscall6(
        libc::SYS_arch_prctl,
        [ARCH_GET_GS, &mut gs as *mut u64 as u64, 0, 0, 0, 0],
    );
    (fs, gs)
}

/// get_robust_list(0): (head, len). Async-signal-safe.
pub fn robust_list() -> (u64, u64) {
    robust_list_of(0)
}

/// get_robust_list(tid): (head, len) of thread `tid` of this process (0: the caller).
pub fn robust_list_of(tid: i32) -> (u64, u64) {
    let mut head = 0u64;
    let mut len = 0u64;
    syscall6(
        libc::SYS_get_robust_list,
        [
            tid as u64,
            &mut head as *mut u64 as u64,
            &mut len as *mut u64 as u64,
            0,
            0,
            0,
        ],
    );
    (head, len)
}

/// prctl(PR_GET_TID_ADDRESS). Async-signal-safe.
pub fn clear_child_tid() -> u64 {
    let mut addr = 0u64;
    syscall6(
        libc::SYS_prctl,
        [
            libc::PR_GET_TID_ADDRESS as u64,
            &mut addr as *mut u64 as u64,
            0,
            0,
            0,
            0,
        ],
    );
    addr
}

/// The current program break. Async-signal-safe.
pub fn current_brk() -> u64 {
    syscall6(libc::SYS_brk, [0; 6]) as u64
}

/// The kernel's `struct sigaction` on x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// rt_sigaction(sig, new, old). Async-signal-safe.
pub fn rt_sigaction(
    sig: i32,
    new: Option<&KernelSigaction>,
    old: Option<&mut KernelSigaction>,
) -> io::Result<()> {
    let new = new.map_or(0, |n| n as *const KernelSigaction as u64);
    let old = old.map_or(0, |o| o as *mut KernelSigaction as u64);
    check(syscall6(
        libc::SYS_rt_sigaction,
        [sig as u64, new, old, 8, 0, 0],
    ))
    .map(drop)
}

/// rt_sigprocmask(how, set, old). Async-signal-safe.
pub fn sigprocmask(how: i32, set: Option<u64>) -> io::Result<u64> {
    let mut old = 0u64;
    let set_val = set.unwrap_or(0);
    let set_ptr = if set.is_some() {
        &set_val as *const u64 as u64
    } else {
        0
    };
    check(syscall6(
        libc::SYS_rt_sigprocmask,
        [how as u64, set_ptr, &mut old as *mut u64 as u64, 8, 0, 0],
    ))?;
    Ok(old)
}

/// Duplicates up to `len` bytes buffered in pipe `from` into pipe `to` without consuming them:
/// how many, 0 for an empty pipe, or a negative errno. Async-signal-safe.
pub fn tee(from: i32, to: i32, len: usize) -> i64 {
    let n = syscall6(
        libc::SYS_tee,
        [
            from as u64,
            to as u64,
            len as u64,
            libc::SPLICE_F_NONBLOCK as u64,
            0,
            0,
        ],
    );
    // Empty, with a writer somewhere: nothing to copy, not a failure.
    if n == -i64::from(libc::EAGAIN) {
        0
    } else {
        n
    }
}

/// lseek(fd, 0, SEEK_CUR). Async-signal-safe.
pub fn tell(fd: i32) -> i64 {
    syscall6(
        libc::SYS_lseek,
        [fd as u64, 0, libc::SEEK_CUR as u64, 0, 0, 0],
    )
}

/// Installs `handler` (three-argument form) for `sig` with SA_SIGINFO | SA_RESTART,
/// blocking every other signal while it runs; returns the previous disposition.
pub fn install_handler(
    sig: i32,
    handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
) -> io::Result<KernelSigaction> {
    // Installed through libc so that glibc supplies its SA_RESTORER trampoline; the previous
    // action is read raw so that it is the kernel's exact view.
    let mut act: libc::sigaction = unsafe_zeroed_sigaction();
    act.sa_sigaction = handler as usize;
    // SA_ONSTACK: on a thread with an alternate signal stack, the handler and the kernel's
    // frame (about 3 KiB with AVX-512 state) go there. Go runs goroutines and their system
    // calls on stacks of 2 KiB: on one of them the frame overwrote the neighbouring goroutines'
    // stacks (cgo requires SA_ONSTACK of every handler installed outside Go).
    act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    let mut old_libc: libc::sigaction = unsafe_zeroed_sigaction();
    let mut old = KernelSigaction::default();
    rt_sigaction(sig, None, Some(&mut old))?;
    // SAFETY: `act` is a fully initialised sigaction whose handler is a valid extern "C" function
    // with the SA_SIGINFO signature; `old_libc` is writable.
    let r = unsafe {
        libc::sigfillset(&mut act.sa_mask);
        libc::sigaction(sig, &act, &mut old_libc)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// The 16 words of the siginfo a handler was given. Async-signal-safe.
pub fn siginfo_words(info: *const libc::siginfo_t) -> [u64; 16] {
    // SAFETY: the kernel passes an SA_SIGINFO handler a valid 128-byte siginfo; read by value.
    unsafe { std::ptr::read_unaligned(info as *const [u64; 16]) }
}

/// Calls the signal handler at `handler` as the kernel would: `(signo, info, ctx)` if
/// `three_args` (SA_SIGINFO), else `(signo)`.
///
/// # Safety
/// `handler` must be the address of a handler of that form; `info` and `ctx` the ones the
/// kernel passed the calling handler.
pub unsafe fn call_handler(
    handler: u64,
    three_args: bool,
    signo: i32,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    if three_args {
        // SAFETY: per this function's contract.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler as usize) };
        f(signo, info, ctx);
    } else {
        // SAFETY: per this function's contract.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(handler as usize) };
        f(signo);
    }
}

fn unsafe_zeroed_sigaction() -> libc::sigaction {
    // SAFETY: libc::sigaction is a plain C struct for which all-zero bytes are a valid value
    // (SIG_DFL, no flags, empty mask).
    unsafe { std::mem::zeroed() }
}

/// Copies our own vDSO text, which `/proc/self/maps` lists at `[start, start + len)`. (Not through
/// /proc/self/mem: a launcher with a file capability is not dumpable and may not open it.)
pub fn read_own_vdso(start: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: the kernel maps the vDSO readable for the life of the process and never changes it;
    // the range comes from our own maps and the destination is a fresh buffer of `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(start as *const u8, out.as_mut_ptr(), len) };
    out
}

/// Unmaps a range of our own address space that nothing in Rust refers to (the restorer region the
/// launcher left behind).
pub fn unmap_foreign_region(addr: u64, len: u64) -> io::Result<()> {
    check(syscall6(libc::SYS_munmap, [addr, len, 0, 0, 0, 0])).map(drop)
}

/// Copies `len` bytes from a region the launcher mapped into this process (not Rust memory).
pub fn copy_from_foreign_region(addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: the launcher mapped [addr, addr+len) readable before resuming us and nothing else
    // refers to it; the destination is a fresh Vec of exactly `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), len) };
    out
}

/// CPUID leaf/subleaf: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// XCR0, the xsave feature mask the OS enabled (0 if the CPU has no OSXSAVE).
pub fn xcr0() -> u64 {
    let (_, _, ecx, _) = cpuid(1, 0);
    if ecx & (1 << 27) == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: OSXSAVE is set (checked above), so XGETBV with ecx=0 is permitted in user mode.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

extern "C" {
    /// glibc ≥ 2.35: offset of this thread's rseq area from the thread pointer.
    static __rseq_offset: isize;
    /// glibc ≥ 2.35: size of the registered rseq area (0 when rseq is not registered).
    static __rseq_size: u32;
}

/// The rseq area glibc registered for the thread whose thread pointer is `fs_base`: (addr, size).
pub fn glibc_rseq(fs_base: u64) -> Option<(u64, u32)> {
    // SAFETY: both are plain data exported by glibc, written once at startup before main.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    (size != 0).then(|| (fs_base.wrapping_add(off as u64), size))
}

/// prlimit64(pid, resource) → (cur, max). Async-signal-safe.
pub fn prlimit(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    check(syscall6(
        libc::SYS_prlimit64,
        [
            pid as u64,
            u64::from(resource),
            0,
            &mut old as *mut libc::rlimit64 as u64,
            0,
            0,
        ],
    ))?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// Sets this process's soft RLIMIT_NOFILE (the hard one unchanged).
pub fn set_nofile_soft(cur: u64, max: u64) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    check(syscall6(
        libc::SYS_prlimit64,
        [
            0,
            libc::RLIMIT_NOFILE as u64,
            &new as *const libc::rlimit64 as u64,
            0,
            0,
            0,
        ],
    ))
    .map(drop)
}

/// prctl(PR_SET_DUMPABLE, value). Async-signal-safe.
pub fn set_dumpable(value: u64) {
    syscall6(
        libc::SYS_prctl,
        [libc::PR_SET_DUMPABLE as u64, value, 0, 0, 0, 0],
    );
}

/// Runs `f` with the process dumpable, then makes it what it was. A process that changed its
/// credentials is not dumpable: its /proc files belong to root and no process of its own user
/// may read or trace it. Async-signal-safe if `f` is.
pub fn while_dumpable<T>(f: impl FnOnce() -> T) -> T {
    let dumpable = prctl_get(libc::PR_GET_DUMPABLE).unwrap_or(1);
    if dumpable != 1 {
        set_dumpable(1);
    }
    let r = f();
    if dumpable != 1 {
        set_dumpable(dumpable);
    }
    r
}

/// prctl(option) for the getters that return their value.
pub fn prctl_get(option: i32) -> io::Result<u64> {
    check(syscall6(libc::SYS_prctl, [option as u64, 0, 0, 0, 0, 0])).map(|v| v as u64)
}

/// modify_ldt(0: read) into `buf`: the bytes of local descriptor table entries the process
/// has (0: none), or a negative errno.
pub fn modify_ldt_read(buf: &mut [u8]) -> i64 {
    syscall6(
        libc::SYS_modify_ldt,
        [0, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0],
    )
}

/// The process's permitted extended register state components (arch_prctl
/// ARCH_GET_XCOMP_PERM): the always-enabled ones plus any asked for with ARCH_REQ_XCOMP_PERM
/// (AMX tile data). 0 where the kernel has no such request.
pub fn xcomp_perm() -> u64 {
    let mut mask = 0u64;
    let r = syscall6(
        libc::SYS_arch_prctl,
        [
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64 as u64,
            0,
            0,
            0,
            0,
        ],
    );
    if r < 0 {
        0
    } else {
        mask
    }
}

/// arch_prctl codes for dynamically enabled register state (asm/prctl.h).
pub const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
pub const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;

/// prctl(option, &int) for the queries that write their answer through a pointer.
pub fn prctl_get_int(option: i32) -> io::Result<i32> {
    let mut v = 0i32;
    check(syscall6(
        libc::SYS_prctl,
        [option as u64, &mut v as *mut i32 as u64, 0, 0, 0, 0],
    ))?;
    Ok(v)
}

/// Maps one private anonymous page (not touched) and says whether it is resident already (as
/// under mlockall(MCL_FUTURE) without MCL_ONFAULT): (address, resident).
pub fn probe_page() -> Option<(u64, bool)> {
    let p = syscall6(
        libc::SYS_mmap,
        [
            0,
            4096,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    );
    if p < 0 {
        return None;
    }
    let mut vec = 0u8;
    let r = syscall6(
        libc::SYS_mincore,
        [p as u64, 4096, &mut vec as *mut u8 as u64, 0, 0, 0],
    );
    Some((p as u64, r == 0 && vec & 1 != 0))
}

pub fn unmap_probe_page(addr: u64) {
    syscall6(libc::SYS_munmap, [addr, 4096, 0, 0, 0, 0]);
}

/// The filesystem type (`f_type`) of the file open at `fd`.
pub fn fstatfs_type(fd: i32) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    check(syscall6(
        libc::SYS_fstatfs,
        [fd as u64, st.as_mut_ptr() as u64, 0, 0, 0, 0],
    ))?;
    // SAFETY: the kernel filled the struct (and it started zeroed).
    Ok(unsafe { st.assume_init() }.f_type)
}

/// fcntl(F_GETOWN_EX): (owner type, pid).
pub fn getown_ex(fd: i32) -> io::Result<(i32, i32)> {
    let mut owner = [0i32; 2];
    check(syscall6(
        libc::SYS_fcntl,
        [
            fd as u64,
            crate::state::sigio::F_GETOWN_EX as u64,
            owner.as_mut_ptr() as u64,
            0,
            0,
            0,
        ],
    ))?;
    Ok((owner[0], owner[1]))
}

/// The calling thread's NUMA policy, or the policy of the mapping at `addr`: (mode with its
/// flags, nodes 0-63); `None` if it cannot be read or names a node above 63.
pub fn get_mempolicy(addr: Option<u64>) -> Option<(u32, u64)> {
    const MPOL_F_ADDR: u64 = 2;
    let mut mode = 0i32;
    let mut nodes = [0u64; 16];
    let (at, flags) = addr.map_or((0, 0), |a| (a, MPOL_F_ADDR));
    let r = syscall6(
        libc::SYS_get_mempolicy,
        [
            &mut mode as *mut i32 as u64,
            nodes.as_mut_ptr() as u64,
            1024,
            at,
            flags,
            0,
        ],
    );
    (r == 0 && nodes[1..].iter().all(|&w| w == 0)).then_some((mode as u32, nodes[0]))
}

/// PR_MCE_KILL_GET of the calling thread (0 late, 1 early, 2 the system's default).
pub fn mce_kill_get() -> i64 {
    syscall6(
        libc::SYS_prctl,
        [libc::PR_MCE_KILL_GET as u64, 0, 0, 0, 0, 0],
    )
}

/// The calling thread's personality (personality(0xffffffff) only reads it).
pub fn personality_get() -> u64 {
    syscall6(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]) as u64 & 0xffff_ffff
}

/// ARCH_GET_CPUID of the calling thread: 1 when `cpuid` works, 0 when it faults.
pub fn cpuid_enabled() -> i64 {
    syscall6(libc::SYS_arch_prctl, [0x1011, 0, 0, 0, 0, 0])
}

/// PR_GET_SPECULATION_CTRL of the calling thread for one control.
pub fn speculation_ctrl(which: u32) -> io::Result<u32> {
    check(syscall6(
        libc::SYS_prctl,
        [
            libc::PR_GET_SPECULATION_CTRL as u64,
            u64::from(which),
            0,
            0,
            0,
            0,
        ],
    ))
    .map(|v| v as u32)
}

/// A thread's CPU mask (sched_getaffinity), in 64-bit words.
pub fn sched_getaffinity(tid: i32) -> io::Result<Vec<u64>> {
    let mut mask = vec![0u64; 128];
    let n = check(syscall6(
        libc::SYS_sched_getaffinity,
        [tid as u64, 1024, mask.as_mut_ptr() as u64, 0, 0, 0],
    ))?;
    mask.truncate((n as usize).div_ceil(8));
    Ok(mask)
}

/// The calling thread's nice value (getpriority(PRIO_PROCESS, 0), which the kernel answers as
/// 20 - nice). Async-signal-safe.
pub fn own_nice() -> Option<i32> {
    let r = syscall6(
        libc::SYS_getpriority,
        [libc::PRIO_PROCESS as u64, 0, 0, 0, 0, 0],
    );
    (r >= 0).then(|| 20 - r as i32)
}

/// The calling thread's CPU mask, into `mask` (1,024 CPUs): how many words the kernel wrote;
/// `None` where it has more CPUs or refuses. Async-signal-safe.
pub fn own_affinity(mask: &mut [u64; 16]) -> Option<usize> {
    let n = syscall6(
        libc::SYS_sched_getaffinity,
        [0, 128, mask.as_mut_ptr() as u64, 0, 0, 0],
    );
    (n >= 0).then(|| (n as usize).div_ceil(8))
}

/// A thread's I/O priority (ioprio_get(IOPRIO_WHO_PROCESS, tid); 0: the calling thread); 0 when
/// it cannot be read.
pub fn ioprio_get(tid: i32) -> u32 {
    syscall6(libc::SYS_ioprio_get, [1, tid as u64, 0, 0, 0, 0]).max(0) as u32
}

/// Thread `tid`'s scheduling policy with SCHED_RESET_ON_FORK (sched_getscheduler); `None`
/// when it cannot be read.
pub fn sched_getscheduler(tid: i32) -> Option<u32> {
    let r = syscall6(libc::SYS_sched_getscheduler, [tid as u64, 0, 0, 0, 0, 0]);
    (r >= 0).then_some(r as u32)
}

/// Reaps child `pid` (already ended).
pub fn reap(pid: i32) {
    let mut status = 0i32;
    while syscall6(
        libc::SYS_wait4,
        [
            pid as u64,
            &mut status as *mut i32 as u64,
            libc::__WALL as u64,
            0,
            0,
            0,
        ],
    ) == -(libc::EINTR as i64)
    {}
}

/// Reaps child `pid` if it has ended; never waits.
pub fn reap_if_ended(pid: i32) {
    let mut status = 0i32;
    let _ = syscall6(
        libc::SYS_wait4,
        [
            pid as u64,
            &mut status as *mut i32 as u64,
            (libc::WNOHANG | libc::__WALL) as u64,
            0,
            0,
            0,
        ],
    );
}

/// Waits until child `pid` has ended, leaving it unreaped (waitid WNOWAIT).
pub fn wait_ended_unreaped(pid: i32) -> io::Result<()> {
    let mut info = [0u64; 16];
    loop {
        let r = syscall6(
            libc::SYS_waitid,
            [
                libc::P_PID as u64,
                pid as u64,
                info.as_mut_ptr() as u64,
                (libc::WEXITED | libc::WNOWAIT) as u64,
                0,
                0,
            ],
        );
        if r != -(libc::EINTR as i64) {
            return check(r).map(drop);
        }
    }
}

/// How child `pid` ended, if it has, without waiting or reaping it (waitid WNOHANG|WNOWAIT):
/// `si_code` (CLD_EXITED, CLD_KILLED, CLD_DUMPED) and `si_status`.
pub fn ended_unreaped(pid: i32) -> Option<(i32, i32)> {
    // siginfo: si_code at 8, si_pid at 16, si_status at 24.
    let mut info = [0u8; 128];
    let r = syscall6(
        libc::SYS_waitid,
        [
            libc::P_PID as u64,
            pid as u64,
            info.as_mut_ptr() as u64,
            (libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) as u64,
            0,
            0,
        ],
    );
    let int = |at: usize| i32::from_ne_bytes(info[at..at + 4].try_into().expect("4"));
    // No child of that PID ended yet: waitid answers 0 and leaves si_pid 0.
    (r == 0 && int(16) == pid).then(|| (int(8), int(24)))
}

/// exit_group(code): ends the process at once (no atexit handlers). Async-signal-safe.
pub fn exit_group(code: i32) -> ! {
    loop {
        syscall6(libc::SYS_exit_group, [code as u64, 0, 0, 0, 0, 0]);
    }
}

/// kill(pid, SIGKILL) and reap it.
pub fn kill_and_reap(pid: i32) {
    syscall6(
        libc::SYS_kill,
        [pid as u64, libc::SIGKILL as u64, 0, 0, 0, 0],
    );
    reap(pid);
}

/// pipe2(O_CLOEXEC | O_NONBLOCK) → (read, write).
pub fn pipe_nonblock() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    check(syscall6(
        libc::SYS_pipe2,
        [
            fds.as_mut_ptr() as u64,
            (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64,
            0,
            0,
            0,
            0,
        ],
    ))?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// fcntl(fd, cmd, arg) for integer commands.
pub fn fcntl(fd: i32, cmd: i32, arg: u64) -> io::Result<i64> {
    check(syscall6(
        libc::SYS_fcntl,
        [fd as u64, cmd as u64, arg, 0, 0, 0],
    ))
}

/// F_ADD_SEALS, tried again while it fails with EBUSY. F_SEAL_WRITE waits (about 150 ms) for
/// pages with extra references to lose them and then gives up; the kernel's own page reclaim,
/// compaction or DAMON can hold one that long, so a few more tries tell a passing reference from
/// a real pin.
pub fn add_seals(fd: i32, seals: u32) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fcntl(fd, libc::F_ADD_SEALS, u64::from(seals)) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 10 => tries += 1,
            other => return other.map(drop),
        }
    }
}

/// FUTEX_WAIT_PRIVATE on `word` while it holds `expected`, for at most `timeout`.
/// Async-signal-safe.
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    let ts_ptr = ts.as_ref().map_or(0, |t| t as *const libc::timespec as u64);
    syscall6(
        libc::SYS_futex,
        [
            word.as_ptr() as u64,
            (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
            u64::from(expected),
            ts_ptr,
            0,
            0,
        ],
    );
}

/// FUTEX_WAKE_PRIVATE for every waiter on `word`. Async-signal-safe.
pub fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    syscall6(
        libc::SYS_futex,
        [
            word.as_ptr() as u64,
            (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
            i32::MAX as u64,
            0,
            0,
            0,
        ],
    );
}

/// eventfd2(count, flags) with close-on-exec.
pub fn eventfd(count: u64, flags: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = check(syscall6(
        libc::SYS_eventfd2,
        [
            count,
            u64::from(flags) | libc::EFD_CLOEXEC as u64,
            0,
            0,
            0,
            0,
        ],
    ))?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// epoll_create1(EPOLL_CLOEXEC).
pub fn epoll_create() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = check(syscall6(
        libc::SYS_epoll_create1,
        [libc::EPOLL_CLOEXEC as u64, 0, 0, 0, 0, 0],
    ))?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `epoll_ctl` with a packed `struct epoll_event` (u32 events, u64 data: 12 bytes on x86_64).
pub fn epoll_ctl_raw(epfd: i32, op: i32, fd: i32, event: &[u8; 12]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_epoll_ctl,
        [
            epfd as u64,
            op as u64,
            fd as u64,
            event.as_ptr() as u64,
            0,
            0,
        ],
    ))
    .map(drop)
}

fn owned(fd: i64) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor the kernel just created, which nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

/// socket(domain, type | SOCK_CLOEXEC, protocol).
/// accept4(fd, SOCK_CLOEXEC | SOCK_NONBLOCK) of a connection known to be waiting; the accepted
/// socket is given back blocking (its flags are the restored descriptor's to set).
pub fn accept_nowait(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    let s = check(syscall6(
        libc::SYS_accept4,
        [
            fd as u64,
            0,
            0,
            (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64,
            0,
            0,
        ],
    ))
    .map(owned)?;
    use std::os::fd::AsRawFd;
    let flags = fcntl(s.as_raw_fd(), libc::F_GETFL, 0)?;
    fcntl(
        s.as_raw_fd(),
        libc::F_SETFL,
        (flags & !(libc::O_NONBLOCK as i64)) as u64,
    )?;
    Ok(s)
}

pub fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<std::os::fd::OwnedFd> {
    check(syscall6(
        libc::SYS_socket,
        [
            domain as u64,
            (ty | libc::SOCK_CLOEXEC) as u64,
            protocol as u64,
            0,
            0,
            0,
        ],
    ))
    .map(owned)
}

/// socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0).
pub fn socketpair(ty: i32) -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0i32; 2];
    check(syscall6(
        libc::SYS_socketpair,
        [
            libc::AF_UNIX as u64,
            (ty | libc::SOCK_CLOEXEC) as u64,
            0,
            fds.as_mut_ptr() as u64,
            0,
            0,
        ],
    ))?;
    Ok((owned(fds[0] as i64), owned(fds[1] as i64)))
}

/// An integer socket option.
pub fn getsockopt_int(fd: i32, level: i32, opt: i32) -> io::Result<i32> {
    let mut v = 0i32;
    let mut len = 4u32;
    check(syscall6(
        libc::SYS_getsockopt,
        [
            fd as u64,
            level as u64,
            opt as u64,
            &mut v as *mut i32 as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    ))?;
    Ok(v)
}

/// Sets a socket's peek offset (SO_PEEK_OFF; -1: none), again where a signal interrupted it
/// (an AF_UNIX socket takes a lock for it that a signal may interrupt). Async-signal-safe.
pub fn set_peek_off(fd: i32, v: i32) -> io::Result<()> {
    loop {
        match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, v) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

pub fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) -> io::Result<()> {
    check(syscall6(
        libc::SYS_setsockopt,
        [
            fd as u64,
            level as u64,
            opt as u64,
            &v as *const i32 as u64,
            4,
            0,
        ],
    ))
    .map(drop)
}

/// A socket option as the bytes getsockopt returns (at most 64).
pub fn getsockopt_bytes(fd: i32, level: i32, opt: i32) -> io::Result<Vec<u8>> {
    let mut v = [0u8; 64];
    let n = getsockopt_into(fd, level, opt, &mut v)?;
    Ok(v[..n].to_vec())
}

/// The length getsockopt answers for an option when given no room (SO_GET_FILTER: the number
/// of filter instructions).
pub fn getsockopt_len(fd: i32, level: i32, opt: i32) -> io::Result<u32> {
    let mut len = 0u32;
    check(syscall6(
        libc::SYS_getsockopt,
        [
            fd as u64,
            level as u64,
            opt as u64,
            0,
            &mut len as *mut u32 as u64,
            0,
        ],
    ))?;
    Ok(len)
}

pub fn setsockopt_bytes(fd: i32, level: i32, opt: i32, v: &[u8]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_setsockopt,
        [
            fd as u64,
            level as u64,
            opt as u64,
            v.as_ptr() as u64,
            v.len() as u64,
            0,
        ],
    ))
    .map(drop)
}

/// The raw `struct sockaddr` a socket is bound to.
pub fn getsockname(fd: i32) -> io::Result<Vec<u8>> {
    sockaddr_of(libc::SYS_getsockname, fd)
}

/// The raw `struct sockaddr` a socket is connected to (ENOTCONN: none).
pub fn getpeername(fd: i32) -> io::Result<Vec<u8>> {
    sockaddr_of(libc::SYS_getpeername, fd)
}

fn sockaddr_of(nr: i64, fd: i32) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as u32;
    check(syscall6(
        nr,
        [
            fd as u64,
            buf.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
            0,
            0,
        ],
    ))?;
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

/// A descriptor's status flags (F_GETFL) in the low half and descriptor flags (F_GETFD) in the
/// high half; `u64::MAX` where it is not open. Allocation-free, for a signal handler.
pub fn fd_flags(fd: i32) -> u64 {
    let get = |cmd: i32| syscall6(libc::SYS_fcntl, [fd as u64, cmd as u64, 0, 0, 0, 0]);
    match (get(libc::F_GETFL), get(libc::F_GETFD)) {
        (fl, fd) if fl >= 0 && fd >= 0 => fl as u32 as u64 | (fd as u32 as u64) << 32,
        _ => u64::MAX,
    }
}

/// Bytes of a descriptor's fdinfo read for [`fd_file_look`]: the lock lines come right after
/// its four first lines (under 200 bytes), before what the file's kind adds (epoll's
/// watches...), so a page holds the first [`LOCK_LOOK_LINES`] of them (under 120 bytes each).
pub const LOCK_LOOK_BYTES: usize = 4096;

/// How many lock lines [`file_look_of`] folds in: as many as a page surely holds whatever the
/// lines before them (their `pos:` grows with the offset), so that the scan's text and the
/// handler's page give the same lines. (More locks than that through one description: the
/// others are not compared.)
pub const LOCK_LOOK_LINES: usize = 32;

/// A file's name and locks folded into one number: `link`, what /proc/self/fd shows for its
/// descriptor (its path now, " (deleted)" once unlinked), and the lock lines ("lock:": flock
/// and OFD locks on the description, the process's POSIX locks taken through it) of its fdinfo
/// `info`, the first [`LOCK_LOOK_LINES`] whole ones.
pub fn file_look_of(link: &[u8], info: &[u8]) -> u64 {
    let mut h = Fold::default();
    let mut add = |bytes: &[u8]| h.add(bytes);
    add(link);
    add(b"\n");
    // Whole lines only: the last one of a page may be cut.
    let whole = info.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in info[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"lock:"))
        .take(LOCK_LOOK_LINES)
    {
        add(line);
    }
    h.0
}

/// FNV-1a, folding what a look reads into one number. Allocation-free.
struct Fold(u64);

impl Default for Fold {
    fn default() -> Self {
        Fold(0xcbf2_9ce4_8422_2325)
    }
}

impl Fold {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// [`file_look_of`] descriptor `fd` now (`u64::MAX` where it cannot be read). Allocation-free,
/// for a signal handler.
pub fn fd_file_look(fd: i32) -> u64 {
    let Some(path) = numbered_path(b"/proc/self/fd/", fd, b"\0") else {
        return u64::MAX;
    };
    let mut link = [0u8; 4096];
    let n = syscall6(
        libc::SYS_readlinkat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            link.as_mut_ptr() as u64,
            link.len() as u64,
            0,
            0,
        ],
    );
    if n < 0 {
        return u64::MAX;
    }
    let mut info = [0u8; LOCK_LOOK_BYTES];
    match read_numbered(b"/proc/self/fdinfo/", fd, b"\0", &mut info) {
        Some(m) => file_look_of(&link[..n as usize], &info[..m]),
        None => u64::MAX,
    }
}

/// What a descriptor's open file description looks like now, folded into one number: its status
/// and descriptor flags but O_NONBLOCK and FD_CLOEXEC (which the snapshot takes as they are
/// then: a runtime may flip them on any call), a pipe's capacity, the signal of signal-driven
/// I/O and who gets it (F_SETSIG, F_SETOWN) and, for a socket, its name, its peer, whether it
/// listens and, for a listener, whether a connection waits to be accepted, and whether an error
/// waits to be read (`SO_ERROR`, seen as `POLLERR`). Two looks differ
/// when any of those changed. Allocation-free, for a signal handler. (A file's name and locks:
/// see [`fd_file_look`].)
pub fn fd_look(fd: i32) -> u64 {
    // Folded: the answers (a value, or the negative errno).
    let mut h = Fold::default();
    let mut add = |bytes: &[u8]| h.add(bytes);
    for (cmd, taken) in [
        (libc::F_GETFL, libc::O_NONBLOCK),
        (libc::F_GETFD, libc::FD_CLOEXEC),
        // A pipe's capacity (EBADF elsewhere), the signal of signal-driven I/O.
        (libc::F_GETPIPE_SZ, 0),
        (crate::state::sigio::F_GETSIG, 0),
    ] {
        let r = syscall6(libc::SYS_fcntl, [fd as u64, cmd as u64, 0, 0, 0, 0]);
        let r = if r >= 0 { r & !i64::from(taken) } else { r };
        add(&r.to_ne_bytes());
    }
    // Who gets that signal (struct f_owner_ex: type, pid).
    let mut owner = [0i32; 2];
    let r = syscall6(
        libc::SYS_fcntl,
        [
            fd as u64,
            crate::state::sigio::F_GETOWN_EX as u64,
            owner.as_mut_ptr() as u64,
            0,
            0,
            0,
        ],
    );
    add(&r.to_ne_bytes());
    add(&owner[0].to_ne_bytes());
    add(&owner[1].to_ne_bytes());
    for nr in [libc::SYS_getsockname, libc::SYS_getpeername] {
        let mut buf = [0u8; 128];
        let mut len = buf.len() as u32;
        let r = syscall6(
            nr,
            [
                fd as u64,
                buf.as_mut_ptr() as u64,
                &mut len as *mut u32 as u64,
                0,
                0,
                0,
            ],
        );
        add(&r.to_ne_bytes());
        if r == -i64::from(libc::ENOTSOCK) {
            return h.0;
        }
        add(&buf[..(len as usize).min(buf.len())]);
    }
    let mut v = 0i32;
    let mut len = 4u32;
    let r = syscall6(
        libc::SYS_getsockopt,
        [
            fd as u64,
            libc::SOL_SOCKET as u64,
            libc::SO_ACCEPTCONN as u64,
            &mut v as *mut i32 as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    );
    add(&r.to_ne_bytes());
    add(&v.to_ne_bytes());
    if r == 0 && v == 1 {
        // A listener is readable when its accept queue is not empty.
        add(&poll_now(fd, libc::POLLIN).unwrap_or(-1).to_ne_bytes());
    }
    // An error waiting to be read (an ICMP error for a datagram sent, a connection reset by a
    // peer that closed with bytes unread): poll tells it without taking it, as reading it would.
    add(&poll_now(fd, 0)
        .map_or(-1, |ev| ev & libc::POLLERR)
        .to_ne_bytes());
    h.0
}

/// getsockopt into `buf`, whose contents are also the call's input (`MCAST_MSFILTER` names the
/// group there); the length the kernel answered.
pub fn getsockopt_into(fd: i32, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as u32;
    check(syscall6(
        libc::SYS_getsockopt,
        [
            fd as u64,
            level as u64,
            opt as u64,
            buf.as_mut_ptr() as u64,
            &mut len as *mut u32 as u64,
            0,
        ],
    ))?;
    Ok((len as usize).min(buf.len()))
}

/// The events `fd` reports now (poll with no wait).
pub fn poll_now(fd: i32, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    check(syscall6(
        libc::SYS_poll,
        [&mut p as *mut libc::pollfd as u64, 1, 0, 0, 0, 0],
    ))?;
    Ok(p.revents)
}

pub fn bind(fd: i32, addr: &[u8]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_bind,
        [fd as u64, addr.as_ptr() as u64, addr.len() as u64, 0, 0, 0],
    ))
    .map(drop)
}

/// connect(fd, addr) without waiting: an AF_UNIX listener whose queue is full refuses at once
/// (EAGAIN) instead of blocking. The descriptor's flags are left as they were.
pub fn connect_nowait(fd: i32, addr: &[u8]) -> io::Result<()> {
    let flags = fcntl(fd, libc::F_GETFL, 0)?;
    fcntl(fd, libc::F_SETFL, (flags | libc::O_NONBLOCK as i64) as u64)?;
    let r = connect(fd, addr);
    fcntl(fd, libc::F_SETFL, flags as u64)?;
    r
}

pub fn connect(fd: i32, addr: &[u8]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_connect,
        [fd as u64, addr.as_ptr() as u64, addr.len() as u64, 0, 0, 0],
    ))
    .map(drop)
}

pub fn listen(fd: i32, backlog: i32) -> io::Result<()> {
    check(syscall6(
        libc::SYS_listen,
        [fd as u64, backlog as u64, 0, 0, 0, 0],
    ))
    .map(drop)
}

pub fn shutdown(fd: i32, how: i32) -> io::Result<()> {
    check(syscall6(
        libc::SYS_shutdown,
        [fd as u64, how as u64, 0, 0, 0, 0],
    ))
    .map(drop)
}

/// An epoll instance's busy-poll parameters (`EPIOCGPARAMS`, Linux 6.9): busy-poll time in
/// microseconds, packet budget, prefer-busy-poll flag; `None` where the kernel has no such call.
pub fn epoll_params(fd: i32) -> Option<(u32, u16, u8)> {
    let mut p = [0u8; 8];
    let r = syscall6(
        libc::SYS_ioctl,
        [fd as u64, 0x8008_8A02, p.as_mut_ptr() as u64, 0, 0, 0],
    );
    (r == 0).then(|| {
        (
            u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
            u16::from_ne_bytes([p[4], p[5]]),
            p[6],
        )
    })
}

/// Bytes waiting in a socket's receive queue (SIOCINQ). Async-signal-safe.
pub fn inq(fd: i32) -> i64 {
    ioctl_int(fd, 0x541B)
}

/// An ioctl that answers an int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD): it, or a negative errno.
/// Async-signal-safe.
pub fn ioctl_int(fd: i32, req: u64) -> i64 {
    let mut n = 0i32;
    let r = syscall6(
        libc::SYS_ioctl,
        [fd as u64, req, &mut n as *mut i32 as u64, 0, 0, 0],
    );
    if r < 0 {
        r
    } else {
        i64::from(n)
    }
}

/// recvfrom(fd, addr, len, MSG_PEEK | MSG_DONTWAIT): bytes copied, or a negative errno (a
/// TCP socket in repair mode peeks at the queue it was told to). Async-signal-safe.
pub fn recv_peek_raw(fd: i32, addr: u64, len: usize) -> i64 {
    syscall6(
        libc::SYS_recvfrom,
        [
            fd as u64,
            addr,
            len as u64,
            (libc::MSG_PEEK | libc::MSG_DONTWAIT) as u64,
            0,
            0,
        ],
    )
}

/// recvmsg(fd, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC) into `len` bytes at `addr`, the
/// ancillary data into `control` (descriptors passed are installed: see [`peeked_ancillary`]).
/// Async-signal-safe.
pub fn recv_peek_msg(fd: i32, addr: u64, len: usize, control: &mut [u8]) -> PeekedMsg {
    let iov = [addr, len as u64];
    // Room for the sender's address, whose length tells whether it has a name.
    let mut name = [0u8; std::mem::size_of::<libc::sockaddr_un>()];
    // struct msghdr: name, namelen (+pad), iov, iovlen, control, controllen, flags (+pad).
    let mut msg: [u64; 7] = [
        name.as_mut_ptr() as u64,
        name.len() as u64,
        iov.as_ptr() as u64,
        1,
        control.as_mut_ptr() as u64,
        control.len() as u64,
        0,
    ];
    let r = syscall6(
        libc::SYS_recvmsg,
        [
            fd as u64,
            msg.as_mut_ptr() as u64,
            (libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    PeekedMsg {
        len: r,
        flags: msg[6] as i32,
        name_len: msg[1] as u32,
        control_len: (msg[5] as usize).min(control.len()),
    }
}

/// What [`recv_peek_msg`] saw: the message's length (or a negative errno), its flags, the
/// length of its sender's address and of the ancillary data it came with.
#[derive(Debug, Clone, Copy)]
pub struct PeekedMsg {
    pub len: i64,
    pub flags: i32,
    pub name_len: u32,
    pub control_len: usize,
}

/// What the ancillary data of a peeked message holds: credentials (`SCM_CREDENTIALS`), how
/// many descriptors (`SCM_RIGHTS`: a peek installs them, each handed to `on_fd`, which owns it),
/// and whether anything else. Allocates nothing: it runs in the checkpoint handler.
pub fn peeked_ancillary(control: &[u8], on_fd: &mut dyn FnMut(i32)) -> (bool, usize, bool) {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    let (mut creds, mut fds, mut other) = (false, 0, false);
    let mut at = 0;
    while at + HDR <= control.len() {
        let word = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&control[at + o..at + o + 8]);
            u64::from_ne_bytes(b)
        };
        let len = word(0) as usize;
        let level = word(8) as u32 as i32;
        let ty = (word(8) >> 32) as u32 as i32;
        if len < HDR || at + len > control.len() {
            other = true;
            break;
        }
        match (level, ty) {
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) => creds = true,
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for d in control[at + HDR..at + len].chunks_exact(4) {
                    on_fd(i32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
                    fds += 1;
                }
            }
            // A pidfd of the sender (SO_PASSPIDFD): closed, and refused as other data.
            (libc::SOL_SOCKET, SCM_PIDFD) => {
                for d in control[at + HDR..at + len].chunks_exact(4) {
                    close_raw(i32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
                }
                other = true;
            }
            _ => other = true,
        }
        at += len.next_multiple_of(8);
    }
    (creds, fds, other)
}

/// A peek of the next message of `fd` into `buf` (see [`recv_peek_msg`]) that takes the
/// descriptors it passes (each moved to 3 or above, where none is standard I/O, the number it
/// came at given to `release`): the message, whether it came with credentials and with other
/// ancillary data (closed), the descriptors.
pub fn recv_peek_owned(
    fd: i32,
    buf: &mut [u8],
    release: &dyn Fn(i32),
) -> (PeekedMsg, bool, bool, Vec<OwnedFd>) {
    let mut control = [0u8; 1280];
    let m = recv_peek_msg(fd, buf.as_mut_ptr() as u64, buf.len(), &mut control);
    let mut got = Vec::new();
    let (creds, _, other) = peeked_ancillary(&control[..m.control_len], &mut |f| got.push(f));
    let fds = got
        .into_iter()
        .map(|f| {
            let f = if f <= 2 {
                match fcntl(f, libc::F_DUPFD_CLOEXEC, 3) {
                    Ok(up) => {
                        release(f);
                        up as RawFd
                    }
                    Err(_) => f,
                }
            } else {
                f
            };
            // SAFETY: the kernel installed it for this recvmsg; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(f) }
        })
        .collect();
    (m, creds, other, fds)
}

/// The control message type of a sender's pidfd (linux/socket.h).
const SCM_PIDFD: i32 = 4;

/// close(fd), ignoring the result: async-signal-safe.
pub fn close_raw(fd: i32) {
    let _ = syscall6(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
}

/// send(fd, buf, MSG_DONTWAIT | MSG_NOSIGNAL); the number of bytes sent.
pub fn send_nowait(fd: i32, buf: &[u8]) -> io::Result<usize> {
    sendto_nowait(fd, buf, &[])
}

/// sendto(fd, buf, MSG_DONTWAIT | MSG_NOSIGNAL, addr) (`addr` empty: to its peer); the number
/// of bytes sent.
pub fn sendto_nowait(fd: i32, buf: &[u8], addr: &[u8]) -> io::Result<usize> {
    sendmsg_fds(fd, buf, addr, &[], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// One NETLINK_SOCK_DIAG request (`req` is the payload after the netlink header): every reply
/// message's payload, until NLMSG_DONE.
pub fn sock_diag(msg_type: u16, req: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    let sock = socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG)?;
    let fd = sock.as_raw_fd();
    let len = 16 + req.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
    msg.extend_from_slice(req);
    check(syscall6(
        libc::SYS_sendto,
        [fd as u64, msg.as_ptr() as u64, msg.len() as u64, 0, 0, 0],
    ))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = check(syscall6(
            libc::SYS_recvfrom,
            [
                fd as u64,
                buf.as_mut_ptr() as u64,
                buf.len() as u64,
                0,
                0,
                0,
            ],
        ))? as usize;
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0;
        while at + 16 <= n {
            let word = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4"));
            let mlen = word(at) as usize;
            let mtype = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2"));
            if mlen < 16 || at + mlen > n {
                return Err(io::Error::other("malformed netlink reply"));
            }
            match i32::from(mtype) {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4"));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => out.push(buf[at + 16..at + mlen].to_vec()),
            }
            at += mlen.next_multiple_of(4);
        }
    }
}

/// pread64 into `len` writable bytes at `addr`. Async-signal-safe.
pub fn pread_raw(fd: i32, addr: u64, len: usize, off: u64) -> i64 {
    let mut done = 0usize;
    while done < len {
        let r = syscall6(
            libc::SYS_pread64,
            [
                fd as u64,
                addr + done as u64,
                (len - done) as u64,
                off + done as u64,
                0,
                0,
            ],
        );
        if r < 0 {
            return r;
        }
        if r == 0 {
            break; // past the end: the rest stays zero
        }
        done += r as usize;
    }
    done as i64
}

/// process_vm_readv on this process: copies `len` bytes at address `src` to the writable `dst`,
/// the kernel checking that `src` is mapped readable (EFAULT otherwise). Async-signal-safe.
pub fn read_own_memory(dst: u64, src: u64, len: usize) -> i64 {
    let mut done = 0usize;
    while done < len {
        let local = [dst + done as u64, (len - done) as u64];
        let remote = [src + done as u64, (len - done) as u64];
        let r = syscall6(
            libc::SYS_process_vm_readv,
            [
                getpid() as u64,
                local.as_ptr() as u64,
                1,
                remote.as_ptr() as u64,
                1,
                0,
            ],
        );
        if r <= 0 {
            return if r == 0 { -(libc::EFAULT as i64) } else { r };
        }
        done += r as usize;
    }
    done as i64
}

/// Whether `addr` is the id of an AIO context of this process: `io_getevents` of none on it
/// (the kernel looks the context up by the id written in the ring at that address, and checks
/// that it is that ring's).
pub fn aio_context_is_ours(addr: u64) -> bool {
    syscall6(libc::SYS_io_getevents, [addr, 0, 0, 0, 0, 0]) == 0
}

/// io_submit(ctx, n, iocbs): requests submitted, or a negative errno. Async-signal-safe.
pub fn io_submit(ctx: u64, n: u64, iocbs: u64) -> i64 {
    syscall6(libc::SYS_io_submit, [ctx, n, iocbs, 0, 0, 0])
}

/// sched_setaffinity of the calling thread to `mask` (64-bit words); 0 or a negative errno.
/// Async-signal-safe.
pub fn set_own_affinity(mask: &[u64]) -> i64 {
    syscall6(
        libc::SYS_sched_setaffinity,
        [0, (mask.len() * 8) as u64, mask.as_ptr() as u64, 0, 0, 0],
    )
}

/// fstat(fd). Async-signal-safe.
pub fn fstat(fd: i32) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    check(syscall6(
        libc::SYS_fstat,
        [fd as u64, st.as_mut_ptr() as u64, 0, 0, 0, 0],
    ))?;
    // SAFETY: fstat succeeded and filled the whole struct (it was zeroed before anyway).
    Ok(unsafe { st.assume_init() })
}

/// The size of the file open at `fd` (fstat). Async-signal-safe.
pub fn fstat_size(fd: i32) -> io::Result<u64> {
    fstat(fd).map(|st| st.st_size as u64)
}

/// lseek(fd, off, whence). Async-signal-safe.
pub fn lseek_raw(fd: i32, off: u64, whence: i32) -> i64 {
    syscall6(libc::SYS_lseek, [fd as u64, off, whence as u64, 0, 0, 0])
}

/// memfd_create(name, MFD_CLOEXEC [| MFD_ALLOW_SEALING]).
pub fn memfd_create(name: &str, sealing: bool) -> io::Result<std::os::fd::OwnedFd> {
    let name = std::ffi::CString::new(name.replace('\0', " ")).unwrap_or_default();
    let flags = libc::MFD_CLOEXEC | if sealing { libc::MFD_ALLOW_SEALING } else { 0 };
    check(syscall6(
        libc::SYS_memfd_create,
        [name.as_ptr() as u64, u64::from(flags), 0, 0, 0, 0],
    ))
    .map(owned)
}

pub fn ftruncate(fd: i32, len: u64) -> io::Result<()> {
    check(syscall6(libc::SYS_ftruncate, [fd as u64, len, 0, 0, 0, 0])).map(drop)
}

/// Stacks for the checkpoint signal's handler, one per thread (a guard page below each): the
/// handler runs on the stack the kernel gave it — a thread's alternate signal stack, often a
/// few KiB (Rust's threads have 8 KiB, the kernel's frame takes 3 of them with AVX-512) — only
/// long enough to switch to one of these (see [`call_on_stack`]). Not MADV_DONTFORK: the
/// snapshot, a fork made on one of them, runs on its copy.
#[derive(Debug)]
pub struct HandlerStacks {
    addr: u64,
    count: usize,
}

impl HandlerStacks {
    /// Bytes of each stack, its guard page included.
    pub const EACH: usize = 256 << 10;

    pub fn new(count: usize) -> io::Result<HandlerStacks> {
        let count = count.max(1);
        let len = (Self::EACH * count) as u64;
        let addr = check(syscall6(
            libc::SYS_mmap,
            [
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK)
                    as u64,
                u64::MAX,
                0,
            ],
        ))? as u64;
        let stacks = HandlerStacks { addr, count };
        for i in 0..count {
            let guard = addr + (i * Self::EACH) as u64;
            check(syscall6(
                libc::SYS_mprotect,
                [guard, 4096, libc::PROT_NONE as u64, 0, 0, 0],
            ))?;
        }
        Ok(stacks)
    }

    /// The top of stack `i` (16-byte aligned); `None` past the last.
    pub fn top(&self, i: usize) -> Option<u64> {
        (i < self.count).then(|| self.addr + ((i + 1) * Self::EACH) as u64)
    }

    /// (start, end) of the whole area.
    pub fn range(&self) -> (u64, u64) {
        (self.addr, self.addr + (Self::EACH * self.count) as u64)
    }
}

impl Drop for HandlerStacks {
    fn drop(&mut self) {
        let len = (Self::EACH * self.count) as u64;
        let _ = syscall6(libc::SYS_munmap, [self.addr, len, 0, 0, 0, 0]);
    }
}

/// Calls `f(arg)` with the stack pointer at `top`, and returns on the caller's stack.
///
/// # Safety
/// `top` must be the 16-byte aligned top of writable memory, large enough for `f`, that nothing
/// else uses meanwhile; `f` must not unwind.
pub unsafe fn call_on_stack(top: u64, f: extern "C" fn(*mut libc::c_void), arg: *mut libc::c_void) {
    // SAFETY: as the caller promises; r12 is callee-saved, so it holds our stack pointer across
    // the call, and the call is made with the stack 16-byte aligned as the ABI wants.
    unsafe {
        std::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {f}",
            "mov rsp, r12",
            top = in(reg) top,
            f = in(reg) f,
            in("rdi") arg,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}

/// After a restore, the libraries that seed a generator once per process draw afresh: OpenSSL
/// and SQLite, each copy of them (the loaded objects listed once for both).
pub fn reseed_libraries() {
    let objects = loaded_objects();
    reseed_openssl(&objects);
    reseed_sqlite(&objects);
}

/// Reseeds OpenSSL's generators where the process has OpenSSL (libcrypto) loaded: `RAND_poll`,
/// then `RAND_add` of 48 fresh bytes (a change of state even where polling does nothing). OpenSSL
/// reseeds on its own only when the PID changes, which a restore never does: every restore of one
/// image would draw the same bytes (Ruby's OpenSSL::Random, a C program's RAND_bytes, TLS
/// nonces). Each copy is reseeded: the one in the global scope and every loaded object named
/// libcrypto* (one loaded with `dlopen`, RTLD_LOCAL, by a plugin or a language's extension
/// module, is not in the global scope; wheels carry their own under hashed names). Whether
/// OpenSSL was found.
fn reseed_openssl(objects: &[std::ffi::CString]) -> bool {
    in_each_copy(
        objects,
        |base| base.starts_with(b"libcrypto"),
        reseed_openssl_in,
    )
}

/// Runs `f` with the global scope's handle and with a handle of each of the loaded `objects`
/// whose file name (`wanted` says) may hold its own copy of a library, and a list of what `f`
/// did to skip copies seen twice; whether `f` did anything.
fn in_each_copy(
    objects: &[std::ffi::CString],
    wanted: impl Fn(&[u8]) -> bool,
    mut f: impl FnMut(*mut libc::c_void, &mut Vec<usize>),
) -> bool {
    let mut done: Vec<usize> = Vec::new();
    f(libc::RTLD_DEFAULT, &mut done);
    for name in objects.iter().filter(|n| {
        n.to_bytes()
            .rsplit(|&b| b == b'/')
            .next()
            .is_some_and(&wanted)
    }) {
        // SAFETY: a NUL-terminated name of an object loaded now; RTLD_NOLOAD never loads one,
        // it only takes a reference, given back with dlclose.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            continue;
        }
        f(handle, &mut done);
        // SAFETY: the reference dlopen took above.
        unsafe { libc::dlclose(handle) };
    }
    !done.is_empty()
}

/// Reseeds the OpenSSL `handle` finds, unless its RAND_poll or RAND_add is in `done` already.
fn reseed_openssl_in(handle: *mut libc::c_void, done: &mut Vec<usize>) {
    // SAFETY: dlsym with a valid handle and NUL-terminated names; where present, the symbols are
    // OpenSSL's (or a compatible library's) with these C signatures, and thread-safe.
    unsafe {
        let poll = libc::dlsym(handle, c"RAND_poll".as_ptr());
        let add = libc::dlsym(handle, c"RAND_add".as_ptr());
        let id = if poll.is_null() { add } else { poll } as usize;
        if id == 0 || done.contains(&id) {
            return;
        }
        done.push(id);
        if !poll.is_null() {
            let poll: extern "C" fn() -> i32 = std::mem::transmute(poll);
            poll();
        }
        if !add.is_null() {
            let mut buf = [0u8; 48];
            if libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) == buf.len() as isize {
                let add: extern "C" fn(*const libc::c_void, i32, f64) = std::mem::transmute(add);
                add(buf.as_ptr().cast(), buf.len() as i32, buf.len() as f64);
            }
        }
    }
}

/// Resets SQLite's generator where the process has SQLite loaded: `sqlite3_randomness(0, NULL)`,
/// after which it seeds itself again from the VFS's randomness (`/dev/urandom`) at its next use.
/// SQLite seeds it once per process and keeps it in memory, so every restore of an image made
/// after a use drew the same `randomblob()`, `random()` and temporary file names. Each copy: the
/// one in the global scope and every loaded object whose name says `sqlite` (Python's
/// `_sqlite3` loads libsqlite3 with RTLD_LOCAL; better-sqlite3's addon and sqlite-jdbc's native
/// library carry their own). Whether SQLite was found. (A SQLite loaded but never initialized is
/// initialized by the call, as by its first use.)
fn reseed_sqlite(objects: &[std::ffi::CString]) -> bool {
    in_each_copy(
        objects,
        |base| base.windows(6).any(|w| w.eq_ignore_ascii_case(b"sqlite")),
        reseed_sqlite_in,
    )
}

/// Resets the SQLite generator `handle` finds, unless it is in `done` already.
fn reseed_sqlite_in(handle: *mut libc::c_void, done: &mut Vec<usize>) {
    // SAFETY: dlsym with a valid handle and a NUL-terminated name; where present, the symbol is
    // SQLite's `void sqlite3_randomness(int, void *)`, thread-safe (it takes SQLite's PRNG
    // mutex), and with N = 0 it only clears the generator's state.
    unsafe {
        let f = libc::dlsym(handle, c"sqlite3_randomness".as_ptr());
        if f.is_null() || done.contains(&(f as usize)) {
            return;
        }
        done.push(f as usize);
        let f: extern "C" fn(i32, *mut libc::c_void) = std::mem::transmute(f);
        f(0, std::ptr::null_mut());
    }
}

/// The file names of the objects loaded in the process now (dl_iterate_phdr), the executable's
/// (empty) left out.
fn loaded_objects() -> Vec<std::ffi::CString> {
    extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the call, and `data` is the Vec below.
        let (info, names) = unsafe { (&*info, &mut *data.cast::<Vec<std::ffi::CString>>()) };
        if !info.dlpi_name.is_null() {
            // SAFETY: dlpi_name is a NUL-terminated string while the call lasts.
            let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
            if !name.is_empty() {
                names.push(name.to_owned());
            }
        }
        0
    }
    let mut names: Vec<std::ffi::CString> = Vec::new();
    // SAFETY: `each` matches the callback's signature and only uses `names` for the call's length.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            (&mut names as *mut Vec<std::ffi::CString>).cast(),
        )
    };
    names
}

/// The mode of the terminal `fd` is (`None`: not a terminal).
pub fn tcgetattr(fd: i32) -> Option<libc::termios> {
    // SAFETY: tcgetattr fills the termios it is given; all-zero bytes are a valid one.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(fd, &mut t) == 0).then_some(t)
    }
}

/// Sets the mode of the terminal `fd` is, at once.
pub fn tcsetattr(fd: i32, t: &libc::termios) -> io::Result<()> {
    // SAFETY: tcsetattr reads the termios it is given.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The foreground process group of the terminal `fd` is (-1 if none or not a terminal).
pub fn tcgetpgrp(fd: i32) -> i32 {
    // SAFETY: a plain query on a descriptor.
    unsafe { libc::tcgetpgrp(fd) }
}

/// This process's process group.
pub fn getpgrp() -> i32 {
    // SAFETY: getpgrp has no failure.
    unsafe { libc::getpgrp() }
}

/// Maps `len` bytes readable and writable where the kernel chooses (`flags`, of `fd` at `offset`
/// or anonymous with -1), marked MADV_DONTFORK: a checkpoint's frozen copy of the process never
/// has them. The address.
fn map_dontfork(len: usize, flags: i32, fd: RawFd, offset: u64) -> io::Result<u64> {
    let addr = check(syscall6(
        libc::SYS_mmap,
        [
            0,
            len as u64,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            flags as u64,
            fd as i64 as u64,
            offset,
        ],
    ))? as u64;
    let r = check(syscall6(
        libc::SYS_madvise,
        [addr, len as u64, libc::MADV_DONTFORK as u64, 0, 0, 0],
    ));
    if let Err(e) = r {
        syscall6(libc::SYS_munmap, [addr, len as u64, 0, 0, 0, 0]);
        return Err(e);
    }
    Ok(addr)
}

/// Private anonymous memory marked MADV_DONTFORK: a buffer the frozen child does not have.
#[derive(Debug)]
pub struct DontForkBuf {
    addr: u64,
    len: usize,
}

impl DontForkBuf {
    pub fn new(len: usize) -> io::Result<DontForkBuf> {
        let len = len.max(1).next_multiple_of(4096);
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let addr = map_dontfork(len, flags, -1, 0)?;
        Ok(DontForkBuf { addr, len })
    }

    /// Faults in `len` bytes at `off` (MADV_POPULATE_WRITE); a hint, failures are ignored.
    pub fn populate(&self, off: u64, len: u64) {
        const MADV_POPULATE_WRITE: u64 = 23;
        let start = (off & !4095).min(self.len as u64);
        let end = (off + len).next_multiple_of(4096).min(self.len as u64);
        if end > start {
            syscall6(
                libc::SYS_madvise,
                [self.addr + start, end - start, MADV_POPULATE_WRITE, 0, 0, 0],
            );
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the kernel may write (pread_raw): the whole buffer is ours.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Stores word `i` (async-signal-safe; out of range: nothing).
    pub fn put_u64(&self, i: usize, v: u64) {
        if (i + 1) * 8 <= self.len {
            // SAFETY: inside this private mapping, 8-aligned (the mapping is page-aligned); no
            // Rust reference to these bytes is alive while the handler writes them.
            unsafe { std::ptr::write_volatile((self.addr as *mut u64).add(i), v) }
        }
    }

    /// Word `i` (0 out of range).
    pub fn get_u64(&self, i: usize) -> u64 {
        if (i + 1) * 8 <= self.len {
            // SAFETY: as in put_u64.
            unsafe { std::ptr::read_volatile((self.addr as *const u64).add(i)) }
        } else {
            0
        }
    }

    /// Byte `i` (0 out of range; async-signal-safe).
    pub fn get_u8(&self, i: usize) -> u8 {
        if i < self.len {
            // SAFETY: as in put_u64.
            unsafe { std::ptr::read_volatile((self.addr as *const u8).add(i)) }
        } else {
            0
        }
    }

    /// mincore(2) of `len` bytes at `addr` into this buffer (one byte per page, bit 0: in
    /// memory); 0 or a negative errno. Async-signal-safe.
    pub fn mincore(&self, addr: u64, len: u64) -> i64 {
        if len.div_ceil(4096) > self.len as u64 {
            return -(libc::EINVAL as i64);
        }
        syscall6(libc::SYS_mincore, [addr, len, self.addr, 0, 0, 0])
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `addr..addr+len` is a private mapping this value owns until drop; it is only
        // written by system calls made before this borrow (no Rust reference aliases them).
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

/// Numbered slots of a fixed size, each written once, by whoever claims it first, and read once
/// after it is published: a thread fills them in order while another consumes the finished ones.
/// Slot `i` lives in buffer `i % ring` of one [`DontForkBuf`]: the memory of a consumed slot is
/// used again, so a long run of slots costs `ring` buffers, faulted in (and zeroed by the kernel)
/// once, not one fresh buffer per slot. A writer waits for slot `i - ring` to be done with.
#[derive(Debug)]
pub struct Slots {
    buf: DontForkBuf,
    size: usize,
    ring: usize,
    /// FREE, then WRITING (claimed by a writer), then READY (published), READING (a reader has
    /// it) and DONE; or DONE at once (claimed by a reader who will not wait: never written); or
    /// ABANDONED while written (a reader went without it) and DONE when written.
    state: Vec<std::sync::atomic::AtomicU32>,
    len: Vec<std::sync::atomic::AtomicUsize>,
}

const FREE: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;
const READING: u32 = 3;
const DONE: u32 = 4;
const ABANDONED: u32 = 5;

impl Slots {
    /// `count` slots of `size` bytes in `ring` buffers (at most `count`; address space reserved,
    /// memory used as buffers are first filled).
    pub fn new(count: usize, size: usize, ring: usize) -> io::Result<Slots> {
        use std::sync::atomic::{AtomicU32, AtomicUsize};
        let ring = ring.clamp(1, count.max(1));
        Ok(Slots {
            buf: DontForkBuf::new(ring.saturating_mul(size))?,
            size,
            ring,
            state: (0..count).map(|_| AtomicU32::new(FREE)).collect(),
            len: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Fills slot `i` with `f` (given the whole slot; it returns how many bytes are valid, or
    /// `None` to leave the slot unpublished) if nobody claimed it before; true if published.
    /// Slots are filled in increasing order by one writer: it first waits for slot `i - ring`,
    /// whose buffer it reuses, to be done with, while `wait` says so (asked at least every
    /// millisecond).
    pub fn fill(
        &self,
        i: usize,
        wait: impl Fn() -> bool,
        f: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        use std::sync::atomic::Ordering;
        if i >= self.state.len() {
            return false;
        }
        if let Some(before) = i.checked_sub(self.ring).map(|b| &self.state[b]) {
            loop {
                match before.load(Ordering::Acquire) {
                    DONE => break,
                    s if wait() => futex_wait(before, s, Some(std::time::Duration::from_millis(1))),
                    _ => return false,
                }
            }
        }
        if self.state[i]
            .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: buffer `i % ring` lies inside the mapping (ring * size bytes). The FREE ->
        // WRITING exchange above made this call slot `i`'s only writer, the slot that used the
        // buffer before (`i - ring`) is DONE (Acquire: its reader has finished), and no reader
        // touches slot `i` before it is READY: this is the only reference to these bytes.
        let slot = unsafe {
            std::slice::from_raw_parts_mut(
                (self.buf.addr() as *mut u8).add((i % self.ring) * self.size),
                self.size,
            )
        };
        let Some(n) = f(slot) else {
            self.finish(i);
            return false;
        };
        self.len[i].store(n.min(self.size), Ordering::Relaxed);
        let published = self.state[i]
            .compare_exchange(WRITING, READY, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if !published {
            // Abandoned: nobody will read it.
            self.finish(i);
        }
        published
    }

    /// `f` of slot `i`'s bytes, once, if they are published. Either way no writer starts on it
    /// any more, and its buffer is free for the next slot when this returns.
    pub fn consume<R>(&self, i: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        use std::sync::atomic::Ordering;
        let s = self.state.get(i)?;
        // FREE -> DONE (nothing to read), WRITING -> ABANDONED (the writer finishes it), or
        // READY -> READING (ours alone to read).
        loop {
            let (to, now) = match s.load(Ordering::Acquire) {
                FREE => (DONE, FREE),
                WRITING => (ABANDONED, WRITING),
                READY => (READING, READY),
                _ => return None,
            };
            if s.compare_exchange(now, to, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            match to {
                DONE => {
                    futex_wake_all(s);
                    return None;
                }
                ABANDONED => return None,
                _ => break,
            }
        }
        let n = self.len[i].load(Ordering::Relaxed);
        let addr = self.buf.addr() + ((i % self.ring) * self.size) as u64;
        // SAFETY: the slot was READY (Acquire, pairing with the writer's Release): its writer is
        // done, and no writer reuses the buffer before this slot is DONE; the READY -> READING
        // exchange made this the only reader; the borrow ends with `f`.
        let r = f(unsafe { std::slice::from_raw_parts(addr as *const u8, n) });
        self.finish(i);
        Some(r)
    }

    /// Slot `i` is done with (its bytes, if any, are not wanted).
    pub fn skip(&self, i: usize) {
        self.consume(i, |_| ());
    }

    fn finish(&self, i: usize) {
        self.state[i].store(DONE, std::sync::atomic::Ordering::Release);
        futex_wake_all(&self.state[i]);
    }
}

impl Drop for DontForkBuf {
    fn drop(&mut self) {
        syscall6(libc::SYS_munmap, [self.addr, self.len as u64, 0, 0, 0, 0]);
    }
}

/// clock_gettime(clock) in nanoseconds (the system call, not the vDSO). Async-signal-safe.
pub fn clock_ns(clock: i32) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    syscall6(
        libc::SYS_clock_gettime,
        [
            clock as u64,
            &mut ts as *mut libc::timespec as u64,
            0,
            0,
            0,
            0,
        ],
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// getitimer(which) as (interval, value) in microseconds. Async-signal-safe.
pub fn getitimer(which: i32) -> (u64, u64) {
    let mut v = [0i64; 4];
    syscall6(
        libc::SYS_getitimer,
        [which as u64, v.as_mut_ptr() as u64, 0, 0, 0, 0],
    );
    let us = |s: i64, u: i64| (s.max(0) as u64) * 1_000_000 + u.max(0) as u64;
    (us(v[0], v[1]), us(v[2], v[3]))
}

/// The PID of the process that last changed semaphore `num` of System V set `id` (semctl
/// GETPID), or -1 (a set this process may not read).
pub fn sem_last_pid(id: i32, num: i32) -> i32 {
    syscall6(
        libc::SYS_semctl,
        [id as u64, num as u64, libc::GETPID as u64, 0, 0, 0],
    ) as i32
}

/// Whether tasks `a` and `b` of this process share the resource `kind` (kcmp KCMP_*); `None`
/// where the kernel cannot tell.
pub fn kcmp(a: i32, b: i32, kind: u64) -> Option<bool> {
    let r = syscall6(libc::SYS_kcmp, [a as u64, b as u64, kind, 0, 0, 0]);
    (r >= 0).then_some(r == 0)
}

/// Whether two descriptors of this process share one open file description (kcmp KCMP_FILE);
/// `None` where the kernel cannot tell.
pub fn same_description(a: i32, b: i32) -> Option<bool> {
    same_description_in(a, getpid(), b)
}

/// Whether descriptor `ours` of this process and descriptor `theirs` of process `pid` are one
/// open file description (kcmp KCMP_FILE); `None` where the kernel cannot tell (no such
/// descriptor, no kcmp).
pub fn same_description_in(ours: i32, pid: i32, theirs: i32) -> Option<bool> {
    let r = syscall6(
        libc::SYS_kcmp,
        [
            getpid() as u64,
            pid as u64,
            0,
            ours as u64,
            theirs as u64,
            0,
        ],
    );
    (r >= 0).then_some(r == 0)
}

/// Whether descriptor `fd` of this process is the file epoll instance `epfd` watches as its
/// `toff`-th registration of number `tfd` (kcmp KCMP_EPOLL_TFD); `None` where the kernel cannot
/// tell (no such registration, no kcmp).
pub fn epoll_watches_file(epfd: i32, tfd: i32, toff: u32, fd: i32) -> Option<bool> {
    const KCMP_EPOLL_TFD: u64 = 7;
    // struct kcmp_epoll_slot { __u32 efd, tfd, toff; }
    let slot = [epfd as u32, tfd as u32, toff];
    let pid = getpid() as u64;
    let r = syscall6(
        libc::SYS_kcmp,
        [pid, pid, KCMP_EPOLL_TFD, fd as u64, slot.as_ptr() as u64, 0],
    );
    (r >= 0).then_some(r == 0)
}

/// madvise(addr, len, advice), result ignored. Async-signal-safe.
pub fn madvise(addr: u64, len: u64, advice: i32) {
    syscall6(libc::SYS_madvise, [addr, len, advice as u64, 0, 0, 0]);
}

/// Reads `fd` from its start to its end into the `cap` writable bytes at `addr`: the byte count,
/// or a negative errno (-E2BIG when it does not fit). Async-signal-safe.
pub fn read_whole(fd: i32, addr: u64, cap: usize) -> i64 {
    let r = syscall6(
        libc::SYS_lseek,
        [fd as u64, 0, libc::SEEK_SET as u64, 0, 0, 0],
    );
    if r < 0 {
        return r;
    }
    let mut done = 0usize;
    loop {
        if done == cap {
            return -(libc::E2BIG as i64);
        }
        let r = syscall6(
            libc::SYS_read,
            [fd as u64, addr + done as u64, (cap - done) as u64, 0, 0, 0],
        );
        if r < 0 {
            return r;
        }
        if r == 0 {
            return done as i64;
        }
        done += r as usize;
    }
}

/// flock(fd, LOCK_EX or LOCK_SH | LOCK_NB).
pub fn flock_nb(fd: i32, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    check(syscall6(
        libc::SYS_flock,
        [fd as u64, op as u64, 0, 0, 0, 0],
    ))
    .map(drop)
}

/// fcntl(fd, cmd, &flock) with `flock` as four words (see state::locks).
pub fn fcntl_lock(fd: i32, cmd: i32, flock: &[u64; 4]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_fcntl,
        [fd as u64, cmd as u64, flock.as_ptr() as u64, 0, 0, 0],
    ))
    .map(drop)
}

/// fcntl(fd, F_GETLK, &flock): `flock` comes back with the conflicting lock, or F_UNLCK.
pub fn fcntl_getlk(fd: i32, flock: &mut [u64; 4]) -> io::Result<()> {
    check(syscall6(
        libc::SYS_fcntl,
        [
            fd as u64,
            libc::F_GETLK as u64,
            flock.as_mut_ptr() as u64,
            0,
            0,
            0,
        ],
    ))
    .map(drop)
}

/// signalfd4(-1, mask, SFD_CLOEXEC [| SFD_NONBLOCK]).
pub fn signalfd(mask: u64, nonblock: bool) -> io::Result<std::os::fd::OwnedFd> {
    let flags = libc::SFD_CLOEXEC | if nonblock { libc::SFD_NONBLOCK } else { 0 };
    check(syscall6(
        libc::SYS_signalfd4,
        [u64::MAX, &mask as *const u64 as u64, 8, flags as u64, 0, 0],
    ))
    .map(owned)
}

/// timerfd_gettime(fd), for what it does first: a periodic timer that fired and was not read
/// since is moved on to its next expiry, the expirations missed meanwhile counted (as a read does
/// before it takes them); until then its fdinfo shows one expiration and no time left.
pub fn timerfd_catch_up(fd: i32) -> io::Result<()> {
    let mut spec = [0u64; 4];
    check(syscall6(
        libc::SYS_timerfd_gettime,
        [fd as u64, spec.as_mut_ptr() as u64, 0, 0, 0, 0],
    ))
    .map(drop)
}

/// A timerfd on `clockid` armed relative to now with `value_ns` left and `interval_ns`, holding
/// `ticks` unread expirations (TFD_IOC_SET_TICKS).
pub fn timerfd(
    clockid: i32,
    nonblock: bool,
    value_ns: u64,
    interval_ns: u64,
    ticks: u64,
    absolute: bool,
) -> io::Result<std::os::fd::OwnedFd> {
    let flags = libc::TFD_CLOEXEC | if nonblock { libc::TFD_NONBLOCK } else { 0 };
    let fd = check(syscall6(
        libc::SYS_timerfd_create,
        [clockid as u64, flags as u64, 0, 0, 0, 0],
    ))
    .map(owned)?;
    use std::os::fd::AsRawFd;
    let ts = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
    let [is, ins] = ts(interval_ns);
    let [vs, vns] = ts(value_ns);
    let spec = [is, ins, vs, vns];
    check(syscall6(
        libc::SYS_timerfd_settime,
        [
            fd.as_raw_fd() as u64,
            u64::from(absolute), // TFD_TIMER_ABSTIME
            spec.as_ptr() as u64,
            0,
            0,
            0,
        ],
    ))?;
    if ticks > 0 {
        const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
        check(syscall6(
            libc::SYS_ioctl,
            [
                fd.as_raw_fd() as u64,
                TFD_IOC_SET_TICKS,
                &ticks as *const u64 as u64,
                0,
                0,
                0,
            ],
        ))?;
    }
    Ok(fd)
}

/// rt_sigpending: signals pending for the calling thread or its process. Async-signal-safe.
pub fn sigpending() -> u64 {
    let mut set = 0u64;
    syscall6(
        libc::SYS_rt_sigpending,
        [&mut set as *mut u64 as u64, 8, 0, 0, 0, 0],
    );
    set
}

/// membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS): the `MEMBARRIER_CMD_REGISTER_*` commands this
/// process has issued (Linux 6.3+; 0 where the kernel cannot say).
pub fn membarrier_registrations() -> u32 {
    let r = syscall6(libc::SYS_membarrier, [1 << 9, 0, 0, 0, 0, 0]);
    if r < 0 {
        0
    } else {
        r as u32
    }
}

/// Whose rseq area the calling thread has registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RseqOwner {
    None = 1,
    Glibc = 2,
    /// An area glibc did not register (the program's own, or another length or signature).
    Other = 3,
}

/// Which rseq area the calling thread has registered, asked of the kernel by registering
/// `glibc` = (area, length) (or a scratch area when glibc has none): EBUSY means exactly that
/// one is registered, EINVAL/EPERM another one; success means none was, and the probe is undone.
/// Async-signal-safe.
pub fn rseq_owner(glibc: Option<(u64, u32)>, signature: u32) -> RseqOwner {
    #[repr(C, align(32))]
    struct Area([u8; 32]);
    let mut scratch = Area([0; 32]);
    let (addr, len) = glibc.unwrap_or((&mut scratch as *mut Area as u64, 32));
    let args = |flags| [addr, u64::from(len), flags, u64::from(signature), 0, 0];
    match syscall6(libc::SYS_rseq, args(0)) {
        0 => {
            // Registered by this probe: undo it before `scratch` goes away.
            syscall6(libc::SYS_rseq, args(1));
            RseqOwner::None
        }
        r if r == -(libc::EBUSY as i64) && glibc.is_some() => RseqOwner::Glibc,
        r if r == -(libc::ENOSYS as i64) => RseqOwner::None,
        _ => RseqOwner::Other,
    }
}

/// The guard regions (MADV_GUARD_INSTALL) of the process whose `pagemap` is given, as
/// (start, end) ranges, from PAGEMAP_SCAN's PAGE_IS_GUARD category (Linux 6.14+), passed to
/// `each` in address order. A kernel without that category has none that could be found.
/// Allocates nothing: async-signal-safe. Returns a negative errno on failure.
pub fn each_guard_region(pagemap: i32, each: impl FnMut(u64, u64)) -> i64 {
    const PAGE_IS_GUARD: u64 = 1 << 8;
    each_page_range(pagemap, 0, USER_END, PAGE_IS_GUARD, each)
}

/// The ranges of `start..end` where the process whose `pagemap` is given maps the shared zero
/// page (PAGEMAP_SCAN's PAGE_IS_PFNZERO, Linux 6.7+): anonymous memory only read, never
/// written, which reads as zeros wherever it is. Empty where the kernel cannot tell.
pub fn zero_page_ranges(pagemap: i32, start: u64, end: u64) -> Vec<(u64, u64)> {
    const PAGE_IS_PFNZERO: u64 = 1 << 5;
    let mut out = Vec::new();
    let r = each_page_range(pagemap, start, end, PAGE_IS_PFNZERO, |s, e| {
        out.push((s, e))
    });
    if r < 0 {
        out.clear();
    }
    out
}

const USER_END: u64 = 0x0000_7fff_ffff_f000;

/// PAGEMAP_SCAN over `start..end` for pages in `category`, each range passed to `each` in
/// address order (0 where the kernel has no such category). Async-signal-safe.
fn each_page_range(
    pagemap: i32,
    mut start: u64,
    end: u64,
    category: u64,
    mut each: impl FnMut(u64, u64),
) -> i64 {
    // _IOWR('f', 16, struct pm_scan_arg), 96 bytes.
    const PAGEMAP_SCAN: u64 = 0xc060_6610;
    let mut regions = [[0u64; 3]; 64];
    while start < end {
        // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len, max_pages,
        // category_inverted, category_mask, category_anyof_mask, return_mask.
        let mut arg: [u64; 12] = [
            96,
            0,
            start,
            end,
            0,
            regions.as_mut_ptr() as u64,
            regions.len() as u64,
            0,
            0,
            category,
            0,
            category,
        ];
        let n = syscall6(
            libc::SYS_ioctl,
            [
                pagemap as u64,
                PAGEMAP_SCAN,
                arg.as_mut_ptr() as u64,
                0,
                0,
                0,
            ],
        );
        if n == -(libc::EINVAL as i64) || n == -(libc::ENOTTY as i64) {
            return 0;
        }
        if n < 0 {
            return n;
        }
        for r in &regions[..(n as usize).min(regions.len())] {
            each(r[0], r[1]);
        }
        let walked = arg[4];
        if walked <= start || walked >= end {
            break;
        }
        start = walked;
    }
    0
}

/// inotify_init1(flags | IN_CLOEXEC).
pub fn inotify_init(flags: u32) -> io::Result<std::os::fd::OwnedFd> {
    check(syscall6(
        libc::SYS_inotify_init1,
        [u64::from(flags | libc::IN_CLOEXEC as u32), 0, 0, 0, 0, 0],
    ))
    .map(owned)
}

/// inotify_add_watch(fd, path, mask) → the watch descriptor.
pub fn inotify_add_watch(fd: i32, path: &str, mask: u32) -> io::Result<i32> {
    let path =
        std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    check(syscall6(
        libc::SYS_inotify_add_watch,
        [fd as u64, path.as_ptr() as u64, u64::from(mask), 0, 0, 0],
    ))
    .map(|wd| wd as i32)
}

pub fn inotify_rm_watch(fd: i32, wd: i32) -> io::Result<()> {
    check(syscall6(
        libc::SYS_inotify_rm_watch,
        [fd as u64, wd as u64, 0, 0, 0, 0],
    ))
    .map(drop)
}

/// open_by_handle_at(mount, handle, flags): needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount: i32,
    handle_type: i32,
    handle: &[u8],
    flags: i32,
) -> io::Result<std::os::fd::OwnedFd> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    check(syscall6(
        libc::SYS_open_by_handle_at,
        [
            mount as u64,
            buf.as_ptr() as u64,
            (flags | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    ))
    .map(owned)
}

/// read(2) into `buf`: bytes read, or a negative errno.
pub fn read_raw(fd: i32, buf: &mut [u8]) -> i64 {
    syscall6(
        libc::SYS_read,
        [
            fd as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            0,
            0,
            0,
        ],
    )
}

/// ptrace(request, pid, addr, data): the kernel's result. Async-signal-safe.
pub fn ptrace(request: u32, pid: i32, addr: u64, data: u64) -> i64 {
    syscall6(
        libc::SYS_ptrace,
        [u64::from(request), pid as u64, addr, data, 0, 0],
    )
}

/// wait4(pid, &status, options): (result, status). Async-signal-safe.
pub fn wait4(pid: i32, options: i32) -> (i64, i32) {
    let mut status = 0i32;
    let r = syscall6(
        libc::SYS_wait4,
        [
            pid as u64,
            &mut status as *mut i32 as u64,
            options as u64,
            0,
            0,
            0,
        ],
    );
    (r, status)
}

/// Copies `buf` into process `pid` at `remote` (process_vm_writev). Async-signal-safe.
pub fn write_process_memory(pid: i32, remote: u64, buf: &[u8]) -> i64 {
    let local = [buf.as_ptr() as u64, buf.len() as u64];
    let remote = [remote, buf.len() as u64];
    syscall6(
        libc::SYS_process_vm_writev,
        [
            pid as u64,
            local.as_ptr() as u64,
            1,
            remote.as_ptr() as u64,
            1,
            0,
        ],
    )
}

/// pipe2(O_CLOEXEC): (read end, write end), blocking.
pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0i32; 2];
    check(syscall6(
        libc::SYS_pipe2,
        [fds.as_mut_ptr() as u64, libc::O_CLOEXEC as u64, 0, 0, 0, 0],
    ))?;
    Ok((owned(i64::from(fds[0])), owned(i64::from(fds[1]))))
}

/// Waits up to `timeout` for `fd` to be readable, then reads one byte: Some(byte), or None on
/// timeout, end of file or error.
pub fn read_byte_within(fd: i32, timeout: std::time::Duration) -> Option<u8> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as u64;
        let r = syscall6(
            libc::SYS_poll,
            [&mut pfd as *mut libc::pollfd as u64, 1, ms, 0, 0, 0],
        );
        // A signal handled meanwhile is not a timeout.
        if r == -(libc::EINTR as i64) && !left.is_zero() {
            continue;
        }
        if r <= 0 {
            return None;
        }
        break;
    }
    let mut b = [0u8; 1];
    (read_raw(fd, &mut b) == 1).then_some(b[0])
}

/// write(2) of `buf`: bytes written, or a negative errno. Async-signal-safe.
pub fn write_raw(fd: i32, buf: &[u8]) -> i64 {
    syscall6(
        libc::SYS_write,
        [fd as u64, buf.as_ptr() as u64, buf.len() as u64, 0, 0, 0],
    )
}

/// _exit(code) without libc. Async-signal-safe.
pub fn exit_now(code: i32) -> ! {
    loop {
        syscall6(libc::SYS_exit_group, [code as u64, 0, 0, 0, 0, 0]);
    }
}

std::arch::global_asm!(
    ".pushsection .text.thaw_syscall_gadget, \"ax\", @progbits",
    ".p2align 4",
    ".globl thaw_syscall_gadget",
    ".hidden thaw_syscall_gadget",
    "thaw_syscall_gadget:",
    "    syscall",
    "    ud2",
    ".popsection",
);

extern "C" {
    fn thaw_syscall_gadget();
}

/// The address of a `syscall` instruction in this process's code: a traced thread of this
/// process is made to run one system call there.
pub fn syscall_gadget() -> u64 {
    thaw_syscall_gadget as *const () as usize as u64
}

/// Gives the open file `f` the name `dest` (linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW,
/// which works for an unnamed O_TMPFILE file without CAP_DAC_READ_SEARCH).
pub fn link_fd(f: &impl std::os::fd::AsRawFd, dest: &std::path::Path) -> io::Result<()> {
    two_paths(
        libc::SYS_linkat,
        std::ffi::OsStr::new(&format!("/proc/self/fd/{}", f.as_raw_fd())),
        dest,
        libc::AT_SYMLINK_FOLLOW as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn the_thread_count_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 90 0 0 0 1 2 0 0 20 0 7 0 123\n";
        assert_eq!(super::stat_threads(line), Some(7));
        assert_eq!(super::stat_threads(b"1 (x) S 1 2"), None, "cut short");
        // (Other tests run threads in this process meanwhile: only a lower bound holds here.)
        assert!(super::thread_count().expect("own stat") >= 1);
        assert!(!super::task_exiting(super::gettid()), "this thread runs");
        assert!(super::task_exiting(i32::MAX), "no such thread");
    }

    #[test]
    fn a_files_look_is_the_same_from_the_whole_fdinfo_and_from_a_page_of_it() {
        let info = |pos: u64, locks: usize| {
            let mut t = format!("pos:\t{pos}\nflags:\t0100002\nmnt_id:\t30\nino:\t1234\n");
            for i in 0..locks {
                t += &format!(
                    "lock:\t{}: POSIX  ADVISORY  WRITE 4242 fe:01:1234 {i}0 {i}9\n",
                    i + 1
                );
            }
            t.into_bytes()
        };
        let page = |t: &[u8]| t[..t.len().min(super::LOCK_LOOK_BYTES)].to_vec();
        for locks in [0, 3, 32, 80] {
            let look = super::file_look_of(b"/f", &info(0, locks));
            // The scan's whole text, the handler's page, the offset grown by many digits.
            assert_eq!(super::file_look_of(b"/f", &page(&info(0, locks))), look);
            assert_eq!(
                super::file_look_of(b"/f", &page(&info(u64::MAX, locks))),
                look
            );
            assert_ne!(super::file_look_of(b"/g", &info(0, locks)), look, "renamed");
        }
        assert_ne!(
            super::file_look_of(b"/f", &info(0, 3)),
            super::file_look_of(b"/f", &info(0, 2)),
            "a lock given up"
        );
    }

    #[test]
    fn a_descriptor_looks_different_once_it_changed_in_place() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("thaw-look-{}", super::getpid()));
        let _ = std::fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let fd = listener.as_raw_fd();
        let idle = super::fd_look(fd);
        assert_eq!(super::fd_look(fd), idle, "nothing changed");
        let client = std::os::unix::net::UnixStream::connect(&dir).unwrap();
        assert_ne!(super::fd_look(fd), idle, "a connection waits");
        let (_conn, _) = listener.accept().unwrap();
        assert_eq!(super::fd_look(fd), idle, "accepted");
        listener.set_nonblocking(true).unwrap();
        assert_eq!(super::fd_look(fd), idle, "O_NONBLOCK is taken as it is");
        let nonblock = libc::O_NONBLOCK as u64;
        assert_eq!(super::fd_flags(fd) & nonblock, nonblock);
        assert_eq!(super::fd_flags(fd) >> 32, libc::FD_CLOEXEC as u64);
        assert_eq!(super::fd_flags(-1), u64::MAX);
        // SAFETY: F_SETFL on a descriptor of ours.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK | libc::O_APPEND) };
        assert_ne!(super::fd_look(fd), idle, "status flags");
        let (r, _w) = std::io::pipe().unwrap();
        let plain = super::fd_look(r.as_raw_fd());
        // SAFETY: fcntl on a descriptor of ours.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, 128 << 10) };
        let sized = super::fd_look(r.as_raw_fd());
        assert_ne!(sized, plain, "a pipe's capacity");
        // SAFETY: as above.
        unsafe { libc::fcntl(r.as_raw_fd(), crate::state::sigio::F_SETSIG, libc::SIGUSR2) };
        assert_ne!(
            super::fd_look(r.as_raw_fd()),
            sized,
            "the signal of signal-driven I/O"
        );
        let lock_path = dir.with_extension("lock");
        std::fs::write(&lock_path, b"x").unwrap();
        let file = std::fs::File::open(&lock_path).unwrap();
        let scanned = || {
            use std::os::unix::ffi::OsStrExt;
            let fd = file.as_raw_fd();
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            let info = std::fs::read(format!("/proc/self/fdinfo/{fd}")).unwrap();
            super::file_look_of(link.as_os_str().as_bytes(), &info)
        };
        let unlocked = super::fd_file_look(file.as_raw_fd());
        assert_eq!(scanned(), unlocked, "the scan's look");
        // SAFETY: flock on a descriptor of ours.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) };
        let locked = super::fd_file_look(file.as_raw_fd());
        assert_ne!(locked, unlocked, "a lock taken");
        assert_eq!(scanned(), locked);
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        assert_eq!(
            super::fd_file_look(file.as_raw_fd()),
            unlocked,
            "and given up"
        );
        let renamed = lock_path.with_extension("renamed");
        std::fs::rename(&lock_path, &renamed).unwrap();
        assert_ne!(super::fd_file_look(file.as_raw_fd()), unlocked, "renamed");
        std::fs::rename(&renamed, &lock_path).unwrap();
        assert_eq!(super::fd_file_look(file.as_raw_fd()), unlocked, "and back");
        assert_eq!(super::fd_file_look(-1), u64::MAX);
        let _ = std::fs::remove_file(&lock_path);
        let peer = super::fd_look(client.as_raw_fd());
        client.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(
            super::fd_look(client.as_raw_fd()),
            peer,
            "no name, peer or flag changed"
        );
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_threads_children_are_listed() {
        // Children are listed per thread (the one that forked them): other tests' are not here.
        let me = super::gettid();
        let list = || {
            let mut v = Vec::new();
            super::task_children(me, |p| v.push(p));
            v
        };
        assert!(list().is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(list(), vec![child.id() as i32]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(list().is_empty(), "reaped");
    }

    #[test]
    fn a_slot_is_written_once_and_read_once_when_published() {
        let s = Slots::new(3, 8192, 3).unwrap();
        let go = || true;
        let read = |i| s.consume(i, |b: &[u8]| b.to_vec());
        assert_eq!(read(0), None, "not published: and now taken by the reader");
        assert!(!s.fill(0, go, |_| Some(1)), "a reader took it first");
        assert!(s.fill(1, go, |b| {
            b[..3].copy_from_slice(b"abc");
            Some(3)
        }));
        assert!(!s.fill(1, go, |_| Some(1)), "written once");
        assert_eq!(read(1), Some(b"abc".to_vec()));
        assert_eq!(read(1), None, "read once");
        assert!(!s.fill(2, go, |_| None), "a failed fill publishes nothing");
        assert_eq!(read(2), None);
        assert!(
            !s.fill(3, go, |_| Some(1)) && read(3).is_none(),
            "out of range"
        );
    }

    #[test]
    fn a_buffer_is_reused_once_the_slot_before_is_done_with() {
        let s = Slots::new(5, 4096, 2).unwrap();
        let put = |i: usize, wait: &dyn Fn() -> bool| {
            s.fill(i, wait, |b| {
                b[0] = i as u8;
                Some(1)
            })
        };
        assert!(put(0, &|| true) && put(1, &|| true));
        // Slot 2 shares slot 0's buffer, still unread: the writer waits while told to.
        let asked = std::cell::Cell::new(0);
        let impatient = || {
            asked.set(asked.get() + 1);
            asked.get() < 3
        };
        assert!(!put(2, &impatient), "gave up waiting");
        assert_eq!(asked.get(), 3);
        assert_eq!(s.consume(0, |b| b[0]), Some(0));
        assert!(put(2, &|| false), "slot 0 done with: no wait");
        assert_eq!(s.consume(2, |b| b[0]), Some(2));
        assert_eq!(s.consume(1, |b| b[0]), Some(1), "its own buffer, untouched");
        // A slot given up by its reader is not waited for.
        s.skip(3);
        assert!(put(4, &|| false), "slot 2 done with");
        assert!(!put(3, &|| false), "skipped");
    }

    #[test]
    fn a_slot_abandoned_while_written_is_done_with_when_written() {
        let s = Slots::new(2, 4096, 1).unwrap();
        let mut during = None;
        assert!(!s.fill(
            0,
            || true,
            |_| {
                during = Some(s.consume(0, |_| ()));
                Some(1)
            }
        ));
        assert_eq!(
            during,
            Some(None),
            "not ready: the reader goes on without it"
        );
        assert!(
            s.fill(1, || false, |_| Some(1)),
            "its buffer is free at once"
        );
    }
}

// Sequenced-packet sockets and descriptor passing (`thaw serve` and its callers).

fn syscall(nr: i64, a: [u64; 6]) -> io::Result<i64> {
    check(syscall6(nr, a))
}

/// At most this many descriptors travel with one message.
pub const MAX_PASSED_FDS: usize = 250;

/// Sends one message carrying `fds` (SCM_RIGHTS).
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    sendmsg_fds(sock, bytes, &[], fds, libc::MSG_NOSIGNAL)
}

/// sendmsg of `bytes` with `fds` (SCM_RIGHTS, none: no ancillary data) to `addr` (a
/// `sockaddr_un`'s bytes; empty: the peer), with `flags`; restarted when interrupted.
pub fn sendmsg_fds(
    sock: RawFd,
    bytes: &[u8],
    addr: &[u8],
    fds: &[RawFd],
    flags: i32,
) -> io::Result<usize> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let mut iov = [bytes.as_ptr() as u64, bytes.len() as u64];
    // struct cmsghdr { u64 len; i32 level; i32 type; } then the ints, padded to 8 bytes.
    let data = 4 * fds.len();
    // (Nothing allocated without descriptors: a plain send.)
    let mut control = Vec::new();
    if !fds.is_empty() {
        control = vec![0u64; 2 + data.div_ceil(8)];
        control[0] = 16 + data as u64;
        control[1] = libc::SOL_SOCKET as u64 | ((libc::SCM_RIGHTS as u64) << 32);
        for (i, fd) in fds.iter().enumerate() {
            let word = 2 + i / 2;
            control[word] |= u64::from(*fd as u32) << (32 * (i % 2));
        }
    }
    let msg = [
        if addr.is_empty() {
            0
        } else {
            addr.as_ptr() as u64
        },
        addr.len() as u64,
        iov.as_mut_ptr() as u64,
        1,
        if fds.is_empty() {
            0
        } else {
            control.as_ptr() as u64
        },
        if fds.is_empty() {
            0
        } else {
            8 * control.len() as u64
        },
        0,
    ];
    loop {
        match syscall(
            libc::SYS_sendmsg,
            [sock as u64, msg.as_ptr() as u64, flags as u64, 0, 0, 0],
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// One message received with [`recv_with_fds`].
#[derive(Debug)]
pub struct Packet {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// The message or its descriptors did not fit.
    pub truncated: bool,
}

/// Receives one message into `buf` with up to [`MAX_PASSED_FDS`] descriptors (close-on-exec);
/// `None` at end of file.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<Packet>> {
    recv_with_fds_flags(sock, buf, 0)
}

/// [`recv_with_fds`] with `recvmsg` flags (`MSG_DONTWAIT`: `WouldBlock` if none is there).
pub fn recv_with_fds_flags(sock: RawFd, buf: &mut [u8], flags: i32) -> io::Result<Option<Packet>> {
    let mut iov = [buf.as_mut_ptr() as u64, buf.len() as u64];
    let mut control = vec![0u64; 2 + (4 * MAX_PASSED_FDS).div_ceil(8)];
    let mut msg = [
        0u64,
        0,
        iov.as_mut_ptr() as u64,
        1,
        control.as_mut_ptr() as u64,
        8 * control.len() as u64,
        0,
    ];
    let n = loop {
        match syscall(
            libc::SYS_recvmsg,
            [
                sock as u64,
                msg.as_mut_ptr() as u64,
                (libc::MSG_CMSG_CLOEXEC | flags) as u64,
                0,
                0,
                0,
            ],
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) => break n as usize,
        }
    };
    let mut fds = Vec::new();
    let controllen = msg[5] as usize;
    if controllen >= 16 && control[1] == libc::SOL_SOCKET as u64 | ((libc::SCM_RIGHTS as u64) << 32)
    {
        let count = ((control[0] as usize).min(controllen) - 16) / 4;
        for i in 0..count {
            let fd = (control[2 + i / 2] >> (32 * (i % 2))) as u32 as i32;
            // SAFETY: the kernel installed this descriptor for us with the message; nothing
            // else owns it.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    let truncated = msg[6] as i32 & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    // An empty packet reads as end of file: neither side sends one.
    if n == 0 && fds.is_empty() && !truncated {
        return Ok(None);
    }
    Ok(Some(Packet {
        len: n,
        fds,
        truncated,
    }))
}

pub fn unix_address(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, u32)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all zeros is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as u32))
}

pub fn seqpacket_socket(flags: i32) -> io::Result<OwnedFd> {
    let fd = syscall(
        libc::SYS_socket,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Connects to the sequenced-packet socket at `path`.
pub fn seqpacket_connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let sock = seqpacket_socket(0)?;
    let (addr, len) = unix_address(path)?;
    loop {
        match syscall(
            libc::SYS_connect,
            [
                sock.as_raw_fd() as u64,
                &addr as *const libc::sockaddr_un as u64,
                u64::from(len),
                0,
                0,
                0,
            ],
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(sock),
        }
    }
}

/// Reserves `len` bytes of private anonymous memory without committing swap for it
/// (`MAP_NORESERVE`); its address.
pub fn reserve_noreserve(len: usize) -> Option<usize> {
    let p = syscall6(
        libc::SYS_mmap,
        [
            0,
            len as u64,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64,
            u64::MAX,
            0,
        ],
    );
    (p > 0).then_some(p as usize)
}

/// Opens directory `path` (NUL-terminated) with a bare system call. Async-signal-safe.
fn open_dir(path: &[u8]) -> io::Result<OwnedFd> {
    debug_assert_eq!(path.last(), Some(&0));
    let fd = check(syscall6(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path.as_ptr() as u64,
            (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    ))?;
    // SAFETY: openat just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Calls `each` with every name in directory `dir` ("." and ".." left out), read with
/// getdents64 into `buf`. Async-signal-safe (nothing allocated).
fn dir_entries(dir: &OwnedFd, buf: &mut [u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
    loop {
        let n = check(syscall6(
            libc::SYS_getdents64,
            [
                std::os::fd::AsRawFd::as_raw_fd(dir) as u64,
                buf.as_mut_ptr() as u64,
                buf.len() as u64,
                0,
                0,
                0,
            ],
        ))? as usize;
        if n == 0 {
            return Ok(());
        }
        // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
        let mut at = 0;
        while at + 19 <= n {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n {
                break;
            }
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                each(name);
            }
            at += reclen;
        }
    }
}

/// The names in directory `path` ("." and ".." left out), read with getdents64: no allocation
/// by the C library (its opendir allocates).
pub fn list_dir(path: &str) -> io::Result<Vec<String>> {
    let c = std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = open_dir(c.as_bytes_with_nul())?;
    let mut buf = vec![0u8; 32 << 10];
    let mut names = Vec::new();
    dir_entries(&dir, &mut buf, |name| {
        names.push(String::from_utf8_lossy(name).into_owned())
    })?;
    Ok(names)
}

/// Calls `each` with the id of every thread of this process, as /proc/self/task lists them
/// now. Async-signal-safe (nothing allocated), for the checkpoint's stopped world.
pub fn for_each_thread(mut each: impl FnMut(i32)) -> io::Result<()> {
    let dir = open_dir(b"/proc/self/task\0")?;
    let mut buf = [0u8; 4096];
    dir_entries(&dir, &mut buf, |name| {
        let tid = name
            .iter()
            .try_fold(0i32, |n, &d| {
                d.is_ascii_digit()
                    .then(|| n.saturating_mul(10).saturating_add(i32::from(d - b'0')))
            })
            .unwrap_or(0);
        if tid > 0 {
            each(tid);
        }
    })
}

/// Clock ticks per second, the unit of /proc's process times (at least 1).
pub fn clock_ticks_per_second() -> i64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as i64).max(1)
}

/// The calling thread's name (PR_GET_NAME: at most 15 bytes, NUL-padded). Async-signal-safe.
pub fn thread_name() -> [u8; 16] {
    let mut name = [0u8; 16];
    let _ = syscall6(
        libc::SYS_prctl,
        [
            libc::PR_GET_NAME as u64,
            name.as_mut_ptr() as u64,
            0,
            0,
            0,
            0,
        ],
    );
    name
}

/// fstat's device, inode number and mode of `fd`. Async-signal-safe.
pub fn fstat_id(fd: i32) -> Option<(u64, u64, u32)> {
    fstat(fd).ok().map(|st| (st.st_dev, st.st_ino, st.st_mode))
}

/// fstat's inode number of `fd`. Async-signal-safe.
pub fn fstat_ino(fd: i32) -> Option<u64> {
    fstat(fd).ok().map(|st| st.st_ino)
}

/// fstat's size and modification time (seconds, nanoseconds) of `fd`. Async-signal-safe.
pub fn fstat_stamp(fd: i32) -> Option<[u64; 3]> {
    let st = fstat(fd).ok()?;
    // Regular files only (a FIFO or device opened by path changes its times as it is used).
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    Some([
        st.st_size as u64,
        st.st_mtime as u64,
        st.st_mtime_nsec as u64,
    ])
}

/// The memory protection keys this process has allocated (`pkey_alloc`), besides key 0: found by
/// tagging a scratch page of its own with each key (`pkey_mprotect` refuses a key that is not
/// allocated, EINVAL). Empty where the CPU or kernel has none (no `pku`/`ospke`).
pub fn pkeys_allocated() -> Vec<u32> {
    const PAGE: u64 = 4096;
    let page = syscall6(
        libc::SYS_mmap,
        [
            0,
            PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    );
    if check(page).is_err() {
        return Vec::new();
    }
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let keys = (1..16u32)
        .filter(|&k| {
            syscall6(
                libc::SYS_pkey_mprotect,
                [page as u64, PAGE, rw, u64::from(k), 0, 0],
            ) == 0
        })
        .collect();
    syscall6(libc::SYS_munmap, [page as u64, PAGE, 0, 0, 0, 0]);
    keys
}

/// What `io_uring_setup` says of a new ring: its sizes and where each field of its rings is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingParams {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub features: u32,
    /// Offsets in the rings region: submission head, tail, dropped count and index array;
    /// completion head, tail and entries.
    pub sq_head: u32,
    pub sq_tail: u32,
    pub sq_dropped: u32,
    pub sq_array: u32,
    pub cq_head: u32,
    pub cq_tail: u32,
    pub cq_cqes: u32,
}

/// `io_uring_setup(entries)` with setup `flags`, `cq_entries` where `flags` has
/// IORING_SETUP_CQSIZE, and where it has IORING_SETUP_NO_MMAP, the memory of its rings and of
/// its submission entries (`user`).
pub fn io_uring_setup(
    entries: u32,
    flags: u32,
    cq_entries: u32,
    user: Option<(&SharedView, &SharedView)>,
) -> io::Result<(OwnedFd, RingParams)> {
    // struct io_uring_params: sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle,
    // features, wq_fd, resv[3] (10 words), then struct io_sqring_offsets and struct
    // io_cqring_offsets (10 words each, the last two a 64-bit user_addr).
    let mut p = [0u32; 30];
    p[1] = cq_entries;
    p[2] = flags;
    if let Some((rings, sqes)) = user {
        p[18] = sqes.addr as u32;
        p[19] = (sqes.addr >> 32) as u32;
        p[28] = rings.addr as u32;
        p[29] = (rings.addr >> 32) as u32;
    }
    let fd = check(syscall6(
        libc::SYS_io_uring_setup,
        [u64::from(entries), p.as_mut_ptr() as u64, 0, 0, 0, 0],
    ))?;
    // SAFETY: a descriptor the kernel just created for us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let (sq, cq) = (&p[10..20], &p[20..30]);
    Ok((
        fd,
        RingParams {
            sq_entries: p[0],
            cq_entries: p[1],
            features: p[5],
            sq_head: sq[0],
            sq_tail: sq[1],
            sq_dropped: sq[5],
            sq_array: sq[6],
            cq_head: cq[0],
            cq_tail: cq[1],
            cq_cqes: cq[5],
        },
    ))
}

/// `io_uring_enter(fd, to_submit, min_complete, flags)` without a signal mask; the kernel's
/// result (negative errno on failure). Async-signal-safe.
pub fn io_uring_enter(fd: RawFd, to_submit: u32, min_complete: u32, flags: u32) -> i64 {
    syscall6(
        libc::SYS_io_uring_enter,
        [
            fd as u64,
            u64::from(to_submit),
            u64::from(min_complete),
            u64::from(flags),
            0,
            0,
        ],
    )
}

/// `io_uring_register(fd, opcode, arg, nr_args)` where `arg` is `bytes` (or none); the kernel's
/// result (negative errno on failure). Async-signal-safe.
pub fn io_uring_register(fd: RawFd, opcode: u32, bytes: Option<&mut [u8]>, nr_args: u32) -> i64 {
    let arg = bytes.map_or(0, |b| b.as_mut_ptr() as u64);
    syscall6(
        libc::SYS_io_uring_register,
        [fd as u64, u64::from(opcode), arg, u64::from(nr_args), 0, 0],
    )
}

/// A shared mapping of part of a descriptor's object (an io_uring instance's rings or
/// submission entries) made for reading or filling it, unmapped when dropped. MADV_DONTFORK:
/// a checkpoint's frozen copy of the process never has it.
#[derive(Debug)]
pub struct SharedView {
    addr: u64,
    len: usize,
}

impl SharedView {
    /// Maps `len` bytes of `fd` at `offset`, readable and writable.
    pub fn new(fd: RawFd, offset: u64, len: usize) -> io::Result<SharedView> {
        let addr = map_dontfork(len, libc::MAP_SHARED, fd, offset)?;
        Ok(SharedView { addr, len })
    }

    /// How many of its pages the kernel has put in (mincore): all of an object's pages it maps
    /// at once, none past its end.
    pub fn pages_in(&self) -> io::Result<usize> {
        let mut v = vec![0u8; self.len.div_ceil(4096)];
        check(syscall6(
            libc::SYS_mincore,
            [self.addr, self.len as u64, v.as_mut_ptr() as u64, 0, 0, 0],
        ))?;
        Ok(v.iter().filter(|&&b| b & 1 != 0).count())
    }

    /// The 32-bit word at byte `off` (aligned), read once; 0 out of range.
    pub fn load_u32(&self, off: usize) -> u32 {
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return 0;
        }
        // SAFETY: inside this mapping, 4-aligned; the word may change under us (the kernel
        // writes it), so it is read atomically, never through a Rust reference to plain memory.
        unsafe {
            (*((self.addr as usize + off) as *const std::sync::atomic::AtomicU32))
                .load(std::sync::atomic::Ordering::Acquire)
        }
    }

    /// Stores the 32-bit word at byte `off` (aligned; out of range: nothing).
    pub fn store_u32(&self, off: usize, v: u32) {
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return;
        }
        // SAFETY: as in load_u32; release, as the kernel reads what came before it.
        unsafe {
            (*((self.addr as usize + off) as *const std::sync::atomic::AtomicU32))
                .store(v, std::sync::atomic::Ordering::Release)
        }
    }

    /// Copies `bytes` in at byte `off` (clipped to the mapping).
    pub fn write(&self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(self.len.saturating_sub(off));
        // SAFETY: `off..off + n` lies inside this mapping, which no Rust reference aliases; the
        // source is a separate buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.addr as usize + off) as *mut u8, n)
        };
    }

    /// `len` bytes at byte `off` (clipped to the mapping).
    #[cfg(test)]
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        let n = len.min(self.len.saturating_sub(off));
        let mut out = vec![0u8; n];
        // SAFETY: as in write, the other way.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.addr as usize + off) as *const u8,
                out.as_mut_ptr(),
                n,
            )
        };
        out
    }
}

impl Drop for SharedView {
    fn drop(&mut self) {
        syscall6(libc::SYS_munmap, [self.addr, self.len as u64, 0, 0, 0, 0]);
    }
}

/// sched_yield. Async-signal-safe.
pub fn sched_yield() {
    syscall6(libc::SYS_sched_yield, [0; 6]);
}

/// While one is held, SIGXFSZ is ignored by the whole process, so that writing a file beyond
/// RLIMIT_FSIZE fails with EFBIG, an error thaw reports, rather than killing the process (whose
/// default action for it is to dump core). The disposition the process had comes back when the
/// last guard goes.
#[derive(Debug)]
pub struct FileSizeSignalIgnored(());

/// Guards held, and the disposition from before the first.
static FSIZE_GUARDS: std::sync::Mutex<(usize, Option<libc::sigaction>)> =
    std::sync::Mutex::new((0, None));

impl FileSizeSignalIgnored {
    pub fn hold() -> FileSizeSignalIgnored {
        let mut g = FSIZE_GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            // SAFETY: zeroed sigaction structs are valid (SIG_DFL, empty mask); sigaction reads
            // `ignore` and writes `old`, both locals.
            unsafe {
                let mut ignore: libc::sigaction = std::mem::zeroed();
                ignore.sa_sigaction = libc::SIG_IGN;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGXFSZ, &ignore, &mut old) == 0 {
                    g.1 = Some(old);
                }
            }
        }
        g.0 += 1;
        FileSizeSignalIgnored(())
    }
}

impl Drop for FileSizeSignalIgnored {
    fn drop(&mut self) {
        let mut g = FSIZE_GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0 {
            // One raised while this thread blocked it (a checkpoint's thread blocks every
            // asynchronous signal) is not ignored but left pending, and would be taken with its
            // default action once the disposition is back: it is the write's, taken off here.
            let mut info = [0u64; 16];
            while take_signal(libc::SIGXFSZ, &mut info) {}
            if let Some(old) = g.1.take() {
                // SAFETY: puts back the disposition sigaction returned before.
                unsafe { libc::sigaction(libc::SIGXFSZ, &old, std::ptr::null_mut()) };
            }
        }
    }
}
