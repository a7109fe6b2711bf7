//! Fault injection: the checkpoint or the launcher killed at random moments. Whatever happens, a
//! restored process never runs on memory that was not filled with the image's verified bytes (it
//! dies with its launcher), and a killed checkpoint leaves nothing in the destination
//! directory. The number of trials is THAW_FAULT_TRIALS (default 30; scripts/fault-trials runs
//! hundreds and prints the figures).

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn trials() -> u64 {
    std::env::var("THAW_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// Starts `cmd` with its stdout captured, sends it `sig` after `delay` (fault injection, not
/// synchronisation: any moment must be safe), and returns how it ended and everything written
/// to that stdout (end of file: every holder of the pipe, the restored process too, is gone).
fn signalled(
    mut cmd: std::process::Command,
    delay: Duration,
    sig: i32,
) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status, out)
}

/// A spread of delays over `0..max_us` microseconds, the same every run.
fn delay(trial: u64, max_us: u64) -> Duration {
    Duration::from_micros(trial.wrapping_mul(7919) % max_us)
}

#[test]
fn a_launcher_killed_while_filling_memory_takes_the_process_with_it() {
    if !is_root() {
        eprintln!("skipped: lazy memory needs root");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-pattern", "p.thaw", &["128"]);
    for mode in ["host", "ns"] {
        let (mut died, mut finished) = (0, 0);
        for trial in 0..trials() {
            // The restored process holds the pipe's write end as its stdout: the output is
            // complete once it is gone, whether it finished its check or died with the launcher.
            let (_, out) = signalled(
                env.restore_cmd(&img, &["--pid-mode", mode], &[]),
                delay(trial, 60_000),
                libc::SIGKILL,
            );
            assert!(
                !out.contains("FAIL"),
                "{mode} mode, trial {trial}: the process ran on unfilled memory: {out}"
            );
            if out.contains("ok pattern") {
                finished += 1;
            } else {
                died += 1;
            }
        }
        eprintln!("launcher killed during lazy filling ({mode} mode): {} trials, {died} processes died with it, {finished} had all their memory and finished, 0 ran on unfilled memory", trials());
    }
}

/// A restore whose launcher kills itself as soon as the process exists (THAW_TEST_DIE_AFTER_CLONE),
/// started again while the image's PID is still taken: the last trial's process, orphaned, is
/// reaped by init in its own time. Returns the pipe the restored process would write to.
fn killed_after_clone(env: &Env, img: &std::path::Path, mode: &str) -> std::process::ChildStdout {
    for _ in 0..1000 {
        let mut cmd = env.restore_cmd(img, &["--pid-mode", mode], &[]);
        cmd.env("THAW_TEST_DIE_AFTER_CLONE", "1");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = child.wait().unwrap();
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL) {
            return child.stdout.take().unwrap();
        }
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(err.contains("is in use"), "{mode} mode: {status}: {err}");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{mode} mode: the image's PID stayed taken");
}

#[test]
fn a_launcher_killed_as_the_process_is_created_leaves_nothing_waiting() {
    if !is_root() {
        eprintln!("skipped: lazy memory needs root");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-pattern", "p.thaw", &["16"]);
    // Half the usual trials: in host mode each waits until the last one's orphan is reaped by
    // init and its PID is free again (about a second on these machines).
    for mode in ["host", "ns"] {
        for trial in 0..trials().div_ceil(2) {
            let mut stdout = killed_after_clone(&env, &img, mode);
            // The restorer holds the pipe's write end: end of file once nothing of it is left.
            // A restorer that took its own copy of the launcher's socket end for the launcher
            // would wait there for ever; a bound turns that into a failure rather than a hang.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = stdout.read_to_string(&mut out);
                let _ = tx.send(out);
            });
            let out = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
                panic!("{mode} mode, trial {trial}: the restorer outlived its killed launcher and still holds its caller's pipe")
            });
            assert_eq!(
                out, "",
                "{mode} mode, trial {trial}: the process ran without its launcher"
            );
        }
    }
}

