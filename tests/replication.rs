//! Quorum replication on real mariadbd: three replicas receive every write through the
//! proxy's log and end identical (CHECKSUM TABLE) after concurrent writes, transactions,
//! prepared statements and non-deterministic functions, through kill -9 of a follower, of
//! the proxy, and of the primary; a bank workload keeps its sum on every replica.

mod common;

use common::converge::{assert_same_tables, checksums, global_status, wait_converged};
use common::{config_for, MariaDb, Proxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNTS: i64 = 10;
const START_BALANCE: i64 = 1000;

async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).unwrap()).await.unwrap()
}

async fn setup_schema(url: &str) {
    let mut c = connect(url).await;
    c.query_drop("CREATE DATABASE rep").await.unwrap();
    c.query_drop(
        "CREATE TABLE rep.t (id INT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, v VARCHAR(64), \
         u CHAR(36), r DOUBLE, created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6), \
         changed TIMESTAMP(6) NULL ON UPDATE CURRENT_TIMESTAMP(6), KEY (k))",
    )
    .await
    .unwrap();
    c.query_drop("CREATE TABLE rep.acct (id INT PRIMARY KEY, bal INT NOT NULL)")
        .await
        .unwrap();
    let values: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, {START_BALANCE})"))
        .collect();
    c.query_drop(format!("INSERT INTO rep.acct VALUES {}", values.join(",")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE rep.acked (id BIGINT PRIMARY KEY, note VARCHAR(16))")
        .await
        .unwrap();
}

/// One client's mixed workload; returns the number of statements that failed.
async fn workload(url: String, worker: u64, rounds: u64, errors: Arc<AtomicU64>) {
    let mut c = connect(&url).await;
    for i in 0..rounds {
        let k = (worker * 1000 + i) as i64;
        let r: Result<(), mysql_async::Error> = async {
            // Autocommit write with NOW(), UUID(), RAND() and an auto-increment id.
            c.query_drop(format!(
                "INSERT INTO rep.t (k, v, u, r) VALUES ({k}, CONCAT('w', NOW(6)), UUID(), RAND())"
            ))
            .await?;
            // A prepared write (binary parameters).
            c.exec_drop(
                "UPDATE rep.t SET v = ? WHERE k = ?",
                (format!("p{worker}-{i}"), k),
            )
            .await?;
            // A transaction with LAST_INSERT_ID() and an ON UPDATE column.
            c.query_drop("BEGIN").await?;
            c.query_drop(format!(
                "INSERT INTO rep.t (k, v) VALUES ({}, 'tx')",
                k + 500
            ))
            .await?;
            c.query_drop(format!(
                "UPDATE rep.t SET v = CONCAT(v, LAST_INSERT_ID()) WHERE k = {}",
                k + 500
            ))
            .await?;
            c.query_drop("COMMIT").await?;
            // A rolled-back transaction leaves nothing anywhere.
            c.query_drop("BEGIN").await?;
            c.query_drop("INSERT INTO rep.t (k, v) VALUES (-1, 'rolled back')")
                .await?;
            c.query_drop("ROLLBACK").await?;
            // A bank transfer (locks in id order: no deadlocks).
            let a = (k % ACCOUNTS) + 1;
            let b = ((k * 7 + 3) % ACCOUNTS) + 1;
            if a != b {
                let (lo, hi) = (a.min(b), a.max(b));
                let amount = if lo == a { 5 } else { -5 };
                c.query_drop("START TRANSACTION").await?;
                c.query_drop(format!(
                    "UPDATE rep.acct SET bal = bal - {amount} WHERE id = {lo}"
                ))
                .await?;
                c.query_drop(format!(
                    "UPDATE rep.acct SET bal = bal + {amount} WHERE id = {hi}"
                ))
                .await?;
                c.query_drop("COMMIT").await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            eprintln!("worker {worker}: {e}");
            errors.fetch_add(1, Ordering::Relaxed);
            let _ = c.query_drop("ROLLBACK").await;
        }
    }
}

async fn assert_identical(dbs: &[&MariaDb]) {
    assert_same_tables(dbs, &["rep.t", "rep.acct", "rep.acked"]).await;
    for db in dbs {
        let mut c = connect(&db.url(None)).await;
        let sum: Option<i64> = c
            .query_first("SELECT SUM(bal) FROM rep.acct")
            .await
            .unwrap();
        assert_eq!(
            sum,
            Some(ACCOUNTS * START_BALANCE),
            "bank invariant on {}",
            db.addr()
        );
        let rolled: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM rep.t WHERE k = -1")
            .await
            .unwrap();
        assert_eq!(
            rolled,
            Some(0),
            "a rolled-back write appeared on {}",
            db.addr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_stay_identical_through_a_follower_kill() {
    common::init_tracing();
    let (a, b, mut c3) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c3]));
    let url = proxy.url(None);
    setup_schema(&url).await;
    // DDL went through the log: the table exists on every replica.
    for db in [&a, &b, &c3] {
        wait_converged(&[&a, db]).await;
        let mut c = connect(&db.url(None)).await;
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM rep.acct")
            .await
            .unwrap();
        assert_eq!(n, Some(ACCOUNTS));
    }
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(workload(url.clone(), w, 40, errors.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    c3.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "clients saw errors while a follower died"
    );
    // The follower returns and catches up from the log.
    c3.restart();
    assert_identical(&[&a, &b, &c3]).await;
    // The proxy shows every replica applying, with Cabinet weights (once the health probes
    // saw the follower back: its data may have caught up a probe interval earlier).
    let mut admin = connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica_states(&mut admin).await[2] != "applying" {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            replica_states(&mut admin).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<(u32, u32, String, String)> = admin
        .query("SHOW PROXY REPLICATION")
        .await
        .unwrap()
        .into_iter()
        .map(|r: mysql_async::Row| {
            let v: Vec<Option<String>> = (0..r.len()).map(|i| r.get(i).unwrap()).collect();
            (
                v[0].clone().unwrap().parse().unwrap(),
                v[1].clone().unwrap().parse().unwrap(),
                v[3].clone().unwrap(),
                v[6].clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The primary's commits are synced by the WAL and a follower, not its own fsync.
    assert!(rows[0].2.starts_with("primary (no fsync"), "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.2 == "applying"), "{rows:?}");
    // 4 workers × 40 rounds × 2 committed inserts each.
    let mut c = connect(&c3.url(None)).await;
    let rows: Option<i64> = c.query_first("SELECT COUNT(*) FROM rep.t").await.unwrap();
    assert_eq!(rows, Some(320));
}

/// Acknowledged inserts, each a distinct id; stops when `stop` is set.
async fn acked_inserts(url: String, worker: i64, stop: Arc<AtomicBool>) -> BTreeSet<i64> {
    let mut acked = BTreeSet::new();
    let Ok(mut c) = Conn::new(Opts::from_url(&url).unwrap()).await else {
        return acked;
    };
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let id = worker * 1_000_000 + i;
        i += 1;
        match common::writes::insert_id(&mut c, "rep.acked", id, i).await {
            Ok(()) => {
                acked.insert(id);
            }
            Err(_) => break,
        }
    }
    acked
}

/// Three writers run until `fault` strikes; returns the writes they saw acknowledged.
async fn acked_until_fault(url: &str, fault: impl FnOnce()) -> BTreeSet<i64> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (1..=3)
        .map(|w| tokio::spawn(acked_inserts(url.to_string(), w, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    fault();
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 10,
        "too few writes before the fault: {}",
        acked.len()
    );
    eprintln!("{} acknowledged writes before the fault", acked.len());
    acked
}

async fn assert_acked_everywhere(dbs: &[&MariaDb], acked: &BTreeSet<i64>) {
    wait_converged(dbs).await;
    common::writes::assert_holds_acked(dbs, "rep.acked", acked).await;
    assert_identical(dbs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_kill9_loses_no_acknowledged_write() {
    common::init_tracing();
    let (a, b, c3) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let mut cfg = config_for(&[&a, &b, &c3]);
    let port = common::free_port();
    cfg.proxy.listen = format!("127.0.0.1:{port}");
    let conf = a.dir.path().join("proxy.toml");
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_myquorum"))
            .args(["serve", "--config"])
            .arg(&conf)
            .stderr(std::fs::File::create(a.dir.path().join("proxy.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let url = format!("mysql://root@127.0.0.1:{port}/?prefer_socket=false");
    let wait_ready = |url: String| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Conn::new(Opts::from_url(&url).unwrap()).await {
                if c.query_drop(
                    "INSERT INTO rep.acct VALUES (0, 0) ON DUPLICATE KEY UPDATE bal = 0",
                )
                .await
                .is_ok()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "proxy did not come back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut proxy = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::new(Opts::from_url(&url).unwrap()).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    setup_schema(&url).await;
    let acked = acked_until_fault(&url, || {
        proxy.kill().unwrap(); // SIGKILL
        proxy.wait().unwrap();
    })
    .await;
    let mut proxy = start();
    wait_ready(url.clone()).await;
    assert_acked_everywhere(&[&a, &b, &c3], &acked).await;
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_kill9_loses_no_acknowledged_write() {
    common::init_tracing();
    let (mut a, b, c3) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c3]));
    let url = proxy.url(None);
    setup_schema(&url).await;
    let mut acked = acked_until_fault(&url, || a.kill9()).await;
    a.restart();
    // Writes resume once the primary is back and repaired.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::new(Opts::from_url(&url).unwrap()).await {
            if c.query_drop("INSERT INTO rep.acked VALUES (-5, 'after')")
                .await
                .is_ok()
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the primary returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked.insert(-5);
    assert_acked_everywhere(&[&a, &b, &c3], &acked).await;
}

/// The proxy fixes `timestamp` for each replicated write; statements that are not such
/// writes (in the same transaction or after it) see the server's clock again, and each
/// write in a transaction gets its own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_the_servers_clock_between_replicated_writes() {
    common::init_tracing();
    let (a, b) = (MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b]));
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE clock").await.unwrap();
    c.query_drop("CREATE TABLE clock.t (id INT PRIMARY KEY, at DATETIME(6))")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO clock.t VALUES (1, NOW(6))")
        .await
        .unwrap();
    c.query_drop("DO SLEEP(0.2)").await.unwrap();
    let later: i64 = c
        .query_first(
            "SELECT TIMESTAMPDIFF(MICROSECOND, (SELECT at FROM clock.t WHERE id = 1), NOW(6))",
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        later >= 150_000,
        "NOW(6) inside the transaction stayed at the write's time: +{later} µs"
    );
    let stmt = c
        .prep("INSERT INTO clock.t VALUES (?, NOW(6))")
        .await
        .unwrap();
    c.exec_drop(&stmt, (2,)).await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let apart: i64 = c
        .query_first("SELECT TIMESTAMPDIFF(MICROSECOND, (SELECT at FROM clock.t WHERE id = 1), (SELECT at FROM clock.t WHERE id = 2))")
        .await
        .unwrap()
        .unwrap();
    assert!(
        apart >= 150_000,
        "the second write reused the first one's time: +{apart} µs"
    );
    c.query_drop("DO SLEEP(0.2)").await.unwrap();
    let after_commit: i64 = c
        .query_first(
            "SELECT TIMESTAMPDIFF(MICROSECOND, (SELECT at FROM clock.t WHERE id = 2), NOW(6))",
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        after_commit >= 150_000,
        "NOW(6) after COMMIT: +{after_commit} µs"
    );
    assert_same_tables(&[&a, &b], &["clock.t"]).await;
}

/// Rows every replica applied are trimmed from each replica's `myquorum.wal` (the log copy
/// would otherwise grow with every write), and the replicas still agree on their position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_log_rows_are_trimmed_on_every_replica() {
    common::init_tracing();
    let (a, b) = (MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b]));
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE trim").await.unwrap();
    c.query_drop("CREATE TABLE trim.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    for i in 0..200 {
        c.query_drop(format!("INSERT INTO trim.t VALUES ({i})"))
            .await
            .unwrap();
    }
    wait_converged(&[&a, &b]).await;
    wait_log_trimmed(&[&a, &b], 20, "").await;
    // Positions survive the trim: one more write converges.
    c.query_drop("INSERT INTO trim.t VALUES (1000)")
        .await
        .unwrap();
    assert_same_tables(&[&a, &b], &["trim.t"]).await;
    // A restarted proxy reads a WAL that still holds records whose rows were trimmed on the
    // replicas: recovery must not take them for missing and apply them twice.
    drop(c);
    let cfg = proxy.ctx.config.clone();
    drop(proxy);
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = c.query_drop("INSERT INTO trim.t VALUES (1001)").await {
        assert!(
            Instant::now() < deadline,
            "writes did not open after a restart over trimmed logs: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_converged(&[&a, &b]).await;
    for db in [&a, &b] {
        let sums = checksums(db, &["trim.t"]).await;
        assert_eq!(sums[1].1, 202, "{}: {sums:?}", db.addr());
    }
    assert_same_tables(&[&a, &b], &["trim.t"]).await;
}

/// Bulk loads larger than one statement can carry to a replica (`myquorum.wal` rows travel
/// hex-encoded in one statement, bounded by max_allowed_packet, here 1 MiB): a big
/// transaction, big autocommit rows (one under LOCK TABLES; another session's write goes on
/// under a LOCK TABLES … READ) and a 3 MB LOAD DATA LOCAL file
/// replicate, their records
/// spread over several rows; a restarted proxy whose WAL was lost rebuilds the log from those
/// rows and a follower that was down catches up from it. A transaction over
/// `replication.max_record_bytes` is refused at the write that crosses it with MySQL's
/// "transaction too big" error and rolled back, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loads_larger_than_a_statement_replicate() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in &dbs {
        let mut c = connect(&db.url(None)).await;
        c.query_drop("SET GLOBAL max_allowed_packet = 1048576")
            .await
            .unwrap();
    }
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.replication.max_record_bytes = 8 << 20;
    let shard_wal = std::path::Path::new(&cfg.replication.wal_dir).join("shard-0");
    let proxy = Proxy::start(cfg.clone());
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE big").await.unwrap();
    c.query_drop("CREATE TABLE big.t (id INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE big.other (id INT)")
        .await
        .unwrap();
    // 700 kB each: under the servers' packet limit, over what a statement carries of a record.
    let value = |i: usize| format!("{i:04}-").repeat(140_000);
    // One autocommit row larger than a statement's share (half of 1 MiB).
    c.query_drop(format!("INSERT INTO big.t (v) VALUES ('{}')", value(0)))
        .await
        .unwrap();
    // Under LOCK TABLES, which must cover every table the record's rows go to.
    c.query_drop("LOCK TABLES big.t WRITE").await.unwrap();
    c.query_drop(format!("INSERT INTO big.t (v) VALUES ('{}')", value(7)))
        .await
        .unwrap();
    // The session still holds its table locks on the primary (its connection was kept).
    match c.query_drop("SELECT COUNT(*) FROM big.other").await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1100, "{e:?}"),
        other => panic!("big.other is readable: the session lost its locks: {other:?}"),
    }
    c.query_drop("UNLOCK TABLES").await.unwrap();
    // READ locks (mysqldump's default) leave other sessions' writes alone: the log table
    // is not locked for them.
    c.query_drop("LOCK TABLES big.t READ").await.unwrap();
    let mut other = connect(&proxy.url(None)).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        other.query_drop("INSERT INTO big.other VALUES (1)"),
    )
    .await
    .expect("a write waited for another session's LOCK TABLES … READ")
    .unwrap();
    c.query_drop("UNLOCK TABLES").await.unwrap();
    // About 4 MB in one transaction.
    c.query_drop("BEGIN").await.unwrap();
    for i in 1..=6 {
        c.query_drop(format!("INSERT INTO big.t (v) VALUES ('{}')", value(i)))
            .await
            .unwrap();
    }
    c.query_drop("COMMIT").await.unwrap();
    // A 3 MB LOAD DATA LOCAL file.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let lines: String = (0..30_000)
        .map(|i| format!("{}\n", "y".repeat(90 + i % 20)))
        .collect();
    std::fs::write(&csv, lines).unwrap();
    let (ok, _, err) = common::mysql_cli(
        proxy.port,
        &["--local-infile=1"],
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE big.t (v);",
            csv.display()
        ),
    );
    assert!(ok, "{err}");
    // Over replication.max_record_bytes: refused at the write that crosses it (not kept in
    // the proxy's memory until COMMIT) and rolled back; the session goes on.
    c.query_drop("BEGIN").await.unwrap();
    let mut refused_at = None;
    for i in 0..13 {
        let insert = format!("INSERT INTO big.t (v) VALUES ('{}')", value(100 + i));
        match c.query_drop(insert).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1197, "HY000"), "{e:?}");
                assert!(e.message.contains("max_record_bytes"), "{}", e.message);
                refused_at = Some(i);
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    // 12 rows of 700 kB are the first to pass 8 MiB.
    assert_eq!(refused_at, Some(11));
    c.query_drop("COMMIT").await.unwrap();
    // A LOAD DATA LOCAL file over it: the primary read it all, and rolls it back.
    let huge = dir.path().join("huge.csv");
    std::fs::write(&huge, format!("{}\n", "w".repeat(900)).repeat(10_000)).unwrap();
    let (ok, _, err) = common::mysql_cli(
        proxy.port,
        &["--local-infile=1"],
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE big.t (v);",
            huge.display()
        ),
    );
    assert!(
        !ok && err.contains("1197") && err.contains("max_record_bytes"),
        "{err}"
    );
    c.query_drop("INSERT INTO big.t (v) VALUES ('small')")
        .await
        .unwrap();
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let first = checksums(&dbs[0], &["big.t"]).await;
    assert_eq!(first[1].1, 2 + 6 + 30_000 + 1, "{first:?}");
    for db in &dbs[1..] {
        assert_eq!(checksums(db, &["big.t"]).await, first, "{}", db.addr());
    }
    for db in &dbs {
        let mut r = connect(&db.url(None)).await;
        let parts: Option<u64> = r
            .query_first("SELECT COUNT(*) FROM myquorum.wal_part")
            .await
            .unwrap();
        assert!(parts.unwrap_or(0) >= 3, "{}: {parts:?}", db.addr());
        let incomplete: Option<u64> = r
            .query_first(
                "SELECT COUNT(*) FROM myquorum.wal w WHERE parts <> \
                 (SELECT COUNT(*) FROM myquorum.wal_part p WHERE p.shard = w.shard AND p.ts = w.ts)",
            )
            .await
            .unwrap();
        assert_eq!(incomplete, Some(0), "{}", db.addr());
    }

    // A follower is down while another bulk transaction commits; then the proxy restarts
    // without its WAL: the log is rebuilt from the replicas' rows, the big record whole.
    dbs[2].kill9();
    c.query_drop("BEGIN").await.unwrap();
    for i in 0..4 {
        c.query_drop(format!(
            "INSERT INTO big.t (v) VALUES ('{}')",
            value(200 + i)
        ))
        .await
        .unwrap();
    }
    c.query_drop("COMMIT").await.unwrap();
    drop(c);
    drop(proxy);
    std::fs::remove_dir_all(&shard_wal).unwrap();
    dbs[2].restart();
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = c.query_drop("INSERT INTO big.t (v) VALUES ('after')").await {
        assert!(
            Instant::now() < deadline,
            "writes did not open after a restart without the WAL: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let first = checksums(&dbs[0], &["big.t"]).await;
    assert_eq!(first[1].1, 2 + 6 + 30_000 + 1 + 4 + 1, "{first:?}");
    for db in &dbs[1..] {
        assert_eq!(checksums(db, &["big.t"]).await, first, "{}", db.addr());
    }
}

/// LOAD DATA LOCAL INFILE through the log: the client's file is relayed to the primary and
/// recorded, followers replay it with the same file, auto-increment ids and timestamps; a
/// rolled-back load leaves nothing anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_reaches_every_replica() {
    common::init_tracing();
    let (a, b, c3) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c3]));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let lines: String = (0..2000).map(|i| format!("{i},name-{i}\n")).collect();
    std::fs::write(&csv, lines).unwrap();
    let sql = format!(
        "CREATE DATABASE ld; \
         CREATE TABLE ld.t (id INT AUTO_INCREMENT PRIMARY KEY, k INT, name TEXT, \
           loaded TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)); \
         LOAD DATA LOCAL INFILE '{0}' INTO TABLE ld.t FIELDS TERMINATED BY ',' (k, name); \
         BEGIN; LOAD DATA LOCAL INFILE '{0}' INTO TABLE ld.t FIELDS TERMINATED BY ',' (k, name); \
         ROLLBACK; \
         BEGIN; LOAD DATA LOCAL INFILE '{0}' INTO TABLE ld.t FIELDS TERMINATED BY ',' (k, name); \
         UPDATE ld.t SET name = CONCAT(name, '!') WHERE k < 10; COMMIT; \
         SELECT COUNT(*) FROM ld.t;",
        csv.display()
    );
    let (ok, out, err) = common::mysql_cli(proxy.port, &["--local-infile=1"], &sql);
    assert!(ok, "{err}");
    assert!(out.contains("COUNT(*)\n4000"), "{out}");
    wait_converged(&[&a, &b, &c3]).await;
    let first = checksums(&a, &["ld.t"]).await;
    assert_eq!(first[1].1, 4000);
    for db in [&b, &c3] {
        assert_eq!(checksums(db, &["ld.t"]).await, first, "{}", db.addr());
    }
}

/// Followers that do not sync their commits (innodb_flush_log_at_trx_commit = 2, as many
/// Galera and semi-sync deployments run) are detected; their acknowledgements count only
/// once the proxy's WAL has synced the record, and writes still reach every replica. With
/// `primary_syncs_commits` the proxy leaves each server's own setting (by default it makes
/// followers sync, `flush_role`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_that_do_not_sync_commits_count_after_the_wal_sync() {
    common::init_tracing();
    let (a, b, c3) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    for db in [&b, &c3] {
        let mut c = connect(&db.url(None)).await;
        c.query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
            .await
            .unwrap();
    }
    let mut cfg = config_for(&[&a, &b, &c3]);
    cfg.replication.primary_syncs_commits = true;
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE nosync").await.unwrap();
    c.query_drop("CREATE TABLE nosync.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for i in 0..100 {
        c.query_drop(format!("INSERT INTO nosync.t VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    let rows: Vec<(String, String, String)> = c
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            (
                row.get::<String, _>("replica").unwrap(),
                row.get::<String, _>("state").unwrap(),
                row.get::<String, _>("commits").unwrap(),
            )
        })
        .await
        .unwrap();
    for (replica, state, _) in &rows {
        let expect_nosync = replica != "0";
        assert_eq!(
            state.contains("not synced"),
            expect_nosync,
            "replica {replica}: {state}"
        );
    }
    assert_same_tables(&[&a, &b, &c3], &["nosync.t"]).await;
}

async fn com_begin(db: &MariaDb) -> u64 {
    global_status(db, "Com_begin").await
}

/// A plain BEGIN is answered by the proxy and reaches the primary in front of the
/// transaction's first statement (one round trip fewer); a transaction that runs nothing
/// never reaches it; the transaction is real on the server all the same (its status, its
/// rollback), and BEGIN with options that change its meaning goes to the server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_travels_with_the_first_statement() {
    common::init_tracing();
    let (a, b) = (MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b]));
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE deferred").await.unwrap();
    c.query_drop("CREATE TABLE deferred.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let before = com_begin(&a).await;
    for _ in 0..3 {
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("COMMIT").await.unwrap();
    }
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // Prepared, as sysbench sends them.
    let begin = c.prep("BEGIN").await.unwrap();
    let commit = c.prep("COMMIT").await.unwrap();
    c.exec_drop(&begin, ()).await.unwrap();
    c.exec_drop(&commit, ()).await.unwrap();
    assert_eq!(
        com_begin(&a).await,
        before,
        "empty transactions reached the primary"
    );

    c.query_drop("BEGIN").await.unwrap();
    let inside: i64 = c
        .query_first("SELECT @@in_transaction")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inside, 1, "the first statement ran outside the transaction");
    c.query_drop("INSERT INTO deferred.t VALUES (1)")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.exec_drop(&begin, ()).await.unwrap();
    c.query_drop("INSERT INTO deferred.t VALUES (2)")
        .await
        .unwrap();
    c.exec_drop(&commit, ()).await.unwrap();
    assert_eq!(com_begin(&a).await, before + 2);

    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    assert_eq!(
        com_begin(&a).await,
        before + 3,
        "a snapshot must start at BEGIN"
    );
    c.query_drop("COMMIT").await.unwrap();

    let rows: Vec<i64> = c
        .query("SELECT id FROM deferred.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![2]);
    assert_same_tables(&[&a, &b], &["deferred.t"]).await;
}

/// A statement with a final `;` and a comment after it: with multi-statements on, the server
/// answers the tail as a second, empty statement. The proxy runs the statement alone, so
/// the affected-row count it records is the statement's and no follower is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_semicolon_and_comment_do_not_split_a_write() {
    common::init_tracing();
    let (a, b) = (MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b]));
    // mysql_async negotiates multi-statements.
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE tail").await.unwrap();
    c.query_drop("CREATE TABLE tail.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO tail.t VALUES (1, 0), (2, 0);")
        .await
        .unwrap();
    c.query_drop("UPDATE tail.t SET v = v + 1; -- both rows")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 2);
    wait_converged(&[&a, &b]).await;
    assert_none_quarantined(&mut c).await;
    assert_same_tables(&[&a, &b], &["tail.t"]).await;
}

/// Each replica's state column of SHOW PROXY REPLICATION.
async fn replica_states(c: &mut Conn) -> Vec<String> {
    c.query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
        row.get::<String, _>(3).unwrap_or_default()
    })
    .await
    .unwrap()
}

async fn assert_none_quarantined(c: &mut Conn) {
    let states = replica_states(c).await;
    assert!(
        states.iter().all(|s| !s.contains("quarantined")),
        "{states:?}"
    );
}

fn server_code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("not a server error: {other}"),
    }
}

async fn column_count(db: &MariaDb, table: &str) -> usize {
    let mut c = connect(&db.url(None)).await;
    let cols: Vec<mysql_async::Row> = c.query(format!("SHOW COLUMNS FROM {table}")).await.unwrap();
    cols.len()
}

/// A DDL must end on every replica as it did on the primary. One the primary refused (its
/// metadata-lock wait timed out behind an open transaction) is not run on the followers,
/// which would otherwise get a column the primary lacks; one that failed on the primary
/// and fails the same way everywhere changes nothing; one that succeeded on the primary
/// but fails on a follower (a table created there behind the proxy's back) quarantines that
/// follower and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_ends_on_every_replica_as_it_did_on_the_primary() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let proxy = Proxy::start(config_for(&all));
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE dd").await.unwrap();
    c.query_drop("CREATE TABLE dd.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO dd.t VALUES (1, 1)")
        .await
        .unwrap();
    wait_converged(&all).await;

    // An open transaction on the primary holds dd.t's metadata lock: the ALTER times out there.
    let mut blocker = connect(&dbs[0].url(None)).await;
    blocker.query_drop("BEGIN").await.unwrap();
    blocker.query_drop("SELECT * FROM dd.t").await.unwrap();
    c.query_drop("SET SESSION lock_wait_timeout = 1")
        .await
        .unwrap();
    let err = c
        .query_drop("ALTER TABLE dd.t ADD COLUMN extra INT")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1205, "{err}");
    blocker.query_drop("COMMIT").await.unwrap();
    // A write in the primary's shape (two columns) replicates everywhere.
    c.query_drop("INSERT INTO dd.t VALUES (2, 2)")
        .await
        .unwrap();
    wait_converged(&all).await;
    for db in all {
        assert_eq!(column_count(db, "dd.t").await, 2, "{}", db.addr());
    }
    assert_same_tables(&all, &["dd.t"]).await;

    // Fails on the primary and the same way everywhere.
    let err = c.query_drop("CREATE TABLE dd.t (x INT)").await.unwrap_err();
    assert_eq!(server_code(&err), 1050, "{err}");
    c.query_drop("INSERT INTO dd.t VALUES (3, 3)")
        .await
        .unwrap();
    wait_converged(&all).await;
    assert_none_quarantined(&mut c).await;

    // Succeeds on the primary, fails on follower 2 only.
    connect(&dbs[2].url(None))
        .await
        .query_drop("CREATE TABLE dd.clash (x INT)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE dd.clash (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let states = loop {
        let states = replica_states(&mut c).await;
        if states[2].contains("quarantined") || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        states[2].contains("succeeded on the primary failed here"),
        "{states:?}"
    );
    assert!(!states[1].contains("quarantined"), "{states:?}");
    // Writes go on with the primary and follower 1.
    c.query_drop("INSERT INTO dd.clash VALUES (1)")
        .await
        .unwrap();
    assert_same_tables(&[&dbs[0], &dbs[1]], &["dd.t", "dd.clash"]).await;
}

/// A DDL that arrives while another session's write transaction on the same table is open
/// waits for it on the primary (metadata lock); the log orders it after that transaction
/// too, so followers replay the transaction's `INSERT … VALUES (1, 1)` before the new
/// column exists (after it, the insert would not fit and the follower would be quarantined).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_is_logged_after_the_write_transactions_open_before_it() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let proxy = Proxy::start(config_for(&all));
    let url = proxy.url(None);
    let mut writer = connect(&url).await;
    writer.query_drop("CREATE DATABASE dord").await.unwrap();
    writer
        .query_drop("CREATE TABLE dord.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    writer.query_drop("BEGIN").await.unwrap();
    writer
        .query_drop("INSERT INTO dord.t VALUES (1, 1)")
        .await
        .unwrap();
    let (sending, sent) = tokio::sync::oneshot::channel();
    let ddl = tokio::spawn({
        let url = url.clone();
        async move {
            let mut c = connect(&url).await;
            let _ = sending.send(());
            c.query_drop("ALTER TABLE dord.t ADD COLUMN extra INT NOT NULL DEFAULT 7")
                .await
                .unwrap();
        }
    });
    sent.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ddl.is_finished(),
        "the DDL did not wait for the open transaction"
    );
    writer
        .query_drop("INSERT INTO dord.t VALUES (2, 2)")
        .await
        .unwrap();
    writer.query_drop("COMMIT").await.unwrap();
    ddl.await.unwrap();
    writer
        .query_drop("INSERT INTO dord.t VALUES (3, 3, 3)")
        .await
        .unwrap();
    wait_converged(&all).await;
    assert_none_quarantined(&mut writer).await;
    assert_same_tables(&all, &["dord.t"]).await;
    for db in all {
        assert_eq!(column_count(db, "dord.t").await, 3, "{}", db.addr());
    }
}

/// A follower down for longer than `wal_retain_s` stops holding back the log: it is
/// quarantined with what to do about it, writes go on with the other two, every replica's
/// `myquorum.wal` is trimmed past its position again, and when it comes back it stays out
/// rather than catch up from a log that no longer has its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_longer_than_the_retention_no_longer_holds_the_log() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.replication.wal_retain_s = 1;
    cfg.replication.auto_rebuild = false;
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE ret").await.unwrap();
    c.query_drop("CREATE TABLE ret.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    dbs[2].kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    let states = loop {
        written += 1;
        c.query_drop(format!("INSERT INTO ret.t VALUES ({written})"))
            .await
            .unwrap();
        let states = replica_states(&mut c).await;
        if states[2].contains("quarantined") || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        states[2].contains("wal_retain_s = 1") && states[2].contains("PROXY REBUILD REPLICA 2"),
        "{states:?}"
    );
    assert!(!states[1].contains("quarantined"), "{states:?}");
    // The log rows the dead follower held back are trimmed on the live replicas.
    wait_log_trimmed(&[&dbs[0], &dbs[1]], 5, &format!("({written} writes)")).await;
    // Back, it stays out and applies nothing more.
    dbs[2].restart();
    c.query_drop("INSERT INTO ret.t VALUES (-1)").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let states = replica_states(&mut c).await;
    assert!(states[2].contains("quarantined"), "{states:?}");
    // (The restarted follower may not even have the table: it was killed right after the
    // CREATE, which followers replay only once the primary's result is in.)
    let has_last = |db: &MariaDb| {
        let url = db.url(None);
        async move {
            connect(&url)
                .await
                .query_first::<i64, _>("SELECT COUNT(*) FROM ret.t WHERE id = -1")
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        }
    };
    assert_eq!(has_last(&dbs[1]).await, 1);
    assert_eq!(has_last(&dbs[2]).await, 0);
    // Rebuilt online from the primary (asked for: a follower would donate by default), it
    // holds everything again and follows the log.
    let answer: String = c
        .query_first("PROXY REBUILD REPLICA 2 FROM 0")
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.contains("replica 2 rebuilt from replica 0 (the primary)"),
        "{answer}"
    );
    c.query_drop("INSERT INTO ret.t VALUES (-2)").await.unwrap();
    assert_replicas_identical(&dbs, &mut c, &["ret.t"]).await;
    assert_eq!(has_last(&dbs[2]).await, 1);
}

