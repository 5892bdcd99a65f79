//! Runtimes, handles (release, close, close-and-wait, state), scopes, strict mode and diagnostics.

use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Duration;

use bcv_core::handle::{CloseWaitError, NodeState, Runtime, Scope, ShutdownError, StrictConfig, take_pending};

use crate::error::*;
use crate::table::{self, Object};

/// A handle: a 64-bit id naming one object. 0 is the null handle.
pub type bcv_handle_t = u64;

/// Strict mode off (the default, unless `BCV_STRICT` says otherwise).
pub const BCV_STRICT_OFF: u32 = 0;
/// Strict mode: log and count ordering mistakes.
pub const BCV_STRICT_WARN: u32 = 1;
/// Strict mode: as WARN, and `bcv_strict_check` on the offending thread returns `BCV_E_STRICT`.
pub const BCV_STRICT_ERROR: u32 = 2;
/// Flag for `bcv_runtime_new`: also report V1 (parent released before children), the WASIp2 rule.
pub const BCV_STRICT_WASIP2: u32 = 0x100;

/// Node states returned by `bcv_handle_state`.
pub const BCV_STATE_OPEN: u32 = 0;
/// Only children or in-flight operations hold it.
pub const BCV_STATE_ORPHANED: u32 = 1;
/// Closing: in-flight operations are being cancelled.
pub const BCV_STATE_CLOSING: u32 = 2;
/// Closed and its OS resources released.
pub const BCV_STATE_CLOSED: u32 = 3;

/// Counters of a runtime (`bcv_diagnostics`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct bcv_diagnostics_t {
    /// Nodes created and not yet torn down.
    pub live_nodes: u64,
    /// Nodes created since the runtime started.
    pub created_nodes: u64,
    /// Strict-mode violations V1..V6 (index 0 is V1).
    pub violations: [u64; 6],
}

pub(crate) fn timeout_of(ms: i64) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

pub(crate) fn runtime_of(handle: bcv_handle_t) -> Result<Runtime, bcv_status_t> {
    let object = table::get(handle)?;
    match &*object {
        Object::Runtime(rt) => Ok(rt.clone()),
        other => Err(table::wrong_type(handle, other, "runtime")),
    }
}

/// Writes `handle` to `*out` if `out` is not NULL.
pub(crate) fn put(out: *mut bcv_handle_t, handle: bcv_handle_t) -> bcv_status_t {
    if out.is_null() {
        return fail_with(BCV_E_INVALID, "output pointer is NULL");
    }
    // SAFETY: the caller passes a valid, writable pointer (checked non-NULL above).
    unsafe { *out = handle };
    BCV_OK
}

/// The version string of the library ("0.1.0"). Static storage; never free it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the library; compare it with the header's `BCV_ABI_VERSION`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_abi_version() -> u32 {
    crate::BCV_ABI_VERSION
}

/// Makes a write to a connection the peer closed an error (`BCV_E_CLOSED`) instead of a process-killing
/// SIGPIPE, as Rust, Python and Node programs already have it: SIGPIPE is set to "ignore" only if it is
/// still at its default action, so an application's own handler is left alone.
fn ignore_default_sigpipe() {
    // SAFETY: sigaction with a NULL new action only reads the current disposition; the second call
    // installs SIG_IGN with an empty mask, which is async-signal-safe and valid for SIGPIPE.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_DFL
        {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            libc::sigemptyset(&mut ignore.sa_mask);
            libc::sigaction(libc::SIGPIPE, &ignore, std::ptr::null_mut());
        }
    }
}

/// Starts a runtime (executor threads and a reaper thread) and writes its handle to `*out`.
///
/// `strict` is `BCV_STRICT_OFF`, `_WARN` or `_ERROR`, optionally `| BCV_STRICT_WASIP2`. Release it with
/// `bcv_runtime_free`. If SIGPIPE is still at its default action, it is set to "ignore", so a write to a
/// closed connection returns `BCV_E_CLOSED` rather than killing the process (a handler the application
/// installed is kept). Errors: `BCV_E_INVALID` (NULL `out`), `BCV_E_IO` (threads could not start).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_runtime_new(strict: u32, out: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let level = match strict & 0xff {
            BCV_STRICT_OFF => "off",
            BCV_STRICT_WARN => "warn",
            BCV_STRICT_ERROR => "error",
            _ => return fail_with(BCV_E_INVALID, "strict level must be BCV_STRICT_OFF, _WARN or _ERROR"),
        };
        let profile = if strict & BCV_STRICT_WASIP2 != 0 { "wasip2" } else { "hygiene" };
        let cfg = StrictConfig::parse(&format!("{level},{profile}"));
        ignore_default_sigpipe();
        match Runtime::builder().strict(cfg).build() {
            Ok(rt) => put(out, table::insert(Object::Runtime(rt))),
            Err(e) => fail(0, &e),
        }
    })
}

