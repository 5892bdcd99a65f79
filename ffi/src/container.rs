//! Container tools: the operations of CBS's bcvutil.h on one container, without a VFS or a cache: create,
//! destroy, list, upload and download a database file, copy, delete, cleanup, manifest.

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bcv_core::vfs::store::ContainerStore;
use bcv_core::vfs::{ContainerTools, DEFAULT_BLOCK_SIZE, DEFAULT_NAME_BYTES, Progress, manifest_summary};

use crate::error::*;
use crate::handle::{bcv_handle_t, put};
use crate::io::c_str;
use crate::secure::{bcv_secure_t, secure_options};
use crate::store::{bcv_store_callbacks_t, bcv_store_options_t, custom_store, store_options};
use crate::stream::{bcv_bytes_t, try_status};
use crate::table::{self, Object};

/// A progress callback: `done` of `total` bytes so far. It runs during the call that takes it (on the
/// calling thread or on bcv threads, possibly several at once) and never after that call returns; it may
/// not call into bcv. `user_data` is borrowed for the call.
pub type bcv_progress_callback_t = Option<unsafe extern "C" fn(user_data: *mut c_void, done: u64, total: u64)>;

/// What `bcv_container_cleanup` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_cleanup_report_t {
    /// Blocks deleted from the delete list (their grace period had passed).
    pub deleted: u64,
    /// Orphaned blocks deleted (referenced nowhere, e.g. left by a crashed upload).
    pub orphans_deleted: u64,
    /// Blocks still waiting on the delete list.
    pub waiting: u64,
}

/// A C progress callback as a Rust closure target. It may be called from several threads at once.
pub(crate) struct ProgressFn {
    callback: bcv_progress_callback_t,
    user_data: *mut c_void,
}

// SAFETY: the header tells the application that the callback may run on bcv threads, several at once, during
// the call; `user_data` is only passed back to it.
unsafe impl Send for ProgressFn {}
// SAFETY: as above.
unsafe impl Sync for ProgressFn {}

impl ProgressFn {
    pub(crate) fn new(callback: bcv_progress_callback_t, user_data: *mut c_void) -> ProgressFn {
        ProgressFn { callback, user_data }
    }

    pub(crate) fn report(&self, p: Progress) {
        if let Some(cb) = self.callback {
            // SAFETY: the callback contract above; called only while the taking call runs.
            unsafe { cb(self.user_data, p.done, p.total) };
        }
    }
}

/// Writes `value` as JSON to `*out` (a new buffer; free it with `bcv_bytes_free`). NULL `out` is
/// `BCV_E_INVALID`.
pub(crate) fn put_json<T: serde::Serialize + ?Sized>(out: *mut bcv_bytes_t, value: &T) -> bcv_status_t {
    if out.is_null() {
        return fail_with(BCV_E_INVALID, "output pointer is NULL");
    }
    put_json_opt(out, value)
}

/// As [`put_json`], but a NULL `out` means "not wanted".
pub(crate) fn put_json_opt<T: serde::Serialize + ?Sized>(out: *mut bcv_bytes_t, value: &T) -> bcv_status_t {
    if out.is_null() {
        return BCV_OK;
    }
    match serde_json::to_vec(value) {
        Ok(v) => {
            // SAFETY: non-NULL caller storage for one bcv_bytes_t.
            unsafe { *out = bcv_bytes_t::from_vec(v) };
            BCV_OK
        }
        Err(e) => fail_with(BCV_E_INTERNAL, &format!("JSON encoding failed: {e}")),
    }
}

/// Writes `value` to `*out` if `out` is not NULL.
pub(crate) fn put_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL caller storage for one value.
        unsafe { *out = value };
    }
}

fn tools(handle: bcv_handle_t) -> Result<Arc<Object>, bcv_status_t> {
    let o = table::get(handle)?;
    match &*o {
        Object::Container(_) => Ok(o),
        other => Err(table::wrong_type(handle, other, "container")),
    }
}

/// Runs `f` on the container tools behind `handle`.
pub(crate) fn with_tools(handle: bcv_handle_t, f: impl FnOnce(&ContainerTools) -> bcv_status_t) -> bcv_status_t {
    let o = try_status!(tools(handle));
    let Object::Container(t) = &*o else { return BCV_E_WRONG_TYPE };
    f(t)
}

fn opened(store: ContainerStore, nrequest: u32, out: *mut bcv_handle_t) -> bcv_status_t {
    put(out, table::insert(Object::Container(ContainerTools::new(store, nrequest as usize))))
}

