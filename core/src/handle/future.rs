//! One-shot futures: a write end that delivers one value and a read end that waits for it.
//!
//! A writer released without a value resolves the reader with `Closed{PEER_DROPPED}` (strict V3); a
//! reader that goes away makes `write(v)` return the value back with `Closed{PEER_DROPPED}`, so resources
//! inside it can be released properly (LIFETIMES.md §3.2).

use std::future::poll_fn;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::node::{Node, NodeCore, NodeHooks, NodeKind, lock};
use super::reason::{CloseReason, Closed, Error, Result};
use super::runtime::Runtime;
use super::strict::ViolationKind;

enum SlotState<T> {
    Pending,
    Ready(T),
    Taken,
    Failed(Closed),
}

struct SlotInner<T> {
    state: SlotState<T>,
    reader_gone: Option<Closed>,
    writer_gone: Option<Closed>,
    waker: Option<Waker>,
}

struct Slot<T> {
    inner: Mutex<SlotInner<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    fn update(&self, f: impl FnOnce(&mut SlotInner<T>)) {
        let (waker, dropped) = {
            let mut inner = lock(&self.inner);
            f(&mut inner);
            // A value nobody can read any more is dropped outside the lock.
            let dropped = if inner.reader_gone.is_some() {
                match std::mem::replace(&mut inner.state, SlotState::Taken) {
                    SlotState::Ready(v) => Some(v),
                    other => {
                        inner.state = other;
                        None
                    }
                }
            } else {
                None
            };
            (inner.waker.take(), dropped)
        };
        drop(dropped);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct FutureReaderHooks<T>(Arc<Slot<T>>);
impl<T: Send + 'static> NodeHooks for FutureReaderHooks<T> {
    fn on_close(&self, closed: Closed) {
        self.0.update(|i| {
            i.reader_gone.get_or_insert(closed);
        });
    }
    fn on_last_release(&self) {
        self.0.update(|i| {
            i.reader_gone.get_or_insert(Closed::new(CloseReason::HandleReleased));
        });
    }
}

struct FutureWriterHooks<T>(Arc<Slot<T>>);
impl<T: Send + 'static> NodeHooks for FutureWriterHooks<T> {
    fn on_close(&self, closed: Closed) {
        self.0.update(|i| {
            i.writer_gone.get_or_insert(closed);
            if matches!(i.state, SlotState::Pending) {
                let seen = match closed.reason {
                    CloseReason::RuntimeShutdown | CloseReason::ScopeExited | CloseReason::Abandoned => closed,
                    CloseReason::Parent => closed,
                    _ => Closed::new(CloseReason::PeerDropped),
                };
                i.state = SlotState::Failed(seen);
            }
        });
    }
    fn on_last_release(&self) {
        self.0.update(|i| {
            i.writer_gone.get_or_insert(Closed::new(CloseReason::HandleReleased));
            if matches!(i.state, SlotState::Pending) {
                i.state = SlotState::Failed(Closed::new(CloseReason::PeerDropped));
            }
        });
    }
    fn release_violation(&self) -> Option<ViolationKind> {
        matches!(lock(&self.0.inner).state, SlotState::Pending).then_some(ViolationKind::FutureNotWritten)
    }
}

/// Creates a future pair whose ends are dependent children of the given parents.
pub(crate) fn future_with_parents<T: Send + 'static>(
    rt: &Runtime,
    writer_parent: Option<&Arc<NodeCore>>,
    reader_parent: Option<&Arc<NodeCore>>,
    labels: (&'static str, &'static str),
) -> Result<(FutureWriter<T>, FutureReader<T>), Closed> {
    let slot = Arc::new(Slot {
        inner: Mutex::new(SlotInner { state: SlotState::Pending, reader_gone: None, writer_gone: None, waker: None }),
        ready: Condvar::new(),
    });
    let w = NodeCore::create(
        &rt.shared,
        NodeKind::FutureWriter,
        labels.0,
        writer_parent,
        Box::new(FutureWriterHooks(slot.clone())),
    )?;
    let writer = FutureWriter { node: Node::from_core(w), slot: slot.clone() };
    let r = NodeCore::create(
        &rt.shared,
        NodeKind::FutureReader,
        labels.1,
        reader_parent,
        Box::new(FutureReaderHooks(slot.clone())),
    )?;
    Ok((writer, FutureReader { node: Node::from_core(r), slot }))
}

