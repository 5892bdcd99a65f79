'use strict';
/**
 * The block-cache VFS for Node: SQLite databases stored as blocks plus a manifest in a cloud container
 * (or a local directory), read lazily through a local cache directory.
 *
 * - `Vfs`: a cache directory registered as an SQLite VFS in bcv's own SQLite; attach containers under an
 *   alias, then open `/alias/db` with `vfs.open()`. `poll()` makes other clients' uploads visible,
 *   `upload()` publishes local changes (both have `…Async` variants that run off the JS thread).
 * - `Database` / `Statement`: a synchronous SQL API in the style of better-sqlite3.
 * - `Job`: a prefetch or upload running in the background.
 * - `Container`: container tools without a cache (create, upload a database file, …); every method
 *   returns a promise.
 * - Secure containers: `Keyring`, or a key provider, or an application cipher, given as `secure` to
 *   `Vfs.attach` and `new Container`. Leases (`Lease`): one writer per container. `Daemon`: multi-process
 *   mode (a `Vfs` on a daemon's directory becomes its read-only client).
 *
 * JS ciphers and key providers run on the JS thread. bcv calls them from its worker threads too (uploads,
 * prefetch, container tools): those calls are served whenever the JS thread is idle, and while a synchronous
 * `Vfs` method of a VFS with such a container waits (it then runs on a helper thread and the JS thread
 * serves the calls). SQL statements of the synchronous `Database` API call them directly.
 *
 * Ownership: `Vfs`, `Database` and `Job` are handles (see `Handle`): `close()` is the forced, cascading end
 * (closing a `Vfs` closes its databases and cancels its jobs, and frees its cache directory and SQLite name
 * once they are closed; `closeAndWait()` resolves then). Letting them be garbage-collected only releases
 * them: a `Database` keeps its `Vfs` working, in any order.
 *
 * Internal to the package: `lib/index.js` calls this with its internals and re-exports the classes.
 */

/**
 * @param {object} internals `native`, `Handle`, `kNative`, `kInspectFields` from `lib/index.js`
 */
