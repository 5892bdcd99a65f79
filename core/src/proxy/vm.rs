//! A VM: one instance of a plugin module with its own store, holding any number of plugins (root contexts)
//! and their stream contexts. A driver thread delivers what arrives from outside a callback: tick timers,
//! callout responses, gRPC stream items and queue notifications.
//!
//! All guest calls of a VM are serialized by its lock. Run one VM per worker thread (several VMs may share
//! a VM id, and with it shared data and queues) to filter traffic in parallel.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};

use super::error::{FailReason, ProxyError, ProxyResult};
use super::headers::HeaderMap;
use super::host::{HostInner, ProxyHost};
use super::module::PluginModule;
use super::plugin::{Plugin, PluginConfig};
use super::services::{CalloutResult, GrpcStreamItem, LogRecord, Services};
use super::state::{ContextData, ContextKind, Deferred, Ending, Flow, HostState, Phase, PluginIdentity};
use super::types::{AbiVersion, LogLevel, StreamType};
use crate::handle::{Node, NodeHooks, TaskResource};

/// Something for the VM's driver thread.
#[derive(Debug)]
pub(crate) enum Event {
    Callout {
        id: u32,
        result: CalloutResult,
    },
    GrpcStream {
        id: u32,
        item: GrpcStreamItem,
    },
    QueueReady {
        root: u32,
        queue: u32,
    },
    /// Timers or callout deadlines changed: recompute the next wake-up.
    Wake,
    Shutdown,
}

/// What every host function of a VM can reach without the lock.
pub(crate) struct VmShared {
    pub id: String,
    pub services: Services,
    pub events: Sender<Event>,
    pub host: Arc<HostInner>,
    pub environment: Vec<(String, String)>,
    /// The driver's receiving end until the driver thread starts (lazily: many VMs never need one).
    pub driver: Mutex<Option<Receiver<Event>>>,
    pub owner: std::sync::OnceLock<Weak<VmInner>>,
    /// The recent log records (the newest [`LOG_BUFFER`](super::state::LOG_BUFFER)), behind a lock of their
    /// own so the embedder can take them even from inside one of this VM's callbacks.
    pub logs: Mutex<std::collections::VecDeque<LogRecord>>,
    /// Why the VM failed, once it has (readable without the VM lock, like the logs).
    pub failure: Mutex<Option<FailReason>>,
}

impl VmShared {
    /// Starts the driver thread if it is not running. Called by the host functions that create work
    /// for it (timers, callouts, gRPC streams, queue registrations).
    pub(crate) fn ensure_driver(&self) {
        let mut pending = self.driver.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(owner), true) = (self.owner.get(), pending.is_some()) else { return };
        let (Some(receiver), weak) = (pending.take(), owner.clone()) else { return };
        let name = format!("bcv-proxy-vm-{}", self.id);
        if let Err(e) = std::thread::Builder::new().name(name).spawn(move || drive(weak, receiver)) {
            tracing::error!(target: "bcv::proxy", vm = %self.id, "cannot start the VM driver thread: {e}");
        }
    }

    fn driver_started(&self) -> bool {
        self.driver.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

/// How to start a VM.
#[derive(Clone, Debug, Default)]
pub struct VmConfig {
    /// The VM id: VMs with the same id share shared data and queues (default: empty).
    pub vm_id: String,
    /// The VM configuration, readable in `on_vm_start`.
    pub configuration: Vec<u8>,
    /// Environment variables the guest sees through WASI (the host process's environment never leaks).
    pub environment: Vec<(String, String)>,
    /// Callouts, properties, foreign functions and the log sink.
    pub services: Services,
    /// Whether and how often a failed VM is re-created (default `None`: a failed VM stays failed).
    pub restart: Option<RestartPolicy>,
}

/// How a failed VM comes back: a fresh instance of the same module, `on_vm_start` with the VM
/// configuration, then every open plugin's root context and `on_configure`, as when they were added.
///
/// The restart happens on the next use of the VM (a new context, a call on a plugin, a tick or callout
/// delivery) once `backoff` has passed since the failure, and at most `max_restarts` times within any
/// `window`, so a plugin that fails on every request cannot turn the host into a crash loop: past the
/// limit the VM stays failed (and its plugins fail open or closed) until the window has moved on.
/// Stream contexts that were open at the failure stay failed; new ones use the new instance. Shared data
/// and queues (host-wide) and metrics survive; the guest's own memory does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restart attempts within `window` (successful or not).
    pub max_restarts: u32,
    /// The sliding window `max_restarts` applies to.
    pub window: Duration,
    /// The least time between a failure and the restart after it.
    pub backoff: Duration,
}

impl Default for RestartPolicy {
    /// 5 restarts a minute, each at least 1 s after its failure.
    fn default() -> Self {
        RestartPolicy { max_restarts: 5, window: Duration::from_secs(60), backoff: Duration::from_secs(1) }
    }
}

