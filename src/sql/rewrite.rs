//! Statement rewrites the proxy applies before forwarding.
//!
//! Owns: text rewrites. May import: sql::lexer, sql::set.

use super::lexer::{Lexer, Spanned, Tok};
use super::set::is_isolation_variable;

/// The bytes to send for `rewritten`, a rewrite of `view`, the text the proxy lexed for the
/// client's `original` bytes (`lexer::offset_preserving_text`: bytes that are not UTF-8,
/// a latin1 client's `'café'`, are masked there). Text the rewrite kept keeps the client's
/// bytes: what it changed is the one span where `view` and `rewritten` differ. None when
/// that span holds masked bytes: the rewrite cannot be carried onto them.
pub fn onto_original(original: &[u8], view: &str, rewritten: &str) -> Option<Vec<u8>> {
    let (view, new) = (view.as_bytes(), rewritten.as_bytes());
    if view == original {
        return Some(new.to_vec());
    }
    if view.len() != original.len() {
        return None;
    }
    let prefix = view.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = view.len().min(new.len()) - prefix;
    let suffix = view
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let changed = prefix..view.len() - suffix;
    if view[changed.clone()] != original[changed] {
        return None;
    }
    let mut out = Vec::with_capacity(new.len());
    out.extend_from_slice(&original[..prefix]);
    out.extend_from_slice(&new[prefix..new.len() - suffix]);
    out.extend_from_slice(&original[view.len() - suffix..]);
    Some(out)
}

/// Replaces reads of `@@socket` with the proxy's own socket (`proxy.listen_socket`), or NULL
/// when it has none, keeping the column name. Clients such as mysql_async read `@@socket`
/// right after connecting and, on a loopback address, reconnect to that Unix socket: the
/// backend's would silently bypass the proxy. A path a plain string literal cannot hold as
/// it is (a quote or a backslash) is NULL too.
pub fn hide_backend_socket(sql: &str, own_socket: Option<&str>) -> Option<String> {
    let value = match own_socket {
        Some(path) if !path.contains(['\'', '\\']) => format!("'{path}'"),
        _ => "NULL".to_string(),
    };
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
        out.push_str(&value);
        if !aliased {
            out.push_str(" AS `");
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

/// What a session reads as its isolation level where the proxy raised the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownIsolation {
    /// The level it asked for, as `@@tx_isolation` spells it (`READ-COMMITTED`).
    Asked(&'static str),
    /// It asked for none: the server's default (`@@GLOBAL.tx_isolation`), as a session
    /// starts with.
    ServerDefault,
}

/// Replaces a SELECT's reads of the session's isolation level (`@@tx_isolation`,
/// `@@session.transaction_isolation`, …) with the level the session asked for, where the
/// proxy runs it at REPEATABLE READ (`set::Isolation::enforced`). An application or ORM
/// that sets READ COMMITTED reads it back (SQLAlchemy's `get_isolation_level`), as it
/// would from a server running it so; the reads it runs behave so too, until its
/// transaction writes. A whole select item keeps its column name. The variable is still
/// read (`IF(@@tx_isolation IS NULL, …)`): a server without it (MariaDB before 11.1 has
/// no `transaction_isolation`, MySQL 8 no `tx_isolation`) refuses the read as it would.
/// Only SELECT statements are changed (in a SET the variable may be what is assigned).
/// None: nothing to replace.
pub fn session_isolation_reads(sql: &str, shown: ShownIsolation) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut in_select = false;
    let reads: Vec<Replacement> = toks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if i == 0 || toks[i - 1].tok == Tok::Punct(';') {
                in_select =
                    t.tok.is_word("SELECT") || t.tok.is_word("WITH") || t.tok == Tok::Punct('(');
            }
            let Tok::SysVar(name) = t.tok else {
                return None;
            };
            if !in_select || !is_isolation_variable(name) {
                return None;
            }
            let literal = match shown {
                ShownIsolation::Asked(level) => {
                    format!("IF({} IS NULL, NULL, '{level}')", &sql[t.start..t.end])
                }
                ShownIsolation::ServerDefault => {
                    let unscoped = name.rsplit('.').next().unwrap_or(name);
                    format!("@@GLOBAL.{unscoped}")
                }
            };
            Some(Replacement::same(i, i, literal))
        })
        .collect();
    (!reads.is_empty()).then(|| with_literals(sql, &toks, &reads))
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

