//! What a write needs so that re-executing it on a follower gives the primary's result, as
//! MySQL's statement-based binlog decides it: which per-statement context to capture (random
//! seeds, LAST_INSERT_ID()), which calls to rewrite to literals (UUID(), UUID_SHORT(),
//! SYSDATE(); placeholders with injected values in prepared statements) and which of them
//! the primary's answer must show were called for one row, and which statements to refuse
//! because no context makes them deterministic.
//!
//! Pure: no I/O. Owns: `WriteCheck`. May import: sql::lexer, sql::classify (the statement a
//! `SET STATEMENT … FOR` runs).

use super::lexer::{
    holds_a_loop, inner_statement, is_account_host, is_compound_statement, Lexer, Spanned, Tok,
};
use super::replicated_settings::REPLICATED_SETTINGS;

mod output_order;
mod programs;
mod windows;

pub use programs::{program_orders, ProgramOrders};

/// Values the proxy substitutes for non-deterministic calls (chosen by the caller so this
/// module stays pure).
pub struct Literals<'a> {
    pub uuid: &'a dyn Fn() -> String,
    pub uuid_short: &'a dyn Fn() -> u64,
    /// Who the session is on the primary, once read there (`WriteCheck::needs_identity`).
    pub identity: Option<&'a Identity>,
    /// The session has no default database: DATABASE()/SCHEMA() are NULL on the primary,
    /// while a follower's replay connection keeps the database of an earlier record (no
    /// command deselects one), so they become NULL literals.
    pub no_database: bool,
    /// The primary keys of the tables `WriteCheck::needs_primary_keys` named, in its order,
    /// once read on the primary; an empty one: that table has none.
    pub primary_keys: Option<&'a [Vec<String>]>,
}

/// What the account functions give on the primary's connection: USER() (also
/// SESSION_USER(), SYSTEM_USER()), CURRENT_USER() and CURRENT_ROLE(). A follower's replay
/// connection is another session (the proxy's account), so a write calling them carries
/// the primary's values as literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub current_user: String,
    pub current_role: Option<String>,
}

impl Identity {
    /// The value of `function`, one of `ACCOUNT_FUNCTIONS` (None: SQL NULL).
    fn value(&self, function: &str) -> Option<&str> {
        match function {
            "CURRENT_USER" => Some(&self.current_user),
            "CURRENT_ROLE" => self.current_role.as_deref(),
            _ => Some(&self.user),
        }
    }
}

/// Account functions: their values depend on the session's account (`Identity`).
const ACCOUNT_FUNCTIONS: &[&str] = &[
    "USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "CURRENT_USER",
    "CURRENT_ROLE",
];

/// Words after which `name(` names a table, not a call (`INSERT INTO user() VALUES ()`).
const BEFORE_TABLE_NAMES: &[&str] = &[
    "INTO",
    "INSERT",
    "REPLACE",
    "IGNORE",
    "LOW_PRIORITY",
    "DELAYED",
    "HIGH_PRIORITY",
    "TABLE",
];

/// A string as a SQL literal that reads the same under any sql_mode and client character
/// set: quoted when it is printable ASCII without quotes or backslashes, else hex with its
/// character set.
fn string_literal(s: &str) -> String {
    if s.bytes()
        .any(|b| b == b'\'' || b == b'\\' || !(0x20..0x80).contains(&b))
    {
        let hex: String = s.bytes().map(|b| format!("{b:02X}")).collect();
        format!("_utf8mb4 X'{hex}'")
    } else {
        format!("'{s}'")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteCheck {
    /// RAND() without a seed: set rand_seed1/2 on the primary and record them.
    pub needs_rand_seed: bool,
    /// LAST_INSERT_ID() read: record the connection's value before the statement.
    pub needs_last_insert_id: bool,
    /// An account function (USER(), CURRENT_USER(), …) is called and `Literals` had no
    /// `identity`: read it on the primary and check again with it.
    pub needs_identity: bool,
    /// The text to execute and record, when calls were rewritten.
    pub rewritten: Option<String>,
    /// Why the statement cannot be replicated deterministically.
    pub refused: Option<String>,
    /// User variables it reads, as spelled (`x`, `'my var'`): their values are read on the
    /// primary before it runs and carried in the record (`sql::user_vars`).
    pub user_vars: Vec<String>,
    /// Whether its result may depend on the order rows are read in, which nothing in the
    /// statement fixes: the primary's answer decides (`order_dependence`).
    pub order_check: OrderCheck,
    /// A prepared statement's rewritten calls: each became a `?` placeholder at this
    /// position (counted over the rewritten text's placeholders) and takes this value, so
    /// the primary and every follower execute it with the same literal.
    pub injected: Vec<(u16, Injected)>,
    /// A rewritten UUID()/UUID_SHORT() the server would evaluate once per row: one literal
    /// stands for every row, which is MySQL's result only when one row is affected; the
    /// primary's answer decides (`per_row_dependence`).
    pub per_row_call: Option<PerRowCall>,
    /// The tables (schema as written, table) whose rows a LIMIT or an ORDER BY picks, the
    /// statement's own or a subquery's, checked without `Literals::primary_keys`: read their
    /// primary keys on the primary and check again. With a key, a LIMIT without ORDER BY
    /// gets `ORDER BY` it, and an ORDER BY that need not be unique gets it as the last
    /// tiebreaker: one of the orders the statement allowed, which every replica then follows.
    pub needs_primary_keys: Vec<(Option<String>, String)>,
}

/// A value put in place of a call in a prepared write (`WriteCheck::injected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// UUID(): a string.
    Text(String),
    /// UUID_SHORT(): an unsigned 64-bit integer.
    Unsigned(u64),
    /// A sequence's value (`sql::sequences`): a signed 64-bit integer.
    Signed(i64),
    /// CURRENT_ROLE() with no role set.
    Null,
}

/// Where a rewritten call sits, which says which count of the primary's answer is the
/// number of times MySQL would have called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerRowCall {
    /// UUID or UUID_SHORT.
    pub function: &'static str,
    pub counted: RowsCounted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowsCounted {
    /// `ON DUPLICATE KEY UPDATE …`: once per row that collided ("Duplicates").
    Duplicates,
    /// UPDATE: once per matched row ("Rows matched").
    Matched,
    /// `INSERT/REPLACE … SELECT`: once per row the SELECT gave ("Records").
    Records,
}

/// Writes MySQL's statement binlog calls unsafe because the order a SELECT (or an UPDATE)
/// reads rows in decides the result, and a follower may read them in another order (other
/// index statistics, another plan). Only some executions actually depend on it, which the
/// primary's OK packet tells, so they are checked after running rather than refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderCheck {
    #[default]
    None,
    /// `INSERT [IGNORE] … SELECT`, `REPLACE … SELECT`, `… ON DUPLICATE KEY UPDATE`
    /// without ORDER BY: rows colliding on a unique key are resolved, and AUTO_INCREMENT
    /// values assigned, in the SELECT's row order.
    InsertSelect,
    /// `UPDATE IGNORE` without ORDER BY: which rows are skipped over a duplicate key
    /// depends on the order they are updated in.
    UpdateIgnore,
}

/// The number after `label: ` in an OK packet's info ("Records: 3  Duplicates: 1  …").
fn info_count(info: &str, label: &str) -> Option<u64> {
    let rest = &info[info.find(label)? + label.len()..];
    let digits = rest.strip_prefix(": ")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Why the primary's result of an `OrderCheck` write depended on row order, from its OK
/// packet's info text and whether it generated AUTO_INCREMENT values; None when the order
/// did not matter (one row, no collisions, no generated ids) or the info is missing.
pub fn order_dependence(check: OrderCheck, info: &str, generated_ids: bool) -> Option<String> {
    let advice = "add ORDER BY on a unique key so every replica reads the rows in the same order";
    match check {
        OrderCheck::None => None,
        OrderCheck::InsertSelect => {
            let records = info_count(info, "Records")?;
            let duplicates = info_count(info, "Duplicates")?;
            if records <= 1 {
                None
            } else if duplicates > 0 {
                Some(format!(
                    "{duplicates} of the {records} rows the SELECT read collided on a unique key, \
                     and which one wins depends on the order the SELECT read them in; {advice}"
                ))
            } else if generated_ids {
                Some(format!(
                    "AUTO_INCREMENT values were given to {records} rows in the order the SELECT \
                     read them; {advice}"
                ))
            } else {
                None
            }
        }
        OrderCheck::UpdateIgnore => {
            let matched = info_count(info, "Rows matched")?;
            let changed = info_count(info, "Changed")?;
            (matched > 1 && changed < matched).then(|| {
                format!(
                    "UPDATE IGNORE matched {matched} rows and changed {changed}: which rows are \
                     skipped over a duplicate key depends on the order they are updated in; \
                     {advice}"
                )
            })
        }
    }
}

/// Why one literal in place of a per-row call (`PerRowCall`) did not give MySQL's result,
/// from the primary's OK packet info: the call stood for more than one row, which MySQL
/// would each have given their own value. None when it stood for at most one (or the info
/// is missing: a single-row answer carries none).
pub fn per_row_dependence(call: PerRowCall, info: &str) -> Option<String> {
    let (label, what) = match call.counted {
        RowsCounted::Duplicates => ("Duplicates", "rows collided on a unique key"),
        RowsCounted::Matched => ("Rows matched", "rows matched"),
        RowsCounted::Records => ("Records", "rows were selected"),
    };
    let rows = info_count(info, label)?;
    let f = call.function;
    (rows > 1).then(|| {
        format!(
            "{rows} {what}, and MySQL would call {f}() once for each of them, but the proxy \
             replicates one value per call; change one row per statement, or compute the \
             values in the application"
        )
    })
}

/// Functions whose result differs between servers or executions and that no recorded
/// context fixes. (SETVAL, whose arguments are constants, replays as it ran; where it may
/// stand is `sql::sequences`' to say, which takes NEXTVAL and LASTVAL out of a statement
/// before this sees it.)
const REFUSED_FUNCTIONS: &[&str] = &[
    "LOAD_FILE",
    "CONNECTION_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "GET_LOCK",
    "RELEASE_LOCK",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "SLEEP",
    "BENCHMARK",
    "VERSION",
    "NEXTVAL",
    "LASTVAL",
    "SYS_GUID",
    "RANDOM_BYTES",
    "UUID_TO_BIN",
];

/// Calls that give each server (or each execution) its own value. In a statement the
/// proxy rewrites or records them; in stored code or a column DEFAULT, which every replica
/// evaluates by itself, nothing reaches them.
const PER_SERVER_FUNCTIONS: &[&str] = &[
    "UUID",
    "UUID_SHORT",
    "UUID_V4",
    "UUID_V7",
    "SYS_GUID",
    "SYSDATE",
    "CONNECTION_ID",
    "RANDOM_BYTES",
];

/// Whether `sql` calls DATABASE() or SCHEMA() (the session's default database).
pub fn calls_database(sql: &str) -> bool {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    toks.windows(3).any(|w| {
        (w[0].is_word("DATABASE") || w[0].is_word("SCHEMA"))
            && w[1] == Tok::Punct('(')
            && w[2] == Tok::Punct(')')
    })
}

/// For a `CREATE`/`ALTER` of a table, trigger, procedure or function (`object`, as
/// `classify::defined_object` names it): why it would let replicas diverge — a call in a
/// DEFAULT expression, a `CREATE TABLE … SELECT`, or a stored program's body that gives
/// each replica its own value (`UUID()`, `RAND()` without a seed, `SYSDATE()`, …).
pub fn nondeterministic_definition(sql: &str, object: &str) -> Option<String> {
    let what = match object {
        "TABLE" => "a table definition (a column DEFAULT, or CREATE TABLE … SELECT)",
        "TRIGGER" => "a trigger",
        "PROCEDURE" => "a procedure",
        "FUNCTION" => "a stored function",
        _ => return None,
    };
    let spans: Vec<Spanned<'_>> = Lexer::new(sql).collect();
    let toks: Vec<Tok<'_>> = spans.iter().map(|t| t.tok).collect();
    if let Some(var) = session_variable_read(&spans, object == "TABLE") {
        return Some(if object == "TABLE" {
            format!(
                "CREATE TABLE … SELECT reads user variable @{var}, which the DDL's record does \
                 not carry; create the table, then fill it with INSERT … SELECT (a write \
                 carries the user variables it reads)"
            )
        } else {
            format!(
                "{what} reads user variable @{var} without setting it: it would read the \
                 client session's value on the primary and another on each follower (the \
                 proxy carries only the variables a statement names itself); pass the value \
                 as a parameter or set it in the body"
            )
        });
    }
    if skips_locked_rows(toks.iter().copied()) {
        return Some(format!(
            "{what} reads with SKIP LOCKED: on the primary it skips the rows other \
             transactions hold, a follower replaying alone skips none, so they would act on \
             other rows; pick the rows in the application (SELECT … FOR UPDATE SKIP LOCKED \
             through the proxy is a read) and pass their keys in"
        ));
    }
    let unordered_limit = if object == "TABLE" {
        spans
            .split(|t| t.tok == Tok::Punct(';'))
            .map(limit_order)
            .any(|l| l.top_unordered || l.nested_unordered)
    } else {
        unordered_limit_left(sql, &spans)
    };
    // A procedure that only reads (a report) returns its rows and changes nothing; a
    // function's value, a trigger's and a table's rows are written wherever they are used.
    let writes = object != "PROCEDURE"
        || toks.iter().any(|t| {
            [
                "INSERT", "UPDATE", "DELETE", "REPLACE", "CALL", "TRUNCATE", "LOAD",
            ]
            .iter()
            .any(|w| t.is_word(w))
        });
    if unordered_limit && writes {
        return Some(format!(
            "{what} has a LIMIT without ORDER BY at its level: each replica runs it on its \
             own and may pick other rows (`SELECT … INTO v … LIMIT 1` then a write using v \
             included); add ORDER BY on a unique key"
        ));
    }
    if object == "TABLE" {
        // CREATE TABLE … SELECT evaluates on each replica: server variables there are its own.
        let server_local = toks.iter().find_map(|t| match t {
            Tok::SysVar(v) => refused_sysvar(v),
            _ => None,
        });
        if let Some(why) = server_local {
            return Some(format!("CREATE TABLE … SELECT: {why}"));
        }
        if numbers_rows_in_read_order(&toks) {
            return Some(
                "CREATE TABLE … SELECT gives the rows it copies AUTO_INCREMENT ids in the \
                 order it reads them, which each replica's plan decides (a table without a \
                 key: the order its rows were inserted on that server); add ORDER BY on a \
                 unique key, or on every column, to the SELECT"
                    .into(),
            );
        }
    }
    let call = toks.windows(3).find_map(|w| match w {
        [Tok::Word(f), Tok::Punct('('), next] => {
            let upper = f.to_ascii_uppercase();
            let unseeded_rand = upper == "RAND" && matches!(next, Tok::Punct(')'));
            (unseeded_rand || PER_SERVER_FUNCTIONS.contains(&upper.as_str())).then_some(upper)
        }
        _ => None,
    })?;
    Some(format!(
        "{call}() in {what} is evaluated by each replica on its own and gives each its own \
         value; compute the value in the application (or in the statement itself: a text \
         INSERT's UUID() is rewritten to a literal) and pass it in"
    ))
}

/// Whether a program's or compound statement's body (`spans`, lexed from `sql`) has a LIMIT
/// without ORDER BY at its level besides those in statements a primary key will order
/// (`programs::orderable_writes`).
fn unordered_limit_left(sql: &str, spans: &[Spanned<'_>]) -> bool {
    let orderable = programs::orderable_writes(sql);
    let rest: Vec<Spanned<'_>> = spans
        .iter()
        .filter(|t| !orderable.iter().any(|r| r.contains(&t.start)))
        .copied()
        .collect();
    rest.split(|t| t.tok == Tok::Punct(';'))
        .map(limit_order)
        .any(|l| l.top_unordered || l.nested_unordered)
}

/// A user variable read that depends on the session: in a table definition any read, in a
/// stored program's body a variable the body never assigns itself (`SET @v =`, `@v :=`,
/// `INTO @v, @w`), which a trigger or procedure would take from whichever session runs it.
/// An account's host (`DEFINER = root@localhost`, `` `root`@`%` ``) is no variable: its `@`
/// follows the user name directly.
fn session_variable_read<'a>(spans: &[Spanned<'a>], any: bool) -> Option<&'a str> {
    let toks: Vec<Tok<'a>> = spans
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !i.checked_sub(1)
                .is_some_and(|p| is_account_host(&spans[p], s))
        })
        .map(|(_, s)| s.tok)
        .collect();
    let mut assigned: Vec<&str> = Vec::new();
    let mut read: Vec<&str> = Vec::new();
    let mut into_list = false;
    for (i, t) in toks.iter().enumerate() {
        let Tok::UserVar(v) = *t else {
            if !matches!(t, Tok::Punct(',')) {
                into_list = t.is_word("INTO");
            }
            continue;
        };
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        let next = |k: usize| toks.get(i + k);
        let sets = next(1) == Some(&Tok::Punct(':')) && next(2) == Some(&Tok::Punct('='))
            || next(1) == Some(&Tok::Punct('='))
                && prev.is_some_and(|p| p.is_word("SET") || *p == Tok::Punct(','))
            || into_list;
        if sets {
            assigned.push(v);
        } else {
            read.push(v);
        }
    }
    read.into_iter()
        .find(|v| any || !assigned.iter().any(|a| a.eq_ignore_ascii_case(v)))
}

