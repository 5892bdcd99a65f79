// The Proxy-Wasm host from Node, against the testkit plugin built from source (scripts/build-proxy-plugins.sh;
// scripts/test-node.sh passes its path as BCV_TEST_PROXY_PLUGIN). The plugin's behaviour is chosen by its
// configuration: "headers", "body", "callout", "grpc", "properties", "foreign", "metrics", "tcp", "panic", ….
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { bcv, collect, rejectsClosed, sleep, within } from './helpers.mjs';

const { ProxyHost, ProxyModule, Vm, Plugin, HttpContext, TcpContext } = bcv;

// A missing plugin is a failure, never a skip: a suite that quietly skips would pass without testing anything.
const PLUGIN = process.env.BCV_TEST_PROXY_PLUGIN;
if (!PLUGIN) {
  throw new Error('BCV_TEST_PROXY_PLUGIN is not set: run scripts/test-node.sh, which builds the plugin');
}
if (!existsSync(PLUGIN)) throw new Error(`BCV_TEST_PROXY_PLUGIN=${PLUGIN} does not exist`);

let cacheDir;
let host;
let testkit;

before(async () => {
  cacheDir = mkdtempSync(join(tmpdir(), 'bcv-proxy-cache-'));
  host = new ProxyHost({ moduleCacheDir: cacheDir });
  testkit = await host.loadModule('testkit', readFileSync(PLUGIN));
});

after(() => {
  host?.close();
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
});

/** A fresh VM with `services` and one plugin in `mode`. */
async function start(mode, { services, failOpen = false, vmId = 'test', on = host } = {}) {
  const module = on === host ? testkit : await on.loadModule('testkit', readFileSync(PLUGIN));
  const vm = await on.startVm(module, { vmId, services });
  const plugin = await vm.addPlugin({ name: mode.split(' ')[0], configuration: mode, failOpen });
  return { vm, plugin };
}

/** Request headers with the pseudo-headers a proxy passes. */
function request(path, extra = []) {
  return [[':method', 'GET'], [':path', path], [':authority', 'example.test'], [':scheme', 'http'], ...extra];
}

/** The first value of `name` in `[name, value]` pairs. */
function header(pairs, name) {
  return pairs.find(([n]) => n.toLowerCase() === name)?.[1];
}

const messages = (vm) => vm.takeLogs().map((r) => r.message);

test('a header filter adds, replaces and removes headers, and logs when the context finishes', async () => {
  const { vm, plugin } = await start('headers');
  assert.ok(vm instanceof Vm && plugin instanceof Plugin);
  assert.equal(testkit.abi, '0.2.1');
  assert.ok(testkit instanceof ProxyModule);
  assert.match(testkit.sha256, /^[0-9a-f]{64}$/);
  assert.equal(plugin.name, 'headers');
  assert.equal(vm.vmId, 'test');
  const before = host.metric('requests_total')?.value ?? 0;

  const http = await plugin.httpContext();
  assert.ok(http instanceof HttpContext);
  const action = await http.onRequestHeaders(
    request('/items?id=7', [['x-replace', 'old'], ['x-remove', 'gone'], ['x-dup', 'a'], ['x-dup', 'b']]),
    true,
  );
  assert.equal(action, 'continue');
  const out = await http.requestHeaders();
  assert.equal(header(out, 'x-added'), 'yes');
  assert.equal(header(out, 'x-replace'), 'replaced');
  assert.equal(header(out, 'x-remove'), undefined);
  assert.equal(header(out, 'x-count'), '8', 'the plugin saw all 8 pairs, duplicates included');
  assert.equal(header(out, 'x-path'), '/items?id=7');
  assert.deepEqual(out.filter(([n]) => n === 'x-dup'), [['x-dup', 'a'], ['x-dup', 'b']], 'order and duplicates kept');
  assert.deepEqual(out.slice(0, 2), [[':method', 'GET'], [':path', '/items?id=7']]);

  // A plain object works too.
  assert.equal(await http.onResponseHeaders({ ':status': '200', 'set-cookie': ['a=1', 'b=2'] }, true), 'continue');
  const response = await http.responseHeaders();
  assert.equal(header(response, 'x-response-added'), 'yes');
  assert.deepEqual(response.filter(([n]) => n === 'set-cookie').map(([, v]) => v), ['a=1', 'b=2']);

  assert.equal(await http.finish(), true);
  assert.ok(messages(vm).includes('log: /items?id=7 200'));
  assert.equal(host.metric('requests_total').value, before + 1);
  assert.equal(host.metric('requests_total').kind, 'counter');
  await assert.rejects(http.requestHeaders(), (e) => e instanceof bcv.ContextFinishedError && e.code === 'BCV_PROXY_CONTEXT_FINISHED');
  vm.close();
});

