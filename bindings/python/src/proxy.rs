//! The Proxy-Wasm host for Python: `ProxyHost`, `ProxyModule`, `ProxyVm`, `ProxyPlugin`, `HttpContext`,
//! `TcpContext` and the objects they hand out. Conversion only; `bcv_core::proxy` does the work.
//!
//! Calls that run guest code release the GIL, so the VM can call the application's Python callbacks
//! (callouts, properties, foreign functions, logs) from whichever thread runs the guest, including a
//! timer's. A callback that raises is reported through `sys.unraisablehook` (logs) or turned into the
//! failure status the plugin sees (callouts, foreign functions).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bcv_core::handle::Runtime;
use bcv_core::proxy::{
    CalloutRejected, CalloutReply, CalloutResponse, FailReason, FilterAction, ForeignError, GrpcCallout, GrpcResponse,
    HeaderMap, HostConfig, HttpCallout, HttpContext, LocalResponse, LogRecord, MetricSnapshot, PeerType, Plugin,
    PluginConfig, PluginModule, ProxyError, ProxyHost, RestartPolicy, Services, StreamType, TcpContext, Vm, VmConfig,
};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::errors::{self, make};
use crate::handle::lock;
use crate::stream::{PyReadStream, to_bytes};

/// Converts a Proxy-Wasm host error into the matching exception of `bcv._errors`.
pub(crate) fn proxy_err(py: Python<'_>, error: ProxyError) -> PyErr {
    let text = error.to_string();
    match error {
        ProxyError::InvalidModule { .. } | ProxyError::Compile { .. } => make(py, "InvalidModuleError", (text,)),
        ProxyError::VmStart { .. } => make(py, "VmFailedError", (text, py.None())),
        ProxyError::VmFailed { reason, .. } => make(py, "VmFailedError", (text, fail_kind(&reason))),
        ProxyError::PluginRejected { .. } => make(py, "PluginRejectedError", (text,)),
        ProxyError::InvalidState { .. } => make(py, "ContextFinishedError", (text,)),
        ProxyError::Timeout { .. } => make(py, "TimeoutError", (text,)),
        ProxyError::Reentrant { .. } => make(py, "WouldDeadlockError", (text,)),
        ProxyError::ModuleCache { source, .. } => match source.raw_os_error() {
            Some(code) => PyOSError::new_err((code, text)),
            None => PyOSError::new_err(text),
        },
        ProxyError::Config(_) => make(py, "InvalidArgumentError", (text,)),
        ProxyError::Closed(closed) => errors::closed_error(py, closed, None, None),
    }
}

fn err(py: Python<'_>) -> impl Fn(ProxyError) -> PyErr + '_ {
    move |e| proxy_err(py, e)
}

/// The short name of a failure kind (`"trap"`, `"cpu_deadline"`, …), as `VmFailedError.kind` and
/// `ProxyVm.failure_kind` give it.
fn fail_kind(reason: &FailReason) -> &'static str {
    match reason {
        FailReason::Trap(_) => "trap",
        FailReason::CpuDeadline => "cpu_deadline",
        FailReason::MemoryLimit { .. } => "memory_limit",
        FailReason::RestrictedHostcall { .. } => "restricted_hostcall",
        FailReason::ProcExit(_) => "proc_exit",
        FailReason::AllocatorFailed(_) => "allocator",
        FailReason::VmStartRefused => "vm_start_refused",
        FailReason::Internal(_) => "internal",
    }
}

/// Text for bytes that should be text (names, values of most headers); invalid UTF-8 is replaced.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bytes of a `str` (UTF-8) or any bytes-like object.
fn bytes_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    Ok(to_bytes(value)?.to_vec())
}

/// Headers from a mapping (`{"name": "value"}`) or an iterable of `(name, value)` pairs (order and repeated
/// names kept); names and values are `str` or bytes.
fn headers_in(value: Option<&Bound<'_, PyAny>>) -> PyResult<HeaderMap> {
    let mut map = HeaderMap::new();
    let Some(value) = value else { return Ok(map) };
    if value.is_none() {
        return Ok(map);
    }
    let pairs = match value.cast::<PyDict>() {
        Ok(dict) => dict.items().into_any(),
        Err(_) => value.clone(),
    };
    for pair in pairs.try_iter()? {
        let pair = pair?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract().map_err(|_| {
            make(pair.py(), "InvalidArgumentError", ("headers must be a mapping or (name, value) pairs",))
        })?;
        map.add(bytes_of(&name)?, bytes_of(&value)?);
    }
    Ok(map)
}

/// Headers as a list of `(name, value)` tuples of `str`.
fn headers_out(map: &HeaderMap) -> Vec<(String, String)> {
    map.pairs().iter().map(|(n, v)| (text(n), text(v))).collect()
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Python::attach(|py| make(py, "InvalidArgumentError", (format!("{what} must be >= 0 seconds"),))))
}

fn stream_type(name: &str) -> PyResult<StreamType> {
    match name {
        "request" => Ok(StreamType::HttpRequest),
        "response" => Ok(StreamType::HttpResponse),
        "downstream" => Ok(StreamType::Downstream),
        "upstream" => Ok(StreamType::Upstream),
        other => Err(Python::attach(|py| {
            make(
                py,
                "InvalidArgumentError",
                (format!("stream must be 'request', 'response', 'downstream' or 'upstream', not {other:?}"),),
            )
        })),
    }
}

fn peer_type(name: &str) -> PyResult<PeerType> {
    match name {
        "unknown" => Ok(PeerType::Unknown),
        "local" => Ok(PeerType::Local),
        "remote" => Ok(PeerType::Remote),
        other => Err(Python::attach(|py| {
            make(py, "InvalidArgumentError", (format!("peer must be 'unknown', 'local' or 'remote', not {other:?}"),))
        })),
    }
}

