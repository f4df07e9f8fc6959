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
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Holds one row per checksum run on every replica. Created with `myquorum.wal`.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS myquorum.checksums (\
    run BIGINT UNSIGNED NOT NULL PRIMARY KEY, db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, \
    row_count BIGINT UNSIGNED NOT NULL, crc BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB";

/// A table's checksum on one replica: the sum over its chunks, and each chunk's
/// (rows, checksum) by chunk number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSum {
    pub rows: u64,
    pub crc: u64,
    pub chunks: BTreeMap<u32, (u64, u64)>,
}

/// One replica's answer.
pub struct ReplicaChecksum {
    pub replica: ReplicaId,
    pub address: String,
    pub primary: bool,
    /// The sums, or why the replica has none.
    pub result: Result<TableSum, String>,
}

/// Reads the `chunks` runs from `base` (the last logged at `ts`) from every replica of the
/// shard, waiting up to `wait` for followers to apply them.
pub async fn collect(
    log: &Arc<ShardLog>,
    cluster: &Cluster,
    base: u64,
    chunks: u32,
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
                // The primary committed the runs before the client heard; a follower may
                // still be applying them.
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
                    read_runs(pool, base, chunks).await
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

async fn read_runs(
    pool: &Arc<crate::backend::BackendPool>,
    base: u64,
    chunks: u32,
) -> Result<TableSum, String> {
    let mut conn = connect(pool)
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let last = base + u64::from(chunks.max(1)) - 1;
    let range = format!("run BETWEEN {base} AND {last}");
    // One row however many chunks: "chunk:rows:crc" joined.
    let _ = conn
        .execute("SET SESSION group_concat_max_len = 1073741824")
        .await;
    let row = conn
        .query_row(&format!(
            "SELECT GROUP_CONCAT(CONCAT(run - {base}, ':', row_count, ':', crc) ORDER BY run) \
             FROM myquorum.checksums WHERE {range}"
        ))
        .await
        .map_err(|e| format!("connection lost: {e}"))?
        .map_err(|e| format!("cannot read myquorum.checksums: {e}"))?;
    // The rows only carried the answer: they go, directly (not a replicated change).
    let _ = conn
        .execute(&format!("DELETE FROM myquorum.checksums WHERE {range}"))
        .await;
    let listed = row.and_then(|r| r.into_iter().next().flatten());
    let Some(listed) = listed else {
        return Err("no checksum row: the run did not reach this replica".to_string());
    };
    parse_chunks(&listed).ok_or_else(|| "unreadable checksum rows".to_string())
}

/// "chunk:rows:crc,…" into the table's sums.
fn parse_chunks(listed: &str) -> Option<TableSum> {
    let mut sum = TableSum {
        rows: 0,
        crc: 0,
        chunks: BTreeMap::new(),
    };
    for entry in listed.split(',') {
        let mut parts = entry.split(':').map(str::parse::<u64>);
        let (Some(Ok(chunk)), Some(Ok(rows)), Some(Ok(crc)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        sum.rows += rows;
        sum.crc ^= crc;
        sum.chunks.insert(u32::try_from(chunk).ok()?, (rows, crc));
    }
    Some(sum)
}

/// The chunks in which `replica` differs from `primary` (missing on either side included).
pub fn differing_chunks(primary: &TableSum, replica: &TableSum) -> Vec<u32> {
    let mut keys: Vec<u32> = primary
        .chunks
        .keys()
        .chain(replica.chunks.keys())
        .copied()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| primary.chunks.get(k) != replica.chunks.get(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lists_parse_and_compare() {
        let p = parse_chunks("0:5000:17,1:5000:9,2:12:4").unwrap();
        assert_eq!((p.rows, p.crc), (10_012, 17 ^ 9 ^ 4));
        let r = parse_chunks("0:5000:17,1:5000:8,3:1:1").unwrap();
        assert_eq!(differing_chunks(&p, &r), vec![1, 2, 3]);
        assert_eq!(differing_chunks(&p, &p), Vec::<u32>::new());
        assert_eq!(parse_chunks("0:1"), None);
        assert_eq!(parse_chunks("x:1:2"), None);
    }
}
