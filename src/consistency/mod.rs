//! The consistency check: are both sides of every tenant the same, and, on
//! request, make them so (newest wins, through the applier's locked write
//! path). Used by `cdc-bridge check` and periodically inside `run`.
//!
//! ```text
//!  registry ─► per tenant (throttled): read both sides' rows and tombstones
//!           ─► compare (pure, `compare`) ─► divergent? read again after a
//!              moment (a change in flight is not a divergence)
//!           ─► --repair: newer side's row/tombstone ─► DirectWriter ─► other side
//!           ─► report: one state per tenant, counts, inconsistency rate
//! ```
//! Reads take no locks; a repair writes one row per transaction.

mod check;
pub mod compare;
pub mod periodic;
mod report;

pub use check::{run_check, CheckError, CheckOptions};
