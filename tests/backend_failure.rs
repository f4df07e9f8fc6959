//! A backend that dies: sessions using it are closed with a clear error, new connections are
//! refused with a clear error until it is back, then everything works again.

mod common;

use common::{config_for, MariaDb, Proxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_death_and_return() {
    common::init_tracing();
    let mut db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let url = proxy.url(None);
    let mut pinned = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    pinned
        .query_drop("CREATE DATABASE f; CREATE TABLE f.t (a INT)")
        .await
        .unwrap();
    pinned.query_drop("BEGIN").await.unwrap();
    pinned
        .query_drop("INSERT INTO f.t VALUES (1)")
        .await
        .unwrap();

    // libmariadb clients (the mysql CLI here) read the proxy's errors: a server error packet
    // with a client-library code (2003, 2013) was "2027 Received malformed packet" to them.
    let (ok, _, err) = common::mysql_cli(proxy.port, &["nosuchdb"], "SELECT 1");
    assert!(
        !ok && err.contains("ERROR 1049") && err.contains("nosuchdb"),
        "{err}"
    );

    db.kill9();
    let (ok, _, err) = common::mysql_cli(proxy.port, &[], "SELECT 1");
    assert!(
        !ok && err.contains("ERROR 9003") && err.contains(&db.addr()) && !err.contains("malformed"),
        "{err}"
    );
    // The pinned session is told, not left hanging.
    let err = tokio::time::timeout(Duration::from_secs(10), pinned.query_drop("SELECT 1"))
        .await
        .expect("a session on a dead backend must not hang")
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("9013") || msg.to_lowercase().contains("lost") || msg.contains("closed"),
        "{msg}"
    );

    // New connections get a clear error.
    let err = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap_err();
    match err {
        mysql_async::Error::Server(e) => {
            // 9000 + the client library's 2003: libmariadb clients reject 2xxx from a server.
            assert_eq!(e.code, 9003);
            assert!(e.message.contains(&db.addr()), "{}", e.message);
        }
        other => panic!("expected a server error, got {other:?}"),
    }

    db.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut c = loop {
        match Conn::new(Opts::from_url(&url).unwrap()).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("proxy did not recover: {e}"),
        }
    };
    // The uncommitted insert is gone; the table is there.
    let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM f.t").await.unwrap();
    assert_eq!(n, Some(0));
}

/// The `transport` column of SHOW PROXY BACKENDS, one per replica.
async fn transports(proxy: &Proxy) -> Vec<String> {
    let mut c = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    let rows: Vec<mysql_async::Row> = c.query("SHOW PROXY BACKENDS").await.unwrap();
    rows.into_iter()
        .map(|r| {
            let i = r
                .columns_ref()
                .iter()
                .position(|c| c.name_str() == "transport");
            r.get::<String, _>(i.expect("transport column")).unwrap()
        })
        .collect()
}

/// Connections the server sees from host `localhost` (its Unix socket; TCP ones show as
/// 127.0.0.1:port under skip-name-resolve).
async fn socket_sessions(db: &MariaDb) -> i64 {
    let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .unwrap();
    c.query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE HOST = 'localhost'")
        .await
        .unwrap()
        .unwrap()
}

async fn write_and_read(proxy: &Proxy, db: &str) {
    let mut c = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    for i in 0..20 {
        c.exec_drop(
            format!("INSERT INTO {db}.t VALUES (?, ?)"),
            (i, format!("row {i}")),
        )
        .await
        .unwrap();
    }
    let n: Option<i64> = c
        .query_first(format!("SELECT COUNT(*) FROM {db}.t"))
        .await
        .unwrap();
    assert_eq!(n, Some(20));
}

/// `backend.prefer_socket`: backends on this host are reached over their Unix sockets
/// (replicated writes, appliers and reads alike), and again after one restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backends_are_reached_over_their_unix_sockets() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.backend.prefer_socket = true;
    let proxy = Proxy::start(cfg);
    write_and_read(&proxy, "s1").await;
    let sockets: Vec<String> = dbs
        .iter()
        .map(|d| format!("unix:{}", d.dir.path().join("server.sock").display()))
        .collect();
    assert_eq!(transports(&proxy).await, sockets);
    for db in &dbs {
        assert!(
            socket_sessions(db).await > 0,
            "{} has no socket sessions",
            db.addr()
        );
    }
    common::converge::assert_same_tables(&[&dbs[0], &dbs[1], &dbs[2]], &["s1.t"]).await;

    // A follower restarted: marked down, then back; its applier reconnects over the socket.
    dbs[2].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dbs[2].restart();
    write_and_read(&proxy, "s2").await;
    common::converge::assert_same_tables(&[&dbs[0], &dbs[1], &dbs[2]], &["s1.t", "s2.t"]).await;
    assert_eq!(transports(&proxy).await[2], sockets[2]);
    assert!(socket_sessions(&dbs[2]).await > 0);
}

