//! The template `thaw serve` forks instances from: a process that holds the image's memory,
//! restored and verified once, and waits in the restorer for requests. Each request forks an
//! instance (copy-on-write: anonymous memory stays anonymous and shared until written) into a
//! PID namespace of its own, where it gets the image's PID, and runs the rest of the plan there:
//! its own descriptors, arguments, threads, timers and credentials.
//!
//! A request is one message on the template's socket: the instance's arguments (postcard
//! [`RestoreArgs`]) and descriptors, in the order of the constants below, which the template
//! receives at consecutive numbers from `base` up (every lower number is held by a placeholder,
//! so the kernel's choice is known when the plan is built).

use std::cell::Cell;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use thaw::image::Image;
use thaw::restore::{Plan, RestoreArgs};
use thaw::state::clocks::Away;

use super::{failed, refused, Fds, PidMode, Region};
use crate::exit::{Code, Failure, Result};
use crate::sys;

/// What the template receives to fork an instance, at `base` up: the PID namespace to fork it
/// into, and the instance's end of a socket of its own.
const PIDNS: RawFd = 0;
// The template enters the namespace of the first descriptor it receives (`OP_SERVE`).
const _: () = assert!(PIDNS == 0);
const PRIVATE: RawFd = 1;
/// What the instance then receives on that socket with its arguments (when a caller comes),
/// at `base + REQUEST` up.
const REQUEST: RawFd = 2;
const ERROR: RawFd = 0;
const MNTNS: RawFd = 1;
const GO: RawFd = 2;
const STDIO: RawFd = 3;
const PLACED: RawFd = 6;

/// The largest arguments and environment a request may carry (postcard bytes).
pub const ARGS_MAX: usize = 128 * 1024;

/// Where the template's plan forks, and what the instances' steps need to know about it.
#[derive(Debug)]
pub struct ForkPoint {
    /// The template's end of its socket.
    ctl: RawFd,
    /// The first number a request's descriptors land at.
    base: RawFd,
    pid: i32,
    /// The process's reopened descriptors: number and close-on-exec, in the order sent.
    targets: Vec<(RawFd, bool)>,
    /// Its io_uring instances, in order: each instance makes its own (the kernel passes no
    /// io_uring descriptor over a socket), on memory it receives after its files.
    rings: Vec<ServedRing>,
    args: Cell<u64>,
}

/// An io_uring instance of the image, as each instance of the template makes it again.
#[derive(Debug)]
struct ServedRing {
    fd: RawFd,
    cloexec: bool,
    /// Its duplicates: number and close-on-exec.
    dups: Vec<(RawFd, bool)>,
    ring: thaw::state::io_uring::Ring,
    /// The process's mappings of it: start, length, protection, flags, mmap offset.
    vmas: Vec<(u64, u64, u32, u32, u64)>,
}

impl ServedRing {
    /// The image's io_uring instances; `Err` names one an instance cannot make again.
    fn of(m: &thaw::Manifest) -> Result<Vec<ServedRing>> {
        let mut rings = Vec::new();
        for e in m.files.iter().filter(|e| e.dup_of.is_none()) {
            let thaw::state::files::FdKind::IoUring(ring) = &e.kind else {
                continue;
            };
            let vmas: Vec<(&thaw::state::memory::Vma, u64)> = m
                .memory
                .iter()
                .filter_map(|v| match v.backing {
                    thaw::state::memory::Backing::IoRing { fd, offset } if fd == e.fd => {
                        Some((v, offset))
                    }
                    _ => None,
                })
                .collect();
            // Mapped over the template's mapping: what the restore set on that (advice, a NUMA
            // policy) would be lost, and the instance writes into it.
            let plain = vmas.iter().all(|(v, _)| {
                v.advice & !thaw::state::memory::VmaAdvice::MAYWRITE == 0
                    && v.numa.is_none()
                    && v.prot & libc::PROT_WRITE as u32 != 0
            });
            if !plain {
                return Err(refused(format!(
                    "fd {} (io_uring): its memory is mapped without write access or with advice or a memory policy, which an instance of thaw serve does not make again: restore this image with thaw run",
                    e.fd
                )));
            }
            let spans: Vec<(u64, u64, u64)> = vmas
                .iter()
                .map(|(v, off)| (v.start, v.len(), *off))
                .collect();
            ring.servable(&spans).map_err(|why| {
                refused(format!(
                    "fd {} (io_uring): {why}: restore this image with thaw run",
                    e.fd
                ))
            })?;
            rings.push(ServedRing {
                fd: e.fd,
                cloexec: e.cloexec,
                dups: m
                    .files
                    .iter()
                    .filter(|d| d.dup_of == Some(e.fd))
                    .map(|d| (d.fd, d.cloexec))
                    .collect(),
                ring: ring.clone(),
                vmas: vmas
                    .iter()
                    .map(|(v, off)| (v.start, v.len(), v.prot, v.map_flags, *off))
                    .collect(),
            });
        }
        rings.sort_unstable_by_key(|r| r.fd);
        Ok(rings)
    }

