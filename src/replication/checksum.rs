//! Reading a table checksum back from every replica of a shard. The checksum itself is a
//! write through the log (`INSERT INTO myquorum.checksums … SELECT COUNT(*), BIT_XOR(CRC32(…))
//! FROM t`), so each replica computes it at the same point of the log, as pt-table-checksum
//! does over statement-based replication; this module waits until each follower applied it,
//! reads each replica's row and removes it.
//!
//! Owns: per-replica checksum results. May import: backend (pools), replication::{log,
//! applier}, router ids.

use super::applier::connect;
use super::log::ShardLog;
use crate::backend::Cluster;
use crate::router::ReplicaId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Holds one row per checksum run on every replica. Created with `myquorum.wal`.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS myquorum.checksums (\
    run BIGINT UNSIGNED NOT NULL PRIMARY KEY, db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, \
    row_count BIGINT UNSIGNED NOT NULL, crc BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB";

/// One replica's answer.
pub struct ReplicaChecksum {
    pub replica: ReplicaId,
    pub address: String,
    pub primary: bool,
    /// (rows, checksum), or why the replica has none.
    pub result: Result<(u64, u64), String>,
}

/// Reads run `run` (logged at `ts`) from every replica of the shard, waiting up to `wait`
/// for followers to apply it.
pub async fn collect(
    log: &Arc<ShardLog>,
    cluster: &Cluster,
    run: u64,
    ts: u64,
    wait: Duration,
) -> Vec<ReplicaChecksum> {
    let leader = log.leader();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    for (i, state) in log.replicas.iter().enumerate() {
        let replica = ReplicaId(i as u32);
        let address = cluster
            .pool(log.shard, replica)
            .map(|p| p.addr.to_string())
            .unwrap_or_default();
        let primary = replica == leader;
        let quarantined = state.quarantined.lock().clone();
        let result = match (quarantined, cluster.pool(log.shard, replica)) {
            (Some(why), _) => Err(format!("quarantined: {why}")),
            (None, None) => Err("no such backend".to_string()),
            (None, Some(pool)) => {
                // The primary committed the run before the client heard; a follower may
                // still be applying it.
                while !primary
                    && state.applied.load(Ordering::Acquire) < ts
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let applied = state.applied.load(Ordering::Acquire);
                if !primary && applied < ts {
                    Err(format!(
                        "not compared: has not applied the checksum yet (applied {applied}, \
                         checksum at {ts}); run it again when SHOW PROXY REPLICATION shows \
                         it caught up"
                    ))
                } else {
                    read_row(pool, run).await
                }
            }
        };
        out.push(ReplicaChecksum {
            replica,
            address,
            primary,
            result,
        });
    }
    out
}

async fn read_row(pool: &Arc<crate::backend::BackendPool>, run: u64) -> Result<(u64, u64), String> {
    let mut conn = connect(pool)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let row = conn
        .query_row(&format!(
            "SELECT row_count, crc FROM myquorum.checksums WHERE run = {run}"
        ))
        .await
        .map_err(|e| format!("connection lost: {e}"))?
        .map_err(|e| format!("cannot read myquorum.checksums: {e}"))?;
    // The row only carried the answer: it goes, directly (not a replicated change).
    let _ = conn
        .execute(&format!("DELETE FROM myquorum.checksums WHERE run = {run}"))
        .await;
    let value = |row: &[Option<String>], i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match row {
        Some(row) => match (value(&row, 0), value(&row, 1)) {
            (Some(rows), Some(crc)) => Ok((rows, crc)),
            _ => Err("unreadable checksum row".to_string()),
        },
        None => Err("no checksum row: the run did not reach this replica".to_string()),
    }
}