/// A response the plugin sent instead of forwarding (or the 503 of a fail-closed plugin whose VM failed).
#[pyclass(frozen, name = "LocalResponse", module = "bcv")]
pub(crate) struct PyLocalResponse {
    /// The HTTP status code.
    #[pyo3(get)]
    status: u32,
    /// The response headers the plugin added, as `(name, value)` pairs.
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    /// The response body.
    #[pyo3(get)]
    body: Py<PyBytes>,
    /// The details text (for logs; not sent to the client).
    #[pyo3(get)]
    details: String,
    /// The gRPC status of a gRPC reply, else `None`.
    #[pyo3(get)]
    grpc_status: Option<i32>,
}

#[pymethods]
impl PyLocalResponse {
    fn __repr__(&self) -> String {
        format!("<bcv.LocalResponse {} {:?}>", self.status, self.details)
    }
}

impl PyLocalResponse {
    fn new(py: Python<'_>, r: &LocalResponse) -> PyLocalResponse {
        PyLocalResponse {
            status: r.status,
            headers: headers_out(&r.headers),
            body: PyBytes::new(py, &r.body).unbind(),
            details: r.details.clone(),
            grpc_status: r.grpc_status,
        }
    }
}

/// What to do with a stream after a plugin callback: `kind` is `"continue"`, `"pause"` (wait for the
/// plugin: `wait()`), `"local_response"` (answer with `response` instead of forwarding) or `"close"`.
/// An action compares equal to its kind: `ctx.on_request_headers(h) == "continue"`.
#[pyclass(frozen, name = "Action", module = "bcv")]
pub(crate) struct PyAction {
    /// `"continue"`, `"pause"`, `"local_response"` or `"close"`.
    #[pyo3(get)]
    kind: &'static str,
    /// The local response for `"local_response"`, else `None`.
    #[pyo3(get)]
    response: Option<Py<PyLocalResponse>>,
}

#[pymethods]
impl PyAction {
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        if let Ok(s) = other.extract::<String>() {
            return s == self.kind;
        }
        match other.cast::<PyAction>() {
            Ok(a) => a.get().kind == self.kind,
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        self.kind.len() as u64
    }

    fn __repr__(&self) -> String {
        format!("<bcv.Action {}>", self.kind)
    }
}

fn action_out(py: Python<'_>, action: FilterAction) -> PyResult<PyAction> {
    Ok(match action {
        FilterAction::Continue => PyAction { kind: "continue", response: None },
        FilterAction::Pause => PyAction { kind: "pause", response: None },
        FilterAction::Close => PyAction { kind: "close", response: None },
        FilterAction::LocalResponse(r) => {
            PyAction { kind: "local_response", response: Some(Py::new(py, PyLocalResponse::new(py, &r))?) }
        }
    })
}

/// One log line of a plugin.
#[pyclass(frozen, name = "LogRecord", module = "bcv")]
pub(crate) struct PyLogRecord {
    /// `"trace"`, `"debug"`, `"info"`, `"warn"`, `"error"` or `"critical"`.
    #[pyo3(get)]
    level: &'static str,
    /// The VM id.
    #[pyo3(get)]
    vm_id: String,
    /// The plugin's name (empty for VM-wide lines).
    #[pyo3(get)]
    plugin: String,
    /// The context that wrote it.
    #[pyo3(get)]
    context_id: u32,
    /// The text.
    #[pyo3(get)]
    message: String,
}

#[pymethods]
impl PyLogRecord {
    fn __repr__(&self) -> String {
        format!("<bcv.LogRecord {} {}: {:?}>", self.level, self.plugin, self.message)
    }
}

impl PyLogRecord {
    fn new(r: &LogRecord) -> PyLogRecord {
        PyLogRecord {
            level: r.level.name(),
            vm_id: r.vm_id.clone(),
            plugin: r.plugin.clone(),
            context_id: r.context_id,
            message: r.message.clone(),
        }
    }
}

fn metric_out<'py>(py: Python<'py>, m: &MetricSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", &m.name)?;
    dict.set_item("kind", m.kind.name())?;
    dict.set_item("value", m.value)?;
    dict.set_item("sum", m.sum)?;
    dict.set_item("min", m.min)?;
    dict.set_item("max", m.max)?;
    Ok(dict)
}

/// An HTTP or gRPC callout a plugin dispatched, handed to the VM's `http_callout` / `grpc_callout`
/// callback. Answer it once, from any thread, now or later: `respond(...)` / `respond_grpc(...)`, or
/// `fail()`. Dropping it unanswered fails it (the plugin sees a failed call); so does its timeout.
#[pyclass(frozen, name = "Callout", module = "bcv")]
pub(crate) struct PyCallout {
    /// `"http"` or `"grpc"`.
    #[pyo3(get)]
    kind: &'static str,
    /// The plugin's call id.
    #[pyo3(get)]
    call_id: u32,
    /// The upstream (cluster) name the plugin chose.
    #[pyo3(get)]
    upstream: String,
    /// HTTP: the request headers (`:method`, `:path`, `:authority`…); gRPC: the initial metadata.
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    /// HTTP: the request body; gRPC: the request message.
    #[pyo3(get)]
    body: Py<PyBytes>,
    /// HTTP: the request trailers (empty for gRPC).
    #[pyo3(get)]
    trailers: Vec<(String, String)>,
    /// gRPC: the service name (empty for HTTP).
    #[pyo3(get)]
    service: String,
    /// gRPC: the method name (empty for HTTP).
    #[pyo3(get)]
    method: String,
    /// The timeout the plugin asked for, in seconds.
    #[pyo3(get)]
    timeout: f64,
    /// The plugin that dispatched it.
    #[pyo3(get)]
    plugin: String,
    reply: Mutex<Option<CalloutReply>>,
}