/// A VM's restart bookkeeping, behind its lock.
#[derive(Default)]
struct Restarts {
    /// When each attempt within the current window was made.
    attempts: std::collections::VecDeque<Instant>,
    /// When the current failure happened.
    failed_at: Option<Instant>,
}

type F<P, R> = Option<TypedFunc<P, R>>;

/// The guest's callbacks, resolved once per instance.
#[derive(Default)]
pub(crate) struct Exports {
    pub context_create: F<(i32, i32), ()>,
    pub vm_start: F<(i32, i32), i32>,
    pub configure: F<(i32, i32), i32>,
    pub tick: F<i32, ()>,
    pub queue_ready: F<(i32, i32), ()>,
    pub foreign_function: F<(i32, i32, i32), ()>,
    pub new_connection: F<i32, i32>,
    pub downstream_data: F<(i32, i32, i32), i32>,
    pub downstream_close: F<(i32, i32), ()>,
    pub upstream_data: F<(i32, i32, i32), i32>,
    pub upstream_close: F<(i32, i32), ()>,
    pub request_headers: F<(i32, i32, i32), i32>,
    pub request_headers_v1: F<(i32, i32), i32>,
    pub request_body: F<(i32, i32, i32), i32>,
    pub request_trailers: F<(i32, i32), i32>,
    pub response_headers: F<(i32, i32, i32), i32>,
    pub response_headers_v1: F<(i32, i32), i32>,
    pub response_body: F<(i32, i32, i32), i32>,
    pub response_trailers: F<(i32, i32), i32>,
    pub http_call_response: F<(i32, i32, i32, i32, i32), ()>,
    pub grpc_initial_metadata: F<(i32, i32, i32), ()>,
    pub grpc_receive: F<(i32, i32, i32), ()>,
    pub grpc_trailing_metadata: F<(i32, i32, i32), ()>,
    pub grpc_close: F<(i32, i32, i32), ()>,
    pub done: F<i32, i32>,
    pub log: F<i32, ()>,
    pub delete: F<i32, ()>,
}

fn export<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
) -> Result<F<P, R>, String> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => {
            func.typed::<P, R>(&*store).map(Some).map_err(|e| format!("export {name} has the wrong signature: {e}"))
        }
    }
}

impl Exports {
    fn resolve(store: &mut Store<HostState>, instance: &Instance, abi: AbiVersion) -> Result<Exports, String> {
        let mut e = Exports {
            context_create: export(store, instance, "proxy_on_context_create")?,
            vm_start: export(store, instance, "proxy_on_vm_start")?,
            configure: export(store, instance, "proxy_on_configure")?,
            tick: export(store, instance, "proxy_on_tick")?,
            queue_ready: export(store, instance, "proxy_on_queue_ready")?,
            new_connection: export(store, instance, "proxy_on_new_connection")?,
            downstream_data: export(store, instance, "proxy_on_downstream_data")?,
            downstream_close: export(store, instance, "proxy_on_downstream_connection_close")?,
            upstream_data: export(store, instance, "proxy_on_upstream_data")?,
            upstream_close: export(store, instance, "proxy_on_upstream_connection_close")?,
            request_body: export(store, instance, "proxy_on_request_body")?,
            request_trailers: export(store, instance, "proxy_on_request_trailers")?,
            response_body: export(store, instance, "proxy_on_response_body")?,
            response_trailers: export(store, instance, "proxy_on_response_trailers")?,
            http_call_response: export(store, instance, "proxy_on_http_call_response")?,
            grpc_initial_metadata: export(store, instance, "proxy_on_grpc_receive_initial_metadata")?,
            grpc_receive: export(store, instance, "proxy_on_grpc_receive")?,
            grpc_trailing_metadata: export(store, instance, "proxy_on_grpc_receive_trailing_metadata")?,
            grpc_close: export(store, instance, "proxy_on_grpc_close")?,
            done: export(store, instance, "proxy_on_done")?,
            log: export(store, instance, "proxy_on_log")?,
            delete: export(store, instance, "proxy_on_delete")?,
            ..Exports::default()
        };
        if abi == AbiVersion::V0_1_0 {
            e.request_headers_v1 = export(store, instance, "proxy_on_request_headers")?;
            e.response_headers_v1 = export(store, instance, "proxy_on_response_headers")?;
        } else {
            e.request_headers = export(store, instance, "proxy_on_request_headers")?;
            e.response_headers = export(store, instance, "proxy_on_response_headers")?;
            e.foreign_function = export(store, instance, "proxy_on_foreign_function")?;
        }
        Ok(e)
    }
}

thread_local! {
    /// The serial of the VM whose guest code this thread is running (0: none).
    static RUNNING: Cell<u64> = const { Cell::new(0) };
}

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A store with its instance: the part of a VM behind its lock.
pub(crate) struct VmCore {
    pub store: Store<HostState>,
    pub exports: Exports,
    /// The instance, for exports outside the ABI (the `fuzzing` feature's entry point).
    #[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
    instance: wasmtime::Instance,
    pub vm_started: bool,
    pub failed: Option<FailReason>,
    serial: u64,
    deadline_ticks: u64,
    memory_limit: u64,
    /// Threads waiting on [`VmInner::changed`]; `settle` skips the wake-up (a syscall) when there are none.
    pub waiters: usize,
    /// Stream contexts left from an instance that failed before a restart, with that failure: their data
    /// is kept (the embedder can still read it) but no guest code runs for them.
    pub orphans: HashMap<u32, FailReason>,
    restarts: Restarts,
}

