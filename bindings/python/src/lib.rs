//! Python binding of bcv: the extension module `bcv._bcv`.
//!
//! It converts and adapts only; every rule of `shared/design/LIFETIMES.md` is implemented by
//! `bcv_core::handle`. Python objects hold one external reference each (drop = release, P1), blocking calls
//! run with the GIL released, awaitables complete from the bcv runtime's executor, and every call starts by
//! raising a strict-mode violation queued on its thread.
//!
//! The block-cache VFS (`Vfs`, `Job`, `Container`) is in `vfs`; the SQL connection and statement under the
//! pure-Python DB-API (`bcv/dbapi.py`) in `sql`.

use std::path::PathBuf;
use std::time::Duration;

use bcv_core::handle::{AEAD_KEY_LEN, DEFAULT_CAPACITY, Error, Runtime};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

mod aio;
mod daemon;
mod errors;
mod future;
mod handle;
mod http;
mod proxy;
mod resource;
mod scope;
mod secure;
mod sql;
mod stream;
mod tls;
mod vfs;

use future::{PyFutureReader, PyFutureWriter};
use http::{PyHttpHead, PyHttpServer, PyIncomingMessage, PyTrailers};
use resource::{PyFileSink, PyResource, PyTcpListener, PyTcpSocket};
use scope::PyScope;
use stream::{PyReadStream, PyWriteStream, to_bytes};
use tls::PyTlsSession;

fn rt() -> &'static Runtime {
    Runtime::global()
}

