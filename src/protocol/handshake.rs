//! Connection phase, both sides: the greeting and auth exchange the proxy runs as a server
//! for clients, and the one it runs as a client for its backend connections.
//!
//! Owns: handshake packet layouts, capability negotiation, password checks
//! (mysql_native_password, caching_sha2_password fast path). May import: protocol::packet,
//! protocol::message, mysql_common.

use super::message::{MysqlError, ERR_HEADER, OK_HEADER};
use super::packet::PacketStream;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// Capability flags whose value changes how the server formats responses or interprets
/// commands. A backend connection is only reused for a client that negotiated the same
/// values, so packets can be relayed unchanged. CLIENT_LONG_PASSWORD is MariaDB's
/// CLIENT_MYSQL: clear, the connection carries MariaDB's extended column metadata
/// (`EXTENDED_METADATA`).
pub const RELAY_AFFECTING_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_IGNORE_SPACE.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_LOCAL_FILES.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits()
        | CapabilityFlags::CLIENT_SESSION_TRACK.bits(),
);

/// MariaDB's extended capabilities the proxy negotiates: column definitions that carry a
/// data type name and format (a JSON column is LONGTEXT with format `json`, which is how
/// MariaDB-aware drivers such as Node's mysql2 know to parse it). Offered only when the
/// backends offer it, and relayed unchanged on backend connections negotiated the same way.
/// Progress reports, bulk execution and metadata caching are not: a statement may run on
/// another backend connection than the one that prepared it.
pub const EXTENDED_METADATA: MariadbCapabilities =
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;

/// Everything the proxy offers clients. CLIENT_LONG_PASSWORD doubles as MariaDB's
/// "CLIENT_MYSQL" bit: with it set, MariaDB's extended capabilities are not negotiated and
/// packets stay in the classic format; `encode_greeting` clears it when it offers
/// `EXTENDED_METADATA`.
pub fn proxy_capabilities(tls: bool) -> CapabilityFlags {
    let mut c = CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF;
    if tls {
        c |= CapabilityFlags::CLIENT_SSL;
    }
    c
}

/// A per-connection random challenge: 20 bytes in 1..=127 as MySQL generates them (no NUL,
/// which would end the string in the greeting).
pub fn new_nonce() -> [u8; 20] {
    let mut n = [0u8; 20];
    for b in n.iter_mut() {
        *b = rand::random_range(1..=127u8);
    }
    n
}

/// The server greeting (protocol version 10). With `mariadb_caps`, as MariaDB greets:
/// CLIENT_MYSQL clear and the extended capabilities in the last reserved bytes.
pub fn encode_greeting(
    server_version: &str,
    connection_id: u32,
    nonce: &[u8; 20],
    caps: CapabilityFlags,
    mariadb_caps: MariadbCapabilities,
    collation: u8,
    plugin: &str,
) -> Vec<u8> {
    let caps = if mariadb_caps.is_empty() {
        caps
    } else {
        caps - CapabilityFlags::CLIENT_LONG_PASSWORD
    };
    let mut part1 = [0u8; 8];
    part1.copy_from_slice(&nonce[..8]);
    let mut part2 = nonce[8..].to_vec();
    part2.push(0);
    let pkt = HandshakePacket::new(
        10,
        server_version.as_bytes(),
        connection_id,
        part1,
        Some(part2),
        caps,
        collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(plugin.as_bytes()),
    )
    .with_mariadb_ext_capabilities(mariadb_caps);
    let mut buf = Vec::with_capacity(128);
    pkt.serialize(&mut buf);
    buf
}

/// What a client sent in its handshake response.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub caps: CapabilityFlags,
    pub max_packet: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
    /// MariaDB's extended capabilities, when the client is MariaDB-aware (CLIENT_MYSQL clear).
    pub mariadb_caps: MariadbCapabilities,
}

impl ClientHello {
    /// The capabilities of the session: what both sides offered, with CLIENT_LONG_PASSWORD
    /// standing for "classic column definitions" unless the client took `offered`'s
    /// extended metadata (backend connections are then negotiated the same way).
    pub fn session_caps(
        &self,
        server_caps: CapabilityFlags,
        offered: MariadbCapabilities,
    ) -> CapabilityFlags {
        let caps = (self.caps & server_caps) | CapabilityFlags::CLIENT_LONG_PASSWORD;
        if (self.mariadb_caps & offered).contains(EXTENDED_METADATA) {
            caps - CapabilityFlags::CLIENT_LONG_PASSWORD
        } else {
            caps
        }
    }
}

