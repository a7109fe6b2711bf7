//! System calls the checkpoint signal interrupts. A thread asleep in `sleep`, `nanosleep`,
//! `pause` or a wait without a timeout would return EINTR once its handler ran (the kernel never
//! restarts these after a handler, SA_RESTART or not), in the first life and in every restored
//! one: `sleep(3)` would return early. A checkpoint should look to the process like a stop and a
//! continue, so the handler sets the interrupted call to be issued again, as the kernel itself
//! does after SIGSTOP and SIGCONT:
//!
//! - `nanosleep` and relative `clock_nanosleep`: again, for the time that was left (the kernel
//!   wrote it to `rem`; without `rem`, for the whole time: never shorter), in a restored
//!   process less the time away on the sleep's clock (`threads::SleepLeft`: the kernel restarts
//!   a stopped sleep to its deadline);
//! - absolute `clock_nanosleep`; `ppoll`, `select` and `pselect6` (the kernel wrote the time
//!   left back into their timeout, and after a stop too runs them again for it, the time
//!   stopped not counted); `pause`, `rt_sigsuspend`; `poll`, `epoll_wait`,
//!   `epoll_pwait[2]` and `rt_sigtimedwait` without a timeout: again, as they were.
//!
//! - futex waits with an absolute deadline (`FUTEX_WAIT_BITSET`: `sem_timedwait`,
//!   `pthread_cond_timedwait`; `futex_waitv`): again, as they were (the futex word is checked
//!   again, so a wake-up meanwhile is not lost);
//! - System V IPC waits without a timeout (`semop`, `semtimedop` without one, `msgsnd`,
//!   `msgrcv`): again, as they were.
//!
//! Waits with a relative timeout that is not written back (`poll`, `epoll_wait`, `FUTEX_WAIT`)
//! still return EINTR: issued again they would wait their whole timeout once more, and their
//! callers (event loops, condition variables) already treat EINTR as an early wake-up.
//!
//! Which call a thread is in comes from /proc/self/task/TID/syscall, read just before the signal
//! is sent, and is trusted only if the frame the handler gets matches it exactly (instruction
//! and stack pointers, every argument register, EINTR as the result).

/// What /proc/self/task/TID/syscall said: number, six arguments, stack and instruction pointers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocked {
    pub nr: u64,
    pub args: [u64; 6],
    pub sp: u64,
    pub pc: u64,
}

/// How to issue the call again: which argument (if any) takes a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Again {
    pub set_arg: Option<(usize, u64)>,
}

const NANOSLEEP: u64 = 35;
const CLOCK_NANOSLEEP: u64 = 230;
const PAUSE: u64 = 34;
const RT_SIGSUSPEND: u64 = 130;
const RT_SIGTIMEDWAIT: u64 = 128;
const POLL: u64 = 7;
const PPOLL: u64 = 271;
const SELECT: u64 = 23;
const PSELECT6: u64 = 270;
const EPOLL_WAIT: u64 = 232;
const EPOLL_PWAIT: u64 = 281;
const EPOLL_PWAIT2: u64 = 441;
const FUTEX: u64 = 202;
const FUTEX_WAITV: u64 = 449;
const SEMOP: u64 = 65;
const SEMTIMEDOP: u64 = 220;
const MSGSND: u64 = 69;
const MSGRCV: u64 = 70;
const TIMER_ABSTIME: u64 = 1;
/// The futex operation without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
const FUTEX_CMD_MASK: u64 = !(128 | 256);
const FUTEX_WAIT_BITSET: u64 = 9;

/// Whether (and how) an interrupted call `b` is issued again.
pub fn again(b: &Blocked) -> Option<Again> {
    let a = b.args;
    let as_is = Some(Again { set_arg: None });
    match b.nr {
        NANOSLEEP if a[1] != 0 => Some(Again {
            set_arg: Some((0, a[1])),
        }),
        CLOCK_NANOSLEEP if a[1] & TIMER_ABSTIME == 0 && a[3] != 0 => Some(Again {
            set_arg: Some((2, a[3])),
        }),
        NANOSLEEP | CLOCK_NANOSLEEP | PAUSE | RT_SIGSUSPEND | PPOLL | SELECT | PSELECT6 => as_is,
        POLL if (a[2] as i32) < 0 => as_is,
        EPOLL_WAIT | EPOLL_PWAIT if (a[3] as i32) < 0 => as_is,
        FUTEX if (a[1] & FUTEX_CMD_MASK) & 0xffff_ffff == FUTEX_WAIT_BITSET => as_is,
        FUTEX_WAITV => as_is,
        RT_SIGTIMEDWAIT if a[2] == 0 => as_is,
        EPOLL_PWAIT2 if a[3] == 0 => as_is,
        // System V IPC waits without a timeout (a signal handler never restarts them).
        SEMOP | MSGSND | MSGRCV => as_is,
        SEMTIMEDOP if a[3] == 0 => as_is,
        _ => None,
    }
}

/// Whether call `nr` returns EINTR itself when its thread is stopped through ptrace (the others
/// return a restart code then): only for those may EINTR at such a stop be taken for an
/// interrupted wait (see traced.rs).
pub fn returns_eintr_itself(nr: u64) -> bool {
    matches!(
        nr,
        POLL | EPOLL_WAIT
            | EPOLL_PWAIT
            | EPOLL_PWAIT2
            | RT_SIGTIMEDWAIT
            | SEMOP
            | SEMTIMEDOP
            | MSGSND
            | MSGRCV
    )
}

