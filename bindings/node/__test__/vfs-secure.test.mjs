// Secure containers from Node: key rings (nothing in plaintext in the bucket or the cache, wrong and missing
// keys), rotation, key providers, and application ciphers written in JS, called from bcv's worker threads
// (uploads, jobs, container tools) as well as from the JS thread (SQL), by sync and async methods alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bcv } from './helpers.mjs';

const { Container, Keyring, Vfs } = bcv;

/** Text that must never appear in the bucket or a cache directory. */
const CANARY = 'CANARY-node-plaintext-5e1d';

let nextName = 0;
const vfsName = () => `bcv-node-secure-${process.pid}-${nextName++}`;

/** A temp directory removed after the test, and the VFSes to close before that. */
function setup(t) {
  const dir = mkdtempSync(join(tmpdir(), 'bcv-secure-'));
  const vfses = [];
  t.after(async () => {
    for (const v of vfses) await v.closeAndWait({ timeoutMs: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });
  let n = 0;
  /** A Vfs on a fresh cache directory `dir/cache-<n>`. */
  const vfs = () => {
    const v = new Vfs({ cacheDir: join(dir, `cache-${n++}`), name: vfsName() });
    vfses.push(v);
    return v;
  };
  return { dir, bucket: join(dir, 'bucket'), vfs };
}

/** Every file under `dir` whose bytes contain `needle`. */
function filesContaining(dir, needle) {
  const found = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      let st;
      try {
        st = statSync(path);
      } catch {
        continue; // journals come and go
      }
      if (st.isDirectory()) walk(path);
      else if (st.isFile() && readFileSync(path).includes(needle)) found.push(path);
    }
  };
  walk(dir);
  return found;
}

/** Writes rows `from..to` with the canary into table `t` of `/c/<db>`. */
function fill(v, db, from, to) {
  const d = v.open(`/c/${db}`);
  d.exec('CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body TEXT)');
  const ins = d.prepare('INSERT INTO t VALUES (?, ?)');
  d.transaction(() => {
    for (let i = from; i < to; i++) ins.run(i, `${CANARY} ${i} ${'y'.repeat(200)}`);
  })();
  d.close();
}

function count(v, db, where = '') {
  const d = v.open(`/c/${db}`, { readonly: true });
  try {
    return d.prepare(`SELECT count(*) FROM t ${where}`).pluck().get();
  } finally {
    d.close();
  }
}

test('key ring: nothing in plaintext, a second client reads, wrong and missing keys are refused', async (t) => {
  const { dir, bucket, vfs } = setup(t);
  const key = Keyring.generateKey();
  assert.equal(key.length, 32);
  assert.notDeepEqual(Keyring.generateKey(), key);
  const ring = new Keyring(1, key);
  assert.equal(ring.current, 1);

  const tools = new Container(bucket, { secure: ring });
  await tools.create({ blockSize: 65536 });
  assert.equal(await tools.isSecure(), true);

  const v1 = vfs();
  assert.equal(v1.attach(bucket, { alias: 'c', secure: ring }), 'c');
  fill(v1, 's.db', 0, 1500);
  assert.equal(count(v1, 's.db', `WHERE body LIKE '${CANARY}%'`), 1500);
  const report = v1.upload('c');
  assert.ok(report.blocksWritten > 0);
  assert.deepEqual(filesContaining(dir, CANARY), [], 'plaintext in the bucket or a cache');

  // A second client with the key (given as { keyring }) reads every row through its own cache.
  const v2 = vfs();
  v2.attach(bucket, { alias: 'c', secure: { keyring: new Keyring(1, key) } });
  assert.equal(count(v2, 's.db', `WHERE body LIKE '${CANARY}%'`), 1500);
  assert.deepEqual(filesContaining(dir, CANARY), [], 'plaintext after a second client read');

  // A wrong key: an AuthenticationError naming the marker. No key: a SecureContainerError.
  const v3 = vfs();
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: new Keyring(1, Keyring.generateKey()) }), (e) => {
    assert.ok(e instanceof bcv.AuthenticationError, String(e));
    assert.equal(e.code, 'BCV_AUTH');
    assert.match(e.message, /bcv_secure\.json/);
    assert.match(e.message, /wrong key/);
    return true;
  });
  assert.throws(() => v3.attach(bucket, { alias: 'c' }), (e) => {
    assert.ok(e instanceof bcv.SecureContainerError, String(e));
    assert.equal(e.code, 'BCV_SECURE');
    return true;
  });
  assert.deepEqual(v3.attached(), []);

  // Container tools without the key refuse; with it, downloads are the plaintext image.
  const file = join(dir, 'out.db');
  await assert.rejects(new Container(bucket).downloadFile('s.db', file), bcv.SecureContainerError);
  await tools.downloadFile('s.db', file);
  assert.ok(readFileSync(file).includes(CANARY), 'the download is the plaintext image');
  rmSync(file);

  // A key for a plaintext container is refused too; bad secure options are type errors.
  const plain = join(dir, 'plain');
  await new Container(plain).create({ blockSize: 65536 });
  assert.throws(() => v3.attach(plain, { alias: 'p', secure: ring }), bcv.SecureContainerError);
  assert.throws(() => v3.attach(plain, { alias: 'p', secure: { keyring: ring, cipher: {} } }), TypeError);
  assert.throws(() => new Keyring(1, Buffer.alloc(16)), { code: 'BCV_INVALID_ARGUMENT' });
  assert.throws(() => new Keyring(1, key).rotateTo(2), { code: 'BCV_INVALID_ARGUMENT' });
});