/// Creates a store and instance of `module` and runs the guest's start functions.
fn instantiate(module: &PluginModule, shared: Arc<VmShared>, canary: bool, serial: u64) -> Result<VmCore, FailReason> {
    let host = &module.inner.host;
    let abi = module.inner.abi;
    let memory_limit = host.config.memory_limit;
    let state = HostState::new(abi, shared, memory_limit as usize, canary);
    let mut store = Store::new(&host.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    let deadline_ticks = host.deadline_ticks();
    store.set_epoch_deadline(deadline_ticks);
    store.data_mut().phase = Phase::Start;
    let previous = RUNNING.replace(serial);
    let result = (|| {
        let instance = module.inner.pre.instantiate(&mut store)?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = match instance.get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate") {
            Ok(f) => Some(f),
            Err(_) => instance.get_typed_func::<i32, i32>(&mut store, "malloc").ok(),
        };
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator.clone();
        if allocator.is_none() {
            return Err(wasmtime::Error::msg("the allocator export has the wrong signature (want (i32) -> i32)"));
        }
        if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            initialize.call(&mut store, ())?;
            if let Ok(main) = instance.get_typed_func::<(i32, i32), i32>(&mut store, "main") {
                main.call(&mut store, (0, 0))?;
            }
        } else if let Ok(start) = instance.get_typed_func::<(), ()>(&mut store, "_start") {
            start.call(&mut store, ())?;
        }
        Ok(instance)
    })();
    RUNNING.set(previous);
    store.data_mut().phase = Phase::Idle;
    let instance = match result {
        Ok(instance) => instance,
        Err(e) => return Err(classify(&mut store, &e, memory_limit)),
    };
    let exports = Exports::resolve(&mut store, &instance, abi).map_err(FailReason::Internal)?;
    Ok(VmCore {
        store,
        exports,
        instance,
        vm_started: false,
        failed: None,
        serial,
        deadline_ticks,
        memory_limit,
        waiters: 0,
        orphans: HashMap::new(),
        restarts: Restarts::default(),
    })
}

/// Names the cause of a guest error.
fn classify(store: &mut Store<HostState>, error: &wasmtime::Error, memory_limit: u64) -> FailReason {
    let state = store.data_mut();
    if let Some(fault) = state.fault.take() {
        return fault;
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return FailReason::CpuDeadline;
    }
    if state.limiter.denied {
        return FailReason::MemoryLimit { limit: memory_limit };
    }
    FailReason::Trap(format!("{error:#}"))
}

