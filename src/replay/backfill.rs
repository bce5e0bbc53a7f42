//! `backfill`: one side's current rows published to the change topic as
//! `snapshot` events (for a topic whose retention dropped the history, or
//! a new consumer). The running applier treats them like any change: the
//! conflict rule makes them no-ops where the other side is up to date.

use std::sync::Arc;

use serde::Serialize;

use super::ReplayError;
use crate::config::Config;
use crate::kafka::delivery::{Delivery, DeliveryError};
use crate::model::{Lsn, Op, Side};
use crate::postgres::connect;
use crate::postgres::registry::{load_tenants, select_tenants, Tenant};
use crate::source::tenant_rows::current_state;

/// What a backfill published.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BackfillSummary {
    pub tenants: u64,
    pub published: u64,
    /// Tenants whose database could not be read (run again for them).
    pub unreachable: Vec<String>,
}

impl BackfillSummary {
    pub fn line(&self) -> String {
        let mut line = format!(
            "published {} snapshot events of {} tenants",
            self.published, self.tenants
        );
        if !self.unreachable.is_empty() {
            line.push_str(&format!(
                "; unreachable (not published): {}",
                self.unreachable.join(", ")
            ));
        }
        line
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Setup(#[from] ReplayError),
    #[error("publishing to Kafka failed: {0}")]
    Delivery(#[from] DeliveryError),
}

/// Publishes the current rows of `from` for the chosen tenants;
/// `progress` hears (done, total) tenants.
pub async fn backfill(
    config: Arc<Config>,
    from: Side,
    wanted: &[String],
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<BackfillSummary, BackfillError> {
    let landlord = connect(&config.landlord.dsn, "landlord")
        .await
        .map_err(ReplayError::from)?;
    let all = load_tenants(&landlord, &config)
        .await
        .map_err(ReplayError::from)?;
    let tenants = select_tenants(all, wanted).map_err(ReplayError::UnknownTenant)?;
    let producer = crate::kafka::producer(&config.kafka).map_err(ReplayError::from)?;
    let source = match from {
        Side::Landlord => "landlord".to_string(),
        Side::Tenant => "backfill".to_string(),
    };
    let mut delivery = Delivery::new(producer, &config.kafka, &source, Lsn::ZERO);
    let seq = delivery.tracker().begin();
    let mut summary = BackfillSummary::default();
    for (done, tenant) in tenants.iter().enumerate() {
        let rows = match from {
            Side::Landlord => {
                current_state(&landlord, &config, from, "landlord", &tenant.tenant_ref()).await
            }
            Side::Tenant => read_tenant(&config, tenant).await,
        };
        summary.tenants += 1;
        match rows {
            Ok(rows) => {
                for envelope in rows.iter().filter(|e| e.op == Op::Snapshot) {
                    delivery.send(seq, envelope).await?;
                    summary.published += 1;
                }
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant.id, %error, "tenant database unreachable; not backfilled");
                summary.unreachable.push(tenant.id.to_string());
            }
        }
        progress(done as u64 + 1, tenants.len() as u64);
    }
    delivery.drain().await?;
    Ok(summary)
}

async fn read_tenant(
    config: &Config,
    tenant: &Tenant,
) -> Result<Vec<crate::model::Envelope>, crate::postgres::DbError> {
    let dsn = tenant.dsn(&config.tenants.connection_template);
    let client = connect(&dsn, &tenant.database_name).await?;
    current_state(
        &client,
        config,
        Side::Tenant,
        &tenant.database_name,
        &tenant.tenant_ref(),
    )
    .await
}
