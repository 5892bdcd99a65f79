/**
 * bcv for Node.js: byte streams, transformers (gzip, AES-256-GCM), files, TCP and HTTP/1.1 with deterministic
 * resource lifetimes (shared/design/LIFETIMES.md).
 *
 * - Letting a handle be garbage-collected *releases* it: children keep working; a stream end that loses
 *   its last handle is dropped and its peer sees `PEER_DROPPED`.
 * - `close()` is the forced, cascading end (idempotent, never throws); `closeAndWait()` also waits for
 *   quiescence. `[Symbol.dispose]` → `close()`, `[Symbol.asyncDispose]` → `closeAndWait()`.
 * - `read()` resolves `null` only at a clean EOF; anything cut short rejects with `ClosedError`.
 * - Nothing blocks the JS thread (except the synchronous SQL API and the VFS calls without `Async`, by design).
 * - The block-cache VFS: `Vfs`, `Database`/`Statement` (better-sqlite3 style), `Job`, `Container`.
 */

import type { Readable, Writable } from 'node:stream';

/** Why a node was closed (LIFETIMES.md §1). */
export type CloseReasonName =
  | 'SELF'
  | 'PARENT'
  | 'PEER_DROPPED'
  | 'RUNTIME_SHUTDOWN'
  | 'HANDLE_RELEASED'
  | 'UPSTREAM'
  | 'SCOPE_EXITED'
  | 'ABANDONED';

export declare const CloseReason: Readonly<{ [K in CloseReasonName]: K }>;

/** Lifecycle state of a handle; `'consumed'` once it was moved into a transformer or `spawnPipe`. */
export type HandleState = 'open' | 'orphaned' | 'closing' | 'closed' | 'consumed';

/** Error codes carried by `BcvError.code`. */
export type BcvErrorCode =
  | 'BCV_CLOSED'
  | 'BCV_BUSY'
  | 'BCV_TIMEOUT'
  | 'BCV_WOULD_DEADLOCK'
  | 'BCV_ALREADY_TAKEN'
  | 'BCV_INVALID_ARGUMENT'
  | 'BCV_IO'
  | 'BCV_AUTH'
  | 'BCV_CORRUPT'
  | 'BCV_STRICT'
  | 'BCV_SHUTDOWN_TIMEOUT'
  | 'BCV_INTERNAL'
  | 'BCV_CONFLICT'
  | 'BCV_NOT_FOUND'
  | 'BCV_ALREADY_EXISTS'
  | 'BCV_UNSUPPORTED'
  | 'BCV_JOB_FAILED'
  | 'BCV_SECURE'
  | 'BCV_READ_ONLY'
  | 'BCV_DAEMON_GONE'
  | 'BCV_DAEMON'
  | 'BCV_LEASE_HELD'
  | 'BCV_LEASE_LOST'
  | 'BCV_PROXY_INVALID_MODULE'
  | 'BCV_PROXY_VM_START'
  | 'BCV_PROXY_VM_FAILED'
  | 'BCV_PROXY_PLUGIN_REJECTED'
  | 'BCV_PROXY_CONTEXT_FINISHED'
  | 'BCV_PROXY_REENTRANT';

/** SQLite's name of a result code, e.g. `'SQLITE_CONSTRAINT_UNIQUE'`, `'SQLITE_BUSY'`. */
export type SqliteErrorCode = `SQLITE_${string}`;

/** Base class of every error bcv raises. */
export declare class BcvError extends Error {
  constructor(message: string, code?: BcvErrorCode | SqliteErrorCode, details?: object);
  readonly code: BcvErrorCode | SqliteErrorCode;
  /** OS error number for `BCV_IO`, when known. */
  readonly errno?: number;
}

/** The data was cut short or the handle is closed; never a clean end. */
export declare class ClosedError extends BcvError {
  constructor(reason: CloseReasonName, message?: string, details?: object);
  readonly code: 'BCV_CLOSED';
  readonly reason: CloseReasonName;
  /** For `reason === 'UPSTREAM'`: the reason the upstream stage ended with. */
  readonly upstream?: CloseReasonName;
  /** For a failed write: bytes of the buffer accepted before the error. */
  readonly accepted?: number;
  /** For a failed `FutureWriter.write`: the value handed back. */
  readonly value?: unknown;
}
/** Another read (or write) is already in progress on this stream end. */
export declare class BusyError extends BcvError {}
/** A time limit passed; nothing was lost. */
export declare class TimeoutError extends BcvError {}
/** Waiting here could deadlock (e.g. `closeAndWait()` inside the stream's own `onData` listener). */
export declare class WouldDeadlockError extends BcvError {}
/**
 * Authentication failed: encrypted input (wrong key, tampered or truncated), a secure container's data (a
 * wrong key is reported at attach, naming `bcv_secure.json`; a tampered block names the block; a JS cipher's
 * failure too), or a TLS handshake (untrusted certificate, wrong name).
 */
export declare class AuthenticationError extends BcvError {
  /** For a secure container: the container. */
  readonly container?: string;
  /** For a secure container: what failed (`bcv_secure.json`, a block and chunk, …). */
  readonly object?: string;
}
/** Compressed or framed input is malformed. */
export declare class CorruptError extends BcvError {}
/** `shutdown()` passed its deadline. */
export declare class ShutdownTimeoutError extends BcvError {
  readonly stuckNodeIds: number[];
}
/** A strict-mode violation (`BCV_STRICT=error`), raised at the next bcv call on the offending thread. */
export declare class StrictModeViolation extends BcvError {
  readonly violation: 'V1' | 'V2' | 'V3' | 'V4' | 'V5' | 'V6';
  readonly nodeId: number;
  readonly nodeLabel: string;
  readonly creationBacktrace?: string;
}

/** SQLite reported an error; the message is SQLite's. */
export declare class SqliteError extends BcvError {
  /** SQLite's name of the (extended) result code. */
  readonly code: SqliteErrorCode;
  /** The numeric extended result code (e.g. 2067 for `SQLITE_CONSTRAINT_UNIQUE`). */
  readonly errcode: number;
  /** The same as `code`. */
  readonly sqliteCode: SqliteErrorCode;
}
/**
 * A lost conditional write: another client changed the container since this one read it. From `upload()`:
 * a database changed here was changed there too (nothing is lost: `revert()` it, or poll and write again).
 * From SQL (`errcode` 517, `SQLITE_BUSY_SNAPSHOT`): a `bcv_kv` commit or a write on a stale WAL snapshot;
 * the transaction changed nothing: read again and retry.
 */
export declare class ConflictError extends BcvError {
  readonly code: 'BCV_CONFLICT';
  /** 517 when the conflict was reported by SQLite. */
  readonly errcode?: number;
  /** `'SQLITE_BUSY_SNAPSHOT'` when the conflict was reported by SQLite. */
  readonly sqliteCode?: SqliteErrorCode;
}

/**
 * A secure container and the key or cipher given disagree: no key or cipher for a secure container, a key for
 * a plaintext one, or a daemon without the key.
 */
export declare class SecureContainerError extends BcvError {
  readonly code: 'BCV_SECURE';
  readonly container: string;
}
/** The `Vfs` is a read-only client of a daemon: it cannot write, upload or change containers. */
export declare class ReadOnlyError extends BcvError {
  readonly code: 'BCV_READ_ONLY';
  /** The daemon's cache directory. */
  readonly dir: string;
}
/** The daemon of a client `Vfs` went away (stopped, restarted); the next call reconnects. */
export declare class DaemonGoneError extends BcvError {
  readonly code: 'BCV_DAEMON_GONE';
  readonly dir: string;
}
/** The daemon refused or failed a request (e.g. a container the client cannot read). */
export declare class DaemonError extends BcvError {
  readonly code: 'BCV_DAEMON';
  readonly dir: string;
}
/** The container's lease is held by another client: obtaining it, or a manifest write, was refused. */
export declare class LeaseHeldError extends BcvError {
  readonly code: 'BCV_LEASE_HELD';
  readonly container: string;
  /** The holder's description. */
  readonly holder: string;
  /** Its expiry (Unix milliseconds, the holder's clock). */
  readonly expiresUnixMs: number;
  readonly generation: number;
}
/** This client held the container's lease but no longer does (expired, taken over); nothing was written. */
export declare class LeaseLostError extends BcvError {
  readonly code: 'BCV_LEASE_LOST';
  readonly container: string;
}

