//! Byte streams: pipes, reads and writes with timeouts, finish, callbacks, sources and collection.

use std::ffi::c_void;

use bcv_core::handle::{ReadStream, StreamEvent, WriteStream};

use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::table::{self, Object};

/// An owned byte buffer returned by bcv. Free it with `bcv_bytes_free`.
#[repr(C)]
#[derive(Debug)]
pub struct bcv_bytes_t {
    /// The bytes (NULL when `len` is 0).
    pub data: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl bcv_bytes_t {
    pub(crate) fn from_vec(v: Vec<u8>) -> bcv_bytes_t {
        if v.is_empty() {
            return bcv_bytes_t { data: std::ptr::null_mut(), len: 0 };
        }
        let boxed = v.into_boxed_slice();
        let len = boxed.len();
        bcv_bytes_t { data: Box::into_raw(boxed).cast(), len }
    }
}

/// Frees a buffer returned by bcv and zeroes it. NULL and empty buffers are fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_bytes_free(bytes: *mut bcv_bytes_t) {
    if bytes.is_null() {
        return;
    }
    // SAFETY: `bytes` points to a bcv_bytes_t filled by bcv (data/len from a boxed slice) or zeroed.
    unsafe {
        let b = &mut *bytes;
        if !b.data.is_null() && b.len > 0 {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)));
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
    }
}

/// A data callback: `status` is `BCV_OK` with `len` bytes at `data` (borrowed for the call), then exactly
/// one final call with `BCV_EOF` (clean end) or a negative status (message: `bcv_last_error_message()` on
/// that thread). Runs on a bcv thread; it may release or close any handle, the stream's own included.
pub type bcv_data_callback_t =
    Option<unsafe extern "C" fn(user_data: *mut c_void, status: bcv_status_t, data: *const u8, len: usize)>;

/// Destructor for `user_data`: bcv calls it exactly once, with no bcv lock held, when the callback is no
/// longer needed (after the final event, or when the stream is released or closed).
pub type bcv_user_data_free_t = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

pub(crate) fn reader(handle: bcv_handle_t) -> Result<std::sync::Arc<Object>, bcv_status_t> {
    let o = table::get(handle)?;
    match &*o {
        Object::Reader(_) => Ok(o),
        other => Err(table::wrong_type(handle, other, "stream reader")),
    }
}

pub(crate) fn writer(handle: bcv_handle_t) -> Result<std::sync::Arc<Object>, bcv_status_t> {
    let o = table::get(handle)?;
    match &*o {
        Object::Writer(_) => Ok(o),
        other => Err(table::wrong_type(handle, other, "stream writer")),
    }
}

/// Takes a reader out of the table for a call that consumes it.
pub(crate) fn consume_reader(handle: bcv_handle_t) -> Result<ReadStream, bcv_status_t> {
    match table::get(handle) {
        Ok(o) if !matches!(&*o, Object::Reader(_)) => return Err(table::wrong_type(handle, &o, "stream reader")),
        Err(code) => return Err(code),
        Ok(_) => {}
    }
    match table::consume(handle)? {
        Object::Reader(r) => Ok(r),
        _ => Err(fail_with(BCV_E_WRONG_TYPE, "not a stream reader")),
    }
}

pub(crate) fn consume_writer(handle: bcv_handle_t) -> Result<WriteStream, bcv_status_t> {
    match table::get(handle) {
        Ok(o) if !matches!(&*o, Object::Writer(_)) => return Err(table::wrong_type(handle, &o, "stream writer")),
        Err(code) => return Err(code),
        Ok(_) => {}
    }
    match table::consume(handle)? {
        Object::Writer(w) => Ok(w),
        _ => Err(fail_with(BCV_E_WRONG_TYPE, "not a stream writer")),
    }
}

macro_rules! try_status {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}
pub(crate) use try_status;

