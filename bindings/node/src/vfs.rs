//! The block-cache VFS: `openVfs` and the methods of the `Vfs`, `Database` and `VfsJob` handles.
//! Conversion only; everything is `bcv_core::vfs` ([`BlockVfs`], [`Connection`], [`VfsJob`]).
//!
//! Ownership (LIFETIMES.md, A1/A2): a VFS is a node whose containers, connections and jobs are its
//! descendants. The native `Vfs` handle and every `Database` opened through it share one [`VfsSlot`], so
//! the `BlockVfs` outlives its connections whatever order the GC finalizes them in. The `BlockVfs` itself
//! is dropped off the JS thread (its cache index is synced then), after the reaper has closed the SQLite
//! handles released before it, so SQLite never holds a file of an unregistered VFS. `close()` closes the
//! node (cascading to connections and jobs) and gives the cache directory and the SQLite VFS name up as soon
//! as those connections are closed; `closeAndWait()` resolves once that happened.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::handle::Node;
use bcv_core::vfs::container::Manifest;
use bcv_core::vfs::store::StoreOptions;
use bcv_core::vfs::{
    AttachOptions, BlockVfs, ConnectOptions, Connection, JobOutcome, JobStatus, LeaseInfo, LeaseOptions, UploadOptions,
    VfsConfig, VfsError, VfsResult,
};
use napi::Env;
use napi_derive::napi;
use tokio::sync::watch;

use crate::callable::serviced;
use crate::env::{EnvLocal, Out, runtime};
use crate::error::JsErr;
use crate::handle::{Handle, Kind, enter};
use crate::js::{self, RawValue};
use crate::secure::SecureHandle;
use crate::sql::Statement;

/// The `BlockVfs` of a JS `Vfs`, dropped on its own thread (see the module docs).
pub(crate) struct VfsBox {
    vfs: ManuallyDrop<BlockVfs>,
    done: Option<watch::Sender<bool>>,
    /// Set once a container was attached with a JS cipher or key provider: synchronous calls that wait on
    /// bcv workers then let the JS thread serve those workers' calls while they wait (see `crate::callable`).
    uses_js: AtomicBool,
}

impl Deref for VfsBox {
    type Target = BlockVfs;
    fn deref(&self) -> &BlockVfs {
        &self.vfs
    }
}

impl Drop for VfsBox {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once and `vfs` is not touched after this.
        let vfs = unsafe { ManuallyDrop::take(&mut self.vfs) };
        let done = self.done.take();
        let finish = move || {
            // Connections closed or released before this point are torn down by the reaper first, so no SQLite
            // file of this VFS is open when it is unregistered (core would otherwise keep its memory for good).
            let _ = vfs.runtime().reaper_flush();
            drop(vfs);
            if let Some(done) = done {
                let _ = done.send(true);
            }
        };
        // Never inline on the JS thread: dropping syncs the cache index (N1). If no thread can be started, the
        // closure (and with it the VFS) is dropped here instead.
        let _ = std::thread::Builder::new().name("bcv-vfs-drop".into()).spawn(finish);
    }
}

/// What the JS `Vfs` handle and its databases share: the VFS until `close()` gives it up.
pub(crate) struct VfsSlot {
    /// The handle's reference to the VFS node (a clone of the `BlockVfs`'s own).
    node: Node,
    vfs: Mutex<Option<Arc<VfsBox>>>,
    released: watch::Receiver<bool>,
}