/// Opens the container at `url` for the container tools (no cache, no VFS) and writes its handle to
/// `*out`. Nothing is requested yet: a container that does not exist fails at the first operation.
///
/// `url`: an absolute directory path or `file:///dir` (the local store, created if missing), `memory://NAME`
/// (an in-process store), `s3://BUCKET?…`, `az://CONTAINER?…`, `gs://BUCKET?…`. `options` may be NULL (the
/// defaults); the call takes ownership of its auth user data (see `bcv_store_options_t`). `nrequest` is the
/// number of parallel requests (0 is taken as 1). Release the handle with `bcv_release`; it is not a node,
/// so `bcv_close` and `bcv_handle_state` return `BCV_E_WRONG_TYPE`.
/// Errors: `BCV_E_INVALID` (a bad URL or option, NULL), `BCV_E_IO` (the local directory).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_open(
    url: *const c_char,
    options: *const bcv_store_options_t,
    nrequest: u32,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let options = try_status!(store_options(options));
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let url = try_status!(c_str(url, "url"));
        match ContainerStore::open(url, &options) {
            Ok(store) => opened(store, nrequest, out),
            Err(e) => fail_vfs(&e),
        }
    })
}

/// As `bcv_container_open`, for a secure container: `secure` (see `bcv_secure_t`; required) gives the
/// cipher and its keys. `bcv_container_create` then makes a secure container (its marker object
/// `bcv_secure.json` records the cipher's name and a key check); upload and download seal and open blocks.
/// CBS cannot read a secure container. The call takes ownership of `secure->user_data` (and of the options'
/// auth user data), also when it fails. Errors: as `bcv_container_open`; the tools' later calls fail with
/// `BCV_E_SECURE` on a plaintext container and `BCV_E_AUTH` for a wrong key.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_open_secure(
    url: *const c_char,
    options: *const bcv_store_options_t,
    nrequest: u32,
    secure: *const bcv_secure_t,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        // Both conversions run before either error returns: each takes ownership of its user data.
        let (secure, options) = (secure_options(secure), store_options(options));
        let (secure, options) = (try_status!(secure), try_status!(options));
        let Some(secure) = secure else { return fail_with(BCV_E_INVALID, "secure is NULL") };
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let url = try_status!(c_str(url, "url"));
        match ContainerStore::open(url, &options) {
            Ok(store) => put(
                out,
                table::insert(Object::Container(ContainerTools::new(store, nrequest as usize).with_secure(secure))),
            ),
            Err(e) => fail_vfs(&e),
        }
    })
}

/// Opens a container in a store implemented by the application (see `bcv_store_callbacks_t`; the table is
/// copied and its `destroy` runs exactly once, also when this call fails). `label` names it in errors.
/// Otherwise as `bcv_container_open`. Errors: `BCV_E_INVALID` (NULL, a required callback missing).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_open_custom(
    callbacks: *const bcv_store_callbacks_t,
    label: *const c_char,
    options: *const bcv_store_options_t,
    nrequest: u32,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let store = try_status!(custom_store(callbacks, label, options));
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        opened(store, nrequest, out)
    })
}

/// Creates an empty container: a manifest with no database. `block_size` (a power of two from 512 to
/// 2^28; 0: 4 MiB) and `name_bytes` (block-id length 12..32; 0: 16) are fixed for its life. Refuses an
/// existing container unless `overwrite` (CBS's create clobbers). Errors: `BCV_E_EXISTS`, `BCV_E_INVALID`
/// (sizes),
/// `BCV_E_STORE` (also when the store does not honour conditional writes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_create(
    container: bcv_handle_t,
    block_size: u32,
    name_bytes: u32,
    overwrite: bool,
) -> bcv_status_t {
    guard(|| {
        let bs = if block_size == 0 { DEFAULT_BLOCK_SIZE } else { block_size };
        let nb = if name_bytes == 0 { DEFAULT_NAME_BYTES } else { name_bytes };
        with_tools(container, |t| status_of(t.create(bs, nb, overwrite)))
    })
}