impl PyCallout {
    fn take(&self, py: Python<'_>) -> PyResult<CalloutReply> {
        lock(&self.reply).take().ok_or_else(|| make(py, "AlreadyTakenError", ("this callout was already answered",)))
    }
}

#[pymethods]
impl PyCallout {
    /// Answers an HTTP callout: `headers` must hold `:status` (e.g. `[(":status", "200")]`); `body` and
    /// `trailers` are optional. Raises `AlreadyTakenError` if it was answered before.
    #[pyo3(signature = (headers, body = None, trailers = None))]
    fn respond(
        &self,
        py: Python<'_>,
        headers: &Bound<'_, PyAny>,
        body: Option<&Bound<'_, PyAny>>,
        trailers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let response = CalloutResponse {
            headers: headers_in(Some(headers))?,
            body: body.map(bytes_of).transpose()?.unwrap_or_default(),
            trailers: headers_in(trailers)?,
        };
        let reply = self.take(py)?;
        py.detach(|| reply.respond(response));
        Ok(())
    }

    /// Answers a gRPC callout with `status` (0 = OK; `message` is delivered only then), a status message
    /// and metadata. Raises `AlreadyTakenError` if it was answered before.
    #[pyo3(signature = (status = 0, message = None, status_message = "", initial_metadata = None, trailing_metadata = None))]
    fn respond_grpc(
        &self,
        py: Python<'_>,
        status: u32,
        message: Option<&Bound<'_, PyAny>>,
        status_message: &str,
        initial_metadata: Option<&Bound<'_, PyAny>>,
        trailing_metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let response = GrpcResponse {
            status,
            status_message: status_message.to_string(),
            initial_metadata: headers_in(initial_metadata)?,
            message: message.map(bytes_of).transpose()?.unwrap_or_default(),
            trailing_metadata: headers_in(trailing_metadata)?,
        };
        let reply = self.take(py)?;
        py.detach(|| reply.respond_grpc(response));
        Ok(())
    }

    /// Tells the plugin the call failed (no response). Raises `AlreadyTakenError` if it was answered.
    fn fail(&self, py: Python<'_>) -> PyResult<()> {
        let reply = self.take(py)?;
        py.detach(|| reply.fail());
        Ok(())
    }

    /// True once answered (or failed).
    #[getter]
    fn answered(&self) -> bool {
        lock(&self.reply).is_none()
    }

    fn __repr__(&self) -> String {
        format!("<bcv.Callout {} #{} to {:?} from {:?}>", self.kind, self.call_id, self.upstream, self.plugin)
    }
}

/// Calls the application's callout handler; `False` from it means "unknown upstream", an exception means
/// "failed" (reported as unraisable too).
fn dispatch_callout(handler: &Py<PyAny>, callout: PyCallout) -> Result<(), CalloutRejected> {
    Python::attach(|py| {
        let callout = match Py::new(py, callout) {
            Ok(c) => c,
            Err(e) => {
                e.write_unraisable(py, Some(handler.bind(py)));
                return Err(CalloutRejected::Failed);
            }
        };
        match handler.call1(py, (callout,)) {
            Ok(answer) => match answer.extract::<bool>(py) {
                Ok(false) => Err(CalloutRejected::UnknownUpstream),
                _ => Ok(()),
            },
            Err(e) => {
                e.write_unraisable(py, Some(handler.bind(py)));
                Err(CalloutRejected::Failed)
            }
        }
    })
}

fn http_callout(py: Python<'_>, c: HttpCallout) -> PyCallout {
    PyCallout {
        kind: "http",
        call_id: c.call_id,
        upstream: c.upstream,
        headers: headers_out(&c.headers),
        body: PyBytes::new(py, &c.body).unbind(),
        trailers: headers_out(&c.trailers),
        service: String::new(),
        method: String::new(),
        timeout: c.timeout.as_secs_f64(),
        plugin: c.plugin,
        reply: Mutex::new(Some(c.reply)),
    }
}

fn grpc_callout(py: Python<'_>, c: GrpcCallout) -> PyCallout {
    PyCallout {
        kind: "grpc",
        call_id: c.call_id,
        upstream: c.upstream,
        headers: headers_out(&c.initial_metadata),
        body: PyBytes::new(py, &c.message).unbind(),
        trailers: Vec::new(),
        service: c.service,
        method: c.method,
        timeout: c.timeout.as_secs_f64(),
        plugin: c.plugin,
        reply: Mutex::new(Some(c.reply)),
    }
}

/// The embedder's services built from the Python callbacks given to `ProxyHost.start_vm`.
fn services(
    http: Option<Py<PyAny>>,
    grpc: Option<Py<PyAny>>,
    property: Option<Py<PyAny>>,
    foreign: Option<&Bound<'_, PyDict>>,
    log: Option<Py<PyAny>>,
) -> PyResult<Services> {
    let mut services = Services::new();
    if let Some(handler) = http {
        services = services.on_http_call(move |c| dispatch_callout(&handler, Python::attach(|py| http_callout(py, c))));
    }
    if let Some(handler) = grpc {
        services = services.on_grpc_call(move |c| dispatch_callout(&handler, Python::attach(|py| grpc_callout(py, c))));
    }
    if let Some(handler) = property {
        services = services.on_property(move |request| {
            Python::attach(|py| {
                let path: Vec<String> = request.path.iter().map(|s| text(s)).collect();
                let answer = match handler.call1(py, (PyTuple::new(py, path).ok()?, request.plugin)) {
                    Ok(a) => a,
                    Err(e) => {
                        e.write_unraisable(py, Some(handler.bind(py)));
                        return None;
                    }
                };
                if answer.is_none(py) {
                    return None;
                }
                match bytes_of(answer.bind(py)) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        e.write_unraisable(py, Some(handler.bind(py)));
                        None
                    }
                }
            })
        });
    }
    if let Some(foreign) = foreign {
        for (name, function) in foreign.iter() {
            let name: String = name.extract()?;
            let function: Py<PyAny> = function.unbind();
            services = services.foreign_function(name, move |args| {
                Python::attach(|py| {
                    let answer = function
                        .call1(py, (PyBytes::new(py, args),))
                        .map_err(|e| ForeignError::Failed(e.value(py).to_string()))?;
                    if answer.is_none(py) {
                        return Err(ForeignError::NotFound);
                    }
                    bytes_of(answer.bind(py)).map_err(|e| ForeignError::Failed(e.value(py).to_string()))
                })
            });
        }
    }
    if let Some(handler) = log {
        services = services.on_log(move |record| {
            Python::attach(|py| {
                let result = Py::new(py, PyLogRecord::new(record)).and_then(|r| handler.call1(py, (r,)));
                if let Err(e) = result {
                    e.write_unraisable(py, Some(handler.bind(py)));
                }
            })
        });
    }
    Ok(services)
}

