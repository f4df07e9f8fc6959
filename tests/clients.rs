//! mysql_async as a client, through the proxy and direct to the same mariadbd: values,
//! multi-results, CALL, errors, big packets, session state, prepared statements.

mod common;

use common::{config_for, MariaDb, Proxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row, Value};

async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).unwrap()).await.unwrap()
}

fn server_error(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

const TYPES_TABLE: &str = "CREATE TABLE typed (
    id INT PRIMARY KEY,
    i BIGINT UNSIGNED, d DECIMAL(20,6), f DOUBLE, dt DATETIME(6), day DATE, t TIME(3),
    s VARCHAR(50) CHARACTER SET utf8mb4, b BLOB, vb VARBINARY(16), bits BIT(10), j JSON,
    n INT NULL)";

fn typed_params(id: i32) -> Vec<Value> {
    vec![
        Value::Int(id as i64),
        Value::UInt(18_000_000_000_000_000_000u64 - id as u64),
        Value::Bytes(format!("{}.123456", 1000 + id).into_bytes()),
        Value::Double(id as f64 / 3.0),
        Value::Date(2024, 2, 29, 23, 59, 58, 123_456 + id as u32),
        Value::Date(1999, 12, 31, 0, 0, 0, 0),
        Value::Time(false, 0, 12, 34, 56, 789_000),
        Value::Bytes(format!("héllo 🐬 {id}").into_bytes()),
        Value::Bytes(vec![0, 255, 1, 254, id as u8, 0]),
        Value::Bytes(vec![0x00, 0xFF, id as u8]),
        Value::Bytes(vec![0x02, 0x01]),
        Value::Bytes(format!("{{\"k\": [{id}, null, \"x\"]}}").into_bytes()),
        Value::NULL,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_text_values_equal_direct() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut direct = connect(&db.url(None)).await;
    direct.query_drop("CREATE DATABASE app").await.unwrap();
    direct
        .query_drop(format!("USE app; {TYPES_TABLE}"))
        .await
        .unwrap();

    let mut via = connect(&proxy.url(Some("app"))).await;
    // One prepared statement executed many times: libmariadb and mysql_async stop resending
    // parameter types after the first execute; ids must arrive unshifted.
    let insert = via
        .prep("INSERT INTO typed VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
        .await
        .unwrap();
    for id in [6161, 1, 2, 300, 70000] {
        via.exec_drop(&insert, typed_params(id)).await.unwrap();
    }
    via.close(insert).await.unwrap();

    direct.query_drop("USE app").await.unwrap();
    let q = "SELECT * FROM typed ORDER BY id";
    let text_direct: Vec<Row> = direct.query(q).await.unwrap();
    let text_proxy: Vec<Row> = via.query(q).await.unwrap();
    let bin_direct: Vec<Row> = direct.exec(q, ()).await.unwrap();
    let bin_proxy: Vec<Row> = via.exec(q, ()).await.unwrap();
    assert_eq!(text_proxy.len(), 5);
    let ids: Vec<i64> = text_proxy.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 300, 6161, 70000]);
    let vals = |rows: &[Row]| {
        rows.iter()
            .map(|r| r.clone().unwrap())
            .collect::<Vec<Vec<Value>>>()
    };
    assert_eq!(vals(&text_proxy), vals(&text_direct));
    assert_eq!(vals(&bin_proxy), vals(&bin_direct));
    // Column metadata is relayed, not rebuilt: charset, flags, decimals as the server sent.
    let meta = |rows: &[Row]| {
        rows[0]
            .columns_ref()
            .iter()
            .map(|c| {
                let t = (c.character_set(), c.flags(), c.decimals(), c.column_type());
                (t, c.org_table_str().to_string())
            })
            .collect::<Vec<_>>()
    };
    let (cols_direct, cols_proxy) = (meta(&bin_direct), meta(&bin_proxy));
    assert_eq!(cols_proxy, cols_direct);
    // Parameters with values read back through a WHERE clause.
    let found: Option<i64> = via
        .exec_first(
            "SELECT id FROM typed WHERE b = ? AND s = ?",
            (vec![0u8, 255, 1, 254, 44, 0], "héllo 🐬 300"),
        )
        .await
        .unwrap();
    assert_eq!(found, Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_results_and_errors() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy.url(None)).await;
    let mut r = c.query_iter("SELECT 1; SELECT 2, 3; DO 1").await.unwrap();
    let a: Vec<u8> = r.collect().await.unwrap();
    let b: Vec<(u8, u8)> = r.collect().await.unwrap();
    assert_eq!((a, b), (vec![1], vec![(2, 3)]));
    drop(r);
    // The error of the second statement arrives as that statement's result.
    let mut r = c
        .query_iter("SELECT 10; SELECT * FROM no_such_db.no_such_table; SELECT 30")
        .await
        .unwrap();
    let first: Vec<u8> = r.collect().await.unwrap();
    assert_eq!(first, vec![10]);
    let err = r.collect::<u8>().await.unwrap_err();
    let (code, state, _) = server_error(err);
    assert_eq!((code, state.as_str()), (1146, "42S02"));
    drop(r);
    // The connection stays usable.
    let v: Option<u8> = c.query_first("SELECT 7").await.unwrap();
    assert_eq!(v, Some(7));
    // A statement the proxy does not know (refused by the proxy itself) fails as the
    // server's syntax error does: after the results before it (PyMySQL's
    // test_nextset_error), in the server's words, naming the rest of the whole text.
    let mut direct = connect(&db.url(None)).await;
    for text in [
        "SELECT 11; xyzzy;",
        "SELECT 12; xyzzy; SELECT 13",
        "xyzzy ;  ",
    ] {
        let mut answers = Vec::new();
        for conn in [&mut direct, &mut c] {
            let mut got = Vec::new();
            match conn.query_iter(text).await {
                Ok(mut rows) => {
                    // Three result sets at most; an error ends them.
                    for _ in 0..3 {
                        match rows.collect::<u8>().await {
                            Ok(v) if v.is_empty() => {}
                            Ok(v) => got.push(format!("{v:?}")),
                            Err(e) => {
                                got.push(format!("{:?}", server_error(e)));
                                break;
                            }
                        }
                    }
                }
                Err(e) => got.push(format!("{:?}", server_error(e))),
            }
            answers.push(got);
        }
        assert_eq!(answers[1], answers[0], "{text}");
        assert!(answers[0].last().unwrap().contains("1064"), "{answers:?}");
    }

    // CALL with two result sets.
    c.query_drop(
        "CREATE DATABASE p; CREATE PROCEDURE p.two() BEGIN SELECT 'a'; SELECT 'b', 'c'; END",
    )
    .await
    .unwrap();
    let mut r = c.query_iter("CALL p.two()").await.unwrap();
    let s1: Vec<String> = r.collect().await.unwrap();
    let s2: Vec<(String, String)> = r.collect().await.unwrap();
    assert_eq!(s1, vec!["a".to_string()]);
    assert_eq!(s2, vec![("b".to_string(), "c".to_string())]);
    drop(r);
    let v: Option<u8> = c.query_first("SELECT 8").await.unwrap();
    assert_eq!(v, Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_code_sqlstate_and_warnings() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy.url(None)).await;
    let err = c
        .query_drop(
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure', MYSQL_ERRNO = 1644",
        )
        .await
        .unwrap_err();
    let (code, state, msg) = server_error(err);
    assert_eq!(
        (code, state.as_str(), msg.as_str()),
        (1644, "45000", "custom failure")
    );
    // Error codes far outside MySQL's range pass through.
    let err = c
        .query_drop("SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 9999, MESSAGE_TEXT = 'odd code'")
        .await
        .unwrap_err();
    assert_eq!(server_error(err).0, 9999);
    // Warnings count and SHOW WARNINGS reach the same connection.
    c.query_drop("SELECT CAST('12abc' AS SIGNED)")
        .await
        .unwrap();
    let warnings: Vec<(String, u16, String)> = c.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1, 1292);
    let r = c
        .query_iter("SELECT CAST('x' AS SIGNED), CAST('y' AS SIGNED)")
        .await
        .unwrap();
    assert_eq!(r.warnings(), 0); // counted at the end of the result
    let mut r = r;
    let _: Vec<Row> = r.collect().await.unwrap();
    drop(r);
    let count: Option<u32> = c.query_first("SELECT @@warning_count").await.unwrap();
    assert_eq!(count, Some(2));
    // In a database the proxy lists a relayed statement's warnings itself (a routine may
    // have left the connection without its database); what the client asks next still
    // answers as the server would have (its SHOW WARNINGS made ROW_COUNT() -1 there).
    let mut d = connect(&proxy.url(Some("mysql"))).await;
    // (Only once a database was dropped: until then none can be missing.)
    d.query_drop("CREATE DATABASE gone").await.unwrap();
    d.query_drop("DROP DATABASE gone").await.unwrap();
    d.query_drop("SET @a = 1/0").await.unwrap();
    let rc: Option<i64> = d.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(rc, Some(0));
    d.query_drop("SET @b = 1/0").await.unwrap();
    let warnings: Vec<(String, u16, String)> = d.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(warnings.iter().map(|w| w.1).collect::<Vec<_>>(), [1365]);
    d.query_drop("SET @c = 1/0").await.unwrap();
    let count: Option<u32> = d.query_first("SELECT @@warning_count").await.unwrap();
    assert_eq!(count, Some(1));
    let db: Option<String> = d.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("mysql"));
}

