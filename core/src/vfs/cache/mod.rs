//! The local block cache: one directory owned by one process, holding block slots of one size in
//! `blocks.bcv`, with their metadata in `index.db`.
//!
//! * A **clean** slot caches (part of) an immutable block object, keyed by its block id. It is filled lazily in
//!   chunks of [`CHUNK_SIZE`] bytes, fetched with ranged GETs, and tracked by a bitmap. Clean slots are evicted
//!   least-recently-used first once the cache holds `capacity` bytes.
//! * A **dirty** slot holds a locally written block of one database (alias, database, block index). Dirty slots
//!   are never evicted: they are pinned until an upload turns them into clean slots under their new block id
//!   (no copy), or a revert frees them.
//!
//! Ordering rules keep the cache consistent across a killed process or a power cut: a slot that changes owner
//! is recorded in the index *before* its bytes are overwritten; chunk bits are recorded only after the bytes
//! are written and synced ([`BlockCache::sync`]).

mod index;
mod lock;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use index::SlotRow;
pub(crate) use index::{ContainerRow, Index, LocalDbRow, PLATFORM_VFS, PendingUploadRow};
use lock::DirLock;

use crate::vfs::container::BlockId;
use crate::vfs::crypto::{Domain, SEAL_OVERHEAD, Sealer};
use crate::vfs::daemon::DaemonClient;
use crate::vfs::{VfsError, VfsResult};

/// The unit in which clean slots are filled: reads fetch whole chunks of a block object, never whole blocks.
pub const CHUNK_SIZE: u32 = 16 * 1024;

/// The default cache size limit: 1 GiB, as in CBS.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// The name of the slot file inside a cache directory.
const DATA_FILE: &str = "blocks.bcv";

/// Pending metadata updates after which the index is written even without a sync.
const FLUSH_EVERY: usize = 256;

/// A database block held locally: (alias, database name, block index).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirtyKey {
    pub(crate) alias: String,
    pub(crate) db: String,
    pub(crate) index: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Free,
    Clean(BlockId),
    Dirty(DirtyKey),
}

#[derive(Debug)]
struct Slot {
    owner: Owner,
    /// Chunks holding valid bytes (clean slots; dirty slots are always complete).
    present: Vec<u64>,
    /// Readers currently copying out of this slot: it may not change owner.
    pins: u32,
    /// LRU tick of the last use.
    used: u64,
    /// The index holds a row for this slot whose bytes may be trusted.
    persisted: bool,
}

struct State {
    slots: Vec<Slot>,
    clean: HashMap<BlockId, u32>,
    dirty: HashMap<DirtyKey, u32>,
    tick: u64,
    /// Slots whose metadata changed since the last index write.
    pending: Vec<u32>,
    stats: CacheStats,
}

/// Counters of cache activity, for status displays and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Reads served entirely from the cache.
    pub hits: u64,
    /// Reads that needed at least one fetch.
    pub misses: u64,
    /// Bytes fetched from the store into the cache.
    pub bytes_fetched: u64,
    /// Clean slots evicted to make room.
    pub evictions: u64,
}

/// Occupancy of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// Slots holding (part of) a clean block.
    pub clean_slots: u64,
    /// Slots holding a locally written block.
    pub dirty_slots: u64,
    /// The slot size (the containers' block size).
    pub block_size: u64,
    /// The configured limit in bytes.
    pub capacity: u64,
}

/// The block cache of one directory. Shared (`Arc`) by the VFS, its containers and databases.
pub(crate) struct BlockCache {
    dir: PathBuf,
    capacity: u64,
    block_size: OnceLock<u32>,
    /// Bytes between slot starts: the block size plus room for sealing every chunk (see
    /// [`BlockCache::configure_block_size`]).
    stride: OnceLock<u64>,
    data: File,
    data_path: PathBuf,
    index: Mutex<Index>,
    state: Mutex<State>,
    /// The directory lock (absent for a client of a daemon, which owns the directory).
    _lock: Option<DirLock>,
    /// Set when this cache is a read-only client of the daemon that owns the directory.
    client: Option<Arc<DaemonClient>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("dir", &self.dir).field("capacity", &self.capacity).finish()
    }
}

