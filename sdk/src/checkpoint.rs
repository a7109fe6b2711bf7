//! The public checkpoint API: one call site serves both lives of the process.
//!
//! ```no_run
//! match thaw::Checkpoint::to("app.thaw").sign_with("k.key").save()? {
//!     thaw::Outcome::Saved(info) => println!("image written: {} bytes", info.size),
//!     thaw::Outcome::Restored(r) => println!("restored with {:?}", r.args()),
//! }
//! # Ok::<(), thaw::CheckpointError>(())
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::capture::{self, Capture, FdPos, Frozen, RESTORE_CELL};
use crate::fd_policy::{FdAction, FdClass, FdPolicy};
use crate::image::{Digest, ImageError, ImageWriter};
use crate::restore::RestoreArgs;
use crate::state::files::{FdKind, FdScan};
use crate::state::memory::{Backing, Vma, VmaAdvice};
use crate::state::{self, Manifest};

/// Default checkpoint signal: SIGRTMAX-1 (glibc reserves the first real-time signals).
pub const DEFAULT_SIGNAL: i32 = 63;

/// Why a checkpoint failed. The application keeps running in every case.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The process holds state thaw cannot restore; every offending item is listed.
    #[error("cannot checkpoint: {} unsupported item(s): {}", .0.len(), itemize(.0))]
    Unsupported(Vec<String>),
    #[error("checkpoint failed while {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("a before-checkpoint hook failed: {0}")]
    Hook(String),
    #[error("the restore arguments passed by the launcher are malformed: {0}")]
    RestoreArgs(String),
    /// The descriptor policy (THAW_FD_POLICY or the API's) is malformed.
    #[error("{0}")]
    Policy(String),
}

/// The unsupported items joined with "; ", those that end in the same explanation (see
/// `explanations`) given it once: "a; b: why" (nine TCP connections made an 8 KB line
/// of nine copies of one hint). Past 8 items in one such group, the rest are counted.
fn itemize(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for item in items {
        for (_, tail) in explanations(item) {
            *seen.entry(tail).or_default() += 1;
        }
    }
    // Each item's earliest split whose explanation another item ends in too.
    let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for item in items {
        let shared = explanations(item).find(|(_, tail)| seen.get(tail).is_some_and(|&n| n > 1));
        match shared {
            Some((at, tail)) => match groups.iter_mut().find(|g| g.0 == Some(tail)) {
                Some(g) => g.1.push(&item[..at]),
                None => groups.push((Some(tail), vec![&item[..at]])),
            },
            None => groups.push((None, vec![item])),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(tail, heads)| match tail {
            None => heads.join("; "),
            Some(tail) => {
                let mut shown = heads[..heads.len().min(SHOWN)].join("; ");
                if heads.len() > SHOWN {
                    shown += &format!("; and {} more like them", heads.len() - SHOWN);
                }
                format!("{shown}: {tail}")
            }
        })
        .collect();
    parts.join("; ")
}

/// Where `item` could be split into what and why: (offset of a ": ", the 40 bytes or more after it).
fn explanations(item: &str) -> impl Iterator<Item = (usize, &str)> {
    item.match_indices(": ")
        .map(move |(at, _)| (at, &item[at + 2..]))
        .filter(|(_, tail)| tail.len() >= 40)
}

/// How many times a checkpoint is tried when threads or descriptors come and go while the
/// process is being stopped (a busy machine stretches each attempt: more of them come and go).
const ATTEMPTS: u32 = 24;

/// Attempts of this checkpoint started again because a thread did not respond in time.
static UNRESPONSIVE_AGAIN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Attempts given up because more threads blocked the signal than the helper captures.
static OVER_LIMIT_AGAIN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    move |source| CheckpointError::Io { what, source }
}

/// The first life: where the image went.
#[derive(Debug, Clone)]
pub struct SavedInfo {
    pub path: PathBuf,
    pub size: u64,
    /// SHA-256 of the header block and manifest (names the whole content).
    pub digest: Digest,
    /// How long the application was stopped for the snapshot.
    pub pause: std::time::Duration,
    /// Descriptors the descriptor policy left out or replaced with /dev/null, one line each.
    pub left_out: Vec<String>,
}

/// The second life: what the launcher passed.
#[derive(Debug, Clone)]
pub struct Restored {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Restored {
    /// The arguments given after `--` to `thaw run`.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }
    /// The environment of the `thaw run` caller.
    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }
    /// One variable of the caller's environment.
    pub fn var(&self, key: &str) -> Option<&OsString> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Which life `save()` returned in.
#[derive(Debug)]
pub enum Outcome {
    Saved(SavedInfo),
    Restored(Restored),
}

type Hook = Box<dyn FnMut() -> Result<(), String> + Send>;
static BEFORE: Mutex<Vec<Hook>> = Mutex::new(Vec::new());
static AFTER: Mutex<Vec<Hook>> = Mutex::new(Vec::new());
static AT_SAVE_EXIT: Mutex<Vec<Box<dyn FnMut() + Send>>> = Mutex::new(Vec::new());
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Registers a hook that runs before every snapshot (close sockets, stop pools). An error aborts
/// the checkpoint.
pub fn on_checkpoint(f: impl FnMut() -> Result<(), String> + Send + 'static) {
    BEFORE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(f));
}

/// Registers a hook that runs first thing after a restore (reopen, reseed).
pub fn on_restore(f: impl FnMut() -> Result<(), String> + Send + 'static) {
    AFTER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(f));
}

/// Registers `f` to run in a first life that exits after saving ([`Checkpoint::exit_after_save`]),
/// just before it exits, while its other threads are still parked. Such an exit runs no exit
/// handlers (their work would be done again by every restore); this is for the few that put
/// back what the process changed of things it shares with others: a runtime's terminal modes,
/// the O_NONBLOCK it set on standard descriptors it shares with a shell pipeline. `f` must not
/// allocate through the C library nor take locks other threads may hold.
pub fn on_exit_after_save(f: impl FnMut() + Send + 'static) {
    AT_SAVE_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(f));
}

fn run_hooks(hooks: &Mutex<Vec<Hook>>) -> Result<(), String> {
    let mut hooks = hooks.lock().unwrap_or_else(|p| p.into_inner());
    hooks.iter_mut().try_for_each(|h| h())
}

/// Builder for one checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    key: Option<PathBuf>,
    exit_after_save: bool,
    tcp_established: bool,
    signal: i32,
    thread_timeout: std::time::Duration,
    fds: FdPolicy,
    leave_children_out: bool,
    max_deleted_file: Option<u64>,
}

impl Checkpoint {
    /// A checkpoint to the image file at `path`.
    pub fn to(path: impl AsRef<Path>) -> Self {
        Checkpoint {
            path: path.as_ref().to_owned(),
            key: None,
            exit_after_save: false,
            tcp_established: false,
            signal: DEFAULT_SIGNAL,
            thread_timeout: std::time::Duration::from_secs(2),
            fds: FdPolicy::new(),
            leave_children_out: false,
            max_deleted_file: None,
        }
    }

    /// The largest file deleted while open or mapped whose contents the image keeps (it is
    /// created again, unlinked, at restore); a larger one is refused by name (a descriptor of
    /// it is then subject to the descriptor policy's `deleted` class). Default 64 MiB, or
    /// `THAW_MAX_DELETED_FILE` (bytes) from the environment.
    pub fn max_deleted_file(mut self, bytes: u64) -> Self {
        self.max_deleted_file = Some(bytes);
        self
    }

    /// Checkpoint even though the process has children: the image holds this process alone, so
    /// after restore its first life's children are not its children (`waitpid` fails with ECHILD).
    /// Without it, children make the checkpoint fail, each named with its PID and state.
    pub fn leave_children_out(mut self, yes: bool) -> Self {
        self.leave_children_out = yes;
        self
    }

    /// Restore the process's established TCP connections (as CRIU's `--tcp-established`), through
    /// the kernel's repair mode, which takes CAP_NET_ADMIN here and at restore; also set by
    /// `THAW_TCP_ESTABLISHED=1`. A connection whose two ends are both the process's comes back
    /// whole (once the first life has it no more); one to another process is moved, and only by
    /// a checkpoint that [`exit_after_save`](Self::exit_after_save)s, as a live migration: the
    /// image is then for one restore (see docs/restore.md). Without it they are refused, by
    /// name, as an image restored many times (a warm start) could not have them.
    pub fn tcp_established(mut self, yes: bool) -> Self {
        self.tcp_established = yes;
        self
    }

    /// What to do with descriptor `fd`: leave it out of the image, restore `/dev/null` at its
    /// number, or refuse (see [`crate::fd_policy`]).
    pub fn fd(mut self, fd: i32, action: FdAction) -> Self {
        self.fds = self.fds.fd(fd, action);
        self
    }

    /// What to do with every descriptor of `class` that thaw cannot restore.
    pub fn fds(mut self, class: FdClass, action: FdAction) -> Self {
        self.fds = self.fds.class(class, action);
        self
    }

