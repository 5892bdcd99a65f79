//! Container operations without a VFS or cache: create and destroy a container, upload and download a
//! database file, copy, delete, list databases, and clean up garbage blocks.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::attached::{KV_OBJECT, MANIFEST_OBJECT, validate_db_name};
use super::container::lease::LeaseSlot;
use super::container::{BlockId, LeaseInfo, LeaseOptions, Manifest, julian_ms_from_unix_ms, julian_ms_now};
use super::crypto::{Domain, SECURE_OBJECT, Sealer, SecureMarker, SecureOptions};
use super::runtime::block_on;
use super::store::{ContainerStore, ObjectVersion};
use super::{VfsError, VfsResult};

/// The default block size of new containers: 4 MiB, as in CBS.
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
/// The default block-id length of new containers: 16 bytes, as in CBS.
pub const DEFAULT_NAME_BYTES: u32 = 16;

/// Progress of a long operation, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// A database as listed from a manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseInfo {
    /// The name.
    pub name: String,
    /// Its id in the manifest.
    pub id: u32,
    /// Its version (uploads so far).
    pub version: u32,
    /// The id of the database it shares blocks with as a diff (0: none).
    pub parent: u32,
    /// Blocks.
    pub blocks: u32,
    /// Size of its image in bytes (blocks × block size).
    pub size: u64,
}

/// What a cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    /// Blocks deleted from the delete list (their grace period had passed).
    pub deleted: u64,
    /// Orphaned blocks deleted (in no manifest list and not on the delete list, e.g. from a crashed upload).
    pub orphans_deleted: u64,
    /// Blocks still waiting on the delete list.
    pub waiting: u64,
}

/// Container operations on one store, without a cache.
///
/// For a secure container, give the cipher with [`with_secure`](Self::with_secure): uploads then seal
/// blocks, downloads open them, and `create` makes a secure container. Without it, uploads and downloads of a
/// secure container fail with [`VfsError::Secure`] rather than mixing plaintext into it.
///
/// A `ContainerTools` is one lease client: the lease it obtains (or adopts by token) is held by it and by its
/// clones, and every manifest write it makes (create, upload_file, copy, delete, cleanup, destroy) is fenced by
/// the lease first (see [`super::container::lease`]).
#[derive(Clone, Debug)]
pub struct ContainerTools {
    store: ContainerStore,
    nrequest: usize,
    secure: Option<SecureOptions>,
    lease: Arc<LeaseSlot>,
}

impl ContainerTools {
    /// Operations on `store`, with up to `nrequest` parallel requests, and default [`LeaseOptions`].
    pub fn new(store: ContainerStore, nrequest: usize) -> ContainerTools {
        let lease = Arc::new(LeaseSlot::new(store.clone(), LeaseOptions::default()));
        ContainerTools { store, nrequest: nrequest.max(1), secure: None, lease }
    }

    /// The same tools for a secure container with this cipher (and keys).
    pub fn with_secure(mut self, secure: SecureOptions) -> ContainerTools {
        self.secure = Some(secure);
        self
    }

    /// True when the container is secure (has a `bcv_secure.json` marker). Errors: the store's.
    pub fn is_secure(&self) -> VfsResult<bool> {
        Ok(self.marker()?.is_some())
    }