impl Runtime {
    /// Creates a one-shot future: a writer that delivers one value and a reader that waits for it.
    /// Errors: `Closed{RUNTIME_SHUTDOWN}` after shutdown.
    pub fn future<T: Send + 'static>(&self) -> Result<(FutureWriter<T>, FutureReader<T>), Closed> {
        future_with_parents(self, None, None, ("future writer", "future reader"))
    }
}

/// The write end of a one-shot future.
pub struct FutureWriter<T> {
    node: Node,
    slot: Arc<Slot<T>>,
}

/// A write the reader could not receive: the error and the value handed back.
#[derive(Debug)]
pub struct Undelivered<T> {
    /// Why the value could not be delivered.
    pub closed: Closed,
    /// The value, handed back so resources inside it can be released.
    pub value: T,
}

impl<T: Send + 'static> FutureWriter<T> {
    /// Marks this end as internal (held by a task, never by a user): no scope owns it, and strict mode
    /// does not report it.
    pub(crate) fn internal(self) -> FutureWriter<T> {
        self.node.core.mark_internal();
        self
    }

    /// Delivers `value`. Errors: the value comes back with `Closed{PEER_DROPPED}` if the reader went away,
    /// or with this end's close reason if it was closed or already written.
    pub fn write(&self, value: T) -> Result<(), Undelivered<T>> {
        let mut inner = lock(&self.slot.inner);
        if let Some(c) = inner.writer_gone {
            return Err(Undelivered { closed: c, value });
        }
        if inner.reader_gone.is_some() {
            return Err(Undelivered { closed: Closed::new(CloseReason::PeerDropped), value });
        }
        if !matches!(inner.state, SlotState::Pending) {
            return Err(Undelivered { closed: Closed::new(CloseReason::SelfClosed), value });
        }
        inner.state = SlotState::Ready(value);
        let waker = inner.waker.take();
        drop(inner);
        self.slot.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Resolves the reader with an error instead of a value (e.g. `ABANDONED`). No-op once resolved.
    pub fn fail(&self, closed: Closed) {
        self.slot.update(|i| {
            if matches!(i.state, SlotState::Pending) {
                i.state = SlotState::Failed(closed);
            }
        });
    }

    /// True once the reader went away.
    pub fn is_peer_gone(&self) -> bool {
        lock(&self.slot.inner).reader_gone.is_some()
    }
}

impl<T> Deref for FutureWriter<T> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// The read end of a one-shot future.
pub struct FutureReader<T> {
    node: Node,
    slot: Arc<Slot<T>>,
}

impl<T: Send + 'static> FutureReader<T> {
    fn try_take(inner: &mut SlotInner<T>) -> Poll<Result<T>> {
        if let Some(c) = inner.reader_gone {
            return Poll::Ready(Err(c.into()));
        }
        match std::mem::replace(&mut inner.state, SlotState::Taken) {
            SlotState::Ready(v) => Poll::Ready(Ok(v)),
            SlotState::Failed(c) => {
                inner.state = SlotState::Failed(c);
                Poll::Ready(Err(c.into()))
            }
            SlotState::Taken => Poll::Ready(Err(Error::AlreadyTaken("the future's value"))),
            SlotState::Pending => {
                inner.state = SlotState::Pending;
                Poll::Pending
            }
        }
    }

    /// Waits for the value. Errors: `Closed{…}` when the writer went away or either end was closed;
    /// `Timeout` (nothing lost); `AlreadyTaken` on a second call after success; `WouldDeadlock` on a
    /// runtime worker.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Result<T> {
        let _op = self.node.core.begin_op()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = lock(&self.slot.inner);
        loop {
            if let Poll::Ready(r) = Self::try_take(&mut inner) {
                return r;
            }
            if super::runtime::would_deadlock_here() && !super::runtime::in_callback() {
                return Err(Error::WouldDeadlock);
            }
            inner = match deadline {
                None => self.slot.ready.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(timeout.unwrap_or_default()));
                    }
                    self.slot.ready.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// Async form of [`wait_blocking`](Self::wait_blocking).
    pub async fn wait(&self) -> Result<T> {
        let _op = self.node.core.begin_op()?;
        poll_fn(|cx| {
            let mut inner = lock(&self.slot.inner);
            let r = Self::try_take(&mut inner);
            if r.is_pending() {
                inner.waker = Some(cx.waker().clone());
            }
            r
        })
        .await
    }

    /// True once a value or an error is available.
    pub fn is_resolved(&self) -> bool {
        let inner = lock(&self.slot.inner);
        inner.reader_gone.is_some() || !matches!(inner.state, SlotState::Pending)
    }
}

impl<T> Deref for FutureReader<T> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
