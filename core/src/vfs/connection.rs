//! [`Connection`]: an SQLite connection to a database of a [`BlockVfs`], as a handle-runtime node.
//!
//! The Python, Node and Swift packages build their database APIs on this type: it opens `/ALIAS/DB`
//! through the VFS, prepares and steps statements with typed values, and follows the handle contract —
//! releasing the last handle closes the database on the reaper thread, `close()` interrupts a running
//! statement and closes it, and closing the VFS or detaching the container closes its connections.
//!
//! C programs do not need it: they open the same paths with their own `sqlite3_open_v2(…, vfs_name)`.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libsqlite3_sys as ffi;

use super::fs::BlockVfs;
use super::sqlite::SqliteError;
use super::{VfsError, VfsResult};
use crate::handle::{Closed, Node, NodeCore, NodeHooks, TaskResource};

/// A value read from or bound to SQLite.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// How to open a [`Connection`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Open read-only. Default false.
    pub read_only: bool,
    /// Create the database (locally, until uploaded) when it does not exist. Default true.
    pub create: bool,
    /// How long a statement waits for a lock held by another connection before `SQLITE_BUSY`. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { read_only: false, create: true, busy_timeout: Duration::from_secs(5) }
    }
}

/// The open state of a connection: the handle and its live statements, by id.
struct Open {
    db: *mut ffi::sqlite3,
    statements: HashMap<u64, *mut ffi::sqlite3_stmt>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_FULLMUTEX and every use goes through the Mutex around it.
unsafe impl Send for Open {}

struct Shared {
    path: String,
    open: Mutex<Option<Open>>,
    /// The raw handle for `sqlite3_interrupt`, which is safe from any thread while the handle is open.
    interrupt: AtomicPtr<ffi::sqlite3>,
    next_statement: AtomicU64,
}

fn lock(m: &Mutex<Option<Open>>) -> std::sync::MutexGuard<'_, Option<Open>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn closed(&self) -> VfsError {
        VfsError::Closed(format!("connection to {}", self.path))
    }

    /// Finalizes every statement and closes the handle. Idempotent.
    fn close_now(&self) {
        self.interrupt.store(ptr::null_mut(), Ordering::Release);
        if let Some(open) = lock(&self.open).take() {
            for (_, st) in open.statements {
                // SAFETY: each statement came from sqlite3_prepare_v2 on this handle and is finalized once.
                unsafe { ffi::sqlite3_finalize(st) };
            }
            // SAFETY: an open handle with no statements left.
            let rc = unsafe { ffi::sqlite3_close(open.db) };
            if rc != ffi::SQLITE_OK {
                tracing::warn!(path = %self.path, rc, "sqlite3_close failed");
            }
        }
    }

    fn with_open<T>(&self, f: impl FnOnce(&mut Open) -> VfsResult<T>) -> VfsResult<T> {
        let mut guard = lock(&self.open);
        let open = guard.as_mut().ok_or_else(|| self.closed())?;
        f(open)
    }
}

/// `close()` interrupts whatever runs; the handle is closed once no call is in flight (teardown).
struct ConnectionHooks(Arc<Shared>);

impl NodeHooks for ConnectionHooks {
    fn on_close(&self, _closed: Closed) {
        let db = self.0.interrupt.load(Ordering::Acquire);
        if !db.is_null() {
            // SAFETY: sqlite3_interrupt is safe from any thread while the handle is open; the pointer is cleared
            // before the handle closes, and closing needs the mutex a running call holds.
            unsafe { ffi::sqlite3_interrupt(db) };
        }
    }
    fn on_teardown(&self) {
        self.0.close_now();
    }
}

fn db_error(db: *mut ffi::sqlite3, code: c_int, context: &str) -> VfsError {
    // SAFETY: `db` is an open handle; sqlite3_errmsg returns a NUL-terminated string owned by SQLite.
    let mut message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }.to_string_lossy().into_owned();
    let io = super::sqlite::last_error();
    if code & 0xff == ffi::SQLITE_IOERR && !io.is_empty() {
        message = format!("{message}: {io}");
    }
    VfsError::sqlite(context.to_string(), SqliteError { code, message })
}

