//! Restoring an image: checks, preparation in the launcher, process creation, supervision.
//!
//! Everything expensive or allocating (verification, decoding, reopening files, building the step
//! list, mapping the restorer region) happens here, before the new process exists. The new process
//! runs nothing but the restorer (see [`restorer`]).

pub mod ahead;
mod guardian;
mod layout;
pub mod lazy;
pub mod policy;
mod restorer;
pub mod template;
mod timens;
pub mod working_set;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use thaw::image::Image;
use thaw::restore::{Plan, RestoreArgs};
use thaw::state::clocks::Away;
use thaw::state::creds::Credentials;
use thaw::state::memory::{Backing, VmaAdvice};
use thaw::state::platform::Platform;

use crate::exit::{Code, Failure, Result};
use crate::sys;
use layout::Region;

/// Where the restored process gets its PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PidMode {
    /// The caller's PID namespace (root or CAP_CHECKPOINT_RESTORE).
    Host,
    /// A new user + PID namespace, with the launcher as its init (any user).
    Ns,
    /// Host when permitted and the PID is free, else ns.
    Auto,
}

/// Signals the launcher passes on to the restored process: every one another process may send
/// whose default action would end the launcher (and leave the process unsupervised), but those
/// the kernel raises for the launcher's own faults and limits (SIGSEGV, SIGPIPE, SIGXFSZ, ...)
/// and glibc's two internal ones (32 and 33).
pub(crate) const FORWARDED: [i32; 42] = {
    let mut all = [0i32; 42];
    let standard = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGPWR,
        libc::SIGIO,
    ];
    let mut i = 0;
    while i < standard.len() {
        all[i] = standard[i];
        i += 1;
    }
    // SIGRTMIN (34, as glibc gives it) to SIGRTMAX (64).
    let mut rt = 34;
    while rt <= 64 {
        all[i] = rt;
        i += 1;
        rt += 1;
    }
    all
};

/// What `thaw run` was asked to do.
#[derive(Debug)]
pub struct Request {
    pub pid_mode: PidMode,
    pub args: Vec<OsString>,
    /// Restore with the caller's credentials when the image's differ.
    pub as_caller: bool,
    /// The launcher gained privileges at exec.
    pub elevated: bool,
    /// Where the verified payload is read from: the image file, or the launcher's sealed private
    /// copy of it (same offsets).
    pub payload: std::fs::File,
    /// With `THAW_TIMING` set (unprivileged launchers only): when the launcher started and how
    /// long opening and verifying took; the phases are reported on stderr.
    pub timing: Option<(std::time::Instant, std::time::Duration)>,
    /// Fill the large anonymous VMAs on first touch (the chunks of their pages were not verified
    /// yet); `None` reads all memory before the process runs.
    pub lazy: Option<lazy::Uffd>,
    /// Listening sockets handed in by the caller, used instead of binding the image's own.
    pub listeners: Vec<OwnedFd>,
    /// Restore even if the image's clocks would jump backwards here (no time namespace).
    pub allow_clock_jump: bool,
    /// With lazy memory: the image's recorded working set, or where to record one.
    pub working_set: working_set::WorkingSet,
    /// Asked once the process exists, before it runs any code of its own.
    pub last_word: Option<LastWord>,
}

/// The caller's last word on a restore, asked while the process waits at the restorer's gate
/// (its last step before the process's own code): a registry's answer about a tag, awaited
/// while the image the tag named last time is restored. `false` calls the restore off there:
/// the restorer fails at that step, as at any other, and nothing of the process's runs.
pub struct LastWord(pub Box<dyn FnOnce() -> bool>);

impl std::fmt::Debug for LastWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastWord")
    }
}

fn refused(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::Refused, msg)
}

fn failed(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::RestoreFailed, msg)
}

/// A duplicate of `fd` at a number ≥ `high`, out of the way of the process's own descriptors;
/// a number the caller's limit on open files does not reach is a refusal that says so.
pub(crate) fn dup_high(fd: RawFd, high: RawFd) -> Result<OwnedFd> {
    sys::dup_above(fd, high).map_err(|e| dup_failure(&e, high))
}

/// Why a duplicate at a number ≥ `high` could not be made.
fn dup_failure(e: &std::io::Error, high: RawFd) -> Failure {
    let limit = thaw::sys::prlimit(0, libc::RLIMIT_NOFILE).map_or(0, |(_, max)| max);
    match e.raw_os_error() {
        // (F_DUPFD: EINVAL for a number at or above the limit, EMFILE for none free below.)
        Some(libc::EINVAL | libc::EMFILE) => refused(format!(
            "the restore needs descriptor numbers from {high} up, above the process's own, \
             and your limit on open files (RLIMIT_NOFILE) is {limit}: raise it (ulimit -n) \
             and restore again"
        )),
        _ => failed(format!("cannot duplicate a descriptor: {e}")),
    }
}

/// Descriptors the launcher may hold beside the process's while it reopens them.
const OWN_DESCRIPTORS: u64 = 16;

/// Whether the caller's limit on open files leaves room for the process's descriptors: every
/// number it held must be below the limit (as its own limit is never above the caller's), and
/// the launcher holds them all at once, beside its own (which wait above them). Refused before anything is opened,
/// naming what it takes, instead of "Too many open files" at the thousandth reopened file.
fn room_for_descriptors(m: &thaw::state::Manifest) -> Result<()> {
    let Some(top) = m.files.iter().map(|e| e.fd).max() else {
        return Ok(());
    };
    let limit = thaw::sys::prlimit(0, libc::RLIMIT_NOFILE).map_or(u64::MAX, |(_, max)| max);
    let count = m.files.len() as u64;
    // Above the process's highest number (FIRST_HIGH_FD at least, see dup_high) the launcher
    // holds one descriptor per mapped file and shared object, and the executable.
    let mut mapped: Vec<(u64, u64)> = m
        .memory
        .iter()
        .filter_map(|v| match &v.backing {
            thaw::state::memory::Backing::File { id, .. } => Some((id.dev, id.ino)),
            _ => None,
        })
        .collect();
    mapped.sort_unstable();
    mapped.dedup();
    // Each is opened first wherever a number is free, beside the reopened descriptors.
    let above = (mapped.len() + m.shared.len() + 1) as u64;
    let needed = ((top + 1).max(FIRST_HIGH_FD) as u64).max(count + above) + above + OWN_DESCRIPTORS;
    if needed > limit {
        return Err(refused(format!(
            "the process held {count} descriptors, up to number {top}, and your limit on open \
             files (RLIMIT_NOFILE) is {limit}: raise it to {needed} or more (ulimit -n {needed}) \
             and restore again"
        )));
    }
    Ok(())
}

/// Checks that the image may run here, by this caller. Returns the caller's credentials.
fn check_policy(image: &Image, elevated: bool, as_caller: bool) -> Result<policy::Target> {
    let m = image.manifest();
    let here = Platform::current().map_err(|e| {
        failed(format!(
            "cannot read this machine's platform (from /proc: is it mounted?): {e}"
        ))
    })?;
    let why = m.platform.incompatibilities(&here);
    if !why.is_empty() {
        return Err(refused(format!(
            "image cannot run on this machine: {}",
            why.join("; ")
        )));
    }
    for (tid, what) in [
        (m.process.pid, "its main thread"),
        (
            m.process.checkpoint_tid,
            "the thread that called checkpoint",
        ),
    ] {
        if !m.threads.iter().any(|t| t.tid == tid) {
            return Err(Failure::new(
                Code::Corrupt,
                format!("image has no thread {tid} ({what})"),
            ));
        }
    }
    let own = Credentials::of(std::process::id() as i32)
        .map_err(|e| failed(format!("cannot read the caller's credentials: {e}")))?;
    let target =
        policy::decide(&m.creds, &policy::caller(&own, elevated), as_caller).map_err(refused)?;
    if let Some(note) = &target.note {
        errln!("thaw: warning: {note}");
    }
    Ok(target)
}

/// The process's paths (its files, cwd, executable) name files under its root directory: a
/// launcher with another root (the process ran in a chroot, or thaw does) would find other files
/// or none. Refused by name; so is another security module confinement, and on the same boot
/// another network or UTS namespace with other contents (see `thaw::state::namespaces`).
fn same_root(m: &thaw::Manifest, ns_mode: bool) -> Result<()> {
    // A process confined by a security module (an AppArmor profile it changed to, an SELinux
    // domain) would run with the launcher's confinement instead: refused unless the same.
    if let Some(label) = &m.process.lsm_label {
        let here = thaw::state::process::lsm_label();
        if here.as_ref() != Some(label) {
            return Err(refused(format!(
                "the process ran confined as {label:?} (its security module label); you run as {}: restore it under the same confinement",
                here.map_or("nothing".to_owned(), |h| format!("{h:?}"))
            )));
        }
    }
    let same_boot = m.clocks.boot_id == thaw::state::clocks::boot_id();
    m.namespaces
        .check_here(&m.creds, same_boot, ns_mode)
        .map_err(refused)?;
    let image = m.process.root;
    match thaw::state::process::root_id() {
        Some(here) if image != (0, 0) && here != image => Err(refused(format!(
            "the process's root directory was device {:#x} inode {}, and yours is device {:#x} inode {}: it ran in a chroot (or you do); run thaw with the process's root",
            image.0, image.1, here.0, here.1
        ))),
        _ => {
            m.mounts.check_here().map_err(refused)?;
            m.process.check_cwd().map_err(refused)
        }
    }
}

