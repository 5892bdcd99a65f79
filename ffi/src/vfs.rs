//! The block-cache VFS (CBS's blockcachevfs.h): a cache directory, the containers attached to it, and the
//! SQLite VFS serving their databases as `/ALIAS/DB`; poll, upload, revert, copy, delete, prefetch; and the
//! background jobs (upload, prefetch) it starts.
//!
//! The VFS registers into the SQLite the program links (libbcv carries none): after `bcv_vfs_new`, open a
//! database with `sqlite3_open_v2("/alias/db", &db, flags, "<vfs name>")`. When such a call fails with an
//! I/O error, `bcv_vfs_last_error` on the same thread says why.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::vfs::{
    AttachOptions, BlockVfs, CacheStats, CacheUsage, DEFAULT_CACHE_SIZE, JobOutcome, JobStatus, LeaseOptions,
    SecureOptions, UploadOptions, UploadReport, VfsConfig, VfsJob, manifest_summary,
};

use crate::container::{ProgressFn, bcv_progress_callback_t, put_json, put_json_opt, put_opt};
use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::io::{c_str, copy_out};
use crate::secure::{bcv_secure_t, secure_options};
use crate::store::{bcv_store_callbacks_t, bcv_store_options_t, custom_store, default_store_options, store_options};
use crate::stream::{bcv_bytes_t, try_status};
use crate::table::{self, Object};

/// Flag for `bcv_vfs_attach`: succeed without doing anything when a container is already attached under
/// this alias with the same URL (CBS's ATTACH_IFNOT).
pub const BCV_ATTACH_IF_NOT_ATTACHED: u32 = 1;

/// Job states returned by `bcv_job_status`: still working.
pub const BCV_JOB_RUNNING: u32 = 0;
/// Finished successfully; `bcv_job_wait` returns the outcome.
pub const BCV_JOB_DONE: u32 = 1;
/// Finished with an error; `bcv_job_wait` returns it.
pub const BCV_JOB_FAILED: u32 = 2;
/// Stopped by `bcv_close` (of the job, its VFS, or a detach) before it finished.
pub const BCV_JOB_CANCELLED: u32 = 3;

/// Configuration of a VFS. Initialise it with `bcv_vfs_config_init`, then set `cache_dir` and what else you
/// need. Strings are borrowed for the `bcv_vfs_new` call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_vfs_config_t {
    /// The cache directory (created if missing); one process owns it at a time. Required.
    pub cache_dir: *const c_char,
    /// The name the VFS is registered under in SQLite (`zVfs` of `sqlite3_open_v2`); NULL means "bcv".
    pub name: *const c_char,
    /// The cache size limit in bytes (clean blocks are evicted beyond it); 0 means the default, 1 GiB.
    pub cache_size: u64,
    /// Parallel requests for uploads and prefetch; 0 is taken as 1. Default 8.
    pub nrequest: u32,
    /// How attached containers are reached (retries, timeouts, cloud options, credentials callback).
    pub store: bcv_store_options_t,
    /// Leases: how far clients' clocks may disagree, in milliseconds. An expired lease is taken over only
    /// this long after its expiry. Default 5000.
    pub lease_max_skew_ms: u64,
    /// Leases: the lease time a holder needs left after the renewal preceding each of its manifest writes
    /// (and the shortest duration obtain accepts, exclusive), in milliseconds. Default 5000.
    pub lease_safety_margin_ms: u64,
}

/// What `bcv_vfs_poll` changed. The names are in its JSON output.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_poll_report_t {
    /// True when the container's manifest had changed.
    pub manifest_changed: bool,
    /// Databases whose new version is now visible (or will be once their open transactions end).
    pub updated: u32,
    /// Databases new in the container.
    pub added: u32,
    /// Databases deleted from the container.
    pub removed: u32,
    /// Databases changed remotely while they have local changes: uploading them fails with
    /// `BCV_E_CONFLICT` until they are reverted.
    pub conflicts: u32,
}

