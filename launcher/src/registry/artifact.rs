//! How a thaw image is laid out as an OCI artifact.
//!
//! The manifest has its own artifact type and the empty config. Its first layer is the "head":
//! the header block, the manifest and the trailer of the image file, in that order (what the
//! signature covers, and the signature). The other layers are the payload, cut into
//! content-addressed blobs (`registry::payload`: what a restore needs before its first response
//! gathered into a few blobs, the rest in plain blobs of at most a unit, [`BLOB_BYTES`] unless
//! the pusher chose another), then optionally the working set. Nothing in the manifest is
//! trusted: the head's signature and the chunk digests it signs decide, exactly as for a local
//! file; the manifest only says where the bytes are, and any layout that tiles the payload is
//! accepted.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const ARTIFACT_TYPE: &str = "application/vnd.thaw.image.v1";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const HEAD_TYPE: &str = "application/vnd.thaw.image.head.v1";
pub const CHUNKS_TYPE: &str = "application/vnd.thaw.image.chunks.v1";
/// A payload blob of several stretches of the payload, listed in its [`RANGES`] annotation
/// (see `registry::payload`).
pub const GATHERED_TYPE: &str = "application/vnd.thaw.image.chunks.gathered.v1";
/// A gathered blob's stretches, in blob order: `OFFSET+LENGTH,…` (payload bytes, decimal).
pub const RANGES: &str = "org.thaw.payload.ranges";
/// A blob of another image of the repository some of whose pages this image holds too, listed
/// in its [`PICKS`] annotation (see `registry::share`): what a rebuilt image shares with the one
/// before is not uploaded again, however its changes are scattered.
pub const PICKED_TYPE: &str = "application/vnd.thaw.image.chunks.picked.v1";
/// A picked blob's stretches, in blob order: `OFFSET+LENGTH@AT,…` (payload bytes at blob offset
/// `AT`, decimal); the bytes between them belong to other images.
pub const PICKS: &str = "org.thaw.payload.picks";
/// An optional layer after the payload: a 16-byte hash of every payload page, in payload order
/// (`registry::share::page_index`), which a later push of a rebuilt image reads to find the pages
/// it shares with this one. Only ever used to choose what to refer to; never read by a restore.
pub const PAGES_TYPE: &str = "application/vnd.thaw.page-index.v1";
/// An image fetched from a registry is at most this big (256 GiB): the launcher sizes its file
/// and its record of what is in it from the unsigned manifest before the signature is checked.
pub const MAX_IMAGE: u64 = 256 << 30;
/// A payload blob holds at most this much (`thaw push --blob-size` stops there): a registry
/// cannot make a launcher hold more for one blob.
pub const MAX_BLOB: u64 = 64 << 20;
/// An optional last layer: the working set the pusher recorded (`restore::working_set`), which
/// only orders what a restore fetches and fills first; never trusted for a byte.
pub const WORKING_SET_TYPE: &str = "application/vnd.thaw.working-set.v1";
/// A working set is at most this big (a million touches).
pub const MAX_WORKING_SET: u64 = 9 << 20;
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// Payload bytes per blob at most, unless the pusher says otherwise (`thaw push --blob-size`):
/// Lambda's 512 KiB. A registry's cost is per request (Debian's distribution registry: about
/// 2.5 ms of CPU for any blob on these machines), so large blobs fetch an image sooner. (Whole
/// blobs shared little of a rebuilt image unless small, which is why a push shares pages:
/// `registry::share`.)
pub const BLOB_BYTES: u64 = 512 << 10;
/// Bytes per gathered blob at most (what a restore needs before its first response), unless the
/// pusher says otherwise (`thaw push --early-blob-size`): a first start streams it as it comes,
/// so one blob as large as a blob may be (pandas: 27 MiB answered in 54-68 ms from one blob,
/// 68-83 ms from two of up to 16 MiB, 88-118 ms from 2 MiB blobs).
pub const EARLY_BLOB_BYTES: u64 = MAX_BLOB;

/// A head is at most a header block (64 KiB page), a manifest (64 MiB) and a trailer.
pub const MAX_HEAD: u64 = (64 << 10) + (64 << 20) + 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    /// The client's form of the same descriptor.
    pub fn oci(&self) -> oci_client::manifest::OciDescriptor {
        oci_client::manifest::OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size as i64,
            ..Default::default()
        }
    }

    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256(bytes),
            size: bytes.len() as u64,
            annotations: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(rename = "artifactType")]
    pub artifact_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The empty config blob every thaw artifact carries.
