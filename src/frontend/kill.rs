//! KILL through the proxy. A client knows only the proxy's connection ids (the handshake's;
//! the mysql CLI sends `KILL QUERY <id>` on Ctrl-C, JDBC on a query timeout), which mean
//! nothing to a backend: forwarded, `KILL 5` would stop whatever backend thread 5 is — maybe
//! another client's query or the proxy's own replication connection. So the proxy keeps a
//! registry of its sessions and translates: `KILL QUERY n` stops the backend query session
//! n is running (a `KILL QUERY <thread>` on that backend), `KILL [CONNECTION] n` also ends the
//! session. `KILL USER` and `KILL QUERY ID` are refused: the backend threads they would reach
//! are shared by every client (and by the proxy itself).
//!
//! The registry also answers `SHOW PROXY PROCESSLIST` and `SHOW [FULL] PROCESSLIST`: each
//! session with what it runs and where, under the ids KILL takes (and CONNECTION_ID()
//! gives through the proxy).
//!
//! Owns: `Kill` (the parsed statement) and `SessionRegistry`. May import: sql::lexer,
//! protocol (errors), router ids, tokio-util (cancellation).

use crate::protocol::MysqlError;
use crate::router::{ReplicaId, ShardId};
use crate::sql::lexer::{Lexer, Tok};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A KILL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// `KILL QUERY n`: stop session n's running statement.
    Query(u32),
    /// `KILL [CONNECTION] n`: stop it and end session n.
    Connection(u32),
}

/// Parses `KILL [HARD | SOFT] [CONNECTION | QUERY] <id>`; `Some(Err)` for forms the proxy
/// refuses (KILL USER, KILL QUERY ID), None when `sql` is not a KILL.
pub fn parse(sql: &str) -> Option<Result<Kill, MysqlError>> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql)
        .map(|t| t.tok)
        .filter(|t| !matches!(t, Tok::Punct(';')))
        .collect();
    let mut rest = match toks.split_first() {
        Some((first, rest)) if first.is_word("KILL") => rest,
        _ => return None,
    };
    if let Some((w, r)) = rest.split_first() {
        if w.is_word("HARD") || w.is_word("SOFT") {
            rest = r;
        }
    }
    let refused = |what: &str| {
        Some(Err(MysqlError::new(
            1235,
            "42000",
            format!(
                "myquorum: {what} is not supported through the proxy (backend threads are \
                 shared by all clients); use KILL [QUERY] <connection id>"
            ),
        )))
    };
    let (query, id) = match rest {
        [w, Tok::Number(n)] if w.is_word("QUERY") => (true, n),
        [w, Tok::Number(n)] if w.is_word("CONNECTION") => (false, n),
        [Tok::Number(n)] => (false, n),
        [w, ..] if w.is_word("USER") => return refused("KILL USER"),
        [q, i, ..] if q.is_word("QUERY") && i.is_word("ID") => return refused("KILL QUERY ID"),
        _ => {
            return Some(Err(MysqlError::new(
                1064,
                "42000",
                "You have an error in your SQL syntax: use KILL [CONNECTION | QUERY] <id>",
            )))
        }
    };
    let Ok(id) = id.parse::<u32>() else {
        return Some(Err(unknown_thread(id)));
    };
    Some(Ok(if query {
        Kill::Query(id)
    } else {
        Kill::Connection(id)
    }))
}

pub fn unknown_thread(id: impl std::fmt::Display) -> MysqlError {
    // A backend's SHOW PROCESSLIST lists its own thread ids, which KILL does not take.
    MysqlError::new(
        1094,
        "HY000",
        format!("Unknown thread id: {id} (KILL takes the ids SHOW PROXY PROCESSLIST lists)"),
    )
}

/// The backend connection a session is running a statement on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendThread {
    pub shard: ShardId,
    pub replica: ReplicaId,
    /// The backend's own connection id.
    pub thread: u32,
}

struct Running {
    /// A command is being served.
    busy: bool,
    /// Since when it is busy or idle.
    since: std::time::Instant,
    /// The statement being served (COM_QUERY text, shortened; empty when none), for the
    /// processlist. Refilled in place: no allocation per command once it is large enough.
    info: String,
    /// The session's schema, as of its last command.
    schema: Option<String>,
    /// The backend connection last taken, while it may still be in use.
    conn: Option<BackendThread>,
    /// A `KILL QUERY` was sent for `conn`: it may arrive late, so that connection must not
    /// go back to the pool for another session.
    kill_sent: bool,
}

