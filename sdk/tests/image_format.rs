//! The image format: round trip, signing, and every kind of damage.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use thaw::image::{resign, ErrorClass, ImageError, ImageFile, ImageWriter, Provenance};
use thaw::state::memory::{Backing, PageRun, Vma};
use thaw::state::Manifest;
use thaw_signing::{SecretKey, TrustSource, TrustStore};

struct Fixture {
    _dir: tempfile::TempDir,
    image: PathBuf,
    key: SecretKey,
    trust: TrustStore,
    payloads: Vec<Vec<u8>>,
}

fn sample_manifest() -> Manifest {
    let mut m = Manifest::default();
    m.producer.thaw_version = "test".into();
    m.process.pid = 4242;
    m.process.comm = "sample".into();
    m.process.cwd = "/tmp".into();
    m.platform.arch = "x86_64".into();
    m.mm.auxv = vec![6, 4096, 0, 0];
    m.creds.groups = vec![1, 2, 3];
    // A valid manifest names its threads, and its frames and restore cell lie in writable
    // memory (the fixture's first mapping).
    m.process.checkpoint_tid = 4242;
    m.process.restore_cell = 0x1000_0200;
    m.threads.push(thaw::state::threads::ThreadState {
        tid: 4242,
        sigframe: 0x1000_0100,
        ..Default::default()
    });
    m
}

/// A signed image with three payload ranges spanning several 64 KiB chunks.
fn fixture(sign: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("app.thaw");
    let key = SecretKey::generate().unwrap();
    let pubfile = dir.path().join("k.pub");
    key.public().save_new(&pubfile).unwrap();
    let trust = TrustStore::load(&[TrustSource::File(pubfile)]).unwrap();
    // Whole pages, as page runs are.
    let page = |mut v: Vec<u8>| {
        v.resize(v.len().next_multiple_of(4096), 0);
        v
    };
    let payloads: Vec<Vec<u8>> = vec![
        page((0..150_000u32).map(|i| (i * 7 % 251) as u8).collect()),
        page(vec![0xAB; 5000]),
        page((0..70_000u32).map(|i| (i % 13) as u8).collect()),
    ];
    let mut w = ImageWriter::create(&image).unwrap();
    let mut m = sample_manifest();
    for (i, p) in payloads.iter().enumerate() {
        let r = w.append_payload(p).unwrap();
        let start = 0x1000_0000 * (i as u64 + 1);
        m.memory.push(Vma {
            start,
            end: 0x1000_0000 * (i as u64 + 1) + r.len.next_multiple_of(4096),
            prot: 3,
            backing: Backing::Anonymous,
            pages: vec![PageRun {
                addr: start,
                payload: r,
            }],
            ..Default::default()
        });
    }
    w.finish(m, sign.then_some(&key)).unwrap();
    Fixture {
        _dir: dir,
        image,
        key,
        trust,
        payloads,
    }
}

fn full_verify(path: &Path, trust: &TrustStore) -> Result<(), ImageError> {
    let image = ImageFile::open(path)?.verify(trust)?;
    image.verify_payload()
}

#[test]
fn round_trip_preserves_manifest_and_payload() {
    let f = fixture(true);
    let image = ImageFile::open(&f.image).unwrap().verify(&f.trust).unwrap();
    image.verify_payload().unwrap();
    assert!(
        matches!(image.provenance(), Provenance::Verified { signer, .. } if *signer == f.key.public().fingerprint())
    );
    let m = image.manifest();
    let mut expected = sample_manifest();
    expected.memory = m.memory.clone();
    expected.chunks = m.chunks.clone();
    assert_eq!(*m, expected);
    assert_eq!(m.chunks.digests.len() as u64, image.header().chunk_count());
    // Every payload range reads back byte for byte, and the file is 0600.
    for (vma, want) in m.memory.iter().zip(&f.payloads) {
        let r = vma.pages[0].payload;
        let mut got = vec![0u8; r.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            image.file(),
            &mut got,
            image.header().payload_off + r.offset,
        )
        .unwrap();
        assert_eq!(&got, want);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&f.image).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(image.read_chunk(0, &mut buf).unwrap().len(), 64 * 1024);
    // Single-threaded and many-threaded verification agree.
    image.verify_payload_with(1).unwrap();
    image.verify_payload_with(7).unwrap();
    // What is signed: the domain and the content digest (SHA-256 of header block and manifest).
    let signature = match ImageFile::open(&f.image).unwrap().trailer() {
        thaw::image::Trailer::Ed25519 { signature, .. } => *signature,
        other => panic!("{other:?}"),
    };
    let digest = image.content_digest();
    f.key
        .public()
        .verify(thaw::image::SIGNATURE_DOMAIN, &[&digest.0], &signature)
        .unwrap();
}

