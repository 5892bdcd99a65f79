//! `bcv.scope()`: an ownership scope that closes what was created inside it when it exits.

use bcv_core::handle::Scope;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::Mutex;

use crate::errors;
use crate::handle::lock;

/// An ownership scope (`with bcv.scope():`). Every bcv object created on this thread inside the `with`
/// block is closed with reason `SCOPE_EXITED` when the block exits, unless `detach_from_scope()` was called
/// on it. Scopes nest; they are per thread (objects created by async operations on the SDK's threads are
/// not adopted).
#[pyclass(frozen, name = "Scope", module = "bcv")]
pub(crate) struct PyScope {
    inner: Mutex<Option<Scope>>,
    used: std::sync::atomic::AtomicBool,
}

impl PyScope {
    pub(crate) fn new() -> PyScope {
        PyScope { inner: Mutex::new(None), used: Default::default() }
    }
}

#[pymethods]
impl PyScope {
    /// Enters the scope on this thread. Raises `RuntimeError` if it was entered before.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        errors::enter(slf.py())?;
        {
            let me = slf.get();
            if me.used.swap(true, std::sync::atomic::Ordering::AcqRel) {
                return Err(PyRuntimeError::new_err("a bcv scope can be entered only once"));
            }
            *lock(&me.inner) = Some(Scope::enter());
        }
        Ok(slf)
    }

    /// Leaves the scope and closes every node it still owns (`SCOPE_EXITED`). Never suppresses exceptions.
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close_inner();
        false
    }

    /// Same as leaving the `with` block; idempotent. Must run on the thread that entered the scope.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        self.close_inner();
        Ok(())
    }

    /// Number of live nodes the scope still owns.
    fn __len__(&self) -> usize {
        lock(&self.inner).as_ref().map_or(0, Scope::len)
    }

    fn __repr__(&self) -> String {
        match lock(&self.inner).as_ref() {
            Some(s) => format!("<bcv.Scope owning {} nodes>", s.len()),
            None if self.used.load(std::sync::atomic::Ordering::Acquire) => "<bcv.Scope exited>".to_string(),
            None => "<bcv.Scope not entered>".to_string(),
        }
    }
}

impl PyScope {
    fn close_inner(&self) {
        let scope = lock(&self.inner).take();
        if let Some(mut scope) = scope {
            scope.close();
        }
    }
}
