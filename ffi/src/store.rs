//! How bcv reaches an object store: store options (retries, timeouts, cloud configuration keys), the
//! credentials callback for cloud stores, and object stores implemented by the application in C.
//!
//! Both callbacks answer through an opaque reply object whose setters copy what they are given, so no
//! memory changes hands between C and bcv: the application keeps owning its strings and buffers.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use bcv_core::vfs::store::{
    AuthProvider, AuthRequest, AuthToken, ContainerStore, CustomError, CustomStore, StoreOptions,
};

use crate::error::*;
use crate::io::c_str;
use crate::stream::{bcv_user_data_free_t, try_status};

/// One configuration key of a cloud store, as `object_store` names them (`aws_region`, `azure_storage_*`,
/// `google_*`, client keys such as `timeout`). Borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_store_option_t {
    /// The key, NUL-terminated.
    pub key: *const c_char,
    /// The value, NUL-terminated. May be a secret: bcv never shows it.
    pub value: *const c_char,
}

/// Where a credentials callback puts its answer. Opaque; valid only during the callback. Fill it with
/// `bcv_auth_answer_set` or `bcv_auth_answer_set_aws`, or explain a refusal with `bcv_auth_answer_refuse`.
pub struct bcv_auth_answer_t {
    token: Option<AuthToken>,
    refusal: Option<String>,
}

/// The credentials callback of cloud stores (CBS's auth callback). bcv calls it before every request to an
/// S3, Azure or GCS container opened with it.
///
/// `storage` is "s3", "azure" or "gcs"; `account` the storage account (Azure), or the endpoint or region
/// when known (S3), or ""; `container` the bucket or container. All three are borrowed for the call.
/// Return `BCV_OK` after setting a credential on `answer`, or a negative status to refuse (the request then
/// fails with `BCV_E_STORE`, without retry, and the message includes the reason given to
/// `bcv_auth_answer_refuse`). Which credentials a store accepts: S3 → AWS keys; Azure → SAS, account key or
/// bearer token; GCS → bearer token.
///
/// It runs on a bcv thread, possibly on several at once, for as long as a store opened with it is in use; it
/// may block (fetch a token over the network) but should cache tokens that are slow to get. It may call only
/// the `bcv_auth_answer_*` functions.
pub type bcv_auth_callback_t = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        storage: *const c_char,
        account: *const c_char,
        container: *const c_char,
        answer: *mut bcv_auth_answer_t,
    ) -> bcv_status_t,
>;

/// Credential kind for `bcv_auth_answer_set`: an Azure shared access signature (the query string, with or
/// without the leading '?').
pub const BCV_AUTH_AZURE_SAS: u32 = 1;
/// Credential kind: an Azure storage account key (base64), used to sign each request.
pub const BCV_AUTH_AZURE_ACCESS_KEY: u32 = 2;
/// Credential kind: an OAuth bearer token (Azure AD / Entra ID, Google).
pub const BCV_AUTH_BEARER: u32 = 3;

/// How bcv talks to a store. Initialise it with `bcv_store_options_init`, then change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_store_options_t {
    /// Retries after a transient failure (at most `retries + 1` attempts). Default 4.
    pub retries: u32,
    /// Delay before the first retry in milliseconds, doubled for each next one (capped at 5 s). Default 50.
    pub retry_base_delay_ms: u32,
    /// Time limit of one request attempt in milliseconds, body included; 0 means the default, 30000.
    pub request_timeout_ms: u64,
    /// Requests in flight at once to this container; 0 is taken as 1. Default 8.
    pub max_concurrency: u32,
    /// `option_count` extra configuration keys for cloud stores, applied after the URL's (NULL when 0). An
    /// option given to a local or memory store is `BCV_E_INVALID`; an unknown key too.
    pub options: *const bcv_store_option_t,
    /// Number of entries at `options`.
    pub option_count: usize,
    /// The credentials callback, or NULL to use the URL's keys or the environment.
    pub auth: bcv_auth_callback_t,
    /// Passed to `auth`.
    pub auth_user_data: *mut c_void,
    /// Frees `auth_user_data` (may be NULL). Each call that takes these options (`bcv_vfs_new`,
    /// `bcv_container_open`, …) runs it exactly once: when the last store opened with them is gone, or before
    /// the call returns when it fails. So pass it to one call only, or make `auth_user_data` counted. It runs
    /// on any thread and may not call into bcv.
    pub auth_user_data_free: bcv_user_data_free_t,
}

