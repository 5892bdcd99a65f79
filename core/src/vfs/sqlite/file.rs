//! `sqlite3_file` implementations: main database files served from the block cache, and local files
//! (journals, WAL, temporary files) forwarded to the platform VFS.

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libsqlite3_sys as ffi;

use super::locks::{self, ShmHold, new_holder};
use super::{VfsShared, guard, set_last_error, sqlite_code};
use crate::vfs::VfsError;
use crate::vfs::attached::{Container, UploadOptions};
use crate::vfs::cache::lock;
use crate::vfs::crypto::{RawFile, SECTOR, SealedFile, SealedFileError, Sealer};
use crate::vfs::database::Database;
use crate::vfs::job::JobControl;

/// The header of every file bcv hands SQLite. For a local file, the platform VFS's own file object follows it.
#[repr(C)]
pub(crate) struct BcvFile {
    base: ffi::sqlite3_file,
    /// Main database files: the handle (a leaked Box).
    main: *mut MainHandle,
    /// Local files: the path given to the platform VFS, which must outlive the file (a leaked CString).
    path: *mut c_char,
    /// The VFS, to count open files.
    vfs: *const VfsShared,
    /// Local files of secure containers: the sealer (a leaked `Arc`, released at close); null for plain files.
    sealer: *const Sealer,
    /// Keeps the inner file 16-byte aligned.
    _align: [u64; 0],
}

const HEADER: usize = std::mem::size_of::<BcvFile>().next_multiple_of(16);

/// `szOsFile` for a platform VFS whose files take `inner` bytes.
pub(crate) fn file_size_for(inner: c_int) -> c_int {
    (HEADER + inner.max(0) as usize) as c_int
}

/// Zeroes the header so an open that fails leaves `pMethods` NULL (SQLite then never calls xClose).
///
/// # Safety
/// `f` points at `szOsFile` writable bytes.
pub(crate) unsafe fn clear(f: *mut ffi::sqlite3_file) {
    // SAFETY: the caller guarantees HEADER bytes are writable.
    unsafe { ptr::write_bytes(f.cast::<u8>(), 0, HEADER) };
}

fn inner(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: the inner file starts HEADER bytes into the same allocation.
    unsafe { f.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>() }
}

/// One SQLite connection's handle on a bcv database.
struct MainHandle {
    db: Arc<Database>,
    container: Arc<Container>,
    vfs_name: String,
    nrequest: usize,
    holder: u64,
    level: c_int,
    shm_hold: ShmHold,
    shm_mapped: bool,
    /// The content generation this handle's pager last read page 1 of.
    seen_generation: u64,
}

impl MainHandle {
    fn after_unlock(&self) {
        if let Err(e) = self.db.apply_incoming() {
            set_last_error(&e);
        }
    }
}

/// Opens a main database file `/alias/db`.
///
/// # Safety
/// `out` points at `szOsFile` writable bytes, zeroed by [`clear`].
pub(crate) unsafe fn open_main(
    sh: &VfsShared,
    alias: &str,
    name: &str,
    out: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(container) = sh.container(alias) else {
        set_last_error(&VfsError::NoSuchAlias { alias: alias.to_string() });
        return ffi::SQLITE_CANTOPEN;
    };
    let db = match container.database(name) {
        Some(db) => db,
        None if flags & ffi::SQLITE_OPEN_CREATE != 0 => match container.create_local_database(name) {
            Ok(db) => db,
            Err(e) => {
                set_last_error(&e);
                return ffi::SQLITE_CANTOPEN;
            }
        },
        None => {
            set_last_error(&VfsError::NoSuchDatabase { container: alias.to_string(), database: name.to_string() });
            return ffi::SQLITE_CANTOPEN;
        }
    };
    *lock(&db.open_handles) += 1;
    let handle = Box::new(MainHandle {
        seen_generation: db.generation(),
        db,
        container,
        vfs_name: sh.name.to_string_lossy().into_owned(),
        nrequest: sh.nrequest,
        holder: new_holder(),
        level: locks::NONE,
        shm_hold: ShmHold::default(),
        shm_mapped: false,
    });
    let f = out.cast::<BcvFile>();
    // SAFETY: `out` is ours; the header is zeroed.
    unsafe {
        (*f).main = Box::into_raw(handle);
        (*f).vfs = sh;
        (*f).base.pMethods = &MAIN_METHODS;
        if !out_flags.is_null() {
            // Through a daemon the database is read-only: SQLite then refuses writes itself.
            *out_flags = if (*(*f).main).container.is_daemon_client() {
                (flags & !(ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE)) | ffi::SQLITE_OPEN_READONLY
            } else {
                flags
            };
        }
    }
    ffi::SQLITE_OK
}

