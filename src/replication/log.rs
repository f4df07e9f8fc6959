//! One shard's log at run time: the sequencer (timestamp + WAL append as one step, in
//! batches: one timestamp request per batch, the WAL writer groups fsyncs), the in-memory tail
//! appliers read from, each replica's held and applied positions, and the Cabinet quorum wait.
//!
//! A record is shipped to the followers as soon as it has its timestamp, while the WAL makes
//! it durable (the leader's disk write runs in parallel with replication, as in Raft): the
//! acknowledgement rests on the Cabinet quorum of replicas, each of which holds the record in
//! its own `myquorum.wal`, and recovery takes the union of the WAL and those copies, so a
//! record a follower applied before the proxy's fsync is never lost either. The primary's
//! weight counts from the moment its transaction has executed (the caller only sequences
//! executed work).
//!
//! Durability: `sequence` resolves once the record has its place in the log. Cancellation:
//! dropping a `sequence` future after the request was queued does not withdraw the record;
//! it is in the log and will be applied everywhere (the caller reports "outcome unknown").
//! A failed WAL write closes the shard's writes (restart the proxy; recovery rebuilds the
//! log from the replicas' copies).
//! Owns: `ShardLog`. May import: wal, tso, replication::{cabinet, replay}, router ids.

use super::cabinet::{Cabinet, WeightSnapshot};
use super::certify::{Certify, RecentWrites, TableSet};
use super::ddl_order::DdlOrder;
use super::replay::{LogEntry, Position};
use crate::metrics::LatencyHistogram;
use crate::router::{ReplicaId, ShardId};
use crate::tso::TsoPair;
use crate::wal::{Wal, WalRecord};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Records kept in memory for appliers beyond what every follower applied.
const TAIL_CAP: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("no write quorum for shard {shard}: reachable replicas {reachable:?} carry weight {weight:.3}, more than {ct:.3} is needed; writes resume when enough replicas are back")]
    NoQuorum {
        shard: u32,
        reachable: Vec<u32>,
        weight: f64,
        ct: f64,
    },
    #[error("the write-ahead log failed: {0}; check the disk under replication.wal_dir, then restart the proxy")]
    Wal(io::Error),
    #[error("timestamp servers unavailable: {0}")]
    Tso(io::Error),
    #[error("commit of record {ts} is logged but the quorum did not acknowledge it within {timeout_ms} ms; it will be applied when replicas return (outcome: will commit)")]
    QuorumTimeout { ts: u64, timeout_ms: u64 },
    #[error("shard {0} is recovering; writes resume when its replicas have caught up")]
    Recovering(u32),
    #[error("the proxy is shutting down")]
    Shutdown,
    #[error("the primary of shard {shard} changed while this transaction ran (failover or switchover); it was rolled back and nothing of it is logged. Retry it: the new primary serves it")]
    LeaderChanged { shard: u32 },
    #[error("shard {shard} is electing a new primary and it did not finish within {timeout_ms} ms; retry when SHOW PROXY REPLICATION shows a primary")]
    Electing { shard: u32, timeout_ms: u64 },
    #[error("this transaction's replication record is {bytes} bytes, more than the {max} bytes a record may hold (replication.max_record_bytes); it was rolled back. Split it into smaller transactions or raise replication.max_record_bytes")]
    TooLarge { bytes: usize, max: usize },
    #[error("a stored program in this transaction read tables that another transaction wrote meanwhile, after this one's snapshot: a follower replaying the log would read that write and the replicas would differ. It was rolled back and nothing of it is logged; retry it (or call the program first in its transaction, where its reads lock)")]
    Conflict { shard: u32 },
}

/// What bounds one shard's commits, and what its primary's commits rest on.
#[derive(Debug, Clone, Copy)]
pub struct LogParams {
    /// How long a commit waits for the quorum before failing.
    pub commit_timeout: Duration,
    /// The largest record (payload bytes) a transaction may log.
    pub max_record: usize,
    /// The proxy runs the primary without syncing its commits (`replication.
    /// primary_syncs_commits = false`): the leader then counts for the quorum only once the
    /// WAL has the record on disk.
    pub relax_primary_flush: bool,
}

struct SeqRequest {
    payload: Arc<[u8]>,
    /// The primary the transaction executed on: refused unless it still leads.
    executed_on: ReplicaId,
    /// The tables it wrote (for certifying later transactions), and its own certification.
    writes: TableSet,
    certify: Option<Certify>,
    reply: oneshot::Sender<Result<u64, CommitError>>,
}

enum SeqMsg {
    Record(SeqRequest),
    /// Resolves with the end of the log once everything queued before it is sequenced.
    Barrier(oneshot::Sender<u64>),
}

/// Who leads the shard, and whether an election is under way (writes fenced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// Bumped at every change of leader (persisted with it).
    pub epoch: u64,
    pub leader: ReplicaId,
    /// No record is sequenced while an election runs.
    pub electing: bool,
}

