//! Signals: a handler installed before the checkpoint still fires after restore; the signal mask
//! and the sigaltstack are kept. With `no-altstack` the main thread never had an alternate stack
//! (as in a C program or CPython: this one has no Rust `main`, whose runtime would set one up) and
//! the handler asks for one (`SA_ONSTACK`, as CPython's do): it must run on the thread's own stack
//! after restore, and the thread must still have none.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};

static HITS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr1(_: i32) {
    HITS.fetch_add(1, Ordering::SeqCst);
}

fn mask() -> libc::sigset_t {
    // SAFETY: reading the current mask into a zeroed sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        set
    }
}

/// The C entry point: std's runtime set-up (which gives the main thread an alternate stack) does
/// not run.
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let none = common::argv().2.iter().any(|a| a == "no-altstack");
    let alt: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
    // SAFETY: plain libc signal setup with a valid handler, a valid set and a leaked stack.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_ONSTACK;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        libc::signal(libc::SIGWINCH, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: alt.len(),
        };
        if !none {
            libc::sigaltstack(&ss, std::ptr::null_mut());
        }
        libc::raise(libc::SIGUSR1);
    }
    let before = HITS.load(Ordering::SeqCst);
    let _args = common::checkpoint();
    let mut c = common::Checks::default();
    // SAFETY: raising a signal whose handler is installed; reading dispositions and the altstack.
    let (after, usr2_blocked, winch_ignored, ss) = unsafe {
        libc::raise(libc::SIGUSR1);
        let m = mask();
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGWINCH, std::ptr::null(), &mut old);
        let mut ss: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut ss);
        (
            HITS.load(Ordering::SeqCst),
            libc::sigismember(&m, libc::SIGUSR2) == 1,
            old.sa_sigaction == libc::SIG_IGN,
            ss,
        )
    };
    c.check(
        "handler fires after restore",
        before == 1 && after == 2,
        format!("hits {before} then {after}"),
    );
    c.check("signal mask", usr2_blocked, "SIGUSR2 no longer blocked");
    c.check(
        "ignored signal",
        winch_ignored,
        "SIGWINCH no longer ignored",
    );
    let kept = if none {
        ss.ss_flags & libc::SS_DISABLE != 0
    } else {
        ss.ss_sp == alt.as_mut_ptr().cast() && ss.ss_size == alt.len()
    };
    c.check(
        "sigaltstack",
        kept,
        format!("{:?} {} flags {}", ss.ss_sp, ss.ss_size, ss.ss_flags),
    );
    c.finish();
}