    fn marker(&self) -> VfsResult<Option<SecureMarker>> {
        let s = self.store.clone();
        match block_on(async move { s.get(SECURE_OBJECT).await }) {
            Ok(f) => Ok(Some(SecureMarker::decode(self.store.label(), &f.bytes)?)),
            Err(VfsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sealer for the blocks of a container whose manifest is `m`: `None` for a plaintext container.
    /// Errors: [`VfsError::Secure`] when the container and these tools disagree about being secure;
    /// [`VfsError::Crypto`] for a wrong key.
    fn sealer(&self, m: &Manifest) -> VfsResult<Option<Sealer>> {
        let label = self.store.label();
        match (self.marker()?, &self.secure) {
            (None, None) => Ok(None),
            (Some(marker), Some(options)) => {
                let chunk = crate::vfs::CHUNK_SIZE.min(m.block_size);
                Sealer::for_container(label, &marker, options, chunk).map(Some)
            }
            (Some(_), None) => Err(VfsError::Secure {
                container: label.to_string(),
                reason: "the container is secure (its blocks are encrypted): give its key or cipher".into(),
            }),
            (None, Some(_)) => Err(VfsError::Secure {
                container: label.to_string(),
                reason: format!("a key or cipher was given, but the container is not secure (no {SECURE_OBJECT})"),
            }),
        }
    }

    /// The same tools with other lease options (clock skew, safety margin). The result holds no lease: call it
    /// before obtaining one.
    pub fn with_lease_options(self, options: LeaseOptions) -> ContainerTools {
        let lease = Arc::new(LeaseSlot::new(self.store.clone(), options));
        ContainerTools { lease, ..self }
    }

    /// The store.
    pub fn store(&self) -> &ContainerStore {
        &self.store
    }

    fn corrupt(&self, source: super::container::ManifestError) -> VfsError {
        VfsError::Manifest { container: self.store.label().to_string(), source }
    }

    /// Reads the manifest and its version.
    pub fn manifest(&self) -> VfsResult<(Manifest, ObjectVersion)> {
        let s = self.store.clone();
        let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
        let m = Manifest::decode(&fetched.bytes).map_err(|e| self.corrupt(e))?;
        Ok((m, fetched.version))
    }

    /// Creates an empty container (a manifest with no database). Refuses to overwrite an existing one unless
    /// `overwrite` (CBS's create clobbers). Errors: `AlreadyExists`; a store without conditional writes.
    ///
    /// With [`with_secure`](Self::with_secure) the container is secure: its marker (cipher name, salt, key
    /// check) is written first, then the manifest. Such a container cannot be read by CBS.
    /// `overwrite` (CBS's create clobbers). Errors: `AlreadyExists`; a store without conditional writes; the
    /// lease fence's [`VfsError::LeaseHeld`] / [`VfsError::LeaseLost`].
    pub fn create(&self, block_size: u32, name_bytes: u32, overwrite: bool) -> VfsResult<()> {
        let m = Manifest::new(block_size, name_bytes).map_err(|e| self.corrupt(e))?;
        let bytes = Bytes::from(m.encode());
        let marker = match &self.secure {
            Some(options) => {
                let chunk = crate::vfs::CHUNK_SIZE.min(block_size);
                Some(Bytes::from(SecureMarker::create(self.store.label(), options.cipher.as_ref(), chunk)?.encode()))
            }
            None => None,
        };
        let s = self.store.clone();
        let lease = &self.lease;
        block_on(async move {
            s.check_conditional_writes().await?;
            if !overwrite && s.head(MANIFEST_OBJECT).await?.is_some() {
                return Err(VfsError::AlreadyExists {
                    container: s.label().to_string(),
                    object: MANIFEST_OBJECT.into(),
                });
            }
            match marker {
                Some(marker) => {
                    s.put(SECURE_OBJECT, marker).await?;
                }
                None if overwrite => match s.delete(SECURE_OBJECT).await {
                    Ok(()) | Err(VfsError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                },
                None => {}
            }
            lease.fence().await?;
            if overwrite { s.put(MANIFEST_OBJECT, bytes).await } else { s.put_if_absent(MANIFEST_OBJECT, bytes).await }
        })?;
        Ok(())
    }

    /// Deletes every object of the container, the manifest first (so no client attaches a half-deleted one),
    /// and the lease object with the rest (a lease these tools held is forgotten). Returns the objects deleted
    /// after the manifest.
    ///
    /// Errors: the lease fence's [`VfsError::LeaseHeld`] / [`VfsError::LeaseLost`] (nothing is deleted); store
    /// errors.
    pub fn destroy(&self) -> VfsResult<u64> {
        let s = self.store.clone();
        let n = self.nrequest;
        let lease = &self.lease;
        block_on(async move {
            lease.fence().await?;
            lease.forget().await;
            s.delete(MANIFEST_OBJECT).await?;
            let objects = s.list().await?;
            let count = objects.len() as u64;
            let mut dels = futures::stream::iter(objects.into_iter().map(|o| {
                let s = s.clone();
                async move { s.delete(&o.name).await }
            }))
            .buffer_unordered(n);
            while let Some(r) = dels.next().await {
                r?;
            }
            Ok(count)
        })
    }

    /// The databases of the container.
    pub fn list(&self) -> VfsResult<Vec<DatabaseInfo>> {
        let (m, _) = self.manifest()?;
        Ok(list_of(&m))
    }

    /// Uploads the local file `path` as database `name` (a new version when it exists), block by block in
    /// parallel, then installs the manifest with a conditional PUT (retrying on conflicts with other writers),
    /// fenced by the lease (a refused upload leaves its blocks as orphans for [`cleanup`](Self::cleanup)).
    pub fn upload_file(&self, path: &Path, name: &str, progress: &dyn Fn(Progress)) -> VfsResult<u32> {
        validate_db_name(name)?;
        let (manifest, _) = self.manifest()?;
        let sealer = self.sealer(&manifest)?;
        let bs = manifest.block_size as usize;
        let nb = manifest.name_bytes as usize;
        let mut file = std::fs::File::open(path).map_err(|e| VfsError::io("open", path, e))?;
        let total = file.metadata().map_err(|e| VfsError::io("stat", path, e))?.len();
        let by_md5 = manifest.blocks_by_md5();
        let mut ids = Vec::new();
        let mut blocks = Vec::new();
        loop {
            let mut block = vec![0u8; bs];
            let n = read_full(&mut file, &mut block).map_err(|e| VfsError::io("read", path, e))?;
            if n == 0 {
                break;
            }
            if let Some(sealer) = &sealer {
                // Random ids and sealed chunks: nothing about the content shows in the bucket.
                let id = BlockId::random(nb);
                ids.push(id);
                blocks.push((id, Bytes::from(sealer.seal_block(&block, &id.object_name())?)));
            } else {
                let fresh = BlockId::for_block(nb, &block);
                match fresh.md5_prefix().and_then(|m| by_md5.get(&m)) {
                    Some(existing) => ids.push(*existing),
                    None => {
                        ids.push(fresh);
                        blocks.push((fresh, Bytes::from(block)));
                    }
                }
            }
            if n < bs {
                break;
            }
        }
        let s = self.store.clone();
        let n = self.nrequest;
        let done = std::sync::atomic::AtomicU64::new(0);
        block_on(async {
            s.check_conditional_writes().await?;
            let mut puts = futures::stream::iter(blocks.into_iter().map(|(id, b)| {
                let s = s.clone();
                async move {
                    let len = b.len() as u64;
                    s.put(&id.object_name(), b).await.map(|_| len)
                }
            }))
            .buffer_unordered(n);
            while let Some(r) = puts.next().await {
                let d = done.fetch_add(r?, std::sync::atomic::Ordering::Relaxed) + bs as u64;
                progress(Progress { done: d.min(total), total });
            }
            Ok(())
        })?;
        let installed = self.change_manifest(|m| {
            let now = julian_ms_now();
            match m.database(name).map(|e| e.id) {
                Some(id) => m.replace_blocks(id, ids.clone(), now),
                None => m.add_database(name, ids.clone()).map(|_| ()),
            }
        })?;
        progress(Progress { done: total, total });
        Ok(installed.database(name).map(|e| e.version).unwrap_or(0))
    }

    /// Downloads database `name` to the local file `path`: its image of nBlocks × block size bytes, exactly as
    /// CBS writes it. The file is written to a temporary name and renamed into place.
    pub fn download_file(&self, name: &str, path: &Path, progress: &dyn Fn(Progress)) -> VfsResult<u64> {
        let (m, _) = self.manifest()?;
        let entry = m.database(name).ok_or_else(|| VfsError::NoSuchDatabase {
            container: self.store.label().to_string(),
            database: name.to_string(),
        })?;
        let ids = m.resolve(entry.id).map_err(|e| self.corrupt(e))?;
        let sealer = self.sealer(&m)?;
        let bs = m.block_size as u64;
        let total = ids.len() as u64 * bs;
        let tmp = path.with_extension("bcv-download");
        let mut out = std::fs::File::create(&tmp).map_err(|e| VfsError::io("create", &tmp, e))?;
        let s = self.store.clone();
        let n = self.nrequest;
        let label = self.store.label().to_string();
        let result = block_on(async {
            let mut gets = futures::stream::iter(ids.into_iter().map(|id| {
                let s = s.clone();
                async move { s.get(&id.object_name()).await.map(|f| (id, f.bytes)) }
            }))
            .buffered(n);
            let mut done = 0u64;
            while let Some(r) = gets.next().await {
                let (id, bytes) = r?;
                let bytes = match &sealer {
                    Some(sealer) => sealer.open_chunks(Domain::Block, &bytes, &id.object_name())?,
                    None => bytes.to_vec(),
                };
                if bytes.len() as u64 != bs {
                    return Err(VfsError::CorruptBlock {
                        container: label.clone(),
                        object: id.object_name(),
                        reason: format!("{} bytes, the container's block size is {bs}", bytes.len()),
                    });
                }
                out.write_all(&bytes).map_err(|e| VfsError::io("write", &tmp, e))?;
                done += bs;
                progress(Progress { done, total });
            }
            Ok(())
        });
        if let Err(e) = result.and_then(|_| out.sync_all().map_err(|e| VfsError::io("sync", &tmp, e))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|e| VfsError::io("rename", path, e))?;
        Ok(total)
    }

    /// Copies database `from` to a new database `to`, sharing blocks.
    pub fn copy(&self, from: &str, to: &str) -> VfsResult<()> {
        validate_db_name(to)?;
        self.change_manifest(|m| m.copy_database(from, to).map(|_| ()))?;
        Ok(())
    }

    /// Deletes database `name`; its blocks go to the delete list (removed by [`cleanup`](Self::cleanup)).
    pub fn delete(&self, name: &str) -> VfsResult<()> {
        self.change_manifest(|m| m.remove_database(name, julian_ms_now()))?;
        Ok(())
    }

    /// Deletes blocks that have been on the delete list for at least `grace`, and (when `find_orphans`) block
    /// objects that no database references and that are older than `grace` (left by crashed uploads). The
    /// manifest is rewritten (conditionally) before any block is deleted.
    pub fn cleanup(&self, grace: Duration, find_orphans: bool) -> VfsResult<CleanupReport> {
        let cutoff = julian_ms_from_unix_ms(unix_now_ms() - grace.as_millis() as i64);
        let mut taken = Vec::new();
        let m = self.change_manifest(|m| {
            taken = m.take_deletable(cutoff);
            Ok(())
        })?;
        let mut report =
            CleanupReport { deleted: taken.len() as u64, waiting: m.delete_list.len() as u64, ..Default::default() };
        let s = self.store.clone();
        let n = self.nrequest;
        let mut victims: Vec<String> = taken.iter().map(|id| id.object_name()).collect();
        if find_orphans {
            let known: HashSet<BlockId> =
                m.referenced_blocks().into_iter().chain(m.delete_list.iter().map(|d| d.id)).collect();
            let s2 = s.clone();
            let objects = block_on(async move { s2.list().await })?;
            let older_than = unix_now_ms() - grace.as_millis() as i64;
            for o in objects {
                if o.name == MANIFEST_OBJECT || o.name == KV_OBJECT {
                    continue;
                }
                if let Some(id) = BlockId::parse_object_name(&o.name)
                    && !known.contains(&id)
                    && !taken.contains(&id)
                    && o.last_modified_unix_ms <= older_than
                {
                    victims.push(o.name);
                    report.orphans_deleted += 1;
                }
            }
        }
        block_on(async move {
            let mut dels = futures::stream::iter(victims.into_iter().map(|name| {
                let s = s.clone();
                async move { s.delete(&name).await }
            }))
            .buffer_unordered(n);
            while let Some(r) = dels.next().await {
                r?;
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// Applies `change` to the manifest and installs it with a conditional PUT, re-reading and re-applying on a
    /// conflict (up to 8 times). Each PUT is preceded by the lease fence.
    fn change_manifest(
        &self,
        mut change: impl FnMut(&mut Manifest) -> Result<(), super::container::ManifestError>,
    ) -> VfsResult<Manifest> {
        let s = self.store.clone();
        block_on(async move { s.check_conditional_writes().await })?;
        for _ in 0..8 {
            let (mut m, version) = self.manifest()?;
            change(&mut m).map_err(|e| self.corrupt(e))?;
            let bytes = Bytes::from(m.encode());
            let s = self.store.clone();
            let lease = &self.lease;
            match block_on(async move {
                lease.fence().await?;
                s.put_if_match(MANIFEST_OBJECT, bytes, &version).await
            }) {
                Ok(_) => return Ok(m),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(VfsError::Conflict { container: self.store.label().to_string(), object: MANIFEST_OBJECT.into() })
    }

    /// Obtains the container's lease for `holder` (free text, 1 to 256 bytes, e.g. `"host-a pid 123"`) for
    /// `duration`; these tools (and their clones) hold it from now on. The returned [`LeaseInfo::token`] lets
    /// another `ContainerTools` (another process) extend or release this holding
    /// ([`lease_extend_with_token`](Self::lease_extend_with_token),
    /// [`lease_release_with_token`](Self::lease_release_with_token)) or write as its holder
    /// ([`lease_adopt`](Self::lease_adopt)).
    ///
    /// Errors: as [`BlockVfs::lease_obtain`](super::BlockVfs::lease_obtain).
    pub fn lease_obtain(&self, holder: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        let lease = &self.lease;
        block_on(async move { lease.obtain(holder, duration).await })
    }

    /// Extends the lease these tools hold to expire `duration` from now.
    ///
    /// Errors: as [`BlockVfs::lease_extend`](super::BlockVfs::lease_extend).
    pub fn lease_extend(&self, duration: Duration) -> VfsResult<LeaseInfo> {
        let lease = &self.lease;
        block_on(async move { lease.extend(duration).await })
    }

    /// Releases the lease these tools hold (rewritten as released, not deleted).
    ///
    /// Errors: as [`BlockVfs::lease_release`](super::BlockVfs::lease_release).
    pub fn lease_release(&self) -> VfsResult<()> {
        let lease = &self.lease;
        block_on(async move { lease.release().await })
    }

    /// The lease as recorded in the container, read now; `None` when absent or released.
    ///
    /// Errors: as [`BlockVfs::lease_status`](super::BlockVfs::lease_status).
    pub fn lease_status(&self) -> VfsResult<Option<LeaseInfo>> {
        let lease = &self.lease;
        block_on(async move { lease.status().await })
    }

    /// The lease these tools hold, as they last wrote it (no request); `None` when they hold none.
    ///
    /// Errors: [`VfsError::Runtime`] when called on a runtime thread (it waits for a lease operation in
    /// progress).
    pub fn lease_held(&self) -> VfsResult<Option<LeaseInfo>> {
        let lease = &self.lease;
        block_on(async move { Ok(lease.held().await) })
    }

    /// Holds the lease obtained elsewhere under `token` (by another process of the application), without writing
    /// anything: these tools' manifest writes are then fenced as its holder (renewing it), and they can extend
    /// and release it. Replaces any lease these tools held.
    ///
    /// Errors: [`VfsError::LeaseLost`] when the container's lease is not the unexpired holding `token` (released,
    /// expired, held by someone else, or absent); [`VfsError::LeaseObject`]; store errors.
    pub fn lease_adopt(&self, token: &str) -> VfsResult<LeaseInfo> {
        let lease = &self.lease;
        block_on(async move { lease.adopt(token).await })
    }

    /// Extends the holding `token` (obtained by another process of the application) to expire `duration` from
    /// now; these tools hold it afterwards.
    ///
    /// Errors: [`VfsError::LeaseLost`] when the container's lease is not the unexpired holding `token`, or it
    /// changed before the write landed; [`VfsError::InvalidArgument`] for a duration not longer than the safety
    /// margin; [`VfsError::LeaseObject`]; store errors.
    pub fn lease_extend_with_token(&self, token: &str, duration: Duration) -> VfsResult<LeaseInfo> {
        let lease = &self.lease;
        block_on(async move { lease.extend_with_token(token, duration).await })
    }

    /// Releases the holding `token` (obtained by another process of the application, or by these tools). An
    /// expired holding nobody took over can still be released.
    ///
    /// Errors: [`VfsError::LeaseLost`] when the container's lease is not the holding `token` (released already,
    /// taken over, absent) or it changed before the write landed; [`VfsError::LeaseObject`]; store errors.
    pub fn lease_release_with_token(&self, token: &str) -> VfsResult<()> {
        let lease = &self.lease;
        block_on(async move { lease.release_with_token(token).await })
    }
}

/// The databases of a manifest.
pub fn list_of(m: &Manifest) -> Vec<DatabaseInfo> {
    m.databases
        .iter()
        .map(|e| DatabaseInfo {
            name: e.name.clone(),
            id: e.id,
            version: e.version,
            parent: e.parent(),
            blocks: e.n_blocks,
            size: e.n_blocks as u64 * m.block_size as u64,
        })
        .collect()
}

/// A JSON summary of a manifest: block size, id length, largest database id, the databases (as [`list_of`])
/// and the delete list (block id in hex, julian-day millisecond timestamp). The shape `bcv manifest` prints.
pub fn manifest_summary(m: &Manifest) -> serde_json::Value {
    let delete_list: Vec<serde_json::Value> = m
        .delete_list
        .iter()
        .map(|d| serde_json::json!({"block": d.id.to_string(), "timestamp_ms": d.timestamp_ms}))
        .collect();
    serde_json::json!({
        "block_size": m.block_size,
        "name_bytes": m.name_bytes,
        "max_db_id": m.max_db_id,
        "databases": list_of(m),
        "delete_list": delete_list,
    })
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
