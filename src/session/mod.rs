//! Per-client session state: schema, replayable session variables, collation, transaction,
//! prepared statements, and the reasons the session is pinned to one backend connection.
//!
//! A session borrows a pooled backend connection per statement and has its replayable state
//! (schema, SET variables, character set) restored on it; while it holds state that cannot be
//! replayed (a transaction, temporary tables, user variables, locks, prepared-statement long
//! data or cursors, computed SET values) it is pinned to one connection. Prepared statements
//! themselves are session values, prepared on whichever connection runs them.
//!
//! It also decides, without I/O, which reads of a READ COMMITTED transaction may run
//! outside the server's transaction (`SessionState::read_outside_transaction`).
//!
//! Owns: `SessionState`, `PinReason`, pin counters, `OutsideRead`. May import: sql,
//! protocol::relay (summary),
//! replication::{record, replay, certify} (the pending writes, which settings replicate,
//! the tables a transaction wrote and read),
//! backend (the account a session runs as).

pub mod diagnostics;
pub mod temp_tables;

use crate::backend::BackendAccount;
use crate::protocol::relay::ResponseSummary;
use crate::replication::certify::TableSet;
use crate::replication::record::Statement;
use crate::sql::rewrite::ShownIsolation;
use crate::sql::set::Isolation;
use crate::sql::{Classified, Flags, Kind, SessionChange};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PinReason {
    Transaction = 0,
    TemporaryTable,
    UserVariable,
    TableLock,
    AdvisoryLock,
    /// Long data or an open cursor lives in one server statement on one connection.
    PreparedStatement,
    SqlPrepare,
    UnreplayableSet,
    Xa,
    /// LAST_INSERT_ID(), FOUND_ROWS(), SHOW WARNINGS read state of the previous statement.
    StatementAffinity,
    /// BACKUP STAGE or BACKUP LOCK: held by the connection until END/UNLOCK or it closes.
    BackupLock,
    /// `HANDLER … OPEN`: the handler (and its metadata lock on the table) lives on the
    /// connection until `HANDLER … CLOSE`.
    Handler,
}

impl PinReason {
    pub const ALL: [PinReason; 12] = [
        PinReason::Transaction,
        PinReason::TemporaryTable,
        PinReason::UserVariable,
        PinReason::TableLock,
        PinReason::AdvisoryLock,
        PinReason::PreparedStatement,
        PinReason::SqlPrepare,
        PinReason::UnreplayableSet,
        PinReason::Xa,
        PinReason::StatementAffinity,
        PinReason::BackupLock,
        PinReason::Handler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PinReason::Transaction => "transaction",
            PinReason::TemporaryTable => "temporary_table",
            PinReason::UserVariable => "user_variable",
            PinReason::TableLock => "table_lock",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::PreparedStatement => "prepared_statement",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::UnreplayableSet => "unreplayable_set",
            PinReason::Xa => "xa_transaction",
            PinReason::StatementAffinity => "statement_affinity",
            PinReason::BackupLock => "backup_lock",
            PinReason::Handler => "handler",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

/// How many times sessions became pinned, per reason (process-wide, for SHOW PROXY PINS).
pub static PIN_EVENTS: [AtomicU64; PinReason::ALL.len()] =
    [const { AtomicU64::new(0) }; PinReason::ALL.len()];

/// A prepared statement as the client knows it.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    pub num_params: u16,
    pub num_columns: u16,
    pub classified: std::sync::Arc<Classified>,
    /// Its digest (`ClassifyCache::digest`): executions count under it in query statistics.
    pub digest: u64,
    /// The statement text (recorded with a write's parameters).
    pub sql: std::sync::Arc<str>,
    /// Parameter types from the last execute that bound them (later executes may omit them).
    pub param_types: Option<Vec<u8>>,
    /// Values sent with COM_STMT_SEND_LONG_DATA since the last execute, by parameter: kept
    /// here and put inline into the execute, so it stands alone (replicable, any connection).
    pub long_data: std::collections::BTreeMap<u16, Vec<u8>>,
    /// The long data outgrew `proxy.max_packet_size`: the execute gets error 1153.
    pub long_data_too_large: bool,
}

/// A sequence as (schema, name), its schema the session's when the name has none.
pub type SequenceKey = (Option<String>, String);

#[derive(Debug)]
pub struct SessionState {
    pub user: String,
    /// The server account its statements run as (`None`: the proxy's own).
    pub backend_account: Option<Arc<BackendAccount>>,
    /// May run the proxy's own statements (SHOW PROXY …, PROXY …).
    pub admin: bool,
    /// Why its writes are refused: its backend account may not store the log's rows.
    pub log_refusal: Option<crate::protocol::MysqlError>,
    pub schema: Option<String>,
    /// Collation from the handshake (mirrored to backend connections).
    pub collation: u8,
    /// Replayable SET fragments in order, one per key.
    vars: Vec<(String, String)>,
    signature: u64,
    pins: u16,
    /// Handlers the session opened and has not closed (`PinReason::Handler`).
    open_handlers: u32,
    /// Statements left during which StatementAffinity holds.
    affinity_left: u8,
    pub prepared: HashMap<u32, PreparedStatement>,
    next_stmt_id: u32,
    pub multi_statements: bool,
    /// The server said NO_BACKSLASH_ESCAPES is in the session's sql_mode (a status flag of
    /// its last answer): a backslash in a string literal is then a plain character.
    pub no_backslash_escapes: bool,
    pub in_transaction: bool,
    pub autocommit: bool,
    /// Proxy-owned variables (myquorum_*).
    pub proxy_vars: Vec<(String, String)>,
    /// Writes of the open transaction, executed on the primary and not yet logged.
    pub pending: PendingWrites,
    /// Savepoints of the open transaction and how many pending writes preceded each.
    pub savepoints: Vec<(String, usize)>,
    /// Temporary tables this session created (not replicated).
    pub temp_tables: temp_tables::TempTables,
    /// SQL-level prepared statements (PREPARE … FROM) by lowercase name: their text, or
    /// None when it could not be read back.
    pub sql_prepared: HashMap<String, Option<String>>,
    /// Log timestamp of this session's last replicated write: `session` consistency reads
    /// only go to replicas that applied it.
    pub last_write_ts: u64,
    /// The session's LOCK TABLES also locked the log table (it has a WRITE lock, see
    /// `sql::rewrite::lock_tables_with_log`): a DDL's record row can be stored meanwhile.
    pub table_locks_cover_log: bool,
    /// The last statement's diagnostics when the proxy had to keep them itself (after a
    /// replicated write); taken at the start of every command.
    pub diagnostics: Option<diagnostics::Diagnostics>,
    /// The base64 literal of the last `BINLOG` format description event (a mysqlbinlog
    /// replay's first statement): row-event BINLOG statements are logged behind it.
    pub binlog_format_description: Option<String>,
    /// The last value NEXTVAL gave this session, by sequence (schema, name): its LASTVAL,
    /// which a pooled connection would not know (`sql::sequences`).
    pub sequence_last: HashMap<SequenceKey, i64>,
    /// The default shard's log position every record at or below which had committed on
    /// the primary before this session's open transaction could take its snapshot (read
    /// before each command that starts outside a transaction): certification's starting
    /// point (`replication::certify`).
    pub snapshot_mark: u64,
    /// The isolation level the session asked for (`SET SESSION TRANSACTION ISOLATION LEVEL`,
    /// `tx_isolation`); None: the server's default. The server runs it raised to REPEATABLE
    /// READ (`sql::set::Isolation::enforced`); a READ COMMITTED session's plain reads run
    /// outside its transaction until the server has begun it (`read_outside_transaction`).
    pub requested_isolation: Option<Isolation>,
    /// The level a `SET TRANSACTION ISOLATION LEVEL …` asked for the next transaction: it
    /// takes the place of `requested_isolation` until a transaction ends (COMMIT, ROLLBACK,
    /// DDL, or a statement run as its own autocommit transaction).
    pub next_transaction_isolation: Option<Isolation>,
    /// Autocommit is off and the server has not begun the transaction its next statement
    /// would open: the last statement ended one (COMMIT, ROLLBACK) or turned autocommit off,
    /// and only reads run outside any transaction came after it. Every statement clears it
    /// (`before_statement`) unless it is one of those reads, which put it back; it must
    /// never be set while the server holds anything of a transaction, since such a read
    /// turns autocommit on around itself, which would commit it.
    pub server_txn_fresh: bool,
}

/// What `SessionState::read_outside_transaction` needs to know of the session's pinned
/// connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinnedFacts {
    /// The client's BEGIN waits on it, unsent (`BackendConn::deferred_begin`).
    pub deferred_begin: bool,
    /// The proxy set a one-shot level there that a read in autocommit would take.
    pub serializable_once: bool,
    /// Its server's default level is READ COMMITTED or weaker: a session that asked for
    /// none gets READ COMMITTED's reads, as it would on that server (its writes run at
    /// REPEATABLE READ all the same, `backend::conn::ISOLATION_FLOOR`).
    pub server_reads_committed: bool,
}

