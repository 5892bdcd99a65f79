//! `ReadStream` and `WriteStream`: the two ends of a byte stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::handle::{DEFAULT_CAPACITY, Error, ReadStream, StreamEvent, WriteStream};
use bytes::{Buf, Bytes};
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyStopAsyncIteration, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyTuple};

use crate::aio::{self, Chain};
use crate::errors;
use crate::handle::{HasSlot, Slot, Wait, call, call_py, duration, handle_class, lock};

/// The Python callback registered with `on_data`, shared with the core delivery task. The Python object
/// owns it for the garbage collector (`__traverse__`/`__clear__`); the task only looks it up.
type CallbackSlot = Arc<Mutex<Option<Py<PyAny>>>>;

/// The read end of a byte stream.
///
/// Owns one reference to the end: dropping the object releases it (the writer then gets
/// `ClosedError(PEER_DROPPED)`). Reads return `b''` only at a clean end of stream, after the writer called
/// `finish()`; any other ending raises `ClosedError` once the buffered bytes have been read.
#[pyclass(frozen, name = "ReadStream", module = "bcv")]
pub(crate) struct PyReadStream {
    slot: Slot<ReadStream>,
    callback: CallbackSlot,
    chain: Chain,
}

impl HasSlot for PyReadStream {
    type Target = ReadStream;
    const CLASS: &'static str = "ReadStream";
    fn slot(&self) -> &Slot<ReadStream> {
        &self.slot
    }
}

impl PyReadStream {
    pub(crate) fn new(stream: ReadStream) -> PyReadStream {
        PyReadStream { slot: Slot::new(stream), callback: Arc::new(Mutex::new(None)), chain: Arc::default() }
    }

    /// Moves the core stream out (for a transformer or pipe that consumes it).
    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<ReadStream> {
        self.slot.take(py)
    }

    pub(crate) fn put_back(&self, stream: ReadStream) {
        self.slot.put_back(stream)
    }

    fn chunk_max(max: isize) -> usize {
        if max <= 0 { usize::MAX } else { max as usize }
    }
}

/// Clears the callback slot when the core delivery task ends (terminal state, LIFETIMES.md O4), dropping
/// the Python callback with the interpreter attached when possible.
struct CallbackGuard(CallbackSlot);

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        // The slot is only locked while attached, so a garbage collection running on another thread
        // (`__traverse__`) never finds it locked and always sees the reference it holds.
        let attached = crate::handle::with_python(|_py| {
            let callback = lock(&self.0).take();
            drop(callback);
        });
        if attached.is_none() {
            // Interpreter finalizing: PyO3 defers the decref (the slot is no longer traversed then).
            let callback = lock(&self.0).take();
            drop(callback);
        }
    }
}

/// True while the garbage collector runs (set by `gc.callbacks`, see `_gc_phase`).
static GC_RUNNING: AtomicBool = AtomicBool::new(false);

/// `gc.callbacks` hook: records whether a collection is in progress.
#[pyfunction]
pub(crate) fn _gc_phase(phase: &str, _info: &Bound<'_, PyAny>) {
    GC_RUNNING.store(phase == "start", Ordering::Release);
}

fn deliver(slot: &CallbackSlot, event: StreamEvent) {
    let last = !matches!(event, StreamEvent::Data(_));
    let _ = crate::handle::with_python(|py| {
        // Everything that allocates (and so may start a collection on this thread) happens first.
        let arg: Py<PyAny> = match event {
            StreamEvent::Data(chunk) => PyBytes::new(py, &chunk).into_any().unbind(),
            StreamEvent::End => py.None(),
            StreamEvent::Error(e) => errors::to_pyerr(py, e).into_value(py).into_any(),
        };
        let Ok(args) = PyTuple::new(py, [arg]) else { return };
        // A collection running on another thread may have switched threads in the middle of clearing a
        // cycle that holds the callback: wait until it is over. A collected stream has emptied the slot.
        while GC_RUNNING.load(Ordering::Acquire) {
            py.detach(|| std::thread::sleep(Duration::from_micros(200)));
        }
        // No allocation between this lookup and the call: the callback cannot be cleared in between.
        let callback = lock(slot).as_ref().map(|cb| cb.clone_ref(py));
        let Some(callback) = callback else { return };
        if let Err(e) = callback.bind(py).call1(args) {
            e.write_unraisable(py, Some(callback.bind(py)));
        }
        if last {
            let done = lock(slot).take();
            drop(done);
        }
    });
}

