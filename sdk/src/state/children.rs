//! Child processes. A live child is a process of its own, which an image does not hold: refused
//! by name (or left out on request). A zombie — a child that has ended and that the process has
//! not waited for yet — is nothing but its PID, its name, its user and how it ended: the restored
//! process gets one again, made by the restorer (a fork that takes the PID with `set_tid`, takes
//! the process's credentials and name, and ends the same way), so that its `waitpid` finds it.
//!
//! The stand-in's end raises a SIGCHLD the first life got long ago: the restorer takes it off the
//! queue again (all signals are blocked then). A zombie's resource usage (`wait4`) is the
//! stand-in's, nearly nothing, like every CPU-time clock after a restore.

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::restore::Plan;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zombie {
    pub pid: i32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// How it ended, as `waitpid` reports it: exit code << 8, or the signal that ended it.
    pub status: i32,
    pub group: Group,
    /// A child still running at the checkpoint, left out (`leave_children_out`): the restored
    /// process sees it ended by SIGKILL, its SIGCHLD waiting (an event loop's child watcher, a
    /// JVM's `Process`, learn it is gone instead of waiting for ever or reading exit 0). Made
    /// only where its PID is free.
    pub left_out: bool,
}

/// A zombie's process group and session, as far as they can be made again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Group {
    /// The process's own (so the caller's after restore, unless the process leads a session).
    #[default]
    Parents,
    /// A group it led (`setpgid(0, 0)`), in the process's session.
    Leader,
    /// A session it led (`setsid`).
    SessionLeader,
}

/// The children of every thread of the process, zombies and live ones.
pub(crate) fn children() -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().to_str()?.parse::<i32>().ok()?;
            std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).ok()
        })
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The zombies among the process's children, and a refusal for every other child (none when
/// `leave_live_out`: live children are then left out of the image) and for every zombie that
/// could not be made again as it is.
pub(crate) fn dump(leave_live_out: bool) -> (Vec<Zombie>, Vec<String>) {
    let own = procfs::read(crate::sys::getpid(), "status").unwrap_or_default();
    let ids = |s: &str| {
        (
            procfs::field(s, "Uid").unwrap_or("").to_owned(),
            procfs::field(s, "Gid").unwrap_or("").to_owned(),
        )
    };
    let group_of = |pid: i32| {
        let stat = procfs::stat_fields(pid).unwrap_or_default();
        let num = |i: usize| {
            stat.get(i)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(-1)
        };
        (num(5), num(6))
    };
    let (pgid, sid) = group_of(crate::sys::getpid());
    let mut zombies = Vec::new();
    let mut why = Vec::new();
    for pid in children() {
        let comm = procfs::read(pid, "comm")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let Some((code, status)) = crate::sys::ended_unreaped(pid) else {
            // Helpers a runtime cannot run without: leaving them out is no way out.
            let needed = match comm.as_str() {
                "erl_child_setup" => Some("the Erlang VM's helper that starts its OS processes, which the VM stops without (\"erl_child_setup closed\"), so it cannot be left out either: a restored VM would need a new one in its place, which thaw does not make; an Erlang VM cannot be checkpointed yet"),
                _ => None,
            };
            if leave_live_out && needed.is_none() {
                let group = match group_of(pid) {
                    (g, s) if g == pid && s == pid => Group::SessionLeader,
                    (g, s) if g == pid && s == sid => Group::Leader,
                    _ => Group::Parents,
                };
                zombies.push(Zombie {
                    pid,
                    comm,
                    status: libc::SIGKILL,
                    group,
                    left_out: true,
                });
            } else {
                let stat = procfs::stat_fields(pid).unwrap_or_default();
                let state = stat.get(3).map_or("?", String::as_str);
                // Its command line says what it is where the name does not (a runtime's own
                // helper: "python3 -c from multiprocessing.resource_tracker import main…").
                let cmd = command_line(pid);
                // Python's tracker of shared memory segments and named semaphores unlinks what
                // it tracks when its parent's pipe closes: left out, at the first life's end.
                let tracker = if cmd
                    .as_deref()
                    .is_some_and(|c| c.contains("multiprocessing.resource_tracker"))
                {
                    "; this is Python's multiprocessing resource tracker (started by shared_memory.SharedMemory and by multiprocessing's locks and queues under spawn or forkserver): left out, it unlinks the segments and semaphores it tracks when the first life ends, and a restore then finds them gone, so unregister them from it first (multiprocessing.resource_tracker.unregister(shm._name, \"shared_memory\"))"
                } else {
                    ""
                };
                let state = match cmd {
                    Some(cmd) => format!("{state}, `{cmd}`"),
                    None => state.to_owned(),
                };
                why.push(match needed {
                    Some(what) => format!("child process {pid} ({comm}, state {state}): {what}"),
                    None => format!(
                        "child process {pid} ({comm}, state {state}): a checkpoint saves this process alone, so after restore it would not be its child; wait for it first (a worker pool: close and join it, or terminate it, before the checkpoint), or, if the process does not depend on it, leave children out (Checkpoint::leave_children_out, THAW_LEAVE_CHILDREN_OUT in C, leave_children_out=True in Python, leaveChildrenOut in Node.js, Thaw.LEAVE_CHILDREN_OUT in Java): it is then as if it had been killed while the process was away (pipes and sockets to it closed){tracker}"
                    ),
                });
            }
            continue;
        };
        let status = match code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_KILLED => status & 0x7f,
            _ => {
                why.push(format!(
                    "zombie child {pid} ({comm}) ended by signal {status} with a core dump: it cannot be made again without dumping core; wait for it first"
                ));
                continue;
            }
        };
        let theirs = procfs::read(pid, "status").unwrap_or_default();
        if ids(&theirs) != ids(&own) {
            why.push(format!(
                "zombie child {pid} ({comm}) had other user or group ids than the process; wait for it first"
            ));
            continue;
        }
        let group = match group_of(pid) {
            (g, s) if g == pgid && s == sid => Group::Parents,
            (g, s) if g == pid && s == sid => Group::Leader,
            (g, s) if g == pid && s == pid => Group::SessionLeader,
            (g, s) => {
                why.push(format!(
                    "zombie child {pid} ({comm}) is in process group {g} of session {s}, which it does not lead and the process is not in: it cannot be made again there; wait for it first"
                ));
                continue;
            }
        };
        zombies.push(Zombie {
            pid,
            comm,
            status,
            group,
            left_out: false,
        });
    }
    (zombies, why)
}

