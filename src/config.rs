//! Configuration: `proxy.toml`, then `MYQUORUM_*` environment variables (nested keys joined
//! with `__`, e.g. `MYQUORUM_PROXY__LISTEN`), then CLI flags. Unknown keys are rejected with
//! the key's name.
//!
//! Owns: the config schema and its validation. May import: figment, serde.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub backend: BackendConfig,
    pub users: Vec<UserConfig>,
    pub shards: Vec<ShardConfig>,
    pub replication: ReplicationConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Directory of the write-ahead log (one subdirectory per shard) and of the in-process
    /// timestamp servers' state files.
    pub wal_dir: String,
    /// Cabinet failure threshold t; unset means ⌊(n−1)/2⌋.
    pub failure_threshold: Option<usize>,
    /// How long a commit waits for the quorum before failing.
    pub commit_timeout_ms: u64,
    /// Records a lagging follower applies in one transaction at most.
    pub apply_batch: usize,
    /// Two standalone timestamp servers (`myquorum tso`), odd first; empty means an
    /// in-process pair.
    pub tso_servers: Vec<String>,
    /// Elect a new primary when health checks mark the primary down.
    pub failover: bool,
    /// A replica up for less than this is a last-resort candidate (it may be flapping).
    pub election_min_uptime_ms: u64,
    /// A follower down for longer than this stops holding back the WAL and every replica's
    /// `myquorum.wal` trimming: it is quarantined (and rebuilt when back, see
    /// `auto_rebuild`). Bounds the log's disk use while a replica is dead.
    pub wal_retain_s: u64,
    /// Size at which the WAL starts a new segment file; applied segments are deleted whole.
    pub wal_segment_bytes: u64,
    /// Rebuild a follower quarantined for being down longer than `wal_retain_s` as soon as
    /// its health checks pass again (Galera's SST on rejoin); one quarantined for diverging
    /// is left to the operator (`PROXY REBUILD REPLICA`).
    pub auto_rebuild: bool,
    /// The largest replication record (a transaction's statements, a LOAD DATA LOCAL file
    /// included) a commit may log; larger transactions are rolled back with an error. The
    /// proxy holds a record in memory until every follower applied it. At most 1 GiB.
    pub max_record_bytes: usize,
    /// Leave `innodb_flush_log_at_trx_commit` as the servers have it. Otherwise (the
    /// default) the proxy sets it to 2 on each shard's primary while it leads and to 1 on
    /// followers: the primary's own fsync is redundant, since an acknowledged commit is on
    /// disk in the WAL and on a follower (the primary counts for the quorum only once the
    /// WAL synced the record) and a primary that lost commits in a crash gets them
    /// re-applied from the log. Needs SUPER (MySQL 8: SYSTEM_VARIABLES_ADMIN) for the backend
    /// account; without it the servers keep their own setting.
    pub primary_syncs_commits: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            wal_dir: "myquorum-wal".into(),
            failure_threshold: None,
            commit_timeout_ms: 5000,
            apply_batch: 64,
            tso_servers: Vec::new(),
            failover: true,
            election_min_uptime_ms: 30_000,
            wal_retain_s: 86_400,
            wal_segment_bytes: crate::wal::SEGMENT_BYTES,
            auto_rebuild: true,
            max_record_bytes: 256 << 20,
            primary_syncs_commits: false,
        }
    }
}

/// `proxy.busy_poll_us` unless set: longer than a client takes to send the next statement of
/// a transaction after its answer on this 2-vCPU VM (sysbench, PyMySQL: well under 40 µs
/// once awake), short enough that a miss costs little.
pub const DEFAULT_BUSY_POLL_US: u64 = 40;
/// Longest `proxy.busy_poll_us`: beyond it polling is CPU spent on a client that is not
/// about to send anything.
pub const MAX_BUSY_POLL_US: u64 = 1000;

