//! Credentials: ids, groups, capabilities, securebits, no_new_privs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: Ids,
    pub gid: Ids,
    pub groups: Vec<u32>,
    pub caps: Capabilities,
    pub securebits: u32,
    pub no_new_privs: bool,
}

/// Real, effective, saved and filesystem ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

/// The five capability sets as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

use crate::procfs;

impl Credentials {
    /// Whether these hold any id 0 or any capability: what a user namespace's root has.
    pub fn privileged(&self) -> bool {
        let ids = |i: &Ids| [i.real, i.effective, i.saved, i.fs].contains(&0);
        let c = &self.caps;
        ids(&self.uid)
            || ids(&self.gid)
            || self.groups.contains(&0)
            || (c.inheritable | c.permitted | c.effective | c.ambient) != 0
    }

    /// The credentials of `pid` as /proc shows them.
    pub fn of(pid: i32) -> std::io::Result<Credentials> {
        let status = procfs::read(pid, "status")?;
        let ids = |key: &str| {
            let v = procfs::field_nums(&status, key);
            let g = |i: usize| v.get(i).copied().unwrap_or(0) as u32;
            Ids {
                real: g(0),
                effective: g(1),
                saved: g(2),
                fs: g(3),
            }
        };
        Ok(Credentials {
            uid: ids("Uid"),
            gid: ids("Gid"),
            groups: procfs::field_nums(&status, "Groups")
                .into_iter()
                .map(|g| g as u32)
                .collect(),
            caps: Capabilities {
                inheritable: procfs::field_hex(&status, "CapInh"),
                permitted: procfs::field_hex(&status, "CapPrm"),
                effective: procfs::field_hex(&status, "CapEff"),
                bounding: procfs::field_hex(&status, "CapBnd"),
                ambient: procfs::field_hex(&status, "CapAmb"),
            },
            securebits: crate::sys::prctl_get(libc::PR_GET_SECUREBITS).unwrap_or(0) as u32,
            no_new_privs: procfs::field(&status, "NoNewPrivs") == Some("1"),
        })
    }
}

/// Threads whose credentials differ from the calling thread's (a raw `setresuid` on one thread,
/// a thread that dropped capabilities): the image holds one set, applied to every thread at
/// restore, so such a process is refused, naming each thread and what differs.
pub(crate) fn refusals() -> Vec<String> {
    const KEYS: [&str; 7] = [
        "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb",
    ];
    let me = crate::sys::gettid();
    let of = |tid: &str| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).map(|s| {
            KEYS.iter()
                .map(|k| {
                    let v = procfs::field(&s, k).unwrap_or("");
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect::<Vec<_>>()
        })
    };
    let Ok(mine) = of(&me.to_string()) else {
        return Vec::new();
    };
    let mut why = Vec::new();
    for tid in crate::procfs::own_tasks() {
        let Ok(theirs) = of(&tid) else { continue };
        let differ: Vec<String> = KEYS
            .iter()
            .zip(mine.iter().zip(&theirs))
            .filter(|(_, (a, b))| a != b)
            .map(|(k, (a, b))| format!("{k} {b} (caller: {a})"))
            .collect();
        if !differ.is_empty() {
            why.push(format!(
                "thread {tid} has other credentials than the checkpointing thread: {}; an image holds one set for every thread",
                differ.join(", ")
            ));
        }
    }
    why
}