/// With `auto_rebuild` (the default), a follower that comes back after the log moved past
/// it is rebuilt by the proxy itself and follows the log again, while writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_after_the_retention_is_rebuilt_by_itself() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.replication.wal_retain_s = 1;
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE auto",
            "CREATE TABLE auto.t (id INT PRIMARY KEY, v VARCHAR(20))",
        ],
    )
    .await;
    // Let the follower apply the table before it goes (it then has something to lose).
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    dbs[2].kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    while !replica_states(&mut c).await[2].contains("quarantined") {
        assert!(Instant::now() < deadline, "replica 2 was not quarantined");
        written += 1;
        c.query_drop(format!(
            "INSERT INTO auto.t VALUES ({written}, 'while down')"
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dbs[2].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        written += 1;
        c.query_drop(format!("INSERT INTO auto.t VALUES ({written}, 'after')"))
            .await
            .unwrap();
        let states = replica_states(&mut c).await;
        if !states[2].contains("quarantined") && states[2].contains("applying") {
            break;
        }
        assert!(Instant::now() < deadline, "not rebuilt: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_replicas_identical(&dbs, &mut c, &["auto.t"]).await;
}

/// Once WAL segments a follower still needed are deleted (it was away longer than the
/// retention), a restarted proxy, which has forgotten the quarantine, must not catch it up
/// across the hole: its applier quarantines it on connecting, and `auto_rebuild` rebuilds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_the_trimmed_log_no_longer_covers_is_rebuilt_not_caught_up() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.replication.wal_retain_s = 1;
    cfg.replication.wal_segment_bytes = 4096;
    cfg.replication.auto_rebuild = false;
    let shard_wal = std::path::Path::new(&cfg.replication.wal_dir).join("shard-0");
    let proxy = Proxy::start(cfg.clone());
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE trim",
            "CREATE TABLE trim.t (id INT PRIMARY KEY, pad CHAR(200))",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    dbs[2].kill9();
    // Writes until the follower is quarantined and segments it needed are deleted (the
    // truncation pass runs every 10 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    while myquorum::wal::trimmed_floor(&shard_wal) == 0 {
        assert!(Instant::now() < deadline, "no WAL segment was deleted");
        for _ in 0..20 {
            written += 1;
            c.query_drop(format!("INSERT INTO trim.t VALUES ({written}, 'x')"))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(c);
    drop(proxy);
    dbs[2].restart();
    let proxy = Proxy::start(cfg.clone());
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = replica_states(&mut c).await;
        if states[2].contains("older than the log still kept") {
            break;
        }
        assert!(Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = |db: &MariaDb| {
        let url = db.url(None);
        async move {
            connect(&url)
                .await
                .query_first::<i64, _>("SELECT COUNT(*) FROM trim.t")
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert!(rows(&dbs[2]).await < written, "applied across the hole");
    drop(c);
    drop(proxy);
    // With auto_rebuild it comes back by itself.
    cfg.replication.auto_rebuild = true;
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replica_states(&mut c).await[2].contains("applying") {
        assert!(Instant::now() < deadline, "not rebuilt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.query_drop("INSERT INTO trim.t VALUES (-1, 'after')")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["trim.t"]).await;
    assert_eq!(rows(&dbs[2]).await, written + 1);
}

/// A follower quarantined for a divergence is rebuilt with `PROXY REBUILD REPLICA` while
/// writers keep writing: it gets the primary's schema objects and rows from one snapshot,
/// applies what the snapshot lacked, and ends identical, with no writer seeing an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_follower_is_rebuilt_online() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    setup_schema(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE other CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            "CREATE TABLE rep.kinds (id INT AUTO_INCREMENT PRIMARY KEY, f FLOAT, d DOUBLE, \
             n DECIMAL(30,10), b BLOB, bits BIT(12), j JSON, day DATE, t TIME(6), \
             s VARCHAR(20) CHARACTER SET latin1, doubled DOUBLE AS (f * 2) STORED, \
             len INT AS (LENGTH(s)) VIRTUAL)",
            "INSERT INTO rep.kinds (f, d, n, b, bits, j, day, t, s) VALUES \
             (0.1, 1e308, -12345678901234567890.0123456789, x'00ff00', b'101010101010', \
              '{\"k\": [1, null]}', '2024-02-29', '-838:59:59', 'caf\\xe9'), \
             (NULL, -0.0, 0, '', 0, NULL, NULL, NULL, NULL)",
            "CREATE TABLE other.parent (id INT PRIMARY KEY) ENGINE=InnoDB",
            "CREATE TABLE other.child (id INT PRIMARY KEY, p INT, \
             FOREIGN KEY (p) REFERENCES other.parent (id)) ENGINE=InnoDB",
            "INSERT INTO other.parent VALUES (1), (2)",
            "INSERT INTO other.child VALUES (10, 1), (20, 2)",
            "CREATE TABLE rep.audit (k BIGINT PRIMARY KEY, note VARCHAR(16))",
            "CREATE TRIGGER rep.t_audit AFTER INSERT ON rep.acked FOR EACH ROW \
             INSERT INTO rep.audit (k, note) VALUES (NEW.id, NEW.note)",
            "CREATE VIEW rep.v1 AS SELECT id, bal FROM rep.acct WHERE bal > 0",
            "CREATE VIEW rep.a_view_of_v1 AS SELECT COUNT(*) AS n FROM rep.v1",
            "CREATE PROCEDURE rep.pay(IN a INT, IN b INT) \
             UPDATE rep.acct SET bal = bal + IF(id = a, -1, 1) WHERE id IN (a, b)",
            "CREATE FUNCTION other.twice(x INT) RETURNS INT DETERMINISTIC NO SQL RETURN x * 2",
        ],
    )
    .await;
    // Replica 2 diverges behind the proxy's back; the next update of that row quarantines it.
    connect(&dbs[2].url(None))
        .await
        .query_drop("DELETE FROM rep.acct WHERE id = 3")
        .await
        .unwrap();
    c.query_drop("UPDATE rep.acct SET bal = bal - 1 WHERE id = 3")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica_states(&mut c).await[2].contains("quarantined") {
        assert!(Instant::now() < deadline, "replica 2 was not quarantined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health: Vec<String> = c
        .query_map("SHOW PROXY BACKENDS", |row: mysql_async::Row| {
            row.get::<String, _>(4).unwrap_or_default()
        })
        .await
        .unwrap();
    assert_eq!(health, ["up", "up", "up, quarantined"]);
    // Only a quarantined follower is rebuilt.
    for (cmd, says) in [
        ("PROXY REBUILD REPLICA 0", "is the primary"),
        ("PROXY REBUILD REPLICA 1", "is not quarantined"),
        ("PROXY REBUILD REPLICA 7", "no replica 7"),
        ("PROXY REBUILD", "use PROXY REBUILD REPLICA"),
        (
            "PROXY REBUILD REPLICA 2 FROM 2",
            "cannot be rebuilt from itself",
        ),
        ("PROXY REBUILD REPLICA 2 FROM 9", "no replica 9"),
    ] {
        let e = c.query_drop(cmd).await.unwrap_err();
        assert!(e.to_string().contains(says), "{cmd}: {e}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=2)
        .map(|w| tokio::spawn(acked_inserts(proxy.url(None), w, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer: String = c
        .query_first("PROXY REBUILD REPLICA 2 SHARD 0")
        .await
        .unwrap()
        .unwrap();
    eprintln!("{answer}");
    // The caught-up follower donates, not the primary.
    assert!(
        answer.contains("replica 2 rebuilt from replica 1 (a follower)")
            && answer.contains("1 triggers")
            && answer.contains("2 views")
            && answer.contains("2 routines"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 20, "writers stalled: {} writes", acked.len());
    // A write is acknowledged once a quorum holds it: the rebuilt replica may still be
    // catching up when the writers stop.
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    wait_converged(&all).await;
    common::writes::assert_holds_acked(&all, "rep.acked", &acked).await;
    assert_replicas_identical(
        &dbs,
        &mut c,
        &[
            "rep.t",
            "rep.acct",
            "rep.acked",
            "rep.audit",
            "rep.kinds",
            "other.parent",
            "other.child",
        ],
    )
    .await;
    // The schema objects came along and work there.
    let mut r = connect(&dbs[2].url(None)).await;
    let n: Option<i64> = r
        .query_first("SELECT n FROM rep.a_view_of_v1")
        .await
        .unwrap();
    assert_eq!(n, Some(ACCOUNTS)); // the row deleted behind the proxy's back is back
    let collation: Option<String> = r
        .query_first("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'other'")
        .await
        .unwrap();
    assert_eq!(collation.as_deref(), Some("utf8mb4_unicode_ci"));
    let twice: Option<i64> = r.query_first("SELECT other.twice(21)").await.unwrap();
    assert_eq!(twice, Some(42));
    c.query_drop("CALL rep.pay(1, 2)").await.unwrap();
    assert_replicas_identical(&dbs, &mut c, &["rep.acct"]).await;
}

/// Waits (up to 30 s) until each replica's `myquorum.wal` holds fewer than `below` rows.
async fn wait_log_trimmed(dbs: &[&MariaDb], below: i64, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for db in dbs {
        let mut r = connect(&db.url(None)).await;
        loop {
            let rows: i64 = r
                .query_first("SELECT COUNT(*) FROM myquorum.wal")
                .await
                .unwrap()
                .unwrap();
            if rows < below {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still holds {rows} log rows {context}",
                db.addr()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Three mariadbd behind a proxy, and a client connected to it.
async fn three_replicas() -> ([MariaDb; 3], Proxy, Conn) {
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let c = connect(&proxy.url(None)).await;
    (dbs, proxy, c)
}

/// Runs each statement through `c`, naming the one that failed.
async fn run_all(c: &mut Conn, statements: &[&str]) {
    for sql in statements {
        c.query_drop(*sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// `sql` waits for a lock another session holds: with a one-second lock wait it fails with
/// 1205.
async fn waits_for_a_lock(c: &mut Conn, sql: &str) {
    c.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    expect_error(c, sql, 1205).await;
}

/// `sql` fails through `c` with server error `code`; returns the error's message.
async fn expect_error(c: &mut Conn, sql: &str, code: u16) -> String {
    match c.query_drop(sql).await {
        Err(e) => {
            assert_eq!(server_code(&e), code, "{sql}: {e:?}");
            e.to_string()
        }
        Ok(()) => panic!("{sql}: succeeded, expected error {code}"),
    }
}

/// `query` lists nothing on any replica (each server read directly).
async fn assert_on_no_replica(dbs: &[MariaDb; 3], query: &str) {
    for db in dbs {
        let mut direct = connect(&db.url(None)).await;
        let found: Vec<String> = direct.query(query).await.unwrap();
        assert!(found.is_empty(), "{}: {found:?}", db.addr());
    }
}

/// A new proxy on `dbs` and a session that ran `write` through it (writes wait for the
/// start-up recovery).
async fn restarted_with_write(dbs: &[MariaDb; 3], write: &str) -> (Proxy, Conn) {
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = c.query_drop(write).await {
        assert!(Instant::now() < deadline, "no write after the restart: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (proxy, c)
}

/// Every replica caught up with the log, none quarantined, `tables` identical everywhere.
async fn assert_replicas_identical(dbs: &[MariaDb; 3], c: &mut Conn, tables: &[&str]) {
    let dbs = [&dbs[0], &dbs[1], &dbs[2]];
    wait_converged(&dbs).await;
    assert_none_quarantined(c).await;
    assert_same_tables(&dbs, tables).await;
}

/// A session that sets something the proxy cannot replay itself (a user variable, a
/// computed value) has its settings read from the primary for each write and replayed from
/// there: booleans and integers (foreign_key_checks, auto_increment_increment) as well as
/// strings (sql_mode, time_zone). No follower may be quarantined for it, and every replica
/// ends with the primary's rows, ids and clock values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_computed_set_replicate_with_the_primarys_settings() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    c.query_drop("CREATE DATABASE cs").await.unwrap();
    c.query_drop("CREATE TABLE cs.parent (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop(
        "CREATE TABLE cs.child (id INT AUTO_INCREMENT PRIMARY KEY, p INT NOT NULL, \
         at DATETIME(6) NOT NULL, q VARCHAR(40), FOREIGN KEY (p) REFERENCES cs.parent (id))",
    )
    .await
    .unwrap();
    // A literal setting first, then the session pins (a user variable assigned in the same
    // SET: the proxy cannot evaluate that SET apart): the literal setting must survive the
    // settings being read from the primary from now on.
    c.query_drop("SET div_precision_increment = 8")
        .await
        .unwrap();
    c.query_drop("SET @n = 7").await.unwrap();
    c.query_drop(
        "SET @m = 1, foreign_key_checks = 1 - 1, auto_increment_increment = 1 + 4, \
         time_zone = CONCAT('+0', '3:00'), sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
    )
    .await
    .unwrap();
    // No parent row: only accepted with foreign_key_checks off, on every replica.
    for p in 1..=3 {
        c.query_drop(format!(
            "INSERT INTO cs.child (p, at, q) VALUES ({p}, NOW(6), CONCAT(1 / 3)), \
             ({p}, '2001-02-03 04:05:06', CONCAT(2 / 3))"
        ))
        .await
        .unwrap();
    }
    let ids: Vec<i64> = c
        .query("SELECT id FROM cs.child ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, [1, 6, 11, 16, 21, 26], "increment 5 on the primary");
    let q: Option<String> = c
        .query_first("SELECT q FROM cs.child WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        q.as_deref(),
        Some("0.33333333"),
        "div_precision_increment 8 on the primary"
    );
    assert_replicas_identical(&dbs, &mut c, &["cs.child"]).await;
}

/// Session limits and flags a write's result depends on travel with it: a recursive CTE
/// past the default max_recursive_iterations, a recursive procedure under a raised
/// max_sp_recursion_depth, REGEXP_REPLACE under other default_regex_flags, DDL under
/// sql_if_exists and system_versioning_alter_history. And a follower's own
/// max_statement_time (a my.cnf value) does not cut a replay short. Before, the CTE alone
/// quarantined both followers (error 1931 there) and writes stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_and_flags_a_write_depends_on_travel_with_it() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in &dbs[1..] {
        connect(&db.url(None))
            .await
            .query_drop("SET GLOBAL max_statement_time = 0.02")
            .await
            .unwrap();
    }
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sl",
            "CREATE TABLE sl.n (n INT PRIMARY KEY)",
            "SET SESSION max_recursive_iterations = 300000",
            "INSERT INTO sl.n WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
             WHERE n < 200000) SELECT n FROM c",
            "CREATE TABLE sl.r (id INT PRIMARY KEY, v TEXT)",
            "INSERT INTO sl.r VALUES (1, CONCAT('a', CHAR(10), 'b')), (2, 'a-b')",
            "SET SESSION default_regex_flags = 'DOTALL'",
            "UPDATE sl.r SET v = REGEXP_REPLACE(v, 'a.b', 'X') WHERE id = 1",
            "SET SESSION default_regex_flags = ''",
            "CREATE TABLE sl.depth (d INT)",
            "CREATE PROCEDURE sl.down(k INT) BEGIN INSERT INTO sl.depth VALUES (k); \
             IF k > 0 THEN CALL sl.down(k - 1); END IF; END",
            "SET SESSION max_sp_recursion_depth = 5",
            "CALL sl.down(4)",
            "CREATE TABLE sl.v (a INT) WITH SYSTEM VERSIONING",
            "SET SESSION system_versioning_alter_history = KEEP",
            "ALTER TABLE sl.v ADD COLUMN b INT",
            "SET SESSION sql_if_exists = 1",
            "ALTER TABLE sl.v ADD COLUMN IF NOT EXISTS c INT",
            "DROP TABLE sl.never_created",
        ],
    )
    .await;
    let v: Option<String> = c
        .query_first("SELECT v FROM sl.r WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("X"), "DOTALL on the primary");
    let depth: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM sl.depth")
        .await
        .unwrap();
    assert_eq!(depth, Some(5));
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    // The comparison's own CHECKSUM TABLE must not be cut short.
    for db in &dbs[1..] {
        connect(&db.url(None))
            .await
            .query_drop("SET GLOBAL max_statement_time = 0")
            .await
            .unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["sl.n", "sl.r", "sl.depth", "sl.v"]).await;
}

/// A statement-format binlog replayed through the proxy, as `mysqlbinlog binlog | mysql`
/// sends it for point-in-time recovery: its `SET TIMESTAMP` before each statement decides
/// NOW() and the clock columns on every replica, as on the server it came from, and stays
/// the session's clock after a write, and its `SET @@RAND_SEED1/2` decide the next RAND().
/// Before, the proxy's own clock and seeds replaced them (the replayed rows got the replay's
/// time and other random values), and the replay stopped at the first `/*!*/` with 1065
/// (see bad_input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_binlog_keeps_its_clock() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    let binlog = "/*!40019 SET @@session.max_delayed_threads=0*/;
SET time_zone = '+00:00';
DELIMITER /*!*/;
SET TIMESTAMP=1000000000/*!*/;
SET @@session.pseudo_thread_id=5/*!*/;
/*!\\C utf8mb4 *//*!*/;
SET @@session.character_set_client=utf8mb4,@@session.collation_connection=45,@@session.collation_server=45/*!*/;
CREATE DATABASE bl
/*!*/;
use `bl`/*!*/;
SET TIMESTAMP=1000000001/*!*/;
CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), made DATETIME)
/*!*/;
SET TIMESTAMP=1000000002.250000/*!*/;
BEGIN
/*!*/;
SET INSERT_ID=7/*!*/;
INSERT INTO t (made) VALUES (NOW())
/*!*/;
COMMIT/*!*/;
SET TIMESTAMP=1000000003/*!*/;
INSERT INTO t (made) VALUES (NOW() + INTERVAL 1 DAY)
/*!*/;
CREATE TABLE r (x DOUBLE)
/*!*/;
SET @@RAND_SEED1=1, @@RAND_SEED2=2/*!*/;
INSERT INTO r VALUES (RAND())
/*!*/;
DELIMITER ;
SELECT NOW();
";
    let (ok, out, err) = common::mysql_cli(proxy.port, &[], binlog);
    assert!(ok, "replay failed: {err}");
    // Another session's writes: read once every replica has them.
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    assert!(
        out.contains("2001-09-09 01:46:43"),
        "the session's clock after a write: {out}"
    );
    let rows: Vec<(i64, String, String)> = c
        .query("SELECT id, CAST(at AS CHAR), CAST(made AS CHAR) FROM bl.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                7,
                "2001-09-09 01:46:42.250000".to_string(),
                "2001-09-09 01:46:42".to_string()
            ),
            (
                8,
                "2001-09-09 01:46:43.000000".to_string(),
                "2001-09-10 01:46:43".to_string()
            ),
        ]
    );
    // The seeds the binlog set decide RAND(), as they do on a server.
    let mut direct = connect(&dbs[1].url(None)).await;
    direct
        .query_drop("SET @@RAND_SEED1=1, @@RAND_SEED2=2")
        .await
        .unwrap();
    let want: Option<f64> = direct.query_first("SELECT RAND()").await.unwrap();
    let got: Option<f64> = c.query_first("SELECT x FROM bl.r").await.unwrap();
    assert_eq!(got, want);
    // The proxy's clock again once the client lets go of its own.
    c.query_drop("SET timestamp = DEFAULT").await.unwrap();
    c.query_drop("INSERT INTO bl.t (made) VALUES (NOW())")
        .await
        .unwrap();
    let recent: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM bl.t WHERE made > '2020-01-01' AND at > '2020-01-01'")
        .await
        .unwrap();
    assert_eq!(recent, Some(1));
    assert_replicas_identical(&dbs, &mut c, &["bl.t", "bl.r"]).await;
}

/// A ROW (and MIXED) binlog replayed through the proxy, as `mysqlbinlog binlog | mysql`
/// sends it for point-in-time recovery or to bring another server's changes in: its
/// `BINLOG '…'` row events are logged like any write, behind the session's format
/// description (every server needs it in the same statement), and every replica ends with
/// the source server's rows, its UUID(), RAND() and NOW() values and a LIMIT without ORDER
/// BY included. Before, row events were refused (1235) and such a replay stopped at the
/// first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_binlog_replays_to_every_replica() {
    common::init_tracing();
    let mut source = MariaDb::start();
    let binlog = source.dir.path().join("data").join("source-bin");
    source.restart_with(&[
        &format!("--log-bin={}", binlog.display()),
        "--binlog-format=ROW",
        "--server-id=9",
    ]);
    let mut s = connect(&source.url(None)).await;
    run_all(
        &mut s,
        &[
            "CREATE DATABASE rb",
            "CREATE TABLE rb.t (id INT AUTO_INCREMENT PRIMARY KEY, u CHAR(36), r DOUBLE, \
             at DATETIME(6), price DECIMAL(10,2), doc JSON, b BLOB)",
            "CREATE TABLE rb.nokey (k INT, v VARCHAR(20))",
            "INSERT INTO rb.t (u, r, at, price, doc, b) VALUES \
             (UUID(), RAND(), NOW(6), 1.25, '{\"a\": 1}', x'00ff10')",
            "INSERT INTO rb.t (u, r, at, price) SELECT UUID(), RAND(), NOW(6), price * 2 FROM rb.t",
            "INSERT INTO rb.t (u, r, at, price) SELECT UUID(), RAND(), NOW(6), price * 3 FROM rb.t",
            "BEGIN",
            "UPDATE rb.t SET price = price + RAND() LIMIT 2",
            "DELETE FROM rb.t WHERE id = 2",
            "INSERT INTO rb.nokey VALUES (1, 'a'), (1, 'a'), (2, NULL)",
            "COMMIT",
            "UPDATE rb.nokey SET v = 'b' WHERE k = 1 LIMIT 1",
            // MIXED: unsafe statements as rows, the rest as text.
            "SET SESSION binlog_format = 'MIXED'",
            "INSERT INTO rb.t (u, r, at) VALUES (UUID(), 0.5, '2020-01-01')",
            "INSERT INTO rb.nokey VALUES (3, 'c')",
            "DELETE FROM rb.nokey WHERE k = 2",
        ],
    )
    .await;
    let out = std::process::Command::new("mariadb-binlog")
        .arg(binlog.with_extension("000001"))
        .output()
        .expect("mariadb-binlog must be installed (apt-get install mariadb-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = String::from_utf8(out.stdout).unwrap();
    assert!(replay.contains("BINLOG '"), "not a ROW binlog:\n{replay}");
    let (dbs, proxy, mut c) = three_replicas().await;
    let (ok, _, err) = common::mysql_cli(proxy.port, &[], &replay);
    assert!(ok, "replay failed: {err}");
    assert_replicas_identical(&dbs, &mut c, &["rb.t", "rb.nokey"]).await;
    let want = checksums(&source, &["rb.t", "rb.nokey"]).await;
    assert_eq!(want[1].1, 4, "{want:?}");
    assert_eq!(checksums(&dbs[0], &["rb.t", "rb.nokey"]).await, want);
}

/// SQL-level prepared statements: an EXECUTE (or EXECUTE IMMEDIATE) of a write runs that
/// statement with its arguments bound, through the log, since followers have no such
/// prepared statement; DROP PREPARE is session state, not DDL; user-variable arguments are
/// carried and a sequence's value is taken on the primary rather than left to each
/// replica (see sequences_replicate_and_a_new_primary_reuses_no_value). Before, the
/// EXECUTE ran on the primary only (rows missing on followers) and DROP PREPARE was
/// replayed as DDL, which quarantined every follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepared_writes_replicate_and_drop_prepare_is_not_ddl() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sp",
            "CREATE TABLE sp.t (id INT PRIMARY KEY, v VARCHAR(20), at DATETIME(6) DEFAULT NOW(6))",
            "PREPARE ins FROM 'INSERT INTO sp.t (id, v) VALUES (?, ?)'",
            "EXECUTE ins USING 1, 'a'",
            "EXECUTE ins USING 2, CONCAT('b', 'c')",
            "SET @sql = 'UPDATE sp.t SET v = CONCAT(v, ?) WHERE id = ?'",
            "PREPARE up FROM @sql",
            "EXECUTE up USING '!', 1",
            "EXECUTE IMMEDIATE 'INSERT INTO sp.t (id, v) VALUES (?, ?)' USING 3, 'd'",
            "PREPARE ddl FROM 'ALTER TABLE sp.t ADD COLUMN w INT NOT NULL DEFAULT 5'",
            "EXECUTE ddl",
            "DROP PREPARE ins",
            "DEALLOCATE PREPARE up",
            "CREATE SEQUENCE sp.s",
        ],
    )
    .await;
    assert_eq!(c.affected_rows(), 0);
    let v: Option<String> = c
        .query_first("EXECUTE IMMEDIATE 'SELECT v FROM sp.t WHERE id = ?' USING 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("a!"));
    c.query_drop("PREPARE del FROM 'DELETE FROM sp.t WHERE id = ?'")
        .await
        .unwrap();
    c.query_drop("SET @id = 2").await.unwrap();
    // The variable's value is carried with the record (see user_variables_read_by_writes…).
    c.query_drop("EXECUTE del USING @id").await.unwrap();
    assert_eq!(c.affected_rows(), 1);
    // A LIMIT count from a variable (MariaDB's ps_3innodb test): it is written as the
    // variable's value, since no expression is SQL there (1064 before). The PREPARE comes
    // in a multi-statement text: before, the session did not see it, and the EXECUTE ran
    // on the primary alone.
    c.query_drop(
        "SET @n = 1; PREPARE lim FROM 'UPDATE sp.t SET v = CONCAT(v, ''#'') ORDER BY id LIMIT ?'",
    )
    .await
    .unwrap();
    c.query_drop("EXECUTE lim USING @n").await.unwrap();
    assert_eq!(c.affected_rows(), 1);
    let marked: Option<String> = c
        .query_first("SELECT GROUP_CONCAT(v ORDER BY id) FROM sp.t")
        .await
        .unwrap();
    assert_eq!(marked.as_deref(), Some("a!#,d"));
    // One prepared inside a compound statement: the proxy never saw its text, so its
    // EXECUTE is refused (before, the INSERT ran on the primary alone).
    c.query_drop(
        "BEGIN NOT ATOMIC PREPARE hidden FROM 'INSERT INTO sp.t (id, v) VALUES (40, ''h'')'; END",
    )
    .await
    .unwrap();
    match c.query_drop("EXECUTE hidden").await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1243, "{e:?}"),
        other => panic!("EXECUTE of a statement prepared in a compound statement: {other:?}"),
    }
    let next: Option<i64> = c.query_first("SELECT NEXTVAL(sp.s)").await.unwrap();
    assert_eq!(next, Some(1));
    // Run in place of the EXECUTE, with the value taken on the primary (`sql::sequences`).
    c.query_drop(
        "EXECUTE IMMEDIATE 'INSERT INTO sp.t (id, v) VALUES (NEXTVAL(sp.s) + 10, ?)' USING 'seq'",
    )
    .await
    .unwrap();
    c.query_drop("EXECUTE del USING 2").await.unwrap();
    assert_eq!(c.affected_rows(), 0);
    // (A sequence's row is each server's: the primary's shows its cache.)
    assert_replicas_identical(&dbs, &mut c, &["sp.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, String, i32)> = d
            .query("SELECT id, v, w FROM sp.t ORDER BY id")
            .await
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "a!#".into(), 5),
                (3, "d".into(), 5),
                (12, "seq".into(), 5)
            ],
            "{}",
            db.addr()
        );
    }
}

/// An apply batch is all or nothing even when a statement's failure ends the transaction
/// on the server (a deadlock; here a lock wait timeout under innodb_rollback_on_timeout):
/// the statements pipelined behind it used to run and commit one by one, leaving half a
/// record applied and marked applied. On a primary being repaired (a fuzzing client's
/// LOCK TABLES made its log row lose a deadlock) the committed half failed every retry
/// with a duplicate key and the shard's writes stayed closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_batch_the_server_ends_leaves_nothing_behind() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    dbs[2].restart_with(&[
        "--innodb-rollback-on-timeout=1",
        "--innodb-lock-wait-timeout=1",
    ]);
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.replication.auto_rebuild = false;
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE rt",
            "CREATE TABLE rt.t (id INT PRIMARY KEY, v INT)",
            "INSERT INTO rt.t VALUES (1, 0)",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    // Someone holds row 1 on that follower, directly.
    let mut blocker = connect(&dbs[2].url(None)).await;
    blocker.query_drop("BEGIN").await.unwrap();
    blocker
        .query_drop("SELECT * FROM rt.t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    run_all(
        &mut c,
        &[
            "BEGIN",
            "UPDATE rt.t SET v = 1 WHERE id = 1",
            "INSERT INTO rt.t VALUES (2, 2)",
            "COMMIT",
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replica_states(&mut c).await[2].contains("quarantined") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            replica_states(&mut c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocker.query_drop("ROLLBACK").await.unwrap();
    let mut follower = connect(&dbs[2].url(None)).await;
    let rows: Vec<(i32, i32)> = follower
        .query("SELECT id, v FROM rt.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, [(1, 0)], "half of the record was applied");
}

/// UUID(), UUID_SHORT() and SYSDATE() in prepared writes (the binary protocol, as Go's,
/// Node's and mysql_async's drivers send parameters): each execution gets its own values,
/// the same on every replica. Before, such writes were refused with 1235. And a call MySQL
/// evaluates once per row — `UPDATE … SET g = UUID()` over several rows, `INSERT … SELECT
/// UUID()` — is refused with 1235 and undone, text or prepared, inside a transaction or
/// not, where it affects one row it runs: before, every row got the same UUID (measured:
/// `UPDATE u SET g = UUID()` gave three rows one value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_prepared_writes_get_values_and_per_row_calls_one_row() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE pu",
            "CREATE TABLE pu.t (id INT PRIMARY KEY, g CHAR(36), s BIGINT UNSIGNED, \
             at DATETIME(6), note VARCHAR(20))",
            "CREATE TABLE pu.copy (id INT PRIMARY KEY, g CHAR(36))",
        ],
    )
    .await;
    let insert = "INSERT INTO pu.t VALUES (?, UUID(), UUID_SHORT(), SYSDATE(6), ?)";
    for i in 0..4 {
        c.exec_drop(insert, (i, format!("n{i}"))).await.unwrap();
    }
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop(insert, (10, "tx")).await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let distinct: (i64, i64, i64) = c
        .query_first("SELECT COUNT(DISTINCT g), COUNT(DISTINCT s), COUNT(at) FROM pu.t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(distinct, (5, 5, 5));
    let before: Vec<(i32, String)> = c.query("SELECT id, g FROM pu.t ORDER BY id").await.unwrap();
    // Several rows: refused, nothing changed.
    let err = c
        .query_drop("UPDATE pu.t SET g = UUID()")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("5 rows matched"), "{err}");
    let err = c
        .exec_drop(
            "UPDATE pu.t SET note = ?, g = UUID() WHERE id < ?",
            ("x", 3),
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    let err = c
        .query_drop("INSERT INTO pu.copy SELECT id, UUID() FROM pu.t ORDER BY id")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    // In a transaction the refused statement alone is undone; the rest commits.
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop(
        "UPDATE pu.t SET g = UUID(), note = ? WHERE id = ?",
        ("one", 1),
    )
    .await
    .unwrap();
    let err = c
        .exec_drop("UPDATE pu.t SET g = UUID() WHERE id > ?", (1,))
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    c.query_drop("INSERT INTO pu.copy SELECT id, UUID() FROM pu.t WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let after: Vec<(i32, String)> = c.query("SELECT id, g FROM pu.t ORDER BY id").await.unwrap();
    assert_ne!(after[1], before[1], "id 1 got a new UUID");
    assert_eq!(after[0], before[0]);
    assert_eq!(
        after[2..],
        before[2..],
        "the refused updates changed nothing"
    );
    let notes: Vec<String> = c.query("SELECT note FROM pu.t ORDER BY id").await.unwrap();
    assert_eq!(notes, ["n0", "one", "n2", "n3", "tx"]);
    let copied: Vec<i32> = c.query("SELECT id FROM pu.copy").await.unwrap();
    assert_eq!(copied, [2]);
    assert_replicas_identical(&dbs, &mut c, &["pu.t", "pu.copy"]).await;
}

/// Writes that read user variables (`CALL p(@x)` as PyMySQL's and mysqlclient's `callproc`
/// send it, `INSERT … VALUES (@x)`, `EXECUTE s USING @x`) carry each variable's value, type
/// and collation in the record, as MySQL's statement binlog does. Before, they were refused
/// with 1235 (Django's `cursor.callproc` failed). Values of every type a user variable can
/// hold reach the followers exactly; a comparison decided by the variable's collation
/// (latin1_german2_ci: 'Strasse' = 'Straße') matches on every replica; a write that assigns a
/// variable, `CREATE TABLE … SELECT @x` and a trigger reading the session's variable are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_variables_read_by_writes_carry_their_values() {
    type UvRow = (
        i32,
        Option<u64>,
        Option<String>,
        Option<f64>,
        Option<String>,
        Option<Vec<u8>>,
        Option<String>,
        i32,
    );
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE uv",
            "USE uv",
            "CREATE TABLE t (id INT PRIMARY KEY, i BIGINT UNSIGNED, d DECIMAL(10,2), f DOUBLE, \
             s VARCHAR(20) CHARACTER SET latin1, b VARBINARY(10), u VARCHAR(10), n INT DEFAULT 0)",
            "SET @i = 18446744073709551615, @d = 5.55, @f = 0.1e0 + 0.2e0, \
             @s = _latin1'Strasse' COLLATE latin1_german2_ci, @b = X'00FF10', @u = 'héllo'",
            "INSERT INTO t (id, i, d, f, s, b, u) VALUES (1, @i, @d, @f, @s, @b, @u)",
            "INSERT INTO t (id, i, d, f, s, b, u) VALUES (2, @never, @d * 2, @f * 3, CONCAT(@s, 'x'), @b, @u)",
            // Decided by @s's collation (the literal's is weaker): true under latin1_german2_ci.
            "UPDATE t SET n = n + 1 WHERE @s = 'Straße'",
            "CREATE PROCEDURE addrow(IN k INT, IN v VARCHAR(10), OUT c INT) \
             BEGIN INSERT INTO t (id, u) VALUES (k, v); SELECT COUNT(*) INTO c FROM t; END",
            "SET @_addrow_0 = 3, @_addrow_1 = 'proc', @_addrow_2 = 0",
            "CALL addrow(@_addrow_0, @_addrow_1, @_addrow_2)",
            "PREPARE del FROM 'DELETE FROM t WHERE id = ?'",
            "SET @id = 2",
            "EXECUTE del USING @id",
            "BEGIN",
            "SET @k = 10",
            "INSERT INTO t (id, u) VALUES (@k, 'txn')",
            "SET @k = 11",
            "INSERT INTO t (id, u) VALUES (@k, 'txn')",
            "COMMIT",
        ],
    )
    .await;
    let out: Option<i64> = c.query_first("SELECT @_addrow_2").await.unwrap();
    assert_eq!(out, Some(3), "the procedure's OUT parameter");
    // Assigning in a write, and definitions that would read the session's variables on
    // each server (a DDL's record carries none; a trigger would read the applier's): before,
    // `CREATE TABLE … SELECT @x` gave the followers NULL.
    for sql in [
        "UPDATE t SET n = (@z := 5) WHERE id = 1",
        "CREATE TABLE c AS SELECT @i AS v",
        "CREATE TABLE c AS SELECT @@hostname AS h",
        "CREATE TRIGGER who BEFORE INSERT ON t FOR EACH ROW SET NEW.u = @audit_user",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    assert_replicas_identical(&dbs, &mut c, &["uv.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<UvRow> = d
            .query("SELECT id, i, CAST(d AS CHAR), f, s, b, u, n FROM uv.t ORDER BY id")
            .await
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    1,
                    Some(u64::MAX),
                    Some("5.55".into()),
                    Some(0.1 + 0.2),
                    Some("Strasse".into()),
                    Some(vec![0, 0xff, 0x10]),
                    Some("héllo".into()),
                    1
                ),
                (3, None, None, None, None, None, Some("proc".into()), 0),
                (10, None, None, None, None, None, Some("txn".into()), 0),
                (11, None, None, None, None, None, Some("txn".into()), 0),
            ],
            "{}",
            db.addr()
        );
    }
}

/// With autocommit off, a session keeps its backend connection from the start: Django's
/// `atomic` sets autocommit off and a SAVEPOINT before any other statement, and two such
/// sessions were handed the same pooled connection in turn, so the second one's ROLLBACK
/// TO SAVEPOINT failed with 1305 (its savepoint lived in a connection another session then
/// used). Reads stay on the primary until autocommit is back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_autocommit_off_keep_their_savepoints() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ac",
            "CREATE TABLE ac.t (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let mut a = connect(&proxy.url(Some("ac"))).await;
    let mut b = connect(&proxy.url(Some("ac"))).await;
    for s in [&mut a, &mut b] {
        run_all(s, &["SET AUTOCOMMIT = 0", "SAVEPOINT x1"]).await;
    }
    run_all(&mut a, &["INSERT INTO t VALUES (1)"]).await;
    run_all(
        &mut b,
        &[
            "ROLLBACK TO SAVEPOINT x1",
            "INSERT INTO t VALUES (2)",
            "COMMIT",
        ],
    )
    .await;
    run_all(&mut a, &["ROLLBACK TO SAVEPOINT x1", "COMMIT"]).await;
    let ids: Vec<i32> = a.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, [2]);
    assert_replicas_identical(&dbs, &mut c, &["ac.t"]).await;
}

