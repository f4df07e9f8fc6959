//! Statement classification: what a statement does (read, write, transaction control, session
//! change, DDL, admin), which tables it touches, and the properties that decide routing and
//! pinning (locking reads, user variables, advisory locks, temporary tables, …).
//!
//! `sqlparser` (MySQL dialect) gives the statement kind and tables; a lexical scan gives the
//! flags and is the fallback when the parser rejects valid MySQL (`LOCK IN SHARE MODE`,
//! `LOAD DATA`, `XA`, `SIGNAL`, `DO`, `PREPARE … FROM`, …). No I/O, no tokio.
//!
//! Owns: `Classified`. May import: sql::lexer, sql::set, sqlparser.

use super::lexer::{is_compound_statement, split_statements, Lexer, Tok};
use super::set::{parse_set, SessionChange};
use bitflags::bitflags;
use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Read,
    Write,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    /// Changes session state only (SET, USE, PREPARE, …).
    Session,
    Ddl,
    Admin,
    Call,
    Xa,
    /// Table locks: LOCK TABLES / UNLOCK TABLES.
    Lock,
    /// A command the proxy answers itself (SHOW PROXY …).
    Proxy,
    /// Nothing to execute (empty text or only comments).
    Empty,
    Other,
}

bitflags! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Flags: u32 {
        const LOCKING_READ = 1;
        const LAST_INSERT_ID = 1 << 1;
        const FOUND_ROWS = 1 << 2;
        const TEMP_TABLE = 1 << 3;
        const USER_VARIABLE = 1 << 4;
        const TABLE_LOCK = 1 << 5;
        const UNLOCK_TABLES = 1 << 6;
        const ADVISORY_LOCK = 1 << 7;
        const SQL_PREPARE = 1 << 8;
        /// The parser rejected the text; kind came from keywords.
        const FALLBACK = 1 << 9;
        const WARNINGS_QUERY = 1 << 10;
        /// SET GLOBAL / SET PERSIST: a server change, not session state.
        const GLOBAL_CHANGE = 1 << 11;
        const MULTI_STATEMENT = 1 << 12;
        const SIDE_EFFECTS = 1 << 13;
        /// Reads @@socket (rewritten so clients do not bypass the proxy).
        const READS_SOCKET = 1 << 14;
        /// Calls a sequence (NEXTVAL, SETVAL, LASTVAL, NEXT/PREVIOUS VALUE FOR: `sql::sequences`).
        const SEQUENCE = 1 << 15;
        /// `SHOW [SESSION | LOCAL] STATUS`: its `Ssl_*` rows describe the connection it
        /// runs on, so the proxy answers those from the client's own.
        const SESSION_STATUS = 1 << 16;
        /// BACKUP STAGE (but END) or BACKUP LOCK: a lock the connection holds until
        /// released.
        const BACKUP_LOCK = 1 << 17;
        /// BACKUP STAGE END or BACKUP UNLOCK.
        const BACKUP_UNLOCK = 1 << 18;
        /// Calls CONNECTION_ID() (rewritten to the proxy's id for the session).
        const CONNECTION_ID = 1 << 19;
        /// `HANDLER … OPEN`: a handler the connection keeps until `HANDLER … CLOSE`.
        const HANDLER_OPEN = 1 << 20;
        /// `HANDLER … CLOSE`.
        const HANDLER_CLOSE = 1 << 21;
        /// A statement starts with a word that starts no statement the proxy knows. The
        /// server refuses such a text, unless it reads it otherwise than the proxy (a byte,
        /// a comment or a mode the proxy's lexer does not follow); then it would run on the
        /// primary alone, outside the log. So the proxy refuses it itself.
        const UNKNOWN_STATEMENT = 1 << 22;
        /// Reads the session's isolation level (`@@tx_isolation`, `@@transaction_isolation`):
        /// the proxy shows the level the session asked for, not the one it raised it to.
        const READS_ISOLATION = 1 << 23;
        /// `SHOW [SESSION | LOCAL] VARIABLES`: its isolation rows likewise.
        const SESSION_VARIABLES = 1 << 24;
    }
}

impl serde::Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = self.iter_names().map(|(n, _)| n).collect();
        names.serialize(s)
    }
}

/// The classification of one COM_QUERY / COM_STMT_PREPARE text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classified {
    pub kind: Kind,
    pub statements: u16,
    pub flags: Flags,
    pub tables: Vec<String>,
    /// Tables an INSERT/REPLACE writes (empty when not known): a write into the session's
    /// temporary table may read regular tables and still stay on the primary.
    pub targets: Vec<String>,
    /// For SET/USE statements: what changes in the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionChange>,
    /// For `SHOW PROXY …`: the words after PROXY, lowercased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_command: Option<String>,
    /// A routing hint in a comment (`/* myquorum=primary */`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<ReadHint>,
}

/// What a comment may ask of a read's routing, as MaxScale's `route to master` hints do.
/// It never sends to a replica what must run on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ReadHint {
    /// `myquorum=primary`: read on the primary.
    Primary,
    /// `myquorum=strong`: a replica holding everything logged, else the primary.
    Strong,
    /// `myquorum=session`: a replica holding the session's writes.
    Session,
    /// `myquorum=eventual`: any replica within the configured lag.
    Eventual,
}

/// The first `myquorum=<hint>` word in `sql`'s comments. Unknown hints are no hint.
pub fn read_hint(sql: &str) -> Option<ReadHint> {
    const MARK: &str = "myquorum=";
    // Statements without the mark (nearly all) cost one substring search.
    if !sql.contains(MARK) {
        return None;
    }
    crate::sql::lexer::comments(sql)
        .into_iter()
        .flat_map(|c| c.trim_start_matches('+').split_whitespace())
        .filter_map(|w| w.strip_prefix(MARK))
        .find_map(|h| match h.to_ascii_lowercase().as_str() {
            "primary" | "master" => Some(ReadHint::Primary),
            "strong" => Some(ReadHint::Strong),
            "session" => Some(ReadHint::Session),
            "eventual" => Some(ReadHint::Eventual),
            _ => None,
        })
}

/// `EXPLAIN LAST STATEMENT`: the proxy says where the session's previous statement went.
fn is_explain_last_statement(sql: &str) -> bool {
    let words: Vec<Tok> = Lexer::new(sql).map(|t| t.tok).take(4).collect();
    words.len() == 3
        && words[0].is_word("EXPLAIN")
        && words[1].is_word("LAST")
        && words[2].is_word("STATEMENT")
}

/// `SHOW [FULL] PROCESSLIST`, which the proxy answers with its own sessions (the ids KILL
/// and CONNECTION_ID() give through it; a backend's list has its own threads, shared by
/// every client): the proxy command it stands for.
fn server_processlist(sql: &str) -> Option<&'static str> {
    let words: Vec<Tok> = Lexer::new(sql).map(|t| t.tok).take(4).collect();
    match words.as_slice() {
        [show, list] if show.is_word("SHOW") && list.is_word("PROCESSLIST") => {
            Some("show processlist")
        }
        [show, full, list]
            if show.is_word("SHOW") && full.is_word("FULL") && list.is_word("PROCESSLIST") =>
        {
            Some("show full processlist")
        }
        _ => None,
    }
}

/// Maintenance MariaDB writes to its binlog, so that its replicas run it too: ANALYZE,
/// OPTIMIZE and REPAIR TABLE, and FLUSH PRIVILEGES, without NO_WRITE_TO_BINLOG or LOCAL.
/// (`ANALYZE SELECT …` is MariaDB's EXPLAIN ANALYZE, not maintenance.)
pub fn runs_on_every_replica(sql: &str) -> bool {
    let words: Vec<Tok> = Lexer::new(sql).map(|t| t.tok).take(3).collect();
    match words.as_slice() {
        [verb, object, ..]
            if ["ANALYZE", "OPTIMIZE", "REPAIR"]
                .iter()
                .any(|v| verb.is_word(v)) =>
        {
            object.is_word("TABLE") || object.is_word("TABLES")
        }
        [flush, privileges] => flush.is_word("FLUSH") && privileges.is_word("PRIVILEGES"),
        _ => false,
    }
}

/// Whether `sql` calls a function named in `names` (lowercase; a qualified `db.f(` counts
/// by its last part).
pub fn calls_function_in(sql: &str, names: &std::collections::HashSet<String>) -> bool {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    toks.windows(2).any(|w| match w {
        [Tok::Word(f) | Tok::Quoted(f), Tok::Punct('(')] => names.contains(&f.to_ascii_lowercase()),
        _ => false,
    })
}

/// Whether a stored program's `body` may start a transaction: a START TRANSACTION among its
/// statements, or in a string it may run as dynamic SQL (PREPARE … FROM, EXECUTE
/// IMMEDIATE). On the server that commits the caller's open transaction part-way through
/// the CALL. (BEGIN opens a compound statement in a program, never a transaction.)
pub fn starts_transaction(body: &str) -> bool {
    program_words(body)
        .windows(2)
        .any(|w| w[0] == "START" && w[1] == "TRANSACTION")
}

/// Whether a stored program's `body` may roll back the transaction it runs in: a ROLLBACK
/// other than `ROLLBACK [WORK] TO [SAVEPOINT] …`, among its statements or in a string it
/// may run as dynamic SQL.
pub fn may_roll_back(body: &str) -> bool {
    let words = program_words(body);
    words.iter().enumerate().any(|(i, w)| {
        let next = |k: usize| words.get(i + k).map(String::as_str);
        w == "ROLLBACK"
            && next(1) != Some("TO")
            && !(next(1) == Some("WORK") && next(2) == Some("TO"))
    })
}

/// Whether a stored program's `body` (or a compound statement) may change data, schema or
/// a sequence: a statement that writes, a CALL or dynamic SQL, among its statements or in a
/// string it may run. A body with none of these only reads.
pub fn may_write(body: &str) -> bool {
    const CHANGING: [&str; 15] = [
        "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME",
        "LOAD", "CALL", "EXECUTE", "SETVAL", "NEXTVAL", "NEXT",
    ];
    program_words(body)
        .iter()
        .any(|w| CHANGING.contains(&w.as_str()))
}

/// Whether a stored program's `body` (or a compound statement) may itself change a table's
/// definition: a DDL or dynamic SQL among its statements or in a string it may run (the
/// procedures it CALLs are the caller's to judge). Writes without the clock and
/// certification rest on table definitions read earlier (`backend::schema_facts`), so such
/// a program marks a schema change while it runs.
pub fn may_change_schema(body: &str) -> bool {
    const CHANGING: [&str; 7] = [
        "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "EXECUTE", "PREPARE",
    ];
    program_words(body)
        .iter()
        .any(|w| CHANGING.contains(&w.as_str()))
}