impl VfsSlot {
    fn new(vfs: BlockVfs) -> VfsSlot {
        let (tx, rx) = watch::channel(false);
        let node = vfs.node().clone();
        let boxed = VfsBox { vfs: ManuallyDrop::new(vfs), done: Some(tx), uses_js: AtomicBool::new(false) };
        VfsSlot { node, vfs: Mutex::new(Some(Arc::new(boxed))), released: rx }
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    fn get(&self) -> Result<Arc<VfsBox>, JsErr> {
        let slot = self.vfs.lock().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or_else(|| JsErr::vfs(VfsError::Closed("VFS".into()), Some(&self.node)))
    }

    /// Closes the node (cascading to containers, connections and jobs) and lets the `BlockVfs` go once
    /// nothing uses it; the receiver turns `true` when it is gone. Idempotent.
    pub(crate) fn release(&self) -> watch::Receiver<bool> {
        self.node.close();
        let taken = self.vfs.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(taken);
        self.released.clone()
    }
}

/// A database connection and the VFS it needs.
pub(crate) struct DbSlot {
    pub(crate) conn: Connection,
    pub(crate) readonly: bool,
    /// Declared after `conn`: the connection is released before the VFS is let go.
    _vfs: Arc<VfsSlot>,
}

/// Options of `openVfs`.
#[napi(object)]
pub struct VfsOptions {
    /// The cache directory (created if missing); one process owns it at a time.
    pub cache_dir: String,
    /// The name the VFS is registered under in SQLite; default `'bcv'`. Unique per process.
    pub name: Option<String>,
    /// The cache size limit in bytes; default 1 GiB.
    pub cache_size: Option<f64>,
    /// Parallel requests for uploads and prefetch; default 8.
    pub nrequest: Option<u32>,
    /// Retries after a transient store failure; default 4.
    pub retries: Option<u32>,
    /// Time limit of one store request in milliseconds; default 30000.
    pub request_timeout_ms: Option<f64>,
    /// How far the clocks of two lease clients may disagree, in milliseconds; default 5000.
    pub lease_max_skew_ms: Option<f64>,
    /// The lease time that must be left after the renewal before each manifest write, in milliseconds;
    /// default 5000.
    pub lease_safety_margin_ms: Option<f64>,
}

/// Lease options from the JS options shared by `openVfs` and `openContainer`.
pub(crate) fn lease_options(max_skew_ms: Option<f64>, safety_margin_ms: Option<f64>) -> Result<LeaseOptions, JsErr> {
    let mut options = LeaseOptions::default();
    if let Some(ms) = max_skew_ms {
        options.max_skew = non_negative_ms(ms, "leaseMaxSkewMs")?;
    }
    if let Some(ms) = safety_margin_ms {
        options.safety_margin = non_negative_ms(ms, "leaseSafetyMarginMs")?;
    }
    Ok(options)
}

fn non_negative_ms(ms: f64, what: &str) -> Result<Duration, JsErr> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(JsErr::invalid(format!("{what} must be a non-negative number of milliseconds, got {ms}")));
    }
    Ok(crate::duration_from_ms(ms))
}

/// Store options from the JS options shared by `openVfs` and `openContainer`.
pub(crate) fn store_options(retries: Option<u32>, request_timeout_ms: Option<f64>) -> Result<StoreOptions, JsErr> {
    let mut options = StoreOptions::default();
    if let Some(r) = retries {
        options.retries = r;
    }
    if let Some(ms) = request_timeout_ms {
        options.request_timeout = positive_ms(ms, "requestTimeoutMs")?;
    }
    Ok(options)
}

fn positive_ms(ms: f64, what: &str) -> Result<Duration, JsErr> {
    if !(ms.is_finite() && ms > 0.0) {
        return Err(JsErr::invalid(format!("{what} must be a positive number of milliseconds, got {ms}")));
    }
    Ok(crate::duration_from_ms(ms))
}

fn grace_of(cleanup_grace_ms: Option<f64>) -> Result<UploadOptions, JsErr> {
    let cleanup_grace = match cleanup_grace_ms {
        None => None,
        Some(ms) if ms.is_finite() && ms >= 0.0 => Some(crate::duration_from_ms(ms)),
        Some(ms) => return Err(JsErr::invalid(format!("cleanupGraceMs must be a non-negative number, got {ms}"))),
    };
    Ok(UploadOptions { cleanup_grace })
}

