//! The runtime: node registry, the reaper thread, the tokio executor, shutdown and diagnostics.
//!
//! Life cycle (LIFETIMES.md §4.6): `Running → ShuttingDown(deadline) → Dead`. Dropping a [`Runtime`] never
//! blocks; only [`Runtime::shutdown`] waits, and it refuses to where waiting could deadlock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::node::{NodeCore, NodeTable, lock};
use super::reason::{CloseReason, Closed, Error};
use super::strict::{Diagnostics, StrictConfig, StrictState};

const RUNNING: u8 = 0;
const SHUTTING_DOWN: u8 = 1;
const DEAD: u8 = 2;

type Job = Box<dyn FnOnce() + Send>;

enum ReaperMsg {
    Run(Job),
    /// The last reference of a released handle: dropping it may tear the node down (no boxing needed).
    Release(Arc<NodeCore>),
    Flush(mpsc::SyncSender<()>),
    Stop,
}

thread_local! {
    static SDK_THREAD: Cell<bool> = const { Cell::new(false) };
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// True inside an SDK callback (on_data, progress, foreign producers) on this thread.
pub(crate) fn in_callback() -> bool {
    CALLBACK_DEPTH.with(|d| d.get() > 0)
}

/// True where a blocking wait could deadlock: a tokio worker, the reaper, or inside an SDK callback.
pub(crate) fn would_deadlock_here() -> bool {
    in_callback() || SDK_THREAD.with(|t| t.get()) || tokio::runtime::Handle::try_current().is_ok()
}

/// Marks the current thread as running an SDK callback until the guard drops (for `WouldDeadlock`).
pub struct CallbackScope(());

impl CallbackScope {
    /// Enters callback context on this thread. Bindings wrap every call into foreign code with it.
    pub fn enter() -> CallbackScope {
        CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
        CallbackScope(())
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        CALLBACK_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// The error of [`Runtime::shutdown`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownError {
    /// Some nodes were still busy at the deadline (e.g. a foreign callback that never returns).
    #[error("shutdown timed out; nodes still busy: {stuck_node_ids:?}")]
    Timeout {
        /// Ids of the nodes that had not finished tearing down.
        stuck_node_ids: Vec<u64>,
    },
    /// Called on a thread where waiting could deadlock (runtime worker, reaper, callback).
    #[error("shutdown cannot wait on this thread (runtime, reaper or callback thread)")]
    WouldDeadlock,
}

/// A point-in-time view of the runtime's counters (`bcv_diagnostics()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagnosticsSnapshot {
    /// Nodes created and not yet torn down.
    pub live_nodes: usize,
    /// Nodes created since the runtime started.
    pub created_nodes: u64,
    /// Strict-mode violations by kind, V1..V6 (index 0 is V1).
    pub violations: [u64; 6],
}

pub(crate) struct RtShared {
    state: AtomicU8,
    nodes: Mutex<NodeTable>,
    live: AtomicUsize,
    created: AtomicU64,
    /// Lock-free to send on (a release is one atomic decrement and one send). Dropped with the runtime,
    /// which ends the reaper; `shutdown` stops it with `ReaperMsg::Stop`.
    reaper_tx: mpsc::Sender<ReaperMsg>,
    reaper_thread: Mutex<Option<JoinHandle<()>>>,
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pub(crate) strict: StrictState,
}

impl RtShared {
    pub(crate) fn check_running(&self) -> Result<(), Closed> {
        match self.state.load(Ordering::Acquire) {
            RUNNING => Ok(()),
            _ => Err(Closed::new(CloseReason::RuntimeShutdown)),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state.load(Ordering::Acquire) == DEAD
    }

    pub(crate) fn register(&self, node: &Arc<NodeCore>) {
        self.live.fetch_add(1, Ordering::AcqRel);
        self.created.fetch_add(1, Ordering::Relaxed);
        lock(&self.nodes).insert(node.id(), Arc::downgrade(node));
    }

    pub(crate) fn node_gone(&self, _id: u64) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn unregister(&self, id: u64) {
        lock(&self.nodes).remove(&id);
    }

    fn send(&self, msg: ReaperMsg) -> Result<(), ReaperMsg> {
        if self.is_dead() {
            return Err(msg);
        }
        self.reaper_tx.send(msg).map_err(|e| e.0)
    }

    /// Runs `job` on the reaper (S5); inline once the runtime is dead.
    pub(crate) fn defer(&self, job: Job) {
        if let Err(ReaperMsg::Run(job)) = self.send(ReaperMsg::Run(job)) {
            job();
        }
    }

    /// Drops a node's last handle reference on the reaper (S5); inline once the runtime is dead.
    pub(crate) fn defer_release(&self, node: Arc<NodeCore>) {
        if let Err(msg) = self.send(ReaperMsg::Release(node)) {
            drop(msg);
        }
    }

    /// The tokio handle that runs this runtime's tasks.
    pub(crate) fn tokio(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs a fallible future to completion from a plain thread, giving up with `Timeout` after `timeout`
    /// (the future is dropped: callers pass cancel-safe futures). Errors also: `WouldDeadlock`.
    pub(crate) fn block_on_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>>,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        self.block_on(async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| Error::Timeout(t))?,
                None => fut.await,
            }
        })?
    }

    /// Runs a future to completion from a plain (non-runtime) thread.
    pub(crate) fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output, Error> {
        if would_deadlock_here() {
            return Err(Error::WouldDeadlock);
        }
        Ok(self.handle.block_on(fut))
    }
}

