//! One timed run of a command: from just before the spawn to the first line of its standard
//! output that matches, and to its exit. Its output is drained to the end (a program whose
//! standard output is closed early may fail writing); its standard error is kept for messages.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

/// The times of one run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub first_line: Duration,
    pub exit: Duration,
}

/// Why a run gave no timing.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// Its standard output ended without a matching line; it exited with `status`.
    NoMatch {
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// It exited unsuccessfully (after printing a matching line or not).
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// Reading its output failed.
    Io(std::io::Error),
}

/// What a run is expected to print before it counts as answered.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The first line (any line).
    FirstLine,
    /// The first line that matches.
    Matching(&'a Regex),
    /// Nothing: the time to exit only (the spawn baseline).
    Exit,
}

/// Runs `argv` once with standard input on /dev/null; returns its times and the matched line.
pub fn time_once(argv: &[OsString], expect: Expect) -> Result<(Timing, String), RunError> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both were piped")
    };
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut out = BufReader::new(stdout);
    let mut first = None;
    let mut matched = String::new();
    let mut line = Vec::new();
    let read_result = loop {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        let at = t0.elapsed();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let hit = match expect {
            Expect::FirstLine => true,
            Expect::Matching(re) => re.is_match(text),
            Expect::Exit => false,
        };
        if hit {
            first = Some(at);
            matched = text.to_owned();
            // Drain the rest without looking at it.
            break std::io::copy(&mut out, &mut std::io::sink()).map(drop);
        }
    };
    let waited = child.wait();
    let exit = t0.elapsed();
    let stderr = err_reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    read_result.map_err(RunError::Io)?;
    let status = waited.map_err(RunError::Io)?;
    if !status.success() {
        return Err(RunError::Failed { status, stderr });
    }
    let first_line = match (expect, first) {
        (Expect::Exit, _) => exit,
        (_, Some(t)) => t,
        (_, None) => return Err(RunError::NoMatch { status, stderr }),
    };
    Ok((Timing { first_line, exit }, matched))
}

/// The last line of `stderr` that says something (for a one-line error message).
pub fn last_line(stderr: &str) -> Option<&str> {
    // The launcher's own failure is its `thaw: ` line; otherwise the last line.
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .rfind(|l| l.starts_with("thaw: ") && !l.starts_with("thaw: warning: "))
        .or_else(|| lines().next_back())
}
