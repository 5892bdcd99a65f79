// HTTP/1.1 over 127.0.0.1: LIFETIMES.md T01–T04, the motivating case on the server side (take the body of
// a request, release the request, keep reading), a client↔server round trip through gzip, and errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { once } from 'node:events';
import { inspect } from 'node:util';
import { constants as osConstants } from 'node:os';
import { bcv, assertIdle, collect, payload, rejectsClosed, assertClosed, within, sleep } from './helpers.mjs';

const COMPLETED = 'completed';
const ABANDONED = 'abandoned';

/**
 * A hand-written HTTP/1.1 server for one connection: a chunked response of `chunks` chunks of `chunkLen`
 * bytes (`a`, `b`, …; `pauseMs` apart, each written only once the previous one was flushed) and an
 * `x-checksum` trailer.
 *
 * `saw` resolves to COMPLETED once every chunk and the trailer were written, or to ABANDONED as soon as
 * the client closes or resets the connection before that (the connection was not reused).
 */
async function rawServer(chunks, chunkLen, pauseMs) {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  const saw = new Promise((resolve) => {
    server.once('connection', (sock) => {
      server.close();
      let gone = false;
      const abandon = () => {
        gone = true;
        resolve(ABANDONED);
      };
      sock.on('error', abandon);
      sock.on('end', abandon);
      sock.on('close', abandon);
      const send = (data) => new Promise((done) => sock.write(data, (err) => done(!err)));
      let head = '';
      const onData = async (chunk) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        sock.off('data', onData);
        sock.resume(); // keep consuming, so a FIN from the client is seen
        const ok = await send(
          'HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-test: yes\r\n' +
            'transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n',
        );
        if (!ok || gone) return abandon();
        for (let i = 0; i < chunks; i++) {
          const body = Buffer.alloc(chunkLen, 0x61 + (i % 26));
          const frame = Buffer.concat([Buffer.from(`${chunkLen.toString(16)}\r\n`), body, Buffer.from('\r\n')]);
          if (!(await send(frame)) || gone) return abandon();
          await sleep(pauseMs);
          if (gone) return abandon();
        }
        if (!(await send('0\r\nx-checksum: abc123\r\n\r\n')) || gone) return abandon();
        resolve(COMPLETED);
      };
      sock.on('data', onData);
    });
  });
  return { url: `http://127.0.0.1:${port}/data`, saw };
}

const alreadyTaken = (e) => e instanceof bcv.BcvError && e.code === 'BCV_ALREADY_TAKEN';

function throwsClosed(fn, reason) {
  let error;
  assert.throws(fn, (e) => {
    error = e;
    return true;
  });
  assertClosed(error, reason);
}

test('T01: the response released before its body: the body reads every byte to a clean EOF, trailers resolve, live nodes reach 0 once the body is released', async () => {
  const { url, saw } = await rawServer(20, 10_000, 2);
  let body;
  let trailers;
  let released;
  await (async () => {
    const response = await bcv.httpRequest('GET', url);
    assert.equal(response.status, 200);
    assert.equal(response.method, null);
    assert.equal(response.target, null);
    ({ body, trailers } = response.takeBody());
    released = new WeakRef(response);
  })();
  await collect(); // R released (garbage-collected) before B
  assert.equal(released.deref(), undefined, 'the response handle was released');
  const data = await within(10_000, body.readAll(), 'reading the body');
  assert.equal(data.length, 200_000);
  assert.ok(data.subarray(0, 10_000).equals(Buffer.alloc(10_000, 'a')));
  assert.ok(data.subarray(190_000).equals(Buffer.alloc(10_000, 't')));
  assert.equal(await body.read(), null, 'a clean end of stream');
  assert.deepEqual(await within(5000, trailers.wait(), 'trailers'), [['x-checksum', 'abc123']]);
  assert.equal(await within(5000, saw, 'server outcome'), COMPLETED);
  trailers = undefined;
  await collect();
  assert.ok(bcv.diagnostics().liveNodes > 0, 'B still holds its node');
  assert.equal(body.state, 'open');
  body = undefined;
  await assertIdle();
});

