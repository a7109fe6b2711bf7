//! Ed25519 keys in openssl-compatible PEM files, fingerprints, and domain-separated signatures.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::SigningError;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Key files are small; anything larger is not a key and is not read whole.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// SHA-256 of the public key's SubjectPublicKeyInfo DER encoding, so that
/// `openssl pkey -pubin -in k.pub -outform DER | sha256sum` prints the same value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A secret signing key. Its bytes are wiped when it is dropped.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().fingerprint())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, SigningError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Loads a PKCS#8 PEM secret key, refusing a file that group or others can read or write
    /// (the rule ssh applies to private keys).
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let file = open_key(path, "secret")?;
        let meta = file
            .metadata()
            .map_err(|e| SigningError::io("cannot stat key", path, e))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SigningError::KeyTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text = read_small(file, path)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| SigningError::BadKey {
            path: path.to_owned(),
            kind: "secret",
            detail: e.to_string(),
        })?;
        Ok(SecretKey(key))
    }

    /// Writes the key as PKCS#8 PEM with mode 0600. Never overwrites: the file is written and
    /// synced under a temporary name and then hard-linked into place, which fails if `path` exists.
    pub fn save_new(&self, path: &Path) -> Result<(), SigningError> {
        // PKCS#8 v1 (no embedded public key), as `openssl genpkey` writes it: OpenSSL 3.0 cannot
        // read the v2 form with the public key attached.
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        let pem = bytes
            .to_pkcs8_pem(Default::default())
            .map_err(|e| SigningError::BadKey {
                path: path.to_owned(),
                kind: "secret",
                detail: e.to_string(),
            })?;
        write_new(path, pem.as_bytes(), 0o600)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `domain || parts...`.
    pub fn sign(&self, domain: &[u8], parts: &[&[u8]]) -> Signature {
        Signature(self.0.sign(&message(domain, parts)).to_bytes())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Loads a SubjectPublicKeyInfo PEM public key (`openssl pkey -pubout` output).
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let file = open_key(path, "public")?;
        let text = read_small(file, path)?;
        Self::from_pem(&text).map_err(|detail| SigningError::BadKey {
            path: path.to_owned(),
            kind: "public",
            detail,
        })
    }

    /// Parses a SubjectPublicKeyInfo PEM public key.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        VerifyingKey::from_public_key_pem(text)
            .map(PublicKey)
            .map_err(|e| e.to_string())
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(Default::default())
            .expect("encoding a 32-byte Ed25519 key cannot fail")
    }

    /// Writes the key as PEM with mode 0644, never overwriting.
    pub fn save_new(&self, path: &Path) -> Result<(), SigningError> {
        write_new(path, self.to_pem().as_bytes(), 0o644)
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER encoding.
    pub fn fingerprint(&self) -> Fingerprint {
        let der = self
            .0
            .to_public_key_der()
            .expect("encoding a 32-byte Ed25519 key cannot fail");
        Fingerprint(Sha256::digest(der.as_bytes()).into())
    }

    /// Checks a signature over `domain || parts...` (strict verification: no malleable
    /// signatures, no small-order keys).
    pub fn verify(
        &self,
        domain: &[u8],
        parts: &[&[u8]],
        sig: &Signature,
    ) -> Result<(), SigningError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(&message(domain, parts), &sig)
            .map_err(|_| SigningError::BadSignature(self.fingerprint()))
    }
}

fn message(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = domain.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(domain);
    for p in parts {
        msg.extend_from_slice(p);
    }
    msg
}

/// Opens a key file for reading without blocking in the open (a FIFO put where a key was expected
/// would block it for ever), and only if it is a regular file (a device such as /dev/zero is not
/// a key, and its mode is not the key's); the descriptor is blocking again.
fn open_key(path: &Path, kind: &'static str) -> Result<File, SigningError> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| SigningError::io("cannot open key", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| SigningError::io("cannot stat key", path, e))?;
    if !meta.is_file() {
        return Err(SigningError::NotAFile {
            path: path.to_owned(),
            kind,
        });
    }
    // SAFETY: F_SETFL on a descriptor this function owns; it changes only its status flags.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SigningError::io("cannot open key", path, e));
    }
    Ok(file)
}

fn read_small(file: File, path: &Path) -> Result<Zeroizing<String>, SigningError> {
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| SigningError::io("cannot read key", path, e))?;
    Ok(text)
}

/// Creates `path` with `contents` and `mode`, atomically and without ever replacing a file.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), SigningError> {
    if path.symlink_metadata().is_ok() {
        return Err(SigningError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| SigningError::Random(e.to_string()))?;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(nonce)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| SigningError::io("cannot create", &tmp, e))?;
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .map_err(|e| SigningError::io("cannot write", &tmp, e))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SigningError::Exists {
                    path: path.to_owned(),
                }
            } else {
                SigningError::io("cannot create", path, e)
            }
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_domain_separation() {
        let k = SecretKey::generate().unwrap();
        let sig = k.sign(b"A", &[b"hello", b"world"]);
        k.public()
            .verify(b"A", &[b"hello", b"world"], &sig)
            .unwrap();
        k.public().verify(b"A", &[b"helloworld"], &sig).unwrap();
        assert!(k
            .public()
            .verify(b"B", &[b"hello", b"world"], &sig)
            .is_err());
        assert!(k
            .public()
            .verify(b"A", &[b"hello", b"worle"], &sig)
            .is_err());
    }

    #[test]
    fn save_load_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        let sk = dir.path().join("k.key");
        let pk = dir.path().join("k.pub");
        k.save_new(&sk).unwrap();
        k.public().save_new(&pk).unwrap();
        assert_eq!(std::fs::metadata(&sk).unwrap().mode() & 0o777, 0o600);
        let again = SecretKey::load(&sk).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(PublicKey::load(&pk).unwrap(), k.public());
        assert!(matches!(k.save_new(&sk), Err(SigningError::Exists { .. })));
        std::fs::set_permissions(&sk, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let err = SecretKey::load(&sk).unwrap_err();
        assert!(
            matches!(err, SigningError::KeyTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
