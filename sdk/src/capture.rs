//! Taking a consistent snapshot while the application keeps running.
//!
//! The checkpointing thread sends itself a dedicated real-time signal. Its handler runs on the
//! thread's stack above a kernel-built signal frame (all registers and the FPU/AVX state), records
//! what the frame does not hold (fs/gs base, robust list, clear_child_tid, brk, signal
//! dispositions, file offsets, pipe contents), and forks with the raw system call. The child is a
//! frozen copy-on-write copy of the whole address space, parked in `pause()`; the parent returns
//! from the handler and the application goes on. The pause is one fork.
//!
//! On restore, the restorer fills [`RESTORE_CELL`] and resumes the thread through `rt_sigreturn`
//! on the saved frame: it returns from the `tgkill` below and finds the cell filled.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{compiler_fence, AtomicI32, AtomicI64, AtomicPtr, AtomicU64, Ordering};

use crate::sys::{self, KernelSigaction};

/// Filled by the restorer: the only way the resumed thread learns it is in its second life.
#[repr(C)]
#[derive(Debug)]
pub struct RestoreCell {
    /// [`RESTORED_MAGIC`] once restored.
    pub magic: AtomicU64,
    /// The launcher's restorer region (to unmap).
    pub region_addr: AtomicU64,
    pub region_len: AtomicU64,
    /// The postcard-encoded [`crate::restore::RestoreArgs`] inside the region.
    pub args_addr: AtomicU64,
    pub args_len: AtomicU64,
}

/// Value of [`RestoreCell::magic`] in a restored process ("THAWREST").
pub const RESTORED_MAGIC: u64 = 0x5453_4552_5741_4854;

pub static RESTORE_CELL: RestoreCell = RestoreCell {
    magic: AtomicU64::new(0),
    region_addr: AtomicU64::new(0),
    region_len: AtomicU64::new(0),
    args_addr: AtomicU64::new(0),
    args_len: AtomicU64::new(0),
};

/// What the handler records for one thread.
#[derive(Debug, Default)]
pub struct ThreadCapture {
    pub tid: AtomicI32,
    pub frame: AtomicU64,
    pub fs_base: AtomicU64,
    pub gs_base: AtomicU64,
    pub robust_head: AtomicU64,
    pub robust_len: AtomicU64,
    pub clear_child_tid: AtomicU64,
    pub done: AtomicI32,
}

/// A descriptor whose offset the handler records.
#[derive(Debug)]
pub struct FdPos {
    pub fd: i32,
    pub pos: AtomicI64,
}

/// A pipe whose buffered bytes the handler duplicates (`tee`) into `copy`.
#[derive(Debug)]
pub struct PipeCopy {
    pub read_fd: i32,
    pub copy_w: OwnedFd,
    pub copy_r: OwnedFd,
    pub bytes: AtomicI64,
}

/// Everything the handler fills, allocated before the signal is sent.
#[derive(Debug)]
pub struct Capture {
    pub thread: ThreadCapture,
    pub brk: AtomicU64,
    /// Kernel sigaction of signals 1..=64, four words each.
    pub actions: Vec<[AtomicU64; 4]>,
    pub fds: Vec<FdPos>,
    pub pipes: Vec<PipeCopy>,
    /// Raw fork result: the frozen child's pid, or a negative errno.
    pub child: AtomicI64,
}

impl Capture {
    pub fn new(fds: Vec<FdPos>, pipes: Vec<PipeCopy>) -> Box<Self> {
        Box::new(Capture {
            thread: ThreadCapture::default(),
            brk: AtomicU64::new(0),
            actions: (0..64).map(|_| Default::default()).collect(),
            fds,
            pipes,
            child: AtomicI64::new(0),
        })
    }

    pub fn action(&self, signo: usize) -> KernelSigaction {
        let a = &self.actions[signo - 1];
        KernelSigaction {
            handler: a[0].load(Ordering::Relaxed),
            flags: a[1].load(Ordering::Relaxed),
            restorer: a[2].load(Ordering::Relaxed),
            mask: a[3].load(Ordering::Relaxed),
        }
    }
}

