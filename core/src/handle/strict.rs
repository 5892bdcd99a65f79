//! Strict mode: ordering mistakes reported as diagnostics, never enforced (LIFETIMES.md §5, option 1).
//!
//! Strict mode never changes behaviour. At level `Warn` a violation is logged (`tracing`), counted and
//! passed to the hook; at level `Error` it is also queued on the offending thread, and the next SDK call on
//! that thread (or [`Runtime::check`](super::Runtime::check)) raises it, never a finalizer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::node::{NodeCore, lock};

/// How strict mode reports violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StrictLevel {
    /// No reporting (the default).
    #[default]
    Off,
    /// Log, count and call the hook.
    Warn,
    /// As `Warn`, and raise at the next SDK call on the offending thread.
    Error,
}

/// Which ordering rules are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StrictProfile {
    /// Everything except V1 (releasing a parent before its children is legal).
    #[default]
    Hygiene,
    /// Also V1, the WASIp2 trap condition.
    Wasip2,
}

/// Strict-mode settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StrictConfig {
    /// Reporting level.
    pub level: StrictLevel,
    /// Rule set.
    pub profile: StrictProfile,
}

impl StrictConfig {
    /// Reads `BCV_STRICT` (`off`, `warn`, `error`, optionally `,wasip2`); unknown text means off.
    pub fn from_env() -> StrictConfig {
        std::env::var("BCV_STRICT").map(|v| StrictConfig::parse(&v)).unwrap_or_default()
    }

    /// Parses a `BCV_STRICT` value such as `"error,wasip2"`.
    pub fn parse(text: &str) -> StrictConfig {
        let mut cfg = StrictConfig::default();
        for part in text.split(',').map(str::trim) {
            match part.to_ascii_lowercase().as_str() {
                "warn" => cfg.level = StrictLevel::Warn,
                "error" => cfg.level = StrictLevel::Error,
                "wasip2" => cfg.profile = StrictProfile::Wasip2,
                "hygiene" => cfg.profile = StrictProfile::Hygiene,
                _ => {}
            }
        }
        cfg
    }
}

/// The ordering mistakes strict mode reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// V1: a parent was released while dependents were alive (reported under the `wasip2` profile only).
    ParentBeforeChild = 1,
    /// V2: a stream writer was released without `finish()` or `close()`.
    WriterNotFinished = 2,
    /// V3: a future writer was released without a value.
    FutureNotWritten = 3,
    /// V4: a resource handle was garbage-collected while still open.
    CollectedWhileOpen = 4,
    /// V5: an operation on a closed node.
    UseAfterClose = 5,
    /// V6: `close_and_wait` where waiting could deadlock.
    WouldDeadlock = 6,
}

impl ViolationKind {
    /// `"V1"` … `"V6"`.
    pub fn code(self) -> &'static str {
        ["V1", "V2", "V3", "V4", "V5", "V6"][self as usize - 1]
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ViolationKind::ParentBeforeChild => "parent released before its dependents",
            ViolationKind::WriterNotFinished => "writer released without finish()",
            ViolationKind::FutureNotWritten => "future writer released without a value",
            ViolationKind::CollectedWhileOpen => "resource garbage-collected while open",
            ViolationKind::UseAfterClose => "use after close",
            ViolationKind::WouldDeadlock => "close_and_wait where it could deadlock",
        };
        write!(f, "{} {what}", self.code())
    }
}

/// One strict-mode report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Which rule.
    pub kind: ViolationKind,
    /// The node it concerns.
    pub node_id: u64,
    /// The node's label (`"pipe writer"`, …).
    pub node_label: &'static str,
    /// Where the node was created, when strict mode was on at that time.
    pub creation_backtrace: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "strict mode {}: node {} ({})", self.kind, self.node_id, self.node_label)
    }
}

impl std::error::Error for Diagnostic {}

/// The recent diagnostics of a runtime.
pub type Diagnostics = Vec<Diagnostic>;

/// A function called (on the reaper thread) with every strict-mode diagnostic.
pub type StrictHook = Arc<dyn Fn(&Diagnostic) + Send + Sync>;
type Hook = StrictHook;

const RECENT_LIMIT: usize = 256;
const PENDING_LIMIT: usize = 64;

pub(crate) struct StrictState {
    config: StrictConfig,
    counters: [AtomicU64; 6],
    recent: Mutex<VecDeque<Diagnostic>>,
    hook: Mutex<Option<Hook>>,
}

thread_local! {
    static PENDING: RefCell<VecDeque<Diagnostic>> = const { RefCell::new(VecDeque::new()) };
}

/// Takes the oldest strict-mode violation queued on this thread at level `Error`.
pub fn take_pending() -> Option<Diagnostic> {
    PENDING.try_with(|p| p.borrow_mut().pop_front()).ok().flatten()
}

impl StrictState {
    pub(crate) fn new(config: StrictConfig) -> StrictState {
        StrictState {
            config,
            counters: Default::default(),
            recent: Mutex::new(VecDeque::new()),
            hook: Mutex::new(None),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.level != StrictLevel::Off
    }

    pub(crate) fn wasip2(&self) -> bool {
        self.config.profile == StrictProfile::Wasip2
    }

    pub(crate) fn capture_backtrace(&self) -> Option<String> {
        self.enabled().then(|| std::backtrace::Backtrace::force_capture().to_string())
    }

    pub(crate) fn counters(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed))
    }

    pub(crate) fn recent(&self) -> Diagnostics {
        lock(&self.recent).iter().cloned().collect()
    }

    pub(crate) fn set_hook(&self, hook: Option<Hook>) {
        *lock(&self.hook) = hook;
    }

    /// Records a violation: counter, log line, hook (on the reaper), and the thread's pending queue.
    pub(crate) fn report(&self, kind: ViolationKind, node: &NodeCore) {
        if !self.enabled() {
            return;
        }
        self.counters[kind as usize - 1].fetch_add(1, Ordering::Relaxed);
        let diag = Diagnostic {
            kind,
            node_id: node.id(),
            node_label: node.label(),
            creation_backtrace: node.backtrace().map(str::to_owned),
        };
        tracing::warn!(target: "bcv::strict", node = diag.node_id, label = diag.node_label, "{}", diag.kind);
        {
            let mut recent = lock(&self.recent);
            if recent.len() == RECENT_LIMIT {
                recent.pop_front();
            }
            recent.push_back(diag.clone());
        }
        if self.config.level == StrictLevel::Error {
            // Bounded: a thread that never makes another SDK call (an executor worker) must not pile up.
            let _ = PENDING.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() == PENDING_LIMIT {
                    p.pop_front();
                }
                p.push_back(diag.clone());
            });
        }
        if let Some(hook) = lock(&self.hook).clone() {
            node.rt.defer(Box::new(move || hook(&diag)));
        }
    }
}