/// A table a stored program's body inserts into, and the columns it names (None: no column
/// list, so every column, the AUTO_INCREMENT one included, takes a positional value that may
/// be NULL, or the table's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertTarget {
    pub schema: Option<String>,
    pub table: String,
    pub columns: Option<Vec<String>>,
    /// Named columns some row gives `NULL`, `0` or `DEFAULT`, which for an AUTO_INCREMENT
    /// column asks the server for the next id as leaving it out does (`0` unless sql_mode
    /// has NO_AUTO_VALUE_ON_ZERO, which is the rarer setting, so it counts).
    pub generating_values: Vec<String>,
}

impl InsertTarget {
    /// Whether an insert here leaves `column` (the table's AUTO_INCREMENT column) for the
    /// server to generate: it does not name it, or gives it a value that generates one. A
    /// variable or expression there is taken as a value (it may be NULL at run time: not
    /// checked).
    pub fn generates(&self, column: &str) -> bool {
        let named = |cols: &[String]| cols.iter().any(|c| c.eq_ignore_ascii_case(column));
        !self.columns.as_deref().is_some_and(named) || named(&self.generating_values)
    }
}

/// Whether one value of an insert (its tokens) makes an AUTO_INCREMENT column generate.
fn generates_an_id(value: &[Tok<'_>]) -> bool {
    match value {
        [Tok::Word(w)] => w.eq_ignore_ascii_case("NULL") || w.eq_ignore_ascii_case("DEFAULT"),
        [Tok::Number(n)] => n.parse::<f64>().is_ok_and(|v| v == 0.0),
        [Tok::Punct('('), inner @ .., Tok::Punct(')')] => generates_an_id(inner),
        _ => false,
    }
}

/// The named columns (`columns`, in order) the select list starting at `toks[0]` (after
/// `SELECT`) gives a value that generates an id: `SELECT NULL, …` or `SELECT 0 AS id, …`.
fn generating_in_select(toks: &[Tok<'_>], columns: &[String]) -> Vec<String> {
    const ENDS: &[&str] = &[
        "FROM",
        "WHERE",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "ORDER",
        "LIMIT",
        "GROUP",
        "HAVING",
        "ON",
        "RETURNING",
        "INTO",
        "FOR",
        "LOCK",
        "WINDOW",
    ];
    let mut found: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut position = 0usize;
    let mut take = |value: &[Tok<'_>], position: usize| {
        // `value AS alias`, `value alias`: the alias is no part of the value.
        let value = match value {
            [v @ .., a, Tok::Word(_) | Tok::Quoted(_)] if a.is_word("AS") => v,
            [v @ .., Tok::Word(_) | Tok::Quoted(_)] if v.len() == 1 => v,
            v => v,
        };
        if let Some(c) = columns.get(position) {
            if generates_an_id(value) && !found.contains(c) {
                found.push(c.clone());
            }
        }
    };
    let modifiers = toks
        .iter()
        .take_while(|t| {
            ["ALL", "DISTINCT", "DISTINCTROW"]
                .iter()
                .any(|m| t.is_word(m))
        })
        .count();
    let mut end = toks.len();
    for (i, t) in toks.iter().enumerate().skip(modifiers) {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') if depth == 0 => {
                end = i;
                break;
            }
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                take(&toks[start.max(modifiers)..i], position);
                position += 1;
                start = i + 1;
            }
            Tok::Punct(';') => {
                end = i;
                break;
            }
            _ if depth == 0 && ENDS.iter().any(|w| t.is_word(w)) => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    take(&toks[start.max(modifiers)..end], position);
    found
}

/// The named columns (`columns`, in order) some row of `VALUES (…), (…)` starting at
/// `toks[0]` gives a value that generates an id.
fn generating_in_rows(toks: &[Tok<'_>], columns: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut row_start = None;
    let mut position = 0usize;
    let mut value_start = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(') => {
                depth += 1;
                if depth == 1 {
                    row_start = Some(i);
                    position = 0;
                    value_start = i + 1;
                }
            }
            Tok::Punct(',' | ')') if depth == 1 && row_start.is_some() => {
                if let Some(c) = columns.get(position) {
                    if generates_an_id(&toks[value_start..i]) && !found.contains(c) {
                        found.push(c.clone());
                    }
                }
                position += 1;
                value_start = i + 1;
                if *t == Tok::Punct(')') {
                    depth = 0;
                    row_start = None;
                }
            }
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            // Rows are separated by commas at depth 0; anything else ends the list.
            Tok::Punct(',') if depth == 0 => {}
            _ if depth == 0 => break,
            _ => {}
        }
    }
    found
}

/// The tables the body of a `CREATE TRIGGER / PROCEDURE / FUNCTION` inserts into (INSERT,
/// REPLACE; not the INSERT() and REPLACE() string functions, nor a trigger's `BEFORE INSERT`
/// event). Auto-increment values such inserts generate are not carried by the record (only
/// the top statement's first id is, from its OK packet), so a table with an AUTO_INCREMENT
/// column there gives each replica its own ids: the primary hands them out in the order
/// concurrent transactions run them and keeps rolled-back transactions' gaps, replicas in log
/// order. MySQL's statement-based binlog marks such statements unsafe for the same reason.
/// A string literal that is a whole INSERT or REPLACE statement counts too: the body may run
/// it as dynamic SQL (`PREPARE s FROM '…'`, `EXECUTE IMMEDIATE '…'`, a variable set to it).
pub fn inserted_tables(sql: &str) -> Vec<InsertTarget> {
    let mut out = inserted_tables_in(sql);
    for t in Lexer::new(sql) {
        let Tok::Str(quoted) = t.tok else { continue };
        let inner = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        let statement = Lexer::new(inner)
            .next()
            .is_some_and(|t| t.tok.is_word("INSERT") || t.tok.is_word("REPLACE"));
        if statement {
            out.extend(inserted_tables_in(inner));
        }
    }
    out
}

fn inserted_tables_in(sql: &str) -> Vec<InsertTarget> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let name = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if !(t.is_word("INSERT") || t.is_word("REPLACE")) {
            continue;
        }
        let event = i > 0 && (toks[i - 1].is_word("BEFORE") || toks[i - 1].is_word("AFTER"));
        if event || toks.get(i + 1) == Some(&Tok::Punct('(')) {
            continue;
        }
        let mut j = i + 1;
        while toks.get(j).is_some_and(|t| {
            ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"]
                .iter()
                .any(|m| t.is_word(m))
        }) {
            j += 1;
        }
        let Some(first) = name(toks.get(j)) else {
            continue;
        };
        j += 1;
        let (schema, table) = if toks.get(j) == Some(&Tok::Punct('.')) {
            let Some(second) = name(toks.get(j + 1)) else {
                continue;
            };
            j += 2;
            (Some(first), second)
        } else {
            (None, first)
        };
        if toks.get(j).is_some_and(|t| t.is_word("PARTITION")) {
            while toks.get(j).is_some_and(|t| *t != Tok::Punct(')')) {
                j += 1;
            }
            j += 1;
        }
        let mut generating_values = Vec::new();
        let columns = match toks.get(j) {
            Some(Tok::Punct('(')) if !toks.get(j + 1).is_some_and(|t| t.is_word("SELECT")) => {
                let mut cols = Vec::new();
                j += 1;
                while let Some(t) = toks.get(j) {
                    match t {
                        Tok::Punct(')') => break,
                        Tok::Word(w) | Tok::Quoted(w) => cols.push(w.to_string()),
                        _ => {}
                    }
                    j += 1;
                }
                let rest = toks.get(j + 1..).unwrap_or_default();
                match rest.first() {
                    Some(t) if t.is_word("VALUES") || t.is_word("VALUE") => {
                        generating_values = generating_in_rows(&rest[1..], &cols)
                    }
                    Some(t) if t.is_word("SELECT") => {
                        generating_values = generating_in_select(&rest[1..], &cols)
                    }
                    Some(Tok::Punct('(')) if rest.get(1).is_some_and(|t| t.is_word("SELECT")) => {
                        generating_values = generating_in_select(&rest[2..], &cols)
                    }
                    _ => {}
                }
                Some(cols)
            }
            // `INSERT … SET col = value, …`: the columns are the names before each `=`.
            Some(t) if t.is_word("SET") => {
                let mut cols = Vec::new();
                let mut depth = 0usize;
                let mut value: Option<(String, usize)> = None;
                for (k, t) in toks.iter().enumerate().skip(j + 1) {
                    let ends = match t {
                        Tok::Punct('(') => {
                            depth += 1;
                            false
                        }
                        Tok::Punct(')') => {
                            depth = depth.saturating_sub(1);
                            false
                        }
                        Tok::Punct(',') => depth == 0,
                        Tok::Punct(';') => true,
                        // ON DUPLICATE KEY UPDATE, RETURNING: the assignments are over.
                        _ => depth == 0 && (t.is_word("ON") || t.is_word("RETURNING")),
                    };
                    if ends {
                        if let Some((c, from)) = value.take() {
                            if generates_an_id(&toks[from..k]) {
                                generating_values.push(c);
                            }
                        }
                        if *t != Tok::Punct(',') {
                            break;
                        }
                    } else if let (None, [Tok::Word(c) | Tok::Quoted(c), Tok::Punct('=')]) =
                        (&value, toks.get(k..k + 2).unwrap_or_default())
                    {
                        if depth == 0 {
                            cols.push(c.to_string());
                            value = Some((c.to_string(), k + 2));
                        }
                    }
                }
                if let Some((c, from)) = value {
                    if generates_an_id(&toks[from.min(toks.len())..]) {
                        generating_values.push(c);
                    }
                }
                Some(cols)
            }
            _ => None,
        };
        out.push(InsertTarget {
            schema,
            table,
            columns,
            generating_values,
        });
    }
    out
}

/// Whether the one AUTO_INCREMENT insert of a procedure's `body` can be carried by the
/// CALL's record: the body runs each of its statements at most once per CALL (no loop, no
/// handler, no dynamic SQL) and never sets LAST_INSERT_ID itself (`LAST_INSERT_ID(expr)`).
/// The proxy then reads LAST_INSERT_ID() on the primary after the CALL, which is that
/// insert's first id, and a follower replays the CALL after `SET insert_id` to it, as a
/// top-level insert is replayed: the server uses a forced `insert_id` for the first insert
/// that generates one, inside a procedure too (measured on 10.11). A statement in a loop or
/// a handler may insert several times, each taking its own ids.
pub fn carries_its_insert_id(body: &str) -> bool {
    const REPEATING: [&str; 6] = ["LOOP", "WHILE", "REPEAT", "HANDLER", "PREPARE", "EXECUTE"];
    let toks: Vec<Tok<'_>> = Lexer::new(body).map(|t| t.tok).collect();
    let repeats = toks.iter().enumerate().any(|(i, t)| {
        REPEATING.iter().any(|w| t.is_word(w))
            // A FOR loop ends with END FOR; FOR alone also ends `SELECT … FOR UPDATE`.
            || t.is_word("END") && toks.get(i + 1).is_some_and(|n| n.is_word("FOR"))
    });
    !repeats && !sets_last_insert_id(body)
}

/// Whether `body` calls `LAST_INSERT_ID(expr)`, which sets the value LAST_INSERT_ID()
/// returns next (and, from a procedure, after the CALL).
pub fn sets_last_insert_id(body: &str) -> bool {
    let toks: Vec<Tok<'_>> = Lexer::new(body).map(|t| t.tok).collect();
    toks.windows(3).any(|w| {
        w[0].is_word("LAST_INSERT_ID") && w[1] == Tok::Punct('(') && w[2] != Tok::Punct(')')
    })
}

/// The procedure a `CALL [db.]name[(…)]` runs: its schema (None when unqualified) and name.
pub fn called_procedure(sql: &str) -> Option<(Option<String>, String)> {
    let mut toks = Lexer::new(sql).map(|t| t.tok);
    if !toks.next()?.is_word("CALL") {
        return None;
    }
    called_name(&mut toks)
}

/// The `[db.]name` after a CALL.
fn called_name<'a>(toks: &mut impl Iterator<Item = Tok<'a>>) -> Option<(Option<String>, String)> {
    let name = |t: Option<Tok<'_>>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.to_string()),
        _ => None,
    };
    let first = name(toks.next())?;
    match toks.next() {
        Some(Tok::Punct('.')) => Some((Some(first), name(toks.next())?)),
        _ => Some((None, first)),
    }
}

/// The procedures a stored program's `body` calls (`CALL [db.]name`), also from strings it
/// may run as dynamic SQL (`PREPARE s FROM 'CALL q()'`). Unqualified names are the caller's
/// to resolve: inside a routine they name its own database.
pub fn procedures_called(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    collect_calls(body, true, &mut out);
    out
}

fn collect_calls(sql: &str, with_strings: bool, out: &mut Vec<(Option<String>, String)>) {
    let mut toks = Lexer::new(sql).map(|t| t.tok);
    while let Some(t) = toks.next() {
        match t {
            // CALL is reserved: as a bare word it starts a CALL statement.
            Tok::Word(w) if w.eq_ignore_ascii_case("CALL") => {
                out.extend(called_name(&mut toks));
            }
            Tok::Str(quoted) if with_strings && quoted.len() >= 2 => {
                collect_calls(&quoted[1..quoted.len() - 1], false, out);
            }
            _ => {}
        }
    }
}

/// Whether `toks` give a column the AUTO_INCREMENT attribute (not the `AUTO_INCREMENT [=] n`
/// table option).
fn has_auto_increment_attribute(toks: &[Tok<'_>]) -> bool {
    toks.iter().enumerate().any(|(k, t)| {
        t.is_word("AUTO_INCREMENT")
            && !matches!(toks.get(k + 1), Some(Tok::Punct('=') | Tok::Number(_)))
    })
}

/// Whether a `CREATE TABLE (… AUTO_INCREMENT …) SELECT …` numbers the rows it copies in
/// the order it reads them: no ORDER BY at its SELECT's level.
fn numbers_rows_in_read_order(toks: &[Tok<'_>]) -> bool {
    let Some(select) = toks.iter().position(|t| t.is_word("SELECT")) else {
        return false;
    };
    if !has_auto_increment_attribute(&toks[..select]) {
        return false;
    }
    let mut depth = 0usize;
    let ordered = toks[select..].windows(2).any(|w| {
        match w[0] {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0 && w[0].is_word("ORDER") && w[1].is_word("BY")
    });
    !ordered
}

/// The table an `ALTER TABLE` gives an AUTO_INCREMENT column (ADD, MODIFY or CHANGE one
/// with the attribute; not the `AUTO_INCREMENT [=] n` table option): (schema as written,
/// table). The server numbers the existing rows in the order it reads them, its clustered
/// index's: the primary key's, else the first unique NOT NULL key's, else the order the rows
/// were inserted on that server, which differs between replicas (`commands`' check).
pub fn auto_increment_column_added(sql: &str) -> Option<(Option<String>, String)> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let mut i = 0;
    if !toks.first()?.is_word("ALTER") {
        return None;
    }
    i += 1;
    while ["ONLINE", "IGNORE"]
        .iter()
        .any(|w| toks.get(i).is_some_and(|t| t.is_word(w)))
    {
        i += 1;
    }
    if !toks.get(i)?.is_word("TABLE") {
        return None;
    }
    i += 1;
    if toks.get(i).is_some_and(|t| t.is_word("IF")) {
        i += 2; // IF EXISTS
    }
    let name = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.to_string()),
        _ => None,
    };
    let first = name(toks.get(i))?;
    let table = if toks.get(i + 1) == Some(&Tok::Punct('.')) {
        (Some(first), name(toks.get(i + 2))?)
    } else {
        (None, first)
    };
    has_auto_increment_attribute(&toks).then_some(table)
}

/// The schema a `CREATE TRIGGER / PROCEDURE / FUNCTION` names its object in (`db.name`):
/// where the body's unqualified table names resolve. None when unqualified.
pub fn program_schema(sql: &str) -> Option<String> {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).take(32).map(|t| t.tok).collect();
    let at = toks
        .iter()
        .position(|t| t.is_word("TRIGGER") || t.is_word("PROCEDURE") || t.is_word("FUNCTION"))?;
    let mut j = at + 1;
    if toks.get(j).is_some_and(|t| t.is_word("IF")) {
        j += 3; // IF NOT EXISTS
    }
    match (toks.get(j), toks.get(j + 1)) {
        (Some(Tok::Word(db) | Tok::Quoted(db)), Some(Tok::Punct('.'))) => Some(db.to_string()),
        _ => None,
    }
}

/// Variables a write may read besides `REPLICATED_SETTINGS`: the proxy fixes them for the
/// statement on every replica. Any other variable (server identity, buffer sizes, GTID
/// positions, the connection's thread id or random seeds, diagnostics of the previous
/// statement, any `@@global.` value) can differ between replicas.
const FIXED_SYSVARS: &[&str] = &["timestamp", "tx_isolation", "transaction_isolation"];

/// Schemas whose contents are each server's own (its processes, status, accounts, table
/// statistics), not replicated data.
const SERVER_LOCAL_SCHEMAS: &[&str] = &["information_schema", "performance_schema", "mysql", "sys"];

