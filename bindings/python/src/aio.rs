//! asyncio bridge: core async operations run on the bcv runtime's executor and complete an
//! `asyncio.Future` of the caller's event loop through `loop.call_soon_threadsafe`. The event loop never
//! blocks.
//!
//! Cancellation: cancelling the awaiting task aborts the executor task (which gives up its claim on the
//! stream end) but never closes the stream. The next async operation on the same end first waits for the
//! aborted task to be gone, so it does not see a spurious `BusyError`.

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::handle::{CloseReason, Closed, Node, Runtime};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use tokio::task::JoinHandle;

use crate::errors;
use crate::handle::lock;

/// The executor task of an async operation that was cancelled, until the next operation has awaited it.
pub(crate) type Chain = Arc<Mutex<Option<JoinHandle<()>>>>;

static ASYNCIO: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn asyncio(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(ASYNCIO.get_or_try_init(py, || py.import("asyncio").map(Bound::unbind))?.bind(py))
}

fn resolver(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(RESOLVE.get_or_try_init(py, || py.import("bcv._aio")?.getattr("_resolve").map(Bound::unbind))?.bind(py))
}

/// The loop and future an executor task completes; if the task is dropped before completing (runtime
/// shutdown), the future fails with `ClosedError(RUNTIME_SHUTDOWN)` instead of hanging for ever.
struct Completion {
    target: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl Completion {
    fn complete(mut self, outcome: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) {
        let Some((event_loop, future)) = self.target.take() else { return };
        // Nothing to deliver to once the interpreter is finalizing.
        let _ = crate::handle::with_python(|py| {
            let (exc, value) = match outcome(py) {
                Ok(v) => (py.None(), v),
                Err(e) => (e.into_value(py).into_any(), py.None()),
            };
            let Ok(resolve) = resolver(py) else { return };
            // A closed event loop raises RuntimeError: the awaiting task is gone, so is the result.
            let _ = event_loop.call_method1(py, "call_soon_threadsafe", (resolve, future, exc, value));
        });
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.target.is_some() {
            let target = self.target.take();
            Completion { target }
                .complete(|py| Err(errors::closed_error(py, Closed::new(CloseReason::RuntimeShutdown), None, None)));
        }
    }
}

/// Done-callback of the asyncio future: aborts the executor task when the awaiting task was cancelled, and
/// lets go of the handle the operation runs on (kept alive while the operation is pending, so that
/// `await stream_factory().aread()` works on a temporary).
#[pyclass(frozen, module = "bcv._bcv")]
struct Canceller {
    task: Mutex<Option<JoinHandle<()>>>,
    chain: Option<Chain>,
    owner: Mutex<Option<Py<PyAny>>>,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let owner = lock(&self.owner).take();
        drop(owner);
        let task = lock(&self.task).take();
        if let Some(task) = task
            && future.call_method0("cancelled")?.is_truthy()?
        {
            task.abort();
            if let Some(chain) = &self.chain {
                *lock(chain) = Some(task);
            }
        }
        Ok(())
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Ok(owner) = self.owner.try_lock()
            && let Some(o) = owner.as_ref()
        {
            visit.call(o)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let owner = lock(&self.owner).take();
        drop(owner);
    }
}

fn runtime() -> &'static Runtime {
    Runtime::global()
}

/// Runs `fut` on the bcv executor and returns an `asyncio.Future` of the running loop that `convert`
/// completes; `owner` (the handle the operation runs on) stays alive until then. Errors: `RuntimeError`
/// when no event loop is running in this thread.
pub(crate) fn spawn<'py, F, T, C>(
    owner: &Bound<'py, PyAny>,
    chain: Option<&Chain>,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let py = owner.py();
    let event_loop = asyncio(py)?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let completion = Completion { target: Some((event_loop.unbind(), future.clone().unbind())) };
    let previous = chain.and_then(|c| lock(c).take());
    let task = runtime().tokio_handle().spawn(async move {
        if let Some(previous) = previous {
            // A cancelled operation on the same end: wait until it has let go of the end.
            let _ = previous.await;
        }
        let out = fut.await;
        completion.complete(move |py| convert(py, out));
    });
    let canceller = Canceller {
        task: Mutex::new(Some(task)),
        chain: chain.cloned(),
        owner: Mutex::new(Some(owner.clone().unbind())),
    };
    future.call_method1("add_done_callback", (Py::new(py, canceller)?,))?;
    Ok(future)
}

/// An already-completed `asyncio.Future` holding `value` (for `__aenter__`).
pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let future = asyncio(py)?.call_method0("get_running_loop")?.call_method0("create_future")?;
    future.call_method1("set_result", (value,))?;
    Ok(future)
}

/// `aclose()`: `close_and_wait` on the executor. A consumed handle completes at once.
pub(crate) fn close_and_wait<'py, T>(
    owner: &Bound<'py, PyAny>,
    handle: Option<Arc<T>>,
    timeout: f64,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Deref<Target = Node> + Send + Sync + 'static,
{
    let limit = crate::handle::duration(Some(timeout))?.unwrap_or(Duration::MAX);
    spawn(
        owner,
        None,
        async move {
            match handle {
                Some(h) => h.close_and_wait(limit).await,
                None => Ok(()),
            }
        },
        move |py, r| match r {
            Ok(()) => Ok(py.None()),
            Err(e) => Err(errors::wait_error(py, e, timeout)),
        },
    )
}
