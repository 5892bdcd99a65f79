//! Core errors as JS errors (LIFETIMES.md N5).
//!
//! A [`JsErr`] is plain `Send` data, built wherever the error happened (often a runtime thread) and turned
//! into a JS object on the JS thread. `lib/index.js` installs a factory that builds instances of its error
//! classes (`ClosedError`, …); without it a plain `Error` with the same properties is made.
//!
//! Codes: `BCV_CLOSED` (with `reason`, and `upstream` for `UPSTREAM`), `BCV_BUSY`, `BCV_TIMEOUT`,
//! `BCV_WOULD_DEADLOCK`, `BCV_ALREADY_TAKEN`, `BCV_INVALID_ARGUMENT`, `BCV_IO`, `BCV_AUTH`, `BCV_CORRUPT`,
//! `BCV_STRICT` (strict-mode violation), `BCV_SHUTDOWN_TIMEOUT`, `BCV_INTERNAL`; from the block-cache VFS also
//! `BCV_CONFLICT` (a lost conditional write: an upload, or a `bcv_kv` commit, `SQLITE_BUSY_SNAPSHOT`),
//! `BCV_NOT_FOUND`, `BCV_ALREADY_EXISTS`, `BCV_UNSUPPORTED`, `BCV_JOB_FAILED`, and SQLite's own result-code
//! names (`SQLITE_CONSTRAINT_UNIQUE`, …) with the numeric extended code as `errcode`. Secure containers add
//! `BCV_AUTH` (wrong key, tampered data: `VfsError::Crypto`) and `BCV_SECURE` (a missing key, or a key for a
//! plaintext container); multi-process mode `BCV_READ_ONLY`, `BCV_DAEMON_GONE` and `BCV_DAEMON`; leases
//! `BCV_LEASE_HELD` (with `holder`, `expiresUnixMs`, `generation`) and `BCV_LEASE_LOST` (an unreadable lease
//! object is `BCV_CORRUPT`). The Proxy-Wasm host adds `BCV_PROXY_INVALID_MODULE`, `BCV_PROXY_VM_START`,
//! `BCV_PROXY_VM_FAILED`, `BCV_PROXY_PLUGIN_REJECTED`, `BCV_PROXY_CONTEXT_FINISHED` and `BCV_PROXY_REENTRANT`
//! (see `crate::proxy`; a `wait()` that runs out is `BCV_TIMEOUT`).

use std::ptr;

use bcv_core::handle::{CloseReason, CloseWaitError, Closed, Diagnostic, Error, Node, ShutdownError, WriteError};
use bcv_core::vfs::VfsError;
use libsqlite3_sys as ffi;
use napi::sys;

use crate::env::{EnvLocal, JsKey};
use crate::js;

/// An error on its way to JS.
pub(crate) struct JsErr {
    code: &'static str,
    message: String,
    closed: Option<Closed>,
    accepted: Option<usize>,
    stuck: Option<Box<[u64]>>,
    violation: Option<Box<Diagnostic>>,
    os_errno: Option<i32>,
    value: Option<Box<JsKey>>,
    /// The (extended) SQLite result code of an error that came from SQLite.
    sqlite_code: Option<i32>,
    /// More details as plain data (keys turned to camelCase), e.g. the holder of a lease.
    extra: Option<Box<serde_json::Value>>,
}

impl JsErr {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> JsErr {
        JsErr {
            code,
            message: message.into(),
            closed: None,
            accepted: None,
            stuck: None,
            violation: None,
            os_errno: None,
            value: None,
            sqlite_code: None,
            extra: None,
        }
    }

    /// Adds plain-data details (a JSON object whose keys become properties of the error).
    pub(crate) fn with_extra(mut self, extra: serde_json::Value) -> JsErr {
        self.extra = Some(Box::new(extra));
        self
    }

    /// `Closed{reason}` as `BCV_CLOSED`.
    pub(crate) fn closed(c: Closed) -> JsErr {
        let mut e = JsErr::new("BCV_CLOSED", c.to_string());
        e.closed = Some(c);
        e
    }

