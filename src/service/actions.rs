//! The actions of the HTTP endpoint and the dashboard, each behind the
//! bearer token: set a tenant's direction, check or repair one tenant now,
//! re-drive the dead letters. Every attempt, refused ones included, is
//! logged (target `audit`) and counted in
//! `cdc_admin_actions_total{action,outcome}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tracing::info;

use super::auth::{authorize, Reply};
use crate::config::Config;
use crate::consistency::{run_check, CheckError, CheckOptions};
use crate::model::direction;
use crate::model::Direction;
use crate::postgres::connect;
use crate::postgres::directions;
use crate::runtime::metrics::metrics;

/// Logs and counts one action's outcome, then hands the reply on.
fn audited(action: &'static str, subject: &str, reply: Reply) -> Reply {
    let outcome = match reply.0 {
        code if code.is_success() => "ok",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "denied",
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => "rejected",
        _ => "failed",
    };
    metrics()
        .admin_actions
        .with_label_values(&[action, outcome])
        .inc();
    info!(
        target: "audit",
        action,
        subject,
        outcome,
        status = reply.0.as_u16(),
        "admin action"
    );
    reply
}

/// `POST /tenants/{id}/direction`, body `both`, `to_landlord`, `to_tenant`
/// or `paused`; tenant `all` sets every tenant without an override.
pub(super) async fn set_direction(
    State(config): State<Arc<Config>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Reply {
    let reply = direction_reply(&config, &tenant, &headers, body.trim()).await;
    audited("set_direction", &tenant, reply)
}

async fn direction_reply(config: &Config, tenant: &str, headers: &HeaderMap, body: &str) -> Reply {
    if let Err(denied) = authorize(config, headers, true) {
        return denied;
    }
    let Some(new) = Direction::parse(body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be one of both, to_landlord, to_tenant, paused\n".to_string(),
        );
    };
    let id = if tenant == "all" {
        direction::ALL_TENANTS.to_string()
    } else {
        tenant.to_string()
    };
    let result = match connect(&config.landlord.dsn, "landlord").await {
        Ok(client) => directions::set(&client, config, &id, new).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            info!(target: "audit", tenant, direction = new.as_str(), "direction set");
            (
                StatusCode::OK,
                format!("direction of {tenant} set to {}\n", new.as_str()),
            )
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// `POST /tenants/{id}/check`: compares both sides of one tenant now; the
/// report (JSON, as `cdc-bridge check --json`) also updates `/status`.
pub(super) async fn check_tenant(
    State(config): State<Arc<Config>>,
    State(pool): State<super::SharedPool>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let reply = check_reply((config, pool), &tenant, &headers, false).await;
    audited("check", &tenant, reply)
}

/// `POST /tenants/{id}/repair`: the check, repairing a divergence (newest
/// wins, as far as the tenant's direction carries it).
pub(super) async fn repair_tenant(
    State(config): State<Arc<Config>>,
    State(pool): State<super::SharedPool>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let reply = check_reply((config, pool), &tenant, &headers, true).await;
    audited("repair", &tenant, reply)
}

/// The check of one tenant, on the process's pool when it has one (a
/// process without the applier role checks on a pool of its own).
async fn check_reply(
    (config, pool): (Arc<Config>, super::SharedPool),
    tenant: &str,
    headers: &HeaderMap,
    repair: bool,
) -> Reply {
    if let Err(denied) = authorize(&config, headers, true) {
        return denied;
    }
    let options = CheckOptions {
        tenants: vec![tenant.to_string()],
        repair,
        rate: 0.0,
    };
    let mut quiet = |_: &_, _, _| {};
    match run_check(config, &options, pool.get().cloned(), &mut quiet).await {
        Ok(report) => {
            report.publish_tenants();
            (StatusCode::OK, report.json())
        }
        Err(error @ CheckError::UnknownTenant(_)) => (StatusCode::NOT_FOUND, format!("{error}\n")),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

/// `POST /dead-letters/redrive`: sends every dead letter not re-driven yet
/// back to the change topic (as `cdc-bridge dead-letters redrive`).
pub(super) async fn redrive(State(config): State<Arc<Config>>, headers: HeaderMap) -> Reply {
    let reply = match authorize(&config, &headers, true) {
        Err(denied) => denied,
        Ok(()) => match crate::kafka::dead_letter::redrive(&config.kafka).await {
            Ok(count) => (StatusCode::OK, format!("{{\"redriven\":{count}}}")),
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
        },
    };
    audited("redrive", "dead letters", reply)
}
