//! The network, UTS, IPC and user namespaces the process ran in.
//!
//! System V semaphores, message queues and shared memory live in the IPC namespace and the
//! process holds only their ids: restored into another namespace whose objects differ (a
//! sandbox's private one, systemd's PrivateIPC=), the same ids would name other objects, or none.
//! So on the same boot another IPC namespace is refused where the process's had any object and
//! the two lists (kind, key, id) differ.
//!
//! Its credentials (uid, gid, capabilities) are what it had in its user namespace. One that
//! mapped them onto other ids (`unshare -U -r`: uid 0 inside, nobody outside; a container's
//! 0 → 100000) would have them as they read, not as they were, if restored by a launcher whose
//! namespace maps them otherwise: root restoring nobody's fake-root image would give it real
//! root. So a process whose namespace maps its ids onto others is restored only by a launcher in
//! a user namespace mapped the same way, on any boot (the maps are the meaning of the ids). A
//! map of ids onto themselves changes no meaning at that level, but a map shows one level up
//! only: a namespace nested in a fake-root one (`unshare -U -r`, and inside it
//! `unshare -U --map-user=0`) maps 0 onto 0 and is still nobody's. What tells them apart is how
//! real root looks from inside: the owner of `/proc/sys/kernel/ostype` (always real root) reads
//! as 0 where real root is root, as the overflow id where it is not mapped. So a partial map of
//! ids onto themselves (thaw's ns mode) is accepted where real root looks the same to the
//! launcher, or where the process held no privilege to carry over (no id 0, no capability): its
//! ids are then its own wherever it goes, for a caller who already has them. Equal maps also
//! need real root to look the same (root's own `unshare -U -r` maps 0 onto 0 too). The full
//! identity map (the initial namespace) is never compared.
//!
//! A restored process gets the namespaces of whoever runs `thaw run` (PID, user and time
//! namespaces are thaw's own business, see the launcher). A process that ran in a network
//! namespace of its own (a sandbox with no network, a container's) and is restored from outside
//! it would reach networks it never could, and one with a hostname of its own would see another:
//! not what it had. On the same boot, namespace identities can be compared: a restore into other
//! namespaces whose contents differ (other network interfaces, another hostname) is refused,
//! naming them. A namespace made again with the same contents (systemd's PrivateNetwork= makes a
//! new one, with only `lo`, at each start) is the same environment, and allowed. On another boot
//! or machine the identities mean nothing; there the process simply gets the caller's.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// Inode of /proc/self/ns/net (0: unknown).
    pub net: u64,
    /// Inode of /proc/self/ns/uts (0: unknown).
    pub uts: u64,
    /// The network interfaces the process could see, by name, sorted.
    pub interfaces: Vec<String>,
    /// Its hostname.
    pub hostname: String,
    /// /proc/self/uid_map and gid_map: (first id inside, first id outside, count) each.
    pub uid_map: Vec<[u32; 3]>,
    pub gid_map: Vec<[u32; 3]>,
    /// Inode of /proc/self/ns/ipc (0: unknown).
    pub ipc: u64,
    /// The System V objects of its IPC namespace: (kind: 0 semaphore set, 1 message queue,
    /// 2 shared memory segment; key; id), sorted.
    pub sysv: Vec<(u8, i32, i32)>,
    /// How real root's uid and gid read in its user namespace (owner of
    /// /proc/sys/kernel/ostype; `u32::MAX`: unreadable): 0 where real root is root there.
    pub root_seen: (u32, u32),
}

/// How real root's uid and gid read in this process's user namespace (see
/// [`Namespaces::root_seen`]): procfs makes its sysctl files of the kernel table root's.
pub fn root_seen() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/sys/kernel/ostype")
        .map_or((u32::MAX, u32::MAX), |m| (m.uid(), m.gid()))
}

/// The map of the initial user namespace: every id onto itself.
const FULL: [[u32; 3]; 1] = [[0, 0, u32::MAX]];

/// The most System V objects an image may name.
pub const MAX_SYSV: usize = 1 << 16;

