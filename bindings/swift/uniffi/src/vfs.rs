//! The block-cache VFS for Swift: `Vfs`, `Database` and `Statement` (SQL through the VFS), `VfsJob`
//! (background prefetch and upload) and `Container` (the tools without a cache). Adapters over
//! `bcv_core::vfs`; the VFS, databases and jobs are nodes (close, closeAndWait, state).
//!
//! Calls that touch the network or the disk block the calling thread: call them from a background task,
//! not the main actor. `VfsJob.wait` is the exception: it is async.

use std::sync::Arc;
use std::time::Duration;

use bcv_core::handle as core;
use bcv_core::vfs as cv;
use bcv_core::vfs::store::{ContainerStore, StoreOptions};

use crate::error::{BcvError, opt_millis};
use crate::lease::{Lease, lease_options};
use crate::node::{AsNode, HasNode, node_methods};
use crate::secure::SecureOptions;

/// A value bound to or read from SQL.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer {
        /// The value.
        value: i64,
    },
    /// A double.
    Real {
        /// The value.
        value: f64,
    },
    /// UTF-8 text.
    Text {
        /// The value.
        value: String,
    },
    /// Bytes.
    Blob {
        /// The value.
        value: Vec<u8>,
    },
}

impl From<cv::Value> for SqlValue {
    fn from(v: cv::Value) -> SqlValue {
        match v {
            cv::Value::Null => SqlValue::Null,
            cv::Value::Integer(value) => SqlValue::Integer { value },
            cv::Value::Real(value) => SqlValue::Real { value },
            cv::Value::Text(value) => SqlValue::Text { value },
            cv::Value::Blob(value) => SqlValue::Blob { value },
        }
    }
}

impl From<SqlValue> for cv::Value {
    fn from(v: SqlValue) -> cv::Value {
        match v {
            SqlValue::Null => cv::Value::Null,
            SqlValue::Integer { value } => cv::Value::Integer(value),
            SqlValue::Real { value } => cv::Value::Real(value),
            SqlValue::Text { value } => cv::Value::Text(value),
            SqlValue::Blob { value } => cv::Value::Blob(value),
        }
    }
}

fn values(params: Vec<SqlValue>) -> Vec<cv::Value> {
    params.into_iter().map(Into::into).collect()
}

fn row(values: Vec<cv::Value>) -> Vec<SqlValue> {
    values.into_iter().map(Into::into).collect()
}

/// What a poll changed.
#[derive(Debug, uniffi::Record)]
pub struct PollReport {
    /// True when the container's manifest had changed.
    pub manifest_changed: bool,
    /// Databases whose new version is now visible.
    pub updated: Vec<String>,
    /// Databases new in the container.
    pub added: Vec<String>,
    /// Databases deleted from the container.
    pub removed: Vec<String>,
    /// Databases changed remotely while they have local changes (revert them to follow).
    pub conflicts: Vec<String>,
}

impl From<cv::PollReport> for PollReport {
    fn from(r: cv::PollReport) -> PollReport {
        PollReport {
            manifest_changed: r.manifest_changed,
            updated: r.updated,
            added: r.added,
            removed: r.removed,
            conflicts: r.conflicts,
        }
    }
}

/// One uploaded database and its new version.
#[derive(Debug, uniffi::Record)]
pub struct UploadedDatabase {
    /// The database name.
    pub name: String,
    /// Its version after the upload.
    pub version: u32,
}

/// What an upload did.
#[derive(Debug, uniffi::Record)]
pub struct UploadReport {
    /// Databases uploaded.
    pub databases: Vec<UploadedDatabase>,
    /// Block objects written.
    pub blocks_written: u64,
    /// Bytes written in block objects.
    pub bytes_written: u64,
    /// Blocks not written again because the container had them already.
    pub blocks_deduplicated: u64,
    /// Garbage blocks deleted (their grace period had passed).
    pub blocks_deleted: u64,
    /// Times the upload re-based onto another client's manifest.
    pub rebases: u32,
}

impl From<cv::UploadReport> for UploadReport {
    fn from(r: cv::UploadReport) -> UploadReport {
        UploadReport {
            databases: r.databases.into_iter().map(|(name, version)| UploadedDatabase { name, version }).collect(),
            blocks_written: r.blocks_written,
            bytes_written: r.bytes_written,
            blocks_deduplicated: r.blocks_deduplicated,
            blocks_deleted: r.blocks_deleted,
            rebases: r.rebases,
        }
    }
}

