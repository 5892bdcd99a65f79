//! The block-cache VFS: `Vfs` (a cache directory with attached containers), `Job` (a background prefetch or
//! upload) and `Container` (container operations without a cache).
//!
//! Conversion only: every operation is one call of `bcv_core::vfs`, made with the GIL released. Reports are
//! instances of the frozen dataclasses of `bcv._vfs`; errors are converted by `errors::vfs_error`.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::handle::{Error, Node, NodeState};
use bcv_core::vfs::container::Manifest;
use bcv_core::vfs::store::{ContainerStore, StoreOptions};
use bcv_core::vfs::{
    AttachOptions, BlockVfs, CacheStats, CacheUsage, CleanupReport, ConnectOptions, Connection, ContainerTools,
    DEFAULT_BLOCK_SIZE, DEFAULT_NAME_BYTES, DatabaseInfo, DatabaseStatus, JobOutcome, JobStatus, LeaseInfo, PollReport,
    PrefetchReport, Progress, UploadOptions, UploadReport, VfsConfig, VfsError, VfsJob, list_of,
};
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};

use crate::errors;
use crate::handle::{HasSlot, Slot, Timed, Wait, call, duration, handle_class, lock, state_name, with_python};
use crate::secure::PySecure;
use crate::sql::PySqlConnection;

static REPORTS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Instantiates the dataclass `bcv._vfs.<class>` with the keyword arguments `fields`.
fn report<'py>(py: Python<'py>, class: &str, fields: &[(&str, Bound<'py, PyAny>)]) -> PyResult<Bound<'py, PyAny>> {
    let module = REPORTS.get_or_try_init(py, || py.import("bcv._vfs").map(Bound::unbind))?;
    let kwargs = PyDict::new(py);
    for (name, value) in fields {
        kwargs.set_item(*name, value)?;
    }
    module.bind(py).getattr(class)?.call((), Some(&kwargs))
}

/// Shorthand for a field value.
fn v<'py, T: IntoPyObject<'py>>(py: Python<'py>, value: T) -> PyResult<Bound<'py, PyAny>> {
    value.into_bound_py_any(py)
}

fn strings<'py>(py: Python<'py>, items: &[String]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(py, items)?.into_any())
}

fn poll_report<'py>(py: Python<'py>, r: &PollReport) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "PollReport",
        &[
            ("manifest_changed", v(py, r.manifest_changed)?),
            ("updated", strings(py, &r.updated)?),
            ("added", strings(py, &r.added)?),
            ("removed", strings(py, &r.removed)?),
            ("conflicts", strings(py, &r.conflicts)?),
        ],
    )
}

fn upload_report<'py>(py: Python<'py>, r: &UploadReport) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "UploadReport",
        &[
            ("databases", PyTuple::new(py, r.databases.iter().cloned())?.into_any()),
            ("blocks_written", v(py, r.blocks_written)?),
            ("bytes_written", v(py, r.bytes_written)?),
            ("blocks_deduplicated", v(py, r.blocks_deduplicated)?),
            ("blocks_deleted", v(py, r.blocks_deleted)?),
            ("rebases", v(py, r.rebases)?),
        ],
    )
}

fn prefetch_report<'py>(py: Python<'py>, r: &PrefetchReport) -> PyResult<Bound<'py, PyAny>> {
    report(py, "PrefetchReport", &[("blocks", v(py, r.blocks)?), ("bytes_fetched", v(py, r.bytes_fetched)?)])
}

fn database_status<'py>(py: Python<'py>, d: &DatabaseStatus) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "DatabaseStatus",
        &[
            ("name", v(py, &d.name)?),
            ("id", v(py, d.id)?),
            ("version", v(py, d.version)?),
            ("size", v(py, d.size)?),
            ("blocks", v(py, d.blocks)?),
            ("dirty_blocks", v(py, d.dirty_blocks)?),
            ("has_local_changes", v(py, d.has_local_changes)?),
            ("open_handles", v(py, d.open_handles)?),
        ],
    )
}

fn database_info<'py>(py: Python<'py>, d: &DatabaseInfo) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "DatabaseInfo",
        &[
            ("name", v(py, &d.name)?),
            ("id", v(py, d.id)?),
            ("version", v(py, d.version)?),
            ("parent", v(py, d.parent)?),
            ("blocks", v(py, d.blocks)?),
            ("size", v(py, d.size)?),
        ],
    )
}

fn cleanup_report<'py>(py: Python<'py>, r: &CleanupReport) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "CleanupReport",
        &[
            ("deleted", v(py, r.deleted)?),
            ("orphans_deleted", v(py, r.orphans_deleted)?),
            ("waiting", v(py, r.waiting)?),
        ],
    )
}

