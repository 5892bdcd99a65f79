//! The native handle class: one JS object holding one external reference to a core node.
//!
//! `lib/index.js` wraps it in typed classes (`ReadStream`, `WriteStream`, `TcpSocket`, …); this layer only
//! converts arguments, runs core operations and settles promises.
//!
//! Ownership (LIFETIMES.md N1, S3): the handle's finalizer only releases its reference (`release_now`),
//! O(1) and without touching JS. Operations in flight hold the core object through an `Arc`, but the
//! *external* reference belongs to the JS object alone, so releasing it ends a stream end even while an
//! operation on it is pending (that operation then fails with `Closed{HANDLE_RELEASED}`).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bcv_core::handle::{
    CloseReason, Closed, DEFAULT_CAPACITY, FutureReader, FutureWriter, HttpFields, HttpServer, IncomingMessage, Node,
    NodeState, ReadStream, Resource, StreamEvent, TcpListener, TcpSocket, TlsSession, WriteStream,
};
use bcv_core::proxy::{HttpContext, Plugin, ProxyHost, TcpContext, Vm};
use bcv_core::vfs::VfsJob;
use bytes::Bytes;
use napi::bindgen_prelude::{Uint8Array, Unknown};
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use crate::env::{ActiveCallback, Bridge, Deferred, EnvLocal, JsKey, Out, new_promise, runtime};
use crate::error::JsErr;
use crate::js::{self, RawValue};
use crate::vfs::{DbSlot, VfsSlot};

/// The core object behind a handle.
pub(crate) enum Kind {
    Read(ReadStream),
    Write(WriteStream),
    Resource(Resource),
    Listener(TcpListener),
    Socket(TcpSocket),
    FutureReader(FutureReader<JsKey>),
    FutureWriter(FutureWriter<JsKey>),
    /// The completion future of `writeFile`: bytes written, or why the file is partial.
    FileDone(FutureReader<Result<u64, String>>),
    HttpServer(HttpServer),
    /// An incoming HTTP request (server side) or response (client side).
    Message(IncomingMessage),
    /// The trailers future of an incoming message's body.
    Trailers(FutureReader<Option<HttpFields>>),
    /// A TLS session over a TCP socket (a dependent child of the socket).
    Tls(TlsSession),
    /// A block-cache VFS (shared with the databases opened through it, which keep it alive).
    Vfs(Arc<VfsSlot>),
    /// An SQLite connection through a VFS (a child of its container's node).
    Database(DbSlot),
    /// A background prefetch or upload of a VFS (a child of its container's node).
    Job(VfsJob),
    /// A Proxy-Wasm host (the parent of its VMs).
    ProxyHost(ProxyHost),
    /// A Proxy-Wasm VM (a child of its host).
    ProxyVm(Vm),
    /// A plugin of a VM (a child of its VM).
    ProxyPlugin(Plugin),
    /// An HTTP stream context of a plugin (a child of its plugin).
    ProxyHttp(HttpContext),
    /// A TCP stream context of a plugin (a child of its plugin).
    ProxyTcp(TcpContext),
}

impl Kind {
    pub(crate) fn node(&self) -> &Node {
        match self {
            Kind::Read(r) => r.node(),
            Kind::Write(w) => w.node(),
            Kind::Resource(r) => r,
            Kind::Listener(l) => l,
            Kind::Socket(s) => s,
            Kind::FutureReader(f) => f,
            Kind::FutureWriter(f) => f,
            Kind::FileDone(f) => f,
            Kind::HttpServer(s) => s,
            Kind::Message(m) => m,
            Kind::Trailers(t) => t,
            Kind::Tls(t) => t,
            Kind::Vfs(v) => v.node(),
            Kind::Database(d) => d.conn.node(),
            Kind::Job(j) => j.node(),
            Kind::ProxyHost(h) => h.node(),
            Kind::ProxyVm(v) => v.node(),
            Kind::ProxyPlugin(p) => p.node(),
            Kind::ProxyHttp(c) => c.node(),
            Kind::ProxyTcp(c) => c.node(),
        }
    }

