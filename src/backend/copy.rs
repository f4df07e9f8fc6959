//! Copies every application database of one server to another as of one consistent
//! snapshot: what `PROXY REBUILD REPLICA` uses to bring a quarantined replica back (the
//! logical copy Galera's mysqldump SST makes, done in-process so no dump tool is needed on
//! the proxy's host).
//!
//! Tables (and sequences) are created from SHOW CREATE, rows read in the snapshot over the
//! binary protocol and inserted as typed parameters (values travel exactly: no text round
//! trip of floats, binary strings or dates), generated columns left to the target; views,
//! routines, triggers and events follow the rows, each under the sql_mode it was defined in,
//! so no trigger fires during the load. The target's application databases are dropped
//! first: it ends up holding what the source held at the snapshot, `myquorum.wal` included.
//!
//! Owns: the copy. May import: backend::pool (addresses, credentials), mysql_async, sql
//! (quoting).

use super::pool::BackendPool;
use crate::sql::{quote_identifier, quote_string};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};
use std::time::Instant;

/// Databases that belong to the server, never copied nor dropped.
const SYSTEM_DATABASES: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];
/// Rows per INSERT, and the bytes of values after which a batch is sent early.
const BATCH_ROWS: usize = 500;
const BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct CopyReport {
    pub databases: usize,
    pub tables: usize,
    pub rows: u64,
    pub views: usize,
    pub routines: usize,
    pub triggers: usize,
    pub events: usize,
    pub seconds: f64,
}

fn is_system(db: &str) -> bool {
    SYSTEM_DATABASES.iter().any(|s| s.eq_ignore_ascii_case(db))
}

