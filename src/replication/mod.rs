//! Replication: the sequencer (timestamp + WAL append as one step per shard), the Cabinet
//! quorum, one applier per replica, recovery, and primary election (failover/switchover).
//!
//! Owns: `Replication` (every shard's log). May import: wal, tso, backend (applier
//! connections), protocol (reading responses), router ids, config.

pub mod applier;
pub mod cabinet;
pub mod certify;
pub mod checksum;
pub mod ddl_order;
pub mod election;
pub mod failover;
pub mod flush_role;
pub mod log;
pub mod rebuild;
pub mod record;
pub mod recovery;
pub mod replay;
pub mod wal_table;

use crate::backend::Cluster;
use crate::config::Config;
use crate::router::{ReplicaId, ShardId};
use crate::tso::{TsoEndpoint, TsoPair};
use crate::wal::{Wal, WalRecord};
use log::ShardLog;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub struct Replication {
    pub shards: Vec<Arc<ShardLog>>,
    tso: Arc<TsoPair>,
    recovered: Mutex<Vec<Vec<WalRecord>>>,
    apply_batch: usize,
    wal_retain: Duration,
    auto_rebuild: bool,
    failover: failover::FailoverParams,
    /// Per shard: switchover requests to its failover task (taken by `spawn`).
    switchover_tx: Vec<mpsc::Sender<failover::SwitchoverRequest>>,
    switchover_rx: Mutex<Vec<mpsc::Receiver<failover::SwitchoverRequest>>>,
    /// The cluster and shutdown token `spawn` was given: a rebuild starts an applier with them.
    running: Mutex<Option<(Arc<Cluster>, CancellationToken)>>,
}

impl Replication {
    /// Opens every shard's WAL (verifying it and cutting a torn tail) and the timestamp pair.
    pub fn open(cfg: &Config) -> Result<Replication, String> {
        let dir = PathBuf::from(&cfg.replication.wal_dir);
        let tso = if cfg.replication.tso_servers.len() == 2 {
            TsoPair::new(
                TsoEndpoint::remote(&cfg.replication.tso_servers[0]),
                TsoEndpoint::remote(&cfg.replication.tso_servers[1]),
                Duration::from_millis(500),
            )
        } else {
            TsoPair::in_process(&dir).map_err(|e| {
                format!(
                    "cannot open the timestamp state in {}: {e}; check replication.wal_dir",
                    dir.display()
                )
            })?
        };
        let mut shards = Vec::new();
        let mut recovered = Vec::new();
        for (i, s) in cfg.shards.iter().enumerate() {
            let shard_dir = dir.join(format!("shard-{i}"));
            let (wal, rec) =
                Wal::open_sized(&shard_dir, cfg.replication.wal_segment_bytes.max(4096))
                    .map_err(|e| format!("cannot open the WAL in {}: {e}", shard_dir.display()))?;
            if rec.truncated_bytes > 0 {
                tracing::warn!(
                    shard = i,
                    bytes = rec.truncated_bytes,
                    "cut a torn WAL tail"
                );
            }
            let last = rec.records.last().map(|r| r.ts).unwrap_or(0);
            tracing::info!(shard = i, records = rec.records.len(), last_ts = last, dir = %shard_dir.display(), "WAL opened");
            // The primary elected last (persisted), else the first configured replica.
            let (epoch, leader) = failover::read_leadership(&shard_dir)
                .filter(|(_, r)| (r.0 as usize) < s.replicas.len())
                .unwrap_or((0, ReplicaId(0)));
            if epoch > 0 {
                tracing::info!(
                    shard = i,
                    leader = leader.0,
                    epoch,
                    "primary as last elected"
                );
            }
            let log = ShardLog::new(
                ShardId(i as u32),
                s.replicas.len(),
                (epoch, leader),
                cfg.replication.failure_threshold,
                wal,
                last,
                log::LogParams {
                    commit_timeout: Duration::from_millis(cfg.replication.commit_timeout_ms),
                    max_record: cfg.replication.max_record_bytes,
                    relax_primary_flush: !cfg.replication.primary_syncs_commits,
                },
            )?;
            shards.push(log);
            recovered.push(rec.records);
        }
        let (switchover_tx, switchover_rx) = shards.iter().map(|_| mpsc::channel(4)).unzip();
        Ok(Replication {
            shards,
            tso: Arc::new(tso),
            recovered: Mutex::new(recovered),
            apply_batch: cfg.replication.apply_batch.max(1),
            wal_retain: Duration::from_secs(cfg.replication.wal_retain_s),
            auto_rebuild: cfg.replication.auto_rebuild,
            failover: failover::FailoverParams {
                automatic: cfg.replication.failover,
                min_uptime: Duration::from_millis(cfg.replication.election_min_uptime_ms),
                catch_up_timeout: Duration::from_secs(10),
            },
            switchover_tx,
            switchover_rx: Mutex::new(switchover_rx),
            running: Mutex::new(None),
        })
    }

