//! Shared memory end to end: memfds mapped several times (ZGC's heap), sealed memfds, memfds
//! without a descriptor, shared anonymous memory, shared writable file mappings; HotSpot's
//! performance data file refused with the flag that avoids it; a shared file gone at restore
//! refused by name.

mod common;

use common::*;

const CHECKS: [&str; 17] = [
    "memfd: executable (execveat), as before",
    "memfd made MFD_NOEXEC_SEAL: F_SEAL_EXEC kept, cannot be made executable",
    "memfd that allows sealing, none yet: seals can be added; one that does not: sealed",
    "memfd: its mode (fchmod)",
    "memfd: a dup'd descriptor shares the description",
    "memfd: every view has the contents",
    "memfd: a write through one view is seen by the others and the descriptor",
    "memfd: same name and size",
    "sealed memfd: contents and seals",
    "write-sealed memfd: mapped contents, sealed, writes refused",
    "memfd: the descriptor's offset",
    "memfd without a descriptor: contents",
    "shared anonymous: contents",
    "shared anonymous: the upper half is still read-only",
    "shared anonymous: still shared with a forked child",
    "shared file mapping: the file's contents",
    "shared file mapping: writes reach the file",
];

#[test]
fn shared_memory_in_every_mode() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-shmem", "m.thaw", &[]);
    let m = env.manifest(&img);
    assert_eq!(
        m.shared.len(),
        8,
        "zgc_heap, sealed, sealable, noexec, write-sealed, closed-after-map, shared anonymous, script"
    );
    let heap = m
        .shared
        .iter()
        .find(|o| o.memfd.as_deref() == Some("zgc_heap"))
        .unwrap();
    let saved: u64 = heap.pages.iter().map(|p| p.payload.len).sum();
    assert_eq!(
        saved,
        (2 << 20) + 4096,
        "only the non-zero pages of the 8 MiB memfd"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &CHECKS);
    }
}

#[test]
fn shared_memory_as_nobody() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody (CI runs as root)");
        return;
    }
    let env = Env::for_nobody();
    let img = env.checkpoint("zdtm-shmem", "m.thaw", &[]);
    let o = env.restore(&img, &["--pid-mode", "ns"], &[]);
    assert_all_ok(&o, &CHECKS);
}

#[test]
fn a_file_under_hsperfdata_that_is_not_the_process_own_is_an_ordinary_shared_file() {
    // Only /tmp/hsperfdata_<user>/<pid> of the process itself is kept in the image (see
    // zdtm.rs): any other file, even in such a directory, is the truth on disk.
    let env = Env::new();
    let img = env.checkpoint("zdtm-shmem", "h.thaw", &["hsperf"]);
    let m = env.manifest(&img);
    assert!(
        m.shared.iter().all(|o| o.file.is_none()),
        "nothing kept by name"
    );
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(&o, &CHECKS);
}

#[test]
fn a_shared_file_gone_at_restore_is_refused_by_name() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-shmem", "g.thaw", &[]);
    std::fs::remove_file(env.path("shared.data")).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot open mapped file") && err.contains("shared.data"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

const COW_CHECKS: [&str; 5] = [
    "private memfd mapping: written pages its own, the others the memfd's",
    "private memfd mapping: MADV_DONTNEED brings back the memfd's contents",
    "private memfd mapping: the memfd sealed as before, untouched by writes to the mapping",
    "private memfd mapping: still a private mapping of the memfd",
    "private memfd mapping without a descriptor: its page written, then its memfd's contents",
];

/// Memfds mapped privately (wasmtime's copy-on-write memory images): the memfd is kept with its
/// contents and mapped privately again, the pages written since on top, so that a reset with
/// `MADV_DONTNEED` reads the memfd's contents again. Only the written pages are the mapping's.
#[test]
fn memfds_mapped_privately_come_back_copy_on_write() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-shmem", "c.thaw", &["cow"]);
    let m = env.manifest(&img);
    let image = m
        .shared
        .iter()
        .find(|o| o.memfd.as_deref() == Some("wasm-memory-image"))
        .expect("the memory image is kept");
    assert_eq!(
        image.seals as i32,
        libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL
    );
    let own: u64 = m
        .memory
        .iter()
        .filter(|v| matches!(v.backing, thaw::state::memory::Backing::Shared { object, .. } if object == image.id))
        .map(|v| v.saved_len())
        .sum();
    assert_eq!(own, 2 * 4096, "the two pages written, not the memfd's");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &COW_CHECKS);
    }
}

