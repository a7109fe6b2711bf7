//! Reading images: bounds-check, verify the signature, and only then decode.
//!
//! The type states make the order evident: [`ImageFile`] holds raw bytes and has no manifest;
//! the only ways to an [`Image`] (which has one) are [`ImageFile::verify`], which checks the
//! signature against a trust store first, and [`ImageFile::decode_unverified`], whose name says
//! what it is and whose result is marked [`Provenance::Unverified`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use thaw_signing::{Fingerprint, TrustStore};

use super::header::{Header, Trailer, HEADER_LEN, TRAILER_LEN};
use super::writer::content_digest;
use super::{Digest, ImageError, SIGNATURE_DOMAIN};
use crate::state::Manifest;

/// Up to this many bytes, chunks are verified on the calling thread alone.
const SMALL_SELECTION: u64 = 2 << 20;

/// An opened image whose header is bounds-checked and whose header block, manifest and trailer
/// bytes are in memory, raw and not yet trusted.
#[derive(Debug)]
pub struct ImageFile {
    path: PathBuf,
    file: File,
    header: Header,
    header_block: Vec<u8>,
    manifest_bytes: Vec<u8>,
    trailer: Trailer,
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], off: u64) -> Result<(), ImageError> {
    file.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ImageError::corrupt(path, "file shrank while it was being read")
        } else {
            ImageError::io("cannot read", path, e)
        }
    })
}

impl ImageFile {
    /// Opens `path` and reads only what the signature covers, after checking every offset and
    /// length in the header against the file's size.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let file = open_regular(path, false).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                ImageError::corrupt(path, "not a regular file")
            } else {
                ImageError::io("cannot open", path, e)
            }
        })?;
        let meta = file
            .metadata()
            .map_err(|e| ImageError::io("cannot stat", path, e))?;
        if !meta.is_file() {
            return Err(ImageError::corrupt(path, "not a regular file"));
        }
        let file_len = meta.len();
        let mut head = [0u8; HEADER_LEN];
        let n = (file_len.min(HEADER_LEN as u64)) as usize;
        read_exact_at(&file, path, &mut head[..n], 0)?;
        let header = Header::decode(&head[..n], file_len, path)?;

        // Sizes below are bounded by Header::decode: one page, MAX_MANIFEST_LEN, TRAILER_LEN.
        let mut header_block = vec![0u8; header.payload_off as usize];
        read_exact_at(&file, path, &mut header_block, 0)?;
        let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
        read_exact_at(&file, path, &mut manifest_bytes, header.manifest_off)?;
        let mut trailer = [0u8; TRAILER_LEN];
        read_exact_at(&file, path, &mut trailer, header.trailer_off)?;
        let trailer = Trailer::decode(&trailer, path)?;
        Ok(ImageFile {
            path: path.to_owned(),
            file,
            header,
            header_block,
            manifest_bytes,
            trailer,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// Checks the signature over the raw header block and manifest against `trust`, then decodes
    /// the manifest.
    pub fn verify(self, trust: &TrustStore) -> Result<Image, ImageError> {
        let (signer, signature) = match self.trailer {
            Trailer::Unsigned => return Err(ImageError::Unsigned { path: self.path }),
            Trailer::Ed25519 { signer, signature } => (signer, signature),
        };
        // The signature covers the SHA-256 of the header block and manifest (one pass over a
        // manifest that can be a megabyte: Ed25519's own SHA-512 over it took three times longer).
        let digest = content_digest(&self.header_block, &self.manifest_bytes);
        let key = trust
            .verify(&signer, SIGNATURE_DOMAIN, &[&digest.0], &signature)
            .map_err(|source| ImageError::Signature {
                path: self.path.clone(),
                source,
            })?;
        let provenance = Provenance::Verified {
            signer,
            key_file: key.source.clone(),
        };
        self.decode(provenance, Some(digest))
    }

    /// Decodes the manifest WITHOUT checking the signature. For signing one's own image and for
    /// explicit debugging options only; the result says it is unverified.
    pub fn decode_unverified(self) -> Result<Image, ImageError> {
        let provenance = Provenance::Unverified {
            claimed_signer: self.trailer.signer(),
        };
        self.decode(provenance, None)
    }

    fn decode(self, provenance: Provenance, digest: Option<Digest>) -> Result<Image, ImageError> {
        let (manifest, rest) = postcard::take_from_bytes::<Manifest>(&self.manifest_bytes)
            .map_err(|e| ImageError::corrupt(&self.path, format!("cannot decode manifest: {e}")))?;
        if !rest.is_empty() {
            return Err(ImageError::corrupt(
                &self.path,
                format!("{} stray bytes after the manifest", rest.len()),
            ));
        }
        check_manifest(&manifest, &self.header, &self.path)?;
        Ok(Image {
            content_digest: digest
                .unwrap_or_else(|| content_digest(&self.header_block, &self.manifest_bytes)),
            path: self.path,
            file: self.file,
            header: self.header,
            header_block: self.header_block,
            manifest_bytes: self.manifest_bytes,
            manifest,
            provenance,
        })
    }
}

/// Opens `path` without blocking (a FIFO or a device put where a file was expected would block an
/// open for reading forever) and only if it is a regular file; the descriptor is blocking again.
pub fn open_regular(path: &Path, write: bool) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    crate::sys::fcntl(f.as_raw_fd(), libc::F_SETFL, 0)?;
    Ok(f)
}

