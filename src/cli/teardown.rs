//! `cdc-bridge teardown [--drop-slots]`: remove what `setup` installed.

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::model::Side;
use crate::postgres::registry::load_tenants;
use crate::postgres::{connect, setup};
use crate::source::slot_name;

pub(super) async fn run_teardown(config: &Config, drop_slots: bool) -> anyhow::Result<()> {
    let mut databases = vec![(
        Side::Landlord,
        "landlord".to_string(),
        config.landlord.dsn.clone(),
    )];
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    for tenant in load_tenants(&landlord, config).await? {
        let dsn = tenant.dsn(&config.tenants.connection_template);
        databases.push((Side::Tenant, tenant.database_name, dsn));
    }
    for (side, database, dsn) in databases {
        let mut client = connect(&dsn, &database).await?;
        if drop_slots {
            let slot = slot_name(
                &config.replication.slot_prefix,
                &current_database(&client).await?,
            );
            client
                .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&slot.as_str()])
                .await
                .with_context(|| format!("dropping slot {slot} (is the bridge still running?)"))?;
        }
        setup::uninstall(&mut client, config, side, &database).await?;
        info!(%database, "bridge objects removed");
    }
    Ok(())
}

async fn current_database(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(client
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0))
}
