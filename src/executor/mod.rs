//! Runs a route's backend side: gets the connection a route names (the pinned one, or a
//! pooled one) and brings it to the session's state (schema, variables, character set)
//! before the statement is relayed.
//!
//! Owns: connection acquisition and state restore. May import: backend, session, router.

pub mod write;

use crate::backend::conn::{COM_INIT_DB, COM_QUERY, COM_RESET_CONNECTION};
use crate::backend::{BackendAccount, BackendConn, Cluster};
use crate::protocol::relay::ResponseKind;
use crate::protocol::MysqlError;
use crate::router::{ReplicaId, ShardId};
use crate::session::{signature_of, SessionState};
use mysql_common::constants::CapabilityFlags;
use std::io;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("backend {addr} (shard {shard}, {role}) is unreachable: {source}; check that the server is running, then retry")]
    Unreachable {
        addr: String,
        shard: u32,
        role: &'static str,
        source: io::Error,
    },
    /// The server answered but refused a connection at one of its limits: not a sign that
    /// it is down, so no failover is waited for.
    #[error("backend {addr} (shard {shard}, {role}) refused a connection: {error}; raise its max_connections (or the account's limit) or lower the proxy's max_connections")]
    AtLimit {
        addr: String,
        shard: u32,
        role: &'static str,
        error: MysqlError,
    },
    #[error("backend {addr} (shard {shard}, {role}) is marked down by health checks; retry when it is back")]
    Down {
        addr: String,
        shard: u32,
        role: &'static str,
    },
    #[error("{0}")]
    Restore(MysqlError),
    #[error("no such backend: shard {0}, replica {1}")]
    NoSuchBackend(u32, u32),
    /// The server refused the client's own account (`[[users]] backend_user`).
    #[error("{error}")]
    Refused { account: String, error: MysqlError },
}

impl AcquireError {
    pub fn to_mysql(&self) -> MysqlError {
        match self {
            AcquireError::Restore(e) => e.clone(),
            // As a direct connection would hear it: applications back off on 1040.
            AcquireError::AtLimit { error, .. } => error.clone(),
            // As a direct login with that account would be answered, plus what to do.
            AcquireError::Refused { account, error } => MysqlError {
                code: error.code,
                state: error.state,
                message: format!(
                    "{} (the backend account `{account}` this user runs as: create it on every \
                     replica, through the proxy so that it replicates)",
                    error.message
                ),
            },
            // The server refused what the session asked for (an unknown or forbidden default
            // database): its own answer, as a direct connection would get it.
            AcquireError::Unreachable { source, .. } => match source
                .get_ref()
                .and_then(|e| e.downcast_ref::<MysqlError>())
                .filter(|e| matches!(e.code, 1044 | UNKNOWN_DATABASE))
            {
                Some(e) => e.clone(),
                None => MysqlError::new(2003, "HY000", self.to_string()),
            },
            other => MysqlError::new(2003, "HY000", other.to_string()),
        }
    }
}

/// A client's own account refused by the server (missing there, another password): the
/// server's answer, which says nothing about the backend's health.
fn refused_or(
    account: Option<&Arc<BackendAccount>>,
    e: io::Error,
    otherwise: impl FnOnce(io::Error) -> AcquireError,
) -> AcquireError {
    match (
        account,
        e.get_ref().and_then(|x| x.downcast_ref::<MysqlError>()),
    ) {
        (Some(a), Some(refusal)) => AcquireError::Refused {
            account: a.user.clone(),
            error: refusal.clone(),
        },
        _ => otherwise(e),
    }
}

/// A pooled connection for (shard, replica) in `session`'s state.
pub async fn acquire(
    cluster: &Cluster,
    shard: ShardId,
    replica: ReplicaId,
    session: &SessionState,
    caps: CapabilityFlags,
) -> Result<BackendConn, AcquireError> {
    let pool = cluster
        .pool(shard, replica)
        .ok_or(AcquireError::NoSuchBackend(shard.0, replica.0))?;
    let role = cluster.role(shard, replica);
    if !pool.is_up() {
        return Err(AcquireError::Down {
            addr: pool.addr.to_string(),
            shard: shard.0,
            role,
        });
    }
    let unreachable = |source: io::Error| match connection_limit(&source) {
        Some(error) => {
            let e = AcquireError::AtLimit {
                addr: pool.addr.to_string(),
                shard: shard.0,
                role,
                error,
            };
            tracing::warn!("{e}");
            e
        }
        None => AcquireError::Unreachable {
            addr: pool.addr.to_string(),
            shard: shard.0,
            role,
            source,
        },
    };
    let account = session.backend_account.as_ref();
    let without_schema = || pool.connect_for(account, caps, session.collation, None);
    let mut conn = match pool
        .checkout(account, caps, session.collation, session.schema.as_deref())
        .await
    {
        Ok(conn) => conn,
        // Opened with the session's database in the handshake, which another session
        // dropped since (see below).
        Err(e) if is_unknown_database(&e) => without_schema()
            .await
            .map_err(|e| refused_or(account, e, unreachable))?,
        Err(e) => return Err(refused_or(account, e, unreachable)),
    };
    if conn.schema.is_some() && session.schema.is_none() {
        // No command leaves a connection without a default schema: open a fresh one.
        conn = without_schema()
            .await
            .map_err(|e| refused_or(account, e, unreachable))?;
    }
    match restore_state(&mut conn, session).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) if e.code == UNKNOWN_DATABASE && session.schema.is_some() => {
            // The session's database was dropped by another session. MySQL keeps it the
            // session's default (qualified names, USE of another one, BEGIN and COMMIT
            // all work; unqualified names fail): a connection without a default database
            // is the closest a new connection can get, where unqualified names fail with
            // 1046 instead. Refusing every statement with 1049 left the session unusable.
            if conn.schema.is_some() {
                conn = without_schema()
                    .await
                    .map_err(|e| refused_or(account, e, unreachable))?;
            }
            match restore_settings(&mut conn, session).await {
                Ok(Ok(())) => Ok(conn),
                Ok(Err(e)) => Err(AcquireError::Restore(e)),
                Err(e) => Err(unreachable(e)),
            }
        }
        Ok(Err(e)) => Err(AcquireError::Restore(e)),
        Err(e) => Err(unreachable(e)),
    }
}

