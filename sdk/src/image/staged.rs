//! A file written in full before it gets its name: an unnamed file (`O_TMPFILE`) in the
//! destination's directory, linked into place only once complete, so that a writer killed at
//! any moment leaves nothing behind. File systems without `O_TMPFILE` get a named temporary
//! file (mode 0600, removed on drop) instead.

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::ImageError;

#[derive(Debug)]
pub(crate) enum Staged {
    Unnamed { file: File, dir: PathBuf },
    Named(NamedTempFile),
}

impl Staged {
    /// A new, empty, owner-only file in `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Staged, ImageError> {
        use std::os::unix::fs::OpenOptionsExt;
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir);
        match unnamed {
            Ok(file) => Ok(Staged::Unnamed {
                file,
                dir: dir.to_owned(),
            }),
            // No O_TMPFILE on this file system (or kernel): a named temporary file.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                NamedTempFile::with_prefix_in(".thaw-image-", dir)
                    .map(Staged::Named)
                    .map_err(|e| ImageError::io("cannot create a temporary image in", dir, e))
            }
            Err(e) => Err(ImageError::io("cannot create a temporary image in", dir, e)),
        }
    }

    pub(crate) fn file(&self) -> &File {
        match self {
            Staged::Unnamed { file, .. } => file,
            Staged::Named(t) => t.as_file(),
        }
    }

    /// A path that opens this file (for messages, and for readers that take a path).
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            Staged::Unnamed { file, .. } => {
                use std::os::fd::AsRawFd;
                PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
            }
            Staged::Named(t) => t.path().to_owned(),
        }
    }

    /// Gives the complete file its name `dest`, replacing what is there atomically, and syncs
    /// the directory.
    pub(crate) fn persist(self, dest: &Path) -> Result<(), ImageError> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match self {
            Staged::Named(t) => {
                t.persist(dest).map_err(|e| {
                    ImageError::io("cannot move image into place at", dest, e.error)
                })?;
            }
            Staged::Unnamed { file, dir } => {
                // A link cannot replace a file: link under a fresh name, then rename over `dest`
                // (if `dest` does not exist, the link is the image at once).
                match crate::sys::link_fd(&file, dest) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        let tmp = unique_name(&dir);
                        crate::sys::link_fd(&file, &tmp)
                            .map_err(|e| ImageError::io("cannot name the image at", &tmp, e))?;
                        std::fs::rename(&tmp, dest).map_err(|e| {
                            let _ = std::fs::remove_file(&tmp);
                            ImageError::io("cannot move image into place at", dest, e)
                        })?;
                    }
                    Err(e) => return Err(ImageError::io("cannot name the image at", dest, e)),
                }
            }
        }
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// A name in `dir` that nothing has (checked by the link itself, which fails on an existing one).
fn unique_name(dir: &Path) -> PathBuf {
    let mut seed = [0u8; 8];
    let _ = getrandom_bytes(&mut seed);
    dir.join(format!(".thaw-image-{:016x}", u64::from_ne_bytes(seed)))
}

fn getrandom_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nothing_has_a_name_until_persisted_and_persist_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.thaw");
        for content in [&b"first"[..], b"second"] {
            let s = Staged::create(dir.path()).unwrap();
            s.file().write_all(content).unwrap();
            // Only the destination (from the previous round) is there.
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(names.len() <= 1);
            s.persist(&dest).unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), content);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn dropped_unpersisted_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staged::create(dir.path()).unwrap();
        s.file().write_all(b"partial").unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