/// A manifest as a dict: `block_size`, `name_bytes`, `max_db_id`, `databases` (dicts with `name`, `id`,
/// `version`, `parent`, `blocks`, `size`) and `delete_list` (dicts with `block` (hex id) and `timestamp_ms`,
/// SQLite julian-day milliseconds). The same shape as `bcv manifest`'s JSON.
fn manifest_dict<'py>(py: Python<'py>, m: &Manifest) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("block_size", m.block_size)?;
    out.set_item("name_bytes", m.name_bytes)?;
    out.set_item("max_db_id", m.max_db_id)?;
    let databases = PyList::empty(py);
    for d in list_of(m) {
        let item = PyDict::new(py);
        item.set_item("name", &d.name)?;
        item.set_item("id", d.id)?;
        item.set_item("version", d.version)?;
        item.set_item("parent", d.parent)?;
        item.set_item("blocks", d.blocks)?;
        item.set_item("size", d.size)?;
        databases.append(item)?;
    }
    out.set_item("databases", databases)?;
    let deleted = PyList::empty(py);
    for d in &m.delete_list {
        let item = PyDict::new(py);
        item.set_item("block", d.id.to_string())?;
        item.set_item("timestamp_ms", d.timestamp_ms)?;
        deleted.append(item)?;
    }
    out.set_item("delete_list", deleted)?;
    Ok(out)
}

/// A `CacheStats` record from the core's counters and occupancy.
pub(crate) fn cache_stats<'py>(py: Python<'py>, s: &CacheStats, u: &CacheUsage) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "CacheStats",
        &[
            ("hits", v(py, s.hits)?),
            ("misses", v(py, s.misses)?),
            ("bytes_fetched", v(py, s.bytes_fetched)?),
            ("evictions", v(py, s.evictions)?),
            ("clean_slots", v(py, u.clean_slots)?),
            ("dirty_slots", v(py, u.dirty_slots)?),
            ("block_size", v(py, u.block_size)?),
            ("capacity", v(py, u.capacity)?),
        ],
    )
}

/// A `Lease` record; times in Unix seconds.
fn lease<'py>(py: Python<'py>, l: &LeaseInfo) -> PyResult<Bound<'py, PyAny>> {
    report(
        py,
        "Lease",
        &[
            ("holder", v(py, &l.holder)?),
            ("token", v(py, &l.token)?),
            ("generation", v(py, l.generation)?),
            ("acquired", v(py, l.acquired_unix_ms as f64 / 1000.0)?),
            ("expires", v(py, l.expires_unix_ms as f64 / 1000.0)?),
        ],
    )
}

/// A lease duration in seconds.
fn lease_duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("duration must be a non-negative number of seconds"))
}

/// Store options from the keyword arguments shared by `Vfs` and `Container`.
pub(crate) fn store_options(retries: Option<u32>, request_timeout: Option<f64>) -> PyResult<StoreOptions> {
    let mut options = StoreOptions::default();
    if let Some(r) = retries {
        options.retries = r;
    }
    if let Some(t) = duration(request_timeout)? {
        options.request_timeout = t;
    }
    Ok(options)
}

/// Seconds (float) as a duration; `None` stays `None`.
fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    duration(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })
}

/// Runs a blocking core call that reports progress, with the GIL released. `progress(done, total)` is
/// called with the GIL held; once it raised, later progress is not reported and its exception is returned
/// after the call (the call itself is not stopped).
fn with_progress<T: Send>(
    py: Python<'_>,
    progress: Option<Bound<'_, PyAny>>,
    op: impl FnOnce(&(dyn Fn(Progress) + Sync)) -> Result<T, VfsError> + Send,
) -> PyResult<Result<T, VfsError>> {
    let callback = progress.filter(|p| !p.is_none()).map(Bound::unbind);
    let failed: Mutex<Option<PyErr>> = Mutex::new(None);
    let report = |p: Progress| {
        let Some(cb) = &callback else { return };
        if lock(&failed).is_some() {
            return;
        }
        let _ = with_python(|py| {
            if let Err(e) = cb.call1(py, (p.done, p.total)) {
                *lock(&failed) = Some(e);
            }
        });
    };
    let result = py.detach(|| op(&report));
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// A block-cache VFS: a cache directory, the containers attached to it, and an SQLite VFS registered under
/// `name` that serves their databases as `/ALIAS/DB`.
///
/// `close()` (or leaving `with`) cancels its jobs, closes its connections, unregisters the VFS name and
/// unlocks the cache directory; later calls raise `ClosedError`. Releasing it without `close()` does the
/// same once the last connection and job made from it are gone. Methods are thread-safe and run with the GIL
/// released.
#[pyclass(frozen, name = "Vfs", module = "bcv")]
pub(crate) struct PyVfs {
    inner: Mutex<Option<Arc<BlockVfs>>>,
    name: String,
    cache_dir: PathBuf,
    id: u64,
}

impl PyVfs {
    /// The VFS, or `ClosedError(SELF)` once `close()` was called.
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<Arc<BlockVfs>> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| errors::vfs_error(py, VfsError::Closed(format!("VFS {:?}", self.name)), Some("SELF")))
    }

    /// Runs `op` on the VFS with the GIL released and converts its error.
    fn run<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&BlockVfs) -> Result<T, VfsError> + Send) -> PyResult<T> {
        errors::enter(py)?;
        let vfs = self.get(py)?;
        py.detach(|| op(&vfs)).map_err(|e| convert(py, e, vfs.node()))
    }
}