fn misuse(context: &str, message: &str) -> VfsError {
    VfsError::sqlite(context.to_string(), SqliteError { code: ffi::SQLITE_MISUSE, message: message.to_string() })
}

/// An SQLite connection opened through a [`BlockVfs`]. Thread-safe: calls are serialized per connection.
///
/// Dropping it releases the handle; the database is closed once no statement step is in flight.
pub struct Connection {
    node: Node,
    resource: TaskResource,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("path", &self.shared.path).finish()
    }
}

impl Connection {
    /// Opens database `path` (`/ALIAS/DB`) of `vfs`. The connection is a child node of the container's node
    /// (or of the VFS for other paths), so closing either closes it.
    ///
    /// Errors: [`VfsError::Closed`] when the VFS is closed; [`VfsError::Sqlite`] from `sqlite3_open_v2` (a
    /// missing database opened with `create: false`, an I/O error naming the block or object behind it).
    pub fn open(vfs: &BlockVfs, path: &str, options: &ConnectOptions) -> VfsResult<Connection> {
        let parent = vfs.node_for_path(path)?;
        let shared = Arc::new(Shared {
            path: path.to_string(),
            open: Mutex::new(None),
            interrupt: AtomicPtr::new(ptr::null_mut()),
            next_statement: AtomicU64::new(1),
        });
        let (resource, node) = TaskResource::create_with(
            vfs.runtime(),
            "vfs connection",
            Some(&parent),
            Some(Box::new(ConnectionHooks(shared.clone()))),
        )
        .map_err(VfsError::node_closed)?;
        let context = format!("open {path}");
        let c_path = CString::new(path).map_err(|_| misuse(&context, "the path contains NUL"))?;
        let c_vfs = CString::new(vfs.name()).map_err(|_| misuse(&context, "the VFS name contains NUL"))?;
        let mut flags = ffi::SQLITE_OPEN_FULLMUTEX;
        flags |= if options.read_only { ffi::SQLITE_OPEN_READONLY } else { ffi::SQLITE_OPEN_READWRITE };
        if options.create && !options.read_only {
            flags |= ffi::SQLITE_OPEN_CREATE;
        }
        let mut db = ptr::null_mut();
        // SAFETY: NUL-terminated strings and an out pointer; the handle is closed on every failure path.
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags, c_vfs.as_ptr()) };
        if rc != ffi::SQLITE_OK {
            let e = if db.is_null() { misuse(&context, "out of memory") } else { db_error(db, rc, &context) };
            // SAFETY: close accepts the handle of a failed open (or NULL).
            unsafe { ffi::sqlite3_close(db) };
            return Err(e);
        }
        // SAFETY: an open handle.
        unsafe {
            ffi::sqlite3_extended_result_codes(db, 1);
            ffi::sqlite3_busy_timeout(db, options.busy_timeout.as_millis().min(i32::MAX as u128) as c_int);
        }
        *lock(&shared.open) = Some(Open { db, statements: HashMap::new() });
        shared.interrupt.store(db, Ordering::Release);
        if let Err(e) = super::sqlite::vtab::register(db, vfs.shared()) {
            shared.close_now();
            return Err(e);
        }
        Ok(Connection { node, resource, shared })
    }

    /// The connection's node: `close()` (interrupts a running statement, then closes), state.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The path it was opened with.
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    /// Runs `f` as an in-flight operation of the node (so teardown waits for it) on the open handle.
    fn call<T>(&self, f: impl FnOnce(&mut Open) -> VfsResult<T>) -> VfsResult<T> {
        let _op = self.resource.core.begin_op().map_err(|_| self.shared.closed())?;
        self.shared.with_open(f)
    }

    /// Runs zero or more `;`-separated statements that take no parameters (rows are discarded).
    pub fn execute_batch(&self, sql: &str) -> VfsResult<()> {
        let c = CString::new(sql).map_err(|_| misuse("execute", "the SQL contains NUL"))?;
        self.call(|open| {
            // SAFETY: an open handle and a NUL-terminated string; no callback.
            let rc = unsafe { ffi::sqlite3_exec(open.db, c.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
            if rc == ffi::SQLITE_OK { Ok(()) } else { Err(db_error(open.db, rc, "execute")) }
        })
    }

    /// Prepares one statement. Trailing SQL other than whitespace and comments is an error (run scripts with
    /// [`execute_batch`](Self::execute_batch)).
    pub fn prepare(&self, sql: &str) -> VfsResult<Statement> {
        let c = CString::new(sql).map_err(|_| misuse("prepare", "the SQL contains NUL"))?;
        let id = self.shared.next_statement.fetch_add(1, Ordering::Relaxed);
        self.call(|open| {
            let mut st = ptr::null_mut();
            let mut tail = ptr::null();
            // SAFETY: an open handle, a NUL-terminated string (-1: read to NUL) and out pointers.
            let rc = unsafe { ffi::sqlite3_prepare_v2(open.db, c.as_ptr(), -1, &mut st, &mut tail) };
            if rc != ffi::SQLITE_OK {
                return Err(db_error(open.db, rc, "prepare"));
            }
            // SAFETY: `tail` points into `c`, at or before its NUL.
            let rest = unsafe { CStr::from_ptr(tail) }.to_string_lossy();
            if !only_comments(&rest) {
                // SAFETY: finalizing a statement we own (NULL is allowed).
                unsafe { ffi::sqlite3_finalize(st) };
                return Err(misuse("prepare", "only one statement can be prepared at a time"));
            }
            if st.is_null() {
                return Err(misuse("prepare", "the SQL holds no statement"));
            }
            open.statements.insert(id, st);
            Ok(())
        })?;
        Ok(Statement { conn: self.shared.clone(), core: self.resource.core.clone(), id })
    }

    /// Runs one statement with `params` and returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> VfsResult<u64> {
        let st = self.prepare(sql)?;
        st.bind(params)?;
        while st.step()?.is_some() {}
        Ok(self.changes())
    }

    /// Runs one query with `params` and returns all its rows.
    pub fn query(&self, sql: &str, params: &[Value]) -> VfsResult<Vec<Vec<Value>>> {
        let st = self.prepare(sql)?;
        st.bind(params)?;
        let mut rows = Vec::new();
        while let Some(row) = st.step()? {
            rows.push(row);
        }
        Ok(rows)
    }

    fn read<T: Default>(&self, f: impl FnOnce(*mut ffi::sqlite3) -> T) -> T {
        self.shared.with_open(|open| Ok(f(open.db))).unwrap_or_default()
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE (0 once closed).
    pub fn changes(&self) -> u64 {
        // SAFETY: an open handle.
        self.read(|db| unsafe { ffi::sqlite3_changes(db) }.max(0) as u64)
    }

    /// Rows changed since the connection opened.
    pub fn total_changes(&self) -> u64 {
        // SAFETY: an open handle.
        self.read(|db| unsafe { ffi::sqlite3_total_changes(db) }.max(0) as u64)
    }

    /// The rowid of the last successful INSERT.
    pub fn last_insert_rowid(&self) -> i64 {
        // SAFETY: an open handle.
        self.read(|db| unsafe { ffi::sqlite3_last_insert_rowid(db) })
    }

    /// True inside an explicit transaction.
    pub fn in_transaction(&self) -> bool {
        // SAFETY: an open handle.
        self.read(|db| unsafe { ffi::sqlite3_get_autocommit(db) } == 0)
    }

    /// True until the connection is closed.
    pub fn is_open(&self) -> bool {
        lock(&self.shared.open).is_some()
    }

    /// Makes a running statement fail with `SQLITE_INTERRUPT` (from any thread).
    pub fn interrupt(&self) {
        let db = self.shared.interrupt.load(Ordering::Acquire);
        if !db.is_null() {
            // SAFETY: as in `ConnectionHooks::on_close`.
            unsafe { ffi::sqlite3_interrupt(db) };
        }
    }

    /// Closes the database now (finalizing its statements) and closes the node. Idempotent.
    pub fn close(&self) {
        self.node.close();
        self.interrupt();
        self.shared.close_now();
    }
}

/// True when `sql` holds only whitespace, `;` and comments.
fn only_comments(sql: &str) -> bool {
    let mut rest = sql.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return false;
        }
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    }
    true
}

