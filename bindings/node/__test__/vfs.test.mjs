// The block-cache VFS from Node: container tools, the Vfs, the better-sqlite3-style Database API, jobs,
// conflicts, bcv_kv, status tables, closing and releasing in any order, and Azurite when it is available.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bcv, collect, isPending, sleep } from './helpers.mjs';

const require = createRequire(import.meta.url);
const native = require('../index.js');

let nextName = 0;
/** A VFS name unique in this process (SQLite names are process-wide). */
const vfsName = () => `bcv-node-test-${process.pid}-${nextName++}`;

/** A temp directory with an empty container `bucket` (64 KiB blocks); cleaned up after the test. */
async function setup(t) {
  const dir = mkdtempSync(join(tmpdir(), 'bcv-vfs-'));
  const bucket = join(dir, 'bucket');
  const vfses = [];
  t.after(async () => {
    for (const v of vfses) await v.closeAndWait({ timeoutMs: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });
  await new bcv.Container(bucket).create({ blockSize: 65536 });
  /** A Vfs on `dir/cache-<n>` with `bucket` attached as `c`. */
  const client = (n, options = {}) => {
    const v = new bcv.Vfs({ cacheDir: join(dir, `cache-${n}`), name: vfsName(), ...options });
    vfses.push(v);
    assert.equal(v.attach(bucket, { alias: 'c' }), 'c');
    return v;
  };
  return { dir, bucket, client };
}

/** Creates `/c/<db>` with a table `t(id, k, v)` of `rows` rows, through `vfs`, and uploads it. */
function makeDb(vfs, db, rows) {
  const d = vfs.open(`/c/${db}`);
  d.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)');
  const ins = d.prepare('INSERT INTO t VALUES (?, ?, ?)');
  d.transaction(() => {
    for (let i = 1; i <= rows; i++) ins.run(i, i * 7919, `row ${i} ${'x'.repeat(100)}`);
  })();
  d.close();
  vfs.upload('c');
}

test('Container tools: create, upload and download files, list, copy, delete, cleanup, manifest, destroy', async (t) => {
  const { dir, bucket, client } = await setup(t);
  const c = new bcv.Container(bucket, { nrequest: 4 });
  assert.match(c.label, /bucket$/);
  await assert.rejects(c.create({ blockSize: 65536 }), (e) => e.code === 'BCV_ALREADY_EXISTS');
  assert.deepEqual(await c.list(), []);

  // A database file: written through a VFS, uploaded, then downloaded as a plain SQLite file.
  const vfs = client(0);
  makeDb(vfs, 'src.db', 2000);
  const file = join(dir, 'src.db');
  const down = [];
  const bytes = await c.downloadFile('src.db', file, (p) => down.push(p));
  const image = readFileSync(file);
  assert.equal(bytes, image.length);
  assert.equal(image.subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
  assert.ok(down.length >= 2, 'one progress event per block');
  assert.deepEqual(down.at(-1), { done: bytes, total: bytes });

  const up = [];
  assert.equal(await c.uploadFile(file, 'copy.db', (p) => up.push(p)), 1);
  assert.deepEqual(up.at(-1), { done: image.length, total: image.length });
  assert.equal(await c.uploadFile(file, 'copy.db', null), 2, 'a second upload is a new version');
  assert.throws(() => c.uploadFile(file, 'copy.db', 42), { code: 'BCV_INVALID_ARGUMENT' });
  const list = await c.list();
  assert.deepEqual(list.map((d) => d.name).sort(), ['copy.db', 'src.db']);
  const info = list.find((d) => d.name === 'copy.db');
  assert.equal(info.version, 2);
  assert.equal(info.size, info.blocks * 65536);
  const again = join(dir, 'again.db');
  await c.downloadFile('copy.db', again);
  assert.deepEqual(readFileSync(again), image);

  await c.copy('copy.db', 'copy2.db');
  await c.delete('copy.db');
  await assert.rejects(c.delete('nope.db'), bcv.BcvError);
  const m = await c.manifest();
  assert.equal(m.blockSize, 65536);
  assert.equal(m.nameBytes, 16);
  assert.deepEqual(m.databases.map((d) => d.name).sort(), ['copy2.db', 'src.db']);
  assert.ok(Array.isArray(m.deleteList));
  const report = await c.cleanup({ graceSeconds: 0 });
  assert.deepEqual(Object.keys(report).sort(), ['deleted', 'orphansDeleted', 'waiting']);
  assert.equal(report.waiting, 0);

  // The copy reads through the VFS like the original.
  assert.ok(vfs.poll('c').manifestChanged);
  const copy = vfs.open('/c/copy2.db', { readonly: true });
  assert.equal(copy.prepare('SELECT count(*) FROM t').pluck().get(), 2000);
  copy.close();

  assert.ok(c.meter().total.requests > 0);
  await vfs.closeAndWait();
  assert.ok((await c.destroy()) > 0);
  await assert.rejects(c.list(), (e) => e instanceof bcv.BcvError && e.code === 'BCV_NOT_FOUND');
  assert.ok(!existsSync(join(bucket, 'manifest.bcv')));
});

test('Database: exec, prepare, run/get/all/iterate, named parameters, blobs, BigInt, raw/pluck, columns', async (t) => {
  const { client } = await setup(t);
  const vfs = client(0);
  assert.equal(vfs.path('c', 'a.db'), '/c/a.db');
  const db = vfs.open('/c/a.db');
  assert.equal(db.name, '/c/a.db');
  assert.equal(db.vfs, vfs);
  assert.equal(db.open, true);
  assert.equal(db.readonly, false);
  assert.equal(db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n)'), db);

  const ins = db.prepare('INSERT INTO t(i, r, s, b, n) VALUES (?, ?, ?, ?, ?)');
  assert.equal(ins.reader, false);
  assert.equal(ins.readonly, false);
  assert.equal(ins.source, 'INSERT INTO t(i, r, s, b, n) VALUES (?, ?, ?, ?, ?)');
  assert.deepEqual(ins.run(42, 2.5, 'héllo\u0000tail', Buffer.from([0, 255, 7]), null), { changes: 1, lastInsertRowid: 1 });
  // Arrays are spread; a Uint8Array and an ArrayBuffer are blobs; booleans are 0/1; undefined is NULL.
  assert.equal(ins.run([true, -0.5, '', new Uint8Array([1, 2]), undefined]).lastInsertRowid, 2);
  assert.equal(ins.run(false, 1e300, 'x', new Uint8Array([9]).buffer, 7).changes, 1);

  const get = db.prepare('SELECT i, r, s, b, n FROM t WHERE id = ?');
  assert.equal(get.reader, true);
  assert.equal(get.readonly, true);
  assert.deepEqual(get.get(1), { i: 42, r: 2.5, s: 'héllo\u0000tail', b: Buffer.from([0, 255, 7]), n: null });
  assert.deepEqual(get.get(2), { i: 1, r: -0.5, s: '', b: Buffer.from([1, 2]), n: null });
  assert.equal(get.get(99), undefined);
  assert.deepEqual(get.raw().get(3), [0, 1e300, 'x', Buffer.from([9]), 7]);
  assert.deepEqual(get.columns(), [
    { name: 'i', type: 'INTEGER' },
    { name: 'r', type: 'REAL' },
    { name: 's', type: 'TEXT' },
    { name: 'b', type: 'BLOB' },
    { name: 'n', type: null },
  ]);
  assert.equal(db.prepare('SELECT s FROM t ORDER BY id').pluck().all().length, 3);
  assert.deepEqual(db.prepare('SELECT id FROM t ORDER BY id').pluck().all(), [1, 2, 3]);

  // Named parameters, with any prefix, from one object; mixed with positional ones.
  const named = db.prepare('SELECT id FROM t WHERE i = :i OR s = @s OR r = $r ORDER BY id').pluck();
  assert.deepEqual(named.all({ i: 42, s: 'x', r: -0.5 }), [1, 2, 3]);
  assert.deepEqual(named.all({ i: 0, s: 'none', r: 0 }), [3]);
  assert.deepEqual(db.prepare('SELECT ? + :a').pluck().get(1, { a: 2 }), 3);

  // iterate(): lazily, and leaving early ends the query (the statement is usable again).
  const it = db.prepare('SELECT id FROM t ORDER BY id');
  const seen = [];
  for (const row of it.iterate()) {
    seen.push(row.id);
    assert.equal(it.busy, true);
    assert.throws(() => it.get(), /busy/);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, [1, 2]);
  assert.equal(it.busy, false);
  assert.deepEqual([...it.raw().iterate()], [[1], [2], [3]]);

  // UPDATE changes, a no-op statement changes nothing.
  assert.equal(db.prepare('UPDATE t SET n = 1 WHERE id > 1').run().changes, 2);
  assert.equal(db.prepare('UPDATE t SET n = 1 WHERE id > 100').run().changes, 0);
  assert.equal(db.prepare('CREATE TABLE u(x)').run().changes, 0);

  // Integers beyond 2^53: exact as BigInt with safeIntegers, numbers (rounded) without.
  const big = 2n ** 62n + 1n;
  const bigIns = db.prepare('INSERT INTO u VALUES (?)');
  assert.equal(typeof bigIns.safeIntegers().run(big).lastInsertRowid, 'bigint');
  const read = db.prepare('SELECT x FROM u').pluck();
  assert.equal(read.get(), Number(big));
  assert.equal(read.safeIntegers().get(), big);
  assert.equal(db.defaultSafeIntegers().prepare('SELECT 7').pluck().get(), 7n);
  db.defaultSafeIntegers(false);
  assert.equal(db.prepare('SELECT 7').pluck().get(), 7);
  assert.throws(() => bigIns.run(2n ** 64n), (e) => e.code === 'BCV_INVALID_ARGUMENT' && /64-bit/.test(e.message));

  assert.equal(db.pragma('user_version', { simple: true }), 0);
  db.pragma('user_version = 5');
  assert.equal(db.pragma('user_version', { simple: true }), 5);
  assert.deepEqual(db.pragma('user_version'), [{ user_version: 5 }]);
  // interrupt() only stops a statement that is running (from another thread); idle, it changes nothing.
  db.interrupt();
  assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 3);
  assert.equal(db.close(), db);
  assert.equal(db.open, false);
});

test('errors: SqliteError codes, parameter mistakes, read-only and missing databases', async (t) => {
  const { client } = await setup(t);
  const vfs = client(0);
  const db = vfs.open('/c/e.db');
  db.exec('CREATE TABLE t(x UNIQUE NOT NULL)');
  db.prepare('INSERT INTO t VALUES (1)').run();
  assert.throws(() => db.prepare('INSERT INTO t VALUES (1)').run(), (e) => {
    assert.ok(e instanceof bcv.SqliteError && e instanceof bcv.BcvError);
    assert.equal(e.code, 'SQLITE_CONSTRAINT_UNIQUE');
    assert.equal(e.errcode, 2067);
    assert.equal(e.message, 'UNIQUE constraint failed: t.x');
    return true;
  });
  assert.throws(() => db.prepare('INSERT INTO t VALUES (NULL)').run(), { code: 'SQLITE_CONSTRAINT_NOTNULL' });
  assert.throws(() => db.exec('SELEC 1'), { code: 'SQLITE_ERROR', name: 'SqliteError' });
  assert.throws(() => db.prepare('SELECT * FROM nope'), /no such table: nope/);
  assert.throws(() => db.prepare('SELECT 1; SELECT 2'), { code: 'SQLITE_MISUSE' });
  const st = db.prepare('SELECT ? + ?');
  assert.throws(() => st.get(1), { code: 'BCV_INVALID_ARGUMENT' });
  assert.throws(() => st.get(1, 2, 3), { code: 'BCV_INVALID_ARGUMENT' });
  assert.throws(() => st.get(1, 2, {}), /no named parameters/);
  assert.throws(() => db.prepare('SELECT :a').get({ b: 1 }), /missing named parameter "a"/);
  assert.throws(() => db.prepare('SELECT :toString').get({}), /missing named parameter "toString"/);
  assert.throws(() => st.get(1, new Date()), /only null, numbers/);
  assert.throws(() => st.get(1, new Int32Array(1)), { code: 'BCV_INVALID_ARGUMENT' });
  assert.throws(() => st.get(1, {}, {}), TypeError);
  assert.throws(() => db.prepare('INSERT INTO t VALUES (2)').get(), /use run\(\)/);
  db.close();

  assert.throws(() => vfs.open('/c/missing.db', { create: false }), { code: 'SQLITE_CANTOPEN' });
  const ro = vfs.open('/c/e.db', { readonly: true });
  assert.equal(ro.readonly, true);
  assert.throws(() => ro.exec('INSERT INTO t VALUES (3)'), { code: 'SQLITE_READONLY' });
  ro.close();
  assert.throws(() => vfs.poll('nope'), { code: 'BCV_NOT_FOUND' });
  assert.throws(() => vfs.attach(join(tmpdir(), 'x'), { alias: 'c' }), { code: 'BCV_ALREADY_EXISTS' });
  assert.throws(() => new bcv.Vfs({ cacheDir: vfs.cacheDir, name: vfsName() }), { code: 'BCV_BUSY' });
  assert.throws(() => new bcv.Vfs({ cacheDir: join(tmpdir(), `bcv-x-${process.pid}`), name: vfs.name }), {
    code: 'BCV_INVALID_ARGUMENT',
  });
  assert.throws(() => new bcv.Vfs({}), TypeError);
  assert.throws(() => new bcv.Container('s3://'), { code: 'BCV_INVALID_ARGUMENT' });
});

test('transaction(): commits, rolls back when the function throws, nests with savepoints', async (t) => {
  const { client } = await setup(t);
  const vfs = client(0);
  const db = vfs.open('/c/tx.db');
  db.exec('CREATE TABLE t(x UNIQUE)');
  const ins = db.prepare('INSERT INTO t VALUES (?)');
  const count = db.prepare('SELECT count(*) FROM t').pluck();

  const insertMany = db.transaction((xs) => {
    assert.equal(db.inTransaction, true);
    for (const x of xs) ins.run(x);
    return xs.length;
  });
  assert.equal(insertMany([1, 2, 3]), 3);
  assert.equal(db.inTransaction, false);
  assert.equal(count.get(), 3);

  // A throw inside rolls the whole transaction back and re-throws the error.
  assert.throws(() => insertMany([4, 5, 1]), { code: 'SQLITE_CONSTRAINT_UNIQUE' });
  assert.equal(db.inTransaction, false);
  assert.equal(count.get(), 3);
  const boom = new Error('boom');
  assert.throws(() => db.transaction(() => { ins.run(6); throw boom; })(), (e) => e === boom);
  assert.equal(count.get(), 3);

  // Nested: the inner one rolls back to its savepoint, the outer one commits.
  const outer = db.transaction(() => {
    ins.run(10);
    assert.throws(() => insertMany([11, 10]));
    assert.equal(db.inTransaction, true);
    ins.run(12);
  });
  outer.immediate();
  assert.deepEqual(db.prepare('SELECT x FROM t WHERE x >= 10 ORDER BY x').pluck().all(), [10, 12]);
  for (const kind of ['deferred', 'immediate', 'exclusive']) {
    assert.equal(typeof insertMany[kind], 'function');
  }
  insertMany.exclusive([20]);
  assert.throws(() => db.transaction(async () => {})(), /cannot return a promise/);
  assert.equal(db.inTransaction, false);
  assert.throws(() => db.transaction(42), TypeError);
  db.close();
});

test('upload, then a second Vfs (own cache, own name) polls and sees the change', async (t) => {
  const { client } = await setup(t);
  const writer = client('w');
  const reader = client('r', { cacheSize: 8 << 20, nrequest: 2, retries: 1, requestTimeoutMs: 10_000 });
  makeDb(writer, 'app.db', 500);
  assert.deepEqual(reader.poll('c').added, ['app.db']);
  const r = reader.open('/c/app.db', { readonly: true });
  const figures = r.prepare('SELECT count(*) AS n, sum(k) AS s FROM t');
  const before = figures.get();
  assert.equal(before.n, 500);

  const w = writer.open('/c/app.db');
  w.prepare("UPDATE t SET v = 'changed' WHERE id <= 10").run();
  w.prepare('INSERT INTO t VALUES (1000, 1, ?)').run('new');
  assert.ok(writer.databases('c')[0].hasLocalChanges);
  // Nothing is visible before the upload, even after a poll.
  assert.equal(reader.poll('c').manifestChanged, false);
  assert.deepEqual(figures.get(), before);

  const pending = writer.uploadAsync('c');
  assert.ok(await isPending(pending), 'uploadAsync runs off the JS thread');
  const report = await pending;
  assert.deepEqual(report.databases, [['app.db', 2]]);
  assert.ok(report.blocksWritten >= 1);
  assert.equal(report.rebases, 0);
  assert.equal(writer.databases('c')[0].hasLocalChanges, false);

  const polled = await reader.pollAsync('c');
  assert.equal(polled.manifestChanged, true);
  assert.deepEqual(polled.updated, ['app.db']);
  assert.deepEqual(figures.get(), { n: 501, s: before.s + 1 });
  assert.equal(r.prepare("SELECT count(*) FROM t WHERE v = 'changed'").pluck().get(), 10);
  assert.equal(r.pragma('integrity_check', { simple: true }), 'ok');
  const status = reader.databases('c');
  assert.equal(status[0].name, 'app.db');
  assert.equal(status[0].version, 2);
  assert.equal(reader.manifest('c').databases[0].version, 2);
  assert.ok(reader.meter('c').kinds.rangedGet.requests > 0);
  const stats = reader.cacheStats();
  assert.ok(stats.bytesFetched > 0 && stats.cleanSlots > 0 && stats.capacity === 8 << 20);
  assert.deepEqual(reader.attached().map((a) => a.alias), ['c']);
  r.close();
  w.close();
});

test('conflicting uploads throw ConflictError and lose nothing', async (t) => {
  const { client } = await setup(t);
  const a = client('a');
  const b = client('b');
  makeDb(a, 'main.db', 300);
  b.poll('c');
  const ca = a.open('/c/main.db');
  const cb = b.open('/c/main.db');
  ca.prepare('UPDATE t SET k = -1 WHERE id = 1').run();
  cb.prepare('UPDATE t SET k = -2 WHERE id = 2').run();
  a.upload('c');
  assert.throws(() => b.upload('c'), (e) => {
    assert.ok(e instanceof bcv.ConflictError, String(e));
    assert.equal(e.code, 'BCV_CONFLICT');
    assert.match(e.message, /main\.db/);
    return true;
  });
  await assert.rejects(b.uploadAsync('c'), bcv.ConflictError);
  // b's change is still there; b can drop it and follow a.
  assert.equal(cb.prepare('SELECT k FROM t WHERE id = 2').pluck().get(), -2);
  assert.ok(b.databases('c')[0].hasLocalChanges);
  cb.close();
  assert.deepEqual(b.revert('c'), ['main.db']);
  b.poll('c');
  const again = b.open('/c/main.db');
  assert.deepEqual(again.prepare('SELECT (SELECT k FROM t WHERE id = 1) AS k1, (SELECT k FROM t WHERE id = 2) AS k2').get(), {
    k1: -1,
    k2: 2 * 7919,
  });
  again.close();
  ca.close();
});

test('bcv_kv: a write is visible to the other client at once; a lost race is a ConflictError', async (t) => {
  const { client } = await setup(t);
  const a = client('a');
  const b = client('b');
  const ca = a.open('/c/x.db');
  const cb = b.open('/c/x.db');
  const value = (db) => db.prepare("SELECT value FROM bcv_kv WHERE name = 'owner'").pluck().get();
  assert.equal(ca.prepare('SELECT count(*) FROM bcv_kv').pluck().get(), 0);
  ca.prepare('INSERT INTO bcv_kv(name, value) VALUES (?, ?)').run('owner', 'a');
  assert.equal(value(cb), 'a');

  // b reads in a transaction, a commits meanwhile, b's commit loses and changes nothing.
  const claim = cb.transaction((who) => {
    assert.equal(value(cb), 'a');
    ca.transaction(() => ca.prepare("UPDATE bcv_kv SET value = 'a2' WHERE name = 'owner'").run())();
    cb.prepare("UPDATE bcv_kv SET value = ? WHERE name = 'owner'").run(who);
  });
  assert.throws(() => claim('b'), (e) => {
    assert.ok(e instanceof bcv.ConflictError, String(e));
    assert.equal(e.errcode, 517);
    assert.equal(e.sqliteCode, 'SQLITE_BUSY_SNAPSHOT');
    return true;
  });
  assert.equal(cb.inTransaction, false);
  assert.equal(value(ca), 'a2');
  assert.equal(value(cb), 'a2');
  // Retrying from a fresh read succeeds; values keep their types.
  cb.prepare("UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'").run();
  assert.equal(value(ca), 'b');
  ca.prepare('INSERT INTO bcv_kv VALUES (?, ?)').run('n', 42);
  ca.prepare('INSERT INTO bcv_kv VALUES (?, ?)').run('blob', Buffer.from([0, 255]));
  assert.deepEqual(cb.prepare('SELECT name, value FROM bcv_kv ORDER BY name').raw().all(), [
    ['blob', Buffer.from([0, 255])],
    ['n', 42],
    ['owner', 'b'],
  ]);
  ca.close();
  cb.close();
});

test('status tables: bcv_container, bcv_database, bcv_block', async (t) => {
  const { client } = await setup(t);
  const vfs = client(0);
  const db = vfs.open('/c/main.db');
  db.exec(`CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
           INSERT INTO t SELECT zeroblob(1000) FROM n`);
  const local = db.prepare('SELECT container, database, id, state, ndirty > 0 AS dirty, nblock FROM bcv_database').get();
  assert.deepEqual({ ...local, nblock: undefined }, { container: 'c', database: 'main.db', id: 0, state: 'local', dirty: 1, nblock: undefined });
  assert.ok(local.nblock >= 3);
  vfs.upload('c');
  const row = db.prepare('SELECT version, state, ndirty, ncache FROM bcv_database').get();
  assert.deepEqual(row, { version: 1, state: '', ndirty: 0, ncache: local.nblock });
  const blocks = db.prepare('SELECT blockno, length(blockid) AS len, cache, dirty FROM bcv_block ORDER BY blockno').all();
  assert.equal(blocks.length, local.nblock);
  assert.ok(blocks.every((b, i) => b.blockno === i && b.len === 32 && b.cache === 1 && b.dirty === 0));
  assert.deepEqual(db.prepare('SELECT name, block_size, name_bytes, ndatabase FROM bcv_container').all(), [
    { name: 'c', block_size: 65536, name_bytes: 16, ndatabase: 1 },
  ]);
  assert.throws(() => db.exec('DELETE FROM bcv_block'), bcv.SqliteError);
  db.close();
});

test('prefetchStart: progress and wait; cancel(), close() and closing the Vfs stop a job', async (t) => {
  const { client } = await setup(t);
  makeDb(client('w'), 'big.db', 40_000);
  const reader = client('r', { nrequest: 1 });
  reader.poll('c');
  const job = reader.prefetchStart('c', 'big.db');
  assert.ok(job instanceof bcv.Job && job instanceof bcv.Handle);
  assert.equal(job.description, 'prefetch of c/big.db');
  job.cancel();
  await assert.rejects(job.wait(), (e) => e instanceof bcv.ClosedError && e.reason === 'SELF');
  assert.equal(job.status(), 'cancelled');
  const cancelled = job.progress();
  assert.ok(cancelled.done < cancelled.total || cancelled.total === 0, JSON.stringify(cancelled));

  const full = reader.prefetchStart('c', 'big.db');
  const report = await full.wait();
  assert.equal(full.status(), 'done');
  const p = full.progress();
  assert.ok(p.total > 10 * 65536, JSON.stringify(p));
  assert.equal(p.done, p.total);
  assert.ok(report.blocks > 10);
  assert.ok(report.bytesFetched > 0);
  // Everything is cached now: a full scan makes no request.
  const before = reader.meter('c').total.requests;
  const db = reader.open('/c/big.db', { readonly: true });
  assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 40_000);
  assert.equal(reader.meter('c').total.requests, before);
  db.close();
  assert.deepEqual(await reader.prefetchStart('c', 'big.db').wait(), { blocks: report.blocks, bytesFetched: 0 });

  // An upload job; closing the Vfs cancels a job that is still running.
  const w = client('w2');
  const wdb = w.open('/c/big.db');
  wdb.prepare('UPDATE t SET k = 0 WHERE id <= 100').run();
  wdb.close();
  const upload = w.uploadStart('c');
  const uploaded = await upload.wait();
  assert.deepEqual(uploaded.databases, [['big.db', 2]]);
  const fresh = client('f', { nrequest: 1 });
  const late = fresh.prefetchStart('c', 'big.db');
  fresh.close();
  await assert.rejects(late.wait(), (e) => e instanceof bcv.ClosedError && e.reason === 'PARENT');
  assert.equal(late.status(), 'cancelled');
  assert.throws(() => fresh.prefetchStart('c', 'big.db'), bcv.ClosedError);
});

