//! SQLite's file locks and WAL-index (shared memory) for one database, kept in process.
//!
//! A cache directory is owned by one process, so every connection to a bcv database lives in this process and
//! the locks need no OS help. The rules are SQLite's own (`NONE < SHARED < RESERVED < PENDING < EXCLUSIVE`;
//! eight WAL-index lock slots, each shared or exclusive). One extra holder exists: an upload, which takes the
//! write locks so no transaction changes the blocks it is sending.

use std::sync::atomic::{AtomicU64, Ordering};

/// SQLite lock levels (`SQLITE_LOCK_*`).
pub(crate) const NONE: i32 = 0;
pub(crate) const SHARED: i32 = 1;
pub(crate) const RESERVED: i32 = 2;
pub(crate) const PENDING: i32 = 3;
pub(crate) const EXCLUSIVE: i32 = 4;

/// Number of WAL-index lock slots (`SQLITE_SHM_NLOCK`).
pub(crate) const SHM_NLOCK: usize = 8;

/// The WAL-index slot writers hold (`WAL_WRITE_LOCK`).
pub(crate) const SHM_WRITE_SLOT: usize = 0;

static NEXT_HOLDER: AtomicU64 = AtomicU64::new(1);

/// A fresh holder id for a file handle or an upload.
pub(crate) fn new_holder() -> u64 {
    NEXT_HOLDER.fetch_add(1, Ordering::Relaxed)
}

/// Why a lock request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// The main-file lock table of one database.
#[derive(Debug, Default)]
pub(crate) struct FileLocks {
    shared: u32,
    reserved: Option<u64>,
    pending: Option<u64>,
    exclusive: Option<u64>,
}

impl FileLocks {
    /// Raises `holder` from `current` to `wanted`; on `Busy` the holder's level is returned in the `Err` side's
    /// companion (`current` may have become `PENDING`).
    pub(crate) fn lock(&mut self, holder: u64, current: &mut i32, wanted: i32) -> Result<(), Busy> {
        if *current >= wanted {
            return Ok(());
        }
        match wanted {
            SHARED => {
                if self.pending.is_some_and(|h| h != holder) || self.exclusive.is_some_and(|h| h != holder) {
                    return Err(Busy);
                }
                self.shared += 1;
                *current = SHARED;
                Ok(())
            }
            RESERVED => {
                if self.reserved.is_some_and(|h| h != holder) || self.exclusive.is_some_and(|h| h != holder) {
                    return Err(Busy);
                }
                self.reserved = Some(holder);
                *current = RESERVED;
                Ok(())
            }
            _ => {
                // EXCLUSIVE (through PENDING). Another writer blocks us outright.
                if self.exclusive.is_some_and(|h| h != holder)
                    || self.pending.is_some_and(|h| h != holder)
                    || self.reserved.is_some_and(|h| h != holder)
                {
                    return Err(Busy);
                }
                self.pending = Some(holder);
                let others = self.shared - u32::from(*current >= SHARED);
                if others > 0 {
                    *current = PENDING;
                    return Err(Busy);
                }
                self.exclusive = Some(holder);
                *current = EXCLUSIVE;
                Ok(())
            }
        }
    }

    /// Lowers `holder` to `wanted` (`SHARED` or `NONE`).
    pub(crate) fn unlock(&mut self, holder: u64, current: &mut i32, wanted: i32) {
        if *current > SHARED && wanted <= SHARED {
            for slot in [&mut self.reserved, &mut self.pending, &mut self.exclusive] {
                if *slot == Some(holder) {
                    *slot = None;
                }
            }
        }
        if wanted == NONE && *current >= SHARED {
            self.shared = self.shared.saturating_sub(1);
        }
        *current = (*current).min(wanted);
    }

    /// True when some holder is at `RESERVED` or above.
    pub(crate) fn reserved(&self) -> bool {
        self.reserved.is_some() || self.pending.is_some() || self.exclusive.is_some()
    }

