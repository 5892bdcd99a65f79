//! Stream contexts: an HTTP request/response exchange or a TCP connection passing through a plugin.
//!
//! The embedder feeds what arrives (`on_request_headers`, `on_request_body`, …) and gets a
//! [`FilterAction`] back; what the plugin changed is read back with the getters (`request_headers`,
//! `take_request_body`, …). A paused stream is waited on with [`HttpContext::wait`] until the plugin
//! continues it (typically from a callout response), replies locally, or closes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::{ProxyError, ProxyResult};
use super::headers::HeaderMap;
use super::plugin::{Plugin, PluginInner};
use super::properties;
use super::state::{ContextData, ContextKind, Ending, Flow, HttpData, LocalResponse, TcpData};
use super::types::{AbiVersion, MapType, PeerType, StreamType};
use super::vm::{VmCore, flow_after};
use crate::handle::{CloseReason, Closed, Node, NodeHooks, ReadStream, TaskResource};

/// What the embedder does with a stream after a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterAction {
    /// Pass the (possibly changed) headers or data on.
    Continue,
    /// Hold the stream: buffer what arrives and [`wait`](HttpContext::wait) for the plugin.
    Pause,
    /// Do not forward: answer the client with this response instead.
    LocalResponse(LocalResponse),
    /// Reset / close the stream.
    Close,
}

/// The response a fail-closed plugin of a failed VM answers with.
fn failed_response(plugin: &PluginInner, reason: &str) -> LocalResponse {
    LocalResponse {
        status: 503,
        details: format!("plugin {} failed: {reason}", plugin.identity.name),
        body: b"plugin failed\n".to_vec(),
        headers: HeaderMap::new(),
        grpc_status: None,
    }
}

/// True while `plugin` is open and its root context lives in the VM.
pub(crate) fn plugin_root_live(plugin: &PluginInner, core: &mut VmCore) -> bool {
    plugin.resource.core.is_open()
        && core.state().contexts.get(&plugin.identity.root_context).is_some_and(|c| c.ending == Ending::Live)
}

struct ContextHooks {
    plugin: Arc<PluginInner>,
    id: u32,
    finished: Arc<AtomicBool>,
}

impl NodeHooks for ContextHooks {
    fn on_teardown(&self) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut core) = self.plugin.vm.lock() {
            core.finish_context(self.id);
            self.plugin.vm.settle(&mut core);
        }
    }
}

/// The part HTTP and TCP contexts share.
struct ContextBase {
    plugin: Arc<PluginInner>,
    id: u32,
    /// Set once the context is gone from the VM, so teardown need not lock it.
    finished: Arc<AtomicBool>,
    resource: TaskResource,
    kind: &'static str,
}

impl ContextBase {
    fn create(
        plugin: &Plugin,
        kind: ContextKind,
        label: &'static str,
        name: &'static str,
    ) -> ProxyResult<(ContextBase, Node)> {
        let inner = plugin.inner.clone();
        let vm = inner.vm.clone();
        let mut core = vm.lock_for_work()?;
        // A closed plugin's root context is gone from the guest (or going): creating a stream context under
        // it would make the SDK trap on an unknown root and fail the whole VM.
        if !plugin_root_live(&inner, &mut core) {
            return Err(ProxyError::Closed(Closed::new(CloseReason::Parent)));
        }
        let id = core.state().allocate_context_id();
        core.state().contexts.insert(id, ContextData::new(kind, inner.identity.clone()));
        let create = core.exports.context_create.clone();
        let _ = core.call(&create, id, (id as i32, inner.identity.root_context as i32));
        vm.settle(&mut core);
        drop(core);
        let finished = Arc::new(AtomicBool::new(false));
        let hooks = ContextHooks { plugin: inner.clone(), id, finished: finished.clone() };
        let created = TaskResource::create_with(
            &vm.shared.host.runtime,
            label,
            Some(&inner.resource.core),
            Some(Box::new(hooks)),
        );
        let (resource, node) = match created {
            Ok(created) => created,
            Err(closed) => {
                // The plugin was closed while the guest created the context: end it in the VM too.
                if let Ok(mut core) = vm.lock() {
                    core.finish_context(id);
                    vm.settle(&mut core);
                }
                return Err(ProxyError::Closed(closed));
            }
        };
        Ok((ContextBase { plugin: inner, id, finished, resource, kind: name }, node))
    }