/// The words of a program body, uppercase, with those of its string literals in place (a
/// string may be run as dynamic SQL).
fn program_words(body: &str) -> Vec<String> {
    let mut words = Vec::new();
    for t in Lexer::new(body) {
        match t.tok {
            Tok::Word(w) => words.push(w.to_ascii_uppercase()),
            Tok::Str(quoted) => words.extend(
                quoted
                    .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .filter(|w| !w.is_empty())
                    .map(str::to_ascii_uppercase),
            ),
            // Anything else between two words keeps them apart (`start, transaction`).
            _ => words.push(String::new()),
        }
    }
    words
}

/// The (lowercase) name a `CREATE [OR REPLACE] [DEFINER = …] [AGGREGATE] FUNCTION [IF NOT
/// EXISTS] [db.]name` defines.
pub fn created_function(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    if !toks.first()?.is_word("CREATE") {
        return None;
    }
    let at = toks.iter().position(|t| t.is_word("FUNCTION"))?;
    let mut rest = toks[at + 1..].iter().peekable();
    if rest.peek().is_some_and(|t| t.is_word("IF")) {
        rest.nth(2); // IF NOT EXISTS
    }
    let mut name = None;
    for t in rest {
        match t {
            Tok::Word(w) | Tok::Quoted(w) => name = Some(w.to_ascii_lowercase()),
            Tok::Punct('.') => {}
            _ => break,
        }
    }
    name
}

/// The object a `CREATE`/`ALTER` statement defines (`TABLE`, `EVENT`, …, uppercase), past
/// `OR REPLACE`, `DEFINER = …`, `ALGORITHM = …` and the like.
pub fn defined_object(sql: &str) -> Option<String> {
    const OBJECTS: &[&str] = &[
        "TABLE",
        "EVENT",
        "VIEW",
        "PROCEDURE",
        "FUNCTION",
        "TRIGGER",
        "INDEX",
        "DATABASE",
        "SCHEMA",
        "USER",
        "ROLE",
        "SEQUENCE",
        "SERVER",
        "TABLESPACE",
        "PACKAGE",
    ];
    let mut toks = Lexer::new(sql).map(|t| t.tok);
    let first = toks.next()?;
    if !(first.is_word("CREATE") || first.is_word("ALTER")) {
        return None;
    }
    toks.take(16).find_map(|t| match t {
        Tok::Word(w) if OBJECTS.iter().any(|o| w.eq_ignore_ascii_case(o)) => {
            Some(w.to_ascii_uppercase())
        }
        _ => None,
    })
}

/// The database `DROP DATABASE|SCHEMA [IF EXISTS] name` drops. When it is the session's
/// own, the server leaves the connection without a default database.
pub fn dropped_database(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let (first, second) = (toks.first()?, toks.get(1)?);
    if !(first.is_word("DROP") && (second.is_word("DATABASE") || second.is_word("SCHEMA"))) {
        return None;
    }
    let at = if toks.get(2)?.is_word("IF") { 4 } else { 2 };
    match toks.get(at)? {
        Tok::Word(w) => Some(w.to_string()),
        Tok::Quoted(w) => Some(w.replace("``", "`")),
        _ => None,
    }
}

/// The proxy's own schema on every replica (the log copy, checksum runs).
pub const PROXY_SCHEMA: &str = "myquorum";

/// The server's own schema: accounts, system tables (of non-transactional engines).
pub const SYSTEM_SCHEMA: &str = "mysql";

/// Whether a write or DDL changes something in `schema` (the proxy's own, or the server's
/// system schema): a table qualified with it (or unqualified while it is the session's
/// schema), or the schema itself.
pub fn touches_schema(
    c: &Classified,
    sql: &str,
    session_schema: Option<&str>,
    schema: &str,
) -> bool {
    let in_schema = |t: &String| {
        let mut parts = t.rsplitn(2, '.');
        let _table = parts.next();
        match parts.next() {
            Some(db) => db.trim_matches('`').eq_ignore_ascii_case(schema),
            None => session_schema.is_some_and(|s| s.eq_ignore_ascii_case(schema)),
        }
    };
    if c.tables.iter().any(in_schema) {
        return true;
    }
    if c.kind != Kind::Ddl {
        return false;
    }
    let toks: Vec<Tok<'_>> = Lexer::new(sql).take(8).map(|t| t.tok).collect();
    let schema_ddl = toks
        .first()
        .is_some_and(|t| t.is_word("DROP") || t.is_word("CREATE") || t.is_word("ALTER"))
        && toks
            .get(1)
            .is_some_and(|t| t.is_word("DATABASE") || t.is_word("SCHEMA"));
    schema_ddl
        && toks
            .iter()
            .skip(2)
            .any(|t| matches!(t, Tok::Word(w) | Tok::Quoted(w) if w.eq_ignore_ascii_case(schema)))
}

/// The storage engine a `CREATE TABLE` / `ALTER TABLE` names in its table options
/// (`ENGINE [=] name`, outside the column list), when it is not InnoDB.
pub fn non_innodb_engine(sql: &str) -> Option<String> {
    if defined_object(sql).as_deref() != Some("TABLE") {
        return None;
    }
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            _ if depth == 0 && (t.is_word("ENGINE") || t.is_word("TYPE")) => {
                let (with_eq, at) = match toks.get(i + 1) {
                    Some(Tok::Punct('=')) => (true, i + 2),
                    _ => (false, i + 1),
                };
                let Some(name) = engine_name(toks.get(at)) else {
                    continue;
                };
                // `ALTER TABLE t ADD engine INT` names a column, not an engine: without `=`
                // only a known engine name counts.
                if !with_eq && !KNOWN_ENGINES.iter().any(|e| name.eq_ignore_ascii_case(e)) {
                    continue;
                }
                if !name.eq_ignore_ascii_case("InnoDB") {
                    return Some(name);
                }
            }
            _ => {}
        }
    }
    None
}

/// An engine name as written: a word, a `quoted` name or a string literal.
fn engine_name(t: Option<&Tok<'_>>) -> Option<String> {
    match t? {
        Tok::Word(w) | Tok::Quoted(w) => Some(w.to_string()),
        Tok::Str(s) => Some(s.trim_matches(|c| c == '\'' || c == '"').to_string()),
        _ => None,
    }
}

const KNOWN_ENGINES: &[&str] = &[
    "InnoDB",
    "MyISAM",
    "Aria",
    "MEMORY",
    "HEAP",
    "CSV",
    "ARCHIVE",
    "BLACKHOLE",
    "MERGE",
    "MRG_MyISAM",
    "FEDERATED",
    "FederatedX",
    "CONNECT",
    "SEQUENCE",
    "SPIDER",
    "OQGRAPH",
    "S3",
    "RocksDB",
    "TokuDB",
    "ColumnStore",
    "Mroonga",
];

/// The engine a `SET [SESSION|GLOBAL] [default_]storage_engine = name` chooses, when it is
/// not InnoDB (or DEFAULT).
pub fn sets_non_innodb_default_engine(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    if !toks.first()?.is_word("SET") {
        return None;
    }
    for (i, t) in toks.iter().enumerate() {
        let var = match t {
            Tok::Word(w) => *w,
            Tok::SysVar(v) => v.rsplit('.').next().unwrap_or(v),
            _ => continue,
        };
        if !(var.eq_ignore_ascii_case("default_storage_engine")
            || var.eq_ignore_ascii_case("storage_engine"))
        {
            continue;
        }
        let at = match (toks.get(i + 1), toks.get(i + 2)) {
            (Some(Tok::Punct('=')), _) => i + 2,
            (Some(Tok::Punct(':')), Some(Tok::Punct('='))) => i + 3,
            _ => continue,
        };
        let Some(name) = engine_name(toks.get(at)) else {
            continue;
        };
        if !(name.eq_ignore_ascii_case("InnoDB") || name.eq_ignore_ascii_case("DEFAULT")) {
            return Some(name);
        }
    }
    None
}

/// A CALL or an anonymous compound statement (`BEGIN NOT ATOMIC … END`, `IF … END IF`,
/// a loop: `lexer::is_compound_statement`), maybe behind
/// `SET STATEMENT … FOR`: a program whose statements may COMMIT, ROLLBACK or start a
/// transaction, ending whichever transaction its connection had open.
pub fn runs_a_program(sql: &str) -> bool {
    let sql = set_statement_target(sql).unwrap_or(sql);
    let toks: Vec<_> = Lexer::new(sql).take(3).collect();
    toks.first().is_some_and(|t| t.tok.is_word("CALL")) || is_compound_statement(&toks)
}

/// `SET STATEMENT var = value [, …] FOR <statement>` (MariaDB): the statement it runs.
pub(crate) fn set_statement_target(sql: &str) -> Option<&str> {
    let mut toks = Lexer::new(sql);
    if !(toks.next()?.tok.is_word("SET") && toks.next()?.tok.is_word("STATEMENT")) {
        return None;
    }
    let mut depth = 0i32;
    for t in toks {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            _ if depth == 0 && t.tok.is_word("FOR") => return Some(&sql[t.end..]),
            _ => {}
        }
    }
    None
}

