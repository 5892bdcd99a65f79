//! Running the store's async calls from SQLite's (blocking) callbacks.

use super::VfsResult;
use crate::handle::Runtime;

/// Runs `fut` on bcv's runtime and blocks the calling thread until it completes.
///
/// Errors: the future's own, or [`crate::handle::Error::WouldDeadlock`] when called on a runtime thread (an
/// SQLite call made from inside an async task must go through `spawn_blocking`).
pub(crate) fn block_on<T, F>(fut: F) -> VfsResult<T>
where
    F: std::future::Future<Output = VfsResult<T>>,
{
    Runtime::global().block_on(fut)?
}
