//! The SQLite VFS: registered into the SQLite the program links (its own or the system's; the Python and Node
//! packages and the CLI bundle one), serving paths `/ALIAS/DB` from the block cache.
//!
//! Main database files are served by [`file`] from a [`Database`](super::database::Database); journals, WAL
//! files and temporary files are real files in the cache directory (`DIR/ALIAS/DB-journal`, `-wal`), opened
//! through the platform VFS behind a thin forwarding layer. Locks and the WAL-index are kept in process
//! ([`locks`]), since one process owns the cache directory.

mod file;
pub(crate) mod locks;
pub(crate) mod raw;
pub(crate) mod vtab;

pub use raw::SqliteError;

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libsqlite3_sys as ffi;

use super::VfsError;
use super::attached::Container;
use super::cache::PLATFORM_VFS;

/// What the SQLite callbacks need from the VFS object. Lives as long as the registration.
pub(crate) struct VfsShared {
    pub(crate) name: CString,
    pub(crate) cache_dir: PathBuf,
    pub(crate) containers: std::sync::RwLock<std::collections::HashMap<String, Arc<Container>>>,
    pub(crate) open_files: AtomicUsize,
    pub(crate) platform: PlatformVfs,
    pub(crate) nrequest: usize,
    /// Seals anonymous temporary files once a secure container is attached (they may hold its data).
    pub(crate) temp_sealer: std::sync::Mutex<Option<Arc<crate::vfs::crypto::Sealer>>>,
}

