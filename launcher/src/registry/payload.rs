//! Where an image's payload bytes are among its blobs: how `thaw push` cuts the payload
//! ([`cut`]) and where a puller finds each byte again ([`Layout`]).
//!
//! Three kinds of payload blob. A plain blob (`CHUNKS_TYPE`) is a stretch of the payload; plain
//! blobs, in manifest order, tile what the gathered and picked blobs leave. A picked blob
//! (`PICKED_TYPE`, see `registry::share`) is another image's blob some pages of which this image
//! holds too, listed in its `PICKS` annotation with their offsets in it. A gathered blob
//! (`GATHERED_TYPE`) is several stretches put end to end, listed in its `RANGES` annotation: what
//! a restore needs before its first response (what it reads before the process runs, then the
//! pushed working set's early part), so that a first start on a machine fetches exactly that in
//! a few requests, where it would otherwise take a request for every stretch of it (a registry's
//! cost is per request: about 3 ms of CPU each for Debian's, on these machines). Nothing in the
//! layout is trusted: it must tile the payload exactly, and every chunk is checked against its
//! signed digest whatever blob its bytes came from.

use thaw::image::Header;

use super::artifact::{
    Descriptor, CHUNKS_TYPE, GATHERED_TYPE, MAX_BLOB, PICKED_TYPE, PICKS, RANGES,
};

/// One blob as `thaw push` cuts it: its payload stretches (offset, length), in blob order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub ranges: Vec<(u64, u64)>,
    pub gathered: bool,
}

impl Cut {
    pub fn media_type(&self) -> &'static str {
        if self.gathered {
            GATHERED_TYPE
        } else {
            CHUNKS_TYPE
        }
    }

    /// The `RANGES` annotation of a gathered blob.
    pub fn annotation(&self) -> Option<String> {
        self.gathered.then(|| {
            let r: Vec<String> = self
                .ranges
                .iter()
                .map(|(o, l)| format!("{o}+{l}"))
                .collect();
            r.join(",")
        })
    }
}

/// How the payload of an image is cut into blobs. `up_front` and `early` are payload ranges
/// (chunks) a restore needs before its first response: what it reads before the process runs,
/// and the early part of the pushed working set. Each is gathered into blobs of at most
/// `early_unit` bytes, `up_front` first (fetched before the process exists); the rest of the
/// payload is cut into plain blobs of at most `unit` ([`plain`]).
pub fn cut(
    h: &Header,
    m: &thaw::state::Manifest,
    (unit, early_unit): (u64, u64),
    up_front: &[(u64, u64)],
    early: &[(u64, u64)],
) -> Vec<Cut> {
    let mut runs: Vec<(u64, u64)> = m
        .memory
        .iter()
        .flat_map(|v| v.pages.iter().map(|r| (r.payload.offset, r.payload.len)))
        .collect();
    runs.sort_unstable();
    cut_all(h.payload_len, &runs, (unit, early_unit), up_front, early)
}

fn cut_all(
    len: u64,
    runs: &[(u64, u64)],
    (unit, early_unit): (u64, u64),
    up_front: &[(u64, u64)],
    early: &[(u64, u64)],
) -> Vec<Cut> {
    let first = stretches(up_front, &[], len);
    let then = stretches(early, &first, len);
    let mut out = gather(&first, early_unit);
    out.extend(gather(&then, early_unit));
    let mut taken: Vec<(u64, u64)> = first.into_iter().chain(then).collect();
    taken.sort_unstable();
    let mut at = 0;
    for (s, e) in taken.into_iter().chain([(len, len)]) {
        out.extend(plain(at..s, runs, unit).into_iter().map(|r| Cut {
            ranges: vec![r],
            gathered: false,
        }));
        at = e;
    }
    out
}

