//! Result sets the proxy builds itself (SHOW PROXY …): text protocol, string columns.
//!
//! Owns: encoding of proxy-generated result sets. May import: protocol::{packet, message}.

use super::message::{encode_terminator, put_lenenc_int, put_lenenc_str};
use super::packet::PacketStream;
use mysql_common::constants::{CapabilityFlags, ColumnFlags, ColumnType};
use tokio::io::{AsyncRead, AsyncWrite};

/// utf8mb4_general_ci
const UTF8MB4: u16 = 45;
/// `binary`: numbers are sent as text in this charset.
const BINARY: u16 = 63;

/// The negotiated options that change how a client reads a result set's framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientFormat {
    /// CLIENT_DEPRECATE_EOF: no EOF after the column definitions; an OK ends the rows.
    pub deprecate_eof: bool,
    /// MariaDB's extended metadata (CLIENT_MYSQL clear, see `handshake::EXTENDED_METADATA`):
    /// each column definition carries a block of data type name and format.
    pub extended_metadata: bool,
}

impl ClientFormat {
    pub fn of(caps: CapabilityFlags) -> Self {
        ClientFormat {
            deprecate_eof: caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
            extended_metadata: !caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
        }
    }
}

/// How a proxy-built column is typed for the client (text protocol either way: drivers
/// convert by the column's type, so a count must be an integer column to read as a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    /// BIGINT (signed: ROW_COUNT() is -1 after a result set).
    Int,
    /// INT UNSIGNED, as the server types SHOW WARNINGS' `Code`.
    UnsignedInt,
}

/// Queues a whole text result set of string columns starting at `seq`; returns the next
/// sequence id.
pub fn queue_text_resultset<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut PacketStream<S>,
    seq: u8,
    columns: &[&str],
    rows: &[Vec<Option<String>>],
    status: u16,
    format: ClientFormat,
) -> u8 {
    let typed: Vec<(&str, ColumnKind)> = columns.iter().map(|c| (*c, ColumnKind::Text)).collect();
    queue_resultset(out, seq, &typed, rows, status, format, false)
}

/// Queues a whole result set with typed columns starting at `seq`; returns the next sequence
/// id. `binary`: rows in the binary protocol, as the answer to a COM_STMT_EXECUTE (each a
/// 0x00 header, a NULL bitmap at offset 2 and the values in their columns' types; a value
/// that does not parse as its integer column's type goes as 0); else text rows.
pub fn queue_resultset<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut PacketStream<S>,
    seq: u8,
    columns: &[(&str, ColumnKind)],
    rows: &[Vec<Option<String>>],
    status: u16,
    format: ClientFormat,
    binary: bool,
) -> u8 {
    let mut buf = Vec::with_capacity(256);
    let mut seq = queue_columns(out, seq, columns, status, format, &mut buf);
    for row in rows {
        buf.clear();
        if binary {
            buf.push(0x00);
            let bitmap_at = buf.len();
            buf.resize(bitmap_at + (columns.len() + 7 + 2) / 8, 0);
            for (i, (v, (_, kind))) in row.iter().zip(columns).enumerate() {
                let Some(v) = v else {
                    buf[bitmap_at + (i + 2) / 8] |= 1 << ((i + 2) % 8);
                    continue;
                };
                match kind {
                    ColumnKind::Text => put_lenenc_str(&mut buf, v.as_bytes()),
                    ColumnKind::Int => {
                        buf.extend_from_slice(&v.parse::<i64>().unwrap_or(0).to_le_bytes())
                    }
                    ColumnKind::UnsignedInt => {
                        buf.extend_from_slice(&v.parse::<u32>().unwrap_or(0).to_le_bytes())
                    }
                }
            }
        } else {
            for v in row {
                match v {
                    Some(s) => put_lenenc_str(&mut buf, s.as_bytes()),
                    None => buf.push(0xFB),
                }
            }
        }
        seq = out.queue_packet(seq, &buf);
    }
    out.queue_packet(seq, &encode_terminator(status, 0, format.deprecate_eof))
}

/// The column count, definitions and (without DEPRECATE_EOF) their EOF.
fn queue_columns<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut PacketStream<S>,
    mut seq: u8,
    columns: &[(&str, ColumnKind)],
    status: u16,
    format: ClientFormat,
    buf: &mut Vec<u8>,
) -> u8 {
    buf.clear();
    put_lenenc_int(buf, columns.len() as u64);
    seq = out.queue_packet(seq, buf);
    for (name, kind) in columns {
        buf.clear();
        let (ty, charset, length, flags) = match kind {
            ColumnKind::Text => (
                ColumnType::MYSQL_TYPE_VAR_STRING,
                UTF8MB4,
                1024,
                ColumnFlags::empty(),
            ),
            ColumnKind::Int => (
                ColumnType::MYSQL_TYPE_LONGLONG,
                BINARY,
                21,
                ColumnFlags::NOT_NULL_FLAG | ColumnFlags::BINARY_FLAG | ColumnFlags::NUM_FLAG,
            ),
            ColumnKind::UnsignedInt => (
                ColumnType::MYSQL_TYPE_LONG,
                BINARY,
                4,
                ColumnFlags::NOT_NULL_FLAG
                    | ColumnFlags::UNSIGNED_FLAG
                    | ColumnFlags::BINARY_FLAG
                    | ColumnFlags::NUM_FLAG,
            ),
        };
        put_column_definition(buf, name, charset, length, ty, flags, format);
        seq = out.queue_packet(seq, buf);
    }
    if !format.deprecate_eof {
        seq = out.queue_packet(seq, &encode_terminator(status, 0, false));
    }
    seq
}

