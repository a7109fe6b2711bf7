//! inotify instances and their watches. A watch names an inode, not a path: its path is found
//! from the file handle the kernel shows in fdinfo (`open_by_handle_at`, which needs
//! CAP_DAC_READ_SEARCH) at checkpoint where the process may, or else by the launcher at restore.
//! Each watch is added again by that path, checked to be the same inode, with its mask and its
//! watch descriptor number (the kernel hands out numbers cyclically, so the launcher adds and
//! removes placeholder watches until the number comes up; the placeholders' events are drained
//! before the process runs). Events queued at the snapshot are refused: they would be lost.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inotify {
    pub watches: Vec<Watch>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub wd: i32,
    /// The mask as inotify_add_watch takes it (events and IN_ONESHOT, IN_EXCL_UNLINK, …).
    pub mask: u32,
    /// The watched inode: device (as stat shows it) and number.
    pub dev: u64,
    pub ino: u64,
    pub handle_type: i32,
    pub handle: Vec<u8>,
    /// Its path, where the checkpoint could find it.
    pub path: Option<String>,
    /// How the watched file (and, for a directory watched for its entries' events, its
    /// entries) looked at the checkpoint; `None` where its path was not found then.
    pub stamp: Option<WatchStamp>,
}

/// Times of a watched inode at the checkpoint (nanoseconds since the epoch): a change since
/// that its watch would have reported is refused at restore, as a paused process would have
/// been told of it and a restored one cannot be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStamp {
    /// 0 where the file system records none.
    pub btime_ns: i128,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    /// For a directory watched for events of its entries (IN_MODIFY, IN_ATTRIB,
    /// IN_CLOSE_WRITE): the latest status change time among them.
    pub entries_ctime_ns: i128,
}

/// Events a file's own content change raises, and a directory's (an entry made, removed or
/// moved, which changes the directory's modification time).
const CONTENT: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
const ENTRIES: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
/// Events of a change of status alone (mode, owner, links, a rename of the file itself).
const STATUS: u32 = libc::IN_ATTRIB | libc::IN_MOVE_SELF;
/// Events a directory's watch reports for its entries' content and status.
const OF_ENTRIES: u32 = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_CLOSE_WRITE;

fn nanos(secs: i64, nsecs: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsecs)
}

impl WatchStamp {
    /// Of the file at `path` (watched with `mask`), and whether it is a directory.
    fn of(path: &str, mask: u32) -> Option<(WatchStamp, bool)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let btime_ns = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let entries_ctime_ns = if m.is_dir() && mask & OF_ENTRIES != 0 {
            std::fs::read_dir(path)
                .ok()?
                .flatten()
                .filter_map(|e| e.metadata().ok())
                // A subdirectory's own entries made or removed change its modification and
                // status times together, which no watch of its parent reports. What the watch
                // reports (IN_ATTRIB) shows otherwise: a status change alone (chmod, chown) as
                // a newer status time, times set (`touch`) as its access time with them. (A
                // status change followed by entries made in it is not seen.)
                .filter(|e| {
                    let (c, m) = (
                        nanos(e.ctime(), e.ctime_nsec()),
                        nanos(e.mtime(), e.mtime_nsec()),
                    );
                    !(e.is_dir() && c == m && nanos(e.atime(), e.atime_nsec()) != m)
                })
                .map(|e| nanos(e.ctime(), e.ctime_nsec()))
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        let stamp = WatchStamp {
            btime_ns,
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
            entries_ctime_ns,
        };
        Some((stamp, m.is_dir()))
    }

    /// What about the file, now `now`, a watch with `mask` would have reported since this
    /// stamp was taken, if anything: "replaced" (another file with its inode number) or the
    /// events.
    fn changed(&self, now: &WatchStamp, mask: u32, dir: bool) -> Option<&'static str> {
        if self.btime_ns != 0 && now.btime_ns != 0 && self.btime_ns != now.btime_ns {
            return Some(
                "was replaced since the checkpoint (another file has its inode number now)",
            );
        }
        if now.mtime_ns != self.mtime_ns && mask & if dir { ENTRIES } else { CONTENT } != 0 {
            return Some(if dir {
                "had entries made, removed or moved since the checkpoint (IN_CREATE, IN_DELETE, IN_MOVED_*)"
            } else {
                "was written since the checkpoint (IN_MODIFY)"
            });
        }
        if now.ctime_ns != self.ctime_ns && mask & STATUS != 0 {
            return Some("had its status changed since the checkpoint (IN_ATTRIB)");
        }
        if dir && mask & OF_ENTRIES != 0 && now.entries_ctime_ns > self.entries_ctime_ns {
            return Some(
                "had an entry written or changed since the checkpoint (IN_MODIFY, IN_ATTRIB)",
            );
        }
        None
    }
}

