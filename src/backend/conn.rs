//! One raw backend connection on the data path: socket, handshake, and the session state
//! currently applied on it (schema, variables signature), so a borrowing session knows what
//! to restore.
//!
//! Owns: `BackendConn`. May import: protocol (handshake, framing), config.

use super::tls::BackendTls;
use crate::protocol::handshake::{client_handshake, read_greeting, send_reply, BackendHello};
use crate::protocol::message::{MysqlError, OkInfo, ERR_HEADER, OK_HEADER};
use crate::protocol::packet::PacketStream;
use mysql_common::constants::CapabilityFlags;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// A data-path socket: TCP (encrypted when `backend.tls` asks), or the server's Unix socket
/// when it shares the proxy's host.
pub enum BackendSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendSocket {
    /// A non-blocking read from the socket itself (under TLS, from the TCP connection: the
    /// byte is a record's, so only for a connection that is given up if anything arrives).
    fn try_read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendSocket::Tcp(tcp) => tcp.try_read(buf),
            BackendSocket::Unix(unix) => unix.try_read(buf),
            BackendSocket::Tls(tls) => tls.get_ref().0.try_read(buf),
        }
    }

    /// Waits until the socket itself has something to read (or is closed).
    async fn readable(&self) -> io::Result<()> {
        match self {
            BackendSocket::Tcp(tcp) => tcp.readable().await,
            BackendSocket::Unix(unix) => unix.readable().await,
            BackendSocket::Tls(tls) => tls.get_ref().0.readable().await,
        }
    }
}

macro_rules! each_socket {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            BackendSocket::Tcp($s) => $e,
            BackendSocket::Unix($s) => $e,
            BackendSocket::Tls($s) => $e,
        }
    };
}

impl AsyncRead for BackendSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for BackendSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_socket!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_socket!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendSocket::Tcp(s) => s.is_write_vectored(),
            BackendSocket::Unix(s) => s.is_write_vectored(),
            BackendSocket::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// How data-path connections reach a backend (`backend.prefer_socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Its host:port address.
    Tcp,
    /// Its Unix socket at this path, checked to be the same server as the same account.
    Unix(Arc<Path>),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp => f.write_str("tcp"),
            Transport::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Statement replay needs REPEATABLE READ or stronger on the primary
/// (`sql::set::Isolation::enforced`). A server whose default is weaker
/// (`transaction-isolation = READ-COMMITTED` in its my.cnf, a common setting) ran every
/// session's writes below it: measured, the first phantom a follower replayed differently
/// (an `UPDATE … WHERE k > 5` while another session inserted k = 7, both committed)
/// quarantined both followers. So each data-path connection starts, and starts again after
/// COM_RESET_CONNECTION, at REPEATABLE READ, or SERIALIZABLE where that is the default.
const ISOLATION_FLOOR: &str = "SET SESSION tx_isolation = \
     IF(@@GLOBAL.tx_isolation = 'SERIALIZABLE', 'SERIALIZABLE', 'REPEATABLE-READ')";

/// The server's default level, read once per connection (`server_reads_committed`).
const GLOBAL_ISOLATION: &str = "SELECT @@GLOBAL.tx_isolation";

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_RESET_CONNECTION: u8 = 0x1F;

/// Credentials and limits for opening backend connections.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    /// Use a loopback backend's Unix socket (see `Transport`).
    pub prefer_socket: bool,
    /// TLS on TCP connections (`backend.tls`); None: plain.
    pub tls: Option<Arc<BackendTls>>,
}

/// A server account other than the proxy's own that a client's connections log in as
/// (`[[users]] backend_user`): the servers then enforce that client's privileges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAccount {
    pub user: String,
    pub password: String,
}

