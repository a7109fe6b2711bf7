//! SQLite readers through Debian's python3 (its sqlite3 module) and the thaw package: a
//! connection open at the checkpoint, the database written by another process before the
//! restore. Inside a read transaction the reader trusts the snapshot it had (WAL mode, or the
//! rollback journal with the database mapped): such a restore is refused; an idle WAL connection
//! reads what is committed by then, and is restored.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn python(env: &Env, args: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    command(Path::new("/usr/bin/python3"))
        .env("PYTHONPATH", root.join("sdk/python"))
        .env("THAW_LIB", bin("libthaw.so"))
        .env_remove("THAW_FD_POLICY")
        .current_dir(env.dir.path())
        .args(args)
        .output()
        .unwrap()
}

/// Sets up `mode`'s reader on a new database and checkpoints it; returns (database, image).
fn reader(env: &Env, mode: &str) -> (PathBuf, PathBuf) {
    let db = env.path(&format!("{mode}.db"));
    let img = env.path(&format!("{mode}.thaw"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sqlite_reader.py");
    let o = python(
        env,
        &[
            script.to_str().unwrap(),
            mode,
            db.to_str().unwrap(),
            img.to_str().unwrap(),
            env.key.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    (db, img)
}

/// Another process commits a change to every row and checkpoints the WAL into the database.
/// (It ends without closing: the last connection to close removes the `-wal` and `-shm` files,
/// which a paused reader would have kept from happening, and which the image holds open.)
fn write_every_row(env: &Env, db: &Path) {
    let code = format!(
        "import sqlite3, os; c = sqlite3.connect({:?}, isolation_level=None); c.execute(\"UPDATE t SET x = 'b'\"); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); os._exit(0)",
        db.to_str().unwrap()
    );
    let o = python(env, &["-c", &code]);
    assert!(o.status.success(), "{}", text(&o));
}

fn seen(o: &std::process::Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

#[test]
fn a_reader_inside_a_transaction_is_refused_once_the_database_is_written() {
    let env = Env::new();
    for mode in ["wal-txn", "mmap-txn"] {
        let (db, img) = reader(&env, mode);
        // Nothing written since: restored, the snapshot as it was.
        let v = seen(&env.restore(&img, &[], &[]));
        assert_eq!(v["after"], v["before"], "{mode}: {v}");
        write_every_row(&env, &db);
        let o = env.restore(&img, &[], &[]);
        assert_eq!(o.status.code(), Some(67), "{mode}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(".db was written since the checkpoint")
                || err.contains(".db-wal was written since the checkpoint"),
            "{mode}: {err}"
        );
        assert!(o.stdout.is_empty(), "{mode}: nothing ran");
    }
}

#[test]
fn an_idle_wal_connection_reads_what_was_committed_since() {
    let env = Env::new();
    let (db, img) = reader(&env, "wal-idle");
    write_every_row(&env, &db);
    for opts in every_mode() {
        let v = seen(&env.restore(&img, opts, &[]));
        assert_eq!(
            v["after"],
            serde_json::json!([1000, "b", "b"]),
            "{opts:?}: {v}"
        );
    }
}
