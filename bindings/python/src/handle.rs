//! The part every Python handle shares: one external reference to a core node, held in a [`Slot`].
//!
//! Lifetimes (LIFETIMES.md §4.3): dropping the Python object releases the reference (P1: O(1), no I/O, no
//! waiting; `Node::release_now`). A handle passed to a function that consumes it (a transformer, a pipe) is
//! emptied: it then behaves as closed with reason `SELF`, while the stream lives on in its consumer.

use std::ffi::CString;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bcv_core::handle::{CloseReason, CloseWaitError, Closed, Error, Node, NodeState, WriteError};
use pyo3::exceptions::{PyResourceWarning, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors;

/// Locks a mutex, recovering from poisoning (a panic never makes a handle unusable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One external reference to a core handle `T`, or nothing once consumed.
pub(crate) struct Slot<T: Deref<Target = Node> + Send + Sync + 'static> {
    inner: Mutex<Option<Arc<T>>>,
    pub(crate) id: u64,
    pub(crate) label: &'static str,
}

impl<T: Deref<Target = Node> + Send + Sync + 'static> Slot<T> {
    pub(crate) fn new(value: T) -> Slot<T> {
        let (id, label) = (value.id(), value.label());
        Slot { inner: Mutex::new(Some(Arc::new(value))), id, label }
    }

    /// The handle for an operation. Errors: `ClosedError(SELF)` once consumed.
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<Arc<T>> {
        self.peek().ok_or_else(|| errors::consumed(py))
    }

    /// The handle, if not consumed.
    pub(crate) fn peek(&self) -> Option<Arc<T>> {
        lock(&self.inner).clone()
    }

    /// Moves the handle out for a consuming call. Errors: `ClosedError(SELF)` once consumed, `BusyError` while
    /// an operation is in flight on it (nothing is taken then).
    pub(crate) fn take(&self, py: Python<'_>) -> PyResult<T> {
        let mut guard = lock(&self.inner);
        let Some(arc) = guard.take() else { return Err(errors::consumed(py)) };
        match Arc::try_unwrap(arc) {
            Ok(value) => Ok(value),
            Err(arc) => {
                *guard = Some(arc);
                Err(errors::to_pyerr(py, Error::Busy("handle (an operation is in progress)")))
            }
        }
    }

    /// Puts back a handle taken by [`take`](Self::take) when the consuming call could not go ahead.
    pub(crate) fn put_back(&self, value: T) {
        *lock(&self.inner) = Some(Arc::new(value));
    }

    /// `(state, close reason)` as Python sees them; a consumed handle reads as `CLOSED` / `SELF`.
    pub(crate) fn state(&self) -> (&'static str, Option<Closed>) {
        match self.peek() {
            None => ("CLOSED", Some(Closed::new(CloseReason::SelfClosed))),
            Some(h) => (state_name(h.state()), h.close_reason()),
        }
    }

    /// `repr()` text; works in every state (T38).
    pub(crate) fn repr(&self, class: &str) -> String {
        let (state, reason) = self.state();
        match reason {
            Some(c) => format!("<bcv.{class} id={} {:?} {state} ({})>", self.id, self.label, reason_text(c)),
            None => format!("<bcv.{class} id={} {:?} {state}>", self.id, self.label),
        }
    }

    /// Closes the node (idempotent; a consumed handle has nothing to close).
    pub(crate) fn close(&self) {
        if let Some(h) = self.peek() {
            h.close();
        }
    }

    /// `close_and_wait`, with the GIL released.
    pub(crate) fn close_and_wait(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let Some(h) = self.peek() else { return Ok(()) };
        let total = duration(Some(timeout))?.unwrap_or_default();
        match call(py, Some(total), |t| h.close_and_wait_blocking(t.unwrap_or(total))) {
            Ok(()) => Ok(()),
            Err(Wait::Py(e)) => Err(e),
            Err(Wait::Op(e)) => Err(errors::wait_error(py, e, timeout)),
        }
    }

    /// Lets the node outlive the scope it was created in.
    pub(crate) fn detach_from_scope(&self) {
        if let Some(h) = self.peek() {
            h.detach_from_scope();
        }
    }
}

