//! Exit codes and the error type every subcommand returns.
//!
//! | code | meaning |
//! |-----:|---------|
//! |    0 | success |
//! |   64 | usage error (bad arguments) |
//! |   65 | invalid or corrupt image |
//! |   66 | missing, bad or untrusted signature |
//! |   67 | refused by policy (credentials, compatibility, privileges) |
//! |   68 | restore failed |
//! |   69 | `thaw bench`: a benchmarked command failed or never printed a matching line |
//! |   70 | internal error (a bug in thaw) |
//! |   74 | I/O error (a file could not be read or written) |
//! |   75 | `thaw bench --min-speedup`: a speed-up is below the gate |
//! |   76 | the registry answered no: no such image or tag, credentials refused |

use std::fmt;

use thaw::image::{ErrorClass, ImageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Usage = 64,
    Corrupt = 65,
    Signature = 66,
    Refused = 67,
    RestoreFailed = 68,
    CommandFailed = 69,
    Internal = 70,
    Io = 74,
    BelowGate = 75,
    Registry = 76,
}

impl Code {
    /// The code with this number, if it is one.
    pub fn from_u8(n: u8) -> Option<Code> {
        [
            Code::Usage,
            Code::Corrupt,
            Code::Signature,
            Code::Refused,
            Code::RestoreFailed,
            Code::CommandFailed,
            Code::Internal,
            Code::Io,
            Code::BelowGate,
            Code::Registry,
        ]
        .into_iter()
        .find(|c| *c as u8 == n)
    }
}

/// A failure with its exit code and a one-line message.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl fmt::Display) -> Self {
        Failure {
            code,
            message: message.to_string(),
        }
    }
}

impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        let code = match e.class() {
            ErrorClass::Io => Code::Io,
            ErrorClass::Corrupt => Code::Corrupt,
            ErrorClass::Signature => Code::Signature,
        };
        Failure::new(code, one_line(&e))
    }
}

impl From<thaw_signing::SigningError> for Failure {
    fn from(e: thaw_signing::SigningError) -> Self {
        use thaw_signing::SigningError as E;
        let code = match e {
            E::BadSignature(_) | E::Untrusted { .. } => Code::Signature,
            E::KeyTooOpen { .. } | E::Exists { .. } | E::BadKey { .. } | E::NotAFile { .. } => {
                Code::Usage
            }
            E::Io { .. } | E::Random(_) => Code::Io,
        };
        Failure::new(code, one_line(&e))
    }
}

/// The error and its causes on one line.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s.replace('\n', " ")
}

pub type Result<T = ()> = std::result::Result<T, Failure>;
