//! T13: a loom model of one node with `close` ∥ `release` ∥ an operation ∥ a peer release. In every
//! interleaving: exactly one terminal transition, teardown exactly once and never lost (it has happened
//! by the time every thread is done, without relying on the final drop), and the node ends `Closed`.
//!
//! The model compiles the real `core/src/handle/lifecycle.rs` against loom's atomics.

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
}

#[allow(dead_code)]
#[path = "../src/handle/lifecycle.rs"]
mod lifecycle;

use lifecycle::{CLOSED, Lifecycle};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};

struct Model {
    life: Lifecycle,
    teardowns: AtomicUsize,
    close_wins: AtomicUsize,
    last_releases: AtomicUsize,
    ops_run: AtomicUsize,
}

impl Model {
    /// What `NodeCore::start_teardown` + `finish_teardown` do, minus the reaper hop.
    fn teardown(&self) {
        if self.life.claim_teardown() {
            self.teardowns.fetch_add(1, Ordering::SeqCst);
            self.life.set_closed();
        }
    }
}

fn run_model(with_op: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let m = Arc::new(Model {
            life: Lifecycle::new(),
            teardowns: AtomicUsize::new(0),
            close_wins: AtomicUsize::new(0),
            last_releases: AtomicUsize::new(0),
            ops_run: AtomicUsize::new(0),
        });
        m.life.retain_external(); // the handle and a second holder (e.g. the peer's view of a shared node)
        let mut threads = Vec::new();
        let c = m.clone();
        threads.push(loom::thread::spawn(move || {
            // close(): twice, the second must be a no-op
            for _ in 0..2 {
                if c.life.begin_close() {
                    c.close_wins.fetch_add(1, Ordering::SeqCst);
                    // (cascade and close hooks run here)
                    if c.life.leave_op() {
                        c.teardown();
                    }
                }
            }
        }));
        let r = m.clone();
        threads.push(loom::thread::spawn(move || {
            if r.life.release_external() {
                r.last_releases.fetch_add(1, Ordering::SeqCst);
            }
        }));
        if with_op {
            let o = m.clone();
            threads.push(loom::thread::spawn(move || {
                if o.life.enter_op() {
                    o.ops_run.fetch_add(1, Ordering::SeqCst);
                }
                if o.life.leave_op() {
                    o.teardown();
                }
            }));
        }
        let p = m.clone();
        threads.push(loom::thread::spawn(move || {
            if p.life.release_external() {
                p.last_releases.fetch_add(1, Ordering::SeqCst);
            }
        }));
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.close_wins.load(Ordering::SeqCst), 1, "exactly one terminal transition");
        assert_eq!(m.last_releases.load(Ordering::SeqCst), 1, "exactly one last release");
        assert_eq!(m.teardowns.load(Ordering::SeqCst), 1, "teardown ran once and was not lost");
        assert_eq!(m.life.state(), CLOSED);
        // The final drop of the node must find the teardown already claimed.
        assert!(!m.life.claim_teardown());
    });
}

#[test]
fn t13_close_release_peer_release() {
    run_model(false);
}

#[test]
fn t13_close_release_operation_peer_release() {
    run_model(true);
}