impl<T: Deref<Target = Node> + Send + Sync + 'static> Drop for Slot<T> {
    fn drop(&mut self) {
        // Release only (P1): an atomic decrement plus an enqueue onto the reaper. Operations still in
        // flight through other `Arc` clones then end with `Closed{HANDLE_RELEASED}` on a stream end.
        if let Some(h) = self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            h.release_now();
        }
    }
}

/// The Python name of a node state.
pub(crate) fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Open => "OPEN",
        NodeState::Orphaned => "ORPHANED",
        NodeState::Closing => "CLOSING",
        NodeState::Closed => "CLOSED",
    }
}

/// `"PEER_DROPPED"`, or `"UPSTREAM(PEER_DROPPED)"` for a reason carried through a pipe.
pub(crate) fn reason_text(c: Closed) -> String {
    match c.upstream {
        Some(u) => format!("{}({})", c.reason.name(), u.name()),
        None => c.reason.name().to_string(),
    }
}

/// Called from the `Drop` of a resource-class handle (P5, strict V4): a resource garbage-collected while
/// still open and active (work in flight) gets a `ResourceWarning`, as asyncio's transports do. Never raises: a warning turned into an
/// error goes to `sys.unraisablehook`. Does nothing once the interpreter is finalizing.
pub(crate) fn warn_unclosed<T: Deref<Target = Node> + Send + Sync + 'static>(slot: &Slot<T>, class: &str) {
    let Some(h) = slot.peek() else { return };
    // Only a resource with work still in flight: a drained transformer or a read file holds nothing.
    if !h.is_active() || h.state() != NodeState::Open {
        return;
    }
    h.note_collected();
    let message = format!("unclosed bcv.{class} id={} ({}); close it or use `with`", slot.id, slot.label);
    let Ok(message) = CString::new(message) else { return };
    let _ = Python::try_attach(|py| {
        // Keep any exception being raised right now (dealloc can run while one is set).
        let (mut ty, mut value, mut tb) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        #[allow(deprecated)]
        // SAFETY: attached to the interpreter; the fetched triple is restored below, unchanged.
        unsafe {
            ffi::PyErr_Fetch(&mut ty, &mut value, &mut tb)
        };
        let category = py.get_type::<PyResourceWarning>();
        if let Err(e) = PyErr::warn(py, category.as_any(), &message, 1) {
            e.write_unraisable(py, None);
        }
        #[allow(deprecated)]
        // SAFETY: restores exactly what PyErr_Fetch returned (ownership goes back to the interpreter).
        unsafe {
            ffi::PyErr_Restore(ty, value, tb)
        };
    });
}

/// A Python timeout in seconds (`None` = no limit) as a `Duration`. Errors: `ValueError` if negative or NaN.
pub(crate) fn duration(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s.min(1e9)))),
        Some(s) if s == f64::INFINITY => Ok(None),
        Some(s) => Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds, got {s}"))),
    }
}

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Records the interpreter's main thread (called at import when importing on it).
pub(crate) fn set_main_thread() {
    let _ = MAIN_THREAD.set(std::thread::current().id());
}

/// Signals (Ctrl-C) are delivered to the main thread only; there, long waits are cut into slices so that
/// `KeyboardInterrupt` is raised promptly.
const SLICE: Duration = Duration::from_millis(100);

fn on_main_thread() -> bool {
    MAIN_THREAD.get() == Some(&std::thread::current().id())
}

/// Errors that say "the time limit passed, nothing lost": a sliced wait retries them.
pub(crate) trait Timed {
    fn is_timeout(&self) -> bool;
    fn set_total(&mut self, total: Duration);
}

impl Timed for Error {
    fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
    fn set_total(&mut self, total: Duration) {
        if let Error::Timeout(d) = self {
            *d = total;
        }
    }
}

