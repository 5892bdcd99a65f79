// Multi-process mode from Swift: a `Daemon` owns a cache directory and serves it over `DIR/daemon.sock`; a
// `Vfs` created on that directory, in this process or another, becomes its read-only client
// (`isDaemonClient()`), reading through the daemon's shared cache. The daemon is stopped by `stop()` or,
// when it is still running, by releasing it (`deinit`).

import BcvUniffi
import Foundation

extension Daemon {
    /// Starts a daemon owning `cacheDirectory` (created if missing) with one size limit shared by all its
    /// clients (default 1 GiB). `keys` maps container URLs to the keyrings of secure containers; a client
    /// gets a key only after proving access to that container.
    /// - Throws: `BcvError.CacheBusy` when another process owns the directory; `BcvError.Io`.
    public static func start(cacheDirectory: String, cacheSize: UInt64? = nil,
                             keys: [String: Keyring] = [:]) throws -> Daemon {
        try start(cacheDir: cacheDirectory, cacheSize: cacheSize, keys: keys.isEmpty ? nil : keys)
    }
}
