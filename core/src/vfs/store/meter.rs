//! Request metering: how many requests of each kind a [`ContainerStore`](super::ContainerStore) made, how many bytes
//! went up and down, how many failed or were retries, and what that would roughly cost.
//!
//! The meter lives *inside* `ContainerStore` (not as an `ObjectStore` wrapper) because only there is the
//! difference between a first attempt and a retry known. Every attempt is one request: a GET retried twice counts
//! 3 requests, 2 retries and 2 errors (plus 1 more error if the last attempt failed too). Counters are relaxed
//! atomics, so metering is always on and costs a few nanoseconds per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The kinds of request bcv makes, each metered separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// GET of a whole object.
    Get,
    /// GET of a byte range.
    RangedGet,
    /// HEAD (metadata only).
    Head,
    /// Unconditional PUT (overwrite).
    Put,
    /// PUT with a condition: create-if-absent or update-if-match.
    ConditionalPut,
    /// DELETE.
    Delete,
    /// LIST (one logical listing; the store may page internally).
    List,
}

impl OpKind {
    /// Every kind, in a fixed order.
    pub const ALL: [OpKind; 7] = [
        OpKind::Get,
        OpKind::RangedGet,
        OpKind::Head,
        OpKind::Put,
        OpKind::ConditionalPut,
        OpKind::Delete,
        OpKind::List,
    ];

    /// The name used in snapshots and reports ("get", "ranged_get", …).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::RangedGet => "ranged_get",
            OpKind::Head => "head",
            OpKind::Put => "put",
            OpKind::ConditionalPut => "conditional_put",
            OpKind::Delete => "delete",
            OpKind::List => "list",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Prices used to estimate what the metered traffic would cost, in US dollars.
///
/// The defaults are **illustrative**, shaped like S3 Standard list prices at the time of writing: $0.005 per 1000
/// "class A" requests (PUT, conditional PUT, LIST), $0.0004 per 1000 "class B" requests (GET, ranged GET, HEAD),
/// free DELETE, $0.09 per GB of egress and free ingress. They are not a quote: set your provider's prices.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PriceTable {
    /// Price per 1000 requests, by kind.
    pub per_1000_requests: BTreeMap<OpKind, f64>,
    /// Price per GB (10^9 bytes) downloaded from the store.
    pub egress_per_gb: f64,
    /// Price per GB (10^9 bytes) uploaded to the store.
    pub ingress_per_gb: f64,
}

impl Default for PriceTable {
    fn default() -> Self {
        let class_a = 0.005;
        let class_b = 0.0004;
        let per_1000_requests = BTreeMap::from([
            (OpKind::Get, class_b),
            (OpKind::RangedGet, class_b),
            (OpKind::Head, class_b),
            (OpKind::Put, class_a),
            (OpKind::ConditionalPut, class_a),
            (OpKind::Delete, 0.0),
            (OpKind::List, class_a),
        ]);
        PriceTable { per_1000_requests, egress_per_gb: 0.09, ingress_per_gb: 0.0 }
    }
}

#[derive(Default, Debug)]
struct Counters {
    requests: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
}

/// Per-kind request counters of one container. Shared by all clones of its `ContainerStore`.
#[derive(Debug)]
pub struct Meter {
    kinds: [Counters; 7],
    prices: PriceTable,
}

/// The counters of one request kind at one moment, with their estimated cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KindSnapshot {
    /// Requests sent (every attempt counts, retries included).
    pub requests: u64,
    /// Payload bytes sent (PUT bodies, once per attempt).
    pub bytes_up: u64,
    /// Payload bytes received.
    pub bytes_down: u64,
    /// Attempts that ended in an error of any kind (not-found and lost conditions included).
    pub errors: u64,
    /// Attempts that were retries of a failed attempt.
    pub retries: u64,
    /// Estimated cost of these requests and bytes, in US dollars, from the meter's [`PriceTable`].
    pub estimated_cost: f64,
}

/// A copy of a [`Meter`]'s counters, by kind name ("get", "ranged_get", "head", "put", "conditional_put",
/// "delete", "list"), plus their sum.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MeterSnapshot {
    /// Counters per kind (every kind is present, zero or not).
    pub kinds: BTreeMap<&'static str, KindSnapshot>,
    /// The sum over all kinds.
    pub total: KindSnapshot,
}

