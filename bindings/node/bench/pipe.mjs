// Pipe throughput through Node: one async writer and one async reader on the JS thread, 64 KiB chunks.
// Usage: node bench/pipe.mjs [totalMiB=1024] [capacityKiB=1024]
import { createRequire } from 'node:module';

const bcv = createRequire(import.meta.url)('../lib/index.js');
const totalMiB = Number(process.argv[2] ?? 1024);
const capacityKiB = Number(process.argv[3] ?? 1024);
const CHUNK = 64 * 1024;
const chunks = (totalMiB * 1024 * 1024) / CHUNK;
const chunk = Buffer.alloc(CHUNK, 0xab);

async function run(capacity) {
  const [w, r] = bcv.pipe(capacity);
  const t0 = process.hrtime.bigint();
  const writer = (async () => {
    for (let i = 0; i < chunks; i++) await w.write(chunk);
    w.finish();
  })();
  let bytes = 0;
  for (;;) {
    const c = await r.read(CHUNK);
    if (c === null) break;
    bytes += c.length;
  }
  await writer;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (bytes !== chunks * CHUNK) throw new Error(`read ${bytes} bytes, expected ${chunks * CHUNK}`);
  return { bytes, secs };
}

await run(capacityKiB * 1024); // warm-up
for (const cap of [64 * 1024, capacityKiB * 1024]) {
  const { bytes, secs } = await run(cap);
  console.log(`pipe capacity ${cap / 1024} KiB, 64 KiB chunks: ${(bytes / 2 ** 20).toFixed(0)} MiB in ${secs.toFixed(3)} s = ${(bytes / secs / 1e9).toFixed(2)} GB/s`);
}
