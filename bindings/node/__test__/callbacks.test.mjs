// onData callbacks (A7, T21, T22).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bcv, assertIdle, collect, payload, sleep, within } from './helpers.mjs';

test('onData delivers every chunk then end; an async listener applies backpressure', async () => {
  await (async () => {
    const data = payload(500_000);
    const got = [];
    let inFlight = 0;
    let maxInFlight = 0;
    // The subscription holds no handle: the stream must stay referenced while it is delivered.
    const stream = bcv.streamFromBytes(data);
    const ended = new Promise((resolve, reject) => {
      stream.onData(async (ev) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await sleep(1);
        inFlight--;
        if (ev.type === 'data') got.push(ev.data);
        else if (ev.type === 'end') resolve();
        else reject(ev.error);
      });
    });
    await within(10_000, ended);
    assert.equal(stream.closeReason, null);
    assert.deepEqual(Buffer.concat(got), data);
    assert.equal(maxInFlight, 1);
  })();
  await assertIdle();
});

test('onData: a stream cut short ends with an error event carrying ClosedError', async () => {
  await (async () => {
    const [w, r] = bcv.pipe();
    const events = [];
    const done = new Promise((resolve) => r.onData((ev) => { events.push(ev); if (ev.type !== 'data') resolve(); }));
    await w.write('abc');
    await sleep(20);
    w.close();
    await within(2000, done);
    assert.equal(events.at(-1).type, 'error');
    assert.ok(events.at(-1).error instanceof bcv.ClosedError);
    assert.equal(events.at(-1).error.reason, 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('T21: the callback releases its stream and the parent: it returns normally and no later callback comes', async () => {
  let calls = 0;
  await (async () => {
  const w = await (async () => {
    const [w, r] = bcv.pipe(1024);
    let holder = bcv.gzipCompress(r, 1); // { transformer, output }
    holder.output.onData(async () => {
      calls++;
      holder = null; // release SR and its parent from inside the callback
      await collect();
    });
    return w;
  })();
  const writing = (async () => {
    for (let i = 0; i < 50; i++) await w.write(payload(4096, i));
    w.finish();
  })();
  await within(5000, writing.catch(() => {}));
  await sleep(100);
  assert.equal(calls, 1, 'no callback after the release');
  await rejectsPeerGone(w);
  })();
  await assertIdle();
});

async function rejectsPeerGone(w) {
  // The transformer stopped (X2): a further write on its input fails or the writer already finished.
  await w.write('x').catch((e) => assert.ok(e instanceof bcv.BcvError));
}

test('T21b: closing the stream from inside its callback stops delivery', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(1024);
    let calls = 0;
    r.onData(() => {
      calls++;
      r.close();
    });
    await w.write('one');
    await sleep(30);
    await w.write('two').catch(() => {});
    await sleep(30);
    assert.equal(calls, 1);
    assert.equal(r.closeReason, 'SELF');
  })();
  await assertIdle();
});

test('T22: closeAndWait inside the callback rejects WouldDeadlock in < 10 ms; close() works; closeAndWait after returns', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(1024);
    const result = new Promise((resolve) => {
      r.onData(async () => {
        const t0 = performance.now();
        const err = await r.closeAndWait({ timeoutMs: 1000 }).then(() => null, (e) => e);
        const elapsed = performance.now() - t0;
        r.close();
        resolve({ err, elapsed });
      });
    });
    await w.write('x');
    const { err, elapsed } = await within(5000, result);
    assert.ok(err instanceof bcv.WouldDeadlockError, String(err));
    assert.equal(err.code, 'BCV_WOULD_DEADLOCK');
    assert.ok(elapsed < 10, `${elapsed} ms`);
    await r.closeAndWait({ timeoutMs: 5000 });
    assert.equal(r.state, 'closed');
  })();
  await assertIdle();
});
