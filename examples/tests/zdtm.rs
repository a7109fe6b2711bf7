//! zdtm-style end-to-end tests: one program per kind of state sets it up, checkpoints, is
//! restored through the real `thaw` binary (host PID mode, as root), and checks it.

mod common;

use common::*;
use std::os::unix::fs::OpenOptionsExt;

fn run_zdtm(prog: &str, extra: &[&str], args: &[&str], expected: &[&str]) -> std::process::Output {
    let env = Env::new();
    let img = env.checkpoint(prog, "z.thaw", extra);
    let o = env.restore(&img, &["--pid-mode", "auto"], args);
    assert_all_ok(&o, expected);
    o
}

#[test]
fn memory_contents_brk_and_layout() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("mapped.dat");
    let env = Env::new();
    let img = env.checkpoint("zdtm-memory", "m.thaw", &[data.to_str().unwrap()]);
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(
        &o,
        &[
            "heap",
            "stack",
            "globals",
            "large mmap",
            "read-only mapping",
            "modified file page",
            "unmodified file page",
            "brk growth",
            "malloc",
        ],
    );
    // The restored /proc/self/maps lists the image's regions, at the same addresses, with the same
    // protections and backing.
    let out = String::from_utf8_lossy(&o.stdout);
    let maps = out.split("maps:\n").nth(1).unwrap();
    let restored = normalize(maps.lines().filter_map(|l| {
        let e = thaw::procfs::parse_map_line(l)?;
        Some((e.start, e.end, e.perms, e.name))
    }));
    let m = env.manifest(&img);
    let image = normalize(m.memory.iter().map(|vma| {
        use thaw::state::memory::Backing;
        let name = match &vma.backing {
            Backing::Anonymous => String::new(),
            Backing::Heap => "[heap]".into(),
            Backing::Stack => "[stack]".into(),
            Backing::File { path, .. } => path.clone(),
            Backing::Special { name } => name.clone(),
            Backing::Shared { object, .. } => format!("shared {object}"),
            Backing::IoRing { .. } => "anon_inode:[io_uring]".into(),
            Backing::Aio(_) => thaw::state::aio::MAP_NAME.into(),
        };
        let p = |bit: i32, c: char| if vma.prot & bit as u32 != 0 { c } else { '-' };
        let shared = if vma.map_flags & libc::MAP_SHARED as u32 != 0 {
            's'
        } else {
            'p'
        };
        let perms = format!(
            "{}{}{}{shared}",
            p(libc::PROT_READ, 'r'),
            p(libc::PROT_WRITE, 'w'),
            p(libc::PROT_EXEC, 'x')
        );
        (vma.start, vma.end, perms, name)
    }));
    assert_eq!(restored, image, "restored maps differ from the image's");
    assert!(image.iter().any(|r| r.3 == "[heap]") && image.iter().any(|r| r.3 == "[stack]"));
    // The mapped file changed in place (same file, one byte longer): its saved page would sit
    // beside the file's new contents, so the restore is refused, naming it.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "mapped file {} was modified since the checkpoint",
            data.display()
        )) && err.contains("saved pages beside the file's new contents"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    // The mapped file made shorter since: its pages past the new end would raise SIGBUS where
    // the first life read them (and a saved page cannot go there): refused, naming it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let short = env.restore(&img, &[], &[]);
    assert_eq!(short.status.code(), Some(67), "{}", text(&short));
    assert!(
        String::from_utf8_lossy(&short.stderr).contains(&format!(
            "mapped file {} is shorter than at the checkpoint (4096 bytes, then {})",
            data.display(),
            3 * 4096
        )),
        "{}",
        text(&short)
    );
}

/// Adjacent entries with the same protection and name merged (the kernel may merge or split
/// equivalent VMAs differently); [vsyscall] dropped (fixed, not part of the process's layout).
fn normalize(
    it: impl Iterator<Item = (u64, u64, String, String)>,
) -> Vec<(u64, u64, String, String)> {
    let mut v: Vec<_> = it.filter(|r| r.3 != "[vsyscall]").collect();
    v.sort();
    let mut out: Vec<(u64, u64, String, String)> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if last.1 == r.0 && last.2 == r.2 && last.3 == r.3 => last.1 = r.1,
            _ => out.push(r),
        }
    }
    out
}

/// An executable changed in place since the checkpoint (same file, other contents) is refused:
/// the restored process would run other code than it had.
#[test]
fn an_executable_changed_in_place_is_refused_by_name() {
    let env = Env::new();
    let exe = env.path("signals-copy");
    copy_program(&bin("zdtm-signals"), &exe, 0o755);
    let img = env.path("x.thaw");
    let o = command(&exe).arg(&img).arg(&env.key).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&exe)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was modified since the checkpoint") && err.contains("run other code"),
        "{err}"
    );
}

/// Handlers, mask and alternate stack; with `no-altstack`, a main thread that never had an
/// alternate stack has none after restore either, and an `SA_ONSTACK` handler (CPython installs
/// its handlers so) runs on its stack: the restored main thread is a fork of the launcher's and
/// kept its alternate stack, which a signal frame recording "none" does not take away.
#[test]
fn signal_handlers_mask_and_altstack() {
    for mode in [&[][..], &["no-altstack"][..]] {
        run_zdtm(
            "zdtm-signals",
            mode,
            &[],
            &[
                "handler fires after restore",
                "signal mask",
                "ignored signal",
                "sigaltstack",
            ],
        );
    }
}

/// An epoll registration of the standard input watches the caller's: a pipe there works; a
/// file or /dev/null (which epoll cannot watch) is refused before anything runs, naming it.
/// A descriptor 0 the program opened itself, having been started without a standard input (a
/// JVM started with `<&-` opens its class image there, and died at its next class load when it
/// became the caller's stdin): it is kept as the file it is, at its offset.
#[test]
fn a_standard_descriptor_the_program_opened_itself_stays_its_file() {
    let env = Env::new();
    for how in ["own-mapped", "own-readonly"] {
        let img = env.checkpoint("zdtm-stdin", &format!("{how}.thaw"), &[how]);
        for opts in every_mode() {
            let o = env.restore(&img, opts, &[]);
            assert_all_ok(
                &o,
                &["a standard descriptor opened by the program is its file"],
            );
        }
    }
    // Node marks the standard descriptors it was started with close-on-exec: its output
    // redirected to a file is still the caller's at restore (it went on into the first life's
    // file).
    let img = env.path("cloexec.thaw");
    let log = env.path("first.log");
    let o = env
        .first_life_cmd("zdtm-stdin")
        .arg(&img)
        .arg(&env.key)
        .arg("cloexec")
        .stdout(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(&o, &["standard output is the caller's"]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
}

#[test]
fn epoll_on_standard_input_watches_the_callers() {
    use std::io::Write;
    let env = Env::new();
    let img = env.checkpoint("zdtm-stdin", "s.thaw", &[]);
    // Restored with a pipe as its standard input, "ping" written into it once it runs.
    let pinged = |img: &std::path::Path| {
        let mut child = env
            .restore_cmd(img, &[], &[])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert_all_ok(
        &pinged(&img),
        &["epoll watches the caller's standard input"],
    );

    // Edge-triggered, with the caller's input written before the restore (an edge the
    // registration reports, which used to be taken as one the first life had already had).
    let img_et = env.checkpoint("zdtm-stdin", "s-et.thaw", &["et"]);
    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(b"ping\n").unwrap();
    drop(w);
    let o = env
        .restore_cmd(&img_et, &[], &[])
        .stdin(std::process::Stdio::from(r))
        .output()
        .unwrap();
    assert_all_ok(&o, &["epoll watches the caller's standard input"]);

    // Two duplicates of it registered (Bun: its standard output's and error's): the check of
    // the caller's standard input refused the second as registered already.
    let img_dups = env.checkpoint("zdtm-stdin", "s-dups.thaw", &["dups"]);
    let o = pinged(&img_dups);
    assert_all_ok(
        &o,
        &["epoll watches two duplicates of the caller's standard input"],
    );

    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("watches fd 0 (standard input)")
            && err.contains("/dev/null")
            && err.contains("cannot be watched by epoll"),
        "{err}"
    );
}

#[test]
fn pid_rlimits_umask_cwd_comm_cmdline_exe_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    run_zdtm(
        "zdtm-process",
        &[dir.path().to_str().unwrap()],
        &["one", "two words"],
        &[
            "pid",
            "rlimit nofile",
            "rlimit core",
            "umask",
            "cwd",
            "comm",
            "cmdline",
            "exe",
            "args",
            "prctl: child subreaper, THP disabled, timer slack",
            "oom_score_adj",
            "scheduling: nice and policy of each thread",
            "scheduling: CPU mask and I/O priority of each thread",
        ],
    );
}

/// A thread in the real-time I/O class (`ionice -c 1`, which takes CAP_SYS_NICE) keeps it where
/// the launcher may give it, and is given best-effort at its level, with a warning, where not
/// (--pid-mode ns: no CAP_SYS_NICE over the system), as a nice value below the caller's is
/// raised. The restore used to fail at its I/O priority step with EPERM.
#[test]
fn a_real_time_io_priority_is_best_effort_where_the_caller_may_not_give_it() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let img = env.checkpoint(
        "zdtm-process",
        "io.thaw",
        &[dir.path().to_str().unwrap(), "rt-io"],
    );
    let o = env.restore(&img, &["--pid-mode", "host"], &["one", "two words"]);
    assert_all_ok(
        &o,
        &["scheduling: CPU mask and I/O priority of each thread"],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ioprio 0x2005"),
        "{}",
        text(&o)
    );
    let o = env.restore(&img, &["--pid-mode", "ns"], &["one", "two words"]);
    assert_all_ok(
        &o,
        &["scheduling: CPU mask and I/O priority of each thread"],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ioprio 0x4005"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("real-time I/O priority (level 5) lowered to best-effort level 5"),
        "{}",
        text(&o)
    );
}

/// The working directory is known by what it is, not only by its path: one whose name ends in
/// " (deleted)" is a live directory, entered again as it is; a directory made at its path since
/// the checkpoint is another (the process's relative paths would lead elsewhere): refused before
/// the process exists, as is a path where nothing is any more.
#[test]
fn a_working_directory_replaced_since_the_checkpoint_is_refused() {
    let env = Env::new();
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("w (deleted)");
    std::fs::create_dir(&dir).unwrap();
    let img = env.checkpoint("zdtm-process", "w.thaw", &[dir.to_str().unwrap()]);
    let o = env.restore(&img, &[], &["one", "two words"]);
    assert_all_ok(&o, &["cwd"]);
    std::fs::rename(&dir, base.path().join("before")).unwrap();
    let o = env.restore(&img, &[], &["one", "two words"]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot enter the process's working directory"),
        "{}",
        text(&o)
    );
    std::fs::create_dir(&dir).unwrap();
    let o = env.restore(&img, &[], &["one", "two words"]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "the process's working directory {} was replaced since the checkpoint",
            dir.display()
        )),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

/// A process that goes on from its checkpoint and at once changes process-wide settings (child
/// subreaper, THP, oom_score_adj) and a thread's nice value, CPU mask and I/O priority: the
/// image has them as they were when the threads stopped, not as the process had them while the
/// image was written.
#[test]
fn attributes_changed_as_the_process_goes_on_are_saved_as_they_were_at_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // The thread that changes its own blocks every signal in the second run: captured through
    // ptrace, it reports them itself while stopped.
    for mode in ["late", "late-blocked"] {
        run_zdtm(
            "zdtm-process",
            &[dir.path().to_str().unwrap(), mode],
            &["one", "two words"],
            &[
                "pid",
                "prctl: child subreaper, THP disabled, timer slack",
                "oom_score_adj",
                "scheduling: nice and policy of each thread",
                "scheduling: CPU mask and I/O priority of each thread",
            ],
        );
    }
}

#[test]
fn fpu_and_avx_state_across_the_checkpoint_call() {
    run_zdtm(
        "zdtm-fpu",
        &[],
        &[],
        &[
            "mxcsr",
            "x87 control word",
            "callee-saved registers",
            "avx arithmetic",
        ],
    );
}

#[test]
fn vector_registers_of_a_thread_stopped_between_instructions() {
    run_zdtm(
        "zdtm-vector",
        &[],
        &[],
        &[
            "vector registers of a thread stopped between instructions",
            "extended state permission (arch_prctl ARCH_REQ_XCOMP_PERM)",
        ],
    );
}

