//! Whether a write's text may read the server's clock. The proxy fixes the clock (`SET
//! timestamp`) before each write on the primary and carries it to the followers, because
//! NOW(), CURRENT_TIMESTAMP and the columns that default to them must come out the same
//! everywhere. A write that reads no clock does not need it: for sysbench's statements that
//! is one command fewer per statement on every replica (measured: 7–10 % more write TPS).
//!
//! The text is only half the answer (a column default, an ON UPDATE, a trigger or a virtual
//! column may read the clock too: `backend::schema_facts` knows the tables), and it is
//! judged conservatively: any call this module does not know to be clock-free (a stored
//! function, a sequence, a new built-in), any `@@variable`, any statement that is not a
//! plain INSERT/REPLACE/UPDATE/DELETE counts as reading it.
//!
//! The same reading tells whether a write may run stored code (`may_run_stored_code`),
//! which may change tables its text does not name.
//!
//! Pure: no I/O. Owns: `may_read_clock`, `may_run_stored_code`, `functions_called`. May import: sql::lexer.

use super::lexer::{Lexer, Tok};

/// Words that read the clock with or without parentheses.
const CLOCK_WORDS: &[&str] = &[
    "CURDATE",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURTIME",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "NOW",
    "SYSDATE",
    "UNIX_TIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
];

/// Built-in functions whose result depends only on their arguments and the session's
/// replicated settings (time_zone for the date functions, carried in every record), or
/// whose other inputs the record carries (RAND's seeds, LAST_INSERT_ID) or the proxy
/// rewrites to literals (UUID, UUID_SHORT).
const CLOCK_FREE_FUNCTIONS: &[&str] = &[
    "ABS",
    "ACOS",
    "ADDDATE",
    "ASCII",
    "ASIN",
    "ATAN",
    "ATAN2",
    "AVG",
    "BIN",
    "BIT_AND",
    "BIT_COUNT",
    "BIT_LENGTH",
    "BIT_OR",
    "BIT_XOR",
    "CAST",
    "CEIL",
    "CEILING",
    "CHAR",
    "CHARACTER_LENGTH",
    "CHAR_LENGTH",
    "COALESCE",
    "CONCAT",
    "CONCAT_WS",
    "CONV",
    "CONVERT",
    "CONVERT_TZ",
    "COS",
    "COT",
    "COUNT",
    "CRC32",
    "DATE",
    "DATEDIFF",
    "DATE_ADD",
    "DATE_FORMAT",
    "DATE_SUB",
    "DAY",
    "DAYNAME",
    "DAYOFMONTH",
    "DAYOFWEEK",
    "DAYOFYEAR",
    "DEGREES",
    "ELT",
    "EXP",
    "EXTRACT",
    "FIELD",
    "FIND_IN_SET",
    "FLOOR",
    "FORMAT",
    "FROM_BASE64",
    "FROM_DAYS",
    "FROM_UNIXTIME",
    "GREATEST",
    "GROUP_CONCAT",
    "HEX",
    "HOUR",
    "IF",
    "IFNULL",
    "INSERT",
    "INSTR",
    "INTERVAL",
    "ISNULL",
    "JSON_ARRAY",
    "JSON_ARRAY_APPEND",
    "JSON_ARRAY_INSERT",
    "JSON_COMPACT",
    "JSON_CONTAINS",
    "JSON_CONTAINS_PATH",
    "JSON_EXTRACT",
    "JSON_INSERT",
    "JSON_KEYS",
    "JSON_LENGTH",
    "JSON_MERGE",
    "JSON_MERGE_PATCH",
    "JSON_MERGE_PRESERVE",
    "JSON_OBJECT",
    "JSON_QUERY",
    "JSON_QUOTE",
    "JSON_REMOVE",
    "JSON_REPLACE",
    "JSON_SET",
    "JSON_TYPE",
    "JSON_UNQUOTE",
    "JSON_VALID",
    "JSON_VALUE",
    "LAST_DAY",
    "LAST_INSERT_ID",
    "LCASE",
    "LEAST",
    "LEFT",
    "LENGTH",
    "LN",
    "LOCATE",
    "LOG",
    "LOG10",
    "LOG2",
    "LOWER",
    "LPAD",
    "LTRIM",
    "MAKEDATE",
    "MAKETIME",
    "MAX",
    "MD5",
    "MICROSECOND",
    "MID",
    "MIN",
    "MINUTE",
    "MOD",
    "MONTH",
    "MONTHNAME",
    "NULLIF",
    "OCT",
    "OCTET_LENGTH",
    "ORD",
    "PERIOD_ADD",
    "PERIOD_DIFF",
    "PI",
    "POSITION",
    "POW",
    "POWER",
    "QUARTER",
    "QUOTE",
    "RADIANS",
    "RAND",
    "REGEXP_INSTR",
    "REGEXP_REPLACE",
    "REGEXP_SUBSTR",
    "REPEAT",
    "REPLACE",
    "REVERSE",
    "RIGHT",
    "ROUND",
    "RPAD",
    "RTRIM",
    "SECOND",
    "SEC_TO_TIME",
    "SHA",
    "SHA1",
    "SHA2",
    "SIGN",
    "SIN",
    "SPACE",
    "SQRT",
    "STRCMP",
    "STR_TO_DATE",
    "SUBDATE",
    "SUBSTR",
    "SUBSTRING",
    "SUBSTRING_INDEX",
    "SUM",
    "TAN",
    "TIME",
    "TIMEDIFF",
    "TIMESTAMPADD",
    "TIMESTAMPDIFF",
    "TIME_FORMAT",
    "TIME_TO_SEC",
    "TO_BASE64",
    "TO_DAYS",
    "TO_SECONDS",
    "TRIM",
    "TRUNCATE",
    "UCASE",
    "UNHEX",
    "UPPER",
    "UUID",
    "UUID_SHORT",
    "WEEK",
    "WEEKDAY",
    "WEEKOFYEAR",
    "YEAR",
    "YEARWEEK",
];

