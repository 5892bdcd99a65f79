// The LIFETIMES.md §7 scenarios tagged Sw (T10, T20, T37), the pipe-ending rules (T07/T08), W2/W3 of
// §4.5, the transformer round trips and the "live nodes reach 0" oracle, against the real Rust core.
//
// Handles are created inside helper functions or `do {}` blocks so that they are released (Swift
// `deinit`) before the live-node count is checked: debug builds keep locals alive to the end of scope.

import BCV
import Foundation
import XCTest

/// A thread-safe box for values shared between a test and the tasks or queues it starts.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withValue<R>(_ body: (inout Value) -> R) -> R {
        lock.withLock { body(&value) }
    }

    var current: Value {
        lock.withLock { value }
    }
}

/// An object whose deallocation the W3 test watches.
final class Canary: Sendable {}

func payload(_ n: Int) -> Data {
    var rng = SystemRandomNumberGenerator()
    return Data((0..<n).map { _ in UInt8.random(in: 0..<16, using: &rng) })
}

let key = Data(repeating: 7, count: 32)

final class LifetimesTests: XCTestCase {
    /// The oracle of §7: once every handle of the test is released, the live-node count reaches 0.
    private func assertLiveNodesReachZero(file: StaticString = #filePath, line: UInt = #line) {
        let live = waitIdle(timeoutMs: 5_000)
        XCTAssertEqual(live, 0, "live nodes left: \(diagnostics())", file: file, line: line)
    }

    private func newPipe(capacity: UInt32 = 1024) throws -> (WriteStream, ReadStream) {
        let ends = try pipe(capacity: capacity)
        return (ends.writer, ends.reader)
    }

    private func assertClosed(
        _ error: Error?, _ reason: CloseReason, file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let error else {
            return XCTFail("expected Closed(\(reason)), got no error", file: file, line: line)
        }
        guard let bcv = error as? BcvError, let got = bcv.closedReason else {
            return XCTFail("expected Closed(\(reason)), got \(error)", file: file, line: line)
        }
        XCTAssertEqual(got, reason, file: file, line: line)
    }

    // MARK: T10

