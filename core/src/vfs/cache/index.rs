//! The cache directory's metadata (`index.db`): which slot holds what, attached containers with their manifest
//! and ETag, local databases and upload intents — everything a restart needs to make no request at all.
//!
//! It is an ordinary SQLite database opened through the platform's own VFS (never bcv's), in WAL mode with
//! `synchronous=FULL`, so a committed change survives a killed process and a power cut.

use std::path::{Path, PathBuf};

use crate::vfs::sqlite::raw::{RawDb, SqliteError, Value};
use crate::vfs::{VfsError, VfsResult};

/// The name of the metadata database inside a cache directory.
pub(crate) const INDEX_FILE: &str = "index.db";

/// The platform VFS that holds bcv's own files.
#[cfg(unix)]
pub(crate) const PLATFORM_VFS: &str = "unix";
/// The platform VFS that holds bcv's own files.
#[cfg(windows)]
pub(crate) const PLATFORM_VFS: &str = "win32";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config(k TEXT PRIMARY KEY, v ANY) STRICT;
CREATE TABLE IF NOT EXISTS slot(
    n INTEGER PRIMARY KEY,
    block_id BLOB,                 -- clean slot: the block id it caches
    alias TEXT, db TEXT, idx INTEGER, -- dirty slot: the database block it holds
    present BLOB NOT NULL,         -- bitmap of the chunks that hold valid bytes
    used INTEGER NOT NULL          -- LRU tick of the last use
) STRICT;
CREATE TABLE IF NOT EXISTS container(
    alias TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    manifest BLOB NOT NULL,        -- manifest.bcv as last read or written
    version TEXT NOT NULL          -- its ObjectVersion as JSON
) STRICT;
CREATE TABLE IF NOT EXISTS local_db(
    alias TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,         -- the local image's size in bytes
    base_version INTEGER NOT NULL, -- the manifest version of the database the local changes started from (0: new)
    PRIMARY KEY(alias, name)
) STRICT;
CREATE TABLE IF NOT EXISTS secure(
    alias TEXT PRIMARY KEY,
    marker BLOB NOT NULL           -- bcv_secure.json of a secure container, as read at attach
) STRICT;
CREATE TABLE IF NOT EXISTS pending_upload(
    alias TEXT PRIMARY KEY,
    manifest BLOB NOT NULL,        -- the manifest an interrupted upload was installing
    promotions TEXT NOT NULL       -- JSON [[db, index, block id hex]] of dirty blocks it uploaded
) STRICT;
";

/// One row of the `slot` table.
#[derive(Clone, Debug)]
pub(crate) struct SlotRow {
    pub(crate) n: u32,
    pub(crate) block_id: Option<Vec<u8>>,
    pub(crate) dirty: Option<(String, String, u32)>,
    pub(crate) present: Vec<u8>,
    pub(crate) used: u64,
}

/// A container as recorded in the index.
#[derive(Clone, Debug)]
pub(crate) struct ContainerRow {
    pub(crate) alias: String,
    pub(crate) url: String,
    pub(crate) manifest: Vec<u8>,
    pub(crate) version_json: String,
}

/// Local state of one database of an attached container.
#[derive(Clone, Debug)]
pub(crate) struct LocalDbRow {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) base_version: u32,
}

/// An upload that may have installed its manifest before the process died.
#[derive(Clone, Debug)]
pub(crate) struct PendingUploadRow {
    pub(crate) manifest: Vec<u8>,
    pub(crate) promotions_json: String,
}

