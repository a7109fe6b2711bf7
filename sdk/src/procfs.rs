//! Small parsers for the /proc files the dump side reads.

use std::io;

/// `/proc/<pid>/<name>` as text, in page-sized reads (`read_to_string` asks for its size,
/// which /proc files do not have, then reads 32 bytes, 32, 64...: eight reads for a status
/// file, on `thaw serve`'s path to each instance).
pub fn read(pid: i32, name: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/{name}"))?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The TIDs of this process's threads, as /proc/self/task lists them now (none if unreadable).
pub fn own_tasks() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The value of `Key:` in a status-like file, trimmed.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A whitespace-separated list of numbers in `Key:` (Uid:, Gid:, Groups:).
pub fn field_nums(text: &str, key: &str) -> Vec<u64> {
    field(text, key)
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A hexadecimal `Key:` value (CapEff:, SigBlk:, …).
pub fn field_hex(text: &str, key: &str) -> u64 {
    field(text, key)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0)
}

/// Fields of /proc/<pid>/stat after the command name, numbered as in proc(5) (field 3 = state).
pub fn stat_fields(pid: i32) -> io::Result<Vec<String>> {
    let text = read(pid, "stat")?;
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    // Fields 0..=2 (none, pid, comm) are placeholders so that v[n] is field n.
    let mut v = vec![String::new(); 3];
    v.extend(rest.split_whitespace().map(str::to_owned));
    Ok(v)
}

/// One entry of /proc/<pid>/smaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub name: String,
    /// Two-letter VmFlags.
    pub flags: Vec<String>,
    /// Rss + Swap in kB: zero means nothing was ever populated.
    pub resident_kb: u64,
    /// Its memory protection key (`ProtectionKey:`, shown where the CPU has them).
    pub pkey: u32,
}

impl MapEntry {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }
    /// The range as /proc shows it, for messages.
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            "anonymous"
        } else {
            &self.name
        };
        format!(
            "mapping {:x}-{:x} {} {}",
            self.start, self.end, self.perms, name
        )
    }
}

/// Parses one maps header line.
pub fn parse_map_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let name = it.next().unwrap_or("").trim_start().to_owned();
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    Some(MapEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms: perms.to_owned(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(maj, 16).ok()?,
        dev_minor: u32::from_str_radix(min, 16).ok()?,
        inode: inode.parse().ok()?,
        name,
        flags: Vec::new(),
        resident_kb: 0,
        pkey: 0,
    })
}

/// Parses /proc/<pid>/maps: addresses, permissions and names only (no flags, nothing resident),
/// without the page-table walk that makes smaps cost a millisecond.
pub fn maps(pid: i32) -> io::Result<Vec<MapEntry>> {
    Ok(read(pid, "maps")?
        .lines()
        .filter_map(parse_map_line)
        .collect())
}

/// Parses /proc/<pid>/smaps.
pub fn smaps(pid: i32) -> io::Result<Vec<MapEntry>> {
    let text = read(pid, "smaps")?;
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            if let Some(mut e) = parse_map_line(line) {
                // A file unlinked under one name that has another beside it is that file.
                if e.inode != 0 && e.name.ends_with(" (deleted)") {
                    let dev = libc::makedev(e.dev_major, e.dev_minor);
                    if let Some(live) = crate::state::deleted::live_name(&e.name, dev, e.inode) {
                        e.name = live;
                    }
                }
                out.push(e);
                continue;
            }
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("VmFlags:") {
            cur.flags = v.split_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = line.strip_prefix("ProtectionKey:") {
            cur.pkey = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line
            .strip_prefix("Rss:")
            .or_else(|| line.strip_prefix("Swap:"))
        {
            cur.resident_kb += v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(out)
}

/// The CPUs this process's cgroup (v2) lets it use, "0-3,8", when its cpuset says.
pub fn cgroup_cpus() -> Option<String> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = groups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let cpus =
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpuset.cpus.effective")).ok()?;
    (!cpus.trim().is_empty()).then_some(cpus)
}

/// Whether every process's descriptors can be seen from here: from the initial PID namespace
/// (a /proc of a container's own shows one PID per process too), with a /proc that hides none
/// (hidepid, subset).
pub fn all_processes_visible() -> bool {
    use std::os::unix::fs::MetadataExt;
    // PROC_PID_INIT_INO: the initial PID namespace's inode number.
    let initial = std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == 0xEFFF_FFFC);
    let hidden = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .filter(|l| l.split_whitespace().nth(4) == Some("/proc"))
            .any(|l| l.contains("hidepid=") || l.contains("subset="))
    });
    initial && !hidden
}

