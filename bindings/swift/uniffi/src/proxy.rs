//! The Proxy-Wasm host for Swift: `ProxyHost` → `ProxyModule` / `ProxyVm` → `ProxyPlugin` →
//! `ProxyHttpContext` / `ProxyTcpContext`, adapters over `bcv_core::proxy`. No proxy logic lives here.
//!
//! What a VM needs from the application (callouts, properties, foreign functions, logs) reaches Swift
//! through one foreign trait, [`ProxyServicesCallback`]. Its methods are called synchronously on the
//! thread that runs the plugin while the VM is busy: they must not call into the same VM (that throws
//! `BcvError.Reentrant` instead of deadlocking) and should return quickly. A callout carries a
//! [`ProxyCalloutReply`], which may be answered at once from inside the callback or later from any thread.
//!
//! Nothing here holds a lock of its own while the guest runs: every object keeps a cheap clone of its core
//! handle, so a callback that touches another object never waits on this layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bcv_core::handle as core;
use bcv_core::proxy as px;

use crate::error::{BcvError, millis};
use crate::node::{AsNode, CancelToken, HasNode, lock, node_methods};
use crate::stream::ReadStream;

// ---- errors ----

impl From<px::ProxyError> for BcvError {
    fn from(e: px::ProxyError) -> BcvError {
        let message = e.to_string();
        match e {
            px::ProxyError::InvalidModule { .. } | px::ProxyError::Compile { .. } => {
                BcvError::InvalidModule { message }
            }
            px::ProxyError::VmStart { .. } | px::ProxyError::VmFailed { .. } => BcvError::VmFailed { message },
            px::ProxyError::PluginRejected { plugin, .. } => BcvError::PluginRejected { plugin, message },
            px::ProxyError::InvalidState { .. } => BcvError::ContextFinished { message },
            px::ProxyError::Timeout { .. } => BcvError::Timeout { message },
            px::ProxyError::Reentrant { .. } => BcvError::Reentrant { message },
            px::ProxyError::ModuleCache { .. } => BcvError::Io { message },
            px::ProxyError::Config(_) => BcvError::InvalidArgument { message },
            px::ProxyError::Closed(closed) => closed.into(),
        }
    }
}

/// What a Swift service callback reports instead of a result. Thrown by `ProxyServicesCallback` methods;
/// the plugin sees the matching Proxy-Wasm status.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ProxyServiceError {
    /// A callout names an upstream the application does not know (HTTP: BAD_ARGUMENT, gRPC: PARSE_FAILURE).
    #[error("unknown upstream")]
    UnknownUpstream,
    /// A foreign function does not know its arguments (NOT_FOUND).
    #[error("not found")]
    NotFound,
    /// Any other failure (INTERNAL_FAILURE); a foreign function's message is logged by the VM.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ProxyServiceError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> ProxyServiceError {
        ProxyServiceError::Failed { message: format!("the Swift service failed: {}", e.reason) }
    }
}

impl ProxyServiceError {
    fn rejected(self) -> px::CalloutRejected {
        match self {
            ProxyServiceError::UnknownUpstream => px::CalloutRejected::UnknownUpstream,
            ProxyServiceError::NotFound | ProxyServiceError::Failed { .. } => px::CalloutRejected::Failed,
        }
    }

    fn foreign(self) -> px::ForeignError {
        match self {
            ProxyServiceError::NotFound => px::ForeignError::NotFound,
            ProxyServiceError::UnknownUpstream => px::ForeignError::Failed("unknown upstream".into()),
            ProxyServiceError::Failed { message } => px::ForeignError::Failed(message),
        }
    }
}

// ---- plain data ----

/// One header (or trailer, or gRPC metadata entry): a name and a value, kept in order. Names are matched
/// without regard to ASCII case. Bytes that are not UTF-8 are read back with U+FFFD replacements.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyHeader {
    /// The name (`:path`, `content-type`, …).
    pub name: String,
    /// The value.
    pub value: String,
}

fn header_map(headers: Vec<ProxyHeader>) -> px::HeaderMap {
    headers.into_iter().map(|h| (h.name, h.value)).collect()
}

fn header_list(map: &px::HeaderMap) -> Vec<ProxyHeader> {
    map.pairs()
        .iter()
        .map(|(name, value)| ProxyHeader {
            name: String::from_utf8_lossy(name).into_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        })
        .collect()
}

/// A response a plugin sends instead of forwarding (`proxy_send_local_response`), or the 503 a fail-closed
/// plugin of a failed VM answers with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyLocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Extra response headers.
    pub headers: Vec<ProxyHeader>,
    /// Response body.
    pub body: Vec<u8>,
    /// Details for logs (not sent to the client); for a failed VM it names the plugin and the failure.
    pub details: String,
    /// The gRPC status, when the reply is a gRPC one.
    pub grpc_status: Option<i32>,
}

impl From<px::LocalResponse> for ProxyLocalResponse {
    fn from(r: px::LocalResponse) -> ProxyLocalResponse {
        ProxyLocalResponse {
            status: r.status,
            headers: header_list(&r.headers),
            body: r.body,
            details: r.details,
            grpc_status: r.grpc_status,
        }
    }
}

/// What to do with a stream after a callback.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProxyAction {
    /// Pass the (possibly changed) headers or data on.
    Continue,
    /// Hold the stream: buffer what arrives and `wait` for the plugin.
    Pause,
    /// Do not forward: answer the client with this response instead.
    LocalResponse(ProxyLocalResponse),
    /// Reset / close the stream.
    Close,
}

impl From<px::FilterAction> for ProxyAction {
    fn from(a: px::FilterAction) -> ProxyAction {
        match a {
            px::FilterAction::Continue => ProxyAction::Continue,
            px::FilterAction::Pause => ProxyAction::Pause,
            px::FilterAction::LocalResponse(r) => ProxyAction::LocalResponse(r.into()),
            px::FilterAction::Close => ProxyAction::Close,
        }
    }
}

/// One direction of a context that can be paused and waited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProxyStream {
    /// The HTTP request (headers, body, trailers) going upstream.
    HttpRequest,
    /// The HTTP response coming back.
    HttpResponse,
    /// Data from the downstream (client) side of a TCP connection.
    Downstream,
    /// Data from the upstream (server) side of a TCP connection.
    Upstream,
}