impl Timed for WriteError {
    fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }
    fn set_total(&mut self, total: Duration) {
        self.error.set_total(total);
    }
}

impl Timed for CloseWaitError {
    fn is_timeout(&self) -> bool {
        matches!(self, CloseWaitError::Timeout)
    }
    fn set_total(&mut self, _total: Duration) {}
}

/// The failure of a blocking call: the operation's own error, or a Python exception (KeyboardInterrupt).
pub(crate) enum Wait<E> {
    Op(E),
    Py(PyErr),
}

/// Runs a blocking core call with the GIL released (`py.detach`). `op` gets the time limit to use.
///
/// On the main thread the wait is cut into slices of at most 100 ms with a signal check between them, so
/// Ctrl-C works; `op` must therefore be safe to retry after a timeout (core timeouts lose nothing).
pub(crate) fn call<T, E>(
    py: Python<'_>,
    timeout: Option<Duration>,
    op: impl Fn(Option<Duration>) -> Result<T, E> + Sync,
) -> Result<T, Wait<E>>
where
    T: Send,
    E: Timed + Send,
{
    if !on_main_thread() {
        return py.detach(|| op(timeout)).map_err(Wait::Op);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        match py.detach(|| op(Some(slice))) {
            Err(e) if e.is_timeout() && left.is_none_or(|l| l > slice) => py.check_signals().map_err(Wait::Py)?,
            Err(mut e) => {
                if let Some(total) = timeout {
                    e.set_total(total);
                }
                return Err(Wait::Op(e));
            }
            Ok(v) => return Ok(v),
        }
    }
}

/// [`call`] for operations that fail with a core [`Error`], converted to Python.
pub(crate) fn call_py<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    op: impl Fn(Option<Duration>) -> Result<T, Error> + Sync,
) -> PyResult<T> {
    call(py, timeout, op).map_err(|e| match e {
        Wait::Op(e) => errors::to_pyerr(py, e),
        Wait::Py(e) => e,
    })
}

/// Trait the common methods use to find a handle's slot.
pub(crate) trait HasSlot {
    type Target: Deref<Target = Node> + Send + Sync + 'static;
    const CLASS: &'static str;
    fn slot(&self) -> &Slot<Self::Target>;
}

