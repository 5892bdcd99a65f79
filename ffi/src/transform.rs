//! Transformers: gzip and AES-256-GCM streams. Each consumes its input handle and yields a transformer
//! resource (close it to stop) and an output reader.

use bcv_core::handle::{ReadStream, Resource, Result as CoreResult};

use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of};
use crate::stream::{consume_reader, reader, try_status};
use crate::table::{self, Object};

fn start(
    runtime: bcv_handle_t,
    input: bcv_handle_t,
    transformer: *mut bcv_handle_t,
    output: *mut bcv_handle_t,
    make: impl FnOnce(&bcv_core::handle::Runtime, ReadStream) -> CoreResult<(Resource, ReadStream)>,
) -> bcv_status_t {
    if transformer.is_null() || output.is_null() {
        return fail_with(BCV_E_INVALID, "output pointer is NULL");
    }
    let rt = try_status!(runtime_of(runtime));
    try_status!(reader(input));
    let input_stream = try_status!(consume_reader(input));
    match make(&rt, input_stream) {
        Ok((t, out)) => {
            put(transformer, table::insert(Object::Resource(t)));
            put(output, table::insert(Object::Reader(out)))
        }
        Err(e) => fail(input, &e),
    }
}

/// The caller's AES-256 key, checked for NULL and length.
fn key_slice<'a>(key: *const u8, key_len: usize) -> Result<&'a [u8], bcv_status_t> {
    if key.is_null() {
        return Err(fail_with(BCV_E_INVALID, "key is NULL"));
    }
    if key_len != bcv_core::handle::AEAD_KEY_LEN {
        return Err(fail_with(BCV_E_INVALID, "AES-256-GCM needs a 32-byte key"));
    }
    // SAFETY: the caller provides `key_len` readable bytes; the slice lives only for this call.
    Ok(unsafe { std::slice::from_raw_parts(key, key_len) })
}

/// Gzip-compresses `input` (consumed) at `level` 0–9. Errors: `BCV_E_INVALID` (level), `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_gzip_compress(
    runtime: bcv_handle_t,
    input: bcv_handle_t,
    level: u32,
    transformer: *mut bcv_handle_t,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if level > 9 {
            return fail_with(BCV_E_INVALID, "gzip level must be 0..=9");
        }
        start(runtime, input, transformer, output, |rt, i| rt.gzip_compress(i, level))
    })
}

/// Gzip-decompresses `input` (consumed). A truncated or corrupt input ends the output with `BCV_E_CORRUPT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_gzip_decompress(
    runtime: bcv_handle_t,
    input: bcv_handle_t,
    transformer: *mut bcv_handle_t,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| start(runtime, input, transformer, output, |rt, i| rt.gzip_decompress(i)))
}

/// Encrypts `input` (consumed) with AES-256-GCM in authenticated chunks; `key` is 32 bytes (copied).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_aead_encrypt(
    runtime: bcv_handle_t,
    input: bcv_handle_t,
    key: *const u8,
    key_len: usize,
    transformer: *mut bcv_handle_t,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let key = try_status!(key_slice(key, key_len));
        start(runtime, input, transformer, output, |rt, i| rt.aead_encrypt(i, key))
    })
}

/// Decrypts `input` (consumed). Output is released only after its chunk authenticated; a wrong key,
/// tampering or truncation ends the output with `BCV_E_AUTH` (or `BCV_E_CLOSED`/UPSTREAM), never EOF.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_aead_decrypt(
    runtime: bcv_handle_t,
    input: bcv_handle_t,
    key: *const u8,
    key_len: usize,
    transformer: *mut bcv_handle_t,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let key = try_status!(key_slice(key, key_len));
        start(runtime, input, transformer, output, |rt, i| rt.aead_decrypt(i, key))
    })
}
