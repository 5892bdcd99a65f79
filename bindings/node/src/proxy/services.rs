//! A VM's services written in JS: HTTP and gRPC callouts, properties, foreign functions and the log sink.
//!
//! The VM calls its services on the thread that runs the plugin (a pool thread, the VM's driver thread, or
//! the reaper finishing a context), with the VM busy. JS only runs on the JS thread, so:
//!
//! * callouts and log records are handed to the JS thread through the env's bridge and the plugin goes on
//!   at once (fire and forget): a callout's JS function gets a [`CalloutReplyHandle`] it may answer at any
//!   later time, from any async code;
//! * properties and foreign functions must answer before the plugin continues: the calling thread queues
//!   the call for the JS thread (see [`crate::callable`]) and waits for it, at most for the host's callback
//!   deadline (a plugin may not run longer anyway); past it the call is abandoned (skipped if it has not
//!   started) and the plugin sees the property as not found, the foreign function as failed. The JS thread
//!   never waits for a VM itself (every VM call is a promise), so it is normally free to answer at once.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bcv_core::proxy::{
    CalloutRejected, CalloutReply, CalloutResponse, ForeignError, GrpcCallout, GrpcResponse, HttpCallout, LogRecord,
    PropertyRequest, Services,
};
use napi::bindgen_prelude::{ToNapiValue, Unknown};
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use super::convert::{headers_from_js, headers_to_js, log_record_to_js, own_keys, returned_bytes, text};
use crate::callable::{JsCallable, Outcome, Thrown, call};
use crate::env::{Bridge, EnvLocal, JsKey};
use crate::error::JsErr;
use crate::handle::enter;
use crate::js;

/// A JS function called fire-and-forget from any thread: the call is posted to the JS thread and the
/// caller does not wait.
struct JsFn {
    key: JsKey,
    bridge: Weak<Bridge>,
}

impl JsFn {
    fn new(local: &EnvLocal, value: sys::napi_value) -> napi::Result<JsFn> {
        Ok(JsFn { key: local.park_value(value)?, bridge: Arc::downgrade(&local.bridge) })
    }

    /// Posts `f(env, function)` to the JS thread. False when the env is gone (nothing will run).
    fn post(&self, f: impl FnOnce(sys::napi_env, sys::napi_value) + Send + 'static) -> bool {
        let Some(bridge) = self.bridge.upgrade() else { return false };
        let id = self.key.id;
        bridge.post(Box::new(move |local: &EnvLocal| {
            if let Some(function) = local.peek_value(id) {
                f(local.raw(), function);
            }
        }))
    }
}

/// Calls `function(args…)` on the JS thread. `lib/proxy.js` wraps every service function so that it never
/// throws here (a callout's error fails the callout, a log sink's error is rethrown on the next tick); an
/// exception that still arrives is cleared, never left pending.
fn call_quietly(env: sys::napi_env, function: sys::napi_value, args: &[sys::napi_value]) {
    let _ = call(env, js::undefined(env), function, args);
}

/// The answer channel of a callout, handed to the callout's JS function. Answer it once, at any time:
/// `respond(response)` or `fail()`. Garbage-collecting it unanswered fails the call; a reply after the
/// plugin's timeout is ignored.
#[napi]
pub struct CalloutReplyHandle {
    reply: Mutex<Option<CalloutReply>>,
    grpc: bool,
}

impl CalloutReplyHandle {
    fn take(&self, local: &EnvLocal) -> napi::Result<CalloutReply> {
        self.reply
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| JsErr::new("BCV_ALREADY_TAKEN", "the callout was already answered").throw(local))
    }
}

/// A field of a JS object that must be bytes or text (absent: empty).
fn bytes_field(env: sys::napi_env, object: sys::napi_value, key: &str) -> Result<Vec<u8>, JsErr> {
    let value = js::get(env, object, key);
    returned_bytes(env, value)
        .map(Option::unwrap_or_default)
        .map_err(|_| JsErr::invalid(format!("{key} must be a Uint8Array or a string")))
}

