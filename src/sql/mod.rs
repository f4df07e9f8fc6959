//! SQL understanding without I/O: lexing, classification, SET parsing.
//!
//! Owns: everything the proxy learns from statement text. May import: sqlparser, std.
//! Must not import: tokio, protocol, backend.

pub mod accounts;
pub mod binlog;
pub mod cache;
pub mod classify;
pub mod clock;
pub mod determinism;
pub mod diagnostics;
pub mod lexer;
pub mod like;
pub mod prepare;
pub mod replicated_settings;
pub mod rewrite;
pub mod sequences;
pub mod set;
pub mod user_vars;

pub use cache::ClassifyCache;
pub use classify::{classify, table_name_changes, Classified, Flags, Kind, TableNameChanges};
pub use set::SessionChange;

/// `s` as a single-quoted string literal (backslashes and quotes escaped), for statements the
/// proxy writes itself.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `s` as a backquoted identifier.
pub fn quote_identifier(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `db.t`, `` `d b`.`t` `` or `t` (in `schema`) as (schema, table), quotes removed.
pub fn qualified_name(reference: &str, schema: Option<&str>) -> (Option<String>, String) {
    let mut parts = split_name(reference);
    let table = parts.pop().unwrap_or_default();
    let db = parts.pop().or_else(|| schema.map(str::to_string));
    (db, table)
}

fn split_name(reference: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = reference.trim().chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                chars.next();
                if let Some(p) = parts.last_mut() {
                    p.push('`');
                }
            }
            '`' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
}

/// Statement text comes from clients: whatever bytes they send (decoded lossily where not
/// UTF-8), every function here must answer without panicking. A fuzzing client found
/// `Lexer` slicing inside a character (an unterminated backquote before a 2-byte one), which
/// ended the session's task; this throws pseudo-random SQL-shaped text at each of them.
#[cfg(test)]
mod robustness {
    use super::*;

    const PIECES: &[&str] = &[
        "SELECT ",
        "INSERT INTO ",
        "UPDATE ",
        "DELETE ",
        "REPLACE ",
        "VALUES ",
        "SET ",
        "CALL ",
        "CREATE TABLE ",
        "ALTER ",
        "DROP ",
        "PREPARE ",
        "EXECUTE ",
        "USING ",
        "FROM ",
        "WHERE ",
        "ORDER BY ",
        "LIMIT ",
        "FOR ",
        "STATEMENT ",
        "ON DUPLICATE KEY UPDATE ",
        "BEGIN ",
        "COMMIT",
        "LOCK TABLES ",
        "GRANT ",
        "IDENTIFIED BY ",
        "PASSWORD(",
        "BINLOG ",
        "UUID()",
        "USER()",
        "CURRENT_USER",
        "RAND()",
        "ROWNUM()",
        "NOW(",
        "LAST_INSERT_ID(",
        "@",
        "@@",
        "@`",
        "?",
        "'",
        "\"",
        "`",
        "\\",
        "(",
        ")",
        ",",
        ";",
        ".",
        "=",
        ":=",
        "--",
        "-- ",
        "#",
        "/*",
        "*/",
        "/*!",
        "/*+",
        "\n",
        " ",
        "x'",
        "_utf8mb4",
        "é",
        "Ŧ",
        "ل",
        "😀",
        "\0",
        "a",
        "1",
        "t",
        "myquorum.wal",
        "information_schema.",
        "DEFINER=",
        "TRIGGER ",
        "ENGINE=",
    ];

    fn texts(seed: u64, count: usize) -> Vec<String> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..count)
            .map(|_| {
                let n = next() % 24;
                (0..n)
                    .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn no_text_panics_the_pure_functions() {
        let lits = determinism::Literals {
            uuid: &|| "u".into(),
            uuid_short: &|| 1,
            identity: None,
            no_database: false,
            primary_keys: None,
        };
        let cache = ClassifyCache::new(64);
        for sql in texts(0x9E37_79B9_7F4A_7C15, 20_000) {
            let toks: Vec<_> = lexer::Lexer::new(&sql).collect();
            let _ = lexer::is_begin_not_atomic(&toks);
            for (start, end) in lexer::split_statements(&sql) {
                let _ = sql.get(start..end).map(lexer::without_final_semicolon);
            }
            let _ = lexer::comments(&sql);
            let c = classify(&sql);
            let _ = classify::touches_schema(&c, &sql, Some("db"), "myquorum");
            let _ = (classify::read_hint(&sql), classify::created_function(&sql));
            let _ = (
                classify::defined_object(&sql),
                classify::non_innodb_engine(&sql),
            );
            let _ = classify::sets_non_innodb_default_engine(&sql);
            let _ = (
                table_name_changes(&sql),
                classify::plain_transaction_control(&sql),
            );
            let _ = classify::server_replication_stream(&sql);
            let _ = (cache.digest(&sql), cache.classify(&sql));
            let _ = (
                determinism::check_write(&sql, false, &lits),
                determinism::check_write(&sql, true, &lits),
            );
            let _ = clock::may_read_clock(&sql);
            let _ = determinism::nondeterministic_definition(&sql, "TRIGGER");
            let _ = determinism::nondeterministic_definition(&sql, "TABLE");
            let _ = (
                determinism::inserted_tables(&sql),
                determinism::called_procedure(&sql),
            );
            let _ = determinism::program_schema(&sql);
            let _ = (
                accounts::is_account_statement(&sql),
                accounts::acts_on_current_user(&sql),
            );
            let _ = (accounts::passwords(&sql), accounts::masked(&sql));
            let _ = (
                binlog::parse(&sql),
                diagnostics::parse(&sql),
                like::trailing_pattern(&sql),
            );
            let _ = (prepare::parse(&sql), prepare::bind(&sql, &["1", "'a'"]));
            let _ = (
                rewrite::hide_backend_socket(&sql, Some("/s")),
                rewrite::lock_tables_with_log(&sql),
            );
            let _ = (set::parse_set(&sql), set::raise_isolation(&sql));
            let computed = set::computed_values(&sql);
            let values = vec![Some("1".to_string()); computed.len()];
            let _ = set::with_literal_values(&sql, &computed, &values);
        }
    }
}
