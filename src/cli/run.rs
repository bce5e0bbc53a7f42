//! `cdc-bridge run [--role ...]`: the bridge in the foreground until
//! Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info};

use crate::config::Config;
use crate::runtime::shutdown;
use crate::service::{self, http, Role};

pub(super) async fn run(config: Arc<Config>, role: Role) -> anyhow::Result<()> {
    let (trigger, _) = shutdown::channel();
    let shared = service::SharedPool::default();
    if !config.http.listen.is_empty() {
        let listen = config.http.listen.parse().context("http.listen")?;
        let shutdown = trigger.subscribe();
        let http_config = Arc::clone(&config);
        let pool = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = http::serve(http_config, listen, shutdown, pool).await {
                error!(%listen, error = %e, "HTTP endpoint failed; check http.listen");
            }
        });
    }
    let on_signal = trigger.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: draining in-flight events");
        on_signal.trigger();
    });
    service::run(config, role, trigger, shared).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
