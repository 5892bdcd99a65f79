//! The atomics the lock-free parts use. A loom model test (`core/tests/loom_lifecycle.rs`) compiles
//! `lifecycle.rs` against loom's versions of these instead.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
