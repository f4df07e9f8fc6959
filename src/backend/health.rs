//! Health checks on the control path (mysql_async): every backend is probed periodically;
//! consecutive failures mark it down (closing its pooled connections and telling pinned
//! sessions), a success marks it up again.
//!
//! Owns: the probe loop. May import: backend::pool, mysql_async, tokio-util (cancellation).

use super::pool::BackendPool;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct HealthParams {
    pub user: String,
    pub password: String,
    pub tls: Option<Arc<super::tls::BackendTls>>,
    pub interval: Duration,
    pub failures_to_down: u32,
    pub timeout: Duration,
}

fn opts_for(addr: &str, p: &HealthParams) -> Option<mysql_async::Opts> {
    super::pool::control_opts_for(addr, &p.user, &p.password, p.tls.as_deref())
}

/// The stored functions that may write, read from `mysql.proc` itself. Not from
/// `information_schema.ROUTINES`: MariaDB 10.11 materialises that view in an Aria temporary
/// table, and a query on it abandoned mid-flight (this probe's timeout closing the
/// connection) crashes the server in `ha_maria::drop_table` (reproduced: ~1 in 1000 such
/// disconnects on 10.11.19; the query below survived 2900 of them). Names are compared
/// lowercased; duplicates across databases collapse in the caller's set.
const STORED_FUNCTIONS_QUERY: &str = "SELECT LOWER(name) FROM mysql.proc \
     WHERE type = 'FUNCTION' AND sql_data_access NOT IN ('NO_SQL', 'READS_SQL_DATA')";

/// Probes one backend until cancelled.
pub async fn run_health_checks(pool: Arc<BackendPool>, p: HealthParams, cancel: CancellationToken) {
    let Some(opts) = opts_for(&pool.addr, &p) else {
        tracing::error!(backend = %pool.addr, "backend address is not host:port; health checks disabled");
        return;
    };
    let mut conn: Option<mysql_async::Conn> = None;
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(p.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let probe = async {
            if conn.is_none() {
                conn = Some(mysql_async::Conn::new(opts.clone()).await?);
            }
            match conn.as_mut() {
                Some(c) => {
                    // Keeps an idle replica's latency figure fresh for read routing.
                    let started = std::time::Instant::now();
                    c.query_drop("SELECT 1").await?;
                    pool.record_probe(started.elapsed());
                    // Reads calling one of these go through the log: they may write. Those
                    // declared NO SQL or READS SQL DATA are taken at their word (the
                    // declaration the binlog also trusts), so reads using them scale out.
                    // A failure here is not the server's health: the list stays as it was.
                    let names: Result<Vec<String>, _> = c.query(STORED_FUNCTIONS_QUERY).await;
                    if let Ok(names) = names {
                        pool.set_stored_functions(names.into_iter().collect());
                    }
                    Ok::<(), mysql_async::Error>(())
                }
                None => Ok(()),
            }
        };
        let ok = matches!(tokio::time::timeout(p.timeout, probe).await, Ok(Ok(())));
        // While down, probe less often (up to 4× the interval); back to normal once up.
        let backoff = if ok || failures < p.failures_to_down {
            p.interval
        } else {
            p.interval * (1u32 << (failures - p.failures_to_down).min(2))
        };
        if backoff != ticker.period() {
            ticker = tokio::time::interval_at(tokio::time::Instant::now() + backoff, backoff);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        if ok {
            if failures >= p.failures_to_down || !pool.is_up() {
                tracing::info!(backend = %pool.addr, "backend is answering again; marked up");
            }
            failures = 0;
            pool.mark_up();
        } else {
            conn = None;
            failures += 1;
            if failures == p.failures_to_down {
                tracing::warn!(
                    backend = %pool.addr,
                    failures,
                    "backend failed its health probes; marked down (check that mariadbd is running and reachable)"
                );
                pool.mark_down();
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}
