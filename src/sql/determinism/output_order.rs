//! An `INSERT … SELECT` that sorts or picks its rows (a top-level ORDER BY or LIMIT) where
//! no primary key can break the ties (a join, a union, a grouping, a table without one):
//! its output columns, by position, end the ORDER BY (`ORDER BY s.name, 1, 2`). Rows still
//! tied after that are equal in every value inserted, so whichever a server reads first,
//! each replica inserts the same rows in the same order, and numbers them alike. Without
//! it, `INSERT INTO customers (name, email) SELECT name, email FROM staging ORDER BY name`
//! gave the AUTO_INCREMENT ids of one name's rows in each server's read order. (Values a
//! collation calls equal but that differ in bytes, `'a'` and `'A'`, stay tied.)
//!
//! Pure: no I/O. Part of `determinism`, whose `order_tail` and `matching_parens` it
//! uses.

use super::{matching_parens, order_tail};
use crate::sql::lexer::{Spanned, Tok};

/// Output positions to end the statement's ORDER BY with, or to order it by.
pub(super) struct OutputOrder {
    /// Byte offset the text goes in at.
    pub at: usize,
    /// The statement has an ORDER BY there already.
    pub continues: bool,
    /// How many columns the SELECT gives.
    pub columns: usize,
}

impl OutputOrder {
    pub fn text(&self) -> String {
        let positions: Vec<String> = (1..=self.columns).map(|p| p.to_string()).collect();
        let lead = if self.continues { ", " } else { "ORDER BY " };
        format!("{lead}{} ", positions.join(", "))
    }
}

/// For an `INSERT … SELECT` (`toks`) with a top-level ORDER BY, or a top-level LIMIT
/// (`top_limit`): where its output positions would go, when the number of columns is known
/// (its select list has no `*`, or the INSERT names its columns). None otherwise.
pub(super) fn output_order(toks: &[Spanned<'_>], top_limit: bool) -> Option<OutputOrder> {
    // Most have no ORDER BY or LIMIT of their own: nothing else is looked at then.
    let (at, continues) = order_tail(toks, top_limit)?;
    let select = at_depth_zero(toks, 0, |t| t.is_word("SELECT"))?;
    let columns = select_list_len(toks, select).or_else(|| insert_columns_len(toks, select))?;
    Some(OutputOrder {
        at,
        continues,
        columns,
    })
}

/// The first token from `from` on at parenthesis depth 0 (counted from `from`) that `is`.
fn at_depth_zero(
    toks: &[Spanned<'_>],
    from: usize,
    is: impl Fn(&Tok<'_>) -> bool,
) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(from) {
        match t.tok {
            ref tok if depth == 0 && is(tok) => return Some(i),
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.checked_sub(1)?,
            _ => {}
        }
    }
    None
}

/// How many items the select list after `toks[select]` has; None when one is `*` or `t.*`,
/// or there is no FROM.
fn select_list_len(toks: &[Spanned<'_>], select: usize) -> Option<usize> {
    // A program's `SELECT a, b INTO x, y FROM …`: the list ends at its INTO.
    let end = at_depth_zero(toks, select + 1, |t| t.is_word("FROM") || t.is_word("INTO"))?;
    let list = toks.get(select + 1..end)?;
    let items: Vec<&[Spanned<'_>]> = split_top_level(list);
    let star = |item: &[Spanned<'_>]| match item {
        [.., last] if last.tok == Tok::Punct('*') => {
            item.len() == 1 || item[item.len() - 2].tok == Tok::Punct('.')
        }
        _ => false,
    };
    (!items.iter().any(|i| star(i))).then_some(items.len())
}

/// How many columns `INSERT INTO t (a, b, …)` names before its SELECT (`toks[select]`).
fn insert_columns_len(toks: &[Spanned<'_>], select: usize) -> Option<usize> {
    let open = at_depth_zero(toks, 0, |t| *t == Tok::Punct('('))?;
    let partition = open > 0 && toks[open - 1].tok.is_word("PARTITION");
    if open > select || partition {
        return None;
    }
    let close = matching_parens(toks).get(open).copied().flatten()?;
    let list = toks.get(open + 1..close)?;
    (!list.is_empty()).then(|| split_top_level(list).len())
}

/// `toks` split at its commas at depth 0.
fn split_top_level<'t, 'a>(toks: &'t [Spanned<'a>]) -> Vec<&'t [Spanned<'a>]> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => {
                items.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&toks[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::Lexer;

    fn order(sql: &str, top_limit: bool) -> Option<(String, usize)> {
        let toks: Vec<_> = Lexer::new(sql).collect();
        output_order(&toks, top_limit).map(|o| {
            let mut s = sql.to_string();
            s.insert_str(o.at, &o.text());
            (s, o.columns)
        })
    }

    #[test]
    fn output_positions_end_the_order_or_order_the_limit() {
        assert_eq!(
            order(
                "INSERT INTO c (name, email) SELECT s.name, LOWER(s.email) FROM s JOIN t \
                 ON t.e = s.email ORDER BY s.name",
                false
            ),
            Some((
                "INSERT INTO c (name, email) SELECT s.name, LOWER(s.email) FROM s JOIN t \
                 ON t.e = s.email ORDER BY s.name, 1, 2 "
                    .into(),
                2
            ))
        );
        assert_eq!(
            order("INSERT INTO c (a, b, c) SELECT * FROM s LIMIT 5", true),
            Some((
                "INSERT INTO c (a, b, c) SELECT * FROM s ORDER BY 1, 2, 3 LIMIT 5".into(),
                3
            ))
        );
        assert_eq!(
            order(
                "INSERT INTO c SELECT g, COUNT(*), a * b FROM s GROUP BY g ORDER BY g \
                 ON DUPLICATE KEY UPDATE n = n + 1",
                false
            ),
            Some((
                "INSERT INTO c SELECT g, COUNT(*), a * b FROM s GROUP BY g ORDER BY g , 1, 2, 3 \
                 ON DUPLICATE KEY UPDATE n = n + 1"
                    .into(),
                3
            ))
        );
    }

    #[test]
    fn unknown_width_or_nothing_to_extend_gives_none() {
        for (sql, top_limit) in [
            ("INSERT INTO c SELECT * FROM s ORDER BY v", false),
            ("INSERT INTO c SELECT s.*, 1 FROM s ORDER BY v", false),
            ("INSERT INTO c (a) SELECT a FROM s", false),
            ("INSERT INTO c (SELECT a FROM s ORDER BY a)", false),
        ] {
            assert!(order(sql, top_limit).is_none(), "{sql}");
        }
    }
}
