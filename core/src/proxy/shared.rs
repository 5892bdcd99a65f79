//! Shared data (key/value with compare-and-swap) and shared queues, scoped by VM id.
//!
//! One store per [`ProxyHost`](super::ProxyHost): every VM with the same id sees the same keys and queues,
//! whichever thread runs it, as cpp-host's process-wide stores do.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};

use super::types::Status;
use super::vm::Event;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value of shared data with its CAS token (never 0 for an existing key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedValue {
    /// The bytes.
    pub value: Vec<u8>,
    /// The token a conditional write must present.
    pub cas: u32,
}

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
    /// Who is told about new items: the last registrant's root context and its VM's event channel.
    registrant: Option<(u32, Sender<Event>)>,
}

#[derive(Default)]
struct Tables {
    data: HashMap<(String, Vec<u8>), SharedValue>,
    next_cas: u32,
    queues: HashMap<u32, Queue>,
    queue_ids: HashMap<(String, String), u32>,
    next_queue: u32,
}

/// The shared-data and shared-queue store of a host.
#[derive(Default)]
pub(crate) struct SharedStore {
    tables: Mutex<Tables>,
    max_queue_items: usize,
}

impl SharedStore {
    pub(crate) fn new(max_queue_items: usize) -> SharedStore {
        SharedStore { tables: Mutex::default(), max_queue_items }
    }

    /// The value of `key` in VM `vm_id`'s namespace.
    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<SharedValue> {
        lock(&self.tables).data.get(&(vm_id.to_string(), key.to_vec())).cloned()
    }

    /// Sets `key`. `cas` 0 writes unconditionally; otherwise it must equal the current token.
    pub(crate) fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<u32, Status> {
        let mut tables = lock(&self.tables);
        let slot = (vm_id.to_string(), key.to_vec());
        if cas != 0 {
            match tables.data.get(&slot) {
                Some(existing) if existing.cas == cas => {}
                _ => return Err(Status::CasMismatch),
            }
        }
        tables.next_cas = tables.next_cas.wrapping_add(1).max(1);
        let token = tables.next_cas;
        tables.data.insert(slot, SharedValue { value: value.to_vec(), cas: token });
        Ok(token)
    }

    /// Removes `key`; true when it existed.
    pub(crate) fn remove(&self, vm_id: &str, key: &[u8]) -> bool {
        lock(&self.tables).data.remove(&(vm_id.to_string(), key.to_vec())).is_some()
    }

    /// Every key of `vm_id`, sorted.
    pub(crate) fn keys(&self, vm_id: &str) -> Vec<Vec<u8>> {
        let tables = lock(&self.tables);
        let mut keys: Vec<_> = tables.data.keys().filter(|(v, _)| v == vm_id).map(|(_, k)| k.clone()).collect();
        keys.sort();
        keys
    }

    /// Registers (or re-registers) queue `name` of `vm_id`; the registrant becomes the notified root.
    pub(crate) fn register_queue(&self, vm_id: &str, name: &str, registrant: Option<(u32, Sender<Event>)>) -> u32 {
        let mut tables = lock(&self.tables);
        let key = (vm_id.to_string(), name.to_string());
        if let Some(&id) = tables.queue_ids.get(&key) {
            if let Some(queue) = tables.queues.get_mut(&id)
                && registrant.is_some()
            {
                queue.registrant = registrant;
            }
            return id;
        }
        tables.next_queue = tables.next_queue.wrapping_add(1).max(1);
        let id = tables.next_queue;
        tables.queue_ids.insert(key, id);
        let queue = Queue { vm_id: vm_id.to_string(), name: name.to_string(), items: VecDeque::new(), registrant };
        tables.queues.insert(id, queue);
        id
    }

    /// The id of queue `name` of `vm_id`, if registered.
    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.tables).queue_ids.get(&(vm_id.to_string(), name.to_string())).copied()
    }

    /// Appends an item and tells the registrant.
    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> Result<(), Status> {
        let notify = {
            let mut tables = lock(&self.tables);
            let limit = self.max_queue_items;
            let queue = tables.queues.get_mut(&id).ok_or(Status::NotFound)?;
            if queue.items.len() >= limit {
                return Err(Status::InternalFailure);
            }
            queue.items.push_back(item);
            queue.registrant.clone()
        };
        if let Some((root, events)) = notify {
            let _ = events.send(Event::QueueReady { root, queue: id });
        }
        Ok(())
    }

    /// Takes the oldest item.
    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut tables = lock(&self.tables);
        let queue = tables.queues.get_mut(&id).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Number of items waiting in queue `id` and its (vm id, name).
    pub(crate) fn queue_info(&self, id: u32) -> Option<(String, String, usize)> {
        let tables = lock(&self.tables);
        tables.queues.get(&id).map(|q| (q.vm_id.clone(), q.name.clone(), q.items.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_tokens_guard_writes_per_vm_id() {
        let store = SharedStore::new(16);
        let first = store.set("vm", b"k", b"1", 0).unwrap();
        assert_eq!(store.set("vm", b"k", b"2", first + 100), Err(Status::CasMismatch));
        let second = store.set("vm", b"k", b"2", first).unwrap();
        assert_ne!(first, second);
        assert_eq!(store.set("vm", b"k", b"3", first), Err(Status::CasMismatch));
        assert_eq!(store.get("vm", b"k").unwrap().value, b"2");
        assert!(store.get("other", b"k").is_none());
        assert_eq!(store.set("vm", b"new", b"x", 7), Err(Status::CasMismatch));
    }

    #[test]
    fn queues_are_fifo_bounded_and_named_per_vm() {
        let store = SharedStore::new(2);
        let id = store.register_queue("vm", "q", None);
        assert_eq!(store.register_queue("vm", "q", None), id);
        assert_ne!(store.register_queue("vm2", "q", None), id);
        assert_eq!(store.resolve_queue("vm", "q"), Some(id));
        assert_eq!(store.resolve_queue("vm", "nope"), None);
        assert_eq!(store.dequeue(id), Err(Status::Empty));
        store.enqueue(id, b"a".to_vec()).unwrap();
        store.enqueue(id, b"b".to_vec()).unwrap();
        assert_eq!(store.enqueue(id, b"c".to_vec()), Err(Status::InternalFailure));
        assert_eq!(store.dequeue(id).unwrap(), b"a");
        assert_eq!(store.dequeue(id).unwrap(), b"b");
        assert_eq!(store.dequeue(9999), Err(Status::NotFound));
    }
}
