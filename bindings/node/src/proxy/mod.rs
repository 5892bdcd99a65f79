//! The Proxy-Wasm host (`bcv_core::proxy`) for Node: `proxyHostNew` and the `proxy…` methods of the
//! `ProxyHost`, `ProxyVm`, `ProxyPlugin`, `ProxyHttpContext` and `ProxyTcpContext` handles, the
//! `ProxyModuleHandle` of a compiled module, and the `CalloutReplyHandle` a callout's JS function answers.
//! Conversion only; the host is core's. `lib/proxy.js` builds the idiomatic classes on top.
//!
//! Threads (why the API is shaped so): a VM runs plugin code on whatever thread calls into it, and calls its
//! services (properties, foreign functions, callouts, logs) on that same thread while its lock is held. JS
//! runs only on the JS thread. If the JS thread ran plugin code, or waited for a VM's lock, a service that
//! needs JS would wait for the JS thread while the JS thread waits for it: a deadlock. So:
//!
//! * every call that enters a VM (feeding a context, reading it back, adding a plugin, creating a context,
//!   calling a foreign function) runs on a pool thread ([`pool`]) and returns a promise; the JS thread never
//!   takes a VM's lock;
//! * properties and foreign functions are synchronous JS functions: the plugin's thread queues the call for
//!   the JS thread and waits for its answer (bounded by the callback deadline, see [`services`]);
//! * callouts and log records are posted to the JS thread and the plugin continues; a callout is answered
//!   later through its reply object;
//! * what needs no VM lock is synchronous: metrics, shared data, queues, a VM's failure and logs;
//! * the last reference of a proxy object is dropped on a pool thread (finishing a context runs plugin
//!   code), and `close()` only marks nodes closed (core finishes them on its reaper).

mod convert;
mod pool;
mod services;

use std::collections::HashMap;
use std::time::Duration;

use bcv_core::handle::Node;
use bcv_core::proxy::{
    FilterAction, HostConfig, HttpContext, MapLimits, MetricSnapshot, PeerType, Plugin, PluginConfig, PluginModule,
    ProxyError, ProxyHost, ProxyResult, RestartPolicy, StreamType, TcpContext, Vm, VmConfig,
};
use napi::bindgen_prelude::{Buffer, ToNapiValue, Uint8Array, Unknown};
use napi::{Env, JsValue};
use napi_derive::napi;

pub(crate) use pool::drop_later;

use crate::env::{EnvLocal, Out, runtime};
use crate::error::JsErr;
use crate::handle::{Handle, Kind, enter};
use crate::js::{self, RawValue};
use convert::{action_to_js, headers_from_js, headers_to_js, local_response_to_js, millis, string_pairs, text, whole};

/// Options of `proxyHostNew` (every one optional; core's defaults apply).
#[napi(object)]
pub struct ProxyHostOptions {
    /// Most linear memory of one VM, in bytes (default 64 MiB; at least 64 KiB).
    pub memory_limit: Option<f64>,
    /// Most CPU time of one plugin callback, in milliseconds (default 1000).
    pub callback_deadline_ms: Option<f64>,
    /// How often the deadline is checked, in milliseconds (default 2).
    pub epoch_tick_ms: Option<f64>,
    /// Use the pooling instance allocator (default true).
    pub pooling: Option<bool>,
    /// Most VMs alive at once with pooling (default 128).
    pub max_instances: Option<u32>,
    /// A directory for precompiled modules (default: none, every load compiles).
    pub module_cache_dir: Option<String>,
    /// Most pairs of a header map a plugin hands over (default 1024).
    pub max_header_pairs: Option<u32>,
    /// Most bytes of a serialized header map (default 1 MiB).
    pub max_header_bytes: Option<f64>,
    /// Most bytes of one WASI `random_get` (default 64 KiB).
    pub max_random_bytes: Option<f64>,
    /// Most items waiting in one shared queue (default 10 000).
    pub max_queue_items: Option<f64>,
    /// Most guest stack in bytes (default 512 KiB).
    pub max_wasm_stack: Option<f64>,
}