#[test]
fn a_checkpoint_killed_midway_leaves_nothing_behind() {
    let env = Env::new();
    let (mut complete, mut nothing) = (0, 0);
    for trial in 0..trials() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("k.thaw");
        let mut app = command(&bin("zdtm-pattern"))
            .arg(&img)
            .arg(&env.key)
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Fault injection: somewhere in filling the heap, freezing, or writing the image.
        std::thread::sleep(delay(trial, 400_000));
        // SAFETY: SIGKILL to our own child.
        unsafe { libc::kill(app.id() as i32, libc::SIGKILL) };
        app.wait().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        match names.as_slice() {
            [] => nothing += 1,
            [one] if one == "k.thaw" => {
                let v = command(&bin("thaw"))
                    .args(["verify", "--trust"])
                    .arg(&env.pubkey)
                    .arg(&img)
                    .output()
                    .unwrap();
                assert!(
                    v.status.success(),
                    "trial {trial}: a complete image must verify: {}",
                    text(&v)
                );
                complete += 1;
            }
            other => panic!("trial {trial}: left behind {other:?}"),
        }
    }
    eprintln!("checkpoint killed midway: {} trials, {nothing} left nothing, {complete} left a complete image, 0 left anything else", trials());
}

#[test]
fn sigterm_to_the_launcher_at_any_moment_ends_the_restore_cleanly() {
    // Before the process exists the launcher ends by the signal (nothing to forward, nothing
    // left behind); once it exists the signal is forwarded and the launcher exits with the
    // process's status. Either way no process of the image remains.
    let env = Env::new();
    let img = env.checkpoint("zdtm-pattern", "t.thaw", &["64"]);
    let pid = env.manifest(&img).process.pid;
    let mode: &[&str] = if is_root() {
        &["--eager"]
    } else {
        &["--pid-mode", "ns"]
    };
    let (mut early, mut forwarded, mut finished) = (0, 0, 0);
    for trial in 0..trials() {
        let (status, out) = signalled(
            env.restore_cmd(&img, mode, &[]),
            delay(trial, 150_000),
            libc::SIGTERM,
        );
        assert!(!out.contains("FAIL"), "trial {trial}: {out}");
        use std::os::unix::process::ExitStatusExt;
        match (status.signal(), status.code()) {
            (Some(libc::SIGTERM), _) => early += 1,
            (_, Some(143)) => forwarded += 1,
            (_, Some(0)) if out.contains("ok pattern") => finished += 1,
            other => panic!("trial {trial}: launcher ended with {other:?}: {out}"),
        }
        // End of file above means every holder of the pipe let go of it: a process of the
        // image then ends a moment later (it closes its descriptors before it is a zombie).
        assert!(
            !left_behind(pid, "zdtm-pattern"),
            "trial {trial}: process {pid} left behind"
        );
    }
    eprintln!("SIGTERM to thaw run: {} trials, {early} ended the launcher before the process existed, {forwarded} were forwarded to the process, {finished} came after it finished; none left a process behind", trials());
}

#[test]
fn sequential_and_concurrent_restores_leave_nothing_behind() {
    // THAW_FAULT_TRIALS sequential restores (lazy as root, else in a namespace), then as many
    // concurrent namespace restores as nobody: each answers, and afterwards no process of the
    // image and nothing in the image's directory but the image and its keys remains.
    let env = Env::for_nobody();
    let img = env.checkpoint("zdtm-pattern", "s.thaw", &["8"]);
    let pid = env.manifest(&img).process.pid;
    // (An unprivileged caller's copy of the launcher joins the programs there on first use.)
    let files = || {
        std::fs::read_dir(env.dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "thaw")
            .count()
    };
    let before = files();
    let n = trials();
    let mode: &[&str] = if is_root() {
        &["--pid-mode", "host"]
    } else {
        &["--pid-mode", "ns"]
    };
    for _ in 0..n {
        // The image is nobody's; root restores it as itself only with --as-caller.
        let o = if is_root() {
            let mut c = command(&bin("thaw"));
            c.args(["run", "--as-caller", "--trust"])
                .arg(&env.pubkey)
                .args(mode)
                .arg(&img);
            c.output().unwrap()
        } else {
            env.restore(&img, mode, &[])
        };
        assert_all_ok(&o, &["pattern"]);
    }
    let children: Vec<_> = (0..n.min(64))
        .map(|_| {
            env.restore_cmd(&img, &["--pid-mode", "ns"], &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let concurrent = children.len();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_all_ok(&o, &["pattern"]);
    }
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map_or(true, |c| !c.starts_with("zdtm-pattern")),
        "process {pid} left behind"
    );
    assert_eq!(before, files(), "files left in the image's directory");
    eprintln!("restores: {n} sequential ({}) and {concurrent} concurrent in namespaces as nobody: all answered, nothing left behind", if is_root() { "lazy, host mode" } else { "ns mode" });
}
