//! Writes an unsigned sample image through the SDK's image writer: `write-image PATH MIB`.

use thaw::image::ImageWriter;
use thaw::state::memory::{Backing, PageRun, Vma};
use thaw::state::Manifest;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(mib)) = (
        args.next(),
        args.next().and_then(|m| m.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: write-image PATH MIB");
        std::process::exit(64);
    };
    let mut w = ImageWriter::create(path.as_ref()).unwrap_or_else(|e| fail(e));
    let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    let r = w.append_payload(&data).unwrap_or_else(|e| fail(e));
    let mut m = Manifest::default();
    m.producer.thaw_version = env!("CARGO_PKG_VERSION").into();
    m.process.pid = std::process::id() as i32;
    m.process.comm = "write-image".into();
    m.memory.push(Vma {
        start: 0x7f00_0000_0000,
        end: 0x7f00_0000_0000 + r.len,
        prot: 3,
        map_flags: 2,
        backing: Backing::Anonymous,
        pages: vec![PageRun {
            addr: 0x7f00_0000_0000,
            payload: r,
        }],
        ..Default::default()
    });
    let saved = w.finish(m, None).unwrap_or_else(|e| fail(e));
    println!(
        "wrote {} ({} bytes, content sha256:{})",
        path, saved.size, saved.digest
    );
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("write-image: {e}");
    std::process::exit(74);
}
