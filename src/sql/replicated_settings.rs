//! The session settings a write's result depends on, and how a record carries them: as the
//! primary connection's actual values where they differ from a fixed baseline that every
//! applier starts from. MySQL's binlog carries sql_mode, charsets, time_zone and the
//! auto-increment pair in every event for the same reason: a follower's own defaults (its
//! my.cnf, or a `SET GLOBAL` made on the primary only) must not decide what it writes.
//!
//! Pure: no I/O. Owns: `REPLICATED_SETTINGS`, `BASELINE`. May import: sql (quoting).

/// Settings a write's result depends on, in the order the proxy reads them from the
/// primary (`SELECT @@session.…`).
pub const REPLICATED_SETTINGS: &[&str] = &[
    "sql_mode",
    "time_zone",
    "foreign_key_checks",
    "unique_checks",
    "auto_increment_increment",
    "auto_increment_offset",
    "character_set_client",
    "character_set_connection",
    "collation_connection",
    "div_precision_increment",
    "group_concat_max_len",
    "explicit_defaults_for_timestamp",
    "default_storage_engine",
    "sql_auto_is_null",
    "max_sort_length",
    "lc_time_names",
    "sql_safe_updates",
    "check_constraint_checks",
    "default_week_format",
    "updatable_views_with_limit",
    "innodb_strict_mode",
    "old_mode",
    "max_recursive_iterations",
    "max_sp_recursion_depth",
    "default_regex_flags",
    "sql_if_exists",
    "system_versioning_alter_history",
    "system_versioning_insert_history",
];

/// What an applier sets before each record's own settings (MariaDB 10.11's defaults, so
/// records from default-configured servers carry nothing): the character-set trio is not
/// here, it follows the record's collation (`SET NAMES`).
pub const BASELINE: &[(&str, &str)] = &[
    (
        "sql_mode",
        "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
    ),
    ("time_zone", "SYSTEM"),
    ("foreign_key_checks", "1"),
    ("unique_checks", "1"),
    ("auto_increment_increment", "1"),
    ("auto_increment_offset", "1"),
    ("div_precision_increment", "4"),
    ("group_concat_max_len", "1048576"),
    ("explicit_defaults_for_timestamp", "1"),
    ("default_storage_engine", "InnoDB"),
    ("sql_auto_is_null", "0"),
    ("max_sort_length", "1024"),
    ("lc_time_names", "en_US"),
    ("sql_safe_updates", "0"),
    ("check_constraint_checks", "1"),
    ("default_week_format", "0"),
    ("updatable_views_with_limit", "YES"),
    ("innodb_strict_mode", "1"),
    ("old_mode", "UTF8_IS_UTF8MB3"),
    // A recursive CTE in INSERT … SELECT stops with error 1931 past this many rounds, and a
    // recursive CALL past the depth: a session that raised them would quarantine every
    // follower (measured: a 3000-row series, both followers out, writes stopped).
    ("max_recursive_iterations", "1000"),
    ("max_sp_recursion_depth", "0"),
    // REGEXP and REGEXP_REPLACE match differently under other flags: silent divergence.
    ("default_regex_flags", ""),
    // DDL on a missing object succeeds (IF EXISTS) or fails; ALTER of a versioned table,
    // and writes of row_start/row_end, are refused unless these allow them.
    ("sql_if_exists", "0"),
    ("system_versioning_alter_history", "ERROR"),
    ("system_versioning_insert_history", "0"),
];

/// Settings only DDL depends on (a database's default character set comes from them), read
/// after `REPLICATED_SETTINGS` for DDL records only, with their baseline (MariaDB's compiled
/// defaults; Debian's my.cnf sets utf8mb4, so DML records do not carry them).
pub const DDL_SETTINGS: &[(&str, &str)] = &[
    ("character_set_server", "latin1"),
    ("collation_server", "latin1_swedish_ci"),
];

/// The names whose values `record_settings` takes, in order.
pub fn names(ddl: bool) -> impl Iterator<Item = &'static str> {
    let extra: &[(&str, &str)] = if ddl { DDL_SETTINGS } else { &[] };
    REPLICATED_SETTINGS
        .iter()
        .copied()
        .chain(extra.iter().map(|(n, _)| *n))
}

const CHARSET_TRIO: [&str; 3] = [
    "character_set_client",
    "character_set_connection",
    "collation_connection",
];

/// A setting's value as read from the server, as a SET accepts it back: numbers bare
/// (`foreign_key_checks = '1'` is refused with error 1231: booleans and integers take no
/// quoted digits), anything else a quoted string.
pub fn setting_literal(v: Option<&str>) -> String {
    match v {
        None => "DEFAULT".into(),
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n.into(),
        Some(s) => super::quote_string(s),
    }
}

