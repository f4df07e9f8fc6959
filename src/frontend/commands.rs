//! The command loop of one client session: dispatch per command, statement routing, the
//! pinned-connection slot, and relaying of backend responses.
//!
//! Owns: `ClientSession`. May import: protocol, sql, router, session, executor, backend
//! (connection handles only), admin, context.

use super::kill::{self, BackendThread, SessionEntry};
use super::writes::{self, WriteClass};
use crate::admin;
use crate::backend::BackendConn;
use crate::context::{CallCheck, ProxyContext};
use crate::executor::write::{normalize_execute, queue_deferred_begin, queue_timestamp_reset};
use crate::executor::{self, ensure_prepared, AcquireError};
use crate::protocol::execute::{inline_long_data, InlineError};
use crate::protocol::handshake::{decode_change_user, ChangeUser};
use crate::protocol::message::{encode_ok, encode_terminator, OkInfo};
use crate::protocol::packet::PacketTooLarge;
use crate::protocol::relay::{
    read_response, relay_response, relay_response_showing, RelayError, ResponseKind,
    ResponseSummary, ShownStatus,
};
use crate::protocol::resultset::ColumnKind;
use crate::protocol::{MysqlError, PacketStream};
use crate::replication::ddl_order::WriterGuard;
use crate::router::{self, ReplicaId, Route, SessionView, ShardId, Target};
use crate::session::diagnostics::Diagnostics;
use crate::session::{OutsideRead, PinReason, PinnedFacts, PreparedStatement, SessionState};
use crate::sql::binlog::BinlogStatement;
use crate::sql::classify::CommitEnd;
use crate::sql::prepare::{self, SqlPrepare};
use crate::sql::rewrite::ShownIsolation;
use crate::sql::{Classified, Flags, Kind, SessionChange};
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_REFRESH: u8 = 0x07;
const COM_SHUTDOWN: u8 = 0x08;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_KILL: u8 = 0x0C;
const COM_PING: u8 = 0x0E;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1A;
const COM_SET_OPTION: u8 = 0x1B;
const COM_STMT_FETCH: u8 = 0x1C;
const COM_RESET_CONNECTION: u8 = 0x1F;

/// The connection a session is pinned to (or borrowed for one statement).
pub(super) struct Held {
    shard: ShardId,
    pub(super) replica: ReplicaId,
    pub(super) conn: BackendConn,
    pub(super) down: watch::Receiver<u64>,
}

/// What ended a command with a backend involved.
pub(super) enum Failure {
    /// Answer the client with this error and keep serving.
    Answer(MysqlError),
    /// The backend connection broke: answer, then close the client if it was pinned.
    BackendLost(MysqlError),
    /// The client side failed: end the session.
    Client(io::Error),
}

pub struct ClientSession {
    pub(super) ctx: Arc<ProxyContext>,

    pub(super) caps: CapabilityFlags,
    pub(super) deprecate_eof: bool,
    nonce: [u8; 20],
    /// The client connection is TLS or a local socket (a private transport).
    secure: bool,
    /// The client connection's TLS session, if it is TLS (its `Ssl_version`, `Ssl_cipher`).
    client_tls: Option<super::tls::ClientTls>,
    pub(super) held: Option<Held>,
    /// The last statement sent to a backend, how it was classified and routed (for EXPLAIN
    /// LAST STATEMENT and SHOW PROXY SESSION).
    pub last_route: Option<LastStatement>,
    /// The backend under this session's open transaction was lost while the client was idle:
    /// its next statement (unless ROLLBACK) hears that the transaction was rolled back.
    transaction_lost: bool,
    /// The backend connection holding this session's state (temporary tables, locks, user
    /// variables, …) was lost while the client was idle: the next command that expects an
    /// answer hears this error, then the connection closes. A COM_RESET_CONNECTION or
    /// COM_CHANGE_USER, which drop that state anyway, goes on as usual.
    state_lost: Option<MysqlError>,
    /// Held while this session has a write transaction open on its shard's primary (or an
    /// autocommit write running): a DDL is sequenced after it (`replication::ddl_order`).
    pub(super) open_write: Option<WriterGuard>,
    /// Reads routed so far and a per-session seed: spread reads over equally fast replicas
    /// (`router::read_spread`).
    reads_routed: u32,
    spread_seed: u32,
    /// Each shard's log end when the session started or was last reset: its reads see
    /// every write acknowledged before (`router::ReadView::connected_at`).
    connected_at: Vec<(router::ShardId, u64)>,
    /// This session in the registry KILL uses.
    registry_entry: Arc<SessionEntry>,
    /// Where the current command's last statement went (None: the proxy answered it), for
    /// the query digest statistics.
    pub(super) served: Option<crate::digests::Served>,
    /// The last `hold_for` failed for a reason of this session's, not of the backend's
    /// health: the server refused the session's own account, or its state (a schema) could
    /// not be restored there. A replica read then moves to the primary without taking the
    /// replica out.
    refused_here: bool,
    /// Whether this session's client answers fast enough to poll for (`busy_poll`).
    client_poll: super::busy_poll::ClientPoll,
}

/// How long to poll for the answer to a read the current session sends now (`busy_poll`).
fn answer_poll(ctx: &ProxyContext) -> Option<std::time::Duration> {
    super::busy_poll::answer_budget(ctx.live.busy_poll_us())
}

/// Writes of a session whose backend account may not store the log's rows.
fn log_grants_missing(account: &str, refused: &MysqlError) -> MysqlError {
    MysqlError::new(
        1142,
        "42000",
        format!(
            "myquorum: the backend account `{account}` this user runs as may not store the \
             log's rows on the primary ({}), so its writes cannot be replicated; grant it \
             INSERT, UPDATE, SELECT (applied) ON myquorum.wal and INSERT ON myquorum.wal_part \
             (through the proxy, so that every replica has the grant), then log in again",
            refused.message
        ),
    )
}

/// Whether a session statement may set an isolation level (what `parse_set` made of it):
/// only those are lexed again to raise a weak level, not every `SET autocommit = 0`.
pub(super) fn sets_isolation(c: &Classified) -> bool {
    match &c.session {
        // A next-transaction `SET TRANSACTION ISOLATION LEVEL …` records nothing.
        Some(SessionChange::Vars(v)) => v.is_empty() || v.iter().any(|(k, _)| k == "tx_isolation"),
        Some(SessionChange::Global) => true,
        Some(other) => other.is_unreplayable(),
        None => false,
    }
}

/// How much of a statement `SHOW PROXY PROCESSLIST` shows.
const PROCESSLIST_INFO_BYTES: usize = 1024;

/// A command's name as the server's processlist gives it.
fn command_name(command: u8) -> &'static str {
    match command {
        COM_QUERY => "Query",
        COM_PING => "Ping",
        COM_INIT_DB => "Init DB",
        COM_STMT_PREPARE => "Prepare",
        COM_STMT_EXECUTE => "Execute",
        COM_STMT_CLOSE => "Close stmt",
        COM_STMT_RESET => "Reset stmt",
        COM_STMT_FETCH => "Fetch",
        COM_CHANGE_USER => "Change user",
        COM_RESET_CONNECTION => "Reset connection",
        COM_REFRESH => "Refresh",
        COM_PROCESS_KILL => "Kill",
        _ => "Command",
    }
}

/// Why a COM_REFRESH (`mariadb-admin refresh`, `mysql_refresh()`) is refused: resetting a
/// replication stream (REFRESH_SLAVE, REFRESH_MASTER) would act on one server outside the
/// proxy's log, as RESET SLAVE/MASTER would. Its other flags (tables, logs, hosts, threads,
/// privileges, status) are the server's to carry out.
fn refresh_refusal(flags: u8) -> Option<MysqlError> {
    const REFRESH_SLAVE: u8 = 64;
    const REFRESH_MASTER: u8 = 128;
    (flags & (REFRESH_SLAVE | REFRESH_MASTER) != 0).then(|| {
        MysqlError::not_supported(
            "COM_REFRESH of the replication state (REFRESH_SLAVE, REFRESH_MASTER) is not \
             supported through the proxy, which replicates itself; run it on a server directly",
        )
    })
}

pub(super) fn malformed() -> MysqlError {
    MysqlError::new(1835, "HY000", "Malformed communication packet")
}

fn unknown_stmt(id: u32, op: &str) -> MysqlError {
    MysqlError::new(
        1243,
        "HY000",
        format!("Unknown prepared statement handler ({id}) given to {op}"),
    )
}

impl ClientSession {
    pub fn new(
        ctx: Arc<ProxyContext>,
        caps: CapabilityFlags,
        nonce: [u8; 20],
        (secure, client_tls): (bool, Option<super::tls::ClientTls>),
        registry_entry: Arc<SessionEntry>,
    ) -> Self {
        let connected_at = ctx.log_ends();
        ClientSession {
            ctx,
            registry_entry,
            deprecate_eof: caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
            caps,
            nonce,
            secure,
            client_tls,
            held: None,
            last_route: None,
            transaction_lost: false,
            state_lost: None,
            client_poll: Default::default(),
            open_write: None,
            reads_routed: 0,
            spread_seed: rand::random(),
            connected_at,
            served: None,
            refused_here: false,
        }
    }

    /// The session's connection id (the handshake's; KILL and SHOW PROCESSLIST use it).
    pub fn connection_id(&self) -> u32 {
        self.registry_entry.id
    }

    /// How this client reads the result sets the proxy builds itself.
    pub(super) fn format(&self) -> crate::protocol::resultset::ClientFormat {
        crate::protocol::resultset::ClientFormat::of(self.caps)
    }

    /// Puts a connection this session took back in its pool, unless a KILL QUERY may still
    /// reach it (then it is closed: the late KILL would stop another session's statement).
    fn check_in(&self, shard: ShardId, replica: ReplicaId, conn: BackendConn) {
        if !self.registry_entry.may_pool(conn.hello.connection_id) {
            return;
        }
        if let Some(pool) = self.ctx.cluster.pool(shard, replica) {
            pool.checkin(conn);
        }
    }

