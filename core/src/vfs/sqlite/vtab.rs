//! Virtual tables on connections of a bcv VFS: `bcv_container`, `bcv_database`, `bcv_block` (status) and
//! `bcv_kv` (the container's key-value object, transactional against the cloud copy).
//!
//! All four are eponymous: registered on a connection, they are queried by name without `CREATE VIRTUAL
//! TABLE`. Their schemas:
//!
//! ```sql
//! CREATE TABLE bcv_container(name TEXT, url TEXT, block_size INTEGER, name_bytes INTEGER,
//!                            ndatabase INTEGER, ndelete INTEGER, etag TEXT);
//! CREATE TABLE bcv_database(container TEXT, database TEXT, id INTEGER, version INTEGER, size INTEGER,
//!                           nblock INTEGER, ncache INTEGER, ndirty INTEGER, state TEXT, nclient INTEGER);
//! CREATE TABLE bcv_block(container TEXT, database TEXT, blockno INTEGER, blockid TEXT,
//!                        cache INTEGER, dirty INTEGER);
//! CREATE TABLE bcv_kv(name TEXT, value);   -- rowid = the kv row id
//! ```
//!
//! `bcv_database.state` is `''` (as uploaded), `'dirty'` (local changes) or `'local'` (never uploaded).
//! `bcv_kv` belongs to the container of the connection's main database (`/ALIAS/DB`). A transaction that
//! reads or writes it works on the object as it was when the transaction first touched it; COMMIT writes it
//! with a PUT conditional on that version and fails with `SQLITE_BUSY_SNAPSHOT` ("changed by another client")
//! when someone else changed it meanwhile: the transaction rolls back and nothing is overwritten. A read
//! outside a transaction makes one conditional GET (no body when unchanged). A read-only transaction keeps
//! its snapshot until the connection's next statement outside a transaction or its next write transaction
//! ends (SQLite does not tell a virtual table when a read-only transaction ends); a write based on such an old
//! snapshot fails with the conflict error rather than overwrite anything.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

use libsqlite3_sys as ffi;

use super::{VfsShared, guard};
use crate::vfs::VfsError;
use crate::vfs::attached::Container;
use crate::vfs::connection::Value;
use crate::vfs::kv::{KvRows, KvSnapshot};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    Database,
    Block,
    Kv,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Container => "bcv_container",
            Kind::Database => "bcv_database",
            Kind::Block => "bcv_block",
            Kind::Kv => "bcv_kv",
        }
    }

    fn schema(self) -> &'static CStr {
        match self {
            Kind::Container => c"CREATE TABLE x(name TEXT, url TEXT, block_size INTEGER, name_bytes INTEGER, ndatabase INTEGER, ndelete INTEGER, etag TEXT)",
            Kind::Database => c"CREATE TABLE x(container TEXT, database TEXT, id INTEGER, version INTEGER, size INTEGER, nblock INTEGER, ncache INTEGER, ndirty INTEGER, state TEXT, nclient INTEGER)",
            Kind::Block => c"CREATE TABLE x(container TEXT, database TEXT, blockno INTEGER, blockid TEXT, cache INTEGER, dirty INTEGER)",
            Kind::Kv => c"CREATE TABLE x(name TEXT, value)",
        }
    }
}

/// What a module's registration carries (freed by SQLite through `free_aux`).
struct Aux {
    kind: Kind,
    shared: Arc<VfsShared>,
}

/// The transaction state of `bcv_kv` on one connection.
#[derive(Default)]
struct KvTab {
    snapshot: KvSnapshot,
    /// The working copy of an open write transaction.
    txn: Option<KvRows>,
    changed: bool,
    /// Set when a read inside an explicit transaction used the snapshot: later reads and the first write of
    /// that transaction use the same snapshot, so the commit is conditional on what the transaction read.
    pinned: bool,
}

#[repr(C)]
struct Tab {
    base: ffi::sqlite3_vtab,
    kind: Kind,
    shared: Arc<VfsShared>,
    /// The container of the connection's main database, for `bcv_kv`.
    alias: Option<String>,
    /// The connection (to ask whether an explicit transaction is open).
    db: *mut ffi::sqlite3,
    kv: Mutex<KvTab>,
}

