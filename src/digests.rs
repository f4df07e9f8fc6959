//! Per-query-digest statistics (ProxySQL's `stats_mysql_query_digest`): for each statement
//! shape (the text with its literals as `?`), how often it ran, how long it took through
//! the proxy, and where it went. `SHOW PROXY QUERIES` lists them by total time;
//! `PROXY RESET QUERIES` starts over.
//!
//! Owns: `QueryDigests`. May import: sql::lexer, dashmap.

use crate::sql::lexer::{Lexer, Tok};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Distinct digests kept; later new ones are counted together under `OTHER`, so ad-hoc
/// texts cannot grow the table without bound.
const MAX_DIGESTS: usize = 5000;
const OTHER: u64 = 0;
/// Longest digest text kept, in bytes.
const MAX_TEXT: usize = 1024;

/// Where a statement was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Primary,
    Replica,
    /// Answered by the proxy itself (proxy statements, kept diagnostics, refusals).
    Proxy,
}

struct Entry {
    text: String,
    count: AtomicU64,
    sum_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    by_target: [AtomicU64; 3],
    first_seen: u64,
    last_seen: AtomicU64,
}

impl Entry {
    fn new(text: String, now: u64) -> Entry {
        Entry {
            text,
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            by_target: Default::default(),
            first_seen: now,
            last_seen: AtomicU64::new(now),
        }
    }

    fn add(&self, us: u64, served: Served, now: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.by_target[served as usize].fetch_add(1, Ordering::Relaxed);
        self.last_seen.store(now, Ordering::Relaxed);
    }
}

/// One digest's figures, as `SHOW PROXY QUERIES` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRow {
    pub digest: u64,
    pub text: String,
    pub count: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    /// Executions served by the primary, a replica and the proxy itself.
    pub primary: u64,
    pub replica: u64,
    pub proxy: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Default)]
pub struct QueryDigests {
    map: DashMap<u64, Entry>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl QueryDigests {
    /// Counts one execution of `sql`, whose digest (`ClassifyCache::digest`) is `digest`.
    /// The text is normalized only the first time a digest is seen.
    pub fn record(&self, digest: u64, sql: &str, took: Duration, served: Served) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let now = unix_now();
        // A digest of 0 would merge with OTHER: vanishingly rare, and harmless.
        if let Some(e) = self.map.get(&digest) {
            e.add(us, served, now);
            return;
        }
        let (key, text) = if self.map.len() >= MAX_DIGESTS {
            (OTHER, "(other digests, past the table's limit)".to_string())
        } else {
            (digest, digest_text(sql))
        };
        self.map
            .entry(key)
            .or_insert_with(|| Entry::new(text, now))
            .add(us, served, now);
    }