pub struct BackendConn {
    pub stream: PacketStream<BackendSocket>,
    /// The account it logged in as; `None`: the proxy's own (pool key, with `caps_key`).
    pub account: Option<Arc<BackendAccount>>,
    pub addr: Arc<str>,
    pub hello: BackendHello,
    /// Relay-affecting capability bits this connection negotiated (pool key).
    pub caps_key: u32,
    /// Collation from this connection's handshake (its state after a reset).
    pub base_collation: u8,
    pub schema: Option<String>,
    /// Signature of the variables and collation applied (see `session::signature_of`).
    pub state_signature: u64,
    /// Pool generation when created; stale generations are discarded.
    pub generation: u64,
    /// A replicated write left `timestamp` set to the proxy's value (reset lazily, before
    /// the next statement that is not such a write, so NOW() is the server's again).
    pub timestamp_fixed: bool,
    /// The proxy set a one-shot SERIALIZABLE level here for a program's transaction
    /// (`SET TRANSACTION ISOLATION LEVEL`) and has not ended it yet. COMMIT, ROLLBACK, BEGIN
    /// and DDL end it; measured on MariaDB 10.11, the `SET autocommit = 1` that commits a
    /// wrapped write leaves it to the next transaction, another client's on a pooled
    /// connection, so the proxy's next such SET also assigns the session's level to itself,
    /// which ends it.
    pub serializable_once: bool,
    /// The server's default isolation level, read when this connection opened, is READ
    /// COMMITTED or weaker: its sessions that ask for no level get READ COMMITTED's reads
    /// (`session::PinnedFacts`); their writes run at `ISOLATION_FLOOR` all the same.
    pub server_reads_committed: bool,
    /// A plain BEGIN the proxy answered itself: it travels in front of the session's next
    /// statement on this connection (one round trip fewer per transaction, as vtgate does),
    /// and a transaction that runs nothing never reaches the server.
    pub deferred_begin: Option<Vec<u8>>,
    /// Statements prepared on this connection: text → (schema current at PREPARE, server
    /// id). Client prepared statements are not tied to one connection; each connection that
    /// runs one prepares it once (COM_RESET_CONNECTION forgets them all).
    pub statements: HashMap<Arc<str>, Vec<(Option<String>, u32)>>,
    /// The replicated settings a record made here carries, as read from the server, and the
    /// `state_signature` they were read under. Forgotten on COM_RESET_CONNECTION: the
    /// server then starts again from its globals, which may have changed.
    pub record_settings: Option<(u64, Vec<String>)>,
    /// When it was last returned to its pool.
    pub idle_since: std::time::Instant,
}

