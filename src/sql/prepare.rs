//! SQL-level prepared statements (`PREPARE name FROM …`, `EXECUTE name USING …`,
//! `EXECUTE IMMEDIATE …`, `DEALLOCATE | DROP PREPARE name`): parsing them, and binding an
//! EXECUTE's arguments into the prepared text so the statement it really runs can be
//! classified, and a write replicated like any other (followers have no such statement
//! prepared, so the EXECUTE itself cannot be replayed).
//!
//! Pure: no I/O. Owns: `SqlPrepare`, `bind`. May import: sql::lexer.

use super::lexer::{Lexer, Spanned, Tok};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlPrepare<'a> {
    /// `PREPARE name FROM source`: source is an expression (a string literal or `@var`)
    /// whose value is the statement text.
    Prepare { name: String, source: &'a str },
    /// `EXECUTE name [USING arg, …]`: each argument's source text.
    Execute { name: String, args: Vec<&'a str> },
    /// `EXECUTE IMMEDIATE source [USING arg, …]`.
    Immediate { source: &'a str, args: Vec<&'a str> },
    /// `DEALLOCATE PREPARE name` / `DROP PREPARE name`.
    Deallocate { name: String },
}

/// The statement name as the server compares it (case-insensitively).
fn name_of(t: &Tok<'_>) -> Option<String> {
    match t {
        Tok::Word(w) | Tok::Quoted(w) => Some(w.to_ascii_lowercase()),
        _ => None,
    }
}

/// Splits the tokens after USING into arguments at top-level commas.
fn arguments<'a>(sql: &'a str, toks: &[Spanned<'a>]) -> Option<Vec<&'a str>> {
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut start: Option<usize> = None;
    let mut end = 0;
    for t in toks {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                args.push(&sql[start?..end]);
                start = None;
                continue;
            }
            _ => {}
        }
        start.get_or_insert(t.start);
        end = t.end;
    }
    args.push(&sql[start?..end]);
    Some(args)
}

/// Splits `source [USING args]` (the tokens after FROM or IMMEDIATE).
fn source_and_args<'a>(sql: &'a str, toks: &[Spanned<'a>]) -> Option<(&'a str, Vec<&'a str>)> {
    let mut depth = 0i32;
    let mut using = None;
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            _ if depth == 0 && t.tok.is_word("USING") => {
                using = Some(i);
                break;
            }
            _ => {}
        }
    }
    let source_toks = &toks[..using.unwrap_or(toks.len())];
    let source = &sql[source_toks.first()?.start..source_toks.last()?.end];
    let args = match using {
        Some(i) => arguments(sql, &toks[i + 1..])?,
        None => Vec::new(),
    };
    Some((source, args))
}

/// The SQL-level prepared-statement command `sql` is, if any (one statement, no trailing
/// `;`).
pub fn parse(sql: &str) -> Option<SqlPrepare<'_>> {
    let toks: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.tok.is_word(w));
    if word(0, "PREPARE") && word(2, "FROM") {
        let name = name_of(&toks.get(1)?.tok)?;
        let rest = &toks[3..];
        return Some(SqlPrepare::Prepare {
            name,
            source: &sql[rest.first()?.start..rest.last()?.end],
        });
    }
    if word(0, "EXECUTE") && word(1, "IMMEDIATE") {
        let (source, args) = source_and_args(sql, &toks[2..])?;
        return Some(SqlPrepare::Immediate { source, args });
    }
    if word(0, "EXECUTE") {
        let name = name_of(&toks.get(1)?.tok)?;
        let args = match toks.get(2) {
            None => Vec::new(),
            Some(t) if t.tok.is_word("USING") => arguments(sql, &toks[3..])?,
            Some(_) => return None,
        };
        return Some(SqlPrepare::Execute { name, args });
    }
    if (word(0, "DEALLOCATE") || word(0, "DROP")) && word(1, "PREPARE") && toks.len() == 3 {
        return Some(SqlPrepare::Deallocate {
            name: name_of(&toks[2].tok)?,
        });
    }
    None
}

