// TLS over bcv TCP sockets (T27, untrusted certificates, interop with node:tls).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { once } from 'node:events';
import { inspect } from 'node:util';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { bcv, assertIdle, payload, rejectsClosed, openFds } from './helpers.mjs';

/** Inodes of the TCP sockets whose local port is `port` (from /proc/net/tcp{,6}). */
function socketInodes(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = readFileSync(table, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1].endsWith(`:${hex}`) && cols[9] !== '0') inodes.add(cols[9]);
    }
  }
  return inodes;
}

/** True while this process holds an fd for a TCP socket bound to local port `port`. */
function fdOpenForLocalPort(port) {
  const wanted = new Set([...socketInodes(port)].map((i) => `socket:[${i}]`));
  if (wanted.size === 0) return false;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (wanted.has(readlinkSync(`/proc/self/fd/${fd}`))) return true;
    } catch { /* the fd of readdir itself */ }
  }
  return false;
}

/** A bcv TLS echo server on one accepted connection; resolves with its handles once the handshake is done. */
async function echoServer(listener, cert) {
  const sock = await listener.accept();
  const session = await sock.startTlsServer(cert.certPem, cert.keyPem);
  bcv.spawnPipe(session.takeReceive(), session.takeSend());
  return { sock, session };
}

test('selfSignedCertificate gives PEM certificate and key; a bad name is BCV_INVALID_ARGUMENT', () => {
  const c = bcv.selfSignedCertificate(['localhost', '127.0.0.1']);
  assert.match(c.certPem, /^-----BEGIN CERTIFICATE-----/);
  assert.match(c.keyPem, /-----BEGIN PRIVATE KEY-----/);
  assert.notEqual(bcv.selfSignedCertificate('localhost').certPem, c.certPem);
  assert.throws(() => bcv.selfSignedCertificate(['b\u00e4d.example']), (e) => e.code === 'BCV_INVALID_ARGUMENT');
});

test('T27: closing the socket S closes its TLS session L (PARENT); the address snapshot A still reads; the fd is closed after closeAndWait', async () => {
  await (async () => {
    const cert = bcv.selfSignedCertificate(['localhost']);
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const fdsBefore = openFds();
    const server = echoServer(listener, cert);
    const S = await bcv.tcpConnect('127.0.0.1', listener.localPort);
    const A = S.peerAddress; // CR-det snapshot
    const L = await S.startTlsClient('localhost', cert.certPem);
    assert.ok(L instanceof bcv.TlsSession);
    assert.equal(L.label, 'tls session');
    assert.deepEqual(L.peerAddress, A);
    const recv = L.takeReceive();
    const send = L.takeSend();
    await send.write('hello over tls');
    assert.equal(String(await recv.read()), 'hello over tls');
    const { sock: serverSock, session: serverSession } = await server;

    const clientPort = S.localAddress.port;
    assert.ok(fdOpenForLocalPort(clientPort), 'the client socket holds an fd before close');
    assert.ok(openFds() >= fdsBefore + 2);

    const pending = recv.read(); // a read in flight when the socket closes
    pending.catch(() => {});
    S.close();
    // The read in flight is cut short with the cascade's reason, never a clean end.
    const inFlight = await pending.then((v) => v, (e) => e);
    assert.ok(inFlight instanceof bcv.ClosedError, String(inFlight?.stack ?? inFlight));
    assert.equal(inFlight.reason, 'PARENT', `in-flight read: ${inFlight.reason}(${inFlight.upstream})`);
    // L's read and write after S.close(): Closed{PARENT}.
    await rejectsClosed(recv.read(), 'PARENT');
    await rejectsClosed(send.write('x'), 'PARENT');
    assert.equal(L.closeReason, 'PARENT');
    assert.equal(S.closeReason, 'SELF');
    // A still reads (and so do the live handles' snapshots).
    assert.deepEqual(A, { address: '127.0.0.1', port: listener.localPort, family: 'IPv4' });
    assert.deepEqual(S.peerAddress, A);
    assert.deepEqual(L.peerAddress, A);
    assert.match(inspect(L), /TlsSession .*closeReason: 'PARENT'/s);

    await S.closeAndWait({ timeoutMs: 5000 });
    assert.equal(fdOpenForLocalPort(clientPort), false, 'the client socket fd is closed after closeAndWait');
    await L.closeAndWait({ timeoutMs: 5000 });
    assert.equal(L.state, 'closed');

    serverSession.close();
    await serverSock.closeAndWait({ timeoutMs: 5000 });
    await listener.closeAndWait({ timeoutMs: 5000 });
    assert.equal(openFds(), fdsBefore - 1, 'every socket fd (and the listener) is closed');
  })();
  await assertIdle();
});

