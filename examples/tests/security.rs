//! Non-root restore in the three deployments, the credential policy, and the privileged launcher
//! as a non-confused deputy. Runs as root (CI does) and drops to user A (nobody, 65534) and user B
//! (12345) for real; the setcap deployment uses a copy of `thaw` with
//! `setcap cap_checkpoint_restore+ep`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const A: u32 = 65534;
const B: u32 = 12345;
const REFUSED: i32 = 67;
const IO: i32 = 74;
const CORRUPT: i32 = 65;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Root,
    User(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Deployment {
    Root,
    Setcap,
    Namespace,
}

struct Lab {
    env: Env,
    zdtm: PathBuf,
    capped: PathBuf,
    plain: PathBuf,
    cwd: PathBuf,
    _system_key: SystemKey,
}

/// A key in /etc/thaw/trusted/ for the duration of a test.
struct SystemKey(PathBuf);

impl Drop for SystemKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Lab {
    fn new() -> Lab {
        let env = Env::new();
        let d = env.dir.path().to_owned();
        let copy = |name: &str, to: &str| {
            let p = d.join(to);
            copy_program(&bin(name), &p, 0o755);
            p
        };
        let zdtm = copy("zdtm-process", "zdtm-process");
        let plain = copy("thaw", "thaw");
        let capped = copy("thaw", "thaw-cap");
        let st = Command::new("setcap")
            .arg("cap_checkpoint_restore+ep")
            .arg(&capped)
            .status()
            .unwrap();
        assert!(st.success(), "setcap");
        let cwd = d.join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        chmod(&cwd, 0o777);
        std::fs::create_dir_all("/etc/thaw/trusted").unwrap();
        // One name per lab: tests of one process run at once, each with its own key.
        let unique = d.file_name().unwrap().to_string_lossy().into_owned();
        let sys = PathBuf::from(format!(
            "/etc/thaw/trusted/test-security-{}-{unique}.pub",
            std::process::id()
        ));
        // Under another name, then renamed: another test's launcher reads every *.pub there.
        let part = sys.with_extension("part");
        std::fs::copy(&env.pubkey, &part).unwrap();
        chmod(&part, 0o644);
        std::fs::rename(&part, &sys).unwrap();
        Lab {
            env,
            zdtm,
            capped,
            plain,
            cwd,
            _system_key: SystemKey(sys),
        }
    }

    /// A copy of the launcher named `name` given the file capabilities `caps` (setcap's form).
    fn launcher_with(&self, name: &str, caps: &str) -> PathBuf {
        // A copy, never a link: the capability belongs to the file.
        let p = self.env.path(name);
        copy_program(&bin("thaw"), &p, 0o755);
        let st = Command::new("setcap").arg(caps).arg(&p).status().unwrap();
        assert!(st.success(), "setcap {caps}");
        p
    }

    fn user_dir(&self, uid: u32) -> PathBuf {
        let dir = self.env.path(&format!("u{uid}"));
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
            let key = dir.join("k.key");
            std::fs::copy(&self.env.key, &key).unwrap();
            std::os::unix::fs::chown(&key, Some(uid), Some(uid)).unwrap();
        }
        dir
    }

    /// Checkpoints zdtm-process as `who` (optionally a set-uid-root copy run by `who`); the image is
    /// made readable by everyone so that the policy, not file permissions, decides.
    fn image(&self, who: Caller, setuid: bool, name: &str) -> PathBuf {
        let (dir, prog) = match who {
            Caller::Root => (self.env.dir.path().to_owned(), self.zdtm.clone()),
            Caller::User(uid) => (self.user_dir(uid), self.zdtm.clone()),
        };
        let prog = if setuid {
            let p = self.env.path("zdtm-process-suid");
            if !p.exists() {
                copy_program(&self.zdtm, &p, 0o4755);
            }
            p
        } else {
            prog
        };
        let img = dir.join(name);
        let mut c = command(&prog);
        c.arg(&img).arg(dir.join("k.key")).arg(&self.cwd);
        if let Caller::User(uid) = who {
            c = as_user(c, uid, uid);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "checkpoint as {who:?}: {}", text(&o));
        chmod(&img, 0o644);
        img
    }

    fn restore(&self, d: Deployment, who: Caller, img: &Path, extra: &[&str]) -> Output {
        let (bin, mode) = match d {
            Deployment::Root => (&self.plain, "host"),
            Deployment::Setcap => (&self.capped, "host"),
            Deployment::Namespace => (&self.plain, "ns"),
        };
        let mut c = command(bin);
        c.env("ZDTM_ENV", "from the launcher");
        c.args(["run", "--pid-mode", mode]);
        if d != Deployment::Setcap {
            c.arg("--trust").arg(&self.env.pubkey);
        }
        c.args(extra).arg(img).args(["--", "one", "two words"]);
        if let Caller::User(uid) = who {
            c = as_user(c, uid, uid);
        }
        c.output().unwrap()
    }
}