impl Zombie {
    /// How it ended as SIGCHLD's siginfo says it: (si_code, si_status).
    fn end(&self) -> (i32, i32) {
        match self.status & 0x7f {
            0 => (libc::CLD_EXITED, (self.status >> 8) & 0xff),
            sig => (libc::CLD_KILLED, sig),
        }
    }

    /// The SIGCHLD its end raised, as the kernel's siginfo (CLD_EXITED or CLD_KILLED, its PID,
    /// `uid`, its status), to be queued for the process.
    pub fn sigchld(&self, uid: u32) -> super::signals::PendingSignal {
        let (code, status) = self.end();
        let mut info = [0u64; 16];
        info[0] = libc::SIGCHLD as u64;
        info[1] = code as u64;
        info[2] = u64::from(self.pid as u32) | u64::from(uid) << 32;
        info[3] = status as u32 as u64;
        super::signals::PendingSignal {
            signo: libc::SIGCHLD as u32,
            info,
        }
    }

    /// Makes the zombie again, as a child of the process being restored: a fork with its PID
    /// (`clone_tid`: the `set_tid` array for clone3 in the arena) that runs `credentials`, takes
    /// the name and ends; the process waits until it has ended, without reaping it. Runs before
    /// the process's memory and userfaultfd exist (the fork copies only the restorer's region),
    /// after the process's own session is made, and while every signal is blocked; the SIGCHLD it raises is taken back by
    /// [`plan_forget_sigchld`].
    pub fn plan_restore(&self, plan: &mut Plan, credentials: impl FnOnce(&mut Plan)) {
        let back = plan.current();
        let list = plan.new_list();
        match self.group {
            Group::Parents => {}
            Group::Leader => plan.syscall(
                format!("zombie {}: lead a process group", self.pid),
                libc::SYS_setpgid,
                [0; 6],
            ),
            Group::SessionLeader => plan.syscall(
                format!("zombie {}: lead a session", self.pid),
                libc::SYS_setsid,
                [0; 6],
            ),
        }
        credentials(plan);
        let name = plan.cstr(&self.comm);
        plan.syscall(
            format!("zombie {}: its name", self.pid),
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, name, 0, 0, 0, 0],
        );
        let sig = (self.status & 0x7f) as u64;
        if sig == 0 {
            plan.syscall(
                format!("zombie {}: exit", self.pid),
                libc::SYS_exit_group,
                [((self.status >> 8) & 0xff) as u64, 0, 0, 0, 0, 0],
            );
        } else {
            // Not dumpable: a signal that dumps core by default ends it without a core file
            // (its own copy of the memory map: no CLONE_VM).
            plan.syscall(
                format!("zombie {}: no core dump", self.pid),
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            );
            let dfl = plan.words(&[0, 0, 0, 0]);
            plan.syscall_any(
                format!("zombie {}: default action of signal {sig}", self.pid),
                libc::SYS_rt_sigaction,
                [sig, dfl, 0, 8, 0, 0],
            );
            let set = plan.words(&[1u64 << (sig - 1)]);
            plan.syscall(
                format!("zombie {}: unblock signal {sig}", self.pid),
                libc::SYS_rt_sigprocmask,
                [libc::SIG_UNBLOCK as u64, set, 0, 8, 0, 0],
            );
            plan.syscall(
                format!("zombie {}: end by signal {sig}", self.pid),
                libc::SYS_kill,
                [self.pid as u64, sig, 0, 0, 0, 0],
            );
        }
        // Never reached: a stand-in that did not end as told fails the restore (ENOSYS).
        plan.syscall(
            format!("zombie {} did not end as its first life did", self.pid),
            -1,
            [0; 6],
        );
        plan.select(back);
        let tid = plan.words(&[self.pid as u64]);
        // clone_args: a plain fork (its own memory, files and dispositions) that signals
        // SIGCHLD, with the zombie's PID.
        let args = plan.words(&[0, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0, tid, 1, 0]);
        plan.clone_thread(
            format!("make zombie child {} ({})", self.pid, self.comm),
            args,
            list,
        );
        let info = plan.data(&[0u8; 128]);
        plan.syscall(
            format!("wait until zombie {} has ended", self.pid),
            libc::SYS_waitid,
            [
                libc::P_PID as u64,
                self.pid as u64,
                info,
                (libc::WEXITED | libc::WNOWAIT) as u64,
                0,
                0,
            ],
        );
        // It ended as told (a stand-in whose step failed exits 127 instead): siginfo's si_code
        // at 8, si_status at 24.
        let (code, status) = self.end();
        plan.expect(
            format!("zombie {} ended as its first life did", self.pid),
            info + 8,
            code as u32,
        );
        plan.expect(
            format!(
                "zombie {} ended with the status its first life had",
                self.pid
            ),
            info + 24,
            status as u32,
        );
    }
}

