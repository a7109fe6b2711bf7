//! What to do with descriptors thaw cannot restore, or that the application wants left out.
//!
//! A process holds descriptors it never opened: whatever started it leaves pipes, terminals and
//! sockets open (a CI runner's log pipe, make's jobserver, a supervisor's socket). By default a
//! descriptor thaw cannot restore makes the checkpoint fail, naming it. A policy chooses, per
//! descriptor number or per kind, to refuse, to leave the descriptor out of the image (it is
//! closed after restore; a socket or pipe thaw cannot restore is a dead end at its number
//! instead, see [`FdAction::Drop`]), or to put `/dev/null` at its number (opened with the same
//! access mode).
//!
//! The textual form, used by `THAW_FD_POLICY`, the C ABI and Python, is a comma-separated list of
//! `KEY=ACTION`: KEY is a descriptor number or a kind (`pipe`, `socket`, `device`, `deleted`,
//! `other`, `any`), ACTION is `refuse`, `drop` or `null`. A number wins over a kind, a kind over
//! `any`; a kind applies only to descriptors thaw would otherwise refuse, a number to any
//! descriptor (`7=drop` leaves out even a file thaw could reopen).

use std::collections::BTreeMap;
use std::fmt;

/// The environment variable holding a policy in textual form; what the application sets through
/// the API takes precedence, key by key.
pub const ENV: &str = "THAW_FD_POLICY";

/// What happens to one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdAction {
    /// Fail the checkpoint, naming the descriptor (the default for what thaw cannot restore).
    Refuse,
    /// Leave it out of the image. A socket or pipe thaw cannot restore (its other end is in
    /// another process) is a dead end at its number after restore: an end whose other end is
    /// gone (end of file, EPIPE, poll says it hung up), still watched where an epoll instance
    /// watched it, so that an event loop sees it hang up and closes it, and no other file takes
    /// its number meanwhile (a runtime keeps its objects by number). Anything else is closed.
    Drop,
    /// Restore `/dev/null` at its number, with its access mode and flags.
    DevNull,
}

/// Kinds of descriptors thaw cannot restore, for a policy per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FdClass {
    /// One end of a pipe whose other end is in another process.
    Pipe,
    /// A socket thaw does not restore (connected to another process, or of an unsupported kind).
    Socket,
    /// A terminal or other device (besides /dev/null, /dev/zero, /dev/full, /dev/[u]random).
    Device,
    /// A file that was deleted while open.
    Deleted,
    /// Anything else (FIFOs, unsupported kernel objects, …).
    Other,
}

impl FdClass {
    pub const ALL: [FdClass; 5] = [
        FdClass::Pipe,
        FdClass::Socket,
        FdClass::Device,
        FdClass::Deleted,
        FdClass::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FdClass::Pipe => "pipe",
            FdClass::Socket => "socket",
            FdClass::Device => "device",
            FdClass::Deleted => "deleted",
            FdClass::Other => "other",
        }
    }
}

impl fmt::Display for FdAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdAction::Refuse => "refuse",
            FdAction::Drop => "drop",
            FdAction::DevNull => "null",
        })
    }
}

/// A descriptor policy (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdPolicy {
    per_fd: BTreeMap<i32, FdAction>,
    per_class: BTreeMap<FdClass, FdAction>,
    any: Option<FdAction>,
}

impl FdPolicy {
    /// The empty policy: refuse what cannot be restored, keep the rest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the action for descriptor `fd`.
    pub fn fd(mut self, fd: i32, action: FdAction) -> Self {
        self.per_fd.insert(fd, action);
        self
    }

    /// Sets the action for every descriptor of `class` that thaw cannot restore.
    pub fn class(mut self, class: FdClass, action: FdAction) -> Self {
        self.per_class.insert(class, action);
        self
    }

    /// Sets the action for every descriptor thaw cannot restore, whatever its kind.
    pub fn any(mut self, action: FdAction) -> Self {
        self.any = Some(action);
        self
    }