/// Keywords a parenthesis may follow without being a call.
const NOT_CALLS: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "AS",
    "BETWEEN",
    "BY",
    "ELSE",
    "EXISTS",
    "FORCE",
    "FROM",
    "IGNORE",
    "IN",
    "INDEX",
    "IS",
    "JOIN",
    "KEY",
    "LIKE",
    "NOT",
    "ON",
    "OR",
    "PARTITION",
    "ROW",
    "SELECT",
    "SET",
    "SOME",
    "THEN",
    "UNION",
    "USE",
    "USING",
    "VALUE",
    "VALUES",
    "WHEN",
    "WHERE",
    "XOR",
];

/// Words after which a name (maybe `db.`-qualified) is a table, so `name(` is its column
/// list (`INSERT INTO t (a, b)`), not a call.
const BEFORE_TABLE: &[&str] = &[
    "DELAYED",
    "HIGH_PRIORITY",
    "IGNORE",
    "INSERT",
    "INTO",
    "LOW_PRIORITY",
    "REPLACE",
];

fn listed(list: &[&str], word: &str) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Whether executing `sql` may read the server's clock, judged from its text alone (the
/// tables it names are the caller's half: see the module header). `true` when unsure.
pub fn may_read_clock(sql: &str) -> bool {
    may_call_beyond(sql, CLOCK_WORDS)
}

/// Whether executing `sql` may run more than built-in functions (a stored function, a
/// sequence), which may change tables the statement does not name. `true` when unsure, and
/// for anything but a plain INSERT/REPLACE/UPDATE/DELETE.
pub fn may_run_stored_code(sql: &str) -> bool {
    may_call_beyond(sql, &[])
}

/// Words a parenthesis follows in a stored program's body without calling a function: data
/// types (`DECLARE d DECIMAL(10, 2)`) and control flow (`WHILE (…) DO`).
const PROGRAM_NOT_CALLS: &[&str] = &[
    "BIGINT",
    "BINARY",
    "BIT",
    "BLOB",
    "CASE",
    "DEC",
    "DECIMAL",
    "DOUBLE",
    "ELSEIF",
    "FLOAT",
    "INT",
    "INTEGER",
    "MEDIUMINT",
    "NUMERIC",
    "OVER",
    "REAL",
    "RETURN",
    "SMALLINT",
    "TEXT",
    "TINYINT",
    "UNTIL",
    "VARBINARY",
    "VARCHAR",
    "WHILE",
];

