//! Account management statements — CREATE/ALTER/DROP/RENAME USER, CREATE/DROP ROLE, GRANT,
//! REVOKE, SET PASSWORD, SET DEFAULT ROLE — and the clear-text passwords in them. Accounts
//! live in each replica's `mysql` schema, so these statements go through the log like DDL;
//! a clear-text password must not go into the log (the proxy's WAL and every replica's
//! `myquorum.wal` keep it), so each is replaced by its hash first, as MariaDB's binary log
//! does (`IDENTIFIED BY PASSWORD '*…'`).
//!
//! Owns: which statements manage accounts, where their passwords are and what replaces them.
//! May import: sql::lexer.

use super::lexer::{Lexer, Spanned, Tok};
use std::ops::Range;

/// Whether `sql` (one statement) creates, changes or drops accounts, roles or privileges.
pub fn is_account_statement(sql: &str) -> bool {
    // On every statement's path (processlist text): no allocation.
    let mut lexer = Lexer::new(sql);
    let mut words: [Option<Tok<'_>>; 4] = [None; 4];
    words[0] = lexer.next().map(|t| t.tok);
    let leading = [
        "GRANT", "REVOKE", "CREATE", "DROP", "ALTER", "RENAME", "SET",
    ];
    if !words[0].is_some_and(|t| leading.iter().any(|kw| t.is_word(kw))) {
        return false;
    }
    for slot in &mut words[1..] {
        *slot = lexer.next().map(|t| t.tok);
    }
    let w = |i: usize, kw: &str| words[i].is_some_and(|t| t.is_word(kw));
    let user_or_role = |i: usize| w(i, "USER") || w(i, "ROLE");
    w(0, "GRANT")
        || w(0, "REVOKE")
        || (w(0, "CREATE") || w(0, "DROP")) && user_or_role(1)
        || w(0, "CREATE") && w(1, "OR") && w(2, "REPLACE") && user_or_role(3)
        || (w(0, "ALTER") || w(0, "RENAME")) && w(1, "USER")
        || w(0, "SET") && w(1, "PASSWORD")
        || w(0, "SET") && w(1, "DEFAULT") && w(2, "ROLE")
}

/// Whether account statement `sql` acts on the session's own account without naming it
/// (`SET PASSWORD = …`, `CURRENT_USER`): through the proxy that is the backend account the
/// session runs as.
pub fn acts_on_current_user(sql: &str) -> bool {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let own_password = toks.first().is_some_and(|t| t.is_word("SET"))
        && toks.get(1).is_some_and(|t| t.is_word("PASSWORD"))
        && toks.get(2) == Some(&Tok::Punct('='));
    own_password || toks.iter().any(|t| t.is_word("CURRENT_USER"))
}

/// A clear-text password of an account statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Password {
    /// The string literal, quotes included (what `PASSWORD(<literal>)` hashes).
    pub literal: Range<usize>,
    /// The text the hashed form replaces.
    pub replaced: Range<usize>,
    /// `IDENTIFIED BY '…'` becomes `IDENTIFIED BY PASSWORD '<hash>'`; `PASSWORD('…')`
    /// becomes `'<hash>'`.
    pub by_password_keyword: bool,
}

