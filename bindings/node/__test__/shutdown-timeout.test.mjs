// T31: a foreign (JS) callback that never returns makes shutdown() time out with its node id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bcv, sleep } from './helpers.mjs';

test('T31: shutdown(500) with a stuck onData callback rejects ShutdownTimeoutError(stuckNodeIds) at ~500 ms', async () => {
  const [w, r] = bcv.pipe(16);
  let release;
  const stuck = new Promise((resolve) => { release = resolve; });
  let calls = 0;
  r.onData(() => {
    calls++;
    return stuck; // does not settle until the test lets it
  });
  await w.write('x');
  await sleep(50);
  assert.equal(calls, 1);
  const t0 = performance.now();
  const err = await bcv.shutdown(500).then(() => null, (e) => e);
  const took = performance.now() - t0;
  assert.ok(err instanceof bcv.ShutdownTimeoutError, String(err));
  assert.equal(err.code, 'BCV_SHUTDOWN_TIMEOUT');
  assert.ok(err.stuckNodeIds.includes(r.id), `${err.stuckNodeIds} lacks ${r.id}`);
  assert.ok(took >= 450 && took < 1500, `${took} ms`);
  release();
  await sleep(50);
  assert.equal(calls, 1, 'no callback after shutdown');
});