test('closing a Database or its Vfs makes calls throw ClosedError; closeAndWait frees the cache directory', async (t) => {
  const { dir, bucket, client } = await setup(t);
  const vfs = client(0);
  makeDb(vfs, 'a.db', 10);
  const db = vfs.open('/c/a.db');
  const st = db.prepare('SELECT count(*) FROM t').pluck();
  assert.equal(st.get(), 10);
  db.close();
  db.close();
  assert.equal(db.state, 'closed');
  assert.throws(() => st.get(), (e) => e instanceof bcv.ClosedError && e.reason === 'SELF');
  assert.throws(() => db.exec('SELECT 1'), (e) => e instanceof bcv.ClosedError && e.reason === 'SELF');
  assert.equal(db.open, false);
  assert.equal(db.inTransaction, false);

  const db2 = vfs.open('/c/a.db');
  const st2 = db2.prepare('SELECT count(*) FROM t').pluck();
  const name = vfs.name;
  vfs.close();
  for (const call of [() => st2.get(), () => db2.prepare('SELECT 1'), () => db2.exec('SELECT 1')]) {
    assert.throws(call, (e) => {
      assert.ok(e instanceof bcv.ClosedError, String(e));
      assert.equal(e.code, 'BCV_CLOSED');
      assert.equal(e.reason, 'PARENT');
      return true;
    });
  }
  assert.equal(db2.open, false);
  for (const call of [() => vfs.poll('c'), () => vfs.open('/c/a.db'), () => vfs.attach(bucket)]) {
    assert.throws(call, (e) => e instanceof bcv.ClosedError && e.reason === 'SELF');
  }
  await vfs.closeAndWait();
  assert.equal(vfs.state, 'closed');
  // The directory and the name are free again: a new Vfs re-attaches `c` from the cache alone.
  const again = new bcv.Vfs({ cacheDir: join(dir, 'cache-0'), name });
  t.after(() => again.closeAndWait());
  assert.deepEqual(again.attached(), [{ alias: 'c', url: bucket }]);
  assert.equal(again.open('/c/a.db').prepare('SELECT count(*) FROM t').pluck().get(), 10);
});

