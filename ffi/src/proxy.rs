//! The Proxy-Wasm host: runs proxy-wasm plugins (ABI 0.2.1, 0.2.0, 0.1.0) for an application that filters
//! HTTP requests or TCP connections.
//!
//! Objects, each a handle released with `bcv_release`: a host (`bcv_proxy_host_new`, a node of a runtime),
//! modules it compiled (`bcv_proxy_module_load`, no node), VMs (`bcv_proxy_vm_start`), their plugins
//! (`bcv_proxy_vm_add_plugin`), and stream contexts (`bcv_proxy_http_context_new`,
//! `bcv_proxy_tcp_context_new`): host → VM → plugin → context. Handles may be released in any order;
//! closing a parent (`bcv_close`) finishes its children. Releasing a context finishes it (`on_done`,
//! `on_log`, `on_delete`).
//!
//! The embedder feeds what arrives (`bcv_proxy_http_on_request_headers`, …) and gets an action back
//! (`BCV_PROXY_CONTINUE`, `_PAUSE`, `_LOCAL_RESPONSE`, `_CLOSE`); what the plugin changed is copied out with
//! the getters. A paused stream is waited on with `bcv_proxy_http_wait`. A trap or an exceeded limit fails
//! only that VM: its plugins then fail open (continue) or closed (a local 503, or close for TCP).
//!
//! What a VM needs from the embedder comes through the callbacks of `bcv_proxy_vm_config_t`: HTTP and gRPC
//! callouts (handed over as callout handles, answered later from any thread), properties, foreign functions
//! and logs. They run on the thread that runs the plugin while the VM is busy: they must not call into the
//! same VM (that fails with `BCV_E_WOULD_DEADLOCK`).

use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bcv_core::proxy::{
    AbiVersion, CalloutRejected, CalloutReply, CalloutResponse, FailReason, FilterAction, ForeignError, GrpcCallout,
    GrpcResponse, HeaderMap, HostConfig, HttpCallout, HttpContext, LocalResponse, LogLevel, LogRecord, MapLimits,
    MapType, MetricType, PeerType, Plugin, PluginConfig, ProxyHost, ProxyResult, RestartPolicy, Services, StreamType,
    TcpContext, Vm, VmConfig,
};

use crate::container::{put_json, put_opt};
use crate::error::*;
use crate::handle::{bcv_handle_t, put, runtime_of, timeout_of};
use crate::io::{c_str, copy_out};
use crate::secure::UserData;
use crate::stream::{bcv_bytes_t, bcv_user_data_free_t, consume_reader, reader, try_status};
use crate::table::{self, Object};

/// Action: pass the (possibly changed) headers or data on.
pub const BCV_PROXY_CONTINUE: u32 = 0;
/// Action: hold the stream; buffer what arrives and wait (`bcv_proxy_http_wait`) for the plugin.
pub const BCV_PROXY_PAUSE: u32 = 1;
/// Action: do not forward; answer the client with the local response instead (HTTP only).
pub const BCV_PROXY_LOCAL_RESPONSE: u32 = 2;
/// Action: reset or close the stream.
pub const BCV_PROXY_CLOSE: u32 = 3;

/// Stream: the HTTP request (headers, body, trailers) going upstream.
pub const BCV_PROXY_STREAM_REQUEST: u32 = 0;
/// Stream: the HTTP response coming back.
pub const BCV_PROXY_STREAM_RESPONSE: u32 = 1;
/// Stream: data from the downstream (client) peer of a TCP connection.
pub const BCV_PROXY_STREAM_DOWNSTREAM: u32 = 2;
/// Stream: data from the upstream (server) peer of a TCP connection.
pub const BCV_PROXY_STREAM_UPSTREAM: u32 = 3;

/// Which side closed a TCP connection: not known.
pub const BCV_PROXY_PEER_UNKNOWN: u32 = 0;
/// This proxy closed it.
pub const BCV_PROXY_PEER_LOCAL: u32 = 1;
/// The remote peer closed it.
pub const BCV_PROXY_PEER_REMOTE: u32 = 2;

/// Module ABI version (`bcv_proxy_module_info`): proxy_abi_version_0_1_0.
pub const BCV_PROXY_ABI_0_1_0: u32 = 100;
/// proxy_abi_version_0_2_0.
pub const BCV_PROXY_ABI_0_2_0: u32 = 200;
/// proxy_abi_version_0_2_1.
pub const BCV_PROXY_ABI_0_2_1: u32 = 201;

/// Log level of a plugin's log record: tracing detail.
pub const BCV_PROXY_LOG_TRACE: u32 = 0;
/// Debugging detail.
pub const BCV_PROXY_LOG_DEBUG: u32 = 1;
/// Normal operation (WASI stdout lines too).
pub const BCV_PROXY_LOG_INFO: u32 = 2;
/// Something unexpected that the plugin handled.
pub const BCV_PROXY_LOG_WARN: u32 = 3;
/// An error (WASI stderr lines too).
pub const BCV_PROXY_LOG_ERROR: u32 = 4;
/// A failure the plugin cannot continue from (also the host's "vm failed" record).
pub const BCV_PROXY_LOG_CRITICAL: u32 = 5;

/// Metric kind: a monotonically increasing count.
pub const BCV_PROXY_METRIC_COUNTER: u32 = 0;
/// A value that goes up and down.
pub const BCV_PROXY_METRIC_GAUGE: u32 = 1;
/// A distribution of recorded values.
pub const BCV_PROXY_METRIC_HISTOGRAM: u32 = 2;

/// Callout kind: an HTTP call (`proxy_http_call`); answer it with `bcv_proxy_callout_respond`.
pub const BCV_PROXY_CALLOUT_HTTP: u32 = 0;
/// A gRPC unary call (`proxy_grpc_call`); answer it with `bcv_proxy_callout_respond_grpc`.
pub const BCV_PROXY_CALLOUT_GRPC: u32 = 1;

/// Why a VM failed (`bcv_proxy_vm_failure`): it has not failed.
pub const BCV_PROXY_FAIL_NONE: u32 = 0;
/// The guest trapped (a Rust SDK panic is an `unreachable` trap).
pub const BCV_PROXY_FAIL_TRAP: u32 = 1;
/// A callback ran past its CPU deadline.
pub const BCV_PROXY_FAIL_CPU_DEADLINE: u32 = 2;
/// The guest asked for more memory than the cap allows and then trapped.
pub const BCV_PROXY_FAIL_MEMORY_LIMIT: u32 = 3;
/// A host function other than logging and WASI was called during start or inside the allocator.
pub const BCV_PROXY_FAIL_RESTRICTED_HOSTCALL: u32 = 4;
/// The guest called WASI `proc_exit`.
pub const BCV_PROXY_FAIL_PROC_EXIT: u32 = 5;
/// The guest's allocator returned 0 or a buffer outside its memory.
pub const BCV_PROXY_FAIL_ALLOCATOR: u32 = 6;
/// `on_vm_start` returned false.
pub const BCV_PROXY_FAIL_VM_START_REFUSED: u32 = 7;
/// Another failure of the host while running the guest.
pub const BCV_PROXY_FAIL_INTERNAL: u32 = 8;

/// One header (or name/value pair) as raw bytes. Passed to bcv: borrowed for the call. Returned by bcv
/// (inside a `bcv_proxy_headers_t`): owned by that list, and each of `name` and `value` is followed by a NUL
/// byte not counted in its length, so it can be printed as a C string.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_header_t {
    /// The name (may be NULL when `name_len` is 0).
    pub name: *const u8,
    /// Bytes of `name`.
    pub name_len: usize,
    /// The value (may be NULL when `value_len` is 0).
    pub value: *const u8,
    /// Bytes of `value`.
    pub value_len: usize,
}

/// A list of headers returned by bcv, in order. Free it with `bcv_proxy_headers_free`.
#[repr(C)]
#[derive(Debug)]
pub struct bcv_proxy_headers_t {
    /// The headers (NULL when `count` is 0).
    pub headers: *mut bcv_proxy_header_t,
    /// Number of headers.
    pub count: usize,
}

/// A local response (`proxy_send_local_response`, or the 503 of a fail-closed plugin whose VM failed).
/// Filled by bcv; free it with `bcv_proxy_local_response_free`.
#[repr(C)]
#[derive(Debug)]
pub struct bcv_proxy_local_response_t {
    /// HTTP status code (0 in an empty struct).
    pub status: u32,
    /// True when the reply is a gRPC one; then `grpc_status` is its status.
    pub has_grpc_status: bool,
    /// The gRPC status (when `has_grpc_status`).
    pub grpc_status: i32,
    /// Details text for logs, not sent to the client (NUL-terminated; NULL in an empty struct).
    pub details: *mut c_char,
    /// The response body.
    pub body: bcv_bytes_t,
    /// Extra response headers.
    pub headers: bcv_proxy_headers_t,
}

/// One log record of a plugin. Given to the log callback (borrowed for the call) or returned by
/// `bcv_proxy_vm_take_logs` (owned by the list). Each text is NUL-terminated; its length does not count the
/// NUL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_log_record_t {
    /// `BCV_PROXY_LOG_*`.
    pub level: u32,
    /// The context that logged (0 during VM start).
    pub context_id: u32,
    /// The VM's id.
    pub vm_id: *const c_char,
    /// Bytes of `vm_id`.
    pub vm_id_len: usize,
    /// The plugin's name (empty during VM start, before any plugin exists).
    pub plugin: *const c_char,
    /// Bytes of `plugin`.
    pub plugin_len: usize,
    /// The message (WASI stdout/stderr lines arrive as INFO/ERROR records).
    pub message: *const c_char,
    /// Bytes of `message`.
    pub message_len: usize,
}

/// Log records returned by `bcv_proxy_vm_take_logs`, oldest first. Free with `bcv_proxy_logs_free`.
#[repr(C)]
#[derive(Debug)]
pub struct bcv_proxy_logs_t {
    /// The records (NULL when `count` is 0).
    pub records: *mut bcv_proxy_log_record_t,
    /// Number of records.
    pub count: usize,
}

/// A metric's current state (`bcv_proxy_host_metric`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_proxy_metric_t {
    /// `BCV_PROXY_METRIC_*`.
    pub kind: u32,
    /// Counter or gauge value; for a histogram, the number of recorded values.
    pub value: i64,
    /// Histogram only: the sum of recorded values.
    pub sum: i64,
    /// Histogram only: the smallest recorded value (0 when none).
    pub min: i64,
    /// Histogram only: the largest recorded value (0 when none).
    pub max: i64,
}

