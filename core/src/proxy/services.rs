//! What the embedder supplies to a VM: callouts, properties, foreign functions and a log sink.
//!
//! Every callback runs on the thread that is running the plugin, while that VM is busy: it must not call
//! back into the same VM (that is refused with [`ProxyError::Reentrant`](super::ProxyError::Reentrant)).
//! Callouts are answered later, from any thread, through the [`CalloutReply`] they carry.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::headers::HeaderMap;
use super::types::LogLevel;
use super::vm::Event;

/// One log line of a plugin, as given to the embedder and kept by the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The VM's id.
    pub vm_id: String,
    /// The plugin's name (empty during VM start, before any plugin exists).
    pub plugin: String,
    /// The context that logged (0 during start).
    pub context_id: u32,
    /// The message (WASI stdout/stderr lines arrive as Info/Error).
    pub message: String,
}

/// An HTTP callout a plugin dispatched (`proxy_http_call`), handed to the embedder.
pub struct HttpCallout {
    /// The id the plugin got back; its response is matched by it.
    pub call_id: u32,
    /// The upstream (cluster) name the plugin asked for.
    pub upstream: String,
    /// Request headers, with the `:method`, `:path` and `:authority` pseudo-headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// How long the plugin waits; after that it is told the call failed and a late reply is ignored.
    pub timeout: Duration,
    /// The plugin that dispatched it.
    pub plugin: String,
    /// Where the response goes. Dropping it unanswered tells the plugin the call failed.
    pub reply: CalloutReply,
}

impl fmt::Debug for HttpCallout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCallout")
            .field("call_id", &self.call_id)
            .field("upstream", &self.upstream)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The response to an HTTP callout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CalloutResponse {
    /// Response headers; put the status in `:status`.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// A gRPC unary callout a plugin dispatched (`proxy_grpc_call`).
pub struct GrpcCallout {
    /// The id the plugin got back.
    pub call_id: u32,
    /// The upstream name.
    pub upstream: String,
    /// Fully qualified service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: HeaderMap,
    /// The serialized request message.
    pub message: Vec<u8>,
    /// How long the plugin waits.
    pub timeout: Duration,
    /// The plugin that dispatched it.
    pub plugin: String,
    /// Where the response goes. Dropping it unanswered closes the call with gRPC status 14 (UNAVAILABLE).
    pub reply: CalloutReply,
}

impl fmt::Debug for GrpcCallout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCallout")
            .field("call_id", &self.call_id)
            .field("upstream", &self.upstream)
            .field("service", &self.service)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// The response to a gRPC unary callout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcResponse {
    /// gRPC status code (0 = OK).
    pub status: u32,
    /// gRPC status message (read by the plugin through `proxy_get_status`).
    pub status_message: String,
    /// Initial metadata.
    pub initial_metadata: HeaderMap,
    /// The response message (delivered only when `status` is 0).
    pub message: Vec<u8>,
    /// Trailing metadata.
    pub trailing_metadata: HeaderMap,
}

/// The plugin's side of a gRPC stream the embedder accepted: messages and closes the plugin sends.
pub trait GrpcStreamSink: Send {
    /// The plugin sent `message`; `end_stream` half-closes the stream.
    fn send(&mut self, message: &[u8], end_stream: bool);
    /// The plugin closed the stream (`proxy_grpc_close`).
    fn close(&mut self);
    /// The plugin cancelled the stream (`proxy_grpc_cancel`).
    fn cancel(&mut self);
}

/// A gRPC stream a plugin opened (`proxy_grpc_stream`).
pub struct GrpcStreamOpen {
    /// The stream id the plugin got back.
    pub stream_id: u32,
    /// The upstream name.
    pub upstream: String,
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: HeaderMap,
    /// The plugin that opened it.
    pub plugin: String,
    /// Delivers what the remote side sends to the plugin.
    pub peer: GrpcStreamPeer,
}

/// Delivers a gRPC stream's incoming side to the plugin. Cloneable; usable from any thread.
#[derive(Clone)]
pub struct GrpcStreamPeer {
    pub(crate) stream_id: u32,
    pub(crate) events: Sender<Event>,
}