    /// At login: the default shard's primary answers and the requested schema exists. The
    /// connection used for the check goes back to the pool.
    pub async fn check_login(&mut self, session: &mut SessionState) -> Result<(), MysqlError> {
        let shard = router::DEFAULT_SHARD;
        // Logins during an election wait for it, as statements do.
        let mut primary = match self.primary_now(shard).await {
            Ok(p) => p,
            Err(Failure::Answer(e) | Failure::BackendLost(e)) => return Err(e),
            Err(Failure::Client(e)) => return Err(MysqlError::new(2013, "HY000", e.to_string())),
        };
        let mut acquired =
            executor::acquire(&self.ctx.cluster, shard, primary, session, self.caps).await;
        if matches!(
            acquired,
            Err(AcquireError::Down { .. } | AcquireError::Unreachable { .. })
        ) {
            if let Some(next) = self.next_primary(shard, primary).await {
                primary = next;
                acquired =
                    executor::acquire(&self.ctx.cluster, shard, primary, session, self.caps).await;
            }
        }
        let mut conn = acquired.map_err(|e| e.to_mysql())?;
        // The login reached the primary: a session starts in its global sql_mode.
        session.no_backslash_escapes =
            self.primary_starts_without_backslash_escapes(shard, Some(primary));
        if let Some(db) = session.schema.as_deref() {
            if conn.schema.as_deref() != Some(db) {
                // `acquire` opens a connection without a default database where the
                // session's was dropped; at login it was never there: the server's answer.
                return Err(MysqlError::new(
                    1049,
                    "42000",
                    format!("Unknown database '{db}'"),
                ));
            }
            if self.ctx.databases_dropped.load(Ordering::Relaxed) {
                // A pooled connection keeps a database dropped since selected, as the server
                // does: only selecting it again says whether it still exists.
                match executor::select_database(&mut conn, db).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(MysqlError::new(2013, "HY000", e.to_string())),
                }
            }
        }
        if let Some(account) = session.backend_account.clone() {
            // The record's log row goes into the primary in the client's own transaction, so
            // under its account: one that may not write it gets its writes refused up front
            // (a refused row would pause the shard's writes while the primary is repaired).
            match executor::may_store_log_rows(&mut conn, self.deprecate_eof).await {
                Ok(verdict) => {
                    session.log_refusal =
                        verdict.err().map(|e| log_grants_missing(&account.user, &e))
                }
                Err(e) => return Err(MysqlError::new(2013, "HY000", e.to_string())),
            }
        }
        self.check_in(shard, primary, conn);
        Ok(())
    }

    pub async fn command_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
    ) -> io::Result<()> {
        let killed = self.registry_entry.killed.clone();
        // One timer for the session's idle limit, re-armed only when it fires early (the
        // client was busy) or the limit got shorter: arming one per command cost ~3 % of
        // point-select throughput.
        let mut last_command = tokio::time::Instant::now();
        let mut idle_timer = Box::pin(tokio::time::sleep(self.idle_limit(session)));
        loop {
            if killed.is_cancelled() {
                return self.end_killed(client, session).await;
            }
            let idle_limit = self.idle_limit(session);
            let idle_due = last_command + idle_limit;
            if idle_due < idle_timer.deadline() {
                idle_timer.as_mut().reset(idle_due);
            }
            self.client_poll
                .before_wait(client, self.ctx.live.busy_poll_us(), &self.ctx.counters);
            let read = match self.held.as_mut() {
                Some(h) => {
                    tokio::select! {
                        r = client.read_packet() => Some(r),
                        () = &mut idle_timer => None,
                        _ = killed.cancelled() => continue,
                        _ = h.down.changed() => {
                            self.pinned_backend_lost(session,
                                "marked down by health checks, or no longer the primary after a switchover or an election");
                            continue;
                        }
                        _ = h.conn.closed() => {
                            if killed.is_cancelled() {
                                continue;
                            }
                            let (shard, replica) = (h.shard, h.replica);
                            let (addr, thread) = (h.conn.addr.clone(), h.conn.hello.connection_id);
                            if self.server_answers(shard, replica, session).await {
                                // The server ended this one connection (its wait_timeout, a
                                // KILL) and so the session: the client's own connection ends
                                // too, as a direct one would, so its pool or its reconnect
                                // logic sees what happened.
                                tracing::info!(backend = %addr, thread, pinned = %pin_list(session),
                                    "the server closed this pinned session's connection (its wait_timeout, or a KILL); closing the client's too");
                                return self.end_session(client, session).await;
                            }
                            self.pinned_backend_lost(session, "the server went away");
                            continue;
                        }
                    }
                }
                None => tokio::select! {
                    r = client.read_packet() => Some(r),
                    () = &mut idle_timer => None,
                    _ = killed.cancelled() => continue,
                },
            };
            if killed.is_cancelled() {
                // A command that arrived with the KILL (select! picks among ready branches
                // at random) is not run: the KILL was answered before it was sent.
                return self.end_killed(client, session).await;
            }
            let Some(read) = read else {
                if last_command.elapsed() >= idle_limit {
                    return self.end_idle(client, session, idle_limit).await;
                }
                idle_timer.as_mut().reset(idle_due);
                continue;
            };
            last_command = tokio::time::Instant::now();
            let _at_work = self.client_poll.at_work();
            let pkt = match read {
                Ok(p) => p,
                Err(e) => {
                    let Some(too_large) =
                        e.get_ref().and_then(|i| i.downcast_ref::<PacketTooLarge>())
                    else {
                        return Err(e);
                    };
                    let next_seq = too_large.last_seq.wrapping_add(1);
                    let err = MysqlError::new(
                        1153,
                        "08S01",
                        format!(
                            "Got a packet bigger than 'max_allowed_packet' bytes ({}); raise proxy.max_packet_size",
                            self.ctx.config.proxy.max_packet_size
                        ),
                    );
                    tracing::info!(error = %e, "client packet over the size cap; closing");
                    client.write_packet(next_seq, &err.encode()).await?;
                    return Ok(());
                }
            };
            let seq = pkt.seq.wrapping_add(1);
            client.expect_answer_at(seq);
            tracing::trace!(len = pkt.payload.len(), command = ?pkt.payload.first(), "command");
            let Some(&command) = pkt.payload.first() else {
                client.write_packet(seq, &malformed().encode()).await?;
                continue;
            };
            if let Some(lost) = self.state_lost.take() {
                match command {
                    COM_RESET_CONNECTION | COM_CHANGE_USER => {}
                    COM_QUIT => return Ok(()),
                    // No answer is expected, so none can carry the error.
                    COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => {
                        self.state_lost = Some(lost);
                        continue;
                    }
                    _ => {
                        client.write_packet(seq, &lost.encode()).await?;
                        return self.end_session(client, session).await;
                    }
                }
            }
            // Only commands that expect an answer hear it.
            if self.transaction_lost && matches!(command, COM_QUERY | COM_STMT_EXECUTE) {
                self.transaction_lost = false;
                if !self.is_rollback(session, command, &pkt.payload) {
                    client
                        .write_packet(seq, &transaction_rolled_back().encode())
                        .await?;
                    continue;
                }
            }
            let out_before = client.bytes_out();
            // State the session keeps on its backend connection (temporary tables, table
            // locks, variables, SQL prepared statements), beyond a transaction.
            let held_state = self.held.is_some() && !survivable(session);
            // What the processlist shows: the command (a query's text, set by com_query from
            // the text it decodes anyway).
            if command != COM_QUERY {
                self.registry_entry.begin_command(command_name(command));
            }
            // Kept diagnostics answer only the very next statement.
            let diagnostics = session.diagnostics.take();
            if !matches!(
                command,
                COM_QUERY
                    | COM_STMT_PREPARE
                    | COM_STMT_EXECUTE
                    | COM_PING
                    | COM_STMT_CLOSE
                    | COM_STMT_RESET
            ) {
                // Only statements that keep it say so (`SessionState::server_txn_fresh`).
                session.server_txn_fresh = false;
            }
            if !session.in_transaction && session.pending.is_empty() {
                // This command may start a transaction: its snapshot will include at least
                // what the primary committed by now (`replication::certify`).
                if let Some(log) = self.ctx.replication.shard(crate::router::DEFAULT_SHARD) {
                    session.snapshot_mark = log.snapshot_floor();
                }
            }
            let outcome = match command {
                COM_QUIT => {
                    self.drop_held(session);
                    return Ok(());
                }
                COM_QUERY => {
                    self.com_query(client, session, &pkt.payload, diagnostics)
                        .await
                }
                COM_PING => self.reply_ok(client, session, seq).await,
                COM_INIT_DB => {
                    let db = String::from_utf8_lossy(&pkt.payload[1..]).into_owned();
                    let c = Classified {
                        kind: Kind::Session,
                        statements: 1,
                        flags: Flags::empty(),
                        tables: Vec::new(),
                        targets: Vec::new(),
                        session: Some(SessionChange::Schema(db)),
                        proxy_command: None,
                        hint: None,
                    };
                    self.forward(client, session, &c, &pkt.payload, ResponseKind::Single)
                        .await
                }
                COM_FIELD_LIST | COM_STATISTICS => {
                    // Classified like the statements they stand for (cached: no parse per call).
                    let (text, kind) = if command == COM_FIELD_LIST {
                        ("SHOW COLUMNS FROM t", ResponseKind::FieldList)
                    } else {
                        ("SHOW STATUS", ResponseKind::Single)
                    };
                    let c = self.ctx.classify_cache.classify(text);
                    self.forward(client, session, &c, &pkt.payload, kind).await
                }
                COM_SET_OPTION => {
                    self.com_set_option(client, session, &pkt.payload, seq)
                        .await
                }
                COM_RESET_CONNECTION => self.com_reset_connection(client, session, seq).await,
                COM_CHANGE_USER => {
                    match self
                        .com_change_user(client, session, &pkt.payload, seq)
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => return Ok(()),
                        Err(e) => Err(Failure::Client(e)),
                    }
                }
                COM_STMT_PREPARE => {
                    self.com_stmt_prepare(client, session, &pkt.payload, diagnostics)
                        .await
                }
                COM_STMT_EXECUTE => {
                    // Counted under its statement's digest, as a text query of that shape.
                    let executed = pkt
                        .payload
                        .get(1..5)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .and_then(|id| session.prepared.get(&id))
                        .map(|p| (p.digest, p.sql.clone()));
                    let started = std::time::Instant::now();
                    self.served = None;
                    let outcome = self
                        .com_stmt(client, session, pkt.payload, diagnostics)
                        .await;
                    if let Some((digest, sql)) = executed {
                        self.count_digest(digest, &sql, started);
                    }
                    outcome
                }
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH => {
                    self.com_stmt(client, session, pkt.payload, diagnostics)
                        .await
                }
                COM_REFRESH => self.com_refresh(client, session, &pkt.payload).await,
                // mysql_kill() (PyMySQL's `kill()`): KILL CONNECTION <id> as a command.
                COM_PROCESS_KILL => match pkt.payload.get(1..5) {
                    Some(id) => {
                        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                        self.kill(client, session, kill::Kill::Connection(id)).await
                    }
                    None => Err(Failure::Answer(malformed())),
                },
                COM_SHUTDOWN => Err(Failure::Answer(writes::shutdown_refused())),
                _ => Err(Failure::Answer(MysqlError::new(
                    1047,
                    "08S01",
                    "Unknown command",
                ))),
            };
            self.registry_entry.end_command(session.schema.as_deref());
            if session.pending.is_empty() {
                // No write transaction open any more (committed, rolled back or lost).
                self.open_write = None;
            }
            match outcome {
                Ok(()) => {}
                Err(Failure::Answer(e)) => {
                    client.write_packet(seq, &e.encode()).await?;
                }
                Err(Failure::BackendLost(e)) => {
                    self.ctx
                        .counters
                        .backend_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let was_pinned = session.is_pinned();
                    tracing::warn!(error = %e, pinned = was_pinned, "backend connection lost during a command");
                    // Only when the client heard nothing of this answer can it be told in one
                    // error packet and go on.
                    if was_pinned && survivable(session) && client.bytes_out() == out_before {
                        // Only a transaction and prepared statements were on it: nothing of
                        // the statement or its transaction committed (a write that reached the
                        // log is acknowledged by the write path instead), so the client hears
                        // the code it retries on; statements are prepared again where the
                        // session goes next.
                        self.detach_lost_backend(session);
                        client
                            .write_packet(seq, &transaction_rolled_back().encode())
                            .await?;
                        continue;
                    }
                    client.write_packet(seq, &e.encode()).await?;
                    if was_pinned {
                        // The transaction, temporary tables or variables it held are gone.
                        return Ok(());
                    }
                }
                Err(Failure::Client(e)) => return Err(e),
            }
            if held_state && self.held.is_none() && !survivable(session) {
                // The write path let the connection go after its record was logged (the
                // primary's COMMIT failed, or the quorum wait timed out): the client heard
                // the commit, but what the session kept there is gone. Going on with a new
                // connection would run its next statements without them (a write to a
                // temporary table would reach the regular table it hid, unlogged), so the
                // session ends, as a server's connection does when it dies.
                tracing::warn!(user = %session.user, state = %pin_list(session),
                    "the session's backend connection was lost after its write was logged; \
                     closing the client connection (its temporary tables, locks and variables \
                     are gone): reconnect");
                return self.end_session(client, session).await;
            }
        }
    }

    /// Ends a session another client killed (`KILL CONNECTION`): its backend connection is
    /// closed, not pooled (the server rolls back what it held), and so is the client's, as
    /// the server does with a killed connection.
    async fn end_killed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
    ) -> io::Result<()> {
        tracing::info!(user = %session.user, "session killed by KILL CONNECTION");
        self.end_session(client, session).await
    }

    /// Ends the session without an answer: its backend connection is dropped (an open
    /// transaction with it) and the client's connection closed.
    /// How long the client may be idle: the session's `wait_timeout` when it set one, else
    /// `proxy.wait_timeout_s`.
    fn idle_limit(&self, session: &SessionState) -> std::time::Duration {
        let seconds = match session.wait_timeout() {
            Some(set) => set.clamp(1, crate::config::MAX_WAIT_TIMEOUT_S as i64) as u64,
            None => self.ctx.live.wait_timeout_s(),
        };
        std::time::Duration::from_secs(seconds)
    }

    /// The client sent nothing for its `wait_timeout`: its connection is closed, as the
    /// server closes one (an open transaction rolls back with the backend connection).
    async fn end_idle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        limit: std::time::Duration,
    ) -> io::Result<()> {
        tracing::info!(user = %session.user, idle_s = limit.as_secs(), in_transaction = session.in_transaction,
            "client idle for its wait_timeout; closing its connection, as the server would");
        self.ctx
            .counters
            .idle_timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.end_session(client, session).await
    }

    async fn end_session<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
    ) -> io::Result<()> {
        self.held = None;
        session.reset_transaction();
        let _ = client.shutdown().await;
        Ok(())
    }

    /// `KILL [QUERY] <proxy connection id>`: stops the statement that session is running on
    /// its backend and, for KILL CONNECTION, ends the session. Answers OK, as the server does
    /// (also when the session was idle and there was nothing to stop).
    async fn kill<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        kill: kill::Kill,
    ) -> Result<(), Failure> {
        let plan = self
            .ctx
            .sessions
            .plan(kill, &session.user)
            .map_err(Failure::Answer)?;
        if let Some(target) = plan.stop {
            let Some(pool) = self.ctx.cluster.pool(target.shard, target.replica) else {
                return Err(Failure::Answer(kill::unknown_thread(target.thread)));
            };
            let sent = match pool
                .checkout(None, self.caps, session.collation, None)
                .await
            {
                Ok(mut conn) => {
                    let sql = format!("KILL QUERY {}", target.thread);
                    let answer = conn
                        .simple_command(crate::backend::conn::COM_QUERY, sql.as_bytes())
                        .await;
                    if matches!(answer, Ok(Ok(_))) {
                        pool.checkin(conn);
                    }
                    answer.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match sent {
                // 1094: the statement and its connection ended meanwhile.
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.code == 1094 => {}
                Ok(Err(e)) => return Err(Failure::Answer(e)),
                Err(e) => {
                    return Err(Failure::Answer(MysqlError::new(
                        2013,
                        "HY000",
                        format!("could not reach {} to stop the statement: {e}", pool.addr),
                    )))
                }
            }
            tracing::info!(backend = %pool.addr, thread = target.thread, ?kill, "KILL: stopped a session's statement");
        }
        if plan.end_session && self.registry_entry.killed.is_cancelled() {
            // KILL of one's own connection: the server answers so, then closes it.
            return Err(Failure::Answer(MysqlError::new(
                1927,
                "70100",
                "Connection was killed",
            )));
        }
        self.reply_ok(client, session, 1).await
    }

    /// Forgets a backend connection that is gone: the session's transaction with it (returns
    /// whether there was one) and its prepared statements' server ids (prepared again on
    /// next use).
    fn detach_lost_backend(&mut self, session: &mut SessionState) -> bool {
        self.held = None;
        let in_transaction = session.in_transaction || !session.pending.is_empty();
        session.reset_transaction();
        session.unpin(PinReason::StatementAffinity);
        in_transaction
    }

    /// The pinned backend connection is gone while the session was idle (`why`). A session
    /// whose state lived only in a transaction goes on with a new connection (the transaction
    /// is reported rolled back at its next statement); any other hears an error at its next
    /// command and is closed then (`state_lost`). An error written while the client waits
    /// for nothing arrives with sequence 0 before its next command's answer: mysql_async and
    /// go-sql-driver then report packets out of sync instead of the error.
    fn pinned_backend_lost(&mut self, session: &mut SessionState, why: &str) {
        let Some(addr) = self.held.as_ref().map(|h| h.conn.addr.clone()) else {
            return;
        };
        if survivable(session) {
            self.transaction_lost |= self.detach_lost_backend(session);
            tracing::info!(backend = %addr, reason = why, transaction_lost = self.transaction_lost,
                "pinned backend gone; the session continues on a new connection");
            return;
        }
        let pinned = pin_list(session);
        self.detach_lost_backend(session);
        tracing::warn!(backend = %addr, reason = why, %pinned,
            "pinned backend gone; the session's next command hears so and its connection closes");
        self.state_lost = Some(MysqlError::new(
            2013,
            "HY000",
            format!(
                "Lost connection to backend {addr} ({why}); this session's state ({pinned}) is gone; reconnect"
            ),
        ));
    }

    /// Whether a backend takes new connections (one is opened and pooled): tells a server
    /// that ended one connection from one that went away.
    async fn server_answers(
        &self,
        shard: ShardId,
        replica: ReplicaId,
        session: &SessionState,
    ) -> bool {
        let Some(pool) = self.ctx.cluster.pool(shard, replica) else {
            return false;
        };
        if !pool.is_up() {
            return false;
        }
        match pool.connect(self.caps, session.collation, None).await {
            Ok(conn) => {
                pool.checkin(conn);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a command is ROLLBACK (text or prepared).
    fn is_rollback(&self, session: &SessionState, command: u8, payload: &[u8]) -> bool {
        match command {
            COM_QUERY => {
                let sql = crate::sql::lexer::offset_preserving_text(&payload[1..]);
                self.ctx.classify_cache.classify(&sql).kind == Kind::Rollback
            }
            COM_STMT_EXECUTE => payload
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .and_then(|id| session.prepared.get(&id))
                .is_some_and(|p| p.classified.kind == Kind::Rollback),
            _ => false,
        }
    }

    async fn reply_ok<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &SessionState,
        seq: u8,
    ) -> Result<(), Failure> {
        let ok = encode_ok(
            OkInfo {
                status: session.status_flags(),
                ..OkInfo::default()
            },
            b"",
        );
        client
            .write_packet(seq, &ok)
            .await
            .map_err(Failure::Client)?;
        Ok(())
    }

    async fn com_query<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: &[u8],
        diagnostics: Option<Diagnostics>,
    ) -> Result<(), Failure> {
        self.ctx.counters.statements.fetch_add(1, Ordering::Relaxed);
        // Same byte offsets as the payload: what runs and what is logged is cut from the
        // client's bytes, never from this text.
        let mut text = crate::sql::lexer::offset_preserving_text(&payload[1..]);
        if session.no_backslash_escapes && text.contains('\\') {
            // Lexed as the server lexes it; what runs is still the client's bytes.
            if let Some(view) = crate::sql::lexer::without_backslash_escapes(&text) {
                text = std::borrow::Cow::Owned(view);
            }
        }
        let shown = (0..=text.len().min(PROCESSLIST_INFO_BYTES))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        self.registry_entry
            .begin_command(&crate::sql::accounts::masked(&text[..shown]));
        // One statement with a final `;` and trailing comments runs without them: with
        // multi-statements the server would answer the tail as a second, empty statement
        // (its OK, not the statement's, would be the one recorded and compared). Most texts
        // have no `;` at all: a byte search keeps the lexer off the common path.
        let cut = text
            .contains(';')
            .then(|| crate::sql::lexer::without_final_semicolon(&text))
            .filter(|cut| cut.len() < text.len());
        let sql: &str = cut.unwrap_or(&text);
        let payload = &payload[..1 + sql.len()];
        if let Some(d) = diagnostics {
            if let Some(q) = crate::sql::diagnostics::parse(sql) {
                return self.answer_diagnostics(client, session, d, &q, false).await;
            }
        }
        let (digest, c) = self.ctx.classify_cache.classify_keyed(sql);
        let own_id = self.with_own_connection_id(sql, payload, &c)?;
        let (sql, payload, c) = match &own_id {
            Some((text, payload, c)) => (text.as_str(), &payload[..], c.clone()),
            None => (sql, payload, c),
        };
        let started = std::time::Instant::now();
        self.served = None;
        let outcome = self
            .com_query_classified(client, session, sql, payload, c)
            .await;
        self.count_digest(digest, sql, started);
        outcome
    }

    /// `sql` with CONNECTION_ID() made this session's id on the proxy
    /// (`rewrite::connection_id`), as a COM_QUERY payload, classified; None when it calls
    /// none. Classified uncached: the text is this session's alone.
    #[allow(clippy::type_complexity)]
    fn with_own_connection_id(
        &self,
        sql: &str,
        payload: &[u8],
        c: &Classified,
    ) -> Result<Option<(String, Vec<u8>, Arc<Classified>)>, Failure> {
        if !c.flags.contains(Flags::CONNECTION_ID) {
            return Ok(None);
        }
        let Some(text) = crate::sql::rewrite::connection_id(sql, self.connection_id()) else {
            return Ok(None);
        };
        let payload = rewritten_payload(payload, sql, &text).map_err(Failure::Answer)?;
        let c = Arc::new(crate::sql::classify(&text));
        Ok(Some((text, payload, c)))
    }

    /// Counts a command that started at `started` under its statement digest, served where
    /// `note_route` last said (`SHOW PROXY QUERIES`).
    fn count_digest(&self, digest: u64, sql: &str, started: std::time::Instant) {
        self.ctx.digests.record(
            digest,
            sql,
            started.elapsed(),
            self.served.unwrap_or(crate::digests::Served::Proxy),
        );
    }

    /// `com_query` once the text is classified: one statement, or several run one by one.
    async fn com_query_classified<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        sql: &str,
        payload: &[u8],
        c: Arc<Classified>,
    ) -> Result<(), Failure> {
        if c.statements > 1 && !session.multi_statements {
            return Err(Failure::Answer(MysqlError::new(
                1064,
                "42000",
                "You have an error in your SQL syntax: several statements in one query need \
                 CLIENT_MULTI_STATEMENTS (enable multi-statements in the client)",
            )));
        }
        if c.statements > 1
            && (!matches!(
                c.kind,
                Kind::Read | Kind::Session | Kind::Empty | Kind::Other
            ) || c
                .flags
                .intersects(Flags::SEQUENCE | Flags::UNKNOWN_STATEMENT | Flags::SQL_PREPARE)
                || c.flags.intersects(
                    Flags::SESSION_STATUS | Flags::SESSION_VARIABLES | Flags::READS_ISOLATION,
                ))
        {
            // Each statement goes its own way (writes, and reads that take a sequence's
            // value, through the log); the answers are joined into one multi-result
            // response. Statements before one the proxy does not know run and answer, as
            // on the server, which stops at its syntax error. A PREPARE is kept by the
            // session, and an EXECUTE of a write runs its statement through the log, only
            // when each is seen as a statement of its own. A SHOW STATUS or VARIABLES the
            // proxy answers with rows of its own, and a read of the isolation level it
            // shows otherwise, are each answered so.
            return self.run_multi(client, session, sql, &payload[1..]).await;
        }
        self.run_statement(client, session, c, sql, payload).await
    }

    /// Answers SHOW WARNINGS, `@@warning_count` or ROW_COUNT() from the diagnostics the
    /// session kept of its last replicated write (the server's were cleared by the proxy's
    /// own statements after it); `binary` for a prepared statement's execute.
    async fn answer_diagnostics<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        diagnostics: Diagnostics,
        q: &crate::sql::diagnostics::DiagnosticsQuery,
        binary: bool,
    ) -> Result<(), Failure> {
        let answer = diagnostics.answer(q);
        let columns: Vec<(&str, ColumnKind)> = answer
            .columns
            .iter()
            .map(|(name, kind)| (name.as_str(), *kind))
            .collect();
        crate::protocol::resultset::queue_resultset(
            client,
            1,
            &columns,
            &answer.rows,
            session.status_flags(),
            self.format(),
            binary,
        );
        session.diagnostics = Some(diagnostics.after_reading());
        client.flush().await.map_err(Failure::Client)
    }

    /// One classified statement of a COM_QUERY.
    pub(super) async fn run_statement<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: Arc<Classified>,
        sql: &str,
        payload: &[u8],
    ) -> Result<(), Failure> {
        // A statement of a multi-statement text replaces what an earlier one kept.
        session.diagnostics = None;
        if !crate::session::plain_read(&c) {
            // Whatever it runs on the way (an evaluated SET, a sequence) may begin the
            // server's transaction.
            session.server_txn_fresh = false;
        }
        self.end_replica_affinity(session, &c);
        if let Some(SessionChange::Proxy(name, value)) = &c.session {
            return self.set_proxy_variable(client, session, name, value).await;
        }
        if c.flags.contains(Flags::SEQUENCE) && c.kind != Kind::Proxy {
            return self
                .run_with_sequences(client, session, &c, sql, payload)
                .await;
        }
        if c.kind == Kind::Admin {
            if let Some(k) = kill::parse(sql) {
                let k = k.map_err(Failure::Answer)?;
                return self.kill(client, session, k).await;
            }
            match crate::sql::binlog::parse(sql) {
                // Forwarded as well: the server checks it (and the BINLOG privilege).
                Some(Ok(BinlogStatement::FormatDescription(literal))) => {
                    session.binlog_format_description = Some(literal);
                }
                Some(Ok(BinlogStatement::Rows { literal, tables })) => {
                    return self
                        .run_binlog_rows(client, session, &c, &literal, &tables)
                        .await;
                }
                Some(Err(why)) => {
                    return Err(Failure::Answer(MysqlError::not_supported(&format!(
                        "cannot replicate {why}"
                    ))))
                }
                None => {}
            }
        }
        if matches!(c.session, Some(SessionChange::Computed)) {
            if let Some(literal) = self.with_evaluated_values(session, &c, sql).await? {
                let lc = self.ctx.classify_cache.classify(&literal);
                if matches!(lc.session, Some(SessionChange::Vars(_))) {
                    let payload =
                        rewritten_payload(payload, sql, &literal).map_err(Failure::Answer)?;
                    return Box::pin(self.run_statement(client, session, lc, &literal, &payload))
                        .await;
                }
            }
        }
        let c = self.stored_function_call(&c, sql).unwrap_or(c);
        let route = self.route_statement(&c, session);
        if route.target != Target::Proxy {
            self.note_route(sql, &c, route, session);
        }
        self.count_route(route);
        // One statement: its rows are read whole here (several come through run_multi).
        let own_rows = route.target != Target::Proxy && c.statements == 1;
        if own_rows && c.flags.contains(Flags::SESSION_STATUS) {
            return self.session_status(client, session, &c, route, sql).await;
        }
        if own_rows && c.flags.contains(Flags::SESSION_VARIABLES) {
            if let Some(shown) = self.shown_isolation(session, &c) {
                return self
                    .session_variables(client, session, &c, route, sql, shown)
                    .await;
            }
        }
        match route.target {
            Target::Proxy => {
                let status = session.status_flags();
                let cmd = c.proxy_command.as_deref().unwrap_or("");
                if !session.admin && !admin::is_about_own_session(cmd) {
                    return Err(Failure::Answer(admin::not_an_admin()));
                }
                match super::checksum::parse(sql) {
                    Some(Ok(what)) => return self.checksum(client, session, what).await,
                    Some(Err(e)) => return Err(Failure::Answer(e)),
                    None => {}
                }
                if let Some(parsed) = admin::parse_rebuild(cmd) {
                    let req = parsed.map_err(Failure::Answer)?;
                    tracing::info!(
                        shard = req.shard.0,
                        replica = req.replica.0,
                        from = ?req.from.map(|r| r.0),
                        "rebuild requested by a client"
                    );
                    let msg = self
                        .ctx
                        .replication
                        .rebuild(req.shard, req.replica, req.from)
                        .await
                        .map_err(|e| {
                            Failure::Answer(MysqlError::new(
                                1105,
                                "HY000",
                                format!("myquorum: {e}"),
                            ))
                        })?;
                    crate::protocol::resultset::queue_text_resultset(
                        client,
                        1,
                        &["result"],
                        &[vec![Some(msg)]],
                        status,
                        self.format(),
                    );
                    return client.flush().await.map_err(Failure::Client);
                }
                let answer = match admin::parse_switchover(cmd) {
                    Some(Ok((shard, to))) => {
                        tracing::info!(shard = shard.0, to = ?to.map(|r| r.0), "switchover requested by a client");
                        match self.ctx.replication.switchover(shard, to).await {
                            Ok(msg) => Ok(admin::Table {
                                kinds: Vec::new(),
                                columns: vec!["result"],
                                rows: vec![vec![Some(msg)]],
                            }),
                            Err(e) => Err(MysqlError::new(1105, "HY000", format!("myquorum: {e}"))),
                        }
                    }
                    Some(Err(e)) => Err(e),
                    None => admin::answer_filtered(&self.ctx, cmd, sql, session, self),
                };
                match answer {
                    Ok(table) => {
                        let typed: Vec<(&str, ColumnKind)> = table
                            .columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                (*c, table.kinds.get(i).copied().unwrap_or(ColumnKind::Text))
                            })
                            .collect();
                        crate::protocol::resultset::queue_resultset(
                            client,
                            1,
                            &typed,
                            &table.rows,
                            status,
                            self.format(),
                            false,
                        );
                        client.flush().await.map_err(Failure::Client)
                    }
                    Err(e) => Err(Failure::Answer(e)),
                }
            }
            // The server answers OK to a statement that is only comments (mysqlbinlog's
            // output sends `/*!*/` after its `/*!\C utf8mb3 */` lines; a PITR replay through
            // the proxy stopped there) and 1065 to one with nothing at all.
            Target::Nothing if c.kind == Kind::Empty && !only_blanks(sql) => {
                self.reply_ok(client, session, 1).await
            }
            Target::Nothing if c.kind == Kind::Empty => Err(Failure::Answer(MysqlError::new(
                1065,
                "42000",
                "Query was empty",
            ))),
            Target::Nothing => Err(Failure::Answer(MysqlError::new(
                2003,
                "HY000",
                "no backend serves this statement (no shards configured)",
            ))),
            Target::Primary(..) | Target::Pinned(..) | Target::Replica(..) => {
                writes::refuse_unreplicable(&c, sql).map_err(Failure::Answer)?;
                if c.flags.contains(Flags::SQL_PREPARE) {
                    if let Some(bound) = self.sql_prepared_in_place(session, &c, route, sql).await?
                    {
                        // Run the statement itself in place of the EXECUTE: followers have
                        // no such prepared statement, so only the statement can be logged;
                        // and the session follows what it does to the transaction.
                        let bc = self.ctx.classify_cache.classify(&bound);
                        let payload = [&[COM_QUERY][..], bound.as_bytes()].concat();
                        return Box::pin(self.run_statement(client, session, bc, &bound, &payload))
                            .await;
                    }
                }
                match writes::classify_write(&c, sql, session).map_err(Failure::Answer)? {
                    WriteClass::Dml => {
                        if c.kind == Kind::Call && self.check_call(session, &c, route, sql).await? {
                            self.commit_pending::<S>(None, session, &c, route, CHAINED_COMMIT)
                                .await?;
                        }
                        return self
                            .run_dml(client, session, &c, route, sql, payload, None, &[])
                            .await;
                    }
                    WriteClass::Ddl => {
                        self.refuse_generated_ids_in_programs(session, &c, route, sql)
                            .await?;
                        self.refuse_ids_in_storage_order(session, &c, route, sql)
                            .await?;
                        // What reads the clock may change: writes set it until the
                        // tables were read again.
                        let change = self.schema_change(route).await;
                        let done = self.run_ddl(client, session, &c, route, payload).await;
                        drop(change);
                        // ALTER SEQUENCE … RESTART, DROP and CREATE OR REPLACE may bring a
                        // sequence's values back below what was reserved.
                        self.ctx.sequence_reservations.clear();
                        if mentions_routine(sql) {
                            // A procedure or function created, replaced or dropped: CALLs
                            // are judged anew.
                            self.ctx.call_checks.clear();
                        }
                        if let Some(name) = crate::sql::classify::created_function(sql) {
                            for (_, _, pool) in self.ctx.cluster.pools() {
                                pool.note_stored_function(&name);
                            }
                        }
                        return done;
                    }
                    WriteClass::Local | WriteClass::None => {}
                }
                if self.settle_pending(client, session, &c, sql, route).await? {
                    return Ok(());
                }
                let releasing = releasing_end(&c, sql, session);
                let rewritten = if let Some(end) = releasing {
                    Some(end.on_primary().to_string())
                } else if c.flags.contains(Flags::READS_SOCKET) {
                    let own = &self.ctx.config.proxy.listen_socket;
                    crate::sql::rewrite::hide_backend_socket(
                        sql,
                        Some(own).filter(|s| !s.is_empty()).map(String::as_str),
                    )
                } else if c.flags.contains(Flags::TABLE_LOCK) && c.kind == Kind::Lock {
                    crate::sql::rewrite::lock_tables_with_log(sql)
                } else if sets_isolation(&c) {
                    let raised = crate::sql::set::raise_isolation(sql);
                    if raised.is_some() {
                        self.ctx
                            .counters
                            .isolation_raised
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(sql, "isolation level raised to REPEATABLE READ");
                    }
                    raised
                } else {
                    None
                };
                let rewritten = match self.shown_isolation(session, &c) {
                    Some(shown) => {
                        let text = rewritten.as_deref().unwrap_or(sql);
                        crate::sql::rewrite::session_isolation_reads(text, shown).or(rewritten)
                    }
                    None => rewritten,
                }
                .map(|s| rewritten_payload(payload, sql, &s))
                .transpose()
                .map_err(Failure::Answer)?;
                // A LOCK TABLES that locks the log table first waits, as a DDL does, until
                // no other session has a write transaction open, holding new ones back: one
                // holding locks on a table it names would wait for it at its log row while
                // it waits for them, and lose that deadlock after its quorum (the shard then
                // pauses until the primary is repaired: measured with a fuzzing client).
                // Unlike a DDL it does not go ahead after the wait: it fails as a lock wait
                // would. The gate is left before the statement runs: the server may make it
                // wait for a session that waits at the gate (two sessions taking table
                // locks hung so), which nothing would detect. Later writers wait at their
                // commit for UNLOCK TABLES.
                if c.kind == Kind::Lock && rewritten.is_some() {
                    if session.pending.is_empty() {
                        self.open_write = None;
                    }
                    let log = self.shard_log(writes::route_shard(route))?;
                    let turn = session
                        .holds_table_locks()
                        .then_some(writes::DDL_ORDER_WAIT);
                    let gate = log.ddl_order.ddl(writes::DDL_ORDER_WAIT, turn).await;
                    if !gate.is_some_and(|g| g.ordered) {
                        return Err(Failure::Answer(MysqlError::new(
                            1205,
                            "HY000",
                            format!(
                                "Lock wait timeout exceeded; try restarting transaction \
                                 (myquorum: LOCK TABLES … WRITE also locks the proxy's log \
                                 table, and {} other session(s) kept a write transaction open \
                                 for {:?}; retry when they have committed)",
                                log.ddl_order.open_writers(),
                                writes::DDL_ORDER_WAIT
                            ),
                        )));
                    }
                }
                let payload = rewritten.as_deref().unwrap_or(payload);
                let summary = self
                    .run_on_backend(
                        client,
                        session,
                        &c,
                        route,
                        BackendCommand::Raw(payload),
                        ResponseKind::ResultSets,
                    )
                    .await?;
                if c.flags.contains(Flags::TABLE_LOCK)
                    && c.kind == Kind::Lock
                    && summary.error.is_none()
                {
                    // Only now: a LOCK TABLES refused at the gate above, or while parsing,
                    // leaves the earlier locks in force.
                    session.table_locks_cover_log = rewritten.is_some();
                }
                self.after_forwarded(session, &c, sql, summary.error.is_none());
                if c.kind == Kind::Admin
                    && summary.error.is_none()
                    && crate::sql::classify::runs_on_every_replica(sql)
                {
                    self.spread_maintenance(route, session, sql);
                }
                if releasing.is_some() && summary.error.is_none() {
                    return Err(released());
                }
                if let Some(e) = &summary.error {
                    // A locking read that deadlocked ended the transaction.
                    self.forget_rolled_back(session, &c, route, e.code).await?;
                }
                if c.flags.contains(Flags::SQL_PREPARE) {
                    self.note_sql_prepare(session, &c, route, sql, summary.error.is_none())
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Maintenance that the server's own replication would carry to its replicas
    /// (`classify::runs_on_every_replica`: ANALYZE TABLE and the like), done where the
    /// session ran it, is run by the shard's other replicas too, in the background.
    fn spread_maintenance(&self, route: Route, session: &SessionState, sql: &str) {
        let (Target::Primary(shard, ran_on) | Target::Pinned(shard, ran_on)) = route.target else {
            return;
        };
        let others = self
            .ctx
            .cluster
            .pools()
            .filter(|(s, r, _)| *s == shard && *r != ran_on)
            .map(|(_, _, pool)| pool.clone())
            .collect();
        crate::backend::maintenance::run_on_replicas(others, session.schema.clone(), sql);
    }

    /// A read that calls a stored function of any backend (the health probes list them),
    /// classified as a CALL: the function may change data, which a read would leave on one
    /// server, so it runs on the primary and through the log. `None` for anything else.
    fn stored_function_call(&self, c: &Classified, sql: &str) -> Option<Arc<Classified>> {
        let calls = c.kind == Kind::Read
            && self.ctx.cluster.pools().any(|(_, _, pool)| {
                pool.stored_functions()
                    .is_some_and(|names| crate::sql::classify::calls_function_in(sql, &names))
            });
        calls.then(|| {
            Arc::new(Classified {
                kind: Kind::Call,
                ..c.clone()
            })
        })
    }

    /// For an EXECUTE or EXECUTE IMMEDIATE whose statement is a replicated write (or
    /// advances a sequence), or one the session must follow (`followed_by_the_session`):
    /// that statement with its arguments bound.
    async fn sql_prepared_in_place(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
    ) -> Result<Option<String>, Failure> {
        let (text, args) = match prepare::parse(sql) {
            Some(SqlPrepare::Execute { name, args }) => match session.sql_prepared.get(&name) {
                // Unknown to the server too, or prepared inside a stored program or compound
                // statement, where the proxy did not see its text: run as it is, a write
                // would reach the primary alone.
                None => {
                    return Err(Failure::Answer(MysqlError::new(
                        1243,
                        "HY000",
                        format!(
                            "Unknown prepared statement handler ({name}) given to EXECUTE \
                             (myquorum: a statement prepared inside a stored program or \
                             compound statement cannot be executed outside it, since the \
                             proxy cannot tell whether it writes; PREPARE it as a statement \
                             of its own)"
                        ),
                    )))
                }
                Some(None) => {
                    return Err(Failure::Answer(MysqlError::not_supported(&format!(
                        "EXECUTE {name}: the statement's text could not be read when it was \
                         prepared, so the proxy cannot tell whether it writes; prepare it again"
                    ))))
                }
                Some(Some(text)) => (text.clone(), args),
            },
            Some(SqlPrepare::Immediate { source, args }) => {
                // NULL or an error here: the server's EXECUTE IMMEDIATE fails the same way.
                match self.select_value(session, c, route, source).await? {
                    Some(text) => (text, args),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        // A LIMIT or OFFSET count must be written as an integer: a user variable or an
        // expression there is evaluated first (as the server binds its value).
        let mut evaluated: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for i in prepare::limit_counts_to_evaluate(&text, &args) {
            if let Some(v) = self.select_value(session, c, route, args[i]).await? {
                if v.parse::<u64>().is_ok() {
                    evaluated[i] = v;
                }
            }
        }
        let args: Vec<&str> = evaluated.iter().map(String::as_str).collect();
        // A count mismatch is the server's error to give.
        let Some(bound) = prepare::bind(&text, &args) else {
            return Ok(None);
        };
        let bc = self.ctx.classify_cache.classify(&bound);
        let replicated = bc.flags.contains(Flags::SEQUENCE)
            || matches!(
                writes::classify_write(&bc, &bound, session).map_err(Failure::Answer)?,
                WriteClass::Dml | WriteClass::Ddl
            );
        Ok((replicated || followed_by_the_session(&bc)).then_some(bound))
    }

    /// Refuses an ALTER TABLE giving a column AUTO_INCREMENT on a table of two rows or more
    /// that the server stores in insertion order (no primary key, no unique NOT NULL key):
    /// it numbers the rows in that order, which is each server's own. The primary inserted
    /// them as concurrent transactions ran, the followers in log order (measured: ids 1, 2
    /// went to rows 10, 20 on the primary and 20, 10 on both followers). A key orders the
    /// copy the same everywhere. Any error here (no such table) is left to the ALTER.
    async fn refuse_ids_in_storage_order(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
    ) -> Result<(), Failure> {
        let Some((schema, table)) = crate::sql::determinism::auto_increment_column_added(sql)
        else {
            return Ok(());
        };
        let reference = match &schema {
            Some(db) => format!("{db}.{table}"),
            None => table.clone(),
        };
        // A temporary table is the session's own, and not in information_schema.STATISTICS.
        if session
            .temp_tables
            .contains(&reference, session.schema.as_deref())
        {
            return Ok(());
        }
        let Some(db) = schema.or_else(|| session.schema.clone()) else {
            return Ok(());
        };
        let (in_db, named) = (
            crate::sql::quote_string(&db),
            crate::sql::quote_string(&table),
        );
        let quote = crate::sql::quote_identifier;
        let expression = format!(
            "NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS k \
             WHERE k.TABLE_SCHEMA = {in_db} AND k.TABLE_NAME = {named} AND k.NON_UNIQUE = 0 \
             AND NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS n \
             WHERE n.TABLE_SCHEMA = k.TABLE_SCHEMA AND n.TABLE_NAME = k.TABLE_NAME \
             AND n.INDEX_NAME = k.INDEX_NAME AND n.NULLABLE = 'YES')) \
             AND (SELECT COUNT(*) FROM (SELECT 1 FROM {}.{} LIMIT 2) r) > 1",
            quote(&db),
            quote(&table)
        );
        if self
            .select_value(session, c, route, &expression)
            .await?
            .as_deref()
            != Some("1")
        {
            return Ok(());
        }
        Err(Failure::Answer(MysqlError::not_supported(&format!(
            "this ALTER TABLE gives a column of {db}.{table} AUTO_INCREMENT, and the table has \
             no primary key (nor a unique NOT NULL key): the server numbers its rows in the \
             order it stored them, which is the order their inserts ran on that server, so \
             the primary and the followers would number them differently. Do it as MySQL's \
             manual advises for replication: CREATE TABLE {table}_new LIKE {table}, give the \
             column AUTO_INCREMENT there, INSERT INTO {table}_new (<its other columns>) SELECT \
             <them> FROM {table} ORDER BY <every column>, then RENAME TABLE {table} TO \
             {table}_old, {table}_new TO {table}"
        ))))
    }

    /// Refuses a trigger, procedure or function whose body, or the body of a procedure it
    /// calls, inserts into a table with an AUTO_INCREMENT column it leaves for the server to
    /// fill (`generated_id_insert`). A callee created later is judged when called.
    async fn refuse_generated_ids_in_programs(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
    ) -> Result<(), Failure> {
        let Some(object) = crate::sql::classify::defined_object(sql)
            .filter(|o| matches!(o.as_str(), "TRIGGER" | "PROCEDURE" | "FUNCTION"))
        else {
            return Ok(());
        };
        let home = crate::sql::determinism::program_schema(sql).or_else(|| session.schema.clone());
        let what = format!("this {}", object.to_ascii_lowercase());
        let generated = self
            .generated_id_inserts(session, c, route, sql, home.clone(), &what)
            .await?;
        // A procedure's one insert that runs once per CALL is carried by the CALL's record
        // (`judge_procedure` decides at the CALL, with the routines it runs); a trigger's or
        // a function's ids are not: the server restores LAST_INSERT_ID when they end.
        let carried = object == "PROCEDURE" && carries_alone(&generated, sql);
        let mut refusal = (!carried).then(|| generated.first().cloned()).flatten();
        for (db, name) in crate::sql::determinism::procedures_called(sql) {
            let Some(db) = db.or_else(|| home.clone()) else {
                continue;
            };
            if let Some(check) = self.judge_procedure(session, c, route, &db, &name).await? {
                if refusal.is_none() {
                    // A callee's carried insert is carried only where it is called itself.
                    refusal = check.refusal.or_else(|| {
                        check.carries_insert_id.then(|| {
                            format!(
                                "{what} calls procedure {db}.{name}, whose insert generates \
                                 AUTO_INCREMENT ids: they are carried by the log only when \
                                 that procedure is CALLed by the client itself (a procedure's \
                                 one such insert, run at most once per CALL). Call it from \
                                 the application, or give the column a value"
                            )
                        })
                    });
                }
            }
        }
        refused_for(refusal)
    }

    /// Refuses a CALL of a procedure whose body, or the body of a procedure it calls,
    /// generates ids (`generated_id_insert`): one created on the servers directly, which the
    /// definition check never saw, or one reached through another. Returns whether the
    /// session's pending writes must be committed first: a body may start a
    /// transaction, which on the primary commits them part-way through the CALL, unseen (the
    /// status flags show a transaction before and after), so a later ROLLBACK left them on
    /// the primary alone. Committed first, with the next transaction chained, the CALL then
    /// runs as in the client's transaction. Where the body may also roll back (which would
    /// have dropped them instead), it is refused. The verdict is cached per procedure
    /// (`ProxyContext::call_checks`) until a routine DDL through the proxy; a procedure
    /// that does not exist is left to the server's error.
    async fn check_call(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
    ) -> Result<bool, Failure> {
        let Some((db, name)) = crate::sql::determinism::called_procedure(sql) else {
            return Ok(false);
        };
        let Some((db, key)) = procedure_key(session, db, &name) else {
            return Ok(false);
        };
        let check = match self.ctx.call_checks.get(&key).map(|v| v.clone()) {
            Some(v) => v,
            None => {
                let Some(check) = self.judge_procedure(session, c, route, &db, &name).await? else {
                    return Ok(false);
                };
                self.ctx.call_checks.insert(key, check.clone());
                check
            }
        };
        refused_for(check.refusal)?;
        let words = check.identifiers.iter().map(String::as_str);
        if let Some(table) = session.temp_tables.first_named(words) {
            return Err(Failure::Answer(super::writes::temporary_table_named(
                table,
                &format!("procedure {db}.{name}"),
            )));
        }
        let commits_pending = check.starts_transaction && !session.pending.is_empty();
        if commits_pending && check.may_roll_back {
            return Err(Failure::Answer(MysqlError::not_supported(&format!(
                "procedure {db}.{name} may start a transaction (START TRANSACTION), which on \
                 the primary commits this session's open transaction part-way through the \
                 CALL, and may also roll back, which would drop it instead: the proxy cannot \
                 follow which happened. COMMIT (or ROLLBACK) before the CALL"
            ))));
        }
        Ok(commits_pending)
    }

    /// What procedure `db.name` may do, with the procedures and stored functions it runs
    /// (to a bound: MariaDB nests CALLs up to max_sp_recursion_depth, and a body names its
    /// callees statically or in strings). None when it does not exist.
    async fn judge_procedure(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        db: &str,
        name: &str,
    ) -> Result<Option<CallCheck>, Failure> {
        /// Routines looked up per judgement (a function's name may be a built-in's, whose
        /// lookup finds nothing); a program running more is judged on these and counts as
        /// reading every table.
        const MOST_ROUTINES: usize = 64;
        let mut check = CallCheck::default();
        let mut queue = vec![(db.to_string(), name.to_string(), RoutineType::Procedure)];
        let mut seen = std::collections::HashSet::new();
        // Whether the routines read so far leave one id-generating insert, in the
        // procedure's own body, that runs at most once per CALL.
        let mut carried = false;
        while let Some((rdb, rname, kind)) = queue.pop() {
            if !seen.insert((rdb.clone(), rname.to_ascii_lowercase(), kind)) {
                continue;
            }
            if seen.len() > MOST_ROUTINES {
                check.reads_every_table = true;
                break;
            }
            // information_schema, not mysql.proc: reading that Aria table inside the
            // client's transaction makes every later SAVEPOINT in it fail with 1178 (the
            // procedure's own, or the client's).
            let lookup = format!(
                "(SELECT ROUTINE_DEFINITION FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = {} AND ROUTINE_NAME = {} AND ROUTINE_TYPE = '{}')",
                crate::sql::quote_string(&rdb),
                crate::sql::quote_string(&rname),
                kind.word()
            );
            let Some(body) = self.select_value(session, c, route, &lookup).await? else {
                if seen.len() == 1 {
                    return Ok(None);
                }
                // A callee that does not exist fails the CALL there, on every replica; a
                // function's name may also be a built-in's.
                continue;
            };
            let what = if seen.len() == 1 {
                format!("procedure {db}.{name}")
            } else {
                format!(
                    "{} {rdb}.{rname} (which {db}.{name} calls)",
                    kind.word().to_ascii_lowercase()
                )
            };
            let generated = self
                .generated_id_inserts(session, c, route, &body, Some(rdb.clone()), &what)
                .await?;
            if seen.len() == 1 {
                carried = carries_alone(&generated, &body);
            } else {
                carried &=
                    generated.is_empty() && !crate::sql::determinism::sets_last_insert_id(&body);
            }
            if check.refusal.is_none() {
                check.refusal = generated.into_iter().next();
            }
            check.starts_transaction |= crate::sql::classify::starts_transaction(&body);
            check.may_roll_back |= crate::sql::classify::may_roll_back(&body);
            check.may_write |= crate::sql::classify::may_write(&body);
            check.may_change_schema |= crate::sql::classify::may_change_schema(&body);
            check
                .identifiers
                .extend(crate::session::temp_tables::identifiers(&body).map(str::to_string));
            // A routine's unqualified callees are in its own database.
            let callees = crate::sql::determinism::procedures_called(&body)
                .into_iter()
                .map(|call| (call, RoutineType::Procedure))
                .chain(
                    crate::sql::clock::functions_called(&body)
                        .into_iter()
                        .map(|call| (call, RoutineType::Function)),
                );
            for ((callee_db, callee), kind) in callees {
                let callee_db = callee_db.unwrap_or_else(|| rdb.clone());
                // Run again from inside, its one insert would run more than once.
                carried &= !(kind == RoutineType::Procedure
                    && callee_db == db
                    && callee.eq_ignore_ascii_case(name));
                queue.push((callee_db, callee, kind));
            }
        }
        // The procedure's one id-generating insert is carried by the CALL's record: read
        // back after it on the primary, replayed with `SET insert_id`.
        if carried && !check.reads_every_table && check.refusal.is_some() {
            check.refusal = None;
            check.carries_insert_id = true;
        }
        Ok(Some(check))
    }

    /// Why a stored program's `body` (unqualified tables in `home`) would give each replica
    /// its own ids, once per insert that does: it inserts into a table whose AUTO_INCREMENT
    /// column (looked up on the primary) it leaves to the server. Those ids are not in the
    /// record, so the primary takes them in the order concurrent transactions run and the
    /// replicas in log order (`determinism::inserted_tables`), unless the insert is a
    /// procedure's only one and runs at most once per CALL (`judge_procedure`). Tables
    /// created later are not checked.
    async fn generated_id_inserts(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        body: &str,
        home: Option<String>,
        what: &str,
    ) -> Result<Vec<String>, Failure> {
        let mut found = Vec::new();
        for t in crate::sql::determinism::inserted_tables(body) {
            let Some(db) = t.schema.clone().or_else(|| home.clone()) else {
                continue;
            };
            let lookup = format!(
                "(SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
                 AND TABLE_NAME = {} AND EXTRA LIKE '%auto_increment%' LIMIT 1)",
                crate::sql::quote_string(&db),
                crate::sql::quote_string(&t.table)
            );
            let Some(column) = self.select_value(session, c, route, &lookup).await? else {
                continue;
            };
            if t.generates(&column) {
                found.push(format!(
                    "{what} inserts into {db}.{} leaving its AUTO_INCREMENT column `{column}` \
                     to the server (no value, or NULL, 0 or DEFAULT): ids generated inside a stored program are not carried by the \
                     log (only a statement's own are, and a procedure's one insert that runs \
                     at most once per CALL: not in a loop or handler, with no other such \
                     insert in it or what it calls, and no LAST_INSERT_ID(expr)), so each \
                     replica would generate its own (the primary in the order concurrent \
                     transactions run, with gaps from rolled-back ones; the replicas in log \
                     order). Give the column a value in the insert, drop AUTO_INCREMENT from \
                     it, or insert from the application",
                    t.table
                ));
            }
        }
        Ok(found)
    }

    /// Keeps the session's SQL-level prepared statements: a PREPARE's text as the server
    /// decoded it (read back on the same connection), forgotten on DEALLOCATE and when a
    /// PREPARE fails (the server drops a statement of that name first).
    async fn note_sql_prepare(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
        ok: bool,
    ) -> Result<(), Failure> {
        match prepare::parse(sql) {
            Some(SqlPrepare::Prepare { name, source }) if ok => {
                let text = self.select_value(session, c, route, source).await?;
                session.sql_prepared.insert(name, text);
            }
            Some(SqlPrepare::Prepare { name, .. }) | Some(SqlPrepare::Deallocate { name }) => {
                session.sql_prepared.remove(&name);
            }
            _ => {}
        }
        Ok(())
    }

    /// SHOW [SESSION] STATUS, answered with the server's rows except the two that describe
    /// the connection's encryption: `Ssl_version` and `Ssl_cipher` are the client's own
    /// connection's (empty when it is not TLS), not the pooled backend connection's. MySQL's
    /// manual gives `Ssl_cipher` as the way to check that a connection is encrypted; relayed,
    /// it would describe the proxy's link to the server instead (encrypted with
    /// `backend.tls` whatever the client did, and the reverse).
    async fn session_status<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
    ) -> Result<(), Failure> {
        let tls = self.client_tls.clone();
        let own = |name: &str| {
            if name.eq_ignore_ascii_case("Ssl_version") {
                Some(tls.as_ref().map(|t| t.version.clone()).unwrap_or_default())
            } else if name.eq_ignore_ascii_case("Ssl_cipher") {
                Some(tls.as_ref().map(|t| t.cipher.clone()).unwrap_or_default())
            } else {
                None
            }
        };
        self.session_rows(client, session, c, route, sql, own).await
    }

    /// SHOW [SESSION] VARIABLES of a session whose isolation level the proxy raised: its
    /// `tx_isolation` (`transaction_isolation`) row says the level the session asked for
    /// (`shown`), as `@@tx_isolation` reads do (`rewrite::session_isolation_reads`). Django
    /// reads its level so.
    async fn session_variables<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
        shown: ShownIsolation,
    ) -> Result<(), Failure> {
        let level = match shown {
            ShownIsolation::Asked(level) => Some(level.to_string()),
            ShownIsolation::ServerDefault => {
                self.select_value(session, c, route, "@@GLOBAL.tx_isolation")
                    .await?
            }
        };
        let own = |name: &str| {
            crate::sql::set::is_isolation_variable(name)
                .then(|| level.clone())
                .flatten()
        };
        self.session_rows(client, session, c, route, sql, own).await
    }

    /// A SHOW of `Variable_name`/`Value` rows, answered with the server's rows except those
    /// for which `own` gives the session's own value.
    async fn session_rows<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        sql: &str,
        own: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Failure> {
        self.hold_for(session, route).await?;
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let rows = match executor::query_rows(&mut h.conn, sql, deprecate_eof).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(Failure::Answer(e)),
            Err(e) => {
                return self
                    .finish(session, c, Err(RelayError::Backend(e)))
                    .map(|_| ())
            }
        };
        let rows: Vec<crate::protocol::resultset::TextRow> = rows
            .into_iter()
            .map(|mut row| {
                let name = row.first().cloned().flatten().unwrap_or_default();
                if let (Some(value), Some(slot)) = (own(&name), row.get_mut(1)) {
                    *slot = Some(value);
                }
                row
            })
            .collect();
        crate::protocol::resultset::queue_text_resultset(
            client,
            1,
            &["Variable_name", "Value"],
            &rows,
            session.status_flags(),
            self.format(),
        );
        client.flush().await.map_err(Failure::Client)?;
        self.release_if_unpinned(session);
        Ok(())
    }

    /// `SELECT <expression>` on the session's connection for `route`; None when it is NULL
    /// or the server refused it.
    pub(super) async fn select_value(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        expression: &str,
    ) -> Result<Option<String>, Failure> {
        Ok(self
            .evaluate(session, c, route, expression)
            .await?
            .ok()
            .flatten())
    }

    /// `SELECT <expression>` on the routed backend: its value (None for NULL) or the
    /// server's error.
    pub(super) async fn evaluate(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        expression: &str,
    ) -> Result<Result<Option<String>, MysqlError>, Failure> {
        self.hold_for(session, route).await?;
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        match executor::select_value(&mut h.conn, expression, deprecate_eof).await {
            Ok(v) => Ok(v),
            Err(e) => self
                .finish(session, c, Err(RelayError::Backend(e)))
                .map(|_| Ok(None)),
        }
    }

    /// A SET with computed values (Rails: `@@SESSION.sql_mode = CONCAT(@@sql_mode, …)`)
    /// with each value evaluated on the backend the SET would run on and written back as a
    /// literal, so the session's settings stay replayable on any connection instead of
    /// pinning it (and having every write read its settings from the primary). None when a
    /// value cannot be evaluated or written back: the SET then runs as sent.
    async fn with_evaluated_values(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
    ) -> Result<Option<String>, Failure> {
        let computed = crate::sql::set::computed_values(sql);
        let route = self.route_statement(c, session);
        let mut values = Vec::with_capacity(computed.len());
        for (from, to) in &computed {
            match self.evaluate(session, c, route, &sql[*from..*to]).await? {
                Ok(v) => values.push(v),
                Err(_) => return Ok(None),
            }
        }
        // The connection was held for the evaluation only.
        self.release_if_unpinned(session);
        Ok(crate::sql::set::with_literal_values(
            sql, &computed, &values,
        ))
    }

    /// Runs the statements of a multi-statement text one by one, as MySQL does, stopping at
    /// the first error, and answers with their results as one response. `sql` is the text to
    /// split, `bytes` the client's bytes at the same offsets (what each statement runs as).
    async fn run_multi<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        sql: &str,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        use crate::protocol::relay::{
            ends_with_error, renumber_frames, set_more_results, MemoryIo,
        };
        let pieces = crate::sql::lexer::split_statements(sql);
        let mut out = Vec::new();
        let mut seq = client.answer_seq();
        for (i, (a, b)) in pieces.iter().enumerate() {
            let payload = [&[COM_QUERY][..], &bytes[*a..*b]].concat();
            let mut sink = PacketStream::new(MemoryIo::keeping());
            let text = &sql[*a..*b];
            let c = self.ctx.classify_cache.classify(text);
            let ran = if c.flags.contains(Flags::UNKNOWN_STATEMENT) {
                // Named in the whole text, as the server names it.
                Err(Failure::Answer(writes::unknown_statement(sql)))
            } else {
                self.run_statement(&mut sink, session, c, text, &payload)
                    .await
            };
            match ran {
                Ok(()) => {}
                Err(Failure::Answer(e)) => {
                    sink.queue_packet(sink.answer_seq(), &e.encode());
                }
                Err(other) => return Err(other),
            }
            sink.flush().await.map_err(Failure::Client)?;
            let mut raw = sink.into_parts().0.buf;
            let failed = ends_with_error(&raw);
            if i + 1 < pieces.len() && !failed {
                set_more_results(&mut raw, self.deprecate_eof);
            }
            renumber_frames(&mut raw, &mut seq);
            out.extend_from_slice(&raw);
            if failed {
                break;
            }
        }
        client.queue_raw(&out);
        client.flush().await.map_err(Failure::Client)
    }

    /// Counts replica reads and primary fallbacks (SHOW PROXY STATUS).
    pub(super) fn count_route(&self, route: Route) {
        let counter = match route.reason {
            router::Reason::FreshReplica => &self.ctx.counters.replica_reads,
            router::Reason::NoFreshReplica => &self.ctx.counters.primary_fallbacks,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn route(&self, c: &Classified) -> Route {
        let view = SessionView {
            pinned_to: self.held.as_ref().map(|h| (h.shard, h.replica)),
            ..SessionView::default()
        };
        router::route(c, &self.ctx.cluster.topology(), view)
    }

    /// Remembers where a statement went, for EXPLAIN LAST STATEMENT.
    pub(super) fn note_route(
        &mut self,
        sql: &str,
        c: &Arc<Classified>,
        route: Route,
        session: &SessionState,
    ) {
        self.served = match route.target {
            Target::Replica(..) => Some(crate::digests::Served::Replica),
            Target::Primary(..) | Target::Pinned(..) => Some(crate::digests::Served::Primary),
            _ => None,
        };
        // Per statement: the text buffer is reused, not reallocated.
        let mut text = self.last_route.take().map(|l| l.sql).unwrap_or_default();
        text.clear();
        if c.kind == Kind::Ddl {
            // Account statements are DDL: their passwords are not shown.
            text.extend(crate::sql::accounts::masked(sql).chars().take(200));
        } else {
            text.extend(sql.chars().take(200));
        }
        self.last_route = Some(LastStatement {
            sql: text,
            classified: c.clone(),
            route,
            consistency: self.consistency(session),
            last_write_ts: session.last_write_ts,
        });
    }

    /// The session's read consistency (its SET, else the configured default).
    fn consistency(&self, session: &SessionState) -> router::Consistency {
        session
            .proxy_vars
            .iter()
            .find(|(k, _)| k == "myquorum_read_consistency")
            .and_then(|(_, v)| router::Consistency::parse(v))
            .unwrap_or_else(|| self.ctx.live.read_consistency())
    }

    /// A text statement's route: plain autocommit reads may go to a replica.
    pub(super) fn route_statement(&mut self, c: &Classified, session: &SessionState) -> Route {
        self.reads_routed = self.reads_routed.wrapping_add(1);
        let consistency = self.consistency(session);
        let view = SessionView {
            pinned_to: self.held.as_ref().map(|h| (h.shard, h.replica)),
            in_transaction: session.in_transaction || !session.autocommit,
            consistency,
            last_write_ts: session.last_write_ts,
            spread: router::read_spread(self.spread_seed, self.reads_routed),
        };
        let ctx = &self.ctx;
        let connected_at = &self.connected_at;
        router::route_read(c, &ctx.cluster.topology(), view, |shard| {
            let mut view = ctx.read_view(shard);
            view.connected_at = connected_at
                .iter()
                .find(|(s, _)| *s == shard)
                .map_or(0, |(_, ts)| *ts);
            view
        })
    }

    async fn set_proxy_variable<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        name: &str,
        value: &str,
    ) -> Result<(), Failure> {
        let allowed: &[&str] = match name {
            "myquorum_read_consistency" => &["strong", "session", "eventual"],
            super::checksum::CHUNK_ROWS_VARIABLE => {
                if !value
                    .parse::<u64>()
                    .is_ok_and(|n| (1..=super::checksum::MAX_CHUNK_ROWS).contains(&n))
                {
                    return Err(Failure::Answer(MysqlError::new(
                        1231,
                        "42000",
                        format!(
                            "Variable '{name}' can't be set to the value of '{value}' \
                             (1 to {})",
                            super::checksum::MAX_CHUNK_ROWS
                        ),
                    )));
                }
                &[]
            }
            _ => {
                return Err(Failure::Answer(MysqlError::new(
                    1193,
                    "HY000",
                    format!("Unknown system variable '{name}'"),
                )))
            }
        };
        let v = value.to_ascii_lowercase();
        if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
            return Err(Failure::Answer(MysqlError::new(
                1231,
                "42000",
                format!("Variable '{name}' can't be set to the value of '{value}'"),
            )));
        }
        session.proxy_vars.retain(|(k, _)| k != name);
        session.proxy_vars.push((name.to_string(), v));
        self.reply_ok(client, session, 1).await
    }

    /// Gets the connection for `route` into `self.held`.
    pub(super) async fn hold_for(
        &mut self,
        session: &SessionState,
        route: Route,
    ) -> Result<(), Failure> {
        self.refused_here = false;
        let (shard, replica) = match route.target {
            Target::Primary(s, r) | Target::Pinned(s, r) | Target::Replica(s, r) => (s, r),
            _ => {
                return Err(Failure::Answer(MysqlError::new(
                    2003,
                    "HY000",
                    "no backend for this route",
                )))
            }
        };
        if let Some(h) = &self.held {
            if h.shard == shard && h.replica == replica {
                return Ok(());
            }
        }
        let primary_route = matches!(route.target, Target::Primary(..));
        // The primary as of now: an election may have moved it since the route was made,
        // or be under way (the statement waits for it, bounded).
        let replica = if primary_route {
            self.primary_now(shard).await?
        } else {
            replica
        };
        if let Some(h) = &self.held {
            if h.shard == shard && h.replica == replica {
                return Ok(());
            }
        }
        self.note_primary(route, replica);
        let mut acquired =
            executor::acquire(&self.ctx.cluster, shard, replica, session, self.caps).await;
        let mut replica = replica;
        if primary_route
            && matches!(
                acquired,
                Err(AcquireError::Down { .. } | AcquireError::Unreachable { .. })
            )
        {
            // A dead primary is about to be replaced: wait for the election rather than
            // fail the statement, then use the new one.
            if let Some(next) = self.next_primary(shard, replica).await {
                replica = next;
                self.note_primary(route, replica);
                acquired =
                    executor::acquire(&self.ctx.cluster, shard, replica, session, self.caps).await;
            }
        }
        self.refused_here = matches!(
            acquired,
            Err(AcquireError::Refused { .. } | AcquireError::Restore(_))
        );
        let conn = acquired.map_err(|e| match e {
            AcquireError::Restore(e) => Failure::Answer(e),
            other => Failure::Answer(other.to_mysql()),
        })?;
        let down = match self.ctx.cluster.pool(shard, replica) {
            Some(p) => p.subscribe(),
            None => {
                return Err(Failure::Answer(MysqlError::new(
                    2003,
                    "HY000",
                    "backend vanished",
                )))
            }
        };
        self.registry_entry.took(BackendThread {
            shard,
            replica,
            thread: conn.hello.connection_id,
        });
        self.held = Some(Held {
            shard,
            replica,
            conn,
            down,
        });
        Ok(())
    }

    /// EXPLAIN LAST STATEMENT names the primary the statement ran on, also when an election
    /// moved it after the route was made.
    fn note_primary(&mut self, route: Route, replica: ReplicaId) {
        if let (Target::Primary(s, r), Some(l)) = (route.target, self.last_route.as_mut()) {
            if r != replica && l.route.target == route.target {
                l.route.target = Target::Primary(s, replica);
            }
        }
    }

    /// The shard's primary now; during an election, once it is over (bounded by the commit
    /// timeout, then a clear error).
    /// Whether a new session on `shard`'s primary (`primary`, or the one known now) starts
    /// with NO_BACKSLASH_ESCAPES, from that server's global sql_mode.
    fn primary_starts_without_backslash_escapes(
        &self,
        shard: ShardId,
        primary: Option<ReplicaId>,
    ) -> bool {
        primary
            .or_else(|| self.ctx.cluster.primary_id(shard))
            .and_then(|p| self.ctx.cluster.pool(shard, p))
            .is_some_and(|pool| pool.global_no_backslash_escapes())
    }

    async fn primary_now(&self, shard: ShardId) -> Result<ReplicaId, Failure> {
        let Some(log) = self.ctx.replication.shard(shard) else {
            return self
                .ctx
                .cluster
                .primary_id(shard)
                .ok_or_else(|| Failure::Answer(MysqlError::new(2003, "HY000", "no such shard")));
        };
        // Per statement: a read of the current leadership, a subscription only while electing.
        let now = log.leadership();
        if !now.electing {
            return Ok(now.leader);
        }
        let mut leadership = log.subscribe_leadership();
        if leadership.borrow().electing {
            let timeout = log.commit_timeout;
            let done = tokio::time::timeout(timeout, leadership.wait_for(|l| !l.electing)).await;
            if !matches!(done, Ok(Ok(_))) {
                return Err(Failure::Answer(MysqlError::new(
                    2003,
                    "HY000",
                    crate::replication::log::CommitError::Electing {
                        shard: shard.0,
                        timeout_ms: timeout.as_millis() as u64,
                    }
                    .to_string(),
                )));
            }
        }
        let leader = leadership.borrow().leader;
        Ok(leader)
    }

    /// Waits (up to the commit timeout) for `failed`, the shard's unreachable primary, to be
    /// replaced by an election; the new primary, or None when it stays.
    async fn next_primary(&self, shard: ShardId, failed: ReplicaId) -> Option<ReplicaId> {
        if !self.ctx.config.replication.failover {
            return None;
        }
        let log = self.ctx.replication.shard(shard)?;
        if log.replicas.len() < 2 {
            // No other replica can take over.
            return None;
        }
        let mut leadership = log.subscribe_leadership();
        let changed = tokio::time::timeout(
            log.commit_timeout,
            leadership.wait_for(|l| l.leader != failed && !l.electing),
        )
        .await;
        match changed {
            Ok(Ok(l)) => Some(l.leader),
            _ => None,
        }
    }

    /// After a command: keep the connection while the session is pinned, else return it.
    /// A read that left warnings or a found-rows count keeps its replica connection for the
    /// next few statements (`PinReason::StatementAffinity`), which may ask for them. A
    /// statement that cannot ask and must not run on a replica — a write, DDL, a
    /// transaction, a SET, a locking read — ends that: the replica connection goes back and
    /// the statement routes as usual. Before, it followed the pin: a write ran on the
    /// replica and failed at commit ("the primary changed"), 1213 to the client.
    fn end_replica_affinity(&mut self, session: &mut SessionState, c: &Classified) {
        let asks_previous = c
            .flags
            .intersects(Flags::LAST_INSERT_ID | Flags::FOUND_ROWS | Flags::WARNINGS_QUERY);
        let replica_read = c.kind == Kind::Read && !c.flags.contains(Flags::LOCKING_READ);
        if asks_previous || replica_read || !session.pinned_only_by(PinReason::StatementAffinity) {
            return;
        }
        let Some(h) = &self.held else {
            return;
        };
        if self.ctx.cluster.primary_id(h.shard) != Some(h.replica) {
            session.unpin(PinReason::StatementAffinity);
            self.release_if_unpinned(session);
        }
    }

    pub(super) fn release_if_unpinned(&mut self, session: &SessionState) {
        if session.is_pinned() {
            return;
        }
        if let Some(h) = self.held.take() {
            // A fixed timestamp travels with the connection: its next user resets it before
            // anything that may read the clock (`start_command`).
            self.check_in(h.shard, h.replica, h.conn);
        }
    }

    fn drop_held(&mut self, session: &SessionState) {
        if session.is_pinned() {
            // Its state cannot be handed to another session.
            self.held = None;
        } else {
            self.release_if_unpinned(session);
        }
    }

    /// Sends `payload` as a command on the routed connection and relays the response.
    async fn run_on_backend<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        command: BackendCommand<'_>,
        kind: ResponseKind,
    ) -> Result<ResponseSummary, Failure> {
        let outside = self.outside_read(session, c, route, command);
        session.before_statement(c);
        if let Some(answer) = self
            .answer_transaction_control(client, session, c, route, command)
            .await?
        {
            return Ok(answer);
        }
        let deprecate_eof = self.deprecate_eof;
        let mut route = route;
        let mut payload: Vec<u8> = Vec::new();
        loop {
            let acquired = self.hold_for(session, route).await;
            let Target::Replica(shard, replica) = route.target else {
                acquired?;
                payload = match self.command_bytes(command).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Err(Failure::Answer(e)),
                    Err(e) => return self.finish(session, c, Err(RelayError::Backend(e))),
                };
                break;
            };
            // A replica read may move to the primary as long as the client has seen nothing.
            let prepared = match acquired {
                Ok(()) => self.command_bytes(command).await,
                Err(_) => Err(io::Error::other("no connection")),
            };
            let started = match (prepared, self.held.as_mut()) {
                (Ok(Err(e)), _) => return Err(Failure::Answer(e)),
                (Ok(Ok(bytes)), Some(h)) => {
                    payload = bytes;
                    let poll = answer_poll(&self.ctx);
                    // A hung replica answers nothing; its health probes mark it down, and
                    // the read moves on then.
                    until_down(
                        &h.down,
                        start_command(&mut h.conn, &payload, deprecate_eof, true, poll),
                        |e| e,
                    )
                    .await
                    .map_err(|e| e.to_string())
                }
                (Err(e), _) => Err(e.to_string()),
                (_, None) => Err("no connection".to_string()),
            };
            let Err(why) = started else {
                break;
            };
            self.held = None;
            let primary = router::route(c, &self.ctx.cluster.topology(), SessionView::default());
            let leader = matches!(primary.target, Target::Primary(_, p) if p == replica);
            if let Some(pool) = self.ctx.cluster.pool(shard, replica) {
                if self.refused_here {
                    tracing::debug!(backend = %pool.addr, user = %session.user, error = %why,
                        "a replica cannot serve this session's read (its account or schema); read served by the primary");
                } else if leader {
                    // Only health checks take the primary out (a stale pooled connection must
                    // not close every session pinned to it); the read is retried there.
                    tracing::debug!(backend = %pool.addr, error = %why, "read on the primary failed; retrying");
                } else {
                    tracing::warn!(backend = %pool.addr, error = %why,
                        "replica failed a read; taken out until its health probes pass, read served by the primary");
                    pool.mark_down();
                }
            }
            self.ctx
                .counters
                .primary_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            route = Route {
                target: primary.target,
                reason: router::Reason::NoFreshReplica,
            };
            if let Some(l) = self.last_route.as_mut() {
                l.route = route;
            }
        }
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let started = std::time::Instant::now();
        let result = if matches!(route.target, Target::Replica(..)) {
            // Already sent, and its answer has begun.
            relay_response(&mut h.conn.stream, client, kind, deprecate_eof, None).await
        } else if let Some(how) = outside {
            self.ctx
                .counters
                .read_committed_reads
                .fetch_add(1, Ordering::Relaxed);
            let shown = ShownStatus {
                mask: StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits()
                    | StatusFlags::SERVER_STATUS_IN_TRANS.bits(),
                bits: session.status_flags(),
            };
            let relay = relay_outside_transaction(
                &mut h.conn,
                client,
                &payload,
                kind,
                deprecate_eof,
                how,
                shown,
            );
            let result = until_down(&h.down, relay, RelayError::Backend).await;
            // The server's transaction is still to begin.
            session.server_txn_fresh = how == OutsideRead::AutocommitOn && result.is_ok();
            result
        } else {
            let relay = send_and_relay(
                &mut h.conn,
                client,
                &payload,
                kind,
                deprecate_eof,
                reads_clock(c),
                answer_poll(&self.ctx),
            );
            until_down(&h.down, relay, RelayError::Backend).await
        };
        if let (Ok(_), Some(pool)) = (&result, self.ctx.cluster.pool(h.shard, h.replica)) {
            pool.record_latency(started.elapsed());
            if matches!(route.target, Target::Replica(..)) {
                pool.reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        let warned = match &result {
            Ok(s) if s.warnings > 0 && s.error.is_none() => Some(s),
            _ => None,
        };
        let listed = h.conn.schema.is_some()
            && !matches!(c.session, Some(SessionChange::Schema(_)))
            && self.ctx.databases_dropped.load(Ordering::Relaxed);
        if let (Some(summary), true) = (warned, listed) {
            // A stored routine or trigger may have left the connection without its database
            // (`Diagnostics::left_without_database`).
            match crate::executor::write::read_warnings(&mut h.conn, deprecate_eof).await {
                Ok(warnings) => {
                    let kept = super::writes::diagnostics_of(summary, warnings);
                    self.forget_database_if_left(session, &kept);
                    // SHOW WARNINGS set the server's ROW_COUNT() to -1: the next diagnostics
                    // statement is answered from these, as after a replicated write.
                    session.diagnostics = Some(kept);
                }
                Err(e) => return self.finish(session, c, Err(e)),
            }
        }
        self.finish(session, c, result)
    }

    /// What `c`, a statement reading the session's isolation level (`@@tx_isolation` or
    /// SHOW VARIABLES), should show of it where the server's session says another
    /// (`SessionState::shown_isolation`).
    fn shown_isolation(&self, session: &SessionState, c: &Classified) -> Option<ShownIsolation> {
        if !c
            .flags
            .intersects(Flags::READS_ISOLATION | Flags::SESSION_VARIABLES)
        {
            return None;
        }
        let default_raised = self
            .ctx
            .cluster
            .pools()
            .any(|(_, _, pool)| pool.default_reads_committed());
        session.shown_isolation(default_raised)
    }

    /// Whether `c` runs outside the server's transaction (`SessionState::read_outside_transaction`):
    /// a text read, or the execute of a prepared one without a cursor (a cursor's rows are
    /// fetched later, when the transaction may have begun), on the session's pinned
    /// connection.
    fn outside_read(
        &self,
        session: &SessionState,
        c: &Classified,
        route: Route,
        command: BackendCommand<'_>,
    ) -> Option<OutsideRead> {
        if !matches!(route.target, Target::Pinned(..)) {
            return None;
        }
        let (one_answer, text) = match command {
            BackendCommand::Raw(p) => (p.first() == Some(&COM_QUERY), p.get(1..).unwrap_or(&[])),
            BackendCommand::Execute { sql, body } => (body.first() == Some(&0), sql.as_bytes()),
        };
        let h = self.held.as_ref().filter(|_| one_answer)?;
        session
            .read_outside_transaction(
                c,
                PinnedFacts {
                    deferred_begin: h.conn.deferred_begin.is_some(),
                    serializable_once: h.conn.serializable_once,
                    server_reads_committed: h.conn.server_reads_committed,
                },
            )
            .filter(|_| !reads_transaction_state(c, text))
    }

    /// After a statement whose warnings show a routine left the held connection without
    /// its database (`Diagnostics::left_without_database`): the connection and the session
    /// in it have none now, as on the server.
    pub(super) fn forget_database_if_left(&mut self, session: &mut SessionState, d: &Diagnostics) {
        if !d.left_without_database() {
            return;
        }
        if let Some(h) = self.held.as_mut() {
            if session.schema == h.conn.schema {
                session.schema = None;
            }
            h.conn.schema = None;
        }
    }

    /// A plain BEGIN in autocommit mode is answered here and reaches the primary in front of
    /// the transaction's first statement; a plain COMMIT or ROLLBACK of a transaction that
    /// sent nothing yet ends it here. Returns the answer given, None when the statement goes
    /// to the backend as usual.
    async fn answer_transaction_control<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        route: Route,
        command: BackendCommand<'_>,
    ) -> Result<Option<ResponseSummary>, Failure> {
        if !matches!(c.kind, Kind::Begin | Kind::Commit | Kind::Rollback) {
            return Ok(None);
        }
        let text: &[u8] = match command {
            BackendCommand::Raw(p) if p.first() == Some(&COM_QUERY) => &p[1..],
            BackendCommand::Execute { sql, .. } => sql.as_bytes(),
            BackendCommand::Raw(_) => return Ok(None),
        };
        let plain = std::str::from_utf8(text)
            .ok()
            .and_then(crate::sql::classify::plain_transaction_control);
        let in_trans = StatusFlags::SERVER_STATUS_IN_TRANS.bits();
        let status = match plain {
            Some(Kind::Begin)
                if session.autocommit
                    && !session.in_transaction
                    && session.pending.is_empty()
                    && matches!(route.target, Target::Primary(..) | Target::Pinned(..)) =>
            {
                self.hold_for(session, route).await?;
                let Some(h) = self.held.as_mut() else {
                    return Err(no_backend_connection());
                };
                h.conn.deferred_begin = Some([&[COM_QUERY][..], text].concat());
                session.status_flags() | in_trans
            }
            Some(Kind::Commit | Kind::Rollback) if session.pending.is_empty() => {
                match self.held.as_mut() {
                    Some(h) if h.conn.deferred_begin.is_some() => h.conn.deferred_begin = None,
                    _ => return Ok(None),
                }
                session.status_flags() & !in_trans
            }
            _ => return Ok(None),
        };
        let ok = OkInfo {
            status,
            ..OkInfo::default()
        };
        client
            .write_packet(1, &encode_ok(ok, b""))
            .await
            .map_err(Failure::Client)?;
        let summary = ResponseSummary {
            status: Some(status),
            ok: Some(ok),
            ..ResponseSummary::default()
        };
        self.finish(session, c, Ok(summary)).map(Some)
    }

    /// The bytes of `command` for the held connection (a prepared statement's server id there,
    /// preparing it first when needed).
    async fn command_bytes(
        &mut self,
        command: BackendCommand<'_>,
    ) -> io::Result<Result<Vec<u8>, MysqlError>> {
        match command {
            BackendCommand::Raw(p) => Ok(Ok(p.to_vec())),
            BackendCommand::Execute { sql, body } => {
                let deprecate_eof = self.deprecate_eof;
                let Some(h) = self.held.as_mut() else {
                    return Err(io::Error::other("no backend connection"));
                };
                let id = match ensure_prepared(&mut h.conn, sql, deprecate_eof).await? {
                    Ok(id) => id,
                    Err(e) => return Ok(Err(e)),
                };
                let mut p = Vec::with_capacity(5 + body.len());
                p.push(COM_STMT_EXECUTE);
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(body);
                Ok(Ok(p))
            }
        }
    }

    pub(super) fn finish(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        result: Result<ResponseSummary, RelayError>,
    ) -> Result<ResponseSummary, Failure> {
        match result {
            Ok(summary) => {
                session.after_statement(c, &summary);
                if let (Some(SessionChange::Schema(db)), None, Some(h)) =
                    (&c.session, &summary.error, self.held.as_mut())
                {
                    h.conn.schema = Some(db.clone());
                }
                if let (Some(SessionChange::Vars(_)), None, Some(h)) =
                    (&c.session, &summary.error, self.held.as_mut())
                {
                    h.conn.state_signature = session.signature();
                }
                self.release_if_unpinned(session);
                Ok(summary)
            }
            Err(RelayError::Client(e)) => {
                // The backend may be mid-response: it cannot be reused.
                self.held = None;
                Err(Failure::Client(e))
            }
            Err(RelayError::Backend(e)) => {
                let addr = self
                    .held
                    .take()
                    .map(|h| h.conn.addr.to_string())
                    .unwrap_or_default();
                Err(Failure::BackendLost(MysqlError::new(
                    2013,
                    "HY000",
                    format!("Lost connection to backend {addr} during query: {e}"),
                )))
            }
        }
    }

    async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<(), Failure> {
        let route = self.route(c);
        self.run_on_backend(
            client,
            session,
            c,
            route,
            BackendCommand::Raw(payload),
            kind,
        )
        .await
        .map(|_| ())
    }

    /// COM_REFRESH goes to the primary as the FLUSH it stands for would (the server carries
    /// out its flags: FLUSH TABLES cannot be combined with the others in one statement).
    /// Like FLUSH it commits the open transaction, so pending writes go through the log
    /// first.
    async fn com_refresh<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: &[u8],
    ) -> Result<(), Failure> {
        let flags = payload.get(1).copied().unwrap_or(0);
        if let Some(refusal) = refresh_refusal(flags) {
            return Err(Failure::Answer(refusal));
        }
        const STANDS_FOR: &str = "FLUSH TABLES";
        let c = self.ctx.classify_cache.classify(STANDS_FOR);
        let route = self.route(&c);
        self.settle_pending(client, session, &c, STANDS_FOR, route)
            .await?;
        self.forward(client, session, &c, payload, ResponseKind::Single)
            .await
    }

    async fn com_set_option<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), Failure> {
        let on = match payload.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]])) {
            Some(0) => true,
            Some(1) => false,
            _ => {
                return Err(Failure::Answer(MysqlError::new(
                    1047,
                    "08S01",
                    "Unknown command",
                )))
            }
        };
        // The backend must parse several statements too (PHP's mysqli::multi_query turns it
        // on just for its query): later connections are taken from the pool with the bit as
        // the session now has it, and a connection the session holds is switched itself.
        session.multi_statements = on;
        self.caps.set(CapabilityFlags::CLIENT_MULTI_STATEMENTS, on);
        if let Some(h) = self.held.as_mut() {
            let switched = async {
                h.conn.stream.write_packet(0, payload).await?;
                read_response(&mut h.conn.stream, ResponseKind::Single, self.deprecate_eof).await
            };
            match switched.await {
                Ok(answer) if answer.error.is_none() => {
                    let bit = CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits();
                    h.conn.caps_key = if on {
                        h.conn.caps_key | bit
                    } else {
                        h.conn.caps_key & !bit
                    };
                }
                Ok(answer) => return Err(Failure::Answer(answer.error.unwrap_or_else(malformed))),
                Err(e) => {
                    return Err(Failure::BackendLost(MysqlError::new(
                        2013,
                        "HY000",
                        format!("Lost connection to backend {}: {e}", h.conn.addr),
                    )))
                }
            }
        }
        let eof = encode_terminator(session.status_flags(), 0, self.deprecate_eof);
        client
            .write_packet(seq, &eof)
            .await
            .map_err(Failure::Client)?;
        Ok(())
    }

    async fn com_reset_connection<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        seq: u8,
    ) -> Result<(), Failure> {
        self.reset_backend(session).await;
        // A pool resetting a connection on checkout gets a fresh start of its reads too.
        self.connected_at = self.ctx.log_ends();
        session.reset(self.primary_starts_without_backslash_escapes(router::DEFAULT_SHARD, None));
        self.reply_ok(client, session, seq).await
    }

    /// Resets a held connection so it can go back to the pool, or drops it.
    async fn reset_backend(&mut self, session: &SessionState) {
        if let Some(mut h) = self.held.take() {
            if session.is_pinned() {
                match h
                    .conn
                    .simple_command(crate::backend::conn::COM_RESET_CONNECTION, &[])
                    .await
                {
                    Ok(Ok(_)) => {
                        h.conn.state_signature =
                            crate::session::signature_of(h.conn.base_collation, &[]);
                    }
                    _ => return,
                }
            }
            self.check_in(h.shard, h.replica, h.conn);
        }
    }

    /// Returns Ok(false) when the session must end (failed re-authentication).
    async fn com_change_user<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: &[u8],
        seq: u8,
    ) -> io::Result<bool> {
        let Some(cu) = decode_change_user(payload, self.caps) else {
            client.write_packet(seq, &malformed().encode()).await?;
            return Ok(false);
        };
        let ChangeUser {
            user,
            auth_response,
            database: db,
            collation,
            plugin,
        } = cu;
        let collation = collation.unwrap_or(session.collation);
        let outcome = self
            .ctx
            .auth
            .authenticate(
                client,
                &user,
                plugin.as_deref(),
                &auth_response,
                &self.nonce,
                seq,
                self.secure,
            )
            .await?;
        let seq = match outcome {
            (seq, Ok(())) => seq,
            (seq, Err(e)) => {
                client.write_packet(seq, &e.encode()).await?;
                return Ok(false);
            }
        };
        self.reset_backend(session).await;
        // The new session's reads start from now, which covers the old one's writes.
        self.connected_at = self.ctx.log_ends();
        let multi = session.multi_statements;
        self.registry_entry.set_user(&user);
        *session = SessionState::new(user, db, collation, multi);
        let granted = self.ctx.grant_access(session);
        if let Err(e) = granted {
            client.write_packet(seq, &e.encode()).await?;
            return Ok(false);
        }
        if let Err(e) = self.check_login(session).await {
            client.write_packet(seq, &e.encode()).await?;
            return Ok(false);
        }
        let ok = encode_ok(
            OkInfo {
                status: session.status_flags(),
                ..OkInfo::default()
            },
            b"",
        );
        client.write_packet(seq, &ok).await?;
        Ok(true)
    }

    async fn com_stmt_prepare<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: &[u8],
        diagnostics: Option<Diagnostics>,
    ) -> Result<(), Failure> {
        // Prepared texts are kept as text and prepared again on other connections; bytes
        // that are not UTF-8 could not be kept exactly, so they are refused rather than
        // changed (values belong in parameters, which travel as sent).
        let Ok(text) = std::str::from_utf8(&payload[1..]) else {
            return Err(Failure::Answer(MysqlError::not_supported(
                "a prepared statement's text must be valid UTF-8 (this one holds other bytes, \
                 e.g. a latin1 or binary literal); pass such values as parameters",
            )));
        };
        if session.no_backslash_escapes
            && text.contains('\\')
            && crate::sql::lexer::backslashes_move_tokens(text)
        {
            // The text is kept, judged and logged as it is: lexed as the server lexes it
            // here, its strings would end elsewhere than in every check the proxy makes.
            return Err(Failure::Answer(MysqlError::not_supported(
                "a prepared statement whose string literals end elsewhere under \
                 NO_BACKSLASH_ESCAPES (a backslash before a quote): pass the value as a \
                 parameter",
            )));
        }
        let (digest, c) = self.ctx.classify_cache.classify_keyed(text);
        let (sql, c, own_payload): (Arc<str>, _, _) =
            match self.with_own_connection_id(text, payload, &c)? {
                // The payload keeps the COM_STMT_PREPARE byte.
                Some((own, payload, c)) => (Arc::from(own), c, Some(payload)),
                None => (Arc::from(text), c, None),
            };
        let payload = own_payload.as_deref().unwrap_or(payload);
        // Prepared on the primary (or the pinned connection) for the client's metadata; the
        // statement is not tied to that connection: executes prepare it where they run.
        let route = self.route(&c);
        match route.target {
            // As MySQL answers statements its prepared protocol does not take.
            Target::Proxy => {
                return Err(Failure::Answer(MysqlError::new(
                    1295,
                    "HY000",
                    "This command is not supported in the prepared statement protocol: \
                     myquorum's own statements (SHOW PROXY …, PROXY …) run as text queries",
                )))
            }
            Target::Nothing => {
                return Err(Failure::Answer(MysqlError::new(
                    1065,
                    "42000",
                    "Query was empty",
                )))
            }
            _ => {}
        }
        self.note_route(&sql, &c, route, session);
        // Preparing runs nothing: the server's transaction is as it was.
        let fresh = session.server_txn_fresh;
        session.before_statement(&c);
        self.hold_for(session, route).await?;
        let client_id = session.alloc_stmt_id();
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let result = match h.conn.stream.write_packet(0, payload).await {
            Ok(_) => {
                relay_response(
                    &mut h.conn.stream,
                    client,
                    ResponseKind::Prepare,
                    deprecate_eof,
                    Some(client_id),
                )
                .await
            }
            Err(e) => Err(RelayError::Backend(e)),
        };
        if let Ok(summary) = &result {
            if let Some(p) = summary.prepare {
                // Preparing SHOW WARNINGS (PDO's native prepares) keeps what it will read.
                if diagnostics.is_some() && crate::sql::diagnostics::parse(&sql).is_some() {
                    session.diagnostics = diagnostics;
                }
                executor::keep_prepared(&mut h.conn, sql.clone(), p.statement_id);
                session.prepared.insert(
                    client_id,
                    PreparedStatement {
                        num_params: p.num_params,
                        num_columns: p.num_columns,
                        classified: c.clone(),
                        digest,
                        sql,
                        param_types: None,
                        long_data: Default::default(),
                        long_data_too_large: false,
                    },
                );
            }
        }
        let prepared = self.finish(session, &c, result).map(|_| ());
        session.server_txn_fresh = fresh && prepared.is_ok();
        prepared
    }

    /// COM_STMT_EXECUTE / SEND_LONG_DATA / CLOSE / RESET / FETCH. An execute goes where its
    /// statement routes (a replica for plain autocommit reads, else the primary or the pinned
    /// connection) and the statement is prepared there on first use; parameter types are
    /// always sent, since that connection may never have seen them. Long data and cursors
    /// live on one server statement: they pin the session to its connection.
    async fn com_stmt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        payload: Vec<u8>,
        diagnostics: Option<Diagnostics>,
    ) -> Result<(), Failure> {
        let command = payload[0];
        let Some(id_bytes) = payload.get(1..5) else {
            if matches!(command, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
                return Ok(());
            }
            return Err(Failure::Answer(malformed()));
        };
        let client_id = u32::from_le_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
        let op = match command {
            COM_STMT_EXECUTE => "mysqld_stmt_execute",
            COM_STMT_RESET => "mysqld_stmt_reset",
            COM_STMT_FETCH => "mysqld_stmt_fetch",
            _ => "",
        };
        let Some(stmt) = session.prepared.get(&client_id).cloned() else {
            // CLOSE and SEND_LONG_DATA have no response, even for unknown ids (as in MySQL).
            if op.is_empty() {
                return Ok(());
            }
            return Err(Failure::Answer(unknown_stmt(client_id, op)));
        };
        if let (COM_STMT_EXECUTE, Some(d)) = (command, diagnostics) {
            if let Some(q) = crate::sql::diagnostics::parse(&stmt.sql) {
                return self.answer_diagnostics(client, session, d, &q, true).await;
            }
        }
        match command {
            COM_STMT_CLOSE => {
                // Server statements stay prepared on the connections that ran it (reused
                // by the next session running the same text); the client id is gone.
                session.prepared.remove(&client_id);
                session.unpin(PinReason::PreparedStatement);
                self.release_if_unpinned(session);
                Ok(())
            }
            COM_STMT_SEND_LONG_DATA => {
                // [0x18][statement:4][parameter:2][data]; kept until the execute puts it
                // inline. No answer, whatever happens (as on MySQL).
                let cap = self.ctx.config.proxy.max_packet_size;
                if let (Some(p), Some(param)) =
                    (session.prepared.get_mut(&client_id), payload.get(5..7))
                {
                    let param = u16::from_le_bytes([param[0], param[1]]);
                    let held: usize = p.long_data.values().map(Vec::len).sum();
                    if held + payload.len() - 7 > cap {
                        p.long_data_too_large = true;
                    } else if param < p.num_params {
                        p.long_data
                            .entry(param)
                            .or_default()
                            .extend_from_slice(&payload[7..]);
                    }
                }
                Ok(())
            }
            COM_STMT_RESET | COM_STMT_FETCH => {
                if let Some(p) = session.prepared.get_mut(&client_id) {
                    if command == COM_STMT_RESET {
                        p.long_data.clear();
                        p.long_data_too_large = false;
                    }
                }
                let prepared_here = self
                    .held
                    .as_ref()
                    .is_some_and(|h| h.conn.prepared_id(&stmt.sql).is_some());
                if !prepared_here {
                    if command == COM_STMT_FETCH {
                        return Err(Failure::Answer(MysqlError::new(
                            1421,
                            "HY000",
                            "The statement has no open cursor",
                        )));
                    }
                    // Nothing is buffered for it anywhere: a reset is a no-op.
                    return self.reply_ok(client, session, 1).await;
                }
                let bytes = self.on_held_connection(session, &stmt, &payload).await?;
                let kind = if command == COM_STMT_FETCH {
                    ResponseKind::Rows
                } else {
                    ResponseKind::Single
                };
                let deprecate_eof = self.deprecate_eof;
                let Some(h) = self.held.as_mut() else {
                    return Err(Failure::Answer(unknown_stmt(client_id, op)));
                };
                let poll = answer_poll(&self.ctx);
                let result =
                    send_and_relay(&mut h.conn, client, &bytes, kind, deprecate_eof, true, poll)
                        .await;
                self.finish(session, &stmt.classified, result).map(|_| ())
            }
            _ => {
                self.stmt_execute(client, session, client_id, stmt, payload)
                    .await
            }
        }
    }

    /// `payload` (a statement command with the client's id) for the held connection: the
    /// statement prepared there first if needed, its server id in place of the client's.
    async fn on_held_connection(
        &mut self,
        session: &mut SessionState,
        stmt: &PreparedStatement,
        payload: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let id = match ensure_prepared(&mut h.conn, &stmt.sql, deprecate_eof).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return Err(Failure::Answer(e)),
            Err(e) => {
                return self
                    .finish(session, &stmt.classified, Err(RelayError::Backend(e)))
                    .map(|_| Vec::new())
            }
        };
        let mut bytes = payload.to_vec();
        bytes[1..5].copy_from_slice(&id.to_le_bytes());
        Ok(bytes)
    }

    async fn stmt_execute<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        client_id: u32,
        mut stmt: PreparedStatement,
        payload: Vec<u8>,
    ) -> Result<(), Failure> {
        if let Some(call) = self.stored_function_call(&stmt.classified, &stmt.sql) {
            stmt.classified = call;
        }
        if !crate::session::plain_read(&stmt.classified) {
            session.server_txn_fresh = false;
        }
        self.end_replica_affinity(session, &stmt.classified);
        let class = writes::classify_write(&stmt.classified, &stmt.sql, session)
            .map_err(Failure::Answer)?;
        let flags = payload.get(5).copied().unwrap_or(0);
        let (normalized, long_data, too_large) = match session.prepared.get_mut(&client_id) {
            Some(p) => (
                normalize_execute(&payload, p.num_params, &mut p.param_types),
                std::mem::take(&mut p.long_data),
                std::mem::take(&mut p.long_data_too_large),
            ),
            None => (None, Default::default(), false),
        };
        let Some(mut params) = normalized else {
            return Err(Failure::Answer(malformed()));
        };
        if too_large {
            return Err(Failure::Answer(MysqlError::new(
                1153,
                "08S01",
                format!(
                    "Parameters of the prepared statement sent with mysql_stmt_send_long_data() \
                     exceed 'max_allowed_packet' ({} bytes); raise proxy.max_packet_size",
                    self.ctx.config.proxy.max_packet_size
                ),
            )));
        }
        // Types always travel and long data goes inline: the backend may get this execute in
        // more frames than the client sent (the client stream renumbers its answer).
        if !long_data.is_empty() {
            // Inline, the execute stands alone: replicated like any prepared write, and run
            // on whichever connection the statement routes to.
            params = match inline_long_data(&params, stmt.num_params, &long_data) {
                Ok(p) => p,
                Err(InlineError::Malformed) => return Err(Failure::Answer(malformed())),
                Err(InlineError::NotAString(i)) => {
                    return Err(Failure::Answer(MysqlError::new(
                        1210,
                        "HY000",
                        format!(
                            "Incorrect arguments to mysqld_stmt_execute: long data sent for \
                             parameter {i}, whose type is not a string or blob"
                        ),
                    )))
                }
            };
        }
        if !crate::protocol::execute::values_fit(&params, stmt.num_params) {
            // The server would read a value cut short from past the packet's end.
            return Err(Failure::Answer(malformed()));
        }
        self.ctx.counters.statements.fetch_add(1, Ordering::Relaxed);
        if stmt.classified.flags.contains(Flags::SEQUENCE) {
            let execute = writes::PreparedExecute {
                text: stmt.sql.clone(),
                params,
                num_params: stmt.num_params,
            };
            return self
                .execute_with_sequences(client, session, &stmt.classified, execute, &payload)
                .await;
        }
        match class {
            WriteClass::Dml => {
                let route = self.route(&stmt.classified);
                if stmt.classified.kind == Kind::Call
                    && self
                        .check_call(session, &stmt.classified, route, &stmt.sql)
                        .await?
                {
                    self.commit_pending::<S>(
                        None,
                        session,
                        &stmt.classified,
                        route,
                        CHAINED_COMMIT,
                    )
                    .await?;
                }
                return self
                    .run_dml(
                        client,
                        session,
                        &stmt.classified,
                        route,
                        &stmt.sql,
                        &payload,
                        Some(writes::PreparedExecute {
                            text: stmt.sql.clone(),
                            params,
                            num_params: stmt.num_params,
                        }),
                        &[],
                    )
                    .await;
            }
            WriteClass::Ddl => {
                return Err(Failure::Answer(MysqlError::not_supported(
                    "prepared DDL is not replicated; send DDL as a text statement",
                )))
            }
            WriteClass::Local | WriteClass::None => {}
        }
        writes::refuse_unreplicable(&stmt.classified, &stmt.sql).map_err(Failure::Answer)?;
        let route = self.route(&stmt.classified);
        if self
            .settle_pending(client, session, &stmt.classified, &stmt.sql, route)
            .await?
        {
            return Ok(());
        }
        // A releasing COMMIT or ROLLBACK goes as its text (`releasing_end`): its answer is an
        // OK packet, the same for a text query.
        let releasing = releasing_end(&stmt.classified, &stmt.sql, session)
            .map(|end| [&[COM_QUERY][..], end.on_primary().as_bytes()].concat());
        // A cursor stays open on the connection that executes it.
        let cursor = flags != 0;
        let route = if cursor {
            session.pin(PinReason::PreparedStatement);
            self.route(&stmt.classified)
        } else {
            self.route_statement(&stmt.classified, session)
        };
        self.note_route(&stmt.sql, &stmt.classified, route, session);
        self.count_route(route);
        // Types always travel: the connection that runs it may have just prepared it.
        let mut body = Vec::with_capacity(params.len());
        body.extend_from_slice(&params);
        if let Some(f) = body.first_mut() {
            *f = flags;
        }
        let command = match &releasing {
            Some(text) => BackendCommand::Raw(text),
            None => BackendCommand::Execute {
                sql: &stmt.sql,
                body: &body,
            },
        };
        let summary = self
            .run_on_backend(
                client,
                session,
                &stmt.classified,
                route,
                command,
                ResponseKind::ResultSets,
            )
            .await?;
        self.after_forwarded(
            session,
            &stmt.classified,
            &stmt.sql,
            summary.error.is_none(),
        );
        if releasing.is_some() && summary.error.is_none() {
            return Err(released());
        }
        if let Some(e) = &summary.error {
            self.forget_rolled_back(session, &stmt.classified, route, e.code)
                .await?;
        }
        Ok(())
    }
}

