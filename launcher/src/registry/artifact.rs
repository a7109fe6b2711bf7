//! How a thaw image is laid out as an OCI artifact, and the checks that a pulled one fits the
//! image its first blob describes.
//!
//! The manifest has its own artifact type and the empty config. Its first layer is the "head":
//! the header block, the manifest and the trailer of the image file, in that order (what the
//! signature covers, and the signature). The other layers are the payload, in order, cut into
//! content-addressed blobs of at most a unit ([`BLOB_BYTES`] unless the pusher chose another,
//! see [`blobs`]): a blob starts at each long run of saved memory and every unit within it, so
//! that a rebuilt image whose memory moved within the payload (a heap that grew) still shares
//! every unchanged blob with the one before, and pushing it uploads only the others. Nothing in
//! the manifest is trusted: the head's signature and the chunk digests it signs decide, exactly
//! as for a local file; the manifest only says where the bytes are, and any cut of the payload
//! into blobs is accepted ([`check_layers`]).

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use thaw::image::Header;

pub const ARTIFACT_TYPE: &str = "application/vnd.thaw.image.v1";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const HEAD_TYPE: &str = "application/vnd.thaw.image.head.v1";
pub const CHUNKS_TYPE: &str = "application/vnd.thaw.image.chunks.v1";
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
/// 2.5 ms of CPU for any blob on these machines), so large blobs fetch an image sooner, while
/// small ones let a rebuilt image share more of its bytes with the one before (measured in
/// docs/distribution.md: 32 KiB blobs shared all but 7 % of a rebuilt CPython + pandas image,
/// 512 KiB all but 22 %).
pub const BLOB_BYTES: u64 = 512 << 10;
/// Bytes per blob at most for what a restore needs before its first response, unless the pusher
/// says otherwise (`thaw push --early-blob-size`): a first start fetches all of it at once, so
/// few large blobs (pandas from an empty cache: 283 ms with 512 KiB, 189 ms with 8 MiB), at the
/// price of sharing less with a rebuilt image (23 % -> 38 % of a rebuilt pandas image uploaded).
pub const EARLY_BLOB_BYTES: u64 = 8 << 20;

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

/// How the payload of an image is cut into blobs of at most `unit` bytes: (payload offset,
/// length) of each, in order. `early` are the payload ranges (chunks) a restore needs before
/// its first response (what it reads before the process runs, and the pushed working set's
/// early part): they get blobs of their own, of at most `early_unit` bytes (see
/// [`early_stretches`]), so that a restore from an empty cache fetches them whole, in few
/// requests (a registry's cost is per request), and little else before that response.
pub fn blobs(
    h: &Header,
    m: &thaw::state::Manifest,
    (unit, early_unit): (u64, u64),
    early: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = m
        .memory
        .iter()
        .flat_map(|v| v.pages.iter().map(|r| (r.payload.offset, r.payload.len)))
        .collect();
    runs.sort_unstable();
    cut_all(h.payload_len, &runs, unit, early_unit, early)
}

/// [`cut`] of the whole payload, with the early part's stretches blobs of their own (of at most
/// `early_unit` bytes).
fn cut_all(
    len: u64,
    runs: &[(u64, u64)],
    unit: u64,
    early_unit: u64,
    early: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end) in early_stretches(early, len) {
        out.extend(cut(at..start, runs, unit));
        out.extend(cut(start..end, runs, early_unit));
        at = end;
    }
    out.extend(cut(at..len, runs, unit));
    out
}

