//! caching_sha2_password (full path over RSA and over TLS, then the fast path) and TLS with
//! real clients; users running as their own backend accounts, with the servers' privileges
//! and the proxy's admin right.

mod common;

use common::{config_for, mysql_cli, MariaDb, Proxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

fn sha2_config(db: &MariaDb, tls_dir: Option<&std::path::Path>) -> myquorum::config::Config {
    let mut cfg = config_for(&[db]);
    cfg.proxy.auth_plugin = "caching_sha2_password".into();
    cfg.users
        .push(myquorum::config::UserConfig::new("app", "s3cret"));
    if let Some(dir) = tls_dir {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        myquorum::frontend::tls::write_self_signed(&cert, &key).unwrap();
        cfg.proxy.tls_cert = cert.display().to_string();
        cfg.proxy.tls_key = key.display().to_string();
    }
    cfg
}

async fn assert_denied(url: &str) {
    let err = Conn::new(Opts::from_url(url).unwrap()).await.unwrap_err();
    assert!(
        matches!(err, mysql_async::Error::Server(ref e) if e.code == 1045),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_auth_with_rsa_then_fast_path() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(sha2_config(&db, None));
    let url = |pw: &str| {
        format!(
            "mysql://app:{pw}@127.0.0.1:{}/?prefer_socket=false",
            proxy.port
        )
    };
    // Wrong password on the full path.
    assert_denied(&url("bad")).await;
    // First login: full authentication (public key requested, password RSA-encrypted).
    let mut c = Conn::new(Opts::from_url(&url("s3cret")).unwrap())
        .await
        .unwrap();
    let v: Option<u8> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(v, Some(1));
    // Then the fast path, and a wrong password on the fast path.
    let mut c2 = Conn::new(Opts::from_url(&url("s3cret")).unwrap())
        .await
        .unwrap();
    let v: Option<u8> = c2.query_first("SELECT 2").await.unwrap();
    assert_eq!(v, Some(2));
    assert_denied(&url("bad")).await;
    // A user without a password.
    let mut root = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    let v: Option<u8> = root.query_first("SELECT 3").await.unwrap();
    assert_eq!(v, Some(3));
}

#[test]
fn tls_with_the_mysql_cli_and_sha2_over_tls() {
    common::init_tracing();
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(sha2_config(&db, Some(dir.path())));
    // TLS, then caching_sha2_password full authentication with the password over TLS.
    let (ok, out, err) = mysql_cli(
        proxy.port,
        &[
            "--ssl",
            "-uapp",
            "-ps3cret",
            "--default-auth=caching_sha2_password",
        ],
        "\\s\nSELECT 'over tls';\nSHOW SESSION STATUS LIKE 'Ssl_cipher';\nSHOW STATUS LIKE 'Ssl_version';",
    );
    assert!(ok, "{err}");
    assert!(out.contains("over tls"), "{out}");
    // The server's answer names the client's own TLS session (the proxy's link to this
    // backend is plain), as the client library itself reports it.
    let cipher = out
        .split("Cipher in use is ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cipher in {out}"));
    assert!(out.contains(&format!("Ssl_cipher\t{cipher}\n")), "{out}");
    assert!(out.contains("Ssl_version\tTLSv1."), "{out}");
    // Plain connections still work (TLS is offered, not required).
    let (ok, out, err) = mysql_cli(proxy.port, &["--skip-ssl"], "SELECT 'plain';");
    assert!(ok, "{err}");
    assert!(out.contains("plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_request_without_tls_configured_is_refused_clearly() {
    use myquorum::protocol::{MysqlError, PacketStream};
    use mysql_common::constants::CapabilityFlags;
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let mut s = PacketStream::new(tcp);
    let greeting = s.read_packet().await.unwrap();
    let caps = CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_PROTOCOL_41;
    let mut ssl_request = caps.bits().to_le_bytes().to_vec();
    ssl_request.extend_from_slice(&[0, 0, 0, 1, 45]);
    ssl_request.resize(32, 0);
    s.write_packet(greeting.seq + 1, &ssl_request)
        .await
        .unwrap();
    let p = s.read_packet().await.unwrap();
    let e = MysqlError::decode(&p.payload).unwrap();
    assert_eq!((e.code, e.state_str()), (1043, "08S01"));
    assert!(e.message.contains("TLS is not configured"), "{}", e.message);
}

/// PyMySQL ≥ 1.2 prefers TLS and sends its ClientHello right behind the SSL request, so the
/// proxy's first read holds both. The handshake must still complete and the login succeed.
#[test]
fn client_hello_in_the_same_write_as_the_ssl_request() {
    use mysql_common::constants::CapabilityFlags;
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    common::init_tracing();
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sha2_config(&db, Some(dir.path()));
    cfg.proxy.auth_plugin = "mysql_native_password".into();
    let proxy = Proxy::start(cfg);

    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(dir.path().join("cert.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();

    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let read_packet = |s: &mut dyn Read| -> (u8, Vec<u8>) {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).unwrap();
        let mut p = vec![0u8; u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize];
        s.read_exact(&mut p).unwrap();
        (h[3], p)
    };
    let (seq, _greeting) = read_packet(&mut tcp);
    let caps = CapabilityFlags::CLIENT_SSL
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    let mut request = caps.bits().to_le_bytes().to_vec();
    request.extend_from_slice(&[0, 0, 0, 1, 45]);
    request.resize(32, 0);
    let mut bytes = vec![32, 0, 0, seq + 1];
    bytes.extend_from_slice(&request);
    tls.write_tls(&mut bytes).unwrap(); // the ClientHello, in the same write
    tcp.write_all(&bytes).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .expect("TLS handshake after a coalesced SSL request");
    }

    let mut s = rustls::StreamOwned::new(tls, tcp);
    let mut login = request.clone();
    login.extend_from_slice(b"root\0");
    login.push(0); // empty auth response
    login.extend_from_slice(b"mysql_native_password\0");
    let mut packet = (login.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(seq + 2);
    packet.extend_from_slice(&login);
    s.write_all(&packet).unwrap();
    let (_, answer) = read_packet(&mut s);
    assert_eq!(
        answer.as_slice().first(),
        Some(&0x00),
        "login over TLS: {answer:?}"
    );
}

/// `proxy.listen_socket`: local clients connect through the proxy's Unix socket, which is
/// private like TLS (caching_sha2_password's first login takes the password in clear over
/// it, as MySQL allows); a stale socket a killed proxy left is replaced, a live one is not
/// taken over, and the file goes when the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_clients_connect_through_the_proxys_unix_socket() {
    common::init_tracing();
    let db = MariaDb::start();
    let path = db.dir.path().join("proxy.sock");
    // What a kill -9 leaves: a socket file nobody answers on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut cfg = sha2_config(&db, None);
    cfg.proxy.listen_socket = path.display().to_string();
    let proxy = Proxy::start(cfg.clone());
    let opts = |pw: &str| -> Opts {
        mysql_async::OptsBuilder::default()
            .socket(Some(path.display().to_string()))
            .user(Some("app"))
            .pass(Some(pw))
            .into()
    };
    let err = Conn::new(opts("bad")).await.unwrap_err();
    assert!(
        matches!(err, mysql_async::Error::Server(ref e) if e.code == 1045),
        "{err:?}"
    );
    // First login of `app`: the full path, password in clear over the socket.
    let mut c = Conn::new(opts("s3cret")).await.unwrap();
    c.query_drop("CREATE DATABASE us; CREATE TABLE us.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO us.t VALUES (1), (2)")
        .await
        .unwrap();
    // The mysql CLI, and the same data over TCP.
    let out = std::process::Command::new("mysql")
        .args(["-S", path.to_str().unwrap(), "-uroot", "-N", "-e"])
        .arg("SELECT COUNT(*) FROM us.t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let mut tcp = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    let n: Option<i64> = tcp.query_first("SELECT COUNT(*) FROM us.t").await.unwrap();
    assert_eq!(n, Some(2));

    // A second proxy does not take over a live socket.
    cfg.replication.wal_dir = db.dir.path().join("wal2").display().to_string();
    cfg.proxy.listen = format!("127.0.0.1:{}", common::free_port());
    let ctx = std::sync::Arc::new(myquorum::context::ProxyContext::new(cfg).unwrap());
    let err = myquorum::server::Server::bind(ctx.clone())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("a running server answers on it"),
        "{err}"
    );
    drop(c);
    drop(tcp);
    drop(proxy);
    assert!(!path.exists(), "the socket file outlived the proxy");
    // Nor is a file that is not a socket removed.
    std::fs::write(&path, "notes").unwrap();
    let err = myquorum::server::Server::bind(ctx).await.err().unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "notes");
}

async fn status_counter(c: &mut Conn, name: &str) -> u64 {
    let rows: Vec<(String, String)> = c.query("SHOW PROXY STATUS").await.unwrap();
    rows.into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in SHOW PROXY STATUS"))
}

/// `e` is the server's error `code` and its message mentions `says`.
fn assert_server_error(e: &mysql_async::Error, code: u16, says: &str) {
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, code, "{e}");
            assert!(s.message.contains(says), "{e}");
        }
        other => panic!("not a server error: {other}"),
    }
}

