'use strict';
// thaw for Node.js: checkpoint a warm Node.js process into a signed image; `thaw run IMAGE -- ARGS`
// restores it with its original PID, and `checkpoint()` returns a second time, in the restored
// process, with the arguments and environment `thaw run` was given. See docs/node.md.

const native = require('./thaw.node');

const CODES = {
  THAW_ERR_INVALID: -1,
  THAW_ERR_UNSUPPORTED: -2,
  THAW_ERR_IO: -3,
  THAW_ERR_FAILED: -4,
};

// Registered resources, in registration order: { beforeCheckpoint?, afterRestore? }. Each V8
// isolate (the main thread, each Worker that loads the package) has its own.
const resources = [];

function thawError(message, code, extra) {
  const e = new Error(message, extra && extra.cause !== undefined ? { cause: extra.cause } : undefined);
  e.code = code;
  e.errno = CODES[code];
  if (extra) {
    for (const [k, v] of Object.entries(extra)) if (k !== 'cause') e[k] = v;
  }
  return e;
}

/**
 * Registers a resource: `beforeCheckpoint(info)` runs before every checkpoint (in reverse order
 * of registration: what was opened last is closed first), `afterRestore(info)` after it in
 * whichever life goes on (in order of registration), also when the checkpoint failed or the first
 * life continues (`info.restored` tells which). Returns a function that unregisters it.
 */
function register(resource) {
  if (resource === null || typeof resource !== 'object') {
    throw new TypeError('register(resource): resource must be an object');
  }
  for (const k of ['beforeCheckpoint', 'afterRestore']) {
    if (resource[k] !== undefined && typeof resource[k] !== 'function') {
      throw new TypeError(`register(resource): ${k} must be a function`);
    }
  }
  const entry = { resource };
  resources.push(entry);
  return () => {
    const i = resources.indexOf(entry);
    if (i >= 0) resources.splice(i, 1);
  };
}

function beforeCheckpoint(fn) {
  if (typeof fn !== 'function') throw new TypeError('beforeCheckpoint(fn): fn must be a function');
  return register({ beforeCheckpoint: fn });
}

function afterRestore(fn) {
  if (typeof fn !== 'function') throw new TypeError('afterRestore(fn): fn must be a function');
  return register({ afterRestore: fn });
}

// Runs afterRestore of `entries` in order; every hook runs; returns the errors thrown.
function runAfter(entries, info) {
  const errors = [];
  for (const { resource } of entries) {
    if (!resource.afterRestore) continue;
    try {
      resource.afterRestore.call(resource, info);
    } catch (e) {
      errors.push(e);
    }
  }
  return errors;
}

function crypto_loaded() {
  // Node's crypto caches random bytes in JS (randomUUID: 128 UUIDs, randomInt: 6 KiB). Only
  // touch them if internal/crypto/random was ever loaded (loading it costs a few ms).
  return process.moduleLoadList.includes('NativeModule internal/crypto/random');
}

/**
 * Reseeds what can be reseeded in this process after a restore (checkpoint() calls it before any
 * hook runs): OpenSSL's DRBGs, then Node's JS-side caches of random bytes (randomUUID's batch and
 * randomInt's cache are consumed past a refill). V8's Math.random cannot be reseeded: see
 * docs/node.md. Returns { openssl } telling whether OpenSSL was found and reseeded.
 */
function reseed() {
  seededFor = native.restores();
  const openssl = native.reseedOpenSSL();
  reseedCaches();
  return { openssl };
}

// The restore count this isolate last reseeded its caches for (see catchUp).
let seededFor = native.restores();

// Reseeds OpenSSL and this isolate's caches if a restore happened since it last did. crypto's
// random functions call this first: in an isolate other than the checkpointing one (a Worker
// woken from Atomics.wait, or handling a message in the same turn as the restore's notice) they
// may run before its next turn, and would hand out the first life's cached UUIDs, the same in
// every restore.
function catchUp() {
  const now = native.restores();
  if (now === seededFor) return;
  seededFor = now;
  native.reseedOpenSSL();
  reseedCaches();
}