/// The open metadata database.
pub(crate) struct Index {
    db: RawDb,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) `DIR/index.db`.
    pub(crate) fn open(dir: &Path) -> VfsResult<Index> {
        let path = dir.join(INDEX_FILE);
        let db = RawDb::open(&path.to_string_lossy(), PLATFORM_VFS, true)
            .map_err(|e| VfsError::sqlite(format!("open cache index {}", path.display()), e))?;
        let index = Index { db, path };
        index
            .db
            .exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
            .and_then(|_| index.db.exec(SCHEMA))
            .map_err(|e| index.err("initialise", e))?;
        Ok(index)
    }

    /// A private index in memory (a daemon's client keeps no index of its own on disk).
    pub(crate) fn open_memory() -> VfsResult<Index> {
        let db = RawDb::open_memory().map_err(|e| VfsError::sqlite("open an in-memory cache index", e))?;
        let index = Index { db, path: PathBuf::from("(memory)") };
        index.db.exec(SCHEMA).map_err(|e| index.err("initialise", e))?;
        Ok(index)
    }

    fn err(&self, what: &str, e: SqliteError) -> VfsError {
        VfsError::sqlite(format!("cache index {}: {what}", self.path.display()), e)
    }

    /// Reads a configuration value.
    pub(crate) fn config(&self, key: &str) -> VfsResult<Option<i64>> {
        let rows = self
            .db
            .query("SELECT v FROM config WHERE k = ?1", &[Value::Text(key)], |r| r.int(0))
            .map_err(|e| self.err("read config", e))?;
        Ok(rows.into_iter().next())
    }

    /// Writes a configuration value.
    pub(crate) fn set_config(&self, key: &str, value: i64) -> VfsResult<()> {
        self.db
            .run("INSERT OR REPLACE INTO config(k, v) VALUES (?1, ?2)", &[Value::Text(key), Value::Int(value)])
            .map_err(|e| self.err("write config", e))
    }

    /// The secure-container marker recorded for `alias`, if the container is secure.
    pub(crate) fn secure_marker(&self, alias: &str) -> VfsResult<Option<Vec<u8>>> {
        let rows = self
            .db
            .query("SELECT marker FROM secure WHERE alias = ?1", &[Value::Text(alias)], |r| r.blob(0))
            .map_err(|e| self.err("read secure marker", e))?;
        Ok(rows.into_iter().next().flatten())
    }

    /// Records that `alias` is a secure container with this marker.
    pub(crate) fn put_secure_marker(&self, alias: &str, marker: &[u8]) -> VfsResult<()> {
        self.db
            .run(
                "INSERT OR REPLACE INTO secure(alias, marker) VALUES (?1, ?2)",
                &[Value::Text(alias), Value::Blob(marker)],
            )
            .map_err(|e| self.err("write secure marker", e))
    }

    /// All slot rows.
    pub(crate) fn slots(&self) -> VfsResult<Vec<SlotRow>> {
        self.db
            .query("SELECT n, block_id, alias, db, idx, present, used FROM slot ORDER BY n", &[], |r| {
                let dirty = match (r.text(2), r.text(3), r.is_null(4)) {
                    (Some(a), Some(d), false) => Some((a, d, r.int(4) as u32)),
                    _ => None,
                };
                SlotRow {
                    n: r.int(0) as u32,
                    block_id: r.blob(1),
                    dirty,
                    present: r.blob(5).unwrap_or_default(),
                    used: r.int(6) as u64,
                }
            })
            .map_err(|e| self.err("read slots", e))
    }

    /// Writes slot rows (`None` owner = free: the row is deleted) in one transaction.
    pub(crate) fn write_slots(&mut self, rows: &[SlotRow]) -> VfsResult<()> {
        let result = self.db.exec("BEGIN").and_then(|_| {
            for row in rows {
                if row.block_id.is_none() && row.dirty.is_none() {
                    self.db.run("DELETE FROM slot WHERE n = ?1", &[Value::Int(row.n as i64)])?;
                    continue;
                }
                let (alias, db, idx) = match &row.dirty {
                    Some((a, d, i)) => (Value::Text(a), Value::Text(d), Value::Int(*i as i64)),
                    None => (Value::Null, Value::Null, Value::Null),
                };
                let block = match &row.block_id {
                    Some(b) => Value::Blob(b),
                    None => Value::Null,
                };
                self.db.run(
                    "INSERT OR REPLACE INTO slot(n, block_id, alias, db, idx, present, used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &[
                        Value::Int(row.n as i64),
                        block,
                        alias,
                        db,
                        idx,
                        Value::Blob(&row.present),
                        Value::Int(row.used as i64),
                    ],
                )?;
            }
            self.db.exec("COMMIT")
        });
        result.map_err(|e| {
            let _ = self.db.exec("ROLLBACK");
            self.err("write slots", e)
        })
    }

    /// All attached containers.
    pub(crate) fn containers(&self) -> VfsResult<Vec<ContainerRow>> {
        self.db
            .query("SELECT alias, url, manifest, version FROM container ORDER BY alias", &[], |r| ContainerRow {
                alias: r.text(0).unwrap_or_default(),
                url: r.text(1).unwrap_or_default(),
                manifest: r.blob(2).unwrap_or_default(),
                version_json: r.text(3).unwrap_or_default(),
            })
            .map_err(|e| self.err("read containers", e))
    }

    /// Records (or replaces) an attached container's manifest.
    pub(crate) fn put_container(&self, row: &ContainerRow) -> VfsResult<()> {
        self.db
            .run(
                "INSERT OR REPLACE INTO container(alias, url, manifest, version) VALUES (?1, ?2, ?3, ?4)",
                &[
                    Value::Text(&row.alias),
                    Value::Text(&row.url),
                    Value::Blob(&row.manifest),
                    Value::Text(&row.version_json),
                ],
            )
            .map_err(|e| self.err("write container", e))
    }

    /// Forgets a container and its local databases.
    pub(crate) fn delete_container(&self, alias: &str) -> VfsResult<()> {
        let a = [Value::Text(alias)];
        self.db
            .exec("BEGIN")
            .and_then(|_| self.db.run("DELETE FROM container WHERE alias = ?1", &a))
            .and_then(|_| self.db.run("DELETE FROM local_db WHERE alias = ?1", &a))
            .and_then(|_| self.db.run("DELETE FROM pending_upload WHERE alias = ?1", &a))
            .and_then(|_| self.db.run("DELETE FROM secure WHERE alias = ?1", &a))
            .and_then(|_| self.db.exec("COMMIT"))
            .map_err(|e| {
                let _ = self.db.exec("ROLLBACK");
                self.err("delete container", e)
            })
    }

    /// The local databases of a container.
    pub(crate) fn local_dbs(&self, alias: &str) -> VfsResult<Vec<LocalDbRow>> {
        self.db
            .query(
                "SELECT name, size, base_version FROM local_db WHERE alias = ?1 ORDER BY name",
                &[Value::Text(alias)],
                |r| LocalDbRow {
                    name: r.text(0).unwrap_or_default(),
                    size: r.int(1) as u64,
                    base_version: r.int(2) as u32,
                },
            )
            .map_err(|e| self.err("read local databases", e))
    }

    /// Records a database's local state.
    pub(crate) fn put_local_db(&self, alias: &str, row: &LocalDbRow) -> VfsResult<()> {
        self.db
            .run(
                "INSERT OR REPLACE INTO local_db(alias, name, size, base_version) VALUES (?1, ?2, ?3, ?4)",
                &[
                    Value::Text(alias),
                    Value::Text(&row.name),
                    Value::Int(row.size as i64),
                    Value::Int(row.base_version as i64),
                ],
            )
            .map_err(|e| self.err("write local database", e))
    }

    /// Forgets a database's local state (it is clean again).
    pub(crate) fn delete_local_db(&self, alias: &str, name: &str) -> VfsResult<()> {
        self.db
            .run("DELETE FROM local_db WHERE alias = ?1 AND name = ?2", &[Value::Text(alias), Value::Text(name)])
            .map_err(|e| self.err("delete local database", e))
    }

    /// The upload intent of a container, if one was interrupted.
    pub(crate) fn pending_upload(&self, alias: &str) -> VfsResult<Option<PendingUploadRow>> {
        let rows = self
            .db
            .query("SELECT manifest, promotions FROM pending_upload WHERE alias = ?1", &[Value::Text(alias)], |r| {
                PendingUploadRow {
                    manifest: r.blob(0).unwrap_or_default(),
                    promotions_json: r.text(1).unwrap_or_default(),
                }
            })
            .map_err(|e| self.err("read pending upload", e))?;
        Ok(rows.into_iter().next())
    }

    /// Records an upload intent before its manifest is installed.
    pub(crate) fn put_pending_upload(&self, alias: &str, row: &PendingUploadRow) -> VfsResult<()> {
        self.db
            .run(
                "INSERT OR REPLACE INTO pending_upload(alias, manifest, promotions) VALUES (?1, ?2, ?3)",
                &[Value::Text(alias), Value::Blob(&row.manifest), Value::Text(&row.promotions_json)],
            )
            .map_err(|e| self.err("write pending upload", e))
    }

    /// Clears an upload intent.
    pub(crate) fn delete_pending_upload(&self, alias: &str) -> VfsResult<()> {
        self.db
            .run("DELETE FROM pending_upload WHERE alias = ?1", &[Value::Text(alias)])
            .map_err(|e| self.err("delete pending upload", e))
    }
}
