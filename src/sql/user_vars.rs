//! User variables a write reads (`CALL p(@x)`, `INSERT … VALUES (@x)`, `EXECUTE s USING
//! @x`): the query that reads their values on the primary just before the write, and the
//! assignments that give a follower the same values, type and collation included — what
//! MySQL's statement binlog carries in its User_var events.
//!
//! Owns: that query and the literals. May import: mysql_common (column types) only.

use mysql_common::constants::ColumnType;

/// Columns read per variable: its value (typed by the column), CHARSET(), COLLATION(), HEX().
pub const COLUMNS_PER_VARIABLE: usize = 4;

/// `SELECT @v, CHARSET(@v), COLLATION(@v), HEX(@v), …` for `vars` as the statement spells
/// them (`x`, `'my var'`).
pub fn read_query(vars: &[String]) -> String {
    let cols: Vec<String> = vars
        .iter()
        .map(|v| format!("@{v}, CHARSET(@{v}), COLLATION(@{v}), HEX(@{v})"))
        .collect();
    format!("SELECT {}", cols.join(", "))
}

/// One variable's columns of `read_query`'s row.
pub struct ReadValue<'a> {
    pub column_type: ColumnType,
    pub value: Option<&'a [u8]>,
    pub charset: Option<&'a [u8]>,
    pub collation: Option<&'a [u8]>,
    pub hex: Option<&'a [u8]>,
}

