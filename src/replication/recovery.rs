//! Start-up recovery of one shard, and repair of the primary at run time. The log is the
//! union of the WAL and every reachable replica's `myquorum.wal` (records a replica holds
//! beyond the WAL are adopted back into it); the primary gets every logged record it lacks
//! re-applied; followers catch up through their appliers; only then are writes opened.
//!
//! Owns: the recovery sequence. May import: backend (pools), replication::{log, replay,
//! applier}, wal, tso.

use super::applier::{connect, run_applier};
use super::log::ShardLog;
use super::replay::{LogEntry, PrimaryDdlOutcomes, Replayer};
use super::wal_table::{self, unhex};
use crate::backend::Cluster;
use crate::router::{ReplicaId, ShardId};
use crate::tso::TsoPair;
use crate::wal::WalRecord;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Timestamps applied on a replica (rows of its `myquorum.wal` marked applied) at or above `from`.
async fn present(r: &mut Replayer, shard: ShardId, from: u64) -> std::io::Result<HashSet<u64>> {
    // One row per record, as a comma list to keep to a single-row reader.
    let mut out = HashSet::new();
    let mut after = from.saturating_sub(1);
    loop {
        let row = r
            .query_row(&format!(
                "SELECT GROUP_CONCAT(ts ORDER BY ts SEPARATOR ','), MAX(ts) FROM \
                 (SELECT ts FROM myquorum.wal WHERE shard = {} AND ts > {after} AND applied = 1 ORDER BY ts LIMIT 10000) x",
                shard.0
            ))
            .await?;
        let row = match row {
            Ok(Some(row)) => row,
            _ => return Ok(out),
        };
        let Some(list) = row.first().cloned().flatten() else {
            return Ok(out);
        };
        let n_before = out.len();
        out.extend(list.split(',').filter_map(|t| t.parse::<u64>().ok()));
        match row.get(1).cloned().flatten().and_then(|m| m.parse().ok()) {
            Some(m) if out.len() > n_before => after = m,
            _ => return Ok(out),
        }
    }
}

/// Records a replica holds above `after` (from its `myquorum.wal`). A record whose parts
/// are not all readable ends the list there: what follows cannot be adopted past a gap.
async fn records_above(
    r: &mut Replayer,
    shard: ShardId,
    mut after: u64,
) -> std::io::Result<Vec<WalRecord>> {
    let mut out = Vec::new();
    loop {
        let row = r
            .query_row(&wal_table::select_record_above(shard, after))
            .await?;
        let Ok(Some(row)) = row else { return Ok(out) };
        let column = |i: usize| row.get(i).cloned().flatten();
        let ts = column(0).and_then(|t| t.parse::<u64>().ok());
        let head = column(1).and_then(|p| unhex(&p));
        let parts = column(2).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        let (Some(ts), Some(mut payload)) = (ts, head) else {
            return Ok(out);
        };
        for part in 1..=parts {
            let row = r
                .query_row(&wal_table::select_part(shard, ts, part))
                .await?;
            match row
                .ok()
                .flatten()
                .and_then(|row| row.first().cloned().flatten())
            {
                Some(hex) => match unhex(&hex) {
                    Some(bytes) => payload.extend_from_slice(&bytes),
                    None => return Ok(out),
                },
                None => {
                    tracing::warn!(shard = shard.0, ts, part,
                        "a record's continuation row is missing from this replica's myquorum.wal_part; \
                         its copy of the log is read up to the record before");
                    return Ok(out);
                }
            }
        }
        out.push(WalRecord { ts, payload });
        after = ts;
    }
}

