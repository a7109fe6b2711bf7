//! An image being fetched from a registry: a file of the image's full size beside its final
//! name, holding the head at once and each payload blob as it arrives. A restore can start
//! from it before it is complete: the launcher asks for a chunk's blobs ([`Fetch`]) just before
//! it reads and verifies the chunk, exactly as it would from a local file. Only a complete file
//! takes its final name; an incomplete one is removed.
//!
//! What is fetched is a range of a blob: a whole blob, or (an HTTP range request) the part of it
//! a few chunks need, so that a fault or the memory read up front does not wait for the rest of
//! a large blob; which pages of the file are in is kept page by page, and a range's pages are
//! written and marked in as they are received (every 64 KiB), not once all of it has come: one
//! large blob costs the registry one request without anyone waiting for its end. Ranges are fetched
//! [`PARALLEL`] at a time by one thread at a time, the driver: whichever thread needs pages that
//! are missing drives the client until they are in, fetching what others asked for too, or waits
//! while another drives. During a restore [`Sparse::serve`] drives for the whole run: what the
//! memory server and the verifier ask for first, and the working set's blobs in its order in
//! between. A blob another cached image holds, or that this image
//! holds twice, is read from there (and checked against its digest) instead of the network.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use thaw::image::Header;

use super::artifact::{self, Descriptor};
use super::cache::Cache;
use super::payload::{self, Layout};
use super::{Progress, Remote, PARALLEL};
use crate::exit::{Code, Failure, Result};
use crate::restore::lazy::Fetch;

const MISSING: u8 = 0;
const IN_FLIGHT: u8 = 1;
const PRESENT: u8 = 2;

/// Bytes `start..end` of blob `blob` (page-aligned, inside the blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    blob: usize,
    start: u64,
    end: u64,
}

struct Queue {
    /// Each payload page: missing, on its way, or in the file.
    pages: Vec<u8>,
    /// Ranges asked for, first come first fetched.
    urgent: VecDeque<Job>,
    /// Ranges to fetch when nothing is asked for (the working set's blobs), and how far it got;
    /// those from `early` on wait for `gate` (see `working_set::Gate`).
    prefetch: Vec<Job>,
    next: usize,
    early: usize,
    gate: Option<std::sync::Arc<crate::restore::working_set::Gate>>,
    /// Per blob, the stretch of it the working set's early part needs: what is fetched of it
    /// ahead until the gate opens (a registry's cost is per request, so one request a blob
    /// either way; fewer bytes before the process's first response).
    early_spans: HashMap<usize, Job>,
    /// A thread is driving the client.
    driving: bool,
    /// The first fetch that failed: every later ask fails with it.
    failed: Option<(Code, String)>,
    stop: bool,
}

impl Queue {
    fn all(&self, pages: std::ops::Range<usize>, state: u8) -> bool {
        self.pages[pages].iter().all(|&p| p == state)
    }
}

pub struct Sparse {
    remote: Remote,
    layers: Vec<Descriptor>,
    /// Where each blob's bytes are in the payload.
    layout: Layout,
    page: u64,
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
    /// Requests for blobs (or ranges of them) made to the network.
    pub fetched: AtomicU64,
    /// `bytes` when the restored process first wrote to its standard output (+1; 0: not yet).
    output: AtomicU64,
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
        let artifact::Parts {
            payload: layers,
            working_set,
            ..
        } = artifact::parts(m);
        // The working set comes with the head: a restore orders its filling by it from the
        // start. One that cannot be fetched is only missing.
        let mut want = vec![&m.layers[0]];
        want.extend(working_set.as_ref());
        let mut got = remote.blobs(&want).into_iter();
        let head = got.next().expect("one result per blob")?;
        let working_set = got.next().and_then(|r| r.ok());
        let bad = |msg: String| Failure::new(Code::Corrupt, format!("{}: {msg}", remote.name()));
        // Sizes come from the manifest, unsigned: checked, and bounded before anything is sized.
        let file_len = layers
            .iter()
            .try_fold(head.len() as u64, |n, l| n.checked_add(payload::claimed(l)))
            .filter(|&n| n <= artifact::MAX_IMAGE)
            .ok_or_else(|| {
                bad(format!(
                    "the manifest describes an image over {} bytes",
                    artifact::MAX_IMAGE
                ))
            })?;
        let n = head.len().min(thaw::image::HEADER_LEN);
        let h = Header::decode(&head[..n], file_len, Path::new(&remote.name()))?;
        if head.len() as u64 != h.payload_off + h.manifest_len + h.trailer_len {
            return Err(bad("the image head does not match its header".into()));
        }
        let layout = Layout::check(&h, &layers).map_err(bad)?;
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
                pages: vec![MISSING; h.payload_len.div_ceil(u64::from(h.page_size)) as usize],
                urgent: VecDeque::new(),
                prefetch: Vec::new(),
                next: 0,
                early: 0,
                gate: None,
                early_spans: HashMap::new(),
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
            layout,
            page: u64::from(h.page_size),
            header: h,
            tmp,
            dest: dest.to_owned(),
            remote,
            landed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            bytes: AtomicU64::new(head.len() as u64),
            fetched: AtomicU64::new(0),
            output: AtomicU64::new(0),
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