/// The clear-text passwords of account statement `sql`, or why they cannot be hashed by the
/// proxy: only mysql_native_password's (MariaDB's `IDENTIFIED BY` and `PASSWORD()`) can be,
/// because the server computes it with `PASSWORD()`.
pub fn passwords(sql: &str) -> Result<Vec<Password>, String> {
    let toks: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.tok.is_word(kw));
    let punct = |i: usize, c: char| toks.get(i).is_some_and(|t| t.tok == Tok::Punct(c));
    let string = |i: usize| toks.get(i).filter(|t| matches!(t.tok, Tok::Str(_)));
    let mut found = Vec::new();
    // The authentication plugin the current `IDENTIFIED VIA|WITH <plugin>` clause names.
    let mut plugin: Option<&str> = None;
    for (i, t) in toks.iter().enumerate() {
        if t.tok.is_word("IDENTIFIED") && (word(i + 1, "VIA") || word(i + 1, "WITH")) {
            plugin = toks.get(i + 2).and_then(|p| match p.tok {
                Tok::Word(w) | Tok::Quoted(w) => Some(w),
                Tok::Str(s) => Some(s.trim_matches(|c| c == '\'' || c == '"')),
                _ => None,
            });
        } else if t.tok.is_word("OR") && plugin.is_some() {
            plugin = toks.get(i + 1).and_then(|p| match p.tok {
                Tok::Word(w) | Tok::Quoted(w) => Some(w),
                _ => None,
            });
        }
        if t.tok.is_word("IDENTIFIED") && word(i + 1, "BY") && !word(i + 2, "PASSWORD") {
            let Some(lit) = string(i + 2) else {
                return Err(
                    "IDENTIFIED BY takes a string literal here (the proxy hashes it before \
                     the statement goes into its log)"
                        .into(),
                );
            };
            found.push(Password {
                literal: lit.start..lit.end,
                replaced: lit.start..lit.end,
                by_password_keyword: true,
            });
        }
        let function = |name: &str| t.tok.is_word(name) && punct(i + 1, '(');
        if function("OLD_PASSWORD") {
            return Err(
                "OLD_PASSWORD() hashes are not supported: use PASSWORD() or IDENTIFIED BY".into(),
            );
        }
        if function("PASSWORD") {
            if let Some(p) = plugin.filter(|p| !p.eq_ignore_ascii_case("mysql_native_password")) {
                return Err(format!(
                    "a clear-text password for the {p} plugin would go into the proxy's log: \
                     give its hash instead (IDENTIFIED VIA {p} USING '<hash>'), computed on a \
                     server with that plugin"
                ));
            }
            let (Some(lit), true) = (string(i + 2), punct(i + 3, ')')) else {
                return Err(
                    "PASSWORD() takes one string literal here (the proxy hashes it \
                            before the statement goes into its log)"
                        .into(),
                );
            };
            found.push(Password {
                literal: lit.start..lit.end,
                replaced: t.start..toks[i + 3].end,
                by_password_keyword: false,
            });
        }
    }
    Ok(found)
}

/// `sql` with each password replaced by its hash (`hashes` in the order of `passwords`).
pub fn with_hashes(sql: &str, passwords: &[Password], hashes: &[String]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut at = 0;
    for (p, hash) in passwords.iter().zip(hashes) {
        out.push_str(&sql[at..p.replaced.start]);
        if p.by_password_keyword {
            out.push_str("PASSWORD ");
        }
        out.push_str(&super::quote_string(hash));
        at = p.replaced.end;
    }
    out.push_str(&sql[at..]);
    out
}

