//! Statements that read the previous statement's diagnostics (SHOW WARNINGS / ERRORS,
//! SHOW COUNT(*) WARNINGS, `SELECT @@warning_count`, `SELECT ROW_COUNT()`), recognised in the
//! exact forms the proxy can answer itself.
//!
//! Why: after a replicated write the proxy runs its own statements on the primary's
//! connection (the record's `myquorum.wal` INSERT, COMMIT, the clock reset), which clear the
//! server's warning list and set ROW_COUNT() to 0. The session keeps the write's diagnostics
//! and answers these statements from them, as the server would have.
//!
//! Owns: recognising those forms. May import: sql::lexer.

use super::lexer::{str_contents, Lexer, Tok};

/// What a diagnostics statement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiagnosticsQuery {
    /// `SHOW WARNINGS` or `SHOW ERRORS` (errors only), with MySQL's `LIMIT [offset,] count`.
    List {
        errors_only: bool,
        offset: u64,
        limit: Option<u64>,
    },
    /// `SHOW COUNT(*) WARNINGS | ERRORS`: one row, named as the server names it.
    Count { errors_only: bool },
    /// A SELECT whose every item is one of the values below, named as written or aliased.
    Values(Vec<(DiagnosticsValue, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosticsValue {
    WarningCount,
    ErrorCount,
    RowCount,
}

/// Recognises `sql` as a diagnostics statement the proxy can answer, or None (it then runs
/// as usual). Anything beyond the plain forms (FROM, WHERE, expressions) is None.
pub fn parse(sql: &str) -> Option<DiagnosticsQuery> {
    // Checked before any other statement after a write: the first word rules out nearly
    // all of them, and no form is longer than a few dozen tokens.
    let first = Lexer::new(sql).next()?;
    if !first.tok.is_word("SHOW") && !first.tok.is_word("SELECT") {
        return None;
    }
    const LONGEST: usize = 64;
    let toks: Vec<_> = Lexer::new(sql).take(LONGEST + 1).collect();
    if toks.len() > LONGEST {
        return None;
    }
    if first.tok.is_word("SHOW") {
        return parse_show(&toks.iter().map(|t| t.tok).collect::<Vec<_>>());
    }
    if !first.tok.is_word("SELECT") {
        return None;
    }
    let mut items = Vec::new();
    let mut i = 1;
    loop {
        let start = toks.get(i)?.start;
        let (value, next) = match (toks.get(i)?.tok, toks.get(i + 1).map(|t| t.tok)) {
            (Tok::SysVar(v), _) => (system_value(v)?, i + 1),
            (Tok::Word(w), Some(Tok::Punct('('))) if w.eq_ignore_ascii_case("ROW_COUNT") => {
                if toks.get(i + 2)?.tok != Tok::Punct(')') {
                    return None;
                }
                (DiagnosticsValue::RowCount, i + 3)
            }
            _ => return None,
        };
        let end = toks[next - 1].end;
        i = next;
        // `AS alias` or a bare alias; the column is named as the item was written otherwise.
        let mut name = sql[start..end].to_string();
        if toks.get(i).is_some_and(|t| t.tok.is_word("AS")) {
            i += 1;
        }
        match toks.get(i).map(|t| t.tok) {
            Some(Tok::Word(w)) if !w.eq_ignore_ascii_case("FROM") => {
                name = w.to_string();
                i += 1;
            }
            Some(Tok::Quoted(q)) => {
                name = q.replace("``", "`");
                i += 1;
            }
            Some(Tok::Str(s)) => {
                if let Some(inner) = str_contents(s) {
                    name = inner.to_string();
                    i += 1;
                }
            }
            _ => {}
        }
        items.push((value, name));
        match toks.get(i).map(|t| t.tok) {
            None => return Some(DiagnosticsQuery::Values(items)),
            Some(Tok::Punct(',')) => i += 1,
            _ => return None,
        }
    }
}

fn system_value(v: &str) -> Option<DiagnosticsValue> {
    let name = v
        .strip_prefix("session.")
        .or_else(|| v.strip_prefix("SESSION."))
        .unwrap_or(v);
    if name.eq_ignore_ascii_case("warning_count") {
        Some(DiagnosticsValue::WarningCount)
    } else if name.eq_ignore_ascii_case("error_count") {
        Some(DiagnosticsValue::ErrorCount)
    } else {
        None
    }
}

fn parse_show(t: &[Tok<'_>]) -> Option<DiagnosticsQuery> {
    let kind = |w: &Tok<'_>| {
        if w.is_word("WARNINGS") {
            Some(false)
        } else if w.is_word("ERRORS") {
            Some(true)
        } else {
            None
        }
    };
    match t {
        [_, Tok::Word(c), Tok::Punct('('), Tok::Punct('*'), Tok::Punct(')'), w]
            if c.eq_ignore_ascii_case("COUNT") =>
        {
            Some(DiagnosticsQuery::Count {
                errors_only: kind(w)?,
            })
        }
        [_, w, rest @ ..] => {
            let errors_only = kind(w)?;
            let (offset, limit) = match rest {
                [] => (0, None),
                [l, Tok::Number(n)] if l.is_word("LIMIT") => (0, Some(n.parse().ok()?)),
                [l, Tok::Number(o), Tok::Punct(','), Tok::Number(n)] if l.is_word("LIMIT") => {
                    (o.parse().ok()?, Some(n.parse().ok()?))
                }
                _ => return None,
            };
            Some(DiagnosticsQuery::List {
                errors_only,
                offset,
                limit,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiagnosticsValue::*;

    #[test]
    fn show_forms() {
        let list = |errors_only, offset, limit| {
            Some(DiagnosticsQuery::List {
                errors_only,
                offset,
                limit,
            })
        };
        assert_eq!(parse("SHOW WARNINGS"), list(false, 0, None));
        assert_eq!(parse("show  errors"), list(true, 0, None));
        assert_eq!(parse("SHOW WARNINGS LIMIT 2"), list(false, 0, Some(2)));
        assert_eq!(parse("SHOW WARNINGS LIMIT 1, 3"), list(false, 1, Some(3)));
        assert_eq!(
            parse("SHOW COUNT(*) WARNINGS"),
            Some(DiagnosticsQuery::Count { errors_only: false })
        );
        assert_eq!(
            parse("show count ( * ) errors"),
            Some(DiagnosticsQuery::Count { errors_only: true })
        );
        for other in [
            "SHOW TABLES",
            "SHOW WARNINGS LIMIT ?",
            "SHOW WARNINGS x",
            "SHOW COUNT(1) WARNINGS",
            "SHOW ENGINE INNODB STATUS",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn select_forms_keep_the_column_names() {
        assert_eq!(
            parse("SELECT @@warning_count"),
            Some(DiagnosticsQuery::Values(vec![(
                WarningCount,
                "@@warning_count".into()
            )]))
        );
        assert_eq!(
            parse("select ROW_COUNT( ) AS n, @@session.error_count `e c`, @@SESSION.warning_count"),
            Some(DiagnosticsQuery::Values(vec![
                (RowCount, "n".into()),
                (ErrorCount, "e c".into()),
                (WarningCount, "@@SESSION.warning_count".into()),
            ]))
        );
        assert_eq!(
            parse("SELECT row_count() 'rc'"),
            Some(DiagnosticsQuery::Values(vec![(RowCount, "rc".into())]))
        );
        for other in [
            "SELECT ROW_COUNT() + 1",
            "SELECT ROW_COUNT(), 1",
            "SELECT @@global.warning_count",
            "SELECT @@warning_count FROM t",
            "SELECT LAST_INSERT_ID(), ROW_COUNT()",
            "SELECT ROW_COUNT(",
            "SELECT",
            "SELECT @@sql_mode",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