/// Every answer of `steps` as text, statement by statement (errors as their code).
async fn answers(c: &mut Conn, steps: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        let answer = if let Some(q) = step.strip_prefix("PREPARED ") {
            // Prepared once and cached by the client: later runs are executes only.
            c.exec::<Row, _, _>(q, ()).await.map(|rows| {
                rows.into_iter()
                    .map(|r| format!("{:?}", r.unwrap()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        } else if let Some(v) = step.strip_prefix("EXEC ") {
            // A prepared write, as JDBC and PyMySQL's server-side cursors send them.
            c.exec_drop("INSERT INTO w.t (v) VALUES (?)", (v,))
                .await
                .map(|_| "ok".to_string())
        } else {
            c.query::<Row, _>(*step).await.map(|rows| {
                rows.into_iter()
                    .map(|r| format!("{:?}", r.unwrap()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        };
        out.push(format!(
            "{step} => {}",
            answer.unwrap_or_else(|e| format!("error {}", server_error(e).0))
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_writes_keep_their_warnings_and_row_count() {
    // The proxy's own statements after a write (its log row, COMMIT, the clock reset) clear
    // the server's warnings and zero ROW_COUNT(): the proxy answers them from what it kept.
    common::init_tracing();
    let db = MariaDb::start();
    let direct = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let steps = [
        "CREATE DATABASE w",
        "DROP TABLE IF EXISTS w.nosuch",
        "SHOW WARNINGS",
        "CREATE TABLE w.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
        "CREATE TABLE IF NOT EXISTS w.t (id INT)",
        "SHOW WARNINGS",
        "SELECT @@warning_count, ROW_COUNT()",
        "INSERT INTO w.t (v) VALUES (1), (2), (3)",
        "SELECT ROW_COUNT() AS n",
        "SELECT ROW_COUNT()",
        "SET SESSION sql_mode = ''",
        "INSERT INTO w.t (v) VALUES ('12abc'), ('x')",
        "SHOW WARNINGS",
        "SHOW WARNINGS LIMIT 1, 1",
        "SHOW COUNT(*) WARNINGS",
        "SELECT @@session.warning_count",
        "SHOW ERRORS",
        "UPDATE w.t SET v = v + 1 WHERE id <= 2",
        "SELECT ROW_COUNT()",
        "EXEC 7q",
        "PREPARED SHOW WARNINGS",
        "EXEC 8q",
        "PREPARED SHOW WARNINGS",
        "PREPARED SELECT ROW_COUNT()",
        "EXEC 9q",
        "SHOW WARNINGS",
        "DELETE FROM w.t WHERE id = 3",
        "SELECT COUNT(*) FROM w.t",
        "SHOW WARNINGS",
        "BEGIN",
        "UPDATE w.t SET v = v + 1",
        "SELECT ROW_COUNT()",
        "UPDATE w.t SET v = '5y' WHERE id = 1",
        "SHOW WARNINGS",
        "COMMIT",
        "CREATE TABLE w.t (id INT)",
        "SHOW WARNINGS",
        "SELECT @@error_count",
    ];
    let through_proxy = answers(&mut connect(&proxy.url(None)).await, &steps).await;
    let straight = answers(&mut connect(&direct.url(None)).await, &steps).await;
    assert_eq!(through_proxy, straight);
    // The proxy's answers really carried something (not two empty lists agreeing).
    assert!(
        through_proxy[12].contains("1265") && through_proxy[8].contains("3"),
        "{through_proxy:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_packets_both_directions() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy.url(None)).await;
    // A COM_QUERY payload of exactly 16 MiB − 1 (command byte + text), and one over 16 MiB.
    for payload_len in [0xFF_FFFFusize, 0xFF_FFFF + 1000] {
        let fixed = "SELECT LENGTH('')".len();
        let body = "a".repeat(payload_len - 1 - fixed);
        let n: Option<u64> = c
            .query_first(format!("SELECT LENGTH('{body}')"))
            .await
            .unwrap();
        assert_eq!(n, Some(body.len() as u64));
    }
    // Rows of exactly 16 MiB − 1 payload (lenenc prefix of 4 bytes + data) and larger.
    for data_len in [0xFF_FFFFu64 - 4, 0xFF_FFFF + 10, 20_000_000] {
        let s: Option<Vec<u8>> = c
            .query_first(format!("SELECT REPEAT('z', {data_len})"))
            .await
            .unwrap();
        let s = s.unwrap();
        assert_eq!(s.len() as u64, data_len);
        assert!(s.iter().all(|&b| b == b'z'));
    }
    // Binary protocol, parameter of 17 MB.
    let blob = vec![7u8; 17_000_000];
    let n: Option<u64> = c.exec_first("SELECT LENGTH(?)", (blob,)).await.unwrap();
    assert_eq!(n, Some(17_000_000));

    // Texts the proxy sends in another number of frames than the client did: the answer
    // must still continue the client's sequence ids (before, each of these failed with
    // "packet sequence number wrong").
    c.query_drop("CREATE DATABASE bp; CREATE TABLE bp.t (u VARCHAR(40), b LONGBLOB)")
        .await
        .unwrap();
    let near_boundary = |head: &str, tail: &str| {
        // One frame from the client (payload 16 MiB − 11), two once rewritten.
        let fill = 0xFF_FFFF - 11 - 1 - head.len() - tail.len();
        format!("{head}{}{tail}", "x".repeat(fill))
    };
    // UUID() rewritten to a literal, 30 bytes longer.
    c.query_drop(near_boundary("INSERT INTO bp.t VALUES (UUID(), '", "')"))
        .await
        .unwrap();
    // `@@socket` rewritten to NULL in a read.
    let row: Option<(Option<String>, u64)> = c
        .query_first(near_boundary("SELECT @@socket, LENGTH('", "')"))
        .await
        .unwrap();
    assert_eq!(row.map(|r| r.0), Some(None));
    // A multi-statement text of two frames, run as statements of one frame each.
    let half = |tag: &str| {
        format!(
            "INSERT INTO bp.t VALUES ('{tag}', '{}')",
            "y".repeat(9_000_000)
        )
    };
    c.query_drop(format!("{};{}", half("m1"), half("m2")))
        .await
        .unwrap();
    let rows: Vec<(u64, u64)> = c
        .query("SELECT LENGTH(u), LENGTH(b) FROM bp.t ORDER BY LENGTH(u) DESC, u")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].0, 36, "the UUID was written");
    assert_eq!(&rows[1..], [(2, 9_000_000), (2, 9_000_000)]);
    let v: Option<u8> = c.query_first("SELECT 5").await.unwrap();
    assert_eq!(v, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_size_cap_answers_with_an_error() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut cfg = config_for(&[&db]);
    cfg.proxy.max_packet_size = 1024 * 1024;
    let proxy = Proxy::start(cfg);
    let mut other = connect(&proxy.url(None)).await;
    let mut c = connect(&proxy.url(None)).await;
    // Over 16 MiB: the command spans two frames, and the error must continue their
    // sequence ids (it went out as 1, which clients reject as out of order).
    let big = "x".repeat(17 * 1024 * 1024);
    let err = c.query_drop(format!("SELECT '{big}'")).await.unwrap_err();
    let (code, state, _) = server_error(err);
    assert_eq!((code, state.as_str()), (1153, "08S01"));
    // Everyone else is unaffected.
    let v: Option<u8> = other.query_first("SELECT 5").await.unwrap();
    assert_eq!(v, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_the_session_across_pooled_connections() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut a = connect(&proxy.url(None)).await;
    let mut b = connect(&proxy.url(None)).await;
    let default_mode: Option<String> = b.query_first("SELECT @@sql_mode").await.unwrap();
    a.query_drop("SET sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'")
        .await
        .unwrap();
    a.query_drop("CREATE DATABASE s1").await.unwrap();
    a.query_drop("USE s1").await.unwrap();
    for _ in 0..20 {
        // Interleave: b borrows the connections a used.
        let mb: Option<String> = b.query_first("SELECT @@sql_mode").await.unwrap();
        assert_eq!(mb, default_mode);
        let dbb: Option<Option<String>> = b.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(dbb, Some(None));
        let (ma, tz, dba): (String, String, String) = a
            .query_first("SELECT @@sql_mode, @@time_zone, DATABASE()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (ma.as_str(), tz.as_str(), dba.as_str()),
            ("ANSI_QUOTES", "+05:00", "s1")
        );
    }
    // User variables pin the session to its connection: the value survives.
    a.query_drop("SET @v = 42").await.unwrap();
    for _ in 0..5 {
        let _: Option<u8> = b.query_first("SELECT 1").await.unwrap();
        let v: Option<u32> = a.query_first("SELECT @v").await.unwrap();
        assert_eq!(v, Some(42));
    }
    // COM_RESET_CONNECTION really resets.
    a.reset().await.unwrap();
    let v: Option<Option<u32>> = a.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(None));
    let m: Option<String> = a.query_first("SELECT @@sql_mode").await.unwrap();
    assert_eq!(m, default_mode);
    // Transactions stay on one connection and roll back.
    a.query_drop("CREATE TABLE s1.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO s1.t VALUES (1)").await.unwrap();
    let _: Option<u8> = b.query_first("SELECT 1").await.unwrap();
    let n: Option<u32> = a.query_first("SELECT COUNT(*) FROM s1.t").await.unwrap();
    assert_eq!(n, Some(1));
    a.query_drop("ROLLBACK").await.unwrap();
    let n: Option<u32> = b.query_first("SELECT COUNT(*) FROM s1.t").await.unwrap();
    assert_eq!(n, Some(0));
    // LAST_INSERT_ID() after an autocommit insert sees that insert.
    a.query_drop("CREATE TABLE s1.ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for i in 1..=5u64 {
        a.query_drop("INSERT INTO s1.ai (v) VALUES (1)")
            .await
            .unwrap();
        let _: Option<u8> = b.query_first("SELECT 1").await.unwrap();
        let id: Option<u64> = a.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        assert_eq!(id, Some(i));
    }
}

/// A login naming a database that was dropped is refused with 1049, as MySQL refuses it,
/// also when pooled connections still have it selected (the server keeps a dropped
/// database selected on a connection that had it, so handing out such a connection let the
/// login in). Logins to other databases, and the sessions already in it, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_to_a_dropped_database_is_refused_though_pooled_connections_had_it() {
    common::init_tracing();
    let (a, b, c) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c]));
    let mut other = connect(&proxy.url(None)).await;
    other.query_drop("CREATE DATABASE gone").await.unwrap();
    other
        .query_drop("CREATE TABLE gone.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    common::converge::wait_converged(&[&a, &b, &c]).await;
    // Leaves pooled connections on the primary with `gone` selected.
    let mut sessions = Vec::new();
    for id in 1..=2 {
        let mut s = connect(&proxy.url(Some("gone"))).await;
        s.query_drop(format!("INSERT INTO t VALUES ({id})"))
            .await
            .unwrap();
        // A locking read runs on the primary, and its connection goes back to the pool.
        let _: Option<u32> = s
            .query_first("SELECT COUNT(*) FROM t FOR UPDATE")
            .await
            .unwrap();
        sessions.push(s);
    }
    other.query_drop("DROP DATABASE gone").await.unwrap();
    for _ in 0..3 {
        let e = Conn::new(Opts::from_url(&proxy.url(Some("gone"))).unwrap())
            .await
            .unwrap_err();
        let (code, _, message) = server_error(e);
        assert_eq!((code, message.contains("gone")), (1049, true), "{message}");
    }
    for url in [proxy.url(None), proxy.url(Some("mysql"))] {
        let mut fine = connect(&url).await;
        let one: Option<u32> = fine.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
    }
    // The sessions that had it selected go on, as on MySQL.
    for s in &mut sessions {
        let one: Option<u32> = s.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
    }
}

/// A session whose database another session dropped stays usable, as on MySQL: `SELECT 1`,
/// qualified reads and writes, a transaction and `USE` of another database all work once
/// its statements need new backend connections (the pooled ones that had it selected are
/// gone). The proxy refused every one of them with 1049, and the session never recovered.
/// Unqualified names fail: with 1046 here (a new connection cannot select a database that
/// does not exist), 1146 on MySQL. Created again, the database serves the session again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_database_was_dropped_stays_usable() {
    common::init_tracing();
    let (a, b, c) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c]));
    let mut other = connect(&proxy.url(None)).await;
    for sql in [
        "CREATE DATABASE gone",
        "CREATE TABLE gone.t (id INT PRIMARY KEY)",
        "CREATE DATABASE kept",
        "CREATE TABLE kept.t (id INT PRIMARY KEY)",
    ] {
        other.query_drop(sql).await.unwrap();
    }
    let mut session = connect(&proxy.url(Some("gone"))).await;
    session
        .query_drop("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let _: Option<u32> = session.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    // The followers' replay connections move to `kept`, so that only client connections
    // are left on `gone` when it is dropped.
    other.query_drop("USE kept").await.unwrap();
    other
        .query_drop("INSERT INTO t VALUES (100)")
        .await
        .unwrap();
    other.query_drop("DROP DATABASE gone").await.unwrap();
    common::converge::wait_converged(&[&a, &b, &c]).await;
    // The pooled connections that still have it selected (MySQL's state for the session)
    // go away, so what follows needs new ones.
    for db in [&a, &b, &c] {
        let mut direct = connect(&db.url(None)).await;
        let ids: Vec<u64> = direct
            .query("SELECT id FROM information_schema.processlist WHERE db = 'gone'")
            .await
            .unwrap();
        for id in ids {
            direct.query_drop(format!("KILL {id}")).await.unwrap();
        }
        direct.disconnect().await.unwrap();
    }
    // Pooled connections are checked for a server-side close after a second idle.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let one: Option<u32> = session.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    session
        .query_drop("INSERT INTO kept.t VALUES (1)")
        .await
        .unwrap();
    session.query_drop("BEGIN").await.unwrap();
    session
        .query_drop("INSERT INTO kept.t VALUES (2)")
        .await
        .unwrap();
    session.query_drop("COMMIT").await.unwrap();
    let n: Option<u32> = session
        .query_first("SELECT COUNT(*) FROM kept.t")
        .await
        .unwrap();
    assert_eq!(n, Some(3));
    let e = session.query_drop("SELECT * FROM t").await.unwrap_err();
    assert_eq!(server_error(e).0, 1046);
    // Made again, it serves the session's unqualified names again.
    other.query_drop("CREATE DATABASE gone").await.unwrap();
    other
        .query_drop("CREATE TABLE gone.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    session
        .query_drop("INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    session.query_drop("USE kept").await.unwrap();
    let db: Option<String> = session.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("kept"));
    let n: Option<u32> = session.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(3));
    common::converge::wait_converged(&[&a, &b, &c]).await;
    for db in [&a, &b, &c] {
        let mut direct = connect(&db.url(None)).await;
        let kept: Vec<u32> = direct
            .query("SELECT id FROM kept.t ORDER BY id")
            .await
            .unwrap();
        let gone: Vec<u32> = direct.query("SELECT id FROM gone.t").await.unwrap();
        assert_eq!((kept, gone), (vec![1, 2, 100], vec![7]), "{}", db.port);
        direct.disconnect().await.unwrap();
    }
}

/// No command deselects a database, so a pooled connection another session left on its
/// database must not serve a session without one: its unqualified names would read and
/// write that database where MySQL answers 1046. Replicated, the write was logged without a
/// database, and DATABASE() was NULL on a connection whose database a third session dropped
/// while the proxy still took it for selected (the mutation test's DATABASE() divergence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_database_never_gets_another_sessions() {
    common::init_tracing();
    let (a, b, c) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c]));
    let mut setup = connect(&proxy.url(None)).await;
    setup.query_drop("CREATE DATABASE app").await.unwrap();
    setup
        .query_drop("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    // Pinned (a user variable): the pools' only connections without a database stay out.
    setup.query_drop("SET @pinned = 1").await.unwrap();
    for round in 0..5 {
        // Leaves pooled connections (primary and replicas) on `app`.
        let mut with_db = connect(&proxy.url(Some("app"))).await;
        with_db
            .query_drop(format!("INSERT INTO t VALUES ({}, 'app')", 10 + round))
            .await
            .unwrap();
        let _: Option<u32> = with_db.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        with_db.disconnect().await.unwrap();
        let mut without = connect(&proxy.url(None)).await;
        let db: Option<Option<String>> = without.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db, Some(None), "round {round}");
        let e = without
            .query_drop("INSERT INTO t VALUES (100, 'stray')")
            .await
            .unwrap_err();
        assert_eq!(server_error(e).0, 1046, "round {round}");
        let e = without.query_drop("SELECT * FROM t").await.unwrap_err();
        assert_eq!(server_error(e).0, 1046, "round {round}");
        // The database dropped and made again by a session without one: the pooled
        // connections that had it selected must select it again.
        without.query_drop("DROP DATABASE app").await.unwrap();
        without.query_drop("CREATE DATABASE app").await.unwrap();
        without
            .query_drop("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))")
            .await
            .unwrap();
        let mut again = connect(&proxy.url(Some("app"))).await;
        again
            .query_drop("INSERT INTO t VALUES (1, DATABASE())")
            .await
            .unwrap();
        again.disconnect().await.unwrap();
        without.disconnect().await.unwrap();
        common::converge::wait_converged(&[&a, &b, &c]).await;
        for db in [&a, &b, &c] {
            let mut direct = connect(&db.url(Some("app"))).await;
            let rows: Vec<(u32, String)> = direct.query("SELECT id, v FROM t").await.unwrap();
            assert_eq!(
                rows,
                vec![(1, "app".to_string())],
                "round {round}, {}",
                db.port
            );
            direct.disconnect().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_reauthenticates() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut cfg = config_for(&[&db]);
    cfg.users
        .push(myquorum::config::UserConfig::new("app", "s3cret"));
    let proxy = Proxy::start(cfg);
    // Wrong password at login.
    let err = Conn::new(
        Opts::from_url(&format!(
            "mysql://app:nope@127.0.0.1:{}/?prefer_socket=false",
            proxy.port
        ))
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(server_error(err).0, 1045);
    let mut c = connect(&format!(
        "mysql://app:s3cret@127.0.0.1:{}/?prefer_socket=false",
        proxy.port
    ))
    .await;
    c.query_drop("SET @x = 1").await.unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("root".into()))
            .with_pass(Some("".into())),
    )
    .await
    .unwrap();
    let x: Option<Option<u8>> = c.query_first("SELECT @x").await.unwrap();
    assert_eq!(x, Some(None), "change user resets the session");
    let err = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("wrong".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(server_error(err).0, 1045);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_prefer_the_unix_socket_stay_on_the_proxy() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    // mysql_async's default: reconnect to @@socket when connected over loopback.
    let mut c = connect(&format!("mysql://root@127.0.0.1:{}/", proxy.port)).await;
    let rows: Vec<(String, String)> = c.query("SHOW PROXY STATUS").await.unwrap();
    assert!(rows.iter().any(|(k, _)| k == "connections_active"));
    let socket: Option<Option<String>> = c.query_first("SELECT @@socket").await.unwrap();
    assert_eq!(socket, Some(None));

    // A proxy with its own socket names it (go-sql-driver's tests and tools connect to it).
    let mut cfg = config_for(&[&db]);
    let own = db.dir.path().join("proxy.sock").display().to_string();
    cfg.proxy.listen_socket = own.clone();
    let with_socket = Proxy::start(cfg);
    let mut c = connect(&format!("mysql://root@127.0.0.1:{}/", with_socket.port)).await;
    let socket: Option<String> = c.query_first("SELECT @@socket").await.unwrap();
    assert_eq!(socket.as_deref(), Some(own.as_str()));
    let mut over_socket = connect(&format!("mysql://root@localhost/?socket={own}")).await;
    let rows: Vec<(String, String)> = over_socket.query("SHOW PROXY STATUS").await.unwrap();
    assert!(rows.iter().any(|(k, _)| k == "connections_active"));
}

/// `SHOW PROXY <table> LIKE '<pattern>'` keeps the rows whose first column matches, as
/// SHOW STATUS LIKE does (case-insensitive, `%`, `_`, `\` escapes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_tables_filter_like_show_status() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy.url(None)).await;
    let names = |rows: Vec<(String, String)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let all = names(c.query("SHOW PROXY STATUS").await.unwrap());
    assert!(all.len() > 3, "{all:?}");
    let conn = names(c.query("SHOW PROXY STATUS LIKE 'CONN%'").await.unwrap());
    assert_eq!(conn, ["connections_active", "connections_total"]);
    let one = names(
        c.query("show proxy status like 'replica\\_reads';")
            .await
            .unwrap(),
    );
    assert_eq!(one, ["replica_reads"]);
    let none = names(c.query("SHOW PROXY STATUS LIKE 'nothing%'").await.unwrap());
    assert!(none.is_empty(), "{none:?}");
    let backends: Vec<Row> = c
        .query(format!("SHOW PROXY BACKENDS LIKE '{}'", 0))
        .await
        .unwrap();
    assert_eq!(backends.len(), 1);
}

/// A client idle longer than its `wait_timeout` is disconnected, as the server disconnects
/// it: `proxy.wait_timeout_s` by default, the session's own `SET wait_timeout` when it set
/// one (shorter or longer); an open transaction is rolled back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_disconnected_after_their_wait_timeout() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut cfg = config_for(&[&db]);
    cfg.proxy.wait_timeout_s = 2;
    let proxy = Proxy::start(cfg);
    let mut admin = connect(&proxy.url(None)).await;
    admin.query_drop("CREATE DATABASE idle").await.unwrap();
    admin
        .query_drop("CREATE TABLE idle.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    drop(admin);
    let url = proxy.url(None);
    // Each client: what it runs, how long it then sits idle, whether it is still there.
    let idle = |setup: &'static [&'static str], sleep_ms: u64| {
        let url = url.clone();
        async move {
            let mut c = connect(&url).await;
            for sql in setup {
                c.query_drop(*sql).await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
            c.query_first::<i64, _>("SELECT 1").await.is_ok()
        }
    };
    let (default_limit, own_shorter, own_longer, in_transaction, busy) = tokio::join!(
        idle(&["SELECT 1"], 3500),
        idle(&["SET SESSION wait_timeout = 1"], 1800),
        idle(&["SET wait_timeout = 3600"], 3500),
        idle(&["BEGIN", "INSERT INTO idle.t VALUES (1)"], 3500),
        idle(&["SELECT 1"], 800),
    );
    assert!(
        !default_limit,
        "idle past proxy.wait_timeout_s and still connected"
    );
    assert!(
        !own_shorter,
        "idle past its own wait_timeout and still connected"
    );
    assert!(own_longer, "its own longer wait_timeout was not honoured");
    assert!(
        !in_transaction,
        "idle in a transaction past wait_timeout and still connected"
    );
    assert!(busy, "closed before its wait_timeout");
    let mut fresh = connect(&proxy.url(None)).await;
    let rows: Option<i64> = fresh
        .query_first("SELECT COUNT(*) FROM idle.t")
        .await
        .unwrap();
    assert_eq!(rows, Some(0), "the idle transaction's insert was committed");
    let counted: Vec<(String, String)> = fresh
        .query("SHOW PROXY STATUS LIKE 'idle_timeouts'")
        .await
        .unwrap();
    assert_eq!(counted, [("idle_timeouts".to_string(), "3".to_string())]);
}

/// Through the proxy a session has one id: the handshake's, which CONNECTION_ID() gives
/// (text and prepared, in reads and in writes, replicated as that value), SHOW [FULL]
/// PROCESSLIST lists (the proxy's sessions, in MariaDB's columns; a user who is not a proxy
/// admin sees their own) and KILL takes. Before, CONNECTION_ID() gave the thread of whichever
/// backend connection the statement ran on, a write calling it was refused, and SHOW
/// PROCESSLIST listed a backend's threads, whose ids KILL does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_has_one_id_for_connection_id_processlist_and_kill() {
    common::init_tracing();
    let db = MariaDb::start();
    let mut cfg = config_for(&[&db]);
    let mut viewer = myquorum::config::UserConfig::new("viewer", "pw");
    viewer.admin = Some(false);
    cfg.users.push(viewer);
    let proxy = Proxy::start(cfg);
    let mut a = connect(&proxy.url(None)).await;
    let mut b = connect(&proxy.url(None)).await;
    let a_id = a.id() as u64;
    for sql in ["SELECT CONNECTION_ID()", "SELECT connection_id() AS me"] {
        let got: Option<u64> = a.query_first(sql).await.unwrap();
        assert_eq!(got, Some(a_id), "{sql}");
        let got: Option<u64> = a.exec_first(sql, ()).await.unwrap();
        assert_eq!(got, Some(a_id), "prepared {sql}");
    }
    // The column keeps its name and type: INT UNSIGNED NOT NULL (Connector/J gives Long
    // for it, Integer for a signed INT).
    let row: Row = a
        .query_first("SELECT CONNECTION_ID(), 2")
        .await
        .unwrap()
        .unwrap();
    let column = &row.columns_ref()[0];
    assert_eq!(&*column.name_str(), "CONNECTION_ID()");
    assert_eq!(
        column.column_type(),
        mysql_async::consts::ColumnType::MYSQL_TYPE_LONG
    );
    let flags = column.flags();
    assert!(
        flags.contains(mysql_async::consts::ColumnFlags::UNSIGNED_FLAG)
            && flags.contains(mysql_async::consts::ColumnFlags::NOT_NULL_FLAG),
        "{flags:?}"
    );
    for sql in [
        "CREATE DATABASE cid",
        "CREATE TABLE cid.jobs (id INT PRIMARY KEY, owner BIGINT UNSIGNED)",
        "INSERT INTO cid.jobs VALUES (1, NULL), (2, NULL), (3, NULL)",
        "INSERT INTO cid.jobs VALUES (4, CONNECTION_ID())",
        "SET @me = CONNECTION_ID()",
    ] {
        a.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    a.exec_drop(
        "UPDATE cid.jobs SET owner = CONNECTION_ID() WHERE id = ?",
        (2,),
    )
    .await
    .unwrap();
    b.query_drop("UPDATE cid.jobs SET owner = CONNECTION_ID() WHERE id = 3")
        .await
        .unwrap();
    let owners: Vec<(i32, Option<u64>)> = a
        .query("SELECT id, owner FROM cid.jobs WHERE owner = @me OR owner = CONNECTION_ID() + 0 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(owners, [(2, Some(a_id)), (4, Some(a_id))]);
    let mut direct = connect(&db.url(None)).await;
    let stored: Vec<(i32, Option<u64>)> = direct
        .query("SELECT id, owner FROM cid.jobs ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        stored,
        [
            (1, None),
            (2, Some(a_id)),
            (3, Some(b.id() as u64)),
            (4, Some(a_id))
        ]
    );
    // Read with a server's processlist, it is that server's thread (the row is its own).
    let found: Option<u64> = a
        .query_first("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .await
        .unwrap();
    assert!(found.is_some());

    // SHOW PROCESSLIST: the proxy's sessions, under those ids.
    let a_runs = tokio::spawn(async move {
        let r: Option<i64> = a.query_first("SELECT SLEEP(1.5)").await.unwrap();
        (a, r)
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let listed: Vec<Row> = b.query("SHOW FULL PROCESSLIST").await.unwrap();
    assert_eq!(
        &*listed[0]
            .columns_ref()
            .iter()
            .map(|c| c.name_str().to_string())
            .collect::<Vec<_>>(),
        ["Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Progress"]
    );
    // Id and Time are integers, as the server types them (PyMySQL returned Id as a string,
    // and its test_issue_36 compares it with the connection's thread id).
    let on_server: Vec<Row> = direct.query("SHOW PROCESSLIST").await.unwrap();
    use mysql_async::consts::ColumnType::{MYSQL_TYPE_LONG, MYSQL_TYPE_LONGLONG};
    let integer = |t| matches!(t, MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG);
    for (i, name) in [(0, "Id"), (5, "Time")] {
        let theirs = on_server[0].columns_ref()[i].column_type();
        let ours = listed[0].columns_ref()[i].column_type();
        assert!(
            integer(theirs) && integer(ours),
            "{name}: {ours:?} against {theirs:?}"
        );
    }
    assert_eq!(
        listed[0].columns_ref()[0].column_type(),
        on_server[0].columns_ref()[0].column_type()
    );
    let ids: Vec<u64> = listed
        .iter()
        .map(|r| r.get::<String, _>("Id").unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [a_id, b.id() as u64]);
    let a_row = &listed[0];
    assert_eq!(a_row.get::<String, _>("Command").as_deref(), Some("Query"));
    assert_eq!(
        a_row.get::<String, _>("Info").as_deref(),
        Some("SELECT SLEEP(1.5)")
    );
    assert!(a_row
        .get::<String, _>("Host")
        .is_some_and(|h| h.starts_with("127.0.0.1:")));
    // Where each runs: a's statement on the server; b's, this SHOW, on the proxy.
    assert_eq!(
        a_row.get::<String, _>("State"),
        Some(format!("running on {} (thread {})", db.addr(), {
            let t: Option<u64> = direct
                .query_first(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'",
                )
                .await
                .unwrap();
            t.unwrap()
        }))
    );
    assert_eq!(listed[1].get::<String, _>("State").as_deref(), Some(""));
    // Not an admin: only one's own sessions.
    let viewer_url = proxy.url(None).replace("root@", "viewer:pw@");
    let mut v = connect(&viewer_url).await;
    let seen: Vec<Row> = v.query("SHOW PROCESSLIST").await.unwrap();
    let seen: Vec<String> = seen
        .iter()
        .map(|r| r.get::<String, _>("Id").unwrap())
        .collect();
    assert_eq!(seen, [v.id().to_string()]);
    let (mut a, slept) = a_runs.await.unwrap();
    assert_eq!(slept, Some(0));
    // The id CONNECTION_ID() gave is the one KILL takes.
    let a_said: Option<u64> = a.query_first("SELECT CONNECTION_ID()").await.unwrap();
    b.query_drop(format!("KILL {}", a_said.unwrap()))
        .await
        .unwrap();
    assert!(a.query_drop("SELECT 1").await.is_err(), "a was not killed");
}

/// A HANDLER lives on one backend connection, holding its table's metadata lock until
/// HANDLER … CLOSE: the session keeps that connection meanwhile (its reads find the
/// handler), and a session that ends with one open takes the connection with it. Before,
/// the connection went back to the pool after HANDLER … OPEN: the session's next HANDLER
/// READ could land elsewhere, and the idle pooled connection kept the table's lock, so
/// every later DDL on it waited (fuzz seed 56: writes and DDL on the table hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_keep_their_connection_and_leave_with_it() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut a = connect(&proxy.url(None)).await;
    let mut b = connect(&proxy.url(None)).await;
    for sql in [
        "CREATE DATABASE hd",
        "CREATE TABLE hd.t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO hd.t VALUES (1, 10), (2, 20)",
    ] {
        a.query_drop(sql).await.unwrap();
    }
    a.query_drop("HANDLER hd.t OPEN AS h").await.unwrap();
    // Another session holds a primary connection meanwhile (the pool's most recently
    // returned one, had the handler's gone back).
    b.query_drop("BEGIN").await.unwrap();
    let locked: Option<i32> = b
        .query_first("SELECT v FROM hd.t WHERE id = 2 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(locked, Some(20));
    let first: Vec<(i32, i32)> = a.query("HANDLER h READ `PRIMARY` FIRST").await.unwrap();
    assert_eq!(first, [(1, 10)]);
    let next: Vec<(i32, i32)> = a.query("HANDLER h READ `PRIMARY` NEXT").await.unwrap();
    assert_eq!(next, [(2, 20)]);
    a.query_drop("HANDLER h CLOSE").await.unwrap();
    b.query_drop("COMMIT").await.unwrap();
    // A session leaving with a handler open leaves nothing locked behind: when it quits,
    // and when a failed COM_CHANGE_USER ends it.
    b.query_drop("SET SESSION lock_wait_timeout = 3")
        .await
        .unwrap();
    for failed_change_user in [false, true] {
        // b holds a connection of its own (the pool's last one could be a's).
        b.query_drop("BEGIN").await.unwrap();
        b.query_drop("SELECT v FROM hd.t WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
        a.query_drop("HANDLER hd.t OPEN").await.unwrap();
        if failed_change_user {
            let err = a
                .change_user(
                    mysql_async::ChangeUserOpts::default()
                        .with_user(Some("nobody".into()))
                        .with_pass(Some("wrong".into())),
                )
                .await
                .unwrap_err();
            assert_eq!(server_error(err).0, 1045);
            drop(a);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        } else {
            a.disconnect().await.unwrap();
        }
        for sql in ["LOCK TABLES hd.t WRITE", "UNLOCK TABLES"] {
            let started = std::time::Instant::now();
            b.query_drop(sql).await.unwrap_or_else(|e| {
                panic!(
                    "{sql} after {:?} ({failed_change_user}): {e}",
                    started.elapsed()
                )
            });
        }
        a = connect(&proxy.url(None)).await;
    }
}

/// KILL takes the proxy's connection ids (the handshake's, which the mysql CLI's Ctrl-C and
/// JDBC query timeouts use): KILL QUERY stops that session's statement on whichever backend
/// runs it and leaves the session usable; KILL ends the session (its open transaction rolled
/// back); an id that is no proxy session is unknown, even when a backend thread has that
/// number. Before, the statement was forwarded and stopped whatever backend thread had the
/// number: another client's query, or the proxy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_takes_the_proxys_connection_ids() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut a = connect(&proxy.url(None)).await;
    let mut b = connect(&proxy.url(None)).await;
    let a_id = a.id();
    let sleeper = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r: mysql_async::Result<Option<i64>> = a.query_first("SELECT SLEEP(20)").await;
        (a, r.map_err(server_error), started.elapsed())
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The processlist shows it under the id KILL takes, with where it runs.
    let listed: Vec<Row> = b.query("SHOW PROXY PROCESSLIST").await.unwrap();
    let row = listed
        .iter()
        .find(|r| r.get::<String, _>("id") == Some(a_id.to_string()))
        .expect("session a is listed");
    assert_eq!(
        row.get::<String, _>("info").as_deref(),
        Some("SELECT SLEEP(20)")
    );
    assert_eq!(row.get::<String, _>("command").as_deref(), Some("Query"));
    assert_eq!(row.get::<String, _>("backend"), Some(db.addr()));
    b.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();
    let (mut a, result, took) = sleeper.await.unwrap();
    assert_eq!(result.map_err(|e| e.0), Err(1317), "after {took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let one: Option<i64> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on after KILL QUERY");

    // A backend thread whose number is no proxy session's is out of reach.
    let mut direct = connect(&db.url(None)).await;
    let mut thread = direct.id();
    let mut spare = Vec::new();
    while thread == a_id || thread == b.id() {
        spare.push(connect(&db.url(None)).await);
        direct = connect(&db.url(None)).await;
        thread = direct.id();
    }
    let direct_sleep = tokio::spawn(async move {
        let r: Option<i64> = direct.query_first("SELECT SLEEP(2)").await.unwrap();
        r
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let err = b
        .query_drop(format!("KILL QUERY {thread}"))
        .await
        .unwrap_err();
    assert_eq!(server_error(err).0, 1094);
    assert_eq!(
        direct_sleep.await.unwrap(),
        Some(0),
        "the backend's own query ran to its end"
    );

    // KILL CONNECTION: the session ends, its transaction rolled back.
    a.query_drop("CREATE DATABASE k").await.unwrap();
    a.query_drop("CREATE TABLE k.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO k.t VALUES (1)").await.unwrap();
    b.query_drop(format!("KILL {a_id}")).await.unwrap();
    assert!(
        a.query_drop("SELECT 1").await.is_err(),
        "the killed session answered"
    );
    let n: Option<i64> = b.query_first("SELECT COUNT(*) FROM k.t").await.unwrap();
    assert_eq!(n, Some(0));
    let err = b.query_drop(format!("KILL {a_id}")).await.unwrap_err();
    assert_eq!(server_error(err).0, 1094, "a killed session is gone");
    let err = b.query_drop("KILL USER root").await.unwrap_err();
    assert_eq!(server_error(err).0, 1235);
    // Killing oneself: the server's answer, then the connection closes.
    let b_id = b.id();
    let err = b.query_drop(format!("KILL {b_id}")).await.unwrap_err();
    assert_eq!(server_error(err).0, 1927);
    drop(spare);
}

/// Clients that prepare, execute and close on every call (Go's database/sql, Connector/C
/// fallbacks, mysql_async without a statement cache) must not leave server statements
/// behind: each left one on a pooled connection, until the server's global
/// max_prepared_stmt_count (16382) refused every PREPARE from every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_per_call_do_not_pile_up_on_the_server() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut direct = connect(&db.url(None)).await;
    direct
        .query_drop("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut via = connect(&format!("{}&stmt_cache_size=0", proxy.url(Some("app")))).await;
    for i in 0..600 {
        via.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (i, i * 2))
            .await
            .unwrap();
        let v: Option<i64> = via
            .exec_first("SELECT v FROM t WHERE id = ?", (i,))
            .await
            .unwrap();
        assert_eq!(v, Some(i * 2));
    }
    let same_texts = common::converge::global_status(&db, "Prepared_stmt_count").await;
    // Endless distinct texts (an IN list of every arity) are capped per connection.
    for n in 1..=700 {
        let marks = vec!["?"; n].join(", ");
        let ids: Vec<Value> = (0..n as i64).map(Value::Int).collect();
        let count: Option<i64> = via
            .exec_first(format!("SELECT COUNT(*) FROM t WHERE id IN ({marks})"), ids)
            .await
            .unwrap();
        assert_eq!(count, Some(n.min(600) as i64));
    }
    let distinct_texts = common::converge::global_status(&db, "Prepared_stmt_count").await;
    let backend_connections: u64 = direct
        .query_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'",
        )
        .await
        .unwrap()
        .unwrap();
    drop(via);
    // Each pooled connection keeps a text once (2 texts here, on the few connections
    // the session used); 1,200 calls left 1,200 statements before.
    assert!(
        same_texts <= 2 * backend_connections,
        "{same_texts} statements left by 1,200 calls of 2 texts on {backend_connections} connections"
    );
    assert!(
        distinct_texts <= 256 * backend_connections,
        "{distinct_texts} statements left by 700 texts on {backend_connections} connections"
    );
}

/// A backend at its max_connections refuses with 1040 (before its greeting, without a
/// SQLSTATE, when far over): sessions hear the server's own 1040, as a direct connection
/// would, not "backend unreachable: malformed error packet" (9003); and the sessions that
/// got a connection carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_connection_limit_answers_too_many_connections() {
    common::init_tracing();
    let mut db = MariaDb::start();
    db.restart_with(&["--max-connections=10"]);
    let proxy = Proxy::start(config_for(&[&db]));
    let mut holding = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..30 {
        let opened = Conn::new(Opts::from_url(&proxy.url(None)).unwrap()).await;
        let mut c = match opened {
            Ok(c) => c,
            Err(e) => {
                refusals.push(server_error(e));
                continue;
            }
        };
        // A transaction keeps its backend connection until it ends.
        match c.query_drop("BEGIN; SELECT 1").await {
            Ok(()) => holding.push(c),
            Err(e) => refusals.push(server_error(e)),
        }
    }
    assert!(
        !refusals.is_empty(),
        "30 transactions open on a server with max_connections = 10"
    );
    for (code, _, message) in &refusals {
        assert_eq!(
            (*code, message.as_str()),
            (1040, "Too many connections"),
            "{refusals:?}"
        );
    }
    for c in &mut holding {
        c.query_drop("COMMIT").await.unwrap();
        let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1));
    }
}

/// The session's state as a raw client reads it from the end of each answer: (autocommit,
/// in a transaction), from the OK packet or the result set's terminator (read in the
/// dialect `caps` negotiated).
async fn states_after(
    port: u16,
    caps: mysql_common::constants::CapabilityFlags,
    statements: &[&str],
) -> Vec<(bool, bool)> {
    use myquorum::protocol::handshake::client_handshake;
    use myquorum::protocol::message::{is_terminator, terminator_status, OkInfo};
    use mysql_common::constants::{CapabilityFlags, StatusFlags};
    let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut s = myquorum::protocol::PacketStream::new(tcp);
    client_handshake(&mut s, "root", "", None, caps, 45)
        .await
        .unwrap();
    let mut states = Vec::new();
    for sql in statements {
        s.write_packet(0, &[&[0x03u8][..], sql.as_bytes()].concat())
            .await
            .unwrap();
        // Each result of the answer (a CALL's result sets, then its OK), to the last.
        let status = loop {
            let first = s.read_packet().await.unwrap().payload;
            let status = match first[0] {
                0x00 => OkInfo::decode(&first).unwrap().status,
                0xFF => panic!("{sql}: {:?}", String::from_utf8_lossy(&first)),
                columns => {
                    for _ in 0..columns {
                        s.read_packet().await.unwrap();
                    }
                    if !deprecate_eof {
                        s.read_packet().await.unwrap();
                    }
                    loop {
                        let p = s.read_packet().await.unwrap().payload;
                        if is_terminator(&p) {
                            break terminator_status(&p, deprecate_eof).unwrap().0;
                        }
                    }
                }
            };
            if status & StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits() == 0 {
                break status;
            }
        };
        let has = |f: StatusFlags| status & f.bits() != 0;
        states.push((
            has(StatusFlags::SERVER_STATUS_AUTOCOMMIT),
            has(StatusFlags::SERVER_STATUS_IN_TRANS),
        ));
    }
    states
}

/// An autocommit write answers with the state the session is in after it, autocommit on and
/// no transaction, also when the answer is a result set (`INSERT … RETURNING`, which Django
/// sends for every create on MariaDB). The proxy runs such a write in a transaction of its
/// own on the primary, and relayed that transaction's state from a result set's terminator:
/// mysqlclient then believed autocommit was off and sent no `SET autocommit=0` for the next
/// atomic block, whose statements each committed on their own (Django's
/// test_implicit_savepoint_rollback and test_decorator_syntax_rollback through the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autocommit_write_returning_rows_leaves_autocommit_on() {
    use mysql_common::constants::CapabilityFlags;
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy.url(None)).await;
    c.query_drop("CREATE DATABASE st").await.unwrap();
    c.query_drop("CREATE TABLE st.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop(
        "CREATE PROCEDURE st.add_and_list(x INT) \
         BEGIN INSERT INTO st.t (v) VALUES (x); SELECT COUNT(*) FROM st.t; END",
    )
    .await
    .unwrap();
    let statements = [
        // A CALL that writes and returns a result set: its final OK.
        "CALL st.add_and_list(4)",
        "INSERT INTO st.t (v) VALUES (1)",
        "INSERT INTO st.t (v) VALUES (2), (3) RETURNING id",
        "REPLACE INTO st.t VALUES (1, 5) RETURNING v",
        "INSERT INTO st.t (v) SELECT v FROM st.t WHERE id = 2 RETURNING id, v",
        "DELETE FROM st.t WHERE id > 3 RETURNING id",
        "BEGIN",
        "INSERT INTO st.t (v) VALUES (9) RETURNING id",
        "ROLLBACK",
    ];
    let autocommit_on = (true, false);
    let want = [
        autocommit_on,
        autocommit_on,
        autocommit_on,
        autocommit_on,
        autocommit_on,
        autocommit_on,
        (true, true),
        (true, true),
        autocommit_on,
    ];
    let modern = myquorum::protocol::handshake::proxy_capabilities(false);
    for caps in [modern, modern - CapabilityFlags::CLIENT_DEPRECATE_EOF] {
        let via = states_after(proxy.port, caps, &statements).await;
        assert_eq!(via, want, "through the proxy, {caps:?}");
        // The server itself answers so.
        let direct = states_after(db.port, caps, &statements[6..]).await;
        assert_eq!(direct, want[6..], "direct, {caps:?}");
    }
    // Reads and settings with autocommit off and on, as the server answers them.
    let reads = [
        "SET autocommit = 0",
        "SELECT 1",
        "SELECT id FROM st.t ORDER BY id",
        "SELECT id FROM st.t WHERE id = 1 FOR UPDATE",
        "COMMIT",
        "SELECT 2",
        "SET autocommit = 1",
        "SELECT id FROM st.t ORDER BY id",
        "START TRANSACTION READ ONLY",
        "SELECT id FROM st.t ORDER BY id",
        "COMMIT",
    ];
    for caps in [modern, modern - CapabilityFlags::CLIENT_DEPRECATE_EOF] {
        let via = states_after(proxy.port, caps, &reads).await;
        let direct = states_after(db.port, caps, &reads).await;
        assert_eq!(via, direct, "{caps:?}");
    }
    // A READ COMMITTED session's reads that the proxy runs outside its transaction, before
    // the server began it (in autocommit, or between `SET autocommit = 1` and `= 0`), show
    // the session's autocommit state as the server's own READ COMMITTED reads do. With
    // autocommit off, the server's first read of a table begins a transaction and says so;
    // through the proxy none is open there, and the flags say that (a pool that rolls back
    // only an open transaction has nothing to roll back).
    let committed = [
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET autocommit = 0",
        "SELECT id FROM st.t ORDER BY id",
        "SELECT 1",
        "COMMIT",
        "SELECT id FROM st.t ORDER BY id",
        "INSERT INTO st.t (v) VALUES (7)",
        "SELECT id FROM st.t ORDER BY id",
        "ROLLBACK",
        "SET autocommit = 1",
        "BEGIN",
        "SELECT id FROM st.t ORDER BY id",
        "SELECT 2",
        "COMMIT",
        "START TRANSACTION READ ONLY",
        "SELECT id FROM st.t ORDER BY id",
        "ROLLBACK",
    ];
    let outside = || {
        proxy
            .ctx
            .counters
            .read_committed_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for caps in [modern, modern - CapabilityFlags::CLIENT_DEPRECATE_EOF] {
        let before = outside();
        let via = states_after(proxy.port, caps, &committed).await;
        assert_eq!(outside() - before, 6, "{caps:?}");
        let direct = states_after(db.port, caps, &committed).await;
        let mut want = direct.clone();
        for outside_with_autocommit_off in [2, 3, 5] {
            assert_eq!(want[outside_with_autocommit_off], (false, true));
            want[outside_with_autocommit_off].1 = false;
        }
        assert_eq!(via, want, "{caps:?}");
    }
}
