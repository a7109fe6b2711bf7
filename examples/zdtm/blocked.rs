//! Threads that block every signal for their whole life, as Node.js's inspector watchdog does
//! (`zdtm-blocked IMAGE KEY`): one waits on a channel (a futex) with an alternate signal stack
//! of its own, one reads a pipe. They are captured without the checkpoint signal (by a ptrace
//! helper); after restore each has its TID, name, signal mask and alternate stack, and wakes up
//! when given what it waits for. With `vfork` (`zdtm-blocked IMAGE - vfork`) a thread that
//! cannot be stopped at all, stuck in vfork, is named and the application goes on. With `crowd`
//! (`zdtm-blocked IMAGE - crowd`) 70 threads block every signal, more than the ptrace helper
//! takes: refused after the attempts that wait for a passing crowd, and they all go on.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// Blocks every signal in the calling thread.
fn block_all() {
    // SAFETY: changes this thread's own signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Settings of its own the watchdog takes before it blocks every signal: a timer slack, early
/// machine-check kills, no_new_privs (this thread's alone).
fn own_settings() {
    // SAFETY: each changes this thread's own setting.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 53_000, 0, 0, 0);
        libc::prctl(
            libc::PR_MCE_KILL,
            libc::PR_MCE_KILL_SET,
            libc::PR_MCE_KILL_EARLY,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

/// (timer slack, machine-check policy, no_new_privs) of the calling thread.
fn settings() -> (i32, i32, i32) {
    // SAFETY: queries of this thread's own settings.
    unsafe {
        (
            libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0),
            libc::prctl(libc::PR_MCE_KILL_GET, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
        )
    }
}

/// (alternate stack base, size, signal mask word) of the calling thread.
fn thread_state() -> (u64, u64, u64) {
    // SAFETY: queries of this thread's own state into local buffers.
    unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut ss);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        let word = *(std::ptr::addr_of!(set) as *const u64);
        (ss.ss_sp as u64, ss.ss_size as u64, word)
    }
}

fn main() {
    let (_, _, extra) = common::argv();
    if extra.iter().any(|a| a == "vfork") {
        return stuck_in_vfork(&common::argv().0);
    }
    if extra.iter().any(|a| a == "crowd") {
        return crowd(&common::argv().0);
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<f64>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watchdog = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let alt = vec![0u8; 64 * 1024].leak();
            // SAFETY: a leaked buffer that lives as long as the process.
            unsafe {
                let ss = libc::stack_t {
                    ss_sp: alt.as_mut_ptr().cast(),
                    ss_flags: 0,
                    ss_size: alt.len(),
                };
                libc::sigaltstack(&ss, std::ptr::null_mut());
            }
            own_settings();
            block_all();
            let before = (thread_state(), settings());
            let x = std::hint::black_box(1.25f64);
            ready_tx.send(thaw::sys::gettid()).unwrap();
            let y = wake_rx.recv().unwrap();
            done_tx
                .send((before, (thread_state(), settings()), x * y))
                .unwrap();
        })
        .unwrap();
    let (mut pipe_r, mut pipe_w) = std::io::pipe().unwrap();
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || {
            block_all();
            let mut b = [0u8; 1];
            let n = pipe_r.read(&mut b).unwrap_or(0);
            read_tx.send((n, b[0])).unwrap();
        })
        .unwrap();
    let tid = ready_rx.recv().unwrap();
    // Both are asleep in their system calls with every signal blocked.
    let asleep = |name: &str| {
        std::fs::read_dir("/proc/self/task").unwrap().any(|e| {
            let t = e.unwrap().file_name().into_string().unwrap();
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).unwrap_or_default();
            stat.contains(&format!("({name}) S"))
        })
    };
    while !(asleep("watchdog") && asleep("reader")) {
        std::thread::yield_now();
    }
    common::checkpoint();
    let mut c = common::Checks::default();
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
    c.check(
        "watchdog thread, same TID and name",
        comm.trim() == "watchdog",
        comm.trim(),
    );
    wake_tx.send(2.0).unwrap();
    let (before, after, product) = done_rx.recv().unwrap();
    c.check(
        "it wakes when given what it waits for",
        product == 2.5,
        product,
    );
    c.check(
        "its signal mask and alternate stack",
        before.0 == after.0 && before.0 .1 == 64 * 1024 && before.0 .2.count_ones() >= 60,
        format!("{:x?} (was {:x?})", after.0, before.0),
    );
    // SAFETY: a query of this thread's own flag.
    let main_nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    c.check(
        "its own timer slack, machine-check policy and no_new_privs, not the main thread's",
        before.1 == after.1 && before.1 == (53_000, libc::PR_MCE_KILL_EARLY, 1) && main_nnp == 0,
        format!(
            "{:?} (was {:?}), main thread no_new_privs {main_nnp}",
            after.1, before.1
        ),
    );
    pipe_w.write_all(b"z").unwrap();
    let got = read_rx.recv().unwrap();
    c.check(
        "the reader reads what is written",
        got == (1, b'z'),
        format!("{got:?}"),
    );
    watchdog.join().unwrap();
    reader.join().unwrap();
    c.finish();
}

