//! Checks that replicas ended identical: each replica's applied position (its
//! `myquorum.wal`), waiting until all agree, and CHECKSUM TABLE plus row counts.

use super::MariaDb;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::time::{Duration, Instant};

/// A server counter from `SHOW GLOBAL STATUS` on `db` (`Com_select`, `Com_set_option`, …).
pub async fn global_status(db: &MariaDb, name: &str) -> u64 {
    let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .unwrap();
    let row: Option<(String, u64)> = c
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .unwrap();
    row.unwrap().1
}

/// The last record applied on `db` (None while it is unreachable).
pub async fn applied_ts(db: &MariaDb) -> Option<u64> {
    let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .ok()?;
    // Followers hold records (applied = 0) before they apply them.
    c.query_first("SELECT COALESCE(MAX(ts), 0) FROM myquorum.wal WHERE applied = 1")
        .await
        .ok()
        .flatten()
}

/// Waits until every replica applied the same last record.
pub async fn wait_converged(dbs: &[&MariaDb]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for db in dbs {
            seen.push(applied_ts(db).await);
        }
        if seen[0].is_some() && seen.iter().all(|s| *s == seen[0]) {
            return;
        }
        if Instant::now() >= deadline {
            // A replica that is gone says why only in its own error log.
            let logs: Vec<String> = dbs
                .iter()
                .zip(&seen)
                .filter(|(_, s)| s.is_none())
                .map(|(db, _)| format!("--- {} server.log ---\n{}", db.addr(), db.log_tail(40)))
                .collect();
            panic!("replicas did not converge: {seen:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CHECKSUM TABLE and row count of each table on `db`.
pub async fn checksums(db: &MariaDb, tables: &[&str]) -> Vec<(String, i64)> {
    let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let row: Option<(String, Option<i64>)> =
            c.query_first(format!("CHECKSUM TABLE {t}")).await.unwrap();
        let (name, sum) = row.unwrap();
        out.push((name, sum.unwrap_or(-1)));
        let n: Option<i64> = c
            .query_first(format!("SELECT COUNT(*) FROM {t}"))
            .await
            .unwrap();
        out.push((format!("rows of {t}"), n.unwrap()));
    }
    out
}

/// Waits for convergence, then asserts every replica has the first one's checksums.
pub async fn assert_same_tables(dbs: &[&MariaDb], tables: &[&str]) {
    wait_converged(dbs).await;
    let first = checksums(dbs[0], tables).await;
    for db in &dbs[1..] {
        assert_eq!(
            checksums(db, tables).await,
            first,
            "replica {} differs from {}",
            db.addr(),
            dbs[0].addr()
        );
    }
}