/// Polls `fut` inside this runtime's tokio context, so I/O it creates (an accepted socket) registers with
/// bcv's reactor whichever executor (or none) drives the caller.
pub(crate) fn in_context<F: std::future::Future>(
    handle: tokio::runtime::Handle,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        let _enter = handle.enter();
        fut.as_mut().poll(cx)
    })
}

impl Drop for RtShared {
    fn drop(&mut self) {
        // Dropping `reaper_tx` with the struct disconnects the reaper, which then exits.
        if let Some(rt) = lock(&self.tokio).take() {
            // Never blocks and never panics, whatever thread this is (B3, tokio-rs/tokio#1950).
            rt.shutdown_background();
        }
    }
}

/// A bcv runtime: owns every node created through it, a reaper thread and a small tokio executor.
///
/// Cloning shares the same runtime. Dropping the last clone never blocks: nodes still alive keep the
/// shared state alive, and the executor is shut down in the background. Call [`shutdown`](Self::shutdown)
/// for a deterministic end.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<RtShared>,
}

/// Options for a new [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    worker_threads: usize,
    strict: StrictConfig,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder { worker_threads: 2, strict: StrictConfig::from_env() }
    }
}

impl RuntimeBuilder {
    /// Number of executor threads for I/O and transformer tasks (default 2).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n.max(1);
        self
    }

    /// Strict-mode settings (default: from `BCV_STRICT`, else off).
    pub fn strict(mut self, strict: StrictConfig) -> Self {
        self.strict = strict;
        self
    }

    /// Starts the runtime. Errors: an I/O error when threads cannot be spawned.
    pub fn build(self) -> Result<Runtime, Error> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .thread_name("bcv-worker")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the bcv executor", e))?;
        let (tx, rx) = mpsc::channel::<ReaperMsg>();
        let shared = Arc::new(RtShared {
            state: AtomicU8::new(RUNNING),
            nodes: Mutex::new(NodeTable::new()),
            live: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            reaper_tx: tx,
            reaper_thread: Mutex::new(None),
            handle: tokio.handle().clone(),
            tokio: Mutex::new(Some(tokio)),
            strict: StrictState::new(self.strict),
        });
        let reaper = std::thread::Builder::new()
            .name("bcv-reaper".into())
            .spawn(move || run_reaper(rx))
            .map_err(|e| Error::io("starting the bcv reaper thread", e))?;
        *lock(&shared.reaper_thread) = Some(reaper);
        Ok(Runtime { shared })
    }
}