    /// Whether number `fd` is this ring's or a duplicate's.
    fn holds(&self, fd: RawFd) -> bool {
        self.fd == fd || self.dups.iter().any(|d| d.0 == fd)
    }
}

impl ForkPoint {
    /// Steps at the fork point: the template keeps only its socket and error pipe, fills every
    /// lower number, says it is ready, and loops; each instance then drops those, takes its own
    /// error pipe and enters its mount namespace (its own /proc).
    pub(super) fn plan(&self, plan: &mut Plan, error: &OwnedFd, m: &thaw::Manifest) {
        let err = error.as_raw_fd();
        let mut keep = [self.ctl, err];
        keep.sort_unstable();
        let mut from = 0u64;
        for k in keep
            .iter()
            .map(|&k| k as u64)
            .chain(std::iter::once(u32::MAX as u64))
        {
            if k > from {
                plan.syscall_any(
                    format!("template: close fds {from}..{}", k - 1),
                    libc::SYS_close_range,
                    [from, k - 1, 0, 0, 0, 0],
                );
            }
            from = k + 1;
        }
        for n in (0..self.base).filter(|n| !keep.contains(n)) {
            plan.syscall(
                format!("template: hold fd {n}"),
                libc::SYS_dup3,
                [self.ctl as u64, n as u64, 0, 0, 0, 0],
            );
        }
        let ready = plan.data(b"r");
        plan.syscall(
            "template: tell the server it is ready",
            libc::SYS_write,
            [self.ctl as u64, ready, 1, 0, 0, 0],
        );
        // The template's own requests: one byte and two descriptors.
        let msghdr = |plan: &mut Plan, buf: u64, len: usize, fds: usize| {
            let iov = plan.words(&[buf, len as u64]);
            let cap = 16 + (4 * fds).next_multiple_of(8) as u64;
            let control = plan.data(&vec![0u8; cap as usize]);
            (plan.words(&[0, 0, iov, 1, control, cap, 0]), cap)
        };
        let byte = plan.data(&[0u8; 8]);
        let (own_msghdr, own_cap) = msghdr(plan, byte, 1, 2);
        let tid = plan.words(&[self.pid as u64]);
        // CLONE_PARENT: the server is the instance's parent (it reports the exit status), and
        // the signal it gets is the template's own (clone3 takes no other with this flag).
        let clone_args = plan.words(&[libc::CLONE_PARENT as u64, 0, 0, 0, 0, 0, 0, 0, tid, 1, 0]);
        let length = m.process.restore_cell + 32;
        let own_length = plan.words(&[0]);
        plan.serve(
            format!("template: wait for requests, fork PID {}", self.pid),
            [
                self.ctl as u64,
                own_msghdr,
                clone_args,
                self.base as u64,
                own_length,
                own_cap,
            ],
        );
        // The instance, forked ahead of its caller, waits for its arguments and descriptors.
        let buf = plan.data(&vec![0u8; ARGS_MAX]);
        self.args.set(buf);
        let fds = PLACED as usize + self.targets.len() + self.rings.len();
        let (request, _) = msghdr(plan, buf, ARGS_MAX, fds);
        let base = self.base as u64;
        plan.recv(
            "instance: wait for a caller",
            self.base + PRIVATE,
            request,
            length,
        );
        let req = base + REQUEST as u64;
        plan.syscall_any(
            "instance: close the template's fds",
            libc::SYS_close_range,
            [0, base - 1, 0, 0, 0, 0],
        );
        plan.syscall(
            "instance: take its error pipe",
            libc::SYS_dup3,
            [req + ERROR as u64, err as u64, 0, 0, 0, 0],
        );
        plan.syscall(
            "instance: enter its mount namespace",
            libc::SYS_setns,
            [req + MNTNS as u64, libc::CLONE_NEWNS as u64, 0, 0, 0, 0],
        );
        // Its own io_uring instances, on the memory received after its files (mapped over the
        // template's, which its instances would all share).
        let first = req as RawFd + PLACED + self.targets.len() as RawFd;
        for (i, r) in self.rings.iter().enumerate() {
            r.ring
                .plan_instance(plan, r.fd, r.cloexec, first + i as RawFd, &r.vmas);
            for &(dup, cloexec) in &r.dups {
                plan.syscall(
                    format!("io_uring fd {}: its duplicate {dup}", r.fd),
                    libc::SYS_dup3,
                    [
                        r.fd as u64,
                        dup as u64,
                        if cloexec { libc::O_CLOEXEC as u64 } else { 0 },
                        0,
                        0,
                        0,
                    ],
                );
            }
        }
    }

