//! A process dumpable by root only (mode 2: fs.suid_dumpable=2 and a credential change) is
//! refused: the checkpoint makes it dumpable for a moment to read its own /proc files, and prctl
//! cannot set mode 2 back, so it would stay traceable by its user. Alone in its test binary: the
//! sysctl it sets for a moment is the machine's, and other tests drop privileges.

mod common;

use common::*;

/// Puts fs.suid_dumpable back as it was when dropped.
struct SuidDumpable(String);

impl Drop for SuidDumpable {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/fs/suid_dumpable", &self.0);
    }
}

#[test]
fn a_process_dumpable_by_root_only_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to set fs.suid_dumpable (CI runs as root)");
        return;
    }
    let was = std::fs::read_to_string("/proc/sys/fs/suid_dumpable").unwrap();
    let _back = SuidDumpable(was.trim().to_owned());
    std::fs::write("/proc/sys/fs/suid_dumpable", "2").unwrap();
    let env = Env::new();
    let out = env.refused("zdtm-controls", "d.thaw", &["dumpable-root"]);
    assert!(out.contains("dumpable by root only (mode 2"), "{out}");
}
