//! `thaw run [OPTIONS] IMAGE [-- ARGS...]`: verify, check, restore, supervise.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use thaw::image::ImageFile;

use super::cache_dir;
use super::TrustArgs;
use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::registry::{self, cache, cache::Cache};
use crate::restore::{self, working_set, PidMode, Request};
use crate::sys;

/// Restore a process from a signed image, with its original PID and memory layout. The launcher
/// exits with the restored process's exit status (128+N if a signal N ended it).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    /// Where the restored process gets its PID: host (needs root or CAP_CHECKPOINT_RESTORE), ns
    /// (a new user+PID namespace, any user), auto (host when permitted and the PID is free).
    #[arg(long, value_enum, default_value = "auto")]
    pid_mode: PidMode,
    /// Development only: restore an unsigned image. Refused when the launcher runs with elevated
    /// privileges.
    #[arg(long)]
    insecure_allow_unsigned: bool,
    /// When the image was taken with other credentials than yours, restore it with yours instead
    /// of refusing (never for an image of a set-uid program).
    #[arg(long)]
    as_caller: bool,
    /// Verify into a sealed private copy and restore from it, so that a change to the image file
    /// after verification cannot reach the process. Always on when the file is writable by anyone
    /// but you and root; a privileged launcher copies what it reads up front (and verifies
    /// lazily filled memory in its own).
    #[arg(long)]
    private_copy: bool,
    /// Read and verify all of the process's memory before it runs, instead of filling its large
    /// anonymous areas on first touch (lazy filling needs a launcher holding CAP_SYS_PTRACE:
    /// root, or a setcap launcher given it too; in ns mode also /dev/userfaultfd or
    /// vm.unprivileged_userfaultfd=1; and the launcher alive until the memory is complete).
    #[arg(long)]
    eager: bool,
    /// Report on stderr where the restore's time went and how memory was filled (as
    /// THAW_TIMING=1 does, which a privileged launcher does not read).
    #[arg(long)]
    timing: bool,
    /// A listening socket of yours (descriptor number) to give the restored process instead of
    /// binding the image's listening socket with the same address: many instances can then share
    /// one port. Repeatable. Sockets passed by systemd (LISTEN_FDS) are used the same way.
    #[arg(long = "listen-fd", value_name = "FD")]
    listen_fds: Vec<i32>,
    /// Restore even when the image's CLOCK_MONOTONIC/CLOCK_BOOTTIME are ahead of this machine's
    /// (taken before a reboot or elsewhere) and no time namespace can keep them continuous: the
    /// process then sees them jump backwards.
    #[arg(long)]
    allow_clock_jump: bool,
    /// Neither replay nor record the image's working set. With lazy memory the first restore of
    /// an image records which memory the process touches first, in order, in your cache
    /// ($THAW_CACHE_DIR, else $XDG_CACHE_HOME/thaw or ~/.cache/thaw); later restores bring it in
    /// ahead of the process. The record only orders filling: every byte is still verified.
    #[arg(long)]
    no_working_set: bool,
    /// Ask the `thaw serve` listening at this socket for an instance (forked from its template)
    /// instead of restoring an image here; only the arguments after `--` apply.
    #[arg(long, value_name = "SOCKET", conflicts_with = "image")]
    via: Option<PathBuf>,
    /// An image file, or an image in an OCI registry (HOST[:PORT]/NAME[:TAG], see `thaw pull`),
    /// fetched into your cache and verified there first.
    #[arg(required_unless_present = "via")]
    image: Option<PathBuf>,
    /// Arguments for the restored process (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    if let Some(socket) = &args.via {
        std::process::exit(crate::serve::client::call(socket, &args.args)?);
    }
    // Writing a private copy, a shared object's memfd or the cache beyond RLIMIT_FSIZE fails
    // with a message rather than killing the launcher (the restorer sets every disposition).
    let _fsize = thaw::sys::FileSizeSignalIgnored::hold();
    // A tag whose image is cached: that image is verified while the registry is asked what the
    // tag names now. Should it name another, everything starts over without the guess.
    let again = args.clone();
    let result = match restore(args, ctx, true) {
        Ok(()) => restore(again, ctx, false),
        // The guessed image failed before the registry answered (evicted meanwhile, its signer
        // no longer trusted, damaged): the image the tag names now decides, not the guess.
        Err(_) if GUESSING.load(Ordering::Relaxed) => restore(again, ctx, false),
        Err(e) => Err(e),
    };
    // A cached image found damaged (it was whole and verified when it was kept: the disk, or
    // someone with the user's rights, changed it) is removed, so that the next run fetches it
    // again instead of failing the same way for ever.
    result.map_err(
        |e| match FROM_CACHE.lock().ok().and_then(|mut p| p.take()) {
            Some(path) if e.code == Code::Corrupt => {
                let _ = std::fs::remove_file(path.with_extension("blobs"));
                let _ = std::fs::remove_file(&path);
                Failure::new(
                    e.code,
                    format!(
                    "{}; the damaged copy in the cache was removed: the next run fetches it again",
                    e.message
                ),
                )
            }
            _ => e,
        },
    )
}

