//! Verify ahead: while the launcher prepares the process and while the process runs, a thread of
//! its own reads and verifies the chunks the working set says will be needed, in that order, so
//! that the memory server copies them in without hashing them on the process's critical path.
//!
//! Only verified bytes are kept: a chunk that does not match its digest is not kept, and the
//! server, verifying it itself, fails the restore as it would have. The bytes live in the
//! launcher's own memory until the server takes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use thaw::image::Image;

use super::working_set::Touch;

/// Verified bytes held at most (the verifier stops there; the server verifies the rest).
const MAX_HELD: u64 = 256 << 20;

/// Chunks to verify ahead, and the ones verified so far.
pub struct Ahead<'a> {
    image: &'a Image,
    order: Vec<u64>,
    /// Position in `order` of each chunk.
    slot: HashMap<u64, usize>,
    /// Verified bytes, until the server takes them.
    ready: Vec<Mutex<Option<Box<[u8]>>>>,
    /// Someone (the verifier or the server) has taken this chunk on.
    claimed: Vec<AtomicBool>,
    held: AtomicU64,
    stop: AtomicBool,
    /// Chunks the server found ready.
    pub hits: AtomicU64,
}

impl<'a> Ahead<'a> {
    /// The chunks of `touches` to verify ahead, in order.
    pub fn new(image: &'a Image, touches: &[Touch]) -> Ahead<'a> {
        let mut slot = HashMap::new();
        let mut order = Vec::new();
        for t in touches {
            if let Touch::Chunk(c) = *t {
                slot.entry(c).or_insert_with(|| {
                    order.push(c);
                    order.len() - 1
                });
            }
        }
        Ahead {
            image,
            ready: order.iter().map(|_| Mutex::new(None)).collect(),
            claimed: order.iter().map(|_| AtomicBool::new(false)).collect(),
            order,
            slot,
            held: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            hits: AtomicU64::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The verifier: runs until every chunk is done, [`Self::stop`] is called, or enough is held.
    pub fn run(&self) {
        let cs = self.image.header().chunk_size as usize;
        for (i, &c) in self.order.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) || self.held.load(Ordering::Relaxed) >= MAX_HELD {
                return;
            }
            if self.claimed[i].swap(true, Ordering::AcqRel) {
                continue;
            }
            let mut buf = vec![0u8; cs];
            // A chunk that fails is left to the server, which reports it.
            let Ok(n) = self.image.read_chunk(c, &mut buf).map(|d| d.len()) else {
                continue;
            };
            buf.truncate(n);
            self.held.fetch_add(n as u64, Ordering::Relaxed);
            *self.ready[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(buf.into());
        }
    }

    /// Ends the verifier after the chunk it is on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Chunk `c`'s verified bytes if the verifier has them (they are handed over once); the
    /// verifier will not start on it any more either way.
    pub fn take(&self, c: u64) -> Option<Box<[u8]>> {
        let &i = self.slot.get(&c)?;
        self.claimed[i].store(true, Ordering::Release);
        let bytes = self.ready[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        self.held.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }
}