/// Per-replica replication state.
pub struct ReplicaState {
    /// Durably held (received) up to here: what the quorum counts.
    pub held: AtomicU64,
    /// Highest timestamp applied and committed there (followers apply in order).
    pub applied: AtomicU64,
    /// The applier is connected.
    pub live: AtomicBool,
    /// Its commits are on disk when acknowledged (`innodb_flush_log_at_trx_commit = 1`, read
    /// when its applier connects). When not, what it holds counts for the quorum only once
    /// the proxy's WAL has the record on disk too.
    pub durable_hold: AtomicBool,
    /// The proxy set this server's `innodb_flush_log_at_trx_commit` to 2 while it leads.
    pub flush_relaxed: AtomicBool,
    /// Stopped because its results differed from the primary's.
    pub quarantined: Mutex<Option<String>>,
    /// A former primary: everything up to here is applied there, but records above it
    /// that were in flight when it lost leadership may be missing below its highest
    /// applied row (u64::MAX: no gaps).
    pub gap_floor: AtomicU64,
    /// `PROXY REBUILD REPLICA` is copying a donor's databases to it.
    pub rebuilding: AtomicBool,
    /// Quarantined for being down longer than the log is kept for it (not for diverging):
    /// with `auto_rebuild` it is rebuilt once it is back.
    pub outlived_log: AtomicBool,
    /// Bumped when a new applier task takes over this replica (a rebuild): an older one
    /// still retrying a connection stops instead of applying beside it.
    pub applier_epoch: AtomicU64,
    /// Its server's `@@system_time_zone`, once its applier connected (empty before).
    pub system_time_zone: Mutex<String>,
    /// Time to apply one batch (replay, myquorum.wal rows, COMMIT).
    pub apply_latency: LatencyHistogram,
    /// Time to store one batch as received (the acknowledgement).
    pub receive_latency: LatencyHistogram,
}

/// Where a replicated commit spends its time, shown by SHOW PROXY REPLICATION.
#[derive(Default)]
pub struct CommitLatency {
    /// Timestamp, queued on the WAL writer and published to the followers (not yet durable:
    /// the WAL's own write + sync is `Wal::sync_latency`).
    pub sequence: LatencyHistogram,
    /// Sequenced until the Cabinet quorum holds the record (the WAL sync and the followers'
    /// holds run meanwhile).
    pub quorum: LatencyHistogram,
    /// COMMIT (with the myquorum.wal row) on the primary.
    pub primary_commit: LatencyHistogram,
}

/// Counters shown by SHOW PROXY REPLICATION.
#[derive(Default)]
pub struct LogCounters {
    pub commits: AtomicU64,
    pub no_quorum: AtomicU64,
    pub quorum_timeouts: AtomicU64,
    pub batches: AtomicU64,
    pub max_batch: AtomicU64,
    /// Transactions refused by certification (`certify`).
    pub conflicts: AtomicU64,
}

pub struct ShardLog {
    pub shard: ShardId,
    leadership: watch::Sender<Leadership>,
    pub replicas: Vec<ReplicaState>,
    pub wal: Wal,
    seq_tx: mpsc::UnboundedSender<SeqMsg>,
    seq_rx: Mutex<Option<mpsc::UnboundedReceiver<SeqMsg>>>,
    /// Commits whose COMMIT on the primary failed after they were logged: the primary must
    /// get them re-applied before writes continue.
    failed_on_primary: Mutex<BTreeSet<u64>>,
    tail: RwLock<BTreeMap<u64, Arc<[u8]>>>,
    /// Everything at or below this was trimmed from the tail (read it from disk).
    tail_floor: AtomicU64,
    /// Last sequenced timestamp: the end of the log followers apply up to.
    sequenced: watch::Sender<u64>,
    /// Bumped whenever a replica's applied position moves.
    acks: watch::Sender<u64>,
    cabinet: Mutex<Cabinet>,
    /// Sequenced records not yet committed on the primary.
    /// Sequenced records not yet committed where they executed, with that replica. After an
    /// election the old primary's entries stay until their sessions finish (commit or fail
    /// there): its applier waits for that before following, or it would apply them twice.
    in_flight: Mutex<BTreeMap<u64, ReplicaId>>,
    /// At most the primary's low-water mark (`primary_low_water`, but counting the records
    /// in flight on any replica): kept as records leave `in_flight`, so that a session can
    /// read it before every command without taking the lock (`snapshot_floor`).
    low_water: AtomicU64,
    /// What each DDL record got on the primary (`None`: OK, `Some(code)`: that error), for
    /// followers to hold their own outcome against; pruned once every follower applied it.
    ddl_outcomes: Mutex<BTreeMap<u64, Option<u16>>>,
    /// Bumped when a record leaves `in_flight`, fails on the primary or gets its DDL outcome.
    primary_progress: watch::Sender<u64>,
    /// Keeps a DDL behind the write transactions open when it arrives.
    pub ddl_order: Arc<DdlOrder>,
    /// Writes are accepted (false while recovering).
    pub open: watch::Sender<bool>,
    /// A WAL write failed: writes stay closed until a restart.
    pub wal_broken: AtomicBool,
    /// Smallest `max_allowed_packet` seen on a replica (u64::MAX until one is known).
    packet_limit: AtomicU64,
    pub commit_timeout: Duration,
    /// The largest record (payload bytes) a transaction may log.
    max_record: usize,
    /// See `LogParams::relax_primary_flush`.
    pub relax_primary_flush: bool,
    pub counters: LogCounters,
    /// Completed elections (failovers and switchovers).
    pub elections: AtomicU64,
    pub latency: CommitLatency,
}

