//! Malformed packets, unknown commands, bad statement ids and wrong passwords each get a
//! clear error, and the proxy keeps serving everyone else.

mod common;

use base64::Engine as _;
use common::{config_for, MariaDb, Proxy};
use myquorum::protocol::handshake::{client_handshake, proxy_capabilities};
use myquorum::protocol::message::MysqlError;
use myquorum::protocol::PacketStream;
use mysql_async::prelude::*;
use tokio::net::TcpStream;

async fn raw_login(port: u16, password: &str) -> std::io::Result<PacketStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut s = PacketStream::new(tcp);
    client_handshake(
        &mut s,
        "root",
        password,
        None,
        proxy_capabilities(false),
        45,
    )
    .await?;
    Ok(s)
}

/// A mysql_async session through the proxy (the statements around the raw ones).
async fn connect(proxy: &Proxy) -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(&proxy.url(None)).unwrap())
        .await
        .unwrap()
}

async fn expect_error(s: &mut PacketStream<TcpStream>, payload: &[u8]) -> MysqlError {
    s.write_packet(0, payload).await.unwrap();
    let p = s.read_packet().await.unwrap();
    assert_eq!(p.seq, 1);
    MysqlError::decode(&p.payload).unwrap_or_else(|| panic!("expected ERR, got {:?}", p.payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_others_keep_working() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut bystander = connect(&proxy).await;
    bystander.query_drop("CREATE DATABASE k").await.unwrap();

    // A garbage handshake response.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut s = PacketStream::new(tcp);
    let _greeting = s.read_packet().await.unwrap();
    s.write_packet(1, &[0xde, 0xad, 0xbe, 0xef]).await.unwrap();
    let p = s.read_packet().await.unwrap();
    let e = MysqlError::decode(&p.payload).unwrap();
    assert_eq!((e.code, e.state_str()), (1043, "08S01"));

    // A client that disconnects mid-packet.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut s = PacketStream::new(tcp);
    let _greeting = s.read_packet().await.unwrap();
    drop(s);

    // Wrong password.
    let err = match raw_login(proxy.port, "wrong").await {
        Ok(_) => panic!("wrong password accepted"),
        Err(e) => e,
    };
    let inner = err.into_inner().unwrap();
    let e = inner.downcast_ref::<MysqlError>().unwrap();
    assert_eq!((e.code, e.state_str()), (1045, "28000"));

    let mut s = raw_login(proxy.port, "").await.unwrap();
    let e = expect_error(&mut s, &[0x30]).await;
    assert_eq!((e.code, e.state_str()), (1047, "08S01"));
    let e = expect_error(&mut s, &[]).await;
    assert_eq!(e.code, 1835);
    let e = expect_error(&mut s, &[0x17, 0x01]).await;
    assert_eq!(e.code, 1835);
    let e = expect_error(&mut s, &[0x17, 99, 0, 0, 0, 0, 1, 0, 0, 0]).await;
    assert_eq!((e.code, e.state_str()), (1243, "HY000"));
    assert!(e.message.contains("(99)"), "{}", e.message);
    let e = expect_error(&mut s, &[0x1A, 5, 0, 0, 0]).await;
    assert_eq!(e.code, 1243);
    // COM_STMT_CLOSE of an unknown id has no reply (as in MySQL); the next command works.
    s.write_packet(0, &[0x19, 7, 0, 0, 0]).await.unwrap();
    let e = expect_error(&mut s, b"\x03SELEC nonsense").await;
    assert_eq!((e.code, e.state_str()), (1064, "42000"));
    let e = expect_error(&mut s, b"\x03").await;
    assert_eq!(e.code, 1065);
    let e = expect_error(&mut s, b"\x03SHOW PROXY NONSENSE").await;
    assert_eq!(e.code, 1064);
    let e = expect_error(&mut s, b"\x03SET myquorum_read_consistency = 'sometimes'").await;
    assert_eq!((e.code, e.state_str()), (1231, "42000"));
    let e = expect_error(&mut s, b"\x02no_such_db").await;
    assert_eq!((e.code, e.state_str()), (1049, "42000"));
    // Still usable.
    s.write_packet(0, &[0x0E]).await.unwrap();
    assert_eq!(s.read_packet().await.unwrap().payload[0], 0x00);

    let v: Option<u8> = bystander.query_first("SELECT 9").await.unwrap();
    assert_eq!(v, Some(9));
}

/// Reads answers until the row of `SELECT '<marker>'`, and its terminator.
async fn sync(s: &mut PacketStream<TcpStream>, marker: &str) {
    s.write_packet(0, format!("\x03SELECT '{marker}'").as_bytes())
        .await
        .unwrap();
    let row = [&[marker.len() as u8][..], marker.as_bytes()].concat();
    while s.read_packet().await.unwrap().payload != row {}
    s.read_packet().await.unwrap();
}

/// An execute whose last string value claims more bytes than the packet holds is refused
/// (1835) before any server sees it: MariaDB read the missing bytes from whatever its buffer
/// held before, so the primary and each follower stored other bytes (fuzz seed 75). A whole
/// execute of the same statement then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_value_cut_short_is_refused() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut bystander = connect(&proxy).await;
    bystander.query_drop("CREATE DATABASE k").await.unwrap();
    bystander
        .query_drop("CREATE TABLE k.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARBINARY(40))")
        .await
        .unwrap();
    let mut s = raw_login(proxy.port, "").await.unwrap();
    s.write_packet(0, b"\x16INSERT INTO k.t (v) VALUES (?)")
        .await
        .unwrap();
    let ok = s.read_packet().await.unwrap().payload;
    assert_eq!(ok[0], 0, "{ok:?}");
    let id = [ok[1], ok[2], ok[3], ok[4]];
    sync(&mut s, "prepared").await;
    // flags, iterations, null bitmap, new_params_bound, VAR_STRING, then the value.
    let execute =
        |value: &[u8]| [&[0x17][..], &id, &[0, 1, 0, 0, 0, 0, 1, 0xfd, 0], value].concat();
    let e = expect_error(&mut s, &execute(&[9, b'x', b'y'])).await;
    assert_eq!((e.code, e.state_str()), (1835, "HY000"));
    s.write_packet(0, &execute(&[2, b'o', b'k'])).await.unwrap();
    let p = s.read_packet().await.unwrap();
    assert_eq!(p.payload[0], 0, "{:?}", p.payload);
    let rows: Vec<Vec<u8>> = bystander.query("SELECT v FROM k.t").await.unwrap();
    assert_eq!(rows, [b"ok".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statements_need_the_capability() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut s = PacketStream::new(tcp);
    let caps = proxy_capabilities(false)
        - mysql_common::constants::CapabilityFlags::CLIENT_MULTI_STATEMENTS;
    client_handshake(&mut s, "root", "", None, caps, 45)
        .await
        .unwrap();
    let e = expect_error(&mut s, b"\x03SELECT 1; SELECT 2").await;
    assert_eq!((e.code, e.state_str()), (1064, "42000"));
    // COM_SET_OPTION turns them on.
    s.write_packet(0, &[0x1B, 0, 0]).await.unwrap();
    let p = s.read_packet().await.unwrap();
    assert_eq!(p.payload[0], 0xFE);
}

/// COM_STMT_PREPARE / SEND_LONG_DATA / EXECUTE / RESET / CLOSE in the binary protocol, with the
/// client's statement ids mapped to the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_with_long_data() {
    use mysql_common::constants::CapabilityFlags;
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut s = PacketStream::new(tcp);
    // Classic EOF packets keep the expected packet sequence simple to read here.
    let caps = proxy_capabilities(false) - CapabilityFlags::CLIENT_DEPRECATE_EOF;
    client_handshake(&mut s, "root", "", None, caps, 45)
        .await
        .unwrap();
    // Two statements so the client ids (1, 2) differ from what a fresh backend would use.
    for sql in ["SELECT 1", "SELECT LENGTH(?), LEFT(?, 3)"] {
        s.write_packet(0, &[b"\x16", sql.as_bytes()].concat())
            .await
            .unwrap();
        let ok = s.read_packet().await.unwrap().payload;
        assert_eq!(ok[0], 0);
        let (params, cols) = (
            u16::from_le_bytes([ok[7], ok[8]]),
            u16::from_le_bytes([ok[5], ok[6]]),
        );
        let defs = params + cols + u16::from(params > 0) + u16::from(cols > 0);
        for _ in 0..defs {
            s.read_packet().await.unwrap();
        }
    }
    let id: u32 = 2;
    // Parameter 0 arrives in three long-data chunks; parameter 1 too. No replies.
    for chunk in [&b"abc"[..], &[b'x'; 70_000][..], b"yz"] {
        for param in [0u16, 1] {
            let mut p = vec![0x18];
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&param.to_le_bytes());
            p.extend_from_slice(chunk);
            s.write_packet(0, &p).await.unwrap();
        }
    }
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]); // no cursor, one iteration
    exec.push(0); // null bitmap
    exec.push(1); // new params bound
    exec.extend_from_slice(&[0xFC, 0, 0xFC, 0]); // BLOB, BLOB (values came as long data)
    s.write_packet(0, &exec).await.unwrap();
    let count = s.read_packet().await.unwrap().payload;
    assert_eq!(count, vec![2]);
    for _ in 0..3 {
        s.read_packet().await.unwrap(); // 2 column definitions + EOF
    }
    let row = s.read_packet().await.unwrap().payload;
    assert_eq!(row[0], 0);
    // LENGTH() is a 4-byte INT here; LEFT() a length-prefixed string.
    let len = u32::from_le_bytes(row[2..6].try_into().unwrap());
    assert_eq!(len, 70_005);
    assert_eq!(&row[6..10], b"\x03abc");
    assert_eq!(s.read_packet().await.unwrap().payload[0], 0xFE);
    // RESET answers OK; CLOSE answers nothing; then the id is unknown.
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&id.to_le_bytes());
    s.write_packet(0, &reset).await.unwrap();
    assert_eq!(s.read_packet().await.unwrap().payload[0], 0);
    let mut close = vec![0x19];
    close.extend_from_slice(&id.to_le_bytes());
    s.write_packet(0, &close).await.unwrap();
    let e = expect_error(&mut s, &exec).await;
    assert_eq!(e.code, 1243);
}