/// What an upload did. The databases and their new versions are in the JSON output.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_upload_report_t {
    /// Databases uploaded.
    pub databases: u32,
    /// Times the upload re-based onto a manifest another client installed meanwhile.
    pub rebases: u32,
    /// Block objects written.
    pub blocks_written: u64,
    /// Bytes written in block objects.
    pub bytes_written: u64,
    /// Blocks that already existed in the container (same content) and were not written again.
    pub blocks_deduplicated: u64,
    /// Garbage blocks deleted because their grace period had passed.
    pub blocks_deleted: u64,
}

/// What a prefetch did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_prefetch_report_t {
    /// Blocks of the database (those already cached included).
    pub blocks: u64,
    /// Bytes fetched from the store.
    pub bytes_fetched: u64,
}

/// Cache activity counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_cache_stats_t {
    /// Reads served entirely from the cache.
    pub hits: u64,
    /// Reads that needed at least one fetch.
    pub misses: u64,
    /// Bytes fetched from the store into the cache.
    pub bytes_fetched: u64,
    /// Clean slots evicted to make room.
    pub evictions: u64,
}

/// Cache occupancy.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_cache_usage_t {
    /// Slots holding (part of) a clean block.
    pub clean_slots: u64,
    /// Slots holding a locally written block.
    pub dirty_slots: u64,
    /// The slot size (the containers' block size).
    pub block_size: u64,
    /// The configured limit in bytes.
    pub capacity: u64,
}

/// A job handle: the core job, and its result once a wait took it (so every wait returns the same status).
pub(crate) struct Job {
    pub(crate) job: VfsJob,
    result: Mutex<Option<Result<JobOutcome, (bcv_status_t, String)>>>,
}

fn vfs_of(handle: bcv_handle_t) -> Result<Arc<Object>, bcv_status_t> {
    let o = table::get(handle)?;
    match &*o {
        Object::Vfs(_) => Ok(o),
        other => Err(table::wrong_type(handle, other, "vfs")),
    }
}

/// Runs `f` on the VFS behind `handle`.
pub(crate) fn with_vfs(handle: bcv_handle_t, f: impl FnOnce(&BlockVfs) -> bcv_status_t) -> bcv_status_t {
    let o = try_status!(vfs_of(handle));
    let Object::Vfs(v) = &*o else { return BCV_E_WRONG_TYPE };
    f(v)
}

/// Runs `f` on the job behind `handle`.
fn with_job(handle: bcv_handle_t, f: impl FnOnce(&Job) -> bcv_status_t) -> bcv_status_t {
    let o = try_status!(table::get(handle));
    let Object::Job(j) = &*o else { return table::wrong_type(handle, &o, "vfs job") };
    f(j)
}

fn opt_str<'a>(s: *const c_char, what: &str) -> Result<Option<&'a str>, bcv_status_t> {
    if s.is_null() { Ok(None) } else { c_str(s, what).map(Some) }
}

fn grace_of(ms: i64) -> UploadOptions {
    UploadOptions { cleanup_grace: timeout_of(ms) }
}

fn upload_report(r: &UploadReport) -> bcv_upload_report_t {
    bcv_upload_report_t {
        databases: r.databases.len() as u32,
        rebases: r.rebases,
        blocks_written: r.blocks_written,
        bytes_written: r.bytes_written,
        blocks_deduplicated: r.blocks_deduplicated,
        blocks_deleted: r.blocks_deleted,
    }
}

fn new_job(out: *mut bcv_handle_t, started: bcv_core::vfs::VfsResult<VfsJob>) -> bcv_status_t {
    match started {
        Ok(job) => put(out, table::insert(Object::Job(Job { job, result: Mutex::new(None) }))),
        Err(e) => fail_vfs(&e),
    }
}

/// Fills `*config` with the defaults: no cache directory (set one), name "bcv", a 1 GiB cache, 8 parallel
/// requests, and the store defaults of `bcv_store_options_init`. Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_config_init(config: *mut bcv_vfs_config_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        // SAFETY: non-NULL, caller-provided storage for one struct.
        unsafe {
            *config = bcv_vfs_config_t {
                cache_dir: std::ptr::null(),
                name: c"bcv".as_ptr(),
                cache_size: DEFAULT_CACHE_SIZE,
                nrequest: 8,
                store: default_store_options(),
                lease_max_skew_ms: LeaseOptions::default().max_skew.as_millis() as u64,
                lease_safety_margin_ms: LeaseOptions::default().safety_margin.as_millis() as u64,
            }
        };
        BCV_OK
    })
}

