//! Statements the proxy answers itself: `SHOW PROXY BACKENDS`, `SHOW PROXY PINS`,
//! `SHOW PROXY STATUS`, `SHOW PROXY SESSION`, `EXPLAIN LAST STATEMENT` (later).
//!
//! Owns: the content of proxy-answered result sets. May import: context, session, backend
//! (read-only counters).

use crate::context::ProxyContext;
use crate::frontend::ClientSession;
use crate::protocol::MysqlError;
use crate::session::{PinReason, SessionState, PIN_EVENTS};
use std::sync::atomic::Ordering;

/// A result set built by the proxy.
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

pub fn answer(
    ctx: &ProxyContext,
    command: &str,
    session: &SessionState,
    client: &ClientSession,
) -> Result<Table, MysqlError> {
    match command {
        "backends" => Ok(backends(ctx)),
        "pins" => Ok(Table {
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
        "status" => {
            let c = &ctx.counters;
            let kv = |k: &str, v: u64| vec![Some(k.to_string()), Some(v.to_string())];
            Ok(Table {
                columns: vec!["variable", "value"],
                rows: vec![
                    kv("connections_active", c.connections_active.load(Ordering::Relaxed)),
                    kv("connections_total", c.connections_total.load(Ordering::Relaxed)),
                    kv("statements", c.statements.load(Ordering::Relaxed)),
                    kv("backend_errors", c.backend_errors.load(Ordering::Relaxed)),
                ],
            })
        }
        "session" => {
            let route = client
                .last_route
                .as_ref()
                .map(|(c, r)| format!("{:?} -> {:?} ({:?})", c.kind, r.target, r.reason));
            Ok(Table {
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
                    vec![Some("last_route".into()), route],
                ],
            })
        }
        other => Err(MysqlError::new(
            1064,
            "42000",
            format!(
                "Unknown proxy command 'SHOW PROXY {}': try SHOW PROXY BACKENDS, PINS, STATUS or SESSION",
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
            vec![
                Some(shard.0.to_string()),
                Some(replica.0.to_string()),
                Some(pool.addr.to_string()),
                Some(ctx.cluster.role(shard, replica).to_string()),
                Some(if pool.is_up() { "up" } else { "down" }.to_string()),
                Some(pool.idle_count().to_string()),
                Some(pool.connects.load(Ordering::Relaxed).to_string()),
                Some(pool.connect_failures.load(Ordering::Relaxed).to_string()),
            ]
        })
        .collect();
    Table {
        columns: vec![
            "shard",
            "replica",
            "address",
            "role",
            "health",
            "idle_connections",
            "connects",
            "connect_failures",
        ],
        rows,
    }
}
