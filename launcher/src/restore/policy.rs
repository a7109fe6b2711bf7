//! The credential policy: keep the image's credentials only when they match the caller's.
//!
//! * Same ids (real, effective, saved, filesystem uid and gid) and groups → restored as recorded,
//!   capabilities included, which must be within the caller's.
//! * Different → refused with both sides shown, unless the caller asks `--as-caller`: then the
//!   process runs with the caller's ids, groups and capabilities.
//! * A set-id image (any effective, saved or filesystem id differing from the real one) is restored
//!   only for a caller with exactly those ids, `--as-caller` or not: its memory may hold what only
//!   the privileged program could read.
//! * Never elevate: the result never holds a capability the caller lacks. A launcher that gained
//!   privileges at exec counts only what the caller had (its ambient set), not its file capability.

use thaw::state::creds::{Credentials, Ids};

/// What to restore with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub creds: Credentials,
    /// Said to the user when the credentials are not the image's.
    pub note: Option<String>,
}

fn show(ids: &Ids) -> String {
    if ids.real == ids.effective && ids.real == ids.saved && ids.real == ids.fs {
        ids.real.to_string()
    } else {
        format!(
            "{} (effective {}, saved {}, fs {})",
            ids.real, ids.effective, ids.saved, ids.fs
        )
    }
}

