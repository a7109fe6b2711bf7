//! `thaw verify [--trust PUB]... IMAGE`: signature, then every payload chunk.

use std::path::PathBuf;

use thaw::image::{ImageFile, Provenance};

use super::TrustArgs;
use crate::exit::Result;
use crate::privilege::Context;

/// Check an image completely: its structure, its signature against the trust store, and every
/// payload chunk against its digest. Prints the signer's fingerprint.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    image: PathBuf,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    let trust = args.trust.load(ctx)?;
    let image = ImageFile::open(&args.image)?.verify(&trust)?;
    image.verify_payload()?;
    if let Provenance::Verified { signer, key_file } = image.provenance() {
        outln!(
            "{}: OK, signed by {signer} ({}); {} payload chunks verified",
            args.image.display(),
            key_file.display(),
            image.header().chunk_count()
        )?;
    }
    Ok(())
}