test('a body filter buffers chunks until the end of stream, rewrites them and adds a trailer', async () => {
  const { vm, plugin } = await start('body');
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/upload'), false), 'continue');
  assert.equal(await http.onRequestBody('hello ', false), 'pause');
  assert.equal(await http.onRequestBody(Buffer.from('world'), true), 'continue');
  assert.deepEqual(await http.takeRequestBody(), Buffer.from('HELLO WORLD'));
  assert.deepEqual(await http.takeRequestBody(), Buffer.alloc(0), 'taking empties the buffer');
  assert.equal(await http.onResponseHeaders([[':status', '200']], false), 'continue');
  assert.equal(await http.onResponseBody('part1', false), 'continue');
  assert.equal((await http.takeResponseBody()).toString(), 'part1');
  assert.equal(await http.onResponseBody('part2', true), 'continue');
  assert.equal((await http.takeResponseBody()).toString(), 'part2\n-- filtered');

  // Calls made without waiting run in order.
  const second = await plugin.httpContext();
  const actions = await Promise.all([
    second.onRequestHeaders(request('/t'), false),
    second.onRequestBody('abc', false),
    second.onRequestTrailers([['x-sum', '1']]),
  ]);
  assert.deepEqual(actions, ['continue', 'pause', 'continue']);
  const trailers = await second.requestTrailers();
  assert.equal(header(trailers, 'x-sum'), '1');
  assert.equal(header(trailers, 'x-body-length'), '3');
  vm.close();
});

test('a request body stream is piped through the plugin', async () => {
  const { vm, plugin } = await start('body');
  const http = await plugin.httpContext();
  const headers = http.onRequestHeaders(request('/stream'), false);
  const [writer, reader] = bcv.pipe(16);
  // The body may not overtake its headers: piping waits until the earlier calls settled.
  assert.throws(() => http.filterRequestBody(reader), (e) => e.code === 'BCV_INVALID_STATE');
  await headers;
  const filtered = http.filterRequestBody(reader);
  const produced = (async () => {
    for (const part of ['streamed ', 'body ', 'data']) await writer.write(part);
    writer.finish();
  })();
  assert.equal((await filtered.readAll()).toString(), 'STREAMED BODY DATA');
  await produced;
  vm.close();
});

/** Callout services that keep each call and its reply for the test to answer. */
function parkedCallouts() {
  const calls = [];
  const waiting = [];
  return {
    calls,
    next: () => (calls.length ? Promise.resolve(calls.shift()) : new Promise((r) => waiting.push(r))),
    services: {
      httpCallout(info, reply) {
        const call = { info, reply };
        if (waiting.length) waiting.shift()(call);
        else calls.push(call);
      },
    },
  };
}

test('an HTTP callout answered later from JS resumes the paused request', async () => {
  const parked = parkedCallouts();
  const { vm, plugin } = await start('callout', { services: parked.services });
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/private', [['authorization', 't0k3n']]), true), 'pause');
  const { info, reply } = await within(5000, parked.next(), 'the callout');
  assert.equal(info.upstream, 'auth');
  assert.equal(info.path, '/check');
  assert.equal(info.method, 'GET');
  assert.equal(info.plugin, 'callout');
  assert.equal(header(info.headers, 'x-token'), 't0k3n');
  assert.equal(info.timeoutMs, 1000);
  assert.equal(reply.answered, false);
  assert.equal(reply.grpc, false);

  // Still paused while nobody answered.
  await assert.rejects(http.wait(30), (e) => e instanceof bcv.TimeoutError && e.code === 'BCV_TIMEOUT');
  await sleep(20);
  reply.respond({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'user-of-t0k3n' });
  assert.equal(reply.answered, true);
  assert.throws(() => reply.fail(), (e) => e.code === 'BCV_ALREADY_TAKEN');
  assert.equal(await http.wait(5000), 'continue');
  assert.equal(header(await http.requestHeaders(), 'x-auth-body'), 'user-of-t0k3n');
  assert.equal(http.localResponse(), null);

  // A refusal from the upstream becomes the plugin's 403.
  const denied = await plugin.httpContext();
  assert.equal(await denied.onRequestHeaders(request('/private'), true), 'pause');
  (await parked.next()).reply.respond({ status: 401 });
  assert.equal(await denied.wait(5000), 'localResponse');
  const local = denied.localResponse();
  assert.equal(local.status, 403);
  assert.equal(local.body.toString(), 'forbidden');
  vm.close();
});