    /// The instance's last step before it reports and runs (after everything else it sets up,
    /// which so overlaps with the server's checks of the caller): the server still holds
    /// copies of the instance's files as it starts it, and a pipe whose other end the caller
    /// closes would not reach end of file; and the server has not yet accepted the caller. It
    /// goes on once the server holds none and has (end of file here means the server is gone,
    /// and the namespace with it).
    pub(super) fn plan_go(&self, plan: &mut Plan) {
        let byte = plan.data(&[0]);
        plan.syscall(
            "instance: wait until the caller is accepted and only it holds its files",
            libc::SYS_read,
            [(self.base + REQUEST + GO) as u64, byte, 1, 0, 0, 0],
        );
    }

    /// The arguments' buffer (after [`ForkPoint::plan`]).
    pub(super) fn args_buffer(&self) -> u64 {
        self.args.get()
    }

    /// (number in the process, number received, close-on-exec) of every descriptor an instance
    /// gets: the requester's standard ones where the image had them, then its reopened files.
    pub(super) fn placements(&self, m: &thaw::Manifest) -> Vec<(RawFd, RawFd, bool)> {
        // (A descriptor that shared a standard one's description is the caller's one too.)
        let stdio = m.files.iter().filter_map(|e| {
            let s = e.standard()?;
            Some((e.fd, self.base + REQUEST + STDIO + s, e.cloexec))
        });
        let placed =
            self.targets.iter().enumerate().map(|(i, &(fd, cloexec))| {
                (fd, self.base + REQUEST + PLACED + i as RawFd, cloexec)
            });
        stdio.chain(placed).collect()
    }
}

/// A running template.
pub struct Template {
    image: Image,
    payload: std::fs::File,
    pid: i32,
    ctl: Mutex<OwnedFd>,
    error: OwnedFd,
    plan: Plan,
    targets: Vec<RawFd>,
    /// The io_uring instances each instance makes (see `ServedRing`).
    rings: Vec<ServedRing>,
}

/// What an instance needs besides its arguments: its mount namespace, its error pipe, the pipe
/// it waits on until only it holds its files (see [`ForkPoint::plan`]), the requester's
/// standard descriptors.
pub struct InstanceFds<'a> {
    pub mntns: &'a OwnedFd,
    pub error: &'a OwnedFd,
    pub go: &'a OwnedFd,
    pub stdio: [&'a OwnedFd; 3],
}

