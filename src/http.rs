//! The HTTP endpoint: `/metrics` (Prometheus text) and `/health`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tracing::info;

use crate::metrics::metrics;
use crate::shutdown::Shutdown;

/// Serves until shutdown.
pub async fn serve(listen: SocketAddr, mut shutdown: Shutdown) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(%listen, "HTTP endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}