test('a failed callout (fail(), a throwing handler) gives the plugin\'s 503', async () => {
  const parked = parkedCallouts();
  const { vm, plugin } = await start('callout', { services: parked.services });
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/'), true), 'pause');
  let started = Date.now();
  setTimeout(async () => (await parked.next()).reply.fail(), 10);
  assert.equal(await http.wait(5000), 'localResponse');
  // Answered by fail(), not by the plugin's 1 s callout timeout.
  assert.ok(Date.now() - started < 800, `${Date.now() - started} ms`);
  assert.equal(http.localResponse().status, 503);
  assert.equal(http.localResponse().body.toString(), 'callout failed');
  vm.close();

  // An async handler that rejects fails its callout and says so in a process warning.
  const warned = once(process, 'warning');
  const rejecting = await start('callout', {
    services: { async httpCallout() { await sleep(5); throw new Error('upstream unreachable'); } },
  });
  const second = await rejecting.plugin.httpContext();
  started = Date.now();
  assert.equal(await second.onRequestHeaders(request('/'), true), 'pause');
  assert.equal(await second.wait(5000), 'localResponse');
  assert.ok(Date.now() - started < 800, `${Date.now() - started} ms`);
  assert.equal(second.localResponse().status, 503);
  const [warning] = await warned;
  assert.equal(warning.code, 'BCV_PROXY_CALLOUT');
  assert.match(warning.message, /upstream unreachable/);
  rejecting.vm.close();
});

test('a gRPC callout delivers its message, or its status', async () => {
  const seen = [];
  const services = {
    grpcCallout(info, reply) {
      seen.push(info);
      assert.equal(reply.grpc, true);
      const path = info.message.toString();
      setImmediate(() => reply.respond(path === '/fail' ? { status: 7, statusMessage: 'denied' } : { message: `echo:${path}` }));
    },
  };
  const { vm, plugin } = await start('grpc', { services });
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/hi'), true), 'pause');
  assert.equal(await http.wait(5000), 'continue');
  assert.equal(header(await http.requestHeaders(), 'x-grpc-reply'), 'echo:/hi');
  assert.equal(seen[0].service, 'svc.Echo');
  assert.equal(seen[0].method, 'Say');
  assert.equal(header(seen[0].initialMetadata, 'x-md'), '1');
  const failing = await plugin.httpContext();
  await failing.onRequestHeaders(request('/fail'), true);
  assert.equal(await failing.wait(5000), 'localResponse');
  assert.equal(failing.localResponse().status, 502);
  assert.equal(failing.localResponse().body.toString(), 'grpc status 7');
  vm.close();
});

