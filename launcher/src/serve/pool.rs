//! The inits of instances' PID namespaces, made ahead of callers: making one (a PID and a mount
//! namespace, and a /proc mounted in it) takes about as long as the rest of an instance's start.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Condvar, Mutex};

use super::{failed, pipe, refused};
use crate::exit::Result;
use crate::sys;

/// Up to `size` inits ready; [`Pool::take`] makes one on the spot when none is.
pub struct Pool {
    ready: Mutex<Vec<Init>>,
    wanted: Condvar,
    size: usize,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool {
            ready: Mutex::new(Vec::with_capacity(size)),
            wanted: Condvar::new(),
            size,
        }
    }

    pub fn take(&self) -> Result<Init> {
        let init = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop();
        self.wanted.notify_one();
        match init {
            Some(i) => Ok(i),
            None => Init::spawn(),
        }
    }

    /// Keeps the pool full, for ever: run on a thread that lives as long as the server (an
    /// init dies with the thread that made it).
    pub fn fill(&self) -> ! {
        loop {
            {
                let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
                while ready.len() >= self.size {
                    ready = self.wanted.wait(ready).unwrap_or_else(|e| e.into_inner());
                }
            }
            match Init::spawn() {
                Ok(i) => self.ready.lock().unwrap_or_else(|e| e.into_inner()).push(i),
                // Callers make their own (and report why it fails).
                Err(_) => {
                    let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
                    drop(self.wanted.wait(ready));
                }
            }
        }
    }
}

/// The init of one instance's PID namespace: killed (and so everything left in the namespace)
/// when dropped.
pub struct Init {
    pid: i32,
    pub pidns: OwnedFd,
    pub mntns: OwnedFd,
}

impl Init {
    fn spawn() -> Result<Init> {
        use std::io::Read;
        let (ready_r, ready_w) = pipe()?;
        let pid = sys::spawn_namespace_init(ready_w.as_raw_fd()).map_err(|e| {
            refused(format!(
                "cannot create a PID namespace for the instance: {e}"
            ))
        })?;
        drop(ready_w);
        let mut init = Init {
            pid,
            pidns: ns(pid, "pid")?,
            mntns: ns(pid, "mnt")?,
        };
        let mut byte = [0u8; 1];
        let ok = std::fs::File::from(ready_r).read_exact(&mut byte).is_ok() && byte[0] == 1;
        if !ok {
            init.end();
            return Err(failed(
                "the instance's namespace init could not mount its /proc",
            ));
        }
        Ok(init)
    }

    fn end(&mut self) {
        if self.pid > 0 {
            sys::kill(self.pid, libc::SIGKILL);
            let _ = sys::wait(self.pid);
            self.pid = 0;
        }
    }
}

fn ns(pid: i32, kind: &str) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| failed(format!("cannot open {path}: {e}")))
}

impl Drop for Init {
    fn drop(&mut self) {
        self.end();
    }
}