/// Fills `*options` with the defaults (4 retries from 50 ms, 30 s per request, 8 requests at once, no
/// options, no credentials callback). Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_options_init(options: *mut bcv_store_options_t) -> bcv_status_t {
    guard(|| {
        if options.is_null() {
            return fail_with(BCV_E_INVALID, "options is NULL");
        }
        // SAFETY: non-NULL, caller-provided storage for one struct.
        unsafe { *options = default_store_options() };
        BCV_OK
    })
}

pub(crate) fn default_store_options() -> bcv_store_options_t {
    let d = StoreOptions::default();
    bcv_store_options_t {
        retries: d.retries,
        retry_base_delay_ms: d.retry_base_delay.as_millis() as u32,
        request_timeout_ms: d.request_timeout.as_millis() as u64,
        max_concurrency: d.max_concurrency as u32,
        options: std::ptr::null(),
        option_count: 0,
        auth: None,
        auth_user_data: std::ptr::null_mut(),
        auth_user_data_free: None,
    }
}

/// The application's credentials callback as an [`AuthProvider`]; frees its user data when dropped.
struct CAuth {
    callback: bcv_auth_callback_t,
    user_data: *mut c_void,
    free: bcv_user_data_free_t,
}

// SAFETY: the header tells the application that the callback and its user data are used from several bcv
// threads at once and freed on any thread.
unsafe impl Send for CAuth {}
// SAFETY: as above.
unsafe impl Sync for CAuth {}

impl Drop for CAuth {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: runs exactly once (Drop), with no bcv lock held, as documented.
            unsafe { free(self.user_data) };
        }
    }
}

/// A string for C: the text up to any NUL it contains (names and URLs never contain one).
fn c_string(s: &str) -> CString {
    CString::new(s.split('\0').next().unwrap_or("")).unwrap_or_default()
}

impl AuthProvider for CAuth {
    fn token(&self, request: &AuthRequest) -> Result<AuthToken, String> {
        let Some(callback) = self.callback else { return Err("no credentials callback".into()) };
        let (storage, account, container) =
            (c_string(request.storage), c_string(&request.account), c_string(&request.container));
        let mut answer = bcv_auth_answer_t { token: None, refusal: None };
        // SAFETY: the callback contract in the header; the strings and `answer` live across the call.
        let status =
            unsafe { callback(self.user_data, storage.as_ptr(), account.as_ptr(), container.as_ptr(), &mut answer) };
        match (status, answer.token) {
            (BCV_OK, Some(token)) => Ok(token),
            (BCV_OK, None) => Err("the callback returned BCV_OK without setting a credential".into()),
            (code, _) => Err(answer
                .refusal
                .unwrap_or_else(|| format!("the callback returned {}", status_cname(code).to_string_lossy()))),
        }
    }
}

/// Converts the caller's options, taking ownership of the auth user data first so that its free function
/// runs exactly once whatever happens next. NULL gives the defaults.
pub(crate) fn store_options(options: *const bcv_store_options_t) -> Result<StoreOptions, bcv_status_t> {
    if options.is_null() {
        return Ok(StoreOptions::default());
    }
    // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
    let o = unsafe { *options };
    let auth = CAuth { callback: o.auth, user_data: o.auth_user_data, free: o.auth_user_data_free };
    let mut out = StoreOptions {
        retries: o.retries,
        retry_base_delay: Duration::from_millis(o.retry_base_delay_ms.into()),
        request_timeout: if o.request_timeout_ms == 0 {
            StoreOptions::default().request_timeout
        } else {
            Duration::from_millis(o.request_timeout_ms)
        },
        max_concurrency: o.max_concurrency as usize,
        auth: None,
        ..StoreOptions::default()
    };
    if o.option_count > 0 {
        if o.options.is_null() {
            return Err(fail_with(BCV_E_INVALID, "options is NULL but option_count is not 0"));
        }
        // SAFETY: the caller provides `option_count` entries with strings valid for the call.
        let pairs = unsafe { std::slice::from_raw_parts(o.options, o.option_count) };
        for p in pairs {
            out.options.push((c_str(p.key, "option key")?.to_owned(), c_str(p.value, "option value")?.to_owned()));
        }
    }
    if auth.callback.is_some() {
        out.auth = Some(Arc::new(auth));
    }
    Ok(out)
}