fn py_err(py: Python<'_>) -> impl Fn(Error) -> PyErr + '_ {
    move |e| errors::to_pyerr(py, e)
}

/// Creates a pipe with a buffer of `capacity` bytes; returns `(writer, reader)`.
///
/// The writer blocks while the buffer is full. The reader sees a clean end of stream only after
/// `writer.finish()`. Raises `ClosedError(RUNTIME_SHUTDOWN)` after `shutdown()`.
#[pyfunction]
#[pyo3(signature = (capacity = DEFAULT_CAPACITY))]
fn pipe(py: Python<'_>, capacity: usize) -> PyResult<(PyWriteStream, PyReadStream)> {
    errors::enter(py)?;
    let (w, r) = rt().pipe(capacity).map_err(|c| errors::closed_error(py, c, None, None))?;
    Ok((PyWriteStream::new(w), PyReadStream::new(r)))
}

/// A stream that yields `data` (any bytes-like object) and then a clean end of stream.
#[pyfunction]
fn stream_from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyReadStream> {
    errors::enter(py)?;
    let data = to_bytes(data)?;
    let r = rt().stream_from_bytes(data).map_err(|c| errors::closed_error(py, c, None, None))?;
    Ok(PyReadStream::new(r))
}

/// Streams the file at `path`; returns `(file, stream)`.
///
/// Closing `file` ends the stream with `ClosedError(PARENT)`. Raises `OSError` (e.g. `FileNotFoundError`)
/// naming the path if it cannot be opened.
#[pyfunction]
fn read_file(py: Python<'_>, path: PathBuf) -> PyResult<(PyResource, PyReadStream)> {
    errors::enter(py)?;
    let (res, stream) = py.detach(|| rt().read_file(&path)).map_err(py_err(py))?;
    Ok((PyResource::new(res), PyReadStream::new(stream)))
}

/// Creates (or truncates) the file at `path` and returns a `FileSink`: write to `sink.writer`, `finish()`
/// it, then `sink.wait()` returns the size once the file is synced. Raises `OSError` naming the path.
#[pyfunction]
fn write_file(py: Python<'_>, path: PathBuf) -> PyResult<PyFileSink> {
    errors::enter(py)?;
    let sink = py.detach(|| rt().write_file(&path)).map_err(py_err(py))?;
    PyFileSink::new(py, sink)
}

/// Validates a level before the input is consumed (a rejected call leaves `input` usable).
fn check_level(py: Python<'_>, level: u32) -> PyResult<()> {
    if level > 9 {
        return Err(errors::to_pyerr(py, Error::InvalidArgument(format!("gzip level {level} is not in 0..=9"))));
    }
    Ok(())
}

fn check_key(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bytes::Bytes> {
    let key = to_bytes(key)?;
    if key.len() != AEAD_KEY_LEN {
        let msg = format!("AES-256-GCM needs a {AEAD_KEY_LEN}-byte key, got {} bytes", key.len());
        return Err(errors::to_pyerr(py, Error::InvalidArgument(msg)));
    }
    Ok(key)
}

/// Gzip-compresses `input` at `level` (0-9); returns `(transformer, output)`.
///
/// `input` is consumed (it then behaves as closed). Dropping the transformer does not stop it; closing it
/// ends `output` with `ClosedError(PARENT)`. Raises `InvalidArgumentError` for a bad level (`input` is then
/// left untouched), `BusyError` while an operation is in flight on `input`.
#[pyfunction]
#[pyo3(signature = (input, level = 6))]
fn gzip_compress(py: Python<'_>, input: &Bound<'_, PyReadStream>, level: u32) -> PyResult<(PyResource, PyReadStream)> {
    errors::enter(py)?;
    check_level(py, level)?;
    let input = input.get().take(py)?;
    let (res, out) = rt().gzip_compress(input, level).map_err(py_err(py))?;
    Ok((PyResource::new(res), PyReadStream::new(out)))
}

/// Gzip-decompresses `input` (consumed; concatenated members are read one after another); returns
/// `(transformer, output)`. A truncated or corrupt input makes `output` raise `CorruptError`, never a clean
/// end of stream.
#[pyfunction]
fn gzip_decompress(py: Python<'_>, input: &Bound<'_, PyReadStream>) -> PyResult<(PyResource, PyReadStream)> {
    errors::enter(py)?;
    let input = input.get().take(py)?;
    let (res, out) = rt().gzip_decompress(input).map_err(py_err(py))?;
    Ok((PyResource::new(res), PyReadStream::new(out)))
}

/// Encrypts `input` (consumed) with AES-256-GCM in authenticated 64 KiB chunks under the 32-byte `key`;
/// returns `(transformer, output)`. Raises `InvalidArgumentError` for a bad key (`input` left untouched).
#[pyfunction]
fn aead_encrypt(
    py: Python<'_>,
    input: &Bound<'_, PyReadStream>,
    key: &Bound<'_, PyAny>,
) -> PyResult<(PyResource, PyReadStream)> {
    errors::enter(py)?;
    let key = check_key(py, key)?;
    let input = input.get().take(py)?;
    let (res, out) = rt().aead_encrypt(input, &key).map_err(py_err(py))?;
    Ok((PyResource::new(res), PyReadStream::new(out)))
}

/// Decrypts a stream made by `aead_encrypt` (consumed); returns `(transformer, output)`.
///
/// Plaintext is released only after its chunk's tag checked out. A wrong key, tampering or truncation
/// makes `output` raise `AuthenticationError` (or `ClosedError(UPSTREAM)` if the input was cut short),
/// never a clean end of stream.
#[pyfunction]
fn aead_decrypt(
    py: Python<'_>,
    input: &Bound<'_, PyReadStream>,
    key: &Bound<'_, PyAny>,
) -> PyResult<(PyResource, PyReadStream)> {
    errors::enter(py)?;
    let key = check_key(py, key)?;
    let input = input.get().take(py)?;
    let (res, out) = rt().aead_decrypt(input, &key).map_err(py_err(py))?;
    Ok((PyResource::new(res), PyReadStream::new(out)))
}

/// Binds a TCP listener on `host`:`port` (port 0 picks a free port; see `listener.port`). Raises `OSError`
/// (e.g. `errno.EADDRINUSE`) naming the address.
#[pyfunction]
fn tcp_listen(py: Python<'_>, host: String, port: u16) -> PyResult<PyTcpListener> {
    errors::enter(py)?;
    let l = py.detach(|| resource::listen(rt(), &host, port)).map_err(py_err(py))?;
    Ok(PyTcpListener::new(l))
}

/// Connects to `host`:`port`. Raises `OSError` naming the address, `bcv.TimeoutError` after `timeout`
/// seconds, `WouldDeadlockError` inside an SDK callback.
#[pyfunction]
#[pyo3(signature = (host, port, timeout = None))]
fn tcp_connect(py: Python<'_>, host: String, port: u16, timeout: Option<f64>) -> PyResult<PyTcpSocket> {
    errors::enter(py)?;
    let limit = handle::duration(timeout)?;
    let s = py.detach(|| resource::connect(rt(), &host, port, limit)).map_err(py_err(py))?;
    Ok(PyTcpSocket::new(s))
}

/// Awaitable `tcp_connect` (no time limit of its own; use `asyncio.wait_for`).
#[pyfunction]
fn atcp_connect<'py>(py: Python<'py>, host: String, port: u16) -> PyResult<Bound<'py, PyAny>> {
    errors::enter(py)?;
    aio::spawn(py.None().bind(py), None, resource::connect_async(host, port), |py, r| match r {
        Ok(s) => Ok(Py::new(py, PyTcpSocket::new(s))?.into_any()),
        Err(e) => Err(errors::to_pyerr(py, e)),
    })
}

