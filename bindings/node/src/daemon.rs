//! Multi-process mode: a daemon owning a cache directory (`bcv_core::vfs::Daemon`). A `Vfs` created on that
//! directory, in this process or another, becomes its read-only client by itself. Conversion only.

use std::sync::Mutex;

use bcv_core::vfs::{Daemon, DaemonConfig};
use napi::Env;
use napi_derive::napi;

use crate::error::JsErr;
use crate::handle::enter;
use crate::js::{self, RawValue};
use crate::secure::KeyringHandle;
use crate::vfs::store_options;

/// Options of `createDaemon`.
#[napi(object)]
pub struct DaemonOptions {
    /// The cache directory the daemon owns (created if missing).
    pub cache_dir: String,
    /// The one cache size limit all clients share, in bytes; default 1 GiB.
    pub cache_size: Option<f64>,
    /// Retries after a transient store failure; default 4.
    pub retries: Option<u32>,
    /// Time limit of one store request in milliseconds; default 30000.
    pub request_timeout_ms: Option<f64>,
}

/// A daemon: configured by `createDaemon` and `addKey`, serving from `start` until `stop` (or until it is
/// garbage-collected: it is then stopped off the JS thread). `lib/vfs.js` wraps it as `Daemon`.
#[napi]
pub struct DaemonHandle {
    config: Mutex<Option<DaemonConfig>>,
    running: Mutex<Option<Daemon>>,
}

/// A daemon configuration for `options.cacheDir`, not started yet.
#[napi]
pub fn create_daemon(env: Env, options: DaemonOptions) -> napi::Result<DaemonHandle> {
    let local = enter(&env)?;
    let mut config = DaemonConfig::new(&options.cache_dir);
    if let Some(size) = options.cache_size {
        if !(size.is_finite() && size >= 0.0) {
            let e = JsErr::invalid(format!("cacheSize must be a non-negative number of bytes, got {size}"));
            return Err(e.throw(&local));
        }
        config.cache_size = size as u64;
    }
    config.store = store_options(options.retries, options.request_timeout_ms).map_err(|e| e.throw(&local))?;
    Ok(DaemonHandle { config: Mutex::new(Some(config)), running: Mutex::new(None) })
}

impl DaemonHandle {
    fn refused(what: &str) -> JsErr {
        JsErr::invalid(format!("{what}: the daemon was started already"))
    }
}

#[napi]
impl DaemonHandle {
    /// Gives the daemon the keys of the secure container at `url` (copied), handed to a client only after
    /// that client's attach proved it can read the container. Before `start` only.
    #[napi]
    pub fn add_key(&self, env: Env, url: String, ring: &KeyringHandle) -> napi::Result<()> {
        let local = enter(&env)?;
        let mut config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let Some(config) = config.as_mut() else { return Err(Self::refused("addKey").throw(&local)) };
        config.keys.insert(url, ring.ring().clone());
        Ok(())
    }

    /// Takes the cache directory and serves it on `DIR/daemon.sock`. Throws `BCV_BUSY` when another process
    /// (or a `Vfs` here) owns the directory, `BCV_IO`.
    #[napi]
    pub fn start(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        let Some(config) = self.config.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(Self::refused("start").throw(&local));
        };
        let daemon = Daemon::start(config).map_err(|e| JsErr::from(e).throw(&local))?;
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(daemon);
        Ok(())
    }

    /// True from `start` until `stop`.
    #[napi(getter)]
    pub fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The socket clients connect to (`null` unless running).
    #[napi(getter)]
    pub fn socket_path(&self) -> Option<String> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|d| d.socket_path().display().to_string())
    }

    /// Current figures: `{ clients, clientsTotal, cache, usage }`; `null` unless running.
    #[napi(ts_return_type = "unknown")]
    pub fn stats(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let stats = self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Daemon::stats);
        let value = stats.map_or(serde_json::Value::Null, |s| serde_json::to_value(s).unwrap_or_default());
        Ok(RawValue(js::json(local.raw(), &value)))
    }

    /// Stops serving: no new clients, connected clients' next call fails with `BCV_DAEMON_GONE` (and
    /// reconnects to the next daemon on the directory); the directory is released. Idempotent.
    #[napi]
    pub fn stop(&self, env: Env) -> napi::Result<()> {
        enter(&env)?;
        let daemon = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(daemon) = daemon {
            daemon.stop();
        }
        Ok(())
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        // A finalizer must not block (N1): stopping joins the daemon's threads, so it happens on a thread of
        // its own (or here if none can be started).
        let daemon = self.running.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(daemon) = daemon {
            let _ = std::thread::Builder::new().name("bcv-daemon-stop".into()).spawn(move || daemon.stop());
        }
    }
}