/// Figures of a VM (`bcv_proxy_vm_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_proxy_vm_stats_t {
    /// Bytes of linear memory the instance has now.
    pub memory_bytes: u64,
    /// Live contexts, root (one per plugin) and stream.
    pub contexts: u64,
}

/// A callout as the embedder reads it (`bcv_proxy_callout_get`). Owned by the caller: free it with
/// `bcv_proxy_callout_info_free`. Texts are NUL-terminated (cut at a NUL they contain), never NULL once
/// filled.
#[repr(C)]
#[derive(Debug)]
pub struct bcv_proxy_callout_info_t {
    /// `BCV_PROXY_CALLOUT_HTTP` or `BCV_PROXY_CALLOUT_GRPC`.
    pub kind: u32,
    /// The id the plugin got back for the call.
    pub call_id: u32,
    /// How long the plugin waits, in milliseconds; after that it is told the call failed and a late answer
    /// is ignored.
    pub timeout_ms: u64,
    /// The upstream (cluster) name the plugin asked for.
    pub upstream: *mut c_char,
    /// The plugin that made the call.
    pub plugin: *mut c_char,
    /// gRPC: the fully qualified service name ("" for HTTP).
    pub service: *mut c_char,
    /// gRPC: the method name ("" for HTTP).
    pub method: *mut c_char,
    /// HTTP: the request headers with the `:method`, `:path` and `:authority` pseudo-headers; gRPC: the
    /// initial metadata.
    pub headers: bcv_proxy_headers_t,
    /// HTTP: the request body; gRPC: the serialized request message.
    pub body: bcv_bytes_t,
    /// HTTP: the request trailers (empty for gRPC).
    pub trailers: bcv_proxy_headers_t,
}

/// Where a property or foreign-function callback puts its answer. Opaque; valid only during the callback.
/// Fill it with `bcv_proxy_reply_set` (and, for a failing foreign function, `bcv_proxy_reply_set_error`).
#[derive(Default)]
pub struct bcv_proxy_reply_t {
    data: Option<Vec<u8>>,
    error: Option<String>,
}

/// Limits and engine settings of a host. Initialise it with `bcv_proxy_host_config_init`. The string is
/// borrowed for the `bcv_proxy_host_new` call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_host_config_t {
    /// Most linear memory one VM may have, in bytes (at least 64 KiB). Default 64 MiB.
    pub memory_limit: u64,
    /// Most CPU time one callback may take, in milliseconds; a callback running longer fails its VM.
    /// Default 1000.
    pub callback_deadline_ms: u64,
    /// How often the CPU deadline is checked, in milliseconds (not 0). Default 2.
    pub epoch_tick_ms: u64,
    /// Use the pooling instance allocator: instantiation reuses pre-mapped slots, which reserves much virtual
    /// memory up front (`max_instances` slots of `memory_limit` plus guard regions). Turn it off under
    /// memory checkers and where address space is limited. Default true.
    pub pooling: bool,
    /// Slots of the pool: most VMs (and plugin canaries) alive at once. Default 128.
    pub max_instances: u32,
    /// A directory for precompiled modules, or NULL (default) to compile at every load.
    pub module_cache_dir: *const c_char,
    /// Most pairs in a header map a plugin hands the host. Default 1024.
    pub max_map_pairs: usize,
    /// Most bytes of a serialized header map a plugin hands the host. Default 1 MiB.
    pub max_map_bytes: usize,
    /// Most bytes one WASI `random_get` may ask for. Default 64 KiB.
    pub max_random_bytes: usize,
    /// Most items waiting in one shared queue. Default 10000.
    pub max_queue_items: usize,
    /// Most guest stack, in bytes. Default 512 KiB.
    pub max_wasm_stack: usize,
}

/// Receives a callout a plugin made. `callout` is a new handle: when the callback returns `BCV_OK` it is the
/// embedder's, to answer later from any thread (`bcv_proxy_callout_respond`, `_respond_grpc`, `_fail`) and
/// to release (releasing it unanswered fails the call). Any other return refuses the call and bcv releases
/// the handle: `BCV_E_NOT_FOUND` means an unknown upstream (the plugin sees BAD_ARGUMENT for HTTP,
/// PARSE_FAILURE for gRPC), anything else INTERNAL_FAILURE. Runs on the thread running the plugin; it may
/// call the `bcv_proxy_callout_*` functions and `bcv_release` on the callout (answering at once is fine),
/// but nothing of the same VM (`BCV_E_WOULD_DEADLOCK`).
pub type bcv_proxy_callout_fn_t =
    Option<unsafe extern "C" fn(user_data: *mut c_void, callout: bcv_handle_t) -> bcv_status_t>;

/// Answers a property the VM's own tables do not have (`proxy_get_property`). `plugin` is the asking
/// plugin's name and `context_id` its context; `path` holds `path_len` bytes: the segments separated by NUL
/// bytes, as the ABI gives them (`"request\0path"`); all borrowed for the call. Return `BCV_OK` after
/// `bcv_proxy_reply_set` (without it the value is empty), anything else for "no such property". Runs on
/// the thread running the plugin; it may call only the `bcv_proxy_reply_*` functions.
pub type bcv_proxy_property_fn_t = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        plugin: *const c_char,
        context_id: u32,
        path: *const u8,
        path_len: usize,
        reply: *mut bcv_proxy_reply_t,
    ) -> bcv_status_t,
>;

/// A foreign function a plugin calls by name (`proxy_call_foreign_function`). `name` and the `args_len`
/// bytes at `args` are borrowed for the call. Return `BCV_OK` with the result set by `bcv_proxy_reply_set`
/// (none: empty), `BCV_E_NOT_FOUND` when it does not know the arguments (the plugin sees NOT_FOUND), or
/// another status for a failure (INTERNAL_FAILURE; the VM logs the message of
/// `bcv_proxy_reply_set_error`). Runs on the thread running the plugin; it may call only the
/// `bcv_proxy_reply_*` functions.
pub type bcv_proxy_foreign_fn_t = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        name: *const c_char,
        args: *const u8,
        args_len: usize,
        reply: *mut bcv_proxy_reply_t,
    ) -> bcv_status_t,
>;

/// Receives every log record as it is written (`record` is borrowed for the call). The VM also keeps the
/// most recent 4096 for `bcv_proxy_vm_take_logs`. Runs on the thread running the plugin; it may not call
/// into bcv.
pub type bcv_proxy_log_fn_t =
    Option<unsafe extern "C" fn(user_data: *mut c_void, record: *const bcv_proxy_log_record_t)>;

/// A foreign function registered under a name (borrowed for the `bcv_proxy_vm_start` call; copied).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_foreign_function_t {
    /// The name plugins call it by, NUL-terminated.
    pub name: *const c_char,
    /// The function.
    pub function: bcv_proxy_foreign_fn_t,
}

/// How to start a VM. Initialise it with `bcv_proxy_vm_config_init`. Strings and arrays are borrowed for
/// the `bcv_proxy_vm_start` call (copied). Every callback is optional: without `http_call` / `grpc_call`
/// the plugin's callouts are refused, without `property` unknown properties are not found, and logs are
/// kept for `bcv_proxy_vm_take_logs` either way.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_vm_config_t {
    /// The VM id, NUL-terminated (NULL: ""): VMs with the same id share shared data and queues.
    pub vm_id: *const c_char,
    /// The VM configuration, readable in `on_vm_start` (NULL when `configuration_len` is 0).
    pub configuration: *const u8,
    /// Bytes of `configuration`.
    pub configuration_len: usize,
    /// Environment variables the guest sees through WASI (UTF-8 name/value pairs; the process's own
    /// environment never leaks). NULL when `environment_count` is 0.
    pub environment: *const bcv_proxy_header_t,
    /// Number of entries at `environment`.
    pub environment_count: usize,
    /// HTTP callouts.
    pub http_call: bcv_proxy_callout_fn_t,
    /// gRPC unary callouts.
    pub grpc_call: bcv_proxy_callout_fn_t,
    /// Property lookups.
    pub property: bcv_proxy_property_fn_t,
    /// Foreign functions (NULL when `foreign_function_count` is 0); a later name replaces an earlier one.
    pub foreign_functions: *const bcv_proxy_foreign_function_t,
    /// Number of entries at `foreign_functions`.
    pub foreign_function_count: usize,
    /// The log sink.
    pub log: bcv_proxy_log_fn_t,
    /// Passed to every callback.
    pub user_data: *mut c_void,
    /// Frees `user_data` (may be NULL). `bcv_proxy_vm_start` runs it exactly once: when the VM is gone (every
    /// handle of it, its plugins and contexts released or closed and its last callback returned), or
    /// before the call returns when it fails. Any thread; it may not call into bcv.
    pub user_data_free: bcv_user_data_free_t,
    /// Re-create the VM after a failure at most this many times within `restart_window_ms` (0, the
    /// default: a failed VM stays failed). A restart happens on the VM's next use once
    /// `restart_backoff_ms` passed since the failure: a fresh instance, `on_vm_start`, every open plugin
    /// configured again; contexts open at the failure stay failed. `bcv_proxy_vm_restarts` counts them.
    pub restart_max: u32,
    /// The sliding window of `restart_max`, in milliseconds.
    pub restart_window_ms: u64,
    /// The least time between a failure and the restart after it, in milliseconds.
    pub restart_backoff_ms: u64,
}

/// How to configure a plugin. Initialise it with `bcv_proxy_plugin_config_init`. Strings and arrays are
/// borrowed for the `bcv_proxy_vm_add_plugin` call (copied).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct bcv_proxy_plugin_config_t {
    /// The plugin's name (logs, metrics, property `plugin_name`), NUL-terminated (NULL: "").
    pub name: *const c_char,
    /// The root id (property `plugin_root_id`), NUL-terminated (NULL: ""); SDKs use it to pick a root
    /// context implementation.
    pub root_id: *const c_char,
    /// The plugin configuration, readable in `on_configure` (NULL when `configuration_len` is 0).
    pub configuration: *const u8,
    /// Bytes of `configuration`.
    pub configuration_len: usize,
    /// When the VM fails: true lets traffic through unfiltered, false (the default) answers HTTP with a local
    /// 503 and closes TCP connections.
    pub fail_open: bool,
    /// Properties the plugin can read: name = dotted path (UTF-8, `"a.b"`), value = bytes. Looked up before
    /// the VM's property callback. NULL when `property_count` is 0.
    pub properties: *const bcv_proxy_header_t,
    /// Number of entries at `properties`.
    pub property_count: usize,
}

