//! A POSIX named semaphore (`sem_open`): glibc creates its file in /dev/shm under a temporary
//! name, links it as `sem.NAME`, unlinks the temporary name and maps it shared, so /proc shows
//! the mapping as a deleted file. Restored, the mapping is the named semaphore's file again:
//! its value is the one the first life left (taken once: 0), and a post through a handle opened
//! after restore is seen through the old one.

#[path = "common.rs"]
mod common;

use std::ffi::CString;

fn value(s: *mut libc::sem_t) -> i32 {
    let mut v = -1;
    // SAFETY: a valid semaphore and output.
    unsafe { libc::sem_getvalue(s, &mut v) };
    v
}

fn main() {
    let extra = common::argv().2;
    let name = CString::new(extra.first().cloned().unwrap_or_else(|| "/thaw-sem".into())).unwrap();
    // SAFETY: a NUL-terminated name; mode and value as sem_open's variadic arguments.
    let sem = unsafe { libc::sem_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 1) };
    assert_ne!(sem, libc::SEM_FAILED, "sem_open");
    // SAFETY: a valid semaphore.
    assert_eq!(unsafe { libc::sem_wait(sem) }, 0);
    common::checkpoint();
    let mut c = common::Checks::default();
    let before = value(sem);
    c.check(
        "named semaphore: the value the first life left",
        before == 0,
        format!("value {before}"),
    );
    // SAFETY: the same name, opened again.
    let again = unsafe { libc::sem_open(name.as_ptr(), 0) };
    // SAFETY: a valid semaphore.
    let posted = again != libc::SEM_FAILED && unsafe { libc::sem_post(again) } == 0;
    let after = value(sem);
    c.check(
        "named semaphore: one file with the name's (a post through a new handle shows)",
        posted && after == before + 1,
        format!("value {before} then {after}"),
    );
    // Taken again, for the next restore.
    // SAFETY: a valid semaphore.
    unsafe { libc::sem_wait(sem) };
    c.finish()
}
