//! Puts a DDL in the log after the write transactions that were open on the primary when it
//! arrived. A DDL is sequenced before it runs on the primary, where it waits for the
//! metadata locks of transactions already writing the table; those commit first there but
//! are sequenced after it, so followers would replay their statements against the new
//! schema (an INSERT without a column list after ADD COLUMN fails there). So a DDL first
//! waits, bounded, until no session has a write transaction open, and writers that have
//! not started one yet wait while it does; a writer already inside a transaction never
//! waits (it may hold server locks the others wait on). When the bound passes the DDL goes
//! ahead unordered, as before, with a warning: a forgotten open transaction must not stop
//! the shard's writes for long.
//!
//! Owns: `DdlOrder` and its guards. May import: nothing of the crate.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    /// Sessions with a write transaction open (or an autocommit write running).
    writers: usize,
    /// A DDL waits for `writers` to reach 0.
    ddl_waiting: bool,
}

#[derive(Default)]
pub struct DdlOrder {
    state: Mutex<State>,
    changed: Notify,
    /// One DDL at a time waits and sequences.
    ddl: tokio::sync::Mutex<()>,
}

/// Held by a session from its transaction's first write until the transaction ends.
pub struct WriterGuard(Arc<DdlOrder>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.state.lock().writers -= 1;
        self.0.changed.notify_waiters();
    }
}

/// Held by a DDL until it ran on the primary (sequenced first): writers that have not
/// started a transaction wait meanwhile, bounded.
pub struct DdlGuard<'a> {
    order: &'a DdlOrder,
    _serial: tokio::sync::MutexGuard<'a, ()>,
    /// Every write transaction open when the DDL arrived had ended.
    pub ordered: bool,
}

impl Drop for DdlGuard<'_> {
    fn drop(&mut self) {
        self.order.state.lock().ddl_waiting = false;
        self.order.changed.notify_waiters();
    }
}

impl DdlOrder {
    /// A session's write transaction starts (or an autocommit write). `in_transaction`: the
    /// session already ran statements in this transaction on the primary, so it never waits.
    pub async fn writer(self: &Arc<Self>, in_transaction: bool, max_wait: Duration) -> WriterGuard {
        {
            // Every write takes this path: no DDL waiting, no waiter registered.
            let mut s = self.state.lock();
            if !s.ddl_waiting || in_transaction {
                s.writers += 1;
                return WriterGuard(self.clone());
            }
        }
        let deadline = Instant::now() + max_wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock();
                if !s.ddl_waiting || in_transaction || Instant::now() >= deadline {
                    s.writers += 1;
                    return WriterGuard(self.clone());
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// A DDL is about to be sequenced: waits for its turn (DDL statements run one at a
    /// time), up to `turn_wait` when given, then up to `max_wait` for the open write
    /// transactions to end, keeping new ones from starting meanwhile. `None`: its turn did
    /// not come. A session holding table locks must bound its turn: the DDL before it may
    /// be waiting on the server for those very locks.
    pub async fn ddl(
        &self,
        max_wait: Duration,
        turn_wait: Option<Duration>,
    ) -> Option<DdlGuard<'_>> {
        let serial = match turn_wait {
            Some(bound) => tokio::time::timeout(bound, self.ddl.lock()).await.ok()?,
            None => self.ddl.lock().await,
        };
        self.state.lock().ddl_waiting = true;
        let mut guard = DdlGuard {
            order: self,
            _serial: serial,
            ordered: false,
        };
        let deadline = Instant::now() + max_wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().writers == 0 {
                guard.ordered = true;
                return Some(guard);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(guard);
            }
        }
    }

    pub fn open_writers(&self) -> usize {
        self.state.lock().writers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ddl_waits_for_open_writers_and_holds_new_ones_back() {
        let order = Arc::new(DdlOrder::default());
        let open = order.writer(false, Duration::from_secs(2)).await;
        let o = order.clone();
        let ddl = tokio::spawn(async move {
            let g = o.ddl(Duration::from_secs(2), None).await.unwrap();
            let ordered = g.ordered;
            // Sequencing happens here; a new writer that arrived meanwhile is still waiting.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let writers_while_sequencing = o.open_writers();
            drop(g);
            (ordered, writers_while_sequencing)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A new writer waits behind the DDL; one inside its transaction does not.
        let o = order.clone();
        let newcomer = tokio::spawn(async move { o.writer(false, Duration::from_secs(2)).await });
        let inside = order.writer(true, Duration::from_secs(2)).await;
        assert_eq!(order.open_writers(), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!newcomer.is_finished());
        drop(inside);
        drop(open);
        let (ordered, writers_while_sequencing) = ddl.await.unwrap();
        assert!(ordered);
        assert_eq!(writers_while_sequencing, 0);
        let _newcomer = newcomer.await.unwrap();
        assert_eq!(order.open_writers(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_transaction_delays_a_ddl_only_up_to_the_bound() {
        let order = Arc::new(DdlOrder::default());
        let _forgotten = order.writer(false, Duration::from_secs(2)).await;
        let started = Instant::now();
        let g = order.ddl(Duration::from_secs(2), None).await.unwrap();
        assert!(!g.ordered);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(g);
        // Writers are not held back once the DDL went ahead.
        let started = Instant::now();
        let _w = order.writer(false, Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ddl_waits_for_its_turn_only_as_long_as_told() {
        let order = Arc::new(DdlOrder::default());
        let first = order.ddl(Duration::from_secs(2), None).await.unwrap();
        let started = Instant::now();
        assert!(order
            .ddl(Duration::from_secs(2), Some(Duration::from_secs(2)))
            .await
            .is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let o = order.clone();
        let unbounded =
            tokio::spawn(
                async move { o.ddl(Duration::from_secs(2), None).await.map(|g| g.ordered) },
            );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!unbounded.is_finished());
        drop(first);
        assert_eq!(unbounded.await.unwrap(), Some(true));
    }
}