/// What a prefetch did.
#[derive(Debug, uniffi::Record)]
pub struct PrefetchReport {
    /// Distinct blocks of the database (now all cached).
    pub blocks: u64,
    /// Bytes fetched from the store.
    pub bytes_fetched: u64,
}

/// Status of one database of an attached container.
#[derive(Debug, uniffi::Record)]
pub struct DatabaseStatus {
    /// The database name.
    pub name: String,
    /// Its id in the manifest (0: only local so far).
    pub id: u32,
    /// The manifest version the local image is based on.
    pub version: u32,
    /// Image size in bytes.
    pub size: u64,
    /// Blocks in the image.
    pub blocks: u64,
    /// Blocks written locally and not uploaded.
    pub dirty_blocks: u64,
    /// True when there is something to upload.
    pub has_local_changes: bool,
    /// Open SQLite connections.
    pub open_handles: u32,
}

/// A database as listed from a container's manifest.
#[derive(Debug, uniffi::Record)]
pub struct DatabaseInfo {
    /// The name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// Its version.
    pub version: u32,
    /// Blocks.
    pub blocks: u32,
    /// Size in bytes (blocks × block size).
    pub size: u64,
}

/// What a cleanup did.
#[derive(Debug, uniffi::Record)]
pub struct CleanupReport {
    /// Blocks deleted from the delete list.
    pub deleted: u64,
    /// Orphaned blocks deleted.
    pub orphans_deleted: u64,
    /// Blocks still waiting on the delete list.
    pub waiting: u64,
}

/// A query's result: column names and rows.
#[derive(Debug, uniffi::Record)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Where a background job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum JobStatus {
    /// Still working.
    Running,
    /// Finished; `wait` returns its outcome.
    Done,
    /// Finished with an error; `wait` throws it.
    Failed,
    /// Cancelled by `close()` (or by closing its VFS).
    Cancelled,
}

/// A finished job's outcome: exactly one of the two reports is set.
#[derive(Debug, uniffi::Record)]
pub struct JobOutcome {
    /// Set for a prefetch.
    pub prefetch: Option<PrefetchReport>,
    /// Set for an upload.
    pub upload: Option<UploadReport>,
}

/// Bytes done and to do.
#[derive(Clone, Copy, Debug, uniffi::Record)]
pub struct JobProgress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all (known once the job listed its blocks).
    pub total: u64,
}

struct VfsNode(cv::BlockVfs);
struct DatabaseNode(cv::Connection);
struct JobNode(cv::VfsJob);

impl AsNode for VfsNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

impl AsNode for DatabaseNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

impl AsNode for JobNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// A block-cache VFS: a cache directory, the containers attached to it, and an SQLite VFS serving their
/// databases as `/ALIAS/DB`. One process owns a cache directory at a time.
///
/// Ownership: `deinit` releases it; databases and jobs keep what they need. `close()` ends it: later calls
/// throw `Closed`, jobs are cancelled and open databases are closed.
#[derive(uniffi::Object)]
pub struct Vfs {
    inner: Arc<VfsNode>,
}

impl HasNode for Vfs {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(Vfs);

#[uniffi::export]
impl Vfs {
    /// Opens (or creates) the cache directory `cache_dir` and registers the VFS as `name` (default "bcv").
    /// `cache_size` is the cache limit in bytes (default 1 GiB); `nrequest` the parallel requests of uploads
    /// and prefetches (default 8). Containers attached in an earlier run are attached again without a request.
    /// `lease_max_skew_ms` / `lease_safety_margin_ms` tune how leases are treated (defaults 5 s each).
    ///
    /// When a daemon serves `cache_dir`, the VFS becomes its read-only client (`is_daemon_client`).
    /// Errors: `CacheBusy` when another process owns the directory; `InvalidArgument`; `Io`.
    #[uniffi::constructor(default(lease_max_skew_ms = None, lease_safety_margin_ms = None))]
    pub fn new(
        cache_dir: String,
        name: Option<String>,
        cache_size: Option<u64>,
        nrequest: Option<u32>,
        lease_max_skew_ms: Option<u64>,
        lease_safety_margin_ms: Option<u64>,
    ) -> Result<Arc<Vfs>, BcvError> {
        let mut config = cv::VfsConfig::new(cache_dir);
        if let Some(name) = name {
            config.name = name;
        }
        if let Some(size) = cache_size {
            config.cache_size = size;
        }
        if let Some(n) = nrequest {
            config.nrequest = n as usize;
        }
        config.lease = lease_options(lease_max_skew_ms, lease_safety_margin_ms);
        Ok(Arc::new(Vfs { inner: Arc::new(VfsNode(cv::BlockVfs::create(config)?)) }))
    }