/// What EXPLAIN LAST STATEMENT reports.
pub struct LastStatement {
    /// The text (first 200 characters).
    pub sql: String,
    pub classified: Arc<Classified>,
    pub route: Route,
    pub consistency: router::Consistency,
    pub last_write_ts: u64,
}

/// Sends one client command on the session's backend connection and relays the answer.
async fn send_and_relay<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    client: &mut PacketStream<S>,
    payload: &[u8],
    kind: ResponseKind,
    deprecate_eof: bool,
    reads_clock: bool,
    poll: Option<std::time::Duration>,
) -> Result<ResponseSummary, RelayError> {
    start_command(conn, payload, deprecate_eof, reads_clock, poll)
        .await
        .map_err(RelayError::Backend)?;
    relay_response(&mut conn.stream, client, kind, deprecate_eof, None).await
}

/// Whether a read would answer differently outside the client's transaction on the same
/// connection: it reads the transaction's or autocommit's state (`@@in_transaction`,
/// `@@autocommit`: `SET autocommit = 1` runs in front of it), or what the previous
/// statement left (warnings, ROW_COUNT(), FOUND_ROWS(), which that SET replaces). A word
/// seen anywhere in the text counts: such a read only stays in the transaction.
fn reads_transaction_state(c: &Classified, text: &[u8]) -> bool {
    const WORDS: [&[u8]; 5] = [
        b"autocommit",
        b"in_transaction",
        b"row_count",
        b"warning_count",
        b"error_count",
    ];
    c.flags
        .intersects(Flags::WARNINGS_QUERY | Flags::FOUND_ROWS | Flags::LAST_INSERT_ID)
        || WORDS.iter().any(|word| {
            text.windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word))
        })
}

