//! Cabinet weighted quorum (Zhang et al., PVLDB 18(5) 2025; reference code
//! `gengruizhang/cabinet`, `smr/pmgr.go`): geometric weights w_k = r^(n−1−k), consensus
//! threshold CT = ½·Σw, r chosen so that the top t weights stay below CT and the top t+1
//! exceed it. The leader (the shard's primary) always holds the top weight; after each
//! commit the followers are re-ranked by the order their acknowledgements arrived.
//!
//! Pure: no I/O, no tokio. Owns: `Cabinet`, `WeightSnapshot`. May import: router ids.

use crate::router::ReplicaId;

/// Step of the downward search for r (as in the reference code).
const RATIO_STEP: f64 = 0.001;

/// The largest r ≤ 2.0 (in steps of 0.001) with sum(top t) < CT < sum(top t+1), or None
/// when no ratio works (t out of range for n).
pub fn search_ratio(n: usize, t: usize) -> Option<f64> {
    if n == 0 || t == 0 || t >= n {
        return None;
    }
    let mut i = 0u32;
    loop {
        let r = 2.0 - f64::from(i) * RATIO_STEP;
        if r <= 1.0 {
            return None;
        }
        let w = weights(n, r);
        let total: f64 = w.iter().sum();
        let ct = total / 2.0;
        let top_t: f64 = w[..t].iter().sum();
        let top_t1 = top_t + w[t];
        if top_t < ct && ct < top_t1 {
            return Some(r);
        }
        i += 1;
    }
}

/// w_k = r^(n−1−k) for ranks k = 0..n (rank 0 is the heaviest).
pub fn weights(n: usize, r: f64) -> Vec<f64> {
    (0..n).map(|k| r.powi((n - 1 - k) as i32)).collect()
}

/// Default failure threshold: ⌊(n−1)/2⌋ (0 for one or two replicas: every replica must
/// acknowledge).
pub fn default_threshold(n: usize) -> usize {
    n.saturating_sub(1) / 2
}

/// The weights in force for one record: taken when it is sequenced, so concurrent
/// re-weighting never changes the rule a record is judged by.
#[derive(Debug, Clone)]
pub struct WeightSnapshot {
    pub clock: u64,
    /// The leader when it was taken: its weight counts once the transaction has executed
    /// there (a record sequenced under one leader is judged with that leader).
    pub leader: ReplicaId,
    /// Weight per replica id (indexed by `ReplicaId.0`).
    pub weight: Vec<f64>,
    pub ct: f64,
}

impl WeightSnapshot {
    /// Whether the replicas in `holders` carry more than CT.
    pub fn committed(&self, holders: impl IntoIterator<Item = ReplicaId>) -> bool {
        let sum: f64 = holders
            .into_iter()
            .filter_map(|r| self.weight.get(r.0 as usize))
            .sum();
        sum > self.ct
    }
}

#[derive(Debug, Clone)]
pub struct Cabinet {
    pub n: usize,
    pub t: usize,
    pub ratio: f64,
    ct: f64,
    by_rank: Vec<f64>,
    /// Replica at each rank; rank 0 is the leader.
    ranking: Vec<ReplicaId>,
    clock: u64,
}

impl Cabinet {
    /// A cabinet over replicas `0..n` led by `leader`. With n = 1 the leader alone is a
    /// quorum (weight 1 > CT = ½); n = 2 uses t = 1 with r = 2 (leader alone is not enough).
    pub fn new(n: usize, leader: ReplicaId, t: Option<usize>) -> Result<Cabinet, String> {
        if n == 0 {
            return Err("a shard needs at least one replica".into());
        }
        let t = t.unwrap_or_else(|| default_threshold(n));
        let ratio = if n == 1 || t == 0 {
            // Equal weights: with n ≤ 2 that means every replica.
            1.0
        } else {
            search_ratio(n, t).ok_or_else(|| {
                format!(
                    "no Cabinet weight ratio for {n} replicas with failure threshold {t}; \
                     use 0 ≤ t ≤ {}",
                    default_threshold(n)
                )
            })?
        };
        let by_rank = weights(n, ratio);
        let ct = by_rank.iter().sum::<f64>() / 2.0;
        let mut ranking: Vec<ReplicaId> = vec![leader];
        ranking.extend((0..n as u32).map(ReplicaId).filter(|r| *r != leader));
        Ok(Cabinet {
            n,
            t,
            ratio,
            ct,
            by_rank,
            ranking,
            clock: 0,
        })
    }