impl Template {
    /// Restores `image`'s memory into a new template process and waits until it is ready.
    /// `payload` is the verified payload (a sealed private copy).
    pub fn start(image: Image, payload: std::fs::File, allow_clock_jump: bool) -> Result<Self> {
        let m = image.manifest();
        if let Some(perf) = m
            .shared
            .iter()
            .filter_map(|o| o.file.as_ref())
            .find(|f| f.keep_name)
        {
            // (Each instance would need a file of its own under the one name.)
            return Err(refused(format!(
                "the image holds HotSpot's performance-data file {}; instances of one template would share it with each other: start the JVM with -XX:+PerfDisableSharedMem for an image to serve, or use thaw run",
                perf.path
            )));
        }
        if !m.shared.is_empty() {
            return Err(refused(format!(
                "the image holds {} shared memory object(s) (memfd, /dev/shm or MAP_SHARED|MAP_ANONYMOUS); instances of one template would share them with each other: use thaw run for this image",
                m.shared.len()
            )));
        }
        if m.process.pid == 1 {
            return Err(refused(
                "an image of PID 1 cannot be restored under a namespace init",
            ));
        }
        // An instance runs in a PID namespace of its own, where a stand-in made out here for a
        // process that had exited would not be one (no exit status, EINVAL rather than ESRCH).
        if let Some(e) = m
            .files
            .iter()
            .find(|e| matches!(&e.kind, thaw::state::files::FdKind::Pidfd(p) if p.dead.is_some()))
        {
            return Err(refused(format!(
                "fd {}: a pidfd of a process that has exited cannot be given to serve's instances; restore this image with thaw run",
                e.fd
            )));
        }
        // Which of a caller's standard descriptors such a one stands for is checked against
        // the caller's at restore; an instance's caller comes later.
        if let Some(e) = m.files.iter().find(|e| e.standard_set.count_ones() > 1) {
            return Err(refused(format!(
                "fd {}: shared one open file description with several of the process's standard descriptors (a terminal), which an instance's caller need not have as one; restore this image with thaw run",
                e.fd
            )));
        }
        // Children are not passed on by a fork: the template's would not be the instances'.
        if let Some(z) = m.zombies.first() {
            let what = if z.left_out {
                "child left out at the checkpoint (a restored process has it as a child that was killed)"
            } else {
                "zombie child"
            };
            return Err(refused(format!(
                "{what} {} ({}): a child of the template would not be one of its instances; restore this image with thaw run",
                z.pid, z.comm
            )));
        }
        // Instances share the template's listeners: a connection waiting in one would be one
        // instance's, not each one's.
        if let Some(l) = m.files.iter().find_map(|e| match &e.kind {
            thaw::state::files::FdKind::Socket(thaw::state::sockets::Socket::Listener(l))
                if !l.pending.is_empty() =>
            {
                Some(l)
            }
            _ => None,
        }) {
            return Err(refused(format!(
                "socket:[{}]: connections of the process wait to be accepted by one of its listeners; instances share the template's listeners, so the connections would be one instance's: restore this image with thaw run",
                l.ino
            )));
        }
        // A netlink socket is one port ID: shared by the instances, the kernel's answers to one
        // would go to whichever read first.
        if let Some(n) = m.files.iter().find_map(|e| match &e.kind {
            thaw::state::files::FdKind::Socket(thaw::state::sockets::Socket::Netlink(n)) => Some(n),
            _ => None,
        }) {
            return Err(refused(format!(
                "socket:[{}]: a {} would be shared by every instance (one port ID: the kernel's answers to one would reach whichever reads first); open it after restore, or restore this image with thaw run",
                n.ino,
                n.describe()
            )));
        }
        // A TCP connection is one: every instance would hold it.
        if let Some(t) = m.files.iter().find_map(|e| match &e.kind {
            thaw::state::files::FdKind::Socket(thaw::state::sockets::Socket::Tcp(t)) => Some(t),
            _ => None,
        }) {
            return Err(refused(format!(
                "socket:[{}]: a {} would be every instance's; restore this image with thaw run",
                t.ino,
                t.describe()
            )));
        }
        // An instance's standard descriptors are its caller's; the template's epoll instance
        // would go on watching the template's own.
        if let Some((epfd, w, _)) = thaw::state::epoll::standard_watches(&m.files).first() {
            return Err(refused(format!(
                "fd {epfd} (epoll) watches fd {}: an instance's standard descriptors are its caller's, which the template's epoll instance cannot watch; restore this image with thaw run",
                w.fd
            )));
        }
        let target = super::check_policy(&image, false, false)?;
        // (An instance is in the server's user namespace.)
        super::same_root(m, false)?;
        // Instances start from the plan made here, at different times: their timers keep the
        // time they had left at the checkpoint (docs/serve.md).
        // (io_uring instances are made by each instance itself; refused before the template's
        // are made.)
        let rings = ServedRing::of(m)?;
        let fds: Fds = super::prepare_fds(&image, &payload, None, &[], Away::default())?;
        // (Those that shared a standard descriptor's description are the caller's, see
        // `placements`.)
        let standard = |fd: RawFd| m.files.iter().any(|e| e.fd == fd && e.standard().is_some());
        let targets: Vec<(RawFd, bool)> = fds
            .placed
            .iter()
            .filter(|(fd, ..)| !standard(*fd) && !rings.iter().any(|r| r.holds(*fd)))
            .map(|(fd, _, cloexec)| (*fd, *cloexec))
            .collect();
        if (PLACED as usize) + targets.len() + rings.len() > sys::MAX_PASSED_FDS {
            return Err(refused(format!(
                "the process has {} descriptors to reopen (and {} io_uring instances); an instance can be given at most {}",
                targets.len(),
                rings.len(),
                sys::MAX_PASSED_FDS - PLACED as usize
            )));
        }
        let (server, template) =
            sys::socketpair().map_err(|e| failed(format!("cannot create a socket: {e}")))?;
        let highest = fds.placed.iter().map(|t| t.0).max().unwrap_or(2).max(2);
        let ctl = sys::dup_above(template.as_raw_fd(), highest + 1)
            .map_err(|e| failed(format!("dup: {e}")))?;
        drop(template);
        let base = ctl.as_raw_fd().max(fds.error_w.as_raw_fd()).max(highest) + 1;
        let mut fork = ForkPoint {
            ctl: ctl.as_raw_fd(),
            base,
            pid: m.process.pid,
            targets,
            rings,
            args: Cell::new(0),
        };
        let region = Region::reserve(m)?;
        let plan = super::build_plan(
            &image,
            &fds,
            &region,
            &RestoreArgs::default(),
            &target.creds,
            PidMode::Ns,
            Some(&fork),
        )?;
        let (entry, control, stack_top) = region.install(&plan, fds.error_w.as_raw_fd())?;
        // The instances' clocks continue from the image's (see `timens`); they are the
        // template's children, so its time namespace is theirs.
        if super::timens::decide(&m.clocks, PidMode::Host, allow_clock_jump)? {
            super::timens::enter(&m.clocks)?;
        } else {
            super::timens::leave()?;
        }
        let old_mask = sys::set_sigmask(u64::MAX);
        let spawned = crate::privilege::privileged(|| {
            sys::clone3_into_restorer(0, entry, control, stack_top)
        });
        sys::set_sigmask(old_mask);
        let pid = spawned.map_err(|e| failed(format!("cannot create the template: {e}")))?;
        let Fds {
            error_r, error_w, ..
        } = fds;
        drop((error_w, ctl));
        let template = Template {
            image,
            payload,
            pid,
            ctl: Mutex::new(server),
            error: error_r,
            plan,
            targets: fork.targets.iter().map(|t| t.0).collect(),
            rings: std::mem::take(&mut fork.rings),
        };
        let mut ready = [0u8; 8];
        let got = sys::recv_with_fds(template.ctl_fd(), &mut ready)
            .map_err(|e| failed(format!("cannot hear from the template: {e}")))?;
        if got.is_none_or(|p| p.len != 1) {
            let why = template.report(&template.error);
            let _ = sys::wait(pid);
            return Err(failed(format!(
                "the template did not start: {}",
                why.unwrap_or_else(|| "it ended".into())
            )));
        }
        Ok(template)
    }

