//! `thaw serve` end to end, as root: one verified image restored once into a template, an
//! instance forked from it for each `thaw run --via SOCKET` caller, each with the image's PID in
//! a PID namespace of its own. Instances must come back exactly as `thaw run` restores them;
//! callers get their exit status and their signals through; nothing outlives the server.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::server::*;
use common::*;

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
        ("zdtm-pidfd", &["no-dead"], &[]),
        ("zdtm-attrs", &["no-loginuid"], &["lazy"]),
        ("zdtm-locks", &[], &[]),
        ("zdtm-memory", &["DIR/mapped.dat"], &[]),
        ("zdtm-files", &["DIR"], &[]),
        ("zdtm-process", &["DIR"], &["one", "two words"]),
        ("zdtm-sockets", &[], &[]),
        // A reset stream end: each instance reads its ECONNRESET (not the template's, once).
        ("zdtm-reset", &[], &[]),
        ("zdtm-lazy", &[], &[]),
        ("zdtm-waits", &[], &[]),
        ("zdtm-controls", &[], &[]),
        ("zdtm-worker-checkpoint", &[], &[]),
        ("zdtm-pkeys", &[], &[]),
        // Each instance makes io_uring instances of its own, their counters where the image
        // had them: in one the template shared, the second would see the first one's requests.
        ("zdtm-io-uring", &[], &[]),
        // Each instance makes its AIO contexts (a fork does not pass them on).
        ("zdtm-aio", &[], &[]),
        // The template makes the cgroup namespace the process was at the root of; its
        // instances read / as the first life did.
        ("zdtm-cgroupns", &[], &[]),
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
            assert_eq!(
                ok_lines(&o),
                expected,
                "{prog}, instance {round}: {}",
                text(&o)
            );
        }
        let (status, said) = server.stop();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{prog}: {said}");
        assert!(
            !server_socket_exists(&env),
            "{prog}: the socket outlived the server"
        );
    }
}

fn server_socket_exists(env: &Env) -> bool {
    env.path("serve.sock").exists()
}
/// As root: a scratch environment, a zdtm-waiter image, its PID and a server of it started
/// with `opts`.
fn waiter_server(opts: &[&str]) -> Option<(Env, PathBuf, i32, Server)> {
    if !is_root() {
        return None;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let pid = image_pid(&env, &img);
    let server = Server::start(&env, &img, opts);
    Some((env, img, pid, server))
}

/// The nursery that makes the namespaces' inits is replaced if it dies. The inits it made die
/// with it, and so do the instances and spares in their namespaces: a call in flight then may
/// fail, and the server serves on.
#[test]
fn a_killed_nursery_is_replaced() {
    let Some((_env, _img, pid, server)) = waiter_server(&[]) else {
        return;
    };
    let served = |server: &Server| {
        let o = server
            .call(&[])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout) == format!("ready {pid}\n")
    };
    assert!(served(&server));
    let old = server.nursery();
    let gone = pidfd(old);
    // SAFETY: kill takes a PID and a signal number.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    wait_gone(&gone);
    // Spares and inits of the old nursery may still be dying: a few calls may fail.
    assert!(
        (0..10).any(|_| served(&server)),
        "no call served after the nursery died"
    );
    for _ in 0..3 {
        assert!(served(&server));
    }
    assert_ne!(server.nursery(), old);
    server.assert_idle();
}

/// The PID namespace of a process (the target of /proc/PID/ns/pid).
fn pidns(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap()
}