/// In ns mode only the caller's own uid and gid are mapped: anything else the process would see
/// as its own (a deleted file's owner, the login uid) would show as the overflow id 65534.
/// Refused by name instead of restored subtly wrong.
fn ns_identities(m: &thaw::Manifest) -> Result<()> {
    let (uid, gid) = (sys::geteuid(), sys::getegid());
    for o in &m.shared {
        if let Some(f) = &o.file {
            if (f.uid, f.gid) != (uid, gid) {
                let (what, or) = if f.keep_name {
                    (
                        "HotSpot's performance-data file",
                        "; or start the JVM with -XX:+PerfDisableSharedMem",
                    )
                } else {
                    ("the deleted file", "")
                };
                return Err(refused(format!(
                    "{what} {} is owned by {}:{}, which a namespace restore cannot show (only your own ids, {uid}:{gid}, are mapped); use --pid-mode host{or}",
                    f.path, f.uid, f.gid
                )));
            }
        }
    }
    if m.process.loginuid != u32::MAX && m.process.loginuid != uid {
        let mine = thaw::state::process::loginuid();
        if mine != m.process.loginuid {
            return Err(refused(format!(
                "the login uid {} cannot be set in a namespace restore (only your own uid, {uid}, is mapped); use --pid-mode host",
                m.process.loginuid
            )));
        }
    }
    Ok(())
}

/// Host mode needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) in the user namespace that owns the
/// caller's PID namespace: a launcher whose capabilities belong to another user namespace (inside a
/// container, say) must not create processes with chosen PIDs there.
fn may_use_host_pids() -> bool {
    (has_cap(CAP_SYS_ADMIN) || has_cap(CAP_CHECKPOINT_RESTORE))
        && sys::owns_pid_namespace().unwrap_or(false)
}