// crypto's random functions, each calling catchUp first: on the module (so `crypto.randomUUID()`
// and ESM imports of it, synced) and on the Web Crypto object (`globalThis.crypto`). A function
// taken from the module before this package loaded is not covered (docs/node.md).
function guardRandom() {
  let crypto;
  try {
    crypto = require('crypto');
  } catch {
    return; // a Node built without OpenSSL
  }
  const guard = (obj, name) => {
    const desc = obj && Object.getOwnPropertyDescriptor(obj, name);
    // (crypto.getRandomValues is a getter of Web Crypto's, guarded on its prototype.)
    if (!desc || !desc.configurable || typeof desc.value !== 'function') return;
    const fn = desc.value;
    if (fn.thawGuarded) return;
    const guarded = function (...args) {
      catchUp();
      if (name in used) used[name] = true;
      return fn.apply(this, args);
    };
    Object.defineProperty(guarded, 'name', { value: fn.name });
    guarded.thawGuarded = true;
    Object.defineProperty(obj, name, { ...desc, value: guarded });
  };
  for (const name of ['randomUUID', 'randomInt', 'randomBytes', 'randomFillSync', 'randomFill', 'getRandomValues']) {
    guard(crypto, name);
  }
  const web = globalThis.crypto && Object.getPrototypeOf(globalThis.crypto);
  guard(web, 'randomUUID');
  guard(web, 'getRandomValues');
  require('module').syncBuiltinESMExports();
}

// Whether crypto was loaded before this package wrapped its functions (see guardRandom): code
// may then hold unwrapped ones, whose use is not seen.
const cryptoBefore = crypto_loaded();
// Which caches the wrapped functions have seen used (randomUUID's batch, randomInt's cache).
const used = { randomUUID: false, randomInt: false };

// This isolate's JS-side caches of random bytes: consumed past a refill, where they may hold
// anything.
function reseedCaches() {
  if (crypto_loaded()) {
    const crypto = require('crypto');
    if (cryptoBefore || used.randomUUID) for (let i = 0; i <= 128; i++) crypto.randomUUID();
    if (cryptoBefore || used.randomInt) for (let i = 0; i <= 1024; i++) crypto.randomInt(1);
  }
  // c-ares draws its query IDs from 256 random bytes each channel keeps: the default resolver's
  // would send the same IDs in every restore. Setting its servers to themselves gives it fresh
  // ones. Node refuses while one of its queries is in flight: then they stay (docs/node.md).
  if (process.moduleLoadList.includes('NativeModule dns')) {
    const dns = require('dns');
    for (const r of [dns, dns.promises]) {
      try {
        r.setServers(r.getServers());
      } catch {
        // (A query in flight.)
      }
    }
  }
}
guardRandom();

function restoredInfo(extra) {
  const envList = native.restoredEnv();
  return {
    restored: true,
    args: native.restoredArgs(),
    env: envObject(envList),
    envList,
    restores: native.restores(),
    ...extra,
  };
}

// A restore made by another isolate's checkpoint (the main thread's, seen from a Worker, or a
// Worker's, seen from the main thread): at this isolate's next turn, its caches are reseeded and
// its afterRestore hooks run (info.elsewhere is true). OpenSSL is the whole process's: reseeded
// once, by the checkpointing isolate, before any hook runs.
native.watch(() => {
  catchUp();
  const errors = runAfter(resources.slice(), restoredInfo({ elsewhere: true }));
  for (const e of errors) process.emitWarning(`thaw: an afterRestore hook failed: ${e && e.message}`);
});

// Bytes Node had queued for standard output or error (its reader was slow) when the checkpoint
// was taken. libuv writes them once the event loop sees the descriptor writable, and in a
// restored process that descriptor is the caller's: epoll cannot wait on a regular file or most
// devices, and libuv aborts the process when it tries. Said plainly instead.
function queuedStdio() {
  const out = [];
  for (const fd of [1, 2]) {
    const stream = fd === 1 ? process.stdout : process.stderr;
    // (libuv's queue: a write it waits to finish; the stream's own count is the larger one.)
    const queued = stream && stream._handle && stream._handle.writeQueueSize;
    if (queued > 0) out.push([fd, Math.max(queued, stream.writableLength || 0)]);
  }
  return out;
}

function checkQueuedStdio(queued) {
  for (const [fd, bytes] of queued) {
    let st;
    try {
      st = require('fs').fstatSync(fd);
    } catch {
      continue;
    }
    if (st.isFIFO() || st.isSocket() || (st.isCharacterDevice() && require('tty').isatty(fd))) {
      continue;
    }
    const name = fd === 1 ? 'standard output' : 'standard error';
    const now = st.isFile() ? 'a regular file' : 'a file the event loop cannot wait on';
    require('fs').writeSync(
      2,
      `thaw: ${name} had ${bytes} bytes Node had not yet written at the checkpoint (its reader was slow), and is ${now} now, where they cannot be written: restore with a pipe as ${name} (e.g. thaw run IMAGE | cat > FILE), or checkpoint once process.${fd === 1 ? 'stdout' : 'stderr'} has drained\n`
    );
    (process.reallyExit || process.exit)(68);
  }
}

