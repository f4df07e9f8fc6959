//! Statements that call sequences in a client session (`sql::sequences` says which can be
//! replicated): each NEXTVAL is taken on the primary first and written in as a literal,
//! LASTVAL is answered from the values this session took, and the statement goes through
//! the log with `DO SETVAL` after it for the followers, so that a new primary never hands
//! out a value a logged statement used.
//!
//! Owns: the sequence half of `ClientSession`. May import: sql::sequences, frontend::writes
//! (run_dml), session, protocol.

use super::commands::{ClientSession, Failure};
use super::writes::{self, WriteClass};
use crate::protocol::{MysqlError, PacketStream};
use crate::session::{SequenceKey, SessionState};
use crate::sql::sequences::{self, SequenceOp};
use crate::sql::{Classified, Kind};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

const COM_QUERY: u8 = 0x03;

impl ClientSession {
    /// Runs a text statement that calls a sequence (`Flags::SEQUENCE`).
    pub(super) async fn run_with_sequences<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut PacketStream<S>,
        session: &mut SessionState,
        c: &Classified,
        sql: &str,
    ) -> Result<(), Failure> {
        let refused = |why: &str| {
            Failure::Answer(MysqlError::not_supported(&format!(
                "cannot replicate this statement's sequence call: {why}"
            )))
        };
        if c.statements > 1 {
            return Err(refused(
                "it is part of a multi-statement text; send it as a statement of its own",
            ));
        }
        let calls = sequences::check(sql).map_err(|why| refused(&why))?;
        // A SELECT or DO runs as a write naming no table: its record carries the SETVALs.
        let as_write = |c: &Classified| Classified {
            kind: Kind::Write,
            ..c.clone()
        };
        // Refused before any value is taken (the session's writes are refused, …).
        let class = writes::classify_write(&as_write(c), sql, session).map_err(Failure::Answer)?;
        let route = self.route_statement(c, session);
        let mut values = Vec::with_capacity(calls.len());
        // Per sequence: its name as written and the last value taken.
        let mut taken: Vec<(SequenceKey, &str, String)> = Vec::new();
        for call in &calls {
            let key = crate::sql::qualified_name(&call.name, session.schema.as_deref());
            let value = match call.op {
                SequenceOp::Next => {
                    let next = format!("NEXTVAL({})", call.name);
                    let value = match self.evaluate(session, c, route, &next).await? {
                        Ok(Some(v)) if sequences::is_sequence_value(&v) => v,
                        Ok(other) => {
                            return Err(Failure::Answer(MysqlError::new(
                                1105,
                                "HY000",
                                format!(
                                    "myquorum: {next} gave {other:?} on the primary, not an \
                                     integer; the statement did not run"
                                ),
                            )))
                        }
                        Err(e) => return Err(Failure::Answer(e)),
                    };
                    session.sequence_last.insert(key.clone(), value.clone());
                    match taken.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(t) => t.2 = value.clone(),
                        None => taken.push((key, &call.name, value.clone())),
                    }
                    value
                }
                SequenceOp::Last => session
                    .sequence_last
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| "NULL".into()),
                SequenceOp::Set => String::new(),
            };
            values.push(value);
        }
        let text = sequences::with_values(sql, &calls, &values);
        let payload = [&[COM_QUERY][..], text.as_bytes()].concat();
        let rewritten = self.ctx.classify_cache.classify(&text);
        let sets = calls.iter().any(|call| call.op == SequenceOp::Set);
        if taken.is_empty() && !sets || class == WriteClass::Local {
            // LASTVAL only, or a write to a temporary table: a plain statement now.
            return Box::pin(self.run_statement(client, session, rewritten, &text, &payload)).await;
        }
        let follower_sync: Vec<String> = taken
            .iter()
            .map(|(_, name, value)| format!("DO SETVAL({name}, {value})"))
            .collect();
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
            &follower_sync,
        )
        .await
    }
}