static ACTIVE: AtomicPtr<Capture> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_checkpoint_signal(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let ptr = ACTIVE.load(Ordering::Acquire);
    // SAFETY: ACTIVE is non-null only while `freeze` keeps the Box alive and waits for us.
    let Some(c) = (unsafe { ptr.as_ref() }) else {
        return;
    };
    let t = &c.thread;
    if t.tid.load(Ordering::Relaxed) != sys::gettid() {
        return;
    }
    // The kernel's rt_sigreturn expects the stack pointer at the frame's ucontext, which is exactly
    // the third handler argument.
    t.frame.store(uc as u64, Ordering::Relaxed);
    let (fs, gs) = sys::fs_gs_base();
    t.fs_base.store(fs, Ordering::Relaxed);
    t.gs_base.store(gs, Ordering::Relaxed);
    let (head, len) = sys::robust_list();
    t.robust_head.store(head, Ordering::Relaxed);
    t.robust_len.store(len, Ordering::Relaxed);
    t.clear_child_tid
        .store(sys::clear_child_tid(), Ordering::Relaxed);
    c.brk.store(sys::current_brk(), Ordering::Relaxed);
    for (i, slot) in c.actions.iter().enumerate() {
        let mut old = KernelSigaction::default();
        if sys::rt_sigaction(i as i32 + 1, None, Some(&mut old)).is_ok() {
            slot[0].store(old.handler, Ordering::Relaxed);
            slot[1].store(old.flags, Ordering::Relaxed);
            slot[2].store(old.restorer, Ordering::Relaxed);
            slot[3].store(old.mask, Ordering::Relaxed);
        }
    }
    for f in &c.fds {
        f.pos.store(sys::tell(f.fd), Ordering::Relaxed);
    }
    for p in &c.pipes {
        let n = sys::tee(p.read_fd, p.copy_w.as_raw_fd(), usize::MAX >> 1);
        p.bytes.store(n, Ordering::Relaxed);
    }
    t.done.store(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let child = sys::raw_fork();
    if child == 0 {
        sys::frozen_child_loop();
    }
    c.child.store(child, Ordering::Release);
}

/// Result of [`freeze`].
#[derive(Debug)]
pub enum Frozen {
    /// First life: a frozen child holds the snapshot; the capture describes it.
    Snapshot(Box<Capture>),
    /// Second life: we were restored (the cell is filled).
    Restored,
}

/// Sends the checkpoint signal to the calling thread and returns once the snapshot exists (or, in
/// a restored process, once resumed).
pub fn freeze(signal: i32, capture: Box<Capture>) -> std::io::Result<Frozen> {
    let old = sys::install_handler(signal, on_checkpoint_signal)?;
    // Make sure the signal is deliverable to this thread.
    let old_mask = sys::sigprocmask(libc::SIG_UNBLOCK, Some(1u64 << (signal - 1)))?;
    capture.thread.tid.store(sys::gettid(), Ordering::Relaxed);
    let raw = Box::into_raw(capture);
    ACTIVE.store(raw, Ordering::Release);
    compiler_fence(Ordering::SeqCst);
    let sent = sys::tgkill_self(sys::gettid(), signal);
    // ---- a restored process resumes here, after the tgkill system call ----
    compiler_fence(Ordering::SeqCst);
    ACTIVE.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: `raw` came from Box::into_raw above and the handler no longer uses it.
    let mut capture = unsafe { Box::from_raw(raw) };
    let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(old_mask));
    let _ = sys::rt_sigaction(signal, Some(&old), None);
    if RESTORE_CELL.magic.load(Ordering::Acquire) == RESTORED_MAGIC {
        // The pipe copies were made after the descriptor scan, so the restored process never had
        // them: their numbers are not ours to close.
        for p in capture.pipes.drain(..) {
            std::mem::forget(p.copy_w);
            std::mem::forget(p.copy_r);
        }
        return Ok(Frozen::Restored);
    }
    sent?;
    if capture.thread.done.load(Ordering::Relaxed) == 0 {
        return Err(std::io::Error::other(format!(
            "the checkpoint signal {signal} was not delivered to the calling thread"
        )));
    }
    let child = capture.child.load(Ordering::Acquire);
    if child < 0 {
        return Err(std::io::Error::from_raw_os_error(-child as i32));
    }
    Ok(Frozen::Snapshot(capture))
}

/// Creates the pipe a [`PipeCopy`] tees into, sized like the pipe it copies.
pub fn pipe_copy(read_fd: i32) -> std::io::Result<PipeCopy> {
    let (r, w) = sys::pipe_nonblock()?;
    if let Ok(size) = sys::fcntl(read_fd, libc::F_GETPIPE_SZ, 0) {
        let _ = sys::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as u64);
    }
    Ok(PipeCopy {
        read_fd,
        copy_w: w,
        copy_r: r,
        bytes: AtomicI64::new(0),
    })
}