    /// True for the Proxy-Wasm objects: their last reference is never dropped on the JS thread, because
    /// dropping it can finish contexts, which runs plugin code (see `crate::proxy`).
    fn is_proxy(&self) -> bool {
        matches!(
            self,
            Kind::ProxyHost(_) | Kind::ProxyVm(_) | Kind::ProxyPlugin(_) | Kind::ProxyHttp(_) | Kind::ProxyTcp(_)
        )
    }

    /// `close()`: the node's forced close. A VFS also gives up its cache directory and SQLite name once its
    /// connections are closed; a database is closed by SQLite at once (as SQLite users expect).
    fn close_now(&self) {
        match self {
            Kind::Vfs(v) => drop(v.release()),
            Kind::Database(d) => d.conn.close(),
            other => other.node().close(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Read(_) => "ReadStream",
            Kind::Write(_) => "WriteStream",
            Kind::Resource(_) => "Resource",
            Kind::Listener(_) => "TcpListener",
            Kind::Socket(_) => "TcpSocket",
            Kind::FutureReader(_) | Kind::FileDone(_) => "FutureReader",
            Kind::FutureWriter(_) => "FutureWriter",
            Kind::HttpServer(_) => "HttpServer",
            Kind::Message(_) => "IncomingMessage",
            Kind::Trailers(_) => "Trailers",
            Kind::Tls(_) => "TlsSession",
            Kind::Vfs(_) => "Vfs",
            Kind::Database(_) => "Database",
            Kind::Job(_) => "VfsJob",
            Kind::ProxyHost(_) => "ProxyHost",
            Kind::ProxyVm(_) => "ProxyVm",
            Kind::ProxyPlugin(_) => "ProxyPlugin",
            Kind::ProxyHttp(_) => "ProxyHttpContext",
            Kind::ProxyTcp(_) => "ProxyTcpContext",
        }
    }
}

/// Raises a strict-mode violation queued on this thread (level `Error`) at this SDK call (T34).
pub(crate) fn strict_check(local: &EnvLocal) -> napi::Result<()> {
    match bcv_core::handle::take_pending() {
        Some(d) => Err(JsErr::strict(d).throw(local)),
        None => Ok(()),
    }
}

/// The env of this call, with the strict-mode check every SDK entry point makes.
pub(crate) fn enter(env: &Env) -> napi::Result<std::rc::Rc<EnvLocal>> {
    let local = EnvLocal::get(env.raw())?;
    strict_check(&local)?;
    Ok(local)
}

/// Builds the JS value of an outcome (on the JS thread).
pub(crate) fn out_to_js(local: &EnvLocal, out: Out) -> napi::Result<sys::napi_value> {
    let env = local.raw();
    Ok(match out {
        Out::Undefined => js::undefined(env),
        Out::Null => js::null(env),
        Out::Number(n) => js::number(env, n),
        Out::Bytes(b) => js::buffer(env, &b),
        Out::Parked(key) => local.take_value(&key)?,
        Out::Fields(None) => js::null(env),
        Out::Fields(Some(fields)) => js::fields(env, &fields),
        Out::Json(value) => js::json(env, &value),
        Out::Build(build) => build(local)?,
        Out::Handle(kind, scope_id) => {
            let handle = Handle::wrap_in_scope(local, kind, scope_id);
            unsafe { <Handle as napi::bindgen_prelude::ToNapiValue>::to_napi_value(env, handle)? }
        }
        Out::Child(kind, scope_id, ancestors) => {
            let mut handle = Handle::wrap_in_scope(local, kind, scope_id);
            handle.ancestors = ancestors;
            unsafe { <Handle as napi::bindgen_prelude::ToNapiValue>::to_napi_value(env, handle)? }
        }
    })
}

/// Settles a promise from whichever thread finishes the operation; if the operation is dropped without
/// finishing (the runtime was shut down under it), the promise is rejected with `RUNTIME_SHUTDOWN`.
struct Settle {
    deferred: Option<Deferred>,
    bridge: Arc<Bridge>,
}

impl Settle {
    fn finish(mut self, result: Result<Out, JsErr>) {
        if let Some(d) = self.deferred.take() {
            self.bridge.post(Box::new(move |local: &EnvLocal| {
                d.settle(local, result);
                local.op_finished();
            }));
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(d) = self.deferred.take() {
            self.bridge.post(Box::new(move |local: &EnvLocal| {
                d.settle(local, Err(JsErr::closed(Closed::new(CloseReason::RuntimeShutdown))));
                local.op_finished();
            }));
        }
    }
}

/// Runs a core operation and returns a promise for its outcome.
///
/// With `inline`, the future is polled once on the JS thread first (pure pipe operations only: they
/// need no reactor), so data already buffered is delivered without a thread hop. Otherwise, or when it is
/// pending, it runs on the bcv runtime's executor and the result comes back through the env's bridge.
pub(crate) fn run_op<T, F, C>(local: &EnvLocal, fut: F, convert: C, inline: bool) -> napi::Result<RawValue>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
    C: FnOnce(T) -> Result<Out, JsErr> + Send + 'static,
{
    let (deferred, promise) = new_promise(local.raw())?;
    let mut fut = Box::pin(fut);
    if inline {
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            deferred.settle(local, convert(v));
            return Ok(RawValue(promise));
        }
    }
    local.op_started();
    let settle = Settle { deferred: Some(deferred), bridge: local.bridge.clone() };
    runtime().tokio_handle().spawn(async move {
        let v = fut.await;
        settle.finish(convert(v));
    });
    Ok(RawValue(promise))
}

/// A promise already settled with `result`.
pub(crate) fn settled(local: &EnvLocal, result: Result<Out, JsErr>) -> napi::Result<RawValue> {
    let (deferred, promise) = new_promise(local.raw())?;
    deferred.settle(local, result);
    Ok(RawValue(promise))
}

/// The address of a socket end.
#[napi(object)]
pub struct SocketAddress {
    /// IP address as text.
    pub address: String,
    /// Port number.
    pub port: u32,
    /// `'IPv4'` or `'IPv6'`.
    pub family: String,
}

impl From<std::net::SocketAddr> for SocketAddress {
    fn from(a: std::net::SocketAddr) -> SocketAddress {
        SocketAddress {
            address: a.ip().to_string(),
            port: a.port() as u32,
            family: if a.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        }
    }
}

/// One external reference to a bcv node (stream end, future end, resource, socket, listener).
///
/// Releasing it (garbage collection) gives up the reference only; `close()` is the forced, cascading end.
/// Methods that can wait return promises; the JS thread never blocks.
#[napi]
pub struct Handle {
    id: u64,
    kind: &'static str,
    label: &'static str,
    slot: RefCell<Option<Arc<Kind>>>,
    /// Ids of the handles this one was taken from (parent first), for `detachFromScope`: a child handed
    /// out of a scope needs the parents it reads through to outlive the scope too (as core does for the
    /// nodes its own scopes adopted).
    ancestors: Vec<u64>,
}

impl Handle {
    /// Wraps a core object created by a synchronous call: registered with the env and the innermost scope.
    pub(crate) fn wrap(local: &EnvLocal, kind: Kind) -> Handle {
        let scope = local.scopes.borrow().last().map(|s| s.id);
        Handle::wrap_in_scope(local, kind, scope)
    }