/// Runs a plain read of a READ COMMITTED transaction outside the server's transaction
/// (`session::OutsideRead`) and relays its answer showing `shown`, the session's autocommit
/// and transaction flags: the client is in its transaction still.
async fn relay_outside_transaction<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    client: &mut PacketStream<S>,
    payload: &[u8],
    kind: ResponseKind,
    deprecate_eof: bool,
    how: OutsideRead,
    shown: ShownStatus,
) -> Result<ResponseSummary, RelayError> {
    // The client's BEGIN stays queued for the transaction's next statement.
    let begin = conn.deferred_begin.take();
    let toggled = how == OutsideRead::AutocommitOn;
    if toggled {
        // No transaction is open (`SessionState::server_txn_fresh`): nothing commits.
        conn.stream
            .queue_packet(0, &crate::replication::replay::query("SET autocommit = 1"));
    }
    let reset = queue_timestamp_reset(conn);
    conn.stream.queue_packet(0, payload);
    if toggled {
        conn.stream
            .queue_packet(0, &crate::replication::replay::query("SET autocommit = 0"));
    }
    let relayed = async {
        conn.stream.flush().await.map_err(RelayError::Backend)?;
        if toggled {
            expect_ok(&mut conn.stream, deprecate_eof, "SET autocommit = 1").await?;
        }
        if reset {
            read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof)
                .await
                .map_err(RelayError::Backend)?;
        }
        let summary =
            relay_response_showing(&mut conn.stream, client, kind, deprecate_eof, shown).await?;
        if toggled {
            expect_ok(&mut conn.stream, deprecate_eof, "SET autocommit = 0").await?;
        }
        Ok(summary)
    }
    .await;
    conn.deferred_begin = begin;
    relayed
}

