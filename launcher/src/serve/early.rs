//! The pages an instance touches early, made ready in each spare before a caller comes. An
//! instance forked from the template shares its memory, but not all of its page tables: the
//! template never ran the program's code, so each code or data page of a mapped file the
//! instance touches is a fault (thousands for CPython and its extensions), and each page it
//! first writes is a copy-on-write fault. The server samples one instance after it has run a
//! while (20 ms, or half as long as the last instance lived when instances end sooner): the
//! file pages it has mapped, and the private pages it holds alone. In each spare it
//! then reads the former (which maps them) and rewrites the latter with their own contents
//! (which copies them), at idle priority. Only when the work is done changes: the bytes a spare
//! holds are the template's.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::Duration;

use crate::sys;

const PAGE: u64 = 4096;
/// Present, and mapped by this process only (`/proc/PID/pagemap`).
const PRESENT: u64 = 1 << 63;
const EXCLUSIVE: u64 = 1 << 56;
/// A page of a file (or shared memory), not an anonymous page.
const FILE_PAGE: u64 = 1 << 61;

/// Page ranges `[start, end)`.
type Ranges = Vec<(u64, u64)>;

#[derive(Default, Clone)]
struct Touched {
    /// File pages mapped: read in each spare.
    read: Ranges,
    /// Private pages held alone: rewritten in each spare.
    write: Ranges,
}

/// How long an instance runs before it is sampled, at most: past a runtime's first answer,
/// before its teardown.
const SAMPLE_AFTER: Duration = Duration::from_millis(20);
/// And at least (sampling an instance slows it down a little).
const SAMPLE_AFTER_MIN: Duration = Duration::from_micros(100);

/// What one instance touched early; empty until sampled.
pub struct EarlyPages {
    touched: Mutex<Option<Touched>>,
    after: Mutex<Duration>,
    buf: Mutex<Vec<u8>>,
}

impl Default for EarlyPages {
    fn default() -> Self {
        EarlyPages {
            touched: Mutex::new(None),
            after: Mutex::new(SAMPLE_AFTER),
            buf: Mutex::new(Vec::new()),
        }
    }
}

impl EarlyPages {
    /// How long the next instance runs before it is sampled.
    pub fn sample_after(&self) -> Duration {
        *self.after.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An instance ended after `lived`, before it could be sampled: the next is sampled halfway
    /// through such a life.
    pub fn ended_unsampled(&self, lived: Duration) {
        *self.after.lock().unwrap_or_else(|e| e.into_inner()) =
            (lived / 2).clamp(SAMPLE_AFTER_MIN, SAMPLE_AFTER);
    }

    pub fn sampled(&self) -> bool {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Records what instance `pid` has touched so far.
    pub fn sample(&self, pid: i32) {
        if let Ok(t) = touched(pid) {
            *self.touched.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
    }

    /// Makes the recorded pages ready in spare `pid`.
    pub fn apply(&self, pid: i32) {
        let Some(t) = self
            .touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        // One buffer for every spare (a fresh one would be zeroed each time).
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.resize(1 << 20, 0);
        touch_around(pid, &t.read);
        each_chunk(&t.write, &mut buf, |at, b| {
            sys::rewrite_in_place(pid, at, b)
        });
    }
}

/// The kernel maps the cached pages of a file around a page that faults, in aligned windows of
/// this size (its default `fault_around_bytes`), as it would for the instance's own first
/// touch: one byte read per window maps them all, without copying any (reading each page whole
/// copied about a MiB per spare, 6 % of all the CPU time of a server starting 1 MiB instances).
const AROUND: u64 = 64 << 10;

/// Maps the file pages of `ranges` in process `pid` by reading one byte in each window.
fn touch_around(pid: i32, ranges: &Ranges) {
    let mut addrs = Vec::new();
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            addrs.push(at);
            at = (at / AROUND + 1) * AROUND;
        }
    }
    let mut rest = &addrs[..];
    while !rest.is_empty() {
        let asked = rest.len().min(sys::TOUCH_MAX);
        // A page it cannot read (gone from the file, or not readable) is skipped.
        let done = match sys::touch_remote(pid, rest) {
            Ok(n) if n < asked => n + 1,
            Ok(n) => n,
            Err(_) => 1,
        };
        rest = &rest[done..];
    }
}

/// Runs `f` over `ranges` in chunks of `buf`; a chunk it cannot do ends its range (a page the
/// spare lacks, or may not read or write).
fn each_chunk(
    ranges: &Ranges,
    buf: &mut [u8],
    mut f: impl FnMut(u64, &mut [u8]) -> std::io::Result<usize>,
) {
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            match f(at, &mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(done) => at += done as u64,
            }
        }
    }
}

fn push(ranges: &mut Ranges, page: u64) {
    match ranges.last_mut() {
        Some(last) if last.1 == page => last.1 += PAGE,
        _ => ranges.push((page, page + PAGE)),
    }
}

/// The file pages `pid` has mapped and the private writable pages it holds alone.
fn touched(pid: i32) -> std::io::Result<Touched> {
    let mut maps = String::new();
    std::fs::File::open(format!("/proc/{pid}/maps"))?.read_to_string(&mut maps)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut t = Touched::default();
    let mut entries = Vec::new();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(span), Some(perms)) = (f.first(), f.get(1)) else {
            continue;
        };
        // Device mappings are never read: reading one may do more than return bytes.
        let file = f
            .get(5)
            .is_some_and(|p| p.starts_with('/') && !p.starts_with("/dev/"));
        let private_rw = perms.starts_with("rw") && perms.ends_with('p');
        if !perms.starts_with('r') || !(file || private_rw) {
            continue;
        }
        let Some((start, end)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        entries.resize(((end - start) / PAGE) as usize * 8, 0u8);
        if pagemap
            .read_exact_at(&mut entries, start / PAGE * 8)
            .is_err()
        {
            continue;
        }
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
            let page = start + i as u64 * PAGE;
            if e & PRESENT == 0 {
                continue;
            }
            if private_rw && e & EXCLUSIVE != 0 {
                push(&mut t.write, page);
            } else if file && e & FILE_PAGE != 0 {
                // Not an anonymous page shared with the template: each spare has those mapped
                // already (fork copies the page tables of a mapping that has any), and reading
                // one there would copy it (a pinned read unshares).
                push(&mut t.read, page);
            }
        }
    }
    Ok(t)
}