/// Statement bytes that are not UTF-8 (latin1 literals from a latin1 client, `_binary`
/// literals) reach every replica byte for byte, in a single statement, one with a final
/// `;`, a multi-statement text and a DDL. Before, the logged text was decoded lossily
/// (each such byte became U+FFFD), so followers silently stored other bytes than the primary.
/// Words separated by the byte latin1 takes for a space (0xA0) are the statement the server
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_bytes_that_are_not_utf8_replicate_byte_for_byte() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    c.query_drop("CREATE DATABASE l1").await.unwrap();
    c.query_drop(
        "CREATE TABLE l1.t (id INT PRIMARY KEY, v VARCHAR(20) CHARACTER SET latin1, \
         b VARBINARY(8))",
    )
    .await
    .unwrap();
    c.query_drop("SET NAMES latin1").await.unwrap();
    let statements: [&[u8]; 7] = [
        b"INSERT INTO l1.t VALUES (1, 'caf\xe9', _binary'\xff\xfe')",
        // Rewritten by the proxy (UUID() to a value, CONNECTION_ID() to the session's id)
        // beside a latin1 literal: the literal's bytes are kept. Before, CONNECTION_ID()'s
        // rewrite stored 'cx' (the lexer's mask) and UUID()'s was refused.
        b"INSERT INTO l1.t VALUES (5, CONCAT('\xe9', LEFT(UUID(), 0)), NULL)",
        b"INSERT INTO l1.t VALUES (CONNECTION_ID() + 1000, 'c\xe9', NULL)",
        b"INSERT INTO l1.t VALUES (2, 'na\xefve', NULL);",
        b"INSERT INTO l1.t VALUES (3, '\xe0', NULL); UPDATE l1.t SET v = CONCAT(v, '\xe8') WHERE id = 1",
        // A latin1 server skips 0xA0 (no-break space) between words, as a space: these are
        // a write and a DDL to it. The proxy took them for unknown words and sent them to
        // the primary alone (the fuzz test found a DROP TRIGGER so).
        b"\xa0INSERT\xa0INTO l1.t VALUES (4, 'nb\xa0', NULL)",
        b"ALTER\xa0TABLE l1.t ADD COLUMN d VARCHAR(5) CHARACTER SET latin1 NOT NULL DEFAULT '\xe9'",
    ];
    for sql in statements {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(sql)));
    }
    assert_replicas_identical(&dbs, &mut c, &["l1.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(String, Option<String>, String)> = d
            .query("SELECT HEX(v), HEX(b), HEX(d) FROM l1.t ORDER BY id")
            .await
            .unwrap();
        let want = [
            ("636166E9E8", Some("FFFE"), "E9"),
            ("6E61EF7665", None, "E9"),
            ("E0", None, "E9"),
            ("6E62A0", None, "E9"),
            ("E9", None, "E9"),
            ("63E9", None, "E9"),
        ]
        .map(|(v, b, d)| (v.to_string(), b.map(String::from), d.to_string()));
        assert_eq!(rows, want, "{}", db.addr());
    }
}

/// A versioned comment (`/*!NNNNN … */`) runs where the server runs it: MariaDB skips five-digit
/// versions from MySQL 5.7 (50700) on, and six-digit ones above its own version, so a
/// statement behind such a comment is what follows it. Before, the proxy read every such
/// comment's content as SQL: `/*!99999 x */ INSERT …` ran on the primary alone (an unknown
/// word to the proxy), and `/*!50700 SELECT */ INSERT …` was a read sent to a follower. So
/// did a `--` comment ended by a control character rather than a space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_comments_run_as_the_server_runs_them() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE vc",
            "CREATE TABLE vc.t (id INT PRIMARY KEY)",
            "/*!99999 skipped */ INSERT INTO vc.t VALUES (1)",
            "/*!50700 SELECT */ INSERT INTO vc.t VALUES (2)",
            "/*!999999 SELECT 1, */ INSERT INTO vc.t VALUES (3)",
            "/*M!100000 INSERT INTO vc.t VALUES (4) */",
            "/*!40101 INSERT INTO vc.t VALUES (5) */",
            "/*M!99999 INSERT */ INTO vc.t VALUES (6)",
            // `--` and a control character start a comment too (`--x` is two minuses).
            "--\x01 a comment\nINSERT INTO vc.t VALUES (7)",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["vc.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let ids: Vec<i32> = d.query("SELECT id FROM vc.t ORDER BY id").await.unwrap();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "{}", db.addr());
    }
}

/// With NO_BACKSLASH_ESCAPES in the session's sql_mode a backslash in a string is a plain
/// character, and the proxy lexes so (the server's status flag tells it). Before, it read
/// `'C:\temp\', UUID()` as one unterminated string, so UUID() was not fixed to a value and
/// each replica stored its own; and `SELECT '\'; INSERT …; -- '` was a single read to it,
/// so the INSERT ran on the primary alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backslash_escapes_is_lexed_as_the_server_lexes_it() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE nbe",
            "CREATE TABLE nbe.t (id INT PRIMARY KEY, v VARCHAR(40), u VARCHAR(36))",
            "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
            "INSERT INTO nbe.t VALUES (1, 'C:\\temp\\', UUID())",
        ],
    )
    .await;
    let mut results = c
        .query_iter("SELECT '\\' AS s; INSERT INTO nbe.t VALUES (2, 'b', NULL); -- '")
        .await
        .unwrap();
    while !results.is_empty() {
        let _: Vec<mysql_async::Row> = results.collect().await.unwrap();
    }
    drop(results);
    // A prepared text is judged and logged as sent: one whose strings end elsewhere in this
    // mode is refused; a backslash that moves nothing is fine.
    match c
        .exec_drop("INSERT INTO nbe.t VALUES (?, 'D:\\', UUID())", (3,))
        .await
    {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1235, "{e:?}"),
        other => panic!("expected 1235, got {other:?}"),
    }
    c.exec_drop("INSERT INTO nbe.t VALUES (?, 'E:\\\\x', NULL)", (4,))
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["nbe.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, String)> = d
            .query("SELECT id, v FROM nbe.t ORDER BY id")
            .await
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "C:\\temp\\".to_string()),
                (2, "b".to_string()),
                (4, "E:\\\\x".to_string())
            ],
            "{}",
            db.addr()
        );
    }
}

/// NO_BACKSLASH_ESCAPES in the servers' global sql_mode: a session starts in it, before any
/// answer of its own says so (the backends' greeting does). Before, a session's first
/// statement was lexed with backslash escapes: `'C:\temp\', UUID()` was one unterminated
/// string, so UUID() was left to each replica, and `SELECT '\'; INSERT …; -- '` a single read
/// that ran the INSERT on the primary alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_no_backslash_escapes_is_followed_from_the_first_statement() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        d.query_drop("SET GLOBAL sql_mode = CONCAT(@@global.sql_mode, ',NO_BACKSLASH_ESCAPES')")
            .await
            .unwrap();
    }
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    // Another proxy in this process, on a server without the mode, which opens a backend
    // connection for each statement: each server's mode is its own (it was one process-wide
    // flag that the last backend greeting anywhere set, so a session here that found a
    // pooled connection started without the mode).
    let plain = MariaDb::start();
    let mut other_config = config_for(&[&plain]);
    other_config.backend.pool_max_idle = 0;
    let other = Proxy::start(other_config);
    let mut o = connect(&other.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE gnbe",
            "CREATE TABLE gnbe.t (id INT PRIMARY KEY, v VARCHAR(40), u VARCHAR(36))",
        ],
    )
    .await;
    // Each as the first statement of a new session (client libraries mostly send a SET
    // NAMES or read settings first, whose answer carries the flag).
    for sql in [
        "INSERT INTO gnbe.t VALUES (1, 'C:\\temp\\', UUID())",
        "SELECT '\\' AS s; INSERT INTO gnbe.t VALUES (2, 'b', NULL); -- '",
    ] {
        use myquorum::protocol::handshake::{client_handshake, proxy_capabilities};
        o.query_drop("SELECT 1").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .unwrap();
        let mut s = myquorum::protocol::PacketStream::new(tcp);
        client_handshake(&mut s, "root", "", None, proxy_capabilities(false), 45)
            .await
            .unwrap();
        s.write_packet(0, [&[0x03][..], sql.as_bytes()].concat().as_slice())
            .await
            .unwrap();
        // Answers up to the INSERT's OK: no error on the way.
        loop {
            let p = s.read_packet().await.unwrap();
            assert_ne!(
                p.payload[0],
                0xFF,
                "{sql}: {:?}",
                String::from_utf8_lossy(&p.payload)
            );
            if p.payload[0] == 0x00 && p.payload.len() >= 7 {
                let (_, rest) = p.payload.split_at(1);
                // affected rows 1 (one byte), insert id 0 (one byte), then status flags.
                if rest[0] == 1 {
                    break;
                }
            }
        }
    }
    assert_replicas_identical(&dbs, &mut c, &["gnbe.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, String)> = d
            .query("SELECT id, v FROM gnbe.t ORDER BY id")
            .await
            .unwrap();
        assert_eq!(
            rows,
            [(1, "C:\\temp\\".to_string()), (2, "b".to_string())],
            "{}",
            db.addr()
        );
    }
}

/// MariaDB's `SET STATEMENT … FOR <statement>` is the statement it runs: a write or DDL goes
/// through the log with its prefix (followers run it under the same settings). Before, it
/// was taken for a session SET and ran on the primary alone. An anonymous compound statement
/// (`BEGIN NOT ATOMIC … END`) is one statement logged like a CALL; before, it was split at its
/// inner `;` and failed with a syntax error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_set_statement_and_compound_statements_are_replicated() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ss",
            "CREATE TABLE ss.p (id INT PRIMARY KEY)",
            "CREATE TABLE ss.t (id INT PRIMARY KEY, v INT, FOREIGN KEY (v) REFERENCES ss.p (id))",
            // No parent row: accepted only with the statement's foreign_key_checks = 0.
            "SET STATEMENT foreign_key_checks = 0 FOR INSERT INTO ss.t VALUES (1, 7)",
            "SET STATEMENT max_statement_time = 60 FOR INSERT INTO ss.p VALUES (7)",
            "SET STATEMENT lock_wait_timeout = 60 FOR ALTER TABLE ss.t ADD COLUMN w INT DEFAULT 3",
            "BEGIN NOT ATOMIC DECLARE i INT DEFAULT 10; WHILE i < 13 DO \
             INSERT INTO ss.p VALUES (i); SET i = i + 1; END WHILE; END",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["ss.t", "ss.p"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, i32, i32)> = d.query("SELECT id, v, w FROM ss.t").await.unwrap();
        assert_eq!(rows, [(1, 7, 3)], "{}", db.addr());
        let parents: Vec<i32> = d.query("SELECT id FROM ss.p ORDER BY id").await.unwrap();
        assert_eq!(parents, [7, 10, 11, 12], "{}", db.addr());
    }
}

/// MariaDB runs IF, CASE, WHILE, REPEAT, LOOP and FOR as statements of their own, outside
/// any program: each is one statement logged like a CALL. Before, `IF … END IF` and `CASE …
/// END CASE` ran on the primary alone (the proxy did not know the word) and the loops were
/// split at their inner `;`. Inside a program's body, `IF (…) THEN`, `IF EXISTS (…) THEN`,
/// FOR loops and the IF() and REPEAT() functions no longer end the CREATE early: a
/// procedure with `IF (a > 1) THEN` was refused as several statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compound_statements_and_program_blocks_are_replicated() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE cs",
            "CREATE TABLE cs.t (id INT PRIMARY KEY, note VARCHAR(20))",
            "IF 1 THEN INSERT INTO cs.t VALUES (1, 'if'); END IF",
            "IF (SELECT COUNT(*) FROM cs.t) > 5 THEN DO 1; ELSEIF 1 THEN \
             INSERT INTO cs.t VALUES (2, 'elseif'); END IF",
            "CASE WHEN 1 THEN INSERT INTO cs.t VALUES (3, 'case'); END CASE",
            "WHILE (SELECT COUNT(*) FROM cs.t) < 5 DO \
             INSERT INTO cs.t SELECT MAX(id) + 1, 'while' FROM cs.t; END WHILE",
            "REPEAT INSERT INTO cs.t VALUES (10, 'repeat'); UNTIL 1 END REPEAT",
            "FOR i IN 11..12 DO INSERT INTO cs.t VALUES (i, 'for'); END FOR",
            "CREATE PROCEDURE cs.p(n INT) BEGIN \
               IF (n > 1) THEN INSERT INTO cs.t VALUES (n, REPEAT('p', 2)); END IF; \
               IF EXISTS (SELECT 1 FROM cs.t WHERE id = n) THEN \
                 UPDATE cs.t SET note = IF(n > 100, 'big', 'small') WHERE id = n; END IF; \
               DROP TEMPORARY TABLE IF EXISTS cs.scratch; \
               FOR i IN 1..2 DO UPDATE cs.t SET note = CONCAT(note, i) WHERE id = n; END FOR; \
             END",
            "CREATE FUNCTION cs.twice(a INT) RETURNS INT DETERMINISTIC BEGIN \
               IF (a IS NULL) THEN RETURN 0; END IF; RETURN a * 2; END",
            "CREATE TRIGGER cs.tr BEFORE INSERT ON cs.t FOR EACH ROW \
               IF (NEW.id > 500) THEN SET NEW.note = 'trigger'; END IF",
            "CALL cs.p(200)",
            "INSERT INTO cs.t VALUES (cs.twice(300), 'x')",
            // Called once: fixed to one value, the same on every replica.
            "IF 1 THEN INSERT INTO cs.t VALUES (450, LEFT(UUID(), 8)); END IF",
        ],
    )
    .await;
    // A loop would repeat the one value where the server gives a new one on each pass; a
    // LIMIT inside that no key can order (over a join) must be ordered already (one
    // table's is ordered by its key, see
    // `writes_in_stored_programs_pick_and_number_rows_alike_on_every_replica`).
    for (refused, why) in [
        (
            "FOR i IN 1..2 DO INSERT INTO cs.t VALUES (800 + i, LEFT(UUID(), 8)); END FOR",
            "loop",
        ),
        (
            "IF 1 THEN DELETE FROM cs.t WHERE id IN (SELECT id FROM \
             (SELECT a.id FROM cs.t a JOIN cs.t b USING (id) LIMIT 1) d); END IF",
            "LIMIT",
        ),
    ] {
        match c.query_drop(refused).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1235, "{e:?}");
                assert!(e.message.contains(why), "{}", e.message);
            }
            other => panic!("{refused}: expected 1235, got {other:?}"),
        }
    }
    assert_replicas_identical(&dbs, &mut c, &["cs.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, String)> = d
            .query("SELECT id, note FROM cs.t ORDER BY id")
            .await
            .unwrap();
        let expected = [
            (1, "if"),
            (2, "elseif"),
            (3, "case"),
            (4, "while"),
            (5, "while"),
            (10, "repeat"),
            (11, "for"),
            (12, "for"),
            (200, "big12"),
            (600, "trigger"),
        ];
        let uuid: Option<String> = d
            .query_first("SELECT note FROM cs.t WHERE id = 450")
            .await
            .unwrap();
        assert_eq!(uuid.map(|u| u.len()), Some(8), "{}", db.addr());
        let expected: Vec<(i32, String)> =
            expected.iter().map(|(i, n)| (*i, n.to_string())).collect();
        let rows: Vec<(i32, String)> = rows.into_iter().filter(|(id, _)| *id != 450).collect();
        assert_eq!(rows, expected, "{}", db.addr());
    }
}

/// A multi-statement text the SQL parser rejects is judged statement by statement from its
/// keywords. Before, only the first statement's words counted: `DO 1; INSERT … ON
/// DUPLICATE KEY UPDATE a = VALUE(a)` was a DO, and the whole text ran on the primary alone.
/// A statement whose first word starts no statement is refused by the proxy itself (1064):
/// the server refuses it too, unless it reads the text otherwise than the proxy, and then
/// it would have run on the primary alone. The connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_of_a_text_the_parser_rejects_is_judged() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE kw",
            "CREATE TABLE kw.t (a INT PRIMARY KEY, n INT DEFAULT 0)",
            "DO 1; INSERT INTO kw.t VALUES (1, 0) ON DUPLICATE KEY UPDATE n = VALUE(n) + 1",
            "SELECT 1; INSERT INTO kw.t VALUES (1, 5) ON DUPLICATE KEY UPDATE n = VALUE(n) + 1",
        ],
    )
    .await;
    for sql in ["FROB TABLE kw.t", "SELECT 1; FROB TABLE kw.t"] {
        match c.query_drop(sql).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1064, "42000"), "{sql}: {e:?}");
                assert!(e.message.contains("FROB"), "{}", e.message);
            }
            other => panic!("{sql}: expected 1064, got {other:?}"),
        }
    }
    let n: Option<i32> = c.query_first("SELECT n FROM kw.t").await.unwrap();
    assert_eq!(n, Some(6));
    assert_replicas_identical(&dbs, &mut c, &["kw.t"]).await;
}

/// A mysqldump restored through the proxy (how users load data) ends identical on every
/// replica, views, triggers and routines included. The dump turns foreign key checks off
/// with a SET that reads a user variable (`SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS,
/// FOREIGN_KEY_CHECKS=0`), so the session's settings are read from the primary for its DDL
/// as for its writes. Before, a table whose foreign key names a table the dump creates later
/// failed on every follower, and all of them were quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysqldump_restored_through_the_proxy_reaches_every_replica() {
    common::init_tracing();
    let source = MariaDb::start();
    let mut s = connect(&source.url(None)).await;
    for sql in [
        "CREATE DATABASE app",
        "CREATE TABLE app.users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), \
         created TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
        "INSERT INTO app.users (name) VALUES ('ann'), ('bob'), ('zoë')",
        // Dumped before `users`, which its foreign key names.
        "CREATE TABLE app.orders (id INT AUTO_INCREMENT PRIMARY KEY, uid INT, amt DECIMAL(10,2), \
         FOREIGN KEY (uid) REFERENCES app.users (id))",
        "INSERT INTO app.orders (uid, amt) VALUES (1, 9.5), (3, 1.25)",
        "CREATE VIEW app.big AS SELECT u.name, o.amt FROM app.users u JOIN app.orders o \
         ON o.uid = u.id WHERE o.amt > 5",
        "CREATE TRIGGER app.tr BEFORE INSERT ON app.orders FOR EACH ROW SET NEW.amt = NEW.amt * 2",
        "CREATE PROCEDURE app.total() SELECT SUM(amt) FROM app.orders",
        // Dumped as CREATE SEQUENCE and `DO SETVAL(`ids`, 10100, 0)`.
        "CREATE SEQUENCE app.ids START WITH 100 INCREMENT BY 10",
        "SELECT NEXTVAL(app.ids)",
    ] {
        s.query_drop(sql).await.unwrap();
    }
    let dump = std::process::Command::new("mysqldump")
        .args(["-h127.0.0.1", &format!("-P{}", source.port), "-uroot"])
        .args(["--databases", "app", "--routines", "--triggers"])
        .output()
        .expect("mysqldump must be installed (apt-get install mariadb-client)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let (ok, _, err) = common::mysql_cli(proxy.port, &[], &String::from_utf8_lossy(&dump.stdout));
    assert!(ok, "restore failed: {err}");
    let mut c = connect(&proxy.url(None)).await;
    assert_replicas_identical(&dbs, &mut c, &["app.users", "app.orders"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let objects: Option<(u32, u32, u32)> = d
            .query_first(
                "SELECT (SELECT COUNT(*) FROM information_schema.views WHERE table_schema = 'app'), \
                 (SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'app'), \
                 (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'app')",
            )
            .await
            .unwrap();
        assert_eq!(objects, Some((1, 1, 1)), "{}", db.addr());
        let names: Vec<String> = d.query("SELECT name FROM app.big").await.unwrap();
        assert_eq!(names, ["ann"], "{}", db.addr());
        let next: Option<i64> = d
            .query_first("SELECT next_not_cached_value FROM app.ids")
            .await
            .unwrap();
        assert_eq!(next, Some(10100), "{}", db.addr());
    }
    let next: Option<i64> = c.query_first("SELECT NEXTVAL(app.ids)").await.unwrap();
    assert_eq!(next, Some(10100));
}

/// A read that calls a stored function which may change data (`SELECT next_id()`, the
/// legacy counter pattern) runs like a CALL: on the primary and through the log, so the
/// counter moves on every replica. Before, it ran on one server only and the replicas
/// silently diverged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_calling_a_data_changing_stored_function_is_replicated() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sf",
            "CREATE TABLE sf.ctr (id INT PRIMARY KEY, n INT NOT NULL)",
            "INSERT INTO sf.ctr VALUES (1, 0)",
            "CREATE FUNCTION sf.next_id() RETURNS INT MODIFIES SQL DATA BEGIN \
             UPDATE sf.ctr SET n = n + 1 WHERE id = 1; RETURN (SELECT n FROM sf.ctr WHERE id = 1); END",
            "CREATE FUNCTION sf.twice(x INT) RETURNS INT NO SQL DETERMINISTIC RETURN x * 2",
        ],
    )
    .await;
    let a: Option<i32> = c.query_first("SELECT sf.next_id()").await.unwrap();
    let b: Option<i32> = c.query_first("SELECT sf.next_id()").await.unwrap();
    assert_eq!((a, b), (Some(1), Some(2)));
    c.query_drop("DO sf.next_id()").await.unwrap();
    // Binary protocol too.
    let d: Option<i32> = c.exec_first("SELECT sf.next_id() + ?", (0,)).await.unwrap();
    assert_eq!(d, Some(4));
    let four: Option<i32> = c.query_first("SELECT sf.twice(2)").await.unwrap();
    assert_eq!(four, Some(4));
    // A function made on the servers themselves (before the proxy came, or by an operator)
    // is found by the health probes, which read mysql.proc.
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        d.query_drop(
            "CREATE FUNCTION sf.Bump() RETURNS INT MODIFIES SQL DATA BEGIN \
             UPDATE sf.ctr SET n = n + 10 WHERE id = 1; RETURN 0; END",
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.ctx.cluster.pools().all(|(_, _, p)| {
        p.stored_functions()
            .is_some_and(|names| names.contains("bump"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the health probes never listed sf.Bump"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.query_drop("SELECT sf.Bump()").await.unwrap();
    assert_replicas_identical(&dbs, &mut c, &[]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let n: Option<i32> = d
            .query_first("SELECT n FROM sf.ctr WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(n, Some(14), "{}", db.addr());
    }
}

/// DDL on the session's temporary table (DROP/ALTER/TRUNCATE/CREATE INDEX/DROP INDEX need no
/// TEMPORARY keyword) stays on the primary, as does filling it from a regular table; a DDL or write
/// that copies a temporary table into a regular one is refused with 1235, and a regular table that reuses a dropped temporary table's name is
/// replicated. Before, `ALTER TABLE tmp …` and `CREATE TABLE r LIKE tmp` were replayed and
/// failed on every follower (all quarantined), and writes to a regular table named like a
/// dropped temporary one stayed on the primary. Only the created table becomes temporary
/// (not the tables its SELECT reads), per schema, following renames; a column named
/// `temporary` does not make a DDL local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_temporary_tables_stays_on_the_primary() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE tt",
            "USE tt",
            "CREATE TEMPORARY TABLE tmp (a INT)",
            "INSERT INTO tmp VALUES (1), (2)",
            "ALTER TABLE tmp ADD COLUMN b INT",
            "CREATE INDEX ia ON tmp (a)",
            "DROP INDEX ia ON tmp",
            "CREATE INDEX ia ON tmp (a)",
            "TRUNCATE TABLE tmp",
            // Filling the temporary table from a regular one changes only the temporary table.
            "CREATE TABLE src (a INT, b INT)",
            "INSERT INTO src VALUES (3, 4)",
            "INSERT INTO tmp SELECT a, b FROM src",
        ],
    )
    .await;
    for sql in [
        "CREATE TABLE r1 LIKE tmp",
        "CREATE TABLE r2 (LIKE tmp)",
        "CREATE TABLE r3 AS SELECT * FROM tmp",
        "INSERT INTO src SELECT * FROM tmp",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM tmp").await.unwrap();
    assert_eq!(n, Some(1));
    run_all(
        &mut c,
        &[
            "DROP TABLE tmp",
            // The name is free again: this one is a regular, replicated table.
            "CREATE TABLE tmp (x INT)",
            "INSERT INTO tmp VALUES (5)",
            "CREATE TEMPORARY TABLE t2 (a INT)",
            "DROP TEMPORARY TABLE t2",
            "CREATE TABLE t2 (y INT)",
            "INSERT INTO t2 VALUES (7)",
            // The regular table it reads from does not become temporary (SQLAlchemy's
            // suite did this; the DELETE stayed on the primary and every follower was
            // quarantined at the next INSERT).
            "CREATE TEMPORARY TABLE copy AS SELECT a FROM src WHERE a > 0",
            "DELETE FROM src",
            "INSERT INTO src VALUES (8, 9)",
            // A temporary table hides only its own schema's table of that name.
            "CREATE DATABASE tt2",
            "CREATE TABLE tt2.copy (a INT)",
            "INSERT INTO tt2.copy VALUES (10)",
            "INSERT INTO copy VALUES (11)",
            // Renamed: the new name is the temporary one, the old name is free.
            "CREATE TEMPORARY TABLE t3 (a INT)",
            "ALTER TABLE t3 RENAME TO t4",
            "INSERT INTO t4 VALUES (12)",
            "CREATE TABLE t3 (z INT)",
            "INSERT INTO t3 VALUES (13)",
            // A column named `temporary` is not a temporary table.
            "CREATE TABLE flags (id INT, temporary INT)",
            "INSERT INTO flags VALUES (1, 1)",
            "ALTER TABLE flags DROP temporary",
        ],
    )
    .await;
    let n: Option<u32> = c
        .query_first("SELECT (SELECT COUNT(*) FROM copy) + (SELECT COUNT(*) FROM t4)")
        .await
        .unwrap();
    assert_eq!(n, Some(3), "the temporary tables are on the primary");
    assert_replicas_identical(
        &dbs,
        &mut c,
        &["tt.tmp", "tt.t2", "tt.src", "tt2.copy", "tt.t3", "tt.flags"],
    )
    .await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let v: Vec<(i32, i32, i32, i32)> = d
            .query(
                "SELECT (SELECT a FROM tt.src), (SELECT a FROM tt2.copy), (SELECT z FROM tt.t3), \
                 (SELECT COUNT(*) FROM information_schema.columns \
                  WHERE table_schema = 'tt' AND table_name = 'flags')",
            )
            .await
            .unwrap();
        assert_eq!(v, [(8, 10, 13, 1)], "{}", db.addr());
    }
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let v: Vec<(i32, i32)> = d
            .query("SELECT (SELECT x FROM tt.tmp), (SELECT y FROM tt.t2)")
            .await
            .unwrap();
        assert_eq!(v, [(5, 7)], "{}", db.addr());
    }
}

/// A stored procedure that commits by itself, called inside the client's transaction: the
/// primary has committed the session's statements and the CALL when the CALL answers, so a
/// later ROLLBACK undoes nothing there. They must reach the log then. Before, the ROLLBACK
/// dropped them from the log only, leaving the rows on the primary alone.
/// Statements whose result is each server's own are refused with 1235 instead of diverging
/// silently (before, each of these left different rows or tables on the followers):
/// non-InnoDB tables (a rolled-back transaction's changes stay in them on the primary only),
/// `SET default_storage_engine` to such an engine, events (the scheduler writes outside the
/// log), and writes reading server-local schemas or variables (`information_schema`, the
/// connection's thread id, random seeds, `@@global.` values). `@@last_insert_id` is carried.
/// Changes to the proxy's own `myquorum` schema are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procedures_that_commit_and_server_local_reads_do_not_diverge() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ev",
            "CREATE TABLE ev.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))",
            // (Ids given: ids a stored program generates are refused, see below.)
            "CREATE PROCEDURE ev.add_committed(i INT, x VARCHAR(64)) \
             BEGIN START TRANSACTION; INSERT INTO ev.t (id, v) VALUES (i, x); COMMIT; END",
            "BEGIN",
            "INSERT INTO ev.t (v) VALUES ('before the call')",
            "CALL ev.add_committed(2, 'in the call')",
            // The procedure's COMMIT ended the transaction: this ROLLBACK undoes nothing.
            "ROLLBACK",
            "BEGIN",
            "CALL ev.add_committed(3, 'second call')",
            "INSERT INTO ev.t (v) VALUES ('after the call, autocommit')",
            "INSERT INTO ev.t (v) VALUES (@@last_insert_id)",
        ],
    )
    .await;
    let rows: Vec<String> = c.query("SELECT v FROM ev.t ORDER BY id").await.unwrap();
    assert_eq!(
        rows,
        [
            "before the call",
            "in the call",
            "second call",
            "after the call, autocommit",
            "4"
        ]
    );
    for sql in [
        "CREATE TABLE ev.m (id INT PRIMARY KEY) ENGINE=MyISAM",
        "ALTER TABLE ev.t ENGINE=MEMORY",
        "SET default_storage_engine = Aria",
        "CREATE EVENT ev.tick ON SCHEDULE EVERY 1 SECOND DO INSERT INTO ev.t (v) VALUES ('tick')",
        "INSERT INTO ev.t (v) SELECT COUNT(*) FROM information_schema.PROCESSLIST",
        "INSERT INTO ev.t (v) SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = 'UPTIME'",
        "INSERT INTO ev.t (v) VALUES (@@pseudo_thread_id)",
        "INSERT INTO ev.t (v) VALUES (@@rand_seed1)",
        "INSERT INTO ev.t (v) VALUES (@@global.max_connections)",
        // The proxy's own schema (its copy of the log) is not changed through it.
        "DELETE FROM myquorum.wal",
        "DROP DATABASE myquorum",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    // Nor is each server's system schema, as a restored `mysqldump --all-databases` would
    // (its tables are Aria, CSV, MyISAM: a failed statement would stay on some servers).
    c.query_drop("USE mysql").await.unwrap();
    for sql in [
        "INSERT INTO time_zone_name VALUES ('Mars/Olympus', 1)",
        "CREATE TABLE IF NOT EXISTS general_log (a INT)",
        "CREATE DATABASE IF NOT EXISTS mysql",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    c.query_drop("USE ev").await.unwrap();
    // Temporary tables stay on the primary: any engine is fine there.
    run_all(
        &mut c,
        &[
            "CREATE TEMPORARY TABLE ev.scratch (id INT) ENGINE=MEMORY",
            "INSERT INTO ev.scratch VALUES (1)",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["ev.t"]).await;
}

/// Writes whose result depends on the order a SELECT or UPDATE reads rows in (MySQL's
/// "unsafe for statement binlog" INSERT … SELECT, INSERT IGNORE / REPLACE … SELECT,
/// ON DUPLICATE KEY UPDATE, UPDATE IGNORE). An INSERT … SELECT reading one table with a
/// primary key runs ordered by that key, on the primary and in the log. The others are
/// refused with 1235 when the primary's answer shows that the order decided it — ids
/// generated for several rows, or rows colliding on a unique key — and nothing stays on
/// the primary; the same statements run when only one row is read, nothing collides, ids
/// are given, or ORDER BY fixes the order. Inside a transaction only the refused statement
/// is undone. A LIMIT counts with its own level's ORDER BY only; `EXISTS (… LIMIT 1)`
/// (Django's `Exists()`, refused before) runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_result_depends_on_row_order_are_refused_when_it_did() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ro",
            "USE ro",
            "CREATE TABLE src (id INT PRIMARY KEY, k INT, v INT)",
            // Two source rows share k = 1.
            "INSERT INTO src VALUES (1, 1, 10), (2, 1, 20), (3, 2, 30)",
            // The same rows in a table without a primary key: no key to order them by.
            "CREATE TABLE heap (id INT, k INT, v INT)",
            "INSERT INTO heap SELECT * FROM src ORDER BY id",
            "CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, k INT UNIQUE, v INT)",
            "CREATE TABLE n (k INT PRIMARY KEY, v INT)",
            "CREATE TABLE u (id INT PRIMARY KEY, k INT UNIQUE)",
            "INSERT INTO u VALUES (1, 2), (2, 3), (3, 4)",
        ],
    )
    .await;
    let refused = [
        "INSERT INTO a (k, v) SELECT 100 + id, v FROM heap",
        "INSERT IGNORE INTO n SELECT k, v FROM heap",
        "REPLACE INTO n SELECT k, v FROM heap",
        "INSERT INTO n SELECT k, v FROM heap ON DUPLICATE KEY UPDATE v = VALUES(v)",
        // A join: no one table's key orders its rows.
        "INSERT INTO a (k, v) SELECT 400 + s.id, s.v FROM src s, u WHERE u.id = 1",
        "UPDATE IGNORE u SET k = 1",
        // A subquery's LIMIT without its own ORDER BY picks a row too (on one table the
        // proxy orders it by the key; over a join it cannot).
        "DELETE FROM u WHERE k = (SELECT s.k + 1 FROM src s, n WHERE n.k = s.k LIMIT 1)",
        // Judged as the statement it runs.
        "SET STATEMENT sql_mode = '' FOR INSERT INTO a (k, v) SELECT 300 + id, v FROM heap",
    ];
    for sql in refused {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("ORDER BY") && !msg.contains("  "), "{msg}");
    }
    let count = |t: &str| format!("SELECT COUNT(*) FROM ro.{t}");
    for t in ["a", "n"] {
        let n: Option<i64> = c.query_first(count(t)).await.unwrap();
        assert_eq!(n, Some(0), "{t} kept a refused write");
    }
    // A prepared one is checked the same way.
    let err = c
        .exec_drop("INSERT INTO a (k, v) SELECT id + ?, v FROM heap", (500,))
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    // Inside a transaction only the refused statement is undone.
    run_all(&mut c, &["BEGIN", "INSERT INTO n VALUES (77, 1)"]).await;
    let err = c
        .query_drop("REPLACE INTO n SELECT k, v FROM heap")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    run_all(&mut c, &["INSERT INTO n VALUES (78, 1)", "COMMIT"]).await;
    let keys: Vec<i64> = c.query("SELECT k FROM ro.n ORDER BY k").await.unwrap();
    assert_eq!(keys, [77, 78]);
    // Where the order did not decide, or ORDER BY fixes it, they run.
    run_all(
        &mut c,
        &[
            "INSERT INTO a (k, v) SELECT k, v FROM heap WHERE id = 1",
            "INSERT INTO a (id, k, v) SELECT 1000 + id, 200 + id, v FROM heap",
            "INSERT INTO a (k, v) SELECT 100 + id, v FROM heap ORDER BY id",
            "INSERT IGNORE INTO n SELECT k, v FROM heap ORDER BY id",
            "INSERT INTO n SELECT k + 10, v FROM heap WHERE id > 2",
            "UPDATE IGNORE u SET k = k + 10",
            "UPDATE IGNORE u SET k = 1 ORDER BY id",
            "BEGIN",
            "REPLACE INTO n SELECT k, v FROM heap ORDER BY id",
            "COMMIT",
            // `EXISTS (… LIMIT 1)` (Django's Exists()) is the same whichever row comes first.
            "DELETE FROM u WHERE EXISTS (SELECT 1 AS a FROM src WHERE src.id = u.id AND src.k = 2 LIMIT 1)",
        ],
    )
    .await;
    // From one table with a primary key they run in its order (SQLAlchemy's
    // `insert().from_select()`, an archive copy): ids follow the key, the first of the
    // colliding rows by key wins an INSERT IGNORE, the last a REPLACE.
    run_all(
        &mut c,
        &[
            "INSERT INTO a (k, v) SELECT 500 + id, v FROM src WHERE k IN (1, 2)",
            "BEGIN",
            "INSERT IGNORE INTO n SELECT k + 100, v FROM src",
            "REPLACE INTO n SELECT k + 200, v FROM src",
            "COMMIT",
        ],
    )
    .await;
    c.exec_drop("INSERT INTO a (k, v) SELECT id + ?, v FROM src", (600,))
        .await
        .unwrap();
    // (Refused statements used up AUTO_INCREMENT values on the primary: ids are compared by
    // order, not value.)
    let rows: Vec<(i64, i64, i64)> = c
        .query("SELECT id, k, v FROM ro.a ORDER BY id")
        .await
        .unwrap();
    let kv: Vec<(i64, i64)> = rows.iter().map(|&(_, k, v)| (k, v)).collect();
    assert_eq!(
        kv,
        [
            (1, 10),
            (201, 10),
            (202, 20),
            (203, 30),
            (101, 10),
            (102, 20),
            (103, 30),
            (501, 10),
            (502, 20),
            (503, 30),
            (601, 10),
            (602, 20),
            (603, 30)
        ]
    );
    assert_eq!(
        rows[1..4].iter().map(|r| r.0).collect::<Vec<_>>(),
        [1001, 1002, 1003]
    );
    let u: Vec<(i64, i64)> = c.query("SELECT id, k FROM ro.u ORDER BY id").await.unwrap();
    assert_eq!(u, [(1, 1), (2, 13)]);
    let n: Vec<(i64, i64)> = c.query("SELECT k, v FROM ro.n ORDER BY k").await.unwrap();
    assert_eq!(
        n,
        [
            (1, 20),
            (2, 30),
            (12, 30),
            (77, 1),
            (78, 1),
            (101, 10),
            (102, 30),
            (201, 20),
            (202, 30)
        ]
    );
    assert_replicas_identical(&dbs, &mut c, &["ro.a", "ro.n", "ro.u"]).await;
}

