//! The fixed header and trailer: plain little-endian fields, encoded and checked by hand so that
//! nothing is trusted before the signature is.

use std::path::Path;

use thaw_signing::{Fingerprint, Signature, SIGNATURE_LEN};

use super::{
    ImageError, ALG_ED25519, ALG_NONE, FORMAT_VERSION, MAGIC, MAX_MANIFEST_LEN, TRAILER_MAGIC,
};

/// Bytes of the fixed header at offset 0 (the rest of the header block is zero fill).
pub const HEADER_LEN: usize = 128;
/// Bytes of the trailer at the end of the file.
pub const TRAILER_LEN: usize = 112;

/// The fixed header. Byte layout (little-endian):
///
/// | offset | size | field          |
/// |-------:|-----:|----------------|
/// |      0 |    8 | magic `THAWIMG\0` |
/// |      8 |    4 | format_version |
/// |     12 |    4 | arch (ELF machine) |
/// |     16 |    4 | page_size      |
/// |     20 |    4 | chunk_size     |
/// |     24 |    8 | flags (0)      |
/// |     32 |    8 | payload_off    |
/// |     40 |    8 | payload_len    |
/// |     48 |    8 | manifest_off   |
/// |     56 |    8 | manifest_len   |
/// |     64 |    8 | trailer_off    |
/// |     72 |    8 | trailer_len    |
/// |     80 |   48 | reserved (0)   |
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub format_version: u32,
    pub arch: u32,
    pub page_size: u32,
    pub chunk_size: u32,
    pub flags: u64,
    pub payload_off: u64,
    pub payload_len: u64,
    pub manifest_off: u64,
    pub manifest_len: u64,
    pub trailer_off: u64,
    pub trailer_len: u64,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// A header for a payload of `payload_len` bytes and a manifest of `manifest_len` bytes.
    pub fn layout(
        arch: u32,
        page_size: u32,
        chunk_size: u32,
        payload_len: u64,
        manifest_len: u64,
    ) -> Self {
        let payload_off = u64::from(page_size);
        let manifest_off = payload_off + payload_len;
        let trailer_off = manifest_off + manifest_len;
        Header {
            format_version: FORMAT_VERSION,
            arch,
            page_size,
            chunk_size,
            flags: 0,
            payload_off,
            payload_len,
            manifest_off,
            manifest_len,
            trailer_off,
            trailer_len: TRAILER_LEN as u64,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.arch.to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.chunk_size.to_le_bytes());
        for (i, v) in [
            self.flags,
            self.payload_off,
            self.payload_len,
            self.manifest_off,
            self.manifest_len,
            self.trailer_off,
            self.trailer_len,
        ]
        .into_iter()
        .enumerate()
        {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes and checks the header against the file length. Every offset and length is
    /// bounds-checked here, before anything else of the file is read.
    pub fn decode(b: &[u8], file_len: u64, path: &Path) -> Result<Self, ImageError> {
        let bad = |detail: String| ImageError::corrupt(path, detail);
        if b.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(bad(format!(
                "not a thaw image: {file_len} bytes is too short for the {HEADER_LEN}-byte header"
            )));
        }
        if b[0..8] != MAGIC {
            return Err(bad("not a thaw image: wrong magic bytes".into()));
        }
        let h = Header {
            format_version: u32_at(b, 8),
            arch: u32_at(b, 12),
            page_size: u32_at(b, 16),
            chunk_size: u32_at(b, 20),
            flags: u64_at(b, 24),
            payload_off: u64_at(b, 32),
            payload_len: u64_at(b, 40),
            manifest_off: u64_at(b, 48),
            manifest_len: u64_at(b, 56),
            trailer_off: u64_at(b, 64),
            trailer_len: u64_at(b, 72),
        };
        if h.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "unknown image format version {} (this thaw reads version {FORMAT_VERSION})",
                h.format_version
            )));
        }
        if b[80..HEADER_LEN].iter().any(|&x| x != 0) || h.flags != 0 {
            return Err(bad("header has unknown flags or reserved bytes set".into()));
        }
        if !matches!(h.page_size, 4096 | 16384 | 65536) {
            return Err(bad(format!("unsupported page size {}", h.page_size)));
        }
        if !h.chunk_size.is_power_of_two() || h.chunk_size < h.page_size || h.chunk_size > 64 << 20
        {
            return Err(bad(format!("invalid chunk size {}", h.chunk_size)));
        }
        if h.payload_off != u64::from(h.page_size) {
            return Err(bad(format!(
                "payload offset {} is not the end of the header page ({})",
                h.payload_off, h.page_size
            )));
        }
        if !h.payload_len.is_multiple_of(u64::from(h.page_size)) {
            return Err(bad(format!(
                "payload length {} is not a multiple of the page size",
                h.payload_len
            )));
        }
        // Sections are contiguous: payload, manifest, trailer, end of file.
        let sections = [
            ("payload", h.payload_off, h.payload_len, h.manifest_off),
            ("manifest", h.manifest_off, h.manifest_len, h.trailer_off),
            ("trailer", h.trailer_off, h.trailer_len, file_len),
        ];
        for (name, off, len, next) in sections {
            let end = off.checked_add(len).filter(|&e| e <= file_len).ok_or_else(|| {
                bad(format!(
                    "{name} (offset {off}, length {len}) extends past the end of the {file_len}-byte file (truncated?)"
                ))
            })?;
            if end != next {
                return Err(bad(format!(
                    "{name} (offset {off}, length {len}) ends at {end} but the next section starts at {next}"
                )));
            }
        }
        if h.manifest_len == 0 || h.manifest_len > MAX_MANIFEST_LEN {
            return Err(bad(format!(
                "manifest length {} is outside 1..={MAX_MANIFEST_LEN}",
                h.manifest_len
            )));
        }
        if h.trailer_len != TRAILER_LEN as u64 {
            return Err(bad(format!(
                "trailer length {} is not {TRAILER_LEN}",
                h.trailer_len
            )));
        }
        Ok(h)
    }

    /// Number of payload chunks.
    pub fn chunk_count(&self) -> u64 {
        self.payload_len.div_ceil(u64::from(self.chunk_size))
    }
}