/// Shuts the runtime down: closes every node with RUNTIME_SHUTDOWN, cancels operations, runs callback
/// destructors and waits up to `timeout_ms` until nothing is live. Idempotent.
/// Errors: `BCV_E_TIMEOUT` (message lists stuck node ids), `BCV_E_WOULD_DEADLOCK` inside a callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_runtime_shutdown(runtime: bcv_handle_t, timeout_ms: i64) -> bcv_status_t {
    guard(|| {
        let rt = match runtime_of(runtime) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        match rt.shutdown(timeout_of(timeout_ms).unwrap_or(Duration::from_secs(3600))) {
            Ok(()) => BCV_OK,
            Err(e @ ShutdownError::Timeout { .. }) => fail_with(BCV_E_TIMEOUT, &e.to_string()),
            Err(e @ ShutdownError::WouldDeadlock) => fail_with(BCV_E_WOULD_DEADLOCK, &e.to_string()),
        }
    })
}

/// Shuts the runtime down (2 s limit) and releases its handle. Handles still alive stay safe: releasing
/// them later returns `BCV_OK`, and their calls return `BCV_E_CLOSED` (RUNTIME_SHUTDOWN) (C5, T40).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_runtime_free(runtime: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        let rt = match runtime_of(runtime) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let status = match rt.shutdown(Duration::from_secs(2)) {
            Ok(()) => BCV_OK,
            Err(e @ ShutdownError::Timeout { .. }) => fail_with(BCV_E_TIMEOUT, &e.to_string()),
            Err(e @ ShutdownError::WouldDeadlock) => return fail_with(BCV_E_WOULD_DEADLOCK, &e.to_string()),
        };
        let _ = table::remove(runtime);
        status
    })
}

/// Fills `*out` with the runtime's counters. Errors: `BCV_E_BAD_HANDLE`, `BCV_E_INVALID` (NULL `out`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_diagnostics(runtime: bcv_handle_t, out: *mut bcv_diagnostics_t) -> bcv_status_t {
    guard(|| {
        let rt = match runtime_of(runtime) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        let d = rt.diagnostics();
        // SAFETY: non-NULL, caller-provided storage for one struct.
        unsafe {
            *out = bcv_diagnostics_t {
                live_nodes: d.live_nodes as u64,
                created_nodes: d.created_nodes,
                violations: d.violations,
            }
        };
        BCV_OK
    })
}

/// Waits until releases made so far are processed and the live-node count is 0, or `timeout_ms` passes;
/// writes the final count to `*live` (may be NULL). For tests.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_runtime_wait_idle(runtime: bcv_handle_t, timeout_ms: i64, live: *mut u64) -> bcv_status_t {
    guard(|| {
        let rt = match runtime_of(runtime) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let n = rt.wait_idle(timeout_of(timeout_ms).unwrap_or(Duration::from_secs(3600)));
        if !live.is_null() {
            // SAFETY: non-NULL caller storage.
            unsafe { *live = n as u64 };
        }
        if n == 0 { BCV_OK } else { fail_with(BCV_E_TIMEOUT, &format!("{n} nodes still live")) }
    })
}

/// Returns `BCV_E_STRICT` (message describes it) if a strict-mode violation was recorded on this thread at
/// level ERROR, and clears it; `BCV_OK` otherwise.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_strict_check() -> bcv_status_t {
    guard(|| match take_pending() {
        Some(d) => fail_with(BCV_E_STRICT, &d.to_string()),
        None => BCV_OK,
    })
}

/// Releases one handle: O(1), any thread, never blocks. Calls in flight on it return `BCV_E_CLOSED`
/// (HANDLE_RELEASED) for stream ends. Releasing 0 is a no-op (`BCV_OK`); releasing twice is
/// `BCV_E_BAD_HANDLE`. A runtime handle is released without shutting it down (see `bcv_runtime_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_release(handle: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if handle == 0 {
            return BCV_OK;
        }
        match table::remove(handle) {
            Ok(object) => {
                if let Some(node) = object.node() {
                    node.release_now();
                }
                drop(object);
                BCV_OK
            }
            Err(code) => code,
        }
    })
}

