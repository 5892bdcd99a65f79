//! Errors of the Proxy-Wasm host.

use std::fmt;

use crate::handle::Closed;

/// Why a VM was marked failed. After a failure no callback of the VM runs again; traffic through its
/// plugins fails open or closed by each plugin's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The guest trapped (a Rust SDK panic is an `unreachable` trap). Holds wasmtime's message.
    Trap(String),
    /// A callback ran past its CPU deadline (epoch interruption).
    CpuDeadline,
    /// The guest asked for more linear memory than the memory cap allows and then trapped.
    MemoryLimit {
        /// The cap in bytes.
        limit: u64,
    },
    /// A host function other than logging and WASI was called during start or inside the allocator.
    RestrictedHostcall {
        /// The host function.
        function: &'static str,
        /// Where it was called: `"start"` or `"allocator"`.
        phase: &'static str,
    },
    /// The guest called WASI `proc_exit`.
    ProcExit(i32),
    /// The guest's allocator returned 0 or a buffer outside its memory.
    AllocatorFailed(String),
    /// `on_vm_start` returned false.
    VmStartRefused,
    /// Another failure of the host while running the guest.
    Internal(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Trap(message) => write!(f, "trap: {message}"),
            FailReason::CpuDeadline => write!(f, "a callback exceeded its CPU deadline"),
            FailReason::MemoryLimit { limit } => write!(f, "the guest exceeded its memory cap of {limit} bytes"),
            FailReason::RestrictedHostcall { function, phase } => {
                write!(f, "restricted_callback: {function} is not allowed during {phase}")
            }
            FailReason::ProcExit(code) => write!(f, "the guest called proc_exit({code})"),
            FailReason::AllocatorFailed(why) => write!(f, "the guest allocator failed: {why}"),
            FailReason::VmStartRefused => write!(f, "on_vm_start returned false"),
            FailReason::Internal(why) => write!(f, "host failure: {why}"),
        }
    }
}

/// Errors of [`crate::proxy`]. Each names the module, VM or plugin it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The module is not a usable Proxy-Wasm module (no ABI marker, no allocator, bad imports).
    #[error("module {module}: {reason}")]
    InvalidModule {
        /// The module's name.
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// wasmtime could not compile the module.
    #[error("module {module}: compilation failed: {reason}")]
    Compile {
        /// The module's name.
        module: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The VM could not be created or started (instantiation, `_initialize`/`_start`).
    #[error("vm {vm}: {reason}")]
    VmStart {
        /// The VM id.
        vm: String,
        /// What happened.
        reason: String,
    },
    /// The VM has failed; the reason is kept.
    #[error("vm {vm} has failed: {reason}")]
    VmFailed {
        /// The VM id.
        vm: String,
        /// Why it failed.
        reason: FailReason,
    },
    /// A plugin was not accepted: its canary or its real start/configure failed or returned false.
    #[error("plugin {plugin}: rejected: {reason}")]
    PluginRejected {
        /// The plugin's name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The call does not fit the context's state (e.g. response headers after the context finished).
    #[error("{context}: {reason}")]
    InvalidState {
        /// The context (`"http context 3 of plugin auth"`).
        context: String,
        /// What was wrong.
        reason: String,
    },
    /// A wait for a paused stream ran out of time.
    #[error("{context}: timed out waiting for the plugin to continue")]
    Timeout {
        /// The context.
        context: String,
    },
    /// An embedder callback called back into the VM that is running it (that would deadlock).
    #[error("vm {vm}: re-entered from one of its own callbacks")]
    Reentrant {
        /// The VM id.
        vm: String,
    },
    /// The precompiled-module cache could not be read or written.
    #[error("module cache {path}: {source}")]
    ModuleCache {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The host or VM configuration is not valid.
    #[error("configuration: {0}")]
    Config(String),
    /// The handle (host, VM, plugin or context) is closed.
    #[error("{0}")]
    Closed(Closed),
}

/// Result of [`crate::proxy`] operations.
pub type ProxyResult<T> = Result<T, ProxyError>;
