//! Node.js binding of bcv (napi-rs). All logic lives in `bcv-core`; this crate converts and adapts.
//!
//! The native module is low level: one [`handle::Handle`] class for every node kind plus factory
//! functions. `lib/index.js` builds the idiomatic API on top (typed classes, `Readable`/`Writable` and Web
//! stream adapters, async iteration, `using`, error classes).
//!
//! Rules this layer keeps (LIFETIMES.md §4.4):
//! * N1: finalizers only release; nothing blocks the JS thread — every wait is a promise settled from the
//!   bcv runtime through the env's bridge.
//! * N2: each `napi_env` is an ownership scope; its cleanup hook closes its nodes with
//!   `RUNTIME_SHUTDOWN`, and results arriving after teardown are dropped quietly.
//! * N3/N4 are in `lib/`; N5: errors carry `code` and `reason` (see [`error`]).

#![deny(unsafe_op_in_unsafe_fn)]
// In the test build napi-derive registers no exports, so every `#[napi]` item looks unused there.
#![cfg_attr(test, allow(dead_code))]

mod callable;
mod container;
mod daemon;
mod env;
mod error;
mod handle;
mod http;
mod js;
mod proxy;
mod scope;
mod secure;
mod sql;
mod tls;
mod vfs;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bcv_core::handle::{CloseReason, DEFAULT_CAPACITY, Runtime};
use napi::bindgen_prelude::{Function, Uint8Array};
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::env::{EnvLocal, Out, runtime};
use crate::error::JsErr;
use crate::handle::{Handle, Kind, enter, future_pair, pair, run_op};

use crate::js::RawValue;
use crate::scope::Scope;

/// Installs the error factory `(code, message, details) => Error` used for every error this env sees.
/// Called once by `lib/index.js` per env (main thread or worker).
#[napi]
pub fn init(env: Env, error_factory: Function<'_>) -> napi::Result<()> {
    let local = EnvLocal::get(env.raw())?;
    local.set_error_factory(error_factory.raw())
}

/// Creates a pipe with a buffer of `capacity` bytes (default 64 KiB): `[writer, reader]`.
/// Throws `BCV_CLOSED` (`RUNTIME_SHUTDOWN`) after shutdown.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn pipe(env: Env, capacity: Option<u32>) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let (w, r) = runtime()
        .pipe(capacity.map_or(DEFAULT_CAPACITY, |c| c.max(1) as usize))
        .map_err(|c| JsErr::from(c).throw(&local))?;
    Ok(vec![Handle::wrap(&local, Kind::Write(w)), Handle::wrap(&local, Kind::Read(r))])
}

/// A read stream that yields a copy of `data`, then a clean EOF.
#[napi]
pub fn stream_from_bytes(env: Env, data: Uint8Array) -> napi::Result<Handle> {
    let local = enter(&env)?;
    let r =
        runtime().stream_from_bytes(bytes::Bytes::copy_from_slice(&data)).map_err(|c| JsErr::from(c).throw(&local))?;
    Ok(Handle::wrap(&local, Kind::Read(r)))
}

/// Streams the file at `path`: `[resource, stream]`. Throws `BCV_IO` naming the path.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn read_file(env: Env, path: String) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let (res, stream) = runtime().read_file(&path).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(pair(&local, res, stream))
}

/// Creates (or truncates) the file at `path`: `[resource, writer, done]`, where `done.wait()` resolves to
/// the byte count once the writer finished and the file is synced. Throws `BCV_IO` naming the path.
#[napi(ts_return_type = "[Handle, Handle, Handle]")]
pub fn write_file(env: Env, path: String) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let sink = runtime().write_file(&path).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(vec![
        Handle::wrap(&local, Kind::Resource(sink.resource)),
        Handle::wrap(&local, Kind::Write(sink.writer)),
        Handle::wrap(&local, Kind::FileDone(sink.done)),
    ])
}

/// Gzip-compresses `input` (consumed) at `level` 0–9 (default 6): `[transformer, output]`.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn gzip_compress(env: Env, input: &Handle, level: Option<u32>) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let level = level.unwrap_or(6);
    if level > 9 {
        return Err(JsErr::invalid(format!("gzip level {level} is not in 0..=9")).throw(&local));
    }
    let input = input.take_read(&local)?;
    let (res, out) = runtime().gzip_compress(input, level).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(pair(&local, res, out))
}

/// Gzip-decompresses `input` (consumed): `[transformer, output]`. Corrupt or truncated input ends the
/// output with `BCV_CORRUPT`, never EOF.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn gzip_decompress(env: Env, input: &Handle) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let input = input.take_read(&local)?;
    let (res, out) = runtime().gzip_decompress(input).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(pair(&local, res, out))
}