/// A process that asked for AMX (as oneDNN does) has the permission again, and a thread that
/// held a tile across the checkpoint has its whole register state back (without room for the
/// tile state, the kernel would restore only its SSE registers, and the tile instruction after
/// would be fatal).
#[test]
fn amx_tile_state_and_the_permission_for_it_come_back() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    if !cpu.contains(" amx_tile") {
        eprintln!("skipped: no AMX on this CPU");
        return;
    }
    let both = [
        "vector registers of a thread stopped between instructions",
        "extended state permission (arch_prctl ARCH_REQ_XCOMP_PERM)",
    ];
    run_zdtm("zdtm-vector", &["amx-permission"], &[], &both);
    let tile = "AMX tile register held across the checkpoint";
    run_zdtm("zdtm-vector", &["amx"], &[], &[both[0], both[1], tile]);
    // Held by a thread that blocks every signal, captured through ptrace.
    run_zdtm(
        "zdtm-vector",
        &["amx-blocked"],
        &[],
        &[both[0], both[1], tile],
    );
}

#[test]
fn dev_zero_mapped_privately_comes_back_as_the_anonymous_memory_it_is() {
    run_zdtm(
        "zdtm-special-maps",
        &[],
        &[],
        &[
            "/dev/zero mapped privately: its contents",
            "/dev/zero mapped privately: private",
            "/dev/zero mapped privately: MADV_DONTNEED gives zeros",
        ],
    );
}

/// Unmounts a file system when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn huge_page_pool_memory_and_mapped_devices_are_refused_by_name() {
    let env = Env::new();
    for mode in ["hugetlb-mapped", "hugetlb-held"] {
        let out = env.refused("zdtm-special-maps", "h.thaw", &[mode]);
        assert!(
            out.contains("/memfd:huge") && out.contains("memory of the huge page pool"),
            "{mode}: {out}"
        );
    }
    let out = env.refused("zdtm-special-maps", "h.thaw", &["hugetlb-anon"]);
    assert!(out.contains("MAP_HUGETLB memory is not supported"), "{out}");
    // A block device mapped shared: a loop device over a file of ours.
    if !is_root() {
        eprintln!("skipped: the hugetlbfs and device parts need root (mount, losetup)");
        return;
    }
    // A file of a hugetlbfs mount, removed while open (kept as a deleted file would be).
    let huge = env.path("hugetlbfs");
    std::fs::create_dir(&huge).unwrap();
    let o = std::process::Command::new("mount")
        .args(["-t", "hugetlbfs", "none"])
        .arg(&huge)
        .output()
        .unwrap();
    assert!(o.status.success(), "mount: {}", text(&o));
    let mounted = Unmount(huge.clone());
    let out = env.refused(
        "zdtm-special-maps",
        "h.thaw",
        &["hugetlbfs-deleted", huge.to_str().unwrap()],
    );
    drop(mounted);
    assert!(out.contains("memory of the huge page pool"), "{out}");
    let backing = env.path("loop.img");
    std::fs::write(&backing, vec![7u8; 1 << 20]).unwrap();
    let o = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(o.status.success(), "losetup: {}", text(&o));
    let dev = Loop(String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let out = env.refused("zdtm-special-maps", "d.thaw", &["device", &dev.0]);
    assert!(
        out.contains(&format!("a device's memory mapped ({})", dev.0)),
        "{out}"
    );
}

#[test]
fn vdso_time_calls() {
    run_zdtm(
        "zdtm-vdso",
        &[],
        &[],
        &[
            "vdso address",
            "monotonic clock",
            "realtime clock",
            "gettimeofday",
        ],
    );
}

#[test]
fn files_directories_and_pipes() {
    let dir = tempfile::tempdir().unwrap();
    run_zdtm(
        "zdtm-files",
        &[dir.path().to_str().unwrap()],
        &[],
        &[
            "file offset",
            "append mode",
            "directory",
            "pipe contents",
            "pipe works",
            "pipe whose writer is gone: its bytes, then end of file",
            "pipe whose reader is gone: EPIPE, and poll says POLLERR",
            "a file named '... (deleted)' is an ordinary file",
            "FIFO removed while open, its writer gone: its bytes, then end of file",
            "FIFO removed while open, empty, its writer gone: end of file, and poll says so",
            "fd numbers",
            "pipe capacity",
            "pipe in packet mode",
            "pipe opened twice: two descriptions, their own flags",
            "pipe opened twice: one pipe",
            "O_PATH descriptor",
            "a symlink opened itself (O_PATH | O_NOFOLLOW) is that symlink",
            "a symlink opened itself and removed since is that symlink, removed",
            "pipe: end of file once the writer closes",
            "socket pair: end of file once the other end closes",
            "dup of a file: one offset",
            "dup of an eventfd: one counter",
            "dup of an epoll instance: one interest list",
            "a dup of stdout is the caller's stdout",
            "edge-triggered epoll: a taken edge stays taken, a pending one pending, a fired one-shot disarmed",
            "FIFO: the bytes waiting at the checkpoint wait there again",
            "FIFO: an empty one, still empty",
            "FIFO: its writing end at a lower number than its reading end, its bytes waiting",
            "epoll: a registration whose number holds another file now watches its own file",
            "FIFO opened again by its name, the same FIFO, with its flags",
            "FIFO removed while open: its bytes, one buffer for its descriptors, its mode, still removed",
        ],
    );
    // The FIFO's bytes are put back only into an empty FIFO: one that holds someone else's
    // bytes at restore (here, this test's, written while it holds the FIFO open) is refused.
    let env = Env::new();
    let scratch = tempfile::tempdir().unwrap();
    let img = env.checkpoint("zdtm-files", "r.thaw", &[scratch.path().to_str().unwrap()]);
    let mut other = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(scratch.path().join("named.fifo"))
        .unwrap();
    std::io::Write::write_all(&mut other, b"other").unwrap();
    let o = env.restore(&img, &["--pid-mode", "auto"], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("holds 5 bytes from elsewhere"),
        "{}",
        text(&o)
    );
    // One that still holds the checkpoint's own bytes, as it does where a writer elsewhere
    // kept it open after the first life ended (a supervisor's command FIFO): they wait there
    // once, not put back a second time.
    let mut drained = [0u8; 5];
    std::io::Read::read_exact(&mut other, &mut drained).unwrap();
    std::io::Write::write_all(&mut other, b"waiting").unwrap();
    let o = env.restore(&img, &["--pid-mode", "auto"], &[]);
    assert_all_ok(
        &o,
        &["FIFO: the bytes waiting at the checkpoint wait there again"],
    );
    drop(other);
}

#[test]
fn unsupported_state_is_named_and_the_application_continues() {
    let env = Env::new();
    let img = env.path("u.thaw");
    // Its System V segment's id is the inode number /proc shows for it: as root, made the inode
    // number of a file in / (a container's /.dockerenv is 12), which the segment, shown as
    // `/SYSV00000000 (deleted)`, was once taken for (a segment's id is the next one asked for,
    // unless another process takes it first).
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        let small = std::fs::read_dir("/").unwrap().flatten().find_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            (m.is_file() && m.ino() < 1 << 15).then(|| m.ino())
        });
        if let Some(ino) = small {
            std::fs::write("/proc/sys/kernel/shm_next_id", ino.to_string()).unwrap();
        }
    }
    let o = command(&bin("zdtm-unsupported"))
        .arg(&img)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("8 unsupported item(s)"), "{out}");
    assert!(
        out.contains("a FIFO removed while open whose other end is not in this process"),
        "{out}"
    );
    assert!(
        out.contains("/status): a /proc file describes one process"),
        "{out}"
    );
    assert!(
        out.contains("/fdinfo is in /proc: it could not be entered again at restore"),
        "{out}"
    );
    // (Its name is cat's, or for a moment after posix_spawn returns, still ours: the kernel
    // lets the parent of a vfork go on before the exec renames the child.)
    assert!(
        out.contains("child process ") && out.contains("a checkpoint saves this process alone"),
        "{out}"
    );
    assert!(
        out.contains("the other end of the pipe is not in this process"),
        "{out}"
    );
    assert!(
        out.contains("the process runs under seccomp (mode 2, ")
            && out.contains("--security-opt seccomp=unconfined"),
        "{out}"
    );
    assert!(out.contains("cat exit status: 0"), "{out}");
    assert!(
        out.contains("socket:[") && out.contains("datagrams wait to be read ("),
        "{out}"
    );
    assert!(
        out.contains("System V shared memory (shmat) or a device's memory mapped shared is not supported: detach"),
        "{out}"
    );
    assert!(out.contains("still running: socket on 127.0.0.1:"), "{out}");
    assert!(out.contains("exists: false"), "{out}");
}

#[test]
fn files_that_are_gone_or_replaced_are_refused_by_name() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = env.checkpoint("zdtm-files", "f.thaw", &[dir.path().to_str().unwrap()]);
    let data = dir.path().join("data.txt");
    std::fs::remove_file(&data).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot reopen {}: it is gone", data.display())),
        "{err}"
    );
    // A new file at the same path is not the same file.
    std::fs::write(&data, b"0123456789abcdefghij").unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is no longer the file that was open at checkpoint"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

/// A jar on a class path overwritten in place since the checkpoint (a deploy's `cp`: same inode,
/// new contents): the restore ran the classes it had loaded from the old jar with classes read
/// from the new one. A zip archive read through a descriptor must be unchanged; put back as it
/// was (its modification time too), it is restored.
#[test]
fn a_zip_archive_written_in_place_since_the_checkpoint_is_refused() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = env.checkpoint("zdtm-files", "z.thaw", &[dir.path().to_str().unwrap()]);
    let jar = dir.path().join("app.jar");
    let before = std::fs::metadata(&jar).unwrap();
    let old = std::fs::read(&jar).unwrap();
    let mut new = old.clone();
    new[10] ^= 1;
    std::fs::write(&jar, &new).unwrap();
    let later = before.modified().unwrap() + std::time::Duration::from_secs(5);
    let f = std::fs::File::options().write(true).open(&jar).unwrap();
    f.set_modified(later).unwrap();
    drop(f);
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}, a zip archive the process reads",
            jar.display()
        )) && err.contains("was written since the checkpoint"),
        "{err}"
    );
    std::fs::write(&jar, &old).unwrap();
    let f = std::fs::File::options().write(true).open(&jar).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    assert_all_ok(
        &env.restore(&img, &[], &[]),
        &["zip archive", "file offset"],
    );
}

/// The first life's child, left out, goes on a moment after the first life (a JVM's `cat` reading
/// end of file from it): a restore in host mode right then waits for it to end and be reaped,
/// rather than refusing its PID as taken.
#[test]
fn a_left_out_child_still_ending_is_waited_for() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.path("orphan.thaw");
    let o = command(&env.program("zdtm-children"))
        .arg(&img)
        .arg(&env.key)
        .arg("orphan")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let worker: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("children "))
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{worker}")).exists());
    let mut thaw = env
        .restore_cmd(&img, &["--pid-mode", "host"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the launcher watches the worker (a pidfd), or has ended (refused).
    let fds = format!("/proc/{}/fd", thaw.id());
    while thaw.try_wait().unwrap().is_none()
        && !std::fs::read_dir(&fds).unwrap().flatten().any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[pidfd]")
        })
    {
        std::thread::yield_now();
    }
    // SAFETY: kills the first life's orphaned child.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let o = thaw.wait_with_output().unwrap();
    assert_all_ok(
        &o,
        &[
            "the child left out: ended by SIGKILL",
            "no other children after restore",
        ],
    );
}