// ---------------------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------------------

/// `len` bytes at `data`, borrowed for the call (NULL is fine when `len` is 0).
fn bytes_in<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a [u8], bcv_status_t> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(fail_with(BCV_E_INVALID, &format!("{what} is NULL")));
    }
    // SAFETY: the caller provides `len` readable bytes valid for the call (documented).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// UTF-8 text of `len` bytes at `data`.
fn text_in<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a str, bcv_status_t> {
    std::str::from_utf8(bytes_in(data, len, what)?)
        .map_err(|_| fail_with(BCV_E_INVALID, &format!("{what} is not UTF-8")))
}

/// A NUL-terminated string, or `""` for NULL.
fn opt_c_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, bcv_status_t> {
    if s.is_null() { Ok("") } else { c_str(s, what) }
}

/// The `count` pairs at `pairs` (borrowed for the call).
fn pairs_in<'a>(
    pairs: *const bcv_proxy_header_t,
    count: usize,
    what: &str,
) -> Result<&'a [bcv_proxy_header_t], bcv_status_t> {
    if count == 0 {
        return Ok(&[]);
    }
    if pairs.is_null() {
        return Err(fail_with(BCV_E_INVALID, &format!("{what} is NULL but its count is not 0")));
    }
    // SAFETY: the caller provides `count` entries valid for the call (documented).
    Ok(unsafe { std::slice::from_raw_parts(pairs, count) })
}

fn headers_in(headers: *const bcv_proxy_header_t, count: usize) -> Result<HeaderMap, bcv_status_t> {
    let mut map = HeaderMap::new();
    for h in pairs_in(headers, count, "headers")? {
        map.add(bytes_in(h.name, h.name_len, "header name")?, bytes_in(h.value, h.value_len, "header value")?);
    }
    Ok(map)
}

/// A copy of `bytes` followed by a NUL byte; freed by [`free_text`] with the same length.
fn alloc_text(bytes: &[u8]) -> *mut u8 {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}

/// Frees a text made by [`alloc_text`] from `len` bytes.
///
/// # Safety
/// `ptr` is NULL or came from `alloc_text` with `len` bytes, and is freed once.
unsafe fn free_text(ptr: *const u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: the allocation was a boxed slice of len + 1 bytes (the function's contract).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.cast_mut(), len + 1)) });
    }
}

/// An owned C string of `text`, cut at a NUL it contains; freed with `CString::from_raw`.
fn owned_c_string(text: &str) -> *mut c_char {
    CString::new(text.split('\0').next().unwrap_or("")).unwrap_or_default().into_raw()
}

/// Frees a string made by [`owned_c_string`] (NULL is fine).
///
/// # Safety
/// `ptr` is NULL or came from `owned_c_string`, and is freed once.
unsafe fn free_c_string(ptr: *mut c_char) {
    if !ptr.is_null() {
        // SAFETY: made by CString::into_raw (the function's contract).
        drop(unsafe { CString::from_raw(ptr) });
    }
}

fn empty_headers() -> bcv_proxy_headers_t {
    bcv_proxy_headers_t { headers: std::ptr::null_mut(), count: 0 }
}

fn headers_out(map: &HeaderMap) -> bcv_proxy_headers_t {
    if map.is_empty() {
        return empty_headers();
    }
    let items: Box<[bcv_proxy_header_t]> = map
        .pairs()
        .iter()
        .map(|(name, value)| bcv_proxy_header_t {
            name: alloc_text(name),
            name_len: name.len(),
            value: alloc_text(value),
            value_len: value.len(),
        })
        .collect();
    let count = items.len();
    bcv_proxy_headers_t { headers: Box::into_raw(items).cast(), count }
}

/// Frees the contents of a header list and zeroes it.
///
/// # Safety
/// `h` was filled by bcv (or is zeroed) and its contents are freed once.
unsafe fn free_headers(h: &mut bcv_proxy_headers_t) {
    if !h.headers.is_null() && h.count > 0 {
        // SAFETY: a boxed slice of `count` entries made by `headers_out`, each text by `alloc_text`.
        let items = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(h.headers, h.count)) };
        for item in items.iter() {
            // SAFETY: as above.
            unsafe {
                free_text(item.name, item.name_len);
                free_text(item.value, item.value_len);
            }
        }
    }
    *h = empty_headers();
}

fn empty_local_response() -> bcv_proxy_local_response_t {
    bcv_proxy_local_response_t {
        status: 0,
        has_grpc_status: false,
        grpc_status: 0,
        details: std::ptr::null_mut(),
        body: bcv_bytes_t::from_vec(Vec::new()),
        headers: empty_headers(),
    }
}

fn local_response_out(r: &LocalResponse) -> bcv_proxy_local_response_t {
    bcv_proxy_local_response_t {
        status: r.status,
        has_grpc_status: r.grpc_status.is_some(),
        grpc_status: r.grpc_status.unwrap_or(0),
        details: owned_c_string(&r.details),
        body: bcv_bytes_t::from_vec(r.body.clone()),
        headers: headers_out(&r.headers),
    }
}

fn action_code(action: &FilterAction) -> u32 {
    match action {
        FilterAction::Continue => BCV_PROXY_CONTINUE,
        FilterAction::Pause => BCV_PROXY_PAUSE,
        FilterAction::LocalResponse(_) => BCV_PROXY_LOCAL_RESPONSE,
        FilterAction::Close => BCV_PROXY_CLOSE,
    }
}

fn stream_of(stream: u32) -> Result<StreamType, bcv_status_t> {
    match stream {
        BCV_PROXY_STREAM_REQUEST => Ok(StreamType::HttpRequest),
        BCV_PROXY_STREAM_RESPONSE => Ok(StreamType::HttpResponse),
        BCV_PROXY_STREAM_DOWNSTREAM => Ok(StreamType::Downstream),
        BCV_PROXY_STREAM_UPSTREAM => Ok(StreamType::Upstream),
        _ => Err(fail_with(BCV_E_INVALID, &format!("unknown stream {stream}"))),
    }
}

fn peer_of(peer: u32) -> Result<PeerType, bcv_status_t> {
    match peer {
        BCV_PROXY_PEER_UNKNOWN => Ok(PeerType::Unknown),
        BCV_PROXY_PEER_LOCAL => Ok(PeerType::Local),
        BCV_PROXY_PEER_REMOTE => Ok(PeerType::Remote),
        _ => Err(fail_with(BCV_E_INVALID, &format!("unknown peer type {peer}"))),
    }
}

fn level_code(level: LogLevel) -> u32 {
    match level {
        LogLevel::Trace => BCV_PROXY_LOG_TRACE,
        LogLevel::Debug => BCV_PROXY_LOG_DEBUG,
        LogLevel::Info => BCV_PROXY_LOG_INFO,
        LogLevel::Warn => BCV_PROXY_LOG_WARN,
        LogLevel::Error => BCV_PROXY_LOG_ERROR,
        LogLevel::Critical => BCV_PROXY_LOG_CRITICAL,
    }
}

fn metric_kind(kind: MetricType) -> u32 {
    match kind {
        MetricType::Counter => BCV_PROXY_METRIC_COUNTER,
        MetricType::Gauge => BCV_PROXY_METRIC_GAUGE,
        MetricType::Histogram => BCV_PROXY_METRIC_HISTOGRAM,
    }
}

fn fail_code(reason: &FailReason) -> u32 {
    match reason {
        FailReason::Trap(_) => BCV_PROXY_FAIL_TRAP,
        FailReason::CpuDeadline => BCV_PROXY_FAIL_CPU_DEADLINE,
        FailReason::MemoryLimit { .. } => BCV_PROXY_FAIL_MEMORY_LIMIT,
        FailReason::RestrictedHostcall { .. } => BCV_PROXY_FAIL_RESTRICTED_HOSTCALL,
        FailReason::ProcExit(_) => BCV_PROXY_FAIL_PROC_EXIT,
        FailReason::AllocatorFailed(_) => BCV_PROXY_FAIL_ALLOCATOR,
        FailReason::VmStartRefused => BCV_PROXY_FAIL_VM_START_REFUSED,
        FailReason::Internal(_) => BCV_PROXY_FAIL_INTERNAL,
    }
}

/// A "no time limit" long enough never to end, short enough that `Instant + it` cannot overflow.
fn wait_timeout(timeout_ms: i64) -> Duration {
    timeout_of(timeout_ms).unwrap_or(Duration::from_secs(u32::MAX.into()))
}

// ---------------------------------------------------------------------------------------------------------
// Handle lookups
// ---------------------------------------------------------------------------------------------------------

macro_rules! with_object {
    ($name:ident, $variant:ident, $ty:ty, $kind:literal) => {
        fn $name(handle: bcv_handle_t, f: impl FnOnce(&$ty) -> bcv_status_t) -> bcv_status_t {
            let o = try_status!(table::get(handle));
            let Object::$variant(x) = &*o else { return table::wrong_type(handle, &o, $kind) };
            f(x)
        }
    };
}

with_object!(with_host, ProxyHost, ProxyHost, "proxy host");
with_object!(with_module, ProxyModule, bcv_core::proxy::PluginModule, "proxy module");
with_object!(with_vm, ProxyVm, Vm, "proxy vm");
with_object!(with_plugin, ProxyPlugin, Plugin, "proxy plugin");
with_object!(with_http, ProxyHttp, HttpContext, "proxy http context");
with_object!(with_tcp, ProxyTcp, TcpContext, "proxy tcp context");
with_object!(with_callout, ProxyCallout, Callout, "proxy callout");

/// Writes an owned value to `*out`, made only when `out` is not NULL: a value holding allocations is never
/// made just to be dropped without its free function.
fn put_owned<T>(out: *mut T, make: impl FnOnce() -> T) {
    if !out.is_null() {
        put_opt(out, make());
    }
}

/// Writes a result's action to `*action` and, for a local response, the response to `*response` (may be
/// NULL).
fn put_action(
    handle: bcv_handle_t,
    result: ProxyResult<FilterAction>,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    match result {
        Ok(a) => {
            put_opt(action, action_code(&a));
            if let FilterAction::LocalResponse(r) = &a {
                put_owned(response, || local_response_out(r));
            }
            BCV_OK
        }
        Err(e) => fail_proxy(handle, &e),
    }
}

