//! Re-executing log records on one replica over a raw backend connection: each statement's
//! session context, then the statement (text, or prepared and executed with the primary's
//! parameter bytes), then the records' rows in `myquorum.wal` marked applied, all in one
//! transaction per batch; and storing records as received (held, not yet applied). Commands of a batch are pipelined (one round trip), and COMMIT is sent only after
//! every answer was checked, so a failed statement leaves nothing behind.
//!
//! Used by the follower appliers and by recovery of the primary.
//! Owns: a replica connection's replay state. May import: backend (connection, pool),
//! protocol, replication::{record, checksum (its table), applier::connect (a second
//! connection to the same server)}, sql::{replicated_settings (the baseline every context
//! starts from), quote_identifier, classify::runs_a_program (through `Statement`)}.

use super::record::{Body, Record, RecordKind, Statement};
use super::wal_table::{self, WalRows};
use crate::backend::{BackendConn, BackendPool};
use crate::protocol::message::LOCAL_INFILE_HEADER;
use crate::protocol::relay::{read_response, ResponseKind, ResponseSummary};
use crate::protocol::resultset::read_first_row;
use crate::protocol::MysqlError;
use crate::router::ShardId;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;

const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;

/// ER_BAD_DB_ERROR: `USE` of a database that does not exist.
const UNKNOWN_DATABASE: u16 = 1049;

/// Whether a pipeline's `Expect::Marked` changed as many rows as it had records.
struct MarkedAll(bool);

/// One log entry as appliers see it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub ts: u64,
    pub payload: Arc<[u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("connection to the replica failed: {0}")]
    Io(#[from] io::Error),
    /// The replica's result differs from the primary's: it must stop applying.
    #[error("{0}")]
    Diverged(String),
}

/// Where a replica stands in the log, from its `myquorum.wal`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Every record up to here ran on this replica.
    pub applied: u64,
    /// The replica durably holds records up to here (≥ applied).
    pub held: u64,
    /// The server's `max_allowed_packet`: bounds the records and batches it can store.
    pub max_allowed_packet: u64,
    /// `innodb_flush_log_at_trx_commit` is 1: what it stores is on disk when it answers.
    pub durable_commits: bool,
    /// `innodb_autoinc_lock_mode` is 2 (interleaved): as primary, concurrent bulk inserts
    /// get interleaved ids that a replay in log order does not give.
    pub interleaved_autoinc: bool,
    /// `@@system_time_zone`: what `time_zone = SYSTEM` means there.
    pub system_time_zone: String,
}

/// `SET timestamp = …, insert_id = …` (and the optional ones) for one statement; None when
/// there is nothing to set: the statement reads no clock (timestamp 0), generated no id,
/// and `reset_insert_id` is false (no earlier `insert_id` waits on the connection that it
/// could take: the server keeps one until an insert uses it, in a trigger too).
pub fn statement_context(s: &Statement, reset_insert_id: bool) -> Option<String> {
    let mut parts = Vec::new();
    if s.timestamp_us != 0 {
        parts.push(format!(
            "timestamp = {}.{:06}",
            s.timestamp_us / 1_000_000,
            s.timestamp_us % 1_000_000
        ));
    }
    if s.insert_id != 0 || reset_insert_id {
        parts.push(format!("insert_id = {}", s.insert_id));
    }
    if let Some(id) = s.last_insert_id {
        parts.push(format!("last_insert_id = {id}"));
    }
    if let Some((a, b)) = s.rand_seeds {
        parts.push(format!("rand_seed1 = {a}, rand_seed2 = {b}"));
    }
    (!parts.is_empty()).then(|| format!("SET {}", parts.join(", ")))
}

/// Whether replaying `s` may generate an auto-increment value. An UPDATE or DELETE that
/// read no clock on the primary cannot: that took tables without triggers and no stored
/// function calls (`sql::clock`, `backend::schema_facts`), and only an insert generates.
pub fn may_generate_ids(s: &Statement) -> bool {
    let text = match &s.body {
        Body::Text(sql) => String::from_utf8_lossy(sql),
        Body::Prepared { sql, .. } => sql.as_str().into(),
        Body::LoadData { .. } => return true,
    };
    let first = crate::sql::lexer::Lexer::new(&text).next().map(|t| t.tok);
    s.timestamp_us != 0 || !first.is_some_and(|t| t.is_word("UPDATE") || t.is_word("DELETE"))
}

/// The SET that gives a connection `collation` and `settings` from any earlier context.
fn settings_statement(collation: u8, settings: &[String]) -> String {
    let c = mysql_common::collations::Collation::from(mysql_common::collations::CollationId::from(
        u16::from(collation),
    ));
    // The baseline, not DEFAULT: a follower's own globals must not decide what it writes.
    let mut parts = vec![format!("NAMES {} COLLATE {}", c.charset(), c.collation())];
    parts.extend(crate::sql::replicated_settings::baseline_assignments());
    parts.extend(settings.iter().cloned());
    format!("SET {}", parts.join(", "))
}

/// A COM_QUERY packet for `sql`.
pub fn query(sql: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_QUERY);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// What the primary got for logged DDL statements, by record timestamp (`None`: OK,
/// `Some(code)`: that error). A DDL record missing here has an unknown outcome.
pub type PrimaryDdlOutcomes = HashMap<u64, Option<u16>>;

/// A replayed DDL's yardstick: the primary's result, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DdlOnPrimary {
    /// Logged before a restart or its primary connection was lost: errors are tolerated
    /// (logged), since the primary may well have got the same one.
    Unknown,
    Succeeded,
    Failed(u16),
}

