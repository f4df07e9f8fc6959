//! Certification of transactions whose stored programs read a snapshot.
//!
//! A follower replays the log in timestamp order, so a statement that reads tables on the
//! server (a program's `SELECT … INTO`, an IF's condition) reads there everything logged
//! before its record. On the primary, under REPEATABLE READ, such a plain read sees the
//! transaction's snapshot instead: a transaction committed after the snapshot was taken but
//! logged before this one is invisible to it on the primary and visible on the followers,
//! and the value the program writes differs. When the program starts the transaction, the
//! proxy runs it SERIALIZABLE (its reads lock and see the latest rows); when it comes later
//! in a transaction the level can no longer change, so the transaction is certified at
//! commit instead, as Galera certifies write sets: it is refused (rolled back, the client
//! hears 1213 and retries) when a record between its snapshot and its own place in the log
//! wrote a table its programs name.
//!
//! Tables are compared by bare name (no schema), case-folded: more conflicts, never fewer.
//! A record whose written tables are not all known (a program, a DDL, a trigger or a
//! cascading foreign key that writes further tables) counts as writing every table.
//!
//! Pure: no I/O. Owns: `TableSet`, `RecentWrites`. May import: std only.

use std::collections::VecDeque;
use std::hash::Hasher;

/// Records remembered for certification. A transaction whose snapshot is older than the
/// oldest of them is refused (it cannot be told apart from one that conflicts).
pub const REMEMBERED: usize = 65_536;

/// Tables by the hash of their case-folded bare name, or every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSet {
    Every,
    Named(Vec<u64>),
}

impl Default for TableSet {
    fn default() -> Self {
        TableSet::Named(Vec::new())
    }
}

impl TableSet {
    /// The tables `names` name, each as a table reference is written (`t`, `db.t`,
    /// `` `db`.`t` ``): the last part counts.
    pub fn of_references<'a>(names: impl IntoIterator<Item = &'a str>) -> TableSet {
        let mut set = TableSet::default();
        for name in names {
            set.add_name(last_part(name));
        }
        set
    }

    /// Adds one bare name (unquoted: a quoted name's doubled backticks as the lexer keeps
    /// them are undone here).
    pub fn add_name(&mut self, bare: &str) {
        self.add_hash(name_hash(bare));
    }

    fn add_hash(&mut self, h: u64) {
        if let TableSet::Named(hashes) = self {
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
    }

    pub fn add(&mut self, other: &TableSet) {
        match other {
            TableSet::Every => *self = TableSet::Every,
            TableSet::Named(theirs) => theirs.iter().for_each(|h| self.add_hash(*h)),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, TableSet::Named(h) if h.is_empty())
    }

    /// Whether the two may share a table.
    pub fn meets(&self, other: &TableSet) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        match (self, other) {
            (TableSet::Named(a), TableSet::Named(b)) => a.iter().any(|h| b.contains(h)),
            _ => true,
        }
    }
}

/// The hash of a bare name, case-folded, with doubled backticks as one (no allocation:
/// every logged write hashes its tables).
fn name_hash(bare: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut after_tick = false;
    for c in bare.chars() {
        if c == '`' && after_tick {
            after_tick = false;
            continue;
        }
        after_tick = c == '`';
        c.to_lowercase().for_each(|l| h.write_u32(l as u32));
    }
    h.finish()
}

/// The last dot-separated part of a table reference, without its backticks (a dot inside
/// backticks is part of the name).
fn last_part(reference: &str) -> &str {
    let mut start = 0;
    let mut quoted = false;
    let bytes = reference.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' if quoted && bytes.get(i + 1) == Some(&b'`') => i += 1,
            b'`' => quoted = !quoted,
            b'.' if !quoted => start = i + 1,
            _ => {}
        }
        i += 1;
    }
    let part = &reference[start..];
    part.strip_prefix('`')
        .and_then(|p| p.strip_suffix('`'))
        .unwrap_or(part)
}

/// A transaction to certify: the log position its snapshot is known to include (every
/// record at or below it had committed on the primary before the snapshot could be taken)
/// and the tables its programs read.
#[derive(Debug, Clone)]
pub struct Certify {
    pub snapshot: u64,
    pub reads: TableSet,
}