/// ER_BAD_DB_ERROR: a default database that does not exist (any more).
const UNKNOWN_DATABASE: u16 = 1049;

/// The server's refusal at a connection limit: 1040 (max_connections), 1203
/// (max_user_connections), 1226 (an account's MAX_USER_CONNECTIONS).
fn connection_limit(e: &io::Error) -> Option<MysqlError> {
    e.get_ref()
        .and_then(|x| x.downcast_ref::<MysqlError>())
        .filter(|e| matches!(e.code, 1040 | 1203 | 1226))
        .cloned()
}

/// The server refused a connection's default database: it does not exist.
fn is_unknown_database(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|x| x.downcast_ref::<MysqlError>())
        .is_some_and(|e| e.code == UNKNOWN_DATABASE)
}

/// Whether `conn`'s account may store the log's rows as the write path does in the
/// client's transaction (`EXPLAIN` checks the privileges without running anything). A
/// missing log table (a proxy that never started on this server) is no verdict: `Ok`. Both
/// checks go in one round trip.
pub async fn may_store_log_rows(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> io::Result<Result<(), MysqlError>> {
    const CHECKS: [&str; 2] = [
        "EXPLAIN INSERT INTO myquorum.wal (shard, ts, payload, applied, parts) \
         VALUES (0, 0, '', 1, 0) ON DUPLICATE KEY UPDATE applied = 1",
        "EXPLAIN INSERT IGNORE INTO myquorum.wal_part (shard, ts, part, payload) \
         VALUES (0, 0, 1, '')",
    ];
    for sql in CHECKS {
        let mut p = Vec::with_capacity(1 + sql.len());
        p.push(COM_QUERY);
        p.extend_from_slice(sql.as_bytes());
        conn.stream.queue_packet(0, &p);
    }
    conn.stream.flush().await?;
    let mut refused = None;
    for _ in CHECKS {
        let answer = crate::protocol::relay::read_response(
            &mut conn.stream,
            ResponseKind::ResultSets,
            deprecate_eof,
        )
        .await?;
        refused = refused.or(answer
            .error
            .filter(|e| matches!(e.code, 1142 | 1143 | 1044)));
    }
    Ok(refused.map_or(Ok(()), Err))
}

/// Statements one connection keeps prepared at most; beyond, they are all closed (an
/// application with endless distinct statements must not exhaust the server's
/// max_prepared_stmt_count through pooled connections).
const STATEMENTS_PER_CONNECTION: usize = 256;

const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_CLOSE: u8 = 0x19;

/// The server id of `sql` prepared on `conn`, preparing it there first when this connection
/// has not (its answer is read here, not relayed). A server error (the statement cannot be
/// prepared there) comes back as `Ok(Err(..))`.
/// The value of `SELECT <expression>` on `conn` (the session's connection, so its user
/// variables and settings apply): how the proxy learns the text a PREPARE or EXECUTE
/// IMMEDIATE names, decoded by the server itself (escapes, character sets, `@var`).
pub async fn select_value(
    conn: &mut BackendConn,
    expression: &str,
    deprecate_eof: bool,
) -> io::Result<Result<Option<String>, MysqlError>> {
    let mut p = Vec::with_capacity(8 + expression.len());
    p.push(COM_QUERY);
    p.extend_from_slice(b"SELECT ");
    p.extend_from_slice(expression.as_bytes());
    conn.stream.write_packet(0, &p).await?;
    Ok(
        crate::protocol::resultset::read_first_row(&mut conn.stream, deprecate_eof)
            .await?
            .map(|row| row.and_then(|r| r.into_iter().next().flatten())),
    )
}

/// Every row of `sql`'s result on `conn` (the session's connection), read here rather than
/// relayed; a server error comes back as `Ok(Err(..))`.
pub async fn query_rows(
    conn: &mut BackendConn,
    sql: &str,
    deprecate_eof: bool,
) -> io::Result<Result<Vec<crate::protocol::resultset::TextRow>, MysqlError>> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_QUERY);
    p.extend_from_slice(sql.as_bytes());
    conn.stream.write_packet(0, &p).await?;
    crate::protocol::resultset::read_rows(&mut conn.stream, deprecate_eof, usize::MAX).await
}

