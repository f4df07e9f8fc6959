//! `PROXY CHECKSUM TABLE [db.]t` and `PROXY CHECKSUM DATABASE [db]` (each of its base
//! tables in turn, as pt-table-checksum goes through a server): whether a table is the same
//! on every replica of its shard. The checksum is computed by a write that goes through the log like any other
//! (`INSERT INTO myquorum.checksums … SELECT COUNT(*), BIT_XOR(CRC32(<every column>)) FROM
//! t`), so the primary and each follower compute it at the same point of the log while writes
//! go on — pt-table-checksum's method, which fits statement replay exactly. The answer has
//! one row per replica: rows, checksum, and whether it matches the primary's.
//!
//! Owns: the checksum command's session half. May import: frontend (session, writes),
//! replication::checksum, sql (lexer, quoting), protocol.

use super::commands::{ClientSession, Failure};
use crate::protocol::relay::{ends_with_error, MemoryIo};
use crate::protocol::{MysqlError, PacketStream};
use crate::router::Route;
use crate::session::SessionState;
use crate::sql::classify::Classified;
use crate::sql::lexer::{Lexer, Tok};
use crate::sql::{quote_identifier, quote_string};
use std::time::{Duration, Instant};

/// How long the answer waits for followers to apply the checksum.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// The session variable that sets how many rows one checksum write reads (and holds
/// shared locks on, until it commits), and its bounds.
pub const CHUNK_ROWS_VARIABLE: &str = "myquorum_checksum_chunk_rows";
const DEFAULT_CHUNK_ROWS: u64 = 5_000;
pub const MAX_CHUNK_ROWS: u64 = 1_000_000;

/// Chunk numbers live in a run id's low bits.
const CHUNK_BITS: u32 = 20;

/// Integer types a chunk key may have (ranges of them are written as plain numbers).
const INTEGER_TYPES: &str = "'tinyint', 'smallint', 'mediumint', 'int', 'bigint'";

/// One chunk's key range, (lower, upper]: None for open ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub key: String,
    pub lower: Option<String>,
    pub upper: Option<String>,
}

impl KeyRange {
    fn condition(&self) -> Option<String> {
        let k = quote_identifier(&self.key);
        match (&self.lower, &self.upper) {
            (None, None) => None,
            (Some(l), None) => Some(format!("{k} > {l}")),
            (None, Some(u)) => Some(format!("{k} <= {u}")),
            (Some(l), Some(u)) => Some(format!("{k} > {l} AND {k} <= {u}")),
        }
    }

    /// For the answer: "id 1–5000", "id > 5000".
    fn describe(&self) -> String {
        match (&self.lower, &self.upper) {
            (None, None) => "the whole table".to_string(),
            (Some(l), None) => format!("{} > {l}", self.key),
            (None, Some(u)) => format!("{} <= {u}", self.key),
            (Some(l), Some(u)) => format!("{} > {l} and <= {u}", self.key),
        }
    }
}

/// A key value read from the server, as a literal: integers only.
fn integer_literal(v: &str) -> Option<String> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_string())
}

/// What a `PROXY CHECKSUM` command checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksummed {
    /// `TABLE [db.]name`.
    Table(Option<String>, String),
    /// `DATABASE [db]` (or SCHEMA): every base table in it.
    Database(Option<String>),
}

/// Schemas that are each server's own or the proxy's: never checksummed as a database.
const NOT_REPLICATED: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "myquorum",
];

/// `PROXY CHECKSUM TABLE [db.]name` or `PROXY CHECKSUM DATABASE [db]`, or a syntax error;
/// None when `sql` is another PROXY command.
pub fn parse(sql: &str) -> Option<Result<Checksummed, MysqlError>> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    if !(toks.first()?.is_word("PROXY") && toks.get(1)?.is_word("CHECKSUM")) {
        return None;
    }
    let name = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w)) => Some(w.to_string()),
        Some(Tok::Quoted(w)) => Some(w.replace("``", "`")),
        _ => None,
    };
    let rest: Vec<&Tok<'_>> = toks[2..]
        .iter()
        .filter(|t| !matches!(t, Tok::Punct(';')))
        .collect();
    let database = |kw: &Tok<'_>| kw.is_word("DATABASE") || kw.is_word("SCHEMA");
    let parsed = match rest.as_slice() {
        [kw, t] if kw.is_word("TABLE") => name(Some(t)).map(|t| Checksummed::Table(None, t)),
        [kw, d, Tok::Punct('.'), t] if kw.is_word("TABLE") => name(Some(d))
            .zip(name(Some(t)))
            .map(|(d, t)| Checksummed::Table(Some(d), t)),
        [kw] if database(kw) => Some(Checksummed::Database(None)),
        [kw, d] if database(kw) => name(Some(d)).map(|d| Checksummed::Database(Some(d))),
        _ => None,
    };
    Some(parsed.ok_or_else(|| {
        MysqlError::new(
            1064,
            "42000",
            "myquorum: use PROXY CHECKSUM TABLE [db.]table or PROXY CHECKSUM DATABASE [db]",
        )
    }))
}