/// Shared anonymous memory opened as a file through /proc/self/map_files (CRIU's shmemfd and
/// shmemfd-priv), held alone and mapped privately and shared through the descriptor, is kept as
/// one shared object each, and comes back in every mode.
#[test]
fn shared_anonymous_memory_opened_through_map_files_comes_back() {
    if !is_root() {
        eprintln!("skipped: /proc/self/map_files needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-shmem", "f.thaw", &["map-files"]);
    let m = env.manifest(&img);
    let anon: Vec<_> = m.shared.iter().filter(|o| o.memfd.is_none()).collect();
    assert_eq!(anon.len(), 2, "{anon:?}");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "shared anonymous memory held as a file: contents, O_APPEND and offset",
                "shared anonymous memory mapped privately through its descriptor: written page its own, the others the object's",
            ],
        );
    }
}

/// Without CAP_CHECKPOINT_RESTORE a memfd mapped privately whose descriptor was closed cannot
/// be read (its mapping shows its own pages): refused, saying what to do.
#[test]
fn a_private_memfd_mapping_without_a_descriptor_is_refused_without_the_capability() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody (CI runs as root)");
        return;
    }
    let env = Env::for_nobody();
    let o = env.first_life("zdtm-shmem", "c.thaw", &["cow"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains(
            "a private mapping of memfd \"closed-cow\" that the process has no descriptor of"
        ) && out.contains("keep one open"),
        "{out}"
    );
    assert!(!env.path("c.thaw").exists());
}

/// A worker whose shared memory its master maps too (forked after the mapping): a restore would
/// give the worker a copy of its own, no longer shared, so the checkpoint is refused, naming
/// the master.
#[test]
fn shared_memory_another_process_maps_is_refused() {
    let env = Env::new();
    let out = env.refused("zdtm-shmem", "w.thaw", &["shared-with-parent"]);
    assert!(
        out.contains("shared memory another process maps it: process ")
            && out.contains("(zdtm-shmem)")
            && out.contains("no longer shared"),
        "{out}"
    );
    assert!(!env.path("w.thaw").exists());
}

/// A worker whose memfd, deleted temporary file, eventfd and epoll instance its master holds
/// too, by descriptor alone: each would come back as the worker's own copy, so the checkpoint
/// is refused, one item each (two descriptors of one eventfd are one item), naming the master.
#[test]
fn objects_another_process_holds_by_descriptor_are_refused() {
    let env = Env::new();
    let out = env.refused("zdtm-shmem", "h.thaw", &["held-with-parent"]);
    for what in [
        "(/memfd:status (deleted)): shared memory another process holds it open: process ",
        " (deleted)): a file deleted while open, another process holds it open: process ",
        // (Items with one ending are listed together, the ending said once.)
        "(anon_inode:[eventfd]): an eventfd, another process holds it open",
        "(anon_inode:[eventpoll]): an epoll instance, another process holds it open",
    ] {
        assert_eq!(out.matches(what).count(), 1, "{what}: {out}");
    }
    assert!(out.contains("4 unsupported item(s)"), "{out}");
    assert!(out.contains("(zdtm-shmem)"), "{out}");
    assert!(!env.path("h.thaw").exists());
}

/// Sparse shared anonymous memory (256 MiB, three pages written): the checkpoint copies the
/// pages in memory, not the holes, and the first life's resident memory stays as it was (read
/// through the mapping, every hole was filled: a 1 GiB region became 1 GiB resident). Where the
/// machine has swap, every byte is read (a page out in swap looks like a hole), so the bound is
/// checked only without.
#[test]
fn sparse_shared_memory_is_copied_without_filling_its_holes() {
    let env = Env::new();
    let o = env.first_life("zdtm-shmem", "s.thaw", &["sparse"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let kb: Vec<u64> = out
        .trim()
        .strip_prefix("first life shared memory resident ")
        .unwrap_or_else(|| panic!("{out}"))
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let swap = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("SwapTotal:") && !l.ends_with(" 0 kB"));
    if !swap {
        assert!(
            kb.len() == 2 && kb[1] < kb[0] + 1024,
            "the first life's shared memory grew: {out}"
        );
    }
    let img = env.path("s.thaw");
    assert!(
        std::fs::metadata(&img).unwrap().len() < 16 << 20,
        "only the pages written are saved"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &["sparse shared anonymous: its pages, zeros elsewhere"]);
    }
}
