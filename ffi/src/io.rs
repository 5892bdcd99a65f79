//! Files and TCP sockets.

use std::ffi::{CStr, c_char};
use std::net::SocketAddr;

use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::stream::try_status;
use crate::table::{self, Object};

pub(crate) fn c_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, bcv_status_t> {
    if s.is_null() {
        return Err(fail_with(BCV_E_INVALID, &format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string valid for this call.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| fail_with(BCV_E_INVALID, &format!("{what} is not UTF-8")))
}

pub(crate) fn addr(s: *const c_char) -> Result<SocketAddr, bcv_status_t> {
    let text = c_str(s, "address")?;
    text.parse().map_err(|_| fail_with(BCV_E_INVALID, &format!("'{text}' is not an address like 127.0.0.1:8080")))
}

/// Copies `text` into `buf` (NUL-terminated, truncated to `cap`); returns the full length without NUL.
pub(crate) fn copy_out(text: &str, buf: *mut c_char, cap: usize) -> usize {
    if !buf.is_null() && cap > 0 {
        let n = text.len().min(cap - 1);
        // SAFETY: the caller provides `cap` writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}

/// Streams the file at `path`: writes the file resource to `*file` and its reader to `*reader`.
/// Closing the file ends the reader with PARENT. Errors: `BCV_E_IO` naming the path.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_file_read(
    runtime: bcv_handle_t,
    path: *const c_char,
    file: *mut bcv_handle_t,
    reader: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if file.is_null() || reader.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let path = try_status!(c_str(path, "path"));
        match rt.read_file(path) {
            Ok((res, r)) => {
                put(file, table::insert(Object::Resource(res)));
                put(reader, table::insert(Object::Reader(r)))
            }
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Creates (truncates) the file at `path` and returns the file resource, a writer, and a completion handle
/// for `bcv_file_wait`. The file is complete only after `bcv_stream_finish(writer)` and a successful wait.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_file_write(
    runtime: bcv_handle_t,
    path: *const c_char,
    file: *mut bcv_handle_t,
    writer: *mut bcv_handle_t,
    done: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if file.is_null() || writer.is_null() || done.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let path = try_status!(c_str(path, "path"));
        match rt.write_file(path) {
            Ok(sink) => {
                put(file, table::insert(Object::Resource(sink.resource)));
                put(writer, table::insert(Object::Writer(sink.writer)));
                put(done, table::insert(Object::FileDone(sink.done)))
            }
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Waits up to `timeout_ms` for a file written by `bcv_file_write` to be complete and synced; writes the
/// byte count to `*written` (may be NULL). Errors: `BCV_E_IO` (message says why the file is partial).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_file_wait(done: bcv_handle_t, timeout_ms: i64, written: *mut u64) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(done));
        let Object::FileDone(f) = &*o else { return table::wrong_type(done, &o, "file completion future") };
        match f.wait_blocking(timeout_of(timeout_ms)) {
            Ok(Ok(n)) => {
                if !written.is_null() {
                    // SAFETY: non-NULL caller storage.
                    unsafe { *written = n };
                }
                BCV_OK
            }
            Ok(Err(msg)) => fail_with(BCV_E_IO, &msg),
            Err(e) => fail(done, &e),
        }
    })
}

/// Listens on `address` ("127.0.0.1:0" picks a port; see `bcv_tcp_local_addr`). Errors: `BCV_E_IO`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_listen(
    runtime: bcv_handle_t,
    address: *const c_char,
    listener: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let rt = try_status!(runtime_of(runtime));
        let a = try_status!(addr(address));
        match rt.tcp_listen(a) {
            Ok(l) => put(listener, table::insert(Object::Listener(l))),
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Accepts a connection, waiting up to `timeout_ms`. Errors: `BCV_E_TIMEOUT`, `BCV_E_CLOSED`, `BCV_E_IO`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_accept(
    listener: bcv_handle_t,
    timeout_ms: i64,
    socket: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if socket.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let o = try_status!(table::get(listener));
        let Object::Listener(l) = &*o else { return table::wrong_type(listener, &o, "tcp listener") };
        match l.accept_blocking(timeout_of(timeout_ms)) {
            Ok(s) => put(socket, table::insert(Object::Socket(s))),
            Err(e) => fail(listener, &e),
        }
    })
}

/// Connects to `address`. Errors: `BCV_E_IO` naming the address, `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_connect(
    runtime: bcv_handle_t,
    address: *const c_char,
    socket: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if socket.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let a = try_status!(addr(address));
        match rt.tcp_connect_blocking(a) {
            Ok(s) => put(socket, table::insert(Object::Socket(s))),
            Err(e) => fail(runtime, &e),
        }
    })
}

/// Takes the socket's receive stream (once). Errors: `BCV_E_ALREADY_TAKEN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_take_receive(socket: bcv_handle_t, reader: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(socket));
        let Object::Socket(s) = &*o else { return table::wrong_type(socket, &o, "tcp socket") };
        match s.take_receive() {
            Ok(r) => put(reader, table::insert(Object::Reader(r))),
            Err(e) => fail(socket, &e),
        }
    })
}

/// Takes the socket's send stream (once). Finishing it sends FIN; releasing it unfinished resets the
/// connection. Errors: `BCV_E_ALREADY_TAKEN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_take_send(socket: bcv_handle_t, writer: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(socket));
        let Object::Socket(s) = &*o else { return table::wrong_type(socket, &o, "tcp socket") };
        match s.take_send() {
            Ok(w) => put(writer, table::insert(Object::Writer(w))),
            Err(e) => fail(socket, &e),
        }
    })
}

/// Writes the local address of a listener or socket ("127.0.0.1:4321") into `buf` (NUL-terminated,
/// truncated to `cap`); writes the full length to `*len` (may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_local_addr(
    handle: bcv_handle_t,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(handle));
        let a = match &*o {
            Object::Listener(l) => l.local_addr(),
            Object::Socket(s) => s.local_addr(),
            other => return table::wrong_type(handle, other, "tcp listener or socket"),
        };
        let n = copy_out(&a.to_string(), buf, cap);
        if !len.is_null() {
            // SAFETY: non-NULL caller storage.
            unsafe { *len = n };
        }
        BCV_OK
    })
}

/// Writes the socket's peer address (a snapshot, readable after close) into `buf` like
/// `bcv_tcp_local_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tcp_peer_addr(
    socket: bcv_handle_t,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(socket));
        let Object::Socket(s) = &*o else { return table::wrong_type(socket, &o, "tcp socket") };
        let n = copy_out(&s.peer_addr().to_string(), buf, cap);
        if !len.is_null() {
            // SAFETY: non-NULL caller storage.
            unsafe { *len = n };
        }
        BCV_OK
    })
}
