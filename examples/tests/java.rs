//! thaw's Java library (sdk/java, built by sdk/java/build.sh) with a stock OpenJDK 17 started by
//! the `java` launcher with its default flags: examples/java restored in every mode with its PID, every thread's TID and
//! name, the answer a cold run gives, GC and new threads after the restore and random values that
//! differ in every restore; every collector Debian's JDK offers, 20 restores in a row each; the
//! CRaC-shaped API run by a program written against org.crac with only its imports changed; thaw's
//! own API (errors, priorities, restored arguments).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

const REQUEST: &str = "order 3 widget-7 and 2 gadget-12 by 2026-03-14";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The library (thaw.jar, libthaw_jni.so, libthaw.so) built by sdk/java/build.sh into `lib/`,
/// and `sources` compiled against it into `classes/`; returns the class path.
fn build(env: &Env, sources: &[PathBuf]) -> String {
    assert!(
        Path::new(JAVA_HOME).join("bin/javac").exists(),
        "Debian's openjdk-17-jdk-headless is missing: scripts/setup installs it"
    );
    let lib = env.path("lib");
    let o = Command::new(root().join("sdk/java/build.sh"))
        .arg(&lib)
        .env("THAW_LIB", bin("libthaw.so"))
        .env("JAVA_HOME", JAVA_HOME)
        .output()
        .unwrap();
    assert!(o.status.success(), "sdk/java/build.sh: {}", text(&o));
    let classes = env.path("classes");
    let jar = lib.join("thaw.jar");
    let o = Command::new(Path::new(JAVA_HOME).join("bin/javac"))
        .arg("-Xlint:all")
        .arg("-Werror")
        .arg("-cp")
        .arg(&jar)
        .arg("-d")
        .arg(&classes)
        .args(sources)
        .output()
        .unwrap();
    assert!(o.status.success(), "javac: {}", text(&o));
    format!("{}:{}", jar.display(), classes.display())
}

/// `java FLAGS -cp CP MAIN ARGS` with the stock launcher and its default flags (HotSpot's shared
/// performance-data file included), no descriptors but stdio.
fn java(cp: &str, flags: &[&str], main: &str, args: &[&str]) -> Output {
    command(&Path::new(JAVA_HOME).join("bin/java"))
        .env_remove("THAW_FD_POLICY")
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("THAW_IMAGE")
        .env_remove("THAW_KEY")
        .args(flags)
        .arg("-cp")
        .arg(cp)
        .arg(main)
        .args(args)
        .output()
        .unwrap()
}

fn example(env: &Env) -> String {
    build(env, &[root().join("examples/java/Main.java")])
}

