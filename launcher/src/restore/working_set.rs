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

use std::io::Write;
use std::path::{Path, PathBuf};

use thaw::image::Digest;

const MAGIC: &[u8; 8] = b"THAWWS01";
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

/// The working set of one image: what to replay, and where to record what this restore adds.
#[derive(Debug, Default)]
pub struct WorkingSet {
    pub replay: Vec<Touch>,
    /// Where to write the record of this restore, and the image it is for (`None`: no cache).
    pub record_to: Option<(PathBuf, Digest)>,
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
            replay,
            record_to: Some((path, digest)),
        }
    }

    /// Writes the record (the replayed touches with this restore's new ones; nothing when none
    /// is new), atomically: a concurrent launcher reads the old state or the new, never half of
    /// it. Best effort: a cache that cannot be written only means the next restore records
    /// again.
    pub fn save(&self, touches: &[Touch]) {
        let Some((path, digest)) = self.record_to.as_ref().filter(|_| !touches.is_empty()) else {
            return;
        };
        let _ = write_atomically(path, &encode(digest, touches));
    }
}

/// The record of the image with `digest` in `cache`, as stored (for `thaw push`).
pub fn recorded(cache: &Path, digest: &Digest) -> Option<Vec<u8>> {
    std::fs::read(cache.join("working-sets").join(digest.to_string())).ok()
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

fn encode(digest: &Digest, touches: &[Touch]) -> Vec<u8> {
    let touches = &touches[..touches.len().min(MAX_TOUCHES)];
    let mut out = Vec::with_capacity(48 + touches.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&(touches.len() as u64).to_le_bytes());
    for t in touches {
        let word = match *t {
            Touch::Chunk(c) => c,
            Touch::Zero(a) => a | ZERO,
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// The touches of a record for this image, if it is one: every entry names a chunk of the image
/// or an aligned block of user addresses.
fn decode(bytes: &[u8], digest: &Digest, chunks: u64, chunk_size: u64) -> Option<Vec<Touch>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let rest = rest.strip_prefix(digest.0.as_slice())?;
    let (count, rest) = rest.split_first_chunk::<8>()?;
    let count = u64::from_le_bytes(*count);
    if count > MAX_TOUCHES as u64 || rest.len() as u64 != count * 8 {
        return None;
    }
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
        assert!(ws.replay.is_empty() && ws.record_to.is_some());
        let touches = [
            Touch::Chunk(7),
            Touch::Zero(0x7f00_0001_0000),
            Touch::Chunk(99),
        ];
        ws.save(&touches);
        let again = WorkingSet::load(Some(dir.path()), digest(1), 100, 65536);
        assert_eq!(again.replay, touches);
        assert!(again.record_to.is_some(), "what a replay adds is kept too");
        // Another image has none.
        assert!(WorkingSet::load(Some(dir.path()), digest(2), 100, 65536)
            .replay
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
        let good = encode(&d, &[Touch::Chunk(1), Touch::Zero(0x10000)]);
        assert!(decode(&good, &d, 2, 65536).is_some());
        assert!(decode(&good, &digest(4), 2, 65536).is_none(), "other image");
        assert!(decode(&good, &d, 1, 65536).is_none(), "chunk out of range");
        assert!(decode(&encode(&d, &[Touch::Zero(0x1000)]), &d, 2, 65536).is_none());
        assert!(decode(&encode(&d, &[Touch::Zero(USER_END)]), &d, 2, 65536).is_none());
        assert!(
            decode(&good[..good.len() - 1], &d, 2, 65536).is_none(),
            "truncated"
        );
        let mut long = good.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(decode(&long, &d, 2, 65536).is_none(), "count mismatch");
        assert!(decode(b"THAWWS01", &d, 2, 65536).is_none());
    }
}
