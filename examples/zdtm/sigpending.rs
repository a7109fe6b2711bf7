//! Signals pending at the checkpoint come back on the same queues with the same siginfo, in
//! order, and the first life keeps its queues as they were.
//!
//! Both threads block SIGUSR1, SIGRT+2 and SIGRT+3 (SIGRT = SIGRTMIN). Queued before the
//! checkpoint: for the process, SIGRT+2 twice (values 1, 2; a made-up si_code -10) and SIGUSR1
//! from kill() (si_code SI_USER: only the main thread may queue such a siginfo again); for the
//! main thread SIGRT+3 (value 3); for the worker SIGRT+3 twice (values 4, 5). Then each thread
//! unblocks them and records what its handler gets. Checked in both lives: the queues before
//! unblocking (/proc SigPnd, ShdPnd), and what each thread received, with its siginfo.
//!
//! `PROG IMAGE KEY [from-thread]`: checkpoint from the main thread, or from a third thread.
//! `PROG IMAGE KEY traced`: the main thread and the worker block every signal (so the
//! checkpoint stops them with ptrace, whose helper reads their queues and the process's), and a
//! third thread checkpoints.
//! `PROG IMAGE KEY timer`: a POSIX timer's signal pending (blocked): refused, naming it.
//! `PROG IMAGE KEY timer-running`: a POSIX timer fires every millisecond into a handler (not
//! blocked); 20 checkpoints in a row all succeed (one whose pause a signal came into starts
//! again), and it prints `checkpoints: 20`.

#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// (thread, signal, si_code, value, si_pid) of one delivery.
type Delivery = (i32, i32, i32, i64, i32);

/// What the handlers saw.
static GOT: Mutex<Vec<Delivery>> = Mutex::new(Vec::new());
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; the fields read are set for queued signals and
    // kill() alike (value 0 for the latter). The test's own threads take the lock only here
    // and after they have stopped receiving.
    unsafe {
        let i = &*info;
        let v = if i.si_code == libc::SI_USER {
            0
        } else {
            i.si_value().sival_ptr as i64
        };
        if let Ok(mut g) = GOT.try_lock() {
            g.push((libc::gettid(), sig, i.si_code, v, i.si_pid()));
        }
    }
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

fn set() -> libc::sigset_t {
    // SAFETY: a local set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGUSR1, rt(2), rt(3)] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

fn mask(how: i32) {
    let s = set();
    // SAFETY: this thread's own mask.
    unsafe { libc::pthread_sigmask(how, &s, std::ptr::null_mut()) };
}

/// rt_sigqueueinfo / rt_tgsigqueueinfo with si_code -10 and `value`.
fn queue(tid: Option<i32>, sig: i32, value: i64) {
    // SAFETY: a zeroed siginfo with the fields the kernel reads set; our own process.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = sig;
        info.si_code = -10;
        // si_pid, si_uid, then the value (struct layout of the kill/rt union).
        let words = &mut info as *mut libc::siginfo_t as *mut u32;
        *words.add(4) = libc::getpid() as u32;
        *words.add(5) = libc::getuid();
        *(words.add(6) as *mut i64) = value;
        let pid = libc::getpid();
        let r = match tid {
            Some(t) => libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, t, sig, &info),
            None => libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, &info),
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    }
}

fn sets() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let hex = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    (hex("SigPnd:"), hex("ShdPnd:"))
}

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// A POSIX timer signalling the process with `sig` in 1 ms, then every `interval_ns` (0: once).
fn timer(sig: i32, interval_ns: i64) {
    let ns = |n| libc::timespec {
        tv_sec: 0,
        tv_nsec: n,
    };
    let its = libc::itimerspec {
        it_interval: ns(interval_ns),
        it_value: ns(1_000_000),
    };
    // SAFETY: a zeroed sigevent with the fields the kernel reads set; a timer of our own.
    unsafe {
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = sig;
        let mut id: libc::timer_t = std::ptr::null_mut();
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id),
            0
        );
        libc::timer_settime(id, 0, &its, std::ptr::null_mut());
    }
}

