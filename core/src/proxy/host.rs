//! The host: one wasmtime engine (pooling allocator, epoch interruption), the linkers of the three ABI
//! versions, the precompiled-module cache, and the stores VMs share (shared data, queues, metrics).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig};

use super::error::{ProxyError, ProxyResult};
use super::headers::MapLimits;
use super::metrics::{MetricSnapshot, Metrics};
use super::module::PluginModule;
use super::shared::{SharedStore, SharedValue};
use super::state::HostState;
use super::types::{AbiVersion, Status};
use crate::handle::{Node, Runtime, TaskResource};

/// Limits and engine settings of a [`ProxyHost`].
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Most linear memory one VM may have, in bytes (default 64 MiB). Growth past it fails inside the
    /// guest; a guest that then traps fails its VM with [`FailReason::MemoryLimit`](super::FailReason).
    pub memory_limit: u64,
    /// Most CPU time one callback may take (default 1 s), enforced by epoch interruption: a callback that
    /// runs longer is stopped and its VM fails with [`FailReason::CpuDeadline`](super::FailReason).
    pub callback_deadline: Duration,
    /// How often the epoch advances (default 2 ms): the deadline's resolution.
    pub epoch_tick: Duration,
    /// Use the pooling instance allocator (default true): instantiation reuses pre-mapped slots.
    pub pooling: bool,
    /// Slots of the pool: most VMs (and canaries) alive at once (default 128).
    pub max_instances: u32,
    /// A directory for precompiled modules, keyed by the module's SHA-256 and the engine's settings and
    /// version (default: none, every load compiles).
    pub module_cache_dir: Option<PathBuf>,
    /// Bounds on header maps a plugin hands the host.
    pub map_limits: MapLimits,
    /// Most bytes one WASI `random_get` may ask for (default 64 KiB; more is EINVAL).
    pub max_random_bytes: usize,
    /// Most items waiting in one shared queue (default 10 000; more is INTERNAL_FAILURE).
    pub max_queue_items: usize,
    /// Most guest stack, in bytes (default 512 KiB).
    pub max_wasm_stack: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            memory_limit: 64 << 20,
            callback_deadline: Duration::from_secs(1),
            epoch_tick: Duration::from_millis(2),
            pooling: true,
            max_instances: 128,
            module_cache_dir: None,
            map_limits: MapLimits::default(),
            max_random_bytes: 64 << 10,
            max_queue_items: 10_000,
            max_wasm_stack: 512 << 10,
        }
    }
}

pub(crate) struct HostInner {
    pub engine: Engine,
    pub config: HostConfig,
    pub linkers: [Linker<HostState>; 3],
    pub shared: SharedStore,
    pub metrics: Metrics,
    pub started: Instant,
    pub runtime: Runtime,
    ticker_stop: Arc<AtomicBool>,
}

impl HostInner {
    pub(crate) fn linker(&self, abi: AbiVersion) -> &Linker<HostState> {
        &self.linkers[abi as usize]
    }

    /// Epoch ticks that make up the callback deadline.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        (self.config.callback_deadline.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
    }
}

/// The Proxy-Wasm host: compiles modules and creates VMs. A node of the handle runtime; VMs are its
/// children, so closing the host closes every VM, plugin and context under it.
///
/// Cloning is cheap (shared). Dropping the last handle releases the engine once its VMs are gone.
#[derive(Clone)]
pub struct ProxyHost {
    pub(crate) inner: Arc<HostInner>,
    pub(crate) resource: Arc<TaskResource>,
    node: Node,
}

