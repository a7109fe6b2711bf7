//! Keys, fingerprints, signatures and the trust store for thaw images.
//!
//! This crate knows nothing of processes or of the image layout: it signs and checks byte strings
//! under a domain-separation prefix, stores Ed25519 keys in the PEM forms openssl uses
//! (PKCS#8 for secret keys, SubjectPublicKeyInfo for public keys), and finds trusted public keys in
//! the directories a caller names.

mod keys;
mod trust;

pub use keys::{Fingerprint, PublicKey, SecretKey, Signature, SIGNATURE_LEN};
pub use trust::{TrustSource, TrustStore, TrustedKey};

use std::path::PathBuf;

/// Everything that can go wrong with keys, signatures and trust.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an Ed25519 {kind} key in PEM form ({detail})", path.display())]
    BadKey {
        path: PathBuf,
        kind: &'static str,
        detail: String,
    },
    #[error("{}: not a regular file, so not a {kind} key", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "secret key {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`",
        path = path.display()
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{path} already exists; refusing to overwrite it", path = path.display())]
    Exists { path: PathBuf },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("signature does not match (signed by key {0}, but the signed bytes were changed)")]
    BadSignature(Fingerprint),
    #[error("signed by key {fingerprint}, which is not trusted (searched: {searched})")]
    Untrusted {
        fingerprint: Fingerprint,
        searched: String,
    },
}

impl SigningError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SigningError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