/// Serves HTTP/1.1 on `host`:`port` (port 0 picks a free port; see `server.local_port`). Raises `OSError`
/// (e.g. `errno.EADDRINUSE`) naming the address.
#[pyfunction]
fn http_serve(py: Python<'_>, host: String, port: u16) -> PyResult<PyHttpServer> {
    errors::enter(py)?;
    let s = py.detach(|| http::serve(rt(), &host, port)).map_err(py_err(py))?;
    Ok(PyHttpServer::new(s))
}

/// Sends an HTTP/1.1 request to `url` (`http://` only) and waits for the response head; returns the
/// response as an `IncomingMessage` (read its body with `take_body()`).
///
/// `headers` is a mapping or a list of `(name, value)` pairs. `body` is a bytes-like object or a
/// `ReadStream`, which is consumed (even if the request fails) and streamed as the request body; a stream
/// cut short aborts the request. Raises `InvalidArgumentError` for a bad URL, method or header, `OSError`
/// (e.g. `ConnectionRefusedError`) naming the URL when the exchange fails, `bcv.TimeoutError` if no response
/// head arrived within `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (method, url, headers = None, body = None, timeout = None))]
fn http_request(
    py: Python<'_>,
    method: String,
    url: String,
    headers: Option<&Bound<'_, PyAny>>,
    body: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<PyIncomingMessage> {
    errors::enter(py)?;
    let limit = handle::duration(timeout)?;
    let headers = http::to_fields(headers)?;
    let body = http::to_body(py, body)?;
    let m = py.detach(|| http::request(rt(), &method, &url, &headers, body, limit)).map_err(py_err(py))?;
    Ok(PyIncomingMessage::new(m))
}

/// Awaitable `http_request` (no time limit of its own; use `asyncio.wait_for`).
#[pyfunction]
#[pyo3(signature = (method, url, headers = None, body = None))]
fn ahttp_request<'py>(
    py: Python<'py>,
    method: String,
    url: String,
    headers: Option<&Bound<'py, PyAny>>,
    body: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    errors::enter(py)?;
    let headers = http::to_fields(headers)?;
    let body = http::to_body(py, body)?;
    let fut = async move { rt().http_request(&method, &url, &headers, body).await };
    aio::spawn(py.None().bind(py), None, fut, |py, r| match r {
        Ok(m) => Ok(Py::new(py, PyIncomingMessage::new(m))?.into_any()),
        Err(e) => Err(errors::to_pyerr(py, e)),
    })
}

