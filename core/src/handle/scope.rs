//! Scopes: small runtimes that close what was created inside them when they exit (LIFETIMES.md §4.6).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Weak};

use super::node::{NodeCore, NodeTable, lock};
use super::reason::{CloseReason, Closed};

pub(crate) struct ScopeInner {
    nodes: Mutex<NodeTable>,
}

impl ScopeInner {
    pub(crate) fn adopt(&self, node: &Arc<NodeCore>) {
        lock(&self.nodes).insert(node.id(), Arc::downgrade(node));
    }

    pub(crate) fn forget(&self, id: u64) {
        lock(&self.nodes).remove(&id);
    }
}

thread_local! {
    static CURRENT: RefCell<Vec<Arc<ScopeInner>>> = const { RefCell::new(Vec::new()) };
}

/// The innermost scope entered on this thread, if any.
pub(crate) fn current_scope() -> Option<Arc<ScopeInner>> {
    CURRENT.try_with(|c| c.borrow().last().cloned()).ok().flatten()
}

/// An ownership scope: every node created on this thread while the scope is entered is closed with
/// `SCOPE_EXITED` when the scope closes, unless it was detached with
/// [`Node::detach_from_scope`](super::Node::detach_from_scope).
///
/// Dropping a `Scope` closes it.
pub struct Scope {
    inner: Arc<ScopeInner>,
    entered: bool,
}

impl Scope {
    /// Creates a scope and enters it on the current thread.
    pub fn enter() -> Scope {
        let inner = Arc::new(ScopeInner { nodes: Mutex::new(NodeTable::new()) });
        CURRENT.with(|c| c.borrow_mut().push(inner.clone()));
        Scope { inner, entered: true }
    }

    /// Number of nodes the scope still owns.
    pub fn len(&self) -> usize {
        lock(&self.inner.nodes).values().filter(|w| w.strong_count() > 0).count()
    }

    /// True when the scope owns no live node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves the scope on this thread and closes every node it still owns with `SCOPE_EXITED`.
    /// Idempotent.
    pub fn close(&mut self) {
        if self.entered {
            self.entered = false;
            let me = Arc::as_ptr(&self.inner);
            let _ = CURRENT.try_with(|c| c.borrow_mut().retain(|s| Arc::as_ptr(s) != me));
        }
        let nodes: Vec<Arc<NodeCore>> = {
            let mut table = lock(&self.inner.nodes);
            let alive = table.values().filter_map(Weak::upgrade).collect();
            table.clear();
            alive
        };
        for node in nodes {
            node.close_with(Closed::new(CloseReason::ScopeExited));
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.close();
    }
}
