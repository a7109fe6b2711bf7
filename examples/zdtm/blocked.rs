//! A thread that blocks the checkpoint signal (`zdtm-blocked IMAGE`), or one that cannot take it
//! because it is stuck in vfork (`zdtm-blocked IMAGE vfork`): the checkpoint fails with an error
//! naming the thread (tid and name), and the application goes on.

use std::io::Write;
use std::os::fd::AsRawFd;

fn main() {
    let image = std::env::args().nth(1).expect("IMAGE");
    if std::env::args().nth(2).as_deref() == Some("vfork") {
        return stuck_in_vfork(&image);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("stubborn".into())
        .spawn(move || {
            // SAFETY: blocking one signal in this thread's own mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, thaw::DEFAULT_SIGNAL);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                tx.send(libc::gettid()).unwrap();
            }
            stop_rx.recv().unwrap();
            "done"
        })
        .unwrap();
    let tid = rx.recv().unwrap();
    match thaw::Checkpoint::to(&image).save() {
        Ok(_) => {
            println!("unexpectedly saved");
            std::process::exit(1);
        }
        Err(e) => println!("error: {e}"),
    }
    stop_tx.send(()).unwrap();
    println!("stubborn tid {tid} finished: {}", t.join().unwrap());
    println!("exists: {}", std::path::Path::new(&image).exists());
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
            // the three instructions groups below (read one byte, exit) on that stack, while this
            // thread is suspended until it exits; `stack` outlives the child.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    "test rax, rax",
                    "jnz 2f",
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
    w.write_all(b"x").unwrap();
    println!("vforker tid {tid} finished: {}", t.join().unwrap());
    println!("exists: {}", std::path::Path::new(image).exists());
}
