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
    /// It ran longer than the timeout and was ended.
    Timeout { stderr: String },
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

/// What the threads watching one run report.
enum Event {
    /// The expected line, when it was read.
    Line(Duration, String),
    /// Standard output ended (or could not be read).
    OutputEnd(std::io::Result<()>),
    /// The process was reaped, when.
    Exited(std::io::Result<std::process::ExitStatus>, Duration),
    /// Standard error, all of it.
    Stderr(Vec<u8>),
}

/// Runs `argv` once with standard input on /dev/null; returns its times and the matched line.
/// After `timeout` it is sent SIGTERM (which `thaw run` forwards), two seconds later SIGKILL.
pub fn time_once(
    argv: &[OsString],
    expect: Expect,
    timeout: Duration,
) -> Result<(Timing, String), RunError> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    // Opened before anything can reap it: the timeout's signals go to this process only, never
    // to one that reused its number after it was reaped.
    let pidfd = crate::sys::pidfd_open(child.id() as i32).ok();
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both were piped")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        let _ = tx_err.send(Event::Stderr(buf));
    });
    let tx_wait = tx.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx_wait.send(Event::Exited(status, t0.elapsed()));
    });
    let pattern = match expect {
        Expect::Matching(re) => Some(re.clone()),
        _ => None,
    };
    let wants_line = !matches!(expect, Expect::Exit);
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut line = Vec::new();
        let result = loop {
            line.clear();
            match out.read_until(b'\n', &mut line) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            let at = t0.elapsed();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if wants_line && pattern.as_ref().is_none_or(|re| re.is_match(text)) {
                let _ = tx.send(Event::Line(at, text.to_owned()));
                // Drain the rest without looking at it.
                break std::io::copy(&mut out, &mut std::io::sink()).map(drop);
            }
        };
        let _ = tx.send(Event::OutputEnd(result));
    });

    let (mut first, mut matched, mut out_end, mut exited, mut err) =
        (None, String::new(), None, None, None);
    let mut deadline = t0 + timeout;
    let mut killed = None;
    let mut signals = 0;
    // Until reaped and its output is read; standard error too unless it was killed (a process it
    // left behind may hold that open).
    while exited.is_none() || out_end.is_none() || (err.is_none() && killed.is_none()) {
        let now = Instant::now();
        let event = match rx.recv_timeout(deadline.saturating_duration_since(now)) {
            Ok(event) => event,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if killed.is_some() && (exited.is_some() || signals == 2) {
                    break; // something it started still holds its output, or it cannot die
                }
                signals += 1;
                let signal = if killed.is_none() {
                    libc::SIGTERM
                } else {
                    libc::SIGKILL
                };
                if let Some(fd) = pidfd.as_ref().filter(|_| exited.is_none()) {
                    crate::sys::pidfd_send_signal(fd, signal);
                }
                killed = Some(t0.elapsed());
                deadline = Instant::now() + Duration::from_secs(2);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Event::Line(at, text) => {
                first = Some(at);
                matched = text;
            }
            Event::OutputEnd(r) => out_end = Some(r),
            Event::Exited(status, at) => exited = Some((status, at)),
            Event::Stderr(buf) => err = Some(buf),
        }
    }
    let stderr = String::from_utf8_lossy(&err.unwrap_or_default()).into_owned();
    if killed.is_some() {
        return Err(RunError::Timeout { stderr });
    }
    let (Some(read_result), Some((waited, exit))) = (out_end, exited) else {
        return Err(RunError::Timeout { stderr });
    };
    read_result.map_err(RunError::Io)?;
    let status = waited.map_err(RunError::Io)?;
    if !status.success() {
        return Err(RunError::Failed { status, stderr });
    }
    let first_line = match (expect, first) {
        (Expect::Exit, _) => exit,
        // The line was written before the process ended; a reader thread woken after the
        // waiter (a busy machine) saw it late: it was there by the exit at the latest.
        (_, Some(t)) => t.min(exit),
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
