//! The HTTP endpoint: `/metrics` (Prometheus text), `/health`, and the one
//! state-changing action, `POST /tenants/{id}/direction`, which requires the
//! configured bearer token (and is off without one). Read-only endpoints are
//! public unless `http.protect_read_endpoints` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tracing::info;

use crate::config::Config;
use crate::model::direction;
use crate::model::Direction;
use crate::postgres::connect;
use crate::postgres::directions;
use crate::runtime::metrics::metrics;
use crate::runtime::shutdown::Shutdown;

type Reply = (StatusCode, String);

/// 200 `ok`, or 503 naming what is degraded (Kafka unreachable: nothing is
/// confirmed to PostgreSQL meanwhile, and it catches up when Kafka is back).
async fn health(State(config): State<Arc<Config>>, headers: HeaderMap) -> Reply {
    if let Err(denied) = authorize_read(&config, &headers) {
        return denied;
    }
    if metrics().kafka_up.get() == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: Kafka unreachable\n".to_string(),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn prometheus(State(config): State<Arc<Config>>, headers: HeaderMap) -> Reply {
    if let Err(denied) = authorize_read(&config, &headers) {
        return denied;
    }
    (StatusCode::OK, metrics().render())
}

/// Body: `both`, `to_landlord`, `to_tenant` or `paused`; tenant `all` sets
/// every tenant without an override.
async fn set_direction(
    State(config): State<Arc<Config>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Reply {
    if let Err(denied) = authorize(&config, &headers, true) {
        return denied;
    }
    let Some(new) = Direction::parse(body.trim()) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be one of both, to_landlord, to_tenant, paused\n".to_string(),
        );
    };
    let id = if tenant == "all" {
        direction::ALL_TENANTS.to_string()
    } else {
        tenant.clone()
    };
    let result = match connect(&config.landlord.dsn, "landlord").await {
        Ok(client) => directions::set(&client, &config, &id, new).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => (
            StatusCode::OK,
            format!("direction of {tenant} set to {}\n", new.as_str()),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

fn authorize_read(config: &Config, headers: &HeaderMap) -> Result<(), Reply> {
    if config.http.protect_read_endpoints {
        authorize(config, headers, false)
    } else {
        Ok(())
    }
}

fn authorize(config: &Config, headers: &HeaderMap, changes_state: bool) -> Result<(), Reply> {
    let Some(token) = &config.http.token else {
        let reason = if changes_state {
            "state-changing endpoints are off: set http.token"
        } else {
            "set http.token"
        };
        return Err((StatusCode::FORBIDDEN, format!("{reason}\n")));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token\n".to_string(),
        )),
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until shutdown.
pub async fn serve(
    config: Arc<Config>,
    listen: SocketAddr,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .route("/tenants/{tenant}/direction", post(set_direction))
        .with_state(config);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(listen = %listener.local_addr()?, "HTTP endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
