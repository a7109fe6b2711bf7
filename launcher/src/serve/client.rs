//! `thaw run --via SOCKET -- ARGS`: asks a `thaw serve` for an instance with these arguments,
//! this environment and these standard descriptors, passes the usual signals on, and returns
//! the instance's exit status.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::protocol::{Call, ToCaller, ToServer, SMALL};
use crate::exit::{Code, Failure, Result};
use crate::restore::FORWARDED;
use crate::sys;

/// Runs one instance through the server at `socket`; returns its exit status.
pub fn call(socket: &Path, args: &[OsString]) -> Result<i32> {
    // The usual signals go to the instance: blocked from before it exists, and a thread passes
    // them on once it does.
    sys::set_sigmask(FORWARDED.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let sock = sys::seqpacket_connect(socket).map_err(|e| {
        Failure::new(
            Code::Io,
            format!("cannot reach a thaw server at {}: {e}", socket.display()),
        )
    })?;
    let call = Call {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv
            })
            .collect(),
    };
    let bytes = postcard::to_allocvec(&call)
        .map_err(|e| Failure::new(Code::Internal, format!("cannot encode the request: {e}")))?;
    sys::send_with_fds(sock.as_raw_fd(), &bytes, &[0, 1, 2]).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EMSGSIZE) {
            " (the arguments and environment are too large)"
        } else {
            ""
        };
        Failure::new(
            Code::Io,
            format!("cannot send the request to the server: {e}{hint}"),
        )
    })?;
    let fd = sock.as_raw_fd();
    std::thread::spawn(move || loop {
        let sig = sys::wait_signal(&FORWARDED);
        if let Ok(bytes) = postcard::to_allocvec(&ToServer::Signal(sig)) {
            let _ = sys::send_with_fds(fd, &bytes, &[]);
        }
    });
    let mut buf = [0u8; SMALL];
    loop {
        let packet = sys::recv_with_fds(fd, &mut buf)
            .map_err(|e| Failure::new(Code::Io, format!("cannot hear from the server: {e}")))?;
        let Some(p) = packet else {
            return Err(Failure::new(
                Code::RestoreFailed,
                "the server ended before the instance did",
            ));
        };
        match postcard::from_bytes::<ToCaller>(&buf[..p.len]) {
            Ok(ToCaller::Started { .. }) => continue,
            Ok(ToCaller::Queued { max }) => {
                eprintln!(
                    "thaw: all {max} of the server's instances are running; waiting for one to end"
                );
                continue;
            }
            Ok(ToCaller::Exited { status }) => {
                // The server closes the connection once it holds nothing of the instance.
                while let Ok(Some(_)) = sys::recv_with_fds(fd, &mut buf) {}
                return Ok(status);
            }
            Ok(ToCaller::Failed { code, message }) => {
                return Err(Failure::new(
                    Code::from_u8(code).unwrap_or(Code::RestoreFailed),
                    message,
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    Code::Internal,
                    format!("cannot read the server's answer: {e}"),
                ))
            }
        }
    }
}