/// Why reading `@@scope.name` in a write is refused, if it is.
fn refused_sysvar(var: &str) -> Option<String> {
    let mut parts = var.rsplitn(2, '.');
    let name = parts.next().unwrap_or(var).to_ascii_lowercase();
    let scope = parts.next().map(str::to_ascii_lowercase);
    if scope.as_deref() == Some("global") {
        return Some(format!(
            "the write reads @@global.{name}, a server setting that can differ between replicas"
        ));
    }
    if REPLICATED_SETTINGS.contains(&name.as_str()) || FIXED_SYSVARS.contains(&name.as_str()) {
        return None;
    }
    Some(format!(
        "the write reads @@{name}, which can differ between replicas (a write may read only \
         the session settings the proxy replicates, such as @@sql_mode or @@time_zone); read \
         it first and pass the value"
    ))
}
/// Why UUID()/UUID_SHORT() at `toks[i]` in a compound statement cannot be one value: a loop
/// runs it again, and in an UPDATE or an INSERT … SELECT / ON DUPLICATE KEY UPDATE the
/// server calls it once per row (the proxy counts the rows of a statement of its own, not
/// of one inside a compound statement).
fn repeated_in_compound(
    toks: &[Spanned<'_>],
    i: usize,
    function: &str,
    looping: bool,
) -> Option<String> {
    if looping {
        return Some(format!(
            "{function}() in a compound statement with a loop: the proxy fixes each call to \
             one value for every replica, and the loop would repeat it where the server gives \
             a new one on each pass; generate the values in the application, or write one \
             row per statement"
        ));
    }
    let (start, end) = inner_statement(toks, i);
    let inner = &toks[start..end];
    let per_row = inner.first().is_some_and(|t| t.tok.is_word("UPDATE"))
        || inner
            .first()
            .is_some_and(|t| t.tok.is_word("INSERT") || t.tok.is_word("REPLACE"))
            && inner
                .iter()
                .any(|t| t.tok.is_word("SELECT") || t.tok.is_word("DUPLICATE"));
    per_row.then(|| {
        format!(
            "{function}() in an UPDATE or INSERT … SELECT inside a compound statement: the \
             server calls it once per row, and the proxy replicates one value per call; run \
             that statement on its own (the proxy then checks how many rows it touched)"
        )
    })
}

/// Checks one write statement. In a `prepared` statement (its text is prepared once and
/// executed many times) a UUID()/UUID_SHORT() call becomes a `?` placeholder whose value
/// each execution injects (`WriteCheck::injected`); in a text statement, the literal.
pub fn check_write(sql: &str, prepared: bool, lit: &Literals<'_>) -> WriteCheck {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut check = WriteCheck::default();
    let mut out = String::new();
    let mut last = 0usize;
    let mut has_order_by = false;
    // `SET STATEMENT … FOR <statement>` is judged as the statement it runs.
    let body = super::classify::set_statement_target(sql).unwrap_or(sql);
    let head_spans: Vec<Spanned<'_>> = Lexer::new(body).take(3).collect();
    let head: Vec<Tok<'_>> = head_spans.iter().map(|t| t.tok).collect();
    let first = head.first().copied();
    let is_update_or_delete = first.is_some_and(|t| t.is_word("UPDATE") || t.is_word("DELETE"));
    let is_insert = first.is_some_and(|t| t.is_word("INSERT") || t.is_word("REPLACE"));
    let is_insert_select = is_insert && toks.iter().any(|t| t.tok.is_word("SELECT"));
    let is_update = first.is_some_and(|t| t.is_word("UPDATE"));
    // A compound statement (`BEGIN NOT ATOMIC`, IF, a loop) runs its own statements: a call
    // fixed to one value is right only where the server calls it once.
    let compound = is_compound_statement(&head_spans);
    let looping = compound && holds_a_loop(&toks);
    // Where the scan is, for calls the server evaluates once per row: in the rows an
    // INSERT's SELECT gives (not in a VALUES list, where each call is one row's), or in
    // its ON DUPLICATE KEY UPDATE.
    let mut depth = 0usize;
    let mut insert_values = false;
    let mut after_select = false;
    let mut after_duplicate = false;
    let mut placeholders: u16 = 0;
    let mut numbers_rows = false;
    let mut read_keys = lit.primary_keys.map(|keys| keys.iter());
    let orders = statement_orders(
        &toks,
        body,
        is_update_or_delete,
        is_insert_select,
        false,
        read_keys.as_mut(),
    );
    let key = orders.picks[0].key;
    let output = orders.output;
    // A compound statement's own statements get what a program's body gets.
    let inner = compound.then(|| programs::body_orders(sql, &toks, read_keys.as_mut()));
    let key_texts: Vec<(usize, String)> = orders
        .key_texts
        .iter()
        .chain(inner.iter().flat_map(|b| &b.inserts))
        .cloned()
        .collect();
    let refuse = |check: &mut WriteCheck, why: String| {
        if check.refused.is_none() {
            check.refused = Some(why);
        }
    };
    for (i, t) in toks.iter().enumerate() {
        for (at, text) in key_texts.iter().filter(|(at, _)| *at == t.start) {
            out.push_str(&sql[last..*at]);
            out.push_str(text);
            last = *at;
        }
        match t.tok {
            Tok::Param => placeholders = placeholders.saturating_add(1),
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if w.eq_ignore_ascii_case("SELECT") => after_select = true,
            Tok::Word(w) if w.eq_ignore_ascii_case("DUPLICATE") => after_duplicate = true,
            Tok::Word(w)
                if depth == 0
                    && !after_select
                    && (w.eq_ignore_ascii_case("VALUES") || w.eq_ignore_ascii_case("VALUE")) =>
            {
                insert_values = true
            }
            Tok::UserVar(v) => {
                let next = |k: usize| toks.get(i + k).map(|t| t.tok);
                let assigned = next(1) == Some(Tok::Punct(':')) && next(2) == Some(Tok::Punct('='))
                    || i > 0 && toks[i - 1].tok.is_word("INTO");
                if assigned {
                    // Its value after the statement would be the primary's alone, and a
                    // later write reading it would need it from the same statement's rows.
                    refuse(
                        &mut check,
                        format!(
                            "the write assigns user variable @{v}; assign it in a statement of \
                             its own (SET @{v} = …) and use it in the write"
                        ),
                    )
                } else if !check.user_vars.iter().any(|u| u.eq_ignore_ascii_case(v)) {
                    check.user_vars.push(v.to_string());
                }
            }
            Tok::SysVar(v) => {
                let name = v.rsplit('.').next().unwrap_or(v);
                if name.eq_ignore_ascii_case("last_insert_id")
                    || name.eq_ignore_ascii_case("identity")
                {
                    check.needs_last_insert_id = true;
                } else if let Some(why) = refused_sysvar(v) {
                    refuse(&mut check, why);
                }
            }
            Tok::Word(w) | Tok::Quoted(w)
                if toks
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.tok, Tok::Punct('.')))
                    && SERVER_LOCAL_SCHEMAS
                        .iter()
                        .any(|s| w.eq_ignore_ascii_case(s)) =>
            {
                refuse(
                    &mut check,
                    format!(
                        "the write uses {}.*, which holds each server's own state (processes, \
                         status, accounts, statistics), not replicated data; read it first \
                         and pass the values",
                        w.to_ascii_lowercase()
                    ),
                )
            }
            Tok::Word(w) => {
                if w.eq_ignore_ascii_case("BY") && i > 0 && toks[i - 1].tok.is_word("ORDER") {
                    has_order_by = true;
                }
                let is_call = toks
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.tok, Tok::Punct('(')));
                let names_table = i.checked_sub(1).is_some_and(|p| {
                    matches!(toks[p].tok, Tok::Punct('.'))
                        || BEFORE_TABLE_NAMES.iter().any(|k| toks[p].tok.is_word(k))
                });
                // CURRENT_USER is a call without parentheses too (a reserved word).
                let bare_current_user = !is_call && w.eq_ignore_ascii_case("CURRENT_USER");
                if !is_call && !bare_current_user || names_table {
                    continue;
                }
                let upper = w.to_ascii_uppercase();
                let empty_args = toks
                    .get(i + 2)
                    .is_some_and(|n| matches!(n.tok, Tok::Punct(')')));
                let call_end = if bare_current_user {
                    Some(t.end)
                } else {
                    empty_args.then(|| toks[i + 2].end)
                };
                match upper.as_str() {
                    f if ACCOUNT_FUNCTIONS.contains(&f) && call_end.is_some() => {
                        let Some(identity) = lit.identity else {
                            check.needs_identity = true;
                            continue;
                        };
                        let value = identity
                            .value(f)
                            .map_or(Injected::Null, |v| Injected::Text(v.to_string()));
                        out.push_str(&sql[last..t.start]);
                        put_value(&mut out, &mut check, placeholders, prepared, value);
                        last = call_end.unwrap_or(t.end);
                    }
                    "DATABASE" | "SCHEMA" if empty_args && lit.no_database => {
                        out.push_str(&sql[last..t.start]);
                        put_value(&mut out, &mut check, placeholders, prepared, Injected::Null);
                        last = toks[i + 2].end;
                    }
                    "RAND" if empty_args => check.needs_rand_seed = true,
                    "ROWNUM" => numbers_rows = true,
                    "LAST_INSERT_ID" if empty_args => check.needs_last_insert_id = true,
                    "UUID" | "UUID_SHORT" if empty_args => {
                        let function = if upper == "UUID" {
                            "UUID"
                        } else {
                            "UUID_SHORT"
                        };
                        let counted = if is_update {
                            Some(RowsCounted::Matched)
                        } else if is_insert && after_duplicate {
                            Some(RowsCounted::Duplicates)
                        } else if is_insert && after_select && !insert_values {
                            Some(RowsCounted::Records)
                        } else {
                            None
                        };
                        if compound {
                            if let Some(why) = repeated_in_compound(&toks, i, function, looping) {
                                refuse(&mut check, why);
                            }
                        }
                        if let Some(counted) = counted {
                            // The widest count wins: Records ≥ Matched, Duplicates.
                            if check.per_row_call.is_none_or(|p| p.counted < counted) {
                                check.per_row_call = Some(PerRowCall { function, counted });
                            }
                        }
                        let close = toks[i + 2].end;
                        out.push_str(&sql[last..t.start]);
                        let value = if function == "UUID" {
                            Injected::Text((lit.uuid)())
                        } else {
                            Injected::Unsigned((lit.uuid_short)())
                        };
                        put_value(&mut out, &mut check, placeholders, prepared, value);
                        last = close;
                    }
                    "SYSDATE" if looping => refuse(
                        &mut check,
                        "SYSDATE() in a compound statement's loop gives a later time on each \
                         pass, and the proxy replays the write at one recorded time; use NOW() \
                         (the statement's time) or pass the times in"
                            .into(),
                    ),
                    "SYSDATE" => {
                        // NOW() follows the recorded timestamp; SYSDATE() would not.
                        out.push_str(&sql[last..t.start]);
                        out.push_str("NOW");
                        last = t.end;
                    }
                    f if REFUSED_FUNCTIONS.contains(&f) => refuse(
                        &mut check,
                        format!("{f}() gives different results on different replicas"),
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // The statement's LIMIT got ORDER BY the primary key or its output: its order is fixed.
    has_order_by |= key.is_some() || output;
    if !has_order_by && is_insert_select && !reads_in_primary_key_order(&toks) {
        check.order_check = OrderCheck::InsertSelect;
    }
    let update_ignore = first.is_some_and(|t| t.is_word("UPDATE"))
        && head.iter().skip(1).any(|t| t.is_word("IGNORE"));
    if !has_order_by && update_ignore {
        check.order_check = OrderCheck::UpdateIgnore;
    }
    if numbers_rows && !has_order_by {
        refuse(
            &mut check,
            "ROWNUM() numbers rows in the order they are read, which can differ between \
             replicas; add ORDER BY on a unique key"
                .into(),
        );
    }
    // A LIMIT inside a compound statement that no key can order must be ordered already.
    if compound && unordered_limit_left(sql, &toks) {
        refuse(
            &mut check,
            "a LIMIT without ORDER BY at its level inside a compound statement that the \
             proxy cannot order by a primary key (a join, a union, a grouping): each replica \
             may pick other rows; add ORDER BY on a unique key"
                .into(),
        );
    }
    if skips_locked_rows(toks.iter().map(|t| t.tok)) {
        refuse(
            &mut check,
            "SKIP LOCKED skips the rows other transactions hold on the primary, and a \
             follower replaying the write alone would skip none; select the rows first \
             (SELECT … FOR UPDATE SKIP LOCKED is a read) and write them by key"
                .into(),
        );
    }
    // After the statement's last word (spaces or a comment may follow it).
    let last_start = toks.last().map_or(0, |t| t.start);
    for (at, text) in key_texts.iter().filter(|(at, _)| *at > last_start) {
        out.push_str(sql.get(last..*at).unwrap_or_default());
        out.push_str(text);
        last = *at;
    }
    if let Some(why) = orders.refusal(lit.primary_keys.is_some()) {
        refuse(&mut check, why);
    }
    if let Some(why) = inner.as_ref().and_then(|b| b.refused.clone()) {
        refuse(&mut check, why);
    }
    // Keys are worth reading only for a statement that can run.
    if lit.primary_keys.is_none() && check.refused.is_none() {
        check.needs_primary_keys = orders.tables();
        check
            .needs_primary_keys
            .extend(inner.into_iter().flat_map(|b| b.tables));
    }
    if last > 0 {
        out.push_str(sql.get(last..).unwrap_or_default());
        check.rewritten = Some(out);
    }
    check
}

/// The orders a write's rows are picked, sorted or numbered in, and the text that fixes
/// them where a primary key (or, for an `INSERT … SELECT`, its output) can.
struct StatementOrders<'k> {
    /// Each level that picks or orders rows: the statement's own first.
    picks: Vec<Pick<'k>>,
    /// The statement's own rows are ordered by their output positions (no key could).
    output: bool,
    /// Text to insert, at byte offsets of the statement.
    key_texts: Vec<(usize, String)>,
    /// A window function no key could order.
    window_refusal: Option<&'static str>,
}

impl StatementOrders<'_> {
    /// Why the write cannot run as it is: a level without an order that no key fixes
    /// (`keys_read`: the keys were read, so a missing one is known to be missing).
    fn refusal(&self, keys_read: bool) -> Option<String> {
        if let Some(why) = self.window_refusal {
            return Some(why.into());
        }
        self.picks.iter().find_map(|pick| {
            let what = pick.unordered?;
            match &pick.order {
                Some(_) if !keys_read || pick.key.is_some() => None,
                Some(_) => Some(format!(
                    "{what}, and the table has no primary key the proxy could order them by; \
                     add ORDER BY on a unique key"
                )),
                None => Some(format!("{what}; add ORDER BY on a unique key")),
            }
        })
    }

    /// The tables whose primary keys the orders need, in the order `read_keys` gives them.
    fn tables(&self) -> Vec<(Option<String>, String)> {
        self.picks
            .iter()
            .filter_map(|p| Some(p.order.as_ref()?.table.clone()))
            .collect()
    }
}

/// The orders of the write `toks` (`body`: the statement a `SET STATEMENT … FOR` runs, or
/// the whole), with each order's table key taken from `read_keys` once they were read.
/// `in_program`: a stored program's statement, where a bare column name could be one of the
/// program's variables, so even an UPDATE's or DELETE's own key is qualified.
fn statement_orders<'k>(
    toks: &[Spanned<'_>],
    body: &str,
    is_update_or_delete: bool,
    is_insert_select: bool,
    in_program: bool,
    mut read_keys: Option<&mut std::slice::Iter<'k, Vec<String>>>,
) -> StatementOrders<'k> {
    let keys_read = read_keys.is_some();
    // Only these writes are judged by their LIMITs (an INSERT … VALUES has none to judge).
    let levels = if is_update_or_delete || is_insert_select {
        limit_levels(toks)
    } else {
        Vec::new()
    };
    let limits = LimitOrder::of(&levels);
    // Rows a LIMIT or an ORDER BY picks from one table, the statement's own or a
    // subquery's: its primary key, once read, orders them or breaks the ties of an ORDER
    // BY that need not be unique. Each level's unordered LIMIT, and its key order if any.
    let top_order = if is_update_or_delete {
        update_or_delete_key_order(toks, &limits, body, in_program)
    } else if is_insert_select {
        insert_select_key_order(toks, &limits)
    } else {
        None
    };
    let limit = |unordered: bool| unordered.then_some(UNORDERED_LIMIT);
    let mut orders: Vec<(Option<&str>, Option<KeyOrder>)> =
        vec![(limit(limits.top_unordered), top_order)];
    orders.extend(
        levels
            .iter()
            .filter(|l| l.nested && !l.exists)
            .map(|l| (limit(!l.ordered), nested_key_order(toks, l))),
    );
    let mut window_refusal = None;
    if is_update_or_delete || is_insert_select {
        orders.extend(
            aggregate_key_orders(toks)
                .into_iter()
                .map(|o| (None, Some(o))),
        );
        for need in windows::window_needs(toks) {
            match need {
                windows::WindowNeed::Keyed { order, unordered } => {
                    orders.push((unordered.then_some(UNORDERED_WINDOW), Some(order)))
                }
                windows::WindowNeed::Refused(why) => {
                    window_refusal.get_or_insert(why);
                }
            }
        }
    }
    // `read_keys` follows the key orders' order; an empty key: the table has none.
    let mut picks: Vec<Pick<'_>> = orders
        .into_iter()
        .map(|(unordered, order)| {
            let key = order
                .as_ref()
                .and_then(|_| read_keys.as_mut()?.next())
                .filter(|k| !k.is_empty())
                .map(Vec::as_slice);
            Pick {
                unordered,
                order,
                key,
            }
        })
        .collect();
    // No key orders the statement's own rows (not one table's, or one without a key): an
    // INSERT … SELECT that sorts or limits them is ordered by its output columns.
    let output =
        (is_insert_select && picks[0].key.is_none() && (picks[0].order.is_none() || keys_read))
            .then(|| output_order::output_order(toks, limits.top_limit))
            .flatten();
    if output.is_some() {
        picks[0].unordered = None;
    }
    let mut key_texts: Vec<(usize, String)> = picks
        .iter()
        .filter_map(|p| Some((p.order.as_ref()?.at, p.order.as_ref()?.text(p.key?))))
        .collect();
    key_texts.extend(output.as_ref().map(|o| (o.at, o.text())));
    StatementOrders {
        picks,
        output: output.is_some(),
        key_texts,
        window_refusal,
    }
}