/// `sql` as processlists show it: an account statement's string literals other than
/// account names as `<secret>` (as MySQL shows passwords), anything else unchanged. Every
/// literal, so that the forms `passwords` refuses are hidden too.
pub fn masked(sql: &str) -> std::borrow::Cow<'_, str> {
    if !is_account_statement(sql) {
        return sql.into();
    }
    let toks: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (i, t) in toks.iter().enumerate() {
        let user_name = toks
            .get(i + 1)
            .is_some_and(|next| super::lexer::is_account_host(t, next));
        if matches!(t.tok, Tok::Str(_)) && !user_name {
            out.push_str(&sql[at..t.start]);
            out.push_str("<secret>");
            at = t.end;
        }
    }
    out.push_str(&sql[at..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processlists_show_no_passwords() {
        assert_eq!(
            masked("CREATE USER a IDENTIFIED BY 'x'"),
            "CREATE USER a IDENTIFIED BY <secret>"
        );
        assert_eq!(
            masked("SET PASSWORD FOR 'a'@'%' = PASSWORD('x')"),
            "SET PASSWORD FOR 'a'@'%' = PASSWORD(<secret>)"
        );
        assert_eq!(masked("SELECT 'x'"), "SELECT 'x'");
    }

    #[test]
    fn account_statements_are_recognised() {
        for sql in [
            "CREATE USER 'a'@'%' IDENTIFIED BY 'x'",
            "create or replace user a",
            "ALTER USER a IDENTIFIED BY 'y'",
            "DROP USER IF EXISTS a",
            "RENAME USER a TO b",
            "CREATE ROLE r",
            "DROP ROLE r",
            "GRANT SELECT ON db.* TO a",
            "REVOKE ALL PRIVILEGES, GRANT OPTION FROM a",
            "SET PASSWORD FOR a = PASSWORD('z')",
            "SET DEFAULT ROLE r FOR a",
        ] {
            assert!(is_account_statement(sql), "{sql}");
        }
        assert!(acts_on_current_user("SET PASSWORD = PASSWORD('x')"));
        assert!(acts_on_current_user(
            "ALTER USER CURRENT_USER() IDENTIFIED BY 'x'"
        ));
        assert!(!acts_on_current_user("SET PASSWORD FOR a = PASSWORD('x')"));
        for sql in [
            "CREATE TABLE user (id INT)",
            "SET ROLE r",
            "SET @password = 1",
            "SELECT PASSWORD('x')",
            "ALTER TABLE t ADD COLUMN role INT",
        ] {
            assert!(!is_account_statement(sql), "{sql}");
        }
    }

    fn hashed(sql: &str) -> Result<String, String> {
        let found = passwords(sql)?;
        let hashes: Vec<String> = (0..found.len()).map(|i| format!("*H{i}")).collect();
        for p in &found {
            assert!(sql[p.literal.clone()].starts_with('\''), "{sql}: {p:?}");
        }
        Ok(with_hashes(sql, &found, &hashes))
    }

    #[test]
    fn clear_text_passwords_are_replaced_by_hashes() {
        let cases = [
            (
                "CREATE USER 'app'@'%' IDENTIFIED BY 'it''s'",
                "CREATE USER 'app'@'%' IDENTIFIED BY PASSWORD '*H0'",
            ),
            (
                "ALTER USER a IDENTIFIED BY 'p1', b IDENTIFIED BY PASSWORD '*ABC'",
                "ALTER USER a IDENTIFIED BY PASSWORD '*H0', b IDENTIFIED BY PASSWORD '*ABC'",
            ),
            (
                "SET PASSWORD FOR a@localhost = PASSWORD('x')",
                "SET PASSWORD FOR a@localhost = '*H0'",
            ),
            (
                "CREATE USER a IDENTIFIED VIA mysql_native_password USING PASSWORD('x') \
                 OR unix_socket",
                "CREATE USER a IDENTIFIED VIA mysql_native_password USING '*H0' OR unix_socket",
            ),
            (
                "GRANT SELECT ON *.* TO a IDENTIFIED BY 'x' WITH GRANT OPTION",
                "GRANT SELECT ON *.* TO a IDENTIFIED BY PASSWORD '*H0' WITH GRANT OPTION",
            ),
            ("DROP USER a", "DROP USER a"),
            ("SET PASSWORD = PASSWORD ('x')", "SET PASSWORD = '*H0'"),
        ];
        for (sql, want) in cases {
            assert_eq!(hashed(sql).as_deref(), Ok(want), "{sql}");
        }
        for sql in [
            "CREATE USER a IDENTIFIED VIA ed25519 USING PASSWORD('x')",
            "SET PASSWORD FOR a = OLD_PASSWORD('x')",
            "CREATE USER a IDENTIFIED BY CONCAT('x', 'y')",
            "SET PASSWORD = PASSWORD(CONCAT('a', 'b'))",
        ] {
            assert!(hashed(sql).is_err(), "{sql}");
        }
    }
}
