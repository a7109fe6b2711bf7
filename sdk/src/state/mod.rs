//! The manifest: everything an image records about the process, one module per kind of state.
//!
//! Each module owns one serde type. The types are shared by the SDK (which fills them at
//! checkpoint) and the launcher (which reads them through [`crate::image`] after the signature has
//! been checked). Any change to a serialized type changes the encoding and therefore bumps
//! [`crate::image::FORMAT_VERSION`].

pub mod aio;
pub mod cgroupns;
pub mod children;
pub mod clocks;
pub mod creds;
pub mod deleted;
pub mod elsewhere;
pub mod epoll;
pub mod files;
pub mod inet;
pub mod inotify;
pub mod interrupted;
pub mod io_uring;
pub mod keyrings;
pub mod limits;
pub mod locks;
pub mod memory;
pub mod mm;
pub mod mounts;
pub mod namespaces;
pub mod netlink;
pub mod parked;
pub mod pidfd;
pub mod pkeys;
pub mod platform;
pub mod posix_timers;
pub mod process;
pub mod scm;
pub mod shmem;
pub mod sigio;
pub mod signals;
pub mod sockets;
pub mod sockopts;
pub mod sysv_sem;
pub mod tcp;
pub mod terminal;
pub mod threads;
pub mod timers;

use serde::{Deserialize, Serialize};

use crate::image::Digest;

/// The signed description of an image: the process state and the payload's chunk digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub producer: Producer,
    pub platform: platform::Platform,
    pub process: process::Process,
    pub mm: mm::MmMap,
    pub memory: Vec<memory::Vma>,
    /// Ranges of `memory` marked MADV_DONTFORK.
    pub dontfork: Vec<memory::DontFork>,
    /// Guard regions inside `memory` (MADV_GUARD_INSTALL).
    pub guards: Vec<memory::Guard>,
    /// Memory protection keys the process held besides key 0 (see [`pkeys`]).
    pub pkeys: Vec<u32>,
    pub threads: Vec<threads::ThreadState>,
    pub signals: signals::SignalState,
    pub limits: Vec<limits::Rlimit>,
    pub creds: creds::Credentials,
    pub files: Vec<files::FdEntry>,
    /// Shared memory objects (memfds, shared anonymous memory) that mappings and descriptors
    /// refer to by id.
    pub shared: Vec<shmem::SharedObject>,
    pub clocks: clocks::Clocks,
    pub timers: timers::Itimers,
    pub posix_timers: Vec<posix_timers::PosixTimer>,
    /// The network and UTS namespaces it ran in (see [`namespaces`]).
    pub namespaces: namespaces::Namespaces,
    /// Whether it was at the root of its cgroup namespace (see [`cgroupns`]).
    pub cgroupns: cgroupns::CgroupNs,
    /// The mounts it had of its own (see [`mounts`]).
    pub mounts: mounts::Mounts,
    /// Children that had ended and were not waited for yet: made again at restore.
    pub zombies: Vec<children::Zombie>,
    pub chunks: ChunkTable,
}

/// Who made the image and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// Version of the `thaw` crate that wrote the image.
    pub thaw_version: String,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    pub hostname: String,
}

/// BLAKE3 of every fixed-size chunk of the payload section, in order; the last chunk may be short.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkTable {
    pub chunk_size: u32,
    #[serde(with = "digest_table")]
    pub digests: Vec<Digest>,
}

/// The digests as one byte string in postcard (32 bytes each; decoding them one `u8` at a time
/// cost 0.15 ms per 2,000 chunks before the process could start), hex strings in JSON.
mod digest_table {
    use super::Digest;
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(digests: &[Digest], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return digests.serialize(s);
        }
        let mut bytes = Vec::with_capacity(digests.len() * 32);
        for d in digests {
            bytes.extend_from_slice(&d.0);
        }
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
        if d.is_human_readable() {
            return Vec::<Digest>::deserialize(d);
        }
        struct Table;
        impl de::Visitor<'_> for Table {
            type Value = Vec<Digest>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("32-byte digests")
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Vec<Digest>, E> {
                if !b.len().is_multiple_of(32) {
                    return Err(E::custom(
                        "the chunk table is not a whole number of digests",
                    ));
                }
                Ok(b.chunks_exact(32)
                    .map(|c| Digest(c.try_into().expect("32 bytes")))
                    .collect())
            }
        }
        d.deserialize_bytes(Table)
    }
}

/// Identifies a file well enough to tell whether a path still names the same one: device, inode
/// and birth time (inode numbers are reused as soon as a file is deleted; a new file at the same
/// path may get the same number, never the same birth time). `btime_ns` is 0 where the file system
/// does not record birth times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub btime_ns: i128,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let btime_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            btime_ns,
        }
    }
}

/// A file's size and modification time: whether its contents were changed in place (the same
/// file, written to) since the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp::new(meta.size(), meta.mtime(), meta.mtime_nsec())
    }

    /// From stat's size and modification time (seconds, nanoseconds).
    pub fn new(size: u64, mtime: i64, mtime_nsec: i64) -> FileStamp {
        FileStamp {
            size,
            mtime_ns: i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec),
        }
    }
}

/// A byte range inside the payload section (offset relative to the section start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    pub offset: u64,
    pub len: u64,
}

impl PayloadRef {
    /// The end offset, or `None` if it overflows.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// The inode number of the file open at `fd` (the socket tests name sockets by it).
#[cfg(test)]
pub(crate) fn ino_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_tables_travel_as_one_byte_string() {
        let t = ChunkTable {
            chunk_size: 65536,
            digests: vec![Digest([1; 32]), Digest([2; 32]), Digest([3; 32])],
        };
        let bytes = postcard::to_allocvec(&t).unwrap();
        // chunk_size (varint), the length in bytes (varint 96), the digests back to back.
        assert_eq!(bytes.len(), 3 + 1 + 96);
        assert_eq!(postcard::from_bytes::<ChunkTable>(&bytes).unwrap(), t);
        // A length that is not a whole number of digests is refused, not truncated.
        let mut short = bytes[..3].to_vec();
        short.push(95);
        short.extend_from_slice(&bytes[4..99]);
        assert!(postcard::from_bytes::<ChunkTable>(&short).is_err());
    }
}