/// One session as KILL sees it.
pub struct SessionEntry {
    /// The session's connection id: the handshake's, which KILL takes and CONNECTION_ID()
    /// gives through the proxy.
    pub id: u32,
    /// Where the client connected from (`ip:port`, or `localhost` over the Unix socket).
    host: String,
    user: Mutex<String>,
    running: Mutex<Running>,
    /// Cancelled by `KILL CONNECTION`: the session ends.
    pub killed: CancellationToken,
}

impl SessionEntry {
    pub fn set_user(&self, user: &str) {
        *self.user.lock() = user.to_string();
    }

    /// A command starts: `info` says what it runs (for the processlist).
    pub fn begin_command(&self, info: &str) {
        let mut r = self.running.lock();
        r.busy = true;
        r.since = std::time::Instant::now();
        r.info.clear();
        r.info.push_str(info);
    }

    /// The command ended; `schema` is the session's schema now.
    pub fn end_command(&self, schema: Option<&str>) {
        let mut r = self.running.lock();
        r.busy = false;
        r.since = std::time::Instant::now();
        r.info.clear();
        if r.schema.as_deref() != schema {
            r.schema = schema.map(str::to_string);
        }
    }

    /// The session took a backend connection.
    pub fn took(&self, conn: BackendThread) {
        let mut r = self.running.lock();
        r.conn = Some(conn);
        r.kill_sent = false;
    }

    /// The session gives the connection on `thread` back: false when a KILL QUERY may still
    /// reach it (then it must be closed, not pooled).
    pub fn may_pool(&self, thread: u32) -> bool {
        let mut r = self.running.lock();
        if r.conn.is_some_and(|c| c.thread == thread) {
            r.conn = None;
            return !std::mem::take(&mut r.kill_sent);
        }
        true
    }

    /// The connection to send `KILL QUERY` to, if the session is running a statement;
    /// marks it so it is not pooled afterwards.
    fn target(&self) -> Option<BackendThread> {
        let mut r = self.running.lock();
        let target = r.conn.filter(|_| r.busy)?;
        r.kill_sent = true;
        Some(target)
    }
}

/// Every live session by its proxy connection id.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: DashMap<u32, Arc<SessionEntry>>,
}

/// Removes the session from the registry when it ends.
pub struct Registered<'a> {
    registry: &'a SessionRegistry,
    id: u32,
    pub entry: Arc<SessionEntry>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.id);
    }
}

/// One session in `SHOW PROXY PROCESSLIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub id: u32,
    pub host: String,
    pub user: String,
    pub schema: Option<String>,
    pub busy: bool,
    /// Seconds in the current state (busy or idle).
    pub seconds: u64,
    /// Where the running statement runs.
    pub backend: Option<BackendThread>,
    pub info: Option<String>,
}

/// What a KILL has to do, once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillPlan {
    /// Send `KILL QUERY <thread>` to that backend.
    pub stop: Option<BackendThread>,
    /// End the session too.
    pub end_session: bool,
}

