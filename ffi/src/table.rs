//! The handle table: a sharded slab of objects addressed by `u64` ids (slot ⊕ generation), never pointers.
//!
//! A released or consumed slot bumps its generation, so a stale id is `BCV_E_BAD_HANDLE`, never UB (C1).
//! Lookups clone an `Arc` out under a per-shard lock that is never held across calls into core or C.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bcv_core::handle::{
    FutureReader, FutureWriter, HttpFields, HttpServer, IncomingMessage, Node, ReadStream, Resource, Runtime, Scope,
    TcpListener, TcpSocket, TlsSession, WriteStream,
};
use bcv_core::proxy::{HttpContext, Plugin, PluginModule, ProxyHost, TcpContext, Vm};
use bcv_core::vfs::{BlockVfs, ContainerTools, Daemon};

use crate::error::{BCV_E_BAD_HANDLE, BCV_E_WRONG_TYPE, bcv_status_t, fail_with};
use crate::proxy::Callout;
use crate::vfs::Job;

/// Everything a `bcv_handle_t` can name.
pub(crate) enum Object {
    Runtime(Runtime),
    Reader(ReadStream),
    Writer(WriteStream),
    Resource(Resource),
    Listener(TcpListener),
    Socket(TcpSocket),
    FutureWriter(FutureWriter<Vec<u8>>),
    FutureReader(FutureReader<Vec<u8>>),
    FileDone(FutureReader<Result<u64, String>>),
    Scope(Mutex<Scope>),
    HttpServer(HttpServer),
    HttpMessage(IncomingMessage),
    Trailers(FutureReader<Option<HttpFields>>),
    Tls(TlsSession),
    Vfs(Box<BlockVfs>),
    Job(Job),
    /// Container tools: no node (nothing to close), like a runtime or a scope.
    Container(ContainerTools),
    /// A multi-process daemon (None once stopped): no node, like container tools.
    Daemon(Mutex<Option<Daemon>>),
    /// A Proxy-Wasm host: the parent of its VMs.
    ProxyHost(ProxyHost),
    /// A compiled plugin module: no node (nothing to close), like container tools.
    ProxyModule(PluginModule),
    /// A running VM: the parent of its plugins.
    ProxyVm(Vm),
    /// A plugin (root context): the parent of its stream contexts.
    ProxyPlugin(Plugin),
    /// An HTTP stream context.
    ProxyHttp(HttpContext),
    /// A TCP stream context.
    ProxyTcp(TcpContext),
    /// An HTTP or gRPC callout waiting for the embedder's answer: no node; releasing it unanswered fails it.
    ProxyCallout(Callout),
}

impl Object {
    /// The node behind the object, for the generic calls (close, state, release).
    pub(crate) fn node(&self) -> Option<&Node> {
        match self {
            Object::Reader(r) => Some(r.node()),
            Object::Writer(w) => Some(w.node()),
            Object::Resource(r) => Some(r),
            Object::Listener(l) => Some(l),
            Object::Socket(s) => Some(s),
            Object::FutureWriter(f) => Some(f),
            Object::FutureReader(f) => Some(f),
            Object::FileDone(f) => Some(f),
            Object::HttpServer(s) => Some(s),
            Object::HttpMessage(m) => Some(m),
            Object::Trailers(t) => Some(t),
            Object::Tls(t) => Some(t),
            Object::Vfs(v) => Some(v.node()),
            Object::Job(j) => Some(j.job.node()),
            Object::ProxyHost(h) => Some(h.node()),
            Object::ProxyVm(v) => Some(v.node()),
            Object::ProxyPlugin(p) => Some(p.node()),
            Object::ProxyHttp(c) => Some(c.node()),
            Object::ProxyTcp(c) => Some(c.node()),
            Object::Runtime(_)
            | Object::Scope(_)
            | Object::Container(_)
            | Object::Daemon(_)
            | Object::ProxyModule(_)
            | Object::ProxyCallout(_) => None,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::Runtime(_) => "runtime",
            Object::Reader(_) => "stream reader",
            Object::Writer(_) => "stream writer",
            Object::Resource(_) => "resource",
            Object::Listener(_) => "tcp listener",
            Object::Socket(_) => "tcp socket",
            Object::FutureWriter(_) => "future writer",
            Object::FutureReader(_) => "future reader",
            Object::FileDone(_) => "file completion future",
            Object::Scope(_) => "scope",
            Object::HttpServer(_) => "http server",
            Object::HttpMessage(_) => "http message",
            Object::Trailers(_) => "trailers future",
            Object::Tls(_) => "tls session",
            Object::Vfs(_) => "vfs",
            Object::Job(_) => "vfs job",
            Object::Container(_) => "container",
            Object::Daemon(_) => "daemon",
            Object::ProxyHost(_) => "proxy host",
            Object::ProxyModule(_) => "proxy module",
            Object::ProxyVm(_) => "proxy vm",
            Object::ProxyPlugin(_) => "proxy plugin",
            Object::ProxyHttp(_) => "proxy http context",
            Object::ProxyTcp(_) => "proxy tcp context",
            Object::ProxyCallout(_) => "proxy callout",
        }
    }
}

