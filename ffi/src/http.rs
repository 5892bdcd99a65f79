//! HTTP/1.1: a server handing out incoming requests, a client receiving incoming responses; bodies are
//! streams, trailers are futures, response bodies are write ends.

use std::ffi::c_char;

use bcv_core::handle::HttpFields;

use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::io::{addr, c_str, copy_out};
use crate::stream::{bcv_bytes_t, consume_reader, reader, try_status};
use crate::table::{self, Object};

/// One header field passed to bcv (borrowed for the call).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_http_field_t {
    /// Field name, NUL-terminated.
    pub name: *const c_char,
    /// Field value, NUL-terminated.
    pub value: *const c_char,
}

fn fields_in(fields: *const bcv_http_field_t, count: usize) -> Result<HttpFields, bcv_status_t> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if fields.is_null() {
        return Err(fail_with(BCV_E_INVALID, "fields is NULL"));
    }
    // SAFETY: the caller provides `count` fields, each with NUL-terminated strings valid for the call.
    let slice = unsafe { std::slice::from_raw_parts(fields, count) };
    slice
        .iter()
        .map(|f| Ok((c_str(f.name, "field name")?.to_owned(), c_str(f.value, "field value")?.to_owned())))
        .collect()
}

fn message(handle: bcv_handle_t) -> Result<std::sync::Arc<Object>, bcv_status_t> {
    let o = table::get(handle)?;
    match &*o {
        Object::HttpMessage(_) => Ok(o),
        other => Err(table::wrong_type(handle, other, "http message")),
    }
}

/// Serves HTTP/1.1 on `address` ("127.0.0.1:0" picks a port; see `bcv_http_local_addr`).
/// Errors: `BCV_E_IO` naming the address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_serve(
    runtime: bcv_handle_t,
    address: *const c_char,
    server: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let rt = try_status!(runtime_of(runtime));
        let a = try_status!(addr(address));
        match rt.http_serve(a) {
            Ok(s) => put(server, table::insert(Object::HttpServer(s))),
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Writes the server's bound address into `buf` like `bcv_tcp_local_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_local_addr(
    server: bcv_handle_t,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(server));
        let Object::HttpServer(s) = &*o else { return table::wrong_type(server, &o, "http server") };
        let n = copy_out(&s.local_addr().to_string(), buf, cap);
        if !len.is_null() {
            // SAFETY: non-NULL caller storage.
            unsafe { *len = n };
        }
        BCV_OK
    })
}

/// Waits up to `timeout_ms` for the next request on `server`. Errors: `BCV_E_TIMEOUT`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_next_request(
    server: bcv_handle_t,
    timeout_ms: i64,
    request: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if request.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(table::get(server));
        let Object::HttpServer(s) = &*o else { return table::wrong_type(server, &o, "http server") };
        match s.next_request_blocking(timeout_of(timeout_ms)) {
            Ok(m) => put(request, table::insert(Object::HttpMessage(m))),
            Err(e) => fail(server, &e),
        }
    })
}

/// Sends a request and waits for the response head; writes the response to `*response`. `body` is a
/// stream reader to send as the request body (consumed), or 0 for none. Errors: `BCV_E_INVALID` (URL,
/// method, field), `BCV_E_IO` naming the URL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_request(
    runtime: bcv_handle_t,
    method: *const c_char,
    url: *const c_char,
    fields: *const bcv_http_field_t,
    field_count: usize,
    body: bcv_handle_t,
    response: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if response.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let method = try_status!(c_str(method, "method"));
        let url = try_status!(c_str(url, "url"));
        let headers = try_status!(fields_in(fields, field_count));
        let body = if body == 0 {
            None
        } else {
            try_status!(reader(body));
            Some(try_status!(consume_reader(body)))
        };
        match rt.http_request_blocking(method, url, &headers, body) {
            Ok(m) => put(response, table::insert(Object::HttpMessage(m))),
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Writes the response status (or 0 for a request) to `*status`. Errors: `BCV_E_CLOSED` once closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_status(msg: bcv_handle_t, status: *mut u32) -> bcv_status_t {
    guard(|| {
        let o = try_status!(message(msg));
        let Object::HttpMessage(m) = &*o else { return BCV_E_WRONG_TYPE };
        match m.head() {
            Ok(h) => {
                if !status.is_null() {
                    // SAFETY: non-NULL caller storage.
                    unsafe { *status = h.status.map(u32::from).unwrap_or(0) };
                }
                BCV_OK
            }
            Err(e) => fail(msg, &e),
        }
    })
}

/// Copies the request method and target ("GET", "/path?q") into the buffers (NUL-terminated, truncated to
/// their capacity; either may be NULL). Empty for a response. Errors: `BCV_E_CLOSED` once closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_request_line(
    msg: bcv_handle_t,
    method: *mut c_char,
    method_cap: usize,
    target: *mut c_char,
    target_cap: usize,
) -> bcv_status_t {
    guard(|| {
        let o = try_status!(message(msg));
        let Object::HttpMessage(m) = &*o else { return BCV_E_WRONG_TYPE };
        match m.head() {
            Ok(h) => {
                copy_out(h.method.as_deref().unwrap_or(""), method, method_cap);
                copy_out(h.uri.as_deref().unwrap_or(""), target, target_cap);
                BCV_OK
            }
            Err(e) => fail(msg, &e),
        }
    })
}

