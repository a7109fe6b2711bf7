//! An image being fetched from a registry: a file of the image's full size beside its final
//! name, holding the head at once and each payload blob once it is fetched. A restore can start
//! from it before it is complete: the launcher asks for a chunk's blobs ([`Fetch`]) just before
//! it reads and verifies the chunk, exactly as it would from a local file. Only a complete file
//! takes its final name; an incomplete one is removed.
//!
//! Blobs are fetched [`PARALLEL`] at a time by one thread at a time, the driver: whichever
//! thread needs a blob that is missing drives the client until its blobs are in, fetching what
//! others asked for too, or waits while another drives. During a restore [`Sparse::serve`]
//! drives for the whole run: what the memory server and the verifier ask for first, and the
//! working set in its order in between. A blob another cached image holds, or that this image
//! holds twice, is read from there (and checked against its digest) instead of the network.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use thaw::image::Header;

use super::artifact::{self, Descriptor};
use super::cache::Cache;
use super::{Progress, Remote, PARALLEL};
use crate::exit::{Code, Failure, Result};
use crate::restore::lazy::Fetch;

const MISSING: u8 = 0;
const WANTED: u8 = 1;
const IN_FLIGHT: u8 = 2;
const PRESENT: u8 = 3;

struct Queue {
    state: Vec<u8>,
    /// Blobs asked for, first come first fetched.
    urgent: VecDeque<usize>,
    /// Blobs to fetch when nothing is asked for (the working set), and how far it got.
    prefetch: Vec<usize>,
    next: usize,
    /// A thread is driving the client.
    driving: bool,
    /// The first fetch that failed: every later ask fails with it.
    failed: Option<(Code, String)>,
    stop: bool,
}

pub struct Sparse {
    remote: Remote,
    layers: Vec<Descriptor>,
    /// Payload offset of each blob.
    offsets: Vec<u64>,
    header: Header,
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    /// Blobs other cached images hold: digest → (file, offset).
    local: HashMap<String, (PathBuf, u64)>,
    /// The first blob of this image with each digest (zero-filled memory repeats).
    first: HashMap<String, usize>,
    /// The working set the pusher recorded, if the artifact has one (unchecked).
    pub working_set: Option<Vec<u8>>,
    /// The cache `dest` is in, if it is.
    cache: Option<Cache>,
    queue: Mutex<Queue>,
    landed: Condvar,
    wake: tokio::sync::Notify,
    /// Bytes fetched from the network (head included).
    pub bytes: AtomicU64,
    /// Blobs fetched from the network.
    pub fetched: AtomicU64,
}

impl Sparse {
    /// Fetches the head of `m`'s image, checks that the manifest's blobs are the payload the
    /// head's header describes, and writes the head into a new file beside `dest`. Blobs found
    /// in `local`'s images are read from there.
    pub fn create(
        remote: Remote,
        m: &artifact::Manifest,
        dest: &Path,
        local: Option<Cache>,
    ) -> Result<Sparse> {
        let (layers, working_set) = artifact::payload_layers(m);
        // The working set comes with the head: a restore orders its filling by it from the
        // start. One that cannot be fetched is only missing.
        let mut want = vec![&m.layers[0]];
        want.extend(working_set.as_ref());
        let mut got = remote.blobs(&want).into_iter();
        let head = got.next().expect("one result per blob")?;
        let working_set = got.next().and_then(|r| r.ok());
        let bad = |msg: String| Failure::new(Code::Corrupt, format!("{}: {msg}", remote.name()));
        let payload: u64 = layers.iter().map(|l| l.size).sum();
        let file_len = head.len() as u64 + payload;
        let n = head.len().min(thaw::image::HEADER_LEN);
        let h = Header::decode(&head[..n], file_len, Path::new(&remote.name()))?;
        if head.len() as u64 != h.payload_off + h.manifest_len + h.trailer_len {
            return Err(bad("the image head does not match its header".into()));
        }
        let offsets = artifact::check_layers(&h, &layers).map_err(bad)?;
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |what: &str, e: std::io::Error| {
            Failure::new(Code::Io, format!("{what} {}: {e}", dest.display()))
        };
        let tmp = tempfile::Builder::new()
            .prefix(super::cache::PARTIAL)
            .tempfile_in(dir)
            .map_err(|e| io("cannot create a file beside", e))?;
        let f = tmp.as_file();
        // Held while the file is being filled: a launcher cleaning the cache leaves it alone.
        f.lock().map_err(|e| io("cannot lock", e))?;
        f.set_len(file_len).map_err(|e| io("cannot size", e))?;
        let split = h.payload_off as usize;
        f.write_all_at(&head[..split], 0)
            .and_then(|()| f.write_all_at(&head[split..], h.manifest_off))
            .map_err(|e| io("cannot write", e))?;
        Ok(Sparse {
            queue: Mutex::new(Queue {
                state: vec![MISSING; layers.len()],
                urgent: VecDeque::new(),
                prefetch: Vec::new(),
                next: 0,
                driving: false,
                failed: None,
                stop: false,
            }),
            local: local.as_ref().map(|c| c.blobs()).unwrap_or_default(),
            first: layers
                .iter()
                .enumerate()
                .rev()
                .map(|(i, l)| (l.digest.clone(), i))
                .collect(),
            cache: local.filter(|c| c.holds(dest)),
            working_set,
            layers,
            offsets,
            header: h,
            tmp,
            dest: dest.to_owned(),
            remote,
            landed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            bytes: AtomicU64::new(head.len() as u64),
            fetched: AtomicU64::new(0),
        })
    }