fn user_as(name: &str, password: &str, backend_user: &str) -> myquorum::config::UserConfig {
    let mut u = myquorum::config::UserConfig::new(name, password);
    u.backend_user = Some(backend_user.to_string());
    u
}

/// A user configured with `backend_user` runs as that server account: the servers enforce
/// its privileges (a table it may not read is refused, the session goes on), CURRENT_USER()
/// is its account, its writes replicate — with USER() and CURRENT_USER() in them taking its
/// values on every replica, text or prepared, where followers once wrote their own replay
/// account's — and its reads still go to replicas. It may not run
/// the proxy's admin statements. An account missing on a replica only moves that user's
/// reads to the primary (the replica stays in), and one missing everywhere fails the login
/// with the server's 1045, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_runs_as_its_own_backend_account() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let mut cfg = config_for(&all);
    // The primary behind a relay that can slow it, so that reads prefer the followers.
    let relay = common::relay::Relay::start(dbs[0].addr());
    cfg.shards[0].replicas[0] = relay.addr();
    cfg.users.push(user_as("app", "app-pw", "app"));
    let mut ghost = user_as("ghost", "g", "ghost");
    ghost.backend_password = Some("ghost-pw".into());
    cfg.users.push(ghost);
    cfg.users.push(user_as("nobody", "n", "nobody"));
    let proxy = Proxy::start(cfg);
    let url = |user: &str, password: &str| {
        format!(
            "mysql://{user}:{password}@127.0.0.1:{}/?prefer_socket=false",
            proxy.port
        )
    };
    let mut root = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    for sql in [
        "CREATE DATABASE app",
        "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE app.audit (id INT PRIMARY KEY, who VARCHAR(80), acct VARCHAR(80), \
         role VARCHAR(80))",
        "CREATE DATABASE other",
        "CREATE TABLE other.s (id INT PRIMARY KEY)",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'%'",
        // The primary stores each record's log row in the client's own transaction.
        "GRANT INSERT, UPDATE, SELECT (applied) ON myquorum.wal TO 'app'@'%'",
        "GRANT INSERT ON myquorum.wal_part TO 'app'@'%'",
    ] {
        root.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Created behind the proxy's back, on the primary only.
    let mut primary = Conn::new(Opts::from_url(&dbs[0].url(None)).unwrap())
        .await
        .unwrap();
    primary
        .query_drop("CREATE USER 'ghost'@'%' IDENTIFIED BY 'ghost-pw'; GRANT SELECT ON app.* TO 'ghost'@'%'")
        .await
        .unwrap();

    let mut app = Conn::new(Opts::from_url(&url("app", "app-pw")).unwrap())
        .await
        .unwrap();
    let me: Option<String> = app.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(me.as_deref(), Some("app@%"));
    app.query_drop("INSERT INTO app.t VALUES (1, 1), (2, 1)")
        .await
        .unwrap();
    app.query_drop("BEGIN").await.unwrap();
    app.query_drop("UPDATE app.t SET v = 2 WHERE id = 1")
        .await
        .unwrap();
    app.query_drop("COMMIT").await.unwrap();
    app.query_drop("INSERT INTO app.audit VALUES (1, USER(), CURRENT_USER, CURRENT_ROLE())")
        .await
        .unwrap();
    app.exec_drop(
        "INSERT INTO app.audit VALUES (?, SESSION_USER(), CURRENT_USER(), CURRENT_ROLE())",
        (2,),
    )
    .await
    .unwrap();
    let denied = app.query_drop("SELECT * FROM other.s").await.unwrap_err();
    assert_server_error(&denied, 1142, "other");
    let denied = app.query_drop("SHOW PROXY BACKENDS").await.unwrap_err();
    assert_server_error(&denied, 1227, "admin");
    let last: Option<mysql_async::Row> = app.query_first("EXPLAIN LAST STATEMENT").await.unwrap();
    assert!(last.is_some());
    common::converge::wait_converged(&all).await;

    relay.set_delay_ms(3);
    let before = status_counter(&mut root, "replica_reads").await;
    for _ in 0..20 {
        let sum: Option<i64> = app.query_first("SELECT SUM(v) FROM app.t").await.unwrap();
        assert_eq!(sum, Some(3));
    }
    assert!(status_counter(&mut root, "replica_reads").await > before);

    let mut ghost = Conn::new(Opts::from_url(&url("ghost", "g")).unwrap())
        .await
        .unwrap();
    for _ in 0..20 {
        let sum: Option<i64> = ghost.query_first("SELECT SUM(v) FROM app.t").await.unwrap();
        assert_eq!(sum, Some(3));
    }
    // Without the log grants its writes are refused before they run, saying which grants;
    // nothing pauses the shard's other writers.
    let refused = ghost
        .query_drop("INSERT INTO app.t VALUES (3, 3)")
        .await
        .unwrap_err();
    assert_server_error(&refused, 1142, "ON myquorum.wal");
    let started = std::time::Instant::now();
    app.query_drop("INSERT INTO app.t VALUES (4, 0)")
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let refused = Conn::new(Opts::from_url(&url("nobody", "n")).unwrap())
        .await
        .unwrap_err();
    assert_server_error(&refused, 1045, "backend account `nobody`");
    // The followers that refused `ghost` served reads and were never taken out.
    let backends: Vec<mysql_async::Row> = root.query("SHOW PROXY BACKENDS").await.unwrap();
    for b in &backends {
        let (state, times_down): (String, u64) =
            (b.get("health").unwrap(), b.get("times_down").unwrap());
        assert_eq!((state.as_str(), times_down), ("up", 0), "{b:?}");
    }
    relay.set_delay_ms(0);
    common::converge::wait_converged(&all).await;
    common::converge::assert_same_tables(&all, &["app.t", "app.audit"]).await;
    let audit: Vec<(i32, String, String, Option<String>)> = primary
        .query("SELECT id, who, acct, role FROM app.audit ORDER BY id")
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    for (_, who, acct, role) in &audit {
        assert!(who.starts_with("app@"), "{audit:?}");
        assert_eq!((acct.as_str(), role), ("app@%", &None), "{audit:?}");
    }
}

