//! The `myquorum` command: serve, playground, tso, configcheck.

use clap::{Parser, Subcommand};
use myquorum::config::{CliOverrides, Config};
use myquorum::context::{ConfigSource, ProxyContext};
use myquorum::playground::{self, PlaygroundSpec};
use myquorum::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "myquorum",
    version,
    about = "MySQL wire-protocol proxy with quorum replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy with a config file.
    Serve {
        #[arg(long, short, default_value = "proxy.toml", env = "MYQUORUM_CONFIG")]
        config: PathBuf,
        /// Address to listen on (overrides proxy.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Start local mariadbd backends and the proxy in front of them.
    Playground {
        #[arg(long, default_value_t = 1)]
        shards: usize,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Proxy port.
        #[arg(long, default_value_t = 6033)]
        port: u16,
        /// First backend port; the others follow.
        #[arg(long, default_value_t = 3307)]
        backend_port: u16,
        /// Where data directories and the generated config live.
        #[arg(long, default_value = "playground")]
        dir: PathBuf,
        /// innodb_flush_log_at_trx_commit of the backends: 1 syncs every commit (the proxy
        /// then runs the primary at 2, see replication.primary_syncs_commits); with 2 every
        /// server keeps it and the proxy's WAL is what makes an acknowledged write durable
        /// (its acknowledgement then waits for the WAL's sync, like semi-sync's primary
        /// binlog).
        #[arg(long, default_value_t = 1)]
        flush_at_commit: u8,
        /// Port of the Prometheus endpoint (`GET /metrics`); none when not given.
        #[arg(long)]
        metrics_port: Option<u16>,
    },
    /// Run one timestamp server of the odd/even pair (point replication.tso_servers at two).
    Tso {
        #[arg(long)]
        parity: myquorum::tso::Parity,
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: String,
        /// High-water state file (a restart resumes above it).
        #[arg(long)]
        state: PathBuf,
    },
    /// Check a config file and print the effective settings.
    Configcheck {
        #[arg(long, short, default_value = "proxy.toml", env = "MYQUORUM_CONFIG")]
        config: PathBuf,
    },
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what the user is told to do (playground).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// `source`: the file the config came from, read again by `PROXY RELOAD` (and on SIGHUP when
/// `reload_on_hangup`: a daemon's convention; a playground in a terminal keeps SIGHUP's
/// default of ending it when the terminal closes).
async fn serve(cfg: Config, source: ConfigSource, reload_on_hangup: bool) -> Result<(), String> {
    let ctx = Arc::new(ProxyContext::new(cfg)?.with_config_source(source));
    if reload_on_hangup {
        reload_on_sighup(ctx.clone())?;
    }
    let server = Server::bind(ctx).await.map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal_token.cancel();
    });
    server.run(shutdown).await;
    Ok(())
}

async fn tso(parity: myquorum::tso::Parity, listen: String, state: PathBuf) -> Result<(), String> {
    let server = myquorum::tso::TsoServer::open(parity, &state)
        .map_err(|e| format!("cannot open timestamp state {}: {e}", state.display()))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, ?parity, state = %state.display(), "timestamp server listening");
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal_token.cancel();
    });
    myquorum::tso::serve(
        listener,
        Arc::new(parking_lot::Mutex::new(server)),
        shutdown,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Reloads the config file on each SIGHUP; the outcome goes to the log.
fn reload_on_sighup(ctx: Arc<ProxyContext>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config file");
            if let Err(e) = ctx.reload() {
                tracing::error!("config reload failed: {e}");
            }
        }
    });
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve { config, listen } => {
            let overrides = CliOverrides { listen };
            Config::load(Some(&config), &overrides)
                .map_err(|e| e.to_string())
                .and_then(|cfg| {
                    let source = ConfigSource::new(config, overrides, cfg.clone());
                    runtime()
                        .map_err(|e| e.to_string())?
                        .block_on(serve(cfg, source, true))
                })
        }
        Cmd::Tso {
            parity,
            listen,
            state,
        } => runtime()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(tso(parity, listen, state))),
        Cmd::Configcheck { config } => {
            match Config::load(Some(&config), &CliOverrides::default()) {
                Ok(cfg) => {
                    println!(
                        "{} is valid; effective settings:\n\n{}",
                        config.display(),
                        cfg.to_toml()
                    );
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Cmd::Playground {
            shards,
            replicas,
            port,
            backend_port,
            dir,
            flush_at_commit,
            metrics_port,
        } => {
            let spec = PlaygroundSpec {
                shards: shards.max(1),
                replicas: replicas.max(1),
                proxy_port: port,
                first_backend_port: backend_port,
                dir,
                flush_at_commit,
            };
            // Backends are started from the main thread so that their parent-death signal is
            // tied to this process's lifetime, not to a worker thread's.
            match playground::start(&spec) {
                Ok((backends, mut cfg)) => {
                    let source = ConfigSource::new(
                        spec.dir.join("proxy.toml"),
                        CliOverrides::default(),
                        cfg.clone(),
                    );
                    if let Some(p) = metrics_port {
                        cfg.proxy.metrics_listen = format!("127.0.0.1:{p}");
                    }
                    let socket = match cfg.proxy.listen_socket.as_str() {
                        "" => String::new(),
                        s => format!(" or `mysql -S {s} -uroot`"),
                    };
                    println!(
                        "myquorum playground is up: connect with `mysql -h127.0.0.1 -P{port} -uroot`{socket} \
                         ({} shard(s) x {} replica(s), data in {}; Ctrl-C stops everything)",
                        spec.shards,
                        spec.replicas,
                        spec.dir.display()
                    );
                    let r = runtime()
                        .map_err(|e| e.to_string())
                        .and_then(|rt| rt.block_on(serve(cfg, source, false)));
                    drop(backends);
                    r
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myquorum: {e}");
            ExitCode::FAILURE
        }
    }
}