test('properties come from the plugin, the context and a JS property callback', async () => {
  const asked = [];
  const services = {
    property(path, info) {
      asked.push({ path, ...info });
      return path === 'source.address' ? '10.0.0.1:5555' : null;
    },
  };
  const { vm, plugin } = await start('properties', { services });
  const http = await plugin.httpContext();
  await http.onRequestHeaders(request('/p?q=1'), true);
  const out = await http.requestHeaders();
  assert.equal(header(out, 'x-prop-path'), '/p?q=1');
  assert.equal(header(out, 'x-plugin-name'), 'properties');
  assert.equal(header(out, 'x-prop-seen'), 'yes');
  assert.equal(header(out, 'x-prop-missing'), 'none');
  assert.ok(asked.some((a) => a.path === 'missing' && a.plugin === 'properties' && a.contextId === http.contextId));

  assert.equal((await http.property('bcv.seen')).toString(), 'yes');
  assert.equal((await http.property('request.url_path')).toString(), '/p');
  assert.equal((await http.property('source.address')).toString(), '10.0.0.1:5555');
  assert.deepEqual(asked.at(-1).segments, ['source', 'address']);
  assert.equal(await http.property('no.such'), null);
  await http.setProperty('my.value', 'v1');
  assert.equal((await http.property('my.value')).toString(), 'v1');
  vm.close();

  // Properties are answered synchronously: a promise is taken as not found, with a warning.
  const warned = once(process, 'warning');
  const asyncProps = await start('properties', { services: { property: async () => 'too late' } });
  const ctx = await asyncProps.plugin.httpContext();
  await ctx.onRequestHeaders(request('/'), true);
  assert.equal(header(await ctx.requestHeaders(), 'x-prop-missing'), 'none');
  const [warning] = await warned;
  assert.equal(warning.code, 'BCV_PROXY_SERVICE');
  asyncProps.vm.close();
});

test('foreign functions run both ways: the plugin calls JS, JS calls the plugin', async () => {
  const services = { foreignFunctions: { reverse: (args) => Buffer.from(args).reverse() } };
  const { vm, plugin } = await start('foreign', { services });
  const http = await plugin.httpContext();
  await http.onRequestHeaders(request('/abc'), true);
  assert.equal(header(await http.requestHeaders(), 'x-foreign'), 'cba/');

  // A function that throws is INTERNAL_FAILURE for the plugin; a missing one NOT_FOUND.
  const failing = await start('foreign', { services: { foreignFunctions: { reverse() { throw new Error('nope'); } } } });
  const h2 = await failing.plugin.httpContext();
  await h2.onRequestHeaders(request('/abc'), true);
  assert.equal(header(await h2.requestHeaders(), 'x-foreign'), 'error');
  const missing = await start('foreign');
  const h3 = await missing.plugin.httpContext();
  await h3.onRequestHeaders(request('/abc'), true);
  assert.equal(header(await h3.requestHeaders(), 'x-foreign'), 'not-found');

  // JS calls the plugin's proxy_on_foreign_function.
  vm.takeLogs();
  await plugin.callForeignFunction(7, 'args!');
  assert.ok(messages(vm).includes('foreign_function: 7 5'));
  for (const v of [vm, failing.vm, missing.vm]) v.close();
});

test('many contexts in flight at once, each calling JS synchronously, never deadlock', async () => {
  let calls = 0;
  let pending;
  const services = {
    foreignFunctions: {
      reverse(args) {
        calls++;
        // Calling into the same VM from inside its callback is queued, not a deadlock.
        pending ??= contexts[0].requestHeaders();
        return Buffer.from(args).reverse();
      },
    },
  };
  const { vm, plugin } = await start('foreign', { services });
  const contexts = await Promise.all(Array.from({ length: 40 }, () => plugin.httpContext()));
  const actions = await within(20_000, Promise.all(contexts.map((c, i) => c.onRequestHeaders(request(`/${i}`), true))), 'the requests');
  assert.ok(actions.every((a) => a === 'continue'));
  assert.equal(calls, 40);
  assert.equal(header(await pending, 'x-foreign'), '0/');
  const reversed = await Promise.all(contexts.map(async (c) => header(await c.requestHeaders(), 'x-foreign')));
  assert.deepEqual(reversed, contexts.map((_, i) => [...`/${i}`].reverse().join('')));
  assert.equal(vm.failure(), null);
  vm.close();
});

