// The idiomatic Swift layer over the block-cache VFS types (`Vfs`, `Database`, `Statement`, `VfsJob`,
// `Container`). The VFS, databases and jobs are bcv handles: `deinit` releases them in any order, `close()`
// ends them (closing a `Vfs` closes its databases and cancels its jobs).
//
// Calls that reach the network or the disk block the calling thread; run them from a background task.

import BcvUniffi
import Foundation

extension Vfs: BcvHandle {}
extension Database: BcvHandle {}
extension VfsJob: BcvHandle {}

/// Lets Swift values be written directly as SQL parameters: `try db.execute(sql, 1, "a", nil)`.
public protocol SqlConvertible {
    /// The value as bcv binds it.
    var sqlValue: SqlValue { get }
}

extension Int: SqlConvertible { public var sqlValue: SqlValue { .integer(value: Int64(self)) } }
extension Int64: SqlConvertible { public var sqlValue: SqlValue { .integer(value: self) } }
extension Double: SqlConvertible { public var sqlValue: SqlValue { .real(value: self) } }
extension String: SqlConvertible { public var sqlValue: SqlValue { .text(value: self) } }
extension Data: SqlConvertible { public var sqlValue: SqlValue { .blob(value: self) } }
extension Bool: SqlConvertible { public var sqlValue: SqlValue { .integer(value: self ? 1 : 0) } }
extension SqlValue: SqlConvertible { public var sqlValue: SqlValue { self } }

extension Optional: SqlConvertible where Wrapped: SqlConvertible {
    public var sqlValue: SqlValue { self?.sqlValue ?? .null }
}

extension SqlValue {
    /// The integer, or `nil` for other types.
    public var int: Int64? { if case let .integer(v) = self { return v } else { return nil } }
    /// The double (integers widen), or `nil`.
    public var double: Double? {
        switch self {
        case let .real(v): return v
        case let .integer(v): return Double(v)
        default: return nil
        }
    }
    /// The text, or `nil`.
    public var text: String? { if case let .text(v) = self { return v } else { return nil } }
    /// The bytes, or `nil`.
    public var blob: Data? { if case let .blob(v) = self { return v } else { return nil } }
    /// True for SQL NULL.
    public var isNull: Bool { if case .null = self { return true } else { return false } }
}

extension Vfs {
    /// Opens (or creates) the cache directory and registers the VFS as `name`. `leaseMaxSkew` and
    /// `leaseSafetyMargin` tune how container leases are treated (default 5 s each). When a daemon serves
    /// the directory, the VFS becomes its read-only client (`isDaemonClient()`).
    /// - Throws: `BcvError.CacheBusy` when another process owns the directory.
    public convenience init(cacheDirectory: String, name: String = "bcv", cacheSize: UInt64? = nil,
                            parallelRequests: UInt32? = nil, leaseMaxSkew: Duration? = nil,
                            leaseSafetyMargin: Duration? = nil) throws {
        try self.init(cacheDir: cacheDirectory, name: name, cacheSize: cacheSize, nrequest: parallelRequests,
                      leaseMaxSkewMs: leaseMaxSkew?.bcvMilliseconds,
                      leaseSafetyMarginMs: leaseSafetyMargin?.bcvMilliseconds)
    }

    /// Attaches the container at `url` as `alias` (default: the URL's last component); returns the alias.
    /// `secure` (cipher and keys) is required for a secure container and refused for a plaintext one.
    /// - Throws: `BcvError.Authentication` for a wrong key or another cipher (naming `bcv_secure.json`);
    ///   `BcvError.Secure` for a secure container without `secure`, or `secure` for a plaintext one.
    @discardableResult
    public func attach(_ url: String, alias: String? = nil, ifNotAttached: Bool = false,
                       secure: SecureOptions? = nil) throws -> String {
        try attach(url: url, alias: alias, ifNotAttached: ifNotAttached, secure: secure)
    }

    /// Opens `/alias/db` through this VFS (created locally when missing, unless `readOnly`).
    public func open(_ alias: String, _ db: String, readOnly: Bool = false) throws -> Database {
        try open(path: path(alias: alias, db: db), readOnly: readOnly, create: !readOnly)
    }

    /// Uploads the local changes of `alias`; garbage older than `cleanupGrace` is deleted in the same call.
    /// - Throws: `BcvError.Conflict` when another client changed the same database (nothing is lost).
    @discardableResult
    public func upload(_ alias: String, cleanupGrace: Duration? = nil) throws -> UploadReport {
        try upload(alias: alias, cleanupGraceMs: cleanupGrace?.bcvMilliseconds)
    }

    /// Fetches `alias`'s manifest if it changed and makes new versions visible.
    @discardableResult
    public func poll(_ alias: String) throws -> PollReport {
        try poll(alias: alias)
    }
}

extension Container {
    /// The container at `url` (nothing is requested yet). With `secure`, `create` makes a secure container
    /// and uploads and downloads seal and open; `leaseMaxSkew`/`leaseSafetyMargin` as for `Vfs`.
    public convenience init(_ url: String, parallelRequests: UInt32? = nil, secure: SecureOptions? = nil,
                            leaseMaxSkew: Duration? = nil, leaseSafetyMargin: Duration? = nil) throws {
        try self.init(url: url, nrequest: parallelRequests, secure: secure,
                      leaseMaxSkewMs: leaseMaxSkew?.bcvMilliseconds,
                      leaseSafetyMarginMs: leaseSafetyMargin?.bcvMilliseconds)
    }
}

extension Database {
    /// Runs one statement with `params`; returns the rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ params: SqlConvertible...) throws -> UInt64 {
        try execute(sql: sql, params: params.map(\.sqlValue))
    }

    /// Runs one query with `params`; returns its rows.
    public func rows(_ sql: String, _ params: SqlConvertible...) throws -> [[SqlValue]] {
        try query(sql: sql, params: params.map(\.sqlValue)).rows
    }

    /// The first column of the first row, or `nil` when there is no row.
    public func scalar(_ sql: String, _ params: SqlConvertible...) throws -> SqlValue? {
        try query(sql: sql, params: params.map(\.sqlValue)).rows.first?.first
    }

    /// Runs `body` inside BEGIN…COMMIT; rolls back and rethrows when it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try executeBatch(sql: "BEGIN")
        do {
            let result = try body()
            try executeBatch(sql: "COMMIT")
            return result
        } catch {
            if inTransaction() { try? executeBatch(sql: "ROLLBACK") }
            throw error
        }
    }
}

extension VfsJob {
    /// Waits for the job without blocking a thread; `timeout` nil waits as long as it takes.
    /// - Throws: the job's error; `BcvError.Closed` when it was cancelled; `BcvError.Timeout`.
    public func result(timeout: Duration? = nil) async throws -> JobOutcome {
        try await wait(timeoutMs: timeout?.bcvMilliseconds)
    }
}