    fn name(&self) -> String {
        self.plugin.context_name(self.kind, self.id)
    }

    fn invalid(&self, reason: &str) -> ProxyError {
        ProxyError::InvalidState { context: self.name(), reason: reason.to_string() }
    }

    /// Locks the VM for a call on this context, checking that the context is open and live.
    fn lock(&self) -> ProxyResult<std::sync::MutexGuard<'_, VmCore>> {
        if !self.resource.core.is_open() {
            return Err(ProxyError::Closed(Closed::new(CloseReason::SelfClosed)));
        }
        let mut core = self.plugin.vm.lock()?;
        match core.state().contexts.get(&self.id).map(|c| c.ending) {
            Some(Ending::Live) => Ok(core),
            Some(_) => Err(self.invalid("the context has finished")),
            None if core.failed.is_some() => Ok(core),
            None => Err(self.invalid("the context has finished")),
        }
    }

    /// The action after a callback on `stream` returned `returned` (None: missing export or failed VM).
    fn action(
        &self,
        core: &mut VmCore,
        stream: StreamType,
        returned: Result<Option<i32>, super::FailReason>,
    ) -> FilterAction {
        let paused = match returned {
            Ok(value) => value.unwrap_or(0) != 0,
            Err(reason) => {
                self.plugin.vm.settle(core);
                return self.failure_action(&reason.to_string(), stream);
            }
        };
        flow_after(core, self.id, stream, paused);
        self.plugin.vm.settle(core);
        self.current_action(core, stream)
    }

    fn failure_action(&self, reason: &str, stream: StreamType) -> FilterAction {
        if self.plugin.fail_open {
            FilterAction::Continue
        } else if matches!(stream, StreamType::HttpRequest | StreamType::HttpResponse) {
            FilterAction::LocalResponse(failed_response(&self.plugin, reason))
        } else {
            FilterAction::Close
        }
    }

    /// Where `stream` stands now.
    fn current_action(&self, core: &mut VmCore, stream: StreamType) -> FilterAction {
        if let Some(reason) = core.failed.as_ref().or_else(|| core.orphans.get(&self.id)) {
            return self.failure_action(&reason.to_string(), stream);
        }
        let Some(ctx) = core.state().contexts.get(&self.id) else { return FilterAction::Close };
        if let Some(response) = ctx.http().and_then(|h| h.local_response.clone()) {
            return FilterAction::LocalResponse(response);
        }
        match ctx.flows[stream.index()] {
            Flow::Open => FilterAction::Continue,
            Flow::Paused => FilterAction::Pause,
            Flow::Closed => FilterAction::Close,
        }
    }

    fn wait(&self, stream: StreamType, timeout: Duration) -> ProxyResult<FilterAction> {
        let vm = &self.plugin.vm;
        let deadline = Instant::now() + timeout;
        let mut core = vm.lock()?;
        loop {
            let action = self.current_action(&mut core, stream);
            if action != FilterAction::Pause {
                return Ok(action);
            }
            if !self.resource.core.is_open() {
                return Err(ProxyError::Closed(Closed::new(CloseReason::SelfClosed)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProxyError::Timeout { context: self.name() });
            }
            core.waiters += 1;
            core = vm
                .changed
                .wait_timeout(core, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            core.waiters -= 1;
        }
    }

    fn finish(&self) -> ProxyResult<bool> {
        let vm = &self.plugin.vm;
        let mut core = vm.lock()?;
        let gone = core.finish_context(self.id);
        vm.settle(&mut core);
        self.finished.store(gone, Ordering::Release);
        Ok(gone)
    }

    fn property(&self, path: &str) -> ProxyResult<Option<Vec<u8>>> {
        let key = properties::key_of_dotted(path);
        let segments: Vec<&[u8]> = key.split(|b| *b == 0).collect();
        let mut core = self.plugin.vm.lock()?;
        let id = self.id;
        Ok(core.as_running(|state| properties::lookup(state, id, &segments)))
    }

    fn set_property(&self, path: &str, value: &[u8]) -> ProxyResult<()> {
        let mut core = self.lock()?;
        if let Some(ctx) = core.state().contexts.get_mut(&self.id) {
            ctx.properties.insert(properties::key_of_dotted(path), value.to_vec());
        }
        Ok(())
    }
}

/// An HTTP request/response exchange through a plugin. `Send + Sync`; calls are serialized by the VM.
///
/// Dropping the last handle (or closing its node) finishes the context: `on_done`, then `on_log` and
/// `on_delete` (at once, or after the plugin calls `proxy_done`).
#[derive(Clone)]
pub struct HttpContext {
    base: Arc<ContextBase>,
    node: Node,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base.name())
    }
}