/// The cached image file the last restore used, if it used one.
static FROM_CACHE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// A guessed image is being prepared and the registry's answer has not been taken yet.
static GUESSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Restores and exits with the process's status; returns only when the tag `args` names has
/// moved since it was guessed (never with `guess` false).
fn restore(args: Args, ctx: &Context, guess: bool) -> Result {
    // Given unless --via (handled before), as clap checks.
    let mut image_path = args.image.clone().unwrap_or_default();
    // An image in a registry: the file in the cache, or one being fetched into it.
    let (mut sparse, mut cached, mut lookup) = (None, None, None);
    if let Ok(mut used) = FROM_CACHE.lock() {
        *used = None;
    }
    if let Some(r) = image_path.to_str().filter(|a| registry::is_reference(a)) {
        let (cache, path, fetching, asked) = from_registry(r, ctx, guess)?;
        (image_path, sparse, cached, lookup) = (path, fetching, Some(cache), asked);
        if let (None, Ok(mut used)) = (&sparse, FROM_CACHE.lock()) {
            *used = Some(image_path.clone());
        }
    }
    let named = |e: thaw::image::ImageError| match &sparse {
        Some(s) => s.named(e),
        None => Failure::from(e),
    };
    let started = std::time::Instant::now();
    let file = ImageFile::open(&image_path).map_err(named)?;
    let image = if args.insecure_allow_unsigned && file.trailer().signer().is_none() {
        if ctx.elevated {
            return Err(Failure::new(
                Code::Signature,
                "--insecure-allow-unsigned is refused: this launcher runs with elevated privileges",
            ));
        }
        errln!(
            "thaw: WARNING: restoring an UNSIGNED image: its contents are not verified by anyone"
        );
        file.decode_unverified().map_err(named)?
    } else {
        file.verify(&args.trust.load(ctx)?).map_err(named)?
    };
    let pid_mode = restore::resolve_pid_mode(&image, args.pid_mode)?;
    // Now, while the launcher has no other thread.
    restore::prepare_descriptor_table(&image);
    // A whole private copy is made up front where asked or where others could change the file,
    // so that nothing done to the file later can fail the running process. A privileged launcher
    // copies what the process gets up front (the caller must not change verified bytes under
    // it): lazily filled chunks are read into the launcher's memory and verified there anyway.
    let whole_copy = args.private_copy || writable_by_others(image.file());
    let private = whole_copy || ctx.elevated;
    // Lazily filled pages are verified one chunk at a time as they are copied in; everything
    // else now. Lazy filling needs the launcher to enable the userfaultfd's fork events, which
    // takes CAP_SYS_PTRACE (root, or a launcher given that capability: see `Uffd::probe`).
    // Under a tracer (strace -f, a debugger) the process could be stopped while the launcher
    // waits on it, and the launcher while the process faults: everything is read up front.
    let traced = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .map(|v| v.trim() != "0")
        })
        .unwrap_or(false);
    let lazy = if args.eager || whole_copy || traced {
        None
    } else {
        restore::lazy::Uffd::probe(pid_mode == PidMode::Ns)
    };
    // A working set that came with the image from the registry is the first record of it here.
    if let (Some(s), Some(c)) = (&sparse, cache_dir(ctx)) {
        if let Some(ws) = &s.working_set {
            let h = image.header();
            let cs = u64::from(h.chunk_size);
            working_set::install(&c, &image.content_digest(), ws, h.chunk_count(), cs);
        }
    }
    let mut working_set = match &lazy {
        Some(_) if !args.no_working_set => {
            let h = image.header();
            working_set::WorkingSet::load(
                cache_dir(ctx).as_deref(),
                image.content_digest(),
                h.chunk_count(),
                u64::from(h.chunk_size),
            )
        }
        // Nothing to replay, nothing recorded; its gate is open.
        _ => working_set::WorkingSet::default(),
    };
    working_set.hold_quiet = ctx
        .env("THAW_TEST_HOLD_QUIET_MS")
        .and_then(|v| v.to_str()?.parse().ok())
        .map(std::time::Duration::from_millis);
    let eager = restore::lazy::eager_chunks(&image, lazy.is_some());
    let wanted = |c: u64| eager[c as usize];
    // From a registry: what is read up front is fetched now (everything when nothing is filled
    // lazily); the rest when it is first needed, by the memory server or the thread verifying
    // ahead, just before it is read and verified.
    if let Some(s) = &sparse {
        let t = std::time::Instant::now();
        if lazy.is_some() {
            s.fetch_chunks(wanted)?;
        } else {
            s.fetch_all("fetching")?;
        }
        if args.timing || ctx.env("THAW_TIMING").is_some() {
            errln!(
                "thaw: timing: up front: {} requests, {:.1} MiB fetched in {:.1} ms (from the start: {:.1} ms)",
                s.fetched.load(Ordering::Relaxed),
                s.bytes.load(Ordering::Relaxed) as f64 / 1048576.0,
                t.elapsed().as_secs_f64() * 1e3,
                started.elapsed().as_secs_f64() * 1e3,
            );
        }
    }
    let payload = if private {
        let h = image.header();
        let copy = sys::sealable_memfd(c"thaw-image", h.payload_off + h.payload_len)
            .map_err(|e| Failure::new(Code::Io, format!("cannot create the private copy: {e}")))?;
        image.verify_chunks(&wanted, Some(&copy))?;
        sys::seal(&copy)
            .map_err(|e| Failure::new(Code::Io, format!("cannot seal the private copy: {e}")))?;
        copy
    } else {
        image.verify_chunks(&wanted, None)?;
        image
            .file()
            .try_clone()
            .map_err(|e| Failure::new(Code::Io, format!("cannot reopen the image: {e}")))?
    };
    // The working set's chunks are verified on a thread of their own once the up-front
    // verification (which uses every core) is done: beside the preparation of the process, and
    // while it runs.
    let fetch = sparse.as_ref().map(|s| s as &dyn restore::lazy::Fetch);
    let gate = working_set.gate.clone();
    let ahead = restore::ahead::Ahead::new(&image, &working_set.replay, gate.clone(), fetch);
    // From a registry, one thread fetches for the whole restore: what the process and the
    // verifier need first, the working set in its order in between (its late part once the
    // gate opens).
    let (prefetch, early) = working_set.replay.chunks();
    // The registry's answer about a guessed tag, awaited at the last moment: once the process
    // exists, before it runs any code of its own (restore::LastWord), so that the question costs
    // only what it takes longer than the restore. The answer is kept with how long it was
    // awaited; none for a signal that came first.
    type Answer = (Option<Result<String>>, std::time::Duration);
    let answer = std::rc::Rc::new(std::cell::RefCell::new(None::<Answer>));
    let (asked_about, last_word) = match lookup {
        Some((asked, reference, guessed)) => {
            let (answer, guess) = (answer.clone(), guessed.clone());
            let word = restore::LastWord(Box::new(move || {
                GUESSING.store(false, Ordering::Relaxed);
                let waited = std::time::Instant::now();
                let digest = asked.digest();
                let go = matches!(&digest, Some(Ok(d)) if *d == guess);
                *answer.borrow_mut() = Some((digest, waited.elapsed()));
                go
            }));
            (Some((reference, guessed)), Some(word))
        }
        None => (None, None),
    };
    let status = std::thread::scope(|scope| {
        // With every signal blocked, as every thread but the main one: a signal for the launcher
        // must reach the main thread, which forwards it once the process exists (one taken by
        // another thread before that would end the launcher with the process made).
        let mask = sys::set_sigmask(u64::MAX);
        // A thread that cannot be created (a pids limit, RLIMIT_NPROC) fails the restore before
        // the process exists.
        let spawned = (|| {
            if let Some(s) = &sparse {
                s.plan(&prefetch, early, gate);
                std::thread::Builder::new()
                    .spawn_scoped(scope, || s.serve())
                    .map_err(|e| format!("cannot start the thread that fetches the image: {e}"))?;
            }
            if !ahead.is_empty() {
                std::thread::Builder::new()
                    .spawn_scoped(scope, || ahead.run())
                    .map_err(|e| format!("cannot start the thread that verifies ahead: {e}"))?;
            }
            Ok::<_, String>(())
        })();
        sys::set_sigmask(mask);
        // However this closure ends (an error below, a panic), those two threads are told to
        // stop before the scope waits for them: they may be waiting for a memory server that
        // will never run.
        let _stop = OnDrop(|| {
            ahead.stop();
            if let Some(s) = &sparse {
                s.stop();
            }
        });
        spawned.map_err(|e| Failure::new(Code::RestoreFailed, e))?;
        let listeners = given_listeners(&args.listen_fds, ctx)?;
        pause_for_tests(ctx)?;
        let verified = started.elapsed();
        restore::run(
            &image,
            Request {
                pid_mode,
                args: args.args,
                as_caller: args.as_caller,
                elevated: ctx.elevated,
                payload,
                timing: (args.timing || ctx.env("THAW_TIMING").is_some())
                    .then_some((started, verified)),
                lazy,
                listeners,
                allow_clock_jump: args.allow_clock_jump,
                working_set,
                last_word,
            },
            &ahead,
        )
    });
    // The tag named another image, or could not be looked up, or a signal came first: the
    // process was called off before it ran (its restore's own report of that is not the news).
    if let (Some((reference, guessed)), Some(cache)) = (asked_about, &cached) {
        let answer = answer.borrow_mut().take();
        if let Some((_, waited)) = &answer {
            // Told once the process has ended, as the other timing lines (see restore::run).
            if args.timing || ctx.env("THAW_TIMING").is_some() {
                errln!(
                    "thaw: timing: the registry's answer about the tag: waited {:.1} ms for it",
                    waited.as_secs_f64() * 1e3
                );
            }
        }
        match answer.map(|(d, _)| d) {
            Some(Some(Ok(digest))) if digest == guessed => {}
            // As if the process had ended by that signal.
            Some(_) if sys::ending_signal().is_some() => {
                std::process::exit(128 + sys::ending_signal().unwrap_or(0))
            }
            Some(Some(Err(f))) => return Err(f),
            Some(Some(Ok(digest))) => {
                cache.remember(&reference, &digest);
                return Ok(());
            }
            Some(None) | None => {}
        }
    }
    let while_running = sparse
        .as_ref()
        .map_or(0, |s| s.bytes.load(Ordering::Relaxed));
    // After a restore that succeeded, what the process did not need is fetched too (it ended
    // before its memory was complete), every chunk verified, and the file kept in the cache: the
    // next start reads nothing from the network. Otherwise the file is removed.
    if let (Some(s), Some(cache)) = (sparse, &cached) {
        // Every chunk is verified before the file is kept, including those fetched during the
        // restore that the process never needed (never read, so never checked).
        let complete = || -> Result {
            if !s.complete() {
                s.fetch_all("completing the cached image")?;
            }
            image.verify_payload().map_err(|e| s.named(e))
        };
        let keep = status.is_ok() && complete().is_ok();
        if args.timing || ctx.env("THAW_TIMING").is_some() {
            let bytes = s.bytes.load(Ordering::Relaxed);
            let blobs = s.fetched.load(Ordering::Relaxed);
            let mib = |b: u64| b as f64 / 1048576.0;
            errln!(
                "thaw: timing: {:.1} MiB ({bytes} bytes, {blobs} requests and the head) fetched from the registry, {:.1} MiB of it before the process ended, {} before its first output",
                mib(bytes),
                mib(while_running),
                s.at_output()
                    .map_or("nothing seen".into(), |b| format!("{:.1} MiB ({:.0} %)", mib(b), 100.0 * b as f64 / bytes.max(1) as f64)),
            );
        }
        let dest = s.dest().to_owned();
        if keep {
            s.persist()?;
        }
        cache.trim(&dest);
    } else if let Some(c) = &cached {
        c.used(&image_path);
    }
    std::process::exit(status?);
}