/// Opens the cache directory, registers the VFS in the program's SQLite, and writes the VFS handle to
/// `*out`. Containers attached in an earlier run in this directory are attached again without a request.
/// The VFS is a node of `runtime`: release it with `bcv_release`, which unregisters it from SQLite. Close
/// the SQLite connections opened through it first: a connection still open keeps working, but then the
/// VFS's memory (and its stores) are kept until the process exits. `bcv_close` ends it (later calls return
/// `BCV_E_CLOSED`, its jobs are cancelled; open SQLite connections keep working until closed). The call takes
/// ownership of `config->store.auth_user_data` (see `bcv_store_options_t`), also when it fails.
/// Errors: `BCV_E_CACHE_BUSY` (another process owns the directory), `BCV_E_INVALID` (a VFS of that name is
/// already registered, NULL `cache_dir`), `BCV_E_IO`, `BCV_E_SQLITE`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_new(
    runtime: bcv_handle_t,
    config: *const bcv_vfs_config_t,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
        let c = unsafe { &*config };
        let store = try_status!(store_options(&c.store));
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let rt = try_status!(runtime_of(runtime));
        let dir = try_status!(c_str(c.cache_dir, "cache_dir"));
        let mut cfg = VfsConfig::new(PathBuf::from(dir));
        if let Some(name) = try_status!(opt_str(c.name, "name")) {
            cfg.name = name.to_owned();
        }
        if c.cache_size != 0 {
            cfg.cache_size = c.cache_size;
        }
        cfg.nrequest = c.nrequest as usize;
        cfg.store = store;
        cfg.runtime = Some(rt);
        cfg.lease = LeaseOptions {
            max_skew: Duration::from_millis(c.lease_max_skew_ms),
            safety_margin: Duration::from_millis(c.lease_safety_margin_ms),
        };
        match BlockVfs::create(cfg) {
            Ok(vfs) => put(out, table::insert(Object::Vfs(Box::new(vfs)))),
            Err(e) => fail_vfs(&e),
        }
    })
}

/// Copies the SQLite name of the VFS into `buf` (NUL-terminated, truncated to `cap`); writes its full length
/// to `*len` (may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_name(
    vfs: bcv_handle_t,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        with_vfs(vfs, |v| {
            put_opt(len, copy_out(v.name(), buf, cap));
            BCV_OK
        })
    })
}

/// Attaches the container at `url` (forms as in `bcv_container_open`; the store options are the VFS's) as
/// `alias`, or, when `alias` is NULL, as the last component of the URL. Copies the alias used into
/// `alias_out` (NUL-terminated, truncated to `alias_cap`; may be NULL) and its length to `*alias_len` (may
/// be NULL). `flags`: 0 or `BCV_ATTACH_IF_NOT_ATTACHED`. The databases are then `/alias/db`.
/// Errors: `BCV_E_EXISTS` (alias taken), `BCV_E_NOT_FOUND` (no container there: create it first),
/// `BCV_E_INVALID` (URL, alias, flags, or a block size other than the cache's), `BCV_E_STORE`,
/// `BCV_E_CORRUPT`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_attach(
    vfs: bcv_handle_t,
    url: *const c_char,
    alias: *const c_char,
    flags: u32,
    alias_out: *mut c_char,
    alias_cap: usize,
    alias_len: *mut usize,
) -> bcv_status_t {
    guard(|| attach(vfs, url, alias, flags, None, alias_out, alias_cap, alias_len))
}