/// Reads the answer to a statement of the proxy's own that must succeed; an error ends the
/// backend connection (the session's state there is no longer known).
async fn expect_ok(
    stream: &mut PacketStream<crate::backend::conn::BackendSocket>,
    deprecate_eof: bool,
    what: &str,
) -> Result<(), RelayError> {
    let answer = read_response(stream, ResponseKind::Single, deprecate_eof)
        .await
        .map_err(RelayError::Backend)?;
    match answer.error {
        None => Ok(()),
        Some(e) => Err(RelayError::Backend(io::Error::other(format!(
            "{what} failed on the server: {e}"
        )))),
    }
}

/// Sends a command (behind the client's deferred BEGIN, and first restoring the server's
/// clock if a replicated write left it fixed and the command may read it) and waits until
/// the first frame of its answer is buffered, unread: until then the client has seen
/// nothing, so a failure can still be retried elsewhere.
async fn start_command(
    conn: &mut BackendConn,
    payload: &[u8],
    deprecate_eof: bool,
    reads_clock: bool,
    poll: Option<std::time::Duration>,
) -> io::Result<()> {
    let begin = queue_deferred_begin(conn);
    let reset = reads_clock && queue_timestamp_reset(conn);
    conn.stream.write_packet(0, payload).await?;
    if let Some(budget) = poll {
        conn.stream.poll_for_input(budget, || true);
    }
    if begin {
        let answer = read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
        if let Some(e) = answer.error {
            // The statement behind it ran outside the client's transaction: the session
            // cannot go on as if it were inside one.
            return Err(io::Error::other(format!(
                "the transaction's BEGIN failed on the server: {e}"
            )));
        }
    }
    if reset {
        read_response(&mut conn.stream, ResponseKind::Single, deprecate_eof).await?;
    }
    conn.stream.next_frame().await.map(|_| ())
}