    /// The file (complete or not) to open as the image.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the file goes once complete.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Payload blobs `blobs` are in the file: those missing are fetched, several at once.
    pub fn fetch_blobs(&self, blobs: &[usize], progress: Option<&Progress>) -> Result<()> {
        let mut q = self.queue();
        let mut asked = false;
        for &b in blobs {
            if q.state[b] == MISSING {
                q.state[b] = WANTED;
                q.urgent.push_back(b);
                asked = true;
            }
        }
        if asked {
            self.wake.notify_one();
        }
        loop {
            if let Some((code, msg)) = &q.failed {
                return Err(Failure::new(*code, msg));
            }
            if blobs.iter().all(|&b| q.state[b] == PRESENT) {
                return Ok(());
            }
            if !q.driving {
                q.driving = true;
                drop(q);
                self.drive(Some(blobs), progress);
                q = self.queue();
                q.driving = false;
                self.landed.notify_all();
                continue;
            }
            q = self.landed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Drives the client until [`Self::stop`]: blobs asked for first, then those of the chunks
    /// `order` names, in that order (a restore's working set).
    pub fn serve(&self, order: &[u64]) {
        let mut q = self.queue();
        let mut seen = vec![false; self.layers.len()];
        for &c in order {
            for b in self.blobs_of(c) {
                if !std::mem::replace(&mut seen[b], true) {
                    q.prefetch.push(b);
                }
            }
        }
        loop {
            if q.stop || q.failed.is_some() {
                return;
            }
            if !q.driving {
                q.driving = true;
                drop(q);
                self.drive(None, None);
                q = self.queue();
                q.driving = false;
                self.landed.notify_all();
                continue;
            }
            q = self.landed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Ends [`Self::serve`] (the blobs it is fetching are dropped, and fetched again if asked).
    pub fn stop(&self) {
        self.queue().stop = true;
        self.wake.notify_one();
        self.landed.notify_all();
    }

    /// Fetches until `mine` are in (or, for `None`, until stopped), [`PARALLEL`] at a time.
    fn drive(&self, mine: Option<&[usize]>, progress: Option<&Progress>) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut flight = FuturesUnordered::new();
        let mut flying = Vec::new();
        self.remote.runtime.block_on(async {
            loop {
                {
                    let mut q = self.queue();
                    let done = match mine {
                        Some(m) => m.iter().all(|&b| q.state[b] == PRESENT),
                        None => q.stop,
                    };
                    if done || q.failed.is_some() {
                        break;
                    }
                    while flight.len() < PARALLEL {
                        let Some(b) = next_job(&mut q, mine.is_none()) else {
                            break;
                        };
                        q.state[b] = IN_FLIGHT;
                        flying.push(b);
                        flight.push(self.get(b));
                    }
                }
                if flight.is_empty() {
                    self.wake.notified().await;
                    continue;
                }
                let landed = {
                    let next = std::pin::pin!(flight.next());
                    let woken = std::pin::pin!(self.wake.notified());
                    match futures_util::future::select(next, woken).await {
                        futures_util::future::Either::Left((landed, _)) => landed,
                        futures_util::future::Either::Right(_) => None,
                    }
                };
                let Some((b, got)) = landed else {
                    continue;
                };
                flying.retain(|&x| x != b);
                let written = got.and_then(|data| {
                    let at = self.header.payload_off + self.offsets[b];
                    self.tmp
                        .as_file()
                        .write_all_at(&data, at)
                        .map_err(|e| {
                            Failure::new(
                                Code::Io,
                                format!("cannot write {}: {e}", self.dest.display()),
                            )
                        })
                        .map(|()| data.len() as u64)
                });
                let mut q = self.queue();
                match written {
                    Ok(n) => {
                        q.state[b] = PRESENT;
                        if let Some(p) = progress {
                            p.add(n);
                        }
                    }
                    Err(f) => q.failed = Some((f.code, f.message)),
                }
                self.landed.notify_all();
            }
        });
        // What was still on its way is dropped: asked for again first.
        let mut q = self.queue();
        for b in flying.into_iter().rev() {
            q.state[b] = WANTED;
            q.urgent.push_front(b);
        }
    }

    /// Blob `b`'s bytes: from another cached image that holds it (checked against its digest),
    /// else from the registry.
    async fn get(&self, b: usize) -> (usize, Result<Vec<u8>>) {
        let d = &self.layers[b];
        let twin = self
            .first
            .get(&d.digest)
            .copied()
            .filter(|&t| t != b && self.queue().state[t] == PRESENT);
        let copy = match twin {
            Some(t) => Some((None, self.header.payload_off + self.offsets[t])),
            None => self.local.get(&d.digest).map(|(f, off)| (Some(f), *off)),
        };
        if let Some((file, off)) = copy {
            let mut buf = vec![0u8; d.size as usize];
            let read = match file {
                Some(f) => std::fs::File::open(f).and_then(|f| f.read_exact_at(&mut buf, off)),
                None => self.tmp.as_file().read_exact_at(&mut buf, off),
            };
            if read.is_ok() && artifact::sha256(&buf) == d.digest {
                return (b, Ok(buf));
            }
        }
        let got = self.remote.fetch_blob(d).await;
        if let Ok(data) = &got {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.fetched.fetch_add(1, Ordering::Relaxed);
        }
        (b, got)
    }

    /// Every payload blob (`what: X of Y MiB` on a terminal).
    pub fn fetch_all(&self, what: &'static str) -> Result<()> {
        let missing: Vec<usize> = {
            let q = self.queue();
            (0..self.layers.len())
                .filter(|&b| q.state[b] != PRESENT)
                .collect()
        };
        let total = missing.iter().map(|&b| self.layers[b].size).sum();
        let progress = Progress::new(what, total);
        let r = self.fetch_blobs(&missing, Some(&progress));
        progress.done();
        r
    }

    /// The blobs holding the chunks `wanted` selects.
    pub fn fetch_chunks(&self, wanted: impl Fn(u64) -> bool) -> Result<()> {
        let mut blobs: Vec<usize> = (0..self.header.chunk_count())
            .filter(|&c| wanted(c))
            .flat_map(|c| self.blobs_of(c))
            .collect();
        blobs.dedup();
        self.fetch_blobs(&blobs, None)
    }

    /// The blobs that hold chunk `chunk`'s bytes.
    fn blobs_of(&self, chunk: u64) -> std::ops::Range<usize> {
        let cs = u64::from(self.header.chunk_size);
        let start = chunk * cs;
        let end = (start + cs).min(self.header.payload_len);
        let first = self
            .offsets
            .partition_point(|&o| o <= start)
            .saturating_sub(1);
        let last = self.offsets.partition_point(|&o| o < end);
        first..last.max(first)
    }

    /// Whether every blob is in.
    pub fn complete(&self) -> bool {
        self.queue().state.iter().all(|&s| s == PRESENT)
    }

    /// Gives the file its final name once every blob is in it (flushed first), and tells the
    /// cache it holds, which blobs are where; an incomplete file is removed.
    pub fn persist(self) -> Result<()> {
        if !self.complete() {
            return Ok(());
        }
        let io = |e: std::io::Error| {
            Failure::new(
                Code::Io,
                format!("cannot write {}: {e}", self.dest.display()),
            )
        };
        self.tmp.as_file().sync_all().map_err(io)?;
        let dest = self.dest.clone();
        self.tmp.persist(&dest).map_err(|e| io(e.error))?;
        if let Some(c) = &self.cache {
            let at = self.offsets.iter().map(|o| self.header.payload_off + o);
            c.index(&dest, self.layers.iter().zip(at));
        }
        Ok(())
    }

    /// An image error about the temporary file, told of the reference instead.
    pub fn named(&self, e: thaw::image::ImageError) -> Failure {
        let f = Failure::from(e);
        let tmp = self.tmp.path().display().to_string();
        Failure::new(f.code, f.message.replace(&tmp, &self.remote.name()))
    }
}

/// The next blob to fetch: one asked for, else (when `prefetch`) the next of the working set.
fn next_job(q: &mut Queue, prefetch: bool) -> Option<usize> {
    while let Some(b) = q.urgent.pop_front() {
        if q.state[b] == WANTED {
            return Some(b);
        }
    }
    while prefetch && q.next < q.prefetch.len() {
        let b = q.prefetch[q.next];
        q.next += 1;
        if q.state[b] == MISSING {
            return Some(b);
        }
    }
    None
}

impl Fetch for Sparse {
    fn fetch(&self, chunk: u64) -> Result<()> {
        let blobs: Vec<usize> = self.blobs_of(chunk).collect();
        self.fetch_blobs(&blobs, None)
    }
}
