//! The node: one piece of host state shared by handles, children and in-flight operations.
//!
//! Reference shape (LIFETIMES.md §1): a child holds its parent with a strong `Arc`; a parent lists its
//! dependents with `Weak` references, so `close()` reaches every living dependent and never keeps one alive.
//! External references (handles) are counted apart from internal ones (children, operations, tasks).

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use event_listener::Listener;

use super::reason::{CloseReason, CloseWaitError, Closed};
use super::runtime::{RtShared, would_deadlock_here};
use super::scope::ScopeInner;
use super::strict::ViolationKind;

use super::lifecycle::{CLOSED, CLOSING, Lifecycle, OPEN};

/// The lifecycle state of a node, as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Working; at least one handle is alive.
    Open,
    /// Working, but only children or in-flight operations hold it (LIFETIMES.md S2).
    Orphaned,
    /// `close()` was called; in-flight operations are being cancelled.
    Closing,
    /// Closed and its OS resources released.
    Closed,
}

/// What kind of node this is; decides which lifecycle rules apply (LIFETIMES.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A resource: request, socket, file, transformer, listener.
    Resource,
    /// The read end of a byte stream.
    StreamReader,
    /// The write end of a byte stream.
    StreamWriter,
    /// The read end of a future.
    FutureReader,
    /// The write end of a future.
    FutureWriter,
}

/// Behaviour a concrete node type plugs into the generic state machine.
///
/// Every method is called with no SDK lock held (S6) and must not block.
pub(crate) trait NodeHooks: Send + Sync + 'static {
    /// `Open → Closing` happened with this reason: wake waiters, cancel tasks.
    fn on_close(&self, _closed: Closed) {}
    /// The last external handle was released (S2/S3). Runs on the releasing thread; must be O(1).
    fn on_last_release(&self) {}
    /// A strict-mode violation that releasing the last handle now would be (V2, V3), if any.
    fn release_violation(&self) -> Option<ViolationKind> {
        None
    }
    /// `Closed` is being entered: release OS resources and drop stored callbacks. Runs on the reaper.
    fn on_teardown(&self) {}
}

static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

/// The shared state of one node. Users only see it through [`Node`] and the typed handles.
pub(crate) struct NodeCore {
    id: u64,
    kind: NodeKind,
    label: &'static str,
    life: Lifecycle,
    reason: OnceLock<Closed>,
    counted: AtomicBool,
    /// Held by a pump or transformer task, never by a user: strict mode does not report it.
    internal: AtomicBool,
    /// Strong link to the parent: a child keeps alive the parent state it needs (option 2).
    _parent: Option<Arc<NodeCore>>,
    dependents: Mutex<Vec<Weak<NodeCore>>>,
    scope: Mutex<Option<Weak<ScopeInner>>>,
    closed_event: event_listener::Event,
    closing_event: event_listener::Event,
    hooks: Box<dyn NodeHooks>,
    backtrace: Option<String>,
    pub(crate) rt: Arc<RtShared>,
}

