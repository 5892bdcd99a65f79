// T34: strict level Error: a writer collected without finish raises StrictModeViolation(V2) at the next
// bcv call on this thread, never in the finalizer, and the reader still sees PEER_DROPPED.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';

process.env.BCV_STRICT = 'error'; // read when the runtime starts, on first use
const { bcv, rejectsClosed } = await import('./helpers.mjs');

async function gcOnly() {
  for (let i = 0; i < 8; i++) {
    global.gc();
    await tick();
  }
}

test('T34: V2 raised at the next call, not in the finalizer; behaviour unchanged', async () => {
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  const r = (() => {
    const [, r] = bcv.pipe(16);
    return r;
  })();
  await gcOnly(); // the writer is finalized here: no exception may escape
  assert.deepEqual(uncaught, []);
  let violation;
  assert.throws(() => bcv.pipe(), (e) => {
    violation = e;
    return true;
  });
  assert.ok(violation instanceof bcv.StrictModeViolation, String(violation));
  assert.equal(violation.code, 'BCV_STRICT');
  assert.equal(violation.violation, 'V2');
  assert.equal(violation.nodeLabel, 'pipe writer');
  assert.ok(bcv.diagnostics().violations.V2 >= 1);
  // Reported once; the next call succeeds, and the reader sees PEER_DROPPED exactly as without strict mode.
  await rejectsClosed(r.read(), 'PEER_DROPPED');
  process.off('uncaughtException', onUncaught);
});

test('strict mode: a future writer collected without a value is V3', async () => {
  const fr = (() => bcv.future()[1])();
  await gcOnly();
  assert.throws(() => bcv.streamFromBytes('x'), (e) => e instanceof bcv.StrictModeViolation && e.violation === 'V3');
  await rejectsClosed(fr.wait(), 'PEER_DROPPED');
});