/// What a reference resolved to: the cache, the image file there (or the one being fetched into
/// it), and for a guessed tag the registry's answer on its way, with the reference and the guess.
type Resolved = (
    Cache,
    PathBuf,
    Option<registry::Sparse>,
    Option<(registry::Lookup, String, String)>,
);

/// The image `reference` names, in the caller's cache (see `registry::cache`): the file there,
/// or one being fetched into it (with its head only, so far). A tag is looked up every time
/// (with `guess`, while the image it named last time is verified); a reference by digest whose
/// image is cached needs no request.
fn from_registry(reference: &str, ctx: &Context, guess: bool) -> Result<Resolved> {
    registry::refuse_if_elevated(ctx)?;
    let limit = ctx
        .env("THAW_CACHE_MAX")
        .map(|v| v.to_string_lossy().into_owned());
    let limit = cache::limit(limit.as_deref()).map_err(|e| Failure::new(Code::Usage, e))?;
    let cache = cache_dir(ctx)
        .and_then(|c| working_set::own_dir(&c, &["images"]))
        .map(|d| Cache::new(d).bounded(limit))
        .ok_or_else(|| {
            Failure::new(
                Code::Refused,
                format!(
                    "{reference}: no cache directory of yours to fetch it into; `thaw pull` it"
                ),
            )
        })?;
    // A reference by digest names one manifest for good: when its image is in the cache, the
    // registry is not asked anything (a cached file is verified like any other).
    let pinned = registry::pinned_digest(reference);
    if let Some(path) = pinned
        .as_ref()
        .map(|d| cache.image(d))
        .filter(|p| p.exists())
    {
        return Ok((cache, path, None, None));
    }
    if let Some(last) = cache
        .last_named(reference)
        .filter(|_| guess && pinned.is_none())
    {
        let asked = registry::Lookup::start(reference, ctx)?;
        GUESSING.store(true, Ordering::Relaxed);
        let path = cache.image(&last);
        return Ok((
            cache,
            path,
            None,
            Some((asked, reference.to_string(), last)),
        ));
    }
    let remote = registry::Remote::new(reference, ctx)?;
    let (m, digest) = remote.manifest()?;
    cache.remember(reference, &digest);
    let path = cache.image(&digest);
    if path.exists() {
        return Ok((cache, path, None, None));
    }
    let sparse = registry::Sparse::create(remote, &m, &path, Some(cache.clone()))?;
    Ok((cache, sparse.path().to_owned(), Some(sparse), None))
}

