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

/// Queues a whole text result set starting at `seq`; returns the next sequence id.
pub fn queue_text_resultset<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut PacketStream<S>,
    mut seq: u8,
    columns: &[&str],
    rows: &[Vec<Option<String>>],
    status: u16,
    deprecate_eof: bool,
) -> u8 {
    let mut buf = Vec::with_capacity(256);
    put_lenenc_int(&mut buf, columns.len() as u64);
    seq = out.queue_packet(seq, &buf);
    for name in columns {
        buf.clear();
        Column::new(ColumnType::MYSQL_TYPE_VAR_STRING)
            .with_schema(b"")
            .with_table(b"")
            .with_org_table(b"")
            .with_name(name.as_bytes())
            .with_org_name(name.as_bytes())
            .with_character_set(UTF8MB4)
            .with_column_length(1024)
            .with_flags(ColumnFlags::empty())
            .serialize(&mut buf);
        seq = out.queue_packet(seq, &buf);
    }
    if !deprecate_eof {
        seq = out.queue_packet(seq, &encode_terminator(status, 0, false));
    }
    for row in rows {
        buf.clear();
        for v in row {
            match v {
                Some(s) => put_lenenc_str(&mut buf, s.as_bytes()),
                None => buf.push(0xFB),
            }
        }
        seq = out.queue_packet(seq, &buf);
    }
    out.queue_packet(seq, &encode_terminator(status, 0, deprecate_eof))
}