/// A socket is used only when it reaches the same server as the same account: a path that
/// leads to another server (as with containers sharing a host) or a login the account does
/// not have at host `localhost` leaves that backend on TCP, and everything still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_another_server_or_account_is_not_used() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    // Server 1's socket path now leads to server 2.
    let own = dbs[1].dir.path().join("server.sock");
    std::fs::remove_file(&own).unwrap();
    std::os::unix::fs::symlink(dbs[2].dir.path().join("server.sock"), &own).unwrap();
    for db in &dbs {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        c.query_drop(
            "CREATE USER mqtcp@'127.0.0.1' IDENTIFIED BY 'pw'; \
             GRANT ALL ON *.* TO mqtcp@'127.0.0.1' WITH GRANT OPTION",
        )
        .await
        .unwrap();
    }
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.backend.prefer_socket = true;
    let proxy = Proxy::start(cfg.clone());
    write_and_read(&proxy, "o1").await;
    let seen = transports(&proxy).await;
    assert!(seen[0].starts_with("unix:"), "{seen:?}");
    assert_eq!(seen[1], "tcp", "{seen:?}");
    assert!(seen[2].starts_with("unix:"), "{seen:?}");
    common::converge::assert_same_tables(&[&dbs[0], &dbs[1], &dbs[2]], &["o1.t"]).await;
    drop(proxy);

    // An account that exists only for 127.0.0.1: every backend stays on TCP.
    cfg.backend.user = "mqtcp".into();
    cfg.backend.password = "pw".into();
    let proxy = Proxy::start(cfg);
    write_and_read(&proxy, "o2").await;
    assert_eq!(transports(&proxy).await, vec!["tcp"; 3]);
    common::converge::assert_same_tables(&[&dbs[0], &dbs[1], &dbs[2]], &["o1.t", "o2.t"]).await;
}

