//! One `napi_env` (the main thread or a worker) as an ownership scope (LIFETIMES.md N2).
//!
//! Every env gets an [`EnvLocal`], kept in a thread-local because a Node env lives on exactly one thread.
//! It owns:
//!
//! * the **bridge**: one thread-safe function through which work finished on the bcv runtime's threads is
//!   handed back to the JS thread (settling a promise, delivering an `onData` event, deleting a JS
//!   reference). Once the env is torn down the bridge is dead and everything posted to it is dropped
//!   quietly, never touching a freed TSFN or env (napi-rs#2460, neon#744);
//! * the **registry** of the nodes handed to this env's JS code, which the env cleanup hook closes with
//!   `RUNTIME_SHUTDOWN`, so `worker.terminate()` and `process.exit()` are safe (T17, T18);
//! * the JS values that outlive a call: the error factory installed by `lib/index.js`, values parked in
//!   bcv futures, `onData` callbacks, and the binding's scope stack.
//!
//! Nothing here blocks the JS thread (N1).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, Weak};

use bcv_core::handle::{CloseReason, Runtime};
use bytes::Bytes;
use napi::sys;

use crate::callable::CallQueue;
use crate::error::JsErr;
use crate::handle::Kind;
use crate::scope::ScopeState;

/// Work to run on the JS thread of one env. Dropped without running once the env is gone.
pub(crate) type Task = Box<dyn FnOnce(&EnvLocal) + Send + 'static>;

/// A `napi_threadsafe_function` pointer that may be moved to other threads (the API is thread-safe).
struct TsfnPtr(sys::napi_threadsafe_function);
// SAFETY: `napi_call_threadsafe_function` may be called from any thread; access is serialised by the
// bridge's mutex, which also guarantees the pointer is never used after the env tore it down.
unsafe impl Send for TsfnPtr {}

/// The thread-safe half of an env: any thread can post a [`Task`] to the env's JS thread.
pub(crate) struct Bridge {
    tsfn: Mutex<Option<TsfnPtr>>,
}