test('metrics are read back by name and as a list', async () => {
  const { vm, plugin } = await start('metrics');
  for (const [i, path] of ['/a', '/bbbb', '/cc'].entries()) {
    const http = await plugin.httpContext();
    await http.onRequestHeaders(request(path), true);
    assert.equal(header(await http.requestHeaders(), 'x-counter-value'), String(i + 1));
  }
  assert.deepEqual(host.metric('m_counter'), { name: 'm_counter', kind: 'counter', value: 3, sum: 0, min: 0, max: 0 });
  assert.equal(host.metric('m_gauge').kind, 'gauge');
  assert.equal(host.metric('m_gauge').value, 4);
  const hist = host.metric('m_hist');
  assert.deepEqual([hist.kind, hist.value, hist.sum, hist.min, hist.max], ['histogram', 3, 10, 2, 5]);
  const names = host.metrics().map((m) => m.name);
  assert.ok(['m_counter', 'm_gauge', 'm_hist'].every((n) => names.includes(n)), names.join());
  assert.equal(host.metric('no_such_metric'), null);
  vm.close();
});

test('a TCP filter rewrites both directions, logs closes and can close the connection', async () => {
  const { vm, plugin } = await start('tcp');
  const tcp = await plugin.tcpContext();
  assert.ok(tcp instanceof TcpContext);
  const before = host.metric('tcp_bytes')?.value ?? 0;
  assert.equal(await tcp.onNewConnection(), 'continue');
  assert.equal(await tcp.onDownstreamData('hello', false), 'continue');
  assert.equal((await tcp.takeDownstreamData()).toString(), 'HELLO');
  assert.equal(await tcp.onUpstreamData(Buffer.from('reply'), false), 'continue');
  assert.equal((await tcp.takeUpstreamData()).toString(), '[up]reply');
  assert.equal(host.metric('tcp_bytes').value, before + 5);
  await tcp.onDownstreamClose('remote');
  assert.equal(await tcp.finish(), true);
  const logs = messages(vm);
  assert.ok(logs.includes('downstream closed 2'), logs.join('\n'));
  assert.ok(logs.includes('tcp log'));

  const blocked = await plugin.tcpContext();
  await blocked.onNewConnection();
  assert.equal(await blocked.onDownstreamData('please BLOCK me', false), 'close');
  vm.close();
});

test('a panicking plugin fails closed with a 503; the VM names the trap and the host keeps working', async () => {
  const { vm, plugin } = await start('panic');
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/'), true), 'localResponse');
  const local = http.localResponse();
  assert.equal(local.status, 503);
  assert.match(local.details, /plugin panic failed: trap/);
  const failure = vm.failure();
  assert.equal(failure.kind, 'trap');
  assert.match(failure.message, /unreachable/);
  assert.deepEqual(plugin.failure(), failure);
  assert.ok(vm.takeLogs().some((r) => r.level === 'critical' && r.message.includes('vm failed')));
  assert.ok(vm.takeLogs().length === 0, 'takeLogs drains');
  // Later calls follow the policy without running the guest; adding a plugin is refused.
  const again = await plugin.httpContext();
  assert.equal(await again.onRequestHeaders(request('/again'), true), 'localResponse');
  await assert.rejects(vm.addPlugin({ name: 'more', configuration: 'headers' }), (e) => {
    assert.ok(e instanceof bcv.VmFailedError, e.stack);
    assert.equal(e.code, 'BCV_PROXY_VM_FAILED');
    assert.equal(e.failure.kind, 'trap');
    return true;
  });

  // The same host runs another VM normally; a fail-open plugin lets the request through.
  const healthy = await start('headers');
  const ok = await healthy.plugin.httpContext();
  assert.equal(await ok.onRequestHeaders(request('/fine'), true), 'continue');
  assert.equal(healthy.vm.failure(), null);
  const open = await start('panic', { failOpen: true });
  assert.equal(open.plugin.failOpen, true);
  const passed = await open.plugin.httpContext();
  assert.equal(await passed.onRequestHeaders(request('/'), true), 'continue');
  assert.ok(open.vm.takeLogs().some((r) => r.message.includes('testkit panic on purpose')));
  for (const v of [vm, healthy.vm, open.vm]) v.close();
});

