//! Conversion of core errors into the exception classes of `bcv._errors`, and the strict-mode check that
//! runs at the start of every SDK call.

use bcv_core::handle::{CloseWaitError, Closed, Diagnostic, Error, ShutdownError, WriteError, take_pending};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `bcv._errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || py.import("bcv._errors").map(Bound::unbind))?;
    module.bind(py).getattr(name)
}

/// Instantiates `bcv._errors.<name>(*args)` as a `PyErr`; an import failure is returned instead.
fn make<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match class(py, name).and_then(|cls| cls.call1(args)) {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

/// `ClosedError` for `closed`, with the bytes accepted by a failed write and the value handed back by a
/// failed future write.
pub(crate) fn closed_error(py: Python<'_>, closed: Closed, accepted: Option<usize>, value: Option<Py<PyAny>>) -> PyErr {
    let upstream = closed.upstream.map(|r| r.name());
    let value = value.unwrap_or_else(|| py.None());
    make(py, "ClosedError", (closed.to_string(), closed.reason.name(), upstream, accepted, value))
}

/// Strips the " (os error N)" suffix std adds to OS errors; Python prints the errno itself.
fn os_message(source: &std::io::Error) -> String {
    let text = source.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// Converts a core error into the matching Python exception.
pub(crate) fn to_pyerr(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Closed(c) => closed_error(py, c, None, None),
        Error::Busy(what) => {
            make(py, "BusyError", (format!("another operation is already in progress on this {what}"),))
        }
        Error::Timeout(d) => make(py, "TimeoutError", (format!("timed out after {:.3} s", d.as_secs_f64()),)),
        Error::WouldDeadlock => would_deadlock(py),
        Error::AlreadyTaken(what) => make(py, "AlreadyTakenError", (format!("{what} was already taken"),)),
        Error::InvalidArgument(m) => make(py, "InvalidArgumentError", (m,)),
        Error::Io { context, source } => match source.raw_os_error() {
            // OSError(errno, text) picks the subclass (FileNotFoundError, ...) from the errno.
            Some(code) => PyOSError::new_err((code, format!("{context}: {}", os_message(&source)))),
            None => PyOSError::new_err(format!("{context}: {source}")),
        },
        Error::Authentication(m) => make(py, "AuthenticationError", (format!("authentication failed: {m}"),)),
        Error::Corrupt(m) => make(py, "CorruptError", (format!("corrupt input: {m}"),)),
        other => make(py, "BcvError", (other.to_string(),)),
    }
}

/// `ClosedError` (with `accepted`) or the plain conversion of the write's error.
pub(crate) fn write_error(py: Python<'_>, e: WriteError) -> PyErr {
    match e.error {
        Error::Closed(c) => closed_error(py, c, Some(e.accepted), None),
        other => {
            let err = to_pyerr(py, other);
            let _ = err.value(py).setattr("accepted", e.accepted);
            err
        }
    }
}

fn would_deadlock(py: Python<'_>) -> PyErr {
    make(py, "WouldDeadlockError", ("waiting here could deadlock (an SDK callback or runtime thread)",))
}

/// Converts a `close_and_wait` failure.
pub(crate) fn wait_error(py: Python<'_>, e: CloseWaitError, timeout: f64) -> PyErr {
    match e {
        CloseWaitError::Timeout => make(py, "TimeoutError", (format!("close did not complete within {timeout:.3} s"),)),
        CloseWaitError::WouldDeadlock => would_deadlock(py),
    }
}

/// Converts a `shutdown` failure; `TimeoutError.stuck_node_ids` lists the nodes still busy.
pub(crate) fn shutdown_error(py: Python<'_>, e: ShutdownError) -> PyErr {
    match e {
        ShutdownError::Timeout { stuck_node_ids } => {
            let msg = format!("shutdown timed out; nodes still busy: {stuck_node_ids:?}");
            make(py, "TimeoutError", (msg, stuck_node_ids))
        }
        ShutdownError::WouldDeadlock => would_deadlock(py),
    }
}

/// `StrictModeViolation` for a strict-mode diagnostic.
pub(crate) fn strict_error(py: Python<'_>, d: Diagnostic) -> PyErr {
    make(py, "StrictModeViolation", (d.to_string(), d.kind.code(), d.node_id, d.node_label, d.creation_backtrace))
}

/// Runs at the start of every SDK call: raises the oldest strict-mode violation queued on this thread
/// (strict level `error`), so that a violation from a finalizer surfaces at the next call, never inside it.
pub(crate) fn enter(py: Python<'_>) -> PyResult<()> {
    match take_pending() {
        Some(d) => Err(strict_error(py, d)),
        None => Ok(()),
    }
}

/// The error of a call on a handle that was consumed (moved into a transformer or pipe) or released.
pub(crate) fn consumed(py: Python<'_>) -> PyErr {
    closed_error(py, Closed::new(bcv_core::handle::CloseReason::SelfClosed), None, None)
}