/// Creates a one-shot future carrying one Python object; returns `(writer, reader)`.
#[pyfunction(name = "future")]
fn new_future(py: Python<'_>) -> PyResult<(PyFutureWriter, PyFutureReader)> {
    errors::enter(py)?;
    let (w, r) = rt().future::<Py<PyAny>>().map_err(|c| errors::closed_error(py, c, None, None))?;
    Ok((PyFutureWriter::new(w), PyFutureReader::new(r)))
}

/// Copies `src` into `dst` in the background until the end of `src`, then finishes `dst`. Both are
/// consumed. If `dst`'s reader goes away, `src`'s producer gets `ClosedError(PEER_DROPPED)`; if `src` is cut
/// short with reason r, `dst`'s reader gets `ClosedError(UPSTREAM)` with `upstream == r`.
#[pyfunction]
fn spawn_pipe(py: Python<'_>, src: &Bound<'_, PyReadStream>, dst: &Bound<'_, PyWriteStream>) -> PyResult<()> {
    errors::enter(py)?;
    let from = src.get().take(py)?;
    let to = match dst.get().take(py) {
        Ok(to) => to,
        Err(e) => {
            src.get().put_back(from);
            return Err(e);
        }
    };
    rt().spawn_pipe(from, to);
    Ok(())
}

/// A new ownership scope, to use as `with bcv.scope():`.
#[pyfunction(name = "scope")]
fn new_scope(py: Python<'_>) -> PyResult<PyScope> {
    errors::enter(py)?;
    Ok(PyScope::new())
}

/// Runtime counters: `{"live_nodes": int, "created_nodes": int, "violations": {"V1": int, ..., "V6": int},
/// "live": [(id, label, state), ...]}` (the nodes not yet torn down, oldest first).
#[pyfunction]
fn diagnostics(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    errors::enter(py)?;
    let d = rt().diagnostics();
    let out = PyDict::new(py);
    out.set_item("live_nodes", d.live_nodes)?;
    out.set_item("created_nodes", d.created_nodes)?;
    let violations = PyDict::new(py);
    for (i, n) in d.violations.iter().enumerate() {
        violations.set_item(format!("V{}", i + 1), n)?;
    }
    out.set_item("violations", violations)?;
    let live = PyList::empty(py);
    for (id, label, state) in rt().live_node_report() {
        live.append((id, label, format!("{state:?}").to_uppercase()))?;
    }
    out.set_item("live", live)?;
    Ok(out)
}

/// The most recent strict-mode diagnostics (oldest first), as dicts with `kind`, `node_id`, `node_label`,
/// `creation_backtrace`.
#[pyfunction]
fn strict_diagnostics(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    errors::enter(py)?;
    let out = PyList::empty(py);
    for d in rt().strict_diagnostics() {
        let item = PyDict::new(py);
        item.set_item("kind", d.kind.code())?;
        item.set_item("node_id", d.node_id)?;
        item.set_item("node_label", d.node_label)?;
        item.set_item("creation_backtrace", d.creation_backtrace)?;
        out.append(item)?;
    }
    Ok(out)
}

/// Shuts the runtime down: closes every node with `RUNTIME_SHUTDOWN`, cancels operations, runs callback
/// destructors and waits until no node is left or `timeout` seconds pass. Idempotent; afterwards every call
/// raises `ClosedError(RUNTIME_SHUTDOWN)` and dropping objects only frees memory. Registered at exit.
///
/// Raises `bcv.TimeoutError` (with `stuck_node_ids`) at the deadline, `WouldDeadlockError` inside an SDK
/// callback.
#[pyfunction]
#[pyo3(signature = (timeout = 2.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<()> {
    errors::enter(py)?;
    let limit = handle::duration(Some(timeout))?.unwrap_or(Duration::MAX);
    py.detach(|| rt().shutdown(limit)).map_err(|e| errors::shutdown_error(py, e))
}

/// True once `shutdown()` has started.
#[pyfunction]
fn is_shut_down() -> bool {
    rt().is_shut_down()
}

