//! A container attached to a VFS under an alias: its manifest and version, its databases, and the operations
//! that talk to the store (poll, upload, revert, copy, delete).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::cache::{BlockCache, ContainerRow, DirtyKey, PendingUploadRow, lock};
use super::container::lease::LeaseSlot;
use super::container::{BlockId, LeaseOptions, Manifest, julian_ms_from_unix_ms, julian_ms_now};
use super::crypto::{SECURE_OBJECT, Sealer, SecureMarker, SecureOptions};
use super::database::{Content, Database, Incoming, wal_path};
use super::job::JobControl;
use super::runtime::block_on;
use super::sqlite::locks::{SHM_WRITE_SLOT, ShmHold, new_holder};
use super::store::{ContainerStore, ObjectVersion};
use super::{VfsError, VfsResult};

/// The manifest object of a container.
pub const MANIFEST_OBJECT: &str = "manifest.bcv";
/// The key-value store object of a container.
pub const KV_OBJECT: &str = "bcv_kv.bcv";

/// How many times an upload re-bases onto a manifest another client installed before it gives up.
const MAX_REBASES: usize = 8;

/// What a poll changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollReport {
    /// True when the container's manifest had changed.
    pub manifest_changed: bool,
    /// Databases whose new version is now visible (or will be, once their open transactions end).
    pub updated: Vec<String>,
    /// Databases new in the container.
    pub added: Vec<String>,
    /// Databases deleted from the container.
    pub removed: Vec<String>,
    /// Databases changed remotely while they have local changes: an upload of them will fail with a conflict
    /// until they are reverted.
    pub conflicts: Vec<String>,
}

/// Options of an upload.
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    /// Also delete blocks that have been on the delete list for at least this long (garbage collection in the
    /// same call; `None` leaves them).
    pub cleanup_grace: Option<Duration>,
}

/// What an upload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadReport {
    /// Databases uploaded, with their new version.
    pub databases: Vec<(String, u32)>,
    /// Block objects written.
    pub blocks_written: u64,
    /// Bytes written in block objects.
    pub bytes_written: u64,
    /// Blocks that already existed in the container (deduplicated by content) and were not written again.
    pub blocks_deduplicated: u64,
    /// Garbage blocks deleted because their grace period had passed.
    pub blocks_deleted: u64,
    /// Times the upload re-based onto a manifest another client had installed meanwhile.
    pub rebases: u32,
}

/// Status of one database of an attached container.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseStatus {
    /// The database name.
    pub name: String,
    /// Its id in the manifest (0 when it exists only locally).
    pub id: u32,
    /// The manifest version the local image is based on.
    pub version: u32,
    /// The image size in bytes.
    pub size: u64,
    /// Blocks in the image.
    pub blocks: u64,
    /// Blocks written locally and not uploaded.
    pub dirty_blocks: u64,
    /// True when there is something to upload.
    pub has_local_changes: bool,
    /// Open SQLite connections (file handles).
    pub open_handles: u32,
}

struct ManifestState {
    manifest: Manifest,
    version: ObjectVersion,
}

/// A container attached under an alias.
pub(crate) struct Container {
    pub(crate) alias: String,
    pub(crate) url: String,
    pub(crate) store: ContainerStore,
    cache: Arc<BlockCache>,
    /// The container's block size (fixed at creation).
    block_size: u32,
    state: Mutex<ManifestState>,
    pub(crate) databases: Mutex<BTreeMap<String, Arc<Database>>>,
    /// Serialises uploads and other manifest writers of this client.
    writer: Mutex<()>,
    /// Seals blocks when the container is secure.
    sealer: Option<Arc<Sealer>>,
    /// The lease this client holds on the container (if any); every manifest write is fenced by it.
    pub(crate) lease: LeaseSlot,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("alias", &self.alias).field("url", &self.store.label()).finish()
    }
}

fn corrupt(store: &ContainerStore, source: super::container::ManifestError) -> VfsError {
    VfsError::Manifest { container: store.label().to_string(), source }
}

