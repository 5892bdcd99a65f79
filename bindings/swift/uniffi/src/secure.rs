//! Secure (encrypted) containers for Swift: `Keyring`, `SecureOptions`, and the two foreign traits through
//! which Swift code takes part in encryption, `CipherCallback` (a whole cipher) and `KeyProviderCallback`
//! (AES-256 keys by id). Adapters over `bcv_core::vfs::{Keyring, SecureOptions, BlockCipher}`.
//!
//! The foreign traits are called from any thread: bcv worker threads during uploads and prefetches, and the
//! thread running SQLite during reads. A Swift error thrown by them reaches Rust as a `CipherError` (an error
//! of another type becomes `CipherError::Other`), never as a crash.

use std::sync::{Arc, Mutex, MutexGuard};

use bcv_core::vfs as cv;

use crate::error::BcvError;

/// Why a Swift cipher failed. Thrown by `CipherCallback.sealChunk` / `openChunk`; mirrors
/// `bcv_core::vfs::CipherError`.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum CipherError {
    /// The data is not authentic under the cipher's keys: a wrong key, or the data was changed.
    #[error("authentication failed (wrong key or tampered data)")]
    Authentication,
    /// The data names a key the cipher does not have.
    #[error("key {key_id} is not available")]
    MissingKey {
        /// The key id.
        key_id: u32,
    },
    /// Anything else the cipher reports.
    #[error("{message}")]
    Other {
        /// What went wrong.
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for CipherError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> CipherError {
        CipherError::Other { message: format!("the Swift cipher failed: {}", e.reason) }
    }
}

impl From<CipherError> for cv::CipherError {
    fn from(e: CipherError) -> cv::CipherError {
        match e {
            CipherError::Authentication => cv::CipherError::Authentication,
            CipherError::MissingKey { key_id } => cv::CipherError::MissingKey(key_id),
            CipherError::Other { message } => cv::CipherError::Other(message),
        }
    }
}

/// A cipher implemented in Swift (the `BCV` module adapts its `BlockCipher` protocol to this). Called from
/// many threads at once.
///
/// `sealChunk` must return exactly `plaintext.count + 32` bytes bound to `context` (a fresh nonce for
/// every call); `openChunk` returns the plaintext (`sealed.count - 32` bytes), or `nil` /
/// `CipherError.Authentication` when `sealed` is not authentic under `context`.
#[uniffi::export(with_foreign)]
pub trait CipherCallback: Send + Sync {
    /// A short name recorded in a container created with this cipher; attaching with another name fails.
    fn name(&self) -> String;
    /// Seals `plaintext` bound to `context`.
    fn seal_chunk(&self, context: Vec<u8>, plaintext: Vec<u8>) -> Result<Vec<u8>, CipherError>;
    /// Opens `sealed` bound to `context`; `nil` when it is not authentic. (Not named `open`: UniFFI 0.32
    /// escapes that name in the C header it generates, which then does not compile.)
    fn open_chunk(&self, context: Vec<u8>, sealed: Vec<u8>) -> Result<Option<Vec<u8>>, CipherError>;
}

/// Produces AES-256 keys by id, implemented in Swift. Asked at most once per key id; may be called from any
/// thread.
#[uniffi::export(with_foreign)]
pub trait KeyProviderCallback: Send + Sync {
    /// The 32-byte key with id `key_id`, or `nil` when it is unknown (a key of another length counts as
    /// unknown).
    fn key(&self, key_id: u32) -> Option<Vec<u8>>;
}

/// A Swift `CipherCallback` as core's `BlockCipher`: copies the buffers across and checks the lengths.
struct SwiftCipher(Arc<dyn CipherCallback>);

impl SwiftCipher {
    /// Copies `result` into `out`, or explains why its length is wrong.
    fn deliver(what: &str, result: &[u8], out: &mut [u8]) -> Result<(), cv::CipherError> {
        if result.len() != out.len() {
            return Err(cv::CipherError::Other(format!(
                "the Swift cipher's {what} returned {} bytes, expected {} (seal adds exactly {} bytes, open \
                 removes them)",
                result.len(),
                out.len(),
                cv::SEAL_OVERHEAD
            )));
        }
        out.copy_from_slice(result);
        Ok(())
    }
}

impl cv::BlockCipher for SwiftCipher {
    fn name(&self) -> String {
        self.0.name()
    }

    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), cv::CipherError> {
        let sealed = self.0.seal_chunk(context.to_vec(), plaintext.to_vec())?;
        SwiftCipher::deliver("seal", &sealed, out)
    }

    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), cv::CipherError> {
        match self.0.open_chunk(context.to_vec(), sealed.to_vec())? {
            Some(plaintext) => SwiftCipher::deliver("open", &plaintext, out),
            None => Err(cv::CipherError::Authentication),
        }
    }
}

