//! Replicated writes in a client session: which statements go through the log, running them
//! on the primary with their context, holding the answer until the Cabinet quorum has the
//! record, the transaction's pending writes at COMMIT (explicit or implicit), savepoints, and
//! DDL through the log.
//!
//! Owns: the write half of `ClientSession`. May import: executor::write, replication (log
//! handles, records), sql (determinism, classify), frontend::checksum (its statement),
//! session, protocol.

use super::commands::{malformed, no_backend_connection, until_down, ClientSession, Failure};
use crate::backend::schema_facts::{ClocklessWrite, SchemaChange, TableKey};
use crate::executor::write::{
    commit_on_primary, execute_ddl, execute_write, now_us, read_identity, read_primary_key,
    rollback_on_primary, send_wal_row, Executed, LoggedDdl, WritePlan,
};
use crate::protocol::execute::{add_params, AddedParam};
use crate::protocol::relay::{patch_final_status, RelayError, ResponseKind, ResponseSummary};
use crate::protocol::resultset::TextRow;
use crate::protocol::{MysqlError, PacketStream};
use crate::replication::certify::{Certify, TableSet};
use crate::replication::log::{CommitError, ShardLog};
use crate::replication::record::{Body, Record, RecordKind, Statement};
use crate::router::{Route, ShardId, Target};
use crate::session::diagnostics::Diagnostics;
use crate::session::temp_tables::identifiers;
use crate::session::{PinReason, SessionState};
use crate::sql::classify::{
    defined_object, non_innodb_engine, sets_non_innodb_default_engine, touches_schema,
    PROXY_SCHEMA, SYSTEM_SCHEMA,
};
use crate::sql::determinism::{check_write, Injected, Literals};
use crate::sql::lexer::{Lexer, Tok};
use crate::sql::{Classified, Flags, Kind, SessionChange};
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How the proxy commits a transaction on the primary unless the client's own COMMIT does.
const PLAIN_COMMIT: &str = crate::executor::write::OWN_COMMIT;

/// How long a DDL waits for the write transactions open when it arrived (and holds new ones
/// back) before it is sequenced anyway.
pub(super) const DDL_ORDER_WAIT: Duration = Duration::from_secs(2);

/// How a statement takes part in replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteClass {
    /// Runs on the primary and is recorded (DML, CALL).
    Dml,
    /// Logged first, then run on the primary; followers run it too.
    Ddl,
    /// Touches only this session's temporary tables: runs on the primary, not replicated.
    Local,
    /// Not a write.
    None,
}

/// A prepared write's execute: the statement's text, its normalized parameter body
/// (`normalize_execute`, long data inline) and how many parameters the body has.
pub(super) struct PreparedExecute {
    pub text: Arc<str>,
    pub params: Vec<u8>,
    pub num_params: u16,
}

impl PreparedExecute {
    /// The execute of `text`, the statement with calls replaced by placeholders
    /// (`WriteCheck::injected`), carrying their values among the client's.
    pub(super) fn with_calls_replaced(
        self,
        text: &str,
        injected: &[(u16, Injected)],
    ) -> Result<PreparedExecute, Failure> {
        let added: Vec<AddedParam> = injected
            .iter()
            .map(|(at, value)| match value {
                Injected::Text(s) => AddedParam::string(*at, s),
                Injected::Unsigned(n) => AddedParam::unsigned(*at, *n),
                Injected::Signed(n) => AddedParam::signed(*at, *n),
                Injected::Null => AddedParam::null(*at),
            })
            .collect();
        let params = add_params(&self.params, self.num_params, &added)
            .map_err(|_| Failure::Answer(malformed()))?;
        Ok(PreparedExecute {
            text: Arc::from(text),
            params,
            num_params: self.num_params + added.len() as u16,
        })
    }
}

pub fn classify_write(
    c: &Classified,
    sql: &str,
    session: &SessionState,
) -> Result<WriteClass, MysqlError> {
    let class = classify_replicated_write(c, sql, session)?;
    match (&session.log_refusal, class) {
        (Some(refusal), WriteClass::Dml | WriteClass::Ddl) => Err(refusal.clone()),
        // The server refuses the record's row in the primary's log to the session holding
        // a backup lock (4145) after a DDL ran: a restart's recovery would run it there
        // again, and the primary's copy of the log lacks it.
        (None, WriteClass::Dml | WriteClass::Ddl) if session.holds_backup_lock() => {
            Err(MysqlError::new(
                4145,
                "HY000",
                "Can't execute the command as you have a BACKUP STAGE active (myquorum: this \
                 session holds a backup lock, under which the primary cannot store the \
                 write's log row; run BACKUP STAGE END or BACKUP UNLOCK first)",
            ))
        }
        _ => Ok(class),
    }
}

fn classify_replicated_write(
    c: &Classified,
    sql: &str,
    session: &SessionState,
) -> Result<WriteClass, MysqlError> {
    let temp = |t: &String| session.temp_tables.contains(t, session.schema.as_deref());
    let changes = |schema: &str| {
        matches!(c.kind, Kind::Write | Kind::Call | Kind::Ddl)
            && touches_schema(c, sql, session.schema.as_deref(), schema)
    };
    // Account statements name objects without changing them (GRANT … ON myquorum.wal).
    // (Classified as DDL: DML is not lexed again for it.)
    let account = c.kind == Kind::Ddl && crate::sql::accounts::is_account_statement(sql);
    if account
        && session.backend_account.is_none()
        && crate::sql::accounts::acts_on_current_user(sql)
    {
        return Err(MysqlError::not_supported(
            "this session runs as the proxy's own backend account, so changing the current \
             user's account would change the one the proxy reaches every server with: name \
             the account (SET PASSWORD FOR 'user'@'host' = …), or give this user its own \
             server account (backend_user in the proxy's [[users]])",
        ));
    }
    if changes(PROXY_SCHEMA) && !super::checksum::is_checksum_statement(sql) && !account {
        return Err(MysqlError::not_supported(
            "the myquorum schema is the proxy's own (its copy of the log on each replica): \
             it is not changed through the proxy",
        ));
    }
    if changes(SYSTEM_SCHEMA) && !account {
        return Err(MysqlError::not_supported(
            "the mysql schema is each server's own (accounts, time zones, logs; tables of \
             non-transactional engines): it is not changed through the proxy. Restore \
             application databases only (mysqldump --all-databases --ignore-database=mysql \
             --ignore-database=myquorum) and load accounts and time zone tables on each server",
        ));
    }
    match c.kind {
        Kind::Write | Kind::Call => {
            // A program's tables, or those of a text the parser rejects, are not listed: a
            // mention of a temporary table's name may be that table (which followers lack),
            // or one it hides on the primary alone.
            let unlisted = c.kind == Kind::Call || c.flags.contains(Flags::FALLBACK);
            if let Some(name) = unlisted
                .then(|| session.temp_tables.first_named(identifiers(sql)))
                .flatten()
            {
                return Err(temporary_table_named(name, "this statement"));
            }
            if c.tables.iter().any(temp) {
                // Only temporary tables change (`INSERT INTO tmp SELECT … FROM regular` fills a
                // report table): the primary alone has them.
                if c.tables.iter().all(temp) || !c.targets.is_empty() && c.targets.iter().all(temp)
                {
                    return Ok(WriteClass::Local);
                }
                return Err(MysqlError::not_supported(
                    "a write that also reads a temporary table cannot be replicated (followers do not have \
                     the session's temporary tables); use a regular table",
                ));
            }
            if Lexer::new(sql)
                .next()
                .is_some_and(|t| t.tok.is_word("LOAD"))
                && !is_load_data_local(sql)
            {
                return Err(MysqlError::not_supported(
                    "LOAD DATA INFILE reads a file on the primary's host, which the other replicas \
                     do not have; use LOAD DATA LOCAL INFILE (the client sends the file)",
                ));
            }
            Ok(WriteClass::Dml)
        }
        Kind::Ddl if c.flags.contains(Flags::TEMP_TABLE) => Ok(WriteClass::Local),
        // DROP/ALTER/TRUNCATE/CREATE INDEX of the session's temporary table need no TEMPORARY
        // keyword; followers have no such table, so it stays on the primary.
        Kind::Ddl if !c.tables.is_empty() && c.tables.iter().all(temp) => Ok(WriteClass::Local),
        Kind::Ddl if renames_temporary_tables_only(c, sql, session) => Ok(WriteClass::Local),
        Kind::Ddl if c.tables.iter().any(temp) => Err(MysqlError::not_supported(
            "a DDL that uses one of the session's temporary tables together with regular tables \
             cannot be replicated (followers do not have the temporary table); create the \
             regular table from a regular table or with an explicit definition",
        )),
        Kind::Ddl => {
            if defined_object(sql).as_deref() == Some("EVENT") {
                return Err(MysqlError::not_supported(
                    "events are not supported: the event scheduler runs an event's statements \
                     inside each server, outside the proxy's log, so replicas would diverge; \
                     schedule the job outside the database and send its statements through \
                     the proxy",
                ));
            }
            if let Some(engine) = non_innodb_engine(sql) {
                return Err(MysqlError::not_supported(&non_innodb(&engine)));
            }
            if session.schema.is_none()
                && defined_object(sql).as_deref() == Some("TABLE")
                && crate::sql::determinism::calls_database(sql)
            {
                // Evaluated on each replica, where a follower's replay connection may still
                // have an earlier record's database (no command deselects one).
                return Err(MysqlError::not_supported(
                    "DATABASE() in a table definition or CREATE TABLE … SELECT is NULL here \
                     (no default database) but could name another database on the other \
                     replicas; select a database first (USE db) or write the name",
                ));
            }
            if let Some(why) = defined_object(sql)
                .and_then(|o| crate::sql::determinism::nondeterministic_definition(sql, &o))
            {
                return Err(MysqlError::not_supported(&why));
            }
            Ok(WriteClass::Ddl)
        }
        _ => Ok(WriteClass::None),
    }
}