impl Drop for PyReadStream {
    fn drop(&mut self) {
        // The delivery task shares the slot: a stream that is gone must not call its callback again.
        let callback = self.callback.lock().map(|mut s| s.take()).unwrap_or_else(|p| p.into_inner().take());
        drop(callback);
    }
}

handle_class!(PyReadStream {
    /// Reads up to `n` bytes: whatever is available (at least one byte), waiting for data if there is none.
    ///
    /// `n < 0` reads everything up to the clean end of stream. Returns `b''` only at a clean end of stream
    /// (or for `n == 0`). Raises `ClosedError` if the stream was cut short or closed (bytes already
    /// returned stay valid; with `n < 0` the bytes gathered so far are discarded), `BusyError` if another
    /// read is in progress, `bcv.TimeoutError` after `timeout` seconds with nothing read (nothing lost).
    #[pyo3(signature = (n = -1, timeout = None))]
    fn read<'py>(&self, py: Python<'py>, n: isize, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let limit = duration(timeout)?;
        if n == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        if n > 0 {
            let chunk = call_py(py, limit, |t| s.read_chunk_blocking(n as usize, t))?;
            return Ok(PyBytes::new(py, chunk.as_deref().unwrap_or_default()));
        }
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let mut out: Vec<u8> = Vec::new();
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            match call_py(py, left, |t| s.read_chunk_blocking(usize::MAX, t))? {
                Some(chunk) => out.extend_from_slice(&chunk),
                None => return Ok(PyBytes::new(py, &out)),
            }
        }
    }

    /// Returns the next chunk as it was written (at most `max` bytes; `max <= 0` means no limit), or `None`
    /// at a clean end of stream. Errors as for `read`.
    #[pyo3(signature = (max = DEFAULT_CAPACITY as isize, timeout = None))]
    fn read_chunk<'py>(&self, py: Python<'py>, max: isize, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let limit = duration(timeout)?;
        let chunk = call_py(py, limit, |t| s.read_chunk_blocking(Self::chunk_max(max), t))?;
        Ok(chunk.map(|c| PyBytes::new(py, &c)))
    }

    /// Reads into the writable buffer `buf` (bytearray, memoryview, array, ...) and returns the number of
    /// bytes stored: 0 only at a clean end of stream (or for an empty buffer). Errors as for `read`;
    /// `TypeError` for a read-only buffer.
    #[pyo3(signature = (buf, timeout = None))]
    fn readinto(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let limit = duration(timeout)?;
        let view = py.import("builtins")?.getattr("memoryview")?.call1((buf,))?.call_method1("cast", ("B",))?;
        if view.getattr("readonly")?.is_truthy()? {
            return Err(PyTypeError::new_err("readinto() needs a writable buffer"));
        }
        let cap: usize = view.len()?;
        if cap == 0 {
            return Ok(0);
        }
        let chunk = call_py(py, limit, |t| s.read_chunk_blocking(cap, t))?;
        let Some(chunk) = chunk else { return Ok(0) };
        let n = chunk.len();
        view.set_item(pyo3::types::PySlice::new(py, 0, n as isize, 1), PyBytes::new(py, &chunk))?;
        Ok(n)
    }

    /// Number of bytes buffered and ready to read now.
    #[getter]
    fn buffered(&self, py: Python<'_>) -> PyResult<usize> {
        errors::enter(py)?;
        Ok(self.slot.get(py)?.buffered())
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next chunk; `StopIteration` at a clean end of stream, `ClosedError` if cut short.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.read_chunk(py, DEFAULT_CAPACITY as isize, None)
    }

    /// Awaitable `read(n)`: never blocks the event loop. Cancelling the awaiting task cancels the read but
    /// leaves the stream open (a chunk already taken off the stream when the cancellation lands is lost).
    #[pyo3(signature = (n = -1))]
    fn aread<'py>(slf: &Bound<'py, Self>, n: isize) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        errors::enter(py)?;
        let s = slf.get().slot.get(py)?;
        aio::spawn(
            slf.as_any(),
            Some(&slf.get().chain),
            async move {
                match n {
                    0 => Ok(Bytes::new()),
                    n if n > 0 => s.read_chunk(n as usize).await.map(Option::unwrap_or_default),
                    _ => s.read_to_end().await,
                }
            },
            |py, r: Result<Bytes, Error>| match r {
                Ok(b) => Ok(PyBytes::new(py, &b).into_any().unbind()),
                Err(e) => Err(errors::to_pyerr(py, e)),
            },
        )
    }

    /// Awaitable `read_chunk(max)`: the next chunk or `None` at a clean end of stream.
    #[pyo3(signature = (max = DEFAULT_CAPACITY as isize))]
    fn aread_chunk<'py>(slf: &Bound<'py, Self>, max: isize) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        Self::async_chunk(slf, Self::chunk_max(max), false)
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Awaitable next chunk for `async for`; `StopAsyncIteration` at a clean end of stream.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        Self::async_chunk(slf, DEFAULT_CAPACITY, true)
    }

    /// Delivers the stream to `callback` on an SDK thread, chunk by chunk: `callback(chunk: bytes)` for
    /// data, then exactly one final call, `callback(None)` at a clean end of stream or
    /// `callback(error: BcvError)` if the stream was cut short or closed.
    ///
    /// The stream keeps the callback until that final event, or until the stream is released or closed
    /// (no call is made after that). The callback may close or drop this stream and its parent. Exceptions
    /// it raises go to `sys.unraisablehook`. `close_and_wait` inside it raises `WouldDeadlockError`.
    /// Raises `BusyError` if a callback is already registered.
    fn on_data(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        {
            let mut slot = lock(&self.callback);
            if slot.is_some() {
                return Err(errors::to_pyerr(py, Error::Busy("read end (a callback is already registered)")));
            }
            *slot = Some(callback);
        }
        let guard = CallbackGuard(self.callback.clone());
        let registered = s.on_data(move |event| deliver(&guard.0, event));
        if let Err(e) = registered {
            let cb = lock(&self.callback).take();
            drop(cb);
            return Err(errors::to_pyerr(py, e));
        }
        Ok(())
    }

    /// A file-like adapter (`io.RawIOBase`) reading from this stream; closing it closes the stream.
    #[pyo3(signature = (timeout = None))]
    fn as_file<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        slf.py().import("bcv._io")?.getattr("ReadStreamIO")?.call1((slf, timeout))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // try_lock: the slot is only ever locked briefly by a thread attached to the interpreter.
        if let Ok(slot) = self.callback.try_lock()
            && let Some(cb) = slot.as_ref()
        {
            visit.call(cb)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let cb = lock(&self.callback).take();
        drop(cb);
    }
});