/// A called procedure's schema (the session's when the CALL names none) and its key in
/// `ProxyContext::call_checks`; None without a schema.
pub(super) fn procedure_key(
    session: &SessionState,
    db: Option<String>,
    name: &str,
) -> Option<(String, (String, String))> {
    let db = db.or_else(|| session.schema.clone())?;
    let key = (db.to_ascii_lowercase(), name.to_ascii_lowercase());
    Some((db, key))
}

/// A statement refused (error 1235) for `why`, or allowed.
fn refused_for(why: Option<String>) -> Result<(), Failure> {
    match why {
        Some(why) => Err(Failure::Answer(MysqlError::not_supported(&why))),
        None => Ok(()),
    }
}

/// Whether a procedure's `body`, whose id-generating inserts are `generated`
/// (`generated_id_inserts`), has the one such insert its CALL's record can carry: the
/// rule CREATE PROCEDURE and a CALL's judgement must agree on.
fn carries_alone(generated: &[String], body: &str) -> bool {
    generated.len() == 1 && crate::sql::determinism::carries_its_insert_id(body)
}

/// Which kind of stored routine a body is looked up as.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum RoutineType {
    Procedure,
    Function,
}

impl RoutineType {
    /// As information_schema.ROUTINES names it.
    fn word(self) -> &'static str {
        match self {
            RoutineType::Procedure => "PROCEDURE",
            RoutineType::Function => "FUNCTION",
        }
    }
}

