//! The C ABI: the header matches libthaw.so, and the C example of docs/c-api.md compiles,
//! checkpoints, restores, and reseeds in its after-restore hook.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn names(text: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(prefix) && w.len() > prefix.len())
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// examples/c/NAME.c (with `more` inputs after it, and `flags`) compiled against libthaw.so
/// into the scratch directory.
fn c_example(env: &Env, name: &str, more: &[&Path], flags: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let exe = env.path(name);
    let src = root.join(format!("examples/c/{name}.c"));
    let mut inputs: Vec<&Path> = vec![&src];
    inputs.extend(more);
    cc_with_libthaw(&inputs, flags, &exe);
    exe
}

/// Runs `EXE IMAGE KEY` (a first life that checkpoints and exits 0); returns the image and
/// what the first life printed.
fn checkpointed(env: &Env, exe: &Path, image: &str) -> (PathBuf, std::process::Output) {
    let img = env.path(image);
    let o = command(exe).arg(&img).arg(&env.key).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    (img, o)
}

#[test]
fn header_and_library_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let header = std::fs::read_to_string(root.join("sdk/include/thaw.h")).unwrap();
    let source = std::fs::read_to_string(root.join("sdk/src/capi.rs")).unwrap();
    // Every exported function and constant is declared, with nothing extra.
    let exported: Vec<String> = source
        .lines()
        .filter(|l| l.contains("extern \"C\" fn thaw_") || l.starts_with("pub const THAW_"))
        .flat_map(|l| names(l, "thaw_").into_iter().chain(names(l, "THAW_")))
        .collect();
    let declared: Vec<String> = header
        .lines()
        .filter(|l| l.starts_with("#define THAW_") || (l.contains("thaw_") && l.contains('(')))
        .flat_map(|l| names(l, "thaw_").into_iter().chain(names(l, "THAW_")))
        .filter(|n| n != "thaw_hook" && n != "THAW_H")
        .collect();
    let (mut e, mut d) = (exported.clone(), declared.clone());
    e.sort();
    d.sort();
    e.dedup();
    d.dedup();
    assert_eq!(e, d, "sdk/include/thaw.h and sdk/src/capi.rs disagree");
    // The constants have the same values.
    for (name, value) in [
        ("THAW_EXIT_AFTER_SAVE", "1u"),
        ("THAW_LEAVE_CHILDREN_OUT", "2u"),
        ("THAW_SAVED", "0"),
        ("THAW_RESTORED", "1"),
        ("THAW_ERR_INVALID", "(-1)"),
        ("THAW_ERR_UNSUPPORTED", "(-2)"),
        ("THAW_ERR_IO", "(-3)"),
        ("THAW_ERR_FAILED", "(-4)"),
    ] {
        assert!(
            header.contains(&format!("#define {name} {value}")),
            "{name}"
        );
    }
    assert_eq!(thaw::capi::THAW_ERR_UNSUPPORTED, -2);
    assert_eq!(thaw::capi::THAW_EXIT_AFTER_SAVE, 1);
}

#[test]
fn the_documented_example_is_the_tested_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let doc = std::fs::read_to_string(root.join("docs/c-api.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/c/warm.c")).unwrap();
    assert!(
        doc.contains(&example),
        "docs/c-api.md must show examples/c/warm.c verbatim"
    );
}

#[test]
fn c_program_checkpoints_and_reseeds_after_each_restore() {
    let env = Env::new();
    let exe = c_example(&env, "warm", &[], &[]);
    let (img, _) = checkpointed(&env, &exe, "c.thaw");
    let session = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            out.contains("after 1 checkpoint hook call(s), table[12345] = "),
            "{}",
            text(o)
        );
        assert!(
            out.contains("arg 0: hello\narg 1: two words\n"),
            "{}",
            text(o)
        );
        out.lines()
            .find_map(|l| l.strip_prefix("session ").map(str::to_owned))
            .unwrap()
    };
    let first = env.restore(&img, &[], &["hello", "two words"]);
    let second = env.restore(&img, &[], &["hello", "two words"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_ne!(
        session(&first),
        session(&second),
        "the after-restore hook must reseed"
    );
}

#[test]
fn every_thread_reads_the_restore_count_before_the_checkpoint_returns() {
    let env = Env::new();
    let exe = c_example(&env, "restores", &[], &["-pthread"]);
    let (img, o) = checkpointed(&env, &exe, "r.thaw");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "first life: 0\n");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "in the hook: thread 1, hook 1\nreturned: 1\n",
            "{opts:?}"
        );
    }
}

