//! TLS over a TCP socket: `TcpSocket.start_tls_client` / `start_tls_server` return a `TlsSession`, a
//! dependent child of the socket (closing the socket ends the session's streams with `ClosedError(PARENT)`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bcv_core::handle::{Error, TcpSocket, TlsSession};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors;
use crate::handle::{HasSlot, Slot, handle_class, warn_unclosed};
use crate::resource::addr_tuple;
use crate::stream::{PyReadStream, PyWriteStream, to_bytes};

/// PEM text given as `str` or a bytes-like object.
pub(crate) fn pem(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if value.is_instance_of::<PyString>() {
        return Ok(value.extract::<String>()?.into_bytes());
    }
    Ok(to_bytes(value)?.to_vec())
}

/// Which side of the handshake to run, with its owned arguments.
pub(crate) enum Side {
    Client { server_name: String, roots: Vec<u8> },
    Server { cert: Vec<u8>, key: Vec<u8> },
}

/// Runs the handshake on the bcv executor.
pub(crate) async fn handshake(socket: Arc<TcpSocket>, side: Side) -> Result<TlsSession, Error> {
    match side {
        Side::Client { server_name, roots } => socket.start_tls_client(&server_name, &roots).await,
        Side::Server { cert, key } => socket.start_tls_server(&cert, &key).await,
    }
}

/// The handshake, blocking the calling thread (run without the GIL), within `timeout`.
pub(crate) fn handshake_blocking(
    socket: Arc<TcpSocket>,
    side: Side,
    timeout: Option<Duration>,
) -> Result<TlsSession, Error> {
    let rt = crate::rt();
    rt.block_on(async move {
        match timeout {
            Some(t) => tokio::time::timeout(t, handshake(socket, side)).await.unwrap_or(Err(Error::Timeout(t))),
            None => handshake(socket, side).await,
        }
    })?
}

/// A TLS session over a `TcpSocket` (`TcpSocket.start_tls_client` / `start_tls_server`), with a plaintext
/// receive stream and send stream, each taken once.
///
/// Owns one reference. It is a dependent child of its socket: dropping the session leaves its streams
/// working, and closing the socket (or the session) ends them with `ClosedError(PARENT)`. A stream cut
/// short below (a reset, a peer gone without close_notify) never looks like a clean end.
#[pyclass(frozen, name = "TlsSession", module = "bcv")]
pub(crate) struct PyTlsSession {
    slot: Slot<TlsSession>,
    peer: SocketAddr,
}

impl PyTlsSession {
    pub(crate) fn new(session: TlsSession) -> PyTlsSession {
        let peer = session.peer_addr();
        PyTlsSession { slot: Slot::new(session), peer }
    }

    /// The session for a method that needs it open. Errors: `ClosedError` with the close reason.
    fn open(&self, py: Python<'_>) -> PyResult<Arc<TlsSession>> {
        let s = self.slot.get(py)?;
        match s.close_reason() {
            Some(c) => Err(errors::closed_error(py, c, None, None)),
            None => Ok(s),
        }
    }
}

impl HasSlot for PyTlsSession {
    type Target = TlsSession;
    const CLASS: &'static str = "TlsSession";
    fn slot(&self) -> &Slot<TlsSession> {
        &self.slot
    }
}

impl Drop for PyTlsSession {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyTlsSession {
    /// Takes the plaintext receive stream (once): `b''` only after the peer's close_notify. Raises
    /// `AlreadyTakenError` the second time, `ClosedError` once the session is closed.
    fn take_receive(&self, py: Python<'_>) -> PyResult<PyReadStream> {
        errors::enter(py)?;
        let s = self.open(py)?;
        s.take_receive().map(PyReadStream::new).map_err(|e| errors::to_pyerr(py, e))
    }

    /// Takes the plaintext send stream (once). `finish()` sends close_notify, then FIN; dropping or
    /// closing it unfinished resets the connection. Raises `AlreadyTakenError` the second time,
    /// `ClosedError` once the session is closed.
    fn take_send(&self, py: Python<'_>) -> PyResult<PyWriteStream> {
        errors::enter(py)?;
        let s = self.open(py)?;
        s.take_send().map(PyWriteStream::new).map_err(|e| errors::to_pyerr(py, e))
    }

    /// The peer's address `(host, port)`: a snapshot, readable after close.
    #[getter]
    fn peer_address(&self) -> (String, u16) {
        addr_tuple(self.peer)
    }

    /// Same as `peer_address` (the spelling of `TcpSocket.peer_addr`).
    #[getter]
    fn peer_addr(&self) -> (String, u16) {
        addr_tuple(self.peer)
    }
});

/// Makes a self-signed certificate for `names` (a DNS name or IP address, or a list of them); returns
/// `(cert_pem, key_pem)`. For tests and development servers: give `cert_pem` to the client as its trusted
/// root. Raises `InvalidArgumentError` for a name that cannot go in a certificate.
#[pyfunction]
pub(crate) fn self_signed_certificate(py: Python<'_>, names: &Bound<'_, PyAny>) -> PyResult<(String, String)> {
    errors::enter(py)?;
    let names: Vec<String> =
        if names.is_instance_of::<PyString>() { vec![names.extract()?] } else { names.extract()? };
    let made = py.detach(|| bcv_core::handle::self_signed_certificate(&names)).map_err(|e| errors::to_pyerr(py, e))?;
    Ok((made.cert_pem, made.key_pem))
}