pub fn classify(sql: &str) -> Classified {
    // The per-statement settings change nothing after the statement: it is what it runs
    // (a write among them is logged with its SET STATEMENT prefix, so followers run it
    // under the same settings).
    if let Some(target) = set_statement_target(sql) {
        let mut c = classify(target);
        scan_flags(sql, &mut c.flags);
        return c;
    }
    let mut flags = Flags::empty();
    scan_flags(sql, &mut flags);
    if shows_session_status(sql) {
        flags |= Flags::SESSION_STATUS;
    }
    if shows_session(sql, "VARIABLES") {
        flags |= Flags::SESSION_VARIABLES;
    }
    let mut words = Lexer::new(sql).take(2).map(|t| t.tok);
    let explain_last = is_explain_last_statement(sql);
    let processlist = server_processlist(sql);
    let first = words.next();
    // `PROXY SWITCHOVER …`: an operator command the proxy runs itself.
    let proxy_verb = first.is_some_and(|t| t.is_word("PROXY"));
    let proxy = explain_last
        || processlist.is_some()
        || proxy_verb
        || first.is_some_and(|t| t.is_word("SHOW"))
            && words.next().is_some_and(|t| t.is_word("PROXY"));
    let parsed = if proxy {
        Err(())
    } else {
        Parser::parse_sql(&MySqlDialect {}, sql).map_err(|_| ())
    };
    let mut targets = Vec::new();
    let (kind, tables, statements) = match parsed {
        Ok(stmts) if !stmts.is_empty() => {
            if let [Statement::Insert(ins)] = stmts.as_slice() {
                if let sqlparser::ast::TableObject::TableName(name) = &ins.table {
                    targets.push(name.to_string());
                }
            }
            let kind = stmts
                .iter()
                .map(kind_of_statement)
                .reduce(stronger)
                .unwrap_or(Kind::Other);
            let mut tables = Vec::new();
            for s in &stmts {
                let _ = sqlparser::ast::visit_relations(s, |rel| {
                    let name = rel.to_string();
                    if !tables.contains(&name) {
                        tables.push(name);
                    }
                    ControlFlow::<()>::Continue(())
                });
                // Tables the visitor does not report: whether one is the session's temporary
                // table decides if the DDL is replicated at all.
                for name in ddl_tables(s) {
                    if !tables.contains(&name) {
                        tables.push(name);
                    }
                }
            }
            // `CREATE TABLE t (LIKE src)`: the dialect reads no LIKE inside parentheses.
            if let Some(src) = parenthesized_like(sql) {
                if !tables.contains(&src) {
                    tables.push(src);
                }
            }
            // The parser has no variant for some statements; the keywords decide then.
            let kind = if kind == Kind::Other {
                let mut keyword_flags = Flags::empty();
                let kind = keyword_kind_of_each(sql, &split_statements(sql), &mut keyword_flags);
                flags |= keyword_flags & Flags::UNKNOWN_STATEMENT;
                kind
            } else {
                kind
            };
            (kind, tables, stmts.len())
        }
        _ => {
            if !proxy {
                flags |= Flags::FALLBACK;
            }
            let pieces = split_statements(sql);
            let n = pieces.len();
            let kind = keyword_kind_of_each(sql, &pieces, &mut flags);
            // Whether a DDL names one of the session's temporary tables decides if it is
            // replicated at all, so a DDL the parser does not take (MariaDB's `ADD COLUMN
            // IF NOT EXISTS`) still gets its tables, by keywords.
            let tables = if kind == Kind::Ddl && n == 1 {
                ddl_tables_by_keywords(sql)
            } else {
                Vec::new()
            };
            (kind, tables, n)
        }
    };
    if statements > 1 {
        flags |= Flags::MULTI_STATEMENT;
    }
    // Accounts are each replica's own (its mysql schema): they go through the log like a
    // DDL, which they are to the server too (an implicit commit, no rollback).
    let kind = if statements == 1 && crate::sql::accounts::is_account_statement(sql) {
        Kind::Ddl
    } else {
        kind
    };
    let session = if kind == Kind::Session && statements == 1 {
        parse_set(sql)
    } else if kind == Kind::Session {
        Some(SessionChange::Unreplayable)
    } else {
        None
    };
    if let Some(SessionChange::Global) = session {
        flags |= Flags::GLOBAL_CHANGE;
    }
    let kind = if processlist.is_some() {
        Kind::Proxy
    } else {
        kind
    };
    let proxy_command = if explain_last {
        Some("explain last statement".to_string())
    } else if let Some(command) = processlist {
        Some(command.to_string())
    } else if kind == Kind::Proxy {
        Some(
            Lexer::new(sql)
                .skip(if proxy_verb { 0 } else { 2 })
                .filter_map(|t| match t.tok {
                    Tok::Word(w) | Tok::Number(w) => Some(w.to_ascii_lowercase()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" "),
        )
    } else {
        None
    };
    Classified {
        kind,
        statements: statements.min(u16::MAX as usize) as u16,
        flags,
        tables,
        targets,
        session,
        proxy_command,
        hint: read_hint(sql),
    }
}

/// `src` of `CREATE TABLE t (LIKE [db.]src)`.
fn parenthesized_like(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    if !toks.first()?.is_word("CREATE") {
        return None;
    }
    let at = toks
        .windows(2)
        .position(|w| w[0] == Tok::Punct('(') && w[1].is_word("LIKE"))?;
    let mut name = Vec::new();
    for t in &toks[at + 2..] {
        match t {
            Tok::Word(w) | Tok::Quoted(w) => name.push(*w),
            Tok::Punct('.') => {}
            _ => break,
        }
    }
    (!name.is_empty()).then(|| name.join("."))
}

/// Table names in DROP TABLE, DROP INDEX … ON, RENAME TABLE and CREATE TABLE … LIKE.
fn ddl_tables(s: &Statement) -> Vec<String> {
    use sqlparser::ast::{CreateTableLikeKind, ObjectType};
    match s {
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => names.iter().map(|n| n.to_string()).collect(),
        // Of a session's temporary table, it stays on the primary: logged, followers
        // dropped the index of the base table of that name (found by the mutation test).
        Statement::Drop {
            object_type: ObjectType::Index,
            table: Some(table),
            ..
        } => vec![table.to_string()],
        Statement::RenameTable(renames) => renames
            .iter()
            .flat_map(|r| [r.old_name.to_string(), r.new_name.to_string()])
            .collect(),
        Statement::CreateTable(ct) => match &ct.like {
            Some(CreateTableLikeKind::Plain(l) | CreateTableLikeKind::Parenthesized(l)) => {
                vec![l.name.to_string()]
            }
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Which table names a DDL statement creates as temporary, drops or renames, as written
/// (qualified or not): what the session's list of temporary tables follows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableNameChanges {
    pub created_temporary: Vec<String>,
    pub dropped: Vec<String>,
    pub renamed: Vec<(String, String)>,
}

pub fn table_name_changes(sql: &str) -> TableNameChanges {
    use sqlparser::ast::{AlterTableOperation, ObjectType, RenameTableNameKind};
    if let Some(changes) = sequence_name_changes(sql) {
        return changes;
    }
    let mut changes = TableNameChanges::default();
    let Ok(stmts) = Parser::parse_sql(&MySqlDialect {}, sql) else {
        changes.created_temporary = created_temporary_by_keywords(sql).into_iter().collect();
        return changes;
    };
    for s in &stmts {
        match s {
            Statement::CreateTable(ct) if ct.temporary => {
                changes.created_temporary.push(ct.name.to_string());
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => changes.dropped.extend(names.iter().map(|n| n.to_string())),
            Statement::RenameTable(renames) => changes.renamed.extend(
                renames
                    .iter()
                    .map(|r| (r.old_name.to_string(), r.new_name.to_string())),
            ),
            Statement::AlterTable(at) => {
                for op in &at.operations {
                    if let AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::To(new) | RenameTableNameKind::As(new),
                    } = op
                    {
                        changes.renamed.push((at.name.to_string(), new.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    changes
}

/// `CREATE [OR REPLACE] TEMPORARY SEQUENCE [IF NOT EXISTS] name …` and `DROP [TEMPORARY]
/// SEQUENCE [IF EXISTS] name[, …]`: a sequence is a table to MariaDB, and a temporary one is
/// the session's own like a temporary table (`sql::sequences` must not log it for the
/// followers). None for any other statement.
fn sequence_name_changes(sql: &str) -> Option<TableNameChanges> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).take(64).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(w));
    let mut changes = TableNameChanges::default();
    let (mut at, list) = if word(0, "CREATE") {
        let temporary = if word(1, "OR") && word(2, "REPLACE") {
            3
        } else {
            1
        };
        if !(word(temporary, "TEMPORARY") && word(temporary + 1, "SEQUENCE")) {
            return None;
        }
        (temporary + 2, false)
    } else if word(0, "DROP")
        && (word(1, "SEQUENCE") || word(1, "TEMPORARY") && word(2, "SEQUENCE"))
    {
        (if word(1, "SEQUENCE") { 2 } else { 3 }, true)
    } else {
        return None;
    };
    if word(at, "IF") {
        at += if word(at + 1, "NOT") { 3 } else { 2 };
    }
    let mut rest = toks[at.min(toks.len())..].iter().peekable();
    while let Some(name) = read_table_name(&mut rest) {
        if list {
            changes.dropped.push(name);
        } else {
            changes.created_temporary.push(name);
            break;
        }
        if rest.next_if(|t| **t == Tok::Punct(',')).is_none() {
            break;
        }
    }
    Some(changes)
}

/// `CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] [db.]name …` read by keywords, for
/// definitions the parser does not take (MariaDB-only options).
fn created_temporary_by_keywords(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).take(5).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(w));
    let temporary = if word(1, "OR") && word(2, "REPLACE") {
        3
    } else {
        1
    };
    if !(word(0, "CREATE") && word(temporary, "TEMPORARY") && word(temporary + 1, "TABLE")) {
        return None;
    }
    // The created table is the first one such a definition names.
    ddl_tables_by_keywords(sql).into_iter().next()
}

/// A `[db.]name` at the front of `toks`, as written; the token after it stays in `toks`.
fn read_table_name<'a, 't: 'a>(
    toks: &mut std::iter::Peekable<impl Iterator<Item = &'a Tok<'t>>>,
) -> Option<String> {
    let mut name = String::new();
    while let Some(t) = toks.peek() {
        match t {
            Tok::Word(w) if name.is_empty() || name.ends_with('.') => name.push_str(w),
            // (The lexer keeps a quoted name's doubled backticks.)
            Tok::Quoted(w) if name.is_empty() || name.ends_with('.') => {
                name.push_str(&format!("`{w}`"));
            }
            Tok::Punct('.') if !name.is_empty() => name.push('.'),
            _ => break,
        }
        toks.next();
    }
    (!name.is_empty()).then_some(name)
}

/// The tables of a table DDL the parser does not take, read by keywords: `ALTER [ONLINE]
/// [IGNORE] TABLE [IF EXISTS] t`, `TRUNCATE [TABLE] t`, `DROP [TEMPORARY] TABLE [IF
/// EXISTS] t[, …]`, `RENAME TABLE a TO b[, …]`, `CREATE … INDEX … ON t`, `DROP INDEX … ON
/// t`, `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] t … [LIKE s]`. Empty for anything else.
fn ddl_tables_by_keywords(sql: &str) -> Vec<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).take(64).collect();
    let word = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.is_word(w));
    let mut tables = Vec::new();
    // Names read from position `at`, each after an optional IF [NOT] EXISTS; with `list`,
    // a comma-separated list of them.
    let mut names_from = |mut at: usize, list: bool| loop {
        if word(at, "IF") {
            at += if word(at + 1, "NOT") { 3 } else { 2 };
        }
        let mut rest = toks[at.min(toks.len())..].iter().peekable();
        let Some(name) = read_table_name(&mut rest) else {
            break;
        };
        tables.push(name);
        let used = toks.len() - at - rest.len();
        at += used;
        if list && toks.get(at) == Some(&Tok::Punct(',')) {
            at += 1;
        } else {
            break;
        }
    };
    let after = |from: usize, kw: &str| (from..toks.len()).find(|&i| word(i, kw)).map(|i| i + 1);
    if word(0, "ALTER") {
        if let Some(at) = after(1, "TABLE").filter(|&i| i <= 4) {
            names_from(at, false);
        }
    } else if word(0, "TRUNCATE") {
        names_from(if word(1, "TABLE") { 2 } else { 1 }, false);
    } else if word(0, "DROP") && (word(1, "TABLE") || word(1, "TEMPORARY") && word(2, "TABLE")) {
        names_from(if word(1, "TABLE") { 2 } else { 3 }, true);
    } else if (word(0, "CREATE") || word(0, "DROP")) && (1..6).any(|i| word(i, "INDEX")) {
        if let Some(at) = after(2, "ON") {
            names_from(at, false);
        }
    } else if word(0, "CREATE") {
        if let Some(at) = after(1, "TABLE").filter(|&i| i <= 5) {
            names_from(at, false);
            if let Some(like) = after(at, "LIKE") {
                names_from(like, false);
            }
        }
    } else if word(0, "RENAME") && word(1, "TABLE") {
        let mut at = 2;
        while let Some(to) = after(at, "TO") {
            names_from(at, false);
            names_from(to, false);
            match toks
                .get(to..)
                .and_then(|r| r.iter().position(|t| *t == Tok::Punct(',')))
            {
                Some(comma) => at = to + comma + 1,
                None => break,
            }
        }
    }
    tables
}

/// Picks the kind that matters more when a text holds several statements.
fn stronger(a: Kind, b: Kind) -> Kind {
    fn rank(k: Kind) -> u8 {
        match k {
            Kind::Empty => 0,
            Kind::Read => 1,
            Kind::Session => 2,
            Kind::Other => 3,
            Kind::Write => 4,
            Kind::Call => 5,
            Kind::Savepoint | Kind::Begin | Kind::Commit | Kind::Rollback => 6,
            Kind::Ddl | Kind::Admin | Kind::Lock | Kind::Xa => 7,
            Kind::Proxy => 8,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// `SHOW [SESSION | LOCAL] STATUS …` (not GLOBAL): the statement whose `Ssl_*` rows
/// describe the connection it runs on.
fn shows_session_status(sql: &str) -> bool {
    shows_session(sql, "STATUS")
}

/// `SHOW [SESSION | LOCAL] <what>`.
fn shows_session(sql: &str, what: &str) -> bool {
    let mut words = Lexer::new(sql).map(|t| t.tok);
    if !words.next().is_some_and(|t| t.is_word("SHOW")) {
        return false;
    }
    match words.next() {
        Some(t) if t.is_word("SESSION") || t.is_word("LOCAL") => {
            words.next().is_some_and(|t| t.is_word(what))
        }
        Some(t) => t.is_word(what),
        None => false,
    }
}

fn kind_of_statement(s: &Statement) -> Kind {
    use Statement as S;
    match s {
        S::Query(_)
        | S::ShowVariable { .. }
        | S::ShowStatus { .. }
        | S::ShowVariables { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowDatabases { .. }
        | S::ShowProcessList { .. }
        | S::ShowSchemas { .. }
        | S::ShowCharset(_)
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowCollation { .. }
        | S::ShowFunctions { .. }
        | S::ExplainTable { .. }
        | S::Explain { .. } => Kind::Read,
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::LoadData { .. } | S::Merge(_) => {
            Kind::Write
        }
        S::StartTransaction { .. } => Kind::Begin,
        S::Commit { .. } => Kind::Commit,
        S::Rollback {
            savepoint: None, ..
        } => Kind::Rollback,
        S::Rollback { .. } | S::Savepoint { .. } | S::ReleaseSavepoint { .. } => Kind::Savepoint,
        S::Set(_) | S::Use(_) | S::Prepare { .. } | S::Execute { .. } | S::Deallocate { .. } => {
            Kind::Session
        }
        S::CreateTable(_)
        | S::CreateIndex(_)
        | S::CreateView(_)
        | S::AlterTable(_)
        | S::Drop { .. }
        | S::Truncate(_)
        | S::CreateDatabase { .. }
        | S::CreateSchema { .. }
        | S::RenameTable(_)
        | S::CreateFunction(_)
        | S::CreateProcedure { .. }
        | S::CreateTrigger(_)
        | S::DropTrigger(_)
        | S::DropFunction(_)
        | S::DropProcedure { .. }
        | S::AlterView { .. }
        | S::AlterIndex { .. } => Kind::Ddl,
        S::Call(_) => Kind::Call,
        S::LockTables { .. } | S::UnlockTables => Kind::Lock,
        S::Grant(_)
        | S::Revoke(_)
        | S::Kill { .. }
        | S::Flush { .. }
        | S::Analyze(_)
        | S::OptimizeTable { .. }
        | S::CreateUser(_)
        | S::AlterUser(_)
        | S::CreateRole(_) => Kind::Admin,
        _ => Kind::Other,
    }
}

/// Where the first statement of `sql` that starts with an unknown word starts (the byte
/// offset of that word; `Flags::UNKNOWN_STATEMENT`), for the error the server would give.
pub fn unknown_statement_start(sql: &str) -> Option<usize> {
    // `SET STATEMENT … FOR <statement>`: the statement is the text's tail.
    let target = set_statement_target(sql).unwrap_or(sql);
    let offset = sql.len() - target.len();
    split_statements(target)
        .into_iter()
        .find_map(|(start, end)| {
            let mut flags = Flags::empty();
            keyword_kind(target.get(start..end)?, &mut flags);
            flags
                .contains(Flags::UNKNOWN_STATEMENT)
                .then_some(offset + start)
        })
}

/// Kind from the leading keywords of each statement (`pieces`, from `split_statements`),
/// the strongest: `DO 1; INSERT … VALUE(a)` (a text the parser rejects) is a write, not a
/// DO sent to the primary with the INSERT unlogged.
fn keyword_kind_of_each(sql: &str, pieces: &[(usize, usize)], flags: &mut Flags) -> Kind {
    match pieces {
        [_, _, ..] => pieces
            .iter()
            .filter_map(|&(start, end)| sql.get(start..end))
            .enumerate()
            // `SELECT 1; SHOW PROXY …` goes to the server (which refuses the second), as
            // before: only a text that starts with a proxy command is the proxy's.
            .map(|(i, piece)| match keyword_kind(piece, flags) {
                Kind::Proxy if i > 0 => Kind::Read,
                kind => kind,
            })
            .reduce(stronger)
            .unwrap_or(Kind::Empty),
        _ => keyword_kind(sql, flags),
    }
}

/// Kind from the leading keywords, for text the parser rejects.
fn keyword_kind(sql: &str, flags: &mut Flags) -> Kind {
    let words: Vec<String> = Lexer::new(sql)
        .take(3)
        .map(|t| match t.tok {
            Tok::Word(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        })
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "" if words.is_empty() => Kind::Empty,
        "SELECT" | "WITH" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "HELP" | "VALUES"
        | "TABLE" | "CHECKSUM" => {
            if w(0) == "SHOW" && w(1) == "PROXY"
                || (w(0), w(1), w(2), words.len()) == ("EXPLAIN", "LAST", "STATEMENT", 3)
            {
                Kind::Proxy
            } else {
                Kind::Read
            }
        }
        "PROXY" => Kind::Proxy,
        "DO" => {
            *flags |= Flags::SIDE_EFFECTS;
            Kind::Read
        }
        // LOAD INDEX INTO CACHE preloads a MyISAM key cache: the server's own, no write.
        "LOAD" if w(1) == "INDEX" => Kind::Other,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => Kind::Write,
        // An anonymous compound statement runs like a procedure call.
        "BEGIN" if w(1) == "NOT" && w(2) == "ATOMIC" => Kind::Call,
        "IF" | "CASE" | "WHILE" | "REPEAT" | "LOOP" | "FOR" => Kind::Call,
        // START SLAVE / REPLICA / ALL SLAVES starts a replication channel, not a transaction.
        "START" if matches!(w(1), "SLAVE" | "REPLICA" | "ALL") => Kind::Admin,
        "BEGIN" | "START" => Kind::Begin,
        "COMMIT" => Kind::Commit,
        "ROLLBACK" if w(1) == "TO" => Kind::Savepoint,
        "ROLLBACK" => Kind::Rollback,
        "SAVEPOINT" | "RELEASE" => Kind::Savepoint,
        "SET" | "USE" => Kind::Session,
        "PREPARE" | "EXECUTE" | "DEALLOCATE" => {
            *flags |= Flags::SQL_PREPARE;
            Kind::Session
        }
        // MariaDB's synonym of DEALLOCATE PREPARE: session state, not a schema change.
        "DROP" if w(1) == "PREPARE" => {
            *flags |= Flags::SQL_PREPARE;
            Kind::Session
        }
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => Kind::Ddl,
        "CALL" => Kind::Call,
        "XA" => Kind::Xa,
        "LOCK" | "UNLOCK" => Kind::Lock,
        // Statements of the connection (a diagnostics area, a raised condition, a handler,
        // a key cache, the server's own replication threads): neither read nor write.
        "SIGNAL" | "RESIGNAL" | "HANDLER" | "GET" | "CACHE" | "STOP" => Kind::Other,
        "GRANT" | "REVOKE" | "FLUSH" | "KILL" | "ANALYZE" | "OPTIMIZE" | "CHECK" | "REPAIR"
        | "PURGE" | "RESET" | "INSTALL" | "UNINSTALL" | "SHUTDOWN" | "BINLOG" | "CHANGE"
        // BACKUP STAGE / BACKUP LOCK commit the open transaction, as FLUSH does.
        | "BACKUP" => {
            *flags |= match (w(1), w(2)) {
                ("STAGE", "END") | ("UNLOCK", _) => Flags::BACKUP_UNLOCK,
                ("STAGE", _) | ("LOCK", _) => Flags::BACKUP_LOCK,
                _ => Flags::empty(),
            };
            Kind::Admin
        }
        "" => Kind::Other,
        _ => {
            *flags |= Flags::UNKNOWN_STATEMENT;
            Kind::Other
        }
    }
}

/// Flags from a lexical pass over the whole text.
fn scan_flags(sql: &str, flags: &mut Flags) {
    let mut prev: Option<Tok<'_>> = None;
    let mut prev2: Option<Tok<'_>> = None;
    let mut stmt_first: Option<Tok<'_>> = None;
    // Tokens of the current statement before this one.
    let mut pos = 0usize;
    // In a stored program's body (`CREATE PROCEDURE … BEGIN …; …; END`): its `;` end no
    // statement of the text, and its statements are not the text's own.
    let mut body = false;
    let mut prev_span: Option<crate::sql::lexer::Spanned<'_>> = None;
    for t in Lexer::new(sql) {
        let account_host = prev_span.is_some_and(|p| crate::sql::lexer::is_account_host(&p, &t));
        prev_span = Some(t);
        match t.tok {
            Tok::UserVar(_) if !account_host => *flags |= Flags::USER_VARIABLE,
            Tok::SysVar(v)
                if v.eq_ignore_ascii_case("socket") || v.eq_ignore_ascii_case("global.socket") =>
            {
                *flags |= Flags::READS_SOCKET
            }
            Tok::SysVar(v) if crate::sql::set::is_isolation_variable(v) => {
                *flags |= Flags::READS_ISOLATION
            }
            Tok::SysVar(v)
                if ["warning_count", "error_count"].iter().any(|n| {
                    v.eq_ignore_ascii_case(n)
                        || v.get(..8)
                            .is_some_and(|p| p.eq_ignore_ascii_case("session."))
                            && v.get(8..).is_some_and(|r| r.eq_ignore_ascii_case(n))
                }) =>
            {
                *flags |= Flags::WARNINGS_QUERY
            }
            Tok::Punct('(') => {
                if let Some(Tok::Word(f)) = prev {
                    let is = |n: &str| f.eq_ignore_ascii_case(n);
                    if is("GET_LOCK")
                        || is("RELEASE_LOCK")
                        || is("RELEASE_ALL_LOCKS")
                        || is("IS_USED_LOCK")
                        || is("IS_FREE_LOCK")
                    {
                        *flags |= Flags::ADVISORY_LOCK | Flags::SIDE_EFFECTS;
                    } else if is("LAST_INSERT_ID") {
                        *flags |= Flags::LAST_INSERT_ID;
                    } else if is("FOUND_ROWS") || is("ROW_COUNT") {
                        *flags |= Flags::FOUND_ROWS;
                    } else if is("NEXTVAL") || is("SETVAL") || is("LASTVAL") {
                        *flags |= Flags::SIDE_EFFECTS | Flags::SEQUENCE;
                    } else if is("CONNECTION_ID") {
                        *flags |= Flags::CONNECTION_ID;
                    }
                }
            }
            Tok::Word(w) => {
                let first = stmt_first.is_none();
                // Only the statement's own `CREATE [OR REPLACE] TEMPORARY` / `DROP TEMPORARY`:
                // TEMPORARY is not reserved, so a column may be named so (`ALTER TABLE t DROP
                // temporary`), and such a DDL must still be replicated.
                // A program's body may create its own (`BEGIN CREATE TEMPORARY TABLE …`):
                // that does not make the program's definition a temporary table's.
                if w.eq_ignore_ascii_case("TEMPORARY")
                    && !body
                    && (pos == 1 && prev.is_some_and(|p| p.is_word("CREATE") || p.is_word("DROP"))
                        || pos == 3
                            && prev.is_some_and(|p| p.is_word("REPLACE"))
                            && prev2.is_some_and(|p| p.is_word("OR"))
                            && stmt_first.is_some_and(|f| f.is_word("CREATE")))
                {
                    *flags |= Flags::TEMP_TABLE;
                } else if w.eq_ignore_ascii_case("FOR")
                    && prev.is_some_and(|p| p.is_word("VALUE"))
                    && prev2.is_some_and(|p| p.is_word("NEXT") || p.is_word("PREVIOUS"))
                {
                    *flags |= Flags::SIDE_EFFECTS | Flags::SEQUENCE;
                } else if (w.eq_ignore_ascii_case("OUTFILE") || w.eq_ignore_ascii_case("DUMPFILE"))
                    && prev.is_some_and(|p| p.is_word("INTO"))
                {
                    // A file written on the server's host: the primary's, not whichever
                    // replica a read would go to.
                    *flags |= Flags::SIDE_EFFECTS;
                } else if w.eq_ignore_ascii_case("SQL_CALC_FOUND_ROWS") {
                    *flags |= Flags::FOUND_ROWS;
                } else if (w.eq_ignore_ascii_case("UPDATE") || w.eq_ignore_ascii_case("SHARE"))
                    && prev.is_some_and(|p| p.is_word("FOR"))
                    || w.eq_ignore_ascii_case("MODE")
                        && prev.is_some_and(|p| p.is_word("SHARE"))
                        && prev2.is_some_and(|p| p.is_word("IN"))
                {
                    *flags |= Flags::LOCKING_READ;
                } else if !first
                    && (w.eq_ignore_ascii_case("WARNINGS") || w.eq_ignore_ascii_case("ERRORS"))
                    && stmt_first.is_some_and(|f| f.is_word("SHOW"))
                {
                    *flags |= Flags::WARNINGS_QUERY;
                } else if stmt_first.is_some_and(|f| f.is_word("FLUSH"))
                    && (w.eq_ignore_ascii_case("LOCK")
                        && prev.is_some_and(|p| p.is_word("READ"))
                        && prev2.is_some_and(|p| p.is_word("WITH"))
                        || w.eq_ignore_ascii_case("EXPORT")
                            && prev.is_some_and(|p| p.is_word("FOR")))
                {
                    // FLUSH TABLES … WITH READ LOCK / FOR EXPORT: table locks until UNLOCK
                    // TABLES (pooled, the connection kept every writer out).
                    *flags |= Flags::TABLE_LOCK;
                } else if !first
                    && (w.eq_ignore_ascii_case("TABLES") || w.eq_ignore_ascii_case("TABLE"))
                    && prev.is_some_and(|p| p.is_word("LOCK") || p.is_word("UNLOCK"))
                {
                    if prev.is_some_and(|p| p.is_word("UNLOCK")) {
                        *flags |= Flags::UNLOCK_TABLES;
                    } else {
                        *flags |= Flags::TABLE_LOCK;
                    }
                } else if !body
                    && (w.eq_ignore_ascii_case("OPEN") || w.eq_ignore_ascii_case("CLOSE"))
                    && stmt_first.is_some_and(|f| f.is_word("HANDLER"))
                    && (pos == 2 || pos == 4 && prev2 == Some(Tok::Punct('.')))
                {
                    // `HANDLER [db.]t OPEN` / `HANDLER t CLOSE`: a handler lives on the
                    // connection, holding the table's metadata lock until closed.
                    *flags |= if w.eq_ignore_ascii_case("OPEN") {
                        Flags::HANDLER_OPEN
                    } else {
                        Flags::HANDLER_CLOSE
                    };
                } else if first
                    && (w.eq_ignore_ascii_case("PREPARE")
                        || w.eq_ignore_ascii_case("EXECUTE")
                        || w.eq_ignore_ascii_case("DEALLOCATE"))
                    || w.eq_ignore_ascii_case("PREPARE")
                        && prev.is_some_and(|p| p.is_word("DROP"))
                        && stmt_first.is_some_and(|f| f.is_word("DROP"))
                {
                    *flags |= Flags::SQL_PREPARE;
                }
                if first {
                    stmt_first = Some(t.tok);
                }
                if !body
                    && pos < 16
                    && stmt_first.is_some_and(|f| f.is_word("CREATE"))
                    && ["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"]
                        .iter()
                        .any(|o| w.eq_ignore_ascii_case(o))
                {
                    body = true;
                }
            }
            Tok::Punct(';') if !body => {
                stmt_first = None;
                pos = 0;
                prev2 = None;
                prev = None;
                continue;
            }
            _ => {}
        }
        pos += 1;
        prev2 = prev;
        prev = Some(t.tok);
    }
}

/// BEGIN, COMMIT or ROLLBACK with nothing that changes what they do (no CONSISTENT
/// SNAPSHOT, CHAIN, RELEASE or savepoint): the proxy may answer these itself. A READ
/// ONLY / READ WRITE transaction start is plain too (its text is what reaches the server).
pub fn plain_transaction_control(sql: &str) -> Option<Kind> {
    let mut words = Vec::with_capacity(4);
    for t in crate::sql::lexer::Lexer::new(sql) {
        match t.tok {
            crate::sql::lexer::Tok::Word(w) if words.len() < 4 => {
                words.push(w.to_ascii_uppercase())
            }
            _ => return None,
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["BEGIN"] | ["BEGIN", "WORK"] | ["START", "TRANSACTION"] => Some(Kind::Begin),
        ["START", "TRANSACTION", "READ", "ONLY" | "WRITE"] => Some(Kind::Begin),
        ["COMMIT"] | ["COMMIT", "WORK"] => Some(Kind::Commit),
        ["ROLLBACK"] | ["ROLLBACK", "WORK"] => Some(Kind::Rollback),
        _ => None,
    }
}

/// What a COMMIT or ROLLBACK statement asks for after it, when its text is one:
/// `COMMIT|ROLLBACK [WORK] [AND [NO] CHAIN] [[NO] RELEASE]`. `None` for any other text (a
/// mangled one is the server's to refuse, and ends nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitEnd {
    /// A ROLLBACK (else a COMMIT).
    pub rollback: bool,
    /// `AND CHAIN` (true) or `AND NO CHAIN` (false); else `completion_type` decides.
    pub chain: Option<bool>,
    /// `RELEASE` (true) or `NO RELEASE` (false); else `completion_type` decides.
    pub release: Option<bool>,
}

/// A COMMIT's `CommitEnd` (see there).
pub fn commit_end(sql: &str) -> Option<CommitEnd> {
    transaction_end(sql).filter(|e| !e.rollback)
}

/// A COMMIT's or ROLLBACK's `CommitEnd` (see there).
pub fn transaction_end(sql: &str) -> Option<CommitEnd> {
    let mut words = Vec::with_capacity(6);
    for t in Lexer::new(sql) {
        match t.tok {
            // (Seven at most: `COMMIT WORK AND NO CHAIN NO RELEASE`.)
            Tok::Word(w) if words.len() < 7 => words.push(w.to_ascii_uppercase()),
            Tok::Punct(';') => {}
            _ => return None,
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let (rollback, rest) = match w.as_slice() {
        [verb @ ("COMMIT" | "ROLLBACK"), "WORK", rest @ ..]
        | [verb @ ("COMMIT" | "ROLLBACK"), rest @ ..] => (*verb == "ROLLBACK", rest),
        _ => return None,
    };
    let (chain, rest) = match rest {
        ["AND", "CHAIN", rest @ ..] => (Some(true), rest),
        ["AND", "NO", "CHAIN", rest @ ..] => (Some(false), rest),
        rest => (None, rest),
    };
    let release = match rest {
        [] => None,
        // (`AND CHAIN RELEASE` is the server's syntax error.)
        ["RELEASE"] if chain != Some(true) => Some(true),
        ["NO", "RELEASE"] => Some(false),
        _ => return None,
    };
    Some(CommitEnd {
        rollback,
        chain,
        release,
    })
}

impl CommitEnd {
    /// Under `completion_type = RELEASE` (2), one without NO RELEASE releases: also one
    /// that chains (the server then chains and closes the connection; measured on 10.11).
    pub fn under_completion_release(self, completion_releases: bool) -> CommitEnd {
        if completion_releases && self.release.is_none() {
            CommitEnd {
                release: Some(true),
                ..self
            }
        } else {
            self
        }
    }

    /// Whether the client's session ends after it.
    pub fn releases(&self) -> bool {
        self.release == Some(true)
    }

    /// The statement the primary runs for it: chained as asked, never releasing its
    /// connection (the proxy ends the client's session itself, and then nothing is to
    /// chain).
    pub fn on_primary(&self) -> &'static str {
        match (self.rollback, self.chain, self.release) {
            (false, Some(false), _) | (false, _, Some(true)) => "COMMIT AND NO CHAIN NO RELEASE",
            (false, Some(true), _) => "COMMIT AND CHAIN NO RELEASE",
            (false, None, Some(false)) => "COMMIT NO RELEASE",
            (false, None, None) => "COMMIT",
            (true, Some(false), _) | (true, _, Some(true)) => "ROLLBACK AND NO CHAIN NO RELEASE",
            (true, Some(true), _) => "ROLLBACK AND CHAIN NO RELEASE",
            (true, None, Some(false)) => "ROLLBACK NO RELEASE",
            (true, None, None) => "ROLLBACK",
        }
    }
}

/// Statements that change data through a replication stream of the server's own (a
/// replication channel pointed at another server): what they write never passes through the
/// proxy's log, so it would land on the primary alone. The answer names what it is. (BINLOG
/// statements, mysqlbinlog's row events, are replicated: `sql::binlog`.)
pub fn server_replication_stream(sql: &str) -> Option<&'static str> {
    let words: Vec<Tok<'_>> = Lexer::new(sql).take(2).map(|t| t.tok).collect();
    let w = |i: usize, kw: &str| words.get(i).is_some_and(|t| t.is_word(kw));
    if w(0, "CHANGE") && (w(1, "MASTER") || w(1, "REPLICATION")) {
        Some("CHANGE MASTER (a replication channel into the primary)")
    } else if w(0, "START") && (w(1, "SLAVE") || w(1, "REPLICA") || w(1, "ALL")) {
        Some("START SLAVE (a replication channel into the primary)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_program_that_starts_a_transaction() {
        for body in [
            "BEGIN START TRANSACTION; INSERT INTO t VALUES (1); END",
            "start\n  transaction",
            "BEGIN EXECUTE IMMEDIATE 'START TRANSACTION'; END",
            "BEGIN PREPARE s FROM \"start   transaction\"; EXECUTE s; END",
        ] {
            assert!(starts_transaction(body), "{body}");
        }
        for body in [
            "BEGIN INSERT INTO t VALUES (1); COMMIT; END",
            "BEGIN ROLLBACK; END",
            "BEGIN INSERT INTO t (start, transaction) VALUES (1, 2); END",
            "BEGIN INSERT INTO t VALUES ('start'); END",
        ] {
            assert!(!starts_transaction(body), "{body}");
        }
        for body in [
            "BEGIN ROLLBACK; END",
            "BEGIN DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END; END",
            "BEGIN EXECUTE IMMEDIATE 'rollback work'; END",
            "BEGIN ROLLBACK AND CHAIN; END",
        ] {
            assert!(may_roll_back(body), "{body}");
        }
        for body in [
            "BEGIN SAVEPOINT s; ROLLBACK TO SAVEPOINT s; END",
            "BEGIN SAVEPOINT s; ROLLBACK WORK TO s; END",
            "BEGIN START TRANSACTION; COMMIT; END",
        ] {
            assert!(!may_roll_back(body), "{body}");
        }
    }

    use super::*;

    #[test]
    fn session_status_is_recognised() {
        assert!(shows_session_status("SHOW STATUS"));
        assert!(shows_session_status("show session status like 'Ssl%'"));
        assert!(shows_session_status("/* x */ SHOW LOCAL STATUS WHERE 1"));
        assert!(!shows_session_status("SHOW GLOBAL STATUS"));
        assert!(!shows_session_status("SHOW VARIABLES"));
        assert!(!shows_session_status("SELECT 'SHOW STATUS'"));
        assert!(classify("SHOW STATUS LIKE 'Ssl_cipher'")
            .flags
            .contains(Flags::SESSION_STATUS));
        assert!(!classify("SHOW GLOBAL STATUS")
            .flags
            .contains(Flags::SESSION_STATUS));
        assert!(classify("SHOW LOCAL VARIABLES LIKE 'tx%'")
            .flags
            .contains(Flags::SESSION_VARIABLES));
        assert!(!classify("SHOW GLOBAL VARIABLES")
            .flags
            .contains(Flags::SESSION_VARIABLES));
        for sql in [
            "SELECT @@tx_isolation",
            "SELECT @@SESSION.transaction_isolation",
        ] {
            assert!(
                classify(sql).flags.contains(Flags::READS_ISOLATION),
                "{sql}"
            );
        }
        assert!(!classify("SELECT @@global.tx_isolation")
            .flags
            .contains(Flags::READS_ISOLATION));
    }

    #[test]
    fn read_hints_come_from_comments_only() {
        assert_eq!(
            read_hint("SELECT /* myquorum=primary */ 1"),
            Some(ReadHint::Primary)
        );
        assert_eq!(
            read_hint("/*+ myquorum=master */ SELECT 1"),
            Some(ReadHint::Primary)
        );
        assert_eq!(
            read_hint("SELECT 1 /* app=x myquorum=Eventual */"),
            Some(ReadHint::Eventual)
        );
        assert_eq!(
            read_hint("SELECT 1 # myquorum=strong"),
            Some(ReadHint::Strong)
        );
        assert_eq!(
            read_hint("SELECT 1 -- myquorum=session"),
            Some(ReadHint::Session)
        );
        assert_eq!(read_hint("SELECT 'myquorum=primary'"), None);
        assert_eq!(read_hint("SELECT '/* myquorum=primary */'"), None);
        assert_eq!(read_hint("SELECT /* myquorum=sometimes */ 1"), None);
        assert_eq!(read_hint("SELECT 1"), None);
        assert_eq!(
            classify("SELECT /* myquorum=primary */ 1").hint,
            Some(ReadHint::Primary)
        );
    }

    #[test]
    fn kinds() {
        let k = |s: &str| classify(s).kind;
        assert_eq!(k("SELECT c FROM sbtest1 WHERE id=5"), Kind::Read);
        assert_eq!(k("UPDATE sbtest1 SET k=k+1 WHERE id=5"), Kind::Write);
        assert_eq!(k("INSERT INTO t VALUES (1)"), Kind::Write);
        assert_eq!(k("BEGIN"), Kind::Begin);
        assert_eq!(k("START TRANSACTION"), Kind::Begin);
        assert_eq!(k("COMMIT"), Kind::Commit);
        assert_eq!(k("ROLLBACK"), Kind::Rollback);
        assert_eq!(k("ROLLBACK TO SAVEPOINT a"), Kind::Savepoint);
        // Only a program that may change something runs SERIALIZABLE.
        for (body, writes) in [
            (
                "BEGIN SELECT * FROM t; SELECT COUNT(*) INTO n FROM u; END",
                false,
            ),
            ("IF 1 THEN SELECT a FROM t; END IF", false),
            (
                "BEGIN SELECT a INTO x FROM t; UPDATE u SET b = x; END",
                true,
            ),
            ("BEGIN CALL other(); END", true),
            (
                "BEGIN SET @s = 'insert into t values (1)'; PREPARE p FROM @s; END",
                true,
            ),
            ("BEGIN DO NEXTVAL(s); END", true),
        ] {
            assert_eq!(super::may_write(body), writes, "{body}");
        }
        for (body, changes) in [
            (
                "BEGIN SELECT a INTO x FROM t; UPDATE u SET b = x; END",
                false,
            ),
            ("BEGIN INSERT INTO created VALUES (1); END", false),
            (
                "BEGIN CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1; END",
                true,
            ),
            ("BEGIN alter table t add column c int; END", true),
            ("BEGIN CALL other(); END", false),
            ("BEGIN EXECUTE IMMEDIATE 'select 1'; END", true),
            ("BEGIN SET @s = 'drop table t'; END", true),
        ] {
            assert_eq!(super::may_change_schema(body), changes, "{body}");
        }
        assert_eq!(k("CREATE TABLE t (id INT PRIMARY KEY)"), Kind::Ddl);
        assert_eq!(k("SET autocommit=0"), Kind::Session);
        assert_eq!(k("USE db"), Kind::Session);
        assert_eq!(k("CALL p(1)"), Kind::Call);
        assert_eq!(k("SHOW PROXY BACKENDS"), Kind::Proxy);
        assert_eq!(k("PROXY SWITCHOVER TO 2"), Kind::Proxy);
        assert_eq!(
            classify("proxy switchover to 2 shard 0")
                .proxy_command
                .as_deref(),
            Some("proxy switchover to 2 shard 0")
        );
        assert_eq!(
            classify("SHOW PROXY BACKENDS").proxy_command.as_deref(),
            Some("backends")
        );
        assert_eq!(k("explain last statement;"), Kind::Proxy);
        assert_eq!(
            classify("show full processlist").proxy_command.as_deref(),
            Some("show full processlist")
        );
        assert_eq!(
            classify("SHOW PROCESSLIST").proxy_command.as_deref(),
            Some("show processlist")
        );
        assert_eq!(
            k("SELECT * FROM information_schema.PROCESSLIST"),
            Kind::Read
        );
        for (sql, every) in [
            ("ANALYZE TABLE t PERSISTENT FOR ALL", true),
            ("optimize table a, b", true),
            ("REPAIR TABLE t QUICK", true),
            ("FLUSH PRIVILEGES", true),
            ("ANALYZE LOCAL TABLE t", false),
            ("OPTIMIZE NO_WRITE_TO_BINLOG TABLE t", false),
            ("ANALYZE SELECT * FROM t", false),
            ("FLUSH LOCAL PRIVILEGES", false),
            ("FLUSH TABLES", false),
        ] {
            assert_eq!(runs_on_every_replica(sql), every, "{sql}");
        }
        let f = |sql: &str| classify(sql).flags;
        assert!(f("HANDLER f.t OPEN AS h").contains(Flags::HANDLER_OPEN));
        assert!(f("handler t open").contains(Flags::HANDLER_OPEN));
        assert!(f("HANDLER h CLOSE").contains(Flags::HANDLER_CLOSE));
        assert!(!f("HANDLER h READ FIRST").intersects(Flags::HANDLER_OPEN | Flags::HANDLER_CLOSE));
        assert!(!f("HANDLER open READ FIRST").contains(Flags::HANDLER_OPEN));
        assert_eq!(
            classify("EXPLAIN LAST STATEMENT").proxy_command.as_deref(),
            Some("explain last statement")
        );
        assert_eq!(k("EXPLAIN SELECT 1"), Kind::Read);
        assert_eq!(k("/* only a comment */"), Kind::Empty);
        // These commit the open transaction on the server, as FLUSH does.
        assert_eq!(k("BACKUP STAGE START"), Kind::Admin);
        for (sql, flag) in [
            ("BACKUP STAGE START", Flags::BACKUP_LOCK),
            ("backup stage block_commit", Flags::BACKUP_LOCK),
            ("BACKUP LOCK t", Flags::BACKUP_LOCK),
            ("BACKUP STAGE END", Flags::BACKUP_UNLOCK),
            ("BACKUP UNLOCK", Flags::BACKUP_UNLOCK),
            ("FLUSH TABLES WITH READ LOCK", Flags::TABLE_LOCK),
            ("FLUSH TABLES t1, t2 WITH READ LOCK", Flags::TABLE_LOCK),
            ("FLUSH TABLES t FOR EXPORT", Flags::TABLE_LOCK),
        ] {
            assert!(classify(sql).flags.contains(flag), "{sql}");
        }
        assert!(!classify("FLUSH TABLES").flags.contains(Flags::TABLE_LOCK));
        assert_eq!(k("backup lock t"), Kind::Admin);
        // Not LOAD DATA: a key-cache preload that writes nothing.
        assert_eq!(k("LOAD INDEX INTO CACHE t"), Kind::Other);
        assert_eq!(k("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), Kind::Write);
        for sql in [
            "SELECT * FROM t INTO OUTFILE '/tmp/t.csv'",
            "SELECT a INTO DUMPFILE '/tmp/a' FROM t",
        ] {
            assert!(classify(sql).flags.contains(Flags::SIDE_EFFECTS), "{sql}");
        }
        // A word that starts no statement is refused, alone or behind another statement;
        // the connection's own statements, and a parenthesized query, are not.
        let unknown = |sql: &str| classify(sql).flags.contains(Flags::UNKNOWN_STATEMENT);
        for sql in [
            "DROPx TRIGGER IF EXISTS f.tr",
            "SELECT 1; DROPx TABLE t",
            "SELECT 1; PRAGMA x",
            "DECLARE x INT",
            "SET STATEMENT a = 1 FOR FROB t",
        ] {
            assert!(unknown(sql), "{sql}");
        }
        for sql in [
            "GET DIAGNOSTICS @n = NUMBER",
            "SIGNAL SQLSTATE '45000'",
            "HANDLER t READ FIRST",
            "CACHE INDEX t IN hot",
            "STOP SLAVE",
            "(SELECT 1) UNION (SELECT 2)",
            "SELECT 1; SHOW PROXY STATUS",
            "/* c */ SELECT 1",
            "",
        ] {
            assert!(!unknown(sql), "{sql}");
        }
        assert_eq!(unknown_statement_start("SELECT 1;\n FROB t"), Some(11));
        assert_eq!(unknown_statement_start("SELECT 1"), None);
        assert_eq!(
            unknown_statement_start("SET STATEMENT a = 1 FOR FROB t"),
            Some(24)
        );
        // The parser rejects `VALUE(a)`: each statement's first words decide.
        let c = classify("DO 1; INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUE(a)");
        assert_eq!((c.kind, c.statements), (Kind::Write, 2));
        assert_eq!(k("SELECT 1; SHOW PROXY STATUS"), Kind::Read);
        // DDL the parser does not take keeps its tables (a temporary table's stays local).
        for (sql, tables) in [
            (
                "ALTER TABLE f.tmp ADD COLUMN IF NOT EXISTS b INT",
                vec!["f.tmp"],
            ),
            (
                "ALTER ONLINE IGNORE TABLE IF EXISTS `d`.`t` ADD COLUMN IF NOT EXISTS b INT",
                vec!["`d`.`t`"],
            ),
            ("DROP TABLE IF EXISTS a, b.c WAIT 1", vec!["a", "b.c"]),
            (
                "CREATE INDEX IF NOT EXISTS i ON tmp (a) WAIT 1",
                vec!["tmp"],
            ),
            (
                "RENAME TABLE a TO b, c TO d WAIT 1",
                vec!["a", "b", "c", "d"],
            ),
        ] {
            assert_eq!(classify(sql).tables, tables, "{sql}");
        }
        for program in [
            "CALL p()",
            "call db.p(1)",
            "BEGIN NOT ATOMIC ROLLBACK; END",
            "IF 1 THEN ROLLBACK; END IF",
            "for i in 1..2 do commit; end for",
            "SET STATEMENT max_statement_time = 1 FOR CALL p()",
        ] {
            assert!(runs_a_program(program), "{program}");
        }
        for other in [
            "BEGIN",
            "INSERT INTO calls VALUES (1)",
            "SET STATEMENT a = 1 FOR SELECT 1",
        ] {
            assert!(!runs_a_program(other), "{other}");
        }
    }

    #[test]
    fn replication_streams_of_the_server_are_named() {
        for sql in [
            "CHANGE MASTER TO MASTER_HOST='h'",
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='h'",
            "START SLAVE",
            "start replica",
            "START ALL SLAVES",
        ] {
            assert!(server_replication_stream(sql).is_some(), "{sql}");
            assert_eq!(classify(sql).kind, Kind::Admin, "{sql}");
        }
        for sql in [
            "START TRANSACTION",
            "STOP SLAVE",
            "SHOW BINLOG EVENTS",
            "BINLOG 'LO8Caw8HAAAA'",
            "INSERT INTO binlog VALUES (1)",
        ] {
            assert!(server_replication_stream(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn parser_failures_fall_back_to_keywords() {
        let c = classify("SELECT * FROM t WHERE id=1 LOCK IN SHARE MODE");
        assert_eq!(c.kind, Kind::Read);
        assert!(c.flags.contains(Flags::LOCKING_READ));
        assert_eq!(
            classify("LOAD DATA LOCAL INFILE 'x' INTO TABLE t").kind,
            Kind::Write
        );
        assert_eq!(classify("XA START 'x'").kind, Kind::Xa);
        assert_eq!(
            classify("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT='x'").kind,
            Kind::Other
        );
        let c = classify("DO GET_LOCK('a', 1)");
        assert_eq!(c.kind, Kind::Read);
        assert!(c.flags.contains(Flags::ADVISORY_LOCK));
        let c = classify("PREPARE s FROM 'SELECT 1'");
        assert_eq!(c.kind, Kind::Session);
        assert!(c.flags.contains(Flags::SQL_PREPARE));
        for text in [
            "DROP PREPARE s",
            "DEALLOCATE PREPARE s",
            "EXECUTE s USING 1",
        ] {
            let c = classify(text);
            assert_eq!(c.kind, Kind::Session, "{text}");
            assert!(c.flags.contains(Flags::SQL_PREPARE), "{text}");
        }
        let tables = |sql: &str| classify(sql).tables;
        assert_eq!(
            tables("DROP TEMPORARY TABLE IF EXISTS a, d.b"),
            ["a", "d.b"]
        );
        assert_eq!(tables("RENAME TABLE a TO b"), ["a", "b"]);
        assert_eq!(tables("DROP INDEX i ON d.tmp"), ["d.tmp"]);
        assert_eq!(tables("CREATE TABLE r LIKE tmp"), ["r", "tmp"]);
        assert_eq!(tables("CREATE TABLE r (LIKE tmp)"), ["r", "tmp"]);
        assert_eq!(
            classify("INSERT INTO d.tmp (a) SELECT a FROM r").targets,
            ["d.tmp"]
        );
        assert!(classify("UPDATE t SET a = 1").targets.is_empty());
        assert!(!classify("DROP TABLE prepare")
            .flags
            .contains(Flags::SQL_PREPARE));
        for text in [
            "SELECT NEXTVAL(s)",
            "SELECT NEXT VALUE FOR s",
            "SELECT SETVAL(s, 10)",
            "SELECT LASTVAL(s)",
            "SELECT PREVIOUS VALUE FOR s",
        ] {
            assert!(classify(text).flags.contains(Flags::SEQUENCE), "{text}");
        }
        assert!(!classify("SELECT lastval FROM t")
            .flags
            .contains(Flags::SEQUENCE));
        let names: std::collections::HashSet<String> = ["next_id".to_string()].into();
        assert!(calls_function_in("SELECT app.NEXT_ID()", &names));
        assert!(calls_function_in("DO `next_id` (1)", &names));
        assert!(!calls_function_in("SELECT next_id FROM t", &names));
        assert!(!calls_function_in("SELECT 'next_id()'", &names));
        assert_eq!(
            created_function(
                "CREATE DEFINER=`root`@`%` FUNCTION IF NOT EXISTS app.Next_Id() RETURNS INT RETURN 1"
            )
            .as_deref(),
            Some("next_id")
        );
        assert_eq!(created_function("CREATE TABLE f (id INT)"), None);
        for compound in [
            "BEGIN NOT ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END",
            "IF 1 THEN INSERT INTO t VALUES (1); END IF",
            "IF (1) THEN INSERT INTO t VALUES (1); ELSE DO 1; END IF",
            "CASE WHEN 1 THEN INSERT INTO t VALUES (10); END CASE",
            "WHILE 1 DO INSERT INTO t VALUES (1); END WHILE",
            "REPEAT INSERT INTO t VALUES (1); UNTIL 1 END REPEAT",
            "LOOP INSERT INTO t VALUES (1); END LOOP",
            "FOR i IN 1..2 DO INSERT INTO t VALUES (i); END FOR",
        ] {
            let c = classify(compound);
            assert_eq!((c.kind, c.statements), (Kind::Call, 1), "{compound}");
        }
        let c = classify(
            "SET STATEMENT max_statement_time = 5, sql_mode = '' FOR INSERT INTO t VALUES (1)",
        );
        assert_eq!(c.kind, Kind::Write);
        assert_eq!(c.tables, ["t"]);
        assert_eq!(
            classify("SET STATEMENT max_statement_time = 5 FOR SELECT * FROM t").kind,
            Kind::Read
        );
        assert_eq!(
            classify("SET STATEMENT foreign_key_checks = 0 FOR ALTER TABLE t ADD COLUMN c INT")
                .kind,
            Kind::Ddl
        );
    }

    #[test]
    fn non_transactional_engines_are_found_in_table_options_only() {
        for (sql, engine) in [
            ("CREATE TABLE t (id INT) ENGINE=MyISAM", Some("MyISAM")),
            (
                "create table t (id int) engine = 'MEMORY' CHARSET=utf8",
                Some("MEMORY"),
            ),
            ("CREATE TABLE t (id INT) ENGINE Aria", Some("Aria")),
            ("ALTER TABLE t ENGINE=CSV", Some("CSV")),
            (
                "ALTER TABLE t ADD COLUMN c INT, ENGINE=`MyISAM`",
                Some("MyISAM"),
            ),
            (
                "CREATE OR REPLACE TABLE t ENGINE=MyISAM AS SELECT 1",
                Some("MyISAM"),
            ),
            ("CREATE TABLE t (id INT) ENGINE=InnoDB", None),
            ("CREATE TABLE t (id INT) ENGINE=innodb", None),
            ("CREATE TABLE t (engine VARCHAR(10))", None),
            ("ALTER TABLE t ADD engine INT", None),
            ("CREATE TABLE t (id INT)", None),
            ("CREATE VIEW v AS SELECT engine FROM x", None),
            ("INSERT INTO t (engine) VALUES ('MyISAM')", None),
        ] {
            assert_eq!(non_innodb_engine(sql).as_deref(), engine, "{sql}");
        }
        for (sql, engine) in [
            ("SET default_storage_engine=MyISAM", Some("MyISAM")),
            ("SET SESSION storage_engine = 'Aria'", Some("Aria")),
            (
                "SET @@session.default_storage_engine := MEMORY",
                Some("MEMORY"),
            ),
            ("SET GLOBAL default_storage_engine=MyISAM", Some("MyISAM")),
            ("SET default_storage_engine=InnoDB", None),
            ("SET default_storage_engine=DEFAULT", None),
            ("SET NAMES utf8mb4", None),
        ] {
            assert_eq!(
                sets_non_innodb_default_engine(sql).as_deref(),
                engine,
                "{sql}"
            );
        }
    }

    #[test]
    fn changes_to_the_proxy_schema_are_recognised() {
        let touches = |sql: &str, schema: Option<&str>| {
            touches_schema(&classify(sql), sql, schema, PROXY_SCHEMA)
        };
        assert!(touches("DELETE FROM myquorum.wal", None));
        assert!(touches("TRUNCATE TABLE `MyQuorum`.`wal`", None));
        assert!(touches("DELETE FROM wal WHERE ts < 5", Some("myquorum")));
        assert!(touches("DROP DATABASE myquorum", None));
        assert!(touches("DROP SCHEMA IF EXISTS `myquorum`", None));
        assert!(touches(
            "UPDATE shop.t JOIN myquorum.wal w ON w.ts = t.id SET t.a = 1",
            None
        ));
        assert!(!touches("DELETE FROM wal", Some("shop")));
        assert!(!touches("DROP DATABASE shop", None));
        assert!(!touches("INSERT INTO shop.myquorum (a) VALUES (1)", None));
        // A restored mysqldump --all-databases: `USE mysql` then unqualified tables.
        let system = |sql: &str, schema: Option<&str>| {
            touches_schema(&classify(sql), sql, schema, SYSTEM_SCHEMA)
        };
        assert!(system(
            "INSERT INTO `global_priv` VALUES ('%', 'x', '{}')",
            Some("mysql")
        ));
        assert!(system(
            "CREATE TABLE IF NOT EXISTS `general_log` (a INT)",
            Some("mysql")
        ));
        assert!(system("DELETE FROM mysql.time_zone", None));
        assert!(!system("INSERT INTO t VALUES (1)", Some("shop")));
    }

    #[test]
    fn defined_objects_are_found_past_definer_and_options() {
        for (sql, object) in [
            ("CREATE EVENT ev ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t", Some("EVENT")),
            (
                "CREATE DEFINER=`root`@`localhost` EVENT IF NOT EXISTS ev ON SCHEDULE AT NOW() DO SELECT 1",
                Some("EVENT"),
            ),
            ("ALTER DEFINER=root@localhost EVENT ev ENABLE", Some("EVENT")),
            ("CREATE OR REPLACE ALGORITHM=MERGE VIEW v AS SELECT 1", Some("VIEW")),
            ("CREATE TABLE event (id INT)", Some("TABLE")),
            ("ALTER TABLE events ADD COLUMN at DATETIME", Some("TABLE")),
            ("DROP EVENT ev", None),
        ] {
            assert_eq!(defined_object(sql).as_deref(), object, "{sql}");
        }
    }

    #[test]
    fn dropped_databases_are_named() {
        for (sql, db) in [
            ("DROP DATABASE shop", Some("shop")),
            ("drop schema if exists `my``db`;", Some("my`db")),
            ("DROP DATABASE IF EXISTS s2", Some("s2")),
            ("DROP TABLE shop.t", None),
            ("DROP DATABASE", None),
        ] {
            assert_eq!(dropped_database(sql).as_deref(), db, "{sql}");
        }
    }

    #[test]
    fn flags_and_tables() {
        let c = classify("SELECT a.x FROM db1.t1 a JOIN t2 ON a.id=t2.id FOR UPDATE");
        assert!(c.flags.contains(Flags::LOCKING_READ));
        assert_eq!(c.tables, vec!["db1.t1".to_string(), "t2".to_string()]);
        assert!(classify("SELECT @x := 1")
            .flags
            .contains(Flags::USER_VARIABLE));
        assert!(classify("SELECT '@x'").flags.is_empty());
        assert!(classify("SELECT @@SESSION.warning_count")
            .flags
            .contains(Flags::WARNINGS_QUERY));
        assert!(classify("SELECT LAST_INSERT_ID()")
            .flags
            .contains(Flags::LAST_INSERT_ID));
        for temp in [
            "CREATE TEMPORARY TABLE t (a INT)",
            "create or replace temporary table t (a INT)",
            "DROP TEMPORARY TABLE IF EXISTS t",
            // MariaDB's whitespace includes vertical tab and form feed.
            "CREATE\x0bTEMPORARY\x0cTABLE t (a INT)",
            "SELECT 1; CREATE TEMPORARY TABLE t (a INT)",
        ] {
            assert!(classify(temp).flags.contains(Flags::TEMP_TABLE), "{temp}");
        }
        // TEMPORARY is not reserved: a column may be named so, and such DDL is replicated.
        for regular in [
            "CREATE TABLE t (id INT, temporary INT)",
            "ALTER TABLE t DROP temporary",
            "ALTER TABLE t ADD COLUMN temporary INT",
            "UPDATE t SET temporary = 1",
            // A program whose body makes a temporary table is a regular definition (it
            // was kept on the primary only, and the followers never had the procedure).
            "CREATE PROCEDURE p() BEGIN CREATE TEMPORARY TABLE tt (a INT); DROP TEMPORARY TABLE tt; END",
            "CREATE PROCEDURE p() BEGIN SELECT 1; CREATE TEMPORARY TABLE tt (a INT); END",
            "CREATE DEFINER = CURRENT_USER PROCEDURE p() CREATE TEMPORARY TABLE tt (a INT)",
        ] {
            assert!(
                !classify(regular).flags.contains(Flags::TEMP_TABLE),
                "{regular}"
            );
        }
        assert!(classify("LOCK TABLES t WRITE")
            .flags
            .contains(Flags::TABLE_LOCK));
        assert!(classify("UNLOCK TABLES")
            .flags
            .contains(Flags::UNLOCK_TABLES));
        assert!(classify("SHOW WARNINGS")
            .flags
            .contains(Flags::WARNINGS_QUERY));
        let c = classify("SELECT 1; SELECT 2");
        assert_eq!(c.statements, 2);
        assert!(c.flags.contains(Flags::MULTI_STATEMENT));
    }

    #[test]
    fn plain_transaction_control_only_without_modifiers() {
        use super::plain_transaction_control as p;
        assert_eq!(p("BEGIN"), Some(Kind::Begin));
        assert_eq!(p(" begin work "), Some(Kind::Begin));
        assert_eq!(p("START TRANSACTION READ ONLY"), Some(Kind::Begin));
        assert_eq!(p("commit"), Some(Kind::Commit));
        assert_eq!(p("ROLLBACK WORK"), Some(Kind::Rollback));
        assert_eq!(p("START TRANSACTION WITH CONSISTENT SNAPSHOT"), None);
        assert_eq!(p("BEGIN NOT ATOMIC SELECT 1; END"), None);
        assert_eq!(p("COMMIT AND CHAIN"), None);
        let end = |sql| commit_end(sql).map(|e| (e.chain, e.release, e.on_primary()));
        assert_eq!(end("COMMIT"), Some((None, None, "COMMIT")));
        assert_eq!(end("commit work;"), Some((None, None, "COMMIT")));
        assert_eq!(
            end("COMMIT AND CHAIN"),
            Some((Some(true), None, "COMMIT AND CHAIN NO RELEASE"))
        );
        assert_eq!(
            end("commit work and no chain release"),
            Some((Some(false), Some(true), "COMMIT AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(
            end("COMMIT NO RELEASE"),
            Some((None, Some(false), "COMMIT NO RELEASE"))
        );
        // Mangled: the server's error, nothing committed (the fuzzer sent these).
        assert_eq!(end("COMMIT AND CHAIN\u{1}x"), None);
        assert_eq!(end("COMMIT AND CHAIN RELEASE"), None);
        assert_eq!(
            end("COMMIT RELEASE"),
            Some((None, Some(true), "COMMIT AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(end("COMMIT RELEASE WORK"), None);
        assert_eq!(
            end("COMMIT WORK AND NO CHAIN NO RELEASE"),
            Some((Some(false), Some(false), "COMMIT AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(end("COMMIT WORK AND NO CHAIN NO RELEASE NOW"), None);
        assert_eq!(end("ROLLBACK"), None);
        let ends = |sql, releases| {
            transaction_end(sql).map(|e| {
                let e = e.under_completion_release(releases);
                (e.releases(), e.on_primary())
            })
        };
        assert_eq!(ends("ROLLBACK", false), Some((false, "ROLLBACK")));
        assert_eq!(
            ends("rollback work release", false),
            Some((true, "ROLLBACK AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(
            ends("ROLLBACK", true),
            Some((true, "ROLLBACK AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(
            ends("COMMIT", true),
            Some((true, "COMMIT AND NO CHAIN NO RELEASE"))
        );
        // NO RELEASE overrides completion_type; a chain does not (the server chains, then
        // closes the connection).
        assert_eq!(
            ends("COMMIT AND CHAIN", true),
            Some((true, "COMMIT AND NO CHAIN NO RELEASE"))
        );
        assert_eq!(
            ends("ROLLBACK NO RELEASE", true),
            Some((false, "ROLLBACK NO RELEASE"))
        );
        assert_eq!(ends("ROLLBACK TO SAVEPOINT a", true), None);
        assert_eq!(p("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(p("COMMIT;"), None);
        assert_eq!(
            p("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT"),
            None
        );
    }

    #[test]
    fn temporary_table_names_come_from_the_created_table_only() {
        let c = table_name_changes("CREATE TEMPORARY TABLE tmp AS SELECT id FROM src");
        assert_eq!(c.created_temporary, ["tmp"]);
        assert!(table_name_changes("CREATE TABLE r AS SELECT id FROM src")
            .created_temporary
            .is_empty());
        // Options the parser does not take: the name is read by keywords.
        let c = table_name_changes(
            "CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS `d`.`t``x` (a INT) PAGE_CHECKSUM=1 TRANSACTIONAL=0",
        );
        assert_eq!(c.created_temporary, ["`d`.`t``x`"]);
        let c = table_name_changes("CREATE OR REPLACE TEMPORARY SEQUENCE IF NOT EXISTS d.ts");
        assert_eq!(c.created_temporary, ["d.ts"]);
        assert!(table_name_changes("CREATE SEQUENCE s")
            .created_temporary
            .is_empty());
        let c = table_name_changes("DROP TEMPORARY SEQUENCE IF EXISTS ts, `d`.s2");
        assert_eq!(c.dropped, ["ts", "`d`.s2"]);
        let c = table_name_changes("DROP TEMPORARY TABLE a, d.b");
        assert_eq!(c.dropped, ["a", "d.b"]);
        let c = table_name_changes("ALTER TABLE a ADD COLUMN x INT, RENAME TO b");
        assert_eq!(c.renamed, [("a".to_string(), "b".to_string())]);
    }
}
