//! `edge_filter`: the HTTP filter that examples/python/proxy_gateway.py runs in front of its upstream.
//!
//! Plugin configuration, one `key=value` per line (all optional):
//! - `deny_prefix=/admin` — requests whose path starts with it get a local 403 and never reach the upstream;
//! - `served_by=bcv-edge` — the value of the `x-served-by` header added to every response.
//!
//! Every forwarded request gets `x-edge-request: <n>` (n counts the requests of all VMs, kept in the metric
//! `edge_requests_total`) and loses any `x-internal-*` header a client sent; every response loses `server`.
//! `on_log` writes one access-log line per request.

use std::rc::Rc;

use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EdgeRoot::default()) });
}}

/// The filter's settings, parsed once in `on_configure`.
#[derive(Clone, Debug)]
struct Settings {
    deny_prefix: Option<String>,
    served_by: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { deny_prefix: None, served_by: "bcv-edge".to_owned() }
    }
}

impl Settings {
    /// Parses `key=value` lines; unknown keys are logged and ignored.
    fn parse(text: &str) -> Settings {
        let mut settings = Settings::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match line.split_once('=') {
                Some(("deny_prefix", value)) => settings.deny_prefix = Some(value.trim().to_owned()),
                Some(("served_by", value)) => settings.served_by = value.trim().to_owned(),
                _ => warn!("edge_filter: ignoring configuration line {line:?}"),
            }
        }
        settings
    }
}

#[derive(Default)]
struct EdgeRoot {
    settings: Rc<Settings>,
    requests_metric: u32,
}

impl Context for EdgeRoot {}

impl RootContext for EdgeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self.get_plugin_configuration().map(|b| String::from_utf8_lossy(&b).into_owned());
        self.settings = Rc::new(Settings::parse(text.as_deref().unwrap_or("")));
        match hostcalls::define_metric(MetricType::Counter, "edge_requests_total") {
            Ok(id) => self.requests_metric = id,
            Err(status) => {
                warn!("edge_filter: cannot define its metric: {status:?}");
                return false;
            }
        }
        info!("edge_filter configured: {:?}", self.settings);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EdgeRequest {
            settings: self.settings.clone(),
            requests_metric: self.requests_metric,
            method: String::new(),
            path: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct EdgeRequest {
    settings: Rc<Settings>,
    requests_metric: u32,
    method: String,
    path: String,
}

impl Context for EdgeRequest {}

impl HttpContext for EdgeRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.method = self.get_http_request_header(":method").unwrap_or_default();
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(prefix) = self.settings.deny_prefix.as_deref().filter(|p| self.path.starts_with(p)) {
            info!("edge_filter: denied {} (prefix {prefix})", self.path);
            self.send_http_response(
                403,
                vec![("content-type", "text/plain"), ("x-served-by", &self.settings.served_by)],
                Some(b"forbidden by the edge filter\n"),
            );
            return Action::Pause;
        }
        for (name, _) in self.get_http_request_headers() {
            if name.starts_with("x-internal-") {
                self.set_http_request_header(&name, None);
            }
        }
        let _ = hostcalls::increment_metric(self.requests_metric, 1);
        let count = hostcalls::get_metric(self.requests_metric).unwrap_or(0);
        self.set_http_request_header("x-edge-request", Some(&count.to_string()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("server", None);
        self.set_http_response_header("x-served-by", Some(&self.settings.served_by));
        Action::Continue
    }

    fn on_log(&mut self) {
        let status = self.get_http_response_header(":status").unwrap_or_else(|| "-".to_owned());
        info!("access: {} {} {status}", self.method, self.path);
    }
}
