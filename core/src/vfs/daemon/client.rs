//! The client side: a VFS whose cache directory is owned by a daemon reads blocks through it.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::SOCKET_FILE;
use super::wire::{PROTOCOL, Request, Response, read_frame, write_frame};
use crate::vfs::cache::{BlockCache, lock};
use crate::vfs::container::BlockId;
use crate::vfs::crypto::{KEY_LEN, Keyring, Sealer};
use crate::vfs::store::ObjectVersion;
use crate::vfs::{VfsError, VfsResult};

struct Connection {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

/// Blocks this client has a pinned slot for, with the chunks known to be present.
#[derive(Default)]
struct Known {
    slots: HashMap<BlockId, (u32, Vec<u64>)>,
    order: VecDeque<BlockId>,
}

/// A container attached through the daemon: its URL and the client's store options.
type AttachedUrl = (String, Vec<(String, String)>);

/// What an attach through the daemon returns.
pub(crate) struct AttachReply {
    pub(crate) block_size: u32,
    pub(crate) stride: u64,
    pub(crate) manifest: Vec<u8>,
    pub(crate) version: ObjectVersion,
    pub(crate) marker: Option<Vec<u8>>,
}

/// A connection to the daemon owning a cache directory. Requests are serialised on one socket; a broken
/// connection is reported once as [`VfsError::DaemonGone`] and re-established (with every container attached
/// again) by the next request.
pub(crate) struct DaemonClient {
    dir: PathBuf,
    capacity: u64,
    conn: Mutex<Option<Connection>>,
    known: Mutex<Known>,
    /// Attached containers (alias → URL, store options), to attach again after a reconnect.
    attached: Mutex<HashMap<String, AttachedUrl>>,
    max_pins: Mutex<usize>,
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonClient").field("dir", &self.dir).finish()
    }
}

fn open_connection(dir: &Path) -> std::io::Result<(Connection, u64)> {
    let stream = UnixStream::connect(dir.join(SOCKET_FILE))?;
    let mut conn = Connection { reader: BufReader::new(stream.try_clone()?), writer: BufWriter::new(stream) };
    write_frame(&mut conn.writer, &Request::Hello { protocol: PROTOCOL, pid: std::process::id() }, &[])?;
    let (response, _): (Response, Vec<u8>) = read_frame(&mut conn.reader)?;
    match response {
        Response::Hello { capacity, .. } => Ok((conn, capacity)),
        Response::Error { message, .. } => Err(std::io::Error::other(message)),
        other => Err(std::io::Error::other(format!("unexpected greeting {other:?}"))),
    }
}

