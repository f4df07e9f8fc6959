//! Which tables a write may run on without the proxy fixing the server's clock first
//! (`sql::clock` judges the statement's text; this knows its tables). A table makes a
//! write read the clock when something the server does for a row may: a TIMESTAMP column
//! (NULL into one means now unless explicit_defaults_for_timestamp), a default or ON
//! UPDATE that is an expression, a generated column (a VIRTUAL one may call NOW() and
//! decide which rows a WHERE matches), a trigger, system versioning, or a foreign key
//! whose ON DELETE/UPDATE action changes a child table that may have any of these. Views,
//! sequences, tables that do not exist (yet) and anything not asked about are unknown, and
//! unknown means the clock is set. The same row tells whether a write to the table changes
//! that table alone (no trigger, no foreign key whose action changes another):
//! certification compares the tables writes change (`replication::certify`).
//!
//! The facts are read per shard on a control-path connection to its primary, for the
//! tables writes asked about, and read again after every schema change through the proxy.
//! A schema change marks itself (`SchemaFacts::change`) from before it runs on the primary
//! until it has finished there; meanwhile, and until the facts were read again after it,
//! every write sets the clock. The change first waits (bounded) for the writes that started
//! without the clock to finish, so none of them runs against the new definition.
//!
//! The information_schema queries are never abandoned mid-flight (no timeout, no
//! cancellation while one runs): MariaDB 10.11 materialises these views in Aria temporary
//! tables and can crash dropping one for an abandoned query (see `health`).
//!
//! Owns: `SchemaFacts` and its refresh task. May import: mysql_async, backend::pool.

use super::pool::BackendPool;
use mysql_async::prelude::Queryable;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// (schema, table), as the server spells them.
pub type TableKey = (String, String);

/// Tables remembered per shard; writes to others set the clock.
const MAX_KNOWN: usize = 10_000;
/// How long a schema change waits for writes running without the clock.
const CHANGE_WAIT: Duration = Duration::from_secs(2);

/// One row per table: its type, then counts of what makes a write to it read the clock.
const TABLE_FACTS_QUERY: &str = "SELECT \
     (SELECT TABLE_TYPE FROM information_schema.TABLES \
       WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?), \
     (SELECT COUNT(*) FROM information_schema.COLUMNS \
       WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         AND (DATA_TYPE = 'timestamp' OR IS_GENERATED <> 'NEVER' \
           OR EXTRA LIKE '%on update%' OR EXTRA LIKE '%generated%' \
           OR NOT (COLUMN_DEFAULT IS NULL OR COLUMN_DEFAULT = 'NULL' \
             OR COLUMN_DEFAULT LIKE '''%' \
             OR COLUMN_DEFAULT REGEXP '^[-+]?[0-9]+([.][0-9]+)?(e[-+]?[0-9]+)?$'))), \
     (SELECT COUNT(*) FROM information_schema.TRIGGERS \
       WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?), \
     (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
       WHERE UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ? \
         AND NOT (UPDATE_RULE IN ('RESTRICT', 'NO ACTION') \
           AND DELETE_RULE IN ('RESTRICT', 'NO ACTION')))";

#[derive(Default)]
struct Known {
    /// The `changes` count the sets below were read at (None: not read yet).
    changes: Option<u64>,
    clock_free: HashSet<TableKey>,
    needs_clock: HashSet<TableKey>,
    /// Of those read, the base tables a write changes alone: no trigger and no foreign key
    /// whose action changes another table (`replication::certify`).
    contained: HashSet<TableKey>,
    /// Asked about, not read yet.
    wanted: HashSet<TableKey>,
}

#[derive(Default)]
pub struct SchemaFacts {
    /// Schema changes through the proxy: counted when one starts and when it ends.
    changes: AtomicU64,
    /// Schema changes running now.
    changing: AtomicUsize,
    /// Writes running without the clock set.
    clockless: AtomicUsize,
    clockless_done: Notify,
    known: Mutex<Known>,
    /// A table was asked about, or a schema change ended: the refresh task has work.
    wake: Notify,
}

/// DDL records the replication layer replayed (recovery, a primary's repair, a new
/// primary catching up, followers): process-wide, as the replayer does not know the
/// cluster. A DDL replayed on the primary changes what was read there; one replayed on a
/// follower only costs a re-read.
static REPLAYED_DDL: AtomicU64 = AtomicU64::new(0);