/// Opens a local file through the platform VFS (`path` `None`: an anonymous temporary file).
///
/// # Safety
/// `out` points at `szOsFile` writable bytes, zeroed by [`clear`].
pub(crate) unsafe fn open_delegated(
    sh: &VfsShared,
    path: Option<&Path>,
    out: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
    sealer: Option<Arc<Sealer>>,
) -> c_int {
    let c_path = match path.map(|p| CString::new(p.to_string_lossy().as_bytes())) {
        Some(Ok(c)) => c.into_raw(),
        Some(Err(_)) => return ffi::SQLITE_CANTOPEN,
        None => ptr::null_mut(),
    };
    let p = sh.platform.0;
    let inner_file = inner(out);
    // SAFETY: the platform VFS is live; the inner file has its szOsFile bytes after our header.
    let rc = unsafe {
        match (*p).xOpen {
            Some(open) => open(p, c_path, inner_file, flags, out_flags),
            None => ffi::SQLITE_CANTOPEN,
        }
    };
    // SAFETY: as above.
    let opened = unsafe { !(*inner_file).pMethods.is_null() };
    if rc != ffi::SQLITE_OK || !opened {
        if !c_path.is_null() {
            // SAFETY: made by into_raw above.
            drop(unsafe { CString::from_raw(c_path) });
        }
        if opened {
            // SAFETY: SQLite's rule: a file whose pMethods is set must be closed even when open failed.
            unsafe {
                if let Some(close) = (*(*inner_file).pMethods).xClose {
                    close(inner_file);
                }
            }
        }
        return if rc == ffi::SQLITE_OK { ffi::SQLITE_CANTOPEN } else { rc };
    }
    let f = out.cast::<BcvFile>();
    // SAFETY: `out` is ours.
    unsafe {
        (*f).path = c_path;
        (*f).vfs = sh;
        (*f).sealer = sealer.map_or(ptr::null(), Arc::into_raw);
        (*f).base.pMethods = &LOCAL_METHODS;
    }
    ffi::SQLITE_OK
}

/// The main handle of a file.
///
/// # Safety
/// `f` is a main database file opened by [`open_main`] and not yet closed.
unsafe fn main<'a>(f: *mut ffi::sqlite3_file) -> &'a mut MainHandle {
    // SAFETY: per the caller's guarantee, `main` is a live leaked Box used by one SQLite connection at a time.
    unsafe { &mut *(*f.cast::<BcvFile>()).main }
}

static MAIN_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(main_close),
    xRead: Some(main_read),
    xWrite: Some(main_write),
    xTruncate: Some(main_truncate),
    xSync: Some(main_sync),
    xFileSize: Some(main_file_size),
    xLock: Some(main_lock),
    xUnlock: Some(main_unlock),
    xCheckReservedLock: Some(main_check_reserved),
    xFileControl: Some(main_file_control),
    xSectorSize: Some(main_sector_size),
    xDeviceCharacteristics: Some(main_device_characteristics),
    xShmMap: Some(main_shm_map),
    xShmLock: Some(main_shm_lock),
    xShmBarrier: Some(main_shm_barrier),
    xShmUnmap: Some(main_shm_unmap),
    xFetch: Some(main_fetch),
    xUnfetch: Some(main_unfetch),
};

