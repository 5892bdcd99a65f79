// T17: worker.terminate() with pending reads and writes in the worker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { bcv, entry, sleep, rejectsClosed } from './helpers.mjs';

const workerSource = `
const { parentPort } = require('node:worker_threads');
const bcv = require(${JSON.stringify(entry)});
const keep = [];
(async () => {
  const [w, r] = bcv.pipe(4096);
  keep.push(w, r, r.read(), w.write(Buffer.alloc(1)));          // a read that completes, then
  const [w2, r2] = bcv.pipe(4096);
  keep.push(w2, r2, r2.read());                                  // a pending read
  const [w3, r3] = bcv.pipe(4096);
  keep.push(w3, r3, w3.write(Buffer.alloc(1 << 20)));            // a pending write (buffer full)
  const l = bcv.tcpListen('127.0.0.1', 0);
  keep.push(l, l.accept());                                      // a pending accept
  const { transformer, output } = bcv.gzipCompress(r3, 1);
  keep.push(transformer, output, output.read());
  const [fw, fr] = bcv.future();
  keep.push(fw, fr, fr.wait());
  for (const p of keep) if (p && typeof p.catch === 'function') p.catch(() => {});
  parentPort.postMessage({ ready: true });
  setInterval(() => {}, 1000);
})();
`;

test('T17: terminating a worker with pending operations: main keeps working, worker nodes reach 0, no abort', async () => {
  const [mw, mr] = bcv.pipe(1024);
  const mainPending = mr.read();
  const before = bcv.diagnostics().liveNodes;
  for (let round = 0; round < 3; round++) {
    const worker = new Worker(workerSource, { eval: true });
    const [msg] = await once(worker, 'message');
    assert.equal(msg.ready, true);
    assert.ok(bcv.diagnostics().liveNodes > before, 'the worker created nodes');
    await sleep(20);
    const exitCode = await worker.terminate();
    assert.equal(exitCode, 1);
  }
  // The worker's env scope was closed; its nodes drain to zero.
  const deadline = Date.now() + 5000;
  while (bcv.diagnostics().liveNodes > before && Date.now() < deadline) {
    await bcv.reaperFlush();
    await sleep(10);
  }
  assert.equal(bcv.diagnostics().liveNodes, before);
  // The main thread's nodes keep working.
  await mw.write('still here');
  assert.equal(String(await mainPending), 'still here');
  mw.finish();
  assert.equal(await mr.read(), null);
  mr.close();
});

test('T17: a worker that closes its own handles and exits normally', async () => {
  const worker = new Worker(`
    const bcv = require(${JSON.stringify(entry)});
    (async () => {
      const [w, r] = bcv.pipe();
      const p = r.read();
      await w.write('x');
      if (String(await p) !== 'x') process.exit(2);
      w.close();
      try { await r.read(); process.exit(3); } catch (e) { if (e.reason !== 'PEER_DROPPED') process.exit(4); }
    })();
  `, { eval: true });
  const [code] = await once(worker, 'exit');
  assert.equal(code, 0);
  const [w, r] = bcv.pipe();
  w.close();
  await rejectsClosed(r.read(), 'PEER_DROPPED');
});