/// Converts a VFS error; a closed VFS or job reports why its node was closed.
fn convert(py: Python<'_>, e: VfsError, node: &Node) -> PyErr {
    let reason = node.close_reason().map(|c| c.reason.name());
    errors::vfs_error(py, e, reason)
}

/// Drops the VFS once the SDK's reaper has processed every release made so far: a connection released just
/// before (the usual order, since a connection holds its `Vfs` object) has closed its database by then, so
/// no SQLite file is left open on the VFS when it unregisters and unlocks its cache directory.
fn drop_vfs(vfs: Arc<BlockVfs>) {
    let _ = crate::rt().reaper_flush();
    drop(vfs);
}

impl Drop for PyVfs {
    fn drop(&mut self) {
        // Waiting for the reaper and writing the cache index happen without the GIL.
        if let Some(vfs) = self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = Python::try_attach(move |py| py.detach(move || drop_vfs(vfs)));
        }
    }
}

#[pymethods]
impl PyVfs {
    /// Opens (or creates) the cache directory `cache_dir` and registers the VFS as `name` in bcv's SQLite.
    /// Containers attached in an earlier run are attached again from the cache, without a request.
    ///
    /// `cache_size` is the cache limit in bytes (default 1 GiB), `nrequest` the parallel requests of uploads
    /// and prefetches, `retries` and `request_timeout` (seconds) the store's retry policy.
    ///
    /// Raises `OperationalError` when another VFS or process owns the directory, `InvalidArgumentError` when
    /// the name is already registered, `OSError` for local I/O errors.
    #[new]
    #[pyo3(signature = (cache_dir, *, name = "bcv".to_string(), cache_size = None, nrequest = 8, retries = None, request_timeout = None, lease_max_skew = None, lease_safety_margin = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cache_dir: PathBuf,
        name: String,
        cache_size: Option<u64>,
        nrequest: usize,
        retries: Option<u32>,
        request_timeout: Option<f64>,
        lease_max_skew: Option<f64>,
        lease_safety_margin: Option<f64>,
    ) -> PyResult<PyVfs> {
        errors::enter(py)?;
        let mut config = VfsConfig::new(&cache_dir);
        config.name = name.clone();
        if let Some(size) = cache_size {
            config.cache_size = size;
        }
        config.nrequest = nrequest.max(1);
        config.store = store_options(retries, request_timeout)?;
        if let Some(skew) = seconds("lease_max_skew", lease_max_skew)? {
            config.lease.max_skew = skew;
        }
        if let Some(margin) = seconds("lease_safety_margin", lease_safety_margin)? {
            config.lease.safety_margin = margin;
        }
        let vfs = py.detach(|| BlockVfs::create(config)).map_err(|e| errors::vfs_error(py, e, None))?;
        let id = vfs.node().id();
        Ok(PyVfs { inner: Mutex::new(Some(Arc::new(vfs))), name, cache_dir, id })
    }

    /// The name the VFS is registered under in SQLite (`vfs=` in URIs).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The cache directory.
    #[getter]
    fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone()
    }

    /// True once `close()` was called (or the VFS was closed by `bcv.shutdown()`).
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).as_ref().is_none_or(|v| v.node().state() != NodeState::Open)
    }

    /// `"OPEN"`, `"CLOSING"` or `"CLOSED"`.
    #[getter]
    fn state(&self) -> &'static str {
        lock(&self.inner).as_ref().map_or("CLOSED", |v| state_name(v.node().state()))
    }

    /// The VFS node's id (diagnostics).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Closes the VFS: cancels its jobs, closes its connections (their next call raises
    /// `ProgrammingError`), then unregisters the VFS name and unlocks the cache directory. Idempotent.
    ///
    /// Local changes that were not uploaded stay in the cache directory for the next `Vfs` on it.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        let taken = lock(&self.inner).take();
        if let Some(vfs) = taken {
            vfs.node().close();
            // The cascade closes connections on the SDK's reaper thread: let it finish before the VFS goes
            // (a call still in flight on another thread delays only that connection).
            py.detach(move || drop_vfs(vfs));
        }
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        errors::enter(slf.py())?;
        Ok(slf)
    }

    /// Closes the VFS (`close()`); never suppresses the exception.
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<bcv.Vfs id={} {:?} cache_dir={:?} {}>", self.id, self.name, self.cache_dir, self.state())
    }

    /// Attaches the container at `url` (a directory, `file:///dir`, `memory://name`, `s3://`, `az://`,
    /// `gs://`) and returns its alias (default: the URL's last path component).
    ///
    /// With `if_not_attached`, a container already attached under the alias with the same URL is not an
    /// error. Raises `OperationalError` when the alias is taken or the container does not exist (create it
    /// with `bcv.Container(url).create()`), `InvalidArgumentError` for a bad URL or alias.
    ///
    /// A secure container needs `secure` (a `bcv.Secure` with its keys or cipher): without it, or with it for
    /// a plaintext container, `SecureContainerError`; a wrong key or another cipher, `DecryptionError`.
    #[pyo3(signature = (url, alias = None, if_not_attached = false, *, secure = None))]
    fn attach(
        &self,
        py: Python<'_>,
        url: String,
        alias: Option<String>,
        if_not_attached: bool,
        secure: Option<Py<PySecure>>,
    ) -> PyResult<String> {
        let secure = secure.map(|s| s.get().options.clone());
        self.run(py, move |v| v.attach(&url, &AttachOptions { alias, if_not_attached, secure }))
    }

    /// Detaches `alias`. Raises `OperationalError` while a connection to it is open or it has local changes
    /// (upload or revert them first).
    fn detach(&self, py: Python<'_>, alias: String) -> PyResult<()> {
        self.run(py, move |v| v.detach(&alias))
    }

    /// The attached containers as `(alias, url)` pairs, sorted by alias.
    fn attached(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        self.run(py, |v| Ok(v.attached()))
    }

    /// The SQLite path of database `db` of `alias`: `"/alias/db"` (for `bcv.connect`).
    fn path(&self, alias: &str, db: &str) -> String {
        format!("/{alias}/{db}")
    }

    /// Fetches the manifest of `alias` if it changed (one conditional request) and makes new versions of its
    /// databases visible to connections (at their next transaction). Returns a `PollReport`.
    fn poll<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Bound<'py, PyAny>> {
        let r = self.run(py, move |v| v.poll(&alias))?;
        poll_report(py, &r)
    }

    /// Uploads the local changes of every database of `alias` (blocks first, then the manifest with a
    /// conditional write) and returns an `UploadReport`. With `cleanup_grace` (seconds), garbage blocks older
    /// than that are deleted in the same call.
    ///
    /// Raises `ConflictError` when another client changed one of the same databases first: nothing is lost,
    /// the local changes stay; `revert()` them and `poll()` to follow the other client.
    #[pyo3(signature = (alias, cleanup_grace = None))]
    fn upload<'py>(&self, py: Python<'py>, alias: String, cleanup_grace: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let options = UploadOptions { cleanup_grace: seconds("cleanup_grace", cleanup_grace)? };
        let r = self.run(py, move |v| v.upload(&alias, &options))?;
        upload_report(py, &r)
    }

    /// Starts `upload(alias, cleanup_grace)` in the background; returns its `Job` (`wait()` gives the
    /// `UploadReport`). Cancelling it before the manifest is sent leaves the container unchanged.
    #[pyo3(signature = (alias, cleanup_grace = None))]
    fn upload_start(&self, py: Python<'_>, alias: String, cleanup_grace: Option<f64>) -> PyResult<PyJob> {
        let options = UploadOptions { cleanup_grace: seconds("cleanup_grace", cleanup_grace)? };
        let job = self.run(py, move |v| v.upload_start(&alias, &options))?;
        Ok(PyJob::new(job))
    }

    /// Fetches every block of database `db` of `alias` that the cache lacks (`nrequest` at a time) and
    /// returns a `PrefetchReport`. `progress(done_bytes, total_bytes)` is called as blocks arrive; if it
    /// raises, the prefetch still completes and the exception is raised afterwards.
    #[pyo3(signature = (alias, db, progress = None))]
    fn prefetch<'py>(
        &self,
        py: Python<'py>,
        alias: String,
        db: String,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(py)?;
        let vfs = self.get(py)?;
        let r = with_progress(py, progress, |report| vfs.prefetch(&alias, &db, report))?;
        let r = r.map_err(|e| convert(py, e, vfs.node()))?;
        prefetch_report(py, &r)
    }

    /// Starts a prefetch of `db` of `alias` in the background; returns its `Job` (`progress`, `wait()` gives
    /// the `PrefetchReport`, `cancel()`).
    fn prefetch_start(&self, py: Python<'_>, alias: String, db: String) -> PyResult<PyJob> {
        let job = self.run(py, move |v| v.prefetch_start(&alias, &db))?;
        Ok(PyJob::new(job))
    }

    /// Drops the local changes of `db` (or of every database of `alias`); returns the databases reverted.
    /// Raises `OperationalError` while a connection to such a database is open.
    #[pyo3(signature = (alias, db = None))]
    fn revert(&self, py: Python<'_>, alias: String, db: Option<String>) -> PyResult<Vec<String>> {
        self.run(py, move |v| v.revert(&alias, db.as_deref()))
    }

    /// Copies database `src` of `alias` to a new database `dst` in the same container (sharing blocks).
    fn copy(&self, py: Python<'_>, alias: String, src: String, dst: String) -> PyResult<()> {
        self.run(py, move |v| v.copy(&alias, &src, &dst))
    }

    /// Deletes database `db` from the container attached as `alias`.
    fn delete(&self, py: Python<'_>, alias: String, db: String) -> PyResult<()> {
        self.run(py, move |v| v.delete(&alias, &db))
    }

    /// The status of every database of `alias` (uploaded or local only), as `DatabaseStatus` records.
    fn databases<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let list = self.run(py, move |v| v.databases(&alias))?;
        list.iter().map(|d| database_status(py, d)).collect()
    }

    /// The manifest of `alias` as this client last saw it, as a dict (see `Container.manifest()`).
    fn manifest<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Bound<'py, PyDict>> {
        let m = self.run(py, move |v| v.manifest(&alias))?;
        manifest_dict(py, &m)
    }

    /// The request meter of `alias`'s store: a dict from request kind (`"get"`, `"ranged_get"`, `"head"`,
    /// `"put"`, `"conditional_put"`, `"delete"`, `"list"`) and `"total"` to a dict of `requests`,
    /// `bytes_up`, `bytes_down`, `errors`, `retries` and `estimated_cost` (US dollars, illustrative prices).
    fn meter<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.run(py, move |v| Ok(v.store(&alias)?.meter().snapshot()))?;
        let out = PyDict::new(py);
        let kinds = snapshot.kinds.iter().map(|(k, s)| (*k, s)).chain([("total", &snapshot.total)]);
        for (kind, s) in kinds {
            let item = PyDict::new(py);
            item.set_item("requests", s.requests)?;
            item.set_item("bytes_up", s.bytes_up)?;
            item.set_item("bytes_down", s.bytes_down)?;
            item.set_item("errors", s.errors)?;
            item.set_item("retries", s.retries)?;
            item.set_item("estimated_cost", s.estimated_cost)?;
            out.set_item(kind, item)?;
        }
        Ok(out)
    }

    /// The cache's activity counters and occupancy, as a `CacheStats` record.
    fn cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (s, u) = self.run(py, |v| Ok((v.cache_stats(), v.cache_usage())))?;
        cache_stats(py, &s, &u)
    }

    /// True when this VFS is the client of a `bcv.Daemon` serving its cache directory (from another
    /// process): then it is read-only, and writes raise `bcv.ReadOnlyError`.
    #[getter]
    fn is_daemon_client(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |v| Ok(v.is_daemon_client()))
    }

    /// Obtains the lease of `alias` for `holder` (a description naming this client, 1-256 bytes) for
    /// `duration` seconds and returns it as a `Lease`. While held, other clients' uploads, copies and
    /// deletes raise `LeaseHeldError`; this VFS's uploads renew it. Raises `LeaseHeldError` (naming the
    /// holder and its expiry) when another client holds it, `InvalidArgumentError` for a duration not longer
    /// than the safety margin or when this VFS holds it already.
    fn lease_obtain<'py>(
        &self,
        py: Python<'py>,
        alias: String,
        holder: String,
        duration: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = lease_duration(duration)?;
        let info = self.run(py, move |v| v.lease_obtain(&alias, &holder, d))?;
        lease(py, &info)
    }

    /// Extends the lease this VFS holds on `alias` to expire `duration` seconds from now. Raises
    /// `LeaseLostError` when it holds none, it expired, or another client took it over.
    fn lease_extend<'py>(&self, py: Python<'py>, alias: String, duration: f64) -> PyResult<Bound<'py, PyAny>> {
        let d = lease_duration(duration)?;
        let info = self.run(py, move |v| v.lease_extend(&alias, d))?;
        lease(py, &info)
    }

    /// Releases the lease this VFS holds on `alias` (another client can obtain it at once; detaching
    /// releases it too). Raises `LeaseLostError` when it held none or another client had taken it over.
    fn lease_release(&self, py: Python<'_>, alias: String) -> PyResult<()> {
        self.run(py, move |v| v.lease_release(&alias))
    }

    /// The lease of `alias` as recorded in the container, read now; `None` when there is none or it was
    /// released. An expired lease nobody took over is returned (see `Lease.expired`).
    fn lease_status<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Option<Bound<'py, PyAny>>> {
        let info = self.run(py, move |v| v.lease_status(&alias))?;
        info.map(|i| lease(py, &i)).transpose()
    }

    /// The lease this VFS holds on `alias` as it last wrote it (no request), or `None`.
    fn lease_held<'py>(&self, py: Python<'py>, alias: String) -> PyResult<Option<Bound<'py, PyAny>>> {
        let info = self.run(py, move |v| v.lease_held(&alias))?;
        info.map(|i| lease(py, &i)).transpose()
    }

    /// Makes this VFS the holder of the lease of `alias` obtained elsewhere under `token` (by another
    /// process of the application), writing nothing. Raises `LeaseLostError` when the container's lease is
    /// not the unexpired holding `token`.
    fn lease_adopt<'py>(&self, py: Python<'py>, alias: String, token: String) -> PyResult<Bound<'py, PyAny>> {
        let info = self.run(py, move |v| v.lease_adopt(&alias, &token))?;
        lease(py, &info)
    }

    /// Opens database `db` of `alias` as a DB-API connection: `bcv.connect(self, self.path(alias, db), ...)`.
    #[pyo3(signature = (alias, db, *, read_only = false, create = true, timeout = 5.0, isolation_level = Some("DEFERRED".to_string())))]
    fn connect<'py>(
        slf: &Bound<'py, Self>,
        alias: &str,
        db: &str,
        read_only: bool,
        create: bool,
        timeout: f64,
        isolation_level: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item("read_only", read_only)?;
        kwargs.set_item("create", create)?;
        kwargs.set_item("timeout", timeout)?;
        kwargs.set_item("isolation_level", isolation_level)?;
        let connect = py.import("bcv.dbapi")?.getattr("connect")?;
        connect.call((slf, format!("/{alias}/{db}")), Some(&kwargs))
    }

    /// Opens the SQLite connection behind a DB-API connection (`bcv.dbapi` uses it).
    fn _open(
        slf: &Bound<'_, Self>,
        path: String,
        read_only: bool,
        create: bool,
        timeout: f64,
    ) -> PyResult<PySqlConnection> {
        let py = slf.py();
        errors::enter(py)?;
        let vfs = slf.get().get(py)?;
        let busy_timeout = duration(Some(timeout))?.unwrap_or(Duration::from_secs(i32::MAX as u64 / 1000));
        let options = ConnectOptions { read_only, create, busy_timeout };
        let conn = py.detach(|| Connection::open(&vfs, &path, &options)).map_err(|e| errors::sql_error(py, e))?;
        Ok(PySqlConnection::new(conn, slf.clone().unbind()))
    }
}

