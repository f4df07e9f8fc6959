//! The per-shard write-ahead log: segment files of records framed with length + CRC32C,
//! written by one writer thread with group commit (one `sync_data` per batch). An append
//! resolves only when its record is durable. Opening a log verifies every record and cuts a
//! torn or corrupt tail of the last segment; segments wholly below the lowest timestamp every
//! replica has applied are deleted.
//!
//! Frame: `len: u32 LE` (of what follows the CRC) · `crc32c: u32 LE` · `ts: u64 LE` · payload.
//! Segment files are named by their first timestamp (`{ts:020}.seg`), so name order is log
//! order.
//!
//! Durability: `append` resolves Ok only after `sync_data` returned for the batch holding the
//! record. Cancellation: dropping an append future does not withdraw the record (it may still
//! become durable); callers treat a dropped append as "outcome unknown".
//!
//! Owns: files under the shard's WAL directory. May import: std, tokio (channels only).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

const HEADER: usize = 8;
const TS_LEN: usize = 8;
/// A record larger than this is corruption, not data.
pub const MAX_RECORD: usize = 1 << 30;
/// Roll to a new segment past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Records taken into one batch at most (one write + one sync).
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    pub ts: u64,
    pub payload: Vec<u8>,
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<WalRecord>,
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
}

/// Counters of the writer (group-commit figures).
#[derive(Debug, Default, Clone, Copy)]
pub struct WalStats {
    pub records: u64,
    pub batches: u64,
    pub syncs: u64,
    pub max_batch: u64,
}

enum Request {
    Append {
        records: Vec<WalRecord>,
        done: oneshot::Sender<io::Result<()>>,
    },
    TruncateBelow {
        ts: u64,
        done: oneshot::Sender<io::Result<usize>>,
    },
    Stats(oneshot::Sender<WalStats>),
}

/// Handle to a shard's log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::UnboundedSender<Request>,
    dir: PathBuf,
}

fn crc_of(ts: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&ts.to_le_bytes()), payload)
}

/// Appends one framed record to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, ts: u64, payload: &[u8]) {
    let len = (TS_LEN + payload.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc_of(ts, payload).to_le_bytes());
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Decodes frames from `data`: the records and the length of the valid prefix. Stops at
/// the first short, oversized or CRC-failing frame.
pub fn decode_frames(data: &[u8]) -> (Vec<WalRecord>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if !(TS_LEN..=MAX_RECORD).contains(&len) || data.len() - pos - HEADER < len {
            break;
        }
        let body = &data[pos + HEADER..pos + HEADER + len];
        let mut ts_bytes = [0u8; 8];
        ts_bytes.copy_from_slice(&body[..TS_LEN]);
        let ts = u64::from_le_bytes(ts_bytes);
        let payload = &body[TS_LEN..];
        if crc_of(ts, payload) != crc {
            break;
        }
        out.push(WalRecord {
            ts,
            payload: payload.to_vec(),
        });
        pos += HEADER + len;
    }
    (out, pos)
}

fn segment_name(first_ts: u64) -> String {
    format!("{first_ts:020}.seg")
}

/// Segment files of `dir` with their first timestamps, in log order.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let ts = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(ts) = ts {
            segs.push((ts, path));
        }
    }
    segs.sort();
    Ok(segs)
}

/// File in the log's directory holding the truncation floor (see `trimmed_floor`).
const TRIMMED_FILE: &str = "trimmed_below";

