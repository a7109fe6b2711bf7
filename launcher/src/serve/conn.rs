//! One caller's connection: its request, the checks `thaw run` makes, its instance started, its
//! signals passed on and its exit status told.
//!
//! The server's main thread takes a caller as far as it can without blocking (the caller sends
//! its request with the connection, and a spare is usually ready): each hand-over to another
//! thread would add a wake-up to the instance's start, the largest cost left for a small image.
//! What may wait (a request not there yet, a full server, no spare) goes to a worker thread.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};

use thaw::restore::RestoreArgs;
use thaw::serve::{Request, ToCaller, ToServer, SMALL};
use thaw::state::creds::Credentials;

use super::{failed, pipe, pool, refused, tell};
use crate::exit::{Code, Failure, Result};
use crate::restore::policy;
use crate::restore::template::{InstanceFds, ARGS_MAX};
use crate::sys;

/// What every connection shares.
pub struct Shared<'a> {
    pub own: &'a Credentials,
    pub slots: &'a Slots,
    pub pool: &'a pool::Pool,
    /// Asks for spares to be made for a template (see `Served::replenish`).
    pub more: std::sync::mpsc::Sender<pool::More>,
}

/// A connection's work for a worker thread.
pub enum Job<'a> {
    /// A caller to serve from where the main thread left it: its request still to be read (or
    /// read, waiting for a slot or an instance).
    Call {
        conn: OwnedFd,
        served: Arc<pool::Served>,
        request: Option<(Request, [OwnedFd; 3])>,
    },
    /// An instance started by the main thread, to supervise.
    Running {
        conn: OwnedFd,
        served: Arc<pool::Served>,
        running: Running,
        slot: SlotGuard<'a>,
    },
}

/// A request's bytes (a fresh buffer of this size would be mapped and unmapped for each).
pub fn buffer() -> Vec<u8> {
    vec![0u8; ARGS_MAX + SMALL]
}

/// What the main thread did with a caller.
pub enum Quick<'a> {
    /// Nothing left to do (the caller left, or was told why not).
    Done,
    /// Its request is not there yet: to be tried again once the connection is readable.
    Later(OwnedFd, Arc<pool::Served>),
    /// Work for a worker: what the main thread could not do, or the started instance.
    Work(Job<'a>),
}

/// On the main thread: starts the caller's instance if nothing needs waiting for. A caller
/// whose request is not there yet comes back with `hold` (the main thread waits for it among
/// other connections), else goes to a worker.
pub fn quick<'a>(
    conn: OwnedFd,
    served: Arc<pool::Served>,
    hold: bool,
    buf: &mut [u8],
    sh: &Shared<'a>,
) -> Quick<'a> {
    let fd = conn.as_raw_fd();
    let to_worker = |conn, served, request| {
        Quick::Work(Job::Call {
            conn,
            served,
            request,
        })
    };
    let request = match read_request(fd, buf, libc::MSG_DONTWAIT) {
        Ok(Read::Got(r)) => r,
        Ok(Read::Gone) => return Quick::Done,
        Ok(Read::Later) if hold => return Quick::Later(conn, served),
        Ok(Read::Later) => return to_worker(conn, served, None),
        Err(f) => {
            tell_failure(fd, f);
            return Quick::Done;
        }
    };
    let Some(slot) = sh.slots.try_take() else {
        return to_worker(conn, served, Some(request));
    };
    let Some(spare) = served.take_ready() else {
        return to_worker(conn, served, Some(request));
    };
    let (call, stdio) = request;
    // A spare that died waiting is dropped (and reaped) here; the worker forks another.
    let Ok(given) = give(&served, spare, &call, &stdio) else {
        return to_worker(conn, served, Some((call, stdio)));
    };
    match started(&served, fd, given, stdio, sh) {
        Ok(running) => Quick::Work(Job::Running {
            conn,
            served,
            running,
            slot,
        }),
        Err(f) => {
            tell_failure(fd, f);
            Quick::Done
        }
    }
}

/// On a worker thread: serves the connection to its end.
pub fn serve(job: Job, buf: &mut [u8], sh: &Shared) {
    let mut spent = None;
    let (conn, served, result) = match job {
        Job::Call {
            conn,
            served,
            request,
        } => {
            let r = instance(&served, conn.as_raw_fd(), request, buf, sh, &mut spent);
            (conn, served, r)
        }
        Job::Running {
            conn,
            served,
            running,
            slot,
        } => {
            let r = supervise(&served, conn.as_raw_fd(), running, sh, &mut spent);
            drop(slot);
            (conn, served, r)
        }
    };
    drop(served);
    if let Err(f) = result {
        tell_failure(conn.as_raw_fd(), f);
    }
    // The caller hears end of file once the server holds nothing of its instance: every
    // process of the namespace has ended. The namespaces themselves go after, when the CPUs
    // have nothing else to run.
    drop(conn);
    if let Some(ns) = spent {
        sys::sched_idle(true);
        drop(ns);
        sys::sched_idle(false);
    }
}

