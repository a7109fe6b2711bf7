//! Process attributes: rlimits, umask, working directory, name, PID, command line, executable,
//! capabilities, no_new_privs and dumpable; the checkpoint and restore hooks; the arguments and
//! environment the launcher passes.
//!
//! `zdtm-process DIR late`: the process goes on from its checkpoint (no exit after saving) and
//! changes its child-subreaper flag, THP setting, dumpable flag and oom_score_adj, and a thread's nice value,
//! CPU mask and I/O priority, the moment its threads go on (the SDK's test hook, point `g`): the
//! image has them as they were at the checkpoint. `late-blocked`: the same, the thread blocking
//! every signal (captured through ptrace). `rt-io` (as root): the idler's I/O priority is of the
//! real-time class (level 5), which a restore without CAP_SYS_NICE gives as best-effort level 5;
//! the probe prints it (`ioprio 0x…`).

#[path = "common.rs"]
mod common;

/// SCHED_RESET_ON_FORK (not in the libc crate).
const RESET_ON_FORK: i32 = 0x4000_0000;

fn main() {
    let (_, _, extra) = common::argv();
    let dir = extra.first().cloned().expect("a directory to chdir to");
    let late = extra.get(1).is_some_and(|a| a.starts_with("late"));
    // `late-blocked`: the idler blocks every signal (the checkpoint captures it through ptrace).
    let blocked = extra.get(1).is_some_and(|a| a == "late-blocked");
    let rt_io = extra.get(1).is_some_and(|a| a == "rt-io");
    // SAFETY: plain calls with valid arguments.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: 777,
            rlim_max: 4096,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &core);
        libc::umask(0o027);
        libc::prctl(libc::PR_SET_NAME, c"zdtm-proc".as_ptr());
    }
    std::env::set_current_dir(&dir).unwrap();
    let pid = std::process::id();
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
    let exe = std::fs::read_link("/proc/self/exe").unwrap();

    static BEFORE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static AFTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    thaw::on_checkpoint(|| {
        BEFORE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    thaw::on_restore(|| {
        AFTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    // SAFETY: plain prctl calls.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Disabled except where advised (PR_THP_DISABLE_EXCEPT_ADVISED, Linux 6.18), else
        // disabled.
        if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 2, 0, 0) != 0 {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
        libc::prctl(libc::PR_SET_TIMERSLACK, 123_456, 0, 0, 0);
    }
    // SAFETY: a plain prctl query.
    let thp_before = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    // Raising it is allowed to anyone.
    let oom: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let oom = (oom + 100).min(1000);
    std::fs::write("/proc/self/oom_score_adj", oom.to_string()).unwrap();

    // A thread under SCHED_IDLE at nice 7, whose children would start with the defaults
    // (SCHED_RESET_ON_FORK), and the main thread at nice 3 (raising is allowed).
    let (tx, rx) = std::sync::mpsc::channel::<i32>();
    // (Told to, it changes its nice value, CPU mask and I/O priority.)
    let (change, changes) = std::sync::mpsc::channel::<()>();
    let (changed, done) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("idler".into())
        .spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: this thread's own scheduling; gettid has no preconditions.
            let tid = unsafe {
                libc::sched_setscheduler(0, libc::SCHED_IDLE | RESET_ON_FORK, &param);
                libc::setpriority(libc::PRIO_PROCESS, 0, 7);
                // IOPRIO_CLASS_BE (or IOPRIO_CLASS_RT), level 5, for itself.
                let class = if rt_io { 1 } else { 2 };
                libc::syscall(libc::SYS_ioprio_set, 1, 0, class << 13 | 5);
                if blocked {
                    let mut all: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut all);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                }
                libc::gettid()
            };
            tx.send(tid).unwrap();
            while changes.recv().is_ok() {
                // SAFETY: this thread's own attributes; a CPU set of ours.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 9);
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut one);
                    libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one);
                    // IOPRIO_CLASS_IDLE for itself.
                    libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
                }
                changed.send(()).unwrap();
            }
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    let idler = rx.recv().unwrap();
    let affinity = |tid: i32| {
        // SAFETY: a CPU set of ours for the kernel to fill.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect::<Vec<_>>()
        }
    };
    // SAFETY: reads a thread's I/O priority; no pointers.
    let ioprio = |tid: i32| unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
    let (affinity_before, ioprio_before) = (affinity(idler), ioprio(idler));
    if late {
        let to_idler = std::sync::Mutex::new(change);
        common::during_first_scan("g", move |_| {
            // SAFETY: plain prctl calls.
            unsafe {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            }
            std::fs::write(
                "/proc/self/oom_score_adj",
                (oom + 100).min(1000).to_string(),
            )
            .unwrap();
            to_idler.lock().unwrap().send(()).unwrap();
            done.recv().unwrap();
        });
    }
    // SAFETY: the main thread's own nice value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
    let caps = common::thread_caps();
    let restored = if late {
        common::restored_going_on()
    } else {
        common::restored()
    };
    let args = restored.args().to_vec();
    let mut c = common::Checks::default();
    // SAFETY: reading limits and the umask (set back at once).
    let (nofile, core, umask) = unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        let mut k: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_CORE, &mut k);
        let u = libc::umask(0o022);
        libc::umask(u);
        (l, k, u)
    };
    c.check(
        "pid",
        std::process::id() == pid,
        format!("{} != {pid}", std::process::id()),
    );
    c.check(
        "rlimit nofile",
        nofile.rlim_cur == 777 && nofile.rlim_max == 4096,
        format!("{}/{}", nofile.rlim_cur, nofile.rlim_max),
    );
    c.check(
        "rlimit core",
        core.rlim_cur == 0 && core.rlim_max == 0,
        format!("{}/{}", core.rlim_cur, core.rlim_max),
    );
    c.check("umask", umask == 0o027, format!("{umask:o}"));
    let cwd = std::env::current_dir().unwrap();
    c.check("cwd", cwd == std::path::Path::new(&dir), cwd.display());
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    c.check("comm", comm.trim() == "zdtm-proc", &comm);
    c.check(
        "cmdline",
        std::fs::read("/proc/self/cmdline").unwrap() == cmdline,
        "differs",
    );
    let exe_now = std::fs::read_link("/proc/self/exe").unwrap();
    c.check("exe", exe_now == exe, exe_now.display());
    c.check(
        "args",
        args.len() == 2 && args[0] == "one" && args[1] == "two words",
        format!("{args:?}"),
    );
    let hooks = (
        BEFORE.load(std::sync::atomic::Ordering::SeqCst),
        AFTER.load(std::sync::atomic::Ordering::SeqCst),
    );
    c.check("hooks", hooks == (1, 1), format!("{hooks:?}"));
    let env = restored
        .var("ZDTM_ENV")
        .map(|v| v.to_string_lossy().into_owned());
    c.check(
        "environment",
        env.as_deref() == Some("from the launcher"),
        format!("{env:?}"),
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    c.check("no_new_privs", status.contains("NoNewPrivs:\t1"), "not set");
    // SAFETY: a plain prctl query.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    c.check("dumpable", dumpable == 1, dumpable);
    let mut subreaper = 0i32;
    // SAFETY: plain prctl queries; the subreaper flag is written to an int.
    let (thp, slack) = unsafe {
        libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut subreaper as *mut i32);
        (
            libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0),
            libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0),
        )
    };
    c.check(
        "prctl: child subreaper, THP disabled, timer slack",
        subreaper == 1 && thp == thp_before && slack == 123_456,
        format!("{subreaper} {thp} (was {thp_before}) {slack}"),
    );
    let sched = |tid: i32| {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let f: Vec<String> = stat[stat.rfind(')').unwrap_or(0) + 1..]
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (
            f.get(16).cloned().unwrap_or_default(),
            f.get(38).cloned().unwrap_or_default(),
        )
    };
    // SAFETY: reads a thread's policy; no pointers.
    let reset = unsafe { libc::sched_getscheduler(idler) };
    c.check(
        "scheduling: SCHED_RESET_ON_FORK kept",
        reset == libc::SCHED_IDLE | RESET_ON_FORK,
        format!("{reset:#x}"),
    );
    let main_sched = sched(std::process::id() as i32);
    let idler_sched = sched(idler);
    c.check(
        "scheduling: nice and policy of each thread",
        main_sched == ("3".into(), "0".into()) && idler_sched == ("7".into(), "5".into()),
        format!("{main_sched:?} {idler_sched:?}"),
    );
    let (affinity_now, ioprio_now) = (affinity(idler), ioprio(idler));
    if rt_io {
        println!("ioprio {ioprio_now:#x}");
    }
    c.check(
        "scheduling: CPU mask and I/O priority of each thread",
        affinity_now == affinity_before
            && (ioprio_now == ioprio_before || rt_io && ioprio_now == 2 << 13 | 5),
        format!("{affinity_now:?} {ioprio_now:#x}, were {affinity_before:?} {ioprio_before:#x}"),
    );
    let oom_now = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
    c.check(
        "oom_score_adj",
        oom_now.trim() == oom.to_string(),
        oom_now.trim(),
    );
    let caps_now = common::thread_caps();
    c.check(
        "capabilities",
        caps_now == caps,
        format!("{caps_now:?} != {caps:?}"),
    );
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    println!("uids {uid_line}");
    c.finish();
}