/// How long the reaper keeps collecting releases after a wake-up before it blocks again (see `run_reaper`).
const REAPER_COALESCE_WINDOW: Duration = Duration::from_micros(100);

fn run_reaper(rx: mpsc::Receiver<ReaperMsg>) {
    SDK_THREAD.with(|t| t.set(true));
    // A panicking teardown must not stop the reaper (B4).
    let handle = |msg: ReaperMsg| match msg {
        ReaperMsg::Run(job) => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
        ReaperMsg::Release(node) => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(node)));
        }
        ReaperMsg::Flush(done) => {
            let _ = done.send(());
        }
        ReaperMsg::Stop => {}
    };
    // After a wake-up the reaper stays off the channel's wait list for a short window, so releases made
    // meanwhile are queued without a futex wake each (a wake costs the releasing thread more than the
    // release itself); it blocks again only after a window in which nothing arrived.
    'wake: while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                if matches!(msg, ReaperMsg::Stop) {
                    break 'wake;
                }
                handle(msg);
            }
            std::thread::sleep(REAPER_COALESCE_WINDOW);
            match rx.try_recv() {
                Ok(msg) => next = Some(msg),
                Err(_) => continue 'wake,
            }
        }
    }
    // Whatever was queued before the stop still runs; later sends fail and run inline.
    while let Ok(msg) = rx.try_recv() {
        handle(msg);
    }
}

static GLOBAL: OnceLock<Runtime> = OnceLock::new();

impl Runtime {
    /// A builder for a runtime with non-default settings.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// A new runtime with default settings. Errors: threads could not be spawned.
    pub fn new() -> Result<Runtime, Error> {
        RuntimeBuilder::default().build()
    }

