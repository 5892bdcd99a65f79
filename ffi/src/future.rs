//! One-shot futures carrying bytes.

use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::stream::{bcv_bytes_t, try_status};
use crate::table::{self, Object};

/// Creates a future pair; writes `*writer` and `*reader`. Both are yours to release. A writer released
/// without a value resolves the reader with `BCV_E_CLOSED` (PEER_DROPPED).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_future_new(
    runtime: bcv_handle_t,
    writer: *mut bcv_handle_t,
    reader: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if writer.is_null() || reader.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        match rt.future::<Vec<u8>>() {
            Ok((w, r)) => {
                put(writer, table::insert(Object::FutureWriter(w)));
                put(reader, table::insert(Object::FutureReader(r)))
            }
            Err(c) => fail(runtime, &c.into()),
        }
    })
}

/// Delivers a copy of `len` bytes at `data`. Errors: `BCV_E_CLOSED` (PEER_DROPPED) if the reader went away,
/// or if this end was closed or already written.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_future_write(writer: bcv_handle_t, data: *const u8, len: usize) -> bcv_status_t {
    guard(|| {
        if data.is_null() && len > 0 {
            return fail_with(BCV_E_INVALID, "data is NULL");
        }
        let o = try_status!(table::get(writer));
        let Object::FutureWriter(w) = &*o else { return table::wrong_type(writer, &o, "future writer") };
        let value = if len == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller provides `len` readable bytes.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        };
        match w.write(value) {
            Ok(()) => BCV_OK,
            Err(undelivered) => fail(writer, &undelivered.closed.into()),
        }
    })
}

/// Waits up to `timeout_ms` for the value and moves it into `*out` (free with `bcv_bytes_free`).
/// Errors: `BCV_E_CLOSED` (reason via `bcv_close_reason`), `BCV_E_TIMEOUT`, `BCV_E_ALREADY_TAKEN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_future_wait(reader: bcv_handle_t, timeout_ms: i64, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(table::get(reader));
        let Object::FutureReader(r) = &*o else { return table::wrong_type(reader, &o, "future reader") };
        match r.wait_blocking(timeout_of(timeout_ms)) {
            Ok(v) => {
                // SAFETY: non-NULL caller storage.
                unsafe { *out = bcv_bytes_t::from_vec(v) };
                BCV_OK
            }
            Err(e) => fail(reader, &e),
        }
    })
}
