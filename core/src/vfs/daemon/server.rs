//! The daemon: owns a cache directory and serves its blocks to read-only client processes.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::SOCKET_FILE;
use super::wire::{PROTOCOL, Request, Response, read_frame, write_frame};
use crate::vfs::attached::MANIFEST_OBJECT;
use crate::vfs::cache::{BlockCache, CacheStats, CacheUsage, DEFAULT_CACHE_SIZE, lock};
use crate::vfs::container::{BlockId, Manifest};
use crate::vfs::crypto::{Keyring, SECURE_OBJECT};
use crate::vfs::runtime::block_on;
use crate::vfs::store::{ContainerStore, StoreOptions};
use crate::vfs::{VfsError, VfsResult};

/// Configuration of a [`Daemon`].
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The cache directory the daemon owns (created if missing).
    pub cache_dir: PathBuf,
    /// The one size limit all clients share. Default 1 GiB.
    pub cache_size: u64,
    /// Retries, timeouts and concurrency of the daemon's requests (clients add their credentials).
    pub store: StoreOptions,
    /// Keys of secure containers, by container URL, handed to a client only after it proved access to that
    /// container (the daemon fetched its manifest with the client's credentials).
    pub keys: HashMap<String, Keyring>,
}

impl DaemonConfig {
    /// Defaults for `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> DaemonConfig {
        DaemonConfig {
            cache_dir: cache_dir.into(),
            cache_size: DEFAULT_CACHE_SIZE,
            store: StoreOptions::default(),
            keys: HashMap::new(),
        }
    }
}

/// What a running daemon reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DaemonStats {
    /// Clients connected now.
    pub clients: usize,
    /// Clients served since start.
    pub clients_total: usize,
    /// Cache activity.
    pub cache: CacheStats,
    /// Cache occupancy.
    pub usage: CacheUsage,
}

struct Server {
    dir: PathBuf,
    cache: BlockCache,
    config: DaemonConfig,
    /// Stores by URL and client options: clients with the same credentials share one (and its connections).
    stores: Mutex<HashMap<String, ContainerStore>>,
    clients: AtomicUsize,
    clients_total: AtomicUsize,
    stopping: AtomicBool,
}

/// A running daemon: a cache directory served over `DIR/daemon.sock` by a thread per client.
///
/// Clients are [`BlockVfs`](crate::vfs::BlockVfs) instances created on the same directory in other processes
/// (or this one): they read blocks straight from the shared slot file, after the daemon fetched and pinned
/// them, and ask the daemon for manifests when they poll. The daemon never writes to cloud storage and
/// polls only when a client asks. A client that crashes only loses its pins. Dropping the daemon (or
/// [`stop`](Self::stop)) stops accepting, closes the socket file and releases the directory; connected clients
/// then get [`VfsError::DaemonGone`] and reconnect to the next daemon on the directory.
pub struct Daemon {
    server: Arc<Server>,
    socket: PathBuf,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("socket", &self.socket).finish()
    }
}