/// Consistency of the decoded manifest with the header: the chunk table covers the payload exactly
/// and every payload reference lies inside it.
fn check_manifest(m: &Manifest, h: &Header, path: &Path) -> Result<(), ImageError> {
    if m.chunks.chunk_size != h.chunk_size {
        return Err(ImageError::corrupt(
            path,
            format!(
                "manifest chunk size {} differs from the header's {}",
                m.chunks.chunk_size, h.chunk_size
            ),
        ));
    }
    if m.chunks.digests.len() as u64 != h.chunk_count() {
        return Err(ImageError::corrupt(
            path,
            format!(
                "manifest has {} chunk digests for a payload of {} chunks",
                m.chunks.digests.len(),
                h.chunk_count()
            ),
        ));
    }
    let refs = m
        .memory
        .iter()
        .flat_map(|v| v.pages.iter().map(|r| r.payload))
        .chain(
            m.shared
                .iter()
                .flat_map(|o| o.pages.iter().map(|r| r.payload)),
        )
        .chain(m.files.iter().filter_map(|f| match &f.kind {
            crate::state::files::FdKind::Pipe { buffered, .. } => *buffered,
            crate::state::files::FdKind::Socket(crate::state::sockets::Socket::Pair(p)) => p.queued,
            crate::state::files::FdKind::Socket(crate::state::sockets::Socket::Bound(b)) => {
                b.queued
            }
            _ => None,
        }))
        // An AIO ring's unreaped events.
        .chain(m.memory.iter().filter_map(|v| match &v.backing {
            crate::state::memory::Backing::Aio(r) => r.events,
            _ => None,
        }))
        // The bytes waiting in a FIFO made again (its own entry field).
        .chain(m.files.iter().filter_map(|f| f.fifo_bytes))
        // An io_uring instance's memory.
        .chain(
            m.files
                .iter()
                .flat_map(|f| match &f.kind {
                    crate::state::files::FdKind::IoUring(r) => [r.rings, r.sqes],
                    _ => [None, None],
                })
                .flatten(),
        );
    for r in refs {
        if r.end().is_none_or(|end| end > h.payload_len) {
            return Err(ImageError::corrupt(
                path,
                format!(
                    "payload range {}+{} lies outside the {}-byte payload",
                    r.offset, r.len, h.payload_len
                ),
            ));
        }
    }
    super::validate::validate(m, u64::from(h.page_size)).map_err(|e| ImageError::corrupt(path, e))
}

/// Whether an image's manifest was checked against a trusted signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    Verified {
        signer: Fingerprint,
        /// The trust-store file that holds the signer's public key.
        key_file: PathBuf,
    },
    Unverified {
        claimed_signer: Option<Fingerprint>,
    },
}

/// An image with a decoded manifest.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: File,
    header: Header,
    header_block: Vec<u8>,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    provenance: Provenance,
    content_digest: Digest,
}