/// Creates a pipe with a `capacity`-byte buffer (backpressure); writes `*writer` and `*reader`.
/// Both are yours to release. Errors: `BCV_E_BAD_HANDLE`, `BCV_E_CLOSED` after shutdown, `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_pipe_new(
    runtime: bcv_handle_t,
    capacity: usize,
    writer: *mut bcv_handle_t,
    reader: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if writer.is_null() || reader.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        match rt.pipe(capacity) {
            Ok((w, r)) => {
                put(writer, table::insert(Object::Writer(w)));
                put(reader, table::insert(Object::Reader(r)))
            }
            Err(c) => fail(runtime, &c.into()),
        }
    })
}

/// Reads up to `cap` bytes into `buf`, waiting up to `timeout_ms`; writes the count to `*n`.
///
/// Returns `BCV_OK` (n > 0), `BCV_EOF` only at a clean end (the writer finished), `BCV_E_CLOSED` when the
/// stream was cut short or closed (reason: `bcv_close_reason`), `BCV_E_BUSY`, `BCV_E_TIMEOUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_read(
    reader_handle: bcv_handle_t,
    buf: *mut u8,
    cap: usize,
    n: *mut usize,
    timeout_ms: i64,
) -> bcv_status_t {
    guard(|| {
        if buf.is_null() || n.is_null() || cap == 0 {
            return fail_with(BCV_E_INVALID, "buffer is NULL or empty, or n is NULL");
        }
        let o = try_status!(reader(reader_handle));
        let Object::Reader(r) = &*o else { return BCV_E_WRONG_TYPE };
        // SAFETY: the caller owns `cap` writable bytes at `buf` for the duration of the call.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
        // SAFETY: checked non-NULL.
        unsafe { *n = 0 };
        match r.read_blocking(slice, timeout_of(timeout_ms)) {
            Ok(0) => BCV_EOF,
            Ok(got) => {
                // SAFETY: checked non-NULL.
                unsafe { *n = got };
                BCV_OK
            }
            Err(e) => fail(reader_handle, &e),
        }
    })
}

/// Writes all `len` bytes of `data`, waiting up to `timeout_ms` while the buffer is full; writes how many
/// were accepted to `*accepted` (may be NULL). Errors: `BCV_E_CLOSED` (the reader went away: PEER_DROPPED,
/// or this end was closed), `BCV_E_BUSY`, `BCV_E_TIMEOUT`, `BCV_E_INVALID` (write after finish).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_write(
    writer_handle: bcv_handle_t,
    data: *const u8,
    len: usize,
    accepted: *mut usize,
    timeout_ms: i64,
) -> bcv_status_t {
    guard(|| {
        if data.is_null() && len > 0 {
            return fail_with(BCV_E_INVALID, "data is NULL");
        }
        let o = try_status!(writer(writer_handle));
        let Object::Writer(w) = &*o else { return BCV_E_WRONG_TYPE };
        let slice: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: the caller provides `len` readable bytes at `data`.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let (status, n) = match w.write_blocking(slice, timeout_of(timeout_ms)) {
            Ok(()) => (BCV_OK, len),
            Err(e) => (fail(writer_handle, &e.error), e.accepted),
        };
        if !accepted.is_null() {
            // SAFETY: non-NULL caller storage.
            unsafe { *accepted = n };
        }
        status
    })
}

/// Ends the stream cleanly: the reader drains, then gets `BCV_EOF`. Idempotent.
/// Errors: `BCV_E_CLOSED` when the reader went away or this end was closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_finish(writer_handle: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let o = try_status!(writer(writer_handle));
        let Object::Writer(w) = &*o else { return BCV_E_WRONG_TYPE };
        match w.finish() {
            Ok(()) => BCV_OK,
            Err(e) => fail(writer_handle, &e),
        }
    })
}