/// The platform VFS (`unix`), which SQLite never frees.
#[derive(Clone, Copy)]
pub(crate) struct PlatformVfs(pub(crate) *mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable after registration and thread-safe by contract.
unsafe impl Send for PlatformVfs {}
// SAFETY: as above.
unsafe impl Sync for PlatformVfs {}

impl VfsShared {
    pub(crate) fn container(&self, alias: &str) -> Option<Arc<Container>> {
        self.containers.read().unwrap_or_else(|p| p.into_inner()).get(alias).cloned()
    }
}

/// A registered `sqlite3_vfs`. Unregistered on drop; its memory is kept while SQLite files are still open.
pub(crate) struct Registration {
    vfs: *mut ffi::sqlite3_vfs,
    shared: Arc<VfsShared>,
}
// SAFETY: the pointer is only used to unregister, which SQLite serialises.
unsafe impl Send for Registration {}
// SAFETY: as above.
unsafe impl Sync for Registration {}

thread_local! {
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Records `e` as this thread's last VFS error (SQLite's `xGetLastError`, bcv's `last_error()`).
pub(crate) fn set_last_error(e: &VfsError) {
    let msg = e.to_string();
    tracing::warn!(error = %msg, "bcv vfs");
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
}

/// The last error a VFS callback met on this thread (empty when none): SQLite's result codes cannot carry a
/// message, so this names the object and the cause behind an `SQLITE_IOERR`.
pub fn last_error() -> String {
    LAST_ERROR.with(|l| l.borrow().clone())
}

/// The SQLite result code for a VFS error met while doing `io_code` work.
pub(crate) fn sqlite_code(e: &VfsError, io_code: c_int) -> c_int {
    match e {
        VfsError::Busy { .. } | VfsError::CacheBusy { .. } => ffi::SQLITE_BUSY,
        VfsError::Conflict { .. } => ffi::SQLITE_BUSY_SNAPSHOT,
        VfsError::NoSuchDatabase { .. } | VfsError::NoSuchAlias { .. } => ffi::SQLITE_CANTOPEN,
        _ => io_code,
    }
}

impl Registration {
    /// Registers a VFS named `shared.name`. Errors: the platform VFS is missing, or SQLite refuses.
    pub(crate) fn register(shared: Arc<VfsShared>) -> Result<Registration, VfsError> {
        let platform = shared.platform.0;
        // SAFETY: `platform` is a live registered VFS (checked by the caller via `platform_vfs`).
        let p = unsafe { &*platform };
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 3,
            szOsFile: file::file_size_for(p.szOsFile),
            mxPathname: p.mxPathname.max(512),
            pNext: ptr::null_mut(),
            zName: shared.name.as_ptr(),
            pAppData: Arc::as_ptr(&shared) as *mut c_void,
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: p.xDlOpen,
            xDlError: p.xDlError,
            xDlSym: p.xDlSym,
            xDlClose: p.xDlClose,
            xRandomness: p.xRandomness,
            xSleep: p.xSleep,
            xCurrentTime: p.xCurrentTime,
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: p.xCurrentTimeInt64,
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        let vfs = Box::into_raw(vfs);
        // SAFETY: `vfs` is a complete, heap-allocated sqlite3_vfs that outlives its registration.
        let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
        if rc != ffi::SQLITE_OK {
            // SAFETY: not registered, so nothing else refers to it.
            drop(unsafe { Box::from_raw(vfs) });
            return Err(VfsError::InvalidArgument(format!(
                "SQLite refused to register VFS {:?} (code {rc})",
                shared.name
            )));
        }
        Ok(Registration { vfs, shared })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: `vfs` was registered by `register`.
        unsafe { ffi::sqlite3_vfs_unregister(self.vfs) };
        if self.shared.open_files.load(Ordering::Acquire) == 0 {
            // SAFETY: unregistered and no file refers to it any more.
            drop(unsafe { Box::from_raw(self.vfs) });
        } else {
            // Connections still point at it: keep the struct (and the shared state it points to) alive.
            tracing::warn!(vfs = ?self.shared.name, "VFS destroyed while SQLite files are open; its memory is kept");
            std::mem::forget(self.shared.clone());
        }
    }
}

/// Finds the platform VFS that holds bcv's local files. Errors when SQLite has none by that name.
pub(crate) fn platform_vfs() -> Result<PlatformVfs, VfsError> {
    let name = CString::new(PLATFORM_VFS).map_err(|_| VfsError::InvalidArgument("vfs name".into()))?;
    // SAFETY: sqlite3_vfs_find is thread-safe and accepts any NUL-terminated name.
    let p = unsafe { ffi::sqlite3_vfs_find(name.as_ptr()) };
    if p.is_null() {
        return Err(VfsError::InvalidArgument(format!("SQLite has no {PLATFORM_VFS:?} VFS")));
    }
    Ok(PlatformVfs(p))
}

/// The shared state of a bcv `sqlite3_vfs`.
///
/// # Safety
/// `vfs` must be a VFS registered by [`Registration::register`].
unsafe fn shared<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a VfsShared {
    // SAFETY: pAppData is the Arc'd VfsShared, alive while registered (or leaked).
    unsafe { &*((*vfs).pAppData as *const VfsShared) }
}

/// Runs a callback body, turning a panic into `code`.
pub(crate) fn guard(code: c_int, f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        LAST_ERROR.with(|l| *l.borrow_mut() = "bcv: internal panic in a VFS callback".into());
        code
    })
}

/// How a path names something of ours.
pub(crate) enum PathKind<'a> {
    /// `/ALIAS/DB`: a database file.
    Database { alias: &'a str, db: &'a str },
    /// `/ALIAS/DB-suffix`: a journal or WAL, stored as a local file.
    Local(PathBuf),
    /// `/` or `/ALIAS`: an empty scratch database (for virtual tables).
    Scratch,
}