const CAP_SETPCAP: u32 = 8;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Whether the launcher may use capability `cap` (it is permitted; an elevated launcher raises
/// it only around the calls that need it, see `privilege`).
pub(crate) fn has_cap(cap: u32) -> bool {
    sys::permitted_caps() & (1u64 << cap) != 0
}

/// Whether the caller holds capability `cap`, to grant the process what only it may have (a
/// nice value or an OOM score below the caller's). An elevated launcher's own file
/// capabilities are not the caller's: theirs are those exec carried over, the ambient set.
fn caller_has_cap(cap: u32) -> bool {
    if sys::at_secure() {
        sys::ambient_cap(cap)
    } else {
        has_cap(cap)
    }
}

/// Whether `pid` is taken here. `orphan`: the ID of a child left out at the checkpoint, which the
/// first life's own child may still hold, orphaned when the first life ended and about to end too
/// (a `cat` reading end of file from it): its end and its reaping, by whichever process reaps
/// orphans, are waited for, briefly.
fn pid_in_use(pid: i32, orphan: Option<bool>) -> bool {
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    if gone() {
        return false;
    }
    let limit = std::time::Duration::from_secs(3);
    // (Still running, it holds its PID longer: a new namespace serves at once.)
    if orphan == Some(false) {
        return true;
    }
    if orphan == Some(true) {
        if let Ok(fd) = sys::pidfd_open(pid) {
            // Readable once it has ended.
            let _ = sys::poll_readable(&[fd.as_raw_fd()], Some(limit));
        }
    }
    // A zombie waiting for its parent to reap it: the first life's children, orphaned when it
    // exited, take init (or the subreaper above it) a moment, up to a second or two on a busy
    // machine. Waited for, briefly, as is a process on its way out (PF_EXITING) or being reaped
    // (X); a zombie whose parent never reaps it is refused after that.
    let ending = || {
        sys::process_state(pid).is_some_and(|(state, flags)| {
            matches!(state, 'Z' | 'X') || flags & sys::PF_EXITING != 0
        })
    };
    let until = std::time::Instant::now() + limit;
    while ending() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    !gone()
}

/// The first of the image's PID and TIDs that is taken in this PID namespace. `wait`: for a
/// left-out child of the first life still running (host mode: up to 3 s for it to end; auto mode
/// takes a new namespace instead).
fn taken_id(m: &thaw::Manifest, wait: bool) -> Option<i32> {
    std::iter::once(m.process.pid)
        .chain(m.threads.iter().map(|t| t.tid))
        .find(|&id| pid_in_use(id, None))
        .or_else(|| {
            // (A left-out child of a process whose children the kernel reaps is not made again.)
            let reaped = m.signals.children_reaped();
            m.zombies
                .iter()
                .filter(|z| !(z.left_out && reaped))
                .find(|z| pid_in_use(z.pid, z.left_out.then_some(wait)))
                .map(|z| z.pid)
        })
}

/// Descriptors prepared for the new process: the targets at their numbers, and the launcher's own
/// (image, executable, mapped files, error pipe) moved above them.
struct Fds {
    image: OwnedFd,
    exe: OwnedFd,
    /// Per image VMA index, the descriptor of its file.
    mapped: Vec<(usize, RawFd)>,
    _mapped_files: Vec<OwnedFd>,
    /// Shared memory objects by id, above the process's numbers.
    shared: Vec<(u64, OwnedFd)>,
    /// (number in the restored process, descriptor here, close-on-exec).
    placed: Vec<(RawFd, OwnedFd, bool)>,
    error_w: OwnedFd,
    error_r: OwnedFd,
    /// Numbers the restored process keeps open.
    keep: Vec<RawFd>,
    /// With lazy memory: how the userfaultfd reaches the launcher.
    transport: Option<lazy::Transport>,
    /// (read end, write end) of the gate: the restorer closes its copy of the write end and
    /// reads the read end to end of file before the process runs, which comes once the launcher
    /// (and any helper of its) has closed its own copies of everything that is the process's.
    /// Until then a pipe's reader would not see end of file when the process closes the
    /// writer, a listening socket would stay bound, a lock would stay held.
    gate: Option<(OwnedFd, OwnedFd)>,
    /// The launcher says "go" with a byte on the gate (a last word is asked, see [`LastWord`]):
    /// end of file alone, the launcher gone or calling the process off, fails the restore there.
    gate_go: bool,
    /// pidfds of processes that had exited, among `placed`: (number here, what, open flags).
    /// In ns mode the namespace's init makes them again inside the namespace (a pidfd of a
    /// process outside it tells nothing there: no exit status, EINVAL rather than ESRCH).
    dead: Vec<(RawFd, thaw::state::pidfd::Dead, u32)>,
    /// How far the clocks moved on while the process was away: its timers, timerfds among
    /// these descriptors included, ran on as far.
    away: Away,
}

impl Fds {
    /// The descriptors prepared for the process (it has its own copies once it exists).
    fn process_side(&self) -> Vec<RawFd> {
        [self.image.as_raw_fd(), self.exe.as_raw_fd()]
            .into_iter()
            .chain(self._mapped_files.iter().map(|f| f.as_raw_fd()))
            .chain(self.shared.iter().map(|(_, f)| f.as_raw_fd()))
            .chain(self.placed.iter().map(|(_, f, _)| f.as_raw_fd()))
            .collect()
    }

    /// In a forked helper once the process exists: closes this copy of everything that is the
    /// process's, so that the launcher sees end of file where it waits for one.
    fn close_process_side(&self) {
        sys::close(self.error_w.as_raw_fd());
        if let Some((r, w)) = &self.gate {
            sys::close(r.as_raw_fd());
            sys::close(w.as_raw_fd());
        }
        for fd in self.process_side() {
            sys::close(fd);
        }
        if let Some(t) = &self.transport {
            sys::close(t.child_end.as_raw_fd());
        }
    }
}

/// The process's descriptors wait at numbers from this one up (or above its highest).
const FIRST_HIGH_FD: RawFd = 64;

/// Raises the descriptor limit and grows the descriptor table to what [`prepare_fds`] will use:
/// called before the launcher starts any thread, since growing a table that threads share waits
/// for an RCU grace period (10-20 ms here).
pub fn prepare_descriptor_table(image: &Image) {
    sys::raise_nofile();
    let m = image.manifest();
    let highest = m.files.iter().map(|f| f.fd).max().unwrap_or(0);
    // The process's own, moved above its highest, then at most one per mapping and object,
    // and a few of the launcher's (image, executable, pipe, socket pair).
    let count = m.memory.len() + m.files.len() + m.shared.len() + 32;
    sys::reserve_fds(
        image.file(),
        highest
            .max(FIRST_HIGH_FD - 1)
            .saturating_add(count as RawFd),
    );
}

/// Descriptors that shared a standard descriptor's open file description: the same as the
/// caller's, which are the launcher's own and the process's 0, 1 and 2.
fn standard_duplicates(m: &thaw::Manifest) -> Result<Vec<(RawFd, OwnedFd)>> {
    for e in m.files.iter().filter(|e| e.standard_set.count_ones() > 1) {
        let set: Vec<i32> = (0..=2).filter(|s| e.standard_set & (1 << s) != 0).collect();
        if set
            .windows(2)
            .any(|w| thaw::sys::same_description(w[0], w[1]) != Some(true))
        {
            return Err(refused(format!(
                "fd {} shared one open file description with the process's fds {set:?} (a terminal, say), which are yours at restore, and yours are not one: which one it stood for cannot be told; restore with them on one terminal, or close fd {} before the checkpoint",
                e.fd, e.fd
            )));
        }
    }
    m.files
        .iter()
        .filter_map(|e| Some((e.fd, e.standard().filter(|&s| s != e.fd)?)))
        .map(|(fd, s)| {
            sys::dup_above(s, FIRST_HIGH_FD)
                .map(|d| (fd, d))
                .map_err(|err| match err.raw_os_error() {
                    Some(libc::EBADF) => refused(format!(
                        "fd {fd} shared the process's fd {s}, which is yours at restore, and yours is not open ({err}): restore with fd {s} open"
                    )),
                    _ => dup_failure(&err, FIRST_HIGH_FD),
                })
        })
        .collect()
}

/// Opens what the process needs, at numbers above its own (see [`prepare_descriptor_table`]).
fn prepare_fds(
    image: &Image,
    payload: &std::fs::File,
    lazy: Option<lazy::Uffd>,
    listeners: &[OwnedFd],
    away: Away,
) -> Result<Fds> {
    let m = image.manifest();
    thaw::state::epoll::check_standard(&m.files).map_err(refused)?;
    room_for_descriptors(m)?;
    // Reopen the process's files first (checks identity; may read pipe contents from the image).
    let payload_off = image.header().payload_off;
    // Shared memory objects, created and filled here; mapped and sealed by the restorer.
    let objects =
        thaw::state::shmem::recreate(&m.shared, |r| read_payload(payload, payload_off, r))
            .map_err(refused)?;
    let (mut reopened, ring_memory) = thaw::state::files::reopen(
        &m.files,
        |r| read_payload(payload, payload_off, r),
        listeners,
        &objects,
        away,
    )
    .map_err(refused)?;
    reopened.extend(standard_duplicates(m)?);
    let high = reopened
        .iter()
        .map(|(fd, _)| *fd)
        .max()
        .unwrap_or(2)
        .max(FIRST_HIGH_FD - 1)
        + 1;

    // The executable and every mapped file, checked to be the files the image was taken with.
    let exe_path = &m.mm.exe.path;
    let exe = thaw::image::reader::open_regular(exe_path.as_ref(), false)
        .map_err(|e| refused(format!("cannot open the executable {exe_path}: {e}")))?;
    let meta = exe
        .metadata()
        .map_err(|e| refused(format!("{exe_path}: {e}")))?;
    if thaw::state::FileId::of(&meta) != m.mm.exe.id {
        return Err(refused(format!(
            "the executable {exe_path} was replaced since the checkpoint (a package upgrade replaces its files): checkpoint again with the one installed now"
        )));
    }
    let exe_stamp = thaw::state::FileStamp {
        size: m.mm.exe.size,
        mtime_ns: m.mm.exe.mtime_ns,
    };
    if thaw::state::FileStamp::of(&meta) != exe_stamp {
        return Err(refused(format!(
            "the executable {exe_path} was modified since the checkpoint (its size or modification time differ): the restored process would run other code than it had"
        )));
    }
    let exe = dup_high(exe.as_raw_fd(), high)?;
    let mut files: Vec<(thaw::state::FileId, bool, thaw::state::FileStamp, OwnedFd)> = Vec::new();
    let mut mapped = Vec::new();
    let mut shared = Vec::new();
    for (id, fd) in objects {
        let fd = dup_high(fd.as_raw_fd(), high)?;
        shared.push((id, fd));
    }
    for (i, vma) in m.memory.iter().enumerate() {
        if let Backing::Shared { object, .. } = &vma.backing {
            let fd = shared
                .iter()
                .find(|(id, _)| id == object)
                .map(|(_, fd)| fd.as_raw_fd())
                .ok_or_else(|| {
                    Failure::new(
                        Code::Corrupt,
                        format!("mapping of unknown shared object {object}"),
                    )
                })?;
            mapped.push((i, fd));
            continue;
        }
        let Backing::File {
            path, id, stamp, ..
        } = &vma.backing
        else {
            continue;
        };
        // Code, or saved pages that would sit beside the file's own, from a file changed in
        // place: not what the process had. (Other private mappings show a file's changes in a
        // running process too.)
        let stamp_matters = vma.prot & libc::PROT_EXEC as u32 != 0 || !vma.pages.is_empty();
        let write = vma.advice & VmaAdvice::MAYWRITE != 0;
        let modified = || {
            refused(format!(
                "mapped file {path} was modified since the checkpoint (its size or modification time differ): the restored process would {}",
                if vma.prot & libc::PROT_EXEC as u32 != 0 {
                    "run other code than it had (restore with the files the image was taken with)"
                } else {
                    "see its saved pages beside the file's new contents (an earlier restore of this image may have written it: put back a copy of the file as it was, its modification time kept, e.g. with cp -p; or map it shared, or map it again after restore)"
                }
            ))
        };
        let shrunk = |now: &thaw::state::FileStamp| {
            vma.file_shrunk(stamp.size, now.size, thaw::page_size() as u64)
                .then(|| {
                    refused(format!(
                        "mapped file {path} is shorter than at the checkpoint ({} bytes, then {}): the process would get SIGBUS where it read the file's bytes; restore with the file as it was",
                        now.size, stamp.size
                    ))
                })
        };
        let fd = match files
            .iter()
            .find(|(known, w, _, _)| known == id && *w == write)
        {
            Some((_, _, now, fd)) => {
                if let Some(e) = shrunk(now) {
                    return Err(e);
                }
                if stamp_matters && now != stamp {
                    return Err(modified());
                }
                fd.as_raw_fd()
            }
            None => {
                let f = thaw::image::reader::open_regular(path.as_ref(), write).map_err(|e| {
                    // A native library unpacked to a temporary file at start (sqlite-jdbc, JNA,
                    // snappy: `deleteOnExit`) is removed when a restore of the image exits.
                    // (Mapped as code somewhere: its first, read-only segment comes first.)
                    let code = m.memory.iter().any(|v| {
                        v.prot & libc::PROT_EXEC as u32 != 0
                            && matches!(&v.backing, Backing::File { id: other, .. } if other == id)
                    });
                    let gone = if code && e.kind() == std::io::ErrorKind::NotFound {
                        ": removed since the checkpoint (a library a runtime unpacked to a temporary file and deletes as it exits, as sqlite-jdbc, JNA and snappy-java do, is gone once the first life or an earlier restore of the image has ended: unpack it to a lasting place, e.g. -Dorg.sqlite.tmpdir or -Djna.tmpdir on a directory that is kept, or checkpoint again)"
                    } else {
                        ""
                    };
                    refused(format!(
                        "cannot open mapped file {path}{}: {e}{gone}",
                        if write {
                            " for writing (it is mapped shared and writable)"
                        } else {
                            ""
                        }
                    ))
                })?;
                let meta = f.metadata().map_err(|e| refused(format!("{path}: {e}")))?;
                if thaw::state::FileId::of(&meta) != *id {
                    return Err(refused(format!(
                        "mapped file {path} was replaced since the checkpoint (a package upgrade replaces a library's file; a program writes a data file anew): restore with the file the image was taken with, or checkpoint again"
                    )));
                }
                let now = thaw::state::FileStamp::of(&meta);
                if let Some(e) = shrunk(&now) {
                    return Err(e);
                }
                if stamp_matters && now != *stamp {
                    return Err(modified());
                }
                let fd = dup_high(f.as_raw_fd(), high)?;
                let raw = fd.as_raw_fd();
                files.push((*id, write, now, fd));
                raw
            }
        };
        mapped.push((i, fd));
    }
    let image_fd = dup_high(payload.as_raw_fd(), high)?;
    let (r, w) = std::io::pipe().map_err(|e| failed(format!("cannot create a pipe: {e}")))?;
    let error_r = dup_high(OwnedFd::from(r).as_raw_fd(), high)?;
    let error_w = dup_high(OwnedFd::from(w).as_raw_fd(), high)?;

    // The process's own descriptors wait above `high` too; the restorer moves them to their
    // numbers (the launcher's own low descriptors, such as the image's, stay untouched here).
    let mut keep: Vec<RawFd> = m
        .files
        .iter()
        .filter(|e| e.standard() == Some(e.fd) || e.made_by_restorer())
        .map(|e| e.fd)
        .collect();
    let mut placed = Vec::new();
    let mut dead = Vec::new();
    for (fd, open) in reopened {
        let entry = m.files.iter().find(|e| e.fd == fd);
        let cloexec = entry.is_some_and(|e| e.cloexec);
        let high_fd = dup_high(open.as_raw_fd(), high)?;
        if let Some(e) = entry {
            if let thaw::state::files::FdKind::Pidfd(p) = &e.kind {
                if let Some(d) = p.dead {
                    let thread = if p.thread { libc::O_EXCL as u32 } else { 0 };
                    dead.push((high_fd.as_raw_fd(), d, e.flags | thread));
                }
            }
        }
        placed.push((fd, high_fd, cloexec));
        keep.push(fd);
    }
    keep.sort_unstable();
    // An io_uring instance's memory: the memfd it was made on again.
    let ring_memory: Vec<(RawFd, OwnedFd)> = ring_memory
        .into_iter()
        .map(|(fd, mem)| Ok((fd, dup_high(mem.as_raw_fd(), high)?)))
        .collect::<Result<_>>()?;
    for (i, vma) in m.memory.iter().enumerate() {
        if let Backing::IoRing { fd, .. } = vma.backing {
            let mem = ring_memory.iter().find(|(n, _)| *n == fd).ok_or_else(|| {
                Failure::new(
                    Code::Corrupt,
                    format!("mapping of io_uring fd {fd}, which is not restored"),
                )
            })?;
            mapped.push((i, mem.1.as_raw_fd()));
        }
    }
    let transport = lazy.map(|u| lazy::Transport::new(u, high)).transpose()?;
    Ok(Fds {
        transport,
        image: image_fd,
        exe,
        mapped,
        _mapped_files: files
            .into_iter()
            .map(|(_, _, _, fd)| fd)
            .chain(ring_memory.into_iter().map(|(_, mem)| mem))
            .collect(),
        shared,
        placed,
        error_w,
        error_r,
        keep,
        gate: None,
        gate_go: false,
        dead,
        away,
    })
}

/// The gate's pipe (see `Fds::gate`).
fn gate(fds: &Fds) -> Result<(OwnedFd, OwnedFd)> {
    // Above every number the process gets (the restorer places descriptors there); a
    // duplicate never takes a number in use.
    let high = fds.keep.iter().max().map_or(3, |m| m + 1);
    let (r, w) = std::io::pipe().map_err(|e| failed(format!("cannot create a pipe: {e}")))?;
    let up = |fd: OwnedFd| dup_high(fd.as_raw_fd(), high);
    Ok((up(OwnedFd::from(r))?, up(OwnedFd::from(w))?))
}

/// A verified range of the image's payload (the launcher's copy or the image file).
pub(crate) fn read_payload(
    payload: &std::fs::File,
    payload_off: u64,
    r: thaw::state::PayloadRef,
) -> std::result::Result<Vec<u8>, String> {
    // The reader checked every range against the payload; checked again rather than wrap.
    let at = payload_off
        .checked_add(r.offset)
        .ok_or_else(|| format!("payload range {}+{} overflows", r.offset, r.len))?;
    let mut buf = vec![0u8; r.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(payload, &mut buf, at)
        .map_err(|e| format!("cannot read {} bytes from the image: {e}", r.len))?;
    Ok(buf)
}

/// The complete step list for the restored process.
/// With `fork`, the plan is a template's (`thaw serve`): the memory is restored once, then every
/// request forks an instance that runs the rest; what a fork does not pass on (locks, advice
/// that acts at fork, timers) and everything per instance (descriptors, arguments) comes after.
fn build_plan(
    image: &Image,
    fds: &Fds,
    region: &Region,
    args: &RestoreArgs,
    creds: &Credentials,
    mode: PidMode,
    fork: Option<&template::ForkPoint>,
) -> Result<Plan> {
    let m = image.manifest();
    let drops = bounding_drops(creds, mode);
    if mode == PidMode::Host && drops != 0 && !has_cap(CAP_SETPCAP) {
        return Err(refused(format!(
            "the image's capability bounding set {:#x} is narrower than yours ({:#x}), and narrowing it takes CAP_SETPCAP, which this launcher lacks: use --pid-mode ns, or --as-caller to keep yours",
            creds.caps.bounding,
            launcher_bounding()
        )));
    }
    let mut plan = Plan::new(region.arena_base());

    // Start clean: no signals, no rseq area of the launcher's, none of its memory.
    let all = plan.words(&[u64::MAX]);
    plan.syscall(
        "block all signals",
        libc::SYS_rt_sigprocmask,
        [libc::SIG_SETMASK as u64, all, 0, 8, 0, 0],
    );
    let (fs, _) = thaw::sys::fs_gs_base();
    if let Some((addr, len)) = thaw::sys::glibc_rseq(fs) {
        plan.syscall_any(
            "unregister the launcher's rseq area",
            libc::SYS_rseq,
            [addr, u64::from(len.max(32)), 1, 0x5305_3053, 0, 0],
        );
    }
    // Its cgroup namespace before any child of its own is made (zombies below); a template's,
    // which its instances share. Outside a new user namespace, making one takes CAP_SYS_ADMIN.
    if m.cgroupns.needs_own() {
        if (mode == PidMode::Host || fork.is_some()) && !has_cap(CAP_SYS_ADMIN) {
            return Err(refused(
                "the process was at the root of a cgroup namespace of its own (its cgroups read /), and making one takes CAP_SYS_ADMIN, which this launcher lacks: use --pid-mode ns, or run thaw as root",
            ));
        }
        thaw::state::cgroupns::CgroupNs::plan_unshare(&mut plan);
    }
    region.plan_unmap_launcher(&mut plan);
    region.plan_move_vdso(&mut plan, &m.platform.vdso)?;
    // Protection keys before any mapping: the kernel takes one of its own for a mapping made
    // executable only, which would shift the numbers the process holds.
    thaw::state::pkeys::plan_keys(&m.pkeys, &mut plan);
    // Its session, then its zombie children, forked while the process holds nothing but the
    // restorer's region. (An instance of a template makes its session itself.)
    if fork.is_none() {
        m.process.plan_session(&mut plan);
    }
    if !m.zombies.is_empty() {
        thaw::state::children::plan_default_sigchld(&mut plan);
        // (Children left out at the checkpoint too: their SIGCHLD is queued again with the
        // process's signals, once the dispositions are set, see below.)
        // (A left-out child of a process whose children the kernel reaps leaves no zombie.)
        let reaped = m.signals.children_reaped();
        for z in m.zombies.iter().filter(|z| !(z.left_out && reaped)) {
            z.plan_restore(&mut plan, |plan| plan_credentials(plan, creds, drops));
        }
        thaw::state::children::plan_forget_sigchld(&mut plan);
    }

    // The image's memory, then the layout markers and /proc/self/exe.
    // Lazily filled VMAs are registered with a userfaultfd, which goes to the launcher before
    // anything touches them.
    let payload_off = image.header().payload_off;
    if let Some(t) = &fds.transport {
        // Created by the launcher itself, the restorer holds a copy of the launcher's end too;
        // in ns mode the helper closed it before forking the namespace's init.
        t.plan_create(&mut plan, mode != PidMode::Ns);
    }
    for (i, vma) in m.memory.iter().enumerate() {
        let file_fd = fds.mapped.iter().find(|(j, _)| *j == i).map(|(_, fd)| *fd);
        let uffd = fds.transport.as_ref().filter(|_| lazy::is_lazy(vma, m));
        vma.plan_restore(
            &mut plan,
            fds.image.as_raw_fd(),
            payload_off,
            file_fd,
            uffd.map(|t| t.fd()),
        );
    }
    if fork.is_none() {
        plan_fork_sensitive(&mut plan, m);
    }
    for o in &m.shared {
        if let Some((_, fd)) = fds.shared.iter().find(|(id, _)| *id == o.id) {
            o.plan_restore(&mut plan, fd.as_raw_fd());
        }
    }
    if let Some(t) = &fds.transport {
        t.plan_send(&mut plan);
    }
    if fork.is_none() {
        for vma in &m.memory {
            vma.plan_lock(&mut plan);
        }
    }
    m.mm.plan_restore(&mut plan, Some(fds.exe.as_raw_fd()));
    if let Some(f) = fork {
        // Signal dispositions pass on at fork: set once, in the template (whose signals stay
        // blocked), not in each instance (62 system calls on its way to its first instruction).
        m.signals.plan_restore(&mut plan);
        f.plan(&mut plan, &fds.error_w, m);
        plan_fork_sensitive(&mut plan, m);
        for vma in &m.memory {
            vma.plan_lock(&mut plan);
        }
    }

    // AIO contexts, once the memory is in place (the kernel puts a new ring in a hole of it);
    // an instance of a template makes its own (a fork does not pass them on).
    plan_aio(&mut plan, m, fds, payload_off, fork.is_some())?;

    // Process attributes, limits (never above what the caller may have), signal dispositions.
    m.process.plan_restore(&mut plan);
    thaw::state::process::plan_loginuid(
        &mut plan,
        m.process.loginuid,
        thaw::state::process::loginuid(),
    );
    let mine = thaw::state::limits::Rlimit::current()
        .map_err(|e| failed(format!("cannot read rlimits: {e}")))?;
    for lim in &m.limits {
        let now = mine.iter().find(|l| l.resource == lim.resource);
        // The process starts with the launcher's limits (a fork, or a fork of a template
        // forked from it): one it already has is not set again.
        if now == Some(lim) {
            continue;
        }
        let hard = now.map_or(u64::MAX, |l| l.max);
        let mut lim = *lim;
        if lim.max > hard {
            let say = |v: u64| {
                if v == u64::MAX {
                    "unlimited".to_owned()
                } else {
                    v.to_string()
                }
            };
            errln!(
                "thaw: warning: {} lowered from {} to your hard limit {}",
                lim.name(),
                say(lim.max),
                say(hard)
            );
            lim.max = hard;
            lim.cur = lim.cur.min(hard);
        }
        lim.plan_restore(&mut plan);
    }
    if fork.is_none() {
        m.signals.plan_restore(&mut plan);
    }
    let alarm_due = m.timers.plan_restore(&mut plan, fds.away);

    // Tell the process it was restored, and where its arguments are.
    let args_bytes =
        postcard::to_allocvec(args).map_err(|e| failed(format!("cannot encode arguments: {e}")))?;
    let (args_addr, args_len) = match fork {
        // Received by the template with each request.
        Some(f) => (f.args_buffer(), None),
        None => (plan.data(&args_bytes), Some(args_bytes.len() as u64)),
    };
    let cell = m.process.restore_cell;
    if m.threads.len() > 1 {
        // Other threads leave the region through its code page, possibly after the main thread
        // has resumed: that page stays until the next checkpoint, named for /proc/self/maps.
        let (code, code_len) = region.code_page();
        let name = plan.cstr("thaw-restorer");
        plan.syscall_any(
            "name the restorer page",
            libc::SYS_prctl,
            [libc::PR_SET_VMA as u64, 0, code, code_len, name, 0],
        );
        plan.store("restore cell: region", cell + 8, region.base + code_len);
        plan.store(
            "restore cell: region length",
            cell + 16,
            region.len - code_len,
        );
        plan.store("restore cell: leftover page", cell + 40, code);
        plan.store("restore cell: leftover length", cell + 48, code_len);
    } else {
        plan.store("restore cell: region", cell + 8, region.base);
        plan.store("restore cell: region length", cell + 16, region.len);
    }
    plan.store("restore cell: arguments", cell + 24, args_addr);
    if let Some(len) = args_len {
        plan.store("restore cell: arguments length", cell + 32, len);
    }
    plan.store(
        "restore cell: restored",
        cell,
        thaw::capture::RESTORED_MAGIC,
    );

    let placements: Vec<(RawFd, RawFd, bool)> = match fork {
        Some(f) => f.placements(m),
        None => fds
            .placed
            .iter()
            .map(|(fd, open, cloexec)| (*fd, open.as_raw_fd(), *cloexec))
            .collect(),
    };
    for (fd, source, cloexec) in &placements {
        plan.syscall(
            format!("place fd {fd}"),
            libc::SYS_dup3,
            [
                *source as u64,
                *fd as u64,
                if *cloexec { libc::O_CLOEXEC as u64 } else { 0 },
                0,
                0,
                0,
            ],
        );
    }
    // The launcher's read end of the error pipe is nothing to the process: its number serves
    // as a scratch one (see `EpollWatch::at`).
    for entry in &m.files {
        entry.plan_restore(&m.files, fds.error_r.as_raw_fd(), &mut plan);
    }
    // The other threads: each sets up its own state, reports ready, waits until the process is
    // complete (descriptors swept), and resumes. The thread that called checkpoint (any thread)
    // unmaps the region once it runs again, so it resumes last: every other thread counts itself
    // out of the region as it resumes (from then on it runs only on the code page, which stays),
    // and the checkpointing thread waits for that count to reach zero.
    let leader = m
        .threads
        .iter()
        .find(|t| t.tid == m.process.pid)
        .expect("checked in check_policy");
    let caller = m.process.checkpoint_tid;
    let others: Vec<_> = m.threads.iter().filter(|t| t.tid != leader.tid).collect();
    let n = others.len() as u64;
    // Three 32-bit words, each in its own 8 bytes: ready, go, left.
    let sync = plan.words(&[n, 0, n]);
    let (ready, go, left) = (sync, sync + 8, sync + 16);
    let resume = |plan: &mut Plan, t: &thaw::state::threads::ThreadState| {
        if t.tid == caller {
            if n > 0 {
                plan.wait_zero(
                    format!(
                        "thread {} waits until every other thread has resumed",
                        t.tid
                    ),
                    left,
                );
            }
            plan.sigreturn(format!("resume thread {}", t.tid), t.sigframe, None);
        } else {
            plan.sigreturn(format!("resume thread {}", t.tid), t.sigframe, Some(left));
        }
    };
    // Nice values below the caller's would be a privilege (CAP_SYS_NICE over the initial user
    // namespace, so never in ns mode): never granted.
    let caller_nice = sys::nice();
    let nice_of = |t: &thaw::state::threads::ThreadState| {
        if t.nice < caller_nice && (mode == PidMode::Ns || !caller_has_cap(CAP_SYS_NICE)) {
            errln!(
                "thaw: warning: thread {} nice {} raised to yours, {caller_nice}",
                t.tid,
                t.nice
            );
            caller_nice
        } else {
            t.nice
        }
    };
    // So is the real-time I/O class (ioprio_set asks CAP_SYS_NICE or CAP_SYS_ADMIN over the
    // initial user namespace: an administrator's `ionice -c 1` on the process, or a root process
    // restored in ns mode): best-effort at the same level instead, as a nice value is raised.
    let ioprio_of = |t: &thaw::state::threads::ThreadState| {
        const IOPRIO_CLASS_RT: u32 = 1;
        const IOPRIO_CLASS_BE: u32 = 2;
        let (class, level) = (t.ioprio >> 13, t.ioprio & 0xff);
        if class == IOPRIO_CLASS_RT
            && (mode == PidMode::Ns
                || !(caller_has_cap(CAP_SYS_NICE) || caller_has_cap(CAP_SYS_ADMIN)))
        {
            errln!(
                "thaw: warning: thread {} real-time I/O priority (level {level}) lowered to best-effort level {level}: the real-time class takes CAP_SYS_NICE{}",
                t.tid,
                if mode == PidMode::Ns {
                    ", which a process in its own user namespace (--pid-mode ns) does not have over the system"
                } else {
                    ""
                }
            );
            IOPRIO_CLASS_BE << 13 | level
        } else {
            t.ioprio
        }
    };
    for (i, t) in others.iter().enumerate() {
        let list = plan.new_list();
        t.plan_restore(&mut plan);
        t.plan_sleep(&mut plan, fds.away);
        t.plan_sched(&mut plan, nice_of(t), ioprio_of(t));
        plan_credentials(&mut plan, creds, drops);
        for sig in &t.pending {
            sig.plan_queue(&mut plan, m.process.pid, Some(t.tid));
        }
        plan.dec_wake(format!("thread {} ready", t.tid), ready);
        plan.wait_nonzero(format!("thread {} waits for the process", t.tid), go);
        resume(&mut plan, t);
        plan.select(0);
        let tid = plan.words(&[t.tid as u64]);
        let (stack, stack_len) = region.thread_stack(i as u64);
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let args = plan.words(&[flags, 0, 0, 0, 0, stack, stack_len, 0, tid, 1, 0]);
        plan.clone_thread(
            format!("create thread {} ({:?})", t.tid, t.name),
            args,
            list,
        );
    }
    if n > 0 {
        plan.wait_zero("wait until every thread is set up", ready);
    }
    for entry in &m.files {
        entry.plan_after_threads(&mut plan);
    }
    // Timers may signal a thread: they exist now.
    thaw::state::posix_timers::plan_restore(&m.posix_timers, &mut plan, fds.away);
    if fork.is_some() {
        m.process.plan_session(&mut plan);
    }
    // Tagged once filled, before memory-deny-write-execute (which refuses any mprotect of a
    // writable executable mapping, V8's WebAssembly code space) and any seal.
    thaw::state::pkeys::plan_tags(&m.memory, &mut plan);
    m.process.plan_final(&mut plan, fds.transport.is_some());
    for vma in &m.memory {
        vma.plan_seal(&mut plan);
    }
    // Capabilities are per thread, and creating threads with set_tid needs them: every thread
    // drops to the image's own after the last thread exists.
    leader.plan_restore(&mut plan);
    leader.plan_sleep(&mut plan, fds.away);
    leader.plan_sched(&mut plan, nice_of(leader), ioprio_of(leader));
    plan_credentials(&mut plan, creds, drops);
    m.process.plan_cwd(&mut plan);
    // Signals waiting in the queues (the dispositions are set: SIG_IGN would discard them), as
    // the user they are charged to.
    for sig in &leader.pending {
        sig.plan_queue(&mut plan, m.process.pid, Some(leader.tid));
    }
    // Those of the process, each for the thread the kernel would give it to as the threads
    // resume (see signals::target).
    let for_process = |sig: &thaw::state::signals::PendingSignal, plan: &mut Plan| {
        let to = thaw::state::signals::target(&m.threads, m.process.pid, sig.signo);
        sig.plan_queue(plan, m.process.pid, to);
    };
    for sig in &m.signals.pending {
        for_process(sig, &mut plan);
    }
    if alarm_due {
        for_process(&thaw::state::timers::alarm_signal(), &mut plan);
    }
    // A terminal it had is the caller's now (see thaw::state::terminal::resized).
    let had_terminal = m.files.iter().any(|e| e.terminal.is_some());
    if had_terminal && fork.is_none() && (0..=2).any(|fd| thaw::sys::tcgetattr(fd).is_some()) {
        for_process(&thaw::state::terminal::resized(), &mut plan);
    }
    // A child left out at the checkpoint ended while the process was away: its SIGCHLD waits
    // (a standard signal: one stands for all of them, as the kernel's would).
    if let Some(z) = m
        .zombies
        .iter()
        .find(|z| z.left_out && !m.signals.sigchld_ignored())
    {
        for_process(&z.sigchld(creds.uid.real), &mut plan);
    }
    if m.process.dumpable <= 1 {
        // A launcher with a file capability is not dumpable; the process is what it was.
        plan.syscall(
            format!("set dumpable {}", m.process.dumpable),
            libc::SYS_prctl,
            [
                libc::PR_SET_DUMPABLE as u64,
                u64::from(m.process.dumpable),
                0,
                0,
                0,
                0,
            ],
        );
    }
    // oom_score_adj: lowering it protects the process from the OOM killer, a privilege the
    // caller may lack (CAP_SYS_RESOURCE); never below the caller's own.
    let mine = thaw::state::process::oom_score_adj();
    let oom = if m.process.oom_score_adj < mine && !caller_has_cap(CAP_SYS_RESOURCE) {
        errln!(
            "thaw: warning: oom_score_adj raised from {} to yours, {mine}",
            m.process.oom_score_adj
        );
        mine
    } else {
        m.process.oom_score_adj
    };
    thaw::state::process::plan_oom_score_adj(&mut plan, oom, mine);
    if let Some(f) = fork {
        f.plan_go(&mut plan);
    } else if let Some((r, w)) = &fds.gate {
        plan.syscall(
            "close the restorer's copy of the gate's write end",
            libc::SYS_close,
            [w.as_raw_fd() as u64, 0, 0, 0, 0, 0],
        );
        if fds.gate_go {
            let byte = plan.words(&[0]);
            plan.syscall(
                "wait for the launcher's word",
                libc::SYS_read,
                [r.as_raw_fd() as u64, byte, 1, 0, 0, 0],
            );
            plan.expect("the launcher let the process go on", byte, 1);
        }
        let byte = plan.words(&[0]);
        plan.syscall(
            "wait until the launcher holds nothing of the process's",
            libc::SYS_read,
            [r.as_raw_fd() as u64, byte, 1, 0, 0, 0],
        );
    }
    // Every step that can fail has run: one byte on the error pipe tells the launcher so. End of
    // file without it is a restorer that died first (killed, out of memory), not the process.
    let made = plan.words(&[0xff]);
    plan.syscall_any(
        "tell the launcher the process is made",
        libc::SYS_write,
        [fds.error_w.as_raw_fd() as u64, made, 1, 0, 0, 0],
    );
    // Close everything the process did not have (the launcher's descriptors, including the error
    // pipe: from here on a failure can no longer be reported, only seen as the process dying).
    let mut from = 0u64;
    for &keep in fds.keep.iter().chain(std::iter::once(&i32::MAX)) {
        let keep = keep as u64;
        if keep > from {
            plan.syscall_any(
                format!("close fds {from}..{}", keep - 1),
                libc::SYS_close_range,
                [from, keep - 1, 0, 0, 0, 0],
            );
        }
        from = keep + 1;
    }
    for entry in &m.files {
        entry.plan_locks(&mut plan);
    }
    if n > 0 {
        plan.store("let the threads go", go, 1);
        plan.syscall_any(
            "wake the threads",
            libc::SYS_futex,
            [
                go,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64,
                i32::MAX as u64,
                0,
                0,
                0,
            ],
        );
    }
    resume(&mut plan, leader);
    Ok(plan)
}

/// Each AIO context made again where the process had it (see [`thaw::state::aio`]). An
/// instance of a template (`served`) has no descriptor of the image: the events it puts back
/// are read here and staged in its plan.
fn plan_aio(
    plan: &mut Plan,
    m: &thaw::Manifest,
    fds: &Fds,
    payload_off: u64,
    served: bool,
) -> Result<()> {
    use thaw::state::aio::EventSource;
    let rings = m.memory.iter().filter_map(|v| match &v.backing {
        Backing::Aio(r) => Some((v, r)),
        _ => None,
    });
    let mut cpus = None;
    let mut staged_total = 0u64;
    for (vma, ring) in rings {
        let what = format!("AIO context {:#x}", vma.start);
        let cpus = match cpus {
            Some(n) => n,
            None => *cpus.insert(thaw::state::aio::possible_cpus().ok_or_else(|| {
                failed(format!(
                    "{what}: cannot read this machine's possible CPUs (/sys/devices/system/cpu/possible: the ring's size depends on them)"
                ))
            })?),
        };
        let request = thaw::state::aio::setup_request(vma.len(), cpus)
            .map_err(|e| refused(format!("{what}: {e}")))?;
        let staged = match ring.events.filter(|_| served) {
            Some(p) => {
                staged_total += u64::from(ring.unreaped()) * thaw::state::aio::EVENT;
                if staged_total > thaw::state::aio::MAX_STAGED {
                    return Err(refused(format!(
                        "{what}: its ring holds more events not reaped than an instance of thaw serve is given ({} KiB in all): use thaw run for this image",
                        thaw::state::aio::MAX_STAGED >> 10
                    )));
                }
                let image = std::fs::File::from(
                    fds.image
                        .try_clone()
                        .map_err(|e| failed(format!("{what}: {e}")))?,
                );
                Some(
                    read_payload(&image, payload_off, p)
                        .map_err(|e| failed(format!("{what}: {e}")))?,
                )
            }
            None => None,
        };
        let source = match &staged {
            Some(events) => EventSource::Staged {
                events,
                pid: m.process.pid,
            },
            None => EventSource::Image {
                fd: fds.image.as_raw_fd(),
                payload_off,
            },
        };
        // (The launcher's read end of the error pipe is nothing to the process: its number
        // is free for the moment, see `EpollWatch::at`.)
        ring.plan_restore(
            plan,
            (vma.start, vma.len()),
            request,
            fds.error_r.as_raw_fd(),
            source,
        );
    }
    Ok(())
}

/// What a fork does not pass on as it was: `MADV_DONTFORK` ranges (the child would lack them) and
/// guard regions.
fn plan_fork_sensitive(plan: &mut Plan, m: &thaw::Manifest) {
    for r in &m.dontfork {
        r.plan_restore(plan);
    }
    for g in &m.guards {
        g.plan_restore(plan);
    }
}

/// Capabilities and no_new_privs of the calling thread: the image's (already checked to be within
/// the caller's).
/// The launcher's capability bounding set (the caller's: exec never widens it).
fn launcher_bounding() -> u64 {
    static BOUNDING: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOUNDING.get_or_init(|| {
        Credentials::of(std::process::id() as i32).map_or(u64::MAX, |c| c.caps.bounding)
    })
}

/// Capabilities the restorer drops from each thread's bounding set (a process that narrowed its
/// own, under systemd's CapabilityBoundingSet= or in a container, gets it narrow again: a
/// set-uid or file-capability program it runs later gains no more than in its first life). In
/// host mode the restorer starts from the launcher's set; in a new user namespace, from every
/// capability the kernel knows.
fn bounding_drops(c: &Credentials, mode: PidMode) -> u64 {
    let start = match mode {
        PidMode::Host => launcher_bounding(),
        _ => {
            let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(40)
                .min(63);
            u64::MAX >> (63 - last)
        }
    };
    start & !c.caps.bounding
}

fn plan_credentials(plan: &mut Plan, c: &Credentials, drops: u64) {
    // Before capset: dropping needs CAP_SETPCAP, which the image's own sets may lack.
    for cap in (0..64).filter(|b| drops & (1u64 << b) != 0) {
        plan.syscall(
            format!("drop capability {cap} from the bounding set"),
            libc::SYS_prctl,
            [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
        );
    }
    // _LINUX_CAPABILITY_VERSION_3 header, then two data structs (low and high 32 bits).
    let header = plan.words(&[0x2008_0522]);
    let lo = |v: u64| v & 0xffff_ffff;
    let hi = |v: u64| v >> 32;
    let data = plan.words(&[
        lo(c.caps.effective) | (lo(c.caps.permitted) << 32),
        lo(c.caps.inheritable) | (hi(c.caps.effective) << 32),
        hi(c.caps.permitted) | (hi(c.caps.inheritable) << 32),
    ]);
    plan.syscall(
        format!(
            "set capabilities (effective {:#x}, permitted {:#x})",
            c.caps.effective, c.caps.permitted
        ),
        libc::SYS_capset,
        [header, data, 0, 0, 0, 0],
    );
    plan.syscall(
        "clear ambient capabilities",
        libc::SYS_prctl,
        [
            libc::PR_CAP_AMBIENT as u64,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
            0,
            0,
            0,
            0,
        ],
    );
    for cap in (0..64).filter(|b| c.caps.ambient & (1u64 << b) != 0) {
        plan.syscall(
            format!("raise ambient capability {cap}"),
            libc::SYS_prctl,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_RAISE as u64,
                cap,
                0,
                0,
                0,
            ],
        );
    }
    if c.no_new_privs {
        plan.syscall(
            "set no_new_privs",
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        );
    }
}

/// Where the process will get its PID: `requested`, with `auto` resolved, after checking that it
/// is possible here.
pub fn resolve_pid_mode(image: &Image, requested: PidMode) -> Result<PidMode> {
    let m = image.manifest();
    let pid = m.process.pid;
    if !sys::probe_set_tid() {
        return Err(refused("this kernel's clone3 does not support set_tid"));
    }
    // An id at or above this namespace's pid_max (an image from a machine with a higher one)
    // cannot be made here.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let too_high = pid_max.and_then(|max| {
        std::iter::once(pid)
            .chain(m.threads.iter().map(|t| t.tid))
            .chain(m.zombies.iter().map(|z| z.pid))
            .find(|&id| id >= max)
            .map(|id| (id, max))
    });
    let host_ok = may_use_host_pids();
    if let (PidMode::Host, Some((id, max))) = (requested, too_high) {
        return Err(refused(format!(
            "id {id} is above this PID namespace's limit (kernel.pid_max = {max}): it cannot be made here; use --pid-mode ns"
        )));
    }
    let host_ok = host_ok && too_high.is_none();
    // Only where host mode is possible and wanted (it may wait for a zombie to be reaped).
    let taken = if host_ok && requested != PidMode::Ns {
        taken_id(m, requested == PidMode::Host)
    } else {
        None
    };
    let mode = match requested {
        PidMode::Auto if host_ok && taken.is_none() => PidMode::Host,
        PidMode::Auto => PidMode::Ns,
        PidMode::Host if !host_ok => {
            return Err(refused(format!(
                "--pid-mode host needs root or CAP_CHECKPOINT_RESTORE over this PID namespace to restore PID {pid}; use --pid-mode ns"
            )))
        }
        PidMode::Host if taken.is_some() => {
            let id = taken.unwrap_or(pid);
            let what = if id == pid {
                "PID"
            } else if m.zombies.iter().any(|z| z.pid == id && z.left_out) {
                "the PID of the child left out at the checkpoint (the first life's, still running?; the restored process sees it killed),"
            } else if m.zombies.iter().any(|z| z.pid == id) {
                "the PID of zombie child"
            } else {
                "thread id"
            };
            return Err(refused(format!(
                "{what} {id} is in use in this PID namespace; use --pid-mode ns to restore it in a new one"
            )));
        }
        other => other,
    };
    if mode == PidMode::Ns && pid == 1 {
        return Err(refused(
            "an image of PID 1 cannot be restored under a namespace init",
        ));
    }
    Ok(mode)
}

