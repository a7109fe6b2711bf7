//! Files deleted while open or mapped (a runtime's unlinked temporary files, JIT dumps): their
//! contents are kept in the image, up to a size the application chooses, and at restore they
//! are created again, unlinked, in the directory they were in.
//!
//! Such a file is a shared object like a memfd (see [`super::shmem`]): the checkpoint handler
//! copies it while every thread is parked, its descriptors are descriptors of the object, and its
//! mappings, shared or private, map the object. Only where it is created again differs.
//!
//! One kind of file that still has its name is kept the same way: a runtime's per-process file,
//! named by the PID, that the runtime deletes when it exits, mapped shared and written all the
//! time (HotSpot's performance data, `/tmp/hsperfdata_<user>/<pid>`; Mono's shared area,
//! `/dev/shm/mono.<pid>`). Taken from the file system at restore it would be gone (the first
//! life's exit, or an earlier restore's, deleted it) or another life's; so its contents are kept
//! in the image and it is created again under its name, where tools such as `jps` and `jstat`
//! look for it.

use serde::{Deserialize, Serialize};

/// Where a deleted file was, and its permission bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedFile {
    /// Its path when it was deleted (what /proc shows, without " (deleted)").
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Access and modification times (ns since the epoch), set again after its contents.
    pub atime_ns: i64,
    pub mtime_ns: i64,
    /// Not deleted but the process's own PID-named file ([`perf_data`]): created again under its
    /// name, and left there.
    pub keep_name: bool,
}

impl DeletedFile {
    /// What a descriptor's metadata says about the file deleted at `path`.
    pub(crate) fn of(path: &str, meta: &std::fs::Metadata) -> DeletedFile {
        use std::os::unix::fs::MetadataExt;
        DeletedFile {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            atime_ns: meta
                .atime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.atime_nsec()),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            keep_name: false,
        }
    }

    /// Owner and times, once the contents are in (writing them changes the times).
    pub fn finish(&self, f: &OwnedFd) -> Result<(), String> {
        let file = std::fs::File::from(f.try_clone().map_err(|e| e.to_string())?);
        let meta = file.metadata().map_err(|e| e.to_string())?;
        use std::os::unix::fs::MetadataExt;
        if (meta.uid(), meta.gid()) != (self.uid, self.gid) {
            std::os::unix::fs::fchown(&file, Some(self.uid), Some(self.gid)).map_err(|e| {
                format!(
                    "deleted file {}: cannot give it its owner {}:{} again: {e}",
                    self.path, self.uid, self.gid
                )
            })?;
            // chown clears set-id bits: the mode again.
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| format!("deleted file {}: {e}", self.path))?;
        }
        let t = |ns: i64| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
        let times = std::fs::FileTimes::new()
            .set_accessed(t(self.atime_ns))
            .set_modified(t(self.mtime_ns));
        file.set_times(times)
            .map_err(|e| format!("deleted file {}: cannot set its times: {e}", self.path))?;
        Ok(())
    }
}

/// Kernel-internal files that show as deleted paths: why each is refused (what to do instead).
pub(crate) fn kernel_internal(name: &str) -> Option<&'static str> {
    match name.strip_suffix(" (deleted)")? {
        // (A mapping of one is kept, see super::aio; a descriptor of its file is refused.)
        "/[aio]" => Some("an AIO ring's file opened (through /proc/PID/map_files) is not supported: close it before the checkpoint"),
        "/anon_hugepage" => Some("MAP_HUGETLB memory is not supported: map it without MAP_HUGETLB (transparent huge pages are restored; a JVM started with -XX:+UseLargePages: drop the flag, or use -XX:+UseTransparentHugePages)"),
        "/secretmem" => Some("memfd_secret memory cannot be read by anyone, thaw included: create it again after restore"),
        _ => None,
    }
}

/// The name a file unlinked at `shown` (as /proc shows it, "PATH (deleted)") still has in the
/// same directory, found by its inode number: glibc's `sem_open` creates a named semaphore's
/// file under a temporary name, links it as `sem.NAME` and unlinks the temporary one, so /proc
/// shows `/dev/shm/sem.XXXXXX (deleted)` for a file that is at `/dev/shm/sem.NAME` (Python's
/// multiprocessing locks and queues, with its spawn and forkserver start methods). Such a file
/// is then restored as any file by that name is. `None` for one with no other name there (or
/// a directory too large to look through).
///
/// The device is compared too: inode numbers repeat across file systems (a System V segment
/// shows as `/SYSV00000000 (deleted)` with its id as its inode, and `/.dockerenv` may have
/// inode 12: taken for that file, the segment would have been restored as a mapping of it).
pub fn live_name(shown: &str, dev: u64, inode: u64) -> Option<String> {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    const LOOK_AT_MOST: usize = 10_000;
    let path = deleted_path(shown)?;
    let dir = std::path::Path::new(path).parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .take(LOOK_AT_MOST)
        .flatten()
        .find(|e| {
            e.ino() == inode
                && std::fs::symlink_metadata(e.path()).is_ok_and(|m| {
                    m.is_file() && m.ino() == inode && m.dev() == dev && m.nlink() > 0
                })
        })
        .map(|e| e.path().to_string_lossy().into_owned())
}