/// A thread in vfork cannot take signals until its child execs or exits; the child waits for a
/// byte on a pipe that is written only after the checkpoint has given up.
fn stuck_in_vfork(image: &str) {
    let (r, mut w) = std::io::pipe().unwrap();
    let rfd = r.as_raw_fd();
    let t = std::thread::Builder::new()
        .name("vforker".into())
        .spawn(move || {
            let stack = vec![0u8; 64 * 1024];
            let top = stack.as_ptr() as u64 + stack.len() as u64 - 64;
            let flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
            let pid: i64;
            // SAFETY: clone(CLONE_VM | CLONE_VFORK) with a stack of its own: the child runs only
            // the instruction groups below (prctl, read one byte, exit) on that stack, while this
            // thread is suspended until it exits; `stack` outlives the child.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    "test rax, rax",
                    "jnz 2f",
                    // prctl(PR_SET_PDEATHSIG, SIGKILL): a parent that dies early must not leave
                    // the child holding the test's pipes, waiting for a byte that never comes.
                    "mov eax, 157",
                    "mov edi, 1",
                    "mov esi, 9",
                    "syscall",
                    "xor eax, eax",
                    "mov edi, r12d",
                    "mov rsi, rsp",
                    "mov edx, 1",
                    "syscall",
                    "mov eax, 60",
                    "xor edi, edi",
                    "syscall",
                    "2:",
                    inlateout("rax") libc::SYS_clone => pid,
                    in("rdi") flags,
                    in("rsi") top,
                    in("rdx") 0u64,
                    in("r10") 0u64,
                    in("r8") 0u64,
                    in("r12") rfd as u64,
                    lateout("rcx") _,
                    lateout("r11") _,
                );
            }
            let pid = pid as i32;
            drop(stack);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            "done"
        })
        .unwrap();
    // Wait until the thread is inside vfork (state D: waiting for its child, deaf to signals).
    let tid = loop {
        let me = std::process::id().to_string();
        let found = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| {
                let tid = e.ok()?.file_name().into_string().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
                (tid != me && stat.contains("(vforker) D")).then_some(tid)
            })
            .next();
        if let Some(tid) = found {
            break tid;
        }
        std::thread::yield_now();
    };
    // The vfork child is a child too: left out, so that the thread is what the refusal is about.
    let before = open_fds();
    let r = thaw::Checkpoint::to(image)
        .thread_timeout(std::time::Duration::from_millis(200))
        .leave_children_out(true)
        .save();
    match r {
        Ok(_) => {
            println!("unexpectedly saved");
            std::process::exit(1);
        }
        Err(e) => println!("error: {e}"),
    }
    // Its attempts were given up on while the thread had not taken the signal: what they
    // opened is closed again (the descriptors are as they were).
    let after = open_fds();
    println!(
        "descriptors as before: {} ({before:?}, now {after:?})",
        before == after
    );
    w.write_all(b"x").unwrap();
    println!("vforker tid {tid} finished: {}", t.join().unwrap());
    println!("exists: {}", std::path::Path::new(image).exists());
}

/// 70 threads that block every signal and wait on a channel each: more than the helper stops.
fn crowd(image: &str) {
    const N: usize = 70;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut wakes = Vec::new();
    let mut threads = Vec::new();
    for i in 0..N {
        let (wake_tx, wake_rx) = std::sync::mpsc::channel::<usize>();
        let ready = ready_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("crowd{i}"))
                .stack_size(64 << 10)
                .spawn(move || {
                    block_all();
                    ready.send(()).unwrap();
                    wake_rx.recv().unwrap() == i
                })
                .unwrap(),
        );
        wakes.push(wake_tx);
    }
    for _ in 0..N {
        ready_rx.recv().unwrap();
    }
    match thaw::Checkpoint::to(image).save() {
        Ok(_) => {
            println!("unexpectedly saved");
            std::process::exit(1);
        }
        Err(e) => println!("error: {e}"),
    }
    for (i, w) in wakes.iter().enumerate() {
        w.send(i).unwrap();
    }
    let woke = threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .filter(|&ok| ok)
        .count();
    println!("woke {woke} of {N}");
    println!("exists: {}", std::path::Path::new(image).exists());
}

/// The process's descriptors, with what each names.
fn open_fds() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().into_string().ok()?,
                link.display().to_string(),
            ))
        })
        .collect();
    // (The listing's own descriptor names /proc/PID/fd.)
    v.retain(|(_, l)| !l.ends_with("/fd"));
    v.sort();
    v
}