fn host_config(options: Option<ProxyHostOptions>) -> Result<HostConfig, JsErr> {
    let mut config = HostConfig::default();
    let Some(o) = options else { return Ok(config) };
    let size = |v: Option<f64>, what: &str| -> Result<Option<usize>, JsErr> {
        whole(v, what)?
            .map(|n| usize::try_from(n).map_err(|_| JsErr::invalid(format!("{what} is too large"))))
            .transpose()
    };
    if let Some(v) = whole(o.memory_limit, "memoryLimit")? {
        config.memory_limit = v;
    }
    if let Some(v) = millis(o.callback_deadline_ms, "callbackDeadlineMs")? {
        if v.is_zero() {
            return Err(JsErr::invalid("callbackDeadlineMs must be positive"));
        }
        config.callback_deadline = v;
    }
    if let Some(v) = millis(o.epoch_tick_ms, "epochTickMs")? {
        config.epoch_tick = v;
    }
    if let Some(v) = o.pooling {
        config.pooling = v;
    }
    if let Some(v) = o.max_instances {
        config.max_instances = v;
    }
    if let Some(dir) = o.module_cache_dir {
        config.module_cache_dir = Some(dir.into());
    }
    let mut limits = MapLimits::default();
    if let Some(v) = o.max_header_pairs {
        limits.max_pairs = v as usize;
    }
    if let Some(v) = size(o.max_header_bytes, "maxHeaderBytes")? {
        limits.max_bytes = v;
    }
    config.map_limits = limits;
    if let Some(v) = size(o.max_random_bytes, "maxRandomBytes")? {
        config.max_random_bytes = v;
    }
    if let Some(v) = size(o.max_queue_items, "maxQueueItems")? {
        config.max_queue_items = v;
    }
    if let Some(v) = size(o.max_wasm_stack, "maxWasmStack")? {
        config.max_wasm_stack = v;
    }
    Ok(config)
}

/// Creates a Proxy-Wasm host: a `ProxyHost` handle (the parent of its VMs, plugins and contexts). Throws
/// `BCV_INVALID_ARGUMENT` for options wasmtime refuses.
#[napi]
pub fn proxy_host_new(env: Env, options: Option<ProxyHostOptions>) -> napi::Result<Handle> {
    let local = enter(&env)?;
    let config = host_config(options).map_err(|e| e.throw(&local))?;
    let host = ProxyHost::with_runtime(runtime(), config).map_err(|e| convert::error(e).throw(&local))?;
    Ok(Handle::wrap(&local, Kind::ProxyHost(host)))
}

/// A compiled, checked plugin module (not a node: it lives while something references it). Made by
/// `proxyLoadModule`; given to `proxyStartVm`.
#[napi]
pub struct ProxyModuleHandle {
    module: Option<PluginModule>,
}

impl Drop for ProxyModuleHandle {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            drop_later(module);
        }
    }
}

#[napi]
impl ProxyModuleHandle {
    /// The name it was loaded under.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.module.as_ref().map(|m| m.name().to_string()).unwrap_or_default()
    }

    /// The Proxy-Wasm ABI version its marker export names: `'0.2.1'`, `'0.2.0'` or `'0.1.0'`.
    #[napi(getter)]
    pub fn abi(&self) -> String {
        self.module.as_ref().map(|m| m.abi().name().to_string()).unwrap_or_default()
    }

    /// SHA-256 of the wasm bytes, in hex.
    #[napi(getter)]
    pub fn sha256(&self) -> String {
        self.module.as_ref().map(PluginModule::sha256).unwrap_or_default()
    }

    /// True when the compiled code came from the module cache.
    #[napi(getter, js_name = "fromCache")]
    pub fn cached(&self) -> bool {
        self.module.as_ref().is_some_and(PluginModule::from_cache)
    }
}

/// A metric plugins defined, as read now.
#[napi(object)]
pub struct ProxyMetric {
    /// The name the plugin gave.
    pub name: String,
    /// `'counter' | 'gauge' | 'histogram'`.
    pub kind: String,
    /// Counter or gauge value; for a histogram, the number of recorded values.
    pub value: f64,
    /// Histogram only: the sum of recorded values.
    pub sum: f64,
    /// Histogram only: the smallest recorded value (0 when none).
    pub min: f64,
    /// Histogram only: the largest recorded value (0 when none).
    pub max: f64,
}

impl From<MetricSnapshot> for ProxyMetric {
    fn from(m: MetricSnapshot) -> ProxyMetric {
        ProxyMetric {
            name: m.name,
            kind: m.kind.name().to_string(),
            value: m.value as f64,
            sum: m.sum as f64,
            min: m.min as f64,
            max: m.max as f64,
        }
    }
}

/// A value of shared data with the token a conditional write must present.
#[napi(object)]
pub struct ProxySharedValue {
    /// The bytes.
    pub value: Buffer,
    /// The compare-and-swap token.
    pub cas: u32,
}

/// One log line of a plugin.
#[napi(object)]
pub struct ProxyLogRecord {
    /// `'trace' | 'debug' | 'info' | 'warn' | 'error' | 'critical'`.
    pub level: String,
    /// The VM's id.
    pub vm_id: String,
    /// The plugin's name (empty during VM start).
    pub plugin: String,
    /// The context that logged (0 during start).
    pub context_id: u32,
    /// The message (WASI stdout lines arrive as `info`, stderr lines as `error`).
    pub message: String,
}

/// An HTTP or TCP context.
#[derive(Clone)]
enum Ctx {
    Http(HttpContext),
    Tcp(TcpContext),
}

