//! Conversions between JS values and the Proxy-Wasm host's types: header maps, actions, local responses,
//! failures, log records and errors. Runs on the JS thread (the `*_to_js` builders) or anywhere (errors).

use std::ptr;

use bcv_core::proxy::{FailReason, FilterAction, HeaderMap, LocalResponse, LogRecord, ProxyError};
use napi::sys;

use crate::error::JsErr;
use crate::js;

/// Error codes of the Proxy-Wasm host (besides the shared `BCV_CLOSED`, `BCV_TIMEOUT`, `BCV_IO`,
/// `BCV_INVALID_ARGUMENT`, `BCV_CONFLICT` and `BCV_NOT_FOUND`).
pub(crate) const INVALID_MODULE: &str = "BCV_PROXY_INVALID_MODULE";
pub(crate) const VM_START: &str = "BCV_PROXY_VM_START";
pub(crate) const VM_FAILED: &str = "BCV_PROXY_VM_FAILED";
pub(crate) const PLUGIN_REJECTED: &str = "BCV_PROXY_PLUGIN_REJECTED";
pub(crate) const CONTEXT_FINISHED: &str = "BCV_PROXY_CONTEXT_FINISHED";
pub(crate) const REENTRANT: &str = "BCV_PROXY_REENTRANT";

/// A core error as a JS error with a stable code and the names it concerns as properties.
pub(crate) fn error(e: ProxyError) -> JsErr {
    let message = e.to_string();
    match e {
        ProxyError::InvalidModule { module, reason } => JsErr::new(INVALID_MODULE, message)
            .with_extra(serde_json::json!({ "module": module, "why": reason, "stage": "validate" })),
        ProxyError::Compile { module, reason } => JsErr::new(INVALID_MODULE, message)
            .with_extra(serde_json::json!({ "module": module, "why": reason, "stage": "compile" })),
        ProxyError::VmStart { vm, reason } => {
            JsErr::new(VM_START, message).with_extra(serde_json::json!({ "vm": vm, "why": reason }))
        }
        ProxyError::VmFailed { vm, reason } => {
            JsErr::new(VM_FAILED, message).with_extra(serde_json::json!({ "vm": vm, "failure": failure_json(&reason) }))
        }
        ProxyError::PluginRejected { plugin, reason } => {
            JsErr::new(PLUGIN_REJECTED, message).with_extra(serde_json::json!({ "plugin": plugin, "why": reason }))
        }
        ProxyError::InvalidState { context, reason } => {
            JsErr::new(CONTEXT_FINISHED, message).with_extra(serde_json::json!({ "context": context, "why": reason }))
        }
        ProxyError::Timeout { context } => {
            JsErr::new("BCV_TIMEOUT", message).with_extra(serde_json::json!({ "context": context }))
        }
        ProxyError::Reentrant { vm } => JsErr::new(REENTRANT, message).with_extra(serde_json::json!({ "vm": vm })),
        ProxyError::ModuleCache { path, .. } => {
            JsErr::new("BCV_IO", message).with_extra(serde_json::json!({ "path": path }))
        }
        ProxyError::Config(_) => JsErr::invalid(message),
        ProxyError::Closed(closed) => JsErr::closed(closed),
    }
}

/// The kind of a failure, as a stable camelCase name.
fn failure_kind(reason: &FailReason) -> &'static str {
    match reason {
        FailReason::Trap(_) => "trap",
        FailReason::CpuDeadline => "cpuDeadline",
        FailReason::MemoryLimit { .. } => "memoryLimit",
        FailReason::RestrictedHostcall { .. } => "restrictedHostcall",
        FailReason::ProcExit(_) => "procExit",
        FailReason::AllocatorFailed(_) => "allocatorFailed",
        FailReason::VmStartRefused => "vmStartRefused",
        FailReason::Internal(_) => "internal",
    }
}

