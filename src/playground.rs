//! `myquorum playground`: a local cluster for trying the proxy. Creates data directories with
//! `mariadb-install-db` (or `mysqld --initialize-insecure`), starts one server per replica on
//! loopback ports, writes the proxy config it uses, and stops the servers when it stops —
//! also when it is killed (the children get SIGKILL from the kernel when their parent dies).
//!
//! Owns: local server processes. May import: config, std::process, libc.

use crate::config::{Config, ShardConfig};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PlaygroundSpec {
    pub shards: usize,
    pub replicas: usize,
    pub proxy_port: u16,
    pub first_backend_port: u16,
    pub dir: PathBuf,
    /// innodb_flush_log_at_trx_commit of every backend (1: sync each commit).
    pub flush_at_commit: u8,
}

/// Running backend servers; dropping it stops them.
pub struct Backends {
    children: Vec<Child>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM for a clean InnoDB shutdown, then wait.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        tracing::info!("playground backends stopped");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaygroundError {
    #[error("{0}")]
    Missing(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// The server binary and how to initialize a data directory with it.
pub struct ServerBinaries {
    pub server: PathBuf,
    install_db: Option<PathBuf>,
}

pub fn find_server() -> Result<ServerBinaries, PlaygroundError> {
    let server = find_program(&["mariadbd", "mysqld"]).ok_or_else(|| {
        PlaygroundError::Missing(
            "neither mariadbd nor mysqld is installed; install it with \
             `apt-get install mariadb-server` (Debian/Ubuntu) and run again"
                .into(),
        )
    })?;
    let install_db = find_program(&["mariadb-install-db", "mysql_install_db"]);
    Ok(ServerBinaries { server, install_db })
}

/// Initializes `datadir` if it has no system tables yet.
pub fn init_datadir(bin: &ServerBinaries, datadir: &Path) -> Result<(), PlaygroundError> {
    if datadir.join("mysql").is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(datadir).map_err(|source| PlaygroundError::Io {
        what: format!("creating {}", datadir.display()),
        source,
    })?;
    tracing::info!(datadir = %datadir.display(), "initializing data directory");
    let mut cmd = match &bin.install_db {
        Some(install) => {
            let mut c = Command::new(install);
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .arg("--user=root");
            c
        }
        None => {
            let mut c = Command::new(&bin.server);
            c.arg("--no-defaults")
                .arg("--initialize-insecure")
                .arg(format!("--datadir={}", datadir.display()));
            c
        }
    };
    let out = cmd.output().map_err(|source| PlaygroundError::Io {
        what: "running the data directory initializer".into(),
        source,
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(datadir);
        return Err(PlaygroundError::Failed(format!(
            "initializing {} failed: {}",
            datadir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Starts one server on 127.0.0.1:`port` with `datadir`; it dies with this process.
/// Something already listening on `port` (a playground still running, another server)
/// would answer `wait_for_port` while a server started there fails to bind and exits: the
/// proxy would front the wrong server.
pub fn ensure_port_free(port: u16) -> Result<(), PlaygroundError> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(PlaygroundError::Failed(format!(
            "port {port} is not free ({e}): another server, or a playground still running, \
             listens there; stop it or pick other ports (--backend-port)"
        ))),
    }
}

pub fn start_server(
    bin: &ServerBinaries,
    dir: &Path,
    datadir: &Path,
    port: u16,
    flush_at_commit: u8,
    extra_args: &[&str],
) -> Result<Child, PlaygroundError> {
    ensure_port_free(port)?;
    let log = dir.join("server.log");
    // A server starting removes every `#sql*` file in its tmpdir: with /tmp shared, starting
    // or restarting one server deleted the internal temporary tables of the others under
    // their running queries ("Error on delete of '/tmp/#sql-temptable-…'").
    let tmpdir = dir.join("tmp");
    std::fs::create_dir_all(&tmpdir).map_err(|source| PlaygroundError::Io {
        what: format!("creating {}", tmpdir.display()),
        source,
    })?;
    let mut cmd = Command::new(&bin.server);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("server.sock").display()))
        .arg(format!("--pid-file={}", dir.join("server.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--tmpdir={}", tmpdir.display()))
        .arg("--skip-networking=0")
        .arg("--skip-name-resolve")
        .arg("--innodb-buffer-pool-size=128M")
        .arg("--innodb-log-file-size=64M")
        .arg("--max-connections=1000")
        .arg("--max-allowed-packet=256M")
        .arg(format!(
            "--innodb-flush-log-at-trx-commit={flush_at_commit}"
        ))
        .arg("--user=root")
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| PlaygroundError::Io {
        what: format!("starting {}", bin.server.display()),
        source,
    })
}

pub fn wait_for_port(
    port: u16,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), PlaygroundError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(PlaygroundError::Failed(format!(
                "server for port {port} exited ({status}); see its server.log"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(PlaygroundError::Failed(format!(
        "server on port {port} did not start in {timeout:?}"
    )))
}

/// Creates/starts every backend and returns them with the proxy config that fronts them.
pub fn start(spec: &PlaygroundSpec) -> Result<(Backends, Config), PlaygroundError> {
    let bin = find_server()?;
    let mut backends = Backends {
        children: Vec::new(),
    };
    let mut cfg = Config::default();
    cfg.proxy.listen = format!("127.0.0.1:{}", spec.proxy_port);
    let mut port = spec.first_backend_port;
    // Before any data directory is initialized: a taken port fails at once.
    for p in (port as usize..port as usize + spec.shards * spec.replicas)
        .filter_map(|p| u16::try_from(p).ok())
    {
        ensure_port_free(p)?;
    }
    // mariadbd resolves a relative --datadir against its basedir (/usr), not our cwd.
    let root = std::path::absolute(&spec.dir).map_err(|source| PlaygroundError::Io {
        what: format!("resolving {}", spec.dir.display()),
        source,
    })?;
    for s in 0..spec.shards {
        let mut replicas = Vec::new();
        for r in 0..spec.replicas {
            let dir = root.join(format!("shard{s}-replica{r}"));
            let datadir = dir.join("data");
            init_datadir(&bin, &datadir)?;
            let mut child = start_server(&bin, &dir, &datadir, port, spec.flush_at_commit, &[])?;
            wait_for_port(port, &mut child, Duration::from_secs(60))?;
            tracing::info!(shard = s, replica = r, port, "backend started");
            backends.children.push(child);
            replicas.push(format!("127.0.0.1:{port}"));
            port += 1;
        }
        cfg.shards.push(ShardConfig { replicas });
    }
    // TLS for clients that ask for it (`mysql --ssl`), with a self-signed certificate.
    let (cert, key) = (
        spec.dir.join("proxy-cert.pem"),
        spec.dir.join("proxy-key.pem"),
    );
    if !cert.exists() || !key.exists() {
        crate::frontend::tls::write_self_signed(&cert, &key).map_err(PlaygroundError::Failed)?;
    }
    cfg.proxy.tls_cert = cert.display().to_string();
    cfg.proxy.tls_key = key.display().to_string();
    // The log and the timestamp state live with the playground's data.
    cfg.replication.wal_dir = spec.dir.join("wal").display().to_string();
    // Servers started not to sync their commits keep that setting: the proxy would otherwise
    // make the followers sync (flush_role).
    cfg.replication.primary_syncs_commits = spec.flush_at_commit != 1;
    // Every server is on this host: the proxy talks to them over their Unix sockets, and
    // local clients may use the proxy's (`mysql -S`), when the path fits a socket address.
    cfg.backend.prefer_socket = true;
    let socket = root.join("myquorum.sock");
    if socket.as_os_str().len() < 100 {
        cfg.proxy.listen_socket = socket.display().to_string();
    }
    let path = spec.dir.join("proxy.toml");
    std::fs::write(&path, cfg.to_toml()).map_err(|source| PlaygroundError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok((backends, cfg))
}