/// A DDL record was replayed on some replica: every shard's facts are read again.
pub fn note_replayed_ddl() {
    REPLAYED_DDL.fetch_add(1, Ordering::SeqCst);
}

/// Held by a write that runs without the clock set, until its answer came.
pub struct ClocklessWrite(Arc<SchemaFacts>);

impl Drop for ClocklessWrite {
    fn drop(&mut self) {
        if self.0.clockless.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.clockless_done.notify_waiters();
        }
    }
}

/// Held by a schema change from before it runs on the primary until it has finished.
pub struct SchemaChange(Arc<SchemaFacts>);

impl Drop for SchemaChange {
    fn drop(&mut self) {
        self.0.changes.fetch_add(1, Ordering::SeqCst);
        self.0.changing.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

impl SchemaFacts {
    /// Schema changes so far, this shard's and those replayed anywhere.
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst) + REPLAYED_DDL.load(Ordering::SeqCst)
    }

    /// Whether a write to `tables` may run without the clock set: only when every one is
    /// known to read no clock and no schema change ran since that was read. Unknown ones are
    /// asked for (the next write to them may then go without). The guard must live until
    /// the write's answer came.
    pub fn clockless_write(self: &Arc<Self>, tables: &[TableKey]) -> Option<ClocklessWrite> {
        if tables.is_empty() {
            return None;
        }
        // Counted before looking at `changing`, which a change counts before it waits for
        // this count to fall to 0: one of the two sees the other.
        self.clockless.fetch_add(1, Ordering::SeqCst);
        let guard = ClocklessWrite(self.clone());
        if self.changing.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let changes = self.changes();
        let mut known = self.known.lock();
        let mut all_free = known.changes == Some(changes);
        let mut asked = false;
        for t in tables {
            if known.clock_free.contains(t) {
                continue;
            }
            all_free = false;
            let room =
                known.clock_free.len() + known.needs_clock.len() + known.wanted.len() < MAX_KNOWN;
            if room && !known.needs_clock.contains(t) && known.wanted.insert(t.clone()) {
                asked = true;
            }
        }
        drop(known);
        if asked {
            self.wake.notify_one();
        }
        all_free.then_some(guard)
    }

    /// Whether a write to `tables` changes those tables alone (no trigger or cascading
    /// foreign key changes others): only when every one is known so since the last schema
    /// change. Unknown ones are asked for, as `clockless_write` does.
    pub fn writes_only_themselves(&self, tables: &[TableKey]) -> bool {
        if tables.is_empty() || self.changing.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let changes = self.changes();
        let mut known = self.known.lock();
        let fresh = known.changes == Some(changes);
        let mut all = fresh;
        let mut asked = false;
        for t in tables {
            if known.contained.contains(t) {
                continue;
            }
            all = false;
            let read = known.clock_free.contains(t) || known.needs_clock.contains(t);
            let room =
                known.clock_free.len() + known.needs_clock.len() + known.wanted.len() < MAX_KNOWN;
            if room && !read && known.wanted.insert(t.clone()) {
                asked = true;
            }
        }
        drop(known);
        if asked {
            self.wake.notify_one();
        }
        all
    }

    /// Whether `table`'s facts were read since the last schema change, either way.
    pub fn knows(&self, table: &TableKey) -> bool {
        let changes = self.changes();
        let known = self.known.lock();
        known.changes == Some(changes)
            && (known.clock_free.contains(table) || known.needs_clock.contains(table))
    }