impl PyReadStream {
    fn async_chunk<'py>(slf: &Bound<'py, Self>, max: usize, stop_at_eof: bool) -> PyResult<Bound<'py, PyAny>> {
        let s = slf.get().slot.get(slf.py())?;
        aio::spawn(slf.as_any(), Some(&slf.get().chain), async move { s.read_chunk(max).await }, move |py, r| match r {
            Ok(Some(b)) => Ok(PyBytes::new(py, &b).into_any().unbind()),
            Ok(None) if stop_at_eof => Err(PyStopAsyncIteration::new_err(())),
            Ok(None) => Ok(py.None()),
            Err(e) => Err(errors::to_pyerr(py, e)),
        })
    }
}

/// The write end of a byte stream.
///
/// Owns one reference to the end. Call `finish()` for a clean end of stream; dropping or closing the object
/// without finishing makes the reader end with `ClosedError(PEER_DROPPED)`, never a clean end.
#[pyclass(frozen, name = "WriteStream", module = "bcv")]
pub(crate) struct PyWriteStream {
    slot: Slot<WriteStream>,
    chain: Chain,
}

impl HasSlot for PyWriteStream {
    type Target = WriteStream;
    const CLASS: &'static str = "WriteStream";
    fn slot(&self) -> &Slot<WriteStream> {
        &self.slot
    }
}

