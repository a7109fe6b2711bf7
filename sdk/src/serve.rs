//! Asking a `thaw serve` for an instance, and what the two sides say to each other.
//!
//! A function host starts an instance as it would fork a process: [`Call::start`] connects to
//! the server's socket, passes the arguments, environment and standard descriptors, and
//! returns once the instance runs; [`Instance::wait`] returns its exit status. The connection
//! is the handle: it becomes readable when the instance has ended, and the instance is killed
//! if the handle is dropped before that.
//!
//! The wire protocol (`SOCK_SEQPACKET`, one postcard message per packet): the caller opens
//! with a [`Request`] carrying its standard input, output and error (SCM_RIGHTS); then it may
//! send [`ToServer`] messages. The server answers with [`ToCaller`] messages: `Queued` when the
//! caller must wait for a slot, `Started`, then `Exited`; or `Failed` at any point. It closes
//! the connection once it holds nothing of the instance.
//!
//! ```no_run
//! let status = thaw::serve::Call::new()
//!     .arg("Oslo")
//!     .start("/run/app.sock".as_ref())?
//!     .wait()?;
//! # Ok::<(), thaw::serve::ServeError>(())
//! ```

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys;

/// A request for an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The instance's arguments (what `thaw run` gives after `--`).
    #[serde(with = "crate::restore::byte_strings")]
    pub args: Vec<Vec<u8>>,
    /// Its environment, `KEY=VALUE`.
    #[serde(with = "crate::restore::byte_strings")]
    pub env: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToServer {
    /// Pass this signal on to the instance.
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCaller {
    /// The instance runs, with this PID in its namespace.
    Started { pid: i32 },
    /// The instance ended: exit status (128+N for signal N).
    Exited { status: i32 },
    /// No instance, or it failed while being restored: an exit code and a one-line message.
    Failed { code: u8, message: String },
    /// Every one of the server's `max` instance slots is taken: the call waits for one.
    Queued { max: u32 },
}

/// The largest message either side sends, besides the request's arguments.
pub const SMALL: usize = 4096;

/// Why a call got no instance, or lost it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot reach a thaw server at {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    /// The server refused the call or could not restore the instance; `code` is the exit code
    /// `thaw run` uses for the same failure.
    #[error("{message}")]
    Failed { code: u8, message: String },
    #[error("the server ended before the instance did")]
    ServerGone,
    #[error("talking to the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's answer is not understood: {0}")]
    Protocol(String),
}

/// An instance to ask for: its arguments, environment and standard descriptors.
#[derive(Debug)]
pub struct Call<'a> {
    request: Request,
    stdio: [RawFd; 3],
    _fds: std::marker::PhantomData<BorrowedFd<'a>>,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Call<'a> {
    /// No arguments, this process's environment and standard descriptors.
    pub fn new() -> Self {
        let env = std::env::vars_os()
            .map(|(k, v)| kv(k.as_bytes(), v.as_bytes()))
            .collect();
        Call {
            request: Request {
                args: Vec::new(),
                env,
            },
            stdio: [0, 1, 2],
            _fds: std::marker::PhantomData,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.request.args.push(a.as_ref().as_bytes().to_vec());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let key = key.as_ref().as_bytes();
        self.request
            .env
            .retain(|e| e.split(|&b| b == b'=').next() != Some(key));
        self.request.env.push(kv(key, value.as_ref().as_bytes()));
        self
    }

    /// Starts from an empty environment.
    pub fn env_clear(mut self) -> Self {
        self.request.env.clear();
        self
    }

    /// The instance's standard input, output and error (by default this process's).
    pub fn stdio(
        mut self,
        stdin: BorrowedFd<'a>,
        stdout: BorrowedFd<'a>,
        stderr: BorrowedFd<'a>,
    ) -> Self {
        self.stdio = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
        self
    }

    /// Asks the server at `socket` for an instance; returns once it runs.
    pub fn start(&self, socket: &Path) -> Result<Instance, ServeError> {
        self.start_with(socket, |_| {})
    }

    /// As [`Call::start`]; `queued(max)` runs if all of the server's `max` slots are taken
    /// and the call waits for one.
    pub fn start_with(
        &self,
        socket: &Path,
        mut queued: impl FnMut(u32),
    ) -> Result<Instance, ServeError> {
        // Encoded first: the server looks for the request as soon as the connection comes.
        let bytes = postcard::to_allocvec(&self.request)
            .map_err(|e| ServeError::Protocol(e.to_string()))?;
        let sock = sys::seqpacket_connect(socket).map_err(|source| ServeError::Unreachable {
            path: socket.display().to_string(),
            source,
        })?;
        sys::send_with_fds(sock.as_raw_fd(), &bytes, &self.stdio).map_err(|e| {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                ServeError::Failed {
                    code: 64,
                    message: "the arguments and environment are too large to send".into(),
                }
            } else {
                ServeError::Io(e)
            }
        })?;
        let mut instance = Instance {
            sock,
            pid: 0,
            status: None,
        };
        loop {
            match instance.next()? {
                ToCaller::Started { pid } => {
                    instance.pid = pid;
                    return Ok(instance);
                }
                ToCaller::Queued { max } => queued(max),
                ToCaller::Exited { .. } => {
                    return Err(ServeError::Protocol(
                        "an instance ended before it started".into(),
                    ))
                }
                ToCaller::Failed { code, message } => {
                    return Err(ServeError::Failed { code, message })
                }
            }
        }
    }
}

