//! The accept loop: connection limit, one task per client, graceful shutdown.
//!
//! Owns: the listening sockets' lifecycle (clients, and the metrics endpoint). May import:
//! context, frontend, admin (the metrics text), protocol (the too-many-connections error),
//! axum.

use crate::context::ProxyContext;
use crate::protocol::{MysqlError, PacketStream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A bound proxy, ready to serve.
pub struct Server {
    listener: TcpListener,
    /// The Prometheus endpoint's socket, when `proxy.metrics_listen` is set.
    metrics: Option<TcpListener>,
    ctx: Arc<ProxyContext>,
}

impl Server {
    pub async fn bind(ctx: Arc<ProxyContext>) -> std::io::Result<Server> {
        let addr = ctx.config.proxy.listen.clone();
        let listener = TcpListener::bind(&addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {addr}: {e}; pick another proxy.listen or stop what uses it"
                ),
            )
        })?;
        let metrics = match ctx.config.proxy.metrics_listen.as_str() {
            "" => None,
            addr => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot listen on {addr} for metrics: {e}; pick another \
                         proxy.metrics_listen, or leave it empty for none"
                    ),
                )
            })?),
        };
        Ok(Server {
            listener,
            metrics,
            ctx,
        })
    }

    /// Where the Prometheus endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled; starts health checks on the way.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.ctx
            .cluster
            .spawn_health_checks(&self.ctx.config, &shutdown);
        if let Some(listener) = self.metrics.take() {
            serve_metrics(listener, self.ctx.clone(), shutdown.clone());
        }
        self.ctx
            .replication
            .spawn(self.ctx.cluster.clone(), &shutdown);
        let limit = Arc::new(Semaphore::new(self.ctx.config.proxy.max_connections));
        tracing::info!(addr = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), "proxy listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; continuing");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ctx = self.ctx.clone();
            match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    let cancel = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = crate::frontend::serve_client(tcp, ctx) => {}
                            _ = cancel.cancelled() => {}
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%peer, "too many connections; refusing");
                    tokio::spawn(async move {
                        let mut s = PacketStream::new(tcp);
                        let e = MysqlError::new(
                            1040,
                            "08004",
                            "Too many connections (proxy.max_connections)",
                        );
                        let _ = s.write_packet(0, &e.encode()).await;
                    });
                }
            }
        }
        tracing::info!("proxy stopped accepting connections");
    }
}

/// Serves `GET /metrics` (Prometheus text format) until `shutdown`.
fn serve_metrics(listener: TcpListener, ctx: Arc<ProxyContext>, shutdown: CancellationToken) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let ctx = ctx.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::admin::metrics::render(&ctx),
                )
            }
        }),
    );
    tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, %addr, "metrics endpoint stopped; scrapes will fail until a restart");
        }
    });
}