    fn ctl_fd(&self) -> RawFd {
        self.ctl.lock().map_or(-1, |c| c.as_raw_fd())
    }

    /// The template's PID (in the server's namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// A failed step's report on an error pipe, as a message; `None` at end of file (the
    /// process got past its last reporting step).
    pub fn report(&self, pipe: &OwnedFd) -> Option<String> {
        let mut report = [0u8; 16];
        let mut got = 0;
        let mut f = std::fs::File::from(pipe.try_clone().ok()?);
        while got < 16 {
            match f.read(&mut report[got..]) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        let step = u64::from_ne_bytes(report[..8].try_into().expect("8")) as usize;
        let errno = u64::from_ne_bytes(report[8..].try_into().expect("8")) as i32;
        Some(format!(
            "restore failed at step {step} ({}): {}",
            self.plan.label(step),
            std::io::Error::from_raw_os_error(errno)
        ))
    }

    /// The process's files, reopened for one instance (checked to be the numbers the plan
    /// places).
    pub fn reopen_files(&self) -> Result<Vec<OwnedFd>> {
        let m = self.image.manifest();
        let off = self.image.header().payload_off;
        // (Not its io_uring instances: the instance makes them, see `ServedRing`.)
        let files: Vec<thaw::state::files::FdEntry> = m
            .files
            .iter()
            .filter(|e| !self.rings.iter().any(|r| r.holds(e.fd)))
            .cloned()
            .collect();
        let (reopened, _) = thaw::state::files::reopen(
            &files,
            |r| super::read_payload(&self.payload, off, r),
            &[],
            &Default::default(),
            Away::default(),
        )
        .map_err(refused)?;
        let numbers: Vec<RawFd> = reopened.iter().map(|(fd, _)| *fd).collect();
        if numbers != self.targets {
            return Err(failed(
                "the process's files reopened differently than when the server started",
            ));
        }
        let mut out: Vec<OwnedFd> = reopened.into_iter().map(|(_, f)| f).collect();
        for r in &self.rings {
            out.push(
                r.ring
                    .instance_memory(r.fd, |p| super::read_payload(&self.payload, off, p))
                    .map_err(refused)?,
            );
        }
        Ok(out)
    }

    /// Forks an instance ahead of its caller into the PID namespace `pidns`: it waits in the
    /// restorer for [`Template::give`]. Returns its PID in the server's namespace and the
    /// server's end of the instance's socket. The template holds nothing of it afterwards.
    pub fn fork(&self, pidns: &OwnedFd) -> Result<(i32, OwnedFd)> {
        let (ours, theirs) =
            sys::socketpair().map_err(|e| failed(format!("cannot create a socket: {e}")))?;
        let ctl = self
            .ctl
            .lock()
            .map_err(|_| failed("the template's socket is unusable"))?;
        sys::send_with_fds(
            ctl.as_raw_fd(),
            b"f",
            &[pidns.as_raw_fd(), theirs.as_raw_fd()],
        )
        .map_err(|e| failed(format!("the template is gone: {e}")))?;
        drop(theirs);
        let mut answer = [0u8; 8];
        match sys::recv_with_fds(ctl.as_raw_fd(), &mut answer) {
            Ok(Some(p)) if p.len == 8 => {}
            _ => return Err(failed("the template is gone")),
        }
        let pid = i64::from_ne_bytes(answer);
        if pid < 0 {
            return Err(failed(format!(
                "cannot create the instance: {}",
                std::io::Error::from_raw_os_error(-pid as i32)
            )));
        }
        Ok((pid as i32, ours))
    }

    /// Gives an instance forked ahead (its socket `sock`) its arguments and descriptors; it
    /// then waits on `fds.go` until the caller has dropped its own copies too.
    pub fn give(
        &self,
        sock: &OwnedFd,
        args: &RestoreArgs,
        fds: &InstanceFds,
        files: &[OwnedFd],
    ) -> Result {
        let bytes = postcard::to_allocvec(args)
            .map_err(|e| failed(format!("cannot encode arguments: {e}")))?;
        if bytes.len() > ARGS_MAX {
            return Err(Failure::new(
                Code::Usage,
                format!(
                    "the arguments and environment take {} bytes; an instance can be given at most {ARGS_MAX}",
                    bytes.len()
                ),
            ));
        }
        let mut all = vec![
            fds.error.as_raw_fd(),
            fds.mntns.as_raw_fd(),
            fds.go.as_raw_fd(),
        ];
        all.extend(fds.stdio.iter().map(|f| f.as_raw_fd()));
        all.extend(files.iter().map(|f| f.as_raw_fd()));
        sys::send_with_fds(sock.as_raw_fd(), &bytes, &all)
            .map_err(|e| failed(format!("the instance is gone: {e}")))?;
        Ok(())
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // End of file on its socket ends the template.
        if let Ok(mut c) = self.ctl.lock() {
            if let Ok((a, _)) = sys::socketpair() {
                *c = a;
            }
        }
        let _ = sys::wait(self.pid);
    }
}
