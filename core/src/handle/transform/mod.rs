//! Transformers: resources that consume one stream and produce another (LIFETIMES.md §3.1, X1–X4).
//!
//! * X1: releasing the transformer handle does not stop it; its task runs until the input ends.
//! * X2: when the output's reader goes away, the transformer stops and releases its input, so the
//!   upstream writer sees `PEER_DROPPED`.
//! * X3: an input cut short ends the output with `Closed{UPSTREAM(r)}`, never EOF.
//! * X4: `close()` ends the output with `Closed{PARENT}` and releases the input.

mod aead;
mod gzip;

use bytes::Bytes;

pub use aead::{AEAD_CHUNK_SIZE, AEAD_HEADER_LEN, AEAD_KEY_LEN};

use super::reason::{Closed, Error, Result};
use super::resource::{Resource, TaskResource};
use super::runtime::Runtime;
use super::stream::{DEFAULT_CAPACITY, Failure, ReadStream, pipe_with_parents};

/// Buffer of a transformer's output stream.
const OUTPUT_CAPACITY: usize = 4 * DEFAULT_CAPACITY;

/// A streaming codec: bytes in, bytes out, and a final flush that may fail (truncation, bad tag).
pub(crate) trait Codec: Send + 'static {
    /// Consumes `input`, appending whatever output is ready to `out`.
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// The input ended cleanly: append the remaining output, or fail if the input was incomplete.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
}

fn transform(
    input: ReadStream,
    mut codec: Box<dyn Codec>,
    label: &'static str,
) -> Result<(Resource, ReadStream), Closed> {
    let rt = Runtime { shared: input.node().core.rt.clone() };
    let (res, node) = TaskResource::create(&rt, label, None)?;
    res.consume(input.node());
    // Room for a few codec outputs (a sealed AES-GCM chunk is a little over 64 KiB), so a stage hands its
    // reader whole chunks instead of splitting each one across two wake-ups.
    let (writer, output) = pipe_with_parents(
        &rt,
        OUTPUT_CAPACITY,
        Some(&res.core),
        Some(&res.core),
        ("transformer output writer", "transformer output"),
    )?;
    let writer = writer.internal();
    res.spawn(async move {
        // Grown by the codec when it has output: an idle transformer holds no buffer.
        let mut out = Vec::new();
        loop {
            let next = tokio::select! {
                next = input.read_chunk(DEFAULT_CAPACITY) => next,
                // X2 even while the codec is still buffering and has written nothing yet.
                _ = writer.peer_gone() => return,
            };
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    match codec.finish(&mut out) {
                        Ok(()) => {
                            if !out.is_empty()
                                && writer.write_bytes(Bytes::from(std::mem::take(&mut out))).await.is_err()
                            {
                                return;
                            }
                            let _ = writer.finish();
                        }
                        Err(e) => writer.fail(Failure::from_error(&e)),
                    }
                    return;
                }
                Err(e) => {
                    // X3: never an EOF for input that was cut short. Unauthenticated output is not released.
                    writer.fail(Failure::from_error(&e));
                    return;
                }
            };
            if let Err(e) = codec.update(&chunk, &mut out) {
                writer.fail(Failure::from_error(&e));
                return;
            }
            if !out.is_empty() {
                let ready = Bytes::from(std::mem::take(&mut out));
                if writer.write_bytes(ready).await.is_err() {
                    // X2: the output's reader went away; dropping `input` tells the producer.
                    return;
                }
            }
        }
    });
    Ok((Resource { node }, output))
}

impl Runtime {
    /// Gzip-compresses `input` (consumed) at `level` 0–9. Returns the transformer and its output stream.
    /// Errors: `Closed{…}` if the runtime or input is closed; `InvalidArgument` for a bad level.
    pub fn gzip_compress(&self, input: ReadStream, level: u32) -> Result<(Resource, ReadStream)> {
        if level > 9 {
            return Err(Error::InvalidArgument(format!("gzip level {level} is not in 0..=9")));
        }
        Ok(transform(input, Box::new(gzip::Compress::new(level)), "gzip compress")?)
    }

    /// Gzip-decompresses `input` (consumed; several members are read one after another). A truncated or
    /// corrupt input ends the output with [`Error::Corrupt`], never EOF.
    pub fn gzip_decompress(&self, input: ReadStream) -> Result<(Resource, ReadStream)> {
        Ok(transform(input, Box::new(gzip::Decompress::new()), "gzip decompress")?)
    }

    /// Encrypts `input` (consumed) with AES-256-GCM in authenticated chunks (see [`AEAD_CHUNK_SIZE`]).
    /// `key` must be 32 bytes. Errors: `InvalidArgument` for a bad key; `Closed{…}` as above.
    pub fn aead_encrypt(&self, input: ReadStream, key: &[u8]) -> Result<(Resource, ReadStream)> {
        Ok(transform(input, Box::new(aead::Encrypt::new(key)?), "aes-gcm encrypt")?)
    }

    /// Decrypts a stream made by [`aead_encrypt`](Self::aead_encrypt). Output is released only after its
    /// chunk's tag checked out; a wrong key, tampering or truncation ends the output with
    /// [`Error::Authentication`] (or `Closed{UPSTREAM(r)}` if the input was cut short), never EOF.
    pub fn aead_decrypt(&self, input: ReadStream, key: &[u8]) -> Result<(Resource, ReadStream)> {
        Ok(transform(input, Box::new(aead::Decrypt::new(key)?), "aes-gcm decrypt")?)
    }
}