/// A 32-byte handshake response with CLIENT_SSL is an SSL request: TLS starts next.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
            & CapabilityFlags::CLIENT_SSL.bits()
            != 0
}

pub fn decode_client_hello(payload: &[u8]) -> Result<ClientHello, MysqlError> {
    let malformed = || MysqlError::new(1043, "08S01", "Bad handshake");
    if payload.len() < 32 {
        return Err(malformed());
    }
    let caps = CapabilityFlags::from_bits_truncate(u32::from_le_bytes(
        payload[..4].try_into().map_err(|_| malformed())?,
    ));
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(MysqlError::new(
            1251,
            "08004",
            "Client does not support the 4.1 protocol; upgrade the MySQL client",
        ));
    }
    let mut pb = ParseBuf(payload);
    let resp: HandshakeResponse<'_> = pb.parse(()).map_err(|_| malformed())?;
    Ok(ClientHello {
        caps,
        max_packet: u32::from_le_bytes(payload[4..8].try_into().map_err(|_| malformed())?),
        collation: resp.collation(),
        user: String::from_utf8_lossy(resp.user()).into_owned(),
        auth_response: resp.scramble_buf().to_vec(),
        database: resp
            .db_name()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        plugin: resp
            .auth_plugin()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned()),
        mariadb_caps: if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
            MariadbCapabilities::empty()
        } else {
            resp.mariadb_ext_capabilities()
        },
    })
}

/// An auth-switch request asking the client to answer `nonce` with `plugin`.
pub fn encode_auth_switch(plugin: &str, nonce: &[u8; 20]) -> Vec<u8> {
    let mut data = nonce.to_vec();
    data.push(0);
    let mut buf = Vec::new();
    AuthSwitchRequest::new(plugin.as_bytes(), data).serialize(&mut buf);
    buf
}

/// Auth-more-data packet (0x01 + data): caching_sha2_password's fast-auth verdicts and the
/// RSA public key travel in these.
pub fn encode_auth_more_data(data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(0x01);
    buf.extend_from_slice(data);
    buf
}

pub const SHA2_FAST_AUTH_SUCCESS: u8 = 0x03;
pub const SHA2_PERFORM_FULL_AUTH: u8 = 0x04;
pub const SHA2_REQUEST_PUBLIC_KEY: u8 = 0x02;

/// Checks a scrambled password for the plugin the client used. Constant-time comparison is
/// not needed for secrecy of a one-time nonce response but is cheap, so it is used.
pub fn verify_scramble(plugin: &str, nonce: &[u8], response: &[u8], password: &str) -> bool {
    if password.is_empty() {
        return response.is_empty();
    }
    let expected: Option<Vec<u8>> = match plugin {
        NATIVE_PASSWORD => scramble_native(nonce, password.as_bytes()).map(|s| s.to_vec()),
        CACHING_SHA2 => scramble_sha256(nonce, password.as_bytes()).map(|s| s.to_vec()),
        _ => None,
    };
    match expected {
        Some(e) if e.len() == response.len() => {
            e.iter()
                .zip(response)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        }
        _ => false,
    }
}

/// Outcome of connecting to a backend.
#[derive(Debug, Clone)]
pub struct BackendHello {
    pub server_version: String,
    pub connection_id: u32,
    /// As negotiated: CLIENT_LONG_PASSWORD clear means extended metadata.
    pub caps: CapabilityFlags,
    /// The server offers `EXTENDED_METADATA` (MariaDB 10.5 and later).
    pub offers_extended_metadata: bool,
    /// The greeting's status flags had NO_BACKSLASH_ESCAPES: the server's global sql_mode
    /// has it, so a session there starts in that mode.
    pub no_backslash_escapes: bool,
}

/// A backend's greeting, read and parsed: what the rest of the connection phase needs.
pub struct Greeting {
    seq: u8,
    server_caps: CapabilityFlags,
    offers_extended_metadata: bool,
    no_backslash_escapes: bool,
    nonce: Vec<u8>,
    plugin: String,
    server_version: String,
    version: (u16, u16, u16),
    connection_id: u32,
}

/// The handshake response for one greeting, encoded once: its first 32 bytes are also the
/// SSL request that goes in front of TLS (the same fields, cut short, as clients send).
pub struct HandshakeReply {
    bytes: Vec<u8>,
    hello: BackendHello,
}

