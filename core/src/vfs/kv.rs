//! `bcv_kv.bcv`: a container's small key-value store, and transactions on it against the cloud copy.
//!
//! The object is a serialized SQLite database with `CREATE TABLE kv(i INTEGER PRIMARY KEY, k UNIQUE NOT NULL,
//! v)` (CONTAINER-FORMAT.md), read and written as CBS does: a transaction starts from the object as it is
//! in the container (its ETag remembered) and commits with a PUT conditional on that ETag (or on the object's
//! absence), so a concurrent change by another client fails the commit with [`VfsError::Conflict`] and
//! nothing is overwritten.
//!
//! In a secure container the object is sealed chunk by chunk like a block (its rows are application data).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::attached::KV_OBJECT;
use super::connection::Value;
use super::crypto::{Domain, Sealer};
use super::runtime::block_on;
use super::sqlite::raw::{RawDb, Value as Bind};
use super::store::{ContainerStore, ObjectVersion};
use super::{VfsError, VfsResult};

const SCHEMA: &str = "CREATE TABLE kv(i INTEGER PRIMARY KEY, k UNIQUE NOT NULL, v)";

/// The rows of a kv image by rowid `i`: `(k, v)`.
pub(crate) type KvRows = BTreeMap<i64, (Value, Value)>;

fn corrupt(store: &ContainerStore, e: super::sqlite::SqliteError) -> VfsError {
    VfsError::CorruptBlock { container: store.label().to_string(), object: KV_OBJECT.into(), reason: e.to_string() }
}

/// Reads the rows of a serialized kv database. Errors name the object: not an SQLite image, no `kv` table.
pub(crate) fn decode(store: &ContainerStore, image: &[u8]) -> VfsResult<KvRows> {
    let db = RawDb::open_memory().map_err(|e| VfsError::sqlite("open an in-memory database", e))?;
    db.deserialize(image).map_err(|e| corrupt(store, e))?;
    let rows = db
        .query("SELECT i, k, v FROM kv ORDER BY i", &[], |r| (r.int(0), (r.value(1), r.value(2))))
        .map_err(|e| corrupt(store, e))?;
    Ok(rows.into_iter().collect())
}

fn bind(v: &Value) -> Bind<'_> {
    match v {
        Value::Null => Bind::Null,
        Value::Integer(n) => Bind::Int(*n),
        Value::Real(f) => Bind::Real(*f),
        Value::Text(t) => Bind::Text(t),
        Value::Blob(b) => Bind::Blob(b),
    }
}

/// Serializes `rows` as a kv database (an empty one is 3 pages of 4096 bytes, as CBS writes it).
pub(crate) fn encode(rows: &KvRows) -> VfsResult<Vec<u8>> {
    let db = RawDb::open_memory().map_err(|e| VfsError::sqlite("open an in-memory database", e))?;
    let context = |e| VfsError::sqlite("build bcv_kv.bcv", e);
    db.exec(&format!("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; {SCHEMA}; BEGIN")).map_err(context)?;
    for (i, (k, v)) in rows {
        db.run("INSERT INTO kv(i, k, v) VALUES (?1, ?2, ?3)", &[Bind::Int(*i), bind(k), bind(v)]).map_err(context)?;
    }
    db.exec("COMMIT").map_err(context)?;
    db.serialize().map_err(context)
}

/// The kv object as last read: its rows and version (`None`: the container has no kv object).
#[derive(Clone, Default)]
pub(crate) struct KvSnapshot {
    pub(crate) rows: KvRows,
    pub(crate) version: Option<ObjectVersion>,
}

impl KvSnapshot {
    /// Brings the snapshot up to date with one conditional GET (no body when unchanged).
    pub(crate) fn refresh(&mut self, store: &ContainerStore, sealer: Option<&Sealer>) -> VfsResult<()> {
        let s = store.clone();
        let known = self.version.clone();
        let fetched = block_on(async move {
            match known {
                Some(v) => s.get_if_changed(KV_OBJECT, &v).await,
                None => s.get(KV_OBJECT).await.map(Some),
            }
        });
        match fetched {
            Ok(None) => Ok(()),
            Ok(Some(f)) => {
                self.rows = match sealer {
                    Some(sealer) => decode(store, &sealer.open_chunks(Domain::Kv, &f.bytes, KV_OBJECT)?)?,
                    None => decode(store, &f.bytes)?,
                };
                self.version = Some(f.version);
                Ok(())
            }
            Err(VfsError::NotFound { .. }) => {
                self.rows.clear();
                self.version = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `rows` conditionally on this snapshot's version and becomes the new snapshot.
    ///
    /// Errors: [`VfsError::Conflict`] when another client changed (or created) the object since the
    /// snapshot was read: nothing is written.
    pub(crate) fn commit(&mut self, store: &ContainerStore, sealer: Option<&Sealer>, rows: KvRows) -> VfsResult<()> {
        let image = encode(&rows)?;
        let image = Bytes::from(match sealer {
            Some(sealer) => sealer.seal_chunks(Domain::Kv, &image, KV_OBJECT)?,
            None => image,
        });
        let s = store.clone();
        let base = self.version.clone();
        let version = block_on(async move {
            match base {
                Some(v) => s.put_if_match(KV_OBJECT, image, &v).await,
                None => match s.put_if_absent(KV_OBJECT, image).await {
                    Err(VfsError::AlreadyExists { container, object }) => Err(VfsError::Conflict { container, object }),
                    other => other,
                },
            }
        })?;
        self.rows = rows;
        self.version = Some(version);
        Ok(())
    }
}
