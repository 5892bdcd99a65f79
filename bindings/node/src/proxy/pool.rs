//! The threads that run plugin code for JS: every call that enters a VM runs here, never on the JS thread.
//!
//! A pool of plain threads grows when every thread is busy (up to [`MAX_THREADS`]) and shrinks after
//! [`IDLE`] without work. A thread may sit in a VM call for as long as the plugin runs (up to its CPU
//! deadline), or in `wait()` for a paused stream until its timeout, so the pool is sized for many waits at
//! once rather than for the number of cores.
//!
//! The same threads drop the last references of proxy objects the JS side let go of (see
//! [`drop_later`]): the final release of a context or plugin finishes it, which runs plugin code and waits
//! for the VM's lock.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::env::{EnvLocal, Out, new_promise};
use crate::error::JsErr;
use crate::js::RawValue;

/// Most threads the pool runs at once; further work waits in the queue.
const MAX_THREADS: usize = 512;
/// How long an idle thread waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for work.
    idle: usize,
    /// Threads alive.
    threads: usize,
}

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State { jobs: VecDeque::new(), idle: 0, threads: 0 }),
        wake: Condvar::new(),
    })
}

fn lock(pool: &Pool) -> MutexGuard<'_, State> {
    pool.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues `job`. Returns it back when no thread exists and none can be started.
fn submit(job: Job) -> Result<(), Job> {
    let pool = pool();
    let mut state = lock(pool);
    state.jobs.push_back(job);
    if state.jobs.len() > state.idle && state.threads < MAX_THREADS {
        let spawned = std::thread::Builder::new().name("bcv-node-proxy".into()).spawn(work);
        match spawned {
            Ok(_) => state.threads += 1,
            Err(_) if state.threads == 0 => {
                // Nobody would ever run it.
                return state.jobs.pop_back().map_or(Ok(()), Err);
            }
            // A running thread picks it up once it is free.
            Err(_) => {}
        }
    }
    drop(state);
    pool.wake.notify_one();
    Ok(())
}

/// A pool thread: runs queued jobs until it was idle for [`IDLE`].
fn work() {
    let pool = pool();
    let mut state = lock(pool);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            // A panicking job must not take the thread (and the jobs queued behind it) down.
            let _ = catch_unwind(AssertUnwindSafe(job));
            state = lock(pool);
            continue;
        }
        state.idle += 1;
        let (guard, timeout) = pool.wake.wait_timeout(state, IDLE).unwrap_or_else(|p| p.into_inner());
        state = guard;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

/// Drops `value` on a pool thread (inline only if no thread can be started at all).
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    if let Err(job) = submit(Box::new(move || drop(value))) {
        job();
    }
}

/// Runs `job` on a pool thread and returns a promise settled with `convert` of its result (built on the
/// JS thread). The promise keeps the event loop alive until it settles; a job that panics rejects it with
/// `BCV_INTERNAL`. After the env is gone the result is dropped quietly.
pub(crate) fn spawn<T: Send + 'static>(
    local: &EnvLocal,
    job: impl FnOnce() -> Result<T, JsErr> + Send + 'static,
    convert: impl FnOnce(T) -> Out + Send + 'static,
) -> napi::Result<RawValue> {
    let (deferred, promise) = new_promise(local.raw())?;
    let bridge = local.bridge.clone();
    local.op_started();
    let task: Job = Box::new(move || {
        let result = match catch_unwind(AssertUnwindSafe(job)) {
            Ok(result) => result.map(convert),
            Err(_) => Err(JsErr::new("BCV_INTERNAL", "a Proxy-Wasm operation panicked")),
        };
        bridge.post(Box::new(move |local: &EnvLocal| {
            deferred.settle(local, result);
            local.op_finished();
        }));
    });
    if submit(task).is_err() {
        local.op_finished();
        return Err(JsErr::new("BCV_INTERNAL", "cannot start a thread for the Proxy-Wasm host").throw(local));
    }
    Ok(RawValue(promise))
}
