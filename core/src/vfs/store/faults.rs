//! Fault injection: an [`ObjectStore`] wrapper that fails on purpose, following a [`FaultPlan`].
//!
//! Tests wrap a real store (usually memory or a local directory) in a [`FaultStore`] and hand it to
//! [`ContainerStore::from_object_store`](super::ContainerStore::from_object_store). Each call is classified by
//! [`OpKind`] and object name; the plan's rules are tried in order and the first one that fires decides the fault:
//!
//! * [`FaultAction::Unavailable`] — the call fails with an `object_store::Error::Generic` that reads like an HTTP
//!   503, before reaching the inner store (retryable);
//! * [`FaultAction::Delay`] — the call waits, then proceeds (longer than the request timeout → a timeout);
//! * [`FaultAction::ShortRead`] — a GET returns only the first half of the body while claiming the full range
//!   (a connection cut mid-body);
//! * [`FaultAction::FailAfterPut`] — a PUT is performed, then reported as a 503: the ambiguous case where the
//!   client cannot know whether its write landed.
//!
//! A rule fires on every matching call, on the first `n`, on the `n`-th only, or with a probability drawn from a
//! generator seeded by the plan (the same seed and call sequence give the same faults). The plan can be replaced
//! while the store is in use ([`FaultStore::set_plan`]).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::meter::OpKind;

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Fail before reaching the inner store, like an HTTP 503 (a retryable `Generic` error).
    Unavailable,
    /// Wait this long, then perform the call.
    Delay(Duration),
    /// Return only the first half of a GET's body (applies to `Get` and `RangedGet` only).
    ShortRead,
    /// Perform the PUT, then report a 503 (applies to `Put` and `ConditionalPut` only).
    FailAfterPut,
}

impl FaultAction {
    fn applies_to(&self, kind: OpKind) -> bool {
        match self {
            FaultAction::Unavailable | FaultAction::Delay(_) => true,
            FaultAction::ShortRead => matches!(kind, OpKind::Get | OpKind::RangedGet),
            FaultAction::FailAfterPut => matches!(kind, OpKind::Put | OpKind::ConditionalPut),
        }
    }
}

/// Which of its matching calls a rule fires on.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultWhen {
    /// Every matching call.
    Always,
    /// The first `n` matching calls.
    First(u64),
    /// Only the `n`-th matching call (1-based).
    Nth(u64),
    /// Each matching call with this probability (0.0–1.0), drawn from the plan's seeded generator.
    Probability(f64),
}

/// One rule of a [`FaultPlan`]: which calls it matches, when it fires and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// The kind of call matched; `None` matches every kind.
    pub op: Option<OpKind>,
    /// A glob on the object name (`*` any run of characters, `?` one character); `None` matches every name.
    /// Listings have the empty name.
    pub object: Option<String>,
    /// Which matching calls fire.
    pub when: FaultWhen,
    /// What a firing does.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule doing `action` on every call its action applies to; narrow it with the other methods.
    pub fn new(action: FaultAction) -> FaultRule {
        FaultRule { op: None, object: None, when: FaultWhen::Always, action }
    }

    /// Matches only calls of `kind`.
    pub fn op(mut self, kind: OpKind) -> FaultRule {
        self.op = Some(kind);
        self
    }

    /// Matches only objects whose name matches the glob `pattern`.
    pub fn object(mut self, pattern: impl Into<String>) -> FaultRule {
        self.object = Some(pattern.into());
        self
    }

    /// Fires on the first `n` matching calls.
    pub fn first(mut self, n: u64) -> FaultRule {
        self.when = FaultWhen::First(n);
        self
    }

    /// Fires on the `n`-th matching call only (1-based).
    pub fn nth(mut self, n: u64) -> FaultRule {
        self.when = FaultWhen::Nth(n);
        self
    }

    /// Fires on each matching call with probability `p`.
    pub fn probability(mut self, p: f64) -> FaultRule {
        self.when = FaultWhen::Probability(p);
        self
    }

    fn matches(&self, kind: OpKind, object: &str) -> bool {
        self.action.applies_to(kind)
            && self.op.is_none_or(|op| op == kind)
            && self.object.as_deref().is_none_or(|pattern| glob_match(pattern, object))
    }
}

