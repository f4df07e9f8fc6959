//! sysbench oltp_read_write through the proxy, prepared statements on and off: no errors,
//! and a fixed-event single-threaded run gives the same statement counts and table contents
//! shape as the same run direct. (sysbench's --rand-seed does not make data reproducible:
//! two direct runs with the same seed differ, so checksums cannot be compared across runs.)

mod common;

use common::{config_for, MariaDb, Proxy};
use std::process::Command;

fn sysbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("sysbench")
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=root",
            "--mysql-db=sbtest",
            "--tables=2",
            "--table-size=2000",
            "--rand-seed=42",
        ])
        .args(args)
        .output()
        .expect("sysbench must be installed (apt-get install sysbench)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "sysbench {args:?} on port {port} failed:\n{text}"
    );
    assert!(!text.contains("FATAL"), "{text}");
    text
}

/// The deterministic part of sysbench's report: counts per statement type.
fn statement_counts(report: &str) -> Vec<String> {
    report
        .lines()
        .map(str::trim)
        .filter(|l| {
            [
                "read:",
                "write:",
                "other:",
                "total:",
                "transactions:",
                "queries:",
                "ignored errors:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| {
            l.split('(')
                .next()
                .unwrap_or(l)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn row_counts(port: u16) -> String {
    let (ok, out, err) = common::mysql_cli(
        port,
        &["sbtest"],
        "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM sbtest1; SELECT COUNT(*) FROM sbtest2;",
    );
    assert!(ok, "{err}");
    out
}

#[test]
fn oltp_read_write_matches_direct() {
    common::init_tracing();
    let behind = MariaDb::start();
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&behind]));
    let mut reports = Vec::new();
    for port in [proxy.port, direct.port] {
        let (ok, _, err) = common::mysql_cli(port, &[], "CREATE DATABASE sbtest");
        assert!(ok, "{err}");
        sysbench(port, &["oltp_read_write", "prepare"]);
        let mut counts = Vec::new();
        for mode in ["auto", "disable"] {
            let out = sysbench(
                port,
                &[
                    "oltp_read_write",
                    "run",
                    "--threads=1",
                    "--events=400",
                    "--time=0",
                    &format!("--db-ps-mode={mode}"),
                ],
            );
            assert!(
                out.contains("ignored errors:                      0"),
                "{out}"
            );
            counts.push(statement_counts(&out));
        }
        reports.push(counts);
    }
    assert_eq!(reports[0], reports[1]);
    assert!(
        reports[0][0].iter().any(|l| l == "transactions: 400"),
        "{:?}",
        reports[0]
    );
    let via = row_counts(proxy.port);
    assert_eq!(via, row_counts(direct.port));
    assert_eq!(via, row_counts(behind.port));
    // Concurrency: 4 threads, both modes, no fatal error. (sysbench retries deadlocks and
    // counts them as "ignored errors"; on 2000 rows they happen direct as well.)
    for mode in ["auto", "disable"] {
        let out = sysbench(
            proxy.port,
            &[
                "oltp_read_write",
                "run",
                "--threads=4",
                "--time=3",
                &format!("--db-ps-mode={mode}"),
            ],
        );
        assert!(out.contains("transactions:"), "{out}");
    }
}

fn checksums(port: u16) -> String {
    let (ok, out, err) = common::mysql_cli(
        port,
        &["-N"],
        "CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2",
    );
    assert!(ok, "{err}");
    out
}

/// sysbench prepares BEGIN and COMMIT as well as its writes: every transaction must still go
/// through the log, so after a concurrent run in both modes all three replicas hold the same
/// rows (the primary once held transactions the followers never saw).
#[test]
fn oltp_read_write_leaves_three_identical_replicas() {
    common::init_tracing();
    let dbs = [MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let (ok, _, err) = common::mysql_cli(proxy.port, &[], "CREATE DATABASE sbtest");
    assert!(ok, "{err}");
    sysbench(proxy.port, &["oltp_read_write", "prepare"]);
    for mode in ["auto", "disable"] {
        let out = sysbench(
            proxy.port,
            &[
                "oltp_read_write",
                "run",
                "--threads=4",
                "--time=4",
                &format!("--db-ps-mode={mode}"),
            ],
        );
        assert!(out.contains("transactions:"), "{out}");
    }
    let primary = checksums(dbs[0].port);
    assert!(primary.contains("sbtest.sbtest1"), "{primary}");
    // Acknowledged means a quorum has it; the last follower may still be applying.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let followers = [checksums(dbs[1].port), checksums(dbs[2].port)];
        if followers.iter().all(|f| *f == primary) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas differ after sysbench:\nprimary {primary}\nfollowers {followers:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Failover under load: sysbench oltp_read_write (4 threads, prepared statements, its default
/// error handling: 1213 restarts a transaction, a lost connection is fatal) runs while the
/// primary is killed with -9. Its sessions survive: the transactions in flight get 1213 and
/// are retried, the prepared statements are prepared again on the new primary, elected
/// within 5 s of the kill. After the old primary restarts and rejoins, all three replicas
/// hold the same rows.
#[test]
fn oltp_read_write_rides_through_a_primary_kill() {
    common::init_tracing();
    let mut dbs = vec![MariaDb::start(), MariaDb::start(), MariaDb::start()];
    let proxy = Proxy::start(config_for(&[&dbs[0], &dbs[1], &dbs[2]]));
    let (ok, _, err) = common::mysql_cli(proxy.port, &[], "CREATE DATABASE sbtest");
    assert!(ok, "{err}");
    sysbench(proxy.port, &["oltp_read_write", "prepare"]);
    const KILL_AT_S: u64 = 4;
    let old_primary = dbs.remove(0);
    let (old_port, old_log) = (old_primary.port, old_primary.dir.path().join("server.log"));
    // The restarted server dies with the thread that started it (PR_SET_PDEATHSIG), so that
    // thread lives until the checks are done.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        let mut old_primary = old_primary;
        std::thread::sleep(std::time::Duration::from_secs(KILL_AT_S));
        old_primary.kill9();
        std::thread::sleep(std::time::Duration::from_secs(4));
        old_primary.restart();
        let _ = done_rx.recv();
        old_primary
    });
    let out = sysbench(
        proxy.port,
        &[
            "oltp_read_write",
            "run",
            "--threads=4",
            "--time=14",
            "--report-interval=1",
        ],
    );
    // Per-second reports: "[ 7s ] thds: 4 tps: 51.00 …". Transactions in the seconds after
    // the kill show when writes resumed (sysbench started a moment before the kill timer).
    let tps: Vec<(u64, f64)> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let secs = l
                .strip_prefix("[ ")?
                .split('s')
                .next()?
                .trim()
                .parse()
                .ok()?;
            let tps = l
                .split("tps: ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((secs, tps))
        })
        .collect();
    eprintln!("tps per second: {tps:?}");
    let resumed = tps
        .iter()
        .any(|(s, t)| *s >= KILL_AT_S + 2 && *s <= KILL_AT_S + 5 && *t > 0.0);
    assert!(resumed, "no transactions within 5 s of the kill:\n{out}");
    let elections = proxy.ctx.replication.shards[0]
        .elections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(elections, 1, "{out}");
    assert_ne!(proxy.ctx.replication.shards[0].leader().0, 0);
    // Everyone converges once the old primary rejoined and caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // The restarted server may still refuse connections for a moment.
        let sums: Vec<(bool, String, String)> = [old_port, dbs[0].port, dbs[1].port]
            .iter()
            .map(|p| {
                common::mysql_cli(*p, &["-N"], "CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2")
            })
            .collect();
        if sums.iter().all(|s| s.0 && s.1 == sums[0].1) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(&old_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("replicas differ after failover:\n{sums:?}\nold primary's server.log (last lines first):\n{tail:#?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    done_tx.send(()).unwrap();
    drop(killer.join().unwrap());
}
