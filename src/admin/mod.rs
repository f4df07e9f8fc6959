//! Statements the proxy answers itself: `SHOW PROXY BACKENDS`, `SHOW PROXY PROCESSLIST`,
//! `SHOW PROXY PINS`,
//! `SHOW PROXY STATUS`, `SHOW PROXY SESSION`, `SHOW PROXY REPLICATION`, `EXPLAIN LAST
//! STATEMENT` (later).
//!
//! Owns: the content of proxy-answered result sets. May import: context, session, backend
//! (read-only counters), replication (read-only positions), sql::like (`… LIKE` filters).

pub mod metrics;

use crate::context::ProxyContext;
use crate::frontend::ClientSession;
use crate::protocol::resultset::ColumnKind;
use crate::protocol::MysqlError;
use crate::session::{PinReason, SessionState, PIN_EVENTS};
use std::sync::atomic::Ordering;

/// A result set built by the proxy.
pub struct Table {
    pub columns: Vec<&'static str>,
    /// Each column's type where it is not text (empty: all text), as the server types the
    /// statement the table answers: drivers convert by type (PyMySQL gives SHOW
    /// PROCESSLIST's Id as an int, which applications compare with their thread id).
    pub kinds: Vec<ColumnKind>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// `SHOW PROXY REPLICATION`: per replica its role, applied position, lag behind the log,
/// Cabinet weight, applier state; plus the shard's log counters.
fn replication(ctx: &ProxyContext) -> Table {
    let mut rows = Vec::new();
    for log in &ctx.replication.shards {
        let cab = log.cabinet();
        let end = log.last_sequenced();
        let c = &log.counters;
        for (i, r) in log.replicas.iter().enumerate() {
            let id = crate::router::ReplicaId(i as u32);
            let leader = id == log.leader();
            let applied = if leader {
                log.primary_low_water()
            } else {
                r.applied.load(Ordering::Acquire)
            };
            let state = match replica_state(ctx, log, id) {
                ReplicaStatus::Quarantined(q) => format!("quarantined: {q}"),
                ReplicaStatus::Primary if r.flush_relaxed.load(Ordering::Relaxed) => {
                    "primary (no fsync per commit: the WAL and a follower hold them)".to_string()
                }
                ReplicaStatus::Primary => "primary".to_string(),
                ReplicaStatus::Rebuilding => {
                    "rebuilding (copying the primary's databases)".to_string()
                }
                ReplicaStatus::Applying if !r.durable_hold.load(Ordering::Relaxed) => {
                    "applying (commits not synced: counts once the WAL synced)".to_string()
                }
                ReplicaStatus::Applying => "applying".to_string(),
                ReplicaStatus::Down => "down (catches up when back)".to_string(),
            };
            let addr = ctx
                .cluster
                .pool(log.shard, id)
                .map(|p| p.addr.to_string())
                .unwrap_or_default();
            rows.push(vec![
                Some(log.shard.0.to_string()),
                Some(i.to_string()),
                Some(addr),
                Some(state),
                Some(applied.to_string()),
                Some(end.saturating_sub(applied).min(end).to_string()),
                Some(format!("{:.3}", cab.weight_of(id))),
                Some(format!("{:.3}", cab.ct())),
                Some(c.commits.load(Ordering::Relaxed).to_string()),
                Some(format!(
                    "{}/{}",
                    c.batches.load(Ordering::Relaxed),
                    c.max_batch.load(Ordering::Relaxed)
                )),
                Some(format!(
                    "{}/{}",
                    c.no_quorum.load(Ordering::Relaxed),
                    c.quorum_timeouts.load(Ordering::Relaxed)
                )),
                Some(r.held.load(Ordering::Acquire).max(applied).to_string()),
                Some(r.receive_latency.summary()),
                Some(r.apply_latency.summary()),
                Some(log.latency.sequence.summary()),
                Some(log.wal.sync_latency().summary()),
                Some(log.latency.quorum.summary()),
                Some(log.latency.primary_commit.summary()),
                Some(r.system_time_zone.lock().clone()),
                Some(c.conflicts.load(Ordering::Relaxed).to_string()),
            ]);
        }
    }
    Table {
        kinds: Vec::new(),
        columns: vec![
            "shard",
            "replica",
            "address",
            "state",
            "applied_ts",
            "behind_ts",
            "weight",
            "consensus_threshold",
            "commits",
            "wal_batches/max_batch",
            "no_quorum/timeouts",
            "held_ts",
            "receive_ms_p50/p99",
            "apply_ms_p50/p99",
            "sequence_ms_p50/p99",
            "wal_sync_ms_p50/p99",
            "quorum_ms_p50/p99",
            "primary_commit_ms_p50/p99",
            "system_time_zone",
            "certification_conflicts",
        ],
        rows,
    }
}

/// Where a replica stands in its shard's replication.
pub enum ReplicaStatus {
    Primary,
    Applying,
    Rebuilding,
    /// Not applying or counting for the quorum until rebuilt (why).
    Quarantined(String),
    Down,
}

impl ReplicaStatus {
    pub const NAMES: [&'static str; 5] =
        ["primary", "applying", "rebuilding", "quarantined", "down"];

    pub fn name(&self) -> &'static str {
        match self {
            ReplicaStatus::Primary => "primary",
            ReplicaStatus::Applying => "applying",
            ReplicaStatus::Rebuilding => "rebuilding",
            ReplicaStatus::Quarantined(_) => "quarantined",
            ReplicaStatus::Down => "down",
        }
    }
}

/// A follower is down when its applier lost its connection or when health checks marked
/// its backend down: an idle applier notices a dead server only at its next record.
pub fn replica_state(
    ctx: &ProxyContext,
    log: &crate::replication::log::ShardLog,
    id: crate::router::ReplicaId,
) -> ReplicaStatus {
    let Some(r) = log.replicas.get(id.0 as usize) else {
        return ReplicaStatus::Down;
    };
    let backend_up = ctx.cluster.pool(log.shard, id).is_some_and(|p| p.is_up());
    if let Some(q) = r.quarantined.lock().as_ref() {
        ReplicaStatus::Quarantined(q.clone())
    } else if id == log.leader() {
        ReplicaStatus::Primary
    } else if r.rebuilding.load(Ordering::Relaxed) {
        ReplicaStatus::Rebuilding
    } else if r.live.load(Ordering::Relaxed) && backend_up {
        ReplicaStatus::Applying
    } else {
        ReplicaStatus::Down
    }
}

/// A backend's health as SHOW PROXY BACKENDS shows it: up or down by its probes, and a
/// follower that serves nothing because it is quarantined or being rebuilt says so.
fn backend_health(
    ctx: &ProxyContext,
    shard: crate::router::ShardId,
    replica: crate::router::ReplicaId,
    up: bool,
) -> &'static str {
    let state = ctx
        .replication
        .shard(shard)
        .and_then(|log| log.replicas.get(replica.0 as usize));
    match state {
        Some(r) if r.rebuilding.load(Ordering::Relaxed) => "rebuilding",
        Some(r) if r.quarantined.lock().is_some() => {
            if up {
                "up, quarantined"
            } else {
                "down, quarantined"
            }
        }
        _ if up => "up",
        _ => "down",
    }
}