    /// Wraps a core object, adopting it into the binding scope with id `scope` if given (closing it at once
    /// if that scope has exited meanwhile).
    pub(crate) fn wrap_in_scope(local: &EnvLocal, kind: Kind, scope: Option<u64>) -> Handle {
        let id = kind.node().id();
        let name = kind.name();
        let label = kind.node().label();
        let arc = Arc::new(kind);
        local.register(id, &arc);
        if let Some(scope_id) = scope {
            let found = local.scopes.borrow().iter().find(|s| s.id == scope_id).cloned();
            match found {
                Some(s) => s.adopt(id, &arc),
                None => arc.node().close_with(CloseReason::ScopeExited),
            }
        }
        Handle { id, kind: name, label, slot: RefCell::new(Some(arc)), ancestors: Vec::new() }
    }

    /// Wraps a dependent child taken from `parent` (a socket's streams, a message's body and trailers).
    pub(crate) fn wrap_child(local: &EnvLocal, kind: Kind, parent: &Handle) -> Handle {
        let mut child = Handle::wrap(local, kind);
        child.ancestors = parent.lineage();
        child
    }

    /// The ids of this handle and of the handles it was taken from: the ancestors of a child taken from it.
    pub(crate) fn lineage(&self) -> Vec<u64> {
        std::iter::once(self.id).chain(self.ancestors.iter().copied()).collect()
    }