/// Runs a call on an HTTP context that yields an action.
fn http_action(
    ctx: bcv_handle_t,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
    call: impl FnOnce(&HttpContext) -> ProxyResult<FilterAction>,
) -> bcv_status_t {
    if action.is_null() {
        return fail_with(BCV_E_INVALID, "action is NULL");
    }
    put_opt(response, empty_local_response());
    with_http(ctx, |h| put_action(ctx, call(h), action, response))
}

/// Runs a call on a TCP context that yields an action.
fn tcp_action(
    ctx: bcv_handle_t,
    action: *mut u32,
    call: impl FnOnce(&TcpContext) -> ProxyResult<FilterAction>,
) -> bcv_status_t {
    if action.is_null() {
        return fail_with(BCV_E_INVALID, "action is NULL");
    }
    with_tcp(ctx, |t| put_action(ctx, call(t), action, std::ptr::null_mut()))
}

/// Writes a body to `*out`.
fn put_bytes(handle: bcv_handle_t, out: *mut bcv_bytes_t, result: ProxyResult<Vec<u8>>) -> bcv_status_t {
    match result {
        Ok(data) => {
            put_owned(out, || bcv_bytes_t::from_vec(data));
            BCV_OK
        }
        Err(e) => fail_proxy(handle, &e),
    }
}

/// Writes a header map to `*out`.
fn put_headers(ctx: bcv_handle_t, out: *mut bcv_proxy_headers_t, http: &HttpContext, map: MapType) -> bcv_status_t {
    // Converted in place, without an intermediate copy of the map.
    match http.read_headers(map, headers_out) {
        Ok(headers) => {
            put_opt(out, headers);
            BCV_OK
        }
        Err(e) => fail_proxy(ctx, &e),
    }
}

/// Writes a property to `*value` (may be NULL), or returns `BCV_EOF` when there is none.
fn put_property(handle: bcv_handle_t, value: *mut bcv_bytes_t, result: ProxyResult<Option<Vec<u8>>>) -> bcv_status_t {
    match result {
        Ok(Some(v)) => {
            put_owned(value, || bcv_bytes_t::from_vec(v));
            BCV_OK
        }
        Ok(None) => BCV_EOF,
        Err(e) => fail_proxy(handle, &e),
    }
}

fn put_finished(handle: bcv_handle_t, done: *mut bool, result: ProxyResult<bool>) -> bcv_status_t {
    match result {
        Ok(d) => {
            put_opt(done, d);
            BCV_OK
        }
        Err(e) => fail_proxy(handle, &e),
    }
}

fn unit(handle: bcv_handle_t, result: ProxyResult<()>) -> bcv_status_t {
    match result {
        Ok(()) => BCV_OK,
        Err(e) => fail_proxy(handle, &e),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Free functions of returned data
// ---------------------------------------------------------------------------------------------------------

/// Frees a header list returned by bcv and zeroes it. NULL and empty lists are fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_headers_free(headers: *mut bcv_proxy_headers_t) {
    let _ = guard(|| {
        if !headers.is_null() {
            // SAFETY: non-NULL, filled by bcv or zeroed (documented).
            unsafe { free_headers(&mut *headers) };
        }
        BCV_OK
    });
}

/// Frees a local response filled by bcv and zeroes it. NULL and empty (zeroed) structs are fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_local_response_free(response: *mut bcv_proxy_local_response_t) {
    let _ = guard(|| {
        if response.is_null() {
            return BCV_OK;
        }
        // SAFETY: non-NULL, filled by bcv or zeroed (documented); each part is freed once, then zeroed.
        unsafe {
            let r = &mut *response;
            free_c_string(r.details);
            crate::stream::bcv_bytes_free(&mut r.body);
            free_headers(&mut r.headers);
            *r = empty_local_response();
        }
        BCV_OK
    });
}

/// Frees log records returned by `bcv_proxy_vm_take_logs` and zeroes the list. NULL and empty lists are
/// fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_logs_free(logs: *mut bcv_proxy_logs_t) {
    let _ = guard(|| {
        if logs.is_null() {
            return BCV_OK;
        }
        // SAFETY: non-NULL, filled by bcv or zeroed (documented): a boxed slice of records whose texts were
        // made by alloc_text; freed once, then zeroed.
        unsafe {
            let l = &mut *logs;
            if !l.records.is_null() && l.count > 0 {
                let records = Box::from_raw(std::ptr::slice_from_raw_parts_mut(l.records, l.count));
                for r in records.iter() {
                    free_text(r.vm_id.cast(), r.vm_id_len);
                    free_text(r.plugin.cast(), r.plugin_len);
                    free_text(r.message.cast(), r.message_len);
                }
            }
            *l = bcv_proxy_logs_t { records: std::ptr::null_mut(), count: 0 };
        }
        BCV_OK
    });
}

// ---------------------------------------------------------------------------------------------------------
// Host and modules
// ---------------------------------------------------------------------------------------------------------

fn default_host_config() -> bcv_proxy_host_config_t {
    let d = HostConfig::default();
    bcv_proxy_host_config_t {
        memory_limit: d.memory_limit,
        callback_deadline_ms: d.callback_deadline.as_millis() as u64,
        epoch_tick_ms: d.epoch_tick.as_millis() as u64,
        pooling: d.pooling,
        max_instances: d.max_instances,
        module_cache_dir: std::ptr::null(),
        max_map_pairs: d.map_limits.max_pairs,
        max_map_bytes: d.map_limits.max_bytes,
        max_random_bytes: d.max_random_bytes,
        max_queue_items: d.max_queue_items,
        max_wasm_stack: d.max_wasm_stack,
    }
}

/// Fills `*config` with the defaults (64 MiB per VM, 1 s per callback checked every 2 ms, the pooling
/// allocator with 128 slots, no module cache, the map, random and queue bounds of the core). Errors:
/// `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_config_init(config: *mut bcv_proxy_host_config_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        put_opt(config, default_host_config());
        BCV_OK
    })
}

fn host_config(c: &bcv_proxy_host_config_t) -> Result<HostConfig, bcv_status_t> {
    let cache = if c.module_cache_dir.is_null() {
        None
    } else {
        Some(std::path::PathBuf::from(c_str(c.module_cache_dir, "module_cache_dir")?))
    };
    Ok(HostConfig {
        memory_limit: c.memory_limit,
        callback_deadline: Duration::from_millis(c.callback_deadline_ms),
        epoch_tick: Duration::from_millis(c.epoch_tick_ms),
        pooling: c.pooling,
        max_instances: c.max_instances,
        module_cache_dir: cache,
        map_limits: MapLimits { max_pairs: c.max_map_pairs, max_bytes: c.max_map_bytes },
        max_random_bytes: c.max_random_bytes,
        max_queue_items: c.max_queue_items,
        max_wasm_stack: c.max_wasm_stack,
    })
}

/// Creates a Proxy-Wasm host (one wasm engine and the shared data, queues and metrics its VMs share) as a
/// node of `runtime`, and writes its handle to `*out`. `config` may be NULL (the defaults of
/// `bcv_proxy_host_config_init`). Release it with `bcv_release`; closing it (`bcv_close`) closes every VM,
/// plugin and context under it. Errors: `BCV_E_INVALID` (NULL `out`, a memory limit under 64 KiB, a zero
/// epoch tick, a pool wasmtime cannot reserve), `BCV_E_BAD_HANDLE`, `BCV_E_CLOSED` (runtime shut down).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_new(
    runtime: bcv_handle_t,
    config: *const bcv_proxy_host_config_t,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let config = if config.is_null() {
            HostConfig::default()
        } else {
            // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
            try_status!(host_config(unsafe { &*config }))
        };
        let rt = try_status!(runtime_of(runtime));
        match ProxyHost::with_runtime(&rt, config) {
            Ok(host) => put(out, table::insert(Object::ProxyHost(host))),
            Err(e) => fail_proxy(runtime, &e),
        }
    })
}

/// Compiles (or loads from the module cache) the `len` bytes of WebAssembly at `wasm` under `name`, checks
/// that it is a Proxy-Wasm module this host can run, and writes the module's handle to `*out` (release it
/// with `bcv_release`; VMs started from it keep it alive). Errors: `BCV_E_PROXY_INVALID_MODULE` (not
/// WebAssembly, no ABI version marker, no allocator, no memory, imports the host lacks: the message says
/// which), `BCV_E_IO` (the module cache directory cannot be written), `BCV_E_INVALID`,
/// `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_module_load(
    host: bcv_handle_t,
    name: *const c_char,
    wasm: *const u8,
    len: usize,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let name = try_status!(c_str(name, "name"));
        let wasm = try_status!(bytes_in(wasm, len, "wasm"));
        with_host(host, |h| match h.load_module(name, wasm) {
            Ok(m) => put(out, table::insert(Object::ProxyModule(m))),
            Err(e) => fail_proxy(host, &e),
        })
    })
}

/// Writes the module's ABI version (`BCV_PROXY_ABI_*`) to `*abi` and whether its compiled code came from the
/// module cache to `*from_cache` (either may be NULL). Errors: `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_module_info(
    module: bcv_handle_t,
    abi: *mut u32,
    from_cache: *mut bool,
) -> bcv_status_t {
    guard(|| {
        with_module(module, |m| {
            let version = match m.abi() {
                AbiVersion::V0_1_0 => BCV_PROXY_ABI_0_1_0,
                AbiVersion::V0_2_0 => BCV_PROXY_ABI_0_2_0,
                AbiVersion::V0_2_1 => BCV_PROXY_ABI_0_2_1,
            };
            put_opt(abi, version);
            put_opt(from_cache, m.from_cache());
            BCV_OK
        })
    })
}

/// Writes metric `name` (defined by a plugin of any VM of this host) to `*out` (may be NULL). Returns
/// `BCV_EOF` when no plugin defined it. Errors: `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_metric(
    host: bcv_handle_t,
    name: *const c_char,
    out: *mut bcv_proxy_metric_t,
) -> bcv_status_t {
    guard(|| {
        let name = try_status!(c_str(name, "name"));
        with_host(host, |h| match h.metric(name) {
            Some(m) => {
                put_opt(
                    out,
                    bcv_proxy_metric_t {
                        kind: metric_kind(m.kind),
                        value: m.value,
                        sum: m.sum,
                        min: m.min,
                        max: m.max,
                    },
                );
                BCV_OK
            }
            None => BCV_EOF,
        })
    })
}