fn restored_as(o: &Output, uid: u32) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l == "ok pid"), "{}", text(o));
    let want = format!("uids {uid} {uid} {uid} {uid}");
    assert!(
        out.lines().any(|l| l == want),
        "expected {want}: {}",
        text(o)
    );
}

fn refused(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "expected {needle:?}: {}", text(o));
    assert!(o.stdout.is_empty(), "nothing may run: {}", text(o));
}

/// The matrix of docs/security.md: caller × image × deployment.
#[test]
fn credential_matrix() {
    if !is_root() {
        eprintln!("skipped: needs root to create users' images and setcap (CI runs as root)");
        return;
    }
    let lab = Lab::new();
    let root_img = lab.image(Caller::Root, false, "root.thaw");
    let a_img = lab.image(Caller::User(A), false, "a.thaw");
    let suid_img = lab.image(Caller::User(A), true, "suid.thaw");
    use Deployment::*;

    // Deployment root: the caller is root.
    let o = lab.restore(Root, Caller::Root, &root_img, &[]);
    assert_all_ok(
        &o,
        &[
            "pid",
            "capabilities",
            "exe",
            "args",
            "hooks",
            "environment",
            "no_new_privs",
            "dumpable",
        ],
    );
    restored_as(&o, 0);
    refused(
        &lab.restore(Root, Caller::Root, &a_img, &[]),
        "image was taken as uid 65534, gid 65534; you are uid 0, gid 0",
    );
    restored_as(
        &lab.restore(Root, Caller::Root, &a_img, &["--as-caller"]),
        0,
    );
    refused(&lab.restore(Root, Caller::Root, &suid_img, &[]), "set-uid");
    refused(
        &lab.restore(Root, Caller::Root, &suid_img, &["--as-caller"]),
        "set-uid",
    );

    // Deployments setcap and namespace: callers A and B.
    for d in [Setcap, Namespace] {
        let o = lab.restore(d, Caller::User(A), &a_img, &[]);
        assert_all_ok(
            &o,
            &["pid", "capabilities", "exe", "cmdline", "cwd", "args"],
        );
        restored_as(&o, A);
        refused(
            &lab.restore(d, Caller::User(B), &a_img, &[]),
            "image was taken as uid 65534, gid 65534; you are uid 12345, gid 12345",
        );
        restored_as(
            &lab.restore(d, Caller::User(B), &a_img, &["--as-caller"]),
            B,
        );
        refused(
            &lab.restore(d, Caller::User(A), &root_img, &[]),
            "image was taken as uid 0, gid 0; you are uid 65534",
        );
        // As the caller: A's ids, and none of root's capabilities.
        let o = lab.restore(d, Caller::User(A), &root_img, &["--as-caller"]);
        restored_as(&o, A);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("CapEff: 0000000000000000"),
            "{}",
            text(&o)
        );
        for who in [Caller::User(A), Caller::User(B)] {
            refused(&lab.restore(d, who, &suid_img, &[]), "set-uid");
            refused(&lab.restore(d, who, &suid_img, &["--as-caller"]), "set-uid");
        }
    }

    // File permissions still rule: A cannot restore an image only root may read, privileged
    // launcher or not.
    chmod(&root_img, 0o600);
    for d in [Setcap, Namespace] {
        let o = lab.restore(d, Caller::User(A), &root_img, &["--as-caller"]);
        assert_eq!(o.status.code(), Some(IO), "{}", text(&o));
    }
}

