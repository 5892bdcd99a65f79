//! Resource-class handles: `Resource` (files, transformers), `FileSink`, `TcpListener`, `TcpSocket`.
//!
//! Dropping one of them while it is still open is legal (its children keep working, option 2) but emits a
//! `ResourceWarning` and records strict-mode V4, as asyncio does for unclosed transports (P5).

use std::net::{SocketAddr, ToSocketAddrs};

use bcv_core::handle::{Error, FileSink, FutureReader, Resource, Runtime, TcpListener, TcpSocket};
use pyo3::PyTraverseError;
use pyo3::exceptions::PyOSError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::aio::{self, Chain};
use crate::errors;
use crate::handle::{HasSlot, Slot, Wait, call, duration, handle_class, warn_unclosed};
use crate::stream::{PyReadStream, PyWriteStream};
use crate::tls::{PyTlsSession, Side, handshake, handshake_blocking, pem};

/// A resource with no methods of its own: an open file, or a transformer (gzip, AES-GCM).
///
/// Owns one reference. Dropping it does not stop the work: the output stream keeps it alive and the
/// transformer runs until its input ends. `close()` stops it: the output stream then raises
/// `ClosedError(PARENT)` and the input's writer gets `ClosedError(PEER_DROPPED)`.
#[pyclass(frozen, name = "Resource", module = "bcv")]
pub(crate) struct PyResource {
    slot: Slot<Resource>,
}

impl PyResource {
    pub(crate) fn new(resource: Resource) -> PyResource {
        PyResource { slot: Slot::new(resource) }
    }
}

impl HasSlot for PyResource {
    type Target = Resource;
    const CLASS: &'static str = "Resource";
    fn slot(&self) -> &Slot<Resource> {
        &self.slot
    }
}

impl Drop for PyResource {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyResource {});

/// A file being written from a stream (`bcv.write_file`).
///
/// `writer` is the stream to write to (call `finish()` at the end), `resource` the file. `wait()` returns
/// the number of bytes once the file is complete and synced. The handle methods (`close`, `state`, ...)
/// act on `resource`; closing it leaves the file partial.
#[pyclass(frozen, name = "FileSink", module = "bcv")]
pub(crate) struct PyFileSink {
    resource: Py<PyResource>,
    writer: Py<PyWriteStream>,
    done: Slot<FutureReader<Result<u64, String>>>,
    chain: Chain,
}

impl HasSlot for PyFileSink {
    type Target = Resource;
    const CLASS: &'static str = "FileSink";
    fn slot(&self) -> &Slot<Resource> {
        self.resource.get().slot()
    }
}

impl PyFileSink {
    pub(crate) fn new(py: Python<'_>, sink: FileSink) -> PyResult<PyFileSink> {
        Ok(PyFileSink {
            resource: Py::new(py, PyResource::new(sink.resource))?,
            writer: Py::new(py, PyWriteStream::new(sink.writer))?,
            done: Slot::new(sink.done),
            chain: Chain::default(),
        })
    }
}

fn file_outcome(py: Python<'_>, r: Result<Result<u64, String>, Error>) -> PyResult<u64> {
    match r {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(message)) => Err(PyOSError::new_err(message)),
        Err(e) => Err(errors::to_pyerr(py, e)),
    }
}

handle_class!(PyFileSink {
    /// The stream to write the file's content to; `finish()` it to complete the file.
    #[getter]
    fn writer(&self, py: Python<'_>) -> Py<PyWriteStream> {
        self.writer.clone_ref(py)
    }

    /// The file resource.
    #[getter]
    fn resource(&self, py: Python<'_>) -> Py<PyResource> {
        self.resource.clone_ref(py)
    }

    /// Waits until the file is complete and synced; returns its size in bytes.
    ///
    /// Raises `OSError` if writing failed or the writer was closed or dropped without `finish()` (the file
    /// is then partial), `ClosedError` if the sink was closed, `bcv.TimeoutError` after `timeout` seconds
    /// (nothing lost; call again).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u64> {
        errors::enter(py)?;
        let done = self.done.get(py)?;
        let limit = duration(timeout)?;
        let r = match call(py, limit, |t| done.wait_blocking(t)) {
            Ok(v) => Ok(v),
            Err(Wait::Op(e)) => Err(e),
            Err(Wait::Py(e)) => return Err(e),
        };
        file_outcome(py, r)
    }

    /// Awaitable `wait()`.
    fn wait_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let done = slf.get().done.get(slf.py())?;
        aio::spawn(slf.as_any(), Some(&slf.get().chain), async move { done.wait().await }, |py, r| {
            file_outcome(py, r).and_then(|n| Ok(n.into_pyobject(py)?.into_any().unbind()))
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.resource)?;
        visit.call(&self.writer)
    }
});