/// pt-online-schema-change's way of altering a table: a new table, triggers that copy each
/// changed row into it, then the rows copied in primary-key chunks with `INSERT IGNORE …
/// SELECT … FORCE INDEX(PRIMARY)`. Rows the triggers copied first collide with the chunk's:
/// that is not order-dependent, as the clustered index fixes the order the rows are read in
/// on every replica, so the copy runs (it was refused with 1235 as soon as the application
/// wrote during the copy). The same chunk read without the hint runs ordered by the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_schema_change_copies_rows_through_the_primary_key() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE osc",
            "USE osc",
            "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), n INT, \
             updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP)",
            "INSERT INTO t (v, n) SELECT CONCAT('v', seq), seq FROM seq_1_to_200 ORDER BY seq",
            "CREATE TABLE _t_new LIKE t",
            "ALTER TABLE _t_new ADD COLUMN extra INT NOT NULL DEFAULT 7",
            "CREATE TRIGGER pt_osc_del AFTER DELETE ON t FOR EACH ROW \
             DELETE IGNORE FROM _t_new WHERE _t_new.id <=> OLD.id",
            "CREATE TRIGGER pt_osc_upd AFTER UPDATE ON t FOR EACH ROW \
             REPLACE INTO _t_new (id, v, n, updated) VALUES (NEW.id, NEW.v, NEW.n, NEW.updated)",
            "CREATE TRIGGER pt_osc_ins AFTER INSERT ON t FOR EACH ROW \
             REPLACE INTO _t_new (id, v, n, updated) VALUES (NEW.id, NEW.v, NEW.n, NEW.updated)",
            // The application writes during the copy: its rows reach the new table first.
            "UPDATE t SET n = n + 1000 WHERE id IN (5, 20, 60, 130)",
            "DELETE FROM t WHERE id = 99",
            "INSERT INTO t (v, n) VALUES ('late', 1)",
        ],
    )
    .await;
    let copy = "INSERT LOW_PRIORITY IGNORE INTO `osc`.`_t_new` (`id`, `v`, `n`, `updated`) \
                SELECT `id`, `v`, `n`, `updated` FROM `osc`.`t` FORCE INDEX(`PRIMARY`) \
                WHERE ((`id` >= ?)) AND ((`id` <= ?)) LOCK IN SHARE MODE \
                /*pt-online-schema-change 4242 copy nibble*/";
    // Without the hint the server may read the chunk in any order: the proxy orders it by
    // the key (it was refused with 1235 before it did), and it copies what the hinted one
    // would.
    let unhinted = "INSERT IGNORE INTO osc._t_new (id, v, n, updated) \
                    SELECT id, v, n, updated FROM osc.t WHERE id >= 1 AND id <= 50";
    c.query_drop(unhinted).await.unwrap();
    // Chunks of 50, text and prepared, as DBD::mysql sends them either way.
    for (i, low) in (1..=201).step_by(50).enumerate() {
        let high = low + 49;
        if i % 2 == 0 {
            let text = copy
                .replacen('?', &low.to_string(), 1)
                .replacen('?', &high.to_string(), 1);
            c.query_drop(&text)
                .await
                .unwrap_or_else(|e| panic!("chunk {low}..{high}: {e}"));
        } else {
            c.exec_drop(copy, (low, high))
                .await
                .unwrap_or_else(|e| panic!("prepared chunk {low}..{high}: {e}"));
        }
    }
    run_all(
        &mut c,
        &[
            "RENAME TABLE osc.t TO osc._t_old, osc._t_new TO osc.t",
            "DROP TABLE osc._t_old",
        ],
    )
    .await;
    let (rows, bumped, extra): (i64, i64, i64) = c
        .query_first("SELECT COUNT(*), SUM(n > 1000), SUM(extra = 7) FROM osc.t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rows, bumped, extra), (200, 4, 200));
    let gone: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM osc.t WHERE id = 99")
        .await
        .unwrap();
    assert_eq!(gone, Some(0));
    assert_replicas_identical(&dbs, &mut c, &["osc.t"]).await;
}

/// `DELETE … WHERE … LIMIT n` without ORDER BY (a purge job, pt-archiver's bulk delete) may
/// remove any n matching rows, and a follower could pick others. It was refused with 1235;
/// now the proxy reads the table's primary key on the primary and runs (and logs) the
/// statement with `ORDER BY` it, one of the orders it allowed, text or prepared, in a
/// transaction too; an ORDER BY whose ties would leave the choice to each server gets the
/// key as its last column. A table without a primary key is still refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unordered_limit_on_one_table_is_ordered_by_its_primary_key() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE pg",
            "USE pg",
            // The index on k reads rows in another order than the primary key.
            "CREATE TABLE expiring (id INT PRIMARY KEY, k INT NOT NULL, note VARCHAR(10), KEY (k))",
            "INSERT INTO expiring (id, k) SELECT seq, (seq * 37) % 100 FROM seq_1_to_100",
            "CREATE TABLE pair (a INT, b INT, v INT, PRIMARY KEY (b, a))",
            "INSERT INTO pair SELECT seq % 3, seq, 0 FROM seq_1_to_20",
            "CREATE TABLE nopk (k INT, v INT)",
            "INSERT INTO nopk VALUES (1, 1), (2, 2)",
        ],
    )
    .await;
    let before = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE k < 50 ORDER BY id",
    )
    .await;
    c.query_drop("DELETE FROM expiring WHERE k < 50 LIMIT 10")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 10);
    let after = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE k < 50 ORDER BY id",
    )
    .await;
    assert_eq!(after, before[10..], "the ten lowest ids go");
    // Prepared, with the LIMIT a parameter.
    c.exec_drop(
        "UPDATE pg.expiring SET note = 'seen' WHERE k >= ? LIMIT ?",
        (50, 5),
    )
    .await
    .unwrap();
    let seen = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE note = 'seen' ORDER BY id",
    )
    .await;
    let high = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE k >= 50 ORDER BY id",
    )
    .await;
    assert_eq!(seen, high[..5]);
    // In a transaction, and on a two-column key.
    run_all(
        &mut c,
        &[
            "BEGIN",
            "DELETE FROM pg.expiring WHERE note IS NULL LIMIT 3",
            "UPDATE pair SET v = 1 WHERE a = 1 LIMIT 2",
            "COMMIT",
        ],
    )
    .await;
    let pair = ids(&mut c, "SELECT b FROM pg.pair WHERE v = 1 ORDER BY b").await;
    assert_eq!(pair, [1, 4]);
    // An ORDER BY with ties (a purge by date) takes the key as its last tiebreaker.
    let grp0 = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE id % 4 = 0 ORDER BY id",
    )
    .await;
    c.query_drop("DELETE FROM pg.expiring ORDER BY id % 4 LIMIT 4")
        .await
        .unwrap();
    let left = ids(
        &mut c,
        "SELECT id FROM pg.expiring WHERE id % 4 = 0 ORDER BY id",
    )
    .await;
    assert_eq!(left, grp0[4..]);
    // Archiving: copy, then delete, the same rows, ties broken the same way by both.
    run_all(
        &mut c,
        &[
            "CREATE TABLE pg.archive LIKE pg.expiring",
            "INSERT INTO pg.archive SELECT * FROM pg.expiring e ORDER BY e.id % 4 LIMIT 6",
            "DELETE FROM pg.expiring ORDER BY id % 4 LIMIT 6",
        ],
    )
    .await;
    let archived = ids(&mut c, "SELECT id FROM pg.archive ORDER BY id").await;
    assert_eq!(archived, grp0[4..10], "the next six of the first group");
    let both: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM pg.archive a JOIN pg.expiring e USING (id)")
        .await
        .unwrap();
    assert_eq!(both, Some(0), "what was copied is what was deleted");
    // An application's statement often ends in a newline (a triple-quoted string): the key
    // still goes after its last word (it was dropped there, and the ties left to each
    // server numbered the copies in its own order).
    run_all(
        &mut c,
        &[
            "CREATE TABLE pg.numbered (n INT AUTO_INCREMENT PRIMARY KEY, id INT)",
            "INSERT INTO pg.numbered (id) SELECT id FROM pg.expiring e ORDER BY e.id % 4\n",
        ],
    )
    .await;
    let numbered = ids(&mut c, "SELECT id FROM pg.numbered ORDER BY n LIMIT 5").await;
    assert_eq!(numbered, grp0[10..15], "the first group, by id");
    let err = c.query_drop("DELETE FROM nopk LIMIT 1").await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("no primary key"), "{err}");
    let left: Option<i64> = c.query_first("SELECT COUNT(*) FROM pg.nopk").await.unwrap();
    assert_eq!(left, Some(2));
    assert_replicas_identical(
        &dbs,
        &mut c,
        &[
            "pg.expiring",
            "pg.pair",
            "pg.nopk",
            "pg.archive",
            "pg.numbered",
        ],
    )
    .await;
}

/// `ALTER TABLE … ADD id INT AUTO_INCREMENT PRIMARY KEY` on a table without a key (the usual
/// way to give a legacy table one) numbers its rows in the order the server stored them:
/// the primary inserted two concurrent transactions' rows in the order they ran, the
/// followers in log order, and the ids went 1 → 10, 2 → 20 on the primary and 1 → 20,
/// 2 → 10 on both followers, unseen (the counts agree). Refused with 1235 and MySQL's
/// recipe, which works through the proxy; an empty table, or one with a key, is altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_rows_in_each_servers_storage_order_is_refused() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE so",
            "USE so",
            "CREATE TABLE legacy (v INT, w VARCHAR(10))",
            "CREATE TABLE empty_one (v INT)",
            "CREATE TABLE keyed (k INT NOT NULL, v INT, UNIQUE KEY (k))",
            "INSERT INTO keyed VALUES (2, 20), (1, 10)",
        ],
    )
    .await;
    // Two transactions insert in one order and commit in the other.
    let mut other = connect(&proxy.url(Some("so"))).await;
    run_all(&mut c, &["BEGIN", "INSERT INTO legacy VALUES (10, 'a')"]).await;
    run_all(
        &mut other,
        &["BEGIN", "INSERT INTO legacy VALUES (20, 'b')", "COMMIT"],
    )
    .await;
    run_all(&mut c, &["COMMIT"]).await;
    let err = expect_error(
        &mut c,
        "ALTER TABLE legacy ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY",
        1235,
    )
    .await;
    assert!(
        err.contains("no primary key") && err.contains("ORDER BY"),
        "{err}"
    );
    // Copying with ids numbered in read order is the same thing.
    let err = expect_error(
        &mut c,
        "CREATE TABLE numbered (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v, w FROM legacy",
        1235,
    )
    .await;
    assert!(err.contains("ORDER BY"), "{err}");
    let columns: Vec<String> = c
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'so' AND TABLE_NAME = 'legacy'")
        .await
        .unwrap();
    assert_eq!(columns, ["v", "w"], "the refused ALTER ran");
    run_all(
        &mut c,
        &[
            "ALTER TABLE empty_one ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY",
            "ALTER TABLE so.keyed ADD COLUMN id INT AUTO_INCREMENT, ADD KEY (id)",
            // MySQL's recipe: copy in an order of every column.
            "CREATE TABLE legacy_new LIKE legacy",
            "ALTER TABLE legacy_new ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY",
            "INSERT INTO legacy_new (v, w) SELECT v, w FROM legacy ORDER BY v, w",
            "RENAME TABLE legacy TO legacy_old, legacy_new TO legacy",
            "CREATE TABLE numbered (id INT AUTO_INCREMENT PRIMARY KEY) \
             SELECT v, w FROM legacy_old ORDER BY w, v",
        ],
    )
    .await;
    let rows: Vec<(i64, i64)> = c
        .query("SELECT id, v FROM so.legacy ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, [(1, 10), (2, 20)]);
    let keyed: Vec<(i64, i64)> = c
        .query("SELECT id, k FROM so.keyed ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        keyed,
        [(1, 1), (2, 2)],
        "numbered in the unique key's order"
    );
    assert_replicas_identical(
        &dbs,
        &mut c,
        &["so.legacy", "so.keyed", "so.empty_one", "so.numbered"],
    )
    .await;
}

/// A subquery's LIMIT picks rows too: the batch and queue forms MariaDB allows (`UPDATE …
/// WHERE id IN (SELECT id FROM (SELECT id … ORDER BY pri LIMIT n) d)`, a derived table
/// joined in, a scalar subquery) left ties in a non-unique ORDER BY to each replica's plan,
/// and a LIMIT without ORDER BY there was refused. One follower here plans otherwise (its
/// index on `pri` was dropped, as statistics or an index made on one server change a plan):
/// an index scan and a filesort pick other rows among equal `pri`, each replica changed as
/// many rows, and nothing noticed the replicas part. Now the subquery's table's key breaks
/// the ties, or orders the unordered LIMIT, and every replica changes the same rows.
/// GROUP_CONCAT / JSON_ARRAYAGG in a write join values in read order (sorted through an
/// index on the tag, by id in a scan): they get the key as their order as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subquerys_limit_picks_the_same_rows_on_every_replica() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sq",
            "USE sq",
            "CREATE TABLE jobs (id INT PRIMARY KEY, pri INT NOT NULL, owner INT, \
             pad CHAR(200) NOT NULL DEFAULT '', KEY (pri))",
            // Three priorities: a thousand ties each.
            "INSERT INTO jobs (id, pri) SELECT seq, seq % 3 FROM seq_1_to_3000",
            "CREATE TABLE picked (id INT PRIMARY KEY, v INT)",
            // Tags inserted out of order: the index reads them sorted, a scan by id.
            "CREATE TABLE tags (id INT PRIMARY KEY, post INT, tag VARCHAR(10), KEY (post, tag))",
            "INSERT INTO tags VALUES (1, 1, 'zeta'), (2, 1, 'alpha'), (3, 1, 'mu'), \
             (4, 2, 'beta'), (5, 2, 'alpha')",
            "CREATE TABLE posts (id INT PRIMARY KEY, tags VARCHAR(100))",
            "INSERT INTO posts VALUES (1, NULL), (2, NULL)",
            "CREATE TABLE tag_lists (post INT PRIMARY KEY, tags VARCHAR(100))",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let mut follower = connect(&dbs[2].url(None)).await;
    for sql in [
        "ALTER TABLE sq.jobs DROP INDEX pri",
        "ALTER TABLE sq.tags DROP INDEX post",
    ] {
        follower.query_drop(sql).await.unwrap();
    }
    run_all(
        &mut c,
        &[
            "UPDATE jobs SET owner = 1 WHERE id IN (SELECT id FROM (SELECT id FROM jobs \
             WHERE owner IS NULL ORDER BY pri LIMIT 5) d)",
            "UPDATE jobs JOIN (SELECT id FROM jobs WHERE owner IS NULL ORDER BY pri DESC \
             LIMIT 4) d USING (id) SET owner = 2",
            "DELETE FROM jobs WHERE id IN (SELECT id FROM (SELECT id FROM jobs \
             WHERE owner IS NULL ORDER BY pri LIMIT 3) d)",
            // Unordered: ordered by the key (it was refused).
            "UPDATE jobs SET owner = 3 WHERE id IN (SELECT id FROM (SELECT id FROM jobs \
             WHERE owner IS NULL AND pri = 1 LIMIT 2) d)",
            "INSERT INTO picked VALUES (1, (SELECT id FROM jobs WHERE owner IS NULL \
             ORDER BY pri DESC LIMIT 1))",
            // Aggregates joining values in read order are ordered by the key too.
            "UPDATE posts SET tags = (SELECT GROUP_CONCAT(tag) FROM tags WHERE tags.post = posts.id)",
            "INSERT INTO tag_lists SELECT post, JSON_ARRAYAGG(tag) FROM tags GROUP BY post",
        ],
    )
    .await;
    let lists: Vec<(String, String)> = c
        .query("SELECT p.tags, l.tags FROM sq.posts p JOIN sq.tag_lists l ON l.post = p.id ORDER BY p.id")
        .await
        .unwrap();
    assert_eq!(
        lists,
        [
            (
                "zeta,alpha,mu".to_string(),
                r#"["zeta","alpha","mu"]"#.to_string()
            ),
            ("beta,alpha".to_string(), r#"["beta","alpha"]"#.to_string()),
        ]
    );
    let owned = |owner: i64| format!("SELECT id FROM sq.jobs WHERE owner = {owner} ORDER BY id");
    // Ties broken by the lowest ids.
    assert_eq!(ids(&mut c, &owned(1)).await, [3, 6, 9, 12, 15]);
    assert_eq!(ids(&mut c, &owned(2)).await, [2, 5, 8, 11]);
    let gone = ids(
        &mut c,
        "SELECT seq FROM seq_1_to_30 WHERE seq NOT IN (SELECT id FROM sq.jobs) ORDER BY seq",
    )
    .await;
    assert_eq!(gone, [18, 21, 24]);
    assert_eq!(ids(&mut c, &owned(3)).await, [1, 4]);
    assert_eq!(ids(&mut c, "SELECT v FROM sq.picked").await, [14]);
    // Over two tables the proxy cannot order it: refused, and nothing changed.
    let err = expect_error(
        &mut c,
        "UPDATE jobs SET owner = 4 WHERE id = (SELECT j.id FROM jobs j, picked p \
         WHERE j.id > p.v LIMIT 1)",
        1235,
    )
    .await;
    assert!(err.contains("ORDER BY"), "{err}");
    assert!(ids(&mut c, &owned(4)).await.is_empty());
    follower
        .query_drop("ALTER TABLE sq.jobs ADD INDEX pri (pri)")
        .await
        .unwrap();
    assert_replicas_identical(
        &dbs,
        &mut c,
        &["sq.jobs", "sq.picked", "sq.posts", "sq.tag_lists"],
    )
    .await;
}

/// Window functions whose value follows how ties are broken (`ROW_NUMBER() OVER (ORDER BY
/// pri)`, `LAG()`, a window without ORDER BY) numbered rows in each replica's read order:
/// through an index or a filesort the same statement numbered other rows first, with equal
/// row counts. The key of the one table the window reads now ends its ORDER BY; one
/// follower here plans without the index the primary uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_functions_in_writes_number_rows_alike_on_every_replica() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE wf",
            "USE wf",
            "CREATE TABLE entries (id INT PRIMARY KEY, g INT NOT NULL, pri INT NOT NULL, \
             v INT, pad CHAR(200) NOT NULL DEFAULT '', KEY (pri))",
            // Three priorities, a thousand ties each; two groups.
            "INSERT INTO entries (id, g, pri) SELECT seq, seq % 2, seq % 3 FROM seq_1_to_3000",
            "CREATE TABLE ranks (id INT PRIMARY KEY, rn INT, prev INT)",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let mut follower = connect(&dbs[2].url(None)).await;
    follower
        .query_drop("ALTER TABLE wf.entries DROP INDEX pri")
        .await
        .unwrap();
    run_all(
        &mut c,
        &[
            "INSERT INTO ranks SELECT id, ROW_NUMBER() OVER (ORDER BY pri), \
             LAG(id) OVER (PARTITION BY g ORDER BY pri) FROM entries",
            "UPDATE entries JOIN (SELECT id, ROW_NUMBER() OVER (PARTITION BY pri) rn \
             FROM entries) d USING (id) SET entries.v = d.rn",
        ],
    )
    .await;
    // Ties broken by the lowest ids.
    let rn = ids(
        &mut c,
        "SELECT rn FROM wf.ranks WHERE id IN (1, 3, 6) ORDER BY id",
    )
    .await;
    assert_eq!(rn, [1001, 1, 2]);
    let prev = ids(
        &mut c,
        "SELECT prev FROM wf.ranks WHERE id IN (12, 18) ORDER BY id",
    )
    .await;
    assert_eq!(prev, [6, 12]);
    let v = ids(
        &mut c,
        "SELECT v FROM wf.entries WHERE id IN (1, 3, 4, 6) ORDER BY id",
    )
    .await;
    assert_eq!(v, [1, 1, 2, 2]);
    // Over a join the proxy cannot order an unordered one: refused, and nothing changed.
    let err = expect_error(
        &mut c,
        "UPDATE entries e JOIN (SELECT a.id, ROW_NUMBER() OVER () rn FROM entries a \
         JOIN ranks b USING (id)) d USING (id) SET e.v = d.rn",
        1235,
    )
    .await;
    assert!(err.contains("ORDER BY"), "{err}");
    follower
        .query_drop("ALTER TABLE wf.entries ADD INDEX pri (pri)")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["wf.entries", "wf.ranks"]).await;
}

/// The writes inside stored programs (and compound statements) get the orders a write of
/// its own gets: a procedure numbering rows with `ROW_NUMBER() OVER (ORDER BY pri)`,
/// claiming `ORDER BY pri LIMIT 1` or copying the first rows by a tied order ran in each
/// replica's read order, since the CALL replays and each server plans its body alone. The
/// CREATE now carries the primary key in each such ORDER BY, qualified: the procedure's
/// variable `id` would take a bare `id`'s place. One follower here plans without the index
/// the primary uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_stored_programs_pick_and_number_rows_alike_on_every_replica() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sp",
            "USE sp",
            "CREATE TABLE entries (id INT PRIMARY KEY, pri INT NOT NULL, owner INT, \
             pad CHAR(200) NOT NULL DEFAULT '', KEY (pri))",
            "INSERT INTO entries (id, pri) SELECT seq, seq % 3 FROM seq_1_to_3000",
            "CREATE TABLE ranks (id INT PRIMARY KEY, rn INT)",
            "CREATE TABLE copies (n INT AUTO_INCREMENT PRIMARY KEY, id INT)",
            "CREATE PROCEDURE number_rows() \
             INSERT INTO ranks SELECT id, ROW_NUMBER() OVER (ORDER BY pri) FROM entries",
            "CREATE PROCEDURE claim(IN who INT) BEGIN DECLARE id INT DEFAULT 0; \
             UPDATE entries SET owner = who WHERE owner IS NULL ORDER BY pri LIMIT 1; END",
            "CREATE PROCEDURE copy_first() \
             INSERT INTO copies (id) SELECT id FROM entries ORDER BY pri LIMIT 5",
            // No ORDER BY at all: the key orders it, as in a statement of its own.
            "CREATE PROCEDURE claim_any(IN who INT) \
             UPDATE entries SET owner = who WHERE owner IS NULL LIMIT 1",
            // The queue pattern: a row picked into a variable, then written by key.
            "CREATE PROCEDURE take(IN who INT) BEGIN DECLARE j INT; \
             SELECT id INTO j FROM entries WHERE owner IS NULL ORDER BY pri LIMIT 1; \
             UPDATE entries SET owner = who WHERE id = j; END",
            "CREATE TABLE heap (v INT)",
            // A cursor loop numbering rows: an index on k reads them in k's order (the
            // highest id first), a scan in id order.
            "CREATE TABLE chain (id INT PRIMARY KEY, k INT NOT NULL, KEY (k))",
            "INSERT INTO chain SELECT seq, 3000 - seq FROM seq_1_to_3000",
            "CREATE TABLE walk (n INT PRIMARY KEY, id INT)",
            "CREATE PROCEDURE walk_chain() BEGIN \
             DECLARE done INT DEFAULT 0; DECLARE v, n INT DEFAULT 0; \
             DECLARE c CURSOR FOR SELECT id FROM chain WHERE k < 20; \
             DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
             OPEN c; l: LOOP FETCH c INTO v; IF done THEN LEAVE l; END IF; \
             SET n = n + 1; INSERT INTO walk VALUES (n, v); END LOOP; CLOSE c; END",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let mut follower = connect(&dbs[2].url(None)).await;
    for sql in [
        "ALTER TABLE sp.entries DROP INDEX pri",
        "ALTER TABLE sp.chain DROP INDEX k",
    ] {
        follower.query_drop(sql).await.unwrap();
    }
    run_all(
        &mut c,
        &[
            "CALL number_rows()",
            "CALL claim(7)",
            "CALL claim(8)",
            "CALL copy_first()",
            "CALL claim_any(9)",
            "CALL take(10)",
            "CALL walk_chain()",
            // A compound statement sent as it is: its statements are ordered the same way.
            "BEGIN NOT ATOMIC DECLARE j INT; \
             SELECT id INTO j FROM entries WHERE owner IS NULL ORDER BY pri LIMIT 1; \
             UPDATE entries SET owner = 11 WHERE id = j; END",
        ],
    )
    .await;
    // Ties broken by the lowest ids.
    let rn = ids(
        &mut c,
        "SELECT rn FROM sp.ranks WHERE id IN (1, 3, 6) ORDER BY id",
    )
    .await;
    assert_eq!(rn, [1001, 1, 2]);
    let claimed = ids(
        &mut c,
        "SELECT id FROM sp.entries WHERE owner IS NOT NULL ORDER BY id",
    )
    .await;
    assert_eq!(claimed, [1, 3, 6, 9, 12]);
    let walked = ids(&mut c, "SELECT id FROM sp.walk ORDER BY n LIMIT 3").await;
    assert_eq!(walked, [2981, 2982, 2983]);
    let copied = ids(&mut c, "SELECT id FROM sp.copies ORDER BY n").await;
    assert_eq!(copied, [3, 6, 9, 12, 15]);
    // An unordered window over a join no key can order: the program is refused.
    let err = expect_error(
        &mut c,
        "CREATE PROCEDURE renumber() UPDATE entries e JOIN (SELECT a.id, ROW_NUMBER() \
         OVER () rn FROM entries a JOIN ranks b USING (id)) d USING (id) SET e.owner = d.rn",
        1235,
    )
    .await;
    assert!(err.contains("ORDER BY"), "{err}");
    // A table without a key leaves an unordered LIMIT nothing to be ordered by.
    let err = expect_error(
        &mut c,
        "CREATE PROCEDURE trim() DELETE FROM heap LIMIT 1",
        1235,
    )
    .await;
    assert!(err.contains("no primary key"), "{err}");
    // Nor does a table not created yet; the refusal says why no key was found.
    let err = expect_error(
        &mut c,
        "CREATE PROCEDURE early() DELETE FROM later LIMIT 1",
        1235,
    )
    .await;
    assert!(
        err.contains("could not be read") && err.contains("later"),
        "{err}"
    );
    for sql in [
        "ALTER TABLE sp.entries ADD INDEX pri (pri)",
        "ALTER TABLE sp.chain ADD INDEX k (k)",
    ] {
        follower.query_drop(sql).await.unwrap();
    }
    assert_replicas_identical(
        &dbs,
        &mut c,
        &["sp.entries", "sp.ranks", "sp.copies", "sp.walk"],
    )
    .await;
}

/// An `INSERT … SELECT` sorting or limiting rows that no primary key can order (a staging
/// table without one, a join, a grouping) numbered ties in each server's read order:
/// `ORDER BY name` gave one name's AUTO_INCREMENT ids in the order each server stored
/// the staging rows. Its output columns now end the ORDER BY; one follower here stores the
/// staging table in another order (rebuilt directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_select_no_key_orders_is_ordered_by_its_output() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE oo",
            "USE oo",
            "CREATE TABLE staging (name VARCHAR(20), email VARCHAR(40))",
            "INSERT INTO staging SELECT CONCAT('n', seq % 10), CONCAT('e', seq, '@x') \
             FROM seq_1_to_200",
            "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20), \
             email VARCHAR(40))",
            "CREATE TABLE firsts (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(40))",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    let mut follower = connect(&dbs[2].url(None)).await;
    follower
        .query_drop("ALTER TABLE oo.staging ORDER BY email DESC")
        .await
        .unwrap();
    run_all(
        &mut c,
        &[
            "INSERT INTO customers (name, email) SELECT name, email FROM staging ORDER BY name",
            "INSERT INTO firsts (email) SELECT s.email FROM staging s JOIN staging t \
             USING (email) WHERE s.name = 'n3' LIMIT 4",
        ],
    )
    .await;
    // Ties broken by the output: name n0's rows by email.
    let first: Vec<String> = c
        .query("SELECT email FROM oo.customers ORDER BY id LIMIT 3")
        .await
        .unwrap();
    assert_eq!(first, ["e100@x", "e10@x", "e110@x"]);
    let picked: Vec<String> = c
        .query("SELECT email FROM oo.firsts ORDER BY id")
        .await
        .unwrap();
    assert_eq!(picked, ["e103@x", "e113@x", "e123@x", "e133@x"]);
    assert_replicas_identical(&dbs, &mut c, &["oo.customers", "oo.firsts"]).await;
}

/// COM_RESET_CONNECTION rolls back the session's open transaction and puts autocommit back
/// on, as on MySQL; a write after it is its own transaction and reaches every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_ends_the_transaction_on_every_replica() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE rc",
            "CREATE TABLE rc.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))",
        ],
    )
    .await;
    for (open, before, after) in [
        ("SET autocommit = 0", "a1", "a2"),
        ("START TRANSACTION", "b1", "b2"),
    ] {
        let mut s = connect(&proxy.url(None)).await;
        run_all(&mut s, &[open]).await;
        s.exec_drop("INSERT INTO rc.t (v) VALUES (?)", (before,))
            .await
            .unwrap();
        s.reset().await.unwrap();
        let autocommit: Option<i64> = s.query_first("SELECT @@autocommit").await.unwrap();
        assert_eq!(autocommit, Some(1), "after {open}");
        s.exec_drop("INSERT INTO rc.t (v) VALUES (?)", (after,))
            .await
            .unwrap();
        drop(s);
    }
    // (`c` may read on a follower: every replica catches up with the other sessions first.)
    assert_replicas_identical(&dbs, &mut c, &["rc.t"]).await;
    let rows: Vec<String> = c.query("SELECT v FROM rc.t ORDER BY id").await.unwrap();
    assert_eq!(rows, ["a2", "b2"]);
}