macro_rules! http_getter {
    ($(#[$doc:meta])* $name:ident, $field:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $name(&self) -> ProxyResult<$ty> {
            self.with_http(|h| h.$field.clone())
        }
    };
}

impl HttpContext {
    pub(crate) fn create(plugin: &Plugin) -> ProxyResult<HttpContext> {
        let kind = ContextKind::Http(Box::default());
        let (base, node) = ContextBase::create(plugin, kind, "proxy http context", "http")?;
        Ok(HttpContext { base: Arc::new(base), node })
    }

    /// The context id.
    pub fn id(&self) -> u32 {
        self.base.id
    }

    /// The context's node (close, state).
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn with_http<T>(&self, read: impl FnOnce(&mut HttpData) -> T) -> ProxyResult<T> {
        let mut core = self.base.plugin.vm.lock()?;
        match core.state().contexts.get_mut(&self.base.id).and_then(|c| c.http_mut()) {
            Some(http) => Ok(read(http)),
            None => Err(self.base.invalid("the context has finished")),
        }
    }

    fn headers_call(&self, stream: StreamType, headers: HeaderMap, end_of_stream: bool) -> ProxyResult<FilterAction> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let n = headers.len() as i32;
        if let Some(http) = core.state().contexts.get_mut(&id).and_then(|c| c.http_mut()) {
            match stream {
                StreamType::HttpRequest => http.request_headers = headers,
                _ => http.response_headers = headers,
            }
        }
        let abi = core.state().abi;
        let eos = end_of_stream as i32;
        let returned = match (stream, abi) {
            (StreamType::HttpRequest, AbiVersion::V0_1_0) => {
                let f = core.exports.request_headers_v1.clone();
                core.call(&f, id, (id as i32, n))
            }
            (StreamType::HttpRequest, _) => {
                let f = core.exports.request_headers.clone();
                core.call(&f, id, (id as i32, n, eos))
            }
            (_, AbiVersion::V0_1_0) => {
                let f = core.exports.response_headers_v1.clone();
                core.call(&f, id, (id as i32, n))
            }
            _ => {
                let f = core.exports.response_headers.clone();
                core.call(&f, id, (id as i32, n, eos))
            }
        };
        Ok(self.base.action(&mut core, stream, returned))
    }

    fn body_call(&self, stream: StreamType, chunk: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let mut size = 0;
        if let Some(http) = core.state().contexts.get_mut(&id).and_then(|c| c.http_mut()) {
            let body = if stream == StreamType::HttpRequest { &mut http.request_body } else { &mut http.response_body };
            body.extend_from_slice(chunk);
            size = body.len() as i32;
        }
        let f = if stream == StreamType::HttpRequest {
            core.exports.request_body.clone()
        } else {
            core.exports.response_body.clone()
        };
        let returned = core.call(&f, id, (id as i32, size, end_of_stream as i32));
        Ok(self.base.action(&mut core, stream, returned))
    }

    fn trailers_call(&self, stream: StreamType, trailers: HeaderMap) -> ProxyResult<FilterAction> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let n = trailers.len() as i32;
        if let Some(http) = core.state().contexts.get_mut(&id).and_then(|c| c.http_mut()) {
            match stream {
                StreamType::HttpRequest => http.request_trailers = trailers,
                _ => http.response_trailers = trailers,
            }
        }
        let f = if stream == StreamType::HttpRequest {
            core.exports.request_trailers.clone()
        } else {
            core.exports.response_trailers.clone()
        };
        let returned = core.call(&f, id, (id as i32, n));
        Ok(self.base.action(&mut core, stream, returned))
    }

    /// Feeds the request headers (`proxy_on_request_headers`); `end_of_stream` when there is no body.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished; [`ProxyError::Closed`];
    /// [`ProxyError::Reentrant`]. A VM failure is not an error: the plugin's policy decides the action.
    pub fn on_request_headers(&self, headers: HeaderMap, end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.headers_call(StreamType::HttpRequest, headers, end_of_stream)
    }

    /// Feeds a request body chunk. It is appended to the buffered body the plugin sees; on
    /// [`FilterAction::Continue`] forward [`take_request_body`](Self::take_request_body).
    ///
    /// Errors: as [`on_request_headers`](Self::on_request_headers).
    pub fn on_request_body(&self, chunk: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.body_call(StreamType::HttpRequest, chunk, end_of_stream)
    }

    /// Feeds the request trailers.
    ///
    /// Errors: as [`on_request_headers`](Self::on_request_headers).
    pub fn on_request_trailers(&self, trailers: HeaderMap) -> ProxyResult<FilterAction> {
        self.trailers_call(StreamType::HttpRequest, trailers)
    }

    /// Feeds the response headers (with `:status`).
    ///
    /// Errors: as [`on_request_headers`](Self::on_request_headers).
    pub fn on_response_headers(&self, headers: HeaderMap, end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.headers_call(StreamType::HttpResponse, headers, end_of_stream)
    }

    /// Feeds a response body chunk; on Continue forward [`take_response_body`](Self::take_response_body).
    ///
    /// Errors: as [`on_request_headers`](Self::on_request_headers).
    pub fn on_response_body(&self, chunk: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.body_call(StreamType::HttpResponse, chunk, end_of_stream)
    }

    /// Feeds the response trailers.
    ///
    /// Errors: as [`on_request_headers`](Self::on_request_headers).
    pub fn on_response_trailers(&self, trailers: HeaderMap) -> ProxyResult<FilterAction> {
        self.trailers_call(StreamType::HttpResponse, trailers)
    }

    /// Waits until a paused request (`StreamType::HttpRequest`) or response continues, gets a local
    /// response, or is closed, and returns that action. Returns at once when the stream is not paused.
    ///
    /// Errors: [`ProxyError::Timeout`] after `timeout` (nothing is lost; wait again or give up);
    /// [`ProxyError::Reentrant`] from a VM callback.
    pub fn wait(&self, stream: StreamType, timeout: Duration) -> ProxyResult<FilterAction> {
        self.base.wait(stream, timeout)
    }

    /// Reads one of this exchange's header maps (`HttpRequestHeaders`, `HttpRequestTrailers`,
    /// `HttpResponseHeaders`, `HttpResponseTrailers`) as the plugin left it, in place: `read` gets a borrow,
    /// so nothing is copied (the getters below copy). `read` runs with the VM locked; a call back into this
    /// VM from it gets [`ProxyError::Reentrant`].
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished or for a map type that is not one of
    /// the four; [`ProxyError::Reentrant`] from a VM callback.
    pub fn read_headers<T>(&self, map: MapType, read: impl FnOnce(&HeaderMap) -> T) -> ProxyResult<T> {
        let mut core = self.base.plugin.vm.lock()?;
        let id = self.base.id;
        let found = core.as_running(|state| {
            let http = state.contexts.get(&id).and_then(|c| c.http()).ok_or("the context has finished")?;
            let headers = match map {
                MapType::HttpRequestHeaders => &http.request_headers,
                MapType::HttpRequestTrailers => &http.request_trailers,
                MapType::HttpResponseHeaders => &http.response_headers,
                MapType::HttpResponseTrailers => &http.response_trailers,
                _ => return Err("only request and response headers and trailers belong to an HTTP context"),
            };
            Ok(read(headers))
        });
        found.map_err(|reason| self.base.invalid(reason))
    }

    http_getter!(
        /// The request headers as the plugin left them (a copy; see [`read_headers`](Self::read_headers)).
        request_headers, request_headers, HeaderMap
    );
    http_getter!(
        /// The request trailers as the plugin left them.
        request_trailers, request_trailers, HeaderMap
    );
    http_getter!(
        /// The response headers as the plugin left them.
        response_headers, response_headers, HeaderMap
    );
    http_getter!(
        /// The response trailers as the plugin left them.
        response_trailers, response_trailers, HeaderMap
    );
    http_getter!(
        /// The local response the plugin sent, if any.
        local_response, local_response, Option<LocalResponse>
    );

    /// Takes the buffered request body (as the plugin left it) to forward it, leaving the buffer empty.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn take_request_body(&self) -> ProxyResult<Vec<u8>> {
        self.with_http(|h| std::mem::take(&mut h.request_body))
    }

    /// Takes the buffered response body.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn take_response_body(&self) -> ProxyResult<Vec<u8>> {
        self.with_http(|h| std::mem::take(&mut h.response_body))
    }

    /// A property as the plugin would read it (`"request.path"`, or one the plugin set).
    ///
    /// Errors: [`ProxyError::Reentrant`] from a VM callback.
    pub fn property(&self, path: &str) -> ProxyResult<Option<Vec<u8>>> {
        self.base.property(path)
    }

    /// Sets a property of this context (`"source.address"`), visible to the plugin.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn set_property(&self, path: &str, value: &[u8]) -> ProxyResult<()> {
        self.base.set_property(path, value)
    }

    /// Finishes the context now: `on_done`, then `on_log` + `on_delete`. Returns false when the plugin
    /// deferred them (on_done returned false) until it calls `proxy_done`.
    ///
    /// Errors: [`ProxyError::Reentrant`] from a VM callback.
    pub fn finish(&self) -> ProxyResult<bool> {
        self.base.finish()
    }

    /// Pipes a request body through the plugin: each chunk of `input` goes to `on_request_body`, and what
    /// the plugin lets through comes out of the returned stream. The output ends cleanly only after the
    /// plugin continued the final chunk; a local response, a close, a failed VM (fail-closed), a wait past
    /// `pause_timeout` or a cut-short input ends it with an error, never a clean end.
    ///
    /// Errors: [`ProxyError::Closed`] when the runtime is shut down.
    pub fn filter_request_body(&self, input: ReadStream, pause_timeout: Duration) -> ProxyResult<ReadStream> {
        self.filter_body(StreamType::HttpRequest, input, pause_timeout)
    }

    /// Pipes a response body through the plugin, as [`filter_request_body`](Self::filter_request_body).
    ///
    /// Errors: as [`filter_request_body`](Self::filter_request_body).
    pub fn filter_response_body(&self, input: ReadStream, pause_timeout: Duration) -> ProxyResult<ReadStream> {
        self.filter_body(StreamType::HttpResponse, input, pause_timeout)
    }

    fn filter_body(&self, stream: StreamType, input: ReadStream, pause_timeout: Duration) -> ProxyResult<ReadStream> {
        let runtime = &self.base.plugin.vm.shared.host.runtime;
        let (writer, reader) = runtime.pipe(crate::handle::DEFAULT_CAPACITY).map_err(ProxyError::Closed)?;
        self.base.resource.consume(&input);
        let context = self.clone();
        let cut = Closed::upstream(Closed::new(CloseReason::Abandoned));
        std::thread::Builder::new()
            .name("bcv-proxy-body".into())
            .spawn(move || {
                let take = |c: &HttpContext| {
                    if stream == StreamType::HttpRequest { c.take_request_body() } else { c.take_response_body() }
                };
                let feed = |c: &HttpContext, chunk: &[u8], eos: bool| {
                    if stream == StreamType::HttpRequest {
                        c.on_request_body(chunk, eos)
                    } else {
                        c.on_response_body(chunk, eos)
                    }
                };
                loop {
                    let (chunk, eos) = match input.read_chunk_blocking(64 << 10, None) {
                        Ok(Some(chunk)) => (chunk, false),
                        Ok(None) => (bytes::Bytes::new(), true),
                        Err(e) => {
                            writer.abort_with(e.closed().map(Closed::upstream).unwrap_or(cut));
                            return;
                        }
                    };
                    let mut action = feed(&context, &chunk, eos);
                    if eos && matches!(action, Ok(FilterAction::Pause)) {
                        action = context.wait(stream, pause_timeout);
                    }
                    match action {
                        Ok(FilterAction::Continue) => {
                            let data = match take(&context) {
                                Ok(d) => d,
                                Err(_) => return writer.abort_with(cut),
                            };
                            if !data.is_empty() && writer.write_bytes_blocking(data.into(), None).is_err() {
                                return;
                            }
                            if eos {
                                let _ = writer.finish();
                                return;
                            }
                        }
                        Ok(FilterAction::Pause) => {}
                        Ok(FilterAction::LocalResponse(_)) | Ok(FilterAction::Close) | Err(_) => {
                            writer.abort_with(cut);
                            return;
                        }
                    }
                }
            })
            .map_err(|e| ProxyError::InvalidState { context: self.base.name(), reason: format!("body thread: {e}") })?;
        Ok(reader)
    }
}

