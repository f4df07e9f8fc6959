//! The routing decision as a value: from a classified statement, the topology and the
//! session's view, decide which shard and which replica (role) serve it, and why. Pure: no
//! I/O, no tokio, so it is unit-tested and printable by EXPLAIN.
//!
//! Owns: `Route`, `Topology`, identifier newtypes. May import: sql.

use crate::sql::{Classified, Kind};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Target {
    /// The shard's primary.
    Primary(ShardId, ReplicaId),
    /// The connection the session is pinned to.
    Pinned(ShardId, ReplicaId),
    /// Answered by the proxy itself.
    Proxy,
    /// Nothing to run (empty statement): answered with OK by the proxy.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    /// Replication and replica reads are not built yet: the primary serves everything.
    PrimaryOnly,
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

    #[test]
    fn pinned_sessions_stay_and_proxy_commands_are_local() {
        let view = SessionView {
            pinned_to: Some((ShardId(0), ReplicaId(0))),
        };
        let r = route(&classify("SELECT 1"), &topo(), view);
        assert_eq!(r.reason, Reason::SessionPinned);
        let r = route(&classify("SHOW PROXY PINS"), &topo(), view);
        assert_eq!(r.target, Target::Proxy);
    }
}