impl Container {
    /// Attaches: from the cache index when this alias was attached before (no request at all), otherwise by
    /// fetching the manifest. Errors: the store's, a corrupt manifest, a block size the cache cannot hold.
    ///
    /// A secure container (one with a `bcv_secure.json` marker) needs `secure`, whose key must open the
    /// marker's key check; a plaintext container refuses `secure`. Errors: [`VfsError::Secure`] for either
    /// mismatch, [`VfsError::Crypto`] for a wrong key or another cipher.
    pub(crate) fn attach(
        cache: Arc<BlockCache>,
        alias: &str,
        url: &str,
        store: ContainerStore,
        secure: Option<&SecureOptions>,
        lease: LeaseOptions,
    ) -> VfsResult<Container> {
        let recorded = cache.index().containers()?.into_iter().find(|c| c.alias == alias);
        let (manifest, version, sealer) = match recorded {
            Some(row) if row.url == url => {
                let manifest = Manifest::decode(&row.manifest).map_err(|e| corrupt(&store, e))?;
                let version: ObjectVersion = serde_json::from_str(&row.version_json)
                    .map_err(|e| VfsError::InvalidArgument(format!("cache index: bad version of {alias}: {e}")))?;
                let marker = cache.index().secure_marker(alias)?;
                let sealer = Self::sealer_for(&cache, &store, &manifest, marker.as_deref(), secure)?;
                (manifest, version, sealer)
            }
            Some(row) => {
                return Err(VfsError::InvalidArgument(format!(
                    "alias {alias:?} is recorded in this cache for container {}; detach it first",
                    row.url
                )));
            }
            None => {
                let (fetched, marker) = match cache.client() {
                    // A daemon's client: the daemon fetches with this client's credentials.
                    Some(client) => {
                        let reply = client.attach(alias, url, &store.options().options)?;
                        cache.set_geometry(reply.block_size, reply.stride);
                        let fetched =
                            super::store::Fetched { bytes: Bytes::from(reply.manifest), version: reply.version };
                        (fetched, reply.marker)
                    }
                    None => {
                        let s = store.clone();
                        let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
                        let s = store.clone();
                        let marker = match block_on(async move { s.get(SECURE_OBJECT).await }) {
                            Ok(f) => Some(f.bytes.to_vec()),
                            Err(VfsError::NotFound { .. }) => None,
                            Err(e) => return Err(e),
                        };
                        (fetched, marker)
                    }
                };
                let manifest = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&store, e))?;
                cache.configure_block_size(manifest.block_size, store.label())?;
                // A daemon's client without a key of its own gets it from the daemon (its attach proved access).
                let from_daemon;
                let secure = match (cache.client(), &marker, secure) {
                    (Some(client), Some(_), None) => {
                        from_daemon = SecureOptions::aes_gcm(&client.key(alias)?);
                        Some(&from_daemon)
                    }
                    _ => secure,
                };
                let sealer = Self::sealer_for(&cache, &store, &manifest, marker.as_deref(), secure)?;
                if let Some(marker) = &marker {
                    cache.index().put_secure_marker(alias, marker)?;
                }
                let row = ContainerRow {
                    alias: alias.to_string(),
                    url: url.to_string(),
                    manifest: fetched.bytes.to_vec(),
                    version_json: json(&fetched.version),
                };
                cache.index().put_container(&row)?;
                (manifest, fetched.version, sealer)
            }
        };
        cache.configure_block_size(manifest.block_size, store.label())?;
        let container = Container {
            alias: alias.to_string(),
            url: url.to_string(),
            lease: LeaseSlot::new(store.clone(), lease),
            store,
            cache,
            block_size: manifest.block_size,
            state: Mutex::new(ManifestState { manifest, version }),
            databases: Mutex::new(BTreeMap::new()),
            writer: Mutex::new(()),
            sealer,
        };
        container.load_databases()?;
        container.recover_interrupted_upload()?;
        Ok(container)
    }

    /// Decides whether the container is read sealed: both the marker and options, or neither.
    fn sealer_for(
        cache: &BlockCache,
        store: &ContainerStore,
        manifest: &Manifest,
        marker: Option<&[u8]>,
        secure: Option<&SecureOptions>,
    ) -> VfsResult<Option<Arc<Sealer>>> {
        let label = store.label();
        match (marker, secure) {
            (None, None) => Ok(None),
            (Some(bytes), Some(options)) => {
                cache.configure_block_size(manifest.block_size, label)?;
                cache.check_sealable(label)?;
                let marker = SecureMarker::decode(label, bytes)?;
                let chunk = BlockCache::chunk_size_for(manifest.block_size);
                Ok(Some(Arc::new(Sealer::for_container(label, &marker, options, chunk)?)))
            }
            (Some(_), None) => Err(VfsError::Secure {
                container: label.to_string(),
                reason: "the container is secure (its blocks are encrypted): attach it with a key or cipher".into(),
            }),
            (None, Some(_)) => Err(VfsError::Secure {
                container: label.to_string(),
                reason: format!(
                    "a key or cipher was given, but the container is not secure (it has no {SECURE_OBJECT}); \
                     attach it without one"
                ),
            }),
        }
    }

    /// True when the container is read through a daemon (read-only).
    pub(crate) fn is_daemon_client(&self) -> bool {
        self.cache.client().is_some()
    }

    /// The container's sealer, when it is secure.
    pub(crate) fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_deref()
    }

    /// The container's sealer (shared), when it is secure.
    pub(crate) fn sealer_arc(&self) -> Option<Arc<Sealer>> {
        self.sealer.clone()
    }

    fn load_databases(&self) -> VfsResult<()> {
        let local: HashMap<String, super::cache::LocalDbRow> =
            self.cache.index().local_dbs(&self.alias)?.into_iter().map(|r| (r.name.clone(), r)).collect();
        let st = lock(&self.state);
        let bs = st.manifest.block_size;
        let mut dbs = lock(&self.databases);
        for entry in &st.manifest.databases {
            let clean = st.manifest.resolve(entry.id).map_err(|e| corrupt(&self.store, e))?;
            let mut content = Content {
                size: clean.len() as u64 * bs as u64,
                clean,
                base_version: entry.version,
                dirty: false,
                generation: 0,
                promotion_epoch: 0,
            };
            if let Some(row) = local.get(&entry.name) {
                content.size = row.size;
                content.dirty = true;
                if row.base_version != entry.version {
                    // Local changes were made on an older version: keep them on their own base.
                    content.base_version = row.base_version;
                }
            }
            dbs.insert(entry.name.clone(), Arc::new(self.new_database(&entry.name, content)?));
        }
        for (name, row) in &local {
            if !dbs.contains_key(name) {
                let content = Content {
                    clean: Vec::new(),
                    base_version: row.base_version,
                    size: row.size,
                    dirty: true,
                    generation: 0,
                    promotion_epoch: 0,
                };
                dbs.insert(name.clone(), Arc::new(self.new_database(name, content)?));
            }
        }
        Ok(())
    }

    fn new_database(&self, name: &str, content: Content) -> VfsResult<Database> {
        let db = Database::new(
            &self.alias,
            name,
            self.block_size,
            self.store.clone(),
            self.cache.clone(),
            self.sealer.clone(),
            content,
        );
        write_placeholder(&db.local_path())?;
        Ok(db)
    }

    /// The database `name`, if the container (or this client) has it.
    pub(crate) fn database(&self, name: &str) -> Option<Arc<Database>> {
        lock(&self.databases).get(name).cloned()
    }

    /// Creates a database that exists only locally until uploaded (SQLite opened a new file).
    pub(crate) fn create_local_database(&self, name: &str) -> VfsResult<Arc<Database>> {
        validate_db_name(name)?;
        let mut dbs = lock(&self.databases);
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        let content =
            Content { clean: Vec::new(), base_version: 0, size: 0, dirty: true, generation: 0, promotion_epoch: 0 };
        let db = Arc::new(self.new_database(name, content)?);
        dbs.insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// The manifest as this client last saw it.
    pub(crate) fn manifest(&self) -> Manifest {
        lock(&self.state).manifest.clone()
    }

    /// The version (ETag) of the manifest this client holds.
    pub(crate) fn manifest_version(&self) -> ObjectVersion {
        lock(&self.state).version.clone()
    }

    /// Status of every database.
    pub(crate) fn status(&self) -> Vec<DatabaseStatus> {
        let st = lock(&self.state);
        let bs = st.manifest.block_size as u64;
        lock(&self.databases)
            .values()
            .map(|db| {
                let c = lock(&db.content).clone();
                DatabaseStatus {
                    name: db.name.clone(),
                    id: st.manifest.database(&db.name).map(|e| e.id).unwrap_or(0),
                    version: c.base_version,
                    size: c.size,
                    blocks: c.size.div_ceil(bs),
                    dirty_blocks: db.dirty_indexes().len() as u64,
                    has_local_changes: db.has_local_changes(),
                    open_handles: *lock(&db.open_handles),
                }
            })
            .collect()
    }

    /// Fetches the manifest if it changed and offers new versions to the databases. Clean databases switch at
    /// once (or when their open transactions end); databases with local changes keep them.
    pub(crate) fn poll(&self) -> VfsResult<PollReport> {
        let known = lock(&self.state).version.clone();
        let fetched = match self.cache.client() {
            Some(client) => client
                .poll(&self.alias, &known)?
                .map(|(bytes, version)| super::store::Fetched { bytes: Bytes::from(bytes), version }),
            None => {
                let s = self.store.clone();
                block_on(async move { s.get_if_changed(MANIFEST_OBJECT, &known).await })?
            }
        };
        let Some(fetched) = fetched else { return Ok(PollReport::default()) };
        let manifest = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&self.store, e))?;
        self.install_manifest(manifest, fetched.version, fetched.bytes)
    }

    /// Makes `manifest` the current one and offers its versions to the databases.
    fn install_manifest(&self, manifest: Manifest, version: ObjectVersion, bytes: Bytes) -> VfsResult<PollReport> {
        let mut report = PollReport { manifest_changed: true, ..PollReport::default() };
        if manifest.block_size != self.block_size {
            return Err(corrupt(&self.store, super::container::ManifestError::BadBlockSize(manifest.block_size)));
        }
        self.cache.index().put_container(&ContainerRow {
            alias: self.alias.clone(),
            url: self.url.clone(),
            manifest: bytes.to_vec(),
            version_json: json(&version),
        })?;
        let bs = manifest.block_size as u64;
        let mut offers = Vec::new();
        {
            let mut dbs = lock(&self.databases);
            for entry in &manifest.databases {
                let clean = manifest.resolve(entry.id).map_err(|e| corrupt(&self.store, e))?;
                match dbs.get(&entry.name) {
                    Some(db) => {
                        let c = lock(&db.content).clone();
                        if c.base_version != entry.version || c.clean != clean {
                            offers.push((
                                db.clone(),
                                Incoming { size: clean.len() as u64 * bs, clean, version: entry.version },
                            ));
                        }
                    }
                    None => {
                        let content = Content {
                            size: clean.len() as u64 * bs,
                            clean,
                            base_version: entry.version,
                            dirty: false,
                            generation: 0,
                            promotion_epoch: 0,
                        };
                        dbs.insert(entry.name.clone(), Arc::new(self.new_database(&entry.name, content)?));
                        report.added.push(entry.name.clone());
                    }
                }
            }
            let gone: Vec<String> = dbs
                .iter()
                .filter(|(name, db)| manifest.database(name).is_none() && lock(&db.content).base_version != 0)
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                if let Some(db) = dbs.get(&name)
                    && !db.has_local_changes()
                {
                    dbs.remove(&name);
                    report.removed.push(name);
                }
            }
        }
        *lock(&self.state) = ManifestState { manifest, version };
        for (db, incoming) in offers {
            if db.has_local_changes() {
                report.conflicts.push(db.name.clone());
            } else {
                db.offer(incoming)?;
                report.updated.push(db.name.clone());
            }
        }
        Ok(report)
    }

    /// Uploads every database with local changes: checkpoint, PUT new blocks in parallel, install the manifest
    /// with a conditional PUT (re-basing onto other clients' changes to other databases), turn the dirty blocks
    /// into clean ones, and optionally delete expired garbage.
    ///
    /// Errors: [`VfsError::Busy`] when a write transaction is open; [`VfsError::Conflict`] when a database was
    /// changed by another client since this one's changes started (nothing is lost: revert or keep working);
    /// [`VfsError::LeaseHeld`] / [`VfsError::LeaseLost`] when the lease fence refuses the manifest write;
    /// store errors (nothing is lost either: the dirty blocks stay until an upload succeeds).
    pub(crate) fn upload(
        &self,
        vfs_name: &str,
        options: &UploadOptions,
        nrequest: usize,
        control: &JobControl,
    ) -> VfsResult<UploadReport> {
        let what = format!("upload of container {}", self.alias);
        self.cache.check_writable(&what)?;
        let _writer = lock(&self.writer);
        control.check(&what)?;
        let candidates: Vec<Arc<Database>> =
            lock(&self.databases).values().filter(|db| db.has_local_changes()).cloned().collect();
        let mut report = UploadReport::default();
        // Checkpoint WAL databases so every change is in the blocks.
        for db in &candidates {
            if db.wal_has_changes() {
                checkpoint(vfs_name, &self.alias, &db.name)?;
            }
        }
        let mut guards = Vec::new();
        for db in &candidates {
            guards.push(UploadLock::take(db.clone())?);
            if db.wal_has_changes() {
                return Err(VfsError::Busy {
                    what: format!("database {}/{}", self.alias, db.name),
                    reason: "its WAL could not be checkpointed (a reader holds an old snapshot); retry".into(),
                });
            }
        }
        if candidates.is_empty() && options.cleanup_grace.is_none() {
            return Ok(report);
        }
        let (name_bytes, block_size) = {
            let st = lock(&self.state);
            (st.manifest.name_bytes as usize, st.manifest.block_size)
        };
        // New block lists and the blocks to write.
        let by_md5 = lock(&self.state).manifest.blocks_by_md5();
        let mut lists: Vec<(Arc<Database>, Vec<BlockId>)> = Vec::new();
        let mut to_write: Vec<(BlockId, Bytes)> = Vec::new();
        let mut promotions: Vec<(DirtyKey, BlockId)> = Vec::new();
        for db in &candidates {
            let size = db.size();
            let n = size.div_ceil(block_size as u64) as u32;
            let dirty: std::collections::HashSet<u32> = db.dirty_indexes().into_iter().collect();
            let clean = lock(&db.content).clean.clone();
            let mut list = Vec::with_capacity(n as usize);
            for i in 0..n {
                let needs_new = dirty.contains(&i) || i as usize >= clean.len();
                if !needs_new {
                    list.push(clean[i as usize]);
                    continue;
                }
                let bytes = db.block_bytes(i)?;
                // What goes to the bucket: the block itself, or sealed chunk by chunk under a random id (a
                // content hash would tell which blocks are equal).
                let (fresh, stored) = match &self.sealer {
                    Some(sealer) => {
                        let id = BlockId::random(name_bytes);
                        (id, sealer.seal_block(&bytes, &id.object_name())?)
                    }
                    None => (BlockId::for_block(name_bytes, &bytes), bytes),
                };
                if dirty.contains(&i) {
                    // Store what the bucket gets: the tail beyond the image is zero, in the cache as in the
                    // bucket, so the slot becomes the clean block without a copy.
                    let slot =
                        db.cache().dirty_slot(&DirtyKey { alias: self.alias.clone(), db: db.name.clone(), index: i });
                    if let Some(slot) = slot {
                        db.cache().write_slot_raw(slot, &stored)?;
                    }
                }
                let id = match fresh.md5_prefix().and_then(|m| by_md5.get(&m)) {
                    Some(existing) => {
                        report.blocks_deduplicated += 1;
                        *existing
                    }
                    None => {
                        to_write.push((fresh, Bytes::from(stored)));
                        fresh
                    }
                };
                if dirty.contains(&i) {
                    promotions.push((DirtyKey { alias: self.alias.clone(), db: db.name.clone(), index: i }, id));
                }
                list.push(id);
            }
            lists.push((db.clone(), list));
        }
        if !to_write.is_empty() || !lists.is_empty() {
            let s = self.store.clone();
            block_on(async move { s.check_conditional_writes().await })?;
        }
        // Blocks first, in parallel; a failure leaves only unreferenced objects (found later by cleanup).
        report.blocks_written = to_write.len() as u64;
        report.bytes_written = to_write.iter().map(|(_, b)| b.len() as u64).sum();
        control.set_total(report.bytes_written);
        let store = self.store.clone();
        block_on(async {
            let mut puts = futures::stream::iter(to_write.into_iter().map(|(id, bytes)| {
                let store = store.clone();
                let what = &what;
                async move {
                    control.check(what)?;
                    let len = bytes.len() as u64;
                    store.put(&id.object_name(), bytes).await?;
                    control.advance(len);
                    Ok::<(), VfsError>(())
                }
            }))
            .buffer_unordered(nrequest.max(1));
            while let Some(result) = puts.next().await {
                result?;
            }
            Ok(())
        })?;
        // The last point where a cancelled upload leaves the container untouched.
        control.check(&what)?;
        // The manifest, conditionally; re-base on conflicts with other clients' changes to other databases.
        let mut deleted = Vec::new();
        let mut installed = None;
        for attempt in 0..=MAX_REBASES {
            let (mut manifest, version) = {
                let st = lock(&self.state);
                (st.manifest.clone(), st.version.clone())
            };
            let now = julian_ms_now();
            let mut versions = Vec::new();
            for (db, list) in &lists {
                let base = lock(&db.content).base_version;
                let id = match manifest.database(&db.name) {
                    Some(entry) if entry.version == base => {
                        let id = entry.id;
                        manifest.replace_blocks(id, list.clone(), now).map_err(|e| corrupt(&self.store, e))?;
                        id
                    }
                    None if base == 0 => {
                        manifest.add_database(&db.name, list.clone()).map_err(|e| corrupt(&self.store, e))?
                    }
                    _ => {
                        return Err(VfsError::Conflict {
                            container: self.store.label().to_string(),
                            object: format!("{MANIFEST_OBJECT} (database {:?} was changed by another client)", db.name),
                        });
                    }
                };
                let v = manifest.database_by_id(id).map(|e| e.version).unwrap_or(0);
                versions.push((db.name.clone(), v));
            }
            deleted = match options.cleanup_grace {
                Some(grace) => {
                    let cutoff = julian_ms_from_unix_ms(unix_now_ms() - grace.as_millis() as i64);
                    manifest.take_deletable(cutoff)
                }
                None => Vec::new(),
            };
            let bytes = Bytes::from(manifest.encode());
            let promotions_json = serde_json::to_string(
                &promotions.iter().map(|(k, id)| (k.db.clone(), k.index, id.to_string())).collect::<Vec<_>>(),
            )
            .unwrap_or_else(|_| "[]".into());
            self.cache
                .index()
                .put_pending_upload(&self.alias, &PendingUploadRow { manifest: bytes.to_vec(), promotions_json })?;
            // The lease fence, right before the manifest PUT: nothing is installed when it refuses.
            if let Err(e) = self.fence() {
                self.cache.index().delete_pending_upload(&self.alias)?;
                return Err(e);
            }
            let s = self.store.clone();
            let b = bytes.clone();
            match block_on(async move { s.put_if_match(MANIFEST_OBJECT, b, &version).await }) {
                Ok(new_version) => {
                    installed = Some((manifest, new_version, bytes, versions));
                    break;
                }
                Err(e) if e.is_conflict() && attempt < MAX_REBASES => {
                    report.rebases += 1;
                    self.cache.index().delete_pending_upload(&self.alias)?;
                    let s = self.store.clone();
                    let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
                    let fresh = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&self.store, e))?;
                    self.install_manifest(fresh, fetched.version, fetched.bytes)?;
                }
                Err(e) => {
                    self.cache.index().delete_pending_upload(&self.alias)?;
                    return Err(e);
                }
            }
        }
        let Some((manifest, new_version, bytes, versions)) = installed else {
            return Err(VfsError::Conflict {
                container: self.store.label().to_string(),
                object: MANIFEST_OBJECT.into(),
            });
        };
        self.finish_upload(manifest, new_version, bytes, &promotions, &lists)?;
        report.databases = versions;
        drop(guards);
        // Garbage whose grace period passed: the manifest no longer lists it, so deleting cannot hurt a reader
        // of the new manifest; a failure leaves orphans that cleanup finds.
        report.blocks_deleted = deleted.len() as u64;
        let store = self.store.clone();
        block_on(async move {
            let mut dels = futures::stream::iter(deleted.into_iter().map(|id| {
                let store = store.clone();
                async move { store.delete(&id.object_name()).await }
            }))
            .buffer_unordered(nrequest.max(1));
            while let Some(r) = dels.next().await {
                r?;
            }
            Ok(())
        })?;
        Ok(report)
    }

    fn finish_upload(
        &self,
        manifest: Manifest,
        version: ObjectVersion,
        bytes: Bytes,
        promotions: &[(DirtyKey, BlockId)],
        lists: &[(Arc<Database>, Vec<BlockId>)],
    ) -> VfsResult<()> {
        // Readers of these databases wait while the dirty slots and the clean lists change in two steps.
        let _promotions: Vec<_> = lists.iter().map(|(db, _)| db.begin_promotion()).collect();
        self.cache.promote(promotions)?;
        for (db, list) in lists {
            let v = manifest.database(&db.name).map(|e| e.version).unwrap_or(0);
            db.mark_uploaded(list.clone(), v)?;
        }
        self.cache.index().put_container(&ContainerRow {
            alias: self.alias.clone(),
            url: self.url.clone(),
            manifest: bytes.to_vec(),
            version_json: json(&version),
        })?;
        self.cache.index().delete_pending_upload(&self.alias)?;
        *lock(&self.state) = ManifestState { manifest, version };
        Ok(())
    }

    /// After a crash between "manifest PUT sent" and "upload recorded": if the container holds exactly the
    /// manifest the upload was installing, finish the upload; otherwise forget the attempt (local changes stay).
    fn recover_interrupted_upload(&self) -> VfsResult<()> {
        let Some(pending) = self.cache.index().pending_upload(&self.alias)? else { return Ok(()) };
        let s = self.store.clone();
        let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
        if fetched.bytes.as_ref() != pending.manifest.as_slice() {
            self.cache.index().delete_pending_upload(&self.alias)?;
            let manifest = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&self.store, e))?;
            self.install_manifest(manifest, fetched.version, fetched.bytes)?;
            return Ok(());
        }
        let manifest = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&self.store, e))?;
        let raw: Vec<(String, u32, String)> = serde_json::from_str(&pending.promotions_json).unwrap_or_default();
        let mut promotions = Vec::new();
        for (db, index, hex_id) in raw {
            let id = hex::decode(&hex_id).ok().and_then(|b| BlockId::from_bytes(&b).ok());
            if let Some(id) = id {
                promotions.push((DirtyKey { alias: self.alias.clone(), db, index }, id));
            }
        }
        let mut lists = Vec::new();
        for entry in &manifest.databases {
            if let Some(db) = self.database(&entry.name)
                && lock(&db.content).dirty
            {
                lists.push((db, manifest.resolve(entry.id).map_err(|e| corrupt(&self.store, e))?));
            }
        }
        self.finish_upload(manifest, fetched.version, fetched.bytes, &promotions, &lists)
    }

    /// Drops local changes of `name` (or of every database) and returns to the last uploaded or polled version.
    /// Errors: [`VfsError::Busy`] while a connection holds a lock on it.
    pub(crate) fn revert(&self, name: Option<&str>) -> VfsResult<Vec<String>> {
        let _writer = lock(&self.writer);
        let manifest = self.manifest();
        let bs = manifest.block_size as u64;
        let dbs: Vec<Arc<Database>> =
            lock(&self.databases).values().filter(|db| name.is_none_or(|n| n == db.name)).cloned().collect();
        if let Some(n) = name
            && dbs.is_empty()
        {
            return Err(VfsError::NoSuchDatabase { container: self.alias.clone(), database: n.to_string() });
        }
        let mut reverted = Vec::new();
        for db in dbs {
            if !db.has_local_changes() {
                continue;
            }
            if !db.quiescent() {
                return Err(VfsError::Busy {
                    what: format!("database {}/{}", self.alias, db.name),
                    reason: "a connection holds a lock on it".into(),
                });
            }
            match manifest.database(&db.name) {
                Some(entry) => {
                    let clean = manifest.resolve(entry.id).map_err(|e| corrupt(&self.store, e))?;
                    let size = clean.len() as u64 * bs;
                    db.replace_content(clean, entry.version, size)?;
                }
                None => {
                    db.replace_content(Vec::new(), 0, 0)?;
                    lock(&self.databases).remove(&db.name);
                    remove_local_files(&db.local_path());
                }
            }
            reverted.push(db.name.clone());
        }
        Ok(reverted)
    }

    /// Runs `change` on the current manifest and installs the result with a conditional PUT, re-trying on a
    /// conflict with the freshly fetched manifest.
    fn change_manifest(&self, mut change: impl FnMut(&mut Manifest) -> VfsResult<()>) -> VfsResult<Manifest> {
        self.cache.check_writable(&format!("container {}", self.alias))?;
        let _writer = lock(&self.writer);
        for attempt in 0..=MAX_REBASES {
            let (mut manifest, version) = {
                let st = lock(&self.state);
                (st.manifest.clone(), st.version.clone())
            };
            change(&mut manifest)?;
            let bytes = Bytes::from(manifest.encode());
            let s = self.store.clone();
            block_on(async move { s.check_conditional_writes().await })?;
            self.fence()?;
            let s = self.store.clone();
            let b = bytes.clone();
            match block_on(async move { s.put_if_match(MANIFEST_OBJECT, b, &version).await }) {
                Ok(v) => {
                    self.install_manifest(manifest.clone(), v, bytes)?;
                    return Ok(manifest);
                }
                Err(e) if e.is_conflict() && attempt < MAX_REBASES => {
                    let s = self.store.clone();
                    let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
                    let fresh = Manifest::decode(&fetched.bytes).map_err(|e| corrupt(&self.store, e))?;
                    self.install_manifest(fresh, fetched.version, fetched.bytes)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(VfsError::Conflict { container: self.store.label().to_string(), object: MANIFEST_OBJECT.into() })
    }

    /// The lease check before a manifest PUT (see [`super::container::lease`]): renews the lease this client
    /// holds, or refuses while another client holds it.
    fn fence(&self) -> VfsResult<()> {
        let lease = &self.lease;
        block_on(async move { lease.fence().await })
    }

    /// Copies database `from` to a new database `to` in the container, sharing all blocks (the copy is the
    /// uploaded version of `from`).
    pub(crate) fn copy(&self, from: &str, to: &str) -> VfsResult<()> {
        validate_db_name(to)?;
        let label = self.store.label().to_string();
        self.change_manifest(|m| {
            m.copy_database(from, to)
                .map(|_| ())
                .map_err(|e| VfsError::Manifest { container: label.clone(), source: e })
        })?;
        Ok(())
    }

    /// Deletes database `name` from the container; its blocks go to the delete list.
    /// Errors: [`VfsError::Busy`] while it has open connections.
    pub(crate) fn delete(&self, name: &str) -> VfsResult<()> {
        let db = self
            .database(name)
            .ok_or_else(|| VfsError::NoSuchDatabase { container: self.alias.clone(), database: name.to_string() })?;
        if *lock(&db.open_handles) > 0 {
            return Err(VfsError::Busy {
                what: format!("database {}/{name}", self.alias),
                reason: "it has open connections".into(),
            });
        }
        let label = self.store.label().to_string();
        if self.manifest().database(name).is_some() {
            self.change_manifest(|m| {
                m.remove_database(name, julian_ms_now())
                    .map_err(|e| VfsError::Manifest { container: label.clone(), source: e })
            })?;
        }
        self.cache.discard_dirty(&self.alias, name)?;
        self.cache.index().delete_local_db(&self.alias, name)?;
        lock(&self.databases).remove(name);
        remove_local_files(&db.local_path());
        Ok(())
    }

    /// True when any database has an open connection.
    pub(crate) fn in_use(&self) -> bool {
        lock(&self.databases).values().any(|db| *lock(&db.open_handles) > 0)
    }

    /// True when any database has local changes.
    pub(crate) fn has_local_changes(&self) -> bool {
        lock(&self.databases).values().any(|db| db.has_local_changes())
    }

    /// Forgets this container in the cache index (its cached clean blocks stay, keyed by id).
    pub(crate) fn forget(&self) -> VfsResult<()> {
        self.cache.index().delete_container(&self.alias)?;
        let dir = self.cache.dir().join(&self.alias);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}

/// An upload's hold on a database: the main-file write lock and, for WAL databases, the WAL write lock.
struct UploadLock {
    db: Arc<Database>,
    holder: u64,
    hold: ShmHold,
}

impl UploadLock {
    fn take(db: Arc<Database>) -> VfsResult<UploadLock> {
        let holder = new_holder();
        let mut hold = ShmHold::default();
        let busy = || VfsError::Busy {
            what: format!("database {}/{}", db.alias, db.name),
            reason: "a write transaction is open".into(),
        };
        lock(&db.locks).take_for_upload(holder).map_err(|_| busy())?;
        let mut shm = lock(&db.shm);
        if shm.is_mapped() && shm.lock(holder, &mut hold, SHM_WRITE_SLOT, 1, true).is_err() {
            drop(shm);
            lock(&db.locks).release_upload(holder);
            return Err(busy());
        }
        drop(shm);
        Ok(UploadLock { db, holder, hold })
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        lock(&self.db.shm).unlock(self.holder, &mut self.hold, SHM_WRITE_SLOT, 1);
        lock(&self.db.locks).release_upload(self.holder);
        let _ = self.db.apply_incoming();
    }
}

/// Checkpoints the WAL of `/alias/name` through the VFS, so the blocks hold every committed change.
fn checkpoint(vfs_name: &str, alias: &str, name: &str) -> VfsResult<()> {
    let path = format!("/{alias}/{name}");
    let db = super::sqlite::raw::RawDb::open(&path, vfs_name, false)
        .map_err(|e| VfsError::sqlite(format!("open {path} to checkpoint it"), e))?;
    let busy = db
        .query("PRAGMA wal_checkpoint(TRUNCATE)", &[], |r| r.int(0))
        .map_err(|e| VfsError::sqlite(format!("checkpoint {path}"), e))?
        .into_iter()
        .next()
        .unwrap_or(1);
    drop(db);
    if busy != 0 {
        return Err(VfsError::Busy {
            what: format!("database {alias}/{name}"),
            reason: "its WAL could not be checkpointed while other connections use it; retry".into(),
        });
    }
    Ok(())
}

/// Writes the placeholder file SQLite's own VFS looks at (it derives file modes of journals from it).
fn write_placeholder(path: &Path) -> VfsResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| VfsError::io("create directory", dir, e))?;
    }
    if !path.exists() {
        std::fs::write(path, b"bcvfs").map_err(|e| VfsError::io("write", path, e))?;
    }
    Ok(())
}

fn remove_local_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(wal_path(path));
    let mut journal = path.as_os_str().to_os_string();
    journal.push("-journal");
    let _ = std::fs::remove_file(journal);
}

/// Checks a database name: 1..=127 bytes of UTF-8, no NUL and no `/` (it is a path component).
pub(crate) fn validate_db_name(name: &str) -> VfsResult<()> {
    if name.is_empty() || name.len() > 127 || name.contains('\0') || name.contains('/') || name == "." || name == ".." {
        return Err(VfsError::InvalidArgument(format!(
            "database name {name:?}: must be 1 to 127 bytes, without NUL or '/'"
        )));
    }
    Ok(())
}

fn json(v: &ObjectVersion) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
