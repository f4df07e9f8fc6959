//! SET and USE: which session state a statement changes, and whether that change can be
//! replayed on another backend connection. A change is replayable when every assigned value
//! is a literal (number, string, ON/OFF/DEFAULT-like word); anything computed
//! (`CONCAT(@@sql_mode, …)`, subqueries, user variables) pins the session instead.
//!
//! Isolation levels below REPEATABLE READ are raised to it, both in what is replayed and
//! in what is forwarded (`raise_isolation`).
//!
//! Owns: `SessionChange`, `Isolation`. May import: sql::lexer.

use super::lexer::{Lexer, Tok};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SessionChange {
    /// Replayable assignments: (key, SET fragment). The key identifies what is overwritten
    /// (`names` for SET NAMES / CHARACTER SET, else the variable name, lowercased).
    Vars(Vec<(String, String)>),
    /// USE db.
    Schema(String),
    /// A proxy variable (myquorum_*), answered by the proxy.
    Proxy(String, String),
    /// SET GLOBAL / PERSIST: server state, not session state.
    Global,
    /// Literal assignments and at least one computed value of a session variable
    /// (`@@SESSION.sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')`, as Rails sends on
    /// every connection). The proxy evaluates the values (`computed_values` finds them) on a
    /// backend and runs the SET with literals, which is replayable; if it cannot, this counts
    /// as `Unreplayable`.
    Computed,
    /// Anything else that changes the session in a way the proxy will not replay.
    Unreplayable,
}

impl SessionChange {
    /// Pins the session when run as it is.
    pub fn is_unreplayable(&self) -> bool {
        matches!(self, SessionChange::Unreplayable | SessionChange::Computed)
    }
}

/// Parses a single SET or USE statement.
pub fn parse_set(sql: &str) -> Option<SessionChange> {
    let (change, computed, _) = parse(sql);
    match change {
        Some(SessionChange::Vars(_)) if !computed.is_empty() => Some(SessionChange::Computed),
        other => other,
    }
}

/// For a `Computed` SET: the byte ranges of its computed values, in order.
pub fn computed_values(sql: &str) -> Vec<(usize, usize)> {
    match parse(sql) {
        (Some(SessionChange::Vars(_)), computed, _) => computed,
        _ => Vec::new(),
    }
}

/// The isolation level a replayable SET asks for the rest of the session (the last one it
/// names: `SET SESSION TRANSACTION ISOLATION LEVEL …`, `tx_isolation` or
/// `transaction_isolation` in session scope), before `Isolation::enforced` raises it; None
/// when it sets none that way. A next-transaction `SET TRANSACTION …` is not a session level.
pub fn requested_isolation(sql: &str) -> Option<Isolation> {
    match parse(sql) {
        (Some(SessionChange::Vars(_)), computed, requested) if computed.is_empty() => requested,
        _ => None,
    }
}

/// The level `SET TRANSACTION ISOLATION LEVEL …` (no scope: the next transaction only) asks
/// for, before `Isolation::enforced` raises it; None for any other statement. Go's
/// `database/sql` (`BeginTx` with an isolation level) and Rails' `transaction(isolation:)`
/// send it in front of their BEGIN.
pub fn next_transaction_isolation(sql: &str) -> Option<Isolation> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    match toks.as_slice() {
        [set, transaction, isolation, level, words @ ..]
            if set.is_word("SET")
                && transaction.is_word("TRANSACTION")
                && isolation.is_word("ISOLATION")
                && level.is_word("LEVEL") =>
        {
            Isolation::from_words(words)
        }
        _ => None,
    }
}

