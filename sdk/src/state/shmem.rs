//! Shared memory objects: memfds and `MAP_SHARED | MAP_ANONYMOUS` memory, each saved once with
//! every mapping of it (at its address and offset) and every descriptor of it.
//!
//! A fork does not freeze shared memory (the frozen child shares it with the running parent), so
//! the checkpoint handler copies each object while every thread is parked: the populated extents
//! of a memfd (SEEK_DATA/SEEK_HOLE, then pread), or the mapped ranges of fd-less shared memory
//! (their pages in memory, as mincore says, on a machine without swap; else all of them, read
//! through /proc/self/mem, which populates the holes). The copies go to buffers marked
//! MADV_DONTFORK, so they are not in the snapshot themselves, faulted in before the threads are
//! stopped. The pause grows with the shared memory in use (see docs/benchmarks.md).
//!
//! At restore the launcher creates one memfd per object (same name, size, contents and the seals
//! that forbid writing or resizing), the restorer maps it at every address it was mapped and
//! then adds F_SEAL_FUTURE_WRITE and F_SEAL_SEAL.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::memory::PageRun;
use super::PayloadRef;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedObject {
    /// The object's inode number: what mappings and descriptors refer to.
    pub id: u64,
    /// The memfd's name (without "/memfd:"); `None` for shared anonymous memory.
    pub memfd: Option<String>,
    pub size: u64,
    /// F_GET_SEALS (memfds with a descriptor only).
    pub seals: u32,
    /// The memfd's permission bits (fchmod changes them; 0: unknown).
    pub mode: u32,
    /// A file deleted while open or mapped: created again (unlinked) where it was, instead of a
    /// memfd.
    pub file: Option<super::deleted::DeletedFile>,
    /// Non-zero pages; `PageRun::addr` is the offset in the object.
    pub pages: Vec<PageRun>,
}

const PAGE: u64 = 4096;
/// Extents one object may have in the copy.
const MAX_EXTENTS: usize = 16384;

/// The populated extents `(offset, end)` of the file open at `fd`, up to `size`, found with
/// SEEK_DATA/SEEK_HOLE; `Err(errno)` ends the walk on a failure. Allocates nothing:
/// async-signal-safe.
struct DataExtents {
    fd: i32,
    at: u64,
    size: u64,
}

impl Iterator for DataExtents {
    type Item = Result<(u64, u64), i64>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.size {
            return None;
        }
        let data = crate::sys::lseek_raw(self.fd, self.at, libc::SEEK_DATA);
        if data < 0 {
            self.at = self.size;
            // ENXIO: no data after `at`.
            return (data != -(libc::ENXIO as i64)).then_some(Err(data));
        }
        let data = data as u64;
        let hole = crate::sys::lseek_raw(self.fd, data, libc::SEEK_HOLE);
        let hole = if hole < 0 {
            self.size
        } else {
            (hole as u64).min(self.size)
        };
        if data >= hole {
            self.at = self.size;
            return None;
        }
        self.at = hole;
        Some(Ok((data, hole)))
    }
}

/// One object to copy in the checkpoint handler.
#[derive(Debug)]
pub struct ShmCopy {
    pub id: u64,
    pub memfd: Option<String>,
    pub file: Option<super::deleted::DeletedFile>,
    /// Our own open file description of the object (reopened through /proc/self/fd of one of
    /// the process's descriptors of it), for SEEK_DATA/SEEK_HOLE and pread: seeking the
    /// application's descriptor would move its offset. `None` for an object the process holds no
    /// descriptor of: its `ranges` are read from /proc/self/mem.
    own: Option<super::locks::Opened>,
    /// The object's size as the handler saw it (fstat), to detect growth since `size`.
    seen_size: AtomicU64,
    /// (offset in the object, address, length) of each mapping.
    pub ranges: Vec<(u64, u64, u64)>,
    pub size: u64,
    pub seals: u32,
    mode: u32,
    buf: crate::sys::DontForkBuf,
    /// For an fd-less object on a machine without swap: room for mincore's answer over its
    /// largest mapping, so that only its pages in memory are copied (reading a hole of shared
    /// memory through a mapping fills it: a sparse 1 GiB region became 1 GiB resident). With
    /// swap, a page out in swap looks the same as a hole: every byte is read then.
    resident: Option<crate::sys::DontForkBuf>,
    /// (offset, length) of each copied extent; `count` of them are valid.
    extents: Vec<[AtomicU64; 2]>,
    count: AtomicU64,
    /// 0, or a negative errno (or -E2BIG: too many extents).
    error: AtomicI64,
}