impl Ctx {
    fn wait(&self, stream: StreamType, timeout: Duration) -> ProxyResult<FilterAction> {
        match self {
            Ctx::Http(c) => c.wait(stream, timeout),
            Ctx::Tcp(c) => c.wait(stream, timeout),
        }
    }
    fn property(&self, path: &str) -> ProxyResult<Option<Vec<u8>>> {
        match self {
            Ctx::Http(c) => c.property(path),
            Ctx::Tcp(c) => c.property(path),
        }
    }
    fn set_property(&self, path: &str, value: &[u8]) -> ProxyResult<()> {
        match self {
            Ctx::Http(c) => c.set_property(path, value),
            Ctx::Tcp(c) => c.set_property(path, value),
        }
    }
    fn finish(&self) -> ProxyResult<bool> {
        match self {
            Ctx::Http(c) => c.finish(),
            Ctx::Tcp(c) => c.finish(),
        }
    }
    fn id(&self) -> u32 {
        match self {
            Ctx::Http(c) => c.id(),
            Ctx::Tcp(c) => c.id(),
        }
    }
    fn node(&self) -> &Node {
        match self {
            Ctx::Http(c) => c.node(),
            Ctx::Tcp(c) => c.node(),
        }
    }
}

/// Runs a call that yields an action on a pool thread: resolves with `{ action, localResponse? }`. `node` is
/// the node the call is made on (a closed one gives its own close reason).
fn action_op(
    local: &EnvLocal,
    node: Node,
    job: impl FnOnce() -> ProxyResult<FilterAction> + Send + 'static,
) -> napi::Result<RawValue> {
    vm_op(local, node, job, |action| {
        Out::Build(Box::new(move |local: &EnvLocal| Ok(action_to_js(local.raw(), &action))))
    })
}

/// Runs a VM call on a pool thread: resolves with what `convert` makes of its result. A `BCV_CLOSED` error
/// carries the reason `node` (the node the call is made on) was closed with — `PARENT`, `SCOPE_EXITED`, … —
/// where core only knows the context is closed.
fn vm_op<T: Send + 'static>(
    local: &EnvLocal,
    node: Node,
    job: impl FnOnce() -> ProxyResult<T> + Send + 'static,
    convert: impl FnOnce(T) -> Out + Send + 'static,
) -> napi::Result<RawValue> {
    pool::spawn(
        local,
        move || {
            job().map_err(|e| match (e, node.close_reason()) {
                (ProxyError::Closed(_), Some(closed)) => JsErr::closed(closed),
                (e, _) => convert::error(e),
            })
        },
        convert,
    )
}

/// The bytes `Out` of an optional value (`null` when absent).
fn bytes_out(value: Option<Vec<u8>>) -> Out {
    value.map_or(Out::Null, |v| Out::Bytes(v.into()))
}

fn stream_of(name: &str) -> Result<StreamType, JsErr> {
    Ok(match name {
        "request" => StreamType::HttpRequest,
        "response" => StreamType::HttpResponse,
        "downstream" => StreamType::Downstream,
        "upstream" => StreamType::Upstream,
        other => {
            return Err(JsErr::invalid(format!(
                "stream must be 'request', 'response', 'downstream' or 'upstream', got {other:?}"
            )));
        }
    })
}

fn peer_of(name: &str) -> Result<PeerType, JsErr> {
    Ok(match name {
        "unknown" => PeerType::Unknown,
        "local" => PeerType::Local,
        "remote" => PeerType::Remote,
        other => return Err(JsErr::invalid(format!("peer must be 'unknown', 'local' or 'remote', got {other:?}"))),
    })
}

fn timeout_of(ms: f64) -> Result<Duration, JsErr> {
    millis(Some(ms), "timeoutMs").map(Option::unwrap_or_default)
}

/// Accessors of the proxy kinds.
impl Handle {
    fn proxy_host(&self, local: &EnvLocal, method: &str) -> napi::Result<ProxyHost> {
        match &*self.get(local)? {
            Kind::ProxyHost(h) => Ok(h.clone()),
            _ => Err(self.wrong(local, method)),
        }
    }

    fn proxy_vm(&self, local: &EnvLocal, method: &str) -> napi::Result<Vm> {
        match &*self.get(local)? {
            Kind::ProxyVm(v) => Ok(v.clone()),
            _ => Err(self.wrong(local, method)),
        }
    }

    fn proxy_plugin(&self, local: &EnvLocal, method: &str) -> napi::Result<Plugin> {
        match &*self.get(local)? {
            Kind::ProxyPlugin(p) => Ok(p.clone()),
            _ => Err(self.wrong(local, method)),
        }
    }

    fn proxy_http(&self, local: &EnvLocal, method: &str) -> napi::Result<HttpContext> {
        match &*self.get(local)? {
            Kind::ProxyHttp(c) => Ok(c.clone()),
            _ => Err(self.wrong(local, method)),
        }
    }

    fn proxy_tcp(&self, local: &EnvLocal, method: &str) -> napi::Result<TcpContext> {
        match &*self.get(local)? {
            Kind::ProxyTcp(c) => Ok(c.clone()),
            _ => Err(self.wrong(local, method)),
        }
    }

