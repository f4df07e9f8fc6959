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