/// As `bcv_vfs_attach`, for a secure container: `secure` (see `bcv_secure_t`; NULL attaches a plaintext
/// container) gives the cipher and its keys. The call takes ownership of `secure->user_data`, also when it
/// fails. A container is secure when it was created so (`bcv_container_open_secure` + `bcv_container_create`).
/// Errors: as `bcv_vfs_attach`, and `BCV_E_SECURE` (a plaintext container given a key, a secure one given
/// none: use `bcv_vfs_attach` / this call accordingly), `BCV_E_AUTH` (a wrong key or another cipher: the
/// message names `bcv_secure.json`), `BCV_E_INVALID` (`bcv_secure_t` with none or several of its choices).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bcv_vfs_attach_secure(
    vfs: bcv_handle_t,
    url: *const c_char,
    alias: *const c_char,
    flags: u32,
    secure: *const bcv_secure_t,
    alias_out: *mut c_char,
    alias_cap: usize,
    alias_len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        let secure = try_status!(secure_options(secure));
        attach(vfs, url, alias, flags, secure, alias_out, alias_cap, alias_len)
    })
}

#[allow(clippy::too_many_arguments)]
fn attach(
    vfs: bcv_handle_t,
    url: *const c_char,
    alias: *const c_char,
    flags: u32,
    secure: Option<SecureOptions>,
    alias_out: *mut c_char,
    alias_cap: usize,
    alias_len: *mut usize,
) -> bcv_status_t {
    if flags & !BCV_ATTACH_IF_NOT_ATTACHED != 0 {
        return fail_with(BCV_E_INVALID, &format!("unknown attach flags {flags:#x}"));
    }
    let url = try_status!(c_str(url, "url"));
    let alias = try_status!(opt_str(alias, "alias")).map(str::to_owned);
    let options = AttachOptions { alias, if_not_attached: flags & BCV_ATTACH_IF_NOT_ATTACHED != 0, secure };
    with_vfs(vfs, |v| match v.attach(url, &options) {
        Ok(a) => {
            put_opt(alias_len, copy_out(&a, alias_out, alias_cap));
            BCV_OK
        }
        Err(e) => fail_vfs(&e),
    })
}

/// Writes to `*client` whether this VFS is the client of a multi-process daemon serving its cache directory
/// (then it is read-only; see `bcv_daemon_start`). Errors: `BCV_E_INVALID` (NULL), `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_is_daemon_client(vfs: bcv_handle_t, client: *mut bool) -> bcv_status_t {
    guard(|| {
        if client.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_vfs(vfs, |v| {
            put_opt(client, v.is_daemon_client());
            BCV_OK
        })
    })
}

/// Attaches a container in a store implemented by the application (see `bcv_store_callbacks_t`: the table
/// is copied, and its `destroy` runs exactly once, also when this call fails) as `alias`. `label` names the
/// store in errors and is recorded in the cache: after a restart, attach it again with the same label to
/// reuse the cached manifest. `options` may be NULL (the defaults; its auth callback is not used).
/// Errors: as `bcv_vfs_attach`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_attach_store(
    vfs: bcv_handle_t,
    callbacks: *const bcv_store_callbacks_t,
    label: *const c_char,
    options: *const bcv_store_options_t,
    alias: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let store = try_status!(custom_store(callbacks, label, options));
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| status_of(v.attach_store(store, alias)))
    })
}

/// Detaches `alias`; its running jobs are cancelled. Errors: `BCV_E_BUSY` (connections are open, or local
/// changes are not uploaded: upload or revert them first), `BCV_E_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_detach(vfs: bcv_handle_t, alias: *const c_char) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| status_of(v.detach(alias)))
    })
}

/// Registers the virtual tables `bcv_container`, `bcv_database`, `bcv_block` and `bcv_kv` on `db`, an open
/// `sqlite3 *` of the program's SQLite (normally one opened through this VFS: `bcv_kv` belongs to the
/// container of its main database `/ALIAS/DB`). Call it once per connection. `bcv_kv` is transactional
/// against the container: a COMMIT that lost a race with another client fails with `SQLITE_BUSY_SNAPSHOT`.
/// Errors: `BCV_E_INVALID` (NULL `db`), `BCV_E_SQLITE` (SQLite refused the registration), `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_register_vtabs(vfs: bcv_handle_t, db: *mut c_void) -> bcv_status_t {
    guard(|| {
        if db.is_null() {
            return fail_with(BCV_E_INVALID, "db is NULL");
        }
        // SAFETY: the caller passes an open sqlite3* of the SQLite library this program links (documented).
        with_vfs(vfs, |v| status_of(unsafe { v.register_vtabs(db) }))
    })
}