/// Every record the log deleted is at or below this timestamp (0: none was ever deleted).
/// A replica whose last applied record is older cannot be caught up from the log: records
/// it lacks may be gone. Deletion only happens below what every counted replica applied.
pub fn trimmed_floor(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(TRIMMED_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads every record with ts > `after` (at most `limit`) from the segments on disk. A
/// partly written frame at the end of the active segment reads as the end of the log.
pub fn read_after(dir: &Path, after: u64, limit: usize) -> io::Result<Vec<WalRecord>> {
    let segs = segments(dir)?;
    let mut out = Vec::new();
    for (i, (_, path)) in segs.iter().enumerate() {
        // Skip segments that end before `after`: the next one starts at or below it.
        if let Some((next_first, _)) = segs.get(i + 1) {
            if *next_first <= after.saturating_add(1) {
                continue;
            }
        }
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        let (records, _) = decode_frames(&data);
        for r in records {
            if r.ts > after {
                out.push(r);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens (or creates) the log in `dir`, verifies it, cuts a torn tail, and starts the
    /// writer thread. Corruption before the last segment's tail is an error: the operator
    /// must decide (the replicas' `myquorum.wal` tables hold copies).
    pub fn open(dir: &Path) -> io::Result<(Wal, Recovered)> {
        Self::open_sized(dir, SEGMENT_BYTES)
    }

    /// `open` with a chosen segment size (tests use small segments).
    pub fn open_sized(dir: &Path, segment_bytes: u64) -> io::Result<(Wal, Recovered)> {
        fs::create_dir_all(dir)?;
        let segs = segments(dir)?;
        let mut recovered = Recovered::default();
        let mut last_ts = 0u64;
        let mut active: Option<(PathBuf, u64)> = None;
        for (i, (first, path)) in segs.iter().enumerate() {
            let mut data = Vec::new();
            File::open(path)?.read_to_end(&mut data)?;
            let (records, valid) = decode_frames(&data);
            let is_last = i + 1 == segs.len();
            if valid < data.len() {
                if !is_last {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "WAL segment {} is corrupt at byte {valid} and is not the last segment; \
                             restore it from a replica's myquorum.wal table or move the directory aside",
                            path.display()
                        ),
                    ));
                }
                let cut = (data.len() - valid) as u64;
                tracing::warn!(segment = %path.display(), at = valid, bytes = cut,
                    "cutting a torn or corrupt WAL tail");
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
                recovered.truncated_bytes += cut;
            }
            for r in records {
                if r.ts <= last_ts || r.ts < *first {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "WAL segment {} holds timestamp {} out of order (after {last_ts}); move the directory aside",
                            path.display(),
                            r.ts
                        ),
                    ));
                }
                last_ts = r.ts;
                recovered.records.push(r);
            }
            if is_last {
                active = Some((path.clone(), valid as u64));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            active: None,
            active_len: 0,
            active_path: active.as_ref().map(|(p, _)| p.clone()),
            reopen_len: active.map(|(_, l)| l),
            segment_bytes,
            stats: WalStats::default(),
        };
        std::thread::Builder::new()
            .name(format!("wal-writer:{}", dir.display()))
            .spawn(move || writer.run(rx))?;
        Ok((
            Wal {
                tx,
                dir: dir.to_path_buf(),
            },
            recovered,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues records (ts strictly increasing and above everything appended before) and
    /// returns a receiver that resolves once they are durable.
    pub fn append_batch(&self, records: Vec<WalRecord>) -> oneshot::Receiver<io::Result<()>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Request::Append { done, .. })) =
            self.tx.send(Request::Append { records, done })
        {
            let _ = done.send(Err(writer_gone()));
        }
        rx
    }

    /// Appends one record and waits until it is durable.
    pub async fn append(&self, ts: u64, payload: Vec<u8>) -> io::Result<()> {
        self.append_batch(vec![WalRecord { ts, payload }])
            .await
            .unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Deletes segments whose records are all below `ts`. Returns how many were deleted.
    pub async fn truncate_below(&self, ts: u64) -> io::Result<usize> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::TruncateBelow { ts, done })
            .map_err(|_| writer_gone())?;
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    pub async fn stats(&self) -> WalStats {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Stats(done)).is_err() {
            return WalStats::default();
        }
        rx.await.unwrap_or_default()
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the WAL writer stopped (an earlier write failed); restart the proxy")
}