/// The server closes connections idle past its wait_timeout (a my.cnf value DBAs lower to
/// reap leaks, or a SET GLOBAL) and those a DBA KILLs. Pooled connections it closed are not
/// handed out; a pinned session whose connection it closed ends as a direct client's would
/// (its pool or reconnect logic then sees it), instead of answering its next statement
/// with an error on a connection that looks alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closes_are_not_used_again() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut admin = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .unwrap();
    admin
        .query_drop("SET GLOBAL wait_timeout = 2")
        .await
        .unwrap();
    let proxy = Proxy::start(config_for(&[&db]));
    let url = proxy.url(None);
    let opts = || Opts::from_url(&url).unwrap();

    // Unpinned sessions: several at once, so the pool keeps several idle connections.
    let mut sessions = Vec::new();
    for i in 0..3 {
        let mut c = Conn::new(opts()).await.unwrap();
        if i == 0 {
            c.query_drop("CREATE DATABASE w; CREATE TABLE w.t (a INT)")
                .await
                .unwrap();
        }
        c.query_drop("INSERT INTO w.t VALUES (1)").await.unwrap();
        sessions.push(c);
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for c in &mut sessions {
        c.query_drop("INSERT INTO w.t VALUES (2)")
            .await
            .expect("an idle pooled connection the server closed was handed out");
        let one: Option<i64> = c
            .query_first("SELECT 1")
            .await
            .expect("an idle pooled connection the server closed was handed out");
        assert_eq!(one, Some(1));
    }

    // A pinned session (autocommit off) whose backend connection timed out: its client
    // connection is closed, not kept with a dead backend behind it.
    let mut pinned = Conn::new(opts()).await.unwrap();
    pinned.query_drop("SET autocommit = 0").await.unwrap();
    pinned.query_drop("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_closed(&mut pinned, "a pinned session whose connection timed out").await;

    // A DBA's KILL of the backend thread of a pinned session (a transaction) ends it too.
    admin
        .query_drop("SET GLOBAL wait_timeout = 28800")
        .await
        .unwrap();
    let mut in_transaction = Conn::new(opts()).await.unwrap();
    in_transaction.query_drop("BEGIN").await.unwrap();
    // CONNECTION_ID() through the proxy is the session's proxy id; read with a server's
    // processlist it is that server's thread.
    let thread: Option<u64> = in_transaction
        .query_first("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .await
        .unwrap();
    admin
        .query_drop(format!("KILL {}", thread.unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_closed(
        &mut in_transaction,
        "a session whose backend thread was killed",
    )
    .await;

    // Everything else still works.
    let mut fresh = Conn::new(opts()).await.unwrap();
    let one: Option<i64> = fresh.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    drop(sessions);
}

/// Appliers idle while nobody writes; a server's low wait_timeout (and interactive_timeout:
/// replay connections are interactive) must not make every first write after a pause
/// reconnect them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliers_outlive_the_servers_wait_timeout() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut direct = Vec::new();
    for db in &dbs {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        c.query_drop("SET GLOBAL wait_timeout = 2, GLOBAL interactive_timeout = 2")
            .await
            .unwrap();
        direct.push(c);
    }
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    c.query_drop("CREATE DATABASE i; CREATE TABLE i.t (a INT)")
        .await
        .unwrap();
    let mut before = Vec::new();
    for d in &mut direct[1..] {
        before.push(aborted_clients(d).await);
    }
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        c.query_drop(format!("INSERT INTO i.t VALUES ({round})"))
            .await
            .unwrap();
    }
    for (d, was) in direct[1..].iter_mut().zip(before) {
        assert_eq!(
            aborted_clients(d).await,
            was,
            "the server closed a follower's idle applier connection"
        );
    }
    common::converge::assert_same_tables(&[&dbs[0], &dbs[1], &dbs[2]], &["i.t"]).await;
}

/// The server's count of connections it ended for idling past wait_timeout (or that went
/// away without saying goodbye).
async fn aborted_clients(c: &mut Conn) -> u64 {
    let n: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
        .await
        .unwrap();
    n.unwrap().1
}

/// The proxy closed `c`'s connection: its next statement fails without a server answer.
async fn assert_closed(c: &mut Conn, who: &str) {
    match c.query_drop("SELECT 1").await {
        Err(mysql_async::Error::Server(e)) => panic!("{who} answered {e}"),
        Err(_) => {}
        Ok(()) => panic!("{who} went on"),
    }
}

/// A write whose record is logged but whose quorum wait times out (both followers hang)
/// finishes in the background on the session's backend connection. A session that kept
/// state there (a temporary table) is closed after that answer, as a server's connection
/// that died would be. Before, it went on with a new connection: its next insert into its
/// temporary table reached the regular table of that name on the primary alone, unlogged
/// (the mutation test found it, by a commit that failed on the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_state_went_with_its_backend_connection_is_closed() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let relays = [
        common::relay::Relay::start(dbs[1].addr()),
        common::relay::Relay::start(dbs[2].addr()),
    ];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.shards[0].replicas[1] = relays[0].addr();
    cfg.shards[0].replicas[2] = relays[1].addr();
    cfg.replication.commit_timeout_ms = 1500;
    let proxy = Proxy::start(cfg);
    let url = proxy.url(None);
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    for sql in [
        "CREATE DATABASE sl",
        "CREATE TABLE sl.t (id INT PRIMARY KEY)",
        "CREATE TABLE sl.w (id INT PRIMARY KEY)",
        // Hides the regular sl.t for this session only.
        "CREATE TEMPORARY TABLE sl.t (id INT PRIMARY KEY)",
        "INSERT INTO sl.t VALUES (1)",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    for r in &relays {
        r.set_blackhole(true);
    }
    let timed_out = c.query_drop("INSERT INTO sl.w VALUES (1)").await;
    for r in &relays {
        r.set_blackhole(false);
    }
    assert!(
        matches!(&timed_out, Err(mysql_async::Error::Server(_))),
        "the write did not time out: {timed_out:?}"
    );
    match c.query_drop("INSERT INTO sl.t VALUES (2)").await {
        Err(mysql_async::Error::Server(e)) => panic!("the session went on: {e}"),
        Err(_) => {}
        Ok(()) => panic!("the session went on without its temporary table"),
    }
    // The logged write commits everywhere; the regular sl.t stays empty everywhere.
    let mut fresh = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    fresh
        .query_drop("INSERT INTO sl.w VALUES (2)")
        .await
        .unwrap();
    let dbs = [&dbs[0], &dbs[1], &dbs[2]];
    common::converge::wait_converged(&dbs).await;
    common::converge::assert_same_tables(&dbs, &["sl.t", "sl.w"]).await;
    for db in dbs {
        let mut direct = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        let rows: Vec<(i64, i64)> = direct
            .query("SELECT (SELECT COUNT(*) FROM sl.t), (SELECT COUNT(*) FROM sl.w)")
            .await
            .unwrap();
        assert_eq!(rows, vec![(0, 2)], "{}", db.addr());
    }
}

/// Connects that find the server's socket backlog full (EAGAIN: here the server is
/// stopped while sessions open connections) go over TCP once; the socket stays the
/// backend's transport. Before, the first EAGAIN moved the backend to TCP until it was
/// next marked down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_socket_backlog_does_not_move_a_backend_to_tcp() {
    common::init_tracing();
    let mut db = MariaDb::start();
    db.restart_with(&["--back-log=1"]);
    let mut cfg = config_for(&[&db]);
    cfg.backend.prefer_socket = true;
    let proxy = Proxy::start(cfg);
    write_and_read(&proxy, "b1").await;
    let socket = format!("unix:{}", db.dir.path().join("server.sock").display());
    assert_eq!(transports(&proxy).await, std::slice::from_ref(&socket));
    let url = proxy.url(None);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Conn::new(Opts::from_url(&url).unwrap()).await.unwrap());
    }
    db.signal("STOP");
    // Each session holds its backend connection in a transaction, so each opens one.
    let sessions: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.query_drop("BEGIN; SELECT 1").await.unwrap();
                c
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.signal("CONT");
    let mut held = Vec::new();
    for s in sessions {
        held.push(s.await.unwrap());
    }
    assert_eq!(transports(&proxy).await, [socket]);
    for mut c in held {
        c.query_drop("COMMIT").await.unwrap();
    }
}
