//! The few SQLite calls bcv makes itself (its cache index, checkpoints), straight on the C API.
//!
//! `libbcv.a` links the program's own SQLite, which may be old (Debian 12 ships 3.40), so bcv uses only calls
//! that SQLite has had for a decade, rather than a wrapper crate that references newer ones.

use std::ffi::{CStr, CString, c_int};
use std::ptr;

use libsqlite3_sys as ffi;

/// An error from one of bcv's own SQLite calls: SQLite's result code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLite code {code})")]
pub struct SqliteError {
    /// The (extended) result code.
    pub code: i32,
    /// SQLite's message.
    pub message: String,
}

impl SqliteError {
    fn other(code: c_int, message: &str) -> SqliteError {
        SqliteError { code, message: message.to_string() }
    }
}

/// An open SQLite connection, closed on drop. Used from one thread at a time (callers hold a mutex).
pub(crate) struct RawDb {
    db: *mut ffi::sqlite3,
}

// SAFETY: the connection is opened with SQLITE_OPEN_FULLMUTEX and only ever used behind a Mutex.
unsafe impl Send for RawDb {}

/// A value to bind.
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Blob(&'a [u8]),
    Text(&'a str),
}

impl RawDb {
    /// Opens `path` through the VFS named `vfs` (read-write, created when `create`).
    pub(crate) fn open(path: &str, vfs: &str, create: bool) -> Result<RawDb, SqliteError> {
        let c_path = CString::new(path).map_err(|_| SqliteError::other(ffi::SQLITE_MISUSE, "path contains NUL"))?;
        let c_vfs = CString::new(vfs).map_err(|_| SqliteError::other(ffi::SQLITE_MISUSE, "vfs contains NUL"))?;
        let mut flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_FULLMUTEX;
        if create {
            flags |= ffi::SQLITE_OPEN_CREATE;
        }
        let mut db = ptr::null_mut();
        // SAFETY: valid NUL-terminated strings and an out pointer; the handle is closed on every path.
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags, c_vfs.as_ptr()) };
        let raw = RawDb { db };
        if rc != ffi::SQLITE_OK {
            return Err(if db.is_null() { SqliteError::other(rc, "out of memory") } else { raw.error(rc) });
        }
        // SAFETY: an open handle.
        unsafe { ffi::sqlite3_extended_result_codes(db, 1) };
        Ok(raw)
    }

    /// Opens a private in-memory database (default VFS).
    pub(crate) fn open_memory() -> Result<RawDb, SqliteError> {
        let mut db = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_FULLMUTEX;
        // SAFETY: a static NUL-terminated name and an out pointer; NULL selects the default VFS.
        let rc = unsafe { ffi::sqlite3_open_v2(c":memory:".as_ptr(), &mut db, flags, ptr::null()) };
        let raw = RawDb { db };
        if rc != ffi::SQLITE_OK {
            return Err(if db.is_null() { SqliteError::other(rc, "out of memory") } else { raw.error(rc) });
        }
        Ok(raw)
    }

    /// Replaces the (in-memory) main database with the serialized image `image`.
    pub(crate) fn deserialize(&self, image: &[u8]) -> Result<(), SqliteError> {
        let n = image.len();
        // SAFETY: sqlite3_malloc64 returns a buffer SQLite owns (FREEONCLOSE) or NULL; it is filled before use.
        unsafe {
            let buf = ffi::sqlite3_malloc64(n.max(1) as u64).cast::<u8>();
            if buf.is_null() {
                return Err(SqliteError::other(ffi::SQLITE_NOMEM, "out of memory"));
            }
            ptr::copy_nonoverlapping(image.as_ptr(), buf, n);
            let flags = ffi::SQLITE_DESERIALIZE_FREEONCLOSE | ffi::SQLITE_DESERIALIZE_RESIZEABLE;
            let rc = ffi::sqlite3_deserialize(self.db, c"main".as_ptr(), buf, n as i64, n as i64, flags);
            if rc != ffi::SQLITE_OK {
                return Err(self.error(rc));
            }
        }
        Ok(())
    }

    /// The main database as one serialized image (the bytes of the database file).
    pub(crate) fn serialize(&self) -> Result<Vec<u8>, SqliteError> {
        let mut size: i64 = 0;
        // SAFETY: an open handle; the returned buffer is ours to free with sqlite3_free, copied first.
        unsafe {
            let p = ffi::sqlite3_serialize(self.db, c"main".as_ptr(), &mut size, 0);
            if p.is_null() {
                return Err(SqliteError::other(ffi::SQLITE_NOMEM, "sqlite3_serialize returned nothing"));
            }
            let bytes = std::slice::from_raw_parts(p, size.max(0) as usize).to_vec();
            ffi::sqlite3_free(p.cast());
            Ok(bytes)
        }
    }

    fn error(&self, code: c_int) -> SqliteError {
        // SAFETY: `db` is open; sqlite3_errmsg returns a NUL-terminated string owned by SQLite.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)) }.to_string_lossy().into_owned();
        SqliteError { code, message }
    }

    /// Runs one or more statements that return no rows.
    pub(crate) fn exec(&self, sql: &str) -> Result<(), SqliteError> {
        let c = CString::new(sql).map_err(|_| SqliteError::other(ffi::SQLITE_MISUSE, "SQL contains NUL"))?;
        // SAFETY: an open handle and a NUL-terminated string; no callback.
        let rc = unsafe { ffi::sqlite3_exec(self.db, c.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(self.error(rc)) }
    }

    /// Prepares one statement.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt<'_>, SqliteError> {
        let c = CString::new(sql).map_err(|_| SqliteError::other(ffi::SQLITE_MISUSE, "SQL contains NUL"))?;
        let mut st = ptr::null_mut();
        // SAFETY: an open handle, a NUL-terminated string (-1: read to NUL) and an out pointer.
        let rc = unsafe { ffi::sqlite3_prepare_v2(self.db, c.as_ptr(), -1, &mut st, ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(Stmt { db: self, st })
    }

    /// Runs `sql` with `params` and returns every row, each as the values of its columns read by `row`.
    pub(crate) fn query<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut row: impl FnMut(&Stmt<'_>) -> T,
    ) -> Result<Vec<T>, SqliteError> {
        let mut st = self.prepare(sql)?;
        st.bind_all(params)?;
        let mut out = Vec::new();
        while st.step()? {
            out.push(row(&st));
        }
        Ok(out)
    }

    /// Runs one statement with `params`, ignoring any rows.
    pub(crate) fn run(&self, sql: &str, params: &[Value<'_>]) -> Result<(), SqliteError> {
        let mut st = self.prepare(sql)?;
        st.bind_all(params)?;
        while st.step()? {}
        Ok(())
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        // SAFETY: `db` came from sqlite3_open_v2 (possibly failed, which close also accepts); statements are
        // finalized by their own Drop first, as they borrow the connection.
        unsafe { ffi::sqlite3_close(self.db) };
    }
}

/// A prepared statement, finalized on drop.
pub(crate) struct Stmt<'a> {
    db: &'a RawDb,
    st: *mut ffi::sqlite3_stmt,
}

impl Stmt<'_> {
    fn bind_all(&mut self, params: &[Value<'_>]) -> Result<(), SqliteError> {
        for (i, v) in params.iter().enumerate() {
            let i = (i + 1) as c_int;
            // SAFETY: a live statement; SQLITE_TRANSIENT makes SQLite copy blobs and texts.
            let rc = unsafe {
                match v {
                    Value::Null => ffi::sqlite3_bind_null(self.st, i),
                    Value::Int(n) => ffi::sqlite3_bind_int64(self.st, i, *n),
                    Value::Real(n) => ffi::sqlite3_bind_double(self.st, i, *n),
                    Value::Blob(b) => {
                        ffi::sqlite3_bind_blob(self.st, i, b.as_ptr().cast(), b.len() as c_int, ffi::SQLITE_TRANSIENT())
                    }
                    Value::Text(t) => {
                        ffi::sqlite3_bind_text(self.st, i, t.as_ptr().cast(), t.len() as c_int, ffi::SQLITE_TRANSIENT())
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.db.error(rc));
            }
        }
        Ok(())
    }

    /// Advances; true when a row is available.
    pub(crate) fn step(&mut self) -> Result<bool, SqliteError> {
        // SAFETY: a live statement.
        match unsafe { ffi::sqlite3_step(self.st) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(self.db.error(rc)),
        }
    }

    /// Column `i` as an integer (0 for NULL).
    pub(crate) fn int(&self, i: c_int) -> i64 {
        // SAFETY: a live statement positioned on a row.
        unsafe { ffi::sqlite3_column_int64(self.st, i) }
    }

    /// True when column `i` is NULL.
    pub(crate) fn is_null(&self, i: c_int) -> bool {
        // SAFETY: a live statement positioned on a row.
        unsafe { ffi::sqlite3_column_type(self.st, i) == ffi::SQLITE_NULL }
    }

    /// Column `i` as bytes (a blob or text), `None` for NULL.
    pub(crate) fn blob(&self, i: c_int) -> Option<Vec<u8>> {
        if self.is_null(i) {
            return None;
        }
        // SAFETY: a live statement on a row; the pointer is valid for `len` bytes until the next step.
        unsafe {
            let p = ffi::sqlite3_column_blob(self.st, i).cast::<u8>();
            let len = ffi::sqlite3_column_bytes(self.st, i).max(0) as usize;
            Some(if p.is_null() { Vec::new() } else { std::slice::from_raw_parts(p, len).to_vec() })
        }
    }

    /// Column `i` with its own type.
    pub(crate) fn value(&self, i: c_int) -> crate::vfs::connection::Value {
        use crate::vfs::connection::Value as V;
        // SAFETY: a live statement positioned on a row.
        match unsafe { ffi::sqlite3_column_type(self.st, i) } {
            ffi::SQLITE_INTEGER => V::Integer(self.int(i)),
            // SAFETY: as above.
            ffi::SQLITE_FLOAT => V::Real(unsafe { ffi::sqlite3_column_double(self.st, i) }),
            ffi::SQLITE_TEXT => V::Text(self.text(i).unwrap_or_default()),
            ffi::SQLITE_BLOB => V::Blob(self.blob(i).unwrap_or_default()),
            _ => V::Null,
        }
    }

    /// Column `i` as text, `None` for NULL.
    pub(crate) fn text(&self, i: c_int) -> Option<String> {
        self.blob(i).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: `st` came from sqlite3_prepare_v2 and is finalized once.
        unsafe { ffi::sqlite3_finalize(self.st) };
    }
}
