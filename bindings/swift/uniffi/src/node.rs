//! What every object shares: close, close-and-wait, state, close reason, scope detachment.
//!
//! Each UniFFI object keeps its core handle in an `Arc`, so an operation in flight (or a spawned
//! close-and-wait) can hold it without taking an external reference of its own. The Swift object owns one
//! strong count of the UniFFI object; its `deinit` drops it, which releases the core handle (option 2).

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bcv_core::handle as core;

use crate::error::{BcvError, millis};

/// A core handle seen as its node.
pub(crate) trait AsNode: Send + Sync + 'static {
    fn node(&self) -> &core::Node;
}

impl<T> AsNode for T
where
    T: Deref<Target = core::Node> + Send + Sync + 'static,
{
    fn node(&self) -> &core::Node {
        self
    }
}

/// Implemented by every UniFFI object that wraps one node; `None` once the handle was consumed.
pub(crate) trait HasNode {
    fn shared_node(&self) -> Option<Arc<dyn AsNode>>;
}

/// Closes the node and waits for quiescence without needing a tokio context on the polling thread: the
/// wait (which uses tokio's timer) runs on the runtime's own executor, and this future only awaits it.
pub(crate) async fn close_and_wait(node: Option<Arc<dyn AsNode>>, timeout_ms: u64) -> Result<(), BcvError> {
    let Some(node) = node else { return Ok(()) };
    node.node().close();
    let waiter = node.clone();
    let task = core::Runtime::global()
        .tokio_handle()
        .spawn(async move { waiter.node().close_and_wait(millis(timeout_ms)).await });
    match task.await {
        Ok(result) => Ok(result?),
        // The executor is gone (runtime shut down): the node was closed by the shutdown.
        Err(_) if node.node().state() == core::NodeState::Closed => Ok(()),
        Err(_) => Err(BcvError::Timeout { message: "the runtime stopped before the close completed".into() }),
    }
}

/// Locks a mutex, recovering from poisoning (a panic never breaks a handle).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cancellation flag for one async call (`read`, `wait`). Cancelling makes the call throw
/// `BcvError.Cancelled` at once; the stream or future itself stays open and nothing is lost.
///
/// The Swift layer creates one per call and cancels it from `withTaskCancellationHandler`, because UniFFI
/// does not forward Swift task cancellation to Rust futures.
#[derive(Default, uniffi::Object)]
pub struct CancelToken {
    cancelled: AtomicBool,
    event: event_listener::Event,
}

#[uniffi::export]
impl CancelToken {
    /// A token that is not cancelled yet.
    #[uniffi::constructor]
    pub fn new() -> Arc<CancelToken> {
        Arc::new(CancelToken::default())
    }

    /// Cancels the call this token was passed to (and any later one). Idempotent, never blocks.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// True once `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

impl CancelToken {
    async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

/// Runs `fut` unless `token` is cancelled first. A result that is ready wins over a cancellation that
/// arrives at the same time, so no data is dropped; a cancelled call left its stream untouched.
pub(crate) async fn cancellable<T>(
    token: Option<Arc<CancelToken>>,
    fut: impl Future<Output = Result<T, BcvError>>,
) -> Result<T, BcvError> {
    let Some(token) = token else { return fut.await };
    if token.is_cancelled() {
        return Err(BcvError::Cancelled);
    }
    tokio::select! {
        biased;
        result = fut => result,
        () = token.cancelled() => Err(BcvError::Cancelled),
    }
}

/// Exports the node methods every object has. Used once per object type.
macro_rules! node_methods {
    ($ty:ty) => {
        #[uniffi::export]
        impl $ty {
            /// Forced, cascading close with reason `SELF`: idempotent, returns at once, never blocks.
            /// Pending and later operations fail with `BcvError.Closed`; dependent children end with
            /// `Closed(PARENT)`. Releasing the object later does nothing extra.
            pub fn close(&self) {
                if let Some(n) = $crate::node::HasNode::shared_node(self) {
                    n.node().close();
                }
            }

            /// Closes, then waits until in-flight operations have returned and OS resources are freed
            /// (it does not wait for children to be released).
            /// Errors: `Timeout` after `timeout_ms`; `WouldDeadlock` where waiting could deadlock.
            pub async fn close_and_wait(&self, timeout_ms: u64) -> Result<(), $crate::error::BcvError> {
                $crate::node::close_and_wait($crate::node::HasNode::shared_node(self), timeout_ms).await
            }

            /// Blocking form of `close_and_wait`, for threads that are not SDK threads.
            /// Errors: `Timeout`; `WouldDeadlock` on an SDK callback or runtime thread.
            pub fn close_and_wait_blocking(&self, timeout_ms: u64) -> Result<(), $crate::error::BcvError> {
                match $crate::node::HasNode::shared_node(self) {
                    Some(n) => Ok(n.node().close_and_wait_blocking($crate::error::millis(timeout_ms))?),
                    None => Ok(()),
                }
            }

            /// The current lifecycle state (`Closed` once the handle was consumed by a transformer).
            pub fn state(&self) -> $crate::error::NodeState {
                $crate::node::HasNode::shared_node(self)
                    .map_or($crate::error::NodeState::Closed, |n| n.node().state().into())
            }

            /// Why the node was closed, once it is closing or closed; `nil` while it is open.
            pub fn close_reason(&self) -> Option<$crate::error::ClosedInfo> {
                match $crate::node::HasNode::shared_node(self) {
                    Some(n) => n.node().close_reason().map(Into::into),
                    None => Some($crate::error::ClosedInfo {
                        reason: $crate::error::CloseReason::SelfClosed,
                        upstream: None,
                    }),
                }
            }

            /// Lets this node outlive the scope it was created in: the scope's exit leaves it open.
            pub fn detach_from_scope(&self) {
                if let Some(n) = $crate::node::HasNode::shared_node(self) {
                    n.node().detach_from_scope();
                }
            }

            /// The node's id (diagnostics; the ids `shutdown` reports as stuck). 0 once consumed.
            pub fn node_id(&self) -> u64 {
                $crate::node::HasNode::shared_node(self).map_or(0, |n| n.node().id())
            }
        }
    };
}
pub(crate) use node_methods;