/// What `PROXY REBUILD REPLICA` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildRequest {
    pub shard: crate::router::ShardId,
    pub replica: crate::router::ReplicaId,
    /// The replica to copy from (`None`: the proxy picks, a follower before the primary).
    pub from: Option<crate::router::ReplicaId>,
}

/// `PROXY REBUILD REPLICA <replica> [FROM <replica>] [SHARD <shard>]` (shard 0 by default):
/// the request, a syntax error, or None for another command.
pub fn parse_rebuild(command: &str) -> Option<Result<RebuildRequest, MysqlError>> {
    let mut words = command.split_whitespace();
    if words.next() != Some("proxy") || words.next() != Some("rebuild") {
        return None;
    }
    let usage = || {
        MysqlError::new(
            1064,
            "42000",
            "myquorum: use PROXY REBUILD REPLICA <replica number> [FROM <replica number>] \
             [SHARD <shard number>]",
        )
    };
    let (mut shard, mut replica, mut from) = (0u32, None, None);
    while let Some(w) = words.next() {
        let n = words.next().and_then(|v| v.parse::<u32>().ok());
        match (w, n) {
            ("replica", Some(n)) => replica = Some(n),
            ("from", Some(n)) => from = Some(crate::router::ReplicaId(n)),
            ("shard", Some(n)) => shard = n,
            _ => return Some(Err(usage())),
        }
    }
    Some(
        replica
            .map(|r| RebuildRequest {
                shard: crate::router::ShardId(shard),
                replica: crate::router::ReplicaId(r),
                from,
            })
            .ok_or_else(usage),
    )
}

