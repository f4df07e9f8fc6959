//! One applier per follower, over two connections: the receiver stores records in the
//! follower's `myquorum.wal` as soon as they are sequenced (durable there: the acknowledgement
//! the quorum counts), and the replayer applies held records strictly in timestamp order,
//! batching several into one transaction when behind. Commit latency so includes one durable
//! insert on the follower, not the re-execution of the transaction. A follower that is down is retried; when it returns it catches up from
//! the in-memory tail or the WAL files. A follower whose results differ from the primary's is
//! quarantined and stops. Every replica has an applier: it idles while its replica leads,
//! stops when an election promotes it, and starts when a former primary rejoins (first
//! filling the records that were in flight when it lost leadership).
//!
//! Owns: the applier task. May import: backend (pool connect), replication::{log, replay}.

use super::log::ShardLog;
use super::record::Record;
use super::replay::{ApplyError, LogEntry, PrimaryDdlOutcomes, Replayer};
use crate::backend::BackendPool;
use crate::router::ReplicaId;
use mysql_common::constants::CapabilityFlags;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Capabilities of replay connections: no FOUND_ROWS (affected rows are compared as the
/// server counts changed rows), no multi-statements; LOCAL INFILE for replaying LOAD DATA
/// LOCAL with the recorded file (the server asks only in answer to that statement).
pub fn replay_caps() -> CapabilityFlags {
    (crate::protocol::handshake::proxy_capabilities(false) | CapabilityFlags::CLIENT_LOCAL_FILES)
        - CapabilityFlags::CLIENT_FOUND_ROWS
        - CapabilityFlags::CLIENT_MULTI_STATEMENTS
}

/// utf8mb4_general_ci: the replay connection's handshake collation.
pub const REPLAY_COLLATION: u8 = 45;

/// No limit of the server's may cut a replay connection short: its wait_timeout (the
/// longest MariaDB accepts, a year in seconds) and its max_statement_time (a statement the
/// primary completed must complete here, however long it takes on this server).
const NO_LIMITS: &str = "SET SESSION wait_timeout = 31536000, max_statement_time = 0";

/// Opens a replay connection to `pool`'s server. Appliers idle as long as no one writes,
/// so the server's wait_timeout (lowered in my.cnf to reap leaked connections) would end
/// them and every first write after a pause would reconnect both of them; a my.cnf
/// max_statement_time would quarantine a follower that replays a long statement.
pub async fn connect(pool: &Arc<BackendPool>) -> std::io::Result<Replayer> {
    let conn = pool.connect(replay_caps(), REPLAY_COLLATION, None).await?;
    let mut replayer = Replayer::new(conn, Some(pool.clone()));
    if let Err(e) = replayer.execute(NO_LIMITS).await? {
        tracing::warn!(backend = %pool.addr, error = %e,
            "could not lift wait_timeout and max_statement_time on a replay connection; \
             it reconnects when the server closes it, and a replay over the time limit fails");
    }
    Ok(replayer)
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
    let epoch = log.replicas[replica.0 as usize]
        .applier_epoch
        .load(std::sync::atomic::Ordering::Acquire);
    let superseded = || {
        log.replicas[replica.0 as usize]
            .applier_epoch
            .load(std::sync::atomic::Ordering::Acquire)
            != epoch
    };
    loop {
        if cancel.is_cancelled() || superseded() {
            return;
        }
        if log.replicas[replica.0 as usize]
            .quarantined
            .lock()
            .is_some()
        {
            // Quarantined while down (kept away longer than the log is retained for it): the
            // records it needs may be gone, so it must be rebuilt, not caught up.
            tracing::warn!(shard = shard.0, replica = replica.0,
                "applier stops: the replica is quarantined (SHOW PROXY REPLICATION gives the reason)");
            log.set_live(replica, false);
            return;
        }
        if log.leader() == replica {
            // The primary applies nothing: its transactions are the log.
            let mut leadership = log.subscribe_leadership();
            let lead = async {
                super::flush_role::lead(&log, replica, &pool).await;
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = leadership.wait_for(|l| l.leader != replica) => {}
                _ = lead => {}
                _ = cancel.cancelled() => return,
            }
            tracing::info!(
                shard = shard.0,
                replica = replica.0,
                "former primary rejoins as a follower"
            );
            continue;
        }
        let connected = match connect(&pool).await {
            Ok(r) => connect(&pool).await.map(|s| (s, r)),
            Err(e) => Err(e),
        };
        let (mut receiver, mut replayer) = match connected {
            Ok(c) => c,
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
        if superseded() {
            return;
        }
        let mut position = match replayer.prepare_log_table(shard).await {
            Ok(p) => p,
            Err(ApplyError::Io(e)) => {
                tracing::warn!(replica = replica.0, error = %e, "follower connection lost");
                continue;
            }
            Err(ApplyError::Diverged(why)) => {
                log.quarantine(replica, why);
                return;
            }
        };
        if let Err(e) = super::flush_role::follow(&log, replica, &mut replayer, &mut position).await
        {
            tracing::warn!(replica = replica.0, error = %e, "follower connection lost");
            continue;
        }
        let trimmed = crate::wal::trimmed_floor(log.wal.dir());
        if position.applied < trimmed {
            // The log no longer holds every record it lacks (it was away, or is a new, empty
            // server): catching up would skip them. Rebuilt instead (auto_rebuild).
            log.replicas[replica.0 as usize]
                .outlived_log
                .store(true, std::sync::atomic::Ordering::Release);
            log.quarantine(
                replica,
                format!(
                    "its last applied record (ts {}) is older than the log still kept (records \
                     at or below ts {trimmed} were deleted): rebuilt when back \
                     (replication.auto_rebuild), or by PROXY REBUILD REPLICA {} SHARD {}",
                    position.applied, replica.0, shard.0
                ),
            );
            log.set_live(replica, false);
            return;
        }
        let floor = log.replicas[replica.0 as usize]
            .gap_floor
            .load(std::sync::atomic::Ordering::Acquire);
        if floor != u64::MAX && log.in_flight_on(replica) {
            // A former primary with sessions still committing on it (a switchover): their
            // records would be applied twice. They finish within the commit timeout.
            tracing::info!(
                shard = shard.0,
                replica = replica.0,
                "former primary: waiting for the transactions still committing on it"
            );
            while log.in_flight_on(replica) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
            // Its position moved: read it again.
            continue;
        }
        if floor < position.applied {
            // A former primary: records in flight when it lost leadership may be missing
            // below its highest applied row.
            match super::recovery::fill_gaps(&log, &mut replayer, floor, position.applied).await {
                Ok(n) => {
                    tracing::info!(
                        shard = shard.0,
                        replica = replica.0,
                        filled = n,
                        "former primary: records it missed while leading are applied"
                    );
                    log.replicas[replica.0 as usize]
                        .gap_floor
                        .store(u64::MAX, std::sync::atomic::Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(shard = shard.0, replica = replica.0, error = %e,
                        "filling a former primary's missing records failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(100);
        reported_down = false;
        tracing::info!(shard = shard.0, replica = replica.0, addr = %pool.addr,
            applied = position.applied, held = position.held,
            log_end = log.last_sequenced(), "applier connected");
        log.note_server(replica, &pool.addr, &position);
        log.replicas[replica.0 as usize].durable_hold.store(
            position.durable_commits,
            std::sync::atomic::Ordering::Release,
        );
        if !position.durable_commits {
            tracing::info!(shard = shard.0, replica = replica.0,
                "replica does not sync its commits (innodb_flush_log_at_trx_commit != 1): its acknowledgements count once the WAL has synced the record");
        }
        log.set_applied(replica, position.applied);
        log.set_held(replica, position.held);
        log.set_live(replica, true);
        let (held_tx, held_rx) = watch::channel(position.held);
        let mut leadership = log.subscribe_leadership();
        let outcome = tokio::select! {
            _ = leadership.wait_for(|l| l.leader == replica) => {
                // Promoted: it applied the whole log before the election finished.
                tracing::info!(shard = shard.0, replica = replica.0, "applier stops: this replica is the primary now");
                log.set_live(replica, false);
                continue;
            }
            r = receive_loop(&log, replica, &mut receiver, position.held, batch, held_tx) => r,
            r = apply_loop(&log, replica, &mut replayer, position.applied, batch, held_rx) => r,
            _ = pool.wait_down() => {
                tracing::warn!(replica = replica.0, "follower marked down by health checks");
                Ok(())
            }
            _ = cancel.cancelled() => return,
        };
        // Reconnect once its health probes pass again, not in a tight loop until then.
        while !pool.is_up() && !cancel.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match outcome {
            Ok(()) => {}
            Err(ApplyError::Io(e)) => {
                tracing::warn!(shard = shard.0, replica = replica.0, error = %e,
                    "follower connection lost while applying; reconnecting");
            }
            Err(ApplyError::Diverged(why)) => {
                log.quarantine(replica, why);
                log.set_live(replica, false);
                return;
            }
        }
        log.set_live(replica, false);
    }
}

/// Up to `batch` records after `after`, waiting until `end` passes it. `Ok(None)`: the log
/// is gone (shutdown).
async fn next_records(
    log: &ShardLog,
    end: &mut watch::Receiver<u64>,
    after: u64,
    batch: usize,
) -> Result<Option<Vec<LogEntry>>, ApplyError> {
    loop {
        if *end.borrow_and_update() <= after {
            if end.changed().await.is_err() {
                return Ok(None);
            }
            continue;
        }
        let entries = match log.records_after(after, batch).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(shard = log.shard.0, error = %e, "cannot read the WAL for a lagging follower");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if entries.is_empty() {
            // The end moved but nothing newer is readable yet.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        return Ok(Some(within_bytes(entries, log.row_bytes())));
    }
}

/// Stores new records on the follower as they are sequenced: its acknowledgement to the
/// quorum, independent of how fast it applies them.
async fn receive_loop(
    log: &ShardLog,
    replica: ReplicaId,
    conn: &mut Replayer,
    mut held: u64,
    batch: usize,
    held_tx: watch::Sender<u64>,
) -> Result<(), ApplyError> {
    let mut end = log.subscribe_sequenced();
    while let Some(entries) = next_records(log, &mut end, held, batch).await? {
        let started = std::time::Instant::now();
        conn.receive(log.shard, &entries, log.row_bytes()).await?;
        log.replicas[replica.0 as usize]
            .receive_latency
            .record(started.elapsed());
        held = entries.last().map(|e| e.ts).unwrap_or(held);
        log.set_held(replica, held);
        held_tx.send_replace(held);
    }
    Ok(())
}

/// Applies held records strictly in timestamp order, several per transaction when behind.
/// Applying only what the receiver stored keeps the two connections off each other's rows.
async fn apply_loop(
    log: &ShardLog,
    replica: ReplicaId,
    conn: &mut Replayer,
    mut applied: u64,
    batch: usize,
    mut held: watch::Receiver<u64>,
) -> Result<(), ApplyError> {
    while let Some(entries) = next_records(log, &mut held, applied, batch).await? {
        let held_now = *held.borrow();
        let entries: Vec<LogEntry> = entries.into_iter().filter(|e| e.ts <= held_now).collect();
        let Some(last) = entries.last().map(|e| e.ts) else {
            continue;
        };
        // A DDL is held against what it did on the primary, so wait for that to be known.
        let mut ddl = PrimaryDdlOutcomes::new();
        for e in entries.iter().filter(|e| Record::is_ddl(&e.payload)) {
            if let Some(outcome) = log.primary_ddl_outcome(e.ts).await {
                ddl.insert(e.ts, outcome);
            }
        }
        let started = std::time::Instant::now();
        conn.apply(log.shard, &entries, &ddl, log.row_bytes())
            .await?;
        log.replicas[replica.0 as usize]
            .apply_latency
            .record(started.elapsed());
        applied = last;
        log.set_applied(replica, applied);
    }
    Ok(())
}

/// The first records whose payloads fit in `max` bytes together (at least one): a batch's
/// rows travel in one statement, bounded by the replica's `max_allowed_packet`; a larger
/// record goes alone, over several rows.
fn within_bytes(mut entries: Vec<LogEntry>, max: usize) -> Vec<LogEntry> {
    let mut total = 0usize;
    let keep = entries
        .iter()
        .take_while(|e| {
            total += e.payload.len();
            total <= max
        })
        .count()
        .max(1);
    entries.truncate(keep);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64, len: usize) -> LogEntry {
        LogEntry {
            ts,
            payload: vec![0u8; len].into(),
        }
    }

    #[test]
    fn batches_are_bounded_by_bytes() {
        let ts = |v: &[LogEntry]| v.iter().map(|e| e.ts).collect::<Vec<_>>();
        let all = vec![entry(1, 40), entry(2, 40), entry(3, 40)];
        assert_eq!(ts(&within_bytes(all.clone(), 100)), [1, 2]);
        assert_eq!(ts(&within_bytes(all.clone(), 1000)), [1, 2, 3]);
        // A record bigger than the bound still goes alone (it was admitted at commit).
        assert_eq!(
            ts(&within_bytes(vec![entry(9, 500), entry(10, 1)], 100)),
            [9]
        );
    }
}
