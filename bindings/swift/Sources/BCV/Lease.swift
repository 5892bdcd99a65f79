// The single-writer lease of a container from Swift: `Lease` values with `Date`s, and lease calls taking
// `Duration`s on `Vfs` (by alias) and `Container`. The protocol itself is in the Rust core.

import BcvUniffi
import Foundation

extension Lease {
    /// When this holding began (the holder's clock).
    public var acquired: Date {
        Date(timeIntervalSince1970: TimeInterval(acquiredUnixMs) / 1000)
    }

    /// When it expires unless extended (the holder's clock).
    public var expires: Date {
        Date(timeIntervalSince1970: TimeInterval(expiresUnixMs) / 1000)
    }

    /// Time left by this machine's clock, or `nil` once the expiry has passed.
    public var expiresIn: Duration? {
        leaseExpiresInMs(lease: self).map { Duration.milliseconds(Int64(clamping: $0)) }
    }

    /// True once the expiry has passed by this machine's clock (another client may still treat it as held
    /// for the clock-skew margin).
    public var isExpired: Bool {
        expiresIn == nil
    }
}

extension BcvError {
    /// The holder named by `LeaseHeld`, else `nil`.
    public var leaseHolder: String? {
        if case let .LeaseHeld(holder, _, _, _) = self { return holder }
        return nil
    }
}

extension Vfs {
    /// Obtains the single-writer lease of `alias` for `holder` (e.g. "host-a pid 123") for `duration`.
    /// Until released or expired, this VFS's uploads renew it and other clients' uploads throw `LeaseHeld`.
    /// - Throws: `BcvError.LeaseHeld` naming the holder while another client holds it;
    ///   `BcvError.InvalidArgument` for a duration not longer than the safety margin (default 5 s).
    @discardableResult
    public func leaseObtain(_ alias: String, holder: String, duration: Duration) throws -> Lease {
        try leaseObtain(alias: alias, holder: holder, durationMs: duration.bcvMilliseconds)
    }

    /// Extends the lease this VFS holds on `alias` to expire `duration` from now.
    /// - Throws: `BcvError.LeaseLost` when it is not held any more.
    @discardableResult
    public func leaseExtend(_ alias: String, duration: Duration) throws -> Lease {
        try leaseExtend(alias: alias, durationMs: duration.bcvMilliseconds)
    }

    /// Releases the lease this VFS holds on `alias`. - Throws: `BcvError.LeaseLost` when it held none.
    public func leaseRelease(_ alias: String) throws {
        try leaseRelease(alias: alias)
    }

    /// The lease of `alias` as recorded in the container now; `nil` when none is held.
    public func leaseStatus(_ alias: String) throws -> Lease? {
        try leaseStatus(alias: alias)
    }

    /// Makes this VFS the holder of the holding `token` obtained elsewhere (writes nothing).
    /// - Throws: `BcvError.LeaseLost` when that holding is not the container's current, unexpired one.
    @discardableResult
    public func leaseAdopt(_ alias: String, token: String) throws -> Lease {
        try leaseAdopt(alias: alias, token: token)
    }

    /// The lease this VFS holds on `alias` (no request); `nil` when it holds none.
    public func leaseHeld(_ alias: String) throws -> Lease? {
        try leaseHeld(alias: alias)
    }
}

extension Container {
    /// Obtains the container's lease for `holder` for `duration`.
    /// - Throws: `BcvError.LeaseHeld` naming the holder while another client holds it.
    @discardableResult
    public func leaseObtain(holder: String, duration: Duration) throws -> Lease {
        try leaseObtain(holder: holder, durationMs: duration.bcvMilliseconds)
    }

    /// Extends to `duration` from now the lease these tools hold, or with `token` that holding (obtained
    /// by another process). - Throws: `BcvError.LeaseLost`.
    @discardableResult
    public func leaseExtend(duration: Duration, token: String? = nil) throws -> Lease {
        try leaseExtend(durationMs: duration.bcvMilliseconds, token: token)
    }
}