/// A DDL on one of the session's temporary tables stays on the primary, but MariaDB still
/// commits the open transaction before it (even when the DDL then fails); only CREATE and
/// DROP TEMPORARY TABLE leave it open. The proxy kept the transaction's writes pending
/// while the primary had committed them: the primary kept rows no follower ever got (the
/// mutation test found it with an `INSERT` under autocommit off, then `CREATE INDEX` on a
/// temporary table hiding a regular one). Now the writes are logged before such a DDL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_on_a_temporary_table_commits_the_transaction_on_every_replica() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE tt",
            "CREATE TABLE tt.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))",
        ],
    )
    .await;
    // Each with the server error it ends with, if any: the second fails (no such column)
    // after the implicit commit.
    let committing = [
        ("CREATE INDEX i ON tmp (a)", None),
        ("CREATE INDEX i ON tmp (missing)", Some(1072)),
        ("ALTER TABLE tmp ADD COLUMN b INT", None),
        // MariaDB syntax the proxy's parser does not take: its table is read by keywords.
        ("ALTER TABLE tmp ADD COLUMN IF NOT EXISTS c INT", None),
        ("TRUNCATE TABLE tmp", None),
        ("DROP TABLE tmp", None),
        // Renamed, it stays the session's own (it was refused with 1235).
        ("RENAME TABLE tmp TO tmp_renamed", None),
        ("ALTER TABLE tmp RENAME TO tmp_altered", None),
    ];
    let mut kept = Vec::new();
    for (n, (ddl, error)) in committing.into_iter().enumerate() {
        for open in ["SET autocommit = 0", "BEGIN"] {
            let mut s = connect(&proxy.url(Some("tt"))).await;
            let v = format!("{n} {open}");
            run_all(&mut s, &["CREATE TEMPORARY TABLE tmp (a INT)", open]).await;
            s.exec_drop("INSERT INTO t (v) VALUES (?)", (&v,))
                .await
                .unwrap();
            let done = s.query_drop(ddl).await;
            assert_eq!(done.err().map(|e| server_code(&e)), error, "{ddl}");
            let open_after: Option<i64> = s.query_first("SELECT @@in_transaction").await.unwrap();
            assert_eq!(open_after, Some(0), "{ddl} after {open}");
            s.query_drop("ROLLBACK").await.unwrap();
            kept.push(v);
        }
    }
    // CREATE and DROP TEMPORARY TABLE do not commit: the ROLLBACK takes the row back.
    for ddl in [
        "CREATE TEMPORARY TABLE tmp2 (a INT)",
        "DROP TEMPORARY TABLE tmp",
    ] {
        let mut s = connect(&proxy.url(Some("tt"))).await;
        run_all(
            &mut s,
            &[
                "CREATE TEMPORARY TABLE tmp (a INT)",
                "BEGIN",
                "INSERT INTO t (v) VALUES ('rolled back')",
                ddl,
                "ROLLBACK",
            ],
        )
        .await;
    }
    // The renamed table is still the session's temporary one: its writes stay on the
    // primary (logged, they would quarantine the followers, which lack it).
    let mut s = connect(&proxy.url(Some("tt"))).await;
    run_all(
        &mut s,
        &[
            "CREATE TEMPORARY TABLE tmp (a INT)",
            "RENAME TABLE tmp TO tmp_renamed",
            "INSERT INTO tmp_renamed VALUES (1)",
            "ALTER TABLE tmp_renamed RENAME TO tmp_again",
            "INSERT INTO tmp_again VALUES (2)",
        ],
    )
    .await;
    let n: Option<i64> = s.query_first("SELECT SUM(a) FROM tmp_again").await.unwrap();
    assert_eq!(n, Some(3));
    assert_replicas_identical(&dbs, &mut c, &["tt.t"]).await;
    let rows: Vec<String> = c.query("SELECT v FROM tt.t ORDER BY id").await.unwrap();
    assert_eq!(rows, kept);
}

/// A statement that begins, ends or commits a transaction, takes table locks or changes
/// the database or a setting does so inside EXECUTE IMMEDIATE or PREPARE/EXECUTE too (the
/// server runs them all there), and through the binary protocol. The proxy forwarded them
/// as opaque EXECUTEs: an `EXECUTE IMMEDIATE 'ROLLBACK'` left the proxy holding writes the
/// primary had dropped (a later COMMIT logged them to the followers only), an `EXECUTE
/// IMMEDIATE 'COMMIT'` committed on the primary alone, and BACKUP STAGE / BACKUP LOCK
/// committed on the primary without a record. Now each reaches the log as the statement
/// would. SHUTDOWN, which would stop the primary behind the client's back, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_statements_inside_execute_act_on_every_replica() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ex",
            "CREATE TABLE ex.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), \
             ts TIMESTAMP NULL)",
        ],
    )
    .await;
    let cases: &[&[&str]] = &[
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('rolled1')",
            "EXECUTE IMMEDIATE 'ROLLBACK'",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept1')",
            "EXECUTE IMMEDIATE 'COMMIT'",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('rolled2')",
            "PREPARE r FROM 'ROLLBACK'",
            "EXECUTE r",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept2')",
            "EXECUTE IMMEDIATE 'BEGIN'",
            "ROLLBACK",
        ],
        &[
            "SET autocommit = 0",
            "INSERT INTO ex.t (v) VALUES ('kept3')",
            "EXECUTE IMMEDIATE 'SET autocommit = 1'",
            "ROLLBACK",
        ],
        &[
            "EXECUTE IMMEDIATE 'SET autocommit = 0'",
            "INSERT INTO ex.t (v) VALUES ('rolled3')",
            "ROLLBACK",
        ],
        &[
            "EXECUTE IMMEDIATE 'START TRANSACTION'",
            "INSERT INTO ex.t (v) VALUES ('rolled4')",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept4')",
            "SAVEPOINT a",
            "INSERT INTO ex.t (v) VALUES ('rolled5')",
            "EXECUTE IMMEDIATE 'ROLLBACK TO SAVEPOINT a'",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept5')",
            "EXECUTE IMMEDIATE 'LOCK TABLES ex.t WRITE'",
            "ROLLBACK",
            "UNLOCK TABLES",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept6')",
            "BACKUP STAGE START",
            "BACKUP STAGE END",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept7')",
            "EXECUTE IMMEDIATE 'BACKUP STAGE START'",
            "BACKUP STAGE END",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('kept8')",
            "BACKUP LOCK ex.t",
            "BACKUP UNLOCK",
            "ROLLBACK",
        ],
        &[
            "EXECUTE IMMEDIATE 'USE ex'",
            "INSERT INTO t (v) VALUES ('kept9')",
        ],
        // The chained transaction is the primary's next one: its ROLLBACK takes it back.
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('chained1')",
            "COMMIT AND CHAIN",
            "INSERT INTO ex.t (v) VALUES ('rolled6')",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('chained2')",
            "EXECUTE IMMEDIATE 'COMMIT AND CHAIN'",
            "INSERT INTO ex.t (v) VALUES ('rolled7')",
            "ROLLBACK",
        ],
        &[
            "SET completion_type = 1",
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('chained3')",
            "COMMIT AND NO CHAIN",
            "INSERT INTO ex.t (v) VALUES ('unchained')",
            "ROLLBACK",
        ],
        &[
            "EXECUTE IMMEDIATE 'SET time_zone = ''+05:00'''",
            "INSERT INTO ex.t (v, ts) VALUES ('kept10', '2020-01-01 05:00:00')",
        ],
    ];
    for case in cases {
        let mut s = connect(&proxy.url(None)).await;
        run_all(&mut s, case).await;
    }
    // The same through the binary protocol (sysbench and most drivers prepare BEGIN/COMMIT).
    let mut s = connect(&proxy.url(None)).await;
    for (sql, kept) in [("ROLLBACK", 0), ("BACKUP STAGE START", 1)] {
        s.query_drop("BEGIN").await.unwrap();
        let v = format!("bin {sql}");
        s.exec_drop("INSERT INTO ex.t (v) VALUES (?)", (&v,))
            .await
            .unwrap();
        s.exec_drop(sql, ()).await.unwrap();
        run_all(&mut s, &["ROLLBACK"]).await;
        if sql.starts_with("BACKUP") {
            s.query_drop("BACKUP STAGE END").await.unwrap();
        }
        let n: Option<i64> = s
            .exec_first("SELECT COUNT(*) FROM ex.t WHERE v = ?", (&v,))
            .await
            .unwrap();
        assert_eq!(n, Some(kept), "{sql}");
    }
    for sql in ["SHUTDOWN", "EXECUTE IMMEDIATE 'SHUTDOWN'"] {
        let err = s.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    // A mangled COMMIT is the server's syntax error and commits nothing (it was logged and
    // its garbage text sent to the primary as the COMMIT).
    run_all(
        &mut s,
        &["BEGIN", "INSERT INTO ex.t (v) VALUES ('mangled commit')"],
    )
    .await;
    let err = s.query_drop("COMMIT AND CHAIN x").await.unwrap_err();
    assert_eq!(server_code(&err), 1064, "{err}");
    run_all(&mut s, &["ROLLBACK"]).await;
    // COMMIT RELEASE commits, answers, then ends the session, as MySQL's does.
    run_all(
        &mut s,
        &[
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('released')",
            "COMMIT RELEASE",
        ],
    )
    .await;
    assert!(
        s.query_drop("SELECT 1").await.is_err(),
        "the session outlived COMMIT RELEASE"
    );
    // Under completion_type = 2 the proxy's own commits (an autocommit write's, a DDL's
    // row in the log) end nothing: before, each DDL made the primary close its connection.
    let opened = global_status(&dbs[0], "Connections").await;
    let mut s = connect(&proxy.url(None)).await;
    s.query_drop("SET completion_type = 2").await.unwrap();
    for i in 0..5 {
        run_all(
            &mut s,
            &[
                &format!("INSERT INTO ex.t (v) VALUES ('autocommit {i}')"),
                &format!("CREATE TABLE ex.ddl{i} (a INT)"),
            ],
        )
        .await;
    }
    run_all(&mut s, &["SELECT 1"]).await;
    let reconnects = global_status(&dbs[0], "Connections").await - opened;
    assert!(reconnects < 4, "{reconnects} connections opened for 5 DDL");
    // A plain COMMIT or ROLLBACK then ends the client's session (not the backend
    // connection, which the proxy pooled dead: the next login failed with 9003).
    for (set, end, v) in [
        (
            "SET completion_type = 2",
            "COMMIT",
            "released by completion",
        ),
        (
            "SET completion_type = 'RELEASE'",
            "ROLLBACK",
            "rolled back by release",
        ),
        ("DO 0", "ROLLBACK RELEASE", "rolled back with release"),
    ] {
        let mut s = connect(&proxy.url(None)).await;
        let insert = format!("INSERT INTO ex.t (v) VALUES ('{v}')");
        run_all(&mut s, &[set, "BEGIN", &insert, end]).await;
        match s.query_drop("SELECT 1").await {
            Err(mysql_async::Error::Server(e)) => panic!("{set}; {end}: {e}"),
            Err(_) => {}
            Ok(()) => panic!("{set}; {end}: the session went on"),
        }
    }
    let mut s = connect(&proxy.url(None)).await;
    run_all(
        &mut s,
        &[
            "SET completion_type = 2",
            "BEGIN",
            "INSERT INTO ex.t (v) VALUES ('released by a prepared COMMIT')",
        ],
    )
    .await;
    s.exec_drop("COMMIT", ()).await.unwrap();
    assert!(
        matches!(s.query_drop("SELECT 1").await, Err(e) if !matches!(e, mysql_async::Error::Server(_))),
        "the session outlived a prepared COMMIT under completion_type = 2"
    );
    let mut s = connect(&proxy.url(None)).await;
    run_all(&mut s, &["INSERT INTO ex.t (v) VALUES ('pool intact')"]).await;
    assert_replicas_identical(&dbs, &mut c, &["ex.t"]).await;
    let rows: Vec<(String, Option<String>)> = c
        .query(
            "SELECT v, CAST(CONVERT_TZ(ts, @@time_zone, '+00:00') AS CHAR) FROM ex.t ORDER BY id",
        )
        .await
        .unwrap();
    let kept: Vec<&str> = rows.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        kept,
        [
            "kept1",
            "kept2",
            "kept3",
            "kept4",
            "kept5",
            "kept6",
            "kept7",
            "kept8",
            "kept9",
            "chained1",
            "chained2",
            "chained3",
            "unchained",
            "kept10",
            "bin BACKUP STAGE START",
            "released",
            "autocommit 0",
            "autocommit 1",
            "autocommit 2",
            "autocommit 3",
            "autocommit 4",
            "released by completion",
            "released by a prepared COMMIT",
            "pool intact"
        ]
    );
    assert_eq!(rows[13].1.as_deref(), Some("2020-01-01 00:00:00"));
}

/// A deadlock on a locking read (not a write) inside a transaction rolls the whole
/// transaction back on the primary, and so does a lock wait timeout under
/// `innodb_rollback_on_timeout`. The proxy kept the transaction's earlier writes and logged
/// them at the client's COMMIT: the followers got rows the primary had dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_primary_rolled_back_on_an_error_leaves_no_record() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    dbs[0].restart_with(&["--innodb-rollback-on-timeout=1"]);
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE dl",
            "CREATE TABLE dl.k (id INT PRIMARY KEY)",
            "CREATE TABLE dl.t (id INT PRIMARY KEY)",
            "INSERT INTO dl.k VALUES (1), (2)",
        ],
    )
    .await;
    for binary in [false, true] {
        let base = if binary { 1000 } else { 0 };
        let mut victim = connect(&proxy.url(None)).await;
        let mut other = connect(&proxy.url(None)).await;
        // The victim is the transaction with fewer changes: one row against fifty.
        run_all(&mut victim, &["BEGIN"]).await;
        victim
            .query_drop(format!("INSERT INTO dl.t VALUES ({})", base + 1))
            .await
            .unwrap();
        run_all(
            &mut victim,
            &["SELECT id FROM dl.k WHERE id = 1 FOR UPDATE"],
        )
        .await;
        let rows: Vec<String> = (0..50).map(|i| format!("({})", base + 100 + i)).collect();
        run_all(
            &mut other,
            &[
                "BEGIN",
                &format!("INSERT INTO dl.t VALUES {}", rows.join(", ")),
                "SELECT id FROM dl.k WHERE id = 2 FOR UPDATE",
            ],
        )
        .await;
        let waiting = tokio::spawn(async move {
            run_all(
                &mut other,
                &["SELECT id FROM dl.k WHERE id = 1 FOR UPDATE", "COMMIT"],
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let locking = "SELECT id FROM dl.k WHERE id = 2 FOR UPDATE";
        let err = if binary {
            victim.exec_drop(locking, ()).await.unwrap_err()
        } else {
            victim.query_drop(locking).await.unwrap_err()
        };
        assert_eq!(server_code(&err), 1213, "{err}");
        waiting.await.unwrap();
        // Nothing of the victim's is left to commit.
        victim.query_drop("COMMIT").await.unwrap();
        victim
            .query_drop(format!("INSERT INTO dl.t VALUES ({})", base + 2))
            .await
            .unwrap();
    }
    // A lock wait timeout, on a locking read and on a write.
    let mut holder = connect(&proxy.url(None)).await;
    run_all(
        &mut holder,
        &["BEGIN", "SELECT id FROM dl.k WHERE id = 1 FOR UPDATE"],
    )
    .await;
    for (n, waits) in [
        (3, "SELECT id FROM dl.k WHERE id = 1 FOR UPDATE"),
        (4, "UPDATE dl.k SET id = 5 WHERE id = 1"),
    ] {
        let mut s = connect(&proxy.url(None)).await;
        run_all(
            &mut s,
            &[
                "SET innodb_lock_wait_timeout = 1",
                "BEGIN",
                &format!("INSERT INTO dl.t VALUES ({n})"),
            ],
        )
        .await;
        let err = s.query_drop(waits).await.unwrap_err();
        assert_eq!(server_code(&err), 1205, "{err}");
        run_all(&mut s, &["COMMIT"]).await;
    }
    run_all(&mut holder, &["COMMIT"]).await;
    assert_replicas_identical(&dbs, &mut c, &["dl.t", "dl.k"]).await;
    let ids: Vec<i64> = c
        .query("SELECT id FROM dl.t WHERE id < 100 OR id BETWEEN 1000 AND 1099 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, [2, 1002]);
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM dl.t").await.unwrap();
    assert_eq!(n, Some(2 * 51));
}

/// A stored program may end the transaction it runs in. On the primary a ROLLBACK inside a
/// CALL ends the calling session's transaction only; a follower that applied the CALL's
/// record in a batch with other sessions' records rolled those back too, and marked them
/// applied (silently: a procedure doing ROLLBACK, called in a loop beside six writers, left
/// the followers with 10,752 of 18,636 rows). Such records now go in a batch of their own.
/// Also: an exit handler's `ROLLBACK; RESIGNAL` ends the caller's transaction, so its
/// earlier writes leave no record; the procedure check read `mysql.proc` (Aria) inside the
/// client's transaction, after which every SAVEPOINT in it failed with 1178; and a
/// procedure whose body creates a temporary table was taken for temporary-table DDL and
/// created on the primary only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_programs_that_end_transactions_replicate_as_on_the_primary() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sp",
            "CREATE TABLE sp.t (v VARCHAR(40) PRIMARY KEY)",
            "CREATE PROCEDURE sp.rb() BEGIN ROLLBACK; END",
            "CREATE PROCEDURE sp.guarded(x VARCHAR(40)) BEGIN \
             DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END; \
             INSERT INTO sp.t VALUES (x); END",
            "CREATE PROCEDURE sp.undo() BEGIN SAVEPOINT s; \
             INSERT INTO sp.t VALUES ('undone'); ROLLBACK TO SAVEPOINT s; END",
            "CREATE PROCEDURE sp.scratch() BEGIN \
             CREATE TEMPORARY TABLE IF NOT EXISTS tt (a INT); DROP TEMPORARY TABLE tt; END",
            "CREATE PROCEDURE sp.st(x VARCHAR(40)) BEGIN \
             START TRANSACTION; INSERT INTO sp.t VALUES (x); END",
            "CREATE PROCEDURE sp.st_or_rb(x VARCHAR(40)) BEGIN \
             IF x = 'undo' THEN ROLLBACK; END IF; START TRANSACTION; \
             INSERT INTO sp.t VALUES (x); END",
            // The same, one CALL deeper (unqualified: the caller's database).
            "CREATE PROCEDURE sp.outer_st(x VARCHAR(40)) BEGIN CALL st(x); END",
            "CREATE PROCEDURE sp.outer_st_or_rb(x VARCHAR(40)) \
             BEGIN SET @s = 'CALL sp.st_or_rb(?)'; PREPARE s FROM @s; EXECUTE s USING x; END",
            "INSERT INTO sp.t VALUES ('taken')",
        ],
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (url, stop) = (proxy.url(None), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&url).await;
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                s.exec_drop("INSERT INTO sp.t VALUES (?)", (format!("w{w}-{k}"),))
                    .await
                    .unwrap();
                k += 1;
            }
        }));
    }
    let (url, stopping) = (proxy.url(None), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut s = connect(&url).await;
        while !stopping.load(Ordering::Relaxed) {
            s.query_drop("CALL sp.rb()").await.unwrap();
        }
    }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut s = connect(&proxy.url(None)).await;
    run_all(
        &mut s,
        &[
            "BEGIN",
            "INSERT INTO sp.t VALUES ('dropped by the handler')",
        ],
    )
    .await;
    let err = s.query_drop("CALL sp.guarded('taken')").await.unwrap_err();
    assert_eq!(server_code(&err), 1062, "{err}");
    run_all(
        &mut s,
        &[
            "COMMIT",
            "BEGIN",
            "INSERT INTO sp.t VALUES ('kept')",
            "SAVEPOINT mine",
            "CALL sp.undo()",
            "CALL sp.scratch()",
            "INSERT INTO sp.t VALUES ('rolled back to mine')",
            "ROLLBACK TO SAVEPOINT mine",
            "COMMIT",
        ],
    )
    .await;
    // A START TRANSACTION inside a CALL commits the caller's pending writes on the primary
    // part-way through, unseen (before, a ROLLBACK after it left 'before the call' on the
    // primary alone): they are committed first, and the CALL runs in the next transaction,
    // which the ROLLBACK takes back, as on MariaDB. A body that may also roll back is
    // refused then.
    run_all(
        &mut s,
        &[
            "BEGIN",
            "INSERT INTO sp.t VALUES ('before the call')",
            "CALL sp.st('in the call')",
            "ROLLBACK",
            "BEGIN",
            "CALL sp.st('called first')",
            "COMMIT",
            "BEGIN",
            "INSERT INTO sp.t VALUES ('before a call that may roll back')",
        ],
    )
    .await;
    let err = s.query_drop("CALL sp.st_or_rb('x')").await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    run_all(
        &mut s,
        &[
            "ROLLBACK",
            "BEGIN",
            "INSERT INTO sp.t VALUES ('before a nested call')",
            "CALL sp.outer_st('in the nested call')",
            "ROLLBACK",
            "BEGIN",
            "INSERT INTO sp.t VALUES ('before a nested call that may roll back')",
        ],
    )
    .await;
    let err = s
        .query_drop("CALL sp.outer_st_or_rb('y')")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    run_all(&mut s, &["ROLLBACK"]).await;
    assert_replicas_identical(&dbs, &mut c, &["sp.t"]).await;
    let rows: Vec<String> = c
        .query("SELECT v FROM sp.t WHERE v NOT LIKE 'w%' ORDER BY v")
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            "before a nested call",
            "before the call",
            "called first",
            "kept",
            "taken"
        ]
    );
    let writes: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM sp.t WHERE v LIKE 'w%'")
        .await
        .unwrap();
    assert!(writes.unwrap_or(0) > 100, "{writes:?}");
}

/// ANALYZE, OPTIMIZE and REPAIR TABLE reach every replica, as MariaDB's binlog carries them
/// to its replicas: histograms collected through the proxy are there for the followers'
/// plans (before, only the server the statement ran on had them). LOCAL stays where it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_maintenance_reaches_every_replica() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE st",
            "CREATE TABLE st.a (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE st.b (id INT PRIMARY KEY, v INT)",
            "INSERT INTO st.a VALUES (1, 1), (2, 2), (3, 2)",
            "INSERT INTO st.b VALUES (1, 1)",
            "USE st",
        ],
    )
    .await;
    let stats: Vec<mysql_async::Row> = c.query("ANALYZE TABLE a PERSISTENT FOR ALL").await.unwrap();
    assert!(!stats.is_empty());
    c.query_drop("ANALYZE LOCAL TABLE st.b PERSISTENT FOR ALL")
        .await
        .unwrap();
    c.query_drop("OPTIMIZE TABLE st.a").await.unwrap();
    // The first replica is the primary.
    let primary = 0;
    let count = |table: &'static str| {
        format!("SELECT COUNT(*) FROM mysql.column_stats WHERE db_name = 'st' AND table_name = '{table}'")
    };
    for (i, db) in dbs.iter().enumerate() {
        let mut d = connect(&db.url(None)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: Option<i64> = d.query_first(count("a")).await.unwrap();
            if n == Some(2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i}: {n:?} column stats of st.a"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let local: Option<i64> = d.query_first(count("b")).await.unwrap();
        assert_eq!(local, Some(if i == primary { 2 } else { 0 }), "replica {i}");
    }
}

/// OPTIMIZE TABLE during writes: the proxy runs it on every replica, where it rebuilds the
/// table and waits for an exclusive metadata lock. A follower's apply batch that read the
/// table and then wrote it deadlocked with it there (1213), and the follower was
/// quarantined: with both quarantined, writes stopped (no quorum). Now a lock conflict on a
/// follower applies the batch again (fuzz seed 263 found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_table_during_writes_quarantines_no_follower() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ot",
            "CREATE TABLE ot.t (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE ot.u (id INT AUTO_INCREMENT PRIMARY KEY, n INT)",
            "USE ot",
            "INSERT INTO ot.t SELECT seq, 0 FROM seq_1_to_2000",
        ],
    )
    .await;
    let until = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for k in 0..4u32 {
        let url = proxy.url(None);
        tasks.push(tokio::spawn(async move {
            let mut w = connect(&url).await;
            let mut i = 0u32;
            while Instant::now() < until {
                i += 1;
                // Reads the table, then writes it: a follower's batch holds a read
                // metadata lock on it and then asks for a write one.
                w.query_drop("INSERT INTO ot.u (n) SELECT COUNT(*) FROM ot.t WHERE v >= 0")
                    .await
                    .unwrap();
                w.query_drop(format!(
                    "UPDATE ot.t SET v = v + 1 WHERE id = {}",
                    1 + (i * 7 + k) % 2000
                ))
                .await
                .unwrap();
            }
        }));
    }
    let url = proxy.url(None);
    tasks.push(tokio::spawn(async move {
        let mut o = connect(&url).await;
        while Instant::now() < until {
            let _: Vec<mysql_async::Row> = o.query("OPTIMIZE TABLE ot.t").await.unwrap();
        }
    }));
    for t in tasks {
        t.await.unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["ot.t", "ot.u"]).await;
}

/// The first column of `sql`'s rows, as integers.
async fn ids(c: &mut Conn, sql: &str) -> Vec<i64> {
    c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A write reading with SKIP LOCKED acts, on the primary, on the rows no other transaction
/// holds; a follower replaying it alone skips none. It quarantined every follower (2
/// affected rows there, 1 on the primary) and so stopped all writes. Now it is refused
/// with 1235, as is a procedure using it, while the job-queue pattern (a locking read with
/// SKIP LOCKED, then writes by key) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reading_with_skip_locked_are_refused() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE q",
            "CREATE TABLE q.jobs (id INT PRIMARY KEY, taken INT NOT NULL DEFAULT 0)",
            "CREATE TABLE q.done (id INT PRIMARY KEY)",
            "INSERT INTO q.jobs (id) VALUES (1), (2), (3)",
        ],
    )
    .await;
    let mut holder = connect(&proxy.url(None)).await;
    run_all(
        &mut holder,
        &["BEGIN", "SELECT * FROM q.jobs WHERE id = 1 FOR UPDATE"],
    )
    .await;
    for write in [
        "INSERT INTO q.done SELECT id FROM q.jobs FOR UPDATE SKIP LOCKED",
        "UPDATE q.jobs SET taken = 1 WHERE id IN \
         (SELECT id FROM q.done LOCK IN SHARE MODE SKIP LOCKED)",
    ] {
        let err = c.query_drop(write).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{write}: {err}");
        assert!(err.to_string().contains("SKIP LOCKED"), "{err}");
    }
    let err = c
        .query_drop(
            "CREATE PROCEDURE q.take() BEGIN DECLARE j INT; \
             SELECT id INTO j FROM q.jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED; \
             UPDATE q.jobs SET taken = 1 WHERE id = j; END",
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    // The queue pattern: a locking read skips the held job, the write names its key.
    run_all(&mut c, &["BEGIN"]).await;
    let free: Vec<i64> = c
        .query("SELECT id FROM q.jobs ORDER BY id FOR UPDATE SKIP LOCKED")
        .await
        .unwrap();
    assert_eq!(free, [2, 3]);
    run_all(
        &mut c,
        &["UPDATE q.jobs SET taken = 1 WHERE id = 2", "COMMIT"],
    )
    .await;
    run_all(&mut holder, &["COMMIT"]).await;
    let done: Option<i64> = c.query_first("SELECT COUNT(*) FROM q.done").await.unwrap();
    assert_eq!(done, Some(0));
    assert_replicas_identical(&dbs, &mut c, &["q.jobs", "q.done"]).await;
}

/// `PROXY CHECKSUM TABLE` computes a table's checksum on every replica at the same point of
/// the log (a write through the log, as pt-table-checksum does over statement replication),
/// so replicas match while writes go on, and a replica changed behind the proxy's back is
/// reported as differing. `PROXY CHECKSUM DATABASE` does so for each of a database's
/// tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_checksum_table_compares_replicas_at_one_point_of_the_log() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ck",
            // Columns of several collations and types: hashed as bytes.
            "CREATE TABLE ck.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), n INT NULL, \
             u VARCHAR(20) COLLATE utf8mb4_unicode_ci, l VARCHAR(20) CHARACTER SET latin1, \
             b BLOB, d DECIMAL(8,3), j JSON, at DATETIME(6))",
            "INSERT INTO ck.t (v, n, u, l, b, d, j, at) VALUES \
             ('a', 1, 'é', 'é', x'00ff', 1.5, '{\"k\": [1]}', NOW(6)), ('', NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL), (NULL, 0, '', '', '', 0, '[]', '2024-01-01')",
        ],
    )
    .await;
    let url = proxy.url(None);
    let writer = tokio::spawn(async move {
        let mut w = connect(&url).await;
        for i in 0..150 {
            w.exec_drop("INSERT INTO ck.t (v, n) VALUES (?, ?)", ("w", i))
                .await
                .unwrap();
        }
    });
    for _ in 0..3 {
        let rows = checksum(&mut c, "PROXY CHECKSUM TABLE ck.t").await;
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].5, "primary", "{rows:?}");
        for r in &rows[1..] {
            assert_eq!(r.5, "same as the primary", "{rows:?}");
            assert_eq!((r.3, r.4), (rows[0].3, rows[0].4), "{rows:?}");
        }
    }
    writer.await.unwrap();
    // The session's schema is used when the table is not qualified.
    c.query_drop("USE ck").await.unwrap();
    let rows = checksum(&mut c, "PROXY CHECKSUM TABLE t").await;
    assert_eq!(rows[0].3, Some(153), "{rows:?}");
    // A change made on one follower directly, outside the proxy.
    let mut direct = connect(&dbs[2].url(None)).await;
    direct
        .query_drop("UPDATE ck.t SET n = NULL WHERE id = 1")
        .await
        .unwrap();
    let rows = checksum(&mut c, "PROXY CHECKSUM TABLE ck.t").await;
    assert_eq!(rows[1].5, "same as the primary", "{rows:?}");
    assert_eq!(
        rows[2].5, "DIFFERS from the primary in 1 of 2 chunks: id <= 153",
        "{rows:?}"
    );
    // In chunks of 50 rows by the integer key, each its own write (shared locks on 50 rows
    // at a time); the answer names the chunk that differs.
    c.query_drop("SET myquorum_checksum_chunk_rows = 50")
        .await
        .unwrap();
    let rows = checksum(&mut c, "PROXY CHECKSUM TABLE ck.t").await;
    assert_eq!(rows[0].3, Some(153), "{rows:?}");
    assert_eq!(rows[1].5, "same as the primary", "{rows:?}");
    assert_eq!(
        rows[2].5, "DIFFERS from the primary in 1 of 5 chunks: id <= 50",
        "{rows:?}"
    );
    // A table without an integer key is read in one write.
    run_all(
        &mut c,
        &[
            "CREATE TABLE ck.s (k VARCHAR(10) PRIMARY KEY, v INT)",
            "INSERT INTO ck.s VALUES ('a', 1), ('b', 2)",
        ],
    )
    .await;
    let rows = checksum(&mut c, "PROXY CHECKSUM TABLE ck.s").await;
    assert!(
        rows[1..].iter().all(|r| r.5 == "same as the primary"),
        "{rows:?}"
    );
    assert_eq!(rows[0].3, Some(2), "{rows:?}");
    // The answers' rows are gone from every replica.
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let left: Option<i64> = d
            .query_first("SELECT COUNT(*) FROM myquorum.checksums")
            .await
            .unwrap();
        assert_eq!(left, Some(0), "{}", db.addr());
    }
    let err = c
        .query_drop("SET myquorum_checksum_chunk_rows = 0")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1231, "{err}");
    let err = c
        .query_drop("PROXY CHECKSUM TABLE ck.missing")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1146, "{err}");
    let err = c.query_drop("PROXY CHECKSUM ck.t").await.unwrap_err();
    assert_eq!(server_code(&err), 1064, "{err}");
    // A whole database, table by table (pt-table-checksum's default scope): the follower
    // changed directly differs in ck.t only; a view is no table to check.
    let changed = rows[2].1;
    c.query_drop("CREATE VIEW ck.v AS SELECT id FROM ck.t")
        .await
        .unwrap();
    for sql in ["PROXY CHECKSUM DATABASE ck", "PROXY CHECKSUM SCHEMA"] {
        let rows: Vec<DatabaseChecksumRow> = c.query(sql).await.unwrap();
        let tables: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(tables, BTreeSet::from(["ck.s", "ck.t"]), "{rows:?}");
        assert_eq!(rows.len(), 6, "{rows:?}");
        let differing: Vec<(&str, Option<u32>)> = rows
            .iter()
            .filter(|r| r.5.starts_with("DIFFERS"))
            .map(|r| (r.0.as_str(), r.1))
            .collect();
        assert_eq!(differing, [("ck.t", Some(changed))], "{rows:?}");
    }
    for (sql, code) in [
        ("PROXY CHECKSUM DATABASE mysql", 1235),
        ("PROXY CHECKSUM DATABASE no_such_db", 1049),
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), code, "{sql}: {err}");
    }
    c.query_drop("BEGIN").await.unwrap();
    let err = c.query_drop("PROXY CHECKSUM TABLE ck.t").await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    c.query_drop("ROLLBACK").await.unwrap();
}

type ChecksumRow = (String, u32, String, Option<u64>, Option<u64>, String);

/// The isolation level a session reads as its own (`@@tx_isolation`; SHOW VARIABLES must
/// agree, as `@@session.tx_isolation` under an alias), and the one the server runs its
/// connection at (information_schema, which the proxy does not rewrite).
async fn isolation_levels(c: &mut Conn) -> [String; 2] {
    let (shown, scoped): (String, String) = c
        .query_first("SELECT @@tx_isolation, @@SESSION.tx_isolation AS lvl")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown, scoped);
    let listed: Vec<(String, String)> = c
        .query("SHOW VARIABLES WHERE variable_name IN ('transaction_isolation', 'tx_isolation')")
        .await
        .unwrap();
    assert_eq!(listed, [("tx_isolation".to_string(), shown.clone())]);
    let running: String = c
        .query_first(
            "SELECT VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES \
             WHERE VARIABLE_NAME = 'TX_ISOLATION'",
        )
        .await
        .unwrap()
        .unwrap();
    [shown, running]
}

/// A `PROXY CHECKSUM DATABASE` row: a table that could not be checked has no replica.
type DatabaseChecksumRow = (
    String,
    Option<u32>,
    Option<String>,
    Option<u64>,
    Option<u64>,
    String,
);