impl From<ProxyStream> for px::StreamType {
    fn from(s: ProxyStream) -> px::StreamType {
        match s {
            ProxyStream::HttpRequest => px::StreamType::HttpRequest,
            ProxyStream::HttpResponse => px::StreamType::HttpResponse,
            ProxyStream::Downstream => px::StreamType::Downstream,
            ProxyStream::Upstream => px::StreamType::Upstream,
        }
    }
}

/// Which side closed a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProxyPeer {
    /// Not known.
    Unknown,
    /// This proxy closed it.
    Local,
    /// The remote peer closed it.
    Remote,
}

impl From<ProxyPeer> for px::PeerType {
    fn from(p: ProxyPeer) -> px::PeerType {
        match p {
            ProxyPeer::Unknown => px::PeerType::Unknown,
            ProxyPeer::Local => px::PeerType::Local,
            ProxyPeer::Remote => px::PeerType::Remote,
        }
    }
}

/// Severity of a plugin's log record, from the most to the least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, uniffi::Enum)]
pub enum ProxyLogLevel {
    /// Tracing detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (WASI stdout lines too).
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// An error (WASI stderr lines too).
    Error,
    /// A failure the plugin cannot continue from (also the host's "vm failed" record).
    Critical,
}

impl From<px::LogLevel> for ProxyLogLevel {
    fn from(l: px::LogLevel) -> ProxyLogLevel {
        match l {
            px::LogLevel::Trace => ProxyLogLevel::Trace,
            px::LogLevel::Debug => ProxyLogLevel::Debug,
            px::LogLevel::Info => ProxyLogLevel::Info,
            px::LogLevel::Warn => ProxyLogLevel::Warn,
            px::LogLevel::Error => ProxyLogLevel::Error,
            px::LogLevel::Critical => ProxyLogLevel::Critical,
        }
    }
}

/// One log line of a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyLogRecord {
    /// Severity.
    pub level: ProxyLogLevel,
    /// The VM's id.
    pub vm_id: String,
    /// The plugin's name (empty during VM start).
    pub plugin: String,
    /// The context that logged (0 during start).
    pub context_id: u32,
    /// The message.
    pub message: String,
}

impl From<&px::LogRecord> for ProxyLogRecord {
    fn from(r: &px::LogRecord) -> ProxyLogRecord {
        ProxyLogRecord {
            level: r.level.into(),
            vm_id: r.vm_id.clone(),
            plugin: r.plugin.clone(),
            context_id: r.context_id,
            message: r.message.clone(),
        }
    }
}

/// The kind of a VM failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProxyFailureKind {
    /// The guest trapped (a Rust SDK panic is an `unreachable` trap).
    Trap,
    /// A callback ran past its CPU deadline.
    CpuDeadline,
    /// The guest asked for more memory than the cap allows and then trapped.
    MemoryLimit,
    /// A host function other than logging and WASI was called during start or inside the allocator.
    RestrictedHostcall,
    /// The guest called WASI `proc_exit`.
    ProcExit,
    /// The guest's allocator returned 0 or a buffer outside its memory.
    Allocator,
    /// `on_vm_start` returned false.
    VmStartRefused,
    /// Another failure of the host while running the guest.
    Internal,
}

/// Why a VM failed. After a failure no callback of the VM runs again; its plugins fail open or closed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyFailure {
    /// The kind of failure.
    pub kind: ProxyFailureKind,
    /// The whole reason, e.g. "trap: … unreachable …" or "a callback exceeded its CPU deadline".
    pub message: String,
}

impl From<px::FailReason> for ProxyFailure {
    fn from(r: px::FailReason) -> ProxyFailure {
        let kind = match &r {
            px::FailReason::Trap(_) => ProxyFailureKind::Trap,
            px::FailReason::CpuDeadline => ProxyFailureKind::CpuDeadline,
            px::FailReason::MemoryLimit { .. } => ProxyFailureKind::MemoryLimit,
            px::FailReason::RestrictedHostcall { .. } => ProxyFailureKind::RestrictedHostcall,
            px::FailReason::ProcExit(_) => ProxyFailureKind::ProcExit,
            px::FailReason::AllocatorFailed(_) => ProxyFailureKind::Allocator,
            px::FailReason::VmStartRefused => ProxyFailureKind::VmStartRefused,
            px::FailReason::Internal(_) => ProxyFailureKind::Internal,
        };
        ProxyFailure { kind, message: r.to_string() }
    }
}

/// Kinds of plugin metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ProxyMetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

/// A metric plugins defined, as it stands now. One registry per host: every VM and plugin defining the same
/// name counts into one value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyMetric {
    /// The name the plugin gave.
    pub name: String,
    /// Its kind.
    pub kind: ProxyMetricKind,
    /// Counter or gauge value; for a histogram, the number of recorded values.
    pub value: i64,
    /// Histogram only: the sum of recorded values.
    pub sum: i64,
    /// Histogram only: the smallest recorded value (0 when none).
    pub min: i64,
    /// Histogram only: the largest recorded value (0 when none).
    pub max: i64,
}

impl From<px::MetricSnapshot> for ProxyMetric {
    fn from(m: px::MetricSnapshot) -> ProxyMetric {
        let kind = match m.kind {
            px::MetricType::Counter => ProxyMetricKind::Counter,
            px::MetricType::Gauge => ProxyMetricKind::Gauge,
            px::MetricType::Histogram => ProxyMetricKind::Histogram,
        };
        ProxyMetric { name: m.name, kind, value: m.value, sum: m.sum, min: m.min, max: m.max }
    }
}

/// A value of shared data and the token a conditional write must present.
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxySharedValue {
    /// The bytes.
    pub value: Vec<u8>,
    /// The compare-and-swap token.
    pub cas: u32,
}

// ---- configuration ----