    /// A handle that was consumed (moved into a transformer or pipe): further use is `Closed{SELF}` (O1).
    pub(crate) fn consumed() -> JsErr {
        let mut e = JsErr::closed(Closed::new(CloseReason::SelfClosed));
        e.message = "closed: SELF (the handle was consumed by a transformer or pipe)".into();
        e
    }

    pub(crate) fn invalid(message: impl Into<String>) -> JsErr {
        JsErr::new("BCV_INVALID_ARGUMENT", message)
    }

    /// A wrong handle kind for the method called (a programming error).
    pub(crate) fn wrong_kind(method: &str, kind: &str) -> JsErr {
        JsErr::invalid(format!("{method}() is not available on a {kind}"))
    }

    pub(crate) fn from_napi(e: napi::Error) -> JsErr {
        JsErr::new("BCV_INTERNAL", e.reason.clone())
    }

    /// Hands a future's undelivered value back on the error (T29).
    pub(crate) fn with_value(mut self, key: JsKey) -> JsErr {
        self.value = Some(Box::new(key));
        self
    }

    /// A strict-mode violation raised at the next SDK call on this thread (LIFETIMES.md §5).
    pub(crate) fn strict(d: Diagnostic) -> JsErr {
        let mut e = JsErr::new("BCV_STRICT", format!("StrictModeViolation({}): {d}", d.kind.code()));
        e.violation = Some(Box::new(d));
        e
    }

    /// An error SQLite reported with `code`: named after the code (`SQLITE_CONSTRAINT_UNIQUE`), except
    /// `SQLITE_BUSY_SNAPSHOT`, which is `BCV_CONFLICT` (a `bcv_kv` commit or a WAL snapshot that another
    /// writer overtook: read again and retry).
    pub(crate) fn sqlite(code: i32, message: impl Into<String>) -> JsErr {
        let name = if code == ffi::SQLITE_BUSY_SNAPSHOT { "BCV_CONFLICT" } else { sqlite_code_name(code) };
        let mut e = JsErr::new(name, message);
        e.sqlite_code = Some(code);
        e
    }

    /// A VFS error raised by an operation on `node` (a VFS, a connection, a job): `VfsError::Closed` becomes
    /// `BCV_CLOSED` with the reason the node was closed for (`SELF` when it is not closed itself).
    pub(crate) fn vfs(e: VfsError, node: Option<&Node>) -> JsErr {
        if let VfsError::Closed(_) = e {
            let closed = node.and_then(Node::close_reason).unwrap_or(Closed::new(CloseReason::SelfClosed));
            let mut j = JsErr::closed(closed);
            j.message = format!("{e} ({})", closed.reason.name());
            return j;
        }
        JsErr::from(e)
    }

    /// Builds the JS error object (on the JS thread). Never fails: falls back to a bare `Error`.
    pub(crate) fn into_js(self, local: &EnvLocal) -> sys::napi_value {
        let env = local.raw();
        let details = js::object(env);
        if let Some(c) = self.closed {
            js::set(env, details, "reason", js::string(env, c.reason.name()));
            if let Some(up) = c.upstream {
                js::set(env, details, "upstream", js::string(env, up.name()));
            }
        }
        if let Some(n) = self.accepted {
            js::set(env, details, "accepted", js::number(env, n as f64));
        }
        if let Some(ids) = &self.stuck {
            let arr = js::array(env, ids.iter().map(|id| js::number(env, *id as f64)).collect());
            js::set(env, details, "stuckNodeIds", arr);
        }
        if let Some(d) = &self.violation {
            js::set(env, details, "violation", js::string(env, d.kind.code()));
            js::set(env, details, "nodeId", js::number(env, d.node_id as f64));
            js::set(env, details, "nodeLabel", js::string(env, d.node_label));
            if let Some(bt) = &d.creation_backtrace {
                js::set(env, details, "creationBacktrace", js::string(env, bt));
            }
        }
        if let Some(errno) = self.os_errno {
            js::set(env, details, "errno", js::number(env, errno as f64));
        }
        if let Some(code) = self.sqlite_code {
            js::set(env, details, "errcode", js::number(env, code as f64));
            js::set(env, details, "sqliteCode", js::string(env, sqlite_code_name(code)));
        }
        if let Some(extra) = &self.extra {
            js::assign(env, details, js::json(env, extra));
        }
        if let Some(key) = &self.value
            && let Ok(v) = local.take_value(key)
        {
            js::set(env, details, "value", v);
        }
        let message = js::string(env, &self.message);
        let code = js::string(env, self.code);
        if let Some(factory) = local.error_factory() {
            let mut out = ptr::null_mut();
            let args = [code, message, details];
            let status =
                unsafe { sys::napi_call_function(env, js::undefined(env), factory, 3, args.as_ptr(), &mut out) };
            if status == sys::Status::napi_ok && !out.is_null() {
                return out;
            }
            // A throwing factory must not leave an exception pending behind our rejection.
            let mut ignored = ptr::null_mut();
            unsafe { sys::napi_get_and_clear_last_exception(env, &mut ignored) };
        }
        let mut err = ptr::null_mut();
        unsafe { sys::napi_create_error(env, code, message, &mut err) };
        js::set(env, err, "code", code);
        js::assign(env, err, details);
        err
    }

