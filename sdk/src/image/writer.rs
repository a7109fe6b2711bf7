//! Writing images: streamed payload, chunk digests computed on the way, atomic placement.
//!
//! An image holds the process's memory and therefore its secrets: it is written with mode 0600
//! as an unnamed file in the destination directory, synced, and linked into place (see
//! [`super::staged`]), so the destination never holds a partial image and a writer killed midway
//! leaves nothing behind.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use thaw_signing::{Fingerprint, SecretKey};

use super::header::{Header, Trailer};
use super::reader::ImageFile;
use super::staged::Staged;
use super::{Digest, ImageError, DEFAULT_CHUNK_SIZE, EM_X86_64, SIGNATURE_DOMAIN};
use crate::state::{ChunkTable, Manifest, PayloadRef};

/// What was written.
#[derive(Debug, Clone)]
pub struct SavedImage {
    pub path: PathBuf,
    /// Size of the image file in bytes.
    pub size: u64,
    /// SHA-256 of the header block and manifest: names the image's whole content, since the
    /// manifest holds every payload chunk's digest.
    pub digest: Digest,
    pub signer: Option<Fingerprint>,
}

/// Streams an image to a temporary file next to its destination.
#[derive(Debug)]
pub struct ImageWriter {
    dest: PathBuf,
    tmp: Staged,
    /// A write beyond RLIMIT_FSIZE fails rather than killing the process.
    _fsize: crate::sys::FileSizeSignalIgnored,
    out: BufWriter<File>,
    page_size: u32,
    chunk_size: u32,
    payload_len: u64,
    chunk: blake3::Hasher,
    chunk_fill: u64,
    digests: Vec<Digest>,
}

impl ImageWriter {
    /// Starts an image for `dest` with the system page size and the default chunk size.
    pub fn create(dest: &Path) -> Result<Self, ImageError> {
        Self::with_chunk_size(dest, DEFAULT_CHUNK_SIZE)
    }

    pub fn with_chunk_size(dest: &Path, chunk_size: u32) -> Result<Self, ImageError> {
        let page_size = crate::page_size() as u32;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let _fsize = crate::sys::FileSizeSignalIgnored::hold();
        // Owner-only, and gone if we fail, are dropped or are killed.
        let tmp = Staged::create(dir)?;
        let file = tmp
            .file()
            .try_clone()
            .map_err(|e| ImageError::io("cannot create", &tmp.path(), e))?;
        let mut w = ImageWriter {
            dest: dest.to_owned(),
            tmp,
            _fsize,
            out: BufWriter::with_capacity(1 << 20, file),
            page_size,
            chunk_size,
            payload_len: 0,
            chunk: blake3::Hasher::new(),
            chunk_fill: 0,
            digests: Vec::new(),
        };
        // The header block is written last; reserve it.
        w.write_raw(&vec![0u8; page_size as usize])?;
        Ok(w)
    }

    fn write_raw(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.out
            .write_all(data)
            .map_err(|e| write_error(&self.dest, e))
    }

    fn hash_payload(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = u64::from(self.chunk_size) - self.chunk_fill;
            let take = (room.min(data.len() as u64)) as usize;
            self.chunk.update(&data[..take]);
            self.chunk_fill += take as u64;
            data = &data[take..];
            if self.chunk_fill == u64::from(self.chunk_size) {
                self.digests.push(Digest(*self.chunk.finalize().as_bytes()));
                self.chunk.reset();
                self.chunk_fill = 0;
            }
        }
    }

    /// Appends `data` to the payload, zero-padded to a page boundary, and says where it is.
    pub fn append_payload(&mut self, data: &[u8]) -> Result<PayloadRef, ImageError> {
        self.append_payload_parts(&[data])
    }

    /// Appends the concatenation of `parts` as one payload range, zero-padded to a page boundary.
    pub fn append_payload_parts(&mut self, parts: &[&[u8]]) -> Result<PayloadRef, ImageError> {
        let offset = self.payload_len;
        let mut len = 0u64;
        for part in parts {
            self.write_payload(part)?;
            len += part.len() as u64;
        }
        self.end_range(offset, len)
    }

    fn write_payload(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.write_raw(data)?;
        self.hash_payload(data);
        Ok(())
    }

    /// Pads the range just written (`len` bytes from `offset`) to a page boundary.
    fn end_range(&mut self, offset: u64, len: u64) -> Result<PayloadRef, ImageError> {
        let pad = (len.next_multiple_of(u64::from(self.page_size)) - len) as usize;
        if pad > 0 {
            self.write_payload(&vec![0u8; pad])?;
        }
        self.payload_len += len + pad as u64;
        Ok(PayloadRef { offset, len })
    }

    /// Appends `len` bytes produced piece by piece by `fill(offset,
    /// piece)` into `buf`-sized pieces, as one payload range.
    pub fn append_payload_with(
        &mut self,
        len: u64,
        mut fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
        buf: &mut [u8],
    ) -> Result<PayloadRef, ImageError> {
        let offset = self.payload_len;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            fill(done, &mut buf[..n]).map_err(|e| {
                ImageError::io("cannot read the snapshot's memory for", &self.dest, e)
            })?;
            self.write_payload(&buf[..n])?;
            done += n as u64;
        }
        self.end_range(offset, len)
    }

    /// Writes the manifest (its chunk table filled in here), the header and the trailer, signs
    /// with `key` if given, and moves the image into place.
    pub fn finish(
        mut self,
        mut manifest: Manifest,
        key: Option<&SecretKey>,
    ) -> Result<SavedImage, ImageError> {
        if self.chunk_fill > 0 {
            self.digests.push(Digest(*self.chunk.finalize().as_bytes()));
            self.chunk.reset();
            self.chunk_fill = 0;
        }
        manifest.chunks = ChunkTable {
            chunk_size: self.chunk_size,
            digests: std::mem::take(&mut self.digests),
        };
        let manifest_bytes = postcard::to_allocvec(&manifest)
            .map_err(|e| ImageError::corrupt(&self.dest, format!("cannot encode manifest: {e}")))?;
        let header = Header::layout(
            EM_X86_64,
            self.page_size,
            self.chunk_size,
            self.payload_len,
            manifest_bytes.len() as u64,
        );
        let block = header_block(&header);
        let trailer = sign_trailer(&block, &manifest_bytes, key);
        self.write_raw(&manifest_bytes)?;
        self.write_raw(&trailer.encode())?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| write_error(&self.dest, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&block))
            .and_then(|_| file.sync_all())
            .map_err(|e| write_error(&self.dest, e))?;
        let size = header.trailer_off + header.trailer_len;
        self.tmp.persist(&self.dest)?;
        Ok(SavedImage {
            path: self.dest,
            size,
            digest: content_digest(&block, &manifest_bytes),
            signer: trailer.signer(),
        })
    }
}

