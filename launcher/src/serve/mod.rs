//! `thaw serve`: one verified image, restored once into a template, and an instance forked from
//! it for each caller of the server's socket (see `restore::template`). Each connection is one
//! instance: the caller's credentials are checked as `thaw run` checks them, the instance gets
//! the caller's arguments, environment and standard descriptors, and the caller gets its exit
//! status. The server bounds how many instances run at once (further callers wait), and every
//! instance ends with the server: each lives in a PID namespace whose init dies with it.

pub mod client;
mod early;
mod pool;
pub use pool::while_forking;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use thaw::restore::RestoreArgs;
use thaw::state::creds::Credentials;

use crate::exit::{Code, Failure, Result};
use crate::restore::policy;
use crate::restore::template::{InstanceFds, Template, ARGS_MAX};
use crate::sys;
use thaw::serve::{Request, ToCaller, ToServer, SMALL};

/// Signals that end the server at once (and with it every instance).
const ENDING: [i32; 2] = [libc::SIGINT, libc::SIGTERM];
/// Reloads the image: new callers get instances of the new one; running instances go on.
const RELOAD: i32 = libc::SIGHUP;
/// How long an instance runs before the pages it holds alone are sampled (`early`): past a
/// runtime's first answer, before its teardown.
const SAMPLE_AFTER_MS: i32 = 20;
/// Stops the server gracefully: no new instances; it ends when the running ones have.
const STOP: i32 = libc::SIGQUIT;

/// At most `max` instances at once; callers beyond wait for a slot.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Slots {
    /// Takes a slot; `waiting` runs once first when none is free.
    fn take(&self, waiting: impl FnOnce()) -> SlotGuard<'_> {
        // Told without the lock held (telling may block on a slow caller).
        if *self.used.lock().unwrap_or_else(|e| e.into_inner()) >= self.max {
            waiting();
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

/// Listens at `socket` and serves instances of `first` until a signal ends the server, keeping
/// `spares` instances forked ahead of callers; on SIGHUP it serves instances of the template
/// `reload` makes instead.
pub fn serve(
    first: Template,
    socket: &Path,
    max: usize,
    spares: usize,
    reload: &dyn Fn() -> Result<Template>,
) -> Result {
    let listener = listen(socket)?;
    let own = Credentials::of(std::process::id() as i32)
        .map_err(|e| Failure::new(Code::Internal, format!("cannot read own credentials: {e}")))?;
    let slots = Slots {
        used: Mutex::new(0),
        freed: Condvar::new(),
        max,
    };
    let pool = Arc::new(pool::Pool::new(max.min(8)));
    // Every thread inherits the blocked signals; one thread waits for them. The main thread
    // reloads and stops (a template made from another thread would not get the time
    // namespace the main thread makes for its children).
    let (wake_r, wake_w) = pipe()?;
    let signals = [ENDING[0], ENDING[1], RELOAD, STOP];
    sys::set_sigmask(signals.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let path = socket.to_owned();
    std::thread::spawn(move || {
        let mut wake = std::fs::File::from(wake_w);
        loop {
            let sig = sys::wait_signal(&signals);
            if ENDING.contains(&sig) {
                let _ = std::fs::remove_file(&path);
                // Ending the process ends the template (end of file on its socket) and every
                // instance (its namespace's init dies with the thread that made it).
                std::process::exit(128 + sig);
            }
            let _ = wake.write_all(&[sig as u8]);
        }
    });
    let filler = Arc::clone(&pool);
    std::thread::spawn(move || filler.fill());
    // Spares are made on a thread of their own (see `Served::replenish`).
    let (more, wanted) = std::sync::mpsc::channel::<Arc<pool::Served>>();
    let maker = Arc::clone(&pool);
    std::thread::spawn(move || {
        for served in wanted {
            served.replenish(&maker);
        }
    });
    let served = |t: Template| Arc::new(pool::Served::new(t, spares));
    let mut current = served(first);
    let _ = more.send(Arc::clone(&current));
    announce("serving", &current.template, socket, max);
    let mut wake = std::fs::File::from(wake_r);
    std::thread::scope(|scope| loop {
        let [caller, signal] = sys::wait_readable([listener.as_raw_fd(), wake.as_raw_fd()], -1)
            .map_err(|e| Failure::new(Code::Io, format!("poll: {e}")))?;
        if signal {
            let mut sig = [0u8; 1];
            let _ = std::io::Read::read(&mut wake, &mut sig);
            if i32::from(sig[0]) == STOP {
                let _ = std::fs::remove_file(socket);
                eprintln!("thaw: stopping: no new instances; ending once the running ones have");
                // The scope waits for every connection's thread.
                return Ok(());
            }
            match reload() {
                Ok(t) => {
                    // The previous template ends once its last instance's caller is answered.
                    current = served(t);
                    let _ = more.send(Arc::clone(&current));
                    announce("reloaded: serving", &current.template, socket, max);
                }
                Err(f) => eprintln!(
                    "thaw: cannot reload ({}); still serving the previous image",
                    f.message
                ),
            }
        }
        if !caller {
            continue;
        }
        let conn = match sys::accept(listener.as_raw_fd()) {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                eprintln!("thaw: warning: cannot accept a caller: {e}");
                continue;
            }
            Err(e) => return Err(Failure::new(Code::Io, format!("accept: {e}"))),
        };
        let (own, slots, pool, more) = (&own, &slots, &*pool, more.clone());
        let template = Arc::clone(&current);
        scope.spawn(move || {
            if let Err(f) = instance(&template, &conn, own, slots, pool, &more) {
                tell(
                    conn.as_raw_fd(),
                    &ToCaller::Failed {
                        code: f.code as u8,
                        message: f.message,
                    },
                );
            }
        });
    })
}

fn announce(what: &str, t: &Template, socket: &Path, max: usize) {
    eprintln!(
        "thaw: {what} PID {} (template {}) at {}, at most {max} instances at once",
        t.image().manifest().process.pid,
        t.pid(),
        socket.display()
    );
}

/// The listening socket; a stale socket file (nobody listening) is replaced, a live one refused.
fn listen(socket: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(Failure::new(
                Code::Usage,
                format!("{} exists and is not a socket", socket.display()),
            ));
        }
        if sys::seqpacket_connect(socket).is_ok() {
            return Err(Failure::new(
                Code::Usage,
                format!("a server is already listening at {}", socket.display()),
            ));
        }
        let _ = std::fs::remove_file(socket);
    }
    sys::seqpacket_listen(socket).map_err(|e| {
        Failure::new(
            Code::Io,
            format!("cannot listen at {}: {e}", socket.display()),
        )
    })
}