fn tell_failure(fd: RawFd, f: Failure) {
    tell(
        fd,
        &ToCaller::Failed {
            code: f.code as u8,
            message: f.message,
        },
    );
}

/// Serves one connection on a worker: waits for what the main thread could not, starts the
/// instance and supervises it.
fn instance(
    served: &Arc<pool::Served>,
    fd: RawFd,
    request: Option<(Request, [OwnedFd; 3])>,
    buf: &mut [u8],
    sh: &Shared,
    spent: &mut Option<pool::Namespaces>,
) -> Result {
    let (call, stdio) = match request {
        Some(r) => r,
        None => match read_request(fd, buf, 0)? {
            Read::Got(r) => r,
            _ => return Ok(()),
        },
    };
    // A caller that went away while it waited (its user pressed Ctrl-C) gets no instance.
    let gone = || {
        thaw::sys::poll_now(fd, libc::POLLRDHUP).map_or(true, |ev| {
            ev & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
        })
    };
    let Some(_slot) = sh.slots.take(
        || {
            tell(
                fd,
                &ToCaller::Queued {
                    max: sh.slots.max as u32,
                },
            )
        },
        gone,
    ) else {
        return Ok(());
    };
    // A spare that died waiting is dropped (and reaped) here.
    let given = match served.take_ready().map(|s| give(served, s, &call, &stdio)) {
        Some(Ok(g)) => g,
        _ => give(served, served.fork(sh.pool)?, &call, &stdio)?,
    };
    let running = started(served, fd, given, stdio, sh)?;
    supervise(served, fd, running, sh, spent)
}

enum Read {
    Got((Request, [OwnedFd; 3])),
    /// Not there yet (with `MSG_DONTWAIT`).
    Later,
    /// The caller left without one.
    Gone,
}

/// The caller's request and its standard descriptors, read into `buf`.
fn read_request(fd: RawFd, buf: &mut [u8], flags: i32) -> Result<Read> {
    let packet = match sys::recv_with_fds_flags(fd, buf, flags) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(Read::Gone),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Read::Later),
        Err(e) => {
            return Err(Failure::new(
                Code::Io,
                format!("cannot read the request: {e}"),
            ))
        }
    };
    if packet.truncated {
        return Err(Failure::new(
            Code::Usage,
            format!("the request is larger than {ARGS_MAX} bytes of arguments and environment"),
        ));
    }
    let stdio = <[OwnedFd; 3]>::try_from(packet.fds).map_err(|_| {
        Failure::new(
            Code::Usage,
            "a request passes exactly its standard input, output and error",
        )
    })?;
    let call = postcard::from_bytes(&buf[..packet.len])
        .map_err(|e| Failure::new(Code::Usage, format!("malformed request: {e}")))?;
    Ok(Read::Got((call, stdio)))
}

/// The caller's credentials, read while its pidfd shows it is still the process that connected.
fn caller(conn: RawFd) -> Result<Credentials> {
    let who = |e: std::io::Error| refused(format!("cannot identify the caller: {e}"));
    let (pid, _, _) = sys::peer_cred(conn).map_err(who)?;
    let pidfd = sys::peer_pidfd(conn).map_err(who)?;
    let creds = Credentials::of(pid).map_err(who)?;
    if !sys::pidfd_alive(&pidfd) {
        return Err(refused("the caller ended before it could be identified"));
    }
    Ok(creds)
}

