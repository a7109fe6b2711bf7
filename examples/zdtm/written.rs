//! Files written through their offset: `w.log` opened for writing without O_APPEND (Rust's
//! File::create, Python's open(path, "w")) and written to its end, `a.log` opened with O_APPEND.
//! Each restore writes a line to both. A restore after another one (or after the first life
//! went on writing) would write `w.log` at its old offset over what was written since: refused,
//! saying so, until the file is put back as it was; `a.log` just grows (appends from every
//! restore, as from several writers).
//!
//! `e.log` is opened so too and nothing is written to it before the checkpoint (an error log of
//! a service that has not failed yet): each restore writes it from offset 0, over what an
//! earlier restore wrote, so it is refused the same way once it is not empty.
//!
//! `l.lock` is opened so too, empty, and never written nor locked by the process: a lock file it
//! would wait for (Java's `FileChannel.lock()` wants it open for writing) while another process
//! holds the lock. That holder has it open for writing as well, but, the file empty and locked
//! by it, writes nothing there: the restore is not refused for it.
//!
//! `zdtm-written IMAGE KEY DIR`; restored with the argument `hold`, it prints `ready PID` and
//! waits for a line on its standard input before it writes (another restore meanwhile finds
//! `w.log` open for writing in it, the same size still, and is refused).

#[path = "common.rs"]
mod common;

use std::io::Write;

fn main() {
    let dir = std::path::PathBuf::from(&common::argv().2[0]);
    let mut w = std::fs::File::create(dir.join("w.log")).unwrap();
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("a.log"))
        .unwrap();
    for i in 0..100 {
        writeln!(w, "pre {i}").unwrap();
    }
    writeln!(a, "pre").unwrap();
    let mut e = std::fs::File::create(dir.join("e.log")).unwrap();
    let _l = std::fs::File::create(dir.join("l.lock")).unwrap();
    let args = common::checkpoint();
    if args.iter().any(|a| a == "hold") {
        println!("ready {}", std::process::id());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let mut c = common::Checks::default();
    let wrote = writeln!(w, "post {}", std::process::id()).is_ok()
        && writeln!(a, "post").is_ok()
        && writeln!(e, "error {}", std::process::id()).is_ok();
    c.check("written files: a line after restore", wrote, "write failed");
    c.finish()
}