fn build_vfs(options: VfsOptions) -> Result<BlockVfs, JsErr> {
    let mut config = VfsConfig::new(&options.cache_dir);
    if let Some(name) = options.name {
        config.name = name;
    }
    if let Some(size) = options.cache_size {
        if !(size.is_finite() && size >= 0.0) {
            return Err(JsErr::invalid(format!("cacheSize must be a non-negative number of bytes, got {size}")));
        }
        config.cache_size = size as u64;
    }
    if let Some(n) = options.nrequest {
        config.nrequest = n.max(1) as usize;
    }
    config.store = store_options(options.retries, options.request_timeout_ms)?;
    config.lease = lease_options(options.lease_max_skew_ms, options.lease_safety_margin_ms)?;
    config.runtime = Some(runtime().clone());
    BlockVfs::create(config).map_err(JsErr::from)
}

/// Creates a block-cache VFS on `options.cacheDir` and registers it in bcv's SQLite. Containers attached
/// in an earlier run are attached again without a request. Throws `BCV_BUSY` when another process (or
/// another VFS here) owns the directory, `BCV_INVALID_ARGUMENT` when the name is taken, `BCV_IO`.
#[napi]
pub fn open_vfs(env: Env, options: VfsOptions) -> napi::Result<Handle> {
    let local = enter(&env)?;
    let vfs = build_vfs(options).map_err(|e| e.throw(&local))?;
    Ok(Handle::wrap(&local, Kind::Vfs(Arc::new(VfsSlot::new(vfs)))))
}

/// A container attached to a VFS.
#[napi(object)]
pub struct AttachedContainer {
    /// The alias (the first component of database paths).
    pub alias: String,
    /// The container URL as given to `attach`.
    pub url: String,
}

/// A job's progress in bytes (the total is known once the job has listed its blocks).
#[napi(object)]
pub struct JobProgress {
    /// Bytes done.
    pub done: f64,
    /// Bytes in all.
    pub total: f64,
}

fn json_of<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// A manifest as plain data: sizes, databases and the delete list (block ids in hex).
pub(crate) fn manifest_json(m: &Manifest) -> serde_json::Value {
    let deleted: Vec<serde_json::Value> = m
        .delete_list
        .iter()
        .map(|d| serde_json::json!({ "block": d.id.to_string(), "timestamp_ms": d.timestamp_ms }))
        .collect();
    serde_json::json!({
        "block_size": m.block_size,
        "name_bytes": m.name_bytes,
        "max_db_id": m.max_db_id,
        "databases": json_of(&bcv_core::vfs::list_of(m)),
        "delete_list": deleted,
    })
}

fn outcome_json(outcome: JobOutcome) -> serde_json::Value {
    match outcome {
        JobOutcome::Prefetch(r) => json_of(&r),
        JobOutcome::Upload(r) => json_of(&r),
    }
}

fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Running => "running",
        JobStatus::Done => "done",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

impl Handle {
    /// The VFS behind a `Vfs` handle (refused on other kinds and once `close()` gave it up).
    fn vfs(&self, local: &EnvLocal, method: &str) -> napi::Result<Arc<VfsBox>> {
        let kind = self.get(local)?;
        let Kind::Vfs(slot) = &*kind else { return Err(self.wrong(local, method)) };
        slot.get().map_err(|e| e.throw(local))
    }

    /// The kind of a `Database` handle, checked.
    fn database(&self, local: &EnvLocal, method: &str) -> napi::Result<Arc<Kind>> {
        let kind = self.get(local)?;
        if !matches!(*kind, Kind::Database(_)) {
            return Err(self.wrong(local, method));
        }
        Ok(kind)
    }

    /// The kind of a `VfsJob` handle, checked.
    fn job(&self, local: &EnvLocal, method: &str) -> napi::Result<Arc<Kind>> {
        let kind = self.get(local)?;
        if !matches!(*kind, Kind::Job(_)) {
            return Err(self.wrong(local, method));
        }
        Ok(kind)
    }
}

