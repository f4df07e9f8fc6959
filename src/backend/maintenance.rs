//! Maintenance that MariaDB's own replication carries to every replica: ANALYZE, OPTIMIZE
//! and REPAIR TABLE and FLUSH PRIVILEGES are written to the binlog (unless LOCAL or
//! NO_WRITE_TO_BINLOG), so a replica runs them after its primary. Through the proxy they
//! ran on one server: the followers, which serve most reads, planned them without the
//! statistics (histograms of `ANALYZE … PERSISTENT FOR`) the DBA had just collected. They
//! change no data, so they need no place in the log: once the statement succeeded where
//! the session ran it, the other replicas run it in the background, each on a control
//! connection, and a failure is logged with what to do.
//!
//! Owns: running such a statement on other replicas. May import: backend::pool,
//! mysql_async.

use super::pool::BackendPool;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::sync::Arc;

/// Runs `sql` (with `schema` as the default database) on each of `pools` that is up, in
/// background tasks; the answers are logged.
pub fn run_on_replicas(pools: Vec<Arc<BackendPool>>, schema: Option<String>, sql: &str) {
    for pool in pools.into_iter().filter(|p| p.is_up()) {
        let (schema, sql) = (schema.clone(), sql.to_string());
        tokio::spawn(async move {
            match run(&pool, schema, &sql).await {
                Ok(()) => tracing::info!(backend = %pool.addr, sql, "maintenance ran on a replica"),
                Err(e) => tracing::warn!(backend = %pool.addr, sql, error = %e,
                    "maintenance did not run on this replica (it ran where the client sent it); \
                     run it on the replica directly"),
            }
        });
    }
}

async fn run(pool: &BackendPool, schema: Option<String>, sql: &str) -> Result<(), String> {
    let opts = pool
        .control_opts()
        .ok_or_else(|| format!("backend address {} is not host:port", pool.addr))?;
    let mut conn = Conn::new(OptsBuilder::from_opts(opts).db_name(schema))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // ANALYZE/OPTIMIZE/REPAIR answer a row per table; a failed one says so in Msg_type.
    let rows: Vec<Row> = conn.query(sql).await.map_err(|e| e.to_string())?;
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.get_opt::<String, _>("Msg_type")
                .and_then(Result::ok)
                .is_some_and(|t| t.eq_ignore_ascii_case("error"))
        })
        .map(|r| {
            let text = |c: &str| r.get_opt::<String, _>(c).and_then(Result::ok);
            format!(
                "{}: {}",
                text("Table").unwrap_or_default(),
                text("Msg_text").unwrap_or_default()
            )
        })
        .collect();
    let _ = conn.disconnect().await;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}
