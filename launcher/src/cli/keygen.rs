//! `thaw keygen PREFIX`: a new Ed25519 key pair as PREFIX.key (0600) and PREFIX.pub.

use std::path::PathBuf;

use thaw_signing::SecretKey;

use crate::exit::{Code, Failure, Result};

/// Generate a signing key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path prefix of the two files.
    prefix: PathBuf,
}

pub fn run(args: Args) -> Result {
    let key_path = with_suffix(&args.prefix, "key");
    let pub_path = with_suffix(&args.prefix, "pub");
    for p in [&key_path, &pub_path] {
        if p.symlink_metadata().is_ok() {
            return Err(Failure::new(
                Code::Usage,
                format!("{} already exists; refusing to overwrite it", p.display()),
            ));
        }
    }
    let key = SecretKey::generate()?;
    key.save_new(&key_path)?;
    if let Err(e) = key.public().save_new(&pub_path) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e.into());
    }
    outln!(
        "secret key: {}\npublic key: {}\nfingerprint: {}",
        key_path.display(),
        pub_path.display(),
        key.public().fingerprint()
    )
}

fn with_suffix(prefix: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    s.into()
}
