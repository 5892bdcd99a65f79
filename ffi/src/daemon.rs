//! Multi-process mode: a daemon owns a cache directory and serves it over `DIR/daemon.sock` (unix only).
//!
//! A VFS created with `bcv_vfs_new` on a directory whose daemon is running becomes its client (see
//! `bcv_vfs_is_daemon_client`): it shares the daemon's cached blocks and its one size limit, and it is
//! read-only (SQLite opens its databases read-only; upload, copy and delete fail with `BCV_E_READ_ONLY`). The
//! daemon fetches and polls only when a client asks and never writes to cloud storage. When the daemon stops
//! or restarts, a client's next call fails once with `BCV_E_DAEMON_GONE`; the call after it reconnects.

use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::Mutex;

use bcv_core::vfs::{DEFAULT_CACHE_SIZE, Daemon, DaemonConfig};

use crate::container::put_opt;
use crate::error::*;
use crate::handle::{bcv_handle_t, put};
use crate::io::c_str;
use crate::secure::{bcv_key_t, keyring_of};
use crate::store::{bcv_store_options_t, default_store_options, store_options};
use crate::stream::try_status;
use crate::table::{self, Object};
use crate::vfs::{bcv_cache_stats_t, bcv_cache_usage_t, cache_stats_of, cache_usage_of};

/// The keys of one secure container the daemon may hand to its clients.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_daemon_key_t {
    /// The container URL, exactly as clients attach it.
    pub url: *const c_char,
    /// Its key ring: `key_count` keys.
    pub keys: *const bcv_key_t,
    /// Number of entries at `keys`.
    pub key_count: usize,
    /// The id of the key sealing new data.
    pub current_key: u32,
}

/// Configuration of a daemon. Initialise it with `bcv_daemon_config_init`, then set `cache_dir`. Strings and
/// arrays are borrowed for the `bcv_daemon_start` call (keys are copied).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_daemon_config_t {
    /// The cache directory the daemon owns (created if missing). Required.
    pub cache_dir: *const c_char,
    /// The one size limit all clients share, in bytes; 0 means the default, 1 GiB.
    pub cache_size: u64,
    /// Retries, timeouts and concurrency of the daemon's requests (clients bring their own credentials: the
    /// daemon fetches a container's manifest with them before serving it).
    pub store: bcv_store_options_t,
    /// Keys of secure containers, handed to a client only after it proved access to that container; NULL
    /// when `key_count` is 0.
    pub keys: *const bcv_daemon_key_t,
    /// Number of entries at `keys`.
    pub key_count: usize,
}

/// What a running daemon reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_daemon_stats_t {
    /// Clients connected now.
    pub clients: u64,
    /// Clients served since the daemon started.
    pub clients_total: u64,
    /// Cache activity.
    pub cache: bcv_cache_stats_t,
    /// Cache occupancy.
    pub usage: bcv_cache_usage_t,
}

/// Fills `*config` with the defaults: no cache directory (set one), a 1 GiB cache, the store defaults, no
/// keys. Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_daemon_config_init(config: *mut bcv_daemon_config_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        // SAFETY: non-NULL, caller-provided storage for one struct.
        unsafe {
            *config = bcv_daemon_config_t {
                cache_dir: std::ptr::null(),
                cache_size: DEFAULT_CACHE_SIZE,
                store: default_store_options(),
                keys: std::ptr::null(),
                key_count: 0,
            }
        };
        BCV_OK
    })
}

fn daemon_config(c: &bcv_daemon_config_t) -> Result<DaemonConfig, bcv_status_t> {
    let store = store_options(&c.store)?;
    let mut config = DaemonConfig::new(c_str(c.cache_dir, "cache_dir")?);
    if c.cache_size != 0 {
        config.cache_size = c.cache_size;
    }
    config.store = store;
    if c.key_count > 0 {
        if c.keys.is_null() {
            return Err(fail_with(BCV_E_INVALID, "keys is NULL but key_count is not 0"));
        }
        // SAFETY: the caller provides `key_count` entries valid for the call.
        let entries = unsafe { std::slice::from_raw_parts(c.keys, c.key_count) };
        let mut keys = HashMap::new();
        for e in entries {
            keys.insert(c_str(e.url, "key url")?.to_owned(), keyring_of(e.keys, e.key_count, e.current_key)?);
        }
        config.keys = keys;
    }
    Ok(config)
}

/// Takes the cache directory `config->cache_dir` and starts serving it on `DIR/daemon.sock` (mode 0600:
/// clients run as the same user) on a thread of its own; writes the daemon's handle to `*out`. Release it
/// with `bcv_release` (which stops it) or stop it first with `bcv_daemon_stop`. The call takes ownership of
/// `config->store.auth_user_data`. Errors: `BCV_E_CACHE_BUSY` (another process, or a VFS, owns the
/// directory), `BCV_E_IO` (the socket), `BCV_E_INVALID` (NULL, keys).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_daemon_start(config: *const bcv_daemon_config_t, out: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
        let c = unsafe { &*config };
        let config = try_status!(daemon_config(c));
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        match Daemon::start(config) {
            Ok(d) => put(out, table::insert(Object::Daemon(Mutex::new(Some(d))))),
            Err(e) => fail_vfs(&e),
        }
    })
}

/// Runs `f` on the daemon behind `handle` (None once stopped).
fn with_daemon(handle: bcv_handle_t, f: impl FnOnce(&mut Option<Daemon>) -> bcv_status_t) -> bcv_status_t {
    let o = try_status!(table::get(handle));
    let Object::Daemon(d) = &*o else { return table::wrong_type(handle, &o, "daemon") };
    let mut d = d.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut d)
}

/// Fills `*stats` (may be NULL) with the daemon's figures. Errors: `BCV_E_CLOSED` (stopped),
/// `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_daemon_stats(daemon: bcv_handle_t, stats: *mut bcv_daemon_stats_t) -> bcv_status_t {
    guard(|| {
        with_daemon(daemon, |d| {
            let Some(d) = d.as_ref() else { return fail_with(BCV_E_CLOSED, "the daemon was stopped") };
            let s = d.stats();
            put_opt(
                stats,
                bcv_daemon_stats_t {
                    clients: s.clients as u64,
                    clients_total: s.clients_total as u64,
                    cache: cache_stats_of(&s.cache),
                    usage: cache_usage_of(&s.usage),
                },
            );
            BCV_OK
        })
    })
}

/// Stops serving: no new clients, connected clients' next call fails with `BCV_E_DAEMON_GONE`; waits for the
/// accept thread. The handle stays valid (release it with `bcv_release`); stopping twice does nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_daemon_stop(daemon: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        with_daemon(daemon, |d| {
            if let Some(d) = d.take() {
                d.stop();
            }
            BCV_OK
        })
    })
}
