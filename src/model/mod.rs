//! The bridge's vocabulary, as pure logic with no I/O: WAL positions, the
//! Kafka change envelope, the two sides, per-tenant directions, the
//! last-writer-wins rule and the apply marker. Everything else builds on
//! these types; nothing here depends on another module of the crate.

pub mod balance;
pub mod conflict;
pub mod direction;
pub mod envelope;
mod ids;
pub(crate) mod loop_guard;
pub mod lsn;
mod side;

pub use direction::Direction;
pub use envelope::{Envelope, Op, TenantRef};
pub use ids::{SlotName, TenantId};
pub use lsn::Lsn;
pub use side::Side;
