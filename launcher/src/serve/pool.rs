//! What `thaw serve` makes ahead of callers: the inits of instances' PID namespaces (a PID and
//! a mount namespace, and a /proc mounted in it), and instances forked from the template that
//! wait for their arguments.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::{failed, refused};
use crate::exit::Result;
use crate::restore::template::Template;
use crate::sys;

/// Held (shared) while a template is made on reload: it starts with a copy of the server's
/// descriptors, another caller's files among them, and has closed them once it says it is
/// ready.
static FORKING: RwLock<()> = RwLock::new(());

/// Runs `f`, which starts a process that holds copies of the server's descriptors until it
/// says it is ready (a template made on reload), as a fork [`forks_settled`] waits for.
pub fn while_forking<T>(f: impl FnOnce() -> T) -> T {
    let _forking = FORKING.read().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Returns once no template being made holds a copy of the server's descriptors: a file the
/// server has closed is then held only where it was passed on.
pub fn forks_settled() {
    drop(FORKING.write().unwrap_or_else(|e| e.into_inner()));
}

/// Makes the inits of instances' namespaces (`sys::spawn_nursery`): it never holds a caller's
/// descriptors (it closes them before it runs), and the server never forks. One that died is
/// replaced.
pub struct Nursery {
    /// Its PID and the server's end of its socket.
    current: Mutex<(i32, OwnedFd)>,
}

impl Nursery {
    pub fn start() -> Result<Nursery> {
        Ok(Nursery {
            current: Mutex::new(Self::spawn()?),
        })
    }

    fn spawn() -> Result<(i32, OwnedFd)> {
        let (ours, theirs) =
            sys::socketpair().map_err(|e| failed(format!("cannot create a socket: {e}")))?;
        // Its first moments hold copies of the server's descriptors.
        let pid = while_forking(|| sys::spawn_nursery(theirs.as_raw_fd()))
            .map_err(|e| failed(format!("cannot start the nursery of namespaces: {e}")))?;
        Ok((pid, ours))
    }

    fn init(&self) -> Result<Init> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match Self::ask(&current.1) {
            Err(_) => {
                end(current.0);
                *current = Self::spawn()?;
                Self::ask(&current.1).map_err(|e| {
                    failed(format!("the nursery of namespaces does not answer: {e}"))
                })?
            }
            Ok(answer) => answer,
        }
    }

    /// One init, or why not; an error if the nursery is gone.
    fn ask(sock: &OwnedFd) -> std::io::Result<Result<Init>> {
        sys::send_with_fds(sock.as_raw_fd(), &[1], &[])?;
        let mut answer = [0u8; 4];
        let packet = sys::recv_with_fds(sock.as_raw_fd(), &mut answer)?
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let pid = i32::from_ne_bytes(answer);
        Ok(match <[OwnedFd; 3]>::try_from(packet.fds) {
            Ok([pidfd, pidns, mntns]) if pid > 0 && packet.len == 4 => Ok(Init {
                pidfd: Some(pidfd),
                ns: Some(Namespaces { pidns, mntns }),
            }),
            _ if pid < 0 => Err(refused(format!(
                "cannot create a PID namespace for the instance: {}",
                std::io::Error::from_raw_os_error(-pid)
            ))),
            _ => Err(failed(
                "the instance's namespace init could not mount its /proc",
            )),
        })
    }
}

fn end(pid: i32) {
    sys::kill(pid, libc::SIGKILL);
    let _ = sys::wait(pid);
}

impl Drop for Nursery {
    fn drop(&mut self) {
        end(self.current.lock().unwrap_or_else(|e| e.into_inner()).0);
    }
}

/// Up to `size` inits ready; [`Pool::take`] makes one on the spot when none is.
pub struct Pool {
    ready: Mutex<Vec<Init>>,
    wanted: Condvar,
    size: usize,
    nursery: Nursery,
}

impl Pool {
    pub fn new(size: usize, nursery: Nursery) -> Pool {
        Pool {
            ready: Mutex::new(Vec::with_capacity(size)),
            wanted: Condvar::new(),
            size,
            nursery,
        }
    }

    /// A ready init, or one made now.
    pub fn take(&self) -> Result<Init> {
        loop {
            let init = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop();
            self.wanted.notify_one();
            match init {
                // Inits die with their nursery.
                Some(i) if !i.alive() => continue,
                Some(i) => return Ok(i),
                None => return self.nursery.init(),
            }
        }
    }

    /// Keeps the pool full, for ever (on a thread of its own).
    pub fn fill(&self) -> ! {
        loop {
            {
                let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
                while ready.len() >= self.size {
                    ready = self.wanted.wait(ready).unwrap_or_else(|e| e.into_inner());
                }
            }
            match self.nursery.init() {
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
    pidfd: Option<OwnedFd>,
    ns: Option<Namespaces>,
}

/// A PID namespace and the mount namespace with its /proc.
pub struct Namespaces {
    pub pidns: OwnedFd,
    pub mntns: OwnedFd,
}

impl Init {
    fn alive(&self) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|p| !sys::readable_within(p.as_raw_fd(), std::time::Duration::ZERO))
    }

    pub fn ns(&self) -> &Namespaces {
        self.ns
            .as_ref()
            .expect("an init has its namespaces until ended")
    }

    /// Kills the init and waits until it (and so every process of its namespace) has ended.
    fn kill(&mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
            let _ = sys::wait_readable([pidfd.as_raw_fd()], -1);
        }
    }

