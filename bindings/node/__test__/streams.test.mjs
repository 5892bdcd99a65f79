// Pipes, stream ends, futures and the Node/Web adapters (LIFETIMES.md §7, tag JS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { bcv, assertIdle, collect, payload, rejectsClosed, assertClosed, sleep, within, isPending } from './helpers.mjs';

test('pipe: bytes in order, read(max) splits, finish gives a clean EOF', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(16);
    const pending = r.read();
    await w.write(Buffer.from('hello world, this is long'));
    assert.equal(String(await pending), 'hello world, thi');
    assert.equal(String(await r.read(4)), 's is');
    assert.equal(String(await r.read()), ' long');
    w.finish();
    assert.equal(await r.read(), null);
    assert.equal(await r.read(), null, 'EOF stays EOF');
    assert.equal(w.state, 'open');
  })();
  await assertIdle();
});

test('T05: close twice, then release: second close is a no-op', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(16);
    r.close();
    r.close();
    assert.ok(['closing', 'closed'].includes(r.state), r.state);
    assert.equal(r.closeReason, 'SELF');
    await r.closeAndWait({ timeoutMs: 1000 });
    assert.equal(r.state, 'closed');
    await rejectsClosed(r.read(), 'SELF');
    w.close();
    w.close();
    assert.equal(w.closeReason, 'SELF');
    const { transformer, output } = bcv.gzipCompress(Buffer.from('x'));
    transformer.close();
    transformer.close();
    output.close();
    output.close();
  })();
  await assertIdle();
});

async function writerDroppedAfter(data) {
  const [w, r] = bcv.pipe(1024);
  await w.write(data);
  return r;
}