/// The refusal of a write whose tables the proxy cannot list (`what`) that names `table`,
/// one of the session's temporary tables.
pub(super) fn temporary_table_named(table: &str, what: &str) -> MysqlError {
    MysqlError::not_supported(&format!(
        "{what} names {table}, one of this session's temporary tables, in a form the proxy \
         cannot list the tables of (a stored program or compound statement, or a statement \
         its parser rejects): on the primary it may write the temporary table, or read it, \
         where the followers have no such table or a regular one of that name. Drop the \
         temporary table first (DROP TEMPORARY TABLE {table}), or use another name for it"
    ))
}

/// `RENAME TABLE tmp TO tmp2` (or `ALTER TABLE tmp RENAME TO tmp2`) of the session's
/// temporary tables: the new names are theirs too, so it touches nothing else.
fn renames_temporary_tables_only(c: &Classified, sql: &str, session: &SessionState) -> bool {
    let schema = session.schema.as_deref();
    if !c
        .tables
        .iter()
        .any(|t| session.temp_tables.contains(t, schema))
    {
        return false;
    }
    let changes = crate::sql::table_name_changes(sql);
    if changes.renamed.is_empty() {
        return false;
    }
    let mut renamed = session.temp_tables.clone();
    renamed.follow(&changes, schema);
    c.tables
        .iter()
        .all(|t| session.temp_tables.contains(t, schema) || renamed.contains(t, schema))
}

/// `LOAD DATA|XML [LOW_PRIORITY|CONCURRENT] LOCAL INFILE …`: the client sends the file.
pub fn is_load_data_local(sql: &str) -> bool {
    let mut words = Lexer::new(sql).take(5);
    words.next().is_some_and(|t| t.tok.is_word("LOAD")) && words.any(|t| t.tok.is_word("LOCAL"))
}

/// The shard a backend route names.
pub(super) fn route_shard(route: Route) -> ShardId {
    match route.target {
        Target::Primary(s, _) | Target::Pinned(s, _) | Target::Replica(s, _) => s,
        _ => crate::router::DEFAULT_SHARD,
    }
}

/// The tables a statement names, with the session's schema for unqualified ones (None:
/// one is unqualified and the session has no schema).
fn table_keys(session: &SessionState, c: &Classified) -> Option<Vec<TableKey>> {
    let schema = session.schema.as_deref();
    c.tables
        .iter()
        .map(|t| match crate::sql::qualified_name(t, schema) {
            (Some(db), table) => Some((db, table)),
            (None, _) => None,
        })
        .collect()
}

/// Why tables of a non-transactional engine cannot be replicated.
fn non_innodb(engine: &str) -> String {
    format!(
        "only InnoDB tables are replicated: {engine} tables keep the changes of a statement \
         that failed half-way or of a transaction that rolled back on the primary, which the \
         log (and so the other replicas) never gets; use ENGINE=InnoDB (temporary tables may \
         use any engine)"
    )
}

fn commit_error(e: &CommitError) -> MysqlError {
    match e {
        // MySQL's answer to a transaction too big for its binlog cache.
        CommitError::TooLarge { .. } => MysqlError::new(1197, "HY000", e.to_string()),
        // The code drivers and ORMs retry a transaction on (Galera uses it the same way).
        CommitError::LeaderChanged { .. } | CommitError::Conflict { .. } => {
            MysqlError::new(1213, "40001", e.to_string())
        }
        _ => MysqlError::new(1180, "HY000", format!("Got error during COMMIT: {e}")),
    }
}

/// The answer to a COMMIT the primary could not confirm although the quorum holds its
/// record: committed (an OK with no transaction open, sequence id 1).
fn committed_in_log() -> (ResponseSummary, Vec<u8>) {
    let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
    let ok = crate::protocol::message::encode_ok(
        crate::protocol::message::OkInfo {
            status,
            ..Default::default()
        },
        b"",
    );
    let mut raw = Vec::with_capacity(ok.len() + 4);
    raw.extend_from_slice(&(ok.len() as u32).to_le_bytes()[..3]);
    raw.push(1);
    raw.extend_from_slice(&ok);
    (
        ResponseSummary {
            status: Some(status),
            ..Default::default()
        },
        raw,
    )
}