impl ShardLog {
    /// The log of one shard over an opened `wal` whose last record is `last_ts`. Writes stay
    /// closed until recovery calls `start_sequencer` and opens them.
    pub fn new(
        shard: ShardId,
        n: usize,
        (epoch, leader): (u64, ReplicaId),
        failure_threshold: Option<usize>,
        wal: Wal,
        last_ts: u64,
        params: LogParams,
    ) -> Result<Arc<ShardLog>, String> {
        let cabinet = Cabinet::new(n, leader, failure_threshold)?;
        tracing::info!(
            shard = shard.0,
            replicas = n,
            t = cabinet.t,
            ratio = cabinet.ratio,
            ct = cabinet.ct(),
            "Cabinet weights"
        );
        let (seq_tx, seq_rx) = mpsc::unbounded_channel();
        let log = Arc::new(ShardLog {
            shard,
            leadership: watch::Sender::new(Leadership {
                epoch,
                leader,
                electing: false,
            }),
            replicas: (0..n)
                .map(|_| ReplicaState {
                    held: AtomicU64::new(0),
                    applied: AtomicU64::new(0),
                    live: AtomicBool::new(false),
                    durable_hold: AtomicBool::new(true),
                    flush_relaxed: AtomicBool::new(false),
                    quarantined: Mutex::new(None),
                    gap_floor: AtomicU64::new(u64::MAX),
                    rebuilding: AtomicBool::new(false),
                    outlived_log: AtomicBool::new(false),
                    applier_epoch: AtomicU64::new(0),
                    system_time_zone: Mutex::new(String::new()),
                    apply_latency: LatencyHistogram::new(),
                    receive_latency: LatencyHistogram::new(),
                })
                .collect(),
            wal,
            seq_tx,
            seq_rx: Mutex::new(Some(seq_rx)),
            failed_on_primary: Mutex::new(BTreeSet::new()),
            tail: RwLock::new(BTreeMap::new()),
            tail_floor: AtomicU64::new(last_ts),
            sequenced: watch::Sender::new(last_ts),
            acks: watch::Sender::new(0),
            cabinet: Mutex::new(cabinet),
            in_flight: Mutex::new(BTreeMap::new()),
            low_water: AtomicU64::new(last_ts),
            ddl_outcomes: Mutex::new(BTreeMap::new()),
            primary_progress: watch::Sender::new(0),
            ddl_order: Arc::new(DdlOrder::default()),
            open: watch::Sender::new(false),
            wal_broken: AtomicBool::new(false),
            packet_limit: AtomicU64::new(u64::MAX),
            commit_timeout: params.commit_timeout,
            max_record: params.max_record.min(crate::wal::MAX_RECORD - 64),
            relax_primary_flush: params.relax_primary_flush,
            counters: LogCounters::default(),
            elections: AtomicU64::new(0),
            latency: CommitLatency::default(),
        });
        Ok(log)
    }

    /// Starts the sequencer; timestamps will be above `last_ts`.
    pub fn start_sequencer(self: &Arc<Self>, tso: Arc<TsoPair>, last_ts: u64) {
        if let Some(rx) = self.seq_rx.lock().take() {
            tokio::spawn(run_sequencer(self.clone(), rx, tso, last_ts));
        }
    }

    /// The replica that leads (the primary) now.
    pub fn leader(&self) -> ReplicaId {
        self.leadership.borrow().leader
    }

    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    pub fn subscribe_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// Starts an election: no record is sequenced from now on (requests already queued are
    /// refused), and writes wait. Returns the end of the log once the sequencer has drained
    /// everything queued before the fence.
    pub async fn fence(&self) -> Result<u64, CommitError> {
        self.leadership.send_modify(|l| l.electing = true);
        self.open.send_replace(false);
        let (tx, rx) = oneshot::channel();
        self.seq_tx
            .send(SeqMsg::Barrier(tx))
            .map_err(|_| CommitError::Shutdown)?;
        rx.await.map_err(|_| CommitError::Shutdown)
    }

    /// Ends an election without a change (the primary came back, or no candidate): writes
    /// open again under the same leader.
    pub fn unfence(&self) {
        self.leadership.send_modify(|l| l.electing = false);
        if self.failed_on_primary.lock().is_empty() {
            self.reopen();
        }
    }

    /// Hands leadership to `new`, which has applied the whole log (the caller waited for
    /// that under the fence). The old leader becomes a follower: everything up to its low
    /// water mark is applied there; records above it that were in flight may be missing and
    /// its applier fills them first. Returns the new epoch.
    pub fn promote(&self, new: ReplicaId) -> u64 {
        self.promote_with_floor(new, self.primary_low_water())
    }