impl SessionRegistry {
    pub fn register(
        &self,
        id: u32,
        host: &str,
        user: &str,
        schema: Option<&str>,
    ) -> Registered<'_> {
        let entry = Arc::new(SessionEntry {
            id,
            host: host.to_string(),
            user: Mutex::new(user.to_string()),
            running: Mutex::new(Running {
                busy: false,
                since: std::time::Instant::now(),
                info: String::new(),
                schema: schema.map(str::to_string),
                conn: None,
                kill_sent: false,
            }),
            killed: CancellationToken::new(),
        });
        self.sessions.insert(id, entry.clone());
        Registered {
            registry: self,
            id,
            entry,
        }
    }

    /// Every session, by id: `SHOW PROXY PROCESSLIST`'s rows.
    pub fn processlist(&self) -> Vec<Process> {
        let mut out: Vec<Process> = self
            .sessions
            .iter()
            .map(|e| {
                let r = e.value().running.lock();
                Process {
                    id: *e.key(),
                    host: e.value().host.clone(),
                    user: e.value().user.lock().clone(),
                    schema: r.schema.clone(),
                    busy: r.busy,
                    seconds: r.since.elapsed().as_secs(),
                    backend: r.conn.filter(|_| r.busy),
                    info: (!r.info.is_empty()).then(|| r.info.clone()),
                }
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }

    /// Checks that `user` may kill the target of `kill` (its own sessions only: the proxy
    /// does not know the backend privileges that would allow more) and marks what to stop.
    pub fn plan(&self, kill: Kill, user: &str) -> Result<KillPlan, MysqlError> {
        let (id, end_session) = match kill {
            Kill::Query(id) => (id, false),
            Kill::Connection(id) => (id, true),
        };
        let entry = self
            .sessions
            .get(&id)
            .map(|e| e.value().clone())
            // A session a KILL already ended is gone for the next one, even while its task
            // is still closing (it leaves the registry when it ends): CI's load showed a
            // second KILL answered OK in that moment.
            .filter(|e| !e.killed.is_cancelled())
            .ok_or_else(|| unknown_thread(id))?;
        if *entry.user.lock() != user {
            return Err(MysqlError::new(
                1095,
                "HY000",
                format!("You are not owner of thread {id}"),
            ));
        }
        let stop = entry.target();
        if end_session {
            entry.killed.cancel();
        }
        Ok(KillPlan { stop, end_session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kill_forms() {
        let ok = |sql: &str| parse(sql).map(|r| r.map_err(|e| e.code));
        assert_eq!(ok("KILL QUERY 12"), Some(Ok(Kill::Query(12))));
        assert_eq!(ok("kill 7;"), Some(Ok(Kill::Connection(7))));
        assert_eq!(ok("KILL HARD CONNECTION 3"), Some(Ok(Kill::Connection(3))));
        assert_eq!(ok("KILL SOFT QUERY 3"), Some(Ok(Kill::Query(3))));
        assert_eq!(ok("KILL USER app"), Some(Err(1235)));
        assert_eq!(ok("KILL QUERY ID 99"), Some(Err(1235)));
        assert_eq!(ok("KILL 99999999999"), Some(Err(1094)));
        assert_eq!(ok("KILL x"), Some(Err(1064)));
        assert_eq!(ok("SELECT 1"), None);
    }

    #[test]
    fn only_a_running_statement_of_ones_own_session_is_stopped() {
        let registry = SessionRegistry::default();
        let a = registry.register(1, "127.0.0.1:40000", "app", None);
        let thread = BackendThread {
            shard: ShardId(0),
            replica: ReplicaId(0),
            thread: 40,
        };
        // Idle: nothing to stop, and the connection may be pooled.
        a.entry.took(thread);
        assert_eq!(
            registry.plan(Kill::Query(1), "app").map(|p| p.stop),
            Ok(None)
        );
        assert!(a.entry.may_pool(40));
        // Running: stopped, and that connection is not pooled afterwards.
        a.entry.begin_command("SELECT SLEEP(9)");
        a.entry.took(thread);
        let listed = registry.processlist();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].busy, listed[0].backend, listed[0].info.as_deref()),
            (true, Some(thread), Some("SELECT SLEEP(9)"))
        );
        assert_eq!(
            registry.plan(Kill::Query(1), "app").map(|p| p.stop),
            Ok(Some(thread))
        );
        assert!(!a.entry.may_pool(40));
        assert!(!a.entry.killed.is_cancelled());
        assert_eq!(
            registry.plan(Kill::Query(1), "other").map_err(|e| e.code),
            Err(1095)
        );
        assert_eq!(
            registry.plan(Kill::Query(2), "app").map_err(|e| e.code),
            Err(1094)
        );
        assert!(registry
            .plan(Kill::Connection(1), "app")
            .is_ok_and(|p| p.end_session));
        assert!(a.entry.killed.is_cancelled());
        // Ended, though still registered until its task closes: gone for a second KILL.
        assert_eq!(
            registry
                .plan(Kill::Connection(1), "app")
                .map_err(|e| e.code),
            Err(1094)
        );
        drop(a);
        assert_eq!(
            registry.plan(Kill::Query(1), "app").map_err(|e| e.code),
            Err(1094)
        );
    }
}
