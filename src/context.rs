//! State shared by every client connection: config, cluster, users, counters.
//!
//! Owns: `ProxyContext` and reloading its users from the config file. May import: config,
//! backend, frontend::auth (user table), protocol::handshake (what clients are offered).

use crate::backend::{BackendAccount, Cluster};
use crate::config::{CliOverrides, Config};
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
    /// Reads of READ COMMITTED transactions run outside the server's transaction, before it
    /// began (`session::OutsideRead`).
    pub read_committed_reads: AtomicU64,
    /// Client connections closed for sitting idle longer than their `wait_timeout`.
    pub idle_timeouts: AtomicU64,
    /// Waits for a client's next command that polled (`proxy.busy_poll_us`), and those
    /// whose command arrived while polling.
    pub client_polls: AtomicU64,
    pub client_poll_hits: AtomicU64,
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
    /// `[proxy]` settings a config reload changes in place.
    pub live: LiveSettings,
    /// Classification per statement digest, shared by all sessions.
    pub classify_cache: ClassifyCache,
    /// Executions and time per statement digest (`SHOW PROXY QUERIES`).
    pub digests: crate::digests::QueryDigests,
    /// Live client sessions by connection id, for KILL.
    pub sessions: crate::frontend::kill::SessionRegistry,
    /// Per (schema, procedure), lowercase: what its body was found to do. Cleared by
    /// procedure DDL through the proxy.
    pub call_checks: dashmap::DashMap<(String, String), CallCheck>,
    /// How far a logged SETVAL put the followers' sequences (`frontend::sequences`).
    pub sequence_reservations: crate::frontend::SequenceReservations,
    /// A DROP DATABASE has gone through the proxy: from then on a session's database may
    /// be missing, and a stored routine or trigger may leave a connection without it
    /// (`Diagnostics::left_without_database`). Until then a relayed statement's warnings
    /// are not listed to look for that.
    pub databases_dropped: std::sync::atomic::AtomicBool,
    /// Per configured user: the server account it runs as (`None`: the proxy's own) and
    /// whether it may run the proxy's own statements. Replaced by a config reload.
    access: parking_lot::RwLock<UserAccess>,
    /// The file the config came from, for `PROXY RELOAD` and SIGHUP (`None`: built in code).
    config_source: Option<ConfigSource>,
    next_connection_id: AtomicU32,
}

/// The `[proxy]` settings a reload applies at once (`ProxyConfig::LIVE`): each is read where
/// it is used, so a new value counts from the next read routed or idle wait begun.
pub struct LiveSettings {
    read_consistency: std::sync::atomic::AtomicU8,
    read_max_lag_ms: AtomicU64,
    wait_timeout_s: AtomicU64,
    busy_poll_us: AtomicU64,
}

impl LiveSettings {
    fn new(config: &Config) -> LiveSettings {
        let live = LiveSettings {
            read_consistency: Default::default(),
            read_max_lag_ms: Default::default(),
            wait_timeout_s: Default::default(),
            busy_poll_us: Default::default(),
        };
        live.store(config);
        live
    }

    /// `config` passed `Config::validate`, which checks the consistency's name.
    fn store(&self, config: &Config) {
        let p = &config.proxy;
        let consistency =
            crate::router::Consistency::parse(&p.read_consistency).unwrap_or_default();
        self.read_consistency
            .store(consistency as u8, Ordering::Relaxed);
        self.read_max_lag_ms
            .store(p.read_max_lag_ms, Ordering::Relaxed);
        self.wait_timeout_s
            .store(p.wait_timeout_s, Ordering::Relaxed);
        self.busy_poll_us.store(p.busy_poll_us, Ordering::Relaxed);
    }

    /// How long a lone session polls for its client's next command, and for a read's answer,
    /// before sleeping (`proxy.busy_poll_us`).
    pub fn busy_poll_us(&self) -> u64 {
        self.busy_poll_us.load(Ordering::Relaxed)
    }

    /// The default consistency of autocommit reads (`proxy.read_consistency`).
    pub fn read_consistency(&self) -> crate::router::Consistency {
        crate::router::Consistency::from_u8(self.read_consistency.load(Ordering::Relaxed))
    }

    pub fn read_max_lag_ms(&self) -> u64 {
        self.read_max_lag_ms.load(Ordering::Relaxed)
    }

    pub fn wait_timeout_s(&self) -> u64 {
        self.wait_timeout_s.load(Ordering::Relaxed)
    }
}

type UserAccess = std::collections::HashMap<String, (Option<std::sync::Arc<BackendAccount>>, bool)>;

/// Where the running config was loaded from, and what that file said when last read (a
/// reload applies what changed in the file since, not what the command line set on top).
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    pub overrides: CliOverrides,
    loaded: parking_lot::Mutex<Config>,
}

impl ConfigSource {
    pub fn new(path: std::path::PathBuf, overrides: CliOverrides, loaded: Config) -> Self {
        ConfigSource {
            path,
            overrides,
            loaded: parking_lot::Mutex::new(loaded),
        }
    }
}

fn user_access(config: &Config) -> UserAccess {
    config
        .users
        .iter()
        .map(|u| {
            let account = u
                .backend_account()
                .map(|(user, password)| std::sync::Arc::new(BackendAccount { user, password }));
            (u.name.clone(), (account, u.is_admin()))
        })
        .collect()
}