/// How a plain read of a READ COMMITTED transaction runs outside the server's transaction
/// (`SessionState::read_outside_transaction`): on the same connection, so it sees what is
/// committed when it starts, as under READ COMMITTED, instead of taking the snapshot that
/// REPEATABLE READ, which the server runs, would keep for the rest of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideRead {
    /// The client's BEGIN is still queued (`BackendConn::deferred_begin`): the read goes
    /// in front of it, in autocommit mode.
    AheadOfBegin,
    /// Autocommit is off and no transaction begun (`server_txn_fresh`): the read runs
    /// between `SET autocommit = 1` and `SET autocommit = 0`, in one round trip.
    AutocommitOn,
}

/// A statement that only reads and takes nothing a transaction would hold: no lock, no side
/// effect, one statement the proxy parsed. Such a read may run outside a READ COMMITTED
/// transaction (`SessionState::read_outside_transaction`).
pub fn plain_read(c: &Classified) -> bool {
    c.kind == Kind::Read
        && c.statements <= 1
        && !c.flags.intersects(
            Flags::LOCKING_READ
                | Flags::FALLBACK
                | Flags::SIDE_EFFECTS
                | Flags::MULTI_STATEMENT
                | Flags::SEQUENCE
                | Flags::SQL_PREPARE
                | Flags::UNKNOWN_STATEMENT
                | Flags::TABLE_LOCK
                | Flags::ADVISORY_LOCK
                | Flags::BACKUP_LOCK,
        )
}

/// The open transaction's writes, with the bytes they take in its record: a transaction
/// whose record could not be logged is stopped at the write that makes it too large, not
/// kept in memory until its COMMIT.
#[derive(Debug, Default)]
pub struct PendingWrites {
    statements: Vec<Statement>,
    bytes: usize,
    /// The tables they wrote (`replication::certify`).
    writes: TableSet,
    /// The tables stored programs read in this transaction after its snapshot was taken:
    /// certified at commit (`replication::certify`).
    program_reads: Option<TableSet>,
}

impl PendingWrites {
    pub fn push(&mut self, s: Statement) {
        self.bytes += s.record_bytes();
        self.statements.push(s);
    }