/// A numeric field (absent: `default`).
fn number_field(env: sys::napi_env, object: sys::napi_value, key: &str, default: u32) -> Result<u32, JsErr> {
    let value = js::get(env, object, key);
    match js::type_of(env, value) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(default),
        sys::ValueType::napi_number => {
            let n = js::get_number(env, value);
            if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
                Ok(n as u32)
            } else {
                Err(JsErr::invalid(format!("{key} must be a non-negative integer, got {n}")))
            }
        }
        _ => Err(JsErr::invalid(format!("{key} must be a number"))),
    }
}

#[napi]
impl CalloutReplyHandle {
    /// True for the reply of a gRPC callout.
    #[napi(getter)]
    pub fn grpc(&self) -> bool {
        self.grpc
    }

    /// True once `respond()` or `fail()` was called.
    #[napi(getter)]
    pub fn answered(&self) -> bool {
        self.reply.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Delivers the response to the plugin. HTTP: `{ status = 200, headers, body, trailers }` (`status`
    /// becomes the `:status` header unless `headers` has one). gRPC: `{ status = 0, statusMessage,
    /// initialMetadata, message, trailingMetadata }` (the message reaches the plugin only with status 0).
    /// Throws `BCV_ALREADY_TAKEN` when the callout was already answered, `BCV_INVALID_ARGUMENT` for a
    /// malformed response (the callout stays unanswered).
    #[napi(ts_args_type = "response: object")]
    pub fn respond(&self, env: Env, response: Unknown) -> napi::Result<()> {
        let local = enter(&env)?;
        let raw = local.raw();
        let object = response.raw();
        if js::type_of(raw, object) != sys::ValueType::napi_object {
            return Err(JsErr::invalid("a callout response must be an object").throw(&local));
        }
        if self.grpc {
            let parsed = (|| -> Result<GrpcResponse, JsErr> {
                let message = js::get(raw, object, "statusMessage");
                Ok(GrpcResponse {
                    status: number_field(raw, object, "status", 0)?,
                    status_message: match js::type_of(raw, message) {
                        sys::ValueType::napi_string => js::get_string(raw, message),
                        _ => String::new(),
                    },
                    initial_metadata: headers_from_js(raw, js::get(raw, object, "initialMetadata"), "initialMetadata")?,
                    message: bytes_field(raw, object, "message")?,
                    trailing_metadata: headers_from_js(
                        raw,
                        js::get(raw, object, "trailingMetadata"),
                        "trailingMetadata",
                    )?,
                })
            })()
            .map_err(|e| e.throw(&local))?;
            self.take(&local)?.respond_grpc(parsed);
        } else {
            let parsed = (|| -> Result<CalloutResponse, JsErr> {
                let status = number_field(raw, object, "status", 200)?;
                let mut headers = headers_from_js(raw, js::get(raw, object, "headers"), "headers")?;
                if headers.get(b":status").is_none() {
                    let mut with_status = bcv_core::proxy::HeaderMap::new();
                    with_status.add(":status", status.to_string());
                    for (name, value) in headers.into_pairs() {
                        with_status.add(name, value);
                    }
                    headers = with_status;
                }
                Ok(CalloutResponse {
                    headers,
                    body: bytes_field(raw, object, "body")?,
                    trailers: headers_from_js(raw, js::get(raw, object, "trailers"), "trailers")?,
                })
            })()
            .map_err(|e| e.throw(&local))?;
            self.take(&local)?.respond(parsed);
        }
        Ok(())
    }

    /// Tells the plugin the call failed (HTTP: no response; gRPC: status 14, UNAVAILABLE). Throws
    /// `BCV_ALREADY_TAKEN` when the callout was already answered.
    #[napi]
    pub fn fail(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        self.take(&local)?.fail();
        Ok(())
    }
}

/// Wraps a callout's reply as a JS object (on the JS thread).
fn reply_to_js(env: sys::napi_env, reply: CalloutReply, grpc: bool) -> sys::napi_value {
    let handle = CalloutReplyHandle { reply: Mutex::new(Some(reply)), grpc };
    // SAFETY: called on the JS thread of `env`, as napi-rs's own conversions are.
    unsafe { <CalloutReplyHandle as ToNapiValue>::to_napi_value(env, handle) }.unwrap_or_else(|_| js::undefined(env))
}

fn millis_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The JS view of an HTTP callout (`reply` goes separately).
fn http_info(env: sys::napi_env, call: &HttpCallout) -> sys::napi_value {
    let object = js::object(env);
    js::set(env, object, "callId", js::number(env, f64::from(call.call_id)));
    js::set(env, object, "upstream", js::string(env, &call.upstream));
    js::set(env, object, "plugin", js::string(env, &call.plugin));
    for (key, header) in [("method", ":method"), ("path", ":path"), ("authority", ":authority")] {
        let value = call.headers.get(header.as_bytes()).map_or_else(|| js::null(env), |v| js::string(env, &text(v)));
        js::set(env, object, key, value);
    }
    js::set(env, object, "headers", headers_to_js(env, &call.headers));
    js::set(env, object, "body", js::buffer(env, &call.body));
    js::set(env, object, "trailers", headers_to_js(env, &call.trailers));
    js::set(env, object, "timeoutMs", js::number(env, millis_of(call.timeout)));
    object
}

/// The JS view of a gRPC callout.
fn grpc_info(env: sys::napi_env, call: &GrpcCallout) -> sys::napi_value {
    let object = js::object(env);
    js::set(env, object, "callId", js::number(env, f64::from(call.call_id)));
    js::set(env, object, "upstream", js::string(env, &call.upstream));
    js::set(env, object, "plugin", js::string(env, &call.plugin));
    js::set(env, object, "service", js::string(env, &call.service));
    js::set(env, object, "method", js::string(env, &call.method));
    js::set(env, object, "initialMetadata", headers_to_js(env, &call.initial_metadata));
    js::set(env, object, "message", js::buffer(env, &call.message));
    js::set(env, object, "timeoutMs", js::number(env, millis_of(call.timeout)));
    object
}

/// The function under `key` of `services`, if there is one; anything else but `undefined`/`null` is an error.
fn function_of(env: sys::napi_env, services: sys::napi_value, key: &str) -> Result<Option<sys::napi_value>, JsErr> {
    let value = js::get(env, services, key);
    match js::type_of(env, value) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(None),
        sys::ValueType::napi_function => Ok(Some(value)),
        _ => Err(JsErr::invalid(format!("services.{key} must be a function"))),
    }
}

/// What a synchronous service's JS function returned, as bytes; `Err` with a message when it threw,
/// returned something else, or the JS thread did not answer in time.
fn call_sync(
    callable: &JsCallable,
    deadline: Duration,
    args: impl FnOnce(sys::napi_env) -> Vec<sys::napi_value> + Send + 'static,
) -> Result<Option<Vec<u8>>, Thrown> {
    // The guest's CPU deadline keeps running while it waits here: give up at half of it, so a JS thread
    // that is busy for a while costs the plugin this one answer (not found / failed), not its whole VM.
    let outcome = callable.with_js_until(Instant::now() + deadline / 2, move |env, function| {
        let args = args(env);
        match call(env, js::undefined(env), function, &args) {
            Ok(value) => match returned_bytes(env, value) {
                Ok(bytes) => Outcome::Returned(bytes),
                Err(message) => Outcome::Thrown(Thrown { code: None, message }),
            },
            Err(thrown) => Outcome::Thrown(thrown),
        }
    });
    match outcome {
        Outcome::Returned(bytes) => Ok(bytes),
        Outcome::Thrown(thrown) => Err(thrown),
    }
}

/// Builds a VM's services from the JS object `{ httpCallout, grpcCallout, property, foreignFunctions, log }`
/// (every member optional). `deadline` bounds each wait for a synchronous answer (the host's callback
/// deadline).
pub(crate) fn services_from_js(
    local: &EnvLocal,
    services: sys::napi_value,
    deadline: Duration,
) -> Result<Services, JsErr> {
    let env = local.raw();
    let mut out = Services::new();
    match js::type_of(env, services) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => return Ok(out),
        sys::ValueType::napi_object => {}
        _ => return Err(JsErr::invalid("services must be an object")),
    }
    let napi_err = JsErr::from_napi;

