//! The writes inside a stored program's body (`CREATE PROCEDURE / FUNCTION / TRIGGER`), and
//! the SELECTs that feed later statements (`SELECT … INTO`, a cursor's), get the orders a
//! write of their own gets (`statement_orders`): the primary key of the one
//! table they read ends an ORDER BY whose ties a LIMIT, an INSERT's AUTO_INCREMENT ids or a
//! window function would otherwise break in each server's read order, and an `INSERT …
//! SELECT` no key can order ends it with its output positions. The body is rewritten once,
//! in the CREATE the log carries, so every replica stores and runs the same program. Before,
//! `CREATE PROCEDURE renumber() UPDATE q JOIN (SELECT id, ROW_NUMBER() OVER (ORDER BY pri)
//! rn FROM q) d USING (id) SET q.pos = d.rn` numbered tied rows one way on the primary and
//! another on a follower, with equal row counts, so nothing noticed.
//!
//! Keys are qualified by the table (or its alias) even where a statement of its own names
//! them bare: in a program a bare name is a variable or parameter first.
//!
//! Pure: no I/O. Part of `determinism`, whose `statement_orders` it uses.

use super::statement_orders;
use crate::sql::lexer::{Lexer, Spanned, Tok};

/// What a stored program's writes need to run alike on every replica.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProgramOrders {
    /// Tables (schema as written, table) whose primary keys its orders need, checked without
    /// keys: read them on the primary (in the program's schema for unqualified names) and
    /// check again with them, in this order.
    pub needs_primary_keys: Vec<(Option<String>, String)>,
    /// The CREATE statement with the orders written in, when any was.
    pub rewritten: Option<String>,
    /// Why the program cannot be replicated: a write of it picks or numbers rows in an
    /// order nothing fixes.
    pub refused: Option<String>,
}

/// The orders the writes of the program `sql` defines need (`primary_keys`: their tables'
/// keys, once read, in `needs_primary_keys`' order; an empty one: that table has none).
pub fn program_orders(sql: &str, primary_keys: Option<&[Vec<String>]>) -> ProgramOrders {
    let spans: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    let mut read_keys = primary_keys.map(|keys| keys.iter());
    let mut body = body_orders(sql, &spans, read_keys.as_mut());
    let mut result = ProgramOrders {
        refused: body.refused,
        ..Default::default()
    };
    if result.refused.is_none() && primary_keys.is_none() {
        result.needs_primary_keys = body.tables;
    }
    if !body.inserts.is_empty() {
        body.inserts.sort_by_key(|(at, _)| *at);
        let mut out = String::with_capacity(sql.len() + 64);
        let mut last = 0;
        for (at, text) in &body.inserts {
            out.push_str(sql.get(last..*at).unwrap_or_default());
            out.push_str(text);
            last = *at;
        }
        out.push_str(sql.get(last..).unwrap_or_default());
        result.rewritten = Some(out);
    }
    result
}

