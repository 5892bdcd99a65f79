// Multi-process mode from Node: a Daemon in the test process owns a cache directory; a child `node` process
// creating a Vfs there becomes its read-only client (reads rows, writes and uploads are ReadOnlyError), gets
// DaemonGoneError once the daemon stops, and reconnects to the next daemon. Daemons hand keys of secure
// containers to clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { bcv } from './helpers.mjs';

const { Container, Daemon, Keyring, Vfs } = bcv;
const child = fileURLToPath(new URL('./daemon-child.mjs', import.meta.url));

let nextName = 0;
const vfsName = () => `bcv-node-daemon-${process.pid}-${nextName++}`;

/** A temp dir with a container `bucket` holding `/db.db` (table t, `rows` rows), written by a plain Vfs. */
async function setup(t, rows, secure = undefined) {
  const dir = mkdtempSync(join(tmpdir(), 'bcv-daemon-'));
  const cleanup = [];
  t.after(async () => {
    for (const f of cleanup.reverse()) await f();
    rmSync(dir, { recursive: true, force: true });
  });
  const bucket = join(dir, 'bucket');
  await new Container(bucket, { secure }).create({ blockSize: 65536 });
  const writer = new Vfs({ cacheDir: join(dir, 'writer'), name: vfsName() });
  writer.attach(bucket, { alias: 'c', secure });
  const d = writer.open('/c/db.db');
  d.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
  const ins = d.prepare('INSERT INTO t(v) VALUES (?)');
  d.transaction(() => {
    for (let i = 0; i < rows; i++) ins.run(`row ${String(i).padStart(8, '0')} ${'w'.repeat(100)}`);
  })();
  d.close();
  writer.upload('c');
  await writer.closeAndWait({ timeoutMs: 10_000 });
  return { dir, bucket, shared: join(dir, 'shared'), cleanup };
}

test('a child process is a read-only client of the daemon, and reconnects after a restart', async (t) => {
  const { bucket, shared, cleanup } = await setup(t, 1000);
  let daemon = Daemon.start(shared, { cacheSize: 64 << 20 });
  cleanup.push(() => daemon.stop());
  assert.equal(daemon.running, true);
  assert.equal(daemon.socketPath, join(shared, 'daemon.sock'));

  const proc = spawn(process.execPath, [child, shared, bucket], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanup.push(async () => {
    if (proc.exitCode === null) {
      proc.kill();
      await once(proc, 'exit');
    }
  });
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    assert.ok(!done, 'the child exited early');
    return JSON.parse(value);
  };

  const opened = await next();
  assert.deepEqual(opened, {
    step: 'open',
    isDaemonClient: true,
    rows: 1000,
    insert: 'SQLITE_READONLY',
    upload: 'BCV_READ_ONLY',
    uploadClass: 'ReadOnlyError',
  });
  const stats = daemon.stats();
  assert.equal(stats.clients, 1);
  assert.equal(stats.clientsTotal, 1);
  assert.ok(stats.cache.bytesFetched > 0, JSON.stringify(stats));

  // The daemon stops: the client's next call is DaemonGoneError; a new daemon: it reconnects by itself.
  daemon.stop();
  assert.equal(daemon.running, false);
  assert.equal(daemon.stats(), null);
  proc.stdin.write('stopped\n');
  assert.deepEqual(await next(), { step: 'stopped', poll: 'BCV_DAEMON_GONE' });
  daemon = Daemon.start(shared);
  proc.stdin.write('restarted\n');
  assert.deepEqual(await next(), { step: 'restarted', poll: 'ok', rows: 1000 });
  assert.equal(daemon.stats().clientsTotal, 1);
  proc.stdin.write('exit\n');
  const [code] = await once(proc, 'exit');
  assert.equal(code, 0);
});

test('a daemon hands the key of a secure container to a client that proved access', async (t) => {
  const ring = new Keyring(1, Keyring.generateKey());
  const { dir, bucket, shared, cleanup } = await setup(t, 300, ring);

  // Without the key the client cannot attach; with it (given to the daemon) it reads without one.
  const keyless = Daemon.start(shared);
  try {
    const v = new Vfs({ cacheDir: shared, name: vfsName() });
    assert.equal(v.isDaemonClient, true);
    assert.throws(() => v.attach(bucket, { alias: 'c' }), /no key/);
    await v.closeAndWait({ timeoutMs: 10_000 });
    assert.equal(keyless.running, true);
  } finally {
    keyless[Symbol.dispose](); // what `using` does
  }
  assert.equal(keyless.running, false);
  const daemon = new Daemon(shared, { keys: { [bucket]: ring } });
  cleanup.push(() => daemon.stop());
  const v = new Vfs({ cacheDir: shared, name: vfsName() });
  cleanup.push(() => v.closeAndWait({ timeoutMs: 10_000 }));
  v.attach(bucket, { alias: 'c' });
  const d = v.open('/c/db.db', { readonly: true });
  assert.equal(d.prepare('SELECT count(*) FROM t').pluck().get(), 300);
  d.close();
  assert.ok(!readFileSync(join(shared, 'blocks.bcv')).includes('row 00000001'), 'plaintext in the shared cache');
  // A container the client cannot read gets no key: the daemon refuses.
  assert.throws(() => v.attach(join(dir, 'elsewhere'), { alias: 'e' }), (e) => {
    assert.ok(e instanceof bcv.DaemonError, String(e));
    assert.equal(e.code, 'BCV_DAEMON');
    return true;
  });
  assert.throws(() => new Daemon(shared), { code: 'BCV_BUSY' });
  assert.throws(() => new Daemon(shared, { keys: { [bucket]: 'not a ring' } }), TypeError);
});
