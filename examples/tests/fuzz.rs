//! A fuzzer for the image reader and the manifest validator that runs on stable Rust (no
//! cargo-fuzz), as a test. Two kinds of inputs, from a seed image:
//!
//! - raw (THAW_FUZZ_RAW, default 10,000): the image's bytes mutated (bytes flipped, set, inserted, removed,
//!   lengths in the header changed, the file cut) and read back unverified, as the launcher's
//!   parser would after a signature check;
//! - signed (THAW_FUZZ_SIGNED, default 1,000): the manifest changed field by field the way a stolen or buggy
//!   pipeline key would (ranges overlapping, out of the user half, misaligned; counts far too
//!   large; ids missing or duplicated; times at the limits), written and signed with a trusted
//!   key, then opened, verified against the trust store, validated and rendered as `thaw inspect
//!   --json` does.
//!
//! Every input must end in an image or a clean error: a panic aborts the run (exit 101), and the
//! peak memory must stay under 256 MiB. It prints the outcomes (`--nocapture`); docs/security.md
//! has the figures of a long run (scripts/fuzz).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thaw::image::{ImageFile, ImageWriter};
use thaw::state::memory::{Backing, PageRun, Vma};
use thaw::state::threads::ThreadState;
use thaw::Manifest;
use thaw_signing::{SecretKey, TrustSource, TrustStore};

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// A value that is often at an edge.
    fn edgy(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.below(64),
            3 => (1 << self.below(64)) - 1,
            4 => 0x7fff_ffff_f000 + self.below(3) * 0x1000 - 0x1000,
            _ => self.next(),
        }
    }
}

/// A small valid image: three mappings with payload, one thread, a restore cell.
fn seed_manifest() -> (Manifest, Vec<Vec<u8>>) {
    let mut m = Manifest::default();
    m.producer.thaw_version = "fuzz".into();
    m.process.pid = 4242;
    m.process.checkpoint_tid = 4242;
    m.process.restore_cell = 0x1000_0200;
    m.platform.arch = "x86_64".into();
    m.mm.auxv = vec![6, 4096, 0, 0];
    m.threads.push(ThreadState {
        tid: 4242,
        sigframe: 0x1000_0100,
        ..Default::default()
    });
    let payloads = vec![vec![7u8; 3 * 4096], vec![9u8; 4096], vec![1u8; 2 * 4096]];
    (m, payloads)
}

fn write_image(path: &Path, m: Manifest, payloads: &[Vec<u8>], key: Option<&SecretKey>) -> bool {
    let Ok(mut w) = ImageWriter::create(path) else {
        return false;
    };
    let mut m = m;
    let fresh = m.memory.is_empty();
    for (i, p) in payloads.iter().enumerate() {
        let Ok(r) = w.append_payload(p) else {
            return false;
        };
        if fresh {
            let start = 0x1000_0000 * (i as u64 + 1);
            m.memory.push(Vma {
                start,
                end: start + 0x10_0000,
                prot: 3,
                backing: Backing::Anonymous,
                pages: vec![PageRun {
                    addr: start,
                    payload: r,
                }],
                ..Default::default()
            });
        }
    }
    w.finish(m, key).is_ok()
}

