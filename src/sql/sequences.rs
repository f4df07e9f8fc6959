//! MariaDB sequence calls in a statement (NEXTVAL(s) / NEXT VALUE FOR s, LASTVAL(s) /
//! PREVIOUS VALUE FOR s, SETVAL(s, …)) and where the proxy can replicate them.
//!
//! A sequence hands out values from a cache it refills outside any transaction, so NEXTVAL
//! replayed on a follower gives that follower's next value, not the primary's: they part as
//! soon as one server restarts and drops its cache. So the proxy takes each value on the
//! primary first (`SELECT NEXTVAL(s)`), puts it in the statement as a literal, and logs
//! `DO SETVAL(s, v)` with the statement for the followers (or a cache further: `reservation`):
//! their sequence is then past every value a logged statement used, and a new primary after a
//! failover never hands one out again. LASTVAL(s) is the session's own, answered from the
//! values the proxy took (a pooled connection's would be another session's, or NULL). SETVAL,
//! whose arguments MariaDB takes only as constants, replays as it ran.
//!
//! That needs each NEXTVAL to be evaluated exactly once where it is written: in a SELECT
//! without FROM (or FROM DUAL), in DO, in an INSERT/REPLACE's VALUES or SET, or in a SET of
//! user variables. Where the server would evaluate it once per row (UPDATE, INSERT … SELECT,
//! a SELECT over a table, ON DUPLICATE KEY UPDATE, RETURNING), or later on each server (a
//! column DEFAULT, a stored program), the statement is refused with the reason.
//!
//! Pure: no I/O. Owns: `SequenceCall`, `Definition`, `Reserved`. May import: sql::lexer,
//! sql::rewrite.

use super::lexer::{Lexer, Spanned, Tok};
use super::rewrite::Replacement;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceOp {
    /// NEXTVAL(s), NEXT VALUE FOR s.
    Next,
    /// LASTVAL(s), PREVIOUS VALUE FOR s.
    Last,
    /// SETVAL(s, …).
    Set,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceCall {
    pub op: SequenceOp,
    /// The sequence as written (`s`, `` `db`.`s` ``).
    pub name: String,
    /// The call's first and last token.
    first: usize,
    last: usize,
}

/// The calls in `sql`, in text order, or why the statement cannot be replicated with them.
pub fn check(sql: &str) -> Result<Vec<SequenceCall>, String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let calls = calls(&toks, sql);
    let first = toks
        .iter()
        .find(|t| t.tok != Tok::Punct('('))
        .map(|t| t.tok);
    let is = |w: &str| first.is_some_and(|f| f.is_word(w));
    if is("CREATE") || is("ALTER") {
        // CREATE SEQUENCE and other definitions without calls are plain DDL.
        return match calls.first() {
            None => Ok(calls),
            Some(c) => Err(format!(
                "{} in a definition (a column DEFAULT, a view, a trigger or a stored program) \
                 is evaluated later on each server by itself, from that server's own sequence; \
                 take the value in the statement that writes it (INSERT … VALUES \
                 (NEXTVAL(s), …)) instead",
                c.op.spelled()
            )),
        };
    }
    let select_like = is("SELECT") || is("DO");
    let insert = is("INSERT") || is("REPLACE");
    // `SET @id = NEXTVAL(s)`: user variables only, each value taken once.
    let sets_user_variable = is("SET")
        && toks
            .get(1)
            .is_some_and(|t| matches!(t.tok, Tok::UserVar(_)));
    // A FROM other than `FROM DUAL` reads rows: a call in its statement may run per row.
    let reads_rows = toks.iter().enumerate().any(|(i, t)| {
        t.tok.is_word("FROM") && !toks.get(i + 1).is_some_and(|n| n.tok.is_word("DUAL"))
    });
    for c in &calls {
        let before = &toks[..c.first];
        let after_word = |w: &str| before.iter().any(|t| t.tok.is_word(w));
        let once = match c.op {
            SequenceOp::Last => continue,
            SequenceOp::Next if insert => {
                !after_word("SELECT") && !after_word("DUPLICATE") && !after_word("RETURNING")
            }
            SequenceOp::Next if sets_user_variable => !reads_rows,
            SequenceOp::Next | SequenceOp::Set => {
                select_like && !reads_rows && !toks.iter().any(|t| t.tok.is_word("INTO"))
            }
        };
        if !once {
            return Err(format!(
                "{} here may be evaluated once per row, or not where it is written, and the \
                 proxy replicates a sequence by taking each value on the primary and writing \
                 it in as a literal; use it in SELECT (without FROM), DO, SET @v = …, or an \
                 INSERT's VALUES/SET list, or take the value first (SELECT NEXTVAL(s)) and \
                 pass it",
                c.op.spelled()
            ));
        }
    }
    Ok(calls)
}