impl NodeCore {
    /// Creates a node with one external reference, registered with its runtime and current scope.
    pub(crate) fn create(
        rt: &Arc<RtShared>,
        kind: NodeKind,
        label: &'static str,
        parent: Option<&Arc<NodeCore>>,
        hooks: Box<dyn NodeHooks>,
    ) -> Result<Arc<NodeCore>, Closed> {
        rt.check_running()?;
        if let Some(c) = parent.and_then(|p| p.closed_error()) {
            return Err(Closed::new(cascade_reason(c.reason)));
        }
        let node = Arc::new(NodeCore {
            id: NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed),
            kind,
            label,
            life: Lifecycle::new(),
            reason: OnceLock::new(),
            counted: AtomicBool::new(true),
            internal: AtomicBool::new(false),
            _parent: parent.cloned(),
            dependents: Mutex::new(Vec::new()),
            scope: Mutex::new(None),
            closed_event: event_listener::Event::new(),
            closing_event: event_listener::Event::new(),
            hooks,
            backtrace: rt.strict.capture_backtrace(),
            rt: rt.clone(),
        });
        rt.register(&node);
        if let Some(p) = parent {
            let mut deps = lock(&p.dependents);
            if deps.len() >= 8 && deps.len().is_power_of_two() {
                deps.retain(|w| w.strong_count() > 0);
            }
            deps.push(Arc::downgrade(&node));
        }
        if let Some(scope) = super::scope::current_scope() {
            scope.adopt(&node);
            *lock(&node.scope) = Some(Arc::downgrade(&scope));
        }
        // A parent closed between the check above and the registration must still cascade.
        if let Some(c) = parent.and_then(|p| p.closed_error()) {
            node.close_with(Closed::new(cascade_reason(c.reason)));
        }
        Ok(node)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn label(&self) -> &'static str {
        self.label
    }

    pub(crate) fn backtrace(&self) -> Option<&str> {
        self.backtrace.as_deref()
    }

    /// The close error if the node is closing or closed.
    pub(crate) fn closed_error(&self) -> Option<Closed> {
        if self.life.state() == OPEN {
            return None;
        }
        Some(self.reason.get().copied().unwrap_or(Closed::new(CloseReason::SelfClosed)))
    }

    /// True for the read end of a stream or future.
    pub(crate) fn is_read_end(&self) -> bool {
        matches!(self.kind, NodeKind::StreamReader | NodeKind::FutureReader)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.life.state() == OPEN
    }

    pub(crate) fn state(&self) -> NodeState {
        match self.life.state() {
            OPEN if self.life.ext_refs() == 0 => NodeState::Orphaned,
            OPEN => NodeState::Open,
            CLOSING => NodeState::Closing,
            _ => NodeState::Closed,
        }
    }

    pub(crate) fn has_external_refs(&self) -> bool {
        self.life.ext_refs() > 0
    }

    /// Starts an operation: counted as in flight until the guard drops (S4). Fails once closing.
    pub(crate) fn begin_op(self: &Arc<Self>) -> Result<OpGuard, Closed> {
        let allowed = self.life.enter_op();
        let guard = OpGuard { core: self.clone() };
        if !allowed {
            let closed = self.closed_error().unwrap_or(Closed::new(CloseReason::SelfClosed));
            drop(guard);
            if !self.rt.is_dead() {
                self.rt.strict.report(ViolationKind::UseAfterClose, self);
            }
            return Err(closed);
        }
        Ok(guard)
    }

    /// Forced, cascading close (idempotent; returns at once).
    pub(crate) fn close_with(self: &Arc<Self>, closed: Closed) {
        if !self.life.begin_close() {
            return;
        }
        let _ = self.reason.set(closed);
        self.closing_event.notify(usize::MAX);
        let dependents: Vec<Arc<NodeCore>> = {
            let mut deps = lock(&self.dependents);
            let alive = deps.iter().filter_map(Weak::upgrade).collect();
            deps.clear();
            alive
        };
        let child_reason = Closed::new(cascade_reason(closed.reason));
        // Child resources first (they close their own read ends at once), then read ends, then write ends:
        // a reader woken by a sibling's close must already see its own PARENT reason.
        let mut dependents = dependents;
        dependents.sort_by_key(|d| match d.kind {
            NodeKind::Resource => 0,
            NodeKind::StreamReader | NodeKind::FutureReader => 1,
            NodeKind::StreamWriter | NodeKind::FutureWriter => 2,
        });
        for child in dependents {
            child.close_with(child_reason);
        }
        // Own hooks after the cascade, so a task cancelled here cannot end a child with another reason.
        self.hooks.on_close(closed);
        // The close work itself counted as an operation; if it was the last one, tear down now.
        if self.life.leave_op() {
            self.start_teardown();
        }
    }

    fn start_teardown(self: &Arc<Self>) {
        if !self.life.claim_teardown() {
            return;
        }
        let me = self.clone();
        self.rt.defer(Box::new(move || me.finish_teardown()));
    }

    fn finish_teardown(&self) {
        self.hooks.on_teardown();
        if let Some(scope) = lock(&self.scope).take().and_then(|w| w.upgrade()) {
            scope.forget(self.id);
        }
        self.life.set_closed();
        self.uncount();
        self.closed_event.notify(usize::MAX);
    }

    fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.rt.node_gone(self.id);
        }
    }

    /// Adds one external reference (a cloned handle).
    pub(crate) fn retain_external(&self) {
        self.life.retain_external();
    }

    /// Gives up one external reference. O(1), never blocks, any thread (R1, A6).
    pub(crate) fn release_external(self: Arc<Self>) {
        if !self.life.release_external() {
            return;
        }
        if self.rt.strict.enabled() && !self.rt.is_dead() && !self.internal.load(Ordering::Relaxed) {
            if let Some(v) = self.is_open().then(|| self.hooks.release_violation()).flatten() {
                self.rt.strict.report(v, &self);
            }
            if self.kind == NodeKind::Resource && self.rt.strict.wasip2() && self.has_live_dependent_handles() {
                self.rt.strict.report(ViolationKind::ParentBeforeChild, &self);
            }
        }
        self.hooks.on_last_release();
        // The final drop (and with it any teardown) happens on the reaper, never inline (S5).
        let rt = self.rt.clone();
        rt.defer_release(self);
    }

    fn has_live_dependent_handles(&self) -> bool {
        lock(&self.dependents).iter().filter_map(Weak::upgrade).any(|d| d.has_external_refs())
    }

    /// Marks a pump or transformer end that no user holds: no scope owns it and strict mode ignores it.
    pub(crate) fn mark_internal(&self) {
        self.internal.store(true, Ordering::Relaxed);
        self.leave_scope();
    }

    /// Removes this node alone from its scope.
    pub(crate) fn leave_scope(&self) {
        if let Some(scope) = lock(&self.scope).take().and_then(|w| w.upgrade()) {
            scope.forget(self.id);
        }
    }

    /// Removes this node and its ancestors from their scopes: a node handed out of a scope needs the
    /// parents it reads through to outlive the scope too.
    pub(crate) fn detach_from_scope(&self) {
        self.leave_scope();
        let mut parent = self._parent.clone();
        while let Some(p) = parent {
            p.leave_scope();
            parent = p._parent.clone();
        }
    }

    /// Waits (blocking) until the node is `Closed`, after closing it.
    pub(crate) fn close_and_wait_blocking(self: &Arc<Self>, timeout: Duration) -> Result<(), CloseWaitError> {
        if would_deadlock_here() {
            self.rt.strict.report(ViolationKind::WouldDeadlock, self);
            return Err(CloseWaitError::WouldDeadlock);
        }
        self.close_with(Closed::new(CloseReason::SelfClosed));
        let deadline = Instant::now() + timeout;
        loop {
            if self.life.state() == CLOSED {
                return Ok(());
            }
            let listener = self.closed_event.listen();
            if self.life.state() == CLOSED {
                return Ok(());
            }
            if listener.wait_deadline(deadline).is_none() && Instant::now() >= deadline {
                return if self.life.state() == CLOSED { Ok(()) } else { Err(CloseWaitError::Timeout) };
            }
        }
    }

    /// Waits (async) until the node is `Closed`, after closing it.
    pub(crate) async fn close_and_wait(self: &Arc<Self>, timeout: Duration) -> Result<(), CloseWaitError> {
        if super::runtime::in_callback() {
            self.rt.strict.report(ViolationKind::WouldDeadlock, self);
            return Err(CloseWaitError::WouldDeadlock);
        }
        self.close_with(Closed::new(CloseReason::SelfClosed));
        let wait = async {
            loop {
                if self.life.state() == CLOSED {
                    return;
                }
                let listener = self.closed_event.listen();
                if self.life.state() == CLOSED {
                    return;
                }
                listener.await;
            }
        };
        // The timer belongs to bcv's executor, whichever executor (or none) polls this future.
        let timed =
            super::runtime::in_context(
                self.rt.tokio().clone(),
                async move { tokio::time::timeout(timeout, wait).await },
            );
        timed.await.map_err(|_| CloseWaitError::Timeout)
    }

    /// Resolves with the close reason once the node starts closing (for `select!` against a wait).
    pub(crate) async fn closed_wait(&self) -> Closed {
        loop {
            if let Some(c) = self.closed_error() {
                return c;
            }
            let listener = self.closing_event.listen();
            if let Some(c) = self.closed_error() {
                return c;
            }
            listener.await;
        }
    }

    /// Reports whether the node is already torn down.
    pub(crate) fn is_torn_down(&self) -> bool {
        !self.counted.load(Ordering::Acquire)
    }
}

