//! The primary side of a replicated write: runs the statement inside a real transaction with
//! the context a follower needs (a proxy-chosen `timestamp`, random seeds, the connection's
//! LAST_INSERT_ID()), holds its answer, and after the log has the record commits it together
//! with the record's `myquorum.wal` row. Every step is pipelined on the pinned connection, so
//! the extra statements cost no extra round trips.
//!
//! Owns: the command sequences run on the primary for writes. May import: backend
//! (connection), protocol (responses), replication::{record, replay, wal_table}, sql
//! (determinism, replicated settings, user variables, identifier quoting).

use crate::backend::BackendConn;
use crate::protocol::message::OkInfo;
use crate::protocol::relay::{
    buffer_response, read_response, relay_infile_keeping_copy, single_ok_payload, InfileCopy,
    RelayError, ResponseKind, ResponseSummary,
};
use crate::protocol::resultset::{
    read_first_row, read_first_row_typed, read_rows, TextRow, TypedValue,
};
use crate::protocol::{MysqlError, PacketStream};
use crate::replication::record::{Body, Statement};
use crate::replication::replay::query;
use crate::replication::wal_table::WalRows;
use crate::router::ShardId;
use crate::sql::determinism::{
    order_dependence, per_row_dependence, Identity, OrderCheck, PerRowCall,
};
use crate::sql::replicated_settings::{names, record_settings};
use crate::sql::user_vars;
use mysql_common::constants::CapabilityFlags;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};

/// How the proxy ends a transaction it opened or ends for itself on a client's connection:
/// explicitly neither chained nor released, since the connection carries the client's
/// `completion_type` (with 2, a plain COMMIT would make the server close it).
pub const OWN_COMMIT: &str = "COMMIT AND NO CHAIN NO RELEASE";
pub const OWN_ROLLBACK: &str = "ROLLBACK AND NO CHAIN NO RELEASE";

/// What the session knows about a write before it runs.
pub struct WritePlan<'a> {
    /// The command to send (COM_QUERY with the possibly rewritten text, or COM_STMT_EXECUTE).
    pub command: &'a [u8],
    pub body: Body,
    /// The session is in autocommit mode outside a transaction: the proxy opens one.
    pub wrap_in_transaction: bool,
    pub needs_last_insert_id: bool,
    pub needs_rand_seed: bool,
    /// Read the settings from the primary for this write even if this connection's are
    /// known (the session changed them in ways the proxy cannot follow).
    pub read_settings: bool,
    pub schema: Option<String>,
    pub collation: u8,
    /// The client asked for found-rows counting: affected rows are not comparable.
    pub found_rows: bool,
    pub deprecate_eof: bool,
    pub kind: ResponseKind,
    /// LOAD DATA LOCAL: the client's file is relayed and a copy of at most this many bytes
    /// kept for the record (`body` is `Body::LoadData`).
    pub infile_cap: Option<usize>,
    /// A DML statement: if it answers with rows (`INSERT … RETURNING`) there is no OK packet
    /// to carry the ids it generated, so they are read from the server after it.
    pub is_dml: bool,
    /// A CALL whose procedure's one insert generates ids (`CallCheck::carries_insert_id`):
    /// the CALL's OK packet carries none, so LAST_INSERT_ID() is read after it.
    pub program_insert_id: bool,
    /// Whether the primary's answer must show that row order did not decide the result
    /// (`sql::determinism::OrderCheck`); inside a transaction a savepoint lets the
    /// statement be undone if it did.
    pub order_check: OrderCheck,
    /// A rewritten call the server would evaluate once per row: the primary's answer must
    /// show one row (`sql::determinism::per_row_dependence`), else it is undone likewise.
    pub per_row_call: Option<PerRowCall>,
    /// A program (CALL, compound statement) inside the client's transaction: if it fails,
    /// the writes its statements made before the failing one are undone (a savepoint before
    /// it). The server keeps them, but the log has no record of a failed statement, so at
    /// COMMIT they would stay on the primary alone.
    pub undo_if_failed: bool,
    /// A program (CALL, compound statement) that starts the server's transaction (the proxy's
    /// wrap, the client's deferred BEGIN, or autocommit off with none open): the transaction
    /// runs SERIALIZABLE, where InnoDB makes plain reads locking. Under REPEATABLE READ they
    /// read the transaction's snapshot, which may lack rows committed before this record in
    /// the log; a follower replaying in log order reads those rows, and a value read into
    /// a local variable and written differs (fuzz seed 261's `SELECT COUNT(*) INTO n`).
    pub serializable: bool,
    /// User variables the statement reads: their values are read just before it and
    /// carried in the record's settings.
    pub user_vars: Vec<String>,
    /// The clock the client fixed (`SET timestamp`): the write's time instead of now.
    pub timestamp_us: Option<u64>,
    /// The statement may read the server's clock: it is fixed first and recorded. When
    /// nothing in it or its tables reads it (`sql::clock`, `backend::schema_facts`) the
    /// record carries timestamp 0 and no replica is sent a `SET timestamp`.
    pub reads_clock: bool,
    /// Random seeds the client set for this write (`SessionState::take_rand_seeds`).
    pub rand_seeds: Option<(u32, u32)>,
}

/// Set in front of an `OrderCheck` write or a program inside a transaction, to undo only
/// that statement.
const ORDER_CHECK_SAVEPOINT: &str = "SAVEPOINT myquorum_order_check";

/// ER_CHECK_NOT_IMPLEMENTED, SAVEPOINT's answer in a transaction that wrote a table whose
/// engine keeps none.
const NO_SAVEPOINTS_HERE: u16 = 1178;