/// The SET with each computed value (`computed_values`) replaced by the value it evaluated
/// to on the server (None for NULL); None when a value cannot be written back as a literal.
pub fn with_literal_values(
    sql: &str,
    computed: &[(usize, usize)],
    values: &[Option<String>],
) -> Option<String> {
    if computed.len() != values.len() {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for ((from, to), value) in computed.iter().zip(values) {
        out.push_str(sql.get(last..*from)?);
        match value {
            None => out.push_str("NULL"),
            // Numbers bare: the server refuses quoted digits for boolean and integer variables.
            Some(v)
                if !v.is_empty()
                    && v.strip_prefix('-')
                        .unwrap_or(v)
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
            {
                out.push_str(v)
            }
            // A backslash would mean different things with and without NO_BACKSLASH_ESCAPES.
            Some(v) if v.contains('\\') => return None,
            Some(v) => {
                out.push('\'');
                out.push_str(&v.replace('\'', "''"));
                out.push('\'');
            }
        }
        last = *to;
    }
    out.push_str(sql.get(last..)?);
    Some(out)
}

/// The change a SET or USE makes, the byte ranges of its computed values, and the session
/// isolation level it asks for.
fn parse(
    sql: &str,
) -> (
    Option<SessionChange>,
    Vec<(usize, usize)>,
    Option<Isolation>,
) {
    let mut computed = Vec::new();
    let mut requested = None;
    let change = parse_into(sql, &mut computed, &mut requested);
    (change, computed, requested)
}

fn parse_into(
    sql: &str,
    computed: &mut Vec<(usize, usize)>,
    requested: &mut Option<Isolation>,
) -> Option<SessionChange> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let spans: Vec<(usize, usize)> = Lexer::new(sql).map(|t| (t.start, t.end)).collect();
    let first = toks.first()?;
    if first.is_word("USE") {
        return match toks.get(1) {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) if toks.len() == 2 => {
                Some(SessionChange::Schema(w.replace("``", "`")))
            }
            _ => Some(SessionChange::Unreplayable),
        };
    }
    if !first.is_word("SET") {
        return Some(SessionChange::Unreplayable);
    }
    let mut vars = Vec::new();
    // Split assignments at top-level commas.
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let (mut depth, mut start) = (0i32, 1usize);
    for (i, t) in toks.iter().enumerate().skip(1) {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push((start, toks.len()));
    let parts_count = parts.len();
    for (a, b) in parts {
        let t = &toks[a..b];
        if t.is_empty() {
            return Some(SessionChange::Unreplayable);
        }
        let text = &sql[spans[a].0..spans[b - 1].1];
        let mut i = 0;
        // Scope keyword.
        let mut global = false;
        if t[0].is_word("GLOBAL") || t[0].is_word("PERSIST") || t[0].is_word("PERSIST_ONLY") {
            global = true;
            i = 1;
        } else if t[0].is_word("SESSION") || t[0].is_word("LOCAL") {
            i = 1;
        }
        let rest = &t[i..];
        let Some(head) = rest.first() else {
            return Some(SessionChange::Unreplayable);
        };
        if head.is_word("NAMES") || head.is_word("CHARSET") || head.is_word("CHARACTER") {
            if rest
                .iter()
                .skip(1)
                .all(|x| matches!(x, Tok::Word(_) | Tok::Str(_) | Tok::Quoted(_)))
            {
                vars.push(("names".to_string(), text.to_string()));
                continue;
            }
            return Some(SessionChange::Unreplayable);
        }
        if head.is_word("TRANSACTION") {
            // `SET [SESSION] TRANSACTION ISOLATION LEVEL …` alone; other characteristics
            // (READ ONLY, several at once) pin the session.
            let level = match &rest[1..] {
                [iso, lvl, words @ ..] if iso.is_word("ISOLATION") && lvl.is_word("LEVEL") => {
                    Isolation::from_words(words)
                }
                _ => None,
            };
            let Some(level) = level.filter(|_| parts_count == 1) else {
                return Some(SessionChange::Unreplayable);
            };
            if global {
                return Some(SessionChange::Global);
            }
            let enforced = level.enforced();
            if i == 1 {
                *requested = Some(level);
                vars.push((
                    "tx_isolation".to_string(),
                    format!("SESSION tx_isolation = {}", enforced.value()),
                ));
            } else if enforced != Isolation::RepeatableRead {
                // Next transaction only: it lives on one connection.
                return Some(SessionChange::Unreplayable);
            }
            // Next transaction at REPEATABLE READ: what every connection runs anyway.
            continue;
        }
        let (name, eq_at) = match rest {
            [Tok::UserVar(_), ..] => return Some(SessionChange::Unreplayable),
            [Tok::SysVar(v), Tok::Punct('='), ..] => {
                let lower = v.to_ascii_lowercase();
                if let Some(n) = lower.strip_prefix("global.") {
                    global = true;
                    (n.to_string(), 1)
                } else if let Some(n) = lower
                    .strip_prefix("session.")
                    .or(lower.strip_prefix("local."))
                {
                    (n.to_string(), 1)
                } else {
                    (lower, 1)
                }
            }
            [Tok::Word(w), Tok::Punct('='), ..] => (w.to_ascii_lowercase(), 1),
            [Tok::Word(w), Tok::Punct(':'), Tok::Punct('='), ..] => (w.to_ascii_lowercase(), 2),
            _ => return Some(SessionChange::Unreplayable),
        };
        if global {
            return Some(SessionChange::Global);
        }
        let value = &rest[eq_at + 1..];
        let literal = matches!(
            value,
            [Tok::Number(_)]
                | [Tok::Str(_)]
                | [Tok::Word(_)]
                | [Tok::Quoted(_)]
                | [Tok::Punct('-' | '+'), Tok::Number(_)]
        );
        if name.starts_with("myquorum_") {
            if !literal {
                return Some(SessionChange::Unreplayable);
            }
            let v = &sql[spans[a + i + eq_at + 1].0..spans[b - 1].1];
            return Some(SessionChange::Proxy(
                name,
                v.trim_matches(|c| c == '\'' || c == '"').to_string(),
            ));
        }
        if !literal {
            if is_isolation_variable(&name) || value.is_empty() {
                return Some(SessionChange::Unreplayable);
            }
            computed.push((spans[a + i + eq_at + 1].0, spans[b - 1].1));
            continue;
        }
        if is_isolation_variable(&name) {
            let Some(level) = Isolation::from_value(&value[0]) else {
                return Some(SessionChange::Unreplayable);
            };
            *requested = Some(level);
            vars.push((
                "tx_isolation".to_string(),
                format!("SESSION {name} = {}", level.enforced().value()),
            ));
            continue;
        }
        let value_text = &sql[spans[a + i + eq_at + 1].0..spans[b - 1].1];
        vars.push((name.clone(), format!("SESSION {name} = {value_text}")));
    }
    Some(SessionChange::Vars(vars))
}