#[test]
fn zombies_come_back_and_live_children_are_refused_by_name_or_left_out() {
    let env = Env::new();
    let img = env.path("c.thaw");
    let out = env.refused("zdtm-children", "c.thaw", &["refuse"]);
    let pids: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("children "))
        .unwrap()
        .split(' ')
        .collect();
    // The worker alone: the zombies are restored.
    assert!(out.contains("1 unsupported item(s)"), "{out}");
    assert!(
        out.contains(&format!("child process {} (zdtm-children, state ", pids[0])),
        "{out}"
    );
    assert!(out.contains("leave_children_out"), "{out}");
    // Its command line says what it is (a fork of the program: the program's).
    assert!(
        out.contains("zdtm-children ") && out.contains(" refuse`"),
        "{out}"
    );
    assert!(!img.exists());

    let img = env.checkpoint("zdtm-children", "l.thaw", &["leave"]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "zombies: same process groups",
                "zombies: same PIDs and names, still zombies",
                "zombies: each ended as before, as our user",
                "no SIGCHLD for the zombies again, one for the child left out",
                "the child left out: ended by SIGKILL",
                "no other children after restore",
            ],
        );
    }
    // A first life that exits as it saves reaps its zombies first: their PIDs are free at once
    // (orphaned, they would wait for whoever reaps orphans, and a restore in host mode for them).
    let o = command(&env.program("zdtm-children"))
        .arg(env.path("e.thaw"))
        .arg(&env.key)
        .arg("leave-exit")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let zombies: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("children "))
        .unwrap()
        .split(' ')
        .skip(1)
        .collect();
    assert_eq!(zombies.len(), 5, "{out}");
    for z in &zombies {
        assert!(
            !std::path::Path::new(&format!("/proc/{z}")).exists(),
            "zombie {z} not reaped"
        );
    }
    for opts in every_mode() {
        let o = env.restore(&env.path("e.thaw"), opts, &[]);
        assert_all_ok(
            &o,
            &[
                "zombies: same PIDs and names, still zombies",
                "zombies: each ended as before, as our user",
                "the child left out: ended by SIGKILL",
            ],
        );
    }
    // A child's standard descriptors (a pipe, a socket pair) left out with it: its end closed.
    let img = env.checkpoint("zdtm-children", "o.thaw", &["leave-io"]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "the child's pipe: its bytes, then end of file",
                "the child's socket: its bytes, then end of file; sending fails with EPIPE",
            ],
        );
    }
    // Held by a grandchild too, which goes on: refused, naming the processes.
    let out = env.refused("zdtm-children", "g.thaw", &["leave-io-shared"]);
    assert!(
        out.contains("the other end of the pipe is not in this process (it is in process ")
            && out.contains("(zdtm-children)")
            && out.contains("a grandchild"),
        "{out}"
    );
    let img = env.checkpoint("zdtm-children", "i.thaw", &["alone-ignored"]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["SIGCHLD ignored: the child left out left no zombie, and no SIGCHLD"],
        );
    }
    if is_root() {
        let out = env.refused("zdtm-children", "u.thaw", &["other-user"]);
        assert!(
            out.contains("had other user or group ids than the process"),
            "{out}"
        );
    }
    let out = env.refused("zdtm-children", "g.thaw", &["other-group"]);
    assert!(
        out.contains("which it does not lead and the process is not in"),
        "{out}"
    );
}

#[test]
fn interval_timers_timerfd_and_signalfd_are_restored() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-timers", "t.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "real timer armed with at most what it had left",
                "profiling timer armed, interval kept",
                "SIGALRM arrives",
                "signalfd reads SIGUSR1",
                "timerfd: an unread expiration is kept",
                "timerfd: a pending one expires",
                "timerfd disarmed with an interval: still disarmed, its interval kept",
                "periodic timerfd: every expiration before the checkpoint is there",
                "periodic timerfd: its next expiry is where it was",
            ],
        );
    }
}

#[test]
fn pending_signals_come_back_on_their_queues_with_their_siginfo() {
    let env = Env::new();
    for from in [&[][..], &["from-thread"][..], &["traced"][..]] {
        let o = env.first_life("zdtm-sigpending", "s.thaw", from);
        // The first life took the signals off the queues and put them back: it checks them too.
        assert_all_ok(
            &o,
            &[
                "first life: the queues as they were",
                "first life: the worker's queue as it was",
                "first life: each signal once, to its thread, in order, with its siginfo",
            ],
        );
        for opts in every_mode() {
            let o = env.restore(&env.path("s.thaw"), opts, &[]);
            assert_all_ok(
                &o,
                &[
                    "restored: the queues as they were",
                    "restored: the worker's queue as it was",
                    "restored: each signal once, to its thread, in order, with its siginfo",
                ],
            );
        }
    }
    // A timer firing into the pause makes a checkpoint start again, not fail.
    let o = env.first_life("zdtm-sigpending", "r.thaw", &["timer-running"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("checkpoints: 20, ticks: true"), "{}", text(&o));
    // So does a flood of a standard signal from another process (each checkpoint of 20 read
    // SIGUSR1 again and again as it was sent again, until it had no room left: 3 in 24 were
    // refused as "more signals were queued than a checkpoint reads").
    let o = env.first_life("zdtm-sigpending", "f.thaw", &["flood"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("checkpoints: 20, ticks: true"), "{}", text(&o));
    // A SIGTERM another process sends while the checkpoint holds the threads is the first
    // life's, not every restore's (a supervisor's stop ended each instance of the image).
    let o = env.first_life("zdtm-sigpending", "o.thaw", &["from-outside"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("first life: SIGTERM handled: 1"),
        "{}",
        text(&o)
    );
    let o = env.restore(&env.path("o.thaw"), &[], &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("restored: SIGTERM handled: 0"),
        "{}",
        text(&o)
    );
    let out = env.refused("zdtm-sigpending", "t.thaw", &["timer"]);
    assert!(
        out.contains("pending for thread")
            && out.contains("a POSIX timer's signal waiting to be delivered is not restored"),
        "{out}"
    );
}

/// A timerfd armed for a wall-clock time keeps that deadline: restored after it, it has fired,
/// however long after the checkpoint (its time left at the checkpoint would have it fire a
/// second after the restore instead).
#[test]
fn a_timerfd_armed_for_a_wall_clock_time_keeps_its_deadline() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-timers", "w.thaw", &["wall-clock"]);
    // Its deadline is a second after it was armed, before the checkpoint: a second from now
    // it has passed, and the restores below come after it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["a timerfd armed for a wall-clock time has fired once that time passed"],
        );
    }
}

#[test]
fn madv_dontfork_memory_is_captured_and_marked_again() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-dontfork", "d.thaw", &[]);
    assert!(!env.manifest(&img).dontfork.is_empty());
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &["contents", "still MADV_DONTFORK, the neighbour not"]);
    }
}

#[test]
fn a_process_that_goes_on_after_its_checkpoints_keeps_its_posix_locks() {
    // The checkpoint's duplicate of each descriptor, closed, would end the lock.
    let env = Env::new();
    let first = env.first_life("zdtm-locks", "g.thaw", &["goes-on"]);
    assert_all_ok(
        &first,
        &[
            "first life: its POSIX lock is still its own after checkpoint 1",
            "first life: its POSIX lock is still its own after checkpoint 2",
            "first life: all its POSIX locks after checkpoint 1",
            "first life: all its POSIX locks after checkpoint 2",
            "first life: the checkpoint's descriptors kept for the locked files, used again",
        ],
    );
    // A FIFO it writes to only, locked: the checkpoint's own reading end of it stays open too.
    let fifo = env.first_life("zdtm-locks", "gf.thaw", &["goes-on-fifo"]);
    assert_all_ok(
        &fifo,
        &[
            "first life: all its POSIX locks after checkpoint 2",
            "first life: the checkpoint's descriptors kept for the locked files, used again",
            "first life: a kept descriptor goes once its file's lock is gone",
        ],
    );
    for opts in every_mode() {
        let o = env.restore(&env.path("g.thaw"), opts, &[]);
        assert_all_ok(
            &o,
            &[
                "restored: the POSIX lock is held by this process",
                "restored: all its POSIX locks",
                "restored: the descriptors the process had, no more",
            ],
        );
    }
}

#[test]
fn a_lock_on_anything_but_a_file_is_refused_by_name() {
    let env = Env::new();
    let out = env.refused("zdtm-locks", "p.thaw", &["pipe-lock"]);
    assert!(
        out.contains("pipe:[") && out.contains("it holds a lock"),
        "{out}"
    );
}

/// A POSIX lock taken while the checkpoint runs, after it scanned the descriptors: the first life
/// keeps it (the checkpoint's duplicate of the file's descriptor stays open: closing it would end
/// the lock), and the image has it (the checkpoint notices the change and starts again).
#[test]
fn a_posix_lock_taken_during_the_checkpoint_is_kept_and_saved() {
    let env = Env::new();
    let first = env.first_life("zdtm-locks", "l.thaw", &["late"]);
    assert_all_ok(
        &first,
        &["first life: a POSIX lock taken while the checkpoint ran is still its own"],
    );
    let o = env.restore(&env.path("l.thaw"), &[], &[]);
    assert_all_ok(
        &o,
        &["a POSIX lock taken while the checkpoint ran is held after restore"],
    );
    // Given up while the scan read it, and taken again before the stop.
    let first = env.first_life("zdtm-locks", "r.thaw", &["relocked"]);
    assert_all_ok(
        &first,
        &["first life: a POSIX lock taken while the checkpoint ran is still its own"],
    );
    let o = env.restore(&env.path("r.thaw"), &[], &[]);
    assert_all_ok(
        &o,
        &["a POSIX lock taken while the checkpoint ran is held after restore"],
    );
}

#[test]
fn a_descriptor_in_flight_naming_a_posix_locked_file_leaves_the_lock_alone() {
    // The checkpoint receives the descriptor to describe it; closing it would end the process's
    // POSIX lock on the file, in the first life (which goes on here) as in the image.
    let env = Env::new();
    let first = env.first_life("zdtm-locks", "e.thaw", &["in-flight"]);
    assert_all_ok(
        &first,
        &["first life: its POSIX lock is still its own after the checkpoint"],
    );
    for opts in every_mode() {
        let o = env.restore(&env.path("e.thaw"), opts, &[]);
        assert_all_ok(
            &o,
            &[
                "POSIX lock with its descriptor in flight: held by this process",
                "the descriptor in flight arrives, naming the locked file",
            ],
        );
    }
    // The descriptor that took the lock is in flight: refused, and the lock stays all the same.
    let refused = env.first_life("zdtm-locks", "r.thaw", &["in-flight-locker"]);
    assert_all_ok(
        &refused,
        &["first life: its POSIX lock is still its own after a refusal"],
    );
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("it holds locks"),
        "{}",
        text(&refused)
    );
}

#[test]
fn an_empty_lock_file_removed_since_the_checkpoint_is_made_again() {
    // IMAGE.c is empty and write-locked: there for its lock alone, as java.util.logging's
    // FileHandler keeps a .lck file (and a JVM removes it as it exits, so a first restore of the
    // image removes it for the next).
    let env = Env::new();
    let img = env.checkpoint("zdtm-locks", "l.thaw", &[]);
    let lck = env.path("l.thaw.c");
    std::fs::remove_file(&lck).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_all_ok(&o, &["POSIX lock held, by this process"]);
    assert_eq!(std::fs::metadata(&lck).map(|m| m.len()).ok(), Some(0));
    // Another file with contents at its path is not one: refused, and left as it is.
    std::fs::remove_file(&lck).unwrap();
    std::fs::write(&lck, b"other").unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is no longer the file"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&lck).unwrap(), b"other");
}

#[test]
fn a_checkpoint_lets_no_writer_waiting_for_a_reader_of_the_process_fifo_go_on() {
    // A thread of this test waits in open() to write to a FIFO the process writes to alone: a
    // reading end the checkpoint opened for a moment would let it go on, into a FIFO whose
    // reader is gone.
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    let env = Env::new();
    let fifo = env.path("w.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut prog = env
        .first_life_cmd("zdtm-controls")
        .arg(env.path("f.thaw"))
        .arg(&env.key)
        .args(["fifo-writer", fifo.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(prog.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let (tid, opened) = (
        std::sync::Arc::new(AtomicI32::new(0)),
        std::sync::Arc::new(AtomicBool::new(false)),
    );
    let waiter = {
        let (fifo, tid, opened) = (fifo.clone(), tid.clone(), opened.clone());
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            let f = std::fs::OpenOptions::new().write(true).open(fifo);
            opened.store(true, Ordering::SeqCst);
            f
        })
    };
    // Until the kernel shows it waiting for a reader.
    let waiting = || {
        let t = tid.load(Ordering::SeqCst);
        t != 0
            && std::fs::read_to_string(format!("/proc/self/task/{t}/wchan"))
                .is_ok_and(|w| w == "wait_for_partner")
    };
    while !waiting() {
        std::thread::yield_now();
    }
    prog.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(
        prog.wait().unwrap().success() && rest.contains("saved"),
        "{rest}"
    );
    // Nothing has opened the FIFO for reading since the process let its own reader go.
    assert!(
        !opened.load(Ordering::SeqCst),
        "the writer waiting in open() went on during the checkpoint"
    );
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    assert!(waiter.join().unwrap().is_ok());
}

#[test]
fn file_locks_are_taken_again_and_a_conflict_refuses_the_restore() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-locks", "l.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "flock held",
                "OFD lock held",
                "POSIX lock held, by this process",
                "flock owned by this process in /proc",
                "read lease held",
            ],
        );
    }
    // Someone else holds the flock by now: the restore is refused, naming it, and nothing runs.
    let other = std::fs::File::open(env.path("l.thaw.a")).unwrap();
    // SAFETY: an exclusive flock on our own descriptor.
    let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&other), libc::LOCK_EX) };
    assert_eq!(r, 0);
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "cannot take its flock write lock again: another process holds a conflicting lock"
        ) && err.contains("l.thaw.a): cannot take")
            // The holder named: this test.
            && err.contains(&format!("(PID {}, ", std::process::id())),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    drop(other);
    // The same for the POSIX lock, which the process takes itself.
    let other = std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("l.thaw.c"))
        .unwrap();
    let probe = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 101,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: a POSIX lock on our own descriptor with a valid struct.
    let r = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&other),
            libc::F_SETLK,
            &probe,
        )
    };
    assert_eq!(r, 0);
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot take its POSIX write lock on bytes 100..105 again"),
        "{err}"
    );
    drop(other);
    // Written since: the restore's refusal.
    let written = |name: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(env.path(name))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
            .unwrap();
        let o = env.restore(&img, &[], &[]);
        assert_eq!(o.status.code(), Some(67), "{}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // A file it held a write lock on was written since (a database committed by an earlier
    // restore): refused, as the process would go on from what it knew of it.
    let err = written("l.thaw.c");
    assert!(
        err.contains("l.thaw.c was written since the checkpoint")
            && err.contains("held a lock on it"),
        "{err}"
    );
    // A read lock too: a reader goes on from what it cached under it (SQLite's shared lock in
    // a read transaction). (c, empty again, passes: an emptied lock file.)
    std::fs::File::create(env.path("l.thaw.c")).unwrap();
    let err = written("l.thaw.b");
    assert!(
        err.contains("l.thaw.b was written since the checkpoint"),
        "{err}"
    );
}

