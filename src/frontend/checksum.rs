//! `PROXY CHECKSUM TABLE [db.]t`: whether a table is the same on every replica of its
//! shard. The checksum is computed by a write that goes through the log like any other
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
use crate::session::SessionState;
use crate::sql::lexer::{Lexer, Tok};
use std::time::{Duration, Instant};

/// How long the answer waits for followers to apply the checksum.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// `PROXY CHECKSUM TABLE [db.]name`: (schema, table), or a syntax error; None when `sql` is
/// another PROXY command.
pub fn parse(sql: &str) -> Option<Result<(Option<String>, String), MysqlError>> {
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
    let parsed = match rest.as_slice() {
        [kw, t] if kw.is_word("TABLE") => name(Some(t)).map(|t| (None, t)),
        [kw, d, Tok::Punct('.'), t] if kw.is_word("TABLE") => {
            name(Some(d)).zip(name(Some(t))).map(|(d, t)| (Some(d), t))
        }
        _ => None,
    };
    Some(parsed.ok_or_else(|| {
        MysqlError::new(
            1064,
            "42000",
            "myquorum: use PROXY CHECKSUM TABLE [db.]table",
        )
    }))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

const CHECKSUM_INSERT: &str =
    "INSERT INTO myquorum.checksums (run, db, tbl, row_count, crc) SELECT ";

/// Whether `sql` is a checksum write (the only change to the proxy's schema a session runs).
pub fn is_checksum_statement(sql: &str) -> bool {
    sql.starts_with(CHECKSUM_INSERT)
}

/// The write that computes the checksum. Each row is hashed from its columns joined with
/// `#` as bytes plus a NULL map (so NULL and '' differ); BIT_XOR makes the result independent of the
/// order rows are read in.
pub fn checksum_statement(run: u64, db: &str, table: &str, columns: &[String]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let nulls: Vec<String> = cols.iter().map(|c| format!("ISNULL({c})")).collect();
    // As bytes: columns of different collations cannot be concatenated as text (error 1267).
    let cols: Vec<String> = cols
        .iter()
        .map(|c| format!("CAST({c} AS BINARY)"))
        .collect();
    format!(
        "{CHECKSUM_INSERT}{run}, {}, {}, COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', {}, \
         CONCAT({})))), 0) FROM {}.{}",
        literal(db),
        literal(table),
        cols.join(", "),
        nulls.join(", "),
        ident(db),
        ident(table)
    )
}

impl ClientSession {
    pub(super) async fn checksum_table<S>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        db: Option<String>,
        table: String,
    ) -> Result<(), Failure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if session.in_transaction {
            return Err(Failure::Answer(super::writes::not_supported(
                "PROXY CHECKSUM TABLE runs as its own transaction; COMMIT or ROLLBACK first",
            )));
        }
        let Some(db) = db.or_else(|| session.schema.clone()) else {
            return Err(Failure::Answer(MysqlError::new(
                1046,
                "3D000",
                "No database selected",
            )));
        };
        let started = Instant::now();
        let run: u64 = rand::random::<u64>() >> 1;
        // Routed as the checksum write is: the primary of the table's shard.
        let probe = self.ctx.classify_cache.classify(&checksum_statement(
            run,
            &db,
            &table,
            &["x".to_string()],
        ));
        let route = self.route(&probe);
        let columns = format!(
            "(SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION SEPARATOR '\\n') \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {})",
            literal(&db),
            literal(&table)
        );
        let columns = self.select_value(session, &probe, route, &columns).await?;
        // The primary connection was held for that read only.
        self.release_if_unpinned(session);
        let Some(columns) = columns else {
            return Err(Failure::Answer(MysqlError::new(
                1146,
                "42S02",
                format!("Table '{db}.{table}' doesn't exist"),
            )));
        };
        let columns: Vec<String> = columns.split('\n').map(str::to_string).collect();
        let sql = checksum_statement(run, &db, &table, &columns);
        let payload = [&[0x03u8][..], sql.as_bytes()].concat();
        let c = self.ctx.classify_cache.classify(&sql);
        let mut sink = PacketStream::new(MemoryIo::keeping());
        Box::pin(self.run_statement(&mut sink, session, c, &sql, &payload)).await?;
        sink.flush().await.map_err(Failure::Client)?;
        let raw = sink.into_parts().0.buf;
        if ends_with_error(&raw) {
            let e = raw
                .get(4..)
                .and_then(MysqlError::decode)
                .unwrap_or_else(|| MysqlError::new(1105, "HY000", "the checksum write failed"));
            return Err(Failure::Answer(e));
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
            run,
            session.last_write_ts,
            APPLY_WAIT,
        )
        .await;
        let reference = results
            .iter()
            .find(|r| r.primary)
            .and_then(|r| r.result.as_ref().ok().copied());
        let mut differing = 0;
        let rows: Vec<Vec<Option<String>>> = results
            .iter()
            .map(|r| {
                let (rows, crc, verdict) = match (&r.result, reference) {
                    (Ok((n, crc)), _) if r.primary => (Some(*n), Some(*crc), "primary".into()),
                    (Ok((n, crc)), Some(p)) if (*n, *crc) == p => {
                        (Some(*n), Some(*crc), "same as the primary".into())
                    }
                    (Ok((n, crc)), Some(_)) => {
                        differing += 1;
                        (Some(*n), Some(*crc), "DIFFERS from the primary".into())
                    }
                    (Ok((n, crc)), None) => (Some(*n), Some(*crc), "primary unreadable".into()),
                    (Err(why), _) => (None, None, why.clone()),
                };
                vec![
                    Some(format!("{db}.{table}")),
                    Some(r.replica.0.to_string()),
                    Some(r.address.clone()),
                    rows.map(|n| n.to_string()),
                    crc.map(|c| c.to_string()),
                    Some(verdict),
                ]
            })
            .collect();
        if differing > 0 {
            tracing::error!(table = %format!("{db}.{table}"), differing,
                "PROXY CHECKSUM TABLE: replicas differ from the primary; rebuild them from the primary");
        } else {
            tracing::info!(table = %format!("{db}.{table}"), elapsed_ms = started.elapsed().as_millis() as u64,
                "PROXY CHECKSUM TABLE done");
        }
        crate::protocol::resultset::queue_text_resultset(
            client,
            1,
            &["table", "replica", "address", "rows", "checksum", "result"],
            &rows,
            session.status_flags(),
            self.deprecate_eof,
        );
        client.flush().await.map_err(Failure::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_table_name() {
        let ok = |sql: &str| parse(sql).map(|r| r.map_err(|e| e.code));
        assert_eq!(
            ok("PROXY CHECKSUM TABLE shop.orders"),
            Some(Ok((Some("shop".into()), "orders".into())))
        );
        assert_eq!(
            ok("proxy checksum table `we``ird`;"),
            Some(Ok((None, "we`ird".into())))
        );
        assert_eq!(ok("PROXY CHECKSUM orders"), Some(Err(1064)));
        assert_eq!(ok("PROXY CHECKSUM TABLE a, b"), Some(Err(1064)));
        assert_eq!(ok("PROXY SWITCHOVER"), None);
    }

    #[test]
    fn the_statement_quotes_names_and_hashes_nulls_apart() {
        let sql = checksum_statement(7, "d'b", "t`x", &["a".into(), "b c".into()]);
        assert_eq!(
            sql,
            "INSERT INTO myquorum.checksums (run, db, tbl, row_count, crc) SELECT 7, 'd''b', \
             't`x', COUNT(*), COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', CAST(`a` AS BINARY), \
             CAST(`b c` AS BINARY), CONCAT(ISNULL(`a`), ISNULL(`b c`))))), 0) FROM \
             `d'b`.`t``x`"
        );
    }
}
