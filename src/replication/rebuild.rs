//! `PROXY REBUILD REPLICA`: brings a quarantined follower back without restarting the proxy.
//! Its application databases are replaced by a copy of the primary's taken in one consistent
//! snapshot (`backend::copy`), `myquorum.wal` included, and its applier starts again: it
//! applies the records the snapshot lacked and follows the log as before.
//!
//! The snapshot's log position: `primary_low_water()` read just before the snapshot starts,
//! so every record at or below it is in the copy. Records above it may or may not be (their
//! primary commits were in flight), which is the state a former primary is left in, so the
//! applier fills them the same way (`gap_floor`, `recovery::fill_gaps`). From that moment the
//! replica counts in the log's low water again, so the WAL keeps what it will need; it does
//! not count for the quorum or serve reads until its applier is connected.
//!
//! Owns: the rebuild sequence. May import: backend (copy, pools), replication::{log, applier}.

use super::applier::run_applier;
use super::log::ShardLog;
use crate::backend::copy::copy_databases;
use crate::backend::Cluster;
use crate::router::ReplicaId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Clears a replica's `rebuilding` flag however the rebuild ends.
struct Rebuilding<'a>(&'a AtomicBool);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How long the command waits for the rebuilt replica's applier to connect before answering.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

pub async fn rebuild(
    log: Arc<ShardLog>,
    cluster: Arc<Cluster>,
    replica: ReplicaId,
    batch: usize,
    cancel: CancellationToken,
) -> Result<String, String> {
    let shard = log.shard;
    let n = replica.0;
    let state = log
        .replicas
        .get(n as usize)
        .ok_or_else(|| format!("shard {} has no replica {n}", shard.0))?;
    let leader = log.leader();
    if leader == replica {
        return Err(format!(
            "replica {n} is the primary; only a follower is rebuilt"
        ));
    }
    let Some(why) = state.quarantined.lock().clone() else {
        return Err(format!(
            "replica {n} is not quarantined; only a quarantined replica is rebuilt (its \
             databases are replaced by the primary's)"
        ));
    };
    if state.rebuilding.swap(true, Ordering::AcqRel) {
        return Err(format!("replica {n} is already being rebuilt"));
    }
    let _rebuilding = Rebuilding(&state.rebuilding);
    let (Some(source), Some(target)) = (cluster.pool(shard, leader), cluster.pool(shard, replica))
    else {
        return Err(format!("shard {} has no backend for replica {n}", shard.0));
    };
    if !target.is_up() {
        return Err(format!(
            "replica {n} ({}) is down; start it, wait for its health checks to pass, and run \
             the rebuild again",
            target.addr
        ));
    }
    // An applier of the replica's still retrying its connection (quarantined while down)
    // stops: the one started after the copy is the only one.
    state.applier_epoch.fetch_add(1, Ordering::AcqRel);
    let epoch = log.leadership().epoch;
    tracing::info!(shard = shard.0, replica = n, source = %source.addr, target = %target.addr,
        quarantined_for = %why, "rebuild started: copying the primary's databases");
    let floor = AtomicU64::new(0);
    let at_snapshot = || {
        let f = log.primary_low_water();
        floor.store(f, Ordering::Release);
        // Everything up to `f` is in the copy; from now the log is kept for it from there.
        state.gap_floor.store(f, Ordering::Release);
        log.set_applied(replica, f);
        log.set_held(replica, f);
        *state.quarantined.lock() = None;
    };
    let copied = copy_databases(source, target, at_snapshot).await;
    let floor = floor.load(Ordering::Acquire);
    let report = match copied {
        Ok(r) if log.leadership().epoch == epoch => r,
        Ok(_) => {
            let e = "the primary changed during the copy; run the rebuild again".to_string();
            log.quarantine(replica, format!("rebuild failed: {e}"));
            return Err(e);
        }
        Err(e) => {
            log.quarantine(replica, format!("rebuild failed: {e}"));
            return Err(format!("{e}; replica {n} stays quarantined"));
        }
    };
    // Whatever quarantines it from now on is a new story.
    state.outlived_log.store(false, Ordering::Release);
    tracing::info!(
        shard = shard.0,
        replica = n,
        databases = report.databases,
        tables = report.tables,
        rows = report.rows,
        views = report.views,
        routines = report.routines,
        triggers = report.triggers,
        events = report.events,
        seconds = report.seconds,
        snapshot_ts = floor,
        "rebuild copied; the replica's applier starts"
    );
    tokio::spawn(run_applier(
        log.clone(),
        replica,
        target.clone(),
        batch,
        cancel,
    ));
    let deadline = Instant::now() + CONNECT_WAIT;
    while !state.live.load(Ordering::Acquire) && Instant::now() < deadline {
        if state.quarantined.lock().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = if let Some(q) = state.quarantined.lock().clone() {
        format!("but it was quarantined again: {q}")
    } else if state.live.load(Ordering::Acquire) {
        format!(
            "its applier is connected and catching up from the snapshot (ts {floor}; {} records \
             behind)",
            log.records_between(state.applied.load(Ordering::Acquire), log.last_sequenced())
        )
    } else {
        "its applier has not connected yet (see the proxy's log)".to_string()
    };
    Ok(format!(
        "replica {n} rebuilt from replica {}: {} databases, {} tables, {} rows, {} views, {} \
         routines, {} triggers, {} events in {:.1} s; {status}",
        leader.0,
        report.databases,
        report.tables,
        report.rows,
        report.views,
        report.routines,
        report.triggers,
        report.events,
        report.seconds
    ))
}