fn answer_of<'a>(answer: *mut bcv_auth_answer_t) -> Result<&'a mut bcv_auth_answer_t, bcv_status_t> {
    if answer.is_null() {
        return Err(fail_with(BCV_E_INVALID, "answer is NULL"));
    }
    // SAFETY: a non-NULL answer is the one bcv passed to the running callback (the documented contract).
    Ok(unsafe { &mut *answer })
}

/// Sets the credential of a callback's answer to a string of kind `BCV_AUTH_AZURE_SAS`,
/// `BCV_AUTH_AZURE_ACCESS_KEY` or `BCV_AUTH_BEARER` (copied). Only inside the callback.
/// Errors: `BCV_E_INVALID` (NULL, unknown kind, not UTF-8).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_auth_answer_set(
    answer: *mut bcv_auth_answer_t,
    kind: u32,
    value: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let a = try_status!(answer_of(answer));
        let value = try_status!(c_str(value, "value")).to_owned();
        a.token = Some(match kind {
            BCV_AUTH_AZURE_SAS => AuthToken::AzureSas(value),
            BCV_AUTH_AZURE_ACCESS_KEY => AuthToken::AzureAccessKey(value),
            BCV_AUTH_BEARER => AuthToken::Bearer(value),
            _ => return fail_with(BCV_E_INVALID, &format!("unknown credential kind {kind}")),
        });
        BCV_OK
    })
}

/// Sets the credential of a callback's answer to AWS access keys (copied); `session_token` is NULL for
/// long-term keys. Only inside the callback. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_auth_answer_set_aws(
    answer: *mut bcv_auth_answer_t,
    key_id: *const c_char,
    secret_key: *const c_char,
    session_token: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let a = try_status!(answer_of(answer));
        let key_id = try_status!(c_str(key_id, "key_id")).to_owned();
        let secret_key = try_status!(c_str(secret_key, "secret_key")).to_owned();
        let session_token = if session_token.is_null() {
            None
        } else {
            Some(try_status!(c_str(session_token, "session_token")).to_owned())
        };
        a.token = Some(AuthToken::AwsKeys { key_id, secret_key, session_token });
        BCV_OK
    })
}

/// Records why the callback refuses (copied; shown in the request's error). The callback then returns a
/// negative status. Only inside the callback. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_auth_answer_refuse(answer: *mut bcv_auth_answer_t, reason: *const c_char) -> bcv_status_t {
    guard(|| {
        let a = try_status!(answer_of(answer));
        a.refusal = Some(try_status!(c_str(reason, "reason")).to_owned());
        BCV_OK
    })
}

// ---------------------------------------------------------------------------------------------------------
// Stores implemented in C
// ---------------------------------------------------------------------------------------------------------

/// Where a store callback puts its result. Opaque; valid only during the callback. The setters copy what
/// they are given (`bcv_store_reply_alloc` instead lends a buffer owned by the reply).
pub struct bcv_store_reply_t {
    data: Option<Vec<u8>>,
    etag: Option<String>,
    size: Option<u64>,
    objects: Vec<(String, u64)>,
    error: Option<(String, bool)>,
}

