//! The Prometheus text exposition (`GET /metrics` on `proxy.metrics_listen`): the counters,
//! backend health and replication state the SHOW PROXY statements give, as metric families
//! a scraper and alert rules can use (`myquorum_replica_state{state="quarantined"} == 1`,
//! `myquorum_replica_lag_seconds > 5`, `rate(myquorum_shard_no_quorum_total[5m]) > 0`).
//!
//! Owns: metric names and the text format. May import: context, admin (replica status),
//! backend and replication (read-only counters).

use super::{replica_state, PinReason, ReplicaStatus, PIN_EVENTS};
use crate::context::ProxyContext;
use crate::metrics::LatencyHistogram;
use crate::replication::log::ShardLog;
use crate::router::ReplicaId;
use crate::tso::physical_ms;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Builds the exposition: each family's HELP and TYPE once, then its samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family; `kind` is `counter` or `gauge`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the text format quotes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers bare, fractions to nine decimals without trailing zeros (durations are whole
/// microseconds; `0.000042`, not the `0.000042000000000000004` of a division).
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.9}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The wall-clock distance between two log timestamps, in seconds.
fn ts_distance_seconds(later: u64, earlier: u64) -> f64 {
    physical_ms(later).saturating_sub(physical_ms(earlier)) as f64 / 1000.0
}

pub fn render(ctx: &ProxyContext) -> String {
    let mut e = Exposition::default();
    proxy_counters(ctx, &mut e);
    backends(ctx, &mut e);
    replication(ctx, &mut e);
    e.finish()
}

fn proxy_counters(ctx: &ProxyContext, e: &mut Exposition) {
    let c = &ctx.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    for (name, kind, help, v) in [
        (
            "myquorum_connections_active",
            "gauge",
            "Client sessions open now.",
            load(&c.connections_active),
        ),
        (
            "myquorum_connections_total",
            "counter",
            "Client sessions accepted.",
            load(&c.connections_total),
        ),
        (
            "myquorum_statements_total",
            "counter",
            "Commands received from clients.",
            load(&c.statements),
        ),
        (
            "myquorum_backend_errors_total",
            "counter",
            "Backend connections lost or failed mid-command.",
            load(&c.backend_errors),
        ),
        (
            "myquorum_replica_reads_total",
            "counter",
            "Autocommit reads served by a follower.",
            load(&c.replica_reads),
        ),
        (
            "myquorum_primary_fallbacks_total",
            "counter",
            "Reads that went to the primary because no follower was fresh enough.",
            load(&c.primary_fallbacks),
        ),
        (
            "myquorum_isolation_raised_total",
            "counter",
            "Isolation levels below REPEATABLE READ run as REPEATABLE READ.",
            load(&c.isolation_raised),
        ),
        (
            "myquorum_read_committed_reads_total",
            "counter",
            "Reads of READ COMMITTED transactions run outside the server's transaction, before it began.",
            load(&c.read_committed_reads),
        ),
        (
            "myquorum_client_polls_total",
            "counter",
            "Waits for a client's next command that polled its socket (proxy.busy_poll_us).",
            load(&c.client_polls),
        ),
        (
            "myquorum_client_poll_hits_total",
            "counter",
            "Polled waits whose command arrived while polling (no wake-up paid).",
            load(&c.client_poll_hits),
        ),
        (
            "myquorum_idle_timeouts_total",
            "counter",
            "Client connections closed after sitting idle for their wait_timeout.",
            load(&c.idle_timeouts),
        ),
    ] {
        e.family(name, kind, help);
        e.sample(name, &[], v);
    }
    e.family(
        "myquorum_pins_total",
        "counter",
        "Sessions pinned to one backend connection, by reason.",
    );
    for r in PinReason::ALL.iter() {
        e.sample(
            "myquorum_pins_total",
            &[("reason", r.name())],
            PIN_EVENTS[*r as usize].load(Ordering::Relaxed) as f64,
        );
    }
}