fn check_key(local: &EnvLocal, key: &[u8]) -> napi::Result<()> {
    if key.len() != bcv_core::handle::AEAD_KEY_LEN {
        return Err(JsErr::invalid(format!("AES-256-GCM needs a 32-byte key, got {} bytes", key.len())).throw(local));
    }
    Ok(())
}

/// Encrypts `input` (consumed) with AES-256-GCM under a 32-byte `key`: `[transformer, output]`.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn aead_encrypt(env: Env, input: &Handle, key: Uint8Array) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    check_key(&local, &key)?;
    let input = input.take_read(&local)?;
    let (res, out) = runtime().aead_encrypt(input, &key).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(pair(&local, res, out))
}

/// Decrypts `input` (consumed): `[transformer, output]`. A wrong key or tampering ends the output with
/// `BCV_AUTH`, truncation with `BCV_CLOSED` (`UPSTREAM`) or `BCV_AUTH`; never EOF.
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn aead_decrypt(env: Env, input: &Handle, key: Uint8Array) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    check_key(&local, &key)?;
    let input = input.take_read(&local)?;
    let (res, out) = runtime().aead_decrypt(input, &key).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(pair(&local, res, out))
}

pub(crate) fn resolve_addr(host: &str, port: u16) -> Result<SocketAddr, JsErr> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| JsErr::from(bcv_core::handle::Error::io(format!("resolving {host}:{port}"), e)))?
        .next()
        .ok_or_else(|| JsErr::invalid(format!("{host}:{port} resolved to no address")))
}

/// Binds a TCP listener on `host:port` (port 0 picks a free port). Throws `BCV_IO` naming the address.
#[napi]
pub fn tcp_listen(env: Env, host: String, port: u32) -> napi::Result<Handle> {
    let local = enter(&env)?;
    let addr = resolve_addr(&host, port as u16).map_err(|e| e.throw(&local))?;
    let l = runtime().tcp_listen(addr).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(Handle::wrap(&local, Kind::Listener(l)))
}

/// Connects to `host:port` (name resolution off the JS thread). Rejects with `BCV_IO`.
#[napi(ts_return_type = "Promise<Handle>")]
pub fn tcp_connect(env: Env, host: String, port: u32) -> napi::Result<RawValue> {
    let local = enter(&env)?;
    let scope = local.scopes.borrow().last().map(|s| s.id);
    let fut = async move {
        let port = port as u16;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| JsErr::from(bcv_core::handle::Error::io(format!("resolving {host}:{port}"), e)))?
            .next()
            .ok_or_else(|| JsErr::invalid(format!("{host}:{port} resolved to no address")))?;
        runtime().tcp_connect(addr).await.map_err(JsErr::from)
    };
    run_op(&local, fut, move |r| r.map(|s| Out::Handle(Kind::Socket(s), scope)), false)
}

/// Creates a one-shot future: `[writer, reader]`. Values stay JS values (kept on this env's thread).
#[napi(ts_return_type = "[Handle, Handle]")]
pub fn future(env: Env) -> napi::Result<Vec<Handle>> {
    let local = enter(&env)?;
    let (w, r) = runtime().future().map_err(|c| JsErr::from(c).throw(&local))?;
    Ok(future_pair(&local, w, r))
}

/// Copies `src` into `dst` on the runtime until EOF, then finishes `dst`. Both handles are consumed.
/// Errors reach `dst`'s reader (`UPSTREAM`), and a reader going away stops the copy (`PEER_DROPPED`
/// upstream).
#[napi]
pub fn spawn_pipe(env: Env, src: &Handle, dst: &Handle) -> napi::Result<()> {
    let local = enter(&env)?;
    let from = src.take_read(&local)?;
    let to = match dst.take_write(&local) {
        Ok(to) => to,
        Err(e) => {
            // Hand the source back is impossible after the move; close nothing, report the error.
            drop(from);
            return Err(e);
        }
    };
    runtime().spawn_pipe(from, to);
    Ok(())
}

/// A snapshot of the runtime's counters.
#[napi(object)]
pub struct Diagnostics {
    /// Nodes created and not yet torn down (all envs).
    pub live_nodes: f64,
    /// Nodes created since the runtime started.
    pub created_nodes: f64,
    /// Strict-mode violations V1..V6 (index 0 is V1).
    pub violations: Vec<f64>,
    /// True once `shutdown()` ran.
    pub shut_down: bool,
}