const CHECKSUM_INSERT: &str =
    "INSERT INTO myquorum.checksums (run, db, tbl, row_count, crc) SELECT ";

/// Whether `sql` is a checksum write (the only change to the proxy's schema a session runs).
pub fn is_checksum_statement(sql: &str) -> bool {
    sql.starts_with(CHECKSUM_INSERT)
}

/// The write that computes the checksum of the rows in `range` (all of them when None).
/// Each row is hashed from its columns joined with `#` as bytes plus a NULL map (so NULL and
/// '' differ); BIT_XOR makes the result independent of the order rows are read in.
pub fn checksum_statement(
    run: u64,
    db: &str,
    table: &str,
    columns: &[String],
    range: Option<&KeyRange>,
) -> String {
    let cols: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
    let nulls: Vec<String> = cols.iter().map(|c| format!("ISNULL({c})")).collect();
    // As bytes: columns of different collations cannot be concatenated as text (error 1267).
    let cols: Vec<String> = cols
        .iter()
        .map(|c| format!("CAST({c} AS BINARY)"))
        .collect();
    let filter = range
        .and_then(KeyRange::condition)
        .map(|c| format!(" WHERE {c}"))
        .unwrap_or_default();
    format!(
        "{CHECKSUM_INSERT}{run}, {}, {}, COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', {}, \
         CONCAT({})))), 0) FROM {}.{}{filter}",
        quote_string(db),
        quote_string(table),
        cols.join(", "),
        nulls.join(", "),
        quote_identifier(db),
        quote_identifier(table)
    )
}

/// The last key of the next chunk of `rows` rows after `after` (read on the primary).
fn chunk_end_query(db: &str, table: &str, key: &str, after: Option<&str>, rows: u64) -> String {
    let k = quote_identifier(key);
    let filter = after
        .map(|a| format!(" WHERE {k} > {a}"))
        .unwrap_or_default();
    format!(
        "(SELECT MAX({k}) FROM (SELECT {k} FROM {}.{}{filter} ORDER BY {k} LIMIT {rows}) chunk)",
        quote_identifier(db),
        quote_identifier(table)
    )
}

impl ClientSession {
    /// Runs one checksum write through the log like a client's write; its error, if any,
    /// is the command's.
    async fn run_checksum_write(
        &mut self,
        session: &mut SessionState,
        sql: &str,
    ) -> Result<(), Failure> {
        let payload = [&[0x03u8][..], sql.as_bytes()].concat();
        let c = self.ctx.classify_cache.classify(sql);
        let mut sink = PacketStream::new(MemoryIo::keeping());
        Box::pin(self.run_statement(&mut sink, session, c, sql, &payload)).await?;
        sink.flush().await.map_err(Failure::Client)?;
        let raw = sink.into_parts().0.buf;
        if ends_with_error(&raw) {
            let e = raw
                .get(4..)
                .and_then(MysqlError::decode)
                .unwrap_or_else(|| MysqlError::new(1105, "HY000", "the checksum write failed"));
            return Err(Failure::Answer(e));
        }
        Ok(())
    }