    /// The SQLite VFS name.
    pub fn name(&self) -> String {
        self.inner.0.name().to_string()
    }

    /// The SQLite path of `db` in the container attached as `alias`: `/alias/db`.
    pub fn path(&self, alias: String, db: String) -> String {
        self.inner.0.path(&alias, &db)
    }

    /// Attaches the container at `url` (a directory, `file://`, `s3://`, `az://`, `gs://`, `memory://`) under
    /// `alias` (default: the URL's last component) and returns the alias. With `if_not_attached`, attaching
    /// the same URL under the same alias again does nothing. `secure` (the cipher and keys) is required for a
    /// secure container and refused for a plaintext one; a daemon's client may leave it out when the daemon
    /// has the key.
    /// Errors: `Exists` (alias in use), `NotFound` (no container there), `Storage`, `Corrupt`;
    /// `Authentication` (wrong key, other cipher: names `bcv_secure.json`); `Secure` (no key for a secure
    /// container, or a key for a plaintext one); `Daemon`/`DaemonGone` for a daemon's client.
    #[uniffi::method(default(secure = None))]
    pub fn attach(
        &self,
        url: String,
        alias: Option<String>,
        if_not_attached: bool,
        secure: Option<Arc<SecureOptions>>,
    ) -> Result<String, BcvError> {
        let secure = secure.map(|s| s.options());
        Ok(self.inner.0.attach(&url, &cv::AttachOptions { alias, if_not_attached, secure })?)
    }

    /// True when this VFS is a read-only client of a daemon owning its cache directory: it reads through the
    /// daemon's shared cache, and writes, uploads and container changes throw `ReadOnly`.
    pub fn is_daemon_client(&self) -> bool {
        self.inner.0.is_daemon_client()
    }

    /// Obtains the single-writer lease of `alias` for `holder` (a description such as "host-a pid 123",
    /// 1 to 256 bytes) for `duration_ms`. Until it is released or expires, this VFS's uploads, copies and
    /// deletes renew it, and other clients' manifest writes throw `LeaseHeld`.
    /// Errors: `LeaseHeld` naming the holder while another client holds it; `InvalidArgument` (bad holder,
    /// a duration not longer than the safety margin, or already held here); `Corrupt` (unreadable lease
    /// object); `NotFound`; `Storage`.
    pub fn lease_obtain(&self, alias: String, holder: String, duration_ms: u64) -> Result<Lease, BcvError> {
        Ok(self.inner.0.lease_obtain(&alias, &holder, Duration::from_millis(duration_ms))?.into())
    }

    /// Extends the lease this VFS holds on `alias` to expire `duration_ms` from now.
    /// Errors: `LeaseLost` (not held, expired or taken over); `InvalidArgument`; `Storage` (the lease is
    /// kept: retry).
    pub fn lease_extend(&self, alias: String, duration_ms: u64) -> Result<Lease, BcvError> {
        Ok(self.inner.0.lease_extend(&alias, Duration::from_millis(duration_ms))?.into())
    }

    /// Releases the lease this VFS holds on `alias`, so that another client can obtain it at once.
    /// Errors: `LeaseLost` when it held none or it was taken over; `Storage`.
    pub fn lease_release(&self, alias: String) -> Result<(), BcvError> {
        Ok(self.inner.0.lease_release(&alias)?)
    }

    /// The lease of `alias` as recorded in the container, read now; `nil` when there is none or it was
    /// released (an expired one nobody took over is returned). Errors: `Corrupt`; `NotFound`; `Storage`.
    pub fn lease_status(&self, alias: String) -> Result<Option<Lease>, BcvError> {
        Ok(self.inner.0.lease_status(&alias)?.map(Into::into))
    }