/// Lazily filled (as root, in either PID mode, unless all memory is read up front), the process
/// keeps SIGKILL as its parent-death signal: it must die with its launcher. zdtm-attrs expects it
/// when told `lazy`.
fn lazy_arg(opts: &[&str]) -> &'static [&'static str] {
    if is_root() && opts.first() == Some(&"--pid-mode") {
        &["lazy"]
    } else {
        &[]
    }
}

#[test]
fn process_attributes_membarrier_guards_loginuid_rseq() {
    let env = Env::new();
    let all = [
        "membarrier registration",
        "guard pages fault, their neighbours keep their contents",
        "login uid",
        "glibc's rseq area registered",
        "core dump filter",
        "sealed mapping sealed again, with its contents",
        "locked mapping locked again, with its contents",
        "MADV_SEQUENTIAL and MAP_NORESERVE",
        "parent-death signal and memory-deny-write-execute",
    ];
    let img = env.checkpoint("zdtm-attrs", "a.thaw", &["no-loginuid"]);
    assert!(env.manifest(&img).process.membarrier & (1 << 4) != 0);
    for opts in every_mode() {
        let o = env.restore(&img, opts, lazy_arg(opts));
        assert_all_ok(&o, &all);
    }
    // A login uid that differs from the launcher's is set again where the kernel allows it (its
    // own is unset, or CAP_AUDIT_CONTROL); where not, the restore fails naming it.
    let img = env.checkpoint("zdtm-attrs", "l.thaw", &[]);
    let image_uid = env.manifest(&img).process.loginuid;
    for opts in every_mode() {
        let o = env.restore(&img, opts, lazy_arg(opts));
        if o.status.success() {
            assert_all_ok(&o, &all);
        } else {
            // Refused before anything runs (ns mode), or failed at the step that sets it.
            assert!(matches!(o.status.code(), Some(67 | 68)), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(&format!("login uid {image_uid}")), "{err}");
        }
    }
}

#[test]
fn a_programs_own_rseq_area_is_refused_by_name() {
    let env = Env::new();
    let o = env.first_life("zdtm-attrs", "r.thaw", &["own-rseq"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("has an rseq area registered by the program itself"),
        "{out}"
    );
    assert!(out.contains("own area still registered: true"), "{out}");
    assert!(!env.path("r.thaw").exists());
}

#[test]
fn a_process_that_dropped_root_is_checkpointed_and_restored_by_that_user() {
    if !is_root() {
        eprintln!("skipped: the program drops from root");
        return;
    }
    let env = Env::for_nobody();
    let img = env.path("s.thaw");
    // The first life starts as root and drops to nobody itself.
    let o = command(&bin("zdtm-setuid"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // nobody restores it (in a namespace: the only mode for an unprivileged caller).
    let o = env.restore(&img, &["--pid-mode", "ns"], &[]);
    assert_all_ok(
        &o,
        &[
            "ids",
            "dumpable as before",
            "memory",
            "shared memory without a descriptor",
        ],
    );
    // One thread with other ids: refused, naming it; nothing is written.
    let o = command(&bin("zdtm-setuid"))
        .arg(env.path("t.thaw"))
        .arg("-")
        .arg("one-thread")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let tid = out.lines().find_map(|l| l.strip_prefix("thread ")).unwrap();
    assert!(
        out.contains(&format!(
            "thread {tid} has other credentials than the checkpointing thread: Uid 65534 65534 65534 65534 (caller: 0 0 0 0)"
        )),
        "{out}"
    );
    assert!(!env.path("t.thaw").exists());
}

#[test]
fn files_deleted_while_open_or_mapped_are_kept_and_created_again_unlinked() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let img = env.checkpoint("zdtm-deleted", "d.thaw", &[d]);
    let m = env.manifest(&img);
    assert_eq!(m.shared.iter().filter(|o| o.file.is_some()).count(), 5);
    for opts in every_mode() {
        // In ns mode the process's files are on the mounts of the launcher's mount namespace,
        // not its own copy of them: linkat across them answers EXDEV.
        let ns = if opts.contains(&"ns") {
            "ns-mode"
        } else {
            "host-mode"
        };
        let o = env.restore(&img, opts, &[ns]);
        assert_all_ok(
            &o,
            &[
                "deleted file shown as deleted, at its path",
                "contents from the offset",
                "a separate open shares the file",
                "flock held",
                "shared mapping contents",
                "private mapping: its page over the file's",
                "shared mapping names the deleted file",
                "private mapping still maps the file",
                "the deleted working directory, deleted again",
                "an unnamed (O_TMPFILE) file keeps its contents and can be given a name",
                "a directory removed while open comes back open, removed, with its mode",
                "a file deleted with its directory keeps its contents, offset and mapping",
            ],
        );
        // Nothing is left in the directory: every file is unlinked again.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    // Larger than the limit: refused, naming the file, the limit and how to raise it.
    // A removed directory open twice would come back as two directories: refused.
    let twice = tempfile::tempdir().unwrap();
    let o = env.first_life(
        "zdtm-deleted",
        "t2.thaw",
        &[twice.path().to_str().unwrap(), "dir-twice"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("it would come back as two directories"),
        "{}",
        text(&o)
    );
    let o = command(&bin("zdtm-deleted"))
        .arg(env.path("b.thaw"))
        .arg("-")
        .arg(d)
        .arg("big")
        .env("THAW_MAX_DELETED_FILE", "1000")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains(&format!(
            "{d}/big was deleted and holds 204800 bytes of data, more than the 1000 kept in an image"
        )),
        "{out}"
    );
    assert!(!env.path("b.thaw").exists());
}

#[test]
fn a_pid_named_perf_data_file_is_kept_and_created_again_under_its_name() {
    // HotSpot's /tmp/hsperfdata_<user>/<pid>, in a directory of the test's own.
    let env = Env::new();
    let user = format!("thaw-test-{}", std::process::id());
    let dir = std::path::PathBuf::from(format!("/tmp/hsperfdata_{user}"));
    let _cleanup = RemoveDir(dir.clone());
    let img = env.checkpoint("zdtm-perfdata", "p.thaw", &[&user]);
    let pid = env.manifest(&img).process.pid;
    let path = dir.join(pid.to_string());
    // The first life exited after the checkpoint without deleting it: a stale file is replaced.
    restored_under_its_name(&env, &img, &path, 1);
    // Two restores at once in PID namespaces (the same PID in each): the second finds the
    // first's file locked, leaves it alone and shares its memory under no name.
    let mut first = env
        .restore_cmd(&img, &["--pid-mode", "ns"], &["hold"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(first.stdout.take().unwrap()));
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let done = l == "holding";
        seen.push(l);
        if done {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("holding"), "{seen:?}");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    restored_unnamed(&env, &img, &["--pid-mode", "ns"]);
    assert_eq!(
        std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        Some(ino),
        "the first restore's file is left alone"
    );
    drop(first.stdin.take());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(first.wait().unwrap().success(), "{seen:?} {rest:?}");
    assert!(
        seen.iter().chain(&rest).all(|l| !l.starts_with("FAIL")),
        "{seen:?} {rest:?}"
    );
    assert!(!path.exists());
    // A directory others may write: not used; the memory is still shared, under no name.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    restored_unnamed(&env, &img, &[]);
    assert!(!path.exists());
}

/// Restores `img` of zdtm-perfdata `rounds` times in every mode: its per-process file `path`, kept
/// in the image, left behind by the first life, is created again under its name each time, and
/// deleted by the restored process at its end, as by the runtime.
fn restored_under_its_name(
    env: &Env,
    img: &std::path::Path,
    path: &std::path::Path,
    rounds: usize,
) {
    let m = env.manifest(img);
    let kept: Vec<_> = m.shared.iter().filter_map(|o| o.file.as_ref()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].keep_name);
    assert_eq!(kept[0].path, path.to_str().unwrap());
    assert!(path.exists(), "the first life's, left behind");
    for _ in 0..rounds {
        for opts in every_mode() {
            let o = env.restore(img, opts, &[]);
            assert_all_ok(
                &o,
                &[
                    "the mapping's contents",
                    "the file at its path again",
                    "its pages shared with the file",
                ],
            );
            assert!(!path.exists(), "deleted by the restored process at its end");
        }
    }
}

/// Restores `img` of zdtm-perfdata where its file's name cannot be had: shared under no name.
fn restored_unnamed(env: &Env, img: &std::path::Path, opts: &[&str]) {
    let o = env.restore(img, opts, &["unnamed"]);
    assert_all_ok(
        &o,
        &[
            "the mapping's contents",
            "under no name where the directory is not safe",
        ],
    );
}

/// Mono's shared area, `/dev/shm/mono.<pid>`, which Mono deletes when it exits: every restore
/// of an image, not only the first, finds it again under its name (a Mono probe: restores after
/// the first were refused, "cannot open mapped file /dev/shm/mono.PID", as the first restore's
/// exit had deleted it). /dev/shm is everybody's: a stale file of another user's there is left
/// alone, and the memory is shared under no name.
#[test]
fn mono_s_shared_area_is_kept_and_created_again_under_its_name() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-perfdata", "m.thaw", &["mono"]);
    let pid = env.manifest(&img).process.pid;
    let path = std::path::PathBuf::from(format!("/dev/shm/mono.{pid}"));
    let _cleanup = RemoveFile(path.clone());
    restored_under_its_name(&env, &img, &path, 2);
    if is_root() {
        std::fs::write(&path, b"another user's").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        restored_unnamed(&env, &img, &[]);
        assert_eq!(std::fs::read(&path).unwrap(), b"another user's");
    }
}

/// Memory protection keys come back: the keys held, each page's key, each thread's rights
/// (a Node probe on a machine with PKU: a restored Node died compiling its first WebAssembly
/// module, V8's key gone). Skipped where the CPU or kernel has no protection keys.
#[test]
fn memory_protection_keys_come_back() {
    let env = Env::new();
    let o = command(&env.program("zdtm-pkeys"))
        .arg(env.path("k.thaw"))
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    if String::from_utf8_lossy(&o.stdout).contains("skipped") {
        eprintln!("skipped: no memory protection keys here");
        return;
    }
    let m = env.manifest(&env.path("k.thaw"));
    assert_eq!(m.pkeys, [1, 3]);
    // The kernel's own execute-only key, taken by a page made executable only: refused.
    let out = env.refused("zdtm-pkeys", "x.thaw", &["exec-only"]);
    assert!(
        out.contains("executable only, with the kernel's execute-only protection key 4"),
        "{out}"
    );
    for opts in every_mode() {
        let o = env.restore(&env.path("k.thaw"), opts, &[]);
        assert_all_ok(
            &o,
            &[
                "each page tagged with its key again",
                "their contents",
                "the thread's rights to each key (PKRU)",
                "a new page can be tagged with a key held",
                "the same keys held: the next one is 2",
            ],
        );
    }
}

/// io_uring instances at rest come back (libuv makes one per event loop to batch its epoll
/// changes: a stock Node.js 22 was refused for it), with the kernel's counters where they were,
/// in every mode and for an unprivileged user, checkpointed again once restored, with the
/// kernel's io-wq workers left out; what lives in the kernel is refused by name.
#[test]
fn io_uring_instances_at_rest_come_back_and_what_the_kernel_holds_is_refused() {
    let checks = [
        "the kernel's counters are as they were",
        "a ring adds an epoll registration after restore, beside the one it added before",
        "the other ring completes a request",
        "its dropped entries are counted as before, and a drained request completes",
        "both go on through many more, around their queues",
        "its duplicate is the same ring",
    ];
    let mut envs = vec![Env::new()];
    if is_root() {
        envs.push(Env::for_nobody());
    }
    for env in envs {
        let o = env.first_life("zdtm-io-uring", "u.thaw", &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        if String::from_utf8_lossy(&o.stdout).contains("skipped") {
            eprintln!("skipped: no io_uring here");
            return;
        }
        let img = env.path("u.thaw");
        // Checkpointed again once restored (its rings on the memory the restore made them
        // on), and restored again.
        restored_in_its_modes_and_again(
            &env,
            &img,
            &checks,
            &[
                "restored twice, the kernel's counters are as they were",
                "restored twice, both go on",
            ],
        );
    }
    let env = Env::new();
    // A request run by one of the kernel's io-wq workers: the worker (iou-wrk-PID, a thread of
    // the process that runs no code of the program's, which no signal stops) is no thread of
    // the image; the checkpoint used to wait 2 s for it, and refused.
    let img = env.checkpoint("zdtm-io-uring", "w.thaw", &["worker"]);
    assert!(env.manifest(&img).threads.len() == 1);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &checks);
    }
    // Dropped entries come back as the kernel counts them: replayed as no-ops that post
    // nothing (IOSQE_CQE_SKIP_SUCCESS), the kernel turned IOSQE_IO_DRAIN off for good and a
    // drained request failed (EOPNOTSUPP).
    let img = env.checkpoint("zdtm-io-uring", "d.thaw", &["dropped"]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &checks);
    }
    for (mode, says) in [
        ("pending", "1 of its requests have not completed"),
        ("sqpoll", "IORING_SETUP_SQPOLL"),
        ("eventfd", "an eventfd is registered with it"),
        ("buffers", "it holds provided buffers (group 7)"),
        ("buffers-late", "it holds provided buffers (group 11)"),
        ("unreaped", "1 completions wait to be reaped"),
        ("single-issuer", "IORING_SETUP_SINGLE_ISSUER"),
        ("registered", "IORING_REGISTER_RING_FDS, slots 0"),
        (
            "restricted",
            "it is restricted (IORING_REGISTER_RESTRICTIONS)",
        ),
        (
            "restricted-loosely",
            "it is restricted (IORING_REGISTER_RESTRICTIONS)",
        ),
        ("deferred", "IORING_SETUP_DEFER_TASKRUN"),
        ("personality", "credentials have been registered with it"),
        ("wait-region", "registered wait region"),
    ] {
        let out = env.refused("zdtm-io-uring", "r.thaw", &[mode]);
        assert!(out.contains(says), "{mode}: {out}");
    }
}