/// Fetches byte ranges of one block object; the cache calls it with the chunks it lacks.
pub(crate) type Fetch<'a> = dyn FnMut(&[Range<u64>]) -> VfsResult<Vec<Bytes>> + 'a;

impl BlockCache {
    /// Opens the cache directory `dir` (created if missing) with a size limit of `capacity` bytes.
    ///
    /// Errors: [`VfsError::CacheBusy`] when another process (or another cache in this one) owns it; I/O and
    /// index errors naming the file.
    pub(crate) fn open(dir: &Path, capacity: u64) -> VfsResult<BlockCache> {
        std::fs::create_dir_all(dir).map_err(|e| VfsError::io("create directory", dir, e))?;
        let lock = DirLock::acquire(dir)?;
        let index = Index::open(dir)?;
        let data_path = dir.join(DATA_FILE);
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| VfsError::io("open", &data_path, e))?;
        let block_size = OnceLock::new();
        let stride = OnceLock::new();
        if let Some(bs) = index.config("block_size")? {
            let _ = block_size.set(bs as u32);
            // Caches made before secure containers existed have no recorded stride: slots are packed.
            let _ = stride.set(index.config("slot_stride")?.map(|s| s as u64).unwrap_or(bs as u64));
        }
        let mut state = State {
            slots: Vec::new(),
            clean: HashMap::new(),
            dirty: HashMap::new(),
            tick: 0,
            pending: Vec::new(),
            stats: CacheStats::default(),
        };
        for row in index.slots()? {
            let n = row.n as usize;
            while state.slots.len() <= n {
                state.slots.push(Slot { owner: Owner::Free, present: Vec::new(), pins: 0, used: 0, persisted: false });
            }
            let owner = match (&row.block_id, &row.dirty) {
                (_, Some((alias, db, index))) => {
                    Owner::Dirty(DirtyKey { alias: alias.clone(), db: db.clone(), index: *index })
                }
                (Some(id), None) => match BlockId::from_bytes(id) {
                    Ok(id) => Owner::Clean(id),
                    Err(_) => Owner::Free,
                },
                (None, None) => Owner::Free,
            };
            match &owner {
                Owner::Clean(id) => {
                    state.clean.insert(*id, row.n);
                }
                Owner::Dirty(key) => {
                    state.dirty.insert(key.clone(), row.n);
                }
                Owner::Free => {}
            }
            state.tick = state.tick.max(row.used);
            state.slots[n] = Slot {
                owner,
                present: row.present.chunks(8).map(|c| u64::from_le_bytes(pad8(c))).collect(),
                pins: 0,
                used: row.used,
                persisted: true,
            };
        }
        Ok(BlockCache {
            dir: dir.to_path_buf(),
            capacity,
            block_size,
            stride,
            data,
            data_path,
            index: Mutex::new(index),
            state: Mutex::new(state),
            _lock: Some(lock),
            client: None,
        })
    }

    /// A cache that reads the slots of the daemon owning `shared_dir` (read-only) and keeps its own local files
    /// (placeholders, an in-memory index) in `local_dir`. Blocks are fetched and pinned by the daemon.
    ///
    /// Errors: I/O opening the daemon's slot file.
    pub(crate) fn open_client(shared_dir: &Path, local_dir: &Path, client: Arc<DaemonClient>) -> VfsResult<BlockCache> {
        std::fs::create_dir_all(local_dir).map_err(|e| VfsError::io("create directory", local_dir, e))?;
        let data_path = shared_dir.join(DATA_FILE);
        let data = OpenOptions::new().read(true).open(&data_path).map_err(|e| VfsError::io("open", &data_path, e))?;
        Ok(BlockCache {
            dir: local_dir.to_path_buf(),
            capacity: client.capacity(),
            block_size: OnceLock::new(),
            stride: OnceLock::new(),
            data,
            data_path,
            index: Mutex::new(Index::open_memory()?),
            state: Mutex::new(State {
                slots: Vec::new(),
                clean: HashMap::new(),
                dirty: HashMap::new(),
                tick: 0,
                pending: Vec::new(),
                stats: CacheStats::default(),
            }),
            _lock: None,
            client: Some(client),
        })
    }

    /// The daemon this cache is a client of, if any.
    pub(crate) fn client(&self) -> Option<&Arc<DaemonClient>> {
        self.client.as_ref()
    }

    /// Fails with [`VfsError::ReadOnly`] when this cache is a daemon's client (it cannot hold local changes).
    pub(crate) fn check_writable(&self, what: &str) -> VfsResult<()> {
        match &self.client {
            Some(c) => Err(VfsError::ReadOnly { what: what.to_string(), dir: c.dir().to_path_buf() }),
            None => Ok(()),
        }
    }

    /// Sets the geometry a daemon reported (client caches only; the first report wins).
    pub(crate) fn set_geometry(&self, block_size: u32, stride: u64) {
        let _ = self.block_size.set(block_size);
        let _ = self.stride.set(stride);
    }

    /// Bytes between slot starts (the daemon tells its clients).
    pub(crate) fn slot_stride(&self) -> VfsResult<u64> {
        self.stride()
    }

    /// Daemon side: gives `id` a slot, pinned until [`unpin`](Self::unpin), filling `chunks` (of the plaintext
    /// chunk grid; sealed blocks are fetched sealed) through `fetch`. `pinned` is the slot when the caller
    /// already holds a pin on it. Returns the slot.
    ///
    /// Errors: the fetch's; local I/O.
    pub(crate) fn pin_and_fill(
        &self,
        id: &BlockId,
        pinned: Option<u32>,
        chunks: &[u32],
        sealed: bool,
        fetch: &mut Fetch<'_>,
    ) -> VfsResult<u32> {
        let bs = self.block_size()?;
        let cs = Self::chunk_size(bs);
        let nchunks = bs / cs;
        let (slot, missing) = {
            let mut st = lock(&self.state);
            let slot = match (pinned, st.clean.get(id)) {
                (Some(p), Some(&n)) if p == n => n,
                (_, Some(&n)) => {
                    st.slots[n as usize].pins += 1;
                    n
                }
                (_, None) => {
                    let n = self.allocate(&mut st, Owner::Clean(*id))?;
                    st.slots[n as usize].pins += 1;
                    n
                }
            };
            let s = &st.slots[slot as usize];
            let missing: Vec<u32> = chunks.iter().copied().filter(|&c| c < nchunks && !bit(&s.present, c)).collect();
            if missing.is_empty() {
                st.stats.hits += 1;
            } else {
                st.stats.misses += 1;
            }
            (slot, missing)
        };
        let seal_size = if sealed { SEAL_OVERHEAD as u32 } else { 0 };
        self.fill(slot, bs, cs, seal_size, &missing, fetch)?;
        let mut st = lock(&self.state);
        st.tick += 1;
        let tick = st.tick;
        st.slots[slot as usize].used = tick;
        Ok(slot)
    }

    /// Daemon side: releases one pin taken by [`pin_and_fill`](Self::pin_and_fill).
    pub(crate) fn unpin(&self, slot: u32) {
        let mut st = lock(&self.state);
        if let Some(s) = st.slots.get_mut(slot as usize) {
            s.pins = s.pins.saturating_sub(1);
        }
    }

    /// The cache directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Locks the metadata index (for container and database records).
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Fixes the slot size at the first attach; later containers must use the same block size.
    ///
    /// A new cache spaces its slots `block size + chunks × SEAL_OVERHEAD` bytes apart, so a slot can hold a
    /// plaintext block (packed at its start) or a sealed one (each chunk followed by its overhead).
    pub(crate) fn configure_block_size(&self, block_size: u32, container: &str) -> VfsResult<()> {
        let current = *self.block_size.get_or_init(|| block_size);
        let chunks = (block_size / Self::chunk_size(block_size)) as u64;
        let stride = *self.stride.get_or_init(|| block_size as u64 + chunks * SEAL_OVERHEAD as u64);
        if current != block_size {
            return Err(VfsError::InvalidArgument(format!(
                "container {container} uses {block_size}-byte blocks, but cache directory {} holds {current}-byte \
                 blocks; use another cache directory",
                self.dir.display()
            )));
        }
        let index = self.index();
        if index.config("block_size")?.is_none() {
            index.set_config("slot_stride", stride as i64)?;
            index.set_config("block_size", block_size as i64)?;
        }
        Ok(())
    }

    /// Checks that this cache can hold sealed blocks (caches made before secure containers cannot).
    pub(crate) fn check_sealable(&self, container: &str) -> VfsResult<()> {
        let bs = self.block_size()?;
        let chunks = (bs / Self::chunk_size(bs)) as u64;
        if self.stride()? < bs as u64 + chunks * SEAL_OVERHEAD as u64 {
            return Err(VfsError::Secure {
                container: container.to_string(),
                reason: format!(
                    "cache directory {} was created by an older bcv and cannot hold encrypted blocks; use a new one",
                    self.dir.display()
                ),
            });
        }
        Ok(())
    }

    fn stride(&self) -> VfsResult<u64> {
        self.stride
            .get()
            .copied()
            .ok_or_else(|| VfsError::InvalidArgument("the cache has no block size yet (attach a container)".into()))
    }

    /// The plaintext chunk size of blocks of `block_size` bytes (sealed blocks are sealed per chunk).
    pub(crate) fn chunk_size_for(block_size: u32) -> u32 {
        Self::chunk_size(block_size)
    }

    fn block_size(&self) -> VfsResult<u32> {
        self.block_size
            .get()
            .copied()
            .ok_or_else(|| VfsError::InvalidArgument("the cache has no block size yet (attach a container)".into()))
    }

    fn chunk_size(block_size: u32) -> u32 {
        CHUNK_SIZE.min(block_size)
    }

    /// Activity counters.
    pub(crate) fn stats(&self) -> CacheStats {
        lock(&self.state).stats
    }

    /// True when clean block `id` has a slot (some or all of its chunks are cached).
    pub(crate) fn has_clean(&self, id: &BlockId) -> bool {
        lock(&self.state).clean.contains_key(id)
    }

    /// Occupancy.
    pub(crate) fn usage(&self) -> CacheUsage {
        let st = lock(&self.state);
        CacheUsage {
            clean_slots: st.clean.len() as u64,
            dirty_slots: st.dirty.len() as u64,
            block_size: self.block_size.get().copied().unwrap_or(0) as u64,
            capacity: self.capacity,
        }
    }

    /// Copies `buf.len()` bytes at `offset` of clean block `id` into `buf`, fetching the chunks the cache lacks
    /// (plus up to `readahead` further bytes of the same block) through `fetch` in coalesced ranges.
    ///
    /// Errors: the fetch's error (nothing is recorded for chunks that were not fetched), local I/O errors.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_clean(
        &self,
        alias: &str,
        id: &BlockId,
        offset: u32,
        buf: &mut [u8],
        readahead: u32,
        fetch: &mut Fetch<'_>,
        seal: Option<&Sealer>,
    ) -> VfsResult<()> {
        let bs = self.block_size()?;
        let cs = Self::chunk_size(bs);
        if let Some(client) = &self.client {
            return client.read_clean(self, alias, id, offset, buf, readahead, cs, seal);
        }
        let end = offset as u64 + buf.len() as u64;
        if end > bs as u64 {
            return Err(VfsError::InvalidArgument(format!("read {offset}+{} beyond a {bs}-byte block", buf.len())));
        }
        let first = offset / cs;
        let last = ((end.max(1) - 1) / cs as u64) as u32;
        let ra_last = ((end + readahead as u64).min(bs as u64).max(1) - 1) as u32 / cs;
        let (slot, missing) = {
            let mut st = lock(&self.state);
            let slot = match st.clean.get(id) {
                Some(&n) => n,
                None => self.allocate(&mut st, Owner::Clean(*id))?,
            };
            let s = &mut st.slots[slot as usize];
            s.pins += 1;
            let needs = (first..=last).any(|c| !bit(&s.present, c));
            let missing: Vec<u32> =
                if needs { (first..=ra_last).filter(|&c| !bit(&s.present, c)).collect() } else { Vec::new() };
            if needs {
                st.stats.misses += 1;
            } else {
                st.stats.hits += 1;
            }
            (slot, missing)
        };
        let result = self.fill_and_read(slot, bs, cs, &missing, offset, buf, fetch, seal, id);
        let mut st = lock(&self.state);
        st.tick += 1;
        let tick = st.tick;
        let s = &mut st.slots[slot as usize];
        s.pins -= 1;
        s.used = tick;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_and_read(
        &self,
        slot: u32,
        bs: u32,
        cs: u32,
        missing: &[u32],
        offset: u32,
        buf: &mut [u8],
        fetch: &mut Fetch<'_>,
        seal: Option<&Sealer>,
        id: &BlockId,
    ) -> VfsResult<()> {
        let seal_size = if seal.is_some() { SEAL_OVERHEAD as u32 } else { 0 };
        self.fill(slot, bs, cs, seal_size, missing, fetch)?;
        match seal {
            None => read_exact_at(&self.data, buf, slot as u64 * self.stride()? + offset as u64)
                .map_err(|e| self.io("read", e)),
            Some(sealer) => self.read_sealed(slot, offset, buf, sealer, &id.object_name()),
        }
    }

    /// Fetches `missing` chunks into `slot` and records them. Sealed blocks (`seal_size` > 0) are stored as in
    /// the bucket: each chunk followed by its overhead.
    fn fill(
        &self,
        slot: u32,
        bs: u32,
        cs: u32,
        seal_size: u32,
        missing: &[u32],
        fetch: &mut Fetch<'_>,
    ) -> VfsResult<()> {
        let pcs = cs as u64 + seal_size as u64;
        let object_size = (bs / cs) as u64 * pcs;
        if !missing.is_empty() {
            let mut ranges: Vec<Range<u64>> = Vec::new();
            for &c in missing {
                let start = c as u64 * pcs;
                let stop = (start + pcs).min(object_size);
                match ranges.last_mut() {
                    Some(r) if r.end == start => r.end = stop,
                    _ => ranges.push(start..stop),
                }
            }
            let parts = fetch(&ranges)?;
            let base = slot as u64 * self.stride()?;
            let mut fetched = 0u64;
            for (range, bytes) in ranges.iter().zip(parts.iter()) {
                if bytes.len() as u64 != range.end - range.start {
                    return Err(VfsError::InvalidArgument(format!(
                        "fetch returned {} bytes for range {range:?}",
                        bytes.len()
                    )));
                }
                write_all_at(&self.data, bytes, base + range.start).map_err(|e| self.io("write", e))?;
                fetched += bytes.len() as u64;
            }
            let mut st = lock(&self.state);
            st.stats.bytes_fetched += fetched;
            let s = &mut st.slots[slot as usize];
            for &c in missing {
                set_bit(&mut s.present, c);
            }
            st.pending.push(slot);
            let flush = st.pending.len() >= FLUSH_EVERY;
            drop(st);
            if flush {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Reads plaintext out of a sealed slot: opens each chunk the range touches.
    pub(crate) fn read_sealed(
        &self,
        slot: u32,
        offset: u32,
        buf: &mut [u8],
        sealer: &Sealer,
        what: &str,
    ) -> VfsResult<()> {
        let cs = sealer.chunk_size() as usize;
        let scs = sealer.sealed_chunk_size() as usize;
        let base = slot as u64 * self.stride()?;
        let mut sealed = vec![0u8; scs];
        let mut plain = vec![0u8; cs];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset as usize + done;
            let c = pos / cs;
            let within = pos % cs;
            let n = (cs - within).min(buf.len() - done);
            read_exact_at(&self.data, &mut sealed, base + (c * scs) as u64).map_err(|e| self.io("read", e))?;
            sealer.open(Domain::Block, c as u64, &sealed, &mut plain, what)?;
            buf[done..done + n].copy_from_slice(&plain[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads plaintext bytes of a (clean, unsealed) slot.
    pub(crate) fn read_plain(&self, slot: u32, offset: u32, buf: &mut [u8]) -> VfsResult<()> {
        read_exact_at(&self.data, buf, slot as u64 * self.stride()? + offset as u64).map_err(|e| self.io("read", e))
    }

    /// Seals plaintext into a sealed slot at `offset`: re-seals each chunk the range touches.
    fn write_sealed(&self, slot: u32, offset: u32, data: &[u8], sealer: &Sealer, what: &str) -> VfsResult<()> {
        let cs = sealer.chunk_size() as usize;
        let scs = sealer.sealed_chunk_size() as usize;
        let base = slot as u64 * self.stride()?;
        let mut sealed = vec![0u8; scs];
        let mut plain = vec![0u8; cs];
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset as usize + done;
            let c = pos / cs;
            let within = pos % cs;
            let n = (cs - within).min(data.len() - done);
            if n < cs {
                read_exact_at(&self.data, &mut sealed, base + (c * scs) as u64).map_err(|e| self.io("read", e))?;
                sealer.open(Domain::Block, c as u64, &sealed, &mut plain, what)?;
            }
            plain[within..within + n].copy_from_slice(&data[done..done + n]);
            sealer.seal(Domain::Block, c as u64, &plain, &mut sealed, what)?;
            write_all_at(&self.data, &sealed, base + (c * scs) as u64).map_err(|e| self.io("write", e))?;
            done += n;
        }
        Ok(())
    }

    /// The dirty slot of `key`, if the block is held locally.
    pub(crate) fn dirty_slot(&self, key: &DirtyKey) -> Option<u32> {
        lock(&self.state).dirty.get(key).copied()
    }

    /// All dirty blocks of one database: (block index, slot).
    pub(crate) fn dirty_blocks(&self, alias: &str, db: &str) -> Vec<(u32, u32)> {
        let st = lock(&self.state);
        let mut v: Vec<(u32, u32)> =
            st.dirty.iter().filter(|(k, _)| k.alias == alias && k.db == db).map(|(k, &n)| (k.index, n)).collect();
        v.sort_unstable();
        v
    }

    /// Creates the dirty slot of `key` holding `initial` (a whole block, or zeros when `None`) and records it
    /// in the index before returning. Errors: local I/O.
    /// With `seal`, the slot holds the block sealed chunk by chunk.
    pub(crate) fn create_dirty(&self, key: &DirtyKey, initial: Option<&[u8]>, seal: Option<&Sealer>) -> VfsResult<u32> {
        self.check_writable(&format!("database {}/{}", key.alias, key.db))?;
        let bs = self.block_size()?;
        let slot = {
            let mut st = lock(&self.state);
            if let Some(&n) = st.dirty.get(key) {
                return Ok(n);
            }
            let n = self.allocate(&mut st, Owner::Dirty(key.clone()))?;
            let s = &mut st.slots[n as usize];
            s.present = full_bitmap(bs / Self::chunk_size(bs));
            n
        };
        let zeros;
        let bytes = match initial {
            Some(b) => b,
            None => {
                zeros = vec![0u8; bs as usize];
                &zeros
            }
        };
        let base = slot as u64 * self.stride()?;
        match seal {
            None => write_all_at(&self.data, &bytes[..bs as usize], base).map_err(|e| self.io("write", e))?,
            Some(sealer) => {
                let what = format!("dirty block {}/{} #{}", key.alias, key.db, key.index);
                let sealed = sealer.seal_block(&bytes[..bs as usize], &what)?;
                write_all_at(&self.data, &sealed, base).map_err(|e| self.io("write", e))?;
            }
        }
        Ok(slot)
    }

    /// Reads plaintext from a (dirty) slot, opening sealed chunks with `seal`. Errors: local I/O; with `seal`,
    /// [`VfsError::Crypto`] when a chunk does not open.
    pub(crate) fn read_slot(&self, slot: u32, offset: u32, buf: &mut [u8], seal: Option<&Sealer>) -> VfsResult<()> {
        match seal {
            None => read_exact_at(&self.data, buf, slot as u64 * self.stride()? + offset as u64)
                .map_err(|e| self.io("read", e)),
            Some(sealer) => self.read_sealed(slot, offset, buf, sealer, &format!("cache slot {slot}")),
        }
    }

    /// Writes plaintext into a dirty slot, re-sealing the chunks it touches with `seal`. Errors: local I/O;
    /// with `seal`, [`VfsError::Crypto`].
    pub(crate) fn write_slot(&self, slot: u32, offset: u32, data: &[u8], seal: Option<&Sealer>) -> VfsResult<()> {
        match seal {
            None => write_all_at(&self.data, data, slot as u64 * self.stride()? + offset as u64)
                .map_err(|e| self.io("write", e)),
            Some(sealer) => self.write_sealed(slot, offset, data, sealer, &format!("cache slot {slot}")),
        }
    }

    /// Overwrites a dirty slot with a whole block in its stored form (sealed, as uploaded). Errors: local I/O.
    pub(crate) fn write_slot_raw(&self, slot: u32, bytes: &[u8]) -> VfsResult<()> {
        write_all_at(&self.data, bytes, slot as u64 * self.stride()?).map_err(|e| self.io("write", e))
    }

    /// Turns uploaded dirty blocks into clean slots under their new ids, without copying. When the id is already
    /// cached (a deduplicated block), the dirty slot is freed instead. Writes the index.
    pub(crate) fn promote(&self, promotions: &[(DirtyKey, BlockId)]) -> VfsResult<()> {
        let bs = self.block_size()?;
        {
            let mut st = lock(&self.state);
            for (key, id) in promotions {
                let Some(n) = st.dirty.remove(key) else { continue };
                if st.clean.contains_key(id) {
                    let s = &mut st.slots[n as usize];
                    s.owner = Owner::Free;
                    s.present.clear();
                } else {
                    st.clean.insert(*id, n);
                    let s = &mut st.slots[n as usize];
                    s.owner = Owner::Clean(*id);
                    s.present = full_bitmap(bs / Self::chunk_size(bs));
                }
                st.pending.push(n);
            }
        }
        self.sync()
    }

    /// Frees every dirty slot of one database (revert, delete). Writes the index.
    pub(crate) fn discard_dirty(&self, alias: &str, db: &str) -> VfsResult<()> {
        {
            let mut st = lock(&self.state);
            let keys: Vec<DirtyKey> = st.dirty.keys().filter(|k| k.alias == alias && k.db == db).cloned().collect();
            for key in keys {
                if let Some(n) = st.dirty.remove(&key) {
                    let s = &mut st.slots[n as usize];
                    s.owner = Owner::Free;
                    s.present.clear();
                    st.pending.push(n);
                }
            }
        }
        self.sync()
    }

    /// Frees dirty slots of one database at or beyond block `from` (a truncation). Writes the index.
    pub(crate) fn discard_dirty_from(&self, alias: &str, db: &str, from: u32) -> VfsResult<()> {
        let mut st = lock(&self.state);
        let keys: Vec<DirtyKey> =
            st.dirty.keys().filter(|k| k.alias == alias && k.db == db && k.index >= from).cloned().collect();
        for key in keys {
            if let Some(n) = st.dirty.remove(&key) {
                let s = &mut st.slots[n as usize];
                s.owner = Owner::Free;
                s.present.clear();
                st.pending.push(n);
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable: syncs `blocks.bcv`, then records pending slot metadata.
    pub(crate) fn sync(&self) -> VfsResult<()> {
        if self.client.is_some() {
            return Ok(());
        }
        self.data.sync_data().map_err(|e| self.io("sync", e))?;
        self.flush_index()
    }

    fn flush_index(&self) -> VfsResult<()> {
        let rows = {
            let mut st = lock(&self.state);
            if st.pending.is_empty() {
                return Ok(());
            }
            let mut pending = std::mem::take(&mut st.pending);
            pending.sort_unstable();
            pending.dedup();
            let rows: Vec<SlotRow> = pending.iter().map(|&n| row_of(n, &st.slots[n as usize])).collect();
            for &n in &pending {
                st.slots[n as usize].persisted = !matches!(st.slots[n as usize].owner, Owner::Free);
            }
            rows
        };
        self.index().write_slots(&rows)
    }

    /// Finds a slot for `owner`: a free one, a new one while under capacity, or the least recently used clean
    /// one. A reused slot's new owner is written to the index before the caller overwrites its bytes.
    fn allocate(&self, st: &mut State, owner: Owner) -> VfsResult<u32> {
        let bs = self.stride()?;
        let max_slots = (self.capacity / bs).max(1) as usize;
        let free = st.slots.iter().position(|s| s.owner == Owner::Free && s.pins == 0);
        let n = if let Some(n) = free {
            n as u32
        } else if st.slots.len() < max_slots {
            st.slots.push(Slot { owner: Owner::Free, present: Vec::new(), pins: 0, used: 0, persisted: false });
            (st.slots.len() - 1) as u32
        } else {
            let victim = st
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s.owner, Owner::Clean(_)) && s.pins == 0)
                .min_by_key(|(_, s)| s.used)
                .map(|(n, _)| n as u32);
            match victim {
                Some(n) => {
                    if let Owner::Clean(old) = st.slots[n as usize].owner {
                        st.clean.remove(&old);
                    }
                    st.stats.evictions += 1;
                    n
                }
                None => {
                    // Every slot is dirty or in use: grow past the limit rather than lose local changes.
                    tracing::warn!(dir = %self.dir.display(), "cache is full of dirty blocks; growing past its limit");
                    st.slots.push(Slot { owner: Owner::Free, present: Vec::new(), pins: 0, used: 0, persisted: false });
                    (st.slots.len() - 1) as u32
                }
            }
        };
        st.tick += 1;
        let tick = st.tick;
        let was_persisted = st.slots[n as usize].persisted;
        match &owner {
            Owner::Clean(id) => {
                st.clean.insert(*id, n);
            }
            Owner::Dirty(key) => {
                st.dirty.insert(key.clone(), n);
            }
            Owner::Free => {}
        }
        let s = &mut st.slots[n as usize];
        s.owner = owner;
        s.present.clear();
        s.used = tick;
        if was_persisted {
            // The index still says this slot holds its old content: record the change before the bytes move.
            let row = row_of(n, s);
            s.persisted = true;
            self.index().write_slots(&[row])?;
        } else {
            st.pending.push(n);
        }
        Ok(n)
    }

    fn io(&self, op: &'static str, e: std::io::Error) -> VfsError {
        VfsError::io(op, &self.data_path, e)
    }
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        if self.client.is_some() {
            // A client's directory holds only its own placeholders and journals.
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        if let Err(e) = self.sync() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the cache index on close");
        }
    }
}

fn row_of(n: u32, s: &Slot) -> SlotRow {
    let (block_id, dirty) = match &s.owner {
        Owner::Free => (None, None),
        Owner::Clean(id) => (Some(id.as_bytes().to_vec()), None),
        Owner::Dirty(k) => (None, Some((k.alias.clone(), k.db.clone(), k.index))),
    };
    SlotRow { n, block_id, dirty, present: s.present.iter().flat_map(|w| w.to_le_bytes()).collect(), used: s.used }
}

fn pad8(c: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    b
}

fn bit(map: &[u64], i: u32) -> bool {
    map.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(map: &mut Vec<u64>, i: u32) {
    let w = (i / 64) as usize;
    if map.len() <= w {
        map.resize(w + 1, 0);
    }
    map[w] |= 1 << (i % 64);
}

fn full_bitmap(chunks: u32) -> Vec<u64> {
    let mut m = Vec::new();
    for c in 0..chunks {
        set_bit(&mut m, c);
    }
    m
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    // A slot that was never written reads as zeros (the file is sparse or short).
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(unix)]
fn write_all_at(f: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, off)
}

#[cfg(windows)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = f.seek_read(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(f: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        done += f.seek_write(&buf[done..], off + done as u64)?;
    }
    Ok(())
}
