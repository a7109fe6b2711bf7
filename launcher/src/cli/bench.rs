//! `thaw bench --cold 'CMD ARGS' [OPTIONS] IMAGE [-- ARGS...]`: the cold start against restores of
//! IMAGE, alternately, timed to the first (matching) line of output and to exit.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::TrustArgs;
use crate::bench::measure::{self, Expect, RunError, Timing};
use crate::bench::report::{Gate, Report, Series, NOISY_CV, SCHEMA};
use crate::bench::{plot, stats};
use crate::exit::{Code, Failure, Result};

/// A restore mode to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `thaw run IMAGE` as it is: host PID mode and lazy memory when permitted.
    Lazy,
    /// `thaw run --eager IMAGE`.
    Eager,
    /// `thaw run --pid-mode ns IMAGE`.
    Ns,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Lazy => "lazy",
            Mode::Eager => "eager",
            Mode::Ns => "ns",
        }
    }

    fn options(self) -> &'static [&'static str] {
        match self {
            Mode::Lazy => &[],
            Mode::Eager => &["--eager"],
            Mode::Ns => &["--pid-mode", "ns"],
        }
    }
}

/// Measure a warm start: the cold command against restores of IMAGE, with statistics.
///
/// Runs the cold command and `thaw run IMAGE -- ARGS` alternately, times each to its first line of
/// output (or the first line matching --match) and to its exit, and reports min, median,
/// mean ± σ and max of each and the speed-up with a 95 % bootstrap interval. Exits 0; 75 when a
/// speed-up is below --min-speedup; 69 when a command fails or never prints a matching line; a
/// failing restore's own code (65-68). Reports: docs/cli.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cold start: a command line, split into words as a POSIX shell would (quotes and
    /// backslashes; no variables, globs or redirections).
    #[arg(long, value_name = "'CMD ARGS'")]
    cold: String,
    /// Measured runs of each command.
    #[arg(long, default_value_t = 10, value_name = "N")]
    runs: usize,
    /// Runs of each command before measuring (the first restore records the working set).
    #[arg(long, default_value_t = 2, value_name = "W")]
    warmup: usize,
    /// Time to the first line of standard output that matches this regular expression (default:
    /// the first line).
    #[arg(long = "match", value_name = "REGEX")]
    pattern: Option<String>,
    /// End a run (SIGTERM, SIGKILL two seconds later) that has not exited after SECS seconds, and
    /// fail.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    timeout: f64,
    /// Restore modes to measure side by side: lazy (`thaw run` as is), eager (--eager), ns
    /// (--pid-mode ns).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "lazy")]
    modes: Vec<Mode>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Also write the report as JSON (schema thaw-bench/1, docs/cli.md) to FILE; `-`: to standard
    /// output instead of the text report.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the report as a Markdown table to FILE; `-`: to standard output instead of the
    /// text report.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write an SVG plot of the distributions to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Exit 75 when a mode's speed-up (median to the first line) is below X.
    #[arg(long, value_name = "X")]
    min_speedup: Option<f64>,
    /// The signed image to restore.
    image: PathBuf,
    /// Arguments for the restored process (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::Usage, msg)
}

/// The launcher's own codes that a failing `thaw run` passes on as they are.
fn launcher_code(code: i32) -> Option<Code> {
    [
        Code::Usage,
        Code::Corrupt,
        Code::Signature,
        Code::Refused,
        Code::RestoreFailed,
        Code::Io,
    ]
    .into_iter()
    .find(|c| *c as i32 == code)
}

struct Subject {
    name: String,
    argv: Vec<OsString>,
    restore: bool,
    first: Vec<f64>,
    exit: Vec<f64>,
    line: String,
}

impl Subject {
    fn new(name: &str, argv: Vec<OsString>, restore: bool) -> Self {
        Subject {
            name: name.to_owned(),
            argv,
            restore,
            first: Vec::new(),
            exit: Vec::new(),
            line: String::new(),
        }
    }