impl VmCore {
    /// Calls a guest callback for context `context`. A missing export yields `None`. An error fails the VM.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        func: &F<P, R>,
        context: u32,
        args: P,
    ) -> Result<Option<R>, FailReason> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        if !self.orphans.is_empty()
            && let Some(reason) = self.orphans.get(&context)
        {
            return Err(reason.clone());
        }
        let Some(func) = func else { return Ok(None) };
        {
            let state = self.store.data_mut();
            state.current = context;
            state.effective = context;
            state.phase = Phase::Callback;
            state.limiter.denied = false;
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        let previous = RUNNING.replace(self.serial);
        let result = func.call(&mut self.store, args);
        RUNNING.set(previous);
        let state = self.store.data_mut();
        state.phase = Phase::Idle;
        state.current = 0;
        state.effective = 0;
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let reason = classify(&mut self.store, &error, self.memory_limit);
                self.fail(reason.clone(), context);
                Err(reason)
            }
        }
    }

    /// Marks the VM failed (once) and logs why.
    pub(crate) fn fail(&mut self, reason: FailReason, context: u32) {
        if self.failed.is_none() {
            self.store.data_mut().log(LogLevel::Critical, context, format!("vm failed: {reason}"));
            if !self.store.data().canary {
                *self.store.data().vm.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            }
            self.failed = Some(reason);
            self.restarts.failed_at = Some(Instant::now());
        }
    }

    /// Runs `f` on the host state as if guest code were running, so that an embedder callback it reaches
    /// (the property handler) gets [`ProxyError::Reentrant`] if it calls back into this VM.
    pub(crate) fn as_running<T>(&mut self, f: impl FnOnce(&mut HostState) -> T) -> T {
        let previous = RUNNING.replace(self.serial);
        let result = f(self.store.data_mut());
        RUNNING.set(previous);
        result
    }

    pub(crate) fn state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Applies what the last callbacks deferred (continue, close, local reply, done). Returns contexts that
    /// became ready for `on_log` + `on_delete`.
    pub(crate) fn apply_deferred(&mut self) {
        loop {
            let deferred = std::mem::take(&mut self.state().deferred);
            if deferred.is_empty() {
                return;
            }
            for (id, action) in deferred {
                let Some(ctx) = self.state().contexts.get_mut(&id) else { continue };
                match action {
                    Deferred::Continue(stream) => {
                        if ctx.flows[stream.index()] == Flow::Paused {
                            ctx.flows[stream.index()] = Flow::Open;
                        }
                    }
                    Deferred::Close(stream) => ctx.flows[stream.index()] = Flow::Closed,
                    Deferred::LocalResponse(response) => {
                        if let Some(http) = ctx.http_mut() {
                            // The local reply becomes the response the plugin sees from now on (`on_log`
                            // reads its `:status`), as in Envoy.
                            let mut headers = HeaderMap::new();
                            headers.add(":status", response.status.to_string());
                            for (name, value) in response.headers.pairs() {
                                headers.add(name, value);
                            }
                            http.response_headers = headers;
                            http.response_body = response.body.clone();
                            http.local_response = Some(response);
                        }
                    }
                    Deferred::Done => {
                        if ctx.ending == Ending::WaitingForDone {
                            self.log_and_delete(id);
                        }
                    }
                }
            }
        }
    }

    /// `on_log` then `on_delete`, and forgets the context (a root context also loses its timer).
    pub(crate) fn log_and_delete(&mut self, id: u32) {
        let log = self.exports.log.clone();
        let delete = self.exports.delete.clone();
        let _ = self.call(&log, id, id as i32);
        let _ = self.call(&delete, id, id as i32);
        let state = self.state();
        if let Some(ctx) = state.contexts.get_mut(&id) {
            ctx.ending = Ending::Deleted;
        }
        state.contexts.remove(&id);
        state.ticks.remove(&id);
        state.callouts.retain(|_, pending| pending.context != id);
    }

    /// `on_done`; when it returns true (or the VM failed), `on_log` + `on_delete`. Returns true when the
    /// context is gone, false when it waits for `proxy_done`.
    pub(crate) fn finish_context(&mut self, id: u32) -> bool {
        if self.orphans.remove(&id).is_some() {
            // Its instance is gone: nothing of the guest to run.
            self.state().contexts.remove(&id);
            return true;
        }
        match self.state().contexts.get(&id).map(|c| c.ending) {
            None | Some(Ending::Deleted) => return true,
            Some(Ending::WaitingForDone) => return false,
            Some(Ending::Live) => {}
        }
        let done = self.exports.done.clone();
        let finished = match self.call(&done, id, id as i32) {
            Ok(Some(0)) => false,
            Ok(_) => true,
            Err(_) => true,
        };
        if finished || self.failed.is_some() {
            if self.failed.is_none() {
                self.log_and_delete(id);
            } else {
                self.state().contexts.remove(&id);
            }
            self.apply_deferred();
            true
        } else {
            if let Some(ctx) = self.state().contexts.get_mut(&id) {
                ctx.ending = Ending::WaitingForDone;
            }
            self.apply_deferred();
            false
        }
    }
}

/// The shared part of a VM.
pub(crate) struct VmInner {
    pub id: String,
    pub module: PluginModule,
    pub shared: Arc<VmShared>,
    pub core: Mutex<VmCore>,
    /// Signalled whenever a callback ran, so waiters on paused streams re-check.
    pub changed: Condvar,
    pub resource: TaskResource,
    pub serial: u64,
    pub restart: Option<RestartPolicy>,
    /// Successful restarts so far (readable without the lock).
    pub restart_count: std::sync::atomic::AtomicU32,
}

impl Drop for VmInner {
    fn drop(&mut self) {
        let _ = self.shared.events.send(Event::Shutdown);
    }
}

impl VmInner {
    /// Locks the VM. Refused from inside one of its own callbacks (that would deadlock).
    pub(crate) fn lock(&self) -> ProxyResult<MutexGuard<'_, VmCore>> {
        if RUNNING.get() == self.serial {
            return Err(ProxyError::Reentrant { vm: self.id.clone() });
        }
        Ok(self.core.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Locks the VM for new work (a new context or plugin, a call on a plugin, a driver delivery): a failed
    /// VM is re-created first when its [`RestartPolicy`] allows it. Finishing and reading existing contexts
    /// use [`lock`](Self::lock), so winding down after a failure never restarts the VM by itself.
    pub(crate) fn lock_for_work(&self) -> ProxyResult<MutexGuard<'_, VmCore>> {
        let mut core = self.lock()?;
        if core.failed.is_some()
            && let Some(policy) = &self.restart
        {
            self.maybe_restart(&mut core, policy);
        }
        Ok(core)
    }