/// Throws a VFS error raised on `vfs`.
fn thrown(local: &EnvLocal, vfs: &BlockVfs, e: VfsError) -> napi::Error {
    JsErr::vfs(e, Some(vfs.node())).throw(local)
}

/// Runs a synchronous operation of `vfs` on the JS thread, or, once a container was attached with a JS cipher
/// or key provider, on a helper thread while the JS thread serves the calls bcv workers make to that JS code
/// (the operation may wait for those workers). Errors are thrown.
fn sync_op<T: Send>(
    local: &EnvLocal,
    vfs: &VfsBox,
    op: impl FnOnce(&BlockVfs) -> VfsResult<T> + Send,
) -> napi::Result<T> {
    let result = if vfs.uses_js.load(Ordering::Acquire) {
        serviced(local, || op(vfs)).map_err(|e| e.throw(local))?
    } else {
        op(vfs)
    };
    result.map_err(|e| thrown(local, vfs, e))
}

/// A lease as plain data (`holder`, `token`, `generation`, `acquiredUnixMs`, `expiresUnixMs`); `lib/vfs.js`
/// makes a `Lease` of it.
pub(crate) fn lease_json(lease: Option<&LeaseInfo>) -> serde_json::Value {
    lease.map_or(serde_json::Value::Null, json_of)
}

/// A lease duration in milliseconds (positive).
pub(crate) fn lease_duration(ms: f64) -> Result<Duration, JsErr> {
    positive_ms(ms, "durationMs")
}

/// Runs `work` on `vfs` off the JS thread and settles a promise with its JSON result.
fn vfs_off_thread(
    env: &Env,
    vfs: Arc<VfsBox>,
    work: impl FnOnce(&BlockVfs) -> VfsResult<serde_json::Value> + Send + 'static,
) -> napi::Result<RawValue> {
    crate::off_thread(env, move || work(&vfs).map_err(|e| JsErr::vfs(e, Some(vfs.node()))), |r| r.map(Out::Json))
}

/// The connection inside a checked `Database` kind.
pub(crate) fn conn_of(kind: &Kind) -> &Connection {
    match kind {
        Kind::Database(d) => &d.conn,
        _ => unreachable!("checked by Handle::database"),
    }
}

#[napi]
impl Handle {
    // ----- VFS -----

    /// The SQLite VFS name (`vfs=` in URIs).
    #[napi]
    pub fn vfs_name(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        Ok(self.vfs(&local, "vfsName")?.name().to_string())
    }

    /// The cache directory.
    #[napi]
    pub fn vfs_cache_dir(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        Ok(self.vfs(&local, "vfsCacheDir")?.cache_dir().display().to_string())
    }