/// An ordered list of [`FaultRule`]s plus the seed of the probability generator. The default plan injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// The rules, tried in order; the first that fires wins.
    pub rules: Vec<FaultRule>,
    /// Seed of the generator used by [`FaultWhen::Probability`].
    pub seed: u64,
}

impl FaultPlan {
    /// An empty plan (no faults), seed 0.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> FaultPlan {
        self.seed = seed;
        self
    }

    /// Appends a rule.
    pub fn rule(mut self, rule: FaultRule) -> FaultPlan {
        self.rules.push(rule);
        self
    }
}

/// `*` matches any run of characters (empty included), `?` exactly one; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

struct State {
    plan: FaultPlan,
    matched: Vec<u64>,
    rng: u64,
    injected: u64,
}

impl State {
    fn new(plan: FaultPlan) -> State {
        let rng = plan.seed ^ 0x5851_f42d_4c95_7f2d;
        State { matched: vec![0; plan.rules.len()], plan, rng, injected: 0 }
    }

    /// splitmix64: a small, well-mixed generator; good enough to decide faults reproducibly.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&mut self, kind: OpKind, object: &str) -> Option<FaultAction> {
        for i in 0..self.plan.rules.len() {
            if !self.plan.rules[i].matches(kind, object) {
                continue;
            }
            self.matched[i] += 1;
            let n = self.matched[i];
            let fires = match self.plan.rules[i].when {
                FaultWhen::Always => true,
                FaultWhen::First(k) => n <= k,
                FaultWhen::Nth(k) => n == k,
                FaultWhen::Probability(p) => self.next_unit() < p,
            };
            if fires {
                self.injected += 1;
                return Some(self.plan.rules[i].action.clone());
            }
        }
        None
    }
}

/// An [`ObjectStore`] that forwards to an inner store and injects the faults of its [`FaultPlan`].
///
/// Cheap to share behind an `Arc`; the plan and counters are behind a mutex held only to decide a fault.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl FaultStore {
    /// Wraps `inner`, injecting the faults of `plan`.
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> FaultStore {
        FaultStore { inner, state: Arc::new(Mutex::new(State::new(plan))) }
    }

    /// Replaces the plan and restarts its call counters and generator (faults injected so far stay counted).
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.lock();
        let injected = state.injected;
        *state = State::new(plan);
        state.injected = injected;
    }

    /// How many faults were injected since the store was created.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after any panic (plain counters), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn decide(&self, kind: OpKind, object: &str) -> Option<FaultAction> {
        self.lock().decide(kind, object)
    }
}

fn unavailable(kind: OpKind, object: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected fault: 503 Service Unavailable ({} {object})", kind.name()).into(),
    }
}