/// Generates the class's `#[pymethods]` block: the methods given plus `close()`, context-manager support
/// and `is_open`, for a class holding `Mutex<Option<T>>` of a core object with a `node()`; and `get()`,
/// which locks that slot or raises `ClosedError` once it was closed.
macro_rules! closable {
    ($class:ident { $($body:tt)* }) => {
        impl $class {
            fn get(&self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'_, Option<<Self as Holder>::Inner>>> {
                errors::enter(py)?;
                let guard = lock(&self.inner);
                if guard.is_none() {
                    return Err(errors::consumed(py));
                }
                Ok(guard)
            }
        }

        #[pymethods]
        impl $class {
            $($body)*

            /// Closes it and everything under it (VMs, plugins, contexts). Idempotent.
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                errors::enter(py)?;
                if let Some(inner) = lock(&self.inner).take() {
                    inner.node().close();
                    py.detach(move || drop(inner));
                }
                Ok(())
            }

            fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
                errors::enter(slf.py())?;
                Ok(slf)
            }

            /// Closes (`close()`); never suppresses the exception.
            fn __exit__(
                &self,
                py: Python<'_>,
                _exc_type: Option<Bound<'_, PyAny>>,
                _exc: Option<Bound<'_, PyAny>>,
                _tb: Option<Bound<'_, PyAny>>,
            ) -> PyResult<bool> {
                self.close(py)?;
                Ok(false)
            }

            /// True until `close()`.
            #[getter]
            fn is_open(&self) -> bool {
                lock(&self.inner).as_ref().is_some_and(|i| i.node().close_reason().is_none())
            }
        }
    };
}

/// The core object a Python class wraps.
trait Holder {
    type Inner;
}

/// Runs `call` on the core object without the GIL (guest code may call back into Python).
fn run<T: Clone + Send + Sync, R: Send>(
    py: Python<'_>,
    inner: &Mutex<Option<T>>,
    call: impl FnOnce(&T) -> Result<R, ProxyError> + Send,
) -> PyResult<R> {
    errors::enter(py)?;
    let object = lock(inner).clone().ok_or_else(|| errors::consumed(py))?;
    py.detach(|| call(&object)).map_err(err(py))
}

/// Engine, module cache and shared state for Proxy-Wasm VMs (`bcv_core::proxy::ProxyHost`).
///
/// `ProxyHost(memory_limit=64 MiB, callback_deadline=1.0, pooling=True, max_instances=128,
/// module_cache_dir=None)`: each VM's linear memory is capped at `memory_limit` bytes, each callback may run
/// `callback_deadline` seconds of CPU, instances come from a pooling allocator of `max_instances` slots,
/// and compiled modules are cached in `module_cache_dir` when given. Raises `InvalidArgumentError` for a
/// bad configuration. Closing the host closes every VM, plugin and context under it.
#[pyclass(frozen, name = "ProxyHost", module = "bcv")]
pub(crate) struct PyProxyHost {
    inner: Mutex<Option<ProxyHost>>,
}

impl Holder for PyProxyHost {
    type Inner = ProxyHost;
}