fn tell(conn: RawFd, m: &ToCaller) {
    if let Ok(bytes) = postcard::to_allocvec(m) {
        let _ = sys::send_with_fds(conn, &bytes, &[]);
    }
}

fn refused(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::Refused, msg)
}

fn failed(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::RestoreFailed, msg)
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

/// Serves one connection: checks, starts the instance, passes signals on, reports its end.
fn instance(
    served: &Arc<pool::Served>,
    conn: &OwnedFd,
    own: &Credentials,
    slots: &Slots,
    pool: &pool::Pool,
    more: &std::sync::mpsc::Sender<Arc<pool::Served>>,
) -> Result {
    let fd = conn.as_raw_fd();
    let Some((call, stdio)) = read_request(fd)? else {
        return Ok(());
    };
    let image = served.template.image().manifest();
    check_caller(fd, own, &image.creds)?;
    let _slot = slots.take(|| {
        tell(
            fd,
            &ToCaller::Queued {
                max: slots.max as u32,
            },
        )
    });
    let (pid, init) = launch(served, pool, &call, stdio)?;
    tell(
        fd,
        &ToCaller::Started {
            pid: image.process.pid,
        },
    );
    let _ = more.send(Arc::clone(served));
    supervise(served, fd, pid, init)
}

/// The caller's request and its standard descriptors; `None` if it left without one.
fn read_request(fd: RawFd) -> Result<Option<(Request, [OwnedFd; 3])>> {
    let mut buf = vec![0u8; ARGS_MAX + SMALL];
    let Some(packet) = sys::recv_with_fds(fd, &mut buf)
        .map_err(|e| Failure::new(Code::Io, format!("cannot read the request: {e}")))?
    else {
        return Ok(None);
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
    Ok(Some((call, stdio)))
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

/// Gives an instance (one forked ahead, else one forked now) the caller's arguments and
/// descriptors and lets it run; returns its PID and its namespace's init once it runs.
fn launch(
    served: &pool::Served,
    pool: &pool::Pool,
    call: &Request,
    [stdin, stdout, stderr]: [OwnedFd; 3],
) -> Result<(i32, pool::Init)> {
    let template = &served.template;
    let files = template.reopen_files()?;
    let (error_r, error_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let give = |spare: &pool::Spare| {
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
                stdio: [&stdin, &stdout, &stderr],
            },
            &files,
        )
    };
    // A spare that died waiting is dropped (and reaped) here.
    let spare = match served.take_ready().filter(|s| give(s).is_ok()) {
        Some(s) => s,
        None => {
            let s = served.fork(pool)?;
            give(&s)?;
            s
        }
    };
    let (pid, init) = spare.launched();
    // Only the instance holds its files now (once no init being made still has a copy): it
    // may go on.
    drop((error_w, go_r, files, stdin, stdout, stderr));
    pool::forks_settled();
    let _ = std::fs::File::from(go_w).write_all(&[1]);
    if let Some(why) = template.report(&error_r) {
        let _ = sys::wait(pid);
        return Err(failed(why));
    }
    Ok((pid, init))
}

/// Passes the caller's signals on until the instance ends (a caller that goes away takes it
/// along), then tells the caller its status.
fn supervise(served: &pool::Served, fd: RawFd, pid: i32, init: pool::Init) -> Result {
    let pidfd = sys::pidfd_open(pid);
    // The first instance that runs a while shows what instances write early (see `early`).
    if let Ok(p) = &pidfd {
        let ended = |ms| sys::wait_readable([p.as_raw_fd()], ms).map_or(true, |[r]| r);
        if !served.early.sampled() && !ended(SAMPLE_AFTER_MS) {
            served.early.sample(pid);
        }
    }
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; SMALL];
            loop {
                match sys::recv_with_fds(fd, &mut buf) {
                    Ok(Some(p)) if !p.truncated => {
                        if let (Ok(ToServer::Signal(sig)), Ok(pidfd)) =
                            (postcard::from_bytes(&buf[..p.len]), &pidfd)
                        {
                            sys::pidfd_send_signal(pidfd, sig);
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => {
                        if let Ok(pidfd) = &pidfd {
                            sys::pidfd_send_signal(pidfd, libc::SIGKILL);
                        }
                        return;
                    }
                }
            }
        });
        let status = sys::wait(pid)
            .map(|(_, how)| how.status())
            .map_err(|e| failed(format!("cannot wait for the instance: {e}")));
        drop(init);
        if let Ok(status) = &status {
            tell(fd, &ToCaller::Exited { status: *status });
        }
        // Ends the thread above; the caller hears end of file only once this connection is
        // closed, after everything else this instance held.
        sys::shutdown_read(fd);
        status.map(drop)
    })
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()
        .map_err(|e| Failure::new(Code::Io, format!("cannot create a pipe: {e}")))?;
    Ok((r.into(), w.into()))
}