/// Why an unlinked file that still has other names is refused: the image could not keep it as
/// the same file, and its other names are unknown.
pub(crate) fn still_linked(path: &str, links: u64) -> Option<String> {
    (links > 0).then(|| {
        format!(
            "{path} was unlinked but the file still has {links} other name(s), none of them in its directory, which thaw cannot find: open it by one of them"
        )
    })
}

/// The largest deleted file kept by default: larger ones are refused by name.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Environment variable that sets the limit for every checkpoint of the process (bytes; the
/// Rust API's `Checkpoint::max_deleted_file` overrides it).
pub const MAX_ENV: &str = "THAW_MAX_DELETED_FILE";

/// The limit from [`MAX_ENV`], if it is set and a number.
pub(crate) fn max_from_env() -> Option<u64> {
    std::env::var(MAX_ENV).ok()?.trim().parse().ok()
}

/// The object id of a deleted file: distinct from memfd and shared anonymous objects (inode
/// numbers of the kernel's internal file system). The device is not part of it: /proc's maps name
/// a file system's superblock, fstat a btrfs subvolume's own device, and the descriptor and the
/// mapping of one file must meet.
pub fn object_id(_dev: u64, ino: u64) -> u64 {
    ino | 1 << 63
}

/// Whether `target` (a /proc link) names a deleted regular file; its path if so.
pub(crate) fn deleted_path(target: &str) -> Option<&str> {
    // Kernel objects show so too: AIO rings ("/[aio]"), shared anonymous huge pages
    // ("/anon_hugepage"), GPU buffers ("/drm mm object", dma-bufs).
    const KERNEL: [&str; 6] = [
        "/memfd:",
        "/dev/zero",
        "/[",
        "/anon_hugepage",
        "/drm",
        "/dmabuf",
    ];
    target
        .strip_suffix(" (deleted)")
        .filter(|p| p.starts_with('/') && !KERNEL.iter().any(|k| p.starts_with(k)))
}

/// Why the deleted file open at `fd` (at `path`) is not kept, if it is not: more data than
/// `max` bytes. Its data, not its size: a sparse file's holes are not copied (a 1 GiB file
/// with 4 KiB written is an image of 4 KiB).
pub(crate) fn refusal(path: &str, fd: i32, max: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    let data = m.len().min(m.blocks().saturating_mul(512));
    (data > max).then(|| {
        format!(
            "{path} was deleted and holds {data} bytes of data, more than the {max} kept in an image (raise the limit: {MAX_ENV}=BYTES in the environment of the process, or Checkpoint::max_deleted_file in Rust)"
        )
    })
}

/// The directory HotSpot keeps its performance data in (`os::get_temp_directory()`, fixed on
/// Linux whatever `java.io.tmpdir` says).
const PERF_DATA_ROOT: &str = "/tmp/hsperfdata_";

/// Mono's shared area (`shm_open("/mono.<pid>")`), named after this prefix and the PID.
const MONO_SHARED_AREA: &str = "/dev/shm/mono.";

/// Whether `path` is a per-process runtime file of the process `pid` (see the module's comment):
/// `/tmp/hsperfdata_<user>/<pid>` or `/dev/shm/mono.<pid>`.
pub fn is_perf_data(path: &str, pid: i32) -> bool {
    let hotspot = path
        .strip_prefix(PERF_DATA_ROOT)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(user, name)| {
            !user.is_empty()
                && !user.contains('/')
                && user != "."
                && user != ".."
                && name == pid.to_string()
        });
    hotspot || path.strip_prefix(MONO_SHARED_AREA) == Some(&pid.to_string())
}

/// The PID a per-process runtime file's name ends with.
fn pid_in_name(name: &str) -> &str {
    name.trim_start_matches(|c: char| !c.is_ascii_digit())
}

/// The path of the file a shared mapping named `name` maps, if it is this process's performance
/// data file (kept in the image, see the module's comment).
pub(crate) fn perf_data(name: &str) -> Option<&str> {
    is_perf_data(name, crate::sys::getpid()).then_some(name)
}

use std::os::fd::OwnedFd;

