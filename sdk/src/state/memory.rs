//! Virtual memory areas and where their contents are in the payload.

use serde::{Deserialize, Serialize};

use super::PayloadRef;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC.
    pub prot: u32,
    /// MAP_PRIVATE or MAP_SHARED, plus MAP_GROWSDOWN where the VMA grows down.
    pub map_flags: u32,
    /// Advice to re-apply (MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, …), one bit per
    /// `VmFlag` this crate knows, see [`VmaAdvice`].
    pub advice: u32,
    pub backing: Backing,
    /// Its NUMA policy (mbind): mode with flags, nodes 0-63; `None`: the process's.
    pub numa: Option<(u32, u64)>,
    /// The name an anonymous mapping was given (`PR_SET_VMA_ANON_NAME`, shown as
    /// `[anon:NAME]` in /proc/PID/maps); empty: none.
    pub anon_name: String,
    /// Its memory protection key (`pkey_mprotect`; 0: the default), see [`super::pkeys`].
    pub pkey: u32,
    /// The saved pages, as runs of consecutive pages in address order. Pages of the region not
    /// listed are zero (anonymous memory) or the file's contents (file mappings); kernel special
    /// mappings have none.
    pub pages: Vec<PageRun>,
}

/// A VMA with fewer saved bytes than this is filled before the process runs even where lazy
/// filling works: registering it and serving its faults would cost more than copying it.
pub const LAZY_MIN_BYTES: u64 = 64 * 1024;

/// Consecutive saved pages of a VMA: `payload.len` bytes at `addr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub addr: u64,
    pub payload: PayloadRef,
}

/// Bits of [`Vma::advice`].
#[derive(Debug)]
pub struct VmaAdvice;

