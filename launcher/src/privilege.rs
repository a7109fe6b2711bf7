//! Whether this launcher runs with more privilege than its caller, and what it may therefore
//! consult. A launcher that gained privileges at exec (file capabilities, set-uid, set-gid) must
//! not let its caller redirect trust or logging through the environment or the command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use thaw_signing::TrustSource;

/// The system trust directory, the only one an elevated launcher honours.
pub const SYSTEM_TRUST_DIR: &str = "/etc/thaw/trusted";

/// Whether [`lower`] emptied the effective capabilities.
static LOWERED: AtomicBool = AtomicBool::new(false);

/// An elevated launcher works with its caller's privileges: its effective capabilities are
/// emptied (and its file-system ids made the caller's) before it does anything, and raised, in
/// one thread at a time, only around the calls that need them ([`privileged`]: creating the
/// process with its IDs, enabling fork reports on a userfaultfd, a time namespace). So every
/// path an image names — files reopened, mapped, the executable, sockets, FIFOs — is opened as
/// the caller would open it: through CAP_SYS_PTRACE, a path by way of /proc/PID/ of another
/// user's process (its `cwd`, its `mem`) would reach what the caller cannot. Threads started
/// afterwards inherit the empty set. Called first, while the launcher is one thread.
pub fn lower() {
    let (uid, gid) = crate::sys::real_ids();
    if (uid, gid) != (crate::sys::geteuid(), crate::sys::getegid()) {
        crate::sys::set_fs_ids(uid, gid);
    }
    if crate::sys::set_effective_caps(false).is_ok() {
        LOWERED.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` with this thread's permitted capabilities (and ids) in effect, then lowers them
/// again; just `f` where [`lower`] did nothing.
pub fn privileged<T>(f: impl FnOnce() -> T) -> T {
    if !LOWERED.load(Ordering::Relaxed) {
        return f();
    }
    crate::sys::set_fs_ids(crate::sys::geteuid(), crate::sys::getegid());
    let _ = crate::sys::set_effective_caps(true);
    let r = f();
    lower();
    r
}

#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// True when the kernel marked this exec as secure (AT_SECURE): the launcher's effective
    /// capabilities or ids exceed the caller's.
    pub elevated: bool,
}

impl Context {
    pub fn detect() -> Self {
        Context {
            elevated: crate::sys::at_secure(),
        }
    }

    /// An environment variable, or `None` when elevated (the environment is the caller's).
    pub fn env(&self, name: &str) -> Option<OsString> {
        if self.elevated {
            None
        } else {
            std::env::var_os(name)
        }
    }

    /// Where trusted keys come from: the `--trust` files, `$THAW_TRUST_DIR`, the user's
    /// `~/.config/thaw/trusted/` and `/etc/thaw/trusted/` — or, when elevated, only the last.
    pub fn trust_sources(&self, explicit: &[PathBuf]) -> Vec<TrustSource> {
        if self.elevated {
            if !explicit.is_empty() {
                errln!(
                    "thaw: warning: ignoring --trust: this launcher runs with elevated privileges and trusts only {SYSTEM_TRUST_DIR}/"
                );
            }
            return vec![TrustSource::Dir(SYSTEM_TRUST_DIR.into())];
        }
        let mut sources: Vec<TrustSource> =
            explicit.iter().cloned().map(TrustSource::File).collect();
        if let Some(dir) = self.env("THAW_TRUST_DIR") {
            sources.push(TrustSource::Dir(dir.into()));
        }
        let config = self
            .env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| self.env("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(config) = config {
            sources.push(TrustSource::Dir(config.join("thaw/trusted")));
        }
        sources.push(TrustSource::Dir(SYSTEM_TRUST_DIR.into()));
        sources
    }
}
