//! [`BlockVfs`]: a cache directory, the containers attached to it, and the SQLite VFS that serves their
//! databases as `/ALIAS/DB`.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::attached::{Container, DatabaseStatus, PollReport, UploadOptions, UploadReport};
use super::cache::{BlockCache, CacheStats, CacheUsage, DEFAULT_CACHE_SIZE};
use super::container::{LeaseInfo, LeaseOptions, Manifest};
use super::crypto::SecureOptions;
use super::daemon::DaemonClient;
use super::database::PrefetchReport;
use super::job::{JobControl, JobOutcome, JobShared, VfsJob};
use super::runtime::block_on;
use super::sqlite::{Registration, VfsShared, platform_vfs};
use super::store::{ContainerStore, StoreOptions};
use super::tools::Progress;
use super::{VfsError, VfsResult};
use crate::handle::{Node, NodeCore, NodeHooks, NodeState, Runtime, TaskResource};

/// Configuration of a [`BlockVfs`].
#[derive(Clone)]
pub struct VfsConfig {
    /// The cache directory (created if missing). One process owns it at a time.
    pub cache_dir: PathBuf,
    /// The name the VFS is registered under in SQLite (`vfs=` in URIs). Default `"bcv"`.
    pub name: String,
    /// The cache size limit in bytes (clean blocks are evicted beyond it). Default 1 GiB.
    pub cache_size: u64,
    /// Parallel requests for uploads and prefetch. Default 8.
    pub nrequest: usize,
    /// Store options (retries, timeouts, auth) for attached containers.
    pub store: StoreOptions,
    /// The handle runtime the VFS, its containers and its jobs are nodes of. Default: the global one.
    pub runtime: Option<Runtime>,
    /// How leases of attached containers are treated (clock skew, safety margin). Default
    /// [`LeaseOptions::default`].
    pub lease: LeaseOptions,
}

impl std::fmt::Debug for VfsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfsConfig")
            .field("cache_dir", &self.cache_dir)
            .field("name", &self.name)
            .field("cache_size", &self.cache_size)
            .field("nrequest", &self.nrequest)
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl VfsConfig {
    /// A configuration with defaults for the cache directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> VfsConfig {
        VfsConfig {
            cache_dir: dir.into(),
            name: "bcv".into(),
            cache_size: DEFAULT_CACHE_SIZE,
            nrequest: 8,
            store: StoreOptions::default(),
            runtime: None,
            lease: LeaseOptions::default(),
        }
    }
}

/// Options of [`BlockVfs::attach`].
#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    /// The alias (path prefix `/ALIAS/`); default: the last component of the container URL.
    pub alias: Option<String>,
    /// Succeed without doing anything when a container is already attached under this alias with the same URL.
    pub if_not_attached: bool,
    /// The cipher (with its keys) of a secure container. Required for a secure container, refused for a
    /// plaintext one.
    pub secure: Option<SecureOptions>,
}

/// A block-cache VFS: owns a cache directory, attaches containers and registers an SQLite VFS.
///
/// It is a node of the handle runtime (label `"vfs"`); each attached container is a child node
/// (`"vfs container"`) and each background job a child of its container. `node().close()` ends the VFS:
/// further calls fail with [`VfsError::Closed`] and running jobs are cancelled; SQLite connections already
/// open keep working until they are closed (SQLite offers no way to end them from outside).
///
/// Dropping it unregisters the VFS; SQLite connections opened through it must be closed first (otherwise its
/// memory is kept alive for them and a warning is logged). Methods are thread-safe.
pub struct BlockVfs {
    shared: Arc<VfsShared>,
    cache: Arc<BlockCache>,
    config: VfsConfig,
    runtime: Runtime,
    resource: TaskResource,
    /// Declared before `container_nodes`: the VFS handle goes first, children after (any order is safe).
    node: Node,
    container_nodes: Mutex<HashMap<String, (TaskResource, Node)>>,
    _registration: Registration,
}

/// Cancels a job when its node closes (directly or by cascade from its container or the VFS).
struct JobHooks(Arc<JobShared>);

