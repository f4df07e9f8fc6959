//! Polling for a client's next command, and for a read's answer, instead of sleeping until
//! it comes (`proxy.busy_poll_us`).
//!
//! A command through the proxy wakes it twice (the client's command, the server's answer)
//! where a direct connection wakes nobody in between, and on a VM a wake-up costs tens of
//! µs. The one that is cheap to avoid is the client's next command inside a transaction or
//! a run of statements: it follows the previous answer within microseconds, so a session
//! that polls its client socket for a short while gets it without its thread going to
//! sleep; likewise the answer to a read it just sent. Polling burns CPU and holds a runtime worker, so only when one client is busy:
//! no other session started a command in the last `ALONE_FOR` (with several busy clients
//! the cores are needed — sysbench write_only at 8 threads looked 4–8 % slower when only
//! "nobody else at work right now" was required — and wake-ups are shared by several
//! events anyway), nobody else is working on a command, one session at a time, and a
//! session whose client does not answer that fast stops polling (an interactive or
//! think-timed client) except for an occasional probe.
//!
//! Owns: the process-wide record of which sessions work, the one-poller rule, and each
//! session's record of whether polling pays. May import: protocol (the stream's poll),
//! context (counters).

use crate::context::Counters;
use crate::protocol::PacketStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Sessions between reading a command and finishing its answer.
static AT_WORK: AtomicUsize = AtomicUsize::new(0);
/// A session is polling its client.
static POLLING: AtomicBool = AtomicBool::new(false);
/// The session that started the latest command, and when (µs on `clock_us`) a command was
/// last started by another session than the one before it.
static LAST_STARTER: AtomicU32 = AtomicU32::new(0);
static STARTER_CHANGED_US: AtomicU64 = AtomicU64::new(0);
static NEXT_SESSION: AtomicU32 = AtomicU32::new(1);
/// How long one session must have had the proxy to itself before it polls.
const ALONE_FOR: Duration = Duration::from_millis(5);

fn clock_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Whether one session alone has started commands for `ALONE_FOR`.
fn one_starter_lately() -> bool {
    clock_us().saturating_sub(STARTER_CHANGED_US.load(Ordering::Relaxed))
        >= ALONE_FOR.as_micros() as u64
}

/// Whether only `session` started commands lately and nobody is at work.
fn alone(session: u32) -> bool {
    AT_WORK.load(Ordering::Relaxed) == 0
        && LAST_STARTER.load(Ordering::Relaxed) == session
        && one_starter_lately()
}

/// Polls that came up empty in a row after which a session stops polling.
const GIVE_UP_AFTER: u8 = 4;
/// While given up, one command in this many is polled for again.
const PROBE_EVERY: u8 = 16;

/// A session at work on a command, until dropped.
pub struct AtWork(());

impl Drop for AtWork {
    fn drop(&mut self) {
        AT_WORK.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long to poll for the answer to a command the current session just sent to a server
/// (None: sleep until it comes): `budget_us` when this session is the only one at work and
/// has had the proxy to itself for a while. Such an answer is due within the command's
/// execution time, a wake-up saved on every statement of a lone client; a slow query costs
/// the budget once.
pub fn answer_budget(budget_us: u64) -> Option<Duration> {
    let alone = AT_WORK.load(Ordering::Relaxed) == 1 && one_starter_lately();
    (budget_us > 0 && alone).then(|| Duration::from_micros(budget_us))
}

fn nobody_at_work() -> bool {
    AT_WORK.load(Ordering::Relaxed) == 0
}

/// Releases the one-poller slot (also when the session's task is dropped mid-poll).
struct PollingSlot(());

impl PollingSlot {
    fn take() -> Option<PollingSlot> {
        POLLING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| PollingSlot(()))
    }
}

impl Drop for PollingSlot {
    fn drop(&mut self) {
        POLLING.store(false, Ordering::Release);
    }
}

/// One session's record of whether its client answers fast enough to poll for.
#[derive(Debug)]
pub struct ClientPoll {
    session: u32,
    /// Polls in a row that ended without input.
    misses: u8,
    /// Commands since the last poll, while given up.
    skipped: u8,
}

impl Default for ClientPoll {
    fn default() -> Self {
        ClientPoll {
            session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            misses: 0,
            skipped: 0,
        }
    }
}

impl ClientPoll {
    /// Counts the session as working on a command until the guard drops.
    pub fn at_work(&self) -> AtWork {
        AT_WORK.fetch_add(1, Ordering::Relaxed);
        if LAST_STARTER.swap(self.session, Ordering::Relaxed) != self.session {
            STARTER_CHANGED_US.store(clock_us(), Ordering::Relaxed);
        }
        AtWork(())
    }

    /// Whether to poll before this wait (pure: the session's own record only).
    fn worth_polling(&mut self) -> bool {
        if self.misses < GIVE_UP_AFTER {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    fn record(&mut self, arrived: bool) {
        self.misses = if arrived {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }

    /// Before waiting for the client's next command: polls for it for up to `budget_us`
    /// when it is worth it and the proxy is idle. Reading the command stays the caller's.
    pub fn before_wait<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &PacketStream<S>,
        budget_us: u64,
        counters: &Counters,
    ) {
        if budget_us == 0 || client.has_buffered_input() || !alone(self.session) {
            return;
        }
        if !self.worth_polling() {
            return;
        }
        let Some(_slot) = PollingSlot::take() else {
            return;
        };
        let arrived = client.poll_for_input(Duration::from_micros(budget_us), nobody_at_work);
        self.record(arrived);
        counters.client_polls.fetch_add(1, Ordering::Relaxed);
        if arrived {
            counters.client_poll_hits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_session_that_had_the_proxy_to_itself_polls() {
        let (a, b) = (ClientPoll::default(), ClientPoll::default());
        drop(a.at_work());
        assert!(!alone(a.session), "another session started just before");
        STARTER_CHANGED_US.store(0, Ordering::Relaxed);
        let _ = clock_us();
        std::thread::sleep(ALONE_FOR);
        assert!(alone(a.session));
        assert!(!alone(b.session));
        let working = a.at_work();
        assert!(!alone(a.session), "at work");
        drop(working);
        drop(b.at_work());
        assert!(!alone(a.session) && !alone(b.session));
    }

    #[test]
    fn a_session_stops_polling_a_slow_client_and_probes_now_and_then() {
        let mut p = ClientPoll::default();
        for _ in 0..GIVE_UP_AFTER {
            assert!(p.worth_polling());
            p.record(false);
        }
        // Given up: only every PROBE_EVERY-th wait polls.
        let polled: Vec<bool> = (0..2 * PROBE_EVERY).map(|_| p.worth_polling()).collect();
        assert_eq!(polled.iter().filter(|&&x| x).count(), 2);
        assert!(polled[usize::from(PROBE_EVERY) - 1]);
        // A probe that finds input brings polling back.
        p.record(true);
        assert!((0..8).all(|_| p.worth_polling()));
        // A hit between misses resets the count.
        for _ in 0..GIVE_UP_AFTER - 1 {
            p.record(false);
        }
        p.record(true);
        p.record(false);
        assert!(p.worth_polling());
    }

    #[test]
    fn one_session_polls_at_a_time() {
        let first = PollingSlot::take().expect("free");
        assert!(PollingSlot::take().is_none());
        drop(first);
        assert!(PollingSlot::take().is_some());
    }
}