/// Words that may stand right before a select item (the SELECT and its modifiers).
const SELECT_LIST_START: &[&str] = &[
    "SELECT",
    "ALL",
    "DISTINCT",
    "DISTINCTROW",
    "HIGH_PRIORITY",
    "STRAIGHT_JOIN",
    "SQL_SMALL_RESULT",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_CACHE",
    "SQL_NO_CACHE",
    "SQL_CALC_FOUND_ROWS",
];

/// Words that end a select list.
const SELECT_LIST_END: &[&str] = &[
    "FROM",
    "INTO",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "ORDER",
    "LIMIT",
    "FOR",
    "LOCK",
];

/// Replaces `CONNECTION_ID()` with `id`, the session's id on the proxy: the one its
/// handshake gave, which KILL takes and SHOW PROCESSLIST lists. Forwarded, it would give
/// the thread of whichever backend connection the statement ran on (shared with other
/// clients, another one from one statement to the next), and in a write each replica its
/// own. A whole select item keeps its column name and type (`COALESCE(CAST(17 AS UNSIGNED),
/// …) AS `CONNECTION_ID()``). Left alone:
/// a statement that names a PROCESSLIST (there it means the backend's thread), and a text
/// with a CREATE or ALTER, whose stored program, view or default evaluates the call later,
/// on each server (baking in this session's id would change what it means; the DDL checks
/// refuse what cannot be replicated).
pub fn connection_id(sql: &str, id: u32) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let starts_statement = |i: usize| i == 0 || toks[i - 1].tok == Tok::Punct(';');
    if toks.iter().enumerate().any(|(i, t)| {
        t.tok.is_word("PROCESSLIST")
            || starts_statement(i) && (t.tok.is_word("CREATE") || t.tok.is_word("ALTER"))
    }) {
        return None;
    }
    let calls: Vec<Replacement> = toks
        .iter()
        .enumerate()
        .filter(|&(i, t)| {
            t.tok.is_word("CONNECTION_ID")
                && toks.get(i + 1).is_some_and(|n| n.tok == Tok::Punct('('))
                && toks.get(i + 2).is_some_and(|n| n.tok == Tok::Punct(')'))
                // `db.connection_id()` is a stored function of that name.
                && !(i > 0 && toks[i - 1].tok == Tok::Punct('.'))
        })
        .map(|(i, _)| Replacement {
            first: i,
            last: i + 2,
            literal: id.to_string(),
            // The call's column: INT(10) UNSIGNED NOT NULL (a bare `17` is a signed INT(2),
            // which Connector/J gives as Integer where the call gave Long).
            item: format!("COALESCE(CAST({id} AS UNSIGNED), CAST(1000000000 AS UNSIGNED))"),
        })
        .collect();
    (!calls.is_empty()).then(|| with_literals(sql, &toks, &calls))
}

/// A call (tokens `first..=last`) and what takes its place.
pub(crate) struct Replacement {
    pub first: usize,
    pub last: usize,
    pub literal: String,
    /// What takes its place when it is a whole select item (then followed by the call's
    /// text as column name): an expression with the call's column type, where the literal
    /// alone would show the client another.
    pub item: String,
}

impl Replacement {
    pub fn same(first: usize, last: usize, literal: String) -> Replacement {
        Replacement {
            first,
            last,
            item: literal.clone(),
            literal,
        }
    }
}