    /// The tables a write of the transaction wrote.
    pub fn note_writes(&mut self, tables: &TableSet) {
        self.writes.add(tables);
    }

    /// A program of the transaction read `tables` from its snapshot.
    pub fn note_program_reads(&mut self, tables: &TableSet) {
        self.program_reads
            .get_or_insert_with(TableSet::default)
            .add(tables);
    }

    /// What the transaction wrote, and what its programs read (to certify), for its record;
    /// both are reset.
    pub fn take_tables(&mut self) -> (TableSet, Option<TableSet>) {
        (std::mem::take(&mut self.writes), self.program_reads.take())
    }

    pub fn clear(&mut self) {
        self.statements.clear();
        self.bytes = 0;
        self.writes = TableSet::default();
        self.program_reads = None;
    }

    /// Keeps the first `len` writes (ROLLBACK TO SAVEPOINT).
    pub fn truncate(&mut self, len: usize) {
        self.statements.truncate(len);
        self.bytes = self.statements.iter().map(Statement::record_bytes).sum();
    }

    /// The writes, for their record; none are left.
    pub fn take(&mut self) -> Vec<Statement> {
        self.bytes = 0;
        std::mem::take(&mut self.statements)
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// About the bytes of the record they make (`Statement::record_bytes`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl SessionState {
    pub fn new(
        user: String,
        schema: Option<String>,
        collation: u8,
        multi_statements: bool,
    ) -> Self {
        let mut s = SessionState {
            user,
            backend_account: None,
            admin: true,
            log_refusal: None,
            schema,
            collation,
            vars: Vec::new(),
            signature: 0,
            pins: 0,
            open_handlers: 0,
            affinity_left: 0,
            prepared: HashMap::new(),
            next_stmt_id: 1,
            multi_statements,
            // Set from the primary's global sql_mode once the login reached it.
            no_backslash_escapes: false,
            in_transaction: false,
            autocommit: true,
            proxy_vars: Vec::new(),
            last_write_ts: 0,
            table_locks_cover_log: false,
            pending: PendingWrites::default(),
            savepoints: Vec::new(),
            temp_tables: temp_tables::TempTables::default(),
            sql_prepared: HashMap::new(),
            diagnostics: None,
            binlog_format_description: None,
            sequence_last: HashMap::new(),
            snapshot_mark: 0,
            requested_isolation: None,
            next_transaction_isolation: None,
            server_txn_fresh: false,
        };
        s.signature = s.compute_signature();
        s
    }

    /// Back to a fresh session (COM_RESET_CONNECTION), in the primary's global
    /// NO_BACKSLASH_ESCAPES as the server starts one.
    pub fn reset(&mut self, no_backslash_escapes: bool) {
        self.no_backslash_escapes = no_backslash_escapes;
        self.vars.clear();
        self.pins = 0;
        self.open_handlers = 0;
        self.affinity_left = 0;
        self.prepared.clear();
        self.in_transaction = false;
        self.autocommit = true;
        self.requested_isolation = None;
        self.next_transaction_isolation = None;
        self.server_txn_fresh = false;
        self.proxy_vars.clear();
        self.pending.clear();
        self.savepoints.clear();
        self.temp_tables.clear();
        self.sql_prepared.clear();
        self.diagnostics = None;
        self.binlog_format_description = None;
        self.sequence_last.clear();
        self.signature = self.compute_signature();
    }

    /// The transaction ended without this session's connection (handed to a background
    /// commit): forget its writes and its transaction pin.
    pub fn reset_transaction(&mut self) {
        self.pending.clear();
        self.savepoints.clear();
        self.in_transaction = false;
        self.unpin(PinReason::Transaction);
    }

    fn compute_signature(&self) -> u64 {
        signature_of(self.collation, &self.vars)
    }

    /// Identifies the replayable state (collation + variables; not the schema).
    pub fn signature(&self) -> u64 {
        self.signature
    }

    /// The SET statement that gives a connection in its base state this session's variables,
    /// or None when there is nothing to set. `base_collation` is the connection's handshake
    /// collation.
    pub fn restore_statement(&self, base_collation: u8) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        let has_names = self.vars.iter().any(|(k, _)| k == "names");
        if !has_names && base_collation != self.collation {
            let c = mysql_common::collations::Collation::from(
                mysql_common::collations::CollationId::from(self.collation as u16),
            );
            parts.push(format!("NAMES {} COLLATE {}", c.charset(), c.collation()));
        }
        parts.extend(self.vars.iter().map(|(_, f)| f.clone()));
        if parts.is_empty() {
            None
        } else {
            Some(format!("SET {}", parts.join(", ")))
        }
    }

    pub fn is_pinned(&self) -> bool {
        self.pins != 0
    }

    /// The `wait_timeout` the session set to a number, in seconds, as set (the caller
    /// clamps it to the server's range, as the server does).
    pub fn wait_timeout(&self) -> Option<i64> {
        let (_, fragment) = self.vars.iter().find(|(k, _)| k == "wait_timeout")?;
        fragment.rsplit('=').next()?.trim().parse().ok()
    }

    /// Whether the session set `completion_type` to RELEASE (2): its plain COMMIT and
    /// ROLLBACK end it.
    pub fn completion_releases(&self) -> bool {
        self.vars
            .iter()
            .find(|(k, _)| k == "completion_type")
            .and_then(|(_, fragment)| fragment.rsplit('=').next())
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"'))
            .is_some_and(|v| v == "2" || v.eq_ignore_ascii_case("RELEASE"))
    }