/// A transaction isolation level as a client may ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl Isolation {
    /// The level from `READ COMMITTED`-style words (the whole remainder of the statement).
    fn from_words(words: &[Tok<'_>]) -> Option<Isolation> {
        match words {
            [r, c] if r.is_word("READ") && c.is_word("UNCOMMITTED") => {
                Some(Isolation::ReadUncommitted)
            }
            [r, c] if r.is_word("READ") && c.is_word("COMMITTED") => Some(Isolation::ReadCommitted),
            [r, c] if r.is_word("REPEATABLE") && c.is_word("READ") => {
                Some(Isolation::RepeatableRead)
            }
            [s] if s.is_word("SERIALIZABLE") => Some(Isolation::Serializable),
            _ => None,
        }
    }

    /// The level from a `tx_isolation` value: `'READ-COMMITTED'` (any case, either quote)
    /// or the enum's index 0–3.
    fn from_value(value: &Tok<'_>) -> Option<Isolation> {
        let text = match value {
            Tok::Str(s) => s.get(1..s.len().saturating_sub(1))?,
            Tok::Number(n) => n,
            _ => return None,
        };
        const LEVELS: [(&str, &str, Isolation); 4] = [
            ("READ-UNCOMMITTED", "0", Isolation::ReadUncommitted),
            ("READ-COMMITTED", "1", Isolation::ReadCommitted),
            ("REPEATABLE-READ", "2", Isolation::RepeatableRead),
            ("SERIALIZABLE", "3", Isolation::Serializable),
        ];
        LEVELS
            .iter()
            .find(|(name, index, _)| text.eq_ignore_ascii_case(name) || text == *index)
            .map(|(_, _, level)| *level)
    }

    /// What the proxy runs for it. Statement replay in log order reproduces the primary only
    /// under REPEATABLE READ or stronger (MySQL refuses statement-based binlogging of InnoDB
    /// writes below it for the same reason: without gap locks a later-committed statement
    /// may have missed rows an earlier-committed one inserted). A weaker level is raised,
    /// not refused: frameworks such as Django ask for READ COMMITTED on every connection,
    /// and an application written for READ COMMITTED runs under REPEATABLE READ (MySQL's
    /// default) — it takes more locks and a transaction reads one snapshot.
    pub fn enforced(self) -> Isolation {
        match self {
            Isolation::ReadUncommitted | Isolation::ReadCommitted => Isolation::RepeatableRead,
            other => other,
        }
    }

    /// The level lets each statement read what is committed when it starts (READ COMMITTED,
    /// and READ UNCOMMITTED, which the proxy can give no more than that).
    pub fn reads_committed(self) -> bool {
        matches!(self, Isolation::ReadUncommitted | Isolation::ReadCommitted)
    }

    /// As `@@tx_isolation` spells it.
    pub fn name(self) -> &'static str {
        let quoted = self.value();
        &quoted[1..quoted.len() - 1]
    }

    fn value(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "'READ-UNCOMMITTED'",
            Isolation::ReadCommitted => "'READ-COMMITTED'",
            Isolation::RepeatableRead => "'REPEATABLE-READ'",
            Isolation::Serializable => "'SERIALIZABLE'",
        }
    }
}