/// The signature trailer. Byte layout: magic `THAWSIG\0` (8), algorithm (4), reserved 0 (4),
/// signer fingerprint (32), signature (64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    Unsigned,
    Ed25519 {
        signer: Fingerprint,
        signature: Signature,
    },
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&TRAILER_MAGIC);
        if let Trailer::Ed25519 { signer, signature } = self {
            b[8..12].copy_from_slice(&ALG_ED25519.to_le_bytes());
            b[16..48].copy_from_slice(&signer.0);
            b[48..48 + SIGNATURE_LEN].copy_from_slice(&signature.0);
        }
        b
    }

    pub fn decode(b: &[u8], path: &Path) -> Result<Self, ImageError> {
        let bad = |detail: &str| ImageError::corrupt(path, detail);
        if b.len() != TRAILER_LEN || b[0..8] != TRAILER_MAGIC {
            return Err(bad("signature trailer missing or damaged"));
        }
        if u32_at(b, 12) != 0 {
            return Err(bad("signature trailer has reserved bytes set"));
        }
        match u32_at(b, 8) {
            ALG_NONE if b[16..].iter().all(|&x| x == 0) => Ok(Trailer::Unsigned),
            ALG_NONE => Err(bad("unsigned trailer carries signature bytes")),
            ALG_ED25519 => Ok(Trailer::Ed25519 {
                signer: Fingerprint(b[16..48].try_into().expect("32 bytes")),
                signature: Signature(b[48..48 + SIGNATURE_LEN].try_into().expect("64 bytes")),
            }),
            other => Err(bad(&format!("unknown signature algorithm {other}"))),
        }
    }

    pub fn signer(&self) -> Option<Fingerprint> {
        match self {
            Trailer::Unsigned => None,
            Trailer::Ed25519 { signer, .. } => Some(*signer),
        }
    }
}