test('key rotation keeps old rows readable; a key provider is asked once per key id', async (t) => {
  const { bucket, vfs } = setup(t);
  const k1 = Keyring.generateKey();
  const k2 = Keyring.generateKey();
  const ring = new Keyring(1, k1);
  await new Container(bucket, { secure: ring }).create({ blockSize: 65536 });
  const v1 = vfs();
  v1.attach(bucket, { alias: 'c', secure: ring });
  fill(v1, 'old.db', 0, 300);
  v1.upload('c');

  // Rotate: key 2 seals new data, key 1 stays for the old blocks.
  assert.equal(ring.add(2, k2).rotateTo(2), ring);
  assert.equal(ring.current, 2);
  const v2 = vfs();
  v2.attach(bucket, { alias: 'c', secure: ring });
  fill(v2, 'new.db', 0, 200);
  await v2.uploadAsync('c');
  assert.equal(count(v2, 'old.db'), 300);

  // A reader whose key provider knows both keys: each id is asked for once.
  const asked = [];
  const v3 = vfs();
  v3.attach(bucket, {
    alias: 'c',
    secure: {
      currentKeyId: 2,
      keyProvider: (id) => {
        asked.push(id);
        return { 1: k1, 2: k2 }[id] ?? null;
      },
    },
  });
  assert.equal(count(v3, 'old.db'), 300);
  assert.equal(count(v3, 'new.db'), 200);
  assert.deepEqual([...asked].sort(), [1, 2]);

  // A provider that does not know the key, or throws, makes the key missing (never a crash).
  const v4 = vfs();
  assert.throws(() => v4.attach(bucket, { alias: 'c', secure: { currentKeyId: 2, keyProvider: () => null } }), (e) => {
    assert.equal(e.code, 'BCV_AUTH');
    assert.match(e.message, /key 1 is not available/);
    return true;
  });
  const throwing = {
    currentKeyId: 1,
    keyProvider: () => {
      throw new Error('vault unreachable');
    },
  };
  assert.throws(() => v4.attach(bucket, { alias: 'c', secure: throwing }), /key 1 is not available/);
  assert.throws(() => v4.attach(bucket, { alias: 'c', secure: { keyProvider: () => k1 } }), TypeError);
});

/**
 * An application cipher in JS: AES-256-GCM from node:crypto under its own name, with the context as
 * additional data. Sealed = nonce (12) | ciphertext | tag (16) | padding (4): exactly plaintext + 32 bytes.
 */
function appCipher(key, name = 'node-app-gcm-v1') {
  const calls = { seal: 0, open: 0 };
  return {
    calls,
    cipher: {
      name,
      seal(context, plaintext) {
        calls.seal++;
        const nonce = randomBytes(12);
        const c = createCipheriv('aes-256-gcm', key, nonce);
        c.setAAD(context);
        const body = Buffer.concat([c.update(plaintext), c.final()]);
        return Buffer.concat([nonce, body, c.getAuthTag(), Buffer.alloc(4)]);
      },
      open(context, sealed) {
        calls.open++;
        const n = sealed.length - 32;
        const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
        d.setAAD(context);
        d.setAuthTag(sealed.subarray(12 + n, 28 + n));
        try {
          return Buffer.concat([d.update(sealed.subarray(12, 12 + n)), d.final()]);
        } catch {
          return null; // not authentic
        }
      },
    },
  };
}

