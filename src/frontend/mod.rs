//! Client-facing sessions: the only place that speaks to clients. A connection task runs the
//! connection phase, then reads commands, classifies and routes statements, and relays the
//! backend's answers (or answers proxy commands itself).
//!
//! Owns: the per-client command loop. May import: protocol, sql, router, session, executor,
//! backend (connection handles), admin, context.

pub mod auth;
mod busy_poll;
mod checksum;
mod commands;
pub mod kill;
mod sequences;
pub mod tls;
mod writes;

use crate::context::ProxyContext;
use crate::protocol::handshake::{encode_greeting, is_ssl_request, new_nonce, proxy_capabilities};
use crate::protocol::message::{encode_ok, OkInfo};
use crate::protocol::{MysqlError, PacketStream};
use crate::session::SessionState;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;
use tracing::Instrument;

/// A client's socket: TCP, or the proxy's Unix socket (`proxy.listen_socket`).
pub type ClientSocket = Either<TcpStream, UnixStream>;

pub use commands::ClientSession;
pub use sequences::Reservations as SequenceReservations;

/// Serves one client connection until it quits or fails. Never panics on client input.
pub async fn serve_client(socket: ClientSocket, ctx: Arc<ProxyContext>) {
    let id = ctx.next_connection_id();
    let peer = match &socket {
        Either::Left(tcp) => {
            let _ = tcp.set_nodelay(true);
            tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default()
        }
        // As MariaDB shows a client of its Unix socket.
        Either::Right(_) => "localhost".to_string(),
    };
    let span = tracing::info_span!("conn", id);
    async move {
        tracing::debug!(%peer, "client connected");
        ctx.counters
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        ctx.counters
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        let result = run(socket, &ctx, id, &peer).await;
        ctx.counters
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => tracing::debug!("client disconnected"),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!("client closed the connection")
            }
            Err(e) => tracing::info!(error = %e, "connection ended with an error"),
        }
    }
    .instrument(span)
    .await
}

async fn run(socket: ClientSocket, ctx: &Arc<ProxyContext>, id: u32, peer: &str) -> io::Result<()> {
    // A Unix socket is as private as TLS (MySQL treats it so): caching_sha2_password may take
    // the password in clear over it.
    let local = matches!(socket, Either::Right(_));
    let fd = match &socket {
        Either::Left(tcp) => std::os::fd::AsRawFd::as_raw_fd(tcp),
        Either::Right(unix) => std::os::fd::AsRawFd::as_raw_fd(unix),
    };
    let mut stream = PacketStream::new(socket);
    stream.set_poll_fd(fd);
    let nonce = new_nonce();
    let server_caps = proxy_capabilities(ctx.tls.is_some());
    let mariadb_caps = ctx.mariadb_capabilities();
    let greeting = encode_greeting(
        &ctx.server_version(),
        id,
        &nonce,
        server_caps,
        mariadb_caps,
        45,
        &ctx.config.proxy.auth_plugin,
    );
    stream.write_packet(0, &greeting).await?;
    let hello_pkt = stream.read_packet().await?;
    if is_ssl_request(&hello_pkt.payload) {
        let Some(acceptor) = ctx.tls.clone() else {
            let e = MysqlError::new(
                1043,
                "08S01",
                "TLS is not configured on this proxy (proxy.tls_cert/tls_key); connect without SSL",
            );
            stream
                .write_packet(hello_pkt.seq.wrapping_add(1), &e.encode())
                .await?;
            return Ok(());
        };
        let (socket, pending) = stream.into_parts();
        let tls = acceptor.accept(tls::Rewind::new(pending, socket)).await?;
        let client_tls = tls::ClientTls::of(tls.get_ref().1);
        let mut stream = PacketStream::new(tls);
        let hello = stream.read_packet().await?;
        let seq = hello.seq;
        return run_session(
            stream,
            ctx,
            (id, peer),
            nonce,
            (server_caps, mariadb_caps),
            hello.payload,
            seq,
            (true, Some(client_tls)),
        )
        .await;
    }
    let seq = hello_pkt.seq;
    run_session(
        stream,
        ctx,
        (id, peer),
        nonce,
        (server_caps, mariadb_caps),
        hello_pkt.payload,
        seq,
        (local, None),
    )
    .await
}

/// Authentication and the command loop, on any stream (plain or TLS).
#[allow(clippy::too_many_arguments)]
async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: PacketStream<S>,
    ctx: &Arc<ProxyContext>,
    (id, peer): (u32, &str),
    nonce: [u8; 20],
    (server_caps, mariadb_caps): (CapabilityFlags, MariadbCapabilities),
    hello_payload: Vec<u8>,
    hello_seq: u8,
    (secure, client_tls): (bool, Option<tls::ClientTls>),
) -> io::Result<()> {
    let seq = hello_seq.wrapping_add(1);
    let hello = match auth::parse_hello(&hello_payload) {
        Ok(h) => h,
        Err(e) => {
            stream.write_packet(seq, &e.encode()).await?;
            return Ok(());
        }
    };
    let caps = hello.session_caps(server_caps, mariadb_caps);
    let seq = match ctx
        .auth
        .authenticate(
            &mut stream,
            &hello.user,
            hello.plugin.as_deref(),
            &hello.auth_response,
            &nonce,
            seq,
            secure,
        )
        .await?
    {
        (seq, Ok(())) => seq,
        (seq, Err(e)) => {
            tracing::info!(user = %hello.user, "authentication failed");
            stream.write_packet(seq, &e.encode()).await?;
            return Ok(());
        }
    };
    let mut session = SessionState::new(
        hello.user.clone(),
        hello.database.clone(),
        hello.collation,
        caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS),
    );
    if let Err(e) = ctx.grant_access(&mut session) {
        stream.write_packet(seq, &e.encode()).await?;
        return Ok(());
    }
    // KILL <id> from another client finds this session here.
    let registered = ctx
        .sessions
        .register(id, peer, &hello.user, hello.database.as_deref());
    let mut client = ClientSession::new(
        ctx.clone(),
        caps,
        nonce,
        (secure, client_tls),
        registered.entry.clone(),
    );
    // The default shard's primary must be reachable, and the schema must exist: check both
    // now, so a bad database name fails the login as it does on MySQL.
    if let Err(e) = client.check_login(&mut session).await {
        stream.write_packet(seq, &e.encode()).await?;
        return Ok(());
    }
    tracing::debug!(user = %hello.user, db = ?hello.database, "authenticated");
    stream
        .write_packet(
            seq,
            &encode_ok(
                OkInfo {
                    status: session.status_flags(),
                    ..OkInfo::default()
                },
                b"",
            ),
        )
        .await?;
    stream.set_max_packet(Some(ctx.config.proxy.max_packet_size));
    client.command_loop(&mut stream, &mut session).await
}