    /// What to do with every descriptor that thaw cannot restore, whatever its kind: for runtimes
    /// that never use what their parent left open ([`SavedInfo::left_out`] names each one).
    pub fn unsupported_fds(mut self, action: FdAction) -> Self {
        self.fds = self.fds.any(action);
        self
    }

    /// A whole descriptor policy; it overrides `THAW_FD_POLICY` key by key.
    pub fn fd_policy(mut self, policy: FdPolicy) -> Self {
        self.fds = self.fds.overridden_by(&policy);
        self
    }

    /// Signs the image with this secret key (read only after the snapshot is taken).
    pub fn sign_with(mut self, key: impl AsRef<Path>) -> Self {
        self.key = Some(key.as_ref().to_owned());
        self
    }

    /// Exit with status 0 once the image is written, instead of continuing.
    pub fn exit_after_save(mut self, yes: bool) -> Self {
        self.exit_after_save = yes;
        self
    }

    /// The real-time signal used to stop threads (default SIGRTMAX-1).
    pub fn signal(mut self, signo: i32) -> Self {
        self.signal = signo;
        self
    }

    /// How long every thread has to reach the checkpoint handler (default 2 s); a thread that
    /// does not fails the checkpoint, named in the error.
    pub fn thread_timeout(mut self, bound: std::time::Duration) -> Self {
        self.thread_timeout = bound;
        self
    }

