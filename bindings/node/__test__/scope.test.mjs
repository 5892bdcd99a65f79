// Scopes (LIFETIMES.md §4.6, T37).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { bcv, assertIdle, rejectsClosed, assertClosed } from './helpers.mjs';

test('T37: a scope closes what it created with SCOPE_EXITED unless detached', async () => {
  await (async () => {
    let kept, closed, file;
    {
      const s = bcv.scope();
      kept = bcv.streamFromBytes('kept');
      closed = bcv.streamFromBytes('closed');
      file = bcv.pipe(16);
      kept.detachFromScope();
      await bcv.reaperFlush();
      assert.ok(s.size >= 3, `size ${s.size}`);
      s[Symbol.dispose]();
      assert.equal(s.closed, true);
      assert.match(inspect(s), /closed: true/);
    }
    assert.equal(String(await kept.readAll()), 'kept');
    await rejectsClosed(closed.read(), 'SCOPE_EXITED');
    assert.equal(file[0].closeReason, 'SCOPE_EXITED');
    // Outside the scope nothing is adopted any more.
    const after = bcv.streamFromBytes('after');
    assert.equal(String(await after.readAll()), 'after');
  })();
  await assertIdle();
});

test('T37: a parent in the scope cascades SCOPE_EXITED to a child handed out of it', async () => {
  await (async () => {
    const s = bcv.scope();
    const { output } = bcv.gzipCompress(bcv.streamFromBytes('x'.repeat(1000)));
    s.close();
    s.close();
    await rejectsClosed(output.read(), 'SCOPE_EXITED');
  })();
  await assertIdle();
});

test('nested scopes: the innermost adopts; async results join the scope they were started in', async () => {
  await (async () => {
    const outer = bcv.scope();
    const a = bcv.streamFromBytes('a');
    const inner = bcv.scope();
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const accepting = listener.accept();
    const connecting = bcv.tcpConnect('127.0.0.1', listener.localPort);
    inner.close();
    assert.equal(listener.closeReason, 'SCOPE_EXITED');
    // The accept was pending when the scope exited: it fails with SCOPE_EXITED, or, if the connection
    // was accepted just before, its socket arrives already closed with SCOPE_EXITED.
    const acceptedOrError = await accepting.catch((e) => e);
    if (acceptedOrError instanceof bcv.TcpSocket) assert.equal(acceptedOrError.closeReason, 'SCOPE_EXITED');
    else assertClosed(acceptedOrError, 'SCOPE_EXITED');
    const socket = await connecting.catch((e) => e);
    // The connect was started inside the closed scope: its socket arrives closed (or fails outright).
    if (socket instanceof bcv.TcpSocket) assert.equal(socket.closeReason, 'SCOPE_EXITED');
    else assert.ok(socket instanceof bcv.BcvError);
    assert.equal(String(await a.readAll()), 'a');
    outer.close();
  })();
  await assertIdle();
});