    /// Re-creates the failed VM behind `core` if `policy` allows it now (see [`RestartPolicy`]). A restart
    /// that fails leaves the failed instance in place and counts as an attempt.
    fn maybe_restart(&self, core: &mut VmCore, policy: &RestartPolicy) {
        let now = Instant::now();
        let restarts = &mut core.restarts;
        if restarts.failed_at.is_some_and(|at| now.saturating_duration_since(at) < policy.backoff) {
            return;
        }
        while restarts.attempts.front().is_some_and(|t| now.saturating_duration_since(*t) >= policy.window) {
            restarts.attempts.pop_front();
        }
        if restarts.attempts.len() >= policy.max_restarts as usize {
            return;
        }
        restarts.attempts.push_back(now);
        let Some(reason) = core.failed.clone() else { return };
        match self.fresh_core(core, &reason) {
            Ok(mut fresh) => {
                fresh.restarts = std::mem::take(&mut core.restarts);
                fresh.restarts.failed_at = None;
                fresh.waiters = core.waiters;
                *core = fresh;
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let count = self.restart_count.fetch_add(1, Ordering::AcqRel) + 1;
                core.store.data_mut().log(LogLevel::Warn, 0, format!("vm restarted (restart {count}) after: {reason}"));
                self.settle(core);
            }
            Err(why) => {
                core.store.data_mut().log(LogLevel::Error, 0, format!("vm restart failed: {why}"));
            }
        }
    }

    /// A new instance with `old`'s plugins started on it and `old`'s stream contexts kept as orphans.
    fn fresh_core(&self, old: &mut VmCore, reason: &FailReason) -> Result<VmCore, String> {
        let mut fresh = instantiate(&self.module, self.shared.clone(), false, self.serial)
            .map_err(|r| format!("start of the new instance: {r}"))?;
        let state = old.state();
        fresh.state().call.vm_configuration = state.call.vm_configuration.clone();
        fresh.state().next_context = state.next_context;
        let mut roots: Vec<(u32, Arc<PluginIdentity>)> = state
            .contexts
            .iter()
            .filter(|(_, c)| matches!(c.kind, ContextKind::Root) && c.ending == Ending::Live)
            .map(|(id, c)| (*id, c.plugin.clone()))
            .collect();
        roots.sort_by_key(|(id, _)| *id);
        for (root, identity) in &roots {
            fresh.state().contexts.insert(*root, ContextData::new(ContextKind::Root, identity.clone()));
            start_root(&mut fresh, *root, identity).map_err(|r| format!("plugin {}: {r}", identity.name))?;
        }
        fresh.apply_deferred();
        // Stream contexts of the failed instance keep their data, never run guest code again.
        let streams: Vec<u32> = old
            .state()
            .contexts
            .iter()
            .filter(|(_, c)| !matches!(c.kind, ContextKind::Root))
            .map(|(id, _)| *id)
            .collect();
        for id in streams {
            if let Some(data) = old.state().contexts.remove(&id) {
                fresh.state().contexts.insert(id, data);
                fresh.orphans.insert(id, reason.clone());
            }
        }
        fresh.orphans.extend(old.orphans.drain());
        Ok(fresh)
    }

    pub(crate) fn failed_error(&self, reason: FailReason) -> ProxyError {
        ProxyError::VmFailed { vm: self.id.clone(), reason }
    }

    /// Runs after any callbacks: applies deferred actions and wakes waiters.
    pub(crate) fn settle(&self, core: &mut VmCore) {
        core.apply_deferred();
        if core.waiters > 0 {
            self.changed.notify_all();
        }
    }
}

struct VmHooks(Sender<Event>);

impl NodeHooks for VmHooks {
    fn on_close(&self, _closed: crate::handle::Closed) {
        let _ = self.0.send(Event::Shutdown);
    }
}

/// A running VM. Cloning shares it. Dropping every handle (and its plugins' and contexts') stops it; so
/// does closing its node or the host's.
#[derive(Clone)]
pub struct Vm {
    pub(crate) inner: Arc<VmInner>,
    node: Node,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("id", &self.inner.id).field("module", &self.inner.module.name()).finish()
    }
}

impl Vm {
    /// Starts a VM of `module` on `host`: instantiates it and runs `_initialize` (+ `main`) or `_start`
    /// with only logging and WASI allowed. `on_vm_start` runs with the first plugin.
    ///
    /// Errors: [`ProxyError::VmStart`] when instantiation or the start functions fail (the pool is full,
    /// the start code traps or calls a restricted function); [`ProxyError::Closed`] when the host is closed.
    pub fn start(host: &ProxyHost, module: &PluginModule, config: VmConfig) -> ProxyResult<Vm> {
        let (events, receiver) = channel();
        let (resource, node) = TaskResource::create_with(
            &host.inner.runtime,
            "proxy vm",
            Some(&host.resource.core),
            Some(Box::new(VmHooks(events.clone()))),
        )
        .map_err(ProxyError::Closed)?;
        let shared = Arc::new(VmShared {
            id: config.vm_id.clone(),
            services: config.services,
            events,
            host: host.inner.clone(),
            environment: config.environment,
            driver: Mutex::new(Some(receiver)),
            owner: std::sync::OnceLock::new(),
            logs: Mutex::new(std::collections::VecDeque::new()),
            failure: Mutex::new(None),
        });
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut core = instantiate(module, shared.clone(), false, serial)
            .map_err(|reason| ProxyError::VmStart { vm: config.vm_id.clone(), reason: reason.to_string() })?;
        core.state().call.vm_configuration = config.configuration;
        let inner = Arc::new(VmInner {
            id: config.vm_id,
            module: module.clone(),
            shared,
            core: Mutex::new(core),
            changed: Condvar::new(),
            resource,
            serial,
            restart: config.restart,
            restart_count: std::sync::atomic::AtomicU32::new(0),
        });
        let _ = inner.shared.owner.set(Arc::downgrade(&inner));
        Ok(Vm { inner, node })
    }

