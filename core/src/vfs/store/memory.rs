//! `memory://NAME` containers: in-memory stores shared by name inside the process.
//!
//! Two `ContainerStore::open("memory://x", …)` calls in one process see the same objects, like two clients of one
//! bucket. The objects live until [`remove_memory_container`] is called or the process exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::memory::InMemory;

fn registry() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The in-memory store called `name`, created empty on first use.
pub fn memory_container(name: &str) -> Arc<InMemory> {
    // A poisoned registry only means another thread panicked while inserting; the map itself is still valid.
    let mut map = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Arc::clone(map.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())))
}

/// Forgets the in-memory store called `name`: the next `memory://name` starts empty. Stores already opened keep
/// their objects. Returns whether the name existed.
pub fn remove_memory_container(name: &str) -> bool {
    let mut map = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(name).is_some()
}