// Idle keep-alive sockets of http(s).globalAgent (Node 19+ keeps them by default) are connections
// to other processes, which thaw refuses: they are a cache, so they are closed (the descriptor
// goes at once; the agent opens new ones when needed).
function closeIdleSockets() {
  for (const name of ['http', 'https']) {
    if (!process.moduleLoadList.includes(`NativeModule ${name}`)) continue;
    const agent = require(name).globalAgent;
    for (const list of Object.values(agent.freeSockets || {})) {
      for (const socket of [...list]) socket.destroy();
    }
  }
}

// A value from a fresh context created while V8's `flag` is on: the flag only applies to contexts
// created after it, so it is set for a moment (unless Node was started with it). null where this
// V8 refuses `source`.
function fromFreshContext(flag, source) {
  const v8 = require('v8');
  const given =
    process.execArgv.some((a) => a.replace(/_/g, '-') === `--${flag}`) || flagOn(flag);
  if (!given) v8.setFlagsFromString(`--${flag}`);
  try {
    return require('vm').runInNewContext(source);
  } catch {
    return null;
  } finally {
    if (!given) v8.setFlagsFromString(`--no-${flag}`);
  }
}

// Whether V8's `flag` is on now, however it was set (the application may have set it itself
// with v8.setFlagsFromString): then it is neither set nor turned off around a fresh context.
function flagOn(flag) {
  if (flag === 'expose-gc') return require('vm').runInNewContext('typeof gc') === 'function';
  if (flag === 'allow-natives-syntax') {
    try {
      // eslint-disable-next-line no-new-func
      new Function('return %GetOptimizationStatus(flagOn)');
      return true;
    } catch (e) {
      return !/Unexpected token/.test(String(e && e.message));
    }
  }
  return false;
}

let gcFn;
// A full, synchronous garbage collection: what is garbage is not written into the image, nor
// paged in again by every restore. Without --expose-gc, a fresh context hands out its gc function.
function fullGC() {
  if (typeof globalThis.gc === 'function') return globalThis.gc();
  if (!gcFn) gcFn = fromFreshContext('expose-gc', 'gc');
  if (!gcFn) throw new Error('thaw: V8 gave no gc function');
  gcFn();
}

let finishFn;
// Waits for V8's optimizing compiler threads to finish the functions they are compiling, and
// installs the code (%FinalizeOptimization, reached as gc is, with natives syntax). A job still
// running when the threads are stopped would go on in every restored process, through tens of
// MiB of compiler memory, while it answers. False where this V8 has no such function.
function finishOptimizing() {
  if (finishFn === undefined) {
    finishFn = fromFreshContext('allow-natives-syntax', '(function () { %FinalizeOptimization(); })');
  }
  if (finishFn) {
    try {
      finishFn();
    } catch {
      finishFn = null;
    }
  }
  return finishFn !== null;
}

// Before a checkpoint: no compiler work left running, the heap compacted and its young
// generation shrunk (V8's memory-reducing GC: the addon's reduceHeap), malloc's free pages given
// back. What a restored process reads before it can answer is then its live objects, packed,
// not garbage between them (docs/node.md, "What the package does before a checkpoint").
function prepareHeap() {
  finishOptimizing();
  const start = process.hrtime.bigint();
  if (!native.reduceHeap()) {
    fullGC();
  } else if (process.hrtime.bigint() - start >= 45000000n && garbageLeft()) {
    // When its GC took 50 ms or more and left 8 MiB (and a tenth of the heap) to free, V8 starts
    // an incremental marking instead of a second GC: it would go on in every restored process.
    // A full GC finishes it.
    fullGC();
  }
  native.releaseMemory();
}

// V8's estimate of what another GC could free, as CollectGarbageOnMemoryPressure makes it
// (committed - live + external), with a margin.
function garbageLeft() {
  const h = require('v8').getHeapStatistics();
  const left = h.total_heap_size - h.used_heap_size + (h.external_memory || 0);
  return left >= 6 * 1024 * 1024 && left >= h.total_heap_size * 0.08;
}

