//! System V semaphores. A semaphore set lives in the kernel, outside the process, and is what it
//! was when the restored process runs (same IPC namespace, same ids). What belongs to the process
//! is its undo list: the adjustments `semop(..., SEM_UNDO)` keeps so that the kernel can give
//! back what the process took when it exits. The kernel does not show them, so they cannot be
//! saved; and the first life's exit applies them. A lock taken with `SEM_UNDO` (PHP's
//! `sem_acquire`, Apache's and many C servers' mutexes) would be free to others while the
//! restored process still counts on holding it. So a process that may hold adjustments is
//! refused.
//!
//! Which may: the kernel shows neither the adjustments nor whether there are any, so two signs
//! are taken together. The process has an undo list: a fork has none of its own (the list is
//! shared only with `CLONE_SYSVSEM`), so the lists of a thread and of the snapshot, a fork,
//! compare equal (`kcmp(KCMP_SYSVSEM)`) exactly when the thread has none — but creating a thread
//! makes one, empty, so a multithreaded process always has one. And some semaphore was last
//! changed by the process (`GETPID`): a semaphore it holds stays so while it holds it, unless
//! another process changes it too (a counting semaphore taken by several: not seen).

/// Set to 1, says the process holds no SEM_UNDO adjustment (it may use System V semaphores
/// otherwise, from several threads): the two signs are not taken for one.
pub const NO_SEM_UNDO: &str = "THAW_NO_SEM_UNDO";

/// `KCMP_SYSVSEM` of `<linux/kcmp.h>`.
const KCMP_SYSVSEM: u64 = 6;

/// The refusal for a process any of whose `tids` has an undo list and which last changed some
/// semaphore of a set it can read. `fork` is a child of the process made by `fork` (the
/// snapshot).
pub(crate) fn refusals(tids: &[i32], fork: i32) -> Vec<String> {
    let has_list = tids
        .iter()
        .any(|&t| crate::sys::kcmp(t, fork, KCMP_SYSVSEM) == Some(false));
    if !has_list || std::env::var_os(NO_SEM_UNDO).is_some_and(|v| v == "1") {
        return Vec::new();
    }
    let me = crate::sys::getpid();
    // A set last operated on before this process started was changed by another process that
    // had its PID (PIDs are reused; a set outlives its users).
    let started = started_at();
    let touched: Vec<String> = sets()
        .into_iter()
        .filter(|&(_, _, _, otime)| started.is_none_or(|s| otime + 1 >= s))
        .filter_map(|(key, id, nsems, _)| {
            let last: Vec<String> = (0..nsems)
                .filter(|&n| crate::sys::sem_last_pid(id, n) == me)
                .map(|n| n.to_string())
                .collect();
            (!last.is_empty()).then(|| {
                format!(
                    "set key {:#x} id {id} (semaphore {})",
                    key as u32,
                    last.join(", ")
                )
            })
        })
        .collect();
    if touched.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "System V semaphores this process changed last, with an undo list ({}): adjustments it holds with SEM_UNDO cannot be read from the kernel, and the first life's exit would apply them, so a semaphore it holds would be free to others while the restored process counted on it; release what it holds before the checkpoint (with no other thread left, the process may drop its undo list with unshare(CLONE_SYSVSEM), which gives back anything still held; while other threads share the list it stays), or use POSIX semaphores or file locks, which thaw restores; if it holds no SEM_UNDO adjustment (its semaphores were set or taken without SEM_UNDO), set {NO_SEM_UNDO}=1",
        touched.join("; ")
    )]
}

/// The semaphore sets of the IPC namespace as (key, id, number of semaphores, time of the last
/// semop in seconds since the epoch), from /proc/sysvipc/sem (none where it cannot be read).
fn sets() -> Vec<(i32, i32, i32, i64)> {
    let text = std::fs::read_to_string("/proc/sysvipc/sem").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
                f.get(8)?.parse().ok()?,
            ))
        })
        .collect()
}

/// When this process started, in seconds since the epoch (boot time plus its start in clock
/// ticks), if /proc says.
fn started_at() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &me[me.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the command name.
    let ticks: i64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let hz = crate::sys::clock_ticks_per_second();
    Some(btime + ticks / hz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_without_an_undo_list_is_not_refused() {
        // SAFETY: fork in a test process; the child only exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            // SAFETY: the child leaves at once.
            unsafe { libc::_exit(0) };
        }
        let me = crate::sys::getpid();
        // The child is a zombie until waited for, and still compares.
        let r = super::refusals(&[me], child);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        assert!(r.is_empty(), "{r:?}");
    }
}