impl Daemon {
    /// Takes the cache directory and starts serving on `DIR/daemon.sock` (mode 0600: clients run as the same
    /// user).
    ///
    /// Errors: [`VfsError::CacheBusy`] when another process owns the directory; I/O errors binding the socket.
    pub fn start(config: DaemonConfig) -> VfsResult<Daemon> {
        let cache = BlockCache::open(&config.cache_dir, config.cache_size)?;
        let socket = config.cache_dir.join(SOCKET_FILE);
        // The directory lock is ours, so a socket file left behind is from a daemon that died.
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| VfsError::io("bind", &socket, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| VfsError::io("chmod", &socket, e))?;
        }
        let server = Arc::new(Server {
            dir: config.cache_dir.clone(),
            cache,
            config,
            stores: Mutex::new(HashMap::new()),
            clients: AtomicUsize::new(0),
            clients_total: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let s = server.clone();
        let acceptor = std::thread::Builder::new()
            .name("bcv-daemon".into())
            .spawn(move || accept_loop(s, listener))
            .map_err(|e| VfsError::io("spawn the daemon thread", &socket, e))?;
        tracing::info!(socket = %socket.display(), "bcv daemon serving");
        Ok(Daemon { server, socket, acceptor: Some(acceptor) })
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Current figures.
    pub fn stats(&self) -> DaemonStats {
        DaemonStats {
            clients: self.server.clients.load(Ordering::Relaxed),
            clients_total: self.server.clients_total.load(Ordering::Relaxed),
            cache: self.server.cache.stats(),
            usage: self.server.cache.usage(),
        }
    }

    /// Stops serving: no new clients; connected clients' next request fails. Waits for the accept thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop(server: Arc<Server>, listener: UnixListener) {
    let mut workers: Vec<(UnixStream, JoinHandle<()>)> = Vec::new();
    for stream in listener.incoming() {
        if server.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        workers.retain(|(_, t)| !t.is_finished());
        let Ok(handle) = stream.try_clone() else { continue };
        let s = server.clone();
        match std::thread::Builder::new().name("bcv-daemon-client".into()).spawn(move || serve(s, stream)) {
            Ok(t) => workers.push((handle, t)),
            Err(e) => tracing::warn!(error = %e, "cannot start a thread for a daemon client"),
        }
    }
    // Cut every client off so their threads end and release their pins.
    for (stream, t) in workers {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = t.join();
    }
}

/// One client's connection: what it attached and which slots it pins.
struct Session {
    containers: HashMap<String, (String, ContainerStore)>,
    pins: HashMap<BlockId, u32>,
}

fn serve(server: Arc<Server>, stream: UnixStream) {
    server.clients.fetch_add(1, Ordering::Relaxed);
    server.clients_total.fetch_add(1, Ordering::Relaxed);
    let mut session = Session { containers: HashMap::new(), pins: HashMap::new() };
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = BufWriter::new(stream);
    // The session ends when the client goes away (or sends garbage).
    while let Ok((request, _payload)) = read_frame::<Request>(&mut reader) {
        if server.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (response, payload) = match handle(&server, &mut session, request) {
            Ok(r) => r,
            Err(e) => (
                Response::Error { not_found: matches!(e, VfsError::NotFound { .. }), message: e.to_string() },
                Vec::new(),
            ),
        };
        if write_frame(&mut writer, &response, &payload).is_err() {
            break;
        }
    }
    for (_, slot) in session.pins.drain() {
        server.cache.unpin(slot);
    }
    server.clients.fetch_sub(1, Ordering::Relaxed);
}

fn handle(server: &Server, session: &mut Session, request: Request) -> VfsResult<(Response, Vec<u8>)> {
    match request {
        Request::Hello { protocol, pid } => {
            if protocol != PROTOCOL {
                return Err(VfsError::InvalidArgument(format!(
                    "client pid {pid} speaks protocol {protocol}, this daemon {PROTOCOL}: upgrade both to one bcv"
                )));
            }
            Ok((Response::Hello { protocol: PROTOCOL, capacity: server.config.cache_size }, Vec::new()))
        }
        Request::Attach { alias, url, options } => {
            let key = format!("{url}\u{0}{options:?}");
            let store = {
                let mut stores = lock(&server.stores);
                match stores.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let mut opts = server.config.store.clone();
                        opts.options.extend(options);
                        let s = ContainerStore::open(&url, &opts)?;
                        stores.insert(key, s.clone());
                        s
                    }
                }
            };
            // The manifest fetched with the client's credentials is its proof of access.
            let s = store.clone();
            let fetched = block_on(async move { s.get(MANIFEST_OBJECT).await })?;
            let manifest = Manifest::decode(&fetched.bytes)
                .map_err(|e| VfsError::Manifest { container: store.label().to_string(), source: e })?;
            server.cache.configure_block_size(manifest.block_size, store.label())?;
            let s = store.clone();
            let marker = match block_on(async move { s.get(SECURE_OBJECT).await }) {
                Ok(f) => Some(String::from_utf8_lossy(&f.bytes).into_owned()),
                Err(VfsError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            session.containers.insert(alias, (url, store));
            let response = Response::Attached {
                block_size: manifest.block_size,
                stride: server.cache.slot_stride()?,
                version: fetched.version,
                marker,
            };
            Ok((response, fetched.bytes.to_vec()))
        }
        Request::Poll { alias, known } => {
            let (_, store) = attached(server, session, &alias)?;
            let s = store.clone();
            match block_on(async move { s.get_if_changed(MANIFEST_OBJECT, &known).await })? {
                Some(f) => Ok((Response::Polled { version: Some(f.version) }, f.bytes.to_vec())),
                None => Ok((Response::Polled { version: None }, Vec::new())),
            }
        }
        Request::Fetch { alias, block, chunks, sealed } => {
            let (_, store) = attached(server, session, &alias)?;
            let id = hex::decode(&block)
                .ok()
                .and_then(|b| BlockId::from_bytes(&b).ok())
                .ok_or_else(|| VfsError::InvalidArgument(format!("bad block id {block:?}")))?;
            let object = id.object_name();
            let pinned = session.pins.get(&id).copied();
            let mut fetch = |ranges: &[std::ops::Range<u64>]| {
                let s = store.clone();
                let o = object.clone();
                let ranges = ranges.to_vec();
                block_on(async move { s.get_ranges(&o, &ranges).await })
            };
            let slot = server.cache.pin_and_fill(&id, pinned, &chunks, sealed, &mut fetch)?;
            if pinned.is_none() {
                session.pins.insert(id, slot);
            }
            Ok((Response::Fetched { slot }, Vec::new()))
        }
        Request::Unpin { blocks } => {
            for block in blocks {
                if let Some(id) = hex::decode(&block).ok().and_then(|b| BlockId::from_bytes(&b).ok())
                    && let Some(slot) = session.pins.remove(&id)
                {
                    server.cache.unpin(slot);
                }
            }
            Ok((Response::Done, Vec::new()))
        }
        Request::Key { alias } => {
            let (url, store) = attached(server, session, &alias)?;
            let ring = server.config.keys.get(&url).ok_or_else(|| VfsError::Secure {
                container: store.label().to_string(),
                reason: "the daemon has no key for this container; give the key to the client".into(),
            })?;
            let (current, keys) = ring.export();
            Ok((
                Response::Key { current, keys: keys.into_iter().map(|(id, k)| (id, hex::encode(*k))).collect() },
                Vec::new(),
            ))
        }
    }
}

fn attached(server: &Server, session: &Session, alias: &str) -> VfsResult<(String, ContainerStore)> {
    session.containers.get(alias).cloned().ok_or_else(|| VfsError::Daemon {
        dir: server.dir.clone(),
        message: format!("container {alias:?} was not attached on this connection"),
    })
}
