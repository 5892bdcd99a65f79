//! The state a VM's wasmtime store carries: contexts, their headers and buffers, deferred actions, the
//! phase that restricts host calls, and the limiter.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use super::error::FailReason;
use super::headers::HeaderMap;
use super::services::{CalloutResponse, GrpcResponse, GrpcStreamSink, LogRecord};
use super::types::{AbiVersion, LogLevel, StreamType};
use super::vm::VmShared;

/// Hashes the host's own small integer ids (context ids, call ids) with one multiplication: they are not
/// chosen by an attacker, and SipHash would cost more than the rest of a lookup.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by a host-assigned id.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// What the guest is doing, which decides the host calls it may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Outside any guest call.
    Idle,
    /// Running `_initialize`, `main` or `_start`: only logging and WASI.
    Start,
    /// Inside the guest allocator: only logging and WASI.
    Allocator,
    /// Inside a callback: everything.
    Callback,
}

impl Phase {
    pub(crate) fn restricted(self) -> Option<&'static str> {
        match self {
            Phase::Start => Some("start"),
            Phase::Allocator => Some("allocator"),
            _ => None,
        }
    }
}

/// Where a stream (request, response, downstream, upstream) of a context stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Data flows (nothing paused).
    Open,
    /// The last callback returned Pause; the embedder waits for continue, a local reply or a close.
    Paused,
    /// The plugin closed it (`proxy_close_stream`).
    Closed,
}

/// A local response a plugin sent instead of the upstream's (`proxy_send_local_response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Details text (for logs, not sent to the client).
    pub details: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Extra response headers.
    pub headers: HeaderMap,
    /// The gRPC status, when the reply is a gRPC one.
    pub grpc_status: Option<i32>,
}

/// What happens to a finished context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Live,
    /// on_done returned false; on_log/on_delete wait for proxy_done.
    WaitingForDone,
    Deleted,
}

/// The HTTP stream part of a context.
#[derive(Default)]
pub(crate) struct HttpData {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub local_response: Option<LocalResponse>,
}

/// The TCP part of a context.
#[derive(Default)]
pub(crate) struct TcpData {
    pub downstream: Vec<u8>,
    pub upstream: Vec<u8>,
}

pub(crate) enum ContextKind {
    Root,
    Http(Box<HttpData>),
    Tcp(Box<TcpData>),
}

/// A plugin's identity, shared by its root context and its stream contexts.
#[derive(Debug)]
pub(crate) struct PluginIdentity {
    pub name: String,
    pub root_id: String,
    pub configuration: Vec<u8>,
    pub root_context: u32,
    pub properties: HashMap<String, Vec<u8>>,
}

pub(crate) struct ContextData {
    pub kind: ContextKind,
    pub plugin: Arc<PluginIdentity>,
    /// Properties set on this context, by the plugin (`proxy_set_property`) or the embedder.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Request, response, downstream, upstream.
    pub flows: [Flow; 4],
    pub ending: Ending,
}

impl ContextData {
    pub(crate) fn new(kind: ContextKind, plugin: Arc<PluginIdentity>) -> ContextData {
        ContextData { kind, plugin, properties: HashMap::new(), flows: [Flow::Open; 4], ending: Ending::Live }
    }