fn set_id(ids: &Ids) -> bool {
    ids.effective != ids.real || ids.saved != ids.real || ids.fs != ids.real
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// The caller's credentials as seen from the launcher: an elevated launcher's permitted and
/// effective capabilities came from its file, not from the caller, so only the ambient set (which
/// the caller did pass on) counts.
pub fn caller(own: &Credentials, elevated: bool) -> Credentials {
    let mut c = own.clone();
    if elevated {
        c.caps.permitted = c.caps.ambient;
        c.caps.effective = c.caps.ambient;
    }
    c
}

pub fn decide(
    image: &Credentials,
    caller: &Credentials,
    as_caller: bool,
) -> Result<Target, String> {
    let same_ids = image.uid == caller.uid && image.gid == caller.gid;
    if (set_id(&image.uid) || set_id(&image.gid)) && !same_ids {
        return Err(format!(
            "image was taken by a set-uid/set-gid program (uid {}, gid {}); it is restored only for a caller with exactly those ids, and you are uid {}, gid {}",
            show(&image.uid),
            show(&image.gid),
            show(&caller.uid),
            show(&caller.gid)
        ));
    }
    let mismatch = if !same_ids {
        Some(format!(
            "image was taken as uid {}, gid {}; you are uid {}, gid {}",
            show(&image.uid),
            show(&image.gid),
            show(&caller.uid),
            show(&caller.gid)
        ))
    } else if sorted(&image.groups) != sorted(&caller.groups) {
        Some(format!(
            "image was taken with supplementary groups {:?}; you have {:?}",
            sorted(&image.groups),
            sorted(&caller.groups)
        ))
    } else if image.securebits != caller.securebits {
        Some(format!(
            "image was taken with securebits {:#x}; you have {:#x}",
            image.securebits, caller.securebits
        ))
    } else {
        let extra = (image.caps.permitted
            | image.caps.effective
            | image.caps.inheritable
            | image.caps.ambient)
            & !caller.caps.permitted;
        (extra != 0).then(|| format!("image holds capabilities {extra:#x} that you do not have"))
    };
    match mismatch {
        None => {
            let mut creds = Credentials {
                // Never drop a restriction the caller is under.
                no_new_privs: image.no_new_privs || caller.no_new_privs,
                ..image.clone()
            };
            // The bounding set only ever narrows: the image's, within the caller's.
            creds.caps.bounding &= caller.caps.bounding;
            Ok(Target { creds, note: None })
        }
        Some(why) if as_caller => Ok(Target {
            creds: Credentials {
                no_new_privs: image.no_new_privs || caller.no_new_privs,
                ..caller.clone()
            },
            note: Some(format!(
                "{why}: restoring with your credentials instead (--as-caller)"
            )),
        }),
        Some(why) => Err(format!("{why}: {}", advice(image, caller))),
    }
}

/// What to do about credentials that differ: restore as the image's user (the way to keep
/// them), or `--as-caller`, said plainly where that would give the process more than it had (a
/// server that dropped root after binding its port would get root back).
fn advice(image: &Credentials, caller: &Credentials) -> String {
    let same_user = image.uid == caller.uid
        && image.gid == caller.gid
        && sorted(&image.groups) == sorted(&caller.groups);
    let as_user = if same_user {
        // Capabilities alone: the caller is that user already.
        "restore it where you have them (it may have run as root of a user namespace, which has every capability there: `unshare -U -r thaw run ...`), or ".to_owned()
    } else if set_id(&image.uid) || set_id(&image.gid) {
        String::new()
    } else {
        let groups = sorted(&image.groups);
        let groups = if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        format!(
            "restore it as that user to keep them (`setpriv --reuid={} --regid={} {groups} thaw run ...`), or ",
            image.uid.real, image.gid.real
        )
    };
    let all = |c: &thaw::state::creds::Capabilities| c.permitted | c.effective | c.ambient;
    let more = (caller.uid.effective == 0 && image.uid.effective != 0)
        || all(&caller.caps) & !all(&image.caps) != 0;
    let warning = if more {
        ", which has more privileges than it had (the process would lose what it gave up)"
    } else {
        ""
    };
    format!("{as_user}use --as-caller to restore it with your credentials instead{warning}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use thaw::state::creds::Capabilities;

    fn user(uid: u32) -> Credentials {
        let ids = Ids {
            real: uid,
            effective: uid,
            saved: uid,
            fs: uid,
        };
        Credentials {
            uid: ids,
            gid: ids,
            caps: if uid == 0 {
                Capabilities {
                    permitted: 0x1ff_feff_ffff,
                    effective: 0x1ff_feff_ffff,
                    bounding: 0x1ff_feff_ffff,
                    ..Default::default()
                }
            } else {
                Capabilities::default()
            },
            ..Default::default()
        }
    }

    fn setuid_root_by(uid: u32) -> Credentials {
        let mut c = user(uid);
        c.uid.effective = 0;
        c.uid.saved = 0;
        c.uid.fs = 0;
        c
    }

    #[test]
    fn same_caller_gets_the_image_credentials() {
        let t = decide(&user(1000), &user(1000), false).unwrap();
        assert_eq!(t.creds, user(1000));
        assert!(t.note.is_none());
        assert_eq!(decide(&user(0), &user(0), false).unwrap().creds, user(0));
    }

    #[test]
    fn the_bounding_set_is_the_images_within_the_callers() {
        let mut image = user(0);
        image.caps.bounding &= !(1 << 13); // CAP_NET_RAW dropped in the first life
        let mut caller = user(0);
        caller.caps.bounding &= !(1 << 22); // CAP_SYS_BOOT not the caller's
        caller.caps.permitted = image.caps.permitted;
        let t = decide(&image, &caller, false).unwrap();
        assert_eq!(
            t.creds.caps.bounding,
            0x1ff_feff_ffff & !(1 << 13) & !(1 << 22)
        );
    }

    #[test]
    fn a_refusal_says_how_to_restore_as_the_images_user_and_what_as_caller_would_give() {
        // A server that bound its port as root, then dropped to nobody, restored by root.
        let mut nobody = user(65534);
        nobody.groups = vec![65534];
        let why = decide(&nobody, &user(0), false).unwrap_err();
        assert!(
            why.contains("`setpriv --reuid=65534 --regid=65534 --groups=65534 thaw run ...`")
                && why.contains("more privileges than it had"),
            "{why}"
        );
        // The other way round: --as-caller gives less, said without the warning.
        let why = decide(&user(0), &user(1000), false).unwrap_err();
        assert!(
            why.contains("--reuid=0 --regid=0 --clear-groups")
                && why.contains("use --as-caller")
                && !why.contains("more privileges"),
            "{why}"
        );
    }

    #[test]
    fn capabilities_alone_are_not_answered_with_becoming_the_same_user() {
        // Root of `unshare -U -r` (every capability there), restored by a root without one.
        let mut image = user(0);
        image.caps.permitted |= 1 << 24; // CAP_SYS_RESOURCE, which the caller lacks
        let caller = user(0);
        let why = decide(&image, &caller, false).unwrap_err();
        assert!(
            why.contains("capabilities 0x1000000 that you do not have")
                && why.contains("unshare -U -r thaw run")
                && !why.contains("setpriv"),
            "{why}"
        );
    }

    #[test]
    fn another_caller_is_refused_with_both_sides_unless_as_caller() {
        let err = decide(&user(1000), &user(1001), false).unwrap_err();
        assert!(
            err.contains("uid 1000") && err.contains("you are uid 1001"),
            "{err}"
        );
        let t = decide(&user(1000), &user(1001), true).unwrap();
        assert_eq!(t.creds.uid, user(1001).uid);
        assert!(t.note.unwrap().contains("--as-caller"));
        // A root image restored by a user as themselves carries no capability.
        let t = decide(&user(0), &user(1000), true).unwrap();
        assert_eq!(t.creds.caps, Capabilities::default());
    }

    #[test]
    fn set_uid_images_need_exactly_the_same_ids() {
        let img = setuid_root_by(1000);
        for caller in [user(0), user(1000), user(1001)] {
            for as_caller in [false, true] {
                let err = decide(&img, &caller, as_caller).unwrap_err();
                assert!(err.contains("set-uid"), "{err}");
            }
        }
        // Only a caller in exactly that state (the same set-uid program) may have it back.
        assert!(decide(&img, &img, false).is_ok());
    }

    #[test]
    fn capabilities_never_exceed_the_callers() {
        let mut img = user(1000);
        img.caps.permitted = 1 << 40;
        let err = decide(&img, &user(1000), false).unwrap_err();
        assert!(err.contains("capabilities 0x10000000000"), "{err}");
        // An elevated launcher's own file capability does not count as the caller's.
        let mut launcher = user(1000);
        launcher.caps.permitted = 1 << 40;
        launcher.caps.effective = 1 << 40;
        assert!(decide(&img, &caller(&launcher, false), false).is_ok());
        assert!(decide(&img, &caller(&launcher, true), false).is_err());
    }

    #[test]
    fn no_new_privs_is_kept_from_either_side() {
        let mut img = user(1000);
        img.no_new_privs = true;
        assert!(decide(&img, &user(1000), false).unwrap().creds.no_new_privs);
        let mut me = user(1000);
        me.no_new_privs = true;
        assert!(decide(&user(1000), &me, false).unwrap().creds.no_new_privs);
    }
}