    fn shown(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn time(&mut self, expect: Expect, how: (Option<&str>, Duration), record: bool) -> Result {
        let (pattern, timeout) = how;
        let (t, line) = measure::time_once(&self.argv, expect, timeout)
            .map_err(|e| self.failure(e, pattern, timeout))?;
        if record {
            let Timing { first_line, exit } = t;
            self.first.push(millis(first_line));
            self.exit.push(millis(exit));
            self.line = line;
        }
        Ok(())
    }

    fn failure(&self, e: RunError, pattern: Option<&str>, timeout: Duration) -> Failure {
        let who = if self.restore {
            format!("restore ({})", self.name)
        } else {
            format!("cold command `{}`", self.shown())
        };
        let said = |stderr: &str| {
            measure::last_line(stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        };
        match e {
            RunError::Spawn(e) => Failure::new(
                Code::CommandFailed,
                format!("{who} could not be started: {e}"),
            ),
            RunError::Io(e) => Failure::new(Code::Io, format!("{who}: reading its output: {e}")),
            RunError::Timeout { stderr } => Failure::new(
                Code::CommandFailed,
                format!(
                    "{who} did not finish within --timeout {} s and was ended{}",
                    timeout.as_secs_f64(),
                    said(&stderr)
                ),
            ),
            RunError::NoMatch { status, stderr } => Failure::new(
                Code::CommandFailed,
                format!(
                    "{who} ended its output without {} ({status}){}",
                    match pattern {
                        Some(p) => format!("a line matching /{p}/"),
                        None => "printing a line".to_owned(),
                    },
                    said(&stderr)
                ),
            ),
            RunError::Failed { status, stderr } => {
                let code = if self.restore {
                    status
                        .code()
                        .and_then(launcher_code)
                        .filter(|_| {
                            measure::last_line(&stderr).is_some_and(|l| l.starts_with("thaw: "))
                        })
                        .unwrap_or(Code::CommandFailed)
                } else {
                    Code::CommandFailed
                };
                let said = said(&stderr);
                let said = said
                    .strip_prefix(": thaw: ")
                    .map(|s| format!(": {s}"))
                    .unwrap_or(said);
                Failure::new(code, format!("{who} failed ({status}){said}"))
            }
        }
    }

    fn series(&self, cold: Option<&Subject>) -> Series {
        let ratio = |c: &[f64], r: &[f64]| stats::ratio_of_medians(c, r, 10_000, 0.95);
        Series {
            name: self.name.clone(),
            command: self
                .argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            first_line: stats::summarize(&self.first),
            exit: stats::summarize(&self.exit),
            first_line_ms: self.first.clone(),
            exit_ms: self.exit.clone(),
            outliers: stats::outliers(&self.first),
            line: self.line.clone(),
            speedup: cold.map(|c| ratio(&c.first, &self.first)),
            speedup_exit: cold.map(|c| ratio(&c.exit, &self.exit)),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A progress bar on standard error, drawn only when it is a terminal.
struct Progress {
    on: bool,
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if !self.on {
            return;
        }
        let width = 30;
        let filled = self.done * width / self.total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{}{}] {}/{} {what}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn write_out(path: &std::path::Path, what: &str, text: &str) -> Result {
    if path.as_os_str() == "-" {
        return out!("{text}");
    }
    std::fs::write(path, text).map_err(|e| {
        Failure::new(
            Code::Io,
            format!("writing the {what} to {}: {e}", path.display()),
        )
    })
}

pub fn run(args: Args) -> Result {
    if args.runs == 0 {
        return Err(usage("--runs must be at least 1"));
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 1e9) {
        return Err(usage(format!(
            "--timeout {}: not a positive number of seconds",
            args.timeout
        )));
    }
    if let Some(x) = args.min_speedup {
        if !(x.is_finite() && x > 0.0) {
            return Err(usage(format!("--min-speedup {x}: not a positive number")));
        }
    }
    let cold_words = shlex::split(&args.cold).ok_or_else(|| {
        usage(format!(
            "--cold {:?}: unbalanced quotes or a trailing backslash",
            args.cold
        ))
    })?;
    if cold_words.is_empty() {
        return Err(usage("--cold: empty command"));
    }
    let re = match &args.pattern {
        Some(p) => Some(Regex::new(p).map_err(|e| {
            usage(format!(
                "--match {p:?}: not a regular expression: {}",
                e.to_string().lines().last().unwrap_or_default().trim()
            ))
        })?),
        None => None,
    };
    let expect = re.as_ref().map_or(Expect::FirstLine, Expect::Matching);
    let mut modes = args.modes.clone();
    modes.dedup();
    modes = modes
        .iter()
        .enumerate()
        .filter(|(i, m)| !modes[..*i].contains(m))
        .map(|(_, m)| *m)
        .collect();
    if !args.image.exists() {
        return Err(Failure::new(
            Code::Io,
            format!("{}: no such image", args.image.display()),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            Code::Internal,
            format!("finding the launcher's own binary: {e}"),
        )
    })?;

    let mut subjects = vec![Subject::new(
        "cold",
        cold_words.iter().map(OsString::from).collect(),
        false,
    )];
    for m in &modes {
        let mut argv: Vec<OsString> = vec![exe.clone().into(), "run".into()];
        for t in &args.trust.files {
            argv.push("--trust".into());
            argv.push(t.clone().into());
        }
        argv.extend(m.options().iter().map(OsString::from));
        argv.push(args.image.clone().into());
        if !args.args.is_empty() {
            argv.push("--".into());
            argv.extend(args.args.iter().cloned());
        }
        subjects.push(Subject::new(m.name(), argv, true));
    }
    let mut spawn = Subject::new("spawn", vec!["/bin/true".into()], false);

    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        done: 0,
        total: (args.warmup + args.runs) * (subjects.len() + 1),
    };
    let how = (
        args.pattern.as_deref(),
        Duration::from_secs_f64(args.timeout),
    );
    for i in 0..args.warmup + args.runs {
        let record = i >= args.warmup;
        let phase = if record { "" } else { " (warm-up)" };
        for s in subjects.iter_mut() {
            progress.step(&format!("{}{phase}", s.name));
            if let Err(e) = s.time(expect, how, record) {
                progress.clear();
                return Err(e);
            }
        }
        progress.step(&format!("spawn{phase}"));
        if let Err(e) = spawn.time(Expect::Exit, (None, how.1), record) {
            progress.clear();
            return Err(e);
        }
    }
    progress.clear();

    let cold = &subjects[0];
    let mut series = vec![cold.series(None)];
    series.extend(subjects[1..].iter().map(|s| s.series(Some(cold))));
    let mut warnings = Vec::new();
    let noisy_ones: Vec<String> = series
        .iter()
        .filter(|s| s.first_line.cv > NOISY_CV)
        .map(|s| format!("{} {:.0} %", s.name, s.first_line.cv * 100.0))
        .collect();
    let noisy = !noisy_ones.is_empty();
    if noisy {
        warnings.push(format!(
            "the machine is noisy: times to the first line vary by more than {:.0} % (coefficient of variation: {}); compare within one run, or add --runs",
            NOISY_CV * 100.0,
            noisy_ones.join(", ")
        ));
    }
    for s in &series {
        if !s.outliers.is_empty() {
            let n = s.outliers.len();
            warnings.push(format!(
                "{}: {n} of {} runs {} beyond 1.5 IQR of the quartiles (outliers): run{} {}",
                s.name,
                s.first_line_ms.len(),
                if n == 1 { "is" } else { "are" },
                if n == 1 { "" } else { "s" },
                s.outliers
                    .iter()
                    .map(|i| (i + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let gate = args.min_speedup.map(|min| {
        let below: Vec<String> = series
            .iter()
            .filter(|s| s.speedup.is_some_and(|r| r.estimate < min))
            .map(|s| s.name.clone())
            .collect();
        Gate {
            min_speedup: min,
            passed: below.is_empty(),
            below,
        }
    });
    let report = Report {
        schema: SCHEMA,
        image: args.image.display().to_string(),
        cold: cold_words,
        args: args
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        pattern: args.pattern.clone(),
        runs: args.runs,
        warmup: args.warmup,
        spawn: spawn.series(None),
        series,
        noisy,
        warnings,
        gate,
    };
    let dash = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if !dash(&args.json) && !dash(&args.markdown) {
        out!("{}", report.text())?;
    }
    for w in &report.warnings {
        errln!("thaw: warning: {w}");
    }
    if let Some(p) = &args.json {
        write_out(p, "JSON report", &report.json())?;
    }
    if let Some(p) = &args.markdown {
        write_out(p, "Markdown report", &report.markdown())?;
    }
    if let Some(p) = &args.plot {
        write_out(p, "plot", &plot::svg(&report))?;
    }
    match &report.gate {
        Some(g) if !g.passed => Err(Failure::new(
            Code::BelowGate,
            format!(
                "speed-up below --min-speedup {}: {}",
                g.min_speedup,
                report
                    .series
                    .iter()
                    .filter(|s| g.below.contains(&s.name))
                    .filter_map(|s| s.speedup.map(|r| format!("{} {:.2}×", s.name, r.estimate)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        _ => Ok(()),
    }
}