impl DaemonClient {
    /// Connects to the daemon of `dir`, if one is serving it (`None`: no socket, or nobody listening).
    ///
    /// Errors: a daemon that answers but refuses this client (another protocol version).
    pub(crate) fn connect(dir: &Path) -> VfsResult<Option<DaemonClient>> {
        if !dir.join(SOCKET_FILE).exists() {
            return Ok(None);
        }
        match open_connection(dir) {
            Ok((conn, capacity)) => Ok(Some(DaemonClient {
                dir: dir.to_path_buf(),
                capacity,
                conn: Mutex::new(Some(conn)),
                known: Mutex::new(Known::default()),
                attached: Mutex::new(HashMap::new()),
                max_pins: Mutex::new(64),
            })),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound) => {
                Ok(None)
            }
            Err(e) => Err(VfsError::Daemon { dir: dir.to_path_buf(), message: e.to_string() }),
        }
    }

    /// The daemon's cache directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's cache size limit.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    fn gone(&self, e: std::io::Error) -> VfsError {
        VfsError::DaemonGone { dir: self.dir.clone(), cause: e.to_string() }
    }

    /// Sends one request and returns the response, reconnecting first when the last request found the
    /// daemon gone.
    fn call(&self, request: &Request) -> VfsResult<(Response, Vec<u8>)> {
        let mut conn = lock(&self.conn);
        if conn.is_none() {
            let (fresh, _) = open_connection(&self.dir).map_err(|e| self.gone(e))?;
            *conn = Some(fresh);
            // A new daemon: no pins survive; attach every container again on the new connection.
            *lock(&self.known) = Known::default();
            let attached: Vec<(String, AttachedUrl)> =
                lock(&self.attached).iter().map(|(a, v)| (a.clone(), v.clone())).collect();
            for (alias, (url, options)) in attached {
                let again = Request::Attach { alias, url, options };
                if let Err(e) = exchange(conn.as_mut(), &again) {
                    *conn = None;
                    return Err(self.gone(e));
                }
            }
        }
        match exchange(conn.as_mut(), request) {
            Ok((Response::Error { message, not_found }, _)) => {
                if not_found {
                    Err(VfsError::Daemon { dir: self.dir.clone(), message: format!("not found: {message}") })
                } else {
                    Err(VfsError::Daemon { dir: self.dir.clone(), message })
                }
            }
            Ok(r) => Ok(r),
            Err(e) => {
                *conn = None;
                Err(self.gone(e))
            }
        }
    }

    /// Attaches `url` as `alias` through the daemon, which fetches the manifest with `options` (the client's
    /// credentials). Errors: the daemon's (store errors name the container), [`VfsError::DaemonGone`].
    pub(crate) fn attach(&self, alias: &str, url: &str, options: &[(String, String)]) -> VfsResult<AttachReply> {
        let request = Request::Attach { alias: alias.into(), url: url.into(), options: options.to_vec() };
        match self.call(&request)? {
            (Response::Attached { block_size, stride, version, marker }, manifest) => {
                lock(&self.attached).insert(alias.to_string(), (url.to_string(), options.to_vec()));
                let slots = (self.capacity / stride.max(1)) as usize;
                *lock(&self.max_pins) = (slots / 4).clamp(4, 1024);
                Ok(AttachReply { block_size, stride, manifest, version, marker: marker.map(String::into_bytes) })
            }
            (other, _) => Err(self.unexpected(other)),
        }
    }

    /// Forgets `alias` (no request: the daemon forgets it with the connection).
    pub(crate) fn detach(&self, alias: &str) {
        lock(&self.attached).remove(alias);
    }

    /// The manifest of `alias` if it changed since `known`, fetched by the daemon.
    pub(crate) fn poll(&self, alias: &str, known: &ObjectVersion) -> VfsResult<Option<(Vec<u8>, ObjectVersion)>> {
        match self.call(&Request::Poll { alias: alias.into(), known: known.clone() })? {
            (Response::Polled { version: Some(v) }, manifest) => Ok(Some((manifest, v))),
            (Response::Polled { version: None }, _) => Ok(None),
            (other, _) => Err(self.unexpected(other)),
        }
    }

    /// The keyring of the secure container attached as `alias`, which the daemon hands over because the attach
    /// proved this client's access.
    pub(crate) fn key(&self, alias: &str) -> VfsResult<Keyring> {
        match self.call(&Request::Key { alias: alias.into() })? {
            (Response::Key { current, keys }, _) => {
                let mut ring = Keyring::default();
                for (id, hex_key) in keys {
                    let key: [u8; KEY_LEN] = Keyring::parse_hex_key(&hex_key)?;
                    ring.add(id, key);
                }
                ring.rotate_to(current)?;
                Ok(ring)
            }
            (other, _) => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, r: Response) -> VfsError {
        VfsError::Daemon { dir: self.dir.clone(), message: format!("unexpected response {r:?}") }
    }

    /// Reads `buf.len()` bytes at `offset` of block `id` of container `alias`: straight from the shared slot
    /// file when this client already holds the slot with those chunks, otherwise after asking the daemon to
    /// fetch them (plus `readahead` bytes) and pin the slot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_clean(
        &self,
        cache: &BlockCache,
        alias: &str,
        id: &BlockId,
        offset: u32,
        buf: &mut [u8],
        readahead: u32,
        chunk: u32,
        seal: Option<&Sealer>,
    ) -> VfsResult<()> {
        let end = offset as u64 + buf.len() as u64;
        let first = offset / chunk;
        let last = ((end.max(1) - 1) / chunk as u64) as u32;
        let slot = {
            let known = lock(&self.known);
            known.slots.get(id).and_then(|(slot, present)| (first..=last).all(|c| bit(present, c)).then_some(*slot))
        };
        let slot = match slot {
            Some(s) => s,
            None => {
                let ra_last = ((end + readahead as u64).max(1) - 1) as u32 / chunk;
                let chunks: Vec<u32> = (first..=ra_last).collect();
                self.unpin_excess()?;
                let request = Request::Fetch {
                    alias: alias.into(),
                    block: hex::encode(id.as_bytes()),
                    chunks,
                    sealed: seal.is_some(),
                };
                let slot = match self.call(&request)? {
                    (Response::Fetched { slot }, _) => slot,
                    (other, _) => return Err(self.unexpected(other)),
                };
                let mut known = lock(&self.known);
                if !known.slots.contains_key(id) {
                    known.order.push_back(*id);
                }
                let entry = known.slots.entry(*id).or_insert_with(|| (slot, Vec::new()));
                entry.0 = slot;
                for c in first..=ra_last {
                    set_bit(&mut entry.1, c);
                }
                slot
            }
        };
        match seal {
            Some(sealer) => cache.read_sealed(slot, offset, buf, sealer, &id.object_name()),
            None => cache.read_plain(slot, offset, buf),
        }
    }

    /// Keeps this client's pins bounded (a quarter of the daemon's slots): releases the oldest.
    fn unpin_excess(&self) -> VfsResult<()> {
        let max = *lock(&self.max_pins);
        let victims: Vec<String> = {
            let mut known = lock(&self.known);
            let mut v = Vec::new();
            while known.order.len() >= max {
                let Some(id) = known.order.pop_front() else { break };
                known.slots.remove(&id);
                v.push(hex::encode(id.as_bytes()));
            }
            v
        };
        if victims.is_empty() {
            return Ok(());
        }
        match self.call(&Request::Unpin { blocks: victims })? {
            (Response::Done, _) => Ok(()),
            (other, _) => Err(self.unexpected(other)),
        }
    }
}

fn exchange(conn: Option<&mut Connection>, request: &Request) -> std::io::Result<(Response, Vec<u8>)> {
    let conn = conn.ok_or_else(|| std::io::Error::other("not connected"))?;
    write_frame(&mut conn.writer, request, &[])?;
    read_frame(&mut conn.reader)
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