/// Puts `value` where a call was: in a prepared statement a `?` with the value injected at
/// its place (`placeholders`: the client's placeholders before it), else a literal.
fn put_value(
    out: &mut String,
    check: &mut WriteCheck,
    placeholders: u16,
    prepared: bool,
    value: Injected,
) {
    if prepared {
        out.push('?');
        let at = placeholders.saturating_add(check.injected.len() as u16);
        check.injected.push((at, value));
        return;
    }
    match value {
        Injected::Text(s) => out.push_str(&string_literal(&s)),
        Injected::Unsigned(n) => out.push_str(&n.to_string()),
        Injected::Signed(n) => out.push_str(&n.to_string()),
        Injected::Null => out.push_str("NULL"),
    }
}

/// Whether a LIMIT picks rows without an ORDER BY at its own level (the statement, or the
/// parenthesised subquery it closes). `EXISTS (… LIMIT 1)` (Django's `Exists()` always adds
/// it) is true or false whichever row comes first, and an ORDER BY elsewhere (another
/// subquery, a window's `OVER (ORDER BY …)`) orders other rows.
/// Whether the statement reads with `SKIP LOCKED`, whose rows depend on the locks other
/// transactions hold at that moment: MySQL's statement binlog calls it unsafe.
fn skips_locked_rows<'a>(toks: impl IntoIterator<Item = Tok<'a>>) -> bool {
    let mut after_skip = false;
    for t in toks {
        if after_skip && t.is_word("LOCKED") {
            return true;
        }
        after_skip = t.is_word("SKIP");
    }
    false
}

/// Whether an `INSERT … SELECT` reads one table through its primary key and nothing else:
/// `SELECT … FROM t [[AS] a] FORCE INDEX (PRIMARY)` followed by nothing or by WHERE, LOCK
/// IN SHARE MODE, FOR UPDATE, ON DUPLICATE KEY UPDATE or RETURNING, with no join, union,
/// grouping, DISTINCT, window or subquery. The server can then only walk the clustered
/// index, so every replica reads the rows in primary-key order, as an ORDER BY on it would
/// make them. pt-online-schema-change copies rows so; they collide with rows its triggers
/// already copied, which without this was refused as order-dependent.
fn reads_in_primary_key_order(toks: &[Spanned<'_>]) -> bool {
    const FOLLOWERS: &[&str] = &["WHERE", "LOCK", "FOR", "ON", "RETURNING"];
    let Some(read) = one_table_read(toks) else {
        return false;
    };
    let i = read.next;
    let word_at = |i: usize, w: &str| toks.get(i).is_some_and(|t| t.tok.is_word(w));
    let primary = toks.get(i + 3).is_some_and(|t| match t.tok {
        Tok::Word(w) | Tok::Quoted(w) => w.eq_ignore_ascii_case("PRIMARY"),
        _ => false,
    });
    let hint = word_at(i, "FORCE")
        && (word_at(i + 1, "INDEX") || word_at(i + 1, "KEY"))
        && matches!(toks.get(i + 2).map(|t| t.tok), Some(Tok::Punct('(')))
        && primary
        && matches!(toks.get(i + 4).map(|t| t.tok), Some(Tok::Punct(')')));
    if !hint {
        return false;
    }
    match toks.get(i + 5).map(|t| t.tok) {
        None | Some(Tok::Punct(';')) => true,
        Some(next) => FOLLOWERS.iter().any(|w| next.is_word(w)),
    }
}

/// Why a LIMIT without ORDER BY is refused where no key orders it.
const UNORDERED_LIMIT: &str = "LIMIT without ORDER BY picks rows in an unspecified order, so \
     replicas could change different rows";

/// Why a tie-dependent window function without ORDER BY is refused where no key orders it.
const UNORDERED_WINDOW: &str = "a window function without ORDER BY (ROW_NUMBER(), LAG(), a \
     ROWS frame …) reads rows in an unspecified order, so replicas could write different values";

/// A level of a write that picks or orders rows (the statement, a subquery with a LIMIT, an
/// ordered aggregate, a window).
struct Pick<'k> {
    /// It has no ORDER BY of its own: why it is refused if no key orders it.
    unordered: Option<&'static str>,
    /// Where its table's key would order it, if it reads one table.
    order: Option<KeyOrder>,
    /// That key, once read and not empty.
    key: Option<&'k [String]>,
}

/// Where a write's rows are picked by a LIMIT or an ORDER BY on one table, whose primary key
/// (`WriteCheck::needs_primary_keys`) then fixes the order: `ORDER BY <key>` before the
/// LIMIT, or `, <key>` at the end of the statement's own ORDER BY.
struct KeyOrder {
    /// The table whose key is read: (schema as written, table).
    table: (Option<String>, String),
    /// How the key's columns are named in the statement (the SELECT's alias or table, for
    /// an INSERT … SELECT whose select list could hide a bare column name); None: bare.
    qualifier: Option<String>,
    /// Byte offset the text goes in at (the text's length: after its last word).
    at: usize,
    /// The statement has an ORDER BY there already: the key continues it.
    continues: bool,
    /// The text goes right after a word (before an aggregate's closing parenthesis).
    lead_space: bool,
}

impl KeyOrder {
    fn text(&self, key: &[String]) -> String {
        let quote = super::quote_identifier;
        let columns: Vec<String> = key
            .iter()
            .map(|c| match &self.qualifier {
                Some(q) => format!("{q}.{}", quote(c)),
                None => quote(c),
            })
            .collect();
        let lead = if self.continues { ", " } else { "ORDER BY " };
        let space = if self.lead_space { " " } else { "" };
        format!("{space}{lead}{} ", columns.join(", "))
    }
}

/// Index of the first `word` at parenthesis depth 0.
fn top_level(toks: &[Spanned<'_>], word: &str) -> Option<usize> {
    let mut depth = 0usize;
    toks.iter().position(|t| {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            _ => return depth == 0 && t.tok.is_word(word),
        }
        false
    })
}

/// A single-table UPDATE/DELETE with a LIMIT of its own: the key goes in front of that
/// LIMIT.
fn update_or_delete_key_order(
    toks: &[Spanned<'_>],
    limits: &LimitOrder,
    body: &str,
    qualified: bool,
) -> Option<KeyOrder> {
    if !limits.top_limit {
        return None;
    }
    let (table, alias) = single_target(body)?;
    let quote = super::quote_identifier;
    let qualifier = qualified.then(|| match (&alias, &table) {
        (Some(alias), _) => quote(alias),
        (None, (Some(db), name)) => format!("{}.{}", quote(db), quote(name)),
        (None, (None, name)) => quote(name),
    });
    Some(KeyOrder {
        table,
        qualifier,
        at: toks[top_level(toks, "LIMIT")?].start,
        continues: !limits.top_unordered,
        lead_space: false,
    })
}

/// An `INSERT … SELECT` reading one table (no join, union, grouping, DISTINCT, window or
/// subquery): the key ends its ORDER BY, or goes in front of its LIMIT, or else becomes its
/// ORDER BY. Without one, the AUTO_INCREMENT values the rows get, and which of two rows
/// colliding on a unique key wins, follow the order each server's plan reads the rows in
/// (MySQL's statement binlog calls it unsafe); sorting by the key costs the primary and
/// followers a sort only where the plan does not already read in key order, and spares
/// refusing the statement after it ran (`OrderCheck::InsertSelect`). Not for a read through
/// the primary key alone (`reads_in_primary_key_order`, pt-online-schema-change's copy),
/// whose order is already the key's, nor `FROM DUAL`.
fn insert_select_key_order(toks: &[Spanned<'_>], limits: &LimitOrder) -> Option<KeyOrder> {
    if limits.nested_unordered {
        return None;
    }
    let TableRead {
        table,
        qualifier,
        next,
    } = one_table_read(toks)?;
    let (at, continues, lead_space) = match order_tail(toks, limits.top_limit) {
        Some((at, continues)) => (at, continues, false),
        // A program's `SELECT … INTO` without LIMIT reads one row or fails; its cursors
        // are ordered by `programs::unordered_cursor_order`.
        None if !toks
            .iter()
            .take_while(|t| !t.tok.is_word("SELECT"))
            .any(|t| t.tok.is_word("INSERT") || t.tok.is_word("REPLACE")) =>
        {
            return None
        }
        None if table.0.is_none() && table.1.eq_ignore_ascii_case("DUAL") => return None,
        None if reads_in_primary_key_order(toks) => return None,
        None => (unordered_select_end(toks, next)?, false, true),
    };
    Some(KeyOrder {
        table,
        qualifier: Some(qualifier),
        at,
        continues,
        lead_space,
    })
}

/// Where an ORDER BY goes in a SELECT that has none and no LIMIT (an `INSERT … SELECT`'s, a
/// program's cursor's): before the first clause that follows a SELECT's (ON DUPLICATE KEY
/// UPDATE, RETURNING, FOR UPDATE, LOCK IN SHARE MODE) or the statement's `;`, else after its
/// last word. Searched from `from`, past the select list (where an `INTO` or a `FOR` would
/// be something else). As a byte offset.
pub(super) fn unordered_select_end(toks: &[Spanned<'_>], from: usize) -> Option<usize> {
    const FOLLOWERS: &[&str] = &["ON", "RETURNING", "FOR", "LOCK"];
    let mut depth = 0usize;
    for t in toks.get(from..)? {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(';') if depth == 0 => return Some(t.start),
            ref w if depth == 0 && FOLLOWERS.iter().any(|f| w.is_word(f)) => return Some(t.start),
            _ => {}
        }
    }
    Some(toks.last()?.end)
}

/// Where a statement's own order can be extended: the end of its top-level ORDER BY list
/// (the next clause at depth 0, or after its last word) and `true`, else in front of its
/// top-level LIMIT (when `top_limit`) and `false`. As a byte offset.
fn order_tail(toks: &[Spanned<'_>], top_limit: bool) -> Option<(usize, bool)> {
    let order =
        top_level(toks, "ORDER").filter(|&i| toks.get(i + 1).is_some_and(|t| t.tok.is_word("BY")));
    match order {
        Some(i) => {
            let mut depth = 0usize;
            let end = toks[i..].iter().position(|t| {
                match t.tok {
                    Tok::Punct('(') => depth += 1,
                    Tok::Punct(')') => depth = depth.saturating_sub(1),
                    Tok::Punct(';') => return depth == 0,
                    _ => {
                        return depth == 0
                            && ["LIMIT", "ON", "RETURNING", "FOR", "LOCK", "INTO"]
                                .iter()
                                .any(|w| t.tok.is_word(w))
                    }
                }
                false
            });
            let at = match end {
                Some(e) => toks[i + e].start,
                None => toks.last()?.end,
            };
            Some((at, true))
        }
        None if top_limit => Some((toks[top_level(toks, "LIMIT")?].start, false)),
        None => None,
    }
}

/// The one table an `INSERT … SELECT`'s SELECT reads.
struct TableRead {
    /// As written: (schema, table).
    table: (Option<String>, String),
    /// How its columns are qualified: its alias, else its name.
    qualifier: String,
    /// The token after the table and its alias (an index hint, a clause).
    next: usize,
}

/// The one table an `INSERT … SELECT`'s SELECT reads: None when it reads more than one
/// table, or anything could reorder its rows past an ORDER BY (a join, union, grouping,
/// DISTINCT, window or subquery).
fn one_table_read(toks: &[Spanned<'_>]) -> Option<TableRead> {
    table_read(toks, &[])
}

/// `one_table_read`, with the spoiling words in `allowed` allowed: GROUP BY and HAVING for
/// an aggregate (which orders the rows of each group itself), OVER for a window function
/// (which orders the rows of each partition).
fn table_read(toks: &[Spanned<'_>], allowed: &[&str]) -> Option<TableRead> {
    const SPOILERS: &[&str] = &[
        "JOIN",
        "STRAIGHT_JOIN",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "DISTINCT",
        "DISTINCTROW",
        "GROUP",
        "HAVING",
        "WINDOW",
        "OVER",
    ];
    let selects = toks.iter().filter(|t| t.tok.is_word("SELECT")).count();
    let spoils = |t: &Spanned<'_>| {
        SPOILERS
            .iter()
            .filter(|s| !allowed.contains(s))
            .any(|s| t.tok.is_word(s))
    };
    if selects != 1 || toks.iter().any(spoils) {
        return None;
    }
    let quote = super::quote_identifier;
    let name = |i: usize| match toks.get(i).map(|t| t.tok) {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.to_string()),
        _ => None,
    };
    let from = top_level(toks, "FROM")?;
    let mut i = from + 1;
    let first = name(i)?;
    let (schema, table) = if matches!(toks.get(i + 1).map(|t| t.tok), Some(Tok::Punct('.'))) {
        i += 3;
        (Some(first), name(i - 1)?)
    } else {
        i += 1;
        (None, first)
    };
    let mut qualifier = match &schema {
        Some(db) => format!("{}.{}", quote(db), quote(&table)),
        None => quote(&table),
    };
    if toks.get(i).is_some_and(|t| t.tok.is_word("AS")) {
        i += 1;
        qualifier = quote(&name(i)?);
        i += 1;
    } else if let Some(alias) = name(i).filter(|_| {
        const CLAUSES: &[&str] = &[
            "WHERE",
            "GROUP",
            "HAVING",
            "ORDER",
            "LIMIT",
            "FORCE",
            "USE",
            "IGNORE",
            "ON",
            "FOR",
            "LOCK",
            "RETURNING",
            "PARTITION",
            "INTO",
        ];
        !CLAUSES.iter().any(|c| toks[i].tok.is_word(c))
    }) {
        qualifier = quote(&alias);
        i += 1;
    }
    let next = i;
    // One table: no comma join before its clauses (an index hint's list is in parentheses).
    let mut depth = 0usize;
    for t in &toks[i..] {
        const CLAUSES: &[&str] = &[
            "WHERE",
            "GROUP",
            "HAVING",
            "ORDER",
            "LIMIT",
            "ON",
            "FOR",
            "LOCK",
            "RETURNING",
            "INTO",
        ];
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => return None,
            _ if depth == 0 && CLAUSES.iter().any(|c| t.tok.is_word(c)) => break,
            _ => {}
        }
    }
    Some(TableRead {
        table: (schema, table),
        qualifier,
        next,
    })
}

/// The one table a single-table `UPDATE`/`DELETE` changes, as written (schema, table),
/// and the alias it gives it; None for the multi-table forms (which cannot have a LIMIT) or
/// anything not parsed.
type NamedTarget = ((Option<String>, String), Option<String>);
fn single_target(body: &str) -> Option<NamedTarget> {
    let toks: Vec<Tok<'_>> = Lexer::new(body).map(|t| t.tok).collect();
    let name = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.to_string()),
        _ => None,
    };
    let delete = toks.first()?.is_word("DELETE");
    let mut i = 1;
    while ["LOW_PRIORITY", "QUICK", "IGNORE"]
        .iter()
        .any(|m| toks.get(i).is_some_and(|t| t.is_word(m)))
    {
        i += 1;
    }
    if delete {
        if !toks.get(i)?.is_word("FROM") {
            return None;
        }
        i += 1;
    }
    let first = name(toks.get(i))?;
    let (schema, table) = if toks.get(i + 1) == Some(&Tok::Punct('.')) {
        i += 3;
        (Some(first), name(toks.get(i - 1))?)
    } else {
        i += 1;
        (None, first)
    };
    // What follows the table (and its alias) must start the single-table form's clauses.
    let as_word = toks.get(i).is_some_and(|t| t.is_word("AS"));
    if as_word {
        i += 1;
    }
    let clause = |t: Option<&Tok<'_>>| {
        let words: &[&str] = if delete {
            &["WHERE", "ORDER", "LIMIT", "RETURNING"]
        } else {
            &["SET"]
        };
        t.is_some_and(|t| words.iter().any(|w| t.is_word(w)))
    };
    if clause(toks.get(i)) && !as_word {
        Some(((schema, table), None))
    } else if clause(toks.get(i + 1)) {
        Some(((schema, table), Some(name(toks.get(i))?)))
    } else {
        None
    }
}

/// A subquery's LIMIT (`… WHERE id IN (SELECT id FROM (SELECT id FROM t ORDER BY v LIMIT
/// 10) d)`, `SET a = (SELECT … LIMIT 1)`) reading one table: the key, qualified by the
/// subquery's alias or table (a bare name could be a column of its select list), ends its
/// ORDER BY or orders it. Inside the parentheses a qualified name means that table even
/// where an outer query names the same one.
fn nested_key_order(toks: &[Spanned<'_>], level: &LimitLevel) -> Option<KeyOrder> {
    let inner = toks.get(level.tokens.clone())?;
    if !inner.first()?.tok.is_word("SELECT") {
        return None;
    }
    let TableRead {
        table, qualifier, ..
    } = one_table_read(inner)?;
    Some(KeyOrder {
        table,
        qualifier: Some(qualifier),
        at: toks.get(level.limit)?.start,
        continues: level.ordered,
        lead_space: false,
    })
}

/// For each token, where it is an opening parenthesis that closes: the closing one's index.
fn matching_parens(toks: &[Spanned<'_>]) -> Vec<Option<usize>> {
    let mut close = vec![None; toks.len()];
    let mut open = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => open.push(i),
            Tok::Punct(')') => {
                if let Some(o) = open.pop() {
                    close[o] = Some(i);
                }
            }
            _ => {}
        }
    }
    close
}