fn user_passwords(config: &Config) -> std::collections::HashMap<String, String> {
    config
        .users
        .iter()
        .map(|u| (u.name.clone(), u.password.clone()))
        .collect()
}

impl ProxyContext {
    /// Gives a session just logged in (or changed to) as `session.user` its backend account
    /// and its admin right. A user a config reload removed after its password was checked is
    /// refused: the default would be the proxy's own account.
    pub fn grant_access(
        &self,
        session: &mut crate::session::SessionState,
    ) -> Result<(), crate::protocol::MysqlError> {
        let Some((account, admin)) = self.access.read().get(&session.user).cloned() else {
            return Err(crate::frontend::auth::access_denied(&session.user, true));
        };
        session.backend_account = account;
        session.admin = admin;
        Ok(())
    }

    pub fn new(config: Config) -> Result<Self, String> {
        crate::router::Consistency::parse(&config.proxy.read_consistency).ok_or_else(|| {
            format!(
                "proxy.read_consistency = {:?}: use \"strong\", \"session\" or \"eventual\"",
                config.proxy.read_consistency
            )
        })?;
        let live = LiveSettings::new(&config);
        let cluster = std::sync::Arc::new(Cluster::from_config(&config)?);
        let replication = crate::replication::Replication::open(&config)?;
        let users = user_passwords(&config);
        let access = parking_lot::RwLock::new(user_access(&config));
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
            live,
            classify_cache: ClassifyCache::new(10_000),
            digests: crate::digests::QueryDigests::default(),
            sessions: Default::default(),
            call_checks: Default::default(),
            sequence_reservations: Default::default(),
            databases_dropped: Default::default(),
            access,
            config_source: None,
            next_connection_id: AtomicU32::new(1),
        })
    }

    /// Records the file the config came from, so `PROXY RELOAD` and SIGHUP can read it again.
    pub fn with_config_source(mut self, source: ConfigSource) -> Self {
        self.config_source = Some(source);
        self
    }

    /// Reads the config file again and applies its users (logins from now on use them; the
    /// sessions already in stay) and the live `[proxy]` settings. Other settings that changed
    /// are named, not applied: they need a restart. A file that does not load changes nothing.
    pub fn reload(&self) -> Result<String, String> {
        let source = self.config_source.as_ref().ok_or_else(|| {
            "this proxy was not started from a config file (myquorum serve --config FILE); \
             there is nothing to reload"
                .to_string()
        })?;
        let new = Config::load(Some(&source.path), &source.overrides).map_err(|e| {
            format!(
                "{e} (in {}); the running configuration is kept: fix the file and reload again",
                source.path.display()
            )
        })?;
        let mut loaded = source.loaded.lock();
        let plan = loaded.reload_plan(&new);
        // Both tables change under the access lock; a login between its password check and
        // `grant_access` is still covered there.
        let mut access = self.access.write();
        self.auth.replace_users(user_passwords(&new));
        *access = user_access(&new);
        drop(access);
        self.live.store(&new);
        *loaded = new;
        let summary = plan.summary();
        if plan.restart_for.is_empty() {
            tracing::info!(path = %source.path.display(), "config reloaded: {summary}");
        } else {
            tracing::warn!(path = %source.path.display(),
                "config reloaded: {summary}; restart the proxy to apply those sections");
        }
        Ok(summary)
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
    /// Each shard's log end now: what a session starting now must be able to read
    /// (`ReadView::connected_at`).
    pub fn log_ends(&self) -> Vec<(crate::router::ShardId, u64)> {
        self.replication
            .shards
            .iter()
            .map(|l| (l.shard, l.last_sequenced()))
            .collect()
    }

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
            connected_at: 0,
            // Timestamps carry milliseconds shifted left by 18, then the parity bit.
            max_lag_ts: self.live.read_max_lag_ms() << 19,
        }
    }
}

/// What a stored procedure's body, with the procedures and stored functions it runs, was
/// found to do, judged once per procedure.
#[derive(Clone, Debug, Default)]
pub struct CallCheck {
    /// Why a CALL of it is refused (it generates ids the log cannot carry), if it is.
    pub refusal: Option<String>,
    /// It may start a transaction, committing the caller's open one part-way through.
    pub starts_transaction: bool,
    /// It may roll back the transaction it runs in (a ROLLBACK not to a savepoint).
    pub may_roll_back: bool,
    /// It may change data (`classify::may_write`): else it only reads, and runs under the
    /// session's isolation level rather than SERIALIZABLE.
    pub may_write: bool,
    /// It may change a table's definition (`classify::may_change_schema`): its CALL marks a
    /// schema change while it runs.
    pub may_change_schema: bool,
    /// The words and quoted identifiers of the bodies (each once), the stored functions'
    /// too: what may name one of the caller's temporary tables, or a table it reads.
    pub identifiers: std::collections::BTreeSet<String>,
    /// It runs more routines than were read to judge it: `identifiers` may miss tables it
    /// reads.
    pub reads_every_table: bool,
    /// Its own body has the one insert that generates AUTO_INCREMENT ids in all it runs,
    /// and runs it at most once per CALL (`determinism::carries_its_insert_id`): the CALL's
    /// record carries that insert's first id, read back on the primary after it.
    pub carries_insert_id: bool,
}
