//! A signal another process sends while a checkpoint runs (a supervisor's SIGTERM, a Ctrl-C) is
//! the first life's: its handler runs there once `checkpoint()` returns, and never in a restore.
//! Runtimes take a signal the moment it comes and act on it later (CPython flags it and runs the
//! Python handler at its next bytecode); taken during the checkpoint's hooks, it used to be part
//! of the image, and every restore handled it. Through Debian's python3 and the thaw package.
//! (Node's: `node::a_sigterm_sent_during_the_checkpoint_is_the_first_lifes`.)

mod common;

use common::*;

const SCRIPT: &str = r#"
import os, signal, subprocess, sys, thaw
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
signal.signal(signal.SIGUSR1, lambda s, f: got.append("USR1"))

@thaw.before_checkpoint
def a_supervisor_sends_sigterm():
    subprocess.run(["kill", "-TERM", str(os.getpid())], check=True)
    # The program's own signals go to its handlers at once, as ever.
    os.kill(os.getpid(), signal.SIGUSR1)
    sum(range(1000))
    got.append("hook done")

out = thaw.checkpoint(sys.argv[1], key=sys.argv[2])
sum(range(1000))
print("restored" if out.restored else "first", " ".join(got), flush=True)
"#;

#[test]
fn a_sigterm_sent_during_the_checkpoint_is_handled_by_the_first_life_alone() {
    let env = Env::new();
    let img = env.path("held.thaw");
    let o = env.python_script(SCRIPT, &img).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "first USR1 hook done TERM\n",
        "{}",
        text(&o)
    );
    for opts in [&[][..], &["--pid-mode", "ns"][..]] {
        let o = env.restore(&img, opts, &[]);
        assert!(o.status.success(), "{opts:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "restored USR1 hook done\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}
