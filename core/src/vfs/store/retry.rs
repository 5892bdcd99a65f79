//! Which store errors are worth another attempt, and how long to wait before it.
//!
//! bcv runs exactly one retry loop per request: the HTTP stores are built with `object_store`'s own retries
//! switched off (see [`super::url`]), so every attempt is visible to the [`Meter`](super::Meter) and to the
//! [`FaultStore`](super::FaultStore).

use std::time::Duration;

/// Marks an `object_store::Error::Generic` whose cause must not be retried (a custom store's permanent failure,
/// an auth callback that refused).
///
/// Wrap it as the `source` of `object_store::Error::Generic` and [`is_transient`] returns false for that error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PermanentError(pub String);

/// Marks an error produced by bcv's own request timeout (see `StoreOptions::request_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct TimedOut(pub Duration);

/// True when `error` may go away on its own: 5xx-like `Generic` errors, network failures and timeouts.
///
/// Not-found, precondition, already-exists, not-modified, authentication, permission, unsupported and invalid
/// path errors are never transient. A `Generic` error whose source is a [`PermanentError`] is not transient either.
/// `object_store` folds 4xx statuses it has no variant for (400, 416…) into `Generic` as well; those are retried
/// too, which costs at most `retries` extra requests.
pub fn is_transient(error: &object_store::Error) -> bool {
    match error {
        object_store::Error::Generic { source, .. } => source.downcast_ref::<PermanentError>().is_none(),
        object_store::Error::JoinError { .. } => false,
        _ => false,
    }
}

/// The delay before retry number `retry` (1-based): `base · 2^(retry-1)`, capped at 5 s, with "equal jitter"
/// (a uniformly random point in the upper half), so that clients that failed together do not retry together.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(5);
    let exp = retry.saturating_sub(1).min(16);
    let full = base.saturating_mul(1u32 << exp).min(CAP);
    let half = full / 2;
    let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let random = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    let extra = if jitter_nanos == 0 { 0 } else { random % (jitter_nanos + 1) };
    half + Duration::from_nanos(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(50);
        for _ in 0..100 {
            let d1 = backoff(base, 1);
            assert!(d1 >= Duration::from_millis(25) && d1 <= Duration::from_millis(50), "{d1:?}");
            let d3 = backoff(base, 3);
            assert!(d3 >= Duration::from_millis(100) && d3 <= Duration::from_millis(200), "{d3:?}");
            let d30 = backoff(base, 30);
            assert!(d30 <= Duration::from_secs(5) && d30 >= Duration::from_millis(2500), "{d30:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn classification() {
        let generic = object_store::Error::Generic { store: "x", source: "503".into() };
        assert!(is_transient(&generic));
        let permanent =
            object_store::Error::Generic { store: "x", source: Box::new(PermanentError("no such bucket".into())) };
        assert!(!is_transient(&permanent));
        let nf = object_store::Error::NotFound { path: "a".into(), source: "gone".into() };
        assert!(!is_transient(&nf));
        let pre = object_store::Error::Precondition { path: "a".into(), source: "etag".into() };
        assert!(!is_transient(&pre));
        let auth = object_store::Error::Unauthenticated { path: "a".into(), source: "401".into() };
        assert!(!is_transient(&auth));
    }
}