    fn proxy_ctx(&self, local: &EnvLocal, method: &str) -> napi::Result<Ctx> {
        match &*self.get(local)? {
            Kind::ProxyHttp(c) => Ok(Ctx::Http(c.clone())),
            Kind::ProxyTcp(c) => Ok(Ctx::Tcp(c.clone())),
            _ => Err(self.wrong(local, method)),
        }
    }
}

#[napi]
impl Handle {
    // ----- host -----

    /// Compiles (or loads from the module cache) and checks a plugin module off the JS thread. Rejects with
    /// `BCV_PROXY_INVALID_MODULE` (not a Proxy-Wasm module, bad imports, or not wasm at all: `stage` is
    /// `'validate'` or `'compile'`), `BCV_IO` when the cache directory cannot be written. Throws `BCV_CLOSED`
    /// once the host is closed.
    #[napi(ts_return_type = "Promise<ProxyModuleHandle>")]
    pub fn proxy_load_module(&self, env: Env, name: String, wasm: Uint8Array) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxyLoadModule")?;
        if let Some(closed) = host.node().close_reason() {
            return Err(JsErr::closed(closed).throw(&local));
        }
        let wasm = wasm.to_vec();
        vm_op(
            &local,
            host.node().clone(),
            move || host.load_module(&name, &wasm),
            |module| {
                Out::Build(Box::new(move |local: &EnvLocal| {
                    let handle = ProxyModuleHandle { module: Some(module) };
                    // SAFETY: on the JS thread of `local`, as napi-rs's own conversions are.
                    unsafe { <ProxyModuleHandle as ToNapiValue>::to_napi_value(local.raw(), handle) }
                }))
            },
        )
    }

    /// Starts a VM of `module` (instantiation and the guest's start functions run off the JS thread):
    /// resolves with a `ProxyVm` handle. `environment` is `[name, value]` pairs (or an object) the guest
    /// sees through WASI; `services` holds the JS functions (see `lib/proxy.js`). Rejects with
    /// `BCV_PROXY_VM_START`, `BCV_CLOSED` when the host is closed.
    #[napi(ts_return_type = "Promise<Handle>")]
    // One positional argument per option: lib/proxy.js unpacks the options object.
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_start_vm(
        &self,
        env: Env,
        module: &ProxyModuleHandle,
        vm_id: String,
        configuration: Uint8Array,
        #[napi(ts_arg_type = "Array<[string, string]> | Record<string, string> | null | undefined")]
        environment: Unknown,
        #[napi(ts_arg_type = "object | null | undefined")] services: Unknown,
        restart_max: u32,
        restart_window_ms: f64,
        restart_backoff_ms: f64,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxyStartVm")?;
        let restart = if restart_max > 0 {
            let duration = |ms: f64, what: &str| match millis(Some(ms), what) {
                Ok(d) => Ok(d.unwrap_or_default()),
                Err(e) => Err(e.throw(&local)),
            };
            Some(RestartPolicy {
                max_restarts: restart_max,
                window: duration(restart_window_ms, "restart.windowMs")?,
                backoff: duration(restart_backoff_ms, "restart.backoffMs")?,
            })
        } else {
            None
        };
        let Some(module) = module.module.clone() else {
            return Err(JsErr::invalid("the module is gone").throw(&local));
        };
        let environment = string_pairs(local.raw(), environment.raw(), "environment")
            .map_err(|e| e.throw(&local))?
            .into_iter()
            .map(|(k, v)| (k, text(&v)))
            .collect();
        let deadline = host.config().callback_deadline;
        let services = services::services_from_js(&local, services.raw(), deadline).map_err(|e| e.throw(&local))?;
        let config = VmConfig { vm_id, configuration: configuration.to_vec(), environment, services, restart };
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let lineage = self.lineage();
        vm_op(
            &local,
            host.node().clone(),
            move || Vm::start(&host, &module, config),
            move |vm| Out::Child(Kind::ProxyVm(vm), scope, lineage),
        )
    }

    /// Every metric plugins of this host defined, in definition order.
    #[napi]
    pub fn proxy_metrics(&self, env: Env) -> napi::Result<Vec<ProxyMetric>> {
        let local = enter(&env)?;
        Ok(self.proxy_host(&local, "proxyMetrics")?.metrics().into_iter().map(ProxyMetric::from).collect())
    }

    /// One metric by name, or `null`.
    #[napi]
    pub fn proxy_metric(&self, env: Env, name: String) -> napi::Result<Option<ProxyMetric>> {
        let local = enter(&env)?;
        Ok(self.proxy_host(&local, "proxyMetric")?.metric(&name).map(ProxyMetric::from))
    }

    /// Shared data `key` of VM id `vmId`: `{ value, cas }`, or `null`.
    #[napi]
    pub fn proxy_shared_data(
        &self,
        env: Env,
        vm_id: String,
        key: Uint8Array,
    ) -> napi::Result<Option<ProxySharedValue>> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxySharedData")?;
        Ok(host.shared_data(&vm_id, &key).map(|v| ProxySharedValue { value: v.value.into(), cas: v.cas }))
    }

    /// Sets shared data as a plugin would (`cas` 0: unconditional) and returns the new CAS token. Throws
    /// `BCV_CONFLICT` when `cas` is stale.
    #[napi]
    pub fn proxy_set_shared_data(
        &self,
        env: Env,
        vm_id: String,
        key: Uint8Array,
        value: Uint8Array,
        cas: u32,
    ) -> napi::Result<u32> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxySetSharedData")?;
        host.set_shared_data(&vm_id, &key, &value, cas).map_err(|status| {
            JsErr::new("BCV_CONFLICT", format!("shared data of vm {vm_id:?}: {status:?} (the CAS token is stale)"))
                .throw(&local)
        })
    }

    /// Removes shared data `key`; true when it existed.
    #[napi]
    pub fn proxy_remove_shared_data(&self, env: Env, vm_id: String, key: Uint8Array) -> napi::Result<bool> {
        let local = enter(&env)?;
        Ok(self.proxy_host(&local, "proxyRemoveSharedData")?.remove_shared_data(&vm_id, &key))
    }

    /// The keys of VM id `vmId`'s shared data, sorted.
    #[napi]
    pub fn proxy_shared_data_keys(&self, env: Env, vm_id: String) -> napi::Result<Vec<Buffer>> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxySharedDataKeys")?;
        Ok(host.shared_data_keys(&vm_id).into_iter().map(Buffer::from).collect())
    }

    /// Enqueues `item` on shared queue `queue` of `vmId` (its registrant's `on_queue_ready` runs). Throws
    /// `BCV_NOT_FOUND` when no plugin registered the queue.
    #[napi]
    pub fn proxy_enqueue(&self, env: Env, vm_id: String, queue: String, item: Uint8Array) -> napi::Result<()> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxyEnqueue")?;
        host.enqueue(&vm_id, &queue, &item).map_err(|status| {
            let message = format!("shared queue {queue:?} of vm {vm_id:?}: {status:?}");
            let code = if status == bcv_core::proxy::Status::NotFound { "BCV_NOT_FOUND" } else { "BCV_BUSY" };
            JsErr::new(code, message).throw(&local)
        })
    }

    /// Items waiting in shared queue `queue` of `vmId`, or `null` when it is not registered.
    #[napi]
    pub fn proxy_queue_length(&self, env: Env, vm_id: String, queue: String) -> napi::Result<Option<u32>> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxyQueueLength")?;
        Ok(host.queue_len(&vm_id, &queue).map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// The host's limits: `{ memoryLimit, callbackDeadlineMs, pooling, maxInstances, moduleCacheDir }`.
    #[napi(
        ts_return_type = "{ memoryLimit: number, callbackDeadlineMs: number, pooling: boolean, maxInstances: number, moduleCacheDir: string | null }"
    )]
    pub fn proxy_host_config(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let host = self.proxy_host(&local, "proxyHostConfig")?;
        let c = host.config();
        let value = serde_json::json!({
            "memory_limit": c.memory_limit,
            "callback_deadline_ms": c.callback_deadline.as_secs_f64() * 1000.0,
            "pooling": c.pooling,
            "max_instances": c.max_instances,
            "module_cache_dir": c.module_cache_dir.as_ref().map(|d| d.display().to_string()),
        });
        Ok(RawValue(js::json(local.raw(), &value)))
    }

    // ----- VM -----

    /// The VM id.
    #[napi]
    pub fn proxy_vm_id(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        Ok(self.proxy_vm(&local, "proxyVmId")?.id().to_string())
    }

    /// Adds a plugin (a canary instance runs its start and configure first): resolves with a `ProxyPlugin`
    /// handle. `properties` are `[path, value]` pairs (or an object) the plugin can read. Rejects with
    /// `BCV_PROXY_PLUGIN_REJECTED`, `BCV_PROXY_VM_FAILED`, `BCV_CLOSED`.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn proxy_add_plugin(
        &self,
        env: Env,
        name: String,
        root_id: String,
        configuration: Uint8Array,
        fail_open: bool,
        #[napi(
            ts_arg_type = "Array<[string, string | Uint8Array]> | Record<string, string | Uint8Array> | null | undefined"
        )]
        properties: Unknown,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vm = self.proxy_vm(&local, "proxyAddPlugin")?;
        let properties: HashMap<String, Vec<u8>> = string_pairs(local.raw(), properties.raw(), "properties")
            .map_err(|e| e.throw(&local))?
            .into_iter()
            .collect();
        let config = PluginConfig { name, root_id, configuration: configuration.to_vec(), fail_open, properties };
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let lineage = self.lineage();
        vm_op(
            &local,
            vm.node().clone(),
            move || vm.add_plugin(config),
            move |p| Out::Child(Kind::ProxyPlugin(p), scope, lineage),
        )
    }

    /// Why the VM (of this VM or plugin handle) failed — `{ kind, message, … }` — or `null` while it works.
    /// Never waits for the VM.
    /// How many times the VM was re-created after a failure. Never waits for the VM.
    #[napi]
    pub fn proxy_restarts(&self, env: Env) -> napi::Result<u32> {
        let local = enter(&env)?;
        match &*self.get(&local)? {
            Kind::ProxyVm(v) => Ok(v.restarts()),
            _ => Err(self.wrong(&local, "proxyRestarts")),
        }
    }

    #[napi(
        ts_return_type = "{ kind: string, message: string, limit?: number, function?: string, phase?: string, exitCode?: number } | null"
    )]
    pub fn proxy_failure(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let failure = match &*self.get(&local)? {
            Kind::ProxyVm(v) => v.failure(),
            Kind::ProxyPlugin(p) => p.failure(),
            _ => return Err(self.wrong(&local, "proxyFailure")),
        };
        let value = failure.map_or(serde_json::Value::Null, |f| convert::failure_json(&f));
        Ok(RawValue(js::json(local.raw(), &value)))
    }

    /// Takes the log records the VM kept since the last call (the most recent 4096). Never waits for the VM.
    #[napi]
    pub fn proxy_take_logs(&self, env: Env) -> napi::Result<Vec<ProxyLogRecord>> {
        let local = enter(&env)?;
        let vm = self.proxy_vm(&local, "proxyTakeLogs")?;
        Ok(vm
            .take_logs()
            .into_iter()
            .map(|r| ProxyLogRecord {
                level: r.level.name().to_string(),
                vm_id: r.vm_id,
                plugin: r.plugin,
                context_id: r.context_id,
                message: r.message,
            })
            .collect())
    }

    /// Bytes of linear memory the VM's instance has now.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn proxy_memory_size(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vm = self.proxy_vm(&local, "proxyMemorySize")?;
        vm_op(&local, vm.node().clone(), move || vm.memory_size(), |n| Out::Number(n as f64))
    }

    /// Number of live contexts of the VM (root and stream contexts).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn proxy_context_count(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vm = self.proxy_vm(&local, "proxyContextCount")?;
        vm_op(&local, vm.node().clone(), move || vm.context_count(), |n| Out::Number(n as f64))
    }

    /// Resolves `true` once nothing (tick, queue notification, callout response) is being delivered to the
    /// VM or queued for it, `false` after `timeoutMs`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn proxy_wait_idle(&self, env: Env, timeout_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let vm = self.proxy_vm(&local, "proxyWaitIdle")?;
        let timeout = timeout_of(timeout_ms).map_err(|e| e.throw(&local))?;
        vm_op(
            &local,
            vm.node().clone(),
            move || Ok(vm.wait_idle(timeout)),
            |idle| Out::Build(Box::new(move |local: &EnvLocal| Ok(js::boolean(local.raw(), idle)))),
        )
    }

    // ----- plugin -----

    /// The plugin's name.
    #[napi]
    pub fn proxy_plugin_name(&self, env: Env) -> napi::Result<String> {
        let local = enter(&env)?;
        Ok(self.proxy_plugin(&local, "proxyPluginName")?.name().to_string())
    }

    /// The plugin's root context id.
    #[napi]
    pub fn proxy_root_context_id(&self, env: Env) -> napi::Result<u32> {
        let local = enter(&env)?;
        Ok(self.proxy_plugin(&local, "proxyRootContextId")?.root_context_id())
    }

    /// True when traffic passes unfiltered after a VM failure.
    #[napi]
    pub fn proxy_fail_open(&self, env: Env) -> napi::Result<bool> {
        let local = enter(&env)?;
        Ok(self.proxy_plugin(&local, "proxyFailOpen")?.fail_open())
    }

    /// Creates a stream context of the plugin (its `on_context_create` runs off the JS thread): resolves with
    /// a `ProxyHttpContext` handle, or a `ProxyTcpContext` with `tcp`. Rejects with `BCV_CLOSED`.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn proxy_new_context(&self, env: Env, tcp: bool) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let plugin = self.proxy_plugin(&local, "proxyNewContext")?;
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let lineage = self.lineage();
        vm_op(
            &local,
            plugin.node().clone(),
            move || {
                if tcp { plugin.tcp_context().map(Kind::ProxyTcp) } else { plugin.http_context().map(Kind::ProxyHttp) }
            },
            move |kind| Out::Child(kind, scope, lineage),
        )
    }

    /// Calls the plugin's `proxy_on_foreign_function(root, functionId, args)`. Rejects with
    /// `BCV_PROXY_VM_FAILED` when the VM failed or the callback trapped.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn proxy_call_foreign_function(&self, env: Env, function_id: u32, args: Uint8Array) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let plugin = self.proxy_plugin(&local, "proxyCallForeignFunction")?;
        let args = args.to_vec();
        vm_op(
            &local,
            plugin.node().clone(),
            move || plugin.call_foreign_function(function_id, &args),
            |()| Out::Undefined,
        )
    }

    // ----- contexts -----

    /// The context id.
    #[napi]
    pub fn proxy_context_id(&self, env: Env) -> napi::Result<u32> {
        let local = enter(&env)?;
        Ok(self.proxy_ctx(&local, "proxyContextId")?.id())
    }

    /// Feeds request (or, with `response`, response) headers: resolves with `{ action, localResponse? }`.
    /// A VM failure is not an error: the plugin's policy gives the action. Rejects with
    /// `BCV_PROXY_CONTEXT_FINISHED`, `BCV_CLOSED`.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_headers(
        &self,
        env: Env,
        response: bool,
        #[napi(ts_arg_type = "Array<[string, string | Uint8Array]> | Record<string, string | string[]>")]
        headers: Unknown,
        end_of_stream: bool,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyHeaders")?;
        let headers = headers_from_js(local.raw(), headers.raw(), "headers").map_err(|e| e.throw(&local))?;
        action_op(&local, ctx.node().clone(), move || {
            if response {
                ctx.on_response_headers(headers, end_of_stream)
            } else {
                ctx.on_request_headers(headers, end_of_stream)
            }
        })
    }

    /// Feeds a request (or response) body chunk, appended to the body the plugin sees.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_body(
        &self,
        env: Env,
        response: bool,
        chunk: Uint8Array,
        end_of_stream: bool,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyBody")?;
        let chunk = chunk.to_vec();
        action_op(&local, ctx.node().clone(), move || {
            if response {
                ctx.on_response_body(&chunk, end_of_stream)
            } else {
                ctx.on_request_body(&chunk, end_of_stream)
            }
        })
    }

    /// Feeds request (or response) trailers.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_trailers(
        &self,
        env: Env,
        response: bool,
        #[napi(ts_arg_type = "Array<[string, string | Uint8Array]> | Record<string, string | string[]>")]
        trailers: Unknown,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyTrailers")?;
        let trailers = headers_from_js(local.raw(), trailers.raw(), "trailers").map_err(|e| e.throw(&local))?;
        action_op(&local, ctx.node().clone(), move || {
            if response { ctx.on_response_trailers(trailers) } else { ctx.on_request_trailers(trailers) }
        })
    }

    /// A TCP connection arrived.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_tcp_new_connection(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_tcp(&local, "proxyTcpNewConnection")?;
        action_op(&local, ctx.node().clone(), move || ctx.on_new_connection())
    }

    /// Data from the client (or, with `upstream`, from the server), appended to what the plugin sees.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_tcp_data(
        &self,
        env: Env,
        upstream: bool,
        data: Uint8Array,
        end_of_stream: bool,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_tcp(&local, "proxyTcpData")?;
        let data = data.to_vec();
        action_op(&local, ctx.node().clone(), move || {
            if upstream {
                ctx.on_upstream_data(&data, end_of_stream)
            } else {
                ctx.on_downstream_data(&data, end_of_stream)
            }
        })
    }

    /// The client (or server) side closed; `peer` is `'unknown' | 'local' | 'remote'`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn proxy_tcp_close(&self, env: Env, upstream: bool, peer: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_tcp(&local, "proxyTcpClose")?;
        let peer = peer_of(&peer).map_err(|e| e.throw(&local))?;
        vm_op(
            &local,
            ctx.node().clone(),
            move || if upstream { ctx.on_upstream_close(peer) } else { ctx.on_downstream_close(peer) },
            |()| Out::Undefined,
        )
    }

    /// Waits until a paused `stream` (`'request' | 'response' | 'downstream' | 'upstream'`) continues, gets a
    /// local response or is closed: resolves with that action (at once when it is not paused). Rejects with
    /// `BCV_TIMEOUT` after `timeoutMs` (nothing is lost; wait again), `BCV_CLOSED` when the context is closed.
    #[napi(
        ts_return_type = "Promise<{ action: 'continue' | 'pause' | 'localResponse' | 'close', localResponse?: { status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } }>"
    )]
    pub fn proxy_wait(&self, env: Env, stream: String, timeout_ms: f64) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_ctx(&local, "proxyWait")?;
        let (stream, timeout) =
            stream_of(&stream).and_then(|s| Ok((s, timeout_of(timeout_ms)?))).map_err(|e| e.throw(&local))?;
        action_op(&local, ctx.node().clone(), move || ctx.wait(stream, timeout))
    }

    /// Reads a header map as the plugin left it: `which` is `'requestHeaders' | 'requestTrailers' |
    /// 'responseHeaders' | 'responseTrailers'`. Resolves with `[name, value]` pairs.
    #[napi(ts_return_type = "Promise<Array<[string, string]>>")]
    pub fn proxy_read_headers(&self, env: Env, which: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyReadHeaders")?;
        let read: fn(&HttpContext) -> ProxyResult<bcv_core::proxy::HeaderMap> = match which.as_str() {
            "requestHeaders" => HttpContext::request_headers,
            "requestTrailers" => HttpContext::request_trailers,
            "responseHeaders" => HttpContext::response_headers,
            "responseTrailers" => HttpContext::response_trailers,
            other => return Err(JsErr::invalid(format!("no header map {other:?}")).throw(&local)),
        };
        vm_op(
            &local,
            ctx.node().clone(),
            move || read(&ctx),
            |map| Out::Build(Box::new(move |local: &EnvLocal| Ok(headers_to_js(local.raw(), &map)))),
        )
    }

    /// Takes buffered data as the plugin left it, leaving the buffer empty: `which` is `'requestBody' |
    /// 'responseBody'` (HTTP) or `'downstreamData' | 'upstreamData'` (TCP). Resolves with a `Buffer`.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn proxy_take_data(&self, env: Env, which: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_ctx(&local, "proxyTakeData")?;
        let node = ctx.node().clone();
        let job: Box<dyn FnOnce() -> ProxyResult<Vec<u8>> + Send> = match (ctx, which.as_str()) {
            (Ctx::Http(c), "requestBody") => Box::new(move || c.take_request_body()),
            (Ctx::Http(c), "responseBody") => Box::new(move || c.take_response_body()),
            (Ctx::Tcp(c), "downstreamData") => Box::new(move || c.take_downstream_data()),
            (Ctx::Tcp(c), "upstreamData") => Box::new(move || c.take_upstream_data()),
            (_, other) => return Err(JsErr::invalid(format!("no buffer {other:?} on this context")).throw(&local)),
        };
        vm_op(&local, node, job, |bytes| Out::Bytes(bytes.into()))
    }

    /// The local response the plugin sent on this HTTP context (`{ status, details, body, headers,
    /// grpcStatus }`), or `null`.
    #[napi(
        ts_return_type = "Promise<{ status: number, details: string, body: Buffer, headers: Array<[string, string]>, grpcStatus: number | null } | null>"
    )]
    pub fn proxy_local_response(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyLocalResponse")?;
        vm_op(
            &local,
            ctx.node().clone(),
            move || ctx.local_response(),
            |response| {
                Out::Build(Box::new(move |local: &EnvLocal| {
                    Ok(response.map_or_else(|| js::null(local.raw()), |r| local_response_to_js(local.raw(), &r)))
                }))
            },
        )
    }

    /// A property as the plugin would read it (`'request.path'`, one the plugin set, …): a `Buffer` or `null`.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn proxy_property(&self, env: Env, path: String) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_ctx(&local, "proxyProperty")?;
        vm_op(&local, ctx.node().clone(), move || ctx.property(&path), bytes_out)
    }

    /// Sets a property of this context, visible to the plugin.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn proxy_set_property(&self, env: Env, path: String, value: Uint8Array) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_ctx(&local, "proxySetProperty")?;
        let value = value.to_vec();
        vm_op(&local, ctx.node().clone(), move || ctx.set_property(&path, &value), |()| Out::Undefined)
    }

    /// Finishes the context now (`on_done`, then `on_log` and `on_delete`): resolves `false` when the plugin
    /// deferred them until it calls `proxy_done`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn proxy_finish(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let ctx = self.proxy_ctx(&local, "proxyFinish")?;
        vm_op(
            &local,
            ctx.node().clone(),
            move || ctx.finish(),
            |done| Out::Build(Box::new(move |local: &EnvLocal| Ok(js::boolean(local.raw(), done)))),
        )
    }

    /// Pipes a body through the plugin: `input` (a read stream, consumed) goes chunk by chunk to the request
    /// (or response) body callback and what the plugin lets through comes out of the returned read stream.
    /// It ends cleanly only after the plugin continued the final chunk; a local response, a close, a failed
    /// VM (fail-closed), a pause longer than `pauseTimeoutMs` or a cut-short input ends it with
    /// `BCV_CLOSED`.
    #[napi]
    pub fn proxy_filter_body(
        &self,
        env: Env,
        response: bool,
        input: &Handle,
        pause_timeout_ms: f64,
    ) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let ctx = self.proxy_http(&local, "proxyFilterBody")?;
        let timeout = timeout_of(pause_timeout_ms).map_err(|e| e.throw(&local))?;
        let input = input.take_read(&local)?;
        let output =
            if response { ctx.filter_response_body(input, timeout) } else { ctx.filter_request_body(input, timeout) };
        let output = output.map_err(|e| convert::error(e).throw(&local))?;
        Ok(Handle::wrap_child(&local, Kind::Read(output), self))
    }
}
