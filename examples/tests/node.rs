//! Stock Node.js (Debian's `node`, started as its users start it, default flags): a program
//! warms up, checkpoints through a Node-API bridge to libthaw, and is restored in every mode.
//! Node starts the inspector's watchdog thread at launch, blocking every signal for its whole
//! life, and V8 marks its heap MADV_DONTFORK: both are captured. After restore the program
//! answers like a cold run, and its event loop, thread pool, timers and watchdog thread work.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Builds the Node-API bridge into the test's directory.
fn addon(env: &Env) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(
        Path::new("/usr/include/node/node_api.h").exists() && Path::new("/usr/bin/node").exists(),
        "Debian's nodejs is missing: scripts/setup installs it"
    );
    let out = env.path("thaw.node");
    cc_with_libthaw(
        &[&root.join("examples/node/thaw_node.c")],
        &["-shared", "-fPIC", "-I/usr/include/node"],
        &out,
    );
    out
}

fn node(addon: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    command(Path::new("/usr/bin/node"))
        .env("THAW_NODE_ADDON", addon)
        .env_remove("NODE_OPTIONS")
        .arg(root.join("examples/node/warm.js"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn stock_node_is_checkpointed_and_restored_in_every_mode() {
    let env = Env::new();
    let addon = addon(&env);
    let cold = node(&addon, &["--cold".as_ref(), "hello".as_ref()]);
    assert!(cold.status.success(), "{}", text(&cold));
    let expected = String::from_utf8_lossy(&cold.stdout).trim().to_owned();
    let img = env.path("node.thaw");
    let o = node(&addon, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout);
    let pid = first
        .lines()
        .find_map(|l| l.strip_prefix("first life pid "))
        .unwrap()
        .to_owned();
    let m = env.manifest(&img);
    assert!(!m.dontfork.is_empty(), "V8's heap is MADV_DONTFORK");
    for opts in every_mode() {
        for _ in 0..2 {
            let o = env.restore(&img, opts, &["hello"]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
            for line in [
                format!("restored 1 pid {pid}"),
                expected.clone(),
                "promise ok".into(),
                "timer ok".into(),
                "fs ok true".into(),
                "thread pool ok 16".into(),
                "inspector ok".into(),
            ] {
                assert!(
                    out.lines().any(|l| l == line),
                    "{opts:?}: no {line:?} in {}",
                    text(&o)
                );
            }
        }
    }
}