/// Copies the first value of header `name` into `buf` (NUL-terminated, truncated to `cap`) and its full
/// length to `*len`. Returns `BCV_EOF` when there is no such header. Errors: `BCV_E_CLOSED` once closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_header(
    msg: bcv_handle_t,
    name: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        let name = try_status!(c_str(name, "name"));
        let o = try_status!(message(msg));
        let Object::HttpMessage(m) = &*o else { return BCV_E_WRONG_TYPE };
        match m.header(name) {
            Ok(Some(v)) => {
                let n = copy_out(&v, buf, cap);
                if !len.is_null() {
                    // SAFETY: non-NULL caller storage.
                    unsafe { *len = n };
                }
                BCV_OK
            }
            Ok(None) => BCV_EOF,
            Err(e) => fail(msg, &e),
        }
    })
}

/// Takes the body stream and the trailers future (once). Both keep working after the message is released
/// and end with PARENT if it is closed. Errors: `BCV_E_ALREADY_TAKEN`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_take_body(
    msg: bcv_handle_t,
    body: *mut bcv_handle_t,
    trailers: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if body.is_null() || trailers.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(message(msg));
        let Object::HttpMessage(m) = &*o else { return BCV_E_WRONG_TYPE };
        match m.take_body() {
            Ok((b, t)) => {
                put(body, table::insert(Object::Reader(b)));
                put(trailers, table::insert(Object::Trailers(t)))
            }
            Err(e) => fail(msg, &e),
        }
    })
}

/// Waits up to `timeout_ms` for the trailers; writes them to `*out` as "name: value\r\n" lines (empty when
/// the message had none; free with `bcv_bytes_free`). Errors: `BCV_E_CLOSED` (ABANDONED when the body was
/// released or closed first, PARENT when the message was closed), `BCV_E_TIMEOUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_trailers_wait(
    trailers: bcv_handle_t,
    timeout_ms: i64,
    out: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(table::get(trailers));
        let Object::Trailers(t) = &*o else { return table::wrong_type(trailers, &o, "trailers future") };
        match t.wait_blocking(timeout_of(timeout_ms)) {
            Ok(fields) => {
                let text: String = fields.unwrap_or_default().iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
                // SAFETY: non-NULL caller storage.
                unsafe { *out = bcv_bytes_t::from_vec(text.into_bytes()) };
                BCV_OK
            }
            Err(e) => fail(trailers, &e),
        }
    })
}

/// Starts the response to a request with `status` and header fields; writes its body's write end to
/// `*body` (finish it to complete the response; releasing it unfinished aborts the connection).
/// Errors: `BCV_E_ALREADY_TAKEN`, `BCV_E_INVALID`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_http_respond(
    request: bcv_handle_t,
    status: u32,
    fields: *const bcv_http_field_t,
    field_count: usize,
    body: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if body.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let headers = try_status!(fields_in(fields, field_count));
        let Ok(status) = u16::try_from(status) else { return fail_with(BCV_E_INVALID, "status out of range") };
        let o = try_status!(message(request));
        let Object::HttpMessage(m) = &*o else { return BCV_E_WRONG_TYPE };
        match m.respond(status, &headers) {
            Ok(w) => put(body, table::insert(Object::Writer(w))),
            Err(e) => fail(request, &e),
        }
    })
}