impl std::fmt::Debug for ProxyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHost").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl ProxyHost {
    /// A host on the global handle runtime.
    ///
    /// Errors: [`ProxyError::Config`] when wasmtime refuses the configuration (e.g. a pool that cannot be
    /// reserved).
    pub fn new(config: HostConfig) -> ProxyResult<ProxyHost> {
        Self::with_runtime(Runtime::global(), config)
    }

    /// A host on `runtime`.
    ///
    /// Errors: as [`new`](Self::new); [`ProxyError::Closed`] when the runtime is shut down.
    pub fn with_runtime(runtime: &Runtime, config: HostConfig) -> ProxyResult<ProxyHost> {
        if config.memory_limit < 64 << 10 {
            return Err(ProxyError::Config("memory_limit must be at least one wasm page (64 KiB)".into()));
        }
        if config.epoch_tick.is_zero() {
            return Err(ProxyError::Config("epoch_tick must be positive".into()));
        }
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(config.max_wasm_stack)
            .parallel_compilation(true);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(config.max_instances)
                .total_memories(config.max_instances)
                .total_tables(config.max_instances)
                .max_memories_per_module(1)
                .max_tables_per_module(1)
                .max_memory_size(config.memory_limit as usize)
                // Reset a reused slot's table with a memset rather than an madvise round trip: cheaper for
                // the small tables plugins have (pooled instantiation ~4.1 -> ~3.4 us).
                .table_keep_resident(TABLE_KEEP_RESIDENT);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(|e| ProxyError::Config(format!("wasmtime engine: {e}")))?;
        let mut linkers = AbiVersion::ALL.map(|_| Linker::new(&engine));
        for abi in AbiVersion::ALL {
            super::abi::link(&mut linkers[abi as usize], abi)
                .map_err(|e| ProxyError::Config(format!("linking ABI {}: {e}", abi.name())))?;
        }
        let (resource, node) = TaskResource::create(runtime, "proxy host", None).map_err(ProxyError::Closed)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), config.epoch_tick, ticker_stop.clone())
            .map_err(|e| ProxyError::Config(format!("epoch thread: {e}")))?;
        let inner = HostInner {
            engine,
            shared: SharedStore::new(config.max_queue_items),
            config,
            linkers,
            metrics: Metrics::default(),
            started: Instant::now(),
            runtime: runtime.clone(),
            ticker_stop,
        };
        Ok(ProxyHost { inner: Arc::new(inner), resource: Arc::new(resource), node })
    }

    /// The host's node (close, state).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The configuration the host was made with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Compiles (or loads from the module cache) a plugin module and checks it: a known ABI marker, an
    /// allocator, a memory, and imports this host provides.
    ///
    /// Errors: [`ProxyError::InvalidModule`] for a module that is not a Proxy-Wasm module or imports what
    /// the host lacks; [`ProxyError::Compile`]; [`ProxyError::ModuleCache`] when the cache directory cannot
    /// be written (a damaged cache entry is recompiled, not an error).
    pub fn load_module(&self, name: &str, wasm: &[u8]) -> ProxyResult<PluginModule> {
        PluginModule::load(self, name, wasm)
    }

    /// Every metric plugins defined, in definition order.
    pub fn metrics(&self) -> Vec<MetricSnapshot> {
        self.inner.metrics.snapshot()
    }

    /// One metric by name.
    pub fn metric(&self, name: &str) -> Option<MetricSnapshot> {
        self.metrics().into_iter().find(|m| m.name == name)
    }

    /// Shared data of VM id `vm_id`: the value and CAS token of `key`.
    pub fn shared_data(&self, vm_id: &str, key: &[u8]) -> Option<SharedValue> {
        self.inner.shared.get(vm_id, key)
    }

    /// Sets shared data as a plugin would: `cas` 0 is unconditional, otherwise it must match.
    ///
    /// Errors: `Err(Status::CasMismatch)` when `cas` is stale. Returns the new CAS token.
    pub fn set_shared_data(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<u32, Status> {
        self.inner.shared.set(vm_id, key, value, cas)
    }

    /// Removes shared data `key`; true when it existed.
    pub fn remove_shared_data(&self, vm_id: &str, key: &[u8]) -> bool {
        self.inner.shared.remove(vm_id, key)
    }

    /// The keys of VM id `vm_id`'s shared data, sorted.
    pub fn shared_data_keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        self.inner.shared.keys(vm_id)
    }

    /// Enqueues an item on shared queue `name` of `vm_id` (the registrant's `on_queue_ready` runs).
    ///
    /// Errors: `Err(Status::NotFound)` when no plugin registered the queue.
    pub fn enqueue(&self, vm_id: &str, name: &str, item: &[u8]) -> Result<(), Status> {
        let id = self.inner.shared.resolve_queue(vm_id, name).ok_or(Status::NotFound)?;
        self.inner.shared.enqueue(id, item.to_vec())
    }

    /// Items waiting in shared queue `name` of `vm_id` (None when not registered).
    pub fn queue_len(&self, vm_id: &str, name: &str) -> Option<usize> {
        let id = self.inner.shared.resolve_queue(vm_id, name)?;
        self.inner.shared.queue_info(id).map(|(_, _, n)| n)
    }
}

/// Bytes of a pooled table kept resident (memset on reuse instead of decommitted).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

fn spawn_epoch_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let weak = engine.weak();
    drop(engine);
    std::thread::Builder::new().name("bcv-proxy-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(tick);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })?;
    Ok(())
}