/// The tables the last `REMEMBERED` records wrote, in timestamp order: the sequencer's.
#[derive(Debug, Default)]
pub struct RecentWrites {
    records: VecDeque<(u64, TableSet)>,
    /// The highest timestamp no longer remembered.
    forgotten: u64,
}

impl RecentWrites {
    /// Nothing before `ts` is remembered (a start, an election).
    pub fn starting_at(ts: u64) -> RecentWrites {
        RecentWrites {
            records: VecDeque::new(),
            forgotten: ts,
        }
    }

    pub fn push(&mut self, ts: u64, writes: TableSet) {
        if self.records.len() == REMEMBERED {
            if let Some((old, _)) = self.records.pop_front() {
                self.forgotten = old;
            }
        }
        self.records.push_back((ts, writes));
    }

    /// Whether a record after `c.snapshot` wrote a table `c` read (or may have: it is no
    /// longer remembered).
    pub fn conflicts(&self, c: &Certify) -> bool {
        if c.reads.is_empty() {
            return false;
        }
        if self.forgotten > c.snapshot {
            return true;
        }
        self.records
            .iter()
            .rev()
            .take_while(|(ts, _)| *ts > c.snapshot)
            .any(|(_, w)| w.meets(&c.reads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> TableSet {
        TableSet::of_references(names.iter().copied())
    }

    #[test]
    fn references_compare_by_bare_case_folded_name() {
        let a = named(&["app.Accounts"]);
        assert!(a.meets(&named(&["accounts"])));
        assert!(a.meets(&named(&["`app`.`accounts`"])));
        assert!(
            a.meets(&named(&["other.accounts"])),
            "schema is not compared"
        );
        assert!(!a.meets(&named(&["ledger"])));
        // A dot inside backticks is part of the name.
        assert!(named(&["`a.b`"]).meets(&named(&["x.`a.b`"])));
        assert!(!named(&["`a.b`"]).meets(&named(&["b"])));
        let mut quoted = TableSet::default();
        quoted.add_name("we``ird");
        assert!(quoted.meets(&named(&["`we``ird`"])));
    }

    #[test]
    fn every_meets_all_but_nothing() {
        assert!(TableSet::Every.meets(&named(&["t"])));
        assert!(named(&["t"]).meets(&TableSet::Every));
        assert!(!TableSet::Every.meets(&TableSet::default()));
        let mut s = named(&["t"]);
        s.add(&TableSet::Every);
        assert_eq!(s, TableSet::Every);
        let mut s = named(&["t"]);
        s.add(&named(&["u", "t"]));
        assert!(s.meets(&named(&["u"])));
        assert_eq!(s, named(&["t", "u"]));
    }

    #[test]
    fn only_records_after_the_snapshot_conflict() {
        let mut recent = RecentWrites::starting_at(10);
        recent.push(11, named(&["a"]));
        recent.push(13, named(&["b"]));
        recent.push(15, named(&["c"]));
        let reads = |snapshot, t: &[&str]| Certify {
            snapshot,
            reads: named(t),
        };
        assert!(recent.conflicts(&reads(10, &["a"])));
        assert!(
            !recent.conflicts(&reads(11, &["a"])),
            "a committed before the snapshot"
        );
        assert!(recent.conflicts(&reads(11, &["c", "x"])));
        assert!(!recent.conflicts(&reads(15, &["a", "b", "c"])));
        assert!(!recent.conflicts(&reads(10, &["x"])));
        assert!(
            !recent.conflicts(&reads(10, &[])),
            "a program that names no table"
        );
        // Older than anything remembered: refused.
        assert!(recent.conflicts(&reads(9, &["x"])));
        recent.push(17, TableSet::Every);
        assert!(recent.conflicts(&reads(15, &["x"])));
    }

    #[test]
    fn forgetting_old_records_refuses_older_snapshots() {
        let mut recent = RecentWrites::starting_at(0);
        for i in 0..REMEMBERED as u64 + 2 {
            recent.push(2 * i + 1, named(&["t"]));
        }
        // Records 1 and 3 are forgotten.
        let at = |snapshot| Certify {
            snapshot,
            reads: named(&["x"]),
        };
        assert!(recent.conflicts(&at(1)));
        assert!(!recent.conflicts(&at(3)));
    }
}