/// A container in a store implemented by the application (CBS's custom cloud module).
///
/// Object names are the container's (`manifest.bcv`, `bcv_kv.bcv`, `<HEX>.bcv`); ETags are strings of the
/// application's choosing that change whenever an object's content changes. Each callback returns `BCV_OK`
/// or a status, and passes its results through `reply`:
/// * `get`: the whole object (`bcv_store_reply_set_data` or `_alloc`) and its ETag (`_set_etag`);
///   `BCV_E_NOT_FOUND` when it does not exist.
/// * `get_range`: `len` bytes from `start` (fewer only when the object ends first); `BCV_E_NOT_FOUND`.
/// * `head` (may be NULL: `get` is used): the size (`_set_size`) and ETag; `BCV_E_NOT_FOUND`.
/// * `put`: write unconditionally; set the new ETag.
/// * `put_if_absent`: write only if the object does not exist, atomically; `BCV_E_EXISTS` otherwise.
/// * `put_if_match`: write only if the current ETag is `etag`, atomically; `BCV_E_CONFLICT` otherwise (also
///   when the object does not exist). bcv keeps its manifest consistent with these two: they must be atomic.
/// * `delete_object`: remove it; a missing object may give `BCV_OK` or `BCV_E_NOT_FOUND`.
/// * `list`: every object of the container (`bcv_store_reply_add_object` for each).
///
/// Any other failure: return a negative status, optionally with `bcv_store_reply_set_error` (a message and
/// whether a retry may succeed; without it, `BCV_E_TIMEOUT`, `BCV_E_STORE` and `BCV_E_IO` are retried and
/// others are not). `name`, `data` and `etag` are borrowed for the call.
///
/// Callbacks run on bcv's blocking threads, several at once, for as long as the store is in use. They may call
/// only the `bcv_store_reply_*` functions. The table is copied by the call that takes it; `destroy` (may be
/// NULL) then runs exactly once with `user_data`, on any thread, when bcv no longer uses the store (after the
/// VFS or container object is released and its last request has returned), or before that call returns
/// when it fails. `destroy` may not call into bcv.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_store_callbacks_t {
    /// Passed to every callback.
    pub user_data: *mut c_void,
    /// Reads a whole object.
    pub get: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Reads `len` bytes of an object from `start`.
    pub get_range: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            start: u64,
            len: u64,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Size and ETag of an object (optional).
    pub head: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Writes an object unconditionally.
    pub put: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            data: *const u8,
            len: usize,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Writes an object only if it does not exist.
    pub put_if_absent: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            data: *const u8,
            len: usize,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Writes an object only if its ETag is `etag`.
    pub put_if_match: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            data: *const u8,
            len: usize,
            etag: *const c_char,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Deletes an object.
    pub delete_object: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            reply: *mut bcv_store_reply_t,
        ) -> bcv_status_t,
    >,
    /// Lists the objects.
    pub list: Option<unsafe extern "C" fn(user_data: *mut c_void, reply: *mut bcv_store_reply_t) -> bcv_status_t>,
    /// Frees `user_data` (may be NULL); see above for when.
    pub destroy: bcv_user_data_free_t,
}

/// The application's table as a [`CustomStore`]; runs `destroy` when dropped.
struct CStore {
    table: bcv_store_callbacks_t,
}

// SAFETY: the header tells the application that its callbacks run on several bcv threads at once and that
// `destroy` may run on any thread.
unsafe impl Send for CStore {}
// SAFETY: as above.
unsafe impl Sync for CStore {}

impl Drop for CStore {
    fn drop(&mut self) {
        if let Some(destroy) = self.table.destroy {
            // SAFETY: runs exactly once (Drop), with no bcv lock held, as documented.
            unsafe { destroy(self.table.user_data) };
        }
    }
}

fn new_reply() -> bcv_store_reply_t {
    bcv_store_reply_t { data: None, etag: None, size: None, objects: Vec::new(), error: None }
}

/// A callback's failure as the custom store's error.
fn failure(what: &str, name: &str, status: bcv_status_t, reply: &mut bcv_store_reply_t) -> CustomError {
    let (message, transient) = reply.error.take().unwrap_or_else(|| {
        let code = status_cname(status).to_string_lossy();
        (
            format!("the {what} callback for {name:?} returned {code}"),
            matches!(status, BCV_E_TIMEOUT | BCV_E_STORE | BCV_E_IO),
        )
    });
    CustomError::Other { message, transient }
}

fn missing(what: &str, name: &str, field: &str) -> CustomError {
    CustomError::Other {
        message: format!("the {what} callback for {name:?} returned BCV_OK without {field}"),
        transient: false,
    }
}

impl CStore {
    /// Calls one callback with the object name as a C string and a fresh reply.
    fn call(
        &self,
        name: &str,
        f: impl FnOnce(*mut c_void, *const c_char, *mut bcv_store_reply_t) -> bcv_status_t,
    ) -> Result<(bcv_status_t, bcv_store_reply_t), CustomError> {
        let c_name = CString::new(name).map_err(|_| CustomError::Other {
            message: format!("object name {name:?} contains NUL"),
            transient: false,
        })?;
        let mut reply = new_reply();
        let status = f(self.table.user_data, c_name.as_ptr(), &mut reply);
        Ok((status, reply))
    }

