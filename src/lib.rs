//! cdc-bridge: keeps a table in sync between per-tenant PostgreSQL databases
//! and a central landlord database, through Kafka, using logical replication.
//!
//! # Layout
//!
//! ```text
//!  tenant DBs ─(pgoutput)─► source ─► kafka ─► applier ─► landlord DB
//!  landlord DB ─(pgoutput)─► source ─► kafka ─► applier ─► tenant DBs
//! ```
//!
//! Folders are layers; a module only uses the layers before it:
//!
//! * [`model`]: pure vocabulary (LSN, envelope, sides, directions, conflict rule).
//! * [`config`]: the configuration file, validated once.
//! * `runtime`: shutdown signal, retry policy, metrics.
//! * [`postgres`] and [`kafka`]: the I/O adapters.
//! * [`source`]: the reader (replication protocol, `pgoutput`, snapshot, stream).
//! * `applier`: Kafka to the opposite side under last writer wins.
//! * `consistency`: the check (and repair) that both sides agree.
//! * `replay`: the topic applied again (replay), or refilled (backfill).
//! * `service`: the `run` command (roles, tenant discovery, HTTP).
//! * [`cli`]: the command line.

// Public: what the binary and the benchmarks use; the rest is internal.
pub(crate) mod applier;
pub mod cli;
pub mod config;
pub(crate) mod consistency;
pub mod kafka;
pub mod model;
pub mod postgres;
pub(crate) mod replay;
pub(crate) mod runtime;
pub(crate) mod service;
pub mod source;

/// What `benches/status_endpoint.rs` drives: the HTTP endpoint and the
/// status board it serves. Not an API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::runtime::shutdown::channel as shutdown_channel;
    pub use crate::runtime::status::{status, ApplierState, CheckEntry, ReaderState, TenantEntry};
    pub use crate::service::http::serve;
}

#[cfg(test)]
mod layering;