/// Restores `image` and supervises the restored process; returns the exit status to use.
/// `req.pid_mode` is resolved (see [`resolve_pid_mode`]).
/// Restores `image` as `req` says; `ahead` verifies chunks of its working set on another thread.
/// The caller has called [`prepare_descriptor_table`] first.
pub fn run<'a>(image: &'a Image, req: Request, ahead: &'a ahead::Ahead<'a>) -> Result<i32> {
    let m = image.manifest();
    // First: in another user namespace the image's credentials mean other ids.
    same_root(m, req.pid_mode == PidMode::Ns)?;
    let target = check_policy(image, req.elevated, req.as_caller)?;
    let pid = m.process.pid;
    let mode = req.pid_mode;
    let timens = timens::decide(&m.clocks, mode, req.allow_clock_jump)?;
    if mode == PidMode::Ns {
        ns_identities(m)?;
    }
    // Timers ran on while the process was away, as its clocks did (see Away).
    let away = m.clocks.away(thaw::state::clocks::now());
    let mut fds = prepare_fds(image, &req.payload, req.lazy, &req.listeners, away)?;
    fds.gate = Some(gate(&fds)?);
    fds.gate_go = req.last_word.is_some();
    let args = RestoreArgs {
        args: req.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv
            })
            .collect(),
    };
    let region = Region::reserve(m)?;
    let plan = build_plan(image, &fds, &region, &args, &target.creds, mode, None)?;
    let (entry, control, stack_top) = region.install(&plan, fds.error_w.as_raw_fd())?;
    // With lazy memory, a second holder of the userfaultfd (see guardian.rs), started while the
    // launcher has its signals still.
    let guardian = match fds.transport {
        Some(_) => Some(guardian::Guardian::spawn()?),
        None => None,
    };
    // Signals stay blocked from here until the process (or the namespace init) exists, so that
    // none reaches the new process with the launcher's handlers.
    let prepared = req.timing.map(|(start, _)| start.elapsed());
    let old_mask = sys::set_sigmask(u64::MAX);
    let clocks = timens.then_some(&m.clocks);
    let start = Start {
        pid,
        entry,
        control,
        stack_top,
    };
    let supervised = match mode {
        PidMode::Ns => spawn_in_namespace(start, &fds, clocks),
        _ => clocks.map_or(Ok(()), timens::enter).and_then(|()| {
            start.clone3().map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    refused(format!("PID {pid} is in use; use --pid-mode ns"))
                } else {
                    failed(format!("cannot create the process with PID {pid}: {e}"))
                }
            })
        }),
    };
    let child = match supervised {
        Ok(c) => c,
        Err(e) => {
            sys::set_sigmask(old_mask);
            return Err(e);
        }
    };
    die_for_tests(req.elevated);
    // From here on the launcher holds nothing of the process's: a pipe or socket end kept here
    // would keep its peer from ever seeing end of file, a listening socket would stay bound.
    let Fds {
        error_w,
        error_r,
        transport,
        image: image_fd,
        exe,
        _mapped_files: mapped_files,
        shared,
        placed,
        gate,
        ..
    } = fds;
    // The launcher keeps only its end of the socket: end of file there means the process died
    // before handing over its userfaultfd. The restorer waits for the handshake: it comes first.
    let sock = transport.map(|t| t.parent_end);
    let handover = sock.as_ref().and_then(|s| {
        let ws = &req.working_set;
        let watch = ws.record_to.is_some() || !ws.gate.is_open();
        lazy::handshake(s, guardian.as_ref(), child, watch)
    });
    drop((image_fd, exe, mapped_files, shared, placed, req.listeners));
    drop(error_w);
    let last_word = req.last_word;
    std::thread::scope(|scope| {
        // Spawned with every signal blocked: the forwarding handler runs on the main thread.
        let ws = &req.working_set;
        let server = sock.zip(handover).map(|(sock, handover)| {
            std::thread::Builder::new().spawn_scoped(scope, move || {
                lazy::Server::new(
                    image,
                    &ws.replay,
                    &ws.gate,
                    ws.hold_quiet,
                    ws.record_to.is_some(),
                    Some(ahead),
                )
                .run(sock, handover, child, guardian)
            })
        });
        // A thread that cannot be created (a pids limit, RLIMIT_NPROC): the process, waiting at
        // its gate, is killed and reaped before the launcher says so (in ns mode, the helper:
        // the namespace's init and all in it die with it).
        let server = match server.transpose() {
            Ok(server) => server,
            Err(e) => {
                sys::kill(child, libc::SIGKILL);
                let _ = sys::wait(child);
                sys::set_sigmask(old_mask);
                return Err(failed(format!(
                    "cannot start the thread that serves the memory of the process (PID {pid}), which was killed: {e}"
                )));
            }
        };
        sys::forward_signals(child, &FORWARDED)
            .map_err(|e| failed(format!("cannot forward signals: {e}")))?;
        sys::set_sigmask(old_mask);
        // Last: end of file on the gate lets the restorer go on, after a byte where a last word
        // is asked (asked with signals forwarded, as they are once the process exists). Called
        // off, the process gets no byte and fails there; the launcher's signals are its own
        // again (none goes to a PID about to be freed).
        let go = last_word.map(|w| w.0());
        if go == Some(false) {
            sys::stop_forwarding(&FORWARDED);
        }
        // The terminal modes the process had set on its standard descriptors, lent to the
        // caller's terminals until it has ended (see thaw::state::terminal); before it runs.
        let _lent = (go != Some(false)).then(|| {
            let (lent, warnings) = thaw::state::terminal::Lent::lend(&m.files);
            for w in warnings {
                errln!("thaw: warning: {w}");
            }
            lent
        });
        if let (Some((_, w)), Some(true)) = (&gate, go) {
            // Not written (the restorer is gone): end of file fails it all the same.
            let _ = sys::write_byte(w, 1);
        }
        drop(gate);
        supervise(
            (child, mode != PidMode::Ns),
            error_r,
            &plan,
            req.timing.zip(prepared),
            server,
            (ws, &ahead.hits),
        )
    })
}