    /// Takes the snapshot and writes the image ("saved"), or — in a restored process — returns
    /// what the launcher passed ("restored").
    pub fn save(self) -> Result<Outcome, CheckpointError> {
        // Signals from outside during the hooks and the snapshot are the first life's alone.
        let _held = crate::hold::hold();
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        UNRESPONSIVE_AGAIN.store(0, Ordering::Relaxed);
        OVER_LIMIT_AGAIN.store(0, Ordering::Relaxed);
        capture::arm_signal_parked_for_tests();
        capture::arm_late_timers_for_tests();
        caller_can_checkpoint()?;
        unmap_leftover();
        run_hooks(&BEFORE).map_err(CheckpointError::Hook)?;
        // What is listed before the threads stop (threads, descriptors) is checked against the
        // snapshot; a process that changed it meanwhile is checkpointed again.
        let mut last = String::new();
        let mut stubborn = Vec::new();
        for _ in 0..ATTEMPTS {
            // What an attempt given up on left open goes once no handler can use it.
            capture::reclaim_abandoned();
            let outcome = self.attempt(&mut stubborn);
            capture::reclaim_abandoned();
            match outcome? {
                Ok(done) => return Ok(done),
                Err(why) => last = why,
            }
            // A moment off the CPU: the next attempt starts as a thread that has slept, which
            // the scheduler lets run longer before another takes its core.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CheckpointError::Unsupported(vec![format!(
            "threads, descriptors or shared mappings kept coming and going while the process was being stopped ({ATTEMPTS} attempts, the last: {last}); checkpoint it from a quieter moment"
        )]))
    }

    /// One try: the outcome, or what came or went while the process was being stopped (no
    /// image is written; everything is listed again).
    /// `stubborn`: threads that kept blocking the checkpoint signal through an earlier attempt's
    /// stop (stopped with ptrace from now on, whatever they are doing).
    fn attempt(&self, stubborn: &mut Vec<i32>) -> Result<Result<Outcome, String>, CheckpointError> {
        let (mut unsupported, maps) = preflight()?;
        unsupported.extend(state::memory::fill_lazy(&maps));
        let left_out = if self.leave_children_out {
            state::children::children()
        } else {
            Vec::new()
        };
        unsupported.extend(state::elsewhere::shared_elsewhere(&maps, &left_out));
        let posix_timers = match state::posix_timers::list() {
            Ok(t) => t,
            Err(why) => {
                unsupported.push(why);
                Vec::new()
            }
        };
        unsupported.extend(state::process::refusals());
        unsupported.extend(state::cgroupns::refusals());
        let (zombies, refused) = state::children::dump(self.leave_children_out);
        unsupported.extend(refused);
        unsupported.extend(state::creds::refusals());
        let threads = list_threads(&mut unsupported)?;
        let policy = FdPolicy::from_env()
            .map_err(CheckpointError::Policy)?
            .unwrap_or_default()
            .overridden_by(&self.fds);
        let max_deleted = self
            .max_deleted_file
            .or_else(state::deleted::max_from_env)
            .unwrap_or(state::deleted::DEFAULT_MAX_BYTES);
        // Files in flight in queued messages, received (peeked) to be scanned with the rest.
        let in_flight = match state::scm::InFlight::receive() {
            Ok(f) => f,
            Err(why) => {
                unsupported.push(why);
                state::scm::InFlight::default()
            }
        };
        // Less what earlier checkpoints could not close (see state::locks::OwnLocks), and the
        // descriptors of earlier attempts given up on (see capture::abandoned_fds).
        let ours: Vec<i32> = state::locks::kept()
            .into_iter()
            .chain(capture::abandoned_fds())
            .collect();
        // Who else holds the process's pipes and sockets, asked before the listing.
        let holders = state::files::holders_ahead();
        // Listed again after that walk: a child started since the first listing (a JVM running
        // short commands one after another) holds pipes the walk saw.
        let mut left_out = left_out;
        if self.leave_children_out {
            left_out.extend(state::children::children());
            left_out.sort_unstable();
            left_out.dedup();
        }
        let children_listed = left_out.clone();
        state::tcp::set_mode(
            self.tcp_established || state::tcp::established_from_env(),
            self.exit_after_save,
        );
        let mut scan = FdScan::scan(&ours, max_deleted, in_flight, &left_out, holders)
            .map_err(io("listing file descriptors"))?;
        let (refused, left_out) = scan.apply(&policy);
        unsupported.extend(refused);
        if !unsupported.is_empty() {
            // (Read from descriptors another thread closed or replaced meanwhile, a refusal
            // may be of nothing the process has: a Worker's sockets and pipes coming and going.)
            // (A child started since the children to leave out were listed, holding a pipe of
            // the process's: a JVM running short commands one after another.)
            let churn = scan
                .witness
                .closed_or_replaced()
                .or_else(|| scan.witness.pipe_end_opened_since())
                .or_else(|| {
                    let now = state::children::children();
                    (self.leave_children_out && now.iter().any(|c| !children_listed.contains(c)))
                        .then(|| "children started meanwhile".to_owned())
                });
            if let Some(why) = churn {
                return Ok(Err(format!(
                    "{why}, and what was read may be of nothing the process has: {}",
                    unsupported.join("; ")
                )));
            }
            return Err(CheckpointError::Unsupported(unsupported));
        }
        // Connections moved to wherever the image is restored (their peers are elsewhere):
        // their peers' packets are held from now until the restore takes them over, before the
        // handler reads where the connections stand. Arriving after that read, the first life
        // would take and acknowledge them (repair mode receives), and the restored connection,
        // behind its peer, would never get them; arriving after the first life ended, they would
        // meet no socket and reset it. Lifted if the checkpoint fails or starts again (dropped).
        let held = match self.exit_after_save {
            true => {
                let moved: Vec<&state::tcp::TcpConnection> = scan
                    .entries
                    .iter()
                    .filter_map(|e| match &e.kind {
                        FdKind::Socket(state::sockets::Socket::Tcp(t)) if !t.lock.is_empty() => {
                            Some(t)
                        }
                        _ => None,
                    })
                    .collect();
                state::tcp::lock(&moved).map_err(|why| CheckpointError::Unsupported(vec![why]))?
            }
            false => None,
        };
        let fds = scan
            .seekable()
            .into_iter()
            .map(|fd| FdPos {
                fd,
                pos: Default::default(),
                stamp: Default::default(),
            })
            .collect();
        let pipes = scan
            .pipe_readers()
            .into_iter()
            .map(capture::pipe_copy)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io("preparing pipe copies"))?;
        let socks = scan
            .socket_queues()
            .into_iter()
            .map(|(fd, ino, msg)| {
                capture::SockPeek::new(fd, ino, msg)
                    .expecting(scan.in_flight.of(ino), scan.in_flight.locked_of(ino))
            })
            .collect();
        let original_action = current_action(self.signal)?;

        let me = crate::sys::gettid();
        let tids: Vec<i32> = threads.iter().map(|t| t.0).collect();
        let mut capture = Capture::new(me, &tids, fds, pipes, socks);
        capture.timer_signals = posix_timers
            .iter()
            .filter(|t| (1..=64).contains(&t.signo))
            .fold(0, |m, t| m | 1u64 << (t.signo - 1));
        capture.posix_timers = posix_timers
            .into_iter()
            .map(|t| (t, Default::default()))
            .collect();
        capture.looks = scan.witness.take_looks();
        capture.file_looks = scan.witness.take_file_looks();
        capture.flags_seen = capture
            .looks
            .iter()
            .map(|_| AtomicU64::new(u64::MAX))
            .collect();
        capture.children_allowed = self.leave_children_out;
        // Reaped by a first life that exits after saving: orphaned, they would hold their PIDs,
        // which a restore right after needs, until whoever reaps orphans got to them.
        let children: Vec<i32> = zombies.iter().map(|z| z.pid).collect();
        capture.zombies = zombies;
        capture.pkeys = state::pkeys::dump();
        capture.epolls = crate::state::epoll::probes(scan.epolls());
        // (The personalities' probe remembers the process's rings, and only these.)
        let rings: Vec<u64> = state::io_uring::rings(&scan.entries)
            .map(|r| r.ino)
            .collect();
        state::io_uring::keep_personality_probes(&rings);
        crate::checkpoint::pause_for_tests(b'd');
        capture.fdinfos =
            match crate::state::parked::ParkedInfo::prepare(&scan.entries, &scan.epoll_seen) {
                Ok(f) => f,
                Err(e) => match scan.witness.closed_or_replaced() {
                    // Closed since it was listed: listed again.
                    Some(why) => return Ok(Err(why)),
                    None => return Err(io("opening the event objects' fdinfo")(e)),
                },
            };
        capture.fifos = scan
            .fifo_readers()
            .and_then(|readers| {
                readers
                    .into_iter()
                    .map(|(fd, own)| {
                        let from = own.as_ref().map_or(fd, std::os::fd::AsRawFd::as_raw_fd);
                        Ok((fd, own, capture::pipe_copy(from)?))
                    })
                    .collect()
            })
            .map_err(io("preparing FIFO copies"))?;
        capture.inotify = scan
            .inotify()
            .into_iter()
            .map(|fd| (fd, Default::default()))
            .collect();
        let (shm, refused) = crate::state::shmem::copies(&maps, &scan.memfds(), max_deleted)
            .map_err(io("preparing shared memory copies"))?;
        if !refused.is_empty() {
            return Err(CheckpointError::Unsupported(refused));
        }
        capture.shm = shm;
        let (aio, refused) =
            crate::state::aio::copies(&maps).map_err(io("preparing the AIO rings' copies"))?;
        if !refused.is_empty() {
            return Err(CheckpointError::Unsupported(refused));
        }
        capture
            .own_buffers
            .extend(aio.iter().map(crate::state::aio::AioCopy::own_buffer));
        capture.aio = aio;
        capture.tcp = scan
            .tcp_connections()
            .into_iter()
            .map(|(fd, ino)| state::tcp::TcpCopy::new(fd, ino, self.exit_after_save))
            .collect::<Result<_, _>>()
            .map_err(io("preparing the TCP connections' copies"))?;
        capture.own_buffers.extend(
            capture
                .tcp
                .iter()
                .flat_map(state::tcp::TcpCopy::own_buffers),
        );
        // A process that is not dumpable (it changed its credentials) may not open its own
        // /proc/self/mem or pagemap (they are root's then): dumpable for the instant of the open
        // (the descriptor keeps working).
        if capture.shm.iter().any(|o| o.needs_mem()) {
            capture.mem = Some(
                crate::sys::while_dumpable(|| File::open("/proc/self/mem"))
                    .map_err(io("opening /proc/self/mem"))?
                    .into(),
            );
        }
        let pagemap = crate::sys::while_dumpable(|| File::open("/proc/self/pagemap"));
        capture.pagemap = Some(pagemap.map_err(io("opening /proc/self/pagemap"))?.into());
        let guards = crate::sys::DontForkBuf::new(64 << 10)
            .map_err(io("preparing the guard regions' list"))?;
        capture
            .own_buffers
            .push((guards.addr(), guards.addr() + guards.len() as u64));
        capture.guards = Some(guards);
        capture.locked = maps
            .iter()
            .filter(|m| m.has_flag("lo"))
            .map(|m| (m.start, m.end, m.has_flag("lf")))
            .collect();
        capture.dontfork = maps
            .iter()
            .filter(|m| m.has_flag("dc"))
            .map(|m| (m.start, m.end - m.start))
            .collect();
        // The maps at the fork, to check that the snapshot holds every mapping (one marked
        // MADV_DONTFORK after the list above was made would be missing). A maps line is at most
        // a path's length past 80 bytes; room for twice as many mappings.
        let room = maps.iter().map(|m| 96 + m.name.len()).sum::<usize>() * 2 + (64 << 10);
        capture.maps_buf =
            Some(crate::sys::DontForkBuf::new(room).map_err(io("preparing the mappings check"))?);
        capture.maps_fd = Some(
            File::open("/proc/self/maps")
                .map_err(io("opening /proc/self/maps"))?
                .into(),
        );
        // Freed before the snapshot, so that the restored heap is not trimmed by freeing them.
        drop(maps);
        // Threads that block the checkpoint signal are stopped by a helper instead.
        let name_of = |tid: i32| {
            threads
                .iter()
                .find(|t| t.0 == tid)
                .map_or_else(String::new, |t| t.1.clone())
        };
        let mut blocking: Vec<i32> = threads
            .iter()
            .map(|t| t.0)
            .filter(|&tid| {
                tid != me && blocks_signal(tid, self.signal) && !crate::sys::task_exiting(tid)
            })
            .collect();
        // (One in the kernel's exit, PF_EXITING, runs no more code of its own and cannot be
        // stopped with ptrace: the freeze waits for it to be gone, as for any thread that exits
        // during the stop; by then it has cleared its clear_child_tid word. A crowd of them waits
        // for the address-space lock where threads start and end nonstop.)
        // A thread that pthread_create is starting blocks every signal until it has set itself
        // up, a few microseconds: only one that still blocks a moment later is stopped with
        // ptrace (a short-lived one would exit meanwhile, and the attempt start again).
        for _ in 0..3 {
            if blocking.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
            blocking
                .retain(|&tid| blocks_signal(tid, self.signal) && !crate::sys::task_exiting(tid));
        }
        // One that still does and is runnable is most likely being started or ending, and
        // waits for a CPU (threads that start threads nonstop: dozens at a time, beyond what
        // the helper takes): signalled like the others, it parks once it unblocks. One that
        // still blocks the signal after the stop's bound is stopped with ptrace next time.
        blocking.retain(|&tid| stubborn.contains(&tid) || !runnable(tid));
        // More than the helper takes: threads ending in a crowd wait, all signals blocked, for
        // the C library's stack lock (its holder preempted on a busy machine) and are gone a
        // moment later. Tried again twice before the capture refuses them.
        if blocking.len() > crate::traced::MAX_THREADS
            && OVER_LIMIT_AGAIN.fetch_add(1, Ordering::Relaxed) < 2
        {
            return Ok(Err(format!(
                "{} threads blocked the checkpoint signal at once",
                blocking.len()
            )));
        }
        let mut traced = None;
        let mut traced_fd = None;
        if !blocking.is_empty() {
            let t = match crate::traced::capture(&blocking, &name_of, self.thread_timeout) {
                Ok(t) => t,
                Err(crate::traced::NotCaptured::Gone) => {
                    return Ok(Err("a thread exited as it was being captured".into()))
                }
                Err(crate::traced::NotCaptured::Refused(why)) => {
                    return Err(CheckpointError::Unsupported(why))
                }
            };
            // Stopped: no signal for them (their state is recorded once they go on again).
            for tc in &capture.threads {
                if t.tids.contains(&tc.tid.load(Ordering::Relaxed)) {
                    tc.done.store(1, Ordering::Release);
                }
            }
            capture.own_buffers.push(t.buffer());
            traced_fd = Some(t.own_fd());
            capture.helper.store(t.helper_pid(), Ordering::Relaxed);
            traced = Some(t);
        }
        // Now, while every thread runs: its first use registers a thread-local destructor
        // (the C library allocates), which a stopped thread could make wait (tempfile names).
        let _ = std::thread::current();
        let t0 = std::time::Instant::now();
        // Exiting after saving: the other threads stay stopped until the exit (see
        // capture::Parked), so that nothing they do after the snapshot happens twice.
        let frozen = capture::freeze(
            self.signal,
            capture,
            self.thread_timeout,
            self.exit_after_save,
        );
        let parked = matches!(frozen, Ok(Frozen::Parked(_)));
        // The snapshot exists (or the freeze failed): the stopped threads go on, unless parked.
        let mut kept = None;
        let captured: Vec<(i32, crate::traced::Captured)> = match traced {
            Some(t) if matches!(frozen, Ok(Frozen::Restored)) => {
                t.abandon();
                Vec::new()
            }
            Some(t) if parked => {
                let c = t.read();
                kept = Some(t);
                c
            }
            Some(t) => t.finish(),
            None => Vec::new(),
        };
        let frozen = match frozen {
            Ok(f) => f,
            Err(capture::FreezeError::Io(e)) if e.raw_os_error() == Some(libc::EAGAIN) => {
                // tgkill of a real-time signal fails so when the user's queue is full.
                let sigq = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| crate::procfs::field(&s, "SigQ").map(str::to_owned))
                    .unwrap_or_default();
                return Err(CheckpointError::Unsupported(vec![format!(
                    "the checkpoint signal {} cannot be sent: this user's queued signals are at their limit (SigQ {sigq}, RLIMIT_SIGPENDING), most likely held by a process of this user that blocks a real-time signal sent to it over and over; find it by the SigPnd/ShdPnd lines of /proc/PID/status",
                    self.signal
                )]));
            }
            Err(capture::FreezeError::Io(e)) => {
                return Err(io("stopping the process for the snapshot")(e))
            }
            Err(capture::FreezeError::Fork(e)) => {
                let why = match e.raw_os_error() {
                    Some(libc::EAGAIN) => ": the process's pids cgroup (pids.max) or this user's process limit (RLIMIT_NPROC) is reached; the snapshot is a copy of the process, for a moment, and counts as one",
                    Some(libc::ENOMEM) => ": not enough memory for the copy's page tables",
                    _ => "",
                };
                return Err(CheckpointError::Unsupported(vec![format!(
                    "the snapshot could not be forked ({e}){why}"
                )]));
            }
            Err(capture::FreezeError::Changed(why)) => return Ok(Err(why.into())),
            Err(capture::FreezeError::Unresponsive(late)) => {
                // One that blocks the signal now did not when the threads were listed (those
                // are stopped with ptrace): a collector stopped it (Boehm's suspends threads in
                // sigsuspend until it restarts them, and its own thread was parked by us). Let
                // go, the collection ends; the next attempt lists it again.
                if let Some(tid) = late.iter().find(|&&t| blocks_signal(t, self.signal)) {
                    stubborn.extend(late.iter().filter(|&&t| blocks_signal(t, self.signal)));
                    return Ok(Err(format!(
                        "thread {tid} began to block the checkpoint signal while the process was being stopped"
                    )));
                }
                // One waiting for a thread that was parked (a collector's stop of the world
                // that the checkpoint interrupted) goes on once all are let go: tried again,
                // twice, before it is refused.
                if UNRESPONSIVE_AGAIN.fetch_add(1, Ordering::Relaxed) < 2 {
                    return Ok(Err(format!(
                        "thread {} did not respond to the checkpoint signal",
                        late.first().copied().unwrap_or(0)
                    )));
                }
                return Err(CheckpointError::Unsupported(
                    late.iter()
                        .map(|tid| {
                            // One the listing did not have was started during the stop (found
                            // by the chase): said so, with the name it has now.
                            let name = match threads.iter().find(|t| t.0 == *tid) {
                                Some(t) => t.1.clone(),
                                None => format!(
                                    "{}, started while the checkpoint stopped the others",
                                    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                                        .unwrap_or_default()
                                        .trim()
                                ),
                            };
                            if blocks_signal(*tid, self.signal) {
                                format!("thread {tid} ({name}) blocks the checkpoint signal {}", self.signal)
                            } else {
                                format!(
                                    "thread {tid} ({name}) did not respond to the checkpoint signal within {:?} ({})",
                                    self.thread_timeout,
                                    what_it_does(*tid)
                                )
                            }
                        })
                        .collect(),
                ));
            }
        };
        let pause = t0.elapsed();
        let (owned, parked) = match frozen {
            Frozen::Restored => {
                std::mem::take(&mut scan.witness).abandon();
                std::mem::take(&mut scan.in_flight).abandon();
                // (The launcher lifted the hold on the moved connections' peers.)
                std::mem::forget(held);
                state::locks::forget_kept();
                return restored().map(Ok);
            }
            Frozen::Snapshot(mut c) => {
                // Threads that exited before they could be stopped are not in the image (nor
                // are the spare slots).
                c.threads.retain(|t| t.recorded());
                (Some(c), None)
            }
            // (Parked only when every thread was stopped or is gone; `recorded` tells them.)
            Frozen::Parked(p) => (None, Some(p)),
        };
        let capture: &Capture = match (&owned, &parked) {
            (Some(c), _) => c,
            (None, Some(p)) => p.capture(),
            (None, None) => unreachable!("one of the two"),
        };
        for s in &capture.socks {
            s.kept().for_each(|f| state::locks::keep(f, false));
        }
        if owned.is_some() {
            // (The threads go on from here, while the image is written.)
            pause_for_tests(b'g');
        }
        let result = self.write_snapshot(
            capture,
            &threads,
            &captured,
            scan,
            traced_fd,
            original_action,
        );
        if result.as_ref().is_ok_and(|r| r.is_ok()) && self.exit_after_save {
            // Without exit handlers or a flush of stdio buffers: what the program had buffered
            // is in the image, and the restored process writes it. Only what puts back shared
            // state runs (see on_exit_after_save).
            if let Ok(mut hooks) = AT_SAVE_EXIT.try_lock() {
                hooks.iter_mut().for_each(|h| h());
            }
            children.iter().for_each(|&c| crate::sys::reap_if_ended(c));
            crate::sys::exit_now(0);
        }
        // The checkpoint failed or starts again, or the process goes on: so do its threads
        // (those parked first, leaving the private allocator, then those stopped by ptrace).
        // (Connections left in repair mode for an exit that does not come go on too.)
        capture.tcp.iter().for_each(state::tcp::TcpCopy::resume);
        if let Some(p) = parked {
            drop(p.release());
        }
        drop(kept);
        drop(owned);
        let (size, digest) = match result? {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        Ok(Ok(Outcome::Saved(SavedInfo {
            path: self.path.clone(),
            size,
            digest,
            pause,
            left_out,
        })))
    }

    /// Checks the snapshot and writes the image from it (`Ok(Err)`: something changed, start
    /// again); the snapshot's process is gone afterwards.
    fn write_snapshot(
        &self,
        capture: &Capture,
        threads: &[(i32, String)],
        captured: &[(i32, crate::traced::Captured)],
        scan: FdScan,
        traced_fd: Option<i32>,
        original_action: state::signals::SigAction,
    ) -> Result<Result<(u64, Digest), String>, CheckpointError> {
        let child = capture.child.load(Ordering::Acquire) as i32;
        // Descriptors another thread closed, replaced or opened since the scan.
        let own: Vec<i32> = capture
            .own_fds()
            .into_iter()
            .chain(traced_fd)
            .chain(state::locks::kept())
            .chain(capture::abandoned_fds())
            .collect();
        match scan.witness.changed(child, &own) {
            Ok(None) => {}
            Ok(Some(why)) => {
                crate::sys::kill_and_reap(child);
                return Ok(Err(why));
            }
            Err(e) => {
                crate::sys::kill_and_reap(child);
                return Err(io("comparing the descriptors with the snapshot's")(e));
            }
        }
        for (tid, cap) in captured {
            if let Some(tc) = capture
                .threads
                .iter()
                .find(|x| x.tid.load(Ordering::Relaxed) == *tid)
            {
                cap.fill(tc, *tid);
            }
        }
        // A POSIX timer's signal (not restored) that came while the threads were stopped, to a
        // thread that does not block it, is being handled now that they go on: the checkpoint
        // starts again rather than refuse.
        let own = 1u64 << (self.signal - 1);
        let timer_came = capture.threads.iter().any(|t| {
            let left = t.pending.load(Ordering::Relaxed) & !own & capture.timer_signals;
            left != 0
                && blocked_set(t.tid.load(Ordering::Relaxed)).unwrap_or(u64::MAX) & left != left
        });
        if timer_came {
            crate::sys::kill_and_reap(child);
            return Ok(Err(
                "a POSIX timer's signal came while the threads were being stopped".into(),
            ));
        }
        // Event objects as they were once the threads had stopped (see state::parked), before
        // any memory is read: a change the image cannot follow starts the checkpoint again.
        let mut scan = scan;
        for p in &capture.fdinfos {
            if let Some(e) = scan
                .entries
                .iter_mut()
                .find(|e| e.fd == p.fd && !e.in_flight)
            {
                if let Err(changed) = p.update(e) {
                    crate::sys::kill_and_reap(child);
                    return Ok(Err(changed));
                }
            }
        }
        let result = self.dump(child, capture, threads, captured, scan, original_action);
        crate::sys::kill_and_reap(child);
        result
    }

    fn dump(
        &self,
        child: i32,
        c: &Capture,
        threads: &[(i32, String)],
        captured: &[(i32, crate::traced::Captured)],
        mut scan: FdScan,
        original_action: state::signals::SigAction,
    ) -> Result<Result<(u64, Digest), String>, CheckpointError> {
        let pid = crate::sys::getpid();
        let producer = state::Producer {
            thaw_version: env!("CARGO_PKG_VERSION").into(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        let mut m = Manifest {
            producer,
            ..Manifest::default()
        };
        m.platform = state::platform::Platform::current().map_err(io("reading the platform"))?;
        m.namespaces = state::namespaces::Namespaces::current();
        m.cgroupns = state::cgroupns::CgroupNs::current();
        m.mounts = state::mounts::Mounts::current();
        m.zombies = c.zombies.clone();
        m.process = state::process::Process::dump(
            child,
            pid,
            c.caller,
            &RESTORE_CELL as *const _ as u64,
            c.wide
                .each_ref()
                .map(|w| w.load(Ordering::Relaxed).checked_sub(1)),
        )
        .map_err(io("reading process attributes"))?;
        m.mm = state::mm::MmMap::dump(child, c.brk.load(Ordering::Relaxed))
            .map_err(io("reading the memory layout"))?;
        m.limits = state::limits::Rlimit::dump(c);
        // The process's own limit of open files, not the checkpoint's raised one.
        if let Some(soft) = scan.witness.nofile_soft() {
            for l in &mut m.limits {
                if l.resource == libc::RLIMIT_NOFILE {
                    l.cur = soft;
                }
            }
        }
        let gone: Vec<String> = c
            .posix_timers
            .iter()
            .filter(|(_, slot)| slot[0].load(Ordering::Relaxed) == state::posix_timers::GONE)
            .map(|(t, _)| {
                format!(
                    "POSIX timer {} was deleted during the checkpoint; try again",
                    t.id
                )
            })
            .collect();
        if !gone.is_empty() {
            return Err(CheckpointError::Unsupported(gone));
        }
        m.posix_timers = c
            .posix_timers
            .iter()
            .map(|(t, slot)| state::posix_timers::PosixTimer {
                value_ns: slot[0].load(Ordering::Relaxed),
                interval_ns: slot[1].load(Ordering::Relaxed),
                ..*t
            })
            .collect();
        m.timers = state::timers::Itimers::from_raw(
            c.itimers
                .each_ref()
                .map(|t| [t[0].load(Ordering::Relaxed), t[1].load(Ordering::Relaxed)]),
        );
        m.clocks = state::clocks::Clocks {
            boot_id: state::clocks::boot_id(),
            monotonic_ns: c.clocks[0].load(Ordering::Relaxed),
            boottime_ns: c.clocks[1].load(Ordering::Relaxed),
        };
        m.creds = state::creds::Credentials::of(child).map_err(io("reading credentials"))?;
        m.signals = state::signals::SignalState::dump(c, self.signal, original_action);
        let mem = File::open(format!("/proc/{child}/mem"))
            .map_err(io("opening the snapshot's memory"))?;
        if !captured.is_empty() {
            crate::traced::write_frames(child, c, captured, &mem).map_err(io(
                "writing the signal frames of threads captured by ptrace",
            ))?;
        }
        let pagemap = File::open(format!("/proc/{child}/pagemap"))
            .map_err(io("opening the snapshot's page map"))?;
        let count = c.guard_count.load(Ordering::Acquire);
        if count < 0 {
            return Err(io("finding the guard regions (MADV_GUARD_INSTALL)")(
                std::io::Error::from_raw_os_error(-count as i32),
            ));
        }
        let g = c.guards.as_ref().expect("prepared with the pagemap");
        let mut guards: Vec<(u64, u64)> = (0..count as usize)
            .map(|i| (g.get_u64(2 * i), g.get_u64(2 * i + 1)))
            .collect();
        guards.sort_unstable();
        m.threads = c
            .threads
            .iter()
            .filter(|t| t.recorded())
            .map(|t| {
                let tid = t.tid.load(Ordering::Relaxed);
                // As its handler read it (a thread started after the listing has no other).
                let name = t.recorded_name().unwrap_or_else(|| {
                    threads
                        .iter()
                        .find(|n| n.0 == tid)
                        .map_or_else(String::new, |n| n.1.clone())
                });
                state::threads::ThreadState::dump(t, name, &mem)
            })
            .collect::<Result<_, _>>()
            .map_err(io("reading the threads' signal frames"))?;
        // The snapshot has the checkpointing thread's no_new_privs; the process has it only if
        // every thread has (else each that has it sets it again for itself).
        m.creds.no_new_privs = m.threads.iter().all(|t| t.no_new_privs);
        let pid = crate::sys::getpid();
        for (tid, sig) in state::signals::recorded(c, captured, self.signal) {
            if state::signals::from_outside(&sig, tid, &m.threads, pid) {
                continue;
            }
            match tid {
                None => m.signals.pending.push(sig),
                Some(tid) => {
                    if let Some(t) = m.threads.iter_mut().find(|t| t.tid == tid) {
                        t.pending.push(sig);
                    }
                }
            }
        }

        let mut writer = ImageWriter::create(&self.path)?;
        // Memory, from the frozen child: its maps are the snapshot's.
        let maps = crate::procfs::smaps(child).map_err(io("reading the snapshot's mappings"))?;
        // Less the signal handler's stacks (the snapshot itself runs on one): the checkpoint's,
        // not the process's. (The kernel may have merged them with a neighbour.)
        let maps = match c.stacks.as_ref() {
            Some(s) => without(maps, s.range()),
            None => maps,
        };
        let mut unsupported = Vec::new();
        let mut tcp_done = std::collections::BTreeMap::new();
        let mut dumped = Vec::with_capacity(maps.len());
        for entry in &maps {
            match Vma::classify(entry) {
                Ok(mut vma) => {
                    // An io_uring instance's memory: which descriptor it is (see state::io_uring).
                    if let state::memory::Backing::IoRing { fd, .. } = &mut vma.backing {
                        // (By its inode; the memory a restore made it on names it.)
                        let ring = scan.entries.iter().find(|e| {
                            e.dup_of.is_none()
                                && matches!(&e.kind, FdKind::IoUring(r)
                                    if (*fd == -1 && r.ino == entry.inode)
                                        || (*fd != -1 && r.memory_ino == entry.inode))
                        });
                        match ring {
                            Some(e) => *fd = e.fd,
                            None => {
                                unsupported.push(format!(
                                    "{}: an io_uring instance whose descriptor is closed (its memory cannot be made again without it): unmap it before the checkpoint",
                                    entry.describe()
                                ));
                                continue;
                            }
                        }
                    }
                    // An AIO ring: its counters and events as the handler copied them.
                    let (start, len) = (vma.start, vma.len());
                    if let state::memory::Backing::Aio(ring) = &mut vma.backing {
                        let copy = c.aio.iter().find(|a| a.start == start && a.len == len);
                        // (A ring refused stays among the mappings dumped: it is no mapping
                        // the snapshot lacks.)
                        let read = copy
                            .and_then(crate::state::aio::AioCopy::bytes)
                            .ok_or_else(|| format!(
                                "{}: an AIO ring that could not be read while the threads were stopped (made, moved or resized during the checkpoint): checkpoint again",
                                entry.describe()
                            ))
                            .and_then(|bytes| {
                                let unreaped = ring.read(start, &bytes)?;
                                copy.map_or(Ok(()), |a| a.idle(ring))?;
                                Ok((unreaped, bytes))
                            });
                        match read {
                            Ok((false, _)) => {}
                            Ok((true, bytes)) => {
                                let events = &bytes[crate::state::aio::HEADER as usize..];
                                ring.events = Some(writer.append_payload(events)?);
                            }
                            Err(why) => unsupported.push(why),
                        }
                    }
                    vma.read_policy();
                    vma.advice &= !(VmaAdvice::LOCKED | VmaAdvice::LOCKONFAULT);
                    if let Some(&(_, _, onfault)) = c
                        .locked
                        .iter()
                        .find(|l| l.0 <= vma.start && vma.start < l.1)
                    {
                        vma.advice |= VmaAdvice::LOCKED;
                        if onfault {
                            vma.advice |= VmaAdvice::LOCKONFAULT;
                        }
                    }
                    let runs = vma
                        .saved_runs(&pagemap, entry.resident_kb, &guards)
                        .map_err(io("reading the snapshot's page map"))?;
                    dumped.push((vma, runs));
                }
                Err(why) => unsupported.push(why),
            }
        }
        // The payload holds first what a restore reads before the process runs (file mappings'
        // modified pages, small mappings), then the memory it may fill on first touch: what is
        // read up front is then a few consecutive chunks (fewer to read and verify, fewer blobs
        // to fetch from a registry) rather than a page here and there in many chunks.
        for later in [false, true] {
            for (vma, runs) in &mut dumped {
                let saved = runs.iter().map(|r| r.1).sum();
                if vma.fillable_on_first_touch(saved) == later {
                    vma.dump_pages(runs, &mem, &mut writer)?;
                }
            }
        }
        m.memory.extend(dumped.into_iter().map(|(vma, _)| vma));
        // A mapping marked MADV_DONTFORK as the checkpoint began (a worker thread starting):
        // the snapshot lacks it, and the checkpoint starts again.
        let missing = missing_mappings(c, &m.memory);
        if !missing.is_empty() {
            return Ok(Err(missing.join("; ")));
        }
        m.guards = guards
            .iter()
            .map(|&(start, end)| state::memory::Guard { start, end })
            .collect();
        // Keys taken or given back while the checkpoint ran: the snapshot's may be either.
        m.pkeys = state::pkeys::dump();
        if m.pkeys != c.pkeys {
            return Ok(Err(
                "memory protection keys were taken or given back meanwhile".into(),
            ));
        }
        unsupported.extend(state::pkeys::refusals(&m.memory));
        unsupported.extend(pending_signals(c, self.signal));
        unsupported.extend(state::threads::rseq_refusals(c));
        unsupported.extend(state::threads::unshared_refusals(c));
        unsupported.extend(state::io_uring::registered_refusals(c));
        unsupported.extend(state::threads::policy_refusals(c));
        unsupported.extend(state::keyrings::refusals(c));
        let tids: Vec<i32> = c
            .threads
            .iter()
            .filter(|t| t.recorded())
            .map(|t| t.tid.load(Ordering::Relaxed))
            .collect();
        unsupported.extend(state::sysv_sem::refusals(&tids, child));
        unsupported.extend(state::threads::identity_refusals(c));
        unsupported.extend(c.fifos.iter().filter_map(|(fd, _, p)| {
            let n = p.bytes.load(Ordering::Relaxed);
            (n < 0).then(|| {
                format!(
                    "fd {fd} (FIFO): cannot copy the bytes waiting in it: {}",
                    std::io::Error::from_raw_os_error(-n as i32)
                )
            })
        }));
        unsupported.extend(c.fdinfos.iter().filter_map(|p| p.refusal()));
        // What a restore of all the rings together costs, bounded as the image check bounds it:
        // never an image written that every restore would refuse.
        unsupported
            .extend(state::io_uring::Ring::check_all(state::io_uring::rings(&scan.entries)).err());
        unsupported.extend(c.inotify.iter().filter_map(|(fd, queued)| {
            let n = queued.load(Ordering::Relaxed);
            (n != 0).then(|| {
                format!("fd {fd} (inotify): {n} bytes of events were queued at the checkpoint and would be lost; read them first (in an event loop, Node's or asyncio's: let it run a turn before the checkpoint, e.g. await new Promise(setImmediate); a watch closed just before, in a beforeCheckpoint hook, leaves its IN_IGNORED event queued: close it, await a turn, then checkpoint)")
            })
        }));
        m.dontfork = c
            .dontfork
            .iter()
            .map(|&(start, len)| state::memory::DontFork {
                start,
                end: start + len,
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(CheckpointError::Unsupported(unsupported));
        }
        // Which edge-triggered registrations had an event waiting.
        for e in &mut scan.entries {
            if let (FdKind::Epoll { watches }, Some(p)) =
                (&mut e.kind, c.epolls.iter().find(|p| p.fd == e.fd))
            {
                let parked = c
                    .fdinfos
                    .iter()
                    .find(|f| f.fd == p.fd)
                    .and_then(|f| f.bytes());
                p.apply(watches, parked)
                    .map_err(|w| CheckpointError::Unsupported(vec![w]))?;
            }
        }
        // Which locked files the image stamps (see state::locks::Stamped).
        let stamped = state::locks::Stamped::new(&scan.entries, &m.memory);
        // Files: offsets, pipe contents and the flags a runtime flips as the handler saw them.
        for e in &mut scan.entries {
            let seen = c.looks.iter().zip(&c.flags_seen).find(|(l, _)| l.0 == e.fd);
            match seen.map(|(_, f)| f.load(Ordering::Relaxed)) {
                Some(f) if !e.in_flight && f != u64::MAX => {
                    let nonblock = libc::O_NONBLOCK as u32;
                    e.flags = e.flags & !nonblock | f as u32 & nonblock;
                    e.cloexec = (f >> 32) as i32 & libc::FD_CLOEXEC != 0;
                }
                _ => {}
            }
            if let Some((_, _, p)) = c.fifos.iter().find(|f| f.0 == e.fd) {
                if let Some(bytes) = p.copied().map_err(io("reading FIFO contents"))? {
                    e.fifo_bytes = Some(writer.append_payload(&bytes)?);
                    e.fifo_left = self.exit_after_save;
                }
            }
            let regular = matches!(e.kind, FdKind::Regular { .. });
            // SQLite's journals: it writes its -wal with pwrite after truncating it, and offset
            // 0 of an empty one is no sign of a writer at its end.
            let journal = matches!(&e.kind, FdKind::Regular { path, .. }
                if path.ends_with("-wal") || path.ends_with("-journal"));
            match &mut e.kind {
                FdKind::Regular { pos, .. }
                | FdKind::Memfd { pos, .. }
                | FdKind::Directory { pos, .. } => {
                    if let Some(p) = c.fds.iter().find(|p| p.fd == e.fd) {
                        let at = p.pos.load(Ordering::Relaxed).max(0) as u64;
                        *pos = at;
                        // A locked file's contents as the image knows them.
                        let st = p.stamp.each_ref().map(|s| s.load(Ordering::Relaxed));
                        if stamped.wants(e) && st[0] != u64::MAX {
                            e.locked_stamp =
                                Some(state::FileStamp::new(st[0], st[1] as i64, st[2] as i64));
                        }
                        // A zip archive it reads (see FdEntry::archive_stamp).
                        let reads_only = e.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
                        if regular
                            && reads_only
                            && e.flags & libc::O_PATH as u32 == 0
                            && e.locked_stamp.is_none()
                            && st[0] != u64::MAX
                            && state::files::zip_archive(e.fd)
                        {
                            e.archive_stamp =
                                Some(state::FileStamp::new(st[0], st[1] as i64, st[2] as i64));
                        }
                        // A file written at its end through the offset (see
                        // FdEntry::written_end).
                        let writes = e.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
                            && e.flags & libc::O_APPEND as u32 == 0;
                        // (An empty file too — a log opened "w" that nothing was written to
                        // yet, which each restore wrote over — but not an empty journal, nor an
                        // empty file the process locks: a lock file.)
                        if regular
                            && writes
                            && st[0] != u64::MAX
                            && at == st[0]
                            && !(st[0] == 0 && (journal || !e.locks.is_empty()))
                        {
                            e.written_end = Some(st[0]);
                        }
                    }
                }
                // (A duplicate is made again as one: see FdEntry::dup_of.)
                FdKind::IoUring(r) if e.dup_of.is_none() => {
                    let copy = c
                        .fdinfos
                        .iter()
                        .find(|p| p.fd == e.fd)
                        .and_then(|p| p.ring_copy());
                    let Some((rings, sqes)) = copy else {
                        return Ok(Err(format!("fd {} (io_uring): its memory could not be read while the threads were stopped", e.fd)));
                    };
                    r.rings = Some(writer.append_payload(rings)?);
                    r.sqes = Some(writer.append_payload(sqes)?);
                }
                FdKind::Pipe {
                    write_end: false,
                    buffered,
                    ..
                } => {
                    if let Some(p) = c.pipes.iter().find(|p| p.read_fd == e.fd) {
                        if let Some(bytes) = p.copied().map_err(io("reading pipe contents"))? {
                            *buffered = Some(writer.append_payload(&bytes)?);
                        }
                    }
                }
                FdKind::Socket(crate::state::sockets::Socket::Tcp(t)) => {
                    if let Some(done) = tcp_done.get(&t.ino) {
                        *t = Clone::clone(done);
                        continue;
                    }
                    let Some(copy) = c.tcp.iter().find(|x| x.ino == t.ino) else {
                        continue;
                    };
                    let mut append = |b: &[u8]| {
                        writer
                            .append_payload(b)
                            .map_err(|e| std::io::Error::other(e.to_string()))
                    };
                    match copy.fill(t, &mut append) {
                        Ok(()) => {
                            tcp_done.insert(t.ino, t.clone());
                        }
                        Err((true, why)) => return Ok(Err(why)),
                        Err((false, why)) => {
                            unsupported.push(format!("fd {} ({}): {why}", e.fd, t.describe()))
                        }
                    }
                }
                FdKind::Socket(crate::state::sockets::Socket::Bound(b)) => {
                    let Some(peek) = c.socks.iter().find(|s| s.ino == b.sock.ino) else {
                        continue;
                    };
                    match peek.messages() {
                        Ok(q) if q.lens.is_empty() => {}
                        Ok(q) if q.fds.iter().any(|&n| n > 0) => unsupported.push(format!(
                            "fd {} (socket:[{}]): a message queued to a bound receiver carries descriptors, which are not restored",
                            e.fd, b.sock.ino
                        )),
                        Ok(q) => {
                            b.queued = Some(writer.append_payload(q.bytes)?);
                            b.messages = q.lens;
                        }
                        Err(why) => unsupported
                            .push(format!("fd {} (socket:[{}]): {why}", e.fd, b.sock.ino)),
                    }
                }
                FdKind::Socket(crate::state::sockets::Socket::Pair(p)) => {
                    let Some(peek) = c.socks.iter().find(|s| s.ino == p.ino) else {
                        continue;
                    };
                    if p.ty != libc::SOCK_STREAM {
                        let q = match peek.messages() {
                            Ok(q) => q,
                            Err(why) => {
                                unsupported
                                    .push(format!("fd {} (socket:[{}]): {why}", e.fd, p.ino));
                                continue;
                            }
                        };
                        // A queue whose messages or descriptors changed between the two looks
                        // (a thread received or sent meanwhile): the checkpoint starts again.
                        let carried = if peek.mismatch.load(Ordering::Relaxed) {
                            Err("its descriptors in flight changed while the checkpoint looked at them".to_owned())
                        } else {
                            scan.in_flight.message_fds(p.ino, &q.lens, &q.fds)
                        };
                        match carried {
                            Err(why) => return Ok(Err(format!("socket:[{}]: {why}", p.ino))),
                            Ok(_) if q.lens.is_empty() => {}
                            Ok(carried) => {
                                p.queued = Some(writer.append_payload(q.bytes)?);
                                p.messages = q.lens;
                                p.message_fds = carried;
                            }
                        }
                        continue;
                    }
                    match peek.bytes() {
                        Ok([]) => {}
                        Ok(b) => p.queued = Some(writer.append_payload(b)?),
                        Err(why) => {
                            unsupported.push(format!("fd {} (socket:[{}]): {why}", e.fd, p.ino))
                        }
                    }
                }
                _ => {}
            }
        }
        let mut changed = Vec::new();
        for o in &c.shm {
            let mapped: Vec<(u64, u64, u64)> = m
                .memory
                .iter()
                .filter(|v| v.map_flags & libc::MAP_SHARED as u32 != 0)
                .filter_map(|v| match v.backing {
                    Backing::Shared { object, offset } if object == o.id => {
                        Some((offset, v.start, v.end - v.start))
                    }
                    _ => None,
                })
                .collect();
            match o.finish(&mapped, &mut writer)? {
                Ok(obj) => m.shared.push(obj),
                Err(state::shmem::Unfinished::Refused(why)) => {
                    unsupported.push(format!("shared object {} ({}): {why}", o.id, o.describe()))
                }
                Err(state::shmem::Unfinished::Changed(why)) => {
                    changed.push(format!("shared object {} ({}): {why}", o.id, o.describe()))
                }
            }
        }
        // Every mapping of a shared object must be of one that was copied (the snapshot's maps
        // are the parent's at the same instant, but check rather than trust).
        for v in &m.memory {
            if let Backing::Shared { object, .. } = v.backing {
                if !c.shm.iter().any(|o| o.id == object) {
                    changed.push(format!(
                        "mapping {:x}-{:x}: shared memory object {object} appeared during the checkpoint",
                        v.start, v.end
                    ));
                }
            }
        }
        // Mapped, unmapped or resized between the preparation and the snapshot: start again,
        // unless something is refused anyway (said now, not after every attempt).
        if !changed.is_empty() && unsupported.is_empty() {
            return Ok(Err(changed.join("; ")));
        }
        if !unsupported.is_empty() {
            return Err(CheckpointError::Unsupported(unsupported));
        }
        m.files = scan.entries;
        // A pidfd of a child that ended: the child must be among the zombies made again (one
        // waited for in between leaves the pidfd nothing to name: the checkpoint starts again).
        let waited = m.files.iter().find_map(|f| match &f.kind {
            FdKind::Pidfd(p)
                if p.dead.is_none()
                    && p.pid != m.process.pid
                    && !m.threads.iter().any(|t| t.tid == p.pid)
                    && !m.zombies.iter().any(|z| z.pid == p.pid) =>
            {
                Some(p.pid)
            }
            _ => None,
        });
        if let Some(pid) = waited {
            return Ok(Err(format!(
                "child {pid}, named by a pidfd, was waited for during the checkpoint"
            )));
        }

        // The key is read only now, long after the snapshot was taken: it cannot be in the image.
        let key = match &self.key {
            Some(path) => Some(thaw_signing::SecretKey::load(path).map_err(ImageError::Key)?),
            None => None,
        };
        let saved = writer.finish(m, key.as_ref())?;
        Ok(Ok((saved.size, saved.digest)))
    }
}

/// Signals pending at the snapshot that were not taken off their queues (a POSIX timer's, or
/// more than there is room for) would be lost: refused.
fn pending_signals(c: &Capture, signal: i32) -> Vec<String> {
    let own = 1u64 << (signal - 1);
    let pid = crate::sys::getpid();
    let mut why: Vec<String> = Vec::new();
    for t in &c.threads {
        let pending = t.pending.load(Ordering::Relaxed) & !own;
        let tid = t.tid.load(Ordering::Relaxed);
        // (The main thread's are its own and the process's.)
        let whose = if tid == pid {
            format!("thread {tid} or the process")
        } else {
            format!("thread {tid}")
        };
        for (set, reason) in [
            (
                pending & c.timer_signals,
                "a POSIX timer's signal waiting to be delivered is not restored",
            ),
            (
                pending & !c.timer_signals,
                "more signals were queued than a checkpoint reads (128)",
            ),
        ] {
            if set == 0 {
                continue;
            }
            let sigs: Vec<String> = (1..=64)
                .filter(|s| set & (1u64 << (s - 1)) != 0)
                .map(|s| s.to_string())
                .collect();
            why.push(format!(
                "signal(s) {} pending for {whose} at the checkpoint (blocked): {reason}; let them be handled first",
                sigs.join(", "),
            ));
        }
    }
    let errno = c.requeue_error.load(Ordering::Relaxed);
    if errno != 0 {
        why.push(format!(
            "a pending signal could not be put back in its queue: {}",
            std::io::Error::from_raw_os_error(errno)
        ));
    }
    why
}

/// Mappings the process had at the fork that the snapshot lacks (marked MADV_DONTFORK after the
/// checkpoint listed such ranges), but for the checkpoint's own buffers.
fn missing_mappings(c: &Capture, vmas: &[Vma]) -> Vec<String> {
    let Some(buf) = &c.maps_buf else {
        return Vec::new();
    };
    let len = c.maps_len.load(Ordering::Acquire);
    if len < 0 {
        return vec![format!(
            "cannot read /proc/self/maps at the snapshot: {}",
            std::io::Error::from_raw_os_error(-len as i32)
        )];
    }
    let text = String::from_utf8_lossy(&buf.as_slice()[..len as usize]);
    // What the snapshot holds, and the checkpoint's own buffers (never in it, by design; the
    // kernel may have merged adjacent ones into one mapping).
    let mut ranges: Vec<(u64, u64)> = vmas
        .iter()
        .map(|v| (v.start, v.end))
        .chain(std::iter::once((buf.addr(), buf.addr() + buf.len() as u64)))
        .chain(
            c.shm
                .iter()
                .flat_map(|o| o.buffers().map(|(a, n)| (a, a + n))),
        )
        .chain(c.own_buffers.iter().copied())
        .chain(c.fdinfos.iter().filter_map(|p| p.own_buffer()))
        .collect();
    ranges.sort_unstable();
    // One item for all of them (a V8 heap marks its pages so as it grows: dozens at once).
    let lacking = state::memory::uncovered(&text, &ranges);
    match lacking.as_slice() {
        [] => Vec::new(),
        [l] => vec![format!("mapping {l}: marked MADV_DONTFORK while the checkpoint began, so the snapshot lacks it; try again")],
        [l, ..] => vec![format!(
            "{} mappings ({l}, …): marked MADV_DONTFORK while the checkpoint began, so the snapshot lacks them; try again",
            lacking.len()
        )],
    }
}

/// `maps` less the range `(start, end)`: mappings inside it dropped, those across its ends cut.
fn without(
    maps: Vec<crate::procfs::MapEntry>,
    (start, end): (u64, u64),
) -> Vec<crate::procfs::MapEntry> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        if m.end <= start || m.start >= end {
            out.push(m);
            continue;
        }
        if m.start < start {
            out.push(crate::procfs::MapEntry {
                end: start,
                ..m.clone()
            });
        }
        if m.end > end {
            out.push(crate::procfs::MapEntry {
                start: end,
                offset: m.offset + (end - m.start),
                ..m
            });
        }
    }
    out
}