/// The assignments (`SESSION name = value`) that turn the baseline plus `SET NAMES
/// charset COLLATE collation` into the state whose values `values` lists (read from the
/// primary, in `names(ddl)` order). Values equal to the baseline are left out; the
/// character-set trio is carried whole when any of it differs from what `SET NAMES` gives.
pub fn record_settings(
    charset: &str,
    collation: &str,
    values: &[Option<String>],
    ddl: bool,
) -> Vec<String> {
    let value_of = |name: &str| {
        names(ddl)
            .position(|n| n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.as_deref())
    };
    let mut out = Vec::new();
    let names_gives = [charset, charset, collation];
    if CHARSET_TRIO
        .iter()
        .zip(names_gives)
        .any(|(n, want)| value_of(n) != Some(want))
    {
        for n in CHARSET_TRIO {
            if let Some(v) = value_of(n) {
                out.push(format!("SESSION {n} = {}", setting_literal(Some(v))));
            }
        }
    }
    let extra: &[(&str, &str)] = if ddl { DDL_SETTINGS } else { &[] };
    for (name, base) in BASELINE.iter().chain(extra) {
        let v = value_of(name);
        if v != Some(*base) {
            out.push(format!("SESSION {name} = {}", setting_literal(v)));
        }
    }
    out
}

/// The baseline as assignments, for the applier's SET on each change of context.
pub fn baseline_assignments() -> impl Iterator<Item = String> {
    BASELINE
        .iter()
        .chain(DDL_SETTINGS)
        .map(|(n, v)| format!("SESSION {n} = {}", setting_literal(Some(v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(charset: &str, collation: &str) -> Vec<Option<String>> {
        REPLICATED_SETTINGS
            .iter()
            .map(|n| match *n {
                "character_set_client" | "character_set_connection" => Some(charset.to_string()),
                "collation_connection" => Some(collation.to_string()),
                _ => BASELINE
                    .iter()
                    .find(|(b, _)| b == n)
                    .map(|(_, v)| v.to_string()),
            })
            .collect()
    }

    #[test]
    fn every_replicated_setting_is_in_the_baseline_or_follows_set_names() {
        for n in REPLICATED_SETTINGS {
            assert!(
                CHARSET_TRIO.contains(n) || BASELINE.iter().any(|(b, _)| b == n),
                "{n}"
            );
        }
        assert_eq!(BASELINE.len() + 3, REPLICATED_SETTINGS.len());
    }

    #[test]
    fn a_default_session_carries_nothing() {
        let v = defaults("utf8mb4", "utf8mb4_general_ci");
        assert!(record_settings("utf8mb4", "utf8mb4_general_ci", &v, false).is_empty());
    }

    #[test]
    fn values_off_the_baseline_are_carried_as_read() {
        let mut v = defaults("utf8mb4", "utf8mb4_general_ci");
        let at = |n: &str| REPLICATED_SETTINGS.iter().position(|x| *x == n).unwrap();
        // A SET GLOBAL time_zone on the primary, a my.cnf sql_mode, an offset pair.
        v[at("time_zone")] = Some("+05:00".into());
        v[at("sql_mode")] = Some(String::new());
        v[at("auto_increment_offset")] = Some("2".into());
        assert_eq!(
            record_settings("utf8mb4", "utf8mb4_general_ci", &v, false),
            vec![
                "SESSION sql_mode = ''",
                "SESSION time_zone = '+05:00'",
                "SESSION auto_increment_offset = 2",
            ]
        );
    }

    #[test]
    fn ddl_records_also_carry_the_server_character_set() {
        let mut v = defaults("utf8mb4", "utf8mb4_general_ci");
        v.push(Some("utf8mb4".into()));
        v.push(Some("utf8mb4_general_ci".into()));
        assert_eq!(
            record_settings("utf8mb4", "utf8mb4_general_ci", &v, true),
            vec![
                "SESSION character_set_server = 'utf8mb4'",
                "SESSION collation_server = 'utf8mb4_general_ci'",
            ]
        );
        v.truncate(REPLICATED_SETTINGS.len());
        assert!(record_settings("utf8mb4", "utf8mb4_general_ci", &v, false).is_empty());
    }

    #[test]
    fn the_charset_trio_is_carried_when_set_names_would_not_give_it() {
        let mut v = defaults("latin1", "latin1_swedish_ci");
        assert!(record_settings("latin1", "latin1_swedish_ci", &v, false).is_empty());
        let at = REPLICATED_SETTINGS
            .iter()
            .position(|x| *x == "character_set_connection")
            .unwrap();
        v[at] = Some("utf8mb4".into());
        assert_eq!(
            record_settings("latin1", "latin1_swedish_ci", &v, false),
            vec![
                "SESSION character_set_client = 'latin1'",
                "SESSION character_set_connection = 'utf8mb4'",
                "SESSION collation_connection = 'latin1_swedish_ci'",
            ]
        );
    }

    #[test]
    fn literals_take_numbers_bare_and_quote_the_rest() {
        assert_eq!(setting_literal(Some("1")), "1");
        assert_eq!(setting_literal(Some("ANSI")), "'ANSI'");
        assert_eq!(setting_literal(Some("")), "''");
        assert_eq!(setting_literal(Some("it's")), "'it''s'");
        assert_eq!(setting_literal(None), "DEFAULT");
    }
}