/// Temporary tables a program creates (`CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS]
/// t`) and does not drop after (`DROP [TEMPORARY] TABLE [IF EXISTS] t, …`), lowercased.
fn temporary_tables_left(spans: &[Spanned<'_>]) -> Vec<String> {
    let toks: Vec<&Tok<'_>> = spans.iter().map(|s| &s.tok).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(w));
    // The table name at `i` (its last part when qualified), and the index after it.
    let name = |mut i: usize| -> Option<(String, usize)> {
        let mut last = None;
        loop {
            match toks.get(i) {
                Some(Tok::Word(n) | Tok::Quoted(n)) => last = Some(n.to_ascii_lowercase()),
                _ => return last.map(|n| (n, i)),
            }
            if !matches!(toks.get(i + 1), Some(Tok::Punct('.'))) {
                return last.map(|n| (n, i + 1));
            }
            i += 2;
        }
    };
    let mut left: Vec<String> = Vec::new();
    for i in 0..toks.len() {
        if word(i, "CREATE") {
            let mut j = i + 1;
            if word(j, "OR") && word(j + 1, "REPLACE") {
                j += 2;
            }
            if !(word(j, "TEMPORARY") && word(j + 1, "TABLE")) {
                continue;
            }
            j += 2;
            if word(j, "IF") && word(j + 1, "NOT") && word(j + 2, "EXISTS") {
                j += 3;
            }
            if let Some((n, _)) = name(j) {
                if !left.contains(&n) {
                    left.push(n);
                }
            }
        } else if word(i, "DROP") {
            let mut j = i + 1;
            if word(j, "TEMPORARY") {
                j += 1;
            }
            if !word(j, "TABLE") {
                continue;
            }
            j += 1;
            if word(j, "IF") && word(j + 1, "EXISTS") {
                j += 2;
            }
            while let Some((n, next)) = name(j) {
                left.retain(|t| *t != n);
                if !matches!(toks.get(next), Some(Tok::Punct(','))) {
                    break;
                }
                j = next + 1;
            }
        }
    }
    left
}

/// The orders of the statements in a body (`spans`, lexed from `sql`).
pub(super) struct BodyOrders {
    /// Text to insert, at byte offsets of `sql` that start a token or follow the last.
    pub inserts: Vec<(usize, String)>,
    /// Tables whose keys they need, in the order `read_keys` gives them.
    pub tables: Vec<(Option<String>, String)>,
    /// Why one of them cannot be fixed.
    pub refused: Option<String>,
}

/// The orders of the statements of a program's or a compound statement's body
/// (`body_statements`), their keys taken from `read_keys` once read. An order that ends a
/// statement goes in front of its `;`, so every offset starts a token of `sql` or follows
/// its last one (where `check_write` splices text in).
pub(super) fn body_orders<'k>(
    sql: &str,
    spans: &[Spanned<'_>],
    mut read_keys: Option<&mut std::slice::Iter<'k, Vec<String>>>,
) -> BodyOrders {
    let keys_read = read_keys.is_some();
    let mut body = BodyOrders {
        inserts: Vec::new(),
        tables: Vec::new(),
        refused: None,
    };
    for range in body_statements(spans) {
        let base = spans[range.start].start;
        let last_end = spans[range.end - 1].end;
        let Some(text) = sql.get(base..last_end) else {
            continue;
        };
        let toks: Vec<Spanned<'_>> = Lexer::new(text).collect();
        let Some((is_update_or_delete, is_insert_select)) = write_kind(&toks) else {
            continue;
        };
        let orders = statement_orders(
            &toks,
            text,
            is_update_or_delete,
            is_insert_select,
            true,
            read_keys.as_deref_mut(),
        );
        if let Some(why) = orders.refusal(keys_read) {
            body.refused
                .get_or_insert(format!("in `{}`: {why}", excerpt(text)));
        }
        body.tables.extend(orders.tables());
        let mut key_texts = orders.key_texts;
        let cursor = cursor_select(spans, range.start);
        if let Some(order) = cursor.then(|| unordered_cursor_order(&toks)).flatten() {
            let key = read_keys.as_deref_mut().and_then(Iterator::next);
            if let Some(key) = key.filter(|k| !k.is_empty()) {
                key_texts.push((order.at, order.text(key)));
            }
            body.tables.push(order.table);
        }
        let end = spans
            .get(range.end)
            .map_or(last_end, |semicolon| semicolon.start);
        body.inserts.extend(key_texts.into_iter().map(|(at, t)| {
            let at = base + at;
            (if at == last_end { end } else { at }, t)
        }));
    }
    if let Some(t) = temporary_tables_left(spans).first() {
        body.refused.get_or_insert(format!(
            "it creates the temporary table `{t}` and does not drop it: a temporary table is \
             its session's, but the followers replay every session's programs and compound \
             statements on one connection, where it would stay and hide a table of that name \
             from later writes; drop it (DROP TEMPORARY TABLE {t}) before the end"
        ));
    }
    body
}

/// A cursor's SELECT of one table without ORDER BY or LIMIT (`toks`): its loop fetches the
/// rows in the order the server's plan reads them, which may differ between replicas (an
/// index range on one, a scan on another), and a loop numbering or chaining rows would
/// write other values on each. Ordered by the table's key, qualified, in front of a
/// locking clause or at the end.
fn unordered_cursor_order(toks: &[Spanned<'_>]) -> Option<super::KeyOrder> {
    if super::top_level(toks, "ORDER").is_some() || super::top_level(toks, "LIMIT").is_some() {
        return None;
    }
    let read = super::one_table_read(toks)?;
    let at = super::unordered_select_end(toks, read.next)?;
    Some(super::KeyOrder {
        table: read.table,
        qualifier: Some(read.qualifier),
        at,
        continues: false,
        lead_space: true,
    })
}

/// The byte ranges of the program's writes whose every unordered pick a primary key can
/// order once read (`UPDATE jobs SET owner = 1 WHERE owner IS NULL LIMIT 1`): their LIMITs
/// need no ORDER BY from the user, as a statement of its own would not.
pub(super) fn orderable_writes(sql: &str) -> Vec<std::ops::Range<usize>> {
    let spans: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    body_statements(&spans)
        .into_iter()
        .filter_map(|range| {
            let bytes = spans[range.start].start..spans[range.end - 1].end;
            let text = sql.get(bytes.clone())?;
            let toks: Vec<Spanned<'_>> = Lexer::new(text).collect();
            let (update_or_delete, insert_select) = write_kind(&toks)?;
            statement_orders(&toks, text, update_or_delete, insert_select, true, None)
                .refusal(false)
                .is_none()
                .then_some(bytes)
        })
        .collect()
}

/// Whether a body statement is an UPDATE or DELETE, or reads rows in an order that
/// matters as an INSERT … SELECT does (that, or a feeding SELECT); None: neither, so it
/// has no orders to fix.
fn write_kind(toks: &[Spanned<'_>]) -> Option<(bool, bool)> {
    let first = toks.first()?.tok;
    let update_or_delete = first.is_word("UPDATE") || first.is_word("DELETE");
    let selecting = first.is_word("SELECT")
        || (first.is_word("INSERT") || first.is_word("REPLACE"))
            && toks.iter().any(|t| t.tok.is_word("SELECT"));
    (update_or_delete || selecting).then_some((update_or_delete, selecting))
}

/// A statement on one line, cut after 60 characters: enough to find it in the body.
fn excerpt(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(60) {
        Some((at, _)) => format!("{} …", &line[..at]),
        None => line,
    }
}

/// The token ranges of the statements in a program's body whose rows' order can matter,
/// each to its `;` or the end: those that start with a write word (INSERT, REPLACE,
/// UPDATE, DELETE), and the SELECTs that feed later statements — `SELECT … INTO` and a
/// cursor's `CURSOR FOR SELECT`. A write word counts where a statement can start: not a
/// call (`REPLACE(s, 'a', 'b')`), nor the trigger's event (`BEFORE INSERT`), `CREATE OR
/// REPLACE`, `ON DUPLICATE KEY UPDATE`, `FOR UPDATE`, a foreign key's `ON DELETE`, or a
/// list of privileges.
fn body_statements(spans: &[Spanned<'_>]) -> Vec<std::ops::Range<usize>> {
    const NOT_AFTER: &[&str] = &["BEFORE", "AFTER", "OR", "KEY", "FOR", "ON", "GRANT"];
    let mut found = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let t = spans[i].tok;
        let prev = i.checked_sub(1).map(|p| spans[p].tok);
        let end = statement_end(spans, i);
        let write = ["INSERT", "REPLACE", "UPDATE", "DELETE"]
            .iter()
            .any(|w| t.is_word(w))
            && spans.get(i + 1).map(|n| n.tok) != Some(Tok::Punct('('))
            && !prev.is_some_and(|p| {
                p == Tok::Punct(',')
                    || p == Tok::Punct('.')
                    || NOT_AFTER.iter().any(|w| p.is_word(w))
            });
        let feeding_select = t.is_word("SELECT")
            && (cursor_select(spans, i)
                || !prev.is_some_and(|p| {
                    p == Tok::Punct('(')
                        || ["UNION", "EXCEPT", "INTERSECT", "ALL", "DISTINCT", "AS"]
                            .iter()
                            .any(|w| p.is_word(w))
                }) && into_at_top(&spans[i..end]));
        if write || feeding_select {
            found.push(i..end);
            i = end + 1;
        } else {
            i += 1;
        }
    }
    found
}

/// Whether the statement at `start` is a cursor's (`DECLARE c CURSOR FOR SELECT …`).
fn cursor_select(spans: &[Spanned<'_>], start: usize) -> bool {
    start >= 2 && spans[start - 1].tok.is_word("FOR") && spans[start - 2].tok.is_word("CURSOR")
}

/// The index of the `;` at depth 0 that ends the statement starting at `start`, or the end.
fn statement_end(spans: &[Spanned<'_>], start: usize) -> usize {
    let mut depth = 0usize;
    for (j, s) in spans.iter().enumerate().skip(start) {
        match s.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(';') if depth == 0 => return j,
            _ => {}
        }
    }
    spans.len()
}

/// Whether a SELECT statement assigns variables (`INTO` outside parentheses).
fn into_at_top(spans: &[Spanned<'_>]) -> bool {
    let mut depth = 0usize;
    spans.iter().any(|s| {
        match s.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            _ => return depth == 0 && s.tok.is_word("INTO"),
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::program_orders;

    #[test]
    fn temporary_tables_a_program_leaves_are_found() {
        let left = |sql: &str| {
            let spans: Vec<_> = crate::sql::lexer::Lexer::new(sql).collect();
            super::temporary_tables_left(&spans)
        };
        assert_eq!(
            left("CREATE PROCEDURE p() BEGIN CREATE TEMPORARY TABLE t1 (x INT); END"),
            ["t1"]
        );
        assert!(left(
            "CREATE PROCEDURE p() BEGIN CREATE TEMPORARY TABLE IF NOT EXISTS d.`T1` (x INT); \
             SELECT * FROM t1; DROP TEMPORARY TABLE IF EXISTS t2, d.t1; END"
        )
        .is_empty());
        assert_eq!(
            left(
                "CREATE PROCEDURE p() BEGIN CREATE OR REPLACE TEMPORARY TABLE a SELECT 1; \
                 CREATE TEMPORARY TABLE b (x INT); DROP TABLE a; END"
            ),
            ["b"]
        );
        assert!(left("CREATE PROCEDURE p() CREATE TABLE t (x INT)").is_empty());
        let refused = program_orders(
            "CREATE PROCEDURE p() BEGIN CREATE TEMPORARY TABLE t1 (x INT); END",
            Some(&[]),
        )
        .refused
        .unwrap();
        assert!(refused.contains("temporary table `t1`"), "{refused}");
    }

    fn spaced(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn rewritten(sql: &str, keys: &[&[&str]]) -> ProgramResult {
        let first = program_orders(sql, None);
        let keys: Vec<Vec<String>> = keys
            .iter()
            .map(|k| k.iter().map(|c| c.to_string()).collect())
            .collect();
        let again = program_orders(sql, Some(&keys));
        ProgramResult {
            tables: first.needs_primary_keys,
            text: again.rewritten.map(|t| spaced(&t)),
            refused: again.refused,
        }
    }

    struct ProgramResult {
        tables: Vec<(Option<String>, String)>,
        text: Option<String>,
        refused: Option<String>,
    }

    fn table(schema: Option<&str>, name: &str) -> (Option<String>, String) {
        (schema.map(str::to_string), name.to_string())
    }

    #[test]
    fn a_window_in_a_procedure_is_ordered_by_its_tables_key() {
        let sql = "CREATE PROCEDURE renumber() UPDATE q JOIN (SELECT id, ROW_NUMBER() OVER \
                   (ORDER BY pri) rn FROM q) d USING (id) SET q.pos = d.rn";
        let r = rewritten(sql, &[&["id"]]);
        assert_eq!(r.tables, [table(None, "q")]);
        assert_eq!(
            r.text.as_deref(),
            Some(
                "CREATE PROCEDURE renumber() UPDATE q JOIN (SELECT id, ROW_NUMBER() OVER \
                 (ORDER BY pri , `q`.`id` ) rn FROM q) d USING (id) SET q.pos = d.rn"
            )
        );
        assert_eq!(r.refused, None);
    }

    #[test]
    fn each_write_of_a_body_gets_its_own_key_qualified() {
        let sql = "CREATE DEFINER = root@localhost PROCEDURE app.claim(IN who INT)\n\
                   BEGIN\n\
                     DECLARE id INT DEFAULT 0;\n\
                     IF who > 0 THEN\n\
                       UPDATE jobs SET owner = who WHERE owner IS NULL ORDER BY prio LIMIT 1;\n\
                     END IF;\n\
                     INSERT INTO copies (v) SELECT v FROM src s ORDER BY v;\n\
                     SELECT REPLACE(name, 'a', 'b') FROM jobs FOR UPDATE;\n\
                     DELETE FROM jobs AS j WHERE done LIMIT 10;\n\
                   END";
        let r = rewritten(sql, &[&["id"], &["k1", "k2"], &["id"]]);
        assert_eq!(
            r.tables,
            [table(None, "jobs"), table(None, "src"), table(None, "jobs")]
        );
        let text = r.text.expect("rewritten");
        assert!(
            text.contains("ORDER BY prio , `jobs`.`id` LIMIT 1;"),
            "{text}"
        );
        assert!(text.contains("ORDER BY v, `s`.`k1`, `s`.`k2` ;"), "{text}");
        assert!(
            text.contains("WHERE done ORDER BY `j`.`id` LIMIT 10;"),
            "{text}"
        );
        assert!(
            text.contains("REPLACE(name, 'a', 'b') FROM jobs FOR UPDATE;"),
            "{text}"
        );
    }

    #[test]
    fn selects_feeding_later_statements_are_ordered_too() {
        let sql = "CREATE PROCEDURE take() BEGIN DECLARE j, p INT; \
                   DECLARE done INT DEFAULT 0; \
                   DECLARE c CURSOR FOR SELECT id FROM jobs WHERE state = 'new' ORDER BY prio; \
                   DECLARE d CURSOR FOR SELECT id FROM jobs o WHERE state = 'old' FOR UPDATE; \
                   DECLARE e CURSOR FOR SELECT id FROM jobs WHERE state = 'x'; \
                   SELECT id, prio INTO j, p FROM jobs WHERE state = 'new' ORDER BY prio LIMIT 1; \
                   SELECT a.id, b.v INTO j, p FROM jobs a JOIN extra b USING (id) LIMIT 1; \
                   SET p = (SELECT MAX(prio) FROM jobs LIMIT 1); \
                   SELECT id FROM jobs ORDER BY prio LIMIT 3; \
                   UPDATE jobs SET state = 'taken' WHERE id = j; END";
        let r = rewritten(sql, &[&["id"], &["id"], &["id"], &["id"]]);
        assert_eq!(r.tables, vec![table(None, "jobs"); 4]);
        let text = r.text.expect("rewritten");
        assert!(
            text.contains(
                "CURSOR FOR SELECT id FROM jobs WHERE state = 'new' ORDER BY prio, `jobs`.`id` ;"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "INTO j, p FROM jobs WHERE state = 'new' ORDER BY prio , `jobs`.`id` LIMIT 1;"
            ),
            "{text}"
        );
        // A cursor without ORDER BY reads in its plan's order: ordered by the key, in
        // front of a locking clause.
        assert!(
            text.contains("WHERE state = 'old' ORDER BY `o`.`id` FOR UPDATE;"),
            "{text}"
        );
        assert!(
            text.contains("WHERE state = 'x' ORDER BY `jobs`.`id` ;"),
            "{text}"
        );
        // A join no key orders: its two output columns, not the INTO's variables.
        assert!(text.contains("USING (id) ORDER BY 1, 2 LIMIT 1;"), "{text}");
        // A subquery's own SELECT and a procedure's result set are left alone.
        assert!(
            text.contains("SET p = (SELECT MAX(prio) FROM jobs LIMIT 1);"),
            "{text}"
        );
        assert!(
            text.contains("SELECT id FROM jobs ORDER BY prio LIMIT 3;"),
            "{text}"
        );
    }

    #[test]
    fn a_trigger_event_and_create_or_replace_are_not_writes_of_the_body() {
        let sql = "CREATE OR REPLACE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW \
                   SET NEW.v = (SELECT MAX(v) FROM u)";
        assert_eq!(program_orders(sql, None), Default::default());
        let sql = "CREATE TRIGGER tr AFTER UPDATE ON t FOR EACH ROW \
                   INSERT INTO log (v) SELECT v FROM t ORDER BY v LIMIT 5";
        let r = rewritten(sql, &[&["id"]]);
        assert_eq!(r.tables, [table(None, "t")]);
        assert!(
            r.text
                .as_deref()
                .is_some_and(|t| t.ends_with("ORDER BY v , `t`.`id` LIMIT 5")),
            "{:?}",
            r.text
        );
    }

    #[test]
    fn an_unordered_window_without_a_key_refuses_the_program() {
        let sql = "CREATE PROCEDURE p() INSERT INTO c (n, v) \
                   SELECT ROW_NUMBER() OVER (), v FROM heap";
        let r = rewritten(sql, &[&[]]);
        assert_eq!(r.tables, [table(None, "heap")]);
        assert!(
            r.refused
                .as_deref()
                .is_some_and(|w| w.contains("no primary key")),
            "{:?}",
            r.refused
        );
        // Ordered and tied, over a join: taken at its word, as a statement of its own is.
        let sql = "CREATE PROCEDURE p() INSERT INTO c (n) SELECT ROW_NUMBER() OVER \
                   (ORDER BY a.v) FROM a JOIN b USING (id)";
        assert_eq!(program_orders(sql, None), Default::default());
    }

    #[test]
    fn a_dumped_procedure_in_versioned_comments_is_ordered_inside_them() {
        let sql = "/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`localhost`*/ /*!50003 PROCEDURE \
                   `claim`(IN who INT) UPDATE jobs SET owner = who LIMIT 1 */";
        let keys = [vec!["id".to_string()]];
        let r = program_orders(sql, Some(&keys));
        assert_eq!(
            r.rewritten.as_deref(),
            Some(
                "/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`localhost`*/ /*!50003 PROCEDURE \
                 `claim`(IN who INT) UPDATE jobs SET owner = who ORDER BY `jobs`.`id` LIMIT 1 */"
            )
        );
        assert_eq!(
            crate::sql::classify::defined_object(sql).as_deref(),
            Some("PROCEDURE")
        );
    }

    #[test]
    fn every_prefix_of_a_body_is_judged_without_panicking() {
        // A client may send any cut of a program (a lost connection, a fuzzer): each
        // prefix, and each compound statement prefix through `check_write`, gives an
        // answer. Offsets must stay on the text's character boundaries.
        let bodies = [
            "CREATE PROCEDURE p(IN w INT) BEGIN DECLARE j INT; DECLARE c CURSOR FOR \
             SELECT id FROM t ORDER BY é; SELECT id INTO j FROM t WHERE n = 'ü' ORDER BY \
             pri LIMIT 1; UPDATE t SET o = w ORDER BY pri LIMIT 1; INSERT INTO c (n) \
             SELECT ROW_NUMBER() OVER (ORDER BY pri) FROM t; END",
            "BEGIN NOT ATOMIC DELETE FROM t WHERE a = (SELECT a FROM s ORDER BY b LIMIT 1); \
             INSERT INTO u SELECT a, b FROM s JOIN v USING (a) ORDER BY a LIMIT 2 ; END",
        ];
        let keys = vec![vec!["id".to_string()]; 8];
        let keyed = crate::sql::determinism::Literals {
            uuid: &|| String::new(),
            uuid_short: &|| 0,
            identity: None,
            no_database: false,
            primary_keys: Some(&keys),
        };
        let mut rewritten = 0;
        for body in bodies {
            for (cut, _) in body.char_indices() {
                let prefix = &body[..cut];
                let first = program_orders(prefix, None);
                let again = program_orders(prefix, Some(&keys));
                rewritten += usize::from(again.rewritten.is_some());
                assert!(first.needs_primary_keys.len() <= keys.len(), "{prefix}");
                let _ = crate::sql::determinism::check_write(prefix, false, &keyed);
            }
        }
        assert!(rewritten > 0);
    }
}
