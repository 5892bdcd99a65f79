//! Secure containers: client-side encryption of every block, in the bucket and in the local cache.
//!
//! A secure container holds, besides the CBS objects, a marker object [`SECURE_OBJECT`] (`bcv_secure.json`)
//! naming the cipher, the chunk size, a random per-container salt and a *key check* (a known value sealed
//! with the container's first key, so a wrong key is reported at attach instead of as garbage later).
//!
//! Blocks are sealed chunk by chunk, so the cache can still fetch and decrypt 16 KiB at a time:
//!
//! ```text
//! block object  = chunk 0 | chunk 1 | ... | chunk n-1            n = block size / chunk size
//! chunk i       = seal(context(salt, BLOCK, i), plaintext of chunk i)    chunk size + SEAL_OVERHEAD bytes
//! ```
//!
//! The *context* (additional authenticated data) binds each chunk to its container (salt), its kind and its
//! position, so a chunk moved inside a block, or a block copied from another container, fails authentication.
//! Not authenticated: the manifest (database names, sizes and which block belongs where), which stays in the
//! CBS format. Block ids of secure containers are random (no content hash that would reveal equal blocks).
//!
//! The default cipher is AES-256-GCM ([`AesGcmCipher`]) with a [`Keyring`]: each sealed chunk starts with the
//! id of the key that sealed it, so after a rotation new blocks use the new key while old blocks stay
//! readable as long as their key is in the ring (or the [`KeyProvider`] callback can still produce it).
//! Applications with their own encryption (an HSM, a KMS, another algorithm) implement [`BlockCipher`].
//!
//! A secure container cannot be read by CBS (its blocks are ciphertext); plaintext containers stay
//! CBS-compatible.

mod local_file;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

pub(crate) use local_file::{RawFile, SECTOR, SealedFile, SealedFileError};

use super::{VfsError, VfsResult};

/// The marker object of a secure container.
pub const SECURE_OBJECT: &str = "bcv_secure.json";

/// Bytes every sealed chunk adds to its plaintext, whatever the cipher: [`AesGcmCipher`] stores a 4-byte key
/// id, a 12-byte nonce and a 16-byte tag. A [`BlockCipher`] must produce exactly this many extra bytes (it
/// may pad).
pub const SEAL_OVERHEAD: usize = 32;

/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_ID_LEN: usize = 4;
const SALT_LEN: usize = 16;
const _: () = assert!(KEY_ID_LEN + NONCE_LEN + TAG_LEN == SEAL_OVERHEAD);
const CONTEXT_MAGIC: &[u8; 8] = b"bcvseal1";
const CHECK_PLAINTEXT: &[u8; 32] = b"bcv secure container key check\0\0";

/// What a sealed piece of data is, part of its authenticated context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Domain {
    /// A chunk of a block (in the bucket and in the cache).
    Block = 1,
    /// A chunk of the container's key-value object.
    Kv = 2,
    /// A sector of a local journal, WAL or temporary file.
    LocalFile = 3,
    /// The key check in the marker.
    Check = 4,
}

/// A cipher failed: the data is not authentic under any key the cipher has (wrong key, tampering, truncation),
/// or a key is missing. Returned by [`BlockCipher`] implementations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// Authentication failed: a wrong key, or the data was changed.
    #[error("authentication failed (wrong key or tampered data)")]
    Authentication,
    /// The data names a key the cipher does not have.
    #[error("key {0} is not available")]
    MissingKey(u32),
    /// Anything else the cipher reports (a hardware error, a refused key…).
    #[error("{0}")]
    Other(String),
}

/// A pluggable cipher for secure containers: seals and opens chunks of at most 16 KiB.
///
/// `context` is the authenticated data the sealed bytes must be bound to (container salt, kind, position):
/// opening with a different context must fail. `seal` writes exactly `plaintext.len() + SEAL_OVERHEAD` bytes
/// into `out`; `open` gets those bytes and writes the plaintext into `out` (`sealed.len() - SEAL_OVERHEAD`
/// bytes). Implementations must use a fresh nonce (or equivalent) for every seal: the same chunk position is
/// sealed many times as a database changes. They are called from many threads at once.
pub trait BlockCipher: Send + Sync {
    /// A short name recorded in the container's marker, e.g. `"aes-256-gcm"`. A container created with one
    /// cipher name refuses to attach with another.
    fn name(&self) -> String;

