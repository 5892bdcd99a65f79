// T18: process.exit() with pending async operations keeps the exit status and never aborts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { entry } from './helpers.mjs';

function runChild(source) {
  return spawnSync(process.execPath, ['-e', source], { encoding: 'utf8', timeout: 20_000 });
}

const pending = `
const bcv = require(${JSON.stringify(entry)});
const keep = [];
const [w, r] = bcv.pipe(16);
keep.push(r.read().catch(() => {}));
const [w2, r2] = bcv.pipe(16);
keep.push(w2.write(Buffer.alloc(1 << 16)).catch(() => {}));
const l = bcv.tcpListen('127.0.0.1', 0);
keep.push(l.accept().catch(() => {}));
const { output } = bcv.gzipCompress(r2, 1);
keep.push(output.read().catch(() => {}));
bcv.tcpConnect('127.0.0.1', l.localPort).then((s) => keep.push(s, s.takeReceive().read().catch(() => {})));
`;

test('T18: process.exit(3) with pending reads, writes, accepts: exit code 3, no abort', () => {
  const res = runChild(`${pending}\nsetTimeout(() => process.exit(3), 50);`);
  assert.equal(res.signal, null, res.stderr);
  assert.equal(res.status, 3, res.stderr);
  assert.doesNotMatch(res.stderr, /abort|FATAL|Assertion|panicked/i);
});

test('T18: process.exit(3) from inside a bcv promise callback', () => {
  const res = runChild(`${pending}\nconst [a, b] = bcv.pipe(); b.read().then(() => process.exit(3)); a.write('x');`);
  assert.equal(res.signal, null, res.stderr);
  assert.equal(res.status, 3, res.stderr);
});

test('T18: a natural exit with handles still open exits 0', () => {
  // Open but idle handles do not keep the process alive (only pending operations do).
  const res = runChild(`
    const bcv = require(${JSON.stringify(entry)});
    const [w, r] = bcv.pipe(16);
    w.write('buffered');
    const l = bcv.tcpListen('127.0.0.1', 0);
    const { output } = bcv.gzipCompress(bcv.streamFromBytes('abc'));
    globalThis.keep = [w, r, l, output];
  `);
  assert.equal(res.signal, null, res.stderr);
  assert.equal(res.status, 0, res.stderr);
});