/// A job's handle: the core job, seen as its node by [`Slot`].
pub(crate) struct JobHandle(VfsJob);

impl Deref for JobHandle {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.0.node()
    }
}

/// A prefetch or upload running in the background (`Vfs.prefetch_start`, `Vfs.upload_start`).
///
/// Releasing the object does not stop the job; `cancel()` (or `close()`, or leaving `with`) does: it stops
/// at its next block and `wait()` raises `ClosedError`. Closing the VFS cancels its jobs.
#[pyclass(frozen, name = "Job", module = "bcv")]
pub(crate) struct PyJob {
    slot: Slot<JobHandle>,
}

impl PyJob {
    fn new(job: VfsJob) -> PyJob {
        PyJob { slot: Slot::new(JobHandle(job)) }
    }
}

impl HasSlot for PyJob {
    type Target = JobHandle;
    const CLASS: &'static str = "Job";
    fn slot(&self) -> &Slot<JobHandle> {
        &self.slot
    }
}

/// Why `VfsJob::wait` returned without an outcome.
enum JobWait {
    Timeout(Duration),
    Failed(VfsError),
}

impl Timed for JobWait {
    fn is_timeout(&self) -> bool {
        matches!(self, JobWait::Timeout(_))
    }
    fn set_total(&mut self, total: Duration) {
        if let JobWait::Timeout(d) = self {
            *d = total;
        }
    }
}

