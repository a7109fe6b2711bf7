//! `thaw serve` end to end, as root: one verified image restored once into a template, an
//! instance forked from it for each `thaw run --via SOCKET` caller, each with the image's PID in
//! a PID namespace of its own. Instances must come back exactly as `thaw run` restores them;
//! callers get their exit status and their signals through; nothing outlives the server.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use common::*;

/// A running `thaw serve`; killed (and so every instance) when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
    template: i32,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Starts `thaw serve --trust k.pub --socket serve.sock OPTS IMAGE` and waits for it to say
    /// it serves; or returns what it did when it ended instead.
    fn try_start(env: &Env, image: &Path, opts: &[&str]) -> Result<Server, Output> {
        let socket = env.path("serve.sock");
        Self::try_start_at(env, image, opts, &socket)
    }

    fn try_start_at(env: &Env, image: &Path, opts: &[&str], socket: &Path) -> Result<Server, Output> {
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
                child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
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
                let stderr = std::thread::spawn(move || {
                    let mut rest = String::new();
                    let _ = err.read_to_string(&mut rest);
                    rest
                });
                return Ok(Server {
                    child,
                    socket: socket.to_owned(),
                    template,
                    stderr: Some(stderr),
                });
            }
            said.push_str(&line);
        }
    }

    fn start(env: &Env, image: &Path, opts: &[&str]) -> Server {
        Self::try_start(env, image, opts)
            .unwrap_or_else(|o| panic!("thaw serve did not start: {}", text(&o)))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `thaw run --via SOCKET -- ARGS`.
    fn call(&self, args: &[&str]) -> Command {
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

    /// The server's child processes: the template, the namespace inits and the instances.
    fn children(&self) -> Vec<i32> {
        children(self.pid())
    }

    /// The running instances' host PIDs (children whose PID in their own namespace is not 1).
    fn instances(&self) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|&p| nspid(p).is_some_and(|ids| ids.len() == 2 && ids[1] != 1))
            .collect()
    }

    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// SIGTERM, then waits: its status and what it said on stderr after it began serving.
    fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let said = self.stderr.take().unwrap().join().unwrap();
        (status, said)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out.sort_unstable();
    out
}

/// The `NSpid:` line of a process: its PID in each namespace, outermost first.
fn nspid(pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// A pidfd for `pid` (taken while it runs, so the answer is about that process).
fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Blocks until the process behind `fd` has ended (a pidfd becomes readable then).
fn wait_gone(fd: &OwnedFd) {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; no timeout: the end of the process is the event awaited.
    let n = unsafe { libc::poll(&mut p, 1, -1) };
    assert_eq!(n, 1, "{}", std::io::Error::last_os_error());
}

fn image_pid(env: &Env, img: &Path) -> i32 {
    env.manifest(img).process.pid
}

fn ok_lines(o: &Output) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("ok "))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Each zdtm program, served: every instance passes the same checks as `thaw run --pid-mode ns`
/// of the same image (threads, signals, timers, clocks, FPU, files, locks, sockets, …).
#[test]
fn zdtm_programs_come_back_through_serve_as_through_run() {
    if !is_root() {
        return;
    }
    // EXTRA names a scratch directory or file where it is "DIR" or "DIR/mapped.dat".
    let programs: &[(&str, &[&str], &[&str])] = &[
        ("zdtm-threads", &[], &[]),
        ("zdtm-signals", &[], &[]),
        ("zdtm-fpu", &[], &[]),
        ("zdtm-timers", &[], &[]),
        ("zdtm-posix-timers", &[], &[]),
        ("zdtm-dontfork", &[], &[]),
        ("zdtm-clocks", &[], &[]),
        ("zdtm-vdso", &[], &[]),
        ("zdtm-pattern", &[], &[]),
        ("zdtm-pidfd", &[], &[]),
        ("zdtm-attrs", &["no-loginuid"], &["lazy"]),
        ("zdtm-locks", &[], &[]),
        ("zdtm-memory", &["DIR/mapped.dat"], &[]),
        ("zdtm-files", &["DIR"], &[]),
        ("zdtm-process", &["DIR"], &["one", "two words"]),
        ("zdtm-sockets", &[], &[]),
        ("zdtm-lazy", &[], &[]),
        ("zdtm-worker-checkpoint", &[], &[]),
        ("zdtm-children", &["leave"], &[]),
    ];
    for (prog, extra, args) in programs {
        // One image for `thaw run`, another for the server: programs that write to their
        // files on disk (zdtm-files) find them as the first life left them in either.
        let checkpoint = |env: &Env| {
            let dir = env.path("scratch");
            std::fs::create_dir(&dir).unwrap();
            let extra: Vec<String> = extra
                .iter()
                .map(|e| e.replace("DIR", dir.to_str().unwrap()))
                .collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            env.checkpoint(prog, "z.thaw", &extra)
        };
        let env = Env::new();
        let run = env.restore(&checkpoint(&env), &["--pid-mode", "ns"], args);
        assert_all_ok(&run, &[]);
        let expected = ok_lines(&run);
        assert!(!expected.is_empty(), "{prog}: {}", text(&run));

        let env = Env::new();
        let img = checkpoint(&env);
        let server = Server::start(&env, &img, &[]);
        // Twice: an instance changes nothing the next one sees (but zdtm-files writes to its
        // files on disk, which a second `thaw run` would see as well).
        let rounds = if *prog == "zdtm-files" { 1 } else { 2 };
        for round in 0..rounds {
            let o = server.call(args).output().unwrap();
            assert_all_ok(&o, &[]);
            assert_eq!(ok_lines(&o), expected, "{prog}, instance {round}: {}", text(&o));
        }
        let (status, said) = server.stop();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{prog}: {said}");
        assert!(!server_socket_exists(&env), "{prog}: the socket outlived the server");
    }
}

fn server_socket_exists(env: &Env) -> bool {
    env.path("serve.sock").exists()
}
