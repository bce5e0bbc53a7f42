//! Process services every long-running part uses: the one shutdown signal,
//! the retry policy, the metrics registry and the status board.

pub(crate) mod metrics;
pub(crate) mod retry;
pub mod shutdown;
pub mod status;