/// The setcap deployment: original PID in the caller's namespace, the capability in no restored
/// thread, /proc/self/exe set.
#[test]
fn setcap_launcher_restores_threads_without_its_capability() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let lab = Lab::new();
    let dir = lab.user_dir(A);
    let prog = lab.env.path("zdtm-threads");
    if std::fs::hard_link(bin("zdtm-threads"), &prog).is_err() {
        copy_program(&bin("zdtm-threads"), &prog, 0o755);
    }
    let img = dir.join("t.thaw");
    let o = as_user(command(&prog), A, A)
        .arg(&img)
        .arg(dir.join("k.key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // In the caller's PID namespace, and in one of its own (where the launcher, not dumpable
    // as an elevated program, once could not write its own maps).
    for mode in ["host", "ns"] {
        let o = as_user(command(&lab.capped), A, A)
            .args(["run", "--pid-mode", mode])
            .arg(&img)
            .args(["--", "30"])
            .output()
            .unwrap();
        assert_all_ok(
            &o,
            &[
                "capabilities of every thread",
                "main thread",
                "pool ran the new work",
                "worker-3 tid, name and thread-locals",
            ],
        );
    }
    // The privileged launcher refuses unsigned images, development option or not.
    let unsigned = dir.join("u.thaw");
    let o = as_user(command(&prog), A, A)
        .arg(&unsigned)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = as_user(command(&lab.capped), A, A)
        .args(["run", "--insecure-allow-unsigned"])
        .arg(&unsigned)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("elevated privileges"),
        "{}",
        text(&o)
    );
    // Nor does it fetch images from a registry (it reads no credentials or cache of the caller's).
    let o = as_user(command(&lab.capped), A, A)
        .args(["run", "127.0.0.1:1/team/app:v1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not fetch images"),
        "{}",
        text(&o)
    );
    // The privileged launcher ignores --trust and the environment: an image signed by a key that is
    // only in THAW_TRUST_DIR is refused.
    let stranger = lab.env.path("stranger");
    assert!(lab
        .env
        .thaw(&["keygen", stranger.to_str().unwrap()])
        .status
        .success());
    let o = lab.env.thaw(&[
        "sign",
        "--key",
        &format!("{}.key", stranger.display()),
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    chmod(&img, 0o644);
    std::fs::copy(
        format!("{}.pub", stranger.display()),
        lab.env.path("stranger-trusted.pub"),
    )
    .unwrap();
    let o = as_user(command(&lab.capped), A, A)
        .env("THAW_TRUST_DIR", lab.env.dir.path())
        .args(["run", "--trust"])
        .arg(format!("{}.pub", stranger.display()))
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("searched: /etc/thaw/trusted/*.pub"),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty());
    // The same image through the unprivileged launcher, which honours --trust: restored (ns mode).
    let o = as_user(command(&lab.plain), A, A)
        .args(["run", "--trust"])
        .arg(format!("{}.pub", stranger.display()))
        .arg(&img)
        .args(["--", "5"])
        .output()
        .unwrap();
    assert_all_ok(&o, &["main thread", "capabilities of every thread"]);
}

/// What is verified is what is mapped: a change to the image file after verification does not
/// reach the process restored from the private copy, and does reach one restored straight from
/// the file (which is why the copy is taken whenever anyone but the caller could write the file).
#[test]
fn a_change_after_verification_cannot_reach_the_process() {
    let env = Env::new();
    let data = env.path("mapped.dat");
    let img = env.checkpoint("zdtm-memory", "m.thaw", &[data.to_str().unwrap()]);
    // A word of the heap pattern zdtm-memory checks: pattern(1000, 1).
    let word = (1000u64.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1).to_le_bytes();
    let original = std::fs::read(&img).unwrap();
    let at = original
        .windows(8)
        .position(|w| w == word)
        .expect("heap pattern in the image");

    // The private copy keeps the verified bytes; reading up front from the file itself (the
    // caller's own file, documented) sees the change; lazy filling verifies each chunk as it
    // copies it, so the change makes the restore fail instead (root only: lazy needs
    // CAP_SYS_PTRACE).
    let cases: [(&str, &[&str]); 3] = [
        ("private", &["--private-copy"]),
        ("eager", &["--eager"]),
        ("lazy", &[]),
    ];
    for (case, opts) in cases {
        std::fs::write(&img, &original).unwrap();
        let fifo = env.path(&format!("pause-{case}"));
        let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; creates a FIFO.
        assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
        let mut c = env.restore_cmd(&img, opts, &[]);
        c.env("THAW_TEST_PAUSE_AFTER_VERIFY", &fifo)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        // Opening the FIFO for writing waits until the launcher, done verifying, opens it.
        let mut pause = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut bytes = original.clone();
        bytes[at] ^= 0xff;
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            f.seek(std::io::SeekFrom::Start(at as u64)).unwrap();
            f.write_all(&bytes[at..at + 1]).unwrap();
        }
        use std::io::Write;
        writeln!(pause).unwrap();
        drop(pause);
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        match case {
            "private" => assert_all_ok(&o, &["heap", "stack", "globals"]),
            "lazy" if is_root() => {
                assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
                assert!(!out.contains("ok heap"), "{}", text(&o));
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains("the restored process was killed"),
                    "{}",
                    text(&o)
                );
            }
            _ => assert!(
                out.contains("FAIL heap"),
                "the direct path should see the change: {}",
                text(&o)
            ),
        }
    }
}

