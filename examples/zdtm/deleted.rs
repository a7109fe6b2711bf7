//! Files deleted while open or mapped, as runtimes keep them (unlinked temporary files, JIT
//! dumps): after restore each descriptor still reads the file's contents at its offset, /proc
//! shows it as "PATH (deleted)", a descriptor and a separate open of one file still share it,
//! a shared mapping still shares its pages with the file, a private mapping keeps its own
//! written page over the file's contents, and a flock held on one is held again.
//!
//! `EXTRA` is a directory for the files. With `big` as a further argument the file is larger than
//! the limit set in THAW_MAX_DELETED_FILE: the checkpoint is refused naming it, and the program
//! goes on.

#[path = "common.rs"]
mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};

const LEN: usize = 200 * 1024;

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 4096) as u8
}

fn map(f: &std::fs::File, flags: i32) -> *mut u8 {
    // SAFETY: maps LEN bytes of a file of at least that size where the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

/// A private, read-only and executable mapping of LEN bytes of a file, as a loaded library's.
fn map_read(f: &std::fs::File) -> *const u8 {
    // SAFETY: maps LEN bytes of a file of at least that size where the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn main() {
    let (_, _, extra) = common::argv();
    let dir = std::path::PathBuf::from(&extra[0]);
    let data: Vec<u8> = (0..LEN).map(pattern).collect();
    let make = |name: &str| {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&data).unwrap();
        (f, path)
    };
    if extra.iter().any(|a| a == "big") {
        let (_f, path) = make("big");
        std::fs::remove_file(&path).unwrap();
        let (image, _, _) = common::argv();
        match thaw::Checkpoint::to(&image).save() {
            Ok(_) => println!("unexpectedly saved"),
            Err(e) => println!("error: {e}"),
        }
        std::process::exit(0);
    }
    // An open file at an offset, with a second, separate open of it and a flock.
    let (mut a, a_path) = make("a.tmp");
    a.seek(SeekFrom::Start(1234)).unwrap();
    let a2 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a_path)
        .unwrap();
    // SAFETY: an exclusive flock on our own descriptor.
    let r = unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "flock");
    std::fs::remove_file(&a_path).unwrap();
    // A shared mapping of a deleted file whose descriptor is closed.
    let (b, b_path) = make("b.tmp");
    let shared = map(&b, libc::MAP_SHARED);
    drop(b);
    std::fs::remove_file(&b_path).unwrap();
    // A private mapping with one written page, its descriptor kept.
    let (c, c_path) = make("c.tmp");
    let private = map(&c, libc::MAP_PRIVATE);
    // SAFETY: inside our own mappings.
    unsafe {
        *private.add(4096) = 0xee;
        *shared.add(8192) = 0xdd;
    }
    std::fs::remove_file(&c_path).unwrap();
    // A working directory that was deleted.
    let cwd = dir.join("gone-cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::env::set_current_dir(&cwd).unwrap();
    std::fs::remove_dir(&cwd).unwrap();

    // A directory removed while open.
    let gone_dir = dir.join("gone-dir");
    std::fs::create_dir(&gone_dir).unwrap();
    std::fs::set_permissions(&gone_dir, std::fs::Permissions::from_mode(0o751)).unwrap();
    let gone_dir_fd = std::fs::File::open(&gone_dir).unwrap();
    if extra.iter().any(|a| a == "dir-twice") {
        // Opened twice: made again once per open, it would come back as two directories.
        // Held open until the process exits (refusal does not return).
        let _again = std::fs::File::open(&gone_dir).unwrap();
        common::refusal(|| std::fs::remove_dir(&gone_dir).unwrap());
    }
    std::fs::remove_dir(&gone_dir).unwrap();

    // A file open and mapped in a directory removed with it (a temporary directory cleaned up
    // after an extracted library was loaded): nothing can be made where it was.
    let gone_parent = dir.join("gone-parent");
    std::fs::create_dir(&gone_parent).unwrap();
    let in_gone = gone_parent.join("inside.so");
    std::fs::write(&in_gone, &data).unwrap();
    let mut orphan = std::fs::File::open(&in_gone).unwrap();
    orphan.seek(SeekFrom::Start(99)).unwrap();
    let orphan_map = map_read(&orphan);
    std::fs::remove_file(&in_gone).unwrap();
    std::fs::remove_dir(&gone_parent).unwrap();

    // An unnamed file (O_TMPFILE), written, to be given a name with linkat after restore.
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
        .unwrap();
    (&unnamed).write_all(b"published").unwrap();
    (&unnamed).seek(SeekFrom::Start(0)).unwrap();

    let ns_mode = common::checkpoint().iter().any(|a| a == "ns-mode");
    let mut ck = common::Checks::default();
    let shown = std::fs::read_link(format!("/proc/self/fd/{}", gone_dir_fd.as_raw_fd())).unwrap();
    let meta = gone_dir_fd.metadata().unwrap();
    ck.check(
        "a directory removed while open comes back open, removed, with its mode",
        shown.to_string_lossy() == format!("{} (deleted)", gone_dir.display())
            && meta.is_dir()
            && meta.permissions().mode() & 0o7777 == 0o751
            && !gone_dir.exists(),
        format!("{} {:o}", shown.display(), meta.permissions().mode()),
    );
    let published = dir.join("published");
    let _ = std::fs::remove_file(&published);
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", unnamed.as_raw_fd())).unwrap();
    let to = std::ffi::CString::new(published.to_str().unwrap()).unwrap();
    // SAFETY: two NUL-terminated paths.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    } == 0;
    let err = std::io::Error::last_os_error();
    let mut contents = Vec::new();
    (&unnamed).read_to_end(&mut contents).unwrap();
    ck.check(
        "an unnamed (O_TMPFILE) file keeps its contents and can be given a name",
        contents == b"published"
            && if ns_mode {
                !linked && err.raw_os_error() == Some(libc::EXDEV)
            } else {
                linked && std::fs::read(&published).is_ok_and(|b| b == b"published")
            },
        format!("linked {linked}: {err}"),
    );
    let _ = std::fs::remove_file(&published);
    let mut orphan_rest = Vec::new();
    orphan.read_to_end(&mut orphan_rest).unwrap();
    // SAFETY: reads inside our own mapping of LEN bytes.
    let orphan_mapped = unsafe { (0..LEN).all(|i| *orphan_map.add(i) == pattern(i)) };
    ck.check(
        "a file deleted with its directory keeps its contents, offset and mapping",
        orphan_rest == data[99..] && orphan_mapped && !gone_parent.exists(),
        format!("{} bytes, mapping {orphan_mapped}", orphan_rest.len()),
    );
    let name = std::fs::read_link(format!("/proc/self/fd/{}", a.as_raw_fd())).unwrap();
    ck.check(
        "deleted file shown as deleted, at its path",
        name.to_string_lossy() == format!("{} (deleted)", a_path.display()),
        name.display(),
    );
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    ck.check(
        "contents from the offset",
        rest == data[1234..],
        format!("{} bytes", rest.len()),
    );
    a.write_all_at(b"hello", 10).unwrap();
    let mut five = [0u8; 5];
    a2.read_exact_at(&mut five, 10).unwrap();
    ck.check("a separate open shares the file", &five == b"hello", "");
    let probe = std::fs::File::open(format!("/proc/self/fd/{}", a.as_raw_fd())).unwrap();
    // SAFETY: a non-blocking flock attempt on our own new description.
    let taken = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    ck.check("flock held", !taken, "");
    // SAFETY: reads inside our own mappings.
    let (s_ok, p_ok) = unsafe {
        (
            (0..LEN).all(|i| *shared.add(i) == if i == 8192 { 0xdd } else { pattern(i) }),
            (0..LEN).all(|i| *private.add(i) == if i == 4096 { 0xee } else { pattern(i) }),
        )
    };
    ck.check("shared mapping contents", s_ok, "");
    ck.check("private mapping: its page over the file's", p_ok, "");
    // The shared mapping is still the file's: reopen it through the mapping and look.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", shared as usize)))
        .unwrap_or("");
    ck.check(
        "shared mapping names the deleted file",
        line.ends_with(&format!("{} (deleted)", b_path.display())),
        line,
    );
    c.write_all_at(&[0x11], 100).unwrap();
    // SAFETY: inside our own mapping; a page not written privately shows the file.
    let seen = unsafe { *private.add(100) };
    ck.check(
        "private mapping still maps the file",
        seen == 0x11,
        format!("{seen:#x}"),
    );
    let now = std::fs::read_link("/proc/self/cwd").unwrap();
    ck.check(
        "the deleted working directory, deleted again",
        now.to_string_lossy() == format!("{} (deleted)", cwd.display()) && !cwd.exists(),
        now.display(),
    );
    ck.finish();
}