fn err(what: &str) -> impl Fn(mysql_async::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Column `i` of a text row as a string ("" for NULL or a non-text value).
fn text(row: &Row, i: usize) -> String {
    match row.as_ref(i) {
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

async fn connect(pool: &BackendPool) -> Result<Conn, String> {
    let opts = pool
        .control_opts()
        .ok_or_else(|| format!("backend address {} is not host:port", pool.addr))?;
    Conn::new(opts)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", pool.addr))
}

/// Copies `source`'s application databases to `target`. `at_snapshot` runs right before the
/// source's consistent snapshot starts (the caller notes the log position the copy covers).
pub async fn copy_databases(
    source: &BackendPool,
    target: &BackendPool,
    at_snapshot: impl FnOnce(),
) -> Result<CopyReport, String> {
    let started = Instant::now();
    let mut src = connect(source).await?;
    let mut dst = connect(target).await?;
    dst.query_drop(
        "SET SESSION foreign_key_checks = 0, unique_checks = 0, \
         sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'",
    )
    .await
    .map_err(err("preparing the target session"))?;
    src.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(err("preparing the source session"))?;
    src.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(err("preparing the source session"))?;
    at_snapshot();
    src.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(err("starting the snapshot on the source"))?;
    let mut report = CopyReport::default();
    let old: Vec<String> = dst
        .query("SHOW DATABASES")
        .await
        .map_err(err("listing the target's databases"))?;
    for db in old.iter().filter(|d| !is_system(d)) {
        dst.query_drop(format!("DROP DATABASE {}", quote_identifier(db)))
            .await
            .map_err(err(&format!("dropping {db} on the target")))?;
    }
    let dbs: Vec<String> = src
        .query("SHOW DATABASES")
        .await
        .map_err(err("listing the source's databases"))?;
    let dbs: Vec<String> = dbs.into_iter().filter(|d| !is_system(d)).collect();
    for db in &dbs {
        let create: Row = src
            .query_first(format!("SHOW CREATE DATABASE {}", quote_identifier(db)))
            .await
            .map_err(err(&format!("reading database {db}")))?
            .ok_or_else(|| format!("database {db} vanished"))?;
        dst.query_drop(text(&create, 1))
            .await
            .map_err(err(&format!("creating database {db}")))?;
        report.databases += 1;
    }
    let mut views = Vec::new();
    for db in &dbs {
        let tables: Vec<Row> = src
            .query(format!("SHOW FULL TABLES FROM {}", quote_identifier(db)))
            .await
            .map_err(err(&format!("listing the tables of {db}")))?;
        dst.query_drop(format!("USE {}", quote_identifier(db)))
            .await
            .map_err(err(&format!("using {db} on the target")))?;
        for t in &tables {
            let (name, kind) = (text(t, 0), text(t, 1));
            if kind == "VIEW" {
                views.push((db.clone(), name));
                continue;
            }
            copy_table(&mut src, &mut dst, db, &name, &mut report).await?;
        }
    }
    copy_views(&mut src, &mut dst, &views, &mut report).await?;
    for db in &dbs {
        copy_programs(&mut src, &mut dst, db, &mut report).await?;
    }
    src.query_drop("COMMIT")
        .await
        .map_err(err("ending the snapshot"))?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn copy_table(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    table: &str,
    report: &mut CopyReport,
) -> Result<(), String> {
    let full = format!("{}.{}", quote_identifier(db), quote_identifier(table));
    let create: Row = src
        .query_first(format!("SHOW CREATE TABLE {full}"))
        .await
        .map_err(err(&format!("reading table {db}.{table}")))?
        .ok_or_else(|| format!("table {db}.{table} vanished"))?;
    dst.query_drop(without_auto_increment_counter(&text(&create, 1)))
        .await
        .map_err(err(&format!("creating table {db}.{table} on the target")))?;
    report.tables += 1;
    // Generated columns are computed by the target; inserting them is an error.
    let columns: Vec<String> = src
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND IS_GENERATED = 'NEVER' \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(err(&format!("reading the columns of {db}.{table}")))?;
    if columns.is_empty() {
        return Ok(());
    }
    let list = columns
        .iter()
        .map(|c| quote_identifier(c))
        .collect::<Vec<_>>()
        .join(", ");
    let one_row = format!("({})", vec!["?"; columns.len()].join(", "));
    // Prepared, so rows come over the binary protocol with their exact types.
    let mut rows = src
        .exec_iter(format!("SELECT {list} FROM {full}"), ())
        .await
        .map_err(err(&format!("reading the rows of {db}.{table}")))?;
    let mut batch: Vec<Value> = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    let per_batch = BATCH_ROWS.min(60_000 / columns.len()).max(1);
    loop {
        let row: Option<Row> = rows
            .next()
            .await
            .map_err(err(&format!("reading the rows of {db}.{table}")))?;
        let done = row.is_none();
        if let Some(row) = row {
            let values = row.unwrap();
            bytes += values.iter().map(value_size).sum::<usize>();
            batch.extend(values);
            n += 1;
        }
        if n > 0 && (done || n >= per_batch || bytes >= BATCH_BYTES) {
            let sql = format!(
                "INSERT INTO {full} ({list}) VALUES {}",
                vec![one_row.as_str(); n].join(", ")
            );
            dst.exec_drop(sql, Params::Positional(std::mem::take(&mut batch)))
                .await
                .map_err(err(&format!("writing rows of {db}.{table} on the target")))?;
            report.rows += n as u64;
            (n, bytes) = (0, 0);
        }
        if done {
            return Ok(());
        }
    }
}

/// SHOW CREATE TABLE without its `AUTO_INCREMENT=n` table option. That counter is read live,
/// not from the snapshot, so it may be ahead of the copied rows; without it the target's
/// counter follows from the rows (max + 1), as on a follower that applied them. (Statements
/// replay with the primary's insert ids either way; what a trigger inserts takes the
/// counter.) The server prints the option on the line that closes the column list, right
/// after ENGINE=.
fn without_auto_increment_counter(create: &str) -> String {
    let Some(line_start) = create.find("\n) ").map(|i| i + 1) else {
        return create.to_string();
    };
    let line_end = create[line_start..]
        .find('\n')
        .map_or(create.len(), |i| line_start + i);
    let line = &create[line_start..line_end];
    let Some(at) = line.find(" AUTO_INCREMENT=") else {
        return create.to_string();
    };
    if line.find(" COMMENT=").is_some_and(|c| c < at) {
        return create.to_string();
    }
    let digits = line[at + 16..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let cut = line_start + at..line_start + at + 16 + digits;
    format!("{}{}", &create[..cut.start], &create[cut.end..])
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() + 9,
        _ => 9,
    }
}

/// Views may use other views: created in passes until none is left or a pass makes none.
async fn copy_views(
    src: &mut Conn,
    dst: &mut Conn,
    views: &[(String, String)],
    report: &mut CopyReport,
) -> Result<(), String> {
    let mut left: Vec<(String, String, String)> = Vec::new();
    for (db, name) in views {
        let create: Row = src
            .query_first(format!(
                "SHOW CREATE VIEW {}.{}",
                quote_identifier(db),
                quote_identifier(name)
            ))
            .await
            .map_err(err(&format!("reading view {db}.{name}")))?
            .ok_or_else(|| format!("view {db}.{name} vanished"))?;
        left.push((db.clone(), name.clone(), text(&create, 1)));
    }
    while !left.is_empty() {
        let before = left.len();
        let mut failed = Vec::new();
        let mut last_error = String::new();
        for (db, name, sql) in left {
            dst.query_drop(format!("USE {}", quote_identifier(&db)))
                .await
                .map_err(err(&format!("using {db} on the target")))?;
            match dst.query_drop(&sql).await {
                Ok(()) => report.views += 1,
                Err(e) => {
                    last_error = format!("view {db}.{name}: {e}");
                    failed.push((db, name, sql));
                }
            }
        }
        if failed.len() == before {
            return Err(format!("creating views on the target: {last_error}"));
        }
        left = failed;
    }
    Ok(())
}

/// Routines, triggers and events of `db`, each under its own sql_mode (and an event's time
/// zone), after the rows.
async fn copy_programs(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    report: &mut CopyReport,
) -> Result<(), String> {
    // `mysql.proc`, not information_schema.ROUTINES (see backend::health: an abandoned
    // query on that view can crash MariaDB 10.11).
    let routines: Vec<(String, String)> = src
        .exec(
            "SELECT name, type FROM mysql.proc WHERE db = ? AND type IN ('FUNCTION', 'PROCEDURE') \
             ORDER BY type, name",
            (db,),
        )
        .await
        .map_err(err(&format!("listing the routines of {db}")))?;
    let mut programs: Vec<(String, String)> = routines
        .into_iter()
        .map(|(name, kind)| (kind, name))
        .collect();
    let triggers: Vec<Row> = src
        .query(format!("SHOW TRIGGERS FROM {}", quote_identifier(db)))
        .await
        .map_err(err(&format!("listing the triggers of {db}")))?;
    programs.extend(triggers.iter().map(|t| ("TRIGGER".to_string(), text(t, 0))));
    let events: Vec<Row> = src
        .query(format!("SHOW EVENTS FROM {}", quote_identifier(db)))
        .await
        .map_err(err(&format!("listing the events of {db}")))?;
    programs.extend(events.iter().map(|e| ("EVENT".to_string(), text(e, 1))));
    dst.query_drop(format!("USE {}", quote_identifier(db)))
        .await
        .map_err(err(&format!("using {db} on the target")))?;
    for (kind, name) in programs {
        let shown: Row = src
            .query_first(format!(
                "SHOW CREATE {kind} {}.{}",
                quote_identifier(db),
                quote_identifier(&name)
            ))
            .await
            .map_err(err(&format!("reading {kind} {db}.{name}")))?
            .ok_or_else(|| format!("{kind} {db}.{name} vanished"))?;
        // (name, sql_mode, statement, …); an event has its time zone third.
        let sql_mode = text(&shown, 1);
        let (statement, time_zone) = if kind == "EVENT" {
            (text(&shown, 3), Some(text(&shown, 2)))
        } else {
            (text(&shown, 2), None)
        };
        if statement.is_empty() {
            return Err(format!(
                "{kind} {db}.{name}: its definition is not readable (the proxy's backend user needs \
                 the privileges to see it)"
            ));
        }
        let mut set = format!("SET SESSION sql_mode = {}", quote_string(&sql_mode));
        if let Some(tz) = time_zone {
            set.push_str(&format!(", time_zone = {}", quote_string(&tz)));
        }
        dst.query_drop(set)
            .await
            .map_err(err(&format!("setting the sql_mode of {kind} {db}.{name}")))?;
        dst.query_drop(statement)
            .await
            .map_err(err(&format!("creating {kind} {db}.{name} on the target")))?;
        match kind.as_str() {
            "TRIGGER" => report.triggers += 1,
            "EVENT" => report.events += 1,
            _ => report.routines += 1,
        }
    }
    dst.query_drop(
        "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
         time_zone = '+00:00'",
    )
    .await
    .map_err(err("restoring the target session"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_auto_increment_counter_is_left_out() {
        let create = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=3017 DEFAULT CHARSET=latin1";
        assert_eq!(
            without_auto_increment_counter(create),
            "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1"
        );
        let partitioned = "CREATE TABLE `p` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=9 DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)\nPARTITIONS 2";
        assert!(!without_auto_increment_counter(partitioned).contains("AUTO_INCREMENT=9"));
        assert!(without_auto_increment_counter(partitioned).ends_with("PARTITIONS 2"));
        for unchanged in [
            "CREATE TABLE `n` (\n  `a` int(11) DEFAULT NULL\n) ENGINE=InnoDB DEFAULT CHARSET=latin1",
            "CREATE TABLE `c` (\n  `a` int(11)\n) ENGINE=InnoDB COMMENT=' AUTO_INCREMENT=5'",
        ] {
            assert_eq!(without_auto_increment_counter(unchanged), unchanged);
        }
    }
}
