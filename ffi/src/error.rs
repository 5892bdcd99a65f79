//! Status codes, close reasons and the thread-local error message.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use bcv_core::handle::{Closed, Error};
use bcv_core::proxy::ProxyError;
use bcv_core::vfs::VfsError;
use bcv_core::vfs::container::ManifestError;

/// A status code: `BCV_OK` (0), `BCV_EOF` (1) or a negative `BCV_E_*` error.
pub type bcv_status_t = i32;

/// Success.
pub const BCV_OK: bcv_status_t = 0;
/// Clean end of stream: the writer finished.
pub const BCV_EOF: bcv_status_t = 1;
/// The node or stream is closed or was cut short; see `bcv_close_reason`. Never a clean end.
pub const BCV_E_CLOSED: bcv_status_t = -1;
/// The handle is 0, was released, or was consumed by another call.
pub const BCV_E_BAD_HANDLE: bcv_status_t = -2;
/// Another read (or write) is in progress on this stream end; or a database or container is in use (an open
/// connection or transaction, local changes not uploaded): the message says which and why.
pub const BCV_E_BUSY: bcv_status_t = -3;
/// The time limit passed; nothing was lost and the call may be retried.
pub const BCV_E_TIMEOUT: bcv_status_t = -4;
/// Waiting on this thread could deadlock (an SDK callback or executor thread).
pub const BCV_E_WOULD_DEADLOCK: bcv_status_t = -5;
/// An argument is invalid (NULL pointer, bad key length, bad address…).
pub const BCV_E_INVALID: bcv_status_t = -6;
/// An operating-system I/O error; the message names the object.
pub const BCV_E_IO: bcv_status_t = -7;
/// Encrypted input failed authentication (wrong key, tampered or truncated).
pub const BCV_E_AUTH: bcv_status_t = -8;
/// Compressed or framed input is corrupt.
pub const BCV_E_CORRUPT: bcv_status_t = -9;
/// A child that can be taken once was already taken.
pub const BCV_E_ALREADY_TAKEN: bcv_status_t = -10;
/// The handle is of another kind than this function expects.
pub const BCV_E_WRONG_TYPE: bcv_status_t = -11;
/// A strict-mode violation was recorded on this thread (`bcv_strict_check`).
pub const BCV_E_STRICT: bcv_status_t = -12;
/// No such object, database or container alias (a container that was never created has no manifest).
pub const BCV_E_NOT_FOUND: bcv_status_t = -13;
/// Someone else changed the container's manifest (or the database) since this client read it: poll and
/// retry. No local change is lost; revert it to take the other client's version instead.
pub const BCV_E_CONFLICT: bcv_status_t = -14;
/// It already exists: a container, a database of that name, or an attached alias.
pub const BCV_E_EXISTS: bcv_status_t = -15;
/// The cache directory is owned by another process (or another VFS in this one).
pub const BCV_E_CACHE_BUSY: bcv_status_t = -16;
/// An object-store request failed after retries (network, server error, credentials refused), or the store
/// does not honour conditional writes. The message names the container, the object and the cause.
pub const BCV_E_STORE: bcv_status_t = -17;
/// An SQLite call made by bcv itself (the cache index, bcv_kv) failed; the message has SQLite's.
pub const BCV_E_SQLITE: bcv_status_t = -18;
/// A secure container was attached without a key, or a plaintext one with a key, or a daemon has no key for
/// it (a wrong key or tampered data is `BCV_E_AUTH`). The message names the container.
pub const BCV_E_SECURE: bcv_status_t = -19;
/// A client of a multi-process daemon tried to write (upload, copy, delete, a write transaction): daemon
/// clients are read-only.
pub const BCV_E_READ_ONLY: bcv_status_t = -20;
/// The daemon this VFS is a client of stopped or restarted; the next call reconnects.
pub const BCV_E_DAEMON_GONE: bcv_status_t = -21;
/// The daemon refused or failed a client's request; the message is the daemon's.
pub const BCV_E_DAEMON: bcv_status_t = -22;
/// Another client holds the container's lease: the message names the holder and its expiry. Nothing was
/// written.
pub const BCV_E_LEASE_HELD: bcv_status_t = -23;
/// This client's lease expired, was released, or was taken over (the message names the new holder); nothing
/// was written.
pub const BCV_E_LEASE_LOST: bcv_status_t = -24;
/// A Proxy-Wasm module was refused: not WebAssembly, no known ABI version marker, no allocator, no memory,
/// or imports the host does not provide. The message names the module and the reason.
pub const BCV_E_PROXY_INVALID_MODULE: bcv_status_t = -25;
/// A Proxy-Wasm plugin was not accepted: its canary or its real `on_vm_start` / `on_configure` failed or
/// returned false. The VM keeps working for its other plugins.
pub const BCV_E_PROXY_PLUGIN_REJECTED: bcv_status_t = -26;
/// A Proxy-Wasm VM could not start (instantiation, start functions) or has failed (trap, CPU deadline, memory
/// cap…); the message has the reason, `bcv_proxy_vm_failure` too. The host and other VMs keep working.
pub const BCV_E_PROXY_VM_FAILED: bcv_status_t = -27;
/// A call on a Proxy-Wasm stream context that has finished (`bcv_proxy_http_finish`, or its plugin's
/// `proxy_done`).
pub const BCV_E_PROXY_FINISHED: bcv_status_t = -28;
/// A bug in bcv (a caught panic); the message says where.
pub const BCV_E_INTERNAL: bcv_status_t = -99;