handle_class!(PyJob {
    /// `(done, total)` bytes so far (the total is known once the job has listed its blocks).
    #[getter]
    fn progress(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        errors::enter(py)?;
        let p = self.slot.get(py)?.0.progress();
        Ok((p.done, p.total))
    }

    /// `"running"`, `"done"`, `"failed"` or `"cancelled"`.
    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<&'static str> {
        errors::enter(py)?;
        Ok(match self.slot.get(py)?.0.status() {
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        })
    }

    /// What the job does, e.g. `"prefetch of main/db"`.
    #[getter]
    fn description(&self, py: Python<'_>) -> PyResult<String> {
        errors::enter(py)?;
        Ok(self.slot.get(py)?.0.description().to_string())
    }

    /// Asks the job to stop at its next block (the same as `close()`); returns at once.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        errors::enter(py)?;
        self.slot.get(py)?.0.cancel();
        Ok(())
    }

    /// Waits for the job to finish and returns its report (`PrefetchReport` or `UploadReport`); again the
    /// same report on later calls.
    ///
    /// Raises the job's error (e.g. `ConflictError` for an upload), `ClosedError` when it was cancelled,
    /// `bcv.TimeoutError` after `timeout` seconds (the job goes on; call again). Ctrl-C interrupts the wait
    /// on the main thread.
    #[pyo3(signature = (timeout = None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        errors::enter(py)?;
        let job = self.slot.get(py)?;
        let limit = duration(timeout)?;
        let waited = call(py, limit, |t| match job.0.wait(t) {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(JobWait::Timeout(t.unwrap_or_default())),
            Err(e) => Err(JobWait::Failed(e)),
        });
        match waited {
            Ok(JobOutcome::Prefetch(r)) => prefetch_report(py, &r),
            Ok(JobOutcome::Upload(r)) => upload_report(py, &r),
            Err(Wait::Py(e)) => Err(e),
            Err(Wait::Op(JobWait::Timeout(d))) => Err(errors::to_pyerr(py, Error::Timeout(d))),
            Err(Wait::Op(JobWait::Failed(e))) => Err(convert(py, e, job.0.node())),
        }
    }
});

