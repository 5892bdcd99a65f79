//! The Proxy-Wasm host: runs proxy-wasm plugins (ABI 0.2.1, 0.2.0 and 0.1.0) on wasmtime, for an
//! application that filters HTTP requests or TCP connections.
//!
//! A [`ProxyHost`] owns the engine and the stores VMs share. [`ProxyHost::load_module`] compiles and checks
//! a module; [`Vm::start`] instantiates it; [`Vm::add_plugin`] adds a plugin (a root context) after a
//! canary run; [`Plugin::http_context`] / [`Plugin::tcp_context`] create stream contexts that the
//! embedder feeds and reads back. Callouts, properties, foreign functions and logs reach the embedder
//! through [`Services`].
//!
//! Every object is a node of the handle runtime (`host → vm → plugin → context`): dropping handles in any
//! order is safe and closing a parent finishes its children. A trap or an exceeded limit (memory cap,
//! per-callback CPU deadline) marks that VM failed, never the host; each plugin then fails open or closed.
//!
//! ```no_run
//! use bcv_core::proxy::{FilterAction, HeaderMap, HostConfig, PluginConfig, ProxyHost, Vm, VmConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = ProxyHost::new(HostConfig::default())?;
//! let module = host.load_module("filter", &std::fs::read("filter.wasm")?)?;
//! let vm = Vm::start(&host, &module, VmConfig::default())?;
//! let plugin = vm.add_plugin(PluginConfig { name: "filter".into(), ..Default::default() })?;
//! let http = plugin.http_context()?;
//! let headers: HeaderMap = [(":method", "GET"), (":path", "/"), (":authority", "example")].into_iter().collect();
//! match http.on_request_headers(headers, true)? {
//!     FilterAction::Continue => println!("forward {:?}", http.request_headers()?),
//!     other => println!("plugin says {other:?}"),
//! }
//! # Ok(()) }
//! ```

mod abi;
mod context;
mod error;
mod headers;
mod host;
mod metrics;
mod module;
mod plugin;
mod properties;
mod services;
mod shared;
mod state;
mod types;
mod vm;

pub use context::{FilterAction, HttpContext, TcpContext};
pub use error::{FailReason, ProxyError, ProxyResult};
pub use headers::{HeaderMap, MapDecodeError, MapLimits, split_property_path};
pub use host::{HostConfig, ProxyHost};
pub use metrics::MetricSnapshot;
pub use module::PluginModule;
pub use plugin::{Plugin, PluginConfig};
pub use services::{
    CalloutRejected, CalloutReply, CalloutResponse, ForeignError, ForeignFunction, GrpcCallout, GrpcResponse,
    GrpcStreamOpen, GrpcStreamPeer, GrpcStreamSink, HttpCallout, LogRecord, PropertyRequest, Services,
};
pub use shared::SharedValue;
pub use state::LocalResponse;
pub use types::{AbiVersion, BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType};
pub use vm::{RestartPolicy, Vm, VmConfig};