/// Limits and engine settings of a `ProxyHost`; `nil` fields take the core's defaults.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct ProxyHostConfig {
    /// Most linear memory one VM may have, in bytes (default 64 MiB, at least 64 KiB).
    #[uniffi(default = None)]
    pub memory_limit: Option<u64>,
    /// Most CPU time one callback may take, in milliseconds (default 1000); a callback that runs longer
    /// fails its VM.
    #[uniffi(default = None)]
    pub callback_deadline_ms: Option<u64>,
    /// How often the deadline is checked, in milliseconds (default 2).
    #[uniffi(default = None)]
    pub epoch_tick_ms: Option<u64>,
    /// Use the pooling instance allocator (default true).
    #[uniffi(default = None)]
    pub pooling: Option<bool>,
    /// Most VMs (and canaries) alive at once with pooling (default 128).
    #[uniffi(default = None)]
    pub max_instances: Option<u32>,
    /// A directory for precompiled modules (default: none, every load compiles).
    #[uniffi(default = None)]
    pub module_cache_dir: Option<String>,
    /// Most guest stack in bytes (default 512 KiB).
    #[uniffi(default = None)]
    pub max_wasm_stack: Option<u64>,
}

impl ProxyHostConfig {
    fn core(self) -> Result<px::HostConfig, BcvError> {
        let mut c = px::HostConfig::default();
        if let Some(v) = self.memory_limit {
            c.memory_limit = v;
        }
        if let Some(ms) = self.callback_deadline_ms {
            c.callback_deadline = millis(ms);
        }
        if let Some(ms) = self.epoch_tick_ms {
            c.epoch_tick = millis(ms);
        }
        if let Some(v) = self.pooling {
            c.pooling = v;
        }
        if let Some(v) = self.max_instances {
            c.max_instances = v;
        }
        if let Some(dir) = self.module_cache_dir {
            c.module_cache_dir = Some(dir.into());
        }
        if let Some(v) = self.max_wasm_stack {
            c.max_wasm_stack = usize::try_from(v)
                .map_err(|_| BcvError::InvalidArgument { message: format!("max_wasm_stack {v} is too large") })?;
        }
        Ok(c)
    }
}

/// How to start a VM, and which services its `ProxyServicesCallback` offers. A service that is not
/// offered behaves as if the application had none: callouts are refused (HTTP: BAD_ARGUMENT, gRPC:
/// PARSE_FAILURE), unknown properties are NOT_FOUND, unregistered foreign functions are NOT_FOUND.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct ProxyVmConfig {
    /// The VM id: VMs with the same id share shared data and queues.
    #[uniffi(default = "")]
    pub vm_id: String,
    /// The VM configuration, readable in `on_vm_start`.
    #[uniffi(default)]
    pub configuration: Vec<u8>,
    /// Environment variables the guest sees through WASI (the process's own never leak).
    #[uniffi(default)]
    pub environment: HashMap<String, String>,
    /// Forward HTTP callouts to `httpCall`.
    #[uniffi(default = false)]
    pub http_calls: bool,
    /// Forward gRPC callouts to `grpcCall`.
    #[uniffi(default = false)]
    pub grpc_calls: bool,
    /// Ask `property` for properties the VM cannot answer itself.
    #[uniffi(default = false)]
    pub properties: bool,
    /// Give every log record to `log` as it is written.
    #[uniffi(default = false)]
    pub logs: bool,
    /// The foreign functions (by name) the plugin may call through `foreignFunction`.
    #[uniffi(default = [])]
    pub foreign_functions: Vec<String>,
    /// Re-create a failed VM on its next use (a fresh instance, `on_vm_start`, every open plugin configured
    /// again) at most this many times within `restart_window_ms`; 0 (the default): it stays failed.
    /// Contexts open at the failure stay failed. `ProxyVm.restarts()` counts them.
    #[uniffi(default = 0)]
    pub max_restarts: u32,
    /// The sliding window of `max_restarts`, in milliseconds (default 60 s).
    #[uniffi(default = 60000)]
    pub restart_window_ms: u64,
    /// The least time between a failure and the restart after it, in milliseconds (default 1 s).
    #[uniffi(default = 1000)]
    pub restart_backoff_ms: u64,
}

/// How to add a plugin (a root context) to a VM.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct ProxyPluginConfig {
    /// The plugin's name (logs, metrics, property `plugin_name`).
    pub name: String,
    /// The root id (property `plugin_root_id`).
    #[uniffi(default = "")]
    pub root_id: String,
    /// The plugin configuration, readable in `on_configure`.
    #[uniffi(default)]
    pub configuration: Vec<u8>,
    /// When the VM fails: true lets traffic through unfiltered; false (default) answers HTTP with a local
    /// 503 and closes TCP connections.
    #[uniffi(default = false)]
    pub fail_open: bool,
    /// Properties the plugin can read (`"a.b"` → value), before the `property` service.
    #[uniffi(default)]
    pub properties: HashMap<String, Vec<u8>>,
}

// ---- services ----

/// An HTTP callout a plugin dispatched (`proxy_http_call`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyHttpCallout {
    /// The id the plugin got back.
    pub call_id: u32,
    /// The upstream (cluster) name the plugin asked for.
    pub upstream: String,
    /// Request headers, with the `:method`, `:path` and `:authority` pseudo-headers.
    pub headers: Vec<ProxyHeader>,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Vec<ProxyHeader>,
    /// How long the plugin waits, in milliseconds; after that it sees a failed call and a late reply is
    /// ignored.
    pub timeout_ms: u64,
    /// The plugin that dispatched it.
    pub plugin: String,
}

/// A gRPC unary callout a plugin dispatched (`proxy_grpc_call`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyGrpcCallout {
    /// The id the plugin got back.
    pub call_id: u32,
    /// The upstream name.
    pub upstream: String,
    /// Fully qualified service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: Vec<ProxyHeader>,
    /// The serialized request message.
    pub message: Vec<u8>,
    /// How long the plugin waits, in milliseconds.
    pub timeout_ms: u64,
    /// The plugin that dispatched it.
    pub plugin: String,
}

/// A property lookup the VM could not answer from its own tables (`proxy_get_property`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Record)]
pub struct ProxyPropertyRequest {
    /// The plugin asking.
    pub plugin: String,
    /// The context asking.
    pub context_id: u32,
    /// The path segments, e.g. `["source", "address"]`.
    pub path: Vec<String>,
}

fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The one-shot answer of a callout. Answer it once, from any thread, at any time: inside the service
/// callback or later. Releasing it unanswered tells the plugin the call failed (HTTP: no response; gRPC:
/// status 14 UNAVAILABLE). A reply after the plugin's timeout, or after the VM is gone, is ignored.
#[derive(uniffi::Object)]
pub struct ProxyCalloutReply {
    call_id: u32,
    grpc: bool,
    reply: Mutex<Option<px::CalloutReply>>,
}

impl ProxyCalloutReply {
    fn new(call_id: u32, grpc: bool, reply: px::CalloutReply) -> Arc<ProxyCalloutReply> {
        Arc::new(ProxyCalloutReply { call_id, grpc, reply: Mutex::new(Some(reply)) })
    }

    fn take(&self) -> Result<px::CalloutReply, BcvError> {
        lock(&self.reply).take().ok_or_else(|| BcvError::AlreadyTaken {
            message: format!("callout {} was already answered (or refused)", self.call_id),
        })
    }

    /// Forgets the reply of a refused callout (the plugin already saw the refusal).
    fn disarm(&self) {
        drop(lock(&self.reply).take());
    }
}

#[uniffi::export]
impl ProxyCalloutReply {
    /// The id the plugin got back for the call.
    pub fn call_id(&self) -> u32 {
        self.call_id
    }

    /// True for a gRPC callout (answer with `respond_grpc`), false for HTTP (answer with `respond`).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// True until the callout is answered, failed or refused.
    pub fn is_pending(&self) -> bool {
        lock(&self.reply).is_some()
    }

    /// Delivers an HTTP response: `status` becomes the `:status` header (in front of `headers`, replacing
    /// one they carry). To a gRPC callout this delivers gRPC status 2 (UNKNOWN).
    /// Errors: `AlreadyTaken` when the callout was already answered.
    pub fn respond(
        &self,
        status: u32,
        headers: Vec<ProxyHeader>,
        body: Vec<u8>,
        trailers: Vec<ProxyHeader>,
    ) -> Result<(), BcvError> {
        let reply = self.take()?;
        let mut map = px::HeaderMap::new();
        map.add(":status", status.to_string());
        for h in headers.into_iter().filter(|h| !h.name.eq_ignore_ascii_case(":status")) {
            map.add(h.name, h.value);
        }
        reply.respond(px::CalloutResponse { headers: map, body, trailers: header_map(trailers) });
        Ok(())
    }

    /// Delivers a gRPC response: `status` 0 delivers `message`, another status closes the call with it.
    /// To an HTTP callout this is a failed call.
    /// Errors: `AlreadyTaken` when the callout was already answered.
    #[uniffi::method(default(status_message = "", initial_metadata = [], trailing_metadata = []))]
    pub fn respond_grpc(
        &self,
        status: u32,
        message: Vec<u8>,
        status_message: String,
        initial_metadata: Vec<ProxyHeader>,
        trailing_metadata: Vec<ProxyHeader>,
    ) -> Result<(), BcvError> {
        self.take()?.respond_grpc(px::GrpcResponse {
            status,
            status_message,
            initial_metadata: header_map(initial_metadata),
            message,
            trailing_metadata: header_map(trailing_metadata),
        });
        Ok(())
    }

    /// Tells the plugin the call failed (HTTP: no response headers; gRPC: status 14 UNAVAILABLE).
    /// Errors: `AlreadyTaken` when the callout was already answered.
    pub fn fail(&self) -> Result<(), BcvError> {
        self.take()?.fail();
        Ok(())
    }
}

/// The application's side of a VM, implemented in Swift (the `BCV` module adapts its `ProxyServices`
/// closures to this). Only the services named in `ProxyVmConfig` are called.
///
/// Every method runs synchronously on the thread that runs the plugin, while the VM is busy: it must not
/// call into the same VM (its contexts, plugins or the VM itself; that throws `BcvError.Reentrant`), must
/// not wait for another thread that does, and should return quickly. Reading `vm.takeLogs()` /
/// `vm.failure` is allowed.
#[uniffi::export(with_foreign)]
pub trait ProxyServicesCallback: Send + Sync {
    /// An HTTP callout. Keep `reply` and answer it (now or later, from any thread); throw
    /// `UnknownUpstream` or `Failed` to refuse the call (the plugin sees the refusal at once).
    fn http_call(&self, callout: ProxyHttpCallout, reply: Arc<ProxyCalloutReply>) -> Result<(), ProxyServiceError>;
    /// A gRPC unary callout, as `http_call`.
    fn grpc_call(&self, callout: ProxyGrpcCallout, reply: Arc<ProxyCalloutReply>) -> Result<(), ProxyServiceError>;
    /// A property the VM cannot answer itself; `nil` is NOT_FOUND.
    fn property(&self, request: ProxyPropertyRequest) -> Option<Vec<u8>>;
    /// The plugin calls foreign function `name` with `arguments`; the result goes back to the plugin.
    /// Throw `NotFound` (NOT_FOUND) or `Failed` (INTERNAL_FAILURE, the message is logged).
    fn foreign_function(&self, name: String, arguments: Vec<u8>) -> Result<Vec<u8>, ProxyServiceError>;
    /// A log record, as it is written (also kept by the VM for `take_logs`).
    fn log(&self, record: ProxyLogRecord);
}

