// The block-cache VFS from Swift: a container in a local directory (the embedded default store; an
// `s3://`, `az://` or `gs://` URL works the same way), two clients with their own caches, a write, an
// upload, and the other client polling and seeing the change.

import BCV
import Foundation

let root = FileManager.default.temporaryDirectory.appendingPathComponent("bcv-swift-vfs-\(getpid())")
defer { try? FileManager.default.removeItem(at: root) }
let bucket = root.appendingPathComponent("bucket").path

do {
    // Without a cache: create the container (64 KiB blocks to keep the demo small; the default is 4 MiB).
    try Container(url: bucket, nrequest: nil).create(blockSize: 65536, nameBytes: nil, overwrite: false)

    // Client A writes a new database and uploads it.
    let a = try Vfs(cacheDirectory: root.appendingPathComponent("cache-a").path, name: "bcv-a")
    try a.attach(bucket, alias: "shop")
    let dbA = try a.open("shop", "shop.db")
    try dbA.executeBatch(sql: "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    try dbA.transaction {
        for (name, price) in [("apple", 0.5), ("bread", 2.25), ("cheese", 7.0)] {
            try dbA.execute("INSERT INTO items(name, price) VALUES (?, ?)", name, price)
        }
    }
    let first = try a.upload("shop")
    print("A uploaded \(first.databases.map { "\($0.name) v\($0.version)" }) in \(first.blocksWritten) blocks")

    // Client B, with its own cache, reads it lazily.
    let b = try Vfs(cacheDirectory: root.appendingPathComponent("cache-b").path, name: "bcv-b")
    try b.attach(bucket, alias: "shop")
    let dbB = try b.open("shop", "shop.db", readOnly: true)
    print("B sees \(try dbB.scalar("SELECT count(*) FROM items")?.int ?? -1) items")

    // A changes a price and uploads; B polls and sees it.
    try dbA.execute("UPDATE items SET price = ? WHERE name = ?", 1.99, "bread")
    try a.upload("shop")
    let poll = try b.poll("shop")
    let price = try dbB.scalar("SELECT price FROM items WHERE name = 'bread'")?.double ?? -1
    print("B polled (updated: \(poll.updated)) and sees bread at \(price)")
    guard price == 1.99 else { fatalError("the second client did not see the change") }
} catch {
    print("error: \(error)")
    exit(1)
}
