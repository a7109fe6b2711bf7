//! The launcher end to end: PID modes, unprivileged restore, repeated restores, refusals,
//! failures that name their step, signal forwarding and exit status.

mod common;

use std::path::Path;

use common::*;

const CORRUPT: i32 = 65;
const SIGNATURE: i32 = 66;
const REFUSED: i32 = 67;
const RESTORE_FAILED: i32 = 68;

fn counter_line(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("counter: pid="), "{}", text(o));
    out
}

#[test]
fn counter_restored_fifty_times_in_a_row_with_its_pid() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let first = counter_line(&env.restore(&img, &["--pid-mode", "host"], &["--verify", "0"]));
    // The warm state is intact: the checksum is the one a cold run computes.
    let cold = command(&bin("counter"))
        .args(["-", "--verify"])
        .output()
        .unwrap();
    let cold = String::from_utf8_lossy(&cold.stdout).into_owned();
    let sum = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("checksum="))
            .map(str::to_owned)
    };
    assert!(
        sum(&cold).is_some() && sum(&cold) == sum(&first),
        "cold {cold} vs restored {first}"
    );
    let pid: i32 = first["counter: pid=".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for i in 1..50 {
        let arg = i.to_string();
        let line = counter_line(&env.restore(&img, &["--pid-mode", "host"], &["--verify", &arg]));
        let expected = first.replace("\"0\"", &format!("{arg:?}"));
        assert_eq!(line, expected, "restore {i}");
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "PID {pid} left behind"
    );
}

#[test]
fn namespace_mode_as_nobody_and_host_mode_refused_for_nobody() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody (CI runs as root)");
        return;
    }
    let env = Env::for_nobody();
    let scratch = env.path("cwd");
    std::fs::create_dir(&scratch).unwrap();
    std::os::unix::fs::chown(&scratch, Some(65534), Some(65534)).unwrap();
    let img = env.checkpoint("zdtm-process", "p.thaw", &[scratch.to_str().unwrap()]);
    let o = env.restore(&img, &["--pid-mode", "ns"], &["one", "two words"]);
    assert_all_ok(
        &o,
        &[
            "pid",
            "rlimit nofile",
            "umask",
            "cwd",
            "comm",
            "cmdline",
            "exe",
            "args",
        ],
    );
    let o = env.restore(&img, &["--pid-mode", "host"], &["one", "two words"]);
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs root or CAP_CHECKPOINT_RESTORE"),
        "{}",
        text(&o)
    );
    // auto picks the namespace for an unprivileged caller.
    let o = env.restore(&img, &[], &["one", "two words"]);
    assert_all_ok(&o, &["pid"]);
}

#[test]
fn taken_pid_is_refused_in_host_mode_and_ns_mode_still_works() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let mut first = Waiting::spawn(env.restore_cmd(&img, &["--pid-mode", "host"], &[]));
    let pid = first.ready();
    let o = env.restore(&img, &["--pid-mode", "host"], &[]);
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("PID {pid} is in use")) && err.contains("--pid-mode ns"),
        "{err}"
    );
    // The same image concurrently, in its own namespace, with the same PID inside.
    let mut second = Waiting::spawn(env.restore_cmd(&img, &["--pid-mode", "auto"], &[]));
    assert_eq!(second.ready(), pid);
    assert_eq!(second.finish(3).code(), Some(3));
    assert_eq!(first.finish(0).code(), Some(0));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn exit_status_and_forwarded_signals() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    for mode in ["host", "ns"] {
        let mut w = Waiting::spawn(env.restore_cmd(&img, &["--pid-mode", mode], &[]));
        w.ready();
        assert_eq!(w.finish(7).code(), Some(7), "{mode}");

        let mut w = Waiting::spawn(env.restore_cmd(&img, &["--pid-mode", mode], &[]));
        let pid = w.ready();
        // Child::wait closes stdin, which would end the waiter too: keep it open until it is over.
        let stdin = w.child.stdin.take();
        // SAFETY: sending SIGTERM to the launcher we spawned.
        unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
        let status = w.child.wait().unwrap();
        drop(stdin);
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{mode}");
        if mode == "host" {
            assert!(!Path::new(&format!("/proc/{pid}")).exists());
        }
    }
}