/// Whether a DDL's first words name a stored routine (CREATE [OR REPLACE] [DEFINER=…]
/// PROCEDURE or FUNCTION, DROP …, ALTER …).
fn mentions_routine(sql: &str) -> bool {
    crate::sql::lexer::Lexer::new(sql)
        .take(12)
        .any(|t| t.tok.is_word("PROCEDURE") || t.tok.is_word("FUNCTION"))
}

/// A COMMIT or ROLLBACK that releases (RELEASE, or `completion_type = 2`): it ends the
/// client's session, not the backend connection (`CommitEnd::on_primary`). Left to the
/// server, it closed that connection, and the proxy pooled it dead or served the client
/// on without its session.
fn releasing_end(c: &Classified, sql: &str, session: &SessionState) -> Option<CommitEnd> {
    if !matches!(c.kind, Kind::Commit | Kind::Rollback) {
        return None;
    }
    crate::sql::classify::transaction_end(sql)
        .map(|end| end.under_completion_release(session.completion_releases()))
        .filter(CommitEnd::releases)
}

/// The COMMIT of a session's pending writes ahead of a CALL that would commit them itself
/// (`check_call`): the CALL then runs in the next transaction, as in the client's.
const CHAINED_COMMIT: &str = "COMMIT AND CHAIN NO RELEASE";

