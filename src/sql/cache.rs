//! Classification cache keyed by statement digest: the token stream with literals replaced,
//! so `SELECT c FROM t WHERE id=5` and `… id=6` share one entry (as Vitess caches plans and
//! ProxySQL digests queries). Statements whose meaning depends on their literals (SET, USE,
//! proxy commands, parser fallbacks) are not cached.
//!
//! Owns: `ClassifyCache`. May import: sql::{lexer, classify}, dashmap.

use super::classify::{classify, read_hint, Classified, Flags, Kind};
use super::lexer::{Lexer, Tok};
use dashmap::DashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

pub struct ClassifyCache {
    map: DashMap<u64, Arc<Classified>>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl ClassifyCache {
    pub fn new(capacity: usize) -> Self {
        ClassifyCache {
            map: DashMap::new(),
            capacity,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Digest of a statement: token kinds and words (case-folded), literals as placeholders.
    pub fn digest(&self, sql: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        for t in Lexer::new(sql) {
            match t.tok {
                Tok::Word(w) => {
                    h.write_u8(1);
                    for b in w.bytes() {
                        h.write_u8(b.to_ascii_lowercase());
                    }
                }
                Tok::Quoted(w) => {
                    h.write_u8(2);
                    h.write(w.as_bytes());
                }
                Tok::Str(_) | Tok::Number(_) | Tok::Param => h.write_u8(3),
                Tok::UserVar(v) => {
                    h.write_u8(4);
                    h.write(v.as_bytes());
                }
                Tok::SysVar(v) => {
                    h.write_u8(5);
                    h.write(v.as_bytes());
                }
                Tok::Punct(c) => h.write_u32(c as u32 | 0x100),
            }
        }
        h.finish()
    }

    pub fn classify(&self, sql: &str) -> Arc<Classified> {
        self.classify_keyed(sql).1
    }

    /// `classify`, with the statement's digest (what query statistics are kept by).
    pub fn classify_keyed(&self, sql: &str) -> (u64, Arc<Classified>) {
        let key = self.digest(sql);
        // The digest leaves comments out (statistics count a hinted read with its shape), but
        // a routing hint changes the classification.
        let entry = match read_hint(sql) {
            None => key,
            Some(hint) => {
                let mut h = self.hasher.build_hasher();
                h.write_u64(key);
                h.write_u8(hint as u8 + 1);
                h.finish()
            }
        };
        if let Some(hit) = self.map.get(&entry) {
            return (key, hit.clone());
        }
        let c = Arc::new(classify(sql));
        if cacheable(&c) {
            if self.map.len() >= self.capacity {
                // Workloads have few distinct digests; a full cache means ad-hoc text, where
                // starting over is as good as any eviction policy.
                self.map.clear();
            }
            self.map.insert(entry, c.clone());
        }
        (key, c)
    }
}

fn cacheable(c: &Classified) -> bool {
    !matches!(c.kind, Kind::Session | Kind::Proxy | Kind::Empty)
        && c.session.is_none()
        && !c.flags.contains(Flags::FALLBACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_share_an_entry_and_sets_are_not_cached() {
        let cache = ClassifyCache::new(100);
        assert_eq!(
            cache.digest("SELECT c FROM t WHERE id=5"),
            cache.digest("select c from t where id = 6")
        );
        assert_ne!(
            cache.digest("SELECT c FROM t WHERE id=5"),
            cache.digest("SELECT c FROM u WHERE id=5")
        );
        assert_ne!(cache.digest("SELECT @a"), cache.digest("SELECT @b"));
        let a = cache.classify("SELECT c FROM t WHERE id=5");
        let b = cache.classify("SELECT c FROM t WHERE id=7");
        assert!(Arc::ptr_eq(&a, &b));
        let s1 = cache.classify("SET sql_mode='A'");
        let s2 = cache.classify("SET sql_mode='B'");
        assert_ne!(s1.session, s2.session);
    }
}
