//! The `env.proxy_*` host functions (`PROXY-WASM-ABI.md` §1a), for ABI 0.2.1, 0.2.0 and 0.1.0.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::{check_phase, give_bytes, memory_and_state, put_u32, put_u64, read, slice, status, write_u32};
use crate::proxy::headers::{HeaderMap, split_property_path};
use crate::proxy::properties;
use crate::proxy::services::{
    CalloutRejected, CalloutReply, ForeignError, GrpcCallout, GrpcStreamOpen, GrpcStreamPeer, HttpCallout,
};
use crate::proxy::state::{Deferred, HostState, LocalResponse, PendingCallout};
use crate::proxy::types::{AbiVersion, BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use crate::proxy::vm::Event;

type C<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<i32>;

pub(super) fn link(l: &mut Linker<HostState>, abi: AbiVersion) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_log", proxy_log)?;
    if abi == AbiVersion::V0_2_1 {
        l.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    }
    l.func_wrap("env", "proxy_get_current_time_nanoseconds", proxy_get_current_time_nanoseconds)?;
    l.func_wrap("env", "proxy_set_tick_period_milliseconds", proxy_set_tick_period_milliseconds)?;
    l.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    l.func_wrap("env", "proxy_set_property", proxy_set_property)?;
    l.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    l.func_wrap("env", "proxy_get_buffer_status", proxy_get_buffer_status)?;
    l.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    l.func_wrap("env", "proxy_get_header_map_size", proxy_get_header_map_size)?;
    l.func_wrap("env", "proxy_get_header_map_pairs", proxy_get_header_map_pairs)?;
    l.func_wrap("env", "proxy_set_header_map_pairs", proxy_set_header_map_pairs)?;
    l.func_wrap("env", "proxy_get_header_map_value", proxy_get_header_map_value)?;
    l.func_wrap("env", "proxy_add_header_map_value", proxy_add_header_map_value)?;
    l.func_wrap("env", "proxy_replace_header_map_value", proxy_replace_header_map_value)?;
    l.func_wrap("env", "proxy_remove_header_map_value", proxy_remove_header_map_value)?;
    l.func_wrap("env", "proxy_get_status", proxy_get_status)?;
    l.func_wrap("env", "proxy_send_local_response", proxy_send_local_response)?;
    l.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    l.func_wrap("env", "proxy_grpc_call", proxy_grpc_call)?;
    l.func_wrap("env", "proxy_grpc_stream", proxy_grpc_stream)?;
    l.func_wrap("env", "proxy_grpc_send", proxy_grpc_send)?;
    l.func_wrap("env", "proxy_grpc_cancel", proxy_grpc_cancel)?;
    l.func_wrap("env", "proxy_grpc_close", proxy_grpc_close)?;
    l.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    l.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    l.func_wrap("env", "proxy_register_shared_queue", proxy_register_shared_queue)?;
    l.func_wrap("env", "proxy_resolve_shared_queue", proxy_resolve_shared_queue)?;
    l.func_wrap("env", "proxy_enqueue_shared_queue", proxy_enqueue_shared_queue)?;
    l.func_wrap("env", "proxy_dequeue_shared_queue", proxy_dequeue_shared_queue)?;
    l.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    l.func_wrap("env", "proxy_record_metric", proxy_record_metric)?;
    l.func_wrap("env", "proxy_increment_metric", proxy_increment_metric)?;
    l.func_wrap("env", "proxy_get_metric", proxy_get_metric)?;
    l.func_wrap("env", "proxy_set_effective_context", proxy_set_effective_context)?;
    l.func_wrap("env", "proxy_done", proxy_done)?;
    if abi == AbiVersion::V0_1_0 {
        l.func_wrap("env", "proxy_get_configuration", proxy_get_configuration)?;
        l.func_wrap("env", "proxy_continue_request", |mut c: C<'_>| -> R {
            check_phase(&mut c, "proxy_continue_request")?;
            Ok(status(defer(&mut c, Deferred::Continue(StreamType::HttpRequest))))
        })?;
        l.func_wrap("env", "proxy_continue_response", |mut c: C<'_>| -> R {
            check_phase(&mut c, "proxy_continue_response")?;
            Ok(status(defer(&mut c, Deferred::Continue(StreamType::HttpResponse))))
        })?;
        l.func_wrap("env", "proxy_clear_route_cache", |mut c: C<'_>| -> R {
            check_phase(&mut c, "proxy_clear_route_cache")?;
            Ok(Status::Ok.code())
        })?;
    } else {
        l.func_wrap("env", "proxy_continue_stream", proxy_continue_stream)?;
        l.func_wrap("env", "proxy_close_stream", proxy_close_stream)?;
        l.func_wrap("env", "proxy_call_foreign_function", proxy_call_foreign_function)?;
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- logging, time, timers ----

fn proxy_log(mut c: C<'_>, level: i32, ptr: i32, len: i32) -> R {
    let Some(level) = LogLevel::from_wire(level) else { return Ok(Status::BadArgument.code()) };
    let message = match read(&mut c, ptr, len) {
        Ok(m) => text(&m),
        Err(s) => return Ok(s.code()),
    };
    let state = c.data_mut();
    let context = state.effective;
    state.log(level, context, message);
    Ok(Status::Ok.code())
}

fn proxy_get_log_level(mut c: C<'_>, out: i32) -> R {
    let level = c.data().log_level as u32;
    Ok(status(write_u32(&mut c, out, level)))
}

fn proxy_get_current_time_nanoseconds(mut c: C<'_>, out: i32) -> R {
    check_phase(&mut c, "proxy_get_current_time_nanoseconds")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let (memory, _) = memory_and_state(&mut c);
    Ok(status(put_u64(memory, out, now)))
}

fn proxy_set_tick_period_milliseconds(mut c: C<'_>, period: i32) -> R {
    check_phase(&mut c, "proxy_set_tick_period_milliseconds")?;
    let state = c.data_mut();
    if state.canary {
        return Ok(Status::Ok.code());
    }
    let root = match state.contexts.get(&state.effective) {
        Some(ctx) => ctx.plugin.root_context,
        None => return Ok(Status::BadArgument.code()),
    };
    state.ticks.insert(root, Duration::from_millis(period as u32 as u64));
    state.vm.ensure_driver();
    let _ = state.vm.events.send(Event::Wake);
    Ok(Status::Ok.code())
}

// ---- properties ----

fn proxy_get_property(mut c: C<'_>, path_ptr: i32, path_len: i32, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_get_property")?;
    let path = match read(&mut c, path_ptr, path_len) {
        Ok(p) => p,
        Err(s) => return Ok(s.code()),
    };
    let segments = split_property_path(&path);
    match properties::lookup(c.data(), c.data().effective, &segments) {
        Some(value) => Ok(give_bytes(&mut c, &value, out_ptr, out_len)?.code()),
        None => Ok(Status::NotFound.code()),
    }
}

fn proxy_set_property(mut c: C<'_>, path_ptr: i32, path_len: i32, value_ptr: i32, value_len: i32) -> R {
    check_phase(&mut c, "proxy_set_property")?;
    let (memory, state) = memory_and_state(&mut c);
    let (path, value) = match (slice(memory, path_ptr, path_len), slice(memory, value_ptr, value_len)) {
        (Ok(p), Ok(v)) => (p, v),
        _ => return Ok(Status::InvalidMemoryAccess.code()),
    };
    let key = properties::key_of(&split_property_path(path));
    let Some(ctx) = state.contexts.get_mut(&state.effective) else { return Ok(Status::NotFound.code()) };
    ctx.properties.insert(key, value.to_vec());
    Ok(Status::Ok.code())
}

// ---- buffers ----

fn buffer_of(state: &HostState, ty: BufferType) -> Option<&[u8]> {
    let ctx = state.contexts.get(&state.effective);
    match ty {
        BufferType::HttpRequestBody => ctx?.http().map(|h| h.request_body.as_slice()),
        BufferType::HttpResponseBody => ctx?.http().map(|h| h.response_body.as_slice()),
        BufferType::DownstreamData => match &ctx?.kind {
            crate::proxy::state::ContextKind::Tcp(t) => Some(t.downstream.as_slice()),
            _ => None,
        },
        BufferType::UpstreamData => match &ctx?.kind {
            crate::proxy::state::ContextKind::Tcp(t) => Some(t.upstream.as_slice()),
            _ => None,
        },
        BufferType::HttpCallResponseBody => state.call.http_response.as_ref().map(|r| r.body.as_slice()),
        BufferType::GrpcCallMessage => Some(state.call.grpc_message.as_slice()),
        BufferType::VmConfiguration => Some(state.call.vm_configuration.as_slice()),
        BufferType::PluginConfiguration => ctx.map(|c| c.plugin.configuration.as_slice()),
        BufferType::ForeignFunctionArguments => Some(state.call.foreign_arguments.as_slice()),
    }
}

fn proxy_get_buffer_bytes(mut c: C<'_>, ty: i32, start: i32, max: i32, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_get_buffer_bytes")?;
    let Some(ty) = BufferType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let Some(buffer) = buffer_of(c.data(), ty) else { return Ok(Status::NotFound.code()) };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start.saturating_add(max as u32 as usize).min(buffer.len());
    let bytes = buffer[start..end].to_vec();
    Ok(give_bytes(&mut c, &bytes, out_ptr, out_len)?.code())
}

fn proxy_get_buffer_status(mut c: C<'_>, ty: i32, size_out: i32, flags_out: i32) -> R {
    check_phase(&mut c, "proxy_get_buffer_status")?;
    let Some(ty) = BufferType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let Some(len) = buffer_of(c.data(), ty).map(<[u8]>::len) else { return Ok(Status::NotFound.code()) };
    let (memory, _) = memory_and_state(&mut c);
    Ok(status(put_u32(memory, size_out, len as u32).and_then(|()| put_u32(memory, flags_out, 0))))
}

fn proxy_set_buffer_bytes(mut c: C<'_>, ty: i32, start: i32, size: i32, ptr: i32, len: i32) -> R {
    check_phase(&mut c, "proxy_set_buffer_bytes")?;
    let Some(ty) = BufferType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let (memory, state) = memory_and_state(&mut c);
    let Ok(value) = slice(memory, ptr, len) else { return Ok(Status::InvalidMemoryAccess.code()) };
    let Some(ctx) = state.contexts.get_mut(&state.effective) else { return Ok(Status::NotFound.code()) };
    let buffer = match ty {
        BufferType::HttpRequestBody => ctx.http_mut().map(|h| &mut h.request_body),
        BufferType::HttpResponseBody => ctx.http_mut().map(|h| &mut h.response_body),
        BufferType::DownstreamData => ctx.tcp_mut().map(|t| &mut t.downstream),
        BufferType::UpstreamData => ctx.tcp_mut().map(|t| &mut t.upstream),
        _ => return Ok(Status::BadArgument.code()),
    };
    let Some(buffer) = buffer else { return Ok(Status::NotFound.code()) };
    splice(buffer, start as u32 as usize, size as u32 as usize, value);
    Ok(Status::Ok.code())
}

/// `proxy_set_buffer_bytes` semantics: (0, 0) prepends, a start at or past the end appends, otherwise
/// `size` bytes at `start` (clamped to the end) are replaced.
pub(crate) fn splice(buffer: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) {
    if start >= buffer.len() {
        buffer.extend_from_slice(value);
    } else {
        let end = start.saturating_add(size).min(buffer.len());
        buffer.splice(start..end, value.iter().copied());
    }
}

// ---- header maps ----

/// The map of `ty` in the effective context. `Ok(None)`: a valid type with no map here (reads see it empty).
fn map_of(state: &HostState, ty: MapType) -> Option<&HeaderMap> {
    let http = || state.contexts.get(&state.effective).and_then(|c| c.http());
    match ty {
        MapType::HttpRequestHeaders => http().map(|h| &h.request_headers),
        MapType::HttpRequestTrailers => http().map(|h| &h.request_trailers),
        MapType::HttpResponseHeaders => http().map(|h| &h.response_headers),
        MapType::HttpResponseTrailers => http().map(|h| &h.response_trailers),
        MapType::HttpCallResponseHeaders => state.call.http_response.as_ref().map(|r| &r.headers),
        MapType::HttpCallResponseTrailers => state.call.http_response.as_ref().map(|r| &r.trailers),
        MapType::GrpcInitialMetadata => state.call.grpc.as_ref().map(|g| &g.initial_metadata),
        MapType::GrpcTrailingMetadata => state.call.grpc.as_ref().map(|g| &g.trailing_metadata),
    }
}

fn map_mut(state: &mut HostState, ty: MapType) -> Option<&mut HeaderMap> {
    let http = state.contexts.get_mut(&state.effective).and_then(|c| c.http_mut())?;
    match ty {
        MapType::HttpRequestHeaders => Some(&mut http.request_headers),
        MapType::HttpRequestTrailers => Some(&mut http.request_trailers),
        MapType::HttpResponseHeaders => Some(&mut http.response_headers),
        MapType::HttpResponseTrailers => Some(&mut http.response_trailers),
        _ => None,
    }
}

fn proxy_get_header_map_size(mut c: C<'_>, ty: i32, out: i32) -> R {
    check_phase(&mut c, "proxy_get_header_map_size")?;
    let Some(ty) = MapType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let size = map_of(c.data(), ty).map(HeaderMap::serialized_len).unwrap_or(0);
    Ok(status(write_u32(&mut c, out, size as u32)))
}

fn proxy_get_header_map_pairs(mut c: C<'_>, ty: i32, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_get_header_map_pairs")?;
    let Some(ty) = MapType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let bytes = match map_of(c.data(), ty) {
        Some(map) if !map.is_empty() => map.serialize(),
        _ => Vec::new(),
    };
    Ok(give_bytes(&mut c, &bytes, out_ptr, out_len)?.code())
}

fn proxy_set_header_map_pairs(mut c: C<'_>, ty: i32, ptr: i32, len: i32) -> R {
    check_phase(&mut c, "proxy_set_header_map_pairs")?;
    let Some(ty) = MapType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let limits = c.data().vm.host.config.map_limits;
    let (memory, state) = memory_and_state(&mut c);
    let Ok(bytes) = slice(memory, ptr, len) else { return Ok(Status::InvalidMemoryAccess.code()) };
    let Ok(decoded) = HeaderMap::deserialize(bytes, limits) else { return Ok(Status::BadArgument.code()) };
    let Some(map) = map_mut(state, ty) else { return Ok(Status::BadArgument.code()) };
    *map = decoded;
    Ok(Status::Ok.code())
}

fn proxy_get_header_map_value(mut c: C<'_>, ty: i32, key_ptr: i32, key_len: i32, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_get_header_map_value")?;
    let Some(ty) = MapType::from_wire(ty) else { return Ok(Status::BadArgument.code()) };
    let key = match read(&mut c, key_ptr, key_len) {
        Ok(k) => k,
        Err(s) => return Ok(s.code()),
    };
    let value = map_of(c.data(), ty).and_then(|m| m.get(&key)).map(<[u8]>::to_vec);
    match value {
        Some(v) => Ok(give_bytes(&mut c, &v, out_ptr, out_len)?.code()),
        // 0.1.0 answered a missing key with OK and an empty value.
        None if c.data().abi == AbiVersion::V0_1_0 => Ok(give_bytes(&mut c, &[], out_ptr, out_len)?.code()),
        None => Ok(Status::NotFound.code()),
    }
}

fn edit_map(
    c: &mut C<'_>,
    ty: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    edit: fn(&mut HeaderMap, &[u8], &[u8]),
) -> i32 {
    let Some(ty) = MapType::from_wire(ty) else { return Status::BadArgument.code() };
    let (memory, state) = memory_and_state(c);
    let Ok(key) = slice(memory, key.0, key.1) else { return Status::InvalidMemoryAccess.code() };
    let value = match value {
        Some((ptr, len)) => match slice(memory, ptr, len) {
            Ok(v) => v,
            Err(s) => return s.code(),
        },
        None => &[],
    };
    let Some(map) = map_mut(state, ty) else { return Status::BadArgument.code() };
    edit(map, key, value);
    Status::Ok.code()
}

fn proxy_add_header_map_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> R {
    check_phase(&mut c, "proxy_add_header_map_value")?;
    Ok(edit_map(&mut c, ty, (kp, kl), Some((vp, vl)), |m, k, v| m.add(k, v)))
}

fn proxy_replace_header_map_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> R {
    check_phase(&mut c, "proxy_replace_header_map_value")?;
    Ok(edit_map(&mut c, ty, (kp, kl), Some((vp, vl)), |m, k, v| m.replace(k, v)))
}

fn proxy_remove_header_map_value(mut c: C<'_>, ty: i32, kp: i32, kl: i32) -> R {
    check_phase(&mut c, "proxy_remove_header_map_value")?;
    Ok(edit_map(&mut c, ty, (kp, kl), None, |m, k, _| m.remove(k)))
}

// ---- stream control ----

fn defer(c: &mut C<'_>, action: Deferred) -> Result<(), Status> {
    let state = c.data_mut();
    let id = state.effective;
    let ctx = state.contexts.get(&id).ok_or(Status::NotFound)?;
    if let Deferred::Continue(stream) | Deferred::Close(stream) = &action {
        let http = matches!(stream, StreamType::HttpRequest | StreamType::HttpResponse);
        let fits = match &ctx.kind {
            crate::proxy::state::ContextKind::Http(_) => http,
            crate::proxy::state::ContextKind::Tcp(_) => !http,
            crate::proxy::state::ContextKind::Root => false,
        };
        if !fits {
            return Err(Status::BadArgument);
        }
    }
    state.deferred.push((id, action));
    Ok(())
}

fn proxy_continue_stream(mut c: C<'_>, stream: i32) -> R {
    check_phase(&mut c, "proxy_continue_stream")?;
    let Some(stream) = StreamType::from_wire(stream) else { return Ok(Status::BadArgument.code()) };
    Ok(status(defer(&mut c, Deferred::Continue(stream))))
}

fn proxy_close_stream(mut c: C<'_>, stream: i32) -> R {
    check_phase(&mut c, "proxy_close_stream")?;
    let Some(stream) = StreamType::from_wire(stream) else { return Ok(Status::BadArgument.code()) };
    Ok(status(defer(&mut c, Deferred::Close(stream))))
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut c: C<'_>,
    code: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> R {
    check_phase(&mut c, "proxy_send_local_response")?;
    let limits = c.data().vm.host.config.map_limits;
    let (memory, state) = memory_and_state(&mut c);
    let (details, body, headers) = match (
        slice(memory, details_ptr, details_len),
        slice(memory, body_ptr, body_len),
        slice(memory, headers_ptr, headers_len),
    ) {
        (Ok(d), Ok(b), Ok(h)) => (d, b, h),
        _ => return Ok(Status::InvalidMemoryAccess.code()),
    };
    let Ok(headers) = HeaderMap::deserialize(headers, limits) else { return Ok(Status::BadArgument.code()) };
    let response = LocalResponse {
        status: code as u32,
        details: text(details),
        body: body.to_vec(),
        headers,
        grpc_status: (grpc_status >= 0).then_some(grpc_status),
    };
    let is_http = state.contexts.get(&state.effective).and_then(|ctx| ctx.http()).is_some();
    if !is_http {
        return Ok(Status::BadArgument.code());
    }
    state.deferred.push((state.effective, Deferred::LocalResponse(response)));
    Ok(Status::Ok.code())
}

fn proxy_get_status(mut c: C<'_>, code_out: i32, msg_ptr: i32, msg_len: i32) -> R {
    check_phase(&mut c, "proxy_get_status")?;
    let (code, message) = c.data().call.status.clone();
    if let Err(s) = write_u32(&mut c, code_out, code) {
        return Ok(s.code());
    }
    Ok(give_bytes(&mut c, &message, msg_ptr, msg_len)?.code())
}

fn proxy_set_effective_context(mut c: C<'_>, id: i32) -> R {
    check_phase(&mut c, "proxy_set_effective_context")?;
    let state = c.data_mut();
    let id = id as u32;
    if !state.contexts.contains_key(&id) {
        return Ok(Status::BadArgument.code());
    }
    state.effective = id;
    Ok(Status::Ok.code())
}

fn proxy_done(mut c: C<'_>) -> R {
    check_phase(&mut c, "proxy_done")?;
    let state = c.data_mut();
    let id = state.effective;
    match state.contexts.get(&id) {
        Some(ctx) if ctx.ending == crate::proxy::state::Ending::WaitingForDone => {
            state.deferred.push((id, Deferred::Done));
            Ok(Status::Ok.code())
        }
        _ => Ok(Status::NotFound.code()),
    }
}

fn proxy_get_configuration(mut c: C<'_>, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_get_configuration")?;
    let state = c.data();
    let configuration =
        state.contexts.get(&state.effective).map(|ctx| ctx.plugin.configuration.clone()).unwrap_or_default();
    Ok(give_bytes(&mut c, &configuration, out_ptr, out_len)?.code())
}

// ---- callouts ----

fn register_callout(state: &mut HostState, timeout_ms: i32, grpc: bool) -> (u32, CalloutReply) {
    let id = state.allocate_call_id();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    state.callouts.insert(id, PendingCallout { context: state.effective, deadline, grpc });
    state.vm.ensure_driver();
    let _ = state.vm.events.send(Event::Wake);
    (id, CalloutReply { call_id: id, grpc, events: Some(state.vm.events.clone()) })
}

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut c: C<'_>,
    up_ptr: i32,
    up_len: i32,
    hdr_ptr: i32,
    hdr_len: i32,
    body_ptr: i32,
    body_len: i32,
    trl_ptr: i32,
    trl_len: i32,
    timeout_ms: i32,
    id_out: i32,
) -> R {
    check_phase(&mut c, "proxy_http_call")?;
    let limits = c.data().vm.host.config.map_limits;
    let (memory, state) = memory_and_state(&mut c);
    let parts = (
        slice(memory, up_ptr, up_len),
        slice(memory, hdr_ptr, hdr_len),
        slice(memory, body_ptr, body_len),
        slice(memory, trl_ptr, trl_len),
    );
    let (Ok(upstream), Ok(headers), Ok(body), Ok(trailers)) = parts else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    if !super::in_bounds(memory, id_out, 4) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    let (Ok(headers), Ok(trailers)) =
        (HeaderMap::deserialize(headers, limits), HeaderMap::deserialize(trailers, limits))
    else {
        return Ok(Status::BadArgument.code());
    };
    if [":method", ":path", ":authority"].iter().any(|k| headers.get(k.as_bytes()).is_none()) {
        return Ok(Status::BadArgument.code());
    }
    let (upstream, body) = (text(upstream), body.to_vec());
    if state.canary {
        let id = state.allocate_call_id();
        let _ = put_u32(memory, id_out, id);
        return Ok(Status::Ok.code());
    }
    let Some(handler) = state.vm.services.http_call.clone() else { return Ok(Status::BadArgument.code()) };
    let (id, reply) = register_callout(state, timeout_ms, false);
    let plugin = state.plugin_name(state.effective);
    let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
    let callout = HttpCallout { call_id: id, upstream, headers, body, trailers, timeout, plugin, reply };
    match handler(callout) {
        Ok(()) => {
            let _ = put_u32(memory, id_out, id);
            Ok(Status::Ok.code())
        }
        Err(rejected) => {
            state.callouts.remove(&id);
            Ok(match rejected {
                CalloutRejected::UnknownUpstream => Status::BadArgument,
                CalloutRejected::Failed => Status::InternalFailure,
            }
            .code())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    mut c: C<'_>,
    up_ptr: i32,
    up_len: i32,
    svc_ptr: i32,
    svc_len: i32,
    method_ptr: i32,
    method_len: i32,
    md_ptr: i32,
    md_len: i32,
    msg_ptr: i32,
    msg_len: i32,
    timeout_ms: i32,
    id_out: i32,
) -> R {
    check_phase(&mut c, "proxy_grpc_call")?;
    let limits = c.data().vm.host.config.map_limits;
    let (memory, state) = memory_and_state(&mut c);
    let parts = (
        slice(memory, up_ptr, up_len),
        slice(memory, svc_ptr, svc_len),
        slice(memory, method_ptr, method_len),
        slice(memory, md_ptr, md_len),
        slice(memory, msg_ptr, msg_len),
    );
    let (Ok(upstream), Ok(service), Ok(method), Ok(metadata), Ok(message)) = parts else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    if !super::in_bounds(memory, id_out, 4) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    let Ok(initial_metadata) = HeaderMap::deserialize(metadata, limits) else { return Ok(Status::BadArgument.code()) };
    let (upstream, service, method, message) = (text(upstream), text(service), text(method), message.to_vec());
    if state.canary {
        let id = state.allocate_call_id();
        let _ = put_u32(memory, id_out, id);
        return Ok(Status::Ok.code());
    }
    let Some(handler) = state.vm.services.grpc_call.clone() else { return Ok(Status::ParseFailure.code()) };
    let (id, reply) = register_callout(state, timeout_ms, true);
    let plugin = state.plugin_name(state.effective);
    let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
    let call =
        GrpcCallout { call_id: id, upstream, service, method, initial_metadata, message, timeout, plugin, reply };
    match handler(call) {
        Ok(()) => {
            let _ = put_u32(memory, id_out, id);
            Ok(Status::Ok.code())
        }
        Err(rejected) => {
            state.callouts.remove(&id);
            Ok(match rejected {
                CalloutRejected::UnknownUpstream => Status::ParseFailure,
                CalloutRejected::Failed => Status::InternalFailure,
            }
            .code())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    mut c: C<'_>,
    up_ptr: i32,
    up_len: i32,
    svc_ptr: i32,
    svc_len: i32,
    method_ptr: i32,
    method_len: i32,
    md_ptr: i32,
    md_len: i32,
    id_out: i32,
) -> R {
    check_phase(&mut c, "proxy_grpc_stream")?;
    let limits = c.data().vm.host.config.map_limits;
    let (memory, state) = memory_and_state(&mut c);
    let parts = (
        slice(memory, up_ptr, up_len),
        slice(memory, svc_ptr, svc_len),
        slice(memory, method_ptr, method_len),
        slice(memory, md_ptr, md_len),
    );
    let (Ok(upstream), Ok(service), Ok(method), Ok(metadata)) = parts else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    if !super::in_bounds(memory, id_out, 4) {
        return Ok(Status::InvalidMemoryAccess.code());
    }
    let Ok(initial_metadata) = HeaderMap::deserialize(metadata, limits) else { return Ok(Status::BadArgument.code()) };
    let (upstream, service, method) = (text(upstream), text(service), text(method));
    if state.canary {
        let id = state.allocate_call_id();
        let _ = put_u32(memory, id_out, id);
        return Ok(Status::Ok.code());
    }
    let Some(handler) = state.vm.services.grpc_stream.clone() else { return Ok(Status::ParseFailure.code()) };
    let id = state.allocate_call_id();
    state.vm.ensure_driver();
    let peer = GrpcStreamPeer { stream_id: id, events: state.vm.events.clone() };
    let plugin = state.plugin_name(state.effective);
    let open = GrpcStreamOpen { stream_id: id, upstream, service, method, initial_metadata, plugin, peer };
    match handler(open) {
        Ok(sink) => {
            state.grpc_streams.insert(id, (state.effective, sink));
            let _ = put_u32(memory, id_out, id);
            Ok(Status::Ok.code())
        }
        Err(CalloutRejected::UnknownUpstream) => Ok(Status::ParseFailure.code()),
        Err(CalloutRejected::Failed) => Ok(Status::InternalFailure.code()),
    }
}

fn proxy_grpc_send(mut c: C<'_>, id: i32, msg_ptr: i32, msg_len: i32, end_stream: i32) -> R {
    check_phase(&mut c, "proxy_grpc_send")?;
    let (memory, state) = memory_and_state(&mut c);
    let Ok(message) = slice(memory, msg_ptr, msg_len) else { return Ok(Status::InvalidMemoryAccess.code()) };
    let Some((_, sink)) = state.grpc_streams.get_mut(&(id as u32)) else { return Ok(Status::NotFound.code()) };
    sink.send(message, end_stream != 0);
    Ok(Status::Ok.code())
}

fn end_grpc(mut c: C<'_>, id: i32, cancel: bool, name: &'static str) -> R {
    check_phase(&mut c, name)?;
    let state = c.data_mut();
    let id = id as u32;
    if let Some((_, mut sink)) = state.grpc_streams.remove(&id) {
        if cancel {
            sink.cancel()
        } else {
            sink.close()
        }
        return Ok(Status::Ok.code());
    }
    if state.callouts.get(&id).is_some_and(|p| p.grpc) {
        state.callouts.remove(&id);
        return Ok(Status::Ok.code());
    }
    Ok(Status::NotFound.code())
}

fn proxy_grpc_cancel(c: C<'_>, id: i32) -> R {
    end_grpc(c, id, true, "proxy_grpc_cancel")
}

fn proxy_grpc_close(c: C<'_>, id: i32) -> R {
    end_grpc(c, id, false, "proxy_grpc_close")
}

fn proxy_call_foreign_function(
    mut c: C<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    out_ptr: i32,
    out_len: i32,
) -> R {
    check_phase(&mut c, "proxy_call_foreign_function")?;
    let (memory, state) = memory_and_state(&mut c);
    let (Ok(name), Ok(args)) = (slice(memory, name_ptr, name_len), slice(memory, args_ptr, args_len)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let name = text(name);
    let Some(function) = state.vm.services.foreign.get(&name).cloned() else {
        return Ok(Status::NotFound.code());
    };
    let args = args.to_vec();
    match function(&args) {
        Ok(result) => Ok(give_bytes(&mut c, &result, out_ptr, out_len)?.code()),
        Err(ForeignError::NotFound) => Ok(Status::NotFound.code()),
        Err(ForeignError::Failed(why)) => {
            let state = c.data_mut();
            let context = state.effective;
            state.log(LogLevel::Warn, context, format!("foreign function {name} failed: {why}"));
            Ok(Status::InternalFailure.code())
        }
    }
}

// ---- shared data and queues ----

fn proxy_set_shared_data(mut c: C<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32, cas: i32) -> R {
    check_phase(&mut c, "proxy_set_shared_data")?;
    let (memory, state) = memory_and_state(&mut c);
    let (Ok(key), Ok(value)) = (slice(memory, key_ptr, key_len), slice(memory, val_ptr, val_len)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let vm = &state.vm;
    Ok(status(vm.host.shared.set(&vm.id, key, value, cas as u32).map(|_| ())))
}

fn proxy_get_shared_data(mut c: C<'_>, key_ptr: i32, key_len: i32, out_ptr: i32, out_len: i32, cas_out: i32) -> R {
    check_phase(&mut c, "proxy_get_shared_data")?;
    let key = match read(&mut c, key_ptr, key_len) {
        Ok(k) => k,
        Err(s) => return Ok(s.code()),
    };
    let vm = c.data().vm.clone();
    let Some(found) = vm.host.shared.get(&vm.id, &key) else { return Ok(Status::NotFound.code()) };
    if let Err(s) = write_u32(&mut c, cas_out, found.cas) {
        return Ok(s.code());
    }
    Ok(give_bytes(&mut c, &found.value, out_ptr, out_len)?.code())
}

fn proxy_register_shared_queue(mut c: C<'_>, name_ptr: i32, name_len: i32, id_out: i32) -> R {
    check_phase(&mut c, "proxy_register_shared_queue")?;
    let name = match read(&mut c, name_ptr, name_len) {
        Ok(n) => text(&n),
        Err(s) => return Ok(s.code()),
    };
    let state = c.data();
    let root = state.contexts.get(&state.effective).map(|ctx| ctx.plugin.root_context).unwrap_or(state.effective);
    if !state.canary {
        state.vm.ensure_driver();
    }
    let registrant = (!state.canary).then(|| (root, state.vm.events.clone()));
    let id = state.vm.host.shared.register_queue(&state.vm.id, &name, registrant);
    Ok(status(write_u32(&mut c, id_out, id)))
}

fn proxy_resolve_shared_queue(mut c: C<'_>, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, id_out: i32) -> R {
    check_phase(&mut c, "proxy_resolve_shared_queue")?;
    let (memory, state) = memory_and_state(&mut c);
    let (Ok(vm_id), Ok(name)) = (slice(memory, vm_ptr, vm_len), slice(memory, name_ptr, name_len)) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    // An empty VM id means this VM's own namespace.
    let vm_id = if vm_id.is_empty() { state.vm.id.clone() } else { text(vm_id) };
    match state.vm.host.shared.resolve_queue(&vm_id, &text(name)) {
        Some(id) => Ok(status(put_u32(memory, id_out, id))),
        None => Ok(Status::NotFound.code()),
    }
}

fn proxy_enqueue_shared_queue(mut c: C<'_>, id: i32, ptr: i32, len: i32) -> R {
    check_phase(&mut c, "proxy_enqueue_shared_queue")?;
    let item = match read(&mut c, ptr, len) {
        Ok(i) => i,
        Err(s) => return Ok(s.code()),
    };
    Ok(status(c.data().vm.host.shared.enqueue(id as u32, item)))
}

fn proxy_dequeue_shared_queue(mut c: C<'_>, id: i32, out_ptr: i32, out_len: i32) -> R {
    check_phase(&mut c, "proxy_dequeue_shared_queue")?;
    {
        let (memory, _) = memory_and_state(&mut c);
        if !super::in_bounds(memory, out_ptr, 4) || !super::in_bounds(memory, out_len, 4) {
            return Ok(Status::InvalidMemoryAccess.code());
        }
    }
    match c.data().vm.host.shared.dequeue(id as u32) {
        Ok(item) => Ok(give_bytes(&mut c, &item, out_ptr, out_len)?.code()),
        Err(s) => Ok(s.code()),
    }
}

// ---- metrics ----

fn proxy_define_metric(mut c: C<'_>, kind: i32, name_ptr: i32, name_len: i32, id_out: i32) -> R {
    check_phase(&mut c, "proxy_define_metric")?;
    let Some(kind) = MetricType::from_wire(kind) else { return Ok(Status::BadArgument.code()) };
    let name = match read(&mut c, name_ptr, name_len) {
        Ok(n) => text(&n),
        Err(s) => return Ok(s.code()),
    };
    match c.data().vm.host.metrics.define(kind, &name) {
        Ok(id) => Ok(status(write_u32(&mut c, id_out, id))),
        Err(s) => Ok(s.code()),
    }
}

fn proxy_record_metric(mut c: C<'_>, id: i32, value: i64) -> R {
    check_phase(&mut c, "proxy_record_metric")?;
    Ok(status(c.data().vm.host.metrics.record(id as u32, value)))
}

fn proxy_increment_metric(mut c: C<'_>, id: i32, delta: i64) -> R {
    check_phase(&mut c, "proxy_increment_metric")?;
    Ok(status(c.data().vm.host.metrics.increment(id as u32, delta)))
}

fn proxy_get_metric(mut c: C<'_>, id: i32, out: i32) -> R {
    check_phase(&mut c, "proxy_get_metric")?;
    match c.data().vm.host.metrics.get(id as u32) {
        Ok(value) => {
            let (memory, _) = memory_and_state(&mut c);
            Ok(status(put_u64(memory, out, value as u64)))
        }
        Err(s) => Ok(s.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn set_buffer_bytes_prepends_appends_and_replaces() {
        let mut b = b"body".to_vec();
        splice(&mut b, 0, 0, b">");
        assert_eq!(b, b">body");
        splice(&mut b, 99, 0, b"<");
        assert_eq!(b, b">body<");
        splice(&mut b, 1, 4, b"BODY!");
        assert_eq!(b, b">BODY!<");
        splice(&mut b, 0, usize::MAX, b"x");
        assert_eq!(b, b"x");
    }
}