impl Image {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }
    /// SHA-256 of the header block and manifest (see [`super::SavedImage::digest`]).
    pub fn content_digest(&self) -> Digest {
        self.content_digest
    }
    pub fn file(&self) -> &File {
        &self.file
    }
    pub(crate) fn header_block(&self) -> &[u8] {
        &self.header_block
    }
    pub(crate) fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Byte range of chunk `index` in the file.
    fn chunk_range(&self, index: u64) -> (u64, usize) {
        let cs = u64::from(self.header.chunk_size);
        let start = index * cs;
        let len = cs.min(self.header.payload_len - start);
        (self.header.payload_off + start, len as usize)
    }

    /// Reads chunk `index` into `buf` (which must hold a whole chunk) and checks it against its
    /// digest; returns the chunk's bytes. This is the unit of lazy, on-demand verification.
    pub fn read_chunk<'b>(&self, index: u64, buf: &'b mut [u8]) -> Result<&'b [u8], ImageError> {
        if index >= self.header.chunk_count() {
            return Err(ImageError::corrupt(
                &self.path,
                format!("chunk {index} does not exist"),
            ));
        }
        let (off, len) = self.chunk_range(index);
        let data = &mut buf[..len];
        read_exact_at(&self.file, &self.path, data, off)?;
        self.check_chunk(index, data)?;
        Ok(data)
    }

    fn check_chunk(&self, index: u64, data: &[u8]) -> Result<(), ImageError> {
        let got: [u8; 32] = *blake3::hash(data).as_bytes();
        if got != self.manifest.chunks.digests[index as usize].0 {
            let (off, len) = self.chunk_range(index);
            return Err(ImageError::corrupt(
                &self.path,
                format!(
                    "payload chunk {index} (bytes {off}..{}) does not match its digest",
                    off + len as u64
                ),
            ));
        }
        Ok(())
    }

    /// Checks every payload chunk, on all cores, reading the file in bounded batches (memory use is
    /// a few MiB whatever the image size).
    pub fn verify_payload(&self) -> Result<(), ImageError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.verify_payload_with(threads)
    }

    /// [`Self::verify_payload`] with a chosen number of threads.
    pub fn verify_payload_with(&self, threads: usize) -> Result<(), ImageError> {
        self.verify_batches(threads, &|_| true, None)
    }

    /// Checks every payload chunk and writes each verified batch to `dest` at the same file
    /// offset: afterwards `dest` holds exactly the bytes that were verified, whatever happens to
    /// the image file (the launcher's private copy).
    pub fn verify_payload_into(&self, dest: &File) -> Result<(), ImageError> {
        self.verify_chunks(&|_| true, Some(dest))
    }

    /// Checks the chunks `wanted` selects (by index), copying them to `dest` like
    /// [`Self::verify_payload_into`] when given. The others are left to [`Self::read_chunk`].
    pub fn verify_chunks(
        &self,
        wanted: &(dyn Fn(u64) -> bool + Sync),
        dest: Option<&File>,
    ) -> Result<(), ImageError> {
        // A small selection (the memory a lazy restore reads up front) is done here at once:
        // asking how many cores there are (cgroup files) and starting threads costs more.
        let cs = u64::from(self.header.chunk_size);
        let small = (0..self.header.chunk_count())
            .filter(|&i| wanted(i))
            .nth(((SMALL_SELECTION / cs) as usize).max(1))
            .is_none();
        let threads = if small {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        self.verify_batches(threads, wanted, dest)
    }

    fn verify_batches(
        &self,
        threads: usize,
        wanted: &(dyn Fn(u64) -> bool + Sync),
        sink: Option<&File>,
    ) -> Result<(), ImageError> {
        let chunks = self.header.chunk_count();
        let selected = (0..chunks).filter(|&i| wanted(i)).count() as u64;
        if selected == 0 {
            return Ok(());
        }
        // Batches of at most 1 MiB keep syscalls few; small images are cut finer so that every
        // thread gets work. A batch is consecutive wanted chunks.
        let threads = threads.clamp(1, selected as usize);
        let per_batch = ((1u64 << 20) / u64::from(self.header.chunk_size))
            .min(selected.div_ceil(threads as u64 * 4))
            .max(1);
        let mut batches: Vec<(u64, u64)> = Vec::new();
        for i in (0..chunks).filter(|&i| wanted(i)) {
            match batches.last_mut() {
                Some((first, last)) if *last == i && i - *first < per_batch => *last = i + 1,
                _ => batches.push((i, i + 1)),
            }
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<(u64, ImageError)>> = Mutex::new(None);
        let batch_bytes = (per_batch * u64::from(self.header.chunk_size)) as usize;
        let worker = || {
            let mut buf = vec![0u8; batch_bytes];
            while !failed.load(Ordering::Relaxed) {
                let Some(&(first, last)) = batches.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let (off, _) = self.chunk_range(first);
                let (end_off, end_len) = self.chunk_range(last - 1);
                let span = (end_off + end_len as u64 - off) as usize;
                let result = read_exact_at(&self.file, &self.path, &mut buf[..span], off)
                    .and_then(|()| {
                        buf[..span]
                            .chunks(self.header.chunk_size as usize)
                            .zip(first..last)
                            .try_for_each(|(data, i)| self.check_chunk(i, data))
                    })
                    .and_then(|()| match sink {
                        Some(dest) => dest.write_all_at(&buf[..span], off).map_err(|e| {
                            ImageError::io("cannot copy verified payload of", &self.path, e)
                        }),
                        None => Ok(()),
                    });
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.as_ref().is_none_or(|(at, _)| first < *at) {
                        *slot = Some((first, e));
                    }
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                // A thread that cannot be created (a pids limit, RLIMIT_NPROC): those that
                // could be, this one at least, share the batches all the same.
                if std::thread::Builder::new().spawn_scoped(s, worker).is_err() {
                    break;
                }
            }
            worker();
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}