/// Every metric plugins defined, in definition order, as JSON in `*json` (free with `bcv_bytes_free`):
/// `[{"name", "kind": "counter"|"gauge"|"histogram", "value", "sum", "min", "max"}, …]`.
/// Errors: `BCV_E_INVALID` (NULL), `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_metrics_json(host: bcv_handle_t, json: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        with_host(host, |h| {
            let list: Vec<serde_json::Value> = h
                .metrics()
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "name": m.name, "kind": m.kind.name(),
                        "value": m.value, "sum": m.sum, "min": m.min, "max": m.max,
                    })
                })
                .collect();
            put_json(json, &list)
        })
    })
}

/// Reads shared data `key` (`key_len` bytes) of VM id `vm_id` (NULL: ""), as a plugin would: writes a copy
/// of the value to `*value` (may be NULL; free with `bcv_bytes_free`) and its CAS token to `*cas` (may be
/// NULL). Returns `BCV_EOF` when the key does not exist. Errors: `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_shared_data_get(
    host: bcv_handle_t,
    vm_id: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *mut bcv_bytes_t,
    cas: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let vm_id = try_status!(opt_c_str(vm_id, "vm_id"));
        let key = try_status!(bytes_in(key, key_len, "key"));
        with_host(host, |h| match h.shared_data(vm_id, key) {
            Some(v) => {
                put_opt(cas, v.cas);
                put_owned(value, || bcv_bytes_t::from_vec(v.value));
                BCV_OK
            }
            None => BCV_EOF,
        })
    })
}

/// Sets shared data `key` of VM id `vm_id` (NULL: "") to a copy of `value_len` bytes at `value`, as a plugin
/// would: `cas` 0 writes unconditionally, otherwise it must be the key's current token. Writes the new token
/// to `*new_cas` (may be NULL). Errors: `BCV_E_CONFLICT` (a stale `cas`: nothing was written),
/// `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bcv_proxy_host_shared_data_set(
    host: bcv_handle_t,
    vm_id: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    cas: u32,
    new_cas: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let vm_id = try_status!(opt_c_str(vm_id, "vm_id"));
        let key = try_status!(bytes_in(key, key_len, "key"));
        let value = try_status!(bytes_in(value, value_len, "value"));
        with_host(host, |h| match h.set_shared_data(vm_id, key, value, cas) {
            Ok(token) => {
                put_opt(new_cas, token);
                BCV_OK
            }
            Err(status) => fail_with(
                BCV_E_CONFLICT,
                &format!("shared data of vm {vm_id:?}: the CAS token {cas} is stale ({status:?})"),
            ),
        })
    })
}

/// Removes shared data `key` of VM id `vm_id` (NULL: ""); writes whether it existed to `*existed` (may be
/// NULL). Errors: `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_shared_data_remove(
    host: bcv_handle_t,
    vm_id: *const c_char,
    key: *const u8,
    key_len: usize,
    existed: *mut bool,
) -> bcv_status_t {
    guard(|| {
        let vm_id = try_status!(opt_c_str(vm_id, "vm_id"));
        let key = try_status!(bytes_in(key, key_len, "key"));
        with_host(host, |h| {
            put_opt(existed, h.remove_shared_data(vm_id, key));
            BCV_OK
        })
    })
}

/// Enqueues a copy of `len` bytes at `item` on shared queue `queue` of VM id `vm_id` (NULL: ""); the plugin
/// that registered the queue gets `on_queue_ready`. Errors: `BCV_E_NOT_FOUND` (no plugin registered it),
/// `BCV_E_BUSY` (the queue is full), `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_host_enqueue(
    host: bcv_handle_t,
    vm_id: *const c_char,
    queue: *const c_char,
    item: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let vm_id = try_status!(opt_c_str(vm_id, "vm_id"));
        let queue = try_status!(c_str(queue, "queue"));
        let item = try_status!(bytes_in(item, len, "item"));
        with_host(host, |h| match h.enqueue(vm_id, queue, item) {
            Ok(()) => BCV_OK,
            Err(bcv_core::proxy::Status::NotFound) => {
                fail_with(BCV_E_NOT_FOUND, &format!("no shared queue {queue:?} in vm {vm_id:?}"))
            }
            Err(status) => fail_with(BCV_E_BUSY, &format!("shared queue {queue:?} of vm {vm_id:?}: {status:?}")),
        })
    })
}

// ---------------------------------------------------------------------------------------------------------
// VMs and the embedder's services
// ---------------------------------------------------------------------------------------------------------

/// Fills `*config` with the defaults: VM id "", no configuration, no environment, no callbacks, no user
/// data, no restarts (window 60 s, backoff 1 s once `restart_max` is set). Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_config_init(config: *mut bcv_proxy_vm_config_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        put_opt(
            config,
            bcv_proxy_vm_config_t {
                vm_id: std::ptr::null(),
                configuration: std::ptr::null(),
                configuration_len: 0,
                environment: std::ptr::null(),
                environment_count: 0,
                http_call: None,
                grpc_call: None,
                property: None,
                foreign_functions: std::ptr::null(),
                foreign_function_count: 0,
                log: None,
                user_data: std::ptr::null_mut(),
                user_data_free: None,
                restart_max: 0,
                restart_window_ms: 60_000,
                restart_backoff_ms: 1_000,
            },
        );
        BCV_OK
    })
}

/// A callout waiting for the embedder: what the plugin asked, and the one-shot reply (None once answered).
pub(crate) struct Callout {
    kind: u32,
    call_id: u32,
    upstream: String,
    plugin: String,
    service: String,
    method: String,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: HeaderMap,
    timeout: Duration,
    reply: Mutex<Option<CalloutReply>>,
}

impl Callout {
    fn http(call: HttpCallout) -> Callout {
        let HttpCallout { call_id, upstream, headers, body, trailers, timeout, plugin, reply } = call;
        Callout {
            kind: BCV_PROXY_CALLOUT_HTTP,
            call_id,
            upstream,
            plugin,
            service: String::new(),
            method: String::new(),
            headers,
            body,
            trailers,
            timeout,
            reply: Mutex::new(Some(reply)),
        }
    }

    fn grpc(call: GrpcCallout) -> Callout {
        let GrpcCallout { call_id, upstream, service, method, initial_metadata, message, timeout, plugin, reply } =
            call;
        Callout {
            kind: BCV_PROXY_CALLOUT_GRPC,
            call_id,
            upstream,
            plugin,
            service,
            method,
            headers: initial_metadata,
            body: message,
            trailers: HeaderMap::new(),
            timeout,
            reply: Mutex::new(Some(reply)),
        }
    }

    /// Takes the reply for an answer; `BCV_E_ALREADY_TAKEN` when the callout was answered already.
    fn take_reply(&self) -> Result<CalloutReply, bcv_status_t> {
        self.reply
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| fail_with(BCV_E_ALREADY_TAKEN, &format!("callout {} was already answered", self.call_id)))
    }
}

/// Hands a callout to the embedder's callback as a new handle; a refusal takes the handle back.
fn offer(
    callback: unsafe extern "C" fn(*mut c_void, bcv_handle_t) -> bcv_status_t,
    user_data: &UserData,
    callout: Callout,
) -> Result<(), CalloutRejected> {
    let handle = table::insert(Object::ProxyCallout(callout));
    // SAFETY: the callback contract of `bcv_proxy_callout_fn_t`.
    let status = unsafe { callback(user_data.data, handle) };
    if status == BCV_OK {
        return Ok(());
    }
    // Refused: the handle is bcv's again (already released by the callback is fine too).
    let _ = table::remove(handle);
    Err(if status == BCV_E_NOT_FOUND { CalloutRejected::UnknownUpstream } else { CalloutRejected::Failed })
}

/// Calls a property or foreign-function callback with a fresh reply; returns its status and reply.
fn with_reply(call: impl FnOnce(*mut bcv_proxy_reply_t) -> bcv_status_t) -> (bcv_status_t, bcv_proxy_reply_t) {
    let mut reply = bcv_proxy_reply_t::default();
    let status = call(&mut reply);
    (status, reply)
}

/// Converts the caller's VM configuration, taking ownership of its user data first so that its free
/// function runs exactly once whatever happens next. NULL gives the defaults.
fn vm_config(config: *const bcv_proxy_vm_config_t) -> Result<VmConfig, bcv_status_t> {
    if config.is_null() {
        return Ok(VmConfig::default());
    }
    // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
    let c = unsafe { *config };
    let user_data = Arc::new(UserData { data: c.user_data, free: c.user_data_free });
    let vm_id = opt_c_str(c.vm_id, "vm_id")?.to_owned();
    let configuration = bytes_in(c.configuration, c.configuration_len, "configuration")?.to_vec();
    let mut environment = Vec::new();
    for e in pairs_in(c.environment, c.environment_count, "environment")? {
        let name = text_in(e.name, e.name_len, "environment name")?;
        let value = text_in(e.value, e.value_len, "environment value")?;
        environment.push((name.to_owned(), value.to_owned()));
    }
    let mut services = Services::new();
    if let Some(callback) = c.http_call {
        let ud = Arc::clone(&user_data);
        services = services.on_http_call(move |call| offer(callback, &ud, Callout::http(call)));
    }
    if let Some(callback) = c.grpc_call {
        let ud = Arc::clone(&user_data);
        services = services.on_grpc_call(move |call| offer(callback, &ud, Callout::grpc(call)));
    }
    if let Some(callback) = c.property {
        let ud = Arc::clone(&user_data);
        services = services.on_property(move |request| {
            let path = request.path.join(&0u8);
            let plugin = CString::new(request.plugin.split('\0').next().unwrap_or("")).unwrap_or_default();
            // SAFETY: the callback contract of `bcv_proxy_property_fn_t`; everything passed lives across the call.
            let (status, reply) = with_reply(|r| unsafe {
                callback(ud.data, plugin.as_ptr(), request.context_id, path.as_ptr(), path.len(), r)
            });
            (status == BCV_OK).then(|| reply.data.unwrap_or_default())
        });
    }
    if c.foreign_function_count > 0 && c.foreign_functions.is_null() {
        return Err(fail_with(BCV_E_INVALID, "foreign_functions is NULL but foreign_function_count is not 0"));
    }
    let functions = if c.foreign_function_count == 0 {
        &[][..]
    } else {
        // SAFETY: the caller provides `foreign_function_count` entries valid for the call.
        unsafe { std::slice::from_raw_parts(c.foreign_functions, c.foreign_function_count) }
    };
    for entry in functions {
        let name = c_str(entry.name, "foreign function name")?.to_owned();
        let Some(function) = entry.function else {
            return Err(fail_with(BCV_E_INVALID, &format!("foreign function {name:?} has no function")));
        };
        let c_name = CString::new(name.as_str()).unwrap_or_default();
        let ud = Arc::clone(&user_data);
        services = services.foreign_function(name, move |args| {
            // SAFETY: the callback contract of `bcv_proxy_foreign_fn_t`; everything passed lives across the call.
            let (status, reply) =
                with_reply(|r| unsafe { function(ud.data, c_name.as_ptr(), args.as_ptr(), args.len(), r) });
            match status {
                BCV_OK => Ok(reply.data.unwrap_or_default()),
                BCV_E_NOT_FOUND => Err(ForeignError::NotFound),
                code => Err(ForeignError::Failed(reply.error.unwrap_or_else(|| {
                    format!("the foreign function returned {}", status_cname(code).to_string_lossy())
                }))),
            }
        });
    }
    if let Some(callback) = c.log {
        let ud = Arc::clone(&user_data);
        services = services.on_log(move |record: &LogRecord| {
            let texts = [record.vm_id.as_bytes(), record.plugin.as_bytes(), record.message.as_bytes()]
                .map(|t| t.iter().copied().chain([0]).collect::<Vec<u8>>());
            let r = bcv_proxy_log_record_t {
                level: level_code(record.level),
                context_id: record.context_id,
                vm_id: texts[0].as_ptr().cast(),
                vm_id_len: record.vm_id.len(),
                plugin: texts[1].as_ptr().cast(),
                plugin_len: record.plugin.len(),
                message: texts[2].as_ptr().cast(),
                message_len: record.message.len(),
            };
            // SAFETY: the callback contract of `bcv_proxy_log_fn_t`; the record and its texts live across the call.
            unsafe { callback(ud.data, &r) };
        });
    }
    let restart = (c.restart_max > 0).then(|| RestartPolicy {
        max_restarts: c.restart_max,
        window: Duration::from_millis(c.restart_window_ms),
        backoff: Duration::from_millis(c.restart_backoff_ms),
    });
    Ok(VmConfig { vm_id, configuration, environment, services, restart })
}