unsafe extern "C" fn main_close(f: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        let bf = f.cast::<BcvFile>();
        // SAFETY: opened by open_main; SQLite closes each file once.
        let handle = unsafe { Box::from_raw((*bf).main) };
        // SAFETY: as above.
        unsafe { (*bf).main = ptr::null_mut() };
        let mut level = handle.level;
        lock(&handle.db.locks).unlock(handle.holder, &mut level, locks::NONE);
        if handle.shm_mapped {
            let mut hold = handle.shm_hold;
            let mut shm = lock(&handle.db.shm);
            shm.unlock(handle.holder, &mut hold, 0, locks::SHM_NLOCK);
            shm.users = shm.users.saturating_sub(1);
            if shm.users == 0 {
                shm.release_memory();
            }
        }
        {
            let mut open = lock(&handle.db.open_handles);
            *open = open.saturating_sub(1);
        }
        handle.after_unlock();
        // SAFETY: `vfs` was set at open and outlives its files.
        unsafe { (*(*bf).vfs).open_files.fetch_sub(1, Ordering::AcqRel) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn main_read(f: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        // SAFETY: SQLite passes a buffer of `amount` bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount.max(0) as usize) };
        match h.db.read(offset as u64, out) {
            Ok(valid) => {
                let generation = h.db.generation();
                if offset == 0 {
                    h.seen_generation = generation;
                } else if offset == 24 && amount == 16 && h.seen_generation != generation {
                    // The pager's change check (rollback mode): the image was replaced by a poll or a revert,
                    // so make the check fail and the pager drop its cache. It re-reads page 1 right after.
                    out[0] ^= 0xff;
                }
                if valid < out.len() { ffi::SQLITE_IOERR_SHORT_READ } else { ffi::SQLITE_OK }
            }
            Err(e) => {
                set_last_error(&e);
                sqlite_code(&e, ffi::SQLITE_IOERR_READ)
            }
        }
    })
}

unsafe extern "C" fn main_write(f: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    guard(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        // SAFETY: SQLite passes `amount` bytes.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize) };
        match h.db.write(offset as u64, data) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                set_last_error(&e);
                sqlite_code(&e, ffi::SQLITE_IOERR_WRITE)
            }
        }
    })
}

unsafe extern "C" fn main_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        match h.db.truncate(size.max(0) as u64) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                set_last_error(&e);
                ffi::SQLITE_IOERR_TRUNCATE
            }
        }
    })
}

unsafe extern "C" fn main_sync(f: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        match h.db.sync() {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                set_last_error(&e);
                ffi::SQLITE_IOERR_FSYNC
            }
        }
    })
}

unsafe extern "C" fn main_file_size(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: a live main file; `out` is valid.
        unsafe { *out = main(f).db.size() as i64 };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn main_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        let mut current = h.level;
        let r = lock(&h.db.locks).lock(h.holder, &mut current, level);
        h.level = current;
        if r.is_ok() { ffi::SQLITE_OK } else { ffi::SQLITE_BUSY }
    })
}

unsafe extern "C" fn main_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        let mut current = h.level;
        lock(&h.db.locks).unlock(h.holder, &mut current, level);
        h.level = current;
        if level == locks::NONE {
            h.after_unlock();
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn main_check_reserved(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: a live main file; `out` is valid.
        unsafe { *out = c_int::from(lock(&main(f).db.locks).reserved()) };
        ffi::SQLITE_OK
    })
}

/// Answers a PRAGMA SQLite could not: `bcv_poll`, `bcv_upload`. The result (or error) string goes to
/// `args[0]`, allocated with sqlite3_mprintf as SQLite requires.
fn pragma(h: &MainHandle, name: &str, _arg: Option<&str>) -> Option<Result<String, VfsError>> {
    match name.to_ascii_lowercase().as_str() {
        "bcv_poll" => Some(h.container.poll().map(|r| serde_json::to_string(&r).unwrap_or_default())),
        "bcv_upload" => Some(
            h.container
                .upload(&h.vfs_name, &UploadOptions::default(), h.nrequest, &JobControl::detached())
                .map(|r| serde_json::to_string(&r).unwrap_or_default()),
        ),
        _ => None,
    }
}

unsafe extern "C" fn main_file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        if op != ffi::SQLITE_FCNTL_PRAGMA {
            return ffi::SQLITE_NOTFOUND;
        }
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        let args = arg.cast::<*mut c_char>();
        // SAFETY: for FCNTL_PRAGMA, arg is char*[3]: out message, pragma name, argument (or NULL).
        let (name, value) = unsafe {
            let name = std::ffi::CStr::from_ptr(*args.add(1)).to_string_lossy().into_owned();
            let value = (*args.add(2)).as_ref().map(|p| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned());
            (name, value)
        };
        let Some(result) = pragma(h, &name, value.as_deref()) else { return ffi::SQLITE_NOTFOUND };
        let (rc, text) = match result {
            Ok(s) => (ffi::SQLITE_OK, s),
            Err(e) => {
                set_last_error(&e);
                (ffi::SQLITE_ERROR, e.to_string())
            }
        };
        if let Ok(c) = CString::new(text) {
            // SAFETY: SQLite frees args[0] with sqlite3_free.
            unsafe { *args = ffi::sqlite3_mprintf(c"%s".as_ptr(), c.as_ptr()) };
        }
        rc
    })
}

