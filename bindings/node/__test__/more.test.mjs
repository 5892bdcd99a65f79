// T33 (strict mode, wasip2 profile: V1 reported, behaviour unchanged) and T35 (soak).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { bcv, entry, collect, openFds, payload } from './helpers.mjs';

// ---------------------------------------------------------------------------------------------------
// T33

/**
 * The child's scenario: a gzip transformer P over a pipe, its output SR live; P is released (collected)
 * before any byte flowed, then the data is written and SR is read to EOF. Prints a JSON report.
 */
const t33Child = `
const bcv = require(${JSON.stringify(entry)});
const { setImmediate: tick } = require('node:timers/promises');
async function collect() {
  for (let i = 0; i < 8; i++) { global.gc(); await tick(); }
  await bcv.reaperFlush();
}
(async () => {
  const data = Buffer.alloc(300000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251 & 15;
  const [w, r] = bcv.pipe(4096);
  let pId;
  const sr = (() => {
    const { transformer, output } = bcv.gzipCompress(r, 1);
    pId = transformer.id;
    return output; // the transformer handle P is released here
  })();
  await collect();
  const afterRelease = bcv.diagnostics().violations;
  const writing = (async () => { for (let o = 0; o < data.length; o += 10000) await w.write(data.subarray(o, o + 10000)); w.finish(); })();
  const [, compressed] = await Promise.all([writing, sr.readAll()]);
  await bcv.reaperFlush();
  const zlib = require('node:zlib');
  const v1 = bcv.strictDiagnostics().filter((d) => d.violation === 'V1');
  console.log(JSON.stringify({
    pId,
    srLabel: sr.label,
    srState: sr.state,
    plainOk: zlib.gunzipSync(compressed).equals(data),
    compressed: compressed.toString('base64'),
    afterRelease,
    violations: bcv.diagnostics().violations,
    v1: v1.map((d) => ({ nodeId: d.nodeId, nodeLabel: d.nodeLabel, backtrace: d.creationBacktrace ?? '' })),
  }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

function runT33(strict) {
  const env = { ...process.env };
  delete env.BCV_STRICT;
  if (strict !== undefined) env.BCV_STRICT = strict;
  const res = spawnSync(process.execPath, ['--expose-gc', '-e', t33Child], { encoding: 'utf8', timeout: 30_000, env });
  assert.equal(res.signal, null, res.stderr);
  assert.equal(res.status, 0, res.stderr);
  return JSON.parse(res.stdout.trim().split('\n').at(-1));
}

test('T33: strict warn + wasip2: releasing a parent before its live output records V1 with a creation backtrace; the output still reads to EOF as without strict mode', () => {
  const strict = runT33('warn,wasip2');
  const plain = runT33(undefined);
  // Reported when P was released, before any byte flowed.
  assert.ok(strict.afterRelease.V1 >= 1, `V1 after releasing P: ${JSON.stringify(strict.afterRelease)}`);
  assert.equal(strict.violations.V1, 1, JSON.stringify(strict.violations));
  assert.equal(strict.v1.length, 1, JSON.stringify(strict.v1));
  assert.equal(strict.v1[0].nodeId, strict.pId, 'the diagnostic names the released parent');
  assert.equal(strict.v1[0].nodeLabel, 'gzip compress');
  assert.ok(strict.v1[0].backtrace.length > 0, 'a creation backtrace is recorded');
  // Behaviour unchanged: SR read to a clean EOF, the same bytes as without strict mode.
  assert.equal(strict.plainOk, true);
  assert.equal(plain.plainOk, true);
  assert.equal(strict.compressed, plain.compressed);
  assert.equal(strict.srState, plain.srState);
  // Without strict mode nothing is recorded; the hygiene profile does not report V1.
  assert.equal(plain.violations.V1, 0);
  assert.equal(plain.v1.length, 0);
  const hygiene = runT33('warn');
  assert.equal(hygiene.violations.V1, 0);
  assert.equal(hygiene.compressed, plain.compressed);
});

// ---------------------------------------------------------------------------------------------------
// T35

function rss() {
  return process.memoryUsage().rss;
}

/** Deterministic xorshift PRNG in [0, 1). */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

const noop = () => {};
const BODY = Buffer.from('body bytes');

/**
 * One cycle: a "request" (a pipe; a gzip transformer every 16th time) whose body is taken, plus a
 * trailers-like future; each handle is then closed or left to the GC, in a random order.
 */
function cycle(random, i) {
  const [w, r] = bcv.pipe(256);
  w.write(BODY).catch(noop);
  if (random() < 0.5) w.finish();
  const handles = [w];
  if (i % 16 === 0) {
    const { transformer, output } = bcv.gzipCompress(r, 1);
    handles.push(transformer, output);
  } else {
    handles.push(r);
  }
  const [fw, fr] = bcv.future();
  if (random() < 0.5) fw.write(7);
  handles.push(fw, fr);
  for (let k = handles.length - 1; k > 0; k--) {
    const j = Math.floor(random() * (k + 1));
    [handles[k], handles[j]] = [handles[j], handles[k]];
  }
  for (const h of handles) {
    if (random() < 0.5) h.close(); // else released when collected
  }
}

async function run(cycles, random, rhythm) {
  for (let i = 0; i < cycles; i++) {
    cycle(random, i);
    if (i % rhythm === rhythm - 1) await collect(2);
  }
  await collect(8);
}

test('T35 soak: 100k create → take body → random-order release cycles: RSS growth < 5 MiB, 0 live nodes, fds stable', async (t) => {
  const cycles = Number(process.env.BCV_SOAK_CYCLES) || 100_000;
  // Let the GC and the reaper catch up every 500 cycles (a steady state, as a server between bursts).
  const rhythm = 500;
  const random = rng(35);
  const createdBefore = bcv.diagnostics().createdNodes;
  // Warm-up with the same rhythm: sets the allocators' (and V8's) high-water marks before the baseline.
  await run(Math.max(cycles / 5, 20_000), random, rhythm);
  assert.equal(await bcv.waitIdle(30_000), 0, JSON.stringify(bcv.diagnostics()));
  const fds = openFds();
  const baseline = rss();
  const started = performance.now();
  await run(cycles, random, rhythm);
  const seconds = (performance.now() - started) / 1000;
  assert.equal(await bcv.waitIdle(30_000), 0, `live nodes after ${cycles} cycles: ${JSON.stringify(bcv.diagnostics())}`);
  await collect(8);
  const growth = rss() - baseline;
  const created = bcv.diagnostics().createdNodes - createdBefore;
  t.diagnostic(`${cycles} cycles in ${seconds.toFixed(1)} s; RSS grew by ${(growth / 1024).toFixed(0)} KiB; ${created} nodes created`);
  assert.ok(created >= cycles * 4, `nodes created: ${created}`);
  assert.ok(growth < 5 * 1024 * 1024, `RSS grew by ${growth} bytes`);
  assert.equal(openFds(), fds, 'fd count stable');
  assert.equal(bcv.diagnostics().liveNodes, 0);
  // The machinery still works afterwards.
  assert.deepEqual(gunzipSync(await bcv.gzipCompress(payload(1000)).output.readAll()), payload(1000));
});