/// The PIDs an instance sees in its own /proc.
fn seen_from(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/root/proc"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// 64 callers at once: 64 instances, each with the image's PID in a PID namespace of its own,
/// seeing nothing but itself and its init; each caller gets its own instance's exit status.
#[test]
fn sixty_four_instances_at_once_each_alone_with_the_image_pid() {
    let Some((_env, _img, pid, server)) = waiter_server(&["--spares", "0"]) else {
        return;
    };
    let callers = server.ready_callers(64, pid);
    let instances = server.instances();
    assert_eq!(instances.len(), 64, "{:?}", server.children());
    let template = pidns(server.template);
    let mut spaces: Vec<PathBuf> = instances.iter().map(|&p| pidns(p)).collect();
    spaces.sort();
    spaces.dedup();
    assert_eq!(spaces.len(), 64, "instances share PID namespaces");
    assert!(!spaces.contains(&template));
    for &p in &instances {
        assert_eq!(nspid(p).unwrap()[1], pid);
        assert_eq!(
            seen_from(p),
            vec![1, pid],
            "instance {p} sees more than itself"
        );
    }
    for (i, c) in callers.into_iter().enumerate() {
        assert_eq!(c.finish(i as i32).code(), Some(i as i32));
    }
    // Every instance and its namespace's init is gone once its caller has its status.
    server.assert_idle();
}

/// With every slot taken a caller is told it waits, and gets an instance when one ends.
#[test]
fn callers_beyond_the_bound_wait_for_a_slot() {
    let Some((_env, _img, pid, server)) = waiter_server(&["--max-instances", "2", "--spares", "0"])
    else {
        return;
    };
    let mut first = Waiting::spawn(server.call(&[]));
    let mut second = Waiting::spawn(server.call(&[]));
    assert_eq!(first.ready(), pid);
    assert_eq!(second.ready(), pid);
    let mut third = Waiting::spawn(server.call(&[]));
    let mut said = String::new();
    BufReader::new(third.child.stderr.as_mut().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(
        said.contains("all 2 of the server's instances are running; waiting"),
        "{said}"
    );
    assert_eq!(server.instances().len(), 2);
    assert_eq!(first.finish(3).code(), Some(3));
    assert_eq!(third.ready(), pid);
    assert_eq!(server.instances().len(), 2);
    assert_eq!(second.finish(4).code(), Some(4));
    assert_eq!(third.finish(5).code(), Some(5));
}

/// A caller interrupted while it waits for a slot (its user pressed Ctrl-C) ends at once, as
/// 128+SIGINT, and the server starts no instance for it: it used to wait for another caller's
/// instance to end, then got an instance only to pass it the signal.
#[test]
fn a_caller_interrupted_while_it_waits_gets_no_instance() {
    let Some((_env, _img, pid, server)) = waiter_server(&["--max-instances", "1", "--spares", "0"])
    else {
        return;
    };
    let mut first = Waiting::spawn(server.call(&[]));
    assert_eq!(first.ready(), pid);
    let mut second = Waiting::spawn(server.call(&[]));
    let mut said = String::new();
    BufReader::new(second.child.stderr.as_mut().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.contains("waiting for one to end"), "{said}");
    let gone = pidfd(second.child.id() as i32);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(second.child.id() as i32, libc::SIGINT) };
    // It ends while the first instance still holds the only slot (it used to wait for that
    // instance: the bound is only there so that a regression fails instead of hanging).
    let mut p = libc::pollfd {
        fd: gone.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 60_000) };
    assert_eq!(n, 1, "the interrupted caller still waits for a slot");
    let status = second.child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
    assert_eq!(server.instances().len(), 1);
    assert_eq!(first.finish(3).code(), Some(3));
    // The slot goes to the next caller, and only its instance runs.
    let mut third = Waiting::spawn(server.call(&[]));
    assert_eq!(third.ready(), pid);
    assert_eq!(server.instances().len(), 1);
    assert_eq!(third.finish(5).code(), Some(5));
}

/// The caller's SIGTERM reaches its instance; a caller killed outright takes its instance
/// along; an instance killed from outside is reported to its caller, and the server serves on.
#[test]
fn signals_reach_the_instance_and_a_lost_caller_ends_it() {
    let Some((_env, _img, pid, server)) = waiter_server(&["--spares", "0"]) else {
        return;
    };

    let mut c = Waiting::spawn(server.call(&[]));
    assert_eq!(c.ready(), pid);
    // Held open: `wait` would close it, and the instance would end at end of file instead.
    let _stdin = c.child.stdin.take();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGTERM) };
    assert_eq!(c.child.wait().unwrap().code(), Some(128 + libc::SIGTERM));

    let mut c = Waiting::spawn(server.call(&[]));
    assert_eq!(c.ready(), pid);
    let instance = server.instances();
    assert_eq!(instance.len(), 1);
    let fd = pidfd(instance[0]);
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    wait_gone(&fd);

    let mut c = Waiting::spawn(server.call(&[]));
    assert_eq!(c.ready(), pid);
    let instance = server.live_instances();
    assert_eq!(instance.len(), 1);
    // SAFETY: as above.
    unsafe { libc::kill(instance[0], libc::SIGKILL) };
    assert_eq!(c.child.wait().unwrap().code(), Some(128 + libc::SIGKILL));

    let c = Waiting::spawn(server.call(&[]));
    let mut c = c;
    assert_eq!(c.ready(), pid);
    assert_eq!(c.finish(0).code(), Some(0));
}

