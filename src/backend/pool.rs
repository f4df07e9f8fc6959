//! Pool of raw backend connections for one backend address, keyed by the account they log
//! in as (the proxy's own, or a client's `backend_user`) and the capability bits that change
//! response formats, plus the backend's up/down state and how its data-path connections
//! reach it (TCP or its Unix socket).
//!
//! Owns: `BackendPool`. May import: backend::conn, protocol::handshake (capability set),
//! mysql_async (control-path options and the socket check), sql::lexer (the version seen,
//! which decides the versioned comments the servers run).

use super::conn::{BackendAccount, BackendConn, ConnectParams, Transport};
use super::tls::BackendTls;
use crate::metrics::LatencyHistogram;
use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Control-path (mysql_async) options for `addr` (host:port): TCP always, as the proxy
/// sees the server, with the data path's TLS settings.
pub fn control_opts_for(
    addr: &str,
    user: &str,
    password: &str,
    tls: Option<&BackendTls>,
) -> Option<mysql_async::Opts> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port)
            .user(Some(user.to_string()))
            .pass(Some(password.to_string()))
            .prefer_socket(false)
            .ssl_opts(tls.map(BackendTls::ssl_opts))
            .into(),
    )
}

/// Whether `addr` (host:port) is on this host.
fn is_loopback(addr: &str) -> bool {
    let Some((host, _)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `user` of a `user@host` account as CURRENT_USER() returns it.
fn user_part(account: &str) -> &str {
    account.rsplit_once('@').map_or(account, |(user, _)| user)
}

/// Idle connections are kept apart by account and by the capability bits that change
/// response formats.
type PoolKey = (Option<Arc<BackendAccount>>, u32);

pub struct BackendPool {
    pub addr: Arc<str>,
    pub(super) params: ConnectParams,
    max_idle: usize,
    idle: Mutex<HashMap<PoolKey, Vec<BackendConn>>>,
    up: AtomicBool,
    /// Bumped when the backend is marked down: connections from older generations are
    /// dropped, and sessions pinned to one are told.
    generation: watch::Sender<u64>,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Idle connections found closed by the server at checkout (its wait_timeout, a KILL).
    pub closed_idle: AtomicU64,
    /// What the last handshake showed: the server version, and whether it offered MariaDB's
    /// extended column metadata.
    seen: Mutex<Option<(String, bool)>>,
    /// Round trips of real queries: EWMA (µs, 0 = none yet) and histogram.
    latency_ewma_us: AtomicU64,
    pub latency: LatencyHistogram,
    /// Round trips of the health probe (`SELECT 1`, same client, same query for every
    /// backend): what read routing compares. Real-query figures would herd: the replica that
    /// gets the traffic is measured on cheap queries, the others only on slower probes.
    probes: Mutex<ProbeWindow>,
    /// The fastest of `probes`, for the read path without a lock (µs, 0 = none yet).
    probe_floor_us: AtomicU64,
    /// Autocommit reads routed here.
    pub reads: AtomicU64,
    /// Times it was marked down (crashes, hangs, lost connections).
    pub down_events: AtomicU64,
    /// When it was last marked up (or the pool created): its uptime as the proxy sees it.
    up_since: Mutex<std::time::Instant>,
    /// Names (lowercase) of the stored functions on this server, from the health probes: a
    /// read that calls one may change data through it.
    stored_functions: Mutex<Arc<std::collections::HashSet<String>>>,
    /// Whether `stored_functions` is non-empty: the read path's check without a lock.
    has_stored_functions: AtomicBool,
    /// When it was last marked down.
    down_since: Mutex<std::time::Instant>,
    /// How data-path connections reach it; None until learned on the next connect (at start,
    /// and after it was marked down: a restarted server may listen elsewhere).
    transport: Mutex<Option<Transport>>,
    /// Held while the transport is being learned, so concurrent connects ask once.
    learning_transport: tokio::sync::Mutex<()>,
    /// The last greeting had NO_BACKSLASH_ESCAPES (the server's global sql_mode when that
    /// connection opened): a session starts in that mode, before any answer of its own
    /// tells. Per server, not per process: shards may differ.
    global_no_backslash_escapes: AtomicBool,
    /// The last connection found the server's default isolation below REPEATABLE READ
    /// (`BackendConn::server_reads_committed`): said in the log when it changes.
    default_reads_committed: AtomicBool,
}

impl BackendPool {
    pub fn new(addr: &str, params: ConnectParams, max_idle: usize) -> Self {
        BackendPool {
            addr: Arc::from(addr),
            params,
            max_idle,
            idle: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
            generation: watch::channel(0).0,
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            seen: Mutex::new(None),
            latency_ewma_us: AtomicU64::new(0),
            probes: Mutex::new(ProbeWindow::default()),
            probe_floor_us: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
            reads: AtomicU64::new(0),
            down_events: AtomicU64::new(0),
            up_since: Mutex::new(std::time::Instant::now()),
            stored_functions: Mutex::new(Arc::default()),
            has_stored_functions: AtomicBool::new(false),
            down_since: Mutex::new(std::time::Instant::now()),
            transport: Mutex::new(None),
            learning_transport: tokio::sync::Mutex::new(()),
            global_no_backslash_escapes: AtomicBool::new(false),
            default_reads_committed: AtomicBool::new(false),
        }
    }

    /// Options for a control-path (mysql_async) connection to this server with the pool's
    /// credentials; None when the address is not host:port.
    pub fn control_opts(&self) -> Option<mysql_async::Opts> {
        control_opts_for(
            &self.addr,
            &self.params.user,
            &self.params.password,
            self.params.tls.as_deref(),
        )
    }

    /// Seconds since it was last marked up (0 while down).
    pub fn uptime_secs(&self) -> u64 {
        if self.is_up() {
            self.up_since.lock().elapsed().as_secs()
        } else {
            0
        }
    }

    /// How long it has been down without interruption, as the proxy saw it (None while up).
    pub fn down_for(&self) -> Option<std::time::Duration> {
        (!self.is_up()).then(|| self.down_since.lock().elapsed())
    }

    /// Adds one real query's round trip to the latency figures.
    pub fn record_latency(&self, d: std::time::Duration) {
        self.latency.record(d);
        ewma(&self.latency_ewma_us, d);
    }

    /// The server's stored functions; `None` (no lock taken) when it has none.
    pub fn stored_functions(&self) -> Option<Arc<std::collections::HashSet<String>>> {
        if !self.has_stored_functions.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.stored_functions.lock().clone())
    }

    pub fn set_stored_functions(&self, names: std::collections::HashSet<String>) {
        let mut current = self.stored_functions.lock();
        if **current != names {
            self.has_stored_functions
                .store(!names.is_empty(), Ordering::Relaxed);
            *current = Arc::new(names);
        }
    }

    /// A function created through the proxy counts at once, before the next probe.
    pub fn note_stored_function(&self, name: &str) {
        let mut current = self.stored_functions.lock();
        if !current.contains(name) {
            let mut names = (**current).clone();
            names.insert(name.to_string());
            *current = Arc::new(names);
            self.has_stored_functions.store(true, Ordering::Relaxed);
        }
    }

    /// Adds one health probe's round trip.
    pub fn record_probe(&self, d: std::time::Duration) {
        let floor = self.probes.lock().push(d.as_micros() as u64);
        self.probe_floor_us.store(floor, Ordering::Relaxed);
    }

    pub fn latency_ewma_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    /// The fastest round trip of the last few health probes (µs, 0 = none yet).
    pub fn probe_latency_us(&self) -> u64 {
        self.probe_floor_us.load(Ordering::Relaxed)
    }

    /// Whether a session opened on this server now starts with NO_BACKSLASH_ESCAPES.
    pub fn global_no_backslash_escapes(&self) -> bool {
        self.global_no_backslash_escapes.load(Ordering::Relaxed)
    }

    /// The last connection opened found the server's default isolation below REPEATABLE
    /// READ (the proxy raised it: `conn::ISOLATION_FLOOR`).
    pub fn default_reads_committed(&self) -> bool {
        self.default_reads_committed.load(Ordering::Relaxed)
    }

    /// What a new connection found of the server's default isolation level: said once when
    /// it is below REPEATABLE READ (and again after it changed), since the proxy runs every
    /// connection above it.
    fn note_default_isolation(&self, reads_committed: bool) {
        if self
            .default_reads_committed
            .swap(reads_committed, Ordering::Relaxed)
            != reads_committed
            && reads_committed
        {
            tracing::warn!(backend = %self.addr,
                "this server's default transaction isolation is READ COMMITTED or weaker; \
                 the proxy runs its connections at REPEATABLE READ, which statement replay \
                 needs, and gives sessions READ COMMITTED's reads where it can (README, \
                 Isolation); set transaction-isolation = REPEATABLE-READ in its my.cnf to \
                 silence this");
        }
    }

    pub fn note_global_no_backslash_escapes(&self, on: bool) {
        self.global_no_backslash_escapes
            .store(on, Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn server_version(&self) -> Option<String> {
        self.seen
            .lock()
            .as_ref()
            .map(|(version, _)| version.clone())
    }

    /// The server was reached and offered MariaDB's extended column metadata.
    pub fn offers_extended_metadata(&self) -> bool {
        matches!(*self.seen.lock(), Some((_, true)))
    }

    /// Marks the backend down: idle connections are closed and pinned sessions notified.
    pub fn mark_down(&self) {
        if self.up.swap(false, Ordering::Relaxed) {
            *self.down_since.lock() = std::time::Instant::now();
            self.down_events.fetch_add(1, Ordering::Relaxed);
            self.idle.lock().clear();
            *self.transport.lock() = None;
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Closes idle connections and tells pinned sessions to go, without marking the backend
    /// down: after a switchover the old primary still serves, but sessions holding
    /// transactions, prepared statements or locks there must not keep writing to it.
    pub fn retire_sessions(&self) {
        self.idle.lock().clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// Resolves when health checks mark the backend down (at once if it is down).
    pub async fn wait_down(&self) {
        let mut generation = self.subscribe();
        while self.is_up() {
            if generation.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            *self.up_since.lock() = std::time::Instant::now();
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().values().map(Vec::len).sum()
    }

    /// A connection negotiated with `caps` as `account` (`None`: the proxy's own): an idle
    /// one if there is one, else a new one.
    pub async fn checkout(
        &self,
        account: Option<&Arc<BackendAccount>>,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
    ) -> io::Result<BackendConn> {
        let key = (
            account.cloned(),
            (caps & crate::protocol::handshake::RELAY_AFFECTING_CAPS).bits(),
        );
        let generation = self.generation();
        loop {
            let conn = {
                let mut idle = self.idle.lock();
                let Some(list) = idle.get_mut(&key) else {
                    break;
                };
                // Prefer a connection already on the wanted schema.
                let pos = list
                    .iter()
                    .rposition(|c| c.schema.as_deref() == schema)
                    .or(list.len().checked_sub(1));
                let Some(i) = pos else {
                    break;
                };
                list.swap_remove(i)
            };
            if conn.generation != generation {
                continue;
            }
            // Idle connections outlive the server's wait_timeout (a my.cnf value, or a SET
            // GLOBAL a client made) or a KILL; handing one out would fail the statement.
            // wait_timeout counts whole seconds, so one back for less than that is not
            // asked: after an answer tokio's readiness is still set and the check would cost
            // a read syscall on every statement of a busy pool.
            if conn.idle_since.elapsed() >= MIN_WAIT_TIMEOUT && conn.closed_by_server() {
                self.closed_idle.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(backend = %self.addr, thread = conn.hello.connection_id,
                    "pooled connection was closed by the server (its wait_timeout, or a KILL); dropped");
                continue;
            }
            return Ok(conn);
        }
        self.connect_for(account, caps, collation, schema).await
    }

    /// A new connection as `account` (`None`: the proxy's own).
    pub async fn connect_for(
        &self,
        account: Option<&Arc<BackendAccount>>,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
    ) -> io::Result<BackendConn> {
        match account {
            Some(account) => self.connect_as(account, caps, collation, schema).await,
            None => self.connect(caps, collation, schema).await,
        }
    }

    /// A new connection as a client's own server account. Over TCP always: the socket
    /// check (`learn_transport`) vouches for the proxy's account only, and over the socket
    /// the server may match another row of mysql.user (an anonymous `''@localhost`) than
    /// the `'user'@'%'` TCP logins get. A refusal (the account is missing or its password
    /// differs on this server) comes back as the server's error, not as the backend down.
    async fn connect_as(
        &self,
        account: &Arc<BackendAccount>,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
    ) -> io::Result<BackendConn> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let params = ConnectParams {
            user: account.user.clone(),
            password: account.password.clone(),
            ..self.params.clone()
        };
        let opened = BackendConn::connect(
            self.addr.clone(),
            &Transport::Tcp,
            &params,
            caps,
            collation,
            schema,
            self.generation(),
        )
        .await;
        match opened {
            Ok(mut c) => {
                c.account = Some(account.clone());
                Ok(c)
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    pub async fn connect(
        &self,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
    ) -> io::Result<BackendConn> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let transport = self.transport().await;
        let mut opened = self.open(&transport, caps, collation, schema).await;
        if let (Err(e), Transport::Unix(path)) = (&opened, &transport) {
            let socket_error = e.to_string();
            opened = self.open(&Transport::Tcp, caps, collation, schema).await;
            if opened.is_ok() {
                // The socket answered the check but not this connection (its file removed,
                // the server restarted elsewhere) while TCP works: TCP until the backend is
                // next marked down.
                tracing::warn!(
                    backend = %self.addr,
                    socket = %path.display(),
                    error = %socket_error,
                    "connecting over the server's Unix socket failed but TCP works; using TCP for this backend"
                );
                *self.transport.lock() = Some(Transport::Tcp);
            } else {
                // Neither answers (the server is down): checked again on the next connect.
                *self.transport.lock() = None;
            }
        }
        match opened {
            Ok(c) => {
                self.note_global_no_backslash_escapes(c.hello.no_backslash_escapes);
                self.note_default_isolation(c.server_reads_committed);
                let mut seen = self.seen.lock();
                let now = (&*c.hello.server_version, c.hello.offers_extended_metadata);
                if seen.as_ref().map(|(v, e)| (v.as_str(), *e)) != Some(now) {
                    crate::sql::lexer::note_server_version(now.0);
                    *seen = Some((now.0.to_string(), now.1));
                }
                Ok(c)
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn open(
        &self,
        transport: &Transport,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
    ) -> io::Result<BackendConn> {
        BackendConn::connect(
            self.addr.clone(),
            transport,
            &self.params,
            caps,
            collation,
            schema,
            self.generation(),
        )
        .await
    }

    /// How data-path connections reach this backend now, as SHOW PROXY BACKENDS words it:
    /// "tcp" (until a socket is learned), "tls (verify_ca)", or "unix:<path>".
    pub fn transport_label(&self) -> String {
        match (self.transport_now(), &self.params.tls) {
            (Transport::Tcp, Some(tls)) => format!("tls ({})", tls.mode.name()),
            (t, _) => t.to_string(),
        }
    }

    /// How data-path connections reach this backend now ("tcp" until learned).
    pub fn transport_now(&self) -> Transport {
        self.transport.lock().clone().unwrap_or(Transport::Tcp)
    }

    /// How data-path connections reach this backend, learned on first use.
    async fn transport(&self) -> Transport {
        if let Some(t) = self.transport.lock().clone() {
            return t;
        }
        let _learning = self.learning_transport.lock().await;
        if let Some(t) = self.transport.lock().clone() {
            return t;
        }
        let learned = self.learn_transport().await;
        // An unanswered check is asked again on the next connect.
        if let Some(t) = &learned {
            *self.transport.lock() = Some(t.clone());
        }
        learned.unwrap_or(Transport::Tcp)
    }

    /// Whether this loopback backend's Unix socket reaches the same server as the same
    /// account: a named lock taken over TCP must show as used over the socket (another
    /// server's socket at the same path, as with containers sharing a host, would not), and
    /// the socket login must map to the same user (not an anonymous `''@localhost`). None
    /// when the server did not answer over TCP.
    async fn learn_transport(&self) -> Option<Transport> {
        if !self.params.prefer_socket || !is_loopback(&self.addr) {
            return Some(Transport::Tcp);
        }
        let tcp_opts = self.control_opts()?;
        let lock = format!(
            "myquorum_socket_check_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let check = async {
            let mut tcp = mysql_async::Conn::new(tcp_opts.clone()).await?;
            let row: Option<(Option<String>, Option<i64>, String)> = tcp
                .exec_first(
                    "SELECT @@socket, GET_LOCK(?, 0), CURRENT_USER()",
                    (lock.as_str(),),
                )
                .await?;
            let Some((Some(path), Some(1), tcp_user)) = row else {
                tcp.disconnect().await?;
                return Ok::<_, mysql_async::Error>(Ok(Transport::Tcp));
            };
            let socket_opts = mysql_async::OptsBuilder::from_opts(tcp_opts.clone())
                .socket(Some(path.clone()))
                .prefer_socket(true);
            let same = match mysql_async::Conn::new(socket_opts).await {
                Ok(mut socket) => {
                    let row: Option<(Option<i64>, String)> = socket
                        .exec_first("SELECT IS_USED_LOCK(?), CURRENT_USER()", (lock.as_str(),))
                        .await?;
                    socket.disconnect().await?;
                    match row {
                        Some((Some(_), socket_user))
                            if user_part(&socket_user) == user_part(&tcp_user) =>
                        {
                            Ok(Transport::Unix(Arc::from(std::path::Path::new(&path))))
                        }
                        Some((Some(_), socket_user)) => Err(format!(
                            "the socket login is {socket_user}, not {tcp_user}'s user; create \
                             backend.user at host 'localhost' with the same rights to use it"
                        )),
                        _ => Err(format!(
                            "{path} is another server's socket (containers sharing a host?)"
                        )),
                    }
                }
                Err(e) => Err(format!(
                    "logging in over {path} failed: {e}; create backend.user at host \
                     'localhost' with the same rights to use it"
                )),
            };
            tcp.disconnect().await?;
            Ok(same)
        };
        match tokio::time::timeout(self.params.connect_timeout * 2, check).await {
            Ok(Ok(Ok(transport))) => {
                tracing::info!(backend = %self.addr, %transport, "data-path connections to this backend");
                Some(transport)
            }
            Ok(Ok(Err(why))) => {
                tracing::warn!(
                    backend = %self.addr,
                    reason = %why,
                    "backend.prefer_socket: not using the server's Unix socket; data-path connections use TCP"
                );
                Some(Transport::Tcp)
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %self.addr, error = %e, "socket check failed; TCP for now");
                None
            }
            Err(_) => None,
        }
    }

    /// Returns a healthy connection in a replayable state to the pool.
    pub fn checkin(&self, mut conn: BackendConn) {
        if conn.generation != self.generation() || !self.is_up() {
            return;
        }
        // A transaction the proxy began for a session but never sent ends with the session.
        conn.deferred_begin = None;
        conn.idle_since = std::time::Instant::now();
        let mut idle = self.idle.lock();
        let list = idle
            .entry((conn.account.clone(), conn.caps_key))
            .or_default();
        if list.len() < self.max_idle {
            list.push(conn);
        }
    }
}

/// The shortest wait_timeout a server accepts.
const MIN_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// EWMA with weight 1/8 in microseconds (0 means no sample yet).
/// The last `PROBE_WINDOW` probe round trips. Routing compares the fastest of them: a
/// round trip is the replica's distance and service time plus whatever waiting the moment
/// added (a busy scheduler, a backlog), so the floor is the figure noise cannot raise. An
/// average lifted by one 20 ms probe (against a usual 0.3 ms) steered every read away from
/// a healthy replica for over a second, and even a median of 8 did so for most of a test's
/// reads on a CPU-saturated box; a replica that is really slower or farther away is slow on
/// every probe, and so on the floor, within 8 probes.
#[derive(Default)]
pub struct ProbeWindow {
    recent: [u64; PROBE_WINDOW],
    len: usize,
    next: usize,
}

const PROBE_WINDOW: usize = 8;

impl ProbeWindow {
    /// Adds one round trip (µs); returns the fastest in the window.
    pub fn push(&mut self, us: u64) -> u64 {
        self.recent[self.next] = us.max(1);
        self.next = (self.next + 1) % PROBE_WINDOW;
        self.len = (self.len + 1).min(PROBE_WINDOW);
        self.recent[..self.len].iter().copied().min().unwrap_or(1)
    }
}

fn ewma(cell: &AtomicU64, d: std::time::Duration) {
    let us = (d.as_micros() as u64).max(1);
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 { us } else { old - old / 8 + us / 8 })
    });
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, user_part, ProbeWindow};

    #[test]
    fn only_loopback_addresses_may_use_a_socket() {
        for local in [
            "127.0.0.1:3306",
            "localhost:3306",
            "[::1]:3306",
            "127.0.0.2:1",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "10.0.0.1:3306",
            "db.example:3306",
            "[fe80::1]:3306",
            "nohost",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn accounts_compare_by_user() {
        assert_eq!(user_part("root@localhost"), user_part("root@127.0.0.1"));
        assert_ne!(user_part("@localhost"), user_part("app@%"));
        assert_eq!(user_part("we@ird@host"), "we@ird");
    }

    #[test]
    fn slow_probes_do_not_move_the_floor() {
        let mut w = ProbeWindow::default();
        assert_eq!(w.push(300), 300);
        // Scheduler hiccups, even most of the window: the figure routing compares stays put.
        for slow in [20_000, 4_000, 9_000, 2_500, 7_000, 3_000] {
            assert_eq!(w.push(slow), 300);
        }
        assert_eq!(w.push(310), 300);
    }

    #[test]
    fn a_replica_that_got_slower_shows_it_within_the_window() {
        let mut w = ProbeWindow::default();
        for _ in 0..8 {
            w.push(300);
        }
        let figures: Vec<u64> = (0..8).map(|_| w.push(5_000)).collect();
        // Once every probe in the window is slow.
        assert_eq!(figures[6], 300);
        assert_eq!(figures[7], 5_000);
        // And fast again at its first fast probe.
        assert_eq!(w.push(280), 280);
    }

    #[test]
    fn the_first_probes_count_before_the_window_fills() {
        let mut w = ProbeWindow::default();
        assert_eq!(w.push(900), 900);
        assert_eq!(w.push(500), 500);
        let mut w = ProbeWindow::default();
        assert_eq!(w.push(0), 1, "zero means none yet: a probe counts as 1 µs");
    }
}