const SHARDS: usize = 16;
const INDEX_BITS: u32 = 28;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

struct Slot {
    generation: u32,
    object: Option<Arc<Object>>,
}

struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

static TABLE: [Mutex<Shard>; SHARDS] = [const { Mutex::new(Shard { slots: Vec::new(), free: Vec::new() }) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard(i: usize) -> std::sync::MutexGuard<'static, Shard> {
    TABLE[i].lock().unwrap_or_else(|p| p.into_inner())
}

fn split(handle: u64) -> Option<(usize, usize, u32)> {
    let generation = (handle >> 32) as u32;
    let shard = ((handle >> INDEX_BITS) & (SHARDS as u64 - 1)) as usize;
    let index = (handle & INDEX_MASK) as usize;
    (generation != 0).then_some((shard, index, generation))
}

/// Stores `object` and returns its new handle (never 0).
pub(crate) fn insert(object: Object) -> u64 {
    let s = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
    let mut sh = shard(s);
    let index = match sh.free.pop() {
        Some(i) => i as usize,
        None => {
            sh.slots.push(Slot { generation: 1, object: None });
            sh.slots.len() - 1
        }
    };
    let slot = &mut sh.slots[index];
    slot.object = Some(Arc::new(object));
    ((slot.generation as u64) << 32) | ((s as u64) << INDEX_BITS) | index as u64
}

/// The object behind `handle`, or `BCV_E_BAD_HANDLE`.
pub(crate) fn get(handle: u64) -> Result<Arc<Object>, bcv_status_t> {
    let bad = || fail_with(BCV_E_BAD_HANDLE, &format!("bad handle {handle:#x} (null, released or consumed)"));
    let (s, index, generation) = split(handle).ok_or_else(bad)?;
    let sh = shard(s);
    match sh.slots.get(index) {
        Some(slot) if slot.generation == generation => slot.object.clone().ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Removes `handle` from the table and returns its object, or `BCV_E_BAD_HANDLE`.
pub(crate) fn remove(handle: u64) -> Result<Arc<Object>, bcv_status_t> {
    let bad = || fail_with(BCV_E_BAD_HANDLE, &format!("bad handle {handle:#x} (null, released or consumed)"));
    let (s, index, generation) = split(handle).ok_or_else(bad)?;
    let mut sh = shard(s);
    let Some(slot) = sh.slots.get_mut(index) else { return Err(bad()) };
    if slot.generation != generation || slot.object.is_none() {
        return Err(bad());
    }
    let object = slot.object.take().ok_or_else(bad)?;
    slot.generation = slot.generation.wrapping_add(1).max(1);
    sh.free.push(index as u32);
    Ok(object)
}

/// The error for a handle of the wrong kind.
pub(crate) fn wrong_type(handle: u64, object: &Object, wanted: &str) -> bcv_status_t {
    fail_with(BCV_E_WRONG_TYPE, &format!("handle {handle:#x} is a {}, not a {wanted}", object.kind()))
}

/// Takes ownership of a handle's object for a call that consumes it (O1): the handle becomes invalid.
/// Fails with `BCV_E_BUSY` when another call is using the object at this moment (the handle stays valid).
pub(crate) fn consume(handle: u64) -> Result<Object, bcv_status_t> {
    let bad = || fail_with(BCV_E_BAD_HANDLE, &format!("bad handle {handle:#x} (null, released or consumed)"));
    let (s, index, generation) = split(handle).ok_or_else(bad)?;
    let object = {
        let mut sh = shard(s);
        let Some(slot) = sh.slots.get_mut(index) else { return Err(bad()) };
        match &slot.object {
            Some(o) if slot.generation == generation => {
                // Clones are only made under this lock, so a count of 1 cannot grow while we hold it.
                if Arc::strong_count(o) > 1 {
                    return Err(fail_with(
                        crate::error::BCV_E_BUSY,
                        &format!("handle {handle:#x} is in use by another call"),
                    ));
                }
            }
            _ => return Err(bad()),
        }
        let object = slot.object.take().ok_or_else(bad)?;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        sh.free.push(index as u32);
        object
    };
    Arc::try_unwrap(object).map_err(|_| fail_with(crate::error::BCV_E_INTERNAL, "consumed handle still shared"))
}