    /// T10: a thread blocked in `read` on B; another thread calls `B.close()`: the read returns
    /// `Closed(SELF)` within 100 ms and the blocked thread can release B without error.
    func testT10CloseFromAnotherThreadWakesABlockedRead() throws {
        do {
            let (writer, reader) = try newPipe(capacity: 16)
            let outcome = Locked<Result<Data?, Error>?>(nil)
            let done = DispatchSemaphore(value: 0)
            let holder = Locked<ReadStream?>(reader)
            Thread.detachNewThread {
                let stream = holder.current!
                let result = Result { try stream.readBlocking(max: 8) }
                outcome.withValue { $0 = result }
                // The blocked thread releases its reference to B; that must be fine.
                holder.withValue { $0 = nil }
                done.signal()
            }
            Thread.sleep(forTimeInterval: 0.05)
            let start = ContinuousClock.now
            reader.close()
            XCTAssertEqual(done.wait(timeout: .now() + 1), .success, "the blocked read did not return")
            XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(100))
            guard case let .failure(error)? = outcome.current else {
                return XCTFail("the read must fail with Closed(SELF), got \(String(describing: outcome.current))")
            }
            assertClosed(error, .selfClosed)
            XCTAssertNil(holder.current)
            // The writer learns that its reader is gone.
            XCTAssertThrowsError(try writer.writeBlocking(data: Data("x".utf8), timeoutMs: 1_000)) {
                assertClosed($0, .peerDropped)
            }
        }
        assertLiveNodesReachZero()
    }

    /// T10, async form: a task suspended in `read(upTo:)` is woken by `close()` from another thread.
    func testT10CloseWakesAnAsyncRead() async throws {
        try await {
            // The writer stays alive (and unfinished) until the read returned: it must be the close that
            // ends the read, not the writer's release (that would be PEER_DROPPED).
            let (writer, reader) = try newPipe(capacity: 16)
            let task = Task { try await reader.read(upTo: 8) }
            try await Task.sleep(for: .milliseconds(50))
            DispatchQueue.global().async { reader.close() }
            let result = await task.result
            XCTAssertTrue(writer.isPeerGone(), "the writer sees its reader gone")
            guard case let .failure(error) = result else {
                return XCTFail("expected Closed(SELF), got \(result)")
            }
            assertClosed(error, .selfClosed)
            try await reader.close(timeout: .seconds(2))
            XCTAssertEqual(reader.state(), .closed)
        }()
        assertLiveNodesReachZero()
    }

    // MARK: T20

    /// T20: the last reference to parent P (a gzip transformer) is released on a background queue while a
    /// Task iterates its output SR: iteration goes on; cancelling the Task later gives
    /// `CancellationError` without closing SR, which then still reads to EOF.
    func testT20ParentReleasedOnBackgroundQueueWhileATaskIterates() async throws {
        let input = payload(300_000)
        try await {
            let (writer, source) = try newPipe(capacity: 64 * 1024)
            let gz = try gzipCompress(input: source, level: 6)
            XCTAssertEqual(source.state(), .closed, "the input was consumed by the transformer")
            let output = gz.stream
            let parent = Locked<Resource?>(gz.resource)
            let collected = Locked(Data())
            let firstChunk = DispatchSemaphore(value: 0)

            let iterating = Task {
                for try await chunk in output.chunks(size: 4096) {
                    let first = collected.withValue { data in
                        defer { data.append(chunk) }
                        return data.isEmpty
                    }
                    if first { firstChunk.signal() }
                }
            }

            // Enough input for the compressor to emit output, then release P off the test's thread.
            try await writer.write(data: input.prefix(200_000))
            let released = DispatchSemaphore(value: 0)
            DispatchQueue.global(qos: .background).async {
                parent.withValue { $0 = nil }
                released.signal()
            }
            XCTAssertEqual(released.wait(timeout: .now() + 5), .success)
            try reaperFlush()
            XCTAssertEqual(firstChunk.wait(timeout: .now() + 5), .success, "iteration produced nothing")

            // The Task is now waiting for more output; cancelling it must not close SR.
            try await Task.sleep(for: .milliseconds(50))
            iterating.cancel()
            let result = await iterating.result
            guard case let .failure(error) = result else {
                return XCTFail("the cancelled iteration must throw CancellationError, got \(result)")
            }
            XCTAssertTrue(error is CancellationError, "got \(error)")
            XCTAssertEqual(output.state(), .open)
            XCTAssertNil(output.closeReason())

            // SR still works: the rest of the input goes through and SR reads to a clean EOF.
            try await writer.write(data: input.suffix(from: 200_000))
            try writer.finish()
            let rest = try await output.readAll()
            let compressed = collected.current + rest
            let gunzip = try gzipDecompress(input: streamFromBytes(data: compressed))
            let roundTrip = try await gunzip.stream.readAll()
            XCTAssertEqual(roundTrip, input)
        }()
        assertLiveNodesReachZero()
    }

    // MARK: T37

    /// T37: a scope creates R (a file resource), B (its stream) and T (a future); B and T are handed out
    /// of the scope: on exit they end with `Closed(SCOPE_EXITED)`. A stream detached before the exit
    /// keeps reading to EOF. (A detached *file* stream is not used here: the file's internal pump end is
    /// adopted by the scope too and cannot be detached, see the Swift report's core gaps.)
    func testT37ScopeClosesWhatItCreatedUnlessDetached() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bcv-t37-\(UUID()).txt").path
        try Data("file content".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let handedOut = try withScope { scope in
                let file = try readFile(path: path)
                let future = try futurePair()
                let kept = try streamFromBytes(data: Data("kept".utf8))
                kept.detachFromScope()
                XCTAssertGreaterThan(scope.ownedCount(), 0)
                return (file, future, kept)
            }
            let (file, future, kept) = handedOut

            XCTAssertThrowsError(try file.stream.readBlocking(max: 64, timeoutMs: 5_000)) {
                assertClosed($0, .scopeExited)
            }
            XCTAssertEqual(file.resource.closeReason()?.reason, .scopeExited)
            XCTAssertThrowsError(try future.reader.waitBlocking(timeoutMs: 5_000)) {
                assertClosed($0, .scopeExited)
            }

            XCTAssertEqual(try kept.readBlocking(max: 64, timeoutMs: 5_000), Data("kept".utf8))
            XCTAssertNil(try kept.readBlocking(max: 64, timeoutMs: 5_000), "clean EOF")
        }
        assertLiveNodesReachZero()
    }

    // MARK: Pipe endings (T07, T08)

    /// T08: `finish()` then release: the reader gets every byte, then a clean EOF (`nil`).
    func testPipeFinishGivesCleanEOF() async throws {
        try await {
            var (writer, reader): (WriteStream?, ReadStream) = try newPipe(capacity: 8)
            let reading = Task { () -> Data in
                var got = Data()
                while let chunk = try await reader.read(upTo: 3) { got.append(chunk) }
                return got
            }
            try await writer!.write(data: Data("hello, world".utf8))
            try writer!.finish()
            writer = nil
            let got = try await reading.value
            XCTAssertEqual(String(decoding: got, as: UTF8.self), "hello, world")
            let again = try await reader.read(upTo: 3)
            XCTAssertNil(again, "EOF stays EOF")
        }()
        assertLiveNodesReachZero()
    }

    /// T07: the writer is released without `finish()`: the reader drains what was buffered, then gets
    /// `Closed(PEER_DROPPED)`, never EOF.
    func testPipeWriterDroppedGivesPeerDropped() async throws {
        try await {
            var (writer, reader): (WriteStream?, ReadStream) = try newPipe(capacity: 1024)
            try await writer!.write(data: Data("hello".utf8))
            writer = nil
            let first = try await reader.read(upTo: 1024)
            XCTAssertEqual(first, Data("hello".utf8))
            do {
                let more = try await reader.read(upTo: 1024)
                XCTFail("a truncated stream must not end cleanly, got \(String(describing: more))")
            } catch {
                assertClosed(error, .peerDropped)
            }
        }()
        assertLiveNodesReachZero()
    }

    /// A future whose writer is released without a value resolves `Closed(PEER_DROPPED)` (T28); a
    /// written value arrives.
    func testFutureValueAndWriterDropped() async throws {
        try await {
            let delivered = try futurePair()
            try delivered.writer.write(value: Data([1, 2, 3]))
            let value = try await delivered.reader.value()
            XCTAssertEqual(value, Data([1, 2, 3]))

            var dropped: FuturePair? = try futurePair()
            let reader = dropped!.reader
            dropped = nil
            do {
                _ = try await reader.value()
                XCTFail("the reader must fail when the writer is gone")
            } catch {
                assertClosed(error, .peerDropped)
            }
        }()
        assertLiveNodesReachZero()
    }

    // MARK: W2, W3

    /// W2: leaving a `for try await` loop early closes the stream; with `keepOpenOnBreak` it stays open
    /// and keeps its remaining bytes.
    func testBreakClosesTheStreamUnlessKeepOpenOnBreak() async throws {
        try await {
            let closing = try streamFromBytes(data: Data("abcdefgh".utf8))
            for try await chunk in closing.chunks(size: 2) {
                XCTAssertEqual(chunk, Data("ab".utf8))
                break
            }
            XCTAssertEqual(closing.closeReason()?.reason, .selfClosed)
            do {
                _ = try await closing.read(upTo: 2)
                XCTFail("a closed stream must not be readable")
            } catch {
                assertClosed(error, .selfClosed)
            }

            let kept = try streamFromBytes(data: Data("abcdefgh".utf8))
            for try await chunk in kept.chunks(size: 2, keepOpenOnBreak: true) {
                XCTAssertEqual(chunk, Data("ab".utf8))
                break
            }
            XCTAssertNil(kept.closeReason())
            let rest = try await kept.readAll()
            XCTAssertEqual(rest, Data("cdefgh".utf8))

            // A loop that runs to EOF leaves nothing to close and sees every byte.
            var all = Data()
            for try await chunk in try streamFromBytes(data: Data("xyz".utf8)).chunks(size: 1) { all.append(chunk) }
            XCTAssertEqual(all, Data("xyz".utf8))
        }()
        assertLiveNodesReachZero()
    }

    /// W3 / O4: the closure given to `onData` receives every chunk then `.end`, and the SDK lets go of it
    /// (and of what it captured) once the stream ended.
    func testOnDataDeliversEverythingThenReleasesTheHandler() throws {
        weak var watched: Canary?
        let events = Locked<[StreamEvent]>([])
        let ended = DispatchSemaphore(value: 0)
        do {
            let (writer, reader) = try newPipe(capacity: 64)
            let canary = Canary()
            watched = canary
            try reader.onData { event in
                _ = canary
                events.withValue { $0.append(event) }
                switch event {
                case .end, .failed: ended.signal()
                case .data: break
                }
            }
            try writer.writeBlocking(data: Data("one,".utf8))
            try writer.writeBlocking(data: Data("two".utf8))
            try writer.finish()
            XCTAssertEqual(ended.wait(timeout: .now() + 5), .success, "no final event")
        }
        var bytes = Data()
        var ends = 0
        for event in events.current {
            switch event {
            case let .data(chunk): bytes.append(chunk)
            case .end: ends += 1
            case let .failed(error): XCTFail("unexpected failure: \(error)")
            }
        }
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "one,two")
        XCTAssertEqual(ends, 1)
        assertLiveNodesReachZero()
        let deadline = Date().addingTimeInterval(2)
        while watched != nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertNil(watched, "the SDK still holds the onData closure after the stream ended")
    }

    // MARK: Transformers

    /// Gzip round trip through two transformers.
    func testGzipRoundTrip() async throws {
        let input = payload(150_000)
        try await {
            let compressed = try gzipCompress(input: streamFromBytes(data: input), level: 9)
            let packed = try await compressed.stream.readAll()
            XCTAssertLessThan(packed.count, input.count)
            XCTAssertEqual(Array(packed.prefix(2)), [0x1f, 0x8b], "gzip magic")
            let restored = try gzipDecompress(input: streamFromBytes(data: packed))
            let output = try await restored.stream.readAll()
            XCTAssertEqual(output, input)
        }()
        assertLiveNodesReachZero()
    }

    /// AES-256-GCM round trip over several 64 KiB chunks, chained directly (encrypt → decrypt).
    func testAesGcmRoundTrip() async throws {
        let input = payload(200_000)
        try await {
            let sealed = try aeadEncrypt(input: streamFromBytes(data: input), key: key)
            let opened = try aeadDecrypt(input: sealed.stream, key: key)
            let output = try await opened.stream.readAll()
            XCTAssertEqual(output, input)
        }()
        assertLiveNodesReachZero()
    }

    /// A wrong key ends the decrypted stream with `Authentication`, never with EOF or plaintext; a bad
    /// key length is `InvalidArgument`.
    func testWrongKeyIsAnAuthenticationError() async throws {
        try await {
            let sealed = try aeadEncrypt(input: streamFromBytes(data: payload(1000)), key: key)
            let opened = try aeadDecrypt(input: sealed.stream, key: Data(repeating: 8, count: 32))
            do {
                let plain = try await opened.stream.readAll()
                XCTFail("decryption with a wrong key must fail, got \(plain.count) bytes")
            } catch BcvError.Authentication {
            } catch {
                XCTFail("expected BcvError.Authentication, got \(error)")
            }
            XCTAssertThrowsError(try aeadEncrypt(input: streamFromBytes(data: Data()), key: Data(count: 5))) {
                guard case BcvError.InvalidArgument = $0 else { return XCTFail("got \($0)") }
            }
        }()
        assertLiveNodesReachZero()
    }

    // MARK: TCP and the live-node oracle

    /// TCP: connect, accept, send with `finish()` (FIN), receive to a clean EOF; then everything released.
    func testTcpRoundTrip() async throws {
        try await {
            let listener = try tcpListen(addr: "127.0.0.1:0")
            async let accepted = listener.accept()
            let client = try await tcpConnect(addr: listener.localAddr())
            let server = try await accepted
            XCTAssertEqual(server.peerAddr(), client.localAddr())
            let send = try client.takeSend()
            XCTAssertThrowsError(try client.takeSend()) {
                guard case BcvError.AlreadyTaken = $0 else { return XCTFail("got \($0)") }
            }
            try await send.write(data: Data("ping".utf8))
            try send.finish()
            let received = try await server.takeReceive().readAll()
            XCTAssertEqual(received, Data("ping".utf8))
            try await listener.close(timeout: .seconds(5))
            XCTAssertEqual(listener.state(), .closed)
        }()
        assertLiveNodesReachZero()
    }

    /// Live nodes: many objects of every kind, released in an arbitrary order from several threads, all
    /// reach 0; the counter really moves (it is not stuck at 0).
    func testLiveNodesReachZeroAfterReleasesOnManyThreads() throws {
        XCTAssertEqual(waitIdle(timeoutMs: 5_000), 0)
        let before = diagnostics().createdNodes
        let bag = Locked<[AnyObject]>([])
        for i in 0..<50 {
            let ends = try pipe(capacity: 64)
            let gz = try gzipCompress(input: try streamFromBytes(data: payload(100 + i)), level: 1)
            let future = try futurePair()
            bag.withValue { $0 += [ends.writer, ends.reader, gz.resource, gz.stream, future.writer, future.reader] }
        }
        XCTAssertGreaterThan(diagnostics().liveNodes, 0)
        XCTAssertGreaterThanOrEqual(diagnostics().createdNodes - before, 300)
        let group = DispatchGroup()
        for _ in 0..<4 {
            DispatchQueue.global().async(group: group) {
                while let object = bag.withValue({ $0.popLast() }) {
                    _ = object
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        assertLiveNodesReachZero()
        XCTAssertEqual(diagnostics().liveNodes, 0)
    }
}
