//! Statements that call sequences in a client session (`sql::sequences` says which can be
//! replicated): each NEXTVAL is taken on the primary first and put in as a value (a literal
//! in a text statement, a parameter the proxy adds to a prepared one's execute), LASTVAL is
//! answered from the values this session took, and the statement goes through the log with
//! `DO SETVAL` after it for the followers, so that a new primary never hands out a value a
//! logged statement used.
//!
//! Owns: the sequence half of `ClientSession`. May import: sql::sequences, frontend::writes
//! (run_dml), session, protocol.

use super::commands::{ClientSession, Failure};
use super::writes::{self, PreparedExecute, WriteClass};
use crate::protocol::{MysqlError, PacketStream};
use crate::session::{SequenceKey, SessionState};
use crate::sql::determinism::Injected;
use crate::sql::sequences::{self, SequenceCall, SequenceOp};
use crate::sql::{Classified, Kind};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

const COM_QUERY: u8 = 0x03;

/// The values a statement's sequence calls take, and what the followers run after it.
struct Taken {
    /// One per call, in order: the value of a NEXTVAL or LASTVAL (None: NULL); SETVAL's
    /// are unused.
    values: Vec<Option<i64>>,
    /// `DO SETVAL(s, v)` for each sequence NEXTVAL advanced, with its last value (none for
    /// the session's temporary sequences).
    follower_sync: Vec<String>,
}

fn refused(why: &str) -> Failure {
    Failure::Answer(MysqlError::not_supported(&format!(
        "cannot replicate this statement's sequence call: {why}"
    )))
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
        let route = self.route_statement(c, session);
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
        let follower_sync = taken
            .iter()
            .map(|(_, name, value)| format!("DO SETVAL({name}, {value})"))
            .collect();
        Ok(Taken {
            values,
            follower_sync,
        })
    }

    /// Runs a text statement that calls a sequence (`Flags::SEQUENCE`).
    pub(super) async fn run_with_sequences<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
    ) -> Result<(), Failure> {
        if c.statements > 1 {
            return Err(refused(
                "it is part of a multi-statement text; send it as a statement of its own",
            ));
        }
        let calls = sequences::check(sql).map_err(|why| refused(&why))?;
        if calls.is_empty() {
            // `NEXTVAL()`, `db.nextval(x)`: nothing to take a value for.
            return Err(refused("the proxy cannot tell which sequence it calls"));
        }
        // Refused before any value is taken (the session's writes are refused, …).
        let class = writes::classify_write(&as_write(c), sql, session).map_err(Failure::Answer)?;
        let taken = self.take_values(session, c, &calls).await?;
        let text = sequences::with_values(sql, &calls, &taken.values);
        let payload = [&[COM_QUERY][..], text.as_bytes()].concat();
        let rewritten = self.ctx.classify_cache.classify(&text);
        let sets = calls.iter().any(|call| call.op == SequenceOp::Set);
        if taken.follower_sync.is_empty() && !sets || class == WriteClass::Local {
            // LASTVAL only, or a write to a temporary table: a plain statement now.
            return Box::pin(self.run_statement(client, session, rewritten, &text, &payload)).await;
        }
        let write = Arc::new(as_write(&rewritten));
        let route = self.route_statement(&write, session);
        self.note_route(&text, &write, route, session);
        self.count_route(route);
        self.run_dml(
            client,
            session,
            &write,
            route,
            &text,
            &payload,
            None,
            &taken.follower_sync,
        )
        .await
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
        let calls = sequences::check(&execute.text).map_err(|why| refused(&why))?;
        if calls.is_empty() {
            return Err(refused("the proxy cannot tell which sequence it calls"));
        }
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
        let route = self.route_statement(&write, session);
        self.note_route(&text, &write, route, session);
        self.count_route(route);
        self.run_dml(
            client,
            session,
            &write,
            route,
            &text,
            payload,
            Some(execute),
            &taken.follower_sync,
        )
        .await
    }
}