/// The server's largest `wait_timeout`, in seconds.
pub const MAX_WAIT_TIMEOUT_S: u64 = 31_536_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: String,
    /// Client connections served at once; more get error 1040.
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes (MySQL's max_allowed_packet).
    pub max_packet_size: usize,
    /// Version string sent to clients; empty means the backend's with "-myquorum" appended.
    pub server_version: String,
    /// PEM certificate and key for client-side TLS; both empty means TLS is not offered.
    pub tls_cert: String,
    pub tls_key: String,
    /// Plugin announced in the greeting: mysql_native_password or caching_sha2_password.
    /// Clients may answer with either; both are checked.
    pub auth_plugin: String,
    /// Default read consistency for autocommit reads: strong, session (read-your-writes) or
    /// eventual; sessions change theirs with `SET myquorum_read_consistency = …`.
    pub read_consistency: String,
    /// `eventual` reads: how far behind the log a replica may be, in milliseconds.
    pub read_max_lag_ms: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`); empty means none.
    pub metrics_listen: String,
    /// Unix socket path clients on this host may connect through as well (`mysql -S PATH`,
    /// PHP's `localhost`); empty means none.
    pub listen_socket: String,
    /// Seconds a client connection may sit idle before the proxy closes it, as the server's
    /// `wait_timeout` does (a session that sets `wait_timeout` gets its own value).
    pub wait_timeout_s: u64,
    /// Microseconds a session polls its client socket for the next command before its
    /// thread sleeps, while no other session is working (0: never). On a VM a sleeping
    /// thread takes tens of µs to wake, paid on every command of a transaction; polling
    /// costs at most this much CPU per command, and a client that is not that fast is
    /// soon no longer polled for.
    pub busy_poll_us: u64,
}

impl ProxyConfig {
    /// Settings a reload applies at once (each is read where it is used: per read, per idle
    /// wait), with how to read them for a comparison.
    #[allow(clippy::type_complexity)]
    pub const LIVE: [(&'static str, fn(&ProxyConfig) -> String); 4] = [
        ("proxy.read_consistency", |p| {
            p.read_consistency.to_ascii_lowercase()
        }),
        ("proxy.read_max_lag_ms", |p| p.read_max_lag_ms.to_string()),
        ("proxy.wait_timeout_s", |p| p.wait_timeout_s.to_string()),
        ("proxy.busy_poll_us", |p| p.busy_poll_us.to_string()),
    ];

    /// This section with the live settings blanked: what only a restart applies.
    fn without_live(&self) -> ProxyConfig {
        ProxyConfig {
            read_consistency: String::new(),
            read_max_lag_ms: 0,
            wait_timeout_s: 0,
            busy_poll_us: 0,
            ..self.clone()
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6033".into(),
            max_connections: 4096,
            max_packet_size: 64 * 1024 * 1024,
            server_version: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            auth_plugin: "mysql_native_password".into(),
            read_consistency: "session".into(),
            read_max_lag_ms: 1000,
            metrics_listen: String::new(),
            listen_socket: String::new(),
            wait_timeout_s: 28_800,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Account the proxy uses on every backend (data and control path).
    pub user: String,
    pub password: String,
    pub connect_timeout_ms: u64,
    /// Idle pooled connections kept per backend and capability set.
    pub pool_max_idle: usize,
    /// Interval between health probes of each backend.
    pub health_interval_ms: u64,
    /// Consecutive failed probes before a backend is marked down.
    pub health_failures: u32,
    /// Data-path connections to a backend on this host (a loopback address) go over the
    /// server's Unix socket (`@@socket`) once the proxy has checked it reaches the same
    /// server as the same account; TCP otherwise. Loopback TCP costs both the proxy and the
    /// server more CPU per packet. The account must exist for host `localhost` too.
    pub prefer_socket: bool,
    /// TLS to the servers over TCP, in MySQL's `--ssl-mode` terms: "off", "required"
    /// (encrypted, certificate not checked), "verify_ca" (it must chain to `tls_ca`) or
    /// "verify_identity" (and name the address in `[[shards]]`). Unix sockets stay plain.
    pub tls: String,
    /// PEM file of the CA that signed the servers' certificates (the verifying modes).
    pub tls_ca: String,
    /// The proxy's client certificate (PEM chain) and key, presented to the servers over TLS:
    /// for accounts created `REQUIRE X509` (or SUBJECT / ISSUER). Both or neither.
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            user: "root".into(),
            password: String::new(),
            connect_timeout_ms: 3000,
            pool_max_idle: 256,
            health_interval_ms: 1000,
            health_failures: 2,
            prefer_socket: false,
            tls: "off".into(),
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default)]
    pub password: String,
    /// The server account this user's statements run as, so the servers enforce its
    /// privileges (ProxySQL passes each user's credentials through the same way). Unset:
    /// the proxy's own `[backend]` account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_user: Option<String>,
    /// `backend_user`'s password; unset: the same as `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_password: Option<String>,
    /// May run the proxy's own statements (SHOW PROXY …, PROXY …; EXPLAIN LAST STATEMENT and
    /// SHOW PROXY SESSION are anyone's). Unset: only users running as the proxy's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
}

