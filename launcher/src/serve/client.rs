//! `thaw run --via SOCKET -- ARGS`: asks a `thaw serve` for an instance with these arguments,
//! this environment and these standard descriptors (`thaw::serve::Call`), passes the usual
//! signals on, and returns the instance's exit status.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use thaw::serve::{Call, ServeError, ToServer};

use crate::exit::{Code, Failure, Result};
use crate::restore::FORWARDED;
use crate::sys;

/// Runs one instance through the server at `socket`; returns its exit status.
pub fn call(socket: &Path, args: &[OsString]) -> Result<i32> {
    // The usual signals go to the instance: blocked from before it exists, and a thread passes
    // them on once it does.
    sys::set_sigmask(FORWARDED.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let instance = Call::new()
        .args(args)
        .start_with(socket, |max| {
            eprintln!(
                "thaw: all {max} of the server's instances are running; waiting for one to end"
            )
        })
        .map_err(failure)?;
    let fd = instance.as_fd().as_raw_fd();
    std::thread::spawn(move || loop {
        let sig = sys::wait_signal(&FORWARDED);
        if let Ok(bytes) = postcard::to_allocvec(&ToServer::Signal(sig)) {
            let _ = sys::send_with_fds(fd, &bytes, &[]);
        }
    });
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
