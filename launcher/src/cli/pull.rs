//! `thaw pull REF [FILE]`: fetches an image from an OCI registry into a file, verified.

use std::path::PathBuf;

use super::TrustArgs;
use crate::exit::Result;
use crate::privilege::Context;
use crate::registry::{self, Remote};

/// Fetch an image from an OCI registry into FILE (default: the repository's last name with
/// .thaw). The image is verified as `thaw verify` does, signature first, before FILE is written:
/// nothing the registry changed is ever kept
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    reference: String,
    file: Option<PathBuf>,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    let trust = args.trust.load(ctx)?;
    let remote = Remote::new(&args.reference, ctx)?;
    let dest = args.file.unwrap_or_else(|| {
        let repo = remote.repository();
        let last = repo.rsplit('/').next().unwrap_or(repo);
        PathBuf::from(format!("{last}.thaw"))
    });
    let name = remote.name();
    let got = registry::fetch(remote, &dest, &trust, super::cache_dir(ctx).as_deref())?;
    outln!(
        "{}: {} ({}), {} blobs, {} bytes, verified",
        name,
        dest.display(),
        got.digest,
        got.blobs,
        got.bytes
    )
}