    pub(crate) fn http(&self) -> Option<&HttpData> {
        match &self.kind {
            ContextKind::Http(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn http_mut(&mut self) -> Option<&mut HttpData> {
        match &mut self.kind {
            ContextKind::Http(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn tcp_mut(&mut self) -> Option<&mut TcpData> {
        match &mut self.kind {
            ContextKind::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

/// An action a plugin took inside a callback, applied after the callback returns.
#[derive(Debug)]
pub(crate) enum Deferred {
    Continue(StreamType),
    Close(StreamType),
    LocalResponse(LocalResponse),
    Done,
}

/// A callout in flight: who gets the answer and until when.
pub(crate) struct PendingCallout {
    pub context: u32,
    pub deadline: Instant,
    pub grpc: bool,
}

/// Buffers valid during one callback of a callout's answer or a foreign call.
#[derive(Default)]
pub(crate) struct CallBuffers {
    pub http_response: Option<CalloutResponse>,
    pub grpc: Option<GrpcResponse>,
    pub grpc_message: Vec<u8>,
    pub foreign_arguments: Vec<u8>,
    /// `proxy_get_status`: code and message.
    pub status: (u32, Vec<u8>),
    pub vm_configuration: Vec<u8>,
}

/// The memory cap, remembering whether a growth was refused (to name the cause of the trap that follows).
pub(crate) struct Limiter {
    pub memory_cap: usize,
    pub denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Most log records a VM keeps for [`Vm::take_logs`](super::Vm::take_logs); older ones are dropped.
pub(crate) const LOG_BUFFER: usize = 4096;

/// The data of a VM's store.
pub(crate) struct HostState {
    pub abi: AbiVersion,
    pub vm: Arc<VmShared>,
    pub phase: Phase,
    pub current: u32,
    pub effective: u32,
    pub contexts: IdMap<ContextData>,
    pub next_context: u32,
    pub deferred: Vec<(u32, Deferred)>,
    pub limiter: Limiter,
    pub memory: Option<Memory>,
    pub allocator: Option<TypedFunc<i32, i32>>,
    pub call: CallBuffers,
    pub callouts: IdMap<PendingCallout>,
    pub grpc_streams: IdMap<(u32, Box<dyn GrpcStreamSink>)>,
    pub next_call: u32,
    /// Tick period per root context (absent or zero: no timer).
    pub ticks: IdMap<Duration>,
    /// A fault a host function found (restricted call, proc_exit), reported instead of the trap text.
    pub fault: Option<FailReason>,
    /// True in a throw-away canary instance: callouts, timers and queue registrations have no effect.
    pub canary: bool,
    pub log_level: LogLevel,
}

impl HostState {
    pub(crate) fn new(abi: AbiVersion, vm: Arc<VmShared>, memory_cap: usize, canary: bool) -> HostState {
        HostState {
            abi,
            vm,
            phase: Phase::Idle,
            current: 0,
            effective: 0,
            contexts: IdMap::default(),
            next_context: 1,
            deferred: Vec::new(),
            limiter: Limiter { memory_cap, denied: false },
            memory: None,
            allocator: None,
            call: CallBuffers::default(),
            callouts: IdMap::default(),
            grpc_streams: IdMap::default(),
            next_call: 1,
            ticks: IdMap::default(),
            fault: None,
            canary,
            log_level: LogLevel::Trace,
        }
    }

    /// A context id not in use (ids are never reused while live; root and stream contexts share them).
    pub(crate) fn allocate_context_id(&mut self) -> u32 {
        loop {
            let id = self.next_context;
            self.next_context = self.next_context.wrapping_add(1).max(1);
            if !self.contexts.contains_key(&id) {
                return id;
            }
        }
    }

    /// A callout or gRPC stream id.
    pub(crate) fn allocate_call_id(&mut self) -> u32 {
        loop {
            let id = self.next_call;
            self.next_call = self.next_call.wrapping_add(1).max(1);
            if !self.callouts.contains_key(&id) && !self.grpc_streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// The plugin name of context `id` (empty when unknown).
    pub(crate) fn plugin_name(&self, id: u32) -> String {
        self.contexts.get(&id).map(|c| c.plugin.name.clone()).unwrap_or_default()
    }

    /// Records a log line: the VM buffer, the embedder's handler, `tracing`.
    pub(crate) fn log(&mut self, level: LogLevel, context_id: u32, message: String) {
        let record =
            LogRecord { level, vm_id: self.vm.id.clone(), plugin: self.plugin_name(context_id), context_id, message };
        emit_tracing(&record, self.canary);
        if self.canary {
            return;
        }
        if let Some(handler) = &self.vm.services.log {
            handler(&record);
        }
        let mut logs = self.vm.logs.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() >= LOG_BUFFER {
            logs.pop_front();
        }
        logs.push_back(record);
    }
}

fn emit_tracing(record: &LogRecord, canary: bool) {
    let (vm, plugin, ctx, msg) = (&record.vm_id, &record.plugin, record.context_id, &record.message);
    match record.level {
        LogLevel::Trace => tracing::trace!(target: "bcv::proxy", vm, plugin, ctx, canary, "{msg}"),
        LogLevel::Debug => tracing::debug!(target: "bcv::proxy", vm, plugin, ctx, canary, "{msg}"),
        LogLevel::Info => tracing::info!(target: "bcv::proxy", vm, plugin, ctx, canary, "{msg}"),
        LogLevel::Warn => tracing::warn!(target: "bcv::proxy", vm, plugin, ctx, canary, "{msg}"),
        LogLevel::Error | LogLevel::Critical => {
            tracing::error!(target: "bcv::proxy", vm, plugin, ctx, canary, "{msg}")
        }
    }
}