    /// Every digest, the most total time first.
    pub fn rows(&self) -> Vec<DigestRow> {
        let mut rows: Vec<DigestRow> = self
            .map
            .iter()
            .map(|e| {
                let v = e.value();
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let count = load(&v.count);
                DigestRow {
                    digest: *e.key(),
                    text: v.text.clone(),
                    count,
                    sum_us: load(&v.sum_us),
                    min_us: if count == 0 { 0 } else { load(&v.min_us) },
                    max_us: load(&v.max_us),
                    primary: load(&v.by_target[Served::Primary as usize]),
                    replica: load(&v.by_target[Served::Replica as usize]),
                    proxy: load(&v.by_target[Served::Proxy as usize]),
                    first_seen: v.first_seen,
                    last_seen: load(&v.last_seen),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.sum_us.cmp(&a.sum_us).then(a.text.cmp(&b.text)));
        rows
    }

    /// Forgets every digest (`PROXY RESET QUERIES`); returns how many there were.
    pub fn reset(&self) -> usize {
        let n = self.map.len();
        self.map.clear();
        n
    }
}

/// A statement's shape: its tokens with literals as `?`, a list of literals as `?,...` and
/// a run of such tuples as one (`VALUES (?,...),...`), one space between tokens (none after
/// `(` or `.`, none before `,`, `)`, `.`, none between a function and its `(`), cut at
/// `MAX_TEXT` bytes.
pub fn digest_text(sql: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<Tok<'_>> = None;
    for t in Lexer::new(sql) {
        let space = match (&prev, &t.tok) {
            (None, _) => false,
            (Some(Tok::Punct('(' | '.')), _) => false,
            (_, Tok::Punct(',' | ')' | '.' | ';')) => false,
            (Some(Tok::Word(w)), Tok::Punct('(')) => is_keyword_before_paren(w),
            _ => true,
        };
        if space {
            out.push(' ');
        }
        match t.tok {
            Tok::Word(w) => out.push_str(w),
            Tok::Quoted(w) => {
                out.push('`');
                out.push_str(w);
                out.push('`');
            }
            Tok::Str(_) | Tok::Number(_) | Tok::Param => out.push('?'),
            Tok::UserVar(v) => {
                out.push('@');
                out.push_str(v.trim_start_matches('@'));
            }
            Tok::SysVar(v) => {
                out.push_str("@@");
                out.push_str(v.trim_start_matches('@'));
            }
            Tok::Punct(c) => out.push(c),
        }
        prev = Some(t.tok);
        // Long enough to give MAX_TEXT once lists are collapsed.
        if out.len() > 8 * MAX_TEXT {
            break;
        }
    }
    let mut out = collapse(
        &collapse(&out, "?", ", ?", "?,..."),
        "(?,...)",
        ", (?,...)",
        "(?,...),...",
    );
    if out.len() > MAX_TEXT {
        let cut = (0..=MAX_TEXT)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// Replaces `item` followed by one or more `more` with `with`.
fn collapse(s: &str, item: &str, more: &str, with: &str) -> String {
    let first = format!("{item}{more}");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&first) {
        out.push_str(&rest[..i]);
        out.push_str(with);
        rest = &rest[i + item.len()..];
        while let Some(r) = rest.strip_prefix(more) {
            rest = r;
        }
    }
    out.push_str(rest);
    out
}

/// Words after which `(` opens a list or subquery, not a function's arguments.
fn is_keyword_before_paren(w: &str) -> bool {
    [
        "IN", "VALUES", "VALUE", "AND", "OR", "NOT", "ON", "AS", "FROM", "JOIN", "EXISTS", "WHERE",
        "SET", "INTO",
    ]
    .iter()
    .any(|k| w.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_placeholders_and_lists_collapse() {
        assert_eq!(
            digest_text("SELECT c FROM sbtest1 WHERE id=5"),
            "SELECT c FROM sbtest1 WHERE id = ?"
        );
        assert_eq!(
            digest_text("select * from t where id in (1, 2, 3) and name = 'x'"),
            "select * from t where id in (?,...) and name = ?"
        );
        assert_eq!(
            digest_text("INSERT INTO `t` (a, b) VALUES (1, 'a'), (2, 'b'), (3, 'c')"),
            "INSERT INTO `t` (a, b) VALUES (?,...),..."
        );
        assert_eq!(
            digest_text("SELECT COUNT(*), NOW() FROM db.t WHERE x IN (?)"),
            "SELECT COUNT(*), NOW() FROM db.t WHERE x IN (?)"
        );
        assert_eq!(digest_text("SELECT @a, @@version"), "SELECT @a, @@version");
        let long = format!("SELECT {}", "col, ".repeat(400));
        assert!(digest_text(&long).len() <= MAX_TEXT + 3);
    }

    #[test]
    fn executions_add_up_per_digest() {
        let d = QueryDigests::default();
        d.record(7, "SELECT 1", Duration::from_micros(100), Served::Replica);
        d.record(7, "SELECT 2", Duration::from_micros(300), Served::Primary);
        d.record(
            9,
            "UPDATE t SET a = 1",
            Duration::from_micros(50),
            Served::Primary,
        );
        let rows = d.rows();
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(
            (first.digest, first.text.as_str(), first.count, first.sum_us),
            (7, "SELECT ?", 2, 400)
        );
        assert_eq!((first.min_us, first.max_us), (100, 300));
        assert_eq!((first.primary, first.replica, first.proxy), (1, 1, 0));
        assert_eq!(d.reset(), 2);
        assert!(d.rows().is_empty());
    }

    #[test]
    fn new_digests_past_the_limit_are_counted_together() {
        let d = QueryDigests::default();
        for i in 1..=(MAX_DIGESTS as u64 + 10) {
            d.record(i, "SELECT 1", Duration::from_micros(1), Served::Proxy);
        }
        let rows = d.rows();
        assert_eq!(rows.len(), MAX_DIGESTS + 1);
        let other = rows.iter().find(|r| r.digest == OTHER).map(|r| r.count);
        assert_eq!(other, Some(10));
    }
}