    fn pages(&self, start: u64, end: u64) -> std::ops::Range<usize> {
        (start / self.page) as usize..end.div_ceil(self.page) as usize
    }

    fn whole(&self, b: usize) -> Job {
        Job {
            blob: b,
            start: 0,
            end: self.layers[b].size,
        }
    }

    /// The payload pages `j` holds (in blob order), each with its offset in the blob.
    fn job_pages(&self, j: &Job) -> impl Iterator<Item = (u64, usize)> + '_ {
        let page = self.page;
        (self.layout.in_payload(j.blob, j.start, j.end)).flat_map(move |(p, at, n)| {
            (0..n.div_ceil(page)).map(move |k| (at + k * page, (p / page + k) as usize))
        })
    }

    /// Whether every page `j` holds is in `state`.
    fn all(&self, q: &Queue, j: &Job, state: u8) -> bool {
        (self.layout.in_payload(j.blob, j.start, j.end))
            .all(|(p, _, n)| q.all(self.pages(p, p + n), state))
    }

    /// The bytes of `jobs` are in the file: those missing are fetched, several at once.
    fn fetch_jobs(&self, jobs: &[Job], progress: Option<&Progress>) -> Result<()> {
        let mut q = self.queue();
        let mut asked = false;
        for j in jobs {
            if !self.all(&q, j, PRESENT) {
                q.urgent.push_back(*j);
                asked = true;
            }
        }
        if asked {
            self.wake.notify_one();
        }
        let q = self.take_turns(q, Some(jobs), progress, |q| {
            q.failed.is_some() || jobs.iter().all(|j| self.all(q, j, PRESENT))
        });
        match &q.failed {
            Some((code, msg)) => Err(Failure::new(*code, msg)),
            None => Ok(()),
        }
    }

    /// Drives the client for `mine` (or for everybody, `None`) whenever no other thread does,
    /// and waits while one does, until `done`.
    fn take_turns<'q>(
        &'q self,
        mut q: MutexGuard<'q, Queue>,
        mine: Option<&[Job]>,
        progress: Option<&Progress>,
        done: impl Fn(&Queue) -> bool,
    ) -> MutexGuard<'q, Queue> {
        while !done(&q) {
            if q.driving {
                q = self.landed.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.driving = true;
            drop(q);
            self.drive(mine, progress);
            q = self.queue();
            q.driving = false;
            self.landed.notify_all();
        }
        q
    }

    /// Plans what [`Self::serve`] fetches when nothing is asked for: the blobs of the chunks
    /// `order` names, in that order (a restore's working set; those after its first `early`
    /// once `gate` is open). From now on the thread about to run `serve` is the driver: a thread
    /// that asks for ranges meanwhile waits for it instead of driving itself, which would fetch
    /// only what it asked for until it had it (the working set's first blob alone, say).
    pub fn plan(
        &self,
        order: &[u64],
        early: usize,
        gate: std::sync::Arc<crate::restore::working_set::Gate>,
    ) {
        let mut q = self.queue();
        while q.driving {
            q = self.landed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.driving = true;
        // First the early part's stretch of each blob, in the order of their first chunks;
        // then whole blobs, in order (the rest of those stretched, and the late part's).
        let mut spans: Vec<Job> = Vec::new();
        for &c in &order[..early.min(order.len())] {
            for part in self.parts_of(c) {
                match spans.iter_mut().find(|s| s.blob == part.blob) {
                    Some(s) => {
                        s.start = s.start.min(part.start);
                        s.end = s.end.max(part.end);
                    }
                    None => spans.push(part),
                }
            }
        }
        q.early = spans.len();
        q.early_spans = spans.iter().map(|s| (s.blob, *s)).collect();
        q.prefetch = spans;
        let mut seen = vec![false; self.layers.len()];
        for &c in order {
            for part in self.parts_of(c) {
                if !std::mem::replace(&mut seen[part.blob], true) {
                    q.prefetch.push(self.whole(part.blob));
                }
            }
        }
        q.gate = Some(gate);
    }

    /// Drives the client, as planned ([`Self::plan`]), until [`Self::stop`] or a failure:
    /// ranges asked for first, the working set's in between.
    pub fn serve(&self) {
        // However it ends (a panic too), the threads waiting for it then drive themselves.
        struct Release<'a>(&'a Sparse);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.queue().driving = false;
                self.0.landed.notify_all();
            }
        }
        let _release = Release(self);
        self.drive(None, None);
    }

    /// Ends [`Self::serve`] (the ranges it is fetching are dropped, and fetched again if asked).
    pub fn stop(&self) {
        self.queue().stop = true;
        self.wake.notify_one();
        self.landed.notify_all();
    }

    /// The next range to fetch: one asked for, else (when `prefetch`) the next of the working
    /// set; one whose pages are all in or on their way is passed over. Its missing pages are
    /// marked on their way.
    fn next_job(&self, q: &mut Queue, prefetch: bool) -> Option<Job> {
        loop {
            let j = match q.urgent.pop_front() {
                Some(j) => j,
                None if prefetch
                    && q.next < q.prefetch.len()
                    && (q.next < q.early || q.gate.as_ref().is_none_or(|g| g.is_open())) =>
                {
                    q.next += 1;
                    q.prefetch[q.next - 1]
                }
                None => return None,
            };
            // Only the stretch of the blob from its first missing page to its last is fetched.
            let pages: Vec<(u64, usize)> = self.job_pages(&j).collect();
            let first = pages.iter().position(|&(_, p)| q.pages[p] == MISSING);
            let last = pages.iter().rposition(|&(_, p)| q.pages[p] == MISSING);
            if let (Some(first), Some(last)) = (first, last) {
                for &(_, p) in &pages[first..=last] {
                    if q.pages[p] == MISSING {
                        q.pages[p] = IN_FLIGHT;
                    }
                }
                return Some(Job {
                    blob: j.blob,
                    start: pages[first].0,
                    end: (pages[last].0 + self.page).min(j.end),
                });
            }
        }
    }

    /// Fetches until `mine` are in (or, for `None`, until stopped), [`PARALLEL`] at a time.
    fn drive(&self, mine: Option<&[Job]>, progress: Option<&Progress>) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut flight = FuturesUnordered::new();
        let mut flying: Vec<Job> = Vec::new();
        self.remote.runtime.block_on(async {
            loop {
                {
                    let mut q = self.queue();
                    let done = match mine {
                        Some(m) => m.iter().all(|j| self.all(&q, j, PRESENT)),
                        None => q.stop,
                    };
                    if done || q.failed.is_some() {
                        break;
                    }
                    while flight.len() < PARALLEL {
                        let Some(j) = self.next_job(&mut q, mine.is_none()) else {
                            break;
                        };
                        flying.push(j);
                        flight.push(self.get(j, progress));
                    }
                }
                if flight.is_empty() {
                    if mine.is_some() {
                        // Nothing left to start and nothing on its way: what is missing was
                        // asked for by a driver that gave up; asked again by the caller's loop.
                        break;
                    }
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
                let Some((j, got)) = landed else {
                    continue;
                };
                flying.retain(|x| *x != j);
                if let Err(f) = got {
                    self.queue().failed = Some((f.code, f.message));
                }
                self.landed.notify_all();
            }
        });
        // What was still on its way is dropped: asked for again first.
        let mut q = self.queue();
        for j in flying.into_iter().rev() {
            for (_, p) in self.job_pages(&j) {
                if q.pages[p] == IN_FLIGHT {
                    q.pages[p] = MISSING;
                }
            }
            q.urgent.push_front(j);
        }
    }

    /// Writes the pages of `data` (bytes of blob `blob` from `at`) that are not in the file yet,
    /// each where the layout puts it in the payload: a page already there may have been verified
    /// and read, and is never written again (a registry sending a range again, or a whole blob
    /// for a range, cannot change it). Only the driver writes. Returns (`at`, the length, the
    /// bytes written).
    fn write_missing(&self, blob: usize, at: u64, data: &[u8]) -> Result<(u64, u64, u64)> {
        let end = at + data.len() as u64;
        let whole = Job {
            blob,
            start: at,
            end,
        };
        // Runs of missing pages: (offset in the blob, payload offset, length).
        let missing: Vec<(u64, u64, u64)> = {
            let q = self.queue();
            let mut runs: Vec<(u64, u64, u64)> = Vec::new();
            for (b, p) in self
                .job_pages(&whole)
                .filter(|&(_, p)| q.pages[p] != PRESENT)
            {
                let (o, n) = (p as u64 * self.page, (end - b).min(self.page));
                match runs.last_mut() {
                    Some(r) if r.0 + r.2 == b && r.1 + r.2 == o => r.2 += n,
                    _ => runs.push((b, o, n)),
                }
            }
            runs
        };
        let mut new = 0;
        for (b, o, n) in missing {
            let bytes = &data[(b - at) as usize..(b - at + n) as usize];
            self.tmp
                .as_file()
                .write_all_at(bytes, self.header.payload_off + o)
                .map_err(|e| {
                    Failure::new(
                        Code::Io,
                        format!("cannot write {}: {e}", self.dest.display()),
                    )
                })?;
            new += n;
        }
        Ok((at, data.len() as u64, new))
    }

    /// Writes the missing pages of `data` (bytes of blob `blob` from `at`) and marks them in:
    /// the waiting threads look again.
    fn land(&self, blob: usize, at: u64, data: &[u8], progress: Option<&Progress>) -> Result<()> {
        let (at, n, new) = self.write_missing(blob, at, data)?;
        let landed = Job {
            blob,
            start: at,
            end: at + n,
        };
        let mut q = self.queue();
        for (_, p) in self.job_pages(&landed) {
            q.pages[p] = PRESENT;
        }
        drop(q);
        if let Some(p) = progress {
            p.add(new);
        }
        self.landed.notify_all();
        Ok(())
    }

    /// Brings in the bytes of `j`: the whole blob from another cached image that holds it, or
    /// from this image's copy of it (checked against its digest), else the range from the
    /// registry, written out as it comes (or the whole blob, where the registry sends it whole).
    /// What comes from the registry is not hashed as a blob: the manifest's digests are as
    /// unsigned as the bytes, and every chunk is checked against its signed digest before any
    /// byte of it is used, wherever it came from (a hash of every blob on the thread receiving
    /// them all held up a first start by a fifth).
    async fn get(&self, j: Job, progress: Option<&Progress>) -> (Job, Result<()>) {
        let d = &self.layers[j.blob];
        // (A layer listed again with another size is no twin: the manifest is unsigned.)
        let twin = self.first.get(&d.digest).copied().filter(|&t| {
            t != j.blob
                && self.layers[t].size == d.size
                && self.all(&self.queue(), &self.whole(t), PRESENT)
        });
        let mut buf = Vec::new();
        let read = match (twin, self.local.get(&d.digest)) {
            (Some(t), _) => {
                buf.resize(d.size as usize, 0);
                Some((self.layout.segments(t).iter()).try_for_each(|s| {
                    let at = s.at as usize..(s.at + s.len) as usize;
                    let off = self.header.payload_off + s.payload;
                    self.tmp.as_file().read_exact_at(&mut buf[at], off)
                }))
            }
            (None, Some((f, off))) => {
                buf.resize(d.size as usize, 0);
                Some(std::fs::File::open(f).and_then(|f| f.read_exact_at(&mut buf, *off)))
            }
            (None, None) => None,
        };
        if read.is_some_and(|r| r.is_ok()) && artifact::sha256(&buf) == d.digest {
            return (j, self.land(j.blob, 0, &buf, progress));
        }
        drop(buf);
        let mut land = |at: u64, data: &[u8]| {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.land(j.blob, at, data, progress)
        };
        let got = (self.remote)
            .stream_range(d, (j.start, j.end), self.page, &mut land, &self.fetched)
            .await;
        (j, got)
    }

    /// Every payload blob (`what: X of Y MiB` on a terminal).
    pub fn fetch_all(&self, what: &'static str) -> Result<()> {
        let (missing, total): (Vec<Job>, u64) = {
            let q = self.queue();
            let missing: Vec<Job> = (0..self.layers.len())
                .map(|b| self.whole(b))
                .filter(|w| !self.all(&q, w, PRESENT))
                .collect();
            // What is left to write (part of a blob may be in already): the progress counts it.
            let pages = q.pages.iter().filter(|&&p| p != PRESENT).count() as u64;
            (missing, pages * self.page)
        };
        let progress = Progress::new(what, total);
        let r = self.fetch_jobs(&missing, Some(&progress));
        progress.done();
        r
    }

    /// The chunks `wanted` selects: of each blob, the range from the first of them to the last.
    pub fn fetch_chunks(&self, wanted: impl Fn(u64) -> bool) -> Result<()> {
        let mut jobs: Vec<Job> = Vec::new();
        let mut of_blob: HashMap<usize, usize> = HashMap::new();
        for c in (0..self.header.chunk_count()).filter(|&c| wanted(c)) {
            for j in self.parts_of(c) {
                match of_blob.get(&j.blob).map(|&i| &mut jobs[i]) {
                    Some(last) => {
                        (last.start, last.end) = (last.start.min(j.start), last.end.max(j.end))
                    }
                    None => {
                        of_blob.insert(j.blob, jobs.len());
                        jobs.push(j);
                    }
                }
            }
        }
        self.fetch_jobs(&jobs, None)
    }

    fn chunk_range(&self, chunk: u64) -> (u64, u64) {
        let cs = u64::from(self.header.chunk_size);
        let start = chunk * cs;
        (start, (start + cs).min(self.header.payload_len))
    }

    /// Chunk `chunk`'s bytes, as ranges of the blobs that hold them.
    fn parts_of(&self, chunk: u64) -> Vec<Job> {
        let (start, end) = self.chunk_range(chunk);
        (self.layout.parts(start, end))
            .map(|(blob, at, n)| Job {
                blob,
                start: at,
                end: at + n,
            })
            .collect()
    }

    /// Whether every blob is in.
    pub fn complete(&self) -> bool {
        self.queue().pages.iter().all(|&p| p == PRESENT)
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
            // (A gathered blob is not one stretch of the file: other images fetch it.)
            let at = (self.layers.iter().enumerate()).filter_map(|(b, l)| {
                (self.layout.contiguous(b)).map(|o| (l, self.header.payload_off + o))
            });
            c.index(&dest, at);
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

impl Sparse {
    /// Bytes fetched from the network when the process first wrote to its standard output.
    pub fn at_output(&self) -> Option<u64> {
        self.output.load(Ordering::Relaxed).checked_sub(1)
    }
}

impl Fetch for Sparse {
    fn nudge(&self) {
        self.wake.notify_one();
    }

    fn first_output(&self) {
        let b = self.bytes.load(Ordering::Relaxed);
        let _ = self
            .output
            .compare_exchange(0, b + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn fetch(&self, chunk: u64, whole: bool) -> Result<()> {
        let jobs: Vec<Job> = if whole {
            // Held to the early part's stretch of a blob until the gate opens (where the chunk
            // is in it: what is asked for is always fetched).
            let q = self.queue();
            let held = q.gate.as_ref().is_some_and(|g| !g.is_open());
            self.parts_of(chunk)
                .into_iter()
                .map(|part| match q.early_spans.get(&part.blob) {
                    Some(span) if held && span.start <= part.start && part.end <= span.end => *span,
                    _ => self.whole(part.blob),
                })
                .collect()
        } else {
            self.parts_of(chunk)
        };
        self.fetch_jobs(&jobs, None)
    }
}