/// `PROXY SWITCHOVER [TO <replica>] [SHARD <shard>]` (shard 0 by default; without TO the
/// best replica by election score): the shard and the target, or a syntax error.
#[allow(clippy::type_complexity)]
pub fn parse_switchover(
    command: &str,
) -> Option<Result<(crate::router::ShardId, Option<crate::router::ReplicaId>), MysqlError>> {
    let mut words = command.split_whitespace();
    if words.next() != Some("proxy") || words.next() != Some("switchover") {
        return None;
    }
    let usage = || {
        MysqlError::new(
            1064,
            "42000",
            "myquorum: use PROXY SWITCHOVER [TO <replica number>] [SHARD <shard number>]",
        )
    };
    let (mut shard, mut to) = (0u32, None);
    while let Some(w) = words.next() {
        let n = words.next().and_then(|v| v.parse::<u32>().ok());
        match (w, n) {
            ("to", Some(n)) => to = Some(crate::router::ReplicaId(n)),
            ("shard", Some(n)) => shard = n,
            _ => return Some(Err(usage())),
        }
    }
    Some(Ok((crate::router::ShardId(shard), to)))
}

/// `SHOW PROXY PROCESSLIST`: the proxy's sessions under the ids KILL takes, with the
/// statement each runs and the backend (address, backend thread) it runs on.
fn processlist(ctx: &ProxyContext) -> Table {
    let rows = ctx
        .sessions
        .processlist()
        .into_iter()
        .map(|p| {
            let backend = p.backend.and_then(|b| {
                ctx.cluster
                    .pool(b.shard, b.replica)
                    .map(|pool| (pool.addr.to_string(), b.thread))
            });
            vec![
                Some(p.id.to_string()),
                Some(p.user),
                p.schema,
                Some(if p.busy { "Query" } else { "Sleep" }.to_string()),
                Some(p.seconds.to_string()),
                backend.as_ref().map(|b| b.0.clone()),
                backend.map(|b| b.1.to_string()),
                p.info,
            ]
        })
        .collect();
    Table {
        kinds: Vec::new(),
        columns: vec![
            "id",
            "user",
            "db",
            "command",
            "time",
            "backend",
            "backend_thread",
            "info",
        ],
        rows,
    }
}