/// Close reasons (stable values, see LIFETIMES.md §1).
pub const BCV_REASON_NONE: u32 = 0;
/// This handle was closed.
pub const BCV_REASON_SELF: u32 = 1;
/// A parent was closed (cascade).
pub const BCV_REASON_PARENT: u32 = 2;
/// The other end was released or closed without finishing.
pub const BCV_REASON_PEER_DROPPED: u32 = 3;
/// The runtime was shut down.
pub const BCV_REASON_RUNTIME_SHUTDOWN: u32 = 4;
/// The last handle was released while an operation was in flight.
pub const BCV_REASON_HANDLE_RELEASED: u32 = 5;
/// An upstream stage failed; the upstream reason is reported separately.
pub const BCV_REASON_UPSTREAM: u32 = 6;
/// The owning scope exited.
pub const BCV_REASON_SCOPE_EXITED: u32 = 7;
/// A sibling needed for this result was closed.
pub const BCV_REASON_ABANDONED: u32 = 8;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static LAST_CLOSED: RefCell<Option<(u64, Closed)>> = const { RefCell::new(None) };
}

pub(crate) fn set_message(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

pub(crate) fn last_closed_for(handle: u64) -> Option<Closed> {
    LAST_CLOSED.try_with(|c| c.borrow().filter(|(h, _)| *h == handle).map(|(_, c)| c)).ok().flatten()
}

/// Records `error` as this thread's last error and returns its status code.
pub(crate) fn fail(handle: u64, error: &Error) -> bcv_status_t {
    set_message(&error.to_string());
    if let Error::Closed(c) = error {
        let _ = LAST_CLOSED.try_with(|l| *l.borrow_mut() = Some((handle, *c)));
    }
    handle_status(error)
}

/// The status code of a handle-runtime error.
fn handle_status(error: &Error) -> bcv_status_t {
    match error {
        Error::Closed(_) => BCV_E_CLOSED,
        Error::Busy(_) => BCV_E_BUSY,
        Error::Timeout(_) => BCV_E_TIMEOUT,
        Error::WouldDeadlock => BCV_E_WOULD_DEADLOCK,
        Error::AlreadyTaken(_) => BCV_E_ALREADY_TAKEN,
        Error::InvalidArgument(_) => BCV_E_INVALID,
        Error::Io { .. } => BCV_E_IO,
        Error::Authentication(_) => BCV_E_AUTH,
        Error::Corrupt(_) => BCV_E_CORRUPT,
        _ => BCV_E_INTERNAL,
    }
}

/// The status code of a block-cache VFS error.
pub(crate) fn vfs_status(error: &VfsError) -> bcv_status_t {
    match error {
        // The manifest refusing a change names a database or an argument, not corruption.
        VfsError::Manifest { source, .. } => match source {
            ManifestError::NoSuchDatabase { .. } | ManifestError::NoSuchDatabaseId { .. } => BCV_E_NOT_FOUND,
            ManifestError::DatabaseExists { .. } => BCV_E_EXISTS,
            ManifestError::InvalidName { .. } | ManifestError::BadBlockSize(_) | ManifestError::BadNameBytes(_) => {
                BCV_E_INVALID
            }
            _ => BCV_E_CORRUPT,
        },
        VfsError::CorruptBlock { .. } => BCV_E_CORRUPT,
        VfsError::Store { .. } | VfsError::ShortRead { .. } | VfsError::ConditionalWritesUnsupported { .. } => {
            BCV_E_STORE
        }
        VfsError::NotFound { .. } | VfsError::NoSuchDatabase { .. } | VfsError::NoSuchAlias { .. } => BCV_E_NOT_FOUND,
        VfsError::Conflict { .. } => BCV_E_CONFLICT,
        VfsError::AlreadyExists { .. } | VfsError::DatabaseExists { .. } | VfsError::AliasInUse { .. } => BCV_E_EXISTS,
        VfsError::Config { .. } | VfsError::InvalidArgument(_) => BCV_E_INVALID,
        VfsError::CacheBusy { .. } => BCV_E_CACHE_BUSY,
        VfsError::Io { .. } => BCV_E_IO,
        VfsError::Sqlite { .. } => BCV_E_SQLITE,
        VfsError::Busy { .. } => BCV_E_BUSY,
        VfsError::Closed(_) => BCV_E_CLOSED,
        VfsError::Runtime(e) => handle_status(e),
        // A failed job waited on a second time: only its message is left (`bcv_job_wait` keeps the first code).
        VfsError::Job(_) => BCV_E_STORE,
        VfsError::Crypto { .. } => BCV_E_AUTH,
        VfsError::Secure { .. } => BCV_E_SECURE,
        VfsError::ReadOnly { .. } => BCV_E_READ_ONLY,
        VfsError::DaemonGone { .. } => BCV_E_DAEMON_GONE,
        VfsError::Daemon { .. } => BCV_E_DAEMON,
        VfsError::LeaseHeld { .. } => BCV_E_LEASE_HELD,
        VfsError::LeaseLost { .. } => BCV_E_LEASE_LOST,
        VfsError::LeaseObject { .. } => BCV_E_CORRUPT,
        _ => BCV_E_INTERNAL,
    }
}

/// Records a block-cache VFS error (its message is the error's text) and returns its status code.
pub(crate) fn fail_vfs(error: &VfsError) -> bcv_status_t {
    fail_with(vfs_status(error), &error.to_string())
}

/// `BCV_OK` for `Ok`, otherwise the error's status with its message recorded (the value is dropped).
pub(crate) fn status_of<T>(result: Result<T, VfsError>) -> bcv_status_t {
    match result {
        Ok(_) => BCV_OK,
        Err(e) => fail_vfs(&e),
    }
}

/// The status code of a Proxy-Wasm host error. A wait that ran out of time is `BCV_E_TIMEOUT` and a call back
/// into the VM running the callback is `BCV_E_WOULD_DEADLOCK`, as everywhere else in the ABI.
pub(crate) fn proxy_status(error: &ProxyError) -> bcv_status_t {
    match error {
        ProxyError::InvalidModule { .. } | ProxyError::Compile { .. } => BCV_E_PROXY_INVALID_MODULE,
        ProxyError::VmStart { .. } | ProxyError::VmFailed { .. } => BCV_E_PROXY_VM_FAILED,
        ProxyError::PluginRejected { .. } => BCV_E_PROXY_PLUGIN_REJECTED,
        ProxyError::InvalidState { .. } => BCV_E_PROXY_FINISHED,
        ProxyError::Timeout { .. } => BCV_E_TIMEOUT,
        ProxyError::Reentrant { .. } => BCV_E_WOULD_DEADLOCK,
        ProxyError::ModuleCache { .. } => BCV_E_IO,
        ProxyError::Config(_) => BCV_E_INVALID,
        ProxyError::Closed(_) => BCV_E_CLOSED,
    }
}

/// Records a Proxy-Wasm host error met by a call on `handle` (a close also for `bcv_close_reason`) and
/// returns its status code.
pub(crate) fn fail_proxy(handle: u64, error: &ProxyError) -> bcv_status_t {
    if let ProxyError::Closed(closed) = error {
        return fail(handle, &Error::Closed(*closed));
    }
    fail_with(proxy_status(error), &error.to_string())
}

/// Records an error status with a message and returns it.
pub(crate) fn fail_with(code: bcv_status_t, msg: &str) -> bcv_status_t {
    set_message(msg);
    code
}

/// Runs an `extern "C"` body, turning a panic into `BCV_E_INTERNAL` (C3).
pub(crate) fn guard(body: impl FnOnce() -> bcv_status_t) -> bcv_status_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail_with(BCV_E_INTERNAL, &format!("internal error (caught panic): {what}"))
        }
    }
}

