//! The network and UTS namespaces the process ran in.
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
        }
    }

    /// Whether a process that had `self` may be restored by this one; `same_boot`: the image
    /// was taken on this boot. The contents are read only where the identities differ.
    pub fn check_here(&self, same_boot: bool) -> Result<(), String> {
        if !same_boot {
            return Ok(());
        }
        let (net, uts) = (ns_ino("net"), ns_ino("uts"));
        if (net, uts) == (self.net, self.uts) {
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
        };
        self.check(&here, true)
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
                "the process ran in another network namespace (net:[{}], interfaces {}) than yours (net:[{}], interfaces {}): restored here it would reach other networks; run thaw inside its namespace (nsenter --net=…, ip netns exec …)",
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
    }
}
