//! `PROXY REBUILD REPLICA`: brings a quarantined follower back without restarting the proxy.
//! Its application databases are replaced by a copy of a donor's taken in one consistent
//! snapshot (`backend::copy`), `myquorum.wal` included, and its applier starts again: it
//! applies the records the snapshot lacked and follows the log as before.
//!
//! The donor is a live follower when there is one (`choose_donor`), as MySQL's InnoDB
//! Cluster clones from a secondary: the copy's long snapshot and reads then load a server
//! that serves no writes, and a client's DDL on the primary does not wait for the copy's
//! metadata locks. The primary donates when no follower can, or when asked (`FROM`).
//!
//! The snapshot's log position, read just before the snapshot starts: a follower donor's
//! applied position (it applies in order, so everything up to it is in the copy), or the
//! primary's `primary_low_water()`. Records above it may or may not be in the copy (applied
//! or committed meanwhile), which is the state a former primary is left in, so the applier
//! fills them the same way (`gap_floor`, `recovery::fill_gaps`). From that moment the
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

/// A replica as a possible donor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DonorView {
    pub id: ReplicaId,
    pub leads: bool,
    /// A follower that is up, connected, neither quarantined nor rebuilding, with no gaps
    /// left from a former leadership: every record up to `applied` is in its databases.
    pub can_donate: bool,
    pub applied: u64,
}

/// The replica `target` is copied from: `requested` when it can donate; otherwise the
/// live follower that applied the most, or the primary when there is none.
pub fn choose_donor(
    target: ReplicaId,
    requested: Option<ReplicaId>,
    replicas: &[DonorView],
) -> Result<ReplicaId, String> {
    if let Some(from) = requested {
        if from == target {
            return Err(format!(
                "replica {} cannot be rebuilt from itself; name another replica after FROM",
                from.0
            ));
        }
        let Some(d) = replicas.iter().find(|r| r.id == from) else {
            return Err(format!("there is no replica {} to copy from", from.0));
        };
        if d.leads || d.can_donate {
            return Ok(from);
        }
        let leader = replicas.iter().find(|r| r.leads).map(|r| r.id.0);
        return Err(format!(
            "replica {} cannot donate: it is not a live follower applying in order (down, quarantined, \
             rebuilding or still filling gaps); copy from the primary (FROM {}) or leave FROM \
             out",
            from.0,
            leader.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
        ));
    }
    replicas
        .iter()
        .filter(|r| r.id != target && !r.leads && r.can_donate)
        .max_by_key(|r| (r.applied, std::cmp::Reverse(r.id)))
        .or_else(|| replicas.iter().find(|r| r.leads))
        .map(|r| r.id)
        .ok_or_else(|| "no replica can donate a copy (no primary)".to_string())
}

pub async fn rebuild(
    log: Arc<ShardLog>,
    cluster: Arc<Cluster>,
    replica: ReplicaId,
    from: Option<ReplicaId>,
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
             databases are replaced by a copy of another replica's)"
        ));
    };
    if state.rebuilding.swap(true, Ordering::AcqRel) {
        return Err(format!("replica {n} is already being rebuilt"));
    }
    let _rebuilding = Rebuilding(&state.rebuilding);
    let donors: Vec<DonorView> = (0..log.replicas.len() as u32)
        .map(ReplicaId)
        .map(|id| {
            let s = &log.replicas[id.0 as usize];
            DonorView {
                id,
                leads: id == leader,
                can_donate: s.live.load(Ordering::Acquire)
                    && s.quarantined.lock().is_none()
                    && !s.rebuilding.load(Ordering::Acquire)
                    && s.gap_floor.load(Ordering::Acquire) == u64::MAX
                    && cluster.pool(shard, id).is_some_and(|p| p.is_up()),
                applied: s.applied.load(Ordering::Acquire),
            }
        })
        .collect();
    let donor = choose_donor(replica, from, &donors)?;
    let (Some(source), Some(target)) = (cluster.pool(shard, donor), cluster.pool(shard, replica))
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
    let donor_role = if donor == leader {
        "the primary"
    } else {
        "a follower"
    };
    tracing::info!(shard = shard.0, replica = n, donor = donor.0, donor_role, source = %source.addr,
        target = %target.addr, quarantined_for = %why, "rebuild started: copying the donor's databases");
    let floor = AtomicU64::new(0);
    let at_snapshot = || {
        let f = if donor == leader {
            log.primary_low_water()
        } else {
            log.replicas[donor.0 as usize]
                .applied
                .load(Ordering::Acquire)
        };
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
            // A donor follower may have been promoted mid-copy, or the primary donor demoted.
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
        "replica {n} rebuilt from replica {} ({donor_role}): {} databases, {} tables, {} rows, \
         {} views, {} routines, {} triggers, {} events in {:.1} s; {status}",
        donor.0,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u32, leads: bool, can_donate: bool, applied: u64) -> DonorView {
        DonorView {
            id: ReplicaId(id),
            leads,
            can_donate,
            applied,
        }
    }

    #[test]
    fn a_live_follower_donates_before_the_primary() {
        let target = ReplicaId(2);
        let three = [
            view(0, true, false, 0),
            view(1, false, true, 90),
            view(2, false, false, 10),
        ];
        assert_eq!(choose_donor(target, None, &three), Ok(ReplicaId(1)));
        // The follower that applied the most.
        let five = [
            view(0, true, false, 0),
            view(1, false, true, 80),
            view(2, false, false, 10),
            view(3, false, true, 95),
            view(4, false, false, 99),
        ];
        assert_eq!(choose_donor(target, None, &five), Ok(ReplicaId(3)));
        // No follower can: the primary.
        let lagging = [
            view(0, true, false, 0),
            view(1, false, false, 90),
            view(2, false, false, 10),
        ];
        assert_eq!(choose_donor(target, None, &lagging), Ok(ReplicaId(0)));
    }

    #[test]
    fn a_requested_donor_must_be_able_to_donate() {
        let target = ReplicaId(2);
        let three = [
            view(0, true, false, 0),
            view(1, false, false, 90),
            view(2, false, false, 10),
        ];
        assert_eq!(
            choose_donor(target, Some(ReplicaId(0)), &three),
            Ok(ReplicaId(0))
        );
        let e = choose_donor(target, Some(ReplicaId(1)), &three).unwrap_err();
        assert!(
            e.contains("replica 1 cannot donate") && e.contains("FROM 0"),
            "{e}"
        );
        let e = choose_donor(target, Some(ReplicaId(2)), &three).unwrap_err();
        assert!(e.contains("from itself"), "{e}");
        let e = choose_donor(target, Some(ReplicaId(7)), &three).unwrap_err();
        assert!(e.contains("no replica 7"), "{e}");
    }
}
