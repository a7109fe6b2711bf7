//! An image being fetched from a registry: a file of the image's full size beside its final
//! name, holding the head at once and each payload blob once it is fetched. A restore can start
//! from it before it is complete: the launcher asks for a chunk's blob ([`Fetch`]) just before it
//! reads and verifies the chunk, exactly as it would from a local file. Only a complete file takes
//! its final name; an incomplete one is removed.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use thaw::image::Header;

use super::artifact::{self, Descriptor};
use super::{Progress, Remote};
use crate::exit::{Code, Failure, Result};
use crate::restore::lazy::Fetch;

pub struct Sparse {
    remote: Remote,
    layers: Vec<Descriptor>,
    header: Header,
    /// Payload bytes per blob.
    per: u64,
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    present: Vec<AtomicBool>,
    /// One fetch at a time: the client's runtime runs on the calling thread.
    lock: Mutex<()>,
    /// Bytes fetched (head included).
    pub bytes: AtomicU64,
}

impl Sparse {
    /// Fetches the head of `m`'s image, checks that the manifest's blobs are the payload the
    /// head's header describes, and writes the head into a new file beside `dest`.
    pub fn create(remote: Remote, m: &artifact::Manifest, dest: &Path) -> Result<Sparse> {
        let head = remote.blob(&m.layers[0])?;
        let bad = |msg: String| Failure::new(Code::Corrupt, format!("{}: {msg}", remote.name()));
        let payload: u64 = m.layers[1..].iter().map(|l| l.size).sum();
        let file_len = head.len() as u64 + payload;
        let n = head.len().min(thaw::image::HEADER_LEN);
        let h = Header::decode(&head[..n], file_len, Path::new(&remote.name()))?;
        if head.len() as u64 != h.payload_off + h.manifest_len + h.trailer_len {
            return Err(bad("the image head does not match its header".into()));
        }
        let layers = m.layers[1..].to_vec();
        artifact::check_layers(&h, &layers).map_err(bad)?;
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |what: &str, e: std::io::Error| {
            Failure::new(Code::Io, format!("{what} {}: {e}", dest.display()))
        };
        let tmp = tempfile::Builder::new()
            .prefix(".thaw-pull-")
            .tempfile_in(dir)
            .map_err(|e| io("cannot create a file beside", e))?;
        let f = tmp.as_file();
        f.set_len(file_len).map_err(|e| io("cannot size", e))?;
        let split = h.payload_off as usize;
        f.write_all_at(&head[..split], 0)
            .and_then(|()| f.write_all_at(&head[split..], h.manifest_off))
            .map_err(|e| io("cannot write", e))?;
        let per = artifact::groups(&h).first().map_or(1, |g| g.1.max(1));
        Ok(Sparse {
            present: layers.iter().map(|_| AtomicBool::new(false)).collect(),
            layers,
            header: h,
            per,
            tmp,
            dest: dest.to_owned(),
            remote,
            lock: Mutex::new(()),
            bytes: AtomicU64::new(head.len() as u64),
        })
    }

    /// The file (complete or not) to open as the image.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Payload blob `g` is in the file (fetched now if it was not).
    pub fn fetch_group(&self, g: usize) -> Result<()> {
        self.fetch_groups(&[g])
    }

    /// Payload blobs `groups` are in the file: those missing are fetched, several at once.
    pub fn fetch_groups(&self, groups: &[usize]) -> Result<()> {
        let missing = |g: &&usize| !self.present[**g].load(Ordering::Acquire);
        if !groups.iter().any(|g| missing(&g)) {
            return Ok(());
        }
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let todo: Vec<usize> = groups.iter().filter(missing).copied().collect();
        let ds: Vec<&Descriptor> = todo.iter().map(|&g| &self.layers[g]).collect();
        for (g, data) in todo.into_iter().zip(self.remote.blobs(&ds)) {
            let data = data?;
            self.tmp
                .as_file()
                .write_all_at(&data, self.header.payload_off + g as u64 * self.per)
                .map_err(|e| {
                    Failure::new(
                        Code::Io,
                        format!("cannot write {}: {e}", self.dest.display()),
                    )
                })?;
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.present[g].store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Every payload blob (`what: i/n blobs` on a terminal).
    pub fn fetch_all(&self, what: &'static str) -> Result<()> {
        let n = self.layers.len();
        let progress = Progress::new(what, n);
        let step = 32;
        for start in (0..n).step_by(step) {
            let end = (start + step).min(n);
            self.fetch_groups(&(start..end).collect::<Vec<_>>())?;
            progress.show(end);
        }
        progress.done();
        Ok(())
    }

    /// The blobs holding the chunks `wanted` selects.
    pub fn fetch_chunks(&self, wanted: impl Fn(u64) -> bool) -> Result<()> {
        let mut groups: Vec<usize> = (0..self.header.chunk_count())
            .filter(|&c| wanted(c))
            .map(|c| self.group_of(c))
            .collect();
        groups.dedup();
        self.fetch_groups(&groups)
    }

    fn group_of(&self, chunk: u64) -> usize {
        (chunk * u64::from(self.header.chunk_size) / self.per) as usize
    }

    /// Whether every blob is in.
    pub fn complete(&self) -> bool {
        self.present.iter().all(|p| p.load(Ordering::Acquire))
    }

    /// Gives the file its final name once every blob is in it (flushed first); an incomplete
    /// file is removed.
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
        Ok(())
    }

    /// An image error about the temporary file, told of the reference instead.
    pub fn named(&self, e: thaw::image::ImageError) -> Failure {
        let f = Failure::from(e);
        let tmp = self.tmp.path().display().to_string();
        Failure::new(f.code, f.message.replace(&tmp, &self.remote.name()))
    }
}

impl Fetch for Sparse {
    fn fetch(&self, chunk: u64) -> Result<()> {
        self.fetch_group(self.group_of(chunk))
    }
}