    /// Seals `plaintext` bound to `context` into `out` (`plaintext.len() + SEAL_OVERHEAD` bytes).
    ///
    /// # Errors
    /// Whatever the cipher cannot do (a missing key, a hardware error).
    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError>;

    /// Opens `sealed` (which must be bound to `context`) into `out` (`sealed.len() - SEAL_OVERHEAD` bytes).
    ///
    /// # Errors
    /// [`CipherError::Authentication`] for a wrong key or changed data; [`CipherError::MissingKey`] when the
    /// data names a key the cipher does not have.
    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError>;
}

/// Produces the AES-256 key with a given id, or `None` when it does not know it. Called at most once per key
/// id per cipher (keys are kept in memory, wiped on drop).
pub type KeyProvider = dyn Fn(u32) -> Option<[u8; KEY_LEN]> + Send + Sync;

/// A key held in memory, wiped when dropped.
pub(crate) type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// The AES-256 keys of a secure container, by id, and the id that seals new data.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: HashMap<u32, Zeroizing<[u8; KEY_LEN]>>,
    current: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&u32> = self.keys.keys().collect();
        ids.sort_unstable();
        f.debug_struct("Keyring").field("key_ids", &ids).field("current", &self.current).finish()
    }
}

impl Keyring {
    /// A ring holding one key, which seals new data.
    pub fn new(key_id: u32, key: [u8; KEY_LEN]) -> Keyring {
        let mut ring = Keyring::default();
        ring.keys.insert(key_id, Zeroizing::new(key));
        ring.current = key_id;
        ring
    }

    /// Adds (or replaces) a key that can open data sealed with `key_id`.
    pub fn add(&mut self, key_id: u32, key: [u8; KEY_LEN]) -> &mut Keyring {
        self.keys.insert(key_id, Zeroizing::new(key));
        self
    }

    /// Makes `key_id` the key that seals new data (a rotation).
    ///
    /// # Errors
    /// [`VfsError::InvalidArgument`] when the ring has no such key.
    pub fn rotate_to(&mut self, key_id: u32) -> VfsResult<&mut Keyring> {
        if !self.keys.contains_key(&key_id) {
            return Err(VfsError::InvalidArgument(format!("the keyring has no key {key_id}")));
        }
        self.current = key_id;
        Ok(self)
    }

    /// The current key id and every key (for handing a ring to a daemon's client).
    pub(crate) fn export(&self) -> (u32, Vec<(u32, SecretKey)>) {
        (self.current, self.keys.iter().map(|(&id, k)| (id, k.clone())).collect())
    }

    /// The id of the key that seals new data.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// A new random key from the operating system's generator.
    ///
    /// # Errors
    /// [`VfsError::InvalidArgument`] when the generator is unavailable.
    pub fn generate_key() -> VfsResult<[u8; KEY_LEN]> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| VfsError::InvalidArgument(format!("no randomness for a key: {e}")))?;
        Ok(key)
    }

    /// Parses a key written as 64 hex digits (whitespace around it is ignored).
    ///
    /// # Errors
    /// [`VfsError::InvalidArgument`] for anything else.
    pub fn parse_hex_key(text: &str) -> VfsResult<[u8; KEY_LEN]> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|e| VfsError::InvalidArgument(format!("a key must be 64 hex digits: {e}")))?,
        );
        <[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| VfsError::InvalidArgument(format!("a key must be 32 bytes, got {}", bytes.len())))
    }
}

/// AES-256-GCM with a [`Keyring`] or a [`KeyProvider`]: the default cipher of secure containers.
///
/// Sealed layout: key id (4 bytes, little-endian) | random nonce (12) | ciphertext | tag (16). Random 96-bit
/// nonces keep the collision risk negligible up to about 2^32 seals per key (NIST SP 800-38D); rotate keys
/// well before that.
pub struct AesGcmCipher {
    current: u32,
    provider: Option<Arc<KeyProvider>>,
    ciphers: RwLock<HashMap<u32, Option<Arc<Aes256Gcm>>>>,
}

