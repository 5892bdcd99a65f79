'use strict';
/**
 * The Proxy-Wasm host for Node: runs proxy-wasm plugins (ABI 0.2.1, 0.2.0, 0.1.0) on wasmtime, for an
 * application that filters HTTP requests or TCP connections.
 *
 * - `ProxyHost`: the engine, limits and the data VMs share (metrics, shared data, queues).
 *   `loadModule(name, bytes)` compiles and checks a module; `startVm(module, options)` starts a `Vm`.
 * - `Vm`: one instance of a module, with its services (JS functions for callouts, properties, foreign
 *   functions and logs); `addPlugin(config)` adds a `Plugin` (a root context).
 * - `Plugin`: `httpContext()` / `tcpContext()` create stream contexts; `callForeignFunction()`.
 * - `HttpContext` / `TcpContext`: the embedder feeds what arrives (`onRequestHeaders`, …) and gets an action
 *   back (`'continue' | 'pause' | 'localResponse' | 'close'`); what the plugin changed is read back.
 *
 * Threads: a VM runs plugin code on the thread that calls it and calls its services from that thread. JS runs
 * only on the JS thread, so every call that runs plugin code (or waits for a VM) returns a promise and runs
 * on a bcv thread; properties and foreign functions are synchronous JS functions the plugin's thread waits
 * for (the JS thread is always free to answer, since it never waits for a VM); callouts and log records are
 * handed to JS without waiting, and a callout is answered later through its `CalloutReply`. Calls on one
 * context run in the order they were made.
 *
 * Ownership: `ProxyHost`, `Vm`, `Plugin` and the contexts are handles (host → VM → plugin → context):
 * `close()` is the forced, cascading end; letting them be garbage-collected only releases them, in any order
 * (releasing a context finishes it: `on_done`, `on_log`, `on_delete`).
 *
 * Internal to the package: `lib/index.js` calls this with its internals and re-exports the classes.
 */

/**
 * @param {object} internals `native`, `Handle`, `kNative`, `kInspectFields`, `toBytes`, `inputOf`,
 *   `ReadStream`, `DEFAULT_TIMEOUT_MS`, `BcvError` from `lib/index.js`
 */
const { inspect } = require('node:util');