/**
 * A Proxy-Wasm module was refused: not wasm (`stage: 'compile'`), or not a usable Proxy-Wasm module — no ABI
 * marker, no allocator, no memory, imports the host lacks (`stage: 'validate'`).
 */
export declare class InvalidModuleError extends BcvError {
  readonly code: 'BCV_PROXY_INVALID_MODULE';
  /** The name the module was loaded under. */
  readonly module: string;
  /** What is wrong. */
  readonly why: string;
  readonly stage: 'compile' | 'validate';
}
/** A Proxy-Wasm VM could not start: instantiation or the guest's start code failed. */
export declare class VmStartError extends BcvError {
  readonly code: 'BCV_PROXY_VM_START';
  readonly vm: string;
  readonly why: string;
}
/** The Proxy-Wasm VM has failed (a trap, its CPU deadline, its memory cap, …); only that VM is affected. */
export declare class VmFailedError extends BcvError {
  readonly code: 'BCV_PROXY_VM_FAILED';
  readonly vm: string;
  readonly failure: ProxyFailure;
}
/** A plugin was not accepted: its canary, start or configure failed or returned false. The VM is unaffected. */
export declare class PluginRejectedError extends BcvError {
  readonly code: 'BCV_PROXY_PLUGIN_REJECTED';
  readonly plugin: string;
  readonly why: string;
}
/** A call on a Proxy-Wasm context that has finished. */
export declare class ContextFinishedError extends BcvError {
  readonly code: 'BCV_PROXY_CONTEXT_FINISHED';
  /** The context, e.g. `'http context 3 of plugin auth'`. */
  readonly context: string;
}
/** A Proxy-Wasm VM was called from one of its own callbacks; refused, since it would deadlock. */
export declare class ReentrantError extends WouldDeadlockError {
  readonly code: 'BCV_PROXY_REENTRANT';
  readonly vm: string;
}

export interface CloseAndWaitOptions {
  /** Time limit in milliseconds (default 5000). */
  timeoutMs?: number;
}

