//! Statement rewrites the proxy applies before forwarding.
//!
//! Owns: text rewrites. May import: sql::lexer.

use super::lexer::{Lexer, Tok};

/// Replaces reads of `@@socket` with NULL (keeping the column name). Clients such as
/// mysql_async read `@@socket` right after connecting and, on a loopback address, reconnect
/// to that Unix socket — which is the backend's, so they would silently bypass the proxy.
pub fn hide_backend_socket(sql: &str) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut last = 0;
    let mut changed = false;
    for (i, t) in toks.iter().enumerate() {
        let Tok::SysVar(name) = t.tok else { continue };
        if !(name.eq_ignore_ascii_case("socket") || name.eq_ignore_ascii_case("global.socket")) {
            continue;
        }
        let aliased = toks.get(i + 1).is_some_and(|n| {
            matches!(n.tok, Tok::Word(w) if !w.eq_ignore_ascii_case("FROM"))
                || matches!(n.tok, Tok::Quoted(_) | Tok::Str(_))
        });
        out.push_str(&sql[last..t.start]);
        if aliased {
            out.push_str("NULL");
        } else {
            out.push_str("NULL AS `");
            out.push_str(&sql[t.start..t.end]);
            out.push('`');
        }
        last = t.end;
        changed = true;
    }
    if !changed {
        return None;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// `LOCK TABLES …` with a WRITE lock also locks `myquorum.wal` and `myquorum.wal_part`:
/// writes under table locks record their commit there (a large record spans both), and
/// MySQL refuses tables a LOCK TABLES session did not lock. That lock is exclusive, so
/// every other session's commit waits until UNLOCK TABLES; READ locks alone (mysqldump's
/// `--lock-tables`, its default) allow no write, so they lock only what they name. Locking
/// the log for them stalled the shard's writes for a whole dump, and a writer caught
/// between a LOCK TABLES and its log row lost a deadlock after its quorum, pausing writes.
pub fn lock_tables_with_log(sql: &str) -> Option<String> {
    let mut toks = Lexer::new(sql);
    let first = toks.next()?;
    let second = toks.next()?;
    if !(first.tok.is_word("LOCK") && (second.tok.is_word("TABLES") || second.tok.is_word("TABLE")))
    {
        return None;
    }
    if !toks.any(|t| t.tok.is_word("WRITE")) {
        return None;
    }
    let body = sql.trim_end().trim_end_matches(';').trim_end();
    Some(format!(
        "{body}, myquorum.wal WRITE, myquorum.wal_part WRITE"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_reads_become_null() {
        assert_eq!(
            hide_backend_socket("SELECT @@max_allowed_packet,@@wait_timeout,@@socket").as_deref(),
            Some("SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`")
        );
        assert_eq!(
            hide_backend_socket("select @@socket as s, 1").as_deref(),
            Some("select NULL as s, 1")
        );
        assert_eq!(hide_backend_socket("SELECT '@@socket'"), None);
        assert_eq!(hide_backend_socket("SELECT 1"), None);
    }

    #[test]
    fn table_locks_include_the_log_table() {
        assert_eq!(
            lock_tables_with_log("LOCK TABLES `t` WRITE;").as_deref(),
            Some("LOCK TABLES `t` WRITE, myquorum.wal WRITE, myquorum.wal_part WRITE")
        );
        assert_eq!(
            lock_tables_with_log("LOCK TABLES a READ, b LOW_PRIORITY WRITE").as_deref(),
            Some("LOCK TABLES a READ, b LOW_PRIORITY WRITE, myquorum.wal WRITE, myquorum.wal_part WRITE")
        );
        assert_eq!(
            lock_tables_with_log("LOCK TABLES a READ LOCAL, b READ"),
            None
        );
        assert_eq!(lock_tables_with_log("UNLOCK TABLES"), None);
    }
}
