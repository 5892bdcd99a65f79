//! HTTP/1.1: `HttpServer`, `IncomingMessage` (a request received by a server, or a response received by
//! `http_request`), its detached `HttpHead` snapshot and its `Trailers` future.
//!
//! The message is a resource; its body stream and trailers future are dependent children (LIFETIMES.md,
//! the motivating case): releasing the message leaves them working, closing it ends them with
//! `ClosedError(PARENT)`, and closing or releasing the body first abandons it (trailers end with
//! `ClosedError(ABANDONED)`).

use std::net::SocketAddr;

use bcv_core::handle::{Error, FutureReader, HttpFields, HttpHead, HttpServer, IncomingMessage, ReadStream, Runtime};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::aio::{self, Chain};
use crate::errors;
use crate::handle::{HasSlot, Slot, call_py, duration, handle_class, warn_unclosed};
use crate::resource::{addr_tuple, resolve};
use crate::stream::{PyReadStream, PyWriteStream, to_bytes};

/// Header fields from Python: `None`, a mapping (its `items()`) or an iterable of `(name, value)` pairs.
pub(crate) fn to_fields(headers: Option<&Bound<'_, PyAny>>) -> PyResult<HttpFields> {
    let Some(headers) = headers.filter(|h| !h.is_none()) else { return Ok(Vec::new()) };
    let items = if headers.hasattr("items")? { headers.call_method0("items")? } else { headers.clone() };
    items.try_iter()?.map(|pair| pair?.extract::<(String, String)>()).collect()
}

/// A request body from Python: `None`, a bytes-like object, or a `ReadStream` (consumed).
pub(crate) fn to_body(py: Python<'_>, body: Option<&Bound<'_, PyAny>>) -> PyResult<Option<ReadStream>> {
    let Some(body) = body.filter(|b| !b.is_none()) else { return Ok(None) };
    if let Ok(stream) = body.cast::<PyReadStream>() {
        return stream.get().take(py).map(Some);
    }
    let data = to_bytes(body)?;
    crate::rt().stream_from_bytes(data).map(Some).map_err(|c| errors::closed_error(py, c, None, None))
}

/// Binds an HTTP server on the first address of `host`/`port` that works.
pub(crate) fn serve(rt: &Runtime, host: &str, port: u16) -> Result<HttpServer, Error> {
    let mut last = None;
    for addr in resolve(host, port)? {
        match rt.http_serve(addr) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::InvalidArgument(format!("no address for {host}"))))
}

/// An HTTP/1.1 server (`bcv.http_serve`): accepts connections and hands out requests.
///
/// Owns one reference. `close()` stops accepting, frees the port and aborts the connections still open
/// (requests in flight end with `ClosedError`). Dropping it while open emits a `ResourceWarning`.
#[pyclass(frozen, name = "HttpServer", module = "bcv")]
pub(crate) struct PyHttpServer {
    slot: Slot<HttpServer>,
    local: SocketAddr,
}

impl PyHttpServer {
    pub(crate) fn new(server: HttpServer) -> PyHttpServer {
        let local = server.local_addr();
        PyHttpServer { slot: Slot::new(server), local }
    }
}

impl HasSlot for PyHttpServer {
    type Target = HttpServer;
    const CLASS: &'static str = "HttpServer";
    fn slot(&self) -> &Slot<HttpServer> {
        &self.slot
    }
}

impl Drop for PyHttpServer {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyHttpServer {
    /// Waits for the next request and returns it as an `IncomingMessage`.
    ///
    /// Raises `ClosedError` once the server is closed, `bcv.TimeoutError` after `timeout` seconds (no
    /// request is lost; call again).
    #[pyo3(signature = (timeout = None))]
    fn next_request(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyIncomingMessage> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let limit = duration(timeout)?;
        call_py(py, limit, |t| s.next_request_blocking(t)).map(PyIncomingMessage::new)
    }

    /// Awaitable `next_request()`; cancelling the awaiting task loses no request.
    fn anext_request<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let s = slf.get().slot.get(slf.py())?;
        aio::spawn(slf.as_any(), None, async move { s.next_request().await }, |py, r| match r {
            Ok(m) => Ok(Py::new(py, PyIncomingMessage::new(m))?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }

    /// The bound address as `(host, port)`. Readable after close.
    #[getter]
    fn local_address(&self) -> (String, u16) {
        addr_tuple(self.local)
    }

    /// The bound port (the real one when bound to port 0). Readable after close.
    #[getter]
    fn local_port(&self) -> u16 {
        self.local.port()
    }
});

/// A detached snapshot of a message head (`IncomingMessage.head()`): keeps working after the message is
/// closed or released.
#[pyclass(frozen, name = "HttpHead", module = "bcv")]
pub(crate) struct PyHttpHead {
    head: HttpHead,
}

#[pymethods]
impl PyHttpHead {
    /// The request method (`"GET"`, ...), or `None` for a response.
    #[getter]
    fn method(&self) -> Option<&str> {
        self.head.method.as_deref()
    }