impl NodeHooks for JobHooks {
    fn on_close(&self, _closed: crate::handle::Closed) {
        self.0.control.cancel();
    }
}

impl std::fmt::Debug for BlockVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockVfs").field("name", &self.config.name).field("cache_dir", &self.config.cache_dir).finish()
    }
}

impl BlockVfs {
    /// Opens the cache directory and registers the VFS. Containers attached in an earlier run are re-attached
    /// from the cache index without any request.
    ///
    /// Errors: [`VfsError::CacheBusy`] when another process owns the directory; a VFS name already registered;
    /// I/O errors.
    pub fn create(config: VfsConfig) -> VfsResult<BlockVfs> {
        let name = CString::new(config.name.clone())
            .map_err(|_| VfsError::InvalidArgument(format!("VFS name {:?} contains NUL", config.name)))?;
        // SAFETY: sqlite3_vfs_find is thread-safe.
        if !unsafe { libsqlite3_sys::sqlite3_vfs_find(name.as_ptr()) }.is_null() {
            return Err(VfsError::InvalidArgument(format!("a VFS named {:?} is already registered", config.name)));
        }
        // A daemon serving the directory makes this VFS its read-only client.
        let cache = match DaemonClient::connect(&config.cache_dir)? {
            Some(client) => {
                let local = std::env::temp_dir().join(format!(
                    "bcv-client-{}-{}",
                    std::process::id(),
                    super::container::BlockId::random(12)
                ));
                Arc::new(BlockCache::open_client(&config.cache_dir, &local, Arc::new(client))?)
            }
            None => Arc::new(BlockCache::open(&config.cache_dir, config.cache_size)?),
        };
        let shared = Arc::new(VfsShared {
            name,
            cache_dir: cache.dir().to_path_buf(),
            containers: RwLock::new(Default::default()),
            open_files: AtomicUsize::new(0),
            platform: platform_vfs()?,
            nrequest: config.nrequest.max(1),
            temp_sealer: Mutex::new(None),
        });
        let runtime = config.runtime.clone().unwrap_or_else(|| Runtime::global().clone());
        let (resource, node) = TaskResource::create(&runtime, "vfs", None).map_err(VfsError::node_closed)?;
        let vfs = BlockVfs {
            _registration: Registration::register(shared.clone())?,
            shared,
            cache,
            config,
            runtime,
            resource,
            node,
            container_nodes: Mutex::new(HashMap::new()),
        };
        let recorded = vfs.cache.index().containers()?;
        for row in recorded {
            // A container attached through `attach_store` has a label, not a URL: it waits for its owner to
            // attach it again the same way (its cached manifest is then reused).
            let Ok(store) = ContainerStore::open(&row.url, &vfs.config.store) else {
                tracing::info!(alias = %row.alias, "recorded container needs attach_store");
                continue;
            };
            // A secure container waits for its owner to attach it again with its key.
            if vfs.cache.index().secure_marker(&row.alias)?.is_some() {
                tracing::info!(alias = %row.alias, "recorded secure container needs its key: attach it again");
                continue;
            }
            let container = Container::attach(vfs.cache.clone(), &row.alias, &row.url, store, None, vfs.config.lease)?;
            vfs.insert_container(container)?;
        }
        Ok(vfs)
    }

    /// The node a connection to `path` hangs under: its container's (`/ALIAS/…`), else the VFS's.
    pub(crate) fn node_for_path(&self, path: &str) -> VfsResult<Arc<NodeCore>> {
        self.check_open()?;
        let alias = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let nodes = crate::vfs::cache::lock(&self.container_nodes);
        Ok(nodes.get(alias).map_or_else(|| self.resource.core.clone(), |(r, _)| r.core.clone()))
    }