    /// Answers a `PROXY CHECKSUM` command: one row per table and replica.
    pub(super) async fn checksum<S>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        what: Checksummed,
    ) -> Result<(), Failure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if session.in_transaction {
            return Err(Failure::Answer(MysqlError::not_supported(
                "PROXY CHECKSUM runs its own transactions; COMMIT or ROLLBACK first",
            )));
        }
        let (db, table) = match what {
            Checksummed::Table(db, table) => (db, Some(table)),
            Checksummed::Database(db) => (db, None),
        };
        let Some(db) = db.or_else(|| session.schema.clone()) else {
            return Err(Failure::Answer(MysqlError::new(
                1046,
                "3D000",
                "No database selected",
            )));
        };
        let rows = match table {
            Some(table) => self.checksum_table(session, &db, &table).await?.0,
            None => self.checksum_database(session, &db).await?,
        };
        crate::protocol::resultset::queue_text_resultset(
            client,
            1,
            &["table", "replica", "address", "rows", "checksum", "result"],
            &rows,
            session.status_flags(),
            self.format(),
        );
        client.flush().await.map_err(Failure::Client)
    }

    /// Every base table of `db`, in name order, checksummed one after the other; a table
    /// that cannot be (dropped meanwhile, …) gets one row saying why, and the rest go on.
    async fn checksum_database(
        &mut self,
        session: &mut SessionState,
        db: &str,
    ) -> Result<Vec<Vec<Option<String>>>, Failure> {
        if NOT_REPLICATED.iter().any(|s| db.eq_ignore_ascii_case(s)) {
            return Err(Failure::Answer(MysqlError::not_supported(&format!(
                "{db} holds each server's own state (or the proxy's), which is not replicated; \
                 checksum an application database"
            ))));
        }
        let started = Instant::now();
        // Routed as a checksum of one of its tables would be.
        let (probe, route) = self.checksum_route(db, "t");
        let list = format!(
            "(SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME SEPARATOR '\\n') \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE')",
            quote_string(db)
        );
        let exists = format!(
            "(SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {})",
            quote_string(db)
        );
        let exists = self.select_value(session, &probe, route, &exists).await?;
        let tables = self.select_value(session, &probe, route, &list).await?;
        self.release_if_unpinned(session);
        if exists.as_deref() != Some("1") {
            return Err(Failure::Answer(MysqlError::new(
                1049,
                "42000",
                format!("Unknown database '{db}'"),
            )));
        }
        let tables: Vec<String> = tables
            .map(|t| t.split('\n').map(str::to_string).collect())
            .unwrap_or_default();
        tracing::info!(db, tables = tables.len(), "PROXY CHECKSUM DATABASE started");
        let mut rows = Vec::new();
        let mut differing = Vec::new();
        for (done, table) in tables.iter().enumerate() {
            match self.checksum_table(session, db, table).await {
                Ok((table_rows, replicas_differing)) => {
                    if replicas_differing > 0 {
                        differing.push(table.clone());
                    }
                    rows.extend(table_rows);
                }
                Err(Failure::Answer(e)) => rows.push(vec![
                    Some(format!("{db}.{table}")),
                    None,
                    None,
                    None,
                    None,
                    Some(format!("not checked: {}", e.message)),
                ]),
                Err(other) => return Err(other),
            }
            tracing::info!(db, table = %table, done = done + 1, of = tables.len(),
                "PROXY CHECKSUM DATABASE progress");
        }
        if differing.is_empty() {
            tracing::info!(
                db,
                tables = tables.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "PROXY CHECKSUM DATABASE done: every table is the same on every replica"
            );
        } else {
            tracing::error!(db, differing = ?differing,
                "PROXY CHECKSUM DATABASE: tables differ between replicas; rebuild the replicas that differ from the primary");
        }
        Ok(rows)
    }

    /// Where a checksum write of `db`.`table` goes (the primary of the table's shard), with
    /// the statement it was routed as, for the reads made there before it.
    fn checksum_route(&self, db: &str, table: &str) -> (std::sync::Arc<Classified>, Route) {
        let probe = self.ctx.classify_cache.classify(&checksum_statement(
            0,
            db,
            table,
            &["x".to_string()],
            None,
        ));
        let route = self.route(&probe);
        (probe, route)
    }

    /// One table's rows of the answer (one per replica), and how many replicas differ from
    /// the primary.
    async fn checksum_table(
        &mut self,
        session: &mut SessionState,
        db: &str,
        table: &str,
    ) -> Result<(Vec<Vec<Option<String>>>, usize), Failure> {
        let (db, table) = (db.to_string(), table.to_string());
        let started = Instant::now();
        let base: u64 = (rand::random::<u64>() >> (1 + CHUNK_BITS)) << CHUNK_BITS;
        let chunk_rows = session
            .proxy_vars
            .iter()
            .find(|(k, _)| k == CHUNK_ROWS_VARIABLE)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(DEFAULT_CHUNK_ROWS);
        let (probe, route) = self.checksum_route(&db, &table);
        let columns = format!(
            "(SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION SEPARATOR '\\n') \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {})",
            quote_string(&db),
            quote_string(&table)
        );
        let columns = self.select_value(session, &probe, route, &columns).await?;
        // A single-column integer key splits the table into chunks, each its own write, so
        // no write holds shared locks on more than a chunk's rows (pt-table-checksum's way);
        // without one the table is read in one write.
        let key = format!(
            "(SELECT IF(COUNT(*) = 1 AND MAX(DATA_TYPE) IN ({INTEGER_TYPES}), MAX(COLUMN_NAME), \
             NULL) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
             AND COLUMN_KEY = 'PRI')",
            quote_string(&db),
            quote_string(&table)
        );
        let key = self.select_value(session, &probe, route, &key).await?;
        // The primary connection was held for those reads only.
        self.release_if_unpinned(session);
        let Some(columns) = columns else {
            return Err(Failure::Answer(MysqlError::new(
                1146,
                "42S02",
                format!("Table '{db}.{table}' doesn't exist"),
            )));
        };
        let columns: Vec<String> = columns.split('\n').map(str::to_string).collect();
        let mut ranges: Vec<Option<KeyRange>> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let chunk = ranges.len() as u64;
            if chunk >= 1 << CHUNK_BITS {
                return Err(Failure::Answer(MysqlError::not_supported(&format!(
                    "more than {} chunks: SET {CHUNK_ROWS_VARIABLE} higher",
                    1u64 << CHUNK_BITS
                ))));
            }
            // The end of this chunk, or an open end when no rows are left after `after`.
            let range = match &key {
                None => None,
                Some(key) => {
                    let end = chunk_end_query(&db, &table, key, after.as_deref(), chunk_rows);
                    let end = self.select_value(session, &probe, route, &end).await?;
                    self.release_if_unpinned(session);
                    Some(KeyRange {
                        key: key.clone(),
                        lower: after.clone(),
                        upper: end.as_deref().and_then(integer_literal),
                    })
                }
            };
            let last = range.as_ref().is_none_or(|r| r.upper.is_none());
            let sql = checksum_statement(base | chunk, &db, &table, &columns, range.as_ref());
            self.run_checksum_write(session, &sql).await?;
            after = range.as_ref().and_then(|r| r.upper.clone());
            ranges.push(range);
            if last {
                break;
            }
        }
        let shard = super::writes::route_shard(route);
        let Some(log) = self.ctx.replication.shard(shard).cloned() else {
            return Err(Failure::Answer(MysqlError::new(
                2003,
                "HY000",
                "no log for this shard",
            )));
        };
        let results = crate::replication::checksum::collect(
            &log,
            &self.ctx.cluster,
            base,
            ranges.len() as u32,
            session.last_write_ts,
            APPLY_WAIT,
        )
        .await;
        let reference = results
            .iter()
            .find(|r| r.primary)
            .and_then(|r| r.result.as_ref().ok().cloned());
        let mut differing = 0;
        let rows: Vec<Vec<Option<String>>> = results
            .iter()
            .map(|r| {
                let verdict = match (&r.result, &reference) {
                    (Ok(_), _) if r.primary => "primary".to_string(),
                    (Ok(sum), Some(p)) => {
                        let chunks = crate::replication::checksum::differing_chunks(p, sum);
                        if chunks.is_empty() {
                            "same as the primary".to_string()
                        } else {
                            differing += 1;
                            differs(&chunks, ranges.len(), &ranges)
                        }
                    }
                    (Ok(_), None) => "primary unreadable".to_string(),
                    (Err(why), _) => why.clone(),
                };
                let sum = r.result.as_ref().ok();
                vec![
                    Some(format!("{db}.{table}")),
                    Some(r.replica.0.to_string()),
                    Some(r.address.clone()),
                    sum.map(|s| s.rows.to_string()),
                    sum.map(|s| s.crc.to_string()),
                    Some(verdict),
                ]
            })
            .collect();
        if differing > 0 {
            tracing::error!(table = %format!("{db}.{table}"), differing,
                "PROXY CHECKSUM TABLE: replicas differ from the primary; rebuild them from the primary");
        } else {
            tracing::info!(table = %format!("{db}.{table}"), chunks = ranges.len(),
                elapsed_ms = started.elapsed().as_millis() as u64, "PROXY CHECKSUM TABLE done");
        }
        Ok((rows, differing))
    }
}