fn kv(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    e.push(b'=');
    e.extend_from_slice(v);
    e
}

/// A running instance. Dropping it before it has ended kills it (the server does, when the
/// connection closes).
#[derive(Debug)]
pub struct Instance {
    sock: OwnedFd,
    pid: i32,
    status: Option<i32>,
}

impl Instance {
    /// The instance's PID in its own namespace: the image's.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Passes `sig` on to the instance.
    pub fn signal(&self, sig: i32) -> Result<(), ServeError> {
        send_signal(self.sock.as_fd(), sig)
    }

    /// Waits for the instance to end; its exit status (128+N for signal N).
    pub fn wait(mut self) -> Result<i32, ServeError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            match self.next()? {
                ToCaller::Exited { status } => {
                    // The server closes the connection once it holds nothing of the instance.
                    let mut buf = [0u8; SMALL];
                    while let Ok(Some(_)) = sys::recv_with_fds(self.sock.as_raw_fd(), &mut buf) {}
                    self.status = Some(status);
                    return Ok(status);
                }
                ToCaller::Failed { code, message } => {
                    return Err(ServeError::Failed { code, message })
                }
                ToCaller::Started { .. } | ToCaller::Queued { .. } => {}
            }
        }
    }

    fn next(&mut self) -> Result<ToCaller, ServeError> {
        let mut buf = [0u8; SMALL];
        let packet =
            sys::recv_with_fds(self.sock.as_raw_fd(), &mut buf)?.ok_or(ServeError::ServerGone)?;
        postcard::from_bytes(&buf[..packet.len]).map_err(|e| ServeError::Protocol(e.to_string()))
    }

    /// The connection, for poll/epoll: readable once the instance has ended.
    pub fn into_fd(self) -> OwnedFd {
        self.sock
    }

    /// An instance whose connection was taken with [`Instance::into_fd`].
    pub fn from_fd(sock: OwnedFd, pid: i32) -> Instance {
        Instance {
            sock,
            pid,
            status: None,
        }
    }
}

/// Passes `sig` on to the instance behind connection `conn` (an [`Instance`]'s descriptor,
/// which another thread may be waiting on).
pub fn send_signal(conn: BorrowedFd, sig: i32) -> Result<(), ServeError> {
    let bytes = postcard::to_allocvec(&ToServer::Signal(sig))
        .map_err(|e| ServeError::Protocol(e.to_string()))?;
    sys::send_with_fds(conn.as_raw_fd(), &bytes, &[])?;
    Ok(())
}

impl AsFd for Instance {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = Request {
            args: vec![b"Oslo".to_vec()],
            env: vec![b"A=b".to_vec()],
        };
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), r);
        for m in [
            ToCaller::Started { pid: 42 },
            ToCaller::Exited { status: 3 },
            ToCaller::Queued { max: 64 },
            ToCaller::Failed {
                code: 67,
                message: "no".into(),
            },
        ] {
            let bytes = postcard::to_allocvec(&m).unwrap();
            assert!(bytes.len() < SMALL);
            assert_eq!(postcard::from_bytes::<ToCaller>(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn env_replaces_a_variable() {
        let c = Call::new()
            .env_clear()
            .env("A", "1")
            .env("B", "2")
            .env("A", "3");
        assert_eq!(c.request.env, vec![b"B=2".to_vec(), b"A=3".to_vec()]);
    }
}