/// The level a token is in, from the opening parentheses around it (`around`, innermost
/// last): the innermost one's contents, or the whole statement.
fn enclosing_level(around: &[usize], close: &[Option<usize>]) -> std::ops::Range<usize> {
    match around.last() {
        Some(&o) => o + 1..close[o].unwrap_or(close.len()),
        None => 0..close.len(),
    }
}

/// The one table the SELECT at `level` (a subquery's tokens, or the whole statement) reads,
/// `allowed` as for `table_read`; None when a nested level is not a SELECT.
fn level_read(
    toks: &[Spanned<'_>],
    level: std::ops::Range<usize>,
    allowed: &[&str],
) -> Option<TableRead> {
    let nested = level.start > 0;
    let inner = toks.get(level)?;
    if nested && !inner.first()?.tok.is_word("SELECT") {
        return None;
    }
    table_read(inner, allowed)
}

/// Aggregates whose value follows the order they read rows in.
const ORDERED_AGGREGATES: &[&str] = &["GROUP_CONCAT", "JSON_ARRAYAGG"];

/// `GROUP_CONCAT(…)` and `JSON_ARRAYAGG(…)` in a write (`INSERT INTO s SELECT g,
/// GROUP_CONCAT(tag) FROM t GROUP BY g`, `UPDATE … SET tags = (SELECT GROUP_CONCAT(…) …)`)
/// join values in the order the plan reads rows: an index scan and a table scan give other
/// strings, with equal row counts. Where the SELECT around one reads one table (grouped or
/// not), that table's key, qualified, orders it or ends its own ORDER BY: one of the orders
/// it allowed. `DISTINCT` ones are left alone (the server sorts the distinct values).
fn aggregate_key_orders(toks: &[Spanned<'_>]) -> Vec<KeyOrder> {
    // Most writes have none: no work on the per-statement path then.
    let aggregate = |t: &Spanned<'_>| ORDERED_AGGREGATES.iter().any(|a| t.tok.is_word(a));
    if !toks.iter().any(aggregate) {
        return Vec::new();
    }
    let close = matching_parens(toks);
    let mut orders = Vec::new();
    let mut around: Vec<usize> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => {
                let called = i.checked_sub(1).is_some_and(|p| aggregate(&toks[p]));
                if let (true, Some(end)) = (called, close[i]) {
                    let parent = enclosing_level(&around, &close);
                    orders.extend(aggregate_key_order(toks, i, end, parent));
                }
                around.push(i);
            }
            Tok::Punct(')') => {
                around.pop();
            }
            _ => {}
        }
    }
    orders
}

/// The key order of one aggregate call, `toks[open]` to `toks[end]` its parentheses, in the
/// level `parent` (a subquery's tokens, or the whole statement).
fn aggregate_key_order(
    toks: &[Spanned<'_>],
    open: usize,
    end: usize,
    parent: std::ops::Range<usize>,
) -> Option<KeyOrder> {
    let inner = toks.get(open + 1..end)?;
    if inner.first()?.tok.is_word("DISTINCT") {
        return None;
    }
    let TableRead {
        table, qualifier, ..
    } = level_read(toks, parent, &["GROUP", "HAVING"])?;
    // Its own ORDER BY, and where its list ends: SEPARATOR or LIMIT at its level, else the
    // closing parenthesis.
    let (mut depth, mut ordered) = (0usize, false);
    let mut at = (toks[end].start, true);
    for (k, t) in inner.iter().enumerate() {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 => {
                if w.eq_ignore_ascii_case("BY") && k > 0 && inner[k - 1].tok.is_word("ORDER") {
                    ordered = true;
                } else if w.eq_ignore_ascii_case("SEPARATOR") || w.eq_ignore_ascii_case("LIMIT") {
                    at = (t.start, false);
                    break;
                }
            }
            _ => {}
        }
    }
    Some(KeyOrder {
        table,
        qualifier: Some(qualifier),
        at: at.0,
        continues: ordered,
        lead_space: at.1,
    })
}

/// Whether the statement has a LIMIT of its own, and whether a LIMIT lacks an ORDER BY at
/// its own level: the statement's own (`top`), or a subquery's (`nested`; `EXISTS (…
/// LIMIT 1)` is the same whichever row comes first).
#[derive(Default)]
struct LimitOrder {
    top_limit: bool,
    top_unordered: bool,
    nested_unordered: bool,
}

impl LimitOrder {
    fn of(levels: &[LimitLevel]) -> LimitOrder {
        let top = levels.iter().find(|l| !l.nested);
        LimitOrder {
            top_limit: top.is_some(),
            top_unordered: top.is_some_and(LimitLevel::unordered),
            nested_unordered: levels.iter().any(|l| l.nested && l.unordered()),
        }
    }
}

fn limit_order(toks: &[Spanned<'_>]) -> LimitOrder {
    LimitOrder::of(&limit_levels(toks))
}

/// A level of a statement that has a LIMIT: the statement itself, or what one pair of
/// parentheses holds (a subquery, a derived table, `GROUP_CONCAT(… LIMIT n)`).
struct LimitLevel {
    /// Its tokens: the statement's, or those inside the parentheses.
    tokens: std::ops::Range<usize>,
    /// Index of its LIMIT.
    limit: usize,
    /// Inside parentheses.
    nested: bool,
    /// It has an ORDER BY at its own level.
    ordered: bool,
    /// It is `EXISTS (…)`'s.
    exists: bool,
}

impl LimitLevel {
    fn unordered(&self) -> bool {
        !self.ordered && !self.exists
    }
}

/// The levels of `toks` that have a LIMIT, innermost first (an unclosed parenthesis is a
/// level to its end).
fn limit_levels(toks: &[Spanned<'_>]) -> Vec<LimitLevel> {
    struct Open {
        start: usize,
        exists: bool,
        limit: Option<usize>,
        ordered: bool,
    }
    let level = |open: Open, end: usize, nested: bool| {
        open.limit.map(|limit| LimitLevel {
            tokens: open.start..end,
            limit,
            nested,
            ordered: open.ordered,
            exists: open.exists,
        })
    };
    let mut open = vec![Open {
        start: 0,
        exists: false,
        limit: None,
        ordered: false,
    }];
    let mut found = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| toks[p].tok);
        match t.tok {
            Tok::Punct('(') => open.push(Open {
                start: i + 1,
                exists: prev.is_some_and(|p| p.is_word("EXISTS")),
                limit: None,
                ordered: false,
            }),
            Tok::Punct(')') if open.len() > 1 => {
                found.extend(open.pop().and_then(|o| level(o, i, true)));
            }
            Tok::Word(w) => {
                if let Some(level) = open.last_mut() {
                    if w.eq_ignore_ascii_case("LIMIT") {
                        level.limit.get_or_insert(i);
                    } else if w.eq_ignore_ascii_case("BY")
                        && prev.is_some_and(|p| p.is_word("ORDER"))
                    {
                        level.ordered = true;
                    }
                }
            }
            _ => {}
        }
    }
    while let Some(o) = open.pop() {
        let nested = !open.is_empty();
        found.extend(level(o, toks.len(), nested));
    }
    found
}

#[cfg(test)]
mod definition_tests {
    use super::nondeterministic_definition as check;
    use super::{inserted_tables, InsertTarget};

    #[test]
    fn create_table_select_numbering_rows_needs_an_order() {
        for (sql, refused) in [
            (
                "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM np",
                true,
            ),
            (
                "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) (SELECT v FROM np)",
                true,
            ),
            (
                "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM \
                 (SELECT v FROM np ORDER BY v) d",
                true,
            ),
            (
                "CREATE TABLE c (id INT AUTO_INCREMENT PRIMARY KEY) SELECT v FROM np ORDER BY v",
                false,
            ),
            (
                "CREATE TABLE c (id INT AUTO_INCREMENT KEY) (SELECT v FROM np ORDER BY v, w)",
                false,
            ),
            ("CREATE TABLE c AUTO_INCREMENT = 5 SELECT v FROM np", false),
            ("CREATE TABLE c SELECT id, v FROM np", false),
        ] {
            let why = super::nondeterministic_definition(sql, "TABLE");
            assert_eq!(
                why.as_deref()
                    .is_some_and(|w| w.contains("AUTO_INCREMENT ids")),
                refused,
                "{sql}: {why:?}"
            );
        }
    }

    #[test]
    fn alter_table_giving_a_column_auto_increment() {
        use super::auto_increment_column_added as added;
        let t = |schema: Option<&str>, table: &str| {
            Some((schema.map(str::to_string), table.to_string()))
        };
        assert_eq!(
            added("ALTER TABLE np ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY"),
            t(None, "np")
        );
        assert_eq!(
            added("alter online ignore table if exists `d`.`np` modify id bigint auto_increment, add key (id)"),
            t(Some("d"), "np")
        );
        assert_eq!(
            added("ALTER TABLE np CHANGE a id INT NOT NULL AUTO_INCREMENT UNIQUE;"),
            t(None, "np")
        );
        for sql in [
            "ALTER TABLE np AUTO_INCREMENT = 100",
            "ALTER TABLE np AUTO_INCREMENT 100, ADD COLUMN x INT",
            "ALTER TABLE np ADD COLUMN id INT PRIMARY KEY",
            "CREATE TABLE np (id INT AUTO_INCREMENT PRIMARY KEY)",
            "ALTER SEQUENCE s RESTART",
        ] {
            assert_eq!(added(sql), None, "{sql}");
        }
    }

    #[test]
    fn tables_a_stored_program_inserts_into() {
        let t = |schema: Option<&str>, table: &str, columns: Option<&[&str]>| InsertTarget {
            schema: schema.map(str::to_string),
            table: table.to_string(),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            generating_values: Vec::new(),
        };
        assert_eq!(
            inserted_tables(
                "CREATE TRIGGER tr AFTER INSERT ON src FOR EACH ROW \
                 INSERT INTO audit (sid, note) VALUES (NEW.id, INSERT('abc', 1, 1, 'x'))"
            ),
            vec![t(None, "audit", Some(&["sid", "note"]))]
        );
        assert_eq!(
            inserted_tables(
                "CREATE PROCEDURE p() BEGIN INSERT IGNORE `db`.`log` VALUES (NULL, 1); \
                 REPLACE INTO d2.x SET id = 5, v = REPLACE(v, 'a', 'b'); \
                 INSERT LOW_PRIORITY t2 PARTITION (p0) (a) SELECT 1; \
                 INSERT INTO t3 (SELECT * FROM t4); END"
            ),
            vec![
                t(Some("db"), "log", None),
                t(Some("d2"), "x", Some(&["id", "v"])),
                t(None, "t2", Some(&["a"])),
                t(None, "t3", None),
            ]
        );
        assert!(
            inserted_tables("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.v = 1")
                .is_empty()
        );
        let audit = t(None, "audit", Some(&["sid"]));
        assert!(audit.generates("id"));
        // Dynamic SQL given whole as a literal is read too; a string that only mentions an
        // insert, or a piece of one to be concatenated, is not.
        assert_eq!(
            inserted_tables(
                "BEGIN PREPARE s FROM 'INSERT INTO d.log (note) VALUES (?)'; EXECUTE s USING 1; \
                 EXECUTE IMMEDIATE \"REPLACE log SET id = NULL\"; \
                 SET @m = 'could not insert into x'; \
                 SET @q = CONCAT('INSERT INTO ', t, ' VALUES (1)'); END"
            ),
            vec![
                t(Some("d"), "log", Some(&["note"])),
                InsertTarget {
                    generating_values: vec!["id".to_string()],
                    ..t(None, "log", Some(&["id"]))
                },
            ]
        );
        // Naming the column with NULL, 0 or DEFAULT asks for the next id too (the same
        // divergence: seen as id 2 on the primary, 1 on both followers after a rollback).
        for (body, generates) in [
            ("INSERT INTO audit (id, note) VALUES (NULL, NEW.v)", true),
            ("INSERT INTO audit (note, id) VALUES (1, 5), (2, (0))", true),
            ("INSERT INTO audit (`ID`, note) VALUE (DEFAULT, 'x')", true),
            ("INSERT INTO audit SET note = 1, id = NULL", true),
            (
                "INSERT INTO audit SET id = 0.0, note = f(1, 2) ON DUPLICATE KEY UPDATE id = 7",
                true,
            ),
            ("INSERT INTO audit SET note = (1), id = NULL;", true),
            (
                "INSERT INTO audit (id, note) VALUES (NEW.id, NULL), (7, 0)",
                false,
            ),
            (
                "INSERT INTO audit (id, note) VALUES (COALESCE(NULL, 3), 0)",
                false,
            ),
            ("INSERT INTO audit SET id = NEW.id, note = NULL", false),
            ("INSERT INTO audit (id, note) SELECT NULL, 1", true),
            (
                "INSERT INTO audit (note, id) SELECT DISTINCT v, 0 AS id FROM s",
                true,
            ),
            (
                "INSERT INTO audit (id, note) (SELECT NULL `x`, v FROM s WHERE v = 0)",
                true,
            ),
            (
                "INSERT INTO audit (id, note) SELECT s.id, NULL FROM s",
                false,
            ),
            (
                "INSERT INTO audit (id, note) SELECT IFNULL(NULL, 0), 1 FROM s",
                false,
            ),
        ] {
            let target = &inserted_tables(body)[0];
            assert_eq!(target.generates("id"), generates, "{body}: {target:?}");
        }
        assert_eq!(
            super::program_schema(
                "CREATE DEFINER=`a`@`%` TRIGGER IF NOT EXISTS `d`.tr AFTER INSERT ON t"
            ),
            Some("d".to_string())
        );
        assert_eq!(super::program_schema("CREATE PROCEDURE p() SELECT 1"), None);
        assert_eq!(
            super::called_procedure("call `my db`.addRow(1, 'x')"),
            Some((Some("my db".to_string()), "addRow".to_string()))
        );
        assert_eq!(
            super::called_procedure("CALL p"),
            Some((None, "p".to_string()))
        );
        assert_eq!(super::called_procedure("SELECT 1"), None);
        assert_eq!(
            super::procedures_called(
                "BEGIN IF x THEN CALL q(1); END IF; CALL `o`.r; \
                 SET @s = 'CALL d.dyn()'; SELECT 'call' AS `call`; END"
            ),
            [
                (None, "q".to_string()),
                (Some("o".to_string()), "r".to_string()),
                (Some("d".to_string()), "dyn".to_string()),
            ]
        );
        assert!(super::procedures_called("BEGIN INSERT INTO t VALUES (1); END").is_empty());
        for once in [
            "BEGIN INSERT INTO p (name) VALUES (n); SELECT LAST_INSERT_ID() INTO id; END",
            "BEGIN SELECT v INTO x FROM t WHERE id = 1 FOR UPDATE; \
             IF x > 0 THEN INSERT INTO p (name) VALUES (n), (m); END IF; END",
        ] {
            assert!(super::carries_its_insert_id(once), "{once}");
        }
        for repeating in [
            "BEGIN WHILE i < 3 DO INSERT INTO p (name) VALUES (n); SET i = i + 1; END WHILE; END",
            "BEGIN l: LOOP INSERT INTO p (name) VALUES (n); LEAVE l; END LOOP; END",
            "BEGIN REPEAT INSERT INTO p (name) VALUES (n); UNTIL 1 END REPEAT; END",
            "BEGIN FOR i IN 1 .. 3 DO INSERT INTO p (name) VALUES (n); END FOR; END",
            "BEGIN DECLARE CONTINUE HANDLER FOR 1062 INSERT INTO p (name) VALUES (n); END",
            "BEGIN PREPARE s FROM 'INSERT INTO p (name) VALUES (?)'; END",
            "BEGIN INSERT INTO p (name) VALUES (n); DO LAST_INSERT_ID(0); END",
        ] {
            assert!(!super::carries_its_insert_id(repeating), "{repeating}");
        }
        assert!(!t(None, "audit", Some(&["ID", "sid"])).generates("id"));
        assert!(t(None, "audit", None).generates("id"));
    }