/// Restores `img` in every mode its environment's user has (ns mode alone for nobody), checking
/// `checks`; then has the first restore checkpoint again (to IMG.again, the program's argument)
/// and the last mode restore that image, checking `again`.
fn restored_in_its_modes_and_again(
    env: &Env,
    img: &std::path::Path,
    checks: &[&str],
    again: &[&str],
) {
    let modes: &[&[&str]] = if env.nobody {
        &[&["--pid-mode", "ns"]]
    } else {
        every_mode()
    };
    for opts in modes {
        assert_all_ok(&env.restore(img, opts, &[]), checks);
    }
    let next = img.with_extension("again");
    let o = env.restore(img, modes[0], &[next.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_all_ok(&env.restore(&next, modes[modes.len() - 1], &[]), again);
}

/// AIO contexts (io_setup, libaio's) come back at their addresses, which the process holds as
/// their ids, with their counters and the events not reaped yet, in every mode and for an
/// unprivileged user, checkpointed again once restored; requests in flight, a ring inherited
/// from a parent and a ring written over are refused by name.
#[test]
fn aio_contexts_come_back_with_their_unreaped_events_and_requests_in_flight_are_refused() {
    let checks = [
        "each ring at its address, its counters as they were",
        "each ring's mapping as before",
        "a read through the same context id completes",
        "a write through it completes",
        "the 40 events not reaped are reaped now, in order, as they were",
        "it goes on around its ring",
    ];
    let mut envs = vec![Env::new()];
    if is_root() {
        envs.push(Env::for_nobody());
    }
    for env in envs {
        let img = env.checkpoint("zdtm-aio", "a.thaw", &[]);
        let rings = env
            .manifest(&img)
            .memory
            .iter()
            .filter(|v| matches!(v.backing, thaw::state::memory::Backing::Aio(_)))
            .count();
        assert_eq!(rings, 2);
        restored_in_its_modes_and_again(
            &env,
            &img,
            &checks,
            &[
                "restored twice, the counters as they were",
                "restored twice, the event left unreaped is there",
                "restored twice, a read completes",
            ],
        );
    }
    let env = Env::new();
    // The first life goes on with its rings as it left them (the checkpoint's probe of each
    // took its own writes out), and its image comes back as well.
    let o = env.first_life("zdtm-aio", "f.thaw", &["first-life"]);
    assert_all_ok(
        &o,
        &[
            "first life: the 40 events not reaped are there, in order",
            "first life: nothing more in either ring",
            "first life: a read completes",
        ],
    );
    let o = env.restore(&env.path("f.thaw"), every_mode()[0], &[]);
    assert_all_ok(&o, &checks);
    for (mode, says) in [
        (
            "in-flight",
            "1 requests are in flight (submitted, not completed)",
        ),
        (
            "inherited",
            "an AIO ring that is not a context of this process",
        ),
        ("scribbled", "its ring's header is not one this thaw knows"),
    ] {
        let out = env.refused("zdtm-aio", "r.thaw", &[mode]);
        assert!(out.contains(says), "{mode}: {out}");
    }
}

/// Removes a file when dropped.
struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes a directory when dropped.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_deleted_file_mapped_without_a_descriptor_needs_the_capability_to_be_read() {
    // nobody cannot open /proc/self/map_files: the mapping of a deleted file whose descriptor
    // was closed is refused, naming it, instead of saving only what is mapped.
    if !is_root() {
        eprintln!("skipped: needs root to switch to nobody");
        return;
    }
    let env = Env::for_nobody();
    let dir = env.nobody_dir("files");
    let o = env.first_life("zdtm-deleted", "n.thaw", &[dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        err.contains(&format!(
            "the mapped file {}/b.tmp was deleted, and the process has no descriptor of it",
            dir.display()
        )),
        "{err}"
    );
}

/// Event objects another thread changed between the descriptor scan and the stop come back as
/// it left them (they are read again while the threads are parked).
#[test]
fn event_objects_changed_while_the_threads_were_being_stopped() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-parked", "p.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "eventfd: the count written after the scan",
                "epoll: the one-shot registration armed after the scan reports its pipe",
                "timerfd: armed after the scan, most of its hour left",
                "a signal to the checkpointing thread is handled after the restore, once",
            ],
        );
    }
}

/// Epoll registrations added and removed after the scan read them and before the checkpoint
/// prepared to read them again: the checkpoint starts again, and the image has them as left.
#[test]
fn epoll_registrations_changed_after_the_scan_come_back_as_left() {
    run_zdtm(
        "zdtm-parked",
        &["registered"],
        &[],
        &["epoll: a registration added and one removed while the checkpoint scanned are as left"],
    );
}

/// A POSIX named semaphore, whose mapping /proc shows as a deleted file (glibc's temporary name)
/// although the file has the semaphore's name: restored as that named file.
#[test]
fn a_named_posix_semaphore_is_its_named_file_again() {
    let env = Env::new();
    let name = format!("/thaw-test-sem-{}", std::process::id());
    let file = format!("/dev/shm/sem.{}", &name[1..]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _gone = Gone(file);
    let img = env.checkpoint("zdtm-named-sem", "n.thaw", &[&name]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "named semaphore: the value the first life left",
                "named semaphore: one file with the name's (a post through a new handle shows)",
            ],
        );
    }
}

/// The semaphore set id a program printed ("semid N").
fn semid(out: &str) -> i32 {
    out.lines()
        .find_map(|l| l.strip_prefix("semid "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no semid in {out}"))
}

/// Removes the semaphore sets the programs made, whatever the test's outcome.
struct SemSets(Vec<i32>);

impl Drop for SemSets {
    fn drop(&mut self) {
        for &set in &self.0 {
            // SAFETY: IPC_RMID takes no argument.
            unsafe { libc::semctl(set, 0, libc::IPC_RMID) };
        }
    }
}

#[test]
fn system_v_semaphores_come_back_as_the_kernel_keeps_them_and_undo_lists_are_refused() {
    let env = Env::new();
    let first = env.first_life("zdtm-sysv-sem", "s.thaw", &[]);
    let mut sets = SemSets(Vec::new());
    if let Some(id) = String::from_utf8_lossy(&first.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("semid ")?.trim().parse().ok())
    {
        sets.0.push(id);
    }
    assert!(first.status.success(), "{}", text(&first));
    let img = env.path("s.thaw");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "semaphore set: the one held still taken, the other free",
                "semaphore taken again with SEM_UNDO",
            ],
        );
    }
    let o = env.first_life("zdtm-sysv-sem", "u.thaw", &["undo"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let held = semid(&out);
    sets.0.push(held);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        out.contains("System V semaphores this process changed last, with an undo list")
            && out.contains(&format!("id {held} (semaphore 0"))
            && out.contains("unshare(CLONE_SYSVSEM)"),
        "{out}"
    );
}

#[test]
fn pidfds_of_the_process_and_its_threads_are_opened_again() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-pidfd", "p.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "pidfd of the process: same target and flags",
                "close-on-exec as it was",
                "pidfd of a thread: same target and flags",
                "pidfds of a child that exited: exited, one inode, the same exit status",
                "pidfd of a child that exited, not waited for: waited for through it",
            ],
        );
    }
    let o = env.first_life("zdtm-pidfd", "q.thaw", &["parent"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "a pidfd of process {}, which is not restored with this one",
            std::process::id()
        )),
        "{out}"
    );
}

#[test]
fn inotify_watches_come_back_with_their_numbers() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let img = env.checkpoint("zdtm-inotify", "i.thaw", &[d]);
    let expected = [
        "watch numbers and masks",
        "no event that did not happen",
        "events after restore",
        "an instance without watches, blocking",
    ];
    let watched = dir.path().join("watched");
    let times = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (dir_then, file_then) = (times(dir.path()), times(&watched));
    for (i, opts) in every_mode().iter().enumerate() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &expected);
        // That restore made a file in the watched directory and wrote the watched file: a
        // paused process would have been told, a restored one cannot be, so the next restore
        // is refused, naming what changed.
        let refused = |what: String| {
            let o = env.restore(&img, opts, &[]);
            assert_eq!(o.status.code(), Some(67), "{}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(&what)
                    && String::from_utf8_lossy(&o.stderr)
                        .contains("a paused process would have been told"),
                "{what}: {}",
                text(&o)
            );
        };
        if i == 0 {
            refused(format!(
                "{} was written since the checkpoint (IN_MODIFY)",
                watched.display()
            ));
        }
        // Put back as they were, times and all (the watches look at no status change).
        std::fs::write(&watched, b"x").unwrap();
        std::fs::File::open(&watched)
            .unwrap()
            .set_modified(file_then)
            .unwrap();
        if i == 0 {
            refused(format!(
                "{d} had entries made, removed or moved since the checkpoint (IN_CREATE, IN_DELETE, IN_MOVED_*)"
            ));
        }
        std::fs::remove_file(dir.path().join("created")).unwrap();
        std::fs::File::open(dir.path())
            .unwrap()
            .set_modified(dir_then)
            .unwrap();
    }
    // A watch added after the scan and before the stop.
    let late = env.checkpoint("zdtm-inotify", "l.thaw", &[d, "late"]);
    let o = env.restore(&late, &[], &[]);
    assert_all_ok(
        &o,
        &["a watch added while the checkpoint ran reports its file"],
    );
    let o = env.first_life("zdtm-inotify", "q.thaw", &[d, "queued"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "(inotify): 32 bytes of events were queued at the checkpoint and would be lost"
        ),
        "{out}"
    );
}