pub fn config() -> (Descriptor, &'static [u8]) {
    (Descriptor::of(EMPTY_TYPE, EMPTY), EMPTY)
}

/// The layers of a manifest after its head: the payload's, and the page index and the working
/// set where it has them.
pub struct Parts {
    pub payload: Vec<Descriptor>,
    pub pages: Option<Descriptor>,
    pub working_set: Option<Descriptor>,
}

/// Whether a layer of this media type holds payload bytes.
pub fn is_payload(media_type: &str) -> bool {
    [CHUNKS_TYPE, GATHERED_TYPE, PICKED_TYPE].contains(&media_type)
}

/// The parts of a manifest: its payload layers, in order, then optionally the page index, then
/// optionally the working set.
pub fn parts(m: &Manifest) -> Parts {
    let mut payload = m.layers.get(1..).unwrap_or_default().to_vec();
    let mut last = |t: &str| {
        (payload.last())
            .is_some_and(|l| l.media_type == t)
            .then(|| payload.pop())
            .flatten()
    };
    let working_set = last(WORKING_SET_TYPE);
    let pages = last(PAGES_TYPE);
    Parts {
        payload,
        pages,
        working_set,
    }
}

/// The manifest for a head, its payload blobs, and the page index and the working set, if any.
pub fn manifest(
    head: Descriptor,
    blobs: Vec<Descriptor>,
    pages: Option<Descriptor>,
    working_set: Option<Descriptor>,
) -> Manifest {
    let mut layers = vec![head];
    layers.extend(blobs);
    layers.extend(pages);
    layers.extend(working_set);
    Manifest {
        schema_version: 2,
        media_type: MANIFEST_TYPE.into(),
        artifact_type: ARTIFACT_TYPE.into(),
        config: config().0,
        layers,
    }
}

/// A pulled manifest, checked to be a thaw artifact (the head is checked against it later, by
/// `payload::Layout::check`).
pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("the registry's manifest is not an OCI image manifest: {e}"))?;
    if m.artifact_type != ARTIFACT_TYPE {
        return Err(format!(
            "not a thaw image (artifact type {:?}, expected {ARTIFACT_TYPE})",
            m.artifact_type
        ));
    }
    let head = m.layers.first().ok_or("the manifest has no layers")?;
    if head.media_type != HEAD_TYPE || head.size > MAX_HEAD {
        return Err(format!(
            "the manifest's first layer is not a thaw image head ({} of {} bytes)",
            head.media_type, head.size
        ));
    }
    let parts = parts(&m);
    if parts.working_set.is_some_and(|w| w.size > MAX_WORKING_SET) {
        return Err("the manifest's working set is too big".into());
    }
    if let Some(l) = (parts.payload.iter()).find(|l| !is_payload(&l.media_type)) {
        return Err(format!(
            "the manifest holds a layer of another kind ({})",
            l.media_type
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips_and_other_artifacts_are_refused() {
        let head = Descriptor::of(HEAD_TYPE, b"head");
        let m = manifest(
            head.clone(),
            vec![Descriptor::of(CHUNKS_TYPE, b"abc")],
            Some(Descriptor::of(PAGES_TYPE, b"pages")),
            Some(Descriptor::of(WORKING_SET_TYPE, b"ws")),
        );
        assert_eq!(parts(&m).payload.len(), 1);
        assert_eq!(parts(&m).pages.unwrap().digest, sha256(b"pages"));
        assert_eq!(parts(&m).working_set.unwrap().digest, sha256(b"ws"));
        // Either optional part may be missing.
        let bare = manifest(head, vec![], Some(Descriptor::of(PAGES_TYPE, b"p")), None);
        assert!(parts(&bare).pages.is_some() && parts(&bare).working_set.is_none());
        // A page index elsewhere than after the payload is a layer of another kind.
        let mut moved = m.clone();
        moved.layers.swap(1, 2);
        let text = serde_json::to_string(&moved).unwrap();
        assert!(parse(text.as_bytes()).unwrap_err().contains("another kind"));
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(parse(&json).unwrap(), m);
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""artifactType":"application/vnd.thaw.image.v1""#));
        let other = text.replace(ARTIFACT_TYPE, "application/vnd.other");
        assert!(parse(other.as_bytes())
            .unwrap_err()
            .contains("not a thaw image"));
        let swapped = text.replace(CHUNKS_TYPE, "application/vnd.oci.image.layer.v1.tar");
        assert!(parse(swapped.as_bytes()).is_err());
        assert!(parse(b"{}").is_err());
        assert_eq!(
            sha256(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