/// Generates the `#[pymethods]` block of a handle class: the methods every handle has (`close`,
/// `close_and_wait`, `aclose`, `state`, `close_reason`, `id`, `label`, `detach_from_scope`, context-manager
/// protocols, `__repr__`), followed by the class's own methods.
macro_rules! handle_class {
    ($ty:ty { $($extra:tt)* }) => {
        #[pymethods]
        impl $ty {
            /// Forced, cascading close (reason `SELF`): idempotent and returns at once. Dependent children end
            /// with `ClosedError(PARENT)`; pending operations fail with `ClosedError`.
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                $crate::errors::enter(py)?;
                $crate::handle::HasSlot::slot(self).close();
                Ok(())
            }

            /// Closes, then waits until in-flight operations have returned and OS resources are freed.
            ///
            /// Does not wait for children to be released. Raises `bcv.TimeoutError` after `timeout` seconds
            /// (the node stays closed; teardown goes on) and `WouldDeadlockError` inside an SDK callback.
            #[pyo3(signature = (timeout = 5.0))]
            fn close_and_wait(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
                $crate::errors::enter(py)?;
                $crate::handle::HasSlot::slot(self).close_and_wait(py, timeout)
            }

            /// Awaitable form of `close_and_wait` that never blocks the event loop. Cancelling the awaiting
            /// task stops the wait, not the close.
            #[pyo3(signature = (timeout = 5.0))]
            fn aclose<'py>(slf: &Bound<'py, Self>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
                $crate::errors::enter(slf.py())?;
                let handle = $crate::handle::HasSlot::slot(slf.get()).peek();
                $crate::aio::close_and_wait(slf.as_any(), handle, timeout)
            }

            /// `"OPEN"`, `"ORPHANED"`, `"CLOSING"` or `"CLOSED"`.
            #[getter]
            fn state(&self, py: Python<'_>) -> PyResult<&'static str> {
                $crate::errors::enter(py)?;
                Ok($crate::handle::HasSlot::slot(self).state().0)
            }

            /// Why the node was closed (`"SELF"`, `"PARENT"`, `"PEER_DROPPED"`, ...), or `None` while open.
            #[getter]
            fn close_reason(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
                $crate::errors::enter(py)?;
                Ok($crate::handle::HasSlot::slot(self).state().1.map(|c| c.reason.name()))
            }

            /// The node's unique id (diagnostics, `TimeoutError.stuck_node_ids`).
            #[getter]
            fn id(&self) -> u64 {
                $crate::handle::HasSlot::slot(self).id
            }

            /// A short description of the node, e.g. `"pipe reader"`.
            #[getter]
            fn label(&self) -> &'static str {
                $crate::handle::HasSlot::slot(self).label
            }

            /// Lets this node outlive the `bcv.scope()` it was created in.
            fn detach_from_scope(&self, py: Python<'_>) -> PyResult<()> {
                $crate::errors::enter(py)?;
                $crate::handle::HasSlot::slot(self).detach_from_scope();
                Ok(())
            }

            fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
                $crate::errors::enter(slf.py())?;
                Ok(slf)
            }

            /// Closes the handle (`close()`); never suppresses the exception.
            fn __exit__(&self, _exc_type: Option<Bound<'_, PyAny>>, _exc: Option<Bound<'_, PyAny>>, _tb: Option<Bound<'_, PyAny>>) -> bool {
                $crate::handle::HasSlot::slot(self).close();
                false
            }

            fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
                $crate::errors::enter(slf.py())?;
                $crate::aio::ready(slf.py(), slf.clone().into_any())
            }

            /// Awaits `aclose()`; never suppresses the exception.
            fn __aexit__<'py>(
                slf: &Bound<'py, Self>,
                _exc_type: Option<Bound<'py, PyAny>>,
                _exc: Option<Bound<'py, PyAny>>,
                _tb: Option<Bound<'py, PyAny>>,
            ) -> PyResult<Bound<'py, PyAny>> {
                let handle = $crate::handle::HasSlot::slot(slf.get()).peek();
                $crate::aio::close_and_wait(slf.as_any(), handle, 5.0)
            }

            fn __repr__(&self) -> String {
                $crate::handle::HasSlot::slot(self).repr(<$ty as $crate::handle::HasSlot>::CLASS)
            }

            $($extra)*
        }
    };
}

pub(crate) use handle_class;

/// Calls from SDK threads into Python that are in progress (see [`with_python`]).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set by the exit hook just before the interpreter finalizes: SDK threads stop calling into Python.
static CLOSING: AtomicBool = AtomicBool::new(false);

/// Runs `f` attached to the interpreter from an SDK thread (callbacks, async completions), unless the
/// interpreter is finalizing or about to. Python objects that could not be handed over are then dropped
/// without the interpreter (PyO3 defers the decref), never touching a finalizing interpreter: CPython
/// before 3.14 terminates threads that attach during finalization, which Rust code cannot survive.
pub(crate) fn with_python<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    if CLOSING.load(Ordering::SeqCst) {
        return None;
    }
    Python::try_attach(f)
}

/// Exit hook, run by `atexit` after non-daemon threads were joined: stops SDK threads from calling into
/// Python and waits up to `timeout` seconds for calls in progress (e.g. a callback that was stuck) to
/// return. Returns True when none is left.
#[pyfunction]
pub(crate) fn _before_exit(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let limit = duration(Some(timeout))?.unwrap_or(Duration::from_secs(3600));
    CLOSING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    while ACTIVE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
    }
    Ok(ACTIVE.load(Ordering::SeqCst) == 0)
}
