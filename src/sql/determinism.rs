//! What a write needs so that re-executing it on a follower gives the primary's result, as
//! MySQL's statement-based binlog decides it: which per-statement context to capture (random
//! seeds, LAST_INSERT_ID()), which calls to rewrite to literals (UUID(), UUID_SHORT(),
//! SYSDATE()), and which statements to refuse because no context makes them deterministic.
//!
//! Pure: no I/O. Owns: `WriteCheck`. May import: sql::lexer.

use super::lexer::{Lexer, Tok};

/// Values the proxy substitutes for non-deterministic calls (chosen by the caller so this
/// module stays pure).
pub struct Literals<'a> {
    pub uuid: &'a dyn Fn() -> String,
    pub uuid_short: &'a dyn Fn() -> u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteCheck {
    /// RAND() without a seed: set rand_seed1/2 on the primary and record them.
    pub needs_rand_seed: bool,
    /// LAST_INSERT_ID() read: record the connection's value before the statement.
    pub needs_last_insert_id: bool,
    /// The text to execute and record, when calls were rewritten.
    pub rewritten: Option<String>,
    /// Why the statement cannot be replicated deterministically.
    pub refused: Option<String>,
}

/// Functions whose result differs between servers or executions and that no recorded
/// context fixes.
const REFUSED_FUNCTIONS: &[&str] = &[
    "LOAD_FILE",
    "CONNECTION_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "GET_LOCK",
    "RELEASE_LOCK",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "SLEEP",
    "BENCHMARK",
    "VERSION",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "SYS_GUID",
    "RANDOM_BYTES",
    "UUID_TO_BIN",
];

/// Server variables that differ between replicas.
const REFUSED_SYSVARS: &[&str] = &[
    "hostname",
    "server_id",
    "port",
    "pid_file",
    "datadir",
    "socket",
    "gtid_binlog_pos",
    "gtid_current_pos",
    "server_uuid",
];

