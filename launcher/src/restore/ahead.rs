//! Verify ahead: while the launcher prepares the process and while the process runs, a thread of
//! its own reads and verifies the chunks the working set says will be needed, in that order, so
//! that the memory server copies them in without hashing them on the process's critical path.
//!
//! Only verified bytes are kept: a chunk that does not match its digest is not kept, and the
//! server, verifying it itself, fails the restore as it would have. The bytes live in the
//! launcher's own memory, in one mapping marked MADV_DONTFORK ([`thaw::sys::Slots`]): the
//! restored process is created by cloning the launcher, which must not copy them. The verifier
//! stays at most [`LEAD`] ahead of the server and reuses the buffers of the chunks the server
//! took: fresh memory for every chunk cost as much as hashing it (the kernel zeroes each page on
//! first touch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use thaw::image::Image;
use thaw::sys::Slots;

use super::working_set::{Gate, Record};

/// Chunks considered at most (those beyond are verified by the server).
const MAX_HELD: u64 = 256 << 20;
/// How far ahead of the server the verifier may get, in bytes held.
const LEAD: u64 = 4 << 20;

/// Chunks to verify ahead, and the ones verified so far.
pub struct Ahead<'a> {
    image: &'a Image,
    /// Where chunks not yet in the image file come from.
    fetch: Option<&'a dyn super::lazy::Fetch>,
    order: Vec<u64>,
    /// The chunks of `order` from the working set's early part: those after wait for `gate`.
    early: usize,
    gate: std::sync::Arc<Gate>,
    /// Position in `order` of each chunk: its slot.
    slot: HashMap<u64, usize>,
    /// Shared by the verifier and the server (each slot is synchronised on its own); taken away
    /// (unmapped) by [`Self::release`] once the server is done.
    slots: RwLock<Option<Slots>>,
    stop: AtomicBool,
    /// Chunks the server found ready.
    pub hits: AtomicU64,
}

impl<'a> Ahead<'a> {
    /// The chunks of `record` to verify ahead, in order (its late part once `gate` opens).
    pub fn new(
        image: &'a Image,
        record: &Record,
        gate: std::sync::Arc<Gate>,
        fetch: Option<&'a dyn super::lazy::Fetch>,
    ) -> Ahead<'a> {
        let cs = u64::from(image.header().chunk_size);
        let mut slot = HashMap::new();
        let mut order = Vec::new();
        let mut early = 0;
        let (chunks, early_chunks) = record.chunks();
        for (i, c) in chunks.into_iter().enumerate() {
            if order.len() as u64 * cs >= MAX_HELD {
                break;
            }
            slot.entry(c).or_insert_with(|| {
                order.push(c);
                order.len() - 1
            });
            if i < early_chunks {
                early = order.len();
            }
        }
        // Without the buffer (no address space), nothing is verified ahead.
        let slots = (!order.is_empty())
            .then(|| Slots::new(order.len(), cs as usize, (LEAD / cs).max(16) as usize).ok())
            .flatten();
        Ahead {
            image,
            fetch,
            order,
            early,
            gate,
            slot,
            slots: RwLock::new(slots),
            stop: AtomicBool::new(false),
            hits: AtomicU64::new(0),
        }
    }

    /// Where chunks not yet in the image file come from (for the memory server too).
    pub fn fetch(&self) -> Option<&'a dyn super::lazy::Fetch> {
        self.fetch
    }

    pub fn is_empty(&self) -> bool {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The verifier: runs until every chunk is done or [`Self::stop`] is called, on idle cores
    /// only. What it does not verify in time, the server verifies itself, so it may wait as
    /// long as anything else wants a core; and on the 2-vCPU VMs measured, even a core that
    /// looks free is not: a thread busy on one vCPU slowed the restored process on the other
    /// (Lua to its answer: 6.0 -> 7.7 ms), so work ahead of the process is only a gain when
    /// it costs the process nothing.
    pub fn run(&self) {
        crate::sys::idle_self();
        for (i, &c) in self.order.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            // The late part competes with the process's first response: not before the gate.
            if i == self.early && !self.gate.wait(|| self.stop.load(Ordering::Relaxed)) {
                return;
            }
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            let Some(slots) = slots.as_ref() else {
                return;
            };
            // A chunk that fails is left unpublished: the server verifies it and reports it.
            let go_on = || !self.stop.load(Ordering::Relaxed);
            slots.fill(i, go_on, |buf| {
                if let Some(f) = self.fetch {
                    f.fetch(c, true).ok()?;
                }
                self.image.read_chunk(c, buf).map(|d| d.len()).ok()
            });
        }
    }

    /// Ends the verifier after the chunk it is on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.gate.nudge();
    }

    /// Stops the verifier and gives back the memory of every chunk it holds (once the server is
    /// done: nothing is read from them any more).
    pub fn release(&self) {
        self.stop();
        *self.slots.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `f` of chunk `c`'s verified bytes if the verifier has them (their buffer is reused
    /// after); if not, it will not start on it any more (the caller verifies it). Never waits.
    pub fn with<R>(&self, c: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let r = slots.as_ref()?.consume(*self.slot.get(&c)?, f)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(r)
    }

    /// Chunk `c` is not wanted any more (nothing of it is left to fill): its buffer is free.
    pub fn skip(&self, c: u64) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        if let (Some(slots), Some(&i)) = (slots.as_ref(), self.slot.get(&c)) {
            slots.skip(i);
        }
    }
}