/// Deletes every object of the container, the manifest first; writes how many objects were deleted
/// besides the manifest to `*deleted` (may be NULL). Errors: `BCV_E_NOT_FOUND` (no manifest), `BCV_E_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_destroy(container: bcv_handle_t, deleted: *mut u64) -> bcv_status_t {
    guard(|| {
        with_tools(container, |t| match t.destroy() {
            Ok(n) => {
                put_opt(deleted, n);
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Lists the databases as a JSON array in `*json` (free with `bcv_bytes_free`), each
/// `{"name", "id", "version", "parent", "blocks", "size"}`. Errors: `BCV_E_NOT_FOUND`, `BCV_E_CORRUPT`,
/// `BCV_E_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_list(container: bcv_handle_t, json: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_tools(container, |t| match t.list() {
            Ok(list) => put_json(json, &list),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// The manifest as JSON in `*json` (free with `bcv_bytes_free`): `{"block_size", "name_bytes",
/// "max_db_id", "databases": [as bcv_container_list], "delete_list": [{"block", "timestamp_ms"}]}`.
/// Errors: as `bcv_container_list`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_manifest_json(container: bcv_handle_t, json: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_tools(container, |t| match t.manifest() {
            Ok((m, _)) => put_json(json, &manifest_summary(&m)),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// The store's request meter (requests, bytes, errors, retries per kind, estimated cost) as JSON in
/// `*json` (free with `bcv_bytes_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_meter_json(container: bcv_handle_t, json: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_tools(container, |t| put_json(json, &t.store().meter().snapshot()))
    })
}

/// Uploads the local database file at `path` as database `name` (a new version when it exists): blocks in
/// parallel, then the manifest by conditional write, retried on conflicts with other writers. Calls
/// `progress` (may be NULL) as blocks go out; writes the new version to `*version` (may be NULL).
/// Errors: `BCV_E_IO` (the file), `BCV_E_NOT_FOUND` (no container), `BCV_E_INVALID` (name), `BCV_E_STORE`,
/// `BCV_E_CONFLICT` (still losing after 8 attempts).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_upload_file(
    container: bcv_handle_t,
    path: *const c_char,
    name: *const c_char,
    progress: bcv_progress_callback_t,
    user_data: *mut c_void,
    version: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let path = try_status!(c_str(path, "path"));
        let name = try_status!(c_str(name, "name"));
        let cb = ProgressFn::new(progress, user_data);
        with_tools(container, |t| match t.upload_file(Path::new(path), name, &|p| cb.report(p)) {
            Ok(v) => {
                put_opt(version, v);
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Downloads database `name` to the local file `path` (its whole image, written to a temporary name and
/// renamed into place). Calls `progress` (may be NULL); writes the byte count to `*bytes` (may be NULL).
/// Errors: `BCV_E_NOT_FOUND` (no such database or container), `BCV_E_IO`, `BCV_E_STORE`, `BCV_E_CORRUPT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_download_file(
    container: bcv_handle_t,
    name: *const c_char,
    path: *const c_char,
    progress: bcv_progress_callback_t,
    user_data: *mut c_void,
    bytes: *mut u64,
) -> bcv_status_t {
    guard(|| {
        let name = try_status!(c_str(name, "name"));
        let path = try_status!(c_str(path, "path"));
        let cb = ProgressFn::new(progress, user_data);
        with_tools(container, |t| match t.download_file(name, Path::new(path), &|p| cb.report(p)) {
            Ok(n) => {
                put_opt(bytes, n);
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Copies database `from` to a new database `to`, sharing its blocks. Errors: `BCV_E_NOT_FOUND` (no `from`),
/// `BCV_E_EXISTS` (`to` exists), `BCV_E_INVALID` (name), `BCV_E_STORE`, `BCV_E_CONFLICT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_copy(
    container: bcv_handle_t,
    from: *const c_char,
    to: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let from = try_status!(c_str(from, "from"));
        let to = try_status!(c_str(to, "to"));
        with_tools(container, |t| status_of(t.copy(from, to)))
    })
}

/// Deletes database `name`; its blocks go to the delete list for `bcv_container_cleanup`.
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_STORE`, `BCV_E_CONFLICT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_delete(container: bcv_handle_t, name: *const c_char) -> bcv_status_t {
    guard(|| {
        let name = try_status!(c_str(name, "name"));
        with_tools(container, |t| status_of(t.delete(name)))
    })
}

/// Deletes blocks that have been on the delete list for at least `grace_seconds` and, when `find_orphans`,
/// block objects referenced nowhere and older than that (left by crashed uploads). The manifest is rewritten
/// before any block is deleted. Writes what was done to `*report` (may be NULL).
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_STORE`, `BCV_E_CONFLICT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_container_cleanup(
    container: bcv_handle_t,
    grace_seconds: u64,
    find_orphans: bool,
    report: *mut bcv_cleanup_report_t,
) -> bcv_status_t {
    guard(|| {
        with_tools(container, |t| match t.cleanup(Duration::from_secs(grace_seconds), find_orphans) {
            Ok(r) => {
                put_opt(
                    report,
                    bcv_cleanup_report_t { deleted: r.deleted, orphans_deleted: r.orphans_deleted, waiting: r.waiting },
                );
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        })
    })
}
