//! The primary's commits without their own fsync (`replication.primary_syncs_commits =
//! false`, the default): the proxy keeps `innodb_flush_log_at_trx_commit` at 2 on each
//! shard's primary while it leads and at 1 on its followers, switching both at every change
//! of primary, and puts the primary back to 1 when the proxy stops.
//!
//! Why it is safe: an acknowledged commit is on disk in the WAL and on a follower before the
//! primary commits (the leader counts for the quorum only once the WAL synced the record,
//! `ShardLog::holders`), and a primary that lost its last commits in a crash of its machine
//! gets them re-applied from the log (start-up recovery, or the gap fill of a former
//! primary). What it buys: one fsync (≈ 0.25 ms here) off every commit's path.
//!
//! Owns: setting the flush mode by role. May import: backend (pool connect via applier),
//! replication::{log, replay, applier}.

use super::applier::connect;
use super::log::ShardLog;
use super::replay::{Position, Replayer};
use crate::backend::BackendPool;
use crate::protocol::message::MysqlError;
use crate::router::ReplicaId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// `innodb_flush_log_at_trx_commit` while leading: written to the OS at each commit, synced
/// once a second.
pub const LEADING: u8 = 2;
/// `innodb_flush_log_at_trx_commit` while following: a hold is durable when acknowledged.
pub const FOLLOWING: u8 = 1;

/// Sets `value` on the server behind `conn`. `Ok(Some(old))` when it changed it, `Ok(None)`
/// when it already had it; the server's error when it refuses (the account lacks the
/// privilege).
async fn set(conn: &mut Replayer, value: u8) -> std::io::Result<Result<Option<u8>, MysqlError>> {
    let current = match conn
        .query_row("SELECT @@GLOBAL.innodb_flush_log_at_trx_commit")
        .await?
    {
        Ok(row) => row
            .and_then(|r| r.into_iter().next().flatten())
            .and_then(|v| v.parse::<u8>().ok()),
        Err(e) => return Ok(Err(e)),
    };
    if current == Some(value) {
        return Ok(Ok(None));
    }
    Ok(conn
        .execute(&format!(
            "SET GLOBAL innodb_flush_log_at_trx_commit = {value}"
        ))
        .await?
        .map(|()| current))
}

/// `set` over a fresh connection to `pool`'s server.
async fn set_on(
    pool: &Arc<BackendPool>,
    value: u8,
) -> std::io::Result<Result<Option<u8>, MysqlError>> {
    set(&mut connect(pool).await?, value).await
}

/// On a follower's applier connection, once its `position` was read and before its holds
/// count: back to syncing every commit (`position.durable_commits` follows).
pub async fn follow(
    log: &ShardLog,
    replica: ReplicaId,
    conn: &mut Replayer,
    position: &mut Position,
) -> std::io::Result<()> {
    log.replicas[replica.0 as usize]
        .flush_relaxed
        .store(false, Ordering::Release);
    if !log.relax_primary_flush || position.durable_commits {
        return Ok(());
    }
    let set = format!("SET GLOBAL innodb_flush_log_at_trx_commit = {FOLLOWING}");
    match conn.execute(&set).await? {
        Ok(()) => {
            position.durable_commits = true;
            tracing::info!(
                shard = log.shard.0,
                replica = replica.0,
                "follower syncs its commits again (innodb_flush_log_at_trx_commit = 1)"
            );
        }
        Err(e) => tracing::warn!(shard = log.shard.0, replica = replica.0, error = %e,
            "cannot set innodb_flush_log_at_trx_commit = 1 on a follower; its own setting stays \
             (its holds count once the WAL synced them). Grant the backend account SUPER, or \
             set replication.primary_syncs_commits = true"),
    }
    Ok(())
}

/// While `replica` leads: stops its per-commit fsync, retrying until its server answers.
/// Returns once set, or refused (then it keeps syncing, which is only slower).
pub async fn lead(log: &ShardLog, replica: ReplicaId, pool: &Arc<BackendPool>) {
    if !log.relax_primary_flush {
        return;
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = set_on(pool, LEADING).await;
        match outcome {
            Ok(Ok(changed)) => {
                log.replicas[replica.0 as usize]
                    .flush_relaxed
                    .store(true, Ordering::Release);
                if let Some(old) = changed {
                    tracing::info!(shard = log.shard.0, replica = replica.0, old,
                        "primary no longer syncs each commit (innodb_flush_log_at_trx_commit = 2): \
                         the WAL and a follower hold every acknowledged commit on disk");
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(shard = log.shard.0, replica = replica.0, error = %e,
                    "cannot set innodb_flush_log_at_trx_commit = 2 on the primary; it keeps \
                     syncing each commit (slower, as safe). Grant the backend account SUPER, or \
                     set replication.primary_syncs_commits = true to silence this");
                return;
            }
            Err(e) => {
                tracing::debug!(shard = log.shard.0, replica = replica.0, error = %e,
                    "primary unreachable; setting its flush mode later");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// At shutdown: the primary syncs each commit again, as a server without the proxy must.
pub async fn restore(log: &ShardLog, pool: &Arc<BackendPool>) {
    let leader = log.leader();
    let state = &log.replicas[leader.0 as usize];
    if !state.flush_relaxed.load(Ordering::Acquire) {
        return;
    }
    if !pool.is_up() {
        tracing::warn!(
            shard = log.shard.0,
            replica = leader.0,
            "primary down at shutdown: innodb_flush_log_at_trx_commit stays 2 there until its \
             restart or the proxy's next start; set it to 1 there if the proxy is not coming back"
        );
        return;
    }
    let outcome = set_on(pool, FOLLOWING).await;
    match outcome {
        Ok(Ok(_)) => {
            state.flush_relaxed.store(false, Ordering::Release);
            tracing::info!(
                shard = log.shard.0,
                replica = leader.0,
                "primary syncs each commit again (innodb_flush_log_at_trx_commit = 1)"
            );
        }
        Ok(Err(e)) => tracing::warn!(shard = log.shard.0, replica = leader.0, error = %e,
            "could not put innodb_flush_log_at_trx_commit back to 1 on the primary; set it there"),
        Err(e) => tracing::warn!(shard = log.shard.0, replica = leader.0, error = %e,
            "primary unreachable at shutdown: innodb_flush_log_at_trx_commit stays 2 until its \
             restart or the proxy's next start; set it to 1 there if the proxy is not coming back"),
    }
}