/** One reference to a bcv node. */
export declare abstract class Handle implements Disposable, AsyncDisposable {
  /** The node's unique id (as in `stuckNodeIds`). */
  readonly id: number;
  /** A short label such as `'pipe reader'`. */
  readonly label: string;
  /** Works after close. */
  readonly state: HandleState;
  /** Why it was closed, or `null` while open. */
  readonly closeReason: CloseReasonName | null;
  /** For `closeReason === 'UPSTREAM'`: the upstream reason. */
  readonly closeUpstream: CloseReasonName | null;
  /** Forced, cascading close (reason `SELF`); idempotent, returns at once, never throws. */
  close(): void;
  /**
   * Closes, then resolves once in-flight operations returned and OS resources are freed.
   * Rejects with `TimeoutError`, or `WouldDeadlockError` inside this stream's own `onData` listener.
   */
  closeAndWait(options?: CloseAndWaitOptions): Promise<void>;
  /** Lets this handle outlive the `scope()` it was created in. */
  detachFromScope(): void;
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A resource: file, transformer. `close()` ends its dependent streams with `PARENT`. */
export declare class Resource extends Handle {}

/** One `onData` event. */
export type StreamEvent =
  | { type: 'data'; data: Buffer }
  | { type: 'end' }
  | { type: 'error'; error: BcvError };

/** The read end of a byte stream. */
export declare class ReadStream extends Handle implements AsyncIterable<Buffer> {
  /** Next chunk (at most `max` bytes, default 64 KiB); `null` only at a clean EOF. */
  read(max?: number): Promise<Buffer | null>;
  /** Everything up to a clean EOF. */
  readAll(): Promise<Buffer>;
  /** Bytes buffered and ready to read. */
  readonly buffered: number;
  /**
   * Delivers chunks on the JS thread; a returned promise delays the next event. No event after the stream
   * was released or closed. The subscription holds no handle: keep the stream referenced.
   */
  onData(listener: (event: StreamEvent) => void | Promise<void>): void;
  /** Breaking out of the loop closes the read end. */
  [Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined>;
  /** Node `Readable`: EOF → end, `ClosedError` → destroy(error), `destroy()` → close. */
  toReadable(options?: { highWaterMark?: number; chunkSize?: number }): Readable;
  /** Web `ReadableStream`: `cancel()` → close. */
  toWeb(): ReadableStream<Uint8Array>;
}

/** The write end of a byte stream. */
export declare class WriteStream extends Handle {
  /** Writes all of `data` (strings as UTF-8); rejects with `ClosedError` (`accepted`). */
  write(data: Uint8Array | string): Promise<void>;
  /** Clean end: the reader drains, then sees EOF. Idempotent. Throws `ClosedError`. */
  finish(): void;
  /** True once the reader went away. */
  readonly peerGone: boolean;
  /** Node `Writable`: `end()` → finish, `destroy()` → close (the reader sees an abort). */
  toWritable(options?: { highWaterMark?: number }): Writable;
  /** Web `WritableStream`: `close()` → finish, `abort()` → close. */
  toWebWritable(): WritableStream<Uint8Array>;
}

export interface SocketAddress {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

/** A listening TCP socket. */
export declare class TcpListener extends Handle {
  /** The next connection; rejects with `ClosedError` once closed. */
  accept(): Promise<TcpSocket>;
  readonly localPort: number;
  readonly localAddress: SocketAddress;
}

/** A connected TCP socket; its streams are dependent children taken once each. */
export declare class TcpSocket extends Handle {
  /** Throws `BcvError` (`BCV_ALREADY_TAKEN`) the second time. */
  takeReceive(): ReadStream;
  /** `finish()` sends FIN; closing or releasing it unfinished resets the connection. */
  takeSend(): WriteStream;
  /** A snapshot, readable after close. */
  readonly peerAddress: SocketAddress;
  readonly localAddress: SocketAddress;
  /**
   * Starts TLS as a client (takes both streams): verifies the server's certificate for `serverName`
   * against `trustedRootsPem`. Rejects with `AuthenticationError` (`BCV_AUTH`) when the handshake fails,
   * `BcvError` (`BCV_ALREADY_TAKEN`, `BCV_INVALID_ARGUMENT`), `ClosedError`.
   */
  startTlsClient(serverName: string, trustedRootsPem: string | Uint8Array): Promise<TlsSession>;
  /** Starts TLS as a server with a PEM certificate chain and key; rejects as `startTlsClient`. */
  startTlsServer(certPem: string | Uint8Array, keyPem: string | Uint8Array): Promise<TlsSession>;
}

/**
 * A TLS session over a `TcpSocket`: a dependent child of the socket, whose `close()` ends the session's
 * streams with `ClosedError('PARENT')`. Its plaintext streams are taken once each.
 */
export declare class TlsSession extends Handle {
  /** Plaintext receive stream; throws `BcvError` (`BCV_ALREADY_TAKEN`) the second time. */
  takeReceive(): ReadStream;
  /** Plaintext send stream: `finish()` sends close_notify then FIN; closing it unfinished resets. */
  takeSend(): WriteStream;
  /** A snapshot, readable after close. */
  readonly peerAddress: SocketAddress;
}

/** A self-signed certificate and its private key (PEM). */
export interface SelfSignedCertificate {
  /** The certificate, also usable as the client's trusted root. */
  certPem: string;
  /** The PKCS#8 private key. */
  keyPem: string;
}

/** One strict-mode report. */
export interface StrictDiagnostic {
  violation: 'V1' | 'V2' | 'V3' | 'V4' | 'V5' | 'V6';
  nodeId: number;
  nodeLabel: string;
  /** Where the node was created (captured while strict mode is on), or `null`. */
  creationBacktrace: string | null;
}

/** The write end of a one-shot future. */
export declare class FutureWriter<T = unknown> extends Handle {
  /** Throws `ClosedError` with the value handed back as `error.value` if it cannot be delivered. */
  write(value: T): void;
  readonly peerGone: boolean;
}

/** The read end of a one-shot future. */
export declare class FutureReader<T = unknown> extends Handle {
  /** Rejects with `ClosedError` (`PEER_DROPPED` when the writer was released without a value). */
  wait(): Promise<T>;
  readonly resolved: boolean;
}

/** Header fields: `[name, value]` pairs, an object (an array value gives one field each), a `Map`, a `Headers`. */
export type HttpHeadersInit =
  | ReadonlyArray<readonly [string, string | number]>
  | Readonly<Record<string, string | number | ReadonlyArray<string | number>>>
  | Iterable<readonly [string, string | number]>;

/** A detached snapshot of a message head: a frozen plain object that outlives the message. */
export interface HttpHead {
  /** Request method; `null` for a response. */
  readonly method: string | null;
  /** Request target (`'/path?query'`); `null` for a response. */
  readonly target: string | null;
  /** Response status; `null` for a request. */
  readonly status: number | null;
  /** Header fields in order (lower-case names). */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** The first value of header `name` (case-insensitive), or `null`. */
  header(name: string): string | null;
}

/** An HTTP/1.1 server; `close()` stops accepting, frees the port and aborts open connections. */
export declare class HttpServer extends Handle {
  /** The next request; rejects with `ClosedError` once closed. */
  nextRequest(): Promise<IncomingMessage>;
  /** Readable after close. */
  readonly localPort: number;
  readonly localAddress: SocketAddress;
}

/**
 * A request received by an `HttpServer`, or the response of `httpRequest`. Its body and trailers are
 * dependent children: releasing the message leaves them working, `close()` ends them (`PARENT`).
 * Accessors throw `ClosedError` once closed.
 */
export declare class IncomingMessage extends Handle {
  /** Response status; `null` for a request. */
  readonly status: number | null;
  /** Request method; `null` for a response. */
  readonly method: string | null;
  /** Request target; `null` for a response. */
  readonly target: string | null;
  /** Header fields in order, as `[name, value]` pairs. */
  readonly headers: Array<[string, string]>;
  /** First value of header `name` (case-insensitive), or `null`. */
  header(name: string): string | null;
  /** A detached snapshot that keeps working after close. */
  head(): HttpHead;
  /**
   * Takes the body and trailers once (`BcvError` `BCV_ALREADY_TAKEN` the second time). Closing or releasing
   * `body` before its end abandons it and `trailers.wait()` rejects with `ClosedError('ABANDONED')`.
   */
  takeBody(): { body: ReadStream; trailers: Trailers };
  /** Server side: sends the head; `finish()` on the writer completes the response, closing it aborts. */
  respond(status: number, headers?: HttpHeadersInit): WriteStream;
  /** Server side: responds with a complete body. */
  respondWith(status: number, headers?: HttpHeadersInit, body?: Uint8Array | string): Promise<void>;
}

/** The trailers of an incoming message. */
export declare class Trailers extends Handle {
  /** Trailer fields once the body ended, or `null` if there were none; rejects with `ClosedError`. */
  wait(): Promise<Array<[string, string]> | null>;
  readonly resolved: boolean;
}

export interface HttpRequestOptions {
  headers?: HttpHeadersInit;
  /** A `ReadStream` is consumed and streamed; bytes and strings are sent as they are. */
  body?: ReadStream | Uint8Array | string | null;
}

/** An ownership scope; closing it closes what it owns with `SCOPE_EXITED`. */
export declare class Scope implements Disposable {
  close(): void;
  readonly size: number;
  readonly closed: boolean;
  [Symbol.dispose](): void;
}

export interface Transformer {
  /** The transformer resource; releasing it does not stop the work, `close()` does (`PARENT`). */
  transformer: Resource;
  /** Its output stream. */
  output: ReadStream;
}

export interface Diagnostics {
  liveNodes: number;
  createdNodes: number;
  violations: { V1: number; V2: number; V3: number; V4: number; V5: number; V6: number };
  shutDown: boolean;
}

/** The default pipe buffer and read chunk size: 64 KiB. */
export declare const DEFAULT_CAPACITY: number;
/** AES-256-GCM key length: 32. */
export declare const AEAD_KEY_LEN: number;

/** `[writer, reader]` with a buffer of `capacity` bytes (default 64 KiB). */
export declare function pipe(capacity?: number): [WriteStream, ReadStream];
/** A stream yielding a copy of `data`, then EOF. */
export declare function streamFromBytes(data: Uint8Array | ArrayBuffer | string): ReadStream;
/** Streams a file; throws `BcvError` (`BCV_IO`) naming the path. */
export declare function readFile(path: string): { resource: Resource; stream: ReadStream };
/**
 * Creates (or truncates) a file; `done` resolves to the byte count after `finish()` and fsync, and
 * rejects if the writer ended unfinished (never an unhandled rejection by itself).
 */
export declare function writeFile(path: string): { resource: Resource; writer: WriteStream; done: Promise<number> };
/** Gzip-compresses `input` (a ReadStream is consumed); `level` 0–9, default 6. */
export declare function gzipCompress(input: ReadStream | Uint8Array | string, level?: number): Transformer;
/** Gzip-decompresses `input` (consumed); corrupt input fails with `CorruptError`. */
export declare function gzipDecompress(input: ReadStream | Uint8Array): Transformer;
/** AES-256-GCM encryption in authenticated 64 KiB chunks; `key` is 32 bytes. */
export declare function aeadEncrypt(input: ReadStream | Uint8Array | string, key: Uint8Array): Transformer;
/** Decryption; wrong key/tampering → `AuthenticationError`, truncation → `ClosedError('UPSTREAM')`. */
export declare function aeadDecrypt(input: ReadStream | Uint8Array, key: Uint8Array): Transformer;
/** Binds a listener (port 0 picks one). */
export declare function tcpListen(host: string, port: number): TcpListener;
/** Connects; rejects with `BcvError` (`BCV_IO`). */
export declare function tcpConnect(host: string, port: number): Promise<TcpSocket>;
/** Serves HTTP/1.1 on `host:port` (port 0 picks one); throws `BcvError` (`BCV_IO`) naming the address. */
export declare function httpServe(host: string, port: number): HttpServer;
/**
 * Sends a request; resolves with the response once its head arrived. Rejects with `BcvError`
 * (`BCV_INVALID_ARGUMENT` for a bad URL, method or header; `BCV_IO` naming the URL).
 */
export declare function httpRequest(method: string, url: string, options?: HttpRequestOptions): Promise<IncomingMessage>;
/** A self-signed certificate for `names` (DNS names or IP addresses); for tests and development. */
export declare function selfSignedCertificate(names: string | readonly string[]): SelfSignedCertificate;
/** A one-shot future carrying any JS value. */
export declare function future<T = unknown>(): [FutureWriter<T>, FutureReader<T>];
/** Copies `src` into `dst` in the background (both consumed), then finishes `dst`. */
export declare function spawnPipe(src: ReadStream, dst: WriteStream): void;
/** Runtime counters. */
export declare function diagnostics(): Diagnostics;
/** The most recent strict-mode diagnostics (oldest first); empty while strict mode is off. */
export declare function strictDiagnostics(): StrictDiagnostic[];
/** Shuts the process-wide runtime down; rejects with `ShutdownTimeoutError` at the deadline. Final. */
export declare function shutdown(timeoutMs?: number): Promise<void>;
/** Resolves once every release so far was processed. */
export declare function reaperFlush(): Promise<void>;
/** Resolves with the live-node count once it is 0 or `timeoutMs` passed. */
export declare function waitIdle(timeoutMs?: number): Promise<number>;
/** Opens an ownership scope on this thread (use with `using`). */
export declare function scope(): Scope;

// ---------------------------------------------------------------------------------------------------
// Block-cache VFS

/** Options of `new Vfs()`. */
export interface VfsOptions {
  /** The cache directory (created if missing). One process, and one `Vfs`, owns it at a time. */
  cacheDir: string;
  /** The name the VFS is registered under in bcv's SQLite (default `'bcv'`); unique in the process. */
  name?: string;
  /** The cache size limit in bytes (default 1 GiB); clean blocks are evicted beyond it. */
  cacheSize?: number;
  /** Parallel requests for uploads and prefetch (default 8). */
  nrequest?: number;
  /** Retries after a transient store failure (default 4). */
  retries?: number;
  /** Time limit of one store request in milliseconds (default 30000). */
  requestTimeoutMs?: number;
  /** How far the clocks of two lease clients may disagree, in ms (default 5000). */
  leaseMaxSkewMs?: number;
  /** The lease time that must be left after the renewal before each manifest write, in ms (default 5000). */
  leaseSafetyMarginMs?: number;
}

export interface AttachOptions {
  /** The alias, the first component of database paths (default: the URL's last component). */
  alias?: string;
  /** Attaching the same URL under the same alias again is a no-op instead of `BCV_ALREADY_EXISTS`. */
  ifNotAttached?: boolean;
  /** The key or cipher of a secure container (required for one, refused for a plaintext one). */
  secure?: Keyring | SecureOptions;
}

/**
 * The AES-256 keys of a secure container by id, and the id that seals new data (older ids keep opening old
 * blocks after a rotation). The keys stay on the native side.
 */
export declare class Keyring {
  /** A ring with one 32-byte key, which seals new data. */
  constructor(keyId: number, key: Uint8Array);
  /** A new random 32-byte key. */
  static generateKey(): Buffer;
  /** Adds (or replaces) a key. */
  add(keyId: number, key: Uint8Array): this;
  /** Makes `keyId` seal new data; throws `BCV_INVALID_ARGUMENT` when the ring lacks it. */
  rotateTo(keyId: number): this;
  /** The id of the key that seals new data. */
  readonly current: number;
}

/**
 * An application cipher. Called on the JS thread (bcv posts the calls of its worker threads there), many times
 * per block (one call per 16 KiB chunk); it must be synchronous and use a fresh nonce for every seal.
 */
export interface BlockCipher {
  /** Recorded in the container: a container made with one name refuses to attach with another. */
  readonly name: string;
  /** Seals `plaintext` bound to `context` (authenticated data); must return exactly `plaintext.length + 32` bytes. */
  seal(context: Buffer, plaintext: Buffer): Uint8Array;
  /**
   * Opens `sealed` (which must be bound to `context`): the plaintext (`sealed.length - 32` bytes), or `null`
   * when it is not authentic (throwing an `AuthenticationError` means the same; another exception is a
   * cipher failure).
   */
  open(context: Buffer, sealed: Buffer): Uint8Array | null;
}

/** The key or cipher of a secure container: exactly one of `keyring`, `keyProvider` or `cipher`. */
export type SecureOptions =
  | { keyring: Keyring }
  | {
      /**
       * Returns the 32-byte key with this id, or `null`. Asked at most once per id (an exception or a wrong
       * length counts as `null`: the key is then missing for this `attach`).
       */
      keyProvider: (keyId: number) => Uint8Array | null | undefined;
      /** The id of the key that seals new data. */
      currentKeyId: number;
    }
  | { cipher: BlockCipher };

/** A container's lease as recorded there. Plain data: having one does not mean holding the lease. */
export declare class Lease {
  private constructor();
  /** The holder's description, as given to obtain. */
  readonly holder: string;
  /** Names this holding (hex, not a secret): another process extends, releases or adopts it by token. */
  readonly token: string;
  /** Grows by one at each change of holder. */
  readonly generation: number;
  readonly acquiredUnixMs: number;
  readonly expiresUnixMs: number;
  readonly acquired: Date;
  readonly expires: Date;
  /** Milliseconds left by this machine's clock (0 once expired). */
  readonly expiresIn: number;
  readonly isExpired: boolean;
}

/** What a daemon reports. */
export interface DaemonStats {
  /** Clients connected now. */
  clients: number;
  /** Clients served since start. */
  clientsTotal: number;
  cache: { hits: number; misses: number; bytesFetched: number; evictions: number };
  usage: { cleanSlots: number; dirtySlots: number; blockSize: number; capacity: number };
}

export interface DaemonOptions {
  /** The one cache size limit all clients share, in bytes (default 1 GiB). */
  cacheSize?: number;
  /** Retries after a transient store failure (default 4). */
  retries?: number;
  /** Time limit of one store request in milliseconds (default 30000). */
  requestTimeoutMs?: number;
  /** Key rings of secure containers by URL, handed to a client only after its attach proved access. */
  keys?: Record<string, Keyring> | Map<string, Keyring>;
}

/**
 * Multi-process mode: a daemon owning a cache directory. A `Vfs` created on that directory (in any process of
 * the same user) becomes its read-only client (`isDaemonClient`) and shares its cache and size limit. The
 * daemon never writes to storage. `stop()` (or `using`) ends it; clients then get `DaemonGoneError` once and
 * reconnect to the next daemon on the directory.
 */
export declare class Daemon {
  /** Takes `cacheDir` and serves `cacheDir/daemon.sock`; throws `BCV_BUSY` when it is owned, `BCV_IO`. */
  constructor(cacheDir: string, options?: DaemonOptions);
  /** The same as the constructor. */
  static start(cacheDir: string, options?: DaemonOptions): Daemon;
  readonly running: boolean;
  /** `null` once stopped. */
  readonly socketPath: string | null;
  /** `null` once stopped. */
  stats(): DaemonStats | null;
  /** Stops serving and releases the directory. Idempotent. */
  stop(): void;
  [Symbol.dispose](): void;
}

export interface UploadOptions {
  /** Also delete garbage blocks that have been on the delete list at least this long. */
  cleanupGraceMs?: number;
}

/** What a poll changed. */
export interface PollReport {
  /** True when the container's manifest had changed. */
  manifestChanged: boolean;
  /** Databases whose new version is now visible (to open transactions once they end). */
  updated: string[];
  /** Databases new in the container. */
  added: string[];
  /** Databases deleted from the container. */
  removed: string[];
  /** Databases changed remotely that have local changes too: their upload fails until reverted. */
  conflicts: string[];
}

/** What an upload did. */
export interface UploadReport {
  /** Databases uploaded, with their new version. */
  databases: Array<[name: string, version: number]>;
  /** Block objects written. */
  blocksWritten: number;
  /** Bytes written in block objects. */
  bytesWritten: number;
  /** Blocks the container already had (same content), not written again. */
  blocksDeduplicated: number;
  /** Garbage blocks deleted (`cleanupGraceMs`). */
  blocksDeleted: number;
  /** Times the upload re-based onto a manifest another client installed meanwhile. */
  rebases: number;
}

/** What a prefetch did. */
export interface PrefetchReport {
  /** Distinct blocks of the database (now all cached). */
  blocks: number;
  /** Bytes fetched (0 when everything was cached already). */
  bytesFetched: number;
}

/** Status of one database of an attached container. */
export interface DatabaseStatus {
  name: string;
  /** Its id in the manifest (0 while it exists only locally). */
  id: number;
  /** The version the local image is based on. */
  version: number;
  /** Image size in bytes. */
  size: number;
  blocks: number;
  /** Blocks written locally and not uploaded. */
  dirtyBlocks: number;
  /** True when there is something to upload. */
  hasLocalChanges: boolean;
  /** Open SQLite file handles. */
  openHandles: number;
}

/** A database as listed in a manifest. */
export interface DatabaseInfo {
  name: string;
  /** Its id in the manifest. */
  id: number;
  /** Uploads so far. */
  version: number;
  /** The id of the database it shares blocks with as a diff (0: none). */
  parent: number;
  blocks: number;
  /** Image size in bytes (blocks × block size). */
  size: number;
}

/** A manifest as plain data. */
export interface ManifestInfo {
  blockSize: number;
  /** Length of block ids in bytes. */
  nameBytes: number;
  maxDbId: number;
  databases: DatabaseInfo[];
  /** Blocks waiting for cleanup: id (hex) and when they were listed (Julian-day milliseconds, as CBS). */
  deleteList: Array<{ block: string; timestampMs: number }>;
}

/** Request counters of one kind, with an estimated cost. */
export interface MeterCounters {
  /** Requests sent (retries included). */
  requests: number;
  bytesUp: number;
  bytesDown: number;
  /** Attempts that failed (not-found and lost conditions included). */
  errors: number;
  retries: number;
  /** US dollars, from an illustrative price table. */
  estimatedCost: number;
}

/** The request counters of a container. */
export interface MeterSnapshot {
  kinds: {
    get: MeterCounters;
    rangedGet: MeterCounters;
    head: MeterCounters;
    put: MeterCounters;
    conditionalPut: MeterCounters;
    delete: MeterCounters;
    list: MeterCounters;
  };
  total: MeterCounters;
}

/** Cache activity and occupancy. */
export interface CacheStats {
  /** Reads served from the cache. */
  hits: number;
  /** Reads that needed a fetch. */
  misses: number;
  bytesFetched: number;
  evictions: number;
  /** Slots holding (part of) a clean block. */
  cleanSlots: number;
  /** Slots holding a block written locally. */
  dirtySlots: number;
  /** The slot size (the containers' block size). */
  blockSize: number;
  /** The configured limit in bytes. */
  capacity: number;
}

/**
 * A block-cache VFS: a cache directory registered as an SQLite VFS in bcv's own SQLite (better-sqlite3 and
 * `node:sqlite` embed their own SQLite and cannot see it: open databases with `open()`), with containers
 * attached under aliases. Database paths are `/alias/db`.
 *
 * `close()` closes its databases (`ClosedError('PARENT')`) and cancels its jobs, then frees the cache
 * directory and the name once they are closed; `closeAndWait()` resolves when that happened. Released
 * (garbage-collected) first, it keeps working for the databases opened through it.
 */
export declare class Vfs extends Handle {
  /** Throws `BcvError`: `BCV_BUSY` (cache directory owned elsewhere), `BCV_INVALID_ARGUMENT` (name taken), `BCV_IO`. */
  constructor(options: VfsOptions);
  /** The SQLite VFS name. */
  readonly name: string;
  readonly cacheDir: string;
  /** True when this `Vfs` is a read-only client of a daemon owning its cache directory. */
  readonly isDaemonClient: boolean;
  /**
   * Attaches a container: a directory path, `memory://NAME`, `s3://…`, `az://…` or `gs://…`. Fetches its
   * manifest unless this cache knows it. Returns the alias. Throws `BCV_ALREADY_EXISTS`, `BCV_NOT_FOUND`, `BCV_IO`;
   * `SecureContainerError`, `AuthenticationError` (wrong key) for secure containers.
   */
  attach(url: string, options?: AttachOptions): string;
  /** Throws `BCV_BUSY` while a database of it is open or has changes not uploaded. */
  detach(alias: string): void;
  /** Makes other clients' uploads visible (one conditional request). Blocks the JS thread; see `pollAsync`. */
  poll(alias: string): PollReport;
  /** `poll()` off the JS thread. */
  pollAsync(alias: string): Promise<PollReport>;
  /**
   * Uploads the local changes of every database of the container. Blocks the JS thread; see `uploadAsync`.
   * Throws `ConflictError` when another client changed a database changed here too (nothing is lost).
   */
  upload(alias: string, options?: UploadOptions): UploadReport;
  /** `upload()` off the JS thread. */
  uploadAsync(alias: string, options?: UploadOptions): Promise<UploadReport>;
  /** Fetches every block of `db` the cache lacks, in the background. */
  prefetchStart(alias: string, db: string): Job<PrefetchReport>;
  /** Uploads in the background; cancelled before the manifest is sent, it leaves the container unchanged. */
  uploadStart(alias: string, options?: UploadOptions): Job<UploadReport>;
  /** Drops the local changes of `db` (or of every database of the container); returns those reverted. */
  revert(alias: string, db?: string): string[];
  /** Copies database `from` to a new database `to`, sharing blocks (writes the manifest). */
  copy(alias: string, from: string, to: string): void;
  /** Deletes a database from the container (writes the manifest). */
  delete(alias: string, db: string): void;
  /** Status of every database of the container. */
  databases(alias: string): DatabaseStatus[];
  /** The manifest as this client last saw it. */
  manifest(alias: string): ManifestInfo;
  /** The container's request counters. */
  meter(alias: string): MeterSnapshot;
  cacheStats(): CacheStats;
  /** `/alias/db`. */
  path(alias: string, db: string): string;
  attached(): Array<{ alias: string; url: string }>;
  /**
   * Obtains the container's lease for `holder` (1 to 256 bytes of text) for `durationMs`; uploads then renew
   * it and other clients' manifest writes are refused. Throws `LeaseHeldError` while another client holds it.
   */
  leaseObtain(alias: string, holder: string, durationMs: number): Lease;
  leaseObtainAsync(alias: string, holder: string, durationMs: number): Promise<Lease>;
  /** Extends the lease held; throws `LeaseLostError` when it is not held any more. */
  leaseExtend(alias: string, durationMs: number): Lease;
  leaseExtendAsync(alias: string, durationMs: number): Promise<Lease>;
  /** Releases the lease held (detaching releases it too); throws `LeaseLostError`. */
  leaseRelease(alias: string): void;
  leaseReleaseAsync(alias: string): Promise<void>;
  /** The lease as recorded in the container, read now; `null` when none is held. */
  leaseStatus(alias: string): Lease | null;
  leaseStatusAsync(alias: string): Promise<Lease | null>;
  /** Holds the lease obtained elsewhere under `token` (nothing is written); throws `LeaseLostError`. */
  leaseAdopt(alias: string, token: string): Lease;
  /** The lease this `Vfs` holds, as it last wrote it (no request). */
  leaseHeld(alias: string): Lease | null;
  /** Opens a database: the same as `new Database(vfs, path, options)`. */
  open(path: string, options?: DatabaseOptions): Database;
}

export interface DatabaseOptions {
  /** Open read-only (default false). */
  readonly?: boolean;
  /** Create the database (locally, until uploaded) if it does not exist (default true). */
  create?: boolean;
  /** How long to wait for a lock held by another connection before `SQLITE_BUSY` (default 5000 ms). */
  timeoutMs?: number;
  /** Integers as `BigInt` in the statements it prepares (default false; see `defaultSafeIntegers`). */
  safeIntegers?: boolean;
}

/** A value SQLite can store, as bound: `null`/`undefined` → NULL, booleans → 0/1, `Uint8Array`/`ArrayBuffer` → BLOB. */
export type SqlValue = null | undefined | number | bigint | string | boolean | Uint8Array | ArrayBuffer;
/** Parameters: values in order (arrays are spread) and at most one object of named values (`:a`, `@a`, `$a` → `a`). */
export type BindParameters = Array<SqlValue | SqlValue[] | Record<string, SqlValue>>;

/** The result of `Statement.run()`. */
export interface RunResult {
  /** Rows this run inserted, updated or deleted. */
  changes: number;
  /** The rowid of the last insert (a `BigInt` with `safeIntegers`). */
  lastInsertRowid: number | bigint;
}

/** A transaction function made by `Database.transaction()`. */
export type Transaction<F extends (...args: any[]) => any> = F & {
  /** `BEGIN DEFERRED` (the default). */
  deferred: F;
  /** `BEGIN IMMEDIATE`. */
  immediate: F;
  /** `BEGIN EXCLUSIVE`. */
  exclusive: F;
};

/**
 * An SQLite connection to a database of a `Vfs`, with the synchronous API of better-sqlite3. Closing its
 * `Vfs` (or detaching the container) closes it; calls then throw `ClosedError` (`reason` `'PARENT'`).
 * Read values: INTEGER → number (`BigInt` with safe integers), REAL → number, TEXT → string, BLOB → `Buffer`,
 * NULL → `null`.
 */
export declare class Database extends Handle {
  /** Throws `SqliteError` (e.g. `SQLITE_CANTOPEN`), `ClosedError` when the VFS is closed. */
  constructor(vfs: Vfs, path: string, options?: DatabaseOptions);
  /** The path it was opened with. */
  readonly name: string;
  readonly vfs: Vfs;
  /** True until closed. */
  readonly open: boolean;
  readonly readonly: boolean;
  /** Always false. */
  readonly memory: boolean;
  readonly inTransaction: boolean;
  /** Runs one or more statements without parameters. Throws `SqliteError`, `ConflictError`. */
  exec(sql: string): this;
  /** Prepares one statement (several: use `exec`). Throws `SqliteError`. */
  prepare<Row = any>(sql: string): Statement<Row>;
  /**
   * Wraps `fn` in `BEGIN`…`COMMIT`; a throw rolls back and is re-thrown. Nested calls use savepoints. `fn`
   * must not return a promise.
   */
  transaction<F extends (...args: any[]) => any>(fn: F): Transaction<F>;
  /** `PRAGMA source`: every row, or the first value with `{ simple: true }`. */
  pragma(source: string, options?: { simple?: boolean }): unknown;
  /** Integers as `BigInt` in statements prepared from now on. */
  defaultSafeIntegers(toggle?: boolean): this;
  /** Makes a running statement fail with `SQLITE_INTERRUPT`. */
  interrupt(): void;
  /** Closes now (statements are finalized). Idempotent. */
  close(): this;
}

/** A prepared statement. It keeps its `Database` referenced. */
export declare class Statement<Row = any> {
  private constructor();
  readonly database: Database;
  readonly source: string;
  /** True when it returns rows. */
  readonly reader: boolean;
  /** True when it does not write. */
  readonly readonly: boolean;
  /** True while an `iterate()` over it is in progress. */
  readonly busy: boolean;
  run(...params: BindParameters): RunResult;
  /** The first row, or `undefined`. Throws `TypeError` for a statement that returns no data. */
  get(...params: BindParameters): Row | undefined;
  all(...params: BindParameters): Row[];
  /** Rows one at a time; leaving the loop early ends the query. */
  iterate(...params: BindParameters): IterableIterator<Row>;
  /** Only the first column of each row (turns `raw` off). */
  pluck(toggle?: boolean): this;
  /** Rows as arrays (turns `pluck` off). */
  raw(toggle?: boolean): this;
  /** Integers (and `lastInsertRowid`) as `BigInt`. */
  safeIntegers(toggle?: boolean): this;
  /** The result columns; `type` is the declared type, or `null` for an expression. */
  columns(): Array<{ name: string; type: string | null }>;
}

/** A background prefetch or upload. `close()` (or `cancel()`) stops it at its next block. */
export declare class Job<Report = PrefetchReport | UploadReport> extends Handle {
  /** E.g. `'prefetch of main/app.db'`. */
  readonly description: string;
  /** Bytes done and in all (the total is known once the job listed its blocks). */
  progress(): { done: number; total: number };
  status(): 'running' | 'done' | 'failed' | 'cancelled';
  /** The report; rejects with the job's error, `ClosedError` once cancelled. */
  wait(): Promise<Report>;
  cancel(): void;
}

/** What a cleanup did. */
export interface CleanupReport {
  /** Blocks deleted from the delete list. */
  deleted: number;
  /** Unreferenced block objects deleted (left by interrupted uploads). */
  orphansDeleted: number;
  /** Blocks still waiting for their grace period. */
  waiting: number;
}

export interface ContainerOptions {
  /** Parallel requests (default 8). */
  nrequest?: number;
  /** Retries after a transient failure (default 4). */
  retries?: number;
  /** Time limit of one request in milliseconds (default 30000). */
  requestTimeoutMs?: number;
  /** How far the clocks of two lease clients may disagree, in ms (default 5000). */
  leaseMaxSkewMs?: number;
  /** The lease time that must be left after the renewal before each manifest write, in ms (default 5000). */
  leaseSafetyMarginMs?: number;
  /**
   * The key or cipher of a secure container: `create()` makes a secure container, uploads and downloads seal
   * and open blocks (without it they reject with `SecureContainerError` on a secure container).
   */
  secure?: Keyring | SecureOptions;
}

/** Progress of a file upload or download, in bytes. */
export type ProgressCallback = (progress: { done: number; total: number }) => void;

/**
 * Container operations without a cache or VFS. Every method returns a promise and runs off the JS thread;
 * errors are `BcvError`s (`BCV_NOT_FOUND`, `BCV_ALREADY_EXISTS`, `BCV_CONFLICT`, `BCV_IO`, …).
 */
export declare class Container {
  /** A directory path, `memory://NAME`, `s3://…`, `az://…`, `gs://…`; no request is made. */
  constructor(url: string, options?: ContainerOptions);
  /** The URL without secrets. */
  readonly label: string;
  /** Creates an empty container (block size default 4 MiB, ids of 16 bytes); `BCV_ALREADY_EXISTS` unless `overwrite`. */
  create(options?: { blockSize?: number; nameBytes?: number; overwrite?: boolean }): Promise<void>;
  /** Deletes every object; resolves with how many. */
  destroy(): Promise<number>;
  list(): Promise<DatabaseInfo[]>;
  /** Uploads a local SQLite file as database `name`; resolves with its new version. */
  uploadFile(path: string, name: string, onProgress?: ProgressCallback): Promise<number>;
  /** Downloads database `name` to a local SQLite file (any SQLite opens it); resolves with the bytes written. */
  downloadFile(name: string, path: string, onProgress?: ProgressCallback): Promise<number>;
  copy(from: string, to: string): Promise<void>;
  delete(name: string): Promise<void>;
  /** Deletes garbage older than `graceSeconds` (default 3600), and orphaned blocks unless `findOrphans: false`. */
  cleanup(options?: { graceSeconds?: number; findOrphans?: boolean }): Promise<CleanupReport>;
  manifest(): Promise<ManifestInfo>;
  /** The request counters of this object. */
  meter(): MeterSnapshot;
  /** True when the container is secure (has a `bcv_secure.json` marker). */
  isSecure(): Promise<boolean>;
  /** Obtains the lease for `holder`; rejects with `LeaseHeldError` naming the holder. */
  leaseObtain(holder: string, durationMs: number): Promise<Lease>;
  /** Extends the lease held, or with `token` that holding (obtained elsewhere); rejects with `LeaseLostError`. */
  leaseExtend(durationMs: number, options?: { token?: string }): Promise<Lease>;
  /** Releases the lease held, or with `token` that holding; rejects with `LeaseLostError`. */
  leaseRelease(options?: { token?: string }): Promise<void>;
  /** The lease as recorded in the container, read now; `null` when none is held. */
  leaseStatus(): Promise<Lease | null>;
  /** The lease this object holds (no request). */
  leaseHeld(): Promise<Lease | null>;
  /** Holds the lease obtained elsewhere under `token` (nothing is written); rejects with `LeaseLostError`. */
  leaseAdopt(token: string): Promise<Lease>;
}

// ---------------------------------------------------------------------------------------------------
// Proxy-Wasm host

/** Options of `new ProxyHost()`; every one optional. */
export interface ProxyHostOptions {
  /** Most linear memory of one VM in bytes (default 64 MiB, at least 64 KiB). A guest past it fails its VM. */
  memoryLimit?: number;
  /**
   * Most time one plugin callback may take, in milliseconds (default 1000); past it the VM fails
   * (`cpuDeadline`). A property or foreign function written in JS runs inside this time.
   */
  callbackDeadlineMs?: number;
  /** How often the deadline is checked, in milliseconds (default 2). */
  epochTickMs?: number;
  /** Use the pooling instance allocator (default true). */
  pooling?: boolean;
  /** Most VMs (and canaries) alive at once with pooling (default 128). */
  maxInstances?: number;
  /** A directory for precompiled modules, keyed by hash and engine settings (default: none). */
  moduleCacheDir?: string;
  /** Most pairs of a header map a plugin hands over (default 1024). */
  maxHeaderPairs?: number;
  /** Most bytes of a serialized header map (default 1 MiB). */
  maxHeaderBytes?: number;
  /** Most bytes of one WASI `random_get` (default 64 KiB). */
  maxRandomBytes?: number;
  /** Most items waiting in one shared queue (default 10 000). */
  maxQueueItems?: number;
  /** Most guest stack in bytes (default 512 KiB). */
  maxWasmStack?: number;
}

/** What the embedder does with a stream after a callback. */
export type ProxyAction = 'continue' | 'pause' | 'localResponse' | 'close';

/** A header value as given to a context: text, bytes, or a number (written as text). */
export type ProxyHeaderValue = string | Uint8Array | number;
/**
 * Header fields as given: `[name, value]` pairs (order and duplicates kept), a `Map` or `Headers` object, or
 * a plain object whose values are a value or an array of values.
 */
export type ProxyHeadersInit =
  | ReadonlyArray<readonly [string, ProxyHeaderValue]>
  | Iterable<readonly [string, ProxyHeaderValue]>
  | Record<string, ProxyHeaderValue | readonly ProxyHeaderValue[]>;
/** Header fields as read back: `[name, value]` pairs in order, duplicates kept. */
export type ProxyHeaders = Array<[string, string]>;

/** A response a plugin sent instead of forwarding (or the 503 of a fail-closed plugin of a failed VM). */
export interface ProxyLocalResponse {
  status: number;
  /** Details for logs (not sent to the client). */
  details: string;
  body: Buffer;
  /** Extra response headers. */
  headers: ProxyHeaders;
  /** The gRPC status, for a gRPC reply. */
  grpcStatus: number | null;
}

/** Why a VM failed. */
export interface ProxyFailure {
  kind:
    | 'trap'
    | 'cpuDeadline'
    | 'memoryLimit'
    | 'restrictedHostcall'
    | 'procExit'
    | 'allocatorFailed'
    | 'vmStartRefused'
    | 'internal';
  /** E.g. `'trap: … unreachable …'`. */
  message: string;
  /** `memoryLimit`: the cap in bytes. */
  limit?: number;
  /** `restrictedHostcall`: the host function and where it was called (`'start'`, `'allocator'`). */
  function?: string;
  phase?: string;
  /** `procExit`: the exit code. */
  exitCode?: number;
}

/** A metric plugins defined. */
export interface ProxyMetric {
  name: string;
  kind: 'counter' | 'gauge' | 'histogram';
  /** Counter or gauge value; for a histogram, the number of recorded values. */
  value: number;
  /** Histogram only: sum, smallest and largest recorded value. */
  sum: number;
  min: number;
  max: number;
}

/** One log line of a plugin. WASI stdout lines arrive as `info`, stderr lines as `error`. */
export interface ProxyLogRecord {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'critical';
  vmId: string;
  /** Empty during VM start. */
  plugin: string;
  /** 0 during VM start. */
  contextId: number;
  message: string;
}

/** An HTTP callout a plugin dispatched. */
export interface HttpCalloutInfo {
  /** The id the plugin got back. */
  callId: number;
  /** The upstream (cluster) name the plugin asked for. */
  upstream: string;
  /** The plugin that dispatched it. */
  plugin: string;
  /** `:method`, `:path` and `:authority`, or `null`. */
  method: string | null;
  path: string | null;
  authority: string | null;
  /** Every header, pseudo-headers included. */
  headers: ProxyHeaders;
  body: Buffer;
  trailers: ProxyHeaders;
  /** How long the plugin waits; after that it is told the call failed and a late reply is ignored. */
  timeoutMs: number;
}

/** A gRPC unary callout a plugin dispatched. */
export interface GrpcCalloutInfo {
  callId: number;
  upstream: string;
  plugin: string;
  /** Fully qualified service name. */
  service: string;
  method: string;
  initialMetadata: ProxyHeaders;
  /** The serialized request message. */
  message: Buffer;
  timeoutMs: number;
}

/** The response to an HTTP callout. */
export interface HttpCalloutResponse {
  /** Becomes `:status` unless `headers` has one (default 200). */
  status?: number;
  headers?: ProxyHeadersInit;
  body?: Uint8Array | string;
  trailers?: ProxyHeadersInit;
}

/** The response to a gRPC callout. */
export interface GrpcCalloutResponse {
  /** gRPC status (default 0, OK); the plugin gets `message` only with 0. */
  status?: number;
  statusMessage?: string;
  initialMetadata?: ProxyHeadersInit;
  message?: Uint8Array | string;
  trailingMetadata?: ProxyHeadersInit;
}

/**
 * The answer channel of a callout: answer once, at any time, from any async code. Unanswered, the call fails
 * at the plugin's timeout (or when the reply is garbage-collected); a reply after the timeout is ignored.
 */
export declare class CalloutReply {
  private constructor();
  /** True for the reply of a gRPC callout. */
  readonly grpc: boolean;
  /** True once answered. */
  readonly answered: boolean;
  /** Delivers the response; throws `BcvError` (`BCV_ALREADY_TAKEN`) when already answered. */
  respond(response?: HttpCalloutResponse | GrpcCalloutResponse): void;
  /** Tells the plugin the call failed (HTTP: no response; gRPC: status 14); `BCV_ALREADY_TAKEN` when answered. */
  fail(): void;
}

/** A property lookup the VM could not answer from its own tables. */
export interface PropertyRequest {
  /** The path segments (`['source', 'address']`). */
  segments: string[];
  /** The plugin asking. */
  plugin: string;
  /** The context asking. */
  contextId: number;
}

/**
 * A VM's services, all optional. They run on the JS thread. Callouts and `log` are handed over without the
 * plugin waiting; `property` and foreign functions answer synchronously (the plugin waits for them, within
 * its callback deadline) and must not return promises.
 */
export interface ProxyServices {
  /**
   * An HTTP callout: answer through `reply` now or later. A throw or rejection fails the call (and emits a
   * process warning, code `BCV_PROXY_CALLOUT`). Without it, callouts are refused at dispatch.
   */
  httpCallout?(info: HttpCalloutInfo, reply: CalloutReply): void | Promise<void>;
  /** A gRPC unary callout, as `httpCallout`. */
  grpcCallout?(info: GrpcCalloutInfo, reply: CalloutReply): void | Promise<void>;
  /**
   * A property the VM does not know (`path` is the dotted path): its value, or `null` for not found (a throw
   * is not found too).
   */
  property?(path: string, request: PropertyRequest): Uint8Array | string | null | undefined;
  /**
   * Functions the plugin calls by name (`proxy_call_foreign_function`): the result bytes (`null` is empty).
   * A throw is INTERNAL_FAILURE for the plugin; a throw of an error with `code: 'BCV_NOT_FOUND'` NOT_FOUND.
   */
  foreignFunctions?: Record<string, (args: Buffer) => Uint8Array | string | null | undefined>;
  /** Every log record, as it is written (a throw surfaces as an uncaught exception). */
  log?(record: ProxyLogRecord): void;
}

/** Options of `ProxyHost.startVm()`. */
export interface StartVmOptions {
  /** VMs with the same id share shared data and queues (default `''`). */
  vmId?: string;
  /** The VM configuration, readable in `on_vm_start`. */
  configuration?: Uint8Array | string;
  /** Environment variables the guest sees through WASI (the process's own never leak). */
  environment?: ProxyHeadersInit;
  services?: ProxyServices;
  /**
   * Re-create a failed VM on its next use (a fresh instance, `on_vm_start`, every open plugin configured
   * again) at most `maxRestarts` times within `windowMs` (default 60 s), each at least `backoffMs` (default
   * 1 s) after its failure; contexts open at the failure stay failed. Default: no restarts.
   */
  restart?: { maxRestarts: number; windowMs?: number; backoffMs?: number };
}

/** Options of `Vm.addPlugin()`. */
export interface PluginConfig {
  /** The plugin's name (logs, metrics, property `plugin_name`). */
  name?: string;
  /** The root id (property `plugin_root_id`); default: `name`. */
  rootId?: string;
  /** The plugin configuration, readable in `on_configure`. */
  configuration?: Uint8Array | string;
  /**
   * When the VM fails: `true` lets traffic through unfiltered; `false` (default) answers HTTP with a local
   * 503 and closes TCP connections.
   */
  failOpen?: boolean;
  /** Properties the plugin can read (`'a.b'` → value), before the `property` service. */
  properties?: ProxyHeadersInit;
}

/** A compiled, checked plugin module (not a handle). */
export declare class ProxyModule {
  private constructor();
  readonly host: ProxyHost;
  readonly name: string;
  /** The Proxy-Wasm ABI version it was built for. */
  readonly abi: '0.2.1' | '0.2.0' | '0.1.0';
  /** SHA-256 of the wasm bytes, in hex. */
  readonly sha256: string;
  /** True when the compiled code came from the module cache. */
  readonly fromCache: boolean;
}

/**
 * The Proxy-Wasm host: one wasmtime engine with its limits, the module cache, and what VMs share (metrics,
 * shared data and queues by VM id). `close()` closes every VM, plugin and context under it.
 */
export declare class ProxyHost extends Handle {
  /** Throws `BcvError` (`BCV_INVALID_ARGUMENT`) for options wasmtime refuses. */
  constructor(options?: ProxyHostOptions);
  readonly config: {
    memoryLimit: number;
    callbackDeadlineMs: number;
    pooling: boolean;
    maxInstances: number;
    moduleCacheDir: string | null;
  };
  /** Compiles (or loads from the cache) and checks a module off the JS thread; rejects with `InvalidModuleError`. */
  loadModule(name: string, wasm: Uint8Array | ArrayBuffer): Promise<ProxyModule>;
  /** Starts a VM; rejects with `VmStartError`, `ClosedError`. */
  startVm(module: ProxyModule, options?: StartVmOptions): Promise<Vm>;
  /** Every metric plugins defined, in definition order. */
  metrics(): ProxyMetric[];
  metric(name: string): ProxyMetric | null;
  /** Shared data of VM id `vmId`, with its CAS token. */
  sharedData(vmId: string, key: Uint8Array | string): { value: Buffer; cas: number } | null;
  /** Sets shared data (`cas` 0, the default: unconditional); returns the new CAS token; `ConflictError` when stale. */
  setSharedData(vmId: string, key: Uint8Array | string, value: Uint8Array | string, cas?: number): number;
  removeSharedData(vmId: string, key: Uint8Array | string): boolean;
  /** The keys, sorted. */
  sharedDataKeys(vmId: string): Buffer[];
  /** Enqueues on a shared queue a plugin registered (`BCV_NOT_FOUND` otherwise); its `on_queue_ready` runs. */
  enqueue(vmId: string, queue: string, item: Uint8Array | string): void;
  /** Items waiting, or `null` when the queue is not registered. */
  queueLength(vmId: string, queue: string): number | null;
}

/** A running VM holding plugins. A trap or an exceeded limit fails the VM, never the host. */
export declare class Vm extends Handle {
  private constructor();
  readonly host: ProxyHost;
  readonly module: ProxyModule;
  readonly vmId: string;
  /** Adds a plugin after a canary run; rejects with `PluginRejectedError`, `VmFailedError`. */
  addPlugin(config?: PluginConfig): Promise<Plugin>;
  /** How many times the VM was re-created after a failure (`restart` of `startVm`). Never waits. */
  restarts(): number;
  /** Why the VM failed, or `null` (again after a restart). Never waits. */
  failure(): ProxyFailure | null;
  /** Takes the log records kept since the last call (the most recent 4096). Never waits. */
  takeLogs(): ProxyLogRecord[];
  /** Bytes of linear memory the instance has. */
  memorySize(): Promise<number>;
  /** Live contexts (root and stream). */
  contextCount(): Promise<number>;
  /** `true` once nothing is delivered to or queued for the VM (ticks, queues, callout responses). */
  waitIdle(timeoutMs?: number): Promise<boolean>;
}

/** A plugin (root context) of a VM. */
export declare class Plugin extends Handle {
  private constructor();
  readonly vm: Vm;
  readonly name: string;
  readonly rootContextId: number;
  readonly failOpen: boolean;
  /** The VM's failure, or `null`. */
  failure(): ProxyFailure | null;
  httpContext(): Promise<HttpContext>;
  tcpContext(): Promise<TcpContext>;
  /** Calls the plugin's `proxy_on_foreign_function`; rejects with `VmFailedError` if it traps. */
  callForeignFunction(functionId: number, args?: Uint8Array | string): Promise<void>;
}

/**
 * A stream context. Calls on one context run in the order they were made. Releasing or closing it finishes
 * it (`on_done`, `on_log`, `on_delete`).
 */
declare abstract class ProxyStreamContext extends Handle {
  readonly plugin: Plugin;
  readonly contextId: number;
  /** The local response the last `'localResponse'` action carried, or `null`. */
  localResponse(): ProxyLocalResponse | null;
  /** A property as the plugin would read it (`'request.path'`, …). */
  property(path: string): Promise<Buffer | null>;
  /** Sets a property of this context, visible to the plugin. */
  setProperty(path: string, value: Uint8Array | string): Promise<void>;
  /** Finishes now; `false` when the plugin deferred the end (`proxy_done` later). */
  finish(): Promise<boolean>;
}

/**
 * An HTTP exchange through a plugin. Each feeding call resolves with the action. A VM failure is not an
 * error: the plugin's fail-open/closed policy gives the action. Rejects with `ContextFinishedError`,
 * `ClosedError`.
 */
export declare class HttpContext extends ProxyStreamContext {
  private constructor();
  onRequestHeaders(headers: ProxyHeadersInit, endOfStream?: boolean): Promise<ProxyAction>;
  onRequestBody(chunk: Uint8Array | string, endOfStream?: boolean): Promise<ProxyAction>;
  onRequestTrailers(trailers: ProxyHeadersInit): Promise<ProxyAction>;
  onResponseHeaders(headers: ProxyHeadersInit, endOfStream?: boolean): Promise<ProxyAction>;
  onResponseBody(chunk: Uint8Array | string, endOfStream?: boolean): Promise<ProxyAction>;
  onResponseTrailers(trailers: ProxyHeadersInit): Promise<ProxyAction>;
  /**
   * Waits for a paused stream (default: the one fed last) to continue, reply locally or close; rejects with
   * `TimeoutError` after `timeoutMs` (default 5000; nothing is lost).
   */
  wait(timeoutMs?: number, stream?: 'request' | 'response'): Promise<ProxyAction>;
  requestHeaders(): Promise<ProxyHeaders>;
  requestTrailers(): Promise<ProxyHeaders>;
  responseHeaders(): Promise<ProxyHeaders>;
  responseTrailers(): Promise<ProxyHeaders>;
  /** Takes the buffered body as the plugin left it (the buffer is then empty). */
  takeRequestBody(): Promise<Buffer>;
  takeResponseBody(): Promise<Buffer>;
  /** Pipes a body through the plugin (input consumed); the output ends cleanly only if the plugin let it all through. */
  filterRequestBody(input: ReadStream | Uint8Array | string, options?: { pauseTimeoutMs?: number }): ReadStream;
  filterResponseBody(input: ReadStream | Uint8Array | string, options?: { pauseTimeoutMs?: number }): ReadStream;
}

/** A TCP connection through a plugin. */
export declare class TcpContext extends ProxyStreamContext {
  private constructor();
  onNewConnection(): Promise<ProxyAction>;
  onDownstreamData(data: Uint8Array | string, endOfStream?: boolean): Promise<ProxyAction>;
  onUpstreamData(data: Uint8Array | string, endOfStream?: boolean): Promise<ProxyAction>;
  onDownstreamClose(peer?: 'unknown' | 'local' | 'remote'): Promise<void>;
  onUpstreamClose(peer?: 'unknown' | 'local' | 'remote'): Promise<void>;
  takeDownstreamData(): Promise<Buffer>;
  takeUpstreamData(): Promise<Buffer>;
  /** Waits for a paused direction (default: the one fed last). */
  wait(timeoutMs?: number, stream?: 'downstream' | 'upstream'): Promise<ProxyAction>;
}