    /// Throws this error on the JS thread; the returned `napi::Error` tells napi-rs it is pending.
    pub(crate) fn throw(self, local: &EnvLocal) -> napi::Error {
        let v = self.into_js(local);
        unsafe { sys::napi_throw(local.raw(), v) };
        napi::Error::new(napi::Status::PendingException, "bcv error thrown".to_string())
    }
}

impl From<Closed> for JsErr {
    fn from(c: Closed) -> JsErr {
        JsErr::closed(c)
    }
}

impl From<Error> for JsErr {
    fn from(e: Error) -> JsErr {
        let message = e.to_string();
        match e {
            Error::Closed(c) => JsErr::closed(c),
            Error::Busy(_) => JsErr::new("BCV_BUSY", message),
            Error::Timeout(_) => JsErr::new("BCV_TIMEOUT", message),
            Error::WouldDeadlock => JsErr::new("BCV_WOULD_DEADLOCK", message),
            Error::AlreadyTaken(_) => JsErr::new("BCV_ALREADY_TAKEN", message),
            Error::InvalidArgument(_) => JsErr::new("BCV_INVALID_ARGUMENT", message),
            Error::Io { source, .. } => {
                let mut j = JsErr::new("BCV_IO", message);
                j.os_errno = source.raw_os_error();
                j
            }
            Error::Authentication(_) => JsErr::new("BCV_AUTH", message),
            Error::Corrupt(_) => JsErr::new("BCV_CORRUPT", message),
            _ => JsErr::new("BCV_INTERNAL", message),
        }
    }
}