/// The largest watch descriptor number restored (placeholders are added up to it).
pub const MAX_WD: i32 = 1 << 16;

/// The `inotify wd:` lines of an inotify descriptor's fdinfo.
pub(crate) fn dump(info: &str) -> Result<Inotify, String> {
    let mut inotify = parse(info)?;
    // Watches whose handle this process may not open (no CAP_DAC_READ_SEARCH), with why.
    let mut denied = Vec::new();
    for (i, w) in inotify.watches.iter_mut().enumerate() {
        // Any failure but that one (the file is gone: a stale handle) is final.
        w.path = match find_path(w.dev, w.ino, w.handle_type, &w.handle) {
            Ok((o, p)) => {
                w.stamp = WatchStamp::of(&format!("/proc/self/fd/{}", o.as_raw_fd()), w.mask)
                    .map(|(s, _)| s);
                Some(p)
            }
            Err((true, why)) => {
                denied.push((i, why));
                None
            }
            Err((false, why)) => {
                return Err(format!(
                    "inotify watch {} (inode {}): its file cannot be found ({why}); remove the watch before the checkpoint",
                    w.wd, w.ino
                ))
            }
        };
    }
    if denied.is_empty() {
        return Ok(inotify);
    }
    // Looked for under the working directory instead (a watch is of an inode, so any name of
    // it will do). Not found there, no launcher that may restore this process's image as its
    // user could do better.
    let wanted: Vec<(u64, u64)> = denied
        .iter()
        .map(|&(i, _)| (inotify.watches[i].dev, inotify.watches[i].ino))
        .collect();
    let found = search(&wanted);
    for (i, why) in denied {
        let w = &mut inotify.watches[i];
        match found.get(&(w.dev, w.ino)) {
            Some(p) => {
                w.stamp = WatchStamp::of(p, w.mask).map(|(s, _)| s);
                w.path = Some(p.clone());
            }
            None => {
                return Err(format!(
                    "inotify watch {} (inode {}): its path cannot be found: the kernel's handle of it needs CAP_DAC_READ_SEARCH ({why}), and it is not under the working directory; remove the watch before the checkpoint and add it again after restore (Node: close the fs.watch watcher; Java: cancel the WatchKey), or watch something under the working directory",
                    w.wd, w.ino
                ))
            }
        }
    }
    Ok(inotify)
}

/// Entries looked at, at most, by [`search`].
const SEARCH_LIMIT: usize = 20_000;

/// Paths of the inodes `wanted` ((device, inode number)) found under the working directory
/// (breadth first, not following symlinks, into directories of the working directory's file
/// system or of a wanted inode's, up to [`SEARCH_LIMIT`] entries), one walk for all.
fn search(wanted: &[(u64, u64)]) -> std::collections::HashMap<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let mut found = std::collections::HashMap::new();
    let Ok(start) = std::env::current_dir() else {
        return found;
    };
    let Ok(meta) = std::fs::metadata(&start) else {
        return found;
    };
    let home = meta.dev();
    if wanted.contains(&(meta.dev(), meta.ino())) {
        found.insert(
            (meta.dev(), meta.ino()),
            start.to_string_lossy().into_owned(),
        );
    }
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        // (A directory removed since it was queued is skipped.)
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > SEARCH_LIMIT || found.len() == wanted.len() {
                return found;
            }
            let Ok(m) = e.metadata() else {
                continue;
            };
            let key = (m.dev(), m.ino());
            if wanted.contains(&key) {
                found
                    .entry(key)
                    .or_insert_with(|| e.path().to_string_lossy().into_owned());
            }
            if m.is_dir() && (m.dev() == home || wanted.iter().any(|w| w.0 == m.dev())) {
                queue.push_back(e.path());
            }
        }
    }
    found
}

/// Whether fdinfo `info` (read while the threads were parked) shows the watches of `scanned`,
/// the same numbers, masks and inodes: one added, removed or changed after the scan read them
/// makes the checkpoint start again.
pub(crate) fn same_watches(scanned: &Inotify, info: &str) -> bool {
    let key = |w: &Watch| (w.wd, w.mask, w.dev, w.ino);
    let mut now: Vec<_> = match parse(info) {
        Ok(i) => i.watches.iter().map(key).collect(),
        Err(_) => return false,
    };
    let mut then: Vec<_> = scanned.watches.iter().map(key).collect();
    now.sort_unstable();
    then.sort_unstable();
    now == then
}

