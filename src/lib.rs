//! cdc-bridge: keeps a table in sync between per-tenant PostgreSQL databases
//! and a central landlord database, through Kafka, using logical replication.
//!
//! # Layout
//!
//! ```text
//!  tenant DBs ─(pgoutput)─► reader ─► Kafka ─► applier ─► landlord DB
//! ```
//!
//! * Pure logic, no I/O: [`lsn`], [`pgoutput`] (decoder), [`envelope`]
//!   (Kafka contract), [`capture`] (rows to envelopes), [`progress`]
//!   (acknowledgement tracking), [`config`].
//! * I/O adapters: [`replication`] (streaming protocol client), [`postgres`]
//!   (SQL connections, catalogs), [`kafka`], [`target`] (writes to a target
//!   table), [`registry`] (tenant registry), [`setup`] (migrations, topic).
//! * Orchestration: [`reader`] and [`snapshot`] (per source database),
//!   [`delivery`] (events to Kafka), [`applier`], [`bridge`] (the `run`
//!   command), [`http`] and [`metrics`], [`shutdown`].

pub mod applier;
pub mod bridge;
pub mod capture;
pub mod change_stream;
pub mod config;
pub mod conflict;
pub mod dead_letter;
pub mod delivery;
pub mod direction;
pub mod envelope;
pub mod http;
pub mod kafka;
pub mod loop_guard;
pub mod lsn;
pub mod metrics;
pub mod pgoutput;
pub mod postgres;
pub mod preflight;
pub mod progress;
pub mod reader;
pub mod reconcile;
pub mod registry;
pub mod replication;
pub mod setup;
pub mod shutdown;
pub mod snapshot;
pub mod target;
pub mod tls;