/// `@v = <literal>` giving a follower's session the value read on the primary: integers,
/// decimals and doubles as numbers of the same type, strings as their bytes in their own
/// character set and collation. Err says why the value cannot be carried.
pub fn assignment(var: &str, read: &ReadValue<'_>) -> Result<String, String> {
    let Some(value) = read.value else {
        return Ok(format!("@{var} = NULL"));
    };
    let text = std::str::from_utf8(value).unwrap_or("");
    let numeric = |extra: &[u8]| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || extra.contains(&b))
    };
    let literal = match read.column_type {
        ColumnType::MYSQL_TYPE_LONGLONG
        | ColumnType::MYSQL_TYPE_LONG
        | ColumnType::MYSQL_TYPE_INT24
        | ColumnType::MYSQL_TYPE_SHORT
        | ColumnType::MYSQL_TYPE_TINY
            if numeric(b"") =>
        {
            text.to_string()
        }
        ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL if numeric(b".") => {
            if text.contains('.') {
                text.to_string()
            } else {
                // A bare integer literal would make the variable an integer.
                format!("CAST({text} AS DECIMAL(65, 0))")
            }
        }
        ColumnType::MYSQL_TYPE_DOUBLE | ColumnType::MYSQL_TYPE_FLOAT if numeric(b".eE+") => {
            // The server prints doubles so they read back exactly; an exponent keeps the
            // literal a double rather than a decimal.
            if text.contains(['e', 'E']) {
                text.to_string()
            } else {
                format!("{text}E0")
            }
        }
        ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_BLOB
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB => {
            let name = |v: Option<&[u8]>| {
                v.and_then(|b| std::str::from_utf8(b).ok())
                    .filter(|n| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                    .map(str::to_string)
            };
            let hex = read
                .hex
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|h| h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            match (name(read.charset), name(read.collation), hex) {
                (Some(cs), _, Some(hex)) if cs == "binary" => format!("_binary X'{hex}'"),
                (Some(cs), Some(coll), Some(hex)) => format!("_{cs} X'{hex}' COLLATE {coll}"),
                _ => return Err(format!("the type of @{var}'s value could not be read")),
            }
        }
        other => {
            return Err(format!(
                "@{var} holds a value of type {other:?}, which the proxy cannot carry"
            ))
        }
    };
    Ok(format!("@{var} = {literal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(
        column_type: ColumnType,
        value: Option<&'a str>,
        charset: &'a str,
        collation: &'a str,
        hex: Option<&'a str>,
    ) -> ReadValue<'a> {
        ReadValue {
            column_type,
            value: value.map(str::as_bytes),
            charset: Some(charset.as_bytes()),
            collation: Some(collation.as_bytes()),
            hex: hex.map(str::as_bytes),
        }
    }

    /// Values as MariaDB 10.11 answers `read_query` (measured with PyMySQL).
    #[test]
    fn values_keep_their_type_and_collation() {
        use ColumnType::*;
        let cases = [
            (
                read(
                    MYSQL_TYPE_LONGLONG,
                    Some("-3"),
                    "binary",
                    "binary",
                    Some("FFFFFFFFFFFFFFFD"),
                ),
                "@i = -3",
            ),
            (
                read(
                    MYSQL_TYPE_LONGLONG,
                    Some("18446744073709551615"),
                    "binary",
                    "binary",
                    None,
                ),
                "@i = 18446744073709551615",
            ),
            (
                read(
                    MYSQL_TYPE_NEWDECIMAL,
                    Some("5.50"),
                    "binary",
                    "binary",
                    Some("6"),
                ),
                "@i = 5.50",
            ),
            (
                read(
                    MYSQL_TYPE_NEWDECIMAL,
                    Some("5"),
                    "binary",
                    "binary",
                    Some("5"),
                ),
                "@i = CAST(5 AS DECIMAL(65, 0))",
            ),
            (
                read(
                    MYSQL_TYPE_DOUBLE,
                    Some("0.30000000000000004"),
                    "binary",
                    "binary",
                    Some("0"),
                ),
                "@i = 0.30000000000000004E0",
            ),
            (
                read(MYSQL_TYPE_DOUBLE, Some("1e300"), "binary", "binary", None),
                "@i = 1e300",
            ),
            (
                read(
                    MYSQL_TYPE_LONG_BLOB,
                    Some("héllo"),
                    "utf8mb4",
                    "utf8mb4_general_ci",
                    Some("68C3A96C6C6F"),
                ),
                "@i = _utf8mb4 X'68C3A96C6C6F' COLLATE utf8mb4_general_ci",
            ),
            (
                read(
                    MYSQL_TYPE_LONG_BLOB,
                    Some("abc"),
                    "latin1",
                    "latin1_german1_ci",
                    Some("616263"),
                ),
                "@i = _latin1 X'616263' COLLATE latin1_german1_ci",
            ),
            (
                read(
                    MYSQL_TYPE_LONG_BLOB,
                    Some("\u{0}"),
                    "binary",
                    "binary",
                    Some("00FF"),
                ),
                "@i = _binary X'00FF'",
            ),
            (
                read(MYSQL_TYPE_LONG_BLOB, None, "binary", "binary", None),
                "@i = NULL",
            ),
        ];
        for (value, want) in cases {
            assert_eq!(assignment("i", &value).as_deref(), Ok(want));
        }
        assert_eq!(
            read_query(&["a".into(), "'b c'".into()]),
            "SELECT @a, CHARSET(@a), COLLATION(@a), HEX(@a), @'b c', CHARSET(@'b c'), \
             COLLATION(@'b c'), HEX(@'b c')"
        );
    }

    #[test]
    fn what_cannot_be_written_back_is_refused() {
        use ColumnType::*;
        let odd = [
            read(
                MYSQL_TYPE_LONGLONG,
                Some("1; DROP"),
                "binary",
                "binary",
                None,
            ),
            read(
                MYSQL_TYPE_LONG_BLOB,
                Some("x"),
                "utf8mb4",
                "utf8mb4_general_ci; x",
                Some("78"),
            ),
            read(
                MYSQL_TYPE_LONG_BLOB,
                Some("x"),
                "utf8mb4",
                "utf8mb4_general_ci",
                Some("7"),
            ),
            read(
                MYSQL_TYPE_GEOMETRY,
                Some("x"),
                "binary",
                "binary",
                Some("78"),
            ),
        ];
        for value in odd {
            assert!(assignment("i", &value).is_err());
        }
    }
}
