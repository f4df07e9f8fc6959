//! The routing decision as a value: from a classified statement, the topology, the
//! session's view and a snapshot of the replicas' freshness and latency, decide which shard
//! and which replica serve it, and why. Pure: no
//! I/O, no tokio, so it is unit-tested and printable by EXPLAIN.
//!
//! Owns: `Route`, `Topology`, identifier newtypes. May import: sql.

use crate::sql::classify::ReadHint;
use crate::sql::{Classified, Flags, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ShardId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ReplicaId(pub u32);

/// What the router knows of the cluster.
#[derive(Debug, Clone)]
pub struct Topology {
    pub shards: Vec<ShardTopology>,
}

#[derive(Debug, Clone)]
pub struct ShardTopology {
    pub id: ShardId,
    pub primary: ReplicaId,
    pub replicas: Vec<ReplicaId>,
}

/// What the router needs to know about the session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionView {
    /// The connection the session is pinned to, if any.
    pub pinned_to: Option<(ShardId, ReplicaId)>,
    /// An explicit transaction is open, or autocommit is off (every statement opens one).
    pub in_transaction: bool,
    pub consistency: Consistency,
    /// Log timestamp of the session's last replicated write (0: none).
    pub last_write_ts: u64,
    /// Spreads reads among replicas of about the same latency.
    pub spread: u32,
}

/// How fresh a replica must be to serve a session's autocommit reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum Consistency {
    /// Everything sequenced so far (else the primary).
    Strong,
    /// The session's own writes (read-your-writes).
    #[default]
    Session,
    /// Any healthy replica within the configured lag.
    Eventual,
}

impl Consistency {
    /// The inverse of `as u8`.
    pub fn from_u8(v: u8) -> Consistency {
        match v {
            0 => Consistency::Strong,
            2 => Consistency::Eventual,
            _ => Consistency::Session,
        }
    }

    pub fn parse(s: &str) -> Option<Consistency> {
        match s.to_ascii_lowercase().as_str() {
            "strong" => Some(Consistency::Strong),
            "session" => Some(Consistency::Session),
            "eventual" => Some(Consistency::Eventual),
            _ => None,
        }
    }
}

/// One replica as read routing sees it (a snapshot taken per statement).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaView {
    pub id: ReplicaId,
    /// Healthy and not quarantined.
    pub serving: bool,
    /// Applied position (the primary: everything).
    pub applied: u64,
    /// Round-trip EWMA in microseconds (0: not measured yet).
    pub latency_us: u64,
}

