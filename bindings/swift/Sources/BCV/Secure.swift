// Secure (encrypted) containers from Swift: a `Keyring` of AES-256 keys, a key-provider closure, or a
// `BlockCipher` of the application's own, each turned into `SecureOptions` for `Vfs.attach(_:secure:)` and
// `Container(_:secure:)`. The encryption itself is done by the Rust core; this file only adapts Swift
// values and errors to it.
//
// Threading: a key provider or a `BlockCipher` is called from many threads at once (bcv worker threads
// during uploads and prefetches, the thread running SQLite during reads). Whatever it throws is turned
// into a `CipherError` before it reaches Rust; it never crashes the process.

import BcvUniffi
import Foundation

/// A cipher of the application's own for secure containers (an HSM, a KMS, another algorithm).
///
/// Called from many threads at once, so it must be thread-safe. Each chunk (at most 16 KiB) is sealed and
/// opened on its own, bound to a `context` (the container, the kind of data and its position): opening with
/// another context must fail.
public protocol BlockCipher: Sendable {
    /// A short name recorded in the container when it is created; attaching with a cipher of another name
    /// throws `BcvError.Authentication`.
    var name: String { get }

    /// Seals `plaintext` bound to `context`. Must return exactly `plaintext.count + 32` bytes (pad if
    /// needed) and use a fresh nonce each time: the same position is sealed many times.
    /// - Throws: any error; it becomes `CipherError.Other` unless it is a `CipherError`.
    func seal(context: Data, plaintext: Data) throws -> Data

    /// Opens `sealed` bound to `context`: the plaintext (`sealed.count - 32` bytes), or `nil` when it is
    /// not authentic (wrong key, changed data, another context).
    /// - Throws: `CipherError.Authentication` (or `BcvError.Authentication`) for data that is not
    ///   authentic, `CipherError.MissingKey` for an unknown key; any other error becomes `CipherError.Other`.
    func open(context: Data, sealed: Data) throws -> Data?
}

extension CipherError {
    /// `error` as the cipher error Rust receives: a `CipherError` as is, `BcvError.Authentication` as
    /// `.Authentication`, anything else as `.Other` with its description.
    init(thrownBy error: any Error) {
        switch error {
        case let cipherError as CipherError:
            self = cipherError
        case BcvError.Authentication:
            self = .Authentication
        default:
            self = .Other(message: "\(type(of: error)): \(error)")
        }
    }
}

/// Adapts a `BlockCipher` to the generated `CipherCallback`, converting every error it throws.
final class BlockCipherCallback: CipherCallback {
    private let cipher: any BlockCipher

    init(_ cipher: any BlockCipher) {
        self.cipher = cipher
    }

    func name() -> String {
        cipher.name
    }

    func sealChunk(context: Data, plaintext: Data) throws -> Data {
        do {
            return try cipher.seal(context: context, plaintext: plaintext)
        } catch {
            throw CipherError(thrownBy: error)
        }
    }

    func openChunk(context: Data, sealed: Data) throws -> Data? {
        do {
            return try cipher.open(context: context, sealed: sealed)
        } catch {
            throw CipherError(thrownBy: error)
        }
    }
}

/// Adapts a key-provider closure to the generated `KeyProviderCallback`; a throw counts as "unknown key".
final class ClosureKeyProvider: KeyProviderCallback {
    private let body: @Sendable (UInt32) throws -> Data?

    init(_ body: @escaping @Sendable (UInt32) throws -> Data?) {
        self.body = body
    }

    func key(keyId: UInt32) -> Data? {
        (try? body(keyId)) ?? nil
    }
}

extension Keyring {
    /// A new AES-256 key: 32 random bytes from the operating system's generator.
    /// - Throws: `BcvError.InvalidArgument` when no randomness is available.
    public static func generateKey() throws -> Data {
        try BcvUniffi.generateKey()
    }
}

extension SecureOptions {
    /// AES-256-GCM with the keys `keyring` holds now; new data is sealed with its current key.
    public static func keyring(_ keyring: Keyring) -> SecureOptions {
        aesGcm(keyring: keyring)
    }

    /// AES-256-GCM asking `provider` for each key id (at most once per id, from any thread); new data is
    /// sealed with key `currentKeyId`. The provider returns the 32-byte key or `nil` when it does not know
    /// the id; a throw, or a key of another length, also counts as unknown.
    public static func keyProvider(currentKeyId: UInt32,
                                   _ provider: @escaping @Sendable (UInt32) throws -> Data?) -> SecureOptions {
        withKeyProvider(currentKeyId: currentKeyId, provider: ClosureKeyProvider(provider))
    }

    /// The application's own cipher.
    public static func cipher(_ cipher: any BlockCipher) -> SecureOptions {
        custom(cipher: BlockCipherCallback(cipher))
    }
}