/// Core's services that forward what `config` offers to `callback`.
fn services(callback: Option<Arc<dyn ProxyServicesCallback>>, config: &ProxyVmConfig) -> px::Services {
    let mut services = px::Services::new();
    let Some(callback) = callback else { return services };
    if config.http_calls {
        let cb = callback.clone();
        services = services.on_http_call(move |call| {
            let info = ProxyHttpCallout {
                call_id: call.call_id,
                upstream: call.upstream,
                headers: header_list(&call.headers),
                body: call.body,
                trailers: header_list(&call.trailers),
                timeout_ms: millis_of(call.timeout),
                plugin: call.plugin,
            };
            let reply = ProxyCalloutReply::new(call.call_id, false, call.reply);
            cb.http_call(info, reply.clone()).map_err(|e| {
                reply.disarm();
                e.rejected()
            })
        });
    }
    if config.grpc_calls {
        let cb = callback.clone();
        services = services.on_grpc_call(move |call| {
            let info = ProxyGrpcCallout {
                call_id: call.call_id,
                upstream: call.upstream,
                service: call.service,
                method: call.method,
                initial_metadata: header_list(&call.initial_metadata),
                message: call.message,
                timeout_ms: millis_of(call.timeout),
                plugin: call.plugin,
            };
            let reply = ProxyCalloutReply::new(call.call_id, true, call.reply);
            cb.grpc_call(info, reply.clone()).map_err(|e| {
                reply.disarm();
                e.rejected()
            })
        });
    }
    if config.properties {
        let cb = callback.clone();
        services = services.on_property(move |request| {
            cb.property(ProxyPropertyRequest {
                plugin: request.plugin.to_string(),
                context_id: request.context_id,
                path: request.path.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect(),
            })
        });
    }
    for name in &config.foreign_functions {
        let (cb, function) = (callback.clone(), name.clone());
        services = services.foreign_function(name.clone(), move |args| {
            cb.foreign_function(function.clone(), args.to_vec()).map_err(ProxyServiceError::foreign)
        });
    }
    if config.logs {
        let cb = callback;
        services = services.on_log(move |record| cb.log(record.into()));
    }
    services
}

// ---- host and module ----

/// The host's node.
struct HostNode(px::ProxyHost);

impl AsNode for HostNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// The Proxy-Wasm host: one wasmtime engine, the modules it compiled, and the stores VMs share (shared
/// data, queues, metrics). A node: closing it closes every VM, plugin and context under it.
///
/// Ownership: `deinit` releases it; VMs keep what they need, so objects may be released in any order.
#[derive(uniffi::Object)]
pub struct ProxyHost {
    inner: Arc<HostNode>,
}

impl HasNode for ProxyHost {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(ProxyHost);

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[uniffi::export]
impl ProxyHost {
    /// A host with `config` (a memory cap per VM, a CPU deadline per callback, …).
    /// Errors: `InvalidArgument` for a configuration wasmtime or core refuses; `Closed` after shutdown.
    #[uniffi::constructor]
    pub fn new(config: ProxyHostConfig) -> Result<Arc<ProxyHost>, BcvError> {
        let host = px::ProxyHost::new(config.core()?)?;
        Ok(Arc::new(ProxyHost { inner: Arc::new(HostNode(host)) }))
    }

    /// Compiles (or loads from the module cache) and checks a plugin module.
    /// Errors: `InvalidModule` for bytes that are not wasm, no ABI marker, no allocator or imports the host
    /// lacks; `Io` when the module cache cannot be written.
    pub fn load_module(&self, name: String, wasm: Vec<u8>) -> Result<Arc<ProxyModule>, BcvError> {
        let module = self.inner.0.load_module(&name, &wasm)?;
        Ok(Arc::new(ProxyModule { module }))
    }

    /// Starts a VM of `module`: instantiates it and runs its start functions (`on_vm_start` runs with the
    /// first plugin). `services` answers callouts, properties, foreign functions and logs, as `config`
    /// offers them; the VM holds it until the VM is gone.
    /// Errors: `VmFailed` when instantiation or the start code fails; `Closed` when the host is closed.
    pub fn start_vm(
        &self,
        module: Arc<ProxyModule>,
        config: ProxyVmConfig,
        services: Option<Arc<dyn ProxyServicesCallback>>,
    ) -> Result<Arc<ProxyVm>, BcvError> {
        let core_services = self::services(services, &config);
        let vm_config = px::VmConfig {
            vm_id: config.vm_id,
            configuration: config.configuration,
            environment: config.environment.into_iter().collect(),
            services: core_services,
            restart: (config.max_restarts > 0).then(|| px::RestartPolicy {
                max_restarts: config.max_restarts,
                window: millis(config.restart_window_ms),
                backoff: millis(config.restart_backoff_ms),
            }),
        };
        let vm = px::Vm::start(&self.inner.0, &module.module, vm_config)?;
        Ok(Arc::new(ProxyVm { inner: Arc::new(VmNode(vm)) }))
    }

    /// Every metric plugins defined, in definition order.
    pub fn metrics(&self) -> Vec<ProxyMetric> {
        self.inner.0.metrics().into_iter().map(Into::into).collect()
    }

    /// One metric by name; `nil` when no plugin defined it.
    pub fn metric(&self, name: String) -> Option<ProxyMetric> {
        self.inner.0.metric(&name).map(Into::into)
    }

    /// Shared data `key` of VM id `vm_id`, with its CAS token; `nil` when absent.
    pub fn shared_data(&self, vm_id: String, key: Vec<u8>) -> Option<ProxySharedValue> {
        self.inner.0.shared_data(&vm_id, &key).map(|v| ProxySharedValue { value: v.value, cas: v.cas })
    }

    /// Sets shared data as a plugin would; `cas` 0 is unconditional, otherwise it must match. Returns the
    /// new CAS token. Errors: `Conflict` when `cas` is stale; `InvalidArgument` for another refusal.
    #[uniffi::method(default(cas = 0))]
    pub fn set_shared_data(&self, vm_id: String, key: Vec<u8>, value: Vec<u8>, cas: u32) -> Result<u32, BcvError> {
        self.inner.0.set_shared_data(&vm_id, &key, &value, cas).map_err(|status| match status {
            px::Status::CasMismatch => BcvError::Conflict {
                message: format!("shared data {} of vm {vm_id:?}: the CAS token {cas} is stale", key_text(&key)),
            },
            other => BcvError::InvalidArgument {
                message: format!("shared data {} of vm {vm_id:?}: refused ({other:?})", key_text(&key)),
            },
        })
    }

    /// Removes shared data `key`; true when it existed.
    pub fn remove_shared_data(&self, vm_id: String, key: Vec<u8>) -> bool {
        self.inner.0.remove_shared_data(&vm_id, &key)
    }

    /// The keys of VM id `vm_id`'s shared data, sorted.
    pub fn shared_data_keys(&self, vm_id: String) -> Vec<Vec<u8>> {
        self.inner.0.shared_data_keys(&vm_id)
    }