    /// Marks a schema change (DDL, CALL) about to run on the primary. Waits, at most
    /// `CHANGE_WAIT`, for the writes running without the clock; keep the guard until the
    /// change has finished on the primary.
    pub async fn change(self: &Arc<Self>) -> SchemaChange {
        self.changing.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        let guard = SchemaChange(self.clone());
        let deadline = tokio::time::Instant::now() + CHANGE_WAIT;
        loop {
            let done = self.clockless_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.clockless.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!(
                    "a schema change waited {CHANGE_WAIT:?} for writes running without the \
                     clock set; it goes ahead (a trigger or default it adds that reads the \
                     clock may give a follower another value for one of them: compare with \
                     PROXY CHECKSUM TABLE)"
                );
                break;
            }
        }
        guard
    }

    /// The tables to read now and the `changes` count they are read at; None when a
    /// change is running or nothing needs reading.
    fn work(&self) -> Option<(u64, Vec<TableKey>, bool)> {
        if self.changing.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let changes = self.changes();
        let known = self.known.lock();
        let fresh = known.changes == Some(changes);
        if fresh && known.wanted.is_empty() {
            return None;
        }
        let mut tables: Vec<TableKey> = known.wanted.iter().cloned().collect();
        if !fresh {
            tables.extend(known.clock_free.iter().cloned());
            tables.extend(known.needs_clock.iter().cloned());
        }
        Some((changes, tables, fresh))
    }

    /// Stores what was read at `changes`, unless a schema change started since.
    fn store(&self, changes: u64, read: Vec<(TableKey, TableFacts)>, fresh: bool) {
        if self.changing.load(Ordering::SeqCst) > 0 || self.changes() != changes {
            return;
        }
        let mut known = self.known.lock();
        if !fresh {
            known.clock_free.clear();
            known.needs_clock.clear();
            known.contained.clear();
        }
        for (
            table,
            TableFacts {
                clock_free,
                contained,
            },
        ) in read
        {
            known.wanted.remove(&table);
            if contained {
                known.contained.insert(table.clone());
            } else {
                known.contained.remove(&table);
            }
            if clock_free {
                known.clock_free.insert(table);
            } else {
                known.needs_clock.insert(table);
            }
        }
        known.changes = Some(changes);
    }
}

/// `TABLE_FACTS_QUERY`'s row: the table's type (None: no such table), then the counts of
/// columns, triggers and foreign keys that may read the clock.
type FactsRow = (Option<String>, u64, u64, u64);

/// What one table's row says about writes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct TableFacts {
    /// A write to it reads no clock.
    clock_free: bool,
    /// A write to it changes no other table.
    contained: bool,
}

/// A table's facts from `TABLE_FACTS_QUERY`'s row (None: unknown, neither).
fn table_facts(row: Option<FactsRow>) -> TableFacts {
    let Some((table_type, clock_columns, triggers, acting_foreign_keys)) = row else {
        return TableFacts::default();
    };
    let base = table_type.as_deref() == Some("BASE TABLE");
    // A system-versioned table's history rows are its own.
    let versioned = table_type.as_deref() == Some("SYSTEM VERSIONED");
    let contained = (base || versioned) && triggers == 0 && acting_foreign_keys == 0;
    TableFacts {
        clock_free: base && contained && clock_columns == 0,
        contained,
    }
}