    /// True when no holder holds anything.
    pub(crate) fn idle(&self) -> bool {
        self.shared == 0 && !self.reserved()
    }

    /// Takes the write lock for an upload (RESERVED without SHARED). Errors: a writer holds it.
    pub(crate) fn take_for_upload(&mut self, holder: u64) -> Result<(), Busy> {
        if self.reserved() {
            return Err(Busy);
        }
        self.reserved = Some(holder);
        Ok(())
    }

    /// Releases the upload's write lock.
    pub(crate) fn release_upload(&mut self, holder: u64) {
        if self.reserved == Some(holder) {
            self.reserved = None;
        }
    }
}

/// Shared memory (WAL-index) of one database plus its lock slots.
#[derive(Debug, Default)]
pub(crate) struct Shm {
    /// Regions, allocated as u64 words so SQLite gets 8-byte aligned memory. A region never moves once made.
    regions: Vec<Box<[u64]>>,
    region_size: usize,
    shared: [u32; SHM_NLOCK],
    exclusive: [Option<u64>; SHM_NLOCK],
    /// Handles that mapped the shared memory.
    pub(crate) users: u32,
}

/// What one file handle holds of the WAL-index locks.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShmHold {
    shared: u16,
    exclusive: u16,
}

impl Shm {
    /// Returns region `i` of `size` bytes, allocating it (and any before it) when `extend`; `None` when it does
    /// not exist and `extend` is false.
    pub(crate) fn map(&mut self, i: usize, size: usize, extend: bool) -> Option<*mut u8> {
        if self.region_size == 0 {
            self.region_size = size;
        }
        if i >= self.regions.len() {
            if !extend {
                return None;
            }
            while self.regions.len() <= i {
                self.regions.push(vec![0u64; self.region_size.div_ceil(8)].into_boxed_slice());
            }
        }
        Some(self.regions[i].as_mut_ptr().cast::<u8>())
    }

    /// Applies `xShmLock(offset, n, flags)` for `holder`.
    pub(crate) fn lock(
        &mut self,
        holder: u64,
        hold: &mut ShmHold,
        offset: usize,
        n: usize,
        exclusive: bool,
    ) -> Result<(), Busy> {
        let range = offset..(offset + n).min(SHM_NLOCK);
        for i in range.clone() {
            let mine_shared = hold.shared & (1 << i) != 0;
            let mine_excl = hold.exclusive & (1 << i) != 0;
            if self.exclusive[i].is_some_and(|h| h != holder) {
                return Err(Busy);
            }
            if exclusive && !mine_excl && self.shared[i] - u32::from(mine_shared) > 0 {
                return Err(Busy);
            }
        }
        for i in range {
            if exclusive {
                if hold.exclusive & (1 << i) == 0 {
                    self.exclusive[i] = Some(holder);
                    hold.exclusive |= 1 << i;
                }
            } else if hold.shared & (1 << i) == 0 {
                self.shared[i] += 1;
                hold.shared |= 1 << i;
            }
        }
        Ok(())
    }

    /// Releases slots `offset..offset+n` held by `holder`.
    pub(crate) fn unlock(&mut self, holder: u64, hold: &mut ShmHold, offset: usize, n: usize) {
        for i in offset..(offset + n).min(SHM_NLOCK) {
            if hold.exclusive & (1 << i) != 0 && self.exclusive[i] == Some(holder) {
                self.exclusive[i] = None;
            }
            if hold.shared & (1 << i) != 0 {
                self.shared[i] = self.shared[i].saturating_sub(1);
            }
            hold.exclusive &= !(1 << i);
            hold.shared &= !(1 << i);
        }
    }

    /// True when no slot is held by anyone.
    pub(crate) fn idle(&self) -> bool {
        self.shared.iter().all(|&c| c == 0) && self.exclusive.iter().all(Option::is_none)
    }