    /// Moves `shard`'s primary to `to` (or the best replica by score) and waits for the
    /// outcome, described in words.
    pub async fn switchover(
        &self,
        shard: ShardId,
        to: Option<ReplicaId>,
    ) -> Result<String, String> {
        let tx = self
            .switchover_tx
            .get(shard.0 as usize)
            .ok_or_else(|| format!("no shard {}", shard.0))?;
        let (reply, rx) = oneshot::channel();
        tx.try_send(failover::SwitchoverRequest { to, reply })
            .map_err(|_| "a switchover is already under way on this shard (or the shard is still recovering); retry shortly".to_string())?;
        rx.await.map_err(|_| {
            "the shard is still recovering or the proxy is stopping; retry shortly".to_string()
        })?
    }

    /// Replaces a quarantined follower's databases with a snapshot copy of another replica's
    /// (`from`, or one `rebuild` picks) and starts its applier again; the outcome in words.
    pub async fn rebuild(
        &self,
        shard: ShardId,
        replica: ReplicaId,
        from: Option<ReplicaId>,
    ) -> Result<String, String> {
        let log = self
            .shard(shard)
            .ok_or_else(|| format!("no shard {}", shard.0))?
            .clone();
        let Some((cluster, cancel)) = self.running.lock().clone() else {
            return Err("the proxy is still starting; retry shortly".into());
        };
        rebuild::rebuild(log, cluster, replica, from, self.apply_batch, cancel).await
    }

    /// At shutdown: every primary syncs its commits again (`flush_role`), within `limit`.
    pub async fn restore_primary_flush(&self, limit: Duration) {
        let Some((cluster, _)) = self.running.lock().clone() else {
            return;
        };
        let restores = async {
            for log in &self.shards {
                if let Some(pool) = cluster.pool(log.shard, log.leader()) {
                    flush_role::restore(log, pool).await;
                }
            }
        };
        if tokio::time::timeout(limit, restores).await.is_err() {
            tracing::warn!("primaries did not answer at shutdown: innodb_flush_log_at_trx_commit may stay 2 on them until the proxy's next start");
        }
    }

    pub fn shard(&self, id: ShardId) -> Option<&Arc<ShardLog>> {
        self.shards.get(id.0 as usize)
    }

    /// Starts recovery, appliers and upkeep for every shard (once).
    pub fn spawn(&self, cluster: Arc<Cluster>, cancel: &CancellationToken) {
        *self.running.lock() = Some((cluster.clone(), cancel.clone()));
        let recovered = std::mem::take(&mut *self.recovered.lock());
        let switchovers = std::mem::take(&mut *self.switchover_rx.lock());
        for ((log, records), switchovers) in self.shards.iter().zip(recovered).zip(switchovers) {
            cluster.set_primary(log.shard, log.leader());
            tokio::spawn(recovery::run_shard(
                log.clone(),
                records,
                cluster.clone(),
                self.tso.clone(),
                recovery::RecoveryParams {
                    apply_batch: self.apply_batch,
                    catch_up_timeout: Duration::from_secs(120),
                    failover: self.failover,
                    wal_retain: self.wal_retain,
                    auto_rebuild: self.auto_rebuild,
                    switchovers,
                },
                cancel.clone(),
            ));
        }
    }
}
