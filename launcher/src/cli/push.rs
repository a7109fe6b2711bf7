//! `thaw push IMAGE REF`: publishes an image as an OCI artifact (see `registry::artifact`).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use thaw::image::ImageFile;

use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::registry::{artifact, Progress, Remote};

/// Publish an image to an OCI registry (REF like 127.0.0.1:5000/team/app:v3). Blobs the
/// repository has already are not uploaded again. The image is checked first: every payload
/// chunk must match its digest
#[derive(Debug, clap::Args)]
pub struct Args {
    image: PathBuf,
    reference: String,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    // Nothing corrupt is published; the signature is the puller's to check.
    let image = ImageFile::open(&args.image)?.decode_unverified()?;
    image.verify_payload()?;
    let remote = Remote::new(&args.reference, ctx)?;
    let h = image.header();
    let read = |off: u64, len: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        image.file().read_exact_at(&mut buf, off).map_err(|e| {
            Failure::new(
                Code::Io,
                format!("cannot read {}: {e}", args.image.display()),
            )
        })?;
        Ok(buf)
    };
    let mut head = read(0, h.payload_off)?;
    head.extend(read(h.manifest_off, h.manifest_len + h.trailer_len)?);
    let (config, empty) = artifact::config();
    let mut sent = remote.put_blob(&config, empty)?;
    let head_d = artifact::Descriptor::of(artifact::HEAD_TYPE, &head);
    sent += remote.put_blob(&head_d, &head)?;
    let mut total = config.size + head.len() as u64;
    let groups = artifact::groups(h);
    let progress = Progress::new("pushing", groups.len());
    let mut layers = Vec::with_capacity(groups.len());
    for (i, (off, len)) in groups.into_iter().enumerate() {
        let bytes = read(h.payload_off + off, len)?;
        let d = artifact::Descriptor::of(artifact::CHUNKS_TYPE, &bytes);
        sent += remote.put_blob(&d, &bytes)?;
        total += len;
        layers.push(d);
        progress.show(i + 1);
    }
    progress.done();
    let blobs = layers.len() + 1;
    let digest = remote.put_manifest(&artifact::manifest(head_d, layers))?;
    println!(
        "{}: pushed {digest}: {blobs} blobs, {sent} of {total} bytes uploaded",
        remote.name()
    );
    Ok(())
}
