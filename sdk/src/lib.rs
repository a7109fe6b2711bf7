//! thaw SDK: checkpoint a warm process to a signed image that the `thaw` launcher restores with
//! its original PID, TIDs and memory layout.
//!
//! ```no_run
//! match thaw::Checkpoint::to("app.thaw").sign_with("k.key").save()? {
//!     thaw::Outcome::Saved(info) => { /* first life: image written */ }
//!     thaw::Outcome::Restored(r) => { /* second life: r.args(), r.env() */ }
//! }
//! # Ok::<(), thaw::CheckpointError>(())
//! ```

pub mod alloc;
pub mod capi;
pub mod capture;
mod checkpoint;
pub mod fd_policy;
pub mod hold;
pub mod image;
pub mod procfs;
pub mod restore;
pub mod serve;
pub mod state;
pub mod sys;
mod traced;
mod witness;

pub use checkpoint::{
    on_checkpoint, on_exit_after_save, on_restore, Checkpoint, CheckpointError, Outcome, Restored,
    SavedInfo, DEFAULT_SIGNAL,
};
pub use fd_policy::{FdAction, FdClass, FdPolicy};
pub use image::{Image, ImageError, ImageFile, ImageWriter, SavedImage};
pub use state::Manifest;

/// How many times this process was restored from an image (0 in a first life). Right in every
/// thread from the restored process's first instruction on: a thread that runs before the
/// checkpointing one has returned from `save()` reads it too.
pub fn restores() -> u64 {
    capture::RESTORE_CELL
        .restores
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
