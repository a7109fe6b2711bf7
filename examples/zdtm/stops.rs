//! A restored process that stops itself (Node's readline does `process.kill(process.pid,
//! 'SIGTSTP')` on Ctrl-Z in raw mode): whoever started `thaw run` sees it stopped too (the
//! launcher stopped with it, as a shell's job) and, once the group is continued (`fg`), it goes
//! on and ends. The launcher used to wait on, never stopped: the shell never got its terminal
//! back.

#[path = "common.rs"]
mod common;

fn main() {
    common::checkpoint();
    println!("restored, stopping");
    // SAFETY: raise has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGTSTP) };
    println!("continued");
}