closable!(PyProxyHost {
    #[new]
    #[pyo3(signature = (memory_limit = None, callback_deadline = None, pooling = true, max_instances = None, module_cache_dir = None))]
    fn new(
        py: Python<'_>,
        memory_limit: Option<u64>,
        callback_deadline: Option<f64>,
        pooling: bool,
        max_instances: Option<u32>,
        module_cache_dir: Option<PathBuf>,
    ) -> PyResult<PyProxyHost> {
        errors::enter(py)?;
        let mut config = HostConfig { pooling, module_cache_dir, ..HostConfig::default() };
        if let Some(limit) = memory_limit {
            config.memory_limit = limit;
        }
        if let Some(deadline) = callback_deadline {
            config.callback_deadline = seconds(deadline, "callback_deadline")?;
        }
        if let Some(n) = max_instances {
            config.max_instances = n;
        }
        let host = py.detach(|| ProxyHost::with_runtime(Runtime::global(), config)).map_err(err(py))?;
        Ok(PyProxyHost { inner: Mutex::new(Some(host)) })
    }

    /// Compiles and checks the module `wasm` (bytes) under `name`: raises `InvalidModuleError` naming the
    /// module when it is not a Proxy-Wasm module (no ABI marker, no allocator, unknown imports…).
    fn load_module(&self, py: Python<'_>, name: &str, wasm: &Bound<'_, PyAny>) -> PyResult<PyProxyModule> {
        let wasm = to_bytes(wasm)?;
        let module = run(py, &self.inner, |host| host.load_module(name, &wasm))?;
        Ok(PyProxyModule { module })
    }

    /// Starts a VM of `module`: instantiates it and runs its start functions. VMs with the same `vm_id`
    /// share shared data and queues. `configuration` is the VM configuration (`on_vm_start`), `environment`
    /// the variables the guest sees through WASI.
    ///
    /// Callbacks (each optional, called from the thread running the guest):
    /// `http_callout(callout)` and `grpc_callout(callout)` get a `Callout` to answer now or later (return
    /// `False` for an unknown upstream); `property(path, plugin)` answers a property the VM does not know
    /// (`path` is a tuple of segments; return bytes, str or None); `foreign_functions` maps names to
    /// `f(args: bytes) -> bytes | str | None` (None: not found; an exception: failure); `log(record)` gets
    /// every `LogRecord`.
    ///
    /// `max_restarts` > 0 re-creates a failed VM on its next use (a fresh instance, `on_vm_start`, every
    /// open plugin configured again) at most that many times within `restart_window` seconds, each at
    /// least `restart_backoff` seconds after its failure; contexts open at the failure stay failed.
    /// `ProxyVm.restarts` counts them.
    ///
    /// Raises `VmFailedError` when the VM cannot start.
    #[pyo3(signature = (module, vm_id = "", configuration = None, environment = None, http_callout = None, grpc_callout = None, property = None, foreign_functions = None, log = None, max_restarts = 0, restart_window = 60.0, restart_backoff = 1.0))]
    #[allow(clippy::too_many_arguments)]
    fn start_vm(
        &self,
        py: Python<'_>,
        module: &PyProxyModule,
        vm_id: &str,
        configuration: Option<&Bound<'_, PyAny>>,
        environment: Option<HashMap<String, String>>,
        http_callout: Option<Py<PyAny>>,
        grpc_callout: Option<Py<PyAny>>,
        property: Option<Py<PyAny>>,
        foreign_functions: Option<&Bound<'_, PyDict>>,
        log: Option<Py<PyAny>>,
        max_restarts: u32,
        restart_window: f64,
        restart_backoff: f64,
    ) -> PyResult<PyProxyVm> {
        let services = services(http_callout, grpc_callout, property, foreign_functions, log)?;
        let restart_window = seconds(restart_window, "restart_window")?;
        let restart_backoff = seconds(restart_backoff, "restart_backoff")?;
        let restart = (max_restarts > 0).then_some(RestartPolicy {
            max_restarts,
            window: restart_window,
            backoff: restart_backoff,
        });
        let mut environment: Vec<(String, String)> = environment.unwrap_or_default().into_iter().collect();
        environment.sort();
        let config = VmConfig {
            vm_id: vm_id.to_string(),
            configuration: configuration.map(bytes_of).transpose()?.unwrap_or_default(),
            environment,
            services,
            restart,
        };
        let module = module.module.clone();
        let vm = run(py, &self.inner, move |host| Vm::start(host, &module, config))?;
        Ok(PyProxyVm { inner: Mutex::new(Some(vm)) })
    }

    /// The metric `name` as a dict (`name`, `kind` ("counter", "gauge", "histogram"), `value`, and for a
    /// histogram `sum`, `min`, `max`), or None.
    fn metric<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let snapshot = self.get(py)?.as_ref().and_then(|h| h.metric(name));
        snapshot.map(|m| metric_out(py, &m)).transpose()
    }

    /// Every metric the plugins defined, as dicts like `metric()`'s.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let all = self.get(py)?.as_ref().map(|h| h.metrics()).unwrap_or_default();
        all.iter().map(|m| metric_out(py, m)).collect()
    }

    /// Shared data `key` of the VMs with id `vm_id`: `(value, cas)` or None.
    fn shared_data(&self, py: Python<'_>, vm_id: &str, key: &Bound<'_, PyAny>) -> PyResult<Option<(Py<PyBytes>, u32)>> {
        let key = bytes_of(key)?;
        let value = self.get(py)?.as_ref().and_then(|h| h.shared_data(vm_id, &key));
        Ok(value.map(|v| (PyBytes::new(py, &v.value).unbind(), v.cas)))
    }

    /// Writes shared data `key` of `vm_id`; with `cas` not 0 only if it still has that CAS token. Returns
    /// the new token. Raises `CasMismatchError` when the token is stale.
    #[pyo3(signature = (vm_id, key, value, cas = 0))]
    fn set_shared_data(
        &self,
        py: Python<'_>,
        vm_id: &str,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        cas: u32,
    ) -> PyResult<u32> {
        let (key, value) = (bytes_of(key)?, bytes_of(value)?);
        let guard = self.get(py)?;
        let host = guard.as_ref().ok_or_else(|| errors::consumed(py))?;
        host.set_shared_data(vm_id, &key, &value, cas)
            .map_err(|status| make(py, "CasMismatchError", (format!("shared data {}: {status:?}", text(&key)),)))
    }

    /// Appends `item` to the shared queue `name` of `vm_id` (the registrant's `on_queue_ready` runs).
    /// Raises `InvalidArgumentError` when there is no such queue or it is full.
    fn enqueue(&self, py: Python<'_>, vm_id: &str, name: &str, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let item = bytes_of(item)?;
        let host = self.get(py)?.clone().ok_or_else(|| errors::consumed(py))?;
        py.detach(|| host.enqueue(vm_id, name, &item))
            .map_err(|status| make(py, "InvalidArgumentError", (format!("queue {name} of vm {vm_id:?}: {status:?}"),)))
    }

    fn __repr__(&self) -> String {
        format!("<bcv.ProxyHost {}>", if self.is_open() { "open" } else { "closed" })
    }
});

/// A compiled, checked Proxy-Wasm module (`ProxyHost.load_module`). Holds no resources to close.
#[pyclass(frozen, name = "ProxyModule", module = "bcv")]
pub(crate) struct PyProxyModule {
    module: PluginModule,
}

