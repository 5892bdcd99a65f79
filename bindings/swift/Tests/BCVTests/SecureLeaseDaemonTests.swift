// Secure containers (keyring, rotation, key-provider closure, a cipher written in Swift), the single-writer
// lease (VFS and container tools), and the multi-process daemon with a client in a child process, against
// the local-directory store.

import BCV
import Foundation
import XCTest

/// Plaintext that must never appear in the bucket or the cache of a secure container.
let canary = "CANARY-swift-plaintext-5d1e"

/// The files under `root` (recursively) whose bytes contain `needle`.
func filesContaining(_ root: URL, _ needle: String) throws -> [String] {
    let pattern = Data(needle.utf8)
    var found: [String] = []
    guard let walk = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else {
        return found
    }
    for case let url as URL in walk {
        guard try url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile == true else { continue }
        if try Data(contentsOf: url).range(of: pattern) != nil {
            found.append(url.path)
        }
    }
    return found
}

/// A VFS with a unique SQLite name on `dir/cache<n>`, with a small cache; nothing attached.
func bareVfs(_ dir: URL, _ n: Int) throws -> Vfs {
    vfsCounter += 1
    return try Vfs(cacheDirectory: dir.appendingPathComponent("cache\(n)").path, name: "swiftsecure\(vfsCounter)",
                   cacheSize: 32 << 20)
}

/// The case name of a bcv error ("ReadOnly", "DaemonGone"…), or the type of another error.
func errorKind(_ error: any Error) -> String {
    guard let bcv = error as? BcvError else { return "\(type(of: error))" }
    let text = "\(bcv)"
    return String(text.prefix { $0 != "(" })
}

/// Counts calls from many threads.
final class CallCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    private var keys: Set<UInt32> = []

    func hit(_ what: String) {
        lock.withLock { counts[what, default: 0] += 1 }
    }

    func count(_ what: String) -> Int {
        lock.withLock { counts[what, default: 0] }
    }

    func asked(_ keyId: UInt32) {
        lock.withLock { _ = keys.insert(keyId) }
    }

    var askedKeys: Set<UInt32> {
        lock.withLock { keys }
    }
}

/// A toy cipher written in Swift for the tests (not secure!): XOR with a SplitMix64 keystream seeded by the
/// key and a random nonce, and a keyed 16-byte FNV-style tag over the context, nonce and body.
/// Layout: nonce (16) | body | tag (16), i.e. exactly 32 bytes more than the plaintext.
final class ToyCipher: BlockCipher {
    /// How the cipher misbehaves.
    enum Mode: Sendable {
        case correct
        case openThrowsOtherError
        case openReturnsNil
        case sealWrongLength
    }

    struct Broken: Error {}

    let name: String
    let key: UInt64
    let mode: Mode
    let calls: CallCounter

    init(name: String = "toy-xor-mac", key: UInt64, mode: Mode = .correct, calls: CallCounter = CallCounter()) {
        self.name = name
        self.key = key
        self.mode = mode
        self.calls = calls
    }

    private func xorKeystream(_ bytes: inout [UInt8], nonce: [UInt8]) {
        var state = key
        for (i, b) in nonce.enumerated() { state ^= UInt64(b) << (UInt64(i % 8) * 8) &+ UInt64(i) }
        bytes.withUnsafeMutableBufferPointer { buffer in
            var i = 0
            while i < buffer.count {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                var j = 0
                while j < 8 && i + j < buffer.count {
                    buffer[i + j] ^= UInt8(truncatingIfNeeded: z >> (UInt64(j) * 8))
                    j += 1
                }
                i += 8
            }
        }
    }

