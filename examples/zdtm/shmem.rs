//! Shared memory: a memfd mapped MAP_SHARED three times (as ZGC maps its heap) and kept open; a
//! sealed memfd; a memfd whose descriptor was closed after mapping it; MAP_SHARED|MAP_ANONYMOUS
//! memory split in two by mprotect; a MAP_SHARED writable mapping of a regular file (IMAGE.data).
//!
//! `PROG IMAGE KEY cow`: memfds mapped privately, as wasmtime maps a module's memory image.
//!
//! `PROG IMAGE KEY map-files`: shared anonymous memory opened as a file through
//! /proc/self/map_files (root), as CRIU's shmemfd tests do.
//!
//! `PROG IMAGE KEY [hsperf]`: with `hsperf`, the file is under a `hsperfdata_` directory, as
//! HotSpot's is, but is not the process's own PID-named file: an ordinary shared file mapping.
//!
//! After restore: every view of an object shows its contents and a write through one is seen
//! through the others and through the descriptor; names, sizes and seals are the same; shared
//! anonymous memory is still shared with a forked child; the file mapping is the file.

#[path = "common.rs"]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const HEAP: usize = 8 << 20;
const ANON: usize = 1 << 20;

fn pattern(i: usize) -> u8 {
    (i / 4096 * 31 + i % 4096 * 7 + 1) as u8
}