/// Length of an SSL request: capabilities, max packet, collation, filler (MariaDB's
/// extended capabilities in its last 4 bytes).
const SSL_REQUEST_LEN: usize = 32;

impl HandshakeReply {
    /// The SSL request to send (sequence 1) before starting TLS.
    pub fn ssl_request(&self) -> &[u8] {
        &self.bytes[..SSL_REQUEST_LEN.min(self.bytes.len())]
    }
}

/// Reads and parses the server's greeting (or its refusal).
pub async fn read_greeting<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
) -> io::Result<Greeting> {
    let greeting = stream.read_packet().await?;
    if greeting.payload.first() == Some(&ERR_HEADER) {
        return Err(server_error(&greeting.payload));
    }
    let mut pb = ParseBuf(&greeting.payload);
    let hs: HandshakePacket<'_> = pb
        .parse(())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad greeting: {e}")))?;
    let server_caps = hs.capabilities();
    Ok(Greeting {
        seq: greeting.seq,
        server_caps,
        offers_extended_metadata: !server_caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
            && hs.mariadb_ext_capabilities().contains(EXTENDED_METADATA),
        no_backslash_escapes: hs
            .status_flags()
            .contains(StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES),
        nonce: hs.nonce(),
        plugin: hs
            .auth_plugin_name_str()
            .map(|s| s.into_owned())
            .unwrap_or_else(|| NATIVE_PASSWORD.to_string()),
        server_version: hs.server_version_str().into_owned(),
        version: hs.server_version_parsed().unwrap_or((5, 7, 0)),
        connection_id: hs.connection_id(),
    })
}

impl Greeting {
    /// The server accepts TLS (it was started with a certificate).
    pub fn offers_tls(&self) -> bool {
        self.server_caps.contains(CapabilityFlags::CLIENT_SSL)
    }

    /// The sequence number of the client's next packet (`extra`: packets already sent).
    pub fn next_seq(&self, extra: u8) -> u8 {
        self.seq.wrapping_add(1).wrapping_add(extra)
    }

    /// Negotiates capabilities and encodes the handshake response. `tls`: it goes over TLS
    /// (CLIENT_SSL set, its prefix sent first as the SSL request).
    pub fn reply(
        &self,
        user: &str,
        password: &str,
        database: Option<&str>,
        wanted_caps: CapabilityFlags,
        collation: u8,
        tls: bool,
    ) -> io::Result<HandshakeReply> {
        let extended = !wanted_caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD);
        if extended && !self.offers_extended_metadata {
            // The client parses an extra field in every column definition: classic ones
            // relayed to it would be misread.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "backend {} does not offer MariaDB's extended column metadata, which this \
                     client negotiated with the proxy when the backends offered it; reconnect",
                    self.server_version
                ),
            ));
        }
        let caps = (wanted_caps & self.server_caps)
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION;
        let caps = caps - CapabilityFlags::CLIENT_SSL - CapabilityFlags::CLIENT_COMPRESS;
        let caps = if tls {
            caps | CapabilityFlags::CLIENT_SSL
        } else {
            caps
        };
        let (caps, mariadb_caps) = if extended {
            (
                caps - CapabilityFlags::CLIENT_LONG_PASSWORD,
                EXTENDED_METADATA,
            )
        } else {
            (
                caps | CapabilityFlags::CLIENT_LONG_PASSWORD,
                MariadbCapabilities::empty(),
            )
        };
        let hello = BackendHello {
            server_version: self.server_version.clone(),
            connection_id: self.connection_id,
            caps,
            offers_extended_metadata: self.offers_extended_metadata,
            no_backslash_escapes: self.no_backslash_escapes,
        };
        let auth_data = scramble_for(&self.plugin, &self.nonce, password);
        let resp = HandshakeResponse::new(
            Some(auth_data),
            self.version,
            Some(user.as_bytes()),
            database.map(|d| d.as_bytes()),
            Some(AuthPlugin::from_bytes(self.plugin.as_bytes())),
            caps,
            None,
            16 * 1024 * 1024,
        )
        .with_mariadb_ext_capabilities(mariadb_caps);
        let mut bytes = Vec::new();
        resp.serialize(&mut bytes);
        // HandshakeResponse::new picks utf8mb4_general_ci; the proxy mirrors the client's
        // collation instead (byte 8 of the response).
        bytes[8] = collation;
        Ok(HandshakeReply { bytes, hello })
    }
}