/// Operations on one container without a VFS or cache: create and destroy it, upload and download database
/// files, list, copy, delete, clean up garbage blocks, read the manifest.
///
/// Every method is one synchronous call with the GIL released; nothing needs closing.
#[pyclass(frozen, name = "Container", module = "bcv")]
pub(crate) struct PyContainer {
    tools: ContainerTools,
}

impl PyContainer {
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        op: impl FnOnce(&ContainerTools) -> Result<T, VfsError> + Send,
    ) -> PyResult<T> {
        errors::enter(py)?;
        py.detach(|| op(&self.tools)).map_err(|e| errors::vfs_error(py, e, None))
    }
}

#[pymethods]
impl PyContainer {
    /// The container at `url` (a directory, `file:///dir`, `memory://name`, `s3://`, `az://`, `gs://`; see
    /// the README). No request is made until a method is called. `nrequest` is the number of parallel
    /// requests; `retries` and `request_timeout` (seconds) the retry policy. Raises `InvalidArgumentError`
    /// for a malformed URL or an unknown query key.
    #[new]
    ///
    /// With `secure` (a `bcv.Secure`), `create()` makes a secure container and uploads and downloads seal and
    /// open its blocks; CBS cannot read such a container.
    #[pyo3(signature = (url, *, nrequest = 8, retries = None, request_timeout = None, secure = None))]
    fn new(
        py: Python<'_>,
        url: String,
        nrequest: usize,
        retries: Option<u32>,
        request_timeout: Option<f64>,
        secure: Option<Py<PySecure>>,
    ) -> PyResult<PyContainer> {
        errors::enter(py)?;
        let options = store_options(retries, request_timeout)?;
        let store = py.detach(|| ContainerStore::open(&url, &options)).map_err(|e| errors::vfs_error(py, e, None))?;
        let mut tools = ContainerTools::new(store, nrequest);
        if let Some(secure) = secure {
            tools = tools.with_secure(secure.get().options.clone());
        }
        Ok(PyContainer { tools })
    }

