//! What `thaw push` need not upload: the pages of an image that the repository's other thaw
//! images already hold, wherever they lie in their blobs.
//!
//! Two builds of one application differ in a few hundred pages scattered through its heaps
//! (docs/distribution.md): whole blobs shared little of a rebuilt image unless they were very
//! small, and small blobs make a first start on a new machine take a request for each. So every
//! pushed image carries a page index (`artifact::PAGES_TYPE`: a 16-byte hash of each payload
//! page), and a push reads the indexes of the repository's images, finds which of its pages
//! they hold and where, and refers to those blobs as picked blobs (`artifact::PICKED_TYPE`: the
//! stretches of another image's blob this one holds, with their offsets in it). Only the pages
//! nobody holds are uploaded, gathered as the payload's cut ([`super::payload::cut`]) would
//! have put them. A first start still fetches what comes before its answer in a few requests: a
//! stretch of the blobs the earlier image gathered for its own answer, and the new pages.
//!
//! Nothing read from the registry here is trusted for more than a choice: a wrong index or
//! manifest makes a push refer to bytes that are not what it says, which every puller refuses
//! (each chunk is checked against its signed digest, whatever blob it came in); it never makes
//! a puller accept a byte.

use std::collections::{HashMap, HashSet};

use thaw::image::Header;

use super::artifact::{self, Descriptor};
use super::payload::{gather, Cut, Layout};
use super::{Progress, Remote};

/// Bytes of a page's hash in an index.
pub const HASH: usize = 16;
/// Images of the repository whose pages a push looks for (the tag pushed to first, then the
/// last listed: version tags list in order).
const BASES: usize = 8;
/// Bytes of blobs a push holds at once while it checks them.
const BATCH: u64 = 128 << 20;
/// Base blobs a gathered blob's pages are picked from at most: a first start fetches a stretch
/// of each (a request each).
const PICKED_PER_GATHERED: usize = 8;
/// Places of one page's hash kept at most (a page repeated thousands of times starts a run at
/// each copy only where runs break: a bound on the search, not on what is found in runs).
const PLACES: usize = 64;

pub type PageHash = [u8; HASH];

/// The hash of a page as an index holds it.
pub fn page_hash(bytes: &[u8]) -> PageHash {
    let mut h = [0u8; HASH];
    h.copy_from_slice(&blake3::hash(bytes).as_bytes()[..HASH]);
    h
}