/// The attached containers as JSON in `*json` (free with `bcv_bytes_free`): `[["alias", "url or label"],
/// …]`, sorted by alias.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_attached_json(vfs: bcv_handle_t, json: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_vfs(vfs, |v| put_json(json, &v.attached()))
    })
}

/// Fetches the manifest of `alias` if it changed (one conditional request) and makes new versions visible:
/// clean databases switch at once (or when their open transactions end); databases with local changes keep
/// them. Fills `*report` (may be NULL) and writes `{"manifest_changed", "updated": [names], "added",
/// "removed", "conflicts"}` to `*json` (may be NULL; free with `bcv_bytes_free`).
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_STORE`, `BCV_E_CORRUPT`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_poll(
    vfs: bcv_handle_t,
    alias: *const c_char,
    report: *mut bcv_poll_report_t,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| match v.poll(alias) {
            Ok(r) => {
                put_opt(
                    report,
                    bcv_poll_report_t {
                        manifest_changed: r.manifest_changed,
                        updated: r.updated.len() as u32,
                        added: r.added.len() as u32,
                        removed: r.removed.len() as u32,
                        conflicts: r.conflicts.len() as u32,
                    },
                );
                put_json_opt(json, &r)
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Uploads the local changes of every database of `alias` in one synchronous call: checkpoint, new blocks
/// in parallel, then the manifest by conditional write (re-based onto other clients' changes to other
/// databases). With `cleanup_grace_ms` ≥ 0, also deletes garbage blocks that waited that long (−1: none).
/// Fills `*report` (may be NULL) and writes `{"databases": [["name", version], …], "blocks_written", …}` to
/// `*json` (may be NULL; free with `bcv_bytes_free`).
/// Errors: `BCV_E_CONFLICT` (another client changed one of these databases: nothing is lost; poll and
/// revert, or keep the local changes), `BCV_E_BUSY` (a write transaction is open), `BCV_E_STORE` (nothing is
/// lost either: retry), `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_upload(
    vfs: bcv_handle_t,
    alias: *const c_char,
    cleanup_grace_ms: i64,
    report: *mut bcv_upload_report_t,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| match v.upload(alias, &grace_of(cleanup_grace_ms)) {
            Ok(r) => {
                put_opt(report, upload_report(&r));
                put_json_opt(json, &r)
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Starts the work of `bcv_vfs_upload` in the background and writes its job handle to `*job`. Closing the
/// job (`bcv_close`) before the manifest is sent leaves the container unchanged. Errors: `BCV_E_NOT_FOUND`,
/// `BCV_E_CLOSED`; the upload's own errors come from `bcv_job_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_upload_start(
    vfs: bcv_handle_t,
    alias: *const c_char,
    cleanup_grace_ms: i64,
    job: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if job.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| new_job(job, v.upload_start(alias, &grace_of(cleanup_grace_ms))))
    })
}

/// Fetches every block of database `db` of `alias` that the cache lacks, synchronously, `nrequest` at a
/// time, calling `progress` (may be NULL; see `bcv_progress_callback_t`) as blocks arrive. Fills `*report`
/// (may be NULL). Errors: `BCV_E_NOT_FOUND`, `BCV_E_STORE` (what was fetched stays cached), `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_prefetch(
    vfs: bcv_handle_t,
    alias: *const c_char,
    db: *const c_char,
    progress: bcv_progress_callback_t,
    user_data: *mut c_void,
    report: *mut bcv_prefetch_report_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let db = try_status!(c_str(db, "db"));
        let cb = ProgressFn::new(progress, user_data);
        with_vfs(vfs, |v| match v.prefetch(alias, db, &|p| cb.report(p)) {
            Ok(r) => {
                put_opt(report, bcv_prefetch_report_t { blocks: r.blocks, bytes_fetched: r.bytes_fetched });
                BCV_OK
            }
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Starts a prefetch of database `db` of `alias` in the background and writes its job handle to `*job`
/// (progress: `bcv_job_progress`). Errors: `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_prefetch_start(
    vfs: bcv_handle_t,
    alias: *const c_char,
    db: *const c_char,
    job: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if job.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let alias = try_status!(c_str(alias, "alias"));
        let db = try_status!(c_str(db, "db"));
        with_vfs(vfs, |v| new_job(job, v.prefetch_start(alias, db)))
    })
}