#[test]
fn inotify_watches_of_an_unprivileged_process_are_found_under_its_working_directory() {
    // nobody cannot turn a watch's file handle into a path (CAP_DAC_READ_SEARCH): the checkpoint
    // looks for the watched inodes under the working directory. Found there, the image holds
    // their paths and nobody restores it; elsewhere, the checkpoint is refused (no launcher that
    // may restore it as nobody could find them), saying what to do.
    if !is_root() {
        eprintln!("skipped: needs root to switch to nobody");
        return;
    }
    let env = Env::for_nobody();
    let dir = env.nobody_dir("w");
    let img = env.path("i.thaw");
    let first_life = |cwd: &std::path::Path| {
        env.first_life_cmd("zdtm-inotify")
            .arg(&img)
            .arg(&env.key)
            .arg(&dir)
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let o = first_life(&dir);
    assert!(o.status.success(), "{}", text(&o));
    let watched = dir.join("watched");
    let times = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (dir_then, file_then) = (times(&dir), times(&watched));
    for opts in [&["--pid-mode", "ns"][..], &[]] {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &["watch numbers and masks", "events after restore"]);
        // Put back as they were (see inotify_watches_come_back_with_their_numbers).
        std::fs::remove_file(dir.join("created")).unwrap();
        std::fs::write(&watched, b"x").unwrap();
        std::fs::File::open(&watched)
            .unwrap()
            .set_modified(file_then)
            .unwrap();
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(dir_then)
            .unwrap();
    }
    std::fs::remove_file(&img).unwrap();
    let o = first_life(&env.nobody_dir("elsewhere"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        err.contains("inotify watch 2")
            && err.contains("its path cannot be found")
            && err.contains("not under the working directory"),
        "{err}"
    );
    assert!(!img.exists());
}

#[test]
fn posix_timers_keep_their_ids_clocks_targets_and_times() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-posix-timers", "t.thaw", &[]);
    assert_eq!(env.manifest(&img).posix_timers.len(), 3);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "the IDs the program holds are the kernel's",
                "SIGEV_NONE timer: armed, with at most what it had left",
                "periodic timer keeps its interval",
                "the process's timer signals it, with its value",
                "the thread's timer signals that thread, again and again",
            ],
        );
    }
}

/// Threads that exit between the listing and their signal, or start after the listing, and
/// descriptors closed or opened between the scan and the snapshot: every checkpoint succeeds,
/// the restored process has every thread it waits for (one left out of the image would hang its
/// join) and no descriptor its program had closed.
#[test]
fn threads_and_descriptors_that_come_and_go_during_the_checkpoint() {
    run_zdtm(
        "zdtm-churn",
        &["20"],
        &[],
        &[
            "the spawner goes on starting and joining threads",
            "the opener's file gets the same number every time",
            "the toggled socket's flags are what its thread last set",
            "a file at the soft descriptor limit's last number, under that limit",
        ],
    );
}

/// A descriptor closed once the checkpoint had listed the table, opened again at its number
/// while it scanned and closed again before the threads stopped stays closed after restore; one
/// replaced before the checkpoint held it comes back as the new file; a file renamed after the
/// scan read its name comes back under its new name. (The first, taken as
/// listed, came back as a descriptor nobody held: in the churn test above, about one restore in
/// thirty on a loaded machine.)
#[test]
fn descriptor_numbers_reused_during_the_scan_come_back_as_they_were_at_the_stop() {
    run_zdtm(
        "zdtm-reused",
        &[],
        &[],
        &[
            "a descriptor closed while the checkpoint scanned stays closed",
            "a descriptor replaced before the checkpoint held it is the new file, at its offset",
        ],
    );
    run_zdtm(
        "zdtm-reused",
        &["renamed"],
        &[],
        &["a file renamed while the checkpoint ran comes back under its new name"],
    );
    run_zdtm(
        "zdtm-reused",
        &["event-closed"],
        &[],
        &["an eventfd closed while the checkpoint ran stays closed"],
    );
}

/// Thread CPU affinity and I/O priorities, signal-driven I/O owned by one thread, a listener's
/// and a socket pair's options, and session leadership come back in every mode; a SIGIO owner
/// outside the process and a POSIX message queue are refused by name.
#[test]
fn thread_controls_signal_driven_io_and_socket_options_are_restored() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-controls", "c.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "session leader again",
                "main thread not bound",
                "main thread's I/O priority",
                "worker bound to its CPU",
                "worker's I/O priority",
                "worker's no_new_privs, and only the worker's",
                "worker's timer slack",
                "worker's machine-check kill policy",
                "worker's NUMA policy",
                "mapping's NUMA policy",
                "O_ASYNC signal reaches its owner thread, naming the pipe",
                "listener's options",
                "an accepted connection inherits keep-alive",
                "socket pair's receive timeout",
                "mlockall(MCL_FUTURE | MCL_ONFAULT) still in force",
            ],
        );
    }
    for (extra, needle) in [
        (
            "foreign-owner",
            "(F_SETOWN), which is not restored with this one",
        ),
        ("mqueue", "a POSIX message queue (mq_open): not supported"),
        (
            "unshare-fs",
            "its own working directory, root and umask (unshare(CLONE_FS))",
        ),
        (
            "thread-seccomp",
            "runs under a seccomp filter of its own (mode 2, 1 filter(s))",
        ),
        (
            "thread-personality",
            "has another personality (0x400000) than the checkpointing thread (0x0)",
        ),
        (
            "thread-keepcaps",
            "has another securebits (keepcaps among them) (0x10) than the checkpointing thread (0x0)",
        ),
        (
            "thread-tsc",
            "has another rdtsc setting (PR_SET_TSC) (0x2) than the checkpointing thread (0x1)",
        ),
        (
            "process-keyring",
            "the process has a keyring of its own (keyctl: KEY_SPEC_PROCESS_KEYRING)",
        ),
        (
            "thread-keyring",
            "has a keyring of its own (keyctl: KEY_SPEC_THREAD_KEYRING)",
        ),
        (
            "blocked-thread-keyring",
            "has a keyring of its own (keyctl: KEY_SPEC_THREAD_KEYRING)",
        ),
        (
            "ldt",
            "the process has a local descriptor table (modify_ldt",
        ),
        (
            "epoll-busy-poll",
            "has busy-poll parameters (EPIOCSPARAMS: 20 us, budget 8, prefer 0)",
        ),
        (
            "thread-exec-restrict",
            "has another securebits (keepcaps among them) (0x100) than the checkpointing thread (0x0)",
        ),
        (
            "caller-tsc",
            "the checkpointing thread has rdtsc faulting (PR_SET_TSC, PR_TSC_SIGSEGV)",
        ),
    ] {
        let out = env.refused("zdtm-controls", "r.thaw", &[extra]);
        assert!(out.contains(needle), "{extra}: {out}");
    }
}

/// Internet sockets without a connection come back with their addresses, destinations, options,
/// shutdown and multicast groups, in every mode; queued datagrams and TCP connections are refused
/// by name.
#[test]
fn internet_sockets_without_a_connection_come_back_as_they_were() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-inet", "i.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "a TCP socket never bound keeps its options and send buffer",
                "a bound TCP socket has its address and can listen and be connected to there",
                "a connected UDP socket sends to its peer, which gets IP_PKTINFO with it",
                "a UDP socket shut down for reading stays shut down",
                "a UDP socket keeps its multicast groups, their source filters, TTL and loop",
                "a dual-stack UDP socket keeps the IPv4 group it joined",
                "an IPv6-only UDP socket keeps its address",
            ],
        );
        if is_root() {
            assert_all_ok(
                &o,
                &["raw sockets keep their protocol, TTL, IP_FREEBIND and ICMP filter"],
            );
        }
        // Where this user may make ICMP echo sockets, one came back too.
        if ping_sockets_allowed() {
            assert_all_ok(
                &o,
                &["an ICMP echo socket keeps its identifier and gets its replies"],
            );
        }
    }
    let mut refusals = vec![
        ("udp-queued", "datagrams wait to be read ("),
        // (Its two ends named: loopback addresses.)
        ("tcp-connected", "a TCP connection (ESTABLISHED 127.0.0.1:"),
    ];
    // The kernel shows a socket's MD5 keys only to a holder of CAP_NET_ADMIN.
    if is_root() {
        refusals.push((
            "tcp-md5",
            "the listening socket has TCP MD5 signature (TCP_MD5SIG) keys",
        ));
    }
    if ping_sockets_allowed() {
        refusals.push((
            "icmp-queued",
            "a reply or packet (or end of file) waits to be read",
        ));
    }
    for (extra, needle) in refusals {
        let out = env.refused("zdtm-inet", "r.thaw", &[extra]);
        assert!(out.contains(needle), "{extra}: {out}");
    }
}

/// Threads asleep or waiting at the checkpoint go on as after a stop and a continue (no early
/// EINTR), and a half-read directory listing goes on where it was, in every mode.
#[test]
fn sleeps_waits_and_directory_listings_go_on_across_a_checkpoint() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-waits", "w.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "sleep(1) slept its whole second",
                "absolute clock_nanosleep returns 0",
                "sem_timedwait times out, not EINTR",
                "poll without a timeout returns with the byte",
                "pause() returns only for the program's own signal",
                "a directory listing goes on where it was",
            ],
        );
    }
}

/// A memfd mapped again by another thread while the checkpoint is prepared (ZGC does so with
/// its heap as it allocates): the checkpoint starts again, where it was refused before, and the
/// views are one memory after restore, in every mode.
#[test]
fn shared_memory_mapped_again_during_the_checkpoint_makes_it_start_again() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-remapped", "r.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "the view mapped during the first attempt is there",
                "both views are one memory after restore",
            ],
        );
    }
}

/// `thaw run OPTS IMAGE` inside a time namespace whose clocks are two hours ahead: the image is
/// restored two hours after it was made, as its clocks count (as root).
fn restore_two_hours_later(
    env: &Env,
    img: &std::path::Path,
    opts: &[&str],
) -> std::process::Output {
    let thaw = env.restore_cmd(img, opts, &[]);
    let mut c = command(std::path::Path::new("unshare"));
    c.args(["--time", "--monotonic", "7200", "--boottime", "7200"])
        .arg(thaw.get_program())
        .args(thaw.get_args());
    for (k, v) in thaw.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.output().unwrap()
}

/// Relative sleeps under way at the checkpoint lose the time away, as after a stop and a
/// continue: restored inside a time namespace two hours ahead, an hour's `nanosleep` and
/// `clock_nanosleep(CLOCK_BOOTTIME)` are over at once (they slept their hour again before), also
/// in a thread that blocks every signal (stopped with ptrace); a CPU-time sleep keeps its time
/// left; sleeps without `rem` sleep their whole time again, their requests (one read-only)
/// untouched (a review found them written to, a loop's interval made zero). The manifest records each sleep's time left.
#[test]
fn relative_sleeps_count_the_time_away() {
    if !is_root() {
        eprintln!("skipped: needs root for a time namespace (CI runs as root)");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-slept", "s.thaw", &[]);
    let sleeps: Vec<_> = env
        .manifest(&img)
        .threads
        .iter()
        .filter_map(|t| t.sleep)
        .collect();
    assert_eq!(sleeps.len(), 4, "{sleeps:?}");
    assert!(
        sleeps
            .iter()
            .all(|s| s.left_ns > 3_000_000_000_000 && s.left_ns <= 3_600_000_000_000),
        "{sleeps:?}"
    );
    let o = restore_two_hours_later(&env, &img, &["--pid-mode", "host"]);
    assert_all_ok(
        &o,
        &[
            "nanosleep of an hour, two hours away: over",
            "relative clock_nanosleep(CLOCK_BOOTTIME) of an hour, two hours away: over",
            "nanosleep of an hour in a thread that blocks every signal, two hours away: over",
            "a sleep without rem: its request left as it was",
            "a CPU-time sleep keeps its time left",
        ],
    );
}

/// A process that narrowed its capability bounding set (systemd's CapabilityBoundingSet=, a
/// container) gets it narrow again in every mode: a set-uid or file-capability program it runs
/// after restore gains no more than in its first life.
#[test]
fn a_narrowed_capability_bounding_set_stays_narrow() {
    if !is_root() {
        eprintln!("skipped: needs root to narrow a bounding set (CI runs as root)");
        return;
    }
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = env.path("b.thaw");
    let o = command(std::path::Path::new("setpriv"))
        .args(["--bounding-set", "-net_raw,-sys_boot"])
        .arg(bin("zdtm-process"))
        .arg(&img)
        .arg(&env.key)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let bounding = env.manifest(&img).creds.caps.bounding;
    assert_eq!(bounding & (1 << 13 | 1 << 22), 0, "{bounding:#x}");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &["one", "two words"]);
        assert_all_ok(&o, &["capabilities"]);
    }
}

