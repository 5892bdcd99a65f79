//! Ownership scopes (LIFETIMES.md §4.6); the Swift layer wraps them in `withScope {}`.

use std::sync::{Arc, Mutex};

use bcv_core::handle as core;

use crate::node::lock;

/// An ownership scope: every node created **on this thread, synchronously,** while the scope is open is
/// closed with `SCOPE_EXITED` when the scope closes, unless `detachFromScope()` was called on it.
///
/// Creating the object enters the scope on the calling thread; scopes nest. `close()` must run on the
/// same thread (the Swift `withScope` helper guarantees it). Objects that async calls produce (an
/// accepted or connected socket) are not adopted. Releasing an open scope closes it.
#[derive(uniffi::Object)]
pub struct Scope {
    inner: Mutex<Option<core::Scope>>,
}

#[uniffi::export]
impl Scope {
    /// Creates a scope and enters it on the calling thread.
    #[uniffi::constructor]
    pub fn new() -> Arc<Scope> {
        Arc::new(Scope { inner: Mutex::new(Some(core::Scope::enter())) })
    }

    /// Leaves the scope and closes every node it still owns with `SCOPE_EXITED`. Idempotent.
    pub fn close(&self) {
        let scope = lock(&self.inner).take();
        if let Some(mut scope) = scope {
            scope.close();
        }
    }

    /// Number of live nodes the scope still owns (0 once closed).
    pub fn owned_count(&self) -> u64 {
        lock(&self.inner).as_ref().map_or(0, |s| s.len() as u64)
    }

    /// True once `close()` ran.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner).is_none()
    }
}