/// Waits for the restorer's report, then for the process; returns the exit status to use.
/// `stops_job`: whether the launcher stops when its child does (host mode; in ns mode the
/// namespace's init stops the job, the launcher with it, and the child is the helper).
fn supervise(
    (child, stops_job): (i32, bool),
    error_r: OwnedFd,
    plan: &Plan,
    timing: Option<(
        (std::time::Instant, std::time::Duration),
        std::time::Duration,
    )>,
    server: Option<std::thread::ScopedJoinHandle<'_, Result<lazy::Served>>>,
    (ws, ahead_hits): (&working_set::WorkingSet, &std::sync::atomic::AtomicU64),
) -> Result<i32> {
    // A report on the pipe means a step failed; end of file means the process is restored.
    let mut report = [0u8; 16];
    let mut got = 0;
    let mut f = std::fs::File::from(error_r);
    while got < 16 {
        match f.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    // Told once the process has ended: a write to a standard output it shares (2>&1) would
    // be taken for its first output (see lazy::Server).
    let restored = timing.map(|((start, verified), prepared)| {
        let restored = start.elapsed();
        format!(
            "thaw: timing: open+verify {:.1} ms, checks+files+plan {:.1} ms, process creation+restorer {:.1} ms ({} steps), total {:.1} ms",
            ms(verified),
            ms(prepared - verified),
            ms(restored - prepared),
            plan.steps().len(),
            ms(restored)
        )
    });
    // Stopped as a job, the launcher stops with it; stopped by a SIGSTOP, it goes on (serving
    // its memory): the sender continues the process alone, and a stopped launcher would wait
    // for ever.
    let waited = sys::wait_stopping_with(child, |_, signal| {
        if stops_job && sys::job_control_stop(signal) {
            sys::stop_with(child)
        }
    });
    if let Some(line) = restored {
        errln!("{line}");
    }
    let served = server.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(Failure::new(Code::Internal, "the memory server panicked")))
    });
    // A server that could not start makes the restorer fail at its next step: its own message
    // says why.
    let served = match served {
        Some(Err(f)) if got == 16 => return Err(f),
        other => other,
    };
    if got == 16 {
        let step = u64::from_ne_bytes(report[..8].try_into().expect("8")) as usize;
        let errno = u64::from_ne_bytes(report[8..].try_into().expect("8")) as i32;
        return Err(failed(format!(
            "restore failed at step {step} ({}): {}",
            plan.label(step),
            std::io::Error::from_raw_os_error(errno)
        )));
    }
    // Killed before the process was made. (In ns mode the namespace's init passes a signal on
    // as 128 + N; a helper or init that failed has said why, with its own status.)
    let killed = match waited {
        Ok((_, sys::Exit::Signal(s))) => Some(s),
        Ok((_, sys::Exit::Code(c))) if c > 128 => Some(c - 128),
        _ => None,
    };
    // (Unless the memory server killed it: its own error says why, below.)
    let server_failed = matches!(served, Some(Err(_)));
    if let (0, Some(signal), false) = (got, killed, server_failed) {
        let why = if signal == libc::SIGKILL {
            "killed: by the kernel for lack of memory, perhaps, where a memory limit is below what the image needs".to_owned()
        } else {
            format!("signal {signal}")
        };
        return Err(failed(format!(
            "the restorer ended before the process was made ({why}): nothing of the image ran"
        )));
    }
    if let Some(served) = served {
        let served = served?;
        ws.save(served.record.as_ref());
        let st = served.stats;
        if timing.is_some() {
            errln!(
                "thaw: timing: lazy memory: {} faults on image pages, {} on zero pages, {} chunks ({:.1} MiB) filled in {:.1} ms, {} forks followed, first output {}, working set of {} touches ({} early): {} brought in ahead, {} chunks verified ahead, {} recorded",
                st.faults,
                st.zero_faults,
                st.chunks,
                st.bytes as f64 / 1048576.0,
                ms(st.filled_in),
                st.forks,
                st.first_output.map_or("not seen".into(), |t| format!(
                    "after {:.1} ms",
                    ms(t)
                )),
                ws.replay.touches.len(),
                ws.replay.early,
                st.replayed,
                ahead_hits.load(std::sync::atomic::Ordering::Relaxed),
                served.new_touches,
            );
        }
    }
    let (_, how) =
        waited.map_err(|e| failed(format!("cannot wait for the restored process: {e}")))?;
    Ok(how.status())
}

