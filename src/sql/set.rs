//! SET and USE: which session state a statement changes, and whether that change can be
//! replayed on another backend connection. A change is replayable when every assigned value
//! is a literal (number, string, ON/OFF/DEFAULT-like word); anything computed
//! (`CONCAT(@@sql_mode, …)`, subqueries, user variables) pins the session instead.
//!
//! Owns: `SessionChange`. May import: sql::lexer.

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
    /// Anything else that changes the session in a way the proxy will not replay.
    Unreplayable,
}

/// Parses a single SET or USE statement.
pub fn parse_set(sql: &str) -> Option<SessionChange> {
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
            return Some(SessionChange::Unreplayable);
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
            return Some(SessionChange::Unreplayable);
        }
        let value_text = &sql[spans[a + i + eq_at + 1].0..spans[b - 1].1];
        vars.push((name.clone(), format!("SESSION {name} = {value_text}")));
    }
    Some(SessionChange::Vars(vars))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(SessionChange::Unreplayable)
        );
        assert_eq!(parse_set("SET @x = 1"), Some(SessionChange::Unreplayable));
        assert_eq!(
            parse_set("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
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