fn timer_refusal() -> ! {
    common::refusal(|| {
        mask(libc::SIG_BLOCK);
        // Once, SIGRT+2 (blocked).
        timer(rt(2), 0);
        // Until it has fired (the signal is then pending, blocked).
        while sets().1 & bit(rt(2)) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    })
}

static TICKS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_tick(_: libc::c_int) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

/// Checkpoints 20 times in a row (each goes on) and prints how many succeeded and whether the
/// handler ran more than `ticks` times; exits.
fn twenty_checkpoints(image: &str, key: Option<String>, ticks: usize) -> ! {
    let mut done = 0;
    for i in 0..20 {
        let mut cp = thaw::Checkpoint::to(image);
        if let Some(k) = &key {
            cp = cp.sign_with(k);
        }
        match cp.save() {
            Ok(_) => done += 1,
            Err(e) => println!("checkpoint {i}: {e}"),
        }
    }
    let _ = std::fs::remove_file(image);
    println!(
        "checkpoints: {done}, ticks: {}",
        TICKS.load(Ordering::SeqCst) > ticks
    );
    std::process::exit(0)
}

fn timer_running(image: &str, key: Option<String>) -> ! {
    // SAFETY: a handler that only counts.
    unsafe { libc::signal(rt(4), on_tick as *const () as libc::sighandler_t) };
    // SIGRT+4 every millisecond.
    timer(rt(4), 1_000_000);
    twenty_checkpoints(image, key, 0)
}

/// `flood`: another process (a grandchild, no child of ours) sends SIGUSR1 to the process as
/// fast as it can, into a handler; 20 checkpoints in a row all succeed (a standard signal sent
/// again while the checkpoint reads its queues is the one pending, not one more to read), and it
/// prints `checkpoints: 20` and whether the handler ran.
fn flood(image: &str, key: Option<String>) -> ! {
    // SAFETY: a handler that only counts.
    unsafe { libc::signal(libc::SIGUSR1, on_tick as *const () as libc::sighandler_t) };
    let me = std::process::id() as i32;
    // SAFETY: fork in a process with one thread; the children only make system calls: the
    // first forks and exits, the second closes every descriptor and signals until we are gone.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            if libc::fork() == 0 {
                libc::close_range(0, u32::MAX, 0);
                while libc::kill(me, libc::SIGUSR1) == 0 {}
                libc::_exit(0);
            }
            libc::_exit(0);
        }
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    while TICKS.load(Ordering::SeqCst) < 100 {
        std::hint::spin_loop();
    }
    twenty_checkpoints(image, key, 100)
}

static TERMS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_term(_: libc::c_int) {
    TERMS.fetch_add(1, Ordering::SeqCst);
}

/// `from-outside`: another process (a child, reaped at once) sends SIGTERM to the checkpointing
/// thread while the checkpoint holds the threads, into a handler the program did not block: it
/// is the first life's, handled once the checkpoint returns, and not in the image (every
/// restore would get it). Prints `SIGTERM handled: N` in each life.
fn from_outside(image: &str, key: Option<String>) -> ! {
    // SAFETY: a handler that only counts.
    unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    // SAFETY: gettid has no preconditions.
    let (pid, tid) = (std::process::id() as i32, unsafe { libc::gettid() });
    common::after_first_scan(move || {
        // SAFETY: fork from this helper thread; the child only sends the signal and exits, and
        // is waited for before the checkpoint goes on.
        unsafe {
            let child = libc::fork();
            if child == 0 {
                libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGTERM);
                libc::_exit(0);
            }
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
    });
    let mut cp = thaw::Checkpoint::to(image);
    if let Some(k) = &key {
        cp = cp.sign_with(k);
    }
    let life = match cp.save() {
        Ok(thaw::Outcome::Saved(_)) => "first life",
        Ok(thaw::Outcome::Restored(_)) => "restored",
        Err(e) => {
            println!("checkpoint failed: {e}");
            std::process::exit(2)
        }
    };
    println!("{life}: SIGTERM handled: {}", TERMS.load(Ordering::SeqCst));
    std::process::exit(0)
}