/// Starts a VM of `module` on `host`: instantiates it and runs its start functions (`on_vm_start` runs with
/// the first plugin). Writes the VM's handle to `*out`; release it with `bcv_release` (its plugins and
/// contexts keep it alive). `config` may be NULL (the defaults); the call takes ownership of
/// `config->user_data`, also when it fails. Run one VM per worker thread to filter in parallel: calls into
/// one VM are serialized. Errors: `BCV_E_PROXY_VM_FAILED` (instantiation or the start code failed, or the
/// pool is full), `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`, `BCV_E_CLOSED` (host closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_start(
    host: bcv_handle_t,
    module: bcv_handle_t,
    config: *const bcv_proxy_vm_config_t,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        let config = try_status!(vm_config(config));
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_host(host, |h| {
            with_module(module, |m| match Vm::start(h, m, config) {
                Ok(vm) => put(out, table::insert(Object::ProxyVm(vm))),
                Err(e) => fail_proxy(host, &e),
            })
        })
    })
}

/// Fills `*config` with the defaults: no name, root id or configuration, fail closed, no properties.
/// Errors: `BCV_E_INVALID` (NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_plugin_config_init(config: *mut bcv_proxy_plugin_config_t) -> bcv_status_t {
    guard(|| {
        if config.is_null() {
            return fail_with(BCV_E_INVALID, "config is NULL");
        }
        put_opt(
            config,
            bcv_proxy_plugin_config_t {
                name: std::ptr::null(),
                root_id: std::ptr::null(),
                configuration: std::ptr::null(),
                configuration_len: 0,
                fail_open: false,
                properties: std::ptr::null(),
                property_count: 0,
            },
        );
        BCV_OK
    })
}

fn plugin_config(config: *const bcv_proxy_plugin_config_t) -> Result<PluginConfig, bcv_status_t> {
    if config.is_null() {
        return Ok(PluginConfig::default());
    }
    // SAFETY: non-NULL, points to an initialised struct for the duration of the call.
    let c = unsafe { *config };
    let mut properties = std::collections::HashMap::new();
    for p in pairs_in(c.properties, c.property_count, "properties")? {
        properties.insert(
            text_in(p.name, p.name_len, "property name")?.to_owned(),
            bytes_in(p.value, p.value_len, "property value")?.to_vec(),
        );
    }
    Ok(PluginConfig {
        name: opt_c_str(c.name, "name")?.to_owned(),
        root_id: opt_c_str(c.root_id, "root_id")?.to_owned(),
        configuration: bytes_in(c.configuration, c.configuration_len, "configuration")?.to_vec(),
        fail_open: c.fail_open,
        properties,
    })
}

/// Adds a plugin (a root context) to the VM: first a canary (a throw-away instance runs start,
/// `on_vm_start` and `on_configure`), then the same on this VM (`on_vm_start` only for its first plugin).
/// Writes the plugin's handle to `*out`; release it with `bcv_release` (its contexts keep it alive).
/// `config` may be NULL (the defaults). Errors: `BCV_E_PROXY_PLUGIN_REJECTED` (the canary or the real
/// configure failed or returned false: the message says why; the VM keeps working),
/// `BCV_E_PROXY_VM_FAILED`, `BCV_E_WOULD_DEADLOCK` (from a callback of this VM), `BCV_E_INVALID`,
/// `BCV_E_BAD_HANDLE`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_add_plugin(
    vm: bcv_handle_t,
    config: *const bcv_proxy_plugin_config_t,
    out: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let config = try_status!(plugin_config(config));
        with_vm(vm, |v| match v.add_plugin(config) {
            Ok(p) => put(out, table::insert(Object::ProxyPlugin(p))),
            Err(e) => fail_proxy(vm, &e),
        })
    })
}

/// Writes how many times the VM was re-created after a failure (`restart_max` of its config) to `*count`.
/// Callable from the VM's own callbacks. Errors: `BCV_E_INVALID` (NULL), `BCV_E_BAD_HANDLE`,
/// `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_restarts(vm: bcv_handle_t, count: *mut u32) -> bcv_status_t {
    guard(|| {
        if count.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_vm(vm, |v| {
            put_opt(count, v.restarts());
            BCV_OK
        })
    })
}

/// Writes why the VM failed: a `BCV_PROXY_FAIL_*` code to `*reason` (may be NULL) and the reason's text to
/// `buf` (NUL-terminated, truncated to `cap`; may be NULL) with its full length to `*len` (may be NULL).
/// Returns `BCV_EOF` (reason `BCV_PROXY_FAIL_NONE`, empty text) when the VM has not failed. Callable from the
/// VM's own callbacks. Errors: `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_failure(
    vm: bcv_handle_t,
    reason: *mut u32,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> bcv_status_t {
    guard(|| {
        with_vm(vm, |v| {
            let failure = v.failure();
            put_opt(reason, failure.as_ref().map(fail_code).unwrap_or(BCV_PROXY_FAIL_NONE));
            let text = failure.as_ref().map(ToString::to_string).unwrap_or_default();
            put_opt(len, copy_out(&text, buf, cap));
            if failure.is_some() { BCV_OK } else { BCV_EOF }
        })
    })
}

/// Takes the log records the VM kept so far (the most recent 4096, oldest first) into `*logs` (free with
/// `bcv_proxy_logs_free`). Callable from the VM's own callbacks. Errors: `BCV_E_INVALID` (NULL),
/// `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_take_logs(vm: bcv_handle_t, logs: *mut bcv_proxy_logs_t) -> bcv_status_t {
    guard(|| {
        if logs.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_vm(vm, |v| {
            let records: Box<[bcv_proxy_log_record_t]> = v
                .take_logs()
                .iter()
                .map(|r| bcv_proxy_log_record_t {
                    level: level_code(r.level),
                    context_id: r.context_id,
                    vm_id: alloc_text(r.vm_id.as_bytes()).cast(),
                    vm_id_len: r.vm_id.len(),
                    plugin: alloc_text(r.plugin.as_bytes()).cast(),
                    plugin_len: r.plugin.len(),
                    message: alloc_text(r.message.as_bytes()).cast(),
                    message_len: r.message.len(),
                })
                .collect();
            let out = if records.is_empty() {
                bcv_proxy_logs_t { records: std::ptr::null_mut(), count: 0 }
            } else {
                let count = records.len();
                bcv_proxy_logs_t { records: Box::into_raw(records).cast(), count }
            };
            put_owned(logs, || out);
            BCV_OK
        })
    })
}

/// Fills `*stats` with the VM's memory size and live contexts.
/// Errors: `BCV_E_INVALID` (NULL), `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`, `BCV_E_WOULD_DEADLOCK` from a
/// callback of this VM.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_stats(vm: bcv_handle_t, stats: *mut bcv_proxy_vm_stats_t) -> bcv_status_t {
    guard(|| {
        if stats.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_vm(vm, |v| match v.memory_size().and_then(|memory| Ok((memory, v.context_count()?))) {
            Ok((memory, contexts)) => {
                put_opt(stats, bcv_proxy_vm_stats_t { memory_bytes: memory as u64, contexts: contexts as u64 });
                BCV_OK
            }
            Err(e) => fail_proxy(vm, &e),
        })
    })
}

