//! What `thaw bench` measured, and its three renderings: text for people, JSON (schema
//! `thaw-bench/1`, documented in docs/cli.md) and Markdown for pipelines.

use std::fmt::Write as _;

use serde::Serialize;

use super::stats::{Ratio, Summary};

pub const SCHEMA: &str = "thaw-bench/1";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub image: String,
    /// The cold command, split into words.
    pub cold: Vec<String>,
    /// Arguments for the restored process (after `--`).
    pub args: Vec<String>,
    /// The --match pattern; null: the first line counts.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub runs: usize,
    pub warmup: usize,
    /// fork+exec of /bin/true until it exits, measured the same way (not subtracted).
    pub spawn: Series,
    /// The cold command first, then one series per restore mode in --modes order.
    pub series: Vec<Series>,
    /// Some series varies by more than NOISY_CV (coefficient of variation).
    pub noisy: bool,
    pub warnings: Vec<String>,
    pub gate: Option<Gate>,
}

#[derive(Debug, Serialize)]
pub struct Series {
    /// "cold", "lazy", "eager", "ns" or "spawn".
    pub name: String,
    pub command: Vec<String>,
    pub first_line: Summary,
    pub exit: Summary,
    /// Every measured run, in order (milliseconds).
    pub first_line_ms: Vec<f64>,
    pub exit_ms: Vec<f64>,
    /// Indices of runs whose time to the first line is beyond 1.5 IQR of the quartiles.
    pub outliers: Vec<usize>,
    /// The matching line of the last run.
    pub line: String,
    /// Restore modes: cold median / this median, to the first line, with its interval.
    pub speedup: Option<Ratio>,
    /// The same, to exit.
    pub speedup_exit: Option<Ratio>,
}

#[derive(Debug, Serialize)]
pub struct Gate {
    pub min_speedup: f64,
    pub passed: bool,
    /// The modes whose speed-up (point estimate, to the first line) is below min_speedup.
    pub below: Vec<String>,
}

/// A coefficient of variation above this gets a warning: the machine is noisy.
pub const NOISY_CV: f64 = 0.10;

/// Milliseconds with three significant digits (at least one decimal below 10 ms).
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn times(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.2}×")
    }
}

fn ratio(r: &Ratio) -> String {
    format!(
        "{} [{}–{}]",
        times(r.estimate),
        times(r.ci_low).trim_end_matches('×'),
        times(r.ci_high).trim_end_matches('×')
    )
}

fn summary_cells(s: &Summary) -> [String; 4] {
    [
        ms(s.median_ms),
        format!("{} ± {}", ms(s.mean_ms), ms(s.stddev_ms)),
        ms(s.min_ms),
        ms(s.max_ms),
    ]
}

impl Report {
    pub fn text(&self) -> String {
        let mut o = String::new();
        let what = match &self.pattern {
            Some(p) => format!("the first line matching /{p}/"),
            None => "the first line".to_owned(),
        };
        let _ = writeln!(
            o,
            "{} runs each after {} warm-up, alternating; from spawn to {what} and to exit",
            self.runs, self.warmup
        );
        let _ = writeln!(
            o,
            "spawn (fork+exec /bin/true to exit): median {}, not subtracted",
            ms(self.spawn.exit.median_ms)
        );
        let width = self.series.iter().map(|s| s.name.len()).max().unwrap_or(4);
        let _ = writeln!(
            o,
            "{:width$}  {:10}  {:>9}  {:>21}  {:>9}  {:>9}",
            "", "", "median", "mean ± σ", "min", "max"
        );
        for s in &self.series {
            for (label, sum) in [("first line", &s.first_line), ("exit", &s.exit)] {
                let [median, mean, min, max] = summary_cells(sum);
                let name = if label == "exit" { "" } else { &s.name };
                let _ = writeln!(
                    o,
                    "{name:width$}  {label:10}  {median:>9}  {mean:>21}  {min:>9}  {max:>9}"
                );
            }
            if let (Some(r), Some(e)) = (&s.speedup, &s.speedup_exit) {
                let _ = writeln!(
                    o,
                    "{:width$}  {:10}  {} to the first line, {} to exit ({:.0} % intervals)",
                    "",
                    "speed-up",
                    ratio(r),
                    ratio(e),
                    r.confidence * 100.0
                );
            }
        }
        if let Some(g) = &self.gate {
            let _ = if g.passed {
                writeln!(
                    o,
                    "gate: every speed-up is at least {}",
                    times(g.min_speedup)
                )
            } else {
                writeln!(
                    o,
                    "gate: FAILED: {} below {}",
                    g.below.join(", "),
                    times(g.min_speedup)
                )
            };
        }
        o
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let what = match &self.pattern {
            Some(p) => format!("the first line matching `{p}`"),
            None => "the first line".to_owned(),
        };
        let _ = writeln!(
            o,
            "`thaw bench`: `{}` vs. `thaw run {}`, {} runs each after {} warm-up; time from spawn to {what} and to exit. Spawn (fork+exec `/bin/true`): {}.\n",
            self.cold.join(" "),
            self.image,
            self.runs,
            self.warmup,
            ms(self.spawn.exit.median_ms)
        );
        let _ = writeln!(
            o,
            "| | first line: median | mean ± σ | min | max | exit: median | mean ± σ | speed-up (first line) | speed-up (exit) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &self.series {
            let [m, mean, min, max] = summary_cells(&s.first_line);
            let [em, emean, _, _] = summary_cells(&s.exit);
            let sp = s.speedup.as_ref().map(ratio).unwrap_or_else(|| "—".into());
            let spe = s
                .speedup_exit
                .as_ref()
                .map(ratio)
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                o,
                "| {} | {m} | {mean} | {min} | {max} | {em} | {emean} | {sp} | {spe} |",
                s.name
            );
        }
        for w in &self.warnings {
            let _ = writeln!(o, "\n> warning: {w}");
        }
        if let Some(g) = &self.gate {
            let _ = writeln!(
                o,
                "\nGate ≥ {}: {}",
                times(g.min_speedup),
                if g.passed { "passed" } else { "**failed**" }
            );
        }
        o
    }

    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
