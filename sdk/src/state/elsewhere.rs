//! Objects a restore makes again as the process's own that another process holds too: shared
//! memory (memfds, shared anonymous memory, files deleted while open) mapped or held by
//! descriptor, and the kernel objects a descriptor stands for alone (an eventfd's count, a
//! timerfd, an epoll or inotify instance). Restored, each would be a copy, no longer shared with
//! that process: its writes would no longer reach the restored one, nor the other way round.
//! Such a checkpoint is refused, naming the other process. (Pipes and sockets have their own
//! walk, [`crate::procfs::Holders`]; regular files are reopened by name and stay shared.)

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Whether the memfd mapped at `start..end` is sealed against writes (F_SEAL_WRITE: nobody can
/// change it, so a copy of it is the same object to whoever reads it). `false` where it cannot
/// be told (/proc/self/map_files needs CAP_CHECKPOINT_RESTORE).
fn write_sealed(start: u64, end: u64) -> bool {
    std::fs::File::open(format!("/proc/self/map_files/{start:x}-{end:x}"))
        .is_ok_and(|f| fd_write_sealed(f.as_raw_fd()))
}

/// As [`write_sealed`], of a descriptor.
fn fd_write_sealed(fd: i32) -> bool {
    crate::sys::fcntl(fd, libc::F_GET_SEALS, 0)
        .is_ok_and(|s| s & i64::from(libc::F_SEAL_WRITE) != 0)
}

/// The kernel objects without a file of their own whose state a restore makes again as the
/// process's own, by the link /proc shows for them (signalfds are left out: each reader reads
/// its own signals, a copy behaves alike).
const OBJECTS: [(&str, &str); 4] = [
    ("anon_inode:[eventfd]", "an eventfd"),
    ("anon_inode:[timerfd]", "a timerfd"),
    ("anon_inode:[eventpoll]", "an epoll instance"),
    ("anon_inode:inotify", "an inotify instance"),
];

/// One thing of the process's another process may hold too.
struct Ours {
    /// Shared memory or a deleted file, by (device, inode) and its name as /proc shows it; or
    /// (`None`) a kernel object, by the process's descriptor of it and its link.
    file: Option<(u64, u64)>,
    link: String,
    fd: i32,
    /// What the item names: the mapping or the descriptor.
    describe: String,
    /// "shared memory", "a file deleted while open", "an eventfd" and the like.
    kind: &'static str,
}

/// Shared memory the process maps or holds by descriptor (memfds, shared anonymous memory,
/// files deleted while open) and kernel objects it holds (see [`OBJECTS`]) that another process
/// maps or holds open too. One item per object, naming the other process. HotSpot's performance
/// data file is left out (tools map it read-only and find it again by name), and so are the
/// standard descriptors (whoever started the process holds them; they are the caller's at
/// restore). Processes that cannot be seen (another user's, behind `hidepid`) are not looked at.
/// `left_out`: children left out of the image, which a restored process sees ended (what they
/// share with it is shared with nobody then).
pub(crate) fn shared_elsewhere(maps: &[crate::procfs::MapEntry], left_out: &[i32]) -> Vec<String> {
    let mut ours: Vec<Ours> = Vec::new();
    // A memfd mapped privately too: what another process writes into it shows through the
    // pages the mapping has not written itself.
    for m in maps
        .iter()
        .filter(|m| (m.shared() || m.name.starts_with("/memfd:")) && m.inode != 0)
    {
        let name = m.name.as_str();
        let object = name.starts_with("/memfd:")
            || name.starts_with("/dev/zero")
            || (super::deleted::deleted_path(name).is_some()
                && super::deleted::perf_data(name).is_none());
        let dev = libc::makedev(m.dev_major, m.dev_minor);
        if object
            && !ours.iter().any(|o| o.file == Some((dev, m.inode)))
            && !write_sealed(m.start, m.end)
        {
            ours.push(Ours {
                file: Some((dev, m.inode)),
                link: name.to_owned(),
                fd: -1,
                describe: m.describe(),
                kind: "shared memory",
            });
        }
    }
    // Held by descriptor alone (a memfd passed on to a worker and written with pwrite, a deleted
    // temporary file; an eventfd a worker signals).
    for n in crate::sys::list_dir("/proc/self/fd").unwrap_or_default() {
        let Ok(fd) = n.parse::<i32>() else { continue };
        let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if fd <= 2 {
            continue;
        }
        if let Some(&(_, kind)) = OBJECTS.iter().find(|(l, _)| *l == link) {
            // One item per object, not per descriptor of it.
            if ours.iter().any(|o| {
                o.file.is_none()
                    && o.link == link
                    && crate::sys::same_description(o.fd, fd) == Some(true)
            }) {
                continue;
            }
            ours.push(Ours {
                file: None,
                describe: format!("fd {fd} ({link})"),
                link,
                fd,
                kind,
            });
            continue;
        }
        let memory = link.starts_with("/memfd:")
            || (super::deleted::deleted_path(&link).is_some()
                && super::deleted::perf_data(&link).is_none());
        let Ok(m) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        if memory
            && m.is_file()
            && !ours.iter().any(|o| o.file == Some((m.dev(), m.ino())))
            && !fd_write_sealed(fd)
        {
            ours.push(Ours {
                file: Some((m.dev(), m.ino())),
                describe: format!("fd {fd} ({link})"),
                kind: if link.starts_with("/memfd:") {
                    "shared memory"
                } else {
                    "a file deleted while open"
                },
                link,
                fd,
            });
        }
    }
    if ours.is_empty() {
        return Vec::new();
    }
    let me = crate::sys::getpid().to_string();
    let Ok(procs) = crate::sys::list_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Option<String>> = Vec::new();
    found.resize(ours.len(), None);
    let left_out: Vec<String> = left_out.iter().map(i32::to_string).collect();
    let mapped = ours.iter().any(|o| o.file.is_some());
    for pid in procs
        .iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && **p != me && !left_out.contains(p))
    {
        let comm = || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default()
        };
        let text = mapped
            .then(|| std::fs::read_to_string(format!("/proc/{pid}/maps")).ok())
            .flatten();
        for line in text.as_deref().unwrap_or_default().lines() {
            let mut f = line.split_whitespace().skip(3);
            let (Some(dev), Some(ino)) = (f.next(), f.next()) else {
                continue;
            };
            let Some((major, minor)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(major), Ok(minor), Ok(ino)) = (
                u32::from_str_radix(major, 16),
                u32::from_str_radix(minor, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            let file = Some((libc::makedev(major, minor), ino));
            if let Some(i) = ours.iter().position(|o| o.file == file) {
                found[i].get_or_insert_with(|| format!("maps it: process {pid} ({})", comm()));
            }
        }
        // Held open without a mapping (a memfd passed on, read and written with pread/pwrite):
        // the link's text first, then the file itself (or the open file description).
        let Ok(pid_n) = pid.parse::<i32>() else {
            continue;
        };
        for n in crate::sys::list_dir(&format!("/proc/{pid}/fd")).unwrap_or_default() {
            let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{n}")) else {
                continue;
            };
            let link = link.to_string_lossy();
            for (i, o) in ours.iter().enumerate() {
                if found[i].is_some() || o.link != link {
                    continue;
                }
                let same = match o.file {
                    Some(file) => std::fs::metadata(format!("/proc/{pid}/fd/{n}"))
                        .is_ok_and(|m| (m.dev(), m.ino()) == file),
                    None => n.parse::<i32>().is_ok_and(|theirs| {
                        crate::sys::same_description_in(o.fd, pid_n, theirs) == Some(true)
                    }),
                };
                if same {
                    found[i] = Some(format!("holds it open: process {pid} ({})", comm()));
                }
            }
        }
    }
    ours.iter()
        .zip(found)
        .filter_map(|(o, f)| {
            let f = f?;
            Some(if o.file.is_some() {
                let how = if o.kind == "shared memory" {
                    "share it through a regular file (a shared mapping of a file stays shared), or unmap and close it before the checkpoint"
                } else {
                    "keep it under a name (a regular file is opened again by its name and stays shared), or close it before the checkpoint"
                };
                let and = if o.kind == "shared memory" { "" } else { "," };
                format!(
                    "{}: {}{and} another process {f}; a restore would give this process a copy of its own, no longer shared: {how}",
                    o.describe, o.kind
                )
            } else {
                format!(
                    "{}: {}, another process {f}; a restore would make it again as this process's own, no longer shared with that one (what either does to it would not reach the other): close it in one of them before the checkpoint",
                    o.describe, o.kind
                )
            })
        })
        .collect()
}
