//! Whether this launcher runs with more privilege than its caller, and what it may therefore
//! consult. A launcher that gained privileges at exec (file capabilities, set-uid, set-gid) must
//! not let its caller redirect trust or logging through the environment or the command line.

use std::ffi::OsString;
use std::path::PathBuf;

use thaw_signing::TrustSource;

/// The system trust directory, the only one an elevated launcher honours.
pub const SYSTEM_TRUST_DIR: &str = "/etc/thaw/trusted";

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
                eprintln!(
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
