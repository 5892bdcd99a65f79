//! Multi-process mode for Swift: `Daemon` owns a cache directory and serves it over `DIR/daemon.sock`; a
//! `Vfs` created on that directory (in this process or another) becomes its read-only client by itself.
//! Adapter over `bcv_core::vfs::Daemon`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bcv_core::vfs as cv;

use crate::error::{BcvError, CloseReason};
use crate::secure::Keyring;

/// Cache activity counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
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

/// What a running daemon reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct DaemonStats {
    /// Clients connected now.
    pub clients: u64,
    /// Clients served since the start.
    pub clients_total: u64,
    /// Cache activity.
    pub cache: CacheStats,
    /// Cache occupancy.
    pub usage: CacheUsage,
}

impl From<cv::DaemonStats> for DaemonStats {
    fn from(s: cv::DaemonStats) -> DaemonStats {
        DaemonStats {
            clients: s.clients as u64,
            clients_total: s.clients_total as u64,
            cache: CacheStats {
                hits: s.cache.hits,
                misses: s.cache.misses,
                bytes_fetched: s.cache.bytes_fetched,
                evictions: s.cache.evictions,
            },
            usage: CacheUsage {
                clean_slots: s.usage.clean_slots,
                dirty_slots: s.usage.dirty_slots,
                block_size: s.usage.block_size,
                capacity: s.usage.capacity,
            },
        }
    }
}

/// A running daemon: owns a cache directory and serves it to the `Vfs`s of other processes (and of this
/// one) created on the same directory, which become its read-only clients.
///
/// Ownership: `stop()` stops serving (idempotent; connected clients' next call throws `DaemonGone`);
/// `deinit` stops it too when it is still running. Both wait for the accept thread, briefly.
#[derive(uniffi::Object)]
pub struct Daemon {
    inner: Mutex<Option<cv::Daemon>>,
    socket: PathBuf,
}

#[uniffi::export]
impl Daemon {
    /// Starts a daemon owning `cache_dir` (created if missing) with a shared size limit of `cache_size`
    /// bytes (default 1 GiB). `keys` maps container URLs to the keyrings of secure containers; a key is
    /// handed to a client only after the client proved access to that container.
    /// Errors: `CacheBusy` when another process owns the directory; `Io` binding the socket.
    #[uniffi::constructor(default(cache_size = None, keys = None))]
    pub fn start(
        cache_dir: String,
        cache_size: Option<u64>,
        keys: Option<HashMap<String, Arc<Keyring>>>,
    ) -> Result<Arc<Daemon>, BcvError> {
        let mut config = cv::DaemonConfig::new(cache_dir);
        if let Some(size) = cache_size {
            config.cache_size = size;
        }
        for (url, ring) in keys.unwrap_or_default() {
            config.keys.insert(url, ring.snapshot());
        }
        let daemon = cv::Daemon::start(config)?;
        let socket = daemon.socket_path().to_path_buf();
        Ok(Arc::new(Daemon { inner: Mutex::new(Some(daemon)), socket }))
    }

    /// The socket clients connect to (`DIR/daemon.sock`).
    pub fn socket_path(&self) -> String {
        self.socket.to_string_lossy().into_owned()
    }

    /// True until `stop()`.
    pub fn is_running(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Current figures. Errors: `Closed` after `stop()`.
    pub fn stats(&self) -> Result<DaemonStats, BcvError> {
        match self.inner.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(daemon) => Ok(daemon.stats().into()),
            None => Err(BcvError::Closed { reason: CloseReason::SelfClosed, upstream: None }),
        }
    }

    /// Stops serving: no new clients, and connected clients' next call throws `DaemonGone` (they reconnect
    /// by themselves once a daemon runs on the directory again). Idempotent. Blocks until the accept thread
    /// ended.
    pub fn stop(&self) {
        let daemon = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(daemon) = daemon {
            daemon.stop();
        }
    }
}