    /// Makes this VFS the holder of the lease of `alias` obtained elsewhere under `token`, writing nothing.
    /// Errors: `LeaseLost` when the container's lease is not that unexpired holding; `Corrupt`; `NotFound`.
    pub fn lease_adopt(&self, alias: String, token: String) -> Result<Lease, BcvError> {
        Ok(self.inner.0.lease_adopt(&alias, &token)?.into())
    }

    /// The lease this VFS holds on `alias`, as it last wrote it (no request); `nil` when it holds none.
    /// Errors: `NotFound`.
    pub fn lease_held(&self, alias: String) -> Result<Option<Lease>, BcvError> {
        Ok(self.inner.0.lease_held(&alias)?.map(Into::into))
    }

    /// Detaches `alias`. Errors: `Busy` while databases are open or changes are not uploaded.
    pub fn detach(&self, alias: String) -> Result<(), BcvError> {
        Ok(self.inner.0.detach(&alias)?)
    }

    /// The attached aliases.
    pub fn attached(&self) -> Vec<String> {
        self.inner.0.attached().into_iter().map(|(alias, _)| alias).collect()
    }

    /// Fetches the manifest of `alias` if it changed (one conditional request) and makes new versions
    /// visible. Errors: `Storage`, `Corrupt`.
    pub fn poll(&self, alias: String) -> Result<PollReport, BcvError> {
        Ok(self.inner.0.poll(&alias)?.into())
    }

    /// Uploads the local changes of `alias` in one call: checkpoint, new blocks in parallel, the manifest
    /// with a conditional write; garbage older than `cleanup_grace_ms` is deleted in the same call.
    /// Errors: `Conflict` when another client changed the same database (nothing local is lost: revert
    /// or keep working and retry after a poll); `Storage`; `Busy`.
    pub fn upload(&self, alias: String, cleanup_grace_ms: Option<u64>) -> Result<UploadReport, BcvError> {
        let options = cv::UploadOptions { cleanup_grace: opt_millis(cleanup_grace_ms) };
        Ok(self.inner.0.upload(&alias, &options)?.into())
    }

    /// Starts the same upload in the background and returns its job.
    pub fn upload_start(&self, alias: String, cleanup_grace_ms: Option<u64>) -> Result<Arc<VfsJob>, BcvError> {
        let options = cv::UploadOptions { cleanup_grace: opt_millis(cleanup_grace_ms) };
        Ok(VfsJob::wrap(self.inner.0.upload_start(&alias, &options)?))
    }

    /// Starts fetching every block of `db` the cache lacks, in the background.
    /// Errors: `NotFound` for an unknown alias or database.
    pub fn prefetch_start(&self, alias: String, db: String) -> Result<Arc<VfsJob>, BcvError> {
        Ok(VfsJob::wrap(self.inner.0.prefetch_start(&alias, &db)?))
    }

    /// Drops the local changes of `db` (or of every database of `alias`); returns the databases reverted.
    pub fn revert(&self, alias: String, db: Option<String>) -> Result<Vec<String>, BcvError> {
        Ok(self.inner.0.revert(&alias, db.as_deref())?)
    }

    /// Copies database `from` to a new database `to`, sharing its blocks.
    pub fn copy(&self, alias: String, from: String, to: String) -> Result<(), BcvError> {
        Ok(self.inner.0.copy(&alias, &from, &to)?)
    }

    /// Deletes database `db` from the container.
    pub fn delete(&self, alias: String, db: String) -> Result<(), BcvError> {
        Ok(self.inner.0.delete(&alias, &db)?)
    }

    /// Status of every database of `alias`.
    pub fn databases(&self, alias: String) -> Result<Vec<DatabaseStatus>, BcvError> {
        Ok(self
            .inner
            .0
            .databases(&alias)?
            .into_iter()
            .map(|s| DatabaseStatus {
                name: s.name,
                id: s.id,
                version: s.version,
                size: s.size,
                blocks: s.blocks,
                dirty_blocks: s.dirty_blocks,
                has_local_changes: s.has_local_changes,
                open_handles: s.open_handles,
            })
            .collect())
    }

    /// Request, byte and cost counters of `alias`'s store, as JSON.
    pub fn meter_json(&self, alias: String) -> Result<String, BcvError> {
        let snapshot = self.inner.0.store(&alias)?.meter().snapshot();
        serde_json::to_string(&snapshot).map_err(|e| BcvError::InvalidArgument { message: e.to_string() })
    }