/// A prepared statement of a [`Connection`]. Thread-safe; finalized on drop or when the connection closes
/// (later calls then fail with [`VfsError::Closed`]).
pub struct Statement {
    conn: Arc<Shared>,
    core: Arc<NodeCore>,
    id: u64,
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statement").field("connection", &self.conn.path).field("id", &self.id).finish()
    }
}

impl Statement {
    /// Runs `f` on the raw statement as an in-flight operation of the connection's node.
    fn call<T>(&self, f: impl FnOnce(*mut ffi::sqlite3, *mut ffi::sqlite3_stmt) -> VfsResult<T>) -> VfsResult<T> {
        let _op = self.core.begin_op().map_err(|_| self.conn.closed())?;
        self.conn.with_open(|open| {
            let st = *open.statements.get(&self.id).ok_or_else(|| self.conn.closed())?;
            f(open.db, st)
        })
    }

    /// The column names of the result (empty for statements without rows).
    pub fn columns(&self) -> VfsResult<Vec<String>> {
        self.call(|_, st| {
            // SAFETY: a live statement; names are NUL-terminated strings owned by SQLite, copied at once.
            let n = unsafe { ffi::sqlite3_column_count(st) };
            Ok((0..n)
                .map(|i| {
                    let p = unsafe { ffi::sqlite3_column_name(st, i) };
                    if p.is_null() {
                        String::new()
                    } else {
                        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                    }
                })
                .collect())
        })
    }

