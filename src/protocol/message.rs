//! Encoding and decoding of the small packets the proxy itself reads or writes: OK, ERR, EOF,
//! length-encoded integers and strings, and the fields of a result-set terminator.
//!
//! Owns: byte layouts of individual packets. May import: mysql_common (errors, constants).

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xFE;
pub const ERR_HEADER: u8 = 0xFF;
pub const LOCAL_INFILE_HEADER: u8 = 0xFB;

/// An error the proxy reports to a client: MySQL error code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlError {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl MysqlError {
    /// What the proxy refuses to run (ER_NOT_SUPPORTED_YET), saying why.
    pub fn not_supported(what: &str) -> Self {
        MysqlError::new(1235, "42000", format!("myquorum: {what}"))
    }

    pub fn new(code: u16, state: &str, message: impl Into<String>) -> Self {
        let mut s = [b'H', b'Y', b'0', b'0', b'0'];
        if state.len() == 5 {
            s.copy_from_slice(state.as_bytes());
        }
        MysqlError {
            code,
            state: s,
            message: message.into(),
        }
    }

    /// The code as sent to a client: a client-library code (2000–2999: 2003 can't connect,
    /// 2013 lost connection, …) becomes 9000 + the same number. libmariadb (the mysql CLI,
    /// DBD::mysql, Python's mysqlclient) takes a server error packet carrying a client code
    /// for a corrupt packet and reports "2027 Received malformed packet", losing the
    /// message; ProxySQL's own errors are 9xxx for the same reason.
    pub fn wire_code(&self) -> u16 {
        if (2000..3000).contains(&self.code) {
            self.code + 7000
        } else {
            self.code
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(9 + self.message.len());
        ErrPacket::Error(ServerError::new(
            self.wire_code(),
            Some(SqlState::new(self.state)),
            self.message.as_bytes(),
        ))
        .serialize(&mut buf);
        buf
    }

    /// Parses an ERR packet payload as sent by a server. One sent before the handshake (a
    /// server over its connection limit refuses at once: the client's capabilities are not
    /// known yet) has no `#` SQLSTATE marker; its state is HY000, as client libraries report.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let protocol_41 = payload.get(3) == Some(&b'#');
        let caps = if protocol_41 {
            CapabilityFlags::CLIENT_PROTOCOL_41
        } else {
            CapabilityFlags::empty()
        };
        let mut pb = ParseBuf(payload);
        match pb.parse::<ErrPacket<'_>>(caps).ok()? {
            ErrPacket::Error(e) => Some(MysqlError {
                code: e.error_code(),
                state: e.sql_state_ref().map(|s| s.as_bytes()).unwrap_or(*b"HY000"),
                message: e.message_str().into_owned(),
            }),
            ErrPacket::Progress(_) => None,
        }
    }

    pub fn state_str(&self) -> &str {
        std::str::from_utf8(&self.state).unwrap_or("HY000")
    }
}

impl std::fmt::Display for MysqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            self.state_str(),
            self.message
        )
    }
}

impl std::error::Error for MysqlError {}

pub fn put_lenenc_int(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => buf.push(v as u8),
        251..=0xFFFF => {
            buf.push(0xFC);
            buf.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            buf.push(0xFD);
            buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xFE);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

pub fn put_lenenc_str(buf: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

/// Reads a length-encoded integer; `None` on truncation or the NULL marker.
pub fn read_lenenc_int(buf: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = buf.split_first()?;
    let (v, used) = match first {
        0..=250 => (first as u64, 0),
        0xFC => (
            u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as u64,
            2,
        ),
        0xFD => {
            let b = rest.get(..3)?;
            (b[0] as u64 | (b[1] as u64) << 8 | (b[2] as u64) << 16, 3)
        }
        0xFE => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
        _ => return None,
    };
    *buf = &rest[used..];
    Some(v)
}

/// OK packet fields (the proxy only needs these to track session and transaction state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

impl OkInfo {
    /// Parses an OK packet (header 0x00, or 0xFE when it terminates a result set under
    /// CLIENT_DEPRECATE_EOF).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let mut b = payload.get(1..)?;
        let affected_rows = read_lenenc_int(&mut b)?;
        let last_insert_id = read_lenenc_int(&mut b)?;
        let status = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
        let warnings = u16::from_le_bytes(b.get(2..4)?.try_into().ok()?);
        Some(OkInfo {
            affected_rows,
            last_insert_id,
            status,
            warnings,
        })
    }

    /// The info text of an OK packet ("Records: 3  Duplicates: 0  Warnings: 0"): a
    /// length-encoded string under CLIENT_SESSION_TRACK, else the rest of the packet.
    pub fn message(payload: &[u8], session_track: bool) -> Option<&[u8]> {
        let mut b = payload.get(1..)?;
        read_lenenc_int(&mut b)?;
        read_lenenc_int(&mut b)?;
        let mut b = b.get(4..)?;
        if !session_track {
            return Some(b);
        }
        if b.is_empty() {
            return Some(b);
        }
        let len = usize::try_from(read_lenenc_int(&mut b)?).ok()?;
        b.get(..len)
    }

    pub fn more_results(&self) -> bool {
        self.status & StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits() != 0
    }
}

/// Status flags and warnings of a result-set terminator: an old EOF packet (5 bytes after
/// the header) or, under CLIENT_DEPRECATE_EOF, an OK packet with header 0xFE.
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Option<(u16, u16)> {
    if deprecate_eof {
        OkInfo::decode(payload).map(|o| (o.status, o.warnings))
    } else {
        let w = u16::from_le_bytes(payload.get(1..3)?.try_into().ok()?);
        let s = u16::from_le_bytes(payload.get(3..5)?.try_into().ok()?);
        Some((s, w))
    }
}

/// Whether a packet that starts with 0xFE is a terminator (EOF/OK) rather than a row whose
/// first column has an 8-byte length prefix.
pub fn is_terminator(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF_HEADER) && payload.len() < 0xFF_FFFF
}