    /// Opens database `path` (`/ALIAS/DB`) through this VFS. With `create`, a missing database is created
    /// locally (it reaches the container with the next upload). The connection also has the virtual tables
    /// `bcv_container`, `bcv_database`, `bcv_block` and `bcv_kv`.
    /// Errors: `Sqlite` (with SQLite's code); `Closed` when the VFS is closed.
    pub fn open(&self, path: String, read_only: bool, create: bool) -> Result<Arc<Database>, BcvError> {
        let options = cv::ConnectOptions { read_only, create, ..Default::default() };
        let conn = cv::Connection::open(&self.inner.0, &path, &options)?;
        Ok(Arc::new(Database { inner: Arc::new(DatabaseNode(conn)) }))
    }
}

/// An SQLite connection to a database of a `Vfs`. Thread-safe; calls are serialized.
///
/// Ownership: `deinit` releases it and the database closes once no call is running; `close()` interrupts a
/// running statement and closes at once.
#[derive(uniffi::Object)]
pub struct Database {
    inner: Arc<DatabaseNode>,
}

impl HasNode for Database {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(Database);

#[uniffi::export]
impl Database {
    /// Runs `;`-separated statements without parameters. Errors: `Sqlite`.
    pub fn execute_batch(&self, sql: String) -> Result<(), BcvError> {
        Ok(self.inner.0.execute_batch(&sql)?)
    }

    /// Runs one statement with `params` and returns the rows it changed. Errors: `Sqlite`.
    pub fn execute(&self, sql: String, params: Vec<SqlValue>) -> Result<u64, BcvError> {
        Ok(self.inner.0.execute(&sql, &values(params))?)
    }

    /// Runs one query and returns its columns and rows. Errors: `Sqlite`.
    pub fn query(&self, sql: String, params: Vec<SqlValue>) -> Result<QueryResult, BcvError> {
        let st = self.inner.0.prepare(&sql)?;
        st.bind(&values(params))?;
        let columns = st.columns()?;
        let mut rows = Vec::new();
        while let Some(r) = st.step()? {
            rows.push(row(r));
        }
        Ok(QueryResult { columns, rows })
    }

    /// Prepares one statement for repeated use.
    pub fn prepare(&self, sql: String) -> Result<Arc<Statement>, BcvError> {
        Ok(Arc::new(Statement { inner: self.inner.0.prepare(&sql)? }))
    }

    /// The rowid of the last INSERT.
    pub fn last_insert_rowid(&self) -> i64 {
        self.inner.0.last_insert_rowid()
    }

    /// Rows changed by the last statement.
    pub fn changes(&self) -> u64 {
        self.inner.0.changes()
    }

    /// True inside an explicit transaction.
    pub fn in_transaction(&self) -> bool {
        self.inner.0.in_transaction()
    }

    /// Makes a running statement fail with SQLITE_INTERRUPT (from any thread).
    pub fn interrupt(&self) {
        self.inner.0.interrupt();
    }
}

/// A prepared statement. Finalized on `deinit` or when its database closes (then calls throw `Closed`).
#[derive(uniffi::Object)]
pub struct Statement {
    inner: cv::Statement,
}

#[uniffi::export]
impl Statement {
    /// Column names of the result.
    pub fn columns(&self) -> Result<Vec<String>, BcvError> {
        Ok(self.inner.columns()?)
    }

    /// Resets the statement and binds `params` to its parameters 1…n (all of them).
    pub fn bind(&self, params: Vec<SqlValue>) -> Result<(), BcvError> {
        Ok(self.inner.bind(&values(params))?)
    }

    /// The next row, or `nil` when done.
    pub fn step(&self) -> Result<Option<Vec<SqlValue>>, BcvError> {
        Ok(self.inner.step()?.map(row))
    }

