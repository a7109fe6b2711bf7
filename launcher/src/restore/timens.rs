//! Keeping CLOCK_MONOTONIC and CLOCK_BOOTTIME from jumping backwards: an image taken before a
//! reboot, or on another machine, is restored into a new time namespace whose offsets make both
//! clocks continue from the values they had at the checkpoint (time spent in the image does not
//! count, as for a stopped process). Creating one needs CAP_SYS_ADMIN over the caller's user
//! namespace (root) in host mode; in namespace mode the launcher owns the new user namespace.

use thaw::state::clocks::{self, Clocks};

use super::PidMode;
use crate::exit::{Code, Failure, Result};
use crate::sys;

/// Whether the restored process needs a time namespace: `Ok(true)` when it does and may have
/// one, `Ok(false)` when its clocks are fine here (or a jump was accepted).
pub fn decide(c: &Clocks, mode: PidMode, allow_jump: bool) -> Result<bool> {
    let Some(behind) = c.behind(clocks::now()) else {
        return Ok(false);
    };
    // Outside a new user namespace, unshare(CLONE_NEWTIME) needs CAP_SYS_ADMIN.
    if mode == PidMode::Ns || super::has_cap(super::CAP_SYS_ADMIN) {
        return Ok(true);
    }
    let here = clocks::boot_id();
    let secs = |ns: u64| ns as f64 / 1e9;
    let why = format!(
        "the image's clocks are ahead of this machine's (CLOCK_MONOTONIC by {:.3} s, CLOCK_BOOTTIME by {:.3} s; {}): restored here they would jump backwards",
        secs(behind.monotonic_ns),
        secs(behind.boottime_ns),
        if c.boot_id == here {
            "same boot".to_owned()
        } else {
            format!("taken on boot {}, this is boot {here}", c.boot_id)
        }
    );
    if allow_jump {
        errln!("thaw: warning: {why}");
        return Ok(false);
    }
    Err(Failure::new(
        Code::Refused,
        format!(
            "{why}; a time namespace that keeps them continuous needs root (CAP_SYS_ADMIN) or --pid-mode ns; --allow-clock-jump accepts the jump"
        ),
    ))
}

/// The launcher's own time namespace offsets (ns) for CLOCK_MONOTONIC and CLOCK_BOOTTIME, read
/// before it first creates a namespace for its children (the file shows those once it has).
fn own_offsets() -> (i64, i64) {
    static OWN: std::sync::OnceLock<(i64, i64)> = std::sync::OnceLock::new();
    *OWN.get_or_init(read_offsets)
}

fn read_offsets() -> (i64, i64) {
    let text = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.first() == Some(&name)).then(|| {
                    let s: i64 = w.get(1)?.parse().ok()?;
                    let n: i64 = w.get(2)?.parse().ok()?;
                    Some(s * 1_000_000_000 + n)
                })?
            })
            .unwrap_or(0)
    };
    (get("monotonic"), get("boottime"))
}

/// Creates the time namespace the launcher's next child enters, with offsets for `c` computed
/// from the clocks now.
pub fn enter(c: &Clocks) -> Result<()> {
    let own = own_offsets();
    // Offsets are relative to the host's clocks; the launcher's own may already be offset (it
    // runs in a time namespace itself), and a new namespace does not inherit that.
    let (mono, boot) = clocks::now();
    let minus = |clock: u64, off: i64| (i128::from(clock) - i128::from(off)).max(0) as u64;
    let host = (minus(mono, own.0), minus(boot, own.1));
    set_for_children(&c.timens_offsets(host))
}

/// Gives the launcher's next children its own clocks again, after [`enter`] (a server that
/// starts a template for another image).
pub fn leave() -> Result<()> {
    let own = own_offsets();
    if read_offsets() == own {
        return Ok(());
    }
    let ns = |t: i64| {
        format!(
            "{} {}",
            t.div_euclid(1_000_000_000),
            t.rem_euclid(1_000_000_000)
        )
    };
    set_for_children(&format!(
        "monotonic {}\nboottime {}\n",
        ns(own.0),
        ns(own.1)
    ))
}

fn set_for_children(offsets: &str) -> Result<()> {
    crate::privilege::privileged(|| set_for_children_now(offsets))
}

fn set_for_children_now(offsets: &str) -> Result<()> {
    sys::unshare(libc::CLONE_NEWTIME).map_err(|e| {
        Failure::new(
            Code::Refused,
            format!("cannot create a time namespace: {e}"),
        )
    })?;
    std::fs::write("/proc/self/timens_offsets", offsets).map_err(|e| {
        Failure::new(
            Code::RestoreFailed,
            format!("cannot set the time namespace's offsets ({offsets:?}): {e}"),
        )
    })
}