    /// The request target (`"/path?query"`), or `None` for a response.
    #[getter]
    fn target(&self) -> Option<&str> {
        self.head.uri.as_deref()
    }

    /// The response status, or `None` for a request.
    #[getter]
    fn status(&self) -> Option<u16> {
        self.head.status
    }

    /// The header fields in order, as `(name, value)` pairs (names in lower case).
    #[getter]
    fn headers(&self) -> HttpFields {
        self.head.headers.clone()
    }

    /// The first value of header `name` (case-insensitive), or `None`.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let what = match (&self.head.method, &self.head.uri, self.head.status) {
            (Some(m), Some(u), _) => format!("{m} {}", PyString::new(py, u).repr()?),
            (_, _, Some(s)) => s.to_string(),
            _ => String::new(),
        };
        Ok(format!("<bcv.HttpHead {what} ({} headers)>", self.head.headers.len()))
    }
}

/// An incoming HTTP message: a request received by an `HttpServer`, or the response returned by
/// `bcv.http_request`.
///
/// Owns one reference to a resource whose body stream and trailers (`take_body()`) are dependent children:
/// dropping the message leaves them working; `close()` ends them with `ClosedError(PARENT)`. Dropping it
/// while its body is still arriving emits a `ResourceWarning` (the body keeps working).
#[pyclass(frozen, name = "IncomingMessage", module = "bcv")]
pub(crate) struct PyIncomingMessage {
    slot: Slot<IncomingMessage>,
}

impl PyIncomingMessage {
    pub(crate) fn new(message: IncomingMessage) -> PyIncomingMessage {
        PyIncomingMessage { slot: Slot::new(message) }
    }

    fn head_of(&self, py: Python<'_>) -> PyResult<HttpHead> {
        errors::enter(py)?;
        self.slot.get(py)?.head().map_err(|e| errors::to_pyerr(py, e))
    }
}

impl HasSlot for PyIncomingMessage {
    type Target = IncomingMessage;
    const CLASS: &'static str = "IncomingMessage";
    fn slot(&self) -> &Slot<IncomingMessage> {
        &self.slot
    }
}

impl Drop for PyIncomingMessage {
    fn drop(&mut self) {
        warn_unclosed(&self.slot, Self::CLASS);
    }
}

handle_class!(PyIncomingMessage {
    /// The response status, or `None` for a request. Raises `ClosedError` once closed.
    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<Option<u16>> {
        Ok(self.head_of(py)?.status)
    }

    /// The request method, or `None` for a response. Raises `ClosedError` once closed.
    #[getter]
    fn method(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.head_of(py)?.method)
    }

    /// The request target (`"/path?query"`), or `None` for a response. Raises `ClosedError` once closed.
    #[getter]
    fn target(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.head_of(py)?.uri)
    }

    /// The header fields in order, as `(name, value)` pairs. Raises `ClosedError` once closed.
    #[getter]
    fn headers(&self, py: Python<'_>) -> PyResult<HttpFields> {
        Ok(self.head_of(py)?.headers)
    }

    /// The first value of header `name` (case-insensitive), or `None`. Raises `ClosedError` once closed.
    fn header(&self, py: Python<'_>, name: &str) -> PyResult<Option<String>> {
        Ok(self.head_of(py)?.header(name).map(str::to_owned))
    }

    /// A detached `HttpHead` snapshot that keeps working after this message is closed or released.
    /// Raises `ClosedError` once closed.
    fn head(&self, py: Python<'_>) -> PyResult<PyHttpHead> {
        Ok(PyHttpHead { head: self.head_of(py)? })
    }

    /// Takes the body stream and the trailers future, once: `(body, trailers)`.
    ///
    /// Both keep working after this message is dropped and end with `ClosedError(PARENT)` if it is
    /// closed. Closing or dropping `body` before its end abandons it (the connection is not reused) and
    /// `trailers` then raises `ClosedError(ABANDONED)`. Raises `AlreadyTakenError` the second time,
    /// `ClosedError` once closed.
    fn take_body(&self, py: Python<'_>) -> PyResult<(PyReadStream, PyTrailers)> {
        errors::enter(py)?;
        let (body, trailers) = self.slot.get(py)?.take_body().map_err(|e| errors::to_pyerr(py, e))?;
        Ok((PyReadStream::new(body), PyTrailers::new(trailers)))
    }

    /// Server side: sends the response head and returns the response body's `WriteStream`; `finish()`
    /// completes the response, dropping or closing it unfinished aborts the connection. `headers` is a
    /// mapping or a list of `(name, value)` pairs.
    ///
    /// The writer keeps working after this request is dropped. Raises `AlreadyTakenError` on a second
    /// response (or on a client-side response), `InvalidArgumentError` for a bad status or header,
    /// `ClosedError` once closed.
    #[pyo3(signature = (status, headers = None))]
    fn respond(&self, py: Python<'_>, status: u16, headers: Option<&Bound<'_, PyAny>>) -> PyResult<PyWriteStream> {
        errors::enter(py)?;
        let m = self.slot.get(py)?;
        let headers = to_fields(headers)?;
        m.respond(status, &headers).map(PyWriteStream::new).map_err(|e| errors::to_pyerr(py, e))
    }

    /// Server side: responds with the complete `body` (bytes-like). Errors as for `respond`.
    #[pyo3(signature = (status, headers = None, body = None))]
    fn respond_with(
        &self,
        py: Python<'_>,
        status: u16,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        errors::enter(py)?;
        let m = self.slot.get(py)?;
        let headers = to_fields(headers)?;
        let body = match body {
            Some(b) => to_bytes(b)?,
            None => bytes::Bytes::new(),
        };
        py.detach(|| m.respond_with(status, &headers, body)).map_err(|e| errors::to_pyerr(py, e))
    }
});