    pub(crate) fn get(&self, local: &EnvLocal) -> napi::Result<Arc<Kind>> {
        self.slot.borrow().clone().ok_or_else(|| JsErr::consumed().throw(local))
    }

    pub(crate) fn wrong(&self, local: &EnvLocal, method: &str) -> napi::Error {
        JsErr::wrong_kind(method, self.kind).throw(local)
    }

    /// Moves the core object out of this handle (O1: the handle is consumed). Refused with `Busy` while an
    /// operation holds it.
    fn take(&self, local: &EnvLocal, want: &str, matches: fn(&Kind) -> bool) -> napi::Result<Kind> {
        let arc = self.get(local)?;
        if !matches(&arc) {
            return Err(JsErr::invalid(format!("expected a {want}, got a {}", self.kind)).throw(local));
        }
        drop(self.slot.borrow_mut().take());
        match Arc::try_unwrap(arc) {
            Ok(kind) => {
                local.unregister(self.id);
                Ok(kind)
            }
            Err(arc) => {
                *self.slot.borrow_mut() = Some(arc);
                Err(JsErr::new(
                    "BCV_BUSY",
                    format!("the {} has an operation in flight and cannot be consumed", self.kind),
                )
                .throw(local))
            }
        }
    }

    /// Takes the read stream out of this handle (transformers and `spawnPipe` consume their input).
    pub(crate) fn take_read(&self, local: &EnvLocal) -> napi::Result<ReadStream> {
        match self.take(local, "ReadStream", |k| matches!(k, Kind::Read(_)))? {
            Kind::Read(r) => Ok(r),
            _ => unreachable!("checked by take"),
        }
    }

    /// Takes the write stream out of this handle (`spawnPipe` consumes its destination).
    pub(crate) fn take_write(&self, local: &EnvLocal) -> napi::Result<WriteStream> {
        match self.take(local, "WriteStream", |k| matches!(k, Kind::Write(_)))? {
            Kind::Write(w) => Ok(w),
            _ => unreachable!("checked by take"),
        }
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Open => "open",
        NodeState::Orphaned => "orphaned",
        NodeState::Closing => "closing",
        NodeState::Closed => "closed",
    }
}

#[napi]
impl Handle {
    /// The node's unique id (as in `diagnostics()` and `stuckNodeIds`).
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }

    /// `'ReadStream' | 'WriteStream' | 'Resource' | 'TcpListener' | 'TcpSocket' | 'FutureReader' | 'FutureWriter'
    /// | 'HttpServer' | 'IncomingMessage' | 'Trailers' | 'TlsSession' | 'Vfs' | 'Database' | 'VfsJob'
    /// | 'ProxyHost' | 'ProxyVm' | 'ProxyPlugin' | 'ProxyHttpContext' | 'ProxyTcpContext'`.
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// A short label such as `'pipe reader'` or `'gzip compress'`.
    #[napi(getter)]
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// `'open' | 'orphaned' | 'closing' | 'closed'`, or `'consumed'` once moved into a transformer or pipe.
    /// Never throws (works after close).
    #[napi(getter)]
    pub fn state(&self) -> &'static str {
        match self.slot.borrow().as_ref() {
            Some(k) => state_name(k.node().state()),
            None => "consumed",
        }
    }

    /// Why the node was closed (`'SELF'`, `'PARENT'`, `'PEER_DROPPED'`, …), or `null` while open.
    #[napi(getter, ts_return_type = "string | null")]
    pub fn close_reason(&self) -> Option<&'static str> {
        self.slot.borrow().as_ref().and_then(|k| k.node().close_reason()).map(|c| c.reason.name())
    }

    /// For `closeReason === 'UPSTREAM'`, the reason the upstream stage ended with.
    #[napi(getter, ts_return_type = "string | null")]
    pub fn close_upstream(&self) -> Option<&'static str> {
        self.slot.borrow().as_ref().and_then(|k| k.node().close_reason()).and_then(|c| c.upstream).map(|r| r.name())
    }

    /// Forced, cascading close with reason `SELF`: idempotent, returns at once, never throws. Dependent
    /// children end with `Closed{PARENT}`. No-op on a consumed handle. A `Database` is closed by SQLite at
    /// once; a `Vfs` frees its cache directory and name once its databases are closed.
    #[napi]
    pub fn close(&self) {
        let kind = self.slot.borrow().clone();
        if let Some(k) = kind {
            k.close_now();
        }
    }

    /// Closes, then resolves once in-flight operations have returned and OS resources are freed (for a
    /// `Vfs`: its cache directory and SQLite name). Rejects with `BCV_TIMEOUT` after `timeoutMs`, or at
    /// once with `BCV_WOULD_DEADLOCK` when called from this stream's own `onData` callback (T22).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close_and_wait(&self, env: Env, timeout_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let Some(kind) = self.slot.borrow().clone() else {
            return settled(&local, Ok(Out::Undefined));
        };
        let id = self.id;
        if local.callbacks.borrow().values().any(|c| c.node_id == id) {
            return settled(&local, Err(JsErr::from(bcv_core::handle::CloseWaitError::WouldDeadlock)));
        }
        // A VFS is done once its cache directory and SQLite name are free again (after its connections).
        let released = match &*kind {
            Kind::Vfs(v) => Some(v.release()),
            other => {
                other.close_now();
                None
            }
        };
        let timeout = crate::duration_from_ms(timeout_ms);
        let fut = async move {
            let start = tokio::time::Instant::now();
            kind.node().close_and_wait(timeout).await?;
            if let Some(mut released) = released {
                let left = timeout.saturating_sub(start.elapsed());
                if tokio::time::timeout(left, released.wait_for(|done| *done)).await.is_err() {
                    return Err(bcv_core::handle::CloseWaitError::Timeout);
                }
            }
            Ok(())
        };
        run_op(&local, fut, |r| r.map(|()| Out::Undefined).map_err(JsErr::from), false)
    }

    /// Lets this node, and the handles it was taken from, outlive the scope they were created in.
    #[napi]
    pub fn detach_from_scope(&self) {
        if let Some(k) = self.slot.borrow().as_ref() {
            k.node().detach_from_scope();
        }
        if let Some(local) = EnvLocal::current() {
            for s in local.scopes.borrow().iter() {
                s.detach(self.id);
                for id in &self.ancestors {
                    s.detach(*id);
                }
            }
        }
    }

    // ----- read streams -----

    /// Reads the next chunk of at most `max` bytes (default 64 KiB): a `Buffer`, or `null` only at a clean
    /// EOF. Rejects with `BCV_CLOSED` (reason, upstream) when the stream was cut short or closed, `BCV_BUSY`
    /// when another read is pending, `BCV_AUTH` / `BCV_CORRUPT` from transformers.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn read(&self, env: Env, max: Option<u32>) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::Read(_)) {
            return Err(self.wrong(&local, "read"));
        }
        let max = max.map_or(DEFAULT_CAPACITY, |m| m.max(1) as usize);
        let fut = async move {
            match &*kind {
                Kind::Read(r) => r.read_chunk(max).await,
                _ => unreachable!("checked above"),
            }
        };
        run_op(
            &local,
            fut,
            |r| match r {
                Ok(Some(bytes)) => Ok(Out::Bytes(bytes)),
                Ok(None) => Ok(Out::Null),
                Err(e) => Err(JsErr::from(e)),
            },
            true,
        )
    }

    /// Bytes buffered and ready to read.
    #[napi(getter)]
    pub fn buffered(&self) -> u32 {
        match self.slot.borrow().as_deref() {
            Some(Kind::Read(r)) => r.buffered() as u32,
            _ => 0,
        }
    }

    /// Delivers the stream chunk by chunk to `callback(type, data, error, token)` on the JS thread until
    /// EOF or an error. The next chunk is delivered only after `callbackDone(token)`. No event is delivered
    /// after the stream was released or closed (A7). Throws `BCV_BUSY` if a read is pending.
    #[napi(
        ts_args_type = "callback: (type: 'data' | 'end' | 'error', data: Buffer | undefined, error: Error | undefined, token: number) => void"
    )]
    pub fn on_data(&self, env: Env, callback: Unknown) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Read(r) = &*kind else { return Err(self.wrong(&local, "onData")) };
        let cb_key = local.park_value(callback.raw())?;
        let cb_id = cb_key.id;
        let node_id = self.id;
        let bridge = local.bridge.clone();
        // The subscription keeps the event loop alive until its last event (like a 'data' listener).
        local.op_started();
        let loop_ref = LoopRef(local.bridge.clone());
        r.on_data(move |event| {
            let _callback_alive = (&cb_key, &loop_ref);
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let event = match event {
                StreamEvent::Data(b) => ("data", Some(b), None),
                StreamEvent::End => ("end", None, None),
                StreamEvent::Error(e) => ("error", None, Some(JsErr::from(e))),
            };
            if bridge.post(Box::new(move |local: &EnvLocal| deliver(local, cb_id, node_id, event, tx))) {
                // The callback is in flight until JS settles it; free the executor thread meanwhile.
                tokio::task::block_in_place(|| {
                    let _ = rx.recv();
                });
            }
        })
        .map_err(|e| JsErr::from(e).throw(&local))
    }

    // ----- write streams -----

    /// Writes all of `data` (copied), waiting while the buffer is full. Rejects with `BCV_CLOSED` and
    /// `accepted` (bytes taken before the error): `PEER_DROPPED` when the reader went away.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write(&self, env: Env, data: Uint8Array) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::Write(_)) {
            return Err(self.wrong(&local, "write"));
        }
        let bytes = Bytes::copy_from_slice(&data);
        let fut = async move {
            match &*kind {
                Kind::Write(w) => w.write_bytes(bytes).await,
                _ => unreachable!("checked above"),
            }
        };
        run_op(&local, fut, |r| r.map(|()| Out::Undefined).map_err(JsErr::from), true)
    }

    /// Ends the stream cleanly: the reader drains, then sees EOF. Idempotent. Throws `BCV_CLOSED`
    /// (`PEER_DROPPED` if the reader already went away).
    #[napi]
    pub fn finish(&self, env: Env) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Write(w) = &*kind else { return Err(self.wrong(&local, "finish")) };
        w.finish().map_err(|e| JsErr::from(e).throw(&local))
    }

    /// True once the reader went away: further writes would fail with `PEER_DROPPED`.
    #[napi(getter)]
    pub fn peer_gone(&self) -> bool {
        match self.slot.borrow().as_deref() {
            Some(Kind::Write(w)) => w.is_peer_gone(),
            Some(Kind::FutureWriter(w)) => w.is_peer_gone(),
            _ => false,
        }
    }

    // ----- TCP -----

    /// Accepts the next connection (a new `TcpSocket` handle). Rejects with `BCV_CLOSED` once closed.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn accept(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::Listener(_)) {
            return Err(self.wrong(&local, "accept"));
        }
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let fut = async move {
            match &*kind {
                Kind::Listener(l) => l.accept().await,
                _ => unreachable!("checked above"),
            }
        };
        run_op(&local, fut, move |r| r.map(|s| Out::Handle(Kind::Socket(s), scope)).map_err(JsErr::from), false)
    }

    /// The local address (listener, socket or HTTP server): a detached snapshot, readable after close.
    #[napi(getter, ts_return_type = "SocketAddress | null")]
    pub fn local_address(&self) -> Option<SocketAddress> {
        match self.slot.borrow().as_deref() {
            Some(Kind::Listener(l)) => Some(l.local_addr().into()),
            Some(Kind::Socket(s)) => Some(s.local_addr().into()),
            Some(Kind::HttpServer(s)) => Some(s.local_addr().into()),
            _ => None,
        }
    }

    /// The peer's address: a detached snapshot (CR-det), readable after close.
    #[napi(getter, ts_return_type = "SocketAddress | null")]
    pub fn peer_address(&self) -> Option<SocketAddress> {
        match self.slot.borrow().as_deref() {
            Some(Kind::Socket(s)) => Some(s.peer_addr().into()),
            Some(Kind::Tls(t)) => Some(t.peer_addr().into()),
            _ => None,
        }
    }

    /// Takes the receive stream of a socket or TLS session (once; plaintext for TLS). Throws
    /// `BCV_ALREADY_TAKEN`.
    #[napi]
    pub fn take_receive(&self, env: Env) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let r = match &*kind {
            Kind::Socket(s) => s.take_receive(),
            Kind::Tls(t) => t.take_receive(),
            _ => return Err(self.wrong(&local, "takeReceive")),
        };
        let r = r.map_err(|e| JsErr::from(e).throw(&local))?;
        Ok(Handle::wrap_child(&local, Kind::Read(r), self))
    }

    /// Takes the send stream of a socket or TLS session (once): `finish()` sends FIN (after close_notify
    /// for TLS); releasing it unfinished resets the connection. Throws `BCV_ALREADY_TAKEN`.
    #[napi]
    pub fn take_send(&self, env: Env) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let w = match &*kind {
            Kind::Socket(s) => s.take_send(),
            Kind::Tls(t) => t.take_send(),
            _ => return Err(self.wrong(&local, "takeSend")),
        };
        let w = w.map_err(|e| JsErr::from(e).throw(&local))?;
        Ok(Handle::wrap_child(&local, Kind::Write(w), self))
    }

    // ----- futures -----

    /// Delivers `value` to the future's reader. Throws `BCV_CLOSED` with the value handed back as
    /// `error.value` when the reader went away (`PEER_DROPPED`) or this end is closed or already written.
    #[napi(ts_args_type = "value: unknown")]
    pub fn write_value(&self, env: Env, value: Unknown) -> napi::Result<()> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::FutureWriter(w) = &*kind else { return Err(self.wrong(&local, "writeValue")) };
        let key = local.park_value(value.raw())?;
        w.write(key).map_err(|u| JsErr::closed(u.closed).with_value(u.value).throw(&local))
    }

    /// Waits for the future's value (for HTTP trailers: `[name, value]` pairs, or `null` when there were
    /// none). Rejects with `BCV_CLOSED` (`PEER_DROPPED` when the writer was released without a value,
    /// `ABANDONED` for trailers whose body went away first), `BCV_ALREADY_TAKEN` on a second successful wait.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn wait(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        match &*kind {
            Kind::FutureReader(_) => {
                let fut = async move {
                    match &*kind {
                        Kind::FutureReader(f) => f.wait().await,
                        _ => unreachable!("checked above"),
                    }
                };
                run_op(&local, fut, |r| r.map(Out::Parked).map_err(JsErr::from), true)
            }
            Kind::FileDone(_) => {
                let fut = async move {
                    match &*kind {
                        Kind::FileDone(f) => f.wait().await,
                        _ => unreachable!("checked above"),
                    }
                };
                run_op(
                    &local,
                    fut,
                    |r| match r {
                        Ok(Ok(n)) => Ok(Out::Number(n as f64)),
                        Ok(Err(message)) => Err(JsErr::new("BCV_IO", message)),
                        Err(e) => Err(JsErr::from(e)),
                    },
                    true,
                )
            }
            Kind::Trailers(_) => {
                let fut = async move {
                    match &*kind {
                        Kind::Trailers(t) => t.wait().await,
                        _ => unreachable!("checked above"),
                    }
                };
                run_op(&local, fut, |r| r.map(Out::Fields).map_err(JsErr::from), true)
            }
            _ => Err(self.wrong(&local, "wait")),
        }
    }

    /// True once the future has a value or an error.
    #[napi(getter)]
    pub fn resolved(&self) -> bool {
        match self.slot.borrow().as_deref() {
            Some(Kind::FutureReader(f)) => f.is_resolved(),
            Some(Kind::FileDone(f)) => f.is_resolved(),
            Some(Kind::Trailers(t)) => t.is_resolved(),
            _ => false,
        }
    }
}