module.exports = function defineProxy({
  native,
  Handle,
  kNative,
  kInspectFields,
  toBytes,
  inputOf,
  ReadStream,
  DEFAULT_TIMEOUT_MS,
  BcvError,
}) {
  const kCreate = Symbol('bcv.proxy.create');
  /** Runs a context call after the calls made before on the same context. */
  const kSerial = Symbol('bcv.proxy.serial');
  const kSettled = Symbol('bcv.proxy.settled');
  /** Runs a context call that yields an action. */
  const kAct = Symbol('bcv.proxy.act');
  const noop = () => {};

  // -------------------------------------------------------------------------------------------------
  // Argument helpers

  function text(value, what) {
    if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
    return value;
  }

  function bytes(value, what) {
    if (value === undefined || value === null) return Buffer.alloc(0);
    try {
      return toBytes(value);
    } catch {
      throw new TypeError(`${what} must be a Uint8Array, an ArrayBuffer or a string`);
    }
  }

  function optionalFunction(value, what) {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'function') throw new TypeError(`${what} must be a function`);
    return value;
  }

  function timeoutOf(value) {
    const ms = value ?? DEFAULT_TIMEOUT_MS;
    if (typeof ms !== 'number' || !(ms >= 0)) throw new TypeError('timeoutMs must be a non-negative number');
    return ms;
  }

  /**
   * Header fields as fresh `[name, value]` pairs: from an array of pairs, a `Map`, a `Headers` object (or any
   * iterable of pairs), or a plain object whose values are a value or an array of values.
   */
  function headersOf(headers, what = 'headers') {
    if (headers === undefined || headers === null) return [];
    if (Array.isArray(headers)) {
      return headers.map((pair, i) => {
        if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`${what}[${i}] must be a [name, value] pair`);
        return [pair[0], pair[1]];
      });
    }
    if (typeof headers !== 'object') throw new TypeError(`${what} must be an array of [name, value] pairs or an object`);
    if (typeof headers[Symbol.iterator] === 'function') return headersOf([...headers], what);
    const out = [];
    for (const [name, value] of Object.entries(headers)) {
      if (Array.isArray(value)) for (const v of value) out.push([name, v]);
      else out.push([name, value]);
    }
    return out;
  }

  /** `[name, bytes]` pairs from an object or pairs (plugin properties). */
  function propertiesOf(properties) {
    return headersOf(properties, 'properties').map(([name, value]) => [text(name, 'a property path'), bytes(value, `property ${name}`)]);
  }

  // -------------------------------------------------------------------------------------------------
  // Services

  /**
   * The answer channel of a callout. Answer once, at any time and from any async code: `respond()` or
   * `fail()`. A callout nobody answers fails at the plugin's timeout (or when the reply is
   * garbage-collected); a reply after the timeout is ignored.
   */
  class CalloutReply {
    #r;

    constructor(token, r) {
      if (token !== kCreate) throw new TypeError('callout replies are made by the Proxy-Wasm host');
      this.#r = r;
    }

    /** True for the reply of a gRPC callout. */
    get grpc() { return this.#r.grpc; }
    /** True once answered. */
    get answered() { return this.#r.answered; }

    /**
     * Delivers the response. HTTP: `{ status = 200, headers, body, trailers }`. gRPC: `{ status = 0,
     * statusMessage, initialMetadata, message, trailingMetadata }` (the plugin gets the message only with
     * status 0).
     * @throws {BcvError} `BCV_ALREADY_TAKEN` when already answered
     */
    respond(response = {}) {
      if (response === null || typeof response !== 'object') throw new TypeError('response must be an object');
      const r = { ...response };
      if (this.grpc) {
        r.initialMetadata = headersOf(response.initialMetadata, 'initialMetadata');
        r.trailingMetadata = headersOf(response.trailingMetadata, 'trailingMetadata');
        r.message = bytes(response.message, 'message');
      } else {
        r.headers = headersOf(response.headers);
        r.trailers = headersOf(response.trailers, 'trailers');
        r.body = bytes(response.body, 'body');
      }
      this.#r.respond(r);
    }

    /**
     * Tells the plugin the call failed (HTTP: no response; gRPC: status 14, UNAVAILABLE).
     * @throws {BcvError} `BCV_ALREADY_TAKEN` when already answered
     */
    fail() {
      this.#r.fail();
    }

    /** @internal fails the call unless it was answered */
    failIfPending() {
      if (!this.#r.answered) this.#r.fail();
    }
  }

  function isThenable(value) {
    return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
  }

  /** Calls a callout function; a throw or a rejection fails the callout (unless it was answered). */
  function runCallout(fn, info, reply) {
    const failed = (err) => {
      reply.failIfPending();
      process.emitWarning(`a callout handler failed: ${err?.message ?? err}`, { code: 'BCV_PROXY_CALLOUT' });
    };
    let result;
    try {
      result = fn(info, reply);
    } catch (err) {
      failed(err);
      return;
    }
    if (isThenable(result)) result.then(noop, failed);
  }

  /** The native form of a VM's services. */
  function servicesOf(services) {
    if (services === undefined || services === null) return undefined;
    if (typeof services !== 'object') throw new TypeError('services must be an object');
    const out = {};
    const http = optionalFunction(services.httpCallout, 'services.httpCallout');
    if (http) out.httpCallout = (info, r) => runCallout(http, info, new CalloutReply(kCreate, r));
    const grpc = optionalFunction(services.grpcCallout, 'services.grpcCallout');
    if (grpc) out.grpcCallout = (info, r) => runCallout(grpc, info, new CalloutReply(kCreate, r));
    const property = optionalFunction(services.property, 'services.property');
    if (property) {
      out.property = (path, info) => {
        const value = property(path, info);
        if (!isThenable(value)) return value;
        value.then(noop, noop);
        process.emitWarning('services.property returned a promise; it must answer synchronously (taken as not found)', {
          code: 'BCV_PROXY_SERVICE',
        });
        return null;
      };
    }
    if (services.foreignFunctions !== undefined && services.foreignFunctions !== null) {
      if (typeof services.foreignFunctions !== 'object') throw new TypeError('services.foreignFunctions must be an object');
      out.foreignFunctions = {};
      for (const [name, fn] of Object.entries(services.foreignFunctions)) {
        const f = optionalFunction(fn, `services.foreignFunctions.${name}`);
        if (!f) continue;
        out.foreignFunctions[name] = (args) => {
          const value = f(args);
          if (!isThenable(value)) return value;
          value.then(noop, noop);
          throw new TypeError(`foreign function ${name} returned a promise; it must answer synchronously`);
        };
      }
    }
    const log = optionalFunction(services.log, 'services.log');
    if (log) {
      out.log = (record) => {
        try {
          log(record);
        } catch (err) {
          process.nextTick(() => { throw err; });
        }
      };
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------------
  // Host, module, VM, plugin

  /**
   * A compiled, checked plugin module, ready to start VMs (made by `ProxyHost.loadModule`). Not a handle: it
   * lives while a VM or your code references it.
   */
  class ProxyModule {
    #m;
    #host;

    constructor(token, m, host) {
      if (token !== kCreate) throw new TypeError('modules are made by ProxyHost.loadModule()');
      this.#m = m;
      this.#host = host;
    }

    /** @internal */
    get [kNative]() { return this.#m; }
    /** The host that compiled it. */
    get host() { return this.#host; }
    /** The name it was loaded under. */
    get name() { return this.#m.name; }
    /** The Proxy-Wasm ABI version it was built for: `'0.2.1' | '0.2.0' | '0.1.0'`. */
    get abi() { return this.#m.abi; }
    /** SHA-256 of the wasm bytes, in hex. */
    get sha256() { return this.#m.sha256; }
    /** True when the compiled code came from the module cache. */
    get fromCache() { return this.#m.fromCache; }

    [inspect.custom](depth, options, inspectFn = inspect) {
      return `ProxyModule ${inspectFn({ name: this.name, abi: this.abi, fromCache: this.fromCache }, options)}`;
    }
  }

  const NUMERIC_HOST_OPTIONS = [
    'memoryLimit',
    'callbackDeadlineMs',
    'epochTickMs',
    'maxInstances',
    'maxHeaderPairs',
    'maxHeaderBytes',
    'maxRandomBytes',
    'maxQueueItems',
    'maxWasmStack',
  ];

  /**
   * The Proxy-Wasm host: one wasmtime engine with its limits, the module cache, and what VMs share (metrics,
   * shared data and queues by VM id). `close()` closes every VM, plugin and context under it.
   */
  class ProxyHost extends Handle {
    /**
     * @param {object} [options] `{ memoryLimit, callbackDeadlineMs, epochTickMs, pooling, maxInstances,
     *   moduleCacheDir, maxHeaderPairs, maxHeaderBytes, maxRandomBytes, maxQueueItems, maxWasmStack }`
     */
    constructor(options = {}) {
      if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
      for (const key of NUMERIC_HOST_OPTIONS) {
        const v = options[key];
        if (v !== undefined && v !== null && (typeof v !== 'number' || !(v >= 0))) {
          throw new TypeError(`${key} must be a non-negative number`);
        }
      }
      // These cross as 32-bit integers: refuse what would silently wrap (Infinity, 2 ** 32, fractions).
      for (const key of ['maxInstances', 'maxHeaderPairs']) {
        const v = options[key];
        if (v !== undefined && v !== null && !(Number.isInteger(v) && v <= 0xffffffff)) {
          throw new TypeError(`${key} must be an integer from 0 to 2 ** 32 - 1`);
        }
      }
      if (options.pooling !== undefined && typeof options.pooling !== 'boolean') throw new TypeError('pooling must be a boolean');
      if (options.moduleCacheDir !== undefined && options.moduleCacheDir !== null) text(options.moduleCacheDir, 'moduleCacheDir');
      super(native.proxyHostNew({ ...options }));
    }

    /** The host's limits: `{ memoryLimit, callbackDeadlineMs, pooling, maxInstances, moduleCacheDir }`. */
    get config() { return this[kNative].proxyHostConfig(); }

    /**
     * Compiles (or loads from the module cache) and checks a plugin module, off the JS thread.
     * @param {string} name used in errors and logs
     * @param {Uint8Array | ArrayBuffer} wasm the module's bytes
     * @returns {Promise<ProxyModule>} rejects with `InvalidModuleError`
     */
    async loadModule(name, wasm) {
      text(name, 'name');
      if (!(wasm instanceof Uint8Array) && !(wasm instanceof ArrayBuffer)) {
        throw new TypeError('wasm must be a Uint8Array or an ArrayBuffer');
      }
      const m = await this[kNative].proxyLoadModule(name, toBytes(wasm));
      return new ProxyModule(kCreate, m, this);
    }

    /**
     * Starts a VM of `module`.
     * @param {ProxyModule} module
     * @param {object} [options] `{ vmId = '', configuration, environment, services }`: `services` is
     *   `{ httpCallout(info, reply), grpcCallout(info, reply), property(path, info), foreignFunctions: { name(args) },
     *   log(record) }`
     * @returns {Promise<Vm>} rejects with `VmStartError`
     */
    async startVm(module, options = {}) {
      if (!(module instanceof ProxyModule)) throw new TypeError('module must be a ProxyModule');
      if (module.host !== this) throw new TypeError(`module ${module.name} was loaded by another ProxyHost`);
      if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
      const { vmId = '', configuration, environment, services, restart } = options;
      if (restart != null && typeof restart !== 'object') throw new TypeError('restart must be an object');
      const { maxRestarts = 0, windowMs = 60_000, backoffMs = 1_000 } = restart ?? {};
      if (!Number.isInteger(maxRestarts) || maxRestarts < 0 || maxRestarts > 0xffffffff) {
        throw new TypeError('restart.maxRestarts must be a non-negative integer');
      }
      for (const [key, v] of [['windowMs', windowMs], ['backoffMs', backoffMs]]) {
        if (typeof v !== 'number') throw new TypeError(`restart.${key} must be a number of milliseconds`);
      }
      const h = await this[kNative].proxyStartVm(
        module[kNative],
        text(vmId, 'vmId'),
        bytes(configuration, 'configuration'),
        headersOf(environment, 'environment'),
        servicesOf(services),
        maxRestarts,
        windowMs,
        backoffMs,
      );
      return new Vm(kCreate, h, this, module);
    }

    /** Every metric plugins defined, in definition order: `{ name, kind, value, sum, min, max }[]`. */
    metrics() {
      return this[kNative].proxyMetrics();
    }

    /** One metric by name, or `null`. */
    metric(name) {
      return this[kNative].proxyMetric(text(name, 'name')) ?? null;
    }

    /** Shared data `key` of VM id `vmId`: `{ value: Buffer, cas }`, or `null`. */
    sharedData(vmId, key) {
      return this[kNative].proxySharedData(text(vmId, 'vmId'), bytes(key, 'key')) ?? null;
    }

    /**
     * Sets shared data as a plugin would; `cas` 0 (the default) writes unconditionally. Returns the new CAS
     * token. Throws `ConflictError` when `cas` is stale.
     */
    setSharedData(vmId, key, value, cas = 0) {
      if (!Number.isInteger(cas) || cas < 0 || cas > 0xffffffff) throw new TypeError('cas must be a 32-bit unsigned integer');
      return this[kNative].proxySetSharedData(text(vmId, 'vmId'), bytes(key, 'key'), bytes(value, 'value'), cas);
    }

    /** Removes shared data `key`; true when it existed. */
    removeSharedData(vmId, key) {
      return this[kNative].proxyRemoveSharedData(text(vmId, 'vmId'), bytes(key, 'key'));
    }

    /** The keys of VM id `vmId`'s shared data, sorted (as `Buffer`s). */
    sharedDataKeys(vmId) {
      return this[kNative].proxySharedDataKeys(text(vmId, 'vmId'));
    }

    /** Enqueues `item` on shared queue `queue` of `vmId`. Throws `BCV_NOT_FOUND` when nobody registered it. */
    enqueue(vmId, queue, item) {
      this[kNative].proxyEnqueue(text(vmId, 'vmId'), text(queue, 'queue'), bytes(item, 'item'));
    }

    /** Items waiting in shared queue `queue` of `vmId`, or `null` when it is not registered. */
    queueLength(vmId, queue) {
      return this[kNative].proxyQueueLength(text(vmId, 'vmId'), text(queue, 'queue')) ?? null;
    }
  }

  /**
   * A running VM: one instance of a module with its services, holding plugins. A trap or an exceeded limit
   * fails the VM (never the host); its plugins then fail open or closed. `close()` closes its plugins and
   * contexts.
   */
  class Vm extends Handle {
    #host;
    #module;

    constructor(token, h, host, module) {
      if (token !== kCreate) throw new TypeError('VMs are started by ProxyHost.startVm()');
      super(h);
      this.#host = host;
      this.#module = module;
    }

    /** The host it runs on. */
    get host() { return this.#host; }
    /** The module it runs. */
    get module() { return this.#module; }
    /** The VM id (VMs with the same id share shared data and queues). */
    get vmId() { return this[kNative].proxyVmId(); }

    /**
     * Adds a plugin (a root context). A canary instance runs its start and configure first, so a plugin
     * that would fail there is refused before it touches this VM.
     * @param {object} config `{ name, rootId = name, configuration, failOpen = false, properties }`
     * @returns {Promise<Plugin>} rejects with `PluginRejectedError`, `VmFailedError`
     */
    async addPlugin(config = {}) {
      if (config === null || typeof config !== 'object') throw new TypeError('config must be an object');
      const { name = '', rootId, configuration, failOpen = false, properties } = config;
      text(name, 'name');
      if (typeof failOpen !== 'boolean') throw new TypeError('failOpen must be a boolean');
      const h = await this[kNative].proxyAddPlugin(
        name,
        rootId === undefined ? name : text(rootId, 'rootId'),
        bytes(configuration, 'configuration'),
        failOpen,
        propertiesOf(properties),
      );
      return new Plugin(kCreate, h, this);
    }

    /** Why the VM failed — `{ kind, message, … }` — or `null` while it works (again, after a restart). Never waits. */
    failure() {
      return this[kNative].proxyFailure();
    }

    /** How many times the VM was re-created after a failure (`restart` of `startVm`). Never waits. */
    restarts() {
      return this[kNative].proxyRestarts();
    }

    /** Takes the log records kept since the last call (the most recent 4096). Never waits. */
    takeLogs() {
      return this[kNative].proxyTakeLogs();
    }

    /** Bytes of linear memory the instance has now. @returns {Promise<number>} */
    memorySize() {
      return this[kNative].proxyMemorySize();
    }

    /** Live contexts (root and stream contexts). @returns {Promise<number>} */
    contextCount() {
      return this[kNative].proxyContextCount();
    }

    /**
     * Resolves `true` once no tick, queue notification or callout response is being delivered or queued,
     * `false` after `timeoutMs` (default 5000).
     */
    waitIdle(timeoutMs = undefined) {
      return this[kNative].proxyWaitIdle(timeoutOf(timeoutMs));
    }

    [kInspectFields]() {
      try {
        const failure = this.failure();
        return failure ? { vmId: this.vmId, failure: failure.message } : { vmId: this.vmId };
      } catch {
        return {};
      }
    }
  }

  /** A plugin (root context) of a VM. `close()` finishes it and closes its contexts. */
  class Plugin extends Handle {
    #vm;

    constructor(token, h, vm) {
      if (token !== kCreate) throw new TypeError('plugins are added by Vm.addPlugin()');
      super(h);
      this.#vm = vm;
    }

    /** The VM it runs in. */
    get vm() { return this.#vm; }
    /** Its name. */
    get name() { return this[kNative].proxyPluginName(); }
    /** Its root context id. */
    get rootContextId() { return this[kNative].proxyRootContextId(); }
    /** True when traffic passes unfiltered after a VM failure. */
    get failOpen() { return this[kNative].proxyFailOpen(); }

    /** The VM's failure, or `null`. */
    failure() {
      return this[kNative].proxyFailure();
    }

    /** A new HTTP stream context. @returns {Promise<HttpContext>} */
    async httpContext() {
      return new HttpContext(kCreate, await this[kNative].proxyNewContext(false), this);
    }

    /** A new TCP stream context. @returns {Promise<TcpContext>} */
    async tcpContext() {
      return new TcpContext(kCreate, await this[kNative].proxyNewContext(true), this);
    }

    /**
     * Calls the plugin's `proxy_on_foreign_function(root, functionId, args)`.
     * @returns {Promise<void>} rejects with `VmFailedError` when the VM failed or the callback trapped
     */
    async callForeignFunction(functionId, args = undefined) {
      if (!Number.isInteger(functionId) || functionId < 0 || functionId > 0xffffffff) {
        throw new TypeError('functionId must be a 32-bit unsigned integer');
      }
      return await this[kNative].proxyCallForeignFunction(functionId, bytes(args, 'args'));
    }

    [kInspectFields]() {
      try {
        return { name: this.name };
      } catch {
        return {};
      }
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Contexts

  /** What HTTP and TCP contexts share: ordering of calls, the last local response, properties. */
  class StreamContext extends Handle {
    #plugin;
    #tail = Promise.resolve();
    #pending = 0;
    #localResponse = null;

    constructor(token, h, plugin) {
      if (token !== kCreate) throw new TypeError('contexts are made by Plugin.httpContext() and Plugin.tcpContext()');
      super(h);
      this.#plugin = plugin;
    }

    /** The plugin it belongs to. */
    get plugin() { return this.#plugin; }
    /** The context id. */
    get contextId() { return this[kNative].proxyContextId(); }

    /** @internal runs `fn` after the calls made before on this context. */
    [kSerial](fn) {
      this.#pending += 1;
      const run = this.#tail.then(fn);
      // Registered before the caller can await `run`, so the count is down when the caller resumes.
      const settled = () => { this.#pending -= 1; };
      run.then(settled, settled);
      this.#tail = run.then(noop, noop);
      return run;
    }

    /** @internal throws unless every call made on this context has settled (for what cannot be queued). */
    [kSettled](what) {
      if (this.#pending > 0) {
        throw new BcvError(`${what}: await the earlier calls on this context first`, 'BCV_INVALID_STATE');
      }
    }

    /** @internal runs a call that yields `{ action, localResponse }`: keeps the local response. */
    [kAct](call) {
      return this[kSerial](async () => {
        const result = await call();
        if (result.localResponse) this.#localResponse = result.localResponse;
        return result.action;
      });
    }

    /**
     * The local response the last `'localResponse'` action carried — `{ status, details, body, headers,
     * grpcStatus }` — or `null`. Includes the 503 a fail-closed plugin of a failed VM answers with.
     */
    localResponse() {
      return this.#localResponse;
    }

    /** A property as the plugin would read it (`'request.path'`, one it set, …). @returns {Promise<Buffer | null>} */
    property(path) {
      text(path, 'path');
      return this[kSerial](() => this[kNative].proxyProperty(path));
    }

    /** Sets a property of this context (`'source.address'`), visible to the plugin. @returns {Promise<void>} */
    setProperty(path, value) {
      text(path, 'path');
      const v = bytes(value, 'value');
      return this[kSerial](() => this[kNative].proxySetProperty(path, v));
    }

    /**
     * Finishes the context now (`on_done`, then `on_log` and `on_delete`). Resolves `false` when the plugin
     * deferred the end (it calls `proxy_done` later). Releasing or closing the context finishes it too.
     * @returns {Promise<boolean>}
     */
    finish() {
      return this[kSerial](() => this[kNative].proxyFinish());
    }

    [kInspectFields]() {
      try {
        return { contextId: this.contextId };
      } catch {
        return {};
      }
    }
  }

  /**
   * An HTTP request/response exchange through a plugin. Feed what arrives; each call resolves with the
   * action: `'continue'` (forward, reading back what the plugin changed), `'pause'` (hold the stream and
   * `wait()`), `'localResponse'` (answer with `localResponse()` instead), `'close'` (reset). A VM failure is
   * not an error: the plugin's policy gives the action.
   */
  class HttpContext extends StreamContext {
    #stream = 'request';

    /** Request headers (`:method`, `:path`, `:authority`, `:scheme` included). @returns {Promise<ProxyAction>} */
    onRequestHeaders(headers, endOfStream = false) {
      const h = headersOf(headers);
      this.#stream = 'request';
      return this[kAct](() => this[kNative].proxyHeaders(false, h, !!endOfStream));
    }

    /** A request body chunk, appended to the body the plugin sees. @returns {Promise<ProxyAction>} */
    onRequestBody(chunk, endOfStream = false) {
      const b = bytes(chunk, 'chunk');
      this.#stream = 'request';
      return this[kAct](() => this[kNative].proxyBody(false, b, !!endOfStream));
    }

    /** Request trailers. @returns {Promise<ProxyAction>} */
    onRequestTrailers(trailers) {
      const t = headersOf(trailers, 'trailers');
      this.#stream = 'request';
      return this[kAct](() => this[kNative].proxyTrailers(false, t));
    }

    /** Response headers (with `:status`). @returns {Promise<ProxyAction>} */
    onResponseHeaders(headers, endOfStream = false) {
      const h = headersOf(headers);
      this.#stream = 'response';
      return this[kAct](() => this[kNative].proxyHeaders(true, h, !!endOfStream));
    }

    /** A response body chunk. @returns {Promise<ProxyAction>} */
    onResponseBody(chunk, endOfStream = false) {
      const b = bytes(chunk, 'chunk');
      this.#stream = 'response';
      return this[kAct](() => this[kNative].proxyBody(true, b, !!endOfStream));
    }

    /** Response trailers. @returns {Promise<ProxyAction>} */
    onResponseTrailers(trailers) {
      const t = headersOf(trailers, 'trailers');
      this.#stream = 'response';
      return this[kAct](() => this[kNative].proxyTrailers(true, t));
    }

    /**
     * Waits until the paused stream continues, gets a local response or is closed, and resolves with that
     * action (at once when it is not paused).
     * @param {number} [timeoutMs] default 5000
     * @param {'request' | 'response'} [stream] default: the one fed last
     * @returns {Promise<ProxyAction>} rejects with `TimeoutError` (nothing is lost; wait again)
     */
    wait(timeoutMs = undefined, stream = this.#stream) {
      const ms = timeoutOf(timeoutMs);
      if (stream !== 'request' && stream !== 'response') throw new TypeError("stream must be 'request' or 'response'");
      return this[kAct](() => this[kNative].proxyWait(stream, ms));
    }

    /** The request headers as the plugin left them. @returns {Promise<Array<[string, string]>>} */
    requestHeaders() {
      return this[kSerial](() => this[kNative].proxyReadHeaders('requestHeaders'));
    }

    /** The request trailers as the plugin left them. */
    requestTrailers() {
      return this[kSerial](() => this[kNative].proxyReadHeaders('requestTrailers'));
    }

    /** The response headers as the plugin left them. */
    responseHeaders() {
      return this[kSerial](() => this[kNative].proxyReadHeaders('responseHeaders'));
    }

    /** The response trailers as the plugin left them. */
    responseTrailers() {
      return this[kSerial](() => this[kNative].proxyReadHeaders('responseTrailers'));
    }

    /** Takes the buffered request body (as the plugin left it) to forward it. @returns {Promise<Buffer>} */
    takeRequestBody() {
      return this[kSerial](() => this[kNative].proxyTakeData('requestBody'));
    }

    /** Takes the buffered response body. @returns {Promise<Buffer>} */
    takeResponseBody() {
      return this[kSerial](() => this[kNative].proxyTakeData('responseBody'));
    }

    /**
     * Pipes a request body through the plugin: returns a `ReadStream` of what the plugin lets through. It
     * ends cleanly only after the plugin continued the final chunk; anything else ends it with `ClosedError`.
     * Call it once the earlier calls on the context have settled (it throws `BCV_INVALID_STATE` otherwise):
     * the body must not reach the plugin before its headers.
     * @param {ReadStream | Uint8Array | string} input consumed
     * @param {{ pauseTimeoutMs?: number }} [options] how long a paused body may wait (default 5000)
     */
    filterRequestBody(input, options = {}) {
      this[kSettled]('filterRequestBody');
      return new ReadStream(this[kNative].proxyFilterBody(false, inputOf(input), timeoutOf(options.pauseTimeoutMs)));
    }

    /** Pipes a response body through the plugin, as `filterRequestBody`. */
    filterResponseBody(input, options = {}) {
      this[kSettled]('filterResponseBody');
      return new ReadStream(this[kNative].proxyFilterBody(true, inputOf(input), timeoutOf(options.pauseTimeoutMs)));
    }
  }

  const PEERS = ['unknown', 'local', 'remote'];

  /** A TCP connection through a plugin (a network filter). */
  class TcpContext extends StreamContext {
    #stream = 'downstream';

    /** The connection arrived. @returns {Promise<ProxyAction>} */
    onNewConnection() {
      this.#stream = 'downstream';
      return this[kAct](() => this[kNative].proxyTcpNewConnection());
    }

    /** Data from the client, appended to what the plugin sees. @returns {Promise<ProxyAction>} */
    onDownstreamData(data, endOfStream = false) {
      const b = bytes(data, 'data');
      this.#stream = 'downstream';
      return this[kAct](() => this[kNative].proxyTcpData(false, b, !!endOfStream));
    }

    /** Data from the server. @returns {Promise<ProxyAction>} */
    onUpstreamData(data, endOfStream = false) {
      const b = bytes(data, 'data');
      this.#stream = 'upstream';
      return this[kAct](() => this[kNative].proxyTcpData(true, b, !!endOfStream));
    }

    /** The client side closed. @param {'unknown' | 'local' | 'remote'} [peer] default `'remote'` */
    onDownstreamClose(peer = 'remote') {
      if (!PEERS.includes(peer)) throw new TypeError("peer must be 'unknown', 'local' or 'remote'");
      return this[kSerial](() => this[kNative].proxyTcpClose(false, peer));
    }

    /** The server side closed. @param {'unknown' | 'local' | 'remote'} [peer] default `'remote'` */
    onUpstreamClose(peer = 'remote') {
      if (!PEERS.includes(peer)) throw new TypeError("peer must be 'unknown', 'local' or 'remote'");
      return this[kSerial](() => this[kNative].proxyTcpClose(true, peer));
    }

    /** Takes the client data as the plugin left it, to forward it. @returns {Promise<Buffer>} */
    takeDownstreamData() {
      return this[kSerial](() => this[kNative].proxyTakeData('downstreamData'));
    }

    /** Takes the server data as the plugin left it. @returns {Promise<Buffer>} */
    takeUpstreamData() {
      return this[kSerial](() => this[kNative].proxyTakeData('upstreamData'));
    }

    /**
     * Waits for a paused direction, as `HttpContext.wait`.
     * @param {number} [timeoutMs] default 5000
     * @param {'downstream' | 'upstream'} [stream] default: the one fed last
     */
    wait(timeoutMs = undefined, stream = this.#stream) {
      const ms = timeoutOf(timeoutMs);
      if (stream !== 'downstream' && stream !== 'upstream') throw new TypeError("stream must be 'downstream' or 'upstream'");
      return this[kAct](() => this[kNative].proxyWait(stream, ms));
    }
  }

  return { ProxyHost, ProxyModule, Vm, Plugin, HttpContext, TcpContext, CalloutReply };
};