/// A self-signed certificate for `names` (its own CA) in `dir` as `<stem>.pem` and
/// `<stem>-key.pem`; returns the certificate's path.
fn server_cert(dir: &std::path::Path, stem: &str, names: &[&str]) -> std::path::PathBuf {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}-key.pem")),
        ck.key_pair.serialize_pem(),
    )
    .unwrap();
    cert
}

/// Restarts `db` serving TLS with `dir`'s `<stem>` certificate.
fn serve_tls(db: &mut MariaDb, dir: &std::path::Path, stem: &str) {
    let cert = format!("--ssl-cert={}", dir.join(format!("{stem}.pem")).display());
    let key = format!(
        "--ssl-key={}",
        dir.join(format!("{stem}-key.pem")).display()
    );
    db.restart_with(&[&cert, &key]);
}

/// Creates the proxy's account `user` (password `pw`) on `db` directly, with TLS `require`d.
async fn proxy_account(db: &MariaDb, user: &str, require: &str) {
    let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw' REQUIRE {require}; \
         GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' WITH GRANT OPTION"
    ))
    .await
    .unwrap();
}

async fn proxy_error(proxy: &Proxy) -> String {
    let attempt = async {
        let mut c = Conn::new(Opts::from_url(&proxy.url(None))?).await?;
        c.query_drop("SELECT 1").await
    };
    match attempt.await {
        Ok(()) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// `backend.tls`: the proxy's account on the servers requires TLS (REQUIRE SSL), so every
/// connection the proxy makes — pooled data path, appliers, health checks — must be
/// encrypted for reads, writes and replication to work. Then the certificate checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_use_tls_and_check_the_certificate() {
    common::init_tracing();
    let certs = tempfile::tempdir().unwrap();
    let ca = server_cert(certs.path(), "local", &["localhost", "127.0.0.1"]);
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in dbs.iter_mut() {
        serve_tls(db, certs.path(), "local");
        proxy_account(db, "mq", "SSL").await;
    }
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let mut cfg = config_for(&all);
    cfg.backend.user = "mq".into();
    cfg.backend.password = "pw".into();
    cfg.backend.tls = "verify_identity".into();
    cfg.backend.tls_ca = ca.display().to_string();
    let proxy = Proxy::start(cfg.clone());
    let mut c = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    // Its backend connections are encrypted (the account is REQUIRE SSL), but this client's
    // own connection is not, and Ssl_cipher / Ssl_version say so (they are the client's).
    let ssl: Vec<(String, String)> = c
        .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
        .await
        .unwrap();
    assert_eq!(ssl.len(), 2, "{ssl:?}");
    assert!(ssl.iter().all(|(_, v)| v.is_empty()), "{ssl:?}");
    // So in a text of several statements, whose other answers follow in order (before, the
    // server's rows of the whole text were read as one answer: the client got the backend
    // link's TLS version and no second result, and its next statement the leftovers).
    let mut answers = c
        .query_iter("SHOW STATUS LIKE 'Ssl_version'; SELECT 2")
        .await
        .unwrap();
    let status: Vec<(String, String)> = answers.collect().await.unwrap();
    let second: Vec<i32> = answers.collect().await.unwrap();
    drop(answers);
    assert_eq!(status, [("Ssl_version".to_string(), String::new())]);
    assert_eq!(second, [2]);
    let next: Option<i32> = c.query_first("SELECT 3").await.unwrap();
    assert_eq!(next, Some(3));
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    for i in 0..20 {
        c.exec_drop("INSERT INTO app.t VALUES (?, ?)", (i, format!("row {i}")))
            .await
            .unwrap();
    }
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE app.t SET v = 'changed' WHERE id < 5")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM app.t WHERE v = 'changed'")
        .await
        .unwrap();
    assert_eq!(n, Some(5));
    // The followers' appliers log in as `mq` too: they applied everything over TLS.
    common::converge::wait_converged(&all).await;
    common::converge::assert_same_tables(&all, &["app.t"]).await;
    // Health checks (mysql_async, also `mq`) keep every server up.
    let states: Vec<(String, String)> = c
        .query_map("SHOW PROXY BACKENDS", |row: mysql_async::Row| {
            (
                row.get::<String, _>("health").unwrap(),
                row.get::<String, _>("transport").unwrap(),
            )
        })
        .await
        .unwrap();
    let want = ("up".to_string(), "tls (verify_identity)".to_string());
    assert!(states.iter().all(|s| *s == want), "{states:?}");
    drop(c);
    drop(proxy);

    // Without TLS the same account is refused by the servers.
    let mut plain = cfg.clone();
    plain.backend.tls = "off".into();
    let e = proxy_error(&Proxy::start(plain)).await;
    assert!(e.contains("mq"), "{e}");

    // A certificate issued for another name: verify_identity refuses it, verify_ca (same
    // CA) and required accept it, and another CA is refused.
    let mut other = MariaDb::start();
    let misnamed = server_cert(certs.path(), "misnamed", &["db.example.internal"]);
    serve_tls(&mut other, certs.path(), "misnamed");
    let single = |mode: &str, ca: &std::path::Path| {
        let mut cfg = config_for(&[&other]);
        cfg.backend.tls = mode.into();
        cfg.backend.tls_ca = ca.display().to_string();
        cfg
    };
    let e = proxy_error(&Proxy::start(single("verify_identity", &misnamed))).await;
    assert!(e.contains("TLS to backend"), "{e}");
    assert_eq!(
        proxy_error(&Proxy::start(single("verify_ca", &misnamed))).await,
        "no error"
    );
    assert_eq!(
        proxy_error(&Proxy::start(single("required", std::path::Path::new("")))).await,
        "no error"
    );
    let e = proxy_error(&Proxy::start(single("verify_ca", &ca))).await;
    assert!(e.contains("TLS to backend"), "{e}");

    // A server without a certificate cannot give TLS: the error says what to do.
    let bare = MariaDb::start();
    let mut cfg = config_for(&[&bare]);
    cfg.backend.tls = "required".into();
    let e = proxy_error(&Proxy::start(cfg)).await;
    assert!(e.contains("does not offer TLS"), "{e}");
}