/// Why a shared object was not saved: it cannot be (`Refused`), or it changed between the
/// preparation and the snapshot (`Changed`: the checkpoint starts again).
#[derive(Debug)]
pub enum Unfinished {
    Refused(String),
    Changed(String),
}

impl ShmCopy {
    /// Our own descriptor of the object, if any: one of the checkpoint's.
    pub fn own_fd(&self) -> Option<i32> {
        self.own.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// Prepares the copy of an object of `size` bytes (reserves, does not touch, that much);
    /// `own` is our own open file description of it, if the process has a way to one.
    fn new(
        id: u64,
        o: Object,
        own: Option<super::locks::Opened>,
        size: u64,
    ) -> std::io::Result<ShmCopy> {
        let Object { name, file, ranges } = o;
        let memfd = name;
        let seals = own
            .as_ref()
            .filter(|_| memfd.is_some())
            .and_then(|f| crate::sys::fcntl(f.as_raw_fd(), libc::F_GET_SEALS, 0).ok())
            .unwrap_or(0) as u32;
        let mode = own
            .as_ref()
            .and_then(|f| std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).ok())
            .map_or(0, |m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
            });
        let buf = crate::sys::DontForkBuf::new(size.next_multiple_of(PAGE).max(PAGE) as usize)?;
        let resident = match own {
            None if no_swap() => {
                let pages = ranges.iter().map(|r| r.2.div_ceil(PAGE)).max().unwrap_or(1);
                Some(crate::sys::DontForkBuf::new(pages as usize)?)
            }
            _ => None,
        };
        // Fault in the buffer where the object has data now, so that the pause copies memory
        // instead of allocating it (6x faster here).
        let populate = |off: u64, len: u64| buf.populate(off, len.min(size.saturating_sub(off)));
        match (own.as_ref().map(|f| f.as_raw_fd()), &resident) {
            (Some(fd), _) => DataExtents { fd, at: 0, size }
                .map_while(Result::ok)
                .for_each(|(a, b)| populate(a, b - a)),
            (None, Some(r)) => {
                for &(off, addr, len) in &ranges {
                    for (a, l) in in_memory(r, addr, len) {
                        populate(off + a, l);
                    }
                }
            }
            (None, None) => ranges.iter().for_each(|&(off, _, len)| populate(off, len)),
        }
        Ok(ShmCopy {
            id,
            memfd,
            file,
            own,
            seen_size: AtomicU64::new(size),
            ranges,
            size,
            seals,
            mode,
            buf,
            resident,
            extents: (0..MAX_EXTENTS).map(|_| Default::default()).collect(),
            count: AtomicU64::new(0),
            error: AtomicI64::new(0),
        })
    }

    /// Whether the process holds no descriptor of the object (it is read from /proc/self/mem).
    pub fn needs_mem(&self) -> bool {
        self.own.is_none()
    }

    /// The copy buffer's and mincore's (address, length): not part of the snapshot, by design.
    pub fn buffers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        std::iter::once(&self.buf)
            .chain(&self.resident)
            .map(|b| (b.addr(), b.len() as u64))
    }

    /// In a restored process: the buffers and our description were never part of it, so they
    /// are neither unmapped nor closed.
    pub fn abandon(self) {
        std::mem::forget(self.buf);
        std::mem::forget(self.resident);
        std::mem::forget(self.own);
    }

    fn push(&self, off: u64, len: u64) -> bool {
        let n = self.count.load(Ordering::Relaxed) as usize;
        if n >= MAX_EXTENTS {
            self.error.store(-(libc::E2BIG as i64), Ordering::Relaxed);
            return false;
        }
        self.extents[n][0].store(off, Ordering::Relaxed);
        self.extents[n][1].store(len, Ordering::Relaxed);
        self.count.store(n as u64 + 1, Ordering::Relaxed);
        true
    }

    /// Copies `len` bytes at offset `off` of the object: from a readable mapping that covers
    /// them (the kernel copies from our own address space, fastest), else with pread from our
    /// description of the object, or from `mem` (/proc/self/mem, which reads even inaccessible
    /// mappings) for fd-less objects.
    fn read(&self, mem: i32, off: u64, len: u64) -> bool {
        let dst = self.buf.addr() + off;
        let mapped = self
            .ranges
            .iter()
            .find(|&&(o, _, l)| o <= off && off + len <= o + l)
            .map(|&(o, addr, _)| addr + (off - o));
        let mut r = match mapped {
            Some(src) => crate::sys::read_own_memory(dst, src, len as usize),
            None => -(libc::EFAULT as i64),
        };
        if r < 0 {
            r = match (self.own.as_ref().map(|f| f.as_raw_fd()), mapped) {
                (Some(fd), _) => crate::sys::pread_raw(fd, dst, len as usize, off),
                (None, Some(src)) => crate::sys::pread_raw(mem, dst, len as usize, src),
                (None, None) => r,
            };
        }
        if r < 0 {
            self.error.store(r, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Copies the object. Runs in the checkpoint handler: system calls and atomics only.
    /// `mem` is a descriptor of /proc/self/mem.
    pub fn copy(&self, mem: i32) {
        match self.own.as_ref().map(|f| f.as_raw_fd()) {
            Some(fd) => {
                self.seen_size.store(
                    crate::sys::fstat_size(fd).unwrap_or(self.size),
                    Ordering::Relaxed,
                );
                let extents = DataExtents {
                    fd,
                    at: 0,
                    size: self.size,
                };
                for extent in extents {
                    let (data, hole) = match extent {
                        Ok(e) => e,
                        Err(errno) => {
                            self.error.store(errno, Ordering::Relaxed);
                            return;
                        }
                    };
                    if !self.push(data, hole - data) {
                        return;
                    }
                    // Piece by piece: each piece lies in one mapping or none.
                    let mut p = data;
                    while p < hole {
                        let end = self
                            .ranges
                            .iter()
                            .flat_map(|&(o, _, l)| [o, o + l])
                            .filter(|&b| b > p && b < hole)
                            .min()
                            .unwrap_or(hole);
                        if !self.read(mem, p, end - p) {
                            return;
                        }
                        p = end;
                    }
                }
            }
            None => {
                for &(off, addr, len) in &self.ranges {
                    // (Whole, where its pages in memory are too scattered to list.)
                    let room = MAX_EXTENTS as u64
                        - self.count.load(Ordering::Relaxed).min(MAX_EXTENTS as u64);
                    let Some(r) = self
                        .resident
                        .as_ref()
                        .filter(|r| (in_memory(r, addr, len).count() as u64) < room)
                    else {
                        if !self.push(off, len) || !self.read(mem, off, len) {
                            return;
                        }
                        continue;
                    };
                    for (a, l) in in_memory(r, addr, len) {
                        if !self.push(off + a, l) || !self.read(mem, off + a, l) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// After the handler: the object with its non-zero pages appended to the image. `mapped`
    /// are the snapshot's mappings of this object, (offset, address, length): they must be the
    /// ones that were copied, or the layout changed between the preparation and the snapshot
    /// (`Unfinished::Changed`: the checkpoint starts again; ZGC maps and unmaps views of its
    /// heap's memfd as it allocates).
    pub fn finish(
        &self,
        mapped: &[(u64, u64, u64)],
        writer: &mut crate::image::ImageWriter,
    ) -> Result<Result<SharedObject, Unfinished>, crate::image::ImageError> {
        let err = self.error.load(Ordering::Acquire);
        if err != 0 {
            return Ok(Err(Unfinished::Refused(if err == -(libc::E2BIG as i64) {
                format!("more than {MAX_EXTENTS} separate extents")
            } else if err == -(libc::EIO as i64) && self.own.is_none() {
                "cannot copy it: a mapping of it reaches beyond its end (grown with mremap; touching that part raises SIGBUS): unmap that part before the checkpoint".to_owned()
            } else {
                format!(
                    "cannot copy it: {}",
                    std::io::Error::from_raw_os_error(-err as i32)
                )
            })));
        }
        let (mut want, mut had) = (mapped.to_vec(), self.ranges.clone());
        want.sort_unstable();
        had.sort_unstable();
        if want != had {
            return Ok(Err(Unfinished::Changed(
                "its mappings changed while the checkpoint was prepared".into(),
            )));
        }
        let seen = self.seen_size.load(Ordering::Acquire);
        if seen != self.size {
            return Ok(Err(Unfinished::Changed(format!(
                "it was resized from {} to {seen} bytes while the checkpoint was prepared",
                self.size
            ))));
        }
        // Disjoint, sorted extents (fd-less objects may be mapped twice over the same offsets).
        let n = self.count.load(Ordering::Acquire) as usize;
        let mut extents: Vec<(u64, u64)> = self.extents[..n]
            .iter()
            .map(|e| {
                let off = e[0].load(Ordering::Relaxed);
                (off, off + e[1].load(Ordering::Relaxed))
            })
            .collect();
        extents.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in extents {
            match merged.last_mut() {
                Some((_, end)) if a <= *end => *end = (*end).max(b),
                _ => merged.push((a, b)),
            }
        }
        let buf = self.buf.as_slice();
        let mut pages = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for (off, end) in merged {
            let mut at = off - off % PAGE;
            let end = end.min(buf.len() as u64);
            while at < end {
                let next = (at + PAGE).min(end);
                if buf[at as usize..next as usize].iter().any(|&b| b != 0) {
                    run = match run {
                        Some((s, e)) if e == at => Some((s, next)),
                        other => {
                            if let Some((s, e)) = other {
                                pages.push(append(writer, buf, s, e - s)?);
                            }
                            Some((at, next))
                        }
                    };
                }
                at = next;
            }
        }
        if let Some((s, e)) = run {
            pages.push(append(writer, buf, s, e - s)?);
        }
        Ok(Ok(SharedObject {
            id: self.id,
            memfd: self.memfd.clone(),
            size: self.size,
            seals: self.seals,
            mode: self.mode,
            file: self.file.clone(),
            pages,
        }))
    }
}

/// What the process shows of one object before it is copied.
#[derive(Default)]
struct Object {
    /// The memfd's name.
    name: Option<String>,
    file: Option<super::deleted::DeletedFile>,
    /// (offset, address, length) of each shared mapping: private ones are the memory's.
    ranges: Vec<(u64, u64, u64)>,
}

/// The shared objects to copy during the freeze: every object a mapping in `maps` or one of the
/// process's descriptors `(object, fd)` refers to (memfds, shared anonymous memory, files
/// deleted while open or mapped), and why some cannot be (a deleted file larger than
/// `max_deleted`, one mapped privately that the process has no descriptor of).
pub(crate) fn copies(
    maps: &[crate::procfs::MapEntry],
    fds: &[(u64, i32)],
    max_deleted: u64,
) -> std::io::Result<(Vec<ShmCopy>, Vec<String>)> {
    use super::memory::{Backing, Vma};
    let memfd_name = |s: &str| {
        s.strip_prefix("/memfd:")
            .map(|n| n.trim_end_matches(" (deleted)").to_owned())
    };
    let deleted = |s: &str, meta: Option<&std::fs::Metadata>| {
        super::deleted::deleted_path(s).map(|path| match meta {
            Some(m) => super::deleted::DeletedFile::of(path, m),
            None => super::deleted::DeletedFile {
                path: path.to_owned(),
                mode: 0o600,
                ..Default::default()
            },
        })
    };
    let mut objects: BTreeMap<u64, Object> = BTreeMap::new();
    // A way to open each object without a descriptor of the process's: /proc/self/map_files
    // (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN), for deleted files mapped only.
    let mut map_files: BTreeMap<u64, String> = BTreeMap::new();
    let mut private: BTreeMap<u64, String> = BTreeMap::new();
    // Kept-name files by their path.
    let mut named: BTreeMap<u64, String> = BTreeMap::new();
    for m in maps {
        if let Ok(Vma {
            backing: Backing::Shared { object, offset },
            start,
            end,
            ..
        }) = Vma::classify(m)
        {
            let o = objects.entry(object).or_default();
            o.name = memfd_name(&m.name);
            o.file = deleted(&m.name, None);
            if let Some(path) = super::deleted::perf_data(&m.name) {
                // Still named: read through its name (checked to be the mapped file below).
                o.file = std::fs::metadata(path)
                    .ok()
                    .map(|meta| super::deleted::DeletedFile {
                        keep_name: true,
                        ..super::deleted::DeletedFile::of(path, &meta)
                    });
                named.insert(object, path.to_owned());
            } else if o.file.is_some() || !m.shared() {
                // (A private mapping shows its own pages: the object is read through a
                // descriptor of it.)
                map_files
                    .entry(object)
                    .or_insert_with(|| format!("/proc/self/map_files/{:x}-{:x}", start, end));
            }
            if m.shared() {
                o.ranges.push((offset, start, end - start));
            } else {
                private.entry(object).or_insert_with(|| m.describe());
            }
        }
    }
    for (object, fd) in fds {
        let o = objects.entry(*object).or_default();
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        o.name = memfd_name(&target);
        if o.name.is_none() {
            let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok();
            o.file = deleted(&target, meta.as_ref());
        }
    }
    let mut copies = Vec::new();
    let mut refused = Vec::new();
    for (id, mut o) in objects {
        let source = match fds.iter().find(|(x, _)| *x == id) {
            Some((_, fd)) => Some(format!("/proc/self/fd/{fd}")),
            None => map_files.get(&id).cloned(),
        };
        let held = fds.iter().any(|(x, _)| *x == id);
        // Ours, as a description of the process's file (see locks::Opened): one an earlier
        // checkpoint kept, or opened now.
        let kept = fds
            .iter()
            .find(|(x, _)| *x == id)
            .and_then(|&(_, fd)| super::locks::Opened::kept_for(fd));
        let opened = match (kept, source, named.get(&id)) {
            (Some(k), _, _) => Some(Ok(k)),
            (None, Some(s), _) => Some(std::fs::File::open(s).map(open_as_own)),
            (None, None, Some(path)) => Some(open_named(path, id).map(open_as_own)),
            (None, None, None) => None,
        };
        let own = match opened {
            Some(Ok(f)) => Some(f),
            // The process holds a descriptor but its mode lets nobody read it (fchmod 0200):
            // nothing could be copied, so say so instead of saving it empty.
            Some(Err(e)) if held || named.contains_key(&id) => {
                refused.push(format!(
                    "{}: cannot open it to copy its contents: {e}",
                    describe(o.name.as_deref(), o.file.as_ref())
                ));
                continue;
            }
            _ => None,
        };
        // A kernel object that only looks like a deleted file (an AIO ring, a GPU buffer), or
        // like shared anonymous memory (the device /dev/zero, its node deleted).
        if o.file.is_some() || o.name.is_none() {
            if let Some(f) = &own {
                let regular = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
                    .is_ok_and(|m| m.is_file());
                if !regular {
                    refused.push(format!(
                        "{}: a mapping of a kernel object, not of a file",
                        private
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| describe(None, o.file.as_ref()))
                    ));
                    continue;
                }
            }
        }
        let size = match &own {
            // (fstat of it, not of a duplicate: closing one would end the process's POSIX
            // locks on the file.)
            Some(f) => crate::sys::fstat_size(f.as_raw_fd())?,
            None => o
                .ranges
                .iter()
                .map(|(off, _, l)| off + l)
                .max()
                .unwrap_or(0),
        };
        if let Some(file) = &mut o.file {
            if let Some(meta) = own
                .as_ref()
                .and_then(|f| std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).ok())
            {
                use std::os::unix::fs::MetadataExt;
                if let Some(why) = super::deleted::still_linked(&file.path, meta.nlink())
                    .filter(|_| !file.keep_name)
                {
                    refused.push(why);
                    continue;
                }
                // Mapped only: its metadata from the mapping's file.
                if !fds.iter().any(|(x, _)| *x == id) {
                    *file = super::deleted::DeletedFile {
                        keep_name: file.keep_name,
                        ..super::deleted::DeletedFile::of(&file.path, &meta)
                    };
                }
            }
            if own.is_none() {
                // Without a description of it, only its shared mappings could be read back.
                refused.push(format!(
                    "{}: the mapped file {} was deleted, and the process has no descriptor of it: keep one open from before it is deleted (or delete it only after the checkpoint), or let thaw read /proc/self/map_files with CAP_CHECKPOINT_RESTORE",
                    private.get(&id).cloned().unwrap_or_default(),
                    file.path
                ));
                continue;
            }
            let fd = own.as_ref().map_or(-1, |f| f.as_raw_fd());
            if let Some(why) = super::deleted::refusal(&file.path, fd, max_deleted) {
                refused.push(why);
                continue;
            }
        } else if let Some(vma) = private.get(&id).filter(|_| own.is_none()) {
            // Read through its mappings, a privately mapped object would show their pages.
            refused.push(format!(
                "{vma}: a private mapping of {} that the process has no descriptor of: keep one open until the checkpoint, or let thaw read /proc/self/map_files with CAP_CHECKPOINT_RESTORE",
                describe(o.name.as_deref(), None)
            ));
            continue;
        }
        copies.push(ShmCopy::new(id, o, own, size)?);
    }
    Ok((copies, refused))
}

/// Opens a kept-name file by its path, without following a link, and checks that it is the
/// mapped file (the object id holds its inode number).
fn open_named(path: &str, id: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || super::deleted::object_id(0, meta.ino()) != id {
        return Err(std::io::Error::other(
            "the file at that path was replaced after it was mapped",
        ));
    }
    Ok(f)
}

fn describe(memfd: Option<&str>, file: Option<&super::deleted::DeletedFile>) -> String {
    match (memfd, file) {
        (Some(n), _) => format!("memfd {n:?}"),
        (None, Some(f)) => format!("deleted file {}", f.path),
        (None, None) => "shared anonymous memory".to_owned(),
    }
}

impl ShmCopy {
    /// As [`SharedObject::describe`].
    pub fn describe(&self) -> String {
        describe(self.memfd.as_deref(), self.file.as_ref())
    }
}

fn append(
    writer: &mut crate::image::ImageWriter,
    buf: &[u8],
    at: u64,
    len: u64,
) -> Result<PageRun, crate::image::ImageError> {
    Ok(PageRun {
        addr: at,
        payload: writer.append_payload(&buf[at as usize..(at + len) as usize])?,
    })
}

/// Seals added before the object is mapped (a writable mapping could not exist with them, and a
/// read-only shared mapping made before F_SEAL_WRITE would make the seal fail with EBUSY), and
/// F_SEAL_EXEC (MFD_NOEXEC_SEAL: its mode may never be made executable), after its mode is set.
const SEALS_BEFORE: u32 =
    (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_EXEC) as u32;
/// Seals added by the restorer once every mapping exists: F_SEAL_FUTURE_WRITE allows the writable
/// mappings made before it, F_SEAL_SEAL comes last.
const SEALS_AFTER: u32 = (libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL) as u32;

/// Largest piece of a page run read from the image at once.
const PIECE: u64 = 4 << 20;

/// Creates every object as a memfd with its contents: id → descriptor (launcher side).
/// `payload(r)` reads a payload range of the image.
pub fn recreate(
    objects: &[SharedObject],
    mut payload: impl FnMut(PayloadRef) -> Result<Vec<u8>, String>,
) -> Result<BTreeMap<u64, OwnedFd>, String> {
    let mut out = BTreeMap::new();
    for o in objects {
        let what = o.describe();
        let fd = match &o.file {
            Some(file) => super::deleted::create(file)?,
            None => {
                let name = o.memfd.clone().unwrap_or_else(|| "thaw-shared-anon".into());
                // A memfd allows sealing as it did: its seals say so (F_SEAL_SEAL alone, made
                // without MFD_ALLOW_SEALING, is added back below like any other).
                crate::sys::memfd_create(&name, o.memfd.is_some() || o.seals != 0)
                    .map_err(|e| format!("{what}: cannot create it: {e}"))?
            }
        };
        crate::sys::ftruncate(fd.as_raw_fd(), o.size)
            .map_err(|e| format!("{what}: cannot size it to {} bytes: {e}", o.size))?;
        let file = std::fs::File::from(fd.try_clone().map_err(|e| format!("{what}: {e}"))?);
        for run in &o.pages {
            if run
                .addr
                .checked_add(run.payload.len)
                .is_none_or(|e| e > o.size)
            {
                return Err(format!("{what}: page run beyond its size"));
            }
            // In pieces: a run may be gigabytes (a ZGC heap).
            let mut done = 0;
            while done < run.payload.len {
                let len = (run.payload.len - done).min(PIECE);
                let bytes = payload(PayloadRef {
                    offset: run.payload.offset + done,
                    len,
                })?;
                std::os::unix::fs::FileExt::write_all_at(&file, &bytes, run.addr + done)
                    .map_err(|e| format!("{what}: cannot fill it: {e}"))?;
                done += len;
            }
        }
        if let Some(file) = &o.file {
            file.finish(&fd)?;
        }
        if o.memfd.is_some() && o.mode != 0 {
            std::fs::File::from(fd.try_clone().map_err(|e| format!("{what}: {e}"))?)
                .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(o.mode))
                .map_err(|e| format!("{what}: cannot set its mode {:o}: {e}", o.mode))?;
        }
        if o.seals & SEALS_BEFORE != 0 {
            crate::sys::add_seals(fd.as_raw_fd(), o.seals & SEALS_BEFORE)
                .map_err(|e| format!("{what}: cannot seal it ({:#x}): {e}", o.seals))?;
        }
        out.insert(o.id, fd);
    }
    Ok(out)
}

impl SharedObject {
    /// "memfd NAME", "deleted file PATH" or "shared anonymous memory".
    pub fn describe(&self) -> String {
        describe(self.memfd.as_deref(), self.file.as_ref())
    }

    /// The seals that must follow the mappings (see [`SEALS_AFTER`]).
    pub fn plan_restore(&self, plan: &mut crate::restore::Plan, fd: i32) {
        if self.seals & SEALS_AFTER != 0 {
            plan.syscall(
                format!("seal memfd {:?} ({:#x})", self.memfd, self.seals),
                libc::SYS_fcntl,
                [
                    fd as u64,
                    libc::F_ADD_SEALS as u64,
                    u64::from(self.seals & SEALS_AFTER),
                    0,
                    0,
                    0,
                ],
            );
        }
    }
}

fn open_as_own(f: std::fs::File) -> super::locks::Opened {
    super::locks::Opened::new(OwnedFd::from(f))
}

/// Whether the machine has no swap (then a shared memory page that is not in memory is a hole).
fn no_swap() -> bool {
    std::fs::read_to_string("/proc/meminfo").is_ok_and(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("SwapTotal:"))
            .is_some_and(|v| v.split_whitespace().next() == Some("0"))
    })
}

/// The runs of pages of the `len` bytes mapped at `addr` that are in memory, as (offset in the
/// mapping, length), runs less than [`GAP`] apart joined (a few holes read, far fewer extents);
/// the whole range where mincore fails. Allocation-free: runs in the checkpoint handler.
fn in_memory(
    r: &crate::sys::DontForkBuf,
    addr: u64,
    len: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let pages = len.div_ceil(PAGE);
    let failed = r.mincore(addr, len) != 0;
    let present = move |p: u64| failed || r.get_u8(p as usize) & 1 == 1;
    let mut p = 0u64;
    std::iter::from_fn(move || {
        while p < pages && !present(p) {
            p += 1;
        }
        if p >= pages {
            return None;
        }
        let start = p;
        let mut end = p;
        // Extend while the next present page is within GAP pages.
        while p < pages {
            if present(p) {
                end = p + 1;
            } else if p - end >= GAP {
                break;
            }
            p += 1;
        }
        p = end;
        Some((start * PAGE, (end * PAGE).min(len) - start * PAGE))
    })
}

/// Holes up to this many pages between pages in memory are read with them.
const GAP: u64 = 16;