/// `ranges` (offset and length, any order) as sorted, disjoint stretches (start, end) within
/// `len`, without what `taken` (sorted stretches) holds.
fn stretches(ranges: &[(u64, u64)], taken: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(s, l)| (s.min(len), s.saturating_add(l).min(len)))
        .filter(|(s, e)| s < e)
        .collect();
    r.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    // Minus `taken`.
    let mut out = Vec::with_capacity(merged.len());
    for (mut s, e) in merged {
        let from = taken.partition_point(|t| t.1 <= s);
        for &(ts, te) in taken[from..].iter().take_while(|t| t.0 < e) {
            if ts > s {
                out.push((s, ts));
            }
            s = s.max(te);
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// `stretches` put end to end into blobs of at most `unit` bytes, in order (a stretch that does
/// not fit is split).
pub(super) fn gather(stretches: &[(u64, u64)], unit: u64) -> Vec<Cut> {
    let mut out: Vec<Cut> = Vec::new();
    let mut room = 0;
    for &(mut s, e) in stretches {
        while s < e {
            if room == 0 {
                out.push(Cut {
                    ranges: Vec::new(),
                    gathered: true,
                });
                room = unit;
            }
            let n = (e - s).min(room);
            out.last_mut().expect("a blob").ranges.push((s, n));
            (s, room) = (s + n, room - n);
        }
    }
    out
}

/// `range` of the payload cut every `unit` after a cut, and at the start of each of `runs`
/// (offset and length, sorted) within it that is long or that leaves the blob before at least
/// half a unit: small runs (a page of a library's data) share a blob, long ones are cut from
/// their own start, so that a region that grows between two builds moves the payload after it,
/// not the blob boundaries of the regions after it.
fn plain(range: std::ops::Range<u64>, runs: &[(u64, u64)], unit: u64) -> Vec<(u64, u64)> {
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

/// One stretch of a `RANGES` (`OFFSET+LENGTH`) or, `picked`, a `PICKS` annotation
/// (`OFFSET+LENGTH@AT`): (payload offset, length, offset in the blob if stated).
fn stretch(text: &str, picked: bool) -> Option<(u64, u64, Option<u64>)> {
    let (range, at) = match text.split_once('@') {
        Some((r, at)) if picked => (r, Some(at.parse().ok()?)),
        None if !picked => (text, None),
        _ => return None,
    };
    let (o, n) = range.split_once('+')?;
    Some((o.parse().ok()?, n.parse().ok()?, at))
}

/// The payload bytes layer `l` says it holds: its size, or what a picked blob's annotation
/// lists (0 where it does not parse: `Layout::check` refuses it). Unchecked: for sizing, before
/// the layout can be checked.
pub fn claimed(l: &Descriptor) -> u64 {
    if l.media_type != PICKED_TYPE {
        return l.size;
    }
    let text = l.annotations.as_ref().and_then(|a| a.get(PICKS));
    (text.into_iter().flat_map(|t| t.split(',')))
        .map(|r| stretch(r, true).map_or(0, |s| s.1))
        .fold(0u64, u64::saturating_add)
}

/// A stretch of a blob and where it lies in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub blob: usize,
    /// Offset in the blob.
    pub at: u64,
    /// Offset in the payload.
    pub payload: u64,
    pub len: u64,
}

/// Where each payload byte is among a pulled manifest's blobs, checked to tile the payload.
#[derive(Debug)]
pub struct Layout {
    /// Each blob's segments, in blob order.
    blobs: Vec<Vec<Segment>>,
    /// Every segment, in payload order.
    by_payload: Vec<Segment>,
    /// Each blob's size.
    sizes: Vec<u64>,
}

impl Layout {
    /// Checks that the manifest's payload layers tile exactly the payload the head's header
    /// describes, in non-empty blobs of whole pages (how it is cut is the pusher's choice: the
    /// bytes are checked against the signed chunk digests).
    pub fn check(h: &Header, layers: &[Descriptor]) -> Result<Layout, String> {
        let page = u64::from(h.page_size);
        let pages = h.payload_len.div_ceil(page);
        // Not more blobs or stretches than pages: a manifest cannot make a restore ask for the
        // payload in bytes.
        if layers.len() as u64 > pages {
            return Err(format!(
                "the manifest cuts the payload into {} blobs, more than it has pages",
                layers.len()
            ));
        }
        let mut held = 0u64;
        for (i, l) in layers.iter().enumerate() {
            if l.size == 0 || !l.size.is_multiple_of(page) || l.size > MAX_BLOB {
                return Err(format!(
                    "payload blob {i} holds {} bytes, not a whole number of pages up to {MAX_BLOB}",
                    l.size
                ));
            }
            held = held.saturating_add(claimed(l));
        }
        if held != h.payload_len {
            return Err(format!(
                "the manifest's payload blobs hold {held} bytes where the image has {}",
                h.payload_len
            ));
        }
        // Gathered blobs are their ranges end to end; picked ones hold theirs where they say,
        // in blob order, without overlap.
        let mut gathered: Vec<Segment> = Vec::new();
        let mut blobs: Vec<Vec<Segment>> = vec![Vec::new(); layers.len()];
        for (i, l) in layers.iter().enumerate() {
            let picked = l.media_type == PICKED_TYPE;
            if !picked && l.media_type != GATHERED_TYPE {
                continue;
            }
            let bad = || format!("payload blob {i}'s ranges do not fit it");
            let text = (l.annotations.as_ref())
                .and_then(|a| a.get(if picked { PICKS } else { RANGES }))
                .ok_or_else(bad)?;
            let mut at = 0u64;
            for r in text.split(',') {
                let (o, n, from) = stretch(r, picked).ok_or_else(bad)?;
                let from = from.unwrap_or(at);
                if n == 0 || from < at || [o, n, from].iter().any(|x| !x.is_multiple_of(page)) {
                    return Err(bad());
                }
                if gathered.len() as u64 >= pages {
                    return Err("the manifest lists more ranges than the payload has pages".into());
                }
                let s = Segment {
                    blob: i,
                    at: from,
                    payload: o,
                    len: n,
                };
                at = from
                    .checked_add(n)
                    .filter(|&a| a <= l.size)
                    .ok_or_else(bad)?;
                gathered.push(s);
                blobs[i].push(s);
            }
            if !picked && at != l.size {
                return Err(bad());
            }
        }
        gathered.sort_unstable_by_key(|s| s.payload);
        // Plain blobs, in order, tile what the others leave.
        let mut by_payload = Vec::with_capacity(gathered.len() + layers.len());
        let mut plain = layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.media_type == CHUNKS_TYPE)
            .map(|(i, l)| (i, 0u64, l.size));
        let mut current = plain.next();
        let mut at = 0u64;
        let overlap = || "the manifest's payload blobs overlap or leave a gap".to_string();
        for hole in gathered.iter().map(Some).chain([None]) {
            let until = hole.map_or(h.payload_len, |s| s.payload);
            if until < at || until > h.payload_len {
                return Err(overlap());
            }
            while at < until {
                let (b, used, size) = current.ok_or_else(overlap)?;
                let n = (size - used).min(until - at);
                let s = Segment {
                    blob: b,
                    at: used,
                    payload: at,
                    len: n,
                };
                blobs[b].push(s);
                by_payload.push(s);
                at += n;
                current = if used + n == size {
                    plain.next()
                } else {
                    Some((b, used + n, size))
                };
            }
            if let Some(s) = hole {
                by_payload.push(*s);
                at = s.payload.checked_add(s.len).ok_or_else(overlap)?;
            }
        }
        if at != h.payload_len || current.is_some() {
            return Err(overlap());
        }
        Ok(Layout {
            blobs,
            by_payload,
            sizes: layers.iter().map(|l| l.size).collect(),
        })
    }

    /// Blob `b`'s segments, in blob order.
    pub fn segments(&self, b: usize) -> &[Segment] {
        &self.blobs[b]
    }

    /// The payload offset of blob `b` if all of it is one stretch of the payload.
    pub fn contiguous(&self, b: usize) -> Option<u64> {
        match self.blobs[b].as_slice() {
            [s] if s.at == 0 && s.len == self.sizes[b] => Some(s.payload),
            _ => None,
        }
    }

    /// The parts of blobs that hold payload bytes `start..end`, in payload order: (blob, offset
    /// in the blob, length).
    pub fn parts(&self, start: u64, end: u64) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let from = self
            .by_payload
            .partition_point(|s| s.payload + s.len <= start);
        self.by_payload[from..]
            .iter()
            .take_while(move |s| s.payload < end)
            .map(move |s| {
                let (a, b) = (start.max(s.payload), end.min(s.payload + s.len));
                (s.blob, s.at + (a - s.payload), b - a)
            })
    }

    /// Where bytes `start..end` of blob `b` are in the payload: (payload offset, offset in the
    /// blob, length) of each stretch, in blob order.
    pub fn in_payload(
        &self,
        b: usize,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        // Segments are in blob order: from the first that ends after `start`.
        let segments = &self.blobs[b];
        let from = segments.partition_point(|s| s.at + s.len <= start);
        segments[from..]
            .iter()
            .take_while(move |s| s.at < end)
            .map(move |s| {
                let (a, e) = (start.max(s.at), end.min(s.at + s.len));
                (s.payload + (a - s.at), a, e - a)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_blobs_start_at_runs_and_stay_small() {
        let k = 1024;
        // A long run, two one-page runs, two long runs, to 300K.
        let runs = |grow| {
            let r = [(0, 100 + grow), (100, 4), (104, 4), (108, 92), (200, 100)];
            r.map(|(s, l)| (if s > 0 { s + grow } else { s } * k, l * k))
        };
        let b = plain(0..300 * k, &runs(0), 32 * k);
        let starts: Vec<u64> = b.iter().map(|x| x.0 / k).collect();
        assert_eq!(starts, [0, 32, 64, 96, 108, 140, 172, 200, 232, 264, 296]);
        assert!(b.iter().all(|x| x.1 > 0 && x.1 <= 32 * k));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 300 * k);
        // A first run that grew by a page moves the runs after it, not their blobs.
        let c = plain(0..304 * k, &runs(4), 32 * k);
        let tail = |v: &[(u64, u64)], from: u64| -> Vec<u64> {
            v.iter().filter(|x| x.0 >= from).map(|x| x.1).collect()
        };
        assert_eq!(tail(&b, 108 * k), tail(&c, 112 * k));
        assert!(plain(0..0, &[], 32 * k).is_empty());
    }

    fn descriptors(cuts: &[Cut]) -> Vec<Descriptor> {
        cuts.iter()
            .enumerate()
            .map(|(i, c)| Descriptor {
                media_type: c.media_type().into(),
                digest: format!("sha256:{i}"),
                size: c.ranges.iter().map(|r| r.1).sum(),
                annotations: c
                    .annotation()
                    .map(|a| [(RANGES.to_string(), a)].into_iter().collect()),
            })
            .collect()
    }

    fn header(payload_len: u64) -> Header {
        Header::layout(0, 4096, 65536, payload_len, 0)
    }

    #[test]
    fn what_comes_first_is_gathered_and_the_layout_finds_every_byte_again() {
        let k = 1024;
        let unit = 32 * k;
        // Read up front: two pages; early: three chunks of 4K a page apart, a run of 25, and a
        // page also read up front.
        let up_front = [(300 * k, 4 * k), (8 * k, 4 * k)];
        let mut early: Vec<(u64, u64)> = [100, 108, 116, 300]
            .into_iter()
            .chain((200..300).step_by(4))
            .map(|c| (c * k, 4 * k))
            .collect();
        early.reverse();
        let cuts = cut_all(400 * k, &[(0, 400 * k)], (unit, 64 * k), &up_front, &early);
        let gathered: Vec<&Cut> = cuts.iter().filter(|c| c.gathered).collect();
        assert_eq!(gathered[0].ranges, [(8 * k, 4 * k), (300 * k, 4 * k)]);
        assert_eq!(
            gathered[1].ranges,
            [
                (100 * k, 4 * k),
                (108 * k, 4 * k),
                (116 * k, 4 * k),
                (200 * k, 52 * k)
            ]
        );
        assert_eq!(gathered[2].ranges, [(252 * k, 48 * k)]);
        assert_eq!(gathered.len(), 3);
        // Plain blobs tile the rest, from where each gap starts.
        let plain: Vec<(u64, u64)> = cuts
            .iter()
            .filter(|c| !c.gathered)
            .map(|c| c.ranges[0])
            .collect();
        assert_eq!(plain[..3], [(0, 8 * k), (12 * k, 32 * k), (44 * k, 32 * k)]);
        assert!(plain.iter().all(|r| r.1 <= unit));

        let layers = descriptors(&cuts);
        let l = Layout::check(&header(400 * k), &layers).unwrap();
        // Every payload page is in exactly one blob, where the cut put it.
        for p in 0..100 {
            let parts: Vec<_> = l.parts(p * 4 * k, (p + 1) * 4 * k).collect();
            assert_eq!(parts.len(), 1, "page {p}");
            let (b, at, n) = parts[0];
            assert_eq!(n, 4 * k);
            let back: Vec<_> = l.in_payload(b, at, at + n).collect();
            assert_eq!(back, [(p * 4 * k, at, n)]);
        }
        assert_eq!(l.contiguous(1), None);
        assert_eq!(
            l.parts(0, 400 * k).map(|p| p.2).sum::<u64>(),
            400 * k,
            "the layout tiles the payload"
        );
    }

    #[test]
    fn a_layout_that_does_not_tile_the_payload_is_refused() {
        let k = 1024;
        let cuts = cut_all(64 * k, &[], (16 * k, 16 * k), &[(8 * k, 4 * k)], &[]);
        let good = descriptors(&cuts);
        assert!(Layout::check(&header(64 * k), &good).is_ok());
        let with = |f: &dyn Fn(&mut Vec<Descriptor>)| {
            let mut d = good.clone();
            f(&mut d);
            Layout::check(&header(64 * k), &d).unwrap_err()
        };
        let ranges = |d: &mut Vec<Descriptor>, r: &str| {
            d[0].annotations = Some([(RANGES.to_string(), r.to_string())].into_iter().collect());
        };
        // Past the end, unaligned, not adding up, not ranges, missing.
        assert!(with(&|d| ranges(d, "65536+4096")).contains("overlap"));
        assert!(with(&|d| ranges(d, "8193+4096")).contains("do not fit"));
        assert!(with(&|d| ranges(d, "8192+8192")).contains("do not fit"));
        assert!(with(&|d| ranges(d, "8192+4096,x")).contains("do not fit"));
        assert!(with(&|d| d[0].annotations = None).contains("do not fit"));
        // A plain blob dropped, or one too many.
        assert!(with(&|d| {
            d.pop();
        })
        .contains("hold"));
        assert!(with(&|d| d.push(d[1].clone())).contains("hold"));
        // Two gathered blobs claiming one range (the last plain one's bytes unclaimed).
        assert!(with(&|d| {
            let last = d.len() - 1;
            d[last] = d[0].clone();
        })
        .contains("overlap"));
    }

    #[test]
    fn picked_blobs_hold_their_pages_where_they_say_and_nothing_else_is_accepted() {
        let k = 1024;
        let picked = |picks: &str, size: u64| Descriptor {
            media_type: PICKED_TYPE.into(),
            digest: "sha256:other".into(),
            size,
            annotations: Some([(PICKS.to_string(), picks.to_string())].into()),
        };
        let plain = |size: u64| Descriptor {
            media_type: CHUNKS_TYPE.into(),
            digest: format!("sha256:{size}"),
            size,
            annotations: None,
        };
        // 32K of payload: 8K and 4K picked from another image's 64K blob, plain blobs between.
        let layers = |picks: &str| vec![plain(8 * k), picked(picks, 64 * k), plain(12 * k)];
        let good = format!(
            "{}+{}@{},{}+{}@{}",
            8 * k,
            8 * k,
            16 * k,
            28 * k,
            4 * k,
            40 * k
        );
        let l = Layout::check(&header(32 * k), &layers(&good)).unwrap();
        let parts: Vec<_> = l.parts(0, 32 * k).collect();
        assert_eq!(
            parts,
            [
                (0, 0, 8 * k),
                (1, 16 * k, 8 * k),
                (2, 0, 12 * k),
                (1, 40 * k, 4 * k)
            ]
        );
        let back: Vec<_> = l.in_payload(1, 0, 64 * k).collect();
        assert_eq!(back, [(8 * k, 16 * k, 8 * k), (28 * k, 40 * k, 4 * k)]);
        // Not all of it is this image's: it is not one stretch of the file.
        assert_eq!(l.contiguous(1), None);
        assert_eq!(l.contiguous(0), Some(0));
        assert_eq!(claimed(&layers(&good)[1]), 12 * k);
        let refused = |picks: &str| Layout::check(&header(32 * k), &layers(picks)).unwrap_err();
        // (payload, length, offset in the blob), in KiB.
        let kib = |v: &[(u64, u64, u64)]| -> String {
            let v: Vec<String> = (v.iter())
                .map(|(o, n, at)| format!("{}+{}@{}", o * k, n * k, at * k))
                .collect();
            v.join(",")
        };
        // Out of blob order, overlapping in the blob, past its end, unaligned, without an
        // offset in the blob, claiming other bytes than the payload lacks.
        for bad in [
            kib(&[(28, 4, 40), (8, 8, 16)]),
            kib(&[(8, 8, 16), (28, 4, 20)]),
            kib(&[(8, 8, 16), (28, 4, 64)]),
            kib(&[(8, 8, 16), (28, 4, 41)]),
        ] {
            assert!(refused(&bad).contains("do not fit"), "{bad}");
        }
        assert!(refused(&format!("{}+{},{}", 8 * k, 8 * k, kib(&[(28, 4, 40)]))).contains("hold"));
        assert!(refused(&kib(&[(8, 8, 16)])).contains("hold"));
        assert!(refused("x").contains("hold"));
        // Picks on a gathered blob, or a plain blob where the picks were, are refused too.
        let mut gathered = layers(&good);
        gathered[1].media_type = GATHERED_TYPE.into();
        assert!(Layout::check(&header(32 * k), &gathered).is_err());
        let mut as_plain = layers(&good);
        as_plain[1].media_type = CHUNKS_TYPE.into();
        assert!(Layout::check(&header(32 * k), &as_plain).is_err());
    }
}