test('out-of-range numbers are refused or capped, never a crash', async () => {
  assert.throws(() => new ProxyHost({ maxInstances: 2 ** 32 }), TypeError);
  assert.throws(() => new ProxyHost({ maxHeaderPairs: Infinity }), TypeError);
  assert.throws(() => new ProxyHost({ callbackDeadlineMs: Infinity }), (e) => e.code === 'BCV_INVALID_ARGUMENT');
  const patient = new ProxyHost({ callbackDeadlineMs: 1e300 });
  patient.close();
  const { vm, plugin } = await start('headers');
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/'), true), 'continue');
  assert.equal(await http.wait(Number.MAX_VALUE), 'continue');
  await assert.rejects(host.startVm(testkit, { restart: { maxRestarts: 1, windowMs: 'soon' } }), TypeError);
  const capped = await host.startVm(testkit, { restart: { maxRestarts: 1, windowMs: 1e300, backoffMs: 1e300 } });
  await capped.closeAndWait({ timeoutMs: Infinity });
  vm.close();
});

test('a failed VM comes back on its next use, at most restart.maxRestarts times', async () => {
  const vm = await host.startVm(testkit, { vmId: 'restarting', restart: { maxRestarts: 1, backoffMs: 0 } });
  const good = await vm.addPlugin({ name: 'headers', configuration: 'headers' });
  const bad = await vm.addPlugin({ name: 'panic', configuration: 'panic' });
  const crash = await bad.httpContext();
  assert.equal(await crash.onRequestHeaders(request('/boom'), true), 'localResponse');
  assert.equal(vm.failure().kind, 'trap');
  assert.equal(vm.restarts(), 0);
  // The next use re-creates the VM with both plugins configured again.
  const fresh = await good.httpContext();
  assert.equal(vm.restarts(), 1);
  assert.equal(vm.failure(), null);
  assert.equal(await fresh.onRequestHeaders(request('/fine'), true), 'continue');
  assert.ok((await fresh.requestHeaders()).some(([n, v]) => n === 'x-added' && v === 'yes'));
  assert.ok(vm.takeLogs().some((r) => r.message.startsWith('vm restarted (restart 1) after: trap')));
  // Past the limit the VM stays failed and every plugin follows its policy.
  assert.equal(await (await bad.httpContext()).onRequestHeaders(request('/boom'), true), 'localResponse');
  const blocked = await good.httpContext();
  assert.equal(await blocked.onRequestHeaders(request('/blocked'), true), 'localResponse');
  assert.equal(blocked.localResponse().status, 503);
  assert.equal(vm.restarts(), 1);
  await assert.rejects(host.startVm(testkit, { restart: { maxRestarts: -1 } }), TypeError);
  await assert.rejects(host.startVm(testkit, { restart: { maxRestarts: 1, windowMs: -5 } }), (e) => e.code === 'BCV_INVALID_ARGUMENT');
  vm.close();
});

test('an infinite loop, or a JS service slower than the callback deadline, fails the VM', async () => {
  const strict = new ProxyHost({ moduleCacheDir: cacheDir, callbackDeadlineMs: 200, memoryLimit: 16 << 20 });
  try {
    assert.equal(strict.config.callbackDeadlineMs, 200);
    const { vm, plugin } = await start('loop', { on: strict });
    const http = await plugin.httpContext();
    const started = Date.now();
    assert.equal(await http.onRequestHeaders(request('/'), true), 'localResponse');
    assert.ok(Date.now() - started < 10_000);
    assert.equal(vm.failure().kind, 'cpuDeadline');
    assert.match(http.localResponse().details, /CPU deadline/);

    // A JS thread busy past the deadline never holds the plugin up longer: the plugin stops waiting for the
    // property at its deadline (the call is then skipped) and sees it as not found, or fails at its deadline.
    let calls = 0;
    const slow = await start('properties', { on: strict, services: { property: () => { calls++; return 'late'; } } });
    const ctx = await slow.plugin.httpContext();
    const pending = ctx.onRequestHeaders(request('/'), true);
    await Promise.resolve();
    await Promise.resolve();
    const until = Date.now() + 1500;
    while (Date.now() < until);
    const action = await pending;
    assert.equal(calls, 0, 'the property call was abandoned before the JS thread got to it');
    if (action === 'continue') assert.equal(header(await ctx.requestHeaders(), 'x-prop-missing'), 'none');
    else assert.equal(slow.vm.failure()?.kind, 'cpuDeadline', action);
  } finally {
    strict.close();
  }
});

