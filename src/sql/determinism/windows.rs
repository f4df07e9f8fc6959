//! Window functions in writes whose value follows the order of rows a window's ORDER BY
//! leaves tied (`ROW_NUMBER() OVER (ORDER BY pri)`, `LAG(v) OVER ()`): each replica's plan
//! breaks the ties its own way (measured on one mariadbd, 3000 rows with `pri = id % 3`:
//! rows 24, 120, 216 … numbered first through the index on `pri`, 2376, 2472, 2568 … through
//! a filesort), and the written values differ with equal row counts. Where the SELECT around
//! the call reads one table, that table's primary key ends the window's ORDER BY (or is
//! its ORDER BY): one of the orders the statement allowed, so the primary's result is one
//! it could have given anyway. What cannot be ordered so and has no ORDER BY of its own is
//! refused.
//!
//! Pure: no I/O. Part of `determinism`, whose `KeyOrder`, `level_read`, `enclosing_level`
//! and `matching_parens` it uses.

use super::{enclosing_level, level_read, matching_parens, KeyOrder, TableRead};
use crate::sql::lexer::{Spanned, Tok};

/// How a window function's value depends on the order of rows within its partition.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Dependence {
    /// Each row's own position (ROW_NUMBER, NTILE, LAG, LEAD): any tie-breaking key is one of
    /// the allowed orders, whatever the frame (these ignore it).
    Position,
    /// The frame's first row: its start is the partition's start unless an explicit RANGE
    /// frame says otherwise, so a key keeps the frame under ROWS or the default frame.
    FirstRow,
    /// The frame's last or n-th row (LAST_VALUE, NTH_VALUE): under the default or a RANGE
    /// frame the frame ends with the current row's last peer, which a key would narrow to
    /// the row itself; only a ROWS frame takes a key unchanged.
    FrameRows,
    /// An aggregate over a frame: order matters only for a ROWS frame (a RANGE frame,
    /// default or explicit, takes peers together).
    Aggregate,
    /// Ranks and distributions (RANK, DENSE_RANK, PERCENT_RANK, CUME_DIST, MEDIAN,
    /// PERCENTILE_*): equal for peers whatever their order.
    Peers,
}