#[test]
fn unsigned_images_are_refused_until_signed() {
    let f = fixture(false);
    let err = full_verify(&f.image, &f.trust).unwrap_err();
    assert!(matches!(err, ImageError::Unsigned { .. }), "{err}");
    let saved = resign(&f.image, &f.key).unwrap();
    assert_eq!(saved.signer, Some(f.key.public().fingerprint()));
    full_verify(&f.image, &f.trust).unwrap();
    // Re-signing with another key replaces the signer; the old trust store no longer accepts it.
    let other = SecretKey::generate().unwrap();
    resign(&f.image, &other).unwrap();
    let err = full_verify(&f.image, &f.trust).unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");
    assert_eq!(err.class(), ErrorClass::Signature);
}

#[test]
fn signing_refuses_a_damaged_payload() {
    let f = fixture(false);
    let mut bytes = std::fs::read(&f.image).unwrap();
    bytes[4096 + 100] ^= 1;
    std::fs::write(&f.image, &bytes).unwrap();
    let err = resign(&f.image, &f.key).unwrap_err();
    assert!(err.to_string().contains("chunk 0"), "{err}");
    // The file was left as it was.
    assert_eq!(std::fs::read(&f.image).unwrap(), bytes);
}

#[test]
fn corrupted_manifest_reports_the_signature_not_a_decode_error() {
    let f = fixture(true);
    let image = ImageFile::open(&f.image).unwrap();
    let h = *image.header();
    drop(image);
    let mut bytes = std::fs::read(&f.image).unwrap();
    // Garbage that postcard could never decode.
    for b in &mut bytes[h.manifest_off as usize..(h.manifest_off + h.manifest_len) as usize] {
        *b = 0xFF;
    }
    std::fs::write(&f.image, &bytes).unwrap();
    let err = full_verify(&f.image, &f.trust).unwrap_err();
    assert!(matches!(err, ImageError::Signature { .. }), "{err}");
    assert!(
        err.to_string().contains("signature does not match"),
        "{err}"
    );
}

fn expect_corrupt(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.thaw");
    std::fs::write(&p, bytes).unwrap();
    let err = ImageFile::open(&p).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Corrupt, "{err}");
    assert!(
        err.to_string().contains(needle),
        "{err:?} should mention {needle:?}"
    );
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

