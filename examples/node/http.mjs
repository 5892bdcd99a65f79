// An HTTP/1.1 server that answers each upload with its gzip, and a client that streams a file to it.
// The handler takes the request's body and lets the request go: the body and the response keep working.
// Usage: node examples/node/http.mjs [file]   (defaults to this script)
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bcv = createRequire(import.meta.url)('../../bindings/node/lib/index.js');
const input = process.argv[2] ?? fileURLToPath(import.meta.url);

const server = bcv.httpServe('127.0.0.1', 0);
const serving = (async () => {
  const request = await server.nextRequest();
  console.log(`server    ${request.method} ${request.target} (${request.header('content-type')})`);
  const { body } = request.takeBody();
  const reply = request.respond(200, { 'content-type': 'application/gzip' });
  bcv.spawnPipe(bcv.gzipCompress(body, 9).output, reply); // request body -> gzip -> response body
})();

const url = `http://127.0.0.1:${server.localPort}/gzip`;
const response = await bcv.httpRequest('POST', url, {
  headers: { 'content-type': 'text/plain' },
  body: bcv.readFile(input).stream, // streamed, not loaded
});
await serving;
const packed = await response.takeBody().body.readAll();
server.close(); // stops accepting and aborts open connections: only once the response is read
const same = gunzipSync(packed).equals(readFileSync(input));
console.log(`client    ${response.status} ${response.header('content-type')}: ${packed.length} bytes gzip`);
console.log(`          ${input}: ${readFileSync(input).length} bytes, round trip identical: ${same}`);
if (!same) process.exitCode = 1;