/// Creates a kept-name file again under its name, empty, owner-only, if the name can be had: its
/// directory (created if missing, as the runtime would) is a real directory owned by the file's
/// owner that nobody else may write, and the name is free or names a file of a process that no
/// longer exists (the first life, which deleted it at exit or died before). All of it relative to
/// the directory opened without following links, so a link planted there cannot redirect it.
/// `None`: the name belongs to someone else now (another process with that PID, seen from the
/// launcher's PID namespace) or the directory cannot be trusted.
fn create_named(file: &DeletedFile) -> Result<Option<OwnedFd>, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let path = std::path::Path::new(&file.path);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let made = std::fs::DirBuilder::new().mode(0o755).create(dir).is_ok();
    let dirfd = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    if made {
        // Ours, just made: the runtime's owner gets it (fails harmlessly when not root).
        let _ = std::os::unix::fs::chown(
            format!("/proc/self/fd/{}", dirfd.as_raw_fd()),
            Some(file.uid),
            Some(file.gid),
        );
    }
    let meta = dirfd
        .metadata()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // The owner's own directory that nobody else may write, or the system's shared one (root's,
    // sticky: /dev/shm), where nobody else can remove or rename what the owner has there.
    let own = meta.uid() == file.uid && meta.mode() & 0o022 == 0;
    let sticky = meta.uid() == 0 && meta.mode() & 0o1000 != 0;
    if !meta.is_dir() || !(own || sticky) {
        return Ok(None);
    }
    let at = std::path::Path::new("/proc/self/fd")
        .join(dirfd.as_raw_fd().to_string())
        .join(name);
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&at)
    };
    // Made again, it is locked (flock, kept by the process's mapping of it): a restore in
    // another PID namespace, which cannot see this one's PID, tells a live file from a stale one.
    let mode = |f: std::fs::File| -> Result<Option<OwnedFd>, String> {
        let _ = crate::sys::flock_nb(f.as_raw_fd(), true);
        // The runtime's owner's, as it made it (fails harmlessly when not root): in a sticky
        // directory only the owner may delete it, as the runtime does at its exit.
        let _ = std::os::unix::fs::fchown(&f, Some(file.uid), Some(file.gid));
        f.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(|e| format!("{}: cannot set its mode: {e}", file.path))?;
        Ok(Some(f.into()))
    };
    let exists = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AlreadyExists;
    match open() {
        Ok(f) => mode(f),
        Err(e) if exists(&e) => {
            let name = name.to_string_lossy();
            if std::path::Path::new("/proc")
                .join(pid_in_name(&name))
                .exists()
            {
                return Ok(None);
            }
            // Locked: another restore's live process has it. Else locked here while it is
            // removed (another restore probing it meanwhile leaves it alone), if it is still
            // the file at that name.
            let Ok(stale) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&at)
            else {
                return Ok(None);
            };
            if crate::sys::flock_nb(stale.as_raw_fd(), true).is_err() {
                return Ok(None);
            }
            let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
                a.dev() == b.dev() && a.ino() == b.ino()
            };
            // (And the owner's: in a shared directory, another user's file is not replaced.)
            match (stale.metadata(), std::fs::symlink_metadata(&at)) {
                (Ok(a), Ok(b)) if same(&a, &b) && a.uid() == file.uid => {}
                _ => return Ok(None),
            }
            match std::fs::remove_file(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: cannot replace the stale file: {e}", file.path)),
            }
            match open() {
                Ok(f) => mode(f),
                // Another restore made it meanwhile: it is that one's.
                Err(e) if exists(&e) => Ok(None),
                Err(e) => Err(format!("{}: cannot create it again: {e}", file.path)),
            }
        }
        Err(e) => Err(format!("{}: cannot create it again: {e}", file.path)),
    }
}

