//! The HTTP endpoint: `/metrics` (Prometheus text) and `/health`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tracing::info;

use crate::metrics::metrics;
use crate::shutdown::Shutdown;

/// 200 `ok`, or 503 naming what is degraded (Kafka unreachable: nothing is
/// confirmed to PostgreSQL meanwhile, and it catches up when Kafka is back).
async fn health() -> (axum::http::StatusCode, String) {
    if metrics().kafka_up.get() == 0 {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "degraded: Kafka unreachable\n".to_string(),
        );
    }
    (axum::http::StatusCode::OK, "ok\n".to_string())
}

/// Serves until shutdown.
pub async fn serve(listen: SocketAddr, mut shutdown: Shutdown) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/health", get(health));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(%listen, "HTTP endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}