/// Threads on small stacks of their own with an alternate signal stack (Go's goroutines: 2 KiB,
/// side by side): the checkpoint's signal frame goes on the alternate stack, never below the
/// small one (it overwrote the neighbouring goroutines' stacks: Go crashed in the first life
/// and in every restore).
#[test]
fn the_checkpoint_signal_never_writes_below_a_small_stack() {
    let env = Env::new();
    let exe = c_example(&env, "small_stacks", &[], &["-pthread"]);
    let (img, o) = checkpointed(&env, &exe, "s.thaw");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "first life: intact\n");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "restored: intact\n",
            "{opts:?}"
        );
    }
}

/// 700 descriptors under a soft limit of 1024 (the hard one higher): the checkpoint raises the
/// soft limit for its own descriptors while it runs (it failed with "Too many open files" past
/// about 505), and the image, the first life and the restored process keep the process's 1024.
#[test]
fn a_process_near_its_soft_limit_of_open_files_is_checkpointed_and_keeps_its_limit() {
    let env = Env::new();
    let exe = c_example(&env, "many_fds", &[], &[]);
    let img = env.path("m.thaw");
    let o = command(&exe)
        .arg(&img)
        .arg(&env.key)
        .arg("700")
        .output()
        .unwrap();
    if o.status.code() == Some(77) {
        eprintln!("skipped: the hard limit of open files is below 4096");
        return;
    }
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "first life: limit 1024, 700 open\n"
    );
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "restored: limit 1024, 700 open\n"
    );
}

fn canonical(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    thaw::sys::tcgetattr(f.as_raw_fd()).unwrap().c_lflag & libc::ICANON != 0
}

/// A process that put its terminal in raw mode (Node's readline) finds it in raw mode after
/// restore, though the first life's end put it back: the launcher lends the caller's terminal
/// the process's mode and puts the caller's own back once the process has ended, and tells the
/// process of its new terminal's size as a resize would (SIGWINCH: Node printed for the first
/// life's terminal size until the window was resized). On a pipe,
/// the launcher warns that standard input is no terminal any more.
#[test]
fn a_terminal_in_raw_mode_comes_back_raw_and_the_callers_mode_is_put_back() {
    let env = Env::new();
    let exe = c_example(&env, "terminal", &[], &[]);
    let img = env.path("t.thaw");
    let (_master, slave) = pty();
    let cooked = thaw::sys::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave)).unwrap();
    let o = command(&exe)
        .arg(&img)
        .arg(&env.key)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!canonical(&slave), "the first life set raw mode");
    // Its end puts the terminal back, as a runtime's exit does.
    thaw::sys::tcsetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), &cooked).unwrap();
    let out = env.path("mode");
    let out_arg = out.to_str().unwrap();
    for opts in every_mode() {
        let o = env
            .restore_cmd(&img, opts, &[out_arg])
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{opts:?}: {}", text(&o));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "icanon 0 echo 0 winch 1\n",
            "{opts:?}"
        );
        assert!(canonical(&slave), "{opts:?}: the caller's mode is back");
    }
    let o = env
        .restore_cmd(&img, &[], &[out_arg])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "not a terminal\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("standard input was a terminal in raw mode"),
        "{}",
        text(&o)
    );
}

/// The process's own /proc files held open (wasmtime's /proc/self/pagemap) come back opened again
/// by the restorer: the same files of the same process (its pagemap shows its own pages, its
/// status its own PID). One read partway is refused, as is another process's.
#[test]
fn the_process_own_proc_files_are_opened_again() {
    let env = Env::new();
    let exe = c_example(&env, "proc_self", &[], &[]);
    let (img, _) = checkpointed(&env, &exe, "p.thaw");
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "pagemap present 1, status of itself 1, link 1\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
    let o = command(&exe)
        .arg(env.path("m.thaw"))
        .arg(&env.key)
        .arg("midway")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("a /proc file of the process read up to the middle"),
        "{}",
        text(&o)
    );
}

