//! `thaw push IMAGE REF`: publishes an image as an OCI artifact (see `registry::artifact`).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use thaw::image::ImageFile;

use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::registry::{artifact, payload, share, Progress, Remote};
use crate::restore::working_set;

/// Publish an image to an OCI registry (REF like 127.0.0.1:5000/team/app:v3). Blobs the
/// repository has already are not uploaded again, nor pages its other images' blobs hold (their
/// blobs are referred to, after checking their bytes). The image is checked first: every
/// payload chunk must match its digest
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payload bytes per blob at most (K, M suffixes; default 512K). Larger blobs take fewer
    /// requests to fetch; what a rebuilt image shares with the repository's images is not
    /// uploaded whatever the size (pages are shared, not only blobs).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    blob_size: Option<u64>,
    /// Payload bytes per blob at most for what a restore needs before its first response (what
    /// it reads before the process runs, and the early part of the working set your restores
    /// recorded; default 64M, the largest blob): streamed by a first start as it comes, so
    /// larger blobs start it sooner.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    early_blob_size: Option<u64>,
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
    // The working set the pusher's restores recorded travels with the image: a restore on
    // another machine fetches and fills in that order from its first start, and what it needs
    // before its first response gets blobs of its own.
    let digest = image.content_digest();
    let working_set = super::cache_dir(ctx).and_then(|c| working_set::recorded(&c, &digest));
    let cs = u64::from(h.chunk_size);
    let early: Vec<(u64, u64)> = working_set
        .as_deref()
        .and_then(|ws| working_set::parse(ws, &digest, h.chunk_count(), cs))
        .map(|r| {
            let (chunks, early) = r.chunks();
            chunks[..early].iter().map(|&c| (c * cs, cs)).collect()
        })
        .unwrap_or_default();
    // And what every restore reads before the process runs (where memory is filled lazily).
    let eager = crate::restore::lazy::eager_chunks(&image, true);
    let up_front: Vec<(u64, u64)> = (eager.iter().enumerate())
        .filter(|(_, &e)| e)
        .map(|(c, _)| (c as u64 * cs, cs))
        .collect();
    // Blobs hold whole pages.
    let units = (
        blob_bytes(args.blob_size, artifact::BLOB_BYTES, h.page_size),
        blob_bytes(
            args.early_blob_size,
            artifact::EARLY_BLOB_BYTES,
            h.page_size,
        ),
    );
    let cuts = payload::cut(h, image.manifest(), units, &up_front, &early);
    // What the repository's other images hold is referred to, not uploaded again.
    let page = u64::from(h.page_size);
    let index = share::page_index(h.payload_len, page, |o, n| read(h.payload_off + o, n))?;
    let mut base = share::Base::of_repository(&remote, remote.tag(), page);
    // Only pages whose bytes were seen are picked: a wrong index or layout published in the
    // repository would otherwise make a push that no puller accepts.
    let shared = loop {
        let shared = share::share(cuts.clone(), &index, &base, units);
        if !base.check(&shared.picked, &remote) {
            break shared;
        }
    };
    let blobs = shared.upload;
    let index = share::encode(&index);
    let pages_d = artifact::Descriptor::of(artifact::PAGES_TYPE, &index);
    let mut total = config.size + head.len() as u64 + h.payload_len + pages_d.size;
    let progress = Progress::new("pushing", h.payload_len - shared.bytes);
    let (mut layers, payload_sent) = remote.put_blobs(
        blobs.iter().map(|b| {
            let mut bytes = Vec::new();
            for &(off, len) in &b.ranges {
                bytes.extend(read(h.payload_off + off, len)?);
            }
            Ok((bytes, b.media_type()))
        }),
        &progress,
    )?;
    for (d, b) in layers.iter_mut().zip(&blobs) {
        d.annotations = b
            .annotation()
            .map(|r| [(artifact::RANGES.to_string(), r)].into_iter().collect());
    }
    progress.done();
    layers.extend(shared.picked);
    sent += payload_sent + remote.put_blob(&pages_d, &index)?;
    let working_set = working_set
        .map(|ws| -> Result<_> {
            let d = artifact::Descriptor::of(artifact::WORKING_SET_TYPE, &ws);
            // (Part of the artifact: "X of Y bytes" never says more than all of it.)
            total += d.size;
            sent += remote.put_blob(&d, &ws)?;
            Ok(d)
        })
        .transpose()?;
    let blobs = layers.len() + 2 + usize::from(working_set.is_some());
    let m = artifact::manifest(head_d, layers, Some(pages_d), working_set);
    let digest = remote.put_manifest(&m)?;
    let shared = match base.images {
        0 => String::new(),
        n => format!(
            " ({} payload bytes found in {n} image{} of the repository)",
            shared.bytes,
            if n == 1 { "" } else { "s" }
        ),
    };
    outln!(
        "{}: pushed {digest}: {blobs} blobs, {sent} of {total} bytes uploaded{shared}",
        remote.name()
    )
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    crate::registry::cache::limit(Some(s))
        .map_err(|_| format!("{s}: not a size (bytes, or with K, M or G)"))
        .and_then(|n| {
            (4096..=64 << 20)
                .contains(&n)
                .then_some(n)
                .ok_or_else(|| format!("{s}: blobs hold 4K to 64M"))
        })
}

/// A blob size: `asked` or `default`, whole pages, at most [`artifact::MAX_BLOB`].
fn blob_bytes(asked: Option<u64>, default: u64, page: u32) -> u64 {
    asked
        .unwrap_or(default)
        .next_multiple_of(u64::from(page))
        .min(artifact::MAX_BLOB)
}