/// `backend.tls_cert`/`tls_key`: an account created `REQUIRE X509` logs in only with a client
/// certificate the server's CA signed. The proxy presents one on the data path and the
/// control path (health probes), so reads, writes and health work; without it the server
/// refuses the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_x509_accounts() {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    // Distinct subjects: a leaf whose subject equals its issuer reads as self-signed.
    let named = |names: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = named(Vec::new(), "myquorum test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = write("ca.pem", ca_cert.pem());
    let signed = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = named(names, cn).signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed(vec!["127.0.0.1".into()], "server");
    let (client_cert, client_key) = signed(vec!["myquorum-proxy".into()], "myquorum-proxy");
    let server_cert = write("server.pem", server_cert);
    let server_key = write("server-key.pem", server_key);
    let client_cert = write("client.pem", client_cert);
    let client_key = write("client-key.pem", client_key);

    let mut db = MariaDb::start();
    db.restart_with(&[
        &format!("--ssl-ca={ca}"),
        &format!("--ssl-cert={server_cert}"),
        &format!("--ssl-key={server_key}"),
    ]);
    proxy_account(&db, "mqx", "X509").await;
    let mut cfg = config_for(&[&db]);
    cfg.backend.user = "mqx".into();
    cfg.backend.password = "pw".into();
    cfg.backend.tls = "verify_identity".into();
    cfg.backend.tls_ca = ca.clone();
    cfg.backend.tls_cert = client_cert;
    cfg.backend.tls_key = client_key;
    let proxy = Proxy::start(cfg.clone());
    let mut c = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    let user: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("mqx@%"));
    c.query_drop("CREATE DATABASE x509; CREATE TABLE x509.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO x509.t VALUES (1), (2)")
        .await
        .unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM x509.t").await.unwrap();
    assert_eq!(n, Some(2));
    let health: Vec<String> = c
        .query_map("SHOW PROXY BACKENDS", |row: mysql_async::Row| {
            row.get::<String, _>("health").unwrap()
        })
        .await
        .unwrap();
    assert_eq!(health, ["up"]);
    drop(c);
    drop(proxy);
    // The same account without the certificate is refused by the server.
    cfg.backend.tls_cert.clear();
    cfg.backend.tls_key.clear();
    let e = proxy_error(&Proxy::start(cfg)).await;
    assert!(e.contains("mqx"), "{e}");
}

