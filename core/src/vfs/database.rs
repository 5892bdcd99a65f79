//! One database of an attached container as SQLite sees it: a byte image made of the manifest's blocks
//! (read lazily through the cache) overlaid with locally written (dirty) blocks.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::cache::{BlockCache, DirtyKey, LocalDbRow, lock};
use super::container::BlockId;
use super::crypto::Sealer;
use super::job::JobControl;
use super::runtime::block_on;
use super::sqlite::locks::{FileLocks, Shm};
use super::store::ContainerStore;
use super::tools::Progress;
use super::{VfsError, VfsResult};

/// The most a read may prefetch beyond what it asked for, within the same block.
const MAX_READAHEAD: u32 = 1 << 20;

/// What the database holds right now.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    /// Block ids of the version the local image is based on (the manifest's resolved list).
    pub(crate) clean: Vec<BlockId>,
    /// The manifest version of that base (0 for a database that exists only locally).
    pub(crate) base_version: u32,
    /// The local image size in bytes.
    pub(crate) size: u64,
    /// True when the image differs from its base (dirty blocks or a new size).
    pub(crate) dirty: bool,
    /// Bumped whenever the image is replaced underneath open connections (poll, revert).
    pub(crate) generation: u64,
    /// Odd while an upload turns this image's dirty blocks into clean ones (the dirty slots and the clean
    /// list change in two steps), bumped again when it is done: a read that overlapped it reads again.
    pub(crate) promotion_epoch: u64,
}

/// An upload's promotion of one database's dirty blocks to clean ones, from [`Database::begin_promotion`]
/// until dropped (also on an error): reads wait for it, and reads that overlapped it start over.
pub(crate) struct Promotion<'a> {
    db: &'a Database,
}

impl Drop for Promotion<'_> {
    fn drop(&mut self) {
        lock(&self.db.content).promotion_epoch += 1;
    }
}

/// A newer remote version waiting until no connection holds a lock.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) clean: Vec<BlockId>,
    pub(crate) version: u32,
    pub(crate) size: u64,
}

/// What a prefetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefetchReport {
    /// Distinct blocks of the database (now all cached).
    pub blocks: u64,
    /// Bytes fetched from the store (0 when everything was cached already).
    pub bytes_fetched: u64,
}

/// Sequential-read detection for readahead.
#[derive(Debug, Default)]
struct Readahead {
    next_offset: u64,
    window: u32,
}

/// One database (shared by all its connections and by container operations).
pub(crate) struct Database {
    pub(crate) alias: String,
    pub(crate) name: String,
    block_size: u32,
    store: ContainerStore,
    cache: Arc<BlockCache>,
    /// The container's sealer when it is secure: blocks are sealed in the cache as in the bucket.
    sealer: Option<Arc<Sealer>>,
    pub(crate) content: Mutex<Content>,
    pub(crate) incoming: Mutex<Option<Incoming>>,
    pub(crate) locks: Mutex<FileLocks>,
    pub(crate) shm: Mutex<Shm>,
    readahead: Mutex<Readahead>,
    /// Open SQLite file handles on the main database file.
    pub(crate) open_handles: Mutex<u32>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("alias", &self.alias).field("name", &self.name).finish()
    }
}

impl Database {
    pub(crate) fn new(
        alias: &str,
        name: &str,
        block_size: u32,
        store: ContainerStore,
        cache: Arc<BlockCache>,
        sealer: Option<Arc<Sealer>>,
        content: Content,
    ) -> Database {
        Database {
            alias: alias.to_string(),
            name: name.to_string(),
            block_size,
            store,
            cache,
            sealer,
            content: Mutex::new(content),
            incoming: Mutex::new(None),
            locks: Mutex::new(FileLocks::default()),
            shm: Mutex::new(Shm::default()),
            readahead: Mutex::new(Readahead::default()),
            open_handles: Mutex::new(0),
        }
    }

    /// The local directory holding this database's journal, WAL and placeholder files.
    pub(crate) fn local_path(&self) -> PathBuf {
        self.cache.dir().join(&self.alias).join(&self.name)
    }

    /// The image size in bytes.
    pub(crate) fn size(&self) -> u64 {
        lock(&self.content).size
    }

    /// The current content generation.
    pub(crate) fn generation(&self) -> u64 {
        lock(&self.content).generation
    }