test('T07: writer released without finish: buffered bytes, then PEER_DROPPED, never EOF', async () => {
  await (async () => {
    // Variant 1: the reader is blocked in read() when the writer goes away.
    const r = await writerDroppedAfter(Buffer.from('hello'));
    assert.equal(String(await r.read()), 'hello');
    const blocked = r.read();
    assert.ok(await isPending(blocked), 'read waits for more data');
    await collect();
    await rejectsClosed(within(2000, blocked), 'PEER_DROPPED');
    // Variant 2: the writer is gone before the reader drains.
    const r2 = await writerDroppedAfter(Buffer.from('buffered'));
    await collect();
    assert.equal(String(await r2.read()), 'buffered');
    await rejectsClosed(r2.read(), 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('T08: finish then release: every byte, then a clean EOF', async () => {
  const data = payload(100_000);
  await (async () => {
    const r = await (async () => {
      const [w, r] = bcv.pipe(8);
      (async () => {
        await w.write(data);
        w.finish();
      })();
      return r;
    })();
    await collect(); // the writer may be released as soon as it finished
    assert.deepEqual(await r.readAll(), data);
    assert.equal(await r.read(), null);
  })();
  await assertIdle();
});

async function writerWithDroppedReader(capacity) {
  const [w] = bcv.pipe(capacity);
  return w;
}

test('T09: writer blocked on a full 4 KiB buffer; reader released or closed: PEER_DROPPED with accepted', async () => {
  await (async () => {
    // Reader closed while the write is blocked: rejects within 100 ms.
    const [w, r] = bcv.pipe(4096);
    const blocked = w.write(Buffer.alloc(10_000, 1));
    assert.ok(await isPending(blocked));
    const t0 = performance.now();
    r.close();
    const e = await rejectsClosed(within(1000, blocked), 'PEER_DROPPED');
    assert.ok(performance.now() - t0 < 100, `took ${performance.now() - t0} ms`);
    assert.ok(e.accepted >= 4096 && e.accepted <= 10_000, `accepted ${e.accepted}`);
    // Reader released (garbage-collected) while the write is blocked.
    const w2 = await writerWithDroppedReader(4096);
    const blocked2 = w2.write(Buffer.alloc(10_000, 2));
    assert.ok(await isPending(blocked2));
    await collect();
    const e2 = await rejectsClosed(within(2000, blocked2), 'PEER_DROPPED');
    assert.ok(e2.accepted <= 10_000);
    assert.equal(w2.peerGone, true);
  })();
  await assertIdle();
});

test('T10: close() while a read is pending: the read rejects with SELF within 100 ms', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(16);
    const pending = r.read();
    await sleep(20);
    const t0 = performance.now();
    r.close();
    await rejectsClosed(pending, 'SELF');
    assert.ok(performance.now() - t0 < 100);
    await rejectsClosed(w.write('x'), 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('T32: two concurrent reads: one proceeds, the other gets BusyError at once', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(16);
    const first = r.read(8);
    const second = r.read(8);
    await assert.rejects(second, (e) => e instanceof bcv.BusyError && e.code === 'BCV_BUSY');
    await w.write('abc');
    assert.equal(String(await first), 'abc');
    // Concurrent writes: one waits on the full buffer, the other is refused.
    const [w2, r2] = bcv.pipe(4);
    const wa = w2.write('12345678');
    const wb = w2.write('x');
    await assert.rejects(wb, bcv.BusyError);
    assert.equal(String(await r2.read()), '1234');
    assert.equal(String(await r2.read()), '5678');
    await wa;
    w2.finish();
    assert.equal(await r2.read(), null);
  })();
  await assertIdle();
});

test('T38: a closed handle rejects every method with ClosedError, and inspect still works', async () => {
  await (async () => {
    const [w, r] = bcv.pipe();
    r.close();
    w.close();
    await rejectsClosed(r.read(), 'SELF');
    await rejectsClosed(w.write('x'), 'SELF');
    assert.throws(() => w.finish(), (e) => e instanceof bcv.ClosedError && e.reason === 'SELF');
    assert.match(inspect(r), /ReadStream \{ id: \d+, label: 'pipe reader', state: '(closing|closed)', closeReason: 'SELF' \}/);
    assert.match(inspect(w), /WriteStream .*closeReason: 'SELF'/);
    const [fw, fr] = bcv.future();
    fr.close();
    assert.throws(() => fw.write(1), bcv.ClosedError);
    await rejectsClosed(fr.wait(), 'SELF');
    assert.match(inspect(fr), /FutureReader/);
    // A consumed handle: state 'consumed', methods fail with ClosedError(SELF).
    const input = bcv.streamFromBytes('abc');
    const { output } = bcv.gzipCompress(input);
    assert.equal(input.state, 'consumed');
    await rejectsClosed(input.read(), 'SELF');
    assert.match(inspect(input), /state: 'consumed'/);
    await output.readAll();
  })();
  await assertIdle();
});

test('T28: a future whose writer is released without a value rejects with PEER_DROPPED', async () => {
  await (async () => {
    const fr = (() => bcv.future()[1])();
    await collect();
    const e = await rejectsClosed(fr.wait(), 'PEER_DROPPED');
    assert.equal(e.code, 'BCV_CLOSED');
  })();
  await assertIdle();
});

test('future: a JS value round-trips; a second wait is BCV_ALREADY_TAKEN', async () => {
  await (async () => {
    const [fw, fr] = bcv.future();
    const value = { hello: ['world'], n: 1 };
    const waiting = fr.wait();
    fw.write(value);
    assert.equal(await waiting, value, 'the same object, not a copy');
    await assert.rejects(fr.wait(), (e) => e.code === 'BCV_ALREADY_TAKEN');
    assert.throws(() => fw.write(2), bcv.ClosedError);
  })();
  await assertIdle();
});

test('T29: writing to a future whose reader was released hands the value back; releasing it frees the resource', async () => {
  await (async () => {
    const fw = (() => bcv.future()[0])();
    await collect();
    const [w, r] = bcv.pipe(8);
    let err;
    assert.throws(() => fw.write(r), (e) => {
      err = e;
      return true;
    });
    assertClosed(err, 'PEER_DROPPED');
    assert.equal(err.value, r, 'the value comes back');
    assert.equal(fw.peerGone, true);
    err = null;
    r.close();
    await rejectsClosed(w.write('x'), 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('async iteration yields every chunk; breaking out closes the read end', async () => {
  await (async () => {
    const data = payload(200_000);
    const chunks = [];
    for await (const chunk of bcv.streamFromBytes(data)) chunks.push(chunk);
    assert.deepEqual(Buffer.concat(chunks), data);

    const [w, r] = bcv.pipe(1024);
    const writing = (async () => {
      for (;;) await w.write(Buffer.alloc(512, 7));
    })();
    for await (const chunk of r) {
      assert.ok(chunk.length > 0);
      break;
    }
    assert.equal(r.closeReason, 'SELF');
    await rejectsClosed(writing, 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('async iteration of a stream cut short throws ClosedError', async () => {
  const r = await writerDroppedAfter(Buffer.from('part'));
  await collect();
  const got = [];
  await assert.rejects(
    (async () => {
      for await (const c of r) got.push(c);
    })(),
    (e) => e instanceof bcv.ClosedError && e.reason === 'PEER_DROPPED',
  );
  assert.equal(Buffer.concat(got).toString(), 'part');
  await assertIdle();
});

test('toReadable + toWritable through stream.pipeline', async () => {
  await (async () => {
    const data = payload(1_000_000);
    const [w, r] = bcv.pipe(64 * 1024);
    const sink = [];
    await Promise.all([
      pipeline(Readable.from([data.subarray(0, 300_000), data.subarray(300_000)]), w.toWritable()),
      pipeline(r.toReadable(), new Writable({
        write(chunk, _enc, cb) {
          sink.push(chunk);
          cb();
        },
      })),
    ]);
    assert.deepEqual(Buffer.concat(sink), data);
  })();
  await assertIdle();
});

test('toReadable: a stream cut short makes pipeline() reject with ClosedError; destroy() closes the stream', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(1024);
    await w.write('some');
    w.close();
    await assert.rejects(
      pipeline(r.toReadable(), new Writable({ write(_c, _e, cb) { cb(); } })),
      (e) => e instanceof bcv.ClosedError && e.reason === 'PEER_DROPPED',
    );

    const [w2, r2] = bcv.pipe(1024);
    const readable = r2.toReadable();
    readable.destroy();
    await sleep(10);
    assert.equal(r2.closeReason, 'SELF');
    await rejectsClosed(w2.write('x'), 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('toWritable: destroying it mid-stream aborts the reader (no clean EOF)', async () => {
  await (async () => {
    const [w, r] = bcv.pipe(1024);
    const writable = w.toWritable();
    await new Promise((resolve) => writable.write(Buffer.from('abc'), resolve));
    writable.on('error', () => {});
    writable.destroy(new Error('producer failed'));
    // An abort throws buffered bytes away (LIFETIMES.md §3.2): the reader sees PEER_DROPPED, never EOF.
    await rejectsClosed(r.read(), 'PEER_DROPPED');
  })();
  await assertIdle();
});

test('Web streams: toWeb().pipeTo(toWebWritable()) copies; cancel closes; abort closes', async () => {
  await (async () => {
    const data = payload(300_000);
    const [w, r] = bcv.pipe(4096);
    await Promise.all([bcv.streamFromBytes(data).toWeb().pipeTo(w.toWebWritable()), (async () => {
      assert.deepEqual(await r.readAll(), data);
    })()]);

    const [w2, r2] = bcv.pipe(1024);
    const reader = r2.toWeb().getReader();
    await w2.write('x');
    assert.equal(Buffer.from((await reader.read()).value).toString(), 'x');
    await reader.cancel('not interested');
    assert.equal(r2.closeReason, 'SELF');
    await rejectsClosed(w2.write('y'), 'PEER_DROPPED');

    const [w3, r3] = bcv.pipe(1024);
    const writer = w3.toWebWritable().getWriter();
    await writer.write(new Uint8Array([1, 2, 3]));
    await writer.abort(new Error('stop'));
    await rejectsClosed(r3.read(), 'PEER_DROPPED');

    // A web stream over a stream cut short errors with the ClosedError.
    const [w4, r4] = bcv.pipe(1024);
    w4.close();
    await assert.rejects(r4.toWeb().getReader().read(), bcv.ClosedError);
  })();
  await assertIdle();
});

test('Symbol.dispose closes, Symbol.asyncDispose closes and waits', async () => {
  await (async () => {
    const [w, r] = bcv.pipe();
    r[Symbol.dispose]();
    assert.equal(r.closeReason, 'SELF');
    await w[Symbol.asyncDispose]();
    assert.equal(w.state, 'closed');
    await r.closeAndWait({ timeoutMs: 1000 });
    await assert.rejects(r.closeAndWait({ timeoutMs: -1 }), TypeError);
  })();
  await assertIdle();
});