/// Whether net.ipv4.ping_group_range holds this test's group (ICMP echo sockets allowed).
fn ping_sockets_allowed() -> bool {
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .ok()
        .and_then(|r| {
            let v: Vec<u32> = r
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| v[0] <= gid && gid <= v[1])
        })
        .unwrap_or(false)
}

/// A checkpoint that exits after saving: a thread appending to a file as fast as it can writes
/// nothing in the first life after the snapshot (the restore writes it, once), and a line the C
/// library had buffered is printed by the restored process alone. In both PID modes.
#[test]
fn nothing_after_the_snapshot_happens_in_the_first_life() {
    let env = Env::new();
    for (image, opts) in [("a.thaw", &[][..]), ("b.thaw", &["--pid-mode", "ns"][..])] {
        let first = env.first_life("zdtm-afterwards", image, &[]);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first));
        assert!(
            !String::from_utf8_lossy(&first.stdout).contains("buffered before the checkpoint"),
            "the first life flushed what the restored process prints: {}",
            text(&first)
        );
        let o = env.restore(&env.path(image), opts, &[]);
        assert_all_ok(
            &o,
            &["the log counts up once: nothing after the snapshot was written by the first life"],
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            out.matches("buffered before the checkpoint").count(),
            1,
            "{out}"
        );
    }
}

/// Threads that start threads while the checkpoint stops them (CRIU's transition/thread-bomb):
/// those started after the listing are found and stopped too, named as they were, and every
/// chain goes on after restore. It used to give up after 24 attempts.
#[test]
fn threads_started_while_the_checkpoint_stops_them_are_stopped_too() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-bomb", "b.thaw", &[]);
    let names: Vec<String> = env
        .manifest(&img)
        .threads
        .into_iter()
        .map(|t| t.name)
        .collect();
    // The 24 chains' threads, the main thread and the checkpointing one, at least.
    assert!(names.len() >= 26, "{} threads", names.len());
    // Each named by itself or by the thread that started it (none left without a name).
    let unnamed: Vec<&String> = names
        .iter()
        .filter(|n| {
            !(n.starts_with("chain") || ["zdtm-bomb", "checkpointer"].contains(&n.as_str()))
        })
        .collect();
    assert!(unnamed.is_empty(), "threads named {unnamed:?}");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["threads started during the checkpoint: every chain goes on after restore"],
        );
    }
}

/// A file written at its end through its offset (opened without O_APPEND) is restored only
/// while its size is what it was: a second restore of one image would write over the first's
/// lines at the saved offset (a probe saw torn lines, accepted silently). Put back as it was,
/// it restores again; a file opened with O_APPEND just grows.
#[test]
fn a_file_written_through_its_offset_since_the_checkpoint_is_refused() {
    let env = Env::new();
    let dir = env.path("files");
    std::fs::create_dir(&dir).unwrap();
    let img = env.checkpoint("zdtm-written", "w.thaw", &[dir.to_str().unwrap()]);
    let (w, a, e) = (dir.join("w.log"), dir.join("a.log"), dir.join("e.log"));
    let as_it_was = std::fs::read(&w).unwrap();
    let mut restores = 0;
    for opts in every_mode() {
        std::fs::write(&w, &as_it_was).unwrap();
        std::fs::write(&e, b"").unwrap();
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &["written files: a line after restore"]);
        restores += 1;
        let again = env.restore(&img, opts, &[]);
        let err = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(67), "{}", text(&again));
        assert!(
            err.contains("w.log was written since the checkpoint")
                && err.contains("without O_APPEND")
                && !err.contains("a.log"),
            "{err}"
        );
    }
    // The log that was empty at the checkpoint: written over by each restore (one line left of
    // three), unless refused once it is not empty.
    std::fs::write(&w, &as_it_was).unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("e.log was written since the checkpoint (0 bytes then"),
        "{}",
        text(&o)
    );
    // A restore running, holding w.log open for writing before it writes: another is refused,
    // though the file has its size still (both would write at one offset).
    std::fs::write(&e, b"").unwrap();
    let mut first = Waiting::spawn(env.restore_cmd(&img, &["--pid-mode", "ns"], &["hold"]));
    first.ready();
    let o = env.restore(&img, &["--pid-mode", "ns"], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("w.log is open for writing in process ")
            && String::from_utf8_lossy(&o.stderr).contains("both would write at one offset"),
        "{}",
        text(&o)
    );
    assert_eq!(first.finish(0).code(), Some(0));
    restores += 1;
    let appended = std::fs::read_to_string(&a).unwrap();
    assert_eq!(
        appended.lines().filter(|l| *l == "post").count(),
        restores,
        "{appended}"
    );
    let written = std::fs::read_to_string(&w).unwrap();
    assert_eq!(
        written.lines().filter(|l| l.starts_with("post ")).count(),
        1,
        "{written}"
    );
}

/// An empty file the process has open for writing and does not lock, which another process
/// holds open for writing and locked (a standby waiting for a lock file, Java's
/// `FileChannel.lock()` or a `tryLock()` loop): a lock file, not a log two writers would write
/// over. Restored while the holder runs; it said "both would write at one offset" and refused.
/// Held open for writing without a lock, it is still refused.
#[test]
fn an_empty_lock_file_another_process_holds_locked_is_restored() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    let dir = env.path("files");
    std::fs::create_dir(&dir).unwrap();
    let img = env.checkpoint("zdtm-written", "l.thaw", &[dir.to_str().unwrap()]);
    let as_it_was = std::fs::read(dir.join("w.log")).unwrap();
    let holder = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("l.lock"))
        .unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("l.lock is open for writing in process "),
        "{}",
        text(&o)
    );
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(&o, &["written files: a line after restore"]);
        // (Each restore wrote its line: w.log and e.log back as they were for the next.)
        std::fs::write(dir.join("w.log"), &as_it_was).unwrap();
        std::fs::write(dir.join("e.log"), b"").unwrap();
    }
    drop(holder);
}

/// A signal sent to a stopped thread after its handler read its queue (SBCL's collector) starts
/// the checkpoint again: the image has it handled once, neither lost (a fork does not copy the
/// queue) nor handled again after restore. Deterministic through THAW_TEST_SIGNAL_PARKED.
#[test]
fn a_signal_sent_to_a_stopped_thread_is_neither_lost_nor_doubled() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-signal-came", "s.thaw", &[]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &["a signal sent to a stopped thread is handled once, in the image"],
        );
    }
}

/// A thread that took a seccomp filter of its own after the checkpoint listed the threads, and
/// one started then (found while the others stop): the checkpoint refuses, naming both, where
/// it used to restore them unfiltered.
#[test]
fn a_filter_taken_while_the_checkpoint_stops_the_threads_is_refused() {
    let env = Env::new();
    let o = command(&bin("zdtm-late-policy"))
        .arg(env.path("late.thaw"))
        .arg(&env.key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for name in ["(filtered)", "(late)"] {
        assert!(
            err.contains(&format!("{name} runs under a seccomp filter of its own")),
            "{name}: {err}"
        );
    }
    assert!(!env.path("late.thaw").exists(), "no image: {err}");
}

/// A process that ran in an IPC namespace of its own (a sandbox's, systemd's PrivateIPC=) and
/// had System V objects there: restored outside it, its semaphore ids would name other sets, or
/// none. Refused on the same boot, naming the namespaces.
#[test]
fn system_v_ids_of_another_ipc_namespace_are_refused() {
    let env = Env::new();
    let img = env.path("ipc.thaw");
    let o = command(std::path::Path::new("unshare"))
        .arg("-i")
        .arg(bin("zdtm-sysv-sem"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(67), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("another IPC namespace") && err.contains("System V object"),
            "{err}"
        );
        assert!(o.stdout.is_empty(), "nothing may run: {}", text(&o));
    }
}

/// A periodic ITIMER_REAL caught after it came due and before its SIGALRM was taken (the kernel
/// arms it again only then; `getitimer` reads no time left) was restored disarmed and never
/// fired again (a probe: Python's `signal.setitimer`, about one checkpoint in ten). It is
/// restored due at once with its interval, in every mode.
#[test]
fn a_periodic_timer_whose_signal_waits_to_be_taken_goes_on() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-itimer-due", "i.thaw", &[]);
    // (The checkpoint takes the waiting SIGALRM off the queue to save it, which arms the timer
    // again: the image holds it pending and the timer armed. The race in which the timer comes
    // due after the queues were read is state::timers' unit test.)
    let real = env.manifest(&img).timers.real;
    assert_eq!(real.interval_us, 20_000, "{real:?}");
    assert!(
        env.manifest(&img)
            .signals
            .pending
            .iter()
            .any(|q| q.signo == libc::SIGALRM as u32),
        "SIGALRM saved pending"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "the timer had come due, its signal not taken: no time left, its interval",
                "after restore it is armed, or its signal is there to be taken",
                "SIGALRM arrives, and again with the timer's interval",
            ],
        );
    }
    // Ignored, the timer is dead for good (a review: restored due at once, a process that
    // later set SIGALRM's default action was killed by it).
    let img = env.checkpoint("zdtm-itimer-due", "ign.thaw", &["ignored"]);
    assert_eq!(env.manifest(&img).timers.real, Default::default());
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "an ignored SIGALRM left the timer dead: no time left, its interval",
                "after restore it is not armed",
            ],
        );
    }
}

/// One-shot timers (`alarm`, a POSIX timer, ITIMER_PROF) that came due after the checkpoint read
/// the signal queues and before it read the timers read disarmed, their signals in queues the
/// image does not hold: restored disarmed, they never fired (a probe: due 10 ms into a checkpoint
/// copying 64 MiB of shared memory, every time), and a periodic POSIX timer came an interval
/// late. Each is restored due at once, in every mode.
#[test]
fn a_one_shot_timer_due_while_the_queues_were_read_fires() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-timer-late", "l.thaw", &[]);
    let m = env.manifest(&img);
    assert_eq!(m.timers.real.value_us, 1, "{:?}", m.timers);
    assert_eq!(m.timers.prof.value_us, 1, "{:?}", m.timers);
    let mut posix: Vec<(u64, u64)> = m
        .posix_timers
        .iter()
        .map(|t| (t.value_ns, t.interval_ns))
        .collect();
    posix.sort();
    assert_eq!(posix, [(1, 0), (1, 10_000_000_000)]);
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_all_ok(
            &o,
            &[
                "alarm: its SIGALRM comes",
                "POSIX timer: its signal comes",
                "ITIMER_PROF: its SIGPROF comes",
                "periodic POSIX timer: its signal comes, not an interval later",
            ],
        );
    }
}

/// A timer that came due while the process was away signals the main thread, which has the
/// handler, as the kernel would: a Perl probe (ithreads: each thread an interpreter of its own)
/// exited with status 14 after every restore, its SIGALRM taken by a thread without a handler
/// (raised as the threads resumed, before the main thread's mask was back; the checkpointing
/// thread resumed with every signal blocked). Checkpointed from the main thread and from
/// another, restored two hours later in every mode.
#[test]
fn a_timer_due_while_away_signals_the_main_thread() {
    if !is_root() {
        eprintln!("skipped: needs root for a time namespace (CI runs as root)");
        return;
    }
    let env = Env::new();
    for (image, extra) in [("m.thaw", &[][..]), ("w.thaw", &["worker"][..])] {
        let img = env.checkpoint("zdtm-alarm-main", image, extra);
        for opts in every_mode() {
            let o = restore_two_hours_later(&env, &img, opts);
            assert_all_ok(
                &o,
                &["the timer that came due while away signals the main thread, and it alone"],
            );
        }
    }
}

/// A restored process that stops itself stops its launcher with it, in every mode, so that the
/// shell that ran `thaw run` sees its job stopped (a terminal probe: Node's readline stops itself
/// on Ctrl-Z in raw mode, and the shell never got its terminal back); continuing the group
/// (`fg`) lets it go on and end.
#[test]
fn a_process_that_stops_itself_stops_its_launcher_too() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let img = env.checkpoint("zdtm-stops", "s.thaw", &[]);
    for opts in every_mode() {
        let mut child = env
            .restore_cmd(&img, opts, &[])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Stopped (state T), within a bound so that a regression fails instead of hanging.
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
                .unwrap_or(false)
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !state() && std::time::Instant::now() < end {
            std::thread::yield_now();
        }
        let stopped = state();
        // SAFETY: kill has no memory-safety preconditions; the group is the launcher's own.
        unsafe { libc::kill(-pid, libc::SIGCONT) };
        // Continued, it ends; stopped again, nobody would continue it (a launcher in ns mode
        // once stopped itself for the stop the namespace's init had made of the whole job).
        let mut again = false;
        while stopped && !again && child.try_wait().unwrap().is_none() {
            again = state();
            std::thread::yield_now();
        }
        if !stopped || again {
            // SAFETY: as above (the process, stopped, would keep the launcher waiting).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let o = child.wait_with_output().unwrap();
        assert!(stopped, "{opts:?}: the launcher did not stop: {}", text(&o));
        assert!(!again, "{opts:?}: the launcher stopped again: {}", text(&o));
        assert!(o.status.success(), "{opts:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "restored, stopping\ncontinued\n",
            "{opts:?}"
        );
    }
}

