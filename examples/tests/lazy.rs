//! Lazily filled memory (as root, in both PID modes): the restored process runs while the launcher
//! fills its large anonymous mappings, verifying each chunk just before copying it in.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

const CORRUPT: i32 = 65;

/// Both PID modes: in ns mode the process runs in a new user namespace, and the launcher outside
/// enables the fork events it could not enable there.
const MODES: [&str; 2] = ["host", "ns"];

const LAZY_CHECKS: [&str; 7] = [
    "read by two threads",
    "capabilities as at the checkpoint",
    "read by the kernel",
    "moved by mremap",
    "dropped by MADV_DONTNEED",
    "replaced by a new mapping",
    "forked child's copy",
];

/// The launcher's `lazy memory:` report (THAW_TIMING), if it filled memory lazily.
fn lazy_report(o: &std::process::Output) -> Option<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find(|l| l.contains("lazy memory:"))
        .map(str::to_owned)
}

/// The number that starts the report's part ending with `what` ("N on zero pages").
fn count(report: &str, what: &str) -> u64 {
    let part = report
        .split(", ")
        .find(|p| p.ends_with(what))
        .unwrap_or_else(|| panic!("no `{what}` in {report}"));
    part.split_whitespace()
        .rev()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count in {part}"))
}

/// Changes one bit of the image's payload byte at `offset` (after the signature was made).
fn flip_payload_byte(img: &std::path::Path, offset: u64) {
    let payload_off = thaw::image::ImageFile::open(img)
        .unwrap()
        .header()
        .payload_off;
    let mut bytes = std::fs::read(img).unwrap();
    bytes[(payload_off + offset) as usize] ^= 0x10;
    std::fs::write(img, &bytes).unwrap();
}

/// A zdtm-lazy image, for root (`nobody`: for an unprivileged launcher); `None` when not root.
fn lazy_image(nobody: bool) -> Option<(Env, std::path::PathBuf)> {
    if !is_root() {
        eprintln!("skipped: needs root (lazy filling needs CAP_SYS_PTRACE; CI runs as root)");
        return None;
    }
    let env = if nobody {
        Env::for_nobody()
    } else {
        Env::new()
    };
    let img = env.checkpoint("zdtm-lazy", "l.thaw", &[]);
    Some((env, img))
}

/// Restores with `THAW_TIMING` set, so that the launcher reports how it filled memory.
fn restore_timed(env: &Env, img: &std::path::Path, opts: &[&str]) -> std::process::Output {
    let mut c = env.restore_cmd(img, opts, &[]);
    c.env("THAW_TIMING", "1").output().unwrap()
}

#[test]
fn memory_filled_while_the_process_forks_moves_and_drops_it() {
    let Some((env, img)) = lazy_image(false) else {
        return;
    };
    for mode in MODES {
        let o = restore_timed(&env, &img, &["--pid-mode", mode]);
        assert_all_ok(&o, &LAZY_CHECKS);
        let report = lazy_report(&o).unwrap_or_else(|| panic!("{mode}: not lazy: {}", text(&o)));
        // The program forks and reads its dropped and moved-out ranges at once; filling 128 MiB
        // takes far longer, so the server saw the fork and answered those faults with zero pages.
        assert_eq!(count(&report, "forks followed"), 1, "{mode}: {report}");
        assert!(count(&report, "on zero pages") > 0, "{mode}: {report}");

        // The same image, all memory read up front.
        let o = restore_timed(&env, &img, &["--pid-mode", mode, "--eager"]);
        assert_all_ok(&o, &LAZY_CHECKS);
        assert_eq!(lazy_report(&o), None, "{mode}: {}", text(&o));
    }
}

#[test]
fn the_first_restore_records_the_working_set_and_later_ones_bring_it_in_ahead() {
    for mode in MODES {
        let Some((env, img)) = lazy_image(false) else {
            return;
        };
        records_and_replays(&env, &img, mode);
    }
}