fn memfd(name: &str, flags: u32) -> OwnedFd {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(n.as_ptr(), flags) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn map(fd: RawFd, len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a fresh mapping at an address the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn view<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    // SAFETY: `p` is a live mapping of `len` bytes that this program never unmaps.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

fn main() {
    let (image, _, extra) = common::argv();
    let hsperf = extra.first().is_some_and(|a| a == "hsperf");
    if extra.first().is_some_and(|a| a == "shared-with-parent") {
        return shared_with_parent();
    }
    if extra.first().is_some_and(|a| a == "must-fail") {
        // Exits 3 with the reason the checkpoint failed (the caller made it fail).
        common::refusal(|| {});
    }
    if extra.first().is_some_and(|a| a == "held-with-parent") {
        return held_with_parent();
    }
    if extra.first().is_some_and(|a| a == "sparse") {
        return sparse();
    }
    if extra.first().is_some_and(|a| a == "cow") {
        return copy_on_write();
    }
    if extra.first().is_some_and(|a| a == "map-files") {
        return opened_through_map_files();
    }

    let heap = memfd("zgc_heap", libc::MFD_CLOEXEC);
    // SAFETY: our own descriptor.
    assert_eq!(unsafe { libc::ftruncate(heap.as_raw_fd(), HEAP as i64) }, 0);
    let views: Vec<*mut u8> = (0..3)
        .map(|_| map(heap.as_raw_fd(), HEAP, libc::MAP_SHARED))
        .collect();
    let v0 = view(views[0], HEAP);
    for (i, b) in v0[..2 << 20].iter_mut().enumerate() {
        *b = pattern(i);
    }
    v0[HEAP - 1] = 0xEE;

    let sealed = memfd("sealed", libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
    let sfd = sealed.as_raw_fd();
    // SAFETY: our own descriptor and a valid buffer.
    unsafe {
        assert_eq!(libc::write(sfd, b"sealed bytes".as_ptr().cast(), 12), 12);
        assert_eq!(
            libc::fcntl(
                sfd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
            ),
            0
        );
    }

    // Sealing allowed, nothing sealed yet: seals can still be added after restore.
    let sealable = memfd("sealable", libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
    // MFD_NOEXEC_SEAL (Linux 6.3): never executable, F_SEAL_EXEC.
    let noexec = memfd("noexec", libc::MFD_CLOEXEC | 0x0008);

    // Write-sealed and mapped read-only, as a producer hands data to consumers.
    let frozen = memfd("write-sealed", libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
    let ffd = frozen.as_raw_fd();
    // SAFETY: our own descriptor, a valid buffer; a fresh read-only shared mapping of it.
    let frozen_map = unsafe {
        assert_eq!(libc::write(ffd, b"read-only data".as_ptr().cast(), 14), 14);
        assert_eq!(libc::fcntl(ffd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            ffd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p.cast::<u8>()
    };
    // The heap memfd's own offset is the application's: the checkpoint must keep it.
    // SAFETY: our own descriptor.
    let at = unsafe { libc::lseek(heap.as_raw_fd(), 1234, libc::SEEK_SET) };
    assert_eq!(at, 1234);

    let gone = memfd("closed-after-map", libc::MFD_CLOEXEC);
    // SAFETY: our own descriptor.
    assert_eq!(unsafe { libc::ftruncate(gone.as_raw_fd(), 65536) }, 0);
    let gone_map = map(gone.as_raw_fd(), 65536, libc::MAP_SHARED);
    drop(gone);
    view(gone_map, 65536)[4096..4100].copy_from_slice(b"kept");

    let anon = map(-1, ANON, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    for (i, b) in view(anon, ANON).iter_mut().enumerate() {
        *b = pattern(i) ^ 0x55;
    }
    // SAFETY: the upper half of our own mapping becomes read-only.
    let r = unsafe { libc::mprotect(anon.add(ANON / 2).cast(), ANON / 2, libc::PROT_READ) };
    assert_eq!(r, 0);

    let parent = std::path::Path::new(&image)
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = if hsperf {
        let d = format!("{parent}/hsperfdata_thaw");
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        parent
    };
    let data_path = format!("{dir}/shared.data");
    std::fs::write(&data_path, b"file contents, page one").unwrap();
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data_path)
        .unwrap();
    let file_map = {
        // SAFETY: a fresh shared mapping of our own file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast::<u8>()
    };
    drop(data);

    // An executable memfd (a script), with its mode changed and a dup of its descriptor.
    let script = memfd("script", 0);
    // SAFETY: our own descriptor and a valid buffer.
    unsafe {
        assert_eq!(
            libc::write(script.as_raw_fd(), b"#!/bin/true\n".as_ptr().cast(), 12),
            12
        );
        assert_eq!(libc::fchmod(script.as_raw_fd(), 0o750), 0);
    }
    // SAFETY: dup of our own descriptor.
    let script_dup = unsafe { libc::dup(script.as_raw_fd()) };

    common::checkpoint();

    let mut c = common::Checks::default();
    // SAFETY: fork; the child only calls execveat and _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let argv = [c"true".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: valid argument vectors; exec replaces the child or returns.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                script.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(*libc::__errno_location());
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    c.check(
        "memfd: executable (execveat), as before",
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        format!("status {st:#x}"),
    );
    // SAFETY: fstat and lseek on our own descriptors.
    let (mode, shared_offset) = unsafe {
        let mut sb: libc::stat = std::mem::zeroed();
        libc::fstat(script.as_raw_fd(), &mut sb);
        libc::lseek(script.as_raw_fd(), 5, libc::SEEK_SET);
        (
            sb.st_mode & 0o7777,
            libc::lseek(script_dup, 0, libc::SEEK_CUR),
        )
    };
    c.check(
        "memfd: its mode (fchmod)",
        mode == 0o750,
        format!("{mode:o}"),
    );
    c.check(
        "memfd: a dup'd descriptor shares the description",
        shared_offset == 5,
        shared_offset,
    );
    let ok = (0..3).all(|k| {
        let v = view(views[k], HEAP);
        v[..2 << 20]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(i))
            && v[2 << 20..HEAP - 1].iter().all(|&b| b == 0)
            && v[HEAP - 1] == 0xEE
    });
    c.check("memfd: every view has the contents", ok, "");
    view(views[1], HEAP)[12345] = 0xAB;
    let mut one = [0u8; 1];
    // SAFETY: our descriptor and a 1-byte buffer.
    unsafe { libc::pread(heap.as_raw_fd(), one.as_mut_ptr().cast(), 1, 12345) };
    c.check(
        "memfd: a write through one view is seen by the others and the descriptor",
        view(views[0], HEAP)[12345] == 0xAB
            && view(views[2], HEAP)[12345] == 0xAB
            && one[0] == 0xAB,
        "",
    );
    let link = std::fs::read_link(format!("/proc/self/fd/{}", heap.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = std::fs::metadata(format!("/proc/self/fd/{}", heap.as_raw_fd()))
        .map(|m| m.len())
        .unwrap_or(0);
    c.check(
        "memfd: same name and size",
        link == "/memfd:zgc_heap (deleted)" && size == HEAP as u64,
        format!("{link} {size}"),
    );
    // SAFETY: our own descriptors.
    let (seals, grow) = unsafe {
        (
            libc::fcntl(sfd, libc::F_GET_SEALS),
            libc::ftruncate(sfd, 1 << 20),
        )
    };
    let mut sb = [0u8; 12];
    // SAFETY: our descriptor and a 12-byte buffer.
    unsafe { libc::pread(sfd, sb.as_mut_ptr().cast(), 12, 0) };
    c.check(
        "sealed memfd: contents and seals",
        seals == libc::F_SEAL_SHRINK | libc::F_SEAL_GROW && grow == -1 && &sb == b"sealed bytes",
        format!("seals {seals:#x} grow {grow}"),
    );
    // SAFETY: our own descriptors.
    let (none, grow_sealed, unsealable) = unsafe {
        (
            libc::fcntl(sealable.as_raw_fd(), libc::F_GET_SEALS),
            libc::fcntl(sealable.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_GROW),
            libc::fcntl(heap.as_raw_fd(), libc::F_GET_SEALS),
        )
    };
    // SAFETY: our own descriptor.
    let (xseals, chmod) = unsafe {
        (
            libc::fcntl(noexec.as_raw_fd(), libc::F_GET_SEALS),
            libc::fchmod(noexec.as_raw_fd(), 0o755),
        )
    };
    c.check(
        "memfd made MFD_NOEXEC_SEAL: F_SEAL_EXEC kept, cannot be made executable",
        xseals == libc::F_SEAL_EXEC && chmod == -1,
        format!("seals {xseals:#x}, fchmod 755: {chmod}"),
    );
    c.check(
        "memfd that allows sealing, none yet: seals can be added; one that does not: sealed",
        none == 0 && grow_sealed == 0 && unsealable == libc::F_SEAL_SEAL,
        format!("seals {none:#x}, adding one: {grow_sealed}; the other's {unsealable:#x}"),
    );
    // SAFETY: our own descriptors, valid buffers.
    let (fseals, fwrite, fpos) = unsafe {
        (
            libc::fcntl(ffd, libc::F_GET_SEALS),
            libc::pwrite(ffd, b"x".as_ptr().cast(), 1, 0),
            libc::lseek(heap.as_raw_fd(), 0, libc::SEEK_CUR),
        )
    };
    c.check(
        "write-sealed memfd: mapped contents, sealed, writes refused",
        view(frozen_map, 14) == b"read-only data" && fseals == libc::F_SEAL_WRITE && fwrite == -1,
        format!("seals {fseals:#x} write {fwrite}"),
    );
    c.check("memfd: the descriptor's offset", fpos == 1234, fpos);
    c.check(
        "memfd without a descriptor: contents",
        &view(gone_map, 65536)[4096..4100] == b"kept",
        "",
    );
    let a = view(anon, ANON);
    c.check(
        "shared anonymous: contents",
        a.iter().enumerate().all(|(i, &b)| b == pattern(i) ^ 0x55),
        "",
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let upper = format!("{:x}-", anon as usize + ANON / 2);
    c.check(
        "shared anonymous: the upper half is still read-only",
        maps.lines()
            .any(|l| l.starts_with(&upper) && l.contains(" r--s ")),
        "",
    );
    // SAFETY: the child only writes one byte of shared memory and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        a[7] = 0x77;
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    c.check(
        "shared anonymous: still shared with a forked child",
        a[7] == 0x77,
        a[7],
    );
    let fm = view(file_map, 4096);
    // The file is the truth: an earlier restore of this image may have written its 'F'.
    c.check(
        "shared file mapping: the file's contents",
        fm[1..].starts_with(b"ile contents, page one") && (fm[0] == b'f' || fm[0] == b'F'),
        "",
    );
    fm[0] = b'F';
    let on_disk = std::fs::read(&data_path).unwrap_or_default();
    c.check(
        "shared file mapping: writes reach the file",
        on_disk.starts_with(b"File contents"),
        "",
    );
    c.finish();
}

/// A worker forked by a master that keeps their shared anonymous memory checkpoints: refused,
/// naming the master (a restore would give the worker a copy of its own). The master exits with
/// the worker's status.
fn shared_with_parent() {
    let shared = map(-1, 4096, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    // SAFETY: fork in a process with one thread; the child only runs the checkpoint and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        common::refusal(|| view(shared, 4096)[0] = 1);
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    std::process::exit(libc::WEXITSTATUS(status));
}

/// A worker forked by a master that keeps descriptors of their memfd, a deleted temporary file,
/// an eventfd (two descriptors of it in the worker) and an epoll instance, none of them mapped:
/// refused, one item each, naming the master (a restore would give the worker copies of its
/// own). The master exits with the worker's status.
fn held_with_parent() {
    let mfd = memfd("status", libc::MFD_CLOEXEC);
    let path = format!("{}.tmp", common::argv().0);
    let tmp = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // SAFETY: eventfd, dup and epoll_create1 make descriptors of our own.
    let (efd, efd2, ep) = unsafe {
        let e = libc::eventfd(0, libc::EFD_CLOEXEC);
        (e, libc::dup(e), libc::epoll_create1(libc::EPOLL_CLOEXEC))
    };
    assert!(efd >= 0 && efd2 >= 0 && ep >= 0);
    // SAFETY: fork in a process with one thread; the child only runs the checkpoint and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        common::refusal(|| {});
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    drop((mfd, tmp));
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Shared anonymous memory of 256 MiB with three pages written (a reservation used sparsely):
/// the checkpoint copies those pages, not the holes, and leaves the first life's memory as it
/// was (reading a hole of shared memory fills it). Prints the first life's shared memory resident
/// before and after (kB); after restore checks the contents.
fn sparse() {
    const LEN: usize = 256 << 20;
    let p = map(
        -1,
        LEN,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
    );
    let v = view(p, LEN);
    for (i, at) in [0usize, 100 << 20, LEN - 4096].into_iter().enumerate() {
        v[at] = 0x5a + i as u8;
    }
    let shmem = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("RssShmem:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let before = shmem();
    let (image, key, _) = common::argv();
    let mut cp = thaw::Checkpoint::to(&image);
    if let Some(k) = key {
        cp = cp.sign_with(k);
    }
    match cp.save() {
        Ok(thaw::Outcome::Saved(_)) => {
            println!(
                "first life shared memory resident {before} kB, then {} kB",
                shmem()
            );
            return;
        }
        Ok(thaw::Outcome::Restored(_)) => {}
        Err(e) => {
            println!("checkpoint failed: {e}");
            std::process::exit(2);
        }
    }
    let mut c = common::Checks::default();
    let got = [v[0], v[100 << 20], v[LEN - 4096], v[50 << 20], v[LEN - 1]];
    c.check(
        "sparse shared anonymous: its pages, zeros elsewhere",
        got == [0x5a, 0x5b, 0x5c, 0, 0],
        format!("{got:x?}"),
    );
    c.finish();
}

/// Memfds mapped privately (copy-on-write), as wasmtime maps a module's memory image: a sealed
/// memfd holding the initial contents mapped over a reservation, with pages written since, and
/// one whose descriptor was closed after mapping it. After restore: the pages written are the
/// mapping's own, the others the memfd's, and `MADV_DONTNEED` (wasmtime's reset of an
/// instance's memory) brings back the memfd's contents, not zeros or the written pages.
fn copy_on_write() {
    const LEN: usize = 1 << 20;
    let image = memfd(
        "wasm-memory-image",
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
    );
    let init: Vec<u8> = (0..LEN).map(pattern).collect();
    // SAFETY: our own descriptor and a buffer of LEN bytes.
    unsafe {
        assert_eq!(libc::ftruncate(image.as_raw_fd(), LEN as i64), 0);
        assert_eq!(
            libc::pwrite(image.as_raw_fd(), init.as_ptr().cast(), LEN, 0),
            LEN as isize
        );
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        assert_eq!(libc::fcntl(image.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
    }
    let heap = view(map(image.as_raw_fd(), LEN, libc::MAP_PRIVATE), LEN);
    heap[..4096].fill(0xab);
    heap[2 * 4096] = 0xcd;
    let read = heap[5 * 4096];
    assert_eq!(read, pattern(5 * 4096));
    let gone = memfd("closed-cow", libc::MFD_CLOEXEC);
    // SAFETY: our own descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(gone.as_raw_fd(), 65536), 0);
        assert_eq!(
            libc::pwrite(gone.as_raw_fd(), b"orig".as_ptr().cast(), 4, 4096),
            4
        );
    }
    let other = view(map(gone.as_raw_fd(), 65536, libc::MAP_PRIVATE), 65536);
    other[8192..8196].copy_from_slice(b"priv");
    drop(gone);

    common::restored();
    let mut c = common::Checks::default();
    let untouched = (0..LEN)
        .filter(|&i| !(i < 4096 || i == 2 * 4096))
        .all(|i| heap[i] == pattern(i));
    c.check(
        "private memfd mapping: written pages its own, the others the memfd's",
        heap[..4096].iter().all(|&b| b == 0xab) && heap[2 * 4096] == 0xcd && untouched,
        format!("{:x} {:x}", heap[0], heap[2 * 4096]),
    );
    // SAFETY: a page of our own private mapping, which nothing else refers to.
    let r = unsafe { libc::madvise(heap.as_mut_ptr().cast(), 4 * 4096, libc::MADV_DONTNEED) };
    let reset = r == 0 && (0..4 * 4096).all(|i| heap[i] == pattern(i));
    c.check(
        "private memfd mapping: MADV_DONTNEED brings back the memfd's contents",
        reset,
        format!("{r} {:x} {:x}", heap[0], heap[2 * 4096]),
    );
    // SAFETY: fcntl on our own descriptor.
    let seals = unsafe { libc::fcntl(image.as_raw_fd(), libc::F_GET_SEALS) };
    heap[3] = 7;
    let mut first = [0u8; 4];
    // SAFETY: reading 4 bytes into our buffer from our descriptor.
    unsafe { libc::pread(image.as_raw_fd(), first.as_mut_ptr().cast(), 4, 0) };
    c.check(
        "private memfd mapping: the memfd sealed as before, untouched by writes to the mapping",
        seals == libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL
            && first[..] == init[..4],
        format!("seals {seals:#x}"),
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", heap.as_ptr() as usize)))
        .unwrap_or_default();
    c.check(
        "private memfd mapping: still a private mapping of the memfd",
        line.contains(" rw-p ") && line.ends_with("/memfd:wasm-memory-image (deleted)"),
        line,
    );
    let written = &other[8192..8196] == b"priv";
    // SAFETY: pages of our own private mapping.
    unsafe { libc::madvise(other.as_mut_ptr().cast(), 65536, libc::MADV_DONTNEED) };
    c.check(
        "private memfd mapping without a descriptor: its page written, then its memfd's contents",
        written && &other[4096..4100] == b"orig" && other[8192] == 0,
        format!("{written} {:?}", &other[4096..4100]),
    );
    c.finish();
}

/// Shared anonymous memory opened as a file through /proc/self/map_files (which takes root or
/// CAP_CHECKPOINT_RESTORE), as CRIU's shmemfd and shmemfd-priv do: one object held by its
/// descriptor alone (its mapping gone; O_APPEND, an offset), and one mapped shared, mapped again
/// through its descriptor privately at an offset (one page written there) and shared at another.
/// After restore: the descriptor's contents, flags and offset; the private mapping's written page
/// its own and its others the object's, a write to the object after restore seen through it too;
/// the shared mappings still one object.
fn opened_through_map_files() {
    const P: usize = 4096;
    let open_map_file = |p: *mut u8, len: usize| {
        let path = format!(
            "/proc/self/map_files/{:x}-{:x}",
            p as usize,
            p as usize + len
        );
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        OwnedFd::from(f)
    };
    let alone = map(-1, P, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    let held = open_map_file(alone, P);
    // SAFETY: our own mapping and descriptor.
    unsafe {
        assert_eq!(libc::munmap(alone.cast(), P), 0);
        assert_eq!(libc::ftruncate(held.as_raw_fd(), 0), 0);
        assert_eq!(
            libc::fcntl(held.as_raw_fd(), libc::F_SETFL, libc::O_APPEND),
            0
        );
        assert_eq!(
            libc::write(held.as_raw_fd(), b"hello".as_ptr().cast(), 5),
            5
        );
        assert_eq!(libc::lseek(held.as_raw_fd(), 3, libc::SEEK_SET), 3);
    }
    let shared = view(
        map(-1, 5 * P, libc::MAP_SHARED | libc::MAP_ANONYMOUS),
        5 * P,
    );
    for i in 0..3 {
        shared[i * P] = 1 + i as u8;
    }
    let fd = open_map_file(shared.as_mut_ptr(), 5 * P);
    let at = |off: usize, flags: i32| {
        // SAFETY: a fresh mapping of our own descriptor, at an address the kernel chooses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * P,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                off as i64,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        view(p.cast(), 4 * P)
    };
    let private = at(P, libc::MAP_PRIVATE);
    let again = at(2 * P, libc::MAP_SHARED);
    private[P] = 22;

    common::restored();
    let mut c = common::Checks::default();
    let mut buf = [0u8; 8];
    // SAFETY: our own descriptor and buffer.
    let (fl, pos, n) = unsafe {
        (
            libc::fcntl(held.as_raw_fd(), libc::F_GETFL),
            libc::lseek(held.as_raw_fd(), 0, libc::SEEK_CUR),
            libc::pread(held.as_raw_fd(), buf.as_mut_ptr().cast(), 8, 0),
        )
    };
    c.check(
        "shared anonymous memory held as a file: contents, O_APPEND and offset",
        n == 5 && &buf[..5] == b"hello" && fl & libc::O_APPEND != 0 && pos == 3,
        format!("{n} {:?} {fl:#o} {pos}", &buf[..5]),
    );
    let before = (private[0], private[P], again[0]);
    again[0] = 33;
    shared[3 * P] = 44;
    c.check(
        "shared anonymous memory mapped privately through its descriptor: written page its own, the others the object's",
        before == (2, 22, 3) && private[2 * P] == 44 && shared[2 * P] == 33,
        format!("{before:?} {} {}", private[2 * P], shared[2 * P]),
    );
    c.finish();
}
