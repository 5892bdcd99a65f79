//! Multi-process mode: `bcv.Daemon` owns a cache directory and serves it to `bcv.Vfs` instances of other
//! processes over `DIR/daemon.sock` (unix only). Such a `Vfs` is a read-only client (`Vfs.is_daemon_client`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bcv_core::vfs::{Daemon, DaemonConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors;
use crate::secure::PySecure;
use crate::vfs::{cache_stats, store_options};

/// A daemon serving the cache directory `cache_dir` to other processes' `bcv.Vfs(cache_dir)`: they share its
/// cached blocks and its one size limit, and they are read-only (writes raise `bcv.ReadOnlyError`). The daemon
/// fetches and polls only when a client asks and never writes to cloud storage.
///
/// `keys` maps container URLs (as clients attach them) to `bcv.Secure(keys=...)` key rings: a client that
/// attaches such a container without a key gets it from the daemon, only after the daemon fetched the
/// container's manifest with the client's credentials. Use it as a context manager, or call `stop()`.
#[pyclass(frozen, name = "Daemon", module = "bcv")]
pub(crate) struct PyDaemon {
    inner: Mutex<Option<Daemon>>,
    socket: PathBuf,
}

#[pymethods]
impl PyDaemon {
    /// Takes `cache_dir` (created if missing) and starts serving it on a thread of its own. `cache_size` is
    /// the shared limit in bytes (default 1 GiB); `retries` and `request_timeout` (seconds) the daemon's
    /// retry policy. Raises `OperationalError` when another process (or a `Vfs`) owns the directory,
    /// `ValueError` when a `keys` entry is not a key ring, `OSError` for the socket.
    #[new]
    #[pyo3(signature = (cache_dir, *, cache_size = None, retries = None, request_timeout = None, keys = None))]
    fn new(
        py: Python<'_>,
        cache_dir: PathBuf,
        cache_size: Option<u64>,
        retries: Option<u32>,
        request_timeout: Option<f64>,
        keys: Option<HashMap<String, Py<PySecure>>>,
    ) -> PyResult<PyDaemon> {
        errors::enter(py)?;
        let mut config = DaemonConfig::new(&cache_dir);
        if let Some(size) = cache_size {
            config.cache_size = size;
        }
        config.store = store_options(retries, request_timeout)?;
        for (url, secure) in keys.unwrap_or_default() {
            let Some(ring) = secure.get().ring.clone() else {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "keys[{url:?}] must be bcv.Secure(keys=...): the daemon hands out key rings only"
                )));
            };
            config.keys.insert(url, ring);
        }
        let daemon = py.detach(|| Daemon::start(config)).map_err(|e| errors::vfs_error(py, e, None))?;
        let socket = daemon.socket_path().to_path_buf();
        Ok(PyDaemon { inner: Mutex::new(Some(daemon)), socket })
    }

    /// The unix socket clients connect to (`DIR/daemon.sock`).
    #[getter]
    fn socket_path(&self) -> PathBuf {
        self.socket.clone()
    }

    /// True once `stop()` ran.
    #[getter]
    fn stopped(&self) -> bool {
        self.inner.lock().map(|d| d.is_none()).unwrap_or(true)
    }

    /// The daemon's figures: `{"clients": connected now, "clients_total": served since start, "cache":
    /// CacheStats}`. Raises `bcv.DaemonError` once stopped.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = {
            let guard =
                self.inner.lock().map_err(|_| errors::make(py, "DaemonError", ("the daemon lock is poisoned",)))?;
            let Some(daemon) = guard.as_ref() else {
                return Err(errors::make(py, "DaemonError", ("the daemon was stopped",)));
            };
            daemon.stats()
        };
        let out = PyDict::new(py);
        out.set_item("clients", stats.clients)?;
        out.set_item("clients_total", stats.clients_total)?;
        out.set_item("cache", cache_stats(py, &stats.cache, &stats.usage)?)?;
        Ok(out)
    }

    /// Stops serving: no new clients; connected clients' next call raises `bcv.DaemonGoneError` (the one
    /// after it reconnects to a new daemon). Waits for the serving thread. Stopping twice does nothing.
    fn stop(&self, py: Python<'_>) {
        let daemon = self.inner.lock().ok().and_then(|mut d| d.take());
        if let Some(daemon) = daemon {
            py.detach(move || daemon.stop());
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.stop(py);
    }

    fn __repr__(&self) -> String {
        let state = if self.stopped() { "stopped" } else { "serving" };
        format!("<bcv.Daemon {} {state}>", self.socket.display())
    }
}