    private func tag(context: Data, nonce: [UInt8], body: [UInt8]) -> [UInt8] {
        var h1: UInt64 = 0xCBF2_9CE4_8422_2325 ^ key
        var h2: UInt64 = 0x8422_2325_CBF2_9CE4 &+ key
        func feed(_ bytes: UnsafeRawBufferPointer) {
            for b in bytes {
                h1 = (h1 ^ UInt64(b)) &* 0x0000_0100_0000_01B3
                h2 = (h2 ^ UInt64(b) ^ (h1 >> 17)) &* 0x0000_0100_0000_01B3
            }
        }
        let lengths = [UInt64(context.count), UInt64(body.count)]
        lengths.withUnsafeBytes { feed($0) }
        context.withUnsafeBytes { feed($0) }
        nonce.withUnsafeBytes { feed($0) }
        body.withUnsafeBytes { feed($0) }
        return (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? h1 : h2) >> (UInt64(i % 8) * 8)) }
    }

    func seal(context: Data, plaintext: Data) throws -> Data {
        calls.hit("seal")
        if mode == .sealWrongLength { return Data(count: plaintext.count + 5) }
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255) }
        var body = [UInt8](plaintext)
        xorKeystream(&body, nonce: nonce)
        return Data(nonce + body + tag(context: context, nonce: nonce, body: body))
    }

    func open(context: Data, sealed: Data) throws -> Data? {
        calls.hit("open")
        switch mode {
        case .openThrowsOtherError: throw Broken()
        case .openReturnsNil: return nil
        case .correct, .sealWrongLength: break
        }
        let bytes = [UInt8](sealed)
        guard bytes.count >= 32 else { throw CipherError.Authentication }
        let nonce = Array(bytes[0..<16])
        var body = Array(bytes[16..<(bytes.count - 16)])
        guard tag(context: context, nonce: nonce, body: body) == Array(bytes[(bytes.count - 16)...]) else {
            throw CipherError.Authentication
        }
        xorKeystream(&body, nonce: nonce)
        return Data(body)
    }
}

/// Asserts that `body` throws the bcv error case `kind`; returns the error's text.
@discardableResult
func assertBcvError(_ kind: String, _ body: @autoclosure () throws -> some Any,
                    file: StaticString = #filePath, line: UInt = #line) -> String {
    do {
        _ = try body()
        XCTFail("expected \(kind), nothing was thrown", file: file, line: line)
        return ""
    } catch {
        XCTAssertEqual(errorKind(error), kind, "\(error)", file: file, line: line)
        return "\(error)"
    }
}

final class SecureLeaseDaemonTests: XCTestCase {
    /// Writes `rows` rows carrying the canary into `db` and uploads.
    private func writeCanaryRows(_ vfs: Vfs, db name: String = "secret.db", rows: Int = 400) throws {
        let db = try vfs.open("c", name)
        try db.executeBatch(sql: "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body TEXT, pad BLOB)")
        try db.transaction {
            for i in 0..<rows {
                try db.execute("INSERT INTO t(body, pad) VALUES (?, randomblob(200))", "\(canary) \(i)")
            }
        }
        try vfs.upload("c")
    }

    func testSecureContainerWithAKeyring() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        let key = try Keyring.generateKey()
        XCTAssertEqual(key.count, 32)
        XCTAssertThrowsError(try Keyring(keyId: 1, key: Data(count: 31))) { error in
            XCTAssertEqual(errorKind(error), "InvalidArgument")
        }
        let secure = SecureOptions.keyring(try Keyring(keyId: 1, key: key))
        XCTAssertEqual(secure.cipherName(), "aes-256-gcm")
        let tools = try Container(bucket.path, secure: secure)
        try tools.create(blockSize: 65536, nameBytes: nil, overwrite: false)
        XCTAssertTrue(try tools.isSecure())

        let writer = try bareVfs(dir, 0)
        try writer.attach(bucket.path, alias: "c", secure: secure)
        try writeCanaryRows(writer)
        XCTAssertEqual(try filesContaining(bucket, canary), [], "plaintext in the bucket")
        XCTAssertEqual(try filesContaining(dir.appendingPathComponent("cache0"), canary), [],
                       "plaintext in the cache")

        // The same key, given again as a new ring, reads the rows.
        let reader = try bareVfs(dir, 1)
        try reader.attach(bucket.path, alias: "c", secure: .keyring(try Keyring(keyId: 1, key: key)))
        let rdb = try reader.open("c", "secret.db", readOnly: true)
        XCTAssertEqual(try rdb.scalar("SELECT count(*) FROM t WHERE body LIKE ?", "\(canary)%")?.int, 400)