impl MeterSnapshot {
    /// The counters of one kind.
    pub fn kind(&self, kind: OpKind) -> &KindSnapshot {
        static ZERO: KindSnapshot =
            KindSnapshot { requests: 0, bytes_up: 0, bytes_down: 0, errors: 0, retries: 0, estimated_cost: 0.0 };
        self.kinds.get(kind.name()).unwrap_or(&ZERO)
    }
}

impl Meter {
    /// A meter with all counters at zero, pricing with `prices`.
    pub fn new(prices: PriceTable) -> Meter {
        Meter { kinds: Default::default(), prices }
    }

    /// The prices used by [`Meter::snapshot`].
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Counts one request (attempt) of `kind` sending `bytes_up` payload bytes.
    pub fn record_request(&self, kind: OpKind, bytes_up: u64) {
        let c = &self.kinds[kind.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
    }

    /// Counts `bytes` payload bytes received by a request of `kind`.
    pub fn record_bytes_down(&self, kind: OpKind, bytes: u64) {
        self.kinds[kind.index()].bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one failed attempt of `kind`.
    pub fn record_error(&self, kind: OpKind) {
        self.kinds[kind.index()].errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one retry of `kind` (the retried attempt itself is counted by [`Meter::record_request`]).
    pub fn record_retry(&self, kind: OpKind) {
        self.kinds[kind.index()].retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for c in &self.kinds {
            c.requests.store(0, Ordering::Relaxed);
            c.bytes_up.store(0, Ordering::Relaxed);
            c.bytes_down.store(0, Ordering::Relaxed);
            c.errors.store(0, Ordering::Relaxed);
            c.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Copies the counters and prices them. Counters of different kinds are read one after the other, so a
    /// snapshot taken while requests run is not an atomic cut (each counter is exact on its own).
    pub fn snapshot(&self) -> MeterSnapshot {
        let mut snap = MeterSnapshot::default();
        for kind in OpKind::ALL {
            let c = &self.kinds[kind.index()];
            let mut k = KindSnapshot {
                requests: c.requests.load(Ordering::Relaxed),
                bytes_up: c.bytes_up.load(Ordering::Relaxed),
                bytes_down: c.bytes_down.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                retries: c.retries.load(Ordering::Relaxed),
                estimated_cost: 0.0,
            };
            let per_1000 = self.prices.per_1000_requests.get(&kind).copied().unwrap_or(0.0);
            k.estimated_cost = k.requests as f64 / 1000.0 * per_1000
                + k.bytes_down as f64 / 1e9 * self.prices.egress_per_gb
                + k.bytes_up as f64 / 1e9 * self.prices.ingress_per_gb;
            snap.total.requests += k.requests;
            snap.total.bytes_up += k.bytes_up;
            snap.total.bytes_down += k.bytes_down;
            snap.total.errors += k.errors;
            snap.total.retries += k.retries;
            snap.total.estimated_cost += k.estimated_cost;
            snap.kinds.insert(kind.name(), k);
        }
        snap
    }
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(PriceTable::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_prices() {
        let m = Meter::default();
        for _ in 0..1000 {
            m.record_request(OpKind::Get, 0);
        }
        m.record_bytes_down(OpKind::Get, 2_000_000_000);
        m.record_request(OpKind::Put, 10);
        m.record_error(OpKind::Put);
        m.record_retry(OpKind::Put);
        let s = m.snapshot();
        assert_eq!(s.kind(OpKind::Get).requests, 1000);
        assert!((s.kind(OpKind::Get).estimated_cost - (0.0004 + 0.18)).abs() < 1e-9);
        assert_eq!(s.kind(OpKind::Put).bytes_up, 10);
        assert_eq!(s.total.requests, 1001);
        assert_eq!(s.total.errors, 1);
        assert_eq!(s.total.retries, 1);
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["kinds"]["get"]["requests"], 1000);
        m.reset();
        assert_eq!(m.snapshot().total.requests, 0);
    }
}