    /// Enqueues `item` on shared queue `name` of `vm_id`; the registrant's `on_queue_ready` runs soon after.
    /// Errors: `NotFound` when no plugin registered the queue; `InvalidArgument` when it is full.
    pub fn enqueue(&self, vm_id: String, name: String, item: Vec<u8>) -> Result<(), BcvError> {
        self.inner.0.enqueue(&vm_id, &name, &item).map_err(|status| match status {
            px::Status::NotFound => {
                BcvError::NotFound { message: format!("shared queue {name:?} of vm {vm_id:?} is not registered") }
            }
            other => BcvError::InvalidArgument {
                message: format!("shared queue {name:?} of vm {vm_id:?}: refused ({other:?})"),
            },
        })
    }

    /// Items waiting in shared queue `name` of `vm_id`; `nil` when it is not registered.
    pub fn queue_len(&self, vm_id: String, name: String) -> Option<u64> {
        self.inner.0.queue_len(&vm_id, &name).map(|n| n as u64)
    }
}

/// A compiled, checked plugin module, ready to start VMs. Plain data (not a node); cheap to share.
#[derive(uniffi::Object)]
pub struct ProxyModule {
    module: px::PluginModule,
}

#[uniffi::export]
impl ProxyModule {
    /// The name it was loaded under.
    pub fn name(&self) -> String {
        self.module.name().to_string()
    }

    /// The Proxy-Wasm ABI version its marker export names: "0.1.0", "0.2.0" or "0.2.1".
    pub fn abi_version(&self) -> String {
        self.module.abi().name().to_string()
    }

    /// True when the compiled code came from the module cache.
    pub fn from_cache(&self) -> bool {
        self.module.from_cache()
    }

    /// SHA-256 of the wasm bytes, in hex.
    pub fn sha256(&self) -> String {
        self.module.sha256()
    }
}

// ---- VM and plugin ----

/// The VM's node.
struct VmNode(px::Vm);

impl AsNode for VmNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// A running VM: one instance of a module with its own store, holding plugins and their contexts. All
/// guest calls of a VM are serialized; run several VMs (they may share a VM id) to filter in parallel.
/// A trap or an exceeded limit fails only this VM (`get_failure`).
#[derive(uniffi::Object)]
pub struct ProxyVm {
    inner: Arc<VmNode>,
}

impl HasNode for ProxyVm {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(ProxyVm);

#[uniffi::export]
impl ProxyVm {
    /// The VM id.
    pub fn id(&self) -> String {
        self.inner.0.id().to_string()
    }

    /// Adds a plugin: a canary instance runs start, `on_vm_start` and `on_configure` first, then the same
    /// runs on this VM.
    /// Errors: `PluginRejected` when the canary or the real configure fails or refuses; `VmFailed` when the
    /// VM has failed; `Reentrant` from one of this VM's callbacks; `Closed`.
    pub fn add_plugin(&self, config: ProxyPluginConfig) -> Result<Arc<ProxyPlugin>, BcvError> {
        let plugin = self.inner.0.add_plugin(px::PluginConfig {
            name: config.name,
            root_id: config.root_id,
            configuration: config.configuration,
            fail_open: config.fail_open,
            properties: config.properties,
        })?;
        Ok(Arc::new(ProxyPlugin { inner: Arc::new(PluginNode(plugin)) }))
    }

    /// Why the VM failed, or `nil`. Never blocks on the VM (callable from its own callbacks).
    pub fn get_failure(&self) -> Option<ProxyFailure> {
        self.inner.0.failure().map(Into::into)
    }

    /// How many times the VM was re-created after a failure (`maxRestarts`). Never blocks on the VM.
    pub fn restarts(&self) -> u32 {
        self.inner.0.restarts()
    }

    /// Takes the log records kept so far (the newest 4096). Never blocks on the VM.
    pub fn take_logs(&self) -> Vec<ProxyLogRecord> {
        self.inner.0.take_logs().iter().map(Into::into).collect()
    }

    /// Bytes of linear memory the instance has now. Errors: `Reentrant` from this VM's callbacks.
    pub fn memory_size(&self) -> Result<u64, BcvError> {
        Ok(self.inner.0.memory_size()? as u64)
    }

    /// Live contexts (root and stream). Errors: `Reentrant` from this VM's callbacks.
    pub fn context_count(&self) -> Result<u64, BcvError> {
        Ok(self.inner.0.context_count()? as u64)
    }

    /// Blocks until no tick, queue notification or callout response is being delivered or queued, at most
    /// `timeout_ms`; false on timeout.
    pub fn wait_idle(&self, timeout_ms: u64) -> bool {
        self.inner.0.wait_idle(millis(timeout_ms))
    }
}

/// The plugin's node.
struct PluginNode(px::Plugin);

impl AsNode for PluginNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// A plugin (a root context) in a VM. Closing it (or releasing every reference) runs the root context's
/// `on_done`, `on_log` and `on_delete` and closes its stream contexts.
#[derive(uniffi::Object)]
pub struct ProxyPlugin {
    inner: Arc<PluginNode>,
}

impl HasNode for ProxyPlugin {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(ProxyPlugin);

#[uniffi::export]
impl ProxyPlugin {
    /// The plugin's name.
    pub fn name(&self) -> String {
        self.inner.0.name().to_string()
    }

    /// Its root context id.
    pub fn root_context_id(&self) -> u32 {
        self.inner.0.root_context_id()
    }

    /// True when traffic passes unfiltered after a VM failure.
    pub fn is_fail_open(&self) -> bool {
        self.inner.0.fail_open()
    }

    /// The VM's failure, or `nil`. Never blocks on the VM.
    pub fn get_failure(&self) -> Option<ProxyFailure> {
        self.inner.0.failure().map(Into::into)
    }

    /// A new HTTP stream context. A failed VM still gives one, whose calls follow the failure policy.
    /// Errors: `Closed` when the plugin is closed; `Reentrant` from a callback.
    pub fn http_context(&self) -> Result<Arc<ProxyHttpContext>, BcvError> {
        let ctx = self.inner.0.http_context()?;
        Ok(Arc::new(ProxyHttpContext { inner: Arc::new(HttpNode(ctx)) }))
    }

