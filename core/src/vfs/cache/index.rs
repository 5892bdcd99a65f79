//! The cache directory's metadata (`index.db`): which slot holds what, attached containers with their manifest
//! and ETag, local databases and upload intents — everything a restart needs to make no request at all.
//!
//! It is an ordinary SQLite database opened through the platform's own VFS (never bcv's), in WAL mode with
//! `synchronous=FULL`, so a committed change survives a killed process and a power cut.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

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
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) `DIR/index.db`.
    pub(crate) fn open(dir: &Path) -> VfsResult<Index> {
        let path = dir.join(INDEX_FILE);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, PLATFORM_VFS)
            .map_err(|e| VfsError::sqlite(format!("open cache index {}", path.display()), e))?;
        let index = Index { conn, path };
        index
            .conn
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .and_then(|_| index.conn.execute_batch(SCHEMA))
            .map_err(|e| index.err("initialise", e))?;
        Ok(index)
    }

    fn err(&self, what: &str, e: rusqlite::Error) -> VfsError {
        VfsError::sqlite(format!("cache index {}: {what}", self.path.display()), e)
    }

    /// Reads a configuration value.
    pub(crate) fn config(&self, key: &str) -> VfsResult<Option<i64>> {
        self.conn
            .query_row("SELECT v FROM config WHERE k = ?1", [key], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|e| self.err("read config", e))
    }

    /// Writes a configuration value.
    pub(crate) fn set_config(&self, key: &str, value: i64) -> VfsResult<()> {
        self.conn
            .execute("INSERT OR REPLACE INTO config(k, v) VALUES (?1, ?2)", params![key, value])
            .map(|_| ())
            .map_err(|e| self.err("write config", e))
    }

    /// All slot rows.
    pub(crate) fn slots(&self) -> VfsResult<Vec<SlotRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT n, block_id, alias, db, idx, present, used FROM slot ORDER BY n")
            .map_err(|e| self.err("read slots", e))?;
        let rows = stmt
            .query_map([], |r| {
                let alias: Option<String> = r.get(2)?;
                let db: Option<String> = r.get(3)?;
                let idx: Option<i64> = r.get(4)?;
                let dirty = match (alias, db, idx) {
                    (Some(a), Some(d), Some(i)) => Some((a, d, i as u32)),
                    _ => None,
                };
                Ok(SlotRow {
                    n: r.get::<_, i64>(0)? as u32,
                    block_id: r.get(1)?,
                    dirty,
                    present: r.get(5)?,
                    used: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(|e| self.err("read slots", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err("read slots", e))
    }

    /// Writes slot rows (`None` owner = free: the row is deleted) in one transaction.
    pub(crate) fn write_slots(&mut self, rows: &[SlotRow]) -> VfsResult<()> {
        let path = self.path.clone();
        let err = |e| VfsError::sqlite(format!("cache index {}: write slots", path.display()), e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO slot(n, block_id, alias, db, idx, present, used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            let mut del = tx.prepare_cached("DELETE FROM slot WHERE n = ?1").map_err(err)?;
            for row in rows {
                if row.block_id.is_none() && row.dirty.is_none() {
                    del.execute([row.n]).map_err(err)?;
                    continue;
                }
                let (alias, db, idx) = match &row.dirty {
                    Some((a, d, i)) => (Some(a.as_str()), Some(d.as_str()), Some(*i)),
                    None => (None, None, None),
                };
                put.execute(params![row.n, row.block_id, alias, db, idx, row.present, row.used as i64]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// All attached containers.
    pub(crate) fn containers(&self) -> VfsResult<Vec<ContainerRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT alias, url, manifest, version FROM container ORDER BY alias")
            .map_err(|e| self.err("read containers", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ContainerRow { alias: r.get(0)?, url: r.get(1)?, manifest: r.get(2)?, version_json: r.get(3)? })
            })
            .map_err(|e| self.err("read containers", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err("read containers", e))
    }

    /// Records (or replaces) an attached container's manifest.
    pub(crate) fn put_container(&self, row: &ContainerRow) -> VfsResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO container(alias, url, manifest, version) VALUES (?1, ?2, ?3, ?4)",
                params![row.alias, row.url, row.manifest, row.version_json],
            )
            .map(|_| ())
            .map_err(|e| self.err("write container", e))
    }

    /// Forgets a container and its local databases.
    pub(crate) fn delete_container(&self, alias: &str) -> VfsResult<()> {
        self.conn
            .execute_batch("BEGIN")
            .and_then(|_| self.conn.execute("DELETE FROM container WHERE alias = ?1", [alias]))
            .and_then(|_| self.conn.execute("DELETE FROM local_db WHERE alias = ?1", [alias]))
            .and_then(|_| self.conn.execute("DELETE FROM pending_upload WHERE alias = ?1", [alias]))
            .and_then(|_| self.conn.execute_batch("COMMIT"))
            .map_err(|e| {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.err("delete container", e)
            })
    }

    /// The local databases of a container.
    pub(crate) fn local_dbs(&self, alias: &str) -> VfsResult<Vec<LocalDbRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, size, base_version FROM local_db WHERE alias = ?1 ORDER BY name")
            .map_err(|e| self.err("read local databases", e))?;
        let rows = stmt
            .query_map([alias], |r| {
                Ok(LocalDbRow {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    base_version: r.get::<_, i64>(2)? as u32,
                })
            })
            .map_err(|e| self.err("read local databases", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err("read local databases", e))
    }

    /// Records a database's local state.
    pub(crate) fn put_local_db(&self, alias: &str, row: &LocalDbRow) -> VfsResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO local_db(alias, name, size, base_version) VALUES (?1, ?2, ?3, ?4)",
                params![alias, row.name, row.size as i64, row.base_version],
            )
            .map(|_| ())
            .map_err(|e| self.err("write local database", e))
    }

    /// Forgets a database's local state (it is clean again).
    pub(crate) fn delete_local_db(&self, alias: &str, name: &str) -> VfsResult<()> {
        self.conn
            .execute("DELETE FROM local_db WHERE alias = ?1 AND name = ?2", [alias, name])
            .map(|_| ())
            .map_err(|e| self.err("delete local database", e))
    }

    /// The upload intent of a container, if one was interrupted.
    pub(crate) fn pending_upload(&self, alias: &str) -> VfsResult<Option<PendingUploadRow>> {
        self.conn
            .query_row("SELECT manifest, promotions FROM pending_upload WHERE alias = ?1", [alias], |r| {
                Ok(PendingUploadRow { manifest: r.get(0)?, promotions_json: r.get(1)? })
            })
            .optional()
            .map_err(|e| self.err("read pending upload", e))
    }

    /// Records an upload intent before its manifest is installed.
    pub(crate) fn put_pending_upload(&self, alias: &str, row: &PendingUploadRow) -> VfsResult<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO pending_upload(alias, manifest, promotions) VALUES (?1, ?2, ?3)",
                params![alias, row.manifest, row.promotions_json],
            )
            .map(|_| ())
            .map_err(|e| self.err("write pending upload", e))
    }

    /// Clears an upload intent.
    pub(crate) fn delete_pending_upload(&self, alias: &str) -> VfsResult<()> {
        self.conn
            .execute("DELETE FROM pending_upload WHERE alias = ?1", [alias])
            .map(|_| ())
            .map_err(|e| self.err("delete pending upload", e))
    }
}