/// Resolves `host`/`port` (blocking DNS lookup; run without the GIL).
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| Error::io(format!("resolving {host}:{port}"), e))?.collect();
    if addrs.is_empty() {
        return Err(Error::io(format!("resolving {host}:{port}"), std::io::Error::other("no address found")));
    }
    Ok(addrs)
}

pub(crate) fn addr_tuple(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// Binds a listener on the first address of `host`/`port` that works.
pub(crate) fn listen(rt: &Runtime, host: &str, port: u16) -> Result<TcpListener, Error> {
    let mut last = None;
    for addr in resolve(host, port)? {
        match rt.tcp_listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::InvalidArgument(format!("no address for {host}"))))
}

/// Connects to the first address of `host`/`port` that accepts, within `timeout`.
pub(crate) fn connect(
    rt: &Runtime,
    host: &str,
    port: u16,
    timeout: Option<std::time::Duration>,
) -> Result<TcpSocket, Error> {
    let mut last = None;
    for addr in resolve(host, port)? {
        let attempt = rt.block_on(async {
            match timeout {
                Some(t) => tokio::time::timeout(t, rt.tcp_connect(addr)).await.unwrap_or(Err(Error::Timeout(t))),
                None => rt.tcp_connect(addr).await,
            }
        })?;
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::InvalidArgument(format!("no address for {host}"))))
}