impl From<VfsError> for JsErr {
    fn from(e: VfsError) -> JsErr {
        let message = e.to_string();
        match e {
            // SQLite's own message, as SQLite users expect it (bcv's context is in the stack).
            VfsError::Sqlite { source, .. } => JsErr::sqlite(source.code, source.message),
            VfsError::Conflict { .. } => JsErr::new("BCV_CONFLICT", message),
            VfsError::NotFound { .. } | VfsError::NoSuchDatabase { .. } | VfsError::NoSuchAlias { .. } => {
                JsErr::new("BCV_NOT_FOUND", message)
            }
            VfsError::AlreadyExists { .. } | VfsError::DatabaseExists { .. } | VfsError::AliasInUse { .. } => {
                JsErr::new("BCV_ALREADY_EXISTS", message)
            }
            VfsError::Busy { .. } | VfsError::CacheBusy { .. } => JsErr::new("BCV_BUSY", message),
            VfsError::InvalidArgument(_) | VfsError::Config { .. } => JsErr::new("BCV_INVALID_ARGUMENT", message),
            VfsError::Closed(_) => JsErr::vfs(e, None),
            VfsError::Manifest { .. } | VfsError::CorruptBlock { .. } => JsErr::new("BCV_CORRUPT", message),
            VfsError::Io { source, .. } => {
                let mut j = JsErr::new("BCV_IO", message);
                j.os_errno = source.raw_os_error();
                j
            }
            VfsError::Store { .. } | VfsError::ShortRead { .. } => JsErr::new("BCV_IO", message),
            VfsError::ConditionalWritesUnsupported { .. } => JsErr::new("BCV_UNSUPPORTED", message),
            VfsError::Job(_) => JsErr::new("BCV_JOB_FAILED", message),
            VfsError::Runtime(inner) => JsErr::from(inner),
            // Secure containers: a wrong key or tampered data is an authentication failure.
            VfsError::Crypto { container, object, .. } => JsErr::new("BCV_AUTH", message)
                .with_extra(serde_json::json!({ "container": container, "object": object })),
            VfsError::Secure { container, .. } => {
                JsErr::new("BCV_SECURE", message).with_extra(serde_json::json!({ "container": container }))
            }
            // Multi-process mode.
            VfsError::ReadOnly { dir, .. } => {
                JsErr::new("BCV_READ_ONLY", message).with_extra(serde_json::json!({ "dir": dir.display().to_string() }))
            }
            VfsError::DaemonGone { dir, .. } => JsErr::new("BCV_DAEMON_GONE", message)
                .with_extra(serde_json::json!({ "dir": dir.display().to_string() })),
            VfsError::Daemon { dir, .. } => {
                JsErr::new("BCV_DAEMON", message).with_extra(serde_json::json!({ "dir": dir.display().to_string() }))
            }
            // Leases.
            VfsError::LeaseHeld { container, holder, until_unix_ms, generation, .. } => {
                JsErr::new("BCV_LEASE_HELD", message).with_extra(serde_json::json!({
                    "container": container,
                    "holder": holder,
                    "expires_unix_ms": until_unix_ms,
                    "generation": generation,
                }))
            }
            VfsError::LeaseLost { container, .. } => {
                JsErr::new("BCV_LEASE_LOST", message).with_extra(serde_json::json!({ "container": container }))
            }
            VfsError::LeaseObject { container, .. } => {
                JsErr::new("BCV_CORRUPT", message).with_extra(serde_json::json!({ "container": container }))
            }
            _ => JsErr::new("BCV_INTERNAL", message),
        }
    }
}

/// Lists SQLite result codes by their C names.
macro_rules! sqlite_codes {
    ($code:expr; $($name:ident)*) => {
        match $code {
            $(ffi::$name => stringify!($name),)*
            _ => "",
        }
    };
}