/// Waits until every release made so far has been processed by the SDK's reaper thread.
#[pyfunction]
fn reaper_flush(py: Python<'_>) -> PyResult<()> {
    errors::enter(py)?;
    py.detach(|| rt().reaper_flush()).map_err(py_err(py))
}

/// Waits until the live-node count is 0 or `timeout` seconds pass; returns the final count.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
fn wait_idle(py: Python<'_>, timeout: f64) -> PyResult<usize> {
    errors::enter(py)?;
    let limit = handle::duration(Some(timeout))?.unwrap_or(Duration::MAX);
    Ok(py.detach(|| rt().wait_idle(limit)))
}

/// Raises the oldest strict-mode violation queued on this thread as `StrictModeViolation`, if any.
#[pyfunction]
fn check(py: Python<'_>) -> PyResult<()> {
    errors::enter(py)
}

#[pymodule]
fn _bcv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let threading = py.import("threading")?;
    if threading.call_method0("current_thread")?.is(&threading.call_method0("main_thread")?) {
        handle::set_main_thread();
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_CAPACITY", DEFAULT_CAPACITY)?;
    m.add("AEAD_KEY_LEN", AEAD_KEY_LEN)?;
    m.add_class::<PyReadStream>()?;
    m.add_class::<PyWriteStream>()?;
    m.add_class::<PyResource>()?;
    m.add_class::<PyFileSink>()?;
    m.add_class::<PyTcpListener>()?;
    m.add_class::<PyTcpSocket>()?;
    m.add_class::<PyTlsSession>()?;
    m.add_class::<PyFutureWriter>()?;
    m.add_class::<PyFutureReader>()?;
    m.add_class::<PyScope>()?;
    m.add_class::<PyHttpServer>()?;
    m.add_class::<PyHttpHead>()?;
    m.add_class::<PyIncomingMessage>()?;
    m.add_class::<PyTrailers>()?;
    m.add_class::<vfs::PyVfs>()?;
    m.add_class::<vfs::PyJob>()?;
    m.add_class::<vfs::PyContainer>()?;
    m.add_class::<secure::PySecure>()?;
    m.add_class::<daemon::PyDaemon>()?;
    proxy::register(m)?;
    m.add_function(wrap_pyfunction!(secure::generate_key, m)?)?;
    m.add_class::<sql::PySqlConnection>()?;
    m.add_class::<sql::PySqlStatement>()?;
    m.add_function(wrap_pyfunction!(pipe, m)?)?;
    m.add_function(wrap_pyfunction!(stream_from_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(read_file, m)?)?;
    m.add_function(wrap_pyfunction!(write_file, m)?)?;
    m.add_function(wrap_pyfunction!(gzip_compress, m)?)?;
    m.add_function(wrap_pyfunction!(gzip_decompress, m)?)?;
    m.add_function(wrap_pyfunction!(aead_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(aead_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(tcp_listen, m)?)?;
    m.add_function(wrap_pyfunction!(tcp_connect, m)?)?;
    m.add_function(wrap_pyfunction!(atcp_connect, m)?)?;
    m.add_function(wrap_pyfunction!(tls::self_signed_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(http_serve, m)?)?;
    m.add_function(wrap_pyfunction!(http_request, m)?)?;
    m.add_function(wrap_pyfunction!(ahttp_request, m)?)?;
    m.add_function(wrap_pyfunction!(new_future, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_pipe, m)?)?;
    m.add_function(wrap_pyfunction!(new_scope, m)?)?;
    m.add_function(wrap_pyfunction!(diagnostics, m)?)?;
    m.add_function(wrap_pyfunction!(strict_diagnostics, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_shut_down, m)?)?;
    m.add_function(wrap_pyfunction!(reaper_flush, m)?)?;
    m.add_function(wrap_pyfunction!(wait_idle, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(stream::_gc_phase, m)?)?;
    m.add_function(wrap_pyfunction!(handle::_before_exit, m)?)?;
    Ok(())
}