#[pymethods]
impl PyProxyModule {
    /// The name it was loaded under.
    #[getter]
    fn name(&self) -> &str {
        self.module.name()
    }

    /// The ABI version it speaks: `"0.2.1"`, `"0.2.0"` or `"0.1.0"`.
    #[getter]
    fn abi(&self) -> &'static str {
        self.module.abi().name()
    }

    /// True when the compiled code came from the module cache.
    #[getter(from_cache)]
    fn cached(&self) -> bool {
        self.module.from_cache()
    }

    /// The SHA-256 of the module's bytes (hex).
    #[getter]
    fn sha256(&self) -> String {
        self.module.sha256()
    }

    fn __repr__(&self) -> String {
        format!("<bcv.ProxyModule {:?} abi {}>", self.module.name(), self.module.abi().name())
    }
}

/// A running VM (`ProxyHost.start_vm`): holds plugins of one module. A trap or an exceeded limit marks it
/// failed (`failure`); the host and other VMs keep working.
#[pyclass(frozen, name = "ProxyVm", module = "bcv")]
pub(crate) struct PyProxyVm {
    inner: Mutex<Option<Vm>>,
}

impl Holder for PyProxyVm {
    type Inner = Vm;
}

closable!(PyProxyVm {
    /// Adds a plugin (a root context): a canary instance first runs start, `on_vm_start` and `on_configure`
    /// with `configuration`, then the VM does. `root_id` defaults to `name`; `fail_open` lets traffic pass
    /// when the VM has failed (else a 503 local response / a closed connection); `properties` are the
    /// plugin's own property values. Raises `PluginRejectedError` when the plugin refuses, `VmFailedError`.
    #[pyo3(signature = (name, configuration = None, root_id = None, fail_open = false, properties = None))]
    fn add_plugin(
        &self,
        py: Python<'_>,
        name: &str,
        configuration: Option<&Bound<'_, PyAny>>,
        root_id: Option<String>,
        fail_open: bool,
        properties: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyProxyPlugin> {
        let mut props = HashMap::new();
        if let Some(properties) = properties {
            for (k, v) in properties.iter() {
                props.insert(k.extract::<String>()?, bytes_of(&v)?);
            }
        }
        let config = PluginConfig {
            name: name.to_string(),
            root_id: root_id.unwrap_or_else(|| name.to_string()),
            configuration: configuration.map(bytes_of).transpose()?.unwrap_or_default(),
            fail_open,
            properties: props,
        };
        let plugin = run(py, &self.inner, move |vm| vm.add_plugin(config))?;
        Ok(PyProxyPlugin { inner: Mutex::new(Some(plugin)) })
    }

    /// Takes the log records kept so far (the newest 4096), oldest first. Callable from callbacks.
    fn take_logs(&self, py: Python<'_>) -> PyResult<Vec<PyLogRecord>> {
        let logs = self.get(py)?.as_ref().map(|vm| vm.take_logs()).unwrap_or_default();
        Ok(logs.iter().map(PyLogRecord::new).collect())
    }

    /// How many times the VM was re-created after a failure (`max_restarts` of `start_vm`).
    #[getter]
    fn restarts(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.as_ref().map(|vm| vm.restarts()).unwrap_or(0))
    }

    /// Why the VM failed (text), or None while it works (again, after a restart).
    #[getter]
    fn failure(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.get(py)?.as_ref().and_then(|vm| vm.failure()).map(|r| r.to_string()))
    }

    /// The kind of failure (`"trap"`, `"cpu_deadline"`, `"memory_limit"`, `"restricted_hostcall"`,
    /// `"proc_exit"`, `"allocator"`, `"vm_start_refused"`, `"internal"`), or None.
    #[getter]
    fn failure_kind(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        Ok(self.get(py)?.as_ref().and_then(|vm| vm.failure()).map(|r| fail_kind(&r)))
    }

    /// Bytes of linear memory the instance has now. Raises `WouldDeadlockError` from its own callback.
    #[getter]
    fn memory_size(&self, py: Python<'_>) -> PyResult<usize> {
        run(py, &self.inner, |vm| vm.memory_size())
    }

    /// Live contexts (root and stream). Raises `WouldDeadlockError` from its own callback.
    #[getter]
    fn context_count(&self, py: Python<'_>) -> PyResult<usize> {
        run(py, &self.inner, |vm| vm.context_count())
    }

    /// Waits until timers, queue notifications and callout replies queued for the VM were delivered, up to
    /// `timeout` seconds; returns False if it timed out.
    fn wait_idle(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds(timeout, "timeout")?;
        run(py, &self.inner, |vm| Ok(vm.wait_idle(timeout)))
    }

    fn __repr__(&self) -> String {
        format!("<bcv.ProxyVm {}>", if self.is_open() { "open" } else { "closed" })
    }
});

/// A plugin (root context) of a VM: makes HTTP and TCP stream contexts.
#[pyclass(frozen, name = "ProxyPlugin", module = "bcv")]
pub(crate) struct PyProxyPlugin {
    inner: Mutex<Option<Plugin>>,
}

impl Holder for PyProxyPlugin {
    type Inner = Plugin;
}