fn with_node(handle: bcv_handle_t, f: impl FnOnce(&bcv_core::handle::Node) -> bcv_status_t) -> bcv_status_t {
    let object = match table::get(handle) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match object.node() {
        Some(node) => f(node),
        None => table::wrong_type(handle, &object, "node"),
    }
}

/// Forced, cascading close with reason SELF: idempotent, returns at once. Dependent children end with
/// PARENT. The handle stays valid until released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_close(handle: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if let Ok(object) = table::get(handle)
            && let Object::Scope(scope) = &*object
        {
            scope.lock().unwrap_or_else(|p| p.into_inner()).close();
            return BCV_OK;
        }
        with_node(handle, |n| {
            n.close();
            BCV_OK
        })
    })
}

/// Closes the node and waits up to `timeout_ms` until in-flight operations returned and OS resources are
/// freed. Errors: `BCV_E_TIMEOUT`; `BCV_E_WOULD_DEADLOCK` inside a bcv callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_close_and_wait(handle: bcv_handle_t, timeout_ms: i64) -> bcv_status_t {
    guard(|| {
        with_node(handle, |n| {
            match n.close_and_wait_blocking(timeout_of(timeout_ms).unwrap_or(Duration::from_secs(3600))) {
                Ok(()) => BCV_OK,
                Err(CloseWaitError::Timeout) => fail_with(BCV_E_TIMEOUT, "close did not complete in time"),
                Err(CloseWaitError::WouldDeadlock) => {
                    fail_with(BCV_E_WOULD_DEADLOCK, "close_and_wait inside a bcv callback")
                }
            }
        })
    })
}

/// Writes the node's state (`BCV_STATE_*`) to `*state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_handle_state(handle: bcv_handle_t, state: *mut u32) -> bcv_status_t {
    guard(|| {
        with_node(handle, |n| {
            if state.is_null() {
                return fail_with(BCV_E_INVALID, "output pointer is NULL");
            }
            let v = match n.state() {
                NodeState::Open => BCV_STATE_OPEN,
                NodeState::Orphaned => BCV_STATE_ORPHANED,
                NodeState::Closing => BCV_STATE_CLOSING,
                NodeState::Closed => BCV_STATE_CLOSED,
            };
            // SAFETY: non-NULL caller storage.
            unsafe { *state = v };
            BCV_OK
        })
    })
}

/// Why `handle` ended: its own close reason, or else the reason of the last `BCV_E_CLOSED` this thread got
/// from a call on it. Writes `BCV_REASON_*` to `*reason` and, for UPSTREAM, the inner reason to `*upstream`
/// (either may be NULL); `BCV_REASON_NONE` if neither applies.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_close_reason(handle: bcv_handle_t, reason: *mut u32, upstream: *mut u32) -> bcv_status_t {
    guard(|| {
        with_node(handle, |n| {
            let closed = last_closed_for(handle).or_else(|| n.close_reason());
            let (r, u) = match closed {
                Some(c) => (c.reason as u32, c.upstream.map(|u| u as u32).unwrap_or(BCV_REASON_NONE)),
                None => (BCV_REASON_NONE, BCV_REASON_NONE),
            };
            // SAFETY: each pointer is checked for NULL and points to caller storage.
            unsafe {
                if !reason.is_null() {
                    *reason = r;
                }
                if !upstream.is_null() {
                    *upstream = u;
                }
            }
            BCV_OK
        })
    })
}

/// Lets the node outlive the scope it was created in.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_detach_from_scope(handle: bcv_handle_t) -> bcv_status_t {
    guard(|| {
        with_node(handle, |n| {
            n.detach_from_scope();
            BCV_OK
        })
    })
}

/// Enters a new scope on the calling thread: nodes created on this thread until `bcv_close(scope)` are
/// closed with SCOPE_EXITED when it closes, unless detached. Release the scope handle with `bcv_release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_scope_enter(out: *mut bcv_handle_t) -> bcv_status_t {
    guard(|| {
        if out.is_null() {
            return fail_with(BCV_E_INVALID, "output pointer is NULL");
        }
        put(out, table::insert(Object::Scope(Mutex::new(Scope::enter()))))
    })
}