    /// Whether LOCK TABLES is in force with READ locks only. MariaDB refuses almost every
    /// DDL then (1099, 1100, 1192), and it also refuses the record's row in the primary's
    /// `myquorum.wal`, so a restart's recovery would take the primary for lacking the
    /// record and run the DDL there, unlocked, where it succeeds.
    pub fn holds_read_locks_only(&self) -> bool {
        self.holds_table_locks() && !self.table_locks_cover_log
    }

    /// Whether the session keeps state on its connection beyond a transaction and the
    /// previous statement's results (checked per command: no allocation).
    pub fn pinned_beyond_transaction(&self) -> bool {
        self.pins & !(PinReason::Transaction.bit() | PinReason::StatementAffinity.bit()) != 0
    }

    /// Whether the session holds a BACKUP STAGE or BACKUP LOCK.
    pub fn holds_backup_lock(&self) -> bool {
        self.pins & PinReason::BackupLock.bit() != 0
    }

    /// Whether LOCK TABLES is in force (the session is pinned for it).
    pub fn holds_table_locks(&self) -> bool {
        self.pins & PinReason::TableLock.bit() != 0
    }

    pub fn pin_reasons(&self) -> Vec<PinReason> {
        PinReason::ALL
            .into_iter()
            .filter(|r| self.pins & r.bit() != 0)
            .collect()
    }