    pub fn ct(&self) -> f64 {
        self.ct
    }

    pub fn clock(&self) -> u64 {
        self.clock
    }

    pub fn leader(&self) -> ReplicaId {
        self.ranking[0]
    }

    pub fn weight_of(&self, replica: ReplicaId) -> f64 {
        self.ranking
            .iter()
            .position(|r| *r == replica)
            .map(|k| self.by_rank[k])
            .unwrap_or(0.0)
    }

    pub fn snapshot(&self) -> WeightSnapshot {
        let mut weight = vec![0.0; self.n];
        for (k, r) in self.ranking.iter().enumerate() {
            if let Some(w) = weight.get_mut(r.0 as usize) {
                *w = self.by_rank[k];
            }
        }
        WeightSnapshot {
            clock: self.clock,
            leader: self.ranking[0],
            weight,
            ct: self.ct,
        }
    }

    /// Re-ranks followers by acknowledgement order after a commit judged under `clock`:
    /// the fastest gets the next-highest weight, followers that did not acknowledge keep
    /// their relative order below. A commit judged under an older clock is ignored, so the
    /// clock only moves forward. Returns whether the weights changed clock.
    pub fn reweight(&mut self, clock: u64, ack_order: &[ReplicaId]) -> bool {
        if clock != self.clock {
            return false;
        }
        let leader = self.ranking[0];
        let mut next = vec![leader];
        for r in ack_order {
            if *r != leader && !next.contains(r) && self.ranking.contains(r) {
                next.push(*r);
            }
        }
        for r in &self.ranking[1..] {
            if !next.contains(r) {
                next.push(*r);
            }
        }
        self.ranking = next;
        self.clock += 1;
        true
    }

    /// A new leader takes the top weight; the old one (just failed or handed over) drops to
    /// the bottom, the others keep their relative order. The clock moves forward, so
    /// commits judged under the old weights no longer re-weight.
    pub fn set_leader(&mut self, leader: ReplicaId) {
        let old = self.ranking[0];
        if old == leader || !self.ranking.contains(&leader) {
            return;
        }
        let mut next = vec![leader];
        next.extend(
            self.ranking
                .iter()
                .copied()
                .filter(|r| *r != leader && *r != old),
        );
        next.push(old);
        self.ranking = next;
        self.clock += 1;
    }