    /// The ETag of a successful write, or the callback's failure.
    fn etag_of(
        what: &str,
        name: &str,
        status: bcv_status_t,
        mut reply: bcv_store_reply_t,
    ) -> Result<String, CustomError> {
        match status {
            BCV_OK => reply.etag.ok_or_else(|| missing(what, name, "an ETag")),
            code => Err(failure(what, name, code, &mut reply)),
        }
    }
}

fn unset(what: &str) -> CustomError {
    CustomError::Other { message: format!("the store has no {what} callback"), transient: false }
}

impl CustomStore for CStore {
    fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, CustomError> {
        let cb = self.table.get.ok_or_else(|| unset("get"))?;
        // SAFETY (all callbacks below): the contract of `bcv_store_callbacks_t`; every pointer passed lives
        // across the call.
        let (status, mut reply) = self.call(name, |u, n, r| unsafe { cb(u, n, r) })?;
        match status {
            BCV_OK => {
                let etag = reply.etag.take().ok_or_else(|| missing("get", name, "an ETag"))?;
                Ok(Some((reply.data.take().unwrap_or_default(), etag)))
            }
            BCV_E_NOT_FOUND => Ok(None),
            code => Err(failure("get", name, code, &mut reply)),
        }
    }

    fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>, CustomError> {
        let cb = self.table.get_range.ok_or_else(|| unset("get_range"))?;
        let (status, mut reply) = self.call(name, |u, n, r| unsafe { cb(u, n, start, len, r) })?;
        match status {
            BCV_OK => Ok(reply.data.take().unwrap_or_default()),
            BCV_E_NOT_FOUND => Err(CustomError::NotFound),
            code => Err(failure("get_range", name, code, &mut reply)),
        }
    }

    fn head(&self, name: &str) -> Result<Option<(u64, String)>, CustomError> {
        let Some(cb) = self.table.head else {
            return Ok(self.get(name)?.map(|(data, etag)| (data.len() as u64, etag)));
        };
        let (status, mut reply) = self.call(name, |u, n, r| unsafe { cb(u, n, r) })?;
        match status {
            BCV_OK => {
                let size = reply.size.ok_or_else(|| missing("head", name, "a size"))?;
                let etag = reply.etag.take().ok_or_else(|| missing("head", name, "an ETag"))?;
                Ok(Some((size, etag)))
            }
            BCV_E_NOT_FOUND => Ok(None),
            code => Err(failure("head", name, code, &mut reply)),
        }
    }