/// The watches of an inotify descriptor's fdinfo, their paths not yet looked up.
fn parse(info: &str) -> Result<Inotify, String> {
    let mut watches = Vec::new();
    for line in info.lines().filter(|l| l.starts_with("inotify ")) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        };
        let hex = |key: &str| field(key).and_then(|v| u64::from_str_radix(v, 16).ok());
        let (Some(wd), Some(ino), Some(sdev), Some(mask), Some(ty), Some(handle)) = (
            // The kernel prints watch numbers in hex, like everything else on the line.
            field("wd").and_then(|v| i32::from_str_radix(v, 16).ok()),
            hex("ino"),
            hex("sdev"),
            hex("mask"),
            hex("fhandle-type"),
            field("f_handle").and_then(unhex),
        ) else {
            return Err(format!(
                "cannot read an inotify watch (\"{}\"); without the kernel's file handles (CONFIG_FHANDLE) watches cannot be restored",
                line.trim()
            ));
        };
        // The kernel's internal device number: 12 bits of major, 20 of minor.
        let dev = libc::makedev((sdev >> 20) as u32, (sdev & 0xf_ffff) as u32);
        watches.push(Watch {
            wd,
            mask: mask as u32,
            dev,
            ino,
            handle_type: ty as i32,
            handle,
            path: None,
            stamp: None,
        });
    }
    if let Some(w) = watches.iter().find(|w| w.wd > MAX_WD) {
        return Err(format!(
            "inotify watch descriptor {} is above the {MAX_WD} thaw restores: the instance has added that many watches in its life (the kernel numbers them on, removed ones included), which a restore would have to add again to reach that number; make a new instance for the watches before the checkpoint (Node's fs.watch keeps one for the event loop's whole life: such a process can be checkpointed again only once restarted). Left out by a descriptor policy, none of its watches reports anything after restore",
            w.wd
        ));
    }
    watches.sort_by_key(|w| w.wd);
    Ok(Inotify { watches })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The path of the inode behind a file handle, through a mount of its file system: (an O_PATH
/// descriptor of it, its path). Needs CAP_DAC_READ_SEARCH: `Err((true, _))` when that is what
/// is missing.
fn find_path(
    dev: u64,
    ino: u64,
    ty: i32,
    handle: &[u8],
) -> Result<(OwnedFd, String), (bool, String)> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| (false, e.to_string()))?;
    // The mount points of that file system, whole-file-system mounts first.
    let mut mounts: Vec<(bool, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            let (id, root, at) = (w.get(2)?, w.get(3)?, w.get(4)?);
            (*id == format!("{major}:{minor}")).then(|| (*root != "/", unescape(at)))
        })
        .collect();
    mounts.sort();
    let mut last = "its file system is not mounted here".to_owned();
    let mut denied = false;
    for (_, at) in mounts {
        let Ok(mount) = std::fs::File::open(&at) else {
            continue;
        };
        match crate::sys::open_by_handle(mount.as_raw_fd(), ty, handle, libc::O_PATH) {
            Ok(fd) => {
                let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .map_err(|e| (false, e.to_string()))?
                    .to_string_lossy()
                    .into_owned();
                if same_inode(&path, ino) {
                    return Ok((fd, path));
                }
                last = match path.strip_suffix(" (deleted)") {
                    Some(gone) => format!(
                        "{gone} was deleted, and a watch cannot be made again on a file without a name: remove the watch when the file is deleted"
                    ),
                    None => format!("{path} is another file by now"),
                };
            }
            Err(e) => {
                denied |= e.raw_os_error() == Some(libc::EPERM);
                // (A file of a pseudo file system, /proc's, has no handle to open it by.)
                last = format!("open_by_handle_at on {at}: {e}");
            }
        }
    }
    Err((denied, last))
}

/// /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is the watched inode. The device is not compared: /proc names a file system's
/// superblock, stat a btrfs subvolume's own device (the handle decides between file systems).
fn same_inode(path: &str, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.ino() == ino)
}