function envObject(list) {
  const env = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

/**
 * Checkpoints this process into a signed image at `path`.
 * options: key (path of the Ed25519 signing key; without it the image is unsigned and `thaw run`
 * refuses it unless told otherwise), exitAfterSave (the first life exits 0 once the image is
 * written), leaveChildrenOut, fdPolicy (see setFdPolicy), gc (default true: after the
 * beforeCheckpoint hooks, V8's optimizing compiler finishes its jobs, a compacting,
 * memory-reducing full garbage collection runs, then malloc_trim: the image holds less garbage,
 * and a restore reads less before it answers).
 * Returns { restored: false } in the first life, and in every restored life
 * { restored: true, args, env, envList, restores }. Throws an Error with .code
 * ('THAW_ERR_UNSUPPORTED', ...) and .errno (the C API's code) when the checkpoint fails; the
 * process then goes on unchanged.
 */
function checkpoint(path, options = {}) {
  if (typeof path !== 'string' || path === '') {
    throw new TypeError('checkpoint(path, options): path must be a non-empty string');
  }
  if (options === null || typeof options !== 'object') {
    throw new TypeError('checkpoint(path, options): options must be an object');
  }
  const { key = null, exitAfterSave = false, leaveChildrenOut = false, fdPolicy, gc = true } = options;
  if (key !== null && typeof key !== 'string') {
    throw new TypeError('checkpoint: options.key must be a path (string)');
  }
  // Bun loads Node-API addons, and its process comes back (tried: Bun 1.4), but its
  // randomUUID and getRandomValues come from generators inside JavaScriptCore and Bun that this
  // package cannot reach: they would give the same values in every restore of an image.
  if (process.versions && process.versions.bun) {
    throw thawError(
      `thaw: Bun ${process.versions.bun} is not supported: its crypto.randomUUID() and getRandomValues() cannot be reseeded after a restore, so every restore of an image would repeat the same values; run the program on Node.js`,
      'THAW_ERR_UNSUPPORTED'
    );
  }
  // A hook that checkpoints would run the hooks again, and itself, without end.
  if (inCheckpoint) {
    throw thawError(
      'thaw: checkpoint() called from a beforeCheckpoint or afterRestore hook: checkpoint after the call returns instead',
      'THAW_ERR_INVALID'
    );
  }
  if (fdPolicy !== undefined) setFdPolicy(fdPolicy);
  // From here to the end, a signal another process sends (a supervisor's SIGTERM, a Ctrl-C)
  // reaches this process's listeners after checkpoint() returns in the first life, and never
  // a restore (libuv would otherwise have queued it in the image).
  native.holdSignals();
  inCheckpoint = true;
  try {
    return checkpointHeld(path, key, exitAfterSave, leaveChildrenOut, gc);
  } finally {
    inCheckpoint = false;
    native.releaseSignals();
  }
}

// Whether this thread is inside checkpoint() (its hooks included).
let inCheckpoint = false;

function checkpointHeld(path, key, exitAfterSave, leaveChildrenOut, gc) {
  const flags =
    (exitAfterSave ? native.EXIT_AFTER_SAVE : 0) | (leaveChildrenOut ? native.LEAVE_CHILDREN_OUT : 0);

  // Before: last registered first. A hook that throws aborts the checkpoint; the ones that ran
  // get their afterRestore (restored: false) so the first life goes on with what it had.
  const done = [];
  for (let i = resources.length - 1; i >= 0; i--) {
    const entry = resources[i];
    if (entry.resource.beforeCheckpoint) {
      try {
        entry.resource.beforeCheckpoint.call(entry.resource, { path });
      } catch (e) {
        const errors = runAfter(done.reverse(), { restored: false, aborted: true });
        throw thawError(`thaw: a beforeCheckpoint hook failed: ${e && e.message}`, 'THAW_ERR_FAILED', {
          cause: e,
          errors,
        });
      }
    }
    done.push(entry);
  }
  const ran = done.reverse(); // registration order
  closeIdleSockets();
  if (gc) prepareHeap();

  const queued = queuedStdio();
  let r;
  try {
    r = native.checkpoint(path, key, flags);
  } catch (e) {
    const errors = runAfter(ran, { restored: false, aborted: true, error: e });
    if (errors.length) e.errors = errors;
    throw e;
  }

  let result;
  if (r === native.RESTORED) {
    checkQueuedStdio(queued);
    const seeded = reseed();
    result = restoredInfo({ reseeded: seeded });
  } else {
    result = { restored: false };
  }
  const errors = runAfter(ran, result);
  if (errors.length) {
    throw thawError(
      `thaw: ${errors.length} afterRestore hook(s) failed: ${errors.map((e) => e && e.message).join('; ')}`,
      'THAW_ERR_FAILED',
      { cause: errors[0], errors, result }
    );
  }
  return result;
}

/** Sets the policy for descriptors thaw cannot restore, e.g. 'pipe=drop,251=null'; null clears. */
function setFdPolicy(spec) {
  if (spec !== null && typeof spec !== 'string') {
    throw new TypeError('setFdPolicy(spec): spec must be a string or null');
  }
  native.setFdPolicy(spec);
}

module.exports = {
  checkpoint,
  register,
  beforeCheckpoint,
  afterRestore,
  setFdPolicy,
  reseed,
  /** True in a process restored from an image (and in no first life), in every thread. */
  get restored() {
    return native.restores() > 0;
  },
  /** How many times this process was restored (0 in the first life). */
  get restores() {
    return native.restores();
  },
  codes: Object.freeze({ ...CODES }),
};