/// `tx_isolation` or `transaction_isolation` in session scope (also as the lexer gives a
/// `@@` token: `session.tx_isolation`).
pub fn is_isolation_variable(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let name = name
        .strip_prefix("session.")
        .or(name.strip_prefix("local."))
        .unwrap_or(&name);
    name == "tx_isolation" || name == "transaction_isolation"
}

/// The statement with every isolation level below REPEATABLE READ it sets raised to
/// REPEATABLE READ (`READ COMMITTED` words, `'READ-COMMITTED'` or index values assigned to
/// `tx_isolation`/`transaction_isolation`); None when it sets none. Works on any statement
/// text, several statements included.
pub fn raise_isolation(sql: &str) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut last = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let replace = if t.tok.is_word("LEVEL") {
            let words: Vec<Tok<'_>> = toks[i + 1..(i + 3).min(toks.len())]
                .iter()
                .map(|x| x.tok)
                .collect();
            Isolation::from_words(&words)
                .filter(|l| l.enforced() != *l)
                .map(|_| (i + 1, i + 2, "REPEATABLE READ"))
        } else {
            let name = match t.tok {
                Tok::SysVar(v) | Tok::Word(v) => Some(v),
                _ => None,
            };
            let value_at = match toks.get(i + 1).map(|x| x.tok) {
                Some(Tok::Punct('=')) => Some(i + 2),
                Some(Tok::Punct(':')) => Some(i + 3),
                _ => None,
            };
            match (name, value_at) {
                (Some(n), Some(v)) if is_isolation_variable(n) => toks
                    .get(v)
                    .and_then(|x| Isolation::from_value(&x.tok))
                    .filter(|l| l.enforced() != *l)
                    .map(|_| (v, v, "'REPEATABLE-READ'")),
                _ => None,
            }
        };
        if let Some((from, to, with)) = replace {
            out.push_str(&sql[last..toks[from].start]);
            out.push_str(with);
            last = toks[to].end;
            i = to + 1;
        } else {
            i += 1;
        }
    }
    (last > 0).then(|| {
        out.push_str(&sql[last..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_level_asked_for_is_kept_before_it_is_raised() {
        let cases = [
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                Some(Isolation::ReadCommitted),
            ),
            (
                "set session transaction isolation level read uncommitted",
                Some(Isolation::ReadUncommitted),
            ),
            (
                "SET tx_isolation = 'READ-COMMITTED'",
                Some(Isolation::ReadCommitted),
            ),
            (
                "SET @@session.transaction_isolation = 'repeatable-read'",
                Some(Isolation::RepeatableRead),
            ),
            (
                "SET autocommit = 0, @@transaction_isolation = 1, sql_mode = ''",
                Some(Isolation::ReadCommitted),
            ),
            (
                "SET tx_isolation = 'READ-COMMITTED', tx_isolation = 'SERIALIZABLE'",
                Some(Isolation::Serializable),
            ),
            // The next transaction only, the server's default, another variable, computed.
            ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", None),
            (
                "SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
                None,
            ),
            ("SET @@global.tx_isolation = 'READ-COMMITTED'", None),
            ("SET sql_mode = 'ANSI'", None),
            ("SET tx_isolation = @level", None),
            (
                "SET tx_isolation = 'READ-COMMITTED', sql_mode = CONCAT(@@sql_mode, '')",
                None,
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(requested_isolation(sql), want, "{sql}");
        }
        for (sql, want) in [
            (
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                Some(Isolation::ReadCommitted),
            ),
            (
                "set transaction isolation level serializable",
                Some(Isolation::Serializable),
            ),
            (
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                None,
            ),
            (
                "SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
                None,
            ),
            ("SET TRANSACTION READ ONLY", None),
            ("SET tx_isolation = 'READ-COMMITTED'", None),
        ] {
            assert_eq!(next_transaction_isolation(sql), want, "{sql}");
        }
        // What is replayed is the raised level either way.
        assert_eq!(
            vars("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            vars("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        );
    }

    fn vars(sql: &str) -> Vec<(String, String)> {
        match parse_set(sql) {
            Some(SessionChange::Vars(v)) => v,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn literal_assignments_replay() {
        assert_eq!(
            vars("SET autocommit=0, @@session.sql_mode = 'ANSI', SESSION time_zone='+00:00'"),
            vec![
                ("autocommit".into(), "SESSION autocommit = 0".into()),
                ("sql_mode".into(), "SESSION sql_mode = 'ANSI'".into()),
                ("time_zone".into(), "SESSION time_zone = '+00:00'".into()),
            ]
        );
        assert_eq!(
            vars("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
            vec![(
                "names".into(),
                "NAMES utf8mb4 COLLATE utf8mb4_unicode_ci".into()
            )]
        );
        assert_eq!(
            vars("set @@wait_timeout = -1")[0].1,
            "SESSION wait_timeout = -1"
        );
    }

    #[test]
    fn computed_values_and_user_variables_pin() {
        assert_eq!(
            parse_set("SET sql_mode = CONCAT(@@sql_mode, ',ANSI')"),
            Some(SessionChange::Computed)
        );
        assert_eq!(parse_set("SET @x = 1"), Some(SessionChange::Unreplayable));
        assert_eq!(
            parse_set("SET SESSION TRANSACTION READ ONLY"),
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(
            parse_set("SET tx_isolation = CONCAT('READ-', 'COMMITTED')"),
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(
            parse_set("SET GLOBAL max_connections = 10"),
            Some(SessionChange::Global)
        );
        assert_eq!(
            parse_set("SET @@global.max_connections = 10"),
            Some(SessionChange::Global)
        );
    }

    #[test]
    fn isolation_levels_replay_raised_to_repeatable_read() {
        let rr = vec![(
            "tx_isolation".to_string(),
            "SESSION tx_isolation = 'REPEATABLE-READ'".to_string(),
        )];
        for sql in [
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "set local transaction isolation level read uncommitted",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        ] {
            assert_eq!(vars(sql), rr, "{sql}");
        }
        assert_eq!(
            vars("SET @@session.tx_isolation = \"read-committed\", autocommit = 1"),
            vec![
                (
                    "tx_isolation".to_string(),
                    "SESSION tx_isolation = 'REPEATABLE-READ'".to_string()
                ),
                (
                    "autocommit".to_string(),
                    "SESSION autocommit = 1".to_string()
                ),
            ]
        );
        assert_eq!(
            vars("SET transaction_isolation = 1"),
            vec![(
                "tx_isolation".to_string(),
                "SESSION transaction_isolation = 'REPEATABLE-READ'".to_string()
            )]
        );
        assert_eq!(
            vars("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            vec![(
                "tx_isolation".to_string(),
                "SESSION tx_isolation = 'SERIALIZABLE'".to_string()
            )]
        );
        // The next transaction only: nothing to replay when it runs REPEATABLE READ anyway.
        assert_eq!(
            parse_set("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Some(SessionChange::Vars(vec![]))
        );
        assert_eq!(
            parse_set("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(
            parse_set("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Some(SessionChange::Global)
        );
    }

    #[test]
    fn the_forwarded_statement_asks_for_repeatable_read() {
        assert_eq!(
            raise_isolation("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").as_deref(),
            Some("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        );
        assert_eq!(
            raise_isolation(
                "SET sql_auto_is_null = 0; set transaction isolation level read uncommitted"
            )
            .as_deref(),
            Some("SET sql_auto_is_null = 0; set transaction isolation level REPEATABLE READ")
        );
        assert_eq!(
            raise_isolation("SET @@SESSION.tx_isolation='READ-COMMITTED', autocommit=0").as_deref(),
            Some("SET @@SESSION.tx_isolation='REPEATABLE-READ', autocommit=0")
        );
        assert_eq!(
            raise_isolation("SET transaction_isolation := 0").as_deref(),
            Some("SET transaction_isolation := 'REPEATABLE-READ'")
        );
        for unchanged in [
            "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET tx_isolation = 'REPEATABLE-READ'",
            "SET sql_mode = 'READ-COMMITTED'",
            "SET SESSION TRANSACTION READ ONLY",
        ] {
            assert_eq!(raise_isolation(unchanged), None, "{unchanged}");
        }
    }

    #[test]
    fn computed_values_are_found_and_written_back_as_literals() {
        let rails = "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, \
                     @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO'), \
                     @@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483";
        assert_eq!(parse_set(rails), Some(SessionChange::Computed));
        let computed = computed_values(rails);
        assert_eq!(
            computed
                .iter()
                .map(|(a, b)| &rails[*a..*b])
                .collect::<Vec<_>>(),
            ["CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO')"]
        );
        let literal = with_literal_values(
            rails,
            &computed,
            &[Some("STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO".into())],
        )
        .unwrap();
        assert_eq!(
            vars(&literal),
            vec![
                (
                    "names".to_string(),
                    "NAMES utf8mb4 COLLATE utf8mb4_unicode_ci".to_string()
                ),
                (
                    "sql_mode".to_string(),
                    "SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO'".to_string()
                ),
                (
                    "sql_auto_is_null".to_string(),
                    "SESSION sql_auto_is_null = 0".to_string()
                ),
                (
                    "wait_timeout".to_string(),
                    "SESSION wait_timeout = 2147483".to_string()
                ),
            ]
        );
        // Numbers bare, NULL, quotes doubled; a backslash is not written back.
        let sql = "SET a = 1 + 1, b = f(), c = CONCAT('x', 'y')";
        let computed = computed_values(sql);
        assert_eq!(computed.len(), 3);
        assert_eq!(
            with_literal_values(
                sql,
                &computed,
                &[Some("2".into()), None, Some("it's".into())]
            )
            .as_deref(),
            Some("SET a = 2, b = NULL, c = 'it''s'")
        );
        assert_eq!(
            with_literal_values(
                sql,
                &computed,
                &[Some("-2".into()), None, Some("a\\b".into())]
            ),
            None
        );
        // What cannot be evaluated apart from the statement still pins.
        assert_eq!(
            parse_set("SET @x = 1, sql_mode = @x"),
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(
            parse_set("SET tx_isolation = CONCAT('READ-', 'COMMITTED')"),
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(
            parse_set("SET GLOBAL sql_mode = CONCAT(@@sql_mode, ',ANSI')"),
            Some(SessionChange::Global)
        );
    }

    #[test]
    fn use_and_proxy_variables() {
        assert_eq!(
            parse_set("USE `my``db`"),
            Some(SessionChange::Schema("my`db".into()))
        );
        assert_eq!(
            parse_set("SET myquorum_read_consistency = 'strong'"),
            Some(SessionChange::Proxy(
                "myquorum_read_consistency".into(),
                "strong".into()
            ))
        );
    }
}