/// The restorer page a multi-threaded restore left behind: every thread left it long ago.
fn unmap_leftover() {
    let cell = &RESTORE_CELL;
    let addr = cell.leftover_addr.swap(0, Ordering::AcqRel);
    let len = cell.leftover_len.swap(0, Ordering::AcqRel);
    if addr != 0 {
        let _ = crate::sys::unmap_foreign_region(addr, len);
    }
}

/// The checkpoint runs `cpuid` (its digests pick their instructions by it) and reads the clock
/// through the vDSO (`rdtsc`): a calling thread on which either faults would die of SIGSEGV.
/// (Other threads' cpuid faulting is restored; an rdtsc setting differing between threads is
/// refused with the other per-thread settings an image holds once.)
fn caller_can_checkpoint() -> Result<(), CheckpointError> {
    let mut why = Vec::new();
    if crate::sys::cpuid_enabled() == 0 {
        why.push("the checkpointing thread has cpuid faulting on (ARCH_SET_CPUID), and the checkpoint runs cpuid: checkpoint from another thread, or turn it off around the checkpoint".to_owned());
    }
    if crate::sys::prctl_get_int(libc::PR_GET_TSC).ok() == Some(libc::PR_TSC_SIGSEGV) {
        why.push("the checkpointing thread has rdtsc faulting (PR_SET_TSC, PR_TSC_SIGSEGV), and the checkpoint reads the clock: checkpoint from another thread, or allow rdtsc around the checkpoint".to_owned());
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Unsupported(why))
    }
}