    /// Parses the textual form (`"pipe=drop,251=null"`); the empty string is the empty policy.
    pub fn parse(spec: &str) -> Result<FdPolicy, String> {
        let mut p = FdPolicy::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, action) = item
                .split_once('=')
                .ok_or_else(|| format!("descriptor policy item {item:?} is not KEY=ACTION"))?;
            let action = match action.trim() {
                "refuse" => FdAction::Refuse,
                "drop" => FdAction::Drop,
                "null" => FdAction::DevNull,
                other => {
                    return Err(format!(
                        "descriptor policy item {item:?}: unknown action {other:?} (refuse, drop, null)"
                    ))
                }
            };
            let key = key.trim();
            if let Ok(fd) = key.parse::<i32>() {
                if fd < 0 {
                    return Err(format!(
                        "descriptor policy item {item:?}: negative descriptor"
                    ));
                }
                p = p.fd(fd, action);
            } else if key == "any" {
                p = p.any(action);
            } else if let Some(c) = FdClass::ALL.into_iter().find(|c| c.name() == key) {
                p = p.class(c, action);
            } else {
                return Err(format!(
                    "descriptor policy item {item:?}: unknown key {key:?} (a descriptor number, pipe, socket, device, deleted, other or any)"
                ));
            }
        }
        Ok(p)
    }

    /// The policy in `THAW_FD_POLICY`, if set.
    pub fn from_env() -> Result<Option<FdPolicy>, String> {
        match std::env::var(ENV) {
            Ok(s) => FdPolicy::parse(&s)
                .map(Some)
                .map_err(|e| format!("{ENV}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENV} is not UTF-8")),
        }
    }

    /// `self` with every key of `over` replaced by `over`'s action.
    pub fn overridden_by(mut self, over: &FdPolicy) -> FdPolicy {
        self.per_fd
            .extend(over.per_fd.iter().map(|(k, v)| (*k, *v)));
        self.per_class
            .extend(over.per_class.iter().map(|(k, v)| (*k, *v)));
        if over.any.is_some() {
            self.any = over.any;
        }
        self
    }

    /// What to do with descriptor `fd`; `refused` is its kind when thaw cannot restore it.
    pub fn action(&self, fd: i32, refused: Option<FdClass>) -> FdAction {
        if let Some(a) = self.per_fd.get(&fd) {
            return *a;
        }
        match refused {
            None => FdAction::Refuse, // "keep": the caller restores it
            Some(c) => self
                .per_class
                .get(&c)
                .copied()
                .or(self.any)
                .unwrap_or(FdAction::Refuse),
        }
    }

    /// Whether the policy names `fd` explicitly with Drop or DevNull.
    pub fn overrides(&self, fd: i32) -> Option<FdAction> {
        self.per_fd
            .get(&fd)
            .copied()
            .filter(|a| *a != FdAction::Refuse)
    }
}

/// The short hint appended to a refused descriptor's message.
pub fn hint(fd: i32, class: FdClass) -> String {
    format!(
        "to leave it out set a descriptor policy, e.g. {ENV}={fd}=drop (after restore: end of file and EPIPE, or closed), {fd}=null (/dev/null at its number) or {}=drop for every such descriptor",
        class.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_precedence() {
        let p = FdPolicy::parse(" pipe=drop, 251=null ,any=null,7=refuse").unwrap();
        assert_eq!(p.action(251, Some(FdClass::Pipe)), FdAction::DevNull);
        assert_eq!(p.action(9, Some(FdClass::Pipe)), FdAction::Drop);
        assert_eq!(p.action(9, Some(FdClass::Socket)), FdAction::DevNull);
        assert_eq!(p.action(7, Some(FdClass::Pipe)), FdAction::Refuse);
        assert_eq!(p.action(9, None), FdAction::Refuse);
        assert_eq!(p.overrides(251), Some(FdAction::DevNull));
        assert_eq!(p.overrides(7), None);
        assert_eq!(FdPolicy::parse("").unwrap(), FdPolicy::new());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("pipe", "not KEY=ACTION"),
            ("pipe=close", "unknown action"),
            ("tty=drop", "unknown key"),
            ("-1=drop", "negative"),
        ] {
            let e = FdPolicy::parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn api_overrides_env_key_by_key() {
        let env = FdPolicy::parse("pipe=drop,3=null").unwrap();
        let api = FdPolicy::new().fd(3, FdAction::Drop);
        let p = env.overridden_by(&api);
        assert_eq!(p.action(3, None), FdAction::Drop);
        assert_eq!(p.action(4, Some(FdClass::Pipe)), FdAction::Drop);
    }
}
