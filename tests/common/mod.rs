//! Test infrastructure: real mariadbd processes on free loopback ports (killed on drop), the
//! proxy in-process on its own runtime, and helpers to run real clients.
#![allow(dead_code)]

pub mod converge;
pub mod relay;
pub mod writes;

use myquorum::config::{Config, ShardConfig};
use myquorum::context::ProxyContext;
use myquorum::playground::{find_server, init_datadir, start_server, wait_for_port};
use myquorum::server::Server;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Test ports are drawn from below the kernel's ephemeral range (32768 and up on Linux), so
/// no outgoing connection of a parallel test can take one between the check here and the
/// server's bind (seen in CI: a port checked free was in use a moment later).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A pseudo-random candidate in `TEST_PORTS`, different in every test process.
fn candidate_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = SEED.get_or_init(Default::default).build_hasher();
    hasher.write_u64(DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    TEST_PORTS.start + (hasher.finish() % span) as u16
}

/// A free loopback port never handed out before in this test process. Tests of one binary
/// run in parallel and kill and restart servers on their ports: without the record, a port
/// freed by a killed server could be handed to another test, whose proxy would then talk to
/// the wrong server (seen once: a fresh proxy adopting another test's log records).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// `n` consecutive free ports (the playground numbers its backends from one), all bound at
/// once while checked, so none of them is another port handed out here.
pub fn free_ports(n: u16) -> u16 {
    loop {
        let base = candidate_port();
        if base + n > TEST_PORTS.end {
            continue;
        }
        let held: Vec<_> = (base..base + n)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        let mut handed = HANDED_OUT.lock().unwrap();
        if held.iter().all(|l| l.is_ok()) && !(base..base + n).any(|p| handed.contains(&p)) {
            handed.extend(base..base + n);
            return base;
        }
    }
}

/// One initialized data directory, copied for every server. Shared by every test process
/// (one per mariadbd build; a template per process was never removed and filled the disk
/// after a few hundred runs): built aside and renamed into place, so a half-built one is
/// never used and concurrent builders simply keep the first.
fn template_datadir() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let bin = find_server().expect("mariadbd must be installed for integration tests");
        let build = std::fs::metadata(&bin.server)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("myquorum-template-{build}"));
        if !dir.join("data").is_dir() {
            let aside = std::env::temp_dir()
                .join(format!("myquorum-template-building-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&aside);
            init_datadir(&bin, &aside.join("data")).expect("mariadb-install-db");
            if std::fs::rename(&aside, &dir).is_err() {
                // Another process put its template in place first.
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        dir.join("data")
    })
}

pub struct MariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("myquorum-db")
            .tempdir()
            .unwrap();
        let datadir = dir.path().join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template_datadir())
            .arg(&datadir)
            .status()
            .unwrap();
        assert!(status.success());
        let bin = find_server().unwrap();
        // A port `free_port` found free can be taken before the server binds it: an
        // outgoing connection of a parallel test may get it as its local port. Another
        // port then, as the server itself would need.
        for attempt in 1.. {
            let port = free_port();
            let taken = |why: &str| {
                assert!(
                    attempt < 5,
                    "no free port for a server after {attempt} tries: {why}"
                );
            };
            let mut child = match start_server(&bin, dir.path(), &datadir, port, 1, &[]) {
                Ok(child) => child,
                Err(e) if e.to_string().contains("is not free") => {
                    taken(&e.to_string());
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            if let Err(e) = wait_for_port(port, &mut child, Duration::from_secs(60)) {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                if log.contains("Address already in use") {
                    let _ = child.wait();
                    taken(&log);
                    continue;
                }
                panic!("{e}\n{log}");
            }
            return MariaDb {
                port,
                dir,
                child: Some(child),
            };
        }
        unreachable!("the loop returns or panics")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends the server a signal (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Restarts the server with more command-line options (e.g. a binary log).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill9();
        let bin = find_server().unwrap();
        let datadir = self.dir.path().join("data");
        let mut child = start_server(&bin, self.dir.path(), &datadir, self.port, 1, args).unwrap();
        wait_for_port(self.port, &mut child, Duration::from_secs(60)).unwrap();
        self.child = Some(child);
    }

    /// The last `lines` lines of this server's error log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, db: Option<&str>) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{}?prefer_socket=false",
            self.port,
            db.unwrap_or("")
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The proxy running in-process on its own runtime thread; stopped on drop.
pub struct Proxy {
    pub port: u16,
    /// The Prometheus endpoint's port, when the config asked for one.
    pub metrics_port: Option<u16>,
    pub ctx: Arc<ProxyContext>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn config_for(backends: &[&MariaDb]) -> Config {
    let mut cfg = Config::default();
    // A port from `free_port`, not one the OS picks at bind time: that one could be a port
    // handed to a server still starting, which then fails to bind while its test talks to
    // this proxy instead.
    cfg.proxy.listen = format!("127.0.0.1:{}", free_port());
    cfg.backend.health_interval_ms = 200;
    cfg.backend.connect_timeout_ms = 2000;
    cfg.shards = vec![ShardConfig {
        replicas: backends.iter().map(|b| b.addr()).collect(),
    }];
    // Segments are zero-filled before use (two per start: the first and the next): small
    // ones keep the suite's disk writes small.
    cfg.replication.wal_segment_bytes = 8 << 20;
    // Each test's log lives with its first server (removed with it).
    cfg.replication.wal_dir = backends[0]
        .dir
        .path()
        .join("wal")
        .to_string_lossy()
        .into_owned();
    cfg
}

impl Proxy {
    pub fn start(cfg: Config) -> Proxy {
        let ctx = Arc::new(ProxyContext::new(cfg).expect("proxy context"));
        let cancel = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (c2, cancel2) = (ctx.clone(), cancel.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(c2).await.unwrap();
                let metrics = server.metrics_addr().map(|a| a.port());
                tx.send((server.local_addr().unwrap().port(), metrics))
                    .unwrap();
                server.run(cancel2).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let (port, metrics_port) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Proxy {
            port,
            metrics_port,
            ctx,
            cancel,
            thread: Some(thread),
        }
    }

    /// `GET /metrics`: the status line and the body.
    pub async fn scrape(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self.metrics_port.expect("metrics_listen is set");
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    pub fn url(&self, db: Option<&str>) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{}?prefer_socket=false",
            self.port,
            db.unwrap_or("")
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Runs the `mysql` CLI in batch mode and returns (status ok, stdout, stderr).
pub fn mysql_cli(port: u16, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("mysql")
        .args(["-h127.0.0.1", &format!("-P{port}"), "-uroot", "--batch"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mysql CLI must be installed (apt-get install mariadb-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