closable!(PyProxyPlugin {
    /// A new HTTP stream context (one request/response exchange).
    fn http_context(&self, py: Python<'_>) -> PyResult<PyHttpContext> {
        let ctx = run(py, &self.inner, |p| p.http_context())?;
        Ok(PyHttpContext { inner: Mutex::new(Some(ctx)) })
    }

    /// A new TCP stream context (one connection).
    fn tcp_context(&self, py: Python<'_>) -> PyResult<PyTcpContext> {
        let ctx = run(py, &self.inner, |p| p.tcp_context())?;
        Ok(PyTcpContext { inner: Mutex::new(Some(ctx)) })
    }

    /// Calls the plugin's `on_foreign_function(function_id, args)`.
    fn call_foreign_function(&self, py: Python<'_>, function_id: u32, args: &Bound<'_, PyAny>) -> PyResult<()> {
        let args = bytes_of(args)?;
        run(py, &self.inner, |p| p.call_foreign_function(function_id, &args))
    }

    /// The plugin's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.as_ref().map(|p| p.name().to_string()).unwrap_or_default())
    }

    /// The root context id.
    #[getter]
    fn root_context_id(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.as_ref().map(|p| p.root_context_id()).unwrap_or_default())
    }

    fn __repr__(&self) -> String {
        format!("<bcv.ProxyPlugin {}>", if self.is_open() { "open" } else { "closed" })
    }
});

/// One HTTP request/response exchange through a plugin. Feed it the request (`on_request_headers`,
/// `on_request_body`, `on_request_trailers`), then the response; each returns an `Action`. Read back what
/// the plugin changed (`request_headers`, `take_request_body`…). `finish()` ends it (`on_log`,
/// `on_done`); `close()` or dropping it does too.
#[pyclass(frozen, name = "HttpContext", module = "bcv")]
pub(crate) struct PyHttpContext {
    inner: Mutex<Option<HttpContext>>,
}

impl Holder for PyHttpContext {
    type Inner = HttpContext;
}

impl PyHttpContext {
    fn act(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&HttpContext) -> Result<FilterAction, ProxyError> + Send,
    ) -> PyResult<PyAction> {
        let action = run(py, &self.inner, call)?;
        action_out(py, action)
    }
}

closable!(PyHttpContext {
    /// Runs `on_request_headers` with `headers` (a mapping or `(name, value)` pairs).
    #[pyo3(signature = (headers, end_of_stream = false))]
    fn on_request_headers(&self, py: Python<'_>, headers: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let headers = headers_in(Some(headers))?;
        self.act(py, move |c| c.on_request_headers(headers, end_of_stream))
    }

    /// Runs `on_request_body` with the next chunk.
    #[pyo3(signature = (chunk, end_of_stream = false))]
    fn on_request_body(&self, py: Python<'_>, chunk: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let chunk = bytes_of(chunk)?;
        self.act(py, move |c| c.on_request_body(&chunk, end_of_stream))
    }

    /// Runs `on_request_trailers`.
    fn on_request_trailers(&self, py: Python<'_>, trailers: &Bound<'_, PyAny>) -> PyResult<PyAction> {
        let trailers = headers_in(Some(trailers))?;
        self.act(py, move |c| c.on_request_trailers(trailers))
    }

    /// Runs `on_response_headers`.
    #[pyo3(signature = (headers, end_of_stream = false))]
    fn on_response_headers(&self, py: Python<'_>, headers: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let headers = headers_in(Some(headers))?;
        self.act(py, move |c| c.on_response_headers(headers, end_of_stream))
    }

    /// Runs `on_response_body` with the next chunk.
    #[pyo3(signature = (chunk, end_of_stream = false))]
    fn on_response_body(&self, py: Python<'_>, chunk: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let chunk = bytes_of(chunk)?;
        self.act(py, move |c| c.on_response_body(&chunk, end_of_stream))
    }

    /// Runs `on_response_trailers`.
    fn on_response_trailers(&self, py: Python<'_>, trailers: &Bound<'_, PyAny>) -> PyResult<PyAction> {
        let trailers = headers_in(Some(trailers))?;
        self.act(py, move |c| c.on_response_trailers(trailers))
    }

    /// Waits up to `timeout` seconds until the plugin resumes the paused `stream` (`"request"` or
    /// `"response"`), e.g. after a callout reply; returns the new action. Raises `TimeoutError`.
    #[pyo3(signature = (stream, timeout))]
    fn wait(&self, py: Python<'_>, stream: &str, timeout: f64) -> PyResult<PyAction> {
        let (stream, timeout) = (stream_type(stream)?, seconds(timeout, "timeout")?);
        self.act(py, move |c| c.wait(stream, timeout))
    }

    /// The request headers as the plugin left them, as `(name, value)` pairs.
    fn request_headers(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        Ok(headers_out(&run(py, &self.inner, |c| c.request_headers())?))
    }

    /// The request trailers as the plugin left them.
    fn request_trailers(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        Ok(headers_out(&run(py, &self.inner, |c| c.request_trailers())?))
    }

    /// The response headers as the plugin left them.
    fn response_headers(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        Ok(headers_out(&run(py, &self.inner, |c| c.response_headers())?))
    }

    /// The response trailers as the plugin left them.
    fn response_trailers(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        Ok(headers_out(&run(py, &self.inner, |c| c.response_trailers())?))
    }

    /// Takes the request body the plugin passed on (buffered chunks, as changed by the plugin).
    fn take_request_body<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &run(py, &self.inner, |c| c.take_request_body())?))
    }

    /// Takes the response body the plugin passed on.
    fn take_response_body<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &run(py, &self.inner, |c| c.take_response_body())?))
    }

    /// Pipes the request body `stream` (a `ReadStream`, consumed) through the plugin and returns the
    /// filtered stream; a pause longer than `pause_timeout` seconds ends it with an error.
    #[pyo3(signature = (stream, pause_timeout = 30.0))]
    fn filter_request_body(&self, py: Python<'_>, stream: &PyReadStream, pause_timeout: f64) -> PyResult<PyReadStream> {
        let timeout = seconds(pause_timeout, "pause_timeout")?;
        let input = stream.take(py)?;
        let out = run(py, &self.inner, move |c| c.filter_request_body(input, timeout))?;
        Ok(PyReadStream::new(out))
    }

    /// Pipes the response body `stream` (consumed) through the plugin, like `filter_request_body`.
    #[pyo3(signature = (stream, pause_timeout = 30.0))]
    fn filter_response_body(&self, py: Python<'_>, stream: &PyReadStream, pause_timeout: f64) -> PyResult<PyReadStream> {
        let timeout = seconds(pause_timeout, "pause_timeout")?;
        let input = stream.take(py)?;
        let out = run(py, &self.inner, move |c| c.filter_response_body(input, timeout))?;
        Ok(PyReadStream::new(out))
    }

    /// The property at `path` (dot-separated, e.g. `"request.path"`) as the plugin sees it, or None.
    fn property<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = run(py, &self.inner, |c| c.property(path))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Sets the property at `path` for this context.
    fn set_property(&self, py: Python<'_>, path: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = bytes_of(value)?;
        run(py, &self.inner, |c| c.set_property(path, &value))
    }

    /// Ends the exchange: `on_log`, then `on_done`. Returns False when the plugin defers its end (it calls
    /// `proxy_done` later). Further calls raise `ContextFinishedError`.
    fn finish(&self, py: Python<'_>) -> PyResult<bool> {
        run(py, &self.inner, |c| c.finish())
    }

    /// The context id.
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.as_ref().map(|c| c.id()).unwrap_or_default())
    }

    fn __repr__(&self) -> String {
        format!("<bcv.HttpContext {}>", if self.is_open() { "open" } else { "closed" })
    }
});