/// Connects to a server's Unix socket. A full listen backlog (a burst of connects, a
/// server slow to accept) makes a non-blocking connect fail with EAGAIN where a blocking
/// one would wait: it is tried again, within the caller's connect timeout.
async fn connect_unix(path: &std::path::Path) -> io::Result<UnixStream> {
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        match UnixStream::connect(path).await {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl BackendConn {
    pub async fn connect(
        addr: Arc<str>,
        transport: &Transport,
        params: &ConnectParams,
        caps: CapabilityFlags,
        collation: u8,
        schema: Option<&str>,
        generation: u64,
    ) -> io::Result<BackendConn> {
        // One budget for the handshake and the isolation floor behind it.
        let deadline = tokio::time::Instant::now() + params.connect_timeout;
        let timed_out = |addr: &str| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to backend {addr} ({transport}) timed out after {:?}",
                    params.connect_timeout
                ),
            )
        };
        let fut = async {
            let mut stream = match transport {
                Transport::Unix(path) => {
                    let unix = connect_unix(path).await?;
                    let fd = unix.as_raw_fd();
                    let mut stream = PacketStream::new(BackendSocket::Unix(unix));
                    stream.set_poll_fd(fd);
                    stream
                }
                Transport::Tcp => {
                    let tcp = TcpStream::connect(&*addr).await?;
                    tcp.set_nodelay(true)?;
                    let fd = tcp.as_raw_fd();
                    let mut stream = PacketStream::new(BackendSocket::Tcp(tcp));
                    stream.set_poll_fd(fd);
                    stream
                }
            };
            let (user, password) = (&params.user, &params.password);
            // A Unix socket stays plain, as MySQL clients leave it: it never leaves the host.
            let tls = params
                .tls
                .as_ref()
                .filter(|_| matches!(transport, Transport::Tcp));
            let Some(tls) = tls else {
                let hello =
                    client_handshake(&mut stream, user, password, schema, caps, collation).await?;
                return Ok::<_, io::Error>((stream, hello));
            };
            let greeting = read_greeting(&mut stream).await?;
            if !greeting.offers_tls() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "backend {addr} does not offer TLS (backend.tls = \"{}\"): start it \
                         with ssl_cert and ssl_key, or set backend.tls = \"off\"",
                        tls.mode.name()
                    ),
                ));
            }
            let reply = greeting.reply(user, password, schema, caps, collation, true)?;
            stream
                .write_packet(greeting.next_seq(0), reply.ssl_request())
                .await?;
            let (socket, unread) = stream.into_parts();
            let (BackendSocket::Tcp(tcp), true) = (socket, unread.is_empty()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("backend {addr} sent data before the TLS handshake"),
                ));
            };
            let tls = tls.connect(&addr, tcp).await?;
            let mut stream = PacketStream::new(BackendSocket::Tls(Box::new(tls)));
            let hello = send_reply(&mut stream, &greeting, reply, password, 1, true).await?;
            Ok((stream, hello))
        };
        let (stream, hello) = tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| timed_out(&addr))??;
        let caps_key = (hello.caps & crate::protocol::handshake::RELAY_AFFECTING_CAPS).bits();
        let mut conn = BackendConn {
            stream,
            account: None,
            addr,
            hello,
            caps_key,
            base_collation: collation,
            schema: schema.map(str::to_string),
            state_signature: crate::session::signature_of(collation, &[]),
            timestamp_fixed: false,
            serializable_once: false,
            server_reads_committed: false,
            deferred_begin: None,
            statements: HashMap::new(),
            record_settings: None,
            idle_since: std::time::Instant::now(),
            generation,
        };
        let floor = async {
            conn.stream
                .queue_packet(0, &[&[COM_QUERY][..], ISOLATION_FLOOR.as_bytes()].concat());
            conn.stream
                .write_packet(0, &[&[COM_QUERY][..], GLOBAL_ISOLATION.as_bytes()].concat())
                .await?;
            conn.read_isolation_floor_answer().await?;
            let deprecate_eof = conn
                .hello
                .caps
                .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
            let level = crate::protocol::resultset::read_first_row(&mut conn.stream, deprecate_eof)
                .await?
                .ok()
                .flatten()
                .and_then(|row| row.into_iter().next().flatten());
            conn.server_reads_committed = level.is_some_and(|l| {
                l.eq_ignore_ascii_case("READ-COMMITTED")
                    || l.eq_ignore_ascii_case("READ-UNCOMMITTED")
            });
            Ok::<(), io::Error>(())
        };
        tokio::time::timeout_at(deadline, floor)
            .await
            .map_err(|_| timed_out(&conn.addr))??;
        Ok(conn)
    }

    /// Reads the answer to `ISOLATION_FLOOR`. A server that refuses it (one without
    /// `tx_isolation`) keeps its own default; said once per connection, at debug level.
    async fn read_isolation_floor_answer(&mut self) -> io::Result<()> {
        let answer = self.stream.read_packet().await?;
        if answer.payload.first() == Some(&ERR_HEADER) {
            tracing::debug!(backend = %self.addr, error = ?MysqlError::decode(&answer.payload),
                "the server refused to raise this connection's isolation level to REPEATABLE READ");
        }
        Ok(())
    }

    /// Runs a command whose answer is a single OK or ERR (COM_INIT_DB, a SET, a reset).
    /// The server id of `sql` prepared here under the current schema (no allocation: this
    /// is on every prepared execute).
    pub fn prepared_id(&self, sql: &str) -> Option<u32> {
        self.statements
            .get(sql)?
            .iter()
            .find(|(schema, _)| *schema == self.schema)
            .map(|(_, id)| *id)
    }

    /// Remembers that `sql` is prepared here under the current schema as `id`.
    pub fn remember_prepared(&mut self, sql: Arc<str>, id: u32) {
        let schema = self.schema.clone();
        let list = self.statements.entry(sql).or_default();
        list.retain(|(s, _)| *s != schema);
        list.push((schema, id));
    }

    /// How many statements are prepared here.
    pub fn prepared_count(&self) -> usize {
        self.statements.values().map(Vec::len).sum()
    }

    /// Whether the server has ended this idle connection or sent it something unasked (its
    /// wait_timeout, a KILL, a shutdown): it cannot take another command. Never waits: tokio
    /// answers from its readiness state, with a read syscall only while readiness from the
    /// last answer is still set (see `BackendPool::checkout` for why it asks rarely). May
    /// consume one byte of unasked input, which makes the connection no worse.
    pub fn closed_by_server(&self) -> bool {
        if self.stream.has_buffered_input() {
            return true;
        }
        let mut byte = [0u8; 1];
        let read = self.stream.get_ref().try_read_raw(&mut byte);
        !matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Resolves once the server ends this idle connection (see `closed_by_server`); pending
    /// while it stays open.
    pub async fn closed(&self) {
        loop {
            let ready = self.stream.get_ref().readable().await;
            // A readiness left over from the last answer reads nothing and is cleared.
            if ready.is_err() || self.closed_by_server() {
                return;
            }
        }
    }

    pub async fn simple_command(
        &mut self,
        command: u8,
        arg: &[u8],
    ) -> io::Result<Result<OkInfo, MysqlError>> {
        let mut payload = Vec::with_capacity(1 + arg.len());
        payload.push(command);
        payload.extend_from_slice(arg);
        let reset = command == COM_RESET_CONNECTION;
        if reset {
            // The server drops every prepared statement of the connection, ends its
            // transaction and restores its clock, and its isolation level to the server's
            // default: the floor goes right behind, in the same write.
            self.statements.clear();
            self.record_settings = None;
            self.deferred_begin = None;
            self.timestamp_fixed = false;
            self.serializable_once = false;
            self.stream.queue_packet(0, &payload);
            payload = [&[COM_QUERY][..], ISOLATION_FLOOR.as_bytes()].concat();
        }
        self.stream.write_packet(0, &payload).await?;
        let resp = self.stream.read_packet().await?;
        if reset {
            self.read_isolation_floor_answer().await?;
        }
        match resp.payload.first() {
            Some(&OK_HEADER) => OkInfo::decode(&resp.payload)
                .map(Ok)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed OK")),
            Some(&ERR_HEADER) => Ok(Err(MysqlError::decode(&resp.payload).unwrap_or_else(
                || MysqlError::new(2027, "HY000", "malformed error packet from backend"),
            ))),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected response to a simple command (expected OK or ERR)",
            )),
        }
    }
}