test('T02: the body released first: the server sees it abandoned and the response still works', async () => {
  const { url, saw } = await rawServer(1000, 10_000, 5);
  await (async () => {
    const response = await bcv.httpRequest('GET', url);
    const { trailers, released } = await (async () => {
      const { body, trailers } = response.takeBody();
      const first = await within(5000, body.read(1000), 'first read');
      assert.ok(first.length > 0);
      return { trailers, released: new WeakRef(body) };
    })();
    await collect(); // B released (garbage-collected), not closed
    assert.equal(released.deref(), undefined, 'the body handle was released');
    assert.equal(await within(5000, saw, 'server outcome'), ABANDONED, 'the server sees the connection dropped mid-body');
    // R's methods still work.
    assert.equal(response.header('x-test'), 'yes');
    assert.equal(response.status, 200);
    assert.ok(response.headers.some(([n, v]) => n === 'content-type' && v === 'application/octet-stream'));
    assert.equal(response.state, 'open');
    await rejectsClosed(within(5000, trailers.wait(), 'trailers'), 'ABANDONED');
  })();
  await assertIdle();
});

test('T03: closing the response with 64 KiB of body buffered: body and trailers fail with PARENT, the response with SELF, the head snapshot still reads', async () => {
  const { url, saw } = await rawServer(1000, 16_384, 1);
  await (async () => {
    const response = await bcv.httpRequest('GET', url);
    const snapshot = response.head();
    const { body, trailers } = response.takeBody();
    const deadline = Date.now() + 5000;
    while (body.buffered < 64 * 1024 && Date.now() < deadline) await sleep(2);
    assert.ok(body.buffered >= 64 * 1024, `buffered ${body.buffered}`);
    response.close();
    await rejectsClosed(body.read(16), 'PARENT'); // no EOF; the buffered bytes are thrown away
    await rejectsClosed(within(1000, trailers.wait(), 'trailers'), 'PARENT');
    throwsClosed(() => response.status, 'SELF');
    throwsClosed(() => response.headers, 'SELF');
    throwsClosed(() => response.header('x-test'), 'SELF');
    throwsClosed(() => response.head(), 'SELF');
    throwsClosed(() => response.takeBody(), 'SELF');
    assert.equal(snapshot.header('X-Test'), 'yes');
    assert.equal(snapshot.status, 200);
    assert.equal(snapshot.method, null);
    assert.ok(Object.isFrozen(snapshot));
    assert.deepEqual(JSON.parse(JSON.stringify(snapshot)).status, 200);
    assert.match(inspect(response), /IncomingMessage .*closeReason: 'SELF'/s);
    assert.match(inspect(body), /closeReason: 'PARENT'/);
    assert.equal(await within(5000, saw, 'server outcome'), ABANDONED);
  })();
  await assertIdle();
});

test('T04: closing the body: the response still works, trailers fail with ABANDONED at once, the server sees it abandoned', async () => {
  const { url, saw } = await rawServer(1000, 10_000, 5);
  await (async () => {
    const response = await bcv.httpRequest('GET', url);
    const { body, trailers } = response.takeBody();
    assert.ok((await within(5000, body.read(1000), 'first read')).length > 0);
    const waiting = trailers.wait();
    waiting.catch(() => {}); // asserted below
    const start = performance.now();
    body.close();
    // The body's producer (the pump) sees PEER_DROPPED and reacts by failing the trailers.
    const error = await within(5000, waiting.then(() => null, (e) => e), 'trailers');
    const elapsed = performance.now() - start;
    assertClosed(error, 'ABANDONED');
    assert.ok(elapsed < 10, `the producer reacted after ${elapsed.toFixed(1)} ms`);
    assert.equal(response.status, 200, 'R still works');
    assert.equal(response.header('x-test'), 'yes');
    assert.equal(response.state, 'open');
    assert.equal(await within(5000, saw, 'server outcome'), ABANDONED);
    response.close();
  })();
  await assertIdle();
});

test('server side: take the body of a request, release the request, keep reading and respond', async () => {
  await (async () => {
    const server = bcv.httpServe('127.0.0.1', 0);
    let sendRest;
    const rest = new Promise((resolve) => { sendRest = resolve; });
    const client = net.connect(server.localPort, '127.0.0.1');
    const reply = [];
    client.on('data', (c) => reply.push(c));
    const clientClosed = once(client, 'close');
    const part = (i) => `${(5000).toString(16)}\r\n${String(i).repeat(5000)}\r\n`;
    client.write('POST /upload?x=1 HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n');
    for (let i = 0; i < 5; i++) client.write(part(i));
    rest.then(() => {
      // The second half arrives after the request was released.
      for (let i = 5; i < 10; i++) client.write(part(i));
      client.write('0\r\nx-sum: 50000\r\n\r\n');
    });

    const { body, trailers, writer, released } = await (async () => {
      const request = await within(5000, server.nextRequest(), 'nextRequest');
      assert.deepEqual([request.method, request.target, request.status], ['POST', '/upload?x=1', null]);
      assert.equal(request.header('Transfer-Encoding'), 'chunked');
      const writer = request.respond(200, { connection: 'close' });
      const { body, trailers } = request.takeBody();
      assert.throws(() => request.takeBody(), alreadyTaken);
      assert.throws(() => request.respond(200), alreadyTaken);
      return { body, trailers, writer, released: new WeakRef(request) };
    })();
    await collect(); // the motivating case: the request goes, its body and its response keep working
    assert.equal(released.deref(), undefined, 'the request handle was released');
    sendRest();
    const data = await within(10_000, body.readAll(), 'reading the body');
    const expected = Buffer.from(Array.from({ length: 10 }, (_, i) => String(i).repeat(5000)).join(''));
    assert.ok(data.equals(expected), `got ${data.length} bytes`);
    assert.deepEqual(await within(5000, trailers.wait(), 'trailers'), [['x-sum', '50000']]);
    await writer.write(`got ${data.length} bytes`);
    writer.finish();
    await within(5000, clientClosed, 'the client connection closing');
    const text = Buffer.concat(reply).toString('latin1');
    assert.ok(text.startsWith('HTTP/1.1 200'), text);
    assert.match(text, /\r\n\r\nf\r\ngot 50000 bytes\r\n0\r\n\r\n$/i, 'one chunk, then a clean end');
    server.close();
  })();
  await assertIdle();
});