/// The working-set record and replay in one PID mode, on a fresh `env` (its own cache).
fn records_and_replays(env: &Env, img: &std::path::Path, mode: &str) {
    let records = env.path("cache/working-sets");
    let o = restore_timed(env, img, &["--pid-mode", mode]);
    assert_all_ok(&o, &LAZY_CHECKS);
    let report = lazy_report(&o).unwrap_or_else(|| panic!("not lazy: {}", text(&o)));
    let recorded = count(&report, "recorded");
    assert!(recorded > 0, "{report}");
    assert_eq!(count(&report, "brought in ahead"), 0, "{report}");
    let files: Vec<_> = std::fs::read_dir(&records).unwrap().collect();
    assert_eq!(files.len(), 1, "one record, named by the image's digest");
    let record = files[0].as_ref().unwrap().path();
    let bytes = std::fs::read(&record).unwrap();

    // Replayed, the process's checks pass as before. (How much of it gets in ahead of the
    // process depends on timing; that the record is read does not.) What the process touched
    // that the record lacks (brought in by the first restore's background filling before the
    // process got there) is added to it, the rest kept as it was.
    let o = restore_timed(env, img, &["--pid-mode", mode]);
    assert_all_ok(&o, &LAZY_CHECKS);
    let report = lazy_report(&o).unwrap();
    assert!(
        report.contains(&format!("working set of {recorded} touches")),
        "{report}"
    );
    let added = count(&report, "recorded");
    let again = std::fs::read(&record).unwrap();
    // Every touch (a chunk, or a zero block with the top bit set), and how many are early.
    let words = |b: &[u8]| -> (Vec<u64>, usize) {
        let early = u64::from_le_bytes(b[48..56].try_into().unwrap()) as usize;
        let words = b[64..]
            .chunks(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect();
        (words, early)
    };
    let ((old, old_early), (new, new_early)) = (words(&bytes), words(&again));
    assert_eq!(new.len() as u64, recorded + added, "{report}");
    // What was early stays early, in its order; a late touch the process needed before its
    // first output this time may have moved up.
    assert!(new_early >= old_early, "{report}");
    let mut rest = new[..new_early].iter();
    assert!(
        old[..old_early].iter().all(|w| rest.any(|n| n == w)),
        "the early touches stay, in their order"
    );
    assert!(old.iter().all(|w| new.contains(w)), "no touch is lost");
    if added == 0 && new_early == old_early {
        // (The time of the first output may have been learnt: a first restore whose memory was
        // all in before the process wrote anything did not see it.)
        assert_eq!(new, old, "nothing new: the touches are kept as they were");
    }
    let bytes = again;

    // Neither read nor written with --no-working-set.
    let o = restore_timed(env, img, &["--pid-mode", mode, "--no-working-set"]);
    assert_all_ok(&o, &LAZY_CHECKS);
    let report = lazy_report(&o).unwrap();
    assert!(report.contains("working set of 0 touches"), "{report}");
    assert_eq!(count(&report, "recorded"), 0, "{report}");

    // A record that is not one (here: naming chunks the image does not have) is ignored, not
    // trusted: it can only ever change the order of filling, and this one changes nothing.
    let mut bad = bytes.clone();
    let last = bad.len() - 8;
    bad[last..].copy_from_slice(&u64::MAX.wrapping_shr(1).to_le_bytes());
    std::fs::write(&record, &bad).unwrap();
    let o = restore_timed(env, img, &["--pid-mode", mode]);
    assert_all_ok(&o, &LAZY_CHECKS);
    let report = lazy_report(&o).unwrap();
    assert!(report.contains("working set of 0 touches"), "{report}");
}

#[test]
fn a_working_set_brings_in_what_came_before_the_first_output_first_and_the_rest_after_it() {
    if !is_root() {
        return;
    }
    for mode in MODES {
        early_then_late(mode);
    }
}

/// The early/late split of a working set in one PID mode, on a fresh cache.
fn early_then_late(mode: &str) {
    const CHECKS: [&str; 3] = [
        "read before the answer",
        "read by a child before the answer",
        "read after the answer",
    ];
    let env = Env::new();
    let img = env.checkpoint("zdtm-early", "e.thaw", &[]);
    // Region B: 16 to 48 MiB into the program's mapping at 0x6000_0000_0000. Per payload chunk,
    // its pages of B and its other pages.
    let m = env.manifest(&img);
    let cs = u64::from(m.chunks.chunk_size);
    let b = 0x6000_0000_0000u64 + (16 << 20)..0x6000_0000_0000u64 + (48 << 20);
    let mut pages = std::collections::HashMap::<u64, (u64, u64)>::new();
    for run in m.memory.iter().flat_map(|v| &v.pages) {
        for p in 0..run.payload.len / 4096 {
            let e = pages
                .entry((run.payload.offset + p * 4096) / cs)
                .or_default();
            if b.contains(&(run.addr + p * 4096)) {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    let only_b = |c: &u64| pages.get(c).is_some_and(|&(b, other)| b > 0 && other == 0);
    // Pages of B in a chunk with other pages: brought in with them.
    let shared: u64 = pages.values().filter(|(_, o)| *o > 0).map(|(b, _)| b).sum();
    assert!(
        pages.keys().filter(|c| only_b(c)).count() >= 400,
        "B is saved"
    );
    let record = || {
        let dir = env.path("cache/working-sets");
        let mut files = std::fs::read_dir(dir).unwrap();
        std::fs::read(files.next().expect("a record").unwrap().path()).unwrap()
    };

    // Recorded: what the process touched after its answer is never in the early part.
    let o = restore_timed(&env, &img, &["--pid-mode", mode]);
    assert_all_ok(&o, &CHECKS);
    let report = lazy_report(&o).unwrap_or_else(|| panic!("not lazy: {}", text(&o)));
    assert!(report.contains("first output after"), "{report}");
    let (early, late) = record_chunks(&record());
    assert!(!early.is_empty() || !late.is_empty(), "{report}");
    assert!(
        !early.iter().any(only_b),
        "a chunk of B is early: {early:?}"
    );

    // A restore refused after the verifier started on the record (a bad --listen-fd) ends
    // with its error: the verifier waiting for the late part is told to stop.
    let o = env.restore(&img, &["--pid-mode", mode, "--listen-fd", "99"], &[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));

    // Replayed, with the late part held until the first output (and not for a quiet process:
    // the hook makes that an hour): no page of B comes in before the answer but those that
    // share a chunk with what came before it, and the child forked meanwhile gets its memory
    // as it faults.
    for _ in 0..2 {
        let early = u64::from_le_bytes(record()[48..56].try_into().unwrap());
        let mut c = env.restore_cmd(&img, &["--pid-mode", mode], &[]);
        c.env("THAW_TIMING", "1");
        c.env("THAW_TEST_HOLD_QUIET_MS", "3600000");
        let o = c.output().unwrap();
        assert_all_ok(&o, &CHECKS);
        let report = lazy_report(&o).unwrap();
        assert!(report.contains(&format!("({early} early)")), "{report}");
        let out = String::from_utf8_lossy(&o.stdout);
        let resident: u64 = out
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("answer: "))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the first output is the answer: {}", text(&o)));
        assert!(
            resident <= shared,
            "{resident} pages of B in before the answer ({shared} share a chunk): {}",
            text(&o)
        );
    }
}

#[test]
fn a_first_output_after_all_memory_is_in_is_still_seen_and_recorded() {
    if !is_root() {
        return;
    }
    for mode in MODES {
        let env = Env::new();
        let img = env.checkpoint("zdtm-early", "e.thaw", &[]);
        // The process answers only once its 48 MiB mapping is in: the launcher has filled it
        // (almost) all by then, and goes on watching for the output once it has.
        let mut c = env.restore_cmd(&img, &["--pid-mode", mode], &["--answer-when-in"]);
        let o = c.env("THAW_TIMING", "1").output().unwrap();
        assert_all_ok(&o, &["read before the answer", "read after the answer"]);
        let report = lazy_report(&o).unwrap_or_else(|| panic!("not lazy: {}", text(&o)));
        assert!(report.contains("first output after"), "{report}");
        let files: Vec<_> = std::fs::read_dir(env.path("cache/working-sets"))
            .unwrap()
            .collect();
        let record = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
        // Its time is kept (u64::MAX: never seen). (What came before it may be nothing: the
        // process can find all of its memory in before it touches any.)
        let output = u64::from_le_bytes(record[56..64].try_into().unwrap());
        assert_ne!(output, u64::MAX, "{report}");
    }
}

#[test]
fn a_tampered_chunk_of_the_working_set_is_refused_though_verified_ahead() {
    let Some((env, img)) = lazy_image(false) else {
        return;
    };
    let o = restore_timed(&env, &img, &["--pid-mode", "host"]);
    assert_all_ok(&o, &LAZY_CHECKS);
    // The first chunk the process touched: the next restore verifies it first, on the thread
    // that verifies ahead (or the server does, if it gets there first).
    let record = std::fs::read_dir(env.path("cache/working-sets"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .next()
        .expect("a recorded working set");
    // Magic, image digest, count, early count, first output, then one word per touch: a chunk is
    // its index, a block of never-saved pages has the top bit set.
    let chunk = record[64..]
        .chunks(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .find(|w| w >> 63 == 0)
        .expect("a chunk in the working set");
    let m = env.manifest(&img);
    flip_payload_byte(&img, chunk * u64::from(m.chunks.chunk_size));
    let o = env.restore(&img, &["--pid-mode", "host"], &[]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // Refused by whoever verified it: the thread ahead, the server, or the check before the
    // process runs if the chunk also holds memory read up front.
    assert!(
        err.contains(&format!("payload chunk {chunk} "))
            && err.contains("does not match its digest"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_tampered_chunk_kills_the_process_before_it_reads_the_chunk() {
    let Some((env, img)) = lazy_image(false) else {
        return;
    };
    // A byte in the middle of the 128 MiB mapping's saved pages, which the program reads.
    let m = env.manifest(&img);
    let vma = m
        .memory
        .iter()
        // At least 128 MiB: the kernel may have merged it with an adjacent anonymous mapping.
        .filter(|v| v.len() >= 128 << 20)
        .max_by_key(|v| v.saved_len())
        .expect("the 128 MiB mapping");
    let run = vma
        .pages
        .iter()
        .max_by_key(|r| r.payload.len)
        .expect("saved pages");
    flip_payload_byte(&img, run.payload.offset + run.payload.len / 2);

    for mode in MODES {
        let o = env.restore(&img, &["--pid-mode", mode], &[]);
        assert_eq!(o.status.code(), Some(CORRUPT), "{mode}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("does not match its digest")
                && err.contains("the restored process was killed"),
            "{mode}: {}",
            text(&o)
        );
        // It never finished its checks: the chunk's bytes never reached it.
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("ok read by two threads"),
            "{mode}: {}",
            text(&o)
        );
    }
}

#[test]
fn unprivileged_restores_read_all_memory_up_front() {
    let Some((env, img)) = lazy_image(true) else {
        return;
    };
    let o = restore_timed(&env, &img, &["--pid-mode", "ns"]);
    assert_all_ok(&o, &LAZY_CHECKS);
    assert_eq!(lazy_report(&o), None, "{}", text(&o));
}

/// A key in /etc/thaw/trusted/ (the only trust store of a privileged launcher) for a test.
struct SystemKey(std::path::PathBuf);

impl SystemKey {
    fn install(public: &std::path::Path) -> SystemKey {
        std::fs::create_dir_all("/etc/thaw/trusted").unwrap();
        // One name per key: tests of one process run at once, each with its own key.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let at = std::path::PathBuf::from(format!(
            "/etc/thaw/trusted/test-lazy-{}-{n}.pub",
            std::process::id()
        ));
        // Written under another name and renamed: another test's launcher reads every *.pub
        // there, and a key half written refuses its restore (seen in CI).
        let part = at.with_extension("part");
        std::fs::copy(public, &part).unwrap();
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&part, &at).unwrap();
        SystemKey(at)
    }
}

impl Drop for SystemKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The setcap deployment for an unprivileged caller: a launcher given CAP_SYS_PTRACE besides
/// CAP_CHECKPOINT_RESTORE (the kernel reports forks to a userfaultfd only to a holder of it)
/// fills memory lazily; with CAP_CHECKPOINT_RESTORE alone it reads all of it up front. Either
/// way the process gets every byte and none of the launcher's capabilities.
#[test]
fn a_setcap_launcher_fills_lazily_when_it_may_follow_forks() {
    let Some((env, img)) = lazy_image(true) else {
        return;
    };
    let _trusted = SystemKey::install(&env.pubkey);
    for (name, caps, lazy) in [
        ("thaw-cr", "cap_checkpoint_restore+ep", false),
        (
            "thaw-cr-ptrace",
            "cap_checkpoint_restore,cap_sys_ptrace+ep",
            true,
        ),
    ] {
        // A copy, never a link: the capability belongs to the file.
        let launcher = env.path(name);
        copy_program(&bin("thaw"), &launcher, 0o755);
        let st = std::process::Command::new("setcap")
            .arg(caps)
            .arg(&launcher)
            .status()
            .unwrap();
        assert!(st.success(), "setcap {caps}");
        let o = as_nobody(command(&launcher))
            .args(["run", "--timing", "--pid-mode", "host"])
            .arg(&img)
            .output()
            .unwrap();
        assert_all_ok(&o, &LAZY_CHECKS);
        assert_eq!(lazy_report(&o).is_some(), lazy, "{caps}: {}", text(&o));
    }
}

/// A restored process that checkpoints again at once, while the launcher is still filling its
/// memory lazily: the new image has all of it (pages not filled yet were missing from it, and
/// its restores crashed).
#[test]
fn a_checkpoint_taken_while_memory_is_filled_lazily_has_all_of_it() {
    if !is_root() {
        eprintln!("skipped: lazy memory needs root");
        return;
    }
    let env = Env::new();
    let img = env.checkpoint("zdtm-pattern", "p.thaw", &["128"]);
    for mode in ["host", "ns"] {
        let again = env.path(&format!("again-{mode}.thaw"));
        let o = env.restore(
            &img,
            &["--pid-mode", mode],
            &["again", again.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{mode}: {}", text(&o));
        let o = env.restore(&again, &["--pid-mode", mode], &[]);
        assert_all_ok(&o, &["pattern", "reserve reads as zeros"]);
        // Filled in to be saved, the never-saved 128 MiB reserve maps the zero page and is not
        // saved again (the image was 2 GiB larger for a JVM restored with -Xms2g).
        let (first, second) = (
            std::fs::metadata(&img).unwrap().len(),
            std::fs::metadata(&again).unwrap().len(),
        );
        assert!(
            first < (128 + 16) << 20 && second < first + (16 << 20),
            "{mode}: image {first} bytes, taken again {second}"
        );
    }
}
