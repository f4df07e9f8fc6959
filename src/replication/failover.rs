//! Primary failover and switchover for one shard. When health checks mark the primary down
//! (or an operator asks for a switchover), the shard is fenced — no record is sequenced and
//! new writes wait — the candidates are scored (`election::elect`), the winner's applier
//! brings it to the end of the log, and it is promoted: routing, the log's leader, the
//! Cabinet's top weight and the persisted leadership all move to it, then writes open. The
//! old primary's sessions are closed; when it returns, its applier rejoins it as a follower.
//! A primary that answers again before anyone else could be elected (or, with failover off,
//! that is waited for) stays primary, but is first given every logged record it lacks: it
//! may have lost its last commits with its machine.
//!
//! Leadership changes only when the primary is marked down or on request, never on score
//! alone: that, and the penalty for a replica that just came back, is the hysteresis that
//! keeps leadership from flapping.
//!
//! Owns: the per-shard failover task and the leadership file. May import: backend (pools,
//! health state), replication::{log, election}, router ids.

use super::election::{elect, Candidate, Rules, Verdict};
use super::log::ShardLog;
use crate::backend::{BackendPool, Cluster};
use crate::router::ReplicaId;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// An operator's request to move the primary (PROXY SWITCHOVER).
pub struct SwitchoverRequest {
    /// The replica to promote; None: the best by score.
    pub to: Option<ReplicaId>,
    pub reply: oneshot::Sender<Result<String, String>>,
}

#[derive(Clone, Copy)]
pub struct FailoverParams {
    /// Elect automatically when the primary is marked down.
    pub automatic: bool,
    pub min_uptime: Duration,
    /// How long the chosen replica may take to apply the rest of the log before another
    /// candidate is tried.
    pub catch_up_timeout: Duration,
}

const LEADER_FILE: &str = "leader";

/// The persisted leadership of a shard (epoch, leader), from its WAL directory.
pub fn read_leadership(shard_dir: &Path) -> Option<(u64, ReplicaId)> {
    let text = std::fs::read_to_string(shard_dir.join(LEADER_FILE)).ok()?;
    let mut words = text.split_whitespace();
    let epoch = words.next()?.parse().ok()?;
    let leader = words.next()?.parse().ok()?;
    Some((epoch, ReplicaId(leader)))
}

/// Writes the leadership durably (temporary file, fsync, rename), so a restarted proxy
/// routes writes to the elected primary rather than the configured first replica.
fn write_leadership(shard_dir: &Path, epoch: u64, leader: ReplicaId) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = shard_dir.join(format!("{LEADER_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch} {}", leader.0)?;
    f.sync_all()?;
    std::fs::rename(&tmp, shard_dir.join(LEADER_FILE))?;
    std::fs::File::open(shard_dir)?.sync_all()
}

/// Persists a promotion, logging (not failing) when the file cannot be written.
pub fn persist_leadership(log: &ShardLog, epoch: u64, leader: ReplicaId) {
    if let Err(e) = write_leadership(log.wal.dir(), epoch, leader) {
        tracing::error!(shard = log.shard.0, error = %e,
            "cannot persist the new leadership; a proxy restart would route writes to the old primary \
             until it is fixed (check replication.wal_dir)");
    }
}

enum Trigger {
    PrimaryDown,
    Switchover(Option<ReplicaId>),
}