/// Drops the local changes of database `db` of `alias`, or of all its databases when `db` is NULL; writes
/// the names reverted as a JSON array to `*json` (may be NULL; free with `bcv_bytes_free`).
/// Errors: `BCV_E_BUSY` (a connection has a transaction open), `BCV_E_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_revert(
    vfs: bcv_handle_t,
    alias: *const c_char,
    db: *const c_char,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let db = try_status!(opt_str(db, "db"));
        with_vfs(vfs, |v| match v.revert(alias, db) {
            Ok(names) => put_json_opt(json, &names),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Copies database `from` of `alias` to a new database `to` in the container (shares its blocks; the
/// manifest is written at once). Errors: `BCV_E_NOT_FOUND`, `BCV_E_EXISTS`, `BCV_E_CONFLICT`, `BCV_E_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_copy(
    vfs: bcv_handle_t,
    alias: *const c_char,
    from: *const c_char,
    to: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let from = try_status!(c_str(from, "from"));
        let to = try_status!(c_str(to, "to"));
        with_vfs(vfs, |v| status_of(v.copy(alias, from, to)))
    })
}

/// Deletes database `db` from the container attached as `alias` (the manifest is written at once).
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_BUSY` (it is open), `BCV_E_CONFLICT`, `BCV_E_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_delete(vfs: bcv_handle_t, alias: *const c_char, db: *const c_char) -> bcv_status_t {
    guard(|| {
        let alias = try_status!(c_str(alias, "alias"));
        let db = try_status!(c_str(db, "db"));
        with_vfs(vfs, |v| status_of(v.delete(alias, db)))
    })
}

/// The status of every database of `alias` as a JSON array in `*json` (free with `bcv_bytes_free`), each
/// `{"name", "id", "version", "size", "blocks", "dirty_blocks", "has_local_changes", "open_handles"}`.
/// Errors: `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_databases(
    vfs: bcv_handle_t,
    alias: *const c_char,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| match v.databases(alias) {
            Ok(list) => put_json(json, &list),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// The manifest of `alias` as this client last saw it, as JSON in `*json` (the shape of
/// `bcv_container_manifest_json`; free with `bcv_bytes_free`). Errors: `BCV_E_NOT_FOUND`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_manifest_json(
    vfs: bcv_handle_t,
    alias: *const c_char,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| match v.manifest(alias) {
            Ok(m) => put_json(json, &manifest_summary(&m)),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// A snapshot of the request meter of `alias`'s store (requests, bytes, errors, retries per kind,
/// estimated cost) as JSON in `*json` (free with `bcv_bytes_free`). Errors: `BCV_E_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_meter_json(
    vfs: bcv_handle_t,
    alias: *const c_char,
    json: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        if json.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let alias = try_status!(c_str(alias, "alias"));
        with_vfs(vfs, |v| match v.store(alias) {
            Ok(s) => put_json(json, &s.meter().snapshot()),
            Err(e) => fail_vfs(&e),
        })
    })
}

/// Fills `*stats` with the cache's activity counters and `*usage` with its occupancy (either may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_cache_stats(
    vfs: bcv_handle_t,
    stats: *mut bcv_cache_stats_t,
    usage: *mut bcv_cache_usage_t,
) -> bcv_status_t {
    guard(|| {
        with_vfs(vfs, |v| {
            put_opt(stats, cache_stats_of(&v.cache_stats()));
            put_opt(usage, cache_usage_of(&v.cache_usage()));
            BCV_OK
        })
    })
}