/// A statement of only comments is answered OK, as the server does (mysqlbinlog's output
/// sends `/*!*/` after each `/*!\C charset */` line: a replay through the proxy stopped
/// there with 1065); one with nothing at all is 1065. Statements that would write through a
/// replication channel of the server's own are refused: what they write reached the primary
/// alone. mysqlbinlog's `BINLOG '…'` row events replicate (see replication.rs) but need the
/// format description first (1609, as the server says), and those the proxy cannot log are
/// refused with the reason: user-variable fragments, rows of the mysql schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_only_statements_and_server_replication_streams() {
    common::init_tracing();
    let db = MariaDb::start();
    let proxy = Proxy::start(config_for(&[&db]));
    let mut c = connect(&proxy).await;
    for sql in [
        "/*!*/",
        "/* only a comment */",
        "-- a line comment\n",
        "/*!40101 */",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"));
    }
    let mut s = raw_login(proxy.port, "").await.unwrap();
    assert_eq!(expect_error(&mut s, b"\x03 ;").await.code, 1065);
    // A table map and a rows event of a ROW binlog, before any format description.
    let rows = "BINLOG '\nNe8CaxMHAAAAQAAAAAAGAAAAABMAAAAAAAFABHNob3AABm9yZGVycwAHAw/2EhEPBQkyAAoCAABA\n\
         AAh+BymGJg==\nNe8CaxcHAAAAOAAAAG4GAAAAABMAAAAAAAAAB3/gAQAAAANhbm6AAAAKMpm7bNhpawLvNWD6cXc=\n'";
    match c.query_drop(rows).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (1609, "HY000"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
    // mysqlbinlog's first statement, a format description event: session state, no data.
    c.query_drop(
        "BINLOG '\nLO8Caw8HAAAA/AAAAAABAAABAAQAMTAuMTEuMTQtTWFyaWFEQi0wK2RlYjEydTItbG9nAAAAAAAA\n\
         AAAAAAAAAAAAAAAAAAAs7wJrEzgNAAgAEgAEBAQEEgAA5AAEGggAAAAICAgCAAAACgoKAAAAAAAA\n\
         CgoKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
         AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
         AAAAAAAAAAAEEwQADQgICAoKCgEevLGJ\n'",
    )
    .await
    .unwrap();
    for sql in [
        "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 1",
        "START SLAVE",
    ] {
        match c.query_drop(sql).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1235, "{sql}: {}", e.message);
                assert!(e.message.contains("primary only"), "{}", e.message);
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let mysql_rows = format!(
        "BINLOG '{}'",
        base64::engine::general_purpose::STANDARD.encode(table_map_event("mysql", "user"))
    );
    for (sql, says) in [
        (
            "BINLOG @binlog_fragment_0, @binlog_fragment_1".to_string(),
            "one quoted base64 literal",
        ),
        (mysql_rows, "mysql schema"),
    ] {
        match c.query_drop(&sql).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1235, "{sql}: {}", e.message);
                assert!(e.message.contains(says), "{}", e.message);
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // The session goes on.
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

/// A binlog table map event (v4 header, no checksum) naming `db`.`table`, one INT column.
fn table_map_event(db: &str, table: &str) -> Vec<u8> {
    let mut body = vec![0u8; 8];
    for name in [db, table] {
        body.push(name.len() as u8);
        body.extend_from_slice(name.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[1, 3, 0, 0]);
    let mut event = vec![0u8; 19];
    event[4] = 19;
    event[9..13].copy_from_slice(&((19 + body.len()) as u32).to_le_bytes());
    event.extend_from_slice(&body);
    event
}

/// Panics on the runtime threads (the in-process proxy's tasks), whatever test caused them.
static WORKER_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A valid command of every kind a session handles, for `mutated_commands_never_panic_a_session`
/// to mutate: text statements (reads, writes, transaction control, the proxy's own),
/// prepares, executes of the ids those get (1–3), long data, cursors, the connection-level
/// commands and some the proxy does not serve.
fn seed_commands() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        "SELECT 1",
        "SELECT v FROM f.t WHERE id = 1",
        "INSERT INTO f.t VALUES (7, 'a') ON DUPLICATE KEY UPDATE v = 'b'",
        "UPDATE f.t SET v = 'c' WHERE id = 1",
        "DELETE FROM f.t WHERE id = 9",
        "INSERT INTO f.a (v) VALUES ('x'), ('y')",
        "INSERT INTO f.a (v) SELECT v FROM f.t ORDER BY id",
        "UPDATE f.t SET v = CONCAT(v, 'z') WHERE id < 5",
        "REPLACE INTO f.t VALUES (3, 'r')",
        "INSERT INTO f.c (v) VALUES (NOW(6))",
        "UPDATE f.c SET v = SYSDATE() WHERE id = 1",
        "UPDATE f.a SET v = UUID() WHERE id = 2",
        "INSERT IGNORE INTO f.t VALUES (FLOOR(RAND() * 100), LAST_INSERT_ID())",
        "DELETE FROM f.a ORDER BY id LIMIT 1",
        "ALTER TABLE f.c ADD COLUMN w INT DEFAULT 4",
        "CREATE TABLE f.n (id INT PRIMARY KEY)",
        "INSERT INTO f.a (v) VALUES (CONCAT('r', RAND()))",
        "INSERT INTO f.t SELECT id + 100, v FROM f.a ORDER BY id ON DUPLICATE KEY UPDATE v = VALUES(v)",
        "UPDATE f.a SET v = LAST_INSERT_ID(id) WHERE id = 3",
        "INSERT INTO f.a (id, v) VALUES (LAST_INSERT_ID() + 50, 'l')",
        "UPDATE f.c SET v = NOW() + INTERVAL 1 DAY WHERE id > 0 ORDER BY id LIMIT 2",
        "SET timestamp = 1000000000",
        "SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
        "SET time_zone = '+05:00'",
        "INSERT INTO f.a VALUES (0, 'zero')",
        "SET insert_id = 500",
        "SET @v = 'uv'",
        "INSERT INTO f.t VALUES (11, @v)",
        "START TRANSACTION",
        "XA START 'x1'",
        "LOCK TABLES f.t WRITE",
        "UNLOCK TABLES",
        "TRUNCATE TABLE f.n",
        "CREATE TEMPORARY TABLE f.t (id INT)",
        "DROP TEMPORARY TABLE f.t",
        "USE f",
        "INSERT INTO t VALUES (12, DATABASE())",
        "DROP DATABASE IF EXISTS zz",
        "CREATE DATABASE zz",
        "USE zz",
        "SET SESSION tx_read_only = 1",
        "SET SESSION tx_read_only = 0",
        "CREATE TABLE f.d (id INT PRIMARY KEY) SELECT id FROM f.t",
        "RENAME TABLE f.n TO f.n2",
        "DROP TABLE IF EXISTS f.n, f.n2",
        "CREATE OR REPLACE VIEW f.v AS SELECT * FROM f.t",
        "INSERT INTO f.v VALUES (20, 'v')",
        "CREATE TRIGGER f.tr BEFORE INSERT ON f.a FOR EACH ROW SET NEW.v = UPPER(NEW.v)",
        "DROP TRIGGER IF EXISTS f.tr",
        "CREATE INDEX i ON f.t (v)",
        // Transaction ends the proxy must follow: inside EXECUTE, chained, in a program, on
        // a temporary table (a DDL on one commits; the fuzzer found it).
        "EXECUTE IMMEDIATE 'COMMIT'",
        "EXECUTE IMMEDIATE 'ROLLBACK'",
        "COMMIT AND CHAIN",
        "CREATE PROCEDURE IF NOT EXISTS f.rb() ROLLBACK",
        "CALL f.rb()",
        "BACKUP STAGE START",
        "BACKUP STAGE END",
        "ALTER TABLE f.tmp ADD COLUMN IF NOT EXISTS b INT",
        "DROP INDEX i ON f.t",
        "SET foreign_key_checks = 0",
        "CREATE PROCEDURE f.p() INSERT INTO f.t VALUES (30, 'p')",
        "CALL f.p()",
        "SAVEPOINT s1",
        "ROLLBACK TO SAVEPOINT s1",
        "RELEASE SAVEPOINT s1",
        "INSERT INTO f.t VALUES (40, 'x') RETURNING id",
        "DELETE f.t, f.a FROM f.t JOIN f.a ON f.t.id = f.a.id WHERE f.t.id > 1000",
        "REPLACE INTO f.a (id, v) SELECT id, v FROM f.t ORDER BY id",
        "INSERT INTO f.c (v) VALUES (CURRENT_TIMESTAMP)",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT p",
        "SET autocommit = 0",
        "SET autocommit = 1",
        // READ COMMITTED: reads before the server began the transaction run outside it.
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SELECT v FROM f.t WHERE id = 1 FOR UPDATE",
        "SELECT COUNT(*) FROM f.a",
        // The level it asked for, read back (rewritten; SHOW answered by the proxy).
        "SELECT @@tx_isolation, @@session.tx_isolation AS x",
        "SHOW VARIABLES LIKE '%isolation'",
        "SET @x = 5",
        "SHOW PROXY STATUS",
        "SHOW WARNINGS",
        "PREPARE s FROM 'SELECT ?'",
        "EXECUTE s USING @x",
        "CREATE TEMPORARY TABLE f.tmp (a INT)",
        "SELECT /*+ myquorum: primary */ 1",
        "LOCK TABLES f.t READ",
        "LOCK TABLES f.missing READ",
        "LOCK TABLES f.t READ, f.t WRITE",
        "SET SESSION TRANSACTION READ ONLY",
        "XA END 'x1'",
        "XA PREPARE 'x1'",
        "XA COMMIT 'x1'",
        "XA ROLLBACK 'x1'",
        "CREATE SEQUENCE IF NOT EXISTS f.s",
        "INSERT INTO f.t VALUES (NEXT VALUE FOR f.s, 's')",
        "SELECT NEXTVAL(f.s)",
        "SELECT LASTVAL(f.s), PREVIOUS VALUE FOR f.s",
        "SELECT SETVAL(f.s, 5000)",
        "DO SETVAL(f.s, 100, 0)",
        "INSERT INTO f.t VALUES (NEXTVAL(f.s), 'a'), (LASTVAL(f.s) + 100000, 'b')",
        "CREATE TEMPORARY SEQUENCE IF NOT EXISTS f.ts",
        "INSERT INTO f.t VALUES (NEXTVAL(f.ts) + 200000, 'ts')",
        "DROP TEMPORARY SEQUENCE IF EXISTS f.ts",
        "ALTER SEQUENCE f.s RESTART 1",
        "CREATE TABLE IF NOT EXISTS f.g (id INT PRIMARY KEY, g INT AS (id * 2) VIRTUAL)",
        "INSERT INTO f.g (id) VALUES (5)",
        "INSERT INTO f.t VALUES (50, 'a'), (50, 'b')",
        "SELECT * FROM f.t WHERE id = 1 FOR UPDATE",
        "SET NAMES latin1",
        "INSERT INTO f.t VALUES (61, 'caf\u{e9}')",
        "SET auto_increment_increment = 5",
        "ALTER TABLE f.a AUTO_INCREMENT = 1000",
        "INSERT INTO f.a (v) VALUES ('m') ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)",
        "HANDLER f.t OPEN",
        "HANDLER f.t READ FIRST",
        "SELECT GET_LOCK('l', 0)",
        "SELECT RELEASE_LOCK('l')",
        "FLUSH TABLES",
        "ANALYZE TABLE f.t",
        "OPTIMIZE TABLE f.a",
        "SET STATEMENT max_statement_time = 1 FOR INSERT INTO f.t VALUES (70, 'st')",
        "INSERT INTO f.t VALUES (71, 'a'); INSERT INTO f.t VALUES (72, 'b')",
        "CREATE FUNCTION IF NOT EXISTS f.fn() RETURNS INT DETERMINISTIC RETURN 1",
        "INSERT INTO f.t VALUES (f.fn() + 80, 'fn')",
        "DELETE FROM f.t WHERE id > 70 LIMIT 1",
        "CREATE USER IF NOT EXISTS 'fz'@'%'",
        "GRANT SELECT ON f.* TO 'fz'@'%'",
        "DROP USER IF EXISTS 'fz'@'%'",
        "CREATE TABLE zz.q (a INT)",
        "INSERT INTO q VALUES (1)",
        "INSERT INTO f.t VALUES (90, DATABASE()) ON DUPLICATE KEY UPDATE v = DATABASE()",
        // Foreign-key actions that change a child whose row reads the clock, system
        // versioning (row_start/row_end), values that come from the session's reads.
        "UPDATE f.p SET id = id + 10 WHERE id < 5",
        "DELETE FROM f.p WHERE id > 10",
        "INSERT INTO f.p VALUES (3, 3) ON DUPLICATE KEY UPDATE v = v + 1",
        "INSERT INTO f.ch (id, pid) VALUES (12, 3)",
        "UPDATE f.sv SET x = x + 1 WHERE id = 1",
        "INSERT INTO f.sv (id, x) VALUES (2, 2)",
        "DELETE HISTORY FROM f.sv BEFORE SYSTEM_TIME NOW() - INTERVAL 1 SECOND",
        "SET STATEMENT system_versioning_alter_history = KEEP FOR ALTER TABLE f.sv ADD COLUMN IF NOT EXISTS y INT DEFAULT 7",
        "SELECT v INTO @w FROM f.t WHERE id = 1",
        "INSERT INTO f.t VALUES (13, @w) ON DUPLICATE KEY UPDATE v = @w",
        "SET @m = (SELECT MAX(id) FROM f.t)",
        "INSERT INTO f.a (id, v) VALUES (@m + 1000, 'm')",
        "UPDATE f.t, f.p SET f.t.v = 'j', f.p.v = f.p.v + 1 WHERE f.t.id = f.p.id",
        "CREATE TABLE IF NOT EXISTS f.l LIKE f.t",
        "INSERT INTO f.l SELECT id + 300, v FROM f.a LIMIT 2",
        "SET sql_mode = ''",
        "INSERT INTO f.p VALUES (4, 'abc')",
        "UPDATE f.t SET v = JSON_OBJECT('at', NOW(6)) WHERE id = 1",
        "INSERT INTO f.c (v) SELECT MAX(v) FROM f.c",
        // Compound statements outside a program, and a program body with IF (…) THEN. (Their
        // conditions read no table others write: a plain read there sees the primary's
        // snapshot, not the log's order; see the README.)
        "IF 1 THEN UPDATE f.t SET v = 'if' WHERE id = 1; END IF",
        "FOR i IN 1..2 DO INSERT INTO f.t VALUES (400 + i, 'for') ON DUPLICATE KEY UPDATE v = 'f2'; END FOR",
        "CASE WHEN DAYOFWEEK(NOW()) > 0 THEN DELETE FROM f.a WHERE id > 1000; ELSE DO 0; END CASE",
        "BEGIN NOT ATOMIC DECLARE n INT DEFAULT 7; INSERT INTO f.a (id, v) VALUES (2000 + n, 'b') ON DUPLICATE KEY UPDATE v = 'b2'; END",
        "CREATE PROCEDURE IF NOT EXISTS f.pr(k INT) BEGIN IF (k > 1) THEN UPDATE f.t SET v = REPEAT('r', 2) WHERE id = k; END IF; END",
        "CALL f.pr(2)",
        "IF 1 THEN INSERT IGNORE INTO f.t VALUES (450, LEFT(UUID(), 8)); END IF",
        "REPEAT DELETE FROM f.t WHERE id = 401; UNTIL 1 END REPEAT",
        // A program failing part-way, in or out of a transaction (its first INSERT is undone).
        "CREATE PROCEDURE IF NOT EXISTS f.dup(k INT) BEGIN INSERT INTO f.t VALUES (k, 'd1'); INSERT INTO f.t VALUES (k, 'd2'); END",
        "CALL f.dup(470)",
        "BEGIN NOT ATOMIC INSERT INTO f.a (id, v) VALUES (480, 'n1'); INSERT INTO f.a (id, v) VALUES (480, 'n2'); END",
    ]
    .iter()
    .map(|q| [&[0x03][..], q.as_bytes()].concat())
    .collect();
    for q in [
        "SELECT ?, ?",
        "INSERT INTO f.t VALUES (?, ?)",
        "UPDATE f.t SET v = ? WHERE id = ?",
        "INSERT INTO f.a (v) VALUES (?)",
    ] {
        seeds.push([&[0x16][..], q.as_bytes()].concat());
    }
    for id in 1u8..=3 {
        // flags 0, iterations 1, null bitmap, bound, LONG + VAR_STRING, 5, "xy".
        seeds.push(vec![
            0x17, id, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 253, 0, 5, 0, 0, 0, 2, b'x', b'y',
        ]);
        // A read-only cursor, then a fetch of 2 rows.
        seeds.push(vec![
            0x17, id, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 3, 0, 253, 0, 5, 0, 0, 0, 1, b'z',
        ]);
        seeds.push(vec![0x1c, id, 0, 0, 0, 2, 0, 0, 0]);
        seeds.push(vec![0x18, id, 0, 0, 0, 1, 0, b'l', b'o', b'n', b'g']);
        seeds.push(vec![0x1a, id, 0, 0, 0]);
        seeds.push(vec![0x19, id, 0, 0, 0]);
    }
    seeds.extend([
        vec![0x02, b'f'],
        b"\x04t\0".to_vec(),
        vec![0x09],
        vec![0x0e],
        vec![0x1b, 0, 0],
        vec![0x1b, 1, 0],
        vec![0x1f],
        b"\x11root\0\0f\0\x2d\0mysql_native_password\0".to_vec(),
        vec![0x0c, 1, 0, 0, 0],
        vec![0x12, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    ]);
    seeds
}

/// The concurrent session of `mutated_commands_never_panic_a_session`, until `stop`: how
/// many statements it ran (answered or refused). It runs DDL and writes with 2 s lock
/// timeouts while the mutated session may hold table locks: found two deadlocks between a
/// LOCK TABLES session and other sessions' DDL, and log rows failing after their quorum.
async fn concurrent_session(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    use mysql_async::prelude::Queryable;
    use std::time::Duration;
    // Dropping and re-creating the database the mutated session may have selected found
    // a trigger that could not switch back to it leaving the primary's connection without
    // a database (DATABASE() NULL there, the name on the followers).
    const STATEMENTS: [&str; 8] = [
        "DROP DATABASE IF EXISTS zz",
        "CREATE DATABASE IF NOT EXISTS zz",
        "DROP TABLE IF EXISTS f.q",
        "CREATE TABLE IF NOT EXISTS f.q (a INT)",
        "ALTER TABLE f.q ADD COLUMN IF NOT EXISTS b INT",
        "INSERT INTO f.t VALUES (900, 'o') ON DUPLICATE KEY UPDATE v = LEFT(CONCAT(v, 'o'), 40)",
        "UPDATE f.c SET v = NOW(6) WHERE id = 1",
        "DELETE FROM f.a WHERE id > 5000",
    ];
    let mut ran = 0;
    let mut conn = None;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if conn.is_none() {
            if let Ok(mut c) = mysql_async::Conn::from_url(&url).await {
                let _ = c
                    .query_drop("SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2")
                    .await;
                conn = Some(c);
            }
        }
        if let Some(c) = conn.as_mut() {
            let sql = STATEMENTS[ran as usize % STATEMENTS.len()];
            match tokio::time::timeout(Duration::from_secs(5), c.query_drop(sql)).await {
                Ok(Ok(())) | Ok(Err(mysql_async::Error::Server(_))) => ran += 1,
                _ => conn = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ran
}

/// Mutated commands on live sessions: whatever each one gets (an answer, an error, a
/// closed connection), no task of the proxy panics and it keeps serving. Each command is
/// followed by a sentinel SELECT, so the stream of answers stays in step; a session that
/// cannot get back in step (it waits for an authentication reply, say) is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_commands_never_panic_a_session() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    common::init_tracing();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Runtime threads are tokio's ("tokio-rt-worker"); the test's own body runs on the
        // test's thread.
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("tokio"))
        {
            WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    let (a, b, c) = (MariaDb::start(), MariaDb::start(), MariaDb::start());
    let proxy = Proxy::start(config_for(&[&a, &b, &c]));
    let mut bystander = connect(&proxy).await;
    for sql in [
        "CREATE DATABASE f",
        "CREATE TABLE f.t (id INT PRIMARY KEY, v VARCHAR(40))",
        "CREATE TABLE f.a (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40))",
        "CREATE TABLE f.c (id INT AUTO_INCREMENT PRIMARY KEY, v DATETIME(6), \
         at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        "INSERT INTO f.t VALUES (1, 'a')",
        "INSERT INTO f.c (v) VALUES (NOW())",
        "CREATE TABLE f.p (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE f.ch (id INT PRIMARY KEY, pid INT, \
         at TIMESTAMP(6) NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP(6), \
         FOREIGN KEY (pid) REFERENCES f.p (id) ON DELETE SET NULL ON UPDATE CASCADE)",
        "CREATE TABLE f.sv (id INT PRIMARY KEY, x INT) WITH SYSTEM VERSIONING",
        "INSERT INTO f.p VALUES (1, 1), (2, 2)",
        "INSERT INTO f.ch (id, pid) VALUES (10, 1), (11, 2)",
        "INSERT INTO f.sv VALUES (1, 1)",
    ] {
        bystander.query_drop(sql).await.unwrap();
    }

    let seeds = seed_commands();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const EDGES: [u8; 8] = [0x00, 0x01, 0x08, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
    // Another session changes what the mutated one works on meanwhile: DDL and writes on
    // tables it may have locked.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = tokio::spawn(concurrent_session(proxy.url(None), stop.clone()));
    let mut session = raw_login(proxy.port, "").await.unwrap();
    let (mut sent, mut replaced, mut in_step) = (0u32, 0u32, 0u32);
    let started = Instant::now();
    while sent < 3000 && started.elapsed() < Duration::from_secs(60) {
        let mut cmd = seeds[next() as usize % seeds.len()].clone();
        for _ in 0..next() % 4 {
            let r = next();
            let at = (r >> 8) as usize % cmd.len().max(1);
            match r % 6 {
                0 if at > 0 => cmd[at] = r as u8,
                1 if at > 0 => cmd[at] = EDGES[(r >> 16) as usize % EDGES.len()],
                2 => cmd.truncate(at.max(1)),
                3 => cmd.extend((0..r % 12).map(|i| EDGES[(r >> i) as usize % EDGES.len()])),
                4 if r % 40 == 4 => cmd[0] = (r >> 24) as u8,
                _ => cmd.insert(at.max(1), (r >> 32) as u8),
            }
        }
        if cmd[0] == 0x0C && cmd.len() >= 5 {
            // COM_PROCESS_KILL of a real id would end the bystander (its id is small, like
            // the statement ids the seeds carry there): that is KILL working, not a fault.
            cmd[1..5].copy_from_slice(&(u32::MAX - sent).to_le_bytes());
        }
        sent += 1;
        let marker = format!("sentinel{sent}");
        let sentinel = [&[0x03][..], format!("SELECT '{marker}' AS s").as_bytes()].concat();
        let synced = tokio::time::timeout(Duration::from_secs(3), async {
            session.write_packet(0, &cmd).await?;
            session.write_packet(0, &sentinel).await?;
            // The sentinel's row is its one value, length-prefixed.
            let row = [&[marker.len() as u8][..], marker.as_bytes()].concat();
            loop {
                if session.read_packet().await?.payload == row {
                    session.read_packet().await?;
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        if matches!(synced, Ok(Ok(()))) {
            in_step += 1;
        } else {
            replaced += 1;
            session = raw_login(proxy.port, "").await.unwrap();
        }
        assert_eq!(
            WORKER_PANICS.load(Ordering::SeqCst),
            0,
            "a proxy task panicked on command {sent}: {cmd:02x?}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let others = other.await.unwrap();
    eprintln!(
        "{sent} mutated commands, {in_step} answered in step, {replaced} sessions replaced, \
         {others} statements of the concurrent session"
    );
    assert!(in_step > sent / 2, "{in_step} of {sent} in step");
    // (The mutated writes may have changed or dropped any row: only the session is checked.)
    let v: Option<u8> = bystander.query_first("SELECT 9").await.unwrap();
    assert_eq!(v, Some(9));
    let alive: Option<u8> = raw_login(proxy.port, "").await.map(|_| Some(1)).unwrap();
    assert_eq!(alive, Some(1));
    // Every write the proxy let through replicated as it ran on the primary.
    drop(session);
    common::converge::assert_same_tables(&[&a, &b, &c], &["f.t", "f.a", "f.c"]).await;
    // So did every table the session created, and the versioned table's history.
    let mut listed = Vec::new();
    for db in [&a, &b, &c] {
        let mut direct = mysql_async::Conn::from_url(db.url(None)).await.unwrap();
        let tables: Vec<String> = direct
            .query(
                "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA IN ('f', 'zz') AND TABLE_TYPE <> 'SEQUENCE' \
                 AND TABLE_TYPE <> 'VIEW' ORDER BY 1",
            )
            .await
            .unwrap();
        let history: Vec<mysql_async::Row> = direct
            .query(
                "SELECT *, row_start, row_end FROM f.sv FOR SYSTEM_TIME ALL ORDER BY id, row_start",
            )
            .await
            .unwrap_or_default();
        let history: Vec<Vec<mysql_async::Value>> =
            history.into_iter().map(|r| r.unwrap()).collect();
        listed.push((tables, history));
    }
    assert!(listed.iter().all(|l| *l == listed[0]), "{listed:?}");
    let names: Vec<&str> = listed[0].0.iter().map(String::as_str).collect();
    common::converge::assert_same_tables(&[&a, &b, &c], &names).await;
    // None stopped applying (a follower that ran what the primary refused is quarantined).
    let states: Vec<String> = bystander
        .query_map("SHOW PROXY REPLICATION", |row: mysql_async::Row| {
            row.get::<String, _>(3).unwrap_or_default()
        })
        .await
        .unwrap();
    assert!(
        states.iter().all(|s| !s.contains("quarantined")),
        "{states:?}"
    );
}
