//! The connection budget, checked at start: per PostgreSQL server, the
//! ordinary connections the bridge may hold there against what the server
//! allows (`max_connections - superuser_reserved_connections`), and the
//! replication connections against `max_wal_senders`. Only warns: the
//! server's other clients are unknown here, and a tight budget still runs.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::config::{Config, Dsn};
use crate::postgres::connect;
use crate::postgres::registry::Tenant;
use crate::source::catalog::READER_CONNECTIONS_PER_SERVER;

/// What the bridge may hold on one server.
#[derive(Debug, Default, PartialEq, Eq)]
struct Need {
    /// One replication connection per source database.
    replication: usize,
    /// Readers' ordinary connections (a few per server), the registry
    /// poll, and the target pool's (the applier's, which the periodic
    /// check, reconcile and repair share).
    ordinary: usize,
    /// A database of that server to ask.
    ask: Option<(String, Dsn)>,
}

/// Warns about every server whose limits the bridge may exceed.
pub async fn check_connection_budget(config: &Config, tenants: &[Tenant]) {
    for (server, need) in needs(config, tenants) {
        let Some((database, dsn)) = &need.ask else {
            continue;
        };
        let Ok(client) = connect(dsn, database).await else {
            continue; // unreachable servers are reported by their readers
        };
        let setting = |name: &'static str| {
            let client = &client;
            async move {
                let row = client.query_one(&format!("SHOW {name}"), &[]).await.ok()?;
                row.get::<_, String>(0).parse::<usize>().ok()
            }
        };
        let (Some(max), Some(reserved), Some(senders)) = (
            setting("max_connections").await,
            setting("superuser_reserved_connections").await,
            setting("max_wal_senders").await,
        ) else {
            continue;
        };
        let available = max.saturating_sub(reserved);
        if need.ordinary > available || need.replication > senders {
            warn!(%server, ordinary_connections = need.ordinary, available, replication_connections = need.replication, max_wal_senders = senders,
                "the bridge may need more connections on this server than it allows; lower applier.max_connections_per_server, spread tenants over servers, or raise max_connections / max_wal_senders (see README, connection budget)");
        } else {
            info!(%server, ordinary_connections = need.ordinary, available, replication_connections = need.replication, max_wal_senders = senders, "connection budget fits");
        }
    }
}

/// Per server, the most connections of each kind the bridge may hold.
fn needs(config: &Config, tenants: &[Tenant]) -> BTreeMap<String, Need> {
    let mut needs: BTreeMap<String, Need> = BTreeMap::new();
    let landlord = &config.landlord.dsn;
    let databases = tenants
        .iter()
        .map(|t| {
            let dsn = t.dsn(&config.tenants.connection_template);
            (t.database_name.clone(), dsn)
        })
        .chain([("landlord".to_string(), landlord.clone())]);
    for (database, dsn) in databases {
        let need = needs.entry(dsn.server()).or_default();
        need.replication += 1;
        need.ask.get_or_insert((database, dsn));
    }
    let applier = config.applier.max_connections_per_server;
    for need in needs.values_mut() {
        let readers = need.replication.min(READER_CONNECTIONS_PER_SERVER);
        need.ordinary = readers + applier.min(config.applier.max_connections);
    }
    if let Some(need) = needs.get_mut(&landlord.server()) {
        need.ordinary += 1; // the readers' registry poll
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_counts_its_databases_and_the_applier_cap() {
        let config = Config::parse(
            r#"
            [landlord]
            dsn = "host=a port=5432 dbname=landlord"
            [tenants]
            connection_template = "host={db_host} port=5432 dbname={database_name}"
            [[table]]
            name = "tenant_brandings"
            [kafka]
            brokers = "x:9092"
            [applier]
            max_connections = 10
            max_connections_per_server = 6
        "#,
        )
        .unwrap();
        let tenant = |id: &str, host: &str| Tenant {
            id: id.into(),
            slug: id.into(),
            database_name: format!("db{id}"),
            fields: BTreeMap::from([("db_host".to_string(), Some(host.to_string()))]),
        };
        let tenants = [tenant("1", "a"), tenant("2", "a"), tenant("3", "b")];
        let needs = needs(&config, &tenants);
        // Server a: two tenants and the landlord (readers), the poll, the
        // target pool's 6 (the check's included).
        assert_eq!(needs["a:5432"].replication, 3);
        assert_eq!(needs["a:5432"].ordinary, 3 + 1 + 6);
        assert_eq!(needs["b:5432"].replication, 1);
        assert_eq!(needs["b:5432"].ordinary, 1 + 6);
        // Readers take a few ordinary connections per server however many
        // databases it holds.
        let many: Vec<Tenant> = (0..100).map(|i| tenant(&i.to_string(), "a")).collect();
        assert_eq!(super::needs(&config, &many)["a:5432"].ordinary, 4 + 1 + 6);
    }
}