/// State that rules out a checkpoint before anything is stopped, and the process's mappings.
fn preflight() -> Result<(Vec<String>, Vec<crate::procfs::MapEntry>), CheckpointError> {
    let mut why = Vec::new();
    let status = crate::procfs::read(crate::sys::getpid(), "status")
        .map_err(io("reading /proc/self/status"))?;
    // A main thread that ended (pthread_exit in main) while others run is a zombie whose
    // /proc files show no memory, descriptors or cgroups: everything else read from
    // /proc/self would mislead, so this is said alone.
    if crate::procfs::field(&status, "State")
        .is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    {
        return Err(CheckpointError::Unsupported(vec![format!(
            "the main thread ({}) has exited (pthread_exit in main) while other threads run: a process without its main thread is not restored; keep the main thread (have it join the others instead of exiting)",
            crate::sys::getpid()
        )]));
    }
    if let Some(mode) = crate::procfs::field(&status, "Seccomp").filter(|v| *v != "0") {
        // Usually inherited: a container's default profile, systemd's SystemCallFilter=.
        let count = crate::procfs::field(&status, "Seccomp_filters").unwrap_or("?");
        why.push(format!(
            "the process runs under seccomp (mode {mode}, {count} filter(s)), which cannot be read back to be installed again: start it without one (a container: --security-opt seccomp=unconfined; a systemd unit: no SystemCallFilter=), or, where the program installs it itself, install it after restore"
        ));
    }
    let maps =
        crate::procfs::smaps(crate::sys::getpid()).map_err(io("reading /proc/self/smaps"))?;
    why.extend(maps.iter().filter_map(|m| Vma::classify(m).err()));
    Ok((why, maps))
}

