//! Children: a forked worker blocked reading a pipe from us, and a zombie not yet reaped.
//!
//! `PROG IMAGE KEY refuse`: the checkpoint must fail naming both (printed, exit 3).
//! `PROG IMAGE KEY leave`: checkpointed with children left out; after restore the process has no
//! children (`waitpid` fails with ECHILD) and carries on.

#[path = "common.rs"]
mod common;

fn main() {
    let (image, key, extra) = common::argv();
    let mode = extra.first().map_or("refuse", String::as_str).to_owned();
    let mut p = [0i32; 2];
    // SAFETY: pipe() fills two descriptors; the children only read, sleep and _exit.
    let (worker, zombie) = unsafe {
        libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC);
        let worker = libc::fork();
        if worker == 0 {
            // Exits once every copy of the write end is closed: when the first life ends.
            libc::close(p[1]);
            let mut b = 0u8;
            libc::read(p[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        let zombie = libc::fork();
        if zombie == 0 {
            libc::_exit(7);
        }
        (worker, zombie)
    };
    // The zombie is one once it has exited; wait for that without reaping it.
    // SAFETY: a siginfo to fill; WNOWAIT leaves the child a zombie.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            zombie as u32,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
    // Keep the pipe's read end closed here so that it is not part of what is checked.
    // SAFETY: our own descriptor.
    unsafe { libc::close(p[0]) };
    println!("children {worker} {zombie}");
    // The worker's pipe goes to a child: left out, like the child.
    let mut cp = thaw::Checkpoint::to(&image)
        .exit_after_save(true)
        .fd(p[1], thaw::FdAction::Drop)
        .leave_children_out(mode == "leave");
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(_) => {}
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    }
    let mut c = common::Checks::default();
    // SAFETY: waiting for any child, without blocking.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    let err = std::io::Error::last_os_error().raw_os_error();
    c.check(
        "no children after restore",
        r == -1 && err == Some(libc::ECHILD),
        format!("{r} {err:?}"),
    );
    c.finish();
}