    fn key(&self, index: u32) -> DirtyKey {
        DirtyKey { alias: self.alias.clone(), db: self.name.clone(), index }
    }

    fn fetcher<'a>(&'a self, id: BlockId) -> impl FnMut(&[Range<u64>]) -> VfsResult<Vec<Bytes>> + 'a {
        let store = self.store.clone();
        move |ranges: &[Range<u64>]| {
            let object = id.object_name();
            let ranges = ranges.to_vec();
            let store = store.clone();
            block_on(async move { store.get_ranges(&object, &ranges).await })
        }
    }

    fn readahead_for(&self, offset: u64, len: usize) -> u32 {
        let mut ra = lock(&self.readahead);
        if offset == ra.next_offset && offset != 0 {
            ra.window = (ra.window.max(len as u32) * 2).min(MAX_READAHEAD);
        } else {
            ra.window = 0;
        }
        ra.next_offset = offset + len as u64;
        ra.window
    }

    /// Reads `buf.len()` bytes at `offset`. Returns the number of bytes that lie inside the image; the rest of
    /// `buf` is zero-filled (SQLite's short read).
    ///
    /// Errors: a block that cannot be fetched (after the store's retries), local I/O.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        loop {
            let (size, clean_ids, epoch) = {
                let c = lock(&self.content);
                let first = (offset / self.block_size as u64) as usize;
                let last = ((offset + buf.len() as u64).max(1) - 1) / self.block_size as u64;
                let ids: Vec<Option<BlockId>> = (first..=last as usize).map(|i| c.clean.get(i).copied()).collect();
                (c.size, ids, c.promotion_epoch)
            };
            if epoch % 2 == 1 {
                // An upload is moving this image's blocks from dirty to clean slots: wait for the new list.
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            let valid = self.read_pieces(offset, buf, size, &clean_ids)?;
            if lock(&self.content).promotion_epoch == epoch {
                return Ok(valid);
            }
        }
    }

    /// One attempt of [`read`](Self::read) with the image's size and clean block ids taken together.
    fn read_pieces(&self, offset: u64, buf: &mut [u8], size: u64, clean_ids: &[Option<BlockId>]) -> VfsResult<usize> {
        let valid = if offset >= size { 0 } else { (size - offset).min(buf.len() as u64) as usize };
        buf[valid..].fill(0);
        let readahead = self.readahead_for(offset, buf.len());
        let bs = self.block_size as u64;
        let mut done = 0usize;
        let mut k = 0usize;
        while done < valid {
            let pos = offset + done as u64;
            let index = (pos / bs) as u32;
            let within = (pos % bs) as u32;
            let n = ((bs - within as u64) as usize).min(valid - done);
            let piece = &mut buf[done..done + n];
            if let Some(slot) = self.cache.dirty_slot(&self.key(index)) {
                self.cache.read_slot(slot, within, piece, self.seal())?;
            } else if let Some(Some(id)) = clean_ids.get(k) {
                let mut fetch = self.fetcher(*id);
                self.cache.read_clean(&self.alias, id, within, piece, readahead, &mut fetch, self.seal())?;
            } else {
                piece.fill(0);
            }
            done += n;
            k += 1;
        }
        Ok(valid)
    }

    /// Starts an upload's promotion of this image's dirty blocks (see [`Promotion`]); it ends when the value
    /// is dropped, after [`mark_uploaded`](Self::mark_uploaded).
    pub(crate) fn begin_promotion(&self) -> Promotion<'_> {
        lock(&self.content).promotion_epoch += 1;
        Promotion { db: self }
    }

    /// Writes `data` at `offset`, copying each touched block into a dirty slot first (fetching what the cache
    /// lacks of it). Errors: a block that cannot be fetched, local I/O.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> VfsResult<()> {
        let bs = self.block_size as u64;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let index = (pos / bs) as u32;
            let within = (pos % bs) as u32;
            let n = ((bs - within as u64) as usize).min(data.len() - done);
            let slot = self.dirty_slot_for(index)?;
            self.cache.write_slot(slot, within, &data[done..done + n], self.seal())?;
            done += n;
        }
        let mut c = lock(&self.content);
        c.size = c.size.max(offset + data.len() as u64);
        c.dirty = true;
        Ok(())
    }

    fn dirty_slot_for(&self, index: u32) -> VfsResult<u32> {
        let key = self.key(index);
        if let Some(slot) = self.cache.dirty_slot(&key) {
            return Ok(slot);
        }
        let base = lock(&self.content).clean.get(index as usize).copied();
        match base {
            Some(id) => {
                let mut block = vec![0u8; self.block_size as usize];
                let mut fetch = self.fetcher(id);
                self.cache.read_clean(&self.alias, &id, 0, &mut block, 0, &mut fetch, self.seal())?;
                self.cache.create_dirty(&key, Some(&block), self.seal())
            }
            None => self.cache.create_dirty(&key, None, self.seal()),
        }
    }

    /// Sets the image size (SQLite's truncate). Dirty blocks wholly beyond it are freed.
    pub(crate) fn truncate(&self, size: u64) -> VfsResult<()> {
        let bs = self.block_size as u64;
        let keep = size.div_ceil(bs) as u32;
        self.cache.discard_dirty_from(&self.alias, &self.name, keep)?;
        let mut c = lock(&self.content);
        if c.size != size {
            c.size = size;
            c.dirty = true;
        }
        Ok(())
    }

    /// Makes local writes durable: the cache's slots and index, and this database's size and base.
    pub(crate) fn sync(&self) -> VfsResult<()> {
        self.cache.sync()?;
        let c = lock(&self.content).clone();
        if c.dirty {
            let row = LocalDbRow { name: self.name.clone(), size: c.size, base_version: c.base_version };
            self.cache.index().put_local_db(&self.alias, &row)?;
        }
        Ok(())
    }

    /// True when no connection holds a lock, so the image may be replaced underneath them.
    pub(crate) fn quiescent(&self) -> bool {
        let locks = lock(&self.locks);
        let shm = lock(&self.shm);
        if shm.is_mapped() { shm.idle() && !locks.reserved() } else { locks.idle() }
    }

    /// True when the WAL holds frames not yet checkpointed into the blocks.
    pub(crate) fn wal_has_changes(&self) -> bool {
        match lock(&self.shm).wal_frames() {
            Some((max_frame, backfilled)) => max_frame > backfilled,
            None => {
                // No WAL-index in memory: a non-empty WAL file means changes a connection has not recovered yet.
                let wal = wal_path(&self.local_path());
                std::fs::metadata(wal).map(|m| m.len() > 0).unwrap_or(false)
            }
        }
    }

    /// True when the database has local changes (dirty blocks, a new size, or WAL frames).
    pub(crate) fn has_local_changes(&self) -> bool {
        lock(&self.content).dirty || self.wal_has_changes()
    }

    /// Installs a newer remote version when the database is clean and quiescent; otherwise keeps it for later
    /// (clean but busy) or drops it (local changes win until upload or revert). Returns true when installed.
    pub(crate) fn offer(&self, incoming: Incoming) -> VfsResult<bool> {
        if self.has_local_changes() {
            return Ok(false);
        }
        *lock(&self.incoming) = Some(incoming);
        self.apply_incoming()
    }

    /// Installs a waiting remote version if no connection holds a lock. Called after every unlock.
    pub(crate) fn apply_incoming(&self) -> VfsResult<bool> {
        if lock(&self.incoming).is_none() || !self.quiescent() {
            return Ok(false);
        }
        let Some(next) = lock(&self.incoming).take() else { return Ok(false) };
        self.replace_content(next.clean, next.version, next.size)?;
        Ok(true)
    }

    /// Replaces the image with `clean` (dropping local changes) and makes every connection drop its page cache.
    pub(crate) fn replace_content(&self, clean: Vec<BlockId>, version: u32, size: u64) -> VfsResult<()> {
        self.cache.discard_dirty(&self.alias, &self.name)?;
        self.cache.index().delete_local_db(&self.alias, &self.name)?;
        {
            let mut c = lock(&self.content);
            c.clean = clean;
            c.base_version = version;
            c.size = size;
            c.dirty = false;
            c.generation += 1;
        }
        let mut shm = lock(&self.shm);
        shm.invalidate_header();
        drop(shm);
        let wal = wal_path(&self.local_path());
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&wal) {
            f.set_len(0).map_err(|e| VfsError::io("truncate", &wal, e))?;
        }
        Ok(())
    }

    /// After an upload: the image is now exactly `clean` at `version`; dirty slots became clean ones.
    pub(crate) fn mark_uploaded(&self, clean: Vec<BlockId>, version: u32) -> VfsResult<()> {
        self.cache.index().delete_local_db(&self.alias, &self.name)?;
        let mut c = lock(&self.content);
        c.clean = clean;
        c.base_version = version;
        c.dirty = false;
        Ok(())
    }

    /// The complete bytes of block `index` of the local image (dirty, clean or zeros), with bytes beyond the
    /// image size zeroed as CBS stores them.
    pub(crate) fn block_bytes(&self, index: u32) -> VfsResult<Vec<u8>> {
        let bs = self.block_size as u64;
        let mut block = vec![0u8; bs as usize];
        let start = index as u64 * bs;
        let size = self.size();
        let valid = size.saturating_sub(start).min(bs) as usize;
        if let Some(slot) = self.cache.dirty_slot(&self.key(index)) {
            self.cache.read_slot(slot, 0, &mut block, self.seal())?;
        } else if let Some(id) = lock(&self.content).clean.get(index as usize).copied() {
            let mut fetch = self.fetcher(id);
            self.cache.read_clean(&self.alias, &id, 0, &mut block, 0, &mut fetch, self.seal())?;
        }
        block[valid..].fill(0);
        Ok(block)
    }

    /// Fetches every block of the image the cache lacks, `nrequest` blocks at a time, reporting progress.
    /// Errors: the first fetch error (blocks fetched before it stay cached).
    pub(crate) fn prefetch(
        &self,
        nrequest: usize,
        control: &JobControl,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> VfsResult<PrefetchReport> {
        let ids = lock(&self.content).clean.clone();
        let dirty: std::collections::HashSet<u32> = self.dirty_indexes().into_iter().collect();
        let mut todo: Vec<BlockId> =
            ids.iter().enumerate().filter(|(i, _)| !dirty.contains(&(*i as u32))).map(|(_, id)| *id).collect();
        todo.sort_unstable();
        todo.dedup();
        let bs = self.block_size as u64;
        let total = todo.len() as u64 * bs;
        control.set_total(total);
        let before = self.cache.stats().bytes_fetched;
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<VfsError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..nrequest.clamp(1, todo.len().max(1)) {
                scope.spawn(|| {
                    let mut block = vec![0u8; bs as usize];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= todo.len() || lock(&failure).is_some() {
                            break;
                        }
                        if let Err(e) = control.check(&format!("prefetch of {}/{}", self.alias, self.name)) {
                            lock(&failure).get_or_insert(e);
                            break;
                        }
                        let id = todo[i];
                        let mut fetch = self.fetcher(id);
                        match self.cache.read_clean(&self.alias, &id, 0, &mut block, 0, &mut fetch, self.seal()) {
                            Ok(()) => {
                                progress(control.advance(bs));
                            }
                            Err(e) => {
                                lock(&failure).get_or_insert(e);
                                break;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = lock(&failure).take() {
            return Err(e);
        }
        let fetched = self.cache.stats().bytes_fetched - before;
        Ok(PrefetchReport { blocks: todo.len() as u64, bytes_fetched: fetched })
    }

    /// Per block of the image: index, the clean block id it is based on, cached?, dirty?
    pub(crate) fn block_states(&self) -> Vec<(u32, Option<BlockId>, bool, bool)> {
        let (clean, size) = {
            let c = lock(&self.content);
            (c.clean.clone(), c.size)
        };
        let dirty: std::collections::HashSet<u32> = self.dirty_indexes().into_iter().collect();
        let n = size.div_ceil(self.block_size as u64) as u32;
        (0..n)
            .map(|i| {
                let id = clean.get(i as usize).copied();
                let is_dirty = dirty.contains(&i);
                let cached = is_dirty || id.is_some_and(|id| self.cache.has_clean(&id));
                (i, id, cached, is_dirty)
            })
            .collect()
    }

    /// Blocks of the image present in the cache (dirty ones included).
    pub(crate) fn cached_blocks(&self) -> u64 {
        self.block_states().iter().filter(|b| b.2).count() as u64
    }

    /// The dirty block indexes.
    pub(crate) fn dirty_indexes(&self) -> Vec<u32> {
        self.cache.dirty_blocks(&self.alias, &self.name).into_iter().map(|(i, _)| i).collect()
    }

    /// The container's sealer, when it is secure.
    pub(crate) fn seal(&self) -> Option<&Sealer> {
        self.sealer.as_deref()
    }

    /// The cache.
    pub(crate) fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }
}

/// The WAL file of a database whose local path is `db`.
pub(crate) fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}