test('client ↔ server round trip: request body → gzip → response body, streamed both ways', async () => {
  await (async () => {
    const data = payload(300_000);
    const server = bcv.httpServe('127.0.0.1', 0);
    const handled = (async () => {
      const request = await server.nextRequest();
      const head = request.head();
      const { body, trailers } = request.takeBody();
      const writer = request.respond(200, [['content-encoding', 'gzip']]);
      const { transformer, output } = bcv.gzipCompress(body, 1); // request body -> gzip -> response body
      bcv.spawnPipe(output, writer);
      return { head, keep: [request, trailers, transformer] };
    })();
    const [w, r] = bcv.pipe(64 * 1024);
    const writing = (async () => {
      await w.write(data);
      w.finish();
    })();
    const url = `http://127.0.0.1:${server.localPort}/echo`;
    const response = await within(10_000, bcv.httpRequest('PUT', url, { headers: { 'x-a': '1' }, body: r }), 'request');
    assert.equal(r.state, 'consumed', 'the request body stream was consumed');
    assert.equal(response.status, 200);
    assert.equal(response.header('content-encoding'), 'gzip');
    const { body, trailers } = response.takeBody();
    const { transformer: gunzip, output: plain } = bcv.gzipDecompress(body);
    const back = await within(20_000, plain.readAll(), 'reading the response');
    assert.ok(back.equals(data), `got ${back.length} bytes`);
    assert.equal(await trailers.wait(), null, 'no trailers');
    await writing;
    const { head, keep } = await handled;
    assert.deepEqual([head.method, head.target, head.header('X-A')], ['PUT', '/echo', '1']);
    for (const h of [...keep, gunzip, response, server]) h.close();
  })();
  await assertIdle();
});

test('bytes and string bodies, respondWith, and gzip that Node itself decodes', async () => {
  await (async () => {
    const server = bcv.httpServe('127.0.0.1', 0);
    const text = 'compressed '.repeat(100);
    const handled = (async () => {
      const request = await server.nextRequest();
      const got = await request.takeBody().body.readAll();
      await request.respondWith(201, new Map([['x-reply', 'ok'], ['content-encoding', 'gzip']]), zlib.gzipSync(text));
      assert.throws(() => request.respond(200), alreadyTaken);
      return { got, request };
    })();
    const url = `http://localhost:${server.localPort}/b`;
    const response = await bcv.httpRequest('POST', url, { headers: [['content-length', '5']], body: 'hello' });
    assert.equal(response.status, 201);
    assert.equal(response.header('X-Reply'), 'ok');
    assert.throws(() => response.respond(200), alreadyTaken, 'a response cannot be answered');
    const { body, trailers } = response.takeBody();
    assert.equal(zlib.gunzipSync(await body.readAll()).toString(), text);
    assert.equal(await trailers.wait(), null);
    await assert.rejects(trailers.wait(), alreadyTaken);
    const { got, request } = await handled;
    assert.equal(got.toString(), 'hello');
    request.close();
    response.close();
    server.close();
  })();
  await assertIdle();
});