/// Brings the primary up to the log: re-applies every logged record at or after `from`
/// (and in `extra`) that its `myquorum.wal` lacks, in timestamp order.
pub async fn repair_primary(
    log: &ShardLog,
    r: &mut Replayer,
    records: &[WalRecord],
) -> Result<Vec<u64>, String> {
    let Some(first) = records.first().map(|x| x.ts) else {
        return Ok(Vec::new());
    };
    // Rows below a replica's oldest one were trimmed because it had applied them (trimming
    // keeps each replica's newest row at or below the point every replica reached): the WAL
    // may still hold those records, and they are not missing.
    let oldest = r
        .query_row(&format!(
            "SELECT COALESCE(MIN(ts), 0) FROM myquorum.wal WHERE shard = {}",
            log.shard.0
        ))
        .await
        .map_err(|e| format!("reading the primary's myquorum.wal: {e}"))?
        .map_err(|e| format!("reading the primary's myquorum.wal: {e}"))?
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let have = present(r, log.shard, first)
        .await
        .map_err(|e| format!("reading the primary's myquorum.wal: {e}"))?;
    let missing: Vec<LogEntry> = records
        .iter()
        .filter(|x| x.ts > oldest && !have.contains(&x.ts))
        .map(|x| LogEntry {
            ts: x.ts,
            payload: x.payload.clone().into(),
        })
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(
        shard = log.shard.0,
        records = missing.len(),
        "re-applying logged commits the primary lacks"
    );
    r.apply(
        log.shard,
        &missing,
        &PrimaryDdlOutcomes::new(),
        log.row_bytes(),
    )
    .await
    .map_err(|e| format!("re-applying on the primary: {e}"))?;
    Ok(missing.iter().map(|e| e.ts).collect())
}

/// Applies on a former primary the logged records in (`floor`, `upto`] its `myquorum.wal`
/// lacks (they were in flight when it lost leadership). Returns how many it applied.
pub async fn fill_gaps(
    log: &ShardLog,
    r: &mut Replayer,
    floor: u64,
    upto: u64,
) -> Result<usize, String> {
    let mut after = floor;
    let mut filled = 0;
    while after < upto {
        let entries = log
            .records_after(after, 10_000)
            .await
            .map_err(|e| format!("reading the log: {e}"))?;
        let records: Vec<WalRecord> = entries
            .into_iter()
            .take_while(|e| e.ts <= upto)
            .map(|e| WalRecord {
                ts: e.ts,
                payload: e.payload.to_vec(),
            })
            .collect();
        let Some(last) = records.last().map(|x| x.ts) else {
            break;
        };
        filled += repair_primary(log, r, &records).await?.len();
        after = last;
    }
    Ok(filled)
}

/// How long start-up recovery waits for the last elected primary before electing another.
const STARTUP_PRIMARY_WAIT: Duration = Duration::from_secs(5);

/// The last elected primary does not answer at start-up: when n − t other replicas do,
/// promote the one with the most applied (recovery then brings it up to the whole log, as it
/// would the old primary). The old primary, when it returns, fills whatever it lacks over
/// the whole WAL before following. Returns the new primary's connection.
async fn elect_at_startup(log: &Arc<ShardLog>, cluster: &Cluster) -> Option<Replayer> {
    let shard = log.shard;
    let old = log.leader();
    let n = log.replicas.len();
    let needed = n.saturating_sub(log.cabinet().t).max(1);
    let mut live: Vec<(u64, ReplicaId, Replayer)> = Vec::new();
    for i in 0..n as u32 {
        let rid = ReplicaId(i);
        if rid == old {
            continue;
        }
        let Some(pool) = cluster.pool(shard, rid) else {
            continue;
        };
        let Ok(mut r) = connect(pool).await else {
            continue;
        };
        if let Ok(p) = r.prepare_log_table(shard).await {
            log.note_server(rid, &pool.addr, &p);
            live.push((p.applied, rid, r));
        }
    }
    if live.len() < needed {
        tracing::warn!(shard = shard.0, live = live.len(), needed,
            "the last elected primary is down and too few replicas answer to elect another; recovery keeps waiting");
        return None;
    }
    // Most applied first; equal positions go to the lower replica id.
    live.sort_by(|a, b| b.0.cmp(&a.0).then(a.1 .0.cmp(&b.1 .0)));
    let (applied, winner, conn) = live.into_iter().next()?;
    cluster.set_primary(shard, winner);
    // Nothing is known of what the old primary holds: it checks the whole WAL when back.
    let epoch = log.promote_with_floor(winner, 0);
    super::failover::persist_leadership(log, epoch, winner);
    tracing::warn!(shard = shard.0, old = old.0, new = winner.0, applied, epoch,
        "the last elected primary does not answer at start-up; elected the replica with the most applied");
    Some(conn)
}