/// A 32-byte key from Swift bytes. Errors: `InvalidArgument` for another length.
fn key_bytes(key: &[u8]) -> Result<[u8; cv::KEY_LEN], BcvError> {
    <[u8; cv::KEY_LEN]>::try_from(key).map_err(|_| BcvError::InvalidArgument {
        message: format!("a key must be {} bytes, got {}", cv::KEY_LEN, key.len()),
    })
}

/// The AES-256 keys of a secure container by id, and the id that seals new data. Keys stay in Rust memory
/// (wiped when released); Swift only hands them in.
#[derive(uniffi::Object)]
pub struct Keyring {
    inner: Mutex<cv::Keyring>,
}

impl Keyring {
    fn ring(&self) -> MutexGuard<'_, cv::Keyring> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the ring as it is now.
    pub(crate) fn snapshot(&self) -> cv::Keyring {
        self.ring().clone()
    }
}

#[uniffi::export]
impl Keyring {
    /// A ring holding `key` (32 bytes) as key `key_id`, which seals new data.
    /// Errors: `InvalidArgument` for a key that is not 32 bytes.
    #[uniffi::constructor]
    pub fn new(key_id: u32, key: Vec<u8>) -> Result<Arc<Keyring>, BcvError> {
        Ok(Arc::new(Keyring { inner: Mutex::new(cv::Keyring::new(key_id, key_bytes(&key)?)) }))
    }

    /// Adds (or replaces) key `key_id`, which can then open data sealed with it.
    /// Errors: `InvalidArgument` for a key that is not 32 bytes.
    pub fn add(&self, key_id: u32, key: Vec<u8>) -> Result<(), BcvError> {
        let key = key_bytes(&key)?;
        self.ring().add(key_id, key);
        Ok(())
    }

    /// Makes `key_id` the key that seals new data (a rotation); older keys keep opening old data.
    /// Errors: `InvalidArgument` when the ring has no such key.
    pub fn rotate_to(&self, key_id: u32) -> Result<(), BcvError> {
        self.ring().rotate_to(key_id)?;
        Ok(())
    }

    /// The id of the key that seals new data.
    pub fn current(&self) -> u32 {
        self.ring().current()
    }
}

/// 32 random bytes from the operating system's generator: a new AES-256 key.
/// Errors: `InvalidArgument` when no randomness is available.
#[uniffi::export]
pub fn generate_key() -> Result<Vec<u8>, BcvError> {
    Ok(cv::Keyring::generate_key()?.to_vec())
}

/// How a container is made secure: a cipher with its keys. Given to `Vfs.attach` (required for a secure
/// container, refused for a plaintext one) and to `Container(url:secure:)` (its `create` then makes a
/// secure container).
#[derive(uniffi::Object)]
pub struct SecureOptions {
    inner: cv::SecureOptions,
}

impl SecureOptions {
    /// Core's options.
    pub(crate) fn options(&self) -> cv::SecureOptions {
        self.inner.clone()
    }
}

#[uniffi::export]
impl SecureOptions {
    /// AES-256-GCM with the keys `keyring` holds now (later changes to the ring are not seen).
    #[uniffi::constructor]
    pub fn aes_gcm(keyring: Arc<Keyring>) -> Arc<SecureOptions> {
        Arc::new(SecureOptions { inner: cv::SecureOptions::aes_gcm(&keyring.snapshot()) })
    }

    /// AES-256-GCM asking `provider` for each key id the first time it is needed; new data is sealed with
    /// key `current_key_id`.
    #[uniffi::constructor]
    pub fn with_key_provider(current_key_id: u32, provider: Arc<dyn KeyProviderCallback>) -> Arc<SecureOptions> {
        let lookup = move |key_id: u32| {
            let mut key = provider.key(key_id)?;
            let fixed = <[u8; cv::KEY_LEN]>::try_from(key.as_slice()).ok();
            key.fill(0);
            fixed
        };
        Arc::new(SecureOptions { inner: cv::SecureOptions::aes_gcm_with_provider(current_key_id, Arc::new(lookup)) })
    }

    /// A cipher implemented in Swift.
    #[uniffi::constructor]
    pub fn custom(cipher: Arc<dyn CipherCallback>) -> Arc<SecureOptions> {
        Arc::new(SecureOptions { inner: cv::SecureOptions::custom(Arc::new(SwiftCipher(cipher))) })
    }

    /// The cipher's name, e.g. "aes-256-gcm".
    pub fn cipher_name(&self) -> String {
        self.inner.cipher.name()
    }
}