/// Creates the file again, empty, unlinked, in the directory it was in, with its permission
/// bits. It is created under its old name (exclusively, owner-only) and unlinked at once, so
/// that /proc shows the same "PATH (deleted)"; if something else has that name by now, it is
/// made unnamed (O_TMPFILE) in that directory instead, as is a file that was made unnamed.
pub fn create(file: &DeletedFile) -> Result<OwnedFd, String> {
    if file.keep_name {
        // Where the name cannot be had, an unnamed file: the process keeps its memory shared,
        // tools do not find it.
        return match create_named(file)? {
            Some(f) => Ok(f),
            None => crate::sys::memfd_create(
                if file.path.starts_with(PERF_DATA_ROOT) {
                    "hsperfdata"
                } else {
                    file.path.rsplit('/').next().unwrap_or_default()
                },
                false,
            )
            .map_err(|e| format!("{}: cannot create it again: {e}", file.path)),
        };
    }
    let path = std::path::Path::new(&file.path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("deleted file {}: no directory", file.path))?;
    let open = |at: &std::path::Path, flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .mode(0o600)
            .open(at)
    };
    // A file made unnamed (O_TMPFILE; /proc shows DIR/#INODE) is made unnamed again, and so can
    // still be given a name with linkat, as a program writing a file to publish it expects.
    let unnamed = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('#'))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let named = if unnamed {
        Err(std::io::Error::from_raw_os_error(libc::EEXIST))
    } else {
        open(path, libc::O_CREAT | libc::O_EXCL)
    };
    let f = match named {
        Ok(f) => {
            std::fs::remove_file(path)
                .map_err(|e| format!("deleted file {}: cannot unlink it again: {e}", file.path))?;
            f
        }
        Err(_) => match open(dir, libc::O_TMPFILE) {
            Ok(f) => f,
            // Its directory was removed too (a temporary directory cleaned up while the file was
            // open or mapped: an extracted native library, a TemporaryFile in it): nothing can
            // be made there, and nothing could be given a name there either. An unnamed file
            // keeps its contents, offset, locks and shared pages the same; only /proc names it
            // otherwise.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                std::fs::File::from(
                    crate::sys::memfd_create(
                        path.file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or_default(),
                        false,
                    )
                    .map_err(|e| {
                        format!("deleted file {}: cannot create it again: {e}", file.path)
                    })?,
                )
            }
            Err(e) => {
                return Err(format!(
                    "deleted file {}: cannot create it again in {}: {e}",
                    file.path,
                    dir.display()
                ))
            }
        },
    };
    // The mode as it was, whatever the umask.
    f.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))
        .map_err(|e| format!("deleted file {}: cannot set its mode: {e}", file.path))?;
    Ok(OwnedFd::from(f))
}

use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

#[cfg(test)]
mod tests {
    use super::*;

    /// A name a mapping shows as deleted is taken for a live file beside it only where the
    /// device matches too: a System V segment (`/SYSV00000000 (deleted)`, its id as its inode)
    /// whose id is the inode number of a file in / is no mapping of that file.
    #[test]
    fn a_live_name_is_a_file_of_the_same_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sem.x");
        std::fs::write(&file, b"x").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let shown = format!("{}/tmp123 (deleted)", dir.path().display());
        assert_eq!(
            live_name(&shown, meta.dev(), meta.ino()),
            Some(file.to_string_lossy().into_owned())
        );
        assert_eq!(live_name(&shown, libc::makedev(0, 1), meta.ino()), None);
    }

    #[test]
    fn ids_differ_from_inode_numbers_and_across_devices() {
        assert_eq!(object_id(1, 5), object_id(2, 5));
        assert_ne!(object_id(1, 5), 5);
        assert!(object_id(0, 5) >= 1 << 63);
    }

    #[test]
    fn perf_data_paths_are_the_process_own_only() {
        assert!(is_perf_data("/tmp/hsperfdata_root/42", 42));
        assert!(is_perf_data("/tmp/hsperfdata_app user/42", 42));
        assert!(is_perf_data("/dev/shm/mono.42", 42));
        for (path, pid) in [
            ("/dev/shm/mono.43", 42),
            ("/dev/shm/mono.042", 42),
            ("/dev/shm/mono.42/x", 42),
            ("/tmp/mono.42", 42),
            ("/tmp/hsperfdata_root/43", 42),
            ("/tmp/hsperfdata_root/042", 42),
            ("/tmp/hsperfdata_/42", 42),
            ("/tmp/hsperfdata_../42", 42),
            ("/tmp/hsperfdata_a/b/42", 42),
            ("/etc/hsperfdata_root/42", 42),
            ("/tmp/hsperfdata_root/42/", 42),
        ] {
            assert!(!is_perf_data(path, pid), "{path}");
        }
    }

    #[test]
    fn deleted_paths() {
        assert_eq!(deleted_path("/tmp/x (deleted)"), Some("/tmp/x"));
        assert_eq!(deleted_path("/memfd:a (deleted)"), None);
        assert_eq!(deleted_path("/dev/zero (deleted)"), None);
        assert_eq!(deleted_path("/tmp/x"), None);
        assert_eq!(deleted_path("pipe:[3] (deleted)"), None);
    }

    #[test]
    fn created_again_unlinked_with_its_name_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let file = DeletedFile {
            path: path.to_str().unwrap().to_owned(),
            mode: 0o640,
            ..Default::default()
        };
        let fd = create(&file).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(link.to_str().unwrap(), format!("{} (deleted)", file.path));
        assert!(!path.exists());
        let meta = std::fs::File::from(fd).metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    }
}
