//! `testkit`: one Proxy-Wasm module, built on the crates.io `proxy-wasm` SDK (ABI 0.2.1), with many behaviours
//! for bcv's Proxy-Wasm host tests.
//!
//! Each plugin (root context) picks a *mode* from its plugin configuration, which is UTF-8 text: the first
//! whitespace-separated word is the mode, the rest are `key=value` arguments, e.g. `tick period_ms=10 stop_after=3`.
//! An empty configuration means `headers`; an unknown mode logs a warning and behaves as `headers`.
//!
//! Root-level behaviour, whatever the mode:
//! - VM configuration `fail-vm-start` makes `on_vm_start` fail; otherwise it logs `vm_start: <vm config>`.
//! - Mode `fail-configure` makes `on_configure` fail; otherwise it logs `configure: <plugin config>`.
//! - `proxy_on_foreign_function` on the root logs `foreign_function: <id> <args size>`.
//!
//! Modes (see the `Mode` variants for what each one does): headers, add-header, body, deny, callout, grpc,
//! queue-producer, queue-consumer, cas, tick, metrics, foreign, properties, tcp, loop, bomb, panic, oob,
//! done-later, env.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use log::{debug, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, Bytes, ContextType, LogLevel, MetricType, PeerType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Timeout of every HTTP and gRPC callout.
const CALLOUT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a CAS update of shared data is retried before giving up.
const CAS_ATTEMPTS: usize = 100;

/// HTTP contexts of mode `done-later` whose `on_done` returned false; the root's `on_tick` finishes them.
static PENDING_DONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Where mode `bomb` keeps its allocations alive.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// What a plugin does, chosen by the first word of its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Edits request headers, counts requests (`requests_total`), adds a response header, logs in `on_log`.
    Headers,
    /// Only adds `x-bench: 1` (for benchmarks).
    AddHeader,
    /// Buffers and upper-cases the request body, adds an `x-body-length` trailer, appends to the response body.
    Body,
    /// Replies 403 locally when the request has an `x-deny` header.
    Deny,
    /// Authorizes the request through an HTTP callout (arg `upstream`, default `auth`).
    Callout,
    /// Sends the request path through a gRPC call and puts the reply in a header.
    Grpc,
    /// Enqueues the request path on shared queue `events` (resolved in arg `vm`, default "").
    QueueProducer,
    /// Registers queue `events`, drains it when ready, appends each item to shared data `consumed`.
    QueueConsumer,
    /// Increments shared data `counter` with compare-and-swap (and one retry).
    Cas,
    /// Counts ticks (args `period_ms`, `stop_after`, `callout`).
    Tick,
    /// Exercises a counter, a gauge and a histogram.
    Metrics,
    /// Calls the host's foreign function `reverse`.
    Foreign,
    /// Reads and writes properties.
    Properties,
    /// A TCP (stream) filter.
    Tcp,
    /// Spins forever in `on_request_headers`.
    Loop,
    /// Allocates memory until the module runs out.
    Bomb,
    /// Panics in `on_request_headers`.
    Panic,
    /// Calls host functions with out-of-bounds pointers.
    Oob,
    /// `on_done` returns false; the root finishes the context on its next tick.
    DoneLater,
    /// Reports environment variables and the clock, and writes to stdout/stderr.
    Env,
}

impl Mode {
    fn parse(word: &str) -> Option<Mode> {
        Some(match word {
            "headers" => Mode::Headers,
            "add-header" => Mode::AddHeader,
            "body" => Mode::Body,
            "deny" => Mode::Deny,
            "callout" => Mode::Callout,
            "grpc" => Mode::Grpc,
            "queue-producer" => Mode::QueueProducer,
            "queue-consumer" => Mode::QueueConsumer,
            "cas" => Mode::Cas,
            "tick" => Mode::Tick,
            "metrics" => Mode::Metrics,
            "foreign" => Mode::Foreign,
            "properties" => Mode::Properties,
            "tcp" => Mode::Tcp,
            "loop" => Mode::Loop,
            "bomb" => Mode::Bomb,
            "panic" => Mode::Panic,
            "oob" => Mode::Oob,
            "done-later" => Mode::DoneLater,
            "env" => Mode::Env,
            _ => return None,
        })
    }
}

/// A metric defined by the plugin. Failures to update it are logged, not fatal.
#[derive(Clone, Copy, Debug)]
struct Metric {
    id: u32,
}