impl PyWriteStream {
    pub(crate) fn new(stream: WriteStream) -> PyWriteStream {
        PyWriteStream { slot: Slot::new(stream), chain: Arc::default() }
    }

    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<WriteStream> {
        self.slot.take(py)
    }
}

/// Copies a bytes-like object into `Bytes` (the GIL is released afterwards, so the data must be owned).
pub(crate) fn to_bytes(data: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    let view = data.py().import("builtins")?.getattr("memoryview")?.call1((data,))?;
    let copy = view.call_method0("tobytes")?;
    Ok(Bytes::copy_from_slice(copy.cast::<PyBytes>()?.as_bytes()))
}

handle_class!(PyWriteStream {
    /// Writes all of `data` (any bytes-like object), waiting while the buffer is full; returns `len(data)`.
    ///
    /// Raises `ClosedError(PEER_DROPPED)` when the reader went away (`.accepted` says how many bytes went
    /// in first), `ClosedError` when this end was closed, `BusyError` during another write,
    /// `bcv.TimeoutError` after `timeout` seconds (`.accepted` bytes went in; the rest can be retried),
    /// `InvalidArgumentError` after `finish()`.
    #[pyo3(signature = (data, timeout = None))]
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        errors::enter(py)?;
        let s = self.slot.get(py)?;
        let limit = duration(timeout)?;
        let data = to_bytes(data)?;
        let total = data.len();
        // Each attempt writes what is still pending; a sliced wait resumes where the last one stopped.
        let pending = Mutex::new(data);
        let accepted_before = Mutex::new(0usize);
        let outcome = call(py, limit, |t| {
            let chunk = lock(&pending).clone();
            match s.write_bytes_blocking(chunk, t) {
                Ok(()) => Ok(()),
                Err(mut e) => {
                    lock(&pending).advance(e.accepted);
                    let mut before = lock(&accepted_before);
                    *before += e.accepted;
                    e.accepted = *before;
                    Err(e)
                }
            }
        });
        match outcome {
            Ok(()) => Ok(total),
            Err(Wait::Op(e)) => Err(errors::write_error(py, e)),
            Err(Wait::Py(e)) => Err(e),
        }
    }

    /// Ends the stream cleanly: the reader drains the buffer, then sees the end of stream. Idempotent.
    /// Raises `ClosedError(PEER_DROPPED)` if the reader already went away, `ClosedError` if this end was
    /// closed.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        self.slot.get(py)?.finish().map_err(|e| errors::to_pyerr(py, e))
    }

    /// True once the reader went away: further writes would fail, the producer can stop.
    #[getter]
    fn peer_gone(&self, py: Python<'_>) -> PyResult<bool> {
        errors::enter(py)?;
        Ok(self.slot.get(py)?.is_peer_gone())
    }

    /// Awaitable `write(data)` that never blocks the event loop; resolves to `len(data)`. Errors as for
    /// `write`. Cancelling the awaiting task stops the write (part of the data may have gone in) but
    /// leaves the stream open.
    fn awrite<'py>(slf: &Bound<'py, Self>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        errors::enter(py)?;
        let s = slf.get().slot.get(py)?;
        let data = to_bytes(data)?;
        let total = data.len();
        aio::spawn(slf.as_any(), Some(&slf.get().chain), async move { s.write_bytes(data).await }, move |py, r| match r {
            Ok(()) => Ok(total.into_pyobject(py)?.into_any().unbind()),
            Err(e) => Err(errors::write_error(py, e)),
        })
    }

    /// A file-like adapter (`io.RawIOBase`) writing to this stream. Closing the adapter calls `finish()`;
    /// leaving a `with` block on an exception closes (aborts) the stream instead.
    #[pyo3(signature = (timeout = None))]
    fn as_file<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        slf.py().import("bcv._io")?.getattr("WriteStreamIO")?.call1((slf, timeout))
    }
});
