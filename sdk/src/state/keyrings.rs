//! Keyrings (`keyctl`, `add_key`): refused where the process made its own.
//!
//! The kernel keeps a process's keys in keyrings that belong to it: a process keyring shared by
//! its threads and a keyring of each thread, made on first use (`KEY_SPEC_PROCESS_KEYRING`,
//! `KEY_SPEC_THREAD_KEYRING`). A restored process is new to the kernel and would have neither:
//! its keys gone, the serials it kept naming nothing. Keys cannot be read back (a key's payload
//! may be unreadable even to its owner), so a process or thread keyring is refused by name. The
//! session keyring is inherited, like the caller's terminal: a restored process has the
//! caller's (see docs/restore.md).

const KEYCTL_GET_KEYRING_ID: u64 = 0;
const KEY_SPEC_THREAD_KEYRING: i64 = -1;
const KEY_SPEC_PROCESS_KEYRING: i64 = -2;

/// Whether the calling thread has a keyring of its own (`Some(false)`: none; `None`: the kernel
/// has no keys). Async-signal-safe.
pub fn thread_has_keyring() -> Option<bool> {
    has(KEY_SPEC_THREAD_KEYRING)
}

fn has(which: i64) -> Option<bool> {
    // Without "create", ENOKEY says there is none.
    let r = crate::sys::syscall6(
        libc::SYS_keyctl,
        [KEYCTL_GET_KEYRING_ID, which as u64, 0, 0, 0, 0],
    );
    match r {
        r if r >= 0 => Some(true),
        r if r == -(libc::ENOKEY as i64) => Some(false),
        _ => None,
    }
}

/// Whether the process has a process keyring.
pub fn process_has_keyring() -> bool {
    has(KEY_SPEC_PROCESS_KEYRING) == Some(true)
}

/// The keyrings that rule out a checkpoint: the process's own, and each thread's.
pub(crate) fn refusals(c: &crate::capture::Capture) -> Vec<String> {
    use std::sync::atomic::Ordering;
    let mut out = Vec::new();
    if process_has_keyring() {
        out.push("the process has a keyring of its own (keyctl: KEY_SPEC_PROCESS_KEYRING), whose keys a restored process would not have: add them to it again after restore".to_owned());
    }
    for t in c.threads.iter().filter(|t| t.recorded()) {
        if t.keyring.load(Ordering::Relaxed) == 2 {
            out.push(format!(
                "thread {} has a keyring of its own (keyctl: KEY_SPEC_THREAD_KEYRING), whose keys a restored thread would not have: add them to it again after restore",
                t.tid.load(Ordering::Relaxed)
            ));
        }
    }
    out
}
