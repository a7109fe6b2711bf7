//! The thaw image format, version 3 (see docs/image-format.md for the history).
//!
//! ```text
//!  offset 0                     page_size            payload_off+payload_len   file end
//!  ┌──────────────┬─────────────┬────────────────────┬──────────────┬──────────┐
//!  │ header 128 B │ zero fill   │ payload (raw pages)│ manifest     │ trailer  │
//!  │ fixed layout │ to one page │ page-aligned,      │ postcard     │ 112 B    │
//!  │              │             │ cut into chunks    │              │          │
//!  └──────────────┴─────────────┴────────────────────┴──────────────┴──────────┘
//!  └──── header block (signed) ─┘                    └── signed ────┘
//! ```
//!
//! * The header block is the first `page_size` bytes: the fixed little-endian [`Header`] and zero
//!   fill. Its offsets say where every other section is; sections are contiguous and in this order,
//!   so no byte of the file lies outside a checked section.
//! * The payload holds raw memory contents at page-aligned offsets, so regions can be mapped or
//!   read straight from the file. It is cut into `chunk_size` chunks whose BLAKE3 digests are in
//!   the manifest's [`ChunkTable`](crate::state::ChunkTable).
//! * The manifest is a postcard-encoded [`Manifest`](crate::state::Manifest).
//! * The trailer names the signing key by fingerprint and holds an Ed25519 signature over
//!   [`SIGNATURE_DOMAIN`] ‖ SHA-256(header block ‖ manifest). An unsigned image has algorithm 0.
//!
//! Verification order (see [`reader`]): bounds-check the header against the file size, check the
//! signature over the raw header and manifest bytes, and only then decode the manifest. Payload
//! chunks are checked against their digests before use.
//!
//! Version rule: [`FORMAT_VERSION`] changes whenever any serialized type or this layout changes;
//! it is independent of the crate version. A reader refuses every version but its own.

mod header;
pub mod reader;
mod staged;
pub mod validate;
pub mod writer;

pub use header::{Header, Trailer, HEADER_LEN, TRAILER_LEN};
pub use reader::{Image, ImageFile, Provenance};
pub use writer::{resign, rewrite_manifest, ImageWriter, SavedImage};

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"THAWIMG\0";
/// Magic bytes at the start of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"THAWSIG\0";
/// The on-disk format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 28;
/// Domain-separation prefix of the signed message.
pub const SIGNATURE_DOMAIN: &[u8] = b"thaw image signature v2\0";
/// Default payload chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest manifest a reader will load (it is read into memory before the signature is checked).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// ELF machine number of x86_64.
pub const EM_X86_64: u32 = 62;

/// Trailer algorithm: no signature.
pub const ALG_NONE: u32 = 0;
/// Trailer algorithm: Ed25519.
pub const ALG_ED25519: u32 = 1;

/// A SHA-256 digest; hex in human-readable encodings (JSON), raw bytes in postcard.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut out = [0u8; 32];
            if s.len() != 64 {
                return Err(serde::de::Error::custom("digest must be 64 hex digits"));
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                    .map_err(serde::de::Error::custom)?;
            }
            Ok(Digest(out))
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

/// What kind of failure an [`ImageError`] is; the launcher maps these to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Could not read or write a file.
    Io,
    /// The file is not a well-formed image, or its contents do not match their digests.
    Corrupt,
    /// Missing, bad, or untrusted signature.
    Signature,
}

/// Errors from reading, verifying and writing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{}: image is not signed", path.display())]
    Unsigned { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Signature {
        path: PathBuf,
        #[source]
        source: thaw_signing::SigningError,
    },
    #[error("cannot load signing key: {0}")]
    Key(#[source] thaw_signing::SigningError),
}

impl ImageError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ImageError::Io { .. } | ImageError::Key(_) => ErrorClass::Io,
            ImageError::Corrupt { .. } => ErrorClass::Corrupt,
            ImageError::Unsigned { .. } | ImageError::Signature { .. } => ErrorClass::Signature,
        }
    }

    /// The same error, reported against `path` (used when a private copy was what was read).
    pub fn with_path(mut self, new: &std::path::Path) -> Self {
        match &mut self {
            ImageError::Io { path, .. }
            | ImageError::Corrupt { path, .. }
            | ImageError::Unsigned { path }
            | ImageError::Signature { path, .. } => *path = new.to_owned(),
            ImageError::Key(_) => {}
        }
        self
    }

    pub(crate) fn corrupt(path: &std::path::Path, detail: impl Into<String>) -> Self {
        ImageError::Corrupt {
            path: path.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ImageError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