/// `sql` with each call (`Replacement`, in token order) replaced. A call that is a whole
/// item of a top-level select list keeps its column name (`… AS `CONNECTION_ID()``), as the
/// client would have seen it.
pub(crate) fn with_literals(sql: &str, toks: &[Spanned<'_>], calls: &[Replacement]) -> String {
    let is_word_in = |t: Option<&Spanned<'_>>, words: &[&str]| {
        t.is_some_and(|t| words.iter().any(|w| t.tok.is_word(w)))
    };
    let mut out = String::with_capacity(sql.len() + 32);
    let mut last = 0;
    // Parentheses open, and whether the top level is in a select list.
    let mut depth = 0usize;
    let mut in_select_list = false;
    let mut next_call = calls.iter().peekable();
    // The last token of the call being replaced: its words (`NEXT VALUE FOR s`) are no
    // keywords of the statement.
    let mut in_call_until = None;
    for (i, t) in toks.iter().enumerate() {
        if in_call_until.is_some_and(|end| i <= end) {
            match t.tok {
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(';') => (depth, in_select_list) = (0, false),
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("SELECT") => in_select_list = true,
            Tok::Word(_) if depth == 0 && is_word_in(Some(t), SELECT_LIST_END) => {
                in_select_list = false
            }
            _ => {}
        }
        let Some(call) = next_call.next_if(|c| c.first == i) else {
            continue;
        };
        in_call_until = Some(call.last);
        let close = toks[call.last].end;
        let before = i.checked_sub(1).map(|p| &toks[p]);
        let after = toks.get(call.last + 1);
        // An item's column shows the call's type (`item`) whatever follows it: an alias, or
        // an operator (the item expression has the literal's value); a whole one its name.
        let starts_item = depth == 0
            && in_select_list
            && (before.is_some_and(|b| b.tok == Tok::Punct(','))
                || is_word_in(before, SELECT_LIST_START));
        let ends_item = after.is_none_or(|a| matches!(a.tok, Tok::Punct(',') | Tok::Punct(';')))
            || is_word_in(after, SELECT_LIST_END);
        out.push_str(&sql[last..t.start]);
        if starts_item {
            out.push_str(&call.item);
            if ends_item {
                out.push_str(" AS `");
                out.push_str(&sql[t.start..close].replace('`', "``"));
                out.push('`');
            }
        } else {
            out.push_str(&call.literal);
        }
        last = close;
    }
    out.push_str(&sql[last..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rewrite_keeps_the_bytes_it_did_not_change() {
        let original = b"INSERT INTO t VALUES (CONNECTION_ID(), 'caf\xe9')";
        let view = super::super::lexer::offset_preserving_text(original);
        let rewritten = view.replace("CONNECTION_ID()", "7");
        assert_eq!(
            onto_original(original, &view, &rewritten).unwrap(),
            b"INSERT INTO t VALUES (7, 'caf\xe9')"
        );
        // UTF-8 text: the rewrite as it is.
        assert_eq!(
            onto_original(b"SELECT 1", "SELECT 1", "SELECT 2").unwrap(),
            b"SELECT 2"
        );
        // Two changes around a masked byte: refused rather than sending the mask.
        let original = b"SELECT CONNECTION_ID(), '\xe9', CONNECTION_ID()";
        let view = super::super::lexer::offset_preserving_text(original);
        let rewritten = view.replace("CONNECTION_ID()", "7");
        assert_eq!(onto_original(original, &view, &rewritten), None);
    }

    use super::*;

    #[test]
    fn session_isolation_reads_show_the_level_asked_for() {
        let asked = ShownIsolation::Asked("READ-COMMITTED");
        let cases = [
            (
                "SELECT @@tx_isolation",
                Some("SELECT IF(@@tx_isolation IS NULL, NULL, 'READ-COMMITTED') AS `@@tx_isolation`"),
            ),
            (
                "select @@SESSION.transaction_isolation lvl, @@autocommit",
                Some("select IF(@@SESSION.transaction_isolation IS NULL, NULL, 'READ-COMMITTED') lvl, @@autocommit"),
            ),
            (
                "SELECT 1 FROM dual WHERE @@tx_isolation = 'READ-COMMITTED'",
                Some("SELECT 1 FROM dual WHERE IF(@@tx_isolation IS NULL, NULL, 'READ-COMMITTED') = 'READ-COMMITTED'"),
            ),
            // The global level is the server's.
            ("SELECT @@GLOBAL.tx_isolation", None),
            ("SELECT '@@tx_isolation'", None),
            // Not a read of it.
            ("SET @@tx_isolation = 'READ-COMMITTED'", None),
            ("INSERT INTO t SELECT @@tx_isolation", None),
            (
                "SET @@tx_isolation = 'READ-COMMITTED'; SELECT @@tx_isolation",
                Some("SET @@tx_isolation = 'READ-COMMITTED'; SELECT IF(@@tx_isolation IS NULL, NULL, 'READ-COMMITTED') AS `@@tx_isolation`"),
            ),
            ("SELECT 1; SET @@session.tx_isolation = 'READ-COMMITTED'", None),
        ];
        for (sql, want) in cases {
            assert_eq!(
                session_isolation_reads(sql, asked).as_deref(),
                want,
                "{sql}"
            );
        }
        assert_eq!(
            session_isolation_reads("SELECT @@local.tx_isolation, @@tx_isolation", ShownIsolation::ServerDefault)
                .as_deref(),
            Some("SELECT @@GLOBAL.tx_isolation AS `@@local.tx_isolation`, @@GLOBAL.tx_isolation AS `@@tx_isolation`")
        );
    }

    #[test]
    fn socket_reads_become_the_proxys_socket_or_null() {
        assert_eq!(
            hide_backend_socket("SELECT @@max_allowed_packet,@@wait_timeout,@@socket", None)
                .as_deref(),
            Some("SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`")
        );
        assert_eq!(
            hide_backend_socket("select @@socket as s, 1", None).as_deref(),
            Some("select NULL as s, 1")
        );
        assert_eq!(
            hide_backend_socket("SELECT @@global.socket", Some("/run/mq.sock")).as_deref(),
            Some("SELECT '/run/mq.sock' AS `@@global.socket`")
        );
        assert_eq!(
            hide_backend_socket("SELECT @@socket s", Some("/tmp/it's.sock")).as_deref(),
            Some("SELECT NULL s")
        );
        assert_eq!(hide_backend_socket("SELECT '@@socket'", None), None);
        assert_eq!(hide_backend_socket("SELECT 1", None), None);
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

    #[test]
    fn connection_id_becomes_the_sessions_id() {
        let r = |sql| connection_id(sql, 17);
        assert_eq!(
            r("SELECT CONNECTION_ID()").as_deref(),
            Some("SELECT COALESCE(CAST(17 AS UNSIGNED), CAST(1000000000 AS UNSIGNED)) AS `CONNECTION_ID()`")
        );
        assert_eq!(
            r("select 1, connection_id() , 2 from t").as_deref(),
            Some("select 1, COALESCE(CAST(17 AS UNSIGNED), CAST(1000000000 AS UNSIGNED)) AS `connection_id()` , 2 from t")
        );
        assert_eq!(
            r("SELECT CONNECTION_ID() AS me, CONNECTION_ID() c").as_deref(),
            Some(
                "SELECT COALESCE(CAST(17 AS UNSIGNED), CAST(1000000000 AS UNSIGNED)) AS me, \
                 COALESCE(CAST(17 AS UNSIGNED), CAST(1000000000 AS UNSIGNED)) c"
            )
        );
        // Inside an expression or a clause: the value alone.
        assert_eq!(
            r("SELECT a FROM t WHERE b IN (1, CONNECTION_ID()) ORDER BY a, CONNECTION_ID()")
                .as_deref(),
            Some("SELECT a FROM t WHERE b IN (1, 17) ORDER BY a, 17")
        );
        assert_eq!(
            r("UPDATE jobs SET owner = CONNECTION_ID() WHERE owner IS NULL").as_deref(),
            Some("UPDATE jobs SET owner = 17 WHERE owner IS NULL")
        );
        assert_eq!(
            r("INSERT INTO t (c) VALUES (CONNECTION_ID())").as_deref(),
            Some("INSERT INTO t (c) VALUES (17)")
        );
        assert_eq!(
            r("SET @me = CONNECTION_ID(); SELECT CONNECTION_ID()").as_deref(),
            Some("SET @me = 17; SELECT COALESCE(CAST(17 AS UNSIGNED), CAST(1000000000 AS UNSIGNED)) AS `CONNECTION_ID()`")
        );
        // A server's processlist, a stored function, a column, a string: left alone.
        assert_eq!(
            r("SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"),
            None
        );
        assert_eq!(r("SELECT app.connection_id()"), None);
        assert_eq!(
            r("CREATE FUNCTION f() RETURNS BIGINT NO SQL RETURN CONNECTION_ID()"),
            None
        );
        assert_eq!(r("SELECT 1; CREATE VIEW v AS SELECT CONNECTION_ID()"), None);
        assert_eq!(r("SELECT connection_id FROM t"), None);
        assert_eq!(r("SELECT 'CONNECTION_ID()'"), None);
    }
}