    /// The declared types of the result columns (`None` for expressions).
    pub fn column_decltypes(&self) -> VfsResult<Vec<Option<String>>> {
        self.call(|_, st| {
            // SAFETY: as in `columns`.
            let n = unsafe { ffi::sqlite3_column_count(st) };
            Ok((0..n)
                .map(|i| {
                    let p = unsafe { ffi::sqlite3_column_decltype(st, i) };
                    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                })
                .collect())
        })
    }

    /// The number of parameters (`?`, `?NNN`, `:name`, `@name`, `$name`); the largest index.
    pub fn parameter_count(&self) -> VfsResult<usize> {
        // SAFETY: a live statement.
        self.call(|_, st| Ok(unsafe { ffi::sqlite3_bind_parameter_count(st) }.max(0) as usize))
    }

    /// The name of parameter `index` (1-based) with its prefix (`:a`), or `None` for a nameless `?`.
    pub fn parameter_name(&self, index: usize) -> VfsResult<Option<String>> {
        self.call(|_, st| {
            // SAFETY: a live statement; the name is owned by SQLite and copied at once.
            let p = unsafe { ffi::sqlite3_bind_parameter_name(st, index as c_int) };
            Ok((!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()))
        })
    }

    /// True when the statement does not write to the database.
    pub fn is_readonly(&self) -> VfsResult<bool> {
        // SAFETY: a live statement.
        self.call(|_, st| Ok(unsafe { ffi::sqlite3_stmt_readonly(st) } != 0))
    }

    /// Resets the statement and binds `params` to parameters 1..=n.
    ///
    /// Errors: a count other than [`parameter_count`](Self::parameter_count); SQLite's bind errors.
    pub fn bind(&self, params: &[Value]) -> VfsResult<()> {
        self.call(|db, st| {
            // SAFETY: a live statement.
            let expected = unsafe { ffi::sqlite3_bind_parameter_count(st) }.max(0) as usize;
            if params.len() != expected {
                return Err(misuse(
                    "bind",
                    &format!("the statement takes {expected} parameters, {} were supplied", params.len()),
                ));
            }
            reset(st);
            for (i, value) in params.iter().enumerate() {
                bind_one(db, st, i as c_int + 1, value)?;
            }
            Ok(())
        })
    }