/// Users come from the config file and change without a restart, as with PgBouncer's RELOAD
/// or ProxySQL's LOAD MYSQL USERS TO RUNTIME: `myquorum serve` reads the file again on SIGHUP
/// and on `PROXY RELOAD`. A changed password and a new user count from the next login, a
/// session already in stays, a removed user can no longer log in, the default read
/// consistency changes at once, a file that does not load changes nothing, and settings that
/// need a restart are named, not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_its_users_on_sighup_and_proxy_reload() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut cfg = config_for(&[&db]);
    let mut app = myquorum::config::UserConfig::new("app", "first");
    app.admin = Some(false);
    cfg.users.push(app);
    let port: u16 = cfg
        .proxy
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let conf = db.dir.path().join("proxy.toml");
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let mut proxy = std::process::Command::new(env!("CARGO_BIN_EXE_myquorum"))
        .args(["serve", "--config"])
        .arg(&conf)
        .stderr(std::fs::File::create(db.dir.path().join("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    let url =
        |user: &str, pw: &str| format!("mysql://{user}:{pw}@127.0.0.1:{port}/?prefer_socket=false");
    let login = |user: &str, pw: &str| {
        let url = url(user, pw);
        async move { Conn::new(Opts::from_url(&url).unwrap()).await }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut root = loop {
        if let Ok(c) = login("root", "").await {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut kept = login("app", "first").await.unwrap();
    assert_denied(&url("ops", "o1")).await;

    // app's password changes, ops is added, and a [proxy] setting changes: SIGHUP.
    let mut edited = cfg.clone();
    edited.users[1].password = "second".into();
    edited
        .users
        .push(myquorum::config::UserConfig::new("ops", "o1"));
    // One setting that applies at once, one that needs a restart.
    edited.proxy.read_consistency = "eventual".into();
    edited.proxy.max_connections += 1;
    std::fs::write(&conf, edited.to_toml()).unwrap();
    unsafe { libc::kill(proxy.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut ops = loop {
        if let Ok(c) = login("ops", "o1").await {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ops cannot log in after SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The new default consistency holds for reads from now on.
    ops.query_drop("SELECT 1 FROM mysql.user LIMIT 1")
        .await
        .unwrap();
    let explained: Vec<mysql_async::Row> = ops.query("EXPLAIN LAST STATEMENT").await.unwrap();
    assert_eq!(
        explained[0].get::<String, _>("read_consistency").as_deref(),
        Some("eventual")
    );
    assert_denied(&url("app", "first")).await;
    login("app", "second").await.unwrap();
    // The session that logged in before the change goes on.
    let one: Option<i64> = kept.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let log = std::fs::read_to_string(db.dir.path().join("proxy.log")).unwrap();
    assert!(
        log.contains(
            "users reloaded (added: ops; removed: none; changed: app); applied: \
             proxy.read_consistency; changed but not applied until a restart: [proxy]"
        ),
        "{log}"
    );

    // A file that does not load changes nothing, and says why.
    std::fs::write(&conf, format!("{}\nbogus_key = 1\n", edited.to_toml())).unwrap();
    let e = root.query_drop("PROXY RELOAD").await.unwrap_err();
    assert_server_error(&e, 1105, "the running configuration is kept");
    assert!(e.to_string().contains("bogus_key"), "{e}");
    login("ops", "o1").await.unwrap();

    // ops removed and the [proxy] setting back as it was: PROXY RELOAD says so.
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let answer: Option<String> = root.query_first("PROXY RELOAD").await.unwrap();
    assert_eq!(
        answer.as_deref(),
        Some(
            "users reloaded (added: none; removed: ops; changed: app); applied: \
             proxy.read_consistency; changed but not applied until a restart: [proxy]"
        )
    );
    assert_denied(&url("ops", "o1")).await;
    login("app", "first").await.unwrap();
    // Only an admin may reload.
    let e = kept.query_drop("PROXY RELOAD").await.unwrap_err();
    assert_server_error(&e, 1227, "");
    let _ = proxy.kill();
    let _ = proxy.wait();
}
