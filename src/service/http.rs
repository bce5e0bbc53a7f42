//! The HTTP endpoint: `/metrics` (Prometheus text), `/health`, `/ready`, `/status`
//! and `/status/history` (JSON), the dashboard at `/` (`dashboard`), and the
//! actions (`actions`), which require the configured bearer token (and are
//! off without one). Read-only endpoints are public unless
//! `http.protect_read_endpoints` is set; the dashboard page itself holds no
//! data and is always served.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRef, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::info;

use super::auth::{authorize_read, Reply};
use super::history::{self, History};
use super::status::{self, StatusQuery};
use super::{actions, dashboard};
use crate::config::Config;
use crate::runtime::metrics::metrics;
use crate::runtime::shutdown::Shutdown;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    config: Arc<Config>,
    history: Arc<History>,
    pool: super::SharedPool,
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Arc<Config> {
        Arc::clone(&state.config)
    }
}

impl FromRef<AppState> for super::SharedPool {
    fn from_ref(state: &AppState) -> super::SharedPool {
        Arc::clone(&state.pool)
    }
}

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

/// 200 `ready` once this process can take work: its roles started, Kafka
/// answers, and (reader role) its heartbeat on the landlord is current, so
/// it holds its leases; 503 naming what is missing otherwise.
async fn ready(State(config): State<Arc<Config>>, headers: HeaderMap) -> Reply {
    if let Err(denied) = authorize_read(&config, &headers) {
        return denied;
    }
    let snapshot = crate::runtime::status::status().snapshot();
    let heartbeat_current = snapshot
        .instances
        .valid_until
        .is_some_and(|until| std::time::Instant::now() < until);
    let missing = if snapshot.roles.is_empty() {
        Some("starting")
    } else if metrics().kafka_up.get() == 0 {
        Some("Kafka unreachable")
    } else if snapshot.roles.contains(&"reader") && !heartbeat_current {
        Some("no current heartbeat on the landlord (source leases not held)")
    } else {
        None
    };
    match missing {
        Some(what) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {what}\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn prometheus(State(config): State<Arc<Config>>, headers: HeaderMap) -> Reply {
    if let Err(denied) = authorize_read(&config, &headers) {
        return denied;
    }
    (StatusCode::OK, metrics().render())
}

fn json(reply: Reply) -> Response {
    if reply.0.is_success() {
        ([(CONTENT_TYPE, "application/json")], reply.1).into_response()
    } else {
        reply.into_response()
    }
}

/// `GET /status` (see `service::status`).
async fn status_json(
    State(state): State<AppState>,
    Query(query): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authorize_read(&state.config, &headers) {
        return denied.into_response();
    }
    let snapshot = crate::runtime::status::status().snapshot();
    let body = status::render(&state.config, &snapshot, &state.history.rates(), &query);
    json((StatusCode::OK, body))
}

/// `GET /status/history` (see `service::history`).
async fn history_json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize_read(&state.config, &headers) {
        return denied.into_response();
    }
    json((StatusCode::OK, state.history.json()))
}

/// Serves until shutdown.
pub async fn serve(
    config: Arc<Config>,
    listen: SocketAddr,
    mut shutdown: Shutdown,
    pool: super::SharedPool,
) -> std::io::Result<()> {
    let history = Arc::new(History::default());
    tokio::spawn(history::run(Arc::clone(&history), shutdown.clone()));
    let app = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.css", get(dashboard::style))
        .route("/dashboard.js", get(dashboard::script))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status_json))
        .route("/status/history", get(history_json))
        .route("/tenants/{tenant}/direction", post(actions::set_direction))
        .route("/tenants/{tenant}/check", post(actions::check_tenant))
        .route("/tenants/{tenant}/repair", post(actions::repair_tenant))
        .route("/dead-letters/redrive", post(actions::redrive))
        .with_state(AppState {
            config,
            history,
            pool,
        });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(listen = %listener.local_addr()?, "HTTP endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}