/// Waits up to `timeout_ms` until nothing the VM's driver thread delivers (ticks, queue notifications,
/// callout answers) is being delivered or queued. Errors: `BCV_E_TIMEOUT`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_vm_wait_idle(vm: bcv_handle_t, timeout_ms: i64) -> bcv_status_t {
    guard(|| {
        with_vm(vm, |v| {
            if v.wait_idle(wait_timeout(timeout_ms)) {
                BCV_OK
            } else {
                fail_with(BCV_E_TIMEOUT, &format!("vm {:?} did not become idle in time", v.id()))
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------------------
// Callouts and callback replies
// ---------------------------------------------------------------------------------------------------------

/// Copies what the plugin asked in a callout into `*info` (free with `bcv_proxy_callout_info_free`); works
/// before and after it is answered. Errors: `BCV_E_INVALID` (NULL), `BCV_E_BAD_HANDLE`,
/// `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_callout_get(
    callout: bcv_handle_t,
    info: *mut bcv_proxy_callout_info_t,
) -> bcv_status_t {
    guard(|| {
        if info.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_callout(callout, |c| {
            put_owned(info, || bcv_proxy_callout_info_t {
                kind: c.kind,
                call_id: c.call_id,
                timeout_ms: c.timeout.as_millis() as u64,
                upstream: owned_c_string(&c.upstream),
                plugin: owned_c_string(&c.plugin),
                service: owned_c_string(&c.service),
                method: owned_c_string(&c.method),
                headers: headers_out(&c.headers),
                body: bcv_bytes_t::from_vec(c.body.clone()),
                trailers: headers_out(&c.trailers),
            });
            BCV_OK
        })
    })
}

/// Frees what `bcv_proxy_callout_get` filled and zeroes it. NULL and zeroed structs are fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_callout_info_free(info: *mut bcv_proxy_callout_info_t) {
    let _ = guard(|| {
        if info.is_null() {
            return BCV_OK;
        }
        // SAFETY: non-NULL, filled by bcv or zeroed (documented); each part is freed once, then zeroed.
        unsafe {
            let i = &mut *info;
            for s in [&mut i.upstream, &mut i.plugin, &mut i.service, &mut i.method] {
                free_c_string(*s);
                *s = std::ptr::null_mut();
            }
            free_headers(&mut i.headers);
            free_headers(&mut i.trailers);
            crate::stream::bcv_bytes_free(&mut i.body);
        }
        BCV_OK
    });
}

/// Answers an HTTP callout with a response: `count` headers (put the status in `:status`) and `len` body
/// bytes, copied. Any thread; the plugin's `on_http_call_response` runs on the VM's driver thread. An answer
/// after the plugin's timeout, or after the VM is gone, is ignored. (An HTTP answer to a gRPC callout reaches
/// the plugin as gRPC status 2.) The handle stays valid: release it. Errors: `BCV_E_ALREADY_TAKEN` (answered
/// already), `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_callout_respond(
    callout: bcv_handle_t,
    headers: *const bcv_proxy_header_t,
    count: usize,
    body: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let headers = try_status!(headers_in(headers, count));
        let body = try_status!(bytes_in(body, len, "body")).to_vec();
        with_callout(callout, |c| {
            let reply = try_status!(c.take_reply());
            reply.respond(CalloutResponse { headers, body, trailers: HeaderMap::new() });
            BCV_OK
        })
    })
}

/// Answers a gRPC callout with gRPC status `status` (0 = OK), its message text `status_message` (NULL: "")
/// and, when `status` is 0, the `len` bytes of the serialized response message (copied). Any thread. (A gRPC
/// answer to an HTTP callout reaches the plugin as a failed call.) The handle stays valid: release it.
/// Errors: `BCV_E_ALREADY_TAKEN`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_callout_respond_grpc(
    callout: bcv_handle_t,
    status: u32,
    status_message: *const c_char,
    message: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let status_message = try_status!(opt_c_str(status_message, "status_message")).to_owned();
        let message = try_status!(bytes_in(message, len, "message")).to_vec();
        with_callout(callout, |c| {
            let reply = try_status!(c.take_reply());
            reply.respond_grpc(GrpcResponse { status, status_message, message, ..Default::default() });
            BCV_OK
        })
    })
}

/// Tells the plugin the callout failed (an HTTP call sees no response headers; a gRPC call status 14,
/// UNAVAILABLE), as releasing the handle unanswered does. Any thread. Errors: `BCV_E_ALREADY_TAKEN`,
/// `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_callout_fail(callout: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        with_callout(callout, |c| {
            let reply = try_status!(c.take_reply());
            reply.fail();
            BCV_OK
        })
    })
}

fn reply_of<'a>(reply: *mut bcv_proxy_reply_t) -> Result<&'a mut bcv_proxy_reply_t, bcv_status_t> {
    if reply.is_null() {
        return Err(fail_with(BCV_E_INVALID, "reply is NULL"));
    }
    // SAFETY: a non-NULL reply is the one bcv passed to the running callback (the documented contract).
    Ok(unsafe { &mut *reply })
}

/// Sets the value of a property or the result of a foreign function to a copy of `len` bytes at `data`
/// (NULL when 0). Only inside the callback. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_reply_set(
    reply: *mut bcv_proxy_reply_t,
    data: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        r.data = Some(try_status!(bytes_in(data, len, "data")).to_vec());
        BCV_OK
    })
}

/// Describes why a foreign function failed (copied; the VM logs it). The callback then returns a negative
/// status. Only inside the callback. Errors: `BCV_E_INVALID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_reply_set_error(
    reply: *mut bcv_proxy_reply_t,
    message: *const c_char,
) -> bcv_status_t {
    guard(|| {
        let r = try_status!(reply_of(reply));
        r.error = Some(try_status!(c_str(message, "message")).to_owned());
        BCV_OK
    })
}

// ---------------------------------------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------------------------------------

/// Calls the plugin's `proxy_on_foreign_function(root, function_id, len)`; the plugin reads the `len` bytes
/// at `args` (copied) as its FOREIGN_FUNCTION_ARGUMENTS buffer. ABI 0.2.0 and later. Errors:
/// `BCV_E_PROXY_VM_FAILED` (the VM has failed, or the callback trapped), `BCV_E_WOULD_DEADLOCK`,
/// `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`, `BCV_E_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_plugin_call_foreign_function(
    plugin: bcv_handle_t,
    function_id: u32,
    args: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let args = try_status!(bytes_in(args, len, "args"));
        with_plugin(plugin, |p| unit(plugin, p.call_foreign_function(function_id, args)))
    })
}

/// Creates an HTTP stream context of the plugin (`on_context_create`) and writes its handle to `*out`.
/// Releasing it finishes it, as `bcv_proxy_http_finish` does. A failed VM still gives a context, whose
/// calls then follow the plugin's fail-open/closed policy. Errors: `BCV_E_CLOSED` (the plugin is closed),
/// `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_context_new(plugin: bcv_handle_t, out: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_plugin(plugin, |p| match p.http_context() {
            Ok(c) => put(out, table::insert(Object::ProxyHttp(c))),
            Err(e) => fail_proxy(plugin, &e),
        })
    })
}

/// Creates a TCP (network) stream context of the plugin and writes its handle to `*out`; as
/// `bcv_proxy_http_context_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_context_new(plugin: bcv_handle_t, out: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_plugin(plugin, |p| match p.tcp_context() {
            Ok(c) => put(out, table::insert(Object::ProxyTcp(c))),
            Err(e) => fail_proxy(plugin, &e),
        })
    })
}

// ---------------------------------------------------------------------------------------------------------
// HTTP contexts
// ---------------------------------------------------------------------------------------------------------

/// Feeds the request headers (`count` entries, copied; pseudo-headers `:method`, `:path`, `:authority`,
/// `:scheme` included) to `on_request_headers`; `end_of_stream` when there is no body. Writes the action
/// (`BCV_PROXY_*`) to `*action`; when it is `BCV_PROXY_LOCAL_RESPONSE` and `response` is not NULL, also the
/// response to `*response` (free with `bcv_proxy_local_response_free`; otherwise it is zeroed, without
/// freeing what it held). A failed VM is not an error: the action follows the plugin's fail-open/closed
/// policy. Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_CLOSED`, `BCV_E_WOULD_DEADLOCK` (from a callback of this
/// VM), `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_request_headers(
    ctx: bcv_handle_t,
    headers: *const bcv_proxy_header_t,
    count: usize,
    end_of_stream: bool,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let map = try_status!(headers_in(headers, count));
        http_action(ctx, action, response, |h| h.on_request_headers(map, end_of_stream))
    })
}

/// Feeds a request body chunk (`len` bytes, copied), appended to the buffered body the plugin sees; on
/// `BCV_PROXY_CONTINUE` forward what `bcv_proxy_http_take_request_body` gives. Action and errors as
/// `bcv_proxy_http_on_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_request_body(
    ctx: bcv_handle_t,
    data: *const u8,
    len: usize,
    end_of_stream: bool,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let chunk = try_status!(bytes_in(data, len, "data"));
        http_action(ctx, action, response, |h| h.on_request_body(chunk, end_of_stream))
    })
}

/// Feeds the request trailers (`count` entries, copied). Action and errors as
/// `bcv_proxy_http_on_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_request_trailers(
    ctx: bcv_handle_t,
    trailers: *const bcv_proxy_header_t,
    count: usize,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let map = try_status!(headers_in(trailers, count));
        http_action(ctx, action, response, |h| h.on_request_trailers(map))
    })
}

/// Feeds the response headers (with `:status`). Action and errors as `bcv_proxy_http_on_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_response_headers(
    ctx: bcv_handle_t,
    headers: *const bcv_proxy_header_t,
    count: usize,
    end_of_stream: bool,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let map = try_status!(headers_in(headers, count));
        http_action(ctx, action, response, |h| h.on_response_headers(map, end_of_stream))
    })
}

/// Feeds a response body chunk; on `BCV_PROXY_CONTINUE` forward what `bcv_proxy_http_take_response_body`
/// gives. Action and errors as `bcv_proxy_http_on_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_response_body(
    ctx: bcv_handle_t,
    data: *const u8,
    len: usize,
    end_of_stream: bool,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let chunk = try_status!(bytes_in(data, len, "data"));
        http_action(ctx, action, response, |h| h.on_response_body(chunk, end_of_stream))
    })
}

/// Feeds the response trailers. Action and errors as `bcv_proxy_http_on_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_on_response_trailers(
    ctx: bcv_handle_t,
    trailers: *const bcv_proxy_header_t,
    count: usize,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let map = try_status!(headers_in(trailers, count));
        http_action(ctx, action, response, |h| h.on_response_trailers(map))
    })
}

/// Waits up to `timeout_ms` until the paused `stream` (`BCV_PROXY_STREAM_REQUEST` or `_RESPONSE`)
/// continues, gets a local response, or is closed, and writes that action (and response) as
/// `bcv_proxy_http_on_request_headers` does. Returns at once when the stream is not paused. Errors:
/// `BCV_E_TIMEOUT` (nothing is lost: wait again or give up), `BCV_E_CLOSED`, `BCV_E_WOULD_DEADLOCK`,
/// `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_wait(
    ctx: bcv_handle_t,
    stream: u32,
    timeout_ms: i64,
    action: *mut u32,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        let stream = try_status!(stream_of(stream));
        http_action(ctx, action, response, |h| h.wait(stream, wait_timeout(timeout_ms)))
    })
}

/// Copies the request headers, as the plugin left them, into `*out` (free with `bcv_proxy_headers_free`).
/// Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_request_headers(
    ctx: bcv_handle_t,
    out: *mut bcv_proxy_headers_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_headers(ctx, out, h, MapType::HttpRequestHeaders))
    })
}

