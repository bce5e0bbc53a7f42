//! `cdc-bridge direction set|clear|list`: cutover and rollback.

use super::DirectionAction;
use crate::config::Config;
use crate::model::direction::ALL_TENANTS;
use crate::postgres::registry::load_tenants;
use crate::postgres::{connect, directions};

pub(super) async fn run_direction(config: &Config, action: DirectionAction) -> anyhow::Result<()> {
    let client = connect(&config.landlord.dsn, "landlord").await?;
    let id = |tenant: &str| {
        if tenant == "all" {
            ALL_TENANTS.to_string()
        } else {
            tenant.to_string()
        }
    };
    match action {
        DirectionAction::Set { tenant, direction } => {
            directions::set(&client, config, &id(&tenant), direction).await?;
            println!("direction of {tenant} set to {}", direction.as_str());
        }
        DirectionAction::Clear { tenant } => {
            directions::clear(&client, config, &id(&tenant)).await?;
            println!("override of {tenant} removed");
        }
        DirectionAction::List => {
            let overrides = directions::load(&client, config).await?;
            println!("default: {}", config.sync.default_direction.as_str());
            for tenant in load_tenants(&client, config).await? {
                println!(
                    "{} ({}): {}",
                    tenant.id,
                    tenant.slug,
                    overrides.of(&tenant.id).as_str()
                );
            }
        }
    }
    Ok(())
}