impl Metric {
    fn define(kind: MetricType, name: &str) -> Metric {
        // The SDK itself panics on any status but OK.
        let id = hostcalls::define_metric(kind, name).expect("define_metric");
        Metric { id }
    }

    fn increment(self, delta: i64) {
        if let Err(status) = hostcalls::increment_metric(self.id, delta) {
            warn!("increment_metric({}) failed: {status:?}", self.id);
        }
    }

    fn record(self, value: u64) {
        if let Err(status) = hostcalls::record_metric(self.id, value) {
            warn!("record_metric({}) failed: {status:?}", self.id);
        }
    }

    fn value(self) -> Result<u64, Status> {
        hostcalls::get_metric(self.id)
    }
}

/// The metrics a plugin defines in `on_configure`, depending on its mode.
#[derive(Default, Debug)]
struct Metrics {
    /// The mode's counter: `requests_total`, `consumed_total`, `ticks_total`, `tcp_bytes` or `m_counter`.
    counter: Option<Metric>,
    /// `m_gauge` (mode `metrics`).
    gauge: Option<Metric>,
    /// `m_hist` (mode `metrics`).
    histogram: Option<Metric>,
}

impl Metrics {
    fn define(mode: Mode) -> Metrics {
        let counter = |name| Some(Metric::define(MetricType::Counter, name));
        match mode {
            Mode::Headers => Metrics { counter: counter("requests_total"), ..Metrics::default() },
            Mode::QueueConsumer => Metrics { counter: counter("consumed_total"), ..Metrics::default() },
            Mode::Tick => Metrics { counter: counter("ticks_total"), ..Metrics::default() },
            Mode::Tcp => Metrics { counter: counter("tcp_bytes"), ..Metrics::default() },
            Mode::Metrics => Metrics {
                counter: counter("m_counter"),
                gauge: Some(Metric::define(MetricType::Gauge, "m_gauge")),
                histogram: Some(Metric::define(MetricType::Histogram, "m_hist")),
            },
            _ => Metrics::default(),
        }
    }

    /// Increments the mode's counter, if it has one.
    fn count(&self, delta: i64) {
        if let Some(counter) = self.counter {
            counter.increment(delta);
        }
    }
}

/// A parsed plugin configuration, shared by the root context and the contexts it creates.
#[derive(Debug)]
struct Config {
    mode: Mode,
    args: HashMap<String, String>,
    metrics: Metrics,
}

impl Default for Config {
    fn default() -> Self {
        Config { mode: Mode::Headers, args: HashMap::new(), metrics: Metrics::default() }
    }
}

impl Config {
    fn arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }

    /// A numeric argument; a value that is not a number is reported and ignored.
    fn number_arg(&self, key: &str) -> Option<u64> {
        let value = self.arg(key)?;
        match value.parse() {
            Ok(number) => Some(number),
            Err(_) => {
                warn!("argument {key}={value} is not a number; ignored");
                None
            }
        }
    }
}