/// The server's end is the end of the template, every instance and every namespace init; the
/// callers are told the server ended (68) and the socket is removed.
#[test]
fn nothing_outlives_the_server() {
    let Some((env, _img, pid, server)) = waiter_server(&["--spares", "0"]) else {
        return;
    };
    let callers = server.ready_callers(3, pid);
    let all: Vec<i32> = server
        .children()
        .into_iter()
        .chain(server.inits())
        .collect();
    assert_eq!(server.instances().len(), 3, "{all:?}");
    assert!(server.inits().len() >= 3, "{all:?}");
    let fds: Vec<OwnedFd> = all.iter().map(|&p| pidfd(p)).collect();
    let (status, _) = server.stop();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    for fd in &fds {
        wait_gone(fd);
    }
    for mut c in callers {
        let status = c.child.wait().unwrap();
        let mut err = String::new();
        c.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(68), "{err}");
        assert!(
            err.contains("the server ended before the instance did"),
            "{err}"
        );
    }
    assert!(!server_socket_exists(&env));
}

/// Refused by name: an image the server cannot share, a path that is not a socket, a socket a
/// server already listens at, an image signed by an untrusted key.
#[test]
fn serve_refuses_what_it_cannot_do() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    // Images serve cannot give its instances: refused (67), naming why.
    for (prog, image, extra, why) in [
        ("zdtm-shmem", "m.thaw", &[][..], "shared"),
        (
            "zdtm-pidfd",
            "p.thaw",
            &[][..],
            "a pidfd of a process that has exited",
        ),
        (
            "zdtm-children",
            "z.thaw",
            &["leave"][..],
            "a child of the template would not be one of its instances",
        ),
        (
            "zdtm-children",
            "a.thaw",
            &["alone"][..],
            "child left out at the checkpoint (a restored process has it as a child that was killed)",
        ),
        (
            "zdtm-stdin",
            "s.thaw",
            &[][..],
            "an instance's standard descriptors are its caller's",
        ),
        (
            "zdtm-perfdata",
            "h.thaw",
            &["thaw-serve-test"][..],
            "HotSpot's performance-data file /tmp/hsperfdata_thaw-serve-test/",
        ),
        (
            "zdtm-io-uring",
            "u.thaw",
            &["busy"][..],
            "it has taken 5300 requests, more than an instance of thaw serve brings back",
        ),
        (
            "zdtm-netlink",
            "n.thaw",
            &[][..],
            "NETLINK_ROUTE socket (port ",
        ),
    ] {
        let img = env.checkpoint(prog, image, extra);
        let o = Server::try_start(&env, &img, &[])
            .err()
            .unwrap_or_else(|| panic!("served {prog}"));
        assert_eq!(o.status.code(), Some(67), "{}", text(&o));
        assert!(text(&o).contains(why), "{}", text(&o));
    }
    let _ = std::fs::remove_dir_all("/tmp/hsperfdata_thaw-serve-test");

    // Connections waiting in a listener would be one instance's: refused too.
    let dir = env.path("backlog");
    std::fs::create_dir(&dir).unwrap();
    let img = env.checkpoint("zdtm-backlog", "b.thaw", &[dir.to_str().unwrap()]);
    let o = Server::try_start(&env, &img, &[])
        .err()
        .expect("served an image with waiting connections");
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        text(&o).contains("connections would be one instance's"),
        "{}",
        text(&o)
    );

    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let file = env.path("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let o = Server::try_start_at(&env, &img, &[], &file)
        .err()
        .expect("served at a regular file");
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");

    let server = Server::start(&env, &img, &[]);
    let o = Server::try_start(&env, &img, &[])
        .err()
        .expect("two servers at one socket");
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("already listening"), "{}", text(&o));
    drop(server);

    let other = Env::new();
    let foreign = other.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let o = Server::try_start(&env, &foreign, &[])
        .err()
        .expect("served an untrusted image");
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
}

/// Callers are checked as `thaw run` checks them: `nobody` cannot reach root's socket (made
/// for its owner only), and where it can reach it is refused: the server gives instances its
/// own credentials, never another caller's.
#[test]
fn a_caller_with_other_credentials_is_refused() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let server = Server::start(&env, &img, &["--spares", "0"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let o = as_nobody(server.call(&[])).output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));

    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(server.call(&[])).output().unwrap();
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        text(&o).contains("this server runs as uid 0"),
        "{}",
        text(&o)
    );
    assert!(server.instances().is_empty());
}