    /// Resets the statement to run again with the same bindings.
    pub fn reset(&self) -> Result<(), BcvError> {
        Ok(self.inner.reset()?)
    }
}

/// A background prefetch or upload. Releasing it does not stop it; `close()` cancels it.
#[derive(uniffi::Object)]
pub struct VfsJob {
    inner: Arc<JobNode>,
}

impl VfsJob {
    fn wrap(job: cv::VfsJob) -> Arc<VfsJob> {
        Arc::new(VfsJob { inner: Arc::new(JobNode(job)) })
    }
}

impl HasNode for VfsJob {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(VfsJob);

fn outcome(o: cv::JobOutcome) -> JobOutcome {
    match o {
        cv::JobOutcome::Prefetch(r) => JobOutcome {
            prefetch: Some(PrefetchReport { blocks: r.blocks, bytes_fetched: r.bytes_fetched }),
            upload: None,
        },
        cv::JobOutcome::Upload(r) => JobOutcome { prefetch: None, upload: Some(r.into()) },
    }
}

#[uniffi::export]
impl VfsJob {
    /// What the job does, e.g. "prefetch of main/db".
    pub fn description(&self) -> String {
        self.inner.0.description().to_string()
    }

    /// Bytes done and to do.
    pub fn progress(&self) -> JobProgress {
        let p = self.inner.0.progress();
        JobProgress { done: p.done, total: p.total }
    }

    /// Running, done, failed or cancelled.
    pub fn status(&self) -> JobStatus {
        match self.inner.0.status() {
            cv::JobStatus::Running => JobStatus::Running,
            cv::JobStatus::Done => JobStatus::Done,
            cv::JobStatus::Failed => JobStatus::Failed,
            cv::JobStatus::Cancelled => JobStatus::Cancelled,
        }
    }

    /// Waits for the job to finish, at most `timeout_ms` (`nil`: no limit), without blocking the calling
    /// thread. Errors: the job's own (`Storage`, `Conflict`…); `Closed` when it was cancelled; `Timeout`.
    pub async fn wait(&self, timeout_ms: Option<u64>) -> Result<JobOutcome, BcvError> {
        let job = self.inner.clone();
        let task = core::Runtime::global()
            .tokio_handle()
            .spawn_blocking(move || job.0.wait(timeout_ms.map(Duration::from_millis)));
        match task.await {
            Ok(Ok(Some(o))) => Ok(outcome(o)),
            Ok(Ok(None)) => Err(BcvError::Timeout { message: format!("{} did not finish", self.description()) }),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(BcvError::Io { message: format!("the wait failed: {e}") }),
        }
    }
}

/// A container without a cache: create or destroy it, upload and download database files, list, copy,
/// delete, clean up. Every call blocks the calling thread.
#[derive(uniffi::Object)]
pub struct Container {
    inner: cv::ContainerTools,
}

#[uniffi::export]
impl Container {
    /// The container at `url` (nothing is requested yet); `nrequest` parallel requests (default 8).
    /// `secure`: the cipher and keys of a secure container (`create` then makes a secure container; uploads
    /// and downloads seal and open). `lease_max_skew_ms` / `lease_safety_margin_ms` as for `Vfs`.
    /// Errors: `InvalidArgument` for a URL that is not understood.
    #[uniffi::constructor(default(secure = None, lease_max_skew_ms = None, lease_safety_margin_ms = None))]
    pub fn new(
        url: String,
        nrequest: Option<u32>,
        secure: Option<Arc<SecureOptions>>,
        lease_max_skew_ms: Option<u64>,
        lease_safety_margin_ms: Option<u64>,
    ) -> Result<Arc<Container>, BcvError> {
        let store = ContainerStore::open(&url, &StoreOptions::default())?;
        let mut tools = cv::ContainerTools::new(store, nrequest.unwrap_or(8) as usize)
            .with_lease_options(lease_options(lease_max_skew_ms, lease_safety_margin_ms));
        if let Some(secure) = secure {
            tools = tools.with_secure(secure.options());
        }
        Ok(Arc::new(Container { inner: tools }))
    }

    /// True when the container is secure (it has a `bcv_secure.json` marker). Errors: `Storage`.
    pub fn is_secure(&self) -> Result<bool, BcvError> {
        Ok(self.inner.is_secure()?)
    }

    /// Obtains the container's lease for `holder` for `duration_ms` (see `Vfs.leaseObtain`); these tools'
    /// later writes renew it. Errors: `LeaseHeld` naming the holder; `InvalidArgument`; `Corrupt`; `Storage`.
    pub fn lease_obtain(&self, holder: String, duration_ms: u64) -> Result<Lease, BcvError> {
        Ok(self.inner.lease_obtain(&holder, Duration::from_millis(duration_ms))?.into())
    }