/// Splits a VFS path. `None` when it is not of the form `/ALIAS[/NAME]`.
pub(crate) fn classify<'a>(shared: &VfsShared, path: &'a str, main_db: bool) -> Option<PathKind<'a>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(PathKind::Scratch);
    }
    let (alias, name) = match rest.split_once('/') {
        Some((a, n)) => (a, n),
        None => return Some(PathKind::Scratch),
    };
    if alias.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    if main_db {
        return Some(PathKind::Database { alias, db: name });
    }
    Some(PathKind::Local(shared.cache_dir.join(alias).join(name)))
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    out: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: SQLite passes our registered vfs and a buffer of szOsFile bytes.
        let sh = unsafe { shared(vfs) };
        // SAFETY: `out` has room for a BcvFile header (szOsFile).
        unsafe { file::clear(out) };
        let path = if name.is_null() {
            None
        } else {
            // SAFETY: SQLite passes a NUL-terminated file name.
            unsafe { CStr::from_ptr(name) }.to_str().ok()
        };
        let main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
        let kind = path.and_then(|p| classify(sh, p, main));
        let rc = match (path, kind) {
            (Some(_), Some(PathKind::Database { alias, db })) => {
                // SAFETY: `out` is ours to fill.
                unsafe { file::open_main(sh, alias, db, out, flags, out_flags) }
            }
            (Some(p), Some(PathKind::Local(local))) => {
                if let Some(dir) = local.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                // Journals and WAL files of a secure container are sealed like its blocks.
                let alias = p.trim_start_matches('/').split('/').next().unwrap_or("");
                let sealer = sh.container(alias).and_then(|c| c.sealer_arc());
                // SAFETY: `out` is ours to fill.
                unsafe { file::open_delegated(sh, Some(&local), out, flags, out_flags, sealer) }
            }
            (Some(_), Some(PathKind::Scratch)) | (None, _) => {
                // A scratch database or a temporary file: anonymous, deleted on close.
                let flags = if path.is_some() { flags | ffi::SQLITE_OPEN_DELETEONCLOSE } else { flags };
                let sealer = sh.temp_sealer.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // SAFETY: `out` is ours to fill.
                unsafe { file::open_delegated(sh, None, out, flags, out_flags, sealer) }
            }
            (Some(p), None) => {
                set_last_error(&VfsError::InvalidArgument(format!(
                    "{p:?} is not a bcv path: use /ALIAS/DATABASE with vfs={}",
                    sh.name.to_string_lossy()
                )));
                ffi::SQLITE_CANTOPEN
            }
        };
        if rc == ffi::SQLITE_OK {
            sh.open_files.fetch_add(1, Ordering::AcqRel);
        }
        rc
    })
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: our registered vfs.
        let sh = unsafe { shared(vfs) };
        // SAFETY: NUL-terminated name from SQLite.
        let Ok(path) = unsafe { CStr::from_ptr(name) }.to_str() else { return ffi::SQLITE_IOERR_DELETE };
        match classify(sh, path, false) {
            Some(PathKind::Local(local)) => {
                let Ok(c) = CString::new(local.to_string_lossy().as_bytes()) else { return ffi::SQLITE_IOERR_DELETE };
                let p = sh.platform.0;
                // SAFETY: the platform VFS is live; xDelete is always set.
                unsafe {
                    match (*p).xDelete {
                        Some(f) => f(p, c.as_ptr(), sync_dir),
                        None => ffi::SQLITE_IOERR_DELETE,
                    }
                }
            }
            _ => ffi::SQLITE_OK,
        }
    })
}

unsafe extern "C" fn x_access(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, flags: c_int, out: *mut c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: our registered vfs.
        let sh = unsafe { shared(vfs) };
        // SAFETY: NUL-terminated name from SQLite.
        let path = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("");
        let exists = match classify(sh, path, false) {
            Some(PathKind::Local(local)) => {
                let is_db = path
                    .strip_prefix('/')
                    .and_then(|r| r.split_once('/'))
                    .and_then(|(alias, db)| sh.container(alias).map(|c| c.database(db).is_some()));
                match is_db {
                    Some(true) => true,
                    _ => std::fs::metadata(&local).map(|m| m.len() > 0).unwrap_or(false),
                }
            }
            Some(PathKind::Scratch) => true,
            _ => false,
        };
        let _ = flags;
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = c_int::from(exists) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: NUL-terminated name from SQLite.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        let mut full = Vec::with_capacity(bytes.len() + 2);
        if bytes.first() != Some(&b'/') {
            full.push(b'/');
        }
        full.extend_from_slice(bytes);
        if full.len() + 1 > n_out as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `out` has n_out bytes; we write len+1 <= n_out.
        unsafe {
            ptr::copy_nonoverlapping(full.as_ptr().cast::<c_char>(), out, full.len());
            *out.add(full.len()) = 0;
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_get_last_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guard(0, || {
        let msg = last_error();
        if n > 0 && !out.is_null() {
            let len = msg.len().min(n as usize - 1);
            // SAFETY: `out` has n bytes.
            unsafe {
                ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), out, len);
                *out.add(len) = 0;
            }
        }
        0
    })
}
