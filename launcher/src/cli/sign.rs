//! `thaw sign --key KEY IMAGE`: sign or re-sign an image in place, atomically.

use std::path::PathBuf;

use thaw_signing::SecretKey;

use crate::exit::Result;

/// Sign (or re-sign) an image in place. The payload is checked against the manifest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Secret key (PKCS#8 PEM, not readable by group or others).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    image: PathBuf,
}

pub fn run(args: Args) -> Result {
    let key = SecretKey::load(&args.key)?;
    let saved = thaw::image::resign(&args.image, &key)?;
    outln!(
        "signed {} by {} (content sha256:{})",
        saved.path.display(),
        key.public().fingerprint(),
        saved.digest
    )
}
