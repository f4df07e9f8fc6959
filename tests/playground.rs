//! The `myquorum` binary: playground lifecycle (start, connect, SIGTERM and kill -9 leave no
//! server behind, a second run reuses the data) and `configcheck`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn wait_closed(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !port_open(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn start_playground(dir: &std::path::Path, proxy_port: u16, backend_port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_myquorum"))
        .args(["playground", "--replicas", "3"])
        .args([
            "--port",
            &proxy_port.to_string(),
            "--backend-port",
            &backend_port.to_string(),
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains(&format!("mysql -h127.0.0.1 -P{proxy_port} -uroot")),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port_open(proxy_port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn playground_starts_stops_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // One run of four: the proxy's port cannot land inside the backends' range.
    let proxy_port = common::free_ports(4);
    let backend_port = proxy_port + 1;
    let backends = [backend_port, backend_port + 1, backend_port + 2];

    let child = start_playground(dir.path(), proxy_port, backend_port);
    let (ok, _, err) = common::mysql_cli(
        proxy_port,
        &[],
        "CREATE DATABASE kept; CREATE TABLE kept.t (a INT); INSERT INTO kept.t VALUES (7);",
    );
    assert!(ok, "{err}");
    let cfg = std::fs::read_to_string(dir.path().join("proxy.toml")).unwrap();
    assert!(cfg.contains(&format!("127.0.0.1:{backend_port}")), "{cfg}");
    // Every replica received the write (followers apply it shortly after the quorum).
    for p in backends {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, out, _) = common::mysql_cli(p, &[], "SELECT a FROM kept.t;");
            if out.contains('7') {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica on {p} lacks the write: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // SIGTERM stops the proxy and its servers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut child = child;
    child.wait().unwrap();
    for p in backends.iter().chain([&proxy_port]) {
        assert!(
            wait_closed(*p, Duration::from_secs(30)),
            "port {p} still open after SIGTERM"
        );
    }

    // Run again: same data. Then kill -9: the servers must not outlive it.
    let mut child = start_playground(dir.path(), proxy_port, backend_port);
    let (ok, out, err) = common::mysql_cli(proxy_port, &[], "SELECT a FROM kept.t;");
    assert!(ok, "{err}");
    assert!(out.contains('7'), "{out}");
    child.kill().unwrap();
    child.wait().unwrap();
    for p in backends {
        assert!(
            wait_closed(p, Duration::from_secs(10)),
            "backend on {p} outlived a killed playground"
        );
    }
}

#[test]
fn configcheck_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, "[proxy]\nlisten = \"127.0.0.1:1\"\nmax_conections = 5\n[[shards]]\nreplicas = [\"127.0.0.1:3306\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_myquorum"))
        .args(["configcheck", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));
    std::fs::write(&path, "[[shards]]\nreplicas = [\"127.0.0.1:3306\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_myquorum"))
        .args(["configcheck", "-c"])
        .arg(&path)
        .env("MYQUORUM_PROXY__LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:7777"),
        "env overrides the file"
    );
}

/// A backend port something already listens on (a playground still running) is refused
/// with the port named, before any data directory is initialized: the new server would
/// fail to bind while the old one answered in its place, and the proxy would front the
/// wrong server.
#[test]
fn a_playground_whose_backend_port_is_taken_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // Another process may bind a port between `free_ports` checking it and the test taking
    // it (seen once in CI): then other ports.
    let (proxy_port, _occupant) = loop {
        let port = common::free_ports(2);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port + 1)) {
            break (port, l);
        }
    };
    let taken = proxy_port + 1;
    let mut child = Command::new(env!("CARGO_BIN_EXE_myquorum"))
        .args(["playground", "--replicas", "1"])
        .args(["--port", &proxy_port.to_string()])
        .args(["--backend-port", &taken.to_string()])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the playground started on a taken port");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains(&format!("port {taken} is not free")), "{err}");
    assert!(!port_open(proxy_port), "the proxy started anyway");
    // Refused before any data directory was initialized.
    assert!(!dir.path().join("shard0-replica0/data").exists());
}