module.exports = function defineVfs({ native, Handle, kNative, kInspectFields, disposeSymbol }) {
  const kCreate = Symbol('bcv.create');
  /** The native key ring inside a `Keyring`. */
  const kRing = Symbol('bcv.ring');
  /** Row shapes and integer mode passed to the native statement. */
  const MODE_RAW = 1;
  const MODE_PLUCK = 2;
  const MODE_SAFE_INTEGERS = 4;

  function text(value, what) {
    if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
    return value;
  }

  function optionalNumber(value, what) {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !(value >= 0)) throw new TypeError(`${what} must be a non-negative number`);
    return value;
  }

  function optionalInteger(value, what) {
    if (value === undefined || value === null) return undefined;
    if (!Number.isInteger(value) || value < 0) throw new TypeError(`${what} must be a non-negative integer`);
    return value;
  }

  function checkKeyId(value, what = 'keyId') {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new TypeError(`${what} must be an integer from 0 to 2^32-1`);
    }
    return value;
  }

  function keyBytes(value) {
    if (!(value instanceof Uint8Array)) throw new TypeError('a key must be a Uint8Array of 32 bytes');
    return value;
  }

  function duration(value) {
    if (typeof value !== 'number' || !(value > 0)) throw new TypeError('durationMs must be a positive number');
    return value;
  }

  /** Lease options shared by `Vfs` and `Container`. */
  function leaseOptionsOf(options) {
    return {
      leaseMaxSkewMs: optionalNumber(options?.leaseMaxSkewMs, 'leaseMaxSkewMs'),
      leaseSafetyMarginMs: optionalNumber(options?.leaseSafetyMarginMs, 'leaseSafetyMarginMs'),
    };
  }

  /**
   * The native secure options of a `secure` option: a `Keyring`, or an object with exactly one of `keyring`,
   * `keyProvider` (with `currentKeyId`) or `cipher`.
   */
  function secureOf(secure) {
    if (secure === undefined || secure === null) return undefined;
    if (secure instanceof Keyring) return native.secureKeyring(secure[kRing]);
    if (typeof secure !== 'object') throw new TypeError('secure must be a Keyring or an object');
    const given = ['keyring', 'keyProvider', 'cipher'].filter((k) => secure[k] !== undefined && secure[k] !== null);
    if (given.length !== 1) {
      throw new TypeError('secure: give exactly one of keyring, keyProvider (with currentKeyId) or cipher');
    }
    if (given[0] === 'keyring') {
      if (!(secure.keyring instanceof Keyring)) throw new TypeError('secure.keyring must be a bcv Keyring');
      return native.secureKeyring(secure.keyring[kRing]);
    }
    if (given[0] === 'keyProvider') {
      if (typeof secure.keyProvider !== 'function') throw new TypeError('secure.keyProvider must be a function');
      return native.secureKeyProvider(checkKeyId(secure.currentKeyId, 'secure.currentKeyId'), secure.keyProvider);
    }
    const cipher = secure.cipher;
    if (cipher === null || typeof cipher !== 'object') throw new TypeError('secure.cipher must be an object');
    return native.secureCipher(text(cipher.name, 'secure.cipher.name'), cipher);
  }

  /** A `Lease` from native plain data (`null` stays `null`). */
  function leaseOf(data) {
    return data === null || data === undefined ? null : new Lease(kCreate, data);
  }

  /** `{ cleanupGraceMs }` of the upload calls. */
  function graceOf(options) {
    return optionalNumber(options?.cleanupGraceMs, 'cleanupGraceMs');
  }

  /** Store options shared by `Vfs` and `Container`. */
  function storeOptionsOf(options) {
    return {
      nrequest: optionalInteger(options?.nrequest, 'nrequest'),
      retries: optionalInteger(options?.retries, 'retries'),
      requestTimeoutMs: optionalNumber(options?.requestTimeoutMs, 'requestTimeoutMs'),
    };
  }

  function isNamedParameters(value) {
    if (value === null || typeof value !== 'object') return false;
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  }

  /**
   * better-sqlite3's parameter forms: values in order (arrays are spread), plus at most one plain object
   * with the named ones (`:name`, `@name`, `$name` are looked up as `name`).
   * @returns {[unknown[], object | null]}
   */
  function paramsOf(args) {
    const positional = [];
    let named = null;
    for (const arg of args) {
      if (Array.isArray(arg)) {
        positional.push(...arg);
      } else if (isNamedParameters(arg)) {
        if (named !== null) throw new TypeError('only one object of named parameters can be given');
        named = arg;
      } else {
        positional.push(arg);
      }
    }
    return [positional, named];
  }

  /**
   * A block-cache VFS: a cache directory registered as an SQLite VFS (in bcv's SQLite), with the
   * containers attached to it. One process owns a cache directory at a time; the `name` must be unique in
   * the process (give each `Vfs` its own).
   */
  class Vfs extends Handle {
    #name;
    #cacheDir;

    /**
     * When a daemon (`Daemon`, `bcv daemon`) owns `cacheDir`, the `Vfs` becomes its read-only client
     * (`isDaemonClient`).
     * @param {{ cacheDir: string, name?: string, cacheSize?: number, nrequest?: number, retries?: number,
     *   requestTimeoutMs?: number, leaseMaxSkewMs?: number, leaseSafetyMarginMs?: number }} options
     * @throws {BcvError} `BCV_BUSY` when the cache directory is owned by another process or `Vfs`,
     *   `BCV_INVALID_ARGUMENT` when the name is taken, `BCV_IO`
     */
    constructor(options) {
      if (options === null || typeof options !== 'object') throw new TypeError('new Vfs(options): options are required');
      const cacheDir = text(options.cacheDir, 'cacheDir');
      const name = options.name === undefined ? undefined : text(options.name, 'name');
      const h = native.openVfs({
        cacheDir,
        name,
        cacheSize: optionalNumber(options.cacheSize, 'cacheSize'),
        ...storeOptionsOf(options),
        ...leaseOptionsOf(options),
      });
      super(h);
      this.#name = h.vfsName();
      this.#cacheDir = h.vfsCacheDir();
    }

    /** The SQLite VFS name. */
    get name() { return this.#name; }
    /** The cache directory. */
    get cacheDir() { return this.#cacheDir; }
    /** True when this `Vfs` is a read-only client of a daemon owning its cache directory. */
    get isDaemonClient() { return this[kNative].vfsIsDaemonClient(); }

    /**
     * Attaches a container (a directory path, `memory://NAME`, `s3://…`, `az://…`, `gs://…`). Fetches its
     * manifest unless this cache already knows it.
     * @param {string} url
     * @param {{ alias?: string, ifNotAttached?: boolean, secure?: Keyring | SecureOptions }} [options] the
     *   alias defaults to the URL's last component; `ifNotAttached` makes attaching the same URL under the
     *   same alias again a no-op; `secure` is the key or cipher of a secure container
     * @returns {string} the alias
     * @throws {BcvError} `BCV_ALREADY_EXISTS` (alias taken), `BCV_NOT_FOUND` (no container there), `BCV_IO`;
     *   `SecureContainerError` (a secure container without a key, a key for a plaintext one),
     *   `AuthenticationError` (a wrong key: the message names `bcv_secure.json`)
     */
    attach(url, options = {}) {
      const alias = options?.alias === undefined ? undefined : text(options.alias, 'alias');
      const secure = secureOf(options?.secure);
      return this[kNative].vfsAttach(text(url, 'url'), alias, Boolean(options?.ifNotAttached), secure);
    }

    /**
     * Detaches a container.
     * @throws {BcvError} `BCV_BUSY` while a database of it is open or has changes not uploaded
     */
    detach(alias) {
      this[kNative].vfsDetach(text(alias, 'alias'));
    }

    /**
     * Fetches the container's manifest if it changed (one conditional request) and makes new versions of
     * databases visible (to open transactions once they end). Blocks the JS thread; see `pollAsync`.
     * @returns {PollReport}
     */
    poll(alias) {
      return this[kNative].vfsPoll(text(alias, 'alias'));
    }

    /** `poll()` off the JS thread. @returns {Promise<PollReport>} */
    pollAsync(alias) {
      return this[kNative].vfsPollAsync(text(alias, 'alias'));
    }

    /**
     * Uploads the local changes of every database of the container, then installs the new manifest with
     * a conditional write. Blocks the JS thread; see `uploadAsync`.
     * @param {string} alias
     * @param {{ cleanupGraceMs?: number }} [options] also delete garbage blocks older than this
     * @returns {UploadReport}
     * @throws {ConflictError} another client changed a database this one changed too (nothing is lost:
     *   `revert()` and write again after `poll()`)
     */
    upload(alias, options = {}) {
      return this[kNative].vfsUpload(text(alias, 'alias'), graceOf(options));
    }

    /** `upload()` off the JS thread. @returns {Promise<UploadReport>} */
    uploadAsync(alias, options = {}) {
      return this[kNative].vfsUploadAsync(text(alias, 'alias'), graceOf(options));
    }

    /**
     * Starts fetching every block of a database that the cache lacks, in the background.
     * @returns {Job}
     */
    prefetchStart(alias, db) {
      return new Job(this[kNative].vfsPrefetchStart(text(alias, 'alias'), text(db, 'db')));
    }

    /**
     * Starts an upload in the background. Cancelling it before the manifest is sent leaves the container
     * unchanged.
     * @param {string} alias
     * @param {{ cleanupGraceMs?: number }} [options]
     * @returns {Job}
     */
    uploadStart(alias, options = {}) {
      return new Job(this[kNative].vfsUploadStart(text(alias, 'alias'), graceOf(options)));
    }

    /**
     * Drops the local changes of `db`, or of every database of the container.
     * @returns {string[]} the databases reverted
     */
    revert(alias, db = undefined) {
      return this[kNative].vfsRevert(text(alias, 'alias'), db === undefined ? undefined : text(db, 'db'));
    }

    /** Copies database `from` to a new database `to` in the container, sharing its blocks. */
    copy(alias, from, to) {
      this[kNative].vfsCopy(text(alias, 'alias'), text(from, 'from'), text(to, 'to'));
    }

    /** Deletes a database from the container. */
    delete(alias, db) {
      this[kNative].vfsDelete(text(alias, 'alias'), text(db, 'db'));
    }

    /** Status of every database of the container. @returns {DatabaseStatus[]} */
    databases(alias) {
      return this[kNative].vfsDatabases(text(alias, 'alias'));
    }

    /** The container's manifest as this client last saw it. @returns {ManifestInfo} */
    manifest(alias) {
      return this[kNative].vfsManifest(text(alias, 'alias'));
    }

    /** The request counters of the container. @returns {MeterSnapshot} */
    meter(alias) {
      return this[kNative].vfsMeter(text(alias, 'alias'));
    }

    /** Cache activity and occupancy. @returns {CacheStats} */
    cacheStats() {
      return this[kNative].vfsCacheStats();
    }

    /** The SQLite path of a database: `/alias/db`. */
    path(alias, db) {
      return this[kNative].vfsPath(text(alias, 'alias'), text(db, 'db'));
    }

    /** The attached containers. @returns {Array<{ alias: string, url: string }>} */
    attached() {
      return this[kNative].vfsAttached();
    }

    /**
     * Obtains the container's lease for `holder` (free text, 1 to 256 bytes, e.g. `'host-a pid 123'`) for
     * `durationMs`. While it holds it, this `Vfs` renews it before each manifest write and other clients'
     * writes are refused with `LeaseHeldError`. Blocks the JS thread; see `leaseObtainAsync`.
     * @returns {Lease}
     * @throws {LeaseHeldError} another client holds it (`holder`, `expiresUnixMs`); `BcvError`
     *   `BCV_INVALID_ARGUMENT` for a bad holder, a duration not longer than the safety margin, or a lease this
     *   `Vfs` holds already
     */
    leaseObtain(alias, holder, durationMs) {
      return leaseOf(this[kNative].vfsLeaseObtain(text(alias, 'alias'), text(holder, 'holder'), duration(durationMs)));
    }

    /** `leaseObtain()` off the JS thread. @returns {Promise<Lease>} */
    async leaseObtainAsync(alias, holder, durationMs) {
      const pending = this[kNative].vfsLeaseObtainAsync(text(alias, 'alias'), text(holder, 'holder'), duration(durationMs));
      return leaseOf(await pending);
    }

    /**
     * Extends the lease this `Vfs` holds to expire `durationMs` from now.
     * @returns {Lease}
     * @throws {LeaseLostError} it holds none any more (expired, taken over)
     */
    leaseExtend(alias, durationMs) {
      return leaseOf(this[kNative].vfsLeaseExtend(text(alias, 'alias'), duration(durationMs)));
    }

    /** `leaseExtend()` off the JS thread. @returns {Promise<Lease>} */
    async leaseExtendAsync(alias, durationMs) {
      return leaseOf(await this[kNative].vfsLeaseExtendAsync(text(alias, 'alias'), duration(durationMs)));
    }

    /**
     * Releases the lease this `Vfs` holds: others may obtain it at once (detaching releases it too).
     * @throws {LeaseLostError} it held none, or it was taken over
     */
    leaseRelease(alias) {
      this[kNative].vfsLeaseRelease(text(alias, 'alias'));
    }

    /** `leaseRelease()` off the JS thread. @returns {Promise<void>} */
    async leaseReleaseAsync(alias) {
      await this[kNative].vfsLeaseReleaseAsync(text(alias, 'alias'));
    }

    /**
     * The container's lease as recorded there, read now (an expired one nobody took over included).
     * @returns {Lease | null} `null` when none is held
     */
    leaseStatus(alias) {
      return leaseOf(this[kNative].vfsLeaseStatus(text(alias, 'alias')));
    }

    /** `leaseStatus()` off the JS thread. @returns {Promise<Lease | null>} */
    async leaseStatusAsync(alias) {
      return leaseOf(await this[kNative].vfsLeaseStatusAsync(text(alias, 'alias')));
    }

    /**
     * Makes this `Vfs` the holder of a lease obtained elsewhere (another process) under `token`; nothing is
     * written.
     * @returns {Lease}
     * @throws {LeaseLostError} the container's lease is not that unexpired holding
     */
    leaseAdopt(alias, token) {
      return leaseOf(this[kNative].vfsLeaseAdopt(text(alias, 'alias'), text(token, 'token')));
    }

    /** The lease this `Vfs` holds, as it last wrote it (no request). @returns {Lease | null} */
    leaseHeld(alias) {
      return leaseOf(this[kNative].vfsLeaseHeld(text(alias, 'alias')));
    }

    /**
     * Opens a database through this VFS (the same as `new Database(vfs, path, options)`).
     * @param {string} path `/alias/db`
     * @param {DatabaseOptions} [options]
     * @returns {Database}
     */
    open(path, options = {}) {
      return new Database(this, path, options);
    }

    [kInspectFields]() {
      return { name: this.#name, cacheDir: this.#cacheDir };
    }
  }

  /**
   * An SQLite connection to a database of a `Vfs`, with a synchronous API in the style of better-sqlite3.
   * Closing the `Vfs` (or detaching the container) closes it: calls then throw `ClosedError('PARENT')`.
   */
  class Database extends Handle {
    #vfs;
    #path;
    #readonly;
    #safeIntegers;

    /**
     * @param {Vfs} vfs
     * @param {string} path `/alias/db`
     * @param {DatabaseOptions} [options] `readonly` (default false), `create` (default true: a database
     *   that does not exist is created locally, until uploaded), `timeoutMs` (how long to wait for a lock
     *   held by another connection, default 5000), `safeIntegers` (default false)
     * @throws {SqliteError} e.g. `SQLITE_CANTOPEN`; `ClosedError` when the VFS is closed
     */
    constructor(vfs, path, options = {}) {
      if (!(vfs instanceof Vfs)) throw new TypeError('new Database(vfs, path): vfs must be a bcv Vfs');
      const readonly = Boolean(options?.readonly);
      const create = options?.create === undefined ? true : Boolean(options.create);
      const timeoutMs = optionalNumber(options?.timeoutMs, 'timeoutMs');
      super(vfs[kNative].vfsOpen(text(path, 'path'), readonly, create, timeoutMs));
      this.#vfs = vfs;
      this.#path = path;
      this.#readonly = readonly;
      this.#safeIntegers = Boolean(options?.safeIntegers);
    }

    /** The path it was opened with (`/alias/db`). */
    get name() { return this.#path; }
    /** The `Vfs` it was opened through. */
    get vfs() { return this.#vfs; }
    /** True until it is closed (by `close()`, or with its `Vfs` or container). */
    get open() { return this[kNative].dbIsOpen(); }
    /** True when opened read-only. */
    get readonly() { return this.#readonly; }
    /** Always false: bcv databases live in a container. */
    get memory() { return false; }
    /** True inside an explicit transaction. */
    get inTransaction() { return this[kNative].dbInTransaction(); }

    /**
     * Runs SQL text of one or more statements without parameters.
     * @returns {this}
     * @throws {SqliteError}
     */
    exec(sql) {
      this[kNative].dbExec(text(sql, 'sql'));
      return this;
    }

    /**
     * Prepares one statement.
     * @returns {Statement}
     * @throws {SqliteError} a syntax error, several statements (use `exec`)
     */
    prepare(sql) {
      const source = text(sql, 'sql');
      return new Statement(kCreate, this, this[kNative].dbPrepare(source), source, this.#safeIntegers);
    }

    /**
     * Wraps `fn` in a transaction: the returned function runs `BEGIN`, `fn`, `COMMIT`, and rolls back when
     * `fn` throws (the error is re-thrown). Called inside another transaction it uses a savepoint. Its
     * `.deferred`, `.immediate` and `.exclusive` variants choose the `BEGIN` kind.
     * @template {(...args: any[]) => any} F
     * @param {F} fn must not return a promise (a transaction cannot span an `await`)
     * @returns {F & { deferred: F, immediate: F, exclusive: F }}
     */
    transaction(fn) {
      if (typeof fn !== 'function') throw new TypeError('transaction(fn): fn must be a function');
      const db = this;
      const make = (begin) => function transaction(...args) {
        const nested = db.inTransaction;
        db.exec(nested ? 'SAVEPOINT "bcv transaction"' : begin);
        let result;
        try {
          result = fn.apply(this, args);
          if (result !== null && typeof result?.then === 'function') {
            throw new TypeError('a transaction function cannot return a promise');
          }
          db.exec(nested ? 'RELEASE "bcv transaction"' : 'COMMIT');
        } catch (err) {
          // SQLite may have rolled back already (some errors end the transaction themselves).
          if (db.open && db.inTransaction) {
            try {
              db.exec(nested ? 'ROLLBACK TO "bcv transaction"; RELEASE "bcv transaction"' : 'ROLLBACK');
            } catch {
              // The original error is the one that matters.
            }
          }
          throw err;
        }
        return result;
      };
      const run = make('BEGIN');
      Object.defineProperties(run, {
        deferred: { value: make('BEGIN DEFERRED') },
        immediate: { value: make('BEGIN IMMEDIATE') },
        exclusive: { value: make('BEGIN EXCLUSIVE') },
      });
      return run;
    }

    /**
     * Runs `PRAGMA source`: every row, or with `{ simple: true }` the first column of the first row.
     * @param {string} source e.g. `'page_size'`, `'journal_mode = WAL'`
     * @param {{ simple?: boolean }} [options]
     */
    pragma(source, options = {}) {
      const stmt = this.prepare(`PRAGMA ${text(source, 'source')}`);
      if (!stmt.reader) {
        stmt.run();
        return options?.simple ? undefined : [];
      }
      return options?.simple ? stmt.pluck().get() : stmt.all();
    }

    /**
     * Makes new statements return integers as `BigInt` (or numbers again with `false`).
     * @returns {this}
     */
    defaultSafeIntegers(toggle = true) {
      this.#safeIntegers = Boolean(toggle);
      return this;
    }

    /** Makes a running statement fail with `SQLITE_INTERRUPT`. */
    interrupt() {
      this[kNative].dbInterrupt();
    }

    /**
     * Closes the database now (its statements are finalized). Idempotent.
     * @returns {this}
     */
    close() {
      super.close();
      return this;
    }

    [kInspectFields]() {
      return { name: this.#path };
    }
  }

  /** A prepared statement (made by `Database.prepare`). It keeps its `Database` referenced. */
  class Statement {
    #s;
    #db;
    #source;
    #mode = 0;
    #busy = false;

    /** @internal */
    constructor(token, db, s, source, safeIntegers) {
      if (token !== kCreate) throw new TypeError('statements are made by Database.prepare()');
      this.#db = db;
      this.#s = s;
      this.#source = source;
      if (safeIntegers) this.#mode |= MODE_SAFE_INTEGERS;
    }

    /** The `Database` it belongs to. */
    get database() { return this.#db; }
    /** The SQL text. */
    get source() { return this.#source; }
    /** True when it returns rows: use `get`, `all` or `iterate`; otherwise `run`. */
    get reader() { return this.#s.reader; }
    /** True when it does not write. */
    get readonly() { return this.#s.readonly; }
    /** True while an `iterate()` over it is in progress. */
    get busy() { return this.#busy; }

    #idle() {
      if (this.#busy) throw new TypeError('this statement is busy executing a query (an iterate() is in progress)');
    }

    #mustRead(method) {
      if (!this.#s.reader) throw new TypeError(`${method}(): this statement does not return data; use run() instead`);
    }

    /**
     * Runs the statement.
     * @param {...unknown} params values in order, arrays (spread), or one object of named values
     * @returns {{ changes: number, lastInsertRowid: number | bigint }}
     */
    run(...params) {
      this.#idle();
      const [positional, named] = paramsOf(params);
      return this.#s.run(positional, named, (this.#mode & MODE_SAFE_INTEGERS) !== 0);
    }

    /** The first row (an object, an array with `raw()`, a value with `pluck()`), or `undefined`. */
    get(...params) {
      this.#idle();
      this.#mustRead('get');
      const [positional, named] = paramsOf(params);
      return this.#s.get(positional, named, this.#mode);
    }

    /** Every row. */
    all(...params) {
      this.#idle();
      this.#mustRead('all');
      const [positional, named] = paramsOf(params);
      return this.#s.all(positional, named, this.#mode);
    }

    /**
     * Rows one at a time. Leaving a `for…of` early (or calling `return()`) ends the query; while it runs, the
     * statement is `busy`.
     * @returns {IterableIterator<unknown>}
     */
    iterate(...params) {
      this.#idle();
      this.#mustRead('iterate');
      const [positional, named] = paramsOf(params);
      const s = this.#s;
      const mode = this.#mode;
      s.iterStart(positional, named);
      this.#busy = true;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        this.#busy = false;
        try {
          s.reset();
        } catch {
          // Closed meanwhile: nothing to reset.
        }
      };
      return {
        next() {
          if (done) return { done: true, value: undefined };
          let row;
          try {
            row = s.iterNext(mode);
          } catch (err) {
            finish();
            throw err;
          }
          if (row === undefined) {
            finish();
            return { done: true, value: undefined };
          }
          return { done: false, value: row };
        },
        return(value) {
          finish();
          return { done: true, value };
        },
        [Symbol.iterator]() {
          return this;
        },
      };
    }

    /** Return only the first column of each row (turns `raw` off). @returns {this} */
    pluck(toggle = true) {
      this.#mustRead('pluck');
      this.#mode = toggle ? (this.#mode | MODE_PLUCK) & ~MODE_RAW : this.#mode & ~MODE_PLUCK;
      return this;
    }

    /** Return rows as arrays (turns `pluck` off). @returns {this} */
    raw(toggle = true) {
      this.#mustRead('raw');
      this.#mode = toggle ? (this.#mode | MODE_RAW) & ~MODE_PLUCK : this.#mode & ~MODE_RAW;
      return this;
    }

    /** Return integers (and `lastInsertRowid`) as `BigInt`. @returns {this} */
    safeIntegers(toggle = true) {
      this.#mode = toggle ? this.#mode | MODE_SAFE_INTEGERS : this.#mode & ~MODE_SAFE_INTEGERS;
      return this;
    }

    /** The result columns: `{ name, type }` (`type` is the declared type, or `null` for an expression). */
    columns() {
      return this.#s.columns();
    }
  }

  /** A background prefetch or upload (`Vfs.prefetchStart`, `Vfs.uploadStart`). `close()` cancels it. */
  class Job extends Handle {
    /** What it does, e.g. `'prefetch of main/app.db'`. */
    get description() { return this[kNative].jobDescription(); }

    /** Bytes done and in all so far. @returns {{ done: number, total: number }} */
    progress() {
      return this[kNative].jobProgress();
    }

    /** @returns {'running' | 'done' | 'failed' | 'cancelled'} */
    status() {
      return this[kNative].jobStatus();
    }

    /**
     * Waits for the job's report (a `PrefetchReport` or an `UploadReport`).
     * @returns {Promise<object>} rejects with the job's error, `ClosedError` once cancelled
     */
    wait() {
      return this[kNative].jobWait();
    }

    /** Stops it at its next block (the same as `close()`). */
    cancel() {
      this[kNative].jobCancel();
    }

    [kInspectFields]() {
      try {
        return { description: this.description, status: this.status() };
      } catch {
        return {};
      }
    }
  }

  /**
   * The operations on one container without a cache or VFS. Every method returns a promise and runs off
   * the JS thread.
   */
  class Container {
    #c;

    /**
     * @param {string} url a directory path, `memory://NAME`, `s3://…`, `az://…`, `gs://…`
     * @param {{ nrequest?: number, retries?: number, requestTimeoutMs?: number, leaseMaxSkewMs?: number,
     *   leaseSafetyMarginMs?: number, secure?: Keyring | SecureOptions }} [options] with `secure`,
     *   `create()` makes a secure container and uploads and downloads seal and open blocks (without it they
     *   reject with `SecureContainerError` on a secure container)
     */
    constructor(url, options = {}) {
      const secure = secureOf(options?.secure);
      this.#c = native.openContainer(text(url, 'url'), { ...storeOptionsOf(options), ...leaseOptionsOf(options) }, secure);
    }

    /** The container's URL without secrets. */
    get label() { return this.#c.label; }

    /**
     * Creates an empty container.
     * @param {{ blockSize?: number, nameBytes?: number, overwrite?: boolean }} [options] block size
     *   default 4 MiB, block-id length default 16; `overwrite` replaces an existing manifest
     * @returns {Promise<void>} rejects with `BCV_ALREADY_EXISTS` unless `overwrite`
     */
    create(options = {}) {
      return this.#c.create(
        optionalInteger(options?.blockSize, 'blockSize'),
        optionalInteger(options?.nameBytes, 'nameBytes'),
        Boolean(options?.overwrite),
      );
    }

    /** Deletes every object of the container. @returns {Promise<number>} objects deleted */
    destroy() {
      return this.#c.destroy();
    }

    /** The databases. @returns {Promise<DatabaseInfo[]>} */
    list() {
      return this.#c.list();
    }

    /**
     * Uploads a local SQLite file as database `name` (a new version when it exists).
     * @param {string} path
     * @param {string} name
     * @param {(progress: { done: number, total: number }) => void} [onProgress] called on the JS thread
     * @returns {Promise<number>} the database's new version
     */
    uploadFile(path, name, onProgress = undefined) {
      return this.#c.uploadFile(text(path, 'path'), text(name, 'name'), onProgress);
    }

    /**
     * Downloads database `name` to a local file (a plain SQLite file any SQLite can open).
     * @param {string} name
     * @param {string} path
     * @param {(progress: { done: number, total: number }) => void} [onProgress]
     * @returns {Promise<number>} bytes written
     */
    downloadFile(name, path, onProgress = undefined) {
      return this.#c.downloadFile(text(name, 'name'), text(path, 'path'), onProgress);
    }

    /** Copies database `from` to a new database `to`, sharing blocks. @returns {Promise<void>} */
    copy(from, to) {
      return this.#c.copy(text(from, 'from'), text(to, 'to'));
    }

    /** Deletes a database (its blocks go to the delete list). @returns {Promise<void>} */
    delete(name) {
      return this.#c.delete(text(name, 'name'));
    }

    /**
     * Deletes blocks that waited `graceSeconds` (default 3600) on the delete list, and, unless
     * `findOrphans` is false, unreferenced block objects as old (left by interrupted uploads).
     * @returns {Promise<CleanupReport>}
     */
    cleanup(options = {}) {
      const grace = optionalNumber(options?.graceSeconds, 'graceSeconds') ?? 3600;
      return this.#c.cleanup(grace, options?.findOrphans === undefined ? true : Boolean(options.findOrphans));
    }

    /** The manifest. @returns {Promise<ManifestInfo>} */
    manifest() {
      return this.#c.manifest();
    }

    /** The request counters of this `Container` object. @returns {MeterSnapshot} */
    meter() {
      return this.#c.meter();
    }

    /** True when the container is secure (has a `bcv_secure.json` marker). @returns {Promise<boolean>} */
    isSecure() {
      return this.#c.isSecure();
    }

    /**
     * Obtains the container's lease for `holder` for `durationMs`. Its `token` lets another process (another
     * `Container` or `Vfs`) extend, release or adopt this holding.
     * @returns {Promise<Lease>} rejects with `LeaseHeldError` naming the holder
     */
    async leaseObtain(holder, durationMs) {
      return leaseOf(await this.#c.leaseObtain(text(holder, 'holder'), duration(durationMs)));
    }

    /**
     * Extends the lease this object holds, or with `token` the holding of that token, to expire `durationMs`
     * from now.
     * @param {number} durationMs
     * @param {{ token?: string }} [options]
     * @returns {Promise<Lease>} rejects with `LeaseLostError`
     */
    async leaseExtend(durationMs, options = {}) {
      const token = options?.token === undefined ? undefined : text(options.token, 'token');
      return leaseOf(await this.#c.leaseExtend(duration(durationMs), token));
    }

    /**
     * Releases the lease this object holds, or with `token` the holding of that token.
     * @param {{ token?: string }} [options]
     * @returns {Promise<void>} rejects with `LeaseLostError`
     */
    async leaseRelease(options = {}) {
      const token = options?.token === undefined ? undefined : text(options.token, 'token');
      await this.#c.leaseRelease(token);
    }

    /** The lease as recorded in the container, read now. @returns {Promise<Lease | null>} */
    async leaseStatus() {
      return leaseOf(await this.#c.leaseStatus());
    }

    /** The lease this object holds, as it last wrote it (no request). @returns {Promise<Lease | null>} */
    async leaseHeld() {
      return leaseOf(await this.#c.leaseHeld());
    }

    /**
     * Makes this object the holder of the lease obtained elsewhere under `token` (nothing is written).
     * @returns {Promise<Lease>} rejects with `LeaseLostError`
     */
    async leaseAdopt(token) {
      return leaseOf(await this.#c.leaseAdopt(text(token, 'token')));
    }
  }

  /**
   * The AES-256 keys of a secure container by id, and the id that seals new data. After a rotation, new data
   * is sealed with the new key while older keys in the ring keep opening old blocks. The keys are held by
   * the native side; `secure` options copy them when they are made (at `attach`, `new Container`).
   */
  class Keyring {
    #ring;

    /**
     * A ring with one key, which seals new data.
     * @param {number} keyId
     * @param {Uint8Array} key 32 bytes (see `Keyring.generateKey()`)
     */
    constructor(keyId, key) {
      this.#ring = new native.KeyringHandle(checkKeyId(keyId), keyBytes(key));
    }

    /** A new random 32-byte key from the operating system's generator. @returns {Buffer} */
    static generateKey() {
      return native.generateKey();
    }

    /**
     * Adds (or replaces) the key that opens data sealed with `keyId`.
     * @returns {this}
     */
    add(keyId, key) {
      this.#ring.add(checkKeyId(keyId), keyBytes(key));
      return this;
    }

    /**
     * Makes `keyId` the key that seals new data (a rotation).
     * @returns {this}
     * @throws {BcvError} `BCV_INVALID_ARGUMENT` when the ring has no such key
     */
    rotateTo(keyId) {
      this.#ring.rotateTo(checkKeyId(keyId));
      return this;
    }

    /** The id of the key that seals new data. */
    get current() { return this.#ring.current; }

    /** @internal */
    get [kRing]() { return this.#ring; }
  }

  /**
   * A container's lease as recorded there: who holds it, which holding it is, and until when. Plain data:
   * having one does not mean holding the lease.
   */
  class Lease {
    /** @internal */
    constructor(token, data) {
      if (token !== kCreate) throw new TypeError('leases are returned by the lease methods');
      /** The holder's description, as given to obtain. */
      this.holder = data.holder;
      /** 128 random bits in hex, new at each obtain, kept by extends; not a secret. */
      this.token = data.token;
      /** Grows by one at each change of holder. */
      this.generation = data.generation;
      /** When this holding began (Unix milliseconds, the holder's clock). */
      this.acquiredUnixMs = data.acquiredUnixMs;
      /** When it expires unless extended (Unix milliseconds, the holder's clock). */
      this.expiresUnixMs = data.expiresUnixMs;
      Object.freeze(this);
    }

    /** When this holding began. */
    get acquired() { return new Date(this.acquiredUnixMs); }
    /** When it expires unless extended. */
    get expires() { return new Date(this.expiresUnixMs); }
    /** Milliseconds left by this machine's clock (0 once expired). */
    get expiresIn() { return Math.max(0, this.expiresUnixMs - Date.now()); }
    /** True once the expiry has passed by this machine's clock. */
    get isExpired() { return this.expiresUnixMs <= Date.now(); }
  }

  /**
   * A daemon owning a cache directory (multi-process mode): a `Vfs` created on that directory, in any
   * process of the same user, becomes its read-only client and shares its cache and size limit. The daemon
   * never writes to storage. Stop it with `stop()` (or `using`); clients then get `DaemonGoneError` once and
   * reconnect to the next daemon on the directory.
   */
  class Daemon {
    #d;

    /**
     * Starts a daemon on `cacheDir` (the same as `new Daemon(cacheDir, options)`).
     * @param {string} cacheDir
     * @param {DaemonOptions} [options]
     * @returns {Daemon}
     */
    static start(cacheDir, options = {}) {
      return new Daemon(cacheDir, options);
    }

    /**
     * Takes `cacheDir` and serves it on `cacheDir/daemon.sock`.
     * @param {string} cacheDir
     * @param {{ cacheSize?: number, retries?: number, requestTimeoutMs?: number,
     *   keys?: Record<string, Keyring> | Map<string, Keyring> }} [options] `keys`: the key rings of secure
     *   containers by URL, handed to a client only after its attach proved it can read the container
     * @throws {BcvError} `BCV_BUSY` when another process (or a `Vfs`) owns the directory, `BCV_IO`
     */
    constructor(cacheDir, options = {}) {
      const d = native.createDaemon({
        cacheDir: text(cacheDir, 'cacheDir'),
        cacheSize: optionalNumber(options?.cacheSize, 'cacheSize'),
        retries: optionalInteger(options?.retries, 'retries'),
        requestTimeoutMs: optionalNumber(options?.requestTimeoutMs, 'requestTimeoutMs'),
      });
      const keys = options?.keys instanceof Map ? [...options.keys] : Object.entries(options?.keys ?? {});
      for (const [url, ring] of keys) {
        if (!(ring instanceof Keyring)) throw new TypeError(`keys[${JSON.stringify(url)}] must be a bcv Keyring`);
        d.addKey(url, ring[kRing]);
      }
      d.start();
      this.#d = d;
    }

    /** True until `stop()`. */
    get running() { return this.#d.running; }
    /** The socket clients connect to (`null` once stopped). */
    get socketPath() { return this.#d.socketPath; }

    /**
     * Current figures: clients connected now and since start, cache activity and occupancy.
     * @returns {DaemonStats | null} `null` once stopped
     */
    stats() {
      return this.#d.stats();
    }

    /** Stops serving and releases the directory. Idempotent. */
    stop() {
      this.#d.stop();
    }

    [disposeSymbol]() {
      this.stop();
    }
  }

  return { Vfs, Database, Statement, Job, Container, Keyring, Lease, Daemon };
};
