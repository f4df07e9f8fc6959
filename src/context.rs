//! State shared by every client connection: config, cluster, users, counters.
//!
//! Owns: `ProxyContext`. May import: config, backend, frontend::auth (user table),
//! protocol::handshake (what clients are offered).

use crate::backend::{BackendAccount, Cluster};
use crate::config::Config;
use crate::frontend::auth::Authenticator;
use crate::router::ShardId;
use crate::sql::ClassifyCache;
use mysql_common::constants::MariadbCapabilities;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub statements: AtomicU64,
    pub backend_errors: AtomicU64,
    /// Autocommit reads a replica served, and those that fell back to the primary because no
    /// replica was fresh enough.
    pub replica_reads: AtomicU64,
    pub primary_fallbacks: AtomicU64,
    /// SETs of an isolation level below REPEATABLE READ, run as REPEATABLE READ.
    pub isolation_raised: AtomicU64,
    /// Client connections closed for sitting idle longer than their `wait_timeout`.
    pub idle_timeouts: AtomicU64,
}

pub struct ProxyContext {
    pub config: Config,
    pub cluster: std::sync::Arc<Cluster>,
    /// Every shard's log, sequencer and appliers.
    pub replication: crate::replication::Replication,
    pub auth: Authenticator,
    /// Client-side TLS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub counters: Counters,
    /// The default read consistency (from `proxy.read_consistency`).
    pub read_consistency: crate::router::Consistency,
    /// Classification per statement digest, shared by all sessions.
    pub classify_cache: ClassifyCache,
    /// Executions and time per statement digest (`SHOW PROXY QUERIES`).
    pub digests: crate::digests::QueryDigests,
    /// Live client sessions by connection id, for KILL.
    pub sessions: crate::frontend::kill::SessionRegistry,
    /// Per (schema, procedure), lowercase: why a CALL of it is refused (it generates ids the
    /// log cannot carry), or None. Cleared by procedure DDL through the proxy.
    pub call_checks: dashmap::DashMap<(String, String), Option<String>>,
    /// Per configured user: the server account it runs as (`None`: the proxy's own) and
    /// whether it may run the proxy's own statements.
    access: std::collections::HashMap<String, (Option<std::sync::Arc<BackendAccount>>, bool)>,
    next_connection_id: AtomicU32,
}

impl ProxyContext {
    /// Gives a session just logged in (or changed to) as `session.user` its backend account
    /// and its admin right.
    pub fn grant_access(&self, session: &mut crate::session::SessionState) {
        let (account, admin) = self.access.get(&session.user).cloned().unwrap_or_default();
        session.backend_account = account;
        session.admin = admin;
    }

    pub fn new(config: Config) -> Result<Self, String> {
        let read_consistency = crate::router::Consistency::parse(&config.proxy.read_consistency)
            .ok_or_else(|| {
                format!(
                    "proxy.read_consistency = {:?}: use \"strong\", \"session\" or \"eventual\"",
                    config.proxy.read_consistency
                )
            })?;
        let cluster = std::sync::Arc::new(Cluster::from_config(&config)?);
        let replication = crate::replication::Replication::open(&config)?;
        let users = config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect();
        let access = config
            .users
            .iter()
            .map(|u| {
                let account = u
                    .backend_account()
                    .map(|(user, password)| std::sync::Arc::new(BackendAccount { user, password }));
                (u.name.clone(), (account, u.is_admin()))
            })
            .collect();
        let tls = if config.proxy.tls_cert.is_empty() {
            None
        } else {
            Some(crate::frontend::tls::acceptor(
                &config.proxy.tls_cert,
                &config.proxy.tls_key,
            )?)
        };
        Ok(ProxyContext {
            config,
            cluster,
            replication,
            auth: Authenticator::new(users),
            tls,
            counters: Counters::default(),
            read_consistency,
            classify_cache: ClassifyCache::new(10_000),
            digests: crate::digests::QueryDigests::default(),
            sessions: Default::default(),
            call_checks: Default::default(),
            access,
            next_connection_id: AtomicU32::new(1),
        })
    }

    pub fn next_connection_id(&self) -> u32 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Version string for greetings: the configured one, else the default shard primary's
    /// with "-myquorum" appended so clients keep their MariaDB/MySQL detection.
    pub fn server_version(&self) -> String {
        if !self.config.proxy.server_version.is_empty() {
            return self.config.proxy.server_version.clone();
        }
        let backend = self
            .cluster
            .primary(ShardId(0))
            .and_then(|p| p.server_version())
            .unwrap_or_else(|| "8.0.0".to_string());
        format!("{backend}-myquorum")
    }

    /// MariaDB's extended capabilities to offer a connecting client: extended column
    /// metadata when every backend was reached and offers it, so that any connection a
    /// session is given can carry it.
    pub fn mariadb_capabilities(&self) -> MariadbCapabilities {
        let mut pools = self.cluster.pools().peekable();
        if pools.peek().is_some() && pools.all(|(_, _, p)| p.offers_extended_metadata()) {
            crate::protocol::handshake::EXTENDED_METADATA
        } else {
            MariadbCapabilities::empty()
        }
    }
}

impl ProxyContext {
    /// The read side of `shard` now: each replica's health, applied position and latency.
    pub fn read_view(&self, shard: crate::router::ShardId) -> crate::router::ReadView {
        use crate::router::{ReadView, ReplicaId, ReplicaView};
        let Some(log) = self.replication.shards.iter().find(|l| l.shard == shard) else {
            return ReadView::default();
        };
        let replicas = log
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, st)| {
                let id = ReplicaId(i as u32);
                let pool = self.cluster.pool(shard, id)?;
                let leader = id == log.leader();
                let follower_ok =
                    st.live.load(Ordering::Relaxed) && st.quarantined.lock().is_none();
                Some(ReplicaView {
                    id,
                    serving: pool.is_up() && (leader || follower_ok),
                    applied: if leader {
                        u64::MAX
                    } else {
                        st.applied.load(Ordering::Acquire)
                    },
                    latency_us: pool.probe_latency_us(),
                })
            })
            .collect();
        ReadView {
            replicas,
            log_end: log.last_sequenced(),
            // Timestamps carry milliseconds shifted left by 18, then the parity bit.
            max_lag_ts: self.config.proxy.read_max_lag_ms << 19,
        }
    }
}