/// Who else holds descriptors of pipes and sockets, by their link (`pipe:[N]`, `socket:[N]`:
/// the kernel's name of one object), with the holders' command names: one walk of every other
/// process's descriptor table, at the first question or ahead of it ([`Holders::walked_for`]).
#[derive(Debug, Default)]
pub struct Holders {
    walked: Option<Option<HolderMap>>,
    /// The same from the processes that could be looked at (see [`Holders::seen`]).
    partial: Option<HolderMap>,
    /// Walked ahead: the links of the pipes and sockets the process held before the walk. Of
    /// another (one made since), the walk may have missed a holder: asked about, it walks again.
    known: Option<Vec<String>>,
}

/// Link → (PID, command) of each other process holding it.
type HolderMap = std::collections::HashMap<String, Vec<(i32, String)>>;

impl Holders {
    /// Walks now, ahead of the questions, which may be about `known` only (the links of pipes
    /// and sockets that exist now: the walk may miss a holder of one made later, and a
    /// question about another walks again).
    pub fn walked_for(known: Vec<String>) -> Holders {
        let full = walk_holders();
        Holders {
            partial: full.is_none().then(|| walk(true).unwrap_or_default()),
            walked: Some(full),
            known: Some(known),
        }
    }

    /// Forgets a walk made ahead of a question about an object made since.
    fn fresh_for(&mut self, link: &str) {
        if self
            .known
            .as_ref()
            .is_some_and(|k| !k.iter().any(|l| l == link))
        {
            *self = Holders::default();
        }
    }

    /// The other processes that hold a descriptor whose link reads `link`. `None` where some
    /// could not be looked at (see [`all_processes_visible`]; another user's descriptors, for
    /// an unprivileged caller).
    pub fn of(&mut self, link: &str) -> Option<Vec<(i32, String)>> {
        self.fresh_for(link);
        let map = self.walked.get_or_insert_with(walk_holders).as_ref()?;
        Some(map.get(link).cloned().unwrap_or_default())
    }

    /// The other processes seen holding a descriptor whose link reads `link`, among those whose
    /// descriptors could be looked at: evidence that it is shared, never that it is not.
    pub fn seen(&mut self, link: &str) -> Vec<(i32, String)> {
        self.fresh_for(link);
        if let Some(Some(map)) = &self.walked {
            return map.get(link).cloned().unwrap_or_default();
        }
        let map = self
            .partial
            .get_or_insert_with(|| walk(true).unwrap_or_default());
        map.get(link).cloned().unwrap_or_default()
    }
}

fn walk_holders() -> Option<HolderMap> {
    if !all_processes_visible() {
        return None;
    }
    walk(false)
}

/// Every other process's pipes and sockets; `partial`: those that can be read (another user's
/// are not, for an unprivileged caller), else `None` at the first that cannot.
fn walk(partial: bool) -> Option<HolderMap> {
    let me = crate::sys::getpid();
    let mut map = HolderMap::default();
    for pid in crate::sys::list_dir("/proc")
        .ok()?
        .iter()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| p != me)
    {
        let fds = match crate::sys::list_dir(&format!("/proc/{pid}/fd")) {
            Ok(f) => f,
            // Gone meanwhile: it holds nothing.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) if partial => continue,
            Err(_) => return None,
        };
        let mut comm = None;
        for n in fds {
            let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{n}")) else {
                continue;
            };
            let link = link.to_string_lossy();
            if !(link.starts_with("pipe:[") || link.starts_with("socket:[")) {
                continue;
            }
            let comm = comm.get_or_insert_with(|| {
                read(pid, "comm")
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default()
            });
            let v = map.entry(link.into_owned()).or_default();
            if !v.iter().any(|(p, _)| *p == pid) {
                v.push((pid, comm.clone()));
            }
        }
    }
    Some(map)
}

/// "process 12 (node), process 13 (sh)".
pub fn describe_holders(holders: &[(i32, String)]) -> String {
    let named: Vec<String> = holders
        .iter()
        .map(|(pid, comm)| format!("process {pid} ({comm})"))
        .collect();
    named.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_smaps_has_stack_and_flags() {
        let maps = smaps(std::process::id() as i32).unwrap();
        let stack = maps.iter().find(|m| m.name == "[stack]").unwrap();
        assert!(stack.has_flag("gd") && stack.has_flag("rd"));
        assert!(stack.resident_kb > 0);
        let line = "7f0000000000-7f0000001000 r-xp 00001000 fd:01 1234    /usr/lib/x y.so";
        let e = parse_map_line(line).unwrap();
        assert_eq!(
            (e.offset, e.dev_major, e.dev_minor, e.inode),
            (0x1000, 0xfd, 1, 1234)
        );
        assert_eq!(e.name, "/usr/lib/x y.so");
    }
}
