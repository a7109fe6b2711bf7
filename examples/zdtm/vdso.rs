//! The vDSO after restore: same address, and time calls through it work and move forward.

#[path = "common.rs"]
mod common;

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t
}

fn main() {
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let mono = now(libc::CLOCK_MONOTONIC);
    let _ = common::checkpoint();
    let mut c = common::Checks::default();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap_or("");
    let start = u64::from_str_radix(line.split('-').next().unwrap_or("0"), 16).unwrap_or(0);
    c.check(
        "vdso address",
        start == vdso,
        format!("{start:#x} != {vdso:#x}"),
    );
    let m2 = now(libc::CLOCK_MONOTONIC);
    c.check(
        "monotonic clock",
        (m2.tv_sec, m2.tv_nsec) > (mono.tv_sec, mono.tv_nsec),
        "went backwards",
    );
    let real = now(libc::CLOCK_REALTIME);
    c.check("realtime clock", real.tv_sec > 1_600_000_000, real.tv_sec);
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: valid out pointer, no timezone.
    unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
    c.check(
        "gettimeofday",
        (tv.tv_sec - real.tv_sec).abs() <= 1,
        tv.tv_sec,
    );
    c.finish();
}
