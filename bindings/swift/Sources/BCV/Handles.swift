// The idiomatic Swift layer over the UniFFI-generated bcv types (LIFETIMES.md §4.5, W1–W3).
//
// Ownership (W1): every bcv object is a Swift class holding one reference to a Rust node; `deinit` gives
// it up in O(1) on whatever thread or actor runs it, and never blocks. A child keeps alive what it needs
// from its parent, so objects may be released in any order. `close()` is the explicit, forced end.

@_exported import BcvUniffi
import Foundation

/// What every bcv object can do besides its own methods: be closed, waited on, inspected, detached.
///
/// All generated object classes conform. Errors are `BcvError`.
public protocol BcvHandle: AnyObject, Sendable {
    /// Forced, cascading close with reason `selfClosed`; idempotent, returns at once, never blocks.
    func close()
    /// Closes, then waits up to `timeoutMs` for quiescence (in-flight operations returned, OS resources
    /// freed). Throws `BcvError.Timeout` or `BcvError.WouldDeadlock`.
    func closeAndWait(timeoutMs: UInt64) async throws
    /// The current lifecycle state.
    func state() -> NodeState
    /// Why the node was closed; `nil` while it is open.
    func closeReason() -> ClosedInfo?
    /// Lets the node outlive the scope it was created in.
    func detachFromScope()
}

extension ReadStream: BcvHandle {}
extension WriteStream: BcvHandle {}
extension Resource: BcvHandle {}
extension FileDone: BcvHandle {}
extension FutureReader: BcvHandle {}
extension FutureWriter: BcvHandle {}
extension TcpListener: BcvHandle {}
extension TcpSocket: BcvHandle {}

extension BcvHandle {
    /// Closes the node and waits up to `timeout` for quiescence (W2 `close(timeout:)`).
    /// - Throws: `BcvError.Timeout` when it did not quiesce in time (it is closed anyway);
    ///   `BcvError.WouldDeadlock`.
    public func close(timeout: Duration) async throws {
        try await closeAndWait(timeoutMs: timeout.bcvMilliseconds)
    }

    /// True once the node is closing or closed.
    public var isClosed: Bool {
        closeReason() != nil
    }
}

extension Duration {
    /// Whole milliseconds, rounded up so that a positive duration never becomes 0; negatives give 0.
    var bcvMilliseconds: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 { return 0 }
        let ms = UInt64(seconds) * 1000 + UInt64((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        return ms
    }
}

extension BcvError {
    /// The close reason when this is `Closed`, else `nil`.
    public var closedReason: CloseReason? {
        if case let .Closed(reason, _) = self { return reason }
        return nil
    }
}

/// Runs `body` with a fresh `CancelToken` that is cancelled when the current task is cancelled, and turns
/// the resulting `BcvError.Cancelled` into `CancellationError`. The cancellation closure holds the token
/// weakly (W3): it is stored by the Swift runtime and must not keep anything of the SDK alive.
func withCancelToken<T: Sendable>(_ body: (CancelToken) async throws -> T) async throws -> T {
    let token = CancelToken()
    do {
        return try await withTaskCancellationHandler {
            try await body(token)
        } onCancel: { [weak token] in
            token?.cancel()
        }
    } catch BcvError.Cancelled {
        throw CancellationError()
    }
}

extension ReadStream {
    /// Reads the next chunk of at most `max` bytes, waiting until some are available; `nil` only at a
    /// clean EOF.
    ///
    /// Cancelling the calling task cancels this read: it throws `CancellationError`, nothing is lost, and
    /// the stream stays open (W2).
    /// - Throws: `BcvError.Closed` when the data was cut short or the stream was closed (never shown as
    ///   EOF), `BcvError.Busy` when another read is in progress, `CancellationError`.
    public func read(upTo max: Int = 64 * 1024) async throws -> Data? {
        let max = UInt32(clamping: Swift.max(max, 1))
        return try await withCancelToken { token in
            try await self.read(max: max, cancel: token)
        }
    }

    /// Reads everything up to a clean EOF. Cancelling the task throws `CancellationError` and leaves the
    /// stream open (what this call had read is dropped).
    /// - Throws: as `read(upTo:)`, plus `BcvError.Authentication`/`Corrupt` from a transformer.
    public func readAll() async throws -> Data {
        try await withCancelToken { token in
            try await self.readToEnd(cancel: token)
        }
    }