impl Bridge {
    /// Hands `task` to the JS thread. Returns `false` (and drops the task on this thread) when the env
    /// has been torn down: late results are dropped quietly (N2).
    pub(crate) fn post(&self, task: Task) -> bool {
        let guard = self.tsfn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tsfn) = guard.as_ref() else {
            drop(guard);
            drop(task);
            return false;
        };
        let data = Box::into_raw(Box::new(task));
        // SAFETY: the TSFN is alive: the cleanup hook clears the slot (under this lock) before Node
        // finalizes it, and it is never released by us while the slot holds it.
        let status = unsafe {
            sys::napi_call_threadsafe_function(tsfn.0, data.cast(), sys::ThreadsafeFunctionCallMode::nonblocking)
        };
        drop(guard);
        if status != sys::Status::napi_ok {
            // SAFETY: the call failed, so ownership of `data` stayed with us.
            drop(unsafe { Box::from_raw(data) });
            return false;
        }
        true
    }

    fn kill(&self) {
        self.tsfn.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// False once the env has been torn down (nothing posted runs any more).
    pub(crate) fn is_alive(&self) -> bool {
        self.tsfn.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Runs on the JS thread for every posted task; with a null `env` the TSFN is being torn down and the
/// task is only dropped.
unsafe extern "C" fn call_js(env: sys::napi_env, _js_cb: sys::napi_value, _context: *mut c_void, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` was produced by `Box::into_raw` in `Bridge::post` and is consumed exactly once.
    let task: Box<Task> = unsafe { Box::from_raw(data.cast()) };
    if env.is_null() {
        return;
    }
    let _ = ENV.try_with(|slot| {
        let local = slot.borrow().clone();
        if let Some(local) = local
            && !local.dead.get()
        {
            (*task)(&local);
        }
    });
}

/// A JS value parked on the native side (a future's value, an `onData` callback): identified by an id,
/// its `napi_ref` lives in the env's table and is deleted on the JS thread only.
pub(crate) struct JsKey {
    pub(crate) id: u64,
    bridge: Weak<Bridge>,
    taken: AtomicBool,
}

impl JsKey {
    /// Marks the value as claimed by the JS thread, so dropping the key does not post a deletion.
    pub(crate) fn claim(&self) -> u64 {
        self.taken.store(true, Ordering::Release);
        self.id
    }
}

impl Drop for JsKey {
    fn drop(&mut self) {
        // The value was never claimed (a future's reader went away, a callback ended): free the JS value
        // on its own thread. After env teardown there is nothing left to free.
        if self.taken.load(Ordering::Acquire) {
            return;
        }
        if let Some(bridge) = self.bridge.upgrade() {
            let id = self.id;
            bridge.post(Box::new(move |local: &EnvLocal| local.drop_value(id)));
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RUNTIME_USED: AtomicBool = AtomicBool::new(false);

/// The process-wide bcv runtime shared by every env (started on first use).
pub(crate) fn runtime() -> &'static Runtime {
    RUNTIME_USED.store(true, Ordering::Relaxed);
    Runtime::global()
}

/// True once any env has used the runtime (so exit does not start one only to stop it).
pub(crate) fn runtime_used() -> bool {
    RUNTIME_USED.load(Ordering::Relaxed)
}

/// A pending `onData` delivery: the SDK thread waits on `done` until the JS callback settled.
pub(crate) struct ActiveCallback {
    pub(crate) node_id: u64,
    pub(crate) done: SyncSender<()>,
}

/// The JS-thread half of an env.
pub(crate) struct EnvLocal {
    pub(crate) raw: sys::napi_env,
    pub(crate) bridge: Arc<Bridge>,
    tsfn: sys::napi_threadsafe_function,
    dead: Cell<bool>,
    pending_ops: Cell<usize>,
    /// Nodes handed to this env's JS code, by node id; closed with `RUNTIME_SHUTDOWN` at teardown.
    registry: RefCell<HashMap<u64, Weak<Kind>>>,
    registry_prune_at: Cell<usize>,
    values: RefCell<HashMap<u64, sys::napi_ref>>,
    error_factory: Cell<sys::napi_ref>,
    /// `onData` callbacks whose JS side has started and not yet settled, by token.
    pub(crate) callbacks: RefCell<HashMap<u64, ActiveCallback>>,
    /// The binding's scope stack (innermost last), mirroring core's thread-local one.
    pub(crate) scopes: RefCell<Vec<Rc<ScopeState>>>,
    /// Calls of JS callables (ciphers, key providers) queued by other threads for this thread.
    pub(crate) calls: Arc<CallQueue>,
}

thread_local! {
    static ENV: RefCell<Option<Rc<EnvLocal>>> = const { RefCell::new(None) };
}

impl EnvLocal {
    /// The env of the current JS thread, created (TSFN + cleanup hook) on first use.
    pub(crate) fn get(env: sys::napi_env) -> napi::Result<Rc<EnvLocal>> {
        if let Some(local) = ENV.with(|slot| slot.borrow().clone())
            && local.raw == env
            && !local.dead.get()
        {
            return Ok(local);
        }
        let local = Rc::new(EnvLocal::create(env)?);
        ENV.with(|slot| *slot.borrow_mut() = Some(local.clone()));
        Ok(local)
    }

    /// The env of the current JS thread, if one was set up and is still alive.
    pub(crate) fn current() -> Option<Rc<EnvLocal>> {
        ENV.try_with(|slot| slot.borrow().clone()).ok().flatten().filter(|l| !l.dead.get())
    }

    fn create(env: sys::napi_env) -> napi::Result<EnvLocal> {
        let mut name = ptr::null_mut();
        let label = "bcv";
        check(unsafe { sys::napi_create_string_utf8(env, label.as_ptr().cast(), label.len() as isize, &mut name) })?;
        let mut tsfn = ptr::null_mut();
        check(unsafe {
            sys::napi_create_threadsafe_function(
                env,
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
                Some(call_js),
                &mut tsfn,
            )
        })?;
        // Idle by default: only pending operations keep the event loop alive (see `op_started`).
        check(unsafe { sys::napi_unref_threadsafe_function(env, tsfn) })?;
        let bridge = Arc::new(Bridge { tsfn: Mutex::new(Some(TsfnPtr(tsfn))) });
        // Registered after the TSFN, so it runs before Node's own TSFN teardown (hooks run in reverse
        // order): the bridge is dead before the TSFN is freed.
        let hook_arg = Arc::into_raw(bridge.clone()) as *mut c_void;
        check(unsafe { sys::napi_add_env_cleanup_hook(env, Some(env_cleanup), hook_arg) })?;
        Ok(EnvLocal {
            raw: env,
            bridge,
            tsfn,
            dead: Cell::new(false),
            pending_ops: Cell::new(0),
            registry: RefCell::new(HashMap::new()),
            registry_prune_at: Cell::new(1024),
            values: RefCell::new(HashMap::new()),
            error_factory: Cell::new(ptr::null_mut()),
            callbacks: RefCell::new(HashMap::new()),
            scopes: RefCell::new(Vec::new()),
            calls: Arc::new(CallQueue::new()),
        })
    }

    /// A fresh id for tokens and parked values.
    pub(crate) fn next_id() -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// An operation whose result will come back through the bridge started: keep the loop alive.
    pub(crate) fn op_started(&self) {
        let n = self.pending_ops.get();
        if n == 0 {
            unsafe { sys::napi_ref_threadsafe_function(self.raw, self.tsfn) };
        }
        self.pending_ops.set(n + 1);
    }

    /// The result of an operation arrived on the JS thread.
    pub(crate) fn op_finished(&self) {
        let n = self.pending_ops.get().saturating_sub(1);
        self.pending_ops.set(n);
        if n == 0 && !self.dead.get() {
            unsafe { sys::napi_unref_threadsafe_function(self.raw, self.tsfn) };
        }
    }

    /// Records a node handed to JS so env teardown can close it.
    pub(crate) fn register(&self, id: u64, kind: &Arc<Kind>) {
        let mut reg = self.registry.borrow_mut();
        if reg.len() >= self.registry_prune_at.get() {
            reg.retain(|_, w| w.strong_count() > 0);
            self.registry_prune_at.set((reg.len() * 2).max(1024));
        }
        reg.insert(id, Arc::downgrade(kind));
    }

    /// Forgets a node (its handle was finalized or consumed).
    pub(crate) fn unregister(&self, id: u64) {
        self.registry.borrow_mut().remove(&id);
    }

    /// The live node with this id handed to this env, if any.
    pub(crate) fn lookup(&self, id: u64) -> Option<Arc<Kind>> {
        self.registry.borrow().get(&id).and_then(Weak::upgrade)
    }

    /// Parks a JS value; the returned key is `Send` and frees the value on this thread when dropped.
    pub(crate) fn park_value(&self, value: sys::napi_value) -> napi::Result<JsKey> {
        // Node 20 only references objects, functions and symbols: primitives go in a holder object.
        let holder = crate::js::object(self.raw);
        crate::js::set(self.raw, holder, "v", value);
        let mut r = ptr::null_mut();
        check(unsafe { sys::napi_create_reference(self.raw, holder, 1, &mut r) })?;
        let id = Self::next_id();
        self.values.borrow_mut().insert(id, r);
        Ok(JsKey { id, bridge: Arc::downgrade(&self.bridge), taken: AtomicBool::new(false) })
    }

    /// Takes a parked value back (removing it from the table).
    pub(crate) fn take_value(&self, key: &JsKey) -> napi::Result<sys::napi_value> {
        let id = key.claim();
        let r = self
            .values
            .borrow_mut()
            .remove(&id)
            .ok_or_else(|| napi::Error::from_reason("bcv: parked value is gone"))?;
        let mut holder = ptr::null_mut();
        let status = unsafe { sys::napi_get_reference_value(self.raw, r, &mut holder) };
        unsafe { sys::napi_delete_reference(self.raw, r) };
        check(status)?;
        Ok(crate::js::get(self.raw, holder, "v"))
    }

    /// Reads a parked value without taking it (callbacks are called many times).
    pub(crate) fn peek_value(&self, id: u64) -> Option<sys::napi_value> {
        let r = *self.values.borrow().get(&id)?;
        let mut holder = ptr::null_mut();
        (unsafe { sys::napi_get_reference_value(self.raw, r, &mut holder) } == sys::Status::napi_ok)
            .then(|| crate::js::get(self.raw, holder, "v"))
    }

    fn drop_value(&self, id: u64) {
        if let Some(r) = self.values.borrow_mut().remove(&id) {
            unsafe { sys::napi_delete_reference(self.raw, r) };
        }
    }

    /// Installs the function `lib/index.js` uses to build typed errors: `(code, message, details) => Error`.
    pub(crate) fn set_error_factory(&self, f: sys::napi_value) -> napi::Result<()> {
        let mut r = ptr::null_mut();
        check(unsafe { sys::napi_create_reference(self.raw, f, 1, &mut r) })?;
        let old = self.error_factory.replace(r);
        if !old.is_null() {
            unsafe { sys::napi_delete_reference(self.raw, old) };
        }
        Ok(())
    }

    pub(crate) fn error_factory(&self) -> Option<sys::napi_value> {
        let r = self.error_factory.get();
        if r.is_null() {
            return None;
        }
        let mut v = ptr::null_mut();
        (unsafe { sys::napi_get_reference_value(self.raw, r, &mut v) } == sys::Status::napi_ok).then_some(v)
    }

    /// Closes every node this env handed out with `reason` and marks the env dead: later results are
    /// dropped. Used by the cleanup hook (worker termination, env teardown) and by the exit hook.
    pub(crate) fn teardown(&self, reason: CloseReason) {
        if self.dead.replace(true) {
            return;
        }
        self.bridge.kill();
        let nodes: Vec<Arc<Kind>> = self.registry.borrow_mut().drain().filter_map(|(_, w)| w.upgrade()).collect();
        for node in &nodes {
            node.node().close_with(reason);
        }
        drop(nodes);
        // SDK threads waiting for a JS callback to settle are let go, and so are threads waiting for a
        // cipher or key provider.
        self.callbacks.borrow_mut().clear();
        self.calls.clear();
        for scope in self.scopes.borrow_mut().drain(..) {
            scope.abandon();
        }
        // JS references die with the env; only the Rust side is dropped here.
        self.values.borrow_mut().clear();
    }

    /// Builds and throws/returns JS values on this env.
    pub(crate) fn raw(&self) -> sys::napi_env {
        self.raw
    }
}

/// The per-env cleanup hook: Node runs it before finalizers at env teardown (nodejs/node#45903).
unsafe extern "C" fn env_cleanup(arg: *mut c_void) {
    // SAFETY: `arg` came from `Arc::into_raw` in `EnvLocal::create`; the hook runs once.
    let bridge: Arc<Bridge> = unsafe { Arc::from_raw(arg as *const Bridge) };
    bridge.kill();
    let _ = ENV.try_with(|slot| {
        let local = slot.borrow_mut().take();
        if let Some(local) = local {
            if Arc::ptr_eq(&local.bridge, &bridge) {
                local.teardown(CloseReason::RuntimeShutdown);
            } else {
                *slot.borrow_mut() = Some(local);
            }
        }
    });
}

/// Turns a napi status into a `Result`.
pub(crate) fn check(status: sys::napi_status) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::new(napi::Status::from(status), "bcv: Node-API call failed".to_string()))
    }
}

/// The outcome of an operation, built into a JS value on the JS thread.
pub(crate) enum Out {
    Undefined,
    Null,
    Number(f64),
    Bytes(Bytes),
    /// A new handle to wrap; registered with the env, and with the binding scope whose id is given
    /// (the scope that was innermost when the operation began).
    Handle(Kind, Option<u64>),
    /// As `Handle`, for a dependent child made by an operation on a parent handle: the ids of the handles
    /// it was taken from (parent first), for `detachFromScope`.
    Child(Kind, Option<u64>, Vec<u64>),
    /// A value parked by a future's writer.
    Parked(JsKey),
    /// HTTP header or trailer fields as `[name, value]` pairs; `None` becomes `null`.
    Fields(Option<bcv_core::handle::HttpFields>),
    /// A report of the block-cache VFS (poll, upload, prefetch, status), keys turned to camelCase.
    Json(serde_json::Value),
    /// A value built on the JS thread by the closure (results of the Proxy-Wasm host that hold bytes,
    /// header pairs or native objects).
    Build(BuildJs),
}

/// Builds a JS value on the JS thread (see [`Out::Build`]).
pub(crate) type BuildJs = Box<dyn FnOnce(&EnvLocal) -> napi::Result<sys::napi_value> + Send>;

/// A raw deferred that may travel to another thread and back (it is only used on the JS thread).
pub(crate) struct Deferred(pub(crate) sys::napi_deferred);
// SAFETY: the pointer is only dereferenced by Node-API calls made on the JS thread of its env.
unsafe impl Send for Deferred {}

impl Deferred {
    /// Settles the promise with `result` (on the JS thread).
    pub(crate) fn settle(self, local: &EnvLocal, result: Result<Out, JsErr>) {
        let env = local.raw();
        match result.and_then(|out| crate::handle::out_to_js(local, out).map_err(JsErr::from_napi)) {
            Ok(v) => unsafe {
                sys::napi_resolve_deferred(env, self.0, v);
            },
            Err(e) => {
                let v = e.into_js(local);
                unsafe { sys::napi_reject_deferred(env, self.0, v) };
            }
        }
    }
}

/// Creates a promise; returns its deferred and the promise value.
pub(crate) fn new_promise(env: sys::napi_env) -> napi::Result<(Deferred, sys::napi_value)> {
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    check(unsafe { sys::napi_create_promise(env, &mut deferred, &mut promise) })?;
    Ok((Deferred(deferred), promise))
}
