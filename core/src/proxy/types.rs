//! The ABI's enumerations (`PROXY-WASM-ABI.md` §1c) as Rust types, with their wire values.

/// A status returned by every `proxy_*` host function (`proxy_status_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, buffer, context, queue or metric does not exist.
    NotFound = 1,
    /// An argument is out of range or of the wrong kind.
    BadArgument = 2,
    /// A value could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed (e.g. an unknown gRPC upstream).
    ParseFailure = 4,
    /// A pointer or length names memory outside the guest's linear memory.
    InvalidMemoryAccess = 6,
    /// The shared queue is empty.
    Empty = 7,
    /// The compare-and-swap value of shared data did not match.
    CasMismatch = 8,
    /// The host failed for a reason of its own.
    InternalFailure = 10,
    /// The host does not implement the operation.
    Unimplemented = 12,
}

impl Status {
    /// The wire value.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Log levels (`proxy_log_level_t`), ordered from the most to the least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum LogLevel {
    /// Tracing detail.
    Trace = 0,
    /// Debugging detail.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something unexpected that the plugin handled.
    Warn = 3,
    /// An error.
    Error = 4,
    /// A failure the plugin cannot continue from.
    Critical = 5,
}

impl LogLevel {
    /// The level with wire value `v`.
    pub fn from_wire(v: i32) -> Option<LogLevel> {
        Some(match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// Lower-case name (`"info"`).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// Buffers a plugin can read and write (`proxy_buffer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// The request body chunk being filtered.
    HttpRequestBody,
    /// The response body chunk being filtered.
    HttpResponseBody,
    /// Bytes from the downstream (client) side of a TCP connection.
    DownstreamData,
    /// Bytes from the upstream (server) side of a TCP connection.
    UpstreamData,
    /// The body of an HTTP callout's response.
    HttpCallResponseBody,
    /// The message of a gRPC callout.
    GrpcCallMessage,
    /// The VM configuration, during `on_vm_start`.
    VmConfiguration,
    /// The plugin configuration, during `on_configure`.
    PluginConfiguration,
    /// The arguments of a foreign function call into the plugin.
    ForeignFunctionArguments,
}

impl BufferType {
    /// The buffer type with wire value `v`.
    pub fn from_wire(v: i32) -> Option<BufferType> {
        Some(match v {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcCallMessage,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            _ => return None,
        })
    }
}

/// Header maps a plugin can read and write (`proxy_map_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// Request headers (with the `:method`, `:path`, `:authority`, `:scheme` pseudo-headers).
    HttpRequestHeaders,
    /// Request trailers.
    HttpRequestTrailers,
    /// Response headers (with `:status`).
    HttpResponseHeaders,
    /// Response trailers.
    HttpResponseTrailers,
    /// Initial metadata of a gRPC callout's response.
    GrpcInitialMetadata,
    /// Trailing metadata of a gRPC callout's response.
    GrpcTrailingMetadata,
    /// Headers of an HTTP callout's response.
    HttpCallResponseHeaders,
    /// Trailers of an HTTP callout's response.
    HttpCallResponseTrailers,
}

impl MapType {
    /// The map type with wire value `v`.
    pub fn from_wire(v: i32) -> Option<MapType> {
        Some(match v {
            0 => MapType::HttpRequestHeaders,
            1 => MapType::HttpRequestTrailers,
            2 => MapType::HttpResponseHeaders,
            3 => MapType::HttpResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// The four directions a plugin can continue or close (`proxy_stream_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// The HTTP request (headers, body, trailers) going upstream.
    HttpRequest,
    /// The HTTP response coming back.
    HttpResponse,
    /// Data from the downstream peer of a TCP connection.
    Downstream,
    /// Data from the upstream peer of a TCP connection.
    Upstream,
}

impl StreamType {
    /// The stream type with wire value `v`.
    pub fn from_wire(v: i32) -> Option<StreamType> {
        Some(match v {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which side closed a TCP connection (`proxy_peer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PeerType {
    /// Not known.
    Unknown = 0,
    /// This proxy closed it.
    Local = 1,
    /// The remote peer closed it.
    Remote = 2,
}

/// Metric kinds (`proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

impl MetricType {
    /// The metric type with wire value `v`.
    pub fn from_wire(v: i32) -> Option<MetricType> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }

    /// Lower-case name (`"counter"`).
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// The ABI version a module was built for, detected from its marker export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`: headers callbacks without `end_of_stream`, `proxy_get_configuration`,
    /// `proxy_continue_request`/`_response`, OK + empty for a missing header.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`: adds `proxy_get_log_level`.
    V0_2_1,
}

impl AbiVersion {
    /// The marker export that names this version.
    pub fn marker(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "proxy_abi_version_0_1_0",
            AbiVersion::V0_2_0 => "proxy_abi_version_0_2_0",
            AbiVersion::V0_2_1 => "proxy_abi_version_0_2_1",
        }
    }

    /// `"0.2.1"` and so on.
    pub fn name(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        }
    }

    /// Every version, newest first (the order in which markers are looked for).
    pub const ALL: [AbiVersion; 3] = [AbiVersion::V0_2_1, AbiVersion::V0_2_0, AbiVersion::V0_1_0];
}
