//! Statements that call sequences in a client session (`sql::sequences` says which can be
//! replicated): each NEXTVAL is taken on the primary first and put in as a value (a literal
//! in a text statement, a parameter the proxy adds to a prepared one's execute), LASTVAL is
//! answered from the values this session took, and the statement goes through the log with
//! `DO SETVAL` after it for the followers, so that a new primary never hands out a value a
//! logged statement used.
//!
//! Owns: the sequence half of `ClientSession`. May import: sql::sequences, frontend::writes
//! (run_dml), session, protocol.

use super::commands::{no_backend_connection, rewritten_payload, ClientSession, Failure};
use super::writes::{self, PreparedExecute, WriteClass};
use crate::protocol::relay::{MemoryIo, RelayError};
use crate::protocol::{MysqlError, PacketStream};
use crate::router::ShardId;
use crate::session::{SequenceKey, SessionState};
use crate::sql::determinism::Injected;
use crate::sql::sequences::{self, Definition, Reserved, SequenceCall, SequenceOp};
use crate::sql::{Classified, Kind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

const COM_QUERY: u8 = 0x03;

/// The values a statement's sequence calls take, and what the followers run after it.
struct Taken {
    /// One per call, in order: the value of a NEXTVAL or LASTVAL (None: NULL); SETVAL's
    /// are unused.
    values: Vec<Option<i64>>,
    /// `DO SETVAL(s, …)` for each sequence NEXTVAL advanced past what the followers already
    /// hold: to its last value, or a cache's worth further (`reserving`). None for the
    /// session's temporary sequences.
    follower_sync: Vec<String>,
    /// Reservations the record makes, noted once the quorum holds it, and the
    /// `Reservations::generation` they were made at.
    reserving: Vec<(ReservationKey, Reserved)>,
    generation: u64,
}

/// A sequence on a shard.
pub type ReservationKey = (ShardId, SequenceKey);

/// How far a logged SETVAL has put every follower's sequence, by sequence: values up to
/// there need none of their own. Only records of autocommit statements reserve (a
/// transaction's could roll back and take its SETVAL along), and any DDL through the proxy
/// clears them (ALTER SEQUENCE … RESTART may bring values back below); a reservation whose
/// record was logged before such a clear is not noted after it. A failover needs nothing:
/// the new primary applied the reserving record, so it gives values past it.
#[derive(Default)]
pub struct Reservations {
    held: dashmap::DashMap<ReservationKey, Reserved>,
    /// Clears so far.
    generation: AtomicU64,
}

impl Reservations {
    fn get(&self, key: &ReservationKey) -> Option<Reserved> {
        self.held.get(key).map(|r| *r)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Notes reservations whose record the quorum holds, taken at `generation`.
    fn note(&self, generation: u64, reserving: Vec<(ReservationKey, Reserved)>) {
        for (key, r) in reserving {
            let mut entry = self.held.entry(key).or_insert(r);
            if !sequences::covered_by(entry.high, r.high, r.increment) {
                *entry = r;
            }
        }
        if self.generation() != generation {
            // A DDL cleared them meanwhile: what was just noted may be stale.
            self.clear();
        }
    }

    /// After a DDL.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.held.clear();
    }
}

fn refused(why: &str) -> Failure {
    Failure::Answer(MysqlError::not_supported(&format!(
        "cannot replicate this statement's sequence call: {why}"
    )))
}

/// The sequence calls of a statement the classifier flagged, or why it is refused.
fn calls_in(sql: &str) -> Result<Vec<SequenceCall>, Failure> {
    let calls = sequences::check(sql).map_err(|why| refused(&why))?;
    if calls.is_empty() {
        // `NEXTVAL()`, `db.nextval(x)`: nothing to take a value for.
        return Err(refused("the proxy cannot tell which sequence it calls"));
    }
    Ok(calls)
}

/// Runs as a write naming no table when it is a SELECT or DO: its record carries the SETVALs.
fn as_write(c: &Classified) -> Classified {
    Classified {
        kind: Kind::Write,
        ..c.clone()
    }
}

impl ClientSession {
    /// Takes each NEXTVAL's value on the primary (the server's error if one fails) and each
    /// LASTVAL's from the session.
    async fn take_values(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        calls: &[SequenceCall],
    ) -> Result<Taken, Failure> {
        let generation = self.ctx.sequence_reservations.generation();
        let route = self.route_statement(c, session);
        let shard = writes::route_shard(route);
        let mut values = Vec::with_capacity(calls.len());
        // Per sequence: its name as written and the last value taken.
        let mut taken: Vec<(SequenceKey, &str, i64)> = Vec::new();
        for call in calls {
            let schema = session.schema.as_deref();
            // A temporary sequence is the session's, on the primary only: no follower has it.
            let temporary = session.temp_tables.contains(&call.name, schema);
            if temporary && call.op == SequenceOp::Set {
                return Err(refused(
                    "SETVAL of a temporary sequence (the proxy would log it for followers, \
                     which do not have it); recreate the sequence with the START you need",
                ));
            }
            let key = crate::sql::qualified_name(&call.name, schema);
            let value = match call.op {
                SequenceOp::Next => {
                    let next = format!("NEXTVAL({})", call.name);
                    let value = match self.evaluate(session, c, route, &next).await? {
                        Ok(Some(v)) if sequences::is_sequence_value(&v) => v.parse::<i64>().ok(),
                        Ok(_) => None,
                        Err(e) => return Err(Failure::Answer(e)),
                    };
                    let Some(value) = value else {
                        return Err(Failure::Answer(MysqlError::new(
                            1105,
                            "HY000",
                            format!(
                                "myquorum: {next} gave no 64-bit integer on the primary; the \
                                 statement did not run"
                            ),
                        )));
                    };
                    session.sequence_last.insert(key.clone(), value);
                    match taken.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(t) => t.2 = value,
                        None if temporary => {}
                        None => taken.push((key, &call.name, value)),
                    }
                    Some(value)
                }
                SequenceOp::Last => session.sequence_last.get(&key).copied(),
                SequenceOp::Set => None,
            };
            values.push(value);
        }
        // Only an autocommit statement's record stands alone: it may reserve.
        let may_reserve = session.autocommit && !session.in_transaction;
        let mut follower_sync = Vec::new();
        let mut reserving = Vec::new();
        for (key, name, value) in taken {
            let key = (shard, key);
            let held = self.ctx.sequence_reservations.get(&key);
            if held.is_some_and(|r| sequences::covered_by(r.high, value, r.increment)) {
                continue;
            }
            let definition = match may_reserve {
                true => self.read_definition(session, c, route, name).await?,
                false => None,
            };
            match definition.and_then(|d| Some((sequences::reservation(value, &d)?, d))) {
                Some((high, d)) => {
                    follower_sync.push(format!("DO SETVAL({name}, {high})"));
                    let increment = d.increment;
                    reserving.push((key, Reserved { high, increment }));
                }
                None => follower_sync.push(format!("DO SETVAL({name}, {value})")),
            }
        }
        Ok(Taken {
            values,
            follower_sync,
            reserving,
            generation,
        })
    }

    /// The sequence's definition as the primary has it; None when it cannot be read (the
    /// proxy then logs a SETVAL for each value).
    async fn read_definition(
        &mut self,
        session: &mut SessionState,
        c: &Classified,
        route: crate::router::Route,
        name: &str,
    ) -> Result<Option<Definition>, Failure> {
        self.hold_for(session, route).await?;
        let deprecate_eof = self.deprecate_eof;
        let Some(h) = self.held.as_mut() else {
            return Err(no_backend_connection());
        };
        let query = sequences::definition_query(name);
        match crate::executor::query_rows(&mut h.conn, &query, deprecate_eof).await {
            Ok(Ok(rows)) => Ok(rows
                .first()
                .and_then(|row| sequences::parse_definition(row))),
            Ok(Err(e)) => {
                tracing::debug!(sequence = name, error = %e, "sequence definition unreadable; a SETVAL per value");
                Ok(None)
            }
            Err(e) => self
                .finish(session, c, Err(RelayError::Backend(e)))
                .map(|_| None),
        }
    }

    /// Runs a text statement that calls a sequence (`Flags::SEQUENCE`).
    pub(super) async fn run_with_sequences<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
        payload: &[u8],
    ) -> Result<(), Failure> {
        if c.statements > 1 {
            // `com_query` runs a multi-statement text calling a sequence one by one.
            return Err(refused(
                "it is part of a multi-statement text; send it as a statement of its own",
            ));
        }
        let calls = calls_in(sql)?;
        // Refused before any value is taken (the session's writes are refused, …).
        let class = writes::classify_write(&as_write(c), sql, session).map_err(Failure::Answer)?;
        let taken = self.take_values(session, c, &calls).await?;
        let text = sequences::with_values(sql, &calls, &taken.values);
        let payload = rewritten_payload(payload, sql, &text).map_err(Failure::Answer)?;
        let rewritten = self.ctx.classify_cache.classify(&text);
        let sets = calls.iter().any(|call| call.op == SequenceOp::Set);
        if taken.follower_sync.is_empty() && !sets {
            // LASTVAL only, or values the followers' sequences already cover.
            return Box::pin(self.run_statement(client, session, rewritten, &text, &payload)).await;
        }
        if rewritten.kind == Kind::Session || class == WriteClass::Local {
            // `SET @id = NEXTVAL(s)`, or a write to a temporary table (the primary's alone):
            // the SETVAL goes through the log by itself first; the client hears the
            // statement's own answer. Its value may leave the session, so no later primary
            // may hand it out again.
            self.log_follower_sync(session, taken).await?;
            return Box::pin(self.run_statement(client, session, rewritten, &text, &payload)).await;
        }
        let write = Arc::new(as_write(&rewritten));
        self.run_logged(client, session, &write, &text, &payload, None, taken)
            .await
    }

    /// Logs `taken`'s SETVALs for the followers in a record of their own (with `DO 0`,
    /// which is all the primary runs), its answer dropped.
    async fn log_follower_sync(
        &mut self,
        session: &mut SessionState,
        taken: Taken,
    ) -> Result<(), Failure> {
        const NOTHING: &str = "DO 0";
        let write = Arc::new(as_write(&self.ctx.classify_cache.classify(NOTHING)));
        let payload = [&[COM_QUERY][..], NOTHING.as_bytes()].concat();
        let mut answer = PacketStream::new(MemoryIo::keeping());
        self.run_logged(&mut answer, session, &write, NOTHING, &payload, None, taken)
            .await
    }

    /// Runs the statement, with its values in, through the log, followed by the SETVALs for
    /// the followers. Its reservations hold once its record is committed (an autocommit
    /// statement that succeeded).
    #[allow(clippy::too_many_arguments)]
    async fn run_logged<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        write: &Arc<Classified>,
        text: &str,
        payload: &[u8],
        prepared: Option<PreparedExecute>,
        taken: Taken,
    ) -> Result<(), Failure> {
        let route = self.route_statement(write, session);
        self.note_route(text, write, route, session);
        self.count_route(route);
        let sync = &taken.follower_sync;
        let ran = self
            .run_dml(client, session, write, route, text, payload, prepared, sync)
            .await;
        if ran.is_ok() && session.pending.is_empty() && !session.in_transaction {
            let reservations = &self.ctx.sequence_reservations;
            reservations.note(taken.generation, taken.reserving);
        }
        ran
    }

    /// Runs the execute of a prepared statement that calls a sequence: its NEXTVAL and
    /// LASTVAL calls become placeholders of the statement the primary and the followers
    /// prepare, whose values the proxy adds to the client's, always through the log.
    pub(super) async fn execute_with_sequences<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        execute: PreparedExecute,
        payload: &[u8],
    ) -> Result<(), Failure> {
        let calls = calls_in(&execute.text)?;
        let write = Arc::new(as_write(c));
        if writes::classify_write(&write, &execute.text, session).map_err(Failure::Answer)?
            == WriteClass::Local
        {
            return Err(refused(
                "a prepared write to a temporary table that calls a sequence; send it as text",
            ));
        }
        let taken = self.take_values(session, c, &calls).await?;
        let (text, positions) = sequences::with_placeholders(&execute.text, &calls);
        let injected: Vec<(u16, Injected)> = positions
            .into_iter()
            .zip(
                calls
                    .iter()
                    .zip(&taken.values)
                    .filter(|(call, _)| call.op != SequenceOp::Set),
            )
            .map(|(at, (_, v))| (at, v.map_or(Injected::Null, Injected::Signed)))
            .collect();
        let execute = execute.with_calls_replaced(&text, &injected)?;
        self.run_logged(
            client,
            session,
            &write,
            &text,
            payload,
            Some(execute),
            taken,
        )
        .await
    }
}
