//! `cdc-bridge grants --role NAME`: the GRANTs a least-privilege run role needs.

use crate::config::Config;
use crate::model::Side;
use crate::postgres::registry::load_tenants;
use crate::postgres::{connect, database_name, setup};

pub(super) async fn print_grants(config: &Config, role: &str) -> anyhow::Result<()> {
    let landlord_db = database_name(&config.landlord.dsn)?;
    let landlord = connect(&config.landlord.dsn, "landlord").await?;
    println!("-- ===== landlord database {landlord_db} =====");
    for (name, sql) in setup::render_grants(config, Side::Landlord, role, &landlord_db) {
        println!("-- {name}\n{sql}");
    }
    for tenant in load_tenants(&landlord, config).await? {
        println!("-- ===== tenant database {} =====", tenant.database_name);
        for (name, sql) in setup::render_grants(config, Side::Tenant, role, &tenant.database_name) {
            println!("-- {name}\n{sql}");
        }
    }
    Ok(())
}
