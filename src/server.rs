//! The accept loop: connection limit, one task per client, graceful shutdown.
//!
//! Owns: the listening sockets' lifecycle (clients over TCP and the Unix socket, and the
//! metrics endpoint). May import: context, frontend, admin (the metrics text), protocol (the
//! too-many-connections error), axum.

use crate::context::ProxyContext;
use crate::protocol::{MysqlError, PacketStream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// A bound proxy, ready to serve.
pub struct Server {
    listener: TcpListener,
    /// The Unix socket clients on this host may use, when `proxy.listen_socket` is set.
    socket: Option<(UnixListener, PathBuf)>,
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
        let socket = match ctx.config.proxy.listen_socket.as_str() {
            "" => None,
            path => {
                let path = PathBuf::from(path);
                Some((bind_unix(&path)?, path))
            }
        };
        Ok(Server {
            listener,
            socket,
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
        self.ctx
            .cluster
            .spawn_schema_facts(&self.ctx.config, &shutdown);
        if let Some(listener) = self.metrics.take() {
            serve_metrics(listener, self.ctx.clone(), shutdown.clone());
        }
        self.ctx
            .replication
            .spawn(self.ctx.cluster.clone(), &shutdown);
        let limit = Arc::new(Semaphore::new(self.ctx.config.proxy.max_connections));
        tracing::info!(
            addr = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            socket = %self.socket.as_ref().map(|(_, p)| p.display().to_string()).unwrap_or_default(),
            "proxy listening"
        );
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a.map(|(tcp, peer)| (Either::Left(tcp), peer.to_string())),
                a = accept_unix(&self.socket) => a.map(|unix| (Either::Right(unix), "unix socket".to_string())),
            };
            let (client, peer) = match accepted {
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
                            _ = crate::frontend::serve_client(client, ctx) => {}
                            _ = cancel.cancelled() => {}
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%peer, "too many connections; refusing");
                    tokio::spawn(async move {
                        let mut s = PacketStream::new(client);
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
        if let Some((_, path)) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("proxy stopped accepting connections");
        self.ctx
            .replication
            .restore_primary_flush(std::time::Duration::from_secs(3))
            .await;
    }
}

/// Binds the clients' Unix socket at `path`, replacing a stale one a killed proxy left (no
/// one answers on it); a live one, or a file that is not a socket, is an error.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let in_use = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "cannot listen on {}: {why}; pick another proxy.listen_socket",
                path.display()
            ),
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(in_use("a file that is not a socket is there"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(in_use("a running server answers on it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {}: {e}; pick another proxy.listen_socket",
                path.display()
            ),
        )
    })?;
    // Any local user may connect, as to mysqld's socket: the login still authenticates.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// The next client on the Unix socket (never, without one).
async fn accept_unix(
    socket: &Option<(UnixListener, PathBuf)>,
) -> std::io::Result<tokio::net::UnixStream> {
    match socket {
        Some((listener, _)) => listener.accept().await.map(|(unix, _)| unix),
        None => std::future::pending().await,
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