/// `SHOW [FULL] PROCESSLIST` through the proxy: its sessions in MariaDB's columns, under the
/// ids KILL takes; State says where a running statement runs (nothing for the asking
/// session's own, which the proxy answers). As on a server without the PROCESS privilege, a
/// user who is not a proxy admin sees their own sessions only; Info is cut at 100
/// characters unless FULL.
fn server_processlist(
    ctx: &ProxyContext,
    session: &SessionState,
    asking: u32,
    full: bool,
) -> Table {
    /// What SHOW PROCESSLIST shows of a statement (MariaDB's PROCESS_LIST_WIDTH).
    const INFO_CHARS: usize = 100;
    let rows = ctx
        .sessions
        .processlist()
        .into_iter()
        .filter(|p| session.admin || p.user == session.user)
        .map(|p| {
            let state = p.backend.filter(|_| p.id != asking).and_then(|b| {
                ctx.cluster
                    .pool(b.shard, b.replica)
                    .map(|pool| format!("running on {} (thread {})", pool.addr, b.thread))
            });
            let info = p.info.map(|i| {
                if full {
                    i
                } else {
                    i.chars().take(INFO_CHARS).collect()
                }
            });
            vec![
                Some(p.id.to_string()),
                Some(p.user),
                Some(p.host),
                p.schema,
                Some(if p.busy { "Query" } else { "Sleep" }.to_string()),
                Some(p.seconds.to_string()),
                Some(state.unwrap_or_default()),
                info,
                Some("0.000".to_string()),
            ]
        })
        .collect();
    use ColumnKind::{Int, Text};
    Table {
        kinds: vec![Int, Text, Text, Text, Text, Int, Text, Text, Text],
        columns: vec![
            "Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Progress",
        ],
        rows,
    }
}

/// `SHOW PROXY QUERIES`: per statement digest, executions, time through the proxy and where
/// they were served, the most total time first (ProxySQL's stats_mysql_query_digest; times
/// in milliseconds, first/last seen in Unix seconds as there).
fn queries(ctx: &ProxyContext) -> Table {
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    Table {
        kinds: Vec::new(),
        columns: vec![
            "digest",
            "digest_text",
            "count",
            "sum_ms",
            "avg_ms",
            "min_ms",
            "max_ms",
            "to_primary",
            "to_replica",
            "by_proxy",
            "first_seen",
            "last_seen",
        ],
        rows: ctx
            .digests
            .rows()
            .into_iter()
            .map(|r| {
                vec![
                    Some(format!("{:016x}", r.digest)),
                    Some(r.text),
                    Some(r.count.to_string()),
                    Some(ms(r.sum_us)),
                    Some(ms(r.sum_us / r.count.max(1))),
                    Some(ms(r.min_us)),
                    Some(ms(r.max_us)),
                    Some(r.primary.to_string()),
                    Some(r.replica.to_string()),
                    Some(r.proxy.to_string()),
                    Some(r.first_seen.to_string()),
                    Some(r.last_seen.to_string()),
                ]
            })
            .collect(),
    }
}

/// Whether proxy command `command` only shows the asking session's own state (anyone may
/// run it; the others need `admin` in the proxy's `[[users]]`).
pub fn is_about_own_session(command: &str) -> bool {
    matches!(
        command.strip_suffix(" like").unwrap_or(command),
        "explain last statement"
            | "session"
            | "pins"
            | "show processlist"
            | "show full processlist"
    )
}

/// ER_SPECIFIC_ACCESS_DENIED_ERROR, as MySQL answers an admin statement a user may not run.
pub fn not_an_admin() -> MysqlError {
    MysqlError::new(
        1227,
        "42000",
        "Access denied; you need the proxy's admin right for this operation (admin = true \
         for this user in the proxy's [[users]])",
    )
}

/// A SHOW PROXY table, filtered as SHOW STATUS LIKE filters when `sql` ends in `LIKE
/// '<pattern>'`: the rows whose first column matches.
pub fn answer_filtered(
    ctx: &ProxyContext,
    command: &str,
    sql: &str,
    session: &SessionState,
    client: &ClientSession,
) -> Result<Table, MysqlError> {
    let like = command
        .strip_suffix(" like")
        .filter(|table| !table.starts_with("proxy "))
        .zip(crate::sql::like::trailing_pattern(sql));
    let Some((table, pattern)) = like else {
        return answer(ctx, command, session, client);
    };
    let mut answered = answer(ctx, table, session, client)?;
    answered.rows.retain(
        |row| matches!(row.first(), Some(Some(v)) if crate::sql::like::matches(&pattern, v)),
    );
    Ok(answered)
}