impl std::fmt::Debug for AesGcmCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AesGcmCipher").field("current", &self.current).finish_non_exhaustive()
    }
}

impl AesGcmCipher {
    /// A cipher using the keys of `ring`; new data is sealed with its current key.
    pub fn new(ring: &Keyring) -> AesGcmCipher {
        let ciphers =
            ring.keys.iter().map(|(&id, key)| (id, Some(Arc::new(Aes256Gcm::new(key.as_slice().into()))))).collect();
        AesGcmCipher { current: ring.current, provider: None, ciphers: RwLock::new(ciphers) }
    }

    /// A cipher that asks `provider` for each key id the first time it needs it; new data is sealed with
    /// key `current`.
    pub fn with_provider(current: u32, provider: Arc<KeyProvider>) -> AesGcmCipher {
        AesGcmCipher { current, provider: Some(provider), ciphers: RwLock::new(HashMap::new()) }
    }

    fn key(&self, id: u32) -> Result<Arc<Aes256Gcm>, CipherError> {
        if let Some(known) = self.ciphers.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return known.clone().ok_or(CipherError::MissingKey(id));
        }
        let made = self.provider.as_ref().and_then(|p| p(id)).map(|key| {
            let key = Zeroizing::new(key);
            Arc::new(Aes256Gcm::new(key.as_slice().into()))
        });
        self.ciphers.write().unwrap_or_else(|p| p.into_inner()).insert(id, made.clone());
        made.ok_or(CipherError::MissingKey(id))
    }
}

impl BlockCipher for AesGcmCipher {
    fn name(&self) -> String {
        "aes-256-gcm".into()
    }

    fn seal(&self, context: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        if out.len() != plaintext.len() + SEAL_OVERHEAD {
            return Err(CipherError::Other(format!("output of {} bytes for {} bytes", out.len(), plaintext.len())));
        }
        let cipher = self.key(self.current)?;
        let (head, rest) = out.split_at_mut(KEY_ID_LEN + NONCE_LEN);
        let (body, tail) = rest.split_at_mut(plaintext.len());
        head[..KEY_ID_LEN].copy_from_slice(&self.current.to_le_bytes());
        getrandom::fill(&mut head[KEY_ID_LEN..]).map_err(|e| CipherError::Other(format!("no randomness: {e}")))?;
        body.copy_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&head[KEY_ID_LEN..]), context, body)
            .map_err(|_| CipherError::Other("AES-GCM refused to encrypt".into()))?;
        tail.copy_from_slice(&tag);
        Ok(())
    }

    fn open(&self, context: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<(), CipherError> {
        if sealed.len() < SEAL_OVERHEAD || out.len() != sealed.len() - SEAL_OVERHEAD {
            return Err(CipherError::Authentication);
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&sealed[..KEY_ID_LEN]);
        let cipher = self.key(u32::from_le_bytes(id))?;
        let nonce = &sealed[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN];
        let body = &sealed[KEY_ID_LEN + NONCE_LEN..KEY_ID_LEN + NONCE_LEN + out.len()];
        let tag = &sealed[KEY_ID_LEN + NONCE_LEN + out.len()..];
        out.copy_from_slice(body);
        cipher.decrypt_in_place_detached(Nonce::from_slice(nonce), context, out, Tag::from_slice(tag)).map_err(|_| {
            out.fill(0);
            CipherError::Authentication
        })
    }
}

/// How an application makes a container secure: the cipher (with its keys). Cheap to clone.
#[derive(Clone)]
pub struct SecureOptions {
    /// The cipher; [`AesGcmCipher`] unless the application brings its own.
    pub cipher: Arc<dyn BlockCipher>,
}

impl std::fmt::Debug for SecureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureOptions").field("cipher", &self.cipher.name()).finish()
    }
}

impl SecureOptions {
    /// AES-256-GCM with the keys of `ring`.
    pub fn aes_gcm(ring: &Keyring) -> SecureOptions {
        SecureOptions { cipher: Arc::new(AesGcmCipher::new(ring)) }
    }

    /// AES-256-GCM asking `provider` for keys by id; new data sealed with key `current`.
    pub fn aes_gcm_with_provider(current: u32, provider: Arc<KeyProvider>) -> SecureOptions {
        SecureOptions { cipher: Arc::new(AesGcmCipher::with_provider(current, provider)) }
    }

