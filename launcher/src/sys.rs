//! The launcher's raw system interface. Every `unsafe` block of the launcher outside the restorer
//! lives here.

/// Whether the kernel set AT_SECURE for this exec (privileges gained from file capabilities,
/// set-uid or set-gid bits, or an LSM's decision).
pub fn at_secure() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}