    if let Some(f) = function_of(env, services, "httpCallout")? {
        let function = JsFn::new(local, f).map_err(napi_err)?;
        out = out.on_http_call(move |call| {
            let accepted = function.post(move |env, f| {
                let info = http_info(env, &call);
                let reply = reply_to_js(env, call.reply, false);
                call_quietly(env, f, &[info, reply]);
            });
            // The JS thread is gone: nobody can answer.
            if accepted { Ok(()) } else { Err(CalloutRejected::Failed) }
        });
    }

    if let Some(f) = function_of(env, services, "grpcCallout")? {
        let function = JsFn::new(local, f).map_err(napi_err)?;
        out = out.on_grpc_call(move |call| {
            let accepted = function.post(move |env, f| {
                let info = grpc_info(env, &call);
                let reply = reply_to_js(env, call.reply, true);
                call_quietly(env, f, &[info, reply]);
            });
            if accepted { Ok(()) } else { Err(CalloutRejected::Failed) }
        });
    }

    if let Some(f) = function_of(env, services, "property")? {
        let callable = Arc::new(JsCallable::new(local, f).map_err(napi_err)?);
        out = out.on_property(move |request: &PropertyRequest<'_>| {
            let segments: Vec<String> = request.path.iter().map(|s| text(s)).collect();
            let plugin = request.plugin.to_string();
            let context_id = request.context_id;
            let answer = call_sync(&callable, deadline, move |env| {
                let info = js::object(env);
                let items = segments.iter().map(|s| js::string(env, s)).collect();
                js::set(env, info, "segments", js::array(env, items));
                js::set(env, info, "plugin", js::string(env, &plugin));
                js::set(env, info, "contextId", js::number(env, f64::from(context_id)));
                vec![js::string(env, &segments.join(".")), info]
            });
            // A property the function cannot give (it threw, or answered late) is simply not found.
            answer.ok().flatten()
        });
    }

    let foreign = js::get(env, services, "foreignFunctions");
    match js::type_of(env, foreign) {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => {}
        sys::ValueType::napi_object => {
            for name in own_keys(env, foreign) {
                let name = js::get_string(env, name);
                let f = js::get(env, foreign, &name);
                if js::type_of(env, f) != sys::ValueType::napi_function {
                    return Err(JsErr::invalid(format!("services.foreignFunctions.{name} must be a function")));
                }
                let callable = Arc::new(JsCallable::new(local, f).map_err(napi_err)?);
                out = out.foreign_function(name, move |args: &[u8]| {
                    let args = args.to_vec();
                    match call_sync(&callable, deadline, move |env| vec![js::buffer(env, &args)]) {
                        Ok(bytes) => Ok(bytes.unwrap_or_default()),
                        Err(thrown) if thrown.code.as_deref() == Some("BCV_NOT_FOUND") => Err(ForeignError::NotFound),
                        Err(thrown) => Err(ForeignError::Failed(thrown.message)),
                    }
                });
            }
        }
        _ => return Err(JsErr::invalid("services.foreignFunctions must be an object of functions")),
    }

    if let Some(f) = function_of(env, services, "log")? {
        let function = JsFn::new(local, f).map_err(napi_err)?;
        out = out.on_log(move |record: &LogRecord| {
            let record = record.clone();
            function.post(move |env, f| {
                let value = log_record_to_js(env, &record);
                call_quietly(env, f, &[value]);
            });
        });
    }
    Ok(out)
}