/// Reads the stream to its clean end into `*out` (free with `bcv_bytes_free`). Errors: as
/// `bcv_stream_read`; on error nothing is returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_collect(reader_handle: bcv_handle_t, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(reader(reader_handle));
        let Object::Reader(r) = &*o else { return BCV_E_WRONG_TYPE };
        match r.read_to_end_blocking() {
            Ok(b) => {
                // SAFETY: non-NULL caller storage.
                unsafe { *out = bcv_bytes_t::from_vec(b.to_vec()) };
                BCV_OK
            }
            Err(e) => fail(reader_handle, &e),
        }
    })
}

/// A reader that yields a copy of `len` bytes at `data`, then a clean end.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_from_bytes(
    runtime: bcv_handle_t,
    data: *const u8,
    len: usize,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if data.is_null() && len > 0 {
            return fail_with(BCV_E_INVALID, "data is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let bytes = if len == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller provides `len` readable bytes.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        };
        match rt.stream_from_bytes(bytes) {
            Ok(r) => put(out, table::insert(Object::Reader(r))),
            Err(c) => fail(runtime, &c.into()),
        }
    })
}

/// Copies `from` into `to` in the background until EOF, then finishes `to`. Consumes both handles (they
/// become invalid). Errors travel: a cut-short `from` ends `to`'s reader with UPSTREAM; a reader of `to`
/// going away releases `from` (its producer sees PEER_DROPPED).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_pipe_spawn(runtime: bcv_handle_t, from: bcv_handle_t, to: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let rt = try_status!(runtime_of(runtime));
        // Validate both before consuming either.
        try_status!(reader(from));
        try_status!(writer(to));
        let r = try_status!(consume_reader(from));
        let w = match consume_writer(to) {
            Ok(w) => w,
            Err(code) => {
                drop(r);
                return code;
            }
        };
        rt.spawn_pipe(r, w);
        BCV_OK
    })
}

struct CallbackCtx {
    callback: unsafe extern "C" fn(*mut c_void, bcv_status_t, *const u8, usize),
    user_data: *mut c_void,
    free: bcv_user_data_free_t,
}

// SAFETY: the C caller promises the callback and user_data may be used from a bcv thread (documented).
unsafe impl Send for CallbackCtx {}

impl Drop for CallbackCtx {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: called exactly once (Drop), with no bcv lock held (C4).
            unsafe { free(self.user_data) };
        }
    }
}

/// Delivers the stream to `callback` chunk by chunk on a bcv thread (see `bcv_data_callback_t`).
/// `user_data_free` (may be NULL) runs exactly once when delivery ends, even when this call fails.
/// Errors: `BCV_E_BUSY` when a read is in progress, `BCV_E_CLOSED`, `BCV_E_INVALID` (NULL callback).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_stream_on_data(
    reader_handle: bcv_handle_t,
    callback: bcv_data_callback_t,
    user_data: *mut c_void,
    user_data_free: bcv_user_data_free_t,
) -> bcv_status_t {
    guard(|| {
        let Some(cb) = callback else {
            if let Some(free) = user_data_free {
                // SAFETY: exactly once, as documented.
                unsafe { free(user_data) };
            }
            return fail_with(BCV_E_INVALID, "callback is NULL");
        };
        let ctx = CallbackCtx { callback: cb, user_data, free: user_data_free };
        let o = try_status!(reader(reader_handle));
        let Object::Reader(r) = &*o else { return BCV_E_WRONG_TYPE };
        let result = r.on_data(move |event| {
            let ctx = &ctx;
            // SAFETY: the C callback contract above; `data` is borrowed for the call only.
            unsafe {
                match event {
                    StreamEvent::Data(chunk) => (ctx.callback)(ctx.user_data, BCV_OK, chunk.as_ptr(), chunk.len()),
                    StreamEvent::End => (ctx.callback)(ctx.user_data, BCV_EOF, std::ptr::null(), 0),
                    StreamEvent::Error(e) => {
                        let code = fail(reader_handle, &e);
                        (ctx.callback)(ctx.user_data, code, std::ptr::null(), 0)
                    }
                }
            }
        });
        match result {
            Ok(()) => BCV_OK,
            Err(e) => fail(reader_handle, &e),
        }
    })
}
