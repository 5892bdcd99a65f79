//! JS scopes (`using s = bcv.scope()`): small runtimes that close what was created in them (LIFETIMES.md
//! §4.6, T37).
//!
//! A scope wraps core's [`bcv_core::handle::Scope`], entered on the env's JS thread, so every node core
//! creates synchronously while the scope is the innermost one is adopted (internal children included).
//! Handles that arrive later from an operation started inside the scope (an accepted or connected TCP
//! socket) are adopted by the binding on arrival. Exiting closes all of them with `SCOPE_EXITED`, except
//! handles that called `detachFromScope()`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Weak};

use bcv_core::handle::{CloseReason, Scope as CoreScope};
use napi::Env;
use napi_derive::napi;

use crate::env::EnvLocal;
use crate::handle::Kind;

/// The state behind one JS scope; lives on the JS thread.
pub(crate) struct ScopeState {
    pub(crate) id: u64,
    core: RefCell<Option<CoreScope>>,
    adopted: RefCell<Vec<(u64, Weak<Kind>)>>,
    closed: Cell<bool>,
}

impl ScopeState {
    /// Adopts a handle created outside core's view (async results, taken socket streams).
    pub(crate) fn adopt(&self, id: u64, kind: &Arc<Kind>) {
        if self.closed.get() {
            kind.node().close_with(CloseReason::ScopeExited);
            return;
        }
        let mut adopted = self.adopted.borrow_mut();
        if adopted.len() >= 64 && adopted.len().is_power_of_two() {
            adopted.retain(|(_, w)| w.strong_count() > 0);
        }
        adopted.push((id, Arc::downgrade(kind)));
    }

    /// Forgets a handle so the scope's exit leaves it alone.
    pub(crate) fn detach(&self, id: u64) {
        self.adopted.borrow_mut().retain(|(i, _)| *i != id);
    }

    fn live(&self) -> usize {
        let core = self.core.borrow().as_ref().map_or(0, CoreScope::len);
        core + self.adopted.borrow().iter().filter(|(_, w)| w.strong_count() > 0).count()
    }

    /// Leaves the scope and closes what it owns with `SCOPE_EXITED`. Idempotent.
    pub(crate) fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        if let Some(mut core) = self.core.borrow_mut().take() {
            core.close();
        }
        let adopted = std::mem::take(&mut *self.adopted.borrow_mut());
        for (_, w) in adopted {
            if let Some(kind) = w.upgrade() {
                kind.node().close_with(CloseReason::ScopeExited);
            }
        }
    }

    /// At env teardown: the env's own close already ran; this only leaves the scope.
    pub(crate) fn abandon(&self) {
        self.close();
    }
}

/// An ownership scope. Create it with `scope()`; `close()` (or leaving a `using` block) closes every
/// handle created in it with `SCOPE_EXITED`, except those detached with `detachFromScope()`.
///
/// Scopes nest; the innermost open one adopts new handles. Dropping the last reference to an open scope
/// closes it when it is garbage-collected.
#[napi]
pub struct Scope {
    state: Rc<ScopeState>,
}

impl Scope {
    pub(crate) fn enter(local: &EnvLocal) -> Scope {
        let state = Rc::new(ScopeState {
            id: EnvLocal::next_id(),
            core: RefCell::new(Some(CoreScope::enter())),
            adopted: RefCell::new(Vec::new()),
            closed: Cell::new(false),
        });
        local.scopes.borrow_mut().push(state.clone());
        Scope { state }
    }

    fn leave(&self) {
        if let Some(local) = EnvLocal::current() {
            local.scopes.borrow_mut().retain(|s| !Rc::ptr_eq(s, &self.state));
        }
        self.state.close();
    }
}

#[napi]
impl Scope {
    /// Leaves the scope and closes every handle it owns with `SCOPE_EXITED`. Idempotent; never throws.
    #[napi]
    pub fn close(&self, _env: Env) {
        self.leave();
    }

    /// Number of live nodes the scope still owns.
    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.state.live() as u32
    }

    /// True once the scope was closed.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.state.closed.get()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.leave();
    }
}