        // A wrong key: the authentication error, naming the marker object.
        let wrong = try bareVfs(dir, 2)
        let message = assertBcvError("Authentication", try wrong.attach(
            bucket.path, alias: "c", secure: .keyring(try Keyring(keyId: 1, key: try Keyring.generateKey()))))
        XCTAssertTrue(message.contains("bcv_secure.json"), message)
        // No key: the secure-container error.
        assertBcvError("Secure", try bareVfs(dir, 3).attach(bucket.path, alias: "c"))
        // A key for a plaintext container is refused too.
        let plain = dir.appendingPathComponent("plain")
        try Container(plain.path).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        assertBcvError("Secure", try bareVfs(dir, 4).attach(plain.path, alias: "p", secure: secure))
    }

    func testKeyRotationAndAKeyProviderClosure() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        let key1 = try Keyring.generateKey()
        let key2 = try Keyring.generateKey()
        let ring = try Keyring(keyId: 1, key: key1)
        try Container(bucket.path, secure: .keyring(ring)).create(blockSize: 65536, nameBytes: nil,
                                                                    overwrite: false)
        let first = try bareVfs(dir, 0)
        try first.attach(bucket.path, alias: "c", secure: .keyring(ring))
        try writeCanaryRows(first, db: "old.db", rows: 100)

        // Rotate: new data is sealed with key 2, key 1 still opens the old blocks.
        try ring.add(keyId: 2, key: key2)
        XCTAssertThrowsError(try ring.rotateTo(keyId: 9))
        try ring.rotateTo(keyId: 2)
        XCTAssertEqual(ring.current(), 2)
        let second = try bareVfs(dir, 1)
        try second.attach(bucket.path, alias: "c", secure: .keyring(ring))
        try writeCanaryRows(second, db: "new.db", rows: 50)
        XCTAssertEqual(try second.open("c", "old.db", readOnly: true).scalar("SELECT count(*) FROM t")?.int, 100)

        // A key-provider closure, asked for each key id it is needed for (from any thread).
        let calls = CallCounter()
        let provider = SecureOptions.keyProvider(currentKeyId: 2) { id in
            calls.asked(id)
            switch id {
            case 1: return key1
            case 2: return key2
            default: return nil
            }
        }
        let reader = try bareVfs(dir, 2)
        try reader.attach(bucket.path, alias: "c", secure: provider)
        XCTAssertEqual(try reader.open("c", "old.db", readOnly: true).scalar("SELECT count(*) FROM t")?.int, 100)
        XCTAssertEqual(try reader.open("c", "new.db", readOnly: true).scalar("SELECT count(*) FROM t")?.int, 50)
        XCTAssertEqual(calls.askedKeys, [1, 2])

        // A provider that does not know key 1 (or throws) cannot open the container.
        let forgetful = SecureOptions.keyProvider(currentKeyId: 2) { id in
            if id == 2 { return key2 }
            throw CipherError.MissingKey(keyId: id)
        }
        let message = assertBcvError("Authentication", try bareVfs(dir, 3).attach(bucket.path, alias: "c",
                                                                                   secure: forgetful))
        XCTAssertTrue(message.contains("bcv_secure.json"), message)
    }

    func testACipherWrittenInSwift() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        let calls = CallCounter()
        let cipher = SecureOptions.cipher(ToyCipher(key: 42, calls: calls))
        XCTAssertEqual(cipher.cipherName(), "toy-xor-mac")
        try Container(bucket.path, secure: cipher).create(blockSize: 65536, nameBytes: nil, overwrite: false)

        // Written through SQL, uploaded by bcv's worker threads (several blocks, sealed in parallel).
        let writer = try bareVfs(dir, 0)
        try writer.attach(bucket.path, alias: "c", secure: cipher)
        try writeCanaryRows(writer, rows: 1500)
        XCTAssertGreaterThan(calls.count("seal"), 10)
        XCTAssertEqual(try filesContaining(bucket, canary), [], "plaintext in the bucket")

        // Read back in another VFS, prefetched by worker threads, then through SQL.
        let reader = try bareVfs(dir, 1)
        try reader.attach(bucket.path, alias: "c", secure: .cipher(ToyCipher(key: 42, calls: calls)))
        let prefetch = try reader.prefetchStart(alias: "c", db: "secret.db")
        let outcome = try await prefetch.result(timeout: .seconds(60))
        XCTAssertGreaterThan(outcome.prefetch?.blocks ?? 0, 2)
        let rdb = try reader.open("c", "secret.db", readOnly: true)
        XCTAssertEqual(try rdb.scalar("SELECT count(*) FROM t WHERE body LIKE ?", "\(canary)%")?.int, 1500)
        XCTAssertGreaterThan(calls.count("open"), 10)

        // Failing opens are the authentication error: a MAC mismatch (wrong key), a nil, any Swift error.
        for (n, bad) in [ToyCipher(key: 43), ToyCipher(key: 42, mode: .openReturnsNil),
                         ToyCipher(key: 42, mode: .openThrowsOtherError)].enumerated() {
            let vfs = try bareVfs(dir, 2 + n)
            let message = assertBcvError("Authentication", try vfs.attach(bucket.path, alias: "c",
                                                                           secure: .cipher(bad)))
            XCTAssertTrue(message.contains("bcv_secure.json"), message)
        }
        // A cipher of another name is refused.
        let renamed = assertBcvError("Authentication", try bareVfs(dir, 5).attach(
            bucket.path, alias: "c", secure: .cipher(ToyCipher(name: "toy-v2", key: 42))))
        XCTAssertTrue(renamed.contains("toy-v2"), renamed)
        // A seal of the wrong length is reported clearly, not trusted.
        let other = dir.appendingPathComponent("other")
        let wrongLength = assertBcvError("Authentication", try Container(
            other.path, secure: .cipher(ToyCipher(key: 1, mode: .sealWrongLength))
        ).create(blockSize: 65536, nameBytes: nil, overwrite: false))
        XCTAssertTrue(wrongLength.contains("expected"), wrongLength)
    }

    func testLeaseOnTheVfsAndTheContainerTools() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        try Container(bucket.path).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        let a = try bareVfs(dir, 0)
        try a.attach(bucket.path, alias: "c")
        let b = try bareVfs(dir, 1)
        try b.attach(bucket.path, alias: "c")
        XCTAssertNil(try a.leaseStatus("c"))

        let before = Date()
        let lease = try a.leaseObtain("c", holder: "swift-a", duration: .seconds(60))
        XCTAssertEqual(lease.holder, "swift-a")
        XCTAssertEqual(lease.token.count, 32)
        XCTAssertGreaterThanOrEqual(lease.generation, 1)
        XCTAssertFalse(lease.isExpired)
        XCTAssertGreaterThan(lease.expiresIn ?? .zero, .seconds(50))
        XCTAssertEqual(lease.expires.timeIntervalSince(lease.acquired), 60, accuracy: 0.01)
        XCTAssertEqual(lease.acquired.timeIntervalSince(before), 0, accuracy: 5)
        XCTAssertTrue(lease.expiresUtc.hasSuffix("Z"), lease.expiresUtc)
        XCTAssertEqual(try a.leaseHeld("c")?.token, lease.token)
        XCTAssertEqual(try b.leaseStatus("c")?.holder, "swift-a")
        XCTAssertNil(try b.leaseHeld("c"))

        // Another client can neither obtain it nor upload; the holder uploads.
        do {
            try b.leaseObtain("c", holder: "swift-b", duration: .seconds(60))
            XCTFail("obtained a held lease")
        } catch let error as BcvError {
            XCTAssertEqual(error.leaseHolder, "swift-a", "\(error)")
        }
        try b.open("c", "b.db").executeBatch(sql: "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        let refused = assertBcvError("LeaseHeld", try b.upload("c"))
        XCTAssertTrue(refused.contains("swift-a"), refused)
        try a.open("c", "a.db").executeBatch(sql: "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        XCTAssertEqual(try a.upload("c").databases.map(\.name), ["a.db"])
        XCTAssertGreaterThan(try a.leaseExtend("c", duration: .seconds(90)).expiresUnixMs, lease.expiresUnixMs)

        // Released: the other client obtains it and its upload goes through.
        try a.leaseRelease("c")
        XCTAssertNil(try a.leaseHeld("c"))
        assertBcvError("LeaseLost", try a.leaseRelease("c"))
        let bLease = try b.leaseObtain("c", holder: "swift-b", duration: .seconds(60))
        XCTAssertGreaterThan(bLease.generation, lease.generation)
        XCTAssertEqual(try b.upload("c").databases.map(\.name), ["b.db"])

        // The container tools: status, refusal, and extend / release of b's holding by its token.
        let tools = try Container(bucket.path)
        XCTAssertEqual(try tools.leaseStatus()?.holder, "swift-b")
        assertBcvError("LeaseHeld", try tools.leaseObtain(holder: "swift-tools", duration: .seconds(60)))
        let extended = try tools.leaseExtend(duration: .seconds(120), token: bLease.token)
        XCTAssertEqual(extended.token, bLease.token)
        XCTAssertGreaterThan(extended.expiresUnixMs, bLease.expiresUnixMs)
        try tools.leaseRelease(token: bLease.token)
        XCTAssertNil(try tools.leaseStatus())
        assertBcvError("LeaseLost", try b.leaseExtend("c", duration: .seconds(60)))

        // The tools obtain it; the VFS adopts that holding by token and uploads under it.
        let toolsLease = try tools.leaseObtain(holder: "swift-tools", duration: .seconds(60))
        XCTAssertEqual(try tools.leaseHeld()?.token, toolsLease.token)
        XCTAssertEqual(try a.leaseAdopt("c", token: toolsLease.token).holder, "swift-tools")
        try a.open("c", "a.db").execute("INSERT INTO t VALUES (2)")
        XCTAssertEqual(try a.upload("c").databases.map(\.name), ["a.db"])
        try a.leaseRelease("c")
        XCTAssertNil(try tools.leaseStatus())
    }

    /// The daemon's client process: a test that does nothing unless `testDaemonServesAClientProcess`
    /// started this test binary with `BCV_SWIFT_DAEMON_DIR` set (it then is the child's whole body).
    /// Two roles: run by testDaemonServesAClientProcess in a child process, it is the daemon's client; run
    /// in the normal suite, it checks the other side: with no daemon on its directory, a VFS is not a client
    /// and writes and uploads as usual.
    func testDaemonClientChild() throws {
        let env = ProcessInfo.processInfo.environment
        guard let dir = env["BCV_SWIFT_DAEMON_DIR"], let url = env["BCV_SWIFT_DAEMON_URL"],
              let signals = env["BCV_SWIFT_DAEMON_SIGNALS"].map(URL.init(fileURLWithPath:)) else {
            try checkNoDaemonMeansAWritableVfs()
            return
        }
        var results = ["pid=\(ProcessInfo.processInfo.processIdentifier)"]
        let vfs = try Vfs(cacheDirectory: dir, name: "swiftdaemonchild")
        results.append("daemonClient=\(vfs.isDaemonClient())")
        try vfs.attach(url, alias: "c")
        let db = try vfs.open(path: vfs.path(alias: "c", db: "db.db"), readOnly: false, create: false)
        results.append("rows=\(try db.scalar("SELECT count(*) FROM t")?.int ?? -1)")
        do {
            try db.execute("INSERT INTO t(v) VALUES ('child')")
            results.append("sqlWrite=accepted")
        } catch let BcvError.Sqlite(code, message) {
            let readOnly = code & 0xff == 8 || message.lowercased().contains("readonly")
            results.append("sqlWrite=\(readOnly ? "readonly" : "sqlite error \(code): \(message)")")
        }
        do {
            try vfs.upload("c")
            results.append("upload=accepted")
        } catch {
            results.append("upload=\(errorKind(error))")
        }
        try Data(results.joined(separator: "\n").utf8).write(to: signals.appendingPathComponent("ready"),
                                                             options: .atomic)
        // Wait for the parent to stop the daemon.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: signals.appendingPathComponent("stopped").path) {
            XCTAssertLessThan(Date(), deadline, "the parent never stopped the daemon")
            if Date() > deadline { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        for _ in 0..<2 {
            do {
                try vfs.poll("c")
                results.append("afterStop=accepted")
            } catch {
                results.append("afterStop=\(errorKind(error))")
            }
        }
        try Data(results.joined(separator: "\n").utf8).write(to: signals.appendingPathComponent("done"),
                                                             options: .atomic)
    }

    private func checkNoDaemonMeansAWritableVfs() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        try Container(bucket.path).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        let vfs = try bareVfs(dir, 0)
        XCTAssertFalse(vfs.isDaemonClient())
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("cache0/daemon.sock").path))
        try vfs.attach(bucket.path, alias: "c")
        let db = try vfs.open("c", "db.db")
        try db.executeBatch(sql: "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('written');")
        try vfs.upload("c")
        XCTAssertEqual(try Container(bucket.path).list().map(\.name), ["db.db"])
    }

    func testDaemonServesAClientProcess() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        try Container(bucket.path).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        let writer = try bareVfs(dir, 0)
        try writer.attach(bucket.path, alias: "c")
        let wdb = try writer.open("c", "db.db")
        try wdb.executeBatch(sql: """
            CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO t(v) SELECT printf('row %08d', i) FROM n;
            """)
        try writer.upload("c")

        let shared = dir.appendingPathComponent("shared")
        let daemon = try Daemon.start(cacheDirectory: shared.path, cacheSize: 64 << 20)
        XCTAssertTrue(daemon.isRunning())
        XCTAssertEqual(daemon.socketPath(), shared.appendingPathComponent("daemon.sock").path)
        XCTAssertEqual(try daemon.stats().clients, 0)

        // This test binary again, running only testDaemonClientChild, in the client role.
        let signals = dir.appendingPathComponent("signals")
        try FileManager.default.createDirectory(at: signals, withIntermediateDirectories: true)
        let log = dir.appendingPathComponent("child.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(
            atPath: "/proc/self/exe"))
        child.arguments = ["BCVTests.SecureLeaseDaemonTests/testDaemonClientChild"]
        var environment = ProcessInfo.processInfo.environment
        environment["BCV_SWIFT_DAEMON_DIR"] = shared.path
        environment["BCV_SWIFT_DAEMON_URL"] = bucket.path
        environment["BCV_SWIFT_DAEMON_SIGNALS"] = signals.path
        child.environment = environment
        let output = try FileHandle(forWritingTo: log)
        child.standardOutput = output
        child.standardError = output
        try child.run()
        func childLog() -> String {
            String(decoding: (try? Data(contentsOf: log)) ?? Data(), as: UTF8.self)
        }
        func waitFor(_ name: String) -> String? {
            let file = signals.appendingPathComponent(name)
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline {
                if let data = try? Data(contentsOf: file) { return String(decoding: data, as: UTF8.self) }
                if !child.isRunning && !FileManager.default.fileExists(atPath: file.path) { return nil }
                Thread.sleep(forTimeInterval: 0.02)
            }
            return nil
        }
        defer { if child.isRunning { child.terminate() } }

        guard let ready = waitFor("ready") else {
            return XCTFail("the child did not get ready; its output:\n\(childLog())")
        }
        let stats = try daemon.stats()
        XCTAssertEqual(stats.clients, 1, "\(stats)")
        XCTAssertGreaterThanOrEqual(stats.clientsTotal, 1)
        XCTAssertGreaterThan(stats.cache.bytesFetched, 0, "the daemon fetched the child's blocks")
        XCTAssertGreaterThan(stats.usage.capacity, 0)

        daemon.stop()
        daemon.stop()
        XCTAssertFalse(daemon.isRunning())
        assertBcvError("Closed", try daemon.stats())
        _ = FileManager.default.createFile(atPath: signals.appendingPathComponent("stopped").path, contents: nil)
        guard let done = waitFor("done") else {
            return XCTFail("the child did not finish; its output:\n\(childLog())")
        }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0, "the child failed; its output:\n\(childLog())")
        let lines = done.split(separator: "\n").map(String.init)
        XCTAssertNotEqual(child.processIdentifier, ProcessInfo.processInfo.processIdentifier)
        XCTAssertEqual(lines, [
            "pid=\(child.processIdentifier)",
            "daemonClient=true",
            "rows=300",
            "sqlWrite=readonly",
            "upload=ReadOnly",
            "afterStop=DaemonGone",
            "afterStop=DaemonGone",
        ], "ready: \(ready)")

        // The directory is free again after stop(); releasing a running daemon (deinit) stops it as well.
        do {
            let again = try Daemon.start(cacheDirectory: shared.path)
            XCTAssertTrue(again.isRunning())
        }
        let third = try Daemon.start(cacheDirectory: shared.path)
        XCTAssertTrue(third.isRunning())
        third.stop()
    }
}
