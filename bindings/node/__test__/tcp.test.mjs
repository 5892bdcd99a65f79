// Real TCP on 127.0.0.1 (T36, T39, resets, echo).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { bcv, assertIdle, payload, rejectsClosed, within, openFds, sleep } from './helpers.mjs';

test('TCP echo: spawnPipe(receive, send) on the server, 1 MB through the client', async () => {
  await (async () => {
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const [client, server] = await Promise.all([bcv.tcpConnect('127.0.0.1', listener.localPort), listener.accept()]);
    assert.equal(server.peerAddress.port, client.localAddress.port);
    assert.equal(client.peerAddress.address, '127.0.0.1');
    bcv.spawnPipe(server.takeReceive(), server.takeSend());
    const data = payload(1_000_000);
    const send = client.takeSend();
    const recv = client.takeReceive();
    const [, echoed] = await Promise.all([(async () => { await send.write(data); send.finish(); })(), recv.readAll()]);
    assert.deepEqual(echoed, data);
    assert.throws(() => client.takeReceive(), (e) => e.code === 'BCV_ALREADY_TAKEN');
    listener.close();
    await rejectsClosed(listener.accept(), 'SELF');
  })();
  await assertIdle();
});

test('a send stream closed unfinished resets the connection: the peer sees an error, not a clean end', async () => {
  await (async () => {
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const accepted = listener.accept();
    const peer = net.connect(listener.localPort, '127.0.0.1');
    const sock = await accepted;
    const send = sock.takeSend();
    await send.write('partial');
    send.close();
    const seen = await within(5000, new Promise((resolve) => {
      const got = [];
      peer.on('data', (c) => got.push(c));
      peer.once('error', (e) => resolve({ event: 'error', code: e.code, data: String(Buffer.concat(got)) }));
      peer.once('end', () => resolve({ event: 'end', data: String(Buffer.concat(got)) }));
    }));
    assert.equal(seen.event, 'error', `the peer saw a clean end: ${JSON.stringify(seen)}`);
    assert.equal(seen.code, 'ECONNRESET', JSON.stringify(seen));
    peer.destroy();
    listener.close();
  })();
  await assertIdle();
});

test('T36: auto-close on quiescence: FIN received + send finished + receive released closes the fd while the socket handle lives', async () => {
  await (async () => {
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const accepted = listener.accept();
    const peer = net.connect(listener.localPort, '127.0.0.1');
    const sock = await accepted;
    await sleep(20);
    const fdsWithSocket = openFds();
    const reply = [];
    peer.on('data', (c) => reply.push(c));
    const peerEnded = once(peer, 'end');
    peer.end('ping');
    await (async () => {
      const recv = sock.takeReceive();
      assert.equal(String(await recv.readAll()), 'ping');
      const send = sock.takeSend();
      await send.write('pong');
      send.finish();
    })();
    await peerEnded;
    assert.equal(Buffer.concat(reply).toString(), 'pong', 'FIN after finish()');
    const deadline = Date.now() + 500;
    while (openFds() >= fdsWithSocket && Date.now() < deadline) await sleep(5);
    assert.ok(openFds() < fdsWithSocket, 'fd closed while the socket handle is alive');
    assert.equal(sock.state, 'open');
    peer.destroy();
    listener.close();
  })();
  await assertIdle();
});

test('T39: closeAndWait on a socket with a pending read: the read fails with PARENT and the port is reusable at once', async () => {
  await (async () => {
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const port = listener.localPort;
    const [client, server] = await Promise.all([bcv.tcpConnect('127.0.0.1', port), listener.accept()]);
    const recv = server.takeReceive();
    const pending = recv.read();
    pending.catch(() => {}); // asserted after the waits below
    await sleep(20);
    await server.closeAndWait({ timeoutMs: 5000 });
    await listener.closeAndWait({ timeoutMs: 5000 });
    assert.equal(listener.state, 'closed');
    await rejectsClosed(pending, 'PARENT');
    const again = bcv.tcpListen('127.0.0.1', port);
    assert.equal(again.localPort, port);
    again.close();
    client.close();
  })();
  await assertIdle();
});

test('connecting to a closed port rejects with BCV_IO', async () => {
  const l = bcv.tcpListen('127.0.0.1', 0);
  const port = l.localPort;
  await l.closeAndWait({ timeoutMs: 2000 });
  await assert.rejects(bcv.tcpConnect('127.0.0.1', port), (e) => e instanceof bcv.BcvError && e.code === 'BCV_IO');
  await assertIdle();
});