struct Writer {
    dir: PathBuf,
    active: Option<File>,
    active_len: u64,
    active_path: Option<PathBuf>,
    /// Length to reopen the last segment at (after recovery).
    reopen_len: Option<u64>,
    segment_bytes: u64,
    stats: WalStats,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut appends: Vec<(Vec<WalRecord>, oneshot::Sender<io::Result<()>>)> = Vec::new();
            let mut others = Vec::new();
            let mut n = 0;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Append { records, done } => {
                        n += records.len();
                        appends.push((records, done));
                    }
                    other => others.push(other),
                }
                if n < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                let started = Instant::now();
                let result = self.write_batch(appends.iter().flat_map(|(r, _)| r.iter()));
                let failed = result.is_err();
                tracing::trace!(
                    records = n,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "WAL batch durable"
                );
                for (_, done) in appends {
                    let _ = done.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
                if failed {
                    // A failed write or sync leaves the file's state unknown: stop, so no later
                    // record is acknowledged after a hole.
                    tracing::error!(dir = %self.dir.display(), error = ?result.err(),
                        "WAL write failed; the writer stops and writes fail until the proxy is restarted");
                    return;
                }
            }
            for req in others {
                match req {
                    Request::TruncateBelow { ts, done } => {
                        let _ = done.send(self.truncate_below(ts));
                    }
                    Request::Stats(done) => {
                        let _ = done.send(self.stats);
                    }
                    Request::Append { .. } => {}
                }
            }
        }
    }

    fn write_batch<'a>(&mut self, records: impl Iterator<Item = &'a WalRecord>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut first_ts = None;
        let mut count = 0u64;
        for r in records {
            first_ts.get_or_insert(r.ts);
            encode_frame(&mut buf, r.ts, &r.payload);
            count += 1;
        }
        let Some(first_ts) = first_ts else {
            return Ok(());
        };
        if self.active.is_none() || self.active_len >= self.segment_bytes {
            self.open_segment(first_ts)?;
        }
        let file = self
            .active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active WAL segment"))?;
        file.write_all(&buf)?;
        file.sync_data()?;
        self.active_len += buf.len() as u64;
        self.stats.records += count;
        self.stats.batches += 1;
        self.stats.syncs += 1;
        self.stats.max_batch = self.stats.max_batch.max(count);
        Ok(())
    }

    fn open_segment(&mut self, first_ts: u64) -> io::Result<()> {
        if let (None, Some(path), Some(len)) =
            (&self.active, &self.active_path, self.reopen_len.take())
        {
            if len < self.segment_bytes {
                let f = OpenOptions::new().append(true).open(path)?;
                self.active = Some(f);
                self.active_len = len;
                return Ok(());
            }
        }
        let path = self.dir.join(segment_name(first_ts));
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(&self.dir)?;
        tracing::debug!(segment = %path.display(), "new WAL segment");
        self.active = Some(f);
        self.active_len = 0;
        self.active_path = Some(path);
        Ok(())
    }

    fn truncate_below(&mut self, ts: u64) -> io::Result<usize> {
        let segs = segments(&self.dir)?;
        let mut deleted = 0;
        for w in segs.windows(2) {
            let (_, path) = &w[0];
            let (next_first, _) = &w[1];
            // Every record of this segment is below the next segment's first ts.
            if *next_first > ts || Some(path) == self.active_path.as_ref() {
                break;
            }
            fs::remove_file(path)?;
            deleted += 1;
        }
        if deleted > 0 {
            // Recorded before the deletion is made durable: a crash in between leaves a floor
            // that is merely conservative.
            let floor = ts.saturating_sub(1).max(trimmed_floor(&self.dir));
            let tmp = self.dir.join(format!("{TRIMMED_FILE}.tmp"));
            fs::write(&tmp, floor.to_string())?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, self.dir.join(TRIMMED_FILE))?;
            sync_dir(&self.dir)?;
            tracing::info!(dir = %self.dir.display(), deleted, below = ts, "deleted applied WAL segments");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, n: usize) -> WalRecord {
        WalRecord {
            ts,
            payload: vec![(ts % 251) as u8; n],
        }
    }

    #[test]
    fn frames_round_trip_and_stop_at_damage() {
        let mut buf = Vec::new();
        for ts in 1..=3 {
            encode_frame(&mut buf, ts, &rec(ts, 10).payload);
        }
        let (recs, valid) = decode_frames(&buf);
        assert_eq!(recs.len(), 3);
        assert_eq!(valid, buf.len());
        // A torn last frame: the first two survive.
        let (recs, valid) = decode_frames(&buf[..buf.len() - 3]);
        assert_eq!(recs.len(), 2);
        assert_eq!(valid, 2 * (HEADER + TS_LEN + 10));
        // A flipped payload bit fails the CRC.
        let mut bad = buf.clone();
        let at = HEADER + TS_LEN + 2;
        bad[at] ^= 1;
        assert_eq!(decode_frames(&bad).0.len(), 0);
        // A garbage length is not trusted.
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_frames(&bad).0.len(), 0);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_on_open_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, rec0) = Wal::open(dir.path()).unwrap();
            assert!(rec0.records.is_empty());
            for ts in [10, 12, 15] {
                wal.append(ts, rec(ts, 100).payload).await.unwrap();
            }
        }
        // Simulate a crash mid-write: half a frame at the end.
        let (_, seg) = segments(dir.path()).unwrap().pop().unwrap();
        let mut partial = Vec::new();
        encode_frame(&mut partial, 20, &[7u8; 50]);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&partial[..30]).unwrap();
        drop(f);
        let (wal, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            got.records.iter().map(|r| r.ts).collect::<Vec<_>>(),
            vec![10, 12, 15]
        );
        assert_eq!(got.truncated_bytes, 30);
        wal.append(21, rec(21, 5).payload).await.unwrap();
        drop(wal);
        let (_, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            got.records.iter().map(|r| r.ts).collect::<Vec<_>>(),
            vec![10, 12, 15, 21]
        );
        assert_eq!(got.records[3], rec(21, 5));
    }

    #[tokio::test]
    async fn group_commit_batches_concurrent_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        // 2000 appends queued before any completes: far fewer syncs than records.
        let mut waits = Vec::new();
        for ts in 1..=2000u64 {
            waits.push(wal.append_batch(vec![rec(ts, 64)]));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let stats = wal.stats().await;
        assert_eq!(stats.records, 2000);
        assert!(stats.syncs < 2000, "{stats:?}");
        assert!(stats.max_batch > 1, "{stats:?}");
        assert_eq!(read_after(dir.path(), 1990, 100).unwrap().len(), 10);
    }

    #[tokio::test]
    async fn applied_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open_sized(dir.path(), 1000).unwrap();
        // Records of 400 bytes: a new segment every three.
        let big = 400;
        for ts in 1..=7u64 {
            wal.append(ts, vec![1u8; big]).await.unwrap();
        }
        let before = segments(dir.path()).unwrap();
        assert!(before.len() >= 2, "{before:?}");
        let deleted = wal.truncate_below(4).await.unwrap();
        assert!(deleted >= 1);
        let after = read_after(dir.path(), 0, 100).unwrap();
        // Nothing at or above the mark is gone.
        assert!(after.iter().any(|r| r.ts == 4));
        assert_eq!(after.last().unwrap().ts, 7);
        assert!(after.first().unwrap().ts > 1);
        // The floor survives a restart: a replica at ts 2 may lack deleted records.
        assert_eq!(trimmed_floor(dir.path()), 3);
        drop(wal);
        let (wal, _) = Wal::open_sized(dir.path(), 1000).unwrap();
        assert_eq!(trimmed_floor(dir.path()), 3);
        // A truncation that deletes nothing leaves it, a later one raises it.
        wal.truncate_below(2).await.unwrap();
        assert_eq!(trimmed_floor(dir.path()), 3);
    }
}