/// Async form of [`connect`] (no time limit; use `asyncio.wait_for`).
pub(crate) async fn connect_async(host: String, port: u16) -> Result<TcpSocket, Error> {
    let rt = Runtime::global();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Error::io(format!("resolving {host}:{port}"), e))?
        .collect();
    let mut last = Error::io(format!("resolving {host}:{port}"), std::io::Error::other("no address found"));
    for addr in addrs {
        match rt.tcp_connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A listening TCP socket (`bcv.tcp_listen`).
///
/// Owns one reference. `close()` frees the port once pending accepts have been cancelled;
/// `close_and_wait()` returns after that, so the port can be bound again right away.
#[pyclass(frozen, name = "TcpListener", module = "bcv")]
pub(crate) struct PyTcpListener {
    slot: Slot<TcpListener>,
    local: SocketAddr,
}

impl PyTcpListener {
    pub(crate) fn new(listener: TcpListener) -> PyTcpListener {
        let local = listener.local_addr();
        PyTcpListener { slot: Slot::new(listener), local }
    }
}

impl HasSlot for PyTcpListener {
    type Target = TcpListener;
    const CLASS: &'static str = "TcpListener";
    fn slot(&self) -> &Slot<TcpListener> {
        &self.slot
    }
}

impl Drop for PyTcpListener {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyTcpListener {
    /// Waits for the next connection. Raises `ClosedError` once the listener is closed, `OSError`,
    /// `bcv.TimeoutError` after `timeout` seconds. Not interruptible by Ctrl-C; use a timeout in a loop.
    #[pyo3(signature = (timeout = None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyTcpSocket> {
        errors::enter(py)?;
        let l = self.slot.get(py)?;
        let limit = duration(timeout)?;
        let socket = py.detach(|| l.accept_blocking(limit)).map_err(|e| errors::to_pyerr(py, e))?;
        Ok(PyTcpSocket::new(socket))
    }

    /// Awaitable `accept()`.
    fn aaccept<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let l = slf.get().slot.get(slf.py())?;
        aio::spawn(slf.as_any(), None, async move { l.accept().await }, |py, r| match r {
            Ok(s) => Ok(Py::new(py, PyTcpSocket::new(s))?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }

    /// The bound address as `(host, port)`; the real port when bound to port 0. Readable after close.
    #[getter]
    fn local_addr(&self) -> (String, u16) {
        addr_tuple(self.local)
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.local.port()
    }
});

/// A connected TCP socket with a receive stream and a send stream, each taken once.
///
/// Owns one reference. Dropping it leaves both streams working; the connection's fd is closed once the
/// receive stream has ended and the send stream was finished (or both were released), even while this
/// handle is alive. `close()` ends both streams with `ClosedError(PARENT)` and closes the connection.
#[pyclass(frozen, name = "TcpSocket", module = "bcv")]
pub(crate) struct PyTcpSocket {
    slot: Slot<TcpSocket>,
    peer: SocketAddr,
    local: SocketAddr,
}

impl PyTcpSocket {
    pub(crate) fn new(socket: TcpSocket) -> PyTcpSocket {
        let (peer, local) = (socket.peer_addr(), socket.local_addr());
        PyTcpSocket { slot: Slot::new(socket), peer, local }
    }
}

impl HasSlot for PyTcpSocket {
    type Target = TcpSocket;
    const CLASS: &'static str = "TcpSocket";
    fn slot(&self) -> &Slot<TcpSocket> {
        &self.slot
    }
}

impl Drop for PyTcpSocket {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyTcpSocket {
    /// Takes the receive stream (once): bytes from the peer, `b''` after its FIN. Releasing it without
    /// reading to the end shuts the reading side down. Raises `AlreadyTakenError` the second time.
    fn take_receive(&self, py: Python<'_>) -> PyResult<PyReadStream> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        s.take_receive().map(PyReadStream::new).map_err(|e| errors::to_pyerr(py, e))
    }

    /// Takes the send stream (once). `finish()` sends FIN; dropping or closing it unfinished resets the
    /// connection, so the peer never mistakes it for a clean end. Raises `AlreadyTakenError` the second
    /// time.
    fn take_send(&self, py: Python<'_>) -> PyResult<PyWriteStream> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        s.take_send().map(PyWriteStream::new).map_err(|e| errors::to_pyerr(py, e))
    }

    /// Starts TLS as a client and waits for the handshake; returns the `TlsSession`.
    ///
    /// The server's certificate is verified for `server_name` against the PEM certificates in
    /// `trusted_roots_pem` (`str` or bytes). The session takes this socket's receive and send streams (also
    /// when the handshake fails) and is a dependent child of it: `close()` on the socket ends the session's
    /// streams with `ClosedError(PARENT)`. Raises `AuthenticationError` when the handshake fails
    /// (untrusted certificate, wrong name), `AlreadyTakenError` if a stream was taken,
    /// `InvalidArgumentError` for a bad name or PEM, `bcv.TimeoutError` after `timeout` seconds (the
    /// socket's streams are then gone), `ClosedError`.
    #[pyo3(signature = (server_name, trusted_roots_pem, timeout = None))]
    fn start_tls_client(
        &self,
        py: Python<'_>,
        server_name: String,
        trusted_roots_pem: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTlsSession> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let side = Side::Client { server_name, roots: pem(trusted_roots_pem)? };
        let limit = duration(timeout)?;
        let tls = py.detach(|| handshake_blocking(s, side, limit)).map_err(|e| errors::to_pyerr(py, e))?;
        Ok(PyTlsSession::new(tls))
    }

    /// Starts TLS as a server with the PEM certificate chain `cert_pem` and private key `key_pem` (`str` or
    /// bytes) and waits for the handshake; returns the `TlsSession`. Errors as `start_tls_client`.
    #[pyo3(signature = (cert_pem, key_pem, timeout = None))]
    fn start_tls_server(
        &self,
        py: Python<'_>,
        cert_pem: &Bound<'_, PyAny>,
        key_pem: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTlsSession> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let side = Side::Server { cert: pem(cert_pem)?, key: pem(key_pem)? };
        let limit = duration(timeout)?;
        let tls = py.detach(|| handshake_blocking(s, side, limit)).map_err(|e| errors::to_pyerr(py, e))?;
        Ok(PyTlsSession::new(tls))
    }

    /// Awaitable `start_tls_client` (no time limit of its own; use `asyncio.wait_for`).
    fn astart_tls_client<'py>(
        slf: &Bound<'py, Self>,
        server_name: String,
        trusted_roots_pem: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let s = slf.get().slot.get(slf.py())?;
        let side = Side::Client { server_name, roots: pem(trusted_roots_pem)? };
        aio::spawn(slf.as_any(), None, handshake(s, side), |py, r| match r {
            Ok(tls) => Ok(Py::new(py, PyTlsSession::new(tls))?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }

    /// Awaitable `start_tls_server` (no time limit of its own; use `asyncio.wait_for`).
    fn astart_tls_server<'py>(
        slf: &Bound<'py, Self>,
        cert_pem: &Bound<'py, PyAny>,
        key_pem: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let s = slf.get().slot.get(slf.py())?;
        let side = Side::Server { cert: pem(cert_pem)?, key: pem(key_pem)? };
        aio::spawn(slf.as_any(), None, handshake(s, side), |py, r| match r {
            Ok(tls) => Ok(Py::new(py, PyTlsSession::new(tls))?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }

    /// The peer's address `(host, port)`: a snapshot, readable after close.
    #[getter]
    fn peer_addr(&self) -> (String, u16) {
        addr_tuple(self.peer)
    }

    /// The local address `(host, port)`: a snapshot, readable after close.
    #[getter]
    fn local_addr(&self) -> (String, u16) {
        addr_tuple(self.local)
    }
});