/// A program that drew from OpenSSL before its checkpoint (a C program's `RAND_bytes`, Ruby's
/// `OpenSSL::Random`): OpenSSL reseeds on a PID change only, so libthaw reseeds it after every
/// restore, before any hook runs.
#[test]
fn openssl_draws_afresh_after_every_restore() {
    let env = Env::new();
    // (libcrypto given as an input after the source, where the linker needs it.)
    let libcrypto = Path::new("/usr/lib/x86_64-linux-gnu/libcrypto.so.3");
    let exe = c_example(&env, "openssl_rand", &[libcrypto], &[]);
    let (img, _) = checkpointed(&env, &exe, "o.thaw");
    differs_per_restore(&env, &img, "drawn ");
}

/// The same with libcrypto loaded by the program with dlopen, RTLD_LOCAL (a plugin host, a
/// language's extension module): not in the global scope, where the reseeding used to look only.
#[test]
fn openssl_loaded_with_dlopen_draws_afresh_after_every_restore() {
    let env = Env::new();
    let exe = c_example(&env, "openssl_rand", &[], &["-DDLOPEN"]);
    let (img, _) = checkpointed(&env, &exe, "o.thaw");
    differs_per_restore(&env, &img, "drawn ");
}

/// A program that drew from SQLite's generator before its checkpoint (`randomblob()` as an id):
/// SQLite seeds it once per process, so libthaw resets it after every restore, before any hook.
#[test]
fn sqlite_draws_afresh_after_every_restore() {
    let env = Env::new();
    let libsqlite = Path::new("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0");
    let exe = c_example(&env, "sqlite_rand", &[libsqlite], &[]);
    let (img, _) = checkpointed(&env, &exe, "s.thaw");
    differs_per_restore(&env, &img, "drawn ");
}

/// The same with libsqlite3 loaded with dlopen, RTLD_LOCAL (as Python's `_sqlite3` module has
/// it): not in the global scope.
#[test]
fn sqlite_loaded_with_dlopen_draws_afresh_after_every_restore() {
    let env = Env::new();
    let exe = c_example(&env, "sqlite_rand", &[], &["-DDLOPEN"]);
    let (img, _) = checkpointed(&env, &exe, "s.thaw");
    differs_per_restore(&env, &img, "drawn ");
}

/// A process whose main thread has ended (pthread_exit in main) is refused, saying so alone:
/// its zombie main thread's /proc files showed no cgroups (a refusal naming every thread as in
/// another cgroup) or no memory (an I/O error opening /proc/self/pagemap).
#[test]
fn a_process_whose_main_thread_exited_is_refused_saying_so() {
    let env = Env::new();
    let exe = c_example(&env, "main_exited", &[], &["-pthread"]);
    let o = command(&exe)
        .arg(env.path("m.thaw"))
        .arg(&env.key)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.starts_with("rc -2: cannot checkpoint: 1 unsupported item(s): the main thread")
            && out.contains("has exited (pthread_exit in main)"),
        "{out}"
    );
}

/// A TCP listener without SO_REUSEADDR whose port keeps a TIME_WAIT entry (the server closed a
/// connection first): no socket can bind through an entry made without SO_REUSEADDR, so a
/// restore within that minute is refused, saying so, rather than blaming another process.
#[test]
fn a_listener_kept_from_its_port_by_time_wait_is_refused_saying_so() {
    let env = Env::new();
    let exe = c_example(&env, "time_wait", &[], &[]);
    let (img, _) = checkpointed(&env, &exe, "t.thaw");
    let o = env.restore(&img, &[], &[]);
    assert_eq!(o.status.code(), Some(67), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("TIME_WAIT") && err.contains("SO_REUSEADDR"),
        "{err}"
    );
}