    /// `promote`, with what is known of the old leader: everything up to `old_low` is
    /// applied there (0: nothing known; it checks the whole log when it returns).
    pub fn promote_with_floor(&self, new: ReplicaId, old_low: u64) -> u64 {
        let old = self.leader();
        if let Some(s) = self.replicas.get(old.0 as usize) {
            s.gap_floor.store(old_low, Ordering::Release);
            s.applied.store(old_low, Ordering::Release);
            s.held.store(old_low, Ordering::Release);
            s.live.store(false, Ordering::Relaxed);
        }
        // Everything sequenced so far is applied on the new leader; what was in flight on the
        // old one stays tracked until its sessions finish there. Commits that already failed
        // there are finished (nobody will repair the old primary now).
        let failed = std::mem::take(&mut *self.failed_on_primary.lock());
        let mut in_flight = self.in_flight.lock();
        in_flight.retain(|ts, _| !failed.contains(ts));
        self.left_flight(&in_flight);
        drop(in_flight);
        self.cabinet.lock().set_leader(new);
        self.bump_primary_progress();
        let mut epoch = 0;
        self.leadership.send_modify(|l| {
            l.epoch += 1;
            l.leader = new;
            l.electing = false;
            epoch = l.epoch;
        });
        self.elections.fetch_add(1, Ordering::Relaxed);
        self.acks.send_modify(|v| *v += 1);
        epoch
    }

    /// The WAL could not be written: no more writes on this shard until a restart.
    fn wal_failed(&self, e: &io::Error) {
        tracing::error!(shard = self.shard.0, error = %e,
            "WAL write failed; writes on this shard are closed. Free or fix the WAL disk and \
             restart the proxy: recovery rebuilds the log from the replicas' myquorum.wal copies");
        self.wal_broken.store(true, Ordering::Relaxed);
        self.open.send_replace(false);
    }