    /// Extends to `duration_ms` from now the lease these tools hold, or, with `token`, the holding `token`
    /// (obtained by another process of the application).
    /// Errors: `LeaseLost` (not held, expired, taken over, or `token` names no current holding);
    /// `InvalidArgument`; `Storage`.
    #[uniffi::method(default(token = None))]
    pub fn lease_extend(&self, duration_ms: u64, token: Option<String>) -> Result<Lease, BcvError> {
        let duration = Duration::from_millis(duration_ms);
        let lease = match token {
            Some(token) => self.inner.lease_extend_with_token(&token, duration)?,
            None => self.inner.lease_extend(duration)?,
        };
        Ok(lease.into())
    }

    /// Releases the lease these tools hold, or, with `token`, the holding `token` (an expired holding
    /// nobody took over can still be released). Errors: `LeaseLost`; `Corrupt`; `Storage`.
    #[uniffi::method(default(token = None))]
    pub fn lease_release(&self, token: Option<String>) -> Result<(), BcvError> {
        match token {
            Some(token) => Ok(self.inner.lease_release_with_token(&token)?),
            None => Ok(self.inner.lease_release()?),
        }
    }

    /// The container's lease as recorded, read now; `nil` when there is none or it was released.
    /// Errors: `Corrupt`; `Storage`.
    pub fn lease_status(&self) -> Result<Option<Lease>, BcvError> {
        Ok(self.inner.lease_status()?.map(Into::into))
    }

    /// The lease these tools hold, as last written (no request); `nil` when they hold none.
    pub fn lease_held(&self) -> Result<Option<Lease>, BcvError> {
        Ok(self.inner.lease_held()?.map(Into::into))
    }

    /// Makes these tools the holder of the holding `token` obtained elsewhere, writing nothing.
    /// Errors: `LeaseLost` when the container's lease is not that unexpired holding; `Corrupt`; `Storage`.
    pub fn lease_adopt(&self, token: String) -> Result<Lease, BcvError> {
        Ok(self.inner.lease_adopt(&token)?.into())
    }

    /// Creates the container with `block_size` (default 4 MiB) and `name_bytes` (default 16); with
    /// `overwrite`, replaces an existing manifest. Errors: `Exists`; `Storage`.
    pub fn create(&self, block_size: Option<u32>, name_bytes: Option<u32>, overwrite: bool) -> Result<(), BcvError> {
        Ok(self.inner.create(
            block_size.unwrap_or(cv::DEFAULT_BLOCK_SIZE),
            name_bytes.unwrap_or(cv::DEFAULT_NAME_BYTES),
            overwrite,
        )?)
    }

    /// Deletes every object of the container; returns how many.
    pub fn destroy(&self) -> Result<u64, BcvError> {
        Ok(self.inner.destroy()?)
    }

    /// The databases in the container.
    pub fn list(&self) -> Result<Vec<DatabaseInfo>, BcvError> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .map(|d| DatabaseInfo { name: d.name, id: d.id, version: d.version, blocks: d.blocks, size: d.size })
            .collect())
    }

    /// Uploads the database file at `path` as `name`; returns its version.
    pub fn upload_file(&self, path: String, name: String) -> Result<u32, BcvError> {
        Ok(self.inner.upload_file(path.as_ref(), &name, &|_| {})?)
    }

    /// Downloads database `name` to the file `path`; returns its size.
    pub fn download_file(&self, name: String, path: String) -> Result<u64, BcvError> {
        Ok(self.inner.download_file(&name, path.as_ref(), &|_| {})?)
    }

    /// Copies database `from` to `to`, sharing blocks.
    pub fn copy(&self, from: String, to: String) -> Result<(), BcvError> {
        Ok(self.inner.copy(&from, &to)?)
    }

    /// Deletes database `name`.
    pub fn delete(&self, name: String) -> Result<(), BcvError> {
        Ok(self.inner.delete(&name)?)
    }

    /// Deletes blocks on the delete list for at least `grace_seconds`, and orphaned blocks with
    /// `find_orphans`.
    pub fn cleanup(&self, grace_seconds: u64, find_orphans: bool) -> Result<CleanupReport, BcvError> {
        let r = self.inner.cleanup(Duration::from_secs(grace_seconds), find_orphans)?;
        Ok(CleanupReport { deleted: r.deleted, orphans_deleted: r.orphans_deleted, waiting: r.waiting })
    }
}