/// Words after which `name(` is a table, a constraint or a procedure, not a function call.
const BEFORE_NON_FUNCTION: &[&str] = &["CALL", "REFERENCES", "TABLE"];

/// The stored functions a stored program's `body` may call, also from strings it may run
/// as dynamic SQL: each `[db.]name(` not known to be a built-in or a keyword (unqualified
/// names are the caller's to resolve). Errs on the side of listing: a name that is no
/// stored function costs the caller a lookup, one missed would leave reads unseen.
pub fn functions_called(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    collect_function_calls(body, true, &mut out);
    out
}

fn collect_function_calls(sql: &str, with_strings: bool, out: &mut Vec<(Option<String>, String)>) {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    for (i, t) in toks.iter().enumerate() {
        let name = match *t {
            Tok::Str(quoted) if with_strings && quoted.len() >= 2 => {
                collect_function_calls(&quoted[1..quoted.len() - 1], false, out);
                continue;
            }
            Tok::Word(w) | Tok::Quoted(w) => w,
            _ => continue,
        };
        if toks.get(i + 1) != Some(&Tok::Punct('(')) {
            continue;
        }
        let schema = match (i.checked_sub(2).map(|p| &toks[p]), i.checked_sub(1)) {
            (Some(Tok::Word(db) | Tok::Quoted(db)), Some(dot)) if toks[dot] == Tok::Punct('.') => {
                Some(*db)
            }
            _ => None,
        };
        let builtin = matches!(t, Tok::Word(_))
            && schema.is_none()
            && [
                CLOCK_FREE_FUNCTIONS,
                CLOCK_WORDS,
                NOT_CALLS,
                PROGRAM_NOT_CALLS,
                BEFORE_TABLE,
            ]
            .iter()
            .any(|list| listed(list, name));
        let before = i.checked_sub(if schema.is_some() { 3 } else { 1 });
        let not_a_call = before.is_some_and(|p| {
            matches!(toks[p], Tok::Word(w) if listed(BEFORE_TABLE, w) || listed(BEFORE_NON_FUNCTION, w))
        });
        if !builtin && !not_a_call {
            let call = (schema.map(str::to_string), name.to_string());
            if !out.contains(&call) {
                out.push(call);
            }
        }
    }
}

