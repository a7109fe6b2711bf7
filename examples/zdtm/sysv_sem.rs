//! System V semaphores. With `undo`, the process holds a semaphore taken with SEM_UNDO: the
//! checkpoint is refused, naming it (the first life's exit would give the semaphore back while
//! the restored process counted on holding it). Without: it took one with SEM_UNDO, then dropped
//! its undo list (`unshare(CLONE_SYSVSEM)`, which gives that back), and holds another taken
//! without SEM_UNDO: after restore the set is there with the same values (the one it holds still
//! taken, though the first life has exited), and the process may take the other again.

#[path = "common.rs"]
mod common;

fn semop(id: i32, num: u16, op: i16, flags: i16) -> i32 {
    let mut b = libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: flags,
    };
    // SAFETY: one operation from a buffer of ours.
    unsafe { libc::semop(id, &mut b, 1) }
}

fn value(id: i32, num: i32) -> i32 {
    // SAFETY: GETVAL takes no argument.
    unsafe { libc::semctl(id, num, libc::GETVAL) }
}

fn main() {
    // SAFETY: a fresh private set of two semaphores.
    let id = unsafe { libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "semget");
    for n in 0..2 {
        // SAFETY: SETVAL takes an int.
        assert_eq!(unsafe { libc::semctl(id, n, libc::SETVAL, 1) }, 0);
    }
    if common::argv().2.iter().any(|a| a == "undo") {
        common::refusal(|| {
            assert_eq!(semop(id, 0, -1, libc::SEM_UNDO as i16), 0);
            println!("semid {id}");
        });
    }
    // Taken with SEM_UNDO, then given back by dropping the undo list.
    assert_eq!(semop(id, 1, -1, libc::SEM_UNDO as i16), 0);
    // SAFETY: unshare(CLONE_SYSVSEM) applies and drops this process's undo list.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_SYSVSEM) }, 0);
    assert_eq!(value(id, 1), 1, "unshare gave it back");
    // Held without SEM_UNDO: the kernel keeps it taken after the first life exits.
    assert_eq!(semop(id, 0, -1, 0), 0);
    println!("semid {id}");
    common::checkpoint();
    let mut c = common::Checks::default();
    println!("semid {id}");
    let (v0, v1) = (value(id, 0), value(id, 1));
    c.check(
        "semaphore set: the one held still taken, the other free",
        v0 == 0 && v1 == 1,
        format!("values {v0} {v1}"),
    );
    let took = semop(id, 1, -1, (libc::SEM_UNDO | libc::IPC_NOWAIT) as i16) == 0;
    c.check(
        "semaphore taken again with SEM_UNDO",
        took && value(id, 1) == 0,
        std::io::Error::last_os_error(),
    );
    // Given back at exit, for the next restore.
    c.finish()
}