/// `c` runs with the limit on open files `cur`/`max`.
fn with_nofile(c: &mut Command, cur: u64, max: u64) {
    // SAFETY: setrlimit in the child before exec; async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(c, move || {
            let lim = libc::rlimit {
                rlim_cur: cur,
                rlim_max: max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Never elevate: a hard limit above the caller's is lowered to the caller's, and said.
#[test]
fn rlimits_above_the_callers_are_lowered_and_reported() {
    let env = Env::new();
    let cwd = tempfile::tempdir().unwrap();
    let img = env.checkpoint("zdtm-process", "p.thaw", &[cwd.path().to_str().unwrap()]);
    let mut c = env.restore_cmd(&img, &[], &["one", "two words"]);
    with_nofile(&mut c, 1024, 2048);
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("RLIMIT_NOFILE lowered from 4096 to your hard limit 2048"),
        "{}",
        text(&o)
    );
    assert!(out.contains("FAIL rlimit nofile: 777/2048"), "{}", text(&o));
    assert!(out.lines().any(|l| l == "ok pid"), "{}", text(&o));
}

/// A limit on open files too low for the launcher's descriptors (they wait above the process's
/// own) is a refusal that names the limit and what to raise it to, not a failed `dup`.
#[test]
fn a_limit_on_open_files_too_low_for_the_restore_is_named() {
    let env = Env::new();
    let cwd = tempfile::tempdir().unwrap();
    let img = env.checkpoint("zdtm-process", "p.thaw", &[cwd.path().to_str().unwrap()]);
    let mut c = env.restore_cmd(&img, &[], &[]);
    with_nofile(&mut c, 40, 40);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        err.contains("your limit on open files (RLIMIT_NOFILE) is 40: raise it to ")
            && err.contains("(ulimit -n "),
        "{}",
        text(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("ok pid"),
        "{}",
        text(&o)
    );
}

/// A process that ran as root inside a user namespace that maps root onto an unprivileged user
/// (`unshare -U -r`, run by nobody): its uid 0 and capabilities were nobody's. Root restoring
/// the image would have given it real root (a probe opened /etc/shadow); refused in every
/// deployment, naming the maps. Restored inside a namespace mapped the same way (nobody's
/// `unshare -U -r`, ns mode) it runs, as root there.
#[test]
fn fake_root_of_a_user_namespace_never_becomes_real_root() {
    let lab = Lab::new();
    let dir = lab.user_dir(A);
    let img = dir.join("userns.thaw");
    let mut c = as_user(Command::new("unshare"), A, A);
    c.args(["-U", "-r"])
        .arg(&lab.zdtm)
        .arg(&img)
        .arg(dir.join("k.key"))
        .arg(&lab.cwd);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "checkpoint in a user namespace: {}",
        text(&o)
    );
    chmod(&img, 0o644);
    for d in [Deployment::Root, Deployment::Namespace] {
        let o = lab.restore(d, Caller::Root, &img, &[]);
        refused(
            &o,
            "the process ran in a user namespace that maps its ids onto others",
        );
        refused(&o, "uid_map 0 65534 1");
    }
    let o = lab.restore(Deployment::Setcap, Caller::User(A), &img, &[]);
    refused(&o, "a user namespace that maps its ids onto others");
    // In a namespace mapped the same way: restored, as root there.
    let mut c = as_user(Command::new("unshare"), A, A);
    c.env("ZDTM_ENV", "from the launcher")
        .args(["-U", "-r"])
        .arg(&lab.plain)
        .args(["run", "--pid-mode", "ns", "--trust"])
        .arg(&lab.env.pubkey)
        .arg(&img)
        .args(["--", "one", "two words"]);
    let o = c.output().unwrap();
    restored_as(&o, 0);
    // Nested inside it, a namespace mapping 0 onto 0 looks like the host one level up; real
    // root reads as nobody there. Root restoring that image still gets no root.
    let nested = dir.join("nested.thaw");
    let mut c = as_user(Command::new("unshare"), A, A);
    // Without CAP_SYS_RESOURCE, which root lacks on some machines (these VMs): the image's
    // capabilities must not be what refuses it.
    c.args(["-U", "-r", "unshare", "-U", "--map-user=0", "--map-group=0"])
        .args(["setpriv", "--bounding-set=-sys_resource", "--"])
        .arg(&lab.zdtm)
        .arg(&nested)
        .arg(dir.join("k.key"))
        .arg(&lab.cwd);
    let o = c.output().unwrap();
    assert!(o.status.success(), "checkpoint nested: {}", text(&o));
    chmod(&nested, 0o644);
    for d in [Deployment::Root, Deployment::Namespace] {
        let o = lab.restore(d, Caller::Root, &nested, &[]);
        refused(&o, "sees real root as uid 65534");
    }
    // Root as a login shell has it, with the group 0 the image holds: refused all the same.
    let o = Command::new("setpriv")
        .args(["--groups=0", "--"])
        .arg(&lab.plain)
        .args(["run", "--trust"])
        .arg(&lab.env.pubkey)
        .arg(&nested)
        .args(["--", "one", "two words"])
        .output()
        .unwrap();
    refused(&o, "sees real root as uid 65534");
    // Root's own `unshare -U -r` maps 0 onto 0 too, but real root is root there.
    let mut c = Command::new("unshare");
    c.args(["-U", "-r"])
        .arg(&lab.plain)
        .args(["run", "--pid-mode", "ns", "--trust"])
        .arg(&lab.env.pubkey)
        .arg(&nested)
        .args(["--", "one", "two words"]);
    let o = c.output().unwrap();
    refused(&o, "sees real root as uid 65534");
    // Root's own namespace mapping 0 onto 0 (systemd's PrivateUsers=, `unshare -U -r` by
    // root): its capabilities were that namespace's only. Into the initial namespace: refused
    // (they would be real ones); with --pid-mode ns, which gives it such a namespace: restored.
    let own = lab.env.path("own-userns.thaw");
    let o = Command::new("unshare")
        .args(["-U", "-r", "setpriv", "--bounding-set=-sys_resource", "--"])
        .arg(&lab.zdtm)
        .arg(&own)
        .arg(&lab.env.key)
        .arg(&lab.cwd)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "checkpoint in root's namespace: {}",
        text(&o)
    );
    let o = lab.restore(Deployment::Root, Caller::Root, &own, &[]);
    refused(&o, "restore it with --pid-mode ns");
    let o = lab.restore(Deployment::Namespace, Caller::Root, &own, &[]);
    restored_as(&o, 0);
}

