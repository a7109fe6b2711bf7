//! Working sets: what a restored process touched, in order, so that later restores of the same
//! image bring it in ahead of the process instead of one fault at a time.
//!
//! A restore of one image starts from the same state every time, so its first moments touch
//! much the same memory in much the same order (REAP, ASPLOS'21). With lazy memory the launcher
//! sees every first touch: a chunk of saved pages, or a never-saved page that reads as zero. The
//! first lazy restore of an image records those touches; later ones replay the record on the
//! launcher's thread while the process runs, faults first, so the chunks are verified and copied
//! in, and the zero pages allocated, before the process gets there. A replaying restore adds to
//! the record what the process touched that the record lacks: the recording restore filled
//! memory in the background too, and missed the chunks it brought in before the process got
//! there (about 60 of Node's 300).
//!
//! The record is kept in the user's cache, named by the image's content digest, and is not
//! signed: it can change the order in which memory is filled, never a byte of it. Chunks are still
//! verified against the signed digests just before they are copied in, zero pages are filled only
//! where the image saved nothing, and a record that does not parse is ignored.
//!
//! Early and late: what matters to a warm start is what the process touches before its first
//! response. A Lua interpreter answers after 30 of the 430 chunks it touches, then frees its whole
//! heap on the way out; bringing those 400 in at once competes with the answer for the two cores
//! (it was slower than no record at all). So the launcher watches the process's standard output
//! (the first write to it is its first response, as the caller sees it), and the record keeps the
//! touches made before it first ("early"), in order, and the others after. A replay brings the
//! early ones in at once; the late ones, and filling memory in the background, wait for that
//! first output, or for the process to go quiet (no fault for as long as its first response took
//! when recorded), so that they never compete with the response ([`Gate`]).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use thaw::image::Digest;

const MAGIC_V1: &[u8; 8] = b"THAWWS01";
const MAGIC: &[u8; 8] = b"THAWWS02";
/// `first_output` never seen.
const NO_OUTPUT: u64 = u64::MAX;
/// Entries kept at most (8 MiB of record): far more than any start touches.
const MAX_TOUCHES: usize = 1 << 20;
/// Bit that marks a zero block (the rest is its address); chunks are their index.
const ZERO: u64 = 1 << 63;
/// The end of the x86_64 user address space.
const USER_END: u64 = 0x0000_8000_0000_0000;

/// One first touch, in the unit the launcher fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Touch {
    /// A payload chunk of the image (its index).
    Chunk(u64),
    /// A block of `chunk_size` bytes at this image address, holding never-saved pages.
    Zero(u64),
}

/// A recorded working set: touches in order, the first `early` of them made before the process
/// first wrote to its standard output (all of them when that was never seen).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub touches: Vec<Touch>,
    pub early: usize,
    /// When the process first wrote to its standard output, from the moment it was let go, in
    /// the restore that recorded it (`None`: never seen, or a record from before this was kept).
    pub first_output: Option<Duration>,
}

/// What one restore learnt about the process, for the next record ([`Record::next`]).
#[derive(Debug, Default)]
pub struct Learnt {
    /// Touches the record lacked, in order: each with the replay's position when it came (how
    /// many of the record's touches were replayed or passed by then), and whether it came
    /// before the process's first output.
    pub new: Vec<(usize, Touch, bool)>,
    /// Touches of the record's late part the process faulted on before its first output.
    pub promoted: HashSet<Touch>,
    /// The replay's position and the time (from the process being let go) at the first output.
    pub output: Option<(usize, Duration)>,
}

impl Record {
    /// Whether `i`-th touch is one to bring in at once.
    pub fn is_early(&self, i: usize) -> bool {
        i < self.early
    }

    /// The chunks of the record, in order, and how many of them are of its early part (what
    /// fetching and verifying ahead go by; zero blocks need neither).
    pub fn chunks(&self) -> (Vec<u64>, usize) {
        let chunk = |t: &Touch| match *t {
            Touch::Chunk(c) => Some(c),
            Touch::Zero(_) => None,
        };
        let early = self.touches[..self.early].iter().filter_map(chunk).count();
        (self.touches.iter().filter_map(chunk).collect(), early)
    }