/// A hostile caller (a request that is not one, no descriptors) gets a usage failure, and the
/// server goes on serving.
#[test]
fn a_malformed_request_is_refused_and_the_server_serves_on() {
    let Some((_env, _img, pid, server)) = waiter_server(&[]) else {
        return;
    };
    for request in [&b"\xff\xff\xff\xff garbage"[..], b""] {
        let sock = seqpacket_connect(&server.socket);
        // SAFETY: a valid buffer of the given length.
        let n = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
        assert_eq!(n, request.len() as isize);
        let mut reply = [0u8; 4096];
        // SAFETY: a valid buffer of the given length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if request.is_empty() {
            // An empty packet is the end of the caller: no answer.
            assert_eq!(n, 0);
            continue;
        }
        // ToCaller::Failed (variant 2), exit code 64 (usage), then the message.
        assert!(n > 2, "{n}");
        assert_eq!(&reply[..2], &[2, 64]);
        assert!(String::from_utf8_lossy(&reply[..n as usize]).contains("exactly its standard"));
    }
    let mut c = Waiting::spawn(server.call(&[]));
    assert_eq!(c.ready(), pid);
    assert_eq!(c.finish(9).code(), Some(9));
}

fn seqpacket_connect(path: &Path) -> OwnedFd {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a descriptor just returned to us.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a valid address of the given size.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    sock
}

/// 1,000 instances in a row: every one answers, and the server holds no more descriptors,
/// children or memory afterwards than after the first ten (give or take the inits it keeps
/// ready).
#[test]
fn a_thousand_instances_in_a_row_leak_nothing() {
    let Some((env, _img, pid, server)) = waiter_server(&[]) else {
        return;
    };
    let status_file = env.path("status");
    std::fs::write(&status_file, "7\n").unwrap();
    let once = || {
        let o = server
            .call(&[])
            .stdin(std::fs::File::open(&status_file).unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("ready {pid}\n"));
    };
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    for _ in 0..10 {
        once();
    }
    let (fds, kib) = (server.descriptors(), rss());
    for _ in 10..1000 {
        once();
    }
    // The inits kept ready come and go (a pidfd and two namespace descriptors each, at most 8
    // of them), as do the namespaces of an instance just ended (two descriptors, let go after
    // its caller hears, on each of the two workers): a leak of anything per instance would
    // show 990 times over.
    let now = server.descriptors();
    assert!(
        now <= fds + 3 * 8 + 2 * 2 + 2,
        "{fds} descriptors after 10 instances, {now} after 1000"
    );
    server.assert_idle();
    let grown = rss().saturating_sub(kib);
    assert!(
        grown < 2048,
        "the server grew by {grown} KiB over 990 instances"
    );
}

/// The template PID in a "serving" line.
fn template_in(line: &str) -> i32 {
    line.split("(template ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no template PID in {line:?}"))
}

/// SIGHUP reloads the image from its path: new callers get the new image (told apart by its
/// PID), running instances of the old one go on and end normally, and the old template ends
/// once they have. An image that fails verification is not loaded; the server serves on.
#[test]
fn a_reload_serves_the_new_image_and_keeps_running_instances() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let a = env.checkpoint("zdtm-waiter", "a.thaw", &[]);
    let b = env.checkpoint("zdtm-waiter", "b.thaw", &[]);
    let (pa, pb) = (image_pid(&env, &a), image_pid(&env, &b));
    assert_ne!(pa, pb);
    let served = env.path("served.thaw");
    std::fs::copy(&a, &served).unwrap();
    let server = Server::start(&env, &served, &[]);
    let old_template = pidfd(server.template);
    let mut old = Waiting::spawn(server.call(&[]));
    assert_eq!(old.ready(), pa);

    std::fs::copy(&b, env.path("next.thaw")).unwrap();
    std::fs::rename(env.path("next.thaw"), &served).unwrap();
    server.signal(libc::SIGHUP);
    let line = server.said("reloaded: serving");
    assert!(line.contains(&format!("PID {pb} ")), "{line}");
    assert_ne!(template_in(&line), server.template);
    let mut new = Waiting::spawn(server.call(&[]));
    assert_eq!(new.ready(), pb);
    assert_eq!(old.finish(3).code(), Some(3));
    wait_gone(&old_template);
    assert_eq!(new.finish(4).code(), Some(4));

    // A damaged image on reload: refused, and the server serves the last good one.
    let mut bytes = std::fs::read(&b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(env.path("next.thaw"), &bytes).unwrap();
    std::fs::rename(env.path("next.thaw"), &served).unwrap();
    server.signal(libc::SIGHUP);
    let line = server.said("cannot reload");
    assert!(line.contains("still serving the previous image"), "{line}");
    let mut c = Waiting::spawn(server.call(&[]));
    assert_eq!(c.ready(), pb);
    assert_eq!(c.finish(5).code(), Some(5));
}

