//! A `thaw serve` for the tests that serve images: started, waited for, asked for instances.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use super::*;

/// A running `thaw serve`; killed (and so every instance) when dropped.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    pub template: i32,
    /// Instances it keeps forked ahead of callers (`--spares`, 2 unless given).
    pub spares: usize,
    /// What it says on stderr after it began serving, line by line.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `thaw serve --trust k.pub --socket serve.sock OPTS IMAGE` and waits for it to say
    /// it serves; or returns what it did when it ended instead.
    pub fn try_start(env: &Env, image: &Path, opts: &[&str]) -> Result<Server, Output> {
        let socket = env.path("serve.sock");
        Self::try_start_at(env, image, opts, &socket)
    }

    // Every path that returns waits for the child or hands it to a Server, which does.
    #[allow(clippy::zombie_processes)]
    pub fn try_start_at(
        env: &Env,
        image: &Path,
        opts: &[&str],
        socket: &Path,
    ) -> Result<Server, Output> {
        let mut child = command(&bin("thaw"))
            .arg("serve")
            .arg("--trust")
            .arg(&env.pubkey)
            .arg("--socket")
            .arg(socket)
            .args(opts)
            .arg(image)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                let mut stdout = Vec::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_end(&mut stdout)
                    .unwrap();
                let status = child.wait().unwrap();
                return Err(Output {
                    status,
                    stdout,
                    stderr: said.into_bytes(),
                });
            }
            if let Some(rest) = line.strip_prefix("thaw: serving ") {
                let template = rest
                    .split("(template ")
                    .nth(1)
                    .and_then(|t| t.split(')').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("no template PID in {line:?}"));
                let (tx, lines) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    for line in err.lines().map_while(|l| l.ok()) {
                        let _ = tx.send(line);
                    }
                });
                let spares = opts
                    .iter()
                    .position(|o| *o == "--spares")
                    .map_or(2, |i| opts[i + 1].parse().unwrap());
                return Ok(Server {
                    child,
                    socket: socket.to_owned(),
                    template,
                    spares,
                    lines,
                });
            }
            said.push_str(&line);
        }
    }

    pub fn start(env: &Env, image: &Path, opts: &[&str]) -> Server {
        Self::try_start(env, image, opts)
            .unwrap_or_else(|o| panic!("thaw serve did not start: {}", text(&o)))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `n` callers without arguments, each once its instance says it is ready (with `pid`).
    pub fn ready_callers(&self, n: usize, pid: i32) -> Vec<Waiting> {
        let mut callers: Vec<Waiting> = (0..n).map(|_| Waiting::spawn(self.call(&[]))).collect();
        for c in &mut callers {
            assert_eq!(c.ready(), pid);
        }
        callers
    }

    /// `thaw run --via SOCKET -- ARGS`.
    pub fn call(&self, args: &[&str]) -> Command {
        let mut c = command(&bin("thaw"));
        c.env("ZDTM_ENV", "from the launcher")
            .arg("run")
            .arg("--via")
            .arg(&self.socket);
        if !args.is_empty() {
            c.arg("--").args(args);
        }
        c
    }

    /// The server's child processes: the template, the nursery of namespaces and the
    /// instances.
    pub fn children(&self) -> Vec<i32> {
        children(self.pid())
    }

    /// The process that makes the namespace inits: the server's one child, besides the
    /// template, in the server's own PID namespace.
    pub fn nursery(&self) -> i32 {
        let found: Vec<i32> = self
            .children()
            .into_iter()
            .filter(|&p| p != self.template && nspid(p).is_some_and(|ids| ids.len() == 1))
            .collect();
        assert_eq!(found.len(), 1, "one nursery among {:?}", self.children());
        found[0]
    }

    /// The running instances' host PIDs (children whose PID in their own namespace is not 1).
    pub fn instances(&self) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|&p| nspid(p).is_some_and(|ids| ids.len() == 2 && ids[1] != 1))
            .collect()
    }

    /// The instances still running: not one that ended and that the server has not reaped yet
    /// (a test would signal a zombie).
    pub fn live_instances(&self) -> Vec<i32> {
        self.instances()
            .into_iter()
            .filter(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, r)| !r.starts_with('Z'))
                })
            })
            .collect()
    }

    /// The namespace inits (the nursery's children), running ones and those the server keeps
    /// ready (at most 8).
    pub fn inits(&self) -> Vec<i32> {
        children(self.nursery())
            .into_iter()
            .filter(|&p| nspid(p).is_some_and(|ids| ids.len() == 2 && ids[1] == 1))
            .collect()
    }

    /// Nothing but the template, the nursery, at most the inits kept ready and at most the
    /// spares (the server makes both while this runs).
    pub fn assert_idle(&self) {
        let all = self.children();
        let instances = self.instances().len();
        assert!(instances <= self.spares, "{instances} instances: {all:?}");
        let inits = children(self.nursery());
        assert!(inits.len() <= 8 + self.spares, "{inits:?} namespace inits");
        assert!(
            inits
                .iter()
                .all(|&p| nspid(p).is_none_or(|ids| ids.len() == 2 && ids[1] == 1)),
            "the nursery's children are namespace inits: {inits:?}"
        );
        assert!(all.contains(&self.template));
        assert!(all.len() <= 2 + self.spares, "{all:?}");
    }

    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// SIGTERM, then waits: its status and what it said on stderr after it began serving.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.end()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for it to end: its status and the rest of what it said.
    pub fn end(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let said: Vec<String> = self.lines.iter().collect();
        (status, said.join("\n"))
    }

    /// Blocks until it says a line containing `needle`; returns that line.
    pub fn said(&self, needle: &str) -> String {
        for line in self.lines.iter() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the server ended without saying {needle:?}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    out
}

/// The `NSpid:` line of a process: its PID in each namespace, outermost first.
pub fn nspid(pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}
