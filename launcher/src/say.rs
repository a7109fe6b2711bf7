//! The launcher's own messages, written without panicking.
//!
//! `println!` and `eprintln!` panic when their stream cannot be written (`2>/dev/full`, a pipe
//! whose reader has gone, `| head -1`): the launcher would end with Rust's 101 instead of the
//! command's code, and a panic while a restored process runs would leave it unsupervised.
//! Here a message on standard error that cannot be written is dropped; standard output that
//! cannot be written ends the command with an I/O error (74), except a reader that has gone
//! (EPIPE), which is what `| head` does on purpose: the rest of the output is dropped quietly
//! and the command ends with the status it would have had.

use std::io::Write;

use crate::exit::{Code, Failure, Result};

/// A line on standard error, dropped if it cannot be written.
macro_rules! errln {
    () => {
        $crate::say::err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::say::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Text on standard error (no newline added), dropped if it cannot be written.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::say::err(format_args!($($arg)*))
    };
}

/// A line on standard output; a `Result` (see the module's notes).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::say::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Text on standard output (no newline added); a `Result` (see the module's notes).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::say::out(format_args!($($arg)*))
    };
}

/// Writes `args` to standard error in one write where it can (a line is not interleaved with
/// another thread's or the restored process's); an error is ignored.
pub fn err(args: std::fmt::Arguments) {
    let text = args.to_string();
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes `args` to standard output and flushes it. A reader that has gone (EPIPE) is not an
/// error; any other failure is an I/O error naming standard output.
pub fn out(args: std::fmt::Arguments) -> Result {
    let mut o = std::io::stdout().lock();
    match o.write_fmt(args).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(
            Code::Io,
            format!("cannot write to standard output: {e}"),
        )),
    }
}
