//! Shared helpers for the benchmarks.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// A command whose child inherits only stdin, stdout and stderr: a stray descriptor from the
/// benchmark harness would be state the checkpoint must refuse.
pub fn command(program: impl AsRef<Path>) -> Command {
    let mut c = Command::new(program.as_ref());
    // SAFETY: close_range is async-signal-safe and touches only the descriptor table.
    unsafe {
        c.pre_exec(|| {
            // CLOSE_RANGE_CLOEXEC: closed by the exec, so std can still report a failed one.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 1u32 << 2);
            Ok(())
        });
    }
    c
}
