// The block-cache VFS from Node: a container in a local directory (the embedded default store; an
// s3://, az:// or gs:// URL works the same), two clients with their own cache directories, SQL through
// bcv's better-sqlite3-style API, an upload by one client and a poll by the other.
// Usage: node examples/node/vfs.mjs
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const bcv = createRequire(import.meta.url)('../../bindings/node/lib/index.js');

const dir = mkdtempSync(join(tmpdir(), 'bcv-vfs-example-'));
try {
  // 1. An empty container: a manifest and no database yet (64 KiB blocks keep the example small).
  const url = join(dir, 'container');
  const container = new bcv.Container(url);
  await container.create({ blockSize: 64 * 1024 });

  // 2. Client A: a cache directory registered as an SQLite VFS, with the container attached as "shop".
  //    Opening a database that does not exist creates it locally; nothing leaves the machine until upload.
  const a = new bcv.Vfs({ cacheDir: join(dir, 'cache-a'), name: 'bcv-a' });
  a.attach(url, { alias: 'shop' });
  const db = a.open('/shop/shop.db');
  db.exec('CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)');
  const insert = db.prepare('INSERT INTO items(name, price) VALUES (:name, :price)');
  const addAll = db.transaction((items) => { for (const item of items) insert.run(item); });
  addAll([{ name: 'apple', price: 0.5 }, { name: 'pear', price: 0.75 }, { name: 'fig', price: 2 }]);
  const report = a.upload('shop'); // new blocks in parallel, then a conditional write of the manifest
  console.log('A uploaded', report.databases, `(${report.blocksWritten} blocks)`);

  // The container now holds a plain SQLite database; any SQLite can read a downloaded copy of it.
  console.log('container lists', (await container.list()).map((d) => `${d.name} v${d.version}`));

  // 3. Client B: its own cache directory and VFS name. Blocks are fetched lazily, in small ranges.
  const b = new bcv.Vfs({ cacheDir: join(dir, 'cache-b'), name: 'bcv-b' });
  b.attach(url, { alias: 'shop' });
  const reader = b.open('/shop/shop.db', { readonly: true });
  const priceOf = reader.prepare('SELECT price FROM items WHERE name = ?').pluck();
  console.log('B reads apple at', priceOf.get('apple'));

  // 4. A writes and uploads again (off the JS thread this time); B polls and sees the change.
  db.prepare('UPDATE items SET price = ? WHERE name = ?').run(0.45, 'apple');
  await a.uploadAsync('shop');
  const polled = await b.pollAsync('shop');
  console.log('B polled:', polled.updated, '-> apple now at', priceOf.get('apple'));
  assert.equal(priceOf.get('apple'), 0.45);
  console.log('B sees', reader.prepare('SELECT name, price FROM items ORDER BY id').raw().all());

  // 5. Closing a Vfs closes its databases too; closeAndWait() also frees its cache directory.
  db.close();
  await a.closeAndWait();
  await b.closeAndWait();
  console.log('ok');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