fn get_kind(options: &GetOptions) -> OpKind {
    if options.head {
        OpKind::Head
    } else if options.range.is_some() {
        OpKind::RangedGet
    } else {
        OpKind::Get
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let kind = if matches!(opts.mode, PutMode::Overwrite) { OpKind::Put } else { OpKind::ConditionalPut };
        let name = location.as_ref();
        match self.decide(kind, name) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(FaultAction::Unavailable) => Err(unavailable(kind, name)),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.put_opts(location, payload, opts).await
            }
            Some(FaultAction::FailAfterPut) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(unavailable(kind, name))
            }
            Some(FaultAction::ShortRead) => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        match self.decide(OpKind::Put, location.as_ref()) {
            Some(FaultAction::Unavailable) => Err(unavailable(OpKind::Put, location.as_ref())),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.put_multipart_opts(location, opts).await
            }
            _ => self.inner.put_multipart_opts(location, opts).await,
        }
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let kind = get_kind(&options);
        let name = location.as_ref();
        match self.decide(kind, name) {
            None | Some(FaultAction::FailAfterPut) => self.inner.get_opts(location, options).await,
            Some(FaultAction::Unavailable) => Err(unavailable(kind, name)),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.get_opts(location, options).await
            }
            Some(FaultAction::ShortRead) => {
                let result = self.inner.get_opts(location, options).await?;
                let meta = result.meta.clone();
                let range = result.range.clone();
                let attributes = result.attributes.clone();
                let body = result.bytes().await?;
                let cut: Bytes = body.slice(..body.len() / 2);
                let payload = GetResultPayload::Stream(futures::stream::once(async move { Ok(cut) }).boxed());
                Ok(GetResult { payload, meta, range, attributes, extensions: Default::default() })
            }
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // One decision per range, through get_opts.
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let result = self.get_opts(location, GetOptions::new().with_range(Some(r.clone()))).await?;
            out.push(result.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let state = Arc::clone(&self.state);
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                let state = Arc::clone(&state);
                async move {
                    let location = location?;
                    let action =
                        state.lock().unwrap_or_else(|p| p.into_inner()).decide(OpKind::Delete, location.as_ref());
                    match action {
                        Some(FaultAction::Unavailable) => return Err(unavailable(OpKind::Delete, location.as_ref())),
                        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
                        _ => {}
                    }
                    let mut one = inner.delete_stream(futures::stream::once(async move { Ok(location) }).boxed());
                    match one.next().await {
                        Some(result) => result,
                        None => Err(object_store::Error::Generic {
                            store: "FaultStore",
                            source: "the inner store's delete_stream yielded nothing".into(),
                        }),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.decide(OpKind::List, "") {
            Some(FaultAction::Unavailable) => {
                futures::stream::once(async { Err(unavailable(OpKind::List, "")) }).boxed()
            }
            Some(FaultAction::Delay(d)) => {
                let listing = self.inner.list(prefix);
                futures::stream::once(async move {
                    tokio::time::sleep(d).await;
                    listing
                })
                .flatten()
                .boxed()
            }
            _ => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.decide(OpKind::List, "") {
            Some(FaultAction::Unavailable) => Err(unavailable(OpKind::List, "")),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.list_with_delimiter(prefix).await
            }
            _ => self.inner.list_with_delimiter(prefix).await,
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match self.decide(OpKind::Put, to.as_ref()) {
            Some(FaultAction::Unavailable) => Err(unavailable(OpKind::Put, to.as_ref())),
            Some(FaultAction::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.copy_opts(from, to, options).await
            }
            Some(FaultAction::FailAfterPut) => {
                self.inner.copy_opts(from, to, options).await?;
                Err(unavailable(OpKind::Put, to.as_ref()))
            }
            _ => self.inner.copy_opts(from, to, options).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("manifest.bcv", "manifest.bcv"));
        assert!(!glob_match("manifest.bcv", "manifest.bcvx"));
        assert!(glob_match("*.bcv", "abc.bcv"));
        assert!(!glob_match("*.bcv", "abc.bcx"));
        assert!(glob_match("a*b*c", "a__b__b__c"));
        assert!(glob_match("?x", "ax"));
        assert!(!glob_match("?x", "x"));
    }

    #[test]
    fn rules_fire_as_planned() {
        let plan = FaultPlan::new()
            .rule(FaultRule::new(FaultAction::Unavailable).op(OpKind::Get).first(2))
            .rule(FaultRule::new(FaultAction::ShortRead).object("b*").nth(2))
            .rule(FaultRule::new(FaultAction::FailAfterPut).op(OpKind::Get));
        let mut s = State::new(plan);
        assert_eq!(s.decide(OpKind::Get, "a"), Some(FaultAction::Unavailable));
        assert_eq!(s.decide(OpKind::Get, "a"), Some(FaultAction::Unavailable));
        assert_eq!(s.decide(OpKind::Get, "a"), None);
        assert_eq!(s.decide(OpKind::RangedGet, "b1"), None);
        assert_eq!(s.decide(OpKind::RangedGet, "b2"), Some(FaultAction::ShortRead));
        assert_eq!(s.decide(OpKind::Put, "b3"), None, "ShortRead does not apply to PUT");
        assert_eq!(s.injected, 3);
    }

    #[test]
    fn probability_is_seeded() {
        let plan = || FaultPlan::new().seed(42).rule(FaultRule::new(FaultAction::Unavailable).probability(0.3));
        let run = |plan: FaultPlan| {
            let mut s = State::new(plan);
            (0..1000).map(|_| s.decide(OpKind::Get, "x").is_some()).collect::<Vec<_>>()
        };
        let a = run(plan());
        assert_eq!(a, run(plan()));
        let fired = a.iter().filter(|&&f| f).count();
        assert!((200..400).contains(&fired), "{fired}");
    }
}