fn dependence(function: &str) -> Dependence {
    const POSITION: &[&str] = &["ROW_NUMBER", "NTILE", "LAG", "LEAD"];
    const PEERS: &[&str] = &[
        "RANK",
        "DENSE_RANK",
        "PERCENT_RANK",
        "CUME_DIST",
        "MEDIAN",
        "PERCENTILE_CONT",
        "PERCENTILE_DISC",
    ];
    let is = |names: &[&str]| names.iter().any(|n| function.eq_ignore_ascii_case(n));
    if is(POSITION) {
        Dependence::Position
    } else if function.eq_ignore_ascii_case("FIRST_VALUE") {
        Dependence::FirstRow
    } else if is(&["LAST_VALUE", "NTH_VALUE"]) {
        Dependence::FrameRows
    } else if is(PEERS) {
        Dependence::Peers
    } else {
        Dependence::Aggregate
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Frame {
    Default,
    Rows,
    Range,
}

/// An inline window specification, `OVER ( … )`.
struct Spec {
    ordered: bool,
    frame: Frame,
    /// Byte offset a key would go in at: the frame's first word, else the closing
    /// parenthesis.
    at: usize,
    at_close: bool,
}

/// `toks[open]` to `toks[close]` being `OVER`'s parentheses: None for `OVER (w …)`, a
/// named window's refinement.
fn spec(toks: &[Spanned<'_>], open: usize, close: usize) -> Option<Spec> {
    let inner = toks.get(open + 1..close)?;
    if let Some(Tok::Word(w)) | Some(Tok::Quoted(w)) = inner.first().map(|t| t.tok) {
        if !["PARTITION", "ORDER", "ROWS", "RANGE"]
            .iter()
            .any(|c| w.eq_ignore_ascii_case(c))
        {
            return None;
        }
    }
    let (mut depth, mut ordered, mut frame) = (0usize, false, None);
    for (k, t) in inner.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 => {
                if w.eq_ignore_ascii_case("BY") && k > 0 && inner[k - 1].tok.is_word("ORDER") {
                    ordered = true;
                } else if w.eq_ignore_ascii_case("ROWS") {
                    frame = Some((Frame::Rows, t.start));
                    break;
                } else if w.eq_ignore_ascii_case("RANGE") {
                    frame = Some((Frame::Range, t.start));
                    break;
                }
            }
            _ => {}
        }
    }
    let (frame, at, at_close) = match frame {
        Some((frame, at)) => (frame, at, false),
        None => (Frame::Default, toks[close].start, true),
    };
    Some(Spec {
        ordered,
        frame,
        at,
        at_close,
    })
}

/// What one window call in a write needs.
pub(super) enum WindowNeed {
    /// The key of the table its SELECT reads orders it; `unordered`: it had no ORDER BY of
    /// its own, so a table without a key refuses it.
    Keyed { order: KeyOrder, unordered: bool },
    /// Nothing can order it here, and it has no ORDER BY: refused, saying why.
    Refused(&'static str),
}

/// The window calls of a write (`toks`, an UPDATE, DELETE or INSERT … SELECT) whose value
/// depends on how ties are broken, and what each needs. Calls equal for peers, and those
/// whose order is not this proxy's to fix (an ORDER BY over a join, taken at its word as an
/// ordered LIMIT over a join is), need nothing.
pub(super) fn window_needs(toks: &[Spanned<'_>]) -> Vec<WindowNeed> {
    // Most writes have none: no work on the per-statement path then.
    if !toks.iter().any(|t| t.tok.is_word("OVER")) {
        return Vec::new();
    }
    let close = matching_parens(toks);
    let mut needs = Vec::new();
    let mut around: Vec<usize> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => around.push(i),
            Tok::Punct(')') => {
                around.pop();
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("OVER") => {
                // The call: `name ( … ) OVER`.
                let Some(called) = i
                    .checked_sub(1)
                    .filter(|&p| toks[p].tok == Tok::Punct(')'))
                    .and_then(|p| (0..p).rev().find(|&o| close[o] == Some(p)))
                    .and_then(|o| o.checked_sub(1))
                    .and_then(|n| match toks[n].tok {
                        Tok::Word(name) => Some(name),
                        _ => None,
                    })
                else {
                    continue;
                };
                let parent = enclosing_level(&around, &close);
                needs.extend(window_need(toks, &close, i, dependence(called), parent));
            }
            _ => {}
        }
    }
    needs
}

/// `toks[over]` is the OVER of a call with `dependence`, in the level `parent`; `close`:
/// each opening parenthesis's closing one.
fn window_need(
    toks: &[Spanned<'_>],
    close: &[Option<usize>],
    over: usize,
    dependence: Dependence,
    parent: std::ops::Range<usize>,
) -> Option<WindowNeed> {
    if dependence == Dependence::Peers {
        return None;
    }
    let open = over + 1;
    let spec = match toks.get(open).map(|t| t.tok) {
        Some(Tok::Punct('(')) => spec(toks, open, close.get(open).copied().flatten()?),
        _ => None,
    };
    let Some(spec) = spec else {
        // A named window: its ORDER BY and frame are elsewhere.
        return (dependence != Dependence::Aggregate).then_some(WindowNeed::Refused(
            "a window function whose value follows the order of tied rows, over a named \
             window: the proxy orders such windows by the primary key only when written \
             inline; write the window's PARTITION BY and ORDER BY in its OVER (…)",
        ));
    };
    let keyed = match (dependence, spec.frame) {
        (Dependence::Position, _) => true,
        (Dependence::FirstRow, Frame::Rows | Frame::Default) => true,
        (Dependence::FrameRows | Dependence::Aggregate, Frame::Rows) => true,
        (Dependence::FirstRow | Dependence::FrameRows, _) => {
            // A key would change the frame: an ORDER BY is taken at its word; without one,
            // the frame is the whole partition in each replica's read order.
            return (!spec.ordered).then_some(WindowNeed::Refused(
                "LAST_VALUE()/NTH_VALUE() (or FIRST_VALUE() over a RANGE frame) without ORDER \
                 BY in its window reads the partition in each replica's own row order; give \
                 the window an ORDER BY ending in a unique key and a ROWS frame",
            ));
        }
        (Dependence::Aggregate, _) | (Dependence::Peers, _) => false,
    };
    if !keyed {
        return None;
    }
    match level_read(toks, parent, &["OVER"]) {
        Some(TableRead {
            table, qualifier, ..
        }) => Some(WindowNeed::Keyed {
            order: KeyOrder {
                table,
                qualifier: Some(qualifier),
                at: spec.at,
                continues: spec.ordered,
                lead_space: spec.at_close,
            },
            unordered: !spec.ordered,
        }),
        None if spec.ordered => None,
        None => Some(WindowNeed::Refused(
            "a window function without ORDER BY that numbers or compares rows (ROW_NUMBER(), \
             LAG(), a ROWS frame …) over other rows than one table's (a join, GROUP BY, \
             DISTINCT, a union): each replica reads them in its own order; give the window \
             an ORDER BY ending in a unique key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::Lexer;

    /// (table, rewritten-at text, continues, unordered) per need, or the refusal.
    fn needs(sql: &str) -> Vec<Result<(String, String, bool), &'static str>> {
        let toks: Vec<_> = Lexer::new(sql).collect();
        window_needs(&toks)
            .into_iter()
            .map(|n| match n {
                WindowNeed::Keyed { order, unordered } => Ok((
                    order.table.1.clone(),
                    sql[order.at..].chars().take(6).collect(),
                    unordered,
                )),
                WindowNeed::Refused(why) => Err(why),
            })
            .collect()
    }

    #[test]
    fn tie_dependent_windows_over_one_table_are_keyed() {
        let keyed = |t: &str, at: &str, unordered: bool| Ok((t.into(), at.into(), unordered));
        assert_eq!(
            needs(
                "INSERT INTO r SELECT id, ROW_NUMBER() OVER (PARTITION BY g ORDER BY pri) FROM t"
            ),
            vec![keyed("t", ") FROM", false)]
        );
        assert_eq!(
            needs(
                "UPDATE t JOIN (SELECT id, LAG(v) OVER () p, RANK() OVER (ORDER BY v) r \
                 FROM s) d USING (id) SET t.v = d.p"
            ),
            vec![keyed("s", ") p, R", true)]
        );
        assert_eq!(
            needs(
                "INSERT INTO r SELECT id, SUM(v) OVER (ORDER BY pri ROWS BETWEEN 1 PRECEDING \
                 AND CURRENT ROW), SUM(v) OVER (ORDER BY pri), \
                 LAST_VALUE(v) OVER (ORDER BY pri ROWS UNBOUNDED PRECEDING) FROM q.t x"
            ),
            vec![keyed("t", "ROWS B", false), keyed("t", "ROWS U", false)]
        );
        assert_eq!(
            needs("INSERT INTO r SELECT id, FIRST_VALUE(v) OVER (PARTITION BY g) FROM t"),
            vec![keyed("t", ") FROM", true)]
        );
    }

    #[test]
    fn windows_equal_for_peers_or_ordered_over_a_join_need_nothing() {
        for sql in [
            "INSERT INTO r SELECT id, RANK() OVER (ORDER BY v), CUME_DIST() OVER () FROM t",
            "INSERT INTO r SELECT id, SUM(v) OVER (PARTITION BY g), COUNT(*) OVER () FROM t",
            "INSERT INTO r SELECT t.id, ROW_NUMBER() OVER (ORDER BY t.id, u.id) FROM t JOIN u",
            "INSERT INTO r SELECT id, LAST_VALUE(v) OVER (ORDER BY v) FROM t",
            "INSERT INTO r SELECT id, SUM(v) OVER w FROM t WINDOW w AS (ORDER BY v)",
            "INSERT INTO r VALUES (1, 'ROW_NUMBER() OVER ()')",
        ] {
            assert!(needs(sql).is_empty(), "{sql}");
        }
    }

    #[test]
    fn tie_dependent_windows_nothing_can_order_are_refused() {
        for (sql, says) in [
            (
                "INSERT INTO r SELECT t.id, ROW_NUMBER() OVER () FROM t JOIN u USING (id)",
                "other rows than one table's",
            ),
            (
                "INSERT INTO r SELECT id, LAST_VALUE(v) OVER (PARTITION BY g) FROM t",
                "ROWS frame",
            ),
            (
                "INSERT INTO r SELECT id, ROW_NUMBER() OVER w FROM t WINDOW w AS (ORDER BY id)",
                "named",
            ),
            (
                "INSERT INTO r SELECT g, ROW_NUMBER() OVER () FROM t GROUP BY g",
                "other rows than one table's",
            ),
        ] {
            let got = needs(sql);
            assert!(
                matches!(got.as_slice(), [Err(why)] if why.contains(says)),
                "{sql}: {got:?}"
            );
        }
    }
}
