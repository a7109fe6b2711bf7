//! thaw SDK: checkpoint a warm process to a signed image that the `thaw` launcher restores with
//! its original PID, TIDs and memory layout.

pub mod image;
pub mod state;

pub use image::{Image, ImageError, ImageFile, ImageWriter, SavedImage};
pub use state::Manifest;

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