    /// The record to keep after a restore that replayed this one and learnt `l`: the touches in
    /// their order (new ones where the replay was when they came), early ones first; `None`
    /// when nothing changed.
    pub fn next(&self, l: &Learnt) -> Option<Record> {
        let learnt_output = l.output.is_some() && self.first_output.is_none();
        // Faults before an output never seen (standard output was /dev/null, or the process
        // wrote nothing) say nothing about what comes before it.
        let promoted = l.output.map(|_| &l.promoted);
        if l.new.is_empty() && promoted.is_none_or(|p| p.is_empty()) && !learnt_output {
            return None;
        }
        // Which replayed touches were early: as recorded where it was; else, seen now, those
        // replayed before the first output (the replay ran ahead of the process in its order).
        let replayed_early = |i: usize, t: &Touch| match (self.first_output, l.output) {
            (Some(_), _) => self.is_early(i) || promoted.is_some_and(|p| p.contains(t)),
            (None, Some((at, _))) => i < at,
            (None, None) => true,
        };
        // A new touch is early if it came before the first output; when no output was seen
        // this time, as the record's touches are (all early without a first output).
        let new_early = |before_output: bool| match l.output {
            Some(_) => before_output,
            None => self.first_output.is_none(),
        };
        let (mut early, mut late) = (Vec::new(), Vec::new());
        let mut put = |is_early: bool, t: Touch| match is_early {
            true => early.push(t),
            false => late.push(t),
        };
        let mut new = l.new.iter().peekable();
        for (i, t) in self.touches.iter().enumerate() {
            while let Some((_, n, before)) = new.next_if(|(at, _, _)| *at <= i) {
                put(new_early(*before), *n);
            }
            put(replayed_early(i, t), *t);
        }
        for (_, n, before) in new {
            put(new_early(*before), *n);
        }
        let first_output = l.output.map(|(_, t)| t).or(self.first_output);
        let count = early.len();
        early.extend(late);
        early.truncate(MAX_TOUCHES);
        Some(Record {
            early: if first_output.is_some() {
                count.min(early.len())
            } else {
                early.len()
            },
            touches: early,
            first_output,
        })
    }
}

/// Whether the late part of a replay, and filling in the background, may go on: opened by the
/// memory server at the process's first output or once it is quiet; the verifier ahead and the
/// registry's prefetch wait for it too. Open unless made closed.
#[derive(Debug)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(true)
    }
}

impl Gate {
    pub fn new(open: bool) -> Gate {
        Gate {
            open: Mutex::new(open),
            changed: Condvar::new(),
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
    }

    pub fn is_open(&self) -> bool {
        *self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the waiters without opening (one of them is told to stop).
    pub fn nudge(&self) {
        let _guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }

    /// Waits until the gate is open (true) or `stop()` says to give up (false; checked again
    /// at each [`Self::nudge`]).
    pub fn wait(&self, stop: impl Fn() -> bool) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            if stop() {
                return false;
            }
            open = self.changed.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        true
    }
}

/// The working set of one image: what to replay, and where to record what this restore adds.
#[derive(Debug, Default)]
pub struct WorkingSet {
    pub replay: Record,
    /// Where to write the record of this restore, and the image it is for (`None`: no cache).
    pub record_to: Option<(PathBuf, Digest)>,
    /// Held by the replay's early part (open at once when the record has no first output).
    pub gate: std::sync::Arc<Gate>,
    /// Test hook (`THAW_TEST_HOLD_QUIET_MS`, read by an unprivileged launcher only): how long a
    /// quiet process holds the late part back, instead of what the record says.
    pub hold_quiet: Option<Duration>,
}

impl WorkingSet {
    /// The working set of the image with `digest` in `cache`, a directory of the caller's (see
    /// [`own_dir`]; none: nothing is replayed or recorded). `chunks` and `chunk_size` bound what
    /// a record may name.
    pub fn load(cache: Option<&Path>, digest: Digest, chunks: u64, chunk_size: u64) -> WorkingSet {
        let Some(dir) = cache.and_then(|c| own_dir(c, &["working-sets"])) else {
            return WorkingSet::default();
        };
        let path = dir.join(digest.to_string());
        let replay = std::fs::read(&path)
            .ok()
            .and_then(|bytes| decode(&bytes, &digest, chunks, chunk_size))
            .unwrap_or_default();
        WorkingSet {
            gate: std::sync::Arc::new(Gate::new(replay.first_output.is_none())),
            replay,
            record_to: Some((path, digest)),
            hold_quiet: None,
        }
    }

