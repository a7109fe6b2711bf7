//! Full verification throughput (signature + every payload chunk, all cores) beside
//! single-threaded raw BLAKE3 (the chunk digest) and SHA-256 (the digest before format 6) over
//! the same bytes, in the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};
use thaw::image::{ImageFile, ImageWriter};
use thaw::state::Manifest;
use thaw_signing::{SecretKey, TrustSource, TrustStore};

/// The smallest manifest validation accepts: one thread, and the payload as one anonymous
/// mapping that also holds the thread's signal frame and the restore cell.
fn manifest(run: thaw::state::PayloadRef) -> Manifest {
    use thaw::state::memory::{Backing, PageRun, Vma};
    const START: u64 = 0x1000_0000;
    let mut m = Manifest::default();
    m.process.pid = 4242;
    m.process.checkpoint_tid = 4242;
    m.process.restore_cell = START + 0x200;
    m.threads.push(thaw::state::threads::ThreadState {
        tid: 4242,
        sigframe: START + 0x100,
        ..Default::default()
    });
    m.memory.push(Vma {
        start: START,
        end: START + run.len.next_multiple_of(4096),
        prot: 3,
        backing: Backing::Anonymous,
        pages: vec![PageRun {
            addr: START,
            payload: run,
        }],
        ..Default::default()
    });
    m
}

fn bench_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pubfile = dir.path().join("k.pub");
    key.public().save_new(&pubfile).unwrap();
    let trust = TrustStore::load(&[TrustSource::File(pubfile)]).unwrap();

    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    for mib in [1usize, 64, 512] {
        let payload: Vec<u8> = (0..mib << 20)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect();
        let path = dir.path().join(format!("{mib}.thaw"));
        let mut w = ImageWriter::create(&path).unwrap();
        let run = w.append_payload(&payload).unwrap();
        w.finish(manifest(run), Some(&key)).unwrap();
        group.throughput(Throughput::Bytes(payload.len() as u64));

        group.bench_with_input(BenchmarkId::new("sha256_1core", mib), &payload, |b, p| {
            b.iter(|| black_box(Sha256::digest(black_box(p))))
        });
        group.bench_with_input(BenchmarkId::new("blake3_1core", mib), &payload, |b, p| {
            b.iter(|| {
                for c in black_box(p).chunks(64 << 10) {
                    black_box(blake3::hash(c));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("thaw_verify", mib), &path, |b, path| {
            b.iter(|| {
                let image = ImageFile::open(path).unwrap().verify(&trust).unwrap();
                image.verify_payload().unwrap();
            })
        });
        std::fs::remove_file(&path).unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