test('releasing in any order is safe: a Database outlives its released Vfs; GC frees everything', async (t) => {
  const { dir, bucket } = await setup(t);
  const cacheDir = join(dir, 'cache-gc');
  const name = vfsName();
  const before = bcv.diagnostics().liveNodes;

  // Native handles: the Vfs handle goes first; the database keeps working through it.
  let h = native.openVfs({ cacheDir, name });
  h.vfsAttach(bucket, 'c');
  let d = h.vfsOpen('/c/gc.db');
  d.dbExec('CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)');
  let s = d.dbPrepare('SELECT count(*) FROM t');
  h = null;
  await collect();
  assert.deepEqual(s.get([], null, 2), 2);
  d.dbExec('INSERT INTO t VALUES (3)');
  // Then the database: its statement keeps it open and working; the statement goes last.
  d = null;
  await collect();
  assert.equal(s.get([], null, 2), 3);
  s = null;
  await collect();

  // The idiomatic classes: everything unreferenced at once, in whatever order the GC picks.
  (() => {
    const v = new bcv.Vfs({ cacheDir: join(dir, 'cache-gc2'), name: vfsName() });
    v.attach(bucket, { alias: 'c' });
    const db = v.open('/c/gc2.db');
    db.exec('CREATE TABLE t(x)');
    const st = db.prepare('INSERT INTO t VALUES (?)');
    for (let i = 0; i < 10; i++) st.run(i);
    for (const _ of db.prepare('SELECT x FROM t').iterate()) break;
    v.upload('c');
    v.prefetchStart('c', 'gc2.db');
  })();
  const deadline = Date.now() + 10_000;
  let live;
  do {
    await collect(4);
    live = (await bcv.waitIdle(50)) - before;
  } while (live > 0 && Date.now() < deadline);
  assert.ok(live <= 0, `live nodes left: ${JSON.stringify(bcv.diagnostics())}`);

  // The first VFS is gone: its directory and name can be taken again (its drop finishes off the JS thread),
  // and the local changes made through the released handles are all there.
  let again;
  for (let i = 0; !again; i++) {
    try {
      again = new bcv.Vfs({ cacheDir, name });
    } catch (e) {
      if (i > 100) throw e;
      await sleep(20);
    }
  }
  const db = again.open('/c/gc.db');
  assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 3);
  db.close();
  await again.closeAndWait();
});