/// One TCP connection through a plugin: `on_new_connection`, `on_downstream_data`, `on_upstream_data`,
/// the closes, and the data the plugin passes on (`take_downstream_data`, `take_upstream_data`).
#[pyclass(frozen, name = "TcpContext", module = "bcv")]
pub(crate) struct PyTcpContext {
    inner: Mutex<Option<TcpContext>>,
}

impl Holder for PyTcpContext {
    type Inner = TcpContext;
}

impl PyTcpContext {
    fn act(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&TcpContext) -> Result<FilterAction, ProxyError> + Send,
    ) -> PyResult<PyAction> {
        let action = run(py, &self.inner, call)?;
        action_out(py, action)
    }
}

closable!(PyTcpContext {
    /// Runs `on_new_connection`.
    fn on_new_connection(&self, py: Python<'_>) -> PyResult<PyAction> {
        self.act(py, |c| c.on_new_connection())
    }

    /// Runs `on_downstream_data` with data from the client.
    #[pyo3(signature = (data, end_of_stream = false))]
    fn on_downstream_data(&self, py: Python<'_>, data: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let data = bytes_of(data)?;
        self.act(py, move |c| c.on_downstream_data(&data, end_of_stream))
    }

    /// Runs `on_upstream_data` with data from the server.
    #[pyo3(signature = (data, end_of_stream = false))]
    fn on_upstream_data(&self, py: Python<'_>, data: &Bound<'_, PyAny>, end_of_stream: bool) -> PyResult<PyAction> {
        let data = bytes_of(data)?;
        self.act(py, move |c| c.on_upstream_data(&data, end_of_stream))
    }

    /// Runs `on_downstream_connection_close`; `peer` is `"local"`, `"remote"` or `"unknown"`.
    #[pyo3(signature = (peer = "remote"))]
    fn on_downstream_close(&self, py: Python<'_>, peer: &str) -> PyResult<()> {
        let peer = peer_type(peer)?;
        run(py, &self.inner, move |c| c.on_downstream_close(peer))
    }

    /// Runs `on_upstream_connection_close`.
    #[pyo3(signature = (peer = "remote"))]
    fn on_upstream_close(&self, py: Python<'_>, peer: &str) -> PyResult<()> {
        let peer = peer_type(peer)?;
        run(py, &self.inner, move |c| c.on_upstream_close(peer))
    }

    /// Takes the client data the plugin passed on (toward the server).
    fn take_downstream_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &run(py, &self.inner, |c| c.take_downstream_data())?))
    }

    /// Takes the server data the plugin passed on (toward the client).
    fn take_upstream_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &run(py, &self.inner, |c| c.take_upstream_data())?))
    }

    /// Waits up to `timeout` seconds until the plugin resumes the paused `stream` (`"downstream"` or
    /// `"upstream"`). Raises `TimeoutError`.
    fn wait(&self, py: Python<'_>, stream: &str, timeout: f64) -> PyResult<PyAction> {
        let (stream, timeout) = (stream_type(stream)?, seconds(timeout, "timeout")?);
        self.act(py, move |c| c.wait(stream, timeout))
    }

    /// The property at `path` as the plugin sees it, or None.
    fn property<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = run(py, &self.inner, |c| c.property(path))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Sets the property at `path` for this connection.
    fn set_property(&self, py: Python<'_>, path: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = bytes_of(value)?;
        run(py, &self.inner, |c| c.set_property(path, &value))
    }

    /// Ends the connection's context (`on_done`); False when the plugin defers it.
    fn finish(&self, py: Python<'_>) -> PyResult<bool> {
        run(py, &self.inner, |c| c.finish())
    }

    /// The context id.
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.as_ref().map(|c| c.id()).unwrap_or_default())
    }

    fn __repr__(&self) -> String {
        format!("<bcv.TcpContext {}>", if self.is_open() { "open" } else { "closed" })
    }
});

/// Registers the Proxy-Wasm classes in the extension module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyProxyHost>()?;
    m.add_class::<PyProxyModule>()?;
    m.add_class::<PyProxyVm>()?;
    m.add_class::<PyProxyPlugin>()?;
    m.add_class::<PyHttpContext>()?;
    m.add_class::<PyTcpContext>()?;
    m.add_class::<PyAction>()?;
    m.add_class::<PyLocalResponse>()?;
    m.add_class::<PyLogRecord>()?;
    m.add_class::<PyCallout>()?;
    Ok(())
}