/// A TCP connection through a plugin (a network filter). `Send + Sync`.
///
/// Dropping the last handle (or closing its node) finishes the context, as for [`HttpContext`].
#[derive(Clone)]
pub struct TcpContext {
    base: Arc<ContextBase>,
    node: Node,
}

impl std::fmt::Debug for TcpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base.name())
    }
}

impl TcpContext {
    pub(crate) fn create(plugin: &Plugin) -> ProxyResult<TcpContext> {
        let kind = ContextKind::Tcp(Box::<TcpData>::default());
        let (base, node) = ContextBase::create(plugin, kind, "proxy tcp context", "tcp")?;
        Ok(TcpContext { base: Arc::new(base), node })
    }

    /// The context id.
    pub fn id(&self) -> u32 {
        self.base.id
    }

    /// The context's node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A new connection arrived (`proxy_on_new_connection`).
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished; [`ProxyError::Reentrant`].
    pub fn on_new_connection(&self) -> ProxyResult<FilterAction> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let f = core.exports.new_connection.clone();
        let returned = core.call(&f, id, id as i32);
        Ok(self.base.action(&mut core, StreamType::Downstream, returned))
    }

    fn data_call(&self, stream: StreamType, data: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let mut size = 0;
        if let Some(tcp) = core.state().contexts.get_mut(&id).and_then(|c| c.tcp_mut()) {
            let buffer = if stream == StreamType::Downstream { &mut tcp.downstream } else { &mut tcp.upstream };
            buffer.extend_from_slice(data);
            size = buffer.len() as i32;
        }
        let f = if stream == StreamType::Downstream {
            core.exports.downstream_data.clone()
        } else {
            core.exports.upstream_data.clone()
        };
        let returned = core.call(&f, id, (id as i32, size, end_of_stream as i32));
        Ok(self.base.action(&mut core, stream, returned))
    }

    /// Data from the client; on Continue forward [`take_downstream_data`](Self::take_downstream_data).
    ///
    /// Errors: as [`on_new_connection`](Self::on_new_connection).
    pub fn on_downstream_data(&self, data: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.data_call(StreamType::Downstream, data, end_of_stream)
    }

    /// Data from the server; on Continue forward [`take_upstream_data`](Self::take_upstream_data).
    ///
    /// Errors: as [`on_new_connection`](Self::on_new_connection).
    pub fn on_upstream_data(&self, data: &[u8], end_of_stream: bool) -> ProxyResult<FilterAction> {
        self.data_call(StreamType::Upstream, data, end_of_stream)
    }

    fn close_call(&self, downstream: bool, peer: PeerType) -> ProxyResult<()> {
        let mut core = self.base.lock()?;
        let id = self.base.id;
        let f = if downstream { core.exports.downstream_close.clone() } else { core.exports.upstream_close.clone() };
        let _ = core.call(&f, id, (id as i32, peer as i32));
        self.base.plugin.vm.settle(&mut core);
        Ok(())
    }

    /// The client side closed.
    ///
    /// Errors: as [`on_new_connection`](Self::on_new_connection).
    pub fn on_downstream_close(&self, peer: PeerType) -> ProxyResult<()> {
        self.close_call(true, peer)
    }

    /// The server side closed.
    ///
    /// Errors: as [`on_new_connection`](Self::on_new_connection).
    pub fn on_upstream_close(&self, peer: PeerType) -> ProxyResult<()> {
        self.close_call(false, peer)
    }

    /// Takes the buffered client data as the plugin left it.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn take_downstream_data(&self) -> ProxyResult<Vec<u8>> {
        self.with_tcp(|t| std::mem::take(&mut t.downstream))
    }

    /// Takes the buffered server data as the plugin left it.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn take_upstream_data(&self) -> ProxyResult<Vec<u8>> {
        self.with_tcp(|t| std::mem::take(&mut t.upstream))
    }

    fn with_tcp<T>(&self, read: impl FnOnce(&mut TcpData) -> T) -> ProxyResult<T> {
        let mut core = self.base.plugin.vm.lock()?;
        match core.state().contexts.get_mut(&self.base.id).and_then(|c| c.tcp_mut()) {
            Some(tcp) => Ok(read(tcp)),
            None => Err(self.base.invalid("the context has finished")),
        }
    }

    /// Waits for a paused direction (`Downstream` or `Upstream`), as [`HttpContext::wait`].
    ///
    /// Errors: [`ProxyError::Timeout`]; [`ProxyError::Reentrant`].
    pub fn wait(&self, stream: StreamType, timeout: Duration) -> ProxyResult<FilterAction> {
        self.base.wait(stream, timeout)
    }

    /// A property as the plugin would read it.
    ///
    /// Errors: [`ProxyError::Reentrant`] from a VM callback.
    pub fn property(&self, path: &str) -> ProxyResult<Option<Vec<u8>>> {
        self.base.property(path)
    }

    /// Sets a property of this context.
    ///
    /// Errors: [`ProxyError::InvalidState`] after the context finished.
    pub fn set_property(&self, path: &str, value: &[u8]) -> ProxyResult<()> {
        self.base.set_property(path, value)
    }

    /// Finishes the context now (`on_done`, `on_log`, `on_delete`); false when the plugin deferred it.
    ///
    /// Errors: [`ProxyError::Reentrant`] from a VM callback.
    pub fn finish(&self) -> ProxyResult<bool> {
        self.base.finish()
    }
}