/// One Ctrl-C on the terminal `thaw run` runs on gives the restored process one SIGINT: the
/// terminal signals the job's whole group, the process's too, and the launcher does not pass
/// its own copy on (a terminal probe: two KeyboardInterrupts in CPython for one key).
#[test]
fn one_ctrl_c_is_one_sigint() {
    use std::io::{Read, Write};
    let env = Env::new();
    let img = env.checkpoint("zdtm-stops", "c.thaw", &["ctrl-c"]);
    for opts in every_mode() {
        // A pseudo-terminal whose controlling session is the launcher's.
        let (mut master, slave) = pty();
        let mut cmd = env.restore_cmd(&img, opts, &[]);
        on_terminal(&mut cmd, &slave);
        let mut child = cmd.spawn().unwrap();
        drop(slave);
        let mut seen = String::new();
        // Reads the terminal's output until `done` says so (or it ends).
        let read_until =
            |master: &mut std::fs::File, seen: &mut String, done: &dyn Fn(&str) -> bool| {
                let mut buf = [0u8; 256];
                while !done(seen) {
                    match master.read(&mut buf) {
                        Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                        _ => break,
                    }
                }
            };
        read_until(&mut master, &mut seen, &|s| s.contains("ready"));
        master.write_all(b"\x03").unwrap();
        master.write_all(b"x\n").unwrap();
        read_until(&mut master, &mut seen, &|s| {
            s.split("sigint ").nth(1).is_some_and(|r| r.contains('\n'))
        });
        let status = child.wait().unwrap();
        let count = seen
            .split("sigint ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_owned();
        assert_eq!(count, "1", "{opts:?}: {seen:?}, {status:?}");
    }
}

/// Runs `cmd` with its standard descriptors on the terminal `slave`, whose session it leads
/// (its controlling terminal).
fn on_terminal(cmd: &mut std::process::Command, slave: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let tty = slave.as_raw_fd();
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe, run in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(tty, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A program that leads a session on a terminal (script(1), `docker run -t`, `ssh -t host cmd`
/// and tmux start it so) came back leading a session of its own, without a terminal: `/dev/tty`
/// failed (ENXIO), `tcgetpgrp` too (ENOTTY), and resizing the terminal sent it no SIGWINCH.
/// Restored on a terminal, it has it as its controlling terminal again, in every mode.
#[test]
fn a_session_leader_on_a_terminal_has_a_controlling_terminal_again() {
    use std::io::Read;
    // Everything the terminal shows until the last holder of its other end is gone.
    let drain = |mut master: std::fs::File| {
        let mut seen = Vec::new();
        let _ = master.read_to_end(&mut seen);
        String::from_utf8_lossy(&seen).into_owned()
    };
    let env = Env::new();
    let img = env.path("t.thaw");
    let (master, slave) = pty();
    let mut first = env.first_life_cmd("zdtm-stops");
    first.arg(&img).arg(&env.key).arg("ctty");
    on_terminal(&mut first, &slave);
    let mut child = first.spawn().unwrap();
    // (The command holds its copies of the terminal until dropped.)
    drop((first, slave));
    let seen = drain(master);
    assert!(child.wait().unwrap().success(), "{seen}");
    for opts in every_mode() {
        let (master, slave) = pty();
        let mut c = env.restore_cmd(&img, opts, &[]);
        on_terminal(&mut c, &slave);
        let mut child = c.spawn().unwrap();
        drop((c, slave));
        let seen = drain(master);
        let status = child.wait().unwrap();
        assert!(seen.contains("ctty yes"), "{opts:?}: {seen:?}, {status:?}");
    }
}

/// A process at the root of a cgroup namespace of its own (zdtm's cgroupns) was accepted and
/// came back reading the caller's cgroup paths (`/process_api/…` for `/`). It reads `/` again
/// in every mode, restored from a cgroup of the test's own; a launcher without CAP_SYS_ADMIN
/// refuses it in host mode, by name; a thread alone in another cgroup namespace is refused.
#[test]
fn a_process_at_the_root_of_its_own_cgroup_namespace_reads_its_root_again() {
    if !is_root() {
        eprintln!("skipped: unshare(CLONE_NEWCGROUP) needs root");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-cgroupns", "c.thaw", &[]);
    assert!(env.manifest(&img).cgroupns.at_root);
    let name = format!("thaw-test-cgns-{}", std::process::id());
    let dir = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(|b| std::path::Path::new(b).join(&name))
        .find(|d| std::fs::create_dir(d).is_ok())
        .expect("a cgroup of the test's own");
    let checks = [
        "before the checkpoint it read / for each cgroup",
        "after restore it reads / for each cgroup again",
    ];
    for opts in every_mode() {
        let mut c = env.restore_cmd(&img, opts, &[]);
        enter_cgroup(&mut c, &dir);
        assert_all_ok(&c.output().unwrap(), &checks);
    }
    // Root without CAP_SYS_ADMIN (CAP_CHECKPOINT_RESTORE kept: host mode is allowed; the
    // image's capabilities not given back: --as-caller).
    let mut c = command(std::path::Path::new("/usr/bin/setpriv"));
    c.args([
        "--inh-caps",
        "-sys_admin",
        "--bounding-set",
        "-sys_admin",
        "--",
    ])
    .arg(env.program("thaw"))
    .args(
        env.restore_cmd(&img, &["--pid-mode", "host", "--as-caller"], &[])
            .get_args(),
    );
    enter_cgroup(&mut c, &dir);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        text(&o).contains("root of a cgroup namespace of its own")
            && text(&o).contains("CAP_SYS_ADMIN"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir(&dir);
    let out = env.refused("zdtm-cgroupns", "t.thaw", &["thread"]);
    assert!(out.contains("another cgroup namespace"), "{out}");
}

/// Netlink sockets (zdtm's sk-netlink; a udev monitor, a route watcher, a generic netlink
/// client) were refused. Each comes back with its port ID, groups (beyond 32 too), destination
/// and options, and the kernel answers it at its port ID, in every mode; one with an answer
/// unread is refused by name.
#[test]
fn netlink_sockets_come_back_with_their_port_ids_and_groups() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-netlink", "n.thaw", &[]);
    let mut checks = Vec::new();
    for what in ["route watcher", "bound to its PID", "client", "never bound"] {
        checks.push(format!(
            "netlink {what}: port ID, groups, destination and option as before"
        ));
        checks.push(format!(
            "netlink {what}: the kernel answers it at its port ID"
        ));
    }
    let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
    for opts in every_mode() {
        assert_all_ok(&env.restore(&img, opts, &[]), &checks);
    }
    let out = env.refused("zdtm-netlink", "q.thaw", &["queued"]);
    assert!(
        out.contains("NETLINK_ROUTE socket: messages wait to be read"),
        "{out}"
    );
}

/// Established TCP connections (CRIU's socket-tcp*), when asked for (THAW_TCP_ESTABLISHED=1,
/// as CRIU's --tcp-established; refused otherwise, saying how), through the kernel's repair mode: two
/// loopback connections of the process's own, bytes waiting both ways (never sent, sent and
/// unread), come back whole in every mode and again; a connection to another process's server
/// is moved by a checkpoint that ends the process, and refused by name when the process goes
/// on. Without CAP_NET_ADMIN, a connection is refused, naming it.
#[test]
fn tcp_connections_come_back_with_their_queues() {
    let unprivileged = if is_root() {
        Env::for_nobody()
    } else {
        Env::new()
    };
    let out = unprivileged.refused("zdtm-tcp", "u.thaw", &["unprivileged"]);
    assert!(out.contains("takes CAP_NET_ADMIN"), "{out}");
    if !is_root() {
        return;
    }
    let env = Env::new();
    let out = env.refused("zdtm-tcp", "n.thaw", &["not-asked"]);
    assert!(out.contains("THAW_TCP_ESTABLISHED=1"), "{out}");
    let going_on = env.first_life("zdtm-tcp", "c.thaw", &["going-on"]);
    assert_all_ok(
        &going_on,
        &[
            "first life: SO_REUSEADDR of each end as it was",
            "first life: every byte the client wrote arrives once, in order",
            "first life: the server's unread greeting, then what it sends after",
        ],
    );
    // (Where a pids cgroup can be made.)
    let cgroup = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .map(|b| std::path::Path::new(b).join(format!("thaw-test-tcp-{}", std::process::id())))
        .find(|d| {
            std::fs::create_dir(d).is_ok()
                && (d.join("pids.max").exists() || std::fs::remove_dir(d).is_err())
        });
    if let Some(cg) = cgroup {
        let failed = env.first_life("zdtm-tcp", "f.thaw", &["fork-fails", cg.to_str().unwrap()]);
        let _ = std::fs::remove_dir(&cg);
        assert_all_ok(
            &failed,
            &[
                "the checkpoint whose snapshot cannot be forked fails, saying why",
                "after a failed checkpoint: every byte the client wrote arrives once, in order",
            ],
        );
    }
    assert_all_ok(
        &env.first_life("zdtm-tcp", "k.thaw", &["peek-offset"]),
        &["the peek offset as it was, the next peek after it"],
    );
    let out = env.refused("zdtm-tcp", "o.thaw", &["urgent"]);
    assert!(out.contains("urgent data (MSG_OOB)"), "{out}");
    let img = env.checkpoint("zdtm-tcp", "t.thaw", &[]);
    let mut checks = Vec::new();
    for name in ["IPv4", "IPv4 to a dual-stack listener"] {
        for what in [
            "both ends as before",
            "options as before",
            "every byte the client wrote arrives once, in order",
            "the server's unread greeting, then what it sends after",
        ] {
            checks.push(format!("{name}: {what}"));
        }
    }
    checks.push("listeners sharing a port: both on it, SO_REUSEPORT as each had it".into());
    let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
    restored_in_its_modes_and_again(&env, &img, &checks, &checks);

    // A server of another process (this one), echoing lines; on the second connection it
    // sends numbered lines every millisecond from its first echo until its client's first life
    // has ended (those sent as the checkpoint read the connection and wrote the image too,
    // which the first life must not take), then a line of its own ("gap"), all of which must
    // reach the restored client rather than meet no socket (a reset).
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let (away, gap) = std::sync::mpsc::channel::<()>();
    let echo = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut served = 0;
        for i in 0..2 {
            let (s, _) = server.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            for line in std::io::BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                w.write_all(format!("echo:{line}\n").as_bytes()).unwrap();
                served += 1;
                if i == 1 && served == 2 {
                    let mut tick = 0;
                    while gap.try_recv().is_err() {
                        w.write_all(format!("tick {tick}\n").as_bytes()).unwrap();
                        tick += 1;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    w.write_all(b"gap\n").unwrap();
                }
            }
        }
        served
    });
    let out = env.refused("zdtm-tcp", "g.thaw", &["peer-going-on", &port]);
    assert!(
        out.contains("moved only by a checkpoint that ends the process"),
        "{out}"
    );
    let moved = env.checkpoint("zdtm-tcp", "p.thaw", &["peer", &port]);
    away.send(()).unwrap();
    assert_all_ok(
        &env.restore(&moved, &["--pid-mode", "host"], &[]),
        &["a connection to another process's server is moved: every line it sent meanwhile, once and in order, then its answer"],
    );
    // one + one (refused), one + two (moved)
    assert_eq!(echo.join().unwrap(), 3);
    // The hold on its packets is gone with the restore. (Its own table: other runs on the
    // machine, a CI run beside a developer's, hold theirs meanwhile.)
    let lock = env
        .manifest(&moved)
        .files
        .iter()
        .find_map(|f| match &f.kind {
            thaw::state::files::FdKind::Socket(thaw::state::sockets::Socket::Tcp(t)) => {
                Some(t.lock.clone())
            }
            _ => None,
        })
        .unwrap();
    assert!(lock.starts_with("thaw_lock_"), "{lock}");
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables
            .lines()
            .any(|l| l.trim() == format!("table inet {lock}")),
        "{tables}"
    );
}
