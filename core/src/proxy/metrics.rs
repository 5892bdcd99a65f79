//! Metrics a plugin defines and records (counter, gauge, histogram), readable by the embedder.
//!
//! One registry per [`ProxyHost`](super::ProxyHost). Defining an existing name of the same type returns the
//! existing metric, so every VM and plugin that defines `requests_total` counts into one value.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::types::{MetricType, Status};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A metric's current state, as the embedder reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSnapshot {
    /// The name the plugin gave.
    pub name: String,
    /// Its type.
    pub kind: MetricType,
    /// Counter or gauge value; for a histogram, the number of recorded values.
    pub value: i64,
    /// Histogram only: the sum of recorded values.
    pub sum: i64,
    /// Histogram only: the smallest recorded value (0 when none).
    pub min: i64,
    /// Histogram only: the largest recorded value (0 when none).
    pub max: i64,
}

struct Metric {
    name: String,
    kind: MetricType,
    value: i64,
    sum: i64,
    min: i64,
    max: i64,
}

#[derive(Default)]
struct Registry {
    by_id: Vec<Metric>,
    by_name: HashMap<String, u32>,
}

/// The metric registry of a host.
#[derive(Default)]
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
}

impl Metrics {
    /// Defines `name` of `kind` (or finds it). A name defined with another type is BAD_ARGUMENT.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let mut registry = lock(&self.registry);
        if let Some(&id) = registry.by_name.get(name) {
            return if registry.by_id[id as usize].kind == kind { Ok(id) } else { Err(Status::BadArgument) };
        }
        let id = registry.by_id.len() as u32;
        registry.by_id.push(Metric { name: name.to_string(), kind, value: 0, sum: 0, min: 0, max: 0 });
        registry.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// Sets a gauge or counter, or records a histogram value.
    pub(crate) fn record(&self, id: u32, value: i64) -> Result<(), Status> {
        let mut registry = lock(&self.registry);
        let metric = registry.by_id.get_mut(id as usize).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Counter | MetricType::Gauge => metric.value = value,
            MetricType::Histogram => {
                if metric.value == 0 {
                    metric.min = value;
                    metric.max = value;
                } else {
                    metric.min = metric.min.min(value);
                    metric.max = metric.max.max(value);
                }
                metric.value += 1;
                metric.sum = metric.sum.saturating_add(value);
            }
        }
        Ok(())
    }

    /// Adds `delta`. A counter cannot go down (BAD_ARGUMENT); a histogram cannot be incremented.
    pub(crate) fn increment(&self, id: u32, delta: i64) -> Result<(), Status> {
        let mut registry = lock(&self.registry);
        let metric = registry.by_id.get_mut(id as usize).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Counter if delta < 0 => Err(Status::BadArgument),
            MetricType::Histogram => Err(Status::BadArgument),
            _ => {
                metric.value = metric.value.saturating_add(delta);
                Ok(())
            }
        }
    }

    /// The value of a counter or gauge (BAD_ARGUMENT for a histogram).
    pub(crate) fn get(&self, id: u32) -> Result<i64, Status> {
        let registry = lock(&self.registry);
        let metric = registry.by_id.get(id as usize).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(metric.value),
        }
    }

    /// Every metric, in definition order.
    pub(crate) fn snapshot(&self) -> Vec<MetricSnapshot> {
        lock(&self.registry)
            .by_id
            .iter()
            .map(|m| MetricSnapshot {
                name: m.name.clone(),
                kind: m.kind,
                value: m.value,
                sum: m.sum,
                min: m.min,
                max: m.max,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_follow_their_rules() {
        let metrics = Metrics::default();
        let c = metrics.define(MetricType::Counter, "c").unwrap();
        assert_eq!(metrics.define(MetricType::Counter, "c").unwrap(), c);
        assert_eq!(metrics.define(MetricType::Gauge, "c"), Err(Status::BadArgument));
        metrics.increment(c, 2).unwrap();
        assert_eq!(metrics.increment(c, -1), Err(Status::BadArgument));
        assert_eq!(metrics.get(c).unwrap(), 2);
        let g = metrics.define(MetricType::Gauge, "g").unwrap();
        metrics.record(g, 10).unwrap();
        metrics.increment(g, -3).unwrap();
        assert_eq!(metrics.get(g).unwrap(), 7);
        let h = metrics.define(MetricType::Histogram, "h").unwrap();
        for v in [5, 1, 9] {
            metrics.record(h, v).unwrap();
        }
        assert_eq!(metrics.get(h), Err(Status::BadArgument));
        let snap = metrics.snapshot();
        assert_eq!((snap[2].value, snap[2].sum, snap[2].min, snap[2].max), (3, 15, 1, 9));
        assert_eq!(metrics.record(99, 1), Err(Status::NotFound));
    }
}