/// What SHOW WARNINGS and ROW_COUNT() must answer after a replicated statement (or a
/// relayed one whose warnings the proxy listed) whose answer was `summary`, with the
/// warnings listed right after it.
pub(super) fn diagnostics_of(summary: &ResponseSummary, warnings: Vec<TextRow>) -> Diagnostics {
    let row_count = match summary.ok {
        Some(ok) if summary.error.is_none() && summary.result_sets == 0 => {
            i64::try_from(ok.affected_rows).unwrap_or(i64::MAX)
        }
        _ => -1,
    };
    Diagnostics {
        row_count,
        // An error counts among the warnings (`@@warning_count` is 1 after one).
        warning_count: summary
            .warnings
            .max(u16::try_from(warnings.len()).unwrap_or(u16::MAX)),
        warnings,
    }
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0FFF,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3FFF) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// Savepoint name in SAVEPOINT / ROLLBACK TO / RELEASE SAVEPOINT.
fn savepoint_name(sql: &str) -> Option<(String, &'static str)> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let name = |t: &Tok<'_>| match t {
        Tok::Word(w) | Tok::Quoted(w) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let first = toks.first()?;
    if first.is_word("SAVEPOINT") {
        return Some((name(toks.get(1)?)?, "set"));
    }
    if first.is_word("RELEASE") {
        return Some((name(toks.last()?)?, "release"));
    }
    if first.is_word("ROLLBACK") {
        return Some((name(toks.last()?)?, "rollback"));
    }
    None
}

impl ClientSession {
    pub(super) fn shard_log(&self, shard: ShardId) -> Result<Arc<ShardLog>, Failure> {
        self.ctx
            .replication
            .shard(shard)
            .cloned()
            .ok_or_else(|| Failure::Answer(MysqlError::new(2003, "HY000", "no log for this shard")))
    }

    /// The row events of a ROW or MIXED binlog replayed through the proxy (`sql::binlog`):
    /// a write like any other, logged and run behind the session's format description,
    /// which every server needs in the same statement (a pooled primary connection or a
    /// follower's replay connection never saw the client's).
    pub(super) async fn run_binlog_rows<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        literal: &str,
        tables: &[(String, String)],
    ) -> Result<(), Failure> {
        let Some(format_description) = session.binlog_format_description.clone() else {
            return Err(Failure::Answer(MysqlError::new(
                1609,
                "HY000",
                "The BINLOG statement of type Table_map was not preceded by a format \
                 description BINLOG statement",
            )));
        };
        let mut write = c.clone();
        write.kind = Kind::Write;
        write.tables = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        write.targets = write.tables.clone();
        let write = Arc::new(write);
        let sql = crate::sql::binlog::with_format_description(&format_description, literal);
        // Row events name their schemas in table maps, not in the text classify_write reads.
        for (schema, _) in tables {
            if schema.eq_ignore_ascii_case(PROXY_SCHEMA)
                || schema.eq_ignore_ascii_case(SYSTEM_SCHEMA)
            {
                return Err(Failure::Answer(MysqlError::not_supported(&format!(
                    "these row events change the {schema} schema, which is not changed through \
                     the proxy (each server's own); leave it out of the replay \
                     (mysqlbinlog --database=<application database>)"
                ))));
            }
        }
        let route = self.route_statement(&write, session);
        self.note_route(&sql, &write, route, session);
        self.count_route(route);
        let command = [&[0x03u8][..], sql.as_bytes()].concat();
        self.run_dml(client, session, &write, route, &sql, &command, None, &[])
            .await
    }

    /// Whether a program (a CALL, or a compound statement) may change anything
    /// (`classify::may_write`): one that only reads (a report) runs under the session's
    /// level, not SERIALIZABLE, whose locking reads would hold up writers meanwhile. A
    /// procedure not judged yet (`check_call` judges it first) counts as writing.
    fn program_may_write(&self, session: &SessionState, sql: &str) -> bool {
        self.judged_program(session, sql, crate::sql::classify::may_write, |c| {
            c.may_write
        })
    }

    /// Whether a program may change a table's definition (`classify::may_change_schema`):
    /// only then does it mark a schema change while it runs, which makes the writes meanwhile
    /// and until the tables were read again set the clock and count as writing every table.
    fn program_may_change_schema(&self, session: &SessionState, sql: &str) -> bool {
        // A compound statement's callees are not judged: calling one may.
        let judge = |sql: &str| {
            crate::sql::classify::may_change_schema(sql)
                || !crate::sql::determinism::procedures_called(sql).is_empty()
        };
        self.judged_program(session, sql, judge, |c| c.may_change_schema)
    }

    /// What `judge` says of a compound statement's text, or `judged` of a CALL's procedure
    /// (true when it was not judged yet).
    fn judged_program(
        &self,
        session: &SessionState,
        sql: &str,
        judge: fn(&str) -> bool,
        judged: fn(&crate::context::CallCheck) -> bool,
    ) -> bool {
        let Some((db, name)) = crate::sql::determinism::called_procedure(sql) else {
            return judge(sql);
        };
        super::commands::procedure_key(session, db, &name)
            .and_then(|(_, key)| self.ctx.call_checks.get(&key).map(|c| judged(&c)))
            .unwrap_or(true)
    }

    /// Whether this write may run without the proxy fixing the server's clock first: its
    /// text reads none (`sql::clock`) and neither do its tables (`SchemaFacts`). A session
    /// with temporary tables always sets it: one may hide a table of the same name.
    fn clockless_write(
        &self,
        session: &SessionState,
        c: &Classified,
        sql: &str,
        shard: ShardId,
        body: &Body,
    ) -> Option<ClocklessWrite> {
        let plain = c.kind == Kind::Write
            && c.statements == 1
            && !c.flags.contains(Flags::FALLBACK)
            && !matches!(body, Body::LoadData { .. })
            && session.temp_tables.is_empty();
        if !plain || crate::sql::clock::may_read_clock(sql) {
            return None;
        }
        self.ctx
            .cluster
            .schema_facts(shard)?
            .clockless_write(&table_keys(session, c)?)
    }

    /// The tables this write may change, which a later certified transaction is checked
    /// against (`replication::certify`): the tables it names, when nothing it runs can
    /// change others (a trigger, a cascading foreign key, a stored function, a view's base
    /// table); else every table. A clockless write (`clockless_write`) is known to be such
    /// already.
    fn written_tables(
        &self,
        session: &SessionState,
        c: &Classified,
        sql: &str,
        shard: ShardId,
        clockless: bool,
    ) -> TableSet {
        let plain = c.kind == Kind::Write
            && c.statements == 1
            && !c.flags.contains(Flags::FALLBACK)
            && !c.tables.is_empty();
        if !plain {
            return TableSet::Every;
        }
        if !clockless {
            let contained = !crate::sql::clock::may_run_stored_code(sql)
                && table_keys(session, c).is_some_and(|keys| {
                    self.ctx
                        .cluster
                        .schema_facts(shard)
                        .is_some_and(|f| f.writes_only_themselves(&keys))
                });
            if !contained {
                return TableSet::Every;
            }
        }
        TableSet::of_references(c.tables.iter().map(String::as_str))
    }

    /// What a program run later in the session's transaction reads, when it may write:
    /// the words of its text, and for a CALL those of the bodies it runs, stored functions'
    /// too (`CallCheck`).
    /// Such a transaction is certified at commit (`replication::certify`): its snapshot
    /// may be older than what a follower replaying the program reads.
    fn program_reads(&self, session: &SessionState, sql: &str) -> TableSet {
        let mut reads = TableSet::default();
        let Some((db, name)) = crate::sql::determinism::called_procedure(sql) else {
            // A compound statement: the bodies of routines it runs are not read here.
            if !crate::sql::determinism::procedures_called(sql).is_empty()
                || !crate::sql::clock::functions_called(sql).is_empty()
            {
                return TableSet::Every;
            }
            identifiers(sql).for_each(|w| reads.add_name(w));
            return reads;
        };
        let Some(check) = super::commands::procedure_key(session, db, &name)
            .and_then(|(_, key)| self.ctx.call_checks.get(&key))
        else {
            return TableSet::Every;
        };
        if check.reads_every_table {
            return TableSet::Every;
        }
        check.identifiers.iter().for_each(|w| reads.add_name(w));
        reads
    }

    /// Marks a statement that may change table definitions (a DDL, a CALL whose procedure
    /// may run one) from before it runs on the primary until the guard is dropped.
    pub(super) async fn schema_change(&self, route: Route) -> Option<SchemaChange> {
        let facts = self.ctx.cluster.schema_facts(route_shard(route))?;
        Some(facts.change().await)
    }

    /// The session's primary connection, held for the write, for a query its determinism
    /// check needs answered first (the account functions' values, a primary key); with
    /// whether the client negotiated CLIENT_DEPRECATE_EOF.
    async fn primary_for_check(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
    ) -> Result<(&mut crate::backend::BackendConn, bool), Failure> {
        session.before_statement(c);
        self.hold_for(session, route).await?;
        let deprecate_eof = self.deprecate_eof;
        match self.held.as_mut() {
            Some(h) => Ok((&mut h.conn, deprecate_eof)),
            None => Err(no_backend_connection()),
        }
    }

    /// Runs a DML write: on the primary with its context; autocommit writes are committed
    /// through the log before the client hears, transaction writes join the pending list.
    /// `follower_sync` texts are logged after it for the followers alone (`DO SETVAL` for
    /// the sequence values it took on the primary, `sql::sequences`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_dml<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
        command: &[u8],
        prepared: Option<PreparedExecute>,
        follower_sync: &[String],
    ) -> Result<(), Failure> {
        // Writes run on the primary whatever route brought them here.
        self.served = Some(crate::digests::Served::Primary);
        if session.holds_read_locks_only() && c.tables.is_empty() {
            // A write naming no table (a CALL, a function that writes) is the one kind
            // MariaDB may run under READ locks alone; its record's row could then not be
            // stored on the primary (see `holds_read_locks_only`), which would pause the
            // shard's writes to repair it. Writes naming a table fail there anyway (1099,
            // 1100).
            return Err(Failure::Answer(read_locks_refusal()));
        }
        let no_database = session.schema.is_none();
        let checked = |identity, primary_keys| {
            let lits = Literals {
                uuid: &uuid_v4,
                uuid_short: &|| rand::random::<u64>() >> 8,
                identity,
                no_database,
                primary_keys,
            };
            check_write(sql, prepared.is_some(), &lits)
        };
        let mut check = checked(None, None);
        let mut identity = None;
        if check.refused.is_none() && check.needs_identity {
            // USER(), CURRENT_USER(), …: the primary connection's values, as literals.
            let (conn, deprecate_eof) = self.primary_for_check(session, c, route).await?;
            identity = match read_identity(conn, deprecate_eof).await {
                Ok(Ok(identity)) => Some(identity),
                Ok(Err(e)) => return Err(Failure::Answer(e)),
                Err(e) => return self.lost(session, c, e),
            };
            check = checked(identity.as_ref(), None);
        }
        let tables = std::mem::take(&mut check.needs_primary_keys);
        if check.refused.is_none() && !tables.is_empty() {
            // Rows a LIMIT or an ORDER BY picks from one table: ordered by its primary key,
            // read on the primary.
            let (conn, deprecate_eof) = self.primary_for_check(session, c, route).await?;
            let mut keys = Vec::with_capacity(tables.len());
            let mut unreadable = None;
            for (schema, table) in &tables {
                match read_primary_key(conn, deprecate_eof, schema.as_deref(), table).await {
                    Ok(Ok(key)) => keys.push(key),
                    // No such table, a sequence-engine table (`seq_1_to_100`), a CTE's
                    // name, …: like a table without a key. An ORDER BY is then taken at its
                    // word, as before.
                    Ok(Err(e)) => {
                        keys.push(Vec::new());
                        unreadable.get_or_insert(e);
                    }
                    Err(e) => return self.lost(session, c, e),
                }
            }
            check = checked(identity.as_ref(), Some(&keys));
            if let (Some(_), Some(e)) = (&check.refused, unreadable) {
                // The statement would have failed on its table the same way.
                return Err(Failure::Answer(e));
            }
        }
        if let Some(why) = check.refused {
            return Err(Failure::Answer(MysqlError::not_supported(&format!(
                "cannot replicate this write deterministically: {why}"
            ))));
        }
        // A prepared write with calls rewritten runs as the statement with placeholders in
        // their place, its execute carrying their values.
        let prepared = match (prepared, &check.rewritten) {
            (Some(p), Some(text)) => Some(p.with_calls_replaced(text, &check.injected)?),
            (p, _) => p,
        };
        let rewritten_cmd;
        let (command, body) = match (&prepared, &check.rewritten) {
            (Some(p), _) => (
                command,
                Body::Prepared {
                    sql: p.text.to_string(),
                    params: p.params.clone(),
                },
            ),
            (None, Some(text)) => {
                // The rewrite was made on the lexed text, where bytes that are not UTF-8
                // are masked: the client's bytes are kept around what it changed.
                rewritten_cmd = super::commands::rewritten_payload(command, sql, text)
                    .map_err(Failure::Answer)?;
                (&rewritten_cmd[..], Body::Text(rewritten_cmd[1..].to_vec()))
            }
            (None, None) if is_load_data_local(sql) => (
                command,
                Body::LoadData {
                    sql: sql.to_string(),
                    data: Vec::new(),
                },
            ),
            (None, None) => (command, Body::Text(command[1..].to_vec())),
        };
        let infile_cap = match &body {
            // Room for the statement's own text and context in the record.
            Body::LoadData { sql, .. } => Some(
                self.shard_log(route_shard(route))?
                    .max_record()
                    .saturating_sub(sql.len() + 4096),
            ),
            _ => None,
        };
        let shard = route_shard(route);
        session.before_statement(c);
        self.hold_for(session, route).await?;
        if self.open_write.is_none() {
            // A transaction that already ran statements on the primary may hold locks a
            // waiting DDL waits for: it goes on; one starting here waits behind the DDL.
            let started = session.in_transaction
                && self
                    .held
                    .as_ref()
                    .is_some_and(|h| h.conn.deferred_begin.is_none());
            let log = self.shard_log(shard)?;
            self.open_write = Some(log.ddl_order.writer(started, DDL_ORDER_WAIT).await);
        }
        // Held until the primary answered: a schema change waits for it.
        let clockless = self.clockless_write(session, c, sql, shard, &body);
        let schema_change = if c.kind == Kind::Call && self.program_may_change_schema(session, sql)
        {
            self.schema_change(route).await
        } else {
            None
        };
        // A prepared write runs as that connection's server statement (prepared there first
        // when needed), with its parameter types always sent.
        let execute;
        let command = match &prepared {
            Some(PreparedExecute { text, params, .. }) => {
                let deprecate_eof = self.deprecate_eof;
                let Some(h) = self.held.as_mut() else {
                    return Err(no_backend_connection());
                };
                let id = match crate::executor::ensure_prepared(&mut h.conn, text, deprecate_eof)
                    .await
                {
                    Ok(Ok(id)) => id,
                    Ok(Err(e)) => return Err(Failure::Answer(e)),
                    Err(e) => return self.lost(session, c, e),
                };
                let mut p = Vec::with_capacity(5 + params.len());
                p.push(0x17);
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(params);
                execute = p;
                &execute[..]
            }
            None => command,
        };
        let wrap = session.autocommit && !session.in_transaction;
        // Only a transaction that starts with the program can be made SERIALIZABLE.
        let starts_transaction = !session.in_transaction
            || self
                .held
                .as_ref()
                .is_some_and(|h| h.conn.deferred_begin.is_some());
        let writing_program = c.kind == Kind::Call && self.program_may_write(session, sql);
        let serializable = writing_program && starts_transaction;
        // Later in a transaction the level cannot change: the transaction is certified at
        // commit instead (`replication::certify`).
        let certified_reads =
            (writing_program && !starts_transaction).then(|| self.program_reads(session, sql));
        let plan = WritePlan {
            command,
            body,
            wrap_in_transaction: wrap,
            needs_last_insert_id: check.needs_last_insert_id,
            needs_rand_seed: check.needs_rand_seed,
            read_settings: session.pin_reasons().contains(&PinReason::UnreplayableSet),
            schema: session.schema.clone(),
            collation: session.collation,
            found_rows: self.caps.contains(CapabilityFlags::CLIENT_FOUND_ROWS),
            deprecate_eof: self.deprecate_eof,
            kind: ResponseKind::ResultSets,
            infile_cap,
            is_dml: c.kind == Kind::Write,
            program_insert_id: c.kind == Kind::Call
                && self.judged_program(session, sql, |_| false, |c| c.carries_insert_id),
            order_check: check.order_check,
            per_row_call: check.per_row_call,
            undo_if_failed: c.kind == Kind::Call,
            serializable,
            user_vars: check.user_vars.clone(),
            timestamp_us: session.fixed_timestamp_us(),
            reads_clock: clockless.is_none(),
            rand_seeds: if check.needs_rand_seed {
                session.take_rand_seeds()
            } else {
                None
            },
        };
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let executed = until_down(
            &h.down,
            execute_write(&mut h.conn, plan, client),
            RelayError::Backend,
        );
        let executed = match executed.await {
            Ok(e) => e,
            Err(RelayError::Backend(e)) => return self.lost(session, c, e),
            Err(RelayError::Client(e)) => {
                // The primary is mid-exchange (LOAD DATA LOCAL): the connection cannot be reused.
                self.held = None;
                session.reset_transaction();
                return Err(Failure::Client(e));
            }
        };
        let written = self.written_tables(session, c, sql, shard, clockless.is_some());
        drop((clockless, schema_change));
        let Executed {
            mut summary,
            mut raw,
            statement,
            infile_too_large,
            warnings,
        } = executed;
        if let Some(size) = infile_too_large {
            // It ran on the primary but cannot be logged: the whole transaction goes.
            if let Some(h) = self.held.as_mut() {
                if let Err(e) = rollback_on_primary(&mut h.conn, wrap, self.deprecate_eof).await {
                    return self.lost(session, c, e);
                }
            }
            session.reset_transaction();
            if wrap {
                session.note_status(StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits());
            }
            self.release_if_unpinned(session);
            return Err(Failure::Answer(MysqlError::new(
                1197,
                "HY000",
                format!(
                    "myquorum: the LOAD DATA LOCAL file is {size} bytes, more than a replication \
                     record may hold (replication.max_record_bytes); the transaction was rolled \
                     back. Split the file or raise replication.max_record_bytes"
                ),
            )));
        }
        // No allocation unless there is something for the followers alone.
        let statement = statement.map(|stmt| {
            let sync = follower_statements(&stmt, follower_sync);
            (stmt, sync)
        });
        match statement {
            Some((stmt, sync)) if wrap => {
                let mut statements = vec![stmt];
                statements.extend(sync);
                let payload = Record {
                    kind: RecordKind::Transaction,
                    statements,
                }
                .encode();
                let tables = (written, None);
                self.log_and_commit(session, c, shard, payload, true, PLAIN_COMMIT, tables)
                    .await?;
                let status = (summary.status.unwrap_or(0)
                    & !StatusFlags::SERVER_STATUS_IN_TRANS.bits())
                    | StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
                // A result set's too (INSERT … RETURNING): mysqlclient reads autocommit
                // from it, and took the primary's "autocommit off, in a transaction" for
                // the session's, so it sent no `SET autocommit=0` for the next transaction.
                patch_final_status(&mut raw, status, self.deprecate_eof);
                summary.status = Some(status);
            }
            Some((stmt, sync))
                if c.kind == Kind::Call
                    && summary
                        .status
                        .is_some_and(|s| s & StatusFlags::SERVER_STATUS_IN_TRANS.bits() == 0) =>
            {
                // The procedure ended the transaction itself (a COMMIT, or START TRANSACTION's
                // implicit commit, inside it): the primary already committed the session's
                // statements, so they are logged now, as one record with the CALL. A later
                // ROLLBACK of the client's would otherwise drop them from the log only.
                session.pending.push(stmt);
                sync.into_iter().for_each(|s| session.pending.push(s));
                session.pending.note_writes(&written);
                // Committed on the primary already: nothing left to certify.
                let (written, _) = session.pending.take_tables();
                let payload = Record {
                    kind: RecordKind::Transaction,
                    statements: session.pending.take(),
                }
                .encode();
                let tables = (written, None);
                self.log_and_commit(session, c, shard, payload, false, PLAIN_COMMIT, tables)
                    .await?;
            }
            Some((stmt, sync)) => {
                session.pending.push(stmt);
                sync.into_iter().for_each(|s| session.pending.push(s));
                session.pending.note_writes(&written);
                if let Some(reads) = &certified_reads {
                    session.pending.note_program_reads(reads);
                }
                // Borrowed, not cloned: this runs for every write of every transaction.
                let max = self
                    .ctx
                    .replication
                    .shard(shard)
                    .map_or(usize::MAX, |log| log.max_record());
                if session.pending.bytes() > max {
                    // Its record could never be logged: stopped here rather than kept in
                    // memory until COMMIT (MySQL's max_binlog_cache_size error).
                    let bytes = session.pending.bytes();
                    if let Some(h) = self.held.as_mut() {
                        if let Err(e) =
                            rollback_on_primary(&mut h.conn, false, self.deprecate_eof).await
                        {
                            return self.lost(session, c, e);
                        }
                    }
                    session.reset_transaction();
                    self.release_if_unpinned(session);
                    return Err(Failure::Answer(MysqlError::new(
                        1197,
                        "HY000",
                        format!(
                            "myquorum: this transaction's writes take {bytes} bytes of its \
                             replication record, more than replication.max_record_bytes \
                             ({max}); the transaction was rolled back. Split it into smaller \
                             transactions or raise replication.max_record_bytes"
                        ),
                    )));
                }
            }
            None => {
                if wrap {
                    if let Some(h) = self.held.as_mut() {
                        if let Err(e) =
                            rollback_on_primary(&mut h.conn, true, self.deprecate_eof).await
                        {
                            return self.lost(session, c, e);
                        }
                    }
                    summary.status = Some(StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits());
                }
                if let Some(e) = &summary.error {
                    self.forget_rolled_back(session, c, route, e.code).await?;
                }
                if raw.is_empty() {
                    if let Some(e) = summary.error.clone() {
                        client.queue_packet(client.answer_seq(), &e.encode());
                    }
                }
            }
        }
        if summary.error.is_none() {
            let diagnostics = diagnostics_of(&summary, warnings);
            // Kept, the session's next writes would be logged in the database its connection
            // no longer has, and a follower replaying them there would give DATABASE() and
            // unqualified names another meaning.
            self.forget_database_if_left(session, &diagnostics);
            session.diagnostics = Some(diagnostics);
        }
        client.queue_raw(&raw);
        client.flush().await.map_err(Failure::Client)?;
        session.after_statement(c, &summary);
        self.release_if_unpinned(session);
        Ok(())
    }

    fn lost(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        e: std::io::Error,
    ) -> Result<(), Failure> {
        session.pending.clear();
        session.savepoints.clear();
        self.finish(
            session,
            c,
            Err(crate::protocol::relay::RelayError::Backend(e)),
        )
        .map(|_| ())
    }

    /// Sequences `payload`, waits for the quorum, then commits on the primary with `commit`
    /// (see `commit_on_primary`). On failure before the log has the record, the primary's
    /// transaction is rolled back.
    #[allow(clippy::too_many_arguments)]
    async fn log_and_commit(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        shard: ShardId,
        payload: Vec<u8>,
        unwrap: bool,
        commit: &str,
        (written, program_reads): (TableSet, Option<TableSet>),
    ) -> Result<(ResponseSummary, Vec<u8>), Failure> {
        self.served = Some(crate::digests::Served::Primary);
        let log = self.shard_log(shard)?;
        let deprecate_eof = self.deprecate_eof;
        let executed_on = self
            .held
            .as_ref()
            .map(|h| h.replica)
            .unwrap_or(log.leader());
        // Shared, not copied: a bulk load's record is hundreds of megabytes.
        let payload: std::sync::Arc<[u8]> = payload.into();
        let certify = program_reads.map(|reads| Certify {
            snapshot: session.snapshot_mark,
            reads,
        });
        let sequenced = log.sequence(payload.clone(), executed_on, written, certify);
        let (ts, snapshot) = match sequenced.await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(shard = shard.0, error = %e, "commit refused");
                if let Some(h) = self.held.as_mut() {
                    if let Err(io) = rollback_on_primary(&mut h.conn, unwrap, deprecate_eof).await {
                        let _ = self.lost(session, c, io);
                    }
                }
                // Rolled back on the primary: the session is out of its transaction.
                session.reset_transaction();
                if unwrap {
                    session.note_status(StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits());
                }
                return Err(Failure::Answer(commit_error(&e)));
            }
        };
        session.pending.clear();
        session.savepoints.clear();
        // Read-your-writes: from now on this session's reads need a replica that applied it.
        session.last_write_ts = ts;
        let sent = match self.held.as_mut() {
            Some(h) => send_wal_row(&mut h.conn, shard, ts, &payload, log.row_bytes()).await,
            None => Err(std::io::Error::other("no primary connection")),
        };
        let wal_answers = *sent.as_ref().unwrap_or(&0);
        if let Err(e) = &sent {
            // Logged: it commits once the quorum holds it, whatever happens to this
            // connection (the primary is repaired, or its successor applies the whole log).
            log.primary_failed(ts, executed_on);
            tracing::warn!(shard = shard.0, ts, error = %e,
                "primary connection lost after the record was logged; it is acknowledged once the quorum holds it");
            self.held = None;
        }
        if let Err(e) = log.await_quorum(ts, &snapshot).await {
            // The record is in the log: it will commit. Finish it in the background with
            // the connection (its locks stay held until then), and tell the client.
            tracing::warn!(shard = shard.0, ts, error = %e, "quorum wait timed out; finishing in the background");
            if let Some(mut h) = self.held.take() {
                let log = log.clone();
                let commit = commit.to_owned();
                tokio::spawn(async move {
                    while log.await_quorum(ts, &snapshot).await.is_err() {}
                    let done = commit_on_primary(
                        &mut h.conn,
                        ts,
                        wal_answers,
                        unwrap,
                        &commit,
                        deprecate_eof,
                    );
                    match done.await {
                        Ok(_) => log.primary_done(ts),
                        Err(_) => log.primary_failed(ts, executed_on),
                    }
                });
            }
            session.reset_transaction();
            return Err(Failure::Answer(commit_error(&e)));
        }
        let Some(held) = self.held.take() else {
            log.primary_failed(ts, executed_on);
            session.reset_transaction();
            return Ok(committed_in_log());
        };
        let started = std::time::Instant::now();
        let mut down = held.down.clone();
        // The COMMIT owns its connection (and its text), so that if the primary hangs it can
        // be left to finish in the background (below) rather than dropped half-way. Only a
        // client's own COMMIT text is copied: not on every autocommit write's path.
        let commit_text: std::borrow::Cow<'static, str> = if commit == PLAIN_COMMIT {
            PLAIN_COMMIT.into()
        } else {
            commit.to_owned().into()
        };
        let mut commit = Box::pin(async move {
            let mut held = held;
            let r = commit_on_primary(
                &mut held.conn,
                ts,
                wal_answers,
                unwrap,
                &commit_text,
                deprecate_eof,
            )
            .await;
            (r, held)
        });
        let finished = tokio::select! {
            out = &mut commit => Some(out),
            _ = down.changed() => None,
        };
        match finished {
            Some((Ok(answer), held)) => {
                self.held = Some(held);
                log.latency.primary_commit.record(started.elapsed());
                log.primary_done(ts);
                Ok(answer)
            }
            Some((Err(e), _)) => {
                // The quorum holds the record: it is committed whatever happened to this
                // connection, and the primary (repaired) or its elected successor (caught up
                // to the log before it leads) applies it. So the client hears OK.
                log.primary_failed(ts, executed_on);
                tracing::warn!(shard = shard.0, ts, error = %e,
                    "the primary's COMMIT failed after the quorum held the record (see the error); \
                     acknowledged (it is applied on the primary when repaired, or on the next one)");
                session.reset_transaction();
                Ok(committed_in_log())
            }
            None => {
                // The primary was marked down while its COMMIT waited (a hung server). The
                // client hears the commit now (the quorum holds the record); the COMMIT stays
                // in flight on its connection until that answers or fails, so the old
                // primary's applier, which waits for its in-flight commits, cannot apply the
                // record a second time when the server comes back.
                tracing::warn!(shard = shard.0, ts,
                    "primary marked down while its COMMIT waited; acknowledged (the quorum holds the record), \
                     the COMMIT finishes in the background");
                let log = log.clone();
                tokio::spawn(async move {
                    match commit.await {
                        (Ok(_), _) => log.primary_done(ts),
                        (Err(_), _) => log.primary_failed(ts, executed_on),
                    }
                });
                session.reset_transaction();
                Ok(committed_in_log())
            }
        }
    }

    /// COMMIT with pending writes: through the log, then the primary's COMMIT answer.
    pub(super) async fn commit_pending<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: Option<&mut PacketStream<S>>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        commit: &str,
    ) -> Result<(), Failure> {
        let shard = route_shard(route);
        self.hold_for(session, route).await?;
        let tables = session.pending.take_tables();
        let payload = Record {
            kind: RecordKind::Transaction,
            statements: session.pending.take(),
        }
        .encode();
        let (summary, raw) = self
            .log_and_commit(session, c, shard, payload, false, commit, tables)
            .await?;
        if let Some(client) = client {
            client.queue_raw(&raw);
            client.flush().await.map_err(Failure::Client)?;
            session.after_statement(c, &summary);
        } else if let Some(status) = summary.status {
            session.note_status(status);
        }
        self.release_if_unpinned(session);
        Ok(())
    }

    /// A statement that is not itself replicated but ends or shapes the transaction, whether
    /// it came as text or as a prepared statement (sysbench prepares BEGIN and COMMIT): COMMIT
    /// with pending writes goes through the log and is answered here (returns true); a
    /// statement that commits implicitly logs the pending writes before it is forwarded.
    pub(super) async fn settle_pending<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
        route: Route,
    ) -> Result<bool, Failure> {
        if session.pending.is_empty() {
            return Ok(false);
        }
        if c.kind == Kind::Commit {
            // The client's own COMMIT, as the primary runs it: it may chain the next
            // transaction there. One that releases ends the client's session after its
            // answer, as MySQL's does, but not the primary connection (it may go back to
            // the pool). A text that is no COMMIT the server would take is left to the
            // server's error, with the transaction still open.
            let Some(end) = crate::sql::classify::commit_end(sql) else {
                return Ok(false);
            };
            let end = end.under_completion_release(session.completion_releases());
            self.commit_pending(Some(client), session, c, route, end.on_primary())
                .await?;
            if end.releases() {
                return Err(super::commands::released());
            }
            return Ok(true);
        }
        if commits_implicitly(c, sql) {
            self.commit_pending::<S>(None, session, c, route, PLAIN_COMMIT)
                .await?;
        }
        Ok(false)
    }

    /// DDL through the log: sequenced first, then run on the primary, acknowledged
    /// when the quorum has applied it.
    pub(super) async fn run_ddl<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        command: &[u8],
    ) -> Result<(), Failure> {
        self.served = Some(crate::digests::Served::Primary);
        let shard = route_shard(route);
        if session.holds_read_locks_only() {
            // Refused before it is logged: see `holds_read_locks_only`.
            return Err(Failure::Answer(read_locks_refusal()));
        }
        if !session.pending.is_empty() {
            // DDL commits the open transaction implicitly, as on MySQL.
            self.commit_pending::<S>(None, session, c, route, PLAIN_COMMIT)
                .await?;
        }
        // Its own transaction just ended: it must not wait for itself.
        self.open_write = None;
        session.before_statement(c);
        self.hold_for(session, route).await?;
        let logged = match self.logged_ddl(command).await {
            Ok(logged) => logged,
            Err(Ok(e)) => return Err(Failure::Answer(e)),
            Err(Err(e)) => {
                return self
                    .finish(session, c, Err(RelayError::Backend(e)))
                    .map(|_| ())
            }
        };
        let command = logged.as_deref().unwrap_or(command);
        // Followers run the DDL under the primary connection's settings (a restored dump
        // creates tables with `FOREIGN_KEY_CHECKS=0` set from a user variable).
        let settings = {
            let deprecate_eof = self.deprecate_eof;
            let Some(h) = self.held.as_mut() else {
                return Err(super::commands::no_backend_connection());
            };
            let read = crate::executor::write::ddl_context_of(
                &mut h.conn,
                session.collation,
                deprecate_eof,
            );
            match read.await {
                Ok(Ok(ddl)) if ddl.read_only => {
                    // MariaDB's answer, before it is logged: its row would be refused there
                    // too, and a primary without the row runs the DDL again at a restart.
                    return Err(Failure::Answer(MysqlError::new(
                        1792,
                        "25006",
                        "Cannot execute statement in a READ ONLY transaction",
                    )));
                }
                Ok(Ok(ddl)) => ddl.settings,
                Ok(Err(e)) => return Err(Failure::Answer(e)),
                Err(e) => {
                    return self
                        .finish(session, c, Err(RelayError::Backend(e)))
                        .map(|_| ())
                }
            }
        };
        // The clock the client fixed, if any: the DDL's time, left set after it.
        let client_clock = session.fixed_timestamp_us();
        let statement = Statement {
            schema: session.schema.clone(),
            collation: session.collation,
            settings,
            timestamp_us: client_clock.unwrap_or_else(now_us),
            insert_id: 0,
            last_insert_id: None,
            rand_seeds: None,
            affected: None,
            body: Body::Text(command[1..].to_vec()),
        };
        let payload = Record {
            kind: RecordKind::Ddl,
            statements: vec![statement.clone()],
        }
        .encode();
        let payload: std::sync::Arc<[u8]> = payload.into();
        let log = self.shard_log(shard)?;
        let executed_on = self
            .held
            .as_ref()
            .map(|h| h.replica)
            .unwrap_or(log.leader());
        // Under table locks the turn is bounded: the DDL before this one may be waiting on
        // the primary for those locks, and this session could never unlock them.
        let turn = session.holds_table_locks().then_some(DDL_ORDER_WAIT);
        let Some(order) = log.ddl_order.ddl(DDL_ORDER_WAIT, turn).await else {
            return Err(Failure::Answer(MysqlError::new(
                1205,
                "HY000",
                format!(
                    "Lock wait timeout exceeded; try restarting transaction (myquorum: another \
                     session's DDL has waited over {DDL_ORDER_WAIT:?}, perhaps for a table this \
                     session locked; UNLOCK TABLES, then retry)"
                ),
            )));
        };
        if !order.ordered {
            tracing::warn!(shard = shard.0, open_write_transactions = log.ddl_order.open_writers(),
                "a DDL goes into the log ahead of write transactions still open after {DDL_ORDER_WAIT:?}; \
                 a follower replays them after it and is quarantined if they no longer fit the schema \
                 (commit or roll back long transactions before schema changes)");
        }
        let (ts, snapshot) = log
            .sequence(payload.clone(), executed_on, TableSet::Every, None)
            .await
            .map_err(|e| Failure::Answer(commit_error(&e)))?;
        // New write transactions stay behind the gate until the DDL has run on the primary,
        // not only until it was sequenced: one let through in between could write the table
        // there before the DDL takes its metadata lock (no trigger yet, the old columns)
        // and commit after it, so followers, which replay in log order, would run it after
        // the DDL. Found by random_writes.py's schema churn: an INSERT … ON DUPLICATE KEY
        // UPDATE changed 12 rows on the primary and none on the followers (a BEFORE UPDATE
        // trigger created in that window), both followers quarantined. The wait stays
        // bounded: writers go ahead after DDL_ORDER_WAIT, and by then a running DDL holds
        // its lock, so their statements queue behind it on the server.
        session.last_write_ts = ts;
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            log.primary_failed(ts, executed_on);
            return Err(no_backend_connection());
        };
        let (summary, raw, warnings) = match execute_ddl(
            &mut h.conn,
            command,
            &statement,
            LoggedDdl {
                shard,
                ts,
                payload: &payload,
                chunk: log.row_bytes(),
            },
            deprecate_eof,
            client_clock.is_some(),
            // The DDL ran on the primary: what the gate holds back may go on.
            move || drop(order),
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                // Logged first: the DDL is applied everywhere (the primary when repaired).
                log.primary_failed(ts, executed_on);
                let _ = self.lost(session, c, e);
                return Err(Failure::Answer(MysqlError::new(
                    2013,
                    "HY000",
                    format!(
                        "Lost connection to the primary during this DDL; it is logged (record {ts}) \
                         and will be applied on every replica"
                    ),
                )));
            }
        };
        if summary.error.is_none() {
            let dropped = std::str::from_utf8(&command[1..])
                .ok()
                .and_then(crate::sql::classify::dropped_database);
            if dropped.is_some() {
                self.ctx
                    .databases_dropped
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if dropped.is_some() && dropped == session.schema {
                // The server left the connection without a default database. Kept, the
                // session's next write would be logged under the dropped one, and every
                // follower would fail to select it (both quarantined: writes stopped).
                session.schema = None;
                if let Some(h) = self.held.as_mut() {
                    h.conn.schema = None;
                }
            }
        }
        // Followers hold their own result against this one.
        log.record_ddl_outcome(ts, summary.error.as_ref().map(|e| e.code));
        log.primary_done(ts);
        if let Err(e) = log.await_quorum(ts, &snapshot).await {
            return Err(Failure::Answer(commit_error(&e)));
        }
        session.diagnostics = Some(diagnostics_of(&summary, warnings));
        client.queue_raw(&raw);
        client.flush().await.map_err(Failure::Client)?;
        session.after_statement(c, &summary);
        self.release_if_unpinned(session);
        Ok(())
    }

    /// The DDL's text (`command`, a COM_QUERY) as the primary runs it and the log carries
    /// it, when the proxy changes it: passwords hashed (`hash_passwords`), a program's
    /// writes ordered (`order_program_writes`). `None`: as the client sent it.
    async fn logged_ddl(
        &mut self,
        command: &[u8],
    ) -> Result<Option<Vec<u8>>, Result<MysqlError, std::io::Error>> {
        if let Some(hashed) = self.hash_passwords(command).await? {
            return Ok(Some(hashed));
        }
        self.order_program_writes(command).await
    }

    /// An account statement's text (`command`, a COM_QUERY) with each clear-text password
    /// replaced by its hash, which the primary computes (`PASSWORD(<literal>)` on the held
    /// connection: its character set and sql_mode read the literal as the statement would);
    /// `None` when there is nothing to replace. What goes into the log, and what every
    /// replica runs, the primary included.
    async fn hash_passwords(
        &mut self,
        command: &[u8],
    ) -> Result<Option<Vec<u8>>, Result<MysqlError, std::io::Error>> {
        use crate::sql::accounts;
        let text = &command[1..];
        let Ok(sql) = std::str::from_utf8(text) else {
            return Ok(None);
        };
        if !accounts::is_account_statement(sql) {
            return Ok(None);
        }
        let found = accounts::passwords(sql).map_err(|why| Ok(MysqlError::not_supported(&why)))?;
        if found.is_empty() {
            return Ok(None);
        }
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(Err(std::io::Error::other("no backend connection held")));
        };
        let mut hashes = Vec::with_capacity(found.len());
        for p in &found {
            let expression = format!("PASSWORD({})", &sql[p.literal.clone()]);
            let hash = crate::executor::select_value(&mut h.conn, &expression, deprecate_eof)
                .await
                .map_err(Err)?
                .map_err(Ok)?;
            hashes.push(hash.unwrap_or_default());
        }
        let hashed = accounts::with_hashes(sql, &found, &hashes);
        super::commands::rewritten_payload(command, sql, &hashed)
            .map(Some)
            .map_err(Ok)
    }

    /// A `CREATE PROCEDURE / FUNCTION / TRIGGER` (`command`, a COM_QUERY) whose writes
    /// pick or number rows in an order that ties leave to each server's plan
    /// (`determinism::program_orders`): its text with the orders written in, the keys read
    /// on the held connection (unqualified tables in the program's schema, else the
    /// session's); `None` when there is nothing to change. A table that does not exist yet
    /// counts as one without a key: an ORDER BY is then taken at its word.
    async fn order_program_writes(
        &mut self,
        command: &[u8],
    ) -> Result<Option<Vec<u8>>, Result<MysqlError, std::io::Error>> {
        use crate::sql::determinism::program_orders;
        let Ok(sql) = std::str::from_utf8(&command[1..]) else {
            return Ok(None);
        };
        if !matches!(
            defined_object(sql).as_deref(),
            Some("PROCEDURE" | "FUNCTION" | "TRIGGER")
        ) {
            return Ok(None);
        }
        let refusal = |why: String| {
            Ok(MysqlError::not_supported(&format!(
                "cannot replicate this program deterministically: {why}"
            )))
        };
        let mut orders = program_orders(sql, None);
        if !orders.needs_primary_keys.is_empty() {
            let deprecate_eof = self.deprecate_eof;
            let Some(h) = self.held.as_mut() else {
                return Err(Err(std::io::Error::other("no backend connection held")));
            };
            let program_schema = crate::sql::determinism::program_schema(sql);
            let mut keys = Vec::with_capacity(orders.needs_primary_keys.len());
            let mut unreadable = None;
            for (schema, table) in &orders.needs_primary_keys {
                let schema = schema.as_deref().or(program_schema.as_deref());
                match read_primary_key(&mut h.conn, deprecate_eof, schema, table)
                    .await
                    .map_err(Err)?
                {
                    Ok(key) => keys.push(key),
                    Err(e) => {
                        keys.push(Vec::new());
                        unreadable.get_or_insert(e.message);
                    }
                }
            }
            orders = program_orders(sql, Some(&keys));
            if let (Some(why), Some(e)) = (&mut orders.refused, unreadable) {
                // A program may be created before its tables: say why no key was found.
                why.push_str(&format!(" (its table could not be read: {e})"));
            }
        }
        if let Some(why) = orders.refused {
            return Err(refusal(why));
        }
        match orders.rewritten {
            Some(text) => super::commands::rewritten_payload(command, sql, &text)
                .map(Some)
                .map_err(Ok),
            None => Ok(None),
        }
    }

    /// After a server error in the session's transaction: the writes held for its record
    /// are dropped if the server rolled the whole transaction back. A deadlock always does;
    /// some errors do at times (`may_roll_back_the_transaction`), and so may a failed CALL
    /// (an exit handler's `ROLLBACK; RESIGNAL`): then the primary says whether its
    /// transaction is still open. Kept, the writes the primary dropped would reach the
    /// followers at COMMIT.
    pub(super) async fn forget_rolled_back(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        code: u16,
    ) -> Result<(), Failure> {
        let rolled_back = code == 1213
            || (may_roll_back_the_transaction(code) || c.kind == Kind::Call)
                && !session.pending.is_empty()
                && self
                    .select_value(session, c, route, "@@in_transaction")
                    .await?
                    .as_deref()
                    == Some("0");
        if rolled_back {
            session.pending.clear();
            session.savepoints.clear();
        }
        Ok(())
    }

    /// Bookkeeping after a statement the session forwarded normally: savepoints, rollbacks,
    /// temporary tables.
    pub(super) fn after_forwarded(
        &self,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
        ok: bool,
    ) {
        if !ok {
            return;
        }
        // Only a SET the classifier saw name a level is lexed again for it.
        if c.kind == Kind::Session && super::commands::sets_isolation(c) {
            if let Some(level) = crate::sql::set::requested_isolation(sql) {
                session.requested_isolation = Some(level);
            }
            if let Some(level) = crate::sql::set::next_transaction_isolation(sql) {
                session.next_transaction_isolation = Some(level);
            }
        }
        match c.kind {
            Kind::Rollback => {
                session.pending.clear();
                session.savepoints.clear();
            }
            Kind::Savepoint => match savepoint_name(sql) {
                Some((name, "set")) => {
                    session.savepoints.retain(|(n, _)| *n != name);
                    session.savepoints.push((name, session.pending.len()));
                }
                Some((name, "rollback")) => {
                    if let Some(pos) = session.savepoints.iter().position(|(n, _)| *n == name) {
                        let keep = session.savepoints[pos].1;
                        session.pending.truncate(keep);
                        session.savepoints.truncate(pos + 1);
                    }
                }
                Some((name, _)) => {
                    if let Some(pos) = session.savepoints.iter().position(|(n, _)| *n == name) {
                        session.savepoints.truncate(pos);
                    }
                }
                None => {}
            },
            Kind::Ddl if c.flags.contains(Flags::TEMP_TABLE) || !session.temp_tables.is_empty() => {
                let changes = crate::sql::table_name_changes(sql);
                let schema = session.schema.clone();
                session.temp_tables.follow(&changes, schema.as_deref());
            }
            _ => {}
        }
    }
}