impl VmaAdvice {
    pub const DONTFORK: u32 = 1;
    pub const WIPEONFORK: u32 = 2;
    pub const DONTDUMP: u32 = 4;
    pub const HUGEPAGE: u32 = 8;
    pub const NOHUGEPAGE: u32 = 16;
    /// Not advice: a shared file mapping that may be writable (VM_MAYWRITE), so its file is
    /// reopened read-write.
    pub const MAYWRITE: u32 = 32;
    pub const SEQUENTIAL: u32 = 64;
    pub const RANDOM: u32 = 128;
    pub const MERGEABLE: u32 = 256;
    /// mlock / MAP_LOCKED (VM_LOCKED), and its on-fault variant (mlock2 MLOCK_ONFAULT).
    pub const LOCKED: u32 = 512;
    pub const LOCKONFAULT: u32 = 1024;
    /// mseal (VM_SEALED): sealed again last, and filled before the process runs.
    pub const SEALED: u32 = 2048;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backing {
    #[default]
    Anonymous,
    /// The program break area ([heap]).
    Heap,
    /// The main thread's stack ([stack]).
    Stack,
    /// A file mapping; the identity lets the restorer refuse a file that changed.
    File {
        path: String,
        offset: u64,
        id: super::FileId,
        /// Its size and modification time at the checkpoint: code, or saved pages mixed with
        /// the file's, from a file changed in place since would not be what the process had.
        stamp: super::FileStamp,
    },
    /// A kernel special mapping ([vdso], [vvar], [vvar_vclock], [vsyscall]) moved, not copied.
    Special { name: String },
    /// A mapping of a shared memory object (memfd or shared anonymous memory; a file deleted
    /// while mapped), saved once in [`super::Manifest::shared`]; `offset` is in the object. A
    /// private one (a memfd's, a deleted file's) also saves the pages written since.
    Shared { object: u64, offset: u64 },
    /// A mapping of an io_uring instance's rings or submission entries (`offset` is the mmap
    /// offset that says which), the instance being descriptor `fd` (see [`super::io_uring`]).
    IoRing { fd: i32, offset: u64 },
    /// An AIO context's ring (`io_setup`), made again and moved here (see [`super::aio`]).
    Aio(super::aio::AioRing),
}

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

impl Vma {
    /// For a file mapping: whether the file, `size_then` bytes at the checkpoint and `size_now`
    /// now, has come to end before a page of the mapping that was within it then. Touching
    /// such a page raises SIGBUS (and putting a saved page there cannot be done), where the
    /// first life read the file's bytes.
    pub fn file_shrunk(&self, size_then: u64, size_now: u64, page: u64) -> bool {
        let Backing::File { offset, .. } = &self.backing else {
            return false;
        };
        let end = offset.saturating_add(self.end - self.start);
        let within_then = end.min(size_then.next_multiple_of(page));
        size_now.next_multiple_of(page) < within_then
    }
}

use crate::image::{ImageError, ImageWriter};
use crate::procfs::MapEntry;
use crate::restore::Plan;

const PAGE: u64 = 4096;
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` and its missing-pages mode (linux/userfaultfd.h).
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// statfs's `f_type` of hugetlbfs (linux/magic.h): MFD_HUGETLB memfds live there.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// Whether the file open at `fd` is on hugetlbfs (an MFD_HUGETLB memfd, a hugetlbfs file).
pub(crate) fn on_hugetlbfs(fd: i32) -> bool {
    crate::sys::fstatfs_type(fd).is_ok_and(|t| t == HUGETLBFS_MAGIC)
}

/// Why memory of the huge page pool is refused (a mapping, or a memfd of it held open).
/// Advice given to a mapping before it is filled (which pages a fill faults in).
const ADVICE_BEFORE_FILL: [(u32, i32, &str); 2] = [
    (VmaAdvice::HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
    (
        VmaAdvice::NOHUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        "MADV_NOHUGEPAGE",
    ),
];

/// Advice given once it is filled.
const ADVICE_AFTER_FILL: [(u32, i32, &str); 5] = [
    (
        VmaAdvice::WIPEONFORK,
        libc::MADV_WIPEONFORK,
        "MADV_WIPEONFORK",
    ),
    (VmaAdvice::DONTDUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
    (
        VmaAdvice::SEQUENTIAL,
        libc::MADV_SEQUENTIAL,
        "MADV_SEQUENTIAL",
    ),
    (VmaAdvice::RANDOM, libc::MADV_RANDOM, "MADV_RANDOM"),
    (VmaAdvice::MERGEABLE, libc::MADV_MERGEABLE, "MADV_MERGEABLE"),
];

pub(crate) const HUGETLB_REFUSAL: &str = "memory of the huge page pool (MAP_HUGETLB, a memfd made with MFD_HUGETLB, a hugetlbfs file) is not supported: restored as ordinary memory it would no longer be huge pages; use transparent huge pages instead (madvise MADV_HUGEPAGE; a JVM started with -XX:+UseLargePages: drop the flag, or use -XX:+UseTransparentHugePages)";

/// Kernel special mappings the restorer moves instead of copying.
pub const SPECIAL_NAMES: [&str; 4] = ["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"];

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Classifies a mapping; `Err` says why it cannot be checkpointed.
    pub(crate) fn classify(m: &MapEntry) -> Result<Vma, String> {
        let p = m.perms.as_bytes();
        let prot = (if p[0] == b'r' { libc::PROT_READ } else { 0 })
            | (if p[1] == b'w' { libc::PROT_WRITE } else { 0 })
            | (if p[2] == b'x' { libc::PROT_EXEC } else { 0 });
        let mut advice = 0;
        if m.has_flag("wf") {
            advice |= VmaAdvice::WIPEONFORK;
        }
        if m.has_flag("dd") {
            advice |= VmaAdvice::DONTDUMP;
        }
        if m.has_flag("hg") {
            advice |= VmaAdvice::HUGEPAGE;
        }
        if m.has_flag("nh") {
            advice |= VmaAdvice::NOHUGEPAGE;
        }
        if m.shared() && m.has_flag("mw") {
            advice |= VmaAdvice::MAYWRITE;
        }
        for (flag, bit) in [
            ("sr", VmaAdvice::SEQUENTIAL),
            ("rr", VmaAdvice::RANDOM),
            ("mg", VmaAdvice::MERGEABLE),
            ("lo", VmaAdvice::LOCKED),
            ("lf", VmaAdvice::LOCKONFAULT),
            ("sl", VmaAdvice::SEALED),
        ] {
            if m.has_flag(flag) {
                advice |= bit;
            }
        }

        let mut map_flags = if m.shared() {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if m.has_flag("gd") {
            map_flags |= libc::MAP_GROWSDOWN;
        }
        if m.has_flag("nr") {
            map_flags |= libc::MAP_NORESERVE;
        }
        if m.has_flag("dp") {
            // MAP_DROPPABLE is a mapping type of its own (Linux 6.11+).
            map_flags = (map_flags & !0x0f) | 0x08;
        }
        if m.has_flag("ss") {
            // A thread's CET shadow stack (ARCH_SHSTK_ENABLE): made only by the kernel, for a
            // thread that enabled it; restored as plain memory the thread would run unprotected.
            return Err(format!(
                "{}: a shadow stack (x86 CET, ARCH_SHSTK_ENABLE), which thaw does not restore: run the program without it (GLIBC_TUNABLES=glibc.cpu.x86_shstk=off)",
                m.describe()
            ));
        }
        let name = m.name.as_str();
        let aio = name == super::aio::MAP_NAME;
        if let Some(why) = super::deleted::kernel_internal(name).filter(|_| !aio) {
            return Err(format!("{}: {why}", m.describe()));
        }
        if m.has_flag("ht") {
            return Err(format!("{}: {HUGETLB_REFUSAL}", m.describe()));
        }
        let backing = if SPECIAL_NAMES.contains(&name) {
            Backing::Special { name: name.into() }
        } else if aio {
            super::aio::backing(m)?
        } else if name == "anon_inode:[io_uring]" {
            super::io_uring::backing(m)?
        } else if let Some((fd, ..)) = super::io_uring::restored_memory(name) {
            // The memory an earlier restore made an io_uring instance on.
            super::io_uring::backing(m).map(|_| Backing::IoRing {
                fd,
                offset: m.offset,
            })?
        } else if m.inode != 0
            && (name.starts_with("/memfd:")
                || (m.shared() && name.starts_with("/dev/zero"))
                || name == "/dev/zero (deleted)")
        {
            // A memfd mapped privately (copy-on-write, as wasmtime maps a module's memory image)
            // too: its object is kept, mapped privately again, and the pages written since are
            // the mapping's own. So is shared anonymous memory (named "/dev/zero (deleted)")
            // mapped privately through a descriptor of it (from /proc/PID/map_files); the
            // device /dev/zero mapped privately is named without " (deleted)".
            Backing::Shared {
                object: m.inode,
                offset: m.offset,
            }
        } else if m.shared() && (m.inode == 0 || name.starts_with("/SYSV")) {
            return Err(format!(
                "{}: System V shared memory (shmat) or a device's memory mapped shared is not supported: detach or unmap it before the checkpoint (shmdt, munmap) and map it again after restore",
                m.describe()
            ));
        } else if m.shared() && m.inode != 0 && super::deleted::perf_data(name).is_some() {
            // Kept in the image and created again under its name (see super::deleted).
            Backing::Shared {
                object: super::deleted::object_id(libc::makedev(m.dev_major, m.dev_minor), m.inode),
                offset: m.offset,
            }
        } else if let Some(_path) = super::deleted::deleted_path(name).filter(|_| m.inode != 0) {
            // Kept in the image as a shared object (see super::deleted).
            Backing::Shared {
                object: super::deleted::object_id(libc::makedev(m.dev_major, m.dev_minor), m.inode),
                offset: m.offset,
            }
        } else if name.ends_with(" (deleted)") {
            return Err(format!("{}: the mapped file was deleted", m.describe()));
        } else if name == "[heap]" {
            Backing::Heap
        } else if name == "[stack]" {
            Backing::Stack
        } else if name.is_empty() || name.starts_with("[anon:") {
            Backing::Anonymous
        } else if name.starts_with('/') && m.inode != 0 {
            let meta = std::fs::metadata(name)
                .map_err(|e| format!("{}: cannot stat the mapped file: {e}", m.describe()))?;
            if meta.ino() != m.inode {
                return Err(format!(
                    "{}: the file at that path was replaced after it was mapped",
                    m.describe()
                ));
            }
            if !m.shared() && meta.rdev() == libc::makedev(1, 5) && !meta.file_type().is_file() {
                // /dev/zero mapped privately is anonymous memory (the kernel makes it so; /proc
                // still names the file), and comes back as such.
                Backing::Anonymous
            } else if !meta.file_type().is_file() || m.has_flag("io") || m.has_flag("pf") {
                // (A GPU's or another device's memory, or a device's behind a regular-looking
                // file, sysfs's PCI resources: VM_IO, VM_PFNMAP. A restore would map the device
                // afresh, not these contents.)
                return Err(format!(
                    "{}: a device's memory mapped ({name}) is not supported: unmap it before the checkpoint (munmap, close the device) and map it again after restore",
                    m.describe()
                ));
            } else {
                Backing::File {
                    path: name.into(),
                    offset: m.offset,
                    id: super::FileId::of(&meta),
                    stamp: super::FileStamp::of(&meta),
                }
            }
        } else {
            return Err(format!("{}: unsupported kind of mapping", m.describe()));
        };
        Ok(Vma {
            start: m.start,
            end: m.end,
            prot: prot as u32,
            map_flags: map_flags as u32,
            advice,
            backing,
            // Read by `read_policy`, for the image only.
            numa: None,
            anon_name: name
                .strip_prefix("[anon:")
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or_default()
                .to_owned(),
            pkey: m.pkey,
            pages: Vec::new(),
        })
    }

    /// The mapping's NUMA policy. The snapshot is a fork: the policy is the same in this
    /// process, the only one that can ask for it (MPOL_DEFAULT, 0: none of its own). Asked only
    /// while the threads are stopped: each asking takes the address space's lock, which threads
    /// that start and end others keep busy (a process starting threads nonstop kept the
    /// checkpoint 3-10 s in these calls, one per mapping).
    pub(crate) fn read_policy(&mut self) {
        self.numa = crate::sys::get_mempolicy(Some(self.start)).filter(|&(mode, _)| mode != 0);
    }

    /// Which pages of this VMA the image must carry: populated anonymous memory, and the
    /// privately modified (copy-on-write) pages of file mappings. Reads the frozen child's pagemap.
    /// Guard pages (`guards`, sorted (start, end) ranges) are never saved: they cannot be read.
    pub(crate) fn saved_runs(
        &self,
        pagemap: &File,
        resident_kb: u64,
        guards: &[(u64, u64)],
    ) -> std::io::Result<Vec<(u64, u64)>> {
        // Private mappings of a file (or of a deleted file kept as an object): only the pages
        // written since are the memory's own.
        let file_backed = matches!(self.backing, Backing::File { .. } | Backing::Shared { .. });
        if resident_kb == 0
            || matches!(self.backing, Backing::Special { .. })
            || (self.map_flags & libc::MAP_SHARED as u32) != 0
        {
            return Ok(Vec::new());
        }
        // Pages mapping the shared zero page (read, never written: a heap reserved and read,
        // or a lazily restored range read in to checkpoint it again) read as zeros after
        // restore too, unsaved: a JVM restored lazily with a 2 GiB heap checkpointed again
        // saved 2 GiB of them.
        let zeros = if file_backed {
            Vec::new()
        } else {
            crate::sys::zero_page_ranges(
                std::os::fd::AsRawFd::as_raw_fd(pagemap),
                self.start,
                self.end,
            )
        };
        let pages = self.len() / PAGE;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut buf = vec![0u8; 8 * 4096];
        let mut done = 0u64;
        while done < pages {
            let n = (pages - done).min(4096);
            let bytes = &mut buf[..(n * 8) as usize];
            pagemap.read_exact_at(bytes, (self.start / PAGE + done) * 8)?;
            for (i, e) in bytes.chunks_exact(8).enumerate() {
                let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
                let populated = e & (PM_PRESENT | PM_SWAPPED) != 0;
                let addr = self.start + (done + i as u64) * PAGE;
                // (Never a page of the file itself, a guard page or the zero page.)
                let skip = (file_backed && e & PM_FILE != 0)
                    || in_ranges(guards, addr)
                    || in_ranges(&zeros, addr);
                let keep = populated && !skip;
                if keep {
                    match runs.last_mut() {
                        Some((s, l)) if *s + *l == addr => *l += PAGE,
                        _ => runs.push((addr, PAGE)),
                    }
                }
            }
            done += n;
        }
        Ok(runs)
    }

    /// Copies the saved pages from the frozen child's memory into the image.
    pub(crate) fn dump_pages(
        &mut self,
        runs: &[(u64, u64)],
        mem: &File,
        writer: &mut ImageWriter,
    ) -> Result<(), ImageError> {
        let mut buf = vec![0u8; 4 << 20];
        for &(addr, len) in runs {
            let payload = writer.append_payload_with(
                len,
                |piece_off, piece| mem.read_exact_at(piece, addr + piece_off),
                &mut buf,
            )?;
            self.pages.push(PageRun { addr, payload });
        }
        Ok(())
    }

    /// Bytes of saved pages.
    pub fn saved_len(&self) -> u64 {
        self.pages.iter().map(|r| r.payload.len).sum()
    }

    /// Whether a launcher will likely fill this VMA, with `saved` bytes of pages, on first touch
    /// (see [`Self::can_fill_lazily`] and [`LAZY_MIN_BYTES`]); the writer puts the others first.
    pub fn fillable_on_first_touch(&self, saved: u64) -> bool {
        self.private_anonymous_kept_on_fork() && saved >= LAZY_MIN_BYTES
    }

    /// Whether this VMA's pages can be filled on first touch (userfaultfd) instead of before the
    /// process runs: private anonymous memory only, and not wiped on fork (a forked child must see
    /// zeros there, not the image's pages).
    pub fn can_fill_lazily(&self) -> bool {
        // A sealed mapping is filled before it is sealed: registering it with a userfaultfd,
        // and letting go of it, would change a sealed VMA.
        self.private_anonymous_kept_on_fork()
            && !self.pages.is_empty()
            && self.advice & VmaAdvice::SEALED == 0
    }

    fn private_anonymous_kept_on_fork(&self) -> bool {
        matches!(
            self.backing,
            Backing::Anonymous | Backing::Heap | Backing::Stack
        ) && self.map_flags & libc::MAP_SHARED as u32 == 0
            && self.advice & VmaAdvice::WIPEONFORK == 0
    }

    /// Maps this VMA in the new process and fills its saved pages from the image. `file_fd` is the
    /// new process's descriptor of the mapped file (file mappings only). With `uffd` (a
    /// userfaultfd of the new process, see [`Self::can_fill_lazily`]) the pages are not read
    /// here: the VMA is registered for missing-page faults, which the launcher serves.
    /// The madvise calls for the advice of `which` this mapping had.
    fn plan_advice(&self, plan: &mut Plan, which: &[(u32, i32, &str)]) {
        for &(bit, advice, name) in which {
            if self.advice & bit != 0 {
                plan.syscall_any(
                    format!("madvise {:x} {name}", self.start),
                    libc::SYS_madvise,
                    [self.start, self.len(), advice as u64, 0, 0, 0],
                );
            }
        }
    }

    pub fn plan_restore(
        &self,
        plan: &mut Plan,
        image_fd: i32,
        payload_off: u64,
        file_fd: Option<i32>,
        uffd: Option<i32>,
    ) {
        let what = match &self.backing {
            Backing::File { path, .. } => path.clone(),
            Backing::Shared { object, .. } => format!("shared object {object}"),
            Backing::IoRing { fd, .. } => format!("io_uring fd {fd}"),
            // (Made again by the context's own steps, see super::aio.)
            Backing::Special { .. } | Backing::Aio(_) => return,
            b => format!("{b:?}").to_lowercase(),
        };
        let uffd = uffd.filter(|_| self.can_fill_lazily());
        let write = if self.pages.is_empty() || uffd.is_some() {
            0
        } else {
            libc::PROT_WRITE as u64
        };
        let prot = u64::from(self.prot) | write;
        let (flags, fd, off) = match (&self.backing, file_fd) {
            (Backing::File { offset, .. } | Backing::Shared { offset, .. }, Some(fd)) => (
                u64::from(self.map_flags) | libc::MAP_FIXED_NOREPLACE as u64,
                fd as u64,
                *offset,
            ),
            // The memory the ring was made on again (see super::io_uring::Ring::recreate).
            (Backing::IoRing { offset, .. }, Some(fd)) => (
                u64::from(self.map_flags) | libc::MAP_FIXED_NOREPLACE as u64,
                fd as u64,
                super::io_uring::memory_offset(*offset),
            ),
            _ => (
                u64::from(self.map_flags)
                    | (libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ),
        };
        plan.syscall(
            format!("mmap {:x}-{:x} {what}", self.start, self.end),
            libc::SYS_mmap,
            [self.start, self.len(), prot, flags, fd, off],
        );
        // Huge pages or not before it is filled: a page a fill faults in is then what the first
        // life had (a 2 MiB one where it asked for them, none where it refused them).
        self.plan_advice(plan, &ADVICE_BEFORE_FILL);
        if let Some(uffd) = uffd {
            // struct uffdio_register { range { start, len }, mode, ioctls (out) }
            let reg = plan.words(&[self.start, self.len(), UFFDIO_REGISTER_MODE_MISSING, 0]);
            plan.syscall(
                format!(
                    "register {:x}-{:x} {what} for lazy filling",
                    self.start, self.end
                ),
                libc::SYS_ioctl,
                [uffd as u64, UFFDIO_REGISTER, reg, 0, 0, 0],
            );
        }
        for run in self.pages.iter().filter(|_| uffd.is_none()) {
            plan.pread(
                format!(
                    "read {} bytes of {what} at {:x} from the image",
                    run.payload.len, run.addr
                ),
                image_fd,
                run.addr,
                run.payload.len,
                payload_off + run.payload.offset,
            );
        }
        if write != 0 && self.prot & libc::PROT_WRITE as u32 == 0 {
            plan.syscall(
                format!("mprotect {:x}-{:x} {what}", self.start, self.end),
                libc::SYS_mprotect,
                [self.start, self.len(), u64::from(self.prot), 0, 0, 0],
            );
        }
        self.plan_advice(plan, &ADVICE_AFTER_FILL);
        if !self.anon_name.is_empty() {
            const PR_SET_VMA: u64 = 0x53564d41;
            const PR_SET_VMA_ANON_NAME: u64 = 0;
            let name = plan.cstr(&self.anon_name);
            plan.syscall(
                format!(
                    "name {:x}-{:x} [anon:{}]",
                    self.start, self.end, self.anon_name
                ),
                libc::SYS_prctl,
                [
                    PR_SET_VMA,
                    PR_SET_VMA_ANON_NAME,
                    self.start,
                    self.len(),
                    name,
                    0,
                ],
            );
        }
        if let Some((mode, nodes)) = self.numa {
            let mask = plan.words(&[nodes]);
            plan.syscall(
                format!(
                    "NUMA policy {mode:#x} (nodes {nodes:#x}) of {:x}-{:x}",
                    self.start, self.end
                ),
                libc::SYS_mbind,
                [self.start, self.len(), u64::from(mode), mask, 65, 0],
            );
        }
    }
}

impl Vma {
    /// Seals the VMA again (mseal), once nothing else will change it: its protection, mapping
    /// and size stay as they are for the life of the process, as in its first life.
    pub fn plan_seal(&self, plan: &mut Plan) {
        const SYS_MSEAL: i64 = 462;
        if self.advice & VmaAdvice::SEALED != 0 {
            plan.syscall(
                format!("mseal {:x}-{:x}", self.start, self.end),
                SYS_MSEAL,
                [self.start, self.len(), 0, 0, 0, 0],
            );
        }
    }

    /// Locks the VMA in memory again (mlock, or mlock2 with MLOCK_ONFAULT) once its pages can be
    /// filled: planned after the lazy-memory handover, since locking faults every page in. Fails
    /// the restore, naming the mapping, where RLIMIT_MEMLOCK does not allow it.
    pub fn plan_lock(&self, plan: &mut Plan) {
        if self.advice & VmaAdvice::LOCKED == 0 {
            return;
        }
        let onfault = self.advice & VmaAdvice::LOCKONFAULT != 0;
        plan.syscall(
            format!(
                "mlock {:x}-{:x}{}",
                self.start,
                self.end,
                if onfault { " (on fault)" } else { "" }
            ),
            libc::SYS_mlock2,
            [self.start, self.len(), u64::from(onfault), 0, 0, 0],
        );
    }
}

/// Address ranges marked MADV_DONTFORK. The checkpoint lifts the advice for its fork (so that the
/// snapshot holds them) and sets it again at once; the restorer sets it on these ranges after
/// every mapping exists (ranges, not VMAs: lifting the advice may merge a range with its
/// neighbours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DontFork {
    pub start: u64,
    pub end: u64,
}

impl DontFork {
    pub fn plan_restore(&self, plan: &mut Plan) {
        // Part of a range listed before the snapshot may have been unmapped by then: the advice
        // still applies to every mapped part (madvise answers ENOMEM for the holes).
        plan.syscall_any(
            format!("madvise {:x}-{:x} MADV_DONTFORK", self.start, self.end),
            libc::SYS_madvise,
            [
                self.start,
                self.end - self.start,
                libc::MADV_DONTFORK as u64,
                0,
                0,
                0,
            ],
        );
    }
}

/// A guard region (MADV_GUARD_INSTALL, Linux 6.13+): pages that fault on any access, installed
/// again at restore after the memory around them is in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub start: u64,
    pub end: u64,
}

impl Guard {
    pub fn plan_restore(&self, plan: &mut Plan) {
        plan.syscall(
            format!("madvise {:x}-{:x} MADV_GUARD_INSTALL", self.start, self.end),
            libc::SYS_madvise,
            [
                self.start,
                self.end - self.start,
                MADV_GUARD_INSTALL,
                0,
                0,
                0,
            ],
        );
    }
}

const MADV_GUARD_INSTALL: u64 = 102;

/// Whether `addr` lies in one of `ranges` ((start, end), sorted by start).
fn in_ranges(ranges: &[(u64, u64)], addr: u64) -> bool {
    let i = ranges.partition_point(|&(start, _)| start <= addr);
    i > 0 && addr < ranges[i - 1].1
}

/// The lines of /proc/self/maps text whose range `ranges` ((start, end), sorted by start) do not
/// cover entirely.
pub(crate) fn uncovered(maps_text: &str, ranges: &[(u64, u64)]) -> Vec<String> {
    maps_text
        .lines()
        .filter_map(|l| {
            let e = crate::procfs::parse_map_line(l)?;
            let mut at = e.start;
            for &(s, end) in ranges.iter().filter(|r| r.1 > e.start && r.0 < e.end) {
                if s > at {
                    break;
                }
                at = at.max(end);
            }
            (at < e.end).then(|| l.to_owned())
        })
        .collect()
}

/// Memory still being filled lazily by the `thaw run` this process came from (registered with
/// its userfaultfd: `um` in smaps) is filled now, before the snapshot: a page not filled yet is
/// absent from the page map the snapshot is read by, and would be missing from the image. Each
/// missing page faults and the launcher fills it, as it would on first touch. A range that
/// cannot be so filled is refused (the restore's filling ends in a moment).
pub(crate) fn fill_lazy(maps: &[MapEntry]) -> Vec<String> {
    // Only in a restored process: a first life's `um` ranges are its own userfaultfd's, whose
    // handler may be the very thread checkpointing (that descriptor is refused later anyway).
    if crate::restores() == 0 {
        return Vec::new();
    }
    let mut pending: Vec<MapEntry> = maps.iter().filter(|m| m.has_flag("um")).cloned().collect();
    let mut failed: Vec<(MapEntry, i32)> = Vec::new();
    // The other threads still run: one may unmap or map over part of a range meanwhile (a
    // runtime's heap: V8 maps and unmaps as it goes), and populating stops at the hole (ENOMEM).
    // What is still registered there is listed again and filled, a few times over.
    for _ in 0..FILL_ROUNDS {
        failed = pending
            .into_iter()
            .filter_map(|m| populate_read(m.start, m.end).err().map(|e| (m, e)))
            .collect();
        if failed.is_empty() {
            return Vec::new();
        }
        if failed.iter().any(|f| f.1 != libc::ENOMEM) {
            break;
        }
        let Ok(now) = crate::procfs::smaps(crate::sys::getpid()) else {
            break;
        };
        pending = now
            .into_iter()
            .filter(|m| {
                m.has_flag("um")
                    && failed
                        .iter()
                        .any(|(f, _)| m.start < f.end && f.start < m.end)
            })
            .collect();
        if pending.is_empty() {
            return Vec::new();
        }
    }
    failed
        .into_iter()
        .map(|(m, e)| {
            format!(
                "{}: still being filled by the thaw run this process was restored by, and it cannot be read in now ({}): checkpoint again in a moment",
                m.describe(),
                std::io::Error::from_raw_os_error(e)
            )
        })
        .collect()
}

/// How many times [`fill_lazy`] lists again what a hole cut short.
const FILL_ROUNDS: usize = 4;

/// `MADV_POPULATE_READ` over `start..end`: each missing page read in (faulting as a read would).
fn populate_read(start: u64, end: u64) -> Result<(), i32> {
    const MADV_POPULATE_READ: u64 = 22;
    let r = crate::sys::syscall6(
        libc::SYS_madvise,
        [start, end - start, MADV_POPULATE_READ, 0, 0, 0],
    );
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_stack_is_refused_by_name() {
        let mut m =
            crate::procfs::parse_map_line("7f0000000000-7f0000020000 r--p 00000000 00:00 0")
                .unwrap();
        assert!(Vma::classify(&m).is_ok());
        m.flags = vec!["rd".into(), "mr".into(), "ss".into()];
        let e = Vma::classify(&m).unwrap_err();
        assert!(e.contains("shadow stack"), "{e}");
    }
}
