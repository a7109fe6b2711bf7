//! A stock OpenJDK 17 started by the `java` launcher with its default flags (but the one that
//! keeps HotSpot's performance data out of a shared file): main() checkpoints from the launcher's
//! second thread, holding the JDK's half-closed socket pair; restored in every mode with G1 and
//! with ZGC (its heap in a memfd mapped three times). With the default flags the checkpoint is
//! refused, naming the flag to use.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

/// Compiles Warm.java and the JNI bridge into `dir`.
fn build(env: &Env) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = env.path("jvm");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        Path::new(JAVA_HOME).join("bin/javac").exists(),
        "Debian's openjdk-17-jdk-headless is missing: scripts/setup installs it"
    );
    let o = Command::new(Path::new(JAVA_HOME).join("bin/javac"))
        .arg("-d")
        .arg(&dir)
        .arg(root.join("examples/jvm/Warm.java"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    cc_with_libthaw(
        &[&root.join("examples/jvm/thaw_jni.c")],
        &[
            "-shared",
            "-fPIC",
            &format!("-I{JAVA_HOME}/include"),
            &format!("-I{JAVA_HOME}/include/linux"),
        ],
        &dir.join("libthaw_jni.so"),
    );
    dir
}

fn java(dir: &Path, flags: &[&str], img: &Path, key: &Path) -> std::process::Output {
    command(&Path::new(JAVA_HOME).join("bin/java"))
        .env_remove("THAW_FD_POLICY")
        .env_remove("JAVA_TOOL_OPTIONS")
        .arg(format!("-Djava.library.path={}", dir.display()))
        .args(flags)
        .arg("-cp")
        .arg(dir)
        .arg("Warm")
        .arg(img)
        .arg(key)
        .output()
        .unwrap()
}

#[test]
fn stock_jvm_with_g1_and_zgc_in_every_mode() {
    let env = Env::new();
    let dir = build(&env);
    for gc in ["-XX:+UseG1GC", "-XX:+UseZGC"] {
        let img = env.path(&format!("jvm{gc}.thaw"));
        let o = java(&dir, &["-XX:+PerfDisableSharedMem", gc], &img, &env.key);
        assert!(o.status.success(), "{gc}: {}", text(&o));
        let m = env.manifest(&img);
        assert_ne!(
            m.process.checkpoint_tid, m.process.pid,
            "main() runs on a second thread"
        );
        if gc == "-XX:+UseZGC" {
            assert!(m
                .shared
                .iter()
                .any(|o| o.memfd.as_deref() == Some("java_heap")));
        }
        for opts in every_mode() {
            for _ in 0..3 {
                let o = env.restore(&img, opts, &[]);
                assert_eq!(o.status.code(), Some(0), "{gc} {opts:?}: {}", text(&o));
                assert!(
                    String::from_utf8_lossy(&o.stdout).ends_with("ok\n"),
                    "{}",
                    text(&o)
                );
            }
        }
    }
}

#[test]
fn default_flags_are_refused_with_the_flag_to_use() {
    let env = Env::new();
    let dir = build(&env);
    let img = env.path("d.thaw");
    let o = java(&dir, &[], &img, &env.key);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("hsperfdata_") && out.contains("-XX:+PerfDisableSharedMem"),
        "{out}"
    );
    assert!(out.contains("1 unsupported item(s)"), "only that: {out}");
    assert!(!img.exists());
}
