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
    // them on once it does. One that comes before (the caller waits for a slot, and its user
    // presses Ctrl-C) ends the caller, as 128+N: the server sees it go and starts nothing for
    // it; one that comes as the instance starts ends that too (a caller gone takes its
    // instance along).
    sys::set_sigmask(FORWARDED.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let conn = std::sync::Arc::new(std::sync::OnceLock::<std::os::fd::OwnedFd>::new());
    let to = std::sync::Arc::clone(&conn);
    std::thread::spawn(move || loop {
        let sig = sys::wait_signal(&FORWARDED);
        match to.get() {
            Some(c) => {
                let _ = send_signal(c.as_fd(), sig);
            }
            None => std::process::exit(128 + sig),
        }
    });
    let instance = Call::new()
        .args(args)
        .start_with(socket, |max| {
            eprintln!(
                "thaw: all {max} of the server's instances are running; waiting for one to end"
            )
        })
        .map_err(failure)?;
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
