// The lease lock from Node: one writer per container. A held lease refuses other clients' obtain and uploads
// (LeaseHeldError naming the holder) while the holder uploads; release lets the next one in. Container tools
// hand holdings between processes by token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bcv } from './helpers.mjs';

const { Container, Lease, LeaseHeldError, LeaseLostError, Vfs } = bcv;

let nextName = 0;
const vfsName = () => `bcv-node-lease-${process.pid}-${nextName++}`;

async function setup(t) {
  const dir = mkdtempSync(join(tmpdir(), 'bcv-lease-'));
  const bucket = join(dir, 'bucket');
  const vfses = [];
  t.after(async () => {
    for (const v of vfses) await v.closeAndWait({ timeoutMs: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });
  await new Container(bucket).create({ blockSize: 65536 });
  let n = 0;
  /** A Vfs on its own cache directory with the bucket attached as `c`. */
  const client = (options = {}) => {
    const v = new Vfs({ cacheDir: join(dir, `cache-${n++}`), name: vfsName(), ...options });
    vfses.push(v);
    v.attach(bucket, { alias: 'c' });
    return v;
  };
  return { bucket, client };
}

function write(v, db, rows) {
  const d = v.open(`/c/${db}`);
  d.exec('CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)');
  const ins = d.prepare('INSERT INTO t(v) VALUES (?)');
  d.transaction(() => {
    for (let i = 0; i < rows; i++) ins.run(`row ${i}`);
  })();
  d.close();
}

test('a held lease refuses other clients until it is released', async (t) => {
  const { client } = await setup(t);
  const a = client();
  const b = client();
  assert.equal(a.leaseStatus('c'), null);
  assert.equal(a.leaseHeld('c'), null);

  const lease = a.leaseObtain('c', 'node host-a', 30_000);
  assert.ok(lease instanceof Lease);
  assert.equal(lease.holder, 'node host-a');
  assert.match(lease.token, /^[0-9a-f]{32}$/);
  assert.ok(lease.expires instanceof Date && lease.acquired instanceof Date);
  assert.ok(lease.expiresIn > 25_000 && lease.expiresIn <= 30_000, String(lease.expiresIn));
  assert.equal(lease.isExpired, false);
  assert.equal(a.leaseHeld('c').token, lease.token);
  assert.deepEqual({ ...b.leaseStatus('c') }, { ...lease });

  // The other client cannot obtain it, nor upload.
  assert.throws(() => b.leaseObtain('c', 'node host-b', 30_000), (e) => {
    assert.ok(e instanceof LeaseHeldError, String(e));
    assert.equal(e.code, 'BCV_LEASE_HELD');
    assert.equal(e.holder, 'node host-a');
    assert.equal(e.generation, lease.generation);
    assert.equal(e.expiresUnixMs, lease.expiresUnixMs);
    assert.match(e.message, /node host-a/);
    return true;
  });
  await assert.rejects(b.leaseObtainAsync('c', 'node host-b', 30_000), LeaseHeldError);
  write(b, 'b.db', 10);
  assert.throws(() => b.upload('c'), LeaseHeldError);
  await assert.rejects(b.uploadAsync('c'), (e) => e instanceof LeaseHeldError && e.holder === 'node host-a');
  // The holder uploads (renewing the lease first).
  write(a, 'a.db', 10);
  assert.ok(a.upload('c').blocksWritten > 0);
  const extended = a.leaseExtend('c', 60_000);
  assert.equal(extended.token, lease.token);
  assert.ok(extended.expiresUnixMs > lease.expiresUnixMs);
  assert.ok((await a.leaseExtendAsync('c', 60_000)).expiresUnixMs >= extended.expiresUnixMs);

  // Released: the other client obtains it (a new holding, a new generation) and uploads.
  a.leaseRelease('c');
  assert.equal(a.leaseHeld('c'), null);
  assert.equal(await b.leaseStatusAsync('c'), null);
  assert.throws(() => a.leaseRelease('c'), (e) => e instanceof LeaseLostError && e.code === 'BCV_LEASE_LOST');
  const second = await b.leaseObtainAsync('c', 'node host-b', 30_000);
  assert.equal(second.holder, 'node host-b');
  assert.ok(second.generation > lease.generation);
  b.poll('c');
  assert.ok(b.upload('c').blocksWritten > 0);
  assert.throws(() => a.leaseExtend('c', 30_000), LeaseLostError);
  await b.leaseReleaseAsync('c');

  // Durations must exceed the safety margin (configurable).
  assert.throws(() => a.leaseObtain('c', 'node host-a', 2_000), { code: 'BCV_INVALID_ARGUMENT' });
  assert.throws(() => a.leaseObtain('c', 'node host-a', -1), TypeError);
  const quick = client({ leaseSafetyMarginMs: 500, leaseMaxSkewMs: 1_000 });
  assert.equal(quick.leaseObtain('c', 'quick', 2_000).holder, 'quick');
  quick.leaseRelease('c');
});

test('container tools: obtain, status, extend and release by token, adopt', async (t) => {
  const { bucket, client } = await setup(t);
  const holder = new Container(bucket);
  const other = new Container(bucket);
  const lease = await holder.leaseObtain('node deploy 42', 30_000);
  assert.equal(lease.holder, 'node deploy 42');
  assert.equal((await holder.leaseHeld()).token, lease.token);
  assert.equal((await other.leaseStatus()).token, lease.token);
  assert.equal(await other.leaseHeld(), null);
  await assert.rejects(other.leaseObtain('someone else', 30_000), (e) => {
    assert.ok(e instanceof LeaseHeldError);
    assert.equal(e.holder, 'node deploy 42');
    return true;
  });
  // A client that never obtained it cannot write while it is held.
  const v = client();
  write(v, 'x.db', 5);
  assert.throws(() => v.upload('c'), LeaseHeldError);
  // Another process extends the holding by its token, and a Vfs adopts it to write as the holder.
  await assert.rejects(other.leaseExtend(30_000), LeaseLostError);
  const extended = await other.leaseExtend(45_000, { token: lease.token });
  assert.equal(extended.token, lease.token);
  const adopted = v.leaseAdopt('c', lease.token);
  assert.equal(adopted.holder, 'node deploy 42');
  assert.ok(v.upload('c').blocksWritten > 0);
  assert.throws(() => v.leaseAdopt('c', '00'.repeat(16)), LeaseLostError);
  // Released by token from the other object: nobody holds it now.
  await other.leaseRelease({ token: lease.token });
  assert.equal(await holder.leaseStatus(), null);
  await assert.rejects(holder.leaseRelease(), LeaseLostError);
  await assert.rejects(other.leaseRelease({ token: lease.token }), LeaseLostError);
  const again = await other.leaseAdopt((await other.leaseObtain('other', 30_000)).token);
  assert.equal(again.holder, 'other');
  await other.leaseRelease();
});