/// "DIFFERS from the primary in 2 of 40 chunks: id > 5000 and <= 10000, …".
fn differs(chunks: &[u32], total: usize, ranges: &[Option<KeyRange>]) -> String {
    if total <= 1 {
        return "DIFFERS from the primary".to_string();
    }
    let shown: Vec<String> = chunks
        .iter()
        .take(3)
        .map(|c| {
            ranges
                .get(*c as usize)
                .and_then(|r| r.as_ref())
                .map_or_else(|| format!("chunk {c}"), KeyRange::describe)
        })
        .collect();
    let more = if chunks.len() > 3 { ", …" } else { "" };
    format!(
        "DIFFERS from the primary in {} of {total} chunks: {}{more}",
        chunks.len(),
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_table_name() {
        let ok = |sql: &str| parse(sql).map(|r| r.map_err(|e| e.code));
        assert_eq!(
            ok("PROXY CHECKSUM TABLE shop.orders"),
            Some(Ok(Checksummed::Table(Some("shop".into()), "orders".into())))
        );
        assert_eq!(
            ok("proxy checksum table `we``ird`;"),
            Some(Ok(Checksummed::Table(None, "we`ird".into())))
        );
        assert_eq!(
            ok("PROXY CHECKSUM DATABASE `shop`"),
            Some(Ok(Checksummed::Database(Some("shop".into()))))
        );
        assert_eq!(
            ok("proxy checksum schema;"),
            Some(Ok(Checksummed::Database(None)))
        );
        assert_eq!(ok("PROXY CHECKSUM DATABASE a.b"), Some(Err(1064)));
        assert_eq!(ok("PROXY CHECKSUM orders"), Some(Err(1064)));
        assert_eq!(ok("PROXY CHECKSUM TABLE a, b"), Some(Err(1064)));
        assert_eq!(ok("PROXY SWITCHOVER"), None);
    }

    #[test]
    fn chunks_are_key_ranges() {
        let range = |lower: Option<&str>, upper: Option<&str>| KeyRange {
            key: "i`d".into(),
            lower: lower.map(str::to_string),
            upper: upper.map(str::to_string),
        };
        let sql = checksum_statement(8, "d", "t", &["a".into()], Some(&range(None, Some("50"))));
        assert!(sql.ends_with("FROM `d`.`t` WHERE `i``d` <= 50"), "{sql}");
        let sql = checksum_statement(
            9,
            "d",
            "t",
            &["a".into()],
            Some(&range(Some("50"), Some("99"))),
        );
        assert!(sql.ends_with("WHERE `i``d` > 50 AND `i``d` <= 99"), "{sql}");
        let sql = checksum_statement(9, "d", "t", &["a".into()], Some(&range(Some("99"), None)));
        assert!(sql.ends_with("WHERE `i``d` > 99"), "{sql}");
        assert!(is_checksum_statement(&sql));
        assert_eq!(
            chunk_end_query("d", "t", "id", Some("-5"), 100),
            "(SELECT MAX(`id`) FROM (SELECT `id` FROM `d`.`t` WHERE `id` > -5 ORDER BY `id` \
             LIMIT 100) chunk)"
        );
        assert_eq!(integer_literal("-12").as_deref(), Some("-12"));
        assert_eq!(integer_literal("1e3"), None);
        assert_eq!(integer_literal(""), None);
        let ranges = vec![Some(range(None, Some("50"))), Some(range(Some("50"), None))];
        assert_eq!(
            differs(&[1], 2, &ranges),
            "DIFFERS from the primary in 1 of 2 chunks: i`d > 50"
        );
    }

    #[test]
    fn the_statement_quotes_names_and_hashes_nulls_apart() {
        let sql = checksum_statement(7, "d'b", "t`x", &["a".into(), "b c".into()], None);
        assert_eq!(
            sql,
            "INSERT INTO myquorum.checksums (run, db, tbl, row_count, crc) SELECT 7, 'd''b', \
             't`x', COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', CAST(`a` AS BINARY), \
             CAST(`b c` AS BINARY), CONCAT(ISNULL(`a`), ISNULL(`b c`))))), 0) FROM \
             `d'b`.`t``x`"
        );
    }
}
