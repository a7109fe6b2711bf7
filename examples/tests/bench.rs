//! `thaw bench` end to end: real cold starts of examples/counter against restores of its image.
//! No assertion depends on how fast anything is, except through the gate with thresholds no
//! machine can miss (1× against a 2M-entry warm-up, and 10^9×).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const USAGE: i32 = 64;
const CORRUPT: i32 = 65;
const SIGNATURE: i32 = 66;
const COMMAND_FAILED: i32 = 69;
const BELOW_GATE: i32 = 75;

/// An environment with a signed image of counter.
fn counter_image() -> (Env, PathBuf) {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    (env, img)
}

/// `thaw bench --trust k.pub OPTS IMAGE -- ARGS`, with the test's own cache.
fn bench(env: &Env, image: &Path, opts: &[&str], args: &[&str]) -> Output {
    let mut c = command(&bin("thaw"));
    c.env("THAW_CACHE_DIR", env.path("cache"))
        .arg("bench")
        .arg("--trust")
        .arg(&env.pubkey)
        .args(opts)
        .arg(image);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    c.output().unwrap()
}

fn cold_counter(arg: &str) -> String {
    format!("{} - {arg}", bin("counter").display())
}

/// One clear line on stderr, starting `thaw: `, no panic.
fn one_error_line(o: &Output, code: i32, says: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("thaw: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(o));
    assert!(
        lines[0].starts_with("thaw: ") && lines[0].contains(says),
        "expected `{says}`: {}",
        text(o)
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_summary(v: &serde_json::Value, what: &str) {
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{what}.{k} missing: {v}"))
    };
    assert!(f("min_ms") > 0.0, "{what}: {v}");
    assert!(
        f("min_ms") <= f("q1_ms") && f("q1_ms") <= f("median_ms"),
        "{what}: {v}"
    );
    assert!(
        f("median_ms") <= f("q3_ms") && f("q3_ms") <= f("max_ms"),
        "{what}: {v}"
    );
    assert!(
        f("min_ms") <= f("mean_ms") && f("mean_ms") <= f("max_ms"),
        "{what}: {v}"
    );
    assert!(f("stddev_ms") >= 0.0 && f("cv") >= 0.0, "{what}: {v}");
}

fn check_series(s: &serde_json::Value, name: &str, runs: usize) {
    assert_eq!(s["name"], name, "{s}");
    assert!(
        s["command"].as_array().is_some_and(|c| !c.is_empty()),
        "{s}"
    );
    check_summary(&s["first_line"], &format!("{name}.first_line"));
    check_summary(&s["exit"], &format!("{name}.exit"));
    let first = s["first_line_ms"].as_array().unwrap();
    let exit = s["exit_ms"].as_array().unwrap();
    assert_eq!((first.len(), exit.len()), (runs, runs), "{s}");
    // Every run's first line comes before (or with) its exit.
    for (f, e) in first.iter().zip(exit) {
        assert!(f.as_f64().unwrap() <= e.as_f64().unwrap(), "{s}");
    }
    assert!(s["outliers"].as_array().is_some(), "{s}");
    assert!(s["line"].is_string(), "{s}");
}

#[test]
fn json_report_and_a_gate_that_passes() {
    let (env, img) = counter_image();
    let report = env.path("r.json");
    let markdown = env.path("r.md");
    let svg = env.path("r.svg");
    let o = bench(
        &env,
        &img,
        &[
            "--cold",
            &cold_counter("7"),
            "--runs",
            "3",
            "--warmup",
            "1",
            "--min-speedup",
            "1",
            "--json",
            report.to_str().unwrap(),
            "--markdown",
            markdown.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        &["7"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("speed-up") && out.contains("gate:"), "{out}");

    let v = json(&report);
    assert_eq!(v["schema"], "thaw-bench/1");
    assert_eq!(v["image"], img.to_str().unwrap());
    assert_eq!(v["args"], serde_json::json!(["7"]));
    assert_eq!(v["cold"][1], "-");
    assert!(v["match"].is_null());
    assert_eq!(
        (v["runs"].as_u64(), v["warmup"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(v["noisy"].is_boolean() && v["warnings"].is_array(), "{v}");
    check_series(&v["spawn"], "spawn", 3);
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{v}");
    check_series(&series[0], "cold", 3);
    check_series(&series[1], "lazy", 3);
    assert!(series[0]["speedup"].is_null(), "{v}");
    // Both answered the same request; the restore with its original PID's line.
    for s in series {
        let line = s["line"].as_str().unwrap();
        assert!(
            line.starts_with("counter: pid=") && line.contains("table[7]="),
            "{s}"
        );
    }
    for key in ["speedup", "speedup_exit"] {
        let r = &series[1][key];
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{key}.{k}: {r}"));
        assert!(
            f("ci_low") <= f("estimate") && f("estimate") <= f("ci_high"),
            "{r}"
        );
        assert_eq!(f("confidence"), 0.95);
    }
    assert_eq!(v["gate"]["min_speedup"], 1.0);
    assert_eq!(v["gate"]["passed"], true);
    assert_eq!(v["gate"]["below"], serde_json::json!([]));

    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.contains("| cold |") && md.contains("| lazy |"), "{md}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(
        svg.matches("<circle").count(),
        3 * 3,
        "a dot per run and series"
    );
}

#[test]
fn a_gate_no_restore_can_pass_fails_with_its_own_code() {
    let (env, img) = counter_image();
    let report = env.path("r.json");
    let o = bench(
        &env,
        &img,
        &[
            "--cold",
            &cold_counter("1"),
            "--runs",
            "2",
            "--warmup",
            "0",
            "--min-speedup",
            "1e9",
            "--json",
            report.to_str().unwrap(),
        ],
        &["1"],
    );
    one_error_line(&o, BELOW_GATE, "below --min-speedup 1000000000: lazy ");
    // The report is still written, for the pipeline's log.
    let v = json(&report);
    assert_eq!(v["gate"]["passed"], false);
    assert_eq!(v["gate"]["below"], serde_json::json!(["lazy"]));
}

#[test]
fn first_line_timing_waits_for_the_matching_line() {
    let (env, img) = counter_image();
    // The cold command says something before its answer.
    let cold = format!("sh -c 'echo warming up; exec {}'", cold_counter("3"));
    let report = env.path("r.json");
    let run = |opts: &[&str]| {
        let mut all = vec![
            "--cold", &cold, "--runs", "2", "--warmup", "0", "--json", "-",
        ];
        all.extend_from_slice(opts);
        let o = bench(&env, &img, &all, &["3"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v
    };
    let plain = run(&[]);
    assert_eq!(plain["series"][0]["line"], "warming up", "{plain}");
    let matched = run(&["--match", r"^counter: .*table\[3\]="]);
    assert_eq!(matched["match"], r"^counter: .*table\[3\]=");
    for s in matched["series"].as_array().unwrap() {
        let line = s["line"].as_str().unwrap();
        assert!(line.starts_with("counter: pid="), "{s}");
        check_series(s, s["name"].as_str().unwrap(), 2);
    }
    assert!(!report.exists());
}

#[test]
fn bad_input_is_one_clear_line_with_a_distinct_code() {
    let (env, img) = counter_image();
    let cold = cold_counter("1");
    let quick = |opts: &[&str], args: &[&str]| {
        let mut all = vec!["--runs", "1", "--warmup", "0"];
        all.extend_from_slice(opts);
        bench(&env, &img, &all, args)
    };
    // A command that never prints, and one that never prints a matching line.
    one_error_line(
        &quick(&["--cold", "true"], &[]),
        COMMAND_FAILED,
        "cold command `true` ended its output without printing a line",
    );
    one_error_line(
        &quick(&["--cold", "echo hello", "--match", "^bye"], &[]),
        COMMAND_FAILED,
        "without a line matching /^bye/",
    );
    one_error_line(
        &quick(&["--cold", "sh -c 'echo oops >&2; exit 3'"], &[]),
        COMMAND_FAILED,
        "failed (exit status: 3): oops",
    );
    one_error_line(
        &quick(&["--cold", "/nonexistent/cold"], &[]),
        COMMAND_FAILED,
        "could not be started",
    );
    // A command that never finishes, ended by --timeout.
    one_error_line(
        &quick(&["--cold", "sleep 600", "--timeout", "0.2"], &[]),
        COMMAND_FAILED,
        "cold command `sleep 600` did not finish within --timeout 0.2 s and was ended",
    );
    // N = 0, an unparsable command, a bad regex, an empty command.
    one_error_line(
        &bench(&env, &img, &["--cold", &cold, "--runs", "0"], &[]),
        USAGE,
        "--runs must be at least 1",
    );
    one_error_line(
        &quick(&["--cold", "echo 'unclosed"], &[]),
        USAGE,
        "unbalanced quotes",
    );
    one_error_line(&quick(&["--cold", ""], &[]), USAGE, "empty command");
    one_error_line(
        &quick(&["--cold", &cold, "--match", "(unclosed"], &[]),
        USAGE,
        "not a regular expression",
    );

    // Images that fail to restore: the restore's own error, with its code.
    let untrusted = Env::new();
    let o = bench(&untrusted, &img, &["--cold", &cold, "--runs", "1"], &["1"]);
    one_error_line(&o, SIGNATURE, "restore (lazy) failed (exit status: 66): ");
    let truncated = env.path("truncated.thaw");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = bench(
        &env,
        &truncated,
        &["--cold", &cold, "--runs", "1", "--warmup", "0"],
        &["1"],
    );
    one_error_line(&o, CORRUPT, "restore (lazy) failed (exit status: 65): ");
}