/// Why a VM failed, as plain data: `{ kind, message }` plus `limit`, `function`/`phase` or `exitCode`.
pub(crate) fn failure_json(reason: &FailReason) -> serde_json::Value {
    let mut value = serde_json::json!({ "kind": failure_kind(reason), "message": reason.to_string() });
    let extra = match reason {
        FailReason::MemoryLimit { limit } => Some(("limit", serde_json::json!(limit))),
        FailReason::ProcExit(code) => Some(("exit_code", serde_json::json!(code))),
        FailReason::RestrictedHostcall { function, phase } => {
            if let Some(object) = value.as_object_mut() {
                object.insert("phase".into(), serde_json::json!(phase));
            }
            Some(("function", serde_json::json!(function)))
        }
        _ => None,
    };
    if let (Some((key, v)), Some(object)) = (extra, value.as_object_mut()) {
        object.insert(key.into(), v);
    }
    value
}

/// Text of bytes that should be text (header names and values, property segments); invalid UTF-8 is
/// replaced, as `Buffer.toString()` does.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Header pairs as a JS array of `[name, value]` strings, in order, duplicates kept.
pub(crate) fn headers_to_js(env: sys::napi_env, map: &HeaderMap) -> sys::napi_value {
    let pairs = map
        .pairs()
        .iter()
        .map(|(name, value)| js::array(env, vec![js::string(env, &text(name)), js::string(env, &text(value))]))
        .collect();
    js::array(env, pairs)
}

/// A header value: a string, bytes, or a number or boolean (written as text).
fn header_value(env: sys::napi_env, value: sys::napi_value, name: &str) -> Result<Vec<u8>, JsErr> {
    match js::type_of(env, value) {
        sys::ValueType::napi_string => Ok(js::get_string(env, value).into_bytes()),
        sys::ValueType::napi_number => Ok(format_number(js::get_number(env, value)).into_bytes()),
        sys::ValueType::napi_boolean => Ok(js::get_bool(env, value).to_string().into_bytes()),
        _ => js::get_bytes(env, value).ok_or_else(|| {
            JsErr::invalid(format!("the value of header {name:?} must be a string, a number or a Uint8Array"))
        }),
    }
}

/// A number as JS prints it for the integers headers carry (`5`, not `5.0`).
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// Own enumerable string keys of a plain object, in JS order.
pub(crate) fn own_keys(env: sys::napi_env, object: sys::napi_value) -> Vec<sys::napi_value> {
    let mut names = ptr::null_mut();
    let status = unsafe {
        sys::napi_get_all_property_names(
            env,
            object,
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::numbers_to_strings,
            &mut names,
        )
    };
    if status != sys::Status::napi_ok {
        return Vec::new();
    }
    js::elements(env, names)
}

/// Headers from JS: an array of `[name, value]` pairs (order and duplicates kept), or a plain object whose
/// values are a value or an array of values (one pair each); `null`/`undefined` is no headers. Values are
/// strings, `Uint8Array`s, numbers or booleans.
pub(crate) fn headers_from_js(env: sys::napi_env, value: sys::napi_value, what: &str) -> Result<HeaderMap, JsErr> {
    let mut map = HeaderMap::new();
    match js::type_of(env, value) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => return Ok(map),
        sys::ValueType::napi_object => {}
        _ => return Err(JsErr::invalid(format!("{what} must be an array of [name, value] pairs or an object"))),
    }
    if js::is_array(env, value) {
        for (i, pair) in js::elements(env, value).into_iter().enumerate() {
            let items = if js::is_array(env, pair) { js::elements(env, pair) } else { Vec::new() };
            let [name, v] = items.as_slice() else {
                return Err(JsErr::invalid(format!("{what}[{i}] must be a [name, value] pair")));
            };
            if js::type_of(env, *name) != sys::ValueType::napi_string {
                return Err(JsErr::invalid(format!("{what}[{i}]: a header name must be a string")));
            }
            let name = js::get_string(env, *name);
            let v = header_value(env, *v, &name)?;
            map.add(name, v);
        }
        return Ok(map);
    }
    for key in own_keys(env, value) {
        let name = js::get_string(env, key);
        let mut v = ptr::null_mut();
        if unsafe { sys::napi_get_property(env, value, key, &mut v) } != sys::Status::napi_ok {
            continue;
        }
        if js::is_array(env, v) {
            for item in js::elements(env, v) {
                let item = header_value(env, item, &name)?;
                map.add(&name, item);
            }
        } else {
            let item = header_value(env, v, &name)?;
            map.add(&name, item);
        }
    }
    Ok(map)
}