test('an application cipher in JS: SQL, sync and async uploads, jobs and container tools', async (t) => {
  const { dir, bucket, vfs } = setup(t);
  const key = randomBytes(32);
  const { cipher, calls } = appCipher(key);
  const tools = new Container(bucket, { secure: { cipher } });
  await tools.create({ blockSize: 65536 });

  // Sync SQL on the JS thread calls the cipher directly; the sync upload runs on a helper thread while the
  // JS thread serves the cipher calls of bcv's workers.
  const v1 = vfs();
  v1.attach(bucket, { alias: 'c', secure: { cipher } });
  fill(v1, 'a.db', 0, 800);
  assert.equal(count(v1, 'a.db'), 800);
  const before = calls.seal;
  assert.ok(v1.upload('c').blocksWritten > 0);
  assert.ok(calls.seal > before, 'the upload sealed through the JS cipher');
  // Async upload and a background job: the JS thread is free and serves the calls as they come.
  fill(v1, 'b.db', 0, 500);
  await v1.uploadAsync('c');
  fill(v1, 'c.db', 0, 400);
  await v1.uploadStart('c').wait();
  // A sync call that waits for a job whose workers are calling the JS cipher: the upload job holds the
  // container's writer lock while it seals, and the sync upload waits for that lock on a helper thread while
  // the JS thread serves the job's cipher calls (no deadlock).
  fill(v1, 'c.db', 400, 900);
  const job = v1.uploadStart('c');
  v1.upload('c');
  await job.wait();
  assert.equal(count(v1, 'c.db'), 900);
  assert.deepEqual(filesContaining(dir, CANARY), [], 'plaintext with an application cipher');

  // Another client reads it all (prefetch job included); container tools upload and download through it.
  const v2 = vfs();
  v2.attach(bucket, { alias: 'c', secure: { cipher } });
  await v2.prefetchStart('c', 'a.db').wait();
  assert.equal(count(v2, 'a.db'), 800);
  assert.equal(count(v2, 'b.db'), 500);
  assert.equal(count(v2, 'c.db'), 900);
  const file = join(dir, 'a-plain.db');
  await tools.downloadFile('a.db', file);
  assert.equal(await tools.uploadFile(file, 'd.db'), 1);
  v2.poll('c');
  assert.equal(count(v2, 'd.db'), 800);
  assert.ok(calls.open > 0);

  // The same cipher under another name is refused: the container records its cipher.
  const v3 = vfs();
  const renamed = { ...cipher, name: 'another-cipher' };
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: { cipher: renamed } }), (e) => {
    assert.equal(e.code, 'BCV_AUTH');
    assert.match(e.message, /node-app-gcm-v1/);
    return true;
  });
  // A cipher whose open fails (null, or throwing an AuthenticationError) is an authentication error.
  const refusing = { ...cipher, open: () => null };
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: { cipher: refusing } }), bcv.AuthenticationError);
  const throwingAuth = {
    ...cipher,
    open: () => {
      throw new bcv.AuthenticationError('hsm says no', 'BCV_AUTH');
    },
  };
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: { cipher: throwingAuth } }), (e) => {
    assert.equal(e.code, 'BCV_AUTH');
    assert.match(e.message, /wrong key/);
    return true;
  });
  // Another key: the JS open returns null for every chunk.
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: appCipher(randomBytes(32)) }), bcv.AuthenticationError);
  assert.throws(() => v3.attach(bucket, { alias: 'c', secure: { cipher: { name: 'x', seal() {} } } }), {
    code: 'BCV_INVALID_ARGUMENT',
  });
});

test('a JS cipher that throws or returns the wrong length fails the operation, never the process', async (t) => {
  const { bucket, vfs } = setup(t);
  const key = randomBytes(32);
  const { cipher } = appCipher(key);
  let mode = 'ok';
  const flaky = {
    name: cipher.name,
    seal(context, plaintext) {
      if (mode === 'throw') throw new Error('boom from seal');
      if (mode === 'short') return Buffer.alloc(plaintext.length);
      if (mode === 'promise') return Promise.resolve(cipher.seal(context, plaintext));
      return cipher.seal(context, plaintext);
    },
    open: (context, sealed) => cipher.open(context, sealed),
  };
  await new Container(bucket, { secure: { cipher: flaky } }).create({ blockSize: 65536 });
  const v = vfs();
  v.attach(bucket, { alias: 'c', secure: { cipher: flaky } });
  fill(v, 'a.db', 0, 300);

  // Uploads seal on bcv's threads: the error comes back from the sync and the async variant alike.
  mode = 'throw';
  assert.throws(() => v.upload('c'), (e) => {
    assert.match(e.message, /boom from seal/);
    return true;
  });
  await assert.rejects(v.uploadAsync('c'), /boom from seal/);
  mode = 'short';
  await assert.rejects(v.uploadAsync('c'), /returned \d+ bytes; it must return \d+ \(the plaintext length \+ 32\)/);
  mode = 'promise';
  assert.throws(() => v.upload('c'), /must return a Uint8Array/);
  // Nothing was lost: with a working cipher the same changes upload.
  mode = 'ok';
  assert.ok(v.upload('c').blocksWritten > 0);
  assert.equal(count(v, 'a.db'), 300);
  // SQL on the JS thread calls the cipher directly: its exception fails the statement (SQLite's I/O error).
  mode = 'throw';
  const d = v.open('/c/e.db');
  assert.throws(() => d.exec(`CREATE TABLE t(x); INSERT INTO t VALUES ('${'z'.repeat(20000)}')`), (e) => {
    assert.ok(e instanceof bcv.BcvError, String(e));
    return true;
  });
  d.close();
  mode = 'ok';
});