impl UserConfig {
    /// A user with the proxy's own backend account (an admin).
    pub fn new(name: &str, password: &str) -> UserConfig {
        UserConfig {
            name: name.to_string(),
            password: password.to_string(),
            backend_user: None,
            backend_password: None,
            admin: None,
        }
    }

    /// The server account its statements run as: `None` is the proxy's own.
    pub fn backend_account(&self) -> Option<(String, String)> {
        let user = self.backend_user.clone()?;
        let password = self
            .backend_password
            .clone()
            .unwrap_or_else(|| self.password.clone());
        Some((user, password))
    }

    pub fn is_admin(&self) -> bool {
        self.admin.unwrap_or(self.backend_user.is_none())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Backend addresses (host:port); the first is the primary until replication lands.
    pub replicas: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proxy: ProxyConfig::default(),
            backend: BackendConfig::default(),
            users: vec![UserConfig::new("root", "")],
            shards: Vec::new(),
            replication: ReplicationConfig::default(),
        }
    }
}

/// What reloading a config file changes in a running proxy: its users at once (added,
/// removed, changed: password, server account or admin right), and the sections that only a
/// restart applies (`restart_for`), which stay as they were.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// `[proxy]` settings that changed and apply at once (`ProxyConfig::LIVE`).
    pub applied: Vec<&'static str>,
    pub restart_for: Vec<&'static str>,
}

impl ReloadPlan {
    /// One line for the log and the admin statement's answer.
    pub fn summary(&self) -> String {
        let names = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut out = format!(
            "users reloaded (added: {}; removed: {}; changed: {})",
            names(&self.added),
            names(&self.removed),
            names(&self.changed)
        );
        if !self.applied.is_empty() {
            out.push_str(&format!("; applied: {}", self.applied.join(", ")));
        }
        if !self.restart_for.is_empty() {
            out.push_str(&format!(
                "; changed but not applied until a restart: [{}]",
                self.restart_for.join("], [")
            ));
        }
        out
    }
}

