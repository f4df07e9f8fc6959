//! The cluster as the data path sees it: one pool per replica of every shard, and the
//! topology the router reads. The topology changes only when a shard elects a new primary;
//! readers take a snapshot (`topology()`), so a statement routes against one consistent view.
//!
//! Owns: `Cluster`. May import: backend::{pool, health, tls, schema_facts}, router (topology types), config.

use super::health::{run_health_checks, HealthParams};
use super::pool::BackendPool;
use super::schema_facts::{run_refresh, SchemaFacts};
use super::tls::BackendTls;
use super::ConnectParams;
use crate::config::Config;
use crate::router::{ReplicaId, ShardId, ShardTopology, Topology};
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    topology: RwLock<Arc<Topology>>,
    pools: Vec<Vec<Arc<BackendPool>>>,
    /// Per shard: which tables writes may run on without the clock set.
    schema_facts: Vec<Arc<SchemaFacts>>,
}

impl Cluster {
    /// The pools of every configured server; fails on unusable TLS settings.
    pub fn from_config(cfg: &Config) -> Result<Cluster, String> {
        let params = ConnectParams {
            user: cfg.backend.user.clone(),
            password: cfg.backend.password.clone(),
            connect_timeout: Duration::from_millis(cfg.backend.connect_timeout_ms),
            prefer_socket: cfg.backend.prefer_socket,
            tls: BackendTls::new(&cfg.backend)?,
        };
        let pools: Vec<Vec<Arc<BackendPool>>> = cfg
            .shards
            .iter()
            .map(|s| {
                s.replicas
                    .iter()
                    .map(|a| {
                        Arc::new(BackendPool::new(
                            a,
                            params.clone(),
                            cfg.backend.pool_max_idle,
                        ))
                    })
                    .collect()
            })
            .collect();
        let topology = Topology {
            shards: pools
                .iter()
                .enumerate()
                .map(|(i, r)| ShardTopology {
                    id: ShardId(i as u32),
                    primary: ReplicaId(0),
                    replicas: (0..r.len() as u32).map(ReplicaId).collect(),
                })
                .collect(),
        };
        Ok(Cluster {
            topology: RwLock::new(Arc::new(topology)),
            schema_facts: pools.iter().map(|_| Arc::default()).collect(),
            pools,
        })
    }

    /// The topology now (cheap: one shared snapshot until the next election).
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Makes `replica` the primary of `shard` for routing.
    pub fn set_primary(&self, shard: ShardId, replica: ReplicaId) {
        let mut t = self.topology.write();
        let mut next = (**t).clone();
        if let Some(s) = next.shards.get_mut(shard.0 as usize) {
            s.primary = replica;
        }
        *t = Arc::new(next);
    }

    pub fn primary_id(&self, shard: ShardId) -> Option<ReplicaId> {
        self.topology
            .read()
            .shards
            .get(shard.0 as usize)
            .map(|s| s.primary)
    }

    pub fn pool(&self, shard: ShardId, replica: ReplicaId) -> Option<&Arc<BackendPool>> {
        self.pools.get(shard.0 as usize)?.get(replica.0 as usize)
    }

    pub fn primary(&self, shard: ShardId) -> Option<&Arc<BackendPool>> {
        self.pool(shard, self.primary_id(shard)?)
    }

    /// Every (shard, replica, pool).
    pub fn pools(&self) -> impl Iterator<Item = (ShardId, ReplicaId, &Arc<BackendPool>)> {
        self.pools.iter().enumerate().flat_map(|(s, rs)| {
            rs.iter()
                .enumerate()
                .map(move |(r, p)| (ShardId(s as u32), ReplicaId(r as u32), p))
        })
    }

    pub fn schema_facts(&self, shard: ShardId) -> Option<&Arc<SchemaFacts>> {
        self.schema_facts.get(shard.0 as usize)
    }

    /// Starts one task per shard keeping its `SchemaFacts`, read on its primary.
    pub fn spawn_schema_facts(self: &Arc<Self>, cfg: &Config, cancel: &CancellationToken) {
        let retry = Duration::from_millis(cfg.backend.health_interval_ms);
        for (i, facts) in self.schema_facts.iter().enumerate() {
            let cluster = self.clone();
            let shard = ShardId(i as u32);
            tokio::spawn(run_refresh(
                facts.clone(),
                move || cluster.primary(shard).cloned(),
                retry,
                cancel.clone(),
            ));
        }
    }

    pub fn role(&self, shard: ShardId, replica: ReplicaId) -> &'static str {
        match self.primary_id(shard) {
            Some(p) if p == replica => "primary",
            _ => "replica",
        }
    }

    /// Starts one health-check task per backend.
    pub fn spawn_health_checks(&self, cfg: &Config, cancel: &CancellationToken) {
        for (_, _, pool) in self.pools() {
            let p = HealthParams {
                user: cfg.backend.user.clone(),
                password: cfg.backend.password.clone(),
                tls: pool.params.tls.clone(),
                interval: Duration::from_millis(cfg.backend.health_interval_ms),
                failures_to_down: cfg.backend.health_failures.max(1),
                timeout: Duration::from_millis(cfg.backend.connect_timeout_ms),
            };
            tokio::spawn(run_health_checks(pool.clone(), p, cancel.clone()));
        }
    }
}