test('server basics: addresses, a pending nextRequest rejects on close, the port is free after closeAndWait, inspect after close', async () => {
  await (async () => {
    const server = bcv.httpServe('127.0.0.1', 0);
    const port = server.localPort;
    assert.ok(port > 0);
    assert.deepEqual(server.localAddress, { address: '127.0.0.1', port, family: 'IPv4' });
    assert.match(inspect(server), /HttpServer .*state: 'open'/s);
    assert.throws(() => bcv.httpServe('127.0.0.1', port), (e) => e.code === 'BCV_IO' && e.message.includes(String(port)));
    const pending = server.nextRequest();
    pending.catch(() => {}); // asserted below
    await sleep(20);
    await server.closeAndWait({ timeoutMs: 5000 });
    await rejectsClosed(pending, 'SELF');
    assert.equal(server.state, 'closed');
    assert.equal(server.localPort, port, 'readable after close');
    await rejectsClosed(server.nextRequest(), 'SELF');
    assert.match(inspect(server), /HttpServer .*closeReason: 'SELF'/s);
    const again = bcv.httpServe('127.0.0.1', port);
    assert.equal(again.localPort, port);
    again.close();
  })();
  await assertIdle();
});

test('a refused connection rejects with BCV_IO naming the URL; bad URLs, headers and statuses are rejected', async () => {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve)); // nothing listens there any more
  const url = `http://127.0.0.1:${port}/x`;
  await assert.rejects(bcv.httpRequest('GET', url), (e) => {
    assert.ok(e instanceof bcv.BcvError, String(e));
    assert.equal(e.code, 'BCV_IO');
    assert.ok(e.message.includes(url), e.message);
    assert.equal(e.errno, osConstants.errno.ECONNREFUSED);
    return true;
  });
  await assert.rejects(bcv.httpRequest('GET', 'ftp://example/'), (e) => e.code === 'BCV_INVALID_ARGUMENT' && e.message.includes('ftp://example/'));
  await assert.rejects(bcv.httpRequest('GET', url, { headers: [['bad header', 'x']] }), (e) => e.code === 'BCV_INVALID_ARGUMENT');
  await assert.rejects(bcv.httpRequest('GET', url, { headers: ['not a pair'] }), TypeError);
  await assert.rejects(bcv.httpRequest('GET', url, { body: 42 }), TypeError);
  // A consumed body stream cannot be sent twice.
  const once1 = bcv.streamFromBytes('x');
  await assert.rejects(bcv.httpRequest('GET', 'ftp://example/', { body: once1 }), (e) => e.code === 'BCV_INVALID_ARGUMENT');
  assert.equal(once1.state, 'consumed');
  await rejectsClosed(bcv.httpRequest('GET', url, { body: once1 }), 'SELF');

  const server = bcv.httpServe('127.0.0.1', 0);
  const answered = (async () => {
    const request = await server.nextRequest();
    assert.throws(() => request.respond(99), (e) => e.code === 'BCV_INVALID_ARGUMENT');
    assert.throws(() => request.respond(70_000), (e) => e.code === 'BCV_INVALID_ARGUMENT');
    assert.throws(() => request.respond(200, [['x', 'bad\nvalue']]), (e) => e.code === 'BCV_INVALID_ARGUMENT');
    // A non-empty body: core's client can lose a response whose body is empty (see the report).
    await request.respondWith(200, { 'x-reply': ['a', 'b'] }, 'ok');
  })();
  const response = await bcv.httpRequest('GET', `http://127.0.0.1:${server.localPort}/`);
  await answered;
  assert.equal(response.status, 200);
  assert.deepEqual(response.headers.filter(([n]) => n === 'x-reply'), [['x-reply', 'a'], ['x-reply', 'b']]);
  assert.equal(String(await response.takeBody().body.readAll()), 'ok');
  response.close();
  server.close();
  await assertIdle();
});

test('T37: a scope creating R, B and T closes B handed out of it with SCOPE_EXITED; a detached B reads to EOF', async () => {
  await (async () => {
    const { url } = await rawServer(1000, 10_000, 5);
    const taken = await (async () => {
      const s = bcv.scope();
      try {
        const response = await bcv.httpRequest('GET', url);
        return response.takeBody(); // B and T handed out of the scope
      } finally {
        s.close();
      }
    })();
    await rejectsClosed(taken.body.read(), 'SCOPE_EXITED');
    await rejectsClosed(taken.trailers.wait(), 'SCOPE_EXITED');

    const { url: url2, saw } = await rawServer(20, 10_000, 1);
    const kept = await (async () => {
      const s = bcv.scope();
      try {
        const response = await bcv.httpRequest('GET', url2);
        const { body } = response.takeBody();
        body.detachFromScope(); // B, and the message it reads through, outlive the scope
        return body;
      } finally {
        s.close();
      }
    })();
    assert.equal((await within(10_000, kept.readAll(), 'reading the detached body')).length, 200_000);
    assert.equal(await within(5000, saw, 'server outcome'), COMPLETED);
  })();
  await assertIdle();
});
