//! Process services every long-running part uses: the one shutdown signal,
//! the retry policy, and the metrics registry.

pub(crate) mod metrics;
pub(crate) mod retry;
pub mod shutdown;