/// The state letter of process `pid` (/proc/PID/stat), `None` once it is gone.
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The host PID of the process whose innermost PID is `pid` and whose ancestors include
/// `ancestor` (in ns mode the image's PID is the namespace's).
fn host_pid(ancestor: i32, pid: i32) -> i32 {
    let parent = |p: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("PPid:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let below = |mut p: i32| {
        while p > 1 {
            if p == ancestor {
                return true;
            }
            p = parent(p).unwrap_or(0);
        }
        false
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let nspid = status.lines().find(|l| l.starts_with("NSpid:"));
            nspid.and_then(|l| l.split_whitespace().last()) == Some(&pid.to_string()) && below(p)
        })
        .unwrap_or_else(|| panic!("no process {pid} below {ancestor}"))
}

/// `kill -STOP` then `kill -CONT` of the restored process (a debugger, a supervisor freezing
/// it): the launcher stopped itself with its child, as for a job's Ctrl-Z, and nothing ever
/// continued it (in ns mode the namespace's init stopped the caller's whole process group).
/// Now only a job-control stop (SIGTSTP, SIGTTIN, SIGTTOU) stops the launcher.
#[test]
fn a_process_stopped_and_continued_by_its_pid_leaves_the_launcher_running() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    for mode in ["host", "ns"] {
        let mut c = env.restore_cmd(&img, &["--pid-mode", mode], &[]);
        // (A group of its own: a stopped job must not be the test's.)
        c.process_group(0);
        let mut w = Waiting::spawn(c);
        let launcher = w.child.id() as i32;
        let pid = host_pid(launcher, w.ready());
        // SAFETY: signals to the restored process this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        while state_of(pid) != Some('T') {
            std::thread::yield_now();
        }
        // The launcher learns of the stop from wait4 at once; give it the chance to go wrong.
        let mut stopped = false;
        for _ in 0..20_000 {
            if state_of(launcher) == Some('T') {
                stopped = true;
                break;
            }
            std::thread::yield_now();
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        if stopped {
            // SAFETY: the launcher and its group, so that the test does not hang on them.
            unsafe { libc::kill(-launcher, libc::SIGKILL) };
            panic!("{mode}: the launcher stopped with its child on a SIGSTOP");
        }
        assert_eq!(w.finish(7).code(), Some(7), "{mode}");
    }
}

/// Signals the launcher has no use for whose default action ends a program (SIGALRM, a
/// real-time one): they killed the launcher, and the process with it (lazily) or left it
/// running orphaned (`--eager`). They are passed on, as SIGTERM is.
#[test]
fn other_signals_sent_to_the_launcher_are_passed_on() {
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    for (sig, opts) in [
        (libc::SIGALRM, &["--eager"][..]),
        (libc::SIGRTMIN() + 3, &[][..]),
        (libc::SIGPWR, &["--pid-mode", "ns"][..]),
    ] {
        let mut w = Waiting::spawn(env.restore_cmd(&img, opts, &[]));
        let launcher = w.child.id() as i32;
        let pid = host_pid(launcher, w.ready());
        let stdin = w.child.stdin.take();
        // SAFETY: a signal to the launcher this test started.
        unsafe { libc::kill(launcher, sig) };
        let status = w.child.wait().unwrap();
        drop(stdin);
        assert_eq!(status.code(), Some(128 + sig), "{sig} {opts:?}: {status:?}");
        assert_eq!(state_of(pid), None, "{sig} {opts:?}: the process is gone");
    }
}

