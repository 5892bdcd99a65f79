/**
 * bcv for Node.js: byte streams, transformers (gzip, AES-256-GCM), files, TCP and HTTP/1.1 with deterministic
 * resource lifetimes (shared/design/LIFETIMES.md).
 *
 * - Letting a handle be garbage-collected *releases* it: children keep working; a stream end that loses
 *   its last handle is dropped and its peer sees `PEER_DROPPED`.
 * - `close()` is the forced, cascading end (idempotent, never throws); `closeAndWait()` also waits for
 *   quiescence. `[Symbol.dispose]` → `close()`, `[Symbol.asyncDispose]` → `closeAndWait()`.
 * - `read()` resolves `null` only at a clean EOF; anything cut short rejects with `ClosedError`.
 * - Nothing blocks the JS thread.
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
  | 'BCV_INTERNAL';

/** Base class of every error bcv raises. */
export declare class BcvError extends Error {
  constructor(message: string, code?: BcvErrorCode, details?: object);
  readonly code: BcvErrorCode;
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
/** Authentication failed: encrypted input (wrong key, tampered or truncated) or a TLS handshake (untrusted certificate, wrong name). */
export declare class AuthenticationError extends BcvError {}
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
