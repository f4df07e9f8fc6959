//! The client-facing connection phase: greeting, optional TLS upgrade, authentication against
//! the configured users, and COM_CHANGE_USER re-authentication.
//!
//! Owns: who may log in. May import: protocol, config.

use crate::protocol::handshake::{
    decode_client_hello, encode_auth_more_data, encode_auth_switch, verify_scramble, ClientHello,
    CACHING_SHA2, NATIVE_PASSWORD, SHA2_FAST_AUTH_SUCCESS,
};
use crate::protocol::{MysqlError, PacketStream};
use std::collections::HashMap;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// Configured users: name → password.
pub type Users = HashMap<String, String>;

pub fn access_denied(user: &str, password_given: bool) -> MysqlError {
    MysqlError::new(
        1045,
        "28000",
        format!(
            "Access denied for user '{user}'@'myquorum' (using password: {})",
            if password_given { "YES" } else { "NO" }
        ),
    )
}

/// Authenticates a client whose hello (or COM_CHANGE_USER) arrived with `response` computed
/// for `plugin` over `nonce`. May run an auth switch. Returns Ok(Ok(next_seq)) when the
/// client is authenticated (OK not yet sent), Ok(Err(error)) when it is not.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut PacketStream<S>,
    users: &Users,
    user: &str,
    plugin: Option<&str>,
    response: &[u8],
    nonce: &[u8; 20],
    mut seq: u8,
) -> io::Result<Result<u8, MysqlError>> {
    let password_given = !response.is_empty();
    let Some(password) = users.get(user) else {
        return Ok(Err(access_denied(user, password_given)));
    };
    let mut plugin = plugin.unwrap_or(NATIVE_PASSWORD).to_string();
    let mut response = response.to_vec();
    if plugin != NATIVE_PASSWORD && plugin != CACHING_SHA2 {
        // Ask the client to answer with a plugin the proxy checks.
        stream
            .write_packet(seq, &encode_auth_switch(NATIVE_PASSWORD, nonce))
            .await?;
        let pkt = stream.read_packet().await?;
        seq = pkt.seq.wrapping_add(1);
        plugin = NATIVE_PASSWORD.to_string();
        response = pkt.payload;
    }
    if !verify_scramble(&plugin, nonce, &response, password) {
        return Ok(Err(access_denied(user, !response.is_empty())));
    }
    if plugin == CACHING_SHA2 && !password.is_empty() {
        // The proxy knows every password, so the fast path always succeeds.
        seq = stream
            .write_packet(seq, &encode_auth_more_data(&[SHA2_FAST_AUTH_SUCCESS]))
            .await?;
    }
    Ok(Ok(seq))
}

/// Reads and checks the client's handshake response.
pub fn parse_hello(payload: &[u8]) -> Result<ClientHello, MysqlError> {
    decode_client_hello(payload)
}