/// Runs the client side of the connection phase against a backend server, in plain text.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    user: &str,
    password: &str,
    database: Option<&str>,
    wanted_caps: CapabilityFlags,
    collation: u8,
) -> io::Result<BackendHello> {
    let greeting = read_greeting(stream).await?;
    let reply = greeting.reply(user, password, database, wanted_caps, collation, false)?;
    send_reply(stream, &greeting, reply, password, 0, false).await
}

/// Sends the handshake response (at sequence `greeting.next_seq(sent)`) and runs the auth
/// exchange to its end. `tls`: the connection is encrypted, so a server that asks for the
/// password itself (caching_sha2_password's full authentication) may have it.
pub async fn send_reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    greeting: &Greeting,
    reply: HandshakeReply,
    password: &str,
    sent: u8,
    tls: bool,
) -> io::Result<BackendHello> {
    stream
        .write_packet(greeting.next_seq(sent), &reply.bytes)
        .await?;
    let mut plugin_name = greeting.plugin.clone();
    loop {
        let pkt = stream.read_packet().await?;
        let seq = pkt.seq.wrapping_add(1);
        match pkt.payload.first() {
            Some(&OK_HEADER) => return Ok(reply.hello),
            Some(&ERR_HEADER) => return Err(server_error(&pkt.payload)),
            Some(&0xFE) => {
                // Auth switch: new plugin and nonce.
                let rest = &pkt.payload[1..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                plugin_name = String::from_utf8_lossy(&rest[..end]).into_owned();
                let mut new_nonce = rest.get(end + 1..).unwrap_or(&[]).to_vec();
                if new_nonce.last() == Some(&0) {
                    new_nonce.pop();
                }
                let data = scramble_for(&plugin_name, &new_nonce, password);
                stream.write_packet(seq, &data).await?;
            }
            Some(&0x01) if plugin_name == CACHING_SHA2 => match pkt.payload.get(1) {
                Some(&SHA2_FAST_AUTH_SUCCESS) => continue,
                Some(&SHA2_PERFORM_FULL_AUTH) if tls => {
                    // Over TLS the password itself is the answer (as MySQL clients send it).
                    let mut clear = password.as_bytes().to_vec();
                    clear.push(0);
                    stream.write_packet(seq, &clear).await?;
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "backend asks for full caching_sha2_password authentication; give the \
                         proxy's backend user mysql_native_password, connect to the backends \
                         with TLS (backend.tls), or log in once with a MySQL client so the \
                         server caches it",
                    ))
                }
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected auth packet from backend (plugin {plugin_name})"),
                ))
            }
        }
    }
}