/// A restored process that signals its parent (`kill(getppid(), SIGUSR2)`: a daemon telling its
/// supervisor it is ready) signals the launcher (or the namespace's init), which stands in for
/// its parent: it passed the signal back to the process, which got its own signal (and,
/// without a handler, died of it). A signal from the process is not passed back any more.
#[test]
fn a_signal_the_process_sends_its_parent_is_not_passed_back_to_it() {
    const SCRIPT: &str = r#"
import os, signal, sys, time, thaw
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append("USR2"))
thaw.checkpoint(sys.argv[1], key=sys.argv[2], exit_after_save=True)
os.kill(os.getppid(), signal.SIGUSR2)
time.sleep(0.5)
print("process got", got, flush=True)
"#;
    let env = Env::new();
    let img = env.path("parent.thaw");
    let o = env.python_script(SCRIPT, &img).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for mode in ["host", "ns"] {
        // A supervisor that takes SIGUSR2 from its child, the launcher.
        let run = env.restore_cmd(&img, &["--pid-mode", mode], &[]);
        let mut c = std::process::Command::new("/bin/bash");
        c.arg("-c")
            .arg(r#"trap 'echo supervisor got USR2' USR2; "$@" & p=$!; wait $p; r=$?; while kill -0 $p 2>/dev/null; do wait $p; r=$?; done; exit $r"#)
            .arg("bash")
            .arg(run.get_program())
            .args(run.get_args())
            .envs(run.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let o = c.output().unwrap();
        assert!(o.status.success(), "{mode}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(out, "process got []\n", "{mode}: {}", text(&o));
    }
}

/// A memory cgroup of this test's own (v1 or v2) limited to `bytes`; removed when dropped.
struct MemoryLimit(std::path::PathBuf);

impl MemoryLimit {
    fn new(bytes: u64) -> Option<MemoryLimit> {
        let name = format!("thaw-test-oom-{}", std::process::id());
        for (base, limit) in [
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
            ("/sys/fs/cgroup", "memory.max"),
        ] {
            let dir = Path::new(base).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                if std::fs::write(dir.join(limit), bytes.to_string()).is_ok() {
                    return Some(MemoryLimit(dir));
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        None
    }

    /// `c`, started inside the cgroup.
    fn enter(&self, c: &mut std::process::Command) {
        enter_cgroup(c, &self.0);
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A restore whose memory does not fit the caller's memory limit (a container's): the kernel
/// kills the restorer while it copies the image in, before the process exists. The launcher
/// took the end of its error pipe for a restored process and exited 137 without a word, as if
/// the program had been killed; it now says the restorer ended first (68).
#[test]
fn a_restorer_killed_before_the_process_runs_is_not_taken_for_the_program() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-pattern", "p.thaw", &["64"]);
    let Some(limit) = MemoryLimit::new(32 << 20) else {
        eprintln!("skipped: no memory cgroup to limit");
        return;
    };
    for mode in ["host", "ns"] {
        let mut c = env.restore_cmd(&img, &["--eager", "--pid-mode", mode], &[]);
        limit.enter(&mut c);
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(68), "{mode}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("the restorer ended before the process was made (killed")
                && err.contains("nothing of the image ran"),
            "{mode}: {err}"
        );
        assert!(o.stdout.is_empty(), "{mode}: {}", text(&o));
    }
}

#[test]
fn tampered_image_runs_nothing() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&img, &bytes).unwrap();
    let o = env.restore(&img, &["--eager"], &[]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match its digest"),
        "{}",
        text(&o)
    );
}

#[test]
fn unsigned_images_need_the_explicit_development_option() {
    let env = Env::new();
    let img = env.path("u.thaw");
    let o = command(&bin("zdtm-vdso")).arg(&img).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(SIGNATURE), "{}", text(&o));
    let o = env.restore(&img, &["--insecure-allow-unsigned"], &[]);
    assert_all_ok(&o, &["vdso address"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNSIGNED"));
}

#[test]
fn another_kernel_or_cpu_is_refused_with_what_differs() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let key = thaw_signing::SecretKey::load(&env.key).unwrap();

    thaw::image::rewrite_manifest(&img, Some(&key), |m| {
        let r = m
            .platform
            .vdso
            .regions
            .iter_mut()
            .find(|r| r.name == "[vdso]")
            .unwrap();
        r.end += 4096;
        m.platform.kernel_release = "5.10.0-ancient".into();
    })
    .unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kernel vDSO layout differs") && err.contains("5.10.0-ancient"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    let img = env.checkpoint("counter", "d.thaw", &[]);
    let here = thaw::state::platform::CpuFeatures::current();
    thaw::image::rewrite_manifest(&img, Some(&key), |m| {
        m.platform.cpu.cpuid[2] |= 1 << 16 | 1 << 30; // avx512f, avx512bw
        m.platform.cpu.cpuid[4] |= 1 << 24; // amx-tile
                                            // Whatever this CPU has, it lacks some leaf-7 EDX feature.
        m.platform.cpu.cpuid[4] |= !here.cpuid[4];
        m.platform.cpu.xsave_mask |= 1 << 18; // AMX tile data
    })
    .unwrap();
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CPU lacks"), "{err}");
    if here.cpuid[4] & (1 << 24) == 0 {
        assert!(err.contains("amx-tile"), "{err}");
    }
    assert!(o.stdout.is_empty());
}

/// A step of the restorer that fails (entering a working directory the process may no longer
/// search: the launcher, which checks it is the same directory, may still look at it) is named,
/// and nothing is left running.
#[test]
fn failed_restore_names_the_step_and_leaves_nothing_behind() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody (CI runs as root)");
        return;
    }
    let env = Env::for_nobody();
    let cwd = env.nobody_dir("shut");
    let img = env.checkpoint("zdtm-process", "p.thaw", &[cwd.to_str().unwrap()]);
    std::fs::set_permissions(&cwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = env.restore(&img, &["--pid-mode", "ns"], &[]);
    assert_eq!(o.status.code(), Some(RESTORE_FAILED), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("(chdir {})", cwd.display())) && err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());
    // No process of the image's is left (its name is zdtm-proc).
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "zdtm-proc")
                && std::fs::read_to_string(e.path().join("cmdline"))
                    .is_ok_and(|c| c.contains(&*img.to_string_lossy()))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_signing_key_never_reaches_the_image() {
    let env = Env::new();
    let img = env.checkpoint("counter", "c.thaw", &[]);
    let image = std::fs::read(&img).unwrap();
    let pem = std::fs::read(&env.key).unwrap();
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-outform", "DER", "-in"])
        .arg(&env.key)
        .output()
        .unwrap()
        .stdout;
    let seed = &der[der.len() - 32..];
    let contains = |needle: &[u8]| image.windows(needle.len()).any(|w| w == needle);
    assert_eq!(seed.len(), 32);
    assert!(!contains(seed), "the secret key's seed is in the image");
    assert!(!contains(&pem[..40]), "the key file's text is in the image");
    // And the image is signed by that key.
    let o = env.thaw(&[
        "verify",
        "--trust",
        env.pubkey.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn embedded_lua_interpreter_answers_after_restore_like_a_cold_start() {
    let env = Env::new();
    let expr = "fib(80) + lookup(777) + total";
    let cold = command(&bin("lua-warm"))
        .args(["-", expr])
        .output()
        .unwrap();
    assert!(cold.status.success(), "{}", text(&cold));
    let answer = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.split(" = ")
            .nth(1)
            .map(|a| a.trim().to_owned())
            .unwrap_or(out)
    };
    let img = env.checkpoint("lua-warm", "lua.thaw", &[]);
    for _ in 0..3 {
        let o = env.restore(&img, &[], &[expr]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(answer(&o), answer(&cold), "{}", text(&o));
    }
    let o = env.restore(&img, &[], &["nosuchfunction()"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("error:"),
        "{}",
        text(&o)
    );
}

/// A process that ran in a chroot names its files under that root: restored by a launcher with
/// another root it is refused, naming the roots; restored inside the same chroot it runs.
#[test]
fn a_process_from_a_chroot_is_restored_only_under_its_root() {
    if !is_root() {
        eprintln!("skipped: needs root to make a chroot (CI runs as root)");
        return;
    }
    let env = Env::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = env.path("cwd");
    std::fs::create_dir(&dir).unwrap();
    // A jail on a tmpfs of its own (another root device), in a mount namespace of the test's:
    // the system directories, /tmp (the scratch directory) and the repository bound in.
    let script = r#"
        set -e
        repo=$1; thaw=$2; prog=$3; img=$4; key=$5; pub=$6; dir=$7
        jail=$(dirname "$img")/jail
        mkdir "$jail"
        mount -t tmpfs jail "$jail"
        for d in usr bin sbin lib lib64 lib32 libx32 etc proc dev tmp; do
            if [ -L "/$d" ]; then cp -P "/$d" "$jail/$d"
            elif [ -d "/$d" ]; then mkdir -p "$jail/$d"; mount --rbind "/$d" "$jail/$d"; fi
        done
        mkdir -p "$jail$repo"; mount --rbind "$repo" "$jail$repo"
        chroot "$jail" "$prog" "$img" "$key" "$dir" > /dev/null
        set +e
        said=$("$thaw" run --trust "$pub" "$img" -- one 'two words' 2>&1 >/dev/null)
        code=$?
        set -e
        echo "outside: $said exit $code"
        chroot "$jail" "$thaw" run --trust "$pub" "$img" -- one 'two words' | grep -c '^ok' | sed 's/^/inside ok: /'
    "#;
    let o = command(Path::new("unshare"))
        .args(["-m", "sh", "-c", script, "jail"])
        .arg(repo)
        .arg(bin("thaw"))
        .arg(bin("zdtm-process"))
        .arg(env.path("c.thaw"))
        .arg(&env.key)
        .arg(&env.pubkey)
        .arg(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("root directory was device") && out.contains("exit 67"),
        "outside the chroot: {out}"
    );
    let inside: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("inside ok: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(inside >= 10, "inside the chroot: {out}");
}

/// A process that ran with a mount of its own (a sandbox: systemd's PrivateTmp= mounts a tmpfs
/// on /tmp) is restored where that mount is, and refused where it is not: its temporary files
/// would go elsewhere. A new sandbox of the same shape (a tmpfs there again) is the same.
#[test]
fn a_process_with_mounts_of_its_own_is_refused_outside_them() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.path("m.thaw");
    let private = env.path("private-tmp");
    std::fs::create_dir(&private).unwrap();
    let script = r#"
        mount -t tmpfs none "$6"
        "$1" "$2" "$3" >/dev/null || { echo "first life failed"; exit 1; }
        "$4" run --trust "$5" "$2" | grep -c '^ok' | sed 's/^/inside ok: /'
        set +e
        said=$(unshare -m sh -c 'umount "$3" && "$0" run --trust "$1" "$2"' "$4" "$5" "$2" "$6" 2>&1 >/dev/null)
        echo "without it: $said exit $?"
    "#;
    let o = command(Path::new("unshare"))
        .args(["-m", "sh", "-c", script, "sandbox"])
        .arg(bin("zdtm-signals"))
        .arg(&img)
        .arg(&env.key)
        .arg(bin("thaw"))
        .arg(&env.pubkey)
        .arg(&private)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    let inside: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("inside ok: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(inside >= 4, "inside: {out}");
    let mount = format!("{} (tmpfs)", private.display());
    assert!(
        out.contains("mounts of its own") && out.contains(&mount) && out.contains("exit 67"),
        "without the mount: {out}"
    );
    // A new mount namespace with a tmpfs there again: the same sandbox.
    let again = r#"mount -t tmpfs none "$3" && "$0" run --trust "$1" "$2""#;
    let o = command(Path::new("unshare"))
        .args(["-m", "sh", "-c", again])
        .arg(bin("thaw"))
        .arg(&env.pubkey)
        .arg(&img)
        .arg(&private)
        .output()
        .unwrap();
    let oks = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("ok"))
        .count();
    assert!(
        o.status.success() && oks >= 4,
        "a sandbox like it: {}",
        text(&o)
    );
}

/// A process that ran in a network namespace and hostname of its own (a sandbox) is restored
/// inside them, and refused outside on the same boot: it would reach other networks and see
/// another hostname. A new namespace with the same contents (only `lo`, as systemd's
/// PrivateNetwork= makes at each start) is the same environment.
#[test]
fn a_process_from_its_own_network_namespace_is_refused_outside_it() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.path("n.thaw");
    let script = r#"
        echo thaw-sandbox > /proc/sys/kernel/hostname
        "$1" "$2" "$3" >/dev/null || { echo "first life failed"; exit 1; }
        "$4" run --trust "$5" "$2" | grep -c '^ok' | sed 's/^/inside ok: /'
        unshare -u sh -c 'echo other > /proc/sys/kernel/hostname; "$0" run --trust "$1" "$2"' "$4" "$5" "$2" >/dev/null 2>&1
        echo "another hostname: exit $?"
        unshare -n sh -c 'echo thaw-sandbox > /proc/sys/kernel/hostname; "$0" run --trust "$1" "$2"' "$4" "$5" "$2" | grep -c '^ok' | sed 's/^/same contents ok: /'
    "#;
    let o = command(Path::new("unshare"))
        .args(["-n", "-u", "sh", "-c", script, "sandbox"])
        .arg(bin("zdtm-signals"))
        .arg(&img)
        .arg(&env.key)
        .arg(bin("thaw"))
        .arg(&env.pubkey)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    let count = |prefix: &str| -> usize {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("inside ok: ") >= 4, "inside: {out}");
    assert!(out.contains("another hostname: exit 67"), "{out}");
    assert!(
        count("same contents ok: ") >= 4,
        "a new namespace like it: {out}"
    );
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the process ran in another network namespace")
            && err.contains("interfaces \"lo\")"),
        "{err}"
    );
}

/// A limit on open files below the descriptors the process held (`ulimit -n`): refused before
/// anything is opened, saying what limit it takes (it failed at the thousandth file reopened,
/// "Too many open files"); with that limit, restored.
#[test]
fn a_limit_on_open_files_below_the_process_descriptors_says_what_it_takes() {
    let env = Env::new();
    let img = env.path("n.thaw");
    let o = command(Path::new("bash"))
        .args(["-c", "exec 200</dev/null; exec \"$0\" \"$1\" \"$2\""])
        .arg(env.program("zdtm-waiter"))
        .arg(&img)
        .arg(&env.key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let restore = |limit: &str| {
        command(Path::new("prlimit"))
            .arg(format!("--nofile={limit}:{limit}"))
            .arg(bin("thaw"))
            .args(env.restore_cmd(&img, &[], &[]).get_args())
            .output()
            .unwrap()
    };
    let o = restore("150");
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let needed = err
        .split_once(
            "up to number 200, and your limit on open files (RLIMIT_NOFILE) is 150: raise it to ",
        )
        .and_then(|(_, rest)| rest.split_once(" or more (ulimit -n "))
        .map(|(n, _)| n.to_owned())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(needed.parse::<u32>().is_ok_and(|n| n > 200), "{err}");
    let o = restore(&needed);
    assert!(o.status.success(), "{}", text(&o));
}

/// A limit on file size below the image's (RLIMIT_FSIZE, `ulimit -f`): the write fails and says
/// so, rather than SIGXFSZ killing the process that checkpoints (it goes on) or the launcher
/// that signs; no image is left behind, and the image signed before stays as it was.
#[test]
fn a_limit_on_file_size_fails_the_write_and_kills_nothing() {
    let env = Env::new();
    let img = env.path("f.thaw");
    let o = command(Path::new("prlimit"))
        .arg("--fsize=65536")
        .arg(env.program("zdtm-shmem"))
        .arg(&img)
        .arg(&env.key)
        .arg("must-fail")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("cannot write the image (the limit on file size, RLIMIT_FSIZE, is lower than its size: raise it, e.g. ulimit -f unlimited) {}", img.display())),
        "{out}"
    );
    assert!(!img.exists());
    let img = env.checkpoint("zdtm-waiter", "w.thaw", &[]);
    let before = std::fs::read(&img).unwrap();
    let o = command(Path::new("prlimit"))
        .arg("--fsize=65536")
        .arg(bin("thaw"))
        .args([
            "sign",
            "--key",
            env.key.to_str().unwrap(),
            img.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.code().is_some_and(|c| c != 0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("RLIMIT_FSIZE"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

/// An image whose PID is at or above the PID namespace's limit (kernel.pid_max, lower here than
/// where it was taken): auto mode restores it in a namespace of its own, and host mode is
/// refused, naming the limit (clone3 would fail with EINVAL).
#[test]
fn a_pid_above_pid_max_is_restored_in_a_namespace() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-waiter", "p.thaw", &[]);
    let pid = env.manifest(&img).process.pid;
    if pid <= 301 {
        // (kernel.pid_max cannot be set below 301.)
        return;
    }
    let run = |mode: &str| {
        let script = format!("echo {pid} > /proc/sys/kernel/pid_max && exec \"$@\"",);
        let mut c = command(Path::new("unshare"));
        c.args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script, "sh"])
            .arg(bin("thaw"))
            .args(["run", "--pid-mode", mode, "--trust"])
            .arg(&env.pubkey)
            .arg(&img)
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    let o = run("host");
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "id {pid} is above this PID namespace's limit (kernel.pid_max = {pid})"
        )),
        "{}",
        text(&o)
    );
    let o = run("auto");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("ready {pid}")),
        "{}",
        text(&o)
    );
}
