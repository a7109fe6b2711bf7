//! System V semaphores. A semaphore set lives in the kernel, outside the process, and is what it
//! was when the restored process runs (same IPC namespace, same ids). What belongs to the process
//! is its undo list: the adjustments `semop(..., SEM_UNDO)` keeps so that the kernel can give
//! back what the process took when it exits. The kernel does not show them, so they cannot be
//! saved; and the first life's exit applies them. A lock taken with `SEM_UNDO` (PHP's
//! `sem_acquire`, Apache's and many C servers' mutexes) would be free to others while the
//! restored process still counts on holding it. So a process with an undo list is refused.
//!
//! Whether it has one: a fork has none of its own (`copy_semundo` shares the list only with
//! `CLONE_SYSVSEM`), so the undo lists of a thread and of the snapshot, a fork, compare equal
//! (`kcmp(KCMP_SYSVSEM)`) exactly when the thread has none.

/// `KCMP_SYSVSEM` of `<linux/kcmp.h>`.
const KCMP_SYSVSEM: u64 = 6;

/// The refusal for a process any of whose `tids` has an undo list, where semaphore sets exist
/// at all (an undo list whose sets were all removed holds nothing). `fork` is a child of the
/// process made by `fork` (the snapshot).
pub(crate) fn refusals(tids: &[i32], fork: i32) -> Vec<String> {
    let with_list: Vec<i32> = tids
        .iter()
        .copied()
        .filter(|&t| crate::sys::kcmp(t, fork, KCMP_SYSVSEM) == Some(false))
        .collect();
    if with_list.is_empty() {
        return Vec::new();
    }
    let sets = sets();
    if sets.as_ref().is_some_and(|s| s.is_empty()) {
        return Vec::new();
    }
    let who = if with_list.len() == tids.len() || with_list == [crate::sys::getpid()] {
        "the process".to_owned()
    } else {
        let list: Vec<String> = with_list.iter().map(i32::to_string).collect();
        format!("thread(s) {}", list.join(", "))
    };
    let named = match sets {
        Some(s) => format!(" (sets in this IPC namespace: {})", s.join(", ")),
        None => String::new(),
    };
    vec![format!(
        "{who} used System V semaphores with SEM_UNDO{named}: the adjustments it holds cannot be read from the kernel, and the first life's exit would undo them, so a semaphore it holds would be free to others while the restored process counted on it; release what it holds and drop the undo list before the checkpoint (unshare(CLONE_SYSVSEM) does both), or use POSIX semaphores or file locks, which thaw restores"
    )]
}

/// The semaphore sets of the IPC namespace as "key 0x… (id N)", from /proc/sysvipc/sem (at most
/// eight named); `None` where it cannot be read.
fn sets() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/sysvipc/sem").ok()?;
    let all: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let key: i64 = f.next()?.parse().ok()?;
            let id = f.next()?;
            Some(format!("key {:#x} (id {id})", key as i32 as u32))
        })
        .collect();
    let n = all.len();
    let mut named: Vec<String> = all.into_iter().take(8).collect();
    if n > 8 {
        named.push(format!("and {} more", n - 8));
    }
    Some(named)
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