    /// A new TCP (network) stream context. Errors: as `http_context`.
    pub fn tcp_context(&self) -> Result<Arc<ProxyTcpContext>, BcvError> {
        let ctx = self.inner.0.tcp_context()?;
        Ok(Arc::new(ProxyTcpContext { inner: Arc::new(TcpNode(ctx)) }))
    }

    /// Calls the plugin's `proxy_on_foreign_function(root, function_id, size)`; the plugin reads
    /// `arguments` as its FOREIGN_FUNCTION_ARGUMENTS buffer (ABI 0.2.0 and later).
    /// Errors: `VmFailed` when the VM has failed or the callback trapped; `Reentrant`; `Closed`.
    pub fn call_foreign_function(&self, function_id: u32, arguments: Vec<u8>) -> Result<(), BcvError> {
        Ok(self.inner.0.call_foreign_function(function_id, &arguments)?)
    }
}

// ---- contexts ----

/// Waits on a paused stream without blocking the polling thread: the wait runs on a blocking thread of the
/// runtime in slices, so a cancelled `cancel` token ends it within about 50 ms.
async fn wait_paused(
    wait: impl Fn(Duration) -> px::ProxyResult<px::FilterAction> + Send + 'static,
    timeout_ms: u64,
    cancel: Option<Arc<CancelToken>>,
) -> Result<ProxyAction, BcvError> {
    let task = core::Runtime::global().tokio_handle().spawn_blocking(move || {
        let deadline = Instant::now() + millis(timeout_ms);
        loop {
            if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(BcvError::Cancelled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match wait(left.min(Duration::from_millis(50))) {
                Err(px::ProxyError::Timeout { .. }) if !left.is_zero() => continue,
                result => return Ok(ProxyAction::from(result?)),
            }
        }
    });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(BcvError::Io { message: format!("the wait failed: {e}") }),
    }
}

/// The HTTP context's node.
struct HttpNode(px::HttpContext);

impl AsNode for HttpNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// An HTTP request/response exchange through a plugin. Feed what arrives (`on_request_headers`, …), act
/// on the returned `ProxyAction`, and read back what the plugin changed. Releasing every reference (or
/// `close()`) finishes it, as `finish()` does.
///
/// Every call runs the plugin synchronously on the calling thread (bounded by the host's callback
/// deadline). Errors of every call: `ContextFinished` after `finish()`; `Closed`; `Reentrant` from one of
/// this VM's callbacks. A VM failure is not an error: the plugin's policy decides the action.
#[derive(uniffi::Object)]
pub struct ProxyHttpContext {
    inner: Arc<HttpNode>,
}

impl HasNode for ProxyHttpContext {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(ProxyHttpContext);

impl ProxyHttpContext {
    fn ctx(&self) -> &px::HttpContext {
        &self.inner.0
    }
}

#[uniffi::export]
impl ProxyHttpContext {
    /// The context id.
    pub fn id(&self) -> u32 {
        self.ctx().id()
    }

    /// Feeds the request headers; `end_of_stream` when there is no body.
    pub fn on_request_headers(&self, headers: Vec<ProxyHeader>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_request_headers(header_map(headers), end_of_stream)?.into())
    }

    /// Feeds a request body chunk (appended to what the plugin buffered); on `Continue` forward
    /// `take_request_body()`.
    pub fn on_request_body(&self, chunk: Vec<u8>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_request_body(&chunk, end_of_stream)?.into())
    }

    /// Feeds the request trailers.
    pub fn on_request_trailers(&self, trailers: Vec<ProxyHeader>) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_request_trailers(header_map(trailers))?.into())
    }