/// Copies the request trailers as the plugin left them; as `bcv_proxy_http_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_request_trailers(
    ctx: bcv_handle_t,
    out: *mut bcv_proxy_headers_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_headers(ctx, out, h, MapType::HttpRequestTrailers))
    })
}

/// Copies the response headers as the plugin left them; as `bcv_proxy_http_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_response_headers(
    ctx: bcv_handle_t,
    out: *mut bcv_proxy_headers_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_headers(ctx, out, h, MapType::HttpResponseHeaders))
    })
}

/// Copies the response trailers as the plugin left them; as `bcv_proxy_http_request_headers`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_response_trailers(
    ctx: bcv_handle_t,
    out: *mut bcv_proxy_headers_t,
) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_headers(ctx, out, h, MapType::HttpResponseTrailers))
    })
}

/// Moves the buffered request body, as the plugin left it, into `*out` (free with `bcv_bytes_free`),
/// leaving the buffer empty: forward it after `BCV_PROXY_CONTINUE`. Errors: `BCV_E_PROXY_FINISHED`,
/// `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_take_request_body(ctx: bcv_handle_t, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_bytes(ctx, out, h.take_request_body()))
    })
}

/// Moves the buffered response body into `*out`; as `bcv_proxy_http_take_request_body`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_take_response_body(ctx: bcv_handle_t, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_http(ctx, |h| put_bytes(ctx, out, h.take_response_body()))
    })
}

/// Copies the local response the plugin sent on this context (`proxy_send_local_response`) into
/// `*response` (free with `bcv_proxy_local_response_free`). Returns `BCV_EOF` (and a zeroed `*response`)
/// when it sent none. The 503 of a fail-closed plugin whose VM failed is not one the plugin sent: it comes
/// only with the action. Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`,
/// `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_local_response(
    ctx: bcv_handle_t,
    response: *mut bcv_proxy_local_response_t,
) -> bcv_status_t {
    guard(|| {
        if response.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        put_opt(response, empty_local_response());
        with_http(ctx, |h| match h.local_response() {
            Ok(Some(r)) => {
                put_owned(response, || local_response_out(&r));
                BCV_OK
            }
            Ok(None) => BCV_EOF,
            Err(e) => fail_proxy(ctx, &e),
        })
    })
}

/// Pipes a request body through the plugin: consumes the stream reader `input` (its chunks go to
/// `on_request_body`) and writes a reader of what the plugin lets through to `*output` (release it with
/// `bcv_release`). The output ends cleanly only after the plugin continued the final chunk; a local
/// response, a close, a failed VM (fail-closed), a pause longer than `pause_timeout_ms` or a cut-short input
/// end it with `BCV_E_CLOSED`, never a clean end. Errors: `BCV_E_CLOSED`, `BCV_E_INVALID`,
/// `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_filter_request_body(
    ctx: bcv_handle_t,
    input: bcv_handle_t,
    pause_timeout_ms: i64,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| filter_body(ctx, input, pause_timeout_ms, output, true))
}

/// Pipes a response body through the plugin; as `bcv_proxy_http_filter_request_body`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_filter_response_body(
    ctx: bcv_handle_t,
    input: bcv_handle_t,
    pause_timeout_ms: i64,
    output: *mut bcv_handle_t,
) -> bcv_status_t {
    guard(|| filter_body(ctx, input, pause_timeout_ms, output, false))
}

fn filter_body(
    ctx: bcv_handle_t,
    input: bcv_handle_t,
    pause_timeout_ms: i64,
    output: *mut bcv_handle_t,
    request: bool,
) -> bcv_status_t {
    if output.is_null() {
        return fail_with(BCV_E_INVALID, "output pointer is NULL");
    }
    // Validate both before consuming the input.
    try_status!(reader(input));
    with_http(ctx, |h| {
        let input = try_status!(consume_reader(input));
        let timeout = wait_timeout(pause_timeout_ms);
        let result =
            if request { h.filter_request_body(input, timeout) } else { h.filter_response_body(input, timeout) };
        match result {
            Ok(r) => put(output, table::insert(Object::Reader(r))),
            Err(e) => fail_proxy(ctx, &e),
        }
    })
}

/// Reads property `path` (dotted: `"request.path"`) as the plugin would, into `*value` (may be NULL; free
/// with `bcv_bytes_free`). Returns `BCV_EOF` when there is no such property. Errors:
/// `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_property(
    ctx: bcv_handle_t,
    path: *const c_char,
    value: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        let path = try_status!(c_str(path, "path"));
        with_http(ctx, |h| put_property(ctx, value, h.property(path)))
    })
}

/// Sets property `path` (dotted: `"source.address"`) of this context to a copy of `len` bytes at `value`;
/// the plugin reads it before any other source. Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_WOULD_DEADLOCK`,
/// `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_set_property(
    ctx: bcv_handle_t,
    path: *const c_char,
    value: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let path = try_status!(c_str(path, "path"));
        let value = try_status!(bytes_in(value, len, "value"));
        with_http(ctx, |h| unit(ctx, h.set_property(path, value)))
    })
}

/// Finishes the context now: `on_done`, then `on_log` and `on_delete`. Writes to `*done` (may be NULL)
/// false when the plugin deferred the last two (its `on_done` returned false) until it calls `proxy_done`.
/// Later calls on the context fail with `BCV_E_PROXY_FINISHED`; release the handle. Errors:
/// `BCV_E_WOULD_DEADLOCK`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_http_finish(ctx: bcv_handle_t, done: *mut bool) -> bcv_status_t {
    guard(|| with_http(ctx, |h| put_finished(ctx, done, h.finish())))
}

// ---------------------------------------------------------------------------------------------------------
// TCP contexts
// ---------------------------------------------------------------------------------------------------------

/// A new connection arrived (`on_new_connection`). Writes the action (`BCV_PROXY_CONTINUE`, `_PAUSE` or
/// `_CLOSE`) to `*action`. A failed VM is not an error: a fail-closed plugin closes, a fail-open one
/// continues. Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_CLOSED`, `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`,
/// `BCV_E_BAD_HANDLE`, `BCV_E_WRONG_TYPE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_on_new_connection(ctx: bcv_handle_t, action: *mut u32) -> bcv_status_t {
    guard(|| tcp_action(ctx, action, |t| t.on_new_connection()))
}

/// Data from the client (`len` bytes, copied); on `BCV_PROXY_CONTINUE` forward what
/// `bcv_proxy_tcp_take_downstream_data` gives. Action and errors as `bcv_proxy_tcp_on_new_connection`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_on_downstream_data(
    ctx: bcv_handle_t,
    data: *const u8,
    len: usize,
    end_of_stream: bool,
    action: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let data = try_status!(bytes_in(data, len, "data"));
        tcp_action(ctx, action, |t| t.on_downstream_data(data, end_of_stream))
    })
}

/// Data from the server; on `BCV_PROXY_CONTINUE` forward what `bcv_proxy_tcp_take_upstream_data` gives.
/// Action and errors as `bcv_proxy_tcp_on_new_connection`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_on_upstream_data(
    ctx: bcv_handle_t,
    data: *const u8,
    len: usize,
    end_of_stream: bool,
    action: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let data = try_status!(bytes_in(data, len, "data"));
        tcp_action(ctx, action, |t| t.on_upstream_data(data, end_of_stream))
    })
}

/// The client side closed; `peer` (`BCV_PROXY_PEER_*`) says who closed it. Errors as
/// `bcv_proxy_tcp_on_new_connection`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_on_downstream_close(ctx: bcv_handle_t, peer: u32) -> bcv_status_t {
    guard(|| {
        let peer = try_status!(peer_of(peer));
        with_tcp(ctx, |t| unit(ctx, t.on_downstream_close(peer)))
    })
}

/// The server side closed; as `bcv_proxy_tcp_on_downstream_close`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_on_upstream_close(ctx: bcv_handle_t, peer: u32) -> bcv_status_t {
    guard(|| {
        let peer = try_status!(peer_of(peer));
        with_tcp(ctx, |t| unit(ctx, t.on_upstream_close(peer)))
    })
}

/// Moves the buffered client data, as the plugin left it, into `*out` (free with `bcv_bytes_free`).
/// Errors: `BCV_E_PROXY_FINISHED`, `BCV_E_WOULD_DEADLOCK`, `BCV_E_INVALID`, `BCV_E_BAD_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_take_downstream_data(ctx: bcv_handle_t, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_tcp(ctx, |t| put_bytes(ctx, out, t.take_downstream_data()))
    })
}

/// Moves the buffered server data into `*out`; as `bcv_proxy_tcp_take_downstream_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_take_upstream_data(ctx: bcv_handle_t, out: *mut bcv_bytes_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        with_tcp(ctx, |t| put_bytes(ctx, out, t.take_upstream_data()))
    })
}

/// Waits for a paused direction (`BCV_PROXY_STREAM_DOWNSTREAM` or `_UPSTREAM`), as `bcv_proxy_http_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_wait(
    ctx: bcv_handle_t,
    stream: u32,
    timeout_ms: i64,
    action: *mut u32,
) -> bcv_status_t {
    guard(|| {
        let stream = try_status!(stream_of(stream));
        tcp_action(ctx, action, |t| t.wait(stream, wait_timeout(timeout_ms)))
    })
}

/// Reads a property as the plugin would; as `bcv_proxy_http_property`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_property(
    ctx: bcv_handle_t,
    path: *const c_char,
    value: *mut bcv_bytes_t,
) -> bcv_status_t {
    guard(|| {
        let path = try_status!(c_str(path, "path"));
        with_tcp(ctx, |t| put_property(ctx, value, t.property(path)))
    })
}

/// Sets a property of this context; as `bcv_proxy_http_set_property`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_set_property(
    ctx: bcv_handle_t,
    path: *const c_char,
    value: *const u8,
    len: usize,
) -> bcv_status_t {
    guard(|| {
        let path = try_status!(c_str(path, "path"));
        let value = try_status!(bytes_in(value, len, "value"));
        with_tcp(ctx, |t| unit(ctx, t.set_property(path, value)))
    })
}

/// Finishes the context now (`on_done`, `on_log`, `on_delete`); as `bcv_proxy_http_finish`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_proxy_tcp_finish(ctx: bcv_handle_t, done: *mut bool) -> bcv_status_t {
    guard(|| with_tcp(ctx, |t| put_finished(ctx, done, t.finish())))
}