/// How a session ends after its releasing COMMIT or ROLLBACK was answered.
pub(super) fn released() -> Failure {
    Failure::Client(io::Error::other(
        "the client's COMMIT or ROLLBACK … RELEASE ended the session",
    ))
}

fn reads_clock(c: &Classified) -> bool {
    !matches!(
        c.kind,
        Kind::Begin | Kind::Commit | Kind::Rollback | Kind::Savepoint
    )
}

/// A statement's backend was marked down by health checks (or replaced as primary) while
/// the statement waited for it: a hung server answers nothing, and TCP would take minutes to
/// say so. The session treats it as a lost connection.
fn backend_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the backend was marked down by health checks (or replaced as primary) while this \
         statement waited for it",
    )
}

/// Runs `op` on a held connection until it finishes or its backend is marked down (`down`,
/// the pool's watch); then `gone(backend_gone())`.
pub(super) async fn until_down<T, E>(
    down: &watch::Receiver<u64>,
    op: impl std::future::Future<Output = Result<T, E>>,
    gone: impl FnOnce(io::Error) -> E,
) -> Result<T, E> {
    let mut down = down.clone();
    tokio::select! {
        r = op => r,
        _ = down.changed() => Err(gone(backend_gone())),
    }
}

/// The session has no backend connection where one was just acquired (it was lost).
pub(super) fn no_backend_connection() -> Failure {
    Failure::Answer(MysqlError::new(2003, "HY000", "no backend connection"))
}

/// What a statement sends to its backend: raw command bytes, or a prepared statement's
/// execute body (flags onward), completed with that connection's server statement id.
#[derive(Clone, Copy)]
pub(super) enum BackendCommand<'a> {
    Raw(&'a [u8]),
    Execute { sql: &'a Arc<str>, body: &'a [u8] },
}

/// A statement the session must see run to stay true to its connection, when it comes
/// inside EXECUTE or EXECUTE IMMEDIATE (the server runs all of these there): it begins,
/// ends or commits a transaction (whose writes the proxy holds until COMMIT), takes table
/// locks, or changes the database or a setting that writes are replayed with. Left to the
/// server: reads, and a nested PREPARE/EXECUTE/DEALLOCATE (which the server refuses).
fn followed_by_the_session(c: &Classified) -> bool {
    match c.kind {
        Kind::Read | Kind::Other | Kind::Empty | Kind::Proxy => false,
        Kind::Session => !c.flags.contains(Flags::SQL_PREPARE),
        Kind::Write
        | Kind::Begin
        | Kind::Commit
        | Kind::Rollback
        | Kind::Savepoint
        | Kind::Ddl
        | Kind::Admin
        | Kind::Call
        | Kind::Xa
        | Kind::Lock => true,
    }
}

/// Whether a statement's text is nothing but whitespace and semicolons (no comment either).
fn only_blanks(sql: &str) -> bool {
    sql.chars().all(|c| c.is_whitespace() || c == ';')
}

/// The COM_QUERY payload for `rewritten`, a rewrite of `sql`, the text the proxy lexed for
/// `payload` (its command byte, then the client's bytes): those bytes kept wherever the
/// rewrite kept the text (`rewrite::onto_original`). A latin1 client's `'café'` beside a
/// rewritten CONNECTION_ID() was stored as `'cafx'` (the lexer's mask) before. Refused with
/// 1235 when the rewrite changed text around bytes that are not UTF-8.
pub(super) fn rewritten_payload(
    payload: &[u8],
    sql: &str,
    rewritten: &str,
) -> Result<Vec<u8>, MysqlError> {
    let original = payload.get(1..).unwrap_or_default();
    match crate::sql::rewrite::onto_original(original, sql, rewritten) {
        Some(bytes) => Ok([&payload[..1], &bytes[..]].concat()),
        None => Err(MysqlError::not_supported(
            "the proxy rewrites part of this statement (values it fixes for replication, \
             this session's CONNECTION_ID(), a computed SET) where the text holds bytes that \
             are not UTF-8 (a latin1 or binary literal); send those as a separate statement, \
             or in hex (X'…')",
        )),
    }
}

/// A session survives the loss of its pinned backend when nothing but a transaction lived
/// there: the transaction is reported rolled back (prepared statements are not tied to a
/// connection; they are prepared wherever they run next). Temporary tables, user variables,
/// locks, open cursors or long data are gone, so such sessions are closed.
fn survivable(session: &SessionState) -> bool {
    !session.pinned_beyond_transaction()
}

/// The answer for a transaction lost with its backend: the code (and SQLSTATE) drivers and
/// ORMs retry a transaction on, as Galera uses it.
fn transaction_rolled_back() -> MysqlError {
    MysqlError::new(
        1213,
        "40001",
        "myquorum: the backend serving this session was lost or replaced as primary before it \
         answered; nothing of this statement or of its open transaction was committed. Retry \
         the transaction",
    )
}

fn pin_list(session: &SessionState) -> String {
    let names: Vec<&str> = session.pin_reasons().iter().map(|r| r.name()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn com_refresh_of_replication_state_is_refused() {
        // mariadb-admin refresh: every flag but privileges, status, slave and master.
        assert!(refresh_refusal(2 | 4 | 8 | 32).is_none());
        assert!(refresh_refusal(1 | 16).is_none());
        assert_eq!(refresh_refusal(4 | 64).map(|e| e.code), Some(1235));
        assert_eq!(refresh_refusal(128).map(|e| e.code), Some(1235));
    }
}
