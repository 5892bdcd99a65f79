//! Core errors as JS errors (LIFETIMES.md N5).
//!
//! A [`JsErr`] is plain `Send` data, built wherever the error happened (often a runtime thread) and turned
//! into a JS object on the JS thread. `lib/index.js` installs a factory that builds instances of its error
//! classes (`ClosedError`, …); without it a plain `Error` with the same properties is made.
//!
//! Codes: `BCV_CLOSED` (with `reason`, and `upstream` for `UPSTREAM`), `BCV_BUSY`, `BCV_TIMEOUT`,
//! `BCV_WOULD_DEADLOCK`, `BCV_ALREADY_TAKEN`, `BCV_INVALID_ARGUMENT`, `BCV_IO`, `BCV_AUTH`, `BCV_CORRUPT`,
//! `BCV_STRICT` (strict-mode violation), `BCV_SHUTDOWN_TIMEOUT`, `BCV_INTERNAL`.

use std::ptr;

use bcv_core::handle::{CloseReason, CloseWaitError, Closed, Diagnostic, Error, ShutdownError, WriteError};
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
        }
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