    /// Notes what a replica's server said when it was connected (by its applier or by
    /// recovery): its `max_allowed_packet` bounds every record, and settings under which
    /// statement replay diverges are warned about.
    pub fn note_server(&self, replica: ReplicaId, addr: &str, p: &Position) {
        if p.max_allowed_packet > 0 {
            self.packet_limit
                .fetch_min(p.max_allowed_packet, Ordering::Relaxed);
        }
        if let Some(r) = self.replicas.get(replica.0 as usize) {
            *r.system_time_zone.lock() = p.system_time_zone.clone();
        }
        let differing: Vec<(u32, String)> = self
            .replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let other = r.system_time_zone.lock().clone();
                (i != replica.0 as usize && !other.is_empty() && other != p.system_time_zone)
                    .then_some((i as u32, other))
            })
            .collect();
        if !differing.is_empty() {
            tracing::warn!(shard = self.shard.0, replica = replica.0, addr,
                system_time_zone = %p.system_time_zone, others = ?differing,
                "replicas run in different system time zones: with time_zone = SYSTEM (the default) each converts TIMESTAMP values and NOW() into DATETIME by its own host's zone, and the replicas diverge; give the hosts one zone, or set default_time_zone (e.g. '+00:00') on every server");
        }
        if p.interleaved_autoinc {
            tracing::warn!(shard = self.shard.0, replica = replica.0, addr,
                "innodb_autoinc_lock_mode = 2 (interleaved) on this replica: as primary, concurrent INSERT … SELECT / LOAD DATA into an AUTO_INCREMENT table get interleaved ids there and consecutive ones on the followers (statement replay, as with MySQL's statement binlog); set innodb_autoinc_lock_mode = 1 (MariaDB's default) on every replica");
        }
    }

    /// The payload bytes one statement storing `myquorum.wal` rows carries: rows travel
    /// hex-encoded, so half the replicas' smallest `max_allowed_packet` less the statement's
    /// own text (MariaDB's default, 16 MiB, until a replica was asked), and at most 4 MiB:
    /// each statement exists three times over while it is sent (its text, its packet, the
    /// socket buffer), so a bulk load's record costs the proxy a few chunks of memory per
    /// connection, not a few copies of itself. Larger records span several rows (`wal_table`).
    pub fn row_bytes(&self) -> usize {
        let limit = match self.packet_limit.load(Ordering::Relaxed) {
            u64::MAX => 16 << 20,
            l => l,
        };
        (limit.saturating_sub(64 << 10) / 2).clamp(1, 4 << 20) as usize
    }

    /// The largest record (payload bytes) a transaction may log
    /// (`replication.max_record_bytes`).
    pub fn max_record(&self) -> usize {
        self.max_record
    }

    /// Opens writes again after a pause (never after a WAL failure).
    pub fn reopen(&self) {
        if !self.wal_broken.load(Ordering::Relaxed) {
            self.open.send_replace(true);
        }
    }

    /// A logged commit did not reach the primary `executed_on` (its connection failed at
    /// COMMIT). When that replica no longer leads, nothing is to repair: the new leader
    /// applied the whole log before taking over.
    pub fn primary_failed(&self, ts: u64, executed_on: ReplicaId) {
        if executed_on != self.leader() {
            self.land(ts);
            self.bump_primary_progress();
            return;
        }
        tracing::warn!(
            shard = self.shard.0,
            ts,
            "a logged commit failed on the primary; writes pause until it is re-applied there"
        );
        self.failed_on_primary.lock().insert(ts);
        self.open.send_replace(false);
        self.bump_primary_progress();
    }

    pub fn failed_on_primary(&self) -> Vec<u64> {
        self.failed_on_primary.lock().iter().copied().collect()
    }

    pub fn primary_repaired(&self, done: &[u64]) {
        let mut f = self.failed_on_primary.lock();
        for ts in done {
            f.remove(ts);
            self.land(*ts);
        }
        drop(f);
        self.bump_primary_progress();
    }

    /// The end of the log: the last timestamp handed out.
    pub fn last_sequenced(&self) -> u64 {
        *self.sequenced.borrow()
    }

    /// The last timestamp the WAL holds durably (at or below `last_sequenced`).
    pub fn last_durable(&self) -> u64 {
        self.wal.durable()
    }

    pub fn subscribe_sequenced(&self) -> watch::Receiver<u64> {
        self.sequenced.subscribe()
    }

    pub fn cabinet_snapshot(&self) -> WeightSnapshot {
        self.cabinet.lock().snapshot()
    }

    pub fn cabinet(&self) -> Cabinet {
        self.cabinet.lock().clone()
    }

    fn reachable(&self) -> Vec<ReplicaId> {
        let leader = self.leader();
        (0..self.replicas.len() as u32)
            .map(ReplicaId)
            .filter(|r| {
                *r == leader || {
                    let s = &self.replicas[r.0 as usize];
                    s.live.load(Ordering::Relaxed) && s.quarantined.lock().is_none()
                }
            })
            .collect()
    }

    /// Replicas holding `ts`: the leader it executed on, and followers that stored it.
    fn holders(&self, ts: u64, leader: ReplicaId) -> impl Iterator<Item = ReplicaId> + '_ {
        let wal_has_it = self.last_durable() >= ts;
        (0..self.replicas.len() as u32)
            .map(ReplicaId)
            .filter(move |r| {
                if *r == leader {
                    // A primary that does not sync its commits holds nothing durable until
                    // the WAL does.
                    !self.relax_primary_flush || wal_has_it
                } else {
                    let s = &self.replicas[r.0 as usize];
                    s.held.load(Ordering::Acquire) >= ts
                        && (wal_has_it || s.durable_hold.load(Ordering::Acquire))
                        && s.quarantined.lock().is_none()
                }
            })
    }

    /// Sequences an executed transaction: checks that a quorum is reachable, takes a
    /// timestamp and queues the WAL append (one step), and returns once the record is in the
    /// log (followers may already be applying it). The record then belongs to the log whatever
    /// happens to the caller.
    pub async fn sequence(
        &self,
        payload: Arc<[u8]>,
        executed_on: ReplicaId,
        writes: TableSet,
        certify: Option<Certify>,
    ) -> Result<(u64, WeightSnapshot), CommitError> {
        if self.wal_broken.load(Ordering::Relaxed) {
            return Err(CommitError::Wal(io::Error::other(
                "an earlier WAL write failed",
            )));
        }
        if payload.len() > self.max_record() {
            return Err(CommitError::TooLarge {
                bytes: payload.len(),
                max: self.max_record(),
            });
        }
        if !*self.open.borrow() {
            let mut open = self.open.subscribe();
            let wait = tokio::time::timeout(self.commit_timeout, open.wait_for(|o| *o)).await;
            if !matches!(wait, Ok(Ok(_))) {
                if self.leadership().electing {
                    return Err(CommitError::Electing {
                        shard: self.shard.0,
                        timeout_ms: self.commit_timeout.as_millis() as u64,
                    });
                }
                return Err(CommitError::Recovering(self.shard.0));
            }
        }
        if executed_on != self.leader() {
            return Err(CommitError::LeaderChanged {
                shard: self.shard.0,
            });
        }
        let mut snapshot = self.cabinet_snapshot();
        let mut reachable = self.reachable();
        if !snapshot.committed(reachable.iter().copied()) {
            // Wait (up to the commit timeout) for enough replicas to be reachable.
            let deadline = Instant::now() + self.commit_timeout;
            let mut acks = self.acks.subscribe();
            loop {
                acks.borrow_and_update();
                snapshot = self.cabinet_snapshot();
                reachable = self.reachable();
                if snapshot.committed(reachable.iter().copied()) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, acks.changed()).await.is_err() {
                    break;
                }
            }
        }
        if !snapshot.committed(reachable.iter().copied()) {
            self.counters.no_quorum.fetch_add(1, Ordering::Relaxed);
            let weight = reachable
                .iter()
                .filter_map(|r| snapshot.weight.get(r.0 as usize))
                .sum();
            return Err(CommitError::NoQuorum {
                shard: self.shard.0,
                reachable: reachable.iter().map(|r| r.0).collect(),
                weight,
                ct: snapshot.ct,
            });
        }
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.seq_tx
            .send(SeqMsg::Record(SeqRequest {
                payload,
                executed_on,
                writes,
                certify,
                reply,
            }))
            .map_err(|_| CommitError::Shutdown)?;
        let ts = rx.await.map_err(|_| CommitError::Shutdown)??;
        self.latency.sequence.record(started.elapsed());
        Ok((ts, snapshot))
    }

    /// Waits until replicas holding `ts` carry more than CT under `snapshot`, then
    /// re-weights the followers by the order they acknowledged.
    pub async fn await_quorum(
        &self,
        ts: u64,
        snapshot: &WeightSnapshot,
    ) -> Result<(), CommitError> {
        let started = Instant::now();
        let deadline = started + self.commit_timeout;
        let mut acks = self.acks.subscribe();
        let mut durable = self.wal.subscribe_durable();
        let mut order: Vec<ReplicaId> = Vec::new();
        loop {
            acks.borrow_and_update();
            durable.borrow_and_update();
            let mut leader_holds = false;
            for r in self.holders(ts, snapshot.leader) {
                if r == snapshot.leader {
                    leader_holds = true;
                } else if !order.contains(&r) {
                    order.push(r);
                }
            }
            let mut holders = order.clone();
            if leader_holds {
                holders.push(snapshot.leader);
            }
            if snapshot.committed(holders) {
                self.cabinet.lock().reweight(snapshot.clock, &order);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.latency.quorum.record(started.elapsed());
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Holds on replicas that do not sync their commits count once the WAL has synced.
            let woke = tokio::time::timeout(left, async {
                tokio::select! {
                    r = acks.changed() => r,
                    r = durable.changed() => r,
                }
            });
            if left.is_zero() || woke.await.is_err() {
                self.counters
                    .quorum_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(CommitError::QuorumTimeout {
                    ts,
                    timeout_ms: self.commit_timeout.as_millis() as u64,
                });
            }
        }
    }

    /// The primary committed `ts` (or it was re-applied there).
    pub fn primary_done(&self, ts: u64) {
        self.land(ts);
        self.bump_primary_progress();
    }

    /// `ts` is no longer in flight.
    fn land(&self, ts: u64) {
        let mut in_flight = self.in_flight.lock();
        in_flight.remove(&ts);
        self.left_flight(&in_flight);
    }

    /// Records left `in_flight` (held locked): the low-water mark may rise. Records entering
    /// it never lower it (they are above everything sequenced before).
    fn left_flight(&self, in_flight: &BTreeMap<u64, ReplicaId>) {
        let low = match in_flight.keys().next() {
            Some(ts) => ts - 1,
            None => self.last_sequenced(),
        };
        self.low_water.store(low, Ordering::Release);
    }

    /// A log position every record at or below which the primary has committed: a
    /// transaction starting now sees at least those (`certify`). Lock-free, for sessions to
    /// read before each command; lower than `primary_low_water` while a former primary's
    /// sessions finish.
    pub fn snapshot_floor(&self) -> u64 {
        self.low_water.load(Ordering::Acquire)
    }

    fn bump_primary_progress(&self) {
        // Only appliers waiting for a DDL's result listen: a commit pays nothing otherwise. A
        // waiter subscribes before it looks at the state this follows, so it is counted.
        if self.primary_progress.receiver_count() > 0 {
            self.primary_progress
                .send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The DDL record `ts` ran on the primary with this result (`None`: OK, else the error
    /// code); call before `primary_done`.
    pub fn record_ddl_outcome(&self, ts: u64, error: Option<u16>) {
        self.ddl_outcomes.lock().insert(ts, error);
        self.bump_primary_progress();
    }

    /// What the DDL record `ts` got on the primary, waiting while it still runs there (a
    /// follower applies a DDL only once the primary's result is known, as a binlog replica
    /// sees a DDL only after the primary ran it). `None` when that result will never be
    /// known: logged before a restart, its primary connection lost, or an election started.
    pub async fn primary_ddl_outcome(&self, ts: u64) -> Option<Option<u16>> {
        let mut progress = self.primary_progress.subscribe();
        let mut leadership = self.leadership.subscribe();
        loop {
            if let Some(outcome) = self.ddl_outcomes.lock().get(&ts) {
                return Some(*outcome);
            }
            let lead = *leadership.borrow_and_update();
            let running_on_leader = self.in_flight.lock().get(&ts) == Some(&lead.leader)
                && !lead.electing
                && !self.failed_on_primary.lock().contains(&ts);
            if !running_on_leader {
                return None;
            }
            tokio::select! {
                r = progress.changed() => if r.is_err() { return None },
                r = leadership.changed() => if r.is_err() { return None },
            }
        }
    }

    /// Forgets DDL outcomes every follower has applied.
    pub fn prune_ddl_outcomes(&self, applied_everywhere: u64) {
        self.ddl_outcomes
            .lock()
            .retain(|ts, _| *ts > applied_everywhere);
    }

    /// Highest timestamp below which the primary holds everything in the log.
    pub fn primary_low_water(&self) -> u64 {
        let leader = self.leader();
        let first = self
            .in_flight
            .lock()
            .iter()
            .find(|(_, r)| **r == leader)
            .map(|(ts, _)| *ts);
        match first {
            Some(ts) => ts - 1,
            None => self.last_sequenced(),
        }
    }

    /// Whether sessions still have sequenced transactions open on `replica` (a former
    /// primary's in-flight commits).
    pub fn in_flight_on(&self, replica: ReplicaId) -> bool {
        self.in_flight.lock().values().any(|r| *r == replica)
    }

    /// Sessions are still committing on `replica`: records in flight there whose COMMIT has
    /// not failed yet.
    pub fn committing_on(&self, replica: ReplicaId) -> bool {
        let failed = self.failed_on_primary.lock();
        self.in_flight
            .lock()
            .iter()
            .any(|(ts, r)| *r == replica && !failed.contains(ts))
    }

    /// Records a replica applied up to `ts` (so it holds them too).
    pub fn set_applied(&self, replica: ReplicaId, ts: u64) {
        if let Some(s) = self.replicas.get(replica.0 as usize) {
            s.applied.store(ts, Ordering::Release);
            s.held.fetch_max(ts, Ordering::AcqRel);
        }
        self.acks.send_modify(|v| *v += 1);
        self.trim_tail();
    }

    /// Records a replica durably holds records up to `ts`: its acknowledgement.
    pub fn set_held(&self, replica: ReplicaId, ts: u64) {
        if let Some(s) = self.replicas.get(replica.0 as usize) {
            s.held.store(ts, Ordering::Release);
        }
        self.acks.send_modify(|v| *v += 1);
    }

    pub fn set_live(&self, replica: ReplicaId, live: bool) {
        if let Some(s) = self.replicas.get(replica.0 as usize) {
            s.live.store(live, Ordering::Relaxed);
        }
        self.acks.send_modify(|v| *v += 1);
    }

    pub fn quarantine(&self, replica: ReplicaId, why: String) {
        tracing::error!(shard = self.shard.0, replica = replica.0, reason = %why,
            "replica quarantined (see the reason): it no longer applies or counts for the quorum; \
             rebuild it with PROXY REBUILD REPLICA <n> [SHARD <s>]");
        if let Some(s) = self.replicas.get(replica.0 as usize) {
            *s.quarantined.lock() = Some(why);
        }
        self.acks.send_modify(|v| *v += 1);
    }

    /// Lowest position applied by every follower that is not quarantined.
    pub fn followers_low_water(&self) -> u64 {
        let leader = self.leader();
        (0..self.replicas.len() as u32)
            .map(ReplicaId)
            .filter(|r| *r != leader)
            .filter(|r| self.replicas[r.0 as usize].quarantined.lock().is_none())
            .map(|r| self.replicas[r.0 as usize].applied.load(Ordering::Acquire))
            .min()
            .unwrap_or_else(|| self.last_sequenced())
    }

    fn trim_tail(&self) {
        // Records not yet durable exist only here: they stay until the WAL has them.
        let durable = self.last_durable();
        let low = self.followers_low_water().min(durable);
        let mut tail = self.tail.write();
        let mut floor = self.tail_floor.load(Ordering::Relaxed);
        while let Some((&ts, _)) = tail.first_key_value() {
            if ts <= low || (tail.len() > TAIL_CAP && ts <= durable) {
                tail.pop_first();
                floor = floor.max(ts);
            } else {
                break;
            }
        }
        self.tail_floor.store(floor, Ordering::Relaxed);
    }

    /// How many records lie in (`after`, `upto`]: exact from the in-memory tail; a replica
    /// behind the tail counts as far behind.
    pub fn records_between(&self, after: u64, upto: u64) -> usize {
        if after >= upto {
            return 0;
        }
        let tail = self.tail.read();
        let n = tail.range(after + 1..=upto).count();
        if after < self.tail_floor.load(Ordering::Relaxed) {
            n + TAIL_CAP
        } else {
            n
        }
    }

    /// Up to `limit` records after `after`, from memory or (for a replica far behind) from
    /// the WAL files.
    pub async fn records_after(&self, after: u64, limit: usize) -> io::Result<Vec<LogEntry>> {
        {
            let tail = self.tail.read();
            if after >= self.tail_floor.load(Ordering::Relaxed) {
                return Ok(tail
                    .range(after + 1..)
                    .take(limit)
                    .map(|(ts, p)| LogEntry {
                        ts: *ts,
                        payload: p.clone(),
                    })
                    .collect());
            }
        }
        let dir = self.wal.dir().to_path_buf();
        let durable = self.last_durable();
        let recs = tokio::task::spawn_blocking(move || crate::wal::read_after(&dir, after, limit))
            .await
            .map_err(io::Error::other)??;
        Ok(recs
            .into_iter()
            .filter(|r| r.ts <= durable)
            .map(|r| LogEntry {
                ts: r.ts,
                payload: r.payload.into(),
            })
            .collect())
    }

    /// Adds records recovered from elsewhere (replicas' copies) to the WAL and the tail.
    pub async fn adopt(&self, records: Vec<WalRecord>) -> io::Result<()> {
        let Some(last) = records.last().map(|r| r.ts) else {
            return Ok(());
        };
        for r in &records {
            self.tail.write().insert(r.ts, r.payload.clone().into());
        }
        self.wal
            .append_batch(records)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("WAL writer stopped")))?;
        self.sequenced.send_modify(|d| *d = (*d).max(last));
        Ok(())
    }
}

async fn run_sequencer(
    log: Arc<ShardLog>,
    mut rx: mpsc::UnboundedReceiver<SeqMsg>,
    tso: Arc<TsoPair>,
    mut last_ts: u64,
) {
    // The writer publishes durability itself; a failed write closes the shard's writes.
    let failed = log.wal.failed();
    let watched = log.clone();
    tokio::spawn(async move {
        let reason = failed.await;
        watched.wal_failed(&io::Error::other(reason));
    });
    let mut barrier: Option<oneshot::Sender<u64>> = None;
    // What recent records wrote, for certifying transactions whose programs read a
    // snapshot (`certify`): only this task sequences, so only it needs to know.
    let mut recent = RecentWrites::starting_at(last_ts);
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while msgs.len() < 4096 && !matches!(msgs.last(), Some(SeqMsg::Barrier(_))) {
            match rx.try_recv() {
                Ok(r) => msgs.push(r),
                Err(_) => break,
            }
        }
        // A record is refused when its transaction executed on a replica that no longer
        // leads, or during an election: the new leader catches up to the log as it stands.
        let leadership = log.leadership();
        let mut batch = Vec::with_capacity(msgs.len());
        for m in msgs {
            match m {
                SeqMsg::Record(r) if leadership.electing || r.executed_on != leadership.leader => {
                    let _ = r
                        .reply
                        .send(Err(CommitError::LeaderChanged { shard: log.shard.0 }));
                }
                SeqMsg::Record(r) => {
                    // Checked against the records before it in this batch too: they come
                    // before it in the log.
                    let conflict = r.certify.as_ref().is_some_and(|c| {
                        recent.conflicts(c)
                            || batch.iter().any(|b: &SeqRequest| b.writes.meets(&c.reads))
                    });
                    if conflict {
                        log.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                        let _ = r
                            .reply
                            .send(Err(CommitError::Conflict { shard: log.shard.0 }));
                    } else {
                        batch.push(r);
                    }
                }
                SeqMsg::Barrier(b) => barrier = Some(b),
            }
        }
        if batch.is_empty() {
            if let Some(b) = barrier.take() {
                let _ = b.send(last_ts);
            }
            continue;
        }
        let n = batch.len() as u32;
        let first_ts = match tso.issue(n, last_ts).await {
            Ok(ts) => ts,
            Err(e) => {
                tracing::error!(shard = log.shard.0, error = %e, "no timestamp for a commit batch");
                for r in batch {
                    let _ = r.reply.send(Err(CommitError::Tso(io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
                if let Some(b) = barrier.take() {
                    let _ = b.send(last_ts);
                }
                continue;
            }
        };
        let mut stamped: Vec<(u64, SeqRequest)> = batch
            .into_iter()
            .enumerate()
            .map(|(i, r)| (first_ts + 2 * i as u64, r))
            .collect();
        last_ts = stamped.last().map(|(ts, _)| *ts).unwrap_or(last_ts);
        {
            let mut inflight = log.in_flight.lock();
            for (ts, r) in &stamped {
                inflight.insert(*ts, r.executed_on);
            }
        }
        let records = stamped
            .iter()
            .map(|(ts, r)| WalRecord {
                ts: *ts,
                payload: r.payload.to_vec(),
            })
            .collect();
        // Queued in timestamp order on the writer thread, which reports durability in order
        // (`Wal::subscribe_durable`) and failure (`Wal::failed`) itself.
        drop(log.wal.append_batch(records));
        {
            let mut tail = log.tail.write();
            for (ts, r) in &stamped {
                tail.insert(*ts, r.payload.clone());
            }
        }
        for (ts, r) in &mut stamped {
            recent.push(*ts, std::mem::take(&mut r.writes));
        }
        log.sequenced.send_replace(last_ts);
        log.counters.batches.fetch_add(1, Ordering::Relaxed);
        log.counters
            .max_batch
            .fetch_max(stamped.len() as u64, Ordering::Relaxed);
        for (ts, r) in stamped {
            let _ = r.reply.send(Ok(ts));
        }
        if let Some(b) = barrier.take() {
            let _ = b.send(last_ts);
        }
    }
}
