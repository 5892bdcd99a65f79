//! Conversion of core errors into the exception classes of `bcv._errors`, and the strict-mode check that
//! runs at the start of every SDK call.

use bcv_core::handle::{CloseWaitError, Closed, Diagnostic, Error, ShutdownError, WriteError, take_pending};
use bcv_core::vfs::VfsError;
use pyo3::exceptions::{PyMemoryError, PyOSError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `bcv._errors`.
pub(crate) fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || py.import("bcv._errors").map(Bound::unbind))?;
    module.bind(py).getattr(name)
}

/// Instantiates `bcv._errors.<name>(*args)` as a `PyErr`; an import failure is returned instead.
pub(crate) fn make<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
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

// SQLite primary result codes (the low byte of an extended code) and the one extended code bcv gives a
// meaning of its own.
const SQLITE_ERROR: i32 = 1;
const SQLITE_INTERNAL: i32 = 2;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_NOTFOUND: i32 = 12;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_TOOBIG: i32 = 18;
const SQLITE_CONSTRAINT: i32 = 19;
const SQLITE_MISMATCH: i32 = 20;
const SQLITE_MISUSE: i32 = 21;
const SQLITE_RANGE: i32 = 25;
const SQLITE_NOTADB: i32 = 26;
/// `bcv_kv`'s "changed by another client since this transaction read it" (and WAL's stale snapshot).
const SQLITE_BUSY_SNAPSHOT: i32 = 5 | (2 << 8);

/// The DB-API exception class of `bcv._errors` for an SQLite result code (the stdlib `sqlite3` module's
/// table, except that syntax errors and misuse are `ProgrammingError` and a stale snapshot is
/// `ConflictError`).
fn sqlite_class(code: i32, message: &str) -> &'static str {
    if code == SQLITE_BUSY_SNAPSHOT {
        return "ConflictError";
    }
    match code & 0xff {
        SQLITE_ERROR if is_syntax_error(message) => "ProgrammingError",
        SQLITE_INTERNAL | SQLITE_NOTFOUND => "InternalError",
        SQLITE_CORRUPT | SQLITE_NOTADB => "DatabaseError",
        SQLITE_TOOBIG => "DataError",
        SQLITE_CONSTRAINT | SQLITE_MISMATCH => "IntegrityError",
        SQLITE_MISUSE | SQLITE_RANGE => "ProgrammingError",
        // ERROR (no such table, ...), BUSY, LOCKED, READONLY, INTERRUPT, IOERR, FULL, CANTOPEN, PROTOCOL,
        // SCHEMA, PERM, ABORT, AUTH and the rest: a problem of the database or its environment.
        _ => "OperationalError",
    }
}

/// SQLite reports SQL it cannot parse as a plain `SQLITE_ERROR`; its messages for that are stable.
fn is_syntax_error(message: &str) -> bool {
    ["syntax error", "incomplete input", "unrecognized token"].iter().any(|m| message.contains(m))
}

/// The DB-API exception for an SQLite error, with `sqlite_errorcode` set to the (extended) result code.
pub(crate) fn sqlite_error(py: Python<'_>, code: i32, message: &str) -> PyErr {
    if code & 0xff == SQLITE_NOMEM {
        return PyMemoryError::new_err(message.to_string());
    }
    let err = make(py, sqlite_class(code, message), (message.to_string(),));
    let _ = err.value(py).setattr("sqlite_errorcode", code);
    err
}

/// Converts an error of the block-cache VFS (a `Vfs`, `Container` or `Job` call).
///
/// Lost conditional writes are `ConflictError`; a closed VFS or job is `ClosedError` with `reason` (from the
/// node when known, else `"SELF"`); bad arguments and URLs are `InvalidArgumentError`; local file errors
/// are `OSError` with the errno; SQLite errors follow [`sqlite_error`]; corrupt manifests and blocks are
/// `DatabaseError`; everything else (store failures, missing databases or aliases, busy containers) is
/// `OperationalError`.
pub(crate) fn vfs_error(py: Python<'_>, error: VfsError, reason: Option<&'static str>) -> PyErr {
    let text = error.to_string();
    match error {
        VfsError::Conflict { .. } => make(py, "ConflictError", (text,)),
        VfsError::Closed(_) => make(py, "ClosedError", (text, reason.unwrap_or("SELF"))),
        VfsError::InvalidArgument(m) => make(py, "InvalidArgumentError", (m,)),
        VfsError::Config { .. } => make(py, "InvalidArgumentError", (text,)),
        VfsError::Io { op, path, source } => {
            let message = format!("{op} {}: {}", path.display(), os_message(&source));
            match source.raw_os_error() {
                Some(code) => PyOSError::new_err((code, message)),
                None => PyOSError::new_err(message),
            }
        }
        VfsError::Sqlite { source, .. } => sqlite_error(py, source.code, &text),
        VfsError::Runtime(e) => to_pyerr(py, e),
        VfsError::Manifest { .. } | VfsError::CorruptBlock { .. } | VfsError::LeaseObject { .. } => {
            make(py, "DatabaseError", (text,))
        }
        VfsError::Crypto { .. } => make(py, "DecryptionError", (text,)),
        VfsError::Secure { .. } => make(py, "SecureContainerError", (text,)),
        VfsError::ReadOnly { .. } => make(py, "ReadOnlyError", (text,)),
        VfsError::DaemonGone { .. } => make(py, "DaemonGoneError", (text,)),
        VfsError::Daemon { .. } => make(py, "DaemonError", (text,)),
        VfsError::LeaseHeld { ref holder, until_unix_ms, .. } => {
            let (holder, until) = (holder.clone(), until_unix_ms as f64 / 1000.0);
            make(py, "LeaseHeldError", (text, holder, until))
        }
        VfsError::LeaseLost { .. } => make(py, "LeaseLostError", (text,)),
        _ => make(py, "OperationalError", (text,)),
    }
}

/// Converts an error of an SQL call (`Connection`/`Statement` of `bcv.dbapi`): SQLite errors carry SQLite's
/// own message; a closed connection is `ProgrammingError`, as in the stdlib `sqlite3` module.
pub(crate) fn sql_error(py: Python<'_>, error: VfsError) -> PyErr {
    match error {
        VfsError::Sqlite { source, .. } => sqlite_error(py, source.code, &source.message),
        VfsError::Closed(m) => make(py, "ProgrammingError", (format!("Cannot operate on a closed database ({m})"),)),
        other => vfs_error(py, other, None),
    }
}
