// The block-cache VFS from Swift: containers without a cache, a VFS with two clients (write, upload, poll),
// conflicts, bcv_kv, status tables, background jobs, and closing or releasing in any order.

import BCV
import Foundation
import XCTest

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bcv-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

nonisolated(unsafe) var vfsCounter = 0

/// A VFS with a unique SQLite name (SQLite's VFS registry is process-wide) attached to `bucket` as "c".
func client(_ dir: URL, _ n: Int, bucket: URL) throws -> Vfs {
    vfsCounter += 1
    let vfs = try Vfs(cacheDirectory: dir.appendingPathComponent("cache\(n)").path, name: "swiftvfs\(vfsCounter)")
    try vfs.attach(bucket.path, alias: "c")
    return vfs
}

final class VfsTests: XCTestCase {
    func testContainerToolsAndTwoClientsSeeEachOthersUploads() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        let container = try Container(url: bucket.path, nrequest: nil)
        try container.create(blockSize: 65536, nameBytes: nil, overwrite: false)
        XCTAssertEqual(try container.list().count, 0)

        let writer = try client(dir, 0, bucket: bucket)
        let db = try writer.open("c", "shop.db")
        try db.executeBatch(sql: "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, photo BLOB)")
        try db.transaction {
            for i in 1...100 {
                try db.execute("INSERT INTO items(name, price, photo) VALUES (?, ?, ?)",
                               "item \(i)", Double(i) / 2, Data([UInt8(i), 0, 255]))
            }
        }
        XCTAssertEqual(db.lastInsertRowid(), 100)
        XCTAssertEqual(try db.scalar("SELECT state FROM bcv_database WHERE database = 'shop.db'")?.text, "local")
        let report = try writer.upload("c")
        XCTAssertEqual(report.databases.map(\.name), ["shop.db"])
        XCTAssertEqual(try container.list().map(\.name), ["shop.db"])

        let reader = try client(dir, 1, bucket: bucket)
        let rdb = try reader.open("c", "shop.db", readOnly: true)
        XCTAssertEqual(try rdb.scalar("SELECT count(*) FROM items")?.int, 100)
        let row = try rdb.rows("SELECT name, price, photo FROM items WHERE id = ?", 7)
        XCTAssertEqual(row.first?[0].text, "item 7")
        XCTAssertEqual(row.first?[1].double, 3.5)
        XCTAssertEqual(row.first?[2].blob, Data([7, 0, 255]))

        try db.execute("UPDATE items SET price = 0 WHERE id = ?", 7)
        try writer.upload("c")
        let polled = try reader.poll("c")
        XCTAssertEqual(polled.updated, ["shop.db"])
        XCTAssertEqual(try rdb.scalar("SELECT price FROM items WHERE id = 7")?.double, 0)

        // Download what the container holds and compare.
        let copy = dir.appendingPathComponent("copy.db").path
        XCTAssertGreaterThan(try container.downloadFile(name: "shop.db", path: copy), 0)
    }

    func testConflictLosesNothingAndBcvKvReportsRaces() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        try Container(url: bucket.path, nrequest: nil).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        let a = try client(dir, 0, bucket: bucket)
        let b = try client(dir, 1, bucket: bucket)
        let adb = try a.open("c", "x.db")
        try adb.executeBatch(sql: "CREATE TABLE t(v); INSERT INTO t VALUES ('base')")
        try a.upload("c")
        try b.poll("c")
        let bdb = try b.open("c", "x.db")
        try adb.execute("UPDATE t SET v = 'a'")
        try bdb.execute("UPDATE t SET v = 'b'")
        try a.upload("c")
        XCTAssertThrowsError(try b.upload("c")) { error in
            guard case BcvError.Conflict = error else { return XCTFail("expected Conflict, got \(error)") }
        }
        XCTAssertEqual(try bdb.scalar("SELECT v FROM t")?.text, "b", "the local change is kept")

        try adb.execute("INSERT INTO bcv_kv(name, value) VALUES ('owner', 'a')")
        XCTAssertEqual(try bdb.scalar("SELECT value FROM bcv_kv WHERE name = 'owner'")?.text, "a")
        try adb.executeBatch(sql: "BEGIN")
        try bdb.executeBatch(sql: "BEGIN")
        _ = try adb.scalar("SELECT value FROM bcv_kv WHERE name = 'owner'")
        _ = try bdb.scalar("SELECT value FROM bcv_kv WHERE name = 'owner'")
        try adb.execute("UPDATE bcv_kv SET value = 'a2' WHERE name = 'owner'")
        try adb.executeBatch(sql: "COMMIT")
        try bdb.execute("UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'")
        XCTAssertThrowsError(try bdb.executeBatch(sql: "COMMIT")) { error in
            guard case BcvError.Conflict = error else { return XCTFail("expected Conflict, got \(error)") }
        }
        if bdb.inTransaction() { try bdb.executeBatch(sql: "ROLLBACK") }
        XCTAssertEqual(try adb.scalar("SELECT value FROM bcv_kv WHERE name = 'owner'")?.text, "a2")
    }

    func testJobsAndClosingTheVfsCascade() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bucket = dir.appendingPathComponent("bucket")
        try Container(url: bucket.path, nrequest: nil).create(blockSize: 65536, nameBytes: nil, overwrite: false)
        do {
            let writer = try client(dir, 0, bucket: bucket)
            let db = try writer.open("c", "big.db")
            try db.executeBatch(sql: """
                CREATE TABLE t(x);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
                INSERT INTO t SELECT randomblob(1000) FROM n;
                """)
            let upload = try writer.uploadStart(alias: "c", cleanupGraceMs: nil)
            let uploaded = try await upload.result()
            XCTAssertEqual(uploaded.upload?.databases.first?.name, "big.db")
            XCTAssertEqual(upload.status(), .done)

            let reader = try client(dir, 1, bucket: bucket)
            let job = try reader.prefetchStart(alias: "c", db: "big.db")
            let outcome = try await job.result(timeout: .seconds(60))
            XCTAssertGreaterThan(outcome.prefetch?.blocks ?? 0, 5)
            XCTAssertEqual(job.progress().done, job.progress().total)
            let rdb = try reader.open("c", "big.db", readOnly: true)
            XCTAssertEqual(try rdb.scalar("SELECT count(*) FROM t")?.int, 500)
            XCTAssertEqual(try rdb.scalar("SELECT sum(cache) = count(*) FROM bcv_block")?.int, 1)

            // Closing the VFS closes its databases; later calls throw Closed.
            reader.close()
            try rdb.closeAndWaitBlocking(timeoutMs: 10_000)
            XCTAssertEqual(rdb.state(), .closed)
            XCTAssertThrowsError(try rdb.scalar("SELECT 1")) { error in
                guard case BcvError.Closed = error else { return XCTFail("expected Closed, got \(error)") }
            }
            XCTAssertThrowsError(try reader.poll("c"))
        }
        // Everything released in whatever order Swift chose: no node stays alive.
        XCTAssertEqual(waitIdle(timeoutMs: 10_000), 0)
    }
}
