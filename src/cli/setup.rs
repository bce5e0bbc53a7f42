//! `cdc-bridge setup [--dry-run]`: install the bridge's objects in the
//! landlord and every registered tenant database, and the Kafka topics.

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::kafka;
use crate::model::Side;
use crate::postgres::bridge_schema::record_installed;
use crate::postgres::registry::load_tenants;
use crate::postgres::{connect, setup};

pub(super) fn print_setup_sql(config: &Config) {
    for (side, title) in [
        (Side::Landlord, "landlord database"),
        (Side::Tenant, "every tenant database"),
    ] {
        println!("-- ===== {title} =====");
        for (name, sql) in setup::render_side(config, side) {
            println!("-- {name}\n{sql}");
        }
    }
    let kafka = &config.kafka;
    println!(
        "-- ===== Kafka =====\n-- create topic {} ({} partitions, replication factor {}, cleanup.policy={}, retention.ms={})",
        kafka.topic, kafka.partitions, kafka.replication_factor, kafka.cleanup_policy, kafka.retention_ms
    );
    println!(
        "-- create topic {} ({} partitions, replication factor {}, cleanup.policy=delete, retention.ms=-1): dead letters",
        kafka.dead_letter_topic(), kafka.partitions, kafka.replication_factor
    );
}

pub(super) async fn run_setup(config: &Config) -> anyhow::Result<()> {
    let mut landlord = connect(&config.landlord.dsn, "landlord").await?;
    setup::install(&mut landlord, config, Side::Landlord, "landlord").await?;
    info!("landlord database ready");
    for tenant in load_tenants(&landlord, config).await? {
        let dsn = tenant.dsn(&config.tenants.connection_template);
        let mut client = connect(&dsn, &tenant.database_name).await?;
        setup::install(&mut client, config, Side::Tenant, &tenant.database_name)
            .await
            .with_context(|| {
                format!(
                    "setting up tenant {} ({})",
                    tenant.slug, tenant.database_name
                )
            })?;
        record_installed(&landlord, config, &tenant).await?;
        info!(tenant = %tenant.slug, database = %tenant.database_name, "tenant database ready");
    }
    kafka::ensure_topic(&config.kafka).await?;
    info!(topic = %config.kafka.topic, dead_letters = %config.kafka.dead_letter_topic(), "Kafka topics ready");
    Ok(())
}