/// The signed header block: the encoded header followed by zero fill up to the payload.
pub(crate) fn header_block(header: &Header) -> Vec<u8> {
    let mut block = vec![0u8; header.payload_off as usize];
    block[..super::HEADER_LEN].copy_from_slice(&header.encode());
    block
}

pub(crate) fn content_digest(block: &[u8], manifest: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(block);
    h.update(manifest);
    Digest(h.finalize().into())
}

fn sign_trailer(block: &[u8], manifest: &[u8], key: Option<&SecretKey>) -> Trailer {
    match key {
        None => Trailer::Unsigned,
        Some(key) => Trailer::Ed25519 {
            signer: key.public().fingerprint(),
            signature: key.sign(SIGNATURE_DOMAIN, &[&content_digest(block, manifest).0]),
        },
    }
}

/// A failed write of the image for `dest` (its unnamed file, named once complete), said of
/// `dest`; beyond the limit on file size, naming it.
fn write_error(dest: &Path, e: std::io::Error) -> ImageError {
    if e.raw_os_error() == Some(libc::EFBIG) {
        return ImageError::io(
            "cannot write the image (the limit on file size, RLIMIT_FSIZE, is lower than its size: raise it, e.g. ulimit -f unlimited)",
            dest,
            e,
        );
    }
    ImageError::io("cannot write", dest, e)
}

/// Signs (or re-signs) the image at `path` in place, atomically. The image is copied to a private
/// temporary file first, and that copy's payload is checked against its manifest's digests before
/// it is signed, so the signature never blesses a damaged or altered payload, and what is signed is
/// exactly what is renamed into place.
pub fn resign(path: &Path, key: &SecretKey) -> Result<SavedImage, ImageError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Never blocking on a FIFO, nor copying a device (/dev/zero) until memory runs out.
    let mut src = super::reader::open_regular(path, false).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            ImageError::corrupt(path, "not a regular file")
        } else {
            ImageError::io("cannot open", path, e)
        }
    })?;
    let _fsize = crate::sys::FileSizeSignalIgnored::hold();
    let tmp = Staged::create(dir)?;
    std::io::copy(&mut src, &mut tmp.file()).map_err(|e| write_error(path, e))?;

    // The signer is the authority here: it decodes its own (possibly unsigned) image to read the
    // chunk table, then checks every chunk before putting its name on them.
    let image = ImageFile::open(&tmp.path())
        .map_err(|e| e.with_path(path))?
        .decode_unverified()
        .map_err(|e| e.with_path(path))?;
    image.verify_payload().map_err(|e| e.with_path(path))?;
    let header = *image.header();
    let trailer = sign_trailer(image.header_block(), image.manifest_bytes(), Some(key));
    let digest = content_digest(image.header_block(), image.manifest_bytes());
    drop(image);

    let mut f = tmp.file();
    f.seek(SeekFrom::Start(header.trailer_off))
        .and_then(|_| f.write_all(&trailer.encode()))
        .and_then(|_| f.sync_all())
        .map_err(|e| write_error(path, e))?;
    tmp.persist(path)?;
    Ok(SavedImage {
        path: path.to_owned(),
        size: header.trailer_off + header.trailer_len,
        digest,
        signer: trailer.signer(),
    })
}

/// Writes `path` anew with its manifest changed by `edit` and signed by `key` (tooling and tests:
/// e.g. to show that a re-signed image claiming another platform is refused). The payload is
/// checked against its digests and copied unchanged.
pub fn rewrite_manifest(
    path: &Path,
    key: Option<&SecretKey>,
    edit: impl FnOnce(&mut Manifest),
) -> Result<SavedImage, ImageError> {
    let image = ImageFile::open(path)?.decode_unverified()?;
    image.verify_payload()?;
    let h = *image.header();
    let mut manifest = image.manifest().clone();
    edit(&mut manifest);
    let mut w = ImageWriter::with_chunk_size(path, h.chunk_size)?;
    let mut buf = vec![0u8; 1 << 20];
    let src = image.file();
    w.append_payload_with(
        h.payload_len,
        |off, piece| std::os::unix::fs::FileExt::read_exact_at(src, piece, h.payload_off + off),
        &mut buf,
    )?;
    w.finish(manifest, key)
}