    /// The VM id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The module it runs.
    pub fn module(&self) -> &PluginModule {
        &self.inner.module
    }

    /// The VM's node (close, state).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Adds a plugin (a root context): first a canary — a throw-away instance runs start, `on_vm_start` and
    /// `on_configure` — then the same on this VM. `on_vm_start` runs only for the VM's first plugin.
    ///
    /// Errors: [`ProxyError::PluginRejected`] when the canary or the real configure fails or returns false;
    /// [`ProxyError::VmFailed`] when the VM has failed; [`ProxyError::Reentrant`] from a VM callback.
    pub fn add_plugin(&self, config: PluginConfig) -> ProxyResult<Plugin> {
        Plugin::create(self, config)
    }

    /// How many times the VM was re-created after a failure ([`VmConfig::restart`]). Never blocks.
    pub fn restarts(&self) -> u32 {
        self.inner.restart_count.load(Ordering::Acquire)
    }

    /// The failure that stopped the VM, if any (`None` again once a restart succeeded). Never blocks on
    /// the VM (callable from its own callbacks).
    pub fn failure(&self) -> Option<FailReason> {
        self.inner.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the log records kept so far (the most recent 4096). Never blocks on the VM (callable from its
    /// own callbacks, e.g. a log handler or a callout).
    pub fn take_logs(&self) -> Vec<LogRecord> {
        self.inner.shared.logs.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    /// Bytes of linear memory the instance has now.
    ///
    /// Errors: [`ProxyError::Reentrant`] from one of this VM's callbacks.
    pub fn memory_size(&self) -> ProxyResult<usize> {
        let core = self.inner.lock()?;
        Ok(core.store.data().memory.map(|m| m.data_size(&core.store)).unwrap_or(0))
    }

    /// Number of live contexts (root and stream).
    ///
    /// Errors: [`ProxyError::Reentrant`] from one of this VM's callbacks.
    pub fn context_count(&self) -> ProxyResult<usize> {
        Ok(self.inner.lock()?.store.data().contexts.len())
    }

    /// Waits until no tick, queue notification or callout response is being delivered and none is
    /// queued, up to `timeout`. For tests and orderly shutdown.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        if !self.inner.shared.driver_started() {
            return true;
        }
        let (tx, rx) = channel();
        let _ = self.inner.shared.events.send(Event::Callout { id: 0, result: CalloutResult::Flush(tx) });
        rx.recv_timeout(timeout).is_ok()
    }
}

/// A throw-away instance that runs start, vm_start and configure for `identity`: a plugin that would
/// fail there is refused before it touches the real VM.
pub(crate) fn run_canary(vm: &VmInner, identity: &Arc<PluginIdentity>, vm_configuration: &[u8]) -> Result<(), String> {
    let mut core =
        instantiate(&vm.module, vm.shared.clone(), true, vm.serial).map_err(|r| format!("canary start: {r}"))?;
    core.state().call.vm_configuration = vm_configuration.to_vec();
    let root = core.state().allocate_context_id();
    core.state().contexts.insert(root, ContextData::new(ContextKind::Root, identity.clone()));
    start_root(&mut core, root, identity).map_err(|r| format!("canary: {r}"))
}

/// `on_context_create(root, 0)`, `on_vm_start` for a VM's first plugin, then `on_configure`.
pub(crate) fn start_root(core: &mut VmCore, root: u32, identity: &PluginIdentity) -> Result<(), String> {
    let create = core.exports.context_create.clone();
    core.call(&create, root, (root as i32, 0)).map_err(|r| r.to_string())?;
    if !core.vm_started {
        let vm_start = core.exports.vm_start.clone();
        let size = core.state().call.vm_configuration.len() as i32;
        match core.call(&vm_start, root, (root as i32, size)) {
            Ok(Some(0)) => {
                core.fail(FailReason::VmStartRefused, root);
                return Err(FailReason::VmStartRefused.to_string());
            }
            Ok(_) => core.vm_started = true,
            Err(r) => return Err(r.to_string()),
        }
    }
    let configure = core.exports.configure.clone();
    let size = identity.configuration.len() as i32;
    match core.call(&configure, root, (root as i32, size)) {
        Ok(Some(0)) => Err("on_configure returned false".into()),
        Ok(_) => Ok(()),
        Err(r) => Err(r.to_string()),
    }
}

/// The driver thread: holds only a weak reference while it waits, so a VM nobody uses can go away.
fn drive(weak: Weak<VmInner>, events: Receiver<Event>) {
    let mut next_tick: HashMap<u32, Instant> = HashMap::new();
    let mut wait = Duration::from_secs(3600);
    loop {
        let event = match events.recv_timeout(wait) {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
        };
        let Some(vm) = weak.upgrade() else { return };
        if !vm.resource.core.is_open() {
            return;
        }
        let Ok(mut core) = vm.lock_for_work() else { return };
        let mut flush = Vec::new();
        if let Some(event) = event {
            deliver(&mut core, event, &mut flush);
        }
        // Drain whatever else is already queued before looking at timers.
        while let Ok(event) = events.try_recv() {
            if matches!(event, Event::Shutdown) {
                return;
            }
            deliver(&mut core, event, &mut flush);
        }
        wait = run_timers(&mut core, &mut next_tick);
        vm.settle(&mut core);
        drop(core);
        for done in flush {
            let _ = done.send(());
        }
    }
}

fn deliver(core: &mut VmCore, event: Event, flush: &mut Vec<Sender<()>>) {
    match event {
        Event::Callout { result: CalloutResult::Flush(done), .. } => flush.push(done),
        Event::Callout { id, result } => deliver_callout(core, id, result),
        Event::GrpcStream { id, item } => deliver_grpc_stream(core, id, item),
        Event::QueueReady { root, queue } => {
            if core.state().contexts.contains_key(&root) {
                let f = core.exports.queue_ready.clone();
                let _ = core.call(&f, root, (root as i32, queue as i32));
            }
        }
        Event::Wake | Event::Shutdown => {}
    }
    core.apply_deferred();
}

fn deliver_callout(core: &mut VmCore, id: u32, result: CalloutResult) {
    let Some(pending) = core.state().callouts.remove(&id) else { return };
    let context = pending.context;
    if !core.state().contexts.contains_key(&context) {
        return;
    }
    match result {
        CalloutResult::Http(Some(response)) => {
            let status = response.headers.get_str(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
            let counts = (response.headers.len() as i32, response.body.len() as i32, response.trailers.len() as i32);
            let state = core.state();
            state.call.status = (status, Vec::new());
            state.call.http_response = Some(response);
            let f = core.exports.http_call_response.clone();
            let _ = core.call(&f, context, (context as i32, id as i32, counts.0.max(1), counts.1, counts.2));
        }
        CalloutResult::Http(None) => {
            let f = core.exports.http_call_response.clone();
            core.state().call.http_response = None;
            let _ = core.call(&f, context, (context as i32, id as i32, 0, 0, 0));
        }
        CalloutResult::Grpc(response) => {
            let (status, message) = (response.status, response.status_message.clone().into_bytes());
            let payload = response.message.clone();
            let state = core.state();
            state.call.status = (status, message);
            state.call.grpc_message = payload;
            state.call.grpc = Some(response);
            if status == 0 {
                let size = core.state().call.grpc_message.len() as i32;
                let f = core.exports.grpc_receive.clone();
                let _ = core.call(&f, context, (context as i32, id as i32, size));
            } else {
                let f = core.exports.grpc_close.clone();
                let _ = core.call(&f, context, (context as i32, id as i32, status as i32));
            }
        }
        CalloutResult::Flush(_) => {}
    }
    let call = &mut core.state().call;
    call.http_response = None;
    call.grpc = None;
    call.grpc_message.clear();
    call.status = (0, Vec::new());
}

fn deliver_grpc_stream(core: &mut VmCore, id: u32, item: GrpcStreamItem) {
    let Some(context) = core.state().grpc_streams.get(&id).map(|(c, _)| *c) else { return };
    let (ctx, call) = (context as i32, id as i32);
    match item {
        GrpcStreamItem::Initial(metadata) => {
            let n = metadata.len() as i32;
            core.state().call.grpc =
                Some(super::services::GrpcResponse { initial_metadata: metadata, ..Default::default() });
            let f = core.exports.grpc_initial_metadata.clone();
            let _ = core.call(&f, context, (ctx, call, n));
        }
        GrpcStreamItem::Message(message) => {
            let n = message.len() as i32;
            core.state().call.grpc_message = message;
            let f = core.exports.grpc_receive.clone();
            let _ = core.call(&f, context, (ctx, call, n));
        }
        GrpcStreamItem::Trailing(metadata) => {
            let n = metadata.len() as i32;
            core.state().call.grpc =
                Some(super::services::GrpcResponse { trailing_metadata: metadata, ..Default::default() });
            let f = core.exports.grpc_trailing_metadata.clone();
            let _ = core.call(&f, context, (ctx, call, n));
        }
        GrpcStreamItem::Close(status, message) => {
            core.state().grpc_streams.remove(&id);
            core.state().call.status = (status, message.into_bytes());
            let f = core.exports.grpc_close.clone();
            let _ = core.call(&f, context, (ctx, call, status as i32));
        }
    }
    let call = &mut core.state().call;
    call.grpc = None;
    call.grpc_message.clear();
}

/// Fires due ticks and expires overdue callouts; returns how long to sleep.
fn run_timers(core: &mut VmCore, next_tick: &mut HashMap<u32, Instant>) -> Duration {
    let now = Instant::now();
    let periods: Vec<(u32, Duration)> = core.state().ticks.iter().map(|(r, p)| (*r, *p)).collect();
    next_tick.retain(|root, _| periods.iter().any(|(r, p)| r == root && !p.is_zero()));
    for (root, period) in periods {
        if period.is_zero() {
            core.state().ticks.remove(&root);
            continue;
        }
        let due = *next_tick.entry(root).or_insert(now + period);
        if due <= now && core.failed.is_none() {
            let f = core.exports.tick.clone();
            let _ = core.call(&f, root, root as i32);
            core.apply_deferred();
            let next = due + period;
            next_tick.insert(root, if next <= now { now + period } else { next });
        }
    }
    let overdue: Vec<u32> =
        core.state().callouts.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
    for id in overdue {
        let grpc = core.state().callouts.get(&id).is_some_and(|p| p.grpc);
        let result = if grpc {
            CalloutResult::Grpc(super::services::GrpcResponse {
                status: 4,
                status_message: "deadline exceeded".into(),
                ..Default::default()
            })
        } else {
            CalloutResult::Http(None)
        };
        deliver_callout(core, id, result);
        core.apply_deferred();
    }
    let mut wake = now + Duration::from_secs(3600);
    for due in next_tick.values() {
        wake = wake.min(*due);
    }
    for pending in core.state().callouts.values() {
        wake = wake.min(pending.deadline);
    }
    wake.saturating_duration_since(Instant::now())
}

/// Used by contexts: the flow of `stream` after a callback returned Pause (`paused`) or Continue. A later
/// callback that continues (with more data buffered) resumes a stream an earlier one paused.
pub(crate) fn flow_after(core: &mut VmCore, context: u32, stream: StreamType, paused: bool) {
    if let Some(ctx) = core.state().contexts.get_mut(&context) {
        let flow = &mut ctx.flows[stream.index()];
        match (*flow, paused) {
            (Flow::Open, true) => *flow = Flow::Paused,
            (Flow::Paused, false) => *flow = Flow::Open,
            _ => {}
        }
    }
}

#[cfg(feature = "fuzzing")]
impl Vm {
    /// Fuzzing only (Cargo feature `fuzzing`): calls the `fuzz_guest` test module's `fuzz_call(which, args)`
    /// export as a callback of context `context` — `data` is copied to the start of its `fuzz_scratch()`
    /// buffer and the 12 `args` right after it; `args[i]` gets the buffer's address added when bit `i` of
    /// `relative` is set, so it points into `data` — so a fuzz target reaches every host function with
    /// arbitrary arguments. Returns the host function's status, or the VM's failure.
    ///
    /// Errors: [`ProxyError::InvalidState`] when the module has no `fuzz_call`/`fuzz_scratch` or `data` does
    /// not fit the 4 KiB scratch buffer; [`ProxyError::VmFailed`]; [`ProxyError::Reentrant`].
    #[doc(hidden)]
    pub fn fuzz_call(&self, context: u32, which: i32, args: [i32; 12], relative: u16, data: &[u8]) -> ProxyResult<i32> {
        const SCRATCH_SIZE: usize = 4096;
        let invalid =
            |reason: &str| ProxyError::InvalidState { context: format!("vm {}", self.inner.id), reason: reason.into() };
        let mut core = self.inner.lock()?;
        let instance = core.instance;
        let scratch = instance
            .get_typed_func::<(), i32>(&mut core.store, "fuzz_scratch")
            .map_err(|_| invalid("no fuzz_scratch export"))?;
        let call = instance
            .get_typed_func::<(i32, i32), i32>(&mut core.store, "fuzz_call")
            .map_err(|_| invalid("no fuzz_call export"))?;
        if data.len() + args.len() * 4 > SCRATCH_SIZE {
            return Err(invalid("fuzz data does not fit the scratch buffer"));
        }
        let base = core.call(&Some(scratch), context, ()).map_err(|r| self.inner.failed_error(r))?.unwrap_or(0);
        let memory = core.store.data().memory.ok_or_else(|| invalid("no memory"))?;
        let args_at = base as usize + data.len().next_multiple_of(4);
        let mut bytes = data.to_vec();
        bytes.resize(args_at - base as usize, 0);
        for (i, arg) in args.into_iter().enumerate() {
            let arg = if relative & (1 << i) != 0 { arg.wrapping_add(base) } else { arg };
            bytes.extend_from_slice(&arg.to_le_bytes());
        }
        memory.write(&mut core.store, base as usize, &bytes).map_err(|_| invalid("scratch outside memory"))?;
        let status = core.call(&Some(call), context, (which, args_at as i32));
        self.inner.settle(&mut core);
        status.map(|s| s.unwrap_or(0)).map_err(|r| self.inner.failed_error(r))
    }
}
