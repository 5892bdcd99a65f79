// Pipes a file through gzip and AES-256-GCM to disk, then back (decrypt, gunzip), and checks the result.
// Usage: node examples/node/streams.mjs [file]   (defaults to a generated 4 MiB file)
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const bcv = createRequire(import.meta.url)('../../bindings/node/lib/index.js');

const dir = mkdtempSync(join(tmpdir(), 'bcv-example-'));
try {
  let input = process.argv[2];
  if (!input) {
    input = join(dir, 'input.txt');
    const line = 'bcv streams: files, gzip and AES-256-GCM with deterministic lifetimes\n';
    writeFileSync(input, line.repeat(Math.ceil((4 << 20) / line.length)));
  }
  const key = randomBytes(bcv.AEAD_KEY_LEN);
  const sealedPath = join(dir, 'sealed.bin');
  const restoredPath = join(dir, 'restored.bin');

  // file -> gzip -> AES-GCM -> file. Each transformer consumes its input stream.
  const { stream } = bcv.readFile(input);
  const { output: compressed } = bcv.gzipCompress(stream, 6);
  const { output: sealed } = bcv.aeadEncrypt(compressed, key);
  const sink = bcv.writeFile(sealedPath);
  bcv.spawnPipe(sealed, sink.writer);
  const sealedBytes = await sink.done;

  // file -> AES-GCM decrypt -> gunzip -> file, this time through Node streams.
  const { output: opened } = bcv.aeadDecrypt(bcv.readFile(sealedPath).stream, key);
  const { output: plain } = bcv.gzipDecompress(opened);
  const back = bcv.writeFile(restoredPath);
  const { pipeline } = await import('node:stream/promises');
  await pipeline(plain.toReadable(), back.writer.toWritable());
  const restoredBytes = await back.done;

  const same = readFileSync(input).equals(readFileSync(restoredPath));
  console.log(`input     ${input}: ${statSync(input).size} bytes`);
  console.log(`sealed    gzip + AES-256-GCM: ${sealedBytes} bytes`);
  console.log(`restored  decrypt + gunzip: ${restoredBytes} bytes, identical: ${same}`);

  // A wrong key never yields plaintext: the output fails authentication instead of ending cleanly.
  const { output: wrong } = bcv.aeadDecrypt(bcv.readFile(sealedPath).stream, randomBytes(32));
  try {
    await wrong.readAll();
    console.log('wrong key: unexpectedly decrypted');
    process.exitCode = 1;
  } catch (e) {
    console.log(`wrong key: ${e.name} (${e.code}): ${e.message}`);
  }
  const d = bcv.diagnostics();
  console.log(`runtime: ${d.createdNodes} nodes created, ${d.liveNodes} still referenced by this script`);
  if (!same) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