test('Azurite: tools, write, upload and a second client polling (BCV_TEST_AZURE_VFS_URL)', async (t) => {
  const url = process.env.BCV_TEST_AZURE_VFS_URL;
  if (!url) {
    if (process.env.BCV_REQUIRE_SERVERS === '1') assert.fail('BCV_TEST_AZURE_VFS_URL is not set but BCV_REQUIRE_SERVERS=1');
    t.skip('BCV_TEST_AZURE_VFS_URL is not set (scripts/servers.sh starts Azurite)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'bcv-vfs-az-'));
  const c = new bcv.Container(url, { retries: 2, requestTimeoutMs: 20_000 });
  const key = new URL(url).searchParams.get('access_key');
  assert.ok(!key || !c.label.includes(key), 'no secret in the label');
  await c.create({ blockSize: 65536, overwrite: true });
  const vfses = [];
  t.after(async () => {
    for (const v of vfses) await v.closeAndWait({ timeoutMs: 10_000 });
    await c.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  const open = (n) => {
    const v = new bcv.Vfs({ cacheDir: join(dir, `cache-${n}`), name: vfsName() });
    vfses.push(v);
    v.attach(url, { alias: 'az' });
    return v;
  };
  const a = open('a');
  const db = a.open('/az/app.db');
  db.exec('CREATE TABLE t(k TEXT PRIMARY KEY, v)');
  db.prepare('INSERT INTO t VALUES (?, ?)').run('hello', Buffer.from('azure'));
  const report = await a.uploadAsync('az');
  assert.deepEqual(report.databases, [['app.db', 1]]);
  assert.deepEqual((await c.list()).map((d) => d.name), ['app.db']);

  const b = open('b');
  const rb = b.open('/az/app.db', { readonly: true });
  assert.deepEqual(rb.prepare('SELECT v FROM t WHERE k = ?').pluck().get('hello'), Buffer.from('azure'));
  db.prepare('INSERT INTO t VALUES (?, ?)').run('second', 2);
  a.upload('az');
  assert.deepEqual((await b.pollAsync('az')).updated, ['app.db']);
  assert.equal(rb.prepare('SELECT count(*) FROM t').pluck().get(), 2);

  // bcv_kv through Azure's conditional writes, and a downloaded copy.
  db.prepare('INSERT INTO bcv_kv VALUES (?, ?)').run('owner', 'a');
  assert.equal(rb.prepare("SELECT value FROM bcv_kv WHERE name = 'owner'").pluck().get(), 'a');
  const file = join(dir, 'app.db');
  await c.downloadFile('app.db', file);
  assert.equal(readFileSync(file).subarray(0, 15).toString(), 'SQLite format 3');
  db.close();
  rb.close();
});