/// Whether `sql` is not plain DML, or calls something not known to be a built-in free of
/// the clock, or uses a word of `refused` or a `@@variable`.
fn may_call_beyond(sql: &str, refused: &[&str]) -> bool {
    let toks: Vec<Tok<'_>> = Lexer::new(sql).map(|t| t.tok).collect();
    let plain_dml = toks.first().is_some_and(|t| {
        t.is_word("INSERT") || t.is_word("REPLACE") || t.is_word("UPDATE") || t.is_word("DELETE")
    });
    if !plain_dml {
        return true;
    }
    for (i, t) in toks.iter().enumerate() {
        let name = match *t {
            Tok::SysVar(_) => return true,
            Tok::Word(w) if listed(refused, w) => return true,
            Tok::Word(w) | Tok::Quoted(w) => w,
            _ => continue,
        };
        if toks.get(i + 1) != Some(&Tok::Punct('(')) {
            continue;
        }
        let quoted = matches!(t, Tok::Quoted(_));
        let builtin = listed(CLOCK_FREE_FUNCTIONS, name) || listed(CLOCK_WORDS, name);
        if !quoted && (listed(NOT_CALLS, name) || builtin) {
            continue;
        }
        // `INTO t (…)` or `INTO db.t (…)`: a column list.
        let before_name = if i >= 2 && toks[i - 1] == Tok::Punct('.') {
            i.checked_sub(3)
        } else {
            i.checked_sub(1)
        };
        let table =
            before_name.is_some_and(|p| matches!(toks[p], Tok::Word(w) if listed(BEFORE_TABLE, w)));
        if !table {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysbench_and_orm_writes_read_no_clock() {
        for sql in [
            "UPDATE sbtest1 SET k=k+1 WHERE id=?",
            "UPDATE sbtest1 SET c=? WHERE id=?",
            "DELETE FROM sbtest1 WHERE id=?",
            "INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)",
            "INSERT INTO app.t(a, b) VALUES (1, 'x'), (2, 'y')",
            "INSERT INTO `app`.`t` (`a`) VALUES (CONCAT('a', ?))",
            "INSERT IGNORE INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a) + 1",
            "REPLACE INTO t (a) VALUE (LOWER('X'))",
            "INSERT t (a) SELECT b FROM u WHERE c IN (1, 2) AND NOT EXISTS (SELECT 1 FROM v)",
            "UPDATE t SET a = IFNULL(a, 0) + 1, b = RAND() WHERE id = LAST_INSERT_ID()",
            "DELETE t FROM t JOIN u USING (id) WHERE u.x = 1",
            "UPDATE t FORCE INDEX (PRIMARY) SET a = 1 WHERE d < DATE_ADD('2020-01-01', INTERVAL 1 DAY)",
            "INSERT INTO t (u) VALUES (UUID())",
        ] {
            assert!(!may_read_clock(sql), "{sql}");
        }
    }

    #[test]
    fn clock_calls_unknown_calls_and_other_statements_may() {
        for sql in [
            "INSERT INTO t (a) VALUES (NOW())",
            "INSERT INTO t (a) VALUES (now(6))",
            "UPDATE t SET a = CURRENT_TIMESTAMP",
            "UPDATE t SET d = CURDATE() WHERE id = 1",
            "INSERT INTO t VALUES (SYSDATE())",
            "INSERT INTO t VALUES (UNIX_TIMESTAMP())",
            "UPDATE t SET a = 1 WHERE b > UTC_TIMESTAMP",
            "INSERT INTO t VALUES (my_func(1))",
            "INSERT INTO t VALUES (app.my_func(1))",
            "INSERT INTO t VALUES (`my func`(1))",
            "INSERT INTO t VALUES (NEXTVAL(s))",
            "UPDATE t SET a = @@timestamp",
            "SET STATEMENT timestamp = 5 FOR INSERT INTO t VALUES (1)",
            "CALL p()",
            "LOAD DATA INFILE 'x' INTO TABLE t",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO t SELECT * FROM v WHERE CAST(a AS DECIMAL(10, 2)) > 1",
            "",
        ] {
            assert!(may_read_clock(sql), "{sql}");
        }
    }

    #[test]
    fn clock_functions_are_built_ins_stored_functions_are_not() {
        for sql in [
            "INSERT INTO t (a) VALUES (NOW())",
            "UPDATE t SET a = CURRENT_TIMESTAMP, b = UNIX_TIMESTAMP(NOW(6)) WHERE id = 1",
            "UPDATE sbtest1 SET k=k+1 WHERE id=?",
        ] {
            assert!(!may_run_stored_code(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (my_func(1))",
            "INSERT INTO t VALUES (NEXTVAL(s))",
            "UPDATE t SET a = @@timestamp",
            "CALL p()",
            "DO next_id()",
        ] {
            assert!(may_run_stored_code(sql), "{sql}");
        }
    }

    #[test]
    fn a_program_body_lists_the_calls_that_may_be_stored_functions() {
        let body = "BEGIN DECLARE y DECIMAL(10, 2); DECLARE s VARCHAR(20); \
                    SELECT price(id) INTO y FROM t WHERE COALESCE(a, 0) > 0 AND b IN (1); \
                    WHILE (y > 0) DO SET y = shop.`discount`(y) - 1; END WHILE; \
                    IF (y > 1) THEN CALL p(y); END IF; \
                    INSERT INTO log (a) VALUES (CONCAT('x', y)); \
                    PREPARE st FROM 'SELECT tax(?)'; \
                    CREATE TEMPORARY TABLE tmp (a INT, FOREIGN KEY (a) REFERENCES u(a)); \
                    RETURN (price(1)); END";
        assert_eq!(
            functions_called(body),
            vec![
                (None, "price".to_string()),
                (Some("shop".to_string()), "discount".to_string()),
                (None, "tax".to_string()),
            ]
        );
        assert!(functions_called("SELECT COUNT(*) INTO n FROM t WHERE id IN (1)").is_empty());
    }
}
