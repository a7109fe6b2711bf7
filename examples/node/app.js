// A Node.js program that warms up with a real npm package — the TypeScript compiler, loaded and
// JIT-compiled by compiling sample programs — checkpoints through the `thaw` package (sdk/node),
// and after every restore answers the request given to `thaw run IMAGE -- REQUEST`: a TypeScript
// snippet compiled to JavaScript (with its syntax errors), printed as the first line, exactly as
// a cold run prints it. Then it shows that the rest of Node works in the restored process.
//
//   scripts/node-deps                       # typescript (pinned) into target/node-deps
//   sdk/node/build.sh target/node/thaw      # the thaw package
//   node examples/node/app.js --cold 'let x: number = 6 * 7'     # cold: load, compile, answer
//   node examples/node/app.js app.thaw k.key                     # warm up, checkpoint, exit
//   thaw run --trust k.pub app.thaw -- 'let x: number = 6 * 7'   # restored: answer at once
//
// THAW_NODE_PACKAGE and TYPESCRIPT override where the two packages are found.
'use strict';
const path = require('path');
const fs = require('fs');

const root = path.join(__dirname, '..', '..');
const ts = require(process.env.TYPESCRIPT || path.join(root, 'target/node-deps/typescript'));

// ---- the application: compile a TypeScript snippet to JavaScript, reporting syntax errors ----
const compilerOptions = {
  target: ts.ScriptTarget.ES2020,
  module: ts.ModuleKind.CommonJS,
  strict: true,
  esModuleInterop: true,
};

function compile(name, source) {
  const out = ts.transpileModule(source, { compilerOptions, fileName: name, reportDiagnostics: true });
  return {
    js: out.outputText.replace(/\s+/g, ' ').trim(),
    errors: (out.diagnostics || []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' ')),
  };
}

function answer(request) {
  return 'answer ' + JSON.stringify(compile('request.ts', request));
}

const request0 = process.argv[2] === '--cold' ? process.argv[3] || '' : null;
if (request0 !== null) {
  // A cold run answers directly: what every restore must answer too.
  console.log(answer(request0));
  process.exit(0);
}

// ---- warm up: typical programs, so the compiler's paths are JIT-compiled ----
const samples = [
  'interface P { x: number; y: number }\nconst ps: P[] = [{ x: 1, y: 2 }];\nexport const s = ps.map(p => p.x + p.y).reduce((a, b) => a + b, 0);',
  'export class Stack<T> { private items: T[] = []; push(t: T) { this.items.push(t); } pop(): T | undefined { return this.items.pop(); } }',
  'export async function f(xs: Promise<number>[]) { const r = await Promise.all(xs); return new Map(r.map(n => [n, String(n)])); }',
  'type U = "a" | "b"; export function g(u: U): number { switch (u) { case "a": return 1; case "b": return 2; } }',
  'export const bad: string = 42;',
  'enum Color { Red, Green }\nnamespace N { export const c = Color.Green; }\nexport default N.c;',
  'export const broken = (x: number => x;',
];
for (let round = 0; round < 200; round++) {
  samples.forEach((s, i) => compile(`warm${i}.ts`, s + `\n// ${round}`));
}

const thaw = require(process.env.THAW_NODE_PACKAGE || path.join(root, 'target/node/thaw'));
const crypto = require('crypto');
const http = require('http');

// Resources: opened in order, closed in reverse before the checkpoint, reopened after it.
const hookLog = [];
const warmServer = http.createServer((_q, s) => s.end('warm'));
thaw.register({
  beforeCheckpoint() {
    hookLog.push('before:server');
    // Nothing listens in the image (thaw could restore a listening socket; an app decides), and
    // the server's connections go (thaw refuses TCP connections); the package itself closes
    // http.globalAgent's idle keep-alive socket, the client side.
    warmServer.close();
    warmServer.closeAllConnections();
  },
  afterRestore(info) {
    hookLog.push(`after:server:${info.restored}`);
  },
});
thaw.register({
  beforeCheckpoint() {
    hookLog.push('before:cache');
  },
  afterRestore(info) {
    hookLog.push(`after:cache:${info.restored}`);
  },
});