    /// The handle runtime the VFS's nodes belong to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub(crate) fn shared(&self) -> &Arc<VfsShared> {
        &self.shared
    }

    /// Registers the virtual tables `bcv_container`, `bcv_database`, `bcv_block` and `bcv_kv` on an SQLite
    /// connection a C program (or any other user of the same SQLite library) opened through this VFS.
    /// [`Connection`](super::Connection)s register them themselves.
    ///
    /// # Safety
    /// `db` must be an open `sqlite3*` of the SQLite library bcv is linked with.
    ///
    /// Errors: [`VfsError::Sqlite`] when SQLite refuses the registration.
    pub unsafe fn register_vtabs(&self, db: *mut std::ffi::c_void) -> VfsResult<()> {
        super::sqlite::vtab::register(db.cast(), &self.shared)
    }

    /// The VFS's node: `close()`, `close_and_wait`, state.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn check_open(&self) -> VfsResult<()> {
        match self.node.state() {
            NodeState::Open | NodeState::Orphaned => Ok(()),
            _ => Err(VfsError::Closed(format!("VFS {:?}", self.config.name))),
        }
    }

    /// Makes an attached container visible under its alias, with its child node.
    fn insert_container(&self, container: Container) -> VfsResult<()> {
        let alias = container.alias.clone();
        let child = TaskResource::create(&self.runtime, "vfs container", Some(&self.resource.core))
            .map_err(VfsError::node_closed)?;
        if let Some(sealer) = container.sealer() {
            let mut temp = crate::vfs::cache::lock(&self.shared.temp_sealer);
            if temp.is_none() {
                *temp = Some(Arc::new(sealer.ephemeral()?));
            }
        }
        self.containers_mut().insert(alias.clone(), Arc::new(container));
        crate::vfs::cache::lock(&self.container_nodes).insert(alias, child);
        Ok(())
    }

    /// Starts `work` on its own thread as a job node under the container `alias`.
    fn start_job(
        &self,
        alias: &str,
        what: String,
        work: impl FnOnce(&JobControl) -> VfsResult<JobOutcome> + Send + 'static,
    ) -> VfsResult<VfsJob> {
        self.check_open()?;
        let shared = JobShared::new(what);
        let (resource, node) = {
            let nodes = crate::vfs::cache::lock(&self.container_nodes);
            let (parent, _) = nodes.get(alias).ok_or_else(|| VfsError::NoSuchAlias { alias: alias.to_string() })?;
            TaskResource::create_with(
                &self.runtime,
                "vfs job",
                Some(&parent.core),
                Some(Box::new(JobHooks(shared.clone()))),
            )
            .map_err(VfsError::node_closed)?
        };
        let guard = resource.core.begin_op().map_err(VfsError::node_closed)?;
        let job_shared = shared.clone();
        std::thread::Builder::new()
            .name("bcv-vfs-job".into())
            .spawn(move || {
                let _guard = guard;
                let result = work(&job_shared.control);
                job_shared.finish(result);
            })
            .map_err(|e| VfsError::io("spawn a job thread for", self.cache_dir(), e))?;
        Ok(VfsJob::new(node, shared))
    }

    fn containers_mut(&self) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, Arc<Container>>> {
        self.shared.containers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, alias: &str) -> VfsResult<Arc<Container>> {
        self.check_open()?;
        self.shared.container(alias).ok_or_else(|| VfsError::NoSuchAlias { alias: alias.to_string() })
    }

    /// The SQLite VFS name (`vfs=` in URIs).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True when this VFS is a read-only client of a daemon owning its cache directory (see [`Daemon`]).
    ///
    /// [`Daemon`]: super::Daemon
    pub fn is_daemon_client(&self) -> bool {
        self.cache.client().is_some()
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.config.cache_dir
    }

    /// The SQLite path of database `db` in the container attached as `alias`: `/alias/db`.
    pub fn path(&self, alias: &str, db: &str) -> String {
        format!("/{alias}/{db}")
    }

    /// Attaches the container at `url` (see [`ContainerStore::open`] for URL forms) and returns its alias.
    ///
    /// Errors: [`VfsError::AliasInUse`]; the store's errors (a missing manifest is `NotFound`: create the
    /// container first); a corrupt manifest; a block size other than the cache's.
    pub fn attach(&self, url: &str, options: &AttachOptions) -> VfsResult<String> {
        self.check_open()?;
        let alias = match &options.alias {
            Some(a) => a.clone(),
            None => default_alias(url)?,
        };
        super::attached::validate_db_name(&alias)
            .map_err(|_| VfsError::InvalidArgument(format!("alias {alias:?}: 1 to 127 bytes, without NUL or '/'")))?;
        if let Some(existing) = self.shared.container(&alias) {
            if options.if_not_attached && existing.url == url {
                return Ok(alias);
            }
            return Err(VfsError::AliasInUse { alias });
        }
        let store = ContainerStore::open(url, &self.config.store)?;
        let container =
            Container::attach(self.cache.clone(), &alias, url, store, options.secure.as_ref(), self.config.lease)?;
        self.insert_container(container)?;
        Ok(alias)
    }

    /// Attaches a container through a store built by the caller (a [`CustomStore`](super::store::CustomStore),
    /// a metered or fault-injecting wrapper). The store's label is recorded as its URL; after a restart, attach
    /// it again the same way to reuse the cached manifest without a request.
    ///
    /// Errors: as [`attach`](Self::attach).
    pub fn attach_store(&self, store: ContainerStore, alias: &str) -> VfsResult<String> {
        self.attach_store_with(store, &AttachOptions { alias: Some(alias.to_string()), ..AttachOptions::default() })
    }

    /// [`attach_store`](Self::attach_store) with options: the alias (required) and, for a secure container,
    /// its cipher. `if_not_attached` is honoured when the alias holds a container of the same label.
    ///
    /// Errors: as [`attach`](Self::attach); [`VfsError::InvalidArgument`] without an alias.
    pub fn attach_store_with(&self, store: ContainerStore, options: &AttachOptions) -> VfsResult<String> {
        self.check_open()?;
        let alias = options
            .alias
            .as_deref()
            .ok_or_else(|| VfsError::InvalidArgument("attach_store_with needs an alias".into()))?;
        super::attached::validate_db_name(alias)
            .map_err(|_| VfsError::InvalidArgument(format!("alias {alias:?}: 1 to 127 bytes, without NUL or '/'")))?;
        if self.cache.client().is_some() {
            return Err(VfsError::InvalidArgument(
                "a daemon's client attaches containers by URL (the daemon opens the store itself)".into(),
            ));
        }
        let label = store.label().to_string();
        if let Some(existing) = self.shared.container(alias) {
            if options.if_not_attached && existing.url == label {
                return Ok(alias.to_string());
            }
            return Err(VfsError::AliasInUse { alias: alias.to_string() });
        }
        let container =
            Container::attach(self.cache.clone(), alias, &label, store, options.secure.as_ref(), self.config.lease)?;
        self.insert_container(container)?;
        Ok(alias.to_string())
    }

    /// Fetches every block of database `db` that the cache lacks, `nrequest` (see [`VfsConfig`]) at a time,
    /// calling `progress` as blocks arrive. Errors: the first failed fetch (what was fetched stays cached).
    pub fn prefetch(&self, alias: &str, db: &str, progress: &(dyn Fn(Progress) + Sync)) -> VfsResult<PrefetchReport> {
        let container = self.container(alias)?;
        let database = container
            .database(db)
            .ok_or_else(|| VfsError::NoSuchDatabase { container: alias.to_string(), database: db.to_string() })?;
        database.prefetch(self.config.nrequest, &JobControl::detached(), progress)
    }

    /// Starts a prefetch of `db` in the background and returns its job (progress, status, wait, cancel).
    ///
    /// Errors: as [`prefetch`](Self::prefetch) for a missing alias or database; the job's own errors come
    /// from [`VfsJob::wait`].
    pub fn prefetch_start(&self, alias: &str, db: &str) -> VfsResult<VfsJob> {
        let container = self.container(alias)?;
        let database = container
            .database(db)
            .ok_or_else(|| VfsError::NoSuchDatabase { container: alias.to_string(), database: db.to_string() })?;
        let nrequest = self.config.nrequest;
        self.start_job(alias, format!("prefetch of {alias}/{db}"), move |control| {
            database.prefetch(nrequest, control, &|_| {}).map(JobOutcome::Prefetch)
        })
    }

    /// Starts an upload of `alias` in the background (the same work as [`upload`](Self::upload)) and returns
    /// its job. Cancelling it before the manifest is sent leaves the container unchanged.
    pub fn upload_start(&self, alias: &str, options: &UploadOptions) -> VfsResult<VfsJob> {
        let container = self.container(alias)?;
        let (name, options, nrequest) = (self.config.name.clone(), options.clone(), self.config.nrequest);
        self.start_job(alias, format!("upload of container {alias}"), move |control| {
            container.upload(&name, &options, nrequest, control).map(JobOutcome::Upload)
        })
    }

    /// Detaches `alias`, releasing the lease this client holds on it (if any).
    ///
    /// Errors: [`VfsError::Busy`] while a connection is open or local changes are not uploaded (upload or revert
    /// them first); a store error while releasing the lease (nothing is detached; a lease found lost already is
    /// not an error).
    pub fn detach(&self, alias: &str) -> VfsResult<()> {
        let container = self.container(alias)?;
        if container.in_use() {
            return Err(VfsError::Busy { what: format!("container {alias}"), reason: "connections are open".into() });
        }
        if container.has_local_changes() {
            return Err(VfsError::Busy {
                what: format!("container {alias}"),
                reason: "it has local changes; upload or revert them first".into(),
            });
        }
        let lease = &container.lease;
        if block_on(async move { Ok(lease.held().await) })?.is_some() {
            match block_on(async move { lease.release().await }) {
                Ok(()) | Err(VfsError::LeaseLost { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        container.forget()?;
        if let Some(client) = self.cache.client() {
            client.detach(alias);
        }
        self.containers_mut().remove(alias);
        if let Some((_, node)) = crate::vfs::cache::lock(&self.container_nodes).remove(alias) {
            node.close();
        }
        Ok(())
    }

    /// The attached aliases with their URLs.
    pub fn attached(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .shared
            .containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| (c.alias.clone(), c.url.clone()))
            .collect();
        v.sort();
        v
    }

    /// Fetches the manifest of `alias` if it changed (one conditional GET) and makes new versions visible.
    pub fn poll(&self, alias: &str) -> VfsResult<PollReport> {
        self.container(alias)?.poll()
    }

    /// Uploads the local changes of every database of `alias` in one synchronous call (see [`UploadOptions`]).
    pub fn upload(&self, alias: &str, options: &UploadOptions) -> VfsResult<UploadReport> {
        self.container(alias)?.upload(&self.config.name, options, self.config.nrequest, &JobControl::detached())
    }

    /// Drops local changes of `db` (or of every database of `alias`). Returns the databases reverted.
    pub fn revert(&self, alias: &str, db: Option<&str>) -> VfsResult<Vec<String>> {
        self.container(alias)?.revert(db)
    }

    /// Copies database `from` to a new database `to` in the container, sharing its blocks.
    pub fn copy(&self, alias: &str, from: &str, to: &str) -> VfsResult<()> {
        self.container(alias)?.copy(from, to)
    }

    /// Deletes database `db` from the container.
    pub fn delete(&self, alias: &str, db: &str) -> VfsResult<()> {
        self.container(alias)?.delete(db)
    }

    /// Status of every database of `alias`.
    pub fn databases(&self, alias: &str) -> VfsResult<Vec<DatabaseStatus>> {
        Ok(self.container(alias)?.status())
    }

    /// The manifest of `alias` as this client last saw it.
    pub fn manifest(&self, alias: &str) -> VfsResult<Manifest> {
        Ok(self.container(alias)?.manifest())
    }

    /// Obtains the lease of the container attached as `alias` for `holder` (free text shown to others, e.g.
    /// `"host-a pid 123"`, 1 to 256 bytes) for `duration`, and returns it.
    ///
    /// From then on this VFS holds the lease for `alias` (in memory: a VFS created later, in this process or
    /// another, holds it only through [`lease_adopt`](Self::lease_adopt) with the token). Every upload, copy or
    /// delete through it first renews the lease (one conditional PUT of `bcv_lease.json`), and other clients'
    /// manifest writes are refused with [`VfsError::LeaseHeld`] until it is released or expires. Keep it alive with
    /// [`lease_extend`](Self::lease_extend) (or uploads) before it expires; release it with
    /// [`lease_release`](Self::lease_release) (detaching also releases it). See [`super::container::lease`] for
    /// the protocol and the clock-skew assumption.
    ///
    /// Errors: [`VfsError::LeaseHeld`] naming the holder and its expiry while another client holds it (also
    /// when another client won a race for it); [`VfsError::InvalidArgument`] for an empty or too long holder, a
    /// duration not longer than the safety margin ([`VfsConfig::lease`]), or when this VFS holds the lease
    /// already; [`VfsError::ConditionalWritesUnsupported`] for a store that does not honour conditional writes;
    /// [`VfsError::LeaseObject`] for an unreadable lease object; [`VfsError::NoSuchAlias`]; store errors.
    pub fn lease_obtain(&self, alias: &str, holder: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { lease.obtain(holder, duration).await })
    }

    /// Extends the lease this VFS holds on `alias` to expire `duration` from now (its token and generation stay).
    ///
    /// Errors: [`VfsError::LeaseLost`] when this VFS holds no lease on `alias`, when it expired, or when another
    /// client took it over (the lease is then forgotten); [`VfsError::InvalidArgument`] for a duration not longer
    /// than the safety margin; store errors (the lease is kept: it may still be valid, retry).
    pub fn lease_extend(&self, alias: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { lease.extend(duration).await })
    }

    /// Releases the lease this VFS holds on `alias`: the lease object is rewritten as released (not deleted), so
    /// another client can obtain it at once. The lease is forgotten locally in every case except a store error.
    ///
    /// Errors: [`VfsError::LeaseLost`] when this VFS held no lease on `alias`, or another client had taken it
    /// over already; store errors.
    pub fn lease_release(&self, alias: &str) -> VfsResult<()> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { lease.release().await })
    }

    /// The lease of `alias` as recorded in the container, read now: who holds it and until when. `None` when
    /// there is no lease object or the lease is released; an expired lease nobody took over is returned (see
    /// [`LeaseInfo::is_expired`]).
    ///
    /// Errors: [`VfsError::LeaseObject`] for an unreadable lease object; [`VfsError::NoSuchAlias`]; store errors.
    pub fn lease_status(&self, alias: &str) -> VfsResult<Option<LeaseInfo>> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { lease.status().await })
    }

    /// Makes this VFS the holder of the lease of `alias` obtained elsewhere under `token` (by another process of
    /// the application, e.g. `bcv lease obtain`), without writing anything: its uploads are then fenced as the
    /// holder's (renewing the lease), and it can extend and release it. Replaces any lease it held on `alias`.
    ///
    /// Errors: [`VfsError::LeaseLost`] when the container's lease is not the unexpired holding `token`;
    /// [`VfsError::LeaseObject`]; [`VfsError::NoSuchAlias`]; store errors.
    pub fn lease_adopt(&self, alias: &str, token: &str) -> VfsResult<LeaseInfo> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { lease.adopt(token).await })
    }

    /// The lease this VFS holds on `alias`, as it last wrote it (no request); `None` when it holds none.
    ///
    /// Errors: [`VfsError::NoSuchAlias`].
    pub fn lease_held(&self, alias: &str) -> VfsResult<Option<LeaseInfo>> {
        let container = self.container(alias)?;
        let lease = &container.lease;
        block_on(async move { Ok(lease.held().await) })
    }

    /// The store of `alias` (for its meter).
    pub fn store(&self, alias: &str) -> VfsResult<ContainerStore> {
        Ok(self.container(alias)?.store.clone())
    }

    /// Cache activity counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Cache occupancy.
    pub fn cache_usage(&self) -> CacheUsage {
        self.cache.usage()
    }
}

/// The default alias of a container URL: its last path component (bucket or directory name).
fn default_alias(url: &str) -> VfsResult<String> {
    let trimmed = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or("");
    if last.is_empty() || last.contains(':') {
        return Err(VfsError::InvalidArgument(format!("cannot derive an alias from {url:?}; give one")));
    }
    Ok(last.to_string())
}
