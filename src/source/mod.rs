//! The reader: one task per source database streams its slot into Kafka.
//!
//! ```text
//!  ┌ start (supervisor) ─────────────────────────────────────────────────┐
//!  │ install migrations (idempotent) ─► slot state (slot)?               │
//!  │     new/lost ─► create slot, export snapshot, send snapshot, mark   │
//!  │     ready    ─► resume at the slot's confirmed_flush_lsn            │
//!  └──► START_REPLICATION ─► stream loop {                              │
//!          XLogData  ─► pgoutput ─► changes ─► capture ─► Kafka          │
//!          keepalive ─► idle? confirm wal_end; reply if asked           │
//!          Kafka ack ─► tracker may move the confirmable LSN            │
//!          tick      ─► standby status with the confirmable LSN         │
//!          shutdown  ─► drain acks, confirm, close }                    │
//! ```
//! A failure anywhere ends the task with an error; the supervisor restarts
//! it after a backoff and it resumes from the slot, so nothing is lost and
//! at worst a few events reach Kafka twice.
//!
//! Inside: `replication` (the protocol client) and `pgoutput` (the
//! decoder) know nothing of the bridge; `capture` maps decoded rows to
//! envelopes; `changes` follows transactions, relations and echoes;
//! `stream` is the I/O loop; `slot` and `snapshot` the first start;
//! `tenant_rows` reads a tenant's current state (for reconciles).

pub(crate) mod capture;
pub(crate) mod catalog;
pub(crate) mod changes;
pub(crate) mod pgoutput;
pub(crate) mod replication;
mod slot;
mod snapshot;
mod stream;
mod supervisor;
pub(crate) mod tenant_rows;

pub use slot::slot_name;
pub use supervisor::drain_source_to;
pub(crate) use supervisor::supervise;

use crate::config::Dsn;
use crate::kafka::delivery::DeliveryError;
use crate::model::{Side, TenantId, TenantRef};
use crate::postgres::registry::TenantDirectory;
use crate::postgres::DbError;
use crate::runtime::retry::{Classify, ErrorClass};
use capture::CaptureError;
use pgoutput::DecodeError;
use replication::ReplicationError;

/// A database the bridge reads from.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub side: Side,
    pub database: String,
    pub dsn: Dsn,
    /// Who the rows belong to: one tenant for a tenant database; for the
    /// landlord, each row's tenant key looked up in the directory.
    pub owner: RowOwner,
    /// The mark of this installation's applier transactions, whose rows
    /// are echoes and not sent (see `model::loop_guard`); empty: none.
    pub apply_marker: String,
    /// Until when this instance's lease of the source is safe (see
    /// `service::ownership`); a walsender still holding the slot is ended
    /// only while it is. None: no lease (benchmarks), never ended.
    pub lease_until: Option<tokio::sync::watch::Receiver<Option<std::time::Instant>>>,
}

/// How a source's rows map to tenants.
#[derive(Debug, Clone)]
pub enum RowOwner {
    Tenant(TenantRef),
    Landlord(TenantDirectory),
}

impl RowOwner {
    /// The tenant a row belongs to, given the value of its tenant key column
    /// (ignored for tenant databases); `None` only for a landlord row
    /// without a tenant key. A landlord row of a tenant the directory does
    /// not list yet (registered in the same transaction, say) is still
    /// sent, with an empty slug: the applier reads the registry again
    /// before it routes it.
    pub(crate) fn tenant_of(&self, tenant_id: Option<&str>) -> Option<TenantRef> {
        match self {
            RowOwner::Tenant(tenant) => Some(tenant.clone()),
            RowOwner::Landlord(directory) => {
                let id = tenant_id?;
                Some(
                    directory
                        .get(id)
                        .map(|t| t.tenant_ref())
                        .unwrap_or_else(|| TenantRef {
                            id: TenantId::from(id),
                            slug: String::new(),
                        }),
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("replication stream of database {database}: {source}")]
    Replication {
        database: String,
        source: ReplicationError,
    },
    #[error("undecodable pgoutput message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl Classify for ReaderError {
    fn class(&self) -> ErrorClass {
        match self {
            ReaderError::Db(e) => e.class(),
            ReaderError::Replication { source, .. } => source.class(),
            ReaderError::Delivery(e) => e.class(),
            // The stream or the table holds something this build cannot
            // read: restarting reads the same bytes again.
            ReaderError::Decode(_) | ReaderError::Capture(_) => ErrorClass::Permanent,
        }
    }
}

impl ReaderError {
    pub(crate) fn sql(database: &str, what: &str, source: tokio_postgres::Error) -> Self {
        ReaderError::Db(DbError::query(database, what, source))
    }

    pub(crate) fn replication(database: &str) -> impl FnOnce(ReplicationError) -> ReaderError + '_ {
        move |source| ReaderError::Replication {
            database: database.to_string(),
            source,
        }
    }
}
