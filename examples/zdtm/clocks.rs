//! Clocks: CLOCK_MONOTONIC and CLOCK_BOOTTIME read just before the checkpoint must not be ahead
//! of what the restored process reads, through the vDSO and through the system call, whichever
//! boot or machine restores it. Prints `timens monotonic S N` (this process's time namespace
//! offset) after restore.

#[path = "common.rs"]
mod common;

fn vdso(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn syscall(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the raw system call with a valid timespec to fill.
    unsafe { libc::syscall(libc::SYS_clock_gettime, clock, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn main() {
    let mono = vdso(libc::CLOCK_MONOTONIC);
    let boot = vdso(libc::CLOCK_BOOTTIME);
    common::checkpoint();
    let mut c = common::Checks::default();
    let (m1, b1) = (vdso(libc::CLOCK_MONOTONIC), vdso(libc::CLOCK_BOOTTIME));
    let (m2, b2) = (
        syscall(libc::CLOCK_MONOTONIC),
        syscall(libc::CLOCK_BOOTTIME),
    );
    let (m3, b3) = (vdso(libc::CLOCK_MONOTONIC), vdso(libc::CLOCK_BOOTTIME));
    c.check(
        "clocks: monotonic continues",
        m1 >= mono,
        format!("{mono} -> {m1}"),
    );
    c.check(
        "clocks: boottime continues",
        b1 >= boot,
        format!("{boot} -> {b1}"),
    );
    c.check(
        "clocks: vDSO and system call agree",
        m1 <= m2 && m2 <= m3 && b1 <= b2 && b2 <= b3,
        format!("{m1} {m2} {m3} / {b1} {b2} {b3}"),
    );
    let offsets = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
    for l in offsets.lines().filter(|l| l.starts_with("monotonic")) {
        println!("timens {l}");
    }
    // SAFETY: a 1 ms relative sleep.
    let slept = unsafe {
        libc::nanosleep(
            &libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            },
            std::ptr::null_mut(),
        )
    };
    c.check(
        "clocks: a relative sleep ends",
        slept == 0 && vdso(libc::CLOCK_MONOTONIC) > m3,
        slept,
    );
    c.finish();
}