    fn put_overwrite(&self, name: &str, data: &[u8]) -> Result<String, CustomError> {
        let cb = self.table.put.ok_or_else(|| unset("put"))?;
        let (status, reply) = self.call(name, |u, n, r| unsafe { cb(u, n, data.as_ptr(), data.len(), r) })?;
        CStore::etag_of("put", name, status, reply)
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<String, CustomError> {
        let cb = self.table.put_if_absent.ok_or_else(|| unset("put_if_absent"))?;
        let (status, reply) = self.call(name, |u, n, r| unsafe { cb(u, n, data.as_ptr(), data.len(), r) })?;
        match status {
            BCV_E_EXISTS => Err(CustomError::AlreadyExists),
            _ => CStore::etag_of("put_if_absent", name, status, reply),
        }
    }

    fn put_if_match(&self, name: &str, data: &[u8], etag: &str) -> Result<String, CustomError> {
        let cb = self.table.put_if_match.ok_or_else(|| unset("put_if_match"))?;
        let c_etag = c_string(etag);
        let (status, reply) =
            self.call(name, |u, n, r| unsafe { cb(u, n, data.as_ptr(), data.len(), c_etag.as_ptr(), r) })?;
        match status {
            BCV_E_CONFLICT | BCV_E_NOT_FOUND => Err(CustomError::Precondition),
            _ => CStore::etag_of("put_if_match", name, status, reply),
        }
    }

    fn delete(&self, name: &str) -> Result<(), CustomError> {
        let cb = self.table.delete_object.ok_or_else(|| unset("delete_object"))?;
        let (status, mut reply) = self.call(name, |u, n, r| unsafe { cb(u, n, r) })?;
        match status {
            BCV_OK => Ok(()),
            BCV_E_NOT_FOUND => Err(CustomError::NotFound),
            code => Err(failure("delete_object", name, code, &mut reply)),
        }
    }

    fn list(&self) -> Result<Vec<(String, u64)>, CustomError> {
        let cb = self.table.list.ok_or_else(|| unset("list"))?;
        let mut reply = new_reply();
        // SAFETY: as above.
        let status = unsafe { cb(self.table.user_data, &mut reply) };
        match status {
            BCV_OK => Ok(reply.objects),
            code => Err(failure("list", "", code, &mut reply)),
        }
    }
}

/// Takes the application's table (its `destroy` then runs exactly once) and checks it is complete.
pub(crate) fn custom_store(
    callbacks: *const bcv_store_callbacks_t,
    label: *const c_char,
    options: *const bcv_store_options_t,
) -> Result<ContainerStore, bcv_status_t> {
    if callbacks.is_null() {
        return Err(fail_with(BCV_E_INVALID, "callbacks is NULL"));
    }
    // SAFETY: non-NULL, points to an initialised table for the duration of the call; copied here.
    let store = CStore { table: unsafe { *callbacks } };
    let t = &store.table;
    let complete = t.get.is_some()
        && t.get_range.is_some()
        && t.put.is_some()
        && t.put_if_absent.is_some()
        && t.put_if_match.is_some()
        && t.delete_object.is_some()
        && t.list.is_some();
    if !complete {
        return Err(fail_with(BCV_E_INVALID, "every store callback except head and destroy must be set"));
    }
    let label = c_str(label, "label")?.to_owned();
    let options = store_options(options)?;
    Ok(ContainerStore::from_custom(Arc::new(store), &label, &options))
}

fn reply_of<'a>(reply: *mut bcv_store_reply_t) -> Result<&'a mut bcv_store_reply_t, bcv_status_t> {
    if reply.is_null() {
        return Err(fail_with(BCV_E_INVALID, "reply is NULL"));
    }
    // SAFETY: a non-NULL reply is the one bcv passed to the running callback (the documented contract).
    Ok(unsafe { &mut *reply })
}

/// Sets the object bytes of a `get` or `get_range` reply to a copy of `len` bytes at `data` (NULL when 0).
/// Only inside the callback. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_set_data(
    reply: *mut bcv_store_reply_t,
    data: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        if data.is_null() && len > 0 {
            return fail_with(BCV_E_INVALID, "data is NULL");
        }
        let r = try_status!(reply_of(reply));
        r.data = Some(if len == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller provides `len` readable bytes.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        });
        BCV_OK
    })
}

/// Gives the callback a zeroed buffer of `len` bytes to write the object bytes into, instead of
/// `bcv_store_reply_set_data` (saves a copy). The buffer belongs to the reply: valid until the callback
/// returns or the next `_alloc`/`_set_data` on it; never free it. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_alloc(
    reply: *mut bcv_store_reply_t,
    len: usize,
    data: *mut *mut u8,
) -> bcv_status_t {
    guard(|| {
        if data.is_null() {
            return fail_with(BCV_E_INVALID, "data is NULL");
        }
        let r = try_status!(reply_of(reply));
        let buf = r.data.insert(vec![0u8; len]);
        // SAFETY: non-NULL caller storage; the buffer lives in the reply until it is replaced or consumed.
        unsafe { *data = buf.as_mut_ptr() };
        BCV_OK
    })
}

/// Sets the ETag of a reply (copied). Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_set_etag(reply: *mut bcv_store_reply_t, etag: *const c_char) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        r.etag = Some(try_status!(c_str(etag, "etag")).to_owned());
        BCV_OK
    })
}

/// Sets the object size of a `head` reply. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_set_size(reply: *mut bcv_store_reply_t, size: u64) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        r.size = Some(size);
        BCV_OK
    })
}

/// Adds one object (name copied, and its size) to a `list` reply. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_add_object(
    reply: *mut bcv_store_reply_t,
    name: *const c_char,
    size: u64,
) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        let name = try_status!(c_str(name, "name")).to_owned();
        r.objects.push((name, size));
        BCV_OK
    })
}

/// Describes a failure (message copied) and whether retrying may succeed; the callback then returns a
/// negative status. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_store_reply_set_error(
    reply: *mut bcv_store_reply_t,
    message: *const c_char,
    transient: bool,
) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        r.error = Some((try_status!(c_str(message, "message")).to_owned(), transient));
        BCV_OK
    })
}