/// The trailers of an incoming message: a one-shot future (`IncomingMessage.take_body()`).
///
/// `wait()` / `await trailers` gives the trailer fields as a list of `(name, value)` pairs, or `None` when
/// the message had none, once the body has been read to its end.
#[pyclass(frozen, name = "Trailers", module = "bcv")]
pub(crate) struct PyTrailers {
    slot: Slot<FutureReader<Option<HttpFields>>>,
    chain: Chain,
}

impl PyTrailers {
    pub(crate) fn new(reader: FutureReader<Option<HttpFields>>) -> PyTrailers {
        PyTrailers { slot: Slot::new(reader), chain: Chain::default() }
    }
}

impl HasSlot for PyTrailers {
    type Target = FutureReader<Option<HttpFields>>;
    const CLASS: &'static str = "Trailers";
    fn slot(&self) -> &Slot<Self::Target> {
        &self.slot
    }
}

handle_class!(PyTrailers {
    /// Waits until the body has ended and returns the trailers (`None` if there were none); taken once
    /// (a second call raises `AlreadyTakenError`).
    ///
    /// Raises `ClosedError(ABANDONED)` if the body was closed or dropped before its end,
    /// `ClosedError(PARENT)` if the message was closed, `ClosedError(PEER_DROPPED)` if the peer cut the
    /// message short, `bcv.TimeoutError` after `timeout` seconds (nothing lost).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<HttpFields>> {
        errors::enter(py)?;
        let r = self.slot.get(py)?;
        let limit = duration(timeout)?;
        call_py(py, limit, |t| r.wait_blocking(t))
    }

    /// Awaitable `wait()` that never blocks the event loop; cancelling the awaiting task leaves the
    /// trailers pending.
    fn wait_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let r = slf.get().slot.get(slf.py())?;
        aio::spawn(slf.as_any(), Some(&slf.get().chain), async move { r.wait().await }, |py, out| match out {
            Ok(fields) => Ok(fields.into_pyobject(py)?.into_any().unbind()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }

    /// `await trailers` is `await trailers.wait_async()`.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::wait_async(slf)?.call_method0("__await__")
    }

    /// True once the trailers or an error are available.
    #[getter]
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        errors::enter(py)?;
        Ok(self.slot.peek().is_none_or(|r| r.is_resolved()))
    }
});

/// `http_request` with an optional time limit for the response head.
pub(crate) fn request(
    rt: &Runtime,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<ReadStream>,
    timeout: Option<std::time::Duration>,
) -> Result<IncomingMessage, Error> {
    match timeout {
        None => rt.http_request_blocking(method, url, headers, body),
        Some(t) => rt.block_on(async {
            tokio::time::timeout(t, rt.http_request(method, url, headers, body)).await.unwrap_or(Err(Error::Timeout(t)))
        })?,
    }
}
