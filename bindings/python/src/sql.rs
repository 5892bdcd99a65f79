//! The SQL layer under `bcv.dbapi`: `SqlConnection` and `SqlStatement`, thin wrappers of
//! `bcv_core::vfs::{Connection, Statement}`.
//!
//! The DB-API itself (cursors, implicit transactions, parameter styles, row fetching) is Python code in
//! `bcv/dbapi.py`; this module converts values and errors and releases the GIL around every SQLite call.
//! A statement keeps its connection object alive and a connection its `Vfs` object, so they may be released
//! in any order: the database is closed (on the SDK's reaper) before the `Vfs` unregisters. Closing the
//! `Vfs` closes the connection (its calls then raise `ProgrammingError`).

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use bcv_core::handle::Node;
use bcv_core::vfs::{Connection, Statement, Value, VfsError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple};

use crate::errors;
use crate::handle::{Slot, lock};
use crate::stream::to_bytes;
use crate::vfs::PyVfs;

/// A connection's handle: the core connection, seen as its node by [`Slot`].
pub(crate) struct ConnHandle(Connection);

impl Deref for ConnHandle {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.0.node()
    }
}

/// An SQLite connection to a database of a `Vfs` (use `bcv.connect` / `Vfs.connect`, which wrap it in a
/// DB-API `bcv.dbapi.Connection`).
///
/// Releasing it closes the database on the SDK's reaper thread; `close()` closes it at once.
#[pyclass(frozen, name = "SqlConnection", module = "bcv._bcv")]
pub(crate) struct PySqlConnection {
    slot: Slot<ConnHandle>,
    vfs: Py<PyVfs>,
}

impl PySqlConnection {
    pub(crate) fn new(conn: Connection, vfs: Py<PyVfs>) -> PySqlConnection {
        PySqlConnection { slot: Slot::new(ConnHandle(conn)), vfs }
    }

    /// Runs `op` on the connection with the GIL released.
    fn run<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&Connection) -> Result<T, VfsError> + Send) -> PyResult<T> {
        errors::enter(py)?;
        let conn = self.slot.get(py)?;
        py.detach(|| op(&conn.0)).map_err(|e| errors::sql_error(py, e))
    }
}

#[pymethods]
impl PySqlConnection {
    /// The path it was opened with (`/ALIAS/DB`).
    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.slot.get(py)?.0.path().to_string())
    }

    /// The `Vfs` it was opened through.
    #[getter]
    fn vfs(&self, py: Python<'_>) -> Py<PyVfs> {
        self.vfs.clone_ref(py)
    }

    /// Runs zero or more `;`-separated statements without parameters; rows are discarded.
    fn execute_batch(&self, py: Python<'_>, sql: String) -> PyResult<()> {
        self.run(py, move |c| c.execute_batch(&sql))
    }

    /// Prepares one statement (trailing comments and `;` are fine; a second statement is a
    /// `ProgrammingError`). The statement keeps this connection object alive.
    fn prepare(slf: &Bound<'_, Self>, sql: String) -> PyResult<PySqlStatement> {
        let st = slf.get().run(slf.py(), move |c| c.prepare(&sql))?;
        Ok(PySqlStatement { st: Mutex::new(Some(Arc::new(st))), _conn: slf.clone().unbind() })
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    fn changes(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |c| Ok(c.changes()))
    }

    /// Rows changed since the connection opened.
    fn total_changes(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |c| Ok(c.total_changes()))
    }

    /// The rowid of the most recent successful INSERT.
    fn last_insert_rowid(&self, py: Python<'_>) -> PyResult<i64> {
        self.run(py, |c| Ok(c.last_insert_rowid()))
    }

    /// True inside a transaction.
    fn in_transaction(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |c| Ok(c.in_transaction()))
    }

    /// True until the connection is closed (by `close()`, or by closing its `Vfs`).
    fn is_open(&self, py: Python<'_>) -> PyResult<bool> {
        errors::enter(py)?;
        let conn = self.slot.get(py)?;
        Ok(py.detach(|| conn.0.is_open()))
    }

    /// Makes the statement running on this connection (on another thread) fail with `OperationalError`
    /// ("interrupted"). Returns at once.
    fn interrupt(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        self.slot.get(py)?.0.interrupt();
        Ok(())
    }

    /// Closes the database now (a running statement is interrupted first). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        let conn = self.slot.get(py)?;
        py.detach(|| conn.0.close());
        Ok(())
    }

    fn __repr__(&self) -> String {
        self.slot.repr("SqlConnection")
    }
}

/// A prepared statement of an `SqlConnection`. Finalized by `finalize()`, when released, or when its
/// connection closes (its calls then raise `ProgrammingError`).
#[pyclass(frozen, name = "SqlStatement", module = "bcv._bcv")]
pub(crate) struct PySqlStatement {
    st: Mutex<Option<Arc<Statement>>>,
    /// Keeps the connection object (and through it the `Vfs`) alive: releasing the connection closes its
    /// database on the reaper only once no statement can use it, before the `Vfs` can go.
    _conn: Py<PySqlConnection>,
}