/// Watches the shard's primary and serves switchover requests until cancelled.
pub async fn run(
    log: Arc<ShardLog>,
    cluster: Arc<Cluster>,
    params: FailoverParams,
    mut requests: mpsc::Receiver<SwitchoverRequest>,
    cancel: CancellationToken,
) {
    loop {
        let leader = log.leader();
        let Some(pool) = cluster.pool(log.shard, leader).cloned() else {
            return;
        };
        let (trigger, reply) = tokio::select! {
            _ = pool.wait_down(), if params.automatic => (Trigger::PrimaryDown, None),
            _ = pool.wait_down(), if !params.automatic => {
                let outcome = tokio::select! {
                    r = await_return(&log, &cluster) => r,
                    _ = cancel.cancelled() => return,
                };
                match outcome {
                    Ok(msg) => tracing::info!(shard = log.shard.0, "{msg}"),
                    Err(e) => tracing::warn!(shard = log.shard.0, "{e}"),
                }
                continue;
            }
            req = requests.recv() => match req {
                Some(r) => (Trigger::Switchover(r.to), Some(r.reply)),
                None => return,
            },
            _ = cancel.cancelled() => return,
        };
        let outcome = tokio::select! {
            r = election(&log, &cluster, &params, trigger) => r,
            _ = cancel.cancelled() => return,
        };
        match &outcome {
            Ok(msg) => tracing::info!(shard = log.shard.0, "{msg}"),
            Err(e) => tracing::warn!(shard = log.shard.0, "{e}"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Without automatic failover: writes wait (up to the commit timeout) while the primary is
/// down, and when it answers again it is checked against the log before they open.
async fn await_return(log: &ShardLog, cluster: &Cluster) -> Result<String, String> {
    let leader = log.leader();
    let pool = cluster
        .pool(log.shard, leader)
        .cloned()
        .ok_or("the primary has no pool")?;
    tracing::warn!(shard = log.shard.0, primary = leader.0, addr = %pool.addr,
        "primary marked down and replication.failover is off: writes on this shard wait for \
         it (PROXY SWITCHOVER moves them elsewhere)");
    let end = log.fence().await.map_err(|e| e.to_string())?;
    loop {
        while !pool.is_up() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match repair_returned_primary(log, &pool, end).await {
            Ok(n) => {
                log.unfence();
                return Ok(format!(
                    "primary {} answers again ({n} logged records it lacked applied); writes open",
                    leader.0
                ));
            }
            Err(e) => {
                tracing::warn!(shard = log.shard.0, error = %e,
                    "the returning primary could not be checked against the log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The primary answers again after health checks marked it down, and stays primary. A crash
/// of its machine may have taken its last commits (it runs without syncing them,
/// `flush_role`), so every logged record up to `end` that it lacks is applied before writes
/// open. Sessions still committing on it finish first: their records would be applied twice.
async fn repair_returned_primary(
    log: &ShardLog,
    pool: &Arc<BackendPool>,
    end: u64,
) -> Result<usize, String> {
    let leader = log.leader();
    let deadline = Instant::now() + log.commit_timeout + Duration::from_secs(1);
    while log.committing_on(leader) {
        if Instant::now() > deadline {
            return Err("sessions are still committing on it".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = super::applier::connect(pool)
        .await
        .map_err(|e| format!("connecting to it: {e}"))?;
    let failed = log.failed_on_primary();
    let applied = super::recovery::fill_gaps(log, &mut conn, 0, end).await?;
    log.primary_repaired(&failed);
    Ok(applied)
}

/// What the election needs to know about each replica now.
fn candidates(log: &ShardLog, cluster: &Cluster, end: u64, min_uptime: Duration) -> Vec<Candidate> {
    log.replicas
        .iter()
        .enumerate()
        .filter_map(|(i, st)| {
            let replica = ReplicaId(i as u32);
            let pool = cluster.pool(log.shard, replica)?;
            let applied = st.applied.load(Ordering::Acquire);
            let live =
                pool.is_up() && st.live.load(Ordering::Acquire) && st.quarantined.lock().is_none();
            Some(Candidate {
                replica,
                live,
                behind: log.records_between(applied, end) as u64,
                latency_us: pool.probe_latency_us(),
                apply_us: (st.apply_latency.quantile_ms(0.5) * 1000.0) as u64,
                // Uptime as the proxy saw it, capped so that a long uptime is no bonus
                // beyond "stable".
                uptime_s: pool.uptime_secs().min(min_uptime.as_secs() + 1),
                times_down: pool.down_events.load(Ordering::Relaxed),
            })
        })
        .collect()
}

async fn election(
    log: &ShardLog,
    cluster: &Cluster,
    params: &FailoverParams,
    trigger: Trigger,
) -> Result<String, String> {
    let shard = log.shard;
    let old = log.leader();
    let started = Instant::now();
    let old_pool = cluster
        .pool(shard, old)
        .cloned()
        .ok_or("the primary has no pool")?;
    let (switch_to, why) = match &trigger {
        Trigger::PrimaryDown => (None, "primary marked down by health checks"),
        Trigger::Switchover(to) => (*to, "switchover requested"),
    };
    if switch_to == Some(old) {
        return Ok(format!("replica {} is already the primary", old.0));
    }
    tracing::warn!(shard = shard.0, primary = old.0, addr = %old_pool.addr, reason = why,
        "electing a new primary; writes on this shard wait until it is done");
    let end = log.fence().await.map_err(|e| e.to_string())?;
    let rules = Rules {
        n: log.replicas.len(),
        t: log.cabinet().t,
        min_uptime_s: params.min_uptime.as_secs(),
    };
    let mut last_report = Instant::now() - Duration::from_secs(10);
    loop {
        let switchover = matches!(trigger, Trigger::Switchover(_));
        if !switchover && old_pool.is_up() {
            match repair_returned_primary(log, &old_pool, end).await {
                Ok(n) => {
                    log.unfence();
                    return Ok(format!(
                        "primary {} answers again before an election could finish; it stays \
                         primary ({n} logged records it lacked applied)",
                        old.0
                    ));
                }
                Err(e) => {
                    tracing::warn!(shard = shard.0, error = %e,
                        "the returning primary could not be checked against the log; electing on");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let cands = candidates(log, cluster, end, params.min_uptime);
        let verdict = match switch_to {
            Some(to) => match cands.iter().find(|c| c.replica == to) {
                Some(c) if c.live => Verdict::Elect {
                    replica: to,
                    scores: vec![(to, super::election::score(c, &rules))],
                },
                _ => {
                    log.unfence();
                    return Err(format!(
                        "switchover refused: replica {} is not a live follower (down, catching up \
                         its connection, or quarantined); see SHOW PROXY BACKENDS",
                        to.0
                    ));
                }
            },
            None => elect(&cands, old, switchover && old_pool.is_up(), &rules),
        };
        let (winner, scores) = match verdict {
            Verdict::Elect { replica, scores } => (replica, scores),
            other => {
                if switchover {
                    log.unfence();
                    return Err(format!("switchover refused: {other:?}"));
                }
                if last_report.elapsed() > Duration::from_secs(2) {
                    tracing::warn!(shard = shard.0, verdict = ?other,
                        "no primary can be elected yet (an election needs n − t live replicas); \
                         writes stay held until enough replicas are back or the primary returns");
                    last_report = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::info!(
            shard = shard.0,
            candidate = winner.0,
            ?scores,
            log_end = end,
            "candidate chosen (lowest score: latency + catch-up + crash history); catching it up"
        );
        // Log completeness is a hard condition: it leads only once it applied every record.
        let deadline = Instant::now() + params.catch_up_timeout;
        let state = &log.replicas[winner.0 as usize];
        let caught_up = loop {
            if state.applied.load(Ordering::Acquire) >= end {
                break true;
            }
            let pool_up = cluster.pool(shard, winner).is_some_and(|p| p.is_up());
            if !pool_up || !state.live.load(Ordering::Acquire) || Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if !caught_up {
            tracing::warn!(
                shard = shard.0,
                candidate = winner.0,
                "candidate did not reach the end of the log (down or too slow); choosing again"
            );
            if switchover {
                log.unfence();
                return Err(format!(
                    "switchover refused: replica {} did not catch up with the log within {} ms",
                    winner.0,
                    params.catch_up_timeout.as_millis()
                ));
            }
            continue;
        }
        cluster.set_primary(shard, winner);
        let epoch = log.promote(winner);
        persist_leadership(log, epoch, winner);
        // Sessions holding transactions or prepared statements on the old primary must not
        // keep writing there.
        old_pool.retire_sessions();
        log.reopen();
        return Ok(format!(
            "replica {} ({}) is the primary now (epoch {epoch}, was replica {}: {why}); writes \
             resumed after {} ms",
            winner.0,
            cluster
                .pool(shard, winner)
                .map(|p| p.addr.to_string())
                .unwrap_or_default(),
            old.0,
            started.elapsed().as_millis()
        ));
    }
}