/// SIGQUIT stops the server gracefully: the socket goes at once (new callers cannot reach
/// it), the running instance ends normally, and then the server and its template end (0).
#[test]
fn a_graceful_stop_lets_running_instances_finish() {
    let Some((env, _img, pid, server)) = waiter_server(&[]) else {
        return;
    };
    let template = pidfd(server.template);
    let mut running = Waiting::spawn(server.call(&[]));
    assert_eq!(running.ready(), pid);
    server.signal(libc::SIGQUIT);
    server.said("stopping");
    assert!(!server_socket_exists(&env));
    let o = server.call(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    assert_eq!(running.finish(6).code(), Some(6));
    let (status, said) = server.end();
    assert_eq!(status.code(), Some(0), "{said}");
    wait_gone(&template);
}

/// The Rust API: an instance started with `thaw::serve::Call`, its stdio the caller's pipes,
/// its PID the image's, a signal passed on, its status returned; a missing server is an
/// error that names the socket.
#[test]
fn the_rust_api_starts_and_waits_for_instances() {
    if !is_root() {
        return;
    }
    use std::io::Write;
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let pid = image_pid(&env, &img);
    let server = Server::start(&env, &img, &[]);
    let start = |sin: &std::io::PipeReader, sout: &std::io::PipeWriter| {
        thaw::serve::Call::new()
            .arg("from Rust")
            .stdio(sin.as_fd(), sout.as_fd(), std::io::stderr().as_fd())
            .start(&server.socket)
            .unwrap()
    };
    for how in ["status", "signal"] {
        let (sin, mut to) = std::io::pipe().unwrap();
        let (from, sout) = std::io::pipe().unwrap();
        let instance = start(&sin, &sout);
        drop((sin, sout));
        assert_eq!(instance.pid(), pid);
        let mut line = String::new();
        BufReader::new(from).read_line(&mut line).unwrap();
        assert_eq!(line, format!("ready {pid}\n"));
        if how == "status" {
            writeln!(to, "12").unwrap();
            assert_eq!(instance.wait().unwrap(), 12);
        } else {
            instance.signal(libc::SIGTERM).unwrap();
            assert_eq!(instance.wait().unwrap(), 128 + libc::SIGTERM);
        }
    }
    let missing = env.path("missing.sock");
    let e = thaw::serve::Call::new().start(&missing).unwrap_err();
    assert!(
        matches!(e, thaw::serve::ServeError::Unreachable { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("missing.sock"), "{e}");
}

/// The C API: a function host in C (examples/c/serve_client.c) runs five instances at once,
/// each with its own pipes, and gets each one's status (the last one's by SIGTERM).
#[test]
fn the_c_api_runs_instances_concurrently() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let exe = env.path("serve_client");
    cc_with_libthaw(&[&root.join("examples/c/serve_client.c")], &[], &exe);
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let pid = image_pid(&env, &img);
    let server = Server::start(&env, &img, &[]);
    let o = command(&exe).arg(&server.socket).arg("5").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let expected: String = (0..5)
        .map(|i| {
            let status = if i == 4 { 128 + libc::SIGTERM } else { i };
            format!("{i} {pid} {status}\n")
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
    let o = command(&exe)
        .arg(env.path("missing.sock"))
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("thaw_serve_start: -3: cannot reach a thaw server"),
        "{}",
        text(&o)
    );
}

/// (Pss, Private_Clean + Private_Dirty, Rss) of a process, in KiB.
fn pss(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
        field("Rss:"),
    )
}

/// 64 instances share the template's memory: together with it they take at most twice what
/// one instance has resident plus what each holds alone (what it wrote or made), not 64 copies.
#[test]
fn sixty_four_instances_share_the_template_memory() {
    let Some((_env, _img, pid, server)) = waiter_server(&["--spares", "0"]) else {
        return;
    };
    let callers = server.ready_callers(64, pid);
    let instances = server.instances();
    assert_eq!(instances.len(), 64);
    let (mut total, mut alone, mut rss) = (pss(server.template).0, 0, 0);
    for &p in &instances {
        let (p_pss, p_private, p_rss) = pss(p);
        total += p_pss;
        alone += p_private;
        rss = rss.max(p_rss);
    }
    assert!(
        total <= 2 * rss + alone,
        "PSS of the template and 64 instances {total} KiB; one instance resident {rss} KiB, held alone by instances {alone} KiB"
    );
    // Each instance holds a small part of what it has resident alone: the rest is shared.
    assert!(
        alone / 64 < rss / 4,
        "{} KiB alone per instance, {rss} KiB resident",
        alone / 64
    );
    for c in callers {
        assert_eq!(c.finish(0).code(), Some(0));
    }
}