/// Errors a DDL gets when what it does is already done: the second run of a CREATE, DROP,
/// ADD or RENAME that completed. A DDL commits by itself, before its record is marked
/// applied, so a replay connection lost in between leaves it unknown whether it ran.
fn already_done(code: u16) -> bool {
    matches!(
        code,
        1007 | 1008 // database exists, does not exist
            | 1050 | 1051 | 1146 // table exists, unknown table, no such table
            | 1054 | 1060 | 1061 | 1091 // unknown column, duplicate column or key, can't drop
            | 1304 | 1305 // routine exists, does not exist
            | 1359 | 1360 // trigger exists, does not exist
            | 1396 // CREATE / DROP USER of an account that is there, not there
            | 1826 // duplicate foreign key name
    )
}

/// Errors after which the primary changed nothing that a replica could repeat: the
/// statement was refused before it ran (privileges, syntax, read-only) or interrupted by a
/// lock wait, deadlock, timeout or KILL there. Followers do not run such a DDL at all: run
/// with the proxy's own privileges and without the primary's lock contention it could
/// succeed, and the replicas would hold a schema the primary has not.
pub fn ddl_error_changed_nothing(code: u16) -> bool {
    matches!(
        code,
        1044 | 1045 | 1142 | 1143 | 1227 | 1370 // access denied
            | 1064 | 1149 // syntax
            // No database selected: an unqualified name, found while parsing. A follower's
            // replay connection may still have an earlier record's database and run it.
            | 1046
            | 1205 | 1213 // lock wait timeout (also metadata locks), deadlock
            | 1317 | 1927 | 1969 // interrupted, killed, max_statement_time
            | 1290 | 1792 // read-only server or transaction
            // The session's state forbids it, checked before it runs: LOCK TABLES in force
            // (a table not locked, or locked for READ), an open transaction where none may
            // be, a global read lock, an active XA transaction, inside a stored function,
            // the session's own BACKUP STAGE.
            | 1099 | 1100 | 1192 | 1223 | 1399 | 1422 | 4145
    )
}

/// What to check in one pipelined command's answer.
/// Opens an apply batch's transaction (see `Replayer::apply`).
const BATCH_BEGIN: &str = "SET autocommit = 0";

enum Expect {
    Ok(&'static str),
    /// `USE` of a record's database: where it does not exist here, the pipeline's failure
    /// names it (`Replayer::unknown_schema`) so the batch can be applied again with the
    /// primary's state for it (`select_schema`).
    Use(String),
    Statement {
        affected: Option<u64>,
        ts: u64,
        /// The statement's first characters, for a failure's reason.
        text: Box<str>,
    },
    /// DDL: the same outcome as on the primary (which ran the same text on the same schema).
    /// `may_have_run`: this replica started it before (`wal_table::mark_started`) and lost
    /// the connection before the record was marked: an `already_done` error is its own
    /// first run.
    Ddl {
        ts: u64,
        primary: DdlOnPrimary,
        may_have_run: bool,
    },
    /// LOAD DATA LOCAL: the server asks for the file, gets `data`, then answers as a
    /// statement.
    LoadData {
        data: Vec<u8>,
        affected: Option<u64>,
        ts: u64,
    },
    /// `wal_table::mark_applied` of this many records: fewer rows changed is no failure, it means
    /// the payloads must be stored (`run_pipeline` reports it).
    Marked(u64),
}

/// A replica connection plus the context currently applied on it.
pub struct Replayer {
    pub conn: BackendConn,
    schema: Option<String>,
    context: Option<(u8, Vec<String>)>,
    /// Server statement ids by (schema current when prepared, text): unqualified names
    /// resolve against the schema at PREPARE.
    prepared: HashMap<(Option<String>, String), u32>,
    deprecate_eof: bool,
    /// An `insert_id` was set that no insert may have used yet (`statement_context`).
    insert_id_pending: bool,
    /// The server, for a second connection (`select_dropped_schema`).
    pool: Option<Arc<BackendPool>>,
    /// Databases records selected that do not exist here (their `USE` failed): selected
    /// with `select_schema` before a batch, never with a pipelined `USE`.
    dropped_schemas: HashSet<String>,
    /// Set by `run_pipeline` when a pipelined `USE` found no such database.
    unknown_schema: Option<String>,
    /// Set by `run_pipeline` when its first failure was a deadlock or lock wait timeout
    /// (`is_lock_conflict`): another transaction on this replica, not the record.
    lock_conflict: bool,
}

/// Times a batch that failed on a lock conflict is applied again before the replica is
/// quarantined (MySQL's SQL thread retries a transaction `slave_transaction_retries` = 10
/// times).
const LOCK_CONFLICT_RETRIES: u32 = 10;

/// A deadlock or lock wait timeout (InnoDB's, or a metadata lock's). The applier is the only
/// writer of replicated rows on a follower, so the other transaction is the replica's own:
/// maintenance the proxy runs on every replica (OPTIMIZE TABLE rebuilds the table and waits
/// for an exclusive metadata lock: fuzz seed 263), or a client connected to it directly. The
/// record is not at fault; applying it again is.
fn is_lock_conflict(code: u16) -> bool {
    matches!(code, 1205 | 1213)
}

/// Whether `s` is an error answer for a lock conflict (`is_lock_conflict`).
fn answers_lock_conflict(s: &ResponseSummary) -> bool {
    s.error.as_ref().is_some_and(|e| is_lock_conflict(e.code))
}

impl Replayer {
    pub fn new(conn: BackendConn, pool: Option<Arc<BackendPool>>) -> Replayer {
        let deprecate_eof = conn
            .hello
            .caps
            .contains(mysql_common::constants::CapabilityFlags::CLIENT_DEPRECATE_EOF);
        Replayer {
            conn,
            schema: None,
            context: None,
            prepared: HashMap::new(),
            deprecate_eof,
            insert_id_pending: false,
            pool,
            dropped_schemas: HashSet::new(),
            unknown_schema: None,
            lock_conflict: false,
        }
    }

