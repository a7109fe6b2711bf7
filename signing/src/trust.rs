//! The trust store: the public keys whose signatures a launcher accepts.
//!
//! Which sources to consult is the caller's decision (a privileged launcher consults fewer);
//! this module only loads them and answers "is this fingerprint trusted, and is the signature good".

use std::path::{Path, PathBuf};

use crate::{Fingerprint, PublicKey, Signature, SigningError};

/// Where trusted keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    /// One public key file; it must exist and parse.
    File(PathBuf),
    /// A directory of `*.pub` files; a missing or unreadable directory is simply empty.
    Dir(PathBuf),
}

impl TrustSource {
    fn describe(&self) -> String {
        match self {
            TrustSource::File(p) => p.display().to_string(),
            TrustSource::Dir(p) => format!("{}/*.pub", p.display()),
        }
    }
}

/// A trusted public key and the file it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub source: PathBuf,
}

/// The set of trusted public keys.
#[derive(Debug, Default)]
pub struct TrustStore {
    keys: Vec<TrustedKey>,
    searched: Vec<String>,
}

impl TrustStore {
    /// Loads every source in order. A malformed key file is an error that names it, rather than a
    /// silently smaller trust store.
    pub fn load(sources: &[TrustSource]) -> Result<Self, SigningError> {
        let mut store = TrustStore::default();
        for source in sources {
            store.searched.push(source.describe());
            match source {
                TrustSource::File(path) => store.add_file(path)?,
                TrustSource::Dir(dir) => {
                    let entries = match std::fs::read_dir(dir) {
                        Ok(e) => e,
                        // A directory that is absent, or not ours to read (root's, when running
                        // as another user with HOME unchanged), holds no keys for us.
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                            ) =>
                        {
                            continue
                        }
                        Err(e) => {
                            return Err(SigningError::io("cannot read trust directory", dir, e))
                        }
                    };
                    let mut paths = Vec::new();
                    for entry in entries {
                        let entry = entry
                            .map_err(|e| SigningError::io("cannot read trust directory", dir, e))?;
                        let path = entry.path();
                        if path.extension().is_some_and(|x| x == "pub") {
                            paths.push(path);
                        }
                    }
                    paths.sort();
                    for path in paths {
                        store.add_file(&path)?;
                    }
                }
            }
        }
        Ok(store)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), SigningError> {
        let key = PublicKey::load(path)?;
        self.keys.push(TrustedKey {
            key,
            source: path.to_owned(),
        });
        Ok(())
    }

    /// The trusted key with this fingerprint, if any.
    pub fn find(&self, fingerprint: &Fingerprint) -> Option<&TrustedKey> {
        self.keys
            .iter()
            .find(|k| k.key.fingerprint() == *fingerprint)
    }

    /// All trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Checks that `fingerprint` names a trusted key and that `sig` is its signature over
    /// `domain || parts...`.
    pub fn verify(
        &self,
        fingerprint: &Fingerprint,
        domain: &[u8],
        parts: &[&[u8]],
        sig: &Signature,
    ) -> Result<&TrustedKey, SigningError> {
        let trusted = self
            .find(fingerprint)
            .ok_or_else(|| SigningError::Untrusted {
                fingerprint: *fingerprint,
                searched: if self.searched.is_empty() {
                    "no trust sources".into()
                } else {
                    self.searched.join(", ")
                },
            })?;
        trusted.key.verify(domain, parts, sig)?;
        Ok(trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    #[test]
    fn directory_sources_and_untrusted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        a.public().save_new(&dir.path().join("a.pub")).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let store = TrustStore::load(&[
            TrustSource::Dir(dir.path().to_owned()),
            TrustSource::Dir(dir.path().join("missing")),
        ])
        .unwrap();
        assert_eq!(store.keys().len(), 1);
        let sig = a.sign(b"d", &[b"m"]);
        store
            .verify(&a.public().fingerprint(), b"d", &[b"m"], &sig)
            .unwrap();
        let sig_b = b.sign(b"d", &[b"m"]);
        let err = store
            .verify(&b.public().fingerprint(), b"d", &[b"m"], &sig_b)
            .unwrap_err();
        assert!(matches!(err, SigningError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("a.pub") || err.to_string().contains("*.pub"));
        // A key that claims a's fingerprint but whose signature is b's is a bad signature.
        let err = store
            .verify(&a.public().fingerprint(), b"d", &[b"m"], &sig_b)
            .unwrap_err();
        assert!(matches!(err, SigningError::BadSignature(_)), "{err}");
    }

    #[test]
    fn malformed_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.pub"), "-----BEGIN PUBLIC KEY-----\n").unwrap();
        let err = TrustStore::load(&[TrustSource::Dir(dir.path().to_owned())]).unwrap_err();
        assert!(err.to_string().contains("bad.pub"), "{err}");
    }
}