/// `[name, value]` string pairs (an environment, plugin properties given as text).
pub(crate) fn string_pairs(
    env: sys::napi_env,
    value: sys::napi_value,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, JsErr> {
    Ok(headers_from_js(env, value, what)?.into_pairs().into_iter().map(|(k, v)| (text(&k), v)).collect())
}

/// A local response as `{ status, details, body, headers, grpcStatus }`.
pub(crate) fn local_response_to_js(env: sys::napi_env, response: &LocalResponse) -> sys::napi_value {
    let object = js::object(env);
    js::set(env, object, "status", js::number(env, f64::from(response.status)));
    js::set(env, object, "details", js::string(env, &response.details));
    js::set(env, object, "body", js::buffer(env, &response.body));
    js::set(env, object, "headers", headers_to_js(env, &response.headers));
    let grpc = response.grpc_status.map_or_else(|| js::null(env), |s| js::number(env, f64::from(s)));
    js::set(env, object, "grpcStatus", grpc);
    object
}

/// An action as `{ action, localResponse }` (`localResponse` only for `'localResponse'`).
pub(crate) fn action_to_js(env: sys::napi_env, action: &FilterAction) -> sys::napi_value {
    let object = js::object(env);
    let name = match action {
        FilterAction::Continue => "continue",
        FilterAction::Pause => "pause",
        FilterAction::LocalResponse(_) => "localResponse",
        FilterAction::Close => "close",
    };
    js::set(env, object, "action", js::string(env, name));
    if let FilterAction::LocalResponse(response) = action {
        js::set(env, object, "localResponse", local_response_to_js(env, response));
    }
    object
}

/// A log record as `{ level, vmId, plugin, contextId, message }`.
pub(crate) fn log_record_to_js(env: sys::napi_env, record: &LogRecord) -> sys::napi_value {
    let object = js::object(env);
    js::set(env, object, "level", js::string(env, record.level.name()));
    js::set(env, object, "vmId", js::string(env, &record.vm_id));
    js::set(env, object, "plugin", js::string(env, &record.plugin));
    js::set(env, object, "contextId", js::number(env, f64::from(record.context_id)));
    js::set(env, object, "message", js::string(env, &record.message));
    object
}

/// Bytes a JS callback returned: a `Uint8Array`/`ArrayBuffer` or a string; `None` for `null`/`undefined`;
/// `Err` for anything else (a promise included: services answer synchronously).
pub(crate) fn returned_bytes(env: sys::napi_env, value: sys::napi_value) -> Result<Option<Vec<u8>>, String> {
    match js::type_of(env, value) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(None),
        sys::ValueType::napi_string => Ok(Some(js::get_string(env, value).into_bytes())),
        _ => {
            if let Some(bytes) = js::get_bytes(env, value) {
                return Ok(Some(bytes));
            }
            let then = js::get(env, value, "then");
            if js::type_of(env, then) == sys::ValueType::napi_function {
                return Err("it returned a promise; it must answer synchronously".into());
            }
            Err("it must return a Uint8Array, a string, or null".into())
        }
    }
}

/// A non-negative whole number of an option, checked.
pub(crate) fn whole(value: Option<f64>, what: &str) -> Result<Option<u64>, JsErr> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.007_199_254_740_991e15 => Ok(Some(v as u64)),
        Some(v) => Err(JsErr::invalid(format!("{what} must be a non-negative integer, got {v}"))),
    }
}

/// A duration option in milliseconds (fractions allowed), checked.
pub(crate) fn millis(value: Option<f64>, what: &str) -> Result<Option<std::time::Duration>, JsErr> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(crate::duration_from_ms(v))),
        Some(v) => Err(JsErr::invalid(format!("{what} must be a non-negative number of milliseconds, got {v}"))),
    }
}