    /// A cipher of the application's own.
    pub fn custom(cipher: Arc<dyn BlockCipher>) -> SecureOptions {
        SecureOptions { cipher }
    }
}

/// The marker object of a secure container, as stored (JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecureMarker {
    /// Format version, 1.
    pub format: u32,
    /// The cipher's [`BlockCipher::name`].
    pub cipher: String,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    /// Bytes each sealed chunk adds.
    pub overhead: u32,
    /// The container's random salt, hex.
    pub salt: String,
    /// [`CHECK_PLAINTEXT`] sealed with the first key, hex.
    pub check: String,
}

impl SecureMarker {
    /// A marker for a new container: a fresh salt and the key check sealed by `cipher`.
    ///
    /// # Errors
    /// The cipher's failure, as [`VfsError::Crypto`] naming `container`.
    pub(crate) fn create(container: &str, cipher: &dyn BlockCipher, chunk_size: u32) -> VfsResult<SecureMarker> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| VfsError::InvalidArgument(format!("no randomness: {e}")))?;
        let mut check = vec![0u8; CHECK_PLAINTEXT.len() + SEAL_OVERHEAD];
        cipher.seal(&context(&salt, Domain::Check, 0), CHECK_PLAINTEXT, &mut check).map_err(|e| VfsError::Crypto {
            container: container.to_string(),
            object: SECURE_OBJECT.into(),
            reason: e.to_string(),
        })?;
        Ok(SecureMarker {
            format: 1,
            cipher: cipher.name(),
            chunk_size,
            overhead: SEAL_OVERHEAD as u32,
            salt: hex::encode(salt),
            check: hex::encode(check),
        })
    }

    /// Parses a stored marker. Errors: [`VfsError::Crypto`] naming the container when it is not a valid one.
    pub(crate) fn decode(container: &str, bytes: &[u8]) -> VfsResult<SecureMarker> {
        let bad = |reason: String| VfsError::Crypto {
            container: container.to_string(),
            object: SECURE_OBJECT.into(),
            reason,
        };
        let m: SecureMarker = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a secure marker: {e}")))?;
        if m.format != 1 {
            return Err(bad(format!("format {} is newer than this bcv understands", m.format)));
        }
        if m.overhead as usize != SEAL_OVERHEAD || m.chunk_size == 0 {
            return Err(bad(format!("chunk size {} / overhead {} not supported", m.chunk_size, m.overhead)));
        }
        Ok(m)
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A secure container's cipher bound to its salt: seals and opens chunks, with errors naming what failed.
pub(crate) struct Sealer {
    cipher: Arc<dyn BlockCipher>,
    salt: [u8; SALT_LEN],
    chunk_size: u32,
    container: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("container", &self.container).field("chunk_size", &self.chunk_size).finish()
    }
}

fn context(salt: &[u8; SALT_LEN], domain: Domain, index: u64) -> [u8; 33] {
    let mut c = [0u8; 33];
    c[..8].copy_from_slice(CONTEXT_MAGIC);
    c[8..24].copy_from_slice(salt);
    c[24] = domain as u8;
    c[25..].copy_from_slice(&index.to_le_bytes());
    c
}

impl Sealer {
    /// Binds `options`' cipher to the container described by `marker`, verifying the key check.
    ///
    /// # Errors
    /// [`VfsError::Crypto`]: another cipher, a chunk size this build cannot use, or a key that does not open
    /// the check (the wrong key).
    pub(crate) fn for_container(
        container: &str,
        marker: &SecureMarker,
        options: &SecureOptions,
        chunk_size: u32,
    ) -> VfsResult<Sealer> {
        let bad = |reason: String| VfsError::Crypto {
            container: container.to_string(),
            object: SECURE_OBJECT.into(),
            reason,
        };
        let name = options.cipher.name();
        if name != marker.cipher {
            return Err(bad(format!("the container uses cipher {:?}, the application gave {name:?}", marker.cipher)));
        }
        if marker.chunk_size != chunk_size {
            return Err(bad(format!("chunk size {} (this build reads {chunk_size})", marker.chunk_size)));
        }
        let salt: [u8; SALT_LEN] = hex::decode(&marker.salt)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the salt is not 16 bytes of hex".into()))?;
        let check = hex::decode(&marker.check).map_err(|_| bad("the key check is not hex".into()))?;
        if check.len() != CHECK_PLAINTEXT.len() + SEAL_OVERHEAD {
            return Err(bad("the key check has the wrong length".into()));
        }
        let mut out = [0u8; 32];
        match options.cipher.open(&context(&salt, Domain::Check, 0), &check, &mut out) {
            Ok(()) if &out == CHECK_PLAINTEXT => {}
            Ok(()) | Err(CipherError::Authentication) => {
                return Err(bad("wrong key: the key does not open this container's key check".into()));
            }
            Err(e) => return Err(bad(format!("the key check cannot be opened: {e}"))),
        }
        Ok(Sealer { cipher: options.cipher.clone(), salt, chunk_size, container: container.to_string() })
    }