/// The System V objects this process's IPC namespace has (see `Namespaces::sysv`).
fn sysv_objects() -> Vec<(u8, i32, i32)> {
    let mut out = Vec::new();
    for (kind, file) in ["sem", "msg", "shm"].iter().enumerate() {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{file}")).unwrap_or_default();
        out.extend(text.lines().skip(1).filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((kind as u8, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        }));
    }
    out.sort_unstable();
    out
}

/// The most lines a uid or gid map may have (the kernel's limit is 340).
pub const MAX_MAP_LINES: usize = 512;

/// This process's /proc/self/`which` (uid_map or gid_map).
fn id_map(which: &str) -> Vec<[u32; 3]> {
    let text = std::fs::read_to_string(format!("/proc/self/{which}")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut n = l.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some([n.next()??, n.next()??, n.next()??])
        })
        .collect()
}

/// Whether `map` maps every id onto itself (or says nothing).
fn identity(map: &[[u32; 3]]) -> bool {
    map.iter().all(|[inside, outside, _]| inside == outside)
}

fn show(map: &[[u32; 3]]) -> String {
    map.iter()
        .map(|[i, o, n]| format!("{i} {o} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most interfaces an image may name.
pub const MAX_INTERFACES: usize = 4096;

fn ns_ino(kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{kind}")).map_or(0, |m| m.ino())
}

/// The interfaces of this process's network namespace (/proc/self/net/dev), sorted.
fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
        .filter(|n| !n.is_empty())
        .collect();
    v.sort();
    v
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

impl Namespaces {
    /// This process's.
    pub fn current() -> Namespaces {
        Namespaces {
            net: ns_ino("net"),
            uts: ns_ino("uts"),
            interfaces: interfaces(),
            hostname: hostname(),
            uid_map: id_map("uid_map"),
            gid_map: id_map("gid_map"),
            ipc: ns_ino("ipc"),
            sysv: sysv_objects(),
            root_seen: root_seen(),
        }
    }

    /// Whether a process that had `self` and `creds` may be restored by this one; `same_boot`:
    /// the image was taken on this boot. The contents are read only where the identities differ.
    /// `ns_mode`: the process gets a user namespace of its own (thaw's ns mode), which confines
    /// its capabilities there.
    pub fn check_here(
        &self,
        creds: &crate::state::creds::Credentials,
        same_boot: bool,
        ns_mode: bool,
    ) -> Result<(), String> {
        let here = Namespaces {
            uid_map: id_map("uid_map"),
            gid_map: id_map("gid_map"),
            root_seen: root_seen(),
            ..Namespaces::default()
        };
        self.check_user(creds.privileged(), &here, ns_mode)?;
        if !same_boot {
            return Ok(());
        }
        let (net, uts, ipc) = (ns_ino("net"), ns_ino("uts"), ns_ino("ipc"));
        if (net, uts, ipc) == (self.net, self.uts, self.ipc) {
            return Ok(());
        }
        let here = Namespaces {
            net,
            uts,
            interfaces: if net != self.net {
                interfaces()
            } else {
                self.interfaces.clone()
            },
            hostname: if uts != self.uts {
                hostname()
            } else {
                self.hostname.clone()
            },
            ipc,
            sysv: if ipc != self.ipc && !self.sysv.is_empty() {
                sysv_objects()
            } else {
                self.sysv.clone()
            },
            ..Namespaces::default()
        };
        self.check(&here, true)
    }

    /// Whether the ids of a process whose namespace had `self`'s maps (and held id 0 or a
    /// capability: `privileged`) mean the same for a launcher whose namespace has `here`'s maps
    /// and sees real root as `here.root_seen` (see the module's note).
    /// A privileged process of a namespace of its own mapping its ids onto themselves (systemd's
    /// PrivateUsers=, `unshare -U`) had its capabilities there only: restored into the
    /// launcher's namespace they would be that one's, so it goes only into a namespace of its
    /// own (`ns_mode`) or one mapped the same way.
    pub fn check_user(
        &self,
        privileged: bool,
        here: &Namespaces,
        ns_mode: bool,
    ) -> Result<(), String> {
        let (uid_map, gid_map) = (&here.uid_map, &here.gid_map);
        if self.uid_map == FULL && self.gid_map == FULL {
            return Ok(());
        }
        let root_alike = self.root_seen == here.root_seen;
        if self.uid_map == *uid_map && self.gid_map == *gid_map && root_alike {
            return Ok(());
        }
        if identity(&self.uid_map) && identity(&self.gid_map) {
            if !privileged || (root_alike && ns_mode) {
                return Ok(());
            }
            if root_alike {
                return Err(format!(
                    "the process ran with id 0 or capabilities in a user namespace of its own that maps its ids onto themselves (uid_map {}: systemd's PrivateUsers=, `unshare -U`, thaw's ns mode): its capabilities were that namespace's only, and restored into yours (uid_map {}) they would be yours; restore it with --pid-mode ns, which gives it such a namespace, or inside one mapped the same way",
                    show(&self.uid_map),
                    show(uid_map)
                ));
            }
            let seen = |(u, g): (u32, u32)| {
                if (u, g) == (0, 0) {
                    "as root".to_owned()
                } else if u == u32::MAX {
                    "not at all (/proc/sys unreadable)".to_owned()
                } else {
                    format!("as uid {u} gid {g}")
                }
            };
            return Err(format!(
                "the process ran with id 0 or capabilities in a user namespace that maps its ids onto themselves (uid_map {}) but sees real root {}, nested in one that maps them onto others (`unshare -U -r`, then a map of 0 onto 0 inside), and you see real root {}: restored here its ids and capabilities would be others than it had; run thaw in the namespace it ran in (nsenter -U …), as the user who made it",
                show(&self.uid_map),
                seen(self.root_seen),
                seen(here.root_seen)
            ));
        }
        Err(format!(
            "the process ran in a user namespace that maps its ids onto others (uid_map {}; gid_map {}), and yours maps them as {} and {}: its uid, gid and capabilities there are not the same here (restored here, an image taken as root inside `unshare -U -r` would get real root); run thaw inside a user namespace mapped the same way, as the user who made it (e.g. `unshare -U -r thaw run ...`)",
            show(&self.uid_map),
            show(&self.gid_map),
            show(uid_map),
            show(gid_map)
        ))
    }

    /// Whether a process that had `self` may be restored by one that has `here`, on the same
    /// boot (`same_boot`); `Err` says what differs.
    pub fn check(&self, here: &Namespaces, same_boot: bool) -> Result<(), String> {
        if !same_boot {
            return Ok(());
        }
        if self.net != 0
            && here.net != 0
            && self.net != here.net
            && self.interfaces != here.interfaces
        {
            return Err(format!(
                "the process ran in another network namespace (net:[{}], interfaces {}) than yours (net:[{}], interfaces {}): restored here it would reach other networks; run thaw inside its namespace (nsenter --net=…, ip netns exec …), or in a new one with the same interfaces if it ended (`unshare -n thaw run ...` makes one with only lo)",
                self.net,
                list(&self.interfaces),
                here.net,
                list(&here.interfaces)
            ));
        }
        if self.uts != 0 && here.uts != 0 && self.uts != here.uts && self.hostname != here.hostname
        {
            return Err(format!(
                "the process ran in another UTS namespace (uts:[{}], hostname {:?}) than yours (uts:[{}], hostname {:?}): run thaw inside its namespace (nsenter --uts=…)",
                self.uts, self.hostname, here.uts, here.hostname
            ));
        }
        if self.ipc != 0
            && here.ipc != 0
            && self.ipc != here.ipc
            && !self.sysv.is_empty()
            && self.sysv != here.sysv
        {
            return Err(format!(
                "the process ran in another IPC namespace (ipc:[{}], {} System V object(s)) than yours (ipc:[{}], {} other(s)): its semaphore, message queue and shared memory ids would name other objects here, or none; run thaw inside its namespace (nsenter --ipc=…)",
                self.ipc,
                self.sysv.len(),
                here.ipc,
                here.sysv.len()
            ));
        }
        Ok(())
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_mapped_onto_others_are_restored_only_under_the_same_maps() {
        let ns = |map: [u32; 3], root: u32| Namespaces {
            uid_map: vec![map],
            gid_map: vec![map],
            root_seen: (root, root),
            ..Namespaces::default()
        };
        let init = ns([0, 0, u32::MAX], 0);
        let fake_root = ns([0, 65534, 1], 65534);
        for ns_mode in [false, true] {
            let e = fake_root.check_user(true, &init, ns_mode).unwrap_err();
            assert!(e.contains("uid_map 0 65534 1"), "{e}");
            fake_root
                .check_user(true, &fake_root.clone(), ns_mode)
                .unwrap();
            // Root's own `unshare -U -r` maps 0 onto 0: not the same as nobody's.
            let roots = ns([0, 0, 1], 0);
            assert!(ns([0, 0, 1], 65534)
                .check_user(true, &roots, ns_mode)
                .is_err());
            // Nested in nobody's fake root (0 onto 0 inside it): real root is not root there.
            let nested = ns([0, 0, 1], 65534);
            let e = nested.check_user(true, &init, ns_mode).unwrap_err();
            assert!(e.contains("sees real root as uid 65534"), "{e}");
            // Unprivileged ids carry nothing over: a caller who has them gets their own.
            ns([1000, 1000, 1], 65534)
                .check_user(false, &init, ns_mode)
                .unwrap();
            assert!(ns([1000, 1000, 1], 65534)
                .check_user(true, &init, ns_mode)
                .is_err());
            // The initial namespace's map is never compared.
            init.check_user(true, &fake_root, ns_mode).unwrap();
        }
        // Root of a namespace of its own mapping 0 onto 0 (systemd's PrivateUsers=, thaw's ns
        // mode as root): its capabilities were that namespace's. Into a new one (ns mode), or
        // one mapped the same way: yes; into the initial one: no.
        let own = ns([0, 0, 1], 0);
        own.check_user(true, &init, true).unwrap();
        own.check_user(true, &own.clone(), false).unwrap();
        let e = own.check_user(true, &init, false).unwrap_err();
        assert!(e.contains("--pid-mode ns"), "{e}");
    }

    #[test]
    fn another_network_or_hostname_on_the_same_boot_is_refused() {
        let here = Namespaces::current();
        assert!(here.net != 0 && here.interfaces.iter().any(|i| i == "lo"));
        let sandbox = Namespaces {
            net: here.net + 1,
            interfaces: vec!["lo".into()],
            ..here.clone()
        };
        if here.interfaces != sandbox.interfaces {
            let e = sandbox.check(&here, true).unwrap_err();
            assert!(e.contains("another network namespace"), "{e}");
        }
        // Another boot, or a namespace made again with the same contents: allowed.
        sandbox.check(&here, false).unwrap();
        let again = Namespaces {
            net: here.net + 1,
            ..here.clone()
        };
        again.check(&here, true).unwrap();
        let named = Namespaces {
            uts: here.uts + 1,
            hostname: format!("{}-other", here.hostname),
            ..here.clone()
        };
        assert!(named
            .check(&here, true)
            .unwrap_err()
            .contains("UTS namespace"));
        // Another IPC namespace: refused where the process's had objects and the lists differ.
        let private = Namespaces {
            ipc: here.ipc + 1,
            sysv: vec![(0, 1234, 7)],
            ..here.clone()
        };
        if here.sysv != private.sysv {
            assert!(private
                .check(&here, true)
                .unwrap_err()
                .contains("another IPC namespace"));
        }
        let empty = Namespaces {
            ipc: here.ipc + 1,
            sysv: Vec::new(),
            ..here.clone()
        };
        empty.check(&here, true).unwrap();
    }
}