test('invalid modules and rejected plugins are refused with clear errors', async () => {
  await assert.rejects(host.loadModule('garbage', Buffer.from('\0asm\x01\0\0\0garbage')), (e) => {
    assert.ok(e instanceof bcv.InvalidModuleError, e.stack);
    assert.equal(e.code, 'BCV_PROXY_INVALID_MODULE');
    assert.equal(e.module, 'garbage');
    assert.equal(e.stage, 'compile');
    return true;
  });
  // A valid wasm module that is no Proxy-Wasm plugin.
  await assert.rejects(host.loadModule('empty', new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0])), (e) => {
    assert.ok(e instanceof bcv.InvalidModuleError, e.stack);
    assert.equal(e.stage, 'validate');
    assert.match(e.message, /module empty: missing or unknown Proxy-Wasm ABI version/);
    return true;
  });
  await assert.rejects(host.loadModule('bad', 'not bytes'), TypeError);
  assert.throws(() => new ProxyHost({ memoryLimit: 'lots' }), TypeError);
  assert.throws(() => new ProxyHost({ memoryLimit: 1024 }), (e) => e.code === 'BCV_INVALID_ARGUMENT' && /64 KiB/.test(e.message));

  const vm = await host.startVm(testkit, { vmId: 'rejects' });
  await assert.rejects(vm.addPlugin({ name: 'bad', configuration: 'fail-configure' }), (e) => {
    assert.ok(e instanceof bcv.PluginRejectedError, e.stack);
    assert.equal(e.code, 'BCV_PROXY_PLUGIN_REJECTED');
    assert.equal(e.plugin, 'bad');
    assert.match(e.why, /on_configure returned false/);
    return true;
  });
  assert.equal(vm.failure(), null, 'the canary caught it; the VM is fine');
  const fine = await vm.addPlugin({ name: 'fine', configuration: 'headers' });
  assert.equal(await (await fine.httpContext()).onRequestHeaders(request('/'), true), 'continue');
  vm.close();
});

test('the VM configuration, environment and log service reach the plugin and back', async () => {
  const records = [];
  const vm = await host.startVm(testkit, {
    vmId: 'env',
    configuration: 'vm-config',
    environment: { BCV_PLUGIN_ENV: 'from-vm' },
    services: { log: (r) => records.push(r) },
  });
  const plugin = await vm.addPlugin({ name: 'env', configuration: 'env' });
  const http = await plugin.httpContext();
  await http.onRequestHeaders(request('/'), true);
  const out = await http.requestHeaders();
  assert.equal(header(out, 'x-env'), 'from-vm');
  assert.equal(header(out, 'x-home'), 'absent');
  const logs = vm.takeLogs();
  assert.ok(logs.some((r) => r.message === 'vm_start: vm-config'));
  assert.ok(logs.some((r) => r.message === 'stdout from plugin' && r.level === 'info'));
  // The log service gets the same records on the JS thread, a little later.
  const deadline = Date.now() + 5000;
  while (!records.some((r) => r.message === 'stderr from plugin') && Date.now() < deadline) await sleep(5);
  const record = records.find((r) => r.message === 'configure: env');
  assert.ok(record, JSON.stringify(records));
  assert.equal(record.vmId, 'env');
  assert.equal(record.plugin, 'env');
  assert.equal(record.level, 'info');
  assert.ok(records.some((r) => r.message === 'stderr from plugin' && r.level === 'error'));
  vm.close();
});