    /// Feeds the response headers (with `:status`).
    pub fn on_response_headers(&self, headers: Vec<ProxyHeader>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_response_headers(header_map(headers), end_of_stream)?.into())
    }

    /// Feeds a response body chunk; on `Continue` forward `take_response_body()`.
    pub fn on_response_body(&self, chunk: Vec<u8>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_response_body(&chunk, end_of_stream)?.into())
    }

    /// Feeds the response trailers.
    pub fn on_response_trailers(&self, trailers: Vec<ProxyHeader>) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_response_trailers(header_map(trailers))?.into())
    }

    /// Waits, without blocking the calling thread, until the paused `stream` continues, gets a local
    /// response or is closed, and returns that action (at once when it is not paused).
    /// Errors: `Timeout` after `timeout_ms` (nothing is lost; wait again); `Cancelled` through `cancel`.
    #[uniffi::method(default(cancel = None))]
    pub async fn wait(
        &self,
        stream: ProxyStream,
        timeout_ms: u64,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<ProxyAction, BcvError> {
        let node = self.inner.clone();
        wait_paused(move |slice| node.0.wait(stream.into(), slice), timeout_ms, cancel).await
    }

    /// Blocking form of `wait`. Errors: `Timeout`; `Reentrant` from one of this VM's callbacks.
    pub fn wait_blocking(&self, stream: ProxyStream, timeout_ms: u64) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().wait(stream.into(), millis(timeout_ms))?.into())
    }

    /// The request headers as the plugin left them.
    pub fn request_headers(&self) -> Result<Vec<ProxyHeader>, BcvError> {
        Ok(self.ctx().read_headers(px::MapType::HttpRequestHeaders, header_list)?)
    }

    /// The request trailers as the plugin left them.
    pub fn request_trailers(&self) -> Result<Vec<ProxyHeader>, BcvError> {
        Ok(self.ctx().read_headers(px::MapType::HttpRequestTrailers, header_list)?)
    }

    /// The response headers as the plugin left them.
    pub fn response_headers(&self) -> Result<Vec<ProxyHeader>, BcvError> {
        Ok(self.ctx().read_headers(px::MapType::HttpResponseHeaders, header_list)?)
    }

    /// The response trailers as the plugin left them.
    pub fn response_trailers(&self) -> Result<Vec<ProxyHeader>, BcvError> {
        Ok(self.ctx().read_headers(px::MapType::HttpResponseTrailers, header_list)?)
    }

    /// The local response the plugin sent, if any.
    pub fn local_response(&self) -> Result<Option<ProxyLocalResponse>, BcvError> {
        Ok(self.ctx().local_response()?.map(Into::into))
    }

    /// Takes the buffered request body (as the plugin left it) to forward it, leaving the buffer empty.
    pub fn take_request_body(&self) -> Result<Vec<u8>, BcvError> {
        Ok(self.ctx().take_request_body()?)
    }

    /// Takes the buffered response body.
    pub fn take_response_body(&self) -> Result<Vec<u8>, BcvError> {
        Ok(self.ctx().take_response_body()?)
    }

    /// A property as the plugin would read it (`"request.path"`, or one the plugin set); `nil` when absent.
    pub fn property(&self, path: String) -> Result<Option<Vec<u8>>, BcvError> {
        Ok(self.ctx().property(&path)?)
    }

    /// Sets a property of this context (`"source.address"`), visible to the plugin.
    pub fn set_property(&self, path: String, value: Vec<u8>) -> Result<(), BcvError> {
        Ok(self.ctx().set_property(&path, &value)?)
    }

    /// Finishes the context: `on_done`, then `on_log` + `on_delete`. False when the plugin deferred them
    /// (its `on_done` returned false) until it calls `proxy_done`. Later calls throw `ContextFinished`.
    pub fn finish(&self) -> Result<bool, BcvError> {
        Ok(self.ctx().finish()?)
    }

    /// Pipes a request body through the plugin (consumes `input`): what the plugin lets through comes out
    /// of the returned stream. It ends cleanly only after the plugin continued the final chunk; a local
    /// response, a close, a fail-closed VM failure or a pause longer than `pause_timeout_ms` ends it with
    /// `Closed`. Errors: `Closed`/`Busy` when `input` cannot be consumed.
    pub fn filter_request_body(
        &self,
        input: Arc<ReadStream>,
        pause_timeout_ms: u64,
    ) -> Result<Arc<ReadStream>, BcvError> {
        let output = self.ctx().filter_request_body(input.take()?, millis(pause_timeout_ms))?;
        Ok(ReadStream::wrap(output))
    }

    /// Pipes a response body through the plugin, as `filter_request_body`.
    pub fn filter_response_body(
        &self,
        input: Arc<ReadStream>,
        pause_timeout_ms: u64,
    ) -> Result<Arc<ReadStream>, BcvError> {
        let output = self.ctx().filter_response_body(input.take()?, millis(pause_timeout_ms))?;
        Ok(ReadStream::wrap(output))
    }
}

/// The TCP context's node.
struct TcpNode(px::TcpContext);

impl AsNode for TcpNode {
    fn node(&self) -> &core::Node {
        self.0.node()
    }
}

/// A TCP connection through a plugin (a network filter). Errors and threading as `ProxyHttpContext`; a
/// fail-closed plugin of a failed VM answers `Close`.
#[derive(uniffi::Object)]
pub struct ProxyTcpContext {
    inner: Arc<TcpNode>,
}

impl HasNode for ProxyTcpContext {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>> {
        Some(self.inner.clone() as Arc<dyn AsNode>)
    }
}

node_methods!(ProxyTcpContext);

impl ProxyTcpContext {
    fn ctx(&self) -> &px::TcpContext {
        &self.inner.0
    }
}

#[uniffi::export]
impl ProxyTcpContext {
    /// The context id.
    pub fn id(&self) -> u32 {
        self.ctx().id()
    }

    /// A new connection arrived.
    pub fn on_new_connection(&self) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_new_connection()?.into())
    }

    /// Data from the client; on `Continue` forward `take_downstream_data()`.
    pub fn on_downstream_data(&self, data: Vec<u8>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_downstream_data(&data, end_of_stream)?.into())
    }

    /// Data from the server; on `Continue` forward `take_upstream_data()`.
    pub fn on_upstream_data(&self, data: Vec<u8>, end_of_stream: bool) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().on_upstream_data(&data, end_of_stream)?.into())
    }

    /// The client side closed.
    pub fn on_downstream_close(&self, peer: ProxyPeer) -> Result<(), BcvError> {
        Ok(self.ctx().on_downstream_close(peer.into())?)
    }

    /// The server side closed.
    pub fn on_upstream_close(&self, peer: ProxyPeer) -> Result<(), BcvError> {
        Ok(self.ctx().on_upstream_close(peer.into())?)
    }

    /// Takes the buffered client data as the plugin left it.
    pub fn take_downstream_data(&self) -> Result<Vec<u8>, BcvError> {
        Ok(self.ctx().take_downstream_data()?)
    }

    /// Takes the buffered server data as the plugin left it.
    pub fn take_upstream_data(&self) -> Result<Vec<u8>, BcvError> {
        Ok(self.ctx().take_upstream_data()?)
    }

    /// Waits, without blocking the calling thread, for a paused direction (`Downstream` or `Upstream`),
    /// as `ProxyHttpContext.wait`.
    #[uniffi::method(default(cancel = None))]
    pub async fn wait(
        &self,
        stream: ProxyStream,
        timeout_ms: u64,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<ProxyAction, BcvError> {
        let node = self.inner.clone();
        wait_paused(move |slice| node.0.wait(stream.into(), slice), timeout_ms, cancel).await
    }

    /// Blocking form of `wait`.
    pub fn wait_blocking(&self, stream: ProxyStream, timeout_ms: u64) -> Result<ProxyAction, BcvError> {
        Ok(self.ctx().wait(stream.into(), millis(timeout_ms))?.into())
    }

    /// A property as the plugin would read it; `nil` when absent.
    pub fn property(&self, path: String) -> Result<Option<Vec<u8>>, BcvError> {
        Ok(self.ctx().property(&path)?)
    }

    /// Sets a property of this context, visible to the plugin.
    pub fn set_property(&self, path: String, value: Vec<u8>) -> Result<(), BcvError> {
        Ok(self.ctx().set_property(&path, &value)?)
    }

    /// Finishes the context (`on_done`, `on_log`, `on_delete`); false when the plugin deferred it.
    pub fn finish(&self) -> Result<bool, BcvError> {
        Ok(self.ctx().finish()?)
    }
}
