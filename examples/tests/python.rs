//! CPython through the C ABI (sdk/python/thaw.py over libthaw.so): Debian's python3 with pandas
//! (numpy's OpenBLAS worker threads, 500+ mappings) warms up, checkpoints, and answers after restore
//! exactly as a cold start does, with a random token reseeded on every restore.

mod common;

use std::path::Path;

use common::*;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pandas_warm.py")
}

fn python() -> std::process::Command {
    let mut c = command(Path::new("/usr/bin/python3"));
    c.env("THAW_LIB", bin("libthaw.so"));
    c
}

#[test]
fn pandas_service_restores_with_its_threads_and_reseeds() {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import pandas"])
        .status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "Debian's python3-pandas is missing: scripts/setup installs it"
    );
    let env = Env::new();
    let strip = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (answer, token) = out.trim().rsplit_once(", token ").unwrap_or((&out, ""));
        (answer.to_owned(), token.to_owned())
    };
    let cold = python()
        .arg(script())
        .args(["-", "Quito"])
        .output()
        .unwrap();
    assert!(cold.status.success(), "{}", text(&cold));
    let img = env.path("py.thaw");
    // Started the way a shell that leaks a pipe starts it: the module's descriptor policy
    // (fds={"any": "drop"}) leaves the pipe out.
    let (_r, w) = std::io::pipe().unwrap();
    let o = command_leaking(
        Path::new("/usr/bin/python3"),
        &[(std::os::fd::AsRawFd::as_raw_fd(&w), 9)],
    )
    .env("THAW_LIB", bin("libthaw.so"))
    .env_remove("THAW_FD_POLICY")
    .arg(script())
    .arg(&img)
    .arg(&env.key)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !env.manifest(&img).files.iter().any(|f| f.fd == 9),
        "fd 9 was left out"
    );
    let m = env.manifest(&img);
    assert!(
        m.threads.len() >= 2,
        "OpenBLAS threads expected, got {}",
        m.threads.len()
    );
    assert!(m.memory.len() > 300, "{} mappings", m.memory.len());
    let first = env.restore(&img, &[], &["Quito"]);
    let second = env.restore(&img, &[], &["Quito"]);
    for o in [&first, &second] {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        assert_eq!(strip(o).0, strip(&cold).0, "{}", text(o));
    }
    assert_ne!(
        strip(&first).1,
        strip(&second).1,
        "random must be reseeded per restore"
    );
}
