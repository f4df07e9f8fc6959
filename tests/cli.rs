//! The `mysql` command-line client through the proxy.

mod common;

use common::{config_for, mysql_cli, MariaDb, Proxy};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn batch_session_matches_direct() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let setup = "CREATE DATABASE shop; USE shop; \
        CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2), made DATETIME(6)); \
        INSERT INTO items VALUES (1,'ä',1.50,'2024-01-02 03:04:05.123456'),(2,NULL,2.00,NULL);";
    let (ok, _, err) = mysql_cli(proxy.port, &[], setup);
    assert!(ok, "{err}");
    let q = "SELECT * FROM items ORDER BY id; SELECT COUNT(*), SUM(price) FROM items; SHOW TABLES;";
    let (ok1, via, e1) = mysql_cli(proxy.port, &["shop"], q);
    let (ok2, direct, e2) = mysql_cli(db.port, &["shop"], q);
    assert!(ok1 && ok2, "{e1} {e2}");
    assert_eq!(via, direct);
    assert!(via.contains("2024-01-02 03:04:05.123456"));
    // Errors arrive with code and SQLSTATE, and the session goes on (--force).
    let (_, out, err) = mysql_cli(
        proxy.port,
        &["--force"],
        "SELECT * FROM nope.nope; SELECT 'still here';",
    );
    assert!(err.contains("ERROR 1146 (42S02)"), "{err}");
    assert!(out.contains("still here"));
    // Wrong password.
    let (ok, _, err) = mysql_cli(proxy.port, &["-pwrong"], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
}

/// Interactive `USE db` on a database with tables (no -A) sends COM_FIELD_LIST per table;
/// a wrong reply makes the client hang.
#[test]
fn interactive_use_database_with_tables() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let (ok, _, err) = mysql_cli(
        proxy.port,
        &[],
        "CREATE DATABASE app; CREATE TABLE app.t1 (a INT, b TEXT); CREATE TABLE app.t2 (c INT); INSERT INTO app.t1 VALUES (1,'x');",
    );
    assert!(ok, "{err}");
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("mysql -h127.0.0.1 -P{} -uroot", proxy.port),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) gives the mysql CLI a terminal");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"USE app\nSELECT COUNT(*) AS n FROM t1;\nquit\n")
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mysql CLI hung after USE on a database with tables");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Reading table information"), "{text}");
    assert!(text.contains("Database changed"), "{text}");
    assert!(text.contains("1 row in set"), "{text}");
}

/// mysqladmin (COM_STATISTICS, COM_PING), LOAD DATA LOCAL (server-side LOAD DATA refused
/// clearly), and the client's character
/// set mirrored to the backend session.
#[test]
fn admin_commands_local_infile_and_charset() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let run_admin = |cmd: &str| {
        Command::new("mysqladmin")
            .args(["-h127.0.0.1", &format!("-P{}", proxy.port), "-uroot", cmd])
            .output()
            .expect("mysqladmin (mariadb-client)")
    };
    let admin = |cmd: &str| {
        let out = run_admin(cmd);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(admin("status").contains("Uptime:"));
    assert!(admin("ping").contains("alive"));
    // COM_REFRESH reaches the primary (before: "Unknown command"); the processlist is the
    // proxy's (its own session is listed, with the statement mysqladmin sent).
    admin("refresh");
    let listed = admin("processlist");
    assert!(listed.contains("| Progress |"), "{listed}");
    assert!(listed.contains("show processlist"), "{listed}");
    // COM_SHUTDOWN is refused as SHUTDOWN is (it would stop the primary), and the server
    // is still there.
    let out = run_admin("shutdown");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would stop the shard's primary"), "{err}");
    assert!(admin("ping").contains("alive"));

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, "1,one\n2,two\n3,three\n").unwrap();
    // LOAD DATA LOCAL goes through the proxy (and its log); server-side LOAD DATA INFILE is
    // refused clearly (the file would be on the primary's host only), and the session goes on.
    let sql = format!(
        "CREATE DATABASE li; CREATE TABLE li.t (id INT, name TEXT); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE li.t FIELDS TERMINATED BY ',';",
        csv.display()
    );
    let (ok, _, err) = mysql_cli(proxy.port, &["--local-infile=1"], &sql);
    assert!(ok, "{err}");
    let sql = format!(
        "LOAD DATA INFILE '{}' INTO TABLE li.t FIELDS TERMINATED BY ',';",
        csv.display()
    );
    let (ok, _, err) = mysql_cli(proxy.port, &[], &sql);
    assert!(!ok);
    assert!(err.contains("1235") && err.contains("LOCAL"), "{err}");
    let (ok, out, err) = mysql_cli(
        proxy.port,
        &["--local-infile=1", "--force"],
        "INSERT INTO li.t VALUES (4, 'four'); SELECT COUNT(*) FROM li.t;",
    );
    assert!(ok, "{err}");
    assert!(out.contains("COUNT(*)\n4"), "{out}");

    for cs in ["latin1", "utf8mb4"] {
        let (ok, out, err) = mysql_cli(
            proxy.port,
            &[&format!("--default-character-set={cs}")],
            "SELECT @@character_set_client, @@character_set_results;",
        );
        assert!(ok, "{err}");
        assert!(out.contains(&format!("{cs}\t{cs}")), "{cs}: {out}");
    }
}