/// `early` (payload offset and length of each chunk, any order) as sorted, disjoint stretches
/// within `len`. Adjacent chunks are one stretch; so are chunks a small gap apart, smallest
/// gaps first, as long as the gaps taken in stay within 1/[`GAP_SHARE`] of the stretches' bytes:
/// each gap taken in saves a request (what a registry's time goes by) and fetches its bytes
/// before the first response (which fetching as little as possible then wants to avoid).
fn early_stretches(early: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = early
        .iter()
        .map(|&(s, l)| (s.min(len), s.saturating_add(l).min(len)))
        .filter(|(s, e)| s < e)
        .collect();
    ranges.sort_unstable();
    let mut exact: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match exact.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => exact.push((s, e)),
        }
    }
    let mut budget = exact.iter().map(|(s, e)| e - s).sum::<u64>() / GAP_SHARE;
    let mut gaps: Vec<(u64, usize)> = exact
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].0 - w[0].1, i))
        .collect();
    gaps.sort_unstable();
    let mut joined = vec![false; exact.len()];
    for (gap, i) in gaps {
        if gap > budget {
            break;
        }
        budget -= gap;
        joined[i] = true;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(exact.len());
    for (i, r) in exact.into_iter().enumerate() {
        match out.last_mut() {
            Some(last) if i > 0 && joined[i - 1] => last.1 = r.1,
            _ => out.push(r),
        }
    }
    out
}

/// See [`early_stretches`].
const GAP_SHARE: u64 = 16;

/// `range` of the payload cut every `unit` after a cut, and at the start of each of `runs`
/// (offset and length, sorted) within it that is long or that leaves the blob before at least
/// half a unit: small runs (a page of a library's data) share a blob, long ones are cut from
/// their own start.
fn cut(range: std::ops::Range<u64>, runs: &[(u64, u64)], unit: u64) -> Vec<(u64, u64)> {
    let unit = unit.max(1);
    let min = unit / 2;
    let (mut begin, len) = (range.start, range.end);
    let mut out = Vec::new();
    let mut i = runs.partition_point(|r| r.0 <= begin);
    while begin < len {
        let fixed = (begin + unit).min(len);
        let cuts = |&(s, l): &(u64, u64)| s > begin && (l >= min || s - begin >= min);
        while i < runs.len() && runs[i].0 < fixed && !cuts(&runs[i]) {
            i += 1;
        }
        let end = match runs.get(i) {
            Some(&(s, _)) if s > begin && s < fixed => s,
            _ => fixed,
        };
        out.push((begin, end - begin));
        begin = end;
    }
    out
}

/// The payload layers of a manifest, and its working set if it has one.
pub fn payload_layers(m: &Manifest) -> (Vec<Descriptor>, Option<Descriptor>) {
    let mut payload = m.layers.get(1..).unwrap_or_default().to_vec();
    let ws = payload
        .last()
        .is_some_and(|l| l.media_type == WORKING_SET_TYPE)
        .then(|| payload.pop())
        .flatten();
    (payload, ws)
}

/// The manifest for a head, its payload blobs and the working set, if any.
pub fn manifest(
    head: Descriptor,
    blobs: Vec<Descriptor>,
    working_set: Option<Descriptor>,
) -> Manifest {
    let mut layers = vec![head];
    layers.extend(blobs);
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
    let (payload, working_set) = payload_layers(&m);
    if working_set.is_some_and(|w| w.size > MAX_WORKING_SET) {
        return Err("the manifest's working set is too big".into());
    }
    if let Some(l) = payload.iter().find(|l| l.media_type != CHUNKS_TYPE) {
        return Err(format!(
            "the manifest holds a layer of another kind ({})",
            l.media_type
        ));
    }
    Ok(m)
}