/// The runtime's live-node count, creations and strict-mode counters.
#[napi]
pub fn diagnostics() -> Diagnostics {
    let rt = runtime();
    let d = rt.diagnostics();
    Diagnostics {
        live_nodes: d.live_nodes as f64,
        created_nodes: d.created_nodes as f64,
        violations: d.violations.iter().map(|v| *v as f64).collect(),
        shut_down: rt.is_shut_down(),
    }
}

/// Runs `job` on a plain thread (where the core allows blocking) and settles a promise with its result.
/// The result goes straight through the env's bridge, not through the bcv runtime (which `shutdown`
/// stops).
pub(crate) fn off_thread<T: Send + 'static>(
    env: &Env,
    job: impl FnOnce() -> T + Send + 'static,
    convert: impl FnOnce(T) -> Result<Out, JsErr> + Send + 'static,
) -> napi::Result<RawValue> {
    let local = enter(env)?;
    let (deferred, promise) = env::new_promise(local.raw())?;
    let bridge = local.bridge.clone();
    local.op_started();
    let spawned = std::thread::Builder::new().name("bcv-node-wait".into()).spawn(move || {
        let result = convert(job());
        bridge.post(Box::new(move |local: &EnvLocal| {
            deferred.settle(local, result);
            local.op_finished();
        }));
    });
    if let Err(e) = spawned {
        local.op_finished();
        return Err(JsErr::from(bcv_core::handle::Error::io("spawning a thread", e)).throw(&local));
    }
    Ok(RawValue(promise))
}

/// Shuts the process-wide runtime down: every node of every env is closed with `RUNTIME_SHUTDOWN`, then
/// waits (off the JS thread) until none is live. Rejects with `BCV_SHUTDOWN_TIMEOUT` and `stuckNodeIds`
/// after `timeoutMs`. Afterwards every call fails with `BCV_CLOSED` (`RUNTIME_SHUTDOWN`). Idempotent.
#[napi(ts_return_type = "Promise<void>")]
pub fn shutdown(env: Env, timeout_ms: f64) -> napi::Result<RawValue> {
    let timeout = duration_from_ms(timeout_ms);
    off_thread(&env, move || runtime().shutdown(timeout), |r| r.map(|()| Out::Undefined).map_err(JsErr::from))
}

/// Milliseconds from JS as a `Duration` that cannot panic: NaN and negatives are 0, anything past about
/// 31 years (`Infinity` included) is capped there, which also keeps `now + duration` representable.
pub(crate) fn duration_from_ms(ms: f64) -> Duration {
    const CAP_MS: f64 = 1e12;
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(ms.min(CAP_MS) / 1000.0)
}

/// Resolves once every release made so far has been processed by the reaper.
#[napi(ts_return_type = "Promise<void>")]
pub fn reaper_flush(env: Env) -> napi::Result<RawValue> {
    off_thread(&env, || runtime().reaper_flush(), |r| r.map(|()| Out::Undefined).map_err(JsErr::from))
}

/// Resolves with the live-node count once it is 0 or `timeoutMs` passed (after flushing the reaper).
#[napi(ts_return_type = "Promise<number>")]
pub fn wait_idle(env: Env, timeout_ms: f64) -> napi::Result<RawValue> {
    let timeout = duration_from_ms(timeout_ms);
    off_thread(&env, move || runtime().wait_idle(timeout), |n| Ok(Out::Number(n as f64)))
}

/// Opens a scope on this JS thread (see [`Scope`]).
#[napi]
pub fn scope(env: Env) -> napi::Result<Scope> {
    let local = enter(&env)?;
    Ok(Scope::enter(&local))
}

/// Marks the `onData` delivery `token` as settled, letting the next chunk through.
#[napi]
pub fn callback_done(token: f64) {
    if let Some(local) = EnvLocal::current()
        && let Some(cb) = local.callbacks.borrow_mut().remove(&(token as u64))
    {
        let _ = cb.done.try_send(());
    }
}

/// The exit hook `lib/index.js` runs on `process.on('exit')`: closes this env's nodes with
/// `RUNTIME_SHUTDOWN` and drops later results; on the main thread it then shuts the runtime down with
/// `timeoutMs` (LIFETIMES.md A5). Never throws; the exit status is kept.
#[napi]
pub fn env_exit(env: Env, main_thread: bool, timeout_ms: f64) {
    if let Ok(local) = EnvLocal::get(env.raw()) {
        local.teardown(CloseReason::RuntimeShutdown);
    }
    if main_thread && env::runtime_used() {
        let _ = Runtime::global().shutdown(duration_from_ms(timeout_ms));
    }
}