    /// Writes the record (`None`: nothing changed), atomically: a concurrent launcher reads the
    /// old state or the new, never half of it. Best effort: a cache that cannot be written only
    /// means the next restore records again.
    pub fn save(&self, record: Option<&Record>) {
        let (Some((path, digest)), Some(r)) = (self.record_to.as_ref(), record) else {
            return;
        };
        let _ = write_atomically(path, &encode(digest, r));
    }
}

/// The record of the image with `digest` in `cache`, as stored (for `thaw push`).
pub fn recorded(cache: &Path, digest: &Digest) -> Option<Vec<u8>> {
    std::fs::read(cache.join("working-sets").join(digest.to_string())).ok()
}

/// `bytes` as a record of the image with `digest`, if it is one (see [`WorkingSet::load`]).
pub fn parse(bytes: &[u8], digest: &Digest, chunks: u64, chunk_size: u64) -> Option<Record> {
    decode(bytes, digest, chunks, chunk_size)
}

/// Keeps `bytes` (a record that came with the image, from its pusher) as the record of the image
/// with `digest` in `cache`, unless there is one already or `bytes` is not a record for this
/// image. Best effort, like [`WorkingSet::save`].
pub fn install(cache: &Path, digest: &Digest, bytes: &[u8], chunks: u64, chunk_size: u64) {
    let Some(dir) = own_dir(cache, &["working-sets"]) else {
        return;
    };
    let path = dir.join(digest.to_string());
    if !path.exists() && decode(bytes, digest, chunks, chunk_size).is_some() {
        let _ = write_atomically(&path, bytes);
    }
}

fn encode(digest: &Digest, r: &Record) -> Vec<u8> {
    let touches = &r.touches[..r.touches.len().min(MAX_TOUCHES)];
    let mut out = Vec::with_capacity(64 + touches.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&(touches.len() as u64).to_le_bytes());
    out.extend_from_slice(&(r.early.min(touches.len()) as u64).to_le_bytes());
    let first = r
        .first_output
        .map_or(NO_OUTPUT, |d| (d.as_micros() as u64).min(NO_OUTPUT - 1));
    out.extend_from_slice(&first.to_le_bytes());
    for t in touches {
        let word = match *t {
            Touch::Chunk(c) => c,
            Touch::Zero(a) => a | ZERO,
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// A record for this image, if it is one: every entry names a chunk of the image or an aligned
/// block of user addresses. (A record of the first format has no first output: all early.)
fn decode(bytes: &[u8], digest: &Digest, chunks: u64, chunk_size: u64) -> Option<Record> {
    let word = |b: &[u8; 8]| u64::from_le_bytes(*b);
    let (v2, rest) = match bytes.strip_prefix(MAGIC) {
        Some(rest) => (true, rest),
        None => (false, bytes.strip_prefix(MAGIC_V1)?),
    };
    let rest = rest.strip_prefix(digest.0.as_slice())?;
    let (count, mut rest) = rest.split_first_chunk::<8>()?;
    let count = word(count);
    let (mut early, mut first_output) = (count, None);
    if v2 {
        let (e, r) = rest.split_first_chunk::<8>()?;
        let (f, r) = r.split_first_chunk::<8>()?;
        (early, rest) = (word(e), r);
        first_output = (word(f) != NO_OUTPUT).then(|| Duration::from_micros(word(f)));
        if early > count || (first_output.is_none() && early != count) {
            return None;
        }
    }
    if count > MAX_TOUCHES as u64 || rest.len() as u64 != count * 8 {
        return None;
    }
    let touches = decode_touches(rest, chunks, chunk_size)?;
    Some(Record {
        touches,
        early: early as usize,
        first_output,
    })
}

fn decode_touches(rest: &[u8], chunks: u64, chunk_size: u64) -> Option<Vec<Touch>> {
    rest.chunks_exact(8)
        .map(|w| {
            let w = u64::from_le_bytes(w.try_into().ok()?);
            if w & ZERO != 0 {
                let a = w & !ZERO;
                (a < USER_END && a.is_multiple_of(chunk_size)).then_some(Touch::Zero(a))
            } else {
                (w < chunks).then_some(Touch::Chunk(w))
            }
        })
        .collect()
}

/// `base/sub/...`, created where missing, if every part from `base` down is a real directory
/// (not a link) of the caller's that nobody else may write: a launcher run by root never writes
/// where another user could point it.
pub fn own_dir(base: &Path, subs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let euid = crate::sys::geteuid();
    let ok = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o022 == 0)
    };
    let mut dir = base.to_owned();
    if !ok(&dir) {
        return None;
    }
    for sub in subs {
        dir.push(sub);
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        if !ok(&dir) {
            return None;
        }
    }
    Some(dir)
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename: a reader sees the
/// old contents or the new, never half.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: u8) -> Digest {
        Digest([b; 32])
    }

    #[test]
    fn a_record_round_trips_for_its_image_only() {
        let dir = tempfile::tempdir().unwrap();
        let ws = WorkingSet::load(Some(dir.path()), digest(1), 100, 65536);
        assert!(ws.replay.touches.is_empty() && ws.record_to.is_some());
        assert!(ws.gate.is_open(), "nothing to hold without a first output");
        let record = Record {
            touches: vec![
                Touch::Chunk(7),
                Touch::Zero(0x7f00_0001_0000),
                Touch::Chunk(99),
            ],
            early: 2,
            first_output: Some(Duration::from_micros(1300)),
        };
        ws.save(Some(&record));
        let again = WorkingSet::load(Some(dir.path()), digest(1), 100, 65536);
        assert_eq!(again.replay, record);
        assert!(!again.gate.is_open(), "the late part waits");
        assert!(again.record_to.is_some(), "what a replay adds is kept too");
        // Another image has none.
        assert!(WorkingSet::load(Some(dir.path()), digest(2), 100, 65536)
            .replay
            .touches
            .is_empty());
    }

    #[test]
    fn only_a_directory_of_the_callers_own_is_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(own_dir(dir.path(), &["a", "b"]).is_some());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("a"), &link).unwrap();
        assert!(own_dir(&link, &["b"]).is_none(), "a link");
        assert!(
            own_dir(dir.path(), &["link", "b"]).is_none(),
            "a link below"
        );
        std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(own_dir(dir.path(), &["a"]).is_none(), "writable by others");
        assert!(WorkingSet::load(Some(&link), digest(1), 1, 65536)
            .record_to
            .is_none());
        assert!(WorkingSet::load(None, digest(1), 1, 65536)
            .record_to
            .is_none());
    }

    #[test]
    fn records_that_name_anything_else_are_ignored() {
        let d = digest(3);
        let all = |touches: Vec<Touch>| Record {
            early: touches.len(),
            touches,
            first_output: None,
        };
        let good = encode(&d, &all(vec![Touch::Chunk(1), Touch::Zero(0x10000)]));
        assert!(decode(&good, &d, 2, 65536).is_some());
        assert!(decode(&good, &digest(4), 2, 65536).is_none(), "other image");
        assert!(decode(&good, &d, 1, 65536).is_none(), "chunk out of range");
        assert!(decode(&encode(&d, &all(vec![Touch::Zero(0x1000)])), &d, 2, 65536).is_none());
        assert!(decode(&encode(&d, &all(vec![Touch::Zero(USER_END)])), &d, 2, 65536).is_none());
        // The early count: at most the touches, and all of them without a first output.
        let mut bad = good.clone();
        bad[48..56].copy_from_slice(&3u64.to_le_bytes());
        assert!(
            decode(&bad, &d, 2, 65536).is_none(),
            "more early than touches"
        );
        bad[48..56].copy_from_slice(&1u64.to_le_bytes());
        assert!(
            decode(&bad, &d, 2, 65536).is_none(),
            "a late part without an output"
        );
        assert!(
            decode(&good[..good.len() - 1], &d, 2, 65536).is_none(),
            "truncated"
        );
        let mut long = good.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(decode(&long, &d, 2, 65536).is_none(), "count mismatch");
        assert!(decode(b"THAWWS01", &d, 2, 65536).is_none());
        assert!(decode(b"THAWWS02", &d, 2, 65536).is_none());
    }

    #[test]
    fn a_record_of_the_first_format_is_all_early() {
        let d = digest(5);
        let mut v1 = b"THAWWS01".to_vec();
        v1.extend_from_slice(&d.0);
        v1.extend_from_slice(&2u64.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&0u64.to_le_bytes());
        let r = decode(&v1, &d, 2, 65536).unwrap();
        assert_eq!(r.touches, [Touch::Chunk(1), Touch::Chunk(0)]);
        assert_eq!((r.early, r.first_output), (2, None));
    }

    /// Chunk touches `0..n` as a record with the first `early` of them early.
    fn chunks(n: u64, early: usize, output_us: Option<u64>) -> Record {
        Record {
            touches: (0..n).map(Touch::Chunk).collect(),
            early,
            first_output: output_us.map(Duration::from_micros),
        }
    }

    #[test]
    fn new_touches_go_where_the_replay_was_when_they_came() {
        let (a, b, c) = (Touch::Chunk(1), Touch::Chunk(2), Touch::Chunk(3));
        let (x, y, z) = (Touch::Chunk(8), Touch::Zero(0x10000), Touch::Chunk(9));
        let rec = |t: Vec<Touch>| Record {
            early: t.len(),
            touches: t,
            first_output: None,
        };
        let new = |v: &[(usize, Touch)]| Learnt {
            new: v.iter().map(|&(at, t)| (at, t, true)).collect(),
            ..Learnt::default()
        };
        assert_eq!(rec(vec![a, b]).next(&new(&[])), None, "nothing new: kept");
        let first = Record::default().next(&new(&[(0, x), (0, y)])).unwrap();
        assert_eq!(first.touches, [x, y], "a first record");
        let next = rec(vec![a, b, c]).next(&new(&[(0, x), (2, y), (3, z)]));
        assert_eq!(next.unwrap().touches, [x, a, b, y, c, z]);
    }

    #[test]
    fn the_first_recording_splits_at_the_first_output() {
        // No record: every touch is new; the output came after the third.
        let l = Learnt {
            new: (0..6).map(|c| (0, Touch::Chunk(c), c < 3)).collect(),
            output: Some((0, Duration::from_micros(900))),
            ..Learnt::default()
        };
        assert_eq!(Record::default().next(&l).unwrap(), chunks(6, 3, Some(900)));
        // Never any output: all early, as before.
        let l = Learnt {
            new: (0..2).map(|c| (0, Touch::Chunk(c), false)).collect(),
            ..Learnt::default()
        };
        assert_eq!(Record::default().next(&l).unwrap(), chunks(2, 2, None));
    }

    #[test]
    fn a_replay_keeps_its_split_and_adds_what_it_learnt() {
        let r = chunks(6, 3, Some(900));
        assert_eq!(r.next(&Learnt::default()), None, "nothing new");
        let seen = Some((3, Duration::from_micros(500)));
        assert_eq!(
            r.next(&Learnt {
                output: seen,
                ..Learnt::default()
            }),
            None
        );
        // A late touch faulted on before the output moves up; a new one before the output
        // goes where the replay was, one after it goes late.
        let l = Learnt {
            new: vec![(1, Touch::Chunk(10), true), (4, Touch::Chunk(11), false)],
            promoted: [Touch::Chunk(4)].into_iter().collect(),
            output: seen,
        };
        let n = r.next(&l).unwrap();
        let c = |v: &[u64]| v.iter().copied().map(Touch::Chunk).collect::<Vec<_>>();
        assert_eq!(n.touches, c(&[0, 10, 1, 2, 4, 3, 11, 5]));
        assert_eq!(
            (n.early, n.first_output),
            (5, Some(Duration::from_micros(500)))
        );
    }

    #[test]
    fn a_restore_that_saw_no_output_moves_nothing_up() {
        // Standard output was /dev/null: the late touches it faulted on were not before any
        // output, and a new touch goes late.
        let r = chunks(6, 3, Some(900));
        let l = Learnt {
            new: vec![(4, Touch::Chunk(11), true)],
            promoted: [Touch::Chunk(4)].into_iter().collect(),
            output: None,
        };
        let n = r.next(&l).unwrap();
        assert_eq!(n.early, 3);
        assert_eq!(n.touches[3..], [3, 11, 4, 5].map(Touch::Chunk));
        let l = Learnt {
            promoted: [Touch::Chunk(4)].into_iter().collect(),
            ..Learnt::default()
        };
        assert_eq!(r.next(&l), None, "nothing to keep");
    }

    #[test]
    fn a_record_without_an_output_learns_its_split_from_the_replay() {
        // Replayed all at once; the output came when four had been brought in.
        let r = chunks(8, 8, None);
        let l = Learnt {
            new: vec![(6, Touch::Chunk(20), true)],
            output: Some((4, Duration::from_micros(700))),
            ..Learnt::default()
        };
        let n = r.next(&l).unwrap();
        assert_eq!(n.early, 5, "four replayed before the output, one new");
        assert_eq!(n.touches.len(), 9);
        assert_eq!(n.touches[8], Touch::Chunk(7));
    }

    #[test]
    fn the_gate_lets_waiters_go_when_opened_or_told_to_stop() {
        let gate = std::sync::Arc::new(Gate::new(false));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (gate.clone(), stop.clone());
        let waiter =
            std::thread::spawn(move || g.wait(|| s.load(std::sync::atomic::Ordering::Relaxed)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        gate.nudge();
        assert!(!waiter.join().unwrap(), "stopped, not opened");
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.wait(|| false));
        gate.open();
        assert!(waiter.join().unwrap());
        assert!(gate.is_open());
    }
}