    /// Resets the statement and binds values to parameters by index (1-based); unlisted ones become NULL.
    pub fn bind_indexed(&self, params: &[(usize, Value)]) -> VfsResult<()> {
        self.call(|db, st| {
            reset(st);
            // SAFETY: a live statement.
            unsafe { ffi::sqlite3_clear_bindings(st) };
            for (i, value) in params {
                bind_one(db, st, *i as c_int, value)?;
            }
            Ok(())
        })
    }

    /// Runs the statement to its next row: `Some(values)` for a row, `None` when done (the statement then
    /// resets itself on the next [`bind`](Self::bind) or step).
    ///
    /// Errors: SQLite's (`SQLITE_BUSY`, constraint violations, `SQLITE_INTERRUPT` after `close()`…); I/O
    /// errors name the block or object behind them.
    pub fn step(&self) -> VfsResult<Option<Vec<Value>>> {
        self.call(|db, st| {
            // SAFETY: a live statement of an open handle, used under the connection's mutex.
            let rc = unsafe { ffi::sqlite3_step(st) };
            match rc {
                ffi::SQLITE_ROW => {
                    let n = unsafe { ffi::sqlite3_column_count(st) };
                    Ok(Some((0..n).map(|i| column_value(st, i)).collect()))
                }
                ffi::SQLITE_DONE => Ok(None),
                _ => {
                    // SAFETY: reset returns the same error and readies the statement for reuse.
                    unsafe { ffi::sqlite3_reset(st) };
                    Err(db_error(db, rc, "step"))
                }
            }
        })
    }

    /// Resets the statement so it can run again (bindings stay).
    pub fn reset(&self) -> VfsResult<()> {
        self.call(|_, st| {
            reset(st);
            Ok(())
        })
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        if let Some(open) = lock(&self.conn.open).as_mut()
            && let Some(st) = open.statements.remove(&self.id)
        {
            // SAFETY: the statement is live and removed from the map, so it is finalized once.
            unsafe { ffi::sqlite3_finalize(st) };
        }
    }
}

fn reset(st: *mut ffi::sqlite3_stmt) {
    // SAFETY: a live statement; the result repeats the last step's error, already reported.
    unsafe { ffi::sqlite3_reset(st) };
}

fn bind_one(db: *mut ffi::sqlite3, st: *mut ffi::sqlite3_stmt, i: c_int, value: &Value) -> VfsResult<()> {
    // SAFETY: a live statement; SQLITE_TRANSIENT makes SQLite copy text and blobs before returning.
    let rc = unsafe {
        match value {
            Value::Null => ffi::sqlite3_bind_null(st, i),
            Value::Integer(v) => ffi::sqlite3_bind_int64(st, i, *v),
            Value::Real(v) => ffi::sqlite3_bind_double(st, i, *v),
            Value::Text(t) => {
                ffi::sqlite3_bind_text(st, i, t.as_ptr().cast(), t.len() as c_int, ffi::SQLITE_TRANSIENT())
            }
            Value::Blob(b) => {
                ffi::sqlite3_bind_blob(st, i, b.as_ptr().cast(), b.len() as c_int, ffi::SQLITE_TRANSIENT())
            }
        }
    };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(db_error(db, rc, &format!("bind parameter {i}"))) }
}

fn column_value(st: *mut ffi::sqlite3_stmt, i: c_int) -> Value {
    // SAFETY: a statement positioned on a row; text and blob pointers are valid until the next step and are
    // copied at once (their length is read after the pointer, as SQLite requires).
    unsafe {
        match ffi::sqlite3_column_type(st, i) {
            ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_column_int64(st, i)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(st, i)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_column_text(st, i);
                let n = ffi::sqlite3_column_bytes(st, i).max(0) as usize;
                if p.is_null() {
                    Value::Text(String::new())
                } else {
                    Value::Text(String::from_utf8_lossy(std::slice::from_raw_parts(p, n)).into_owned())
                }
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_column_blob(st, i).cast::<u8>();
                let n = ffi::sqlite3_column_bytes(st, i).max(0) as usize;
                if p.is_null() {
                    Value::Blob(Vec::new())
                } else {
                    Value::Blob(std::slice::from_raw_parts(p, n).to_vec())
                }
            }
            _ => Value::Null,
        }
    }
}
