//! The SDK's global allocator: the system's, except while a checkpoint that exits after saving
//! writes its image.
//!
//! Such a checkpoint keeps every other thread stopped until the process exits: released, they
//! would go on working after the snapshot (appending to files, sending, flushing) and every
//! restore would then do that work a second time. But a stopped thread may hold a lock of the
//! C library's allocator (it was stopped in the middle of `malloc`), and the thread writing the
//! image allocates. So for that while, allocations come from a region of our own: size classes
//! of powers of two with a free list each, one thread at a time (a spin lock: only the writing
//! thread runs), nothing ever returned to the C library. Memory the C library gave before is
//! not freed then (the process is about to exit). In effect only in the `cdylib` (libthaw.so,
//! which every runtime's SDK loads) and in Rust programs that link this crate with its
//! `allocator` feature (the default); [`available`] says whether it is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The allocator; `#[global_allocator]` in this crate with the `allocator` feature.
#[derive(Debug)]
pub struct ThawAlloc;

/// Address space reserved for the private phase (never all touched: what the image writer
/// needs at once, a few times over).
const REGION: usize = 16 << 30;
/// Classes 2^4 .. 2^47.
const CLASSES: usize = 48;

static PRIVATE: AtomicBool = AtomicBool::new(false);
static LOCK: AtomicBool = AtomicBool::new(false);
static BASE: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
static FREE: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];

#[cfg(feature = "allocator")]
#[global_allocator]
static GLOBAL: ThawAlloc = ThawAlloc;

/// Whether this process allocates through [`ThawAlloc`] (so [`private`] is possible).
pub fn available() -> bool {
    cfg!(feature = "allocator")
}

/// Allocations come from the private region from now on (reserving it the first time); false
/// if it cannot be reserved. Call only while no other thread allocates.
pub(crate) fn private() -> bool {
    if !available() {
        return false; // the program's own allocator serves this crate too
    }
    if BASE.load(Ordering::Acquire) == 0 {
        let Some(base) = crate::sys::reserve_noreserve(REGION) else {
            return false;
        };
        BASE.store(base, Ordering::Release);
        NEXT.store(base, Ordering::Release);
    }
    PRIVATE.store(true, Ordering::Release);
    true
}

/// Back to the system allocator (the other threads run again).
pub(crate) fn system() {
    PRIVATE.store(false, Ordering::Release);
}

/// Whether no thread is inside the private region's allocator: asked once every other thread
/// is stopped (one stopped inside would hold its lock for good).
pub(crate) fn idle() -> bool {
    !LOCK.load(Ordering::Acquire)
}

fn ours(p: *mut u8) -> bool {
    let base = BASE.load(Ordering::Acquire);
    base != 0 && (base..base + REGION).contains(&(p as usize))
}

fn class(layout: Layout) -> usize {
    let size = layout
        .size()
        .max(layout.align())
        .max(16)
        .next_power_of_two();
    size.trailing_zeros() as usize - 4
}

struct Locked;

impl Locked {
    fn take() -> Locked {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

fn private_alloc(layout: Layout) -> *mut u8 {
    let c = class(layout);
    if c >= CLASSES {
        return std::ptr::null_mut();
    }
    let size = 16usize << c;
    // Blocks are aligned to their size up to 1 MiB (address space only): enough for any layout
    // of their class, whichever layout freed a block before.
    let align = size.min(1 << 20);
    if layout.align() > align {
        return std::ptr::null_mut();
    }
    let _l = Locked::take();
    let head = FREE[c].load(Ordering::Relaxed);
    if head != 0 {
        // SAFETY: a block on the free list is ours and holds the next block's address.
        let next = unsafe { *(head as *const usize) };
        FREE[c].store(next, Ordering::Relaxed);
        return head as *mut u8;
    }
    let at = NEXT.load(Ordering::Relaxed).next_multiple_of(align);
    if at + size > BASE.load(Ordering::Relaxed) + REGION {
        return std::ptr::null_mut();
    }
    NEXT.store(at + size, Ordering::Relaxed);
    at as *mut u8
}

fn private_free(p: *mut u8, layout: Layout) {
    let c = class(layout);
    let _l = Locked::take();
    // SAFETY: `p` is a block of ours of class `c` (at least 16 bytes), no longer in use.
    unsafe { *(p as *mut usize) = FREE[c].load(Ordering::Relaxed) };
    FREE[c].store(p as usize, Ordering::Relaxed);
}

// SAFETY: every block handed out is either the system allocator's or a block of the private
// region of at least the layout's size and alignment, used by one owner until freed.
unsafe impl GlobalAlloc for ThawAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if PRIVATE.load(Ordering::Acquire) {
            return private_alloc(layout);
        }
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if PRIVATE.load(Ordering::Acquire) {
            let p = private_alloc(layout);
            if !p.is_null() {
                // SAFETY: a block of at least `layout.size()` bytes, ours until freed.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            }
            return p;
        }
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if ours(p) {
            private_free(p, layout);
        } else if !PRIVATE.load(Ordering::Acquire) {
            // SAFETY: the system allocator's block, forwarded as given.
            unsafe { System.dealloc(p, layout) }
        }
        // Else the C library's block while it must not be called: left (the process exits).
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let private = PRIVATE.load(Ordering::Acquire);
        if !private && !ours(p) {
            // SAFETY: the system allocator's block, forwarded as given.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if ours(p) && class(new) == class(layout) {
            return p;
        }
        // SAFETY: a fresh block for `new`, then the old one's bytes and the old one freed.
        unsafe {
            let q = self.alloc(new);
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_size_and_alignment() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(class(l(1, 1)), 0);
        assert_eq!(class(l(16, 8)), 0);
        assert_eq!(class(l(17, 8)), 1);
        assert_eq!(class(l(8, 64)), 2);
        assert_eq!(class(l(4096, 4096)), 8);
        assert_eq!(class(l(5000, 8)), 9);
    }

    #[test]
    fn the_private_phase_serves_and_takes_back() {
        let before: Vec<u64> = (0..1000).collect();
        assert!(private());
        let mut v: Vec<String> = (0..2000).map(|i| format!("block {i}")).collect();
        let big = vec![7u8; 3 << 20];
        assert!(ours(big.as_ptr() as *mut u8));
        assert_eq!(big.as_ptr() as usize % (1 << 20), 0);
        v.truncate(10);
        let again = vec![1u8; 3 << 20];
        drop(big);
        // A system block freed now is left alone; a private one goes back on its list.
        drop(before);
        system();
        assert!(ours(again.as_ptr() as *mut u8));
        let mut grown = again;
        grown.resize(8 << 20, 2);
        assert!(
            !ours(grown.as_ptr() as *mut u8),
            "moved back to the system allocator"
        );
        assert!(grown[..3 << 20].iter().all(|&b| b == 1));
        assert_eq!(v[9], "block 9");
    }
}