    /// True once any handle mapped region 0.
    pub(crate) fn is_mapped(&self) -> bool {
        !self.regions.is_empty()
    }

    /// Frees the memory once the last user unmapped it.
    pub(crate) fn release_memory(&mut self) {
        self.regions.clear();
        self.region_size = 0;
    }

    /// Invalidates the WAL-index header so the next reader rebuilds it from the WAL file and drops its page
    /// cache: how connections learn that the database changed underneath them (after a poll or a revert).
    pub(crate) fn invalidate_header(&mut self) {
        if let Some(r0) = self.regions.first_mut() {
            // Both copies of the 48-byte WalIndexHdr.
            for w in r0.iter_mut().take(96 / 8) {
                *w = 0;
            }
        }
    }

    /// `(mxFrame, nBackfill)` from the WAL-index, when it is initialised: frames in the WAL and frames already
    /// copied back into the database. `mxFrame > nBackfill` means the WAL holds changes not yet in the blocks.
    pub(crate) fn wal_frames(&self) -> Option<(u32, u32)> {
        let r0 = self.regions.first()?;
        let bytes = |off: usize| -> u32 {
            let w = r0[off / 8].to_ne_bytes();
            let i = off % 8;
            u32::from_ne_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]])
        };
        // WalIndexHdr: iVersion u32 @0, unused @4, iChange @8, isInit u8 @12 ..., mxFrame u32 @16.
        let is_init = r0[12 / 8].to_ne_bytes()[12 % 8];
        if is_init == 0 {
            return None;
        }
        // WalCkptInfo follows the two header copies: nBackfill u32 @96.
        Some((bytes(16), bytes(96)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_waits_for_readers_then_excludes_them() {
        let mut t = FileLocks::default();
        let (a, b) = (1, 2);
        let (mut la, mut lb) = (NONE, NONE);
        t.lock(a, &mut la, SHARED).unwrap();
        t.lock(b, &mut lb, SHARED).unwrap();
        t.lock(a, &mut la, RESERVED).unwrap();
        assert_eq!(t.lock(b, &mut lb, RESERVED), Err(Busy), "one reserved holder at a time");
        assert_eq!(t.lock(a, &mut la, EXCLUSIVE), Err(Busy), "b still reads");
        assert_eq!(la, PENDING);
        t.unlock(b, &mut lb, NONE);
        assert_eq!(t.lock(b, &mut lb, SHARED), Err(Busy), "pending blocks new readers");
        t.lock(a, &mut la, EXCLUSIVE).unwrap();
        t.unlock(a, &mut la, NONE);
        assert!(t.idle());
    }

    #[test]
    fn upload_excludes_writers_not_readers() {
        let mut t = FileLocks::default();
        let mut l = NONE;
        t.take_for_upload(99).unwrap();
        t.lock(1, &mut l, SHARED).unwrap();
        assert_eq!(t.lock(1, &mut l, RESERVED), Err(Busy));
        t.release_upload(99);
        t.lock(1, &mut l, RESERVED).unwrap();
        assert_eq!(t.take_for_upload(99), Err(Busy));
    }

    #[test]
    fn shm_slots_follow_sqlite_rules() {
        let mut s = Shm::default();
        let (mut ha, mut hb) = (ShmHold::default(), ShmHold::default());
        s.lock(1, &mut ha, 3, 1, false).unwrap();
        s.lock(2, &mut hb, 3, 1, false).unwrap();
        assert_eq!(s.lock(2, &mut hb, 3, 1, true), Err(Busy), "a reader blocks exclusive");
        s.unlock(1, &mut ha, 3, 1);
        s.lock(2, &mut hb, 3, 1, true).unwrap();
        assert_eq!(s.lock(1, &mut ha, 3, 1, false), Err(Busy));
        s.unlock(2, &mut hb, 0, SHM_NLOCK);
        assert!(s.idle());
    }
}