/// The lowest value a sequence takes: an IFNULL with it types the value as the call's
/// BIGINT (a small literal alone is an INT column, which Connector/J gives as Integer where
/// the call gave Long).
const BIGINT_LOW: &str = "-9223372036854775807";

/// `sql` with each NEXTVAL and LASTVAL call replaced by its value (`values` holds one per
/// call of `check`, in order, None for NULL; SETVAL calls are left as they are). A whole
/// select item keeps its column name and its column type: nullable BIGINT(20).
pub fn with_values(sql: &str, calls: &[SequenceCall], values: &[Option<i64>]) -> String {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let replaced: Vec<Replacement> = calls
        .iter()
        .zip(values)
        .filter(|(c, _)| c.op != SequenceOp::Set)
        .map(|(c, v)| Replacement {
            first: c.first,
            last: c.last,
            literal: v.map_or_else(|| "NULL".to_string(), |v| v.to_string()),
            item: match v {
                Some(v) => format!("NULLIF(IFNULL({v}, {BIGINT_LOW}), NULL)"),
                None => format!("NULLIF(IFNULL(NULL, {BIGINT_LOW}), {BIGINT_LOW})"),
            },
        })
        .collect();
    super::rewrite::with_literals(sql, &toks, &replaced)
}

/// For a prepared statement: `sql` with each NEXTVAL and LASTVAL call replaced by a `?`
/// placeholder, and each one's position among the new text's placeholders, in call order
/// (the value each execute adds there, `protocol::execute::add_params`).
pub fn with_placeholders(sql: &str, calls: &[SequenceCall]) -> (String, Vec<u16>) {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut replaced = Vec::new();
    let mut positions = Vec::new();
    for c in calls.iter().filter(|c| c.op != SequenceOp::Set) {
        let before = toks[..c.first]
            .iter()
            .filter(|t| t.tok == Tok::Param)
            .count();
        positions.push((before + positions.len()) as u16);
        replaced.push(Replacement::same(c.first, c.last, "?".to_string()));
    }
    (
        super::rewrite::with_literals(sql, &toks, &replaced),
        positions,
    )
}

/// What the proxy reads of a sequence's definition (its row: `increment`, `cache_size`,
/// `cycle_option`, `minimum_value`, `maximum_value`) to log one SETVAL for many values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Definition {
    pub increment: i64,
    pub cache: i64,
    pub cycles: bool,
    pub min: i64,
    pub max: i64,
}

/// The query reading a sequence's `Definition`, in that order.
pub fn definition_query(name: &str) -> String {
    format!("SELECT increment, cache_size, cycle_option, minimum_value, maximum_value FROM {name}")
}

/// A `definition_query` row.
pub fn parse_definition(row: &[Option<String>]) -> Option<Definition> {
    let int = |i: usize| row.get(i)?.as_deref()?.parse::<i64>().ok();
    Some(Definition {
        increment: int(0)?,
        cache: int(1)?,
        cycles: int(2)? != 0,
        min: int(3)?,
        max: int(4)?,
    })
}

/// A reservation made: followers' sequence is set to `high`, which goes `increment`'s way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub high: i64,
    pub increment: i64,
}

/// How far the followers' sequence may be set after the primary gave `value`: a cache's
/// worth further (`cache` increments, as the server reserves for itself), within the
/// sequence's bounds. Values up to there then need no SETVAL of their own: the followers
/// are already past them. None when there is nothing to gain or it would not be safe: no
/// cache, or a CYCLE sequence (its values come round again).
pub fn reservation(value: i64, def: &Definition) -> Option<i64> {
    if def.cycles || def.cache <= 1 || def.increment == 0 {
        return None;
    }
    let ahead = def
        .increment
        .checked_mul(def.cache)
        .and_then(|d| value.checked_add(d))?;
    let bounded = if def.increment > 0 {
        ahead.min(def.max)
    } else {
        ahead.max(def.min)
    };
    covered_by(bounded, value, def.increment).then_some(bounded)
}

/// Whether a SETVAL to `high` already puts a sequence going `increment`'s way past `value`.
pub fn covered_by(high: i64, value: i64, increment: i64) -> bool {
    if increment > 0 {
        value <= high
    } else {
        value >= high
    }
}

/// Whether `value` is what a sequence gives (an integer), safe to write into a statement.
pub fn is_sequence_value(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

impl SequenceOp {
    fn spelled(self) -> &'static str {
        match self {
            SequenceOp::Next => "NEXTVAL()/NEXT VALUE FOR",
            SequenceOp::Last => "LASTVAL()/PREVIOUS VALUE FOR",
            SequenceOp::Set => "SETVAL()",
        }
    }
}

