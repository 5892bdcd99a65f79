//! JS functions that core calls from any thread (a secure container's cipher and key provider).
//!
//! JS runs only on its env's thread, while core calls a cipher from whatever thread needs it: the JS thread
//! itself (SQL statements of the synchronous `Database` API, `attach`), bcv worker threads (uploads,
//! prefetch, container tools) and the reaper. A [`JsCallable`] therefore has two paths:
//!
//! * on the JS thread it calls the function directly (the thread is inside a native call, so JS may run);
//! * on any other thread it queues the call in the env's [`CallQueue`], wakes the JS thread through the
//!   env's bridge, and blocks until the JS thread has run it.
//!
//! The queue is drained by whoever gets there first: the bridge task (when the JS thread is idle in its event
//! loop, e.g. during an `…Async` call), or [`serviced`], which synchronous methods use when a JS callable is
//! in play: the operation runs on a helper thread while the JS thread waits on the queue and runs the calls
//! that arrive, so a worker waiting for the JS thread never waits for a JS thread that waits for it.
//!
//! A JS exception never unwinds into Rust: it is caught, cleared and returned as a [`Thrown`] value.

use std::collections::VecDeque;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use napi::sys;

use crate::env::{Bridge, EnvLocal, JsKey};
use crate::error::JsErr;
use crate::js;

/// One call waiting for the JS thread.
type Call = Box<dyn FnOnce(&EnvLocal) + Send + 'static>;

/// How long a waiting thread sleeps before it checks that the env is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// The calls other threads have queued for one env's JS thread.
pub(crate) struct CallQueue {
    calls: Mutex<VecDeque<Call>>,
    wake: Condvar,
}

impl CallQueue {
    /// An empty queue.
    pub(crate) fn new() -> CallQueue {
        CallQueue { calls: Mutex::new(VecDeque::new()), wake: Condvar::new() }
    }

    fn push(&self, call: Call) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push_back(call);
        self.wake.notify_all();
    }

    fn pop(&self) -> Option<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    /// Runs every queued call (on the JS thread).
    pub(crate) fn drain(&self, local: &EnvLocal) {
        while let Some(call) = self.pop() {
            call(local);
        }
    }

    /// Drops every queued call: their callers stop waiting (env teardown).
    pub(crate) fn clear(&self) {
        let dropped: Vec<Call> = self.calls.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        drop(dropped);
        self.wake.notify_all();
    }

    /// Wakes a JS thread waiting in [`serviced`].
    fn notify(&self) {
        let _guard = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    /// Blocks until a call is queued or `done` is set; returns the next call, or `None` once `done`.
    fn next(&self, done: &AtomicBool) -> Option<Call> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(call) = calls.pop_front() {
                return Some(call);
            }
            if done.load(Ordering::Acquire) {
                return None;
            }
            calls = self.wake.wait_timeout(calls, LIVENESS_CHECK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Runs `op` on a helper thread while this (JS) thread runs the calls JS callables queue meanwhile, and
/// returns its result. Used by synchronous methods that wait on bcv workers when a JS cipher or key provider
/// is in use; the calls run in this native call, so they see the same JS state as a direct call.
pub(crate) fn serviced<T: Send>(local: &EnvLocal, op: impl FnOnce() -> T + Send) -> Result<T, JsErr> {
    let queue = local.calls.clone();
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("bcv-node-sync".into())
            .spawn_scoped(scope, || {
                // Set even if `op` panics, so the JS thread stops waiting.
                struct Finish<'a>(&'a AtomicBool, &'a CallQueue);
                impl Drop for Finish<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Release);
                        self.1.notify();
                    }
                }
                let _finish = Finish(&done, &queue);
                op()
            })
            .map_err(|e| JsErr::from(bcv_core::handle::Error::io("spawning a thread", e)))?;
        while let Some(call) = queue.next(&done) {
            call(local);
        }
        worker.join().map_err(|_| JsErr::new("BCV_INTERNAL", "a bcv operation panicked"))
    })
}

/// What a JS function did: returned a value (converted on the JS thread) or threw.
pub(crate) enum Outcome<R> {
    /// The converted return value.
    Returned(R),
    /// It threw (or JS could not run).
    Thrown(Thrown),
}

/// A JS exception, reduced to what a cipher error can carry.
pub(crate) struct Thrown {
    /// The exception's `code` property, when it is a string (`'BCV_AUTH'` for an `AuthenticationError`).
    pub(crate) code: Option<String>,
    /// Its message.
    pub(crate) message: String,
}

impl Thrown {
    fn plain(message: impl Into<String>) -> Thrown {
        Thrown { code: None, message: message.into() }
    }
}

/// A JS value (a function or an object with methods) parked on its env, callable from any thread.
pub(crate) struct JsCallable {
    key: JsKey,
    /// The env's thread: calls made there go straight to JS.
    thread: ThreadId,
    /// The env, as an address (compared only, never dereferenced off its thread).
    env: usize,
    bridge: Weak<Bridge>,
    calls: Arc<CallQueue>,
}

impl JsCallable {
    /// Parks `value` (on its JS thread) for calls from any thread.
    pub(crate) fn new(local: &EnvLocal, value: sys::napi_value) -> napi::Result<JsCallable> {
        Ok(JsCallable {
            key: local.park_value(value)?,
            thread: thread::current().id(),
            env: local.raw() as usize,
            bridge: Arc::downgrade(&local.bridge),
            calls: local.calls.clone(),
        })
    }

