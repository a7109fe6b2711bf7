//! The caller's cache of images fetched by reference (`images/` in the thaw cache directory),
//! shared by every image and every launcher of the user.
//!
//! - Each complete image is `sha256-<manifest digest>.thaw`, beside `….blobs`: which payload blob
//!   (by digest) is at which offset of it. A launcher fetching another image reads the blobs any
//!   cached image holds from there instead of the network (checked against their digests), so
//!   images that share memory share the cache and the second start reads nothing twice.
//! - A file being fetched is `.thaw-pull-*`, locked (`flock`) by its launcher: it takes its final
//!   name by an atomic rename only once complete and verified, so a launcher that crashes
//!   mid-write leaves a partial file that a later launcher removes (its lock is gone, and it is
//!   more than a minute old), never a cached image with holes. Concurrent launchers fetching one
//!   image each write their own file; the last rename wins and both files are identical.
//! - The cache is bounded ([`DEFAULT_LIMIT`], or `$THAW_CACHE_MAX` bytes with an optional K, M
//!   or G): after a fetch, the images used least recently (a restore from the cache marks its
//!   file used) are removed until the rest fit. A launcher running from a removed file keeps it
//!   open: nothing running is affected.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::artifact::Descriptor;
use crate::restore::working_set::write_atomically;

/// Prefix of files being fetched.
pub const PARTIAL: &str = ".thaw-pull-";
/// A partial file younger than this is never removed, even unlocked (its launcher may be
/// between creating and locking it).
const PARTIAL_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
/// The cache's bound when `$THAW_CACHE_MAX` does not give one.
pub const DEFAULT_LIMIT: u64 = 10 << 30;

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// Bytes kept at most.
    limit: u64,
}

impl Cache {
    /// The cache in `dir` (a directory of the caller's, see `working_set::own_dir`).
    pub fn new(dir: PathBuf) -> Cache {
        Cache {
            dir,
            limit: DEFAULT_LIMIT,
        }
    }

    /// The same cache, bounded to `limit` bytes.
    pub fn bounded(self, limit: u64) -> Cache {
        Cache { limit, ..self }
    }

    /// Where the image with manifest digest `digest` is kept.
    pub fn image(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.thaw", digest.replace(':', "-")))
    }

    /// The digest `reference` (a tag) named the last time it was looked up here, if its image
    /// is still cached: only a guess of which image to verify while the registry is asked.
    pub fn last_named(&self, reference: &str) -> Option<String> {
        let d = std::fs::read_to_string(self.tag_file(reference)).ok()?;
        let hex = d.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| d.clone())
            .filter(|d| self.image(d).exists())
    }

    /// Notes that `reference` names `digest` now (best effort).
    pub fn remember(&self, reference: &str, digest: &str) {
        let f = self.tag_file(reference);
        if let Some(dir) = f.parent() {
            let _ = std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                });
        }
        let _ = write_atomically(&f, digest.as_bytes());
    }

    fn tag_file(&self, reference: &str) -> PathBuf {
        let name = super::artifact::sha256(reference.as_bytes());
        self.dir.join("tags").join(&name[7..])
    }

    /// Whether `path` is a file of this cache.
    pub fn holds(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
    }

    fn index_of(image: &Path) -> PathBuf {
        image.with_extension("blobs")
    }

    /// Every blob the cached images hold: digest → (image file, offset).
    pub fn blobs(&self) -> HashMap<String, (PathBuf, u64)> {
        let mut out = HashMap::new();
        for image in self.images() {
            let Ok(text) = std::fs::read_to_string(Self::index_of(&image.path)) else {
                continue;
            };
            for line in text.lines() {
                let mut words = line.split(' ');
                if let (Some(d), Some(Ok(off))) = (words.next(), words.next().map(str::parse)) {
                    out.entry(d.to_string())
                        .or_insert_with(|| (image.path.clone(), off));
                }
            }
        }
        out
    }

    /// Records which blob is where in the cached image `image` (best effort: without it, the
    /// image is only not shared).
    pub fn index<'a>(&self, image: &Path, blobs: impl Iterator<Item = (&'a Descriptor, u64)>) {
        let text: String = blobs
            .map(|(d, at)| format!("{} {at}\n", d.digest))
            .collect();
        let _ = write_atomically(&Self::index_of(image), text.as_bytes());
    }

    /// Marks a cached image used now (eviction removes the least recently used first).
    pub fn used(&self, image: &Path) {
        let _ = std::fs::File::options()
            .write(true)
            .open(image)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    /// Removes files left by launchers that died while fetching, then the least recently used
    /// images (never `keep`) until the cache holds at most its bound.
    pub fn trim(&self, keep: &Path) {
        let limit = self.limit;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                // Older than a minute too: a launcher locks its file a moment after creating it.
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > PARTIAL_GRACE));
                let stale = e.file_name().to_string_lossy().starts_with(PARTIAL)
                    && old
                    && std::fs::File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok());
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut images = self.images();
        let mut total: u64 = images.iter().map(|i| i.bytes).sum();
        images.sort_by_key(|i| i.used);
        for i in images {
            if total <= limit {
                break;
            }
            if i.path != keep {
                let _ = std::fs::remove_file(Self::index_of(&i.path));
                let _ = std::fs::remove_file(&i.path);
                total -= i.bytes;
            }
        }
    }

    fn images(&self) -> Vec<Cached> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("sha256-") && name.ends_with(".thaw")
            })
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some(Cached {
                    path: e.path(),
                    bytes: m.blocks() * 512,
                    used: m.mtime(),
                })
            })
            .collect()
    }
}