/// A write executed on the primary, its answer held back.
pub struct Executed {
    pub summary: ResponseSummary,
    /// The answer's frames, to relay once the commit is acknowledged.
    pub raw: Vec<u8>,
    /// The statement as the log records it (None when the statement failed).
    pub statement: Option<Statement>,
    /// A LOAD DATA LOCAL file larger than the record can carry (its size): the statement
    /// ran on the primary but cannot be replicated.
    pub infile_too_large: Option<usize>,
    /// SHOW WARNINGS as it was right after the statement (empty when it had none): what
    /// follows on this connection clears the server's list.
    pub warnings: Vec<TextRow>,
}

impl Executed {
    /// A write that is not logged: `error` is the client's answer.
    fn failed(error: MysqlError, infile_too_large: Option<usize>) -> Executed {
        Executed {
            summary: ResponseSummary {
                error: Some(error),
                ..ResponseSummary::default()
            },
            raw: Vec::new(),
            statement: None,
            infile_too_large,
            warnings: Vec::new(),
        }
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Reads every replicated setting of the primary connection: a record carries the
/// connection's actual values (off the appliers' baseline), not what the session set, since
/// the connection started from the primary's globals (its my.cnf, or a `SET GLOBAL` made
/// after the followers started) and a session may change them in ways the proxy cannot
/// follow (a computed SET, a user variable).
fn settings_query(ddl: bool) -> String {
    let cols: Vec<String> = names(ddl).map(|n| format!("@@session.{n}")).collect();
    format!("SELECT {}", cols.join(", "))
}

/// What a DDL on `conn` needs to know first, read in one round trip.
pub struct DdlContext {
    /// The settings its record carries, always read (DDL is rare, and it also depends on
    /// the server character set: a database's default).
    pub settings: Vec<String>,
    /// The session is read-only (`tx_read_only`): MariaDB refuses every DDL with 1792.
    pub read_only: bool,
}

pub async fn ddl_context_of(
    conn: &mut BackendConn,
    collation: u8,
    deprecate_eof: bool,
) -> io::Result<Result<DdlContext, MysqlError>> {
    let sql = format!("{}, @@session.tx_read_only", settings_query(true));
    conn.stream.write_packet(0, &query(&sql)).await?;
    Ok(read_first_row(&mut conn.stream, deprecate_eof)
        .await?
        .map(|row| {
            let row = row.unwrap_or_default();
            DdlContext {
                settings: settings_from_row(collation, &row, true),
                read_only: row.get(names(true).count()).and_then(|v| v.as_deref()) == Some("1"),
            }
        }))
}

fn known_settings(conn: &BackendConn, always_read: bool) -> Option<Vec<String>> {
    match &conn.record_settings {
        Some((signature, s)) if !always_read && *signature == conn.state_signature => {
            Some(s.clone())
        }
        _ => None,
    }
}

fn remember_settings(
    conn: &mut BackendConn,
    collation: u8,
    always_read: bool,
    row: &[Option<String>],
) -> Vec<String> {
    let settings = settings_from_row(collation, row, false);
    if !always_read {
        conn.record_settings = Some((conn.state_signature, settings.clone()));
    }
    settings
}

fn settings_from_row(collation: u8, row: &[Option<String>], ddl: bool) -> Vec<String> {
    let c = mysql_common::collations::Collation::from(mysql_common::collations::CollationId::from(
        u16::from(collation),
    ));
    record_settings(c.charset(), c.collation(), row, ddl)
}

/// Runs a write on `conn` (the session's primary connection) with its context; `client`
/// only takes part for LOAD DATA LOCAL (it sends the file).
pub async fn execute_write<C: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    plan: WritePlan<'_>,
    client: &mut PacketStream<C>,
) -> Result<Executed, RelayError> {
    let backend = RelayError::Backend;
    let timestamp_us = plan.timestamp_us.unwrap_or_else(now_us);
    let rand_seeds = plan.needs_rand_seed.then(|| {
        plan.rand_seeds.unwrap_or_else(|| {
            let v: u64 = rand::random();
            (((v >> 32) as u32) % 0x3FFF_FFFF, (v as u32) % 0x3FFF_FFFF)
        })
    });
    let mut assignments = Vec::new();
    if plan.wrap_in_transaction {
        assignments.push("autocommit = 0".to_string());
    }
    if plan.reads_clock {
        assignments.push(format!(
            "timestamp = {}.{:06}",
            timestamp_us / 1_000_000,
            timestamp_us % 1_000_000
        ));
    }
    if let Some((a, b)) = rand_seeds {
        assignments.push(format!("rand_seed1 = {a}, rand_seed2 = {b}"));
    }
    // One command fewer per statement when there is nothing to set.
    let set = (!assignments.is_empty()).then(|| format!("SET {}", assignments.join(", ")));
    if plan.serializable {
        // Before the BEGIN or `autocommit = 0`: it is for the transaction starting here.
        conn.stream
            .queue_packet(0, &query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
        conn.serializable_once = true;
    }
    // The transaction the client began (answered by the proxy) starts on the server here.
    let begin = queue_deferred_begin(conn);
    let checked_after = plan.order_check != OrderCheck::None || plan.per_row_call.is_some();
    let savepoint = (checked_after || plan.undo_if_failed) && !plan.wrap_in_transaction;
    if savepoint {
        conn.stream.queue_packet(0, &query(ORDER_CHECK_SAVEPOINT));
    }
    if plan.needs_last_insert_id {
        conn.stream
            .queue_packet(0, &query("SELECT LAST_INSERT_ID()"));
    }
    let known = known_settings(conn, plan.read_settings);
    let read_settings = known.is_none();
    if read_settings {
        conn.stream.queue_packet(0, &query(&settings_query(false)));
    }
    if !plan.user_vars.is_empty() {
        conn.stream
            .queue_packet(0, &query(&user_vars::read_query(&plan.user_vars)));
    }
    if let Some(set) = &set {
        conn.stream.queue_packet(0, &query(set));
    }
    conn.stream.queue_packet(0, plan.command);
    if plan.reads_clock {
        // The next write sets its own timestamp; anything else resets it first (unless
        // the client fixed it: then it is the session's own setting and stays).
        conn.timestamp_fixed = plan.timestamp_us.is_none();
    }
    conn.stream.flush().await.map_err(backend)?;
    let mut last_insert_id = None;
    let mut settings = known.unwrap_or_default();
    let mut context_error: Option<MysqlError> = None;
    if plan.serializable {
        let answer = read_response(&mut conn.stream, ResponseKind::Single, plan.deprecate_eof)
            .await
            .map_err(backend)?;
        if let Some(e) = answer.error {
            // (A transaction the proxy did not know of was open: 1568.) The program runs at
            // the session's level, as it did before SERIALIZABLE was asked for.
            tracing::debug!(error = %e.message, "SERIALIZABLE not set for a program");
            conn.serializable_once = false;
        }
    }
    if begin {
        let answer = read_response(&mut conn.stream, ResponseKind::Single, plan.deprecate_eof)
            .await
            .map_err(backend)?;
        context_error = answer.error;
    }
    let mut savepoint_set = savepoint;
    if savepoint {
        let answer = read_response(&mut conn.stream, ResponseKind::Single, plan.deprecate_eof)
            .await
            .map_err(backend)?;
        match answer.error {
            // A table whose engine keeps no savepoints (Aria) is in the transaction. A program
            // runs anyway (most succeed); only if it fails is the transaction lost.
            Some(e) if e.code == NO_SAVEPOINTS_HERE && !checked_after => savepoint_set = false,
            e => context_error = context_error.or(e),
        }
    }
    if plan.needs_last_insert_id {
        match read_first_row(&mut conn.stream, plan.deprecate_eof)
            .await
            .map_err(backend)?
        {
            Ok(row) => {
                last_insert_id = row
                    .and_then(|r| r.into_iter().next().flatten())
                    .and_then(|v| v.parse().ok())
            }
            Err(e) => context_error = Some(e),
        }
    }
    if read_settings {
        match read_first_row(&mut conn.stream, plan.deprecate_eof)
            .await
            .map_err(backend)?
        {
            Ok(row) => {
                settings = remember_settings(
                    conn,
                    plan.collation,
                    plan.read_settings,
                    &row.unwrap_or_default(),
                )
            }
            Err(e) => context_error = Some(e),
        }
    }
    if !plan.user_vars.is_empty() {
        let row = read_first_row_typed(&mut conn.stream, plan.deprecate_eof)
            .await
            .map_err(backend)?;
        match row.map(|r| user_var_assignments(&plan.user_vars, &r.unwrap_or_default())) {
            Ok(Ok(assignments)) => settings.extend(assignments),
            Ok(Err(why)) => {
                context_error = Some(MysqlError::not_supported(&format!(
                    "cannot replicate this write: {why}"
                )))
            }
            Err(e) => context_error = Some(e),
        }
    }
    let set_error = match set {
        Some(_) => {
            read_response(&mut conn.stream, ResponseKind::Single, plan.deprecate_eof)
                .await
                .map_err(backend)?
                .error
        }
        None => None,
    };
    let infile = match plan.infile_cap {
        Some(cap) => relay_infile_keeping_copy(&mut conn.stream, client, cap).await?,
        None => InfileCopy::NotAsked,
    };
    let (summary, raw) = buffer_response(&mut conn.stream, plan.kind, plan.deprecate_eof)
        .await
        .map_err(backend)?;
    let (body, infile_too_large) = match (plan.body, infile) {
        (Body::LoadData { sql, .. }, InfileCopy::Data(data)) => {
            (Body::LoadData { sql, data }, None)
        }
        (body, InfileCopy::TooLarge(n)) => (body, Some(n)),
        (body, _) => (body, None),
    };
    if let Some(e) = set_error.or(context_error) {
        // The context could not be set: the statement's result cannot be replicated.
        if summary.error.is_none() && !plan.wrap_in_transaction {
            // It ran anyway, inside the client's transaction, where no rollback of the
            // proxy's can reach it alone: giving the connection up rolls the transaction
            // back on the server, rather than leaving a change the log does not have.
            return Err(backend(io::Error::other(format!(
                "myquorum could not set the statement context ({}); the transaction is rolled back",
                e.message
            ))));
        }
        return Ok(Executed::failed(
            MysqlError::new(
                e.code,
                e.state_str(),
                format!(
                    "myquorum could not set the statement context: {}",
                    e.message
                ),
            ),
            infile_too_large,
        ));
    }
    if savepoint && plan.undo_if_failed && summary.error.is_some() {
        if !savepoint_set {
            return Err(backend(io::Error::other(
                "a program failed part-way inside a transaction that holds a table whose \
                 engine keeps no savepoints (Aria), so the proxy cannot undo what it wrote \
                 before failing; the transaction is rolled back",
            )));
        }
        undo_to_savepoint(conn, plan.deprecate_eof, Undo::FailedProgram).await?;
    }
    let warnings = if summary.warnings > 0 && summary.error.is_none() {
        read_warnings(conn, plan.deprecate_eof).await?
    } else {
        Vec::new()
    };
    let mut insert_id = summary.ok.unwrap_or_default().last_insert_id;
    let answer_lacks_insert_id = matches!(body, Body::LoadData { .. })
        || plan.is_dml && summary.result_sets > 0
        || plan.program_insert_id;
    if answer_lacks_insert_id && summary.error.is_none() {
        // Neither LOAD DATA's OK nor the rows of `INSERT … RETURNING` (Django and SQLAlchemy
        // insert so on MariaDB) carry the first generated id; LAST_INSERT_ID() has it. When
        // the statement generated none it still holds an earlier statement's id, which the
        // replica's identical statement then does not use either (the replay sets insert_id
        // per statement, so nothing carries over).
        let after = read_last_insert_id(conn, plan.deprecate_eof)
            .await
            .map_err(backend)?;
        if let Some(after) = after {
            insert_id = after;
        }
    }
    if summary.error.is_none() && summary.result_sets == 0 {
        let checks = (plan.order_check, plan.per_row_call);
        if let Some(why) =
            result_undecided(conn, checks, plan.deprecate_eof, &raw, insert_id).await?
        {
            if savepoint {
                undo_to_savepoint(conn, plan.deprecate_eof, Undo::OrderDependent).await?;
            }
            // Autocommit: the caller rolls the proxy's transaction back.
            return Ok(Executed::failed(
                MysqlError::not_supported(&format!(
                    "cannot replicate this write deterministically: {why}"
                )),
                infile_too_large,
            ));
        }
    }
    let statement = if summary.error.is_none() {
        let ok = summary.ok.unwrap_or_default();
        Some(Statement {
            schema: plan.schema,
            collation: plan.collation,
            settings,
            timestamp_us: if plan.reads_clock { timestamp_us } else { 0 },
            insert_id,
            last_insert_id,
            rand_seeds,
            affected: (!plan.found_rows && summary.result_sets == 0).then_some(ok.affected_rows),
            body,
        })
    } else {
        None
    };
    Ok(Executed {
        summary,
        raw,
        statement,
        infile_too_large,
        warnings,
    })
}

/// `@v = <literal>` for each variable from `user_vars::read_query`'s row.
fn user_var_assignments(vars: &[String], row: &[TypedValue]) -> Result<Vec<String>, String> {
    fn bytes(v: &TypedValue) -> Option<&[u8]> {
        v.value.as_deref()
    }
    vars.iter()
        .zip(row.chunks(user_vars::COLUMNS_PER_VARIABLE))
        .map(|(var, cols)| match cols {
            [value, charset, collation, hex] => user_vars::assignment(
                var,
                &user_vars::ReadValue {
                    column_type: value.column_type,
                    value: bytes(value),
                    charset: bytes(charset),
                    collation: bytes(collation),
                    hex: bytes(hex),
                },
            ),
            _ => Err(format!("the value of @{var} could not be read")),
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|a| {
            if a.len() == vars.len() {
                Ok(a)
            } else {
                Err("the user variables' values could not be read".to_string())
            }
        })
}

/// Why the primary's result of a write is not what its replay gives, from its OK packet:
/// row order decided it (`OrderCheck`), or one literal stood for a call MySQL evaluates per
/// row (`PerRowCall`). None: neither. Whether AUTO_INCREMENT values were generated is asked
/// of the server only when that alone would decide: the OK packet's id is also set by
/// explicit values, LAST_INSERT_ID() only by generated ones.
async fn result_undecided(
    conn: &mut BackendConn,
    (check, per_row_call): (OrderCheck, Option<PerRowCall>),
    deprecate_eof: bool,
    raw: &[u8],
    insert_id: u64,
) -> Result<Option<String>, RelayError> {
    if check == OrderCheck::None && per_row_call.is_none() {
        return Ok(None);
    }
    let session_track = conn
        .hello
        .caps
        .contains(CapabilityFlags::CLIENT_SESSION_TRACK);
    let Some(info) = single_ok_payload(raw).and_then(|p| OkInfo::message(p, session_track)) else {
        return Ok(None);
    };
    let info = String::from_utf8_lossy(info);
    if let Some(why) = per_row_call.and_then(|call| per_row_dependence(call, &info)) {
        return Ok(Some(why));
    }
    if let Some(why) = order_dependence(check, &info, false) {
        return Ok(Some(why));
    }
    if insert_id == 0 {
        return Ok(None);
    }
    let Some(why) = order_dependence(check, &info, true) else {
        return Ok(None);
    };
    let generated = read_last_insert_id(conn, deprecate_eof)
        .await
        .map_err(RelayError::Backend)?
        == Some(insert_id);
    Ok(generated.then_some(why))
}

/// What the account functions give on `conn` (USER(), CURRENT_USER(), CURRENT_ROLE()), for
/// a write that calls them: its record carries these values, not the follower's own.
pub async fn read_identity(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> io::Result<Result<Identity, MysqlError>> {
    conn.stream
        .write_packet(0, &query("SELECT USER(), CURRENT_USER(), CURRENT_ROLE()"))
        .await?;
    Ok(read_first_row(&mut conn.stream, deprecate_eof)
        .await?
        .map(|row| {
            let mut values = row.unwrap_or_default().into_iter();
            let (user, current_user) = (values.next().flatten(), values.next().flatten());
            Identity {
                user: user.unwrap_or_default(),
                current_user: current_user.unwrap_or_default(),
                current_role: values.next().flatten(),
            }
        }))
}

/// The primary key's columns, in key order, of `table` (in `schema`, else the connection's
/// database) as `conn` sees it: empty when it has none. For rows a write's LIMIT or ORDER BY
/// picks (`WriteCheck::needs_primary_keys`).
pub async fn read_primary_key(
    conn: &mut BackendConn,
    deprecate_eof: bool,
    schema: Option<&str>,
    table: &str,
) -> io::Result<Result<Vec<String>, MysqlError>> {
    let quote = crate::sql::quote_identifier;
    let name = match schema {
        Some(db) => format!("{}.{}", quote(db), quote(table)),
        None => quote(table),
    };
    let sql = format!("SHOW KEYS FROM {name} WHERE Key_name = 'PRIMARY'");
    conn.stream.write_packet(0, &query(&sql)).await?;
    // Columns: Table, Non_unique, Key_name, Seq_in_index, Column_name, …; rows come in
    // Seq_in_index order.
    Ok(read_rows(&mut conn.stream, deprecate_eof, usize::MAX)
        .await?
        .map(|rows| {
            rows.into_iter()
                .filter_map(|row| row.into_iter().nth(4).flatten())
                .collect()
        }))
}

/// The connection's LAST_INSERT_ID(), asked after a statement (None if unreadable).
async fn read_last_insert_id(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> io::Result<Option<u64>> {
    conn.stream
        .write_packet(0, &query("SELECT LAST_INSERT_ID()"))
        .await?;
    Ok(read_first_row(&mut conn.stream, deprecate_eof)
        .await?
        .ok()
        .flatten()
        .and_then(|r| r.into_iter().next().flatten())
        .and_then(|v| v.parse::<u64>().ok()))
}

/// Why the proxy rolls back to `ORDER_CHECK_SAVEPOINT`.
#[derive(Clone, Copy)]
enum Undo {
    /// The write's result depended on row order: the transaction goes on, as after a
    /// statement the server refused.
    OrderDependent,
    /// A program failed part-way (`WritePlan::undo_if_failed`). Its savepoint is gone when
    /// the program or the server ended the transaction (an exit handler's ROLLBACK, a
    /// deadlock): then there is nothing to undo, and the caller asks the primary whether its
    /// transaction is still open.
    FailedProgram,
}

/// Undoes the statement run after `ORDER_CHECK_SAVEPOINT`. If that fails the connection is
/// given up, which rolls the whole transaction back on the server: the statement's writes
/// must not stay unrecorded.
async fn undo_to_savepoint(
    conn: &mut BackendConn,
    deprecate_eof: bool,
    why: Undo,
) -> Result<(), RelayError> {
    /// ER_SP_DOES_NOT_EXIST: no such savepoint.
    const NO_SAVEPOINT: u16 = 1305;
    let undo = format!("ROLLBACK TO {ORDER_CHECK_SAVEPOINT}");
    conn.stream
        .write_packet(0, &query(&undo))
        .await
        .map_err(RelayError::Backend)?;
    let answer = read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof)
        .await
        .map_err(RelayError::Backend)?;
    let what = match (why, answer.error) {
        (_, None) => return Ok(()),
        (Undo::FailedProgram, Some(e)) if e.code == NO_SAVEPOINT => return Ok(()),
        (Undo::OrderDependent, Some(e)) => {
            format!(
                "undoing a write whose result depended on row order failed ({})",
                e.message
            )
        }
        (Undo::FailedProgram, Some(e)) => format!(
            "undoing the writes of a program that failed part-way failed ({})",
            e.message
        ),
    };
    Err(RelayError::Backend(io::Error::other(format!(
        "{what}; the transaction is rolled back"
    ))))
}

/// The server's warnings for the statement just run on `conn` (SHOW WARNINGS), read before
/// the proxy's own statements clear them. A failure to list them is no failure of the write.
pub async fn read_warnings(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> Result<Vec<TextRow>, RelayError> {
    conn.stream
        .write_packet(0, &query("SHOW WARNINGS"))
        .await
        .map_err(RelayError::Backend)?;
    Ok(
        read_rows(&mut conn.stream, deprecate_eof, usize::from(u16::MAX))
            .await
            .map_err(RelayError::Backend)?
            .unwrap_or_default(),
    )
}

/// Sends the record's `myquorum.wal` row into the primary's open transaction as soon as the
/// record is sequenced, so it executes while the quorum is awaited; `commit_on_primary`
/// reads its answers. A record larger than `chunk` takes several statements (its rows are
/// made and sent one at a time); returns how many answers they give.
pub async fn send_wal_row(
    conn: &mut BackendConn,
    shard: ShardId,
    ts: u64,
    payload: &[u8],
    chunk: usize,
) -> io::Result<usize> {
    let mut answers = 0;
    for sql in WalRows::new(shard, [(ts, payload)], true, chunk) {
        conn.stream
            .queue_packet(0, &query(&without_time_limits(&sql)));
        conn.stream.flush().await?;
        answers += 1;
    }
    Ok(answers)
}

/// Commits the primary's transaction (whose `myquorum.wal` row `send_wal_row` sent, in
/// `wal_answers` statements) after the quorum holds the record. Returns the COMMIT's answer
/// (frames included, for an explicit COMMIT).
///
/// The row's answers are read before COMMIT is sent: an INSERT the server refuses without
/// ending the transaction (a lock wait timeout, a full disk, a trigger) would otherwise
/// leave the COMMIT to commit the transaction's changes without their row, and the repair
/// that follows (the row says whether the primary has a record) would apply them a second
/// time. Rolled back instead, the primary is repaired from the log like any primary whose
/// COMMIT failed. It costs no round trip: the rows were sent before the quorum wait and
/// have answered by the time it ends.
///
/// `commit` is the statement that commits: the client's own COMMIT (`COMMIT AND CHAIN`
/// opens the next transaction there, `AND NO CHAIN` overrides `completion_type`), or
/// `COMMIT` for a transaction that ends implicitly.
pub async fn commit_on_primary(
    conn: &mut BackendConn,
    ts: u64,
    wal_answers: usize,
    unwrap_transaction: bool,
    commit: &str,
    deprecate_eof: bool,
) -> io::Result<(ResponseSummary, Vec<u8>)> {
    let mut failed = None;
    for _ in 0..wal_answers {
        let insert =
            read_response(&mut conn.stream, ResponseKind::ResultSets, deprecate_eof).await?;
        failed = failed.or(insert.error);
    }
    if let Some(e) = failed {
        rollback_on_primary(conn, unwrap_transaction, deprecate_eof).await?;
        return Err(io::Error::other(format!(
            "recording commit {ts} in the primary's myquorum.wal failed: {e}; rolled back there \
             and applied again from the log"
        )));
    }
    // A wrapped autocommit write commits by turning autocommit back on (the server commits
    // the open transaction then, and reports a failure to): one command, not two.
    if !queue_reset_after(conn, unwrap_transaction) {
        conn.stream.queue_packet(0, &query(commit));
    }
    conn.stream.flush().await?;
    buffer_response(&mut conn.stream, ResponseKind::ResultSets, deprecate_eof).await
}

/// Rolls back the primary's transaction (the record never reached the log).
pub async fn rollback_on_primary(
    conn: &mut BackendConn,
    unwrap_transaction: bool,
    deprecate_eof: bool,
) -> io::Result<()> {
    conn.stream.queue_packet(0, &query(OWN_ROLLBACK));
    let reset = queue_reset_after(conn, unwrap_transaction);
    conn.stream.flush().await?;
    read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    if reset {
        read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    }
    Ok(())
}

/// At the end of a transaction: back to autocommit for a wrapped autocommit write (and
/// the server's clock with it, free in the same SET), which also commits it when no
/// ROLLBACK was queued in front. Otherwise the clock stays fixed until
/// a statement that may read it (`queue_timestamp_reset`): the next write sets its own, and
/// BEGIN/COMMIT do not read it. A one-shot isolation level the proxy set
/// (`BackendConn::serializable_once`) goes in the same SET: assigning the session's level
/// to itself, after the commit, ends it (measured). Returns whether a command was queued
/// (read its answer).
fn queue_reset_after(conn: &mut BackendConn, unwrap_transaction: bool) -> bool {
    if !unwrap_transaction {
        return false;
    }
    // Every autocommit write passes here: no text is built.
    let reset = match (
        conn.timestamp_fixed,
        std::mem::take(&mut conn.serializable_once),
    ) {
        (false, false) => "SET autocommit = 1",
        (true, false) => "SET autocommit = 1, timestamp = DEFAULT",
        (false, true) => "SET autocommit = 1, tx_isolation = @@session.tx_isolation",
        (true, true) => {
            "SET autocommit = 1, timestamp = DEFAULT, tx_isolation = @@session.tx_isolation"
        }
    };
    conn.stream.queue_packet(0, &query(reset));
    conn.timestamp_fixed = false;
    true
}

/// Queues the BEGIN the proxy answered for the client (see `BackendConn::deferred_begin`)
/// in front of what is sent next. Returns whether it was queued (read its answer first).
pub fn queue_deferred_begin(conn: &mut BackendConn) -> bool {
    match conn.deferred_begin.take() {
        Some(begin) => {
            conn.stream.queue_packet(0, &begin);
            true
        }
        None => false,
    }
}

/// Before a statement that is not a replicated write: queues the reset of a timestamp a
/// write left fixed. Returns whether a command was queued (read its answer first).
pub fn queue_timestamp_reset(conn: &mut BackendConn) -> bool {
    if !conn.timestamp_fixed {
        return false;
    }
    conn.stream
        .queue_packet(0, &query("SET timestamp = DEFAULT"));
    conn.timestamp_fixed = false;
    true
}

/// A DDL record as the log holds it: the primary stores it in its own `myquorum.wal`.
pub struct LoggedDdl<'a> {
    pub shard: ShardId,
    pub ts: u64,
    pub payload: &'a [u8],
    /// The payload bytes one `myquorum.wal` statement carries.
    pub chunk: usize,
}

/// Runs a logged DDL statement on the primary (after the log holds it) and records it in
/// the primary's `myquorum.wal`. Returns the DDL's answer. `client_clock`: the session
/// fixed `timestamp` itself, so it is left set afterwards. `ran` is called once the DDL
/// itself has answered, before its row's answers are awaited: the row may wait for another
/// session's LOCK TABLES … WRITE (it holds the log table), and what `ran` releases (the
/// DDL gate) must not be held meanwhile, or that session's own next DDL, waiting for the
/// gate, could never reach its UNLOCK TABLES.
pub async fn execute_ddl(
    conn: &mut BackendConn,
    command: &[u8],
    statement: &Statement,
    logged: LoggedDdl<'_>,
    deprecate_eof: bool,
    client_clock: bool,
    ran: impl FnOnce(),
) -> io::Result<(ResponseSummary, Vec<u8>, Vec<TextRow>)> {
    let LoggedDdl {
        shard,
        ts,
        payload,
        chunk,
    } = logged;
    // DDL commits implicitly: a transaction that ran nothing yet ends with it.
    conn.deferred_begin = None;
    conn.stream.queue_packet(
        0,
        &query(&format!(
            "SET timestamp = {}.{:06}",
            statement.timestamp_us / 1_000_000,
            statement.timestamp_us % 1_000_000
        )),
    );
    conn.stream.queue_packet(0, command);
    // Pipelined before the record's row clears them: `IF [NOT] EXISTS` notes are common.
    conn.stream.queue_packet(0, &query("SHOW WARNINGS"));
    // The DDL committed on its own: the record's rows are stored whole or not at all.
    let (_, statements) = whole_or_not_at_all(WalRows::new(shard, [(ts, payload)], true, chunk));
    let mut row_answers = 0;
    for sql in statements {
        conn.stream.queue_packet(0, &query(&sql));
        row_answers += 1;
    }
    // With autocommit off (PyMySQL's default), or after a DDL that failed inside the
    // client's transaction (no implicit commit then), the row would wait in an open
    // transaction that the client may roll back: the primary would then lack the record,
    // and a restart's recovery would run the DDL there a second time (a TRUNCATE deleting
    // what was written since). The client's replicated writes were committed before the
    // DDL; only its reads' snapshot ends with this COMMIT.
    conn.stream.queue_packet(0, &query(OWN_COMMIT));
    // A clock the client fixed is the session's own setting: it stays.
    let reset = if client_clock {
        "DO 0"
    } else {
        "SET timestamp = DEFAULT"
    };
    conn.stream.queue_packet(0, &query(reset));
    conn.timestamp_fixed = false;
    conn.stream.flush().await?;
    read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    let (summary, raw) =
        buffer_response(&mut conn.stream, ResponseKind::ResultSets, deprecate_eof).await?;
    ran();
    let warnings = read_rows(&mut conn.stream, deprecate_eof, usize::from(u16::MAX))
        .await?
        .unwrap_or_default();
    let mut row_failed = None;
    for _ in 0..row_answers {
        let answer =
            read_response(&mut conn.stream, ResponseKind::ResultSets, deprecate_eof).await?;
        row_failed = row_failed.or(answer.error);
    }
    let commit = read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    row_failed = row_failed.or(commit.error);
    read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    if let Some(e) = row_failed {
        // The DDL is done and cannot be undone: without its row the primary would look as
        // if it lacked the record, and a repair would run the DDL there a second time. The
        // rows are stored again (the same bytes: already there is fine).
        let rows = WalRows::new(shard, [(ts, payload)], true, chunk);
        if let Err(again) = store_rows_again(conn, rows, deprecate_eof).await? {
            tracing::error!(shard = shard.0, ts, first = %e.message, again = %again,
                "the primary ran a logged DDL but its myquorum.wal refuses the record's row: \
                 fix what the error names on the primary; until the log is trimmed past this \
                 record, a proxy restart would run the DDL there again");
        }
    }
    Ok((summary, raw, warnings))
}

/// A `myquorum.wal` row statement on a client's connection, freed of the session's time
/// limits. Another session's LOCK TABLES … WRITE holds the log table until UNLOCK TABLES,
/// and a lock_wait_timeout, innodb_lock_wait_timeout or max_statement_time shorter than
/// that (an application's, or a my.cnf's) failed the row: a commit's after its quorum held
/// the record (acknowledged, but the primary lacked it and writes paused until it was
/// repaired), a DDL's after it ran (a restart ran it there again). Found by the mutation
/// test's concurrent session, which sets them to 2 s. The client's own statements keep
/// its limits.
fn without_time_limits(row: &str) -> String {
    format!(
        "SET STATEMENT lock_wait_timeout = 31536000, innodb_lock_wait_timeout = 100000000, \
         max_statement_time = 0 FOR {row}"
    )
}

/// `rows`' statements, inside a transaction of their own when there are several (a record
/// is stored whole or not at all); whether they got one.
fn whole_or_not_at_all(rows: WalRows<'_>) -> (bool, impl Iterator<Item = String> + '_) {
    let own_transaction = rows.len() > 1;
    let statements = own_transaction
        .then(|| "START TRANSACTION".to_string())
        .into_iter()
        .chain(rows.map(|row| without_time_limits(&row)))
        .chain(own_transaction.then(|| OWN_COMMIT.to_string()));
    (own_transaction, statements)
}

/// Runs `rows`' statements one at a time, in a transaction when there are several (rolled
/// back if one fails). `Ok(Err(message))`: the server refused one.
async fn store_rows_again(
    conn: &mut BackendConn,
    rows: WalRows<'_>,
    deprecate_eof: bool,
) -> io::Result<Result<(), String>> {
    let (own_transaction, statements) = whole_or_not_at_all(rows);
    for sql in statements {
        conn.stream.write_packet(0, &query(&sql)).await?;
        let answer =
            read_response(&mut conn.stream, ResponseKind::ResultSets, deprecate_eof).await?;
        if let Some(e) = answer.error {
            if own_transaction {
                rollback_on_primary(conn, false, deprecate_eof).await?;
            }
            return Ok(Err(e.message));
        }
    }
    // Committed even with autocommit off (see `execute_ddl`).
    conn.stream.write_packet(0, &query(OWN_COMMIT)).await?;
    let commit = read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    Ok(commit.error.map_or(Ok(()), |e| Err(e.message)))
}

/// A COM_STMT_EXECUTE body normalized for replay: cursor flags cleared and the parameter
/// types always present (clients send them only when they change).
pub fn normalize_execute(
    payload: &[u8],
    num_params: u16,
    remembered_types: &mut Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    // [0x17][id:4][flags:1][iterations:4] then, with parameters:
    // [null bitmap][new_params_bound:1][types: 2 per param if bound][values]
    let body = payload.get(5..)?;
    let mut out = Vec::with_capacity(body.len() + 2 * num_params as usize);
    out.push(0);
    out.extend_from_slice(body.get(1..5)?);
    if num_params == 0 {
        return Some(out);
    }
    let n = num_params as usize;
    let bitmap_len = n.div_ceil(8);
    let bitmap = body.get(5..5 + bitmap_len)?;
    let bound = *body.get(5 + bitmap_len)?;
    let mut rest = body.get(6 + bitmap_len..)?;
    if bound == 1 {
        let types = rest.get(..2 * n)?;
        *remembered_types = Some(types.to_vec());
        rest = &rest[2 * n..];
    }
    let types = remembered_types.as_ref()?;
    out.extend_from_slice(bitmap);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client and server payloads are decoded from whatever bytes arrive: none may panic a
    /// session's task. Pseudo-random payloads, executes shaped like real ones half the time.
    #[test]
    fn no_payload_panics_the_decoders() {
        use crate::protocol::execute::{add_params, inline_long_data, AddedParam};
        use crate::protocol::handshake::{decode_change_user, decode_client_hello};
        use crate::protocol::relay::PrepareOk;
        use crate::replication::record::Record;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let caps = crate::protocol::handshake::proxy_capabilities(false);
        for round in 0..50_000 {
            let len = (next() % 48) as usize;
            // A quarter of the bytes from length-prefix markers and extremes, so that huge
            // length-encoded values (0xfe + 8 bytes) come up.
            const EDGES: [u8; 8] = [0x00, 0x01, 0x08, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
            let mut payload: Vec<u8> = (0..len)
                .map(|_| match next() {
                    r if r % 4 == 0 => EDGES[(r >> 8) as usize % EDGES.len()],
                    r => r as u8,
                })
                .collect();
            if round % 2 == 0 {
                // [0x17][id][flags][iterations = 1], then bitmap, bound, types, values.
                let mut head = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0];
                head.append(&mut payload);
                payload = head;
            }
            let num_params = (next() % 10) as u16;
            let mut types = None;
            if let Some(body) = normalize_execute(&payload, num_params, &mut types) {
                let long = std::collections::BTreeMap::from([(0u16, vec![1u8, 2])]);
                let _ = inline_long_data(&body, num_params, &long);
                let added = [AddedParam::string(1, "u"), AddedParam::null(num_params)];
                let _ = add_params(&body, num_params, &added);
            }
            let _ = (
                decode_client_hello(&payload),
                decode_change_user(&payload, caps),
            );
            let _ = (OkInfo::decode(&payload), OkInfo::message(&payload, true));
            let _ = (MysqlError::decode(&payload), PrepareOk::decode(&payload));
            let _ = (Record::decode(&payload), single_ok_payload(&payload));
        }
    }

    #[test]
    fn settings_read_from_the_primary_are_carried_where_off_the_baseline() {
        let value = |name: &str| match name {
            "sql_mode" => "STRICT_TRANS_TABLES,ANSI_QUOTES",
            "time_zone" => "+03:00",
            "foreign_key_checks" => "0",
            "auto_increment_increment" => "5",
            "lc_time_names" => "o'dd",
            "character_set_client" | "character_set_connection" => "utf8mb4",
            "collation_connection" => "utf8mb4_general_ci",
            other => crate::sql::replicated_settings::BASELINE
                .iter()
                .find(|(n, _)| *n == other)
                .map_or("?", |(_, v)| v),
        };
        let row: Vec<Option<String>> = names(false).map(|n| Some(value(n).to_string())).collect();
        // Collation 45 is utf8mb4_general_ci: SET NAMES gives the trio.
        assert_eq!(
            settings_from_row(45, &row, false),
            vec![
                "SESSION sql_mode = 'STRICT_TRANS_TABLES,ANSI_QUOTES'",
                "SESSION time_zone = '+03:00'",
                "SESSION foreign_key_checks = 0",
                "SESSION auto_increment_increment = 5",
                "SESSION lc_time_names = 'o''dd'",
            ]
        );
        // Under latin1 (8) it does not: the trio travels too.
        assert_eq!(settings_from_row(8, &row, false).len(), 8);
    }

    #[test]
    fn execute_bodies_always_carry_types() {
        // Two params, types bound (LONGLONG, VAR_STRING), values 7 and "ab".
        let mut first = vec![0x17, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 8, 0, 253, 0];
        first.extend_from_slice(&7u64.to_le_bytes());
        first.extend_from_slice(&[2, b'a', b'b']);
        let mut types = None;
        let n1 = normalize_execute(&first, 2, &mut types).unwrap();
        assert_eq!(n1[0], 0, "cursor flag cleared");
        assert_eq!(types.as_deref(), Some(&[8, 0, 253, 0][..]));
        // The next execute omits the types.
        let mut second = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        second.extend_from_slice(&9u64.to_le_bytes());
        second.extend_from_slice(&[1, b'z']);
        let n2 = normalize_execute(&second, 2, &mut types).unwrap();
        assert_eq!(&n2[..12], &[0, 1, 0, 0, 0, 0, 1, 8, 0, 253, 0, 9]);
        // Without remembered types there is nothing to replay.
        assert!(normalize_execute(&second, 2, &mut None).is_none());
        assert_eq!(
            normalize_execute(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0], 0, &mut None).unwrap(),
            vec![0, 1, 0, 0, 0]
        );
    }
}