#[repr(C)]
struct Cursor {
    base: ffi::sqlite3_vtab_cursor,
    rows: Vec<(i64, Vec<Value>)>,
    pos: usize,
}

static MODULE: ffi::sqlite3_module = ffi::sqlite3_module {
    iVersion: 1,
    xCreate: None,
    xConnect: Some(x_connect),
    xBestIndex: Some(x_best_index),
    xDisconnect: Some(x_disconnect),
    xDestroy: Some(x_disconnect),
    xOpen: Some(x_open),
    xClose: Some(x_close),
    xFilter: Some(x_filter),
    xNext: Some(x_next),
    xEof: Some(x_eof),
    xColumn: Some(x_column),
    xRowid: Some(x_rowid),
    xUpdate: Some(x_update),
    xBegin: Some(x_begin),
    xSync: Some(x_sync),
    xCommit: Some(x_commit),
    xRollback: Some(x_rollback),
    xFindFunction: None,
    xRename: None,
    // SAFETY: the remaining fields are nullable function pointers (None) for module versions above 1.
    ..unsafe { std::mem::zeroed() }
};

/// Registers the four tables on connection `db`. The container of `bcv_kv` is the first component of the
/// main database's path.
///
/// Errors: [`VfsError::Sqlite`] from `sqlite3_create_module_v2`.
pub(crate) fn register(db: *mut ffi::sqlite3, shared: &Arc<VfsShared>) -> Result<(), VfsError> {
    for kind in [Kind::Container, Kind::Database, Kind::Block, Kind::Kv] {
        let name = CString::new(kind.name()).unwrap_or_default();
        let aux = Box::into_raw(Box::new(Aux { kind, shared: shared.clone() }));
        // SAFETY: `db` is an open handle; MODULE is static; SQLite owns `aux` from here and frees it with
        // `free_aux` (also when registration fails).
        let rc = unsafe { ffi::sqlite3_create_module_v2(db, name.as_ptr(), &MODULE, aux.cast(), Some(free_aux)) };
        if rc != ffi::SQLITE_OK {
            return Err(VfsError::sqlite(
                format!("register virtual table {}", kind.name()),
                super::SqliteError { code: rc, message: "sqlite3_create_module_v2 failed".into() },
            ));
        }
    }
    Ok(())
}