/// Server errors after which InnoDB may have rolled back the whole transaction rather than
/// the statement, depending on the server's settings or state: a lock wait timeout (with
/// `innodb_rollback_on_timeout`), a full lock table, too many concurrent transactions.
fn may_roll_back_the_transaction(code: u16) -> bool {
    matches!(code, 1205 | 1206 | 1637)
}

/// `follower_sync` texts as statements in the context (schema, settings) of `stmt`, the
/// write they follow in its record: statements only the followers run.
fn follower_statements(stmt: &Statement, follower_sync: &[String]) -> Vec<Statement> {
    follower_sync
        .iter()
        .map(|text| Statement {
            timestamp_us: 0,
            insert_id: 0,
            last_insert_id: None,
            rand_seeds: None,
            affected: None,
            body: Body::Text(text.as_bytes().to_vec()),
            ..stmt.clone()
        })
        .collect()
}

/// Statements that commit an open transaction implicitly (MySQL's list, as far as the
/// proxy forwards them itself). A DDL reaching here touches only the session's temporary
/// tables (the others go through the log, which commits first): MariaDB still commits
/// before an ALTER, CREATE/DROP INDEX, TRUNCATE, RENAME or plain DROP TABLE of a temporary
/// table, even one that then fails, and before CREATE TEMPORARY SEQUENCE; only CREATE
/// TEMPORARY TABLE and DROP TEMPORARY TABLE/SEQUENCE leave the transaction open.
pub fn commits_implicitly(c: &Classified, sql: &str) -> bool {
    match c.kind {
        Kind::Begin | Kind::Lock | Kind::Admin => true,
        Kind::Ddl => {
            !c.flags.contains(Flags::TEMP_TABLE)
                || crate::sql::classify::defined_object(sql).as_deref() == Some("SEQUENCE")
        }
        Kind::Session => matches!(&c.session, Some(SessionChange::Vars(v))
            if v.iter().any(|(k, f)| k == "autocommit" && (f.ends_with("1") || f.to_ascii_uppercase().ends_with("ON")))),
        _ => false,
    }
}