/// A signed image that names paths by way of another user's process (`/proc/PID/cwd/...` of a
/// root process whose working directory the caller may not enter), restored by a setcap launcher
/// that may follow forks (CAP_SYS_PTRACE, which lets /proc links of any process be followed):
/// the launcher opens what an image names, and the restorer enters its working directory, with
/// the caller's permissions alone, so nothing behind that directory reaches the process. A
/// /proc file of the process's own may only be one of the names a checkpoint writes.
#[test]
fn paths_by_way_of_another_users_process_reach_nothing_of_it() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let lab = Lab::new();
    let ptrace = lab.launcher_with(
        "thaw-cap-ptrace",
        "cap_checkpoint_restore,cap_sys_ptrace+ep",
    );
    // A directory open to all inside root's private one, and a root process working in it (it
    // lives until its input closes): through its /proc link, the private one is stepped over.
    let private = lab.env.path("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let private = private.join("open");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o755);
    let secret = private.join("secret");
    std::fs::write(&secret, "the secret\n").unwrap();
    chmod(&secret, 0o644);
    let mut holder = Command::new("cat")
        .current_dir(&private)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let through = format!("/proc/{}/cwd", holder.id());
    let key = thaw_signing::SecretKey::load(&lab.env.key).unwrap();
    let restore = |img: &Path| {
        chmod(img, 0o644);
        as_user(command(&ptrace), A, A)
            .args(["run", "--pid-mode", "host"])
            .arg(img)
            .output()
            .unwrap()
    };
    // Its working directory.
    let img = lab.image(Caller::User(A), false, "cwd.thaw");
    thaw::image::rewrite_manifest(&img, Some(&key), |m| m.process.cwd = through.clone()).unwrap();
    // (Looked at by the launcher first, with the caller's rights: refused before the process
    // exists; the restorer enters it with the image's.)
    let o = restore(&img);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "cannot enter the process's working directory {through}: Permission denied"
        )),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty(), "nothing ran: {}", text(&o));
    // An image of the process holding one descriptor more, of `kind`.
    let holding = |name: &str, kind: thaw::state::files::FdKind| {
        let img = lab.image(Caller::User(A), false, name);
        thaw::image::rewrite_manifest(&img, Some(&key), |m| {
            m.files.push(thaw::state::files::FdEntry {
                fd: 40,
                kind,
                ..Default::default()
            })
        })
        .unwrap();
        img
    };
    // A file it held, with the secret's own identity.
    let id = thaw::state::FileId::of(&std::fs::metadata(&secret).unwrap());
    let img = holding(
        "file.thaw",
        thaw::state::files::FdKind::Regular {
            path: format!("{through}/secret"),
            pos: 0,
            id,
        },
    );
    let o = restore(&img);
    assert_eq!(o.status.code(), Some(REFUSED), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty(), "nothing ran: {}", text(&o));
    // A /proc file named as the process's own, but another process's.
    let img = holding(
        "proc.thaw",
        thaw::state::files::FdKind::ProcSelf {
            name: format!("../{}/cwd/secret", holder.id()),
            pos: 0,
        },
    );
    let o = restore(&img);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/proc file"),
        "{}",
        text(&o)
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

/// A launcher given a capability to grant what only it may (CAP_SYS_NICE, for a nice value
/// below the caller's) does not grant it for its caller: what the caller may is what exec
/// carried over to it, not the launcher's own file capabilities.
#[test]
fn a_launchers_own_capabilities_grant_the_process_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let lab = Lab::new();
    let nice = lab.launcher_with("thaw-cap-nice", "cap_checkpoint_restore,cap_sys_nice+ep");
    let img = lab.image(Caller::User(A), false, "n.thaw");
    // The caller 10 above this test: the image's threads (at 3 and 7) may not be below it.
    let o = as_user(Command::new("nice"), A, A)
        .args(["-n", "10"])
        .arg(&nice)
        .args(["run", "--pid-mode", "host"])
        .arg(&img)
        .output()
        .unwrap();
    // (10 above this test's own, at most 19.)
    // SAFETY: getpriority only reads this process's nice value.
    let caller = (unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } + 10).min(19);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("raised to yours, {caller}")),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok pid"),
        "{}",
        text(&o)
    );
}