pub struct RecoveryParams {
    pub apply_batch: usize,
    /// How long to wait for followers to catch up before opening writes anyway.
    pub catch_up_timeout: Duration,
    pub failover: super::failover::FailoverParams,
    /// A follower down longer than this is quarantined rather than hold the log forever.
    pub wal_retain: Duration,
    /// Rebuild such a follower when it is back.
    pub auto_rebuild: bool,
    /// Switchover requests, served by the failover task once the shard is recovered.
    pub switchovers: tokio::sync::mpsc::Receiver<super::failover::SwitchoverRequest>,
}

/// Recovers the shard, starts its appliers and opens writes. Runs until cancelled (the
/// repair and WAL-truncation loops live here).
pub async fn run_shard(
    log: Arc<ShardLog>,
    wal_records: Vec<WalRecord>,
    cluster: Arc<Cluster>,
    tso: Arc<TsoPair>,
    params: RecoveryParams,
    cancel: CancellationToken,
) {
    let shard = log.shard;
    let n = log.replicas.len();
    let started = Instant::now();
    // 1. The primary must answer; the followers that do are read too.
    let mut log_records: BTreeMap<u64, Vec<u8>> =
        wal_records.into_iter().map(|r| (r.ts, r.payload)).collect();
    let wal_last = log_records.last_key_value().map(|(t, _)| *t).unwrap_or(0);
    let waiting_since = Instant::now();
    let mut primary = loop {
        if params.failover.automatic && waiting_since.elapsed() > STARTUP_PRIMARY_WAIT {
            if let Some(r) = elect_at_startup(&log, &cluster).await {
                break r;
            }
        }
        let Some(pool) = cluster.pool(shard, log.leader()) else {
            return;
        };
        match connect(pool).await {
            Ok(mut r) => match r.prepare_log_table(shard).await {
                Ok(p) => {
                    log.note_server(log.leader(), &pool.addr, &p);
                    break r;
                }
                Err(e) => {
                    tracing::warn!(shard = shard.0, error = %e, "primary not ready for recovery; retrying")
                }
            },
            Err(e) => tracing::warn!(shard = shard.0, addr = %pool.addr, error = %e,
                "recovery waits for the primary; start it (writes stay closed until it answers)"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled() => return,
        }
    };
    let mut reachable = vec![false; n];
    reachable[log.leader().0 as usize] = true;
    let mut adopted: Vec<WalRecord> = Vec::new();
    for i in 0..n as u32 {
        let rid = ReplicaId(i);
        let Some(pool) = cluster.pool(shard, rid) else {
            continue;
        };
        let mut conn = if rid == log.leader() {
            None
        } else {
            match connect(pool).await {
                Ok(mut r) => match r.prepare_log_table(shard).await {
                    Ok(p) => {
                        log.note_server(rid, &pool.addr, &p);
                        Some(r)
                    }
                    Err(_) => continue,
                },
                Err(_) => continue,
            }
        };
        reachable[i as usize] = true;
        let r = conn.as_mut().unwrap_or(&mut primary);
        match records_above(r, shard, wal_last).await {
            Ok(recs) => {
                for rec in recs {
                    if let std::collections::btree_map::Entry::Vacant(e) = log_records.entry(rec.ts)
                    {
                        e.insert(rec.payload.clone());
                        adopted.push(rec);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(replica = i, error = %e, "cannot read this replica's myquorum.wal")
            }
        }
    }
    adopted.sort_by_key(|r| r.ts);
    adopted.dedup_by_key(|r| r.ts);
    let last_ts = log_records.last_key_value().map(|(t, _)| *t).unwrap_or(0);
    if !adopted.is_empty() {
        tracing::warn!(shard = shard.0, records = adopted.len(),
            "replicas hold records the WAL lacks (WAL lost or replaced?); adopting them back into the log");
        if let Err(e) = log.adopt(adopted).await {
            tracing::error!(shard = shard.0, error = %e, "cannot write adopted records to the WAL; writes stay closed");
            return;
        }
    }
    log.start_sequencer(tso, last_ts);
    // 2. The primary gets what it lacks.
    let all: Vec<WalRecord> = log_records
        .into_iter()
        .map(|(ts, payload)| WalRecord { ts, payload })
        .collect();
    match repair_primary(&log, &mut primary, &all).await {
        Ok(done) if !done.is_empty() => {
            tracing::info!(
                shard = shard.0,
                records = done.len(),
                "primary brought up to the log"
            )
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(shard = shard.0, error = %e, "primary recovery failed; writes stay closed until the proxy restarts");
            return;
        }
    }
    drop(all);
    // 3. Followers catch up through their appliers.
    for i in 0..n as u32 {
        let rid = ReplicaId(i);
        // The leader's applier idles until it is a follower again.
        if let Some(pool) = cluster.pool(shard, rid) {
            tokio::spawn(run_applier(
                log.clone(),
                rid,
                pool.clone(),
                params.apply_batch,
                cancel.clone(),
            ));
        }
    }
    let deadline = Instant::now() + params.catch_up_timeout;
    let mut last_report = Instant::now();
    loop {
        let behind: Vec<u32> = (0..n as u32)
            .filter(|i| ReplicaId(*i) != log.leader() && reachable[*i as usize])
            .filter(|i| {
                let s = &log.replicas[*i as usize];
                s.quarantined.lock().is_none()
                    && (!s.live.load(Ordering::Acquire)
                        || s.applied.load(Ordering::Acquire) < last_ts)
            })
            .collect();
        if behind.is_empty() || Instant::now() > deadline {
            if !behind.is_empty() {
                tracing::warn!(
                    shard = shard.0,
                    ?behind,
                    "followers still catching up; opening writes anyway"
                );
            }
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            tracing::info!(
                shard = shard.0,
                ?behind,
                log_end = last_ts,
                "waiting for followers to catch up"
            );
            last_report = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = cancel.cancelled() => return,
        }
    }
    log.reopen();
    tracing::info!(
        shard = shard.0,
        log_end = last_ts,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shard recovered; writes open"
    );
    drop(primary);
    tokio::spawn(super::failover::run(
        log.clone(),
        cluster.clone(),
        params.failover,
        params.switchovers,
        cancel.clone(),
    ));
    maintain(
        log,
        cluster,
        params.wal_retain,
        params.auto_rebuild.then_some(params.apply_batch),
        cancel,
    )
    .await;
}

/// Run-time upkeep: re-apply commits that failed on the primary, and delete WAL segments
/// every replica has applied.
async fn maintain(
    log: Arc<ShardLog>,
    cluster: Arc<Cluster>,
    wal_retain: Duration,
    auto_rebuild_batch: Option<usize>,
    cancel: CancellationToken,
) {
    let shard = log.shard;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0u64;
    let mut last_rebuild: Vec<Option<Instant>> = vec![None; log.replicas.len()];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        ticks += 1;
        let failed = log.failed_on_primary();
        if !failed.is_empty() {
            if let Some(pool) = cluster.pool(shard, log.leader()) {
                if let Ok(mut r) = connect(pool).await {
                    let first = failed[0];
                    match log.records_after(first - 1, usize::MAX).await {
                        Ok(entries) => {
                            let recs: Vec<WalRecord> = entries
                                .into_iter()
                                .filter(|e| failed.contains(&e.ts))
                                .map(|e| WalRecord {
                                    ts: e.ts,
                                    payload: e.payload.to_vec(),
                                })
                                .collect();
                            match repair_primary(&log, &mut r, &recs).await {
                                Ok(_) => {
                                    log.primary_repaired(&failed);
                                    if log.failed_on_primary().is_empty() {
                                        log.reopen();
                                        tracing::info!(
                                            shard = shard.0,
                                            records = failed.len(),
                                            "primary repaired; writes open again"
                                        );
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(shard = shard.0, error = %e, "primary repair failed; retrying")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the WAL for primary repair")
                        }
                    }
                }
            }
        }
        release_dead_followers(&log, &cluster, wal_retain);
        if let Some(batch) = auto_rebuild_batch {
            rebuild_returned_followers(&log, &cluster, batch, &cancel, &mut last_rebuild);
        }
        if ticks.is_multiple_of(20) {
            log.prune_ddl_outcomes(log.followers_low_water());
            let below = log.followers_low_water().min(log.primary_low_water());
            if below > 0 {
                if let Err(e) = log.wal.truncate_below(below + 1).await {
                    tracing::warn!(shard = shard.0, error = %e, "WAL truncation failed");
                }
                trim_replica_logs(&log, &cluster, below).await;
            }
        }
    }
}

/// How long after a failed automatic rebuild the next one starts.
const AUTO_REBUILD_RETRY: Duration = Duration::from_secs(60);

/// Starts a rebuild of each follower quarantined for outliving the log whose health checks
/// pass again (at most one attempt per `AUTO_REBUILD_RETRY` each); it runs in its own task.
fn rebuild_returned_followers(
    log: &Arc<ShardLog>,
    cluster: &Arc<Cluster>,
    batch: usize,
    cancel: &CancellationToken,
    last: &mut [Option<Instant>],
) {
    for (i, state) in log.replicas.iter().enumerate() {
        let replica = ReplicaId(i as u32);
        let back = cluster.pool(log.shard, replica).is_some_and(|p| p.is_up());
        if !back
            || !state.outlived_log.load(Ordering::Acquire)
            || state.quarantined.lock().is_none()
            || state.rebuilding.load(Ordering::Acquire)
            || last[i].is_some_and(|t| t.elapsed() < AUTO_REBUILD_RETRY)
        {
            continue;
        }
        last[i] = Some(Instant::now());
        tracing::info!(
            shard = log.shard.0,
            replica = i,
            "follower back after the log moved past it: rebuilding it (replication.auto_rebuild)"
        );
        let (log, cluster, cancel) = (log.clone(), cluster.clone(), cancel.clone());
        tokio::spawn(async move {
            let shard = log.shard.0;
            match super::rebuild::rebuild(log.clone(), cluster, replica, None, batch, cancel).await
            {
                Ok(done) => tracing::info!(shard, replica = i, "{done}"),
                Err(e) => tracing::warn!(shard, replica = i, error = %e,
                    "automatic rebuild failed; retried in a minute (or run PROXY REBUILD REPLICA)"),
            }
        });
    }
}

/// Quarantines the followers that have been down for longer than `retain`: the log below
/// their position is kept for them until then (they catch up from it when back), and after
/// that they stop holding back the WAL's and every replica's `myquorum.wal` trimming.
fn release_dead_followers(log: &ShardLog, cluster: &Cluster, retain: Duration) {
    let leader = log.leader();
    for (i, state) in log.replicas.iter().enumerate() {
        let replica = ReplicaId(i as u32);
        if replica == leader || state.quarantined.lock().is_some() {
            continue;
        }
        let Some(down) = cluster.pool(log.shard, replica).and_then(|p| p.down_for()) else {
            continue;
        };
        if down > retain {
            state.outlived_log.store(true, Ordering::Release);
            log.quarantine(
                replica,
                format!(
                    "down for {} s, longer than the log is kept for it (wal_retain_s = {}); \
                     rebuilt when back (replication.auto_rebuild), or by PROXY REBUILD REPLICA \
                     {} SHARD {}",
                    down.as_secs(),
                    retain.as_secs(),
                    replica.0,
                    log.shard.0
                ),
            );
        }
    }
}

/// Deletes `myquorum.wal` rows every replica has applied (below `below`), keeping on each
/// replica its newest row at or below `below` so its applied position stays readable. Quarantined replicas keep
/// theirs for the operator. Bounded per pass so the DELETE holds its locks briefly.
async fn trim_replica_logs(log: &ShardLog, cluster: &Cluster, below: u64) {
    for (i, state) in log.replicas.iter().enumerate() {
        if state.quarantined.lock().is_some() || state.rebuilding.load(Ordering::Acquire) {
            continue;
        }
        let Some(pool) = cluster.pool(log.shard, ReplicaId(i as u32)) else {
            continue;
        };
        let Ok(mut r) = connect(pool).await else {
            continue;
        };
        // Each replica keeps its newest row at or below `below`: its applied position must stay
        // readable, and `below` itself need not be a record it has (the primary may hold
        // record `below` - 1 and have the next one still in flight).
        let newest = r
            .query_row(&format!(
                "SELECT COALESCE(MAX(ts), 0) FROM myquorum.wal WHERE shard = {} AND ts <= {below}",
                log.shard.0
            ))
            .await;
        let keep_from = match newest {
            Ok(Ok(Some(row))) => row
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            _ => continue,
        };
        if keep_from == 0 {
            continue;
        }
        for sql in wal_table::trim(log.shard, keep_from) {
            match r.execute(&sql).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(shard = log.shard.0, replica = i, error = %e,
                        "trimming applied rows from myquorum.wal failed; retried later")
                }
                Err(e) => {
                    tracing::debug!(replica = i, error = %e, "replica unreachable for trimming");
                    break;
                }
            }
        }
    }
}
