//! Primary failover on real mariadbd: kill -9 of the primary under a write load elects a new
//! primary by score, writes resume within 5 s, no acknowledged write is lost, and after the
//! old primary restarts and rejoins as a follower every replica is identical — several kills
//! in a row; sysbench oltp_read_write rides through a kill; a manual switchover moves the
//! primary and closes sessions still holding state on the old one; statements waiting on a
//! hung primary are released when it is marked down; the primary alone skips its commit fsync,
//! and that setting moves with the role.

mod common;

use common::converge::assert_same_tables;
use common::{config_for, MariaDb, Proxy};
use myquorum::router::ReplicaId;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Acknowledged writes (id, when the client got the OK).
type Acks = Arc<Mutex<Vec<(i64, Instant)>>>;

/// A client that writes distinct ids until `stop`, reconnecting after any error (as an
/// application behind a proxy would), every third write in an explicit transaction.
async fn writer(url: String, worker: i64, stop: Arc<AtomicBool>, acks: Acks) {
    let mut conn: Option<Conn> = None;
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::new(Opts::from_url(&url).unwrap()).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let id = worker * 1_000_000 + i;
        i += 1;
        match common::writes::insert_id(c, "fo.acked", id, i).await {
            Ok(()) => acks.lock().push((id, Instant::now())),
            Err(_) => conn = None,
        }
        // Paced, so a restarted replica (cold, debug build, sharing two cores with the
        // rest) can catch up with the log while the load goes on.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn create_schema(url: &str) {
    let mut c = Conn::new(Opts::from_url(url).unwrap()).await.unwrap();
    c.query_drop("CREATE DATABASE fo").await.unwrap();
    c.query_drop("CREATE TABLE fo.acked (id BIGINT PRIMARY KEY, note VARCHAR(16))")
        .await
        .unwrap();
}

fn leader(proxy: &Proxy) -> ReplicaId {
    proxy.ctx.replication.shards[0].leader()
}