/// The C form of the cache's activity counters.
pub(crate) fn cache_stats_of(s: &CacheStats) -> bcv_cache_stats_t {
    bcv_cache_stats_t { hits: s.hits, misses: s.misses, bytes_fetched: s.bytes_fetched, evictions: s.evictions }
}

/// The C form of the cache's occupancy.
pub(crate) fn cache_usage_of(u: &CacheUsage) -> bcv_cache_usage_t {
    bcv_cache_usage_t {
        clean_slots: u.clean_slots,
        dirty_slots: u.dirty_slots,
        block_size: u.block_size,
        capacity: u.capacity,
    }
}

/// Copies the last error that a bcv VFS met inside an SQLite call on this thread (the reason behind an
/// `SQLITE_IOERR`, `SQLITE_CANTOPEN`… that SQLite itself cannot carry) into `buf` (NUL-terminated,
/// truncated to `cap`); writes its full length to `*len` (may be NULL). Empty when there was none; it is not
/// cleared by later successful calls.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_vfs_last_error(buf: *mut c_char, cap: usize, len: *mut usize) -> bcv_status_t {
    guard(|| {
        put_opt(len, copy_out(&bcv_core::vfs::last_error(), buf, cap));
        BCV_OK
    })
}

/// Writes the bytes a job has done and has to do so far to `*done` and `*total` (either may be NULL; the
/// total is known once the job has listed its blocks).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_job_progress(job: bcv_handle_t, done: *mut u64, total: *mut u64) -> bcv_status_t {
    guard(|| {
        with_job(job, |j| {
            let p = j.job.progress();
            put_opt(done, p.done);
            put_opt(total, p.total);
            BCV_OK
        })
    })
}

/// Writes the job's state (`BCV_JOB_*`) to `*status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_job_status(job: bcv_handle_t, status: *mut u32) -> bcv_status_t {
    guard(|| {
        if status.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_job(job, |j| {
            let s = match j.job.status() {
                JobStatus::Running => BCV_JOB_RUNNING,
                JobStatus::Done => BCV_JOB_DONE,
                JobStatus::Failed => BCV_JOB_FAILED,
                JobStatus::Cancelled => BCV_JOB_CANCELLED,
            };
            put_opt(status, s);
            BCV_OK
        })
    })
}

/// Copies what the job does ("prefetch of main/db", "upload of container main") into `buf`
/// (NUL-terminated, truncated to `cap`); writes its full length to `*len` (may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_job_description(
    job: bcv_handle_t,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        with_job(job, |j| {
            put_opt(len, copy_out(j.job.description(), buf, cap));
            BCV_OK
        })
    })
}

/// Waits up to `timeout_ms` for the job to finish. On success writes its outcome as JSON to `*outcome`
/// (may be NULL; free with `bcv_bytes_free`): `{"prefetch": {"blocks", "bytes_fetched"}}` or
/// `{"upload": {as bcv_vfs_upload}}`. Every wait after the end returns the same status and message.
/// Errors: `BCV_E_TIMEOUT` (still running; nothing changes), `BCV_E_CLOSED` (cancelled by `bcv_close` of
/// the job, of its VFS, or by a detach), or the job's own error (`BCV_E_STORE`, `BCV_E_CONFLICT`…).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_job_wait(job: bcv_handle_t, timeout_ms: i64, outcome: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        with_job(job, |j| {
            if !j.job.wait_finished(timeout_of(timeout_ms)) {
                return fail_with(BCV_E_TIMEOUT, &format!("{} is still running", j.job.description()));
            }
            let mut result = j.result.lock().unwrap_or_else(|p| p.into_inner());
            let r = result.get_or_insert_with(|| match j.job.wait(Some(Duration::ZERO)) {
                Ok(Some(o)) => Ok(o),
                Ok(None) => Err((BCV_E_INTERNAL, "a finished job had no result".to_string())),
                Err(e) => Err((vfs_status(&e), e.to_string())),
            });
            match r {
                Ok(o) => put_json_opt(outcome, o),
                Err((code, message)) => fail_with(*code, message),
            }
        })
    })
}
