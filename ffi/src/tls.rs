//! TLS sessions over TCP sockets, and self-signed certificates for tests and development.

use std::ffi::c_char;

use crate::error::*;
use crate::handle::{bcv_handle_t, put};
use crate::io::c_str;
use crate::stream::{bcv_bytes_t, try_status};
use crate::table::{self, Object};

fn bytes_in<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a [u8], bcv_status_t> {
    if data.is_null() {
        return Err(fail_with(BCV_E_INVALID, &format!("{what} is NULL")));
    }
    // SAFETY: the caller provides `len` readable bytes valid for this call.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Makes a self-signed certificate for the `count` names (DNS names or IP addresses) and writes the
/// certificate and its private key, both PEM, to `*cert_pem` and `*key_pem` (free with `bcv_bytes_free`).
/// Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tls_self_signed(
    names: *const *const c_char,
    count: usize,
    cert_pem: *mut bcv_bytes_t,
    key_pem: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        if names.is_null() || count == 0 || cert_pem.is_null() || key_pem.is_null() {
            return fail_with(BCV_E_INVALID, "names, cert_pem or key_pem is NULL, or no name given");
        }
        // SAFETY: the caller provides `count` NUL-terminated strings.
        let ptrs = unsafe { std::slice::from_raw_parts(names, count) };
        let mut list = Vec::with_capacity(count);
        for &p in ptrs {
            list.push(try_status!(c_str(p, "name")).to_owned());
        }
        match bcv_core::handle::self_signed_certificate(&list) {
            Ok(made) => {
                // SAFETY: both checked non-NULL.
                unsafe {
                    *cert_pem = bcv_bytes_t::from_vec(made.cert_pem.into_bytes());
                    *key_pem = bcv_bytes_t::from_vec(made.key_pem.into_bytes());
                }
                BCV_OK
            }
            Err(e) => fail(0, &e),
        }
    })
}

fn start(
    socket: bcv_handle_t,
    session: *mut bcv_handle_t,
    run: impl FnOnce(&bcv_core::handle::TcpSocket) -> bcv_core::handle::Result<bcv_core::handle::TlsSession>,
) -> bcv_status_t {
    if session.is_null() {
        return fail_with(BCV_E_INVALID, "output pointer is NULL");
    }
    let o = try_status!(table::get(socket));
    let Object::Socket(s) = &*o else { return table::wrong_type(socket, &o, "tcp socket") };
    match run(s) {
        Ok(t) => put(session, table::insert(Object::Tls(t))),
        Err(e) => fail(socket, &e),
    }
}

/// Starts TLS as a client on `socket` (whose streams must not have been taken), verifying the server's
/// certificate for `server_name` against the PEM roots. The session is a dependent child of the socket.
/// Errors: `BCV_E_AUTH` (handshake failed: untrusted certificate, wrong name), `BCV_E_ALREADY_TAKEN`,
/// `BCV_E_INVALID`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tls_client(
    socket: bcv_handle_t,
    server_name: *const c_char,
    roots_pem: *const u8,
    roots_len: usize,
    session: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let name = try_status!(c_str(server_name, "server_name"));
        let roots = try_status!(bytes_in(roots_pem, roots_len, "roots_pem"));
        start(socket, session, |s| s.start_tls_client_blocking(name, roots))
    })
}

/// Starts TLS as a server on `socket` with a PEM certificate chain and private key. Errors as
/// `bcv_tls_client`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tls_server(
    socket: bcv_handle_t,
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
    session: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let cert = try_status!(bytes_in(cert_pem, cert_len, "cert_pem"));
        let key = try_status!(bytes_in(key_pem, key_len, "key_pem"));
        start(socket, session, |s| s.start_tls_server_blocking(cert, key))
    })
}

/// Takes the session's plaintext receive stream (once). Errors: `BCV_E_ALREADY_TAKEN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tls_take_receive(session: bcv_handle_t, reader: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(session));
        let Object::Tls(t) = &*o else { return table::wrong_type(session, &o, "tls session") };
        match t.take_receive() {
            Ok(r) => put(reader, table::insert(Object::Reader(r))),
            Err(e) => fail(session, &e),
        }
    })
}

/// Takes the session's plaintext send stream (once): finishing it sends close_notify then FIN; releasing
/// it unfinished resets the connection. Errors: `BCV_E_ALREADY_TAKEN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_tls_take_send(session: bcv_handle_t, writer: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let o = try_status!(table::get(session));
        let Object::Tls(t) = &*o else { return table::wrong_type(session, &o, "tls session") };
        match t.take_send() {
            Ok(w) => put(writer, table::insert(Object::Writer(w))),
            Err(e) => fail(session, &e),
        }
    })
}
