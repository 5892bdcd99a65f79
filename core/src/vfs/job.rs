//! [`VfsJob`]: a prefetch or an upload running in the background, as a handle-runtime node.
//!
//! The job is a child of the container it works on (itself a child of the VFS), so closing the VFS or
//! detaching the container cancels it (LIFETIMES.md: `close()` cascades). Releasing the job's handle does not
//! stop it: its work keeps the node alive until it finishes, like any resource with a task in flight.
//! `close()` cancels: the job stops at its next block and fails with [`VfsError::Closed`]; an upload that has
//! already sent its manifest finishes, so a cancelled upload is either complete or leaves the container as it
//! was (its unreferenced blocks are found by cleanup).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::attached::UploadReport;
use super::database::PrefetchReport;
use super::tools::Progress;
use super::{VfsError, VfsResult};
use crate::handle::{Node, NodeState};

/// What a finished job produced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// A prefetch completed.
    Prefetch(PrefetchReport),
    /// An upload completed.
    Upload(UploadReport),
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still working.
    Running,
    /// Finished successfully; [`VfsJob::wait`] returns the outcome.
    Done,
    /// Finished with an error; [`VfsJob::wait`] returns it.
    Failed,
    /// Stopped by `close()` (or by closing the container or VFS it belongs to) before it finished.
    Cancelled,
}

/// Cancellation and progress shared by a job's worker and the code it runs.
#[derive(Default)]
pub(crate) struct JobControl {
    cancelled: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
}

impl JobControl {
    /// A control nobody cancels, for the synchronous calls.
    pub(crate) fn detached() -> JobControl {
        JobControl::default()
    }

    /// Errors with [`VfsError::Closed`] once the job was cancelled; `what` names the work in the message.
    pub(crate) fn check(&self, what: &str) -> VfsResult<()> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(VfsError::Closed(format!("{what} (cancelled)")));
        }
        Ok(())
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn advance(&self, bytes: u64) -> Progress {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        Progress { done, total: self.total.load(Ordering::Relaxed) }
    }

    pub(crate) fn progress(&self) -> Progress {
        Progress { done: self.done.load(Ordering::Relaxed), total: self.total.load(Ordering::Relaxed) }
    }
}

/// The result slot of a job: empty while it runs; the outcome, or the error until the first `wait` takes it.
enum Slot {
    Running,
    Done(JobOutcome),
    Failed(Option<VfsError>, String),
    Cancelled(String),
}

pub(crate) struct JobShared {
    pub(crate) control: JobControl,
    what: String,
    slot: Mutex<Slot>,
    finished: Condvar,
}

fn lock(m: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobShared {
    pub(crate) fn new(what: String) -> Arc<JobShared> {
        Arc::new(JobShared {
            control: JobControl::default(),
            what,
            slot: Mutex::new(Slot::Running),
            finished: Condvar::new(),
        })
    }

    /// Records the job's result and wakes waiters.
    pub(crate) fn finish(&self, result: VfsResult<JobOutcome>) {
        let slot = match result {
            Ok(outcome) => Slot::Done(outcome),
            // Keep the inner text: `wait` wraps it in `Closed` again (its Display adds "is closed").
            Err(VfsError::Closed(what)) if self.control.is_cancelled() => Slot::Cancelled(what),
            Err(e) => {
                let text = e.to_string();
                Slot::Failed(Some(e), text)
            }
        };
        *lock(&self.slot) = slot;
        self.finished.notify_all();
    }
}

/// A background prefetch or upload. Thread-safe; clone-free (share it behind an `Arc` if needed).
///
/// Dropping it releases the handle only: the job runs on. `node().close()` (or [`cancel`](Self::cancel))
/// stops it.
pub struct VfsJob {
    node: Node,
    shared: Arc<JobShared>,
}

impl std::fmt::Debug for VfsJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfsJob").field("what", &self.shared.what).field("status", &self.status()).finish()
    }
}

impl VfsJob {
    pub(crate) fn new(node: Node, shared: Arc<JobShared>) -> VfsJob {
        VfsJob { node, shared }
    }

    /// The job's node: `close()`, `close_and_wait`, state, close reason.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// What the job does, e.g. `"prefetch of main/db"`.
    pub fn description(&self) -> &str {
        &self.shared.what
    }

    /// Bytes done and to do so far (the total is known once the job has listed its blocks).
    pub fn progress(&self) -> Progress {
        self.shared.control.progress()
    }

    /// Running, done, failed or cancelled.
    pub fn status(&self) -> JobStatus {
        match &*lock(&self.shared.slot) {
            Slot::Running if self.shared.control.is_cancelled() || self.node.state() == NodeState::Closed => {
                JobStatus::Cancelled
            }
            Slot::Running => JobStatus::Running,
            Slot::Done(_) => JobStatus::Done,
            Slot::Failed(..) => JobStatus::Failed,
            Slot::Cancelled(_) => JobStatus::Cancelled,
        }
    }

    /// Asks the job to stop at its next block (the same as `node().close()`).
    pub fn cancel(&self) {
        self.node.close();
    }

    /// Waits until the job has finished (done, failed or cancelled), at most `timeout` (`None`: no limit),
    /// without taking its result: a later [`wait`](Self::wait) returns it at once. Returns false on timeout.
    pub fn wait_finished(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = lock(&self.shared.slot);
        while matches!(*slot, Slot::Running) {
            slot = match deadline {
                None => self.shared.finished.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.shared.finished.wait_timeout(slot, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        true
    }

    /// Waits for the job to finish, at most `timeout` (`None`: no limit). Returns `Ok(None)` on timeout.
    ///
    /// Errors: the job's error (the original error on the first call, a [`VfsError::Closed`] or a copy of its
    /// message later); [`VfsError::Closed`] when it was cancelled.
    pub fn wait(&self, timeout: Option<Duration>) -> VfsResult<Option<JobOutcome>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = lock(&self.shared.slot);
        loop {
            match &mut *slot {
                Slot::Running => {}
                Slot::Done(outcome) => return Ok(Some(outcome.clone())),
                Slot::Failed(error, text) => {
                    return Err(error.take().unwrap_or_else(|| VfsError::Job(text.clone())));
                }
                Slot::Cancelled(text) => return Err(VfsError::Closed(text.clone())),
            }
            slot = match deadline {
                None => self.shared.finished.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.shared.finished.wait_timeout(slot, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}
