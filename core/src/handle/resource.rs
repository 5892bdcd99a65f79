//! Resources backed by tasks on the executor: transformers, file pumps, socket pumps.
//!
//! A task-backed resource owns the abort handles of its tasks; each task holds an in-flight guard on the
//! resource, so `close()` aborts the tasks and `close_and_wait` returns once they have let go of their OS
//! resources (LIFETIMES.md S4).

use std::any::Any;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex, Weak};

use tokio::task::AbortHandle;

use super::node::{Node, NodeCore, NodeHooks, NodeKind, lock};
use super::reason::{CloseReason, Closed};
use super::runtime::Runtime;

#[derive(Default)]
pub(crate) struct TaskSet {
    tasks: Mutex<Vec<AbortHandle>>,
    /// Input streams the resource consumes: dropped at once when it closes (X4).
    inputs: Mutex<Vec<Weak<NodeCore>>>,
    /// OS objects (a listening socket) owned by the resource, freed when it enters `Closed` (S4).
    owned: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
}

impl TaskSet {
    fn abort_all(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

struct TaskHooks {
    tasks: Arc<TaskSet>,
    /// Behaviour of the concrete resource (an HTTP message, …), run before the generic part.
    extra: Option<Box<dyn NodeHooks>>,
}

impl NodeHooks for TaskHooks {
    fn on_close(&self, closed: Closed) {
        if let Some(extra) = &self.extra {
            extra.on_close(closed);
        }
        self.tasks.abort_all();
        let inputs: Vec<_> = lock(&self.tasks.inputs).drain(..).filter_map(|w| w.upgrade()).collect();
        for input in inputs {
            input.close_with(Closed::new(CloseReason::Parent));
        }
    }
    fn on_last_release(&self) {
        if let Some(extra) = &self.extra {
            extra.on_last_release();
        }
    }
    fn on_teardown(&self) {
        self.tasks.abort_all();
        let owned = std::mem::take(&mut *lock(&self.tasks.owned));
        drop(owned);
        if let Some(extra) = &self.extra {
            extra.on_teardown();
        }
    }
}

/// A resource node whose work runs in tasks it owns. Internal building block.
pub(crate) struct TaskResource {
    pub(crate) core: Arc<NodeCore>,
    tasks: Arc<TaskSet>,
}

impl TaskResource {
    pub(crate) fn create(
        rt: &Runtime,
        label: &'static str,
        parent: Option<&Arc<NodeCore>>,
    ) -> Result<(TaskResource, Node), Closed> {
        Self::create_with(rt, label, parent, None)
    }

    /// Like [`create`](Self::create), with extra hooks for the concrete resource.
    pub(crate) fn create_with(
        rt: &Runtime,
        label: &'static str,
        parent: Option<&Arc<NodeCore>>,
        extra: Option<Box<dyn NodeHooks>>,
    ) -> Result<(TaskResource, Node), Closed> {
        let tasks = Arc::new(TaskSet::default());
        let hooks = TaskHooks { tasks: tasks.clone(), extra };
        let core = NodeCore::create(&rt.shared, NodeKind::Resource, label, parent, Box::new(hooks))?;
        Ok((TaskResource { core: core.clone(), tasks }, Node::from_core(core)))
    }

    /// Records `input` as consumed by this resource: closing the resource drops it (its producer then
    /// sees `PEER_DROPPED`).
    pub(crate) fn consume(&self, input: &Node) {
        lock(&self.tasks.inputs).push(Arc::downgrade(&input.core));
    }

    /// Hands an OS object to the resource; it is dropped when the resource enters `Closed`.
    pub(crate) fn own<T: Any + Send + Sync>(&self, object: T) {
        lock(&self.tasks.owned).push(Box::new(object));
        if !self.core.is_open() && self.core.is_torn_down() {
            lock(&self.tasks.owned).clear();
        }
    }

    /// Spawns `task` as in-flight work of this resource. If the resource is already closed the task is
    /// dropped without running.
    pub(crate) fn spawn<F>(&self, task: F) -> Option<AbortHandle>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(guard) = self.core.begin_op() else { return None };
        let handle = self.core.rt.tokio().spawn(async move {
            let _guard = guard;
            task.await;
        });
        {
            let mut tasks = lock(&self.tasks.tasks);
            if tasks.len() >= 8 && tasks.len().is_power_of_two() {
                tasks.retain(|t| !t.is_finished());
            }
            tasks.push(handle.abort_handle());
        }
        // A close that raced with the push must still abort it.
        if !self.core.is_open() {
            self.tasks.abort_all();
        }
        Some(handle.abort_handle())
    }
}

/// A handle to a resource (file, transformer, listener…) with no methods beyond the node's own.
///
/// Releasing it does not stop the resource's work: its children and tasks keep it alive (option 2).
/// `close()` stops the work and ends dependent children with `Closed{PARENT}`.
#[derive(Debug, Clone)]
pub struct Resource {
    pub(crate) node: Node,
}

impl Deref for Resource {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
