//! `BINLOG '<base64>'` statements, as mysqlbinlog prints ROW and MIXED binlogs for a
//! point-in-time replay: which binlog events one holds, and the tables its row events change.
//!
//! A format description event only tells the session how to read later events; row events
//! (a table map, then rows) carry whole row images, so replaying the same statement on every
//! replica gives the same rows. A server applies row events only after a format description
//! in the same session, so the proxy keeps the session's last one and logs it in front of
//! each row statement (`with_format_description`): one BINLOG literal may hold several events,
//! each its own base64 chunk, as mysqlbinlog prints them.
//!
//! Owns: decoding BINLOG literals. May import: sql::lexer.

use super::lexer::{str_contents, Lexer, Tok};
use base64::Engine;

/// Binlog event types (the common header's fifth byte).
const QUERY_EVENT: u8 = 2;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const TABLE_MAP_EVENT: u8 = 19;
/// WRITE/UPDATE/DELETE_ROWS v1 (23–25) and v2 (30–32); MariaDB's compressed forms (166–171).
fn is_rows_event(t: u8) -> bool {
    matches!(t, 23..=25 | 30..=32 | 166..=171)
}
/// The v4 common header, and a table map's post-header (table id 6 + flags 2).
const HEADER: usize = 19;
const TABLE_MAP_POST_HEADER: usize = 8;

/// What a BINLOG statement holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinlogStatement {
    /// Only a format description event: the base64 literal, for later row statements.
    FormatDescription(String),
    /// Table maps and row events: the base64 literal and the `(schema, table)` pairs its
    /// table maps name.
    Rows {
        literal: String,
        tables: Vec<(String, String)>,
    },
}

/// Reads a `BINLOG '…'` statement; `None` for any other statement, `Err` with the reason for
/// a BINLOG statement the proxy cannot replicate.
pub fn parse(sql: &str) -> Option<Result<BinlogStatement, String>> {
    let mut toks = Lexer::new(sql);
    if !toks.next()?.tok.is_word("BINLOG") {
        return None;
    }
    // The token keeps its quotes; base64 needs no escapes.
    let literal = match toks.next().map(|t| t.tok) {
        Some(Tok::Str(s)) => str_contents(s),
        _ => None,
    };
    let Some(literal) = literal.map(str::to_string) else {
        return Some(Err(
            "a BINLOG statement takes one quoted base64 literal".into()
        ));
    };
    Some(read_events(&literal).map(|events| {
        if events.iter().all(|e| e.kind == FORMAT_DESCRIPTION_EVENT) {
            BinlogStatement::FormatDescription(literal)
        } else {
            let tables = events.into_iter().filter_map(|e| e.table).collect();
            BinlogStatement::Rows { literal, tables }
        }
    }))
}

/// The statement a row statement runs as: the session's format description chunk first.
pub fn with_format_description(format_description: &str, rows: &str) -> String {
    format!(
        "BINLOG '{}\n{}'",
        format_description.trim_end(),
        rows.trim()
    )
}

struct Event {
    kind: u8,
    table: Option<(String, String)>,
}

fn read_events(literal: &str) -> Result<Vec<Event>, String> {
    let bytes = decode_chunks(literal).ok_or("the BINLOG literal is not base64")?;
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + HEADER)
            .ok_or("the BINLOG literal ends inside an event header")?;
        let kind = header[4];
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as usize;
        let event = bytes
            .get(at..at + size)
            .filter(|_| size >= HEADER)
            .ok_or("the BINLOG literal ends inside an event")?;
        let table = match kind {
            FORMAT_DESCRIPTION_EVENT => None,
            TABLE_MAP_EVENT => Some(table_of(event).ok_or("a table map event is malformed")?),
            t if is_rows_event(t) => None,
            QUERY_EVENT => {
                return Err(
                    "a BINLOG statement holding a query event (mysqlbinlog prints \
                            statements as text; replay its output unchanged)"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "a BINLOG statement holding binlog event type {other} (only format \
                     description, table map and row events replicate)"
                ))
            }
        };
        events.push(Event { kind, table });
        at += size;
    }
    if events.is_empty() {
        return Err("an empty BINLOG statement".into());
    }
    Ok(events)
}