impl Inotify {
    /// Creates the instance again with every watch at its number (launcher side). `fd` names
    /// the descriptor in messages; `flags` are its status flags.
    pub fn recreate(&self, fd: i32, flags: u32) -> Result<OwnedFd, String> {
        let inotify = crate::sys::inotify_init(libc::IN_NONBLOCK as u32)
            .map_err(|e| format!("fd {fd}: cannot create an inotify instance: {e}"))?;
        let me = inotify.as_raw_fd();
        for w in &self.watches {
            let what = || {
                format!(
                    "fd {fd}: inotify watch {} (inode {} on device {}:{})",
                    w.wd,
                    w.ino,
                    libc::major(w.dev),
                    libc::minor(w.dev)
                )
            };
            // The recorded path if it is still that inode, else the handle (the launcher may
            // have the capability the application lacked).
            let (_hold, path) = match w.path.as_deref().filter(|p| same_inode(p, w.ino)) {
                Some(p) => (None, p.to_owned()),
                None => {
                    let (o, _) = find_path(w.dev, w.ino, w.handle_type, &w.handle).map_err(|(denied, e)| {
                        let was = w.path.as_deref().map(|p| format!(" (it was {p})")).unwrap_or_default();
                        if denied {
                            format!(
                                "{}: cannot find the watched file again{was} ({e}): that takes CAP_DAC_READ_SEARCH; remove the watch before the checkpoint",
                                what()
                            )
                        } else {
                            format!(
                                "{}: the watched file{was} was removed or replaced since the checkpoint ({e}): a paused process would have been told (IN_DELETE_SELF, IN_IGNORED), a restored one cannot be; put it back, or remove the watch before the checkpoint and add it again after restore",
                                what()
                            )
                        }
                    })?;
                    let p = format!("/proc/self/fd/{}", o.as_raw_fd());
                    (Some(o), p)
                }
            };
            // What a paused process would have been told of since, a restored one cannot be.
            if let Some(why) = w
                .stamp
                .zip(WatchStamp::of(&path, w.mask))
                .and_then(|(then, (now, dir))| then.changed(&now, w.mask, dir))
            {
                let was = w.path.as_deref().unwrap_or("the watched file");
                return Err(format!(
                    "{}: {was} {why}: a paused process would have been told, a restored one cannot be; checkpoint again, or remove the watch before the checkpoint and add it again after restore (Node: close the fs.watch watcher and let the event loop run a turn before the checkpoint; Java: cancel the WatchKey)",
                    what()
                ));
            }
            loop {
                let got = crate::sys::inotify_add_watch(me, &path, w.mask)
                    .map_err(|e| format!("{}: cannot add it again: {e}", what()))?;
                if got == w.wd {
                    break;
                }
                if got > w.wd {
                    return Err(format!("{}: the kernel gave number {got}", what()));
                }
                // A placeholder, to advance the kernel's cyclic numbering.
                crate::sys::inotify_rm_watch(me, got).map_err(|e| format!("{}: {e}", what()))?;
            }
        }
        // The placeholders' IN_IGNORED events (and anything that happened meanwhile, before the
        // process existed) are not the process's.
        let mut buf = [0u8; 4096];
        while crate::sys::read_raw(me, &mut buf) > 0 {}
        crate::sys::fcntl(
            me,
            libc::F_SETFL,
            u64::from(flags & libc::O_NONBLOCK as u32),
        )
        .map_err(|e| format!("fd {fd}: {e}"))?;
        Ok(inotify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory watched for its entries' events (Node's `fs.watch(dir)`): entries made in a
    /// subdirectory change the subdirectory's times, which the watch does not report (a restore
    /// was refused for a write under `logs/`); a status change of the subdirectory itself (its
    /// times set, by `touch` or to a given time) is reported (IN_ATTRIB), and refuses it.
    #[test]
    fn entries_made_in_a_subdirectory_are_no_change_of_a_watched_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = dir.path().to_str().unwrap();
        let mask = libc::IN_CREATE | libc::IN_MODIFY | libc::IN_ATTRIB;
        let (then, is_dir) = WatchStamp::of(path, mask).unwrap();
        assert!(is_dir);
        std::fs::write(sub.join("app.log"), b"x").unwrap();
        let (now, _) = WatchStamp::of(path, mask).unwrap();
        assert_eq!(then.changed(&now, mask, true), None);
        // `touch logs`: every time of it now, alike.
        let c = std::ffi::CString::new(sub.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; no times given: now.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
        assert_eq!(r, 0);
        let (now, _) = WatchStamp::of(path, mask).unwrap();
        assert_eq!(
            then.changed(&now, mask, true),
            Some("had an entry written or changed since the checkpoint (IN_MODIFY, IN_ATTRIB)")
        );
        std::fs::File::open(&sub)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
            .unwrap();
        let (now, _) = WatchStamp::of(path, mask).unwrap();
        assert_eq!(
            then.changed(&now, mask, true),
            Some("had an entry written or changed since the checkpoint (IN_MODIFY, IN_ATTRIB)")
        );
    }

    #[test]
    fn fdinfo_lines() {
        // Parsed only: the handle names an inode of the machine this line was taken on.
        let info = "pos:\t0\nflags:\t02004000\ninotify wd:1a ino:9a2088 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:88209a005d366a10\n";
        let i = parse(info).unwrap();
        assert_eq!(i.watches.len(), 1);
        let w = &i.watches[0];
        assert_eq!(
            (w.wd, w.ino, w.mask, w.handle_type),
            (26, 0x9a2088, 0x100, 1)
        );
        assert_eq!(libc::major(w.dev), 254);
        assert_eq!(w.handle, vec![0x88, 0x20, 0x9a, 0, 0x5d, 0x36, 0x6a, 0x10]);
        assert!(parse("inotify wd:1 ino:1 sdev:0 mask:2").is_err());
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