/// Test hook (fault injection): with `THAW_TEST_DIE_AFTER_CLONE` set, the launcher kills itself
/// as soon as the process (or the namespace helper) exists, before it hands over anything: the
/// moment a launcher killed from outside is hardest to hit in.
fn die_for_tests(elevated: bool) {
    // Read like every variable: by an unprivileged launcher only.
    if !elevated && std::env::var_os("THAW_TEST_DIE_AFTER_CLONE").is_some() {
        sys::kill(std::process::id() as i32, libc::SIGKILL);
    }
}

/// Namespace mode: a forked helper creates a new user + PID namespace and forks its init, which
/// creates the restored process inside; each exits with the status of the one below. The launcher
/// itself stays outside, with its threads and the capabilities it serves lazy memory with.
/// Returns the helper's PID.
fn spawn_in_namespace(
    start: Start,
    fds: &Fds,
    clocks: Option<&thaw::state::clocks::Clocks>,
) -> Result<i32> {
    let launcher = std::process::id() as i32;
    let helper = sys::fork().map_err(|e| failed(format!("cannot fork: {e}")))?;
    if helper != 0 {
        return Ok(helper);
    }
    let status = namespace_helper(launcher, start, fds, clocks).unwrap_or_else(|f| {
        errln!("thaw: {}", f.message);
        f.code as i32
    });
    // Not std::process::exit: its clean-up takes locks of the runtime another launcher thread
    // may have held when this child was forked (a thread ending, as the verifier does).
    sys::exit_now(status);
}

