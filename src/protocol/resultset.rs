//! Result sets the proxy builds itself (SHOW PROXY …): text protocol, string columns.
//!
//! Owns: encoding of proxy-generated result sets. May import: protocol::{packet, message}.

use super::message::{encode_terminator, put_lenenc_int, put_lenenc_str};
use super::packet::PacketStream;
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::packets::Column;
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncWrite};

/// utf8mb4_general_ci
const UTF8MB4: u16 = 45;
/// `binary`: numbers are sent as text in this charset.
const BINARY: u16 = 63;

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
    deprecate_eof: bool,
) -> u8 {
    let typed: Vec<(&str, ColumnKind)> = columns.iter().map(|c| (*c, ColumnKind::Text)).collect();
    queue_resultset(out, seq, &typed, rows, status, deprecate_eof, false)
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
    deprecate_eof: bool,
    binary: bool,
) -> u8 {
    let mut buf = Vec::with_capacity(256);
    let mut seq = queue_columns(out, seq, columns, status, deprecate_eof, &mut buf);
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
    out.queue_packet(seq, &encode_terminator(status, 0, deprecate_eof))
}

/// The column count, definitions and (without DEPRECATE_EOF) their EOF.
fn queue_columns<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut PacketStream<S>,
    mut seq: u8,
    columns: &[(&str, ColumnKind)],
    status: u16,
    deprecate_eof: bool,
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
        Column::new(ty)
            .with_schema(b"")
            .with_table(b"")
            .with_org_table(b"")
            .with_name(name.as_bytes())
            .with_org_name(name.as_bytes())
            .with_character_set(charset)
            .with_column_length(length)
            .with_flags(flags)
            .serialize(buf);
        seq = out.queue_packet(seq, buf);
    }
    if !deprecate_eof {
        seq = out.queue_packet(seq, &encode_terminator(status, 0, false));
    }
    seq
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

/// The type byte of a Protocol::ColumnDefinition41: after six length-encoded strings
/// (catalog, schema, table, org_table, name, org_name), the fixed-length fields' length,
/// the character set (2 bytes) and the column length (4 bytes).
fn column_type(def: &[u8]) -> Option<mysql_common::constants::ColumnType> {
    use super::message::read_lenenc_int;
    let mut b = def;
    for _ in 0..6 {
        let n = read_lenenc_int(&mut b)? as usize;
        b = b.get(n..)?;
    }
    read_lenenc_int(&mut b)?;
    let ty = *b.get(6)?;
    mysql_common::constants::ColumnType::try_from(ty).ok()
}