/// What thread `tid` is doing, for a message: the system call it waits in (with the kernel
/// function it sleeps in), or that it runs.
fn what_it_does(tid: i32) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{f}"));
    let syscall = read("syscall").unwrap_or_default();
    let wchan = read("wchan").unwrap_or_default();
    match syscall.split_whitespace().next() {
        Some("running") => "running".to_owned(),
        Some(n) if n.parse::<i64>().is_ok_and(|n| n >= 0) => {
            format!("in system call {n}, waiting in {}", wchan.trim())
        }
        _ => format!("state unknown, waiting in {}", wchan.trim()),
    }
}

/// Whether thread `tid` blocks `signal` now.
/// The signals thread `tid` blocks now, if it can be read (the thread still exists).
fn blocked_set(tid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()
        .map(|st| crate::procfs::field_hex(&st, "SigBlk"))
}

/// Whether thread `tid` is running or waiting for a CPU (state R).
fn runnable(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()
        .is_some_and(|st| crate::procfs::field(&st, "State").is_some_and(|s| s.starts_with('R')))
}

fn blocks_signal(tid: i32, signal: i32) -> bool {
    blocked_set(tid).is_some_and(|set| set & (1u64 << (signal - 1)) != 0)
}

/// Every thread as (tid, name); a thread that blocks the checkpoint signal is unsupported.
fn list_threads(why: &mut Vec<String>) -> Result<Vec<(i32, String)>, CheckpointError> {
    let mut out = Vec::new();
    let leader_filtered = state::threads::leader_filtered();
    for e in std::fs::read_dir("/proc/self/task").map_err(io("listing threads"))? {
        let Some(tid) = e
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
            continue; // exited meanwhile
        };
        // The kernel's io_uring workers run no code of the program's: not in the image (the
        // kernel makes them again as the restored rings need them).
        if crate::sys::task_is_io_worker(tid) {
            continue;
        }
        let name = crate::procfs::field(&status, "Name")
            .unwrap_or("")
            .to_owned();
        // Refused before anything stops; `threads::policy_refusals` looks again once every
        // thread is stopped (one started or changed since).
        why.extend(state::threads::policy_refusal(
            tid,
            &name,
            &status,
            leader_filtered,
            None,
        ));
        // A thread that blocks the checkpoint signal now may unblock it in a moment (one inside
        // pthread_create blocks every signal briefly): it is signalled like the others, and named
        // only if it has not parked within the bound.
        out.push((tid, name));
    }
    out.sort_unstable();
    Ok(out)
}

