// A Proxy-Wasm filter in front of an HTTP upstream, from Node: an upstream server and a gateway, both on
// 127.0.0.1. The gateway runs every request through the example filter (examples/proxy-plugin, `edge_filter`,
// built from source with the proxy-wasm SDK), then forwards it as the filter left it or answers for it.
// The filter denies a path prefix with a local 403, strips `x-internal-*` headers, counts requests in a
// metric, stamps `x-served-by` on responses and writes an access line per request in on_log.
// Usage: node examples/node/proxy-gateway.mjs [edge_filter.wasm]
//        (scripts/build-proxy-plugins.sh builds it; scripts/test-node.sh passes BCV_PROXY_EXAMPLE_PLUGIN)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';

const bcv = createRequire(import.meta.url)('../../bindings/node/lib/index.js');

// Connection-level headers a proxy does not forward (RFC 9110 §7.6.1).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer',
  'proxy-connection', 'content-length']);

/** The upstream: echoes the request line and headers it received as its body. */
function startUpstream() {
  return http.createServer((req, res) => {
    const lines = [`${req.method} ${req.url}`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i].toLowerCase()}: ${req.rawHeaders[i + 1]}`);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`upstream saw ${lines.join('\n')}\n`);
  });
}

/** Forwards a request to the upstream and collects the whole response. */
function forward(upstream, headers) {
  const pseudo = Object.fromEntries(headers.filter(([name]) => name.startsWith(':')));
  const plain = headers.filter(([name]) => !name.startsWith(':') && name !== 'host');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: upstream.address, port: upstream.port, method: pseudo[':method'], path: pseudo[':path'],
      headers: [['host', pseudo[':authority'] ?? ''], ...plain].flat(),
    }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The gateway: one HTTP context of the plugin per request. */
function startGateway(plugin, upstream) {
  return http.createServer(async (req, res) => {
    const exchange = await plugin.httpContext();
    try {
      const headers = [[':method', req.method], [':path', req.url], [':scheme', 'http'], [':authority', req.headers.host ?? '']];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i].toLowerCase();
        if (!HOP_BY_HOP.has(name)) headers.push([name, req.rawHeaders[i + 1]]);
      }
      const action = await exchange.onRequestHeaders(headers, true);
      if (action === 'localResponse') {
        const reply = exchange.localResponse();
        // Finish first, so the access log and the metric are written once the client has its answer.
        await exchange.finish();
        answer(res, reply.status, reply.headers, reply.body);
        return;
      }
      if (action !== 'continue') {
        answer(res, 502, [], Buffer.from('the filter stopped the request\n'));
        return;
      }
      const { res: upstreamRes, body } = await forward(upstream, await exchange.requestHeaders());
      const responseHeaders = [[':status', String(upstreamRes.statusCode)]];
      for (let i = 0; i < upstreamRes.rawHeaders.length; i += 2) {
        const name = upstreamRes.rawHeaders[i].toLowerCase();
        if (!HOP_BY_HOP.has(name)) responseHeaders.push([name, upstreamRes.rawHeaders[i + 1]]);
      }
      await exchange.onResponseHeaders(responseHeaders, false);
      await exchange.onResponseBody(body, true);
      const out = await exchange.responseHeaders();
      const filteredBody = await exchange.takeResponseBody();
      await exchange.finish();
      const status = Number(out.find(([name]) => name === ':status')?.[1] ?? 502);
      answer(res, status, out.filter(([name]) => !name.startsWith(':')), filteredBody);
    } catch (err) {
      answer(res, 502, [], Buffer.from(`gateway error: ${err.message}\n`));
    } finally {
      exchange.close();
    }
  });
}

function answer(res, status, headers, body) {
  if (res.headersSent) return;
  res.writeHead(status, [...headers, ['content-length', String(body.length)]].flat());
  res.end(body);
}

async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server.address();
}

async function get(address, path, headers) {
  const response = await fetch(`http://127.0.0.1:${address.port}${path}`, { headers });
  return { status: response.status, headers: response.headers, body: await response.text() };
}

const path = process.argv[2] ?? process.env.BCV_PROXY_EXAMPLE_PLUGIN;
if (!path) {
  console.error('usage: node proxy-gateway.mjs edge_filter.wasm (build it with scripts/build-proxy-plugins.sh)');
  process.exit(2);
}

const host = new bcv.ProxyHost();
const upstreamServer = startUpstream();
let gatewayServer;
let ok = true;
const check = (condition, what) => {
  if (!condition) {
    console.error(`UNEXPECTED: ${what}`);
    ok = false;
  }
};
try {
  const module = await host.loadModule('edge_filter', readFileSync(path));
  const vm = await host.startVm(module, { vmId: 'edge' });
  const plugin = await vm.addPlugin({ name: 'edge', configuration: 'deny_prefix=/admin\nserved_by=bcv-gateway\n' });
  const upstream = await listen(upstreamServer);
  gatewayServer = startGateway(plugin, upstream);
  const gateway = await listen(gatewayServer);
  console.log(`upstream on ${upstream.address}:${upstream.port}, gateway on ${gateway.address}:${gateway.port}, filter ABI ${module.abi}`);

  let r = await get(gateway, '/hello', { 'x-internal-token': 'secret', 'user-agent': 'demo' });
  console.log(`GET /hello -> ${r.status}, x-served-by: ${r.headers.get('x-served-by')}`);
  console.log(`  ${r.body.trimEnd().replaceAll('\n', '\n  ')}`);
  check(r.status === 200 && r.headers.get('x-served-by') === 'bcv-gateway', 'the upstream answer with x-served-by');
  check(r.body.includes('x-edge-request: 1') && !r.body.includes('x-internal-token') && r.body.includes('user-agent: demo'),
    'the filter stamps x-edge-request, strips x-internal-*, keeps the rest');

  r = await get(gateway, '/admin/users', {});
  console.log(`GET /admin/users -> ${r.status}: ${r.body.trim()}`);
  check(r.status === 403 && r.body === 'forbidden by the edge filter\n', 'a local 403 for /admin');

  r = await get(gateway, '/again', {});
  check(r.status === 200 && r.body.includes('x-edge-request: 2'), 'the second forwarded request is counted');

  const metric = host.metric('edge_requests_total');
  console.log(`metric edge_requests_total = ${metric?.value}`);
  check(metric?.value === 2, 'two forwarded requests counted');
  const access = vm.takeLogs().map((record) => record.message).filter((message) => message.startsWith('access:'));
  console.log(['access log:', ...access].join('\n  '));
  check(JSON.stringify(access) === JSON.stringify(['access: GET /hello 200', 'access: GET /admin/users 403', 'access: GET /again 200']),
    'one access line per request');
} finally {
  gatewayServer?.close();
  upstreamServer.close();
  host.close();
}
console.log(ok ? 'ok' : 'UNEXPECTED RESULT');
process.exitCode = ok ? 0 : 1;