/// CLI overrides: only the keys the user actually passed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (if it exists), then environment, then CLI overrides, and validates.
    pub fn load(path: Option<&Path>, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist; create it (see proxy.toml in the repository) \
                     or run `myquorum playground`",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file(p));
        }
        fig = fig.merge(Env::prefixed("MYQUORUM_").split("__"));
        if let Some(l) = &cli.listen {
            fig = fig.merge(Serialized::default("proxy.listen", l));
        }
        let cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// What loading `new` over this config changes (`ReloadPlan`).
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        let find =
            |users: &[UserConfig], name: &str| users.iter().find(|u| u.name == name).cloned();
        let mut plan = ReloadPlan::default();
        for u in &new.users {
            match find(&self.users, &u.name) {
                None => plan.added.push(u.name.clone()),
                Some(old) if old != *u => plan.changed.push(u.name.clone()),
                Some(_) => {}
            }
        }
        for u in &self.users {
            if find(&new.users, &u.name).is_none() {
                plan.removed.push(u.name.clone());
            }
        }
        plan.applied = ProxyConfig::LIVE
            .iter()
            .filter(|(_, value)| value(&self.proxy) != value(&new.proxy))
            .map(|(name, _)| *name)
            .collect();
        let sections = [
            (
                "proxy",
                self.proxy.without_live() != new.proxy.without_live(),
            ),
            ("backend", self.backend != new.backend),
            ("replication", self.replication != new.replication),
            ("shards", self.shards != new.shards),
        ];
        plan.restart_for = sections
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name)
            .collect();
        plan
    }

    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(s))
            .extract()
            .map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.shards.is_empty() {
            return bad(
                "no [[shards]] configured: add at least one with replicas = [\"host:port\"]".into(),
            );
        }
        for (i, s) in self.shards.iter().enumerate() {
            if s.replicas.is_empty() {
                return bad(format!("shards[{i}] has no replicas"));
            }
            for r in &s.replicas {
                if r.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return bad(format!("shards[{i}].replicas: `{r}` is not host:port"));
                }
            }
        }
        if self.users.is_empty() {
            return bad("no [[users]] configured: clients could not log in".into());
        }
        for u in &self.users {
            if u.backend_password.is_some() && u.backend_user.is_none() {
                return bad(format!(
                    "users `{}`: backend_password without backend_user (set backend_user to the \
                     server account, or drop backend_password to use the proxy's own account)",
                    u.name
                ));
            }
            if u.backend_user.as_deref() == Some("") {
                return bad(format!("users `{}`: backend_user is empty", u.name));
            }
        }
        if !(1..=MAX_WAIT_TIMEOUT_S).contains(&self.proxy.wait_timeout_s) {
            return bad(format!(
                "proxy.wait_timeout_s must be between 1 and {MAX_WAIT_TIMEOUT_S} (a year, the \
                 server's limit)"
            ));
        }
        if crate::backend::tls::TlsMode::parse(&self.backend.tls).is_none() {
            return bad(format!(
                "backend.tls = {:?}: use one of {}",
                self.backend.tls,
                crate::backend::tls::TlsMode::NAMES.join(", ")
            ));
        }
        if self.proxy.max_packet_size < 1024 {
            return bad("proxy.max_packet_size must be at least 1024 bytes".into());
        }
        if !["mysql_native_password", "caching_sha2_password"]
            .contains(&self.proxy.auth_plugin.as_str())
        {
            return bad(format!(
                "proxy.auth_plugin `{}` is not supported: use mysql_native_password or caching_sha2_password",
                self.proxy.auth_plugin
            ));
        }
        if crate::router::Consistency::parse(&self.proxy.read_consistency).is_none() {
            return bad(format!(
                "proxy.read_consistency `{}` is not one of strong, session, eventual",
                self.proxy.read_consistency
            ));
        }
        if !(self.replication.tso_servers.is_empty() || self.replication.tso_servers.len() == 2) {
            return bad(
                "replication.tso_servers needs two addresses (odd server, even server) or none"
                    .into(),
            );
        }
        for (i, s) in self.shards.iter().enumerate() {
            let n = s.replicas.len();
            if let Some(t) = self.replication.failure_threshold {
                if t > n.saturating_sub(1) / 2 {
                    return bad(format!(
                        "replication.failure_threshold = {t} is too high for shards[{i}] with {n} replicas \
                         (at most {})",
                        n.saturating_sub(1) / 2
                    ));
                }
            }
        }
        if self.proxy.busy_poll_us > MAX_BUSY_POLL_US {
            return bad(format!(
                "proxy.busy_poll_us = {} is too long: at most {MAX_BUSY_POLL_US} (0 turns polling off)",
                self.proxy.busy_poll_us
            ));
        }
        if self.proxy.tls_cert.is_empty() != self.proxy.tls_key.is_empty() {
            return bad("proxy.tls_cert and proxy.tls_key must be set together".into());
        }
        // The WAL frames a record with a 32-bit length and reads larger ones as corruption.
        if !(1024..=1 << 30).contains(&self.replication.max_record_bytes) {
            return bad(format!(
                "replication.max_record_bytes = {} is out of range: from 1024 to 1073741824 (1 GiB)",
                self.replication.max_record_bytes
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "[proxy]\nlisten = {:?}\nmax_connections = {}\nmax_packet_size = {}\n",
            self.proxy.listen, self.proxy.max_connections, self.proxy.max_packet_size
        ));
        out.push_str(&format!("auth_plugin = {:?}\n", self.proxy.auth_plugin));
        out.push_str(&format!(
            "read_consistency = {:?}\nread_max_lag_ms = {}\nwait_timeout_s = {}\nbusy_poll_us = {}\n",
            self.proxy.read_consistency,
            self.proxy.read_max_lag_ms,
            self.proxy.wait_timeout_s,
            self.proxy.busy_poll_us
        ));
        if !self.proxy.metrics_listen.is_empty() {
            out.push_str(&format!(
                "metrics_listen = {:?}\n",
                self.proxy.metrics_listen
            ));
        }
        if !self.proxy.listen_socket.is_empty() {
            out.push_str(&format!("listen_socket = {:?}\n", self.proxy.listen_socket));
        }
        if !self.proxy.tls_cert.is_empty() {
            out.push_str(&format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                self.proxy.tls_cert, self.proxy.tls_key
            ));
        }
        out.push_str(&format!(
            "\n[backend]\nuser = {:?}\npassword = {:?}\nprefer_socket = {}\ntls = {:?}\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            self.backend.user,
            self.backend.password,
            self.backend.prefer_socket,
            self.backend.tls,
            self.backend.tls_ca,
            self.backend.tls_cert,
            self.backend.tls_key
        ));
        for u in &self.users {
            out.push_str(&format!(
                "\n[[users]]\nname = {:?}\npassword = {:?}\n",
                u.name, u.password
            ));
            if let Some(b) = &u.backend_user {
                out.push_str(&format!("backend_user = {b:?}\n"));
            }
            if let Some(p) = &u.backend_password {
                out.push_str(&format!("backend_password = {p:?}\n"));
            }
            if let Some(a) = u.admin {
                out.push_str(&format!("admin = {a}\n"));
            }
        }
        out.push_str(&format!(
            "\n[replication]\nwal_dir = {:?}\ncommit_timeout_ms = {}\napply_batch = {}\ntso_servers = {:?}\nfailover = {}\nelection_min_uptime_ms = {}\nwal_retain_s = {}\nwal_segment_bytes = {}\nauto_rebuild = {}\nmax_record_bytes = {}\nprimary_syncs_commits = {}\n",
            self.replication.wal_dir,
            self.replication.commit_timeout_ms,
            self.replication.apply_batch,
            self.replication.tso_servers,
            self.replication.failover,
            self.replication.election_min_uptime_ms,
            self.replication.wal_retain_s,
            self.replication.wal_segment_bytes,
            self.replication.auto_rebuild,
            self.replication.max_record_bytes,
            self.replication.primary_syncs_commits
        ));
        if let Some(t) = self.replication.failure_threshold {
            out.push_str(&format!("failure_threshold = {t}\n"));
        }
        for s in &self.shards {
            out.push_str(&format!("\n[[shards]]\nreplicas = {:?}\n", s.replicas));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n[[shards]]\nreplicas=[\"a:1\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn a_reload_applies_users_and_names_what_needs_a_restart() {
        let shard = "[[shards]]\nreplicas=[\"127.0.0.1:3307\"]\n";
        let old = Config::from_toml_str(&format!(
            "{shard}[[users]]\nname = \"root\"\n[[users]]\nname = \"app\"\npassword = \"a\"\n\
             [[users]]\nname = \"gone\"\n"
        ))
        .unwrap();
        assert_eq!(old.reload_plan(&old), ReloadPlan::default());
        let new = Config::from_toml_str(&format!(
            "{shard}[[users]]\nname = \"root\"\n[[users]]\nname = \"app\"\npassword = \"b\"\n\
             [[users]]\nname = \"new\"\nbackend_user = \"n\"\n\
             [proxy]\nread_max_lag_ms = 5\nread_consistency = \"Session\"\nmax_connections = 7\n\
             [replication]\ncommit_timeout_ms = 9\n"
        ))
        .unwrap();
        let plan = old.reload_plan(&new);
        assert_eq!(
            plan,
            ReloadPlan {
                added: vec!["new".into()],
                removed: vec!["gone".into()],
                changed: vec!["app".into()],
                // The consistency's case is no change; max_connections needs a restart.
                applied: vec!["proxy.read_max_lag_ms"],
                restart_for: vec!["proxy", "replication"],
            }
        );
        assert_eq!(
            plan.summary(),
            "users reloaded (added: new; removed: gone; changed: app); applied: \
             proxy.read_max_lag_ms; changed but not applied until a restart: [proxy], \
             [replication]"
        );
        // Only live settings changed: nothing waits for a restart.
        let mut live = old.clone();
        live.proxy.read_consistency = "eventual".into();
        live.proxy.wait_timeout_s = 60;
        let plan = old.reload_plan(&live);
        assert_eq!(
            plan.applied,
            vec!["proxy.read_consistency", "proxy.wait_timeout_s"]
        );
        assert!(plan.restart_for.is_empty(), "{plan:?}");
        // An admin right given is a change too.
        let mut admin = old.clone();
        admin.users[1].admin = Some(false);
        assert_eq!(old.reload_plan(&admin).changed, vec!["app".to_string()]);
    }

    #[test]
    fn backend_tls_mode_is_checked() {
        let base = "[[shards]]\nreplicas=[\"127.0.0.1:3307\"]\n[[users]]\nname = \"u\"\n";
        let ok = Config::from_toml_str(&format!(
            "[backend]\ntls = \"verify_ca\"\ntls_ca = \"/etc/ca.pem\"\n{base}"
        ))
        .unwrap();
        assert_eq!(ok.backend.tls, "verify_ca");
        assert_eq!(Config::from_toml_str(&ok.to_toml()).unwrap(), ok);
        let err = Config::from_toml_str(&format!("[backend]\ntls = \"REQUIRED\"\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify_identity"), "{err}");
    }

    #[test]
    fn written_config_reads_back() {
        let mut c = Config::default();
        c.shards.push(ShardConfig {
            replicas: vec!["127.0.0.1:3307".into()],
        });
        c.proxy.wait_timeout_s = 60;
        let back = Config::from_toml_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn users_run_as_their_own_backend_account_when_given_one() {
        let shard = "[[shards]]\nreplicas=[\"127.0.0.1:3307\"]\n";
        let c = Config::from_toml_str(&format!(
            "[[users]]\nname = \"root\"\n[[users]]\nname = \"app\"\npassword = \"pw\"\n\
             backend_user = \"app_db\"\n[[users]]\nname = \"ops\"\nbackend_user = \"ops\"\n\
             backend_password = \"other\"\nadmin = true\n{shard}"
        ))
        .unwrap();
        let [root, app, ops] = &c.users[..] else {
            panic!("{:?}", c.users)
        };
        assert_eq!((root.backend_account(), root.is_admin()), (None, true));
        assert_eq!(
            (app.backend_account(), app.is_admin()),
            (Some(("app_db".into(), "pw".into())), false)
        );
        assert_eq!(
            (ops.backend_account(), ops.is_admin()),
            (Some(("ops".into(), "other".into())), true)
        );
        assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
        let err = Config::from_toml_str(&format!(
            "[[users]]\nname = \"x\"\nbackend_password = \"p\"\n{shard}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("backend_password without backend_user"),
            "{err}"
        );
    }

    #[test]
    fn wait_timeout_in_the_servers_range() {
        let shard = "[[shards]]\nreplicas=[\"127.0.0.1:3307\"]\n";
        for bad in [0, MAX_WAIT_TIMEOUT_S + 1] {
            let err = Config::from_toml_str(&format!("[proxy]\nwait_timeout_s = {bad}\n{shard}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("wait_timeout_s"), "{err}");
        }
        let ok = Config::from_toml_str(&format!("[proxy]\nwait_timeout_s = 5\n{shard}")).unwrap();
        assert_eq!(ok.proxy.wait_timeout_s, 5);
    }

    #[test]
    fn bad_address_rejected() {
        let err = Config::from_toml_str("[[shards]]\nreplicas=[\"nohost\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nohost"), "{err}");
    }
}