pub async fn ensure_prepared(
    conn: &mut BackendConn,
    sql: &Arc<str>,
    deprecate_eof: bool,
) -> io::Result<Result<u32, MysqlError>> {
    if let Some(id) = conn.prepared_id(sql) {
        return Ok(Ok(id));
    }
    make_room(conn);
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_STMT_PREPARE);
    p.extend_from_slice(sql.as_bytes());
    conn.stream.queue_packet(0, &p);
    conn.stream.flush().await?;
    let answer = crate::protocol::relay::read_response(
        &mut conn.stream,
        ResponseKind::Prepare,
        deprecate_eof,
    )
    .await?;
    match (answer.prepare, answer.error) {
        (Some(ok), _) => {
            conn.remember_prepared(sql.clone(), ok.statement_id);
            Ok(Ok(ok.statement_id))
        }
        (None, Some(e)) => Ok(Err(e)),
        (None, None) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no answer to COM_STMT_PREPARE",
        )),
    }
}

/// Records that a client's COM_STMT_PREPARE, relayed to `conn`, prepared `sql` there as
/// `id`. A text already prepared here (under this schema) keeps its first id and the new one
/// is closed: clients that prepare per call (Go's database/sql, Connector/Python's
/// executemany without bulk) would otherwise leave one more server statement per call,
/// until the server's max_prepared_stmt_count refuses every PREPARE on it. The first is
/// kept rather than the new one because an open cursor may live on it.
pub fn keep_prepared(conn: &mut BackendConn, sql: Arc<str>, id: u32) {
    if conn.prepared_id(&sql).is_some() {
        queue_close(conn, id);
        return;
    }
    make_room(conn);
    conn.remember_prepared(sql, id);
}

/// Closes every statement prepared on `conn` once it holds `STATEMENTS_PER_CONNECTION`
/// (queued: COM_STMT_CLOSE has no answer, so they travel with the next command).
fn make_room(conn: &mut BackendConn) {
    if conn.prepared_count() < STATEMENTS_PER_CONNECTION {
        return;
    }
    let ids: Vec<u32> = conn
        .statements
        .drain()
        .flat_map(|(_, v)| v.into_iter().map(|(_, id)| id))
        .collect();
    for id in ids {
        queue_close(conn, id);
    }
}

fn queue_close(conn: &mut BackendConn, id: u32) {
    let mut close = [COM_STMT_CLOSE, 0, 0, 0, 0];
    close[1..].copy_from_slice(&id.to_le_bytes());
    conn.stream.queue_packet(0, &close);
}

/// Applies the session's schema and variables to `conn` where they differ.
pub async fn restore_state(
    conn: &mut BackendConn,
    session: &SessionState,
) -> io::Result<Result<(), MysqlError>> {
    if let Err(e) = restore_settings(conn, session).await? {
        return Ok(Err(e));
    }
    match &session.schema {
        Some(db) if conn.schema.as_deref() != Some(db.as_str()) => select_database(conn, db).await,
        _ => Ok(Ok(())),
    }
}

/// Selects `db` on `conn` (`COM_INIT_DB`) and records it there. Also where the connection
/// has it selected already: the server keeps a database that was dropped selected on a
/// connection that had it, so only selecting it again tells whether it still exists.
pub async fn select_database(
    conn: &mut BackendConn,
    db: &str,
) -> io::Result<Result<(), MysqlError>> {
    let selected = conn.simple_command(COM_INIT_DB, db.as_bytes()).await?;
    if selected.is_ok() {
        conn.schema = Some(db.to_string());
    }
    Ok(selected.map(|_| ()))
}

/// Applies the session's variables (not its schema) to `conn` where they differ.
async fn restore_settings(
    conn: &mut BackendConn,
    session: &SessionState,
) -> io::Result<Result<(), MysqlError>> {
    if conn.state_signature != session.signature() {
        let base = signature_of(conn.base_collation, &[]);
        if conn.state_signature != base {
            if let Err(e) = conn.simple_command(COM_RESET_CONNECTION, &[]).await? {
                return Ok(Err(e));
            }
            conn.state_signature = base;
        }
        if let Some(stmt) = session.restore_statement(conn.base_collation) {
            if let Err(e) = conn.simple_command(COM_QUERY, stmt.as_bytes()).await? {
                return Ok(Err(e));
            }
        }
        conn.state_signature = session.signature();
    }
    Ok(Ok(()))
}