fn scramble_for(plugin: &str, nonce: &[u8], password: &str) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    match plugin {
        CACHING_SHA2 => scramble_sha256(nonce, password.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        _ => scramble_native(nonce, password.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default(),
    }
}

fn server_error(payload: &[u8]) -> io::Error {
    match MysqlError::decode(payload) {
        Some(e) => io::Error::other(e),
        None => io::Error::new(io::ErrorKind::InvalidData, "malformed error packet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_sha2_scrambles_verify() {
        let nonce = new_nonce();
        assert!(nonce.iter().all(|&b| (1..=127).contains(&b)));
        let r = scramble_native(&nonce, b"secret").unwrap();
        assert!(verify_scramble(NATIVE_PASSWORD, &nonce, &r, "secret"));
        assert!(!verify_scramble(NATIVE_PASSWORD, &nonce, &r, "other"));
        let r = scramble_sha256(&nonce, b"secret").unwrap();
        assert!(verify_scramble(CACHING_SHA2, &nonce, &r, "secret"));
        assert!(!verify_scramble(NATIVE_PASSWORD, &nonce, &r, "secret"));
        assert!(verify_scramble(NATIVE_PASSWORD, &nonce, &[], ""));
        assert!(!verify_scramble(NATIVE_PASSWORD, &nonce, &[1], ""));
    }

    #[test]
    fn greeting_parses_back() {
        let nonce = new_nonce();
        let g = encode_greeting(
            "10.11.6-MariaDB-myquorum",
            42,
            &nonce,
            proxy_capabilities(false),
            EXTENDED_METADATA,
            45,
            NATIVE_PASSWORD,
        );
        let mut pb = ParseBuf(&g);
        let hs: HandshakePacket<'_> = pb.parse(()).unwrap();
        assert_eq!(hs.connection_id(), 42);
        assert_eq!(hs.nonce(), nonce.to_vec());
        assert_eq!(hs.auth_plugin_name_str().unwrap(), NATIVE_PASSWORD);
        // Greeted as MariaDB greets: CLIENT_MYSQL clear, extended capabilities offered.
        assert!(!hs
            .capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        assert_eq!(hs.mariadb_ext_capabilities(), EXTENDED_METADATA);
    }

    fn hello(caps: CapabilityFlags, mariadb_caps: MariadbCapabilities) -> Vec<u8> {
        let resp = HandshakeResponse::new(
            Some(vec![1; 20]),
            (10, 11, 0),
            Some(&b"app"[..]),
            None::<&[u8]>,
            Some(AuthPlugin::from_bytes(NATIVE_PASSWORD.as_bytes())),
            caps,
            None,
            1 << 24,
        )
        .with_mariadb_ext_capabilities(mariadb_caps);
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        buf
    }

    #[test]
    fn extended_metadata_only_for_mariadb_aware_clients_it_was_offered_to() {
        let offered = proxy_capabilities(false);
        let mariadb_client = offered - CapabilityFlags::CLIENT_LONG_PASSWORD;
        let h = decode_client_hello(&hello(mariadb_client, EXTENDED_METADATA)).unwrap();
        let caps = h.session_caps(offered, EXTENDED_METADATA);
        assert!(!caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        // Not offered (backends without it): classic.
        let caps = h.session_caps(offered, MariadbCapabilities::empty());
        assert!(caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        // A MySQL client (CLIENT_MYSQL set): its reserved bytes mean nothing.
        let h = decode_client_hello(&hello(offered, EXTENDED_METADATA)).unwrap();
        assert!(h.mariadb_caps.is_empty());
        let caps = h.session_caps(offered, EXTENDED_METADATA);
        assert!(caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        // A MariaDB client asking for nothing extended, or a client that clears the bit
        // without being MariaDB-aware: classic too.
        let h = decode_client_hello(&hello(mariadb_client, MariadbCapabilities::empty())).unwrap();
        let caps = h.session_caps(offered, EXTENDED_METADATA);
        assert!(caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
    }
}

/// COM_CHANGE_USER's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUser {
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub plugin: Option<String>,
}

/// Parses a COM_CHANGE_USER payload (command byte included).
pub fn decode_change_user(payload: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    fn null_str<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let end = b.iter().position(|&c| c == 0)?;
        let s = &b[..end];
        *b = &b[end + 1..];
        Some(s)
    }
    let mut b = payload.get(1..)?;
    let user = String::from_utf8_lossy(null_str(&mut b)?).into_owned();
    let (&len, rest) = b.split_first()?;
    let auth_response = rest.get(..len as usize)?.to_vec();
    b = &rest[len as usize..];
    let db = if b.is_empty() {
        &b""[..]
    } else {
        null_str(&mut b).unwrap_or(b)
    };
    let database = (!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned());
    let mut collation = None;
    let mut plugin = None;
    if b.len() >= 2 {
        collation = Some(b[0]);
        b = &b[2..];
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && !b.is_empty() {
            let p = null_str(&mut b).unwrap_or(b);
            plugin = Some(String::from_utf8_lossy(p).into_owned());
        }
    }
    Some(ChangeUser {
        user,
        auth_response,
        database,
        collation,
        plugin,
    })
}

#[cfg(test)]
mod change_user_tests {
    use super::*;

    #[test]
    fn change_user_fields() {
        let mut p = vec![0x11];
        p.extend_from_slice(b"bob\0");
        p.push(3);
        p.extend_from_slice(&[1, 2, 3]);
        p.extend_from_slice(b"db1\0");
        p.extend_from_slice(&[224, 0]);
        p.extend_from_slice(b"mysql_native_password\0");
        let cu = decode_change_user(&p, CapabilityFlags::CLIENT_PLUGIN_AUTH).unwrap();
        assert_eq!(cu.user, "bob");
        assert_eq!(cu.auth_response, vec![1, 2, 3]);
        assert_eq!(cu.database.as_deref(), Some("db1"));
        assert_eq!(cu.collation, Some(224));
        assert_eq!(cu.plugin.as_deref(), Some(NATIVE_PASSWORD));
        assert!(decode_change_user(&[0x11, b'x'], CapabilityFlags::empty()).is_none());
    }
}
