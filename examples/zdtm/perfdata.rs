//! A runtime's per-process file named by its PID, mapped shared and written all the time, which
//! the runtime deletes when it exits: HotSpot's performance data (`/tmp/hsperfdata_<user>/<pid>`,
//! what `jps` and `jstat` read). The first life maps it and closes its descriptor, as HotSpot
//! does, and leaves it behind when it exits after the checkpoint (a stale file, as a JVM that
//! dies leaves). After restore the mapping has its contents, is the file at that path again, and
//! still shares its pages with it; the program deletes it when it ends, as HotSpot does.
//!
//! `EXTRA` is the `<user>` part of the directory (tests use their own), or `mono`: then the file is
//! Mono's shared area, `/dev/shm/mono.<pid>` (made with shm_open, deleted with shm_unlink). Restored with the
//! argument `unnamed`, the directory was made writable by others in between (or another
//! restore's process holds the file): the file cannot be created there safely, so the memory must
//! still be shared but under no name. With `hold` it waits for end of file on its standard input
//! before it deletes the file.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt};

const LEN: usize = 32 * 1024;

fn pattern(i: usize) -> u8 {
    (i * 13 + i / 4096) as u8
}

fn main() {
    let (_, _, extra) = common::argv();
    let mono = extra[0] == "mono";
    let path = if mono {
        std::path::PathBuf::from(format!("/dev/shm/mono.{}", std::process::id()))
    } else {
        let dir = std::path::PathBuf::from(format!("/tmp/hsperfdata_{}", extra[0]));
        let _ = std::fs::DirBuilder::new().mode(0o755).create(&dir);
        dir.join(std::process::id().to_string())
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let data: Vec<u8> = (0..LEN).map(pattern).collect();
    f.write_all_at(&data, 0).unwrap();
    // SAFETY: maps LEN bytes of a file of that size where the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let p: *mut u8 = p.cast();
    drop(f);
    // SAFETY: inside our own mapping.
    unsafe { *p.add(100) = 0xab };

    let args = common::checkpoint();
    let unnamed = args.iter().any(|a| a == "unnamed");
    let mut ck = common::Checks::default();
    // SAFETY: reads inside our own mapping.
    let same = (0..LEN).all(|i| unsafe { *p.add(i) } == if i == 100 { 0xab } else { pattern(i) });
    ck.check("the mapping's contents", same, "");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", p as usize)))
        .unwrap_or("")
        .to_owned();
    // SAFETY: a write inside our own mapping.
    unsafe { *p.add(200) = 0xcd };
    if unnamed {
        ck.check(
            "under no name where the directory is not safe",
            line.contains(if mono {
                "/memfd:mono."
            } else {
                "/memfd:hsperfdata"
            }) && line.contains(" rw-s "),
            &line,
        );
    } else {
        ck.check(
            "the file at its path again",
            line.ends_with(path.to_str().unwrap()) && line.contains(" rw-s "),
            &line,
        );
        let mut b = [0u8; 1];
        let seen = std::fs::File::open(&path).and_then(|f| f.read_exact_at(&mut b, 200));
        ck.check(
            "its pages shared with the file",
            seen.is_ok() && b[0] == 0xcd,
            format!("{seen:?} {:#x}", b[0]),
        );
        if args.iter().any(|a| a == "hold") {
            // Alive with its file until told (a second restore runs meanwhile).
            println!("holding");
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        let _ = std::fs::remove_file(&path);
    }
    ck.finish();
}