test('TLS rejects an untrusted certificate with BCV_AUTH (AuthenticationError) naming the peer', async () => {
  await (async () => {
    const served = bcv.selfSignedCertificate(['localhost']);
    const other = bcv.selfSignedCertificate(['localhost']);
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const [client, serverSock] = await Promise.all([bcv.tcpConnect('127.0.0.1', listener.localPort), listener.accept()]);
    const serverSide = serverSock.startTlsServer(served.certPem, served.keyPem);
    serverSide.catch(() => {});
    let error;
    await assert.rejects(client.startTlsClient('localhost', other.certPem), (e) => {
      error = e;
      return true;
    });
    assert.ok(error instanceof bcv.AuthenticationError, String(error?.stack ?? error));
    assert.equal(error.code, 'BCV_AUTH');
    assert.ok(error.message.includes(`127.0.0.1:${listener.localPort}`), error.message);
    client.close();
    await assert.rejects(serverSide, (e) => e instanceof bcv.BcvError && ['BCV_AUTH', 'BCV_CLOSED'].includes(e.code));
    // The streams were taken by the failed handshake.
    assert.throws(() => client.takeReceive(), (e) => e.code === 'BCV_ALREADY_TAKEN' || e.code === 'BCV_CLOSED');
    serverSock.close();
    listener.close();
  })();
  await assertIdle();
});

test('TLS with the wrong server name is BCV_AUTH; a second startTls is BCV_ALREADY_TAKEN', async () => {
  await (async () => {
    const cert = bcv.selfSignedCertificate(['localhost']);
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const [client, serverSock] = await Promise.all([bcv.tcpConnect('127.0.0.1', listener.localPort), listener.accept()]);
    const serverSide = serverSock.startTlsServer(cert.certPem, cert.keyPem);
    serverSide.catch(() => {});
    await assert.rejects(client.startTlsClient('example.org', cert.certPem), (e) => e instanceof bcv.AuthenticationError && e.code === 'BCV_AUTH');
    await assert.rejects(client.startTlsClient('localhost', cert.certPem), (e) => e.code === 'BCV_ALREADY_TAKEN');
    await assert.rejects(serverSide, (e) => e instanceof bcv.BcvError);
    // Bad PEM is an argument error, found before any byte is sent.
    const [c2, s2] = await Promise.all([bcv.tcpConnect('127.0.0.1', listener.localPort), listener.accept()]);
    await assert.rejects(c2.startTlsClient('localhost', 'not pem'), (e) => e.code === 'BCV_INVALID_ARGUMENT');
    await assert.rejects(s2.startTlsServer(cert.certPem, 'not a key'), (e) => e.code === 'BCV_INVALID_ARGUMENT');
    for (const h of [client, serverSock, c2, s2, listener]) h.close();
  })();
  await assertIdle();
});

test('TLS echo of 1 MB; finish() sends close_notify: a clean EOF; the session streams are taken once', async () => {
  await (async () => {
    const cert = bcv.selfSignedCertificate(['localhost']);
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const server = echoServer(listener, cert);
    const client = await bcv.tcpConnect('127.0.0.1', listener.localPort);
    const session = await client.startTlsClient('localhost', Buffer.from(cert.certPem));
    await server;
    const send = session.takeSend();
    const recv = session.takeReceive();
    assert.throws(() => session.takeReceive(), (e) => e.code === 'BCV_ALREADY_TAKEN');
    assert.throws(() => session.takeSend(), (e) => e.code === 'BCV_ALREADY_TAKEN');
    const data = payload(1_000_000);
    const [, echoed] = await Promise.all([(async () => { await send.write(data); send.finish(); })(), recv.readAll()]);
    assert.deepEqual(echoed, data);
    listener.close();
  })();
  await assertIdle();
});

test('interop: node:tls client against a bcv TLS server, and a bcv TLS client against a node:tls server', async () => {
  const cert = bcv.selfSignedCertificate(['localhost']);
  await (async () => {
    const listener = bcv.tcpListen('127.0.0.1', 0);
    const served = echoServer(listener, cert);
    const conn = tls.connect({ host: '127.0.0.1', port: listener.localPort, servername: 'localhost', ca: cert.certPem });
    await once(conn, 'secureConnect');
    const got = [];
    conn.on('data', (c) => got.push(c));
    conn.end('ping from node:tls');
    await once(conn, 'end');
    assert.equal(Buffer.concat(got).toString(), 'ping from node:tls');
    await served;
    listener.close();
  })();
  await (async () => {
    const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (s) => {
      s.on('data', (c) => s.write(c));
      s.on('end', () => s.end());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sock = await bcv.tcpConnect('127.0.0.1', server.address().port);
    const session = await sock.startTlsClient('localhost', cert.certPem);
    const send = session.takeSend();
    const recv = session.takeReceive();
    await send.write('ping from bcv');
    send.finish();
    assert.equal(String(await recv.readAll()), 'ping from bcv');
    sock.close();
    server.close();
  })();
  await assertIdle();
});
