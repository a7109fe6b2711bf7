// A Node.js program started the way its users start it (`node warm.js IMAGE KEY`): it warms up
// (JIT-compiled functions, a large Map, libuv's thread pool), checkpoints, and after every
// restore answers the request given to `thaw run -- REQUEST`, then shows that the event loop,
// the thread pool, timers, and the inspector's watchdog thread (woken by SIGUSR1) all work.
const path = require('path');
const thaw = require(process.env.THAW_NODE_ADDON || path.join(__dirname, 'thaw.node'));
const crypto = require('crypto');

const table = new Map();
for (let i = 0; i < 200000; i++) table.set('k' + i, i * i);
function answer(q) {
  let h = 0;
  for (const c of q) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `${q} -> ${table.get('k' + (h % 200000))}`;
}
for (let i = 0; i < 100000; i++) answer('warm' + i);
crypto.pbkdf2Sync('warm', 'salt', 10, 16, 'sha256');

if (process.argv[2] === '--cold') {
  // A cold run answers directly: what a restore must answer too.
  console.log('answer', answer(process.argv[3] || ''));
  process.exit(0);
}
console.log('first life pid', process.pid);
const r = thaw.checkpoint(process.argv[2], process.argv[3] || '', true);
// ---- second life ----
const request = thaw.args()[0] || '';
console.log('restored', r, 'pid', process.pid);
console.log('answer', answer(request));
Promise.resolve().then(() => console.log('promise ok'));
setTimeout(() => console.log('timer ok'), 1);
require('fs').readFile(__filename, (e) => console.log('fs ok', !e));
crypto.pbkdf2('a', 'b', 1000, 16, 'sha256', (e, k) => console.log('thread pool ok', !e && k.length));
// The inspector's watchdog thread blocks every signal and waits for SIGUSR1's handler to post
// its semaphore: once it runs, the inspector listens (on any free port here).
process.debugPort = 0;
process.kill(process.pid, 'SIGUSR1');
const inspector = require('inspector');
const poll = setInterval(() => {
  if (inspector.url()) {
    clearInterval(poll);
    console.log('inspector ok');
    inspector.close();
  }
}, 5);