impl GrpcStreamPeer {
    /// Delivers initial metadata (`proxy_on_grpc_receive_initial_metadata`).
    pub fn initial_metadata(&self, metadata: HeaderMap) {
        let _ = self.events.send(Event::GrpcStream { id: self.stream_id, item: GrpcStreamItem::Initial(metadata) });
    }
    /// Delivers one message (`proxy_on_grpc_receive`).
    pub fn message(&self, message: Vec<u8>) {
        let _ = self.events.send(Event::GrpcStream { id: self.stream_id, item: GrpcStreamItem::Message(message) });
    }
    /// Delivers trailing metadata (`proxy_on_grpc_receive_trailing_metadata`).
    pub fn trailing_metadata(&self, metadata: HeaderMap) {
        let _ = self.events.send(Event::GrpcStream { id: self.stream_id, item: GrpcStreamItem::Trailing(metadata) });
    }
    /// Closes the stream with a gRPC status (`proxy_on_grpc_close`).
    pub fn close(&self, status: u32, message: impl Into<String>) {
        let item = GrpcStreamItem::Close(status, message.into());
        let _ = self.events.send(Event::GrpcStream { id: self.stream_id, item });
    }
}

/// One item of a gRPC stream's incoming side.
#[derive(Debug)]
pub(crate) enum GrpcStreamItem {
    Initial(HeaderMap),
    Message(Vec<u8>),
    Trailing(HeaderMap),
    Close(u32, String),
}

/// What a callout's answer carries.
#[derive(Debug)]
pub(crate) enum CalloutResult {
    Http(Option<CalloutResponse>),
    Grpc(GrpcResponse),
    /// Not a callout: the driver answers it once everything queued before it was delivered.
    Flush(Sender<()>),
}

/// The one-shot answer channel of a callout. `Send`; answer it from any thread.
pub struct CalloutReply {
    pub(crate) call_id: u32,
    pub(crate) grpc: bool,
    pub(crate) events: Option<Sender<Event>>,
}

impl CalloutReply {
    /// Delivers an HTTP response to the plugin. Ignored when the call already timed out or the VM is gone.
    pub fn respond(mut self, response: CalloutResponse) {
        self.send(if self.grpc {
            CalloutResult::Grpc(GrpcResponse {
                status: 2,
                status_message: "HTTP reply to a gRPC call".into(),
                ..Default::default()
            })
        } else {
            CalloutResult::Http(Some(response))
        });
    }

    /// Delivers a gRPC response to the plugin.
    pub fn respond_grpc(mut self, response: GrpcResponse) {
        self.send(if self.grpc { CalloutResult::Grpc(response) } else { CalloutResult::Http(None) });
    }

    /// Tells the plugin the call failed (an HTTP call sees no headers; a gRPC call status 14).
    pub fn fail(mut self) {
        self.send_failure();
    }

    fn send_failure(&mut self) {
        let result = if self.grpc {
            CalloutResult::Grpc(GrpcResponse {
                status: 14,
                status_message: "callout failed".into(),
                ..Default::default()
            })
        } else {
            CalloutResult::Http(None)
        };
        self.send(result);
    }

    fn send(&mut self, result: CalloutResult) {
        if let Some(events) = self.events.take() {
            let _ = events.send(Event::Callout { id: self.call_id, result });
        }
    }
}

impl Drop for CalloutReply {
    fn drop(&mut self) {
        if self.events.is_some() {
            self.send_failure();
        }
    }
}

/// Why the embedder refused to start a callout. The plugin sees a status for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutRejected {
    /// No such upstream (HTTP: BAD_ARGUMENT, gRPC: PARSE_FAILURE).
    UnknownUpstream,
    /// Any other failure (INTERNAL_FAILURE).
    Failed,
}

/// A property lookup the VM could not answer from its own tables (`proxy_get_property`).
#[derive(Debug)]
pub struct PropertyRequest<'a> {
    /// The plugin asking.
    pub plugin: &'a str,
    /// The context asking.
    pub context_id: u32,
    /// The path segments (`["request", "path"]`).
    pub path: &'a [&'a [u8]],
}