    /// Followers by current rank (heaviest first).
    pub fn ranking(&self) -> &[ReplicaId] {
        &self.ranking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_search_matches_the_reference_code() {
        let r1 = search_ratio(7, 1).unwrap();
        assert!((r1 - 1.983).abs() < 0.0005, "n=7 t=1 gave {r1}");
        let r2 = search_ratio(7, 2).unwrap();
        assert!((r2 - 1.324).abs() < 0.0005, "n=7 t=2 gave {r2}");
        // n=3, t=1: r² < CT < r² + r holds for 0.618 < r < 1.618….
        let r3 = search_ratio(3, 1).unwrap();
        assert!((r3 - 1.618).abs() < 0.0005, "n=3 t=1 gave {r3}");
        assert_eq!(search_ratio(3, 3), None);
        assert_eq!(search_ratio(7, 0), None);
    }

    #[test]
    fn threshold_invariant_holds_for_every_size() {
        for n in 2..=9 {
            for t in 1..=default_threshold(n) {
                let r = search_ratio(n, t).unwrap();
                let w = weights(n, r);
                let ct = w.iter().sum::<f64>() / 2.0;
                assert!(w[..t].iter().sum::<f64>() < ct, "n={n} t={t}");
                assert!(w[..=t].iter().sum::<f64>() > ct, "n={n} t={t}");
            }
        }
    }

    #[test]
    fn commit_rule_needs_more_than_half_the_weight() {
        let c = Cabinet::new(3, ReplicaId(0), None).unwrap();
        let s = c.snapshot();
        // The leader alone is not a quorum; the leader with any follower is, and so are the
        // two followers together (n − t nodes always carry more than CT).
        assert!(!s.committed([ReplicaId(0)]));
        assert!(s.committed([ReplicaId(0), ReplicaId(2)]));
        assert!(s.committed([ReplicaId(0), ReplicaId(1)]));
        assert!(s.committed([ReplicaId(1), ReplicaId(2)]));

        // n=5, t=1: the two heaviest commit (fast path), the three lightest may not.
        let c = Cabinet::new(5, ReplicaId(0), Some(1)).unwrap();
        let s = c.snapshot();
        assert!(!s.committed([ReplicaId(0)]));
        assert!(s.committed([ReplicaId(0), ReplicaId(1)]));
        assert!(!s.committed([ReplicaId(2), ReplicaId(3), ReplicaId(4)]));
        // n=5, t=2: no two commit, any three do.
        let c = Cabinet::new(5, ReplicaId(0), Some(2)).unwrap();
        let s = c.snapshot();
        assert!(!s.committed([ReplicaId(0), ReplicaId(1)]));
        assert!(s.committed([ReplicaId(0), ReplicaId(1), ReplicaId(2)]));
        assert!(s.committed([ReplicaId(2), ReplicaId(3), ReplicaId(4)]));
        // One replica: the leader alone.
        let c = Cabinet::new(1, ReplicaId(0), None).unwrap();
        assert!(c.snapshot().committed([ReplicaId(0)]));
        // Two replicas: both.
        let s = Cabinet::new(2, ReplicaId(0), None).unwrap().snapshot();
        assert!(!s.committed([ReplicaId(0)]));
        assert!(s.committed([ReplicaId(0), ReplicaId(1)]));
        assert!(Cabinet::new(3, ReplicaId(0), Some(2)).is_err());
    }

    #[test]
    fn reweighting_follows_ack_order_and_the_clock_only_moves_forward() {
        let mut c = Cabinet::new(5, ReplicaId(0), Some(2)).unwrap();
        let before = c.snapshot();
        assert!(c.weight_of(ReplicaId(1)) > c.weight_of(ReplicaId(4)));
        assert!(c.reweight(before.clock, &[ReplicaId(4), ReplicaId(3)]));
        assert_eq!(
            c.ranking(),
            &[
                ReplicaId(0),
                ReplicaId(4),
                ReplicaId(3),
                ReplicaId(1),
                ReplicaId(2)
            ]
        );
        assert!(c.weight_of(ReplicaId(4)) > c.weight_of(ReplicaId(1)));
        // The leader keeps the top weight whatever the order says.
        assert!(c.reweight(c.clock(), &[ReplicaId(2), ReplicaId(0)]));
        assert_eq!(c.ranking()[0], ReplicaId(0));
        assert_eq!(c.ranking()[1], ReplicaId(2));
        // A stale commit (older clock) does not re-weight.
        let ranking = c.ranking().to_vec();
        assert!(!c.reweight(before.clock, &[ReplicaId(1)]));
        assert_eq!(c.ranking(), &ranking[..]);
        assert_eq!(c.clock(), 2);
        // Snapshots taken earlier keep judging by their own weights.
        assert!(before.weight[1] > before.weight[4]);
    }

    #[test]
    fn a_new_leader_takes_the_top_weight_and_the_old_one_the_bottom() {
        let mut c = Cabinet::new(5, ReplicaId(0), Some(2)).unwrap();
        assert!(c.reweight(0, &[ReplicaId(3), ReplicaId(1)]));
        let before = c.snapshot();
        c.set_leader(ReplicaId(1));
        assert_eq!(c.leader(), ReplicaId(1));
        assert_eq!(
            c.ranking(),
            &[
                ReplicaId(1),
                ReplicaId(3),
                ReplicaId(2),
                ReplicaId(4),
                ReplicaId(0)
            ]
        );
        assert_eq!(c.snapshot().leader, ReplicaId(1));
        assert!(c.clock() > before.clock);
        // A commit judged under the old leader's weights cannot re-weight the new cabinet.
        assert!(!c.reweight(before.clock, &[ReplicaId(4)]));
        // The two live followers with the new leader still make a quorum (n − t = 3).
        assert!(c
            .snapshot()
            .committed([ReplicaId(1), ReplicaId(2), ReplicaId(4)]));
        // Unknown replica or same leader: nothing changes.
        let clock = c.clock();
        c.set_leader(ReplicaId(9));
        c.set_leader(ReplicaId(1));
        assert_eq!(c.clock(), clock);
    }
}
