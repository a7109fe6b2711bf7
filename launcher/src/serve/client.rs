//! `thaw run --via SOCKET -- ARGS`: asks a `thaw serve` for an instance with these arguments,
//! this environment and these standard descriptors (`thaw::serve::Call`), passes the usual
//! signals on, and returns the instance's exit status.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;

use thaw::serve::{send_signal, Call, ServeError};

use crate::exit::{Code, Failure, Result};
use crate::restore::FORWARDED;
use crate::sys;

/// Runs one instance through the server at `socket`; returns its exit status.
pub fn call(socket: &Path, args: &[OsString]) -> Result<i32> {
    // The usual signals go to the instance: blocked from before it exists, and a thread passes
    // them on once it does. One that comes while the caller waits for a slot (its user presses
    // Ctrl-C) ends the caller instead, as 128+N: the server sees it go and starts nothing for
    // it.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    sys::set_sigmask(FORWARDED.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let conn = Arc::new(OnceLock::<std::os::fd::OwnedFd>::new());
    let queued = Arc::new(AtomicBool::new(false));
    let (to, waiting) = (Arc::clone(&conn), Arc::clone(&queued));
    // A thread that cannot be created (a pids limit, RLIMIT_NPROC): before the instance exists.
    std::thread::Builder::new()
        .spawn(move || loop {
            let sig = sys::wait_signal(&FORWARDED);
            if to.get().is_none() && waiting.load(Ordering::Acquire) {
                std::process::exit(128 + sig);
            }
            let _ = send_signal(to.wait().as_fd(), sig);
        })
        .map_err(|e| {
            Failure::new(
                Code::RestoreFailed,
                format!("cannot start the thread that forwards signals: {e}"),
            )
        })?;
    let instance = Call::new()
        .args(args)
        .start_with(socket, |max| {
            // Queued before it says so: a signal that comes once it has said so ends it.
            queued.store(true, Ordering::Release);
            errln!("thaw: all {max} of the server's instances are running; waiting for one to end");
        })
        .map_err(failure)?;
    queued.store(false, Ordering::Release);
    let _ =
        conn.set(instance.as_fd().try_clone_to_owned().map_err(|e| {
            Failure::new(Code::Io, format!("cannot duplicate the connection: {e}"))
        })?);
    instance.wait().map_err(failure)
}

fn failure(e: ServeError) -> Failure {
    let code = match &e {
        ServeError::Unreachable { .. } | ServeError::Io(_) => Code::Io,
        ServeError::Failed { code, .. } => Code::from_u8(*code).unwrap_or(Code::RestoreFailed),
        ServeError::ServerGone => Code::RestoreFailed,
        ServeError::Protocol(_) => Code::Internal,
    };
    Failure::new(code, e)
}