/// The message of the last error on the calling thread ("" if none). Borrowed: valid until the next bcv
/// call on this thread; never free it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_last_error_message() -> *const c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// The stable name of a status code ("BCV_E_CLOSED"…). Static storage; never free it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_status_name(status: bcv_status_t) -> *const c_char {
    status_cname(status).as_ptr()
}

/// The stable name of a status code.
pub(crate) fn status_cname(status: bcv_status_t) -> &'static std::ffi::CStr {
    match status {
        BCV_OK => c"BCV_OK",
        BCV_EOF => c"BCV_EOF",
        BCV_E_CLOSED => c"BCV_E_CLOSED",
        BCV_E_BAD_HANDLE => c"BCV_E_BAD_HANDLE",
        BCV_E_BUSY => c"BCV_E_BUSY",
        BCV_E_TIMEOUT => c"BCV_E_TIMEOUT",
        BCV_E_WOULD_DEADLOCK => c"BCV_E_WOULD_DEADLOCK",
        BCV_E_INVALID => c"BCV_E_INVALID",
        BCV_E_IO => c"BCV_E_IO",
        BCV_E_AUTH => c"BCV_E_AUTH",
        BCV_E_CORRUPT => c"BCV_E_CORRUPT",
        BCV_E_ALREADY_TAKEN => c"BCV_E_ALREADY_TAKEN",
        BCV_E_WRONG_TYPE => c"BCV_E_WRONG_TYPE",
        BCV_E_STRICT => c"BCV_E_STRICT",
        BCV_E_NOT_FOUND => c"BCV_E_NOT_FOUND",
        BCV_E_CONFLICT => c"BCV_E_CONFLICT",
        BCV_E_EXISTS => c"BCV_E_EXISTS",
        BCV_E_CACHE_BUSY => c"BCV_E_CACHE_BUSY",
        BCV_E_STORE => c"BCV_E_STORE",
        BCV_E_SQLITE => c"BCV_E_SQLITE",
        BCV_E_SECURE => c"BCV_E_SECURE",
        BCV_E_READ_ONLY => c"BCV_E_READ_ONLY",
        BCV_E_DAEMON_GONE => c"BCV_E_DAEMON_GONE",
        BCV_E_DAEMON => c"BCV_E_DAEMON",
        BCV_E_LEASE_HELD => c"BCV_E_LEASE_HELD",
        BCV_E_LEASE_LOST => c"BCV_E_LEASE_LOST",
        BCV_E_PROXY_INVALID_MODULE => c"BCV_E_PROXY_INVALID_MODULE",
        BCV_E_PROXY_PLUGIN_REJECTED => c"BCV_E_PROXY_PLUGIN_REJECTED",
        BCV_E_PROXY_VM_FAILED => c"BCV_E_PROXY_VM_FAILED",
        BCV_E_PROXY_FINISHED => c"BCV_E_PROXY_FINISHED",
        BCV_E_INTERNAL => c"BCV_E_INTERNAL",
        _ => c"BCV_E_UNKNOWN",
    }
}

/// The stable name of a close reason ("PEER_DROPPED"…). Static storage; never free it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcv_reason_name(reason: u32) -> *const c_char {
    let name: &'static std::ffi::CStr = match reason {
        BCV_REASON_SELF => c"SELF",
        BCV_REASON_PARENT => c"PARENT",
        BCV_REASON_PEER_DROPPED => c"PEER_DROPPED",
        BCV_REASON_RUNTIME_SHUTDOWN => c"RUNTIME_SHUTDOWN",
        BCV_REASON_HANDLE_RELEASED => c"HANDLE_RELEASED",
        BCV_REASON_UPSTREAM => c"UPSTREAM",
        BCV_REASON_SCOPE_EXITED => c"SCOPE_EXITED",
        BCV_REASON_ABANDONED => c"ABANDONED",
        _ => c"NONE",
    };
    name.as_ptr()
}