/// Parses /proc/self/task/TID/syscall ("230 0x0 0x0 0x7ffd… 0x7ffd… 0x0 0x0 0x7ffc… 0x7f…");
/// `None` for "running", "-1 …" (blocked outside a system call) or anything unexpected.
/// Allocation-free: it runs while other threads may be stopped holding the allocator's lock.
pub fn parse(text: &[u8]) -> Option<Blocked> {
    let mut words = text
        .split(|&c| c == b' ' || c == b'\n')
        .filter(|w| !w.is_empty());
    let nr = decimal(words.next()?)?;
    let mut v = [0u64; 8];
    for x in &mut v {
        *x = hex(words.next()?)?;
    }
    Some(Blocked {
        nr,
        args: [v[0], v[1], v[2], v[3], v[4], v[5]],
        sp: v[6],
        pc: v[7],
    })
}

fn decimal(w: &[u8]) -> Option<u64> {
    w.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

fn hex(w: &[u8]) -> Option<u64> {
    let digits = w.strip_prefix(b"0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(16)?;
        Some(n << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(nr: u64, args: [u64; 6]) -> Blocked {
        Blocked {
            nr,
            args,
            sp: 0x7ffc_0000,
            pc: 0x7f00_1234,
        }
    }

    #[test]
    fn reads_the_proc_line() {
        let b = parse(b"230 0x0 0x0 0x7ffd10 0x7ffd20 0x0 0x0 0x7ffc00 0x7f1234\n").unwrap();
        assert_eq!(b.nr, 230);
        assert_eq!(b.args, [0, 0, 0x7ffd10, 0x7ffd20, 0, 0]);
        assert_eq!((b.sp, b.pc), (0x7ffc00, 0x7f1234));
        assert_eq!(parse(b"running\n"), None);
        assert_eq!(parse(b"-1 0x7ffc00 0x7f1234\n"), None);
        assert_eq!(parse(b"7 0x1 0x2\n"), None);
    }

    #[test]
    fn sleeps_go_on_for_what_was_left_and_timed_waits_keep_eintr() {
        // sleep(3): clock_nanosleep(CLOCK_REALTIME, 0, &req, &rem) goes on with rem.
        let s = again(&blocked(CLOCK_NANOSLEEP, [0, 0, 0x100, 0x200, 0, 0])).unwrap();
        assert_eq!(s.set_arg, Some((2, 0x200)));
        // Absolute: as it was. nanosleep(req, NULL): the whole time again.
        let abs = again(&blocked(CLOCK_NANOSLEEP, [1, 1, 0x100, 0, 0, 0])).unwrap();
        assert_eq!(abs.set_arg, None);
        assert_eq!(
            again(&blocked(NANOSLEEP, [0x100, 0, 0, 0, 0, 0]))
                .unwrap()
                .set_arg,
            None
        );
        assert_eq!(
            again(&blocked(NANOSLEEP, [0x100, 0x300, 0, 0, 0, 0]))
                .unwrap()
                .set_arg,
            Some((0, 0x300))
        );
        // Waits without a timeout go on; with one that is not written back, EINTR.
        assert!(again(&blocked(POLL, [1, 1, u32::MAX as u64, 0, 0, 0])).is_some());
        assert!(again(&blocked(POLL, [1, 1, 100, 0, 0, 0])).is_none());
        assert!(again(&blocked(EPOLL_WAIT, [3, 1, 8, u32::MAX as u64, 0, 0])).is_some());
        assert!(again(&blocked(EPOLL_WAIT, [3, 1, 8, 50, 0, 0])).is_none());
        assert!(again(&blocked(EPOLL_PWAIT2, [3, 1, 8, 0, 0, 8])).is_some());
        assert!(again(&blocked(EPOLL_PWAIT2, [3, 1, 8, 0x10, 0, 8])).is_none());
        assert!(again(&blocked(RT_SIGTIMEDWAIT, [1, 2, 0, 8, 0, 0])).is_some());
        assert!(again(&blocked(RT_SIGTIMEDWAIT, [1, 2, 0x10, 8, 0, 0])).is_none());
        assert!(again(&blocked(PPOLL, [1, 1, 0x10, 0, 8, 0])).is_some());
        // FUTEX_WAIT (relative) keeps EINTR; FUTEX_WAIT_BITSET (absolute), private or not, goes on.
        assert!(again(&blocked(FUTEX, [1, 128, 0, 0x10, 0, 0])).is_none());
        assert!(again(&blocked(FUTEX, [1, 9 | 128 | 256, 0, 0x10, 0, !0])).is_some());
        // System V IPC: without a timeout, again; semtimedop with one, EINTR.
        assert!(again(&blocked(SEMOP, [3, 0x10, 1, 0, 0, 0])).is_some());
        assert!(again(&blocked(MSGRCV, [3, 0x10, 64, 0, 0, 0])).is_some());
        assert!(again(&blocked(SEMTIMEDOP, [3, 0x10, 1, 0, 0, 0])).is_some());
        assert!(again(&blocked(SEMTIMEDOP, [3, 0x10, 1, 0x20, 0, 0])).is_none());
    }
}