/// Checks one write statement. `prepared` statements cannot have calls rewritten (the text
/// is prepared once and executed many times), so those calls are refused there.
pub fn check_write(sql: &str, prepared: bool, lit: &Literals<'_>) -> WriteCheck {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut check = WriteCheck::default();
    let mut out = String::new();
    let mut last = 0usize;
    let mut has_limit = false;
    let mut has_order_by = false;
    let first = toks.first().map(|t| t.tok);
    let is_update_or_delete = first.is_some_and(|t| t.is_word("UPDATE") || t.is_word("DELETE"));
    let is_insert_select = first.is_some_and(|t| t.is_word("INSERT") || t.is_word("REPLACE"))
        && toks.iter().any(|t| t.tok.is_word("SELECT"));
    let refuse = |check: &mut WriteCheck, why: String| {
        if check.refused.is_none() {
            check.refused = Some(why);
        }
    };
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::UserVar(v) => refuse(
                &mut check,
                format!(
                    "the write uses user variable @{v}, whose value the followers do not have; \
                     pass the value as a literal or a prepared-statement parameter"
                ),
            ),
            Tok::SysVar(v) => {
                let name = v.rsplit('.').next().unwrap_or(v).to_ascii_lowercase();
                if REFUSED_SYSVARS.contains(&name.as_str()) {
                    refuse(
                        &mut check,
                        format!("the write reads @@{name}, which differs between replicas"),
                    );
                }
            }
            Tok::Word(w) => {
                if w.eq_ignore_ascii_case("LIMIT") {
                    has_limit = true;
                }
                if w.eq_ignore_ascii_case("BY") && i > 0 && toks[i - 1].tok.is_word("ORDER") {
                    has_order_by = true;
                }
                let is_call = toks
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.tok, Tok::Punct('(')));
                if !is_call {
                    continue;
                }
                let upper = w.to_ascii_uppercase();
                let empty_args = toks
                    .get(i + 2)
                    .is_some_and(|n| matches!(n.tok, Tok::Punct(')')));
                match upper.as_str() {
                    "RAND" if empty_args => check.needs_rand_seed = true,
                    "LAST_INSERT_ID" if empty_args => check.needs_last_insert_id = true,
                    "UUID" | "UUID_SHORT" | "SYSDATE" if prepared => refuse(
                        &mut check,
                        format!(
                            "{upper}() in a prepared write cannot be made deterministic; \
                             compute the value in the application or use a text statement"
                        ),
                    ),
                    "UUID" | "UUID_SHORT" if empty_args => {
                        let close = toks[i + 2].end;
                        out.push_str(&sql[last..t.start]);
                        if upper == "UUID" {
                            out.push('\'');
                            out.push_str(&(lit.uuid)());
                            out.push('\'');
                        } else {
                            out.push_str(&(lit.uuid_short)().to_string());
                        }
                        last = close;
                    }
                    "SYSDATE" => {
                        // NOW() follows the recorded timestamp; SYSDATE() would not.
                        out.push_str(&sql[last..t.start]);
                        out.push_str("NOW");
                        last = t.end;
                    }
                    f if REFUSED_FUNCTIONS.contains(&f) => refuse(
                        &mut check,
                        format!("{f}() gives different results on different replicas"),
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if has_limit && !has_order_by && (is_update_or_delete || is_insert_select) {
        refuse(
            &mut check,
            "LIMIT without ORDER BY picks rows in an unspecified order, so replicas could \
             change different rows; add ORDER BY on a unique key"
                .into(),
        );
    }
    if last > 0 {
        out.push_str(&sql[last..]);
        check.rewritten = Some(out);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit() -> Literals<'static> {
        Literals {
            uuid: &|| "11111111-2222-4333-8444-555555555555".to_string(),
            uuid_short: &|| 42,
        }
    }

    #[test]
    fn deterministic_writes_pass_untouched() {
        for sql in [
            "INSERT INTO t (a, b) VALUES (1, NOW())",
            "UPDATE t SET a = a + 1 WHERE id = 5",
            "DELETE FROM t WHERE id IN (1,2) ORDER BY id LIMIT 1",
            "INSERT INTO t SELECT * FROM s ORDER BY id LIMIT 10",
            "UPDATE t SET c = 'LIMIT' WHERE id = 1",
        ] {
            let c = check_write(sql, false, &lit());
            assert_eq!(c, WriteCheck::default(), "{sql}");
        }
    }

    #[test]
    fn context_needs_are_detected() {
        let c = check_write("INSERT INTO t VALUES (RAND())", false, &lit());
        assert!(c.needs_rand_seed && c.refused.is_none());
        // RAND(seed) is deterministic by itself.
        assert!(!check_write("INSERT INTO t VALUES (RAND(3))", false, &lit()).needs_rand_seed);
        let c = check_write("INSERT INTO c (p) VALUES (LAST_INSERT_ID())", true, &lit());
        assert!(c.needs_last_insert_id);
    }

    #[test]
    fn calls_are_rewritten_to_literals() {
        let c = check_write(
            "INSERT INTO t VALUES (UUID(), UUID_SHORT(), SYSDATE(), sysdate(3))",
            false,
            &lit(),
        );
        assert_eq!(
            c.rewritten.as_deref(),
            Some(
                "INSERT INTO t VALUES ('11111111-2222-4333-8444-555555555555', 42, NOW(), NOW(3))"
            )
        );
        let c = check_write("INSERT INTO t VALUES (UUID())", true, &lit());
        assert!(c.refused.unwrap().contains("prepared"));
    }

    #[test]
    fn non_deterministic_writes_are_refused() {
        for (sql, why) in [
            ("UPDATE t SET a = 1 LIMIT 1", "ORDER BY"),
            ("DELETE FROM t WHERE a > 1 LIMIT 10", "ORDER BY"),
            ("INSERT INTO t SELECT * FROM s LIMIT 5", "ORDER BY"),
            (
                "INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))",
                "LOAD_FILE",
            ),
            ("INSERT INTO t VALUES (@x)", "@x"),
            ("UPDATE t SET a = (@n := @n + 1)", "@n"),
            ("INSERT INTO t VALUES (@@hostname)", "hostname"),
            ("INSERT INTO t VALUES (CONNECTION_ID())", "CONNECTION_ID"),
        ] {
            let c = check_write(sql, false, &lit());
            let r = c.refused.unwrap_or_else(|| panic!("{sql} was not refused"));
            assert!(r.contains(why), "{sql}: {r}");
        }
    }
}
