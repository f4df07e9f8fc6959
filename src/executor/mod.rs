//! Runs a route's backend side: gets the connection a route names (the pinned one, or a
//! pooled one) and brings it to the session's state (schema, variables, character set)
//! before the statement is relayed.
//!
//! Owns: connection acquisition and state restore. May import: backend, session, router.

pub mod write;

use crate::backend::conn::{COM_INIT_DB, COM_QUERY, COM_RESET_CONNECTION};
use crate::backend::{BackendConn, Cluster};
use crate::protocol::MysqlError;
use crate::router::{ReplicaId, ShardId};
use crate::session::{signature_of, SessionState};
use mysql_common::constants::CapabilityFlags;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("backend {addr} (shard {shard}, {role}) is unreachable: {source}; check that the server is running, then retry")]
    Unreachable {
        addr: String,
        shard: u32,
        role: &'static str,
        source: io::Error,
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
}

impl AcquireError {
    pub fn to_mysql(&self) -> MysqlError {
        match self {
            AcquireError::Restore(e) => e.clone(),
            other => MysqlError::new(2003, "HY000", other.to_string()),
        }
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
    let unreachable = |source| AcquireError::Unreachable {
        addr: pool.addr.to_string(),
        shard: shard.0,
        role,
        source,
    };
    let mut conn = pool
        .checkout(caps, session.collation, session.schema.as_deref())
        .await
        .map_err(unreachable)?;
    if conn.schema.is_some() && session.schema.is_none() {
        // No command leaves a connection without a default schema: open a fresh one.
        conn = pool
            .connect(caps, session.collation, None)
            .await
            .map_err(unreachable)?;
    }
    match restore_state(&mut conn, session).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => Err(AcquireError::Restore(e)),
        Err(e) => Err(unreachable(e)),
    }
}

/// Applies the session's schema and variables to `conn` where they differ.
pub async fn restore_state(
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
    if let Some(db) = &session.schema {
        if conn.schema.as_deref() != Some(db.as_str()) {
            if let Err(e) = conn.simple_command(COM_INIT_DB, db.as_bytes()).await? {
                return Ok(Err(e));
            }
            conn.schema = Some(db.clone());
        }
    }
    Ok(Ok(()))
}
