//! Block ids: the names of the immutable block objects of a container.
//!
//! A block id is `namebytes` bytes long (12 to 32, fixed per container and stored in the manifest header). The
//! object holding the block is named by the id in uppercase hex followed by `.bcv`, e.g.
//! `F70607D137CDFE664A8DCC6E5DB6735D.bcv` for a 16-byte id.
//!
//! How CBS chooses an id depends on `namebytes`:
//! * below [`MD5_NAME_BYTES`] (24) the id is fully random;
//! * from 24 bytes on, the first 16 bytes are the MD5 digest of the whole (zero-padded) block and the rest is
//!   random, so an uploader can reuse an existing block with the same content instead of storing it again.

use std::fmt;

use md5::{Digest, Md5};

use super::manifest::ManifestError;

/// Shortest block id a container may use, in bytes.
pub const MIN_NAME_BYTES: usize = 12;
/// Longest block id a container may use, in bytes.
pub const MAX_NAME_BYTES: usize = 32;
/// From this id length on, ids start with the MD5 digest of the block's content (the CBS rule).
pub const MD5_NAME_BYTES: usize = 24;

/// Length of the MD5 digest that prefixes content-addressed ids.
const MD5_LEN: usize = 16;

/// The id of one immutable block: 12 to 32 bytes, stored inline (the type is `Copy` and never allocates).
///
/// Ordering is the lexicographic order of [`as_bytes`](Self::as_bytes); equality and hashing are over the same
/// bytes. `Display` prints the uppercase hex form used in object names (without `.bcv`), `Debug` prints
/// `BlockId(HEX)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    // Field order matters for the derived `Ord`: bytes beyond `len` are always zero, so comparing the padded
    // arrays first and the length second is exactly the lexicographic order of the byte slices.
    bytes: [u8; MAX_NAME_BYTES],
    len: u8,
}

impl BlockId {
    /// Builds an id from its raw bytes (copied).
    ///
    /// # Errors
    /// [`ManifestError::BadIdLength`] unless `b` is [`MIN_NAME_BYTES`]..=[`MAX_NAME_BYTES`] bytes long.
    pub fn from_bytes(b: &[u8]) -> Result<BlockId, ManifestError> {
        if !(MIN_NAME_BYTES..=MAX_NAME_BYTES).contains(&b.len()) {
            return Err(ManifestError::BadIdLength { len: b.len() });
        }
        let mut bytes = [0u8; MAX_NAME_BYTES];
        bytes[..b.len()].copy_from_slice(b);
        Ok(BlockId { bytes, len: b.len() as u8 })
    }

    /// The raw bytes of the id, as stored in the manifest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The length of the id in bytes (the container's `namebytes`).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: an id has at least [`MIN_NAME_BYTES`] bytes. Present for API symmetry with [`len`](Self::len).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A fully random id of `name_bytes` bytes (from the operating system's generator).
    ///
    /// `name_bytes` is validated by the callers (it comes from a validated manifest); an out-of-range value is
    /// clamped to [`MIN_NAME_BYTES`]..=[`MAX_NAME_BYTES`] rather than panicking. Should the operating system's
    /// generator fail, a process-local fallback (std's randomly seeded SipHash over a counter and the clock) is
    /// used, so this never panics.
    pub fn random(name_bytes: usize) -> BlockId {
        let len = name_bytes.clamp(MIN_NAME_BYTES, MAX_NAME_BYTES);
        let mut bytes = [0u8; MAX_NAME_BYTES];
        fill_random(&mut bytes[..len]);
        BlockId { bytes, len: len as u8 }
    }

    /// The id CBS gives a new block: fully random when `name_bytes` < [`MD5_NAME_BYTES`], otherwise the MD5 digest of
    /// `block` followed by `name_bytes - 16` random bytes.
    ///
    /// `block` must be the whole block exactly as it will be stored, i.e. already zero-padded to the container's
    /// block size (the last block of a database is padded). `name_bytes` is clamped as in [`random`](Self::random).
    pub fn for_block(name_bytes: usize, block: &[u8]) -> BlockId {
        let mut id = BlockId::random(name_bytes);
        if id.len() >= MD5_NAME_BYTES {
            let digest: [u8; MD5_LEN] = Md5::digest(block).into();
            id.bytes[..MD5_LEN].copy_from_slice(&digest);
        }
        id
    }