/// One change to a manifest, as a hostile signer would make it.
fn mutate(m: &mut Manifest, rng: &mut Rng) {
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    match rng.below(24) {
        0 if !m.memory.is_empty() => {
            let i = pick(rng, m.memory.len());
            m.memory[i].start = rng.edgy();
        }
        1 if !m.memory.is_empty() => {
            let i = pick(rng, m.memory.len());
            m.memory[i].end = rng.edgy();
        }
        2 if !m.memory.is_empty() => {
            let i = pick(rng, m.memory.len());
            if let Some(r) = m.memory[i].pages.first_mut() {
                r.addr = rng.edgy();
            }
        }
        3 if !m.memory.is_empty() => {
            let i = pick(rng, m.memory.len());
            if let Some(r) = m.memory[i].pages.first_mut() {
                r.payload.len = rng.edgy();
            }
        }
        4 if !m.memory.is_empty() => {
            // Overlapping runs: the same run twice.
            let i = pick(rng, m.memory.len());
            if let Some(&r) = m.memory[i].pages.first() {
                m.memory[i].pages.push(r);
            }
        }
        5 => {
            // Far too many mappings (cheap: empty ones).
            let n = 1 << (14 + rng.below(6));
            let v = Vma {
                start: 0x10_0000,
                end: 0x20_0000,
                ..Default::default()
            };
            m.memory.extend(std::iter::repeat_n(v, n));
        }
        6 => {
            let n = 1 << (10 + rng.below(8));
            m.threads
                .extend(std::iter::repeat_n(ThreadState::default(), n));
        }
        7 if !m.threads.is_empty() => {
            let i = pick(rng, m.threads.len());
            m.threads[i].tid = rng.edgy() as i32;
        }
        8 if !m.threads.is_empty() => {
            let i = pick(rng, m.threads.len());
            m.threads[i].sigframe = rng.edgy();
        }
        9 => m.process.restore_cell = rng.edgy(),
        10 => m.process.pid = rng.edgy() as i32,
        11 => m.process.checkpoint_tid = rng.edgy() as i32,
        12 => {
            m.mm.exe.id.btime_ns = if rng.below(2) == 0 {
                i128::MAX
            } else {
                i128::MIN
            }
        }
        13 => m.mm.exe.mtime_ns = i128::MAX,
        14 if m.memory.len() > 1 => m.memory.swap(0, 1),
        15 => {
            let fd = rng.edgy() as i32;
            m.files.push(thaw::state::files::FdEntry {
                fd,
                kind: thaw::state::files::FdKind::Epoll {
                    watches: vec![thaw::state::files::EpollWatch {
                        fd: rng.edgy() as i32,
                        ..Default::default()
                    }],
                },
                ..Default::default()
            });
        }
        16 => m.files.push(thaw::state::files::FdEntry {
            fd: 3,
            kind: thaw::state::files::FdKind::Memfd {
                object: rng.edgy(),
                pos: 0,
                desc: 0,
            },
            ..Default::default()
        }),
        17 => m.guards.push(thaw::state::memory::Guard {
            start: rng.edgy(),
            end: rng.edgy(),
        }),
        18 if !m.memory.is_empty() => {
            let i = pick(rng, m.memory.len());
            m.memory[i].backing = Backing::Shared {
                object: rng.edgy(),
                offset: rng.edgy(),
            };
        }
        // An io_uring instance with hostile sizes, counters and memory, or a mapping claiming
        // to be one.
        19 => {
            let edgy32 = |rng: &mut Rng| rng.edgy() as u32;
            let payload = |rng: &mut Rng| {
                (rng.below(2) == 0).then(|| thaw::state::PayloadRef {
                    offset: rng.edgy() % 8192,
                    len: rng.edgy(),
                })
            };
            let mut ring = thaw::state::io_uring::Ring::default();
            ring.sq_entries = edgy32(rng);
            ring.cq_entries = edgy32(rng);
            ring.sqe_size = edgy32(rng);
            ring.cqe_size = edgy32(rng);
            ring.sq_head = edgy32(rng);
            ring.cq_tail = edgy32(rng);
            ring.rings = payload(rng);
            ring.sqes = payload(rng);
            let fd = rng.below(64) as i32;
            m.files.push(thaw::state::files::FdEntry {
                fd,
                kind: thaw::state::files::FdKind::IoUring(ring),
                ..Default::default()
            });
            if !m.memory.is_empty() {
                let i = pick(rng, m.memory.len());
                m.memory[i].backing = Backing::IoRing {
                    fd: if rng.below(2) == 0 {
                        fd
                    } else {
                        rng.edgy() as i32
                    },
                    offset: rng.edgy(),
                };
            }
        }
        // Fields a review found unchecked or overflowing (2026-12-06).
        20 => m.files.push(thaw::state::files::FdEntry {
            fd: 5,
            kind: thaw::state::files::FdKind::DevNull,
            fifo_bytes: Some(thaw::state::PayloadRef {
                offset: rng.edgy(),
                len: rng.edgy(),
            }),
            ..Default::default()
        }),
        21 => m.files.push(thaw::state::files::FdEntry {
            fd: 6,
            kind: thaw::state::files::FdKind::Pidfd(thaw::state::pidfd::Pidfd {
                pid: -1,
                thread: false,
                dead: Some(thaw::state::pidfd::Dead {
                    ino: 1,
                    status: Some(rng.edgy() as i32),
                }),
            }),
            ..Default::default()
        }),
        22 => m.files.push(thaw::state::files::FdEntry {
            fd: 7,
            kind: thaw::state::files::FdKind::DevNull,
            locks: vec![thaw::state::locks::Lock {
                kind: thaw::state::locks::LockKind::Posix,
                write: true,
                start: rng.edgy(),
                len: rng.edgy(),
            }],
            ..Default::default()
        }),
        23 if !m.threads.is_empty() => {
            let i = pick(rng, m.threads.len());
            m.threads[i].sleep = Some(thaw::state::threads::SleepLeft {
                addr: rng.edgy(),
                clock: rng.edgy() as i32,
                left_ns: rng.edgy(),
            });
        }
        _ => m.mm.auxv = (0..rng.below(64)).map(|_| rng.edgy()).collect(),
    }
}

