//! The accept loop: connection limit, one task per client, graceful shutdown.
//!
//! Owns: the listening socket's lifecycle. May import: context, frontend, protocol (the
//! too-many-connections error).

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
        Ok(Server { listener, ctx })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled; starts health checks on the way.
    pub async fn run(self, shutdown: CancellationToken) {
        self.ctx
            .cluster
            .spawn_health_checks(&self.ctx.config, &shutdown);
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