/// Where the restored process starts: its PID, and the restorer's entry, control block and stack.
#[derive(Debug, Clone, Copy)]
struct Start {
    pid: i32,
    entry: u64,
    control: u64,
    stack_top: u64,
}

impl Start {
    fn clone3(self) -> std::io::Result<i32> {
        // (The process starts with this thread's capabilities: the restorer's steps that need
        // them, creating threads with their IDs, run before it drops to the image's.)
        crate::privilege::privileged(|| {
            sys::clone3_into_restorer(self.pid, self.entry, self.control, self.stack_top)
        })
    }
}

/// The helper's side of [`spawn_in_namespace`]: returns the exit status to end with.
fn namespace_helper(
    launcher: i32,
    start: Start,
    fds: &Fds,
    clocks: Option<&thaw::state::clocks::Clocks>,
) -> Result<i32> {
    if !sys::die_with_parent(launcher) {
        return Err(failed("the launcher ended during the restore"));
    }
    // The launcher alone reads reports and serves memory: the ends it waits on for end of file
    // are closed here (the process's own ends once it exists, below).
    sys::close(fds.error_r.as_raw_fd());
    if let Some(t) = &fds.transport {
        sys::close(t.parent_end.as_raw_fd());
    }
    let (uid, gid) = (sys::geteuid(), sys::getegid());
    sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS).map_err(|e| {
        // ENOSPC: a per-user or system-wide namespace limit was reached; name it.
        let limit = if e.raw_os_error() == Some(libc::ENOSPC) {
            "; a namespace limit is reached: see the sysctls user.max_user_namespaces, user.max_pid_namespaces and user.max_mnt_namespaces (each restore in ns mode holds one of each while it runs)"
        } else {
            ""
        };
        refused(format!("cannot create a user and PID namespace: {e}{limit}"))
    })?;
    // An elevated launcher is not dumpable, so its /proc files are root's and it could not
    // write its own maps. In a user namespace of its own it holds no privilege outside: being
    // dumpable (its user may trace it) gives nothing away.
    thaw::sys::set_dumpable(1);
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| failed(format!("cannot write {file}: {e}")))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    if let Some(c) = clocks {
        timens::enter(c)?;
    }
    let helper = std::process::id() as i32;
    let init = sys::fork().map_err(|e| failed(format!("cannot fork the namespace init: {e}")))?;
    if init == 0 {
        namespace_init(helper, start, fds);
    }
    fds.close_process_side();
    sys::forward_signals(init, &FORWARDED)
        .map_err(|e| failed(format!("cannot forward signals: {e}")))?;
    sys::set_sigmask(0);
    loop {
        match sys::wait(init) {
            Ok((_, how)) => return Ok(how.status()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(format!("cannot wait for the namespace init: {e}"))),
        }
    }
}