/// Why a foreign function failed. The plugin sees NOT_FOUND or INTERNAL_FAILURE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForeignError {
    /// The function does not know the arguments (NOT_FOUND).
    NotFound,
    /// Any other failure (INTERNAL_FAILURE).
    Failed(String),
}

/// Handler of HTTP callouts.
pub type HttpCallHandler = Arc<dyn Fn(HttpCallout) -> Result<(), CalloutRejected> + Send + Sync>;
/// Handler of gRPC unary callouts.
pub type GrpcCallHandler = Arc<dyn Fn(GrpcCallout) -> Result<(), CalloutRejected> + Send + Sync>;
/// Handler of gRPC streams.
pub type GrpcStreamHandler =
    Arc<dyn Fn(GrpcStreamOpen) -> Result<Box<dyn GrpcStreamSink>, CalloutRejected> + Send + Sync>;
/// Answers property lookups; `None` is NOT_FOUND.
pub type PropertyHandler = Arc<dyn Fn(&PropertyRequest<'_>) -> Option<Vec<u8>> + Send + Sync>;
/// A foreign function the plugin calls by name (`proxy_call_foreign_function`).
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, ForeignError> + Send + Sync>;
/// Receives every log record as it is written.
pub type LogHandler = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// The embedder's side of a VM. Every part is optional: without a handler, callouts are refused
/// (BAD_ARGUMENT / PARSE_FAILURE), unknown properties are NOT_FOUND, and logs go to `tracing` and the VM's
/// log buffer only.
#[derive(Clone, Default)]
pub struct Services {
    pub(crate) http_call: Option<HttpCallHandler>,
    pub(crate) grpc_call: Option<GrpcCallHandler>,
    pub(crate) grpc_stream: Option<GrpcStreamHandler>,
    pub(crate) property: Option<PropertyHandler>,
    pub(crate) foreign: HashMap<String, ForeignFunction>,
    pub(crate) log: Option<LogHandler>,
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("http_call", &self.http_call.is_some())
            .field("grpc_call", &self.grpc_call.is_some())
            .field("grpc_stream", &self.grpc_stream.is_some())
            .field("property", &self.property.is_some())
            .field("foreign", &self.foreign.keys().collect::<Vec<_>>())
            .field("log", &self.log.is_some())
            .finish()
    }
}

impl Services {
    /// No services.
    pub fn new() -> Services {
        Services::default()
    }

    /// Handles HTTP callouts.
    pub fn on_http_call(
        mut self,
        handler: impl Fn(HttpCallout) -> Result<(), CalloutRejected> + Send + Sync + 'static,
    ) -> Self {
        self.http_call = Some(Arc::new(handler));
        self
    }

    /// Handles gRPC unary callouts.
    pub fn on_grpc_call(
        mut self,
        handler: impl Fn(GrpcCallout) -> Result<(), CalloutRejected> + Send + Sync + 'static,
    ) -> Self {
        self.grpc_call = Some(Arc::new(handler));
        self
    }

    /// Handles gRPC streams.
    pub fn on_grpc_stream(
        mut self,
        handler: impl Fn(GrpcStreamOpen) -> Result<Box<dyn GrpcStreamSink>, CalloutRejected> + Send + Sync + 'static,
    ) -> Self {
        self.grpc_stream = Some(Arc::new(handler));
        self
    }

    /// Answers property lookups that the VM's own tables do not.
    pub fn on_property(
        mut self,
        handler: impl Fn(&PropertyRequest<'_>) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.property = Some(Arc::new(handler));
        self
    }

    /// Registers a foreign function under `name` (replacing one of the same name).
    pub fn foreign_function(
        mut self,
        name: impl Into<String>,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, ForeignError> + Send + Sync + 'static,
    ) -> Self {
        self.foreign.insert(name.into(), Arc::new(function));
        self
    }

    /// Receives every log record.
    pub fn on_log(mut self, handler: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        self.log = Some(Arc::new(handler));
        self
    }
}