    /// The MD5 digest prefix of a content-addressed id: `Some` when the id is at least [`MD5_NAME_BYTES`] long.
    ///
    /// Only ids made by [`for_block`](Self::for_block) (or by CBS) with such a length carry a real digest; the
    /// method simply returns the first 16 bytes.
    pub fn md5_prefix(&self) -> Option<[u8; 16]> {
        if self.len() < MD5_NAME_BYTES {
            return None;
        }
        let mut prefix = [0u8; MD5_LEN];
        prefix.copy_from_slice(&self.bytes[..MD5_LEN]);
        Some(prefix)
    }

    /// The name of the object holding this block: uppercase hex of the id followed by `.bcv`.
    pub fn object_name(&self) -> String {
        let mut name = hex::encode_upper(self.as_bytes());
        name.push_str(".bcv");
        name
    }

    /// The inverse of [`object_name`](Self::object_name): `Some(id)` when `name` is 24 to 64 uppercase hex digits
    /// (an even number) followed by `.bcv`.
    ///
    /// Returns `None` for every other object name, in particular `manifest.bcv` and `bcv_kv.bcv`, and for lowercase
    /// hex (CBS never writes it, so such an object is not a block of the container).
    pub fn parse_object_name(name: &str) -> Option<BlockId> {
        let stem = name.strip_suffix(".bcv")?;
        if stem.len() % 2 != 0 || !(2 * MIN_NAME_BYTES..=2 * MAX_NAME_BYTES).contains(&stem.len()) {
            return None;
        }
        if !stem.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
            return None;
        }
        let mut bytes = [0u8; MAX_NAME_BYTES];
        let len = stem.len() / 2;
        hex::decode_to_slice(stem, &mut bytes[..len]).ok()?;
        Some(BlockId { bytes, len: len as u8 })
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({self})")
    }
}

/// Fills `buf` from the operating system's generator, or from the fallback described at [`BlockId::random`].
fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    fallback_random(buf);
}

/// Non-cryptographic fallback for the (practically impossible) case that the OS generator fails: a randomly keyed
/// SipHash (std's `RandomState`) over a process-wide counter and the current time. Ids only need to be unique, not
/// secret.
fn fallback_random(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for chunk in buf.chunks_mut(8) {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(nanos);
        let word = h.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits() {
        assert!(BlockId::from_bytes(&[0; 11]).is_err());
        assert!(BlockId::from_bytes(&[0; 33]).is_err());
        assert_eq!(BlockId::from_bytes(&[7; 12]).unwrap().as_bytes(), &[7; 12]);
        assert_eq!(BlockId::from_bytes(&[7; 32]).unwrap().len(), 32);
    }

    #[test]
    fn random_clamps_and_differs() {
        assert_eq!(BlockId::random(0).len(), MIN_NAME_BYTES);
        assert_eq!(BlockId::random(1000).len(), MAX_NAME_BYTES);
        assert_ne!(BlockId::random(16), BlockId::random(16));
    }

    #[test]
    fn order_is_lexicographic() {
        let short = BlockId::from_bytes(&[1; 12]).unwrap();
        let long = BlockId::from_bytes(&[1; 13]).unwrap();
        let mut bigger = [1u8; 12];
        bigger[11] = 2;
        let bigger = BlockId::from_bytes(&bigger).unwrap();
        assert!(short < long);
        assert!(long < bigger);
        assert_eq!(short.as_bytes().cmp(long.as_bytes()), short.cmp(&long));
    }

    #[test]
    fn fallback_fills_everything() {
        let mut a = [0u8; 29];
        let mut b = [0u8; 29];
        fallback_random(&mut a);
        fallback_random(&mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn display_and_debug() {
        let id = BlockId::from_bytes(&[0xab; 12]).unwrap();
        assert_eq!(id.to_string(), "ABABABABABABABABABABABAB");
        assert_eq!(format!("{id:?}"), "BlockId(ABABABABABABABABABABABAB)");
    }
}
