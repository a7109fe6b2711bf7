//! `thaw serve`: one verified image, restored once into a template, and an instance forked from
//! it for each caller of the server's socket (see `restore::template`). Each connection is one
//! instance: the caller's credentials are checked as `thaw run` checks them, the instance gets
//! the caller's arguments, environment and standard descriptors, and the caller gets its exit
//! status. The server bounds how many instances run at once (further callers wait), and every
//! instance ends with the server: each lives in a PID namespace whose init dies with it.

pub mod client;
mod conn;
mod early;
mod pool;
mod workers;
pub use pool::while_forking;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use thaw::state::creds::Credentials;

use crate::exit::{Code, Failure, Result};
use crate::restore::template::Template;
use crate::sys;
use thaw::serve::ToCaller;

/// Signals that end the server at once (and with it every instance).
const ENDING: [i32; 2] = [libc::SIGINT, libc::SIGTERM];
/// Reloads the image: new callers get instances of the new one; running instances go on.
const RELOAD: i32 = libc::SIGHUP;
/// Stops the server gracefully: no new instances; it ends when the running ones have.
const STOP: i32 = libc::SIGQUIT;

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
    let slots = conn::Slots::new(max);
    // Before any other thread of the server exists (and before any caller).
    let pool = Arc::new(pool::Pool::new(max.min(8), pool::Nursery::start()?));
    // Every thread inherits the blocked signals; one thread waits for them. The main thread
    // reloads and stops (a template made from another thread would not get the time
    // namespace the main thread makes for its children).
    let (wake_r, wake_w) = pipe()?;
    let signals = [ENDING[0], ENDING[1], RELOAD, STOP];
    sys::set_sigmask(signals.iter().fold(0u64, |s, &n| s | 1u64 << (n - 1)));
    let path = socket.to_owned();
    // A thread that cannot be created (a pids limit, RLIMIT_NPROC): the server does not start.
    let thread = |e: std::io::Error| {
        Failure::new(
            Code::RestoreFailed,
            format!("cannot start a thread of the server: {e}"),
        )
    };
    std::thread::Builder::new()
        .spawn(move || {
            let mut wake = std::fs::File::from(wake_w);
            loop {
                let sig = sys::wait_signal(&signals);
                if ENDING.contains(&sig) {
                    let _ = std::fs::remove_file(&path);
                    // Ending the process ends the template (end of file on its socket) and every
                    // instance (its namespace's init dies with the nursery, which dies with the
                    // server).
                    std::process::exit(128 + sig);
                }
                let _ = wake.write_all(&[sig as u8]);
            }
        })
        .map_err(thread)?;
    let filler = Arc::clone(&pool);
    std::thread::Builder::new()
        .spawn(move || filler.fill())
        .map_err(thread)?;
    // Spares are made on a thread of their own (see `Served::replenish`).
    let (more, wanted) = std::sync::mpsc::channel::<pool::More>();
    let maker = Arc::clone(&pool);
    std::thread::Builder::new()
        .spawn(move || {
            for more in wanted {
                more.served.replenish(&maker, more.running);
            }
        })
        .map_err(thread)?;
    let served = |t: Template| Arc::new(pool::Served::new(t, spares));
    let current = served(first);
    let _ = more.send(pool::More::fresh(&current));
    announce("serving", &current.template, socket, max);
    let mut wake = std::fs::File::from(wake_r);
    let queue = workers::Queue::new();
    let shared = conn::Shared {
        own: &own,
        slots: &slots,
        pool: &pool,
        more: more.clone(),
    };
    std::thread::scope(|scope| {
        let (shared, queue) = (&shared, &queue);
        let worker = || {
            std::thread::Builder::new().spawn_scoped(scope, move || {
                let mut buf = conn::buffer();
                while let Some(job) = queue.next() {
                    conn::serve(job, &mut buf, shared);
                }
            })
        };
        // A thread that cannot be created (a pids limit): the workers there are take the jobs in
        // turn; with none, nobody could be served.
        let failed: Vec<_> = (0..WORKERS).filter_map(|_| worker().err()).collect();
        if let (Some(e), true) = (failed.first(), failed.len() == WORKERS) {
            return Err(Failure::new(
                Code::RestoreFailed,
                format!("cannot start the threads that serve callers: {e}"),
            ));
        }
        let reloaded = |current: &mut Arc<pool::Served>| match reload() {
            Ok(t) => {
                // The previous template ends once its last instance's caller is answered.
                *current = served(t);
                let _ = more.send(pool::More::fresh(current));
                announce("reloaded: serving", &current.template, socket, max);
            }
            Err(f) => errln!(
                "thaw: cannot reload ({}); still serving the previous image",
                f.message
            ),
        };
        let mut buf = conn::buffer();
        let served = main_loop(
            &listener,
            &mut wake,
            socket,
            current,
            reloaded,
            |c, t, hold| match conn::quick(c, t, hold, &mut buf, shared) {
                conn::Quick::Done => None,
                conn::Quick::Later(c, t) => Some((c, t)),
                conn::Quick::Work(job) => {
                    if queue.push(job) {
                        // Not created (a pids limit): the job waits for a worker to be free.
                        let _ = worker();
                    }
                    None
                }
            },
        );
        // The scope waits for every connection's thread.
        queue.close();
        served
    })
}

