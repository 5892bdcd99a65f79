// Shared helpers for the bcv Node tests (not a test file itself).
import { createRequire } from 'node:module';
import { readdirSync } from 'node:fs';
import { setImmediate as tick } from 'node:timers/promises';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
/** The package under test (the hand-written entry point). */
export const bcv = require('../lib/index.js');
/** Absolute path of the package entry, for workers and child processes. */
export const entry = require.resolve('../lib/index.js');

/** Runs full GCs and lets queued finalizers and the reaper run. */
export async function collect(rounds = 8) {
  for (let i = 0; i < rounds; i++) {
    global.gc();
    await tick();
  }
  await bcv.reaperFlush();
}

/** Asserts that every node was freed once nothing references it (LIFETIMES.md §7 common oracle). */
export async function assertIdle(timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let live;
  do {
    await collect(4);
    live = await bcv.waitIdle(50);
  } while (live !== 0 && Date.now() < deadline);
  assert.equal(live, 0, `live nodes left: ${JSON.stringify(bcv.diagnostics())}`);
}

/** Number of open file descriptors of this process. */
export function openFds() {
  return readdirSync('/proc/self/fd').length;
}

/** Deterministic pseudo-random bytes (compressible: values 0..15). */
export function payload(n, seed = n) {
  const out = Buffer.allocUnsafe(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 15;
  }
  return out;
}

/** Asserts that `promise` rejects with a bcv ClosedError of the given reason; returns the error. */
export async function rejectsClosed(promise, reason, upstream = undefined) {
  let error;
  await assert.rejects(promise, (e) => {
    error = e;
    return true;
  });
  assertClosed(error, reason, upstream);
  return error;
}

/** Asserts that `error` is a ClosedError with `reason` (and `upstream`). */
export function assertClosed(error, reason, upstream = undefined) {
  assert.ok(error instanceof bcv.ClosedError, `expected ClosedError, got ${error?.stack ?? error}`);
  assert.equal(error.code, 'BCV_CLOSED');
  assert.equal(error.reason, reason, error.message);
  if (upstream !== undefined) assert.equal(error.upstream, upstream);
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Races `promise` against a deadline; rejects if it does not settle in time. */
export function within(ms, promise, what = 'operation') {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms); }),
  ]);
}

/** True if the promise is still pending after the microtask queue drained. */
export async function isPending(promise) {
  const marker = Symbol('pending');
  const r = await Promise.race([promise.then(() => 'resolved', () => 'rejected'), tick().then(() => marker)]);
  return r === marker;
}