    /// Ends every process of the namespace as dropping does, and returns the namespaces, now
    /// empty: the end of a mount namespace waits for an RCU grace period (with an interrupt to
    /// every CPU), which the caller may spend later, off anyone's path.
    pub fn end(mut self) -> Namespaces {
        self.kill();
        self.ns
            .take()
            .expect("an init has its namespaces until ended")
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An instance forked ahead of its caller, waiting in the restorer for its arguments; killed
/// with its namespace if dropped before it is launched.
pub struct Spare {
    pub pid: i32,
    pub sock: OwnedFd,
    init: Option<Init>,
}

impl Spare {
    /// The instance's mount namespace (its own /proc).
    pub fn mntns(&self) -> &OwnedFd {
        &self
            .init
            .as_ref()
            .expect("a spare has its init until launched")
            .ns()
            .mntns
    }

    /// The instance is given to a caller: the caller's thread waits for it and holds its init.
    pub fn launched(mut self) -> (i32, Init) {
        let pid = std::mem::replace(&mut self.pid, 0);
        (
            pid,
            self.init
                .take()
                .expect("a spare has its init until launched"),
        )
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if self.pid > 0 {
            sys::kill(self.pid, libc::SIGKILL);
            let _ = sys::wait(self.pid);
        }
    }
}

/// A request for spares of a template (see [`Served::replenish`]).
pub struct More {
    pub served: Arc<Served>,
    /// The instance that asked still runs.
    pub running: bool,
}

impl More {
    /// For a template just made: no instance of it runs.
    pub fn fresh(served: &Arc<Served>) -> More {
        More {
            served: Arc::clone(served),
            running: false,
        }
    }
}

/// A template and the instances forked from it ahead of callers: taking one of those leaves
/// only the arguments and descriptors to pass when a caller comes, not the fork (for a large
/// image the biggest part of an instance's start).
pub struct Served {
    // Dropped first: the spares end before the template does.
    spares: Mutex<Spares>,
    pub template: Template,
    keep: usize,
    /// What instances touch early, made ready in each spare.
    pub early: super::early::EarlyPages,
}

struct Spares {
    ready: Vec<Spare>,
    forking: usize,
}

impl Served {
    pub fn new(template: Template, keep: usize) -> Served {
        Served {
            template,
            spares: Mutex::new(Spares {
                ready: Vec::new(),
                forking: 0,
            }),
            keep,
            early: Default::default(),
        }
    }

    /// An instance forked ahead, if one is ready.
    pub fn take_ready(&self) -> Option<Spare> {
        self.spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready
            .pop()
    }

    /// An instance forked now, for the calling thread's caller.
    pub fn fork(&self, inits: &Pool) -> Result<Spare> {
        self.fork_into(inits.take()?)
    }

    fn fork_into(&self, init: Init) -> Result<Spare> {
        let (pid, sock) = self.template.fork(&init.ns().pidns)?;
        Ok(Spare {
            pid,
            sock,
            init: Some(init),
        })
    }

    /// Forks instances ahead until `keep` are ready or being made (on the server's thread for
    /// spares, asked once a caller's instance runs: the fork is off every caller's path).
    /// `running`: the instance that asked still runs.
    pub fn replenish(&self, inits: &Pool, running: bool) {
        loop {
            let urgent = {
                let mut s = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                if s.ready.len() + s.forking >= self.keep {
                    return;
                }
                s.forking += 1;
                s.ready.is_empty() || !running
            };
            // While the instance that asked runs, and a spare is still ready, the next one is
            // made only when the CPUs have nothing else to run (that instance answers first).
            // Else at once: with no spare ready, the next caller would have its instance
            // forked on its own path, the same work; and once the instance has ended, the
            // next caller may be on its way (a caller starting instances one after another
            // found no spare ready one time in three, when spares waited for idle CPUs).
            let made = inits.take().and_then(|init| {
                if !urgent {
                    sys::sched_idle(true);
                    thaw::sys::sched_yield();
                    // Forked at the usual priority even so: it holds the template's socket,
                    // which a caller may be waiting for.
                    sys::sched_idle(false);
                }
                let spare = self.fork_into(init)?;
                sys::sched_idle(!urgent);
                self.early.apply(spare.pid);
                sys::sched_idle(false);
                Ok(spare)
            });
            let mut s = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            s.forking -= 1;
            match made {
                Ok(spare) => s.ready.push(spare),
                Err(_) => return,
            }
        }
    }
}