    pub fn pin(&mut self, reason: PinReason) {
        if self.pins & reason.bit() == 0 {
            self.pins |= reason.bit();
            PIN_EVENTS[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `reason` is the only thing pinning the session.
    pub fn pinned_only_by(&self, reason: PinReason) -> bool {
        self.pins == reason.bit()
    }

    pub fn unpin(&mut self, reason: PinReason) {
        self.pins &= !reason.bit();
    }

    pub fn alloc_stmt_id(&mut self) -> u32 {
        let id = self.next_stmt_id;
        self.next_stmt_id = self.next_stmt_id.wrapping_add(1).max(1);
        id
    }

    /// Whether a statement must run where the previous one ran (it reads per-connection
    /// results of that statement).
    pub fn needs_previous_connection(c: &Classified) -> bool {
        c.flags
            .intersects(Flags::LAST_INSERT_ID | Flags::FOUND_ROWS | Flags::WARNINGS_QUERY)
    }

    /// Updates state and pins before a statement runs, from what it will do.
    pub fn before_statement(&mut self, c: &Classified) {
        self.server_txn_fresh = false;
        if self.autocommit
            && !self.in_transaction
            && !matches!(
                c.kind,
                Kind::Begin | Kind::Session | Kind::Empty | Kind::Proxy
            )
        {
            // A statement that is its own transaction uses up a next-transaction level.
            self.next_transaction_isolation = None;
        }
        let f = c.flags;
        if f.contains(Flags::TEMP_TABLE) && c.kind == Kind::Ddl {
            self.pin(PinReason::TemporaryTable);
        }
        if f.contains(Flags::USER_VARIABLE) {
            self.pin(PinReason::UserVariable);
        }
        if f.contains(Flags::TABLE_LOCK) {
            self.pin(PinReason::TableLock);
        }
        if f.contains(Flags::ADVISORY_LOCK) {
            self.pin(PinReason::AdvisoryLock);
        }
        if f.contains(Flags::BACKUP_LOCK) {
            // Pooled with the lock held, the connection blocked every DDL (and, from
            // BLOCK_COMMIT, every commit) on the primary until it closed.
            self.pin(PinReason::BackupLock);
        }
        if f.contains(Flags::SQL_PREPARE) {
            self.pin(PinReason::SqlPrepare);
        }
        if f.contains(Flags::HANDLER_OPEN) {
            // Pooled with a handler open, the connection kept the table's metadata lock:
            // every later write and DDL on it waited behind an idle connection.
            self.pin(PinReason::Handler);
        }
        if c.kind == Kind::Xa {
            self.pin(PinReason::Xa);
        }
        if c.session
            .as_ref()
            .is_some_and(SessionChange::is_unreplayable)
        {
            self.pin(PinReason::UnreplayableSet);
        }
        if self.affinity_left > 0 {
            self.affinity_left -= 1;
            if self.affinity_left == 0 {
                self.unpin(PinReason::StatementAffinity);
            }
        }
    }

    /// The clock the client fixed with `SET timestamp = <seconds>`, in microseconds: its
    /// writes use it in place of the proxy's, as the server would (mysqlbinlog's output sets
    /// it before every statement, so a replay keeps the original times).
    pub fn fixed_timestamp_us(&self) -> Option<u64> {
        let (_, fragment) = self.vars.iter().find(|(k, _)| k == "timestamp")?;
        timestamp_us_of(fragment.split_once('=')?.1)
    }

    /// The random seeds the client set (`SET rand_seed1 = a, rand_seed2 = b`, as
    /// mysqlbinlog's output does before a statement calling RAND()), taken for the next
    /// write that needs seeds in place of the proxy's own. They are the server's generator
    /// state, used up by that write, so they leave the session's replayed settings too.
    pub fn take_rand_seeds(&mut self) -> Option<(u32, u32)> {
        let seed = |name: &str| {
            let (_, fragment) = self.vars.iter().find(|(k, _)| k == name)?;
            fragment.split_once('=')?.1.trim().parse::<u32>().ok()
        };
        let seeds = (seed("rand_seed1")?, seed("rand_seed2")?);
        self.vars
            .retain(|(k, _)| k != "rand_seed1" && k != "rand_seed2");
        self.signature = self.compute_signature();
        Some(seeds)
    }

    /// Updates state and pins after a statement ran, from the server's answer.
    pub fn after_statement(&mut self, c: &Classified, summary: &ResponseSummary) {
        let autocommit_idle = self.autocommit && !self.in_transaction;
        if let Some(status) = summary.status {
            use mysql_common::constants::StatusFlags;
            self.note_status(status);
            self.no_backslash_escapes =
                status & StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES.bits() != 0;
        }
        // With autocommit off, a COMMIT or ROLLBACK ends the server's transaction and the
        // next statement opens one; so does a SET that turns autocommit off, from autocommit
        // with no transaction open (from autocommit on, the server commits as it turns off).
        let ends = match c.kind {
            Kind::Commit | Kind::Rollback => true,
            Kind::Session => autocommit_idle,
            _ => false,
        };
        if ends && summary.error.is_none() && summary.status.is_some() {
            self.server_txn_fresh = !self.autocommit && !self.in_transaction;
        }
        if matches!(c.kind, Kind::Commit | Kind::Rollback | Kind::Ddl) && summary.error.is_none() {
            self.next_transaction_isolation = None;
        }
        if f_has(c, Flags::UNLOCK_TABLES) && summary.error.is_none() {
            self.unpin(PinReason::TableLock);
        }
        if f_has(c, Flags::BACKUP_UNLOCK) && summary.error.is_none() {
            self.unpin(PinReason::BackupLock);
        }
        if f_has(c, Flags::HANDLER_OPEN) && summary.error.is_none() {
            self.open_handlers += 1;
        }
        if f_has(c, Flags::HANDLER_CLOSE) && summary.error.is_none() {
            self.open_handlers = self.open_handlers.saturating_sub(1);
        }
        if c.flags
            .intersects(Flags::HANDLER_OPEN | Flags::HANDLER_CLOSE)
            && self.open_handlers == 0
        {
            // (A handler the server closed by itself, its table dropped, keeps the session
            // pinned until its HANDLER … CLOSE or the session's end.)
            self.unpin(PinReason::Handler);
        }
        if c.kind == Kind::Lock
            && f_has(c, Flags::TABLE_LOCK)
            && summary
                .error
                .as_ref()
                .is_some_and(|e| lock_tables_failed_unlocked(e.code))
        {
            self.unpin(PinReason::TableLock);
        }
        if summary.error.is_none() {
            match &c.session {
                Some(SessionChange::Vars(v)) => {
                    for (k, frag) in v {
                        self.vars.retain(|(key, _)| key != k);
                        self.vars.push((k.clone(), frag.clone()));
                    }
                    self.signature = self.compute_signature();
                }
                Some(SessionChange::Schema(s)) => self.schema = Some(s.clone()),
                _ => {}
            }
        }
        // A statement that produced an auto-increment id, warnings or a found-rows count
        // leaves per-connection state the next few statements may read. A CALL's answer
        // shows no id, though its procedure's inserts set LAST_INSERT_ID().
        let produced = summary.ok.is_some_and(|o| o.last_insert_id != 0)
            || c.kind == Kind::Call && summary.error.is_none()
            || summary.warnings > 0
            || c.flags.contains(Flags::FOUND_ROWS);
        if produced {
            self.pin(PinReason::StatementAffinity);
            self.affinity_left = 3;
        }
    }

    /// Tracks transaction state from the server's status flags (authoritative: covers
    /// BEGIN, implicit commits by DDL, autocommit=0, XA). With autocommit off the session
    /// keeps its connection even before the server reports a transaction: a SAVEPOINT set
    /// first (Django's `atomic` on a fresh transaction does so) lives on that connection
    /// until the transaction ends, and another session must not be handed it.
    /// Whether `c`, a statement of this session's open transaction, runs outside the
    /// server's transaction, and how; None: as usual, inside it. Only a READ COMMITTED
    /// session's plain read (no lock, no side effect, one statement) while the server has
    /// not begun the transaction: then nothing of the transaction can be lost by running
    /// it in autocommit, and it sees what is committed when it starts, as under READ
    /// COMMITTED. Under REPEATABLE READ, which the server runs (`Isolation::enforced`), the
    /// transaction's first read would take the snapshot all its later reads see; a Django
    /// `get_or_create` that lost its race inside `transaction.atomic()` then did not find
    /// the winner's row. Once the transaction has begun on the server, reads run in it.
    /// `held`: what is known of the session's pinned connection.
    pub fn read_outside_transaction(
        &self,
        c: &Classified,
        held: PinnedFacts,
    ) -> Option<OutsideRead> {
        let asked = self
            .next_transaction_isolation
            .or(self.requested_isolation)
            .map_or(held.server_reads_committed, Isolation::reads_committed);
        // Under LOCK TABLES a read sees only the locked tables; a BEGIN would have released
        // them, and a COMMIT released InnoDB's part already: the read stays where it is.
        if !plain_read(c)
            || !asked
            || !self.pending.is_empty()
            || !self.savepoints.is_empty()
            || self.holds_table_locks()
            || held.serializable_once
        {
            return None;
        }
        if held.deferred_begin {
            return Some(OutsideRead::AheadOfBegin);
        }
        (self.server_txn_fresh && !self.autocommit && !self.in_transaction)
            .then_some(OutsideRead::AutocommitOn)
    }

    /// What the session reads as its isolation level where the server's session says
    /// another (`sql::rewrite::ShownIsolation`): the level it asked for when the proxy raised
    /// it; the server's default when it asked for none and `default_raised` (a server whose
    /// default is below REPEATABLE READ: `backend::conn::ISOLATION_FLOOR`). None: the
    /// server's answer is the session's.
    pub fn shown_isolation(&self, default_raised: bool) -> Option<ShownIsolation> {
        match self.requested_isolation {
            Some(level) if level.enforced() != level => Some(ShownIsolation::Asked(level.name())),
            Some(_) => None,
            None => default_raised.then_some(ShownIsolation::ServerDefault),
        }
    }

    pub fn note_status(&mut self, status: u16) {
        use mysql_common::constants::StatusFlags;
        self.in_transaction = status & StatusFlags::SERVER_STATUS_IN_TRANS.bits() != 0;
        self.autocommit = status & StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits() != 0;
        if self.in_transaction || !self.autocommit {
            self.pin(PinReason::Transaction);
        } else {
            self.unpin(PinReason::Transaction);
        }
    }

    pub fn status_flags(&self) -> u16 {
        use mysql_common::constants::StatusFlags;
        let mut s = 0;
        if self.autocommit {
            s |= StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
        }
        if self.in_transaction {
            s |= StatusFlags::SERVER_STATUS_IN_TRANS.bits();
        }
        // Client libraries escape strings by this flag (mysql_real_escape_string): an
        // answer of the proxy's own without it would make them escape with backslashes.
        if self.no_backslash_escapes {
            s |= StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES.bits();
        }
        s
    }
}

/// Whether a LOCK TABLES that failed with `code` left the session without table locks.
/// MariaDB releases the locks a session holds before it checks the privileges for, or
/// opens, the tables a LOCK TABLES names, so one that fails there (no such table, access
/// denied) holds none; one refused while parsing (1064, 1066: a name twice) keeps the
/// earlier ones. Measured on MariaDB 10.11.
fn lock_tables_failed_unlocked(code: u16) -> bool {
    matches!(code, 1044 | 1142 | 1146)
}

fn f_has(c: &Classified, f: Flags) -> bool {
    c.flags.contains(f)
}

/// A `timestamp` value as microseconds: seconds with up to six decimals. DEFAULT, 0 (the
/// server's clock again) and anything computed give None.
pub fn timestamp_us_of(value: &str) -> Option<u64> {
    let value = value.trim().trim_matches('\'');
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty()
        || frac.len() > 6
        || !secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: u64 = format!("{frac:0<6}").parse().ok()?;
    let us = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros)?;
    (us != 0).then_some(us)
}

/// Signature of a connection's replayable state.
pub fn signature_of(collation: u8, vars: &[(String, String)]) -> u64 {
    let mut h = DefaultHasher::new();
    collation.hash(&mut h);
    vars.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::OkInfo;
    use crate::sql::classify;

    #[test]
    fn state_beyond_a_transaction_is_told_apart() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        s.pin(PinReason::Transaction);
        s.pin(PinReason::StatementAffinity);
        assert!(!s.pinned_beyond_transaction());
        for reason in [PinReason::TemporaryTable, PinReason::BackupLock] {
            s.pin(reason);
            assert!(s.pinned_beyond_transaction(), "{reason:?}");
            s.unpin(reason);
        }
        assert!(!s.pinned_beyond_transaction());
    }

    #[test]
    fn pending_writes_keep_their_record_size() {
        let write = |text: &str| Statement {
            schema: Some("db".into()),
            collation: 45,
            settings: vec!["SESSION sql_mode = ''".into()],
            timestamp_us: 1,
            insert_id: 0,
            last_insert_id: None,
            rand_seeds: None,
            affected: Some(1),
            body: crate::replication::record::Body::Text(text.as_bytes().to_vec()),
        };
        let mut p = PendingWrites::default();
        p.push(write("INSERT INTO t VALUES (1)"));
        let one = p.bytes();
        assert!(one > "INSERT INTO t VALUES (1)".len());
        p.push(write(&"x".repeat(1000)));
        assert_eq!(p.bytes(), one + write(&"x".repeat(1000)).record_bytes());
        p.truncate(1);
        assert_eq!((p.len(), p.bytes()), (1, one));
        assert_eq!(p.take().len(), 1);
        assert_eq!((p.len(), p.bytes()), (0, 0));
        p.push(write("a"));
        p.clear();
        assert!(p.is_empty() && p.bytes() == 0);
    }

    #[test]
    fn client_timestamps() {
        assert_eq!(timestamp_us_of(" 1000000000"), Some(1_000_000_000_000_000));
        assert_eq!(timestamp_us_of("1795354421.5"), Some(1_795_354_421_500_000));
        assert_eq!(timestamp_us_of("1.000001"), Some(1_000_001));
        for v in [
            "DEFAULT",
            "0",
            "",
            "UNIX_TIMESTAMP()",
            "1.1234567",
            "-5",
            ".5",
        ] {
            assert_eq!(timestamp_us_of(v), None, "{v}");
        }
    }

    fn ok(status: u16) -> ResponseSummary {
        ResponseSummary {
            ok: Some(OkInfo {
                status,
                ..OkInfo::default()
            }),
            status: Some(status),
            ..ResponseSummary::default()
        }
    }

    /// Runs `sql` through the session's bookkeeping as if the server answered `status`.
    fn ran(s: &mut SessionState, sql: &str, status: u16) {
        let c = classify(sql);
        s.before_statement(&c);
        s.after_statement(&c, &ok(status));
    }

    fn facts(deferred_begin: bool, serializable_once: bool) -> PinnedFacts {
        PinnedFacts {
            deferred_begin,
            serializable_once,
            server_reads_committed: false,
        }
    }

    #[test]
    fn a_session_reads_the_level_it_asked_for_where_the_proxy_raised_it() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        assert_eq!(s.shown_isolation(false), None);
        assert_eq!(s.shown_isolation(true), Some(ShownIsolation::ServerDefault));
        s.requested_isolation = Some(Isolation::ReadCommitted);
        for default_raised in [false, true] {
            assert_eq!(
                s.shown_isolation(default_raised),
                Some(ShownIsolation::Asked("READ-COMMITTED"))
            );
        }
        s.requested_isolation = Some(Isolation::ReadUncommitted);
        assert_eq!(
            s.shown_isolation(false),
            Some(ShownIsolation::Asked("READ-UNCOMMITTED"))
        );
        // Levels the server runs as asked: its answer is the session's.
        for level in [Isolation::RepeatableRead, Isolation::Serializable] {
            s.requested_isolation = Some(level);
            assert_eq!(s.shown_isolation(true), None);
        }
        // The next transaction's level is not the session's, on MariaDB either.
        s.requested_isolation = None;
        s.next_transaction_isolation = Some(Isolation::ReadCommitted);
        assert_eq!(s.shown_isolation(false), None);
    }