    /// The process-wide runtime the bindings use, started on first use. After it is shut down it stays
    /// dead: every later call returns `Closed{RUNTIME_SHUTDOWN}`.
    ///
    /// # Panics
    /// If the runtime's threads cannot be spawned at first use (the process is out of resources).
    pub fn global() -> &'static Runtime {
        GLOBAL.get_or_init(|| Runtime::new().expect("bcv: cannot start the global runtime"))
    }

    /// A snapshot of the live-node count, creations and strict-mode counters.
    pub fn diagnostics(&self) -> DiagnosticsSnapshot {
        DiagnosticsSnapshot {
            live_nodes: self.shared.live.load(Ordering::Acquire),
            created_nodes: self.shared.created.load(Ordering::Relaxed),
            violations: self.shared.strict.counters(),
        }
    }

    /// The nodes still live (not torn down), as (id, label, state), oldest first: what a test prints when
    /// "live_nodes reaches 0" does not hold.
    pub fn live_node_report(&self) -> Vec<(u64, &'static str, super::NodeState)> {
        let mut live: Vec<_> = lock(&self.shared.nodes)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|n| !n.is_torn_down())
            .map(|n| (n.id(), n.label(), n.state()))
            .collect();
        live.sort_unstable_by_key(|(id, _, _)| *id);
        live
    }

    /// Strict-mode diagnostics recorded so far (most recent last, bounded).
    pub fn strict_diagnostics(&self) -> Diagnostics {
        self.shared.strict.recent()
    }

    /// Sets a hook run on the reaper thread for every strict-mode diagnostic.
    pub fn set_strict_hook(&self, hook: Option<super::strict::StrictHook>) {
        self.shared.strict.set_hook(hook);
    }

    /// Raises a pending strict-mode violation recorded on this thread, if any (level `Error`).
    pub fn check(&self) -> Result<(), super::strict::Diagnostic> {
        match super::strict::take_pending() {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// True once [`shutdown`](Self::shutdown) has started.
    pub fn is_shut_down(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != RUNNING
    }

    /// Waits until every release made so far has been processed by the reaper. For tests and diagnostics.
    /// Errors: [`Error::WouldDeadlock`] on the reaper itself.
    pub fn reaper_flush(&self) -> Result<(), Error> {
        if SDK_THREAD.with(|t| t.get()) {
            return Err(Error::WouldDeadlock);
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.shared.send(ReaperMsg::Flush(done_tx)).is_err() {
            return Ok(());
        }
        let _ = done_rx.recv();
        Ok(())
    }

    /// Waits until the live-node count is 0 (after flushing the reaper) or `timeout` passes; returns the
    /// final count. For tests: "live_nodes reaches 0".
    pub fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let _ = self.reaper_flush();
            let live = self.shared.live.load(Ordering::Acquire);
            if live == 0 || Instant::now() >= deadline {
                return live;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Shuts the runtime down: closes every node with `RUNTIME_SHUTDOWN`, cancels in-flight operations,
    /// runs callback destructors and waits until the live-node count is 0 or `timeout` passes.
    ///
    /// Afterwards releases only free memory and methods return `Closed{RUNTIME_SHUTDOWN}`. Idempotent.
    /// Errors: [`ShutdownError::Timeout`] with the ids of nodes still busy; [`ShutdownError::WouldDeadlock`]
    /// on a runtime, reaper or callback thread.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ShutdownError> {
        if would_deadlock_here() {
            return Err(ShutdownError::WouldDeadlock);
        }
        let shared = &self.shared;
        if shared.state.compare_exchange(RUNNING, SHUTTING_DOWN, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut nodes: Vec<Arc<NodeCore>> = lock(&shared.nodes).values().filter_map(Weak::upgrade).collect();
        // Read ends first, so every reader reports RUNTIME_SHUTDOWN rather than what a closing writer
        // or a cancelled pump would leave behind.
        nodes.sort_by_key(|n| !n.is_read_end());
        for node in &nodes {
            node.close_with(Closed::new(CloseReason::RuntimeShutdown));
        }
        drop(nodes);
        let stuck = loop {
            let _ = self.reaper_flush_until(deadline);
            if shared.live.load(Ordering::Acquire) == 0 {
                break Vec::new();
            }
            if Instant::now() >= deadline {
                let mut ids: Vec<u64> = lock(&shared.nodes)
                    .values()
                    .filter_map(Weak::upgrade)
                    .filter(|n| !n.is_torn_down())
                    .map(|n| n.id())
                    .collect();
                ids.sort_unstable();
                break ids;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // Stop the reaper; it drains what is queued, then exits. It is joined only when nothing is stuck: a
        // stuck job must not hang the caller past its deadline.
        let _ = shared.reaper_tx.send(ReaperMsg::Stop);
        shared.state.store(DEAD, Ordering::Release);
        if let Some(t) = stuck.is_empty().then(|| lock(&shared.reaper_thread).take()).flatten() {
            let _ = t.join();
        }
        if let Some(rt) = lock(&shared.tokio).take() {
            // Join the executor threads within what is left of the deadline, so nothing outlives it.
            // (Idle blocking-pool threads need a moment to notice; give them one even at the deadline,
            // unless something is stuck, in which case nothing is waited for.)
            let grace = if stuck.is_empty() { Duration::from_millis(250) } else { Duration::ZERO };
            rt.shutdown_timeout(deadline.saturating_duration_since(Instant::now()).max(grace));
        }
        if stuck.is_empty() { Ok(()) } else { Err(ShutdownError::Timeout { stuck_node_ids: stuck }) }
    }

    fn reaper_flush_until(&self, deadline: Instant) -> Result<(), ()> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.shared.send(ReaperMsg::Flush(done_tx)).is_err() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        done_rx.recv_timeout(left.max(Duration::from_millis(1))).map_err(|_| ())
    }

    /// Runs `fut` on this runtime's executor and blocks the calling thread until it completes.
    /// Errors: [`Error::WouldDeadlock`] on a runtime or callback thread.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output, Error> {
        self.shared.block_on(fut)
    }

    /// The tokio handle of this runtime's executor, for spawning work next to bcv's own.
    pub fn tokio_handle(&self) -> &tokio::runtime::Handle {
        self.shared.tokio()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("live_nodes", &self.shared.live.load(Ordering::Relaxed))
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}