fn put_u64(bytes: &mut [u8], off: usize, v: u64) {
    bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn structural_damage_is_reported_before_anything_is_trusted() {
    let f = fixture(true);
    let good = std::fs::read(&f.image).unwrap();
    let h = *ImageFile::open(&f.image).unwrap().header();

    expect_corrupt(&[], "too short");
    let mut b = good.clone();
    b[0] = b'X';
    expect_corrupt(&b, "wrong magic");
    let mut b = good.clone();
    b[8] = 1;
    expect_corrupt(
        &b,
        &format!(
            "unknown image format version 1 (this thaw reads version {})",
            thaw::image::FORMAT_VERSION
        ),
    );
    // Truncation at and around every section boundary.
    expect_corrupt(&good[..64], "too short");
    for cut in [
        128,
        4096,
        4097,
        h.manifest_off as usize,
        h.manifest_off as usize + 1,
        h.trailer_off as usize,
        good.len() - 1,
    ] {
        expect_corrupt(&good[..cut], "past the end");
    }
    // Offsets or lengths past the end, overlapping sections, absurd lengths (no huge allocation).
    let mut b = good.clone();
    put_u64(&mut b, 40, u64::MAX - 4095);
    expect_corrupt(&b, "past the end");
    let mut b = good.clone();
    put_u64(&mut b, 48, h.manifest_off - 4096);
    expect_corrupt(&b, "next section starts at");
    let mut b = good.clone();
    put_u64(&mut b, 56, 1 << 62);
    expect_corrupt(&b, "past the end");
    let mut b = good.clone();
    b.resize(good.len() + (70 << 20), 0);
    let tl = b.len() as u64;
    put_u64(&mut b, 56, tl - h.manifest_off - 112);
    put_u64(&mut b, 64, tl - 112);
    expect_corrupt(&b, "manifest length");
    // Trailer missing: an image whose last section is not a trailer.
    let mut b = good.clone();
    let t = h.trailer_off as usize;
    b[t..t + 8].copy_from_slice(b"NOTASIG\0");
    expect_corrupt(&b, "trailer missing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// A single flipped byte anywhere — header, manifest, payload or trailer — is caught, and
    /// classified as corruption or a signature failure, never accepted and never a panic.
    #[test]
    fn any_flipped_byte_is_caught(section in 0usize..4, pos in 0.0f64..1.0, bit in 0u8..8) {
        thread_local! { static F: Fixture = fixture(true); }
        F.with(|f| {
            let mut bytes = std::fs::read(&f.image).unwrap();
            let h = *ImageFile::open(&f.image).unwrap().header();
            // Pick a section first so that the small ones are hit as often as the payload.
            let (start, len) = [
                (0, h.payload_off),
                (h.payload_off, h.payload_len),
                (h.manifest_off, h.manifest_len),
                (h.trailer_off, h.trailer_len),
            ][section];
            let at = (start + ((len as f64) * pos) as u64) as usize;
            bytes[at] ^= 1 << bit;
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("flip.thaw");
            std::fs::write(&p, &bytes).unwrap();
            let err = full_verify(&p, &f.trust).expect_err("a flipped byte must not verify");
            prop_assert!(matches!(err.class(), ErrorClass::Corrupt | ErrorClass::Signature), "{err}");
            Ok(())
        })?;
    }
}

#[test]
fn payload_ranges_of_shared_memory_and_sockets_are_bounds_checked() {
    use thaw::state::files::{FdEntry, FdKind};
    use thaw::state::shmem::SharedObject;
    use thaw::state::sockets::{PairEnd, Socket};
    use thaw::state::PayloadRef;
    let outside = PayloadRef {
        offset: 1 << 40,
        len: 4096,
    };
    for case in ["shared", "socket", "fifo"] {
        let f = fixture(true);
        let image = ImageFile::open(&f.image).unwrap().verify(&f.trust).unwrap();
        let mut m = image.manifest().clone();
        match case {
            "shared" => m.shared.push(SharedObject {
                id: 1,
                size: 1 << 41,
                pages: vec![PageRun {
                    addr: 0,
                    payload: outside,
                }],
                ..Default::default()
            }),
            "socket" => m.files.push(FdEntry {
                fd: 5,
                kind: FdKind::Socket(Socket::Pair(PairEnd {
                    queued: Some(outside),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            // The bytes waiting in a FIFO made again (a hostile image made the launcher
            // allocate 2^62 bytes and abort, leaving the FIFO it had made behind).
            _ => m.files.push(FdEntry {
                fd: 5,
                kind: FdKind::DevNull,
                fifo_bytes: Some(PayloadRef {
                    offset: 0,
                    len: 1 << 62,
                }),
                ..Default::default()
            }),
        }
        drop(image);
        thaw::image::rewrite_manifest(&f.image, Some(&f.key), |old| *old = m.clone()).unwrap();
        let err = ImageFile::open(&f.image)
            .and_then(|i| i.verify(&f.trust))
            .unwrap_err();
        assert!(err.to_string().contains("lies outside"), "{case}: {err}");
    }
}
