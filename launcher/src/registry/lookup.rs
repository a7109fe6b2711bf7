//! Asking the registry what a tag names while the launcher goes on with the image the tag named
//! last time (`thaw run HOST/NAME:TAG` with that image in the cache).
//!
//! The question is asked by a forked child: the launcher itself keeps no other thread (it grows
//! its descriptor table and clones itself later, both slower with threads sharing its tables),
//! and the child's client, runtime and connections vanish with it. The answer is awaited at the
//! restorer's last step, once the process exists and before it runs any code of its own
//! (`restore::LastWord`): the same digest, and the verified cached image goes on; another, and
//! the process is called off there and the launcher starts over with the image the registry
//! names now (fetching and checking that manifest itself). The cached name is only a guess of
//! which image to verify first, and the registry's stated digest only says whether it still
//! holds: a registry that lies about it gets an image the tag named before, signed and verified
//! like any other — what it could get by serving the old manifest anyway.

use std::io::{Read, Write};

use super::Remote;
use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::sys;

/// A question to the registry, on its way.
pub struct Lookup {
    child: i32,
    answer: std::fs::File,
}

/// A question never waited for (the restore ended first), or given up: its child goes.
impl Drop for Lookup {
    fn drop(&mut self) {
        if self.child > 0 {
            sys::kill(self.child, libc::SIGKILL);
            let _ = sys::wait(self.child);
        }
    }
}

impl Lookup {
    /// Starts asking the registry for the digest `reference` names (the launcher must have no
    /// other thread: it forks).
    pub fn start(reference: &str, ctx: &Context) -> Result<Lookup> {
        let io = |e: std::io::Error| {
            Failure::new(
                Code::Io,
                format!("cannot ask the registry about {reference}: {e}"),
            )
        };
        let (read, write) = sys::pipe().map_err(io)?;
        let parent = std::process::id() as i32;
        match sys::fork().map_err(io)? {
            0 => {
                drop(read);
                let answer = if sys::die_with_parent(parent) {
                    Remote::new(reference, ctx).and_then(|r| {
                        let d = r.manifest_digest();
                        // Its runtime's orderly shutdown would only delay the answer.
                        std::mem::forget(r);
                        d
                    })
                } else {
                    Err(Failure::new(Code::Internal, "the launcher is gone"))
                };
                let line = match answer {
                    Ok(d) => format!("0 {d}"),
                    Err(f) => format!("{} {}", f.code as u8, f.message),
                };
                let _ = std::fs::File::from(write).write_all(line.as_bytes());
                sys::exit_now(0)
            }
            child => Ok(Lookup {
                child,
                answer: std::fs::File::from(read),
            }),
        }
    }

    /// The registry's answer: the manifest digest, or its failure as `thaw run` would report it;
    /// `None` if a signal that ends programs came meanwhile (the launcher stops waiting).
    pub fn digest(self) -> Option<Result<String>> {
        use std::os::fd::AsRawFd;
        // Signals blocked but while waiting, so that one cannot slip in between the look at
        // what was forwarded and the wait (ppoll unblocks them and is woken by one).
        let mask = sys::set_sigmask(u64::MAX);
        let signalled = loop {
            if sys::ending_signal().is_some() {
                break true;
            }
            match sys::poll_once(&[self.answer.as_raw_fd()], None, Some(mask)) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => break false,
            }
        };
        // (A signal that came as the answer did is handled here; Ctrl-C also ends the child.)
        sys::set_sigmask(mask);
        if signalled || sys::ending_signal().is_some() {
            return None;
        }
        Some(self.read())
    }

    fn read(mut self) -> Result<String> {
        let mut line = String::new();
        let read = self.answer.read_to_string(&mut line);
        let _ = sys::wait(std::mem::take(&mut self.child));
        read.map_err(|e| {
            Failure::new(Code::Io, format!("cannot read the registry's answer: {e}"))
        })?;
        match line.split_once(' ') {
            Some(("0", d)) => Ok(d.to_string()),
            Some((code, msg)) => Err(Failure::new(
                code.parse()
                    .ok()
                    .and_then(Code::from_u8)
                    .unwrap_or(Code::Internal),
                msg,
            )),
            None => Err(Failure::new(
                Code::Internal,
                "the process asking the registry ended without an answer",
            )),
        }
    }
}