fn main() {
    let (image, key, extra) = common::argv();
    if extra.iter().any(|a| a == "from-outside") {
        from_outside(&image, key);
    }
    if extra.iter().any(|a| a == "timer-running") {
        timer_running(&image, key);
    }
    if extra.iter().any(|a| a == "flood") {
        flood(&image, key);
    }
    let traced = extra.iter().any(|a| a == "traced");
    let from_thread = traced || extra.iter().any(|a| a == "from-thread");
    if extra.iter().any(|a| a == "timer") {
        timer_refusal();
    }
    // SAFETY: SA_SIGINFO handlers for our three signals.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // One at a time, in the kernel's order (a handler would otherwise be interrupted by the
        // next, and the last delivered would record first).
        sa.sa_mask = set();
        for sig in [libc::SIGUSR1, rt(2), rt(3)] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    mask(libc::SIG_BLOCK);
    if traced {
        // SAFETY: a full set, for this thread's own mask (the worker inherits it).
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        }
    }
    // SAFETY: plain calls.
    let (me, pid) = unsafe { (libc::gettid(), libc::getpid()) };
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The worker: blocks them too (a new thread inherits the mask), reports its queue, then
    // unblocks when told.
    let worker = std::thread::spawn(move || {
        // SAFETY: plain call.
        tx.send(unsafe { libc::gettid() }).unwrap();
        while go_rx.recv().is_ok() {
            let before = sets().0;
            mask(libc::SIG_UNBLOCK);
            mask(libc::SIG_BLOCK);
            done_tx.send(before).unwrap();
        }
    });
    let wtid = rx.recv().unwrap();
    queue(None, rt(2), 1);
    queue(None, rt(2), 2);
    // SAFETY: kill() to ourselves: SIGUSR1, blocked everywhere, waits in the process's queue.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    queue(Some(me), rt(3), 3);
    queue(Some(wtid), rt(3), 4);
    queue(Some(wtid), rt(3), 5);

    let mut cp = thaw::Checkpoint::to(&image);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    let outcome = if from_thread {
        std::thread::spawn(move || cp.save()).join().unwrap()
    } else {
        cp.save()
    };
    let life = match outcome {
        Ok(thaw::Outcome::Saved(_)) => "first life",
        Ok(thaw::Outcome::Restored(_)) => "restored",
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    };
    let mut c = common::Checks::default();
    let (private, shared) = sets();
    c.check(
        &format!("{life}: the queues as they were"),
        private == bit(rt(3)) && shared == bit(rt(2)) | bit(libc::SIGUSR1),
        format!("SigPnd {private:x} ShdPnd {shared:x}"),
    );
    mask(libc::SIG_UNBLOCK);
    mask(libc::SIG_BLOCK);
    go_tx.send(()).unwrap();
    let worker_queue = done_rx.recv().unwrap();
    drop(go_tx);
    worker.join().unwrap();
    c.check(
        &format!("{life}: the worker's queue as it was"),
        worker_queue == bit(rt(3)),
        format!("{worker_queue:x}"),
    );
    let got = GOT.lock().unwrap().clone();
    // The kernel takes a thread's own queue before the process's, each lowest signal first.
    let want = vec![
        (me, rt(3), -10, 3, pid),
        (me, libc::SIGUSR1, libc::SI_USER, 0, pid),
        (me, rt(2), -10, 1, pid),
        (me, rt(2), -10, 2, pid),
        (wtid, rt(3), -10, 4, pid),
        (wtid, rt(3), -10, 5, pid),
    ];
    c.check(
        &format!("{life}: each signal once, to its thread, in order, with its siginfo"),
        got == want,
        format!("{got:?}"),
    );
    c.finish();
}