/// Decodes base64 that may be several padded chunks in a row (one per event, as mysqlbinlog
/// prints them and the server reads them), whitespace ignored.
fn decode_chunks(literal: &str) -> Option<Vec<u8>> {
    let text: Vec<u8> = literal
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            while i < text.len() && text[i] == b'=' {
                i += 1;
            }
            out.extend(engine.decode(&text[start..i]).ok()?);
            start = i;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        out.extend(engine.decode(&text[start..]).ok()?);
    }
    Some(out)
}

/// A table map's schema and table: after the post-header, a length byte, the name and a NUL,
/// for each.
fn table_of(event: &[u8]) -> Option<(String, String)> {
    let mut at = HEADER + TABLE_MAP_POST_HEADER;
    let mut name = || {
        let len = *event.get(at)? as usize;
        let s = event.get(at + 1..at + 1 + len)?;
        at += len + 2;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    Some((name()?, name()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mariadb-binlog output of a MariaDB 10.11 ROW binlog (server id 7): its format
    /// description, and `INSERT INTO shop.t …` as a table map and a Write_rows event.
    const FDE: &str = "4gwDaw8HAAAA/AAAAAABAAABAAQAMTAuMTEuMTQtTWFyaWFEQi0wK2RlYjEydTItbG9nAAAAAAAA
AAAAAAAAAAAAAAAAAADiDANrEzgNAAgAEgAEBAQEEgAA5AAEGggAAAAICAgCAAAACgoKAAAAAAAA
CgoKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
AAAAAAAAAAAEEwQADQgICAoKCgHmze6A";
    const ROWS: &str =
        "5gwDaxMHAAAANwAAAJUDAAAAABIAAAAAAAEABHNob3AAAXQABQMP9hH+BzIACgIG/iQeCMdWHQ==
5gwDaxcHAAAAkQAAACYEAAAAABIAAAAAAAEABR/gAQAAAAFhgAAAATJrAwzmDi4tJDA3YjQ1YWI5
LWU2OGItMTFmMS05OGY5LTAyZmMwMDAwMDAwMeACAAAAAWKAAAACMmsDDOYOLi0kMDdiNDVjZTUt
ZTY4Yi0xMWYxLTk4ZjktMDJmYzAwMDAwMDAxnVWthA==";

    #[test]
    fn row_statements_name_their_tables() {
        let sql = format!("BINLOG '\n{ROWS}\n'");
        assert_eq!(
            parse(&sql),
            Some(Ok(BinlogStatement::Rows {
                literal: format!("\n{ROWS}\n"),
                tables: vec![("shop".into(), "t".into())],
            }))
        );
    }

    #[test]
    fn a_format_description_alone() {
        let sql = format!("BINLOG '\n{FDE}\n'");
        assert_eq!(
            parse(&sql),
            Some(Ok(BinlogStatement::FormatDescription(format!("\n{FDE}\n"))))
        );
        // Followed by row events in one literal, it is a row statement.
        let both = with_format_description(&format!("\n{FDE}\n"), ROWS);
        assert!(matches!(
            parse(&both),
            Some(Ok(BinlogStatement::Rows { ref tables, .. })) if tables == &[("shop".into(), "t".into())]
        ));
    }

    #[test]
    fn other_statements_and_bad_literals() {
        assert_eq!(parse("SELECT 'BINLOG'"), None);
        assert_eq!(parse("SHOW BINLOG EVENTS"), None);
        assert!(matches!(parse("BINLOG '%%%'"), Some(Err(_))));
        assert!(matches!(parse("BINLOG 'AAAA'"), Some(Err(_))));
        assert!(matches!(parse("BINLOG ''"), Some(Err(_))));
        assert!(matches!(parse("BINLOG x"), Some(Err(_))));
    }

    #[test]
    fn chunks_decode_one_after_another() {
        assert_eq!(decode_chunks("YQ==\nYmM=\nZGVm"), Some(b"abcdef".to_vec()));
        assert_eq!(decode_chunks("YWJj ZGVm"), Some(b"abcdef".to_vec()));
    }

    #[test]
    fn the_format_description_goes_first_in_one_literal() {
        let sql = with_format_description("\nFDE\n", "\nROWS==\n");
        assert_eq!(sql, "BINLOG '\nFDE\nROWS=='");
    }
}