/// Before the zombies are made: SIGCHLD at its default action, so that they stay zombies
/// whatever the launcher's caller left ignored (the image's dispositions come later).
pub fn plan_default_sigchld(plan: &mut Plan) {
    let dfl = plan.words(&[0, 0, 0, 0]);
    plan.syscall(
        "SIGCHLD at its default action while zombies are made",
        libc::SYS_rt_sigaction,
        [libc::SIGCHLD as u64, dfl, 0, 8, 0, 0],
    );
}

/// After the zombies are made: the SIGCHLD their ends raised (blocked, so queued) is taken off
/// the queue; the first life had it long before its checkpoint.
pub fn plan_forget_sigchld(plan: &mut Plan) {
    let set = plan.words(&[1u64 << (libc::SIGCHLD - 1)]);
    let zero = plan.words(&[0, 0]);
    plan.syscall_any(
        "take back the SIGCHLD the zombies raised",
        libc::SYS_rt_sigtimedwait,
        [set, 0, zero, 8, 0, 0],
    );
}

/// A process's command line, its arguments joined by spaces, cut at 120 characters; `None`
/// when it cannot be read or is empty (a kernel thread, a zombie).
fn command_line(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ");
    if text.is_empty() {
        return None;
    }
    Some(match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_recorded_with_its_end_and_a_live_child_is_refused() {
        // Children are per thread: this test's thread forks both.
        // SAFETY: the children only _exit or pause.
        let (zombie, live) = unsafe {
            let z = libc::fork();
            if z == 0 {
                libc::_exit(9);
            }
            let l = libc::fork();
            if l == 0 {
                libc::pause();
                libc::_exit(0);
            }
            (z, l)
        };
        // SAFETY: waits without reaping.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                zombie as u32,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
        }
        let (zombies, why) = dump(false);
        let z = zombies.iter().find(|z| z.pid == zombie).expect("recorded");
        assert_eq!(z.status, 9 << 8);
        assert!(why
            .iter()
            .any(|w| w.starts_with(&format!("child process {live} "))));
        let (_, why) = dump(true);
        assert!(!why
            .iter()
            .any(|w| w.starts_with(&format!("child process {live} "))));
        // SAFETY: our own children.
        unsafe {
            libc::kill(live, libc::SIGKILL);
            libc::waitpid(live, std::ptr::null_mut(), 0);
            libc::waitpid(zombie, std::ptr::null_mut(), 0);
        }
    }
}