impl Drop for NodeCore {
    fn drop(&mut self) {
        if self.life.claim_teardown() {
            self.hooks.on_teardown();
        }
        if let Some(scope) = lock(&self.scope).take().and_then(|w| w.upgrade()) {
            scope.forget(self.id);
        }
        self.uncount();
        self.rt.unregister(self.id);
    }
}

/// The reason a dependent child is closed with when its parent closes with `parent`.
pub(crate) fn cascade_reason(parent: CloseReason) -> CloseReason {
    match parent {
        CloseReason::RuntimeShutdown | CloseReason::ScopeExited => parent,
        _ => CloseReason::Parent,
    }
}

/// An operation in flight on a node; while any exists, the node stays `Closing` and not `Closed` (S4).
pub(crate) struct OpGuard {
    core: Arc<NodeCore>,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        if self.core.life.leave_op() {
            self.core.start_teardown();
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (a panic never breaks a node).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One external reference to a node: the common part of every bcv handle.
///
/// Dropping it releases the reference (O(1), any thread, never blocks, never fails). Cloning adds an
/// external reference. The node lives on while children or operations need it.
pub struct Node {
    pub(crate) core: ManuallyDrop<Arc<NodeCore>>,
    released: AtomicBool,
}

impl Node {
    pub(crate) fn from_core(core: Arc<NodeCore>) -> Node {
        Node { core: ManuallyDrop::new(core), released: AtomicBool::new(false) }
    }

    /// The node's unique id (diagnostics, `stuck_node_ids`).
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// The node's kind.
    pub fn kind(&self) -> NodeKind {
        self.core.kind
    }

    /// A short human-readable label (`"pipe reader"`, `"tcp socket"`, …).
    pub fn label(&self) -> &'static str {
        self.core.label
    }

    /// The current lifecycle state.
    pub fn state(&self) -> NodeState {
        self.core.state()
    }

    /// Why the node was closed, once it is closing or closed.
    pub fn close_reason(&self) -> Option<Closed> {
        self.core.closed_error()
    }

    /// Forced, cascading close with reason `SELF`: idempotent, returns at once. Dependent children end with
    /// `Closed{PARENT}`; detached children are unaffected.
    pub fn close(&self) {
        self.core.close_with(Closed::new(CloseReason::SelfClosed));
    }

    /// Like [`close`](Self::close) but with a caller-chosen reason.
    pub fn close_with(&self, reason: CloseReason) {
        self.core.close_with(Closed::new(reason));
    }

    /// Closes the node and waits until in-flight operations have returned and OS resources are freed.
    ///
    /// Does not wait for children to be released. Errors: [`CloseWaitError::Timeout`] after `timeout`;
    /// [`CloseWaitError::WouldDeadlock`] when called from an SDK callback.
    pub async fn close_and_wait(&self, timeout: Duration) -> Result<(), CloseWaitError> {
        self.core.close_and_wait(timeout).await
    }

    /// Blocking form of [`close_and_wait`](Self::close_and_wait). Refuses with `WouldDeadlock` on a
    /// runtime worker, the reaper, or inside an SDK callback.
    pub fn close_and_wait_blocking(&self, timeout: Duration) -> Result<(), CloseWaitError> {
        self.core.close_and_wait_blocking(timeout)
    }

    /// Lets this node outlive the scope it was created in (LIFETIMES.md §4.6), with the parents it depends on.
    pub fn detach_from_scope(&self) {
        self.core.detach_from_scope();
    }

    /// True while the node is open and has work in flight (a read, a pump or transformer task, a pending
    /// accept). A resource that is open but quiescent, such as a transformer whose output is complete,
    /// holds nothing that needs an explicit close.
    pub fn is_active(&self) -> bool {
        self.core.is_open() && self.core.life.inflight() > 0
    }

    /// Gives up this handle's external reference now, while the handle object itself stays valid for
    /// calls already in flight through it (which then see `Closed{HANDLE_RELEASED}` on a stream end).
    /// Later drops of this handle do nothing. The C ABI's `bcv_release` and GC finalizers use it.
    pub fn release_now(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            Arc::clone(&self.core).release_external();
        }
    }

    /// Records strict-mode V4 if this handle is being garbage-collected while still open and active (see
    /// [`is_active`](Self::is_active)). Bindings call it
    /// from their finalizers just before the handle is dropped; it never changes behaviour.
    pub fn note_collected(&self) {
        if self.core.kind == NodeKind::Resource
            && self.is_active()
            && self.core.life.ext_refs() == 1
            && !self.core.rt.is_dead()
        {
            self.core.rt.strict.report(ViolationKind::CollectedWhileOpen, &self.core);
        }
    }
}

impl Clone for Node {
    fn clone(&self) -> Node {
        self.core.retain_external();
        Node { core: ManuallyDrop::new(Arc::clone(&self.core)), released: AtomicBool::new(false) }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: `core` is never used again after this point; `drop` runs once.
        let core = unsafe { ManuallyDrop::take(&mut self.core) };
        if !self.released.swap(true, Ordering::AcqRel) {
            core.release_external();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.core.id)
            .field("label", &self.core.label)
            .field("state", &self.core.state())
            .finish()
    }
}

/// Registry of the nodes a runtime or scope owns, for shutdown and scope exit.
pub(crate) type NodeTable = HashMap<u64, Weak<NodeCore>>;
