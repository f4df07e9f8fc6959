//! Primary election as a value (SEER-style: the replica predicted to serve writes fastest,
//! among those that can be trusted with them). Pure: no I/O; the failover task gathers the
//! candidates and carries the decision out.
//!
//! Score (milliseconds, lower is better):
//!   latency_ms                      — predicted round trip (health-probe EWMA)
//! + behind × apply_ms               — time to catch up with the log before it may lead
//! + 50 × times_down                 — crash history: a replica that fell over before will again
//! + 1000 if up for less than min_uptime — a replica that just came back is a last resort
//!
//! Hard conditions: healthy, its applier connected, not quarantined, not the primary being
//! replaced; and at least n − t replicas live (the Cabinet failure threshold t), so an
//! election never happens in a minority that could not commit anyway.
//!
//! Owns: `Candidate`, `elect`. May import: router ids.

use crate::router::ReplicaId;

/// What the election knows about one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub replica: ReplicaId,
    /// Healthy, applier connected, not quarantined.
    pub live: bool,
    /// Log records it still has to apply to reach the end of the log.
    pub behind: u64,
    /// Health-probe round trip EWMA, µs (0: no sample yet).
    pub latency_us: u64,
    /// Typical time to apply one record there, µs (0: no sample yet).
    pub apply_us: u64,
    pub uptime_s: u64,
    pub times_down: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Replicas in the shard and the Cabinet failure threshold.
    pub n: usize,
    pub t: usize,
    /// Below this uptime a replica is penalised (just restarted: may be flapping).
    pub min_uptime_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The winner, and every eligible candidate's score (best first) for the log.
    Elect {
        replica: ReplicaId,
        scores: Vec<(ReplicaId, f64)>,
    },
    /// Fewer than n − t replicas are live.
    TooFewLive { live: usize, needed: usize },
    /// Enough replicas live, but none may lead (all excluded or quarantined).
    NoCandidate,
}

/// Unknown latency or apply time counts as slow-ish rather than free.
const UNKNOWN_LATENCY_US: u64 = 5_000;
const UNKNOWN_APPLY_US: u64 = 1_000;

pub fn score(c: &Candidate, rules: &Rules) -> f64 {
    let latency = if c.latency_us == 0 {
        UNKNOWN_LATENCY_US
    } else {
        c.latency_us
    } as f64
        / 1000.0;
    let apply = if c.apply_us == 0 {
        UNKNOWN_APPLY_US
    } else {
        c.apply_us
    } as f64
        / 1000.0;
    let mut s = latency + c.behind as f64 * apply + 50.0 * c.times_down as f64;
    if c.uptime_s < rules.min_uptime_s {
        s += 1000.0;
    }
    s
}

/// Chooses the next primary among `candidates` (every replica of the shard), never
/// `replacing`. `replacing_live` says whether the primary being replaced is itself live (a
/// switchover): it counts towards n − t but cannot win.
pub fn elect(
    candidates: &[Candidate],
    replacing: ReplicaId,
    replacing_live: bool,
    rules: &Rules,
) -> Verdict {
    let live = candidates
        .iter()
        .filter(|c| c.live && c.replica != replacing)
        .count()
        + usize::from(replacing_live);
    let needed = rules.n.saturating_sub(rules.t).max(1);
    if live < needed {
        return Verdict::TooFewLive { live, needed };
    }
    let mut scores: Vec<(ReplicaId, f64)> = candidates
        .iter()
        .filter(|c| c.live && c.replica != replacing)
        .map(|c| (c.replica, score(c, rules)))
        .collect();
    // Best score first; equal scores go to the lower replica id (deterministic).
    scores.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0 .0.cmp(&b.0 .0)));
    match scores.first() {
        Some((replica, _)) => Verdict::Elect {
            replica: *replica,
            scores,
        },
        None => Verdict::NoCandidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(r: u32, latency_us: u64) -> Candidate {
        Candidate {
            replica: ReplicaId(r),
            live: true,
            behind: 0,
            latency_us,
            apply_us: 300,
            uptime_s: 3600,
            times_down: 0,
        }
    }

    const RULES: Rules = Rules {
        n: 3,
        t: 1,
        min_uptime_s: 30,
    };

    fn winner(v: Verdict) -> u32 {
        match v {
            Verdict::Elect { replica, .. } => replica.0,
            other => panic!("no winner: {other:?}"),
        }
    }

    #[test]
    fn the_fastest_caught_up_replica_wins() {
        let c = [cand(0, 100), cand(1, 900), cand(2, 400)];
        assert_eq!(winner(elect(&c, ReplicaId(0), false, &RULES)), 2);
        // The replaced primary never wins, however fast.
        let c = [cand(0, 1), cand(1, 900), cand(2, 400)];
        assert_eq!(winner(elect(&c, ReplicaId(0), false, &RULES)), 2);
    }

    #[test]
    fn lag_crash_history_and_a_fresh_restart_weigh_against_a_replica() {
        // Replica 0 is the primary being replaced; 1 is slow but current, 2 fast.
        let among = |a: &Candidate, b: &Candidate| {
            winner(elect(
                &[cand(0, 1), a.clone(), b.clone()],
                ReplicaId(0),
                false,
                &RULES,
            ))
        };
        let mut slow_but_current = cand(1, 900);
        let mut fast_but_behind = cand(2, 400);
        fast_but_behind.behind = 10; // 10 × 0.3 ms to catch up
        assert_eq!(among(&slow_but_current, &fast_but_behind), 1);
        fast_but_behind.behind = 0;
        fast_but_behind.times_down = 2;
        assert_eq!(among(&slow_but_current, &fast_but_behind), 1);
        fast_but_behind.times_down = 0;
        slow_but_current.uptime_s = 5;
        assert_eq!(among(&slow_but_current, &fast_but_behind), 2);
    }

    #[test]
    fn an_election_needs_n_minus_t_live_replicas() {
        let mut down = cand(2, 400);
        down.live = false;
        // Primary 0 dead, 2 down: one live replica of the three, two needed.
        assert_eq!(
            elect(
                &[cand(0, 1), cand(1, 900), down.clone()],
                ReplicaId(0),
                false,
                &RULES
            ),
            Verdict::TooFewLive { live: 1, needed: 2 }
        );
        // A switchover away from a live primary: it counts as live, but 1 must win.
        assert_eq!(
            winner(elect(
                &[cand(0, 1), cand(1, 900), down],
                ReplicaId(0),
                true,
                &RULES
            )),
            1
        );
        // Equal scores: the lower id, every time.
        assert_eq!(
            winner(elect(
                &[cand(0, 1), cand(2, 500), cand(1, 500)],
                ReplicaId(0),
                false,
                &RULES
            )),
            1
        );
    }
}