/// The index of a payload of `len` bytes, read by `read` (offset, length).
pub fn page_index<E>(
    len: u64,
    page: u64,
    mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Vec<PageHash>, E> {
    const PIECE: u64 = 8 << 20;
    let mut out = Vec::with_capacity(len.div_ceil(page) as usize);
    let mut at = 0;
    while at < len {
        let n = PIECE.min(len - at);
        let bytes = read(at, n)?;
        out.extend(bytes.chunks(page as usize).map(page_hash));
        at += n;
    }
    Ok(out)
}

/// The index's bytes, as pushed.
pub fn encode(index: &[PageHash]) -> Vec<u8> {
    index.concat()
}

/// Where the pages of the repository's images are: in which blob, at which offset.
#[derive(Default)]
pub struct Base {
    /// Each blob once, by digest.
    blobs: Vec<Descriptor>,
    by_digest: HashMap<String, usize>,
    /// Each blob's pages (by offset / page), where some image says what they hold.
    held: Vec<Vec<Option<PageHash>>>,
    /// Where pages with each hash are, in the order found (a page an image holds twice, in
    /// two places: a cut starting with its second copy is found whole there).
    at: HashMap<PageHash, Vec<(usize, u64)>>,
    page: u64,
    /// Blobs whose bytes were fetched and hashed: what `held` says of them is so.
    checked: Vec<bool>,
    /// Images read.
    pub images: usize,
}

impl Base {
    pub fn new(page: u64) -> Base {
        Base {
            page,
            ..Default::default()
        }
    }

    /// Reads the repository's images (those with a page index, the tag `own` names first):
    /// none where the repository cannot be listed (a new one). An image that cannot be read or
    /// does not add up is passed over.
    pub fn of_repository(remote: &Remote, own: Option<&str>, page: u64) -> Base {
        let mut base = Base::new(page);
        let Ok(mut tags) = remote.tags() else {
            return base;
        };
        if let Some(own) = own {
            if let Some(i) = tags.iter().position(|t| t == own) {
                let t = tags.remove(i);
                tags.push(t);
            }
        }
        let mut seen = HashSet::new();
        for tag in tags.iter().rev().take(BASES) {
            let Ok((m, digest)) = remote.manifest_tagged(tag) else {
                continue;
            };
            if seen.insert(digest) {
                base.read(remote, &m);
            }
        }
        base
    }

    /// Adds what image `m`'s index says its blobs hold, if its layout and index add up.
    fn read(&mut self, remote: &Remote, m: &artifact::Manifest) -> Option<()> {
        let parts = artifact::parts(m);
        let pages = parts.pages?;
        let mut got = remote.blobs(&[&m.layers[0], &pages]).into_iter();
        let (head, index) = (got.next()?.ok()?, got.next()?.ok()?);
        let file_len = (parts.payload.iter())
            .map(super::payload::claimed)
            .try_fold(head.len() as u64, u64::checked_add)?;
        let n = head.len().min(thaw::image::HEADER_LEN);
        let h = Header::decode(&head[..n], file_len, std::path::Path::new("")).ok()?;
        let layout = Layout::check(&h, &parts.payload).ok()?;
        self.add(&h, &parts.payload, &layout, &index)
    }

    /// Adds the pages of an image of header `h`, payload layers `layers` laid out as `layout`,
    /// whose index is `index`.
    fn add(
        &mut self,
        h: &Header,
        layers: &[Descriptor],
        layout: &Layout,
        index: &[u8],
    ) -> Option<()> {
        let page = self.page;
        let count = h.payload_len.div_ceil(page);
        if u64::from(h.page_size) != page || index.len() as u64 != count * HASH as u64 {
            return None;
        }
        self.images += 1;
        for (p, hash) in index.chunks(HASH).enumerate() {
            let hash: PageHash = hash.try_into().expect("HASH bytes");
            let start = p as u64 * page;
            for (b, at, _) in layout.parts(start, (start + page).min(h.payload_len)) {
                let d = &layers[b];
                let blob = *self.by_digest.entry(d.digest.clone()).or_insert_with(|| {
                    self.blobs.push(Descriptor {
                        media_type: artifact::PICKED_TYPE.into(),
                        digest: d.digest.clone(),
                        size: d.size,
                        annotations: None,
                    });
                    self.held.push(vec![None; d.size.div_ceil(page) as usize]);
                    self.checked.push(false);
                    self.blobs.len() - 1
                });
                // (A blob listed again with another size is not the same blob.)
                if self.blobs[blob].size != d.size || !at.is_multiple_of(page) {
                    continue;
                }
                self.held[blob][(at / page) as usize] = Some(hash);
                place(&mut self.at, hash, (blob, at));
            }
        }
        Some(())
    }

    /// Checks the blobs `picked` picks from against their bytes (fetched whole, checked
    /// against their digests), each once: what another image's index or manifest said of them
    /// is only a claim. Returns whether a claim was wrong (a page is not what its index said, a
    /// blob is missing or damaged): [`share`] is to be asked again, and picks elsewhere or
    /// uploads what it picked there.
    pub fn check(&mut self, picked: &[Descriptor], remote: &Remote) -> bool {
        let todo: Vec<usize> = (picked.iter())
            .filter_map(|d| self.by_digest.get(&d.digest).copied())
            .filter(|&b| !self.checked[b])
            .collect();
        let mut wrong = false;
        let size = |b: &usize| self.blobs[*b].size;
        let progress = Progress::new("checking shared pages", todo.iter().map(size).sum());
        // Up to 128 MiB at a time (a blob may hold 64).
        let mut rest = &todo[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && (n == 0 || bytes + size(&rest[n]) <= BATCH) {
                bytes += size(&rest[n]);
                n += 1;
            }
            let some;
            (some, rest) = rest.split_at(n);
            let ds: Vec<&Descriptor> = some.iter().map(|&b| &self.blobs[b]).collect();
            let got = remote.blobs(&ds);
            progress.add(bytes);
            for (&b, bytes) in some.iter().zip(got) {
                self.checked[b] = true;
                let bytes = bytes.unwrap_or_default();
                for (p, held) in self.held[b].iter_mut().enumerate() {
                    let start = p * self.page as usize;
                    let real = bytes.get(start..start + self.page as usize).map(page_hash);
                    wrong |= held.is_some() && *held != real;
                    *held = real;
                    if let Some(h) = real {
                        place(&mut self.at, h, (b, start as u64));
                    }
                }
            }
        }
        progress.done();
        wrong
    }

    /// Where a page of hash `hash` is, preferring the page after `after` (blob, offset), so
    /// that runs of pages stay runs, then a place that starts a blob; `None` where no blob has
    /// it or where each place is `taken`.
    fn find(
        &self,
        hash: &PageHash,
        after: Option<(usize, u64)>,
        taken: &HashSet<(usize, u64)>,
    ) -> Option<(usize, u64)> {
        // (Images may say different things of one page: only what `held` says now counts.)
        let usable = |&(b, at): &(usize, u64)| {
            self.held[b].get((at / self.page) as usize) == Some(&Some(*hash))
                && !taken.contains(&(b, at))
        };
        let next = after.map(|(b, at)| (b, at + self.page));
        let places = self.at.get(hash).map_or(&[][..], |p| &p[..]);
        next.filter(usable)
            .or_else(|| places.iter().copied().filter(|w| w.1 == 0).find(usable))
            .or_else(|| places.iter().copied().find(usable))
    }
}

/// Notes in `at` that `hash` is at `w` (blob, offset), once.
fn place(at: &mut HashMap<PageHash, Vec<(usize, u64)>>, hash: PageHash, w: (usize, u64)) {
    let places = at.entry(hash).or_default();
    if places.len() < PLACES && !places.contains(&w) {
        places.push(w);
    }
}

/// Keeps of `found` (where a base blob holds each page of a cut of `len` bytes) what is worth
/// its requests, and gives the rest back to `taken`: of each blob, the pages in one stretch of it
/// (a restore fetches a stretch of a blob in one request, gaps included) holding at least an
/// eighth of the cut or 256 KiB, at least half of that stretch; for a `gathered` cut (what a
/// first start fetches before its answer), from at most [`PICKED_PER_GATHERED`] blobs.
fn keep_worthwhile(
    found: &mut [Option<(usize, u64)>],
    len: u64,
    gathered: bool,
    page: u64,
    taken: &mut HashSet<(usize, u64)>,
) {
    let enough = (len / 8).clamp(page, 256 << 10);
    let mut by_blob: HashMap<usize, Vec<u64>> = HashMap::new();
    for &(b, at) in found.iter().flatten() {
        by_blob.entry(b).or_default().push(at);
    }
    // Per blob, its best stretch (start, end) and the bytes picked in it.
    let mut best: Vec<(usize, (u64, u64), u64)> = Vec::new();
    for (b, mut ats) in by_blob {
        ats.sort_unstable();
        // Stretches of picks with no gap of more than that, or a chunk (64 KiB), between them.
        let gap = enough.max(64 << 10);
        let mut chosen: Option<((u64, u64), u64)> = None;
        let mut start = 0;
        for i in 1..=ats.len() {
            if i < ats.len() && ats[i] - ats[i - 1] <= gap {
                continue;
            }
            let (span, n) = ((ats[start], ats[i - 1] + page), (i - start) as u64 * page);
            if chosen.is_none_or(|c| n > c.1) {
                chosen = Some((span, n));
            }
            start = i;
        }
        if let Some((span, n)) = chosen {
            if n >= enough && n * 2 >= span.1 - span.0 {
                best.push((b, span, n));
            }
        }
    }
    best.sort_unstable_by_key(|&(b, _, n)| (std::cmp::Reverse(n), b));
    if gathered {
        best.truncate(PICKED_PER_GATHERED);
    }
    let spans: HashMap<usize, (u64, u64)> = best.into_iter().map(|(b, s, _)| (b, s)).collect();
    for w in found.iter_mut() {
        let keep = w.is_some_and(|(b, at)| spans.get(&b).is_some_and(|s| s.0 <= at && at < s.1));
        if !keep {
            if let Some(w) = w.take() {
                taken.remove(&w);
            }
        }
    }
}

/// A push's payload layers: the blobs to upload (cut as `payload::cut` does) and the blobs of
/// other images picked from, each with its `PICKS` annotation.
pub struct Shared {
    pub upload: Vec<Cut>,
    pub picked: Vec<Descriptor>,
    /// Payload bytes found in other images.
    pub bytes: u64,
}

/// What of `cuts` (the payload of an image whose pages hash to `index`) the blobs of `base`
/// hold. A cut's pages found in a base blob are picked from it where they are worth a request
/// ([`keep_worthwhile`]); the rest of a cut that had pages
/// picked is uploaded, gathered with the rest of the others of its kind (what comes before the
/// first answer in blobs of up to `early_unit`, in its order; the rest in blobs of up to `unit`).
/// Cuts with nothing picked are uploaded as they are.
pub fn share(
    cuts: Vec<Cut>,
    index: &[PageHash],
    base: &Base,
    (unit, early_unit): (u64, u64),
) -> Shared {
    let page = base.page;
    let mut taken: HashSet<(usize, u64)> = HashSet::new();
    // Per base blob: (payload offset, offset in the blob) of each page picked from it.
    let mut picks: Vec<Vec<(u64, u64)>> = vec![Vec::new(); base.blobs.len()];
    let (mut whole, mut fresh_early, mut fresh_late) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for cut in cuts {
        let pages: Vec<u64> = (cut.ranges.iter())
            .flat_map(|&(o, n)| (0..n.div_ceil(page)).map(move |k| o + k * page))
            .collect();
        // Each page: where a base blob holds it, if one does.
        let mut found: Vec<Option<(usize, u64)>> = Vec::with_capacity(pages.len());
        let mut after = None;
        for &p in &pages {
            let w = index
                .get((p / page) as usize)
                .and_then(|h| base.find(h, after, &taken));
            if let Some(w) = w {
                taken.insert(w);
            }
            found.push(w);
            after = w;
        }
        keep_worthwhile(
            &mut found,
            pages.len() as u64 * page,
            cut.gathered,
            page,
            &mut taken,
        );
        // A cut nothing was found of, or that is one blob of the base in its order (it has that
        // blob's digest: nothing is uploaded), is pushed as it was cut.
        let len = pages.len() as u64 * page;
        let one_blob = found.first().copied().flatten().is_some_and(|(b, _)| {
            base.blobs[b].size == len
                && (found.iter().enumerate()).all(|(i, w)| *w == Some((b, i as u64 * page)))
        });
        if one_blob {
            bytes += len;
        }
        if one_blob || found.iter().all(Option::is_none) {
            whole.push(cut);
            continue;
        }
        let fresh = if cut.gathered {
            &mut fresh_early
        } else {
            &mut fresh_late
        };
        for (&p, w) in pages.iter().zip(&found) {
            match *w {
                Some((b, at)) => {
                    picks[b].push((p, at));
                    bytes += page;
                }
                None => match fresh.last_mut() {
                    Some((_, end)) if *end == p => *end += page,
                    _ => fresh.push((p, p + page)),
                },
            }
        }
    }
    let mut upload = gather(&fresh_early, early_unit);
    upload.extend(whole);
    upload.extend(gather(&fresh_late, unit));
    let picked = (base.blobs.iter().zip(picks))
        .filter(|(_, p)| !p.is_empty())
        .map(|(d, mut p)| {
            p.sort_unstable_by_key(|&(_, at)| at);
            // Runs of pages adjacent in both the payload and the blob, as one stretch each.
            let mut runs: Vec<(u64, u64, u64)> = Vec::new();
            for (o, at) in p {
                match runs.last_mut() {
                    Some(r) if r.0 + r.1 == o && r.2 + r.1 == at => r.1 += page,
                    _ => runs.push((o, page, at)),
                }
            }
            let text: Vec<String> = (runs.iter())
                .map(|(o, n, at)| format!("{o}+{n}@{at}"))
                .collect();
            let mut d = d.clone();
            d.annotations = Some([(artifact::PICKS.into(), text.join(","))].into());
            d
        })
        .collect();
    Shared {
        upload,
        picked,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::artifact::{CHUNKS_TYPE, GATHERED_TYPE, RANGES};

    const P: u64 = 4096;

    fn header(pages: u64) -> Header {
        Header::layout(0, 4096, 65536, pages * P, 0)
    }

    /// Descriptors for cuts, named `new{i}`.
    fn uploaded(cuts: &[Cut]) -> Vec<Descriptor> {
        cuts.iter()
            .enumerate()
            .map(|(i, c)| Descriptor {
                media_type: (if c.gathered {
                    GATHERED_TYPE
                } else {
                    CHUNKS_TYPE
                })
                .into(),
                digest: format!("new{i}"),
                size: c.ranges.iter().map(|r| r.1).sum(),
                annotations: c.annotation().map(|a| [(RANGES.to_string(), a)].into()),
            })
            .collect()
    }

    fn hash(n: u64) -> PageHash {
        let mut h = [0u8; HASH];
        h[..8].copy_from_slice(&n.to_le_bytes());
        h
    }

    /// A base of one image: 40 pages in plain blobs of 8, page `p` hashing to `hash(p)`.
    fn base() -> Base {
        let layers: Vec<Descriptor> = (0..5)
            .map(|i| Descriptor {
                media_type: CHUNKS_TYPE.into(),
                digest: format!("base{i}"),
                size: 8 * P,
                annotations: None,
            })
            .collect();
        let layout = Layout::check(&header(40), &layers).unwrap();
        let index: Vec<u8> = (0..40).flat_map(hash).collect();
        let mut b = Base::new(P);
        b.add(&header(40), &layers, &layout, &index).unwrap();
        b
    }

    fn plain(from: u64, to: u64) -> Cut {
        Cut {
            ranges: vec![(from * P, (to - from) * P)],
            gathered: false,
        }
    }

    #[test]
    fn only_the_pages_no_image_holds_are_uploaded_and_the_layout_finds_every_page() {
        let base = base();
        // A rebuild: pages 3, 17 and 30 changed, and 21..28 hold what 22..29 held (so page 28,
        // as before, is in the base only once, for page 27).
        let new: Vec<PageHash> = (0..40u64)
            .map(|p| match p {
                3 | 17 | 30 => hash(1000 + p),
                21..28 => hash(p + 1),
                _ => hash(p),
            })
            .collect();
        let cuts = vec![
            Cut {
                ranges: vec![(8 * P, 4 * P)],
                gathered: true,
            },
            plain(0, 8),
            plain(12, 20),
            plain(20, 28),
            plain(28, 32),
            plain(32, 40),
        ];
        let shared = share(cuts, &new, &base, (8 * P, 8 * P));
        // New: pages 3, 17, 28 and 30, gathered; the last cut is the base's last blob: pushed
        // as it was cut (nothing to upload).
        let ranges: Vec<&[(u64, u64)]> = shared.upload.iter().map(|c| &c.ranges[..]).collect();
        assert_eq!(
            ranges,
            [
                &[(32 * P, 8 * P)][..],
                &[(3 * P, P), (17 * P, P), (28 * P, P), (30 * P, P)]
            ],
        );
        assert_eq!(shared.bytes, 36 * P);
        let mut layers = uploaded(&shared.upload);
        layers.extend(shared.picked.iter().cloned());
        let layout = Layout::check(&header(40), &layers).unwrap();
        // Every page is where the layout says, with the bytes it needs.
        let mut from_new = 0;
        for p in 0..40 {
            let parts: Vec<_> = layout.parts(p * P, (p + 1) * P).collect();
            let [(b, at, P)] = parts[..] else {
                panic!("page {p}: {parts:?}")
            };
            let d = &layers[b];
            if let Some(i) = d.digest.strip_prefix("base") {
                let i: u64 = i.parse().unwrap();
                assert_eq!(hash(i * 8 + at / P), new[p as usize], "page {p}");
                assert_eq!(d.media_type, artifact::PICKED_TYPE);
            } else {
                from_new += 1;
            }
        }
        assert_eq!(from_new, 12);
    }

    #[test]
    fn an_image_pushed_again_whose_blobs_start_with_a_page_seen_before_uploads_nothing() {
        // Two blobs of four pages; the second starts with what the first starts with (a CI
        // failure: the second copy was only looked for where the first is, taken by then, and
        // uploaded again).
        let pages: Vec<PageHash> = [0, 1, 2, 3, 0, 5, 0, 7].into_iter().map(hash).collect();
        let layers: Vec<Descriptor> = (0..2)
            .map(|i| Descriptor {
                media_type: CHUNKS_TYPE.into(),
                digest: format!("base{i}"),
                size: 4 * P,
                annotations: None,
            })
            .collect();
        let layout = Layout::check(&header(8), &layers).unwrap();
        let mut base = Base::new(P);
        base.add(&header(8), &layers, &layout, &pages.concat())
            .unwrap();
        let shared = share(
            vec![plain(0, 4), plain(4, 8)],
            &pages,
            &base,
            (4 * P, 4 * P),
        );
        assert!(shared.picked.is_empty(), "{:?}", shared.picked);
        assert_eq!(shared.bytes, 8 * P);
        let ranges: Vec<&[(u64, u64)]> = shared.upload.iter().map(|c| &c.ranges[..]).collect();
        assert_eq!(ranges, [&[(0, 4 * P)][..], &[(4 * P, 4 * P)][..]], "as cut");
    }

    #[test]
    fn pages_scattered_over_many_blobs_are_uploaded_rather_than_picked() {
        let base = base();
        // Sixteen pages: one of each blob of the base (a page is not worth a request for a cut
        // of sixteen), the rest new.
        let mut new: Vec<PageHash> = (0..16).map(|p| hash(1000 + p)).collect();
        for (i, p) in [0, 8, 16, 24, 32].into_iter().enumerate() {
            new[i * 3] = hash(p);
        }
        let cut = || {
            vec![Cut {
                ranges: vec![(0, 16 * P)],
                gathered: true,
            }]
        };
        let shared = share(cut(), &new, &base, (64 * P, 64 * P));
        assert!(shared.picked.is_empty());
        assert_eq!(shared.upload.len(), 1);
        assert_eq!(shared.upload[0].ranges, [(0, 16 * P)]);
        assert_eq!(shared.bytes, 0);
        // Three pages of the first blob are: those are picked, the rest uploaded.
        (new[1], new[2]) = (hash(1), hash(2));
        let shared = share(cut(), &new, &base, (64 * P, 64 * P));
        assert_eq!(shared.picked.len(), 1, "{:?}", shared.picked);
        assert_eq!(shared.bytes, 3 * P);
        let picks = &shared.picked[0].annotations.as_ref().unwrap()[artifact::PICKS];
        assert_eq!(picks, &format!("0+{}@0", 3 * P));
        let mut layers = uploaded(&shared.upload);
        layers.extend(shared.picked.iter().cloned());
        assert!(Layout::check(&header(16), &layers).is_ok());
    }

    #[test]
    fn a_page_images_disagree_on_is_picked_only_as_the_last_word_says() {
        // Two images of one blob: the first says page 0 holds `hash(100)`, the second `hash(0)`.
        let layers = vec![Descriptor {
            media_type: CHUNKS_TYPE.into(),
            digest: "base0".into(),
            size: 8 * P,
            annotations: None,
        }];
        let layout = Layout::check(&header(8), &layers).unwrap();
        let mut base = Base::new(P);
        let lying: Vec<u8> = [100].into_iter().chain(1..8).flat_map(hash).collect();
        let honest: Vec<u8> = (0..8).flat_map(hash).collect();
        base.add(&header(8), &layers, &layout, &lying).unwrap();
        base.add(&header(8), &layers, &layout, &honest).unwrap();
        let cut = || {
            vec![Cut {
                ranges: vec![(0, 8 * P)],
                gathered: false,
            }]
        };
        let new: Vec<PageHash> = [100].into_iter().chain(1..8).map(hash).collect();
        let shared = share(cut(), &new, &base, (8 * P, 8 * P));
        // Page 0 (`hash(100)`) is uploaded; pages 1..8 are picked.
        assert_eq!(shared.bytes, 7 * P);
        assert_eq!(shared.upload[0].ranges, [(0, P)]);
    }

    #[test]
    fn pages_thinly_spread_through_a_blob_are_uploaded_rather_than_fetched_with_its_gaps() {
        // One blob of 256 pages.
        let layers = vec![Descriptor {
            media_type: CHUNKS_TYPE.into(),
            digest: "big".into(),
            size: 256 * P,
            annotations: None,
        }];
        let layout = Layout::check(&header(256), &layers).unwrap();
        let mut base = Base::new(P);
        let index: Vec<u8> = (0..256).flat_map(hash).collect();
        base.add(&header(256), &layers, &layout, &index).unwrap();
        let cut = || {
            vec![Cut {
                ranges: vec![(0, 64 * P)],
                gathered: true,
            }]
        };
        // Every fourth page of the blob: a quarter of the stretch a restore would fetch.
        let sparse: Vec<PageHash> = (0..64).map(|p| hash(p * 4)).collect();
        let shared = share(cut(), &sparse, &base, (64 * P, 64 * P));
        assert!(shared.picked.is_empty() && shared.bytes == 0);
        // Every second page: half of it, worth the request.
        let half: Vec<PageHash> = (0..64).map(|p| hash(p * 2)).collect();
        let shared = share(cut(), &half, &base, (64 * P, 64 * P));
        assert_eq!(shared.bytes, 64 * P);
        assert_eq!(shared.picked.len(), 1);
    }
}