/// The C name of an SQLite result code (extended codes included), e.g. `SQLITE_CONSTRAINT_UNIQUE`; an
/// unknown extended code gets its primary code's name.
pub(crate) fn sqlite_code_name(code: i32) -> &'static str {
    let name = sqlite_codes!(code;
        SQLITE_OK SQLITE_ERROR SQLITE_INTERNAL SQLITE_PERM SQLITE_ABORT SQLITE_BUSY SQLITE_LOCKED SQLITE_NOMEM
        SQLITE_READONLY SQLITE_INTERRUPT SQLITE_IOERR SQLITE_CORRUPT SQLITE_NOTFOUND SQLITE_FULL SQLITE_CANTOPEN
        SQLITE_PROTOCOL SQLITE_EMPTY SQLITE_SCHEMA SQLITE_TOOBIG SQLITE_CONSTRAINT SQLITE_MISMATCH SQLITE_MISUSE
        SQLITE_NOLFS SQLITE_AUTH SQLITE_FORMAT SQLITE_RANGE SQLITE_NOTADB SQLITE_NOTICE SQLITE_WARNING SQLITE_ROW
        SQLITE_DONE
        SQLITE_ERROR_MISSING_COLLSEQ SQLITE_ERROR_RETRY SQLITE_ERROR_SNAPSHOT
        SQLITE_IOERR_READ SQLITE_IOERR_SHORT_READ SQLITE_IOERR_WRITE SQLITE_IOERR_FSYNC SQLITE_IOERR_DIR_FSYNC
        SQLITE_IOERR_TRUNCATE SQLITE_IOERR_FSTAT SQLITE_IOERR_UNLOCK SQLITE_IOERR_RDLOCK SQLITE_IOERR_DELETE
        SQLITE_IOERR_BLOCKED SQLITE_IOERR_NOMEM SQLITE_IOERR_ACCESS SQLITE_IOERR_CHECKRESERVEDLOCK
        SQLITE_IOERR_LOCK SQLITE_IOERR_CLOSE SQLITE_IOERR_DIR_CLOSE SQLITE_IOERR_SHMOPEN SQLITE_IOERR_SHMSIZE
        SQLITE_IOERR_SHMLOCK SQLITE_IOERR_SHMMAP SQLITE_IOERR_SEEK SQLITE_IOERR_DELETE_NOENT SQLITE_IOERR_MMAP
        SQLITE_IOERR_GETTEMPPATH SQLITE_IOERR_CONVPATH SQLITE_IOERR_VNODE SQLITE_IOERR_AUTH
        SQLITE_IOERR_BEGIN_ATOMIC SQLITE_IOERR_COMMIT_ATOMIC SQLITE_IOERR_ROLLBACK_ATOMIC SQLITE_IOERR_DATA
        SQLITE_IOERR_CORRUPTFS SQLITE_IOERR_IN_PAGE
        SQLITE_LOCKED_SHAREDCACHE SQLITE_LOCKED_VTAB
        SQLITE_BUSY_RECOVERY SQLITE_BUSY_SNAPSHOT SQLITE_BUSY_TIMEOUT
        SQLITE_CANTOPEN_NOTEMPDIR SQLITE_CANTOPEN_ISDIR SQLITE_CANTOPEN_FULLPATH SQLITE_CANTOPEN_CONVPATH
        SQLITE_CANTOPEN_SYMLINK
        SQLITE_CORRUPT_VTAB SQLITE_CORRUPT_SEQUENCE SQLITE_CORRUPT_INDEX
        SQLITE_READONLY_RECOVERY SQLITE_READONLY_CANTLOCK SQLITE_READONLY_ROLLBACK SQLITE_READONLY_DBMOVED
        SQLITE_READONLY_CANTINIT SQLITE_READONLY_DIRECTORY
        SQLITE_ABORT_ROLLBACK
        SQLITE_CONSTRAINT_CHECK SQLITE_CONSTRAINT_COMMITHOOK SQLITE_CONSTRAINT_FOREIGNKEY
        SQLITE_CONSTRAINT_FUNCTION SQLITE_CONSTRAINT_NOTNULL SQLITE_CONSTRAINT_PRIMARYKEY
        SQLITE_CONSTRAINT_TRIGGER SQLITE_CONSTRAINT_UNIQUE SQLITE_CONSTRAINT_VTAB SQLITE_CONSTRAINT_ROWID
        SQLITE_CONSTRAINT_PINNED SQLITE_CONSTRAINT_DATATYPE
        SQLITE_NOTICE_RECOVER_WAL SQLITE_NOTICE_RECOVER_ROLLBACK
        SQLITE_WARNING_AUTOINDEX
        SQLITE_AUTH_USER
    );
    match name {
        "" if code & 0xff != code => sqlite_code_name(code & 0xff),
        "" => "SQLITE_UNKNOWN",
        n => n,
    }
}

impl From<WriteError> for JsErr {
    fn from(e: WriteError) -> JsErr {
        let mut j = JsErr::from(e.error);
        j.accepted = Some(e.accepted);
        j
    }
}

impl From<CloseWaitError> for JsErr {
    fn from(e: CloseWaitError) -> JsErr {
        match e {
            CloseWaitError::Timeout => JsErr::new("BCV_TIMEOUT", e.to_string()),
            CloseWaitError::WouldDeadlock => JsErr::new("BCV_WOULD_DEADLOCK", e.to_string()),
        }
    }
}

impl From<ShutdownError> for JsErr {
    fn from(e: ShutdownError) -> JsErr {
        let message = e.to_string();
        match e {
            ShutdownError::Timeout { stuck_node_ids } => {
                let mut j = JsErr::new("BCV_SHUTDOWN_TIMEOUT", message);
                j.stuck = Some(stuck_node_ids.into_boxed_slice());
                j
            }
            ShutdownError::WouldDeadlock => JsErr::new("BCV_WOULD_DEADLOCK", message),
        }
    }
}