pub fn encode_ok(info: OkInfo, message: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + message.len());
    buf.push(OK_HEADER);
    put_lenenc_int(&mut buf, info.affected_rows);
    put_lenenc_int(&mut buf, info.last_insert_id);
    buf.extend_from_slice(&info.status.to_le_bytes());
    buf.extend_from_slice(&info.warnings.to_le_bytes());
    if !message.is_empty() {
        put_lenenc_str(&mut buf, message);
    }
    buf
}

/// A result-set terminator in the dialect the client negotiated.
pub fn encode_terminator(status: u16, warnings: u16, deprecate_eof: bool) -> Vec<u8> {
    if deprecate_eof {
        let mut buf = encode_ok(
            OkInfo {
                status,
                warnings,
                ..OkInfo::default()
            },
            b"",
        );
        buf[0] = EOF_HEADER;
        buf
    } else {
        let mut buf = vec![EOF_HEADER];
        buf.extend_from_slice(&warnings.to_le_bytes());
        buf.extend_from_slice(&status.to_le_bytes());
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc_int(&mut buf, v);
            let mut s = buf.as_slice();
            assert_eq!(read_lenenc_int(&mut s), Some(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn error_packet_keeps_code_and_sqlstate() {
        let e = MysqlError::new(1644, "45000", "custom");
        let back = MysqlError::decode(&e.encode()).unwrap();
        assert_eq!(back, e);
        // Codes outside MySQL's own range must not be a problem.
        let e = MysqlError::new(9999, "XX001", "x");
        assert_eq!(MysqlError::decode(&e.encode()).unwrap().code, 9999);
    }

    #[test]
    fn an_error_without_sqlstate_marker_decodes() {
        // MariaDB over max_connections + extra_max_connections, before its greeting.
        let mut p = vec![0xFF, 0x10, 0x04];
        p.extend_from_slice(b"Too many connections");
        let e = MysqlError::decode(&p).unwrap();
        assert_eq!(e, MysqlError::new(1040, "HY000", "Too many connections"));
        assert!(MysqlError::decode(&[0xFF, 0x10]).is_none());
    }

    #[test]
    fn client_library_codes_are_not_sent_as_server_errors() {
        let sent =
            |code| MysqlError::decode(&MysqlError::new(code, "08S01", "m").encode()).unwrap();
        assert_eq!(sent(2013).code, 9013);
        assert_eq!(sent(2003).code, 9003);
        assert_eq!(sent(1927).code, 1927);
        assert_eq!(sent(9001).code, 9001);
        assert_eq!(&sent(2013).state, b"08S01");
    }

    #[test]
    fn ok_and_terminators_decode() {
        let ok = encode_ok(
            OkInfo {
                affected_rows: 3,
                last_insert_id: 300,
                status: 0x0002 | 0x0008,
                warnings: 1,
            },
            b"Rows matched: 3",
        );
        let info = OkInfo::decode(&ok).unwrap();
        assert_eq!(
            (info.affected_rows, info.last_insert_id, info.warnings),
            (3, 300, 1)
        );
        assert!(info.more_results());
        assert_eq!(OkInfo::message(&ok, true), Some(&b"Rows matched: 3"[..]));
        let mut plain = ok[..ok.len() - 16].to_vec();
        plain.extend_from_slice(b"Records: 2");
        assert_eq!(OkInfo::message(&plain, false), Some(&b"Records: 2"[..]));
        let eof = encode_terminator(0x0022, 2, false);
        assert_eq!(terminator_status(&eof, false), Some((0x0022, 2)));
        let eof = encode_terminator(0x0022, 2, true);
        assert_eq!(terminator_status(&eof, true), Some((0x0022, 2)));
        assert!(is_terminator(&eof));
    }
}