/// A Protocol::ColumnDefinition41 of a column with no table. Written here rather than by
/// `mysql_common::packets::Column`, whose serializer puts the column length before the
/// character set (clients then read a length of 1024 as an unknown collation).
fn put_column_definition(
    buf: &mut Vec<u8>,
    name: &str,
    charset: u16,
    length: u32,
    ty: ColumnType,
    flags: ColumnFlags,
    format: ClientFormat,
) {
    for text in [&b"def"[..], b"", b"", b"", name.as_bytes(), name.as_bytes()] {
        put_lenenc_str(buf, text);
    }
    if format.extended_metadata {
        // No data type name or format to tell: an empty block.
        buf.push(0);
    }
    buf.push(0x0c);
    buf.extend_from_slice(&charset.to_le_bytes());
    buf.extend_from_slice(&length.to_le_bytes());
    buf.push(ty as u8);
    buf.extend_from_slice(&flags.bits().to_le_bytes());
    buf.extend_from_slice(&[0, 0, 0]); // decimals, filler
}

/// A text-protocol row as strings (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

/// Reads a text-protocol result set's first row (later rows are skipped) as strings
/// (`None` for NULL). Returns Err(MysqlError) when the server answered with an error.
pub async fn read_first_row<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    deprecate_eof: bool,
) -> std::io::Result<Result<Option<TextRow>, super::MysqlError>> {
    Ok(read_rows(stream, deprecate_eof, 1)
        .await?
        .map(|rows| rows.into_iter().next()))
}

/// Reads a text-protocol result set's first `max_rows` rows (later rows are skipped) as
/// strings. Returns Err(MysqlError) when the server answered with an error; an OK answer
/// (no result set) is no rows.
pub async fn read_rows<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    deprecate_eof: bool,
    max_rows: usize,
) -> std::io::Result<Result<Vec<TextRow>, super::MysqlError>> {
    Ok(read_raw_rows(stream, deprecate_eof, max_rows)
        .await?
        .map(|(_, rows)| {
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|v| {
                            v.map(|b| {
                                String::from_utf8(b).unwrap_or_else(|e| {
                                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                                })
                            })
                        })
                        .collect()
                })
                .collect()
        }))
}

/// A value of a text-protocol row with its column's type, bytes as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedValue {
    pub column_type: mysql_common::constants::ColumnType,
    pub value: Option<Vec<u8>>,
}

/// Reads a text-protocol result set's first row with each column's type (later rows are
/// skipped). Err(MysqlError) when the server answered with an error.
pub async fn read_first_row_typed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    deprecate_eof: bool,
) -> std::io::Result<Result<Option<Vec<TypedValue>>, super::MysqlError>> {
    Ok(read_raw_rows(stream, deprecate_eof, 1)
        .await?
        .map(|(types, rows)| {
            rows.into_iter().next().map(|row| {
                types
                    .into_iter()
                    .zip(row)
                    .map(|(column_type, value)| TypedValue { column_type, value })
                    .collect()
            })
        }))
}

type RawRow = Vec<Option<Vec<u8>>>;

async fn read_raw_rows<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    deprecate_eof: bool,
    max_rows: usize,
) -> std::io::Result<
    Result<(Vec<mysql_common::constants::ColumnType>, Vec<RawRow>), super::MysqlError>,