    #[test]
    fn read_committed_reads_run_outside_only_a_transaction_not_begun() {
        const AUTOCOMMIT: u16 = 0x0002;
        const IN_TRANS: u16 = 0x0001;
        let read = classify("SELECT v FROM t WHERE id = 1");
        let mut s = SessionState::new("u".into(), None, 45, false);
        // The server's default level: every read runs in the transaction.
        ran(&mut s, "SET autocommit = 0", 0);
        assert_eq!(s.read_outside_transaction(&read, facts(false, false)), None);
        ran(&mut s, "SET autocommit = 1", AUTOCOMMIT);
        // A server whose own default is READ COMMITTED: a session that asked for nothing
        // reads as it would there; one that asked for REPEATABLE READ does not.
        let on_rc_server = PinnedFacts {
            deferred_begin: true,
            serializable_once: false,
            server_reads_committed: true,
        };
        assert_eq!(
            s.read_outside_transaction(&read, on_rc_server),
            Some(OutsideRead::AheadOfBegin)
        );
        s.requested_isolation = Some(Isolation::RepeatableRead);
        assert_eq!(s.read_outside_transaction(&read, on_rc_server), None);
        // A level for the next transaction only: kept through BEGIN and the transaction,
        // gone after its COMMIT, or after a statement that was its own transaction.
        s.next_transaction_isolation = Some(Isolation::ReadCommitted);
        ran(&mut s, "BEGIN", AUTOCOMMIT | IN_TRANS);
        ran(&mut s, "SELECT 1", AUTOCOMMIT | IN_TRANS);
        assert_eq!(
            s.read_outside_transaction(&read, facts(true, false)),
            Some(OutsideRead::AheadOfBegin)
        );
        ran(&mut s, "COMMIT", AUTOCOMMIT);
        assert_eq!(s.read_outside_transaction(&read, facts(true, false)), None);
        s.next_transaction_isolation = Some(Isolation::ReadCommitted);
        ran(&mut s, "SELECT 1", AUTOCOMMIT);
        assert_eq!(s.next_transaction_isolation, None);
        s.requested_isolation = Some(Isolation::ReadCommitted);
        s.next_transaction_isolation = Some(Isolation::Serializable);
        assert_eq!(s.read_outside_transaction(&read, facts(true, false)), None);
        s.next_transaction_isolation = None;
        // A BEGIN the proxy holds back: ahead of it, whatever else holds.
        assert_eq!(
            s.read_outside_transaction(&read, facts(true, false)),
            Some(OutsideRead::AheadOfBegin)
        );
        // Autocommit turned off with no transaction open: the next transaction is fresh.
        ran(&mut s, "SET autocommit = 0", 0);
        assert!(s.server_txn_fresh);
        assert_eq!(
            s.read_outside_transaction(&read, facts(false, false)),
            Some(OutsideRead::AutocommitOn)
        );
        for not_plain in [
            "SELECT v FROM t WHERE id = 1 FOR UPDATE",
            "SELECT v FROM t LOCK IN SHARE MODE",
            "SELECT GET_LOCK('a', 1)",
            "SELECT NEXTVAL(s)",
            "SELECT 1; SELECT 2",
            "UPDATE t SET v = 1",
        ] {
            assert_eq!(
                s.read_outside_transaction(&classify(not_plain), facts(false, false)),
                None,
                "{not_plain}"
            );
        }
        // A one-shot level of the proxy's own waits for the transaction; so do table locks.
        assert_eq!(s.read_outside_transaction(&read, facts(false, true)), None);
        s.pin(PinReason::TableLock);
        assert_eq!(s.read_outside_transaction(&read, facts(true, false)), None);
        s.unpin(PinReason::TableLock);
        // Any statement run in the transaction begins it: reads go in from then on.
        for begins in [
            "INSERT INTO t VALUES (1)",
            "SAVEPOINT a",
            "SELECT v FROM t FOR UPDATE",
            "SET @x = 1",
            "DO 1",
        ] {
            ran(&mut s, "COMMIT", 0);
            assert!(s.server_txn_fresh, "{begins}");
            ran(&mut s, begins, 0);
            assert!(!s.server_txn_fresh, "{begins}");
            assert_eq!(s.read_outside_transaction(&read, facts(false, false)), None);
        }
        ran(&mut s, "ROLLBACK", 0);
        assert!(s.server_txn_fresh);
        // A failed COMMIT did not end it; nor does a COMMIT AND CHAIN, which opens the next.
        s.server_txn_fresh = false;
        let c = classify("COMMIT");
        s.before_statement(&c);
        s.after_statement(
            &c,
            &ResponseSummary {
                error: Some(crate::protocol::MysqlError::new(1180, "HY000", "x")),
                ..ResponseSummary::default()
            },
        );
        assert!(!s.server_txn_fresh);
        ran(&mut s, "COMMIT AND CHAIN", IN_TRANS);
        assert!(!s.server_txn_fresh);
        // Writes or savepoints the session holds keep reads in, whatever the flags say.
        ran(&mut s, "ROLLBACK", 0);
        s.savepoints.push(("a".into(), 0));
        assert_eq!(s.read_outside_transaction(&read, facts(true, false)), None);
        s.savepoints.clear();
        // SET autocommit = 0 inside an open transaction does not end it.
        ran(&mut s, "SET autocommit = 1", AUTOCOMMIT);
        ran(&mut s, "BEGIN", AUTOCOMMIT | IN_TRANS);
        ran(&mut s, "SET autocommit = 0", IN_TRANS);
        assert!(!s.server_txn_fresh);
        // A reset session is back to the server's default level.
        s.reset(false);
        assert_eq!(s.requested_isolation, None);
        assert!(!s.server_txn_fresh);
    }