test('shared data and queues are reachable from JS', async () => {
  const cas = host.setSharedData('shared', 'counter', '41');
  const value = host.sharedData('shared', 'counter');
  assert.equal(value.value.toString(), '41');
  assert.equal(value.cas, cas);
  assert.throws(() => host.setSharedData('shared', 'counter', '0', cas + 1), (e) => e instanceof bcv.ConflictError);
  assert.deepEqual(host.sharedDataKeys('shared').map(String), ['counter']);

  // The plugin increments the counter with compare-and-swap.
  const { vm, plugin } = await start('cas', { vmId: 'shared' });
  const http = await plugin.httpContext();
  await http.onRequestHeaders(request('/'), true);
  assert.equal(header(await http.requestHeaders(), 'x-counter'), '42');
  assert.equal(host.sharedData('shared', 'counter').value.toString(), '42');
  assert.equal(host.removeSharedData('shared', 'counter'), true);
  assert.equal(host.sharedData('shared', 'counter'), null);

  // A queue registered by a plugin is fed from JS.
  const consumer = await vm.addPlugin({ name: 'consumer', configuration: 'queue-consumer' });
  assert.equal(host.queueLength('shared', 'events'), 0);
  const consumed = host.metric('consumed_total')?.value ?? 0;
  host.enqueue('shared', 'events', '/from-js');
  const deadline = Date.now() + 5000;
  while ((host.metric('consumed_total')?.value ?? 0) === consumed && Date.now() < deadline) await sleep(5);
  assert.equal(host.metric('consumed_total').value, consumed + 1);
  assert.equal(await vm.waitIdle(5000), true);
  assert.ok(host.sharedData('shared', 'consumed').value.toString().includes('/from-js;'));
  assert.throws(() => host.enqueue('shared', 'nope', 'x'), (e) => e.code === 'BCV_NOT_FOUND');
  assert.equal(host.queueLength('shared', 'nope'), null);
  consumer.close();
  vm.close();
});

test('closing the host cascades; releasing objects in any order is safe', async () => {
  const own = new ProxyHost({ moduleCacheDir: cacheDir });
  const { vm, plugin } = await start('headers', { on: own });
  const http = await plugin.httpContext();
  assert.equal(await vm.contextCount(), 2);
  assert.ok((await vm.memorySize()) > 0);
  own.close();
  assert.deepEqual([own, vm, plugin, http].map((h) => h.closeReason), ['SELF', 'PARENT', 'PARENT', 'PARENT']);
  await bcv.reaperFlush();
  for (const h of [own, vm, plugin, http]) assert.equal(h.state, 'closed', h.label);
  await assert.rejects(http.onRequestHeaders(request('/'), true), (e) => e instanceof bcv.ClosedError);
  await assert.rejects(plugin.httpContext(), (e) => e instanceof bcv.ClosedError);
  await assert.rejects(own.loadModule('again', readFileSync(PLUGIN)), (e) => e instanceof bcv.ClosedError);
  await assert.rejects(own.startVm(testkit), /loaded by another ProxyHost/);

  // Closing children and parents in any order is fine too.
  const again = new ProxyHost({ moduleCacheDir: cacheDir });
  const second = await start('headers', { on: again });
  const ctx = await second.plugin.httpContext();
  second.plugin.close();
  ctx.close();
  second.vm.close();
  again.close();
  await rejectsClosed(ctx.onRequestHeaders(request('/'), true), 'PARENT');

  // Released without close (garbage-collected): every node goes away, and the released context is finished
  // first (its on_log runs).
  await collect();
  const live = bcv.diagnostics().liveNodes;
  const records = [];
  await (async () => {
    const other = new ProxyHost({ moduleCacheDir: cacheDir });
    const module = await other.loadModule('testkit', readFileSync(PLUGIN));
    const vm = await other.startVm(module, { services: { log: (r) => records.push(r.message) } });
    const plugin = await vm.addPlugin({ name: 'headers', configuration: 'headers' });
    const context = await plugin.httpContext();
    assert.equal(await context.onRequestHeaders(request('/dropped'), true), 'continue');
  })();
  const deadline = Date.now() + 10_000;
  let left;
  do {
    await collect(2);
    await sleep(10);
    left = bcv.diagnostics().liveNodes;
  } while ((left > live || !records.includes('log: /dropped -')) && Date.now() < deadline);
  assert.ok(records.includes('log: /dropped -'), records.join('\n'));
  assert.ok(left <= live, `live nodes: ${left} > ${live}`);
});

test('a context can be created, used and closed in a scope', async () => {
  const { vm, plugin } = await start('headers');
  const s = bcv.scope();
  const http = await plugin.httpContext();
  assert.equal(await http.onRequestHeaders(request('/scoped'), true), 'continue');
  assert.equal(s.closed, false);
  s.close();
  assert.equal(http.closeReason, 'SCOPE_EXITED');
  await rejectsClosed(http.onRequestHeaders(request('/after'), true), 'SCOPE_EXITED');
  assert.equal(plugin.state, 'open');
  vm.close();
});