fn current_action(signal: i32) -> Result<state::signals::SigAction, CheckpointError> {
    let mut old = crate::sys::KernelSigaction::default();
    crate::sys::rt_sigaction(signal, None, Some(&mut old))
        .map_err(io("reading the checkpoint signal's disposition"))?;
    Ok(state::signals::SigAction {
        signo: signal as u32,
        handler: old.handler,
        flags: old.flags,
        restorer: old.restorer,
        mask: old.mask,
    })
}

/// Test hook: with `THAW_TEST_AFTER_SCAN=R,W[,POINTS]` (two descriptors of a pipe pair's ends,
/// then which of the points below to stop at, `s` if none are given), the checkpoint writes the
/// point's letter to W there and waits for a byte on R: a test's thread changes the process's
/// state in between, at the moment a real one would (see state::parked), or signals the calling
/// thread. The points: `l` once the descriptors are listed and before the witness holds them,
/// `h` once it holds them and before the scan reads them, `d` once the scan is done and before
/// the event objects' state is prepared to be read again, `s` once signals are blocked on the
/// calling thread, before the other threads are stopped, `g` once the threads go on from a
/// snapshot (not kept stopped), before the image is written from it.
pub(crate) fn pause_for_tests(point: u8) {
    // (Only in builds with debug assertions, which the test suite uses.)
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(v) = std::env::var_os("THAW_TEST_AFTER_SCAN") else {
        return;
    };
    let v = v.to_string_lossy();
    let mut parts = v.split(',');
    let (Some(Ok(r)), Some(Ok(w))) = (
        parts.next().map(str::parse::<i32>),
        parts.next().map(str::parse::<i32>),
    ) else {
        return;
    };
    let points = parts.next().unwrap_or("s");
    if points.as_bytes().contains(&point) && crate::sys::write_raw(w, &[point]) == 1 {
        let mut b = [0u8; 1];
        let _ = crate::sys::read_raw(r, &mut b);
    }
}