/// Threads started ahead to serve connections.
const WORKERS: usize = 2;

/// Connections the main thread holds while their requests are not there yet, at most (more
/// go to workers).
const PENDING: usize = 64;

/// Takes callers and signals (SIGHUP runs `reloaded`) until the server stops. `caller` gets each
/// connection, the template it is for, and whether it may hand the connection back to wait
/// here until its request comes.
fn main_loop(
    listener: &OwnedFd,
    wake: &mut std::fs::File,
    socket: &Path,
    mut current: Arc<pool::Served>,
    mut reloaded: impl FnMut(&mut Arc<pool::Served>),
    mut caller: impl FnMut(OwnedFd, Arc<pool::Served>, bool) -> Option<(OwnedFd, Arc<pool::Served>)>,
) -> Result {
    let mut pending: Vec<(OwnedFd, Arc<pool::Served>)> = Vec::new();
    loop {
        let fds: Vec<RawFd> = [listener.as_raw_fd(), wake.as_raw_fd()]
            .into_iter()
            .chain(pending.iter().map(|(c, _)| c.as_raw_fd()))
            .collect();
        let ready = sys::poll_readable(&fds, None)
            .map_err(|e| Failure::new(Code::Io, format!("poll: {e}")))?;
        if ready[1] {
            let mut sig = [0u8; 1];
            let _ = std::io::Read::read(wake, &mut sig);
            if i32::from(sig[0]) == STOP {
                let _ = std::fs::remove_file(socket);
                errln!("thaw: stopping: no new instances; ending once the running ones have");
                // Those already accepted are served.
                for (c, t) in pending {
                    caller(c, t, false);
                }
                return Ok(());
            }
            reloaded(&mut current);
        }
        // Those whose request has come.
        let (came, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut pending)
            .into_iter()
            .zip(&ready[2..])
            .partition(|(_, &r)| r);
        pending = waiting.into_iter().map(|(p, _)| p).collect();
        for ((c, t), _) in came {
            if let Some(back) = caller(c, t, true) {
                pending.push(back);
            }
        }
        if ready[0] {
            match sys::accept(listener.as_raw_fd()) {
                Ok(c) => {
                    let hold = pending.len() < PENDING;
                    if let Some(back) = caller(c, Arc::clone(&current), hold) {
                        pending.push(back);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    errln!("thaw: warning: cannot accept a caller: {e}");
                }
                Err(e) => return Err(Failure::new(Code::Io, format!("accept: {e}"))),
            }
        }
    }
}

fn announce(what: &str, t: &Template, socket: &Path, max: usize) {
    errln!(
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

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()
        .map_err(|e| Failure::new(Code::Io, format!("cannot create a pipe: {e}")))?;
    Ok((r.into(), w.into()))
}