fn backends(ctx: &ProxyContext, e: &mut Exposition) {
    let pools: Vec<_> = ctx.cluster.pools().collect();
    let label = |shard: u32, replica: u32, addr: &str| {
        [
            ("shard", shard.to_string()),
            ("replica", replica.to_string()),
            ("address", addr.to_string()),
        ]
    };
    type Reading = fn(&crate::backend::pool::BackendPool) -> f64;
    let families: [(&str, &str, &str, Reading); 9] = [
        (
            "myquorum_backend_up",
            "gauge",
            "1 while health checks pass.",
            |p| f64::from(u8::from(p.is_up())),
        ),
        (
            "myquorum_backend_idle_connections",
            "gauge",
            "Pooled idle connections.",
            |p| p.idle_count() as f64,
        ),
        (
            "myquorum_backend_connects_total",
            "counter",
            "Connections opened.",
            |p| p.connects.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_backend_connect_failures_total",
            "counter",
            "Connection attempts that failed.",
            |p| p.connect_failures.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_backend_idle_closed_total",
            "counter",
            "Pooled idle connections the server had closed (its wait_timeout, a KILL), dropped at checkout.",
            |p| p.closed_idle.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_backend_probe_seconds",
            "gauge",
            "Last health probe's round trip.",
            |p| p.probe_latency_us() as f64 / 1e6,
        ),
        (
            "myquorum_backend_latency_p99_seconds",
            "gauge",
            "99th percentile of statement latency on this backend.",
            |p| p.latency.quantile_ms(0.99) / 1e3,
        ),
        (
            "myquorum_backend_reads_total",
            "counter",
            "Autocommit reads routed to this backend.",
            |p| p.reads.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_backend_down_events_total",
            "counter",
            "Times health checks marked it down.",
            |p| p.down_events.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, read) in families {
        e.family(name, kind, help);
        for (shard, replica, pool) in &pools {
            let l = label(shard.0, replica.0, &pool.addr);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            e.sample(name, &l, read(pool));
        }
    }
}

fn replication(ctx: &ProxyContext, e: &mut Exposition) {
    let shards = &ctx.replication.shards;
    e.family(
        "myquorum_replica_state",
        "gauge",
        "1 for the replica's current state (primary, applying, rebuilding, quarantined, down).",
    );
    for log in shards {
        for i in 0..log.replicas.len() {
            let state = replica_state(ctx, log, ReplicaId(i as u32));
            let (shard, replica) = (log.shard.0.to_string(), i.to_string());
            for name in ReplicaStatus::NAMES {
                e.sample(
                    "myquorum_replica_state",
                    &[("shard", &shard), ("replica", &replica), ("state", name)],
                    f64::from(u8::from(state.name() == name)),
                );
            }
        }
    }
    e.family(
        "myquorum_replica_lag_seconds",
        "gauge",
        "How far the replica's applied position is behind the end of the log.",
    );
    for log in shards {
        let end = log.last_sequenced();
        for (i, r) in log.replicas.iter().enumerate() {
            let id = ReplicaId(i as u32);
            let applied = if id == log.leader() {
                log.primary_low_water()
            } else {
                r.applied.load(Ordering::Acquire)
            };
            e.sample(
                "myquorum_replica_lag_seconds",
                &[
                    ("shard", &log.shard.0.to_string()),
                    ("replica", &i.to_string()),
                ],
                ts_distance_seconds(end, applied),
            );
        }
    }
    e.family(
        "myquorum_replica_weight",
        "gauge",
        "Cabinet weight of the replica's acknowledgement.",
    );
    for log in shards {
        let cab = log.cabinet();
        for i in 0..log.replicas.len() {
            e.sample(
                "myquorum_replica_weight",
                &[
                    ("shard", &log.shard.0.to_string()),
                    ("replica", &i.to_string()),
                ],
                cab.weight_of(ReplicaId(i as u32)),
            );
        }
    }
    replica_latency(
        e,
        shards,
        "myquorum_replica_receive_seconds",
        "Storing a batch of records in the follower's myquorum.wal (its acknowledgement).",
        |r| &r.receive_latency,
    );
    replica_latency(
        e,
        shards,
        "myquorum_replica_apply_seconds",
        "Applying a batch of records on the follower.",
        |r| &r.apply_latency,
    );
    type ShardReading = fn(&ShardLog) -> f64;
    let shard_families: [(&str, &str, &str, ShardReading); 7] = [
        (
            "myquorum_shard_commits_total",
            "counter",
            "Write transactions acknowledged after the quorum held them.",
            |l| l.counters.commits.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_wal_batches_total",
            "counter",
            "WAL group-commit batches (one fsync each).",
            |l| l.counters.batches.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_no_quorum_total",
            "counter",
            "Commits refused because too little weight was reachable.",
            |l| l.counters.no_quorum.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_certification_conflicts_total",
            "counter",
            "Transactions rolled back because a stored program in them read a table another \
             transaction wrote after their snapshot (retry them).",
            |l| l.counters.conflicts.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_quorum_timeouts_total",
            "counter",
            "Commits that waited commit_timeout_ms for the quorum in vain.",
            |l| l.counters.quorum_timeouts.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_elections_total",
            "counter",
            "Completed elections (failovers and switchovers).",
            |l| l.elections.load(Ordering::Relaxed) as f64,
        ),
        (
            "myquorum_shard_consensus_threshold",
            "gauge",
            "Cabinet weight a commit needs (more than this).",
            |l| l.cabinet().ct(),
        ),
    ];
    for (name, kind, help, read) in shard_families {
        e.family(name, kind, help);
        for log in shards {
            e.sample(name, &[("shard", &log.shard.0.to_string())], read(log));
        }
    }
    e.family(
        "myquorum_shard_primary",
        "gauge",
        "The replica that is the shard's primary.",
    );
    for log in shards {
        e.sample(
            "myquorum_shard_primary",
            &[("shard", &log.shard.0.to_string())],
            f64::from(log.leader().0),
        );
    }
    e.family(
        "myquorum_commit_phase_seconds",
        "gauge",
        "Commit latency by phase: sequence (timestamp, queued on the WAL and sent to the followers), wal_sync (the WAL's write + fsync of a batch, which runs during the quorum wait), quorum (until the Cabinet quorum held it), primary_commit.",
    );
    for log in shards {
        let shard = log.shard.0.to_string();
        for (phase, h) in [
            ("sequence", &log.latency.sequence),
            ("wal_sync", log.wal.sync_latency()),
            ("quorum", &log.latency.quorum),
            ("primary_commit", &log.latency.primary_commit),
        ] {
            for (q, qv) in QUANTILES {
                e.sample(
                    "myquorum_commit_phase_seconds",
                    &[("shard", &shard), ("phase", phase), ("quantile", q)],
                    h.quantile_ms(qv) / 1e3,
                );
            }
        }
    }
}

const QUANTILES: [(&str, f64); 2] = [("0.5", 0.5), ("0.99", 0.99)];

fn replica_latency(
    e: &mut Exposition,
    shards: &[std::sync::Arc<ShardLog>],
    name: &str,
    help: &str,
    pick: fn(&crate::replication::log::ReplicaState) -> &LatencyHistogram,
) {
    e.family(name, "gauge", help);
    for log in shards {
        let shard = log.shard.0.to_string();
        for (i, r) in log.replicas.iter().enumerate() {
            let replica = i.to_string();
            for (q, qv) in QUANTILES {
                e.sample(
                    name,
                    &[("shard", &shard), ("replica", &replica), ("quantile", q)],
                    pick(r).quantile_ms(qv) / 1e3,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once_and_labels_escaped() {
        let mut e = Exposition::default();
        e.family("m_total", "counter", "Things.");
        e.sample("m_total", &[("a", "x\"y\\z\nw")], 3.0);
        e.sample("m_total", &[], 0.25);
        e.sample("m_total", &[], 42.0 / 1e6);
        assert_eq!(
            e.finish(),
            "# HELP m_total Things.\n# TYPE m_total counter\n\
             m_total{a=\"x\\\"y\\\\z\\nw\"} 3\nm_total 0.25\nm_total 0.000042\n"
        );
    }

    #[test]
    fn log_timestamp_distances_are_seconds() {
        // 1500 ms apart, plus sub-millisecond counter bits that do not count.
        assert_eq!(ts_distance_seconds((2500 << 19) | 7, 1000 << 19), 1.5);
        assert_eq!(ts_distance_seconds(1, 5), 0.0);
    }
}