/// Waits until replica `r`'s applier is connected and has applied the whole log.
async fn wait_rejoined(proxy: &Proxy, r: ReplicaId) {
    let log = &proxy.ctx.replication.shards[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = &log.replicas[r.0 as usize];
        if st.live.load(Ordering::Acquire)
            && st.applied.load(Ordering::Acquire) + 1 >= log.last_sequenced()
        {
            return;
        }
        assert!(Instant::now() < deadline, "replica {} did not rejoin", r.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_acked_everywhere(dbs: &[&MariaDb], acked: &BTreeSet<i64>) {
    assert_same_tables(dbs, &["fo.acked"]).await;
    common::writes::assert_holds_acked(dbs, "fo.acked", acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_three_times_elects_and_loses_nothing() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let url = proxy.url(None);
    create_schema(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let writers: Vec<_> = (1..=3)
        .map(|w| tokio::spawn(writer(url.clone(), w, stop.clone(), acks.clone())))
        .collect();
    let mut primaries = vec![leader(&proxy)];
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let old = leader(&proxy);
        let before = acks.lock().len();
        assert!(before > 0, "no writes acknowledged before kill {round}");
        dbs[old.0 as usize].kill9();
        let killed_at = Instant::now();
        // Writes resume on a new primary: the first write acknowledged after the proxy
        // switched (polled every 20 ms, so this overestimates by up to that).
        while leader(&proxy) == old {
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "kill {round}: no new primary"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let switched = Instant::now();
        let resumed = loop {
            let first_after = acks.lock().iter().map(|(_, t)| *t).find(|t| *t > switched);
            if let Some(t) = first_after {
                break t - killed_at;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "kill {round}: writes did not resume on the new primary"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let new = leader(&proxy);
        eprintln!(
            "kill {round}: primary {} → {}, writes resumed {} ms after the kill",
            old.0,
            new.0,
            resumed.as_millis()
        );
        assert_ne!(new, old);
        assert!(
            resumed < Duration::from_secs(5),
            "kill {round}: writes resumed only after {resumed:?}"
        );
        primaries.push(new);
        // The old primary comes back and rejoins as a follower.
        dbs[old.0 as usize].restart();
        wait_rejoined(&proxy, old).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked: BTreeSet<i64> = acks.lock().iter().map(|(id, _)| *id).collect();
    eprintln!(
        "primaries {primaries:?}; {} acknowledged writes",
        acked.len()
    );
    assert_acked_everywhere(&[&dbs[0], &dbs[1], &dbs[2]], &acked).await;
    // The proxy says so too.
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let status: Vec<(String, String)> = c.query("SHOW PROXY STATUS").await.unwrap();
    let elections = status
        .iter()
        .find(|(k, _)| k == "elections")
        .map(|(_, v)| v.clone());
    assert_eq!(elections.as_deref(), Some("3"));
}

/// `PROXY SWITCHOVER TO 2` under a write load: the primary moves to replica 2 and writes go
/// on there without an error for clients between statements; a session holding an open
/// transaction on the old primary hears 1213 and its work is not committed; the old primary
/// applies everything as a follower (its own later writes are not needed: it can be killed
/// without another election); a switchover to a replica that is down is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_primary_and_the_old_one_follows() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let url = proxy.url(None);
    create_schema(&url).await;
    let mut admin = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    // A transaction left open on the primary across the switchover.
    let mut open_tx = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    open_tx.query_drop("BEGIN").await.unwrap();
    open_tx
        .query_drop("INSERT INTO fo.acked VALUES (-1, 'open tx')")
        .await
        .unwrap();
    // Sessions whose state lives on their connection to the old primary.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
        c.query_drop("CREATE TEMPORARY TABLE fo.scratch (a INT)")
            .await
            .unwrap();
        holding.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let writers: Vec<_> = (1..=2)
        .map(|w| tokio::spawn(writer(url.clone(), w, stop.clone(), acks.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let result: Option<String> = admin.query_first("PROXY SWITCHOVER TO 2").await.unwrap();
    let result = result.unwrap();
    assert!(result.contains("replica 2"), "{result}");
    assert_eq!(leader(&proxy), ReplicaId(2));
    let roles: Vec<(String, String)> = admin
        .query_map("SHOW PROXY BACKENDS", |row: mysql_async::Row| {
            (
                row.get::<String, _>("replica").unwrap(),
                row.get::<String, _>("role").unwrap(),
            )
        })
        .await
        .unwrap();
    assert!(
        roles.contains(&("2".to_string(), "primary".to_string()))
            && roles.contains(&("0".to_string(), "replica".to_string())),
        "{roles:?}"
    );
    // The open transaction was on the old primary: it is gone, with the code to retry on.
    let err = open_tx.query_drop("COMMIT").await.unwrap_err();
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1213, "{e:?}"),
        other => panic!("COMMIT of a transaction on the old primary: {other:?}"),
    }
    // The same client connection goes on, on the new primary.
    open_tx
        .query_drop("INSERT INTO fo.acked VALUES (-2, 'after')")
        .await
        .unwrap();
    // A session whose temporary table went with the old primary's connection hears so as
    // the answer to its next statement (an error written before it asked arrived out of
    // sequence: mysql_async reported PacketsOutOfSync), then its connection closes.
    let mut lost = holding.remove(0);
    match lost.query_drop("INSERT INTO fo.scratch VALUES (1)").await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 9013, "{e:?}");
            assert!(e.message.contains("temporary_table"), "{e:?}");
        }
        other => panic!("a session whose state was lost: {other:?}"),
    }
    let closed = lost.query_drop("SELECT 1").await;
    assert!(
        matches!(closed, Err(ref e) if !matches!(e, mysql_async::Error::Server(_))),
        "the session went on without its state: {closed:?}"
    );
    // A pool's reset drops that state anyway: the connection goes on, without the table.
    let mut reset = holding.remove(0);
    assert!(reset.reset().await.unwrap());
    let e = reset
        .query_drop("SELECT * FROM fo.scratch")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.code == 1146),
        "{e:?}"
    );
    reset
        .query_drop("INSERT INTO fo.acked VALUES (-3, 'reset')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let mut acked: BTreeSet<i64> = acks.lock().iter().map(|(id, _)| *id).collect();
    acked.extend([-2, -3]);
    assert_acked_everywhere(&[&dbs[0], &dbs[1], &dbs[2]], &acked).await;
    for db in &dbs {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM fo.acked WHERE id = -1")
            .await
            .unwrap();
        assert_eq!(
            n,
            Some(0),
            "the abandoned transaction appeared on {}",
            db.addr()
        );
    }
    // Writes no longer need the old primary: killing it starts no election.
    dbs[0].kill9();
    for i in 0..20 {
        admin
            .query_drop(format!(
                "INSERT INTO fo.acked VALUES ({}, 'no 0')",
                -100 - i
            ))
            .await
            .unwrap();
    }
    assert_eq!(
        proxy.ctx.replication.shards[0]
            .elections
            .load(Ordering::Relaxed),
        1
    );
    // A switchover to a replica that is down is refused with a clear error.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let err = admin.query_drop("PROXY SWITCHOVER TO 0").await.unwrap_err();
    assert!(err.to_string().contains("not a live follower"), "{err}");
    assert_eq!(leader(&proxy), ReplicaId(2));
    admin
        .query_drop("INSERT INTO fo.acked VALUES (-200, 'still')")
        .await
        .unwrap();
}

/// `innodb_flush_log_at_trx_commit` on every server, in replica order.
async fn flush_modes(dbs: &[&MariaDb]) -> Vec<u8> {
    let mut out = Vec::new();
    for db in dbs {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        let v: Option<u8> = c
            .query_first("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
            .await
            .unwrap();
        out.push(v.unwrap());
    }
    out
}

/// Waits (10 s at most) until the servers run with `want`.
async fn wait_flush_modes(dbs: &[&MariaDb], want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = flush_modes(dbs).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "flush modes {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The primary commits without its own fsync (`innodb_flush_log_at_trx_commit = 2`, set by
/// the proxy) and followers sync theirs (one started at 2 is set to 1); the roles' settings
/// move with a switchover; a stopping proxy puts the primary back to 1; with
/// `primary_syncs_commits` the servers' own settings are left alone. Writes stay identical
/// everywhere throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_primary_skips_its_commit_fsync_and_that_follows_the_role() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    let mut c1 = Conn::new(Opts::from_url(&dbs[1].url(None)).unwrap())
        .await
        .unwrap();
    c1.query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        .await
        .unwrap();
    let cfg = config_for(&all);
    assert!(!cfg.replication.primary_syncs_commits, "the default");
    let proxy = Proxy::start(cfg.clone());
    let url = proxy.url(None);
    create_schema(&url).await;
    wait_flush_modes(&all, &[2, 1, 1]).await;
    let mut admin = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let states: Vec<String> = admin
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            row.get::<String, _>("state").unwrap()
        })
        .await
        .unwrap();
    assert!(
        states[0].starts_with("primary (no fsync per commit"),
        "{states:?}"
    );
    assert_eq!(&states[1..], ["applying", "applying"], "{states:?}");
    for i in 0..50 {
        admin
            .query_drop(format!("INSERT INTO fo.acked VALUES ({i}, 'before')"))
            .await
            .unwrap();
    }
    let result: Option<String> = admin.query_first("PROXY SWITCHOVER TO 1").await.unwrap();
    assert!(result.unwrap().contains("replica 1"));
    wait_flush_modes(&all, &[1, 2, 1]).await;
    for i in 50..100 {
        admin
            .query_drop(format!("INSERT INTO fo.acked VALUES ({i}, 'after')"))
            .await
            .unwrap();
    }
    wait_rejoined(&proxy, ReplicaId(0)).await;
    assert_acked_everywhere(&all, &(0..100).collect()).await;
    drop(admin);
    drop(proxy);
    assert_eq!(
        flush_modes(&all).await,
        [1, 1, 1],
        "a stopped proxy leaves the primary syncing"
    );
    // Left alone when asked to.
    let c2 = Conn::new(Opts::from_url(&dbs[2].url(None)).unwrap()).await;
    c2.unwrap()
        .query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        .await
        .unwrap();
    let mut cfg = cfg;
    cfg.replication.primary_syncs_commits = true;
    let proxy = Proxy::start(cfg);
    let mut admin = Conn::new(Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap();
    for i in 100..120 {
        admin
            .query_drop(format!("INSERT INTO fo.acked VALUES ({i}, 'own')"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(flush_modes(&all).await, [1, 1, 2]);
    wait_rejoined(&proxy, ReplicaId(2)).await;
    assert_acked_everywhere(&all, &(0..120).collect()).await;
}

/// A backend account without SUPER cannot change the flush setting: the proxy says so and
/// goes on with the servers' own (the primary keeps syncing), writes reach every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_super_the_servers_keep_their_flush_setting() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let all = [&dbs[0], &dbs[1], &dbs[2]];
    for db in all {
        let mut c = Conn::new(Opts::from_url(&db.url(None)).unwrap())
            .await
            .unwrap();
        for host in ["%", "localhost"] {
            c.query_drop(format!("CREATE USER 'nosuper'@'{host}' IDENTIFIED BY 'pw'"))
                .await
                .unwrap();
            c.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO 'nosuper'@'{host}'"))
                .await
                .unwrap();
            c.query_drop(format!("REVOKE SUPER ON *.* FROM 'nosuper'@'{host}'"))
                .await
                .unwrap();
        }
    }
    let mut cfg = config_for(&all);
    cfg.backend.user = "nosuper".into();
    cfg.backend.password = "pw".into();
    let proxy = Proxy::start(cfg);
    let url = proxy.url(None);
    create_schema(&url).await;
    insert_until_acked(&url, 0..50).await;
    assert_eq!(flush_modes(&all).await, [1, 1, 1]);
    let mut admin = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let states: Vec<String> = admin
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            row.get::<String, _>("state").unwrap()
        })
        .await
        .unwrap();
    assert_eq!(states, ["primary", "applying", "applying"]);
    assert_acked_everywhere(&all, &(0..50).collect()).await;
}

/// Replaces `db`'s data with `snapshot` (a copy taken right after a kill -9) while it is
/// down for long enough to be marked down, and starts it again: the image of a machine
/// crash that took the commits its primary made since, as one running without syncing them
/// may lose.
async fn come_back_without_recent_commits(
    proxy: &Proxy,
    db: &mut MariaDb,
    snapshot: &std::path::Path,
) {
    db.kill9();
    let data = db.dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(snapshot)
        .arg(&data)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    wait_marked_down(proxy, leader(proxy)).await;
    db.restart();
}

/// Waits (20 s at most) until health checks mark `replica` down.
async fn wait_marked_down(proxy: &Proxy, replica: ReplicaId) {
    let pool = proxy
        .ctx
        .cluster
        .pool(myquorum::router::ShardId(0), replica)
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.is_up() {
        assert!(
            Instant::now() < deadline,
            "replica {} was never marked down",
            replica.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts `ids` through the proxy, retrying each until it is acknowledged.
async fn insert_until_acked(url: &str, ids: std::ops::Range<i64>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn: Option<Conn> = None;
    for id in ids {
        loop {
            assert!(Instant::now() < deadline, "writes did not resume");
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match Conn::new(Opts::from_url(url).unwrap()).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            match common::writes::insert_id(c, "fo.acked", id, id).await {
                Ok(()) => break,
                Err(_) => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A primary that comes back without its last commits (a machine crash while it did not
/// sync them) and stays primary gets them re-applied from the log before writes open:
/// with failover off (it is waited for), and with failover on while no election can finish
/// (a follower is down too). Without that, it would serve and build on a state missing
/// acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_back_without_its_last_commits_gets_them_from_the_log() {
    common::init_tracing();
    let (mut a, b, mut c) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let snapshot = tempfile::tempdir().unwrap();
    let snapshot = snapshot.path().join("data");
    let mut cfg = config_for(&[&a, &b, &c]);
    cfg.replication.failover = false;
    let proxy = Proxy::start(cfg.clone());
    let url = proxy.url(None);
    create_schema(&url).await;
    insert_until_acked(&url, 0..30).await;
    a.kill9();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(a.dir.path().join("data"))
        .arg(&snapshot)
        .status()
        .unwrap()
        .success();
    assert!(copied);
    a.restart();
    insert_until_acked(&url, 30..60).await;
    come_back_without_recent_commits(&proxy, &mut a, &snapshot).await;
    insert_until_acked(&url, 60..70).await;
    assert_eq!(leader(&proxy), ReplicaId(0));
    assert_acked_everywhere(&[&a, &b, &c], &(0..70).collect()).await;
    drop(proxy);

    // Failover on, but with a follower down no election can finish before it returns.
    cfg.replication.failover = true;
    let proxy = Proxy::start(cfg);
    let url = proxy.url(None);
    insert_until_acked(&url, 70..100).await;
    c.kill9();
    // Known down before the primary goes: otherwise it still counts as a live candidate.
    wait_marked_down(&proxy, ReplicaId(2)).await;
    come_back_without_recent_commits(&proxy, &mut a, &snapshot).await;
    insert_until_acked(&url, 100..110).await;
    assert_eq!(
        leader(&proxy),
        ReplicaId(0),
        "no election could have finished"
    );
    c.restart();
    wait_rejoined(&proxy, ReplicaId(2)).await;
    assert_acked_everywhere(&[&a, &b, &c], &(0..110).collect()).await;
}

/// The proxy restarts while its primary is down: after a short wait it elects the follower
/// with the most applied (n − t of them answer), writes open on it, and the old primary
/// rejoins as a follower when it is back; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_while_the_primary_is_down_elects_another() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    let proxy = Proxy::start(cfg.clone());
    let url = proxy.url(None);
    create_schema(&url).await;
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut acked = BTreeSet::new();
    for id in 0..50i64 {
        c.query_drop(format!("INSERT INTO fo.acked VALUES ({id}, 'before')"))
            .await
            .unwrap();
        acked.insert(id);
    }
    drop(c);
    drop(proxy);
    dbs[0].kill9();
    let started = Instant::now();
    let proxy = Proxy::start(cfg);
    let mut c = loop {
        if let Ok(mut c) = Conn::new(Opts::from_url(&proxy.url(None)).unwrap()).await {
            if c.query_drop("INSERT INTO fo.acked VALUES (100, 'after')")
                .await
                .is_ok()
            {
                break c;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writes did not open without the old primary"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    acked.insert(100);
    eprintln!(
        "writes open {} ms after a start without the primary",
        started.elapsed().as_millis()
    );
    // Either follower may win: both applied everything, and the score also weighs each
    // one's probe latency, which is whatever the first health checks measured.
    assert_ne!(leader(&proxy), ReplicaId(0), "the old primary is down");
    for id in 101..120i64 {
        c.query_drop(format!("INSERT INTO fo.acked VALUES ({id}, 'after')"))
            .await
            .unwrap();
        acked.insert(id);
    }
    dbs[0].restart();
    wait_rejoined(&proxy, ReplicaId(0)).await;
    assert_acked_everywhere(&[&dbs[0], &dbs[1], &dbs[2]], &acked).await;
}

/// A primary that hangs (its traffic blackholed: no error, no answer) under a write load:
/// the statements waiting on it are released when health checks mark it down — answered
/// 1213 (nothing of them committed) or OK (their record was logged and the quorum holds it)
/// — and every writer goes on on the elected primary, instead of waiting minutes for TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_releases_its_waiting_statements() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    let relay = common::relay::Relay::start(dbs[0].addr());
    cfg.shards[0].replicas[0] = relay.addr();
    let proxy = Proxy::start(cfg);
    let url = proxy.url(None);
    create_schema(&url).await;
    assert_eq!(leader(&proxy), ReplicaId(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let writers: Vec<_> = (1..=3)
        .map(|w| tokio::spawn(writer(url.clone(), w, stop.clone(), acks.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!acks.lock().is_empty(), "no writes before the hang");
    relay.set_blackhole(true);
    let hung_at = Instant::now();
    while leader(&proxy) == ReplicaId(0) {
        assert!(
            hung_at.elapsed() < Duration::from_secs(30),
            "no new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switched = Instant::now();
    // Each writer acknowledges a write on the new primary: none is stuck on the hung one.
    for w in 1..=3i64 {
        loop {
            let done = acks
                .lock()
                .iter()
                .any(|(id, t)| id / 1_000_000 == w && *t > switched);
            if done {
                break;
            }
            assert!(
                switched.elapsed() < Duration::from_secs(20),
                "writer {w} is still waiting on the hung primary"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "hung primary: new primary {} after {} ms, every writer on it {} ms later",
        leader(&proxy).0,
        (switched - hung_at).as_millis(),
        switched.elapsed().as_millis()
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("a writer stayed blocked")
            .unwrap();
    }
    let acked: BTreeSet<i64> = acks.lock().iter().map(|(id, _)| *id).collect();
    // The hung replica comes back and rejoins as a follower; nothing acknowledged is lost.
    relay.set_blackhole(false);
    wait_rejoined(&proxy, ReplicaId(0)).await;
    assert_acked_everywhere(&[&dbs[0], &dbs[1], &dbs[2]], &acked).await;
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `check` holds for the body (10 s at most).
async fn scrape_until(proxy: &Proxy, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = proxy.scrape("/metrics").await;
        if check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /metrics` gives what an alert rule needs: commits counted, each replica's state,
/// a follower killed shown down (and its backend not up) while writes go on, and shown
/// applying again, with no lag, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_follower_down_and_back() {
    common::init_tracing();
    let mut dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let mut cfg = config_for(&[&dbs[0], &dbs[1], &dbs[2]]);
    cfg.proxy.metrics_listen = format!("127.0.0.1:{}", common::free_port());
    let proxy = Proxy::start(cfg);
    let url = proxy.url(None);
    create_schema(&url).await;
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    for i in 0..5 {
        common::writes::insert_id(&mut c, "fo.acked", i, i)
            .await
            .unwrap();
    }
    let (status, body) = proxy.scrape("/metrics").await;
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(body.contains("# TYPE myquorum_shard_commits_total counter"));
    let commits = sample(&body, "myquorum_shard_commits_total{shard=\"0\"}").unwrap();
    assert!(commits >= 5.0, "{commits}");
    // Every commit phase was timed, the WAL's own write + fsync among them.
    for phase in ["sequence", "wal_sync", "quorum", "primary_commit"] {
        let name = format!(
            "myquorum_commit_phase_seconds{{shard=\"0\",phase=\"{phase}\",quantile=\"0.5\"}}"
        );
        let p50 = sample(&body, &name).unwrap_or_default();
        assert!(p50 > 0.0 && p50 < 5.0, "{name} = {p50}");
    }
    let state = |r: u32, s: &str| {
        format!("myquorum_replica_state{{shard=\"0\",replica=\"{r}\",state=\"{s}\"}}")
    };
    let p = leader(&proxy).0;
    assert_eq!(sample(&body, &state(p, "primary")), Some(1.0));
    let f = (p + 1) % 3;
    assert_eq!(sample(&body, &state(f, "applying")), Some(1.0));

    dbs[f as usize].kill9();
    let up = format!(
        "myquorum_backend_up{{shard=\"0\",replica=\"{f}\",address=\"{}\"}}",
        dbs[f as usize].addr()
    );
    scrape_until(&proxy, "the killed follower down", |b| {
        sample(b, &state(f, "down")) == Some(1.0) && sample(b, &up) == Some(0.0)
    })
    .await;
    for i in 5..10 {
        common::writes::insert_id(&mut c, "fo.acked", i, i)
            .await
            .unwrap();
    }
    dbs[f as usize].restart();
    let lag = format!("myquorum_replica_lag_seconds{{shard=\"0\",replica=\"{f}\"}}");
    let body = scrape_until(&proxy, "the follower applying again", |b| {
        sample(b, &state(f, "applying")) == Some(1.0) && sample(b, &lag) == Some(0.0)
    })
    .await;
    assert!(sample(&body, "myquorum_shard_commits_total{shard=\"0\"}").unwrap() >= commits + 5.0);
    assert_eq!(
        proxy.scrape("/nothing").await.0.split(' ').nth(1),
        Some("404")
    );
}