    /// A sealer for anonymous local temporary files: this one's cipher with a random salt of its own.
    pub(crate) fn ephemeral(&self) -> VfsResult<Sealer> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| VfsError::InvalidArgument(format!("no randomness: {e}")))?;
        Ok(Sealer {
            cipher: self.cipher.clone(),
            salt,
            chunk_size: self.chunk_size,
            container: "(temporary files)".into(),
        })
    }

    /// Plaintext bytes per chunk.
    pub(crate) fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Sealed bytes per chunk.
    pub(crate) fn sealed_chunk_size(&self) -> u32 {
        self.chunk_size + SEAL_OVERHEAD as u32
    }

    /// Seals chunk `index` of kind `domain` into `out` (`plain.len() + SEAL_OVERHEAD` bytes).
    ///
    /// # Errors
    /// [`VfsError::Crypto`] naming `object`.
    pub(crate) fn seal(&self, domain: Domain, index: u64, plain: &[u8], out: &mut [u8], object: &str) -> VfsResult<()> {
        self.cipher.seal(&context(&self.salt, domain, index), plain, out).map_err(|e| self.error(object, index, e))
    }

    /// Opens chunk `index` of kind `domain` into `out` (`sealed.len() - SEAL_OVERHEAD` bytes).
    ///
    /// # Errors
    /// [`VfsError::Crypto`] naming `object` and the chunk: a wrong key or tampered bytes.
    pub(crate) fn open(
        &self,
        domain: Domain,
        index: u64,
        sealed: &[u8],
        out: &mut [u8],
        object: &str,
    ) -> VfsResult<()> {
        self.cipher.open(&context(&self.salt, domain, index), sealed, out).map_err(|e| self.error(object, index, e))
    }

    /// Seals a whole block (a multiple of the chunk size) into its object form.
    pub(crate) fn seal_block(&self, plain: &[u8], object: &str) -> VfsResult<Vec<u8>> {
        self.seal_chunks(Domain::Block, plain, object)
    }

    /// Seals `plain` chunk by chunk (the last chunk may be short).
    pub(crate) fn seal_chunks(&self, domain: Domain, plain: &[u8], object: &str) -> VfsResult<Vec<u8>> {
        let cs = self.chunk_size as usize;
        let n = plain.len().div_ceil(cs);
        let mut out = vec![0u8; plain.len() + n * SEAL_OVERHEAD];
        let mut at = 0;
        for (i, chunk) in plain.chunks(cs).enumerate() {
            let len = chunk.len() + SEAL_OVERHEAD;
            self.seal(domain, i as u64, chunk, &mut out[at..at + len], object)?;
            at += len;
        }
        Ok(out)
    }

    /// Opens what [`seal_chunks`](Self::seal_chunks) made.
    ///
    /// # Errors
    /// [`VfsError::Crypto`] naming `object` and the chunk.
    pub(crate) fn open_chunks(&self, domain: Domain, sealed: &[u8], object: &str) -> VfsResult<Vec<u8>> {
        let scs = self.sealed_chunk_size() as usize;
        let mut out = Vec::with_capacity(sealed.len());
        for (i, chunk) in sealed.chunks(scs).enumerate() {
            if chunk.len() <= SEAL_OVERHEAD {
                return Err(self.error(object, i as u64, CipherError::Authentication));
            }
            let start = out.len();
            out.resize(start + chunk.len() - SEAL_OVERHEAD, 0);
            self.open(domain, i as u64, chunk, &mut out[start..], object)?;
        }
        Ok(out)
    }

    fn error(&self, object: &str, index: u64, e: CipherError) -> VfsError {
        VfsError::Crypto {
            container: self.container.clone(),
            object: format!("{object} chunk {index}"),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(id: u32, key: u8) -> SecureOptions {
        SecureOptions::aes_gcm(&Keyring::new(id, [key; KEY_LEN]))
    }

    #[test]
    fn seal_open_and_tamper() {
        let opts = options(1, 7);
        let marker = SecureMarker::create("c", opts.cipher.as_ref(), 16).unwrap();
        let sealer = Sealer::for_container("c", &marker, &opts, 16).unwrap();
        let plain: Vec<u8> = (0..40u8).collect();
        let sealed = sealer.seal_chunks(Domain::Block, &plain, "b").unwrap();
        assert_eq!(sealed.len(), 40 + 3 * SEAL_OVERHEAD);
        assert!(sealed.windows(8).all(|w| w != &plain[8..16]), "plaintext visible in sealed bytes");
        assert_eq!(sealer.open_chunks(Domain::Block, &sealed, "b").unwrap(), plain);
        // Another domain, a flipped bit, swapped chunks: all refused.
        assert!(sealer.open_chunks(Domain::Kv, &sealed, "b").is_err());
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        let err = sealer.open_chunks(Domain::Block, &bad, "b").unwrap_err().to_string();
        assert!(err.contains("authentication failed") && err.contains("b chunk 0"), "{err}");
        let scs = 16 + SEAL_OVERHEAD;
        let mut swapped = sealed.clone();
        swapped[..scs].copy_from_slice(&sealed[scs..2 * scs]);
        swapped[scs..2 * scs].copy_from_slice(&sealed[..scs]);
        assert!(sealer.open_chunks(Domain::Block, &swapped, "b").is_err());
    }

    #[test]
    fn wrong_key_is_reported_at_attach() {
        let marker = SecureMarker::create("c", options(1, 7).cipher.as_ref(), 16).unwrap();
        let err = Sealer::for_container("c", &marker, &options(1, 8), 16).unwrap_err().to_string();
        assert!(err.contains("wrong key"), "{err}");
        let err = Sealer::for_container("c", &marker, &options(2, 7), 16).unwrap_err().to_string();
        assert!(err.contains("key 1 is not available"), "{err}");
    }

    #[test]
    fn rotation_keeps_old_data_readable() {
        let mut ring = Keyring::new(1, [1; KEY_LEN]);
        let old = SecureOptions::aes_gcm(&ring);
        let marker = SecureMarker::create("c", old.cipher.as_ref(), 16).unwrap();
        let old_sealer = Sealer::for_container("c", &marker, &old, 16).unwrap();
        let before = old_sealer.seal_chunks(Domain::Block, b"sealed with key one", "x").unwrap();
        ring.add(2, [2; KEY_LEN]).rotate_to(2).unwrap();
        let new = Sealer::for_container("c", &marker, &SecureOptions::aes_gcm(&ring), 16).unwrap();
        let after = new.seal_chunks(Domain::Block, b"sealed with key two", "y").unwrap();
        assert_eq!(&after[..4], &2u32.to_le_bytes());
        assert_eq!(new.open_chunks(Domain::Block, &before, "x").unwrap(), b"sealed with key one");
        // The old ring cannot read what the new key sealed.
        let err = old_sealer.open_chunks(Domain::Block, &after, "y").unwrap_err().to_string();
        assert!(err.contains("key 2 is not available"), "{err}");
        // A provider is asked once per key id.
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = calls.clone();
        let provider: Arc<KeyProvider> = Arc::new(move |id| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (id <= 2).then_some([id as u8; KEY_LEN])
        });
        let by_provider =
            Sealer::for_container("c", &marker, &SecureOptions::aes_gcm_with_provider(2, provider), 16).unwrap();
        assert_eq!(by_provider.open_chunks(Domain::Block, &before, "x").unwrap(), b"sealed with key one");
        assert_eq!(by_provider.open_chunks(Domain::Block, &after, "y").unwrap(), b"sealed with key two");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