    /// Runs `f` with the parked value on the JS thread, from whatever thread this is, and returns what it
    /// returned. `f` gets the env and the value, inside a handle scope of its own.
    pub(crate) fn with_js<R: Send + 'static>(
        &self,
        f: impl FnOnce(sys::napi_env, sys::napi_value) -> Outcome<R> + Send + 'static,
    ) -> Outcome<R> {
        let id = self.key.id;
        if thread::current().id() == self.thread {
            return match EnvLocal::current() {
                Some(local) if local.raw() as usize == self.env => run_parked(&local, id, f),
                _ => Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone")),
            };
        }
        let Some(bridge) = self.bridge.upgrade() else {
            return Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone"));
        };
        let (tx, rx) = sync_channel::<Outcome<R>>(1);
        self.calls.push(Box::new(move |local: &EnvLocal| {
            let _ = tx.send(run_parked(local, id, f));
        }));
        let queue = Arc::downgrade(&self.calls);
        // Wakes the JS thread when it is idle; a JS thread in `serviced` picks the call up by itself.
        bridge.post(Box::new(move |local: &EnvLocal| {
            if let Some(queue) = queue.upgrade() {
                queue.drain(local);
            }
        }));
        loop {
            match rx.recv_timeout(LIVENESS_CHECK) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Timeout) if bridge.is_alive() => {}
                Err(_) => return Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone")),
            }
        }
    }

    /// As [`with_js`](Self::with_js), but gives up at `deadline` when the JS thread has not run the call by
    /// then (it is busy elsewhere): the call is then skipped if it has not started, and `Thrown` is returned.
    /// For callers that cannot usefully wait longer (a Proxy-Wasm plugin's callback has a CPU deadline).
    pub(crate) fn with_js_until<R: Send + 'static>(
        &self,
        deadline: Instant,
        f: impl FnOnce(sys::napi_env, sys::napi_value) -> Outcome<R> + Send + 'static,
    ) -> Outcome<R> {
        let id = self.key.id;
        if thread::current().id() == self.thread {
            return self.with_js(f);
        }
        let Some(bridge) = self.bridge.upgrade() else {
            return Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone"));
        };
        let (tx, rx) = sync_channel::<Outcome<R>>(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let skip = abandoned.clone();
        self.calls.push(Box::new(move |local: &EnvLocal| {
            if !skip.load(Ordering::Acquire) {
                let _ = tx.send(run_parked(local, id, f));
            }
        }));
        let queue = Arc::downgrade(&self.calls);
        bridge.post(Box::new(move |local: &EnvLocal| {
            if let Some(queue) = queue.upgrade() {
                queue.drain(local);
            }
        }));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                abandoned.store(true, Ordering::Release);
                // The call may have finished in the meantime.
                return rx.try_recv().unwrap_or_else(|_| {
                    Outcome::Thrown(Thrown::plain("the JS thread did not answer in time (it is busy)"))
                });
            }
            match rx.recv_timeout(left.min(LIVENESS_CHECK)) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Timeout) if bridge.is_alive() => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Outcome::Thrown(Thrown::plain("the JS environment of this callable is gone"));
                }
            }
        }
    }
}

/// Calls `f` with the value parked as `id`, in a handle scope (a long query makes many calls).
fn run_parked<R>(
    local: &EnvLocal,
    id: u64,
    f: impl FnOnce(sys::napi_env, sys::napi_value) -> Outcome<R>,
) -> Outcome<R> {
    let env = local.raw();
    let mut scope = ptr::null_mut();
    if unsafe { sys::napi_open_handle_scope(env, &mut scope) } != sys::Status::napi_ok {
        return Outcome::Thrown(Thrown::plain("cannot call JS here (no handle scope)"));
    }
    let outcome = match local.peek_value(id) {
        Some(value) => f(env, value),
        None => Outcome::Thrown(Thrown::plain("the JS callable was released")),
    };
    unsafe { sys::napi_close_handle_scope(env, scope) };
    outcome
}

/// Calls `func` with `this` = `recv` and `args`; a thrown exception is caught and cleared.
pub(crate) fn call(
    env: sys::napi_env,
    recv: sys::napi_value,
    func: sys::napi_value,
    args: &[sys::napi_value],
) -> Result<sys::napi_value, Thrown> {
    if js::type_of(env, func) != sys::ValueType::napi_function {
        return Err(Thrown::plain("not a function"));
    }
    let mut out = ptr::null_mut();
    let status = unsafe { sys::napi_call_function(env, recv, func, args.len(), args.as_ptr(), &mut out) };
    if status == sys::Status::napi_ok {
        return Ok(out);
    }
    let mut pending = false;
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if !pending {
        return Err(Thrown::plain(format!("JS could not run (Node-API status {status})")));
    }
    let mut exception = ptr::null_mut();
    unsafe { sys::napi_get_and_clear_last_exception(env, &mut exception) };
    Err(thrown_of(env, exception))
}

/// What a caught exception says.
fn thrown_of(env: sys::napi_env, exception: sys::napi_value) -> Thrown {
    if js::type_of(env, exception) != sys::ValueType::napi_object {
        return Thrown::plain(match js::type_of(env, exception) {
            sys::ValueType::napi_string => js::get_string(env, exception),
            _ => "a non-Error value was thrown".to_string(),
        });
    }
    let text = |key: &str| {
        let v = js::get(env, exception, key);
        (js::type_of(env, v) == sys::ValueType::napi_string).then(|| js::get_string(env, v))
    };
    Thrown { code: text("code"), message: text("message").unwrap_or_else(|| "an exception was thrown".into()) }
}