unsafe extern "C" fn main_sector_size(_f: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn main_device_characteristics(_f: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

unsafe extern "C" fn main_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        let mut shm = lock(&h.db.shm);
        if !h.shm_mapped {
            h.shm_mapped = true;
            shm.users += 1;
        }
        let p = shm.map(region.max(0) as usize, size.max(0) as usize, extend != 0);
        // SAFETY: `out` is valid.
        unsafe { *out = p.map_or(ptr::null_mut(), |p| p.cast::<c_void>()) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn main_shm_lock(f: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        let (offset, n) = (offset.max(0) as usize, n.max(0) as usize);
        let mut shm = lock(&h.db.shm);
        if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
            shm.unlock(h.holder, &mut h.shm_hold, offset, n);
            drop(shm);
            h.after_unlock();
            return ffi::SQLITE_OK;
        }
        let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        match shm.lock(h.holder, &mut h.shm_hold, offset, n, exclusive) {
            Ok(()) => ffi::SQLITE_OK,
            Err(_) => ffi::SQLITE_BUSY,
        }
    })
}

unsafe extern "C" fn main_shm_barrier(_f: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(Ordering::SeqCst);
}

unsafe extern "C" fn main_shm_unmap(f: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: a live main file.
        let h = unsafe { main(f) };
        if h.shm_mapped {
            h.shm_mapped = false;
            let mut shm = lock(&h.db.shm);
            shm.unlock(h.holder, &mut h.shm_hold, 0, locks::SHM_NLOCK);
            shm.users = shm.users.saturating_sub(1);
            if shm.users == 0 {
                shm.release_memory();
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn main_fetch(_f: *mut ffi::sqlite3_file, _off: i64, _amt: c_int, out: *mut *mut c_void) -> c_int {
    // No memory mapping: SQLite falls back to xRead.
    // SAFETY: `out` is valid.
    unsafe { *out = ptr::null_mut() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn main_unfetch(_f: *mut ffi::sqlite3_file, _off: i64, _p: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

// ---- local files: forward to the platform VFS's file object ----

static LOCAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(local_close),
    xRead: Some(local_read),
    xWrite: Some(local_write),
    xTruncate: Some(local_truncate),
    xSync: Some(local_sync),
    xFileSize: Some(local_file_size),
    xLock: Some(local_lock),
    xUnlock: Some(local_unlock),
    xCheckReservedLock: Some(local_check_reserved),
    xFileControl: Some(local_file_control),
    xSectorSize: Some(local_sector_size),
    xDeviceCharacteristics: Some(local_device_characteristics),
    xShmMap: Some(local_shm_map),
    xShmLock: Some(local_shm_lock),
    xShmBarrier: Some(local_shm_barrier),
    xShmUnmap: Some(local_shm_unmap),
    xFetch: Some(local_fetch),
    xUnfetch: Some(local_unfetch),
};

/// Calls method `$m` of the inner platform file, or returns `$missing` when it has none.
macro_rules! forward {
    ($f:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let inner = inner($f);
        // SAFETY: a local file opened by open_delegated; its inner file is open with non-null pMethods.
        unsafe {
            match (*(*inner).pMethods).$m {
                Some(m) => m(inner $(, $arg)*),
                None => $missing,
            }
        }
    }};
}

unsafe extern "C" fn local_close(f: *mut ffi::sqlite3_file) -> c_int {
    let rc = forward!(f, xClose, ffi::SQLITE_OK);
    let bf = f.cast::<BcvFile>();
    // SAFETY: set at open; SQLite closes each file once.
    unsafe {
        if !(*bf).path.is_null() {
            drop(CString::from_raw((*bf).path));
            (*bf).path = ptr::null_mut();
        }
        if !(*bf).sealer.is_null() {
            drop(Arc::from_raw((*bf).sealer));
            (*bf).sealer = ptr::null();
        }
        (*(*bf).vfs).open_files.fetch_sub(1, Ordering::AcqRel);
    }
    rc
}
/// The sealer of a local file, if it is sealed.
///
/// # Safety
/// `f` is a local file opened by [`open_delegated`] and not yet closed.
unsafe fn sealer_of<'a>(f: *mut ffi::sqlite3_file) -> Option<&'a Sealer> {
    // SAFETY: set at open, released only at close.
    unsafe { (*f.cast::<BcvFile>()).sealer.as_ref() }
}

/// The platform file under a sealed local file, as a [`RawFile`].
struct PlatformFile(*mut ffi::sqlite3_file);

impl RawFile for PlatformFile {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), i32> {
        // SAFETY: a live inner file (see `forward!`); the buffer is valid for its length.
        let rc = unsafe {
            match (*(*self.0).pMethods).xRead {
                Some(m) => m(self.0, buf.as_mut_ptr().cast(), buf.len() as c_int, offset as i64),
                None => ffi::SQLITE_IOERR_READ,
            }
        };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
    }
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> Result<(), i32> {
        // SAFETY: as above.
        let rc = unsafe {
            match (*(*self.0).pMethods).xWrite {
                Some(m) => m(self.0, data.as_ptr().cast(), data.len() as c_int, offset as i64),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
    }
    fn size(&mut self) -> Result<u64, i32> {
        let mut size = 0i64;
        // SAFETY: as above.
        let rc = unsafe {
            match (*(*self.0).pMethods).xFileSize {
                Some(m) => m(self.0, &mut size),
                None => ffi::SQLITE_IOERR_FSTAT,
            }
        };
        if rc == ffi::SQLITE_OK { Ok(size.max(0) as u64) } else { Err(rc) }
    }
    fn truncate(&mut self, size: u64) -> Result<(), i32> {
        // SAFETY: as above.
        let rc = unsafe {
            match (*(*self.0).pMethods).xTruncate {
                Some(m) => m(self.0, size as i64),
                None => ffi::SQLITE_IOERR_TRUNCATE,
            }
        };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
    }
}

/// Maps a sealed-file failure to SQLite's code, recording a crypto error as the last error.
fn sealed_code(e: SealedFileError, io_code: c_int) -> c_int {
    match e {
        SealedFileError::Raw(rc) => rc,
        SealedFileError::Crypto(e) => {
            set_last_error(&e);
            io_code
        }
    }
}

/// A name for a sealed local file in error messages.
fn local_name(f: *mut ffi::sqlite3_file) -> String {
    // SAFETY: `path` is null or a live CString owned by the file.
    let path = unsafe { (*f.cast::<BcvFile>()).path };
    if path.is_null() {
        "(temporary)".into()
    } else {
        // SAFETY: as above.
        unsafe { std::ffi::CStr::from_ptr(path) }.to_string_lossy().into_owned()
    }
}

unsafe extern "C" fn local_read(f: *mut ffi::sqlite3_file, b: *mut c_void, n: c_int, o: i64) -> c_int {
    // SAFETY: SQLite passes a file opened by open_delegated.
    let Some(sealer) = (unsafe { sealer_of(f) }) else { return forward!(f, xRead, ffi::SQLITE_IOERR_READ, b, n, o) };
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: SQLite passes a buffer of `n` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(b.cast::<u8>(), n.max(0) as usize) };
        let name = local_name(f);
        match SealedFile::new(sealer, &name).read(&mut PlatformFile(inner(f)), buf, o.max(0) as u64) {
            Ok(got) if got == buf.len() => ffi::SQLITE_OK,
            Ok(_) => ffi::SQLITE_IOERR_SHORT_READ,
            Err(e) => sealed_code(e, ffi::SQLITE_IOERR_READ),
        }
    })
}
unsafe extern "C" fn local_write(f: *mut ffi::sqlite3_file, b: *const c_void, n: c_int, o: i64) -> c_int {
    // SAFETY: SQLite passes a file opened by open_delegated.
    let Some(sealer) = (unsafe { sealer_of(f) }) else {
        return forward!(f, xWrite, ffi::SQLITE_IOERR_WRITE, b, n, o);
    };
    guard(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: SQLite passes `n` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(b.cast::<u8>(), n.max(0) as usize) };
        let name = local_name(f);
        match SealedFile::new(sealer, &name).write(&mut PlatformFile(inner(f)), data, o.max(0) as u64) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => sealed_code(e, ffi::SQLITE_IOERR_WRITE),
        }
    })
}
unsafe extern "C" fn local_truncate(f: *mut ffi::sqlite3_file, s: i64) -> c_int {
    // SAFETY: SQLite passes a file opened by open_delegated.
    let Some(sealer) = (unsafe { sealer_of(f) }) else {
        return forward!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, s);
    };
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        let name = local_name(f);
        match SealedFile::new(sealer, &name).truncate(&mut PlatformFile(inner(f)), s.max(0) as u64) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => sealed_code(e, ffi::SQLITE_IOERR_TRUNCATE),
        }
    })
}
unsafe extern "C" fn local_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    forward!(f, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}
unsafe extern "C" fn local_file_size(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    // SAFETY: SQLite passes a file opened by open_delegated.
    let Some(sealer) = (unsafe { sealer_of(f) }) else {
        return forward!(f, xFileSize, ffi::SQLITE_IOERR_FSTAT, out);
    };
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        let name = local_name(f);
        match SealedFile::new(sealer, &name).size(&mut PlatformFile(inner(f))) {
            Ok(size) => {
                // SAFETY: SQLite passes a valid out pointer.
                unsafe { *out = size as i64 };
                ffi::SQLITE_OK
            }
            Err(e) => sealed_code(e, ffi::SQLITE_IOERR_FSTAT),
        }
    })
}
unsafe extern "C" fn local_lock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    forward!(f, xLock, ffi::SQLITE_OK, l)
}
unsafe extern "C" fn local_unlock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    forward!(f, xUnlock, ffi::SQLITE_OK, l)
}
unsafe extern "C" fn local_check_reserved(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(f, xCheckReservedLock, ffi::SQLITE_OK, out)
}
unsafe extern "C" fn local_file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // Size hints and chunk sizes would let the platform file grow by plain zeros, which are not sealed sectors.
    // SAFETY: SQLite passes a file opened by open_delegated.
    if unsafe { sealer_of(f) }.is_some() && (op == ffi::SQLITE_FCNTL_SIZE_HINT || op == ffi::SQLITE_FCNTL_CHUNK_SIZE) {
        return ffi::SQLITE_OK;
    }
    forward!(f, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}