/// The read side of one shard: its replicas and the end of its log.
#[derive(Debug, Clone, Default)]
pub struct ReadView {
    pub replicas: Vec<ReplicaView>,
    pub log_end: u64,
    /// The log end of this shard when the session connected (or was reset): `session`
    /// consistency also covers writes acknowledged to any client before then. An
    /// application that writes on one connection and reads on the next (Django's default
    /// of a connection per request, a test framework closing connections between tests)
    /// then reads its write, as from one server; a connection kept open sees other
    /// connections' later writes only once a replica applied them.
    pub connected_at: u64,
    /// `eventual`: the most a replica may be behind the log end, in timestamp units.
    pub max_lag_ts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Target {
    /// The shard's primary.
    Primary(ShardId, ReplicaId),
    /// A replica serving an autocommit read (may be the primary when it is the fastest).
    Replica(ShardId, ReplicaId),
    /// The connection the session is pinned to.
    Pinned(ShardId, ReplicaId),
    /// Answered by the proxy itself.
    Proxy,
    /// Nothing to run (empty statement): answered with OK by the proxy.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    /// Writes, transactions, locking or side-effect reads: the primary serves them.
    PrimaryOnly,
    /// The lowest-latency replica fresh enough for the session's consistency.
    FreshReplica,
    /// A plain read, but no replica was fresh enough (or healthy): the primary serves it.
    NoFreshReplica,
    /// A plain read whose comment asked for the primary (`/* myquorum=primary */`).
    HintPrimary,
    SessionPinned,
    ProxyCommand,
    EmptyStatement,
    NoShards,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub target: Target,
    pub reason: Reason,
}

/// The default shard holds every table until sharding lands.
pub const DEFAULT_SHARD: ShardId = ShardId(0);

/// Flags that keep a read on the primary: it locks, depends on this connection's history,
/// has side effects, or the classifier was unsure of it.
const PRIMARY_READ_FLAGS: Flags = Flags::LOCKING_READ
    .union(Flags::LAST_INSERT_ID)
    .union(Flags::FOUND_ROWS)
    .union(Flags::TEMP_TABLE)
    .union(Flags::ADVISORY_LOCK)
    .union(Flags::SIDE_EFFECTS)
    .union(Flags::FALLBACK)
    .union(Flags::MULTI_STATEMENT)
    .union(Flags::WARNINGS_QUERY)
    .union(Flags::USER_VARIABLE)
    .union(Flags::SQL_PREPARE);

/// Whether a statement may be served by a replica.
pub fn is_replica_read(c: &Classified, session: &SessionView) -> bool {
    c.kind == Kind::Read
        && c.statements <= 1
        && !session.in_transaction
        && !c.flags.intersects(PRIMARY_READ_FLAGS)
}

/// The replica for a plain read: the fresh, serving one with the lowest latency; among
/// those within 50 % (+1 ms) of the best, `spread` picks one so load is shared (a band that
/// wide keeps probe noise from herding every read onto one replica, while a replica slower
/// by tens of milliseconds stays out).
pub fn pick_replica(view: &ReadView, session: &SessionView) -> Option<ReplicaId> {
    let need = match session.consistency {
        Consistency::Strong => view.log_end,
        Consistency::Session => session.last_write_ts.max(view.connected_at),
        Consistency::Eventual => view.log_end.saturating_sub(view.max_lag_ts),
    };
    let fresh: Vec<&ReplicaView> = view
        .replicas
        .iter()
        .filter(|r| r.serving && r.applied >= need)
        .collect();
    let best = fresh.iter().map(|r| r.latency_us).min()?;
    let close: Vec<&&ReplicaView> = fresh
        .iter()
        .filter(|r| r.latency_us <= best + best / 2 + 1000)
        .collect();
    close
        .get(session.spread as usize % close.len().max(1))
        .map(|r| r.id)
}

/// Reads a session sends to one replica before it moves to the next equally fast one.
pub const READS_PER_REPLICA: u32 = 64;

/// The `spread` of a session's next read: it stays on one replica for a run of reads and
/// then moves on, so the load is shared over time and across sessions (each starts at its
/// own `seed`). Moving on every read cost about 30 µs a point select here (121 µs against
/// 150–220 µs through the proxy at one client): a server whose connection thread and
/// caches went cold while the two others ran answers more slowly.
pub fn read_spread(seed: u32, reads_routed: u32) -> u32 {
    seed.wrapping_add(reads_routed / READS_PER_REPLICA)
}

/// Routes `c`; `reads` is the shard's read view (only consulted for plain reads).
pub fn route_read(
    c: &Classified,
    topo: &Topology,
    session: SessionView,
    reads: impl FnOnce(ShardId) -> ReadView,
) -> Route {
    let r = route(c, topo, session);
    let Target::Primary(shard, _) = r.target else {
        return r;
    };
    if !is_replica_read(c, &session) {
        return r;
    }
    let mut session = session;
    match c.hint {
        Some(ReadHint::Primary) => {
            return Route {
                target: r.target,
                reason: Reason::HintPrimary,
            }
        }
        Some(ReadHint::Strong) => session.consistency = Consistency::Strong,
        Some(ReadHint::Session) => session.consistency = Consistency::Session,
        Some(ReadHint::Eventual) => session.consistency = Consistency::Eventual,
        None => {}
    }
    match pick_replica(&reads(shard), &session) {
        Some(id) => Route {
            target: Target::Replica(shard, id),
            reason: Reason::FreshReplica,
        },
        None => Route {
            target: r.target,
            reason: Reason::NoFreshReplica,
        },
    }
}

pub fn route(c: &Classified, topo: &Topology, session: SessionView) -> Route {
    match c.kind {
        Kind::Proxy => {
            return Route {
                target: Target::Proxy,
                reason: Reason::ProxyCommand,
            }
        }
        Kind::Empty => {
            return Route {
                target: Target::Nothing,
                reason: Reason::EmptyStatement,
            }
        }
        _ => {}
    }
    if let Some((shard, replica)) = session.pinned_to {
        return Route {
            target: Target::Pinned(shard, replica),
            reason: Reason::SessionPinned,
        };
    }
    match topo
        .shards
        .iter()
        .find(|s| s.id == DEFAULT_SHARD)
        .or(topo.shards.first())
    {
        Some(s) => Route {
            target: Target::Primary(s.id, s.primary),
            reason: Reason::PrimaryOnly,
        },
        None => Route {
            target: Target::Nothing,
            reason: Reason::NoShards,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::classify;

    fn topo() -> Topology {
        Topology {
            shards: vec![ShardTopology {
                id: ShardId(0),
                primary: ReplicaId(0),
                replicas: vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)],
            }],
        }
    }

    #[test]
    fn everything_goes_to_the_primary_for_now() {
        for sql in [
            "SELECT 1",
            "UPDATE t SET a=1",
            "BEGIN",
            "CREATE TABLE x (a INT)",
        ] {
            let r = route(&classify(sql), &topo(), SessionView::default());
            assert_eq!(r.target, Target::Primary(ShardId(0), ReplicaId(0)), "{sql}");
        }
    }

    fn reads(applied: [u64; 3], latency: [u64; 3]) -> ReadView {
        ReadView {
            replicas: (0..3)
                .map(|i| ReplicaView {
                    id: ReplicaId(i as u32),
                    serving: true,
                    applied: if i == 0 { u64::MAX } else { applied[i] },
                    latency_us: latency[i],
                })
                .collect(),
            log_end: 100,
            max_lag_ts: 30,
            connected_at: 0,
        }
    }

    fn read_route(sql: &str, view: SessionView, rv: ReadView) -> Route {
        route_read(&classify(sql), &topo(), view, |_| rv)
    }

    #[test]
    fn comment_hints_steer_plain_reads_only() {
        // The session wrote at 90: only the primary has it. Replica 1 is within the
        // `eventual` lag (log end 100 − 30 ≤ 80), replica 2 is not.
        let session = SessionView {
            last_write_ts: 90,
            ..SessionView::default()
        };
        let fast_stale = || reads([0, 80, 40], [5000, 800, 300]);
        let r = read_route("SELECT * FROM t", session, fast_stale());
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(0)));
        let r = read_route(
            "SELECT /* myquorum=primary */ * FROM t",
            session,
            fast_stale(),
        );
        assert_eq!(r.target, Target::Primary(ShardId(0), ReplicaId(0)));
        assert_eq!(r.reason, Reason::HintPrimary);
        let r = read_route(
            "SELECT /*+ myquorum=eventual */ * FROM t",
            session,
            fast_stale(),
        );
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(1)));
        // `strong` in an `eventual` session: only the whole log will do (the primary here).
        let eventual = SessionView {
            consistency: Consistency::Eventual,
            ..session
        };
        let r = read_route("SELECT * FROM t", eventual, fast_stale());
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(1)));
        let r = read_route("SELECT * FROM t -- myquorum=strong", eventual, fast_stale());
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(0)));
        // Never a replica for what must run on the primary.
        let in_tx = SessionView {
            in_transaction: true,
            ..session
        };
        let r = read_route(
            "SELECT /* myquorum=eventual */ * FROM t",
            in_tx,
            fast_stale(),
        );
        assert_eq!(r.reason, Reason::PrimaryOnly);
        let r = read_route(
            "SELECT /* myquorum=eventual */ * FROM t FOR UPDATE",
            session,
            fast_stale(),
        );
        assert_eq!(r.reason, Reason::PrimaryOnly);
    }

    /// A session that has not written reads what was acknowledged before it connected: a
    /// replica that applied less is skipped, as for its own writes.
    #[test]
    fn a_new_session_reads_what_was_written_before_it_connected() {
        let fresh = SessionView::default();
        let connected_at_70 = |applied| ReadView {
            connected_at: 70,
            ..reads(applied, [5000, 800, 300])
        };
        let r = read_route("SELECT * FROM t", fresh, connected_at_70([0, 80, 60]));
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(1)));
        // Neither follower has it: the leader (replica 0 here) serves.
        let r = read_route("SELECT * FROM t", fresh, connected_at_70([0, 60, 60]));
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(0)));
        // Its own later write counts as before; `eventual` ignores both.
        let wrote = SessionView {
            last_write_ts: 85,
            ..fresh
        };
        let r = read_route("SELECT * FROM t", wrote, connected_at_70([0, 80, 90]));
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(2)));
        let eventual = SessionView {
            consistency: Consistency::Eventual,
            ..fresh
        };
        let connected_at_80 = ReadView {
            connected_at: 80,
            ..reads([0, 60, 75], [5000, 800, 300])
        };
        let r = read_route("SELECT * FROM t", eventual, connected_at_80);
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(2)));
    }

    #[test]
    fn plain_reads_go_to_the_fastest_fresh_replica() {
        let session = SessionView {
            last_write_ts: 50,
            ..SessionView::default()
        };
        // Replica 2 is fastest and has the session's write.
        let r = read_route(
            "SELECT * FROM t",
            session,
            reads([0, 60, 60], [5000, 4000, 300]),
        );
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(2)));
        assert_eq!(r.reason, Reason::FreshReplica);
        // Replica 2 lacks the session's last write: the next fastest fresh one.
        let r = read_route(
            "SELECT * FROM t",
            session,
            reads([0, 60, 40], [5000, 800, 300]),
        );
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(1)));
        // Strong: only what holds the whole log (the primary here).
        let strong = SessionView {
            consistency: Consistency::Strong,
            ..session
        };
        let r = read_route(
            "SELECT * FROM t",
            strong,
            reads([0, 60, 99], [900, 800, 300]),
        );
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(0)));
        // Eventual: within max_lag of the end (100 - 30).
        let eventual = SessionView {
            consistency: Consistency::Eventual,
            ..session
        };
        let r = read_route(
            "SELECT * FROM t",
            eventual,
            reads([0, 60, 75], [5000, 4000, 300]),
        );
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(2)));
    }

    #[test]
    fn consistency_round_trips_through_u8() {
        for c in [
            Consistency::Strong,
            Consistency::Session,
            Consistency::Eventual,
        ] {
            assert_eq!(Consistency::from_u8(c as u8), c);
        }
    }

    #[test]
    fn close_latencies_share_the_load_and_down_replicas_are_skipped() {
        let mut seen = std::collections::BTreeSet::new();
        for spread in 0..6 {
            let session = SessionView {
                spread,
                ..SessionView::default()
            };
            let r = read_route(
                "SELECT 1 FROM t",
                session,
                reads([0, 0, 0], [1000, 1050, 5000]),
            );
            seen.insert(r.target);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![
                Target::Replica(ShardId(0), ReplicaId(0)),
                Target::Replica(ShardId(0), ReplicaId(1))
            ]
        );
        // A session keeps its replica for a run of reads, then moves to the next.
        let target = |n: u32| {
            let session = SessionView {
                spread: read_spread(7, n),
                ..SessionView::default()
            };
            read_route(
                "SELECT 1 FROM t",
                session,
                reads([0, 0, 0], [1000, 1050, 1100]),
            )
            .target
        };
        let runs: Vec<Target> = (0..READS_PER_REPLICA * 3)
            .step_by(READS_PER_REPLICA as usize)
            .map(target)
            .collect();
        for (i, run) in runs.iter().enumerate() {
            let first = i as u32 * READS_PER_REPLICA;
            assert!((first..first + READS_PER_REPLICA).all(|n| target(n) == *run));
        }
        let distinct: std::collections::BTreeSet<_> = runs.iter().collect();
        assert_eq!(distinct.len(), 3, "{runs:?}");
        let mut rv = reads([0, 0, 0], [1000, 300, 5000]);
        rv.replicas[1].serving = false;
        let r = read_route("SELECT 1 FROM t", SessionView::default(), rv);
        assert_eq!(r.target, Target::Replica(ShardId(0), ReplicaId(0)));
    }

    #[test]
    fn what_stays_on_the_primary() {
        let rv = || reads([100, 100, 100], [900, 10, 10]);
        for sql in [
            "UPDATE t SET a = 1",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT LAST_INSERT_ID()",
            "SELECT FOUND_ROWS()",
            "SELECT GET_LOCK('x', 1)",
            "SELECT @x",
            "SHOW WARNINGS",
        ] {
            let r = read_route(sql, SessionView::default(), rv());
            assert_eq!(r.target, Target::Primary(ShardId(0), ReplicaId(0)), "{sql}");
        }
        let in_tx = SessionView {
            in_transaction: true,
            ..SessionView::default()
        };
        let r = read_route("SELECT * FROM t", in_tx, rv());
        assert_eq!(r.reason, Reason::PrimaryOnly);
        // No replica fresh enough: the primary, and the route says why.
        let mut stale = reads([0, 1, 1], [900, 10, 10]);
        stale.replicas[0].serving = false;
        let session = SessionView {
            last_write_ts: 50,
            ..SessionView::default()
        };
        let r = read_route("SELECT * FROM t", session, stale);
        assert_eq!(r.reason, Reason::NoFreshReplica);
        assert_eq!(r.target, Target::Primary(ShardId(0), ReplicaId(0)));
    }

    #[test]
    fn pinned_sessions_stay_and_proxy_commands_are_local() {
        let view = SessionView {
            pinned_to: Some((ShardId(0), ReplicaId(0))),
            ..SessionView::default()
        };
        let r = route(&classify("SELECT 1"), &topo(), view);
        assert_eq!(r.reason, Reason::SessionPinned);
        let r = route(&classify("SHOW PROXY PINS"), &topo(), view);
        assert_eq!(r.target, Target::Proxy);
    }
}