/// `text` with each `?` replaced by the matching argument: a single literal as written, any
/// other expression in parentheses (so operators bind as the parameter did). `None` when the
/// counts differ (the server refuses such an EXECUTE).
pub fn bind(text: &str, args: &[&str]) -> Option<String> {
    let params: Vec<Spanned<'_>> = Lexer::new(text).filter(|t| t.tok == Tok::Param).collect();
    if params.len() != args.len() {
        return None;
    }
    let mut out =
        String::with_capacity(text.len() + args.iter().map(|a| a.len() + 2).sum::<usize>());
    let mut at = 0;
    for (p, arg) in params.iter().zip(args) {
        out.push_str(&text[at..p.start]);
        let single_literal = matches!(single_token(arg), Some(Tok::Str(_) | Tok::Number(_)));
        if single_literal {
            out.push_str(arg);
        } else {
            out.push('(');
            out.push_str(arg);
            out.push(')');
        }
        at = p.end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// `arg`'s one token, when it is a single one.
fn single_token(arg: &str) -> Option<Tok<'_>> {
    let mut toks = Lexer::new(arg);
    match (toks.next(), toks.next()) {
        (Some(t), None) => Some(t.tok),
        _ => None,
    }
}

/// The arguments (their indexes in `args`) bound to a LIMIT or OFFSET count of `text` that
/// are not a number as written: the caller evaluates them, since only an integer is SQL
/// there.
pub fn limit_counts_to_evaluate(text: &str, args: &[&str]) -> Vec<usize> {
    limit_params(text)
        .into_iter()
        .zip(args)
        .enumerate()
        .filter(|(_, (counts, arg))| *counts && !matches!(single_token(arg), Some(Tok::Number(_))))
        .map(|(i, _)| i)
        .collect()
}

/// For each `?` of `text`, whether it is a LIMIT or OFFSET count (`LIMIT ?`, `LIMIT ?, ?`,
/// `OFFSET ?`): there the server takes only an integer, and the text a bound argument is
/// written as must be one too (an expression, even a user variable, is not SQL there).
fn limit_params(text: &str) -> Vec<bool> {
    let toks: Vec<Tok<'_>> = Lexer::new(text).map(|t| t.tok).collect();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if *t != Tok::Param {
            continue;
        }
        let before = |back: usize| i.checked_sub(back).and_then(|j| toks.get(j));
        let counts = match before(1) {
            Some(w) if w.is_word("LIMIT") || w.is_word("OFFSET") => true,
            // `LIMIT ?, ?` and `LIMIT 5, ?`.
            Some(Tok::Punct(',')) => before(3).is_some_and(|w| w.is_word("LIMIT")),
            _ => false,
        };
        out.push(counts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_counts_are_found() {
        assert_eq!(
            limit_params("UPDATE t SET b = ? WHERE a = ? LIMIT ?"),
            [false, false, true]
        );
        assert_eq!(
            limit_params("SELECT * FROM t WHERE x IN (?, ?) LIMIT ?, ?"),
            [false, false, true, true]
        );
        assert_eq!(limit_params("SELECT * FROM t LIMIT 5, ? "), [true]);
        assert_eq!(
            limit_params("SELECT * FROM t LIMIT ? OFFSET ?"),
            [true, true]
        );
        assert_eq!(limit_params("SELECT '?', ?"), [false]);
        assert_eq!(
            limit_counts_to_evaluate("SELECT * FROM t WHERE a = ? LIMIT ?, ?", &["@a", "3", "@n"]),
            [2]
        );
    }

    #[test]
    fn parses_the_four_commands() {
        assert_eq!(
            parse("PREPARE St FROM 'INSERT INTO t VALUES (?, ?)'"),
            Some(SqlPrepare::Prepare {
                name: "st".into(),
                source: "'INSERT INTO t VALUES (?, ?)'"
            })
        );
        assert_eq!(
            parse("PREPARE `s` FROM @sql"),
            Some(SqlPrepare::Prepare {
                name: "s".into(),
                source: "@sql"
            })
        );
        assert_eq!(
            parse("EXECUTE st USING 1, 'a,b', CONCAT('x', 'y'), @v"),
            Some(SqlPrepare::Execute {
                name: "st".into(),
                args: vec!["1", "'a,b'", "CONCAT('x', 'y')", "@v"]
            })
        );
        assert_eq!(
            parse("execute st"),
            Some(SqlPrepare::Execute {
                name: "st".into(),
                args: vec![]
            })
        );
        assert_eq!(
            parse("EXECUTE IMMEDIATE CONCAT('DELETE FROM t WHERE id = ', ?) USING 5"),
            Some(SqlPrepare::Immediate {
                source: "CONCAT('DELETE FROM t WHERE id = ', ?)",
                args: vec!["5"]
            })
        );
        assert_eq!(
            parse("DROP PREPARE st"),
            Some(SqlPrepare::Deallocate { name: "st".into() })
        );
        assert_eq!(
            parse("DEALLOCATE PREPARE ST"),
            Some(SqlPrepare::Deallocate { name: "st".into() })
        );
        assert_eq!(parse("DROP TABLE t"), None);
        assert_eq!(parse("EXECUTE st 5"), None);
        assert_eq!(parse("EXECUTE st USING 1,"), None);
    }

    #[test]
    fn binds_arguments_into_placeholders_outside_strings() {
        assert_eq!(
            bind("INSERT INTO t VALUES (?, '?', ?)", &["7", "'it''s'"]).as_deref(),
            Some("INSERT INTO t VALUES (7, '?', 'it''s')")
        );
        assert_eq!(
            bind("UPDATE t SET v = v * ? WHERE id = ?", &["1 + 1", "-3"]).as_deref(),
            Some("UPDATE t SET v = v * (1 + 1) WHERE id = (-3)")
        );
        assert_eq!(
            bind("SELECT 1 LIMIT ?", &["5"]).as_deref(),
            Some("SELECT 1 LIMIT 5")
        );
        assert_eq!(bind("DELETE FROM t WHERE id = ?", &[]), None);
        assert_eq!(bind("DELETE FROM t", &[]).as_deref(), Some("DELETE FROM t"));
    }
}