/// The instance runs with the server's own credentials: so the caller must have those; and the
/// same policy as `thaw run` holds for this caller and the image's credentials.
fn check_caller(fd: RawFd, own: &Credentials, image: &Credentials) -> Result {
    let creds = caller(fd)?;
    if creds.uid != own.uid || creds.gid != own.gid || sorted(&creds.groups) != sorted(&own.groups)
    {
        return Err(refused(format!(
            "this server runs as uid {}, gid {}; it gives instances its own credentials, so it serves only callers with the same ids and groups (you are uid {}, gid {})",
            own.uid.real, own.gid.real, creds.uid.real, creds.gid.real
        )));
    }
    policy::decide(image, &creds, false)
        .map(drop)
        .map_err(refused)
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// An instance given its caller's arguments and descriptors, setting itself up; it runs only
/// once told to go, and is killed (with its namespace) if dropped before.
struct Given {
    spare: pool::Spare,
    error: OwnedFd,
    go: OwnedFd,
    /// The server's copies of what the instance was given (besides the caller's descriptors).
    copies: Vec<OwnedFd>,
}

/// Gives `spare` the caller's arguments and descriptors.
fn give(
    served: &pool::Served,
    spare: pool::Spare,
    call: &Request,
    [stdin, stdout, stderr]: &[OwnedFd; 3],
) -> Result<Given> {
    let template = &served.template;
    let files = template.reopen_files()?;
    let (error_r, error_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    template.give(
        &spare.sock,
        &RestoreArgs {
            args: call.args.clone(),
            env: call.env.clone(),
        },
        &InstanceFds {
            mntns: spare.mntns(),
            error: &error_w,
            go: &go_r,
            stdio: [stdin, stdout, stderr],
        },
        &files,
    )?;
    let mut copies = files;
    copies.extend([error_w, go_r]);
    Ok(Given {
        spare,
        error: error_r,
        go: go_w,
        copies,
    })
}

/// An instance told to go: it reports on `error` whether its last steps failed.
pub struct Running {
    pid: i32,
    init: pool::Init,
    error: OwnedFd,
}

/// Checks the caller while the instance sets itself up, lets the instance run and tells the
/// caller it has started.
fn started(
    served: &Arc<pool::Served>,
    fd: RawFd,
    given: Given,
    stdio: [OwnedFd; 3],
    sh: &Shared,
) -> Result<Running> {
    let image = served.template.image().manifest();
    check_caller(fd, sh.own, &image.creds)?;
    let Given {
        spare,
        error,
        go,
        copies,
    } = given;
    let (pid, init) = spare.launched();
    // Only the instance holds its files now (once no template being made on reload still has a
    // copy): it may go on.
    drop((copies, stdio));
    pool::forks_settled();
    // Told before the instance goes (a failure in its last steps comes as `Failed` in place of
    // `Exited`): the caller is then already waiting for the instance's output, rather than
    // for this thread to get a CPU again once the instance has run.
    tell(
        fd,
        &ToCaller::Started {
            pid: image.process.pid,
        },
    );
    let _ = std::fs::File::from(go).write_all(&[1]);
    Ok(Running { pid, init, error })
}

/// Passes the caller's signals on until the instance ends (a caller that goes away takes it
/// along), then tells the caller its status, or why its last steps failed. The namespaces,
/// emptied, are left in `spent`.
fn supervise(
    served: &Arc<pool::Served>,
    fd: RawFd,
    r: Running,
    sh: &Shared,
    spent: &mut Option<pool::Namespaces>,
) -> Result {
    let Running { pid, init, error } = r;
    let pidfd =
        sys::pidfd_open(pid).map_err(|e| failed(format!("cannot watch the instance: {e}")))?;
    // Spares are made once the instance has run a while (or ended), not as it starts: on two
    // CPUs each extra process to run would delay it. The first instance that runs a while
    // shows what instances touch early (see `early`).
    let since = std::time::Instant::now();
    let ended = sys::readable_within(pidfd.as_raw_fd(), served.early.sample_after());
    if !served.early.sampled() {
        if ended {
            served.early.ended_unsampled(since.elapsed());
        } else {
            served.early.sample(pid);
        }
    }
    let _ = sh.more.send(pool::More {
        served: Arc::clone(served),
        running: !ended,
    });
    let mut buf = [0u8; SMALL];
    while let Ok([done, said]) = sys::wait_readable([pidfd.as_raw_fd(), fd], -1) {
        if done {
            break;
        }
        if !said {
            continue;
        }
        match sys::recv_with_fds(fd, &mut buf) {
            Ok(Some(p)) if !p.truncated => {
                if let Ok(ToServer::Signal(sig)) = postcard::from_bytes(&buf[..p.len]) {
                    sys::pidfd_send_signal(&pidfd, sig);
                }
            }
            Ok(Some(_)) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => {
                // The caller is gone: so is its instance.
                sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                break;
            }
        }
    }
    let status = sys::wait(pid)
        .map(|(_, how)| how.status())
        .map_err(|e| failed(format!("cannot wait for the instance: {e}")));
    // Read once it has ended (and so closed its end): a report is a failed last step; reading
    // it as it runs would wake this thread just as the instance starts.
    let status = match served.template.report(&error) {
        Some(why) => Err(failed(why)),
        None => status,
    };
    *spent = Some(init.end());
    if let Ok(status) = &status {
        tell(fd, &ToCaller::Exited { status: *status });
    }
    status.map(drop)
}

/// At most `max` instances at once; callers beyond wait for a slot.
pub struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            used: Mutex::new(0),
            freed: Condvar::new(),
            max,
        }
    }

    /// A slot if one is free now.
    fn try_take(&self) -> Option<SlotGuard<'_>> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        (*used < self.max).then(|| {
            *used += 1;
            SlotGuard(self)
        })
    }

    /// Takes a slot; `waiting` runs once first when none is free. `None` once `gone` says the
    /// caller went away while it waited (looked at every 50 ms).
    fn take(&self, waiting: impl FnOnce(), gone: impl Fn() -> bool) -> Option<SlotGuard<'_>> {
        if let Some(slot) = self.try_take() {
            return Some(slot);
        }
        // Told without the lock held (telling may block on a slow caller).
        waiting();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            used = self
                .freed
                .wait_timeout(used, std::time::Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if gone() {
                // A slot freed meanwhile goes to the next waiter.
                if *used < self.max {
                    self.freed.notify_one();
                }
                return None;
            }
        }
        *used += 1;
        Some(SlotGuard(self))
    }
}

pub struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}