pub fn answer(
    ctx: &ProxyContext,
    command: &str,
    session: &SessionState,
    client: &ClientSession,
) -> Result<Table, MysqlError> {
    match command {
        "backends" => Ok(backends(ctx)),
        "processlist" => Ok(processlist(ctx)),
        "show processlist" => Ok(server_processlist(ctx, session, client.connection_id(), false)),
        "show full processlist" => Ok(server_processlist(
            ctx,
            session,
            client.connection_id(),
            true,
        )),
        "replication" => Ok(replication(ctx)),
        "pins" => Ok(Table {
            kinds: Vec::new(),
            columns: vec!["reason", "times_pinned", "this_session"],
            rows: PinReason::ALL
                .iter()
                .map(|r| {
                    vec![
                        Some(r.name().to_string()),
                        Some(PIN_EVENTS[*r as usize].load(Ordering::Relaxed).to_string()),
                        Some(if session.pin_reasons().contains(r) { "yes" } else { "no" }.to_string()),
                    ]
                })
                .collect(),
        }),
        "queries" => Ok(queries(ctx)),
        // PgBouncer's RELOAD, ProxySQL's LOAD MYSQL USERS TO RUNTIME: users from the file.
        "proxy reload" | "proxy reload config" => match ctx.reload() {
            Ok(summary) => Ok(Table {
                kinds: Vec::new(),
                columns: vec!["result"],
                rows: vec![vec![Some(summary)]],
            }),
            Err(e) => Err(MysqlError::new(1105, "HY000", format!("myquorum: {e}"))),
        },
        "proxy reset queries" => Ok(Table {
            kinds: Vec::new(),
            columns: vec!["result"],
            rows: vec![vec![Some(format!(
                "{} query digests cleared",
                ctx.digests.reset()
            ))]],
        }),
        "status" => {
            let c = &ctx.counters;
            let kv = |k: &str, v: u64| vec![Some(k.to_string()), Some(v.to_string())];
            Ok(Table {
                kinds: Vec::new(),
                columns: vec!["variable", "value"],
                rows: vec![
                    kv("connections_active", c.connections_active.load(Ordering::Relaxed)),
                    kv("connections_total", c.connections_total.load(Ordering::Relaxed)),
                    kv("statements", c.statements.load(Ordering::Relaxed)),
                    kv("backend_errors", c.backend_errors.load(Ordering::Relaxed)),
                    kv("replica_reads", c.replica_reads.load(Ordering::Relaxed)),
                    kv("primary_fallbacks", c.primary_fallbacks.load(Ordering::Relaxed)),
                    kv("isolation_raised", c.isolation_raised.load(Ordering::Relaxed)),
                    kv(
                        "read_committed_reads",
                        c.read_committed_reads.load(Ordering::Relaxed),
                    ),
                    kv("idle_timeouts", c.idle_timeouts.load(Ordering::Relaxed)),
                    kv("client_polls", c.client_polls.load(Ordering::Relaxed)),
                    kv("client_poll_hits", c.client_poll_hits.load(Ordering::Relaxed)),
                    kv(
                        "elections",
                        ctx.replication
                            .shards
                            .iter()
                            .map(|l| l.elections.load(Ordering::Relaxed))
                            .sum(),
                    ),
                ],
            })
        }
        "session" => {
            let route = client.last_route.as_ref().map(|l| {
                format!(
                    "{:?} -> {:?} ({:?})",
                    l.classified.kind, l.route.target, l.route.reason
                )
            });
            Ok(Table {
                kinds: Vec::new(),
                columns: vec!["variable", "value"],
                rows: vec![
                    vec![Some("user".into()), Some(session.user.clone())],
                    vec![Some("schema".into()), session.schema.clone()],
                    vec![
                        Some("pinned_by".into()),
                        Some(
                            session
                                .pin_reasons()
                                .iter()
                                .map(|r| r.name())
                                .collect::<Vec<_>>()
                                .join(","),
                        ),
                    ],
                    vec![Some("in_transaction".into()), Some(session.in_transaction.to_string())],
                    // The level the session asked for (its next transaction's first): the
                    // server runs REPEATABLE READ or SERIALIZABLE, and READ COMMITTED's reads
                    // are given where the proxy can (README, Isolation).
                    vec![
                        Some("isolation_asked".into()),
                        Some(
                            session
                                .next_transaction_isolation
                                .or(session.requested_isolation)
                                .map_or("server default", |l| l.name())
                                .to_string(),
                        ),
                    ],
                    vec![Some("last_route".into()), route],
                ],
            })
        }
        "explain last statement" => Ok(explain_last(ctx, client)),
        other if other.starts_with("proxy ") => Err(MysqlError::new(
            1064,
            "42000",
            format!(
                "Unknown proxy command '{}': try PROXY SWITCHOVER, PROXY REBUILD REPLICA, PROXY RELOAD or PROXY RESET QUERIES",
                other.to_uppercase()
            ),
        )),
        other => Err(MysqlError::new(
            1064,
            "42000",
            format!(
                "Unknown proxy command 'SHOW PROXY {}': try SHOW PROXY BACKENDS, PROCESSLIST, PINS, QUERIES, STATUS, SESSION or REPLICATION, or EXPLAIN LAST STATEMENT",
                other.to_uppercase()
            ),
        )),
    }
}

