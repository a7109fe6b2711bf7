//! A second JVM language as its users start it: Debian's `clojure` command (a shell script that
//! execs the stock `java` launcher with default flags) runs examples/clojure/warm.clj, which
//! loads much of Clojure's library, compiles a few hundred forms, checkpoints through thaw's Java
//! library and, restored in every mode, evaluates the expression passed to `thaw run`: the value
//! printed is the one a cold run prints, and the PID is the first life's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// thaw.jar (with its JNI library beside it) built by sdk/java/build.sh.
fn jar(env: &Env) -> PathBuf {
    assert!(
        Path::new("/usr/bin/clojure").exists(),
        "Debian's clojure is missing: scripts/setup installs it"
    );
    let lib = env.path("lib");
    let o = Command::new(root().join("sdk/java/build.sh"))
        .arg(&lib)
        .env("THAW_LIB", bin("libthaw.so"))
        .output()
        .unwrap();
    assert!(o.status.success(), "sdk/java/build.sh: {}", text(&o));
    lib.join("thaw.jar")
}

fn clojure(jar: &Path, args: &[&std::ffi::OsStr]) -> Output {
    command(Path::new("/usr/bin/clojure"))
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("CLASSPATH")
        .arg("-cp")
        .arg(jar)
        .arg(root().join("examples/clojure/warm.clj"))
        .args(args)
        .output()
        .unwrap()
}

const EXPRS: [&str; 2] = [
    r#"(frequencies "mississippi")"#,
    r#"(str/join "," (sort (set/union #{"b" "a"} #{"c"})))"#,
];

#[test]
fn clojure_is_restored_in_every_mode_and_answers_as_a_cold_run() {
    let env = Env::new();
    let jar = jar(&env);
    let cold: Vec<String> = EXPRS
        .iter()
        .map(|e| {
            let o = clojure(&jar, &["--cold".as_ref(), e.as_ref()]);
            assert!(o.status.success(), "{}", text(&o));
            String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
        })
        .collect();
    assert_eq!(cold[0], r"{\m 1, \i 4, \s 4, \p 2}");
    let img = env.path("clj.thaw");
    let o = clojure(&jar, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    let m = env.manifest(&img);
    assert_ne!(
        m.process.checkpoint_tid, m.process.pid,
        "clojure.main runs on the java launcher's second thread"
    );
    for opts in every_mode() {
        for (expr, want) in EXPRS.iter().zip(&cold) {
            let o = env.restore(&img, opts, &[expr]);
            assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
            assert_eq!(
                String::from_utf8_lossy(&o.stdout).trim_end(),
                want,
                "{opts:?}: {}",
                text(&o)
            );
        }
    }
}
