//! One applier per follower: applies sequenced records strictly in timestamp order, batching
//! several into one transaction when behind, and reports its position (the acknowledgement
//! the quorum counts). A follower that is down is retried; when it returns it catches up from
//! the in-memory tail or the WAL files. A follower whose results differ from the primary's is
//! quarantined and stops.
//!
//! Owns: the applier task. May import: backend (pool connect), replication::{log, replay}.

use super::log::ShardLog;
use super::replay::{ApplyError, Replayer};
use crate::backend::BackendPool;
use crate::router::ReplicaId;
use mysql_common::constants::CapabilityFlags;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Capabilities of replay connections: no FOUND_ROWS (affected rows are compared as the
/// server counts changed rows), no multi-statements, no LOCAL INFILE.
pub fn replay_caps() -> CapabilityFlags {
    crate::protocol::handshake::proxy_capabilities(false)
        - CapabilityFlags::CLIENT_FOUND_ROWS
        - CapabilityFlags::CLIENT_MULTI_STATEMENTS
        - CapabilityFlags::CLIENT_LOCAL_FILES
}

/// utf8mb4_general_ci: the replay connection's handshake collation.
pub const REPLAY_COLLATION: u8 = 45;

/// Opens a replay connection to `pool`'s server.
pub async fn connect(pool: &BackendPool) -> std::io::Result<Replayer> {
    let conn = pool.connect(replay_caps(), REPLAY_COLLATION, None).await?;
    Ok(Replayer::new(conn))
}

pub async fn run_applier(
    log: Arc<ShardLog>,
    replica: ReplicaId,
    pool: Arc<BackendPool>,
    batch: usize,
    cancel: CancellationToken,
) {
    let shard = log.shard;
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let mut replayer = match connect(&pool).await {
            Ok(r) => r,
            Err(e) => {
                if !reported_down {
                    tracing::warn!(shard = shard.0, replica = replica.0, addr = %pool.addr, error = %e,
                        "follower unreachable; its applier retries and it catches up when it is back");
                    reported_down = true;
                }
                log.set_live(replica, false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut applied = match replayer.prepare_log_table(shard).await {
            Ok(ts) => ts,
            Err(ApplyError::Io(e)) => {
                tracing::warn!(replica = replica.0, error = %e, "follower connection lost");
                continue;
            }
            Err(ApplyError::Diverged(why)) => {
                log.quarantine(replica, why);
                return;
            }
        };
        backoff = Duration::from_millis(100);
        reported_down = false;
        tracing::info!(shard = shard.0, replica = replica.0, addr = %pool.addr, applied,
            log_end = log.last_sequenced(), "applier connected");
        log.set_applied(replica, applied);
        log.set_live(replica, true);
        let mut log_end = log.subscribe_sequenced();
        let mut down = pool.subscribe();
        loop {
            if *log_end.borrow_and_update() <= applied {
                tokio::select! {
                    r = log_end.changed() => if r.is_err() { return },
                    _ = down.changed() => {
                        if !pool.is_up() {
                            tracing::warn!(replica = replica.0, "follower marked down by health checks");
                            break;
                        }
                        continue;
                    }
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
            let entries = match log.records_after(applied, batch).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(replica = replica.0, error = %e, "cannot read the WAL for a lagging follower");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(last) = entries.last().map(|e| e.ts) else {
                // The log end moved but nothing newer is readable yet.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let started = std::time::Instant::now();
            match replayer.apply(shard, &entries).await {
                Ok(()) => {
                    log.replicas[replica.0 as usize]
                        .apply_latency
                        .record(started.elapsed());
                    applied = last;
                    log.set_applied(replica, applied);
                }
                Err(ApplyError::Io(e)) => {
                    tracing::warn!(shard = shard.0, replica = replica.0, error = %e,
                        "follower connection lost while applying; reconnecting");
                    break;
                }
                Err(ApplyError::Diverged(why)) => {
                    log.quarantine(replica, why);
                    log.set_live(replica, false);
                    return;
                }
            }
        }
        log.set_live(replica, false);
    }
}
