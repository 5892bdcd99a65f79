//! The lock-free lifecycle of a node: its state, external references, operations in flight and the
//! once-only teardown (LIFETIMES.md §2, S1, S4). Kept apart from `node.rs` so a loom model can check every
//! interleaving of close ∥ release ∥ operation (scenario T13).
//!
//! State and the in-flight count share one atomic word, so "the last operation of a closing node" is
//! decided by a single read-modify-write: no store-buffering race can lose the teardown.

use super::sync::{AtomicBool, AtomicUsize, Ordering};

/// Working.
pub(crate) const OPEN: u8 = 0;
/// `close()` won; operations in flight are being cancelled.
pub(crate) const CLOSING: u8 = 1;
/// Torn down: OS resources released.
pub(crate) const CLOSED: u8 = 2;

const STATE_MASK: usize = 0b11;
/// One operation in flight, in the word's upper bits.
const OP: usize = 0b100;

fn state_of(word: usize) -> u8 {
    (word & STATE_MASK) as u8
}

pub(crate) struct Lifecycle {
    /// `inflight * OP | state`.
    word: AtomicUsize,
    ext_refs: AtomicUsize,
    teardown_claimed: AtomicBool,
}

impl Lifecycle {
    /// An open node with one external reference.
    pub(crate) fn new() -> Lifecycle {
        Lifecycle {
            word: AtomicUsize::new(OPEN as usize),
            ext_refs: AtomicUsize::new(1),
            teardown_claimed: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> u8 {
        state_of(self.word.load(Ordering::Acquire))
    }

    /// Number of operations (and tasks) in flight.
    pub(crate) fn inflight(&self) -> usize {
        self.word.load(Ordering::Acquire) >> 2
    }

    pub(crate) fn ext_refs(&self) -> usize {
        self.ext_refs.load(Ordering::Acquire)
    }

    pub(crate) fn retain_external(&self) {
        self.ext_refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up one external reference; true for the call that gave up the last one.
    pub(crate) fn release_external(&self) -> bool {
        self.ext_refs.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// `Open → Closing`, true for exactly one caller (S1). The winner holds one in-flight unit for the
    /// duration of its close work and ends with [`leave_op`](Self::leave_op) like any operation.
    pub(crate) fn begin_close(&self) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (state_of(w) == OPEN).then_some(((w + OP) & !STATE_MASK) | CLOSING as usize)
            })
            .is_ok()
    }

    /// Enters an operation; true if the node is open for it. Either way the operation ends with
    /// [`leave_op`](Self::leave_op), whose teardown duty holds even for a refused operation.
    pub(crate) fn enter_op(&self) -> bool {
        state_of(self.word.fetch_add(OP, Ordering::AcqRel)) == OPEN
    }

    /// Leaves an operation (or the close work); true when it was the last one of a closing node: the caller
    /// must then start the teardown.
    pub(crate) fn leave_op(&self) -> bool {
        let before = self.word.fetch_sub(OP, Ordering::AcqRel);
        before >> 2 == 1 && state_of(before) == CLOSING
    }

    /// Claims the teardown: true exactly once over the node's life.
    pub(crate) fn claim_teardown(&self) -> bool {
        !self.teardown_claimed.swap(true, Ordering::AcqRel)
    }

    /// Marks the teardown done: `Closed`.
    pub(crate) fn set_closed(&self) {
        let _ =
            self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| Some((w & !STATE_MASK) | CLOSED as usize));
    }
}