/// The rows of a `PROXY CHECKSUM TABLE`.
async fn checksum(c: &mut Conn, sql: &str) -> Vec<ChecksumRow> {
    c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What Django does on MariaDB: every connection asks for READ COMMITTED, and every
/// `Model.objects.create()` is an `INSERT … RETURNING id`. The proxy raises the isolation
/// level to REPEATABLE READ (a weaker one would let statement replay diverge) instead of
/// refusing the connection's first statement, and carries the ids a RETURNING insert
/// generated, which no OK packet reports. Before, Django could not connect, and once the
/// primary had an auto-increment gap (a rolled-back insert), RETURNING inserts got other
/// ids on the followers, until a foreign key failed there and both were quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sessions_and_insert_returning_replicate() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "CREATE DATABASE dj",
            "CREATE TABLE dj.customer (id INT AUTO_INCREMENT PRIMARY KEY, \
             name VARCHAR(20) NOT NULL UNIQUE)",
            "CREATE TABLE dj.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, \
             FOREIGN KEY (customer) REFERENCES dj.customer (id))",
        ],
    )
    .await;
    // The session runs REPEATABLE READ, wherever the read goes, and reads back the level
    // it asked for, as Django and SQLAlchemy do.
    for _ in 0..3 {
        assert_eq!(
            isolation_levels(&mut c).await,
            ["READ-COMMITTED", "REPEATABLE-READ"]
        );
    }
    c.query_drop("SET @@session.tx_isolation = 'READ-UNCOMMITTED'")
        .await
        .unwrap();
    assert_eq!(
        isolation_levels(&mut c).await,
        ["READ-UNCOMMITTED", "REPEATABLE-READ"]
    );
    // Read in a text of several statements, each answered in order.
    let mut answers = c
        .query_iter("SELECT 1; SELECT @@tx_isolation; SHOW VARIABLES LIKE 'tx_isolation'")
        .await
        .unwrap();
    let one: Vec<i32> = answers.collect().await.unwrap();
    let read: Vec<String> = answers.collect().await.unwrap();
    let listed: Vec<(String, String)> = answers.collect().await.unwrap();
    drop(answers);
    assert_eq!((one, read), (vec![1], vec!["READ-UNCOMMITTED".to_string()]));
    assert_eq!(listed, [("tx_isolation".into(), "READ-UNCOMMITTED".into())]);
    let err = c
        .query_drop("SET tx_isolation = CONCAT('READ-', 'COMMITTED')")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    // Gaps on the primary only: a rolled-back insert and a duplicate.
    run_all(
        &mut c,
        &[
            "BEGIN",
            "INSERT INTO dj.customer (name) VALUES ('rolled back')",
            "ROLLBACK",
        ],
    )
    .await;
    c.query_drop("INSERT INTO dj.customer (name) VALUES ('a')")
        .await
        .unwrap();
    assert!(c
        .query_drop("INSERT INTO dj.customer (name) VALUES ('a') RETURNING id")
        .await
        .is_err());
    let ids: Vec<i32> = c
        .query("INSERT INTO dj.customer (name) VALUES ('b'), ('c') RETURNING id")
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let id: Option<i32> = c
        .exec_first(
            "INSERT INTO dj.customer (name) VALUES (?) RETURNING id",
            ("d",),
        )
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let in_tx: Option<i32> = c
        .query_first("INSERT INTO dj.customer (name) VALUES ('e') RETURNING id")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    for customer in ids.iter().chain(&id).chain(&in_tx) {
        c.query_drop(format!(
            "INSERT INTO dj.orders (customer) VALUES ({customer})"
        ))
        .await
        .unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["dj.customer", "dj.orders"]).await;
    let raised = proxy
        .ctx
        .counters
        .isolation_raised
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(raised, 2);
}

/// A READ COMMITTED session's plain reads see what is committed when they start as long as
/// its transaction has not begun on the server, which runs REPEATABLE READ (its first read
/// would fix the snapshot every later read sees): a read after another session's commit
/// sees it, and a Django `get_or_create` that lost its race inside `transaction.atomic()`
/// finds the winner's row. Once the transaction began, its reads run in it and see its own
/// writes; running reads outside it neither commits nor releases anything of it. A
/// REPEATABLE READ session keeps its snapshot. Before, every session read one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_transaction_reads_each_commit_until_it_begins_on_the_server() {
    common::init_tracing();
    let (dbs, proxy, mut other) = three_replicas().await;
    run_all(
        &mut other,
        &[
            "CREATE DATABASE rc",
            "CREATE TABLE rc.t (id INT PRIMARY KEY, v INT NOT NULL)",
            "INSERT INTO rc.t VALUES (1, 10)",
        ],
    )
    .await;
    let value = "SELECT v FROM rc.t WHERE id = 1";
    for (level, sees_commits) in [("READ COMMITTED", true), ("REPEATABLE READ", false)] {
        for (start, end) in [
            ("BEGIN", "COMMIT"),
            ("SET autocommit = 0", "COMMIT"),
            ("START TRANSACTION READ WRITE", "COMMIT"),
        ] {
            let case = format!("{level}, {start}");
            let mut c = connect(&proxy.url(None)).await;
            c.query_drop(format!("SET SESSION TRANSACTION ISOLATION LEVEL {level}"))
                .await
                .unwrap();
            c.query_drop(start).await.unwrap();
            let first: i32 = c.query_first(value).await.unwrap().unwrap();
            other
                .query_drop("UPDATE rc.t SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
            let second: i32 = c.query_first(value).await.unwrap().unwrap();
            other
                .query_drop("UPDATE rc.t SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
            // A prepared read too.
            let third: i32 = c.exec_first(value, ()).await.unwrap().unwrap();
            let seen = if sees_commits { 1 } else { 0 };
            assert_eq!((second - first, third - second), (seen, seen), "{case}");
            // get_or_create: another session created the row first.
            other
                .query_drop("INSERT INTO rc.t VALUES (2, 20)")
                .await
                .unwrap();
            c.query_drop("SAVEPOINT s").await.unwrap();
            let err = c
                .query_drop("INSERT INTO rc.t VALUES (2, 99)")
                .await
                .unwrap_err();
            assert_eq!(server_code(&err), 1062, "{case}: {err}");
            c.query_drop("ROLLBACK TO SAVEPOINT s").await.unwrap();
            let found: Option<i64> = c
                .query_first("SELECT COUNT(*) FROM rc.t WHERE id = 2")
                .await
                .unwrap();
            assert_eq!(found, Some(i64::from(seen)), "{case}");
            // Its own write is read back, and committed with the transaction.
            c.query_drop("UPDATE rc.t SET v = v + 100 WHERE id = 1")
                .await
                .unwrap();
            let own: i32 = c.query_first(value).await.unwrap().unwrap();
            assert_eq!(own, first + 102, "{case}");
            c.query_drop(end).await.unwrap();
            // (Another session's commit: `other` reads it where everything logged is.)
            let committed: i32 = other
                .query_first(format!("/* myquorum=strong */ {value}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(committed, own, "{case}");
            other
                .query_drop("DELETE FROM rc.t WHERE id = 2")
                .await
                .unwrap();
        }
    }
    let outside = proxy
        .ctx
        .counters
        .read_committed_reads
        .load(Ordering::Relaxed);
    // Two reads and the prepared one in each READ COMMITTED case; the rest ran inside.
    assert_eq!(outside, 9);
    // The session says what it asked for.
    let mut asked = connect(&proxy.url(None)).await;
    let session_row = |rows: Vec<(String, Option<String>)>| {
        rows.into_iter()
            .find(|(k, _)| k == "isolation_asked")
            .and_then(|(_, v)| v)
    };
    for (set, want) in [
        (None, "server default"),
        (
            Some("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            "READ-COMMITTED",
        ),
        (
            Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            "SERIALIZABLE",
        ),
    ] {
        if let Some(sql) = set {
            asked.query_drop(sql).await.unwrap();
        }
        let rows = asked.query("SHOW PROXY SESSION").await.unwrap();
        assert_eq!(session_row(rows).as_deref(), Some(want), "{set:?}");
    }
    // A level for the next transaction only (Go's `BeginTx` with an isolation level, Rails'
    // `transaction(isolation:)`): that transaction reads each commit, the next one does
    // not; SERIALIZABLE's reads (which lock) stay in its transaction.
    let outside_reads = || {
        proxy
            .ctx
            .counters
            .read_committed_reads
            .load(Ordering::Relaxed)
    };
    let mut g = connect(&proxy.url(None)).await;
    for (next, seen, ran_outside) in [
        (Some("READ COMMITTED"), 1, 2),
        (None, 0, 0),
        (Some("SERIALIZABLE"), 0, 0),
    ] {
        let before = outside_reads();
        if let Some(level) = next {
            g.query_drop(format!("SET TRANSACTION ISOLATION LEVEL {level}"))
                .await
                .unwrap();
        }
        g.query_drop("START TRANSACTION").await.unwrap();
        let first: i32 = g.query_first(value).await.unwrap().unwrap();
        if next != Some("SERIALIZABLE") {
            other
                .query_drop("UPDATE rc.t SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
        }
        let second: i32 = g.query_first(value).await.unwrap().unwrap();
        g.query_drop("COMMIT").await.unwrap();
        assert_eq!(second - first, seen, "{next:?}");
        assert_eq!(outside_reads() - before, ran_outside, "{next:?}");
    }
    // Reads run outside never end the transaction: a write, then reads, then ROLLBACK
    // leaves nothing; a locking read keeps its lock through later reads.
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET autocommit = 0",
        ],
    )
    .await;
    for round in 0..2 {
        let _: Option<i32> = c.query_first(value).await.unwrap();
        // What reads the session's own state runs where that state is (not between the
        // SETs of autocommit around a read run outside).
        let autocommit: Option<i64> = c.query_first("SELECT @@autocommit").await.unwrap();
        assert_eq!(autocommit, Some(0), "round {round}");
        c.query_drop("INSERT INTO rc.t VALUES (3, 30)")
            .await
            .unwrap();
        let mine: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM rc.t WHERE id = 3")
            .await
            .unwrap();
        assert_eq!(mine, Some(1), "round {round}");
        let _: Option<i32> = c.query_first(value).await.unwrap();
        c.query_drop("ROLLBACK").await.unwrap();
        let left: Option<i64> = other
            .query_first("/* myquorum=strong */ SELECT COUNT(*) FROM rc.t WHERE id = 3")
            .await
            .unwrap();
        assert_eq!(left, Some(0), "round {round}");
    }
    let _: Option<i32> = c
        .query_first("SELECT v FROM rc.t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let _: Option<i32> = c.query_first(value).await.unwrap();
    let _: Option<i64> = c.query_first("SELECT COUNT(*) FROM rc.t").await.unwrap();
    waits_for_a_lock(&mut other, "UPDATE rc.t SET v = 0 WHERE id = 1").await;
    c.query_drop("ROLLBACK").await.unwrap();
    other
        .query_drop("UPDATE rc.t SET v = 0 WHERE id = 1")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut other, &["rc.t"]).await;
}

/// Concurrent READ COMMITTED transfers, half with autocommit off (the proxy runs their
/// leading reads between `SET autocommit = 1` and `= 0`) and half after BEGIN (ahead of it),
/// with reads, savepoints rolled back to, duplicate-key errors, deadlocks, and a random
/// COMMIT or ROLLBACK: every replica ends with exactly the balances of the transfers whose
/// COMMIT succeeded. A read run outside that committed or released anything of a
/// transaction would show here as a rolled-back transfer's money moved, or a follower
/// quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_transfers_leave_every_replica_at_the_committed_balances() {
    common::init_tracing();
    const ACCOUNTS: usize = 6;
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE rt",
            "CREATE TABLE rt.acct (id INT PRIMARY KEY, bal INT NOT NULL)",
            "CREATE TABLE rt.memo (tag VARCHAR(20) PRIMARY KEY)",
            "INSERT INTO rt.acct VALUES (0, 1000), (1, 1000), (2, 1000), (3, 1000), (4, 1000), (5, 1000)",
        ],
    )
    .await;
    let expected = Arc::new(std::sync::Mutex::new(vec![1000i64; ACCOUNTS]));
    let mut workers = Vec::new();
    for w in 0..6u64 {
        let url = proxy.url(None);
        let expected = expected.clone();
        workers.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .unwrap();
            let autocommit_off = w % 2 == 0;
            if autocommit_off {
                c.query_drop("SET autocommit = 0").await.unwrap();
            }
            // A small LCG: the same choices on every run.
            let mut seed = w * 7919 + 17;
            let mut next = move |n: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
            for i in 0..60 {
                let x = next(ACCOUNTS as u64) as usize;
                let y = (x + 1 + next(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let amount = 1 + next(40) as i64;
                let (reads, savepoint, commit) = (next(3), next(3) == 0, next(10) < 7);
                let run = async {
                    if !autocommit_off {
                        c.query_drop("BEGIN").await?;
                    }
                    for _ in 0..reads {
                        let _: Option<i64> = c
                            .query_first(format!("SELECT bal FROM rt.acct WHERE id = {}", next(6)))
                            .await?;
                    }
                    c.query_drop(format!(
                        "UPDATE rt.acct SET bal = bal - {amount} WHERE id = {x}"
                    ))
                    .await?;
                    // Its own write read back: in the transaction.
                    let _: Option<i64> = c
                        .query_first(format!("SELECT bal FROM rt.acct WHERE id = {x}"))
                        .await?;
                    if savepoint {
                        c.query_drop("SAVEPOINT s").await?;
                        c.query_drop(format!(
                            "UPDATE rt.acct SET bal = bal + 1000 WHERE id = {y}"
                        ))
                        .await?;
                        c.query_drop("ROLLBACK TO SAVEPOINT s").await?;
                        let _: Option<i64> = c.query_first("SELECT SUM(bal) FROM rt.acct").await?;
                    }
                    c.query_drop(format!(
                        "UPDATE rt.acct SET bal = bal + {amount} WHERE id = {y}"
                    ))
                    .await?;
                    // Tags repeat: some inserts fail, and the transaction goes on.
                    let _ = c
                        .query_drop(format!("INSERT INTO rt.memo VALUES ('w{w}-{}')", i % 5))
                        .await;
                    c.query_drop(if commit { "COMMIT" } else { "ROLLBACK" })
                        .await?;
                    Ok::<(), mysql_async::Error>(())
                };
                match run.await {
                    Ok(()) if commit => {
                        let mut e = expected.lock().unwrap();
                        e[x] -= amount;
                        e[y] += amount;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        // A deadlock or lock wait ends the transfer; nothing of it stays.
                        assert!(matches!(server_code(&e), 1213 | 1205), "worker {w}: {e}");
                        c.query_drop("ROLLBACK").await.unwrap();
                    }
                }
                // A read-only transaction now and then.
                if next(4) == 0 {
                    if !autocommit_off {
                        c.query_drop("BEGIN").await.unwrap();
                    }
                    let _: Option<i64> =
                        c.query_first("SELECT SUM(bal) FROM rt.acct").await.unwrap();
                    c.query_drop("COMMIT").await.unwrap();
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["rt.acct", "rt.memo"]).await;
    let want = expected.lock().unwrap().clone();
    for db in &dbs {
        let mut direct = connect(&db.url(None)).await;
        let balances: Vec<i64> = direct
            .query("SELECT bal FROM rt.acct ORDER BY id")
            .await
            .unwrap();
        assert_eq!(balances, want, "{}", db.addr());
    }
    let outside = proxy
        .ctx
        .counters
        .read_committed_reads
        .load(Ordering::Relaxed);
    assert!(outside > 100, "{outside} reads ran outside a transaction");
}

/// A server whose default isolation is READ COMMITTED (`transaction-isolation` in its
/// my.cnf) still runs every session's writes at REPEATABLE READ: the proxy raises each
/// data-path connection when it opens it and after each COM_RESET_CONNECTION; sessions
/// that ask for no level get READ COMMITTED's reads where the proxy can give them. Before, such
/// a primary ran a session's `UPDATE … WHERE k > 5` without gap locks, another session's
/// insert of k = 7 committed first, and both followers, replaying the insert before the
/// update, were quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_defaulting_to_read_committed_runs_writes_at_repeatable_read() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in &dbs {
        let mut direct = connect(&db.url(None)).await;
        direct
            .query_drop("SET GLOBAL tx_isolation = 'READ-COMMITTED'")
            .await
            .unwrap();
    }
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE gi",
            "CREATE TABLE gi.t (k INT PRIMARY KEY, v INT NOT NULL)",
            "INSERT INTO gi.t VALUES (1, 0), (6, 0)",
        ],
    )
    .await;
    // New connections, and connections reset for sessions of other settings.
    let mut sessions = Vec::new();
    for i in 0..6 {
        let mut s = connect(&proxy.url(None)).await;
        if i % 2 == 1 {
            s.query_drop("SET SESSION sql_mode = 'ANSI'").await.unwrap();
        }
        s.query_drop("BEGIN").await.unwrap();
        // It reads the server's default as its level, as there; it runs above it.
        let levels = isolation_levels(&mut s).await;
        assert_eq!(levels, ["READ-COMMITTED", "REPEATABLE-READ"], "session {i}");
        sessions.push(s);
    }
    for mut s in sessions {
        s.query_drop("COMMIT").await.unwrap();
        s.disconnect().await.unwrap();
    }
    for i in 0..6 {
        let mut s = connect(&proxy.url(None)).await;
        if i % 2 == 0 {
            s.query_drop("SET SESSION sql_mode = 'ANSI'").await.unwrap();
        }
        s.query_drop("BEGIN").await.unwrap();
        let levels = isolation_levels(&mut s).await;
        assert_eq!(
            levels,
            ["READ-COMMITTED", "REPEATABLE-READ"],
            "reused, session {i}"
        );
        s.query_drop("COMMIT").await.unwrap();
    }
    // Sessions that ask for no level read as on that server (each read of a transaction
    // not begun sees the last commit); one that asks for REPEATABLE READ keeps its snapshot.
    for (ask, sees) in [(None, 1), (Some("REPEATABLE READ"), 0)] {
        let mut s = connect(&proxy.url(None)).await;
        if let Some(level) = ask {
            s.query_drop(format!("SET SESSION TRANSACTION ISOLATION LEVEL {level}"))
                .await
                .unwrap();
            let levels = isolation_levels(&mut s).await;
            assert_eq!(levels, ["REPEATABLE-READ", "REPEATABLE-READ"]);
        }
        s.query_drop("BEGIN").await.unwrap();
        let read = "SELECT v FROM gi.t WHERE k = 1";
        let before: i32 = s.query_first(read).await.unwrap().unwrap();
        c.query_drop("UPDATE gi.t SET v = v + 1 WHERE k = 1")
            .await
            .unwrap();
        let after: i32 = s.query_first(read).await.unwrap().unwrap();
        assert_eq!(after - before, sees, "{ask:?}");
        s.query_drop("COMMIT").await.unwrap();
    }
    // The phantom: the insert waits for the update's gap lock.
    let mut writer = connect(&proxy.url(None)).await;
    run_all(
        &mut writer,
        &["BEGIN", "UPDATE gi.t SET v = v + 1 WHERE k > 5"],
    )
    .await;
    let mut inserter = connect(&proxy.url(None)).await;
    waits_for_a_lock(&mut inserter, "INSERT INTO gi.t VALUES (7, 0)").await;
    writer.query_drop("COMMIT").await.unwrap();
    inserter
        .query_drop("INSERT INTO gi.t VALUES (7, 0)")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["gi.t"]).await;
}

/// Rails' connection set-up computes sql_mode from the server's own
/// (`CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO')`). The proxy
/// evaluates it on the backend and keeps the result as a literal setting, so the session is
/// not pinned (its reads still go to replicas) and its writes replay with the primary's
/// sql_mode: with NO_AUTO_VALUE_ON_ZERO an explicit id 0 is stored as 0 on every replica,
/// where a follower without it would have generated a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computed_sql_mode_is_kept_as_a_literal_and_does_not_pin_the_session() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, \
             @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO'), \
             @@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483",
            "CREATE DATABASE rails",
            "CREATE TABLE rails.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(3) NOT NULL)",
            "INSERT INTO rails.t (id, v) VALUES (0, 'z'), (NULL, 'a')",
        ],
    )
    .await;
    // Strict mode on the primary: a value too long is an error, not a truncation.
    let err = c
        .query_drop("INSERT INTO rails.t (v) VALUES ('toolong')")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1406, "{err}");
    let mode: Option<String> = c.query_first("SELECT @@sql_mode").await.unwrap();
    let mode = mode.unwrap();
    assert!(
        mode.contains("STRICT_ALL_TABLES") && mode.contains("NO_AUTO_VALUE_ON_ZERO"),
        "{mode}"
    );
    // Not pinned: plain reads reach the followers.
    let follower_reads = || -> u64 {
        proxy
            .ctx
            .cluster
            .pools()
            .filter(|(_, r, _)| r.0 != 0)
            .map(|(_, _, p)| p.reads.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let before = follower_reads();
    for _ in 0..60 {
        let m: Option<String> = c.query_first("SELECT @@sql_mode").await.unwrap();
        assert_eq!(
            m.as_deref(),
            Some(mode.as_str()),
            "a replica ran another sql_mode"
        );
        let v: Option<String> = c
            .query_first("SELECT v FROM rails.t WHERE id = 0")
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("z"));
    }
    eprintln!(
        "{} of the reads reached a follower",
        follower_reads() - before
    );
    // Routed as replica reads, never to a pinned connection. (Which replica serves one is
    // the fastest fresh one, which on a loaded machine can be the primary for all of them,
    // so the count above is not asserted.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _: Option<String> = c
            .query_first("SELECT v FROM rails.t WHERE id = 0")
            .await
            .unwrap();
        let explained: Vec<mysql_async::Row> = c.query("EXPLAIN LAST STATEMENT").await.unwrap();
        let target: String = explained[0].get("target").unwrap();
        assert!(
            !target.contains("pinned"),
            "the session was pinned: {target}"
        );
        if target.contains("replica read") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no read was routed to a replica: {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_replicas_identical(&dbs, &mut c, &["rails.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let ids: Vec<i32> = d.query("SELECT id FROM rails.t ORDER BY id").await.unwrap();
        assert_eq!(ids, [0, 1], "{}", db.addr());
    }
}

/// Column DEFAULTs and stored programs are evaluated by each replica on its own, where the
/// statement's recorded context does not reach: `DEFAULT UUID()` (MariaDB's UUID type),
/// `DEFAULT (RAND())`, a trigger that sets `NEW.u = UUID()`, a procedure inserting
/// `UUID()`. Each left every replica with its own values (primary keys included), silently;
/// they are refused with the reason. What the recorded context does fix still works:
/// `DEFAULT CURRENT_TIMESTAMP` filled in by an ALTER, `RAND(seed)`, and `UUID()` in a text
/// INSERT (rewritten to a literal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_evaluated_per_replica_are_refused() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE nd",
            "CREATE TABLE nd.t (id INT PRIMARY KEY, u CHAR(36))",
            "INSERT INTO nd.t VALUES (1, UUID()), (2, NULL)",
            "ALTER TABLE nd.t ADD COLUMN at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
            "ALTER TABLE nd.t ADD COLUMN r DOUBLE NOT NULL DEFAULT (RAND(7))",
            "CREATE TRIGGER nd.bi BEFORE INSERT ON nd.t FOR EACH ROW SET NEW.at = NOW(6)",
            "CREATE TABLE nd.log (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT)",
            // An id the trigger gives itself is the same everywhere.
            "CREATE TRIGGER nd.ai AFTER INSERT ON nd.t FOR EACH ROW \
             INSERT INTO nd.log (id, t_id) VALUES (NEW.id, NEW.id)",
            "INSERT INTO nd.t (id) VALUES (3)",
        ],
    )
    .await;
    for sql in [
        "CREATE TABLE nd.k (id UUID DEFAULT UUID() PRIMARY KEY, v INT)",
        "ALTER TABLE nd.t ADD COLUMN s DOUBLE DEFAULT (RAND())",
        "CREATE TABLE nd.c AS SELECT id, UUID_SHORT() AS s FROM nd.t",
        "CREATE TRIGGER nd.bu BEFORE UPDATE ON nd.t FOR EACH ROW SET NEW.u = UUID()",
        "CREATE PROCEDURE nd.p(i INT) INSERT INTO nd.t (id, u) VALUES (i, UUID())",
        "CREATE FUNCTION nd.f() RETURNS BIGINT NO SQL RETURN CONNECTION_ID()",
        // Ids generated inside a stored program are not in the record: concurrent
        // transactions take them in one order on the primary and replay in log order.
        "CREATE TRIGGER nd.au AFTER UPDATE ON nd.t FOR EACH ROW INSERT INTO nd.log (t_id) VALUES (NEW.id)",
        // Naming the column with NULL, 0 or DEFAULT asks for the next id as well (such a
        // trigger gave id 2 on the primary and 1 on both followers after a rollback).
        "CREATE TRIGGER nd.au AFTER UPDATE ON nd.t FOR EACH ROW \
         INSERT INTO nd.log (id, t_id) VALUES (NULL, NEW.id)",
        "CREATE TRIGGER nd.ad AFTER DELETE ON nd.t FOR EACH ROW \
         INSERT INTO nd.log SET t_id = OLD.id, id = 0",
        "CREATE TRIGGER nd.ad AFTER DELETE ON nd.t FOR EACH ROW \
         INSERT INTO nd.log (id, t_id) SELECT NULL, OLD.id",
        // Dynamic SQL written out whole is read as well.
        "CREATE PROCEDURE nd.dyn(i INT) BEGIN \
         PREPARE s FROM 'INSERT INTO nd.log (t_id) VALUES (?)'; EXECUTE s USING i; END",
        // (A procedure's one such insert, run once per CALL, is carried: see
        // `a_procedures_one_generated_id_is_carried`.)
        "CREATE PROCEDURE nd.add(i INT) BEGIN INSERT INTO log VALUES (NULL, i); \
         INSERT INTO log VALUES (NULL, i + 1); END",
        "CREATE PROCEDURE nd.add_each(n INT) BEGIN DECLARE i INT DEFAULT 0; \
         WHILE i < n DO INSERT INTO nd.log (t_id) VALUES (i); SET i = i + 1; END WHILE; END",
        "CREATE FUNCTION nd.g(i INT) RETURNS INT MODIFIES SQL DATA \
         BEGIN REPLACE INTO nd.log SET t_id = i; RETURN 1; END",
        // Each replica would pick its own row: a join no key orders (one table's LIMIT
        // is ordered by its key instead, see
        // `writes_in_stored_programs_pick_and_number_rows_alike_on_every_replica`).
        "CREATE PROCEDURE nd.take() BEGIN DECLARE j INT; \
         SET j = (SELECT a.id FROM nd.t a JOIN nd.log b ON b.t_id = a.id LIMIT 1); \
         UPDATE nd.t SET u = 'taken' WHERE id = j; END",
        "CREATE TABLE nd.first2 AS SELECT * FROM nd.t LIMIT 2",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&err), 1235, "{sql}: {err}");
    }
    // The same kind of procedure made on the servers directly (before the proxy came) is
    // refused when called, text or prepared; one that gives the id itself runs.
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        d.query_drop(
            "CREATE PROCEDURE nd.direct_add(i INT) BEGIN INSERT INTO nd.log (t_id) VALUES (i); \
             INSERT INTO nd.log (t_id) VALUES (i); END",
        )
        .await
        .unwrap();
        d.query_drop(
            "CREATE PROCEDURE nd.direct_add_id(i INT) INSERT INTO nd.log (id, t_id) VALUES (i, i)",
        )
        .await
        .unwrap();
    }
    let err = c.query_drop("CALL nd.direct_add(7)").await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("nd.log"), "{err}");
    c.query_drop("USE nd").await.unwrap();
    let err = c.exec_drop("CALL direct_add(?)", (8,)).await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    c.exec_drop("CALL direct_add_id(?)", (100,)).await.unwrap();
    c.query_drop("CALL nd.direct_add_id(101)").await.unwrap();
    // Reached through another procedure it is refused as well: when the caller is defined
    // through the proxy, and when it is called (made on the servers directly).
    let err = c
        .query_drop("CREATE PROCEDURE nd.via(i INT) CALL direct_add(i)")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("nd.direct_add"), "{err}");
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        d.query_drop("CREATE PROCEDURE nd.via(i INT) BEGIN CALL nd.direct_add_id(i); CALL direct_add(i); END")
            .await
            .unwrap();
    }
    let err = c.query_drop("CALL nd.via(9)").await.unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(
        err.to_string()
            .contains("nd.direct_add (which nd.via calls)"),
        "{err}"
    );
    assert_replicas_identical(&dbs, &mut c, &["nd.t", "nd.log"]).await;
}

/// A procedure whose one insert generates AUTO_INCREMENT ids, run at most once per CALL
/// (the common `add_order(…)` shape), is accepted: the CALL's record carries that insert's
/// first id, read back with LAST_INSERT_ID() on the primary, and each follower replays the
/// CALL after `SET insert_id`. Under concurrent CALLs, rolled-back ones (gaps on the primary
/// only) and plain inserts in between, every replica holds the same ids, and the client sees
/// its row's id after the CALL. A procedure calling such a procedure is refused (its insert
/// is not its own), as is one whose insert may run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedures_one_generated_id_is_carried() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE po",
            "USE po",
            "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(20))",
            "CREATE TABLE order_lines (order_id INT, n INT, PRIMARY KEY (order_id, n))",
            "CREATE PROCEDURE add_order(w VARCHAR(20), k INT) BEGIN \
               INSERT INTO orders (who) VALUES (w); \
               INSERT INTO order_lines VALUES (LAST_INSERT_ID(), k), (LAST_INSERT_ID(), k + 1); END",
            // The insert may not run at all: what the CALL carries then must not reach the
            // next insert on a follower's connection.
            "CREATE PROCEDURE maybe_add(w VARCHAR(20)) BEGIN \
               IF w <> '' THEN INSERT INTO orders (who) VALUES (w), (CONCAT(w, '+')); END IF; END",
        ],
    )
    .await;
    let err = c
        .query_drop("CREATE PROCEDURE two_orders(w VARCHAR(20)) BEGIN CALL add_order(w, 1); END")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("po.add_order"), "{err}");
    let mut clients = Vec::new();
    for w in 0..4u32 {
        let url = proxy.url(Some("po"));
        clients.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            for i in 0..40u32 {
                let who = format!("c{w}_{i}");
                match i % 5 {
                    0 => {
                        c.exec_drop("CALL add_order(?, ?)", (&who, i))
                            .await
                            .unwrap();
                        let id: u64 = c
                            .query_first("SELECT LAST_INSERT_ID()")
                            .await
                            .unwrap()
                            .unwrap();
                        let mine: Option<String> = c
                            .exec_first("SELECT who FROM orders WHERE id = ?", (id,))
                            .await
                            .unwrap();
                        assert_eq!(mine.as_deref(), Some(who.as_str()));
                    }
                    1 => {
                        run_all(
                            &mut c,
                            &[
                                "BEGIN",
                                &format!("CALL add_order('{who}', {i})"),
                                "ROLLBACK",
                            ],
                        )
                        .await
                    }
                    2 => loop {
                        // Later in a transaction the CALL is certified at COMMIT, and
                        // refused when another client wrote `orders` meanwhile: retried.
                        run_all(
                            &mut c,
                            &[
                                "BEGIN",
                                &format!("INSERT INTO orders (who) VALUES ('{who}t')"),
                                &format!("CALL add_order('{who}', {i})"),
                            ],
                        )
                        .await;
                        match c.query_drop("COMMIT").await {
                            Ok(()) => break,
                            Err(e) => assert_eq!(server_code(&e), 1213, "{e}"),
                        }
                    },
                    3 => {
                        run_all(
                            &mut c,
                            &[
                                "CALL maybe_add('')",
                                &format!("INSERT INTO orders (who) VALUES ('{who}p')"),
                            ],
                        )
                        .await
                    }
                    _ => run_all(&mut c, &[&format!("CALL maybe_add('{who}')")]).await,
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["po.orders", "po.order_lines"]).await;
    let (rows, top): (u64, u64) = c
        .query_first("SELECT COUNT(*), MAX(id) FROM po.orders")
        .await
        .unwrap()
        .unwrap();
    // 4 clients × 8 rounds of: 1 + 0 (rolled back) + 2 + 1 + 2 rows.
    assert_eq!(rows, 4 * 8 * 6);
    assert!(
        top > rows,
        "the rolled-back CALLs left gaps on the primary: {top} vs {rows}"
    );
}

/// Multi-megabyte BLOBs (text and prepared) reach every replica byte for byte; followers
/// mark applied records without their payloads travelling again, and a restarted proxy
/// neither re-applies them nor misses any (the marks are what its recovery reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_replicate_and_survive_a_proxy_restart() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE lob",
            "CREATE TABLE lob.f (id INT PRIMARY KEY, body LONGBLOB)",
        ],
    )
    .await;
    let blob: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    c.exec_drop("INSERT INTO lob.f VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    c.query_drop(format!(
        "INSERT INTO lob.f VALUES (2, x'{}')",
        blob[..3_000_000]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
    .await
    .unwrap();
    c.query_drop("UPDATE lob.f SET body = REVERSE(body) WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("ALTER TABLE lob.f ADD COLUMN n INT NOT NULL DEFAULT 7")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["lob.f"]).await;
    for db in &dbs {
        let mut r = connect(&db.url(None)).await;
        let got: Option<Vec<u8>> = r
            .query_first("SELECT body FROM lob.f WHERE id = 1")
            .await
            .unwrap();
        assert!(
            got.as_deref() == Some(&blob[..]),
            "{}: blob differs",
            db.addr()
        );
    }
    drop(c);
    let cfg = proxy.ctx.config.clone();
    drop(proxy);
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = c
        .exec_drop(
            "INSERT INTO lob.f (id, body) VALUES (3, ?)",
            (&blob[..1000],),
        )
        .await
    {
        assert!(
            Instant::now() < deadline,
            "writes did not open after a restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_replicas_identical(&dbs, &mut c, &["lob.f"]).await;
    let rows: Vec<(i32, u64, i32)> = c
        .query("SELECT id, LENGTH(body), n FROM lob.f ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![(1, 6_000_000, 7), (2, 3_000_000, 7), (3, 1000, 7)]
    );
}

/// The primary's session defaults are not the followers': its my.cnf differs (time_zone,
/// sql_mode, auto_increment_increment set on it alone) and a `SET GLOBAL` through the proxy
/// reaches only it. Records carry the primary connection's actual values, so followers
/// write what the primary wrote: DATETIMEs from NOW(), a non-strict truncation, multi-row
/// ids, a database's default character set. (They used DEFAULT, their own globals: other
/// DATETIMEs and character sets, silently.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_write_under_the_primary_connections_settings_not_their_own_defaults() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut direct = connect(&dbs[0].url(None)).await;
    run_all(
        &mut direct,
        &[
            "SET GLOBAL time_zone = '+05:00'",
            "SET GLOBAL sql_mode = ''",
            "SET GLOBAL auto_increment_increment = 5",
            "SET GLOBAL character_set_server = 'utf8mb4'",
            "SET GLOBAL collation_server = 'utf8mb4_unicode_ci'",
        ],
    )
    .await;
    drop(direct);
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE g",
            "CREATE TABLE g.t (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME, code VARCHAR(3))",
            "INSERT INTO g.t (at, code) VALUES (NOW(), 'abcdef'), (NOW(), 'xy')",
            "SET GLOBAL time_zone = '-03:00'",
        ],
    )
    .await;
    // Sessions opened now, several at once so the pool opens new connections, start from
    // the primary's new global.
    let mut writers = Vec::new();
    for i in 0..6 {
        let url = proxy.url(None);
        writers.push(tokio::spawn(async move {
            let mut w = connect(&url).await;
            w.query_drop("BEGIN").await.unwrap();
            w.query_drop(format!("INSERT INTO g.t (at, code) VALUES (NOW(), 'w{i}')"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            w.query_drop("COMMIT").await.unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["g.t"]).await;
    let ids: Vec<i64> = c
        .query("SELECT id FROM g.t ORDER BY id LIMIT 2")
        .await
        .unwrap();
    assert_eq!(ids, vec![1, 6], "the primary's auto_increment_increment");
    let code: Option<String> = c
        .query_first("SELECT code FROM g.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(code.as_deref(), Some("abc"), "sql_mode '' truncates");
    // CREATE DATABASE took the primary's server character set everywhere, and so did the
    // table's columns.
    for db in &dbs {
        let mut r = connect(&db.url(None)).await;
        let collation: Option<String> = r
            .query_first(
                "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = 'g'",
            )
            .await
            .unwrap();
        assert_eq!(
            collation.as_deref(),
            Some("utf8mb4_unicode_ci"),
            "{}",
            db.addr()
        );
    }
    // What `time_zone = SYSTEM` means on each replica is shown (and differing zones are
    // warned about): recovery and the appliers read it from the servers.
    let zones: Vec<(u32, String)> = c
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            let replica: u32 = row.get(1).unwrap();
            (replica, row.get::<String, _>("system_time_zone").unwrap())
        })
        .await
        .unwrap();
    assert_eq!(zones.len(), 3);
    for (replica, zone) in zones {
        let mut r = connect(&dbs[replica as usize].url(None)).await;
        let own: Option<String> = r.query_first("SELECT @@system_time_zone").await.unwrap();
        assert_eq!(Some(zone), own, "replica {replica}");
    }
}

/// A prepared INSERT whose BLOB came as COM_STMT_SEND_LONG_DATA (mysqli's send_long_data,
/// Go's driver for large arguments, C API clients) is replicated: the proxy keeps the
/// chunks and puts them inline into the execute it runs and records. It was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_write_with_long_data_reaches_every_replica() {
    use myquorum::protocol::handshake::{client_handshake, proxy_capabilities};
    use myquorum::protocol::PacketStream;
    use mysql_common::constants::CapabilityFlags;
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ld",
            "CREATE TABLE ld.t (id BIGINT PRIMARY KEY, body LONGBLOB, note VARCHAR(8))",
        ],
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let mut s = PacketStream::new(tcp);
    let caps = proxy_capabilities(false) - CapabilityFlags::CLIENT_DEPRECATE_EOF;
    client_handshake(&mut s, "root", "", None, caps, 45)
        .await
        .unwrap();
    s.write_packet(0, b"\x16INSERT INTO ld.t VALUES (?, ?, ?)")
        .await
        .unwrap();
    let ok = s.read_packet().await.unwrap().payload;
    assert_eq!(ok[0], 0, "{ok:?}");
    let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
    for _ in 0..4 {
        s.read_packet().await.unwrap(); // 3 parameter definitions + EOF
    }
    for round in 0..2u64 {
        for chunk in [&[b'q'; 100_000][..], b"-end"] {
            let mut p = vec![0x18];
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&1u16.to_le_bytes());
            p.extend_from_slice(chunk);
            s.write_packet(0, &p).await.unwrap();
        }
        let mut exec = vec![0x17];
        exec.extend_from_slice(&id.to_le_bytes());
        exec.extend_from_slice(&[0, 1, 0, 0, 0]);
        exec.push(0); // null bitmap
        exec.push(1); // types bound: LONGLONG, BLOB (long data), VAR_STRING
        exec.extend_from_slice(&[8, 0, 0xFC, 0, 0xFD, 0]);
        exec.extend_from_slice(&round.to_le_bytes());
        exec.extend_from_slice(b"\x02ok");
        s.write_packet(0, &exec).await.unwrap();
        let answer = s.read_packet().await.unwrap().payload;
        assert_eq!(answer[..2], [0, 1], "OK, one row: {answer:?}");
    }
    // mysql_async sends a parameter over 16 MiB as long data: the execute the proxy runs is
    // then larger than the client's, and the answer must still come in the client's
    // sequence.
    let big = vec![b'w'; 17_000_000];
    c.exec_drop("INSERT INTO ld.t VALUES (?, ?, 'big')", (2, &big))
        .await
        .unwrap();
    let n: Option<u64> = c.exec_first("SELECT LENGTH(?)", (&big,)).await.unwrap();
    assert_eq!(n, Some(17_000_000));
    assert_replicas_identical(&dbs, &mut c, &["ld.t"]).await;
    let mut r = connect(&dbs[2].url(None)).await;
    let rows: Vec<(u64, u64, String, String)> = r
        .query("SELECT id, LENGTH(body), RIGHT(body, 5), note FROM ld.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (0, 100_004, "q-end".to_string(), "ok".to_string()),
            (1, 100_004, "q-end".to_string(), "ok".to_string()),
            (2, 17_000_000, "wwwww".to_string(), "big".to_string()),
        ]
    );
}