    #[test]
    fn per_server_calls_in_definitions_are_found() {
        let found = |sql: &str, object: &str| {
            check(sql, object).map(|why| why[..why.find('(').unwrap()].to_string())
        };
        assert_eq!(
            found(
                "CREATE TABLE t (id UUID DEFAULT UUID() PRIMARY KEY)",
                "TABLE"
            )
            .as_deref(),
            Some("UUID")
        );
        assert_eq!(
            found(
                "ALTER TABLE t ADD COLUMN r DOUBLE DEFAULT (rand())",
                "TABLE"
            )
            .as_deref(),
            Some("RAND")
        );
        assert_eq!(
            found("CREATE TABLE c AS SELECT id, uuid_short() FROM t", "TABLE").as_deref(),
            Some("UUID_SHORT")
        );
        assert_eq!(
            found(
                "CREATE TRIGGER bi BEFORE INSERT ON t FOR EACH ROW SET NEW.u = UUID()",
                "TRIGGER"
            )
            .as_deref(),
            Some("UUID")
        );
        assert_eq!(
            found(
                "CREATE FUNCTION f() RETURNS INT RETURN CONNECTION_ID()",
                "FUNCTION"
            )
            .as_deref(),
            Some("CONNECTION_ID")
        );
        let skipping = check(
            "CREATE PROCEDURE take() BEGIN DECLARE j INT; \
             SELECT id INTO j FROM jobs LIMIT 1 FOR UPDATE SKIP LOCKED; \
             UPDATE jobs SET taken = 1 WHERE id = j; END",
            "PROCEDURE",
        )
        .unwrap_or_default();
        assert!(skipping.contains("SKIP LOCKED"), "{skipping}");
        for (sql, object) in [
            (
                "CREATE PROCEDURE next_job() BEGIN DECLARE j INT; \
                 SET j = (SELECT a.id FROM jobs a JOIN extra b USING (id) LIMIT 1); \
                 UPDATE jobs SET state = 'taken' WHERE id = j; END",
                "PROCEDURE",
            ),
            (
                "CREATE TRIGGER ai AFTER INSERT ON t FOR EACH ROW \
                 DELETE FROM recent WHERE k IN (SELECT k FROM a JOIN b USING (k) LIMIT 1)",
                "TRIGGER",
            ),
            (
                "CREATE TABLE top10 AS SELECT * FROM scores LIMIT 10",
                "TABLE",
            ),
        ] {
            let why = check(sql, object).unwrap_or_default();
            assert!(why.contains("LIMIT without ORDER BY"), "{sql}: {why}");
        }
        // A write's own LIMIT that its table's key can order: ordered when the program is
        // created (`programs`), not refused.
        let claim = "CREATE TRIGGER ai AFTER INSERT ON t FOR EACH ROW \
                     DELETE FROM recent WHERE k = NEW.k LIMIT 1";
        assert_eq!(check(claim, "TRIGGER"), None);
        let next_job = "CREATE PROCEDURE next_job() BEGIN DECLARE j INT; \
                        SELECT id INTO j FROM jobs WHERE state = 'new' LIMIT 1; \
                        UPDATE jobs SET state = 'taken' WHERE id = j; END";
        assert_eq!(check(next_job, "PROCEDURE"), None);
        let keys = [vec!["id".to_string()]];
        let ordered = super::program_orders(claim, Some(&keys)).rewritten;
        assert!(
            ordered
                .as_deref()
                .is_some_and(|t| t.ends_with("ORDER BY `recent`.`id` LIMIT 1")),
            "{ordered:?}"
        );
        // Ordered at each statement's own level, or EXISTS: fine.
        for (sql, object) in [
            (
                "CREATE PROCEDURE next_job() BEGIN DECLARE j INT; \
                 SELECT id INTO j FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1; \
                 UPDATE jobs SET state = 'taken' WHERE id = j; END",
                "PROCEDURE",
            ),
            (
                "CREATE FUNCTION has_new() RETURNS INT RETURN \
                 EXISTS (SELECT 1 FROM jobs WHERE state = 'new' LIMIT 1)",
                "FUNCTION",
            ),
            (
                "CREATE PROCEDURE sample() BEGIN SELECT * FROM jobs LIMIT 10; END",
                "PROCEDURE",
            ),
            (
                "CREATE TABLE top10 AS SELECT * FROM scores ORDER BY id LIMIT 10",
                "TABLE",
            ),
        ] {
            assert_eq!(check(sql, object), None, "{sql}");
        }
        // Deterministic, or fixed by the recorded timestamp: fine.
        for (sql, object) in [
            (
                "CREATE TABLE t (id INT, at DATETIME DEFAULT NOW(), r DOUBLE DEFAULT (RAND(7)))",
                "TABLE",
            ),
            ("CREATE TABLE t (id INT, uuid UUID)", "TABLE"),
            ("CREATE PROCEDURE p() SELECT ROW_COUNT()", "PROCEDURE"),
            ("CREATE VIEW v AS SELECT UUID()", "VIEW"),
        ] {
            assert_eq!(check(sql, object), None, "{sql}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys read for two tables in turn: `id`, then `(k1, k2)`.
    fn id_then_pair_keys() -> Vec<Vec<String>> {
        vec![
            vec!["id".to_string()],
            vec!["k1".to_string(), "k2".to_string()],
        ]
    }

    /// A table as `needs_primary_keys` names it.
    fn table(schema: Option<&str>, name: &str) -> (Option<String>, String) {
        (schema.map(str::to_string), name.to_string())
    }

    /// `s` with each run of whitespace one space: rewrites compared regardless of how the
    /// inserted text is spaced.
    fn one_spaced(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn lit() -> Literals<'static> {
        Literals {
            uuid: &|| "11111111-2222-4333-8444-555555555555".to_string(),
            uuid_short: &|| 42,
            identity: None,
            no_database: false,
            primary_keys: None,
        }
    }

    #[test]
    fn account_functions_take_the_primarys_values() {
        let sql = "INSERT INTO audit (who, acct, role, n) VALUES (USER(), CURRENT_USER, \
                   CURRENT_ROLE(), ?) ON DUPLICATE KEY UPDATE who = session_user()";
        let c = check_write(sql, false, &lit());
        assert!(c.needs_identity && c.rewritten.is_none() && c.refused.is_none());
        let identity = Identity {
            user: "app@10.0.0.5".into(),
            current_user: "app@%".into(),
            current_role: None,
        };
        let with = Literals {
            identity: Some(&identity),
            ..lit()
        };
        let c = check_write(sql, false, &with);
        assert!(!c.needs_identity);
        assert_eq!(
            c.rewritten.as_deref(),
            Some(
                "INSERT INTO audit (who, acct, role, n) VALUES ('app@10.0.0.5', 'app@%', NULL, ?) \
                 ON DUPLICATE KEY UPDATE who = 'app@10.0.0.5'"
            )
        );
        let c = check_write(sql, true, &with);
        assert_eq!(
            c.rewritten.as_deref(),
            Some(
                "INSERT INTO audit (who, acct, role, n) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE who = ?"
            )
        );
        let text = |s: &str| Injected::Text(s.into());
        assert_eq!(
            c.injected,
            [
                (0, text("app@10.0.0.5")),
                (1, text("app@%")),
                (2, Injected::Null),
                (4, text("app@10.0.0.5")),
            ]
        );
        // Odd account names travel as hex; a table named `user` is no call.
        let odd = Identity {
            user: "o'b\\x@h".into(),
            ..identity.clone()
        };
        let c = check_write(
            "INSERT INTO user() VALUES (); UPDATE db.user SET a = USER()",
            false,
            &Literals {
                identity: Some(&odd),
                ..lit()
            },
        );
        assert_eq!(
            c.rewritten.as_deref(),
            Some("INSERT INTO user() VALUES (); UPDATE db.user SET a = _utf8mb4 X'6F27625C784068'")
        );
        assert!(!check_write("INSERT INTO user() VALUES ()", false, &lit()).needs_identity);
    }

    #[test]
    fn deterministic_writes_pass_untouched() {
        for sql in [
            "INSERT INTO t (a, b) VALUES (1, NOW())",
            "UPDATE t SET a = a + 1 WHERE id = 5",
            "DELETE FROM t WHERE id IN (1,2) ORDER BY id",
            "INSERT INTO t SELECT s.* FROM s JOIN u ON u.id = s.id ORDER BY s.id LIMIT 10",
            "UPDATE t SET c = 'LIMIT' WHERE id = 1",
            "INSERT INTO t SELECT s.* FROM s, u ORDER BY id",
        ] {
            let c = check_write(sql, false, &lit());
            assert_eq!(c, WriteCheck::default(), "{sql}");
        }
    }

    #[test]
    fn row_order_is_checked_where_the_statement_leaves_it_open() {
        for (sql, want) in [
            ("INSERT INTO t (a) SELECT a FROM s", OrderCheck::InsertSelect),
            ("INSERT IGNORE INTO t SELECT * FROM s WHERE x > 1", OrderCheck::InsertSelect),
            ("REPLACE t SELECT * FROM s", OrderCheck::InsertSelect),
            (
                "INSERT INTO agg SELECT k, SUM(v) FROM s GROUP BY k ON DUPLICATE KEY UPDATE v = VALUES(v)",
                OrderCheck::InsertSelect,
            ),
            ("UPDATE IGNORE t SET k = 1", OrderCheck::UpdateIgnore),
            ("UPDATE LOW_PRIORITY IGNORE t SET k = 1", OrderCheck::UpdateIgnore),
            ("UPDATE IGNORE t, u SET t.k = u.k WHERE t.id = u.id", OrderCheck::UpdateIgnore),
            (
                "SET STATEMENT sql_mode = '' FOR INSERT INTO t (a) SELECT a FROM s",
                OrderCheck::InsertSelect,
            ),
            ("SET STATEMENT sql_mode = '' FOR UPDATE IGNORE t SET k = 1", OrderCheck::UpdateIgnore),
            // The statement fixes the order (the user's word that it is a unique key).
            ("INSERT INTO t SELECT * FROM s ORDER BY id", OrderCheck::None),
            ("UPDATE IGNORE t SET k = 1 ORDER BY id", OrderCheck::None),
            ("INSERT INTO t VALUES (1), (2)", OrderCheck::None),
            // Read through the primary key alone: its order (pt-online-schema-change's copy).
            (
                "INSERT LOW_PRIORITY IGNORE INTO `osc`.`_t_new` (`id`, `v`) SELECT `id`, `v` \
                 FROM `osc`.`t` FORCE INDEX(`PRIMARY`) WHERE ((`id` >= ?)) AND ((`id` <= ?)) \
                 LOCK IN SHARE MODE /*pt-online-schema-change 1 copy nibble*/",
                OrderCheck::None,
            ),
            ("INSERT INTO t SELECT * FROM s AS x FORCE KEY (PRIMARY)", OrderCheck::None),
            ("REPLACE INTO t SELECT * FROM d.s x FORCE INDEX (PRIMARY) FOR UPDATE", OrderCheck::None),
            // … but not when anything else may decide it.
            ("INSERT INTO t SELECT * FROM s FORCE INDEX (k)", OrderCheck::InsertSelect),
            ("INSERT INTO t SELECT * FROM s USE INDEX (PRIMARY)", OrderCheck::InsertSelect),
            (
                "INSERT INTO t SELECT * FROM s FORCE INDEX FOR JOIN (PRIMARY)",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT s.* FROM s FORCE INDEX (PRIMARY) JOIN u ON u.id = s.id",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT s.* FROM s FORCE INDEX (PRIMARY), u WHERE u.id = s.id",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT DISTINCT a FROM s FORCE INDEX (PRIMARY)",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT k, COUNT(*) FROM s FORCE INDEX (PRIMARY) GROUP BY k",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT a FROM s FORCE INDEX (PRIMARY) UNION SELECT a FROM u",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT a FROM s FORCE INDEX (PRIMARY) WHERE a IN (SELECT a FROM u)",
                OrderCheck::InsertSelect,
            ),
            (
                "INSERT INTO t SELECT ROW_NUMBER() OVER (), a FROM s FORCE INDEX (PRIMARY)",
                OrderCheck::InsertSelect,
            ),
            ("UPDATE t SET k = 1", OrderCheck::None),
            ("UPDATE t SET note = 'IGNORE' WHERE id = 1", OrderCheck::None),
        ] {
            assert_eq!(check_write(sql, false, &lit()).order_check, want, "{sql}");
        }
    }

    #[test]
    fn the_primarys_answer_says_whether_row_order_mattered() {
        let insert = |info: &str, generated: bool| {
            order_dependence(OrderCheck::InsertSelect, info, generated)
        };
        // MariaDB 10.11's answers, as measured.
        assert_eq!(
            insert("Records: 3  Duplicates: 0  Warnings: 0", false),
            None
        );
        assert_eq!(insert("Records: 1  Duplicates: 0  Warnings: 0", true), None);
        assert_eq!(
            insert("Records: 1  Duplicates: 1  Warnings: 1", false),
            None
        );
        let why = insert("Records: 3  Duplicates: 1  Warnings: 1", false).unwrap();
        assert!(
            why.contains("1 of the 3 rows") && why.contains("ORDER BY"),
            "{why}"
        );
        let why = insert("Records: 3  Duplicates: 0  Warnings: 0", true).unwrap();
        assert!(why.contains("AUTO_INCREMENT"), "{why}");
        assert_eq!(insert("", true), None);
        let update = |info: &str| order_dependence(OrderCheck::UpdateIgnore, info, false);
        assert_eq!(update("Rows matched: 3  Changed: 3  Warnings: 0"), None);
        assert_eq!(update("Rows matched: 1  Changed: 0  Warnings: 0"), None);
        assert!(update("Rows matched: 3  Changed: 1  Warnings: 0").is_some());
        assert_eq!(
            order_dependence(OrderCheck::None, "Records: 9  Duplicates: 9", true),
            None
        );
    }

    #[test]
    fn calls_a_compound_statement_repeats_are_refused() {
        let refused = |sql: &str| check_write(sql, false, &lit()).refused;
        // Called once: fixed to a literal, as in a statement of its own.
        for sql in [
            "BEGIN NOT ATOMIC INSERT INTO t VALUES (1, UUID()); END",
            "IF 1 THEN INSERT INTO t VALUES (1, UUID_SHORT()), (2, UUID()); END IF",
            "IF (SELECT COUNT(*) FROM t) = 0 THEN INSERT INTO t VALUES (UUID()); END IF",
            "BEGIN NOT ATOMIC DECLARE u CHAR(36) DEFAULT UUID(); INSERT INTO t VALUES (u); END",
            "IF 1 THEN UPDATE t SET at = SYSDATE() WHERE id = 1; END IF",
            "FOR i IN 1..3 DO INSERT INTO t VALUES (i, RAND()); END FOR",
            "IF 1 THEN DELETE FROM t WHERE a > 1 ORDER BY a LIMIT 1; END IF",
            // Ordered by the keys the check asks for.
            "IF 1 THEN DELETE FROM t WHERE a > 1 LIMIT 1; END IF",
            "BEGIN NOT ATOMIC UPDATE t SET a = 1 WHERE a IN (SELECT a FROM u LIMIT 2); END",
        ] {
            assert_eq!(refused(sql), None, "{sql}");
        }
        for sql in [
            "FOR i IN 1..3 DO INSERT INTO t VALUES (i, UUID()); END FOR",
            "BEGIN NOT ATOMIC DECLARE i INT DEFAULT 0; WHILE i < 3 DO \
             INSERT INTO t VALUES (UUID_SHORT()); SET i = i + 1; END WHILE; END",
            "REPEAT INSERT INTO t VALUES (UUID()); UNTIL 1 END REPEAT",
            "IF 1 THEN UPDATE t SET u = UUID(); END IF",
            "IF 1 THEN INSERT INTO t SELECT id, UUID() FROM s; END IF",
            "BEGIN NOT ATOMIC INSERT INTO t VALUES (1, 'a') ON DUPLICATE KEY UPDATE u = UUID(); END",
            "WHILE 0 DO INSERT INTO t VALUES (SYSDATE()); END WHILE",
            "BEGIN NOT ATOMIC UPDATE t SET a = 1 WHERE a IN \
             (SELECT a FROM u JOIN v USING (a) LIMIT 2); END",
        ] {
            assert!(refused(sql).is_some(), "{sql}");
        }
        // Outside a compound statement, the statement's own checks apply (a VALUES list).
        assert_eq!(refused("INSERT INTO t VALUES (UUID()), (UUID())"), None);
    }

    #[test]
    fn context_needs_are_detected() {
        let c = check_write("INSERT INTO t VALUES (RAND())", false, &lit());
        assert!(c.needs_rand_seed && c.refused.is_none());
        // RAND(seed) is deterministic by itself.
        assert!(!check_write("INSERT INTO t VALUES (RAND(3))", false, &lit()).needs_rand_seed);
        let c = check_write("INSERT INTO c (p) VALUES (LAST_INSERT_ID())", true, &lit());
        assert!(c.needs_last_insert_id);
    }

    #[test]
    fn replicated_settings_can_be_read_in_a_write() {
        for sql in [
            "INSERT INTO t VALUES (@@sql_mode, @@session.time_zone, @@timestamp)",
            "INSERT INTO t VALUES (@@SESSION.auto_increment_increment)",
            "INSERT INTO t SELECT * FROM info.schema_x WHERE mysql_ok = 1",
        ] {
            assert_eq!(check_write(sql, false, &lit()).refused, None, "{sql}");
        }
        // The proxy records the connection's LAST_INSERT_ID() for these.
        for sql in [
            "INSERT INTO t VALUES (@@last_insert_id)",
            "INSERT INTO t VALUES (@@identity)",
        ] {
            let c = check_write(sql, false, &lit());
            assert!(c.needs_last_insert_id && c.refused.is_none(), "{sql}");
        }
    }

    #[test]
    fn calls_are_rewritten_to_literals() {
        let c = check_write(
            "INSERT INTO t VALUES (UUID(), UUID_SHORT(), SYSDATE(), sysdate(3))",
            false,
            &lit(),
        );
        assert_eq!(
            c.rewritten.as_deref(),
            Some(
                "INSERT INTO t VALUES ('11111111-2222-4333-8444-555555555555', 42, NOW(), NOW(3))"
            )
        );
    }

    #[test]
    fn database_calls_are_found() {
        assert!(calls_database("CREATE TABLE d.t AS SELECT database() AS d"));
        assert!(calls_database(
            "CREATE TABLE d.t (a INT DEFAULT (SCHEMA ( )))"
        ));
        assert!(!calls_database("CREATE DATABASE d"));
        assert!(!calls_database(
            "CREATE TABLE d.t (database INT, schema INT)"
        ));
    }

    #[test]
    fn database_is_null_in_sessions_without_one() {
        let none = Literals {
            no_database: true,
            ..lit()
        };
        let sql = "INSERT INTO d.t (database, v) VALUES (DATABASE(), schema ( ))";
        assert_eq!(
            check_write(sql, false, &none).rewritten.as_deref(),
            Some("INSERT INTO d.t (database, v) VALUES (NULL, NULL)")
        );
        let c = check_write("UPDATE d.t SET v = ? WHERE w = DATABASE()", true, &none);
        assert_eq!(
            c.rewritten.as_deref(),
            Some("UPDATE d.t SET v = ? WHERE w = ?")
        );
        assert_eq!(c.injected, vec![(1, Injected::Null)]);
        // With a default database followers select the same one first.
        assert_eq!(check_write(sql, false, &lit()).rewritten, None);
    }

    #[test]
    fn prepared_calls_become_placeholders_with_injected_values() {
        let c = check_write(
            "INSERT INTO t VALUES (?, UUID(), '?', ?, UUID_SHORT(), SYSDATE())",
            true,
            &lit(),
        );
        assert_eq!(c.refused, None);
        assert_eq!(
            c.rewritten.as_deref(),
            Some("INSERT INTO t VALUES (?, ?, '?', ?, ?, NOW())")
        );
        let uuid = "11111111-2222-4333-8444-555555555555".to_string();
        assert_eq!(
            c.injected,
            vec![(1, Injected::Text(uuid)), (3, Injected::Unsigned(42))]
        );
        assert_eq!(c.per_row_call, None);
        // Text statements get literals and inject nothing.
        let c = check_write("INSERT INTO t VALUES (?, UUID())", false, &lit());
        assert!(c.injected.is_empty());
    }

    #[test]
    fn calls_evaluated_once_per_row_are_checked_against_the_row_count() {
        let per_row = |sql: &str| check_write(sql, false, &lit()).per_row_call;
        let call = |function, counted| Some(PerRowCall { function, counted });
        for (sql, want) in [
            (
                "UPDATE t SET g = UUID() WHERE id = 1",
                call("UUID", RowsCounted::Matched),
            ),
            (
                "UPDATE t, u SET t.g = UUID_SHORT()",
                call("UUID_SHORT", RowsCounted::Matched),
            ),
            (
                "INSERT INTO t SELECT UUID(), a FROM s",
                call("UUID", RowsCounted::Records),
            ),
            (
                "INSERT INTO t (SELECT UUID(), a FROM s)",
                call("UUID", RowsCounted::Records),
            ),
            (
                "INSERT INTO t VALUES (1, 'a'), (2, 'b') ON DUPLICATE KEY UPDATE g = UUID()",
                call("UUID", RowsCounted::Duplicates),
            ),
            (
                "INSERT INTO t SELECT UUID(), a FROM s ON DUPLICATE KEY UPDATE g = UUID()",
                call("UUID", RowsCounted::Records),
            ),
            // One call per VALUES row (a subquery in a row is that row's): MySQL's result.
            ("INSERT INTO t VALUES (UUID(), 1), (UUID(), 2)", None),
            (
                "INSERT INTO t VALUES ((SELECT MAX(a) FROM s), UUID())",
                None,
            ),
            ("INSERT INTO t SET g = UUID()", None),
            ("DELETE FROM t WHERE g = UUID()", None),
        ] {
            assert_eq!(per_row(sql), want, "{sql}");
        }
        let update = PerRowCall {
            function: "UUID",
            counted: RowsCounted::Matched,
        };
        assert_eq!(
            per_row_dependence(update, "Rows matched: 1  Changed: 1  Warnings: 0"),
            None
        );
        let why = per_row_dependence(update, "Rows matched: 3  Changed: 3  Warnings: 0");
        assert!(why.unwrap().starts_with("3 rows matched"));
        let select = PerRowCall {
            function: "UUID_SHORT",
            counted: RowsCounted::Records,
        };
        assert!(per_row_dependence(select, "Records: 2  Duplicates: 0  Warnings: 0").is_some());
        let odku = PerRowCall {
            function: "UUID",
            counted: RowsCounted::Duplicates,
        };
        assert_eq!(
            per_row_dependence(odku, "Records: 5  Duplicates: 1  Warnings: 0"),
            None
        );
        assert!(per_row_dependence(odku, "Records: 5  Duplicates: 2  Warnings: 0").is_some());
        // A single-row answer has no info: one row.
        assert_eq!(per_row_dependence(update, ""), None);
    }

    #[test]
    fn non_deterministic_writes_are_refused() {
        for (sql, why) in [
            ("UPDATE t SET pos = ROWNUM()", "ROWNUM"),
            ("INSERT INTO t SELECT ROWNUM(), a FROM s", "ROWNUM"),
            (
                "INSERT INTO t SELECT s.* FROM s JOIN u ON u.id = s.id LIMIT 5",
                "ORDER BY",
            ),
            (
                "INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))",
                "LOAD_FILE",
            ),
            (
                "UPDATE t SET a = (@n := @n + 1)",
                "assigns user variable @n",
            ),
            ("INSERT INTO t VALUES (@@hostname)", "hostname"),
            ("INSERT INTO t VALUES (CONNECTION_ID())", "CONNECTION_ID"),
            (
                "INSERT INTO t VALUES (@@pseudo_thread_id)",
                "pseudo_thread_id",
            ),
            ("INSERT INTO t VALUES (@@session.rand_seed1)", "rand_seed1"),
            ("INSERT INTO t VALUES (@@warning_count)", "warning_count"),
            (
                "INSERT INTO t VALUES (@@global.sql_mode)",
                "@@global.sql_mode",
            ),
            (
                "INSERT INTO t VALUES (@@innodb_buffer_pool_size)",
                "innodb_buffer_pool_size",
            ),
            (
                "INSERT INTO t (n) SELECT COUNT(*) FROM information_schema.PROCESSLIST",
                "information_schema",
            ),
            (
                "INSERT INTO t SELECT VARIABLE_VALUE FROM `INFORMATION_SCHEMA`.GLOBAL_STATUS",
                "information_schema",
            ),
            (
                "UPDATE t SET n = (SELECT COUNT(*) FROM mysql.user)",
                "mysql",
            ),
            (
                "INSERT INTO t SELECT * FROM performance_schema.threads",
                "performance_schema",
            ),
            (
                "INSERT INTO done SELECT id FROM jobs FOR UPDATE SKIP LOCKED",
                "SKIP LOCKED",
            ),
            (
                "DELETE FROM jobs WHERE id IN (SELECT id FROM q LOCK IN SHARE MODE SKIP LOCKED)",
                "SKIP LOCKED",
            ),
        ] {
            let c = check_write(sql, false, &lit());
            let r = c.refused.unwrap_or_else(|| panic!("{sql} was not refused"));
            assert!(r.contains(why), "{sql}: {r}");
        }
    }

    #[test]
    fn user_variables_read_by_a_write_are_carried() {
        for (sql, vars) in [
            ("INSERT INTO t VALUES (@x, @X, @'y z')", vec!["x", "'y z'"]),
            ("CALL p(@in, @out)", vec!["in", "out"]),
            ("DELETE FROM t WHERE id = @id AND note = '@not'", vec!["id"]),
        ] {
            let c = check_write(sql, false, &lit());
            assert_eq!(c.refused, None, "{sql}");
            assert_eq!(c.user_vars, vars, "{sql}");
        }
    }

    #[test]
    fn definitions_reading_the_sessions_user_variables_are_refused() {
        for (sql, object) in [
            ("CREATE TABLE c AS SELECT @x AS v", "TABLE"),
            ("CREATE TABLE c AS SELECT @@hostname AS h", "TABLE"),
            (
                "CREATE TRIGGER a BEFORE INSERT ON t FOR EACH ROW SET NEW.who = @audit_user",
                "TRIGGER",
            ),
            (
                "CREATE PROCEDURE p() BEGIN SET @n = 1; INSERT INTO t VALUES (@n + @offset); END",
                "PROCEDURE",
            ),
        ] {
            let why = nondeterministic_definition(sql, object)
                .unwrap_or_else(|| panic!("{sql} was not refused"));
            assert!(
                why.contains("variable @") || why.contains("@@hostname"),
                "{sql}: {why}"
            );
        }
        // Variables the body sets itself are scratch space, the same on every replica; an
        // account's host is no variable.
        for sql in [
            "CREATE DEFINER=`root`@`127.0.0.1` TRIGGER tr BEFORE INSERT ON o FOR EACH ROW \
             SET NEW.amt = NEW.amt * 2",
            "CREATE DEFINER = root@localhost PROCEDURE p() SELECT 1",
            "CREATE DEFINER = 'app'@'%' PROCEDURE p() SELECT 1",
            "CREATE PROCEDURE p() BEGIN SET @n = 1, @m = 2; SELECT COUNT(*) INTO @c, @d FROM t; \
             INSERT INTO t VALUES (@n + @m + @c + @d); SELECT @k := 5; INSERT INTO t VALUES (@k); END",
            "CREATE TRIGGER a BEFORE INSERT ON t FOR EACH ROW BEGIN SET @seen = 1; SET NEW.x = @seen; END",
        ] {
            assert_eq!(nondeterministic_definition(sql, "PROCEDURE"), None, "{sql}");
        }
    }

    #[test]
    fn an_insert_selects_output_orders_what_no_key_can() {
        // Over several tables, or a grouping: at once, no key to read.
        for (sql, want) in [
            (
                "INSERT INTO t SELECT s.a FROM s JOIN u ON u.id = s.id LIMIT 5",
                "INSERT INTO t SELECT s.a FROM s JOIN u ON u.id = s.id ORDER BY 1 LIMIT 5",
            ),
            (
                "INSERT INTO t SELECT ROWNUM(), a FROM s, u ORDER BY id",
                "INSERT INTO t SELECT ROWNUM(), a FROM s, u ORDER BY id, 1, 2 ",
            ),
            (
                "INSERT INTO c (n, e) SELECT name, MAX(email) FROM s GROUP BY name ORDER BY name",
                "INSERT INTO c (n, e) SELECT name, MAX(email) FROM s GROUP BY name ORDER BY \
                 name, 1, 2 ",
            ),
        ] {
            let c = check_write(sql, false, &lit());
            assert_eq!(c.refused, None, "{sql}");
            assert!(c.needs_primary_keys.is_empty(), "{sql}");
            assert_eq!(c.order_check, OrderCheck::None, "{sql}");
            assert_eq!(c.rewritten.as_deref(), Some(want), "{sql}");
        }
        // One table: its key is read first; a table without one is then ordered by output.
        let sql = "INSERT INTO c (name, email) SELECT name, email FROM staging ORDER BY name";
        let first = check_write(sql, false, &lit());
        assert_eq!(first.needs_primary_keys, [(None, "staging".to_string())]);
        let none: Vec<Vec<String>> = vec![Vec::new()];
        let keyless = Literals {
            primary_keys: Some(&none),
            ..lit()
        };
        let again = check_write(sql, false, &keyless);
        assert_eq!(again.refused, None);
        assert_eq!(
            again.rewritten.as_deref(),
            Some(
                "INSERT INTO c (name, email) SELECT name, email FROM staging ORDER BY name, 1, 2 "
            )
        );
        let sql = "INSERT INTO c (name) SELECT name FROM staging LIMIT 3";
        let again = check_write(sql, false, &keyless);
        assert_eq!(
            (again.refused, again.rewritten.as_deref()),
            (
                None,
                Some("INSERT INTO c (name) SELECT name FROM staging ORDER BY 1 LIMIT 3")
            )
        );
        // A window ordered by its table's key, and the LIMIT over it by the output.
        let sql = "INSERT INTO t SELECT a, ROW_NUMBER() OVER (ORDER BY a) FROM s LIMIT 5";
        let first = check_write(sql, false, &lit());
        assert_eq!(first.refused, None);
        assert_eq!(first.needs_primary_keys, [(None, "s".to_string())]);
    }

    #[test]
    fn a_limit_counts_only_with_its_own_order_by() {
        for sql in [
            "DELETE FROM b WHERE EXISTS (SELECT 1 AS a FROM b U0 INNER JOIN o ON U0.id = o.b \
             WHERE U0.id = b.id AND o.t = 3 LIMIT 1)",
            "UPDATE t SET a = 1 WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.id = t.id LIMIT 1)",
            "DELETE FROM t WHERE a = (SELECT a FROM s ORDER BY id LIMIT 1)",
            "UPDATE t SET a = 1 ORDER BY id LIMIT 3",
        ] {
            assert_eq!(check_write(sql, false, &lit()).refused, None, "{sql}");
        }
        // Unordered, and no one table whose key could order them.
        for sql in [
            "DELETE FROM t WHERE a = (SELECT a FROM s, u WHERE s.id = u.id LIMIT 1)",
            "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM t UNION SELECT id FROM u \
             LIMIT 5) d) ORDER BY id",
            "UPDATE t SET a = (SELECT GROUP_CONCAT(b LIMIT 2) FROM s ORDER BY b)",
        ] {
            let why = check_write(sql, false, &lit()).refused;
            assert!(why.is_some_and(|w| w.contains("LIMIT")), "{sql}");
        }
    }

    #[test]
    fn an_unordered_limit_of_one_table_is_ordered_by_its_primary_key() {
        let key = vec!["id".to_string(), "odd`name".to_string()];
        let keys = vec![key; 3];
        let keyed = Literals {
            primary_keys: Some(&keys),
            ..lit()
        };
        let none: Vec<Vec<String>> = vec![Vec::new(); 3];
        for (sql, target, ordered) in [
            (
                "DELETE FROM sessions WHERE expires < NOW() LIMIT 1000",
                (None, "sessions"),
                "DELETE FROM sessions WHERE expires < NOW() ORDER BY `id`, `odd``name` LIMIT 1000",
            ),
            (
                "DELETE LOW_PRIORITY QUICK IGNORE FROM `d`.`t` WHERE (((`id` >= ?))) LIMIT ?",
                (Some("d"), "t"),
                "DELETE LOW_PRIORITY QUICK IGNORE FROM `d`.`t` WHERE (((`id` >= ?))) \
                 ORDER BY `id`, `odd``name` LIMIT ?",
            ),
            (
                "UPDATE jobs AS j SET state = 'x' WHERE state = 'new' LIMIT 5",
                (None, "jobs"),
                "UPDATE jobs AS j SET state = 'x' WHERE state = 'new' ORDER BY `id`, `odd``name` \
                 LIMIT 5",
            ),
            (
                "DELETE FROM t ORDER BY k LIMIT 2",
                (None, "t"),
                "DELETE FROM t ORDER BY k , `id`, `odd``name` LIMIT 2",
            ),
            (
                "SET STATEMENT sql_mode = '' FOR DELETE FROM d.t LIMIT 3",
                (Some("d"), "t"),
                "SET STATEMENT sql_mode = '' FOR DELETE FROM d.t ORDER BY `id`, `odd``name` \
                 LIMIT 3",
            ),
        ] {
            let first = check_write(sql, false, &lit());
            assert_eq!(first.refused, None, "{sql}");
            let want = (target.0.map(str::to_string), target.1.to_string());
            assert_eq!(first.needs_primary_keys, vec![want], "{sql}");
            let again = check_write(sql, false, &keyed);
            assert_eq!(
                (again.refused, again.needs_primary_keys),
                (None, vec![]),
                "{sql}"
            );
            assert_eq!(again.rewritten, Some(one_spaced(ordered)), "{sql}");
        }
        // An ORDER BY that need not be unique gets the key as its last tiebreaker; without
        // a key it is taken at its word, as before.
        let sql = "DELETE FROM logs WHERE level = ? ORDER BY created DESC LIMIT 1000";
        let first = check_write(sql, true, &lit());
        assert_eq!(first.refused, None);
        assert_eq!(first.needs_primary_keys, vec![table(None, "logs")]);
        assert_eq!(
            check_write(sql, true, &keyed).rewritten.as_deref(),
            Some(
                "DELETE FROM logs WHERE level = ? ORDER BY created DESC , `id`, `odd``name` \
                 LIMIT 1000"
            )
        );
        let keyless = check_write(
            sql,
            true,
            &Literals {
                primary_keys: Some(&none),
                ..lit()
            },
        );
        assert_eq!((keyless.refused, keyless.rewritten), (None, None));
        // Without a LIMIT of its own, nothing to look up.
        for sql in [
            "DELETE FROM logs ORDER BY created",
            "UPDATE t SET a = 1 WHERE EXISTS (SELECT 1 FROM s WHERE s.id = t.id LIMIT 1)",
        ] {
            assert_eq!(
                check_write(sql, false, &lit()).needs_primary_keys,
                vec![],
                "{sql}"
            );
        }
        // INSERT … SELECT from one table: the key, qualified, ends its ORDER BY or orders
        // its LIMIT.
        let single = |k: &str| Some((None, k.to_string()));
        for (sql, target, ordered) in [
            (
                "INSERT INTO archive SELECT * FROM logs WHERE created < ? ORDER BY created LIMIT 1000",
                single("logs"),
                "INSERT INTO archive SELECT * FROM logs WHERE created < ? ORDER BY created , \
                 `logs`.`id`, `logs`.`odd``name` LIMIT 1000",
            ),
            (
                "INSERT INTO a (k) SELECT k FROM d.s AS x ORDER BY k",
                Some((Some("d".to_string()), "s".to_string())),
                "INSERT INTO a (k) SELECT k FROM d.s AS x ORDER BY k, `x`.`id`, `x`.`odd``name`",
            ),
            (
                "INSERT INTO t SELECT * FROM d.s LIMIT 5",
                Some((Some("d".to_string()), "s".to_string())),
                "INSERT INTO t SELECT * FROM d.s ORDER BY `d`.`s`.`id`, `d`.`s`.`odd``name` LIMIT 5",
            ),
            (
                "INSERT INTO t SELECT a FROM s y ORDER BY a DESC ON DUPLICATE KEY UPDATE v = 1",
                single("s"),
                "INSERT INTO t SELECT a FROM s y ORDER BY a DESC , `y`.`id`, `y`.`odd``name` \
                 ON DUPLICATE KEY UPDATE v = 1",
            ),
            (
                "INSERT INTO t SELECT a FROM s FORCE INDEX (k) ORDER BY a;",
                single("s"),
                "INSERT INTO t SELECT a FROM s FORCE INDEX (k) ORDER BY a, `s`.`id`, \
                 `s`.`odd``name` ;",
            ),
            // No order of its own: the key becomes its ORDER BY, in front of what follows
            // a SELECT's clauses.
            (
                "INSERT INTO t SELECT a FROM s",
                single("s"),
                "INSERT INTO t SELECT a FROM s ORDER BY `s`.`id`, `s`.`odd``name`",
            ),
            (
                "INSERT INTO t (data) SELECT m.data FROM manual_pk m WHERE m.data IN (?, ?);",
                single("manual_pk"),
                "INSERT INTO t (data) SELECT m.data FROM manual_pk m WHERE m.data IN (?, ?) \
                 ORDER BY `m`.`id`, `m`.`odd``name` ;",
            ),
            (
                "INSERT IGNORE INTO t SELECT * FROM d.s WHERE (a > 1) FOR UPDATE",
                Some((Some("d".to_string()), "s".to_string())),
                "INSERT IGNORE INTO t SELECT * FROM d.s WHERE (a > 1) ORDER BY `d`.`s`.`id`, \
                 `d`.`s`.`odd``name` FOR UPDATE",
            ),
            (
                "INSERT INTO t SELECT a, b FROM s ON DUPLICATE KEY UPDATE b = VALUES(b)",
                single("s"),
                "INSERT INTO t SELECT a, b FROM s ORDER BY `s`.`id`, `s`.`odd``name` ON \
                 DUPLICATE KEY UPDATE b = VALUES(b)",
            ),
            (
                "REPLACE INTO t SELECT a FROM s AS x LOCK IN SHARE MODE",
                single("s"),
                "REPLACE INTO t SELECT a FROM s AS x ORDER BY `x`.`id`, `x`.`odd``name` LOCK IN \
                 SHARE MODE",
            ),
            (
                "INSERT INTO t SELECT a FROM s RETURNING id",
                single("s"),
                "INSERT INTO t SELECT a FROM s ORDER BY `s`.`id`, `s`.`odd``name` RETURNING id",
            ),
            (
                "SET STATEMENT sql_mode = '' FOR INSERT INTO t SELECT a FROM s",
                single("s"),
                "SET STATEMENT sql_mode = '' FOR INSERT INTO t SELECT a FROM s ORDER BY \
                 `s`.`id`, `s`.`odd``name`",
            ),
        ] {
            let first = check_write(sql, false, &lit());
            assert_eq!(first.refused, None, "{sql}");
            assert_eq!(first.needs_primary_keys, Vec::from_iter(target), "{sql}");
            let again = check_write(sql, false, &keyed);
            let got = again.rewritten.unwrap_or_default();
            assert_eq!(one_spaced(&got), one_spaced(ordered), "{sql}");
            assert_eq!(again.order_check, OrderCheck::None, "{sql}");
        }
        for sql in [
            "INSERT INTO t SELECT a FROM s, u ORDER BY a LIMIT 2",
            "INSERT INTO t SELECT s.a FROM s JOIN u ON u.id = s.id ORDER BY a",
            "INSERT INTO t SELECT DISTINCT a FROM s ORDER BY a",
            "INSERT INTO t SELECT a FROM s WHERE a IN (SELECT a FROM u) ORDER BY a",
            "INSERT INTO t SELECT a FROM s WHERE a IN (SELECT a FROM u)",
            "INSERT INTO t SELECT a FROM s, u",
            "INSERT INTO t SELECT 1 FROM DUAL",
            "INSERT INTO t SELECT 1",
            // Read in key order already (pt-online-schema-change's copy).
            "INSERT INTO t SELECT * FROM s FORCE INDEX (PRIMARY) WHERE id < 9",
            "INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(
                check_write(sql, false, &lit()).needs_primary_keys,
                vec![],
                "{sql}"
            );
        }
        // Ordered, UPDATE IGNORE's skipped rows no longer depend on the plan.
        let ignore = check_write("UPDATE IGNORE t SET k = 1 LIMIT 5", false, &keyed);
        assert_eq!(ignore.order_check, OrderCheck::None);
        assert_eq!(
            check_write("UPDATE IGNORE t SET k = 1 LIMIT 5", false, &lit()).order_check,
            OrderCheck::UpdateIgnore
        );
        // A table without a primary key: refused as before, saying why.
        let keyless = Literals {
            primary_keys: Some(&none),
            ..lit()
        };
        // An unordered INSERT … SELECT from a table without one stays checked after it ran.
        let copy = check_write("INSERT INTO t SELECT a FROM s", false, &keyless);
        assert_eq!(
            (copy.refused, copy.rewritten, copy.order_check),
            (None, None, OrderCheck::InsertSelect)
        );
        let why = check_write("UPDATE t SET a = 1 LIMIT 1", false, &keyless).refused;
        assert!(why.is_some_and(|w| w.contains("no primary key")));
        // Not one table, or a subquery's LIMIT unordered too: refused without a lookup.
        for sql in [
            "UPDATE t, u SET t.a = 1 WHERE t.id = u.id LIMIT 1",
            "UPDATE t JOIN u ON t.id = u.id SET t.a = 1 LIMIT 1",
            "DELETE t FROM t WHERE a = 1 LIMIT 1",
            "DELETE FROM t PARTITION (p1) WHERE a = 1 LIMIT 1",
            "DELETE FROM t WHERE a = (SELECT a FROM s JOIN u USING (id) LIMIT 1) LIMIT 2",
        ] {
            let c = check_write(sql, false, &lit());
            assert!(c.needs_primary_keys.is_empty(), "{sql}");
            assert!(c.refused.is_some_and(|w| w.contains("LIMIT")), "{sql}");
        }
    }

    /// A subquery's LIMIT picks rows too (`UPDATE … WHERE id IN (SELECT id FROM (SELECT id
    /// FROM jobs ORDER BY priority LIMIT 5) d)`, the batch and queue forms MariaDB allows):
    /// with ties in its ORDER BY, or none, each replica's plan could pick other rows and
    /// change as many, unseen by the affected-row check. The subquery's table's key, qualified
    /// by its alias, orders it or breaks its ties.
    #[test]
    fn a_key_after_the_last_word_is_kept_before_trailing_spaces_and_comments() {
        let keys = vec![vec!["id".to_string()]];
        let keyed = Literals {
            primary_keys: Some(&keys),
            ..lit()
        };
        for (sql, want) in [
            (
                "INSERT INTO a SELECT * FROM b ORDER BY v\n  ",
                "INSERT INTO a SELECT * FROM b ORDER BY v, `b`.`id` \n  ",
            ),
            (
                "INSERT INTO a SELECT * FROM b ORDER BY v /* c */",
                "INSERT INTO a SELECT * FROM b ORDER BY v, `b`.`id`  /* c */",
            ),
            (
                "INSERT INTO a SELECT * FROM b ORDER BY v -- c",
                "INSERT INTO a SELECT * FROM b ORDER BY v, `b`.`id`  -- c",
            ),
        ] {
            let c = check_write(sql, false, &keyed);
            assert_eq!(c.rewritten.as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn tie_dependent_windows_in_writes_are_ordered_by_the_primary_key() {
        let keys = id_then_pair_keys();
        let keyed = Literals {
            primary_keys: Some(&keys),
            ..lit()
        };
        for (sql, tables, ordered) in [
            (
                "INSERT INTO r SELECT id, ROW_NUMBER() OVER (PARTITION BY g ORDER BY pri) FROM t",
                vec![table(None, "t")],
                "INSERT INTO r SELECT id, ROW_NUMBER() OVER (PARTITION BY g ORDER BY pri , \
                 `t`.`id` ) FROM t",
            ),
            (
                "UPDATE t JOIN (SELECT id, LAG(v) OVER () p, SUM(v) OVER (ORDER BY v ROWS 2 \
                 PRECEDING) s FROM d.s x) d USING (id) SET t.v = d.p + d.s",
                vec![table(Some("d"), "s"), table(Some("d"), "s")],
                "UPDATE t JOIN (SELECT id, LAG(v) OVER ( ORDER BY `x`.`id` ) p, SUM(v) OVER \
                 (ORDER BY v , `x`.`k1`, `x`.`k2` ROWS 2 PRECEDING) s FROM d.s x) d USING (id) \
                 SET t.v = d.p + d.s",
            ),
        ] {
            let first = check_write(sql, false, &lit());
            assert_eq!(first.refused, None, "{sql}");
            assert_eq!(first.needs_primary_keys, tables, "{sql}");
            let again = check_write(sql, false, &keyed);
            assert_eq!(again.refused, None, "{sql}");
            let got = again.rewritten.unwrap_or_default();
            assert_eq!(one_spaced(&got), one_spaced(ordered), "{sql}");
        }
        // Without a key to order by, an unordered one is refused and an ordered one kept.
        let none: Vec<Vec<String>> = vec![Vec::new()];
        let keyless = Literals {
            primary_keys: Some(&none),
            ..lit()
        };
        let sql = "INSERT INTO r SELECT id, ROW_NUMBER() OVER () FROM t";
        let why = check_write(sql, false, &keyless).refused;
        assert!(why.is_some_and(|w| w.contains("window function")), "{sql}");
        let sql = "INSERT INTO r SELECT id, ROW_NUMBER() OVER (ORDER BY v) FROM t";
        let c = check_write(sql, false, &keyless);
        assert_eq!((c.refused, c.rewritten), (None, None), "{sql}");
        // Refused before any lookup: nothing could order it.
        let sql = "INSERT INTO r SELECT t.id, NTILE(4) OVER () FROM t JOIN u USING (id)";
        let c = check_write(sql, false, &lit());
        assert!(
            c.refused.is_some() && c.needs_primary_keys.is_empty(),
            "{sql}"
        );
        // A plain INSERT … VALUES is not looked at.
        let sql = "INSERT INTO r VALUES (1, 'ROW_NUMBER() OVER ()')";
        let c = check_write(sql, false, &lit());
        assert!(
            c.refused.is_none() && c.needs_primary_keys.is_empty(),
            "{sql}"
        );
    }

    #[test]
    fn a_subquerys_limit_of_one_table_is_ordered_by_its_primary_key() {
        let keys = id_then_pair_keys();
        let keyed = Literals {
            primary_keys: Some(&keys),
            ..lit()
        };
        for (sql, tables, ordered) in [
            (
                "UPDATE jobs SET owner = ? WHERE id IN (SELECT id FROM (SELECT id FROM jobs \
                 WHERE state = 'new' ORDER BY priority DESC LIMIT 5) d)",
                vec![table(None, "jobs")],
                "UPDATE jobs SET owner = ? WHERE id IN (SELECT id FROM (SELECT id FROM jobs \
                 WHERE state = 'new' ORDER BY priority DESC , `jobs`.`id` LIMIT 5) d)",
            ),
            (
                "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM q.t AS x LIMIT 5) d)",
                vec![table(Some("q"), "t")],
                "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM q.t AS x \
                 ORDER BY `x`.`id` LIMIT 5) d)",
            ),
            (
                "UPDATE t SET a = (SELECT a FROM s ORDER BY id LIMIT 1) LIMIT 2",
                vec![table(None, "t"), table(None, "s")],
                "UPDATE t SET a = (SELECT a FROM s ORDER BY id , `s`.`k1`, `s`.`k2` LIMIT 1) \
                 ORDER BY `id` LIMIT 2",
            ),
            (
                "UPDATE t JOIN (SELECT id FROM t ORDER BY v LIMIT 3) d USING (id) SET t.v = 0",
                vec![table(None, "t")],
                "UPDATE t JOIN (SELECT id FROM t ORDER BY v , `t`.`id` LIMIT 3) d USING (id) \
                 SET t.v = 0",
            ),
            (
                "INSERT INTO a SELECT * FROM (SELECT * FROM b o ORDER BY v LIMIT 2) x \
                 UNION ALL (SELECT * FROM c LIMIT 1)",
                vec![table(None, "b"), table(None, "c")],
                "INSERT INTO a SELECT * FROM (SELECT * FROM b o ORDER BY v , `o`.`id` LIMIT 2) x \
                 UNION ALL (SELECT * FROM c ORDER BY `c`.`k1`, `c`.`k2` LIMIT 1)",
            ),
        ] {
            let first = check_write(sql, true, &lit());
            assert_eq!(first.refused, None, "{sql}");
            assert_eq!(first.needs_primary_keys, tables, "{sql}");
            let again = check_write(sql, true, &keyed);
            assert_eq!(
                (again.refused, again.needs_primary_keys),
                (None, vec![]),
                "{sql}"
            );
            let got = again.rewritten.unwrap_or_default();
            assert_eq!(one_spaced(&got), one_spaced(ordered), "{sql}");
        }
        // Aggregates that join values in read order get the key of the table their SELECT
        // reads, grouped or not.
        for (sql, tables, ordered) in [
            (
                "INSERT INTO s SELECT g, GROUP_CONCAT(tag) FROM t GROUP BY g",
                vec![table(None, "t")],
                "INSERT INTO s SELECT g, GROUP_CONCAT(tag ORDER BY `t`.`id` ) FROM t GROUP BY g",
            ),
            (
                "UPDATE p SET tags = (SELECT GROUP_CONCAT(tag ORDER BY w DESC SEPARATOR ';') \
                 FROM d.t x WHERE x.p = p.id), j = (SELECT JSON_ARRAYAGG(v) FROM u) WHERE id = 1",
                vec![table(Some("d"), "t"), table(None, "u")],
                "UPDATE p SET tags = (SELECT GROUP_CONCAT(tag ORDER BY w DESC , `x`.`id` SEPARATOR \
                 ';') FROM d.t x WHERE x.p = p.id), j = (SELECT JSON_ARRAYAGG(v ORDER BY \
                 `u`.`k1`, `u`.`k2` ) FROM u) WHERE id = 1",
            ),
        ] {
            let first = check_write(sql, false, &lit());
            assert_eq!(first.refused, None, "{sql}");
            assert_eq!(first.needs_primary_keys, tables, "{sql}");
            let again = check_write(sql, false, &keyed);
            let got = again.rewritten.unwrap_or_default();
            assert_eq!(one_spaced(&got), one_spaced(ordered), "{sql}");
        }
        // DISTINCT (the server sorts the values), over a join, or in a plain INSERT: nothing.
        for sql in [
            "INSERT INTO s SELECT g, GROUP_CONCAT(DISTINCT tag) FROM t GROUP BY g",
            "INSERT INTO s SELECT t.g, GROUP_CONCAT(u.tag) FROM t JOIN u USING (id) GROUP BY t.g",
            "INSERT INTO s VALUES (1, 'GROUP_CONCAT(x)')",
        ] {
            let c = check_write(sql, false, &lit());
            assert!(c.needs_primary_keys.is_empty(), "{sql}");
            assert_eq!(c.refused, None, "{sql}");
        }
        // An unordered subquery LIMIT on a table without a key is refused, saying why; an
        // ordered one is taken at its word.
        let none: Vec<Vec<String>> = vec![Vec::new(); 2];
        let keyless = Literals {
            primary_keys: Some(&none),
            ..lit()
        };
        let sql = "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM s LIMIT 5) d)";
        let why = check_write(sql, false, &keyless).refused;
        assert!(why.is_some_and(|w| w.contains("no primary key")), "{sql}");
        let sql =
            "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM s ORDER BY v LIMIT 5) d)";
        let c = check_write(sql, false, &keyless);
        assert_eq!((c.refused, c.rewritten), (None, None), "{sql}");
        // Inside a compound statement its statements are ordered as a program's body is
        // (`programs`); a LIMIT over a join there is still refused.
        let sql = "BEGIN NOT ATOMIC DELETE FROM t WHERE a = (SELECT a FROM s LIMIT 1);\n\
                   UPDATE t SET a = 0 ORDER BY b LIMIT 2 ; END";
        let first = check_write(sql, false, &lit());
        assert_eq!(first.refused, None, "{sql}");
        assert_eq!(
            first.needs_primary_keys,
            [table(None, "s"), table(None, "t")]
        );
        let keys = vec![vec!["id".to_string()], vec!["k".to_string()]];
        let keyed = Literals {
            primary_keys: Some(&keys),
            ..lit()
        };
        let again = check_write(sql, false, &keyed);
        assert_eq!(
            again.rewritten.as_deref().map(one_spaced).as_deref(),
            Some(
                "BEGIN NOT ATOMIC DELETE FROM t WHERE a = (SELECT a FROM s ORDER BY `s`.`id` \
                 LIMIT 1); UPDATE t SET a = 0 ORDER BY b , `t`.`k` LIMIT 2 ; END"
            )
        );
        let sql = "BEGIN NOT ATOMIC DELETE FROM t WHERE a = \
                   (SELECT a FROM s JOIN u USING (a) LIMIT 1); END";
        let why = check_write(sql, false, &lit()).refused;
        assert!(why.is_some_and(|w| w.contains("compound")), "{sql}");
    }
}
