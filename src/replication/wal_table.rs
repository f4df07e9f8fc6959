//! The SQL of every replica's copy of the log, `myquorum.wal`: its tables, storing records
//! (as received, or as applied), marking them applied, reading one back and trimming.
//!
//! A record is one row of `myquorum.wal`. Rows travel hex-encoded inside one statement, so a
//! statement carries at most `chunk` payload bytes (half the server's `max_allowed_packet`,
//! less room for the statement's text). A larger record (a bulk load in one transaction)
//! keeps its first `chunk` bytes in its `myquorum.wal` row, whose `parts` column counts the
//! rest: numbered rows of `myquorum.wal_part`, stored by separate statements in the same
//! transaction, so a record is never half there.
//!
//! Owns: the text of those statements, and which of the myquorum schema's are missing on a
//! replica. May import: router (ShardId), replication::checksum (its table's DDL).

use crate::router::ShardId;
use std::collections::VecDeque;

pub const CREATE_SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS myquorum";
/// `applied` is 0 while a follower only holds a record (it counts for the quorum) and 1 once
/// the record's statements ran there (2: a DDL record's statement was started, see
/// `mark_started`); `parts` counts its `myquorum.wal_part` rows.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS myquorum.wal (\
    shard INT UNSIGNED NOT NULL, ts BIGINT UNSIGNED NOT NULL, payload LONGBLOB NOT NULL, \
    applied TINYINT NOT NULL DEFAULT 1, parts INT UNSIGNED NOT NULL DEFAULT 0, \
    PRIMARY KEY (shard, ts)) ENGINE=InnoDB";
/// Tables created by myquorum before the received/applied split.
pub const ADD_APPLIED: &str =
    "ALTER TABLE myquorum.wal ADD COLUMN IF NOT EXISTS applied TINYINT NOT NULL DEFAULT 1";
/// Tables created by myquorum before records could span several rows.
pub const ADD_PARTS: &str =
    "ALTER TABLE myquorum.wal ADD COLUMN IF NOT EXISTS parts INT UNSIGNED NOT NULL DEFAULT 0";
/// The continuation rows of records larger than one statement carries (`part` from 1).
pub const CREATE_PART_TABLE: &str = "CREATE TABLE IF NOT EXISTS myquorum.wal_part (\
    shard INT UNSIGNED NOT NULL, ts BIGINT UNSIGNED NOT NULL, part INT UNSIGNED NOT NULL, \
    payload LONGBLOB NOT NULL, PRIMARY KEY (shard, ts, part)) ENGINE=InnoDB";

/// One row, one value: `table.column` of every column in the myquorum schema, comma-separated.
pub const EXISTING_COLUMNS: &str = "SELECT GROUP_CONCAT(LOWER(CONCAT(table_name, '.', \
    column_name)) SEPARATOR ',') FROM information_schema.columns WHERE table_schema = 'myquorum'";

/// The statements that bring the myquorum schema (the log tables and the checksum table) up
/// to date, given `existing` as `EXISTING_COLUMNS` reads it.
pub fn missing_schema(existing: &str) -> Vec<&'static str> {
    let has = |column: &str| existing.split(',').any(|c| c == column);
    let mut todo = Vec::new();
    if !has("wal.shard") {
        todo.push(CREATE_TABLE);
    } else {
        if !has("wal.applied") {
            todo.push(ADD_APPLIED);
        }
        if !has("wal.parts") {
            todo.push(ADD_PARTS);
        }
    }
    if !has("wal_part.shard") {
        todo.push(CREATE_PART_TABLE);
    }
    if !has("checksums.run") {
        todo.push(super::checksum::CREATE_TABLE);
    }
    if !todo.is_empty() {
        todo.insert(0, CREATE_SCHEMA);
    }
    todo
}

fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(data.len() * 2);
    for b in data {
        out.extend_from_slice(&[DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]);
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses a `HEX(payload)` column.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The statements that store records in a replica's `myquorum.wal`, made one at a time (a
/// bulk load's record is hundreds of megabytes; its hex is made a chunk at a time): as
/// received (`applied` false: durable, not yet executed; rows already there are left
/// alone) or as applied (`applied` true: in the apply transaction, whether or not the row
/// was received first). Several records share a statement while their payloads fit in one
/// chunk. More than one statement must run in one transaction (`len`).
pub struct WalRows<'a> {
    shard: ShardId,
    records: Vec<(u64, &'a [u8])>,
    applied: bool,
    chunk: usize,
    /// The first record whose row is not made yet.
    next: usize,
    /// Continuation rows still to make: (record, part).
    parts: VecDeque<(usize, u32)>,
}

impl<'a> WalRows<'a> {
    pub fn new(
        shard: ShardId,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
        applied: bool,
        chunk: usize,
    ) -> Self {
        WalRows {
            shard,
            records: records.into_iter().collect(),
            applied,
            chunk: chunk.max(1),
            next: 0,
            parts: VecDeque::new(),
        }
    }

    /// How many statements the rows take in all.
    pub fn len(&self) -> usize {
        let mut n = 0;
        let mut at = 0;
        while at < self.records.len() {
            let end = self.group_end(at);
            n += 1 + self.records[at..end]
                .iter()
                .map(|(_, p)| parts_of(p.len(), self.chunk) as usize)
                .sum::<usize>();
            at = end;
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The end of the records whose rows share one statement with record `start`'s: their
    /// heads fit in one chunk together (a record's head is at most a chunk).
    fn group_end(&self, start: usize) -> usize {
        let mut bytes = 0;
        let mut end = start;
        while end < self.records.len() {
            bytes += self.records[end].1.len().min(self.chunk);
            if end > start && bytes > self.chunk {
                break;
            }
            end += 1;
        }
        end
    }

    fn heads(&mut self) -> String {
        let start = self.next;
        let end = self.group_end(start);
        self.next = end;
        let split = self.records[start..end]
            .iter()
            .any(|(_, p)| p.len() > self.chunk);
        let mut q = String::from(if self.applied {
            "INSERT INTO myquorum.wal (shard, ts, payload, applied"
        } else {
            "INSERT IGNORE INTO myquorum.wal (shard, ts, payload, applied"
        });
        // Records that fit one row keep the statement of tables without `parts`.
        q.push_str(if split {
            ", parts) VALUES "
        } else {
            ") VALUES "
        });
        for (i, &(ts, payload)) in self.records[start..end].iter().enumerate() {
            if i > 0 {
                q.push(',');
            }
            let head = &payload[..payload.len().min(self.chunk)];
            q.push_str(&format!(
                "({}, {ts}, x'{}', {}",
                self.shard.0,
                hex(head),
                u8::from(self.applied)
            ));
            if split {
                let parts = parts_of(payload.len(), self.chunk);
                q.push_str(&format!(", {parts}"));
                self.parts.extend((1..=parts).map(|p| (start + i, p)));
            }
            q.push(')');
        }
        if self.applied {
            q.push_str(" ON DUPLICATE KEY UPDATE applied = 1");
        }
        q
    }

    fn part(&self, record: usize, part: u32) -> String {
        let (ts, payload) = self.records[record];
        let from = part as usize * self.chunk;
        let bytes = &payload[from..payload.len().min(from + self.chunk)];
        // Same bytes for the same record wherever it is stored: already there is fine.
        format!(
            "INSERT IGNORE INTO myquorum.wal_part (shard, ts, part, payload) VALUES ({}, {ts}, {part}, x'{}')",
            self.shard.0,
            hex(bytes)
        )
    }
}

impl Iterator for WalRows<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some((record, part)) = self.parts.pop_front() {
            return Some(self.part(record, part));
        }
        (self.next < self.records.len()).then(|| self.heads())
    }
}

/// Continuation rows of a record of `len` bytes.
fn parts_of(len: usize, chunk: usize) -> u32 {
    (len.saturating_sub(1) / chunk.max(1)) as u32
}

/// Marks records this replica already holds as applied, without sending their payloads
/// again (a record's row is as large as its statements: a 20 MB BLOB insert is 40 MB of hex).
/// It changes one row per held record (held, or a DDL started: `mark_started`); fewer means
/// some were never received here (recovery re-applying on a former primary), and `WalRows`
/// as applied then stores them.
pub fn mark_applied(shard: ShardId, ts: impl IntoIterator<Item = u64>) -> String {
    let list: Vec<String> = ts.into_iter().map(|t| t.to_string()).collect();
    format!(
        "UPDATE myquorum.wal SET applied = 1 WHERE shard = {} AND applied <> 1 AND ts IN ({})",
        shard.0,
        list.join(",")
    )
}

/// `applied` of a DDL record whose statement a follower started: a DDL commits by itself,
/// before the record is marked applied, so after a lost connection this says it may have
/// run (`Replayer` then takes "already exists" errors of its second run for its first).
pub const STARTED: &str = "2";

/// Marks held DDL record `ts` as started, in its own transaction, before its DDL runs.
pub fn mark_started(shard: ShardId, ts: u64) -> String {
    format!(
        "UPDATE myquorum.wal SET applied = {STARTED} WHERE shard = {} AND ts = {ts} AND applied = 0",
        shard.0
    )
}

/// The `applied` column of record `ts` (no row: not held here).
pub fn select_applied(shard: ShardId, ts: u64) -> String {
    format!(
        "SELECT applied FROM myquorum.wal WHERE shard = {} AND ts = {ts}",
        shard.0
    )
}

/// The first record above `after`: its ts, hex payload head and number of parts.
pub fn select_record_above(shard: ShardId, after: u64) -> String {
    format!(
        "SELECT ts, HEX(payload), parts FROM myquorum.wal WHERE shard = {} AND ts > {after} \
         ORDER BY ts LIMIT 1",
        shard.0
    )
}

/// One continuation row of record `ts`, hex-encoded.
pub fn select_part(shard: ShardId, ts: u64, part: u32) -> String {
    format!(
        "SELECT HEX(payload) FROM myquorum.wal_part WHERE shard = {} AND ts = {ts} AND part = {part}",
        shard.0
    )
}

/// Deletes rows of records below `keep_from`, a bounded number per statement so that each
/// holds its locks briefly and gives up quickly behind a writer.
pub fn trim(shard: ShardId, keep_from: u64) -> [String; 2] {
    ["wal", "wal_part"].map(|table| {
        format!(
            "SET STATEMENT lock_wait_timeout = 1, innodb_lock_wait_timeout = 1 FOR \
             DELETE FROM myquorum.{table} WHERE shard = {} AND ts < {keep_from} ORDER BY ts LIMIT 20000",
            shard.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_schema_is_created() {
        let complete = "wal.shard,wal.ts,wal.payload,wal.applied,wal.parts,wal_part.shard,\
                        wal_part.ts,wal_part.part,wal_part.payload,checksums.run,checksums.db";
        assert!(missing_schema(complete).is_empty());
        assert_eq!(
            missing_schema(""),
            vec![
                CREATE_SCHEMA,
                CREATE_TABLE,
                CREATE_PART_TABLE,
                super::super::checksum::CREATE_TABLE
            ]
        );
        // A log table from before the received/applied split and multi-row records.
        assert_eq!(
            missing_schema("wal.shard,wal.ts,wal.payload,checksums.run"),
            vec![CREATE_SCHEMA, ADD_APPLIED, ADD_PARTS, CREATE_PART_TABLE]
        );
    }

    #[test]
    fn records_that_fit_share_one_statement() {
        let recs = [(7u64, &[0xABu8][..]), (9, &[0x01, 0x02][..])];
        let received = WalRows::new(ShardId(2), recs, false, 1024);
        assert_eq!(received.len(), 1);
        assert_eq!(
            received.collect::<Vec<_>>(),
            [
                "INSERT IGNORE INTO myquorum.wal (shard, ts, payload, applied) VALUES \
              (2, 7, x'ab', 0),(2, 9, x'0102', 0)"
            ]
        );
        assert_eq!(
            WalRows::new(ShardId(2), recs, true, 1024).collect::<Vec<_>>(),
            [
                "INSERT INTO myquorum.wal (shard, ts, payload, applied) VALUES \
              (2, 7, x'ab', 1),(2, 9, x'0102', 1) ON DUPLICATE KEY UPDATE applied = 1"
            ]
        );
        assert_eq!(
            WalRows::new(ShardId(0), [(5, &b""[..])], true, 1024).collect::<Vec<_>>(),
            [
                "INSERT INTO myquorum.wal (shard, ts, payload, applied) VALUES (0, 5, x'', 1) \
              ON DUPLICATE KEY UPDATE applied = 1"
            ]
        );
        // Held records are marked without their payloads; only rows not applied yet (held,
        // or a DDL started) count, so a missing row shows as fewer rows changed.
        assert_eq!(
            mark_applied(ShardId(2), [7, 9]),
            "UPDATE myquorum.wal SET applied = 1 WHERE shard = 2 AND applied <> 1 AND ts IN (7,9)"
        );
    }

    #[test]
    fn records_larger_than_a_chunk_continue_in_numbered_parts() {
        let big: Vec<u8> = (0u8..10).collect();
        let recs = [(3u64, &[0xEEu8][..]), (4, &big[..]), (5, &[0xFF][..])];
        let rows = WalRows::new(ShardId(1), recs, false, 4);
        assert_eq!(rows.len(), 5);
        let all: Vec<String> = rows.collect();
        assert_eq!(
            all,
            [
                // Record 4's head (a full chunk) does not fit beside record 3's row.
                "INSERT IGNORE INTO myquorum.wal (shard, ts, payload, applied) VALUES (1, 3, x'ee', 0)",
                "INSERT IGNORE INTO myquorum.wal (shard, ts, payload, applied, parts) VALUES \
                 (1, 4, x'00010203', 0, 2)",
                "INSERT IGNORE INTO myquorum.wal_part (shard, ts, part, payload) VALUES (1, 4, 1, x'04050607')",
                "INSERT IGNORE INTO myquorum.wal_part (shard, ts, part, payload) VALUES (1, 4, 2, x'0809')",
                "INSERT IGNORE INTO myquorum.wal (shard, ts, payload, applied) VALUES (1, 5, x'ff', 0)",
            ]
        );
        // As applied, a record already received is only marked.
        let applied: Vec<String> = WalRows::new(ShardId(1), [(4, &big[..])], true, 4).collect();
        assert_eq!(
            applied[0],
            "INSERT INTO myquorum.wal (shard, ts, payload, applied, parts) VALUES \
             (1, 4, x'00010203', 1, 2) ON DUPLICATE KEY UPDATE applied = 1"
        );
        assert_eq!(applied.len(), 3);
    }

    #[test]
    fn part_counts() {
        assert_eq!(parts_of(0, 4), 0);
        assert_eq!(parts_of(4, 4), 0);
        assert_eq!(parts_of(5, 4), 1);
        assert_eq!(parts_of(12, 4), 2);
        assert_eq!(parts_of(13, 4), 3);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xAB, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10"), Some(vec![0, 0xAB, 0x10]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