    /// Obtains the container's lease for `holder` for `duration` seconds (these tools' copy, delete and
    /// upload calls are then fenced as the holder's) and returns it. Raises as `Vfs.lease_obtain`.
    fn lease_obtain<'py>(&self, py: Python<'py>, holder: String, duration: f64) -> PyResult<Bound<'py, PyAny>> {
        let d = lease_duration(duration)?;
        let info = self.run(py, move |t| t.lease_obtain(&holder, d))?;
        lease(py, &info)
    }

    /// Extends a holding to expire `duration` seconds from now: the one these tools hold, or with `token`
    /// the holding `token` (obtained by any process). Raises `LeaseLostError` when it is not current.
    #[pyo3(signature = (duration, token = None))]
    fn lease_extend<'py>(&self, py: Python<'py>, duration: f64, token: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let d = lease_duration(duration)?;
        let info = self.run(py, move |t| match &token {
            Some(token) => t.lease_extend_with_token(token, d),
            None => t.lease_extend(d),
        })?;
        lease(py, &info)
    }

    /// Releases a holding: the one these tools hold, or with `token` the holding `token`. Raises
    /// `LeaseLostError` when it is not current.
    #[pyo3(signature = (token = None))]
    fn lease_release(&self, py: Python<'_>, token: Option<String>) -> PyResult<()> {
        self.run(py, move |t| match &token {
            Some(token) => t.lease_release_with_token(token),
            None => t.lease_release(),
        })
    }

    /// The container's lease read now, or `None` (none, or released).
    fn lease_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let info = self.run(py, |t| t.lease_status())?;
        info.map(|i| lease(py, &i)).transpose()
    }

    /// Makes these tools the holder of the holding `token` obtained elsewhere, writing nothing.
    fn lease_adopt<'py>(&self, py: Python<'py>, token: String) -> PyResult<Bound<'py, PyAny>> {
        let info = self.run(py, move |t| t.lease_adopt(&token))?;
        lease(py, &info)
    }

    /// True when the container is secure (has a `bcv_secure.json` marker). Raises `SecureContainerError`
    /// when it is and these tools have no key, or the reverse.
    fn is_secure(&self, py: Python<'_>) -> PyResult<bool> {
        self.run(py, |t| t.is_secure())
    }

    /// The container's URL without secrets.
    #[getter]
    fn url(&self) -> String {
        self.tools.store().label().to_string()
    }

    fn __repr__(&self) -> String {
        format!("<bcv.Container {:?}>", self.tools.store().label())
    }

    /// Creates an empty container (a manifest with no database) with `block_size` bytes per block (a power
    /// of two, 512 B to 256 MiB) and `name_bytes`-byte block ids (12 to 32). Raises `OperationalError` when a
    /// container exists already, unless `overwrite`.
    #[pyo3(signature = (block_size = DEFAULT_BLOCK_SIZE, name_bytes = DEFAULT_NAME_BYTES, overwrite = false))]
    fn create(&self, py: Python<'_>, block_size: u32, name_bytes: u32, overwrite: bool) -> PyResult<()> {
        self.run(py, |t| t.create(block_size, name_bytes, overwrite))
    }

    /// Deletes every object of the container, the manifest first; returns the number of other objects
    /// deleted.
    fn destroy(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |t| t.destroy())
    }

    /// The databases of the container, as `DatabaseInfo` records.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let list = self.run(py, |t| t.list())?;
        list.iter().map(|d| database_info(py, d)).collect()
    }

    /// Uploads the local SQLite file `path` as database `name` (a new version if it exists) and returns the
    /// database's version. `progress(done_bytes, total_bytes)` is called as blocks are written; if it raises,
    /// the upload still completes and the exception is raised afterwards.
    #[pyo3(signature = (path, name, progress = None))]
    fn upload_file(
        &self,
        py: Python<'_>,
        path: PathBuf,
        name: String,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u32> {
        errors::enter(py)?;
        let r = with_progress(py, progress, |report| self.tools.upload_file(&path, &name, report))?;
        r.map_err(|e| errors::vfs_error(py, e, None))
    }

    /// Downloads database `name` to the local file `path` (written under a temporary name, then renamed) and
    /// returns its size. `progress(done_bytes, total_bytes)` as for `upload_file`.
    #[pyo3(signature = (name, path, progress = None))]
    fn download_file(
        &self,
        py: Python<'_>,
        name: String,
        path: PathBuf,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        errors::enter(py)?;
        let r = with_progress(py, progress, |report| self.tools.download_file(&name, &path, report))?;
        r.map_err(|e| errors::vfs_error(py, e, None))
    }

    /// Copies database `src` to a new database `dst` (sharing blocks).
    fn copy(&self, py: Python<'_>, src: String, dst: String) -> PyResult<()> {
        self.run(py, |t| t.copy(&src, &dst))
    }

    /// Deletes database `name`; its blocks go to the delete list until `cleanup()`.
    fn delete(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.run(py, |t| t.delete(&name))
    }

    /// Deletes blocks that have been on the delete list for at least `grace` seconds and, with
    /// `find_orphans`, block objects no database references that are older than `grace` (left by crashed
    /// uploads). Returns a `CleanupReport`.
    #[pyo3(signature = (grace = 3600.0, find_orphans = false))]
    fn cleanup<'py>(&self, py: Python<'py>, grace: f64, find_orphans: bool) -> PyResult<Bound<'py, PyAny>> {
        // An infinite grace deletes nothing old enough: the same as a very long one.
        let grace = seconds("grace", Some(grace))?.unwrap_or(Duration::from_secs(1_000_000_000));
        let r = self.run(py, |t| t.cleanup(grace, find_orphans))?;
        cleanup_report(py, &r)
    }

    /// The manifest as a dict: `block_size`, `name_bytes`, `max_db_id`, `databases` (dicts with `name`,
    /// `id`, `version`, `parent`, `blocks`, `size`), `delete_list` (dicts with `block`, the hex block id, and
    /// `timestamp_ms`, when it became garbage in SQLite julian-day milliseconds) and `etag` (the manifest's
    /// version in the store, or `None`).
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (m, version) = self.run(py, |t| t.manifest())?;
        let out = manifest_dict(py, &m)?;
        out.set_item("etag", version.e_tag)?;
        Ok(out)
    }
}