/// The example's first life: warms up, checkpoints to `img` and exits 0.
fn checkpoint(env: &Env, cp: &str, img: &Path, flags: &[&str], report: bool) -> String {
    let mut all = vec![
        format!("-Dthaw.image={}", img.display()),
        format!("-Dthaw.key={}", env.key.display()),
    ];
    all.extend(flags.iter().map(|f| f.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let args: &[&str] = if report { &["--report"] } else { &[] };
    let o = java(cp, &all, "Main", args);
    assert_eq!(o.status.code(), Some(0), "first life: {}", text(&o));
    assert!(img.exists());
    String::from_utf8(o.stdout).unwrap()
}

fn cold_answer(cp: &str) -> String {
    let o = java(cp, &[], "Main", &["--cold", REQUEST]);
    assert_eq!(o.status.code(), Some(0), "cold: {}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("answer order: order [3x"), "{out}");
    out.lines().next().unwrap().to_string()
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn example_in_every_mode_keeps_pid_threads_and_answers_like_a_cold_run() {
    let env = Env::new();
    let cp = example(&env);
    let cold = cold_answer(&cp);
    let img = env.path("app.thaw");
    let first = checkpoint(&env, &cp, &img, &[], true);
    let m = env.manifest(&img);
    assert_ne!(
        m.process.checkpoint_tid, m.process.pid,
        "main() runs on the launcher's second thread"
    );
    let pid = format!("pid {}", m.process.pid);
    assert_eq!(lines_with(&first, "pid "), [pid.as_str()]);
    // Every thread of the image, as /proc names them (the kernel keeps 15 bytes of a name).
    let image_threads: BTreeSet<String> = m
        .threads
        .iter()
        .map(|t| format!("task {} {}", t.tid, t.name))
        .collect();
    assert!(image_threads.len() > 15, "{image_threads:?}");
    for name in ["VM Thread", "Common-Cleaner", "worker-4", "C2 CompilerThre"] {
        assert!(
            image_threads.iter().any(|t| t.ends_with(name)),
            "{name}: {image_threads:?}"
        );
    }
    let java_threads = lines_with(&first, "jthread ");
    assert!(java_threads.contains(&"jthread main"), "{first}");
    let mut randoms: Vec<String> = lines_with(&first, "random ")
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(randoms.len(), 6, "{first}");
    for opts in every_mode() {
        for _ in 0..2 {
            let o = env.restore(&img, opts, &["--report", REQUEST]);
            assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
            let out = String::from_utf8(o.stdout.clone()).unwrap();
            assert_eq!(
                out.lines().next(),
                Some(cold.as_str()),
                "{opts:?}: {}",
                text(&o)
            );
            assert_eq!(lines_with(&out, "pid "), [pid.as_str()], "{opts:?}");
            let tasks: BTreeSet<String> = lines_with(&out, "task ")
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(tasks, image_threads, "{opts:?}: TIDs and names");
            assert_eq!(lines_with(&out, "jthread "), java_threads, "{opts:?}");
            assert!(out.contains("\ngc ok\n"), "{opts:?}: {}", text(&o));
            assert!(out.contains("\nnew thread ok\n"), "{opts:?}: {}", text(&o));
            let r = lines_with(&out, "random ");
            assert_eq!(r.len(), 6, "{out}");
            randoms.extend(r.iter().map(|s| s.to_string()));
        }
    }
    // Math.random(), ThreadLocalRandom on the main thread and on every worker (all seeded in the
    // first life), new Random(), new SplittableRandom() and UUIDs: a value of its own every life.
    let distinct: HashSet<&String> = randoms.iter().collect();
    assert_eq!(distinct.len(), randoms.len(), "{randoms:#?}");
}

#[test]
fn every_collector_restores_twenty_times_in_a_row() {
    let env = Env::new();
    let cp = example(&env);
    let cold = cold_answer(&cp);
    for gc in [
        "-XX:+UseG1GC",
        "-XX:+UseSerialGC",
        "-XX:+UseParallelGC",
        "-XX:+UseShenandoahGC",
        "-XX:+UseZGC",
    ] {
        let img = env.path(&format!("app{gc}.thaw"));
        checkpoint(&env, &cp, &img, &[gc], false);
        let mut math = HashSet::new();
        for i in 0..20 {
            let opts = every_mode()[i % every_mode().len()];
            let o = env.restore(&img, opts, &["--report", REQUEST]);
            assert_eq!(o.status.code(), Some(0), "{gc} #{i} {opts:?}: {}", text(&o));
            let out = String::from_utf8(o.stdout.clone()).unwrap();
            assert_eq!(
                out.lines().next(),
                Some(cold.as_str()),
                "{gc}: {}",
                text(&o)
            );
            assert!(
                out.contains("\ngc ok\nnew thread ok\n"),
                "{gc}: {}",
                text(&o)
            );
            assert!(math.insert(lines_with(&out, "random math ")[0].to_string()));
        }
    }
}

#[test]
fn a_program_written_against_org_crac_runs_with_its_imports_changed() {
    let env = Env::new();
    let src = env.path("CracOrder.java");
    let o = Command::new("sed")
        .arg("s/org\\.crac/dev.thaw.crac/g")
        .arg(root().join("examples/tests/java/CracOrder.java"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let program = String::from_utf8(o.stdout).unwrap();
    assert!(program.contains("import dev.thaw.crac.Core;") && !program.contains("org.crac"));
    std::fs::write(&src, program).unwrap();
    let cp = build(&env, &[src]);
    let img = env.path("crac.thaw");
    let o = java(
        &cp,
        &[
            &format!("-Dthaw.image={}", img.display()),
            &format!("-Dthaw.key={}", env.key.display()),
        ],
        "CracOrder",
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let order = "before c,before d,before b,before a,after a,after b,after d,after c";
    // A refused checkpoint: every resource notified both ways; what they threw is suppressed
    // (the nested context's own exception flattened), the restore notification's too.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "refused log {order}\nrefused suppressed d refuses | b refuses | c cannot reopen\n"
        ),
        "{}",
        text(&o)
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("restored log {order}\nrestored suppressed c cannot reopen\n"),
            "{opts:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn thaw_api_errors_priorities_and_restored_arguments() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/ThawApi.java")]);
    let img = env.path("api.thaw");
    let o = java(
        &cp,
        &[],
        "ThawApi",
        &[img.to_str().unwrap(), env.key.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let order = "before late,before app2,before app1,before pool,after pool,after app1,after app2,after late";
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{}", text(&o));
    assert!(
        lines[0].starts_with("bad image code -3: ") && lines[0].contains("/nonexistent-thaw-dir"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "no image: thaw: no image path: set -Dthaw.image=PATH or THAW_IMAGE"
    );
    assert!(
        lines[2].starts_with("crac bad image: ") && lines[2].contains("/nonexistent-thaw-dir"),
        "{out}"
    );
    assert_eq!(lines[3], format!("crac bad image log {order}"));
    assert_eq!(lines[4], format!("first life goes on, log {order}"));
    let o = env.restore(&img, &[], &["x", "two words"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "restored log {order}\nrestored args [x, two words]\nrestored env ZDTM_ENV=from the launcher\n"
        ),
        "{}",
        text(&o)
    );
}

/// An image path with a character outside the BMP is the file written, encoded as the JDK
/// encodes file names (it was written under the name's modified UTF-8, another name, and the
/// program found no image where it asked for one); a path with a NUL is refused, not cut short.
#[test]
fn an_image_path_outside_the_bmp_is_the_file_written() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/ImagePath.java")]);
    let dir = env.path("paths");
    std::fs::create_dir(&dir).unwrap();
    let o = command(&Path::new(JAVA_HOME).join("bin/java"))
        .env("LC_ALL", "C.UTF-8")
        .arg("-cp")
        .arg(&cp)
        .arg("ImagePath")
        .arg(&dir)
        .arg(&env.key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "nul code -1: thaw: the image path contains a NUL character\nmissing code -3: named true\nfirst life: saved true\n",
        "{}",
        text(&o)
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["img-\u{1F600}.thaw"]);
    let o = env.restore(&dir.join("img-\u{1F600}.thaw"), &[], &["x"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "restored [x]\n",
        "{}",
        text(&o)
    );
    // In the C locale the file-name encoding (ASCII) cannot write the emoji: refused, saying
    // so, as the JDK's own file APIs refuse it (it became a '?').
    let ascii = env.path("ascii");
    std::fs::create_dir(&ascii).unwrap();
    let o = command(&Path::new(JAVA_HOME).join("bin/java"))
        .env("LC_ALL", "C")
        .arg("-cp")
        .arg(&cp)
        .arg("ImagePath")
        .arg(&ascii)
        .arg(&env.key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).ends_with("missing code -1: named true\n")
            && String::from_utf8_lossy(&o.stderr)
                .contains("cannot be written in the file-name encoding"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(&ascii).unwrap().count(), 0);
}

#[test]
fn a_refused_checkpoint_names_every_item_and_the_jvm_goes_on() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/Refused.java")]);
    let img = env.path("refused.thaw");
    let o = java(
        &cp,
        &[&format!("-Dthaw.image={}", img.display())],
        "Refused",
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", text(&o));
    assert_eq!(lines[0], "code -2");
    // The child and the pipes to its stdin, stdout and stderr, each with what to do about it.
    assert!(
        lines[1].contains("4 unsupported item(s)") && lines[1].contains("child process"),
        "{out}"
    );
    assert_eq!(
        lines[1].matches("the other end of the pipe").count(),
        3,
        "{out}"
    );
    assert!(lines[1].contains("THAW_FD_POLICY"), "{out}");
    assert_eq!(lines[2], "goes on, child exit 143");
    assert!(!img.exists());

    // A running JFR recording: every restore would write its chunk in the same repository file.
    let o = java(
        &cp,
        &[
            "-XX:StartFlightRecording",
            &format!("-Dthaw.image={}", img.display()),
        ],
        "Refused",
        &["jfr"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        // (After JFR's own startup lines.)
        out.contains("\ncode -2\n")
            && out.contains("JFR recording(s) 1 (")
            && out.contains("JFR.stop"),
        "{}",
        text(&o)
    );
    assert!(!img.exists());

    // The child left out (-Dthaw.leaveChildrenOut=true, for the CRaC-shaped API too), with the
    // pipes to it: ended by SIGKILL after restore, its output at its end, its input closed.
    let o = java(
        &cp,
        &[
            "-Dthaw.leaveChildrenOut=true",
            &format!("-Dthaw.image={}", img.display()),
            &format!("-Dthaw.key={}", env.key.display()),
        ],
        "Refused",
        &["leave"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "exit 137\nread -1\nwrite failed\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}

/// NativePRNG's /dev/urandom buffer (kept for up to 100 ms) is empty after every restore: a
/// restore close to the checkpoint must not repeat the first life's `UUID.randomUUID()`.
#[test]
fn native_prng_reads_afresh_after_a_restore() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/NativePrng.java")]);
    let img = env.path("prng.thaw");
    let opens = ["--add-opens", "java.base/sun.security.provider=ALL-UNNAMED"];
    let o = java(
        &cp,
        &opens,
        "NativePrng",
        &[img.to_str().unwrap(), env.key.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = String::from_utf8_lossy(&o.stdout);
    let n: u32 = before
        .trim()
        .strip_prefix("buffered before ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{before}"));
    assert!(n > 0, "the first life's buffer holds bytes: {before}");
    differs_per_restore(&env, &img, "buffered after 0 ");
}

/// The JDK's seeders of DRBG and SHA1PRNG, seeded in the first life, are reseeded after every
/// restore: a `SecureRandom.getInstance("DRBG")` or `("SHA1PRNG")` made after the restore, and
/// `UUID.randomUUID()` and a `KeyGenerator`'s key where DRBG is the default
/// (`-Djava.security.egd=file:/dev/./urandom`), each differ from one restore to the next (they
/// were the same in every restore). So do the DRBG, SHA1PRNG and default `SecureRandom` made and
/// used in the first life and kept in the application's fields, and the client random of a TLS
/// ClientHello from the first life's `SSLContext.getDefault()` (they repeated their sequence in
/// every restore), while a SHA1PRNG made but not used in the first life and seeded after the
/// restore gives that seed's sequence.
#[test]
fn drbg_and_sha1prng_seeded_in_the_first_life_differ_per_restore() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/SeededPrng.java")]);
    let img = env.path("seeded.thaw");
    let o = java(
        &cp,
        &["-Djava.security.egd=file:/dev/./urandom"],
        "SeededPrng",
        &[img.to_str().unwrap(), env.key.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout);
    assert_eq!(first.trim(), "default DRBG", "{}", text(&o));
    let values = |o: &Output| -> Vec<String> {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        let out = String::from_utf8_lossy(&o.stdout);
        let v: Vec<String> = out
            .trim()
            .strip_prefix("after 0 ")
            .unwrap_or_else(|| panic!("{}", text(o)))
            .split(' ')
            .map(str::to_owned)
            .collect();
        assert_eq!(v.len(), 9, "{}", text(o));
        v
    };
    let a = values(&env.restore(&img, &[], &[]));
    let b = values(&env.restore(&img, &[], &[]));
    for (i, what) in [
        "new DRBG",
        "new SHA1PRNG",
        "UUID",
        "AES key",
        "kept DRBG",
        "kept SHA1PRNG",
        "kept new SecureRandom()",
        "TLS client random",
    ]
    .iter()
    .enumerate()
    {
        assert_ne!(a[i], b[i], "{what}: the same in two restores");
    }
    assert_eq!(
        (a[8].as_str(), b[8].as_str()),
        ("true", "true"),
        "a SHA1PRNG unused in the first life and seeded after the restore"
    );
}

/// A SIGTERM another process sends while the program's own before-checkpoint work runs (inside
/// `Thaw.holdSignals()`): the first life's shutdown hooks run on it once the checkpoint returns
/// (exit 143), and each restore goes on without it.
#[test]
fn a_sigterm_sent_during_the_checkpoint_shuts_down_the_first_life_alone() {
    let env = Env::new();
    let cp = build(&env, &[root().join("examples/tests/java/HeldSignal.java")]);
    let img = env.path("held.thaw");
    let o = java(
        &cp,
        &[],
        "HeldSignal",
        &[img.to_str().unwrap(), env.key.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(143), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "shutdown\n",
        "{}",
        text(&o)
    );
    for opts in [&[][..], &["--pid-mode", "ns"][..]] {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "restored\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}