/// Second life: read what the launcher left, unmap its region, run the restore hooks.
fn restored() -> Result<Outcome, CheckpointError> {
    let cell = &RESTORE_CELL;
    let args_addr = cell.args_addr.load(Ordering::Acquire);
    let args_len = cell.args_len.load(Ordering::Acquire) as usize;
    let bytes = crate::sys::copy_from_foreign_region(args_addr, args_len);
    let region = (
        cell.region_addr.load(Ordering::Acquire),
        cell.region_len.load(Ordering::Acquire),
    );
    // From here on the process's maps are exactly the image's.
    crate::sys::unmap_foreign_region(region.0, region.1).map_err(io("unmapping the restorer"))?;
    for w in [
        &cell.magic,
        &cell.region_addr,
        &cell.region_len,
        &cell.args_addr,
        &cell.args_len,
    ] {
        w.store(0, Ordering::Release);
    }
    let ra: RestoreArgs =
        postcard::from_bytes(&bytes).map_err(|e| CheckpointError::RestoreArgs(e.to_string()))?;
    // What the checkpoint held was sent to the first life.
    crate::hold::forget();
    // Before any hook: OpenSSL and SQLite, wherever the process has them, draw afresh.
    crate::sys::reseed_libraries();
    // Every io_uring instance is a new one now.
    state::io_uring::keep_personality_probes(&[]);
    run_hooks(&AFTER).map_err(CheckpointError::Hook)?;
    let env = ra
        .env
        .into_iter()
        .map(|kv| match kv.iter().position(|&b| b == b'=') {
            Some(i) => (
                OsString::from_vec(kv[..i].to_vec()),
                OsString::from_vec(kv[i + 1..].to_vec()),
            ),
            None => (OsString::from_vec(kv), OsString::new()),
        })
        .collect();
    Ok(Outcome::Restored(Restored {
        args: ra.args.into_iter().map(OsString::from_vec).collect(),
        env,
    }))
}

#[cfg(test)]
mod tests {
    use super::itemize;

    #[test]
    fn items_sharing_an_explanation_give_it_once() {
        let why = "close it before the checkpoint and connect again after: see docs";
        let items: Vec<String> = vec![
            format!("fd 3 (socket:[1]): a TCP connection (a to b) is not restored: {why}"),
            "fd 4: a kind of file that is not restored anywhere at all, whatever".into(),
            format!("fd 5 (socket:[2]): a TCP connection (c to d) is not restored: {why}"),
        ];
        assert_eq!(
            itemize(&items),
            format!(
                "fd 3 (socket:[1]): a TCP connection (a to b) is not restored; fd 5 (socket:[2]): a TCP connection (c to d) is not restored: {why}; fd 4: a kind of file that is not restored anywhere at all, whatever"
            )
        );
    }

    #[test]
    fn items_with_their_own_explanations_stay_as_they_are() {
        let items: Vec<String> = vec!["a: short".into(), "b: short".into(), "c".into()];
        assert_eq!(itemize(&items), "a: short; b: short; c");
    }

    #[test]
    fn a_large_group_is_counted_past_eight() {
        let why = "72 such threads, more than the 64 thaw captures at once";
        let items: Vec<String> = (0..72)
            .map(|t| format!("thread {t} blocks it: {why}"))
            .collect();
        let shown = itemize(&items);
        assert!(
            shown.starts_with("thread 0 blocks it; thread 1 blocks it;"),
            "{shown}"
        );
        assert!(
            shown.ends_with(&format!("thread 7 blocks it; and 64 more like them: {why}")),
            "{shown}"
        );
        assert_eq!(shown.matches(why).count(), 1);
    }
}