/// The server's own words (clients and their tests compare them) for the first statement of
/// `sql`, a whole query text, that the proxy does not know: a syntax error near the rest of
/// the text from there (its final `;` and blanks dropped, as the server shows it).
pub fn unknown_statement(sql: &str) -> MysqlError {
    let at = crate::sql::classify::unknown_statement_start(sql).unwrap_or(0);
    let rest = sql.get(at..).unwrap_or(sql);
    let rest = rest.trim_end_matches(|c: char| c == ';' || c.is_ascii_whitespace());
    let near: String = rest.chars().take(80).collect();
    let line = 1 + sql.get(..at).unwrap_or("").matches('\n').count();
    MysqlError::new(
        1064,
        "42000",
        format!(
            "You have an error in your SQL syntax; check the manual that corresponds to your \
             MariaDB server version for the right syntax to use near '{near}' at line {line}"
        ),
    )
}

/// Statements the proxy refuses on the write path because replicas could not follow them
/// (or, SHUTDOWN, because they would act on one server behind the client's back).
pub fn refuse_unreplicable(c: &Classified, sql: &str) -> Result<(), MysqlError> {
    if c.flags.contains(Flags::UNKNOWN_STATEMENT) {
        return Err(unknown_statement(sql));
    }
    if c.kind == Kind::Xa {
        return Err(MysqlError::not_supported(
            "XA transactions are not supported (commits go through the proxy's log); \
             use BEGIN/COMMIT",
        ));
    }
    if c.kind == Kind::Admin
        && Lexer::new(sql)
            .next()
            .is_some_and(|t| t.tok.is_word("SHUTDOWN"))
    {
        return Err(shutdown_refused());
    }
    // CHANGE MASTER and START SLAVE classify as Admin: the check stays off the path of
    // every other statement.
    if let Some(what) = matches!(c.kind, Kind::Admin | Kind::Other)
        .then(|| crate::sql::classify::server_replication_stream(sql))
        .flatten()
    {
        return Err(MysqlError::not_supported(&format!(
            "{what}: what it writes would reach the primary only, outside the proxy's log. \
             To bring in another server's binlog, pipe mysqlbinlog's output through the proxy"
        )));
    }
    if c.kind == Kind::Session {
        if let Some(engine) = sets_non_innodb_default_engine(sql) {
            return Err(MysqlError::not_supported(&non_innodb(&engine)));
        }
    }
    if sets_isolation_by_expression(c, sql) {
        return Err(MysqlError::not_supported(
            "the isolation level must be set with a literal (the proxy raises levels below \
             REPEATABLE READ to it, so replicas can replay the writes)",
        ));
    }
    Ok(())
}

/// SHUTDOWN (the statement, or COM_SHUTDOWN from `mariadb-admin shutdown`): the client sees
/// one server, and this would stop whichever is the primary now.
pub fn shutdown_refused() -> MysqlError {
    MysqlError::not_supported(
        "SHUTDOWN through the proxy would stop the shard's primary (and a failover would \
         follow); stop a server on its host or through its own port, or stop the proxy",
    )
}

/// A SET of `tx_isolation`/`transaction_isolation` to something other than a literal
/// level: the proxy could not tell whether it falls below REPEATABLE READ.
pub fn sets_isolation_by_expression(c: &Classified, sql: &str) -> bool {
    if c.kind != Kind::Session || !matches!(c.session, Some(SessionChange::Unreplayable)) {
        return false;
    }
    let lower = sql.to_ascii_lowercase();
    lower.contains("tx_isolation") || lower.contains("transaction_isolation")
}

/// A replicated write refused because the session holds READ table locks only.
fn read_locks_refusal() -> MysqlError {
    MysqlError::new(
        1192,
        "HY000",
        "Can't execute the given command because you have active locked tables: this session \
         holds READ table locks; run UNLOCK TABLES first",
    )
}