impl Drop for Handle {
    /// The finalizer: release only (N1). O(1), no JS, no waiting; strict mode may record V4.
    fn drop(&mut self) {
        if let Some(kind) = self.slot.get_mut().take() {
            kind.node().note_collected();
            kind.node().release_now();
            if let Some(local) = EnvLocal::current() {
                local.unregister(self.id);
            }
            if kind.is_proxy() {
                crate::proxy::drop_later(kind);
            }
        }
    }
}

/// Holds the event loop open for an `onData` subscription; released when core drops the callback.
struct LoopRef(Arc<Bridge>);

impl Drop for LoopRef {
    fn drop(&mut self) {
        self.0.post(Box::new(|local: &EnvLocal| local.op_finished()));
    }
}

/// Delivers one `onData` event on the JS thread, unless the stream was released or closed meanwhile.
fn deliver(
    local: &EnvLocal,
    cb_id: u64,
    node_id: u64,
    event: (&'static str, Option<Bytes>, Option<JsErr>),
    done: std::sync::mpsc::SyncSender<()>,
) {
    let live = local.lookup(node_id).is_some_and(|k| k.node().state() == NodeState::Open);
    let Some(callback) = local.peek_value(cb_id) else { return };
    if !live {
        return;
    }
    let env = local.raw();
    let token = EnvLocal::next_id();
    local.callbacks.borrow_mut().insert(token, ActiveCallback { node_id, done });
    let (kind, data, error) = event;
    let args = [
        js::string(env, kind),
        data.map_or_else(|| js::undefined(env), |b| js::buffer(env, &b)),
        error.map_or_else(|| js::undefined(env), |e| e.into_js(local)),
        js::number(env, token as f64),
    ];
    let mut ignored = std::ptr::null_mut();
    // A throwing callback surfaces as an uncaught exception, as for any Node callback.
    unsafe { sys::napi_call_function(env, js::undefined(env), callback, args.len(), args.as_ptr(), &mut ignored) };
}

/// Wraps a `(Resource, ReadStream)` pair from core.
pub(crate) fn pair(local: &EnvLocal, res: Resource, out: ReadStream) -> Vec<Handle> {
    vec![Handle::wrap(local, Kind::Resource(res)), Handle::wrap(local, Kind::Read(out))]
}

/// Wraps a future pair.
pub(crate) fn future_pair(local: &EnvLocal, w: FutureWriter<JsKey>, r: FutureReader<JsKey>) -> Vec<Handle> {
    vec![Handle::wrap(local, Kind::FutureWriter(w)), Handle::wrap(local, Kind::FutureReader(r))]
}

/// Compile-time check: everything that crosses to a runtime thread is `Send`.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Kind>();
    is_send::<Out>();
    is_send::<JsErr>();
};