unsafe extern "C" fn local_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite passes a file opened by open_delegated.
    if unsafe { sealer_of(f) }.is_some() {
        // A sealed file is rewritten a sector at a time: SQLite must not share a sector between commits.
        return SECTOR as c_int;
    }
    forward!(f, xSectorSize, 4096)
}
unsafe extern "C" fn local_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    let inner_caps = forward!(f, xDeviceCharacteristics, 0);
    // SAFETY: SQLite passes a file opened by open_delegated.
    if unsafe { sealer_of(f) }.is_some() {
        // Rewriting a sealed sector can tear it whole: no powersafe overwrite, no atomic writes.
        return inner_caps & ffi::SQLITE_IOCAP_SEQUENTIAL & !ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE;
    }
    inner_caps
}
unsafe extern "C" fn local_shm_map(
    f: *mut ffi::sqlite3_file,
    r: c_int,
    s: c_int,
    e: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(f, xShmMap, ffi::SQLITE_IOERR_SHMMAP, r, s, e, out)
}
unsafe extern "C" fn local_shm_lock(f: *mut ffi::sqlite3_file, o: c_int, n: c_int, flags: c_int) -> c_int {
    forward!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, o, n, flags)
}
unsafe extern "C" fn local_shm_barrier(f: *mut ffi::sqlite3_file) {
    forward!(f, xShmBarrier, ())
}
unsafe extern "C" fn local_shm_unmap(f: *mut ffi::sqlite3_file, d: c_int) -> c_int {
    forward!(f, xShmUnmap, ffi::SQLITE_OK, d)
}
unsafe extern "C" fn local_fetch(f: *mut ffi::sqlite3_file, o: i64, n: c_int, out: *mut *mut c_void) -> c_int {
    let inner = inner(f);
    // SAFETY: a live local file; version 3 methods have xFetch. A sealed file is never memory-mapped.
    unsafe {
        if (*(*inner).pMethods).iVersion < 3 || sealer_of(f).is_some() {
            *out = ptr::null_mut();
            return ffi::SQLITE_OK;
        }
    }
    forward!(f, xFetch, ffi::SQLITE_OK, o, n, out)
}
unsafe extern "C" fn local_unfetch(f: *mut ffi::sqlite3_file, o: i64, p: *mut c_void) -> c_int {
    let inner = inner(f);
    // SAFETY: a live local file.
    unsafe {
        if (*(*inner).pMethods).iVersion < 3 || sealer_of(f).is_some() {
            return ffi::SQLITE_OK;
        }
    }
    forward!(f, xUnfetch, ffi::SQLITE_OK, o, p)
}