/// Mutates raw image bytes.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut Rng) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        if b.is_empty() {
            b.push(0);
        }
        let at = rng.below(b.len() as u64) as usize;
        // The header and the manifest are where the parser looks: aim there most of the time.
        let at = if rng.below(4) != 0 {
            at % b.len().min(8192)
        } else {
            at
        };
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => b.insert(at, rng.next() as u8),
            3 => {
                b.remove(at);
            }
            4 => b.truncate(at),
            5 if at + 8 <= b.len() => b[at..at + 8].copy_from_slice(&rng.edgy().to_le_bytes()),
            _ => b.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn damaged_and_hostile_signed_images_end_in_an_image_or_a_clean_error() {
    let raw = env("THAW_FUZZ_RAW", 10_000);
    let signed = env("THAW_FUZZ_SIGNED", 1_000);
    let seed = env("THAW_FUZZ_SEED", 0x7415);
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pubfile = dir.path().join("k.pub");
    key.public().save_new(&pubfile).unwrap();
    let trust = TrustStore::load(&[TrustSource::File(pubfile)]).unwrap();
    let seed_path = dir.path().join("seed.thaw");
    let (m, payloads) = seed_manifest();
    assert!(write_image(&seed_path, m, &payloads, Some(&key)));
    let seed_bytes = std::fs::read(&seed_path).unwrap();
    let valid = ImageFile::open(&seed_path)
        .unwrap()
        .verify(&trust)
        .expect("the seed image is valid");
    let seed_manifest = valid.manifest().clone();
    drop(valid);

    let mut rng = Rng(seed | 1);
    // Raw inputs through a memfd: no file system in the loop.
    let memfd = {
        let fd = thaw::sys::memfd_create("fuzz", false).unwrap();
        std::fs::File::from(fd)
    };
    let input = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
    let (mut raw_ok, mut raw_err) = (0u64, 0u64);
    for _ in 0..raw {
        let mut b = seed_bytes.clone();
        mutate_bytes(&mut b, &mut rng);
        memfd.set_len(0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&memfd, &b, 0).unwrap();
        match ImageFile::open(&input).and_then(|f| f.decode_unverified()) {
            Ok(img) => {
                let _ = serde_json::to_value(img.manifest());
                let _ = img.verify_payload();
                raw_ok += 1;
            }
            Err(_) => raw_err += 1,
        }
    }
    let (mut s_ok, mut s_refused) = (0u64, 0u64);
    let out = dir.path().join("signed.thaw");
    for _ in 0..signed {
        let mut m = seed_manifest.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut m, &mut rng);
        }
        // The payload stays; the manifest's references keep pointing into it or not.
        let mut w = ImageWriter::create(&out).unwrap();
        for p in &payloads {
            w.append_payload(p).unwrap();
        }
        if w.finish(m, Some(&key)).is_err() {
            s_refused += 1;
            continue;
        }
        match ImageFile::open(&out).and_then(|f| f.verify(&trust)) {
            Ok(img) => {
                let _ = serde_json::to_value(img.manifest());
                s_ok += 1;
            }
            Err(_) => s_refused += 1,
        }
    }
    let rss = peak_rss_kib();
    eprintln!(
        "raw inputs: {raw} ({raw_ok} decoded, {raw_err} refused); signed manifests: {signed} ({s_ok} accepted, {s_refused} refused); 0 panics; peak memory {} MiB",
        rss / 1024
    );
    assert!(rss < 256 * 1024, "peak memory {rss} KiB");
}