unsafe extern "C" fn free_aux(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` came from Box::into_raw in `register` and SQLite frees it once.
        drop(unsafe { Box::from_raw(p.cast::<Aux>()) });
    }
}

/// Sets the vtab's error message (SQLite frees it with sqlite3_free).
fn set_error(tab: *mut ffi::sqlite3_vtab, message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `tab` is a live vtab; the old message was allocated by SQLite's allocator (or NULL); "%s" copies.
    unsafe {
        ffi::sqlite3_free((*tab).zErrMsg.cast());
        (*tab).zErrMsg = ffi::sqlite3_mprintf(c"%s".as_ptr(), c.as_ptr());
    }
}

fn error_code(e: &VfsError) -> c_int {
    if e.is_conflict() { ffi::SQLITE_BUSY_SNAPSHOT } else { ffi::SQLITE_IOERR }
}

/// The alias in a main-database path `/ALIAS/DB`.
fn alias_of(db: *mut ffi::sqlite3) -> Option<String> {
    // SAFETY: an open handle; the filename is owned by SQLite and copied at once.
    let p = unsafe { ffi::sqlite3_db_filename(db, c"main".as_ptr()) };
    if p.is_null() {
        return None;
    }
    let path = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let alias = parts.next()?.to_string();
    (!alias.is_empty() && parts.next().is_some()).then_some(alias)
}

unsafe extern "C" fn x_connect(
    db: *mut ffi::sqlite3,
    aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    out: *mut *mut ffi::sqlite3_vtab,
    _err: *mut *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: `aux` is the Aux registered with this module and lives until the module is dropped.
        let aux = unsafe { &*aux.cast::<Aux>() };
        // SAFETY: an open handle inside xConnect, a static NUL-terminated schema.
        let rc = unsafe { ffi::sqlite3_declare_vtab(db, aux.kind.schema().as_ptr()) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let tab = Box::new(Tab {
            // SAFETY: an all-zero sqlite3_vtab is its documented initial state.
            base: unsafe { std::mem::zeroed() },
            kind: aux.kind,
            shared: aux.shared.clone(),
            alias: alias_of(db),
            db,
            kv: Mutex::new(KvTab::default()),
        });
        // SAFETY: `out` is SQLite's out pointer; `Tab` starts with its sqlite3_vtab (repr(C)).
        unsafe { *out = Box::into_raw(tab).cast() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_disconnect(tab: *mut ffi::sqlite3_vtab) -> c_int {
    guard(ffi::SQLITE_OK, || {
        // SAFETY: `tab` came from Box::into_raw in x_connect and is disconnected once.
        drop(unsafe { Box::from_raw(tab.cast::<Tab>()) });
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_best_index(_tab: *mut ffi::sqlite3_vtab, info: *mut ffi::sqlite3_index_info) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: `info` is valid for this call. Every table is a full scan of a small, materialized set.
        unsafe {
            (*info).estimatedCost = 1000.0;
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_open(_tab: *mut ffi::sqlite3_vtab, out: *mut *mut ffi::sqlite3_vtab_cursor) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: an all-zero cursor base is its initial state; `out` is SQLite's out pointer.
        let cursor = Box::new(Cursor { base: unsafe { std::mem::zeroed() }, rows: Vec::new(), pos: 0 });
        unsafe { *out = Box::into_raw(cursor).cast() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_close(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    guard(ffi::SQLITE_OK, || {
        // SAFETY: `cursor` came from Box::into_raw in x_open and is closed once.
        drop(unsafe { Box::from_raw(cursor.cast::<Cursor>()) });
        ffi::SQLITE_OK
    })
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn containers(shared: &VfsShared) -> Vec<Arc<Container>> {
    let mut v: Vec<Arc<Container>> =
        shared.containers.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    v.sort_by(|a, b| a.alias.cmp(&b.alias));
    v
}

fn container_rows(shared: &VfsShared) -> Vec<Vec<Value>> {
    containers(shared)
        .iter()
        .map(|c| {
            let m = c.manifest();
            let etag = c.manifest_version().e_tag.map(Value::Text).unwrap_or(Value::Null);
            vec![
                text(&c.alias),
                text(&c.url),
                int(m.block_size),
                int(m.name_bytes),
                int(m.databases.len()),
                int(m.delete_list.len()),
                etag,
            ]
        })
        .collect()
}

fn database_rows(shared: &VfsShared) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for c in containers(shared) {
        let mut status = c.status();
        status.sort_by(|a, b| a.name.cmp(&b.name));
        for s in status {
            let cached = c.database(&s.name).map(|db| db.cached_blocks()).unwrap_or(0);
            let state = if s.id == 0 {
                "local"
            } else if s.has_local_changes {
                "dirty"
            } else {
                ""
            };
            rows.push(vec![
                text(&c.alias),
                text(&s.name),
                int(s.id),
                int(s.version),
                int(s.size),
                int(s.blocks),
                int(cached),
                int(s.dirty_blocks),
                text(state),
                int(s.open_handles),
            ]);
        }
    }
    rows
}

fn block_rows(shared: &VfsShared) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for c in containers(shared) {
        let dbs: BTreeMap<String, _> =
            c.databases.lock().unwrap_or_else(|p| p.into_inner()).clone().into_iter().collect();
        for (name, db) in dbs {
            for (index, id, cached, dirty) in db.block_states() {
                rows.push(vec![
                    text(&c.alias),
                    text(&name),
                    int(index),
                    id.map(|id| Value::Text(id.to_string())).unwrap_or(Value::Null),
                    int(cached as i64),
                    int(dirty as i64),
                ]);
            }
        }
    }
    rows
}

impl Tab {
    fn kv_container(&self) -> Result<Arc<Container>, VfsError> {
        let alias = self.alias.as_deref().ok_or_else(|| {
            VfsError::InvalidArgument("bcv_kv needs a connection to a database /ALIAS/DB of a container".into())
        })?;
        self.shared.container(alias).ok_or_else(|| VfsError::NoSuchAlias { alias: alias.to_string() })
    }

    /// The kv rows this statement sees: the transaction's working copy, or a fresh snapshot.
    fn kv_rows(&self) -> Result<KvRows, VfsError> {
        let container = self.kv_container()?;
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rows) = &kv.txn {
            return Ok(rows.clone());
        }
        // SAFETY: the connection this table belongs to is open while its statements run.
        let in_transaction = unsafe { ffi::sqlite3_get_autocommit(self.db) } == 0;
        if !(in_transaction && kv.pinned) {
            kv.snapshot.refresh(&container.store, container.sealer())?;
        }
        kv.pinned = in_transaction;
        Ok(kv.snapshot.rows.clone())
    }
}

unsafe extern "C" fn x_filter(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    _idx: c_int,
    _idx_str: *const c_char,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: a live cursor of a live Tab (both repr(C) with their SQLite base first).
        let (cur, tab) = unsafe {
            let cur = &mut *cursor.cast::<Cursor>();
            let tab = &*cur.base.pVtab.cast::<Tab>();
            (cur, tab)
        };
        let rows: Vec<(i64, Vec<Value>)> = match tab.kind {
            Kind::Container => number(container_rows(&tab.shared)),
            Kind::Database => number(database_rows(&tab.shared)),
            Kind::Block => number(block_rows(&tab.shared)),
            Kind::Kv => match tab.kv_rows() {
                Ok(rows) => rows.into_iter().map(|(i, (k, v))| (i, vec![k, v])).collect(),
                Err(e) => {
                    set_error(cur.base.pVtab, &e.to_string());
                    return error_code(&e);
                }
            },
        };
        cur.rows = rows;
        cur.pos = 0;
        ffi::SQLITE_OK
    })
}

fn number(rows: Vec<Vec<Value>>) -> Vec<(i64, Vec<Value>)> {
    rows.into_iter().enumerate().map(|(i, r)| (i as i64 + 1, r)).collect()
}

unsafe extern "C" fn x_next(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: a live cursor.
    unsafe { (*cursor.cast::<Cursor>()).pos += 1 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_eof(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: a live cursor.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    (cur.pos >= cur.rows.len()) as c_int
}

unsafe extern "C" fn x_column(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    ctx: *mut ffi::sqlite3_context,
    i: c_int,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: a live cursor positioned on a row (SQLite checks xEof first).
        let cur = unsafe { &*cursor.cast::<Cursor>() };
        let value = cur.rows.get(cur.pos).and_then(|(_, r)| r.get(i as usize)).unwrap_or(&Value::Null);
        // SAFETY: `ctx` is valid for this call; SQLITE_TRANSIENT makes SQLite copy text and blobs.
        unsafe {
            match value {
                Value::Null => ffi::sqlite3_result_null(ctx),
                Value::Integer(n) => ffi::sqlite3_result_int64(ctx, *n),
                Value::Real(f) => ffi::sqlite3_result_double(ctx, *f),
                Value::Text(t) => {
                    ffi::sqlite3_result_text(ctx, t.as_ptr().cast(), t.len() as c_int, ffi::SQLITE_TRANSIENT())
                }
                Value::Blob(b) => {
                    ffi::sqlite3_result_blob(ctx, b.as_ptr().cast(), b.len() as c_int, ffi::SQLITE_TRANSIENT())
                }
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_rowid(cursor: *mut ffi::sqlite3_vtab_cursor, out: *mut ffi::sqlite3_int64) -> c_int {
    // SAFETY: a live cursor positioned on a row; `out` is SQLite's out pointer.
    let cur = unsafe { &*cursor.cast::<Cursor>() };
    unsafe { *out = cur.rows.get(cur.pos).map(|(i, _)| *i).unwrap_or(0) };
    ffi::SQLITE_OK
}

/// A value SQLite passes to xUpdate, copied.
fn read_value(v: *mut ffi::sqlite3_value) -> Value {
    // SAFETY: `v` is valid for the call; text and blob pointers are read before any other call on it.
    unsafe {
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                Value::Text(if p.is_null() {
                    String::new()
                } else {
                    String::from_utf8_lossy(std::slice::from_raw_parts(p, n)).into_owned()
                })
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(v).cast::<u8>();
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                Value::Blob(if p.is_null() { Vec::new() } else { std::slice::from_raw_parts(p, n).to_vec() })
            }
            _ => Value::Null,
        }
    }
}

/// Applies one INSERT, UPDATE or DELETE to the working copy (`args` as xUpdate receives them).
fn apply(rows: &mut KvRows, args: &[Value]) -> Result<i64, String> {
    let old = match args.first() {
        Some(Value::Integer(i)) => Some(*i),
        _ => None,
    };
    if args.len() == 1 {
        if let Some(i) = old {
            rows.remove(&i);
        }
        return Ok(0);
    }
    let [_, new_rowid, name, value] = args else { return Err("bcv_kv takes (name, value)".into()) };
    if matches!(name, Value::Null) {
        return Err("bcv_kv.name may not be NULL".into());
    }
    if let Some(i) = old {
        rows.remove(&i);
    }
    // A row with the same name is replaced (the name is the key).
    if let Some((&dup, _)) = rows.iter().find(|(_, (k, _))| k == name) {
        rows.remove(&dup);
    }
    let rowid = match new_rowid {
        Value::Integer(i) => *i,
        _ => old.unwrap_or_else(|| rows.keys().next_back().map_or(1, |m| m + 1)),
    };
    rows.insert(rowid, (name.clone(), value.clone()));
    Ok(rowid)
}

unsafe extern "C" fn x_update(
    vtab: *mut ffi::sqlite3_vtab,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
    out_rowid: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: a live Tab; argv holds argc values valid for this call.
        let tab = unsafe { &*vtab.cast::<Tab>() };
        if tab.kind != Kind::Kv {
            set_error(vtab, &format!("{} is read-only", tab.kind.name()));
            return ffi::SQLITE_READONLY;
        }
        let args: Vec<Value> = (0..argc as usize).map(|i| read_value(unsafe { *argv.add(i) })).collect();
        let mut kv = tab.kv.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rows) = kv.txn.as_mut() else {
            set_error(vtab, "bcv_kv: write outside a transaction");
            return ffi::SQLITE_MISUSE;
        };
        match apply(rows, &args) {
            Ok(rowid) => {
                kv.changed = true;
                if !out_rowid.is_null() {
                    // SAFETY: SQLite's out pointer for the new rowid.
                    unsafe { *out_rowid = rowid };
                }
                ffi::SQLITE_OK
            }
            Err(message) => {
                set_error(vtab, &message);
                ffi::SQLITE_CONSTRAINT
            }
        }
    })
}

unsafe extern "C" fn x_begin(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: a live Tab.
        let tab = unsafe { &*vtab.cast::<Tab>() };
        if tab.kind != Kind::Kv {
            return ffi::SQLITE_OK;
        }
        let result = tab.kv_container().and_then(|c| {
            let mut kv = tab.kv.lock().unwrap_or_else(|p| p.into_inner());
            if !kv.pinned {
                kv.snapshot.refresh(&c.store, c.sealer())?;
            }
            kv.txn = Some(kv.snapshot.rows.clone());
            kv.changed = false;
            Ok(())
        });
        match result {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                set_error(vtab, &e.to_string());
                error_code(&e)
            }
        }
    })
}

unsafe extern "C" fn x_sync(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    guard(ffi::SQLITE_ERROR, || {
        // SAFETY: a live Tab.
        let tab = unsafe { &*vtab.cast::<Tab>() };
        if tab.kind != Kind::Kv {
            return ffi::SQLITE_OK;
        }
        let result = tab.kv_container().and_then(|c| {
            let mut kv = tab.kv.lock().unwrap_or_else(|p| p.into_inner());
            if !kv.changed {
                return Ok(());
            }
            let rows = kv.txn.clone().unwrap_or_default();
            kv.snapshot.commit(&c.store, c.sealer(), rows)
        });
        match result {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                let message = if e.is_conflict() {
                    format!("bcv_kv was changed by another client since this transaction read it ({e}); retry")
                } else {
                    e.to_string()
                };
                set_error(vtab, &message);
                error_code(&e)
            }
        }
    })
}

unsafe extern "C" fn x_commit(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    end_transaction(vtab)
}

unsafe extern "C" fn x_rollback(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    end_transaction(vtab)
}

fn end_transaction(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    guard(ffi::SQLITE_OK, || {
        // SAFETY: a live Tab.
        let tab = unsafe { &*vtab.cast::<Tab>() };
        let mut kv = tab.kv.lock().unwrap_or_else(|p| p.into_inner());
        kv.txn = None;
        kv.changed = false;
        kv.pinned = false;
        ffi::SQLITE_OK
    })
}