fn backends(ctx: &ProxyContext) -> Table {
    let rows = ctx
        .cluster
        .pools()
        .map(|(shard, replica, pool)| {
            let log = ctx.replication.shards.iter().find(|l| l.shard == shard);
            let (applied, lag, weight) = match log {
                Some(log) => {
                    let applied = if replica == log.leader() {
                        log.primary_low_water()
                    } else {
                        log.replicas
                            .get(replica.0 as usize)
                            .map(|r| r.applied.load(Ordering::Acquire))
                            .unwrap_or(0)
                    };
                    let end = log.last_sequenced();
                    let lag_ms = crate::tso::physical_ms(end)
                        .saturating_sub(crate::tso::physical_ms(applied));
                    (
                        Some(applied.to_string()),
                        Some(lag_ms.to_string()),
                        Some(format!("{:.3}", log.cabinet().weight_of(replica))),
                    )
                }
                None => (None, None, None),
            };
            vec![
                Some(shard.0.to_string()),
                Some(replica.0.to_string()),
                Some(pool.addr.to_string()),
                Some(ctx.cluster.role(shard, replica).to_string()),
                Some(backend_health(ctx, shard, replica, pool.is_up()).to_string()),
                Some(pool.idle_count().to_string()),
                Some(pool.connects.load(Ordering::Relaxed).to_string()),
                Some(pool.connect_failures.load(Ordering::Relaxed).to_string()),
                Some(format!("{:.3}", pool.probe_latency_us() as f64 / 1000.0)),
                Some(format!("{:.3}", pool.latency_ewma_us() as f64 / 1000.0)),
                Some(format!("{:.3}", pool.latency.quantile_ms(0.99))),
                Some(pool.reads.load(Ordering::Relaxed).to_string()),
                applied,
                lag,
                weight,
                Some(pool.down_events.load(Ordering::Relaxed).to_string()),
                Some(pool.uptime_secs().to_string()),
                Some(pool.transport_label()),
            ]
        })
        .collect();
    Table {
        kinds: Vec::new(),
        columns: vec![
            "shard",
            "replica",
            "address",
            "role",
            "health",
            "idle_connections",
            "connects",
            "connect_failures",
            "probe_ms",
            "latency_ewma_ms",
            "latency_p99_ms",
            "reads_served",
            "applied_ts",
            "lag_ms",
            "weight",
            "times_down",
            "uptime_s",
            "transport",
        ],
        rows,
    }
}