/// Keeps one shard's facts: reads the tables writes asked about, and all known ones again
/// after a schema change, on the primary `primary()` names. Runs until cancelled, never
/// abandoning a query.
pub async fn run_refresh(
    facts: Arc<SchemaFacts>,
    primary: impl Fn() -> Option<Arc<BackendPool>>,
    retry: Duration,
    cancel: CancellationToken,
) {
    let mut conn: Option<(Arc<str>, mysql_async::Conn)> = None;
    loop {
        let Some((changes, tables, fresh)) = facts.work() else {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = facts.wake.notified() => {}
                // A change that ended while no one was waiting, or one still running.
                _ = tokio::time::sleep(retry) => {}
            }
            continue;
        };
        let Some(pool) = primary() else {
            tokio::time::sleep(retry).await;
            continue;
        };
        if conn.as_ref().is_some_and(|(addr, _)| *addr != pool.addr) {
            conn = None;
        }
        if conn.is_none() {
            let Some(opts) = pool.control_opts() else {
                return;
            };
            match mysql_async::Conn::new(opts).await {
                Ok(c) => conn = Some((pool.addr.clone(), c)),
                Err(e) => {
                    tracing::debug!(backend = %pool.addr, error = %e,
                        "cannot read table definitions yet; writes set the clock meanwhile");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            }
        }
        let Some((_, c)) = conn.as_mut() else {
            continue;
        };
        let mut read = Vec::with_capacity(tables.len());
        let mut failed = false;
        for (schema, table) in tables {
            let s = schema.as_str();
            let t = table.as_str();
            let row: Result<Option<FactsRow>, _> = c
                .exec_first(TABLE_FACTS_QUERY, (s, t, s, t, s, t, s, t))
                .await;
            match row {
                Ok(row) => read.push(((schema, table), table_facts(row))),
                // A server error (two tables whose names differ only in case): unknown.
                Err(mysql_async::Error::Server(_)) => {
                    read.push(((schema, table), TableFacts::default()))
                }
                Err(e) => {
                    tracing::debug!(backend = %pool.addr, error = %e,
                        "reading table definitions failed; writes set the clock meanwhile");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            conn = None;
            tokio::time::sleep(retry).await;
            continue;
        }
        facts.store(changes, read, fresh);
    }
    if let Some((_, c)) = conn {
        let _ = c.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> TableKey {
        ("app".into(), t.into())
    }

    /// A plain table's facts (`clock_free`), or one with a TIMESTAMP column's.
    fn plain(clock_free: bool) -> TableFacts {
        TableFacts {
            clock_free,
            contained: true,
        }
    }

    #[tokio::test]
    async fn only_tables_read_since_the_last_change_go_without_the_clock() {
        let facts = Arc::new(SchemaFacts::default());
        // Nothing read yet: unknown, and asked for.
        assert!(facts.clockless_write(&[key("t"), key("u")]).is_none());
        let (changes, mut tables, fresh) = facts.work().expect("wanted");
        tables.sort();
        assert_eq!(tables, vec![key("t"), key("u")]);
        facts.store(
            changes,
            vec![(key("t"), plain(true)), (key("u"), plain(false))],
            fresh,
        );
        assert!(facts.clockless_write(&[key("t")]).is_some());
        assert!(facts.clockless_write(&[key("t"), key("u")]).is_none());
        assert!(facts.work().is_none(), "u is known to need the clock");
        // Both change only themselves.
        assert!(facts.writes_only_themselves(&[key("t"), key("u")]));
        assert!(!facts.writes_only_themselves(&[key("t"), key("v")]));
        assert!(facts.work().is_some(), "v is asked for");

        // A change: nothing goes without the clock while it runs, nor after it until read.
        let change = facts.change().await;
        assert!(facts.clockless_write(&[key("t")]).is_none());
        assert!(!facts.writes_only_themselves(&[key("t")]));
        assert!(facts.work().is_none(), "not read while the change runs");
        drop(change);
        assert!(facts.clockless_write(&[key("t")]).is_none());
        let (changes, mut tables, fresh) = facts.work().expect("all known, again");
        tables.sort();
        assert_eq!(tables, vec![key("t"), key("u"), key("v")]);
        // What was read while another change started is not kept.
        let again = facts.change().await;
        facts.store(
            changes,
            vec![(key("t"), plain(true)), (key("u"), plain(true))],
            fresh,
        );
        drop(again);
        assert!(facts.clockless_write(&[key("t")]).is_none());
        let (changes, _, fresh) = facts.work().expect("read again");
        facts.store(
            changes,
            vec![(key("t"), plain(true)), (key("u"), plain(true))],
            fresh,
        );
        assert!(facts.clockless_write(&[key("t"), key("u")]).is_some());
        assert!(facts.writes_only_themselves(&[key("t"), key("u")]));
    }

    #[tokio::test]
    async fn a_change_waits_for_writes_running_without_the_clock() {
        let facts = Arc::new(SchemaFacts::default());
        let (changes, _, fresh) = facts.work().expect("first read");
        facts.store(changes, vec![(key("t"), plain(true))], fresh);
        let write = facts.clockless_write(&[key("t")]).expect("clock-free");
        let f = facts.clone();
        // Taken before the spawn: the task may first run a little after the sleep below
        // began, and its own clock then read under 100 ms (seen on a loaded CI machine).
        let started = tokio::time::Instant::now();
        let change = tokio::spawn(async move {
            let _g = f.change().await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!change.is_finished(), "waits for the write");
        drop(write);
        let waited = change.await.expect("change task");
        assert!(waited >= Duration::from_millis(100) && waited < CHANGE_WAIT);
    }

    #[test]
    fn a_table_is_clock_free_only_as_a_base_table_with_nothing_reading_it() {
        let base = || Some("BASE TABLE".to_string());
        let facts = |row| table_facts(Some(row));
        assert_eq!(facts((base(), 0, 0, 0)), plain(true));
        assert_eq!(facts((base(), 1, 0, 0)), plain(false));
        assert_eq!(facts((base(), 0, 1, 0)), TableFacts::default(), "a trigger");
        assert_eq!(facts((base(), 0, 0, 1)), TableFacts::default(), "a cascade");
        assert_eq!(
            facts((Some("SYSTEM VERSIONED".into()), 0, 0, 0)),
            plain(false)
        );
        for other in ["VIEW", "SEQUENCE"] {
            assert_eq!(facts((Some(other.into()), 0, 0, 0)), TableFacts::default());
        }
        assert_eq!(facts((None, 0, 0, 0)), TableFacts::default());
        assert_eq!(table_facts(None), TableFacts::default());
    }
}