/// The primary refuses a record's `myquorum.wal` row while its transaction goes on (here a
/// trigger planted on the primary; in life a lock wait timeout or a full disk): the write
/// must not commit there without its row, or the repair that follows (the row is what says
/// the primary has the record) applies it a second time. Autocommit and explicit
/// transactions alike: the client hears OK (the quorum holds the record), the primary is
/// repaired once, and every replica ends with each row once. A DDL, which cannot be rolled
/// back, has its row stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_refusing_its_log_row_applies_the_write_once() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE lr",
            "CREATE TABLE lr.t (v INT)", // no key: a second application shows as a second row
            "INSERT INTO lr.t VALUES (1)",
        ],
    )
    .await;
    let mut primary = connect(&dbs[0].url(None)).await;
    run_all(
        &mut primary,
        &[
            // MyISAM: disarming survives the refused statement's rollback.
            "CREATE TABLE myquorum.fault (armed INT) ENGINE=MyISAM",
            "INSERT INTO myquorum.fault VALUES (0)",
            "CREATE TRIGGER myquorum.refuse_row BEFORE INSERT ON myquorum.wal FOR EACH ROW \
             BEGIN IF (SELECT armed FROM myquorum.fault) = 1 THEN \
             UPDATE myquorum.fault SET armed = 0; \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected: no log row'; END IF; END",
        ],
    )
    .await;
    // A DDL cannot be rolled back: its row is stored again. Last, so that a primary
    // without it would not converge (no later record would cover the hole).
    let writes: [&[&str]; 4] = [
        &["INSERT INTO lr.t VALUES (2)"],
        &["BEGIN", "INSERT INTO lr.t VALUES (3)", "COMMIT"],
        &["INSERT INTO lr.t VALUES (4)"], // once the primary was repaired, again
        &["CREATE TABLE lr.u (x INT)"],
    ];
    for statements in writes {
        primary
            .query_drop("UPDATE myquorum.fault SET armed = 1")
            .await
            .unwrap();
        run_all(&mut c, statements).await;
        let armed: Option<i64> = primary
            .query_first("SELECT armed FROM myquorum.fault")
            .await
            .unwrap();
        assert_eq!(armed, Some(0), "the primary did not refuse {statements:?}");
        // The primary is repaired in the background: armed again before that, the trigger
        // would refuse the repair rather than the next write.
        wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    }
    assert_replicas_identical(&dbs, &mut c, &["lr.t", "lr.u"]).await;
    let values: Vec<i64> = primary
        .query("SELECT v FROM lr.t ORDER BY v")
        .await
        .unwrap();
    assert_eq!(values, [1, 2, 3, 4]);
}

/// `Com_alter_table + Com_create_table + Com_create_db` of a server.
async fn schema_changes(db: &MariaDb) -> u64 {
    let mut c = connect(&db.url(None)).await;
    let n: Option<u64> = c
        .query_first(
            "SELECT SUM(variable_value) FROM information_schema.global_status WHERE \
             variable_name IN ('COM_ALTER_TABLE', 'COM_CREATE_TABLE', 'COM_CREATE_DB')",
        )
        .await
        .unwrap();
    n.unwrap_or(0)
}

/// A `myquorum.wal` left by an older myquorum (no `applied`/`parts` columns, no
/// `wal_part` table) is brought up to date when the proxy starts; a proxy starting on
/// replicas whose log tables are current runs no DDL on them at all (a no-op `ALTER … IF
/// NOT EXISTS` per connect takes the table's metadata lock, against a rebuild's copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tables_are_upgraded_once_and_then_left_alone() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    for db in &dbs {
        let mut c = connect(&db.url(None)).await;
        c.query_drop("CREATE DATABASE myquorum").await.unwrap();
        c.query_drop(
            "CREATE TABLE myquorum.wal (shard INT UNSIGNED NOT NULL, ts BIGINT UNSIGNED NOT \
             NULL, payload LONGBLOB NOT NULL, PRIMARY KEY (shard, ts)) ENGINE=InnoDB",
        )
        .await
        .unwrap();
    }
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let cfg = config_for(&all);
    let proxy = Proxy::start(cfg.clone());
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE up",
            "CREATE TABLE up.t (id INT PRIMARY KEY, v LONGBLOB)",
            "INSERT INTO up.t VALUES (1, 'a')",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["up.t"]).await;
    for db in &dbs {
        assert_eq!(column_count(db, "myquorum.wal").await, 5, "{}", db.addr());
        assert_eq!(
            column_count(db, "myquorum.wal_part").await,
            4,
            "{}",
            db.addr()
        );
    }
    drop(c);
    drop(proxy);

    let mut before = Vec::new();
    for db in &dbs {
        before.push(schema_changes(db).await);
    }
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("INSERT INTO up.t VALUES (2, 'b')")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["up.t"]).await;
    let mut after = Vec::new();
    for db in &dbs {
        after.push(schema_changes(db).await);
    }
    assert_eq!(before, after, "schema statements run by a restarted proxy");
}

/// Every file under `dir`, recursively, concatenated.
fn bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(bytes_under(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    all
}

/// Account management through the proxy reaches every replica (each has its own `mysql`
/// schema), with the clear-text passwords replaced by their hashes before anything goes
/// into the log: neither the proxy's WAL nor any replica's `myquorum.wal` holds them, and
/// the account logs in to any replica directly with its password. An account name's host
/// (`'app'@'%'`) is no user variable and does not pin the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_replicate_with_their_passwords_hashed() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let cfg = config_for(&all);
    let wal_dir = std::path::PathBuf::from(&cfg.replication.wal_dir);
    let proxy = Proxy::start(cfg);
    let mut c = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE app",
            "CREATE TABLE app.t (id INT PRIMARY KEY)",
            "CREATE USER 'app'@'%' IDENTIFIED BY 'it''s-secret-1'",
        ],
    )
    .await;
    let last: mysql_async::Row = c
        .query_first("EXPLAIN LAST STATEMENT")
        .await
        .unwrap()
        .unwrap();
    let flags: String = last.get("flags").unwrap();
    assert!(!flags.contains("USER_VARIABLE"), "{flags}");
    let shown: String = last.get("statement").unwrap();
    assert_eq!(shown, "CREATE USER 'app'@'%' IDENTIFIED BY <secret>");
    run_all(
        &mut c,
        &[
            "GRANT SELECT, INSERT ON app.* TO 'app'@'%'",
            "ALTER USER 'app'@'%' IDENTIFIED BY 'secret-2'",
            "SET PASSWORD FOR 'app'@'%' = PASSWORD('secret-3')",
            "CREATE ROLE reporting",
            "GRANT SELECT ON app.* TO reporting",
            "GRANT reporting TO 'app'@'%'",
            "SET DEFAULT ROLE reporting FOR 'app'@'%'",
            "REVOKE INSERT ON app.* FROM 'app'@'%'",
            "CREATE USER 'gone'@'localhost' IDENTIFIED BY 'secret-4'",
            "RENAME USER 'gone'@'localhost' TO 'gone2'@'localhost'",
            "DROP USER 'gone2'@'localhost'",
        ],
    )
    .await;
    let refused = c
        .query_drop("CREATE USER 'e'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('secret-5')")
        .await
        .unwrap_err();
    assert_eq!(server_code(&refused), 1235, "{refused}");
    // This session runs as the proxy's own backend account: its password is the proxy's.
    let refused = c
        .query_drop("SET PASSWORD = PASSWORD('secret-6')")
        .await
        .unwrap_err();
    assert_eq!(server_code(&refused), 1235, "{refused}");
    wait_converged(&all).await;
    assert_none_quarantined(&mut c).await;

    let mut grants = Vec::new();
    for db in &dbs {
        let mut direct = connect(&db.url(None)).await;
        let g: Vec<String> = direct.query("SHOW GRANTS FOR 'app'@'%'").await.unwrap();
        let accounts: Vec<(String, String)> = direct
            .query("SELECT user, host FROM mysql.user WHERE user IN ('gone', 'gone2', 'e', 'reporting') ORDER BY user")
            .await
            .unwrap();
        assert_eq!(
            accounts,
            [("reporting".to_string(), String::new())],
            "{}",
            db.addr()
        );
        let leaked: u64 = direct
            .query_first("SELECT COUNT(*) FROM myquorum.wal WHERE payload LIKE '%secret%'")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            leaked,
            0,
            "clear-text password in {}'s myquorum.wal",
            db.addr()
        );
        // The account logs in to this replica directly, with its last password.
        let url = format!(
            "mysql://app:secret-3@127.0.0.1:{}/?prefer_socket=false",
            db.port
        );
        let mut app = connect(&url).await;
        let role: Option<String> = app.query_first("SELECT CURRENT_ROLE()").await.unwrap();
        assert_eq!(role.as_deref(), Some("reporting"), "{}", db.addr());
        assert!(app
            .query_drop("INSERT INTO app.t VALUES (1)")
            .await
            .is_err());
        grants.push(g);
    }
    assert_eq!(grants[0], grants[1]);
    assert_eq!(grants[0], grants[2]);
    assert!(
        grants[0]
            .iter()
            .any(|g| g.contains("IDENTIFIED BY PASSWORD '*")),
        "{grants:?}"
    );
    let wal = bytes_under(&wal_dir);
    assert!(!wal.is_empty());
    assert!(
        !wal.windows(6).any(|w| w == b"secret"),
        "clear-text password in the proxy's WAL"
    );
}

/// Runs `write` in a transaction of `c` and says whether the primary was sent a SET for it
/// (in a transaction nothing else is: no autocommit switch, and BEGIN goes as BEGIN). Just
/// before, `other` writes with the clock set, so the followers' replay connection was last
/// given another time than the one `c`'s primary connection may still hold.
async fn write_sets_clock(c: &mut Conn, other: &mut Conn, primary: &MariaDb, write: &str) -> bool {
    other
        .query_drop("INSERT INTO ck.other (at) VALUES (NOW(6))")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.query_drop("BEGIN").await.unwrap();
    let before = global_status(primary, "Com_set_option").await;
    c.query_drop(write)
        .await
        .unwrap_or_else(|e| panic!("{write}: {e}"));
    let after = global_status(primary, "Com_set_option").await;
    c.query_drop("COMMIT").await.unwrap();
    after > before
}

/// A write sets the primary's clock (`SET timestamp`) and carries it only when something may
/// read it: its text (NOW(), an unknown function) or its table (a TIMESTAMP column, a
/// default or ON UPDATE expression, a virtual column, a trigger, a cascading foreign key).
/// Others go without (one command fewer on every replica), and a trigger or default added
/// later counts from that DDL on. Another session's write runs between each two, so a
/// clock left from an earlier statement would give the followers another time than the
/// primary: the replicas must stay identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writes_that_may_read_the_clock_set_it() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    let mut other = connect(&proxy.url(None)).await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ck",
            "CREATE TABLE ck.plain (id INT PRIMARY KEY, v BIGINT)",
            "CREATE TABLE ck.later (id INT PRIMARY KEY, v BIGINT)",
            "CREATE TABLE ck.other (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6))",
            "CREATE TABLE ck.dflt (id INT PRIMARY KEY, v INT, \
               made DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))",
            "CREATE TABLE ck.onupd (id INT PRIMARY KEY, v INT, \
               changed DATETIME(6) NULL ON UPDATE CURRENT_TIMESTAMP(6))",
            "CREATE TABLE ck.ts (id INT PRIMARY KEY, at TIMESTAMP(6) NULL)",
            "CREATE TABLE ck.expr (id INT PRIMARY KEY, \
               micros BIGINT DEFAULT (UNIX_TIMESTAMP(NOW(6)) * 1000000))",
            "CREATE TABLE ck.virt (id INT PRIMARY KEY, v INT, d DATETIME(6), \
               recent INT AS (d > NOW(6) - INTERVAL 1 SECOND) VIRTUAL)",
            "CREATE TABLE ck.trig (id INT PRIMARY KEY, at DATETIME(6))",
            "CREATE TRIGGER ck.trig_at BEFORE INSERT ON ck.trig FOR EACH ROW SET NEW.at = NOW(6)",
            "CREATE TABLE ck.parent (id INT PRIMARY KEY)",
            "CREATE TABLE ck.child (id INT PRIMARY KEY, p INT, \
               changed DATETIME(6) NULL ON UPDATE CURRENT_TIMESTAMP(6), \
               FOREIGN KEY (p) REFERENCES ck.parent (id) ON UPDATE CASCADE)",
            "INSERT INTO ck.parent VALUES (1)",
            "INSERT INTO ck.child (id, p) VALUES (1, 1)",
            "INSERT INTO ck.virt (id, v, d) VALUES (1, 0, '2000-01-01')",
        ],
    )
    .await;
    let primary = &dbs[0];
    // The table facts are read in the background after a write asked: within a few seconds
    // writes to the plain tables go without the clock (other tests' DDL in this process
    // makes them be read again now and then).
    let mut id = 0;
    for table in ["ck.plain", "ck.later"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            id += 1;
            let sql = format!("INSERT INTO {table} VALUES ({id}, {id})");
            if !write_sets_clock(&mut c, &mut other, primary, &sql).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "every write to {table} set the clock"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Each table is written once (which asks for its facts), then again once they were
    // read: both times the clock is set.
    let facts = proxy
        .ctx
        .cluster
        .schema_facts(myquorum::router::ShardId(0))
        .unwrap()
        .clone();
    let tables = [
        "plain", "dflt", "onupd", "ts", "expr", "virt", "trig", "parent", "child",
    ];
    for round in 0..2 {
        if round == 1 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !tables
                .iter()
                .all(|t| facts.knows(&("ck".to_string(), t.to_string())))
            {
                assert!(Instant::now() < deadline, "table facts not read");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let k = 1000 * (round + 1);
        for write in [
            format!("INSERT INTO ck.plain VALUES ({k}, UNIX_TIMESTAMP(NOW(6)) * 1000000)"),
            format!("UPDATE ck.plain SET v = UNIX_TIMESTAMP(NOW(6)) * 1000000 WHERE id = {k}"),
            format!("INSERT INTO ck.dflt (id, v) VALUES ({k}, 1)"),
            format!("INSERT INTO ck.onupd VALUES ({k}, 1, NULL)"),
            format!("UPDATE ck.onupd SET v = v + 1 WHERE id = {k}"),
            format!("INSERT INTO ck.ts VALUES ({k}, NULL)"),
            format!("INSERT INTO ck.expr (id) VALUES ({k})"),
            "UPDATE ck.virt SET v = v + 1 WHERE recent = 0".to_string(),
            format!("INSERT INTO ck.trig (id) VALUES ({k})"),
            "UPDATE ck.parent SET id = id + 1".to_string(),
            format!("INSERT INTO ck.child (id, p) SELECT {k}, id FROM ck.parent"),
        ] {
            assert!(
                write_sets_clock(&mut c, &mut other, primary, &write).await,
                "{write} went without the clock"
            );
        }
    }
    // A plain table gets a default that reads the clock, another a trigger: the next
    // writes to them set it, however soon after.
    run_all(
        &mut c,
        &[
            "ALTER TABLE ck.later ADD COLUMN at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6)",
            "CREATE TRIGGER ck.plain_v BEFORE INSERT ON ck.plain FOR EACH ROW \
               SET NEW.v = UNIX_TIMESTAMP(NOW(6)) * 1000000",
        ],
    )
    .await;
    for write in [
        format!("INSERT INTO ck.later (id, v) VALUES ({}, 1)", id + 1),
        format!("INSERT INTO ck.plain VALUES ({}, 0)", id + 2),
        format!("UPDATE ck.later SET v = 2 WHERE id = {}", id + 1),
    ] {
        assert!(
            write_sets_clock(&mut c, &mut other, primary, &write).await,
            "{write} went without the clock after the DDL"
        );
    }
    assert_replicas_identical(
        &dbs,
        &mut c,
        &[
            "ck.plain",
            "ck.later",
            "ck.other",
            "ck.dflt",
            "ck.onupd",
            "ck.ts",
            "ck.expr",
            "ck.virt",
            "ck.trig",
            "ck.parent",
            "ck.child",
        ],
    )
    .await;
    drop(proxy);
}

/// A session without a default database: MariaDB's answers are its own (NULL for
/// DATABASE(), 1046 for an unqualified name), and followers, whose replay connection may
/// still have an earlier record's database selected, do the same. Before, an unqualified
/// CREATE TABLE made both followers create it in that database (both quarantined, writes
/// stopped), DATABASE() wrote that database's name there, and a write after `DROP
/// DATABASE` of the session's own database quarantined both followers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_a_default_database_replicate_as_on_the_primary() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE nd",
            "CREATE TABLE nd.t (id INT PRIMARY KEY, db VARCHAR(64))",
            "CREATE TABLE nd.keep (id INT)",
            // Followers' replay connections now have `nd` selected.
            "USE nd",
            "INSERT INTO t VALUES (1, DATABASE())",
        ],
    )
    .await;
    let mut none = connect(&proxy.url(None)).await;
    run_all(
        &mut none,
        &[
            "INSERT INTO nd.t VALUES (2, DATABASE())",
            "INSERT INTO nd.t VALUES (3, SCHEMA())",
        ],
    )
    .await;
    none.exec_drop("INSERT INTO nd.t VALUES (?, DATABASE())", (4,))
        .await
        .unwrap();
    for (ddl, code) in [
        ("CREATE TABLE made (a INT)", 1046),
        ("DROP TABLE nd.keep, keep", 1046),
        ("CREATE TABLE nd.copy AS SELECT DATABASE() AS db", 1235),
    ] {
        let e = none.query_drop(ddl).await.unwrap_err();
        assert_eq!(server_code(&e), code, "{ddl}: {e}");
    }
    // Dropping the session's own database leaves it without one.
    run_all(
        &mut c,
        &[
            "CREATE DATABASE gone",
            "USE gone",
            "DROP DATABASE gone",
            "INSERT INTO nd.t VALUES (5, DATABASE())",
        ],
    )
    .await;
    let ids: Vec<(i32, Option<String>)> = c
        .query("SELECT id, db FROM nd.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        ids,
        [
            (1, Some("nd".to_string())),
            (2, None),
            (3, None),
            (4, None),
            (5, None)
        ]
    );
    assert_replicas_identical(&dbs, &mut c, &["nd.t", "nd.keep"]).await;
    assert_on_no_replica(
        &dbs,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_NAME = 'made'",
    )
    .await;
    drop(proxy);
}

/// A session whose database another session dropped keeps it selected, as on MySQL: its
/// unqualified names fail (1146, 1049) while qualified writes, DATABASE() and re-creating
/// the database work. Followers replay its records under the same state; before, their
/// `USE` of the missing database failed and both were quarantined (writes stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_database_another_session_dropped_replicates_as_on_the_primary() {
    common::init_tracing();
    let (dbs, proxy, mut other) = three_replicas().await;
    run_all(
        &mut other,
        &[
            "CREATE DATABASE kept",
            "CREATE TABLE kept.t (id INT PRIMARY KEY, db VARCHAR(64))",
            "CREATE DATABASE gone",
        ],
    )
    .await;
    let mut s = connect(&proxy.url(Some("gone"))).await;
    // A temporary table holds the session on one primary connection, which keeps `gone`
    // selected as MySQL's session does (a pooled connection cannot select it any more).
    run_all(
        &mut s,
        &[
            "CREATE TABLE t (a INT)",
            "CREATE TEMPORARY TABLE pin (a INT)",
        ],
    )
    .await;
    other.query_drop("DROP DATABASE gone").await.unwrap();
    let db: Option<String> = s.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db.as_deref(), Some("gone"));
    s.query_drop("INSERT INTO kept.t VALUES (1, DATABASE())")
        .await
        .unwrap();
    s.exec_drop("INSERT INTO kept.t VALUES (?, DATABASE())", (2,))
        .await
        .unwrap();
    // A transaction: its failed unqualified statement leaves it open.
    s.query_drop("BEGIN").await.unwrap();
    s.query_drop("INSERT INTO kept.t VALUES (3, DATABASE())")
        .await
        .unwrap();
    let e = s.query_drop("INSERT INTO t VALUES (1)").await.unwrap_err();
    assert_eq!(server_code(&e), 1146, "{e}");
    s.query_drop("COMMIT").await.unwrap();
    s.query_drop("CREATE TABLE kept.made AS SELECT DATABASE() AS db")
        .await
        .unwrap();
    let e = s.query_drop("CREATE TABLE unq (a INT)").await.unwrap_err();
    assert_eq!(server_code(&e), 1049, "{e}");
    // Writes from other sessions and databases go on in between.
    other
        .query_drop("INSERT INTO kept.t VALUES (4, DATABASE())")
        .await
        .unwrap();
    run_all(
        &mut s,
        &[
            "CREATE DATABASE gone",
            "CREATE TABLE unq (a INT)",
            "INSERT INTO unq VALUES (7)",
        ],
    )
    .await;
    let rows: Vec<(i32, Option<String>)> = other
        .query("SELECT id, db FROM kept.t ORDER BY id")
        .await
        .unwrap();
    let gone = Some("gone".to_string());
    assert_eq!(
        rows,
        [
            (1, gone.clone()),
            (2, gone.clone()),
            (3, gone.clone()),
            (4, None)
        ]
    );
    assert_replicas_identical(&dbs, &mut other, &["kept.t", "kept.made", "gone.unq"]).await;
    drop(proxy);
}

/// A stored routine or trigger run while the session's database is gone (another session
/// dropped it) cannot switch back to it: MariaDB leaves the session without a database
/// (Note 1049). The proxy took the session for still in it, so its next DATABASE() was
/// NULL on the primary and the database's name on the followers (the mutation test found
/// it, through a trigger); and a follower's replay connection, left without a database the
/// same way, replayed another session's records in that database without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_that_cannot_return_to_a_dropped_database_leaves_the_session_without_one() {
    common::init_tracing();
    let (dbs, proxy, mut other) = three_replicas().await;
    run_all(
        &mut other,
        &[
            "CREATE DATABASE f",
            "CREATE TABLE f.t (id INT PRIMARY KEY, db VARCHAR(64))",
            "CREATE TABLE f.a (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))",
            "CREATE TRIGGER f.up BEFORE INSERT ON f.a FOR EACH ROW SET NEW.v = UPPER(NEW.v)",
            "CREATE FUNCTION f.seven() RETURNS INT DETERMINISTIC RETURN 7",
            "CREATE VIEW f.v AS SELECT f.seven() AS s",
            "CREATE DATABASE zz",
        ],
    )
    .await;
    // Two sessions in `zz`, each held on its primary connection (a user variable), so they
    // keep it selected once it is dropped, as MySQL's sessions do.
    let mut m = connect(&proxy.url(Some("zz"))).await;
    let mut n = connect(&proxy.url(Some("zz"))).await;
    let mut p = connect(&proxy.url(Some("zz"))).await;
    let mut q = connect(&proxy.url(Some("zz"))).await;
    for s in [&mut m, &mut n, &mut p, &mut q] {
        s.query_drop("SET @held = 1").await.unwrap();
    }
    other.query_drop("DROP DATABASE zz").await.unwrap();
    // The trigger runs in `f` and cannot return to `zz`.
    m.query_drop("INSERT INTO f.a (v) VALUES ('x')")
        .await
        .unwrap();
    let db: Option<Option<String>> = m.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db, Some(None));
    // `n` still has it selected, on the primary and (replayed) on the followers.
    n.query_drop("INSERT INTO f.t VALUES (1, DATABASE())")
        .await
        .unwrap();
    // A function called by a write does the same.
    n.query_drop("INSERT INTO f.t VALUES (f.seven(), DATABASE())")
        .await
        .unwrap();
    n.query_drop("INSERT INTO f.t VALUES (2, DATABASE())")
        .await
        .unwrap();
    // A read relayed as it is (in a transaction: on the primary) does the same, through a
    // view calling the function.
    run_all(
        &mut p,
        &[
            "BEGIN",
            "SELECT * FROM f.v",
            "INSERT INTO f.t VALUES (5, DATABASE())",
            "COMMIT",
        ],
    )
    .await;
    // A transaction that stays in it keeps it through its record.
    run_all(
        &mut q,
        &[
            "BEGIN",
            "INSERT INTO f.t VALUES (10, DATABASE())",
            "INSERT INTO f.t VALUES (11, DATABASE())",
            "COMMIT",
        ],
    )
    .await;
    other.query_drop("CREATE DATABASE zz").await.unwrap();
    m.query_drop("INSERT INTO f.t VALUES (3, DATABASE())")
        .await
        .unwrap();
    n.query_drop("INSERT INTO f.t VALUES (4, DATABASE())")
        .await
        .unwrap();
    // `other` reads from a replica with its own writes (session consistency): `n`'s last
    // record may not have reached it yet, so every replica catches up first.
    assert_replicas_identical(&dbs, &mut other, &["f.t", "f.a"]).await;
    let rows: Vec<(i32, Option<String>)> = other
        .query("SELECT id, db FROM f.t ORDER BY id")
        .await
        .unwrap();
    let zz = Some("zz".to_string());
    assert_eq!(
        rows,
        [
            (1, zz.clone()),
            (2, None),
            (3, None),
            (4, None),
            (5, None),
            (7, None),
            (10, zz.clone()),
            (11, zz)
        ]
    );
    drop(proxy);
}

/// A DDL the primary refuses because of the session's own state (LOCK TABLES in force) ran
/// nothing there; followers, whose replay connection holds no such locks, would run it and
/// succeed, and success where the primary failed quarantines them (both: writes stopped).
/// Found by the mutation test in `tests/bad_input.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_refused_for_the_sessions_table_locks_is_not_run_on_followers() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE lk",
            "CREATE TABLE lk.a (id INT)",
            "CREATE TABLE lk.w (id INT)",
            "INSERT INTO lk.w VALUES (1)",
            "CREATE PROCEDURE lk.rb() ROLLBACK",
            "LOCK TABLES lk.a WRITE",
        ],
    )
    .await;
    for (ddl, code) in [
        ("CREATE TABLE lk.b (a INT)", 1100),
        ("TRUNCATE TABLE lk.w", 1100),
        ("CREATE DATABASE lk2", 1192),
    ] {
        let e = c.query_drop(ddl).await.unwrap_err();
        assert_eq!(server_code(&e), code, "{ddl}: {e}");
    }
    // READ locks alone do not cover the log table, so the primary could not store the
    // record's row either: refused before it is logged.
    run_all(&mut c, &["UNLOCK TABLES", "LOCK TABLES lk.a READ"]).await;
    for ddl in [
        "ALTER TABLE lk.a ADD COLUMN y INT",
        "CREATE TABLE lk.r (a INT)",
    ] {
        let e = c.query_drop(ddl).await.unwrap_err();
        assert_eq!(server_code(&e), 1192, "{ddl}: {e}");
    }
    // Nor could it store the row of a write naming no table, which the server would run
    // under READ locks (a CALL): before, the primary's COMMIT then failed, writes paused to
    // repair it, and the session went on with a new connection, without its locks.
    let e = c.query_drop("CALL lk.rb()").await.unwrap_err();
    assert_eq!(server_code(&e), 1192, "{e}");
    let e = c
        .query_drop("INSERT INTO lk.w VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1100, "the session lost its locks: {e}");
    // A LOCK TABLES that fails on a missing table has released the earlier locks first (one
    // refused while parsing has not): the DDL runs, as on MariaDB.
    let e = c
        .query_drop("LOCK TABLES lk.a READ, lk.a WRITE")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1066, "{e}");
    let e = c.query_drop("CREATE TABLE lk.c (a INT)").await.unwrap_err();
    assert_eq!(server_code(&e), 1192, "{e}");
    let e = c
        .query_drop("LOCK TABLES lk.missing READ")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1146, "{e}");
    run_all(
        &mut c,
        &["CREATE TABLE lk.c (a INT)", "INSERT INTO lk.a VALUES (1)"],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["lk.a", "lk.w", "lk.c"]).await;
    // A restart's recovery finds every record's row on the primary: it runs none of the
    // refused DDL statements there.
    drop(c);
    drop(proxy);
    let (proxy, mut c) = restarted_with_write(&dbs, "INSERT INTO lk.a VALUES (2)").await;
    assert_replicas_identical(&dbs, &mut c, &["lk.a", "lk.w", "lk.c"]).await;
    assert_on_no_replica(
        &dbs,
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ('lk', 'lk2') AND TABLE_NAME NOT IN ('a', 'w', 'c') \
         UNION SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'lk2'",
    )
    .await;
    drop(proxy);
}

/// Another session's LOCK TABLES … WRITE holds the log table until UNLOCK TABLES; a session
/// with short lock timeouts (an application's, or a my.cnf's) waits that long for its
/// record's row all the same. Before, the row failed after the DDL had run: a restart then
/// ran the TRUNCATE on the primary a second time and deleted the row written after it
/// there. Found by the mutation test's concurrent session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_short_lock_timeouts_do_not_fail_its_log_rows() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sl",
            "CREATE TABLE sl.locked (id INT)",
            "CREATE TABLE sl.t (id INT PRIMARY KEY)",
            "INSERT INTO sl.t VALUES (1)",
            "LOCK TABLES sl.locked WRITE",
        ],
    )
    .await;
    let mut hasty = connect(&proxy.url(None)).await;
    hasty
        .query_drop(
            "SET SESSION lock_wait_timeout = 1, innodb_lock_wait_timeout = 1, \
             max_statement_time = 1",
        )
        .await
        .unwrap();
    let ddl =
        tokio::spawn(async move { hasty.query_drop("TRUNCATE TABLE sl.t").await.map(|_| hasty) });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!ddl.is_finished(), "the row did not wait for UNLOCK TABLES");
    c.query_drop("UNLOCK TABLES").await.unwrap();
    let mut hasty = ddl.await.unwrap().unwrap();
    run_all(&mut hasty, &["INSERT INTO sl.t VALUES (2)"]).await;
    // A commit's row likewise (before, it failed after the quorum: the primary lacked the
    // acknowledged write and writes paused until it was repaired).
    c.query_drop("LOCK TABLES sl.locked WRITE").await.unwrap();
    let write = tokio::spawn(async move {
        hasty
            .query_drop("INSERT INTO sl.t VALUES (4)")
            .await
            .map(|_| hasty)
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !write.is_finished(),
        "the row did not wait for UNLOCK TABLES"
    );
    c.query_drop("UNLOCK TABLES").await.unwrap();
    let mut hasty = write.await.unwrap().unwrap();
    run_all(&mut hasty, &["DELETE FROM sl.t WHERE id = 4"]).await;
    assert_replicas_identical(&dbs, &mut c, &["sl.t"]).await;
    drop((c, hasty));
    drop(proxy);
    let (proxy, mut c) = restarted_with_write(&dbs, "INSERT INTO sl.t VALUES (3)").await;
    assert_replicas_identical(&dbs, &mut c, &["sl.t"]).await;
    let ids: Vec<i32> = c.query("SELECT id FROM sl.t ORDER BY id").await.unwrap();
    assert_eq!(ids, [2, 3]);
    drop(proxy);
}

