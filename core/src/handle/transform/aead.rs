//! Chunked, authenticated AES-256-GCM streams (`aes-gcm`).
//!
//! Format (all integers big-endian):
//! ```text
//! header  = "BCVAEAD1" (8) | nonce prefix (7, random) | log2(chunk size) (1)            16 bytes
//! chunk i = AES-256-GCM(key, nonce = prefix | i as u32 | last flag (0 or 1), aad = header, plaintext)
//! ```
//! Every chunk but the last holds exactly `AEAD_CHUNK_SIZE` plaintext bytes; the last holds 0 to
//! `AEAD_CHUNK_SIZE` (this encoder makes it shorter than a full chunk, possibly empty) and has the last
//! flag set, so truncation at a chunk boundary, reordering, or dropping
//! the final chunk all fail authentication (the STREAM construction of Hoang, Reyhanitabar, Rogaway and
//! Vizár). Plaintext is released only after its chunk's tag verified.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use super::Codec;
use crate::handle::reason::{Error, Result};

/// Plaintext bytes per chunk: 64 KiB.
pub const AEAD_CHUNK_SIZE: usize = 64 * 1024;
/// Length of the stream header.
pub const AEAD_HEADER_LEN: usize = 16;
/// Length of an AES-256 key.
pub const AEAD_KEY_LEN: usize = 32;

const MAGIC: &[u8; 8] = b"BCVAEAD1";
const CHUNK_LOG2: u8 = 16;
const TAG_LEN: usize = 16;

fn cipher_for(key: &[u8]) -> Result<Aes256Gcm> {
    if key.len() != AEAD_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "AES-256-GCM needs a {AEAD_KEY_LEN}-byte key, got {} bytes",
            key.len()
        )));
    }
    Aes256Gcm::new_from_slice(key).map_err(|_| Error::InvalidArgument("bad AES-256-GCM key".into()))
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

fn next_counter(counter: &mut u32) -> Result<u32> {
    let c = *counter;
    *counter =
        c.checked_add(1).ok_or_else(|| Error::InvalidArgument("AES-GCM stream longer than 2^32 chunks".into()))?;
    Ok(c)
}

pub(crate) struct Encrypt {
    cipher: Aes256Gcm,
    header: [u8; AEAD_HEADER_LEN],
    header_sent: bool,
    prefix: [u8; 7],
    counter: u32,
    pending: Vec<u8>,
}

impl Encrypt {
    pub(crate) fn new(key: &[u8]) -> Result<Encrypt> {
        let cipher = cipher_for(key)?;
        let mut prefix = [0u8; 7];
        getrandom::fill(&mut prefix)
            .map_err(|e| Error::io("drawing a random nonce", std::io::Error::other(e.to_string())))?;
        let mut header = [0u8; AEAD_HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..15].copy_from_slice(&prefix);
        header[15] = CHUNK_LOG2;
        Ok(Encrypt {
            cipher,
            header,
            header_sent: false,
            prefix,
            counter: 0,
            pending: Vec::with_capacity(AEAD_CHUNK_SIZE),
        })
    }

    fn seal(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        if !self.header_sent {
            out.extend_from_slice(&self.header);
            self.header_sent = true;
        }
        let counter = next_counter(&mut self.counter)?;
        let start = out.len();
        out.extend_from_slice(plaintext);
        let n = nonce(&self.prefix, counter, last);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&n), &self.header, &mut out[start..])
            .map_err(|_| Error::InvalidArgument("AES-GCM encryption failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }
}

impl Codec for Encrypt {
    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // Full chunks are sealed as soon as they are complete, straight from the input when aligned; only a
        // remainder is buffered. The last chunk (0 to AEAD_CHUNK_SIZE bytes) is sealed by `finish`.
        out.reserve(input.len() + (input.len() / AEAD_CHUNK_SIZE + 2) * TAG_LEN + AEAD_HEADER_LEN);
        while !input.is_empty() {
            if !self.pending.is_empty() {
                let take = (AEAD_CHUNK_SIZE - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() == AEAD_CHUNK_SIZE {
                    let chunk = std::mem::take(&mut self.pending);
                    self.seal(&chunk, false, out)?;
                    self.pending = chunk;
                    self.pending.clear();
                }
            } else if input.len() >= AEAD_CHUNK_SIZE {
                // A whole chunk is sealed at once as not-last; `finish` then adds the last chunk, empty
                // if need be, so the end stays authenticated and no input is copied twice.
                self.seal(&input[..AEAD_CHUNK_SIZE], false, out)?;
                input = &input[AEAD_CHUNK_SIZE..];
            } else {
                self.pending.extend_from_slice(input);
                input = &[];
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let chunk = std::mem::take(&mut self.pending);
        self.seal(&chunk, true, out)
    }
}

pub(crate) struct Decrypt {
    cipher: Aes256Gcm,
    header: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
    pending: Vec<u8>,
}

impl Decrypt {
    pub(crate) fn new(key: &[u8]) -> Result<Decrypt> {
        Ok(Decrypt {
            cipher: cipher_for(key)?,
            header: Vec::new(),
            prefix: [0; 7],
            counter: 0,
            pending: Vec::with_capacity(AEAD_CHUNK_SIZE + TAG_LEN),
        })
    }
}

impl Decrypt {
    /// Verifies the buffered sealed chunk and decrypts it in place, then hands the plaintext to `out`
    /// (moving the buffer when `out` is empty: no copy). Nothing is released unless the tag checks out.
    fn open_pending(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let index = next_counter(&mut self.counter)?;
        let ct_len = self.pending.len() - TAG_LEN;
        let (ct, tag) = self.pending.split_at_mut(ct_len);
        let tag = aes_gcm::Tag::clone_from_slice(tag);
        let n = nonce(&self.prefix, index, last);
        if self.cipher.decrypt_in_place_detached(Nonce::from_slice(&n), &self.header, ct, &tag).is_err() {
            self.pending.clear();
            let what = if last { "final chunk" } else { "chunk" };
            return Err(Error::Authentication(format!(
                "AES-GCM {what} {index} did not verify (wrong key, tampered or truncated ciphertext)"
            )));
        }
        self.pending.truncate(ct_len);
        if out.is_empty() {
            std::mem::swap(out, &mut self.pending);
            self.pending = Vec::with_capacity(AEAD_CHUNK_SIZE + TAG_LEN);
        } else {
            out.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        Ok(())
    }
}

impl Codec for Decrypt {
    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.header.len() < AEAD_HEADER_LEN {
            let take = (AEAD_HEADER_LEN - self.header.len()).min(input.len());
            self.header.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.header.len() == AEAD_HEADER_LEN {
                if &self.header[..8] != MAGIC || self.header[15] != CHUNK_LOG2 {
                    return Err(Error::Corrupt("not a bcv AES-GCM stream (bad header)".into()));
                }
                self.prefix.copy_from_slice(&self.header[8..15]);
            }
        }
        let sealed_len = AEAD_CHUNK_SIZE + TAG_LEN;
        // At most one sealed chunk is held back, until more data shows it is not the last one.
        while !input.is_empty() {
            if self.pending.len() == sealed_len {
                self.open_pending(false, out)?;
            }
            let take = (sealed_len - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.header.len() < AEAD_HEADER_LEN {
            return Err(Error::Authentication("AES-GCM stream truncated inside its header".into()));
        }
        if self.pending.len() < TAG_LEN {
            return Err(Error::Authentication("AES-GCM stream truncated: final chunk missing".into()));
        }
        self.open_pending(true, out)
    }
}
