//! Size limits of a pipeline: stages, matrix instances, retries and timeouts. Constants only, so that the
//! reader and the checks share them without importing each other.

use std::time::Duration;

/// Most stages a pipeline may have after matrix expansion.
pub const MAX_STAGES: usize = 10_000;
/// Most instances one matrix may expand to.
pub const MAX_MATRIX_INSTANCES: usize = 256;
/// Longest `timeout`: anything longer is a typo, and timers must stay far from overflowing.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
/// Most extra attempts a stage may ask for.
pub const MAX_RETRY: u8 = 10;
