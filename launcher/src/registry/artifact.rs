//! How a thaw image is laid out as an OCI artifact, and the checks that a pulled one fits the
//! image its first blob describes.
//!
//! The manifest has its own artifact type and the empty config. Its first layer is the "head":
//! the header block, the manifest and the trailer of the image file, in that order (what the
//! signature covers, and the signature). The other layers are the payload, cut into groups of
//! consecutive chunks ([`GROUP_BYTES`] each, the last shorter), in order: each group is a
//! content-addressed blob, so an image that shares groups with one already in the repository
//! uploads only the others, and a restore can fetch one group at a time. Nothing in the
//! manifest is trusted: the head's signature and the chunk digests it signs decide, exactly as
//! for a local file; the manifest only says where the bytes are.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use thaw::image::Header;

pub const ARTIFACT_TYPE: &str = "application/vnd.thaw.image.v1";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const HEAD_TYPE: &str = "application/vnd.thaw.image.head.v1";
pub const CHUNKS_TYPE: &str = "application/vnd.thaw.image.chunks.v1";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// Payload bytes per blob (whole chunks; at least one): Lambda's 512 KiB, a unit fetched at once.
pub const GROUP_BYTES: u64 = 512 << 10;
/// A head is at most a header block (64 KiB page), a manifest (64 MiB) and a trailer.
pub const MAX_HEAD: u64 = (64 << 10) + (64 << 20) + 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256(bytes),
            size: bytes.len() as u64,
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

/// Payload groups of an image: (payload offset, length) of each, in order.
pub fn groups(h: &Header) -> Vec<(u64, u64)> {
    let per = GROUP_BYTES.max(u64::from(h.chunk_size)) / u64::from(h.chunk_size)
        * u64::from(h.chunk_size);
    (0..h.payload_len.div_ceil(per))
        .map(|i| (i * per, per.min(h.payload_len - i * per)))
        .collect()
}

/// The manifest for a head and its payload groups.
pub fn manifest(head: Descriptor, groups: Vec<Descriptor>) -> Manifest {
    let mut layers = vec![head];
    layers.extend(groups);
    Manifest {
        schema_version: 2,
        media_type: MANIFEST_TYPE.into(),
        artifact_type: ARTIFACT_TYPE.into(),
        config: config().0,
        layers,
    }
}

/// A pulled manifest, checked to be a thaw artifact (the head is checked against it later, by
/// [`check_layers`]).
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
    if let Some(l) = m.layers[1..].iter().find(|l| l.media_type != CHUNKS_TYPE) {
        return Err(format!(
            "the manifest holds a layer of another kind ({})",
            l.media_type
        ));
    }
    Ok(m)
}

/// Checks that the manifest's payload layers are exactly the groups the head's header describes
/// (count and sizes); the bytes themselves are checked against the signed chunk digests.
pub fn check_layers(h: &Header, layers: &[Descriptor]) -> Result<(), String> {
    let want = groups(h);
    if want.len() != layers.len() {
        return Err(format!(
            "the manifest lists {} payload blobs where the image has {}",
            layers.len(),
            want.len()
        ));
    }
    if let Some((i, _)) = want
        .iter()
        .zip(layers)
        .enumerate()
        .find(|(_, ((_, len), l))| *len != l.size)
    {
        return Err(format!("payload blob {i} has the wrong size"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips_and_other_artifacts_are_refused() {
        let head = Descriptor::of(HEAD_TYPE, b"head");
        let m = manifest(head, vec![Descriptor::of(CHUNKS_TYPE, b"abc")]);
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