    /// The stream as an `AsyncSequence` of chunks of at most `size` bytes, ending at a clean EOF.
    ///
    /// * Cancelling the iterating task ends the loop with `CancellationError`; the stream stays open.
    /// * Leaving the loop early (`break`, `return`, or a throw from the loop body) closes the stream,
    ///   unless `keepOpenOnBreak` is true (W2).
    /// * A stream that ends with an error throws it from the loop (`BcvError.Closed`, …).
    public func chunks(size: Int = 64 * 1024, keepOpenOnBreak: Bool = false) -> ReadStreamChunks {
        ReadStreamChunks(stream: self, size: size, keepOpenOnBreak: keepOpenOnBreak)
    }

    /// Delivers the stream to `handler` chunk by chunk on an SDK thread until EOF (`.end`) or an error
    /// (`.failed`), each the last event. The SDK keeps `handler` only until then, and holds the stream by
    /// an internal reference only: releasing every reference to it (or `close()`) stops the delivery.
    /// `handler` should capture what it needs weakly (W3), must not block, and may close or release the
    /// stream. - Throws: `BcvError.Busy` if a read is in progress; `BcvError.Closed`.
    public func onData(_ handler: @escaping @Sendable (StreamEvent) -> Void) throws {
        try onData(handler: ClosureStreamHandler(handler))
    }
}

/// Adapts a closure to the generated `StreamHandler` protocol; owned by the SDK until the last event.
final class ClosureStreamHandler: StreamHandler {
    private let body: @Sendable (StreamEvent) -> Void

    init(_ body: @escaping @Sendable (StreamEvent) -> Void) {
        self.body = body
    }

    func onEvent(event: StreamEvent) {
        body(event)
    }
}

/// The chunks of a `ReadStream` as an `AsyncSequence` (see `ReadStream.chunks(size:keepOpenOnBreak:)`).
public struct ReadStreamChunks: AsyncSequence, Sendable {
    public typealias Element = Data

    let stream: ReadStream
    let size: Int
    let keepOpenOnBreak: Bool

    public func makeAsyncIterator() -> Iterator {
        Iterator(stream: stream, size: size, keepOpenOnBreak: keepOpenOnBreak)
    }

    /// Reads one chunk per `next()`. When it is released before the sequence ended (the loop was left
    /// early) it closes the stream, unless `keepOpenOnBreak`; a cancelled iteration never closes it.
    public final class Iterator: AsyncIteratorProtocol, @unchecked Sendable {
        private let stream: ReadStream
        private let size: Int
        private let keepOpenOnBreak: Bool
        private let lock = NSLock()
        /// True once the sequence ended: EOF, an error, or a cancellation (all leave the stream as is).
        private var ended = false

        init(stream: ReadStream, size: Int, keepOpenOnBreak: Bool) {
            self.stream = stream
            self.size = size
            self.keepOpenOnBreak = keepOpenOnBreak
        }

        private var isEnded: Bool {
            get { lock.withLock { ended } }
            set { lock.withLock { ended = newValue } }
        }

        /// The next chunk; `nil` at a clean EOF and after the sequence ended.
        /// - Throws: `CancellationError` when the task was cancelled (the stream stays open); the
        ///   stream's error otherwise.
        public func next() async throws -> Data? {
            if isEnded { return nil }
            do {
                let chunk = try await stream.read(upTo: size)
                if chunk == nil { isEnded = true }
                return chunk
            } catch {
                isEnded = true
                throw error
            }
        }

        deinit {
            if !ended && !keepOpenOnBreak {
                stream.close()
            }
        }
    }
}

extension FutureReader {
    /// Waits for the value. Cancelling the calling task throws `CancellationError`; the future stays
    /// open. - Throws: `BcvError.Closed` when the writer went away or an end was closed.
    public func value() async throws -> Data {
        try await withCancelToken { token in
            try await self.wait(cancel: token)
        }
    }
}

extension FileDone {
    /// The byte count once the file is complete and synced. Cancelling the task throws
    /// `CancellationError`. - Throws: `BcvError.Io` when the file was left partial.
    public func value() async throws -> UInt64 {
        try await withCancelToken { token in
            try await self.wait(cancel: token)
        }
    }
}

/// Runs `body` inside a new ownership scope (LIFETIMES.md §4.6): every bcv object created synchronously
/// on this thread inside `body` and not detached with `detachFromScope()` is closed with
/// `scopeExited` when `body` returns or throws. Objects may still be handed out of the scope: they then
/// report `Closed(scopeExited)`.
///
/// `body` is synchronous on purpose: scopes are per thread, and an `await` could resume on another one.
/// Objects produced by async calls (`tcpConnect`, `accept`) are not adopted.
@discardableResult
public func withScope<R>(_ body: (Scope) throws -> R) rethrows -> R {
    let scope = Scope()
    defer { scope.close() }
    return try body(scope)
}