impl PySqlStatement {
    /// Runs `op` on the statement with the GIL released.
    fn run<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&Statement) -> Result<T, VfsError> + Send) -> PyResult<T> {
        errors::enter(py)?;
        let st = lock(&self.st).clone().ok_or_else(|| {
            errors::make(py, "ProgrammingError", ("Cannot operate on a finalized statement.".to_string(),))
        })?;
        py.detach(|| op(&st)).map_err(|e| errors::sql_error(py, e))
    }
}

impl Drop for PySqlStatement {
    fn drop(&mut self) {
        // Finalizing takes the connection's lock, which a statement running on another thread holds: wait for
        // it without the GIL.
        if let Some(st) = self.st.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = Python::try_attach(move |py| py.detach(move || drop(st)));
        }
    }
}

/// Converts a Python parameter to an SQLite value: `None`, `int` (and `bool`), `float`, `str`, and
/// `bytes`/`bytearray`/`memoryview` as a blob. `position` (1-based) or `name` names it in errors.
fn to_value(obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<Value> {
    let py = obj.py();
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_instance_of::<PyInt>() {
        // OverflowError beyond 64 bits, as in the stdlib sqlite3 module.
        return Ok(Value::Integer(obj.extract::<i64>()?));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Real(f.value()));
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(Value::Text(obj.extract::<String>()?));
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        return Ok(Value::Blob(to_bytes(obj)?.to_vec()));
    }
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    let message = format!("Error binding parameter {}: type '{type_name}' is not supported", what());
    Err(errors::make(py, "ProgrammingError", (message,)))
}

fn to_py<'py>(py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        Value::Real(f) => f.into_pyobject(py)?.into_any(),
        Value::Text(s) => PyString::new(py, &s).into_any(),
        Value::Blob(b) => PyBytes::new(py, &b).into_any(),
    })
}

fn row<'py>(py: Python<'py>, values: Vec<Value>) -> PyResult<Bound<'py, PyTuple>> {
    let items = values.into_iter().map(|v| to_py(py, v)).collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

#[pymethods]
impl PySqlStatement {
    /// The result column names (empty for statements without rows).
    fn columns(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.run(py, |st| st.columns())
    }

    /// The declared types of the result columns (`None` for expressions).
    fn decltypes(&self, py: Python<'_>) -> PyResult<Vec<Option<String>>> {
        self.run(py, |st| st.column_decltypes())
    }

    /// The number of parameters (the largest index).
    fn parameter_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.run(py, |st| st.parameter_count())
    }

    /// The name of parameter `index` (1-based) with its prefix (`":a"`), or `None` for a nameless `?`.
    fn parameter_name(&self, py: Python<'_>, index: usize) -> PyResult<Option<String>> {
        self.run(py, |st| st.parameter_name(index))
    }

    /// True when the statement does not write to the database.
    fn readonly(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |st| st.is_readonly())
    }

    /// Resets the statement and binds `values` (a sequence) to parameters 1..n. Raises `ProgrammingError`
    /// for a wrong count or an unsupported type, `OverflowError` for an int beyond 64 bits.
    fn bind(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut converted = Vec::new();
        for (i, item) in values.try_iter()?.enumerate() {
            converted.push(to_value(&item?, &|| (i + 1).to_string())?);
        }
        self.run(py, move |st| st.bind(&converted))
    }

    /// Resets the statement and binds `(index, value)` pairs (1-based indexes); parameters not listed are
    /// NULL.
    fn bind_indexed(&self, py: Python<'_>, pairs: Vec<(usize, Bound<'_, PyAny>)>) -> PyResult<()> {
        let mut converted = Vec::with_capacity(pairs.len());
        for (index, item) in &pairs {
            let name = || match self.run(py, |st| st.parameter_name(*index)) {
                Ok(Some(n)) => n,
                _ => index.to_string(),
            };
            converted.push((*index, to_value(item, &name)?));
        }
        self.run(py, move |st| st.bind_indexed(&converted))
    }

    /// Runs the statement to its next row: a tuple, or `None` when it is done.
    fn step<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match self.run(py, |st| st.step())? {
            Some(values) => Ok(Some(row(py, values)?)),
            None => Ok(None),
        }
    }

    /// Up to `n` next rows (fewer only when the statement is done), in one call.
    fn fetch<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyList>> {
        let rows = self.run(py, move |st| {
            let mut rows = Vec::new();
            while rows.len() < n {
                match st.step()? {
                    Some(values) => rows.push(values),
                    None => break,
                }
            }
            Ok(rows)
        })?;
        let out = PyList::empty(py);
        for values in rows {
            out.append(row(py, values)?)?;
        }
        Ok(out)
    }

    /// Resets the statement so it can run again (bindings stay).
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |st| st.reset())
    }

    /// Finalizes the statement now. Idempotent.
    fn finalize(&self, py: Python<'_>) {
        let taken = lock(&self.st).take();
        if let Some(st) = taken {
            py.detach(move || drop(st));
        }
    }
}
