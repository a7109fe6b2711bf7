//! A restored process that stops itself (Node's readline does `process.kill(process.pid,
//! 'SIGTSTP')` on Ctrl-Z in raw mode): whoever started `thaw run` sees it stopped too (the
//! launcher stopped with it, as a shell's job) and, once the group is continued (`fg`), it goes
//! on and ends. The launcher used to wait on, never stopped: the shell never got its terminal
//! back.

//!
//! With `ctrl-c`: restored on a terminal whose foreground group is the launcher's, it counts the
//! SIGINTs one Ctrl-C brings (the terminal signals the whole group: the launcher must not pass
//! its copy on), and prints the count once a line is typed.
//!
//! With `ctty`: started as the leader of a session on a terminal (as script(1), `docker run -t`
//! and `ssh -t host cmd` start a program), it says whether, restored, it has a controlling
//! terminal (`/dev/tty` opens and `tcgetpgrp` answers on standard input).

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};

static SIGINTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigint(_: i32) {
    SIGINTS.fetch_add(1, Ordering::SeqCst);
}

fn main() {
    if common::argv().2.iter().any(|a| a == "ctty") {
        common::checkpoint();
        let devtty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty");
        // SAFETY: tcgetpgrp has no memory-safety preconditions.
        let fg = unsafe { libc::tcgetpgrp(0) };
        let fg = if fg < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(fg)
        };
        if devtty.is_ok() && fg.is_ok() {
            println!("ctty yes");
        } else {
            println!("ctty no: /dev/tty {:?}, tcgetpgrp {fg:?}", devtty.err());
        }
        return;
    }
    if common::argv().2.iter().any(|a| a == "ctrl-c") {
        // SAFETY: a handler that only counts.
        unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as usize) };
        common::checkpoint();
        println!("ready");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while SIGINTS.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        println!("sigint {}", SIGINTS.load(Ordering::SeqCst));
        return;
    }
    common::checkpoint();
    println!("restored, stopping");
    // SAFETY: raise has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGTSTP) };
    println!("continued");
}