/// `EXPLAIN LAST STATEMENT`: where the session's previous statement went and why.
fn explain_last(ctx: &ProxyContext, client: &ClientSession) -> Table {
    use crate::router::{Reason, Target};
    let columns = vec![
        "statement",
        "kind",
        "flags",
        "tables",
        "target",
        "backend",
        "reason",
        "read_consistency",
        "session_last_write_ts",
    ];
    let Some(l) = client.last_route.as_ref() else {
        return Table {
            kinds: Vec::new(),
            columns,
            rows: Vec::new(),
        };
    };
    let (target, backend) = match l.route.target {
        Target::Primary(s, r) | Target::Pinned(s, r) | Target::Replica(s, r) => {
            let kind = match l.route.target {
                Target::Pinned(..) => "pinned connection",
                Target::Replica(..) => "replica read",
                _ => "primary",
            };
            (
                format!(
                    "shard {} replica {} ({kind}, {})",
                    s.0,
                    r.0,
                    ctx.cluster.role(s, r)
                ),
                ctx.cluster.pool(s, r).map(|p| p.addr.to_string()),
            )
        }
        Target::Proxy => ("proxy".to_string(), None),
        Target::Nothing => ("nothing".to_string(), None),
    };
    let reason = match l.route.reason {
        Reason::PrimaryOnly => {
            "a write, a transaction, or a read that must see the primary (locking, \
             LAST_INSERT_ID/FOUND_ROWS, temporary tables, user variables, side effects)"
        }
        Reason::FreshReplica => {
            "a plain autocommit read: the lowest-latency replica fresh enough for \
             the session's read consistency"
        }
        Reason::NoFreshReplica => {
            "a plain autocommit read, but no replica was fresh enough or healthy: \
             the primary served it (counted in primary_fallbacks)"
        }
        Reason::HintPrimary => {
            "a plain autocommit read whose comment asked for the primary (myquorum=primary)"
        }
        Reason::SessionPinned => {
            "the session is pinned to one backend connection (see SHOW PROXY SESSION)"
        }
        Reason::ProxyCommand => "answered by the proxy",
        Reason::EmptyStatement => "nothing to run",
        Reason::NoShards => "no shard is configured",
    };
    let flags: Vec<&str> = l.classified.flags.iter_names().map(|(n, _)| n).collect();
    Table {
        kinds: Vec::new(),
        columns,
        rows: vec![vec![
            Some(l.sql.clone()),
            Some(format!("{:?}", l.classified.kind)),
            Some(flags.join(",")),
            Some(l.classified.tables.join(",")),
            Some(target),
            backend,
            Some(reason.to_string()),
            Some(format!("{:?}", l.consistency).to_lowercase()),
            Some(l.last_write_ts.to_string()),
        ]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{ReplicaId, ShardId};

    #[test]
    fn rebuild_takes_a_replica_an_optional_source_and_shard() {
        let ok = |cmd: &str| parse_rebuild(cmd).map(|r| r.map_err(|e| e.code));
        let req = |shard, replica, from: Option<u32>| {
            Some(Ok(RebuildRequest {
                shard: ShardId(shard),
                replica: ReplicaId(replica),
                from: from.map(ReplicaId),
            }))
        };
        assert_eq!(ok("proxy rebuild replica 2"), req(0, 2, None));
        assert_eq!(ok("proxy rebuild replica 1 shard 3"), req(3, 1, None));
        assert_eq!(ok("proxy rebuild replica 2 from 0"), req(0, 2, Some(0)));
        assert_eq!(
            ok("proxy rebuild replica 2 from 1 shard 4"),
            req(4, 2, Some(1))
        );
        assert_eq!(ok("proxy rebuild"), Some(Err(1064)));
        assert_eq!(ok("proxy rebuild replica x"), Some(Err(1064)));
        assert_eq!(ok("proxy rebuild replica 2 from"), Some(Err(1064)));
        assert_eq!(ok("proxy rebuild shard 1"), Some(Err(1064)));
        assert_eq!(ok("proxy switchover to 1"), None);
    }
}