/// In the namespace's init: the pidfds of processes that had exited, made again by children of
/// its own (inside the namespace) at the numbers the launcher's were.
fn dead_pidfds_here(fds: &Fds) -> std::io::Result<()> {
    let mut dead = thaw::state::pidfd::DeadPidfds::default();
    for (number, d, flags) in &fds.dead {
        let fd = dead.open(d, *flags)?;
        sys::dup2_cloexec(fd.as_raw_fd(), *number)?;
    }
    dead.reap();
    Ok(())
}

/// The namespace's init (PID 1): gives the namespace its own /proc (so that /proc/self agrees
/// with getpid() inside), creates the restored process, then reaps until it ends.
fn namespace_init(helper: i32, start: Start, fds: &Fds) -> ! {
    // Its parent is outside the namespace, where getppid() cannot see it: if the helper is gone
    // already, so is the launcher, and the restorer cannot hand its memory to anyone.
    let _ = sys::die_with_parent(helper);
    if let Err(e) = sys::mount_private_proc() {
        errln!("thaw: warning: /proc in the namespace still shows outer PIDs: {e}");
    }
    if let Err(e) = dead_pidfds_here(fds) {
        errln!("thaw: cannot make a pidfd of a process that has exited in the namespace: {e}");
        sys::exit_now(Code::RestoreFailed as i32);
    }
    let status = match start.clone3() {
        Ok(child) => {
            // The init holds nothing of the process's either (see `run`).
            fds.close_process_side();
            let _ = sys::forward_signals(child, &FORWARDED);
            sys::set_sigmask(0);
            // The process stopped: its group is the caller's job, which stops with it (the
            // init itself is not stopped by a signal from its own namespace, and goes on
            // waiting; the shell's `fg` continues the group).
            // (Only as a job, as in host mode: see `supervise`.)
            let stop_job = |p: i32, signal: i32| {
                if p == child && sys::job_control_stop(signal) {
                    sys::kill(0, libc::SIGSTOP);
                }
            };
            loop {
                match sys::wait_stopping_with(-1, stop_job) {
                    Ok((p, how)) if p == child => break how.status(),
                    Ok(_) => continue,
                    Err(_) => break Code::RestoreFailed as i32,
                }
            }
        }
        Err(e) => {
            errln!(
                "thaw: cannot create the process with PID {} in the new namespace: {e}",
                start.pid
            );
            Code::RestoreFailed as i32
        }
    };
    sys::exit_now(status);
}
