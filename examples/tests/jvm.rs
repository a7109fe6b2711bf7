//! A stock OpenJDK 17 started by the `java` launcher with its default flags: main() checkpoints
//! from the launcher's second thread, holding the JDK's half-closed socket pair and HotSpot's
//! performance data file (mapped shared, deleted at exit); restored in every mode with G1 and
//! with ZGC (its heap in a memfd mapped three times).

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
        let o = java(&dir, &[gc], &img, &env.key);
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
fn default_flags_keep_the_perf_data_file_under_its_name() {
    // HotSpot maps /tmp/hsperfdata_<user>/<pid> shared and deletes it when it exits: it is kept
    // in the image and created again at its path, where jps and jstat find it.
    let env = Env::new();
    let dir = build(&env);
    let img = env.path("d.thaw");
    let o = java(&dir, &[], &img, &env.key);
    assert!(o.status.success(), "{}", text(&o));
    let m = env.manifest(&img);
    let perf = format!("/{}", m.process.pid);
    assert!(
        m.shared
            .iter()
            .filter_map(|o| o.file.as_ref())
            .any(|f| f.keep_name
                && f.path.starts_with("/tmp/hsperfdata_")
                && f.path.ends_with(&perf)),
        "no kept performance data file"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).ends_with("ok\n"),
            "{}",
            text(&o)
        );
    }
}