    /// Runs a statement whose answer is OK (or a result set, discarded).
    pub async fn execute(&mut self, sql: &str) -> io::Result<Result<(), MysqlError>> {
        self.conn.stream.write_packet(0, &query(sql)).await?;
        let s = read_response(
            &mut self.conn.stream,
            ResponseKind::ResultSets,
            self.deprecate_eof,
        )
        .await?;
        Ok(match s.error {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// First row of a query's result.
    pub async fn query_row(
        &mut self,
        sql: &str,
    ) -> io::Result<Result<Option<Vec<Option<String>>>, MysqlError>> {
        self.conn.stream.write_packet(0, &query(sql)).await?;
        read_first_row(&mut self.conn.stream, self.deprecate_eof).await
    }

    /// Creates `myquorum.wal` if missing and returns this replica's position in the log.
    pub async fn prepare_log_table(&mut self, shard: ShardId) -> Result<Position, ApplyError> {
        // Schema changes only where something is missing: a no-op `ALTER … IF NOT EXISTS`
        // still takes the table's metadata lock on every connect, against a rebuild's copy
        // reading the same server.
        let columns = self
            .query_row(wal_table::EXISTING_COLUMNS)
            .await?
            .map_err(|e| ApplyError::Diverged(format!("cannot read the myquorum schema: {e}")))?
            .and_then(|row| row.into_iter().next().flatten())
            .unwrap_or_default();
        for sql in wal_table::missing_schema(&columns) {
            self.execute(sql).await?.map_err(|e| {
                ApplyError::Diverged(format!("cannot create the myquorum.wal table: {e}"))
            })?;
        }
        // Unapplied rows are only ever at the end, so the backward scan is short.
        let row = self
            .query_row(&format!(
                "SELECT COALESCE((SELECT ts FROM myquorum.wal WHERE shard = {0} AND applied = 1 \
                 ORDER BY ts DESC LIMIT 1), 0), COALESCE(MAX(ts), 0), @@max_allowed_packet, \
                 @@innodb_flush_log_at_trx_commit, @@innodb_autoinc_lock_mode, \
                 @@system_time_zone FROM myquorum.wal WHERE shard = {0}",
                shard.0
            ))
            .await?
            .map_err(|e| ApplyError::Diverged(format!("cannot read myquorum.wal: {e}")))?
            .unwrap_or_default();
        let at = |i: usize| -> u64 {
            row.get(i)
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Position {
            applied: at(0),
            held: at(0).max(at(1)),
            max_allowed_packet: at(2),
            durable_commits: at(3) == 1,
            interleaved_autoinc: at(4) == 2,
            system_time_zone: row.get(5).cloned().flatten().unwrap_or_default(),
        })
    }

    /// Stores `entries` as received (durable here, not yet applied): the acknowledgement the
    /// Cabinet quorum counts. One autocommit statement, or one transaction when a record
    /// spans several rows. `chunk`: the payload bytes one statement carries.
    pub async fn receive(
        &mut self,
        shard: ShardId,
        entries: &[LogEntry],
        chunk: usize,
    ) -> Result<(), ApplyError> {
        let rows = WalRows::new(
            shard,
            entries.iter().map(|e| (e.ts, &e.payload[..])),
            false,
            chunk,
        );
        self.store_rows(rows, false, "storing received records in myquorum.wal")
            .await
    }

    /// Runs `rows`' statements, in a transaction of their own when there are several and
    /// none is open (`in_transaction`), so a record is stored whole or not at all.
    async fn store_rows(
        &mut self,
        rows: WalRows<'_>,
        in_transaction: bool,
        what: &str,
    ) -> Result<(), ApplyError> {
        let failed = |e: MysqlError| ApplyError::Diverged(format!("{what} failed: {e}"));
        let own = !in_transaction && rows.len() > 1;
        if own {
            self.execute("START TRANSACTION").await?.map_err(failed)?;
        }
        for sql in rows {
            if let Err(e) = self.execute(&sql).await? {
                if own {
                    let _ = self.execute("ROLLBACK").await?;
                }
                return Err(failed(e));
            }
        }
        if own {
            self.execute("COMMIT").await?.map_err(failed)?;
        }
        Ok(())
    }

    async fn statement_id(&mut self, sql: &str) -> Result<u32, ApplyError> {
        let key = (self.schema.clone(), sql.to_string());
        if let Some(id) = self.prepared.get(&key) {
            return Ok(*id);
        }
        let mut p = Vec::with_capacity(1 + sql.len());
        p.push(COM_STMT_PREPARE);
        p.extend_from_slice(sql.as_bytes());
        self.conn.stream.write_packet(0, &p).await?;
        let s = read_response(
            &mut self.conn.stream,
            ResponseKind::Prepare,
            self.deprecate_eof,
        )
        .await?;
        match (s.prepare, s.error) {
            (Some(ok), _) => {
                self.prepared.insert(key, ok.statement_id);
                Ok(ok.statement_id)
            }
            (None, e) => Err(ApplyError::Diverged(format!(
                "preparing `{sql}` failed here but not on the primary: {}",
                e.map(|e| e.to_string()).unwrap_or_default()
            ))),
        }
    }

    /// Queues the context commands and the statement itself.
    async fn queue_statement(
        &mut self,
        s: &Statement,
        ts: u64,
        ddl: Option<(DdlOnPrimary, bool)>,
        cmds: &mut Vec<(Vec<u8>, Expect)>,
    ) -> Result<(), ApplyError> {
        if let Some(db) = &s.schema {
            if self.schema.as_deref() != Some(db.as_str()) {
                cmds.push((init_db(db), Expect::Use(db.clone())));
                self.schema = Some(db.clone());
            }
        }
        let ctx = (s.collation, s.settings.clone());
        if self.context.as_ref() != Some(&ctx) {
            cmds.push((
                query(&settings_statement(s.collation, &s.settings)),
                Expect::Ok("session settings"),
            ));
            self.context = Some(ctx);
        }
        let reset_insert_id = self.insert_id_pending && may_generate_ids(s);
        if let Some(set) = statement_context(s, reset_insert_id) {
            cmds.push((query(&set), Expect::Ok("statement context")));
            if s.insert_id != 0 || reset_insert_id {
                self.insert_id_pending = s.insert_id != 0;
            }
        }
        let payload = match &s.body {
            Body::LoadData { sql, data } => {
                cmds.push((
                    query(sql),
                    Expect::LoadData {
                        data: data.clone(),
                        affected: s.affected,
                        ts,
                    },
                ));
                return Ok(());
            }
            Body::Text(sql) => [&[COM_QUERY][..], sql].concat(),
            Body::Prepared { sql, params } => {
                let cached = self
                    .prepared
                    .contains_key(&(self.schema.clone(), sql.clone()));
                if !cached && !cmds.is_empty() {
                    // PREPARE goes out at once: the queued USE (and what precedes it in the
                    // batch) must reach the server first.
                    self.run_pipeline(std::mem::take(cmds)).await?;
                }
                let id = self.statement_id(sql).await?;
                let mut p = Vec::with_capacity(5 + params.len());
                p.push(COM_STMT_EXECUTE);
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(params);
                p
            }
        };
        let expect = match ddl {
            Some((primary, may_have_run)) => Expect::Ddl {
                ts,
                primary,
                may_have_run,
            },
            None => Expect::Statement {
                affected: s.affected,
                ts,
                text: statement_start(&s.body),
            },
        };
        cmds.push((payload, expect));
        Ok(())
    }

    /// Sends `cmds` pipelined and checks every answer; the first failure is returned after
    /// all answers were read (the connection stays in step). A LOAD DATA LOCAL ends a
    /// pipeline segment: its file goes only after the server asked for it.
    async fn run_pipeline(
        &mut self,
        cmds: Vec<(Vec<u8>, Expect)>,
    ) -> Result<MarkedAll, ApplyError> {
        let mut failure = None;
        self.unknown_schema = None;
        self.lock_conflict = false;
        let mut marked_all = MarkedAll(true);
        let mut rest = cmds.into_iter();
        loop {
            let mut segment = Vec::new();
            for (p, expect) in rest.by_ref() {
                self.conn.stream.queue_packet(0, &p);
                let load = matches!(expect, Expect::LoadData { .. });
                segment.push(expect);
                if load {
                    break;
                }
            }
            if segment.is_empty() {
                break;
            }
            self.conn.stream.flush().await?;
            for expect in segment {
                // Whether this answer's error becomes the failure kept (a DDL's expected
                // error, the primary's own, does not) and is a lock conflict.
                let first = failure.is_none();
                let conflict;
                if let Expect::LoadData { data, affected, ts } = expect {
                    self.send_infile(&data).await?;
                    let s = self.read_answer().await?;
                    conflict = answers_lock_conflict(&s);
                    check(
                        Expect::Statement {
                            affected,
                            ts,
                            text: "LOAD DATA".into(),
                        },
                        s,
                        &mut failure,
                        &self.conn.addr,
                    );
                } else if let Expect::Marked(records) = expect {
                    let s = self.read_answer().await?;
                    conflict = answers_lock_conflict(&s);
                    match (s.error, s.ok) {
                        (Some(e), _) if failure.is_none() => {
                            failure = Some(format!("marking records applied failed: {e}"));
                        }
                        (None, Some(ok)) if ok.affected_rows == records => {}
                        _ => marked_all = MarkedAll(false),
                    }
                } else {
                    let s = self.read_answer().await?;
                    conflict = answers_lock_conflict(&s);
                    if let (Expect::Use(db), Some(e)) = (&expect, &s.error) {
                        if e.code == UNKNOWN_DATABASE && failure.is_none() {
                            self.unknown_schema = Some(db.clone());
                        }
                    }
                    check(expect, s, &mut failure, &self.conn.addr);
                }
                self.lock_conflict |= first && conflict && failure.is_some();
            }
        }
        match failure {
            Some(f) => Err(ApplyError::Diverged(f)),
            None => Ok(marked_all),
        }
    }

    async fn read_answer(&mut self) -> io::Result<ResponseSummary> {
        read_response(
            &mut self.conn.stream,
            ResponseKind::ResultSets,
            self.deprecate_eof,
        )
        .await
    }

    /// Answers the server's LOCAL INFILE request with the recorded file. When the server
    /// answered otherwise (an error), that answer is left for `read_answer`.
    async fn send_infile(&mut self, data: &[u8]) -> io::Result<()> {
        let frame = self.conn.stream.next_frame().await?;
        if self.conn.stream.frame_payload(frame).first() != Some(&LOCAL_INFILE_HEADER) {
            return Ok(());
        }
        self.conn.stream.consume_frame(frame);
        let mut seq = frame.seq.wrapping_add(1);
        for chunk in data.chunks(64 << 10) {
            seq = self.conn.stream.queue_packet(seq, chunk);
        }
        self.conn.stream.queue_packet(seq, &[]);
        self.conn.stream.flush().await
    }

    /// Applies `entries` (in timestamp order) with their `myquorum.wal` rows. Transaction
    /// records are grouped into one transaction; DDL records run on their own and must end
    /// as they did on the primary (`ddl`), where that is known.
    pub async fn apply(
        &mut self,
        shard: ShardId,
        entries: &[LogEntry],
        ddl: &PrimaryDdlOutcomes,
        chunk: usize,
    ) -> Result<(), ApplyError> {
        let applied = self.apply_entries(shard, entries, ddl, chunk).await;
        if applied.is_err() {
            // A context queued behind a failure may not have reached the server.
            self.insert_id_pending = true;
        }
        applied
    }

    async fn apply_entries(
        &mut self,
        shard: ShardId,
        entries: &[LogEntry],
        ddl: &PrimaryDdlOutcomes,
        chunk: usize,
    ) -> Result<(), ApplyError> {
        let mut i = 0;
        let mut conflicts = 0u32;
        while i < entries.len() {
            let rec = decode(&entries[i])?;
            if rec.kind == RecordKind::Ddl {
                let ts = entries[i].ts;
                let primary = match ddl.get(&ts) {
                    None => DdlOnPrimary::Unknown,
                    Some(None) => DdlOnPrimary::Succeeded,
                    Some(Some(code)) => DdlOnPrimary::Failed(*code),
                };
                let mut cmds = Vec::new();
                match primary {
                    DdlOnPrimary::Failed(code) if ddl_error_changed_nothing(code) => {
                        tracing::debug!(ts, code, addr = %self.conn.addr,
                            "not replaying a DDL the primary refused");
                    }
                    _ => {
                        let may_have_run = self.ddl_started(shard, ts).await?;
                        for s in &rec.statements {
                            if let Some(db) = &s.schema {
                                // Not pipelined: a DDL behind a failed USE would run
                                // under the previous database, and not in a transaction.
                                self.select_schema(db).await?;
                            }
                            self.queue_statement(s, ts, Some((primary, may_have_run)), &mut cmds)
                                .await?;
                        }
                    }
                }
                // No timestamp reset afterwards: every replayed statement that reads the
                // clock sets its own, and nothing else on a replay connection reads it.
                cmds.push((
                    query(&wal_table::mark_applied(shard, [entries[i].ts])),
                    Expect::Marked(1),
                ));
                let result = self.run_pipeline(cmds).await;
                crate::backend::schema_facts::note_replayed_ddl();
                // DROP DATABASE of the current schema leaves the connection without one.
                self.schema = None;
                if let Err(e) = &result {
                    if self.lock_conflict_again(&mut conflicts, e).await {
                        continue;
                    }
                }
                if !result?.0 {
                    self.store_applied(shard, &entries[i..=i], chunk, false)
                        .await?;
                }
                i += 1;
                conflicts = 0;
                continue;
            }
            // Not START TRANSACTION: the batch is pipelined, and a statement that ends the
            // transaction by failing (a deadlock rolls all of it back) would leave the
            // statements behind it to run and commit one by one; with autocommit off they
            // run in a new transaction that `abandon` rolls back. Found re-applying on a
            // primary under table locks: a committed half record failed every retry.
            if let Some(db) = self.dropped_schema_of(&rec) {
                // Its state is reached with DDL, so before the batch's transaction.
                self.select_schema(&db).await?;
            }
            let mut cmds = vec![(query(BATCH_BEGIN), Expect::Ok(BATCH_BEGIN))];
            let mut j = i;
            let mut queued = Ok(());
            // A record that runs a stored program goes in a batch of its own: a ROLLBACK or
            // COMMIT inside the program ended the primary session's transaction only, and
            // here would end the other records' too (a ROLLBACK dropped them, silently).
            let runs_a_program =
                |rec: &Record| rec.statements.iter().any(Statement::runs_a_program);
            let first_alone = runs_a_program(&rec);
            while j < entries.len() {
                let rec = if j == i {
                    rec.clone()
                } else {
                    decode(&entries[j])?
                };
                if rec.kind == RecordKind::Ddl
                    || (j > i
                        && (first_alone
                            || runs_a_program(&rec)
                            || self.dropped_schema_of(&rec).is_some()))
                {
                    break;
                }
                for s in &rec.statements {
                    queued = self
                        .queue_statement(s, entries[j].ts, None, &mut cmds)
                        .await;
                    if queued.is_err() {
                        break;
                    }
                }
                if queued.is_err() {
                    break;
                }
                if self
                    .schema
                    .as_ref()
                    .is_some_and(|db| self.dropped_schemas.contains(db))
                {
                    // A stored routine or trigger the record ran cannot switch back to a
                    // database this replica lacks, and MariaDB then leaves the connection
                    // without one: the next record in it selects it again (a new batch,
                    // `dropped_schema_of`). Within the record the primary's session named
                    // the database it still had (it forgets one so left).
                    self.schema = None;
                }
                j += 1;
            }
            cmds.push((
                query(&wal_table::mark_applied(
                    shard,
                    entries[i..j].iter().map(|e| e.ts),
                )),
                Expect::Marked((j - i) as u64),
            ));
            let ran = match queued {
                Ok(()) => self.run_pipeline(cmds).await,
                Err(e) => Err(e),
            };
            let marked = match ran {
                Ok(MarkedAll(all)) => all,
                Err(e) => {
                    self.abandon().await;
                    if self.lock_conflict_again(&mut conflicts, &e).await {
                        continue;
                    }
                    match self.unknown_schema.take() {
                        // A database this replica lacks: the batch again, with the
                        // primary's state for it (`dropped_schema_of`). Once per database.
                        Some(db) if !self.dropped_schemas.contains(&db) => {
                            self.dropped_schemas.insert(db);
                            continue;
                        }
                        _ => return Err(e),
                    }
                }
            };
            if !marked {
                if let Err(e) = self.store_applied(shard, &entries[i..j], chunk, true).await {
                    self.abandon().await;
                    return Err(e);
                }
            }
            self.commit_batch().await?.map_err(|e| {
                ApplyError::Diverged(format!("COMMIT of applied records failed: {e}"))
            })?;
            i = j;
            conflicts = 0;
        }
        Ok(())
    }

    /// After a failed batch: whether its failure was a lock conflict to apply it again for
    /// (`is_lock_conflict`), after a pause that grows with each attempt; false once
    /// `LOCK_CONFLICT_RETRIES` attempts failed so.
    async fn lock_conflict_again(&mut self, conflicts: &mut u32, e: &ApplyError) -> bool {
        if !self.lock_conflict || *conflicts >= LOCK_CONFLICT_RETRIES {
            return false;
        }
        *conflicts += 1;
        tracing::warn!(addr = %self.conn.addr, attempt = *conflicts, error = %e,
            "a lock conflict with another transaction on this replica (maintenance such as \
             OPTIMIZE TABLE, or a client connected to it directly) failed an apply batch; \
             applying it again");
        tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(*conflicts))).await;
        true
    }

    /// Whether this replica started DDL record `ts` before (its row says so); if not, the
    /// row is marked started now, committed before the DDL runs. A record this replica
    /// does not hold has no row to mark: its DDL runs unmarked.
    async fn ddl_started(&mut self, shard: ShardId, ts: u64) -> Result<bool, ApplyError> {
        let failed = |e: MysqlError| {
            ApplyError::Diverged(format!("marking DDL record {ts} started failed: {e}"))
        };
        let state = self
            .query_row(&wal_table::select_applied(shard, ts))
            .await?
            .map_err(failed)?
            .and_then(|row| row.into_iter().next().flatten());
        if state.as_deref() == Some(wal_table::STARTED) {
            return Ok(true);
        }
        self.execute(&wal_table::mark_started(shard, ts))
            .await?
            .map_err(failed)?;
        Ok(false)
    }

    /// The database `rec` starts in when this replica lacks it and the connection has not
    /// selected it yet: a batch starts there, after selecting it (`select_schema`).
    fn dropped_schema_of(&self, rec: &Record) -> Option<String> {
        let db = rec.statements.first()?.schema.as_ref()?;
        (self.dropped_schemas.contains(db) && self.schema.as_ref() != Some(db)).then(|| db.clone())
    }

    /// Selects `db` outside any transaction. Where it does not exist here, the record's
    /// session had it selected on the primary after another session dropped it, and MySQL
    /// keeps it selected there (DATABASE() names it, unqualified names fail with 1146 or
    /// 1049, qualified ones work): `select_dropped_schema` gives this connection that state.
    async fn select_schema(&mut self, db: &str) -> Result<(), ApplyError> {
        if self.schema.as_deref() == Some(db) {
            return Ok(());
        }
        self.conn.stream.write_packet(0, &init_db(db)).await?;
        match self.read_answer().await?.error {
            None => {
                self.schema = Some(db.to_string());
                self.dropped_schemas.remove(db);
                Ok(())
            }
            Some(e) if e.code == UNKNOWN_DATABASE => self.select_dropped_schema(db).await,
            Some(e) => Err(ApplyError::Diverged(format!("USE {db} failed: {e}"))),
        }
    }

    /// Creates `db`, selects it, and drops it from a second connection: dropping the
    /// selected database on this one would leave it with none. Readers of this replica may
    /// see the empty database for that moment.
    async fn select_dropped_schema(&mut self, db: &str) -> Result<(), ApplyError> {
        let Some(pool) = self.pool.clone() else {
            return Err(ApplyError::Diverged(format!(
                "database {db} does not exist here, and this connection cannot reproduce a \
                 session that has it selected"
            )));
        };
        tracing::info!(addr = %self.conn.addr, db,
            "a record's session had a database selected that another session dropped: \
             replaying it with that database selected and absent, as on the primary");
        let mut dropper = super::applier::connect(&pool).await?;
        let name = crate::sql::quote_identifier(db);
        self.execute(&format!("CREATE DATABASE {name}"))
            .await?
            .map_err(|e| ApplyError::Diverged(format!("creating {db} to select it failed: {e}")))?;
        self.conn.stream.write_packet(0, &init_db(db)).await?;
        let used = self.read_answer().await?.error;
        let dropped = dropper.execute(&format!("DROP DATABASE {name}")).await;
        match (used, dropped) {
            (None, Ok(Ok(()))) => {
                self.schema = Some(db.to_string());
                self.dropped_schemas.insert(db.to_string());
                Ok(())
            }
            (used, dropped) => {
                // Nothing may stay behind: the database exists on no other replica.
                self.schema = None;
                let cleanup = self
                    .execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
                let dropped = dropped?;
                if let Err(e) = cleanup? {
                    tracing::error!(addr = %self.conn.addr, db, error = %e,
                        "could not drop the database created to select it; drop it on this \
                         server by hand, it exists on no other replica");
                }
                let why = match (used, dropped) {
                    (Some(e), _) | (None, Err(e)) => e.to_string(),
                    (None, Ok(())) => String::new(),
                };
                Err(ApplyError::Diverged(format!(
                    "selecting the dropped database {db} as on the primary failed: {why}"
                )))
            }
        }
    }

    /// Stores `entries` in `myquorum.wal` as applied, payloads included: for records this
    /// replica never received (in the open transaction, or on its own after a DDL).
    async fn store_applied(
        &mut self,
        shard: ShardId,
        entries: &[LogEntry],
        chunk: usize,
        in_transaction: bool,
    ) -> Result<(), ApplyError> {
        tracing::debug!(addr = %self.conn.addr, records = entries.len(),
            "applied records this replica did not hold: storing them with their payloads");
        let rows = WalRows::new(
            shard,
            entries.iter().map(|e| (e.ts, &e.payload[..])),
            true,
            chunk,
        );
        self.store_rows(
            rows,
            in_transaction,
            "recording the records in myquorum.wal",
        )
        .await
    }

    /// Commits a batch begun with `BATCH_BEGIN`: turning autocommit back on commits the
    /// open transaction (and reports a failure to), one command instead of two.
    async fn commit_batch(&mut self) -> io::Result<Result<(), MysqlError>> {
        self.conn
            .stream
            .write_packet(0, &query("SET autocommit = 1"))
            .await?;
        let ended = self.read_answer().await?;
        Ok(ended.error.map_or(Ok(()), Err))
    }

    /// Rolls back a batch begun with `BATCH_BEGIN` and turns autocommit back on, in one
    /// round trip. Returns the first error of the two.
    async fn rollback_batch(&mut self) -> io::Result<Result<(), MysqlError>> {
        self.conn.stream.queue_packet(0, &query("ROLLBACK"));
        self.conn
            .stream
            .queue_packet(0, &query("SET autocommit = 1"));
        self.conn.stream.flush().await?;
        let ended = self.read_answer().await?;
        let reset = self.read_answer().await?;
        Ok(match ended.error.or(reset.error) {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// Rolls back a failed batch and forgets the connection's context.
    async fn abandon(&mut self) {
        let _ = self.rollback_batch().await;
        self.context = None;
        self.schema = None;
        self.insert_id_pending = true;
    }
}

/// `COM_INIT_DB` of `db`.
fn init_db(db: &str) -> Vec<u8> {
    let mut p = vec![COM_INIT_DB];
    p.extend_from_slice(db.as_bytes());
    p
}

/// Checks one answer against what the primary got; the first failure is kept.
fn check(expect: Expect, s: ResponseSummary, failure: &mut Option<String>, addr: &str) {
    if failure.is_some() {
        return;
    }
    match (expect, s.error) {
        (
            Expect::Ddl {
                ts,
                primary,
                may_have_run,
            },
            error,
        ) => match (primary, error) {
            (DdlOnPrimary::Succeeded, Some(e)) if may_have_run && already_done(e.code) => {
                tracing::warn!(ts, error = %e, addr,
                    "a DDL record this replica started before its connection was lost had \
                     already run here; marked applied");
            }
            (DdlOnPrimary::Unknown, Some(e)) => {
                tracing::warn!(ts, error = %e, addr,
                    "a logged DDL statement failed on this replica (its result on the primary is unknown)");
            }
            (DdlOnPrimary::Succeeded, Some(e)) => {
                *failure = Some(format!(
                    "record {ts}: a DDL statement that succeeded on the primary failed here: {e}"
                ));
            }
            (DdlOnPrimary::Failed(code), None) => {
                *failure = Some(format!(
                    "record {ts}: a DDL statement that failed on the primary (error {code}) \
                     succeeded here"
                ));
            }
            (DdlOnPrimary::Failed(code), Some(e)) if e.code != code => {
                tracing::warn!(ts, error = %e, primary_error = code, addr,
                    "a logged DDL statement failed here with another error than on the primary");
            }
            _ => {}
        },
        (Expect::Ok(what), Some(e)) => {
            *failure = Some(format!("{what} failed: {e}"));
        }
        (Expect::Use(db), Some(e)) => {
            *failure = Some(format!("USE {db} failed: {e}"));
        }
        (Expect::Statement { ts, text, .. }, Some(e)) => {
            *failure = Some(format!(
                "record {ts}: a statement that succeeded on the primary failed here: {e}: {text}"
            ));
        }
        (Expect::LoadData { ts, .. }, Some(e)) => {
            *failure = Some(format!(
                "record {ts}: a LOAD DATA that succeeded on the primary failed here: {e}"
            ));
        }
        (
            Expect::Statement {
                affected: Some(want),
                ts,
                text,
            },
            None,
        ) => {
            let got = s.ok.map(|o| o.affected_rows);
            if got.is_some_and(|g| g != want) {
                *failure = Some(format!(
                    "record {ts}: {} affected rows here, {want} on the primary: {text}",
                    got.unwrap_or(0)
                ));
            }
        }
        _ => {}
    }
}

/// A statement's first 160 characters, for a reason an operator reads.
fn statement_start(body: &Body) -> Box<str> {
    const SHOWN: usize = 160;
    let text = match body {
        Body::Text(sql) => String::from_utf8_lossy(&sql[..sql.len().min(SHOWN * 4)]),
        Body::Prepared { sql, .. } | Body::LoadData { sql, .. } => sql.as_str().into(),
    };
    let mut shown: String = text.chars().take(SHOWN).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown.into()
}

fn decode(e: &LogEntry) -> Result<Record, ApplyError> {
    Record::decode(&e.payload).ok_or_else(|| {
        ApplyError::Diverged(format!(
            "record {} cannot be decoded (written by a newer myquorum?)",
            e.ts
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_affected_rows_mismatch_names_the_statement() {
        let answer = ResponseSummary {
            ok: Some(crate::protocol::message::OkInfo {
                affected_rows: 3,
                last_insert_id: 0,
                status: 0,
                warnings: 0,
            }),
            ..ResponseSummary::default()
        };
        let long = format!("DELETE FROM f.a WHERE id > 5000 {}", "AND 1 ".repeat(40));
        let expect = Expect::Statement {
            affected: Some(5),
            ts: 7,
            text: statement_start(&Body::Text(long.into_bytes())),
        };
        let mut failure = None;
        check(expect, answer, &mut failure, "r");
        let failure = failure.unwrap_or_default();
        assert!(
            failure.starts_with(
                "record 7: 3 affected rows here, 5 on the primary: DELETE FROM f.a WHERE id > 5000"
            ),
            "{failure}"
        );
        assert!(failure.ends_with('…') && failure.len() < 260, "{failure}");
    }

    #[test]
    fn a_replayed_ddl_must_end_as_it_did_on_the_primary() {
        let ok = ResponseSummary::default();
        let err = |code| ResponseSummary {
            error: Some(MysqlError::new(code, "42S01", "refused".to_string())),
            ..ResponseSummary::default()
        };
        let run_after = |may_have_run, primary, answer| {
            let mut failure = None;
            let expect = Expect::Ddl {
                ts: 9,
                primary,
                may_have_run,
            };
            check(expect, answer, &mut failure, "r");
            failure
        };
        let run = |primary, answer| run_after(false, primary, answer);
        assert_eq!(run(DdlOnPrimary::Succeeded, ok.clone()), None);
        let f = run(DdlOnPrimary::Succeeded, err(1050)).unwrap();
        assert!(
            f.contains("record 9") && f.contains("succeeded on the primary failed here"),
            "{f}"
        );
        let f = run(DdlOnPrimary::Failed(1050), ok.clone()).unwrap();
        assert!(f.contains("(error 1050) succeeded here"), "{f}");
        assert_eq!(run(DdlOnPrimary::Failed(1050), err(1050)), None);
        // Refused on both, for different reasons: nothing changed on either.
        assert_eq!(run(DdlOnPrimary::Failed(1050), err(1005)), None);
        // Logged before a restart: the primary may well have failed the same way.
        assert_eq!(run(DdlOnPrimary::Unknown, err(1050)), None);
        assert_eq!(run(DdlOnPrimary::Unknown, ok.clone()), None);
        // Started here before a lost connection: "already exists" is its own first run;
        // another error is not, nor is "already exists" for a DDL never started here.
        assert_eq!(run_after(true, DdlOnPrimary::Succeeded, err(1060)), None);
        assert_eq!(run_after(true, DdlOnPrimary::Succeeded, ok.clone()), None);
        assert!(run_after(true, DdlOnPrimary::Succeeded, err(1005)).is_some());
        assert!(run_after(false, DdlOnPrimary::Succeeded, err(1060)).is_some());
        assert!(run_after(true, DdlOnPrimary::Failed(1050), ok).is_some());
    }

    #[test]
    fn ddl_errors_that_changed_nothing_on_the_primary() {
        for refused in [
            1142, 1064, 1046, 1205, 1213, 1317, 1969, 1290, 1100, 1192, 4145,
        ] {
            assert!(ddl_error_changed_nothing(refused), "{refused}");
        }
        // Table exists / unknown table: a DROP TABLE a, b that drops a and fails on b
        // changed something, so followers run it and must fail the same way.
        for ran in [1050, 1051, 1091, 1146] {
            assert!(!ddl_error_changed_nothing(ran), "{ran}");
        }
    }

    #[test]
    fn context_statements() {
        let s = Statement {
            schema: None,
            collation: 45,
            settings: vec!["SESSION sql_mode = 'ANSI'".into()],
            timestamp_us: 1_700_000_000_000_042,
            insert_id: 7,
            last_insert_id: Some(6),
            rand_seeds: Some((1, 2)),
            affected: Some(1),
            body: Body::Text(b"x".to_vec()),
        };
        assert_eq!(
            statement_context(&s, false).as_deref(),
            Some("SET timestamp = 1700000000.000042, insert_id = 7, last_insert_id = 6, rand_seed1 = 1, rand_seed2 = 2")
        );
        // A statement reading no clock and generating no id needs nothing set, unless an
        // earlier insert_id may still wait on the connection.
        let clockless = Statement {
            timestamp_us: 0,
            insert_id: 0,
            last_insert_id: None,
            rand_seeds: None,
            ..s.clone()
        };
        assert_eq!(statement_context(&clockless, false), None);
        assert_eq!(
            statement_context(&clockless, true).as_deref(),
            Some("SET insert_id = 0")
        );
        // An UPDATE or DELETE that read no clock took no trigger: it generates no id.
        for sql in ["UPDATE t SET v = 1 WHERE id = 2", " delete FROM t"] {
            let s = Statement {
                body: Body::Text(sql.as_bytes().to_vec()),
                ..clockless.clone()
            };
            assert!(!may_generate_ids(&s), "{sql}");
            assert!(may_generate_ids(&Statement {
                timestamp_us: 1,
                ..s
            }));
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "WITH x AS (SELECT 1) UPDATE t SET v = 1",
        ] {
            assert!(may_generate_ids(&Statement {
                body: Body::Text(sql.as_bytes().to_vec()),
                ..clockless.clone()
            }));
        }
        assert_eq!(
            statement_context(
                &Statement {
                    insert_id: 9,
                    ..clockless
                },
                false
            )
            .as_deref(),
            Some("SET insert_id = 9")
        );
        let set = settings_statement(45, &s.settings);
        // The baseline first (never DEFAULT: the follower's own globals), then the record's.
        assert!(set.starts_with(
            "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci, SESSION sql_mode = 'STRICT_TRANS_TABLES,"
        ));
        assert!(!set.contains("DEFAULT"), "{set}");
        assert!(set.contains("SESSION time_zone = 'SYSTEM'"), "{set}");
        assert!(set.ends_with("SESSION sql_mode = 'ANSI'"));
    }
}