    /// Attaches the container at `url` (a directory, `memory://`, `s3://`, `az://`, `gs://`) and returns
    /// its alias (default: the URL's last component). Fetches the manifest unless this cache knows it.
    /// `secure` is the cipher of a secure container (required for one, refused for a plaintext one).
    /// Throws `BCV_ALREADY_EXISTS` (alias taken), `BCV_NOT_FOUND` (no container there), `BCV_IO`,
    /// `BCV_SECURE` (no key for a secure container, a key for a plaintext one), `BCV_AUTH` (wrong key).
    #[napi]
    pub fn vfs_attach(
        &self,
        env: Env,
        url: String,
        alias: Option<String>,
        if_not_attached: Option<bool>,
        secure: Option<&SecureHandle>,
    ) -> napi::Result<String> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsAttach")?;
        if secure.is_some_and(SecureHandle::uses_js) {
            vfs.uses_js.store(true, Ordering::Release);
        }
        let options = AttachOptions {
            alias,
            if_not_attached: if_not_attached.unwrap_or(false),
            secure: secure.map(SecureHandle::options),
        };
        sync_op(&local, &vfs, |v| v.attach(&url, &options))
    }

    /// True when this VFS is a read-only client of a daemon owning its cache directory.
    #[napi]
    pub fn vfs_is_daemon_client(&self, env: Env) -> napi::Result<bool> {
        let local = enter(&env)?;
        Ok(self.vfs(&local, "vfsIsDaemonClient")?.is_daemon_client())
    }

    /// Detaches `alias`. Throws `BCV_BUSY` while a database of it is open or has local changes.
    #[napi]
    pub fn vfs_detach(&self, env: Env, alias: String) -> napi::Result<()> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsDetach")?;
        sync_op(&local, &vfs, |v| v.detach(&alias))
    }

    /// Fetches the manifest of `alias` if it changed (one conditional GET): the poll report.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_poll(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsPoll")?;
        let report = sync_op(&local, &vfs, |v| v.poll(&alias))?;
        Ok(RawValue(js::json(local.raw(), &json_of(&report))))
    }

    /// `vfsPoll` off the JS thread.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn vfs_poll_async(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsPollAsync")?;
        crate::off_thread(
            &env,
            move || {
                let r = vfs.poll(&alias).map(|r| json_of(&r));
                r.map_err(|e| JsErr::vfs(e, Some(vfs.node())))
            },
            |r| r.map(Out::Json),
        )
    }

    /// Uploads the local changes of every database of `alias`: the upload report. Throws `BCV_CONFLICT`
    /// when another client changed a database this one changed too (nothing is lost: revert or poll).
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_upload(&self, env: Env, alias: String, cleanup_grace_ms: Option<f64>) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsUpload")?;
        let options = grace_of(cleanup_grace_ms).map_err(|e| e.throw(&local))?;
        let report = sync_op(&local, &vfs, |v| v.upload(&alias, &options))?;
        Ok(RawValue(js::json(local.raw(), &json_of(&report))))
    }

    /// `vfsUpload` off the JS thread.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn vfs_upload_async(&self, env: Env, alias: String, cleanup_grace_ms: Option<f64>) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsUploadAsync")?;
        let options = grace_of(cleanup_grace_ms).map_err(|e| e.throw(&local))?;
        crate::off_thread(
            &env,
            move || {
                let r = vfs.upload(&alias, &options).map(|r| json_of(&r));
                r.map_err(|e| JsErr::vfs(e, Some(vfs.node())))
            },
            |r| r.map(Out::Json),
        )
    }

    /// Starts fetching every block of `db` the cache lacks, in the background: a `VfsJob` handle.
    #[napi]
    pub fn vfs_prefetch_start(&self, env: Env, alias: String, db: String) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsPrefetchStart")?;
        let job = vfs.prefetch_start(&alias, &db).map_err(|e| thrown(&local, &vfs, e))?;
        Ok(Handle::wrap_child(&local, Kind::Job(job), self))
    }

    /// Starts an upload of `alias` in the background: a `VfsJob` handle. Cancelling it before the
    /// manifest is sent leaves the container unchanged.
    #[napi]
    pub fn vfs_upload_start(&self, env: Env, alias: String, cleanup_grace_ms: Option<f64>) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsUploadStart")?;
        let options = grace_of(cleanup_grace_ms).map_err(|e| e.throw(&local))?;
        let job = vfs.upload_start(&alias, &options).map_err(|e| thrown(&local, &vfs, e))?;
        Ok(Handle::wrap_child(&local, Kind::Job(job), self))
    }

    /// Drops the local changes of `db` (or of every database of `alias`): the databases reverted.
    #[napi]
    pub fn vfs_revert(&self, env: Env, alias: String, db: Option<String>) -> napi::Result<Vec<String>> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsRevert")?;
        sync_op(&local, &vfs, |v| v.revert(&alias, db.as_deref()))
    }

    /// Copies database `from` of `alias` to a new database `to`, sharing blocks (a manifest write).
    #[napi]
    pub fn vfs_copy(&self, env: Env, alias: String, from: String, to: String) -> napi::Result<()> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsCopy")?;
        sync_op(&local, &vfs, |v| v.copy(&alias, &from, &to))
    }

    /// Deletes database `db` of `alias` from the container (a manifest write).
    #[napi]
    pub fn vfs_delete(&self, env: Env, alias: String, db: String) -> napi::Result<()> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsDelete")?;
        sync_op(&local, &vfs, |v| v.delete(&alias, &db))
    }

    /// Status of every database of `alias`.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_databases(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsDatabases")?;
        let status = vfs.databases(&alias).map_err(|e| thrown(&local, &vfs, e))?;
        Ok(RawValue(js::json(local.raw(), &json_of(&status))))
    }

    /// The manifest of `alias` as this client last saw it.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_manifest(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsManifest")?;
        let m = vfs.manifest(&alias).map_err(|e| thrown(&local, &vfs, e))?;
        Ok(RawValue(js::json(local.raw(), &manifest_json(&m))))
    }

    /// The request counters of the container attached as `alias`.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_meter(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsMeter")?;
        let store = vfs.store(&alias).map_err(|e| thrown(&local, &vfs, e))?;
        Ok(RawValue(js::json(local.raw(), &json_of(&store.meter().snapshot()))))
    }

    /// Cache activity counters and occupancy.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_cache_stats(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsCacheStats")?;
        let mut value = json_of(&vfs.cache_stats());
        if let (serde_json::Value::Object(map), serde_json::Value::Object(usage)) =
            (&mut value, json_of(&vfs.cache_usage()))
        {
            map.extend(usage);
        }
        Ok(RawValue(js::json(local.raw(), &value)))
    }

    /// The SQLite path of database `db` of `alias`: `/alias/db`.
    #[napi]
    pub fn vfs_path(&self, env: Env, alias: String, db: String) -> napi::Result<String> {
        let local = enter(&env)?;
        Ok(self.vfs(&local, "vfsPath")?.path(&alias, &db))
    }

    /// The attached containers.
    #[napi]
    pub fn vfs_attached(&self, env: Env) -> napi::Result<Vec<AttachedContainer>> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsAttached")?;
        Ok(vfs.attached().into_iter().map(|(alias, url)| AttachedContainer { alias, url }).collect())
    }

    /// Opens database `path` (`/alias/db`) through this VFS: a `Database` handle, a child of the
    /// container's node. Throws `SQLITE_CANTOPEN` and the like, `BCV_CLOSED` once the VFS is closed.
    #[napi]
    pub fn vfs_open(
        &self,
        env: Env,
        path: String,
        readonly: Option<bool>,
        create: Option<bool>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Vfs(slot) = &*kind else { return Err(self.wrong(&local, "vfsOpen")) };
        let vfs = slot.get().map_err(|e| e.throw(&local))?;
        let mut options = ConnectOptions { read_only: readonly.unwrap_or(false), ..ConnectOptions::default() };
        options.create = create.unwrap_or(true);
        if let Some(ms) = timeout_ms {
            if !(ms.is_finite() && ms >= 0.0) {
                return Err(JsErr::invalid(format!("timeoutMs must be a non-negative number, got {ms}")).throw(&local));
            }
            options.busy_timeout = crate::duration_from_ms(ms);
        }
        let conn = Connection::open(&vfs, &path, &options).map_err(|e| thrown(&local, &vfs, e))?;
        let db = DbSlot { conn, readonly: options.read_only, _vfs: slot.clone() };
        Ok(Handle::wrap_child(&local, Kind::Database(db), self))
    }

    // ----- leases -----

    /// Obtains the lease of `alias` for `holder` (free text, 1 to 256 bytes) for `durationMs`: the lease.
    /// Throws `BCV_LEASE_HELD` (naming the holder) while another client holds it, `BCV_INVALID_ARGUMENT`
    /// (bad holder, a duration not longer than the safety margin, held already), `BCV_UNSUPPORTED`.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_lease_obtain(
        &self,
        env: Env,
        alias: String,
        holder: String,
        duration_ms: f64,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseObtain")?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        let lease = sync_op(&local, &vfs, |v| v.lease_obtain(&alias, &holder, duration))?;
        Ok(RawValue(js::json(local.raw(), &lease_json(Some(&lease)))))
    }

    /// `vfsLeaseObtain` off the JS thread.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn vfs_lease_obtain_async(
        &self,
        env: Env,
        alias: String,
        holder: String,
        duration_ms: f64,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseObtainAsync")?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        vfs_off_thread(&env, vfs, move |v| v.lease_obtain(&alias, &holder, duration).map(|l| lease_json(Some(&l))))
    }

    /// Extends the lease this VFS holds on `alias` to expire `durationMs` from now. Throws `BCV_LEASE_LOST`
    /// when it holds none any more (expired, taken over).
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_lease_extend(&self, env: Env, alias: String, duration_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseExtend")?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        let lease = sync_op(&local, &vfs, |v| v.lease_extend(&alias, duration))?;
        Ok(RawValue(js::json(local.raw(), &lease_json(Some(&lease)))))
    }

    /// `vfsLeaseExtend` off the JS thread.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn vfs_lease_extend_async(&self, env: Env, alias: String, duration_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseExtendAsync")?;
        let duration = lease_duration(duration_ms).map_err(|e| e.throw(&local))?;
        vfs_off_thread(&env, vfs, move |v| v.lease_extend(&alias, duration).map(|l| lease_json(Some(&l))))
    }

    /// Releases the lease this VFS holds on `alias` (others may obtain it at once). Throws `BCV_LEASE_LOST`.
    #[napi]
    pub fn vfs_lease_release(&self, env: Env, alias: String) -> napi::Result<()> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseRelease")?;
        sync_op(&local, &vfs, |v| v.lease_release(&alias))
    }

    /// `vfsLeaseRelease` off the JS thread.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn vfs_lease_release_async(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseReleaseAsync")?;
        vfs_off_thread(&env, vfs, move |v| v.lease_release(&alias).map(|()| serde_json::Value::Null))
    }

    /// The lease of `alias` as recorded in the container, read now; `null` when none is held.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_lease_status(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseStatus")?;
        let lease = sync_op(&local, &vfs, |v| v.lease_status(&alias))?;
        Ok(RawValue(js::json(local.raw(), &lease_json(lease.as_ref()))))
    }

    /// `vfsLeaseStatus` off the JS thread.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn vfs_lease_status_async(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseStatusAsync")?;
        vfs_off_thread(&env, vfs, move |v| v.lease_status(&alias).map(|l| lease_json(l.as_ref())))
    }

    /// Makes this VFS the holder of the lease of `alias` obtained elsewhere under `token` (nothing is
    /// written). Throws `BCV_LEASE_LOST` when the container's lease is not that unexpired holding.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_lease_adopt(&self, env: Env, alias: String, token: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseAdopt")?;
        let lease = sync_op(&local, &vfs, |v| v.lease_adopt(&alias, &token))?;
        Ok(RawValue(js::json(local.raw(), &lease_json(Some(&lease)))))
    }

    /// The lease this VFS holds on `alias` as it last wrote it (no request); `null` when it holds none.
    #[napi(ts_return_type = "unknown")]
    pub fn vfs_lease_held(&self, env: Env, alias: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vfs = self.vfs(&local, "vfsLeaseHeld")?;
        let lease = sync_op(&local, &vfs, |v| v.lease_held(&alias))?;
        Ok(RawValue(js::json(local.raw(), &lease_json(lease.as_ref()))))
    }

    // ----- databases -----

    /// Runs zero or more `;`-separated statements without parameters (rows are discarded).
    #[napi]
    pub fn db_exec(&self, env: Env, sql: String) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbExec")?;
        let conn = conn_of(&kind);
        conn.execute_batch(&sql).map_err(|e| JsErr::vfs(e, Some(conn.node())).throw(&local))
    }

    /// Prepares one statement.
    #[napi]
    pub fn db_prepare(&self, env: Env, sql: String) -> napi::Result<Statement> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbPrepare")?;
        Statement::prepare(&local, kind, &sql)
    }

    /// True inside an explicit transaction (false once closed).
    #[napi]
    pub fn db_in_transaction(&self, env: Env) -> napi::Result<bool> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbInTransaction")?;
        Ok(conn_of(&kind).in_transaction())
    }

    /// True until the database is closed (by `close()`, or with its VFS or container).
    #[napi]
    pub fn db_is_open(&self, env: Env) -> napi::Result<bool> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbIsOpen")?;
        let conn = conn_of(&kind);
        Ok(conn.is_open() && conn.node().close_reason().is_none())
    }

    /// True when opened read-only.
    #[napi]
    pub fn db_readonly(&self, env: Env) -> napi::Result<bool> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbReadonly")?;
        Ok(matches!(&*kind, Kind::Database(d) if d.readonly))
    }

    /// The path the database was opened with.
    #[napi]
    pub fn db_path(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbPath")?;
        Ok(conn_of(&kind).path().to_string())
    }

    /// Makes a running statement fail with `SQLITE_INTERRUPT` (safe from any thread).
    #[napi]
    pub fn db_interrupt(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.database(&local, "dbInterrupt")?;
        conn_of(&kind).interrupt();
        Ok(())
    }

    // ----- jobs -----

    /// What the job does, e.g. `'prefetch of main/db'`.
    #[napi]
    pub fn job_description(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        let kind = self.job(&local, "jobDescription")?;
        let Kind::Job(j) = &*kind else { unreachable!("checked by Handle::job") };
        Ok(j.description().to_string())
    }

    /// Bytes done and to do so far.
    #[napi]
    pub fn job_progress(&self, env: Env) -> napi::Result<JobProgress> {
        let local = enter(&env)?;
        let kind = self.job(&local, "jobProgress")?;
        let Kind::Job(j) = &*kind else { unreachable!("checked by Handle::job") };
        let p = j.progress();
        Ok(JobProgress { done: p.done as f64, total: p.total as f64 })
    }

    /// `'running' | 'done' | 'failed' | 'cancelled'`.
    #[napi(ts_return_type = "'running' | 'done' | 'failed' | 'cancelled'")]
    pub fn job_status(&self, env: Env) -> napi::Result<&'static str> {
        let local = enter(&env)?;
        let kind = self.job(&local, "jobStatus")?;
        let Kind::Job(j) = &*kind else { unreachable!("checked by Handle::job") };
        Ok(status_name(j.status()))
    }

    /// Stops the job at its next block (the same as `close()`).
    #[napi]
    pub fn job_cancel(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.job(&local, "jobCancel")?;
        let Kind::Job(j) = &*kind else { unreachable!("checked by Handle::job") };
        j.cancel();
        Ok(())
    }

    /// Waits (off the JS thread) for the job's report. Rejects with the job's error (the original one on
    /// the first wait), `BCV_CLOSED` once it was cancelled.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn job_wait(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.job(&local, "jobWait")?;
        crate::off_thread(
            &env,
            move || {
                let Kind::Job(j) = &*kind else { unreachable!("checked by Handle::job") };
                match j.wait(None) {
                    Ok(Some(outcome)) => Ok(outcome_json(outcome)),
                    Ok(None) => Err(JsErr::new("BCV_INTERNAL", "job wait ended without a result")),
                    Err(e) => Err(JsErr::vfs(e, Some(j.node()))),
                }
            },
            |r| r.map(Out::Json),
        )
    }
}