    #[test]
    fn transaction_pins_until_commit() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        let c = classify("BEGIN");
        s.before_statement(&c);
        s.after_statement(&c, &ok(0x0001 | 0x0002));
        assert_eq!(s.pin_reasons(), vec![PinReason::Transaction]);
        let c = classify("COMMIT");
        s.after_statement(&c, &ok(0x0002));
        assert!(!s.is_pinned());
    }

    #[test]
    fn replayable_set_changes_signature_and_restore() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        let base = s.signature();
        assert_eq!(s.restore_statement(45), None);
        let c = classify("SET sql_mode='ANSI', time_zone = '+01:00'");
        s.before_statement(&c);
        s.after_statement(&c, &ok(0x0002));
        assert!(!s.is_pinned());
        assert_ne!(s.signature(), base);
        assert_eq!(
            s.restore_statement(45).unwrap(),
            "SET SESSION sql_mode = 'ANSI', SESSION time_zone = '+01:00'"
        );
        // A different handshake collation is restored with SET NAMES.
        assert!(s
            .restore_statement(8)
            .unwrap()
            .starts_with("SET NAMES utf8mb4 COLLATE utf8mb4_general_ci"));
        // Overwriting a key keeps one entry.
        let c = classify("SET sql_mode='TRADITIONAL'");
        s.after_statement(&c, &ok(0x0002));
        assert_eq!(
            s.restore_statement(45).unwrap().matches("sql_mode").count(),
            1
        );
    }

    #[test]
    fn state_that_cannot_be_replayed_pins() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        for (sql, reason) in [
            ("SET @x = 1", PinReason::UserVariable),
            (
                "CREATE TEMPORARY TABLE t (a INT)",
                PinReason::TemporaryTable,
            ),
            ("LOCK TABLES t WRITE", PinReason::TableLock),
            ("SELECT GET_LOCK('a', 1)", PinReason::AdvisoryLock),
            (
                "SET sql_mode = CONCAT(@@sql_mode, ',ANSI')",
                PinReason::UnreplayableSet,
            ),
        ] {
            s.before_statement(&classify(sql));
            assert!(s.pin_reasons().contains(&reason), "{sql}");
        }
        let c = classify("UNLOCK TABLES");
        s.after_statement(&c, &ok(0x0002));
        assert!(!s.pin_reasons().contains(&PinReason::TableLock));
        s.reset(false);
        assert!(!s.is_pinned());
    }

    #[test]
    fn open_handlers_pin_until_the_last_is_closed() {
        let mut s = SessionState::new("u".into(), None, 45, false);
        let failed = ResponseSummary {
            error: Some(crate::protocol::MysqlError::new(1066, "42000", "x")),
            ..ResponseSummary::default()
        };
        for sql in ["HANDLER t OPEN", "HANDLER u OPEN AS h"] {
            let c = classify(sql);
            s.before_statement(&c);
            s.after_statement(&c, &ok(0x0002));
        }
        // A second OPEN of the same name fails and changes nothing.
        let again = classify("HANDLER t OPEN");
        s.before_statement(&again);
        s.after_statement(&again, &failed);
        let close = classify("HANDLER t CLOSE");
        s.before_statement(&close);
        s.after_statement(&close, &ok(0x0002));
        assert!(s.pin_reasons().contains(&PinReason::Handler));
        let close = classify("HANDLER h CLOSE");
        s.before_statement(&close);
        s.after_statement(&close, &ok(0x0002));
        assert!(!s.is_pinned());
        // A failed first OPEN leaves the session unpinned.
        s.before_statement(&again);
        s.after_statement(&again, &failed);
        assert!(!s.is_pinned());
    }

    #[test]
    fn a_failed_lock_tables_keeps_locks_only_when_refused_while_parsing() {
        let failed = |code| ResponseSummary {
            error: Some(crate::protocol::MysqlError::new(code, "HY000", "x")),
            ..ResponseSummary::default()
        };
        for (code, still_locked) in [(1146, false), (1142, false), (1064, true), (1066, true)] {
            let mut s = SessionState::new("u".into(), None, 45, false);
            let c = classify("LOCK TABLES t READ");
            s.before_statement(&c);
            s.after_statement(&c, &failed(code));
            assert_eq!(s.holds_table_locks(), still_locked, "{code}");
        }
        // A failed statement that only mentions LOCK TABLES (a procedure body) changes none.
        let mut s = SessionState::new("u".into(), None, 45, false);
        s.before_statement(&classify("LOCK TABLES t READ"));
        let body = classify("CREATE PROCEDURE p() BEGIN LOCK TABLES t READ; END");
        s.after_statement(&body, &failed(1146));
        assert!(s.holds_table_locks());
    }
}