// Warm the HTTP stack too: one request through http.globalAgent (it keeps the connection alive),
// then the rest, once the response is in.
warmServer.listen(0, '127.0.0.1', () => {
  http.get({ host: '127.0.0.1', port: warmServer.address().port, path: '/' }, (resp) => {
    resp.resume();
    resp.on('end', () => setImmediate(main));
  });
});

function main() {
  // State the restored life checks: a pending timer, the clocks as the first life last saw them.
  let timerFired = false;
  setTimeout(() => {
    timerFired = true;
  }, 50);
  crypto.randomBytes(16); // OpenSSL's DRBGs are seeded in the first life
  crypto.randomUUID(); // and Node's batch of UUIDs filled
  const before = { date: Date.now(), perf: performance.now() };
  console.log('first life pid', process.pid);

  const r = thaw.checkpoint(process.argv[2], { key: process.argv[3] || null, exitAfterSave: true });

  // ---- every restored life starts here ----
  console.log(answer(r.args[0] || ''));
  const after = { date: Date.now(), perf: performance.now() };
  console.log(`pid ${process.pid} restores ${r.restores} openssl reseeded ${r.reseeded.openssl}`);
  console.log(`hooks ${hookLog.join(',')}`);
  console.log(
    `clocks date ${before.date} ${after.date} perf ${before.perf.toFixed(3)} ${after.perf.toFixed(3)}`
  );
  console.log(`random ${crypto.randomBytes(16).toString('hex')} uuid ${crypto.randomUUID()}`);
  console.log(`math.random ${Math.random()} (V8 cannot be reseeded: the same in every restore)`);
  console.log(`env THAW_EXAMPLE=${r.env.THAW_EXAMPLE || ''}`);

  const checks = [];
  function check(name, promise) {
    checks.push(
      promise.then(
        (v) => console.log(`${name} ok${v === undefined ? '' : ' ' + v}`),
        (e) => console.log(`${name} FAIL ${e && e.stack}`)
      )
    );
  }
  // The pending timer from the first life fires (the event loop's timer heap and clock came back).
  check(
    'timer',
    new Promise((res) => {
      const poll = setInterval(() => {
        if (timerFired) {
          clearInterval(poll);
          res();
        }
      }, 5);
    })
  );
  check('promise', Promise.resolve());
  check('immediate', new Promise((res) => setImmediate(res)));
  // libuv's thread pool: fs and crypto work done on its threads.
  check('fs', fs.promises.readFile(__filename).then((b) => b.length > 0));
  check(
    'threadpool',
    new Promise((res, rej) =>
      crypto.pbkdf2('a', 'b', 1000, 16, 'sha256', (e, k) => (e ? rej(e) : res(k.length)))
    )
  );
  // Signals through libuv's signal pipe.
  check(
    'signal',
    new Promise((res) => {
      process.once('SIGUSR2', () => res());
      process.kill(process.pid, 'SIGUSR2');
    })
  );
  // V8's platform threads: a full GC with concurrent marking, and a new thread (a Worker).
  check(
    'worker',
    new Promise((res, rej) => {
      const { Worker } = require('worker_threads');
      const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
      w.once('message', res);
      w.once('error', rej);
    })
  );
  // A server created after restore listens on 127.0.0.1 and answers.
  check(
    'server',
    new Promise((res, rej) => {
      const server = http.createServer((_q, s) => s.end('pong ' + process.pid));
      server.listen(0, '127.0.0.1', () => {
        http
          .get({ host: '127.0.0.1', port: server.address().port, path: '/' }, (resp) => {
            let body = '';
            resp.on('data', (d) => (body += d));
            resp.on('end', () => {
              server.close();
              res(body);
            });
          })
          .on('error', rej);
      });
    })
  );
  // The inspector's watchdog thread (it blocks every signal) wakes on SIGUSR1 and starts the
  // inspector (on any free port here).
  check(
    'inspector',
    new Promise((res) => {
      process.debugPort = 0;
      process.kill(process.pid, 'SIGUSR1');
      const inspector = require('inspector');
      const poll = setInterval(() => {
        if (inspector.url()) {
          clearInterval(poll);
          inspector.close();
          res();
        }
      }, 5);
    })
  );
  Promise.all(checks).then(() => console.log('done'));
}