/// Splits `word key=value ...` into the mode word and the arguments. A bare `key` means `key=` (empty value).
fn parse_configuration(text: &str) -> (&str, HashMap<String, String>) {
    let mut words = text.split_whitespace();
    let mode = words.next().unwrap_or("");
    let args = words
        .map(|word| {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    (mode, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Appends `suffix` to shared data `key`, retrying on CAS mismatch (another VM may write concurrently).
fn append_shared_data(key: &str, suffix: &[u8]) {
    for _ in 0..CAS_ATTEMPTS {
        // The SDK panics on statuses other than OK and NOT_FOUND.
        let (current, cas) = hostcalls::get_shared_data(key).expect("get_shared_data");
        let mut value = current.unwrap_or_default();
        value.extend_from_slice(suffix);
        // A missing key has no CAS (None = 0 = unconditional write).
        match hostcalls::set_shared_data(key, Some(&value), cas) {
            Ok(()) => return,
            // Lost a race with another writer: read again.
            Err(Status::CasMismatch) => {}
            Err(status) => {
                warn!("set_shared_data({key}) failed: {status:?}");
                return;
            }
        }
    }
    warn!("set_shared_data({key}): still a CAS mismatch after {CAS_ATTEMPTS} attempts; gave up");
}

/// The plugin: one per root context.
#[derive(Default)]
struct Root {
    config: Rc<Config>,
    /// Ticks seen so far (mode `tick`).
    ticks: u64,
    /// The token of the callout dispatched on the first tick (mode `tick` with arg `callout`).
    tick_callout: Option<u32>,
    /// The id of shared queue `events`, registered in `on_configure` (mode `queue-consumer`).
    queue_id: Option<u32>,
}

impl Root {
    /// Mode `tick`: count the tick, stop after `stop_after`, dispatch the `callout` on the first tick.
    fn tick(&mut self) {
        self.config.metrics.count(1);
        self.ticks += 1;
        if self.config.number_arg("stop_after") == Some(self.ticks) {
            self.set_tick_period(Duration::ZERO);
        }
        if self.ticks == 1
            && let Some(upstream) = self.config.arg("callout")
        {
            let headers = vec![(":method", "GET"), (":path", "/tick"), (":authority", "svc")];
            match self.dispatch_http_call(upstream, headers, None, vec![], CALLOUT_TIMEOUT) {
                Ok(token) => self.tick_callout = Some(token),
                Err(status) => {
                    warn!("tick callout to {upstream} not dispatched: {status:?}");
                    self.store_tick_callout(b"failed");
                }
            }
        }
    }

    fn store_tick_callout(&self, value: &[u8]) {
        if let Err(status) = self.set_shared_data("tick_callout", Some(value), None) {
            warn!("set_shared_data(tick_callout) failed: {status:?}");
        }
    }

    /// Mode `done-later`: finish every HTTP context whose `on_done` returned false.
    fn finish_pending_contexts(&self) {
        let pending = std::mem::take(&mut *PENDING_DONE.lock().unwrap());
        for context_id in pending {
            // proxy_done acts on the current context, so switch to the deferred one first.
            match hostcalls::set_effective_context(context_id) {
                Ok(()) => {
                    // The SDK panics on any status but OK.
                    hostcalls::done().expect("proxy_done");
                    info!("deferred done {context_id}");
                }
                Err(status) => warn!("deferred done {context_id}: set_effective_context failed: {status:?}"),
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        if self.tick_callout != Some(token_id) {
            return;
        }
        self.tick_callout = None;
        // No headers means the call failed or timed out.
        if num_headers == 0 {
            self.store_tick_callout(b"failed");
        } else {
            let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
            self.store_tick_callout(&body);
        }
    }

    fn on_foreign_function(&mut self, function_id: u32, arguments_size: usize) {
        info!("foreign_function: {function_id} {arguments_size}");
        match hostcalls::get_buffer(BufferType::CallData, 0, arguments_size) {
            Ok(arguments) => debug!("foreign_function arguments: {}", text(&arguments.unwrap_or_default())),
            Err(status) => warn!("foreign_function arguments unreadable: {status:?}"),
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let vm_config = text(&self.get_vm_configuration().unwrap_or_default());
        if vm_config == "fail-vm-start" {
            return false;
        }
        info!("vm_start: {vm_config}");
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config_text = text(&self.get_plugin_configuration().unwrap_or_default());
        let (mode_word, args) = parse_configuration(&config_text);
        if mode_word == "fail-configure" {
            return false;
        }
        // "configure-twice": configures (as "headers") for the canary and the plugin itself, then refuses — a
        // VM restart that cannot configure this plugin again. Counted in shared data, which outlives instances.
        if mode_word == "configure-twice" {
            let (seen, cas) = self.get_shared_data("configure-twice");
            let count = seen.map_or(0, |v| v.first().copied().unwrap_or(0)) + 1;
            if self.set_shared_data("configure-twice", Some(&[count]), cas).is_err() || count > 2 {
                return false;
            }
        }
        info!("configure: {config_text}");

        let mode = match Mode::parse(mode_word) {
            Some(mode) => mode,
            None if mode_word.is_empty() => Mode::Headers,
            None => {
                warn!("unknown mode {mode_word}");
                Mode::Headers
            }
        };
        let config = Config { mode, args, metrics: Metrics::define(mode) };

        match mode {
            Mode::QueueConsumer => self.queue_id = Some(self.register_shared_queue("events")),
            Mode::Tick => {
                let period_ms = config.number_arg("period_ms").unwrap_or(10);
                self.set_tick_period(Duration::from_millis(period_ms));
            }
            Mode::DoneLater => self.set_tick_period(Duration::from_millis(10)),
            _ => {}
        }

        self.config = Rc::new(config);
        self.ticks = 0;
        true
    }

    fn on_tick(&mut self) {
        match self.config.mode {
            Mode::Tick => self.tick(),
            Mode::DoneLater => self.finish_pending_contexts(),
            _ => {}
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if self.config.mode != Mode::QueueConsumer {
            return;
        }
        if self.queue_id != Some(queue_id) {
            warn!("on_queue_ready for queue {queue_id}, but this plugin registered {:?}", self.queue_id);
        }
        loop {
            let item = match self.dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => item,
                // Empty (the SDK also maps an empty item to None).
                Ok(None) => break,
                Err(status) => {
                    warn!("dequeue_shared_queue({queue_id}) failed: {status:?}");
                    break;
                }
            };
            self.config.metrics.count(1);
            let item = text(&item);
            info!("consumed: {item}");
            append_shared_data("consumed", format!("{item};").as_bytes());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.config.mode == Mode::Tcp { ContextType::StreamContext } else { ContextType::HttpContext })
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { context_id, config: Rc::clone(&self.config), body_length: 0 }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Tcp { config: Rc::clone(&self.config) }))
    }
}

/// An HTTP stream context; what it does depends on its plugin's mode.
struct Http {
    context_id: u32,
    config: Rc<Config>,
    /// Size of the request body as last reported by `on_http_request_body` (mode `body`).
    body_length: usize,
}

impl Http {
    fn request_path(&self) -> Option<String> {
        self.get_http_request_header(":path")
    }

    fn request_path_bytes(&self) -> Bytes {
        self.get_http_request_header_bytes(":path").unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: &str) {
        self.set_http_request_header(name, Some(value));
    }

    fn headers(&self, num_headers: usize) -> Action {
        self.add_http_request_header("x-added", "yes");
        self.set_request_header("x-replace", "replaced");
        self.remove_http_request_header("x-remove");
        self.set_request_header("x-count", &num_headers.to_string());
        self.set_request_header("x-path", &self.request_path().unwrap_or_default());
        self.config.metrics.count(1);
        Action::Continue
    }

    fn deny(&self) -> Action {
        if self.get_http_request_header("x-deny").is_some() {
            self.send_http_response(403, vec![("x-denied-by", "bcv")], Some(b"denied"));
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn callout(&self) -> Action {
        let upstream = self.config.arg("upstream").unwrap_or("auth");
        let token = self.get_http_request_header("authorization").unwrap_or_default();
        let headers =
            vec![(":method", "GET"), (":path", "/check"), (":authority", "auth.local"), ("x-token", token.as_str())];
        if let Err(status) = self.dispatch_http_call(upstream, headers, None, vec![], CALLOUT_TIMEOUT) {
            warn!("callout to {upstream} not dispatched: {status:?}");
            self.send_http_response(500, vec![], Some(b"dispatch failed"));
        }
        // Either way the request waits: for the callout's answer, or for the local reply.
        Action::Pause
    }

    fn grpc(&self) -> Action {
        let path = self.request_path_bytes();
        let metadata: Vec<(&str, &[u8])> = vec![("x-md", b"1")];
        let call = self.dispatch_grpc_call("grpc-upstream", "svc.Echo", "Say", metadata, Some(&path), CALLOUT_TIMEOUT);
        if let Err(status) = call {
            warn!("grpc call not dispatched: {status:?}");
            self.send_http_response(500, vec![], Some(b"dispatch failed"));
        }
        Action::Pause
    }

    fn queue_producer(&self) -> Action {
        let vm_id = self.config.arg("vm").unwrap_or("");
        let outcome = match self.resolve_shared_queue(vm_id, "events") {
            None => "missing",
            Some(queue_id) => match self.enqueue_shared_queue(queue_id, Some(&self.request_path_bytes())) {
                Ok(()) => "enqueued",
                Err(status) => {
                    warn!("enqueue_shared_queue({queue_id}) failed: {status:?}");
                    "error"
                }
            },
        };
        self.set_request_header("x-queue", outcome);
        Action::Continue
    }

    /// Reads shared data `counter`: its value (missing or not a number → 0) and CAS.
    fn read_counter(&self) -> (u64, Option<u32>) {
        let (value, cas) = self.get_shared_data("counter");
        let value = value.map_or(0, |bytes| text(&bytes).trim().parse().unwrap_or(0));
        (value, cas)
    }

    fn cas(&self) -> Action {
        let (value, cas) = self.read_counter();
        if self.get_http_request_header("x-hook").is_some() {
            // The embedder's `cas_hook` changes `counter` behind our back, so the write below must mismatch.
            let _ = self.call_foreign_function("cas_hook", None);
        }
        let stored = match self.set_shared_data("counter", Some((value + 1).to_string().as_bytes()), cas) {
            Ok(()) => {
                self.set_request_header("x-cas", "ok");
                Some(value + 1)
            }
            Err(_) => {
                self.set_request_header("x-cas", "mismatch");
                let (value, cas) = self.read_counter();
                match self.set_shared_data("counter", Some((value + 1).to_string().as_bytes()), cas) {
                    Ok(()) => {
                        self.set_request_header("x-cas-retry", "ok");
                        Some(value + 1)
                    }
                    Err(_) => {
                        self.set_request_header("x-cas-retry", "mismatch");
                        None
                    }
                }
            }
        };
        // When both writes lost, report what is stored now.
        let stored = stored.unwrap_or_else(|| self.read_counter().0);
        self.set_request_header("x-counter", &stored.to_string());
        Action::Continue
    }

    fn metrics(&self, num_headers: usize) -> Action {
        let metrics = &self.config.metrics;
        metrics.count(1);
        if let Some(gauge) = metrics.gauge {
            gauge.record(num_headers as u64);
        }
        if let Some(histogram) = metrics.histogram {
            histogram.record(self.request_path_bytes().len() as u64);
        }
        let value = match metrics.counter.map(Metric::value) {
            Some(Ok(value)) => value.to_string(),
            Some(Err(status)) => format!("error {status:?}"),
            None => "none".to_owned(),
        };
        self.set_request_header("x-counter-value", &value);
        Action::Continue
    }

    fn foreign(&self) -> Action {
        let value = match self.call_foreign_function("reverse", Some(&self.request_path_bytes())) {
            Ok(Some(result)) => text(&result),
            Ok(None) => "empty".to_owned(),
            Err(Status::NotFound) => "not-found".to_owned(),
            Err(_) => "error".to_owned(),
        };
        self.set_request_header("x-foreign", &value);
        Action::Continue
    }

    /// A property as text: `none` when absent, `error <status>` when the host refuses.
    fn property_text(&self, path: Vec<&str>) -> String {
        match hostcalls::get_property(path) {
            Ok(Some(value)) => text(&value),
            Ok(None) => "none".to_owned(),
            Err(status) => format!("error {status:?}"),
        }
    }

    fn properties(&self) -> Action {
        self.set_request_header("x-prop-path", &self.property_text(vec!["request", "path"]));
        self.set_request_header("x-plugin-name", &self.property_text(vec!["plugin_name"]));
        self.set_property(vec!["bcv", "seen"], Some(b"yes"));
        self.set_request_header("x-prop-seen", &self.property_text(vec!["bcv", "seen"]));
        self.set_request_header("x-prop-missing", &self.property_text(vec!["missing"]));
        Action::Continue
    }

    fn spin_forever(&self) -> ! {
        let mut spins: u64 = 0;
        loop {
            // black_box keeps the optimizer from proving the loop useless.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn allocate_forever(&self) -> ! {
        loop {
            // vec![1; n] writes every byte, so the pages are really touched.
            let chunk = vec![1u8; 1 << 20];
            HOARD.lock().unwrap().push(chunk);
        }
    }

    fn out_of_bounds(&self) -> Action {
        // SAFETY: the guest never dereferences the bad pointers itself; they only go to the host, which must
        // reject them with INVALID_MEMORY_ACCESS. The other pointers (":path", "v") are valid.
        let statuses = unsafe {
            [
                oob::proxy_log(2, 0xFFFF_FFF0 as *const u8, 64),
                oob::proxy_get_header_map_value(
                    0,
                    b":path".as_ptr(),
                    5,
                    0xFFFF_FFF8 as *mut *const u8,
                    0xFFFF_FFFC as *mut usize,
                ),
                oob::proxy_add_header_map_value(0, 0x7FFF_FFF0 as *const u8, 100, b"v".as_ptr(), 1),
            ]
        };
        let statuses = statuses.map(|status| status.to_string()).join(",");
        self.set_request_header("x-oob", &statuses);
        Action::Continue
    }

    fn env(&self) -> Action {
        let var = |name| std::env::var(name).unwrap_or_else(|_| "absent".to_owned());
        self.set_request_header("x-env", &var("BCV_PLUGIN_ENV"));
        self.set_request_header("x-home", &var("HOME"));
        // 2020-01-01T00:00:00Z
        let year_2020 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
        self.set_request_header("x-time-ok", if SystemTime::now() > year_2020 { "yes" } else { "no" });
        println!("stdout from plugin");
        eprintln!("stderr from plugin");
        Action::Continue
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, _token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        if self.config.mode != Mode::Callout {
            return;
        }
        // No headers means the call failed or timed out.
        if num_headers == 0 {
            self.send_http_response(503, vec![], Some(b"callout failed"));
            return;
        }
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        if status.as_deref() == Some("200") {
            self.set_request_header("x-auth-body", &text(&body));
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![], Some(b"forbidden"));
        }
    }

    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, response_size: usize) {
        if self.config.mode != Mode::Grpc {
            return;
        }
        if status_code == 0 {
            let reply = self.get_grpc_call_response_body(0, response_size).unwrap_or_default();
            self.set_request_header("x-grpc-reply", &text(&reply));
            self.resume_http_request();
        } else {
            self.send_http_response(502, vec![], Some(format!("grpc status {status_code}").as_bytes()));
        }
    }

    fn on_done(&mut self) -> bool {
        if self.config.mode == Mode::DoneLater {
            PENDING_DONE.lock().unwrap().push(self.context_id);
            return false;
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, num_headers: usize, _end_of_stream: bool) -> Action {
        match self.config.mode {
            Mode::Headers => self.headers(num_headers),
            Mode::AddHeader => {
                self.add_http_request_header("x-bench", "1");
                Action::Continue
            }
            Mode::Deny => self.deny(),
            Mode::Callout => self.callout(),
            Mode::Grpc => self.grpc(),
            Mode::QueueProducer => self.queue_producer(),
            Mode::Cas => self.cas(),
            Mode::Metrics => self.metrics(num_headers),
            Mode::Foreign => self.foreign(),
            Mode::Properties => self.properties(),
            Mode::Loop => self.spin_forever(),
            Mode::Bomb => self.allocate_forever(),
            Mode::Panic => panic!("testkit panic on purpose"),
            Mode::Oob => self.out_of_bounds(),
            Mode::Env => self.env(),
            Mode::Body | Mode::QueueConsumer | Mode::Tick | Mode::Tcp | Mode::DoneLater => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.config.mode != Mode::Body {
            return Action::Continue;
        }
        self.body_length = body_size;
        if !end_of_stream {
            // Keep buffering until the whole body is there.
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.set_http_request_body(0, body_size, &body.to_ascii_uppercase());
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.config.mode == Mode::Body {
            self.add_http_request_trailer("x-body-length", &self.body_length.to_string());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.config.mode == Mode::Headers {
            self.add_http_response_header("x-response-added", "yes");
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Chunks stream through untouched; the last one gets a suffix (start = its size: append).
        if self.config.mode == Mode::Body && end_of_stream {
            self.set_http_response_body(body_size, 0, b"\n-- filtered");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        match self.config.mode {
            Mode::Headers => {
                let path = self.request_path().unwrap_or_else(|| "-".to_owned());
                let status = self.get_http_response_header(":status").unwrap_or_else(|| "-".to_owned());
                info!("log: {path} {status}");
            }
            Mode::DoneLater => info!("log: deferred"),
            _ => {}
        }
    }
}

/// A TCP stream context (mode `tcp`).
struct Tcp {
    config: Rc<Config>,
}

impl Context for Tcp {}

impl StreamContext for Tcp {
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        if data.windows(5).any(|window| window == b"BLOCK") {
            self.close_downstream();
            return Action::Pause;
        }
        self.set_downstream_data(0, data_size, &data.to_ascii_uppercase());
        self.config.metrics.count(data_size as i64);
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        // start = 0, size = 0: prepend. An empty chunk (a bare end of stream) is left empty.
        if data_size > 0 {
            self.set_upstream_data(0, 0, b"[up]");
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer_type: PeerType) {
        info!("downstream closed {}", peer_type as u32);
    }

    fn on_upstream_close(&mut self, peer_type: PeerType) {
        info!("upstream closed {}", peer_type as u32);
    }

    fn on_log(&mut self) {
        info!("tcp log");
    }
}

/// Raw host imports for mode `oob`, declared with plain integer types so that arbitrary statuses and pointers
/// can pass. They name the same `env` imports the SDK declares (with identical wasm signatures).
mod oob {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            return_value: *mut *const u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
    }
}