/// The listening sockets the caller hands in: `--listen-fd` numbers and systemd's LISTEN_FDS
/// (when LISTEN_PID names this process; not read by a privileged launcher, like every variable),
/// each checked to be a listening socket.
fn given_listeners(numbers: &[i32], ctx: &Context) -> Result<Vec<std::os::fd::OwnedFd>> {
    let mut fds: Vec<i32> = numbers.to_vec();
    let env = |k| {
        ctx.env(k)
            .and_then(|v| v.to_str().and_then(|v| v.parse::<i32>().ok()))
    };
    if env("LISTEN_PID") == Some(std::process::id() as i32) {
        fds.extend((0..env("LISTEN_FDS").unwrap_or(0).clamp(0, 1024)).map(|i| 3 + i));
    }
    fds.iter()
        .map(|&fd| {
            let bad = |why: String| Failure::new(Code::Usage, format!("--listen-fd {fd}: {why}"));
            match sys::dup_listening_socket(fd) {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err(bad("not a listening socket".into())),
                Err(e) => Err(bad(e.to_string())),
            }
        })
        .collect()
}

/// Whether someone other than the caller and root could change the image file in place.
fn writable_by_others(file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return true;
    };
    let me = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    meta.mode() & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0)
}

/// Test hook: with `THAW_TEST_PAUSE_AFTER_VERIFY=FIFO` (read only by an unprivileged launcher), wait
/// after verification until a line arrives on FIFO, so that a test can change the image file
/// exactly then.
fn pause_for_tests(ctx: &Context) -> Result {
    let Some(fifo) = ctx.env("THAW_TEST_PAUSE_AFTER_VERIFY") else {
        return Ok(());
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::open(&fifo).map_err(|e| {
            Failure::new(Code::Io, format!("cannot open the test pause FIFO: {e}"))
        })?),
        &mut line,
    )
    .map_err(|e| Failure::new(Code::Io, format!("cannot read the test pause FIFO: {e}")))?;
    Ok(())
}

/// Runs its closure when dropped.
struct OnDrop<F: Fn()>(F);

impl<F: Fn()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