/// A sequence's name at token `at`: one identifier or `db.name`; the index of its last token.
fn name_at(toks: &[Spanned<'_>], at: usize) -> Option<usize> {
    let ident = |i: usize| {
        toks.get(i)
            .is_some_and(|t| matches!(t.tok, Tok::Word(_) | Tok::Quoted(_)))
    };
    if !ident(at) {
        return None;
    }
    if toks.get(at + 1).is_some_and(|t| t.tok == Tok::Punct('.')) && ident(at + 2) {
        return Some(at + 2);
    }
    Some(at)
}

fn calls(toks: &[Spanned<'_>], sql: &str) -> Vec<SequenceCall> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let word = |k: usize, w: &str| toks.get(k).is_some_and(|t| t.tok.is_word(w));
        let qualified = i > 0 && toks[i - 1].tok == Tok::Punct('.');
        let call = |op| {
            if qualified || !toks.get(i + 1).is_some_and(|t| t.tok == Tok::Punct('(')) {
                return None;
            }
            let name_end = name_at(toks, i + 2)?;
            let close = if op == SequenceOp::Set {
                closing_paren(toks, i + 1)?
            } else {
                Some(name_end + 1)
                    .filter(|&k| toks.get(k).is_some_and(|t| t.tok == Tok::Punct(')')))?
            };
            Some((op, i + 2, name_end, close))
        };
        let value_for = |op| {
            let name_end = name_at(toks, i + 3)?;
            Some((op, i + 3, name_end, name_end))
        };
        let hit = match toks[i].tok {
            Tok::Word(w) if w.eq_ignore_ascii_case("NEXTVAL") => call(SequenceOp::Next),
            Tok::Word(w) if w.eq_ignore_ascii_case("LASTVAL") => call(SequenceOp::Last),
            Tok::Word(w) if w.eq_ignore_ascii_case("SETVAL") => call(SequenceOp::Set),
            Tok::Word(w)
                if w.eq_ignore_ascii_case("NEXT") && word(i + 1, "VALUE") && word(i + 2, "FOR") =>
            {
                value_for(SequenceOp::Next)
            }
            Tok::Word(w)
                if w.eq_ignore_ascii_case("PREVIOUS")
                    && word(i + 1, "VALUE")
                    && word(i + 2, "FOR") =>
            {
                value_for(SequenceOp::Last)
            }
            _ => None,
        };
        match hit {
            Some((op, name_start, name_end, last)) => {
                found.push(SequenceCall {
                    op,
                    name: sql[toks[name_start].start..toks[name_end].end].to_string(),
                    first: i,
                    last,
                });
                // SETVAL's arguments are constants: nothing to find inside.
                i = last + 1;
            }
            None => i += 1,
        }
    }
    found
}

/// The token closing the parenthesis at `open`.
fn closing_paren(toks: &[Spanned<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(sql: &str) -> Vec<(SequenceOp, String)> {
        check(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|c| (c.op, c.name))
            .collect()
    }

    #[test]
    fn calls_are_found_in_every_spelling() {
        use SequenceOp::*;
        assert_eq!(
            ops("SELECT NEXTVAL(s), next value for `d`.`s2`, LASTVAL(d.s), PREVIOUS VALUE FOR s"),
            vec![
                (Next, "s".into()),
                (Next, "`d`.`s2`".into()),
                (Last, "d.s".into()),
                (Last, "s".into())
            ]
        );
        assert_eq!(ops("SELECT SETVAL(s, 1000, 0, 0)"), vec![(Set, "s".into())]);
        assert_eq!(ops("DO setval(`s`, 5)"), vec![(Set, "`s`".into())]);
        // A stored function of that name, and a column so named, are not sequence calls.
        assert!(ops("SELECT app.nextval(s), nextval FROM t").is_empty());
    }

    #[test]
    fn values_become_literals_keeping_column_names() {
        let sql = "SELECT NEXTVAL(s), 1 + next value for s AS n, LASTVAL(s)";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_values(sql, &calls, &[Some(5), Some(6), None]),
            "SELECT NULLIF(IFNULL(5, -9223372036854775807), NULL) AS `NEXTVAL(s)`, 1 + 6 AS n, \
             NULLIF(IFNULL(NULL, -9223372036854775807), -9223372036854775807) AS `LASTVAL(s)`"
        );
        let sql = "INSERT INTO t (id, v) VALUES (NEXTVAL(s), 'a'), (NEXT VALUE FOR s, 'b')";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_values(sql, &calls, &[Some(7), Some(8)]),
            "INSERT INTO t (id, v) VALUES (7, 'a'), (8, 'b')"
        );
        // An aliased item keeps the type (SQLAlchemy: `SELECT nextval(s) AS next_value_1`).
        let sql = "SELECT nextval(s) AS next_value_1";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_values(sql, &calls, &[Some(3)]),
            "SELECT NULLIF(IFNULL(3, -9223372036854775807), NULL) AS next_value_1"
        );
        let sql = "SELECT SETVAL(s, 10), NEXTVAL(s)";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_values(sql, &calls, &[None, Some(-11)]),
            "SELECT SETVAL(s, 10), NULLIF(IFNULL(-11, -9223372036854775807), NULL) AS `NEXTVAL(s)`"
        );
        let sql = "UPDATE t SET parent = LASTVAL(s)";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_values(sql, &calls, &[None]),
            "UPDATE t SET parent = NULL"
        );
    }

    #[test]
    fn prepared_calls_become_placeholders_among_the_clients() {
        let sql = "INSERT INTO t VALUES (?, NEXTVAL(s), ?, LASTVAL(s))";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_placeholders(sql, &calls),
            ("INSERT INTO t VALUES (?, ?, ?, ?)".to_string(), vec![1, 3])
        );
        let sql = "SELECT NEXTVAL(s), SETVAL(s2, 5)";
        let calls = check(sql).unwrap();
        assert_eq!(
            with_placeholders(sql, &calls),
            (
                "SELECT ? AS `NEXTVAL(s)`, SETVAL(s2, 5)".to_string(),
                vec![0]
            )
        );
    }

    #[test]
    fn only_calls_evaluated_once_where_written_are_taken() {
        for ok in [
            "SELECT NEXTVAL(s)",
            "SELECT NEXTVAL(s) FROM DUAL",
            "DO NEXTVAL(s)",
            "INSERT INTO t VALUES (NEXTVAL(s), 1)",
            "INSERT INTO t SET id = NEXT VALUE FOR s, v = 1",
            "REPLACE INTO t VALUES (NEXTVAL(s), (SELECT MAX(v) FROM u))",
            "UPDATE t SET parent = LASTVAL(s) WHERE id > 3",
            "SELECT SETVAL(`s`, 1001, 0)",
            "SET @id = NEXTVAL(s), @next = NEXT VALUE FOR s",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for refused in [
            "SELECT NEXTVAL(s) FROM t",
            "SELECT NEXTVAL(s) FROM seq_1_to_50",
            "SELECT NEXTVAL(s) INTO @id",
            "UPDATE t SET id = NEXTVAL(s)",
            "DELETE FROM t WHERE id = NEXTVAL(s)",
            "INSERT INTO t SELECT NEXTVAL(s), v FROM u",
            "INSERT INTO t VALUES (1, 2) ON DUPLICATE KEY UPDATE id = NEXTVAL(s)",
            "INSERT INTO t VALUES (1), (2) RETURNING id, NEXTVAL(s)",
            "SET @id = (SELECT NEXTVAL(s) FROM t LIMIT 1)",
            "SET @@session.x = NEXTVAL(s)",
            "SET @id = SETVAL(s, 5)",
            "CALL p(NEXTVAL(s))",
            "INSERT INTO t VALUES (SETVAL(s, 5))",
            "CREATE TABLE t (id BIGINT DEFAULT NEXTVAL(s))",
            "ALTER TABLE t ALTER id SET DEFAULT LASTVAL(s)",
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.id = NEXTVAL(s)",
        ] {
            assert!(check(refused).is_err(), "{refused}");
        }
        assert!(check("CREATE SEQUENCE s START WITH 1 INCREMENT BY 50").is_ok());
    }

    #[test]
    fn a_reservation_reaches_a_cache_further_within_bounds() {
        let up = Definition {
            increment: 50,
            cache: 1000,
            cycles: false,
            min: 1,
            max: i64::MAX - 1,
        };
        assert_eq!(reservation(51, &up), Some(50_051));
        assert!(covered_by(50_051, 50_051, 50) && !covered_by(50_051, 50_101, 50));
        // Near the end it stops at the maximum; past it there is nothing to reserve.
        let near_end = Definition { max: 100, ..up };
        assert_eq!(reservation(51, &near_end), Some(100));
        assert_eq!(reservation(i64::MAX - 10, &up), None);
        let down = Definition {
            increment: -1,
            cache: 20,
            cycles: false,
            min: 0,
            max: 100,
        };
        assert_eq!(reservation(90, &down), Some(70));
        assert_eq!(reservation(10, &down), Some(0));
        assert!(covered_by(70, 75, -1) && !covered_by(70, 69, -1));
        assert_eq!(reservation(5, &Definition { cycles: true, ..up }), None);
        assert_eq!(reservation(5, &Definition { cache: 0, ..up }), None);
    }

    #[test]
    fn only_integers_are_sequence_values() {
        assert!(is_sequence_value("-9223372036854775807"));
        assert!(is_sequence_value("42"));
        assert!(!is_sequence_value(""));
        assert!(!is_sequence_value("1; DROP TABLE t"));
        assert!(!is_sequence_value("1e3"));
    }
}
