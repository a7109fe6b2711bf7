//! The terminal behind a standard descriptor: its mode (termios). A runtime sets it and then
//! trusts it (Node's readline and REPL put the terminal in raw mode and read keys one by one),
//! but the first life's end puts the terminal back as it found it, and at restore the standard
//! descriptors are the caller's. So the mode is kept with each standard descriptor that was a
//! terminal, lent to the caller's terminal for as long as the restored process runs, and the
//! caller's own mode is put back once it has ended ([`Lent`]).

use serde::{Deserialize, Serialize};

/// A terminal's mode, as `tcgetattr` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
}

impl Mode {
    /// The mode of the terminal `fd` is, if it is one.
    pub fn of(fd: i32) -> Option<Mode> {
        let t = crate::sys::tcgetattr(fd)?;
        Some(Mode {
            iflag: t.c_iflag,
            oflag: t.c_oflag,
            cflag: t.c_cflag,
            lflag: t.c_lflag,
            line: t.c_line,
            cc: t.c_cc.to_vec(),
            ispeed: t.c_ispeed,
            ospeed: t.c_ospeed,
        })
    }

    /// Raw or cbreak input: keys read one by one, as an interactive prompt does.
    pub fn raw(&self) -> bool {
        self.lflag & libc::ICANON == 0
    }

    /// `base` (the caller's terminal's mode) with the process's input, output and local modes
    /// and control characters: its line (speed, parity, character size) stays the caller's.
    fn termios(&self, base: &libc::termios) -> libc::termios {
        let mut t = *base;
        t.c_iflag = self.iflag;
        t.c_oflag = self.oflag;
        t.c_lflag = self.lflag;
        for (slot, &v) in t.c_cc.iter_mut().zip(&self.cc) {
            *slot = v;
        }
        t
    }
}

/// The caller's terminals with the process's modes lent to them (launcher side): their own
/// modes come back when this is dropped, once the process has ended.
#[derive(Debug, Default)]
pub struct Lent {
    /// (descriptor, the caller's mode) of each terminal lent.
    saved: Vec<(i32, libc::termios)>,
}

impl Lent {
    /// Lends each terminal among the caller's standard descriptors the mode the process had
    /// set on the terminal at that number, where it had one and the caller is in the
    /// terminal's foreground (a job in the background leaves it alone). Returns what to warn
    /// about: standard input was a terminal in raw mode and is not one now.
    pub fn lend(files: &[super::files::FdEntry]) -> (Lent, Vec<String>) {
        use std::os::unix::fs::MetadataExt;
        let mut lent = Lent::default();
        let mut warnings = Vec::new();
        let mut seen: Vec<u64> = Vec::new();
        for e in files
            .iter()
            .filter(|e| (0..=2).contains(&e.fd) && !e.in_flight)
        {
            let Some(mode) = &e.terminal else {
                continue;
            };
            let Some(mine) = crate::sys::tcgetattr(e.fd) else {
                if e.fd == 0 && mode.raw() {
                    warnings.push("standard input was a terminal in raw mode at the checkpoint and is not a terminal now: a runtime that asked at its start goes on treating it as one (Node's process.stdin.setRawMode fails with ENOTTY); restore it on a terminal".to_owned());
                }
                continue;
            };
            let rdev = std::fs::metadata(format!("/proc/self/fd/{}", e.fd))
                .map(|m| m.rdev())
                .unwrap_or(0);
            // (A terminal that is not the caller's controlling one has no foreground for it.)
            let foreground = crate::sys::tcgetpgrp(e.fd);
            if seen.contains(&rdev) || (foreground >= 0 && foreground != crate::sys::getpgrp()) {
                continue;
            }
            seen.push(rdev);
            let theirs = mode.termios(&mine);
            if crate::sys::tcsetattr(e.fd, &theirs).is_ok() {
                lent.saved.push((e.fd, mine));
            }
        }
        (lent, warnings)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        for (fd, mode) in &self.saved {
            let _ = crate::sys::tcsetattr(*fd, mode);
        }
    }
}

/// The SIGWINCH a terminal's resize sends (`SI_KERNEL`). At restore a process that had a
/// terminal finds another one (the caller's), maybe of another size: it is told as a resize
/// tells it (Node caches its columns and rows until a SIGWINCH; it printed for the first
/// life's terminal size).
pub fn resized() -> super::signals::PendingSignal {
    super::signals::PendingSignal::from_kernel(libc::SIGWINCH)
}