> {
    use super::message::{is_terminator, read_lenenc_int, ERR_HEADER, OK_HEADER};
    let bad = |w: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, w.to_string());
    let first = stream.read_packet().await?;
    match first.payload.first() {
        Some(&ERR_HEADER) => {
            return Ok(Err(super::MysqlError::decode(&first.payload)
                .unwrap_or_else(|| {
                    super::MysqlError::new(2027, "HY000", "malformed error packet")
                })))
        }
        Some(&OK_HEADER) => return Ok(Ok((Vec::new(), Vec::new()))),
        _ => {}
    }
    let mut b = &first.payload[..];
    let ncols = read_lenenc_int(&mut b).ok_or_else(|| bad("column count"))?;
    let mut types = Vec::with_capacity(ncols.min(4096) as usize);
    for _ in 0..ncols {
        let def = stream.read_packet().await?;
        types.push(column_type(&def.payload).ok_or_else(|| bad("column definition"))?);
    }
    if !deprecate_eof {
        stream.read_packet().await?;
    }
    let mut rows = Vec::new();
    loop {
        let p = stream.read_packet().await?;
        if p.payload.first() == Some(&ERR_HEADER) {
            return Ok(Err(super::MysqlError::decode(&p.payload).unwrap_or_else(
                || super::MysqlError::new(2027, "HY000", "malformed error packet"),
            )));
        }
        if is_terminator(&p.payload) {
            return Ok(Ok((types, rows)));
        }
        if rows.len() < max_rows {
            let mut b = &p.payload[..];
            let mut values = Vec::with_capacity(ncols as usize);
            for _ in 0..ncols {
                if b.first() == Some(&0xFB) {
                    b = &b[1..];
                    values.push(None);
                    continue;
                }
                let n = read_lenenc_int(&mut b).ok_or_else(|| bad("row"))? as usize;
                let v = b.get(..n).ok_or_else(|| bad("row"))?;
                values.push(Some(v.to_vec()));
                b = &b[n..];
            }
            rows.push(values);
        }
    }
}

/// The type byte of a result set's Protocol::ColumnDefinition41. Its last 13 bytes are the
/// fixed-length fields (their length 0x0c, character set, column length, type, flags,
/// decimals, filler), whether or not MariaDB's extended metadata block precedes them.
fn column_type(def: &[u8]) -> Option<mysql_common::constants::ColumnType> {
    let fixed = def.get(def.len().checked_sub(13)?..)?;
    if fixed[0] != 0x0c {
        return None;
    }
    mysql_common::constants::ColumnType::try_from(fixed[7]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a column definition's six length-encoded names (catalog … org_name) end.
    fn names_end(def: &[u8]) -> Option<usize> {
        use crate::protocol::message::read_lenenc_int;
        let mut b = def;
        for _ in 0..6 {
            let n = read_lenenc_int(&mut b)? as usize;
            b = b.get(n..)?;
        }
        Some(def.len() - b.len())
    }

    fn definition(ty: ColumnType) -> Vec<u8> {
        let mut buf = Vec::new();
        put_column_definition(
            &mut buf,
            "doc",
            UTF8MB4,
            1024,
            ty,
            ColumnFlags::empty(),
            ClientFormat::default(),
        );
        buf
    }

    #[test]
    fn proxy_built_column_definitions_read_back_as_written() {
        use mysql_common::io::ParseBuf;
        use mysql_common::packets::Column;
        let def = definition(ColumnType::MYSQL_TYPE_VAR_STRING);
        let column: Column = ParseBuf(&def).parse(()).unwrap();
        assert_eq!(column.name_str(), "doc");
        assert_eq!(column.character_set(), UTF8MB4);
        assert_eq!(column.column_length(), 1024);
        assert_eq!(column.column_type(), ColumnType::MYSQL_TYPE_VAR_STRING);
        // For a client that took MariaDB's extended metadata, an empty block after the
        // names and the same fields after it.
        let mut extended = Vec::new();
        let format = ClientFormat {
            deprecate_eof: true,
            extended_metadata: true,
        };
        let ty = ColumnType::MYSQL_TYPE_LONGLONG;
        put_column_definition(
            &mut extended,
            "n",
            BINARY,
            21,
            ty,
            ColumnFlags::NUM_FLAG,
            format,
        );
        let at = names_end(&extended).unwrap();
        assert_eq!(extended[at..at + 2], [0, 0x0c]);
        let mut classic = extended.clone();
        classic.remove(at);
        let column: Column = ParseBuf(&classic).parse(()).unwrap();
        assert_eq!(
            (column.character_set(), column.column_length()),
            (BINARY, 21)
        );
        assert_eq!(column_type(&extended), Some(ty));
    }

    #[test]
    fn column_types_read_with_and_without_mariadb_extended_metadata() {
        let classic = definition(ColumnType::MYSQL_TYPE_BLOB);
        assert_eq!(column_type(&classic), Some(ColumnType::MYSQL_TYPE_BLOB));
        // A JSON column as MariaDB describes it to a client that took extended metadata:
        // a block holding format (1) = "json" after the names. Its length, 6, is also
        // the fixed fields' length byte's neighbourhood: it must not be mistaken for it.
        let mut extended = classic.clone();
        let at = names_end(&extended).unwrap();
        extended.splice(at..at, [6, 1, 4, b'j', b's', b'o', b'n']);
        assert_eq!(column_type(&extended), Some(ColumnType::MYSQL_TYPE_BLOB));
        let mut empty_block = definition(ColumnType::MYSQL_TYPE_LONGLONG);
        let at = names_end(&empty_block).unwrap();
        empty_block.insert(at, 0);
        assert_eq!(
            column_type(&empty_block),
            Some(ColumnType::MYSQL_TYPE_LONGLONG)
        );
        assert_eq!(column_type(&classic[..10]), None);
    }
}