/// A session holding LOCK TABLES … WRITE can always go on to its UNLOCK TABLES, whatever
/// other sessions' DDL waits for. Before, DDL statements took turns through the proxy for
/// the whole of their run: another session's DDL whose log row waited for the locked log
/// table, or that itself waited on the primary for a locked table, kept the turn, and the
/// locking session's next DDL waited for it behind its own locks, for the server's
/// lock_wait_timeout (a day by default). Found by the mutation test's concurrent session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_waiting_on_a_sessions_table_locks_does_not_hold_that_session_back() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE dl",
            "CREATE TABLE dl.a (id INT)",
            "LOCK TABLES dl.a WRITE",
        ],
    )
    .await;
    async fn within<F: std::future::Future>(what: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), what)
            .await
            .expect("the session holding the locks was held back")
    }
    // Another session's DDL runs; its row waits for the log table.
    let mut other = connect(&proxy.url(None)).await;
    let created = tokio::spawn(async move {
        other
            .query_drop("CREATE TABLE dl.b (id INT)")
            .await
            .map(|_| other)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    within(c.query_drop("ALTER TABLE dl.a ADD COLUMN x INT"))
        .await
        .unwrap();
    // Another session's DDL waits on the primary for a locked table: the locking session's
    // DDL gets the lock wait error after a bound rather than wait behind it.
    let mut other = connect(&proxy.url(None)).await;
    let altered = tokio::spawn(async move {
        other
            .query_drop("ALTER TABLE dl.a ADD COLUMN y INT")
            .await
            .map(|_| other)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = within(c.query_drop("ALTER TABLE dl.a ADD COLUMN z INT"))
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1205, "{e}");
    c.query_drop("UNLOCK TABLES").await.unwrap();
    within(created).await.unwrap().unwrap();
    within(altered).await.unwrap().unwrap();
    let columns: Vec<String> = c
        .query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'dl' \
             AND TABLE_NAME = 'a' ORDER BY ORDINAL_POSITION",
        )
        .await
        .unwrap();
    assert_eq!(columns, ["id", "x", "y"]);
    assert_replicas_identical(&dbs, &mut c, &["dl.a", "dl.b"]).await;
    drop(proxy);
}

/// A DDL's row in the primary's `myquorum.wal` is committed even when the session has
/// autocommit off (PyMySQL's default) and rolls back afterwards: without the row a
/// restart's recovery took the primary for lacking the record and ran the DDL there again —
/// here a TRUNCATE that deleted what was written after it. A read-only session's DDL, whose
/// row the server refuses as it refuses the DDL, is refused before it is logged, also under
/// LOCK TABLES. Found by the mutation test in `tests/bad_input.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_of_an_autocommit_off_session_stays_recorded_on_the_primary() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ac",
            "CREATE TABLE ac.t (id INT PRIMARY KEY)",
            "INSERT INTO ac.t VALUES (1)",
        ],
    )
    .await;
    let mut off = connect(&proxy.url(None)).await;
    run_all(
        &mut off,
        &["SET autocommit = 0", "TRUNCATE TABLE ac.t", "ROLLBACK"],
    )
    .await;
    drop(off);
    let mut read_only = connect(&proxy.url(None)).await;
    run_all(&mut read_only, &["SET SESSION tx_read_only = 1"]).await;
    let e = read_only
        .query_drop("CREATE TABLE ac.ro (a INT)")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1792, "{e}");
    // Under a WRITE lock taken before the session turned read-only.
    run_all(
        &mut read_only,
        &[
            "SET SESSION tx_read_only = 0",
            "LOCK TABLES ac.t WRITE",
            "SET SESSION tx_read_only = 1",
        ],
    )
    .await;
    let e = read_only
        .query_drop("TRUNCATE TABLE ac.t")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), 1792, "{e}");
    run_all(&mut read_only, &["UNLOCK TABLES"]).await;
    drop(read_only);
    run_all(&mut c, &["INSERT INTO ac.t VALUES (2)"]).await;
    assert_replicas_identical(&dbs, &mut c, &["ac.t"]).await;
    drop(c);
    drop(proxy);
    let (proxy, mut c) = restarted_with_write(&dbs, "INSERT INTO ac.t VALUES (3)").await;
    assert_replicas_identical(&dbs, &mut c, &["ac.t"]).await;
    let mut primary = connect(&dbs[0].url(None)).await;
    let ids: Vec<i32> = primary
        .query("SELECT id FROM ac.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, [2, 3]);
    assert_on_no_replica(
        &dbs,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_NAME = 'ro'",
    )
    .await;
    drop(proxy);
}

/// A follower whose replay connection is lost after a DDL ran there but before its record
/// was marked applied (a KILL here; a crash or a network cut the same) runs the record again
/// when it reconnects, and the DDL's second run fails: "Duplicate column name". That
/// quarantined the follower although it held exactly the primary's schema. Now the record's
/// row says the DDL was started (committed before it runs), and an error meaning "already
/// done" from a started DDL counts as its first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_whose_connection_was_lost_after_it_ran_is_not_run_twice() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE dm",
            "CREATE TABLE dm.t (id INT PRIMARY KEY)",
            "INSERT INTO dm.t VALUES (1)",
        ],
    )
    .await;
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    // On follower 2 a reader holds dm.t's metadata lock: the ALTER waits there.
    let mut reader = connect(&dbs[2].url(None)).await;
    reader.query_drop("BEGIN").await.unwrap();
    reader.query_drop("SELECT * FROM dm.t").await.unwrap();
    c.query_drop("ALTER TABLE dm.t ADD COLUMN v INT")
        .await
        .unwrap();
    let mut direct = connect(&dbs[2].url(None)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: Option<u32> = direct
            .query_first(
                "SELECT COUNT(*) FROM information_schema.processlist \
                 WHERE info LIKE 'ALTER TABLE dm.t%'",
            )
            .await
            .unwrap();
        if waiting == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ALTER never reached follower 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The log table locked, the ALTER runs once the reader is done and the record's mark
    // waits behind it: the connection is killed there.
    let mut locker = connect(&dbs[2].url(None)).await;
    locker
        .query_drop("LOCK TABLES myquorum.wal READ")
        .await
        .unwrap();
    reader.query_drop("COMMIT").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let marking = loop {
        let ids: Vec<u64> = direct
            .query(
                "SELECT id FROM information_schema.processlist \
                 WHERE info LIKE 'UPDATE myquorum.wal SET applied = 1%'",
            )
            .await
            .unwrap();
        if let Some(id) = ids.first() {
            break *id;
        }
        assert!(Instant::now() < deadline, "the mark never waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(column_count(&dbs[2], "dm.t").await, 2, "the ALTER ran");
    direct.query_drop(format!("KILL {marking}")).await.unwrap();
    locker.query_drop("UNLOCK TABLES").await.unwrap();
    c.query_drop("INSERT INTO dm.t VALUES (2, 2)")
        .await
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["dm.t"]).await;
    for db in &dbs {
        assert_eq!(column_count(db, "dm.t").await, 2, "{}", db.addr());
    }
}

/// BACKUP STAGE, BACKUP LOCK and FLUSH TABLES WITH READ LOCK hold locks on the connection
/// that ran them, until released or closed. The session keeps that connection: before, it
/// went back to the pool with the lock held, the session's next BACKUP STAGE ran elsewhere,
/// and every later DDL on the primary (the followers waiting behind it) hung until that
/// connection closed (the mutation test, seed 17). A session that ends releases its locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_global_read_locks_stay_with_their_session() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE bk",
            "CREATE TABLE bk.t (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let mut a = connect(&proxy.url(None)).await;
    run_all(&mut a, &["BACKUP STAGE START"]).await;
    // The backup's own session cannot store a write's log row on the primary: refused
    // before it runs (a DDL ran there and its row failed, so the primary's copy of the log
    // lacked it and a restart would have run it again).
    for sql in ["CREATE TABLE bk.x (a INT)", "INSERT INTO bk.t VALUES (5)"] {
        let e = a.query_drop(sql).await.unwrap_err();
        assert_eq!(server_code(&e), 4145, "{sql}: {e}");
    }
    run_all(&mut a, &["BACKUP STAGE BLOCK_DDL"]).await;
    // Another session's DDL waits for the backup, as on MariaDB, and runs after its END.
    let url = proxy.url(None);
    let ddl = tokio::spawn(async move {
        let mut b = connect(&url).await;
        b.query_drop("CREATE TABLE bk.n (a INT)").await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ddl.is_finished(), "the DDL ran during BLOCK_DDL");
    run_all(&mut a, &["BACKUP STAGE END"]).await;
    tokio::time::timeout(Duration::from_secs(10), ddl)
        .await
        .expect("the DDL still waits after BACKUP STAGE END")
        .unwrap()
        .unwrap();
    // A session that ends with the lock held releases it.
    run_all(&mut a, &["BACKUP STAGE START", "BACKUP STAGE BLOCK_DDL"]).await;
    a.disconnect().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        c.query_drop("CREATE TABLE bk.m (a INT)"),
    )
    .await
    .expect("a closed session's BACKUP STAGE still blocks DDL")
    .unwrap();
    // FLUSH TABLES WITH READ LOCK: writers wait until the same session's UNLOCK TABLES.
    let mut f = connect(&proxy.url(None)).await;
    run_all(&mut f, &["FLUSH TABLES WITH READ LOCK", "SELECT 1"]).await;
    let url = proxy.url(None);
    let write = tokio::spawn(async move {
        let mut w = connect(&url).await;
        w.query_drop("INSERT INTO bk.t VALUES (1)").await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "a write ran under the global read lock"
    );
    run_all(&mut f, &["UNLOCK TABLES"]).await;
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write still waits after UNLOCK TABLES")
        .unwrap()
        .unwrap();
    assert_replicas_identical(&dbs, &mut c, &["bk.t", "bk.n", "bk.m"]).await;
}

/// MariaDB sequences through the proxy. A follower replaying NEXTVAL would hand itself its
/// own next value (each server caches a range and drops it on restart), so each value is
/// taken on the primary, written into the statement as a literal, and logged with
/// `DO SETVAL` for the followers. Rows are the same everywhere, LASTVAL is the session's
/// own whichever pooled connection it runs on, a dump's SETVAL replays, and a new primary
/// continues past every value handed out. The SETVAL logged for an autocommit NEXTVAL
/// reaches a cache further, so the next values log nothing. Prepared statements get the
/// values as parameters the proxy adds. Statements that would call NEXTVAL once per row are refused. Before,
/// every sequence call was refused with 1235.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_replicate_and_a_new_primary_reuses_no_value() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE sq",
            "USE sq",
            "CREATE SEQUENCE s",
            // Hibernate 6's id sequences on MariaDB.
            "CREATE SEQUENCE by50 START WITH 1 INCREMENT BY 50",
            "CREATE TABLE t (id BIGINT PRIMARY KEY, parent BIGINT, v VARCHAR(10))",
        ],
    )
    .await;
    let ids: Vec<Option<i64>> = vec![
        c.query_first("SELECT NEXTVAL(by50)").await.unwrap(),
        c.query_first("select next value for by50").await.unwrap(),
    ];
    assert_eq!(ids, [Some(1), Some(51)]);
    // The first value logged a SETVAL a cache further (1 + 50 × 1000) for the followers, so
    // the next ones log nothing: they cost a read of the primary, not a quorum.
    wait_converged(&[&dbs[0], &dbs[1], &dbs[2]]).await;
    for db in &dbs[1..] {
        let mut d = connect(&db.url(None)).await;
        let next: Option<i64> = d
            .query_first("SELECT next_not_cached_value FROM sq.by50")
            .await
            .unwrap();
        assert_eq!(next, Some(50_051), "{}", db.addr());
    }
    let log_end = || async {
        let mut d = connect(&dbs[0].url(None)).await;
        let end: Option<i64> = d
            .query_first("SELECT MAX(ts) FROM myquorum.wal")
            .await
            .unwrap();
        end
    };
    let before = log_end().await;
    for expected in [101, 151, 201] {
        let id: Option<i64> = c.query_first("SELECT NEXTVAL(by50)").await.unwrap();
        assert_eq!(id, Some(expected));
    }
    assert_eq!(log_end().await, before, "covered values logged a record");
    let row: mysql_async::Row = c
        .query_first("SELECT NEXTVAL(s), LASTVAL(s)")
        .await
        .unwrap()
        .unwrap();
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into())
        .collect();
    assert_eq!(names, ["NEXTVAL(s)", "LASTVAL(s)"]);
    assert_eq!(mysql_async::from_row::<(i64, i64)>(row), (1, 1));
    run_all(
        &mut c,
        &[
            "INSERT INTO t VALUES (NEXTVAL(s), NULL, 'a')",
            "INSERT INTO t VALUES (NEXT VALUE FOR s, LASTVAL(s), 'b'), \
             (NEXTVAL(s), PREVIOUS VALUE FOR s, 'c')",
            "BEGIN",
            "INSERT INTO t VALUES (NEXTVAL(s), LASTVAL(s), 'd')",
            "COMMIT",
            "BEGIN",
            "INSERT INTO t VALUES (NEXTVAL(s), NULL, 'gone')",
            "ROLLBACK",
        ],
    )
    .await;
    // Another session takes the next value on the same pooled connections: LASTVAL stays
    // each session's own (a rolled-back NEXTVAL is not given back, as on MariaDB).
    let mut other = connect(&proxy.url(Some("sq"))).await;
    let theirs: Option<Option<i64>> = other.query_first("SELECT LASTVAL(s)").await.unwrap();
    assert_eq!(theirs, Some(None));
    let taken: Option<i64> = other.query_first("SELECT NEXTVAL(s)").await.unwrap();
    assert_eq!(taken, Some(7));
    let mine: Option<i64> = c.query_first("SELECT LASTVAL(s)").await.unwrap();
    assert_eq!(mine, Some(6));
    // In a multi-statement text (mysql_async asks for them), each statement in turn.
    let mut results = c
        .query_iter("SELECT NEXTVAL(s); SELECT LASTVAL(s) AS last")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !results.is_empty() {
        let values: Vec<i64> = results.collect().await.unwrap();
        seen.push(values);
    }
    drop(results);
    assert_eq!(seen, [[8], [8]]);
    let set: Option<i64> = c.query_first("SELECT SETVAL(s, 1000)").await.unwrap();
    assert_eq!(set, Some(1000));
    for refused in [
        "UPDATE t SET parent = NEXTVAL(s)",
        "INSERT INTO t SELECT NEXTVAL(s), NULL, 'x' FROM t",
        "SELECT NEXTVAL(s) FROM t",
        "SET @id = (SELECT NEXTVAL(s) FROM t LIMIT 1)",
        "CREATE TABLE d (id BIGINT DEFAULT NEXTVAL(s))",
        // No sequence named (the server's syntax error): nothing to take (this once
        // recursed until the proxy's stack overflowed).
        "SELECT LASTVAL(s), NEXTVAL()",
    ] {
        let e = c.query_drop(refused).await.unwrap_err();
        assert_eq!(server_code(&e), 1235, "{refused}: {e}");
    }
    // A temporary sequence is the session's, on the primary only: followers get its values
    // in the statements, and no SETVAL (they have no such sequence). (Its session stays
    // pinned to the primary's connection, which the switchovers below end.)
    run_all(&mut other, &["CREATE TEMPORARY SEQUENCE ts START WITH 500"]).await;
    let tmp: Option<i64> = other.query_first("SELECT NEXTVAL(ts)").await.unwrap();
    assert_eq!(tmp, Some(500));
    run_all(
        &mut other,
        &["INSERT INTO t VALUES (NEXTVAL(ts), LASTVAL(s), 'tmp')"],
    )
    .await;
    let e = other.query_drop("SELECT SETVAL(ts, 9)").await.unwrap_err();
    assert_eq!(server_code(&e), 1235, "{e}");
    // A user variable takes a value: its SETVAL goes through the log on its own (NOCACHE:
    // no reservation, so each value's own). (The variable pins its session, which the
    // switchovers below end: another one.)
    let mut vars = connect(&proxy.url(Some("sq"))).await;
    run_all(
        &mut vars,
        &[
            "CREATE SEQUENCE nc NOCACHE",
            "SET @n = NEXTVAL(nc)",
            "INSERT INTO t VALUES (@n + 2000, @n, 'var')",
            // So does one written into a temporary table, which only the primary has.
            "CREATE TEMPORARY TABLE kept (v BIGINT)",
            "INSERT INTO kept VALUES (NEXTVAL(nc))",
        ],
    )
    .await;
    let kept: Option<i64> = vars.query_first("SELECT v FROM kept").await.unwrap();
    assert_eq!(kept, Some(2));
    // Prepared (binary protocol), each statement executed twice: the calls become
    // parameters the proxy adds to every execute.
    for _ in 0..2 {
        let taken: Option<i64> = c.exec_first("SELECT NEXTVAL(s)", ()).await.unwrap();
        c.exec_drop("INSERT INTO t VALUES (NEXTVAL(s), ?, 'p')", (taken,))
            .await
            .unwrap();
    }
    let last: Option<i64> = c.exec_first("SELECT LASTVAL(s)", ()).await.unwrap();
    assert_eq!(last, Some(1004));
    let rows: Vec<(i64, Option<i64>, String)> = c
        .query("SELECT id, parent, v FROM t ORDER BY id")
        .await
        .unwrap();
    let expected = [
        (2, None, "a"),
        (3, Some(3), "b"),
        (4, Some(4), "c"),
        (5, Some(5), "d"),
        (501, Some(7), "tmp"),
        (1002, Some(1001), "p"),
        (1004, Some(1003), "p"),
        (2001, Some(1), "var"),
    ]
    .map(|(id, parent, v)| (id, parent, v.to_string()));
    assert_eq!(rows, expected);
    assert_replicas_identical(&dbs, &mut c, &["sq.t"]).await;
    for db in &dbs[1..] {
        let mut d = connect(&db.url(None)).await;
        let next: Option<i64> = d
            .query_first("SELECT next_not_cached_value FROM sq.nc")
            .await
            .unwrap();
        assert_eq!(
            next,
            Some(3),
            "{}: the SET's and the temporary table's values reached the followers",
            db.addr()
        );
    }
    // Each new primary goes on past every value the old ones handed out.
    let mut admin = connect(&proxy.url(None)).await;
    // A DDL clears the reservations: RESTART brings values back below them, and the
    // followers, replaying it, too.
    run_all(&mut c, &["ALTER SEQUENCE by50 RESTART WITH 1"]).await;
    let restarted: Option<i64> = c.query_first("SELECT NEXTVAL(by50)").await.unwrap();
    assert_eq!(restarted, Some(1));
    let (mut last_s, mut last_by50) = (1004, 1);
    for to in [1, 2] {
        let moved: Option<String> = admin
            .query_first(format!("PROXY SWITCHOVER TO {to}"))
            .await
            .unwrap();
        assert!(
            moved.is_some_and(|m| m.contains("primary now")),
            "switchover to {to}"
        );
        let s: Option<i64> = c.query_first("SELECT NEXTVAL(s)").await.unwrap();
        let by50: Option<i64> = c.query_first("SELECT NEXTVAL(by50)").await.unwrap();
        let (s, by50) = (s.unwrap(), by50.unwrap());
        assert!(s > last_s && by50 > last_by50, "replica {to}: {s}, {by50}");
        (last_s, last_by50) = (s, by50);
        c.query_drop(format!(
            "INSERT INTO t VALUES (NEXTVAL(s), LASTVAL(s), 'on {to}')"
        ))
        .await
        .unwrap();
    }
    assert_replicas_identical(&dbs, &mut c, &["sq.t"]).await;
}

/// A program (CALL, or a compound statement) that fails part-way inside the client's
/// transaction leaves none of its writes behind: on the primary the statements before the
/// failing one ran, and the log has no record of the program, so they would stay on the
/// primary alone at COMMIT. The proxy undoes the program's writes (a savepoint before it);
/// the client's own writes around it stay, and an exit handler's ROLLBACK still ends the
/// whole transaction, as on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_failing_inside_a_transaction_leaves_no_partial_writes() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE pf",
            "CREATE TABLE pf.t (id INT PRIMARY KEY)",
            "CREATE PROCEDURE pf.dup(n INT) BEGIN \
               INSERT INTO pf.t VALUES (n); INSERT INTO pf.t VALUES (n); END",
            "CREATE PROCEDURE pf.undoes(n INT) BEGIN \
               DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END; \
               INSERT INTO pf.t VALUES (n); INSERT INTO pf.t VALUES (n); END",
        ],
    )
    .await;
    let failing = [
        "CALL pf.dup(10)",
        "BEGIN NOT ATOMIC INSERT INTO pf.t VALUES (11); INSERT INTO pf.t VALUES (11); END",
        "FOR i IN 12..13 DO INSERT INTO pf.t VALUES (12); END FOR",
    ];
    // Each failing program inside a transaction that goes on and commits.
    for (n, program) in failing.iter().enumerate() {
        let before = 100 + 2 * n as i32;
        run_all(
            &mut c,
            &["BEGIN", &format!("INSERT INTO pf.t VALUES ({before})")],
        )
        .await;
        expect_error(&mut c, program, 1062).await;
        run_all(
            &mut c,
            &[
                &format!("INSERT INTO pf.t VALUES ({})", before + 1),
                "COMMIT",
            ],
        )
        .await;
    }
    // With autocommit off, the failing program is the transaction's first statement.
    run_all(&mut c, &["SET autocommit = 0"]).await;
    expect_error(&mut c, "CALL pf.dup(20)", 1062).await;
    run_all(
        &mut c,
        &[
            "INSERT INTO pf.t VALUES (200)",
            "COMMIT",
            "SET autocommit = 1",
        ],
    )
    .await;
    // The handler rolls the whole transaction back: the write before the CALL goes too.
    run_all(&mut c, &["BEGIN", "INSERT INTO pf.t VALUES (300)"]).await;
    expect_error(&mut c, "CALL pf.undoes(30)", 1062).await;
    run_all(&mut c, &["INSERT INTO pf.t VALUES (301)", "COMMIT"]).await;
    assert_replicas_identical(&dbs, &mut c, &["pf.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let ids: Vec<i32> = d.query("SELECT id FROM pf.t ORDER BY id").await.unwrap();
        assert_eq!(
            ids,
            [100, 101, 102, 103, 104, 105, 200, 301],
            "{}",
            db.addr()
        );
    }
}

/// A temporary table hides a regular table of its name on the primary, for this session;
/// followers have only the regular one. A write whose tables the proxy cannot list (a
/// compound statement, a CALL, a text its parser rejects) and that names one of the
/// session's temporary tables is refused: replicated, it changed the regular table on the
/// followers and the temporary one on the primary (fuzz seed 261: row 401 on the primary
/// only). Once the temporary table is dropped the same statements replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_naming_a_temporary_table_are_refused_not_split() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE tt",
            "USE tt",
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "CREATE PROCEDURE drop_two() DELETE FROM t WHERE id = 2",
            "CREATE TEMPORARY TABLE t (id INT)",
        ],
    )
    .await;
    let writes = [
        "REPEAT DELETE FROM t WHERE id = 1; UNTIL 1 END REPEAT",
        "CALL drop_two()",
        // The parser rejects SOUNDS LIKE.
        "UPDATE t SET v = 'z' WHERE id = 3 AND v SOUNDS LIKE 'c'",
    ];
    for write in writes {
        let message = expect_error(&mut c, write, 1235).await;
        assert!(message.contains("temporary"), "{write}: {message}");
    }
    // The session goes on: its temporary table is still there.
    run_all(&mut c, &["INSERT INTO t VALUES (7)"]).await;
    let hidden: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(hidden, Some(1));
    run_all(&mut c, &["DROP TEMPORARY TABLE t"]).await;
    run_all(&mut c, &writes).await;
    assert_replicas_identical(&dbs, &mut c, &["tt.t"]).await;
    for db in &dbs {
        let mut d = connect(&db.url(None)).await;
        let rows: Vec<(i32, String)> = d.query("SELECT id, v FROM tt.t ORDER BY id").await.unwrap();
        assert_eq!(rows, [(3, "z".to_string())], "{}", db.addr());
    }
}

/// A program the proxy wraps in its own transaction runs SERIALIZABLE: its plain reads lock
/// and see the latest committed rows, as a follower replaying the log in order does. Under
/// REPEATABLE READ a read after another session's commit still saw the snapshot from before
/// it, and the value it wrote differed on the followers (fuzz seed 261). So does a program
/// that starts the client's transaction. The level is for that transaction alone: the
/// connection's next transaction is REPEATABLE READ again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_reads_what_a_follower_replaying_it_reads() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE ps",
            "USE ps",
            "CREATE TABLE other (id INT PRIMARY KEY)",
            "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
            "INSERT INTO other VALUES (1)",
            "INSERT INTO a VALUES (1, 1)",
            // The first read takes the snapshot; the second reads `a` after the pause.
            "CREATE PROCEDURE copy_later(k INT) BEGIN \
               DECLARE n, x INT; \
               SELECT COUNT(*) INTO n FROM other; \
               DO SLEEP(1); \
               SELECT v INTO x FROM a WHERE id = 1; \
               INSERT INTO b VALUES (k, x); END",
            "CREATE PROCEDURE noop() DO 1",
            "CREATE PROCEDURE report() SELECT COUNT(*) FROM a",
        ],
    )
    .await;
    // In autocommit mode, as the first statement of a BEGIN, and with autocommit off: each
    // time the transaction starts with the program. Another session changes `a` while the
    // program pauses.
    for (k, before, after) in [
        (1, &[][..], &[][..]),
        (3, &["BEGIN"][..], &["COMMIT"][..]),
        (
            4,
            &["SET autocommit = 0"][..],
            &["COMMIT", "SET autocommit = 1"][..],
        ),
    ] {
        let url = proxy.url(Some("ps"));
        let updater = tokio::spawn(async move {
            let mut u = connect(&url).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            u.query_drop(format!("UPDATE a SET v = {} WHERE id = 1", k.max(2)))
                .await
                .unwrap();
        });
        run_all(&mut c, before).await;
        run_all(&mut c, &[&format!("CALL copy_later({k})")]).await;
        run_all(&mut c, after).await;
        updater.await.unwrap();
    }
    run_all(
        &mut c,
        &[
            "IF 1 THEN INSERT INTO b SELECT 2, COUNT(*) FROM other; END IF",
            "CALL noop()",
        ],
    )
    .await;
    // The session's next transaction on that connection.
    run_all(
        &mut c,
        &["BEGIN", "UPDATE a SET v = v WHERE id = 1", "DO SLEEP(0.2)"],
    )
    .await;
    let level: Option<String> = c
        .query_first(
            "SELECT trx_isolation_level FROM information_schema.innodb_trx \
             WHERE trx_query LIKE '%trx_isolation_level%'",
        )
        .await
        .unwrap();
    run_all(&mut c, &["COMMIT"]).await;
    assert_eq!(level.as_deref(), Some("REPEATABLE READ"));
    // A program that only reads keeps the session's level: its reads do not wait for a
    // writer's row locks (SERIALIZABLE's would, up to innodb_lock_wait_timeout).
    let mut writer = connect(&proxy.url(Some("ps"))).await;
    run_all(&mut writer, &["BEGIN", "UPDATE a SET v = 3 WHERE id = 1"]).await;
    let counted = tokio::time::timeout(
        Duration::from_secs(5),
        c.query_first::<i64, _>("CALL report()"),
    )
    .await
    .expect("a read-only CALL waited for a writer's lock");
    assert_eq!(counted.unwrap(), Some(1));
    run_all(&mut writer, &["ROLLBACK"]).await;
    assert_replicas_identical(&dbs, &mut c, &["ps.b"]).await;
    let rows: Vec<(i32, i32)> = c.query("SELECT id, v FROM ps.b ORDER BY id").await.unwrap();
    assert_eq!(rows, [(1, 2), (2, 1), (3, 3), (4, 4)]);
}

/// A writing program later in a transaction cannot be made SERIALIZABLE (the level is
/// fixed once the transaction ran a statement): its plain reads see the transaction's
/// snapshot, and a follower replaying the log reads every write logged before it. So the
/// transaction is certified at commit: refused with 1213, leaving nothing on any replica,
/// when a record logged after its snapshot wrote a table the program names; committed when
/// the writes meanwhile went to other tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_later_in_a_transaction_is_certified_at_commit() {
    common::init_tracing();
    let (dbs, proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE pc",
            "USE pc",
            "CREATE TABLE other (id INT PRIMARY KEY)",
            "CREATE TABLE unrelated (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
            "INSERT INTO other VALUES (1)",
            "INSERT INTO unrelated VALUES (1, 1)",
            "INSERT INTO a VALUES (1, 1)",
            "CREATE PROCEDURE copy_a(k INT) BEGIN \
               DECLARE x INT; \
               SELECT v INTO x FROM a WHERE id = 1; \
               INSERT INTO b VALUES (k, x); END",
            // The same read, through a stored function the procedure calls.
            "CREATE FUNCTION a_value() RETURNS INT READS SQL DATA \
               RETURN (SELECT v FROM a WHERE id = 1)",
            "CREATE PROCEDURE copy_through_function(k INT) BEGIN \
               DECLARE x INT; \
               SET x = a_value(); \
               INSERT INTO b VALUES (k, x); END",
        ],
    )
    .await;
    let mut other = connect(&proxy.url(Some("pc"))).await;
    // The SELECT takes the snapshot on the primary; `other` commits `meanwhile` before the
    // CALL (or after it), and the CALL reads `a` from the snapshot.
    const COPY: &str = "copy_a";
    const THROUGH_FUNCTION: &str = "copy_through_function";
    let cases: [(&str, &str, &str, bool, bool); 7] = [
        (COPY, "BEGIN", "UPDATE a SET v = 2 WHERE id = 1", true, true),
        (
            COPY,
            "BEGIN",
            "UPDATE a SET v = 3 WHERE id = 1",
            false,
            true,
        ),
        (
            COPY,
            "BEGIN",
            "UPDATE unrelated SET v = v + 1 WHERE id = 1",
            true,
            false,
        ),
        (
            COPY,
            "SET autocommit = 0",
            "UPDATE a SET v = 4 WHERE id = 1",
            true,
            true,
        ),
        (
            COPY,
            "SET autocommit = 0",
            "UPDATE unrelated SET v = v + 1 WHERE id = 1",
            false,
            false,
        ),
        (
            THROUGH_FUNCTION,
            "BEGIN",
            "UPDATE a SET v = 5 WHERE id = 1",
            true,
            true,
        ),
        (
            THROUGH_FUNCTION,
            "BEGIN",
            "UPDATE unrelated SET v = v + 1 WHERE id = 1",
            true,
            false,
        ),
    ];
    let mut conflicts = 0;
    for (k, (procedure, begin, meanwhile, before_call, refused)) in cases.into_iter().enumerate() {
        // A write is taken to change only the tables it names once the proxy has read their
        // definitions (no trigger or cascading foreign key), in the background after the
        // schema changed: until then a transaction certified against it is refused too, and
        // retried here as a client would.
        for attempt in 1.. {
            run_all(&mut c, &[begin, "SELECT COUNT(*) FROM other"]).await;
            if before_call {
                run_all(&mut other, &[meanwhile]).await;
            }
            run_all(&mut c, &[&format!("CALL {procedure}({k})")]).await;
            if !before_call {
                run_all(&mut other, &[meanwhile]).await;
            }
            let committed = c.query_drop("COMMIT").await;
            run_all(&mut c, &["SET autocommit = 1"]).await;
            match committed {
                Ok(()) => {
                    assert!(!refused, "case {k} committed");
                    break;
                }
                Err(e) => {
                    assert_eq!(server_code(&e), 1213, "case {k}: {e}");
                    assert!(e.to_string().contains("retry"), "{e}");
                    conflicts += 1;
                    if refused {
                        break;
                    }
                    assert!(attempt < 20, "case {k}: refused {attempt} times");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Retried with nothing in between: committed, with the value every replica reads.
    run_all(
        &mut c,
        &[
            "BEGIN",
            "SELECT COUNT(*) FROM other",
            "CALL copy_a(10)",
            "COMMIT",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["pc.a", "pc.b"]).await;
    let rows: Vec<(i32, i32)> = c.query("SELECT id, v FROM pc.b ORDER BY id").await.unwrap();
    assert_eq!(rows, [(2, 3), (4, 4), (6, 5), (10, 5)]);
    let counted: Vec<u64> = c
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            row.get::<String, _>("certification_conflicts")
                .unwrap()
                .parse()
                .unwrap()
        })
        .await
        .unwrap();
    assert_eq!(counted.first(), Some(&conflicts));
}

/// A temporary table a program leaves behind stays, on the followers, on the one
/// connection that replays every session's records, hiding the table of that name from
/// later writes: both followers were quarantined (1136 on the next `INSERT INTO t1`, found
/// by MariaDB's sp-row test) and writes stopped for want of a quorum. Such a program is
/// refused at CREATE, and such a compound statement when sent; one that drops its
/// temporary table runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_must_drop_the_temporary_tables_it_creates() {
    common::init_tracing();
    let (dbs, _proxy, mut c) = three_replicas().await;
    run_all(
        &mut c,
        &[
            "CREATE DATABASE tt",
            "USE tt",
            "CREATE TABLE t1 (a INT, b INT)",
        ],
    )
    .await;
    let err = c
        .query_drop("CREATE PROCEDURE leaves() BEGIN CREATE TEMPORARY TABLE t1 (x INT); END")
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    assert!(err.to_string().contains("temporary table `t1`"), "{err}");
    // A compound statement is replayed on that connection too.
    let err = c
        .query_drop(
            "BEGIN NOT ATOMIC CREATE TEMPORARY TABLE t1 (x INT); INSERT INTO t1 VALUES (1); END",
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), 1235, "{err}");
    c.query_drop("DROP TEMPORARY TABLE IF EXISTS t1")
        .await
        .unwrap();
    run_all(
        &mut c,
        &[
            "CREATE PROCEDURE tidy() BEGIN CREATE TEMPORARY TABLE t1 (x INT); \
             INSERT INTO t1 VALUES (1); DROP TEMPORARY TABLE t1; END",
            "CALL tidy()",
            "INSERT INTO t1 VALUES (10, 20)",
        ],
    )
    .await;
    assert_replicas_identical(&dbs, &mut c, &["tt.t1"]).await;
}