struct Cached {
    path: PathBuf,
    /// Space taken on disk.
    bytes: u64,
    used: i64,
}

/// The cache's bound: `$THAW_CACHE_MAX` (bytes, or with a K, M or G suffix) or
/// [`DEFAULT_LIMIT`].
pub fn limit(var: Option<&str>) -> Result<u64, String> {
    let Some(v) = var else {
        return Ok(DEFAULT_LIMIT);
    };
    let (num, shift) = match v.trim().as_bytes().last() {
        Some(b'K' | b'k') => (&v.trim()[..v.trim().len() - 1], 10),
        Some(b'M' | b'm') => (&v.trim()[..v.trim().len() - 1], 20),
        Some(b'G' | b'g') => (&v.trim()[..v.trim().len() - 1], 30),
        _ => (v.trim(), 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("THAW_CACHE_MAX={v}: not a size (bytes, or with K, M or G)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_bytes() {
        assert_eq!(limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(limit(Some("4096")), Ok(4096));
        assert_eq!(limit(Some("2G")), Ok(2 << 30));
        assert_eq!(limit(Some("300m")), Ok(300 << 20));
        assert!(limit(Some("lots")).is_err());
        assert!(limit(Some("G")).is_err());
    }

    #[test]
    fn the_least_recently_used_images_go_first_and_partial_files_of_the_dead() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path().to_owned());
        let img = |n: &str, age: u64| {
            let p = c.image(&format!("sha256:{n}"));
            std::fs::write(&p, vec![1u8; 64 << 10]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age))
                .unwrap();
            c.index(
                &p,
                std::iter::once((&Descriptor::of("x", n.as_bytes()), 4096)),
            );
            p
        };
        let (old, mid, new) = (img("a", 300), img("b", 200), img("c", 100));
        c.used(&old);
        let dead = dir.path().join(format!("{PARTIAL}dead"));
        std::fs::write(&dead, b"half").unwrap();
        let young = dir.path().join(format!("{PARTIAL}young"));
        std::fs::write(&young, b"just made").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - PARTIAL_GRACE * 2)
            .unwrap();
        let live = tempfile::Builder::new()
            .prefix(PARTIAL)
            .tempfile_in(dir.path())
            .unwrap();
        live.as_file().lock().unwrap();
        assert_eq!(c.blobs().len(), 3);
        // Room for two: the least recently used (b, since a was just used) goes, with its index.
        let one = std::fs::metadata(&old).unwrap().blocks() * 512;
        c.clone().bounded(2 * one).trim(&new);
        assert!(old.exists() && new.exists() && !mid.exists());
        assert!(!Cache::index_of(&mid).exists());
        assert!(!dead.exists(), "a partial file nobody holds is removed");
        assert!(young.exists(), "unless it was made a moment ago");
        assert!(live.path().exists(), "a partial file being written is kept");
        assert_eq!(c.blobs().len(), 2);
        // `keep` stays even when it alone is over the bound.
        c.bounded(0).trim(&new);
        assert!(new.exists() && !old.exists());
    }
}
