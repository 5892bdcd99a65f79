//! One-shot futures carrying one Python object from a `FutureWriter` to a `FutureReader`.

use bcv_core::handle::{FutureReader, FutureWriter};
use pyo3::prelude::*;

use crate::aio::{self, Chain};
use crate::errors;
use crate::handle::{HasSlot, Slot, call_py, duration, handle_class};

/// The write end of a one-shot future (`bcv.future()`).
///
/// Owns one reference. Dropping it without writing resolves the reader with `ClosedError(PEER_DROPPED)`
/// (strict mode V3).
#[pyclass(frozen, name = "FutureWriter", module = "bcv")]
pub(crate) struct PyFutureWriter {
    slot: Slot<FutureWriter<Py<PyAny>>>,
}

impl HasSlot for PyFutureWriter {
    type Target = FutureWriter<Py<PyAny>>;
    const CLASS: &'static str = "FutureWriter";
    fn slot(&self) -> &Slot<Self::Target> {
        &self.slot
    }
}

impl PyFutureWriter {
    pub(crate) fn new(w: FutureWriter<Py<PyAny>>) -> PyFutureWriter {
        PyFutureWriter { slot: Slot::new(w) }
    }
}

handle_class!(PyFutureWriter {
    /// Delivers `value` (any Python object) to the reader.
    ///
    /// Raises `ClosedError(PEER_DROPPED)` if the reader went away, or `ClosedError` with this end's reason
    /// if it was closed or already written; in both cases `error.value` hands `value` back so that
    /// resources inside it can be closed or released.
    fn write(&self, py: Python<'_>, value: Py<PyAny>) -> PyResult<()> {
        errors::enter(py)?;
        let w = self.slot.get(py)?;
        w.write(value).map_err(|u| errors::closed_error(py, u.closed, None, Some(u.value)))
    }

    /// True once the reader went away: a write would fail.
    #[getter]
    fn peer_gone(&self, py: Python<'_>) -> PyResult<bool> {
        errors::enter(py)?;
        Ok(self.slot.get(py)?.is_peer_gone())
    }
});

/// The read end of a one-shot future (`bcv.future()`). Owns one reference; `await reader` or
/// `reader.wait()` gives the value once.
#[pyclass(frozen, name = "FutureReader", module = "bcv")]
pub(crate) struct PyFutureReader {
    slot: Slot<FutureReader<Py<PyAny>>>,
    chain: Chain,
}

impl HasSlot for PyFutureReader {
    type Target = FutureReader<Py<PyAny>>;
    const CLASS: &'static str = "FutureReader";
    fn slot(&self) -> &Slot<Self::Target> {
        &self.slot
    }
}

impl PyFutureReader {
    pub(crate) fn new(r: FutureReader<Py<PyAny>>) -> PyFutureReader {
        PyFutureReader { slot: Slot::new(r), chain: Chain::default() }
    }
}

handle_class!(PyFutureReader {
    /// Waits for the value and returns it (the value is taken: a second call raises `AlreadyTakenError`).
    ///
    /// Raises `ClosedError(PEER_DROPPED)` if the writer was dropped without writing, `ClosedError` if either
    /// end was closed, `bcv.TimeoutError` after `timeout` seconds (nothing lost).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        errors::enter(py)?;
        let r = self.slot.get(py)?;
        let limit = duration(timeout)?;
        call_py(py, limit, |t| r.wait_blocking(t))
    }

    /// Awaitable `wait()` that never blocks the event loop; cancelling the awaiting task leaves the future
    /// open.
    fn wait_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(slf.py())?;
        let r = slf.get().slot.get(slf.py())?;
        aio::spawn(slf.as_any(), Some(&slf.get().chain), async move { r.wait().await }, |py, out| {
            out.map_err(|e| errors::to_pyerr(py, e))
        })
    }

    /// `await reader` is `await reader.wait_async()`.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::wait_async(slf)?.call_method0("__await__")
    }

    /// True once a value or an error is available.
    #[getter]
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        errors::enter(py)?;
        Ok(self.slot.peek().is_none_or(|r| r.is_resolved()))
    }
});