/// Checks that the manifest's payload layers cut exactly the payload the head's header describes
/// into non-empty blobs (how it is cut is the pusher's choice: the bytes are checked against the
/// signed chunk digests); returns each blob's payload offset.
pub fn check_layers(h: &Header, layers: &[Descriptor]) -> Result<Vec<u64>, String> {
    // Not more blobs than pages: a manifest cannot make a restore ask for the payload in bytes.
    if layers.len() as u64 > h.payload_len.div_ceil(u64::from(h.page_size)) {
        return Err(format!(
            "the manifest cuts the payload into {} blobs, more than it has pages",
            layers.len()
        ));
    }
    let mut offsets = Vec::with_capacity(layers.len());
    let mut at = 0u64;
    let page = u64::from(h.page_size);
    for (i, l) in layers.iter().enumerate() {
        if l.size == 0 || !l.size.is_multiple_of(page) || l.size > MAX_BLOB {
            return Err(format!(
                "payload blob {i} holds {} bytes, not a whole number of pages up to {MAX_BLOB}",
                l.size
            ));
        }
        offsets.push(at);
        at = at.saturating_add(l.size);
    }
    if at != h.payload_len {
        return Err(format!(
            "the manifest's payload blobs hold {at} bytes where the image has {}",
            h.payload_len
        ));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips_and_other_artifacts_are_refused() {
        let head = Descriptor::of(HEAD_TYPE, b"head");
        let m = manifest(
            head,
            vec![Descriptor::of(CHUNKS_TYPE, b"abc")],
            Some(Descriptor::of(WORKING_SET_TYPE, b"ws")),
        );
        assert_eq!(payload_layers(&m).0.len(), 1);
        assert_eq!(payload_layers(&m).1.unwrap().digest, sha256(b"ws"));
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

    #[test]
    fn a_working_sets_early_part_gets_blobs_of_its_own() {
        let k = 1024;
        let unit = 32 * k;
        // Chunks of 4K: three a small gap apart (one stretch), then a run of 25, out of order.
        let mut early: Vec<(u64, u64)> = [100, 104, 112]
            .into_iter()
            .chain((200..300).step_by(4))
            .map(|c| (c * k, 4 * k))
            .collect();
        early.reverse();
        assert_eq!(
            early_stretches(&early, 400 * k),
            [(100 * k, 116 * k), (200 * k, 300 * k)]
        );
        let b = cut_all(400 * k, &[(0, 400 * k)], unit, 4 * unit, &early);
        let starts: Vec<u64> = b.iter().map(|x| x.0 / k).collect();
        // Cut at each stretch's start and end; within one, blobs of up to four units.
        assert_eq!(
            starts,
            [0, 32, 64, 96, 100, 116, 148, 180, 200, 300, 332, 364, 396]
        );
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 400 * k);
        // No early part: the plain cut; chunks past the payload's end are clipped away.
        let plain = cut(0..400 * k, &[(0, 400 * k)], unit);
        assert_eq!(cut_all(400 * k, &[(0, 400 * k)], unit, unit, &[]), plain);
        assert!(early_stretches(&[(500 * k, 4 * k)], 400 * k).is_empty());
        // Gaps are taken in smallest first, up to a sixteenth of the early bytes: of sixteen
        // pages 4K apart and one 8K further, one gap.
        let pages: Vec<(u64, u64)> = (0..16).map(|i| (i * 8 * k, 4 * k)).collect();
        let s = early_stretches(&pages, 400 * k);
        assert_eq!(s.len(), 15);
        assert_eq!(s[0], (0, 12 * k));
    }

    #[test]
    fn blobs_start_at_runs_and_stay_small() {
        let k = 1024;
        // A long run, two one-page runs, two long runs, to 300K.
        let runs = |grow| {
            let r = [(0, 100 + grow), (100, 4), (104, 4), (108, 92), (200, 100)];
            r.map(|(s, l)| (if s > 0 { s + grow } else { s } * k, l * k))
        };
        let b = cut(0..300 * k, &runs(0), 32 * k);
        let starts: Vec<u64> = b.iter().map(|x| x.0 / k).collect();
        assert_eq!(starts, [0, 32, 64, 96, 108, 140, 172, 200, 232, 264, 296]);
        assert!(b.iter().all(|x| x.1 > 0 && x.1 <= 32 * k));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 300 * k);
        // A first run that grew by a page moves the runs after it, not their blobs.
        let c = cut(0..304 * k, &runs(4), 32 * k);
        let tail = |v: &[(u64, u64)], from: u64| -> Vec<u64> {
            v.iter().filter(|x| x.0 >= from).map(|x| x.1).collect()
        };
        assert_eq!(tail(&b, 108 * k), tail(&c, 112 * k));
        assert!(cut(0..0, &[], 32 * k).is_empty());
    }
}
