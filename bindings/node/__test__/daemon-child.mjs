// A separate process for vfs-daemon.test.mjs (not a test itself): a Vfs on the daemon's cache directory,
// driven line by line over stdin; each step prints one JSON line on stdout.
import { createInterface } from 'node:readline';
import { bcv } from './helpers.mjs';

const [dir, bucket] = process.argv.slice(2);
const say = (what) => process.stdout.write(`${JSON.stringify(what)}\n`);
const codeOf = (fn) => {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return e.code;
  }
};
const rows = (v) => {
  const d = v.open('/c/db.db', { readonly: true });
  try {
    return d.prepare('SELECT count(*) FROM t').pluck().get();
  } finally {
    d.close();
  }
};

const vfs = new bcv.Vfs({ cacheDir: dir, name: `bcv-daemon-child-${process.pid}` });
vfs.attach(bucket, { alias: 'c' });
const db = vfs.open('/c/db.db');
say({
  step: 'open',
  isDaemonClient: vfs.isDaemonClient,
  rows: rows(vfs),
  insert: codeOf(() => db.exec("INSERT INTO t(v) VALUES ('from the child')")),
  upload: codeOf(() => vfs.upload('c')),
  uploadClass: (() => {
    try {
      vfs.upload('c');
    } catch (e) {
      return e.constructor.name;
    }
  })(),
});
db.close();

const steps = {
  // The daemon was stopped: the next call reports it.
  stopped: () => ({ poll: codeOf(() => vfs.poll('c')) }),
  // A daemon is back: the client reconnects and attaches again by itself.
  restarted: () => ({ poll: codeOf(() => vfs.poll('c')), rows: rows(vfs) }),
};
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'exit') break;
  say({ step: line, ...steps[line]() });
}
await vfs.closeAndWait({ timeoutMs: 10_000 });
process.exit(0); // stdin stays open (the parent's pipe)
